//! `switchyard bench`: a load generator against running instances.
//!
//! Five scenarios, each printing one JSON line of results:
//! - `latency`: publishers on the first URL, one subscriber on the last;
//!   every message carries its send time, the subscriber records
//!   publish → delivery latency at a fixed total rate.
//! - `fanout`: N subscribers spread over all URLs, one publisher; counts
//!   deliveries per second and lost messages.
//! - `idle`: opens N authenticated connections that stay idle and reports
//!   the server's resident memory per connection (`--pid`).
//! - `ping`: N connections calling `ping` in a loop; throughput and latency.
//! - `invoke`: N connections on the first URL calling `node.invoke` on a
//!   node connected to the last URL; routed-call throughput and latency.
//!
//! The bench and the servers share the machine's clock, so one process's
//! `Instant` timestamps are valid for every measurement.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Errors that stop a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("connect {0}: {1}")]
    Connect(String, String),
    #[error("{0}")]
    Protocol(String),
}

/// Latency percentiles in microseconds.
fn percentiles(mut samples: Vec<u64>) -> Value {
    if samples.is_empty() {
        return json!(null);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    json!({
        "count": samples.len(),
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": samples[samples.len() - 1],
    })
}

/// The generator's own socket settings. tungstenite zero-fills its read
/// buffer before every read: at the default 128 KiB that memset, not the
/// servers, was most of a fan-out run's CPU (10 000 sockets × one read per
/// frame). Frames here are a few hundred bytes; the buffer grows for a
/// larger one.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

async fn connect(url: &str, token: &str) -> Result<Socket, BenchError> {
    let mut request = url
        .into_client_request()
        .map_err(|e| BenchError::Connect(url.into(), e.to_string()))?;
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| BenchError::Connect(url.into(), e.to_string()))?;
    request.headers_mut().insert("authorization", value);
    let (socket, _) =
        tokio_tungstenite::connect_async_with_config(request, Some(client_config()), true)
            .await
            .map_err(|e| BenchError::Connect(url.into(), e.to_string()))?;
    Ok(socket)
}

/// Send a call and wait for its reply, skipping pushes.
async fn call(
    socket: &mut Socket,
    id: u64,
    method: &str,
    params: Value,
) -> Result<Value, BenchError> {
    let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .map_err(|e| BenchError::Protocol(e.to_string()))?;
    while let Some(msg) = socket.next().await {
        let Ok(Message::Text(text)) = msg else {
            continue;
        };
        let reply: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
        if reply["id"] == id {
            if let Some(error) = reply.get("error") {
                return Err(BenchError::Protocol(format!("{method}: {error}")));
            }
            return Ok(reply["result"].clone());
        }
    }
    Err(BenchError::Protocol("connection closed".into()))
}

async fn subscriber(url: &str, token: &str, channel: &str) -> Result<Socket, BenchError> {
    let mut socket = connect(url, token).await?;
    call(&mut socket, 1, "subscribe", json!({"channels": [channel]})).await?;
    Ok(socket)
}

/// Publish as a JSON-RPC notification: no reply frame to read back.
fn publish_frame(channel: &str, data: Value) -> Message {
    let frame = json!({"jsonrpc": "2.0", "method": "publish",
        "params": {"channel": channel, "event": "bench", "data": data}});
    Message::Text(frame.to_string().into())
}

