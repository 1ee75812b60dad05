//! Cron on Redis: a hash of jobs (JSON), a hash of each enabled job's due
//! tick, a version counter and one capped list of firings per job, all
//! under one hash tag of their own (`{<prefix>:cron}`), so each script
//! below runs on one Redis Cluster slot. Creating (id uniqueness and the
//! job cap), updating, removing and claiming a tick are scripts; the
//! claim is a compare-and-set on the due tick, so of the instances waking
//! for one tick exactly one fires it. A hash of claims (`<job>@<tick>` →
//! the instance firing it) lives until the outcome is recorded; taking a
//! dead instance's claim over is a compare-and-set on its value.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::cron::{PENDING_SCAN, RUNS_MAX};
use crate::backend::{
    BackendError, BackendResult, CronClaim, CronJob, CronRun, CronStore, RunKind,
};
use async_trait::async_trait;
use fred::prelude::{HashesInterface, KeysInterface, ListInterface};
use fred::types::scripts::Script;
use std::collections::HashMap;
use std::sync::LazyLock;

/// KEYS: jobs, due, version. ARGV: id, JSON, next ("" = disabled), max.
/// Returns "ok", "exists" or "full".
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'exists' end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return 'full' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
redis.call('INCR', KEYS[3])
return 'ok'
"#,
    )
});

/// KEYS: jobs, due, version. ARGV: id, JSON, next ("" = disabled).
/// Returns 1, or 0 when the job is gone.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('INCR', KEYS[3])
return 1
"#,
    )
});

/// KEYS: jobs, due, version, runs, claims. ARGV: id. Returns 1 if it
/// existed.
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[4])
local prefix = ARGV[1] .. '@'
for _, field in ipairs(redis.call('HKEYS', KEYS[5])) do
  if string.sub(field, 1, #prefix) == prefix then redis.call('HDEL', KEYS[5], field) end
end
if existed == 1 then redis.call('INCR', KEYS[3]) end
return existed
"#,
    )
});

/// KEYS: due, runs, claims. ARGV: id, expected tick, next tick, kept,
/// claim field ("" = none), claim JSON, then the records to add in order.
/// Returns 1 when taken.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], ARGV[5], ARGV[6]) end
if #ARGV > 6 then
  for i = 7, #ARGV do redis.call('LPUSH', KEYS[2], ARGV[i]) end
  redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
end
return 1
"#,
    )
});

/// KEYS: claims. ARGV: field, expected JSON, new JSON. Returns 1 when
/// taken.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"#,
    )
});

/// KEYS: jobs, runs, claims. ARGV: id, JSON, kept, tick, records
/// searched, claim field to drop ("" = none: a manual run). A scheduled
/// run goes in place of the pending record of the same tick among the
/// newest, else it is added. Nothing but the
/// claim dropped when the job is gone.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if ARGV[6] ~= '' then redis.call('HDEL', KEYS[3], ARGV[6]) end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local tick = tonumber(ARGV[4])
local newest = {}
if ARGV[6] ~= '' then newest = redis.call('LRANGE', KEYS[2], 0, tonumber(ARGV[5]) - 1) end
for i, raw in ipairs(newest) do
  if string.find(raw, '"outcome":"pending"', 1, true) then
    local ok, rec = pcall(cjson.decode, raw)
    if ok and rec.outcome == 'pending' and tonumber(rec.tickAt) == tick then
      redis.call('LSET', KEYS[2], i - 1, ARGV[2])
      return 2
    end
  end
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
"#,
    )
});

fn next_arg(next_at: Option<u64>) -> String {
    next_at.map(|n| n.to_string()).unwrap_or_default()
}

#[async_trait]
impl CronStore for RedisBackend {
    async fn create_cron_job(
        &self,
        job: &CronJob,
        next_at: Option<u64>,
        max_jobs: usize,
    ) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let outcome: String = CREATE
            .evalsha_with_reload(
                client,
                vec![keys.cron_jobs(), keys.cron_due(), keys.cron_version()],
                vec![
                    job.id.clone(),
                    json(job)?,
                    next_arg(next_at),
                    max_jobs.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        match outcome.as_str() {
            "ok" => Ok(()),
            "exists" => Err(BackendError::Conflict(format!(
                "cron job {} exists",
                job.id
            ))),
            _ => Err(BackendError::Limit("cron jobs", max_jobs)),
        }
    }

    async fn update_cron_job(&self, job: &CronJob, next_at: Option<u64>) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let updated: i64 = UPDATE
            .evalsha_with_reload(
                client,
                vec![keys.cron_jobs(), keys.cron_due(), keys.cron_version()],
                vec![job.id.clone(), json(job)?, next_arg(next_at)],
            )
            .await
            .map_err(unavailable)?;
        if updated == 1 {
            Ok(())
        } else {
            Err(BackendError::NotFound("cron job"))
        }
    }

