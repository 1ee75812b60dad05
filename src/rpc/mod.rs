//! The method table and the path of one call.
//!
//! [`handle`] takes a parsed call through the same steps every time:
//! resolve aliases → look the method up (-32601) → rate limits (-32004) →
//! authentication (-32000) and scope (-32003) → the namespace's handler →
//! metrics. Every method declares its [`Requirement`] in [`METHODS`]; a
//! test checks that each entry has a handler and vice versa.

pub mod agents;
pub mod approvals;
pub mod channels;
pub mod runs;
pub mod sessions;
pub mod system;

use crate::app::App;
use crate::auth::{Identity, Requirement, Scope};
use crate::conn::ConnHandle;
use crate::protocol::{Call, RpcError, now_ms};
use crate::ratelimit::lease_size;
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use Requirement::{Any, Authenticated};

const READ: Requirement = Requirement::Scope(Scope::Read);
const WRITE: Requirement = Requirement::Scope(Scope::Write);
const ADMIN: Requirement = Requirement::Scope(Scope::Admin);
const APPROVALS: Requirement = Requirement::Scope(Scope::Approvals);
const NODE: Requirement = Requirement::Node;

/// Every built-in method and what it requires.
pub const METHODS: &[(&str, Requirement)] = &[
    ("ping", Any),
    ("system.ping", Any),
    ("connect", Any),
    ("auth", Any),
    ("health", READ),
    ("status", READ),
    ("system.presence", READ),
    ("clients.list", ADMIN),
    ("client.kick", ADMIN),
    ("logs.tail", ADMIN),
    ("subscribe", Authenticated),
    ("unsubscribe", Authenticated),
    ("publish", WRITE),
    ("presence.get", Authenticated),
    ("history", Authenticated),
    ("session.create", WRITE),
    ("session.join", WRITE),
    ("session.leave", WRITE),
    ("session.get", READ),
    ("session.patch", WRITE),
    ("session.list", READ),
    ("session.send", WRITE),
    ("session.history", READ),
    ("session.resume", WRITE),
    ("session.close", WRITE),
    ("node.invoke", WRITE),
    ("invoke.cancel", WRITE),
    ("invoke.progress", NODE),
    ("agent.register", NODE),
    ("agent.status", NODE),
    ("agent.unregister", NODE),
    ("agent.event", NODE),
    ("agents.list", READ),
    ("agents.get", READ),
    ("tools.list", READ),
    ("models.list", READ),
    ("agent.run", WRITE),
    ("agent.wait", READ),
    ("agent.cancel", WRITE),
    ("chat.send", WRITE),
    ("chat.history", READ),
    ("chat.abort", WRITE),
    ("chat.inject", WRITE),
    ("approval.request", NODE),
    ("approval.resolve", APPROVALS),
    ("approval.wait", Authenticated),
    ("approval.list", APPROVALS),
    ("approval.history", APPROVALS),
];

/// Alternative names clients may use.
fn canonical(method: &str) -> &str {
    match method {
        "notify.subscribe" => "subscribe",
        "notify.unsubscribe" => "unsubscribe",
        "node.list" => "agents.list",
        "node.describe" => "agents.get",
        "agent.list" => "agents.list",
        "agent.get" => "agents.get",
        m => match m.strip_prefix("sessions.") {
            Some(rest) => match rest {
                "create" => "session.create",
                "join" => "session.join",
                "leave" => "session.leave",
                "get" => "session.get",
                "patch" => "session.patch",
                "list" => "session.list",
                "send" => "session.send",
                "history" => "session.history",
                "resume" => "session.resume",
                "close" => "session.close",
                _ => m,
            },
            None => m,
        },
    }
}

/// Calls that wait on another party (a node's answer). The connection runs
/// them in their own task so it keeps serving the client meanwhile; every
/// other call runs in order.
pub fn is_long_running(method: &str) -> bool {
    match canonical(method) {
        "node.invoke" | "agent.run" | "agent.wait" | "chat.send" | "approval.wait" => true,
        // Not built in: possibly served by a node (a method provider).
        other => lookup(other).is_none(),
    }
}

/// Whether `method` (or an alias of it) is built in.
pub fn is_builtin(method: &str) -> bool {
    lookup(canonical(method)).is_some()
}

fn lookup(method: &str) -> Option<(&'static str, Requirement)> {
    METHODS.iter().find(|(name, _)| *name == method).copied()
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
    let Some((method, requirement)) = lookup(canonical(&call.method)) else {
        metrics::counter!("switchyard_messages_in_total", "method" => "provided").increment(1);
        return provided(app, conn, call).await;
    };
    metrics::counter!("switchyard_messages_in_total", "method" => method).increment(1);
    let started = Instant::now();
    let ctx = Ctx::for_call(app, conn, &call);
    let outcome = checked(&ctx, method, requirement, call.params).await;
    metrics::histogram!("switchyard_rpc_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &outcome {
        metrics::counter!("switchyard_rpc_errors_total", "code" => e.code.to_string()).increment(1);
    }
    outcome
}

async fn checked(
    ctx: &Ctx<'_>,
    method: &'static str,
    requirement: Requirement,
    params: Value,
) -> Result<Value, RpcError> {
    rate_check(ctx.app, ctx.conn).await?;
    authorize(ctx.conn, method, requirement)?;
    let span = crate::otel::rpc_span(method);
    let call = tracing::Instrument::instrument(dispatch(ctx, method, params), span);
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
                "handler {method} panicked: {what}"
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
    let (_, requirement) = lookup(method)
        .ok_or_else(|| RpcError::internal(&format!("{method} is not in the method table")))?;
    authorize(conn, method, requirement)
}

