//! Pub/sub, the receiving side: the subscriber connection's subscriptions,
//! the message loop that hands channel and inbox messages to the
//! instance's inbox, external notifications, and the canary that proves
//! the subscriber delivers. The sending side is [`Bus`](crate::backend::Bus)'s
//! impl in [`bus`](super::bus).
//!
//! Payloads are plain text so a message is parsed once:
//! - channel topic `<p>:ch:<channel>`: `0<frame>` or `1<frame>` (1 = the
//!   channel ends after this frame);
//! - inbox `<p>:inbox:<instance>`: `c<conn>\n<frame>` (one connection),
//!   `k<conn>\n<code>\n<reason>` (kick), `p<sent ms>` (canary);
//! - `<p>:notify:<channel>`: JSON `{channel?, event, data, timestamp?}` from
//!   any process (see [`notify_frame`]);
//! - `<p>:config:changed`: a new runtime config version (decimal).

use super::{RedisBackend, catch_up, unavailable};
use crate::backend::{BackendResult, Envelope, SessionStore};
use crate::protocol::{Frame, frame, now_ms};
use fred::prelude::{EventInterface, PubsubInterface};
use fred::types::Message;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the canary goes round.
const CANARY_EVERY: Duration = Duration::from_secs(2);
/// Canary silence after which the subscriber counts as stalled.
const CANARY_STALL: Duration = Duration::from_secs(5);

