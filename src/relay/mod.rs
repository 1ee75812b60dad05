//! The call relay: one instance asks a node connected to another instance
//! (or to itself) to run a method, and gets the answer back.
//!
//! ```text
//!  caller's instance                         node's instance
//!  Relay::call ── Call{callId, replyTo} ──▶  (send_to_conn: owner lookup
//!                                             + publish, one round trip)
//!                                            serve: take a concurrency slot,
//!                                            send the node a srv-N request
//!              ◀── Progress{callId, data} ── invoke.progress from the node
//!              ◀── Reply{callId, outcome} ── the node's answer (or error)
//!  caller gone / timed out
//!              ── Cancel{callId} ──────────▶ node gets invoke.cancel
//! ```
//!
//! Replies and progress go to the caller's instance inbox
//! ([`Bus::send_to_instance`]). The serving instance enforces the
//! timeout and answers -32006 itself; the caller waits a little longer, and
//! ends the call with -32005 `{reason: "instance_lost"}` as soon as the
//! serving instance's record goes stale (its heartbeat stopped for
//! `node_ttl`), so a serving instance dying mid-call never leaves the
//! caller waiting out the timeout. (An instance merely absent from the
//! records, as after Redis restarted empty, is taken for dead only after
//! a further `node_ttl`.)
//! A node that is at its `maxConcurrency` refuses with a *busy*
//! error, on which the caller tries the next candidate.
//!
//! [`Bus::send_to_instance`]: crate::backend::Bus::send_to_instance

use crate::agents::defs::Redefinition;
use crate::agents::runs::{RunHooks, RunTicket, Target};
use crate::agents::{LocalAgents, Refusal};
use crate::backend::{Backend, Envelope, Inbox};
use crate::hub::Hub;
use crate::protocol::{RpcError, error, frame};

mod call_error;
mod liveness;
pub use call_error::{CallError, INSTANCE_LOST};
use liveness::Liveness;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Extra time the caller waits beyond the call's own timeout.
const GRACE: Duration = Duration::from_secs(2);
/// Progress updates buffered per call before they are dropped.
const PROGRESS_BUFFER: usize = 1024;

/// Key of the progress update a run's serving instance sends first: the
/// agent that accepted the run.
pub const ACCEPTED: &str = "$accepted";

/// A call for a node, to the instance holding its connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallMsg {
    call_id: String,
    reply_to: String,
    conn_id: String,
    agent_id: Option<String>,
    method: String,
    /// Passed through as written: the serving instance copies it into the
    /// node's request without building it into a tree.
    params: Box<RawValue>,
    timeout_ms: u64,
    run: Option<RunTicket>,
    /// W3C trace context of the caller's span (OpenTelemetry on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<HashMap<String, String>>,
}

/// Messages between instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
enum RelayMsg {
    Call(CallMsg),
    Reply(ReplyMsg),
    #[serde(rename_all = "camelCase")]
    Progress {
        call_id: String,
        data: Value,
    },
    #[serde(rename_all = "camelCase")]
    Cancel {
        call_id: String,
    },
    /// An agent's definition changed: re-limit it if it is here.
    Redefine(Redefinition),
}

/// A call's answer, to the caller's instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplyMsg {
    call_id: String,
    result: Option<Value>,
    error: Option<RpcError>,
    /// The agent refused at its `maxConcurrency`: the caller tries the
    /// next candidate (the error says so to clients too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    busy: bool,
    /// The node was not connected (or its agent not registered) on the
    /// serving instance: nothing was sent, the caller may route again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
}

/// A relay message from its text. The two messages of every routed call
/// are read straight into their own type once the tag is known (a pass
/// that only finds `t`); the derived reading of a tagged enum would first
/// copy the whole message into an intermediate tree. The wire format is
/// the derived one either way.
fn decode(body: &str) -> serde_json::Result<RelayMsg> {
    // `encode` writes the tag first: the two messages of every routed
    // call are read in one pass (their structs ignore the tag).
    if body.starts_with(r#"{"t":"call","#) {
        return serde_json::from_str(body).map(RelayMsg::Call);
    }
    if body.starts_with(r#"{"t":"reply","#) {
        return serde_json::from_str(body).map(RelayMsg::Reply);
    }
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(borrow)]
        t: std::borrow::Cow<'a, str>,
    }
    match serde_json::from_str::<Tag>(body)?.t.as_ref() {
        "call" => serde_json::from_str(body).map(RelayMsg::Call),
        "reply" => serde_json::from_str(body).map(RelayMsg::Reply),
        _ => serde_json::from_str(body),
    }
}

