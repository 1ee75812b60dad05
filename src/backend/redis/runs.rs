//! Agent runs on Redis: one hash, session id → JSON run record (its latest
//! run), and per caller a set of the sessions with a running run. Starting
//! and finishing are Lua scripts, so "one running run per session", the
//! per-caller limit and "the first finisher wins" hold across instances.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{BackendError, BackendResult, RunRecord, RunStore};
use async_trait::async_trait;
use fred::prelude::{HashesInterface, KeysInterface, SetsInterface};

#[async_trait]
impl RunStore for RedisBackend {
    async fn start_run(&self, run: &RunRecord, max_per_caller: usize) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let outcome: i64 = self
            .shared()
            .scripts
            .start_run
            .evalsha_with_reload(
                client,
                vec![keys.runs(), keys.running(&run.caller)],
                vec![
                    run.session_id.clone(),
                    json(run)?,
                    max_per_caller.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        match outcome {
            1 => Ok(()),
            -1 => Err(BackendError::Conflict(format!(
                "session {} already has a run in progress",
                run.session_id
            ))),
            _ => Err(BackendError::Limit("concurrent runs", max_per_caller)),
        }
    }

    async fn run(&self, session_id: &str) -> BackendResult<Option<RunRecord>> {
        let client = self.ready()?;
        let raw: Option<String> = client
            .hget(self.shared().keys.runs(), session_id)
            .await
            .map_err(unavailable)?;
        raw.as_deref().map(parse).transpose()
    }

    async fn finish_run(&self, outcome: &RunRecord) -> BackendResult<Option<RunRecord>> {
        let swapped = self
            .swap_run(outcome, "running", outcome.attached, "rem")
            .await?;
        Ok(swapped.then(|| outcome.clone()))
    }

    async fn serve_run(&self, run: &RunRecord) -> BackendResult<bool> {
        self.swap_run(run, "running", run.attached, "add").await
    }

    async fn reattach_run(&self, run: &RunRecord) -> BackendResult<bool> {
        let Some(was) = run.attached.checked_sub(1) else {
            return Ok(false);
        };
        self.swap_run(run, "error", was, "add").await
    }

    async fn forget_session_records(&self, session_id: &str) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        if let Some(run) = self.run(session_id).await? {
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
                let channel = crate::protocol::names::session_channel(session_id);
                vec![keys.log(&channel), keys.log_offset(&channel)]
            }),
        );
        a.and(h).and(e).map_err(unavailable)
    }
}

impl RedisBackend {
    /// The `SWAP_RUN` script: `run` replaces the session's record if that
    /// is still run `run.run_id` with status `from` and re-attach count
    /// `attached`.
    async fn swap_run(
        &self,
        run: &RunRecord,
        from: &str,
        attached: u32,
        running_set: &str,
    ) -> BackendResult<bool> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let done: i64 = self
            .shared()
            .scripts
            .swap_run
            .evalsha_with_reload(
                client,
                vec![keys.runs(), keys.running(&run.caller)],
                vec![
                    run.session_id.clone(),
                    run.run_id.clone(),
                    from.to_owned(),
                    attached.to_string(),
                    json(run)?,
                    running_set.to_owned(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(done == 1)
    }
}
