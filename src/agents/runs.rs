//! Run bookkeeping on the serving side: the runs this instance's agents
//! are working on.
//!
//! A run is a relayed call tied to a session ([`RunTicket`]). The relay
//! tells the [`RunHooks`] of the instance holding the agent's socket when
//! the agent was sent the run, when it answered and when the run was
//! cancelled; the [`RunBook`] is that instance's implementation. It
//! remembers which connection serves which session's run (so only that
//! agent's `agent.event`s are accepted, and none after a cancel), publishes
//! `agent.started` / `agent.completed` / `agent.error` on `global`, and
//! finishes the shared [`RunRecord`] — first finisher wins, so a cancel
//! racing a completion ends the run once.

use crate::backend::{AgentEntry, Backend, BackendResult, Bus, RunRecord, RunStatus, RunStore};
use crate::conn::ConnHandle;
use crate::protocol::{RpcError, frame, names, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long an agent's answer keeps being written through a backend
/// outage before it is given up (meanwhile the record says running).
const FINISH_RETRY: Duration = Duration::from_secs(60);
/// The longest pause between two tries.
const FINISH_PAUSE_MAX: Duration = Duration::from_secs(2);
/// How long a run ended here is remembered, to be ended again if the
/// backend comes back with it running (a restart from an append-only
/// file synced once a second loses up to the last second of writes).
const RECENT_FOR_MS: u64 = 10_000;
/// At most this many of them.
const RECENT_MAX: usize = 1024;

/// What a routed call is for, beyond a plain request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunTicket {
    pub session_id: String,
    pub run_id: String,
    /// The run's record as the caller's instance stored it: the serving
    /// instance writes it back if the backend loses it while the run goes
    /// on (absent from older instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Box<RunRecord>>,
}

/// Where a call goes: a node's connection (and the agent entry it acts
/// for, whose concurrency it counts against).
#[derive(Debug, Clone)]
pub struct Target {
    pub conn_id: String,
    pub instance_id: String,
    /// The run (start time) of that instance the node is connected to; 0
    /// when not known. A later run of the same instance id does not hold
    /// the node.
    pub generation: u64,
    pub agent_id: Option<String>,
}

impl From<&AgentEntry> for Target {
    fn from(agent: &AgentEntry) -> Self {
        Self {
            conn_id: agent.conn_id.clone(),
            instance_id: agent.instance_id.clone(),
            generation: agent.generation,
            agent_id: Some(agent.agent_id.clone()),
        }
    }
}

/// Hooks the relay calls on the serving side of agent runs.
pub trait RunHooks: Send + Sync + 'static {
    /// The node on `conn` was sent the run (`agent.started`).
    fn started(&self, ticket: &RunTicket, target: &Target, conn: &ConnHandle);
    /// The node answered or failed; the run is over.
    fn finished(&self, ticket: &RunTicket, outcome: &Result<Value, RpcError>);
    /// The run was cancelled: tell the node, drop its later events.
    fn cancelled(&self, ticket: &RunTicket, conn: &ConnHandle);
    /// A cancel for run `run_id` that no relayed call here carries: a run
    /// its agent re-attached to on this instance. True when there was one.
    fn cancel_run(&self, run_id: &str) -> bool;
}

/// A run one of this instance's agents is working on.
pub struct Active {
    pub run_id: String,
    pub conn_id: String,
    pub agent_id: Option<String>,
    pub cancelled: bool,
    /// The run's record (see [`RunTicket::record`]).
    pub record: Option<Box<RunRecord>>,
    /// A run its agent re-attached to here (`agent.reattach`): no relayed
    /// call carries it, so the agent's connection is kept to tell it of a
    /// cancel, and the agent ends it with `agent.finish`.
    pub reattached: Option<ConnHandle>,
}

/// Runs served by this instance's agents, by session id.
pub struct RunBook {
    backend: Arc<dyn Backend>,
    instance_id: String,
    generation: u64,
    active: Mutex<HashMap<String, Active>>,
    /// The runs ended here in the last [`RECENT_FOR_MS`].
    pub recent: Recent,
}

/// Runs recently ended on this instance, as ended: written again when the
/// backend's epoch changed and it records one of them as still running
/// (`services::write_back`), so a lost end cannot leave a run running
/// with nobody to end it.
#[derive(Clone, Default)]
pub struct Recent(Arc<Mutex<VecDeque<(u64, RunRecord)>>>);

