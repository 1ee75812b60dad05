//! The method table and the path of one call.
//!
//! [`handle`] takes a parsed call through the same steps every time:
//! resolve aliases → look the method up (-32601) → rate limits (-32004) →
//! authentication (-32000) and scope (-32003) → the namespace's handler →
//! metrics. Every method is one row of the table (`table.rs`): its name,
//! aliases, [`Requirement`], whether it waits on another party, the type
//! its params decode into, its entry in the reference (`doc/`), and its
//! handler. [`openrpc`] builds the protocol reference from the rows.

pub mod agent_defs;
pub mod agents;
pub mod approvals;
pub mod channels;
pub mod cron;
pub mod devices;
mod doc;
pub mod openrpc;
pub mod runs;
pub mod runtime_config;
pub mod sessions;
pub mod system;
mod table;

use crate::app::App;
use crate::auth::{Identity, Requirement};
use crate::conn::ConnHandle;
use crate::protocol::{Call, RpcError, now_ms};
use crate::ratelimit::lease_size;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

pub use doc::Doc;
pub use table::{METHODS, Method, ParamsSchema, lookup};

use Requirement::{Any, Authenticated};

/// Calls that wait on another party (a node's answer). The connection runs
/// them in their own task so it keeps serving the client meanwhile; every
/// other call runs in order. A name that is not built in may be served by
/// a node (a method provider), so it waits too.
pub fn is_long_running(method: &str) -> bool {
    lookup(method).is_none_or(|m| m.long_running)
}

/// Whether `method` (or an alias of it) is built in.
pub fn is_builtin(method: &str) -> bool {
    lookup(method).is_some()
}

/// The context a handler runs in.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub conn: &'a ConnHandle,
    /// The call has an id: its result is sent back. A notification's is
    /// not, so a handler may skip work that only feeds the result.
    pub answered: bool,
}

impl<'a> Ctx<'a> {
    fn for_call(app: &'a App, conn: &'a ConnHandle, call: &Call) -> Self {
        Self {
            app,
            conn,
            answered: call.id.is_some(),
        }
    }

    /// The caller's identity; handlers that require more than `Any` always
    /// have one.
    pub fn identity(&self) -> Result<Arc<Identity>, RpcError> {
        self.conn
            .identity()
            .ok_or_else(|| RpcError::unauthorized("not authenticated"))
    }
}

/// Run one call to completion.
pub async fn handle(app: &App, conn: &ConnHandle, call: Call) -> Result<Value, RpcError> {
    let Some(method) = lookup(&call.method) else {
        metrics::counter!("switchyard_messages_in_total", "method" => "provided").increment(1);
        // Boxed: a routed call's state would otherwise make every call's
        // future (allocated per message) as large as its own.
        return Box::pin(provided(app, conn, call)).await;
    };
    let counted = method.metrics();
    counted.calls.increment(1);
    let started = Instant::now();
    let ctx = Ctx::for_call(app, conn, &call);
    let outcome = checked(&ctx, method, call.params).await;
    counted.duration.record(started.elapsed().as_secs_f64());
    if let Err(e) = &outcome {
        metrics::counter!("switchyard_rpc_errors_total", "code" => e.code.to_string()).increment(1);
    }
    outcome
}

async fn checked(ctx: &Ctx<'_>, method: &'static Method, params: Value) -> Result<Value, RpcError> {
    rate_check(ctx.app, ctx.conn).await?;
    authorize(ctx.conn, method.name, method.requirement)?;
    let span = crate::otel::rpc_span(method.name);
    let call = tracing::Instrument::instrument((method.handler)(ctx, params), span);
    // A bug in one handler must not take the connection (or its
    // neighbours) down: a panic becomes -32603 with a correlation id.
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(RpcError::internal(&format!(
                "handler {} panicked: {what}",
                method.name
            )))
        }
    }
}

/// A method that is not built in: a node may serve it (see
/// [`agents::provide`]); otherwise -32601.
async fn provided(app: &App, conn: &ConnHandle, call: Call) -> Result<Value, RpcError> {
    if call.method.len() > 128 || call.method.starts_with("rpc.") {
        return Err(RpcError::method_not_found(&call.method));
    }
    rate_check(app, conn).await?;
    if conn.identity().is_none() {
        return Err(RpcError::method_not_found(&call.method));
    }
    let ctx = Ctx::for_call(app, conn, &call);
    let started = Instant::now();
    let outcome = agents::provide(&ctx, &call.method, call.params).await;
    metrics::histogram!("switchyard_rpc_duration_seconds", "method" => "provided")
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &outcome {
        metrics::counter!("switchyard_rpc_errors_total", "code" => e.code.to_string()).increment(1);
    }
    outcome
}

/// Whether the connection may call `method`, which requires `requirement`
/// (-32000 unauthenticated, -32003 lacking the scope or role).
fn authorize(conn: &ConnHandle, method: &str, requirement: Requirement) -> Result<(), RpcError> {
    if requirement == Any {
        return Ok(());
    }
    let identity = conn
        .identity()
        .ok_or_else(|| RpcError::unauthorized("authenticate first (connect or auth)"))?;
    if !identity.satisfies(requirement) {
        return Err(RpcError::forbidden(format!(
            "{method} requires {}",
            describe(requirement)
        )));
    }
    Ok(())
}