/// One call's request.
pub struct CallSpec<'a> {
    pub method: &'a str,
    /// Serialised when the spec is made; the relay passes it through as
    /// written.
    pub params: Box<RawValue>,
    pub timeout: Duration,
    /// Where `invoke.progress` data goes, if the caller wants it.
    pub progress: Option<mpsc::Sender<Value>>,
    /// For an agent run: the run this call carries.
    pub run: Option<RunTicket>,
    /// The call id (an agent run's id, so it can be cancelled by it).
    pub call_id: Option<String>,
}

impl<'a> CallSpec<'a> {
    /// A plain request: no progress, not a run.
    pub fn new(method: &'a str, params: &impl Serialize, timeout: Duration) -> Self {
        Self {
            method,
            params: raw(params),
            timeout,
            progress: None,
            run: None,
            call_id: None,
        }
    }

    /// Forward the node's `invoke.progress` to `sink`.
    pub fn with_progress(mut self, sink: Option<mpsc::Sender<Value>>) -> Self {
        self.progress = sink;
        self
    }

    /// The call carries run `ticket` (and is cancelled by its run id).
    pub fn for_run(mut self, ticket: RunTicket) -> Self {
        self.call_id = Some(ticket.run_id.clone());
        self.run = Some(ticket);
        self
    }
}

struct Waiter {
    reply: oneshot::Sender<Result<Value, CallError>>,
    progress: Option<mpsc::Sender<Value>>,
}

struct Serving {
    conn: crate::conn::ConnHandle,
    request_id: String,
    run: Option<RunTicket>,
}

struct Inner {
    instance_id: String,
    backend: Arc<dyn Backend>,
    hub: Hub,
    agents: LocalAgents,
    waiting: Mutex<HashMap<String, Waiter>>,
    serving: Mutex<HashMap<String, Serving>>,
    hooks: std::sync::OnceLock<Arc<dyn RunHooks>>,
    /// Which instances are alive.
    liveness: Liveness,
}

/// The call relay of this instance; cheap to clone.
#[derive(Clone)]
pub struct Relay(Arc<Inner>);

impl Relay {
    /// `grace`: how long an instance must be missing from the live list
    /// before calls waiting on it end (`node_ttl`).
    pub fn new(
        instance_id: String,
        backend: Arc<dyn Backend>,
        hub: Hub,
        agents: LocalAgents,
        grace: Duration,
    ) -> Self {
        Self(Arc::new(Inner {
            instance_id,
            backend,
            hub,
            agents,
            waiting: Mutex::new(HashMap::new()),
            serving: Mutex::new(HashMap::new()),
            hooks: std::sync::OnceLock::new(),
            liveness: Liveness::new(grace),
        }))
    }

    /// The live instances (and the generation each runs as), as the last
    /// heartbeat saw them, and those whose record went stale (see
    /// [`Liveness::set_live`]).
    pub fn set_live(
        &self,
        instances: impl IntoIterator<Item = (String, u64)>,
        stale: impl IntoIterator<Item = String>,
        resync: Option<u64>,
    ) {
        self.0.liveness.set_live(instances, stale, resync);
    }

    /// Whether any call waits on another instance's liveness (see
    /// [`Liveness::watched`]).
    pub fn liveness_watched(&self) -> bool {
        self.0.liveness.watched()
    }

    /// Whether `instance_id` running as `generation` is taken for dead
    /// (see [`Liveness::dead`]).
    pub fn instance_dead(&self, instance_id: &str, generation: u64) -> bool {
        self.0.liveness.dead(instance_id, generation)
    }

