//! Approvals on Redis: one string per approval (JSON record, kept a while
//! after it is decided), a sorted set of the pending ones by creation
//! time, and a capped list as the audit trail. Creating and resolving are
//! Lua scripts, so ids are unique and the first decision wins across
//! instances; a decision is acknowledged once a replica has it (when the
//! primary has replicas: see `replication`), so a failover never
//! reverses it. Per requester, a short list of the decisions made while it
//! had no connection waits for its return (taken by one script, so one
//! connection gets each).

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::approvals::{AUDIT_MAX, NOTICES_MAX, already_resolved};
use crate::backend::{ApprovalRecord, ApprovalStatus, ApprovalStore, BackendError, BackendResult};
use async_trait::async_trait;
use fred::prelude::{KeysInterface, ListInterface, SortedSetsInterface};
use serde_json::Value;

/// Decided approvals stay readable this long.
const DECIDED_TTL_MS: u64 = 24 * 3_600_000;

/// KEYS: the requester's list. ARGV: id, TTL ms, kept.
static DEFER: std::sync::LazyLock<fred::types::scripts::Script> = std::sync::LazyLock::new(|| {
    fred::types::scripts::Script::from_lua(
        r#"
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// KEYS: the requester's list. Returns it, deleted.
static TAKE: std::sync::LazyLock<fred::types::scripts::Script> = std::sync::LazyLock::new(|| {
    fred::types::scripts::Script::from_lua(
        r#"
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return ids
"#,
    )
});

#[async_trait]
impl ApprovalStore for RedisBackend {
    async fn create_approval(&self, record: &ApprovalRecord) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let ttl = record.expires_at.saturating_sub(record.created_at) + DECIDED_TTL_MS;
        let created: i64 = self
            .shared()
            .scripts
            .create_approval
            .evalsha_with_reload(
                client,
                vec![keys.approval(&record.approval_id), keys.approvals_pending()],
                vec![
                    json(record)?,
                    record.approval_id.clone(),
                    ttl.to_string(),
                    record.created_at.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        if created == 1 {
            Ok(())
        } else {
            Err(BackendError::Conflict("approval id exists".into()))
        }
    }

    async fn approval(&self, approval_id: &str) -> BackendResult<Option<ApprovalRecord>> {
        let client = self.ready()?;
        let raw: Option<String> = client
            .get(self.shared().keys.approval(approval_id))
            .await
            .map_err(unavailable)?;
        raw.as_deref().map(parse).transpose()
    }

    async fn pending_approvals(&self) -> BackendResult<Vec<ApprovalRecord>> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let ids: Vec<String> = client
            .zrange(keys.approvals_pending(), 0, -1, None, false, None, false)
            .await
            .map_err(unavailable)?;
        let mut pending = Vec::with_capacity(ids.len());
        for id in ids {
            match self.approval(&id).await? {
                Some(rec) if rec.status == ApprovalStatus::Pending => pending.push(rec),
                // Its record expired or was decided: drop the stale index entry.
                _ => client
                    .zrem::<(), _, _>(keys.approvals_pending(), id.as_str())
                    .await
                    .map_err(unavailable)?,
            }
        }
        Ok(pending)
    }

    async fn resolve_approval(&self, decided: &ApprovalRecord) -> BackendResult<ApprovalRecord> {
        // On the connection that waits for a replica: an acknowledged
        // decision survives a failover.
        let client = self.durable()?;
        let keys = &self.shared().keys;
        let outcome: String = self
            .shared()
            .scripts
            .resolve_approval
            .evalsha_with_reload(
                client,
                vec![
                    keys.approval(&decided.approval_id),
                    keys.approvals_pending(),
                    keys.approvals_audit(),
                ],
                vec![
                    decided.approval_id.clone(),
                    json(decided)?,
                    AUDIT_MAX.to_string(),
                    DECIDED_TTL_MS.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => self.confirm_replicated().await.map(|()| decided.clone()),
            "missing" => Err(BackendError::NotFound("approval")),
            "corrupt" => Err(BackendError::Internal("corrupt approval record".into())),
            status => {
                let status = serde_json::from_value(Value::String(status.to_owned()))
                    .map_err(|e| BackendError::Internal(e.to_string()))?;
                Err(already_resolved(status))
            }
        }
    }

    async fn approval_history(&self, limit: usize) -> BackendResult<Vec<ApprovalRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.ready()?;
        let raw: Vec<String> = client
            .lrange(self.shared().keys.approvals_audit(), 0, limit as i64 - 1)
            .await
            .map_err(unavailable)?;
        raw.iter().map(|r| parse(r)).collect()
    }

    async fn defer_approval_notice(
        &self,
        requester: &str,
        approval_id: &str,
        ttl_ms: u64,
    ) -> BackendResult<()> {
        let client = self.ready()?;
        let _: i64 = DEFER
            .evalsha_with_reload(
                client,
                vec![self.shared().keys.approvals_away(requester)],
                vec![
                    approval_id.to_owned(),
                    ttl_ms.to_string(),
                    NOTICES_MAX.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_approval_notices(&self, requester: &str) -> BackendResult<Vec<String>> {
        let client = self.ready()?;
        TAKE.evalsha_with_reload(
            client,
            vec![self.shared().keys.approvals_away(requester)],
            Vec::<String>::new(),
        )
        .await
        .map_err(unavailable)
    }
}