/// Subscribe the inbox and the notify pattern, then run the message loop
/// and the canary.
pub async fn start(backend: &RedisBackend) -> BackendResult<()> {
    let shared = backend.shared();
    let attached = backend.attached()?;
    // The subscriber client remembers its subscriptions; after a reconnect
    // `resubscribe` re-issues them (see `watch_connection`).
    shared
        .subscriber
        .subscribe(shared.keys.inbox(&attached.id))
        .await
        .map_err(unavailable)?;
    shared
        .subscriber
        .psubscribe(shared.keys.notify_pattern())
        .await
        .map_err(unavailable)?;
    shared
        .subscriber
        .subscribe(shared.keys.config_topic())
        .await
        .map_err(unavailable)?;
    confirm(backend).await?;
    let me = backend.clone();
    let mut messages = shared.subscriber.message_rx();
    tokio::spawn(async move {
        loop {
            match messages.recv().await {
                Ok(message) => me.on_message(message).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!("switchyard_pubsub_dropped_total").increment(n);
                    tracing::error!(dropped = n, "pub/sub receiver lagged; messages lost");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    spawn_canary(backend);
    Ok(())
}

impl RedisBackend {
    async fn on_message(&self, message: Message) {
        let shared = self.shared();
        let Ok(attached) = self.attached() else {
            return;
        };
        let Some(text) = message.value.as_str() else {
            metrics::counter!("switchyard_pubsub_malformed_total").increment(1);
            return;
        };
        let topic: &str = &message.channel;
        if let Some(channel) = shared.keys.channel_of_topic(topic) {
            match decode_channel(channel, &text) {
                Some(envelope) => match shared.marks.admit(envelope) {
                    catch_up::Admit::Deliver(envelope) => {
                        attached.inbox.deliver(envelope);
                    }
                    catch_up::Admit::Nothing => {}
                    catch_up::Admit::Fill { channel, after } => {
                        tokio::spawn(fill(self.clone(), channel, after));
                    }
                },
                None => {
                    metrics::counter!("switchyard_pubsub_malformed_total").increment(1);
                    tracing::warn!(%channel, "malformed channel envelope ignored");
                }
            }
        } else if shared.keys.is_config_topic(topic) {
            let version = text.parse().unwrap_or(0);
            shared.config_changes.send_replace(version);
        } else if let Some(channel) = shared.keys.notify_channel_of(topic) {
            self.on_notify(channel, &text).await;
        } else if let Some(sent) = text.strip_prefix('p') {
            let sent: u64 = sent.parse().unwrap_or(0);
            let lag = now_ms().saturating_sub(sent);
            metrics::gauge!("switchyard_pubsub_lag_seconds").set(lag as f64 / 1000.0);
            shared.pubsub_lag_ms.store(lag, Ordering::Relaxed);
            shared.canary_seen_ms.store(now_ms(), Ordering::Relaxed);
            if !shared.resubscribing.load(Ordering::SeqCst)
                && !shared.pubsub_ok.swap(true, Ordering::SeqCst)
            {
                tracing::info!("pub/sub delivers again");
            }
        } else if let Some(envelope) = decode_inbox(&text) {
            attached.inbox.deliver(envelope);
        } else {
            metrics::counter!("switchyard_pubsub_malformed_total").increment(1);
        }
    }

    /// An external notification: everyone (`global`), a session's owner
    /// (`agent:<sessionId>`), approvers (`approval`) or a channel.
    async fn on_notify(&self, channel: &str, text: &str) {
        let Some(frame) = notify_frame(channel, text) else {
            metrics::counter!("switchyard_notify_malformed_total").increment(1);
            tracing::warn!(%channel, "malformed notification ignored");
            return;
        };
        let Ok(attached) = self.attached() else {
            return;
        };
        if let Some(session_id) = channel.strip_prefix("agent:") {
            // Every instance gets the pattern message; only the one holding
            // the owner's socket delivers it.
            if let Ok(Some(record)) = self.session(session_id).await
                && let Some(owner) = record.owner
            {
                attached.inbox.deliver(Envelope::Conn {
                    conn_id: owner,
                    frame,
                });
            }
            return;
        }
        attached.inbox.deliver(Envelope::Channel {
            channel: channel.to_owned(),
            frame,
            last: false,
        });
    }
}

/// The `notify` frame of an external notification, if it is well formed.
pub fn notify_frame(channel: &str, text: &str) -> Option<Frame> {
    let Value::Object(body) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let event = body.get("event").and_then(Value::as_str)?;
    let timestamp = body
        .get("timestamp")
        .and_then(Value::as_u64)
        .unwrap_or_else(now_ms);
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    Some(frame::notification(
        "notify",
        &json!({ "channel": channel, "event": event, "data": data, "timestamp": timestamp }),
    ))
}

/// Whether `frame` is what instances send clients: a JSON-RPC 2.0 object
/// that parses. Envelopes come from Redis, which anyone with access to it
/// can write to; a malformed one must not reach sockets or, with its
/// `last` flag, drop a channel's subscribers.
fn well_formed(frame: &str) -> bool {
    frame.starts_with(r#"{"jsonrpc":"2.0","#)
        && serde_json::from_str::<serde::de::IgnoredAny>(frame).is_ok()
}

fn decode_channel(channel: &str, text: &str) -> Option<Envelope> {
    let (flag, frame) = text.split_at_checked(1)?;
    let last = match flag {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    well_formed(frame).then(|| Envelope::Channel {
        channel: channel.to_owned(),
        frame: Frame::from(frame.to_owned()),
        last,
    })
}

fn decode_inbox(text: &str) -> Option<Envelope> {
    let (kind, rest) = text.split_at_checked(1)?;
    let (conn_id, rest) = rest.split_once('\n')?;
    if conn_id.is_empty() && kind != "r" {
        return None;
    }
    match kind {
        "c" => well_formed(rest).then(|| Envelope::Conn {
            conn_id: conn_id.to_owned(),
            frame: Frame::from(rest.to_owned()),
        }),
        "r" => Some(Envelope::Relay {
            conn_id: conn_id.to_owned(),
            body: rest.to_owned(),
        }),
        "k" => {
            let (code, reason) = rest.split_once('\n')?;
            // Close codes an application may send (RFC 6455 §7.4).
            let code: u16 = code.parse().ok()?;
            let valid = matches!(code, 1000 | 1001 | 1008 | 1011 | 1012 | 3000..=4999);
            (valid && reason.chars().count() <= 123).then(|| Envelope::Kick {
                conn_id: conn_id.to_owned(),
                code,
                reason: reason.to_owned(),
            })
        }
        _ => None,
    }
}

pub(super) fn encode_inbox(envelope: &Envelope) -> Option<(&str, String)> {
    match envelope {
        Envelope::Conn { conn_id, frame } => {
            Some((conn_id, tagged('c', conn_id, &[frame.as_str()])))
        }
        Envelope::Kick {
            conn_id,
            code,
            reason,
        } => Some((
            conn_id,
            tagged('k', conn_id, &[&code.to_string(), "\n", reason]),
        )),
        Envelope::Relay { conn_id, body } => Some((conn_id, tagged('r', conn_id, &[body]))),
        Envelope::Channel { .. } => None,
    }
}

/// `<tag><conn id>\n<parts…>`, allocated once at its final size (an
/// inbox message is built per routed call and per frame to a remote
/// connection).
fn tagged(tag: char, conn_id: &str, parts: &[&str]) -> String {
    let len = 2 + conn_id.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut text = String::with_capacity(len);
    text.push(tag);
    text.push_str(conn_id);
    text.push('\n');
    for part in parts {
        text.push_str(part);
    }
    text
}

/// Re-issue every subscription of the subscriber client (after its
/// reconnect or a stall) and confirm Redis has them; pub/sub counts as
/// healthy again only then.
pub async fn resubscribe(backend: &RedisBackend) {
    let shared = backend.shared();
    shared.resubscribing.store(true, Ordering::SeqCst);
    // From here, live logged frames wait for the catch-up (below).
    let marks = {
        let interest = shared.interest.lock().unwrap_or_else(|p| p.into_inner());
        shared.marks.begin(|channel| interest.contains_key(channel))
    };
    let done = async {
        shared
            .subscriber
            .resubscribe_all()
            .await
            .map_err(unavailable)?;
        if shared.clustered {
            // A shard's primary demoted in a failover drops its sharded
            // subscriptions (`sunsubscribe` pushed, so the client forgets
            // them too): every channel this instance has subscribers for
            // is subscribed again, on its slot's current primary.
            let topics: Vec<String> = {
                let interest = shared.interest.lock().unwrap_or_else(|p| p.into_inner());
                interest
                    .keys()
                    .map(|c| shared.keys.channel_topic(c))
                    .collect()
            };
            for topic in topics {
                shared
                    .subscriber
                    .ssubscribe(topic)
                    .await
                    .map_err(unavailable)?;
            }
        }
        confirm(backend).await
    };
    let outcome = done.await;
    if outcome.is_ok() {
        catch_up(backend, marks).await;
    }
    if let Ok(attached) = backend.attached() {
        shared.marks.release(|e| {
            attached.inbox.deliver(e);
        });
    }
    match outcome {
        Ok(()) => {
            shared.resubscribing.store(false, Ordering::SeqCst);
            shared.canary_seen_ms.store(now_ms(), Ordering::Relaxed);
            shared.pubsub_ok.store(true, Ordering::SeqCst);
            tracing::info!("redis subscriptions re-issued");
        }
        Err(e) => tracing::warn!(error = %e, "re-subscribing failed; the canary will retry"),
    }
}

/// Deliver what each channel's log holds after the offset last delivered
/// here (`marks`): what was published while the subscriptions were gone.
async fn catch_up(backend: &RedisBackend, marks: Vec<(String, u64)>) {
    use crate::backend::ChannelLog;
    use futures_util::StreamExt;
    let Ok(attached) = backend.attached() else {
        return;
    };
    let shared = backend.shared();
    let mut reads = futures_util::stream::iter(marks)
        .map(|(channel, from)| async move {
            let page = backend
                .channel_log(&channel, from, catch_up::READ_LIMIT)
                .await;
            (channel, from, page)
        })
        .buffered(CATCH_UP_READS);
    let delivered = std::cell::Cell::new(0u64);
    while let Some((channel, from, page)) = reads.next().await {
        let page = match page {
            Ok(page) => page,
            Err(e) => {
                tracing::debug!(%channel, error = %e, "catching up on a channel's log failed");
                continue;
            }
        };
        shared.marks.caught(&channel, from, page, |e| {
            delivered.set(delivered.get() + 1);
            attached.inbox.deliver(e);
        });
    }
    if delivered.get() > 0 {
        metrics::counter!("switchyard_pubsub_caught_up_total").increment(delivered.get());
        tracing::info!(
            frames = delivered.get(),
            "delivered what was published while the subscriptions were gone"
        );
    }
}

/// A live frame on `channel` came past a hole after offset `after`: read
/// the hole from the log and deliver it, then what was held behind it.
async fn fill(backend: RedisBackend, channel: String, after: u64) {
    use crate::backend::ChannelLog;
    let page = backend
        .channel_log(&channel, after, catch_up::READ_LIMIT)
        .await
        .inspect_err(
            |e| tracing::debug!(%channel, error = %e, "reading a hole from the log failed"),
        )
        .ok();
    let Ok(attached) = backend.attached() else {
        return;
    };
    let from_log = backend.shared().marks.filled(&channel, page, |e| {
        attached.inbox.deliver(e);
    });
    metrics::counter!("switchyard_pubsub_caught_up_total").increment(from_log);
}

/// Channel logs read at once during a catch-up.
const CATCH_UP_READS: usize = 32;

/// A Redis Cluster shard failed over: its old primary, once demoted, drops
/// the sharded subscriptions it held (pushing `sunsubscribe`), which must
/// be made again on the new one. The demotion reaches the old primary over
/// the cluster bus some time after the promotion shows, so they are made
/// again now and twice more as the topology settles.
pub fn follow_failover(backend: &RedisBackend) {
    let me = backend.clone();
    tokio::spawn(async move {
        for wait in FAILOVER_SETTLE {
            tokio::time::sleep(wait).await;
            resubscribe(&me).await;
        }
    });
}

/// [`follow_failover`]'s waits before each re-subscription.
const FAILOVER_SETTLE: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Wait until Redis has processed the (un)subscriptions sent so far.
/// fred resolves SUBSCRIBE / UNSUBSCRIBE once written (their answers come
/// out of band), so without this a publication right after a `subscribe`
/// reply could reach Redis before the subscription does. A PING on the same
/// connection is answered only after everything before it.
pub(super) async fn confirm(backend: &RedisBackend) -> BackendResult<()> {
    use fred::prelude::ClientLike;
    let shared = backend.shared();
    if shared.clustered {
        // SSUBSCRIBE is acknowledged in band (fred follows its redirects).
        // SUNSUBSCRIBE is not, and a PING would reach an arbitrary node:
        // after an unsubscribe a few envelopes may still arrive, which the
        // hub drops (no local subscriber).
        return Ok(());
    }
    shared
        .subscriber
        .ping::<()>(None)
        .await
        .map_err(unavailable)
}

/// Every few seconds send a canary through this instance's own inbox; when
/// none has come back for a while the subscriber is stalled: report
/// unavailable (`/ready` 503) and re-subscribe everything.
fn spawn_canary(backend: &RedisBackend) {
    let me = backend.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(CANARY_EVERY);
        loop {
            ticker.tick().await;
            let shared = me.shared();
            let Ok(attached) = me.attached() else {
                return;
            };
            if let Ok(client) = me.ready() {
                let _ = client
                    .publish::<(), _, _>(shared.keys.inbox(&attached.id), format!("p{}", now_ms()))
                    .await;
            }
            let silent = now_ms().saturating_sub(shared.canary_seen_ms.load(Ordering::Relaxed));
            if silent > CANARY_STALL.as_millis() as u64 && me.ready().is_ok() {
                if shared.pubsub_ok.swap(false, Ordering::SeqCst) {
                    tracing::error!(silent_ms = silent, "pub/sub stalled; re-subscribing");
                }
                metrics::counter!("switchyard_pubsub_resubscribes_total").increment(1);
                resubscribe(&me).await;
                shared.resync.send_modify(|n| *n += 1);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_payloads_round_trip() {
        let kick = Envelope::Kick {
            conn_id: "c1".into(),
            code: 4003,
            reason: "bye\nnow".into(),
        };
        let (_, payload) = encode_inbox(&kick).unwrap();
        match decode_inbox(&payload).unwrap() {
            Envelope::Kick {
                conn_id,
                code,
                reason,
            } => {
                assert_eq!(
                    (conn_id.as_str(), code, reason.as_str()),
                    ("c1", 4003, "bye\nnow")
                );
            }
            other => panic!("{other:?}"),
        }
        let conn = Envelope::Conn {
            conn_id: "c2".into(),
            frame: Frame::from(NOTE),
        };
        let (_, payload) = encode_inbox(&conn).unwrap();
        assert!(
            matches!(decode_inbox(&payload), Some(Envelope::Conn { frame, .. }) if frame.as_str() == NOTE)
        );
        assert!(decode_inbox("").is_none());
        assert!(decode_inbox("zc\nx").is_none());
    }

    const NOTE: &str = r#"{"jsonrpc":"2.0","method":"notify","params":{"a":"x\ny"}}"#;

    /// What anyone with access to Redis could publish on an instance's
    /// topics: counted and ignored, never delivered, never a channel drop.
    #[test]
    fn malformed_envelopes_are_refused() {
        assert!(decode_channel("c", &format!("0{NOTE}")).is_some());
        assert!(matches!(
            decode_channel("c", &format!("1{NOTE}")),
            Some(Envelope::Channel { last: true, .. })
        ));
        for bad in [
            "1".to_owned(),
            "0".to_owned(),
            "".to_owned(),
            format!("2{NOTE}"),
            "1{}".to_owned(),
            "0{\"jsonrpc\":\"2.0\",".to_owned(),
            "0not json".to_owned(),
        ] {
            assert!(decode_channel("c", &bad).is_none(), "{bad:?}");
        }
        for bad in [
            "c\n{}".to_owned(),
            "cc1\nnot json".to_owned(),
            "cc1\n{\"a\":1}".to_owned(),
            "kc1\n99999\nbye".to_owned(),
            "kc1\n1005\nbye".to_owned(),
            "kc1\n4003\n".to_owned() + &"x".repeat(200),
            "k\n4003\nbye".to_owned(),
        ] {
            assert!(decode_inbox(&bad).is_none(), "{bad:?}");
        }
        assert!(decode_inbox("kc1\n4003\nbye").is_some());
        assert!(decode_inbox(&format!("cc1\n{NOTE}")).is_some());
    }

    proptest::proptest! {
        /// Anything on an instance's topics: refused or well formed, never
        /// a panic.
        #[test]
        fn envelope_parsers_survive_any_payload(text in "(?s).{0,200}", prefix in "[01ckr]?") {
            let text = format!("{prefix}{text}");
            if let Some(Envelope::Channel { frame, .. }) = decode_channel("c", &text) {
                serde_json::from_str::<Value>(frame.as_str()).expect("a delivered frame parses");
            }
            let _ = decode_inbox(&text);
            let _ = notify_frame("c", &text);
        }
    }

    #[test]
    fn notifications_need_an_event() {
        let f = notify_frame("global", r#"{"event":"e","data":{"x":1},"timestamp":5}"#).unwrap();
        let v: Value = serde_json::from_str(f.as_str()).unwrap();
        assert_eq!(
            v["params"],
            json!({"channel":"global","event":"e","data":{"x":1},"timestamp":5})
        );
        for bad in ["", "[]", "{}", "{\"event\":3}", "not json"] {
            assert!(notify_frame("x", bad).is_none(), "{bad}");
        }
    }
}