    /// Install the agent-run hooks (once, at start-up).
    pub fn set_run_hooks(&self, hooks: Arc<dyn RunHooks>) {
        let _ = self.0.hooks.set(hooks);
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Waiter>> {
        self.0.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn serving(&self) -> MutexGuard<'_, HashMap<String, Serving>> {
        self.0.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Call `spec.method` on the node at `target` and wait for its answer.
    pub async fn call(&self, target: &Target, spec: CallSpec<'_>) -> Result<Value, CallError> {
        // On an instance already dead (or restarted since the registry was
        // read): gone, not lost mid-call; the caller reads it again.
        if self.0.liveness.dead(&target.instance_id, target.generation) {
            return Err(CallError::Gone(format!(
                "node {} was on instance {}, which is gone",
                target.conn_id, target.instance_id
            )));
        }
        let call_id = spec
            .call_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let (reply, rx) = oneshot::channel();
        self.waiting().insert(
            call_id.clone(),
            Waiter {
                reply,
                progress: spec.progress,
            },
        );
        let mut guard = Pending {
            relay: self.clone(),
            call_id: call_id.clone(),
            instance_id: target.instance_id.clone(),
            answered: false,
        };
        let message = RelayMsg::Call(CallMsg {
            call_id: call_id.clone(),
            reply_to: self.0.instance_id.clone(),
            conn_id: target.conn_id.clone(),
            agent_id: target.agent_id.clone(),
            method: spec.method.to_owned(),
            params: spec.params,
            timeout_ms: spec.timeout.as_millis() as u64,
            run: spec.run,
            trace: crate::otel::inject(),
        });
        let envelope = Envelope::Relay {
            conn_id: target.conn_id.clone(),
            body: encode(&message),
        };
        if !self.0.backend.send_to_conn(envelope).await? {
            guard.answered = true;
            return Err(CallError::Gone(format!(
                "node {} is not connected",
                target.conn_id
            )));
        }
        let answer = tokio::time::timeout(spec.timeout + GRACE, rx);
        let outcome = tokio::select! {
            answer = answer => match answer {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(CallError::Gone("the relay stopped".into())),
                Err(_) => Err(CallError::Timeout(format!(
                    "no answer within {} ms",
                    spec.timeout.as_millis()
                ))),
            },
            () = self.0.liveness.gone(target) => Err(CallError::InstanceLost {
                instance_id: target.instance_id.clone(),
                conn_id: target.conn_id.clone(),
            }),
        };
        guard.answered = !matches!(outcome, Err(CallError::Timeout(_)));
        outcome
    }

    /// Resolves once `target`'s instance is taken for dead (or restarted).
    pub async fn instance_gone(&self, target: &Target) {
        self.0.liveness.gone(target).await;
    }

    /// Cancel a call this instance started, or one an instance serves
    /// (`instance_id`): the node gets `invoke.cancel` (or, for a run,
    /// `agent.cancel`).
    pub async fn cancel(&self, call_id: &str, instance_id: &str) -> bool {
        let body = encode(&RelayMsg::Cancel {
            call_id: call_id.to_owned(),
        });
        let envelope = Envelope::Relay {
            conn_id: String::new(),
            body,
        };
        matches!(
            self.0.backend.send_to_instance(instance_id, envelope).await,
            Ok(true)
        )
    }

    /// Tell `instance_id` that an agent's definition changed.
    pub async fn redefine(&self, instance_id: &str, change: Redefinition) {
        self.send(instance_id, &RelayMsg::Redefine(change)).await;
    }

    /// A relay envelope arrived for this instance.
    fn on_message(&self, body: &str) -> usize {
        let message = match decode(body) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("switchyard_pubsub_malformed_total").increment(1);
                tracing::warn!(error = %e, "malformed relay message ignored");
                return 0;
            }
        };
        match message {
            RelayMsg::Call(call) => {
                if self.0.hub.get(&call.conn_id).is_none() {
                    // From another instance: the node left meanwhile, say
                    // so rather than let the caller wait out its timeout.
                    // From this one: the caller routes it to the owner.
                    if call.reply_to != self.0.instance_id {
                        let relay = self.clone();
                        let message = RelayMsg::Reply(ReplyMsg {
                            call_id: call.call_id,
                            result: None,
                            error: Some(RpcError::unavailable(format!(
                                "node {} is not connected",
                                call.conn_id
                            ))),
                            busy: false,
                            gone: true,
                        });
                        tokio::spawn(async move { relay.send(&call.reply_to, &message).await });
                    }
                    return 0;
                }
                let relay = self.clone();
                tokio::spawn(async move {
                    let span = crate::otel::serve_span(&call.method, call.trace.as_ref());
                    tracing::Instrument::instrument(relay.serve(call), span).await
                });
                1
            }
            RelayMsg::Reply(ReplyMsg {
                call_id,
                result,
                error,
                busy,
                gone,
            }) => {
                let outcome = match (result, error) {
                    (_, Some(e)) if busy => Err(CallError::Busy(e)),
                    (_, Some(e)) if gone => Err(CallError::Gone(
                        e.data
                            .as_ref()
                            .and_then(|d| d["reason"].as_str())
                            .unwrap_or("the node is gone")
                            .to_owned(),
                    )),
                    (_, Some(e)) => Err(CallError::Remote(e)),
                    (Some(v), None) => Ok(v),
                    (None, None) => Ok(Value::Null),
                };
                match self.waiting().remove(&call_id) {
                    Some(w) => usize::from(w.reply.send(outcome).is_ok()),
                    None => 0,
                }
            }
            RelayMsg::Progress { call_id, data } => {
                let waiting = self.waiting();
                match waiting.get(&call_id).and_then(|w| w.progress.as_ref()) {
                    Some(sink) => usize::from(sink.try_send(data).is_ok()),
                    None => 0,
                }
            }
            RelayMsg::Redefine(change) => self.0.agents.redefine_later(change, self.0.hub.clone()),
            RelayMsg::Cancel { call_id } => {
                let Some(serving) = self.serving().remove(&call_id) else {
                    // A run re-attached here has no call to cancel.
                    let hooks = self.0.hooks.get();
                    return usize::from(hooks.is_some_and(|h| h.cancel_run(&call_id)));
                };
                match &serving.run {
                    Some(ticket) => {
                        if let Some(hooks) = self.0.hooks.get() {
                            hooks.cancelled(ticket, &serving.conn);
                        }
                    }
                    None => {
                        serving.conn.push(frame::notification(
                            "invoke.cancel",
                            &json!({ "id": serving.request_id }),
                        ));
                    }
                }
                serving.conn.complete(
                    &serving.request_id,
                    Err(RpcError::timeout("cancelled by the caller")
                        .with_data(json!({ "cancelled": true }))),
                );
                1
            }
        }
    }

