//! `GetTask`, `ListTasks` and `CancelTask`, answered from the backend
//! alone (run records and session logs), so from any instance.
//!
//! A caller sees the tasks of the sessions it may see (its own contexts,
//! sessions it is a member of; admins every one) — others do not exist for
//! it (TaskNotFound). `ListTasks` orders them newest status first, pages
//! with an opaque cursor (the position after the page's last task, so it
//! stays valid as tasks change) and reads each listed task's log only
//! when asked for its artifacts or history. It looks at every session the
//! backend holds, so its cost grows with them.

use super::context::task_run;
use super::errors::A2aError;
use super::send::history_length;
use super::stream::read_log;
use super::tasks::{Task, TaskRef, state_of};
use crate::app::App;
use crate::auth::Identity;
use crate::backend::{RunRecord, RunStatus};
use crate::protocol::names::session_channel;
use crate::services::sessions::may_see;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Tasks per `ListTasks` page: the default and the most.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 100;

/// The task `r` as the backend has it now: its run record and the fold
/// of its log. TaskNotFound when the record is not that run's any more.
pub async fn fold(app: &App, r: &TaskRef) -> Result<(Task, RunRecord), A2aError> {
    let run = app
        .run_store()
        .run(&r.session_id)
        .await?
        .filter(|run| run.run_id == r.run_id)
        .ok_or_else(|| A2aError::task_not_found(&r.id()))?;
    Ok((fold_run(app, r, &run).await?, run))
}

async fn fold_run(app: &App, r: &TaskRef, run: &RunRecord) -> Result<Task, A2aError> {
    let mut task = Task::new(r.clone());
    for (offset, method, params) in read_log(app, &session_channel(&r.session_id), 0).await? {
        task.apply(offset, &method, &params);
    }
    if run.status != RunStatus::Running {
        task.finish(run);
    }
    Ok(task)
}

/// The `id` member of `params`.
pub fn task_id(params: &Value) -> Result<&str, A2aError> {
    params
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| A2aError::invalid_params("id", "required: the task's id"))
}

pub async fn get_task(app: &App, identity: &Identity, params: &Value) -> Result<Value, A2aError> {
    let id = task_id(params)?;
    let history = history_length(params, "historyLength")?;
    let (r, run) = task_run(app, identity, id).await?;
    let task = fold_run(app, &r, &run).await?;
    Ok(task.to_json(&run, history, true))
}

pub async fn cancel_task(
    app: &App,
    identity: &Identity,
    params: &Value,
) -> Result<Value, A2aError> {
    let id = task_id(params)?;
    let (r, run) = task_run(app, identity, id).await?;
    if run.status != RunStatus::Running {
        return Err(A2aError::not_cancelable(format!(
            "task {id} is {}",
            state_of(run.status)
        )));
    }
    if run.caller != identity.sub && !identity.is_admin() {
        return Err(A2aError::not_cancelable(
            "only the caller that sent the task (or an admin) may cancel it",
        ));
    }
    let done = crate::services::runs::stop(app, run, &identity.sub)
        .await?
        .ok_or_else(|| A2aError::not_cancelable(format!("task {id} already ended")))?;
    let task = fold_run(app, &r, &done).await?;
    Ok(task.to_json(&done, None, true))
}

/// Where a listed task sorts: its status time, then its id (newest first).
type SortKey = (u64, String);

fn status_time(run: &RunRecord) -> u64 {
    run.finished_at.unwrap_or(run.started_at)
}

fn encode_cursor(key: &SortKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", key.0, key.1))
}

fn decode_cursor(token: &str) -> Option<SortKey> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let (time, id) = raw.split_once(':')?;
    Some((time.parse().ok()?, id.to_owned()))
}

