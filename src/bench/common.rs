//! What every scenario shares: the generator's socket settings, connecting
//! with a bearer token, one call and its reply, subscribing, the publish
//! frame, a call loop, latency percentiles, the send time carried in a
//! bench publication and a server's resident memory.

use super::BenchError;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(super) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Latency percentiles in microseconds.
pub(super) fn percentiles(mut samples: Vec<u64>) -> Value {
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
pub(super) fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

pub(super) async fn connect(url: &str, token: &str) -> Result<Socket, BenchError> {
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
pub(super) async fn call(
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

pub(super) async fn subscriber(
    url: &str,
    token: &str,
    channel: &str,
) -> Result<Socket, BenchError> {
    let mut socket = connect(url, token).await?;
    call(&mut socket, 1, "subscribe", json!({"channels": [channel]})).await?;
    Ok(socket)
}

/// Publish as a JSON-RPC notification: no reply frame to read back.
pub(super) fn publish_frame(channel: &str, data: Value) -> Message {
    let frame = json!({"jsonrpc": "2.0", "method": "publish",
        "params": {"channel": channel, "event": "bench", "data": data}});
    Message::Text(frame.to_string().into())
}

/// `connections` sockets each calling `method` back to back for
/// `seconds`; the latency of every call.
pub(super) async fn call_loop(
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

/// The `"t"` (send time, µs) of a bench publication's `notify` frame.
pub(super) fn send_time(frame: &str) -> Option<u64> {
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
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The anonymous part of `pid`'s resident memory (KiB): its heap and
/// stacks, without the pages of its program file.
pub(super) fn anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