    /// Serving side: run one call against a local node and answer.
    async fn serve(&self, call: CallMsg) {
        let outcome = self.run_local(&call).await;
        self.serving().remove(&call.call_id);
        let busy = matches!(outcome, Err(CallError::Busy(_)));
        // `run_local` is gone only before anything reached the node.
        let gone = matches!(outcome, Err(CallError::Gone(_)));
        let outcome = outcome.map_err(RpcError::from);
        if let (Some(ticket), Some(hooks)) = (&call.run, self.0.hooks.get())
            && !busy
        {
            hooks.finished(ticket, &outcome);
        }
        let (result, error) = match outcome {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        let reply = RelayMsg::Reply(ReplyMsg {
            call_id: call.call_id,
            result,
            error,
            busy,
            gone,
        });
        self.send(&call.reply_to, &reply).await;
    }

    async fn run_local(&self, call: &CallMsg) -> Result<Value, CallError> {
        let target = Target {
            conn_id: call.conn_id.clone(),
            instance_id: self.0.instance_id.clone(),
            generation: 0,
            agent_id: call.agent_id.clone(),
        };
        let (call_id, reply_to, run) = (&call.call_id, &call.reply_to, call.run.as_ref());
        let conn =
            self.0.hub.get(&target.conn_id).ok_or_else(|| {
                CallError::Gone(format!("node {} is not connected", target.conn_id))
            })?;
        let _slot = match &target.agent_id {
            Some(agent_id) => Some(self.0.agents.try_acquire(agent_id).map_err(|r| match r {
                Refusal::Busy => CallError::Busy(busy(agent_id)),
                Refusal::Unknown => CallError::Gone(format!("agent {agent_id} is not registered")),
            })?),
            None => None,
        };
        // A run is active before the node hears of it: the node may send
        // its first `agent.event` as soon as the request reaches it. (If
        // the request cannot be sent, `serve` finishes the run.)
        if let (Some(ticket), Some(hooks)) = (run, self.0.hooks.get()) {
            hooks.started(ticket, &target, &conn);
        }
        let (progress_tx, mut progress_rx) = mpsc::channel::<Value>(PROGRESS_BUFFER);
        let outstanding = conn
            .start_request(&call.method, &call.params, Some(progress_tx))
            .map_err(CallError::Remote)?;
        self.serving().insert(
            call_id.to_owned(),
            Serving {
                conn: conn.clone(),
                request_id: outstanding.id().to_owned(),
                run: run.cloned(),
            },
        );
        if run.is_some() {
            let accepted = RelayMsg::Progress {
                call_id: call_id.to_owned(),
                data: json!({ ACCEPTED: target.agent_id }),
            };
            self.send(reply_to, &accepted).await;
        }
        // Forward progress in order while the call runs.
        let forward = {
            let relay = self.clone();
            let call_id = call_id.to_owned();
            let reply_to = reply_to.to_owned();
            tokio::spawn(async move {
                while let Some(data) = progress_rx.recv().await {
                    let message = RelayMsg::Progress {
                        call_id: call_id.clone(),
                        data,
                    };
                    relay.send(&reply_to, &message).await;
                }
            })
        };
        let request_id = outstanding.id().to_owned();
        let outcome = outstanding
            .wait(Duration::from_millis(call.timeout_ms))
            .await
            .map_err(|e| {
                e.unwrap_or_else(|| {
                    // No answer in time: the node is told to stop, unless a
                    // cancellation got there first.
                    if self.serving().remove(call_id).is_some() {
                        match (run, self.0.hooks.get()) {
                            (Some(ticket), Some(hooks)) => hooks.cancelled(ticket, &conn),
                            _ => {
                                conn.push(frame::notification(
                                    "invoke.cancel",
                                    &json!({ "id": request_id, "reason": "timeout" }),
                                ));
                            }
                        }
                    }
                    RpcError::timeout(format!("no answer within {} ms", call.timeout_ms))
                })
            });
        // The sender is gone with `outstanding`: the forwarder drains what
        // is left, so every progress update precedes the reply.
        let _ = forward.await;
        outcome.map_err(CallError::Remote)
    }

    async fn send(&self, instance_id: &str, message: &RelayMsg) {
        let envelope = Envelope::Relay {
            conn_id: String::new(),
            body: encode(message),
        };
        match self.0.backend.send_to_instance(instance_id, envelope).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!(instance = %instance_id, "relay: instance gone"),
            Err(e) => tracing::warn!(instance = %instance_id, error = %e, "relay send failed"),
        }
    }
}