/// [`authorize`] by the method table, for a method run on behalf of
/// another (`connect {resume}` runs `session.resume`).
pub fn authorize_as(conn: &ConnHandle, method: &'static str) -> Result<(), RpcError> {
    let row = lookup(method)
        .ok_or_else(|| RpcError::internal(&format!("{method} is not in the method table")))?;
    authorize(conn, method, row.requirement)
}

fn describe(requirement: Requirement) -> String {
    match requirement {
        Any | Authenticated => "authentication".into(),
        Requirement::Scope(scope) => format!("scope {scope}"),
        Requirement::Node => "role node".into(),
    }
}

/// Like [`params`], with absent params meaning the defaults.
pub fn params_or_default<T: DeserializeOwned + Default>(value: Value) -> Result<T, RpcError> {
    if value.is_null() {
        Ok(T::default())
    } else {
        params(value)
    }
}

/// Decode params into a typed struct; errors name the field.
///
/// Read without tracking the path first (every call's params pass here);
/// only params that do not fit are read again to name the field.
pub fn params<T: DeserializeOwned>(value: Value) -> Result<T, RpcError> {
    if let Ok(params) = T::deserialize(&value) {
        return Ok(params);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        RpcError::invalid_params(&field, e.into_inner().to_string())
    })
}

/// Per-connection window locally, then the identity's leased budget.
async fn rate_check(app: &App, conn: &ConnHandle) -> Result<(), RpcError> {
    let window = app.live.peek().rate_limits.messages_per_conn;
    let now = now_ms();
    let decision = conn.state().rate.hit(window, now);
    if !decision.allowed {
        metrics::counter!("switchyard_rate_limited_total", "limit" => "connection").increment(1);
        return Err(RpcError::rate_limited(decision.retry_after_ms));
    }
    let Some(identity) = conn.identity() else {
        return Ok(());
    };
    identity_budget(app, &identity.sub, now).await
}

async fn identity_budget(app: &App, sub: &str, now: u64) -> Result<(), RpcError> {
    use crate::ratelimit::Take;
    let window = app.live.peek().rate_limits.messages_per_identity;
    let lease = lease_size(window);
    let retry = match app.hub.with_budget(sub, |b| b.take(lease, now)) {
        Take::Allowed { refill } => {
            if refill {
                // Ahead of need, off this message's path.
                let (app, sub) = (app.clone(), sub.to_owned());
                tokio::spawn(async move {
                    let taken = lease_budget(&app, &sub, now).await;
                    app.hub.with_budget(&sub, |b| {
                        b.refilling = false;
                        if let Ok((granted, retry)) = taken {
                            b.granted(granted, retry, now);
                        }
                    });
                });
            }
            return Ok(());
        }
        Take::Blocked(retry) => retry,
        Take::Empty => {
            // Boxed: the backend call's state is kilobytes, and every
            // message's future would carry it.
            let (granted, retry) = Box::pin(lease_budget(app, sub, now)).await?;
            // This message takes one of what was granted.
            app.hub.with_budget(sub, |b| match granted {
                0 => b.granted(0, retry, now),
                n => b.remaining += n - 1,
            });
            if granted > 0 {
                return Ok(());
            }
            retry
        }
    };
    metrics::counter!("switchyard_rate_limited_total", "limit" => "identity").increment(1);
    Err(RpcError::rate_limited(retry))
}

/// Lease a share of `sub`'s message window from the backend.
async fn lease_budget(app: &App, sub: &str, now: u64) -> Result<(u32, u64), RpcError> {
    let window = app.live.peek().rate_limits.messages_per_identity;
    let key = format!("msg:{sub}");
    Ok(app
        .rate_store()
        .rate_take(&key, window, lease_size(window), now)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::params;
    use serde::Deserialize;
    use serde_json::{Value, json};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Outer {
        node_id: String,
        inner: Option<Inner>,
        #[serde(default)]
        free: Value,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn params_that_fit_are_read_and_those_that_do_not_name_their_field() {
        let read: Outer =
            params(json!({"nodeId": "a", "inner": {"n": 2}, "free": {"x": [1, "y"]}})).unwrap();
        assert_eq!(
            read,
            Outer {
                node_id: "a".into(),
                inner: Some(Inner { n: 2 }),
                free: json!({"x": [1, "y"]}),
            }
        );
        for (bad, field) in [
            (json!({"nodeId": "a", "inner": {"n": -1}}), "inner.n"),
            (json!({"nodeId": 7}), "nodeId"),
            (json!({"nodeId": "a", "inner": {"n": 1, "m": 2}}), "inner.m"),
            (json!({"nodeId": "a", "extra": 1}), "extra"),
            (json!({}), ""),
        ] {
            let err = params::<Outer>(bad.clone()).unwrap_err();
            assert_eq!(err.data.as_ref().unwrap()["field"], field, "{bad}: {err:?}");
        }
    }
}
