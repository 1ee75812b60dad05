//! The agent layer's records on Redis: registry, runs, chat history,
//! approvals and idempotency keys (schema in `docs/redis.md`).
//!
//! The registry is one hash written by the instance holding each agent's
//! connection (the only writer of that entry while it lives) and by the
//! reaper once that instance is dead. Runs and approvals change through Lua
//! scripts so that "first finisher wins" and "first resolver wins" hold
//! across instances.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::approvals::{AUDIT_MAX, already_resolved};
use crate::backend::{
    AgentEntry, ApprovalRecord, ApprovalStatus, BackendError, BackendResult, Idempotency, RunRecord,
};
use fred::prelude::SortedSetsInterface;
use fred::prelude::{
    Expiration, HashesInterface, KeysInterface, ListInterface, SetOptions, SetsInterface,
};
use serde_json::Value;
use std::collections::HashMap;

/// Decided approvals stay readable this long.
const DECIDED_TTL_MS: u64 = 24 * 3_600_000;
/// Chat history lives this long after its last append.
const HISTORY_TTL_MS: i64 = 7 * 24 * 3_600_000;

pub async fn put_agent(b: &RedisBackend, entry: &AgentEntry) -> BackendResult<()> {
    let client = b.ready()?;
    client
        .hset::<(), _, _>(
            b.shared().keys.agents(),
            (entry.agent_id.as_str(), json(entry)?),
        )
        .await
        .map_err(unavailable)
}

pub async fn remove_agent(b: &RedisBackend, agent_id: &str) -> BackendResult<()> {
    let client = b.ready()?;
    client
        .hdel::<(), _, _>(b.shared().keys.agents(), agent_id)
        .await
        .map_err(unavailable)
}

pub async fn agents(b: &RedisBackend) -> BackendResult<Vec<AgentEntry>> {
    let client = b.ready()?;
    let all: HashMap<String, String> = client
        .hgetall(b.shared().keys.agents())
        .await
        .map_err(unavailable)?;
    let mut list: Vec<AgentEntry> = all
        .values()
        .filter_map(|raw| match parse::<AgentEntry>(raw) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(error = %e, "skipping a corrupt agent entry");
                None
            }
        })
        .collect();
    list.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    Ok(list)
}

pub async fn start_run(b: &RedisBackend, run: &RunRecord, max: usize) -> BackendResult<()> {
    let client = b.ready()?;
    let keys = &b.shared().keys;
    let outcome: i64 = b
        .shared()
        .scripts
        .start_run
        .evalsha_with_reload(
            client,
            vec![keys.runs(), keys.running(&run.caller)],
            vec![run.session_id.clone(), json(run)?, max.to_string()],
        )
        .await
        .map_err(unavailable)?;
    match outcome {
        1 => Ok(()),
        -1 => Err(BackendError::Conflict(format!(
            "session {} already has a run in progress",
            run.session_id
        ))),
        _ => Err(BackendError::Limit("concurrent runs", max)),
    }
}

pub async fn run(b: &RedisBackend, session_id: &str) -> BackendResult<Option<RunRecord>> {
    let client = b.ready()?;
    let raw: Option<String> = client
        .hget(b.shared().keys.runs(), session_id)
        .await
        .map_err(unavailable)?;
    raw.as_deref().map(parse).transpose()
}

pub async fn finish_run(b: &RedisBackend, outcome: &RunRecord) -> BackendResult<Option<RunRecord>> {
    let client = b.ready()?;
    let keys = &b.shared().keys;
    let done: i64 = b
        .shared()
        .scripts
        .finish_run
        .evalsha_with_reload(
            client,
            vec![keys.runs(), keys.running(&outcome.caller)],
            vec![
                outcome.session_id.clone(),
                outcome.run_id.clone(),
                json(outcome)?,
            ],
        )
        .await
        .map_err(unavailable)?;
    Ok((done == 1).then(|| outcome.clone()))
}

pub async fn forget_session_records(b: &RedisBackend, session_id: &str) -> BackendResult<()> {
    let client = b.ready()?;
    let keys = &b.shared().keys;
    if let Some(run) = run(b, session_id).await? {
        client
            .srem::<(), _, _>(keys.running(&run.caller), session_id)
            .await
            .map_err(unavailable)?;
    }
    // The event log's two keys share a slot; the others have their own.
    let (a, h, e) = tokio::join!(
        client.hdel::<(), _, _>(keys.runs(), session_id),
        client.del::<(), _>(keys.history(session_id)),
        client.del::<(), _>({
            let channel = crate::hub::session_channel(session_id);
            vec![keys.log(&channel), keys.log_offset(&channel)]
        }),
    );
    a.and(h).and(e).map_err(unavailable)
}

