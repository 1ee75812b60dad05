//! `fanout`: one publisher on the first URL, N subscribers spread over all
//! URLs; deliveries per second, lost messages and delivery latency.

use super::BenchError;
use super::common::{Socket, connect, percentiles, publish_frame, send_time, subscriber};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

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
