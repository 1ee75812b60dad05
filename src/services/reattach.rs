//! An agent re-attaching to its run after the instance serving it died.
//!
//! ```text
//!  instance b dies mid-run ── the caller's instance ends the call:
//!                             record error {reason: instance_lost,
//!                             resumableUntil}, agent.error on global
//!  agent reconnects (any instance), agent.register, then
//!  agent.reattach {sessionId, runId}
//!      waits (bounded) while the record still says running,
//!      checks: same agent on this connection, same identity, lost,
//!      within the resume window and the run's deadline;
//!      record back to running here (attached + 1, compare-and-swap),
//!      agent.started {attached} on global
//!  agent.event …            as before: same run id, same session log
//!  agent.finish {result | error}   ends it (agent.completed / agent.error)
//! ```
//!
//! The caller's instance, which noticed the loss, follows the run for its
//! resume window ([`follow`]): a re-attached run whose new instance is
//! lost too ends as `instance_lost` again (and may be re-attached again),
//! so a run never stays running for an instance that is gone.
//!
//! No relayed call carries a re-attached run, so this instance's
//! [`RunBook`](crate::agents::runs::RunBook) keeps the agent's connection
//! for it: a cancel reaches the agent from there, the run's deadline ends it
//! with -32006, and the agent's connection closing ends it with -32005
//! `{reason: "agent_disconnected"}`. The attach count in the record makes a
//! late finish of the lost call a no-op.

use crate::agents::runs::Target;
use crate::agents::runs::{
    Active, RunBook, RunTicket, Served, announce, finish, finish_once, tell_cancelled,
};
use crate::app::App;
use crate::backend::{RunRecord, RunStatus};
use crate::conn::ConnHandle;
use crate::protocol::{RpcError, now_ms};
use crate::relay::CallError;
use crate::services::runs::{resumable, resumable_until};
use serde_json::{Value, json};
use std::time::Duration;

/// How often a re-attach looks again at a record still marked running.
const POLL: Duration = Duration::from_millis(100);
/// How often the caller's instance looks at a lost run it follows.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// The `reason` of a re-attached run ended by its agent's disconnect.
pub const AGENT_DISCONNECTED: &str = "agent_disconnected";

/// Re-attach the agent on `conn` (identity `sub`) to run `run_id` of
/// `session_id`, waiting up to twice `limits.node_ttl_ms` for its
/// lost instance to be noticed.
pub async fn reattach(
    app: &App,
    conn: &ConnHandle,
    sub: &str,
    session_id: &str,
    run_id: &str,
) -> Result<RunRecord, RpcError> {
    // A loss is noticed a heartbeat after `node_ttl`, or after twice that
    // when the dead instance's record was reaped before it looked stale.
    let patience = app.config.limits.node_ttl() * 2 + Duration::from_secs(2);
    let deadline = tokio::time::Instant::now() + patience;
    let run = loop {
        let run = app
            .run_store()
            .run(session_id)
            .await?
            .filter(|r| r.run_id == run_id)
            .ok_or_else(|| RpcError::not_found("run", run_id))?;
        // Running: its instance may not be known lost yet; unless it is
        // this one, where it was re-attached already.
        let here = run.attached > 0 && run.instance_id == app.instance_id;
        if run.status != RunStatus::Running || here || tokio::time::Instant::now() + POLL > deadline
        {
            break run;
        }
        if let Some(lost) = settle_orphan(app, &run).await {
            break lost;
        }
        tokio::time::sleep(POLL).await;
    };
    check(app, conn, sub, &run, now_ms())?;
    let mut back = run.clone();
    back.status = RunStatus::Running;
    back.error = None;
    back.result = None;
    back.finished_at = None;
    back.instance_id = app.instance_id.clone();
    back.generation = app.generation;
    back.attached += 1;
    if !app.run_store().reattach_run(&back).await? {
        return Err(RpcError::conflict(format!(
            "run {run_id} changed meanwhile (re-attached elsewhere, or a new run started)"
        )));
    }
    app.runs.active().insert(
        session_id.to_owned(),
        Active {
            run_id: run_id.to_owned(),
            conn_id: conn.id().to_owned(),
            agent_id: Some(back.agent_id.clone()),
            cancelled: false,
            record: Some(Box::new(back.clone())),
            reattached: Some(conn.clone()),
        },
    );
    let started = json!({
        "sessionId": session_id,
        "runId": run_id,
        "agentId": back.agent_id,
        "attached": back.attached,
    });
    announce(app.bus(), "agent.started", started).await;
    if let Some(at) = back.deadline {
        tokio::spawn(time_out(app.clone(), back.clone(), at));
    }
    Ok(back)
}