pub async fn append_history(
    b: &RedisBackend,
    session_id: &str,
    entries: &[Value],
    max: usize,
) -> BackendResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let client = b.ready()?;
    let key = b.shared().keys.history(session_id);
    let values: Vec<String> = entries.iter().map(json).collect::<BackendResult<_>>()?;
    // One round trip; a reader between the steps sees at most `max` plus
    // this batch, never a lost entry.
    let pipeline = client.pipeline();
    let _: () = pipeline.rpush(&key, values).await.map_err(unavailable)?;
    let _: () = pipeline
        .ltrim(&key, -(max as i64), -1)
        .await
        .map_err(unavailable)?;
    let _: () = pipeline
        .pexpire(&key, HISTORY_TTL_MS, None)
        .await
        .map_err(unavailable)?;
    pipeline.all::<()>().await.map_err(unavailable)
}

pub async fn history(
    b: &RedisBackend,
    session_id: &str,
    limit: usize,
) -> BackendResult<Vec<Value>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let client = b.ready()?;
    let raw: Vec<String> = client
        .lrange(b.shared().keys.history(session_id), -(limit as i64), -1)
        .await
        .map_err(unavailable)?;
    raw.iter().map(|r| parse(r)).collect()
}

pub async fn create_approval(b: &RedisBackend, record: &ApprovalRecord) -> BackendResult<()> {
    let client = b.ready()?;
    let keys = &b.shared().keys;
    let ttl = record.expires_at.saturating_sub(record.created_at) + DECIDED_TTL_MS;
    let created: i64 = b
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

pub async fn approval(b: &RedisBackend, id: &str) -> BackendResult<Option<ApprovalRecord>> {
    let client = b.ready()?;
    let raw: Option<String> = client
        .get(b.shared().keys.approval(id))
        .await
        .map_err(unavailable)?;
    raw.as_deref().map(parse).transpose()
}

pub async fn pending_approvals(b: &RedisBackend) -> BackendResult<Vec<ApprovalRecord>> {
    let client = b.ready()?;
    let keys = &b.shared().keys;
    let ids: Vec<String> = client
        .zrange(keys.approvals_pending(), 0, -1, None, false, None, false)
        .await
        .map_err(unavailable)?;
    let mut pending = Vec::with_capacity(ids.len());
    for id in ids {
        match approval(b, &id).await? {
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

pub async fn resolve_approval(
    b: &RedisBackend,
    decided: &ApprovalRecord,
) -> BackendResult<ApprovalRecord> {
    let client = b.ready()?;
    let keys = &b.shared().keys;
    let outcome: String = b
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
        "ok" => Ok(decided.clone()),
        "missing" => Err(BackendError::NotFound("approval")),
        "corrupt" => Err(BackendError::Internal("corrupt approval record".into())),
        status => {
            let status = serde_json::from_value(Value::String(status.to_owned()))
                .map_err(|e| BackendError::Internal(e.to_string()))?;
            Err(already_resolved(status))
        }
    }
}

pub async fn approval_history(
    b: &RedisBackend,
    limit: usize,
) -> BackendResult<Vec<ApprovalRecord>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let client = b.ready()?;
    let raw: Vec<String> = client
        .lrange(b.shared().keys.approvals_audit(), 0, limit as i64 - 1)
        .await
        .map_err(unavailable)?;
    raw.iter().map(|r| parse(r)).collect()
}

pub async fn claim_idempotency(
    b: &RedisBackend,
    key: &str,
    ttl_ms: u64,
) -> BackendResult<Option<Idempotency>> {
    let client = b.ready()?;
    let redis_key = b.shared().keys.idempotency(key);
    let marker = json(&Idempotency::Pending)?;
    // The holder may finish (and the key expire) between the two steps:
    // try twice before calling it claimed by someone else.
    for _ in 0..2 {
        let set: Option<String> = client
            .set(
                &redis_key,
                marker.as_str(),
                Some(Expiration::PX(ttl_ms as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        if set.is_some() {
            return Ok(None);
        }
        if let Some(held) = idempotency(b, key).await? {
            return Ok(Some(held));
        }
    }
    Ok(Some(Idempotency::Pending))
}

pub async fn idempotency(b: &RedisBackend, key: &str) -> BackendResult<Option<Idempotency>> {
    let client = b.ready()?;
    let raw: Option<String> = client
        .get(b.shared().keys.idempotency(key))
        .await
        .map_err(unavailable)?;
    raw.as_deref().map(parse).transpose()
}

pub async fn finish_idempotency(
    b: &RedisBackend,
    key: &str,
    result: Option<&Value>,
    ttl_ms: u64,
) -> BackendResult<()> {
    let client = b.ready()?;
    let redis_key = b.shared().keys.idempotency(key);
    match result {
        Some(result) => {
            let done = json(&Idempotency::Done {
                result: result.clone(),
            })?;
            client
                .set::<(), _, _>(
                    redis_key,
                    done,
                    Some(Expiration::PX(ttl_ms as i64)),
                    None,
                    false,
                )
                .await
                .map_err(unavailable)
        }
        None => client.del::<(), _>(redis_key).await.map_err(unavailable),
    }
}
