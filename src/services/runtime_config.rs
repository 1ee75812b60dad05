//! Runtime config across the cluster: changing the shared override
//! document, and keeping every instance's settings in step with it.
//!
//! # A change, step by step
//!
//! 1. [`change`] reads the stored document (version `v`), computes the new
//!    one (`set` a path, merge a `patch`, `apply` a whole document),
//!    checks that it only touches live settings and validates it the way
//!    the start-up config is validated ([`config::runtime::effective`]).
//! 2. The backend stores it as `v + 1` only if `v` is still the stored
//!    version (compare and set; a caller's stale `baseVersion` gets -32007
//!    with the current version), records the change in the history and
//!    announces the version on pub/sub.
//! 3. The writing instance puts the new settings in force at once; every
//!    other instance does when the announcement arrives, or at its next
//!    poll of the version ([`follow`], every [`POLL`]), so a lost message
//!    delays it by at most that. An instance starting later applies the
//!    stored document before it serves ([`load_at_start`]).
//! 4. If shared state was lost (Redis restarted empty) while instances
//!    still run on a document, the first to notice writes it back
//!    ([`restore_config`](crate::backend::ConfigStore::restore_config), only if none is stored), so the
//!    cluster keeps the settings operators made.
//!
//! Every instance exports the version it has in force as the gauge
//! `switchyard_config_version`.
//!
//! [`config::runtime::effective`]: crate::config::runtime::effective

use crate::app::App;
use crate::backend::{ConfigChange, ConfigDocument, ConfigWrite};
use crate::config::ConfigError;
use crate::config::runtime::{
    self, MAX_DOCUMENT, RuntimeSettings, effective, overridden, redact_secrets, view,
};
use crate::protocol::{RpcError, error, now_ms};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How often every instance compares its version with the stored one
/// (one `HGET`).
pub const POLL: Duration = Duration::from_millis(250);

/// Attempts of a change without `baseVersion` racing other writers.
const ATTEMPTS: usize = 32;

/// What a change does to the stored override document.
pub enum Edit {
    /// Set (or with `null` remove) one dotted path.
    Set { path: String, value: Value },
    /// Merge an RFC 7396 patch into the document.
    Patch(Value),
    /// Replace the whole document.
    Apply(Value),
}

impl Edit {
    fn op(&self) -> &'static str {
        match self {
            Self::Set { .. } => "set",
            Self::Patch(_) => "patch",
            Self::Apply(_) => "apply",
        }
    }

    /// The param a problem with the new document is reported against
    /// when no config field is to blame.
    fn param(&self) -> &'static str {
        match self {
            Self::Set { .. } => "value",
            Self::Patch(_) => "patch",
            Self::Apply(_) => "config",
        }
    }

    /// The new document from the stored one.
    fn edit(&self, stored: &Value) -> Result<Value, RpcError> {
        let mut next = stored.clone();
        match self {
            Self::Set { path, value } => {
                if path.len() > 256 {
                    return Err(RpcError::invalid_params("path", "at most 256 bytes"));
                }
                runtime::check_setting(path).map_err(field_error)?;
                runtime::set_path(&mut next, path, value.clone()).map_err(field_error)?;
            }
            Self::Patch(patch) => {
                if !patch.is_object() {
                    return Err(RpcError::invalid_params("patch", "must be an object"));
                }
                json_patch::merge(&mut next, patch);
            }
            Self::Apply(config) => {
                if !config.is_object() {
                    return Err(RpcError::invalid_params("config", "must be an object"));
                }
                // Merging onto nothing drops `null` members.
                next = json!({});
                json_patch::merge(&mut next, config);
            }
        }
        runtime::prune(&mut next);
        Ok(next)
    }

    /// What the history shows of it (secrets hidden).
    fn recorded(&self) -> (Option<String>, Value) {
        let (path, mut value) = match self {
            Self::Set { path, value } => (Some(path.clone()), value.clone()),
            Self::Patch(v) | Self::Apply(v) => (None, v.clone()),
        };
        redact_secrets(&mut value);
        (path, value)
    }
}

/// -32602 naming the config field.
fn field_error(e: ConfigError) -> RpcError {
    RpcError::invalid_params(&e.field, e.message)
}

/// -32007 for a stale base, with the stored version.
fn stale(base: u64, current: u64) -> RpcError {
    RpcError::new(error::CONFLICT, "conflict").with_data(json!({
        "reason": format!("baseVersion {base} is stale; the current version is {current}"),
        "currentVersion": current,
    }))
}

