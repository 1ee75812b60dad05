//! What the server sends unasked: notifications ([`PUSHES`], no `id`, no
//! answer) and requests to the node serving a call ([`REQUESTS`], with a
//! `srv-N` id, answered with a normal response).

use super::{
    SchemaFn, any, array, boolean, constant, count, described, map, ms, nullable, object, one_of,
    record, string, strings,
};
use crate::backend::{ApprovalRecord, DeviceInfo};
use schemars::SchemaGenerator;
use serde_json::Value;

/// A notification the server pushes.
pub struct Push {
    pub name: &'static str,
    /// Who receives it.
    pub to: &'static str,
    /// When it is sent, and what it means.
    pub description: &'static str,
    /// The JSON Schema of its params.
    pub params: SchemaFn,
}

/// A request the server sends to a node (`srv-N` id).
pub struct Request {
    pub name: &'static str,
    /// What makes the server send it, and what the answer does.
    pub description: &'static str,
    pub params: SchemaFn,
    /// The JSON Schema of the answer the node sends back.
    pub result: SchemaFn,
}

/// Every notification the server sends.
pub static PUSHES: &[Push] = &[
    Push {
        name: "welcome",
        to: "every connection",
        description: "The first frame on every connection, right after the upgrade.",
        params: |_| {
            object(&[
                ("connId", string()),
                (
                    "nodeId",
                    described(string(), "the instance holding the socket"),
                ),
                ("authRequired", boolean()),
                (
                    "authenticated",
                    described(boolean(), "credentials came with the upgrade"),
                ),
                ("protocol", count()),
                (
                    "challenge",
                    described(
                        string(),
                        "random per connection: a device with a public key signs it \
                         (Ed25519, once) in `connect.auth` / `auth`",
                    ),
                ),
            ])
        },
    },
    Push {
        name: "notify",
        to: "the channel's subscribers (implicit channels included)",
        description: "A publication (`publish`, `POST /api/publish`, a webhook, or a message on \
                      the backend's notify channel). `offset` is there on a channel with history.",
        params: notify,
    },
    Push {
        name: "presence.join",
        to: "the subscribers of a channel with presence",
        description: "A connection subscribed to the channel.",
        params: presence_change,
    },
    Push {
        name: "presence.leave",
        to: "the subscribers of a channel with presence",
        description: "A connection unsubscribed from the channel, or went away.",
        params: presence_change,
    },
    Push {
        name: "presence.tick",
        to: "every authenticated connection",
        description: "Every `limits.presence_tick_ms` (5 s by default): the cluster's size.",
        params: |_| {
            object(&[
                ("ts", ms()),
                (
                    "connections",
                    described(count(), "connections, cluster-wide"),
                ),
                ("nodes", described(count(), "connections of role node")),
                ("instances", described(count(), "live gateway instances")),
            ])
        },
    },
    Push {
        name: "session.event",
        to: "the session's members",
        description: "Something a member sent (`session.send`); numbered in the session's log.",
        params: session_event,
    },
    Push {
        name: "session.updated",
        to: "the session's members",
        description: "`session.patch` changed `meta`, or `session.invite` invited identities \
                      (then `invited` is there).",
        params: |_| {
            object(&[
                ("sessionId", string()),
                ("version", count()),
                ("meta", json_object()),
                ("invited?", strings()),
            ])
        },
    },
    Push {
        name: "session.closed",
        to: "the session's members",
        description: "The session is gone: `closed` (its owner or an admin closed it), `owner \
                      gone` (the owner did not come back within the resume window), `run not \
                      started` (opened for an agent run that could not start), `gone` (closed \
                      while this client's instance was cut off from the backend, or lost with \
                      the backend's state).",
        params: |_| {
            object(&[
                ("sessionId", string()),
                (
                    "reason",
                    one_of(&["closed", "owner gone", "run not started", "gone"]),
                ),
            ])
        },
    },
    Push {
        name: "agent.event",
        to: "the session's members",
        description: "An event of a run (`agent.event` from the agent serving it); numbered in \
                      the session's log with its `session.event`s.",
        params: agent_event,
    },
    Push {
        name: "agent.started",
        to: "channel `global`",
        description: "An agent accepted a run, or re-attached to it after its instance was \
                      lost (`attached`: how many times).",
        params: |_| {
            object(&[
                ("sessionId", string()),
                ("runId", string()),
                ("agentId", nullable(string())),
                ("attached?", count()),
            ])
        },
    },
    Push {
        name: "agent.completed",
        to: "channel `global`",
        description: "A run ended with the agent's answer.",
        params: run_summary,
    },
    Push {
        name: "agent.error",
        to: "channel `global`",
        description: "A run ended in an error, or was cancelled. When the instance holding \
                      the agent died mid-run, `error` is -32005 with data `{reason: \
                      \"instance_lost\", instanceId, resumableUntil}`, within \
                      `limits.node_ttl_ms` of the death: its agent may re-attach to it until \
                      `resumableUntil` (`agent.reattach`; `agent.started` with `attached` \
                      says so), and the run then ends again with its own outcome.",
        params: run_summary,
    },
    Push {
        name: "invoke.progress",
        to: "the caller of `node.invoke`",
        description: "What the node reported (`invoke.progress {id, data}`) while working on \
                      the call, before its reply.",
        params: |_| object(&[("invokeId", string()), ("data", any())]),
    },
    Push {
        name: "agents.broadcast",
        to: "each online agent matching an `agents.broadcast` (once per registration)",
        description: "An operator's broadcast to agents; `agentId` names the registration \
                      it matched.",
        params: |_| object(&[("event", string()), ("data", any()), ("agentId", string())]),
    },
    Push {
        name: "agent.deregistered",
        to: "the node whose agent its definition no longer admits",
        description: "Its definition was disabled (or deleted while \
                      `agents.require_definition` is on): the entry left the registry; the \
                      connection stays open.",
        params: |_| object(&[("agentId", string()), ("reason", string())]),
    },
    Push {
        name: "approval.requested",
        to: "approvers (channel `approval`)",
        description: "A node asked for a decision; an approver that connects later gets those \
                      still pending.",
        params: record::<ApprovalRecord>,
    },
    Push {
        name: "approval.resolved",
        to: "approvers, and the requesting connection",
        description: "An approval was decided, or expired. When the requesting identity had no \
                      connection at the time, its first connection to authenticate afterwards \
                      (within an hour, on any instance) is sent it then.",
        params: record::<ApprovalRecord>,
    },
    Push {
        name: "device.pair.requested",
        to: "operators with `operator.pairing`",
        description: "A device asked to pair; an operator that connects later gets those still \
                      pending.",
        params: record::<DeviceInfo>,
    },
    Push {
        name: "device.pair.resolved",
        to: "operators with `operator.pairing`",
        description: "A pairing request was approved or rejected.",
        params: record::<DeviceInfo>,
    },
    Push {
        name: "device.paired",
        to: "the waiting device (the connection that asked to pair)",
        description: "Its request was approved: the device token, shown only here.",
        params: super::devices::paired,
    },
    Push {
        name: "device.pair.rejected",
        to: "the waiting device",
        description: "Its request was rejected.",
        params: super::devices::rejected,
    },
    Push {
        name: "device.revoked",
        to: "operators with `operator.pairing`, and the device's connections (close code \
             4003 follows)",
        description: "A device was revoked.",
        params: record::<DeviceInfo>,
    },
    Push {
        name: "shutdown",
        to: "every connection",
        description: "The instance is shutting down: close code 1012 follows; reconnect (to any \
                      instance) after `reconnectAfterMs`.",
        params: |_| object(&[("reason", string()), ("reconnectAfterMs", count())]),
    },
    Push {
        name: "epoch.changed",
        to: "every connection",
        description: "The shared state may have lost writes: Redis came back empty, or a \
                      failover or a restart from disk may have lost the writes acknowledged \
                      last. Offsets held from before belong to the old epoch: read history, \
                      `recover` or `session.resume` with them (and their `epoch`) to learn \
                      what is there (`epochChanged: true, complete: false`). Pending \
                      approvals, running runs, sessions and device records the instances' \
                      live work proves were written back.",
        params: |_| object(&[("epoch", described(string(), "the new epoch"))]),
    },
    Push {
        name: "invoke.cancel",
        to: "the node serving a request",
        description: "The caller cancelled, timed out or went away: stop working on request \
                      `id` (its answer will be ignored).",
        params: |_| object(&[("id", described(string(), "the request's `srv-N` id"))]),
    },
    Push {
        name: "agent.cancel",
        to: "the agent serving a run",
        description: "`agent.cancel` or `chat.abort`: later `agent.event`s of the run are \
                      dropped.",
        params: |_| object(&[("sessionId", string()), ("runId", string())]),
    },
];