    async fn cron_job(&self, id: &str) -> BackendResult<Option<CronJob>> {
        let client = self.ready()?;
        let raw: Option<String> = client
            .hget(self.shared().keys.cron_jobs(), id)
            .await
            .map_err(unavailable)?;
        raw.as_deref().map(parse).transpose()
    }

    async fn cron_jobs(&self) -> BackendResult<Vec<CronJob>> {
        let client = self.ready()?;
        let raw: HashMap<String, String> = client
            .hgetall(self.shared().keys.cron_jobs())
            .await
            .map_err(unavailable)?;
        let mut jobs = raw
            .values()
            .map(|r| parse::<CronJob>(r))
            .collect::<BackendResult<Vec<_>>>()?;
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(jobs)
    }

    async fn cron_due(&self) -> BackendResult<Vec<(String, u64)>> {
        let client = self.ready()?;
        let raw: HashMap<String, u64> = client
            .hgetall(self.shared().keys.cron_due())
            .await
            .map_err(unavailable)?;
        let mut due: Vec<(String, u64)> = raw.into_iter().collect();
        due.sort();
        Ok(due)
    }

    async fn remove_cron_job(&self, id: &str) -> BackendResult<bool> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let existed: i64 = REMOVE
            .evalsha_with_reload(
                client,
                vec![
                    keys.cron_jobs(),
                    keys.cron_due(),
                    keys.cron_version(),
                    keys.cron_runs(id),
                    keys.cron_claims(),
                ],
                vec![id.to_owned()],
            )
            .await
            .map_err(unavailable)?;
        Ok(existed == 1)
    }

    async fn claim_cron_tick(
        &self,
        id: &str,
        tick_at: u64,
        next_at: u64,
        claimed: &[CronRun],
        firing: Option<&CronClaim>,
    ) -> BackendResult<bool> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let (field, claim) = match firing {
            Some(c) => (CronClaim::field(&c.job, c.tick_at), json(c)?),
            None => (String::new(), String::new()),
        };
        let mut args = vec![
            id.to_owned(),
            tick_at.to_string(),
            next_at.to_string(),
            RUNS_MAX.to_string(),
            field,
            claim,
        ];
        for run in claimed {
            args.push(json(run)?);
        }
        let taken: i64 = CLAIM
            .evalsha_with_reload(
                client,
                vec![keys.cron_due(), keys.cron_runs(id), keys.cron_claims()],
                args,
            )
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn cron_claims(&self) -> BackendResult<Vec<CronClaim>> {
        let client = self.ready()?;
        let raw: HashMap<String, String> = client
            .hgetall(self.shared().keys.cron_claims())
            .await
            .map_err(unavailable)?;
        let mut claims: Vec<CronClaim> = raw.values().filter_map(|r| parse(r).ok()).collect();
        claims.sort_by(|a, b| (a.tick_at, &a.job).cmp(&(b.tick_at, &b.job)));
        Ok(claims)
    }

    async fn take_cron_claim(&self, from: &CronClaim, to: &CronClaim) -> BackendResult<bool> {
        let client = self.ready()?;
        let taken: i64 = TAKE
            .evalsha_with_reload(
                client,
                vec![self.shared().keys.cron_claims()],
                vec![
                    CronClaim::field(&from.job, from.tick_at),
                    json(from)?,
                    json(to)?,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(taken == 1)
    }

    async fn record_cron_run(&self, id: &str, run: &CronRun) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let _: i64 = RECORD
            .evalsha_with_reload(
                client,
                vec![keys.cron_jobs(), keys.cron_runs(id), keys.cron_claims()],
                vec![
                    id.to_owned(),
                    json(run)?,
                    RUNS_MAX.to_string(),
                    run.tick_at.to_string(),
                    PENDING_SCAN.to_string(),
                    if run.kind == RunKind::Scheduled {
                        CronClaim::field(id, run.tick_at)
                    } else {
                        String::new()
                    },
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn cron_runs(&self, id: &str, limit: usize) -> BackendResult<Vec<CronRun>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.ready()?;
        let raw: Vec<String> = client
            .lrange(self.shared().keys.cron_runs(id), 0, limit as i64 - 1)
            .await
            .map_err(unavailable)?;
        raw.iter().map(|r| parse(r)).collect()
    }

    async fn cron_version(&self) -> BackendResult<u64> {
        let client = self.ready()?;
        let version: Option<u64> = client
            .get(self.shared().keys.cron_version())
            .await
            .map_err(unavailable)?;
        Ok(version.unwrap_or(0))
    }
}