/// Apply `edit` to the shared document on behalf of `by`, based on
/// `base` when given (else on whatever is stored, retrying races). The
/// settings in force here afterwards.
pub async fn change(
    app: &App,
    by: &str,
    base: Option<u64>,
    edit: Edit,
) -> Result<Arc<RuntimeSettings>, RpcError> {
    let store = app.config_store();
    for _ in 0..ATTEMPTS {
        let stored = store.config_document().await?;
        if let Some(base) = base
            && base != stored.version
        {
            return Err(stale(base, stored.version));
        }
        let next = edit.edit(&stored.overrides)?;
        let size = serde_json::to_string(&next).map_or(usize::MAX, |s| s.len());
        if size > MAX_DOCUMENT {
            return Err(RpcError::invalid_params(
                edit.param(),
                format!("the override document would be {size} bytes; at most {MAX_DOCUMENT}"),
            ));
        }
        let config = effective(&app.config, &next).map_err(field_error)?;
        let (path, value) = edit.recorded();
        let now = now_ms();
        let entry = ConfigChange {
            from_version: stored.version,
            version: stored.version + 1,
            by: by.to_owned(),
            at: now,
            op: edit.op().to_owned(),
            path,
            value,
        };
        match store.put_config(stored.version, &next, &entry, now).await? {
            ConfigWrite::Written(version) => {
                tracing::info!(version, by, op = edit.op(), "runtime config changed");
                put_in_force(app, version, next, config);
                return Ok(app.live());
            }
            ConfigWrite::Stale { current } => {
                if let Some(base) = base {
                    return Err(stale(base, current));
                }
            }
        }
    }
    Err(RpcError::conflict(
        "the runtime config kept changing; try again",
    ))
}

/// Put settings in force here and export their version. The stored
/// document always wins: should a writer's own apply land after a newer
/// version (another writer), the next poll finds the versions differ and
/// applies the stored one.
fn put_in_force(app: &App, version: u64, overrides: Value, config: crate::config::Config) {
    if config.limits.max_connections != app.live().limits.max_connections {
        crate::telemetry::export_capacity(config.limits.max_connections);
    }
    app.live.set(RuntimeSettings {
        version,
        overrides,
        config,
    });
    metrics::gauge!("switchyard_config_version").set(version as f64);
}

/// Validate a stored document against this instance's start-up config
/// and put it in force; a document this instance cannot use is logged
/// and skipped (its settings stay as they were). Whether it was applied.
fn apply_document(app: &App, document: ConfigDocument) -> bool {
    match effective(&app.config, &document.overrides) {
        Ok(config) => {
            tracing::info!(version = document.version, "runtime config applied");
            put_in_force(app, document.version, document.overrides, config);
            true
        }
        Err(e) => {
            tracing::error!(
                version = document.version,
                field = %e.field,
                reason = %e.message,
                "stored runtime config does not validate here; keeping the settings in force"
            );
            false
        }
    }
}

/// Before serving: apply the stored document, and export the version.
pub async fn load_at_start(app: &App) {
    metrics::gauge!("switchyard_config_version").set(0.0);
    match app.config_store().config_document().await {
        Ok(document) if document.version > 0 => {
            apply_document(app, document);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "runtime config not read at start; polling for it"),
    }
}

/// Follow the stored document for the life of the instance: on every
/// announcement and every [`POLL`].
pub async fn follow(app: App) {
    let mut announced = app.config_store().config_changes();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last stored version that did not validate here: not retried.
    let mut refused = None;
    loop {
        tokio::select! {
            changed = announced.changed() => {
                if changed.is_err() {
                    // No announcements any more: polling alone.
                    tick.tick().await;
                }
            }
            _ = tick.tick() => {}
        }
        refused = sync(&app, refused).await;
    }
}

/// One comparison with the stored version; the version refused, if any.
async fn sync(app: &App, refused: Option<u64>) -> Option<u64> {
    let store = app.config_store();
    let Ok(stored) = store.config_version().await else {
        return refused;
    };
    let live = app.live();
    if stored == 0 && live.version > 0 {
        restore(app, &live).await;
        return refused;
    }
    if stored == live.version || Some(stored) == refused {
        return refused;
    }
    match store.config_document().await {
        Ok(document) => {
            let version = document.version;
            if apply_document(app, document) {
                None
            } else {
                Some(version)
            }
        }
        Err(_) => refused,
    }
}

/// Shared state lost the document this instance runs on: write it back.
async fn restore(app: &App, live: &RuntimeSettings) {
    let document = ConfigDocument {
        version: live.version,
        overrides: live.overrides.clone(),
        updated_at: now_ms(),
    };
    match app.config_store().restore_config(&document).await {
        Ok(true) => tracing::warn!(
            version = live.version,
            "runtime config was missing from shared state; written back"
        ),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "runtime config write-back failed"),
    }
}

/// What `config.get` and the changes answer: the version in force, the
/// effective live settings, the overrides and the paths they set
/// (webhook secrets hidden).
pub fn snapshot(settings: &RuntimeSettings, with_schema: bool) -> Result<Value, RpcError> {
    let config = view(&settings.config, true).map_err(|e| RpcError::internal(&e))?;
    let mut overrides = settings.overrides.clone();
    redact_secrets(&mut overrides);
    let mut reply = json!({
        "version": settings.version,
        "config": config,
        "overrides": overrides,
        "overridden": overridden(&settings.overrides),
    });
    if with_schema {
        reply["schema"] = runtime::schema();
    }
    Ok(reply)
}
