//! Approvals in memory: records by id, and the audit trail newest first.

use super::MemoryBackend;
use crate::backend::approvals::{AUDIT_MAX, already_resolved};
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
}
