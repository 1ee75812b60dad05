//! Runtime config (`operator.admin`): `config.get`, `config.set`,
//! `config.patch`, `config.apply`, `config.history`.
//!
//! Handlers decode params and call `services::runtime_config`, which
//! validates the change like the start-up config, stores it with a
//! compare and set on the version, and puts it in force on every
//! instance within a second.

use super::Ctx;
use crate::protocol::RpcError;
use crate::services::runtime_config::{Edit, change, snapshot};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

/// Most history entries one call returns (as many as are kept).
const MAX_HISTORY: usize = crate::backend::runtime_config::CONFIG_HISTORY_MAX;

#[derive(Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetParams {
    /// Also answer the JSON Schema of the live settings.
    #[serde(default)]
    schema: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetParams {
    /// A dotted setting, e.g. `rate_limits.messages_per_conn.limit`.
    path: String,
    /// Its new value; `null` removes the override (the file/env value
    /// applies again).
    value: Value,
    /// Fail with -32007 unless this is the stored version.
    base_version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchParams {
    /// A JSON merge patch (RFC 7396) of the override document: members
    /// set, `null` removes an override.
    patch: Value,
    /// Fail with -32007 unless this is the stored version.
    base_version: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyParams {
    /// The whole override document (`{}` removes every override).
    config: Value,
    /// Fail with -32007 unless this is the stored version.
    base_version: Option<u64>,
}

#[derive(Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryParams {
    /// Newest changes returned (default 20, at most 100).
    limit: Option<usize>,
}

pub fn get(ctx: &Ctx<'_>, p: GetParams) -> Result<Value, RpcError> {
    snapshot(&ctx.app.live(), p.schema)
}

pub async fn set(ctx: &Ctx<'_>, p: SetParams) -> Result<Value, RpcError> {
    let edit = Edit::Set {
        path: p.path,
        value: p.value,
    };
    edited(ctx, p.base_version, edit).await
}

pub async fn patch(ctx: &Ctx<'_>, p: PatchParams) -> Result<Value, RpcError> {
    edited(ctx, p.base_version, Edit::Patch(p.patch)).await
}

pub async fn apply(ctx: &Ctx<'_>, p: ApplyParams) -> Result<Value, RpcError> {
    edited(ctx, p.base_version, Edit::Apply(p.config)).await
}

async fn edited(ctx: &Ctx<'_>, base: Option<u64>, edit: Edit) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let settings = change(ctx.app, &identity.sub, base, edit).await?;
    snapshot(&settings, false)
}

pub async fn history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    let limit = p.limit.unwrap_or(20).min(MAX_HISTORY);
    let entries = ctx.app.config_store().config_history(limit).await?;
    Ok(json!({ "count": entries.len(), "entries": entries }))
}
