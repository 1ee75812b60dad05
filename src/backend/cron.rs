//! Cluster-wide cron: the jobs, the due time of each (its `next` tick),
//! and a capped history of firings per job.
//!
//! Every instance runs a scheduler; a tick fires exactly once because the
//! instance that fires it first moves the job's `next` forward with an
//! atomic compare-and-set ([`CronStore::claim_cron_tick`]): of several
//! instances waking for the same tick, one wins and the others see the
//! tick already taken. A version counter moves on every change to a job,
//! so schedulers re-read the job list only when it changed.
//!
//! The same step leaves a [`CronClaim`] naming the instance (and its
//! generation) that is to fire the tick; recording the tick's outcome
//! removes it. A claim that outlives its instance is taken over by a live
//! one ([`CronStore::take_cron_claim`], a compare-and-set again, so one
//! instance recovers it), which fires the tick in its place.

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a job does when it fires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum CronTarget {
    /// Call a method (built in or served by a node) as the job's creator.
    Method {
        method: String,
        #[serde(default)]
        params: Value,
    },
    /// Publish `event` with `data` on `channel`, as `publish` does.
    Channel {
        channel: String,
        event: String,
        #[serde(default)]
        data: Value,
    },
}

/// Who created a job: the identity its method calls run with (never a
/// credential).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronCreator {
    pub sub: String,
    /// `operator` or `node`.
    pub role: String,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub channels: Vec<String>,
}

/// A scheduled job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    pub id: String,
    /// A 5- or 6-field cron expression, a macro (`@hourly`, …) or
    /// `@every <duration>`.
    pub schedule: String,
    /// IANA time zone the expression is read in (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    pub target: CronTarget,
    pub enabled: bool,
    pub created_by: CronCreator,
    pub created_at: u64,
    pub updated_at: u64,
}

/// How a firing came about.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Scheduled,
    Manual,
}

/// What became of a firing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    Ok,
    Error,
    /// Ticks that passed while no instance could fire them.
    Missed,
    /// Claimed by `instance` and firing; a live instance takes the tick
    /// over if that instance dies before recording the outcome.
    Pending,
    /// The instance firing the tick died while its call was running: the
    /// call may or may not have taken effect, and it is not run twice.
    Unknown,
}

/// One firing of a job (or one record of ticks missed in a row).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronRun {
    /// The scheduled tick (ms); for a manual run, when it was asked for;
    /// for missed ticks, the first of them.
    pub tick_at: u64,
    /// When it fired (for missed ticks: when the loss was noticed).
    pub fired_at: u64,
    /// The instance that fired it.
    pub instance: String,
    pub kind: RunKind,
    pub outcome: RunOutcome,
    /// A method's result (cut to a summary when large) or, for a channel,
    /// how many local subscribers were reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The JSON-RPC error a method answered, or why publishing failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// For missed ticks: how many (at least this many when `tick_at` is
    /// far back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    /// For missed ticks: the last of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick_at: Option<u64>,
    /// For a tick taken over from a dead instance: that instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_from: Option<String>,
}

/// A tick claimed by an instance and not yet recorded as fired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CronClaim {
    pub job: String,
    pub tick_at: u64,
    /// The instance firing it, and the generation (start time) of that
    /// run of the instance: a restarted instance's old claims are orphans.
    pub instance: String,
    pub generation: u64,
    /// When it was claimed or taken over (ms).
    pub claimed_at: u64,
}

impl CronClaim {
    /// Where the claim is kept: job ids never hold `@`.
    pub fn field(job: &str, tick_at: u64) -> String {
        format!("{job}@{tick_at}")
    }
}

/// Cron jobs, their due ticks and their firings.
#[async_trait]
pub trait CronStore: Send + Sync + 'static {
    /// Add a job with its first due tick (`None`: disabled). Conflict when
    /// the id exists, Limit when `max_jobs` are stored.
    async fn create_cron_job(
        &self,
        job: &CronJob,
        next_at: Option<u64>,
        max_jobs: usize,
    ) -> BackendResult<()>;
    /// Replace a job and its due tick (`None`: disabled); NotFound when it
    /// is gone. A scheduler holding the old tick then fails its claim.
    async fn update_cron_job(&self, job: &CronJob, next_at: Option<u64>) -> BackendResult<()>;
    async fn cron_job(&self, id: &str) -> BackendResult<Option<CronJob>>;
    /// Every job, by id.
    async fn cron_jobs(&self) -> BackendResult<Vec<CronJob>>;
    /// Every enabled job's due tick (ms), by id.
    async fn cron_due(&self) -> BackendResult<Vec<(String, u64)>>;
    /// Remove a job, its tick and its history; whether it existed.
    async fn remove_cron_job(&self, id: &str) -> BackendResult<bool>;
    /// Take tick `tick_at` of job `id`: moves its due tick to `next_at`
    /// only if it is still `tick_at`, and in the same step adds `claimed`
    /// to the history in order (what was missed, the pending firing) and
    /// keeps `firing` (the tick this instance fires, if any) until its
    /// outcome is recorded. Exactly one caller per tick gets `true`.
    async fn claim_cron_tick(
        &self,
        id: &str,
        tick_at: u64,
        next_at: u64,
        claimed: &[CronRun],
        firing: Option<&CronClaim>,
    ) -> BackendResult<bool>;
    /// Add a firing to the job's history (newest first, the newest
    /// [`RUNS_MAX`] kept), in place of the pending record of the same
    /// tick when one is among the newest [`PENDING_SCAN`]; nothing when
    /// the job is gone. A scheduled firing's claim goes in the same step.
    async fn record_cron_run(&self, id: &str, run: &CronRun) -> BackendResult<()>;
    /// Every tick claimed and not yet recorded.
    async fn cron_claims(&self) -> BackendResult<Vec<CronClaim>>;
    /// Replace claim `from` with `to` (same job and tick) only if it is
    /// still exactly `from`: of the instances recovering a dead
    /// instance's tick, one gets `true`.
    async fn take_cron_claim(&self, from: &CronClaim, to: &CronClaim) -> BackendResult<bool>;
    /// The job's newest firings, newest first.
    async fn cron_runs(&self, id: &str, limit: usize) -> BackendResult<Vec<CronRun>>;
    /// A counter that moves on every change to any job.
    async fn cron_version(&self) -> BackendResult<u64>;
}

/// Firings kept per job.
pub const RUNS_MAX: usize = 100;
/// Newest records searched for the pending one a firing replaces: all of
/// them, since a recovered tick is recorded after the dead instance's
/// successors have fired a few more.
pub const PENDING_SCAN: usize = RUNS_MAX;
