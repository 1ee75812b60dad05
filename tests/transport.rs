//! The WebSocket transport: frame size limit, bounded outbound queues
//! (slow consumers), heartbeats and client timeouts, binary frames.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use switchyard::config::Window;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

type Raw = WebSocketStream<TcpStream>;

/// A raw WebSocket on its own TCP socket (optionally with a tiny receive
/// buffer, so the kernel cannot hide a client that stopped reading), with
/// a bearer token.
async fn raw_connect(server: &TestServer, token: &str, recv_buffer: Option<u32>) -> Raw {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let stream = tokio::time::timeout(WAIT, socket.connect(server.addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut request = server.url("/ws").into_client_request().expect("request");
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    ws
}

/// Read JSON text frames until the reply with `id` (pushes are skipped).
async fn raw_reply(ws: &mut Raw, id: Value) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the wait")
            .expect("open")
            .expect("no error");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v.get("method").is_none() && v["id"] == id {
                return v;
            }
        }
    }
}

/// How a raw socket ended, reading (and discarding) everything before.
#[derive(Debug)]
enum End {
    Close(Option<u16>),
    /// EOF or a transport error without a close frame (shown in failures).
    #[allow(dead_code)]
    Dropped(String),
    /// Still open when `within` ran out.
    Open,
}

async fn read_until_end(ws: &mut Raw, within: Duration) -> (End, usize) {
    let deadline = tokio::time::Instant::now() + within;
    let mut texts = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return (End::Open, texts),
            Ok(None) => return (End::Dropped("eof".into()), texts),
            Ok(Some(Err(e))) => return (End::Dropped(e.to_string()), texts),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (End::Close(frame.map(|f| u16::from(f.code))), texts);
            }
            Ok(Some(Ok(Message::Text(_)))) => texts += 1,
            Ok(Some(Ok(_))) => {}
        }
    }
}

