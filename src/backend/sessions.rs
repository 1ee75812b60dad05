//! Sessions: a conversation or task with an owner, members and metadata.
//!
//! The record changes only through the operations below, each atomic
//! across instances (Redis: compare-and-set). The rules every backend
//! applies to a record in the same way — dropping a member, giving
//! ownership back, patching `meta` — are the functions at the end, so
//! memory and Redis cannot drift apart.

use super::{BackendError, BackendResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A session: a conversation or task with an owner, members and metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
// Its schema is that of the record clients see ([`SessionRecord::public`]).
#[schemars(rename = "Session")]
pub struct SessionRecord {
    pub session_id: String,
    /// Connection that owns it; `None` while the owner is away (resume window).
    pub owner: Option<String>,
    pub owner_identity: String,
    /// Member connections (the owner included while connected).
    pub members: Vec<String>,
    /// Identities of the members, parallel to `members`.
    pub member_identities: Vec<String>,
    pub meta: Value,
    /// Bumped by every change of `meta`.
    pub version: u64,
    pub max_members: usize,
    pub created_at: u64,
    pub updated_at: u64,
    /// When the owner's connection went away.
    pub detached_at: Option<u64>,
    /// Secret for resuming ownership; stored, never shown (see
    /// [`SessionRecord::public`]).
    #[schemars(skip)]
    pub resume_token: String,
    /// Identities the owner invited: they may join.
    #[serde(default)]
    pub invited: Vec<String>,
    /// Anyone with the right to write may join (the owner chose so).
    #[serde(default)]
    pub open: bool,
}

/// Most identities one session's invitation list holds.
pub const MAX_INVITED: usize = 1000;

/// What a join must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The session's rule: its owner's identity, an identity already a
    /// member (another of its connections), an invited identity, or anyone
    /// when the session is open.
    Rule,
    /// No rule: an admin, or a member re-joining after the backend lost
    /// its state.
    Unchecked,
}

impl SessionRecord {
    /// Whether `identity` may join under the session's rule.
    pub fn admits(&self, identity: &str) -> bool {
        self.open
            || self.owner_identity == identity
            || self.member_identities.iter().any(|m| m == identity)
            || self.invited.iter().any(|i| i == identity)
    }
}

impl SessionRecord {
    /// The record as clients see it: everything but the resume token.
    pub fn public(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Value::Object(map) = &mut value {
            map.remove("resumeToken");
        }
        value
    }
}

/// Sessions and their membership.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Create a session whose owner (first member) is `record.owner`.
    /// Conflict if the id exists; Limit if the owner already owns
    /// `max_owned` open sessions.
    async fn create_session(&self, record: SessionRecord, max_owned: usize) -> BackendResult<()>;
    async fn session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>>;
    async fn sessions(&self) -> BackendResult<Vec<SessionRecord>>;
    /// Add a member, checked against the session's rule (`admission`) in
    /// the same atomic step. NotFound if unknown; Forbidden when not
    /// admitted; Limit when full. Joining twice is a no-op.
    async fn join_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        admission: Admission,
    ) -> BackendResult<SessionRecord>;
    /// Invite `identities` (added to the session's list, at most
    /// [`MAX_INVITED`]). NotFound if unknown; Limit when the list is full.
    async fn invite_session(
        &self,
        session_id: &str,
        identities: &[String],
    ) -> BackendResult<SessionRecord>;
    /// Remove a member (the owner leaving detaches ownership).
    async fn leave_session(&self, session_id: &str, conn_id: &str) -> BackendResult<SessionRecord>;
    /// Give a session back to `conn_id` of its owner's identity: after the
    /// owner was taken for gone (its instance was reaped while cut off
    /// from the backend), or when the owner resumes from a new connection.
    /// The resume window stops and the owner is a member again. A no-op
    /// when it already owns it; NotFound if unknown; Conflict when the
    /// session belongs to another identity, or another connection owns it
    /// and `takeover` is off (with it, that connection stays a member).
    async fn reclaim_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        takeover: bool,
    ) -> BackendResult<SessionRecord>;
    /// Apply a JSON merge patch to `meta`. Conflict when `base_version` is
    /// given and differs from the current version.
    async fn patch_session(
        &self,
        session_id: &str,
        patch: &Value,
        base_version: Option<u64>,
    ) -> BackendResult<SessionRecord>;
    /// Remove the session; returns its last state.
    async fn close_session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>>;
    /// A connection went away: drop it from every member list and mark the
    /// sessions it owned detached at `now_ms`. Returns the touched ids.
    async fn detach_connection(&self, conn_id: &str, now_ms: u64) -> BackendResult<Vec<String>>;
    /// Sessions detached at or before `cutoff_ms`.
    async fn expired_sessions(&self, cutoff_ms: u64) -> BackendResult<Vec<String>>;
}

