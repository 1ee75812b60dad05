//! Run rules shared beyond `agent.*`: starting a run (`agent.run` and
//! `chat.send` over WebSocket, `SendMessage` over A2A), and stopping one (a
//! cancel, or the close of its session) wherever its agent is.
//!
//! Starting records the run ([`RunRecord`], at most one running per
//! session and [`MAX_RUNS_PER_CALLER`] per caller) and spawns the relayed
//! call; the call's end finishes the record (the serving instance normally
//! did already; this covers it dying or never being reached).

use crate::agents::runs::{RunTicket, Served, announce, finish, summary};
use crate::agents::select::Policy;
use crate::app::App;
use crate::backend::{AgentEntry, RunRecord, RunStatus};
use crate::protocol::{RpcError, now_ms};
use crate::relay::{CallSpec, INSTANCE_LOST};
use crate::services::agents::call_found;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Runs in progress per caller identity.
pub const MAX_RUNS_PER_CALLER: usize = 5;
/// How long starting a run waits for an agent to accept it.
pub const ACCEPT_WAIT: Duration = Duration::from_secs(10);

/// What starting a run needs.
pub struct Dispatch {
    /// The online agents it may go to.
    pub agents: Vec<AgentEntry>,
    pub policy: Policy,
    /// The request the agent is sent (`agent.run`, `chat.send`).
    pub method: &'static str,
    /// Its params; `runId` is added.
    pub params: Value,
    /// What the record says the run is about.
    pub task: String,
    pub session_id: String,
    pub timeout: Duration,
    /// `sub` of the caller (the per-caller limit counts it).
    pub caller: String,
    /// The run's id (default: a fresh one).
    pub run_id: Option<String>,
}

/// The outcome of a run's call, once the agent answered (or the call
/// failed); the record is finished by then.
pub type Done = oneshot::Receiver<Result<Value, RpcError>>;

/// A run an agent accepted.
pub struct Started {
    pub record: RunRecord,
    /// The agent that accepted it; empty when the call ended before any
    /// acceptance arrived.
    pub agent_id: String,
    pub done: Done,
}

/// Record the run, send it to an agent, and return once one accepted it
/// (or the call ended early: with its error, or at once with its answer).
/// The call itself goes on in the background.
pub async fn start(app: &App, d: Dispatch) -> Result<Started, RpcError> {
    let (record, mut progress, mut done) = begin(app, d).await?;
    let wait = tokio::time::sleep(ACCEPT_WAIT);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            update = progress.recv() => match update {
                Some(update) => {
                    if let Some(agent_id) = accepted_by(&update) {
                        return Ok(Started { record, agent_id, done });
                    }
                }
                None => {
                    // The call ended before anyone accepted it.
                    let outcome = (&mut done)
                        .await
                        .unwrap_or_else(|_| Err(RpcError::unavailable("the run ended")));
                    let value = outcome?;
                    let (tx, done) = oneshot::channel();
                    let _ = tx.send(Ok(value));
                    return Ok(Started { record, agent_id: String::new(), done });
                }
            },
            _ = &mut wait => {
                return Err(RpcError::timeout("no agent accepted the run"));
            }
        }
    }
}

