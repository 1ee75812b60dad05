//! Sessions: create, join, leave, get, patch, list, send, history, resume
//! and close.
//!
//! Membership and metadata live in the backend; delivery to members rides
//! on an internal channel per session (`$session:<id>`) that each member
//! connection subscribes to locally, so `session.send` is one publish that
//! reaches members on every instance. Each `session.event` is numbered
//! (`offset`) and kept in the session's log as it is published
//! ([`crate::backend::LoggedFrame`]). A session whose owner disconnects
//! is kept for `resume_window`: the owner may come back on any instance
//! with its resume token ([`resume`]) and is replayed the events it
//! missed; otherwise [`close_expired`] closes it.
//!
//! The owner's instance keeps a copy of each session record
//! ([`crate::hub::OwnedSessions`]); when the backend loses its state, the
//! re-assert writes the copies back ([`restore_if_lost`]) and every member
//! re-joins from its own instance ([`reassert`], [`rejoin_later`]).

use super::Ctx;
use crate::backend::{BackendError, LoggedFrame, SessionRecord};
use crate::conn::ConnHandle;
use crate::hub::{Loss, session_channel};
use crate::protocol::{RpcError, frame, now_ms};
use crate::server::App;
use serde::Deserialize;
use serde_json::{Value, json};

/// Longest accepted session id.
const MAX_ID_LEN: usize = 128;

fn validate_id(id: &str) -> Result<(), RpcError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(RpcError::invalid_params(
            "sessionId",
            "1-128 characters from A-Z a-z 0-9 - _ . :",
        ))
    }
}

fn backend_err(id: &str) -> impl FnOnce(BackendError) -> RpcError + '_ {
    move |e| e.into_rpc(id)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateParams {
    session_id: Option<String>,
    #[serde(default)]
    meta: Option<Value>,
    max_members: Option<usize>,
}

pub async fn create(ctx: &Ctx<'_>, p: CreateParams) -> Result<Value, RpcError> {
    let (id, token) = open(ctx, p).await?;
    Ok(json!({ "sessionId": id, "resumeToken": token, "version": 0 }))
}

/// A session owned by the caller, for an agent run: `session_id` when it
/// exists and the caller belongs to it, else a new one (under that id, if
/// given). Returns its id and, when it was created here, its resume token
/// (then [`discard`] it if the run does not start).
pub async fn for_run(
    ctx: &Ctx<'_>,
    session_id: Option<&str>,
) -> Result<(String, Option<String>), RpcError> {
    if let Some(id) = session_id {
        validate_id(id)?;
        if ctx.app.backend.session(id).await?.is_some() {
            require_member(ctx, id).await?;
            return Ok((id.to_owned(), None));
        }
    }
    let params = CreateParams {
        session_id: session_id.map(str::to_owned),
        meta: None,
        max_members: None,
    };
    let (id, token) = open(ctx, params).await?;
    Ok((id, Some(token)))
}

/// Close a session created for a run that did not start.
pub async fn discard(app: &App, id: &str) {
    if let Err(e) = end(app, id, "run not started").await {
        tracing::debug!(session = %id, error = %e, "discarding a session failed");
    }
}

/// The session, if the caller is a member of it (admins may look at any).
pub async fn require_member(ctx: &Ctx<'_>, id: &str) -> Result<SessionRecord, RpcError> {
    let identity = ctx.identity()?;
    let record = load(ctx.app, id).await?;
    if record.members.iter().any(|m| m == ctx.conn.id())
        || record.owner_identity == identity.sub
        || identity.is_admin()
    {
        Ok(record)
    } else {
        Err(RpcError::forbidden("join the session first"))
    }
}

