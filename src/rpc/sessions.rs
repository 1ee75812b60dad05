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
use crate::auth::validate_sub;
use crate::backend::{Admission, LoggedFrame, MAX_INVITED, SessionRecord};
use crate::protocol::names::session_channel;
use crate::protocol::{RpcError, now_ms};
use crate::services::replay;
use crate::services::sessions::{
    attach, backend_err, end, load, notify_members, require_owner, validate_id, visible,
    visible_one,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateParams {
    /// The session's id (default: a fresh UUID).
    session_id: Option<String>,
    /// Free-form metadata: an object (default `{}`).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    meta: Option<Value>,
    /// Most members at once (default and most: `limits.max_session_members`).
    max_members: Option<usize>,
    /// Identities that may join.
    #[serde(default)]
    invite: Vec<String>,
    /// Anyone with the right to write may join.
    #[serde(default)]
    open: bool,
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
        if ctx.app.session_store().session(id).await?.is_some() {
            require_member(ctx, id).await?;
            return Ok((id.to_owned(), None));
        }
    }
    let params = CreateParams {
        session_id: session_id.map(str::to_owned),
        meta: None,
        max_members: None,
        invite: Vec::new(),
        open: false,
    };
    let (id, token) = open(ctx, params).await?;
    Ok((id, Some(token)))
}

/// The session, if the calling connection is a member of it (see
/// [`crate::services::sessions::require_member`]).
pub async fn require_member(ctx: &Ctx<'_>, id: &str) -> Result<SessionRecord, RpcError> {
    let identity = ctx.identity()?;
    crate::services::sessions::require_member(ctx.app, &identity, ctx.conn.id(), id).await
}

/// Create a session owned by the calling connection; (id, resume token).
async fn open(ctx: &Ctx<'_>, p: CreateParams) -> Result<(String, String), RpcError> {
    let identity = ctx.identity()?;
    let limits = &ctx.app.live().limits;
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
    let invited = invitees("invite", p.invite)?;
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
        invited,
        open: p.open,
    };
    let token = record.resume_token.clone();
    ctx.app
        .session_store()
        .create_session(record.clone(), limits.max_sessions_per_client)
        .await
        .map_err(backend_err(&id))?;
    ctx.app.hub.owned().insert(record, 0);
    attach(ctx.app, ctx.conn, &id).await?;
    Ok((id, token))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdParams {
    session_id: String,
}

/// Join as a member: the owner's identity, an identity already a member,
/// an invited one, anyone when the session is open, or an admin.
pub async fn join(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    validate_id(&p.session_id)?;
    let admission = if identity.is_admin() {
        Admission::Unchecked
    } else {
        Admission::Rule
    };
    let record = ctx
        .app
        .session_store()
        .join_session(&p.session_id, ctx.conn.id(), &identity.sub, admission)
        .await
        .map_err(backend_err(&p.session_id))?;
    attach(ctx.app, ctx.conn, &p.session_id).await?;
    Ok(record.public())
}