/// Forgets a waiting call when the caller stops waiting; a call that
/// timed out or whose caller went away is cancelled at the node.
struct Pending {
    relay: Relay,
    call_id: String,
    instance_id: String,
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.relay.waiting().remove(&self.call_id);
        if !self.answered {
            let relay = self.relay.clone();
            let call_id = std::mem::take(&mut self.call_id);
            let instance_id = std::mem::take(&mut self.instance_id);
            tokio::spawn(async move { relay.cancel(&call_id, &instance_id).await });
        }
    }
}

/// `params` as the JSON a request carries. Plain data (a `Value`, strings,
/// numbers) always serialises; were it ever not to, the node gets `null`
/// and the cause is logged.
fn raw(params: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(params).unwrap_or_else(|e| {
        tracing::error!(error = %e, "serialising a call's params failed");
        Box::<RawValue>::default()
    })
}

fn encode(message: &RelayMsg) -> String {
    serde_json::to_string(message).unwrap_or_default()
}

fn busy(agent_id: &str) -> RpcError {
    RpcError::new(error::LIMIT_EXCEEDED, "agent at maxConcurrency")
        .with_data(json!({ "busy": true, "agentId": agent_id }))
}

/// The instance's inbox: relay messages to the relay, everything else to
/// the hub.
pub struct Inbound {
    pub hub: Hub,
    pub relay: Relay,
}

impl Inbox for Inbound {
    fn deliver(&self, envelope: Envelope) -> usize {
        match envelope {
            Envelope::Relay { body, .. } => self.relay.on_message(&body),
            other => self.hub.deliver(other),
        }
    }

