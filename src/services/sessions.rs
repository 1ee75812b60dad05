//! Session rules: who may see, change and close a session, attaching a
//! connection to a session's delivery channel, ending a session (and its
//! run), and what happens to sessions when a connection closes, when an
//! owner's resume window runs out and when the backend lost its state.
//!
//! Membership and metadata live in the backend; delivery to members rides
//! on an internal channel per session (`$session:<id>`) that each member
//! connection subscribes to locally, so one publish reaches members on
//! every instance. The owner's instance keeps a copy of each session record
//! ([`crate::hub::OwnedSessions`]); when the backend loses its state, the
//! re-assert writes the copies back ([`restore_if_lost`]) and every member
//! re-joins from its own instance ([`reassert`], [`rejoin_later`]).

use crate::app::App;
use crate::auth::Identity;
use crate::backend::{Admission, BackendError, SessionRecord};
use crate::conn::ConnHandle;
use crate::hub::Loss;
use crate::protocol::names::session_channel;
use crate::protocol::{RpcError, frame, now_ms};
use serde_json::{Value, json};

/// Longest accepted session id.
const MAX_ID_LEN: usize = 128;

/// How far past the newest event its owner's instance saw a restored
/// session's numbering resumes. Events numbered just before the backend
/// lost its state may not have reached the owner's instance yet (members
/// elsewhere may have them); skipping ahead keeps any of them from
/// sharing an offset with a later event, and members see the skipped
/// range as a gap (`complete: false`) like the rest of what was lost.
pub const RESTORE_OFFSET_MARGIN: u64 = 1_000;

/// Session ids: 1-128 characters from `A-Z a-z 0-9 - _ . :`.
pub fn validate_id(id: &str) -> Result<(), RpcError> {
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

/// A backend error about session `id`, as the caller sees it.
pub fn backend_err(id: &str) -> impl FnOnce(BackendError) -> RpcError + '_ {
    move |e| e.into_rpc(id)
}

/// Close a session created for a run that did not start.
pub async fn discard(app: &App, id: &str) {
    if let Err(e) = end(app, id, "run not started").await {
        tracing::debug!(session = %id, error = %e, "discarding a session failed");
    }
}

/// The session, if the caller is a member of it (admins may look at any).
pub async fn require_member(
    app: &App,
    identity: &Identity,
    conn_id: &str,
    id: &str,
) -> Result<SessionRecord, RpcError> {
    let record = load(app, id).await?;
    if record.members.iter().any(|m| m == conn_id)
        || record.owner_identity == identity.sub
        || identity.is_admin()
    {
        Ok(record)
    } else {
        Err(RpcError::forbidden("join the session first"))
    }
}

/// The session `id`, or a not-found error.
pub async fn load(app: &App, id: &str) -> Result<SessionRecord, RpcError> {
    validate_id(id)?;
    app.session_store()
        .session(id)
        .await?
        .ok_or_else(|| RpcError::not_found("session", id))
}

/// Subscribe the connection to the session's delivery channel.
pub async fn attach(app: &App, conn: &ConnHandle, id: &str) -> Result<(), RpcError> {
    app.hub.subscribe_local(&session_channel(id), conn).await?;
    conn.state().sessions.insert(id.to_owned());
    Ok(())
}

/// Only the owner's identity (or an admin) may change or close a session.
pub fn require_owner(identity: &Identity, record: &SessionRecord) -> Result<(), RpcError> {
    if identity.is_admin() || identity.sub == record.owner_identity {
        Ok(())
    } else {
        Err(RpcError::forbidden("only the session's owner may do this"))
    }
}

/// Push `method` to the session's members on every instance; returns how
/// many sockets it was queued to.
pub async fn notify_members(
    app: &App,
    session_id: &str,
    method: &str,
    params: &Value,
) -> Result<usize, RpcError> {
    let frame = frame::notification(method, params);
    Ok(app
        .bus()
        .publish(&session_channel(session_id), frame, false)
        .await?)
}

/// Remove a session and tell its members with `session.closed`.
pub async fn end(app: &App, id: &str, reason: &str) -> Result<(), RpcError> {
    if app.session_store().close_session(id).await?.is_none() {
        return Err(RpcError::not_found("session", id));
    }
    super::runs::session_closing(app, id).await;
    if let Err(e) = app.run_store().forget_session_records(id).await {
        tracing::warn!(session = %id, error = %e, "dropping a session's run and history failed");
    }
    let frame = frame::notification(
        "session.closed",
        &json!({ "sessionId": id, "reason": reason }),
    );
    app.bus()
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
    if let Err(e) = app
        .session_store()
        .detach_connection(conn.id(), now_ms())
        .await
    {
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
    let epoch = match app.health().epoch().await {
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
        let created = match app.session_store().create_session(record, usize::MAX).await {
            // Its events are lost; its numbering goes on past them (a
            // member's next `session.history` or resume reports the gap).
            Ok(()) => {
                let channel = session_channel(&id);
                let resume_at = offset.saturating_add(RESTORE_OFFSET_MARGIN);
                app.channel_log().advance_log(&channel, resume_at).await
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
    let backend = app.session_store();
    let outcome = if app.hub.owned().owns(conn.id(), id) {
        match backend
            .reclaim_session(id, conn.id(), &identity.sub, false)
            .await
        {
            Err(BackendError::Conflict(why)) => {
                tracing::info!(session = %id, %why, "a session owned here has another owner");
                app.hub.owned().forget(id);
                backend
                    .join_session(id, conn.id(), &identity.sub, Admission::Unchecked)
                    .await
            }
            other => other,
        }
    } else {
        backend
            .join_session(id, conn.id(), &identity.sub, Admission::Unchecked)
            .await
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
    let window = app.live().limits.resume_window_ms;
    let cutoff = now_ms().saturating_sub(window);
    let Ok(ids) = app.session_store().expired_sessions(cutoff).await else {
        return;
    };
    for id in ids {
        if let Err(e) = end(app, &id, "owner gone").await {
            tracing::debug!(session = %id, error = %e, "closing an expired session failed");
        }
    }
}

/// Whether `identity` (on connection `conn_id`, empty over HTTP) may see
/// `record`: its owner's identity, an identity with a member connection,
/// a member connection, or an admin.
pub fn may_see(identity: &Identity, conn_id: &str, record: &SessionRecord) -> bool {
    identity.is_admin()
        || record.owner_identity == identity.sub
        || record.member_identities.contains(&identity.sub)
        || (!conn_id.is_empty() && record.members.iter().any(|m| m == conn_id))
}

/// The session `id`, if `identity` may see it ([`may_see`]); an outsider
/// is told it is not found, as if it did not exist.
pub async fn visible_one(
    app: &App,
    identity: &Identity,
    conn_id: &str,
    id: &str,
) -> Result<SessionRecord, RpcError> {
    let record = load(app, id).await?;
    if may_see(identity, conn_id, &record) {
        Ok(record)
    } else {
        Err(RpcError::not_found("session", id))
    }
}

/// The sessions `identity` may see (every one for admins), as clients see
/// them: `session.list` and `GET /api/sessions`.
pub async fn visible(app: &App, identity: &Identity) -> Result<Vec<Value>, RpcError> {
    Ok(app
        .session_store()
        .sessions()
        .await?
        .into_iter()
        .filter(|s| may_see(identity, "", s))
        .map(|s| s.public())
        .collect())
}