/// Whether the agent on `conn` may take `run` back at `now`.
fn check(
    app: &App,
    conn: &ConnHandle,
    sub: &str,
    run: &RunRecord,
    now: u64,
) -> Result<(), RpcError> {
    let id = &run.run_id;
    // Whose it is first: a stranger learns nothing of its state.
    if !run.agent_id.is_empty()
        && !app
            .agents
            .of_conn(conn.id())
            .iter()
            .any(|a| a.agent_id == run.agent_id)
    {
        return Err(RpcError::forbidden(format!(
            "run {id} was served by agent {}: register it on this connection first",
            run.agent_id
        )));
    }
    if !run.agent_identity.is_empty() && run.agent_identity != sub {
        return Err(RpcError::forbidden(
            "only the identity whose agent served the run may re-attach to it",
        ));
    }
    let until = match (run.status, resumable_until(run)) {
        (RunStatus::Error, Some(until)) => until,
        (RunStatus::Running, _) => {
            return Err(RpcError::conflict(format!(
                "run {id} is still running: its instance is not known to be lost"
            )));
        }
        (status, _) => {
            return Err(RpcError::conflict(format!(
                "run {id} ended ({}): only a run whose instance was lost can be re-attached",
                serde_json::to_value(status).unwrap_or_default()
            )));
        }
    };
    if run.agent_id.is_empty() || run.agent_identity.is_empty() {
        return Err(RpcError::forbidden(format!(
            "run {id} does not name the agent that served it"
        )));
    }
    if now > until {
        return Err(RpcError::conflict(format!(
            "run {id} could be re-attached until {until} (limits.resume_window_ms)"
        )));
    }
    if run.deadline.is_some_and(|d| now >= d) {
        return Err(RpcError::timeout(format!("run {id} is past its deadline")));
    }
    Ok(())
}

/// The re-attached run of `session_id` this connection serves, taken out
/// of the book.
fn take(book: &RunBook, conn: &ConnHandle, session_id: &str, run_id: &str) -> Option<Active> {
    let mut active = book.active();
    match active.get(session_id) {
        Some(a) if a.run_id == run_id && a.conn_id == conn.id() && a.reattached.is_some() => {
            active.remove(session_id)
        }
        _ => None,
    }
}

/// `agent.finish`: the agent on `conn` ends the run it re-attached to.
/// `Ok(None)` when the run had ended already (cancelled meanwhile).
pub async fn finish_reattached(
    app: &App,
    conn: &ConnHandle,
    session_id: &str,
    run_id: &str,
    outcome: Result<Value, RpcError>,
) -> Result<Option<RunRecord>, RpcError> {
    let Some(active) = take(&app.runs, conn, session_id, run_id) else {
        return Err(
            RpcError::not_found("re-attached run", run_id).with_data(json!({
                "detail": "agent.finish ends a run re-attached on this connection; \
                           a run sent to the agent is answered by replying to its request"
            })),
        );
    };
    if active.cancelled {
        return Ok(None);
    }
    Ok(end(app, active, session_id, outcome).await)
}

/// End a re-attached run (taken out of the book) with `outcome`.
async fn end(
    app: &App,
    active: Active,
    session_id: &str,
    outcome: Result<Value, RpcError>,
) -> Option<RunRecord> {
    let ticket = RunTicket {
        session_id: session_id.to_owned(),
        run_id: active.run_id,
        record: active.record,
    };
    let served = active.agent_id.map(|agent_id| Served {
        agent_id,
        identity: None,
        instance_id: app.instance_id.clone(),
        generation: app.generation,
    });
    let recent = &app.runs.recent;
    finish(app.run_store(), app.bus(), recent, &ticket, served, outcome).await
}

/// The connection closed: the runs it re-attached to end with -32005
/// `{reason: "agent_disconnected"}`.
pub async fn on_disconnect(app: &App, conn: &ConnHandle) {
    let gone: Vec<(String, Active)> = {
        let mut active = app.runs.active();
        let sessions: Vec<String> = active
            .iter()
            .filter(|(_, a)| a.reattached.is_some() && a.conn_id == conn.id())
            .map(|(s, _)| s.clone())
            .collect();
        sessions
            .into_iter()
            .filter_map(|s| active.remove(&s).map(|a| (s, a)))
            .collect()
    };
    for (session_id, active) in gone {
        if active.cancelled {
            continue;
        }
        let e = RpcError::unavailable("the agent disconnected from its re-attached run")
            .with_data(json!({ "reason": AGENT_DISCONNECTED }));
        end(app, active, &session_id, Err(e)).await;
    }
}

