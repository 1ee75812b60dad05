//! Agent runs in memory: each session's latest run; the running checks
//! scan them under the state lock.

use super::MemoryBackend;
use crate::backend::{BackendError, BackendResult, RunRecord, RunStatus, RunStore};
use async_trait::async_trait;

#[async_trait]
impl RunStore for MemoryBackend {
    async fn start_run(&self, run: &RunRecord, max_per_caller: usize) -> BackendResult<()> {
        let mut state = self.lock();
        if state
            .runs
            .get(&run.session_id)
            .is_some_and(|r| r.status == RunStatus::Running)
        {
            return Err(BackendError::Conflict(format!(
                "session {} already has a run in progress",
                run.session_id
            )));
        }
        let running = state
            .runs
            .values()
            .filter(|r| r.status == RunStatus::Running && r.caller == run.caller)
            .count();
        if running >= max_per_caller {
            return Err(BackendError::Limit("concurrent runs", max_per_caller));
        }
        state.runs.insert(run.session_id.clone(), run.clone());
        Ok(())
    }

    async fn run(&self, session_id: &str) -> BackendResult<Option<RunRecord>> {
        Ok(self.lock().runs.get(session_id).cloned())
    }

    async fn finish_run(&self, outcome: &RunRecord) -> BackendResult<Option<RunRecord>> {
        let swapped = self.swap_run(outcome, RunStatus::Running, outcome.attached);
        Ok(swapped.then(|| outcome.clone()))
    }

    async fn serve_run(&self, run: &RunRecord) -> BackendResult<bool> {
        Ok(self.swap_run(run, RunStatus::Running, run.attached))
    }

    async fn reattach_run(&self, run: &RunRecord) -> BackendResult<bool> {
        let Some(was) = run.attached.checked_sub(1) else {
            return Ok(false);
        };
        Ok(self.swap_run(run, RunStatus::Error, was))
    }

    async fn forget_session_records(&self, session_id: &str) -> BackendResult<()> {
        let mut state = self.lock();
        state.runs.remove(session_id);
        state.history.remove(session_id);
        drop(state);
        self.logs()
            .remove(&crate::protocol::names::session_channel(session_id));
        Ok(())
    }
}

impl MemoryBackend {
    /// Replace the session's record with `run` if it is run `run.run_id`
    /// in `status` under attach count `attached`.
    fn swap_run(&self, run: &RunRecord, status: RunStatus, attached: u32) -> bool {
        let mut state = self.lock();
        match state.runs.get_mut(&run.session_id) {
            Some(cur)
                if cur.run_id == run.run_id && cur.status == status && cur.attached == attached =>
            {
                *cur = run.clone();
                true
            }
            _ => false,
        }
    }
}
