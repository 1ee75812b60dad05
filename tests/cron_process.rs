//! Cron with real processes: three `switchyard` binaries share one
//! `redis-server`, a job fires every second, and one instance that has
//! been firing it is killed with SIGKILL at a tick. Every tick still goes
//! out at most once, and at most the one tick the killed instance may
//! have claimed as it died is lost (a claim is taken before firing, so a
//! death can lose a tick but never repeat one); its history record stays
//! `pending`, naming the killed instance. A SIGTERMed instance stops
//! claiming as it starts draining: no tick is lost.
//!
//! Not a behaviour test: it starts its own Redis and processes whatever
//! `SWITCHYARD_TEST_BACKEND` says.

mod common;

use common::instance::*;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const CHANNEL: &str = "public:cron-ticks";

/// The `tickAt` of every cron event on [`CHANNEL`] within `span`.
async fn ticks_for(ws: &mut Ws, span: Duration) -> Vec<u64> {
    cron_ticks(ws, CHANNEL, span).await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// On `instance`: a watcher subscribed to [`CHANNEL`], and an admin that
/// added job `beat` publishing there every second.
async fn every_second_on(instance: &Instance) -> (Ws, Ws) {
    let mut watcher = instance.client(ADMIN).await;
    watcher
        .call("subscribe", json!({"channels": [CHANNEL]}))
        .await;
    let mut admin = instance.client(ADMIN).await;
    admin
        .call(
            "cron.add",
            json!({"id": "beat", "schedule": "@every 1s",
                "target": {"channel": CHANNEL, "event": "tick"}}),
        )
        .await;
    (watcher, admin)
}

#[tokio::test]
async fn a_sigkilled_instance_never_makes_a_tick_fire_twice() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[]).await;
    let b = Instance::start(&redis, "b", &[]).await;
    let c = Instance::start(&redis, "c", &[]).await;
    let (mut watcher, mut admin) = every_second_on(&a).await;
    let mut ticks = ticks_for(&mut watcher, Duration::from_secs(4)).await;

    // Kill b or c, whichever fired last, 2 ms after a tick.
    let history = admin.call("cron.runs", json!({"id": "beat"})).await;
    let last = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| r["instance"].as_str().filter(|i| *i != "a"))
        .unwrap_or("b")
        .to_owned();
    let (mut doomed, survivor) = if last == "b" { (b, c) } else { (c, b) };
    let wait = 1000 - now_ms() % 1000 + 2;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    doomed.kill9();
    let killed_at = now_ms();
    ticks.extend(ticks_for(&mut watcher, Duration::from_secs(6)).await);

    let history = admin
        .call("cron.runs", json!({"id": "beat", "limit": 100}))
        .await;
    let runs: Vec<Value> = history["runs"].as_array().unwrap().clone();
    let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    let sorted: Vec<u64> = distinct.into_iter().collect();
    let lost: Vec<u64> = sorted
        .windows(2)
        .flat_map(|w| (1..(w[1] - w[0]) / 1000).map(move |k| w[0] + k * 1000))
        .collect();
    let missed: u64 = runs
        .iter()
        .filter(|r| r["outcome"] == "missed")
        .map(|r| r["missed"].as_u64().unwrap())
        .sum();
    assert!(
        lost.len() as u64 <= 1 + missed,
        "ticks lost {lost:?} (killed at {killed_at}): {sorted:?} {runs:?}"
    );
    for tick in &lost {
        assert!(
            tick.abs_diff(killed_at) <= 2000,
            "tick {tick} lost away from the kill at {killed_at}: {sorted:?}"
        );
        // The history says who took it and never fired it.
        assert!(
            runs.iter().any(|r| r["tickAt"] == *tick
                && r["outcome"] == "pending"
                && r["instance"] == doomed.id.as_str()),
            "lost tick {tick} not pending on {}: {runs:?}",
            doomed.id
        );
    }
    // The survivors go on firing after the kill.
    assert!(
        sorted.iter().filter(|t| **t > killed_at + 1000).count() >= 4,
        "{sorted:?}"
    );
    let after: BTreeSet<&str> = runs
        .iter()
        .filter(|r| r["tickAt"].as_u64().unwrap() > killed_at + 1000)
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert!(!after.contains(doomed.id.as_str()), "{runs:?}");
    println!(
        "{} ticks in ~10 s, killed {} at {killed_at}, lost {lost:?}; after the kill fired by {after:?} (survivor {})",
        sorted.len(),
        doomed.id,
        survivor.id
    );
}

#[tokio::test]
async fn a_draining_instance_hands_its_ticks_over_without_a_gap() {
    let redis = RedisProcess::start();
    let a = Instance::start(&redis, "a", &[]).await;
    let b = Instance::start(&redis, "b", &[]).await;
    let (mut watcher, _admin) = every_second_on(&a).await;
    let mut ticks = ticks_for(&mut watcher, Duration::from_secs(3)).await;
    let wait = 1000 - now_ms() % 1000 + 2;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    b.sigterm();
    let stopped_at = now_ms();
    ticks.extend(ticks_for(&mut watcher, Duration::from_secs(4)).await);
    let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    let sorted: Vec<u64> = distinct.into_iter().collect();
    for pair in sorted.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "a tick lost (SIGTERM at {stopped_at}): {sorted:?}"
        );
    }
    assert!(sorted.len() >= 6, "{sorted:?}");
}