/// Every request the server sends to nodes.
pub static REQUESTS: &[Request] = &[
    Request {
        name: "invoke",
        description: "`node.invoke`, a method the node serves (`agent.register {methods}`), or \
                      `POST /tools/invoke`: `command` is the command, the method's name or the \
                      tool's name. The answer is the call's result.",
        params: |_| {
            object(&[
                ("command", string()),
                ("params", any()),
                ("caller", caller()),
            ])
        },
        result: |_| any(),
    },
    Request {
        name: "agent.run",
        description: "`agent.run`: the agent accepted the run when it gets this; the answer \
                      ends the run (its result, or its error).",
        params: |_| {
            object(&[
                ("sessionId", string()),
                ("runId", string()),
                ("task", string()),
                ("input", any()),
                ("maxTurns", nullable(count())),
                ("tier", nullable(string())),
                ("caller", caller()),
            ])
        },
        result: |_| any(),
    },
    Request {
        name: "chat.send",
        description: "`chat.send`: `history` holds the session's last 50 chat entries. Answer \
                      a string or `{content}`.",
        params: |_| {
            object(&[
                ("sessionId", string()),
                ("runId", string()),
                ("message", any()),
                ("history", array(chat_entry())),
                ("caller", caller()),
            ])
        },
        result: |_| any(),
    },
    Request {
        name: "chat.completions",
        description: "`POST /v1/chat/completions` or `POST /v1/responses`: the OpenAI request \
                      body plus `caller`. Answer `{content}`, a string or a whole \
                      `chat.completion` object; with `stream: true`, each `invoke.progress \
                      {id, data: {delta}}` becomes one streamed chunk.",
        params: |_| {
            let mut body = object(&[("model", string()), ("caller", caller())]);
            body["additionalProperties"] = any();
            body
        },
        result: |_| any(),
    },
];

