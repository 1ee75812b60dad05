//! Tasks as A2A sees them, built only from what the backend keeps, so any
//! instance answers for any task: the run record ([`RunRecord`]: state,
//! result, error, times) and the session's log — the user's message
//! (logged as the `session.event` [`MESSAGE_EVENT`] when it was sent) and
//! the agent's `agent.event`s of the run.
//!
//! A task is one run: its id is `<sessionId>~<runId>` ([`TaskRef`]), its
//! context the session. [`Task::apply`] folds one log entry into the task
//! and returns the stream event it makes, so a task read with `GetTask`
//! and one followed over SSE are the same fold. The agent's events map as:
//!
//! | `agent.event` type | A2A |
//! |---|---|
//! | `token`, `delta`, `text` (data a string, or `{text}` / `{delta}` / `{content}`) | a chunk of artifact `output` (`append` after the first) |
//! | `message` (the same forms, or `{parts}`) | status `WORKING` with an agent message, kept in the history |
//! | `artifact` (`{artifactId?, name?, description?, parts? \| text? \| data?, append?, lastChunk?}`) | that artifact update |
//! | anything else | status `WORKING` with an agent message of one data part `{type, data}` (not kept in the history) |
//!
//! The run's end: a result becomes artifact `result` (a text part when it
//! is a string or has a string `output` / `content` / `text`, else a data
//! part, or its own `parts`), then the final status — `COMPLETED`,
//! `FAILED` (with the error as the agent's message) or `CANCELED`.

use crate::backend::{RunRecord, RunStatus};
use serde_json::{Map, Value, json};

/// The session event a user's message is logged as (data: `{taskId,
/// message}`).
pub const MESSAGE_EVENT: &str = "a2a.message";
/// What joins a task id's session and run.
const SEPARATOR: char = '~';

/// Which run a task id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub session_id: String,
    pub run_id: String,
}

impl TaskRef {
    /// The task's id: `<sessionId>~<runId>`.
    pub fn id(&self) -> String {
        format!("{}{SEPARATOR}{}", self.session_id, self.run_id)
    }

    /// The run a task id names; `None` for anything not shaped like one.
    pub fn parse(id: &str) -> Option<Self> {
        let (session_id, run_id) = id.rsplit_once(SEPARATOR)?;
        let run_ok = !run_id.is_empty()
            && run_id.len() <= 64
            && run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !run_ok || crate::services::sessions::validate_id(session_id).is_err() {
            return None;
        }
        Some(Self {
            session_id: session_id.to_owned(),
            run_id: run_id.to_owned(),
        })
    }
}

/// An RFC 3339 timestamp (UTC, milliseconds) of a time in ms.
pub fn timestamp(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The A2A state of a run.
pub fn state_of(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Running => "TASK_STATE_WORKING",
        RunStatus::Completed => "TASK_STATE_COMPLETED",
        RunStatus::Error => "TASK_STATE_FAILED",
        RunStatus::Cancelled => "TASK_STATE_CANCELED",
    }
}

/// The text a piece of event data carries: a string, or its `text`,
/// `delta` or `content` string.
fn text_of(data: &Value) -> Option<&str> {
    if let Some(s) = data.as_str() {
        return Some(s);
    }
    ["text", "delta", "content"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str))
}

/// Parts given as an A2A `parts` array (objects only).
fn given_parts(data: &Value) -> Option<Vec<Value>> {
    let parts = data.get("parts")?.as_array()?;
    let parts: Vec<Value> = parts.iter().filter(|p| p.is_object()).cloned().collect();
    (!parts.is_empty()).then_some(parts)
}

/// The parts of a run's result (see the module docs).
pub fn result_parts(result: &Value) -> Vec<Value> {
    if let Some(parts) = given_parts(result) {
        return parts;
    }
    let text = result.as_str().or_else(|| {
        ["output", "content", "text"]
            .iter()
            .find_map(|k| result.get(*k).and_then(Value::as_str))
    });
    match text {
        Some(text) => vec![json!({ "text": text })],
        None => vec![json!({ "data": result })],
    }
}

/// A task being put together from its record and its log.
#[derive(Debug, Clone)]
pub struct Task {
    pub r: TaskRef,
    history: Vec<Value>,
    /// In the order they first appeared.
    artifacts: Vec<Value>,
    /// The agent's latest status message while it works.
    status_message: Option<Value>,
    /// The newest log offset folded in.
    pub offset: u64,
}

impl Task {
    pub fn new(r: TaskRef) -> Self {
        Self {
            r,
            history: Vec::new(),
            artifacts: Vec::new(),
            status_message: None,
            offset: 0,
        }
    }