fn describe(requirement: Requirement) -> String {
    match requirement {
        Any | Authenticated => "authentication".into(),
        Requirement::Scope(scope) => format!("scope {scope}"),
        Requirement::Node => "role node".into(),
    }
}

async fn dispatch(ctx: &Ctx<'_>, method: &str, p: Value) -> Result<Value, RpcError> {
    match method {
        "ping" | "system.ping" => Ok(system::ping()),
        "connect" => system::connect(ctx, params(p)?).await,
        "auth" => system::auth(ctx, p).await,
        "health" => system::health(ctx).await,
        "status" => system::status(ctx).await,
        "system.presence" | "clients.list" => system::presence(ctx, params_or_default(p)?).await,
        "client.kick" => system::kick(ctx, params(p)?).await,
        "logs.tail" => system::logs_tail(ctx, params(p)?),
        "subscribe" => channels::subscribe(ctx, params(p)?).await,
        "unsubscribe" => channels::unsubscribe(ctx, params(p)?).await,
        "publish" => channels::publish(ctx, params(p)?).await,
        "presence.get" => channels::presence(ctx, params(p)?).await,
        "history" => channels::history(ctx, params(p)?).await,
        "session.create" => sessions::create(ctx, params(p)?).await,
        "session.join" => sessions::join(ctx, params(p)?).await,
        "session.leave" => sessions::leave(ctx, params(p)?).await,
        "session.get" => sessions::get(ctx, params(p)?).await,
        "session.patch" => sessions::patch(ctx, params(p)?).await,
        "session.list" => sessions::list(ctx).await,
        "session.send" => sessions::send(ctx, params(p)?).await,
        "session.history" => sessions::history(ctx, params(p)?).await,
        "session.resume" => sessions::resume(ctx, params(p)?).await,
        "session.close" => sessions::close(ctx, params(p)?).await,
        "node.invoke" => agents::invoke(ctx, params(p)?).await,
        "invoke.cancel" => agents::cancel(ctx, params(p)?),
        "invoke.progress" => agents::progress(ctx, params(p)?),
        "agent.register" => agents::register(ctx, params(p)?).await,
        "agent.status" => agents::status(ctx, params(p)?).await,
        "agent.unregister" => agents::unregister(ctx, params_or_default(p)?).await,
        "agent.event" => runs::event(ctx, params(p)?).await,
        "agents.list" => agents::list(ctx, params_or_default(p)?).await,
        "agents.get" => agents::get(ctx, params(p)?).await,
        "tools.list" => agents::tools(ctx).await,
        "models.list" => agents::models_list(ctx).await,
        "agent.run" => runs::run(ctx, params(p)?).await,
        "agent.wait" => runs::wait(ctx, params(p)?).await,
        "agent.cancel" | "chat.abort" => runs::cancel(ctx, params(p)?).await,
        "chat.send" => runs::chat_send(ctx, params(p)?).await,
        "chat.history" => runs::chat_history(ctx, params(p)?).await,
        "chat.inject" => runs::chat_inject(ctx, params(p)?).await,
        "approval.request" => approvals::request(ctx, params(p)?).await,
        "approval.resolve" => approvals::resolve(ctx, params(p)?).await,
        "approval.wait" => approvals::wait(ctx, params(p)?).await,
        "approval.list" => approvals::list(ctx).await,
        "approval.history" => approvals::history(ctx, params_or_default(p)?).await,
        other => Err(RpcError::method_not_found(other)),
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
pub fn params<T: DeserializeOwned>(value: Value) -> Result<T, RpcError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        RpcError::invalid_params(&field, e.into_inner().to_string())
    })
}

/// Per-connection window locally, then the identity's leased budget.
async fn rate_check(app: &App, conn: &ConnHandle) -> Result<(), RpcError> {
    let limits = &app.config.rate_limits;
    let now = now_ms();
    let decision = conn.state().rate.hit(limits.messages_per_conn, now);
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
    let window = app.config.rate_limits.messages_per_identity;
    let local = app.hub.with_budget(sub, |b| {
        if b.remaining > 0 {
            b.remaining -= 1;
            Some(Ok(()))
        } else if b.blocked_until > now {
            Some(Err(b.blocked_until - now))
        } else {
            None
        }
    });
    let retry = match local {
        Some(Ok(())) => return Ok(()),
        Some(Err(retry)) => retry,
        None => {
            let key = format!("msg:{sub}");
            let (granted, retry) = app
                .backend
                .rate_take(&key, window, lease_size(window), now)
                .await?;
            app.hub.with_budget(sub, |b| {
                b.remaining += granted.saturating_sub(1);
                if granted == 0 {
                    b.blocked_until = now + retry;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_table_entries() {
        for alias in [
            "notify.subscribe",
            "notify.unsubscribe",
            "sessions.list",
            "sessions.send",
            "sessions.create",
        ] {
            assert!(lookup(canonical(alias)).is_some(), "{alias}");
        }
        assert!(lookup(canonical("sessions.nope")).is_none());
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut names: Vec<_> = METHODS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METHODS.len());
    }
}
