//! `ping`: N connections calling `ping` back to back; throughput and
//! latency of the round trip.

use super::BenchError;
use super::common::{call_loop, percentiles};
use serde_json::{Value, json};

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