    fn agent_message(&self, offset: u64, parts: Vec<Value>) -> Value {
        json!({
            "messageId": format!("{}-{offset}", self.r.run_id),
            "contextId": self.r.session_id,
            "taskId": self.r.id(),
            "role": "ROLE_AGENT",
            "parts": parts,
        })
    }

    fn status_update(&self, state: &str, message: Option<&Value>, at_ms: u64) -> Value {
        let mut status = json!({ "state": state, "timestamp": timestamp(at_ms) });
        if let Some(message) = message {
            status["message"] = message.clone();
        }
        json!({ "statusUpdate": {
            "taskId": self.r.id(),
            "contextId": self.r.session_id,
            "status": status,
        }})
    }

    /// Fold in `artifact` (append its parts to the one with its id when
    /// `append`); the stream's artifact update.
    fn put_artifact(&mut self, artifact: Value, append: bool, last_chunk: bool) -> Value {
        let id = artifact["artifactId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match self
            .artifacts
            .iter_mut()
            .find(|a| a["artifactId"] == id.as_str())
        {
            Some(existing) if append => {
                if let (Some(have), Some(new)) = (
                    existing["parts"].as_array_mut(),
                    artifact["parts"].as_array(),
                ) {
                    have.extend(new.iter().cloned());
                }
            }
            Some(existing) => *existing = artifact.clone(),
            None => self.artifacts.push(artifact.clone()),
        }
        let mut update = json!({
            "taskId": self.r.id(),
            "contextId": self.r.session_id,
            "artifact": artifact,
        });
        if append {
            update["append"] = json!(true);
        }
        if last_chunk {
            update["lastChunk"] = json!(true);
        }
        json!({ "artifactUpdate": update })
    }

    /// Fold one entry of the session's log (a notification's method and
    /// params, numbered `offset`) into the task; the stream event it
    /// makes, if it is one of this task's.
    pub fn apply(&mut self, offset: u64, method: &str, params: &Value) -> Option<Value> {
        if offset <= self.offset {
            return None;
        }
        self.offset = offset;
        match method {
            "session.event" if params["event"] == MESSAGE_EVENT => {
                let data = &params["data"];
                if data["taskId"] == self.r.id().as_str() && data["message"].is_object() {
                    self.history.push(data["message"].clone());
                }
                None
            }
            "agent.event" if params["runId"] == self.r.run_id.as_str() => {
                let at = params["timestamp"].as_u64().unwrap_or_default();
                self.agent_event(
                    offset,
                    params["type"].as_str().unwrap_or(""),
                    &params["data"],
                    at,
                )
            }
            _ => None,
        }
    }

    fn agent_event(&mut self, offset: u64, kind: &str, data: &Value, at: u64) -> Option<Value> {
        match kind {
            "token" | "delta" | "text" => {
                let text = text_of(data)?;
                let append = self.artifacts.iter().any(|a| a["artifactId"] == "output");
                let chunk = json!({
                    "artifactId": "output", "name": "output", "parts": [{ "text": text }],
                });
                Some(self.put_artifact(chunk, append, false))
            }
            "message" => {
                let parts = given_parts(data)
                    .or_else(|| text_of(data).map(|t| vec![json!({ "text": t })]))?;
                let message = self.agent_message(offset, parts);
                self.history.push(message.clone());
                self.status_message = Some(message.clone());
                Some(self.status_update("TASK_STATE_WORKING", Some(&message), at))
            }
            "artifact" => {
                let parts = given_parts(data)
                    .or_else(|| data["text"].as_str().map(|t| vec![json!({ "text": t })]))
                    .or_else(|| data.get("data").map(|d| vec![json!({ "data": d })]))?;
                let id = data["artifactId"]
                    .as_str()
                    .map_or_else(|| format!("artifact-{offset}"), str::to_owned);
                let mut artifact = Map::new();
                artifact.insert("artifactId".into(), json!(id));
                for key in ["name", "description", "metadata"] {
                    if let Some(v) = data.get(key).filter(|v| !v.is_null()) {
                        artifact.insert(key.into(), v.clone());
                    }
                }
                artifact.insert("parts".into(), json!(parts));
                let append = data["append"] == true;
                let last = data["lastChunk"] == true;
                Some(self.put_artifact(Value::Object(artifact), append, last))
            }
            _ => {
                let part = json!({ "data": { "type": kind, "data": data } });
                let mut message = self.agent_message(offset, vec![part]);
                message["metadata"] = json!({ "eventType": kind });
                Some(self.status_update("TASK_STATE_WORKING", Some(&message), at))
            }
        }
    }

    /// The status message of `run`'s state: the error of a failed or
    /// cancelled run, else the agent's latest message while it works.
    fn final_message(&self, run: &RunRecord) -> Option<Value> {
        match run.status {
            RunStatus::Running => self.status_message.clone(),
            RunStatus::Completed => None,
            RunStatus::Error | RunStatus::Cancelled => {
                let error = run.error.clone().unwrap_or(Value::Null);
                let text = error["message"].as_str().unwrap_or(match run.status {
                    RunStatus::Error => "the run failed",
                    _ => "cancelled",
                });
                let mut parts = vec![json!({ "text": text })];
                if error.is_object() {
                    parts.push(json!({ "data": error }));
                }
                let offset = self.offset.saturating_add(1);
                Some(self.agent_message(offset, parts))
            }
        }
    }

    /// Fold in the end of `run` (a finished record): its result artifact.
    /// The stream events of its end: the result, then the final status.
    pub fn finish(&mut self, run: &RunRecord) -> Vec<Value> {
        let mut out = Vec::new();
        if run.status == RunStatus::Completed
            && let Some(result) = run.result.as_ref().filter(|r| !r.is_null())
        {
            let artifact = json!({
                "artifactId": "result", "name": "result", "parts": result_parts(result),
            });
            out.push(self.put_artifact(artifact, false, true));
        }
        let at = run.finished_at.unwrap_or(run.started_at);
        let message = self.final_message(run);
        out.push(self.status_update(state_of(run.status), message.as_ref(), at));
        out
    }

    /// Drop what a stream no longer needs once its snapshot is sent: the
    /// parts and the history (artifact ids stay, for `append`), so a long
    /// stream holds no more than its artifacts' names.
    pub fn shed(&mut self) {
        for artifact in &mut self.artifacts {
            artifact["parts"] = json!([]);
        }
        self.history.clear();
    }

    /// The stream's last event when the run's record is gone (its context
    /// was closed): canceled.
    pub fn closed(&self) -> Value {
        let message = self.agent_message(
            self.offset.saturating_add(1),
            vec![json!({ "text": "the context was closed" })],
        );
        self.status_update(
            "TASK_STATE_CANCELED",
            Some(&message),
            crate::protocol::now_ms(),
        )
    }

    /// The A2A `Task` of `run` (whose end must have been folded in with
    /// [`Task::finish`] if it ended), with the newest `history_length`
    /// messages (all when `None`) and, when asked, the artifacts.
    pub fn to_json(
        &self,
        run: &RunRecord,
        history_length: Option<usize>,
        artifacts: bool,
    ) -> Value {
        let at = run.finished_at.unwrap_or(run.started_at);
        let mut status = json!({ "state": state_of(run.status), "timestamp": timestamp(at) });
        if let Some(message) = self.final_message(run) {
            status["message"] = message;
        }
        let mut task = json!({
            "id": self.r.id(),
            "contextId": self.r.session_id,
            "status": status,
        });
        let keep = history_length.unwrap_or(usize::MAX).min(self.history.len());
        if keep > 0 {
            task["history"] = json!(self.history[self.history.len() - keep..]);
        }
        if artifacts && !self.artifacts.is_empty() {
            task["artifacts"] = json!(self.artifacts);
        }
        let mut metadata = json!({ "runId": run.run_id });
        if !run.agent_id.is_empty() {
            metadata["agentId"] = json!(run.agent_id);
        }
        task["metadata"] = metadata;
        task
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus, result: Option<Value>) -> RunRecord {
        RunRecord {
            run_id: "r1".into(),
            session_id: "ctx".into(),
            agent_id: "a".into(),
            instance_id: "i".into(),
            generation: 1,
            caller: "writer".into(),
            task: "hi".into(),
            status,
            result,
            error: None,
            started_at: 1_800_000_000_000,
            finished_at: Some(1_800_000_000_500),
            deadline: None,
            agent_identity: String::new(),
            attached: 0,
        }
    }

    fn event(kind: &str, data: Value) -> Value {
        json!({ "sessionId": "ctx", "runId": "r1", "type": kind, "data": data, "timestamp": 1 })
    }

    #[test]
    fn task_ids_name_the_session_and_the_run() {
        let r = TaskRef::parse("ctx:1.a~0f3a").expect("parsed");
        assert_eq!(
            (r.session_id.as_str(), r.run_id.as_str()),
            ("ctx:1.a", "0f3a")
        );
        assert_eq!(r.id(), "ctx:1.a~0f3a");
        for bad in ["", "~", "ctx~", "~r", "no-separator", "bad id~r", "ctx~r/1"] {
            assert_eq!(TaskRef::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
    }

    #[test]
    fn the_log_folds_into_the_task_and_its_stream() {
        let r = TaskRef {
            session_id: "ctx".into(),
            run_id: "r1".into(),
        };
        let mut task = Task::new(r.clone());
        let user = json!({ "messageId": "m1", "role": "ROLE_USER", "parts": [{ "text": "hi" }] });
        let logged =
            json!({ "event": MESSAGE_EVENT, "data": { "taskId": r.id(), "message": user } });
        assert_eq!(task.apply(1, "session.event", &logged), None);
        let first = task
            .apply(2, "agent.event", &event("token", json!("a")))
            .unwrap();
        assert_eq!(first["artifactUpdate"]["artifact"]["artifactId"], "output");
        assert!(first["artifactUpdate"].get("append").is_none(), "{first}");
        let next = task
            .apply(3, "agent.event", &event("token", json!({ "text": "b" })))
            .unwrap();
        assert_eq!(next["artifactUpdate"]["append"], true);
        // Another run's event, and one already folded, change nothing.
        let mut other = event("token", json!("x"));
        other["runId"] = json!("r0");
        assert_eq!(task.apply(4, "agent.event", &other), None);
        assert_eq!(
            task.apply(3, "agent.event", &event("token", json!("y"))),
            None
        );
        let said = task
            .apply(5, "agent.event", &event("message", json!("thinking")))
            .unwrap();
        assert_eq!(
            said["statusUpdate"]["status"]["state"],
            "TASK_STATE_WORKING"
        );
        assert_eq!(
            said["statusUpdate"]["status"]["message"]["role"],
            "ROLE_AGENT"
        );
        let tool = task
            .apply(6, "agent.event", &event("tool", json!({ "name": "grep" })))
            .unwrap();
        assert_eq!(
            tool["statusUpdate"]["status"]["message"]["parts"][0]["data"],
            json!({ "type": "tool", "data": { "name": "grep" } })
        );

        let done = run(RunStatus::Completed, Some(json!({ "output": "ab" })));
        let end = task.finish(&done);
        assert_eq!(end.len(), 2);
        assert_eq!(
            end[0]["artifactUpdate"]["artifact"]["parts"],
            json!([{ "text": "ab" }])
        );
        assert_eq!(end[0]["artifactUpdate"]["lastChunk"], true);
        assert_eq!(
            end[1]["statusUpdate"]["status"]["state"],
            "TASK_STATE_COMPLETED"
        );

        let json = task.to_json(&done, None, true);
        assert_eq!(json["id"], "ctx~r1");
        assert_eq!(json["contextId"], "ctx");
        assert_eq!(json["status"]["timestamp"], "2027-01-15T08:00:00.500Z");
        assert_eq!(
            json["artifacts"][0]["parts"],
            json!([{ "text": "a" }, { "text": "b" }])
        );
        assert_eq!(json["artifacts"][1]["artifactId"], "result");
        assert_eq!(json["history"].as_array().unwrap().len(), 2, "{json}");
        assert_eq!(json["history"][0]["messageId"], "m1");
        let short = task.to_json(&done, Some(1), false);
        assert_eq!(short["history"][0]["role"], "ROLE_AGENT");
        assert!(short.get("artifacts").is_none());
        assert!(task.to_json(&done, Some(0), false).get("history").is_none());
    }

    #[test]
    fn failures_and_cancels_say_why() {
        let mut failed = run(RunStatus::Error, None);
        failed.error = Some(json!({ "code": -32000, "message": "boom" }));
        let mut task = Task::new(TaskRef {
            session_id: "ctx".into(),
            run_id: "r1".into(),
        });
        let end = task.finish(&failed);
        assert_eq!(end.len(), 1);
        let status = &end[0]["statusUpdate"]["status"];
        assert_eq!(status["state"], "TASK_STATE_FAILED");
        assert_eq!(status["message"]["parts"][0]["text"], "boom");
        let cancelled = run(RunStatus::Cancelled, None);
        assert_eq!(
            task.to_json(&cancelled, None, true)["status"]["state"],
            "TASK_STATE_CANCELED"
        );
    }

    #[test]
    fn results_become_parts() {
        assert_eq!(result_parts(&json!("x")), vec![json!({ "text": "x" })]);
        assert_eq!(
            result_parts(&json!({ "content": "y" })),
            vec![json!({ "text": "y" })]
        );
        assert_eq!(
            result_parts(&json!({ "n": 1 })),
            vec![json!({ "data": { "n": 1 } })]
        );
        let own = json!({ "parts": [{ "url": "https://x/y.png", "mediaType": "image/png" }] });
        assert_eq!(result_parts(&own), vec![own["parts"][0].clone()]);
    }
}
