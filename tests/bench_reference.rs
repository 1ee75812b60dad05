//! The bench's reference server (`switchyard bench reference`): it answers
//! the load generator's calls exactly as Switchyard does (compared frame by
//! frame against an in-process instance), the generator's scenarios run
//! against it, and a storm of connections opens and closes cleanly.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use switchyard::bench;
use tokio::sync::oneshot;

/// A reference server on a free port, stopped when dropped.
struct Reference {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Reference {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(bench::reference::serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A client authenticated at the upgrade, as the generator connects, and
/// the params of its `welcome`.
async fn client(url: &str) -> (Ws, Value) {
    let mut ws = Ws::connect_with(url, &[("authorization", &bearer(ADMIN))])
        .await
        .expect("connects");
    let first = ws.next_json().await.expect("a first frame");
    assert_eq!(first["method"], "welcome", "first frame: {first}");
    (ws, first["params"].clone())
}

/// A `notify` frame's text with its timestamp blanked.
fn without_timestamp(frame: &str) -> String {
    let at = frame.find("\"timestamp\":").expect("a timestamp") + "\"timestamp\":".len();
    let digits = frame[at..]
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(frame.len() - at);
    format!("{}0{}", &frame[..at], &frame[at + digits..])
}

/// The next `notify` frame's text, skipping other pushes (presence).
async fn next_notify(ws: &mut Ws) -> String {
    loop {
        let text = ws.next_text().await.expect("open");
        if text.contains("\"method\":\"notify\"") {
            return text;
        }
    }
}

/// What the load generator sees of a server: the greeting, `ping`,
/// three subscribers, a publication as a call and as a notification.
struct Wire {
    welcome_keys: Vec<String>,
    ping: Value,
    subscribed: Value,
    published: Value,
    notify_frames: Vec<String>,
}

async fn wire(url: &str, channel: &str) -> Wire {
    let (mut publisher, welcome) = client(url).await;
    let mut welcome_keys: Vec<String> = welcome
        .as_object()
        .expect("params")
        .keys()
        .cloned()
        .collect();
    welcome_keys.sort();
    assert_eq!(welcome["authenticated"], true);
    let ping = publisher.call("ping", json!({})).await;
    let mut subscribers = Vec::new();
    let mut subscribed = Value::Null;
    for _ in 0..3 {
        let (mut ws, _) = client(url).await;
        subscribed = ws.call("subscribe", json!({"channels": [channel]})).await;
        subscribers.push(ws);
    }
    let published = publisher
        .call(
            "publish",
            json!({"channel": channel, "event": "bench", "data": {"t": 1}}),
        )
        .await;
    // As the generator publishes: a notification, no reply.
    publisher
        .send_json(&json!({"jsonrpc": "2.0", "method": "publish",
            "params": {"channel": channel, "event": "bench", "data": {"t": 2}}}))
        .await;
    let after = publisher.request("ping", json!({})).await;
    assert!(after["result"]["pong"] == true, "{after}");
    let mut notify_frames = Vec::new();
    for ws in &mut subscribers {
        notify_frames.push(without_timestamp(&next_notify(ws).await));
        notify_frames.push(without_timestamp(&next_notify(ws).await));
    }
    Wire {
        welcome_keys,
        ping,
        subscribed,
        published,
        notify_frames,
    }
}

#[tokio::test]
async fn answers_the_generator_as_switchyard_does() {
    let reference = Reference::start().await;
    let server = TestServer::default().await;
    let channel = "public:bench-ref";
    let ours = wire(&reference.url(), channel).await;
    let theirs = wire(&server.url("/ws"), channel).await;

    // The device challenge is a Switchyard feature the reference lacks.
    let expected: Vec<String> = theirs
        .welcome_keys
        .iter()
        .filter(|k| *k != "challenge")
        .cloned()
        .collect();
    assert_eq!(ours.welcome_keys, expected);
    assert_eq!(ours.ping["pong"], true);
    assert!(ours.ping["ts"].as_u64().is_some(), "{}", ours.ping);
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&ours.ping), keys(&theirs.ping));
    assert_eq!(ours.subscribed, json!({"subscribed": [channel]}));
    assert_eq!(ours.subscribed, theirs.subscribed);
    assert_eq!(ours.published, json!({"delivered": 3}));
    assert_eq!(ours.published, theirs.published);
    assert_eq!(ours.notify_frames.len(), 6);
    assert_eq!(ours.notify_frames, theirs.notify_frames);
    server.stop().await;
}

#[tokio::test]
async fn refuses_what_it_lacks_with_the_protocol_errors() {
    let reference = Reference::start().await;
    let mut anonymous = Ws::connect(&reference.url()).await.expect("connects");
    let welcome = anonymous.expect_push("welcome").await;
    assert_eq!(welcome["authenticated"], false);
    assert_eq!(anonymous.call("ping", json!({})).await["pong"], true);
    let channels = json!({"channels": ["public:x"]});
    assert_eq!(anonymous.error_code("subscribe", channels).await, -32000);

    let (mut ws, _) = client(&reference.url()).await;
    assert_eq!(ws.error_code("subscribe", json!({})).await, -32602);
    assert_eq!(ws.error_code("sessions.list", json!({})).await, -32601);
    ws.send_text("{not json").await;
    let reply = ws.next_reply().await;
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert_eq!(reply["id"], Value::Null);
    ws.send_text(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#)
        .await;
    assert_eq!(ws.next_reply().await["error"]["code"], -32600);
    let left = ws
        .call("unsubscribe", json!({"channels": ["public:never"]}))
        .await;
    assert_eq!(left, json!({"unsubscribed": []}));
}

#[tokio::test]
async fn the_generator_scenarios_run_against_it() {
    let reference = Reference::start().await;
    let urls = [reference.url()];
    let ping = bench::ping(&urls[0], ADMIN, 2, 1).await.expect("ping runs");
    assert!(ping["calls"].as_u64().unwrap_or(0) > 0, "{ping}");
    let fanout = bench::fanout(&urls, ADMIN, 3, 5, 100)
        .await
        .expect("fanout runs");
    assert_eq!(fanout["deliveries"], 15, "{fanout}");
    assert_eq!(fanout["lost"], 0, "{fanout}");
    let latency = bench::latency(&urls, ADMIN, 50, 1, 1)
        .await
        .expect("latency runs");
    assert_eq!(latency["lost"], 0, "{latency}");
}

#[tokio::test]
async fn a_storm_of_connections_opens_and_closes_cleanly() {
    let reference = Reference::start().await;
    let storm = bench::Storm {
        concurrency: 64,
        hold: Duration::ZERO,
        settle: Duration::from_secs(3),
        warm: 50,
    };
    // The server runs in this process: its memory is this process's.
    let report = bench::storm(&reference.url(), ADMIN, 200, std::process::id(), storm)
        .await
        .expect("the storm runs");
    assert_eq!(report["opened"], 200, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["closed_cleanly"], 200, "{report}");
    assert_eq!(report["warm_connections"], 50, "{report}");
    for field in [
        "rss_cold_kib",
        "rss_before_kib",
        "rss_peak_kib",
        "rss_held_kib",
        "rss_after_close_kib",
        "anon_before_kib",
        "anon_after_close_kib",
    ] {
        assert!(report[field].as_u64().unwrap_or(0) > 0, "{field}: {report}");
    }
    // Still serving afterwards.
    let (mut ws, _) = client(&reference.url()).await;
    assert_eq!(ws.call("ping", json!({})).await["pong"], true);
}