fn no_rate_limits(config: &mut switchyard::config::Config) {
    config.rate_limits.messages_per_conn = Window::new(1_000_000, 1_000);
    config.rate_limits.messages_per_identity = Window::new(1_000_000, 1_000);
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let mut config = config();
    config.limits.max_payload = 2048;
    let server = TestServer::start(config).await;

    let mut big = server.client(ADMIN).await;
    big.expect_push("welcome").await;
    // A well-formed request, padded past the limit.
    let text = json!({"id": 1, "method": "ping", "params": {"pad": "x".repeat(4096)}}).to_string();
    assert!(text.len() > 4096);
    big.send_text(&text).await;
    assert_eq!(big.expect_close_code().await, 1009);
    assert!(
        !big.pushed.iter().any(|f| f["id"] == 1),
        "the oversize request must not be answered: {:?}",
        big.pushed
    );

    // Under the limit on another connection: answered normally.
    let mut small = server.client(ADMIN).await;
    let text = json!({"id": 7, "method": "ping", "params": {"pad": "y".repeat(1000)}}).to_string();
    assert!(text.len() > 1000 && text.len() < 2048);
    small.send_text(&text).await;
    let reply = small.reply_to(json!(7)).await;
    assert_eq!(reply["result"]["pong"], true, "{reply}");
    assert_eq!(small.call("ping", json!({})).await["pong"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4008_while_others_receive_everything() {
    const MESSAGES: usize = 2000;
    const WINDOW: usize = 8;
    let mut config = config();
    config.limits.outbound_queue = 16;
    no_rate_limits(&mut config);
    let server = TestServer::start(config).await;

    let mut admin = server.client(ADMIN).await;
    let mut fast = server.client(WRITER).await;
    fast.call("subscribe", json!({"channels": ["public:flood"]}))
        .await;

    // The slow consumer subscribes, then never reads again.
    let mut slow = raw_connect(&server, READER, Some(4096)).await;
    slow.send(Message::Text(
        json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"channels": ["public:flood"]}})
            .to_string()
            .into(),
    ))
    .await
    .expect("send");
    let reply = raw_reply(&mut slow, json!(1)).await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(server.app.hub.len(), 3);

    // The flood: publishes in small pipelined batches; the reading
    // subscriber reads each batch as it comes.
    let payload = "z".repeat(8 * 1024);
    let flood = tokio::spawn(async move {
        let mut received = 0usize;
        let mut next = 0usize;
        while next < MESSAGES {
            let batch: Vec<Value> = (next..next + WINDOW)
                .map(|i| {
                    json!({"jsonrpc": "2.0", "id": i, "method": "publish",
                        "params": {"channel": "public:flood", "event": "flood", "data": {"i": i, "pad": payload}}})
                })
                .collect();
            admin.send_json(&Value::Array(batch)).await;
            let replies = loop {
                let frame = admin.next_json().await.expect("admin stays connected");
                if frame.is_array() {
                    break frame;
                }
            };
            for r in replies.as_array().expect("batch reply") {
                assert!(r.get("error").is_none(), "publish failed: {r}");
            }
            next += WINDOW;
            while received < next {
                let frame = fast
                    .next_json()
                    .await
                    .expect("the reading client stays connected");
                if frame["method"] == "notify" && frame["params"]["channel"] == "public:flood" {
                    assert_eq!(
                        frame["params"]["data"]["i"], received,
                        "in order, none lost"
                    );
                    received += 1;
                }
            }
        }
        // Still healthy afterwards.
        assert_eq!(fast.call("ping", json!({})).await["pong"], true);
        (received, admin, fast)
    });

    // The slow consumer is dropped from the hub during the flood...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.app.hub.len() > 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.app.hub.len(),
        2,
        "the client that stopped reading is closed"
    );
    // ...and when it reads again it finds the queued frames, then close 4008.
    let (end, skipped) = read_until_end(&mut slow, Duration::from_secs(10)).await;
    let (received, _admin, _fast) = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flood finishes")
        .expect("the flood task succeeds");
    assert_eq!(
        received, MESSAGES,
        "the reading subscriber got every message"
    );
    match end {
        End::Close(Some(code)) => assert_eq!(code, 4008, "after {skipped} queued frames"),
        other => panic!("expected close 4008 after {skipped} queued frames, got {other:?}"),
    }
    assert_eq!(server.app.hub.len(), 2);
    let metrics = http(server.addr, "GET", "/metrics", &[], None).await.2;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_slow_consumer_closes_total ")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_keeps_readers_and_drops_silent_clients() {
    let mut config = config();
    config.limits.heartbeat_ms = 200;
    config.limits.client_timeout_ms = 1000;
    config.limits.presence_tick_ms = 60_000;
    let server = TestServer::start(config).await;

    // A reader: tungstenite answers each ping while the stream is polled.
    let mut reader = raw_connect(&server, ADMIN, None).await;
    let reading = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut pings = 0;
        loop {
            match tokio::time::timeout_at(until, reader.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Close(frame)))) => panic!("reader closed: {frame:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("reader ended: {other:?}"),
            }
        }
        (reader, pings)
    });

    // A silent client: never polls its socket, so never answers a ping.
    let mut silent = raw_connect(&server, ADMIN, None).await;
    assert!(eventually(|| async { server.app.hub.len() == 2 }).await);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let (mut reader, pings) = reading.await.expect("reader task");
    assert!(
        pings >= 5,
        "about one ping per 200 ms over 2 s, saw {pings}"
    );
    assert_eq!(
        server.app.hub.len(),
        1,
        "only the silent client was dropped"
    );
    reader
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "id": 9, "method": "ping"})
                .to_string()
                .into(),
        ))
        .await
        .expect("reader still open");
    assert_eq!(
        raw_reply(&mut reader, json!(9)).await["result"]["pong"],
        true
    );

    let (end, _) = read_until_end(&mut silent, WAIT).await;
    match end {
        End::Close(Some(code)) => assert_eq!(code, 1001),
        End::Close(None) | End::Dropped(_) => {}
        End::Open => panic!("the silent client is still open"),
    }
}

