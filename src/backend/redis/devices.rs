//! Devices on Redis: one string per device (JSON record with its revision
//! and token hashes), a sorted set of every device by first request, one
//! of the pending ones by expiry, one string per token hash naming its
//! device, a hash of last-seen times and a capped list as the audit
//! trail. Every write is the [`WRITE`] script: it checks the revision and
//! changes record, indexes and audit trail together, so the first
//! decision wins across instances. All keys share the stem's hash tag
//! (one slot on Redis Cluster).

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::devices::{AUDIT_MAX, changed};
use crate::backend::{
    BackendError, BackendResult, DeviceChange, DeviceEvent, DeviceRecord, DeviceStore, Pending,
    TokenIndex,
};
use async_trait::async_trait;
use fred::prelude::{HashesInterface, KeysInterface, ListInterface, SortedSetsInterface};
use fred::types::scripts::Script;
use std::sync::LazyLock;

/// Write a device record if its revision is unchanged. KEYS: record, every
/// device, pending, audit, then one key per token index change. ARGV: id,
/// expected rev, JSON, ttl ms (0: none), pending op (`add`, `rem`, `keep`),
/// now ms, expiry ms (pending score), max pending, audit JSON, audit
/// length, then per token key `set`, `del` or a ttl in ms. Returns `ok`,
/// `changed`, `full` or `corrupt`.
const WRITE: &str = r#"
local cur = redis.call('GET', KEYS[1])
local rev = 0
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if not ok then return 'corrupt' end
  rev = tonumber(rec.rev) or 0
end
if rev ~= tonumber(ARGV[2]) then return 'changed' end
if ARGV[5] == 'add' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[6])
  if not redis.call('ZSCORE', KEYS[3], ARGV[1])
     and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[8]) then
    return 'full'
  end
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
elseif ARGV[5] == 'rem' then
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[6], ARGV[1])
for i = 5, #KEYS do
  local op = ARGV[6 + i]
  if op == 'set' then
    redis.call('SET', KEYS[i], ARGV[1])
  elseif op == 'del' then
    redis.call('DEL', KEYS[i])
  else
    redis.call('PEXPIRE', KEYS[i], op)
  end
end
redis.call('LPUSH', KEYS[4], ARGV[9])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[10]) - 1)
return 'ok'
"#;

static WRITE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(WRITE));

impl RedisBackend {
    /// The record with its last-seen time merged in.
    async fn read_device(&self, id: &str) -> BackendResult<Option<DeviceRecord>> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let (raw, seen): (Option<String>, Option<u64>) = tokio::try_join!(
            client.get::<Option<String>, _>(keys.device(id)),
            client.hget::<Option<u64>, _, _>(keys.devices_seen(), id),
        )
        .map_err(unavailable)?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let mut record: DeviceRecord = parse(&raw)?;
        record.info.last_seen = record.info.last_seen.max(seen);
        Ok(Some(record))
    }
}

#[async_trait]
impl DeviceStore for RedisBackend {
    async fn device(&self, id: &str) -> BackendResult<Option<DeviceRecord>> {
        self.read_device(id).await
    }

    async fn devices(&self) -> BackendResult<Vec<DeviceRecord>> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let ids: Vec<String> = client
            .zrange(keys.devices(), 0, -1, None, false, None, false)
            .await
            .map_err(unavailable)?;
        let mut all = Vec::with_capacity(ids.len());
        for id in ids {
            match self.read_device(&id).await? {
                Some(record) => all.push(record),
                // Its record expired: drop the stale entries.
                None => tokio::try_join!(
                    client.zrem::<(), _, _>(keys.devices(), id.as_str()),
                    client.hdel::<(), _, _>(keys.devices_seen(), id.as_str()),
                )
                .map(|_| ())
                .map_err(unavailable)?,
            }
        }
        Ok(all)
    }

    async fn write_device(&self, change: &DeviceChange) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let record = &change.record;
        let id = &record.info.device_id;
        let mut script_keys = vec![
            keys.device(id),
            keys.devices(),
            keys.devices_pending(),
            keys.devices_audit(),
        ];
        let (pending, max) = match change.pending {
            Pending::Add { max } => ("add", max),
            Pending::Remove => ("rem", 0),
            Pending::Keep => ("keep", 0),
        };
        let mut args = vec![
            id.clone(),
            change.expected_rev.to_string(),
            json(record)?,
            change.ttl_ms.unwrap_or(0).to_string(),
            pending.to_owned(),
            change.now.to_string(),
            record.info.expires_at.to_string(),
            max.to_string(),
            json(&change.audit)?,
            AUDIT_MAX.to_string(),
        ];
        for op in &change.tokens {
            let (hash, what) = match op {
                TokenIndex::Set(hash) => (hash, "set".to_owned()),
                TokenIndex::Delete(hash) => (hash, "del".to_owned()),
                TokenIndex::Expire(hash, ms) => (hash, (*ms).max(1).to_string()),
            };
            script_keys.push(keys.device_token(hash));
            args.push(what);
        }
        let outcome: String = WRITE_SCRIPT
            .evalsha_with_reload(client, script_keys, args)
            .await
            .map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "changed" => Err(changed()),
            "full" => Err(BackendError::Limit("pending pairing requests", max)),
            _ => Err(BackendError::Internal("corrupt device record".into())),
        }
    }

    async fn device_by_token(&self, token_hash: &str) -> BackendResult<Option<DeviceRecord>> {
        let client = self.ready()?;
        let id: Option<String> = client
            .get(self.shared().keys.device_token(token_hash))
            .await
            .map_err(unavailable)?;
        match id {
            Some(id) => self.read_device(&id).await,
            None => Ok(None),
        }
    }

    async fn touch_device(&self, id: &str, at: u64) -> BackendResult<()> {
        let client = self.ready()?;
        client
            .hset::<(), _, _>(self.shared().keys.devices_seen(), (id, at as i64))
            .await
            .map_err(unavailable)
    }

    async fn device_history(&self, limit: usize) -> BackendResult<Vec<DeviceEvent>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.ready()?;
        let raw: Vec<String> = client
            .lrange(self.shared().keys.devices_audit(), 0, limit as i64 - 1)
            .await
            .map_err(unavailable)?;
        raw.iter().map(|r| parse(r)).collect()
    }
}
