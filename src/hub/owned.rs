//! Copies of the sessions owned by this instance's connections, so they
//! can be written back when the backend loses them.
//!
//! Redis here keeps nothing on disk: after it restarts empty, presence,
//! interest and memberships come back from what the local sockets prove,
//! but a session record (its id, owner, metadata, version, member cap,
//! resume token) is known only to the backend. So the instance that holds
//! a session's owner keeps a copy of the record:
//!
//! 1. `session.create` on a local connection puts the record here;
//! 2. every `session.updated` delivered on the session's channel — from a
//!    patch on any instance, reaching this instance because the owner is a
//!    local subscriber — moves the copy to the newer version and metadata,
//!    and every `session.event` to its offset (so a session written back
//!    numbers on from where its members left off);
//! 3. the session ending (`session.closed`, the channel's last frame), its
//!    owner leaving it, or the owner's socket closing drops the copy.
//!
//! On re-assert the instance asks the backend for its [epoch]; when that
//! differs from the epoch these copies were taken under, the shared state
//! was lost and each copy is created again with its owner as the only
//! member; the members then re-join from their own instances (see
//! `rpc::sessions::reassert`). A mere reconnect keeps the epoch, so a
//! session closed elsewhere while this instance was cut off is never
//! brought back: its local members are told it is gone instead.
//!
//! [epoch]: crate::backend::Health::epoch

use crate::backend::{SessionRecord, logged_offset};
use crate::protocol::Frame;
use crate::protocol::names::SESSION_CHANNEL_PREFIX;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How every `session.updated` frame begins (`frame::notification`).
const UPDATED_PREFIX: &str = r#"{"jsonrpc":"2.0","method":"session.updated","#;

#[derive(Deserialize)]
struct Updated {
    params: UpdatedParams,
}

#[derive(Deserialize)]
struct UpdatedParams {
    version: u64,
    meta: Value,
    /// Sent by `session.invite`: the invitation list after it.
    #[serde(default)]
    invited: Option<Vec<String>>,
}

/// What a look at the backend's epoch says about its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Lost since the last look: write the copies back.
    Now,
    /// Lost a moment ago (within the `recent` span given): owners on
    /// other instances may still be writing their sessions back.
    Recent,
    /// Not lost: a session the backend does not know was closed.
    No,
}

#[derive(Default)]
struct Epoch {
    token: Option<String>,
    lost_at: Option<Instant>,
}

/// One owned session: its record and the newest event offset seen.
struct OwnedCopy {
    record: SessionRecord,
    offset: u64,
}

/// The session records owned by local connections, by session id, and the
/// backend epoch they were taken under.
#[derive(Default)]
pub struct OwnedSessions {
    records: Mutex<HashMap<String, OwnedCopy>>,
    epoch: Mutex<Epoch>,
}

impl OwnedSessions {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnedCopy>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn epoch_slot(&self) -> std::sync::MutexGuard<'_, Epoch> {
        self.epoch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep a copy of a session a local connection now owns, whose newest
    /// event is `offset` (0 for a new session).
    pub fn insert(&self, record: SessionRecord, offset: u64) {
        let id = record.session_id.clone();
        self.records().insert(id, OwnedCopy { record, offset });
    }

    /// Forget a session (closed, or its owner left it).
    pub fn forget(&self, session_id: &str) {
        self.records().remove(session_id);
    }

    /// Forget the sessions `conn_id` owned (its socket closed: the backend
    /// detached them and their resume window runs there).
    pub fn forget_owner(&self, conn_id: &str) {
        self.records()
            .retain(|_, c| c.record.owner.as_deref() != Some(conn_id));
    }

    /// Forget `session_id` if `conn_id` owns it (the owner left it).
    pub fn release(&self, conn_id: &str, session_id: &str) {
        let mut records = self.records();
        if records
            .get(session_id)
            .is_some_and(|c| c.record.owner.as_deref() == Some(conn_id))
        {
            records.remove(session_id);
        }
    }

