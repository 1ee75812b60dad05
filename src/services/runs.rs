//! Run rules shared beyond `agent.*`: stopping a run (a cancel, or the
//! close of its session) wherever its agent is.

use crate::agents::runs::{announce, summary};
use crate::app::App;
use crate::backend::{RunRecord, RunStatus};
use crate::protocol::{RpcError, now_ms};
use serde_json::json;

/// Cancel a running run for `by`: mark it cancelled (unless it ended
/// first: `None`), tell whichever instance serves it to forward the cancel
/// to the agent, and announce `agent.error` with status `cancelled`.
pub async fn stop(app: &App, mut run: RunRecord, by: &str) -> Result<Option<RunRecord>, RpcError> {
    run.status = RunStatus::Cancelled;
    run.finished_at = Some(now_ms());
    run.error = Some(json!({ "message": "cancelled", "by": by }));
    let Some(done) = app.run_store().finish_run(&run).await? else {
        return Ok(None);
    };
    for instance in app.instance_store().instances().await? {
        app.relay.cancel(&done.run_id, &instance.id).await;
    }
    announce(app.bus(), "agent.error", summary(&done)).await;
    Ok(Some(done))
}

/// A session is closing: a run still in progress on it is cancelled.
pub async fn session_closing(app: &App, session_id: &str) {
    match app.run_store().run(session_id).await {
        Ok(Some(run)) if run.status == RunStatus::Running => {
            if let Err(e) = stop(app, run, "session closed").await {
                tracing::warn!(session = %session_id, error = %e, "cancelling the run of a closing session failed");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(session = %session_id, error = %e, "run of a closing session"),
    }
}
