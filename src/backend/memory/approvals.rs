//! Approvals in memory: records by id, the audit trail newest first, and
//! per requester the decisions made while it was away.

use super::MemoryBackend;
use crate::backend::approvals::{AUDIT_MAX, NOTICES_MAX, already_resolved};
use crate::backend::{ApprovalRecord, ApprovalStatus, ApprovalStore, BackendError, BackendResult};
use async_trait::async_trait;

#[async_trait]
impl ApprovalStore for MemoryBackend {
    async fn create_approval(&self, record: &ApprovalRecord) -> BackendResult<()> {
        let mut state = self.lock();
        if state.approvals.contains_key(&record.approval_id) {
            return Err(BackendError::Conflict("approval id exists".into()));
        }
        state
            .approvals
            .insert(record.approval_id.clone(), record.clone());
        Ok(())
    }

    async fn approval(&self, approval_id: &str) -> BackendResult<Option<ApprovalRecord>> {
        Ok(self.lock().approvals.get(approval_id).cloned())
    }

    async fn pending_approvals(&self) -> BackendResult<Vec<ApprovalRecord>> {
        let mut pending: Vec<ApprovalRecord> = self
            .lock()
            .approvals
            .values()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .cloned()
            .collect();
        pending.sort_by_key(|a| a.created_at);
        Ok(pending)
    }

    async fn resolve_approval(&self, decided: &ApprovalRecord) -> BackendResult<ApprovalRecord> {
        let mut state = self.lock();
        let current = state
            .approvals
            .get_mut(&decided.approval_id)
            .ok_or(BackendError::NotFound("approval"))?;
        if current.status != ApprovalStatus::Pending {
            return Err(already_resolved(current.status));
        }
        *current = decided.clone();
        state.audit.push_front(decided.clone());
        state.audit.truncate(AUDIT_MAX);
        // Decided approvals stay readable (approval.wait, approval.get)
        // until the map grows; the audit trail keeps the decision.
        if state.approvals.len() > AUDIT_MAX {
            state
                .approvals
                .retain(|_, a| a.status == ApprovalStatus::Pending);
        }
        Ok(decided.clone())
    }

    async fn approval_history(&self, limit: usize) -> BackendResult<Vec<ApprovalRecord>> {
        Ok(self.lock().audit.iter().take(limit).cloned().collect())
    }

    async fn defer_approval_notice(
        &self,
        requester: &str,
        approval_id: &str,
        ttl_ms: u64,
    ) -> BackendResult<()> {
        let now = crate::protocol::now_ms();
        let mut state = self.lock();
        state
            .approval_notices
            .retain(|_, ids| ids.iter().any(|(_, expires)| *expires > now));
        let ids = state
            .approval_notices
            .entry(requester.to_owned())
            .or_default();
        ids.push_back((approval_id.to_owned(), now + ttl_ms));
        while ids.len() > NOTICES_MAX {
            ids.pop_front();
        }
        Ok(())
    }

    async fn take_approval_notices(&self, requester: &str) -> BackendResult<Vec<String>> {
        let now = crate::protocol::now_ms();
        let taken = self.lock().approval_notices.remove(requester);
        Ok(taken
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, expires)| *expires > now)
            .map(|(id, _)| id)
            .collect())
    }
}