/// Create a session owned by the calling connection; (id, resume token).
async fn open(ctx: &Ctx<'_>, p: CreateParams) -> Result<(String, String), RpcError> {
    let identity = ctx.identity()?;
    let limits = &ctx.app.config.limits;
    let id = match p.session_id {
        Some(id) => {
            validate_id(&id)?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let max_members = p.max_members.unwrap_or(limits.max_session_members);
    if max_members == 0 || max_members > limits.max_session_members {
        return Err(RpcError::invalid_params(
            "maxMembers",
            format!("between 1 and {}", limits.max_session_members),
        ));
    }
    let meta = p.meta.unwrap_or_else(|| json!({}));
    if !meta.is_object() {
        return Err(RpcError::invalid_params("meta", "must be an object"));
    }
    let now = now_ms();
    let record = SessionRecord {
        session_id: id.clone(),
        owner: Some(ctx.conn.id().to_owned()),
        owner_identity: identity.sub.clone(),
        members: vec![ctx.conn.id().to_owned()],
        member_identities: vec![identity.sub.clone()],
        meta,
        version: 0,
        max_members,
        created_at: now,
        updated_at: now,
        detached_at: None,
        resume_token: uuid::Uuid::new_v4().simple().to_string(),
    };
    let token = record.resume_token.clone();
    ctx.app
        .backend
        .create_session(record.clone(), limits.max_sessions_per_client)
        .await
        .map_err(backend_err(&id))?;
    ctx.app.hub.owned().insert(record, 0);
    attach(ctx.app, ctx.conn, &id).await?;
    Ok((id, token))
}

/// Subscribe the connection to the session's delivery channel.
async fn attach(app: &App, conn: &ConnHandle, id: &str) -> Result<(), RpcError> {
    app.hub.subscribe_local(&session_channel(id), conn).await?;
    conn.state().sessions.insert(id.to_owned());
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdParams {
    session_id: String,
}

pub async fn join(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    validate_id(&p.session_id)?;
    let record = ctx
        .app
        .backend
        .join_session(&p.session_id, ctx.conn.id(), &identity.sub)
        .await
        .map_err(backend_err(&p.session_id))?;
    attach(ctx.app, ctx.conn, &p.session_id).await?;
    Ok(record.public())
}

pub async fn leave(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    validate_id(&p.session_id)?;
    ctx.app
        .backend
        .leave_session(&p.session_id, ctx.conn.id())
        .await
        .map_err(backend_err(&p.session_id))?;
    ctx.app.hub.owned().release(ctx.conn.id(), &p.session_id);
    let was_member = ctx.conn.state().sessions.remove(&p.session_id);
    if was_member {
        let channel = session_channel(&p.session_id);
        ctx.app.hub.unsubscribe_local(&channel, ctx.conn.id()).await;
    }
    Ok(json!({ "left": was_member, "sessionId": p.session_id }))
}

async fn load(app: &App, id: &str) -> Result<SessionRecord, RpcError> {
    validate_id(id)?;
    app.backend
        .session(id)
        .await?
        .ok_or_else(|| RpcError::not_found("session", id))
}

pub async fn get(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let record = load(ctx.app, &p.session_id).await?;
    Ok(record.public())
}

/// Only the owner's identity (or an admin) may change or close a session.
fn require_owner(ctx: &Ctx<'_>, record: &SessionRecord) -> Result<(), RpcError> {
    let identity = ctx.identity()?;
    if identity.is_admin() || identity.sub == record.owner_identity {
        Ok(())
    } else {
        Err(RpcError::forbidden("only the session's owner may do this"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchParams {
    session_id: String,
    meta: Value,
    base_version: Option<u64>,
}

pub async fn patch(ctx: &Ctx<'_>, p: PatchParams) -> Result<Value, RpcError> {
    // A non-object merge patch would replace `meta` wholesale with a
    // scalar; `meta` stays an object as `session.create` made it.
    if !p.meta.is_object() {
        return Err(RpcError::invalid_params(
            "meta",
            "must be an object (a JSON merge patch)",
        ));
    }
    let record = load(ctx.app, &p.session_id).await?;
    require_owner(ctx, &record)?;
    let updated = ctx
        .app
        .backend
        .patch_session(&p.session_id, &p.meta, p.base_version)
        .await
        .map_err(backend_err(&p.session_id))?;
    let update =
        json!({ "sessionId": p.session_id, "version": updated.version, "meta": updated.meta });
    notify_members(ctx.app, &p.session_id, "session.updated", &update).await?;
    Ok(updated.public())
}

/// Sessions the caller owns or belongs to (all of them for admins).
pub async fn list(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let sessions: Vec<Value> = ctx
        .app
        .backend
        .sessions()
        .await?
        .into_iter()
        .filter(|s| {
            identity.is_admin()
                || s.owner_identity == identity.sub
                || s.member_identities.contains(&identity.sub)
        })
        .map(|s| s.public())
        .collect();
    Ok(json!({ "count": sessions.len(), "sessions": sessions }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendParams {
    session_id: String,
    event: String,
    #[serde(default)]
    data: Value,
}

pub async fn send(ctx: &Ctx<'_>, p: SendParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let record = load(ctx.app, &p.session_id).await?;
    let member = record.members.iter().any(|m| m == ctx.conn.id());
    if !member && !identity.is_admin() {
        return Err(RpcError::forbidden("join the session before sending to it"));
    }
    let event = LoggedFrame::new(
        "session.event",
        json!({
            "sessionId": p.session_id,
            "event": p.event,
            "data": p.data,
            "from": { "connId": ctx.conn.id(), "identity": identity.sub },
            "timestamp": now_ms(),
        }),
    );
    let keep = ctx.app.config.limits.session_history;
    let (offset, delivered) = ctx
        .app
        .backend
        .log_publish(&session_channel(&p.session_id), &event, keep)
        .await
        .map_err(backend_err(&p.session_id))?;
    Ok(json!({ "delivered": delivered, "offset": offset }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryParams {
    session_id: String,
    /// Events after this offset (0: from the oldest kept).
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

/// The session's logged events after `since`, oldest first. `complete`
/// says nothing between `since` and the first event returned is missing
/// (trimmed from the log, or lost with the backend's state).
pub async fn history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    require_member(ctx, &p.session_id).await?;
    let channel = session_channel(&p.session_id);
    let keep = ctx.app.config.limits.session_history;
    let head = json!({ "sessionId": p.session_id });
    super::replay::history(ctx.app, head, &channel, p.since, p.limit, keep, true).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResumeParams {
    session_id: String,
    resume_token: String,
    /// The newest event offset the client has (0: none).
    #[serde(default)]
    offset: u64,
}

impl ResumeParams {
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
}

/// Take ownership of a session back with its resume token — from any
/// connection of the owner's identity on any instance, within the resume
/// window — and be replayed every logged event after `offset`, in order,
/// before this call's reply; live events follow without gap or duplicate
/// (the socket is held back from the session's channel meanwhile, see
/// [`crate::hub::Hub::hold`]). An owner connection still attached (a
/// socket not yet known dead) stays a member but no longer owns it.
pub async fn resume(ctx: &Ctx<'_>, p: ResumeParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let app = ctx.app;
    let id = p.session_id.as_str();
    let record = load(app, id).await?;
    let token_ok: bool =
        subtle::ConstantTimeEq::ct_eq(record.resume_token.as_bytes(), p.resume_token.as_bytes())
            .into();
    if !token_ok {
        return Err(RpcError::forbidden("resume token does not match"));
    }
    if record.owner_identity != identity.sub {
        return Err(RpcError::forbidden("session belongs to another identity"));
    }
    let owned = app.hub.owned();
    let max = app.config.limits.max_sessions_per_client;
    if !owned.owns(ctx.conn.id(), id) && owned.owned_by(ctx.conn.id()) >= max {
        return Err(RpcError::limit("sessions per connection", max));
    }
    let record = app
        .backend
        .reclaim_session(id, ctx.conn.id(), &identity.sub, true)
        .await
        .map_err(backend_err(id))?;
    let keep = app.config.limits.session_history;
    let channel = session_channel(id);
    let attached = attach(app, ctx.conn, id);
    let done = super::replay::replay(app, ctx.conn, &channel, p.offset, keep, attached).await?;
    owned.insert(record.clone(), done.latest);
    metrics::counter!("switchyard_sessions_resumed_total").increment(1);
    let mut reply = done.to_json();
    reply["sessionId"] = json!(id);
    reply["resumed"] = json!(true);
    reply["session"] = record.public();
    Ok(reply)
}

/// Push `method` to the session's members on every instance; returns how
/// many sockets it was queued to.
async fn notify_members(
    app: &App,
    session_id: &str,
    method: &str,
    params: &Value,
) -> Result<usize, RpcError> {
    let frame = frame::notification(method, params);
    Ok(app
        .backend
        .publish(&session_channel(session_id), frame, false)
        .await?)
}

pub async fn close(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let record = load(ctx.app, &p.session_id).await?;
    require_owner(ctx, &record)?;
    end(ctx.app, &p.session_id, "closed").await?;
    Ok(json!({ "closed": true, "sessionId": p.session_id }))
}

/// Remove a session and tell its members with `session.closed`.
async fn end(app: &App, id: &str, reason: &str) -> Result<(), RpcError> {
    if app.backend.close_session(id).await?.is_none() {
        return Err(RpcError::not_found("session", id));
    }
    super::runs::session_closing(app, id).await;
    if let Err(e) = app.backend.forget_session_records(id).await {
        tracing::warn!(session = %id, error = %e, "dropping a session's run and history failed");
    }
    let frame = frame::notification(
        "session.closed",
        &json!({ "sessionId": id, "reason": reason }),
    );
    app.backend
        .broadcast(&session_channel(id), frame, true)
        .await?;
    Ok(())
}

/// A connection went away: leave its sessions' channels and let the
/// backend drop it from member lists (owned sessions start their resume
/// window).
pub async fn on_disconnect(app: &App, conn: &ConnHandle) {
    app.hub.owned().forget_owner(conn.id());
    let ids: Vec<String> = conn.state().sessions.drain().collect();
    for id in &ids {
        app.hub
            .unsubscribe_local(&session_channel(id), conn.id())
            .await;
    }
    if let Err(e) = app.backend.detach_connection(conn.id(), now_ms()).await {
        tracing::warn!(error = %e, "detaching sessions failed");
    }
}

/// When the backend has lost its state since the last look (its epoch
/// changed), create the sessions local connections own again, each with
/// its owner as the only member. Returns what the epoch said (`None` when
/// it could not be read): after a loss, now or a moment ago, members wait
/// for owners on other instances to write theirs back ([`rejoin_later`]);
/// without one, a session the backend does not know was closed while this
/// instance was cut off ([`closed_while_away`]).
pub async fn restore_if_lost(app: &App) -> Option<Loss> {
    let owned = app.hub.owned();
    let epoch = match app.backend.epoch().await {
        Ok(epoch) => epoch,
        Err(e) => {
            tracing::warn!(error = %e, "reading the backend's epoch failed");
            return None;
        }
    };
    let loss = owned.note_epoch(epoch, app.config.limits.node_ttl());
    if loss != Loss::Now {
        return Some(loss);
    }
    let records = owned.to_restore();
    let mut restored = 0;
    for (record, offset) in records {
        let id = record.session_id.clone();
        // The owner owned it before the loss: its cap does not apply again.
        let created = match app.backend.create_session(record, usize::MAX).await {
            // Its events are lost; its numbering goes on (a member's next
            // `session.history` or resume then reports the gap).
            Ok(()) if offset > 0 => {
                let channel = session_channel(&id);
                app.backend.advance_log(&channel, offset).await
            }
            other => other,
        };
        match created {
            Ok(()) => restored += 1,
            Err(BackendError::Conflict(_)) => {}
            Err(e) => {
                tracing::warn!(session = %id, error = %e, "restoring a session failed");
                owned.restore_failed();
            }
        }
    }
    metrics::counter!("switchyard_sessions_restored_total").increment(restored);
    tracing::info!(
        restored,
        "the backend lost its state; owned sessions written back"
    );
    Some(loss)
}

/// Re-join the sessions this connection belongs to (taking back those it
/// owns). Returns the ones the backend does not know (closed, or lost with
/// the backend's state).
pub async fn reassert(app: &App, conn: &ConnHandle) -> Vec<String> {
    let ids: Vec<String> = conn.state().sessions.iter().cloned().collect();
    let mut missing = Vec::new();
    for id in ids {
        if rejoin(app, conn, &id).await {
            missing.push(id);
        }
    }
    missing
}

/// Join again; an owner (by this instance's copy) also takes its session
/// back, should a reaper have taken it for gone while this instance was
/// cut off (its resume window would otherwise close it under a live
/// owner). Returns whether the backend does not know the session; other
/// failures are logged (the next re-assert tries again).
async fn rejoin(app: &App, conn: &ConnHandle, id: &str) -> bool {
    let Some(identity) = conn.identity() else {
        return false;
    };
    let backend = &app.backend;
    let outcome = if app.hub.owned().owns(conn.id(), id) {
        match backend
            .reclaim_session(id, conn.id(), &identity.sub, false)
            .await
        {
            Err(BackendError::Conflict(why)) => {
                tracing::info!(session = %id, %why, "a session owned here has another owner");
                app.hub.owned().forget(id);
                backend.join_session(id, conn.id(), &identity.sub).await
            }
            other => other,
        }
    } else {
        backend.join_session(id, conn.id(), &identity.sub).await
    };
    match outcome {
        Ok(_) => false,
        Err(BackendError::NotFound(_)) => true,
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "re-joining a session failed");
            false
        }
    }
}

/// How often [`rejoin_later`] tries again.
const REJOIN_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// After the backend lost its state, sessions owned on other instances
/// come back when those instances re-assert: keep re-joining `pending`
/// (connection, session) pairs until each is back, the connection left the
/// session, or `node_ttl` has passed (an owner's instance that has not
/// re-asserted by then is dead, and its sessions with it). Members of a
/// session that did not come back are told it is gone, as after a close
/// they missed ([`closed_while_away`]).
pub fn rejoin_later(app: &App, pending: Vec<(ConnHandle, String)>) {
    if pending.is_empty() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + app.config.limits.node_ttl();
        let mut pending = pending;
        while !pending.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(REJOIN_PERIOD).await;
            let mut left = Vec::new();
            for (conn, id) in pending {
                if conn.is_closed() || !conn.state().sessions.contains(&id) {
                    continue;
                }
                // Only a session still missing is waited for; a backend
                // error ends the wait (the next re-assert tries again).
                if rejoin(&app, &conn, &id).await {
                    left.push((conn, id));
                }
            }
            pending = left;
        }
        if !pending.is_empty() {
            tracing::info!(
                memberships = pending.len(),
                "sessions lost with the backend's state did not come back"
            );
            // Nobody will write them back: their members hear they are gone.
            closed_while_away(&app, pending).await;
        }
    });
}

/// Sessions gone without their `session.closed` reaching this instance
/// (closed while it was cut off from the backend, or lost with the
/// backend's state and not written back): tell each local member, as the
/// close would have, and drop the local membership and any owner's copy.
pub async fn closed_while_away(app: &App, gone: Vec<(ConnHandle, String)>) {
    for (conn, id) in gone {
        // A close that did reach it since has done all this already.
        if !conn.state().sessions.remove(&id) {
            continue;
        }
        app.hub.owned().forget(&id);
        app.hub
            .unsubscribe_local(&session_channel(&id), conn.id())
            .await;
        let closed = json!({ "sessionId": id, "reason": "gone" });
        conn.push(frame::notification("session.closed", &closed));
    }
}

/// Close sessions whose owner has been gone longer than the resume window.
pub async fn close_expired(app: &App) {
    let window = app.config.limits.resume_window_ms;
    let cutoff = now_ms().saturating_sub(window);
    let Ok(ids) = app.backend.expired_sessions(cutoff).await else {
        return;
    };
    for id in ids {
        if let Err(e) = end(app, &id, "owner gone").await {
            tracing::debug!(session = %id, error = %e, "closing an expired session failed");
        }
    }
}