#[tokio::test]
async fn binary_frame_gets_invalid_request_and_connection_survives() {
    let server = TestServer::default().await;
    let mut ws = server.client(WRITER).await;
    ws.send_raw(Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into()))
        .await
        .expect("send");
    let reply = ws.reply_to(json!(null)).await;
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(reply["jsonrpc"], "2.0");
    // Still usable afterwards, for calls and for deliveries.
    assert_eq!(ws.call("ping", json!({})).await["pong"], true);
    ws.call("subscribe", json!({"channels": ["public:bin"]}))
        .await;
    let result = ws
        .call(
            "publish",
            json!({"channel": "public:bin", "event": "e", "data": 1}),
        )
        .await;
    assert_eq!(result["delivered"], 1);
    assert_eq!(ws.expect_push("notify").await["data"], 1);
}

/// A text frame that is not UTF-8 closes the connection with 1007 (RFC
/// 6455 §8.1), and its neighbours keep being served.
#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let server = TestServer::default().await;
    let mut neighbour = server.client(WRITER).await;
    let mut ws = server.client(WRITER).await;
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    ws.send_raw(Message::Frame(frame)).await.expect("send");
    assert_eq!(ws.expect_close_code().await, 1007);
    assert_eq!(neighbour.call("ping", json!({})).await["pong"], true);
}

/// Slowloris: a client dribbling header lines is cut off at the header
/// timeout instead of holding its socket, and a neighbour keeps being
/// served throughout.
#[tokio::test]
async fn slow_headers_are_cut_off_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let mut config = config();
    config.limits.header_timeout_ms = 500;
    let server = TestServer::start(config).await;
    let mut neighbour = server.client(WRITER).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(5), Some(Duration::from_millis(100))).await,
            "a slow-header socket outlived the header timeout"
        );
    }
    assert_eq!(neighbour.call("ping", json!({})).await["pong"], true);
    let mut fresh = server.client(WRITER).await;
    assert_eq!(fresh.call("ping", json!({})).await["pong"], true);
}

/// Every request on a kept-alive connection has the header timeout, not
/// only the first, and an idle kept-alive connection is closed after it.
#[tokio::test]
async fn kept_alive_connections_have_the_header_timeout_for_every_request() {
    use tokio::io::AsyncWriteExt;
    let mut config = config();
    config.limits.header_timeout_ms = 500;
    let server = TestServer::start(config).await;
    let request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..2 {
        slow.write_all(request).await.unwrap();
        let answer = read_text_until(&mut slow, "}").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(
            &mut slow,
            Duration::from_secs(5),
            Some(Duration::from_millis(100))
        )
        .await,
        "a third request dribbling its header outlived the header timeout"
    );
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(request).await.unwrap();
    read_text_until(&mut idle, "}").await;
    assert!(
        closed_within(&mut idle, Duration::from_secs(5), None).await,
        "an idle kept-alive connection outlived the header timeout"
    );
}

/// TCP connections are counted per address at accept: one over the cap is
/// closed before the server reads a byte, and the slots come back when
/// the sockets go.
#[tokio::test]
async fn tcp_connections_per_address_are_capped_at_accept() {
    let mut config = config();
    config.limits.max_connections_per_ip = 10;
    let server = TestServer::start(config).await;
    // The WebSocket cap plus the headroom for HTTP calls and 429s.
    let idle = fill_address_cap(server.addr, 10 + 64).await;
    drop(idle);
    let ok = within(WAIT, || async {
        Ws::connect_with(&server.url("/ws"), &[("authorization", &bearer(WRITER))])
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "slots come back when the sockets close");
}

/// Handshakes in progress are capped for all peers together: idle sockets
/// that never send a request cannot hold more than the cap.
#[tokio::test]
async fn pending_handshakes_are_capped() {
    let mut config = config();
    config.limits.max_pending_handshakes = 5;
    let server = TestServer::start(config).await;
    let mut neighbour = server.client(WRITER).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(2), None).await,
        "a sixth pending handshake stayed open"
    );
    // Established connections do not count.
    assert_eq!(neighbour.call("ping", json!({})).await["pong"], true);
    drop(idle);
    let ok = within(WAIT, || async {
        Ws::connect_with(&server.url("/ws"), &[("authorization", &bearer(WRITER))])
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "handshake slots come back");
}
