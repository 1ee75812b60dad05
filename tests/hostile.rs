//! Hostile clients against real processes: two `switchyard` binaries on
//! one Redis. Floods (frames, subscriptions, readers that never read),
//! credential brute force across instances behind rotating forwarded
//! headers, and tokens replayed after they expired. Each test checks that
//! a well-behaved neighbour keeps being served and that the instance's
//! resident memory stays within a fixed bound.
//!
//! Not a behaviour test: it starts its own Redis and processes whatever
//! `SWITCHYARD_TEST_BACKEND` says.

mod common;

use common::instance::*;
use common::*;
use futures_util::SinkExt;
use serde_json::json;
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// How much an instance's resident memory may grow over a test. An idle
/// instance holds about 30 MiB; the floods below, unbounded, would queue
/// hundreds of MiB (20 000 replies; 24 readers × 720 frames of 16 KiB,
/// each encoded per socket were it not shared).
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;

/// Resident memory of `instance` in KiB (`VmRSS` of /proc).
fn rss_kib(instance: &Instance) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", instance.child.0.id()))
        .expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Samples an instance's RSS every 20 ms until dropped; the peak.
struct RssWatch {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(instance: &Instance) -> Self {
        let path = format!("/proc/{}/status", instance.child.0.id());
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(instance)));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Some(kib) = std::fs::read_to_string(&path).ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                }) {
                    seen.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { peak, task }
    }

    fn peak(&self) -> u64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn assert_rss_bounded(instance: &Instance, base: u64, watch: &RssWatch) {
    let peak = watch.peak().max(rss_kib(instance));
    eprintln!(
        "{}: RSS {base} KiB at the start, {peak} KiB at the peak",
        instance.id
    );
    assert!(
        peak.saturating_sub(base) < RSS_GROWTH_BOUND_KIB,
        "{}: RSS grew from {base} KiB to {peak} KiB",
        instance.id
    );
}

type Raw = WebSocketStream<TcpStream>;

/// A WebSocket on a socket with a tiny receive buffer (the kernel cannot
/// hide a client that stops reading), authenticated at the upgrade.
async fn raw_client(instance: &Instance, token: &str) -> Raw {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = tokio::time::timeout(WAIT, socket.connect(instance.addr()))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut request = format!("ws://127.0.0.1:{}/ws", instance.port)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&bearer(token)).expect("header"),
    );
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    ws
}

/// A subscriber that published frames must keep reaching, in order.
async fn subscribed(instance: &Instance, channel: &str) -> Ws {
    let mut ws = instance.client(WRITER).await;
    ws.call("subscribe", json!({"channels": [channel]})).await;
    ws
}

/// `count` publications of `kib` KiB each on `channel` by `publisher`;
/// `neighbour` must get every one, in order.
async fn publish_and_hear(
    publisher: &mut Ws,
    neighbour: &mut Ws,
    channel: &str,
    count: u64,
    kib: usize,
) {
    let blob = "x".repeat(kib * 1024);
    let publish = async {
        for n in 0..count {
            publisher
                .call(
                    "publish",
                    json!({"channel": channel, "event": "e", "data": {"n": n, "blob": blob}}),
                )
                .await;
        }
    };
    // The neighbour reads as frames come, as a live client does.
    let hear = async {
        for n in 0..count {
            let push = push_where(neighbour, "notify", |p| p["channel"] == channel).await;
            assert_eq!(push["data"]["n"], n, "the neighbour missed a publication");
        }
    };
    tokio::join!(publish, hear);
}

#[tokio::test]
async fn floods_stay_bounded_and_neighbours_keep_receiving() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[("SWITCHYARD_LIMITS__OUTBOUND_QUEUE", "128")]).await;
    // The publisher on b is the test's own tool, not a flooder: its
    // message windows (500 a second per connection) must not pace it.
    let b = Instance::start(
        &redis,
        "b",
        &[("SWITCHYARD_RATE_LIMITS__MESSAGES_PER_CONN__LIMIT", "100000")],
    )
    .await;
    let mut neighbour = subscribed(&a, "public:room").await;
    let mut publisher = b.client(ADMIN).await;
    let base = rss_kib(&a);
    let watch = RssWatch::start(&a);

    // Readers that never read, on the busy channel.
    let mut sleepers = Vec::new();
    for _ in 0..24 {
        let mut ws = raw_client(&a, WRITER).await;
        let sub = json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                         "params": {"channels": ["public:room"]}});
        ws.send(Message::Text(sub.to_string().into()))
            .await
            .unwrap();
        sleepers.push(ws);
    }
    // A frame flood that never reads its replies.
    let mut flooder = raw_client(&a, BOB).await;
    let flood = tokio::spawn(async move {
        let ping = Message::Text(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.into());
        for _ in 0..20_000 {
            if flooder.feed(ping.clone()).await.is_err() {
                return true;
            }
        }
        flooder.flush().await.is_err()
    });
    // A subscription flood: far past the cap, in batches.
    let mut greedy = a.client(ADMIN).await;
    let mut refused = 0;
    for batch in 0..50 {
        let channels: Vec<String> = (0..100).map(|i| format!("public:f{batch}-{i}")).collect();
        let reply = greedy
            .request("subscribe", json!({ "channels": channels }))
            .await;
        if reply["error"]["data"]["limit"] == "subscriptions per connection" {
            refused += 1;
        }
    }
    // 100 fit under the cap of 128; no further batch does.
    assert_eq!(refused, 49, "the subscription cap held");

    // 11.25 MiB: more than a sleeper's kernel buffers (up to 4 MiB) and
    // queue (128 frames, 2 MiB) can hold.
    publish_and_hear(&mut publisher, &mut neighbour, "public:room", 720, 16).await;
    let flood_ended = tokio::time::timeout(WAIT, flood).await;
    assert!(
        flood_ended.is_ok(),
        "the flooder was neither served nor cut off"
    );
    assert_eq!(greedy.call("ping", json!({})).await["pong"], true);
    assert_rss_bounded(&a, base, &watch);
    // The sleepers were cut off as slow consumers, not kept queueing.
    let status = greedy.call("status", json!({})).await;
    let local = status["local"]["connections"].as_u64().expect("a count");
    assert!(local <= 3, "slow consumers still connected: {status}");
    drop(sleepers);
}