/// Cross-instance delivery latency at `rate` messages per second.
///
/// The publishers run on their own threads and pace with the operating
/// system's high-resolution sleep, interleaved so the total rate is evenly
/// spaced: tokio's timer ticks in whole milliseconds, which would send a
/// 10 000 msg/s schedule as bursts of ten every millisecond and measure the
/// generator's own bursts. Each message carries the time it was due, not
/// the time it left, so a generator that falls behind shows up as latency
/// rather than hiding it.
pub async fn latency(
    urls: &[String],
    token: &str,
    rate: u64,
    seconds: u64,
    publishers: usize,
) -> Result<Value, BenchError> {
    let channel = format!("public:bench-lat-{}", std::process::id());
    let first = &urls[0];
    let last = &urls[urls.len() - 1];
    let mut sub = subscriber(last, token, &channel).await?;
    let total = rate * seconds;
    let per_publisher = total / publishers as u64;
    let expected = per_publisher * publishers as u64;
    let mut sockets = Vec::with_capacity(publishers);
    for _ in 0..publishers {
        let (url, token) = (first.clone(), token.to_owned());
        sockets.push(
            tokio::task::spawn_blocking(move || blocking_connect(&url, &token))
                .await
                .map_err(|e| BenchError::Protocol(e.to_string()))??,
        );
    }
    let epoch = Instant::now();
    // The first message is due a little after every thread has started.
    let start = epoch + Duration::from_millis(20);
    let spacing = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(publishers);
    for (index, mut socket) in sockets.into_iter().enumerate() {
        let channel = channel.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            for k in 0..per_publisher {
                let slot = k * publishers as u64 + index as u64;
                let due = start + spacing.mul_f64(slot as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let sent = due.duration_since(epoch).as_micros() as u64;
                if socket
                    .send(publish_frame(&channel, json!({"t": sent})))
                    .is_err()
                {
                    break;
                }
            }
            // Closed by the caller once the subscriber is done.
            socket
        }));
    }
    let mut samples = Vec::with_capacity(expected as usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds + 10);
    while (samples.len() as u64) < expected {
        let next = tokio::time::timeout_at(deadline, sub.next()).await;
        let Ok(Some(Ok(Message::Text(text)))) = next else {
            if matches!(next, Ok(Some(Ok(_)))) {
                continue;
            }
            break;
        };
        let now = epoch.elapsed().as_micros() as u64;
        if let Some(sent) = send_time(text.as_str()) {
            samples.push(now.saturating_sub(sent));
        }
    }
    for task in tasks {
        if let Ok(mut socket) = task.await {
            let _ = socket.close(None);
        }
    }
    let received = samples.len() as u64;
    Ok(json!({
        "scenario": "latency",
        "rate": rate,
        "seconds": seconds,
        "publishers": publishers,
        "sent": expected,
        "received": received,
        "lost": expected - received,
        "latency": percentiles(samples),
    }))
}

type BlockingSocket = tokio_tungstenite::tungstenite::WebSocket<std::net::TcpStream>;

/// A socket for a publisher thread: plain blocking I/O, no runtime.
fn blocking_connect(url: &str, token: &str) -> Result<BlockingSocket, BenchError> {
    let failed = |e: &dyn std::fmt::Display| BenchError::Connect(url.into(), e.to_string());
    let mut request = url.into_client_request().map_err(|e| failed(&e))?;
    let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| failed(&e))?;
    request.headers_mut().insert("authorization", value);
    let addr = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| failed(&"no host in the URL"))?;
    let stream = std::net::TcpStream::connect(addr).map_err(|e| failed(&e))?;
    stream.set_nodelay(true).map_err(|e| failed(&e))?;
    // A server that stops reading must not hold the thread forever.
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| failed(&e))?;
    let (socket, _) = tokio_tungstenite::tungstenite::client::client_with_config(
        request,
        stream,
        Some(client_config()),
    )
    .map_err(|e| failed(&e))?;
    Ok(socket)
}

/// Fan-out subscribers connecting and subscribing at the same time.
const SUBSCRIBING_AT_ONCE: usize = 64;

/// What one fan-out reader has received so far.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    /// When the latest delivery arrived (µs since the run's epoch).
    last_at: AtomicU64,
}