impl Recent {
    pub fn remember(&self, run: RunRecord) {
        let now = now_ms();
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        forget_old(&mut recent, now);
        if recent.len() >= RECENT_MAX {
            recent.pop_front();
        }
        recent.push_back((now, run));
    }

    /// The runs ended in the last [`RECENT_FOR_MS`], oldest first.
    pub fn list(&self) -> Vec<RunRecord> {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        forget_old(&mut recent, now_ms());
        recent.iter().map(|(_, run)| run.clone()).collect()
    }
}

fn forget_old(recent: &mut VecDeque<(u64, RunRecord)>, now: u64) {
    while recent
        .front()
        .is_some_and(|(at, _)| now.saturating_sub(*at) > RECENT_FOR_MS)
    {
        recent.pop_front();
    }
}

impl RunBook {
    pub fn new(backend: Arc<dyn Backend>, instance_id: String, generation: u64) -> Self {
        Self {
            backend,
            instance_id,
            generation,
            active: Mutex::default(),
            recent: Recent::default(),
        }
    }

    /// The runs in progress here, by session id.
    pub fn active(&self) -> MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The records of the runs in progress here (not cancelled), as this
    /// instance serves them: written back if the backend loses them.
    pub fn in_progress(&self) -> Vec<RunRecord> {
        self.active()
            .values()
            .filter(|a| !a.cancelled)
            .filter_map(|a| {
                let mut record = *a.record.clone()?;
                record.instance_id = self.instance_id.clone();
                record.generation = self.generation;
                if let Some(agent) = &a.agent_id {
                    record.agent_id = agent.clone();
                }
                record.status = RunStatus::Running;
                Some(record)
            })
            .collect()
    }
}

impl RunHooks for RunBook {
    fn started(&self, ticket: &RunTicket, target: &Target, conn: &ConnHandle) {
        self.active().insert(
            ticket.session_id.clone(),
            Active {
                run_id: ticket.run_id.clone(),
                conn_id: target.conn_id.clone(),
                agent_id: target.agent_id.clone(),
                cancelled: false,
                record: ticket.record.clone(),
                reattached: None,
            },
        );
        let data = json!({
            "sessionId": ticket.session_id,
            "runId": ticket.run_id,
            "agentId": target.agent_id,
        });
        // The record names who serves it where: any instance finding it
        // running after this one died may end it as lost.
        let served = ticket.record.as_deref().map(|issued| {
            let mut record = issued.clone();
            record.instance_id = self.instance_id.clone();
            record.generation = self.generation;
            if let Some(agent) = &target.agent_id {
                record.agent_id = agent.clone();
            }
            if let Some(identity) = conn.identity() {
                record.agent_identity = identity.sub.clone();
            }
            record
        });
        let backend = self.backend.clone();
        tokio::spawn(async move {
            if let Some(record) = served
                && let Err(e) = backend.serve_run(&record).await
            {
                tracing::debug!(run = %record.run_id, error = %e, "recording where a run is served failed");
            }
            announce(&*backend, "agent.started", data).await;
        });
    }

    fn finished(&self, ticket: &RunTicket, outcome: &Result<Value, RpcError>) {
        let active = {
            let mut map = self.active();
            match map.get(&ticket.session_id) {
                Some(a) if a.run_id == ticket.run_id => map.remove(&ticket.session_id),
                _ => None,
            }
        };
        if active.as_ref().is_some_and(|a| a.cancelled) {
            return;
        }
        let served = active.and_then(|a| a.agent_id).map(|agent_id| Served {
            agent_id,
            identity: None,
            instance_id: self.instance_id.clone(),
            generation: self.generation,
        });
        let (backend, recent) = (self.backend.clone(), self.recent.clone());
        let (ticket, outcome) = (ticket.clone(), outcome.clone());
        tokio::spawn(async move {
            finish(&*backend, &*backend, &recent, &ticket, served, outcome).await
        });
    }

    fn cancelled(&self, ticket: &RunTicket, conn: &ConnHandle) {
        if let Some(active) = self.active().get_mut(&ticket.session_id)
            && active.run_id == ticket.run_id
        {
            active.cancelled = true;
        }
        tell_cancelled(conn, &ticket.session_id, &ticket.run_id);
    }