/// Record the run and spawn its call: the receivers see the relay's
/// progress (its acceptance marker first) and the call's outcome.
pub async fn begin(
    app: &App,
    d: Dispatch,
) -> Result<(RunRecord, mpsc::Receiver<Value>, Done), RpcError> {
    let started_at = now_ms();
    let record = RunRecord {
        run_id: d
            .run_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        session_id: d.session_id.clone(),
        agent_id: String::new(),
        instance_id: String::new(),
        generation: 0,
        caller: d.caller,
        task: d.task,
        status: RunStatus::Running,
        result: None,
        error: None,
        started_at,
        finished_at: None,
        deadline: Some(started_at.saturating_add(millis(d.timeout))),
        agent_identity: String::new(),
        attached: 0,
    };
    let mut started = app
        .run_store()
        .start_run(&record, MAX_RUNS_PER_CALLER)
        .await;
    if matches!(started, Err(crate::backend::BackendError::Conflict(_))) {
        // The session's run may be one whose instance died unnoticed.
        if let Ok(Some(running)) = app.run_store().run(&d.session_id).await
            && crate::services::reattach::settle_orphan(app, &running)
                .await
                .is_some()
        {
            started = app
                .run_store()
                .start_run(&record, MAX_RUNS_PER_CALLER)
                .await;
        }
    }
    started.map_err(|e| e.into_rpc(&d.session_id))?;
    let ticket = RunTicket {
        session_id: record.session_id.clone(),
        run_id: record.run_id.clone(),
        record: Some(Box::new(record.clone())),
    };
    let (progress, updates) = mpsc::channel(64);
    let (done_tx, done) = oneshot::channel();
    let app = app.clone();
    let (method, timeout, policy, agents) = (d.method, d.timeout, d.policy, d.agents);
    let mut params = d.params;
    params["runId"] = json!(record.run_id);
    tokio::spawn(async move {
        // The agent last sent the run: named in the record if its
        // instance is lost, so that agent may re-attach.
        let tried = std::sync::Mutex::new(None::<AgentEntry>);
        let outcome = call_found(&app, agents, policy, |agent| {
            *tried.lock().unwrap_or_else(|p| p.into_inner()) = Some(agent.clone());
            CallSpec::new(method, &params, timeout)
                .with_progress(Some(progress.clone()))
                .for_run(ticket.clone())
        })
        .await;
        drop(progress);
        let tried = tried.into_inner().unwrap_or_else(|p| p.into_inner());
        let (served, outcome) = match outcome {
            Ok((agent, value)) => (Some(served_by(&agent)), Ok(value)),
            Err(e) if is_instance_lost(&e) => {
                let window = app.live().limits.resume_window_ms;
                let e = resumable(e, now_ms().saturating_add(window));
                (tried.as_ref().map(served_by), Err(e))
            }
            Err(e) => (None, Err(e)),
        };
        // The serving instance normally finished the record already; this
        // covers it dying or never being reached.
        let (runs, bus, recent) = (app.run_store(), app.bus(), &app.runs.recent);
        let ended = finish(runs, bus, recent, &ticket, served, outcome.clone()).await;
        let _ = done_tx.send(outcome);
        if let Some(lost) = ended.filter(|r| resumable_until(r).is_some()) {
            crate::services::reattach::follow(app, lost).await;
        }
    });
    Ok((record, updates, done))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn served_by(agent: &AgentEntry) -> Served {
    Served {
        agent_id: agent.agent_id.clone(),
        identity: Some(agent.identity.clone()),
        instance_id: agent.instance_id.clone(),
        generation: agent.generation,
    }
}

/// Whether a call ended because its serving instance was lost.
pub fn is_instance_lost(e: &RpcError) -> bool {
    e.data
        .as_ref()
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str)
        == Some(INSTANCE_LOST)
}

/// Until when (ms) the agent of `run` may take it back: set for a run that
/// ended because its serving instance was lost (see [`resumable`]).
pub fn resumable_until(run: &RunRecord) -> Option<u64> {
    let data = run.error.as_ref()?.get("data")?;
    let lost = run.status == RunStatus::Error
        && data.get("reason").and_then(Value::as_str) == Some(INSTANCE_LOST);
    lost.then(|| data.get("resumableUntil").and_then(Value::as_u64))
        .flatten()
}

/// A lost run's error, saying until when its agent may re-attach.
pub fn resumable(mut e: RpcError, until: u64) -> RpcError {
    if let Some(data) = e.data.as_mut().and_then(Value::as_object_mut) {
        data.insert("resumableUntil".into(), json!(until));
    }
    e
}

/// The agent id in the relay's acceptance marker, if `update` is one.
fn accepted_by(update: &Value) -> Option<String> {
    update
        .get(crate::relay::ACCEPTED)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

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
    app.runs.recent.remember(done.clone());
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