    /// How many sessions `conn_id` owns.
    pub fn owned_by(&self, conn_id: &str) -> usize {
        self.records()
            .values()
            .filter(|c| c.record.owner.as_deref() == Some(conn_id))
            .count()
    }

    /// Whether `conn_id` owns `session_id` here.
    pub fn owns(&self, conn_id: &str, session_id: &str) -> bool {
        self.records()
            .get(session_id)
            .is_some_and(|c| c.record.owner.as_deref() == Some(conn_id))
    }

    /// Follow a frame delivered on `channel`: a `session.updated` or a
    /// `session.event` of a session owned here moves its copy forward.
    /// Cheap for everything else (a prefix check, no parsing).
    pub fn observe(&self, channel: &str, frame: &Frame) {
        let Some(id) = channel.strip_prefix(SESSION_CHANNEL_PREFIX) else {
            return;
        };
        if let Some(offset) = logged_offset(frame.as_str()) {
            if let Some(copy) = self.records().get_mut(id) {
                copy.offset = copy.offset.max(offset);
            }
            return;
        }
        if !frame.as_str().starts_with(UPDATED_PREFIX) {
            return;
        }
        let mut records = self.records();
        let Some(OwnedCopy { record, .. }) = records.get_mut(id) else {
            return;
        };
        match serde_json::from_str::<Updated>(frame.as_str()) {
            Ok(Updated { params }) => {
                // Invitations only grow: a union is right in any order.
                for identity in params.invited.unwrap_or_default() {
                    if !record.invited.contains(&identity) {
                        record.invited.push(identity);
                    }
                }
                if params.version > record.version {
                    record.version = params.version;
                    record.meta = params.meta;
                    record.updated_at = crate::protocol::now_ms();
                }
            }
            Err(e) => tracing::debug!(session = %id, error = %e, "unreadable session.updated"),
        }
    }

    /// Records to create again after the backend lost them, with their
    /// newest event offsets: each with its owner as the only member (the
    /// others re-join themselves).
    pub fn to_restore(&self) -> Vec<(SessionRecord, u64)> {
        self.records()
            .values()
            .filter_map(|OwnedCopy { record: r, offset }| {
                let owner = r.owner.clone()?;
                let record = SessionRecord {
                    members: vec![owner],
                    member_identities: vec![r.owner_identity.clone()],
                    detached_at: None,
                    ..r.clone()
                };
                Some((record, *offset))
            })
            .collect()
    }

    /// Note the backend's epoch `token`: [`Loss::Now`] when it differs
    /// from the one noted before, [`Loss::Recent`] when that happened less
    /// than `recent` ago. The first call only notes it.
    pub fn note_epoch(&self, token: String, recent: Duration) -> Loss {
        let mut slot = self.epoch_slot();
        let changed = slot.token.as_ref().is_some_and(|known| *known != token);
        slot.token = Some(token);
        if changed {
            slot.lost_at = Some(Instant::now());
            Loss::Now
        } else if slot.lost_at.is_some_and(|at| at.elapsed() < recent) {
            Loss::Recent
        } else {
            Loss::No
        }
    }