    fn cancel_run(&self, run_id: &str) -> bool {
        let mut active = self.active();
        let Some((session_id, run)) = active
            .iter_mut()
            .find(|(_, a)| a.run_id == run_id && a.reattached.is_some())
        else {
            return false;
        };
        run.cancelled = true;
        if let Some(conn) = &run.reattached {
            tell_cancelled(conn, session_id, run_id);
        }
        true
    }
}

/// Tell the agent on `conn` to stop run `run_id` (`agent.cancel`).
pub fn tell_cancelled(conn: &ConnHandle, session_id: &str, run_id: &str) {
    conn.push(frame::notification(
        "agent.cancel",
        &json!({ "sessionId": session_id, "runId": run_id }),
    ));
}

/// Publish a run's lifecycle event on `global`.
pub async fn announce(bus: &dyn Bus, event: &str, data: Value) {
    let frame = frame::notification(event, &data);
    if let Err(e) = bus.broadcast(names::GLOBAL, frame, false).await {
        tracing::warn!(%event, error = %e, "publishing a run event failed");
    }
}

/// Which agent served a run, on which instance.
pub struct Served {
    pub agent_id: String,
    /// `sub` of the identity that registered the agent, when known.
    pub identity: Option<String>,
    pub instance_id: String,
    pub generation: u64,
}

/// [`finish_once`], tried again while the backend is unavailable (for
/// [`FINISH_RETRY`]): the agent's answer is held here and nowhere else,
/// and a run left running on a live instance has nobody else to end it.
/// The run as ended goes to `recent`.
pub async fn finish(
    runs: &dyn RunStore,
    bus: &dyn Bus,
    recent: &Recent,
    ticket: &RunTicket,
    served: Option<Served>,
    outcome: Result<Value, RpcError>,
) -> Option<RunRecord> {
    let deadline = tokio::time::Instant::now() + FINISH_RETRY;
    let mut pause = Duration::from_millis(100);
    loop {
        match finish_once(runs, bus, ticket, served.as_ref(), &outcome).await {
            Ok(done) => {
                if let Some(done) = &done {
                    recent.remember(done.clone());
                }
                return done;
            }
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::debug!(run = %ticket.run_id, error = %e, "finishing a run: trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(FINISH_PAUSE_MAX);
            }
            Err(e) => {
                tracing::warn!(run = %ticket.run_id, error = %e, "finishing a run failed");
                return None;
            }
        }
    }
}

/// End a run with the agent's answer, unless it already ended, or its
/// agent re-attached to it since `ticket` was issued (a finish for the
/// call the lost instance carried must not end the re-attached run).
/// The record as ended, when this finish ended it.
pub async fn finish_once(
    runs: &dyn RunStore,
    bus: &dyn Bus,
    ticket: &RunTicket,
    served: Option<&Served>,
    outcome: &Result<Value, RpcError>,
) -> BackendResult<Option<RunRecord>> {
    let Some(mut run) = runs.run(&ticket.session_id).await? else {
        return Ok(None);
    };
    if run.run_id != ticket.run_id || run.status != RunStatus::Running {
        return Ok(None);
    }
    if let Some(issued) = &ticket.record
        && issued.attached != run.attached
    {
        return Ok(None);
    }
    if let Some(served) = served {
        if let Some(identity) = &served.identity {
            run.agent_identity = identity.clone();
        }
        run.agent_id = served.agent_id.clone();
        run.instance_id = served.instance_id.clone();
        run.generation = served.generation;
    }
    run.finished_at = Some(now_ms());
    match outcome {
        Ok(result) => {
            run.status = RunStatus::Completed;
            run.result = Some(result.clone());
        }
        Err(e) => {
            run.status = RunStatus::Error;
            run.error = serde_json::to_value(e).ok();
        }
    }
    let done = runs.finish_run(&run).await?;
    if let Some(done) = &done {
        let event = if done.status == RunStatus::Completed {
            "agent.completed"
        } else {
            "agent.error"
        };
        announce(bus, event, summary(done)).await;
    }
    Ok(done)
}

/// The data of a run's lifecycle event.
pub fn summary(run: &RunRecord) -> Value {
    json!({
        "sessionId": run.session_id,
        "runId": run.run_id,
        "agentId": run.agent_id,
        "status": run.status,
        "result": run.result,
        "error": run.error,
    })
}