/// One publisher, `subscribers` spread over `urls`.
pub async fn fanout(
    urls: &[String],
    token: &str,
    subscribers: usize,
    messages: u64,
    rate: u64,
) -> Result<Value, BenchError> {
    let channel = format!("public:bench-fan-{}", std::process::id());
    let epoch = Instant::now();
    let mut readers = Vec::with_capacity(subscribers);
    // One tally per reader: counters shared by every reader would bounce
    // their cache line between the cores on each delivery, and that cost
    // would be the generator's, not the servers'.
    let mut tallies = Vec::with_capacity(subscribers);
    // Subscribers join concurrently, as after a deploy or a network blip;
    // the time it takes is reported (`subscribe_seconds`).
    let joined = Instant::now();
    let sockets: Vec<Socket> = futures_util::stream::iter(0..subscribers)
        .map(|i| subscriber(&urls[i % urls.len()], token, &channel))
        .buffer_unordered(SUBSCRIBING_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let subscribe_seconds = joined.elapsed().as_secs_f64();
    for mut socket in sockets {
        let tally = Arc::new(Tally::default());
        tallies.push(tally.clone());
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages as usize);
            while (latencies.len() as u64) < messages {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        // Reading the send time with a scan rather than a
                        // JSON parse keeps the generator's share small.
                        let Some(sent) = send_time(text.as_str()) else {
                            continue;
                        };
                        let now = epoch.elapsed().as_micros() as u64;
                        latencies.push(now.saturating_sub(sent));
                        tally.received.fetch_add(1, Ordering::Relaxed);
                        tally.last_at.store(now, Ordering::Relaxed);
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            latencies
        }));
    }
    let mut publisher = connect(&urls[0], token).await?;
    let start = epoch.elapsed().as_micros() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for _ in 0..messages {
        ticker.tick().await;
        let sent = epoch.elapsed().as_micros() as u64;
        publisher
            .send(publish_frame(&channel, json!({"t": sent})))
            .await
            .map_err(|e| BenchError::Protocol(e.to_string()))?;
    }
    let expected = messages * subscribers as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let received = |tallies: &[Arc<Tally>]| -> u64 {
        tallies
            .iter()
            .map(|t| t.received.load(Ordering::Relaxed))
            .sum()
    };
    while received(&tallies) < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut latencies = Vec::with_capacity(expected as usize);
    // A reader that has everything returns at once; one still short of it
    // (a lost message) is stopped.
    for mut reader in readers {
        match tokio::time::timeout(Duration::from_millis(100), &mut reader).await {
            Ok(Ok(mut own)) => latencies.append(&mut own),
            _ => reader.abort(),
        }
    }
    let got = received(&tallies);
    let last_at = tallies
        .iter()
        .map(|t| t.last_at.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let span_us = last_at.saturating_sub(start).max(1);
    Ok(json!({
        "scenario": "fanout",
        "instances": urls.len(),
        "subscribers": subscribers,
        "messages": messages,
        "publish_rate": rate,
        "expected_deliveries": expected,
        "deliveries": got,
        "lost": expected - got,
        "seconds": span_us as f64 / 1e6,
        "deliveries_per_second": (got as f64 / (span_us as f64 / 1e6)).round(),
        "subscribe_seconds": subscribe_seconds,
        "latency": percentiles(latencies),
    }))
}

