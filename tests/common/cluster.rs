//! In-process clusters: several [`TestServer`]s sharing one fresh
//! [`RedisProcess`], with short cluster timers.

use super::instance::NODE_TTL;
use super::{RedisProcess, TestServer, config};
use serde_json::Value;
use std::collections::BTreeSet;
use switchyard::config::Config;

/// The shared test config pointed at `redis`, with short cluster timers
/// (`node_ttl` of [`NODE_TTL`], presence ticks every 200 ms).
pub fn cluster_config(redis: &RedisProcess) -> Config {
    let mut c = config();
    c.redis_url = Some(redis.url());
    c.limits.node_ttl_ms = NODE_TTL.as_millis() as u64;
    c.limits.presence_tick_ms = 200;
    c
}

/// `n` instances on one fresh Redis, all on the same config (after `tweak`).
pub async fn cluster(n: usize, tweak: impl Fn(&mut Config)) -> (RedisProcess, Vec<TestServer>) {
    let redis = RedisProcess::start();
    let mut c = cluster_config(&redis);
    tweak(&mut c);
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(TestServer::start_on(c.clone()).await);
    }
    (redis, servers)
}

/// The instance ids listed under `cluster.instances` of a `status` reply.
pub fn instance_ids(status: &Value) -> BTreeSet<String> {
    status["cluster"]["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("status lists cluster.instances: {status}"))
        .iter()
        .map(|i| i["id"].as_str().expect("instance id").to_owned())
        .collect()
}