/// At the run's deadline: a re-attached run still going is cancelled at
/// the agent and ends with -32006.
async fn time_out(app: App, run: RunRecord, at: u64) {
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
    let active = {
        let mut active = app.runs.active();
        match active.get(&run.session_id) {
            Some(a)
                if a.run_id == run.run_id
                    && a.record
                        .as_ref()
                        .is_some_and(|r| r.attached == run.attached) =>
            {
                active.remove(&run.session_id)
            }
            _ => None,
        }
    };
    let Some(active) = active else { return };
    if let Some(conn) = &active.reattached {
        tell_cancelled(conn, &run.session_id, &run.run_id);
    }
    if active.cancelled {
        return;
    }
    let e = RpcError::timeout(format!("run {} passed its deadline", run.run_id));
    end(&app, active, &run.session_id, Err(e)).await;
}

/// The caller's side of a run that ended as `instance_lost` (`lost`, as
/// recorded): until its resume window passes, a re-attach is watched as the
/// first call was, and the loss of the instance it went to ends the run as
/// `instance_lost` again, resumable again.
pub async fn follow(app: App, mut lost: RunRecord) {
    loop {
        let Some(run) = reattached(&app, &lost).await else {
            return;
        };
        let target = Target {
            conn_id: String::new(),
            instance_id: run.instance_id.clone(),
            generation: run.generation,
            agent_id: Some(run.agent_id.clone()),
        };
        let gone = app.relay.instance_gone(&target);
        tokio::pin!(gone);
        let ended = loop {
            tokio::select! {
                () = &mut gone => break false,
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
            match app.run_store().run(&run.session_id).await {
                Ok(Some(now))
                    if now.run_id == run.run_id
                        && now.status == RunStatus::Running
                        && now.attached == run.attached => {}
                Ok(_) => break true,
                Err(_) => {}
            }
        };
        if ended {
            return;
        }
        match lose(&app, &run).await {
            Some(again) => lost = again,
            None => return,
        }
    }
}

/// End running `run` as `instance_lost` (resumable for
/// `limits.resume_window_ms`) if it is still running as read; the ended
/// record, or `None` when it was not.
async fn lose(app: &App, run: &RunRecord) -> Option<RunRecord> {
    let window = app.live().limits.resume_window_ms;
    let e = RpcError::from(CallError::InstanceLost {
        instance_id: run.instance_id.clone(),
        conn_id: String::new(),
    });
    let ticket = RunTicket {
        session_id: run.session_id.clone(),
        run_id: run.run_id.clone(),
        record: Some(Box::new(run.clone())),
    };
    let e = resumable(e, now_ms().saturating_add(window));
    // Once: whoever reads the record next tries again.
    let lost = finish_once(app.run_store(), app.bus(), &ticket, None, &Err(e)).await;
    lost.ok().flatten()
}

/// A record read as running whose serving instance is dead: normally the
/// caller's instance ends it as lost, but it may have died too. Whoever
/// reads it first (a wait, a re-attach, a new run on the session) ends it
/// as `instance_lost` and follows it as the caller's instance would. The
/// ended record when this call ended it.
pub async fn settle_orphan(app: &App, run: &RunRecord) -> Option<RunRecord> {
    if run.status != RunStatus::Running
        || run.instance_id.is_empty()
        || !app.relay.instance_dead(&run.instance_id, run.generation)
    {
        return None;
    }
    let ended = lose(app, run).await?;
    tracing::info!(run = %run.run_id, instance = %run.instance_id, "a run whose instance died was ended as lost");
    tokio::spawn(follow(app.clone(), ended.clone()));
    Some(ended)
}

/// Wait for `lost` to be re-attached: the record running again, or `None`
/// once it ended otherwise, was replaced, or its resume window passed.
async fn reattached(app: &App, lost: &RunRecord) -> Option<RunRecord> {
    let until = resumable_until(lost)?;
    while now_ms() <= until {
        tokio::time::sleep(FOLLOW_POLL).await;
        match app.run_store().run(&lost.session_id).await {
            Ok(Some(run)) if run.run_id == lost.run_id => {
                if run.status == RunStatus::Running && run.attached > lost.attached {
                    return Some(run);
                }
                if run.status != RunStatus::Error || run.attached != lost.attached {
                    return None;
                }
            }
            Ok(_) => return None,
            Err(_) => {}
        }
    }
    None
}