/// Failed credentials count per client address in Redis: a brute force
/// spread over both instances, rotating every forwarded header a proxy
/// could set (none is trusted here), locks the address out everywhere.
#[tokio::test]
async fn brute_force_is_counted_across_instances_whatever_the_forwarded_headers() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[]).await;
    let b = Instance::start(&redis, "b", &[]).await;
    let mut neighbour = subscribed(&a, "public:room").await;
    let mut publisher = b.client(ADMIN).await;
    let base = rss_kib(&b);
    let watch = RssWatch::start(&b);
    let mut refused = Vec::new();
    for n in 0..14u8 {
        let target = if n % 2 == 0 { &a } else { &b };
        let forwarded = format!("10.9.{n}.1");
        let wrong = bearer(&format!("wrong-token-{n}-0123456789abcdef"));
        let url = format!("ws://127.0.0.1:{}/ws", target.port);
        let attempt = Ws::connect_with(
            &url,
            &[
                ("authorization", &wrong),
                ("x-forwarded-for", &forwarded),
                ("x-real-ip", &forwarded),
                ("forwarded", &format!("for={forwarded}")),
            ],
        )
        .await;
        match attempt {
            Err(ConnectError::Http(status, _)) => refused.push(status),
            Err(e) => panic!("a wrong token was not refused: {e:?}"),
            Ok(_) => panic!("a wrong token opened a socket"),
        }
    }
    // Ten failures are allowed per window; then the address is locked out.
    assert_eq!(&refused[..10], &[401; 10], "{refused:?}");
    assert!(refused[10..].iter().all(|&s| s == 429), "{refused:?}");
    // Now even the right token from that address is turned away, on both.
    for target in [&a, &b] {
        let url = format!("ws://127.0.0.1:{}/ws", target.port);
        let good = Ws::connect_with(&url, &[("authorization", &bearer(WRITER))]).await;
        assert!(
            matches!(good, Err(ConnectError::Http(429, Some(_)))),
            "{}: locked out with a Retry-After",
            target.id
        );
    }
    // Sockets already open are not: the neighbour keeps hearing.
    publish_and_hear(&mut publisher, &mut neighbour, "public:room", 20, 4).await;
    assert_rss_bounded(&b, base, &watch);
}

/// A JWT is good until its `exp` and no longer: the socket it opened is
/// closed at expiry, and replaying it afterwards fails on every instance
/// and every way in (upgrade, in-band `auth`, HTTP).
#[tokio::test]
async fn expired_tokens_are_refused_on_every_instance() {
    let env = [
        ("SWITCHYARD_JWT_SECRET", JWT_SECRET),
        ("SWITCHYARD_AUTH__JWT__LEEWAY_SECS", "0"),
    ];
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &env).await;
    let b = Instance::start(&redis, "b", &env).await;
    let mut neighbour = subscribed(&a, "public:room").await;
    let mut publisher = b.client(ADMIN).await;
    let exp = now_secs() + 2;
    let token = jwt(json!({"sub": "short-lived", "exp": exp, "scope": "operator.read"}));
    let mut holder = a.client(&token).await;
    let (status, _, _) = http(
        b.addr(),
        "GET",
        "/api/channels",
        &[("authorization", &bearer(&token))],
        None,
    )
    .await;
    assert_eq!(status, 200, "the token works before it expires");

    let close = tokio::time::timeout(Duration::from_secs(6), holder.expect_close())
        .await
        .expect("closed at expiry");
    assert_eq!(close.map(|c| u16::from(c.code)), Some(4001));
    while now_secs() <= exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for target in [&a, &b] {
        let url = format!("ws://127.0.0.1:{}/ws", target.port);
        let replay = Ws::connect_with(&url, &[("authorization", &bearer(&token))]).await;
        assert!(
            matches!(replay, Err(ConnectError::Http(401, _))),
            "{}: an expired token was not refused with 401",
            target.id
        );
        let mut anonymous = Ws::connect(&url).await.expect("connects");
        anonymous.expect_push("welcome").await;
        let reply = anonymous.request("auth", json!({"token": token})).await;
        assert_eq!(reply["error"]["code"], -32000, "{reply}");
        assert_eq!(reply["error"]["data"]["reason"], "token expired", "{reply}");
        let (status, _, body) = http(
            target.addr(),
            "GET",
            "/api/channels",
            &[("authorization", &bearer(&token))],
            None,
        )
        .await;
        assert_eq!(status, 401, "{body}");
    }
    publish_and_hear(&mut publisher, &mut neighbour, "public:room", 5, 4).await;
}
