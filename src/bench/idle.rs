//! `idle`: authenticated connections that stay idle, and the resident
//! memory (`VmRSS` of `/proc/<pid>/status`) of the server holding them.

use super::BenchError;
use super::common::{connect, rss_kib};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

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