pub async fn leave(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    validate_id(&p.session_id)?;
    ctx.app
        .session_store()
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

pub async fn get(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let record = visible_one(ctx.app, &identity, ctx.conn.id(), &p.session_id).await?;
    Ok(record.public())
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchParams {
    session_id: String,
    /// A JSON merge patch (RFC 7386) of `meta`: an object.
    #[schemars(with = "serde_json::Map<String, Value>")]
    meta: Value,
    /// Apply only if the session is at this version (else -32007).
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
    require_owner(&*ctx.identity()?, &record)?;
    let updated = ctx
        .app
        .session_store()
        .patch_session(&p.session_id, &p.meta, p.base_version)
        .await
        .map_err(backend_err(&p.session_id))?;
    let update =
        json!({ "sessionId": p.session_id, "version": updated.version, "meta": updated.meta });
    notify_members(ctx.app, &p.session_id, "session.updated", &update).await?;
    Ok(updated.public())
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InviteParams {
    session_id: String,
    /// Identities (`sub`) that may join from now on.
    identities: Vec<String>,
}

/// The owner (or an admin) invites identities to join.
pub async fn invite(ctx: &Ctx<'_>, p: InviteParams) -> Result<Value, RpcError> {
    let record = load(ctx.app, &p.session_id).await?;
    require_owner(&*ctx.identity()?, &record)?;
    let identities = invitees("identities", p.identities)?;
    if identities.is_empty() {
        return Err(RpcError::invalid_params(
            "identities",
            "at least one identity",
        ));
    }
    let updated = ctx
        .app
        .session_store()
        .invite_session(&p.session_id, &identities)
        .await
        .map_err(backend_err(&p.session_id))?;
    // Members hear of it, and so does the owner's instance, whose copy of
    // the record must keep the invitations.
    let update = json!({
        "sessionId": p.session_id,
        "version": updated.version,
        "meta": updated.meta,
        "invited": updated.invited,
    });
    notify_members(ctx.app, &p.session_id, "session.updated", &update).await?;
    Ok(updated.public())
}

/// Identity names to invite: valid names, at most [`MAX_INVITED`].
fn invitees(field: &str, identities: Vec<String>) -> Result<Vec<String>, RpcError> {
    if identities.len() > MAX_INVITED {
        return Err(RpcError::invalid_params(
            field,
            format!("at most {MAX_INVITED} identities"),
        ));
    }
    for (i, identity) in identities.iter().enumerate() {
        validate_sub(identity)
            .map_err(|why| RpcError::invalid_params(&format!("{field}[{i}]"), why))?;
    }
    let mut identities = identities;
    identities.sort_unstable();
    identities.dedup();
    Ok(identities)
}

/// Sessions the caller owns or belongs to (all of them for admins).
pub async fn list(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let sessions = visible(ctx.app, &*ctx.identity()?).await?;
    Ok(json!({ "count": sessions.len(), "sessions": sessions }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendParams {
    session_id: String,
    /// The event's name.
    event: String,
    /// Any JSON, delivered as is.
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
    let keep = ctx.app.live().limits.session_history;
    let (offset, delivered) = ctx
        .app
        .channel_log()
        .log_publish(&session_channel(&p.session_id), &event, keep)
        .await
        .map_err(backend_err(&p.session_id))?;
    Ok(json!({ "delivered": delivered, "offset": offset }))
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryParams {
    session_id: String,
    /// Events after this offset (0: from the oldest kept).
    #[serde(default)]
    since: u64,
    /// Most events returned: 1-1000 (default 100).
    limit: Option<usize>,
    /// The epoch `since` belongs to (as a reply named it): when the
    /// backend lost its state since, the log is read from its start, with
    /// `complete: false, epochChanged: true`.
    epoch: Option<String>,
}

/// The session's logged events after `since`, oldest first. `complete`
/// says nothing between `since` and the first event returned is missing
/// (trimmed from the log, or lost with the backend's state); `epoch`
/// names the backend's epoch the offsets belong to.
pub async fn history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    require_member(ctx, &p.session_id).await?;
    let channel = session_channel(&p.session_id);
    let keep = ctx.app.live().limits.session_history;
    let head = json!({ "sessionId": p.session_id });
    let from = replay::From {
        after: p.since,
        epoch: p.epoch.as_deref(),
    };
    replay::history(ctx.app, head, &channel, from, p.limit, keep, true).await
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResumeParams {
    session_id: String,
    /// The token `session.create` (or `agent.run`) answered.
    resume_token: String,
    /// The newest event offset the client has (0: none).
    #[serde(default)]
    offset: u64,
    /// The epoch `offset` belongs to (as a reply named it): when the
    /// backend lost its state since, the replay starts over with
    /// `complete: false, epochChanged: true`.
    epoch: Option<String>,
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
    let max = app.live().limits.max_sessions_per_client;
    if !owned.owns(ctx.conn.id(), id) && owned.owned_by(ctx.conn.id()) >= max {
        return Err(RpcError::limit("sessions per connection", max));
    }
    let record = app
        .session_store()
        .reclaim_session(id, ctx.conn.id(), &identity.sub, true)
        .await
        .map_err(backend_err(id))?;
    let keep = app.live().limits.session_history;
    let channel = session_channel(id);
    let attached = attach(app, ctx.conn, id);
    let from = replay::From {
        after: p.offset,
        epoch: p.epoch.as_deref(),
    };
    let done = replay::replay(app, ctx.conn, &channel, from, keep, attached).await?;
    owned.insert(record.clone(), done.latest);
    metrics::counter!("switchyard_sessions_resumed_total").increment(1);
    let mut reply = done.to_json();
    reply["sessionId"] = json!(id);
    reply["resumed"] = json!(true);
    reply["session"] = record.public();
    Ok(reply)
}

pub async fn close(ctx: &Ctx<'_>, p: IdParams) -> Result<Value, RpcError> {
    let record = load(ctx.app, &p.session_id).await?;
    require_owner(&*ctx.identity()?, &record)?;
    end(ctx.app, &p.session_id, "closed").await?;
    Ok(json!({ "closed": true, "sessionId": p.session_id }))
}
