//! The reference server's methods, answered on the wire as Switchyard
//! answers them: `ping` (`system.ping`) → `{pong, ts}`, `subscribe`
//! (`notify.subscribe`) → `{subscribed}`, `unsubscribe`
//! (`notify.unsubscribe`) → `{unsubscribed}`, `publish` → `{delivered}`
//! and a `notify {channel, data, event, timestamp}` to every subscriber.
//! Error objects are the protocol's own ([`RpcError`]).
//!
//! What it does not have, it does not pretend to: no batches, no channel
//! rules or scopes (a credential at the upgrade is enough to subscribe and
//! publish), no presence, history, sessions or agents (-32601).

use super::channels::{Channels, Peer};
use crate::protocol::{RpcError, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::borrow::Cow;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Channels one connection may subscribe to (Switchyard's default
/// `limits.max_subscriptions`).
const MAX_SUBSCRIPTIONS: usize = 128;

/// One incoming call; `id` absent (or null) makes it a notification.
#[derive(Deserialize)]
struct Request<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChannelsParams {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize)]
struct PublishParams<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// `{"jsonrpc":"2.0","method":"notify","params":{…}}`, keys in the order
/// Switchyard writes them.
#[derive(Serialize)]
struct Notify<'a> {
    jsonrpc: &'static str,
    method: &'static str,
    params: NotifyParams<'a>,
}

#[derive(Serialize)]
struct NotifyParams<'a> {
    channel: &'a str,
    data: &'a RawValue,
    event: &'a str,
    timestamp: u64,
}

#[derive(Serialize)]
struct Reply<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a RpcError>,
}

/// One connection's state as its calls see it.
pub struct Session<'a> {
    pub id: u64,
    pub authenticated: bool,
    pub peer: Peer,
    pub channels: &'a Channels,
    pub subscriptions: Vec<String>,
}

impl Session<'_> {
    /// Answer one text frame: the reply to send, if any.
    pub fn handle(&mut self, text: &str) -> Option<String> {
        let request: Request = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => return Some(reply(RawValue::NULL, Err(rejection(text, e)))),
        };
        let outcome = self.dispatch(&request.method, request.params);
        let id = request.id?;
        Some(reply(id, outcome))
    }

    fn dispatch(&mut self, method: &str, params: Option<&RawValue>) -> Result<Value, RpcError> {
        match method {
            "ping" | "system.ping" => Ok(json!({ "pong": true, "ts": now_ms() })),
            "subscribe" | "notify.subscribe" => {
                self.authenticated()?;
                self.subscribe(channel_names(params)?)
            }
            "unsubscribe" | "notify.unsubscribe" => {
                self.authenticated()?;
                Ok(self.unsubscribe(channel_names(params)?))
            }
            "publish" => {
                self.authenticated()?;
                self.publish(params)
            }
            other => Err(RpcError::method_not_found(other)),
        }
    }

    fn authenticated(&self) -> Result<(), RpcError> {
        if self.authenticated {
            Ok(())
        } else {
            Err(RpcError::unauthorized("not authenticated"))
        }
    }

    fn subscribe(&mut self, names: Vec<String>) -> Result<Value, RpcError> {
        let fresh: Vec<&String> = names
            .iter()
            .filter(|n| !self.subscriptions.contains(n))
            .collect();
        if self.subscriptions.len() + fresh.len() > MAX_SUBSCRIPTIONS {
            return Err(RpcError::limit(
                "subscriptions per connection",
                MAX_SUBSCRIPTIONS,
            ));
        }
        for name in fresh {
            self.channels.join(name, self.id, &self.peer);
            self.subscriptions.push(name.clone());
        }
        Ok(json!({ "subscribed": names }))
    }

    fn unsubscribe(&mut self, names: Vec<String>) -> Value {
        let mut left = Vec::new();
        for name in names {
            if let Some(at) = self.subscriptions.iter().position(|s| *s == name) {
                self.subscriptions.swap_remove(at);
                self.channels.leave(&name, self.id);
                left.push(name);
            }
        }
        json!({ "unsubscribed": left })
    }

    fn publish(&self, params: Option<&RawValue>) -> Result<Value, RpcError> {
        let raw = params.map_or("{}", RawValue::get);
        let p: PublishParams = serde_json::from_str(raw)
            .map_err(|e| RpcError::invalid_params("params", e.to_string()))?;
        let notify = Notify {
            jsonrpc: "2.0",
            method: "notify",
            params: NotifyParams {
                channel: &p.channel,
                data: p.data.unwrap_or(RawValue::NULL),
                event: p.event.as_deref().unwrap_or("message"),
                timestamp: now_ms(),
            },
        };
        let frame = serde_json::to_string(&notify).map_err(|e| RpcError::internal(&e))?;
        let delivered = self.channels.publish(&p.channel, &Utf8Bytes::from(frame));
        Ok(json!({ "delivered": delivered }))
    }

    /// Leave every channel (the connection is closing).
    pub fn leave_all(&mut self) {
        for name in self.subscriptions.drain(..) {
            self.channels.leave(&name, self.id);
        }
    }
}

/// The channels of a `subscribe` / `unsubscribe`: `channels` and
/// `channel`, sorted, without duplicates, at least one.
fn channel_names(params: Option<&RawValue>) -> Result<Vec<String>, RpcError> {
    let raw = params.map_or("{}", RawValue::get);
    let p: ChannelsParams =
        serde_json::from_str(raw).map_err(|e| RpcError::invalid_params("params", e.to_string()))?;
    let mut names = p.channels;
    names.extend(p.channel);
    if names.is_empty() {
        return Err(RpcError::invalid_params("channels", "at least one channel"));
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// Why a frame that is not a call was refused.
fn rejection(text: &str, e: serde_json::Error) -> RpcError {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Err(_) => RpcError::parse(e.to_string()),
        Ok(_) if text.trim_start().starts_with('[') => {
            RpcError::invalid_request("batches are not supported")
        }
        Ok(_) => RpcError::invalid_request(e.to_string()),
    }
}

/// A serialised response to call `id`.
pub fn reply(id: &RawValue, outcome: Result<Value, RpcError>) -> String {
    let out = Reply {
        jsonrpc: "2.0",
        id,
        result: outcome.as_ref().ok(),
        error: outcome.as_ref().err(),
    };
    serde_json::to_string(&out).unwrap_or_default()
}

/// The error response to a frame that is not a call at all.
pub fn refusal(error: RpcError) -> String {
    reply(RawValue::NULL, Err(error))
}
