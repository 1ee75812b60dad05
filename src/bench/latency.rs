//! `latency`: publishers on the first URL, one subscriber on the last;
//! every message carries the time it was due, and the subscriber records
//! publish → delivery latency at a fixed total rate.

use super::BenchError;
use super::common::{client_config, percentiles, publish_frame, send_time, subscriber};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

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
