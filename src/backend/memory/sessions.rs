//! Sessions in memory: each operation is one update of the record under
//! the state lock, applying the rules shared with Redis
//! (`backend::sessions`).

use super::MemoryBackend;
use crate::backend::sessions::{add_invited, add_member, patch_meta, reclaim_owner, remove_member};
use crate::backend::{Admission, BackendError, BackendResult, SessionRecord, SessionStore};
use async_trait::async_trait;
use serde_json::Value;

#[async_trait]
impl SessionStore for MemoryBackend {
    async fn create_session(&self, record: SessionRecord, max_owned: usize) -> BackendResult<()> {
        let mut state = self.lock();
        if state.sessions.contains_key(&record.session_id) {
            return Err(BackendError::Conflict("session already exists".into()));
        }
        let owned = state
            .sessions
            .values()
            .filter(|s| s.owner.is_some() && s.owner == record.owner)
            .count();
        if owned >= max_owned {
            return Err(BackendError::Limit("sessions per connection", max_owned));
        }
        state.sessions.insert(record.session_id.clone(), record);
        Ok(())
    }

    async fn session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        Ok(self.lock().sessions.get(session_id).cloned())
    }

    async fn sessions(&self) -> BackendResult<Vec<SessionRecord>> {
        Ok(self.lock().sessions.values().cloned().collect())
    }

    async fn join_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        admission: Admission,
    ) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            add_member(rec, conn_id, identity, admission)?;
            Ok(rec.clone())
        })
    }

    async fn invite_session(
        &self,
        session_id: &str,
        identities: &[String],
    ) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            add_invited(rec, identities)?;
            Ok(rec.clone())
        })
    }

    async fn leave_session(&self, session_id: &str, conn_id: &str) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            remove_member(rec, conn_id, crate::protocol::now_ms());
            Ok(rec.clone())
        })
    }

    async fn patch_session(
        &self,
        session_id: &str,
        patch: &Value,
        base_version: Option<u64>,
    ) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            patch_meta(rec, patch, base_version)?;
            Ok(rec.clone())
        })
    }

    async fn reclaim_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        takeover: bool,
    ) -> BackendResult<SessionRecord> {
        self.with_session(session_id, |rec| {
            reclaim_owner(rec, conn_id, identity, takeover)?;
            Ok(rec.clone())
        })
    }

    async fn close_session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        Ok(self.lock().sessions.remove(session_id))
    }

    async fn detach_connection(&self, conn_id: &str, now_ms: u64) -> BackendResult<Vec<String>> {
        let mut state = self.lock();
        let mut touched = Vec::new();
        for rec in state.sessions.values_mut() {
            let member = rec.members.iter().any(|m| m == conn_id);
            if member || rec.owner.as_deref() == Some(conn_id) {
                remove_member(rec, conn_id, now_ms);
                touched.push(rec.session_id.clone());
            }
        }
        Ok(touched)
    }

    async fn expired_sessions(&self, cutoff_ms: u64) -> BackendResult<Vec<String>> {
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| s.detached_at.is_some_and(|t| t <= cutoff_ms))
            .map(|s| s.session_id.clone())
            .collect())
    }
}

impl MemoryBackend {
    fn with_session<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut SessionRecord) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let mut state = self.lock();
        let rec = state
            .sessions
            .get_mut(id)
            .ok_or(BackendError::NotFound("session"))?;
        f(rec)
    }
}