/// The `TaskState` a `status` filter names (its name, or its number).
fn state_filter(value: &Value) -> Result<Option<&'static str>, A2aError> {
    const STATES: [&str; 9] = [
        "TASK_STATE_UNSPECIFIED",
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
        "TASK_STATE_COMPLETED",
        "TASK_STATE_FAILED",
        "TASK_STATE_CANCELED",
        "TASK_STATE_INPUT_REQUIRED",
        "TASK_STATE_REJECTED",
        "TASK_STATE_AUTH_REQUIRED",
    ];
    let found = match value {
        Value::Null => return Ok(None),
        Value::String(s) => STATES.iter().position(|n| n == s),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n < STATES.len()),
        _ => None,
    };
    match found {
        Some(0) => Ok(None),
        Some(i) => Ok(Some(STATES[i])),
        None => Err(A2aError::invalid_params("status", "a TaskState")),
    }
}

pub async fn list_tasks(app: &App, identity: &Identity, params: &Value) -> Result<Value, A2aError> {
    let context = match params.get("contextId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(A2aError::invalid_params("contextId", "a string")),
    };
    let state = state_filter(params.get("status").unwrap_or(&Value::Null))?;
    let page_size = match params.get("pageSize") {
        None | Some(Value::Null) => PAGE_DEFAULT,
        Some(n) => n
            .as_u64()
            .filter(|n| (1..=PAGE_MAX as u64).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| A2aError::invalid_params("pageSize", "between 1 and 100"))?,
    };
    let cursor = match params.get("pageToken").and_then(Value::as_str) {
        None | Some("") => None,
        Some(token) => Some(decode_cursor(token).ok_or_else(|| {
            A2aError::invalid_params("pageToken", "not a token this server gave")
        })?),
    };
    let after = match params.get("statusTimestampAfter") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.timestamp_millis().max(0) as u64)
                .map_err(|_| {
                    A2aError::invalid_params("statusTimestampAfter", "an RFC 3339 time")
                })?,
        ),
        Some(_) => {
            return Err(A2aError::invalid_params(
                "statusTimestampAfter",
                "an RFC 3339 time",
            ));
        }
    };
    let history = history_length(params, "historyLength")?;
    let artifacts = params.get("includeArtifacts") == Some(&Value::Bool(true));

    let mut found: Vec<(SortKey, TaskRef, RunRecord)> = Vec::new();
    for session in app.session_store().sessions().await? {
        if context.is_some_and(|c| c != session.session_id) || !may_see(identity, "", &session) {
            continue;
        }
        let Some(run) = app.run_store().run(&session.session_id).await? else {
            continue;
        };
        if state.is_some_and(|s| s != state_of(run.status))
            || after.is_some_and(|t| status_time(&run) < t)
        {
            continue;
        }
        let r = TaskRef {
            session_id: session.session_id.clone(),
            run_id: run.run_id.clone(),
        };
        found.push(((status_time(&run), r.id()), r, run));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    let total = found.len();
    let start = cursor.map_or(0, |c| {
        found.iter().position(|(key, ..)| *key < c).unwrap_or(total)
    });
    let end = (start + page_size).min(total);
    let next = if end < total {
        encode_cursor(&found[end - 1].0)
    } else {
        String::new()
    };
    let mut tasks = Vec::with_capacity(end - start);
    for (_, r, run) in &found[start..end] {
        let task = if artifacts || history.is_some_and(|h| h > 0) {
            fold_run(app, r, run).await?
        } else {
            Task::new(r.clone())
        };
        tasks.push(task.to_json(run, Some(history.unwrap_or(0)), artifacts));
    }
    Ok(json!({
        "tasks": tasks,
        "nextPageToken": next,
        "pageSize": page_size,
        "totalSize": total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let key = (1_800_000_000_000, "ctx~r1".to_owned());
        assert_eq!(decode_cursor(&encode_cursor(&key)), Some(key));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("x:y")), None);
    }

    #[test]
    fn states_filter_by_name_or_number() {
        assert_eq!(
            state_filter(&json!("TASK_STATE_COMPLETED")).ok(),
            Some(Some("TASK_STATE_COMPLETED"))
        );
        assert_eq!(
            state_filter(&json!(3)).ok(),
            Some(Some("TASK_STATE_COMPLETED"))
        );
        assert_eq!(
            state_filter(&json!("TASK_STATE_UNSPECIFIED")).ok(),
            Some(None)
        );
        assert_eq!(state_filter(&Value::Null).ok(), Some(None));
        assert!(state_filter(&json!("completed")).is_err());
    }
}
