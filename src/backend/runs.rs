//! Agent runs: which agent works on which session for whom. At most one
//! run per session is running, and a caller has a bounded number running
//! at once; both checks, and "the first finisher wins", are atomic across
//! instances. The rules of a run's life live in `rpc::runs`.

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The state of an agent run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Error,
    Cancelled,
}

/// One `agent.run`: which agent works on which session for whom.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub run_id: String,
    pub session_id: String,
    pub agent_id: String,
    /// The instance holding the agent's connection, and its generation.
    pub instance_id: String,
    pub generation: u64,
    /// `sub` of the caller (the concurrency limit counts per caller).
    pub caller: String,
    pub task: String,
    pub status: RunStatus,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<Value>,
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    /// When the run times out (ms since the epoch); absent on records of
    /// older instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// `sub` of the identity whose agent served it, once known (a run
    /// whose instance was lost names it: only that identity may
    /// re-attach).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_identity: String,
    /// How many times its agent re-attached to it after its instance was
    /// lost (`agent.reattach`). A finish carries the count it was started
    /// or re-attached under, so a stale one cannot end a re-attached run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attached: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Agent runs, one record per session (its latest run).
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Record a run as running. Conflict when the session already has a
    /// running run; Limit when `run.caller` has `max_per_caller` running.
    async fn start_run(&self, run: &RunRecord, max_per_caller: usize) -> BackendResult<()>;
    /// The latest run of a session.
    async fn run(&self, session_id: &str) -> BackendResult<Option<RunRecord>>;
    /// Finish run `run_id` of its session with `outcome` (status, result,
    /// error, finishedAt) if it is still running under `outcome.attached`;
    /// `None` when it was not (already finished or cancelled, or
    /// re-attached since: the first finisher wins).
    async fn finish_run(&self, outcome: &RunRecord) -> BackendResult<Option<RunRecord>>;
    /// Record who serves running run `run.run_id` where (`run`'s agent,
    /// identity, instance and generation) if it is still running under
    /// `run.attached`; false when it is not.
    async fn serve_run(&self, run: &RunRecord) -> BackendResult<bool>;
    /// Put run `run.run_id` back to running as `run` (its agent
    /// re-attached) if it is still the session's run, ended with an error
    /// under `run.attached - 1`; false when it is not (a newer run, or
    /// another re-attach came first).
    async fn reattach_run(&self, run: &RunRecord) -> BackendResult<bool>;
    /// A session closed: drop its run record, chat history and the log of
    /// its channel.
    async fn forget_session_records(&self, session_id: &str) -> BackendResult<()>;
}