/// Add `conn_id` (of `identity`) as a member if `admission` lets it in;
/// whether anything changed (joining twice changes nothing).
pub(super) fn add_member(
    rec: &mut SessionRecord,
    conn_id: &str,
    identity: &str,
    admission: Admission,
) -> BackendResult<bool> {
    if rec.members.iter().any(|m| m == conn_id) {
        return Ok(false);
    }
    if admission == Admission::Rule && !rec.admits(identity) {
        return Err(BackendError::Forbidden(
            "not invited to this session".into(),
        ));
    }
    if rec.members.len() >= rec.max_members {
        return Err(BackendError::Limit("session members", rec.max_members));
    }
    rec.members.push(conn_id.to_owned());
    rec.member_identities.push(identity.to_owned());
    rec.updated_at = crate::protocol::now_ms();
    Ok(true)
}

/// Add `identities` to the invitation list; whether anything changed.
pub(super) fn add_invited(rec: &mut SessionRecord, identities: &[String]) -> BackendResult<bool> {
    let mut changed = false;
    for identity in identities {
        if rec.invited.contains(identity) {
            continue;
        }
        if rec.invited.len() >= MAX_INVITED {
            return Err(BackendError::Limit("invited identities", MAX_INVITED));
        }
        rec.invited.push(identity.clone());
        changed = true;
    }
    if changed {
        rec.updated_at = crate::protocol::now_ms();
    }
    Ok(changed)
}

/// Drop a member; the owner leaving detaches ownership.
pub(super) fn remove_member(rec: &mut SessionRecord, conn_id: &str, now_ms: u64) {
    if let Some(i) = rec.members.iter().position(|m| m == conn_id) {
        rec.members.remove(i);
        if i < rec.member_identities.len() {
            rec.member_identities.remove(i);
        }
    }
    if rec.owner.as_deref() == Some(conn_id) {
        rec.owner = None;
        rec.detached_at = Some(now_ms);
    }
    rec.updated_at = now_ms;
}

/// Make `conn_id` the owner of `rec` again (see
/// [`SessionStore::reclaim_session`]); whether anything changed.
pub(super) fn reclaim_owner(
    rec: &mut SessionRecord,
    conn_id: &str,
    identity: &str,
    takeover: bool,
) -> BackendResult<bool> {
    match rec.owner.as_deref() {
        Some(owner) if owner == conn_id => return Ok(false),
        Some(_) if !takeover => {
            return Err(BackendError::Conflict("session has another owner".into()));
        }
        _ if rec.owner_identity != identity => {
            return Err(BackendError::Conflict(
                "session belongs to another identity".into(),
            ));
        }
        _ => {}
    }
    rec.owner = Some(conn_id.to_owned());
    rec.detached_at = None;
    if !rec.members.iter().any(|m| m == conn_id) {
        rec.members.insert(0, conn_id.to_owned());
        rec.member_identities.insert(0, identity.to_owned());
    }
    rec.updated_at = crate::protocol::now_ms();
    Ok(true)
}

/// Apply a JSON merge patch to a session's `meta`, checking `base_version`
/// first (optimistic concurrency).
pub(super) fn patch_meta(
    rec: &mut SessionRecord,
    patch: &Value,
    base_version: Option<u64>,
) -> BackendResult<()> {
    if let Some(base) = base_version
        && base != rec.version
    {
        return Err(BackendError::Conflict(format!(
            "version is {}, not {base}",
            rec.version
        )));
    }
    json_patch::merge(&mut rec.meta, patch);
    rec.version += 1;
    rec.updated_at = crate::protocol::now_ms();
    Ok(())
}
