//! `idle`: authenticated connections that stay idle, and the resident
//! memory (`VmRSS` of `/proc/<pid>/status`) of the server holding them.
//!
//! Two modes:
//! - gentle ([`idle`]): the connections open one after another, each
//!   waiting for its `welcome`; 3 s later the server's memory is read once.
//! - storm ([`storm`]): the connections open as fast as the generator can,
//!   `concurrency` handshakes in flight, as after a deploy or a network
//!   blip; they are held for `hold`, then all closed at once, and the
//!   server's memory is followed until it stops moving, once the server
//!   holds no connection (or `settle` runs out). The report says what the
//!   storm cost while held (peak and held memory, bytes per connection)
//!   and what it left behind once every connection was gone (memory
//!   after the close against before). "Before" is read once a warm-up
//!   wave (`warm` connections, opened, closed and settled) has served: a
//!   gateway that has served anything has the code of a handshake and a
//!   close paged in, whatever came after; the memory of the process as
//!   started is reported too (`rss_cold_kib`), and the anonymous part of
//!   each figure (heap and stacks, without the pages of the program file).

use super::BenchError;
use super::common::{Socket, anon_kib, call, connect, rss_kib};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest wait for one connection to open and be greeted.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one connection's close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the server's memory is sampled during a storm.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Memory counts as settled once it moved less than this (and less than
/// 1 %) for [`SETTLED_FOR`].
const SETTLE_TOLERANCE_KIB: u64 = 256;
const SETTLED_FOR: Duration = Duration::from_secs(2);
/// How long the warm-up wave is held before it closes.
const WARM_HOLD: Duration = Duration::from_secs(1);

/// Open one authenticated connection and wait for its first frame: the
/// welcome proves the server finished opening it.
async fn open_one(url: &str, token: &str) -> Result<Socket, BenchError> {
    let opened = async {
        let mut socket = connect(url, token).await?;
        match socket.next().await {
            Some(Ok(_)) => Ok(socket),
            Some(Err(e)) => Err(BenchError::Protocol(e.to_string())),
            None => Err(BenchError::Protocol("closed before the welcome".into())),
        }
    };
    tokio::time::timeout(OPEN_TIMEOUT, opened)
        .await
        .map_err(|_| BenchError::Protocol(format!("no welcome within {OPEN_TIMEOUT:?}")))?
}

fn rss_of(pid: u32) -> Result<u64, BenchError> {
    rss_kib(pid).ok_or_else(|| BenchError::Protocol(format!("no process {pid}")))
}

/// `connections` idle authenticated sockets; memory of server `pid`.
pub async fn idle(
    url: &str,
    token: &str,
    connections: usize,
    pid: u32,
) -> Result<Value, BenchError> {
    let before = rss_of(pid)?;
    let mut sockets = Vec::with_capacity(connections);
    let started = Instant::now();
    for _ in 0..connections {
        sockets.push(open_one(url, token).await?);
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

/// How a storm runs.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// How long the connections are held once all are open.
    pub hold: Duration,
    /// Longest wait for the memory to settle after the close.
    pub settle: Duration,
    /// Connections of the warm-up wave before the storm.
    pub warm: usize,
}

/// Open `connections` (`concurrency` in flight): the sockets, and the
/// first error of those that failed.
async fn open_all(
    url: &str,
    token: &str,
    connections: usize,
    concurrency: usize,
) -> (Vec<Socket>, Option<BenchError>) {
    let outcomes: Vec<Result<Socket, BenchError>> = futures_util::stream::iter(0..connections)
        .map(|_| open_one(url, token))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut sockets = Vec::with_capacity(connections);
    let mut first_error = None;
    for outcome in outcomes {
        match outcome {
            Ok(socket) => sockets.push(socket),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    (sockets, first_error)
}

/// Close every socket (`concurrency` at a time): how many closed cleanly.
async fn close_all(sockets: Vec<Socket>, concurrency: usize) -> usize {
    futures_util::stream::iter(sockets)
        .map(close_one)
        .buffer_unordered(concurrency)
        .filter(|clean| std::future::ready(*clean))
        .count()
        .await
}

/// `connections` opened at once (`storm.concurrency` in flight), held,
/// closed; memory of server `pid` throughout.
pub async fn storm(
    url: &str,
    token: &str,
    connections: usize,
    pid: u32,
    storm: Storm,
) -> Result<Value, BenchError> {
    let concurrency = storm.concurrency.max(1);
    let cold = rss_of(pid)?;
    if storm.warm > 0 {
        let (warm, _) = open_all(url, token, storm.warm, concurrency).await;
        // Held long enough for the gateway to see the wave (it looks at its
        // connection count four times a second).
        tokio::time::sleep(WARM_HOLD).await;
        close_all(warm, concurrency).await;
        drained(url, token, storm.settle).await;
        settle(pid, storm.settle).await;
    }
    let before = rss_of(pid)?;
    let anon_before = anon_kib(pid).unwrap_or(0);
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = tokio::spawn(sample_peak(pid, peak.clone()));
    let started = Instant::now();
    let (sockets, first_error) = open_all(url, token, connections, concurrency).await;
    let open_seconds = started.elapsed().as_secs_f64();
    let opened = sockets.len();
    if opened == 0 {
        sampler.abort();
        return Err(first_error.unwrap_or(BenchError::Protocol("no connection".into())));
    }
    tokio::time::sleep(storm.hold).await;
    let held = rss_kib(pid).unwrap_or(before);
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed).max(held);
    let per_conn = (held.saturating_sub(before) as f64 * 1024.0 / opened as f64).round();

    let closing = Instant::now();
    let closed_cleanly = close_all(sockets, concurrency).await;
    let close_seconds = closing.elapsed().as_secs_f64();
    let settling = Instant::now();
    drained(url, token, storm.settle).await;
    let (after, _, settled) = settle(pid, storm.settle).await;
    let settle_seconds = settling.elapsed().as_secs_f64();
    let anon_after = anon_kib(pid).unwrap_or(0);
    Ok(json!({
        "scenario": "idle",
        "mode": "storm",
        "connections": connections,
        "opened": opened,
        "failed": connections - opened,
        "first_error": first_error.map(|e| e.to_string()),
        "concurrency": concurrency,
        "open_seconds": open_seconds,
        "hold_seconds": storm.hold.as_secs_f64(),
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_held_kib": held,
        "bytes_per_connection": per_conn,
        "closed_cleanly": closed_cleanly,
        "close_seconds": close_seconds,
        "rss_after_close_kib": after,
        "settle_seconds": settle_seconds,
        "settled": settled,
        "after_before_ratio": ratio(after, before),
        "warm_connections": storm.warm,
        "rss_cold_kib": cold,
        "after_cold_ratio": ratio(after, cold),
        "anon_before_kib": anon_before,
        "anon_after_close_kib": anon_after,
    }))
}

/// `a / b`, to three decimals.
fn ratio(a: u64, b: u64) -> f64 {
    (a as f64 / b.max(1) as f64 * 1000.0).round() / 1000.0
}

/// Raise `peak` to the server's memory every [`SAMPLE_EVERY`] until
/// aborted (or the process is gone).
async fn sample_peak(pid: u32, peak: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let Some(rss) = rss_kib(pid) else { return };
        peak.fetch_max(rss, Ordering::Relaxed);
    }
}

/// Send a close and wait for the server's (bounded); whether the close
/// handshake completed.
async fn close_one(mut socket: Socket) -> bool {
    let closed = async {
        if socket.close(None).await.is_err() {
            return false;
        }
        // Read until the server's close ends the stream.
        loop {
            match socket.next().await {
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
                None => return true,
            }
        }
    };
    tokio::time::timeout(CLOSE_TIMEOUT, closed)
        .await
        .unwrap_or(false)
}

/// Wait, at most `limit`, until the instance at `url` holds no connection
/// but the one asking (its `health`): a client sees its close answered
/// before the server has finished with the connection, and memory that
/// holds still while the server works through a wave of closes has not
/// settled. A server without `health` (the reference) is not waited for.
async fn drained(url: &str, token: &str, limit: Duration) {
    let Ok(mut probe) = connect(url, token).await else {
        return;
    };
    let deadline = Instant::now() + limit;
    for id in 1.. {
        let Ok(health) = call(&mut probe, id, "health", json!({})).await else {
            break;
        };
        if health["connections"].as_u64().is_none_or(|n| n <= 1) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    close_one(probe).await;
}

/// Follow the server's memory until it moved less than the tolerance for
/// [`SETTLED_FOR`], at most `limit`: (memory, seconds waited, settled).
async fn settle(pid: u32, limit: Duration) -> (u64, f64, bool) {
    let started = Instant::now();
    let mut reference = rss_kib(pid).unwrap_or(0);
    let mut latest = reference;
    let mut since = Instant::now();
    loop {
        if since.elapsed() >= SETTLED_FOR {
            return (latest, started.elapsed().as_secs_f64(), true);
        }
        if started.elapsed() >= limit {
            return (latest, started.elapsed().as_secs_f64(), false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(now) = rss_kib(pid) else {
            return (latest, started.elapsed().as_secs_f64(), false);
        };
        latest = now;
        let tolerance = (reference / 100).max(SETTLE_TOLERANCE_KIB);
        if now.abs_diff(reference) > tolerance {
            reference = now;
            since = Instant::now();
        }
    }
}