    fn holds(&self, conn_id: &str) -> bool {
        self.hub.holds(conn_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(error: RpcError, busy: bool) -> RelayMsg {
        RelayMsg::Reply(ReplyMsg {
            call_id: "c".into(),
            result: None,
            error: Some(error),
            busy,
            gone: false,
        })
    }

    /// Every kind of message, as instances send them.
    fn samples() -> Vec<RelayMsg> {
        let call = CallMsg {
            call_id: "c1".into(),
            reply_to: "i1".into(),
            conn_id: "k1".into(),
            agent_id: Some("a1".into()),
            method: "invoke".into(),
            params: serde_json::value::to_raw_value(
                &json!({"command": "echo", "params": {"n": [1, 2.5, "x\"y"]}}),
            )
            .unwrap(),
            timeout_ms: 5000,
            run: None,
            trace: Some(HashMap::from([(
                "traceparent".into(),
                "00-ab-cd-01".into(),
            )])),
        };
        vec![
            RelayMsg::Call(call.clone()),
            RelayMsg::Call(CallMsg {
                agent_id: None,
                trace: None,
                ..call
            }),
            RelayMsg::Reply(ReplyMsg {
                call_id: "c1".into(),
                result: Some(json!({"n": 1, "nested": {"deep": [null, true]}})),
                error: None,
                busy: false,
                gone: false,
            }),
            reply(busy("a"), true),
            RelayMsg::Reply(ReplyMsg {
                call_id: "c2".into(),
                result: None,
                error: Some(RpcError::unavailable("node k1 is not connected")),
                busy: false,
                gone: true,
            }),
            RelayMsg::Progress {
                call_id: "c1".into(),
                data: json!({"pct": 50}),
            },
            RelayMsg::Cancel {
                call_id: "c1".into(),
            },
            RelayMsg::Redefine(Redefinition {
                agent_id: "a1".into(),
                definition: None,
                required: true,
            }),
        ]
    }

    #[test]
    fn every_message_reads_back_as_the_derived_reading_reads_it() {
        for message in samples() {
            let text = encode(&message);
            // A call's params are passed through raw, which the derived
            // reading of a tagged enum cannot do (it buffers the members):
            // `decode` reads a call as its struct wherever the tag is.
            let derived: RelayMsg = match message {
                RelayMsg::Call(_) => serde_json::from_str(&text).map(RelayMsg::Call),
                _ => serde_json::from_str(&text),
            }
            .unwrap();
            let read = decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(format!("{read:?}"), format!("{message:?}"), "{text}");
            assert_eq!(format!("{read:?}"), format!("{derived:?}"), "{text}");
            // A routed call's two messages take the one-pass reading.
            let tag = match message {
                RelayMsg::Call(_) => Some(r#"{"t":"call","#),
                RelayMsg::Reply(_) => Some(r#"{"t":"reply","#),
                _ => None,
            };
            assert!(tag.is_none_or(|tag| text.starts_with(tag)), "{text}");
        }
    }

    #[test]
    fn the_tag_may_come_anywhere_and_a_bad_message_is_refused() {
        let late = r#"{"callId":"c","result":{"a":1},"error":null,"t":"reply"}"#;
        let Ok(RelayMsg::Reply(reply)) = decode(late) else {
            panic!("{late}");
        };
        assert_eq!(
            (reply.call_id.as_str(), reply.result),
            ("c", Some(json!({"a": 1})))
        );
        let late = r#"{"callId":"c","replyTo":"i","connId":"k","agentId":null,"method":"m","params":{"a":[1]},"timeoutMs":5,"run":null,"t":"call"}"#;
        let Ok(RelayMsg::Call(call)) = decode(late) else {
            panic!("{late}");
        };
        assert_eq!(
            (call.call_id.as_str(), call.params.get()),
            ("c", r#"{"a":[1]}"#)
        );
        for bad in [
            r#"{"callId":"c"}"#,
            r#"{"t":"nonsense","callId":"c"}"#,
            r#"{"t":"reply"}"#,
            r#"{"t":"call","callId":"c"}"#,
            r#"{"t":7}"#,
            "not json",
        ] {
            assert!(decode(bad).is_err(), "{bad} was read");
            assert!(serde_json::from_str::<RelayMsg>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_busy_refusal_travels_as_a_flag_not_in_the_error() {
        let back: RelayMsg = serde_json::from_str(&encode(&reply(busy("a"), true))).unwrap();
        assert!(matches!(back, RelayMsg::Reply(ReplyMsg { busy: true, .. })));
        // Another limit is an ordinary error: no flag on the wire.
        let plain = encode(&reply(RpcError::limit("calls", 1), false));
        assert!(!plain.contains("busy"), "{plain}");
        let back: RelayMsg = serde_json::from_str(&plain).unwrap();
        assert!(matches!(
            back,
            RelayMsg::Reply(ReplyMsg { busy: false, .. })
        ));
        assert!(!plain.contains("gone"), "{plain}");
        // What a client is told is the error itself.
        assert_eq!(RpcError::from(CallError::Busy(busy("a"))), busy("a"));
        assert_eq!(
            RpcError::from(CallError::Gone("gone".into())).code,
            error::UNAVAILABLE
        );
        assert_eq!(
            RpcError::from(CallError::Timeout("late".into())).code,
            error::TIMEOUT
        );
    }
}
