//! Cron with real processes: three `switchyard` binaries share one
//! `redis-server`, a job fires every second, and one instance that has
//! been firing it is killed with SIGKILL at a tick. Every tick still goes
//! out exactly once: a tick the killed instance had claimed and not
//! fired is taken over by a survivor once the dead instance's record goes
//! stale (`node_ttl`). An instance killed while a tick's method call is
//! running leaves that tick `unknown` (recorded by a survivor), never run
//! a second time. A SIGTERMed instance stops claiming as it starts
//! draining: no tick is lost.
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
async fn a_sigkilled_instance_neither_loses_a_tick_nor_fires_one_twice() {
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
    // A tick it claimed and never fired comes out once its record is
    // stale (node_ttl 3 s), so watch for longer than that.
    ticks.extend(ticks_for(&mut watcher, Duration::from_secs(7)).await);

    let history = admin
        .call("cron.runs", json!({"id": "beat", "limit": 100}))
        .await;
    let runs: Vec<Value> = history["runs"].as_array().unwrap().clone();
    let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    let sorted: Vec<u64> = distinct.into_iter().collect();
    // A tick whose call the kill cut short is recorded `unknown` by the
    // taker and not run again: whether its publication went out before
    // the kill is exactly what nobody can know, so only such a tick may
    // be missing from the channel.
    let unknown: BTreeSet<u64> = runs
        .iter()
        .filter(|r| r["outcome"] == "unknown" && r["recoveredFrom"] == doomed.id.as_str())
        .filter_map(|r| r["tickAt"].as_u64())
        .collect();
    assert!(unknown.len() <= 1, "{runs:?}");
    let lost: Vec<u64> = sorted
        .windows(2)
        .flat_map(|w| (1..(w[1] - w[0]) / 1000).map(move |k| w[0] + k * 1000))
        .filter(|tick| !unknown.contains(tick))
        .collect();
    assert!(
        lost.is_empty(),
        "ticks lost {lost:?} (killed at {killed_at}): {sorted:?} {runs:?}"
    );
    assert!(!runs.iter().any(|r| r["outcome"] == "missed"), "{runs:?}");
    let recovered: Vec<&Value> = runs
        .iter()
        .filter(|r| !r["recoveredFrom"].is_null())
        .collect();
    for run in &recovered {
        assert_eq!(run["recoveredFrom"], doomed.id.as_str(), "{run}");
        // Killed before its call started, the tick is fired by the taker
        // (`ok`, and delivered: no gap above); killed mid-call, it is
        // recorded `unknown` and not run again (delivered at most once).
        let outcome = &run["outcome"];
        assert!(outcome == "ok" || outcome == "unknown", "{run}");
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
        "{} ticks in ~11 s, killed {} at {killed_at}, {} taken over; after the kill fired by {after:?} (survivor {})",
        sorted.len(),
        doomed.id,
        recovered.len(),
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

/// The newest `pending` record of job `id`.
async fn pending_run(admin: &mut Ws, id: &str) -> Option<Value> {
    let history = admin
        .call("cron.runs", json!({"id": id, "limit": 20}))
        .await;
    history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "pending")
        .cloned()
}

/// Answer every `invoke` the node has within `span`.
async fn answer_invokes(node: &mut Ws, span: Duration) {
    let deadline = tokio::time::Instant::now() + span;
    while let Ok((id, _)) = tokio::time::timeout_at(deadline, server_request(node, "invoke")).await
    {
        answer(node, &id, json!({"done": true})).await;
    }
}

#[tokio::test]
async fn an_instance_killed_mid_call_leaves_its_tick_unknown_and_not_run_again() {
    let redis = RedisProcess::start();
    let tokens = format!("{TOKENS},node-1:{NODE}:node");
    let env = [("SWITCHYARD_TOKENS", tokens.as_str())];
    let mut instances = [
        Instance::start(&redis, "a", &env).await,
        Instance::start(&redis, "b", &env).await,
        Instance::start(&redis, "c", &env).await,
    ];
    // A node on c serves `ops.*`; the job calls it every second.
    let mut node = instances[2].client(NODE).await;
    node.call(
        "agent.register",
        json!({"agentId": "ops", "methods": ["ops.*"]}),
    )
    .await;
    let mut admin = instances[2].client(ADMIN).await;
    admin
        .call(
            "cron.add",
            json!({"id": "slow", "schedule": "@every 1s",
                "target": {"method": "ops.slow", "params": {}}}),
        )
        .await;
    // Hold a call that a or b makes, and kill that instance meanwhile.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (held, victim) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a and b never fired"
        );
        let (id, _) = server_request(&mut node, "invoke").await;
        let pending = pending_run(&mut admin, "slow")
            .await
            .expect("a pending run");
        let instance = pending["instance"].as_str().unwrap().to_owned();
        if instance == "c" {
            answer(&mut node, &id, json!({"done": true})).await;
            continue;
        }
        break (pending["tickAt"].as_u64().unwrap(), instance);
    };
    let index = if victim == "a" { 0 } else { 1 };
    instances[index].kill9();
    let killed = tokio::time::Instant::now();

    // The survivors go on; once the victim is stale one of them records
    // the held tick as unknown, and nobody calls it a second time.
    let deadline = killed + WAIT;
    let record = loop {
        answer_invokes(&mut node, Duration::from_millis(200)).await;
        let history = admin
            .call("cron.runs", json!({"id": "slow", "limit": 50}))
            .await;
        let record = history["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["tickAt"] == held && r["outcome"] != "pending")
            .cloned();
        if let Some(record) = record {
            break record;
        }
        assert!(tokio::time::Instant::now() < deadline, "{history}");
    };
    let settled = killed.elapsed();
    assert_eq!(record["outcome"], "unknown", "{record}");
    assert_eq!(record["recoveredFrom"], victim.as_str(), "{record}");
    assert_ne!(record["instance"], victim.as_str(), "{record}");
    admin
        .call("cron.update", json!({"id": "slow", "enabled": false}))
        .await;
    answer_invokes(&mut node, Duration::from_millis(500)).await;
    let history = admin
        .call("cron.runs", json!({"id": "slow", "limit": 100}))
        .await;
    let held_records = history["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tickAt"] == held)
        .count();
    assert_eq!(held_records, 1, "{history}");
    println!(
        "killed {victim} holding tick {held}; recorded unknown by {} {} ms later",
        record["instance"],
        settled.as_millis()
    );
}