    /// The restore a [`Loss::Now`] called for did not finish: the next
    /// look must answer `Now` again.
    pub fn restore_failed(&self) {
        self.epoch_slot().token = Some(String::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame;
    use serde_json::json;

    fn record(id: &str, owner: &str) -> SessionRecord {
        SessionRecord {
            session_id: id.into(),
            owner: Some(owner.into()),
            owner_identity: "alice".into(),
            members: vec![owner.into(), "c2".into()],
            member_identities: vec!["alice".into(), "bob".into()],
            meta: json!({"k": 1}),
            version: 0,
            max_members: 8,
            created_at: 1,
            updated_at: 1,
            detached_at: None,
            resume_token: "t".into(),
            invited: Vec::new(),
            open: false,
        }
    }

    fn updated(id: &str, version: u64, meta: Value) -> Frame {
        frame::notification(
            "session.updated",
            &json!({"sessionId": id, "version": version, "meta": meta}),
        )
    }

    #[test]
    fn the_prefix_matches_what_the_server_sends() {
        let f = updated("s", 1, json!({}));
        assert!(f.as_str().starts_with(UPDATED_PREFIX), "{f}");
    }

    #[test]
    fn updates_move_the_copy_forward_never_back() {
        let owned = OwnedSessions::default();
        owned.insert(record("s", "c1"), 0);
        owned.observe("$session:s", &updated("s", 2, json!({"k": 2})));
        owned.observe("$session:s", &updated("s", 1, json!({"k": 9})));
        // Other sessions, other channels and other methods are ignored.
        owned.observe("$session:t", &updated("t", 5, json!({"k": 5})));
        owned.observe("public:s", &updated("s", 7, json!({"k": 7})));
        owned.observe(
            "$session:s",
            &frame::notification("session.event", &json!({"version": 8, "meta": {}})),
        );
        let event = |offset| {
            crate::backend::LoggedFrame::new("session.event", json!({"sessionId": "s"}))
                .frame(offset)
        };
        owned.observe("$session:s", &event(4));
        owned.observe("$session:s", &event(3));
        let restored = owned.to_restore();
        assert_eq!(restored.len(), 1);
        assert_eq!(restored[0].0.version, 2);
        assert_eq!(restored[0].0.meta, json!({"k": 2}));
        assert_eq!(restored[0].1, 4, "the newest offset seen");
    }

    #[test]
    fn invitations_are_kept_in_the_copy_in_any_order() {
        let owned = OwnedSessions::default();
        owned.insert(record("s", "c1"), 0);
        let invited = |version, list: &[&str]| {
            frame::notification(
                "session.updated",
                &json!({"sessionId": "s", "version": version, "meta": {"k": 1}, "invited": list}),
            )
        };
        owned.observe("$session:s", &invited(0, &["carol", "dave"]));
        owned.observe("$session:s", &invited(0, &["carol"]));
        let restored = owned.to_restore();
        assert_eq!(restored[0].0.invited, ["carol", "dave"]);
    }

    #[test]
    fn restored_records_hold_only_their_owner() {
        let owned = OwnedSessions::default();
        owned.insert(record("s", "c1"), 0);
        let r = &owned.to_restore()[0].0;
        assert_eq!(r.members, ["c1"]);
        assert_eq!(r.member_identities, ["alice"]);
        assert_eq!(r.resume_token, "t");
        assert_eq!(r.max_members, 8);
    }

    #[test]
    fn owners_leaving_drop_their_copies() {
        let owned = OwnedSessions::default();
        owned.insert(record("s", "c1"), 0);
        owned.insert(record("t", "c1"), 0);
        owned.insert(record("u", "c9"), 0);
        assert!(owned.owns("c1", "s"));
        assert!(!owned.owns("c9", "s"));
        owned.forget("t");
        owned.release("c9", "s");
        assert!(owned.owns("c1", "s"), "only its owner releases it");
        owned.release("c1", "s");
        assert!(!owned.owns("c1", "s"));
        owned.insert(record("s", "c1"), 0);
        owned.forget_owner("c1");
        assert!(!owned.owns("c1", "s"));
        let left: Vec<String> = owned
            .to_restore()
            .into_iter()
            .map(|(r, _)| r.session_id)
            .collect();
        assert_eq!(left, ["u"]);
    }

    #[test]
    fn the_epoch_changes_only_when_the_token_does() {
        let owned = OwnedSessions::default();
        let recent = Duration::from_secs(60);
        assert_eq!(owned.note_epoch("a".into(), recent), Loss::No, "first");
        assert_eq!(owned.note_epoch("a".into(), recent), Loss::No, "reconnect");
        assert_eq!(owned.note_epoch("b".into(), recent), Loss::Now, "lost");
        assert_eq!(owned.note_epoch("b".into(), recent), Loss::Recent);
        owned.restore_failed();
        assert_eq!(owned.note_epoch("b".into(), recent), Loss::Now, "retry");
        assert_eq!(owned.note_epoch("b".into(), Duration::ZERO), Loss::No);
    }
}