/// The `"t"` (send time, µs) of a bench publication's `notify` frame.
fn send_time(frame: &str) -> Option<u64> {
    if !frame.contains("\"notify\"") {
        return None;
    }
    let at = frame.find("\"t\":")? + 4;
    let digits = &frame[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `connections` idle authenticated sockets; memory of server `pid`.
pub async fn idle(
    url: &str,
    token: &str,
    connections: usize,
    pid: u32,
) -> Result<Value, BenchError> {
    let before = rss_kib(pid).ok_or_else(|| BenchError::Protocol(format!("no process {pid}")))?;
    let mut sockets = Vec::with_capacity(connections);
    let started = Instant::now();
    for _ in 0..connections {
        let mut socket = connect(url, token).await?;
        // The welcome proves the server finished opening it.
        let _ = socket.next().await;
        sockets.push(socket);
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // Let allocators settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid).unwrap_or(before);
    let per_conn = (after.saturating_sub(before) as f64 * 1024.0 / connections as f64).round();
    drop(sockets);
    Ok(json!({
        "scenario": "idle",
        "connections": connections,
        "open_seconds": open_seconds,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_connection": per_conn,
    }))
}

/// `connections` sockets each calling `method` back to back for
/// `seconds`; the latency of every call.
async fn call_loop(
    url: &str,
    token: &str,
    connections: usize,
    seconds: u64,
    method: &'static str,
    params: Value,
) -> Result<Vec<u64>, BenchError> {
    let mut tasks = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    for _ in 0..connections {
        let mut socket = connect(url, token).await?;
        let params = params.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut id = 1;
            while Instant::now() < until {
                let t = Instant::now();
                match call(&mut socket, id, method, params.clone()).await {
                    Ok(reply) if reply.get("error").is_none() => {}
                    _ => break,
                }
                samples.push(t.elapsed().as_micros() as u64);
                id += 1;
            }
            samples
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    Ok(all)
}

/// `connections` sockets each calling `ping` back to back for `seconds`.
pub async fn ping(
    url: &str,
    token: &str,
    connections: usize,
    seconds: u64,
) -> Result<Value, BenchError> {
    let all = call_loop(url, token, connections, seconds, "ping", json!({})).await?;
    Ok(json!({
        "scenario": "ping",
        "connections": connections,
        "seconds": seconds,
        "calls": all.len(),
        "calls_per_second": (all.len() as f64 / seconds as f64).round(),
        "latency": percentiles(all),
    }))
}

/// A node on the last URL answering every `invoke` at once; callers on the
/// first URL calling `node.invoke` on it back to back for `seconds`: the
/// routed round trip caller → instance → (Redis) → node's instance → node
/// and back.
pub async fn invoke(
    urls: &[String],
    token: &str,
    connections: usize,
    seconds: u64,
) -> Result<Value, BenchError> {
    let last = urls
        .last()
        .ok_or_else(|| BenchError::Protocol("no URL".into()))?;
    let mut node = connect(last, token).await?;
    let agent_id = format!("bench-{}", std::process::id());
    let register = json!({
        "agentId": agent_id,
        "capabilities": ["bench"],
        "maxConcurrency": (connections * 2).max(1),
    });
    call(&mut node, 1, "agent.register", register).await?;
    let answering = tokio::spawn(async move {
        while let Some(Ok(msg)) = node.next().await {
            let Message::Text(text) = msg else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if frame["method"] == "invoke" && frame["id"].is_string() {
                let reply = json!({"jsonrpc": "2.0", "id": frame["id"], "result": frame["params"]["params"]});
                if node
                    .send(Message::Text(reply.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let params =
        json!({"nodeId": agent_id, "command": "echo", "params": {"n": 1}, "timeoutMs": 5000});
    let all = call_loop(&urls[0], token, connections, seconds, "node.invoke", params).await;
    answering.abort();
    let all = all?;
    Ok(json!({
        "scenario": "invoke",
        "connections": connections,
        "seconds": seconds,
        "cross_instance": urls.len() > 1,
        "calls": all.len(),
        "calls_per_second": (all.len() as f64 / seconds as f64).round(),
        "latency": percentiles(all),
    }))
}

#[cfg(test)]
mod tests {
    use super::send_time;

    #[test]
    fn send_time_of_a_notify_frame() {
        let frame = r#"{"jsonrpc":"2.0","method":"notify","params":{"channel":"public:x","event":"bench","data":{"t":1234567},"timestamp":99}}"#;
        assert_eq!(send_time(frame), Some(1_234_567));
        assert_eq!(
            send_time(r#"{"jsonrpc":"2.0","id":1,"result":{"t":5}}"#),
            None
        );
        assert_eq!(send_time(r#"{"method":"notify","params":{}}"#), None);
    }
}