/// `notify`'s params.
pub(super) fn notify(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("channel", string()),
        ("event", string()),
        ("data", any()),
        ("timestamp", ms()),
        (
            "offset?",
            described(count(), "on a channel with history: 1, 2, 3…"),
        ),
    ])
}

/// `session.event`'s params.
pub(super) fn session_event(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("sessionId", string()),
        ("event", string()),
        ("data", any()),
        (
            "from",
            object(&[("connId", string()), ("identity", string())]),
        ),
        ("timestamp", ms()),
        (
            "offset",
            described(count(), "1, 2, 3… in the session's log"),
        ),
    ])
}

/// `agent.event`'s params.
pub(super) fn agent_event(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("sessionId", string()),
        ("runId", string()),
        ("agentId", nullable(string())),
        ("type", string()),
        ("data", any()),
        ("timestamp", ms()),
        (
            "offset",
            described(count(), "1, 2, 3… in the session's log"),
        ),
    ])
}

/// An entry of a session's chat history.
pub(super) fn chat_entry() -> Value {
    object(&[
        ("role", one_of(&["user", "assistant", "system"])),
        ("content", any()),
        (
            "from",
            described(string(), "who wrote it: an identity or an agent id"),
        ),
        ("timestamp", ms()),
        ("injected?", constant(true)),
    ])
}

/// Any JSON object.
pub(super) fn json_object() -> Value {
    map(any())
}

fn presence_change(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("channel", string()),
        ("connId", string()),
        ("identity", string()),
        ("client", any()),
        ("timestamp", ms()),
    ])
}

fn run_summary(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("sessionId", string()),
        ("runId", string()),
        ("agentId", string()),
        ("status", one_of(&["completed", "error", "cancelled"])),
        ("result", any()),
        ("error", any()),
    ])
}

/// Who made the call, as a node sees it.
fn caller() -> Value {
    object(&[
        ("connId", nullable(string())),
        ("identity", nullable(string())),
        ("role?", nullable(string())),
        ("scopes?", nullable(strings())),
        (
            "via?",
            described(constant("http"), "the call came over HTTP"),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The crate's sources outside this module, without their tests.
    fn sources() -> Vec<(String, String)> {
        fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).expect("src is readable") {
                let path = entry.expect("an entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("a source file");
                    let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
                    out.push((path.display().to_string(), code));
                }
            }
        }
        let mut out = Vec::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        out.retain(|(path, _)| !path.contains("rpc/doc/"));
        out
    }

    /// The string literal passed straight as an argument (not inside a
    /// `json!` or another call) to each call to `call` (`notification(`)
    /// in `code`.
    fn named_in(code: &str, call: &str) -> Vec<String> {
        let mut names = Vec::new();
        for (at, _) in code.match_indices(call) {
            let mut chars = code[at + call.len()..].chars();
            let mut depth = 0;
            while let Some(c) = chars.next() {
                match c {
                    '"' => {
                        let literal: String = chars.by_ref().take_while(|&c| c != '"').collect();
                        if depth == 0 {
                            names.push(literal);
                            break;
                        }
                    }
                    '(' | '[' | '{' => depth += 1,
                    ')' | ']' | '}' if depth == 0 => break,
                    ')' | ']' | '}' => depth -= 1,
                    _ => {}
                }
            }
        }
        names
    }

    #[test]
    fn every_push_and_request_the_server_builds_is_described() {
        let described: BTreeSet<&str> = PUSHES
            .iter()
            .map(|p| p.name)
            .chain(REQUESTS.iter().map(|r| r.name))
            .collect();
        assert_eq!(
            described.len(),
            PUSHES.len() + REQUESTS.len(),
            "names are unique"
        );
        let sources = sources();
        let calls = [
            "notification(",
            "event_frame(",
            "announce(",
            "notify_members(",
            "LoggedFrame::new(",
            "CallSpec::new(",
        ];
        let mut built = BTreeSet::new();
        for (path, code) in &sources {
            for call in calls {
                for name in named_in(code, call) {
                    assert!(
                        described.contains(name.as_str()),
                        "{path} sends `{name}`, which the reference does not describe"
                    );
                    built.insert(name);
                }
            }
        }
        assert!(built.len() >= 10, "the scan finds what is sent: {built:?}");
        for name in described {
            let literal = format!("\"{name}\"");
            assert!(
                sources.iter().any(|(_, code)| code.contains(&literal)),
                "the reference describes `{name}`, which nothing sends"
            );
        }
    }
}
