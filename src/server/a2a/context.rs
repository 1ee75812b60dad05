//! A2A contexts are gateway sessions, and their tasks the session's runs.
//!
//! An HTTP caller has no connection to own a session, so a context it
//! opens is held for its identity under the owner `a2a:<sub>` (a name no
//! connection has): the caller's identity is the session's owner identity,
//! so the same caller sees it from any instance — and from its WebSocket
//! connections too (`session.list`, `session.join`, `session.history`),
//! where the A2A messages and the agent's events are the session's log.
//! An identity holds at most [`MAX_CONTEXTS`] contexts at once.
//!
//! No resume window applies to a held context: [`sweep`] closes one whose
//! task has ended and that has had no new task for [`RETENTION`] (session
//! closed with reason `expired`; its run record and log go with it, so its
//! tasks are then unknown). Every instance sweeps, once a minute.

use super::errors::A2aError;
use super::tasks::TaskRef;
use crate::app::App;
use crate::auth::Identity;
use crate::backend::{BackendError, RunRecord, RunStatus, SessionRecord};
use crate::protocol::now_ms;
use crate::services::sessions::{end, may_see};
use serde_json::json;
use std::time::Duration;

/// Contexts one identity may hold at once.
pub const MAX_CONTEXTS: usize = 1000;
/// How long a context is kept after its latest task ended.
pub const RETENTION: Duration = Duration::from_secs(3600);
/// How often each instance looks for contexts past their retention.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// What the owner of a held context begins with.
const HOLDER_PREFIX: &str = "a2a:";

fn holder(sub: &str) -> String {
    format!("{HOLDER_PREFIX}{sub}")
}

/// The session a message goes to: the context it names (a valid session
/// id) if the caller may see it, else a new one (under the id given, or a
/// fresh one). Returns the session's id and whether it was created here.
pub async fn for_message(
    app: &App,
    identity: &Identity,
    context_id: Option<&str>,
) -> Result<(String, bool), A2aError> {
    if let Some(id) = context_id
        && let Some(record) = app.session_store().session(id).await?
    {
        return usable(identity, &record).map(|()| (id.to_owned(), false));
    }
    let id = context_id.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    match app
        .session_store()
        .create_session(record(app, identity, &id), MAX_CONTEXTS)
        .await
    {
        Ok(()) => Ok((id, true)),
        // Created meanwhile by another message naming it.
        Err(BackendError::Conflict(_)) => match app.session_store().session(&id).await? {
            Some(record) => usable(identity, &record).map(|()| (id, false)),
            None => Err(A2aError::unsupported(format!("context {id} was closed"))),
        },
        Err(BackendError::Limit(..)) => Err(A2aError::from(crate::protocol::RpcError::limit(
            "A2A contexts per identity",
            MAX_CONTEXTS,
        ))),
        Err(e) => Err(e.into_rpc(&id).into()),
    }
}

/// Whether the caller may send to an existing session.
fn usable(identity: &Identity, record: &SessionRecord) -> Result<(), A2aError> {
    if may_see(identity, "", record) {
        Ok(())
    } else {
        Err(A2aError::invalid_params(
            "message.contextId",
            "this context belongs to another caller",
        ))
    }
}

/// A new context session held for `identity`.
fn record(app: &App, identity: &Identity, id: &str) -> SessionRecord {
    let now = now_ms();
    let holder = holder(&identity.sub);
    SessionRecord {
        session_id: id.to_owned(),
        owner: Some(holder.clone()),
        owner_identity: identity.sub.clone(),
        members: vec![holder],
        member_identities: vec![identity.sub.clone()],
        meta: json!({ "a2a": true }),
        version: 0,
        max_members: app.live().limits.max_session_members,
        created_at: now,
        updated_at: now,
        detached_at: None,
        // Never given out: nobody resumes a held context.
        resume_token: uuid::Uuid::new_v4().simple().to_string(),
        invited: Vec::new(),
        open: false,
    }
}

/// The run a task id names, if the caller may see its session; else
/// TaskNotFound (a task of someone else's does not exist for the caller).
pub async fn task_run(
    app: &App,
    identity: &Identity,
    id: &str,
) -> Result<(TaskRef, RunRecord), A2aError> {
    let missing = || A2aError::task_not_found(id);
    let r = TaskRef::parse(id).ok_or_else(missing)?;
    let session = app.session_store().session(&r.session_id).await?;
    if !session.is_some_and(|s| may_see(identity, "", &s)) {
        return Err(missing());
    }
    match app.run_store().run(&r.session_id).await? {
        Some(run) if run.run_id == r.run_id => Ok((r, run)),
        _ => Err(missing()),
    }
}

/// Since when a held context has been idle: `None` while a task runs.
fn idle_since(session: &SessionRecord, run: Option<&RunRecord>) -> Option<u64> {
    match run {
        Some(run) if run.status == RunStatus::Running => None,
        Some(run) => Some(
            session
                .created_at
                .max(run.started_at)
                .max(run.finished_at.unwrap_or(0)),
        ),
        None => Some(session.created_at),
    }
}

/// Close held contexts idle for longer than [`RETENTION`].
pub async fn sweep(app: &App) {
    let sessions = match app.session_store().sessions().await {
        Ok(sessions) => sessions,
        Err(e) => {
            tracing::debug!(error = %e, "listing sessions for the A2A context sweep");
            return;
        }
    };
    let cutoff = now_ms().saturating_sub(RETENTION.as_millis() as u64);
    for session in sessions {
        let held = session
            .owner
            .as_deref()
            .is_some_and(|o| o.starts_with(HOLDER_PREFIX));
        if !held {
            continue;
        }
        let Ok(run) = app.run_store().run(&session.session_id).await else {
            continue;
        };
        if idle_since(&session, run.as_ref()).is_some_and(|t| t <= cutoff) {
            // Another instance sweeping at the same time may close it first.
            if let Err(e) = end(app, &session.session_id, "expired").await {
                tracing::debug!(session = %session.session_id, error = %e, "closing an expired A2A context");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionRecord {
        SessionRecord {
            session_id: "ctx".into(),
            owner: Some(holder("writer")),
            owner_identity: "writer".into(),
            members: vec![holder("writer")],
            member_identities: vec!["writer".into()],
            meta: json!({}),
            version: 0,
            max_members: 10,
            created_at: 100,
            updated_at: 100,
            detached_at: None,
            resume_token: String::new(),
            invited: Vec::new(),
            open: false,
        }
    }

    fn run(status: RunStatus, finished_at: Option<u64>) -> RunRecord {
        RunRecord {
            run_id: "r".into(),
            session_id: "ctx".into(),
            agent_id: String::new(),
            instance_id: String::new(),
            generation: 0,
            caller: "writer".into(),
            task: "t".into(),
            status,
            result: None,
            error: None,
            started_at: 200,
            finished_at,
            deadline: None,
            agent_identity: String::new(),
            attached: 0,
        }
    }

    #[test]
    fn a_context_idles_from_its_latest_task_end() {
        let s = session();
        assert_eq!(idle_since(&s, None), Some(100));
        assert_eq!(idle_since(&s, Some(&run(RunStatus::Running, None))), None);
        assert_eq!(
            idle_since(&s, Some(&run(RunStatus::Completed, Some(300)))),
            Some(300)
        );
        assert_eq!(
            idle_since(&s, Some(&run(RunStatus::Cancelled, None))),
            Some(200)
        );
    }
}
