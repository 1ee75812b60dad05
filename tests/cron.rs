//! Cluster-wide cron on real instances: every tick fires exactly once
//! across the instances (three sharing one Redis, or one in memory), a
//! job added on one instance fires on the others, `cron.run` fires at
//! once, `cron.remove` stops a job, a method target runs with its
//! creator's identity and its result shows in `cron.runs`, ticks nobody
//! was alive for are recorded as missed instead of fired in a burst, bad
//! input answers -32602 naming the field and non-admins -32003. (The SIGKILL case with real processes is `cron_process.rs`.)

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;

const CHANNEL: &str = "public:cron-ticks";

/// `n` instances sharing one Redis on the Redis backend; one on memory
/// (its state is its own).
async fn instances(n: usize) -> (Option<RedisProcess>, Vec<TestServer>) {
    if redis_mode() {
        let (redis, servers) = cluster(n, |_| {}).await;
        (Some(redis), servers)
    } else {
        (None, vec![TestServer::start(config()).await])
    }
}

/// The `tickAt` of every cron event on [`CHANNEL`] within `span`.
async fn ticks_for(ws: &mut Ws, span: Duration) -> Vec<u64> {
    cron_ticks(ws, CHANNEL, span).await
}

/// Ticks `ticks` (received in any order) went out once each, one per
/// `every` ms, except those `runs` records as missed.
fn assert_each_tick_once(ticks: &[u64], runs: &[Value], every: u64) {
    let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
    let missed: Vec<(u64, u64)> = runs
        .iter()
        .filter(|r| r["outcome"] == "missed")
        .map(|r| {
            (
                r["tickAt"].as_u64().unwrap(),
                r["lastTickAt"].as_u64().unwrap(),
            )
        })
        .collect();
    let sorted: Vec<u64> = distinct.into_iter().collect();
    for pair in sorted.windows(2) {
        let mut expected = pair[0] + every;
        while expected < pair[1] {
            assert!(
                missed.iter().any(|(a, b)| (*a..=*b).contains(&expected)),
                "tick {expected} neither fired nor recorded missed: {sorted:?} {runs:?}"
            );
            expected += every;
        }
        assert_eq!((pair[1] - pair[0]) % every, 0, "{sorted:?}");
    }
}

async fn runs(ws: &mut Ws, id: &str) -> Vec<Value> {
    let reply = ws.call("cron.runs", json!({"id": id, "limit": 100})).await;
    counted(&reply, "runs").clone()
}

fn channel_job(id: &str, schedule: &str) -> Value {
    json!({
        "id": id,
        "schedule": schedule,
        "target": {"channel": CHANNEL, "event": "tick", "data": {"job": id}},
    })
}

#[tokio::test]
async fn every_tick_fires_exactly_once_across_instances() {
    let (_redis, servers) = instances(3).await;
    let mut watcher = servers[servers.len() - 1].client(ADMIN).await;
    watcher
        .call("subscribe", json!({"channels": [CHANNEL]}))
        .await;
    let mut admin = servers[0].client(ADMIN).await;
    let job = admin
        .call("cron.add", channel_job("each-second", "@every 1s"))
        .await;
    assert_eq!(job["id"], "each-second", "{job}");
    assert_eq!(job["enabled"], true, "{job}");
    assert_eq!(job["createdBy"]["sub"], "admin", "{job}");
    assert!(job["nextAt"].as_u64().unwrap() % 1000 == 0, "{job}");

    let ticks = ticks_for(&mut watcher, Duration::from_secs(10)).await;
    admin
        .call("cron.remove", json!({"id": "each-second"}))
        .await;
    assert!(ticks.len() >= 8, "about 10 ticks in 10 s: {ticks:?}");
    // Removing took the history with it; check before.
    let job = admin
        .call("cron.add", channel_job("each-second-2", "@every 1s"))
        .await;
    assert_eq!(job["id"], "each-second-2");
    let more = ticks_for(&mut watcher, Duration::from_secs(4)).await;
    let history = runs(&mut admin, "each-second-2").await;
    assert_each_tick_once(&ticks, &[], 1000);
    assert_each_tick_once(&more, &history, 1000);
    // Every firing is in the history, once, with its instance.
    // (A firing under way as the history is read is still `pending`.)
    let fired: Vec<u64> = history
        .iter()
        .filter(|r| r["outcome"] == "ok" || r["outcome"] == "pending")
        .map(|r| r["tickAt"].as_u64().unwrap())
        .collect();
    let distinct: BTreeSet<u64> = fired.iter().copied().collect();
    assert_eq!(distinct.len(), fired.len(), "{history:?}");
    for tick in &more {
        assert!(distinct.contains(tick), "tick {tick} not in {history:?}");
    }
    let instances: BTreeSet<&str> = history
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    let ids: BTreeSet<String> = servers.iter().map(|s| s.app.instance_id.clone()).collect();
    assert!(instances.iter().all(|i| ids.contains(*i)), "{history:?}");
    let late = history
        .iter()
        .filter(|r| r["outcome"] == "ok")
        .map(|r| r["firedAt"].as_u64().unwrap() - r["tickAt"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        late < 1500,
        "a tick fired {late} ms after its time: {history:?}"
    );
    println!(
        "{} ticks over 10 s, {} over 4 s, fired by {} of {} instances, at most {late} ms after the tick",
        ticks.len(),
        more.len(),
        instances.len(),
        servers.len()
    );
}

#[tokio::test]
async fn cron_run_fires_at_once_and_remove_stops_the_job() {
    let (_redis, servers) = instances(2).await;
    let mut watcher = servers[servers.len() - 1].client(ADMIN).await;
    watcher
        .call("subscribe", json!({"channels": [CHANNEL]}))
        .await;
    let mut admin = servers[0].client(ADMIN).await;
    // Once a year: only cron.run fires it during the test.
    admin
        .call("cron.add", channel_job("yearly", "0 0 1 1 *"))
        .await;
    let started = Instant::now();
    let run = admin.call("cron.run", json!({"id": "yearly"})).await;
    assert_eq!(run["kind"], "manual", "{run}");
    assert_eq!(run["outcome"], "ok", "{run}");
    let push = notify_on(&mut watcher, CHANNEL).await;
    assert!(started.elapsed() < Duration::from_secs(1), "{push}");
    assert_eq!(push["event"], "tick", "{push}");
    assert_eq!(push["data"]["job"], "yearly", "{push}");
    assert_eq!(push["data"]["cron"]["id"], "yearly", "{push}");
    let history = runs(&mut admin, "yearly").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["kind"], "manual");
    assert_eq!(history[0]["instance"], servers[0].app.instance_id.as_str());
    let listed = admin.call("cron.list", json!({})).await;
    assert_eq!(listed_ids(&listed, "jobs", "id"), set(&["yearly"]));
    let got = admin.call("cron.get", json!({"id": "yearly"})).await;
    assert!(got["nextAt"].as_u64().unwrap() > started.elapsed().as_millis() as u64);

    // A job firing every second stops once removed, on every instance.
    admin
        .call("cron.add", channel_job("stopped", "@every 1s"))
        .await;
    let seen = ticks_for(&mut watcher, Duration::from_millis(2500)).await;
    assert!(!seen.is_empty(), "it fired before its removal");
    let removed = admin.call("cron.remove", json!({"id": "stopped"})).await;
    assert_eq!(removed["removed"], true, "{removed}");
    // A firing already under way may still land.
    let _ = ticks_for(&mut watcher, Duration::from_millis(300)).await;
    let after = ticks_for(&mut watcher, Duration::from_millis(2500)).await;
    assert!(after.is_empty(), "fired after cron.remove: {after:?}");
    assert_eq!(
        admin
            .error_code("cron.remove", json!({"id": "stopped"}))
            .await,
        -32001
    );
    assert_eq!(
        admin.error_code("cron.run", json!({"id": "stopped"})).await,
        -32001
    );

    // Disabled: no ticks; enabled again: ticks.
    admin
        .call(
            "cron.add",
            json!({"id": "paused", "schedule": "@every 1s", "enabled": false,
            "target": {"channel": CHANNEL, "event": "tick"}}),
        )
        .await;
    let got = admin.call("cron.get", json!({"id": "paused"})).await;
    assert!(got["nextAt"].is_null(), "{got}");
    assert!(
        ticks_for(&mut watcher, Duration::from_millis(2200))
            .await
            .is_empty()
    );
    admin
        .call("cron.update", json!({"id": "paused", "enabled": true}))
        .await;
    assert!(
        !ticks_for(&mut watcher, Duration::from_millis(2500))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_method_target_runs_as_its_creator_and_its_result_is_recorded() {
    let (_redis, servers) = instances(2).await;
    // A node on the last instance serves `ops.*`; the admin is on the first.
    let (mut node, _) = caps_node(&servers[servers.len() - 1], &[]).await;
    node.call(
        "agent.register",
        json!({"agentId": "ops", "methods": ["ops.*"]}),
    )
    .await;
    let mut admin = servers[0].client(ADMIN).await;
    admin
        .call(
            "cron.add",
            json!({"id": "audit", "schedule": "0 0 1 1 *", "timezone": "Europe/Berlin",
                "target": {"method": "ops.audit", "params": {"deep": true}}}),
        )
        .await;
    let served = async {
        let (id, params) = server_request(&mut node, "invoke").await;
        answer(&mut node, &id, json!({"audited": 3})).await;
        params
    };
    let (run, params) = tokio::join!(admin.request("cron.run", json!({"id": "audit"})), served);
    assert_eq!(params["command"], "ops.audit", "{params}");
    assert_eq!(params["params"], json!({"deep": true}), "{params}");
    assert_eq!(params["caller"]["identity"], "admin", "{params}");
    assert_eq!(params["caller"]["role"], "operator", "{params}");
    assert_eq!(
        params["caller"]["scopes"],
        json!(["operator.admin"]),
        "{params}"
    );
    assert_eq!(run["result"]["outcome"], "ok", "{run}");
    assert_eq!(run["result"]["result"], json!({"audited": 3}), "{run}");

    // On its schedule too: the scheduled run's result lands in cron.runs.
    admin
        .call(
            "cron.update",
            json!({"id": "audit", "schedule": "* * * * * *"}),
        )
        .await;
    let (id, _) = server_request(&mut node, "invoke").await;
    answer(&mut node, &id, json!({"audited": 4})).await;
    admin
        .call("cron.update", json!({"id": "audit", "enabled": false}))
        .await;
    let mut scheduled = None;
    for _ in 0..100 {
        let history = runs(&mut admin, "audit").await;
        scheduled = history
            .into_iter()
            .find(|r| r["kind"] == "scheduled" && r["outcome"] == "ok");
        if scheduled.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let scheduled = scheduled.expect("a scheduled run recorded");
    assert_eq!(scheduled["result"], json!({"audited": 4}), "{scheduled}");
    // Answer whatever else the schedule sent before it was disabled.
    while let Ok((id, _)) = tokio::time::timeout(
        Duration::from_millis(300),
        server_request(&mut node, "invoke"),
    )
    .await
    {
        answer(&mut node, &id, json!({})).await;
    }

    // A failing call is the run's error, not cron.run's.
    admin
        .call(
            "cron.add",
            json!({"id": "bad-kick", "schedule": "@yearly",
            "target": {"method": "client.kick", "params": {}}}),
        )
        .await;
    let run = admin.call("cron.run", json!({"id": "bad-kick"})).await;
    assert_eq!(run["outcome"], "error", "{run}");
    assert_eq!(run["error"]["code"], -32602, "{run}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_only_admins_schedule() {
    let server = TestServer::start(config()).await;
    let mut admin = server.client(ADMIN).await;
    let field_of = |reply: &Value| reply["error"]["data"]["field"].as_str().map(str::to_owned);
    for (params, field) in [
        (channel_job("x", "every second"), "schedule"),
        (channel_job("x", "* * *"), "schedule"),
        (channel_job("x", "61 * * * *"), "schedule"),
        (channel_job("x", "@every 500ms"), "schedule"),
        (channel_job("x", "0 0 30 2 *"), "schedule"),
        (channel_job("bad id!", "@every 1s"), "id"),
        (
            json!({"id": "x", "schedule": "@daily", "timezone": "Mars/Base",
                "target": {"channel": CHANNEL, "event": "e"}}),
            "timezone",
        ),
        (
            json!({"id": "x", "schedule": "@daily", "target": {}}),
            "target",
        ),
        (
            json!({"id": "x", "schedule": "@daily", "target": {"method": "subscribe"}}),
            "target.method",
        ),
        (
            json!({"id": "x", "schedule": "@daily", "target": {"method": "cron.add"}}),
            "target.method",
        ),
        (
            json!({"id": "x", "schedule": "@daily", "target": {"method": "ping", "params": 3}}),
            "target.params",
        ),
        (
            json!({"id": "x", "schedule": "@daily", "target": {"channel": "$bad"}}),
            "target.channel",
        ),
        (
            json!({"id": "x", "schedule": "@daily",
                "target": {"channel": CHANNEL, "extra": 1}}),
            "target.extra",
        ),
    ] {
        let reply = admin.request("cron.add", params.clone()).await;
        assert_eq!(reply["error"]["code"], -32602, "{params}: {reply}");
        assert_eq!(
            field_of(&reply).as_deref(),
            Some(field),
            "{params}: {reply}"
        );
    }
    let reply = admin
        .request("cron.runs", json!({"id": "x", "limit": 0}))
        .await;
    assert_eq!(field_of(&reply).as_deref(), Some("limit"), "{reply}");
    admin
        .call("cron.add", channel_job("once", "@every 1h"))
        .await;
    assert_eq!(
        admin
            .error_code("cron.add", channel_job("once", "@every 1h"))
            .await,
        -32007
    );
    assert_eq!(
        admin
            .error_code("cron.update", json!({"id": "once", "schedule": "nope"}))
            .await,
        -32602
    );
    assert_eq!(
        admin.error_code("cron.get", json!({"id": "nope"})).await,
        -32001
    );
    // Nothing changed by the refused update.
    let got = admin.call("cron.get", json!({"id": "once"})).await;
    assert_eq!(got["schedule"], "@every 1h", "{got}");

    let mut writer = server.client(WRITER).await;
    for (method, params) in [
        ("cron.add", channel_job("w", "@every 1s")),
        ("cron.list", json!({})),
        ("cron.get", json!({"id": "once"})),
        ("cron.run", json!({"id": "once"})),
        ("cron.update", json!({"id": "once", "enabled": false})),
        ("cron.remove", json!({"id": "once"})),
        ("cron.runs", json!({"id": "once"})),
    ] {
        assert_eq!(writer.error_code(method, params).await, -32003, "{method}");
    }
    let listed = admin.call("cron.list", json!({})).await;
    assert_eq!(listed_ids(&listed, "jobs", "id"), set(&["once"]));
}

#[tokio::test]
async fn ticks_nobody_was_alive_for_are_recorded_missed_not_fired_in_a_burst() {
    let (redis, mut servers) = instances(1).await;
    let mut admin = servers[0].client(ADMIN).await;
    admin
        .call("cron.add", channel_job("gappy", "@every 1s"))
        .await;
    let mut watcher = servers[0].client(ADMIN).await;
    watcher
        .call("subscribe", json!({"channels": [CHANNEL]}))
        .await;
    assert!(
        !ticks_for(&mut watcher, Duration::from_millis(1500))
            .await
            .is_empty()
    );
    let down_from;
    if let Some(redis) = &redis {
        // Every instance stops; one starts again 4 s later.
        drop((admin, watcher));
        servers.pop().unwrap().stop().await;
        down_from = common::now_secs() * 1000;
        tokio::time::sleep(Duration::from_secs(4)).await;
        servers.push(TestServer::start_on(cluster_config(redis)).await);
        admin = servers[0].client(ADMIN).await;
    } else {
        // One process holds the memory backend: its scheduler is kept
        // from the job for 4 s (no due tick), then the job gets back the
        // tick that was due, as if nobody had been there to fire it.
        let store = servers[0].app.cron_store();
        let job = store.cron_job("gappy").await.unwrap().unwrap();
        store.update_cron_job(&job, None).await.unwrap();
        // A firing already claimed lands in the history.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let last = runs(&mut admin, "gappy")
            .await
            .iter()
            .filter_map(|r| r["tickAt"].as_u64())
            .max()
            .expect("it fired");
        down_from = last + 1000;
        tokio::time::sleep(Duration::from_secs(4)).await;
        store.update_cron_job(&job, Some(down_from)).await.unwrap();
    }
    // One missed record, then one firing per second: no burst.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let history = runs(&mut admin, "gappy").await;
    let missed: Vec<&Value> = history
        .iter()
        .filter(|r| r["outcome"] == "missed")
        .collect();
    assert_eq!(missed.len(), 1, "one record of the gap: {history:?}");
    let count = missed[0]["missed"].as_u64().unwrap();
    assert!((2..=7).contains(&count), "{count} missed: {history:?}");
    let metrics = http(servers[0].addr, "GET", "/metrics", &[], None).await.2;
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_cron_missed_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("missed ticks exported: {metrics}"));
    assert!(counted >= count as f64, "{counted} < {count}");
    let first = missed[0]["tickAt"].as_u64().unwrap();
    assert!(first + 1000 >= down_from, "{history:?}");
    // After the gap: each firing at its own tick, at its own second.
    let mut after: Vec<(u64, u64)> = history
        .iter()
        .filter(|r| r["outcome"] == "ok" && r["tickAt"].as_u64().unwrap() > first)
        .map(|r| {
            (
                r["tickAt"].as_u64().unwrap(),
                r["firedAt"].as_u64().unwrap(),
            )
        })
        .collect();
    after.sort();
    assert!(after.len() >= 2, "{history:?}");
    for (tick, fired) in &after {
        assert!(
            fired - tick < 2000,
            "tick {tick} fired late at {fired}: {history:?}"
        );
    }
    // Each tick once: the gap's ticks did not come late in a burst.
    for pair in after.windows(2) {
        assert!(pair[1].0 > pair[0].0, "a tick fired twice: {after:?}");
    }
}

#[tokio::test]
async fn a_job_added_on_one_instance_fires_on_the_others() {
    if !redis_mode() {
        // One instance on memory: nothing to share.
        return;
    }
    let (_redis, mut servers) = instances(3).await;
    let mut watcher = servers[2].client(ADMIN).await;
    watcher
        .call("subscribe", json!({"channels": [CHANNEL]}))
        .await;
    let mut admin = servers[0].client(ADMIN).await;
    admin
        .call("cron.add", channel_job("elsewhere", "@every 1s"))
        .await;
    drop(admin);
    // The instance it was added on leaves.
    servers.remove(0).stop().await;
    let stopped = switchyard::protocol::now_ms();
    let ticks = ticks_for(&mut watcher, Duration::from_millis(3500)).await;
    let mut other = servers[1].client(ADMIN).await;
    let history = runs(&mut other, "elsewhere").await;
    assert_each_tick_once(&ticks, &history, 1000);
    let ids: BTreeSet<String> = servers.iter().map(|s| s.app.instance_id.clone()).collect();
    let after: Vec<&Value> = history
        .iter()
        .filter(|r| r["tickAt"].as_u64().unwrap() > stopped)
        .collect();
    assert!(after.len() >= 2, "the others fire it: {history:?}");
    for run in after {
        assert!(ids.contains(run["instance"].as_str().unwrap()), "{run}");
    }
}

/// A claim on tick `tick_at` of `job` left by `instance`/`generation`,
/// `age_ms` old, with its pending record: what an instance leaves behind
/// when it dies between claiming a tick and recording it.
async fn leave_claim(
    server: &TestServer,
    job: &str,
    tick_at: u64,
    instance: &str,
    generation: u64,
    age_ms: u64,
) {
    use switchyard::backend::{CronClaim, CronRun, RunKind, RunOutcome};
    let now = now_ms();
    let store = server.app.cron_store();
    let due = store.cron_due().await.unwrap();
    let next = due.iter().find(|(id, _)| id == job).unwrap().1;
    let pending = CronRun {
        tick_at,
        fired_at: now - age_ms,
        instance: instance.into(),
        kind: RunKind::Scheduled,
        outcome: RunOutcome::Pending,
        result: None,
        error: None,
        missed: None,
        last_tick_at: None,
        recovered_from: None,
    };
    let claim = CronClaim {
        job: job.into(),
        tick_at,
        instance: instance.into(),
        generation,
        claimed_at: now - age_ms,
    };
    // Claiming the job's due tick for itself again keeps the schedule
    // where it was and leaves the claim and the pending record.
    assert!(
        store
            .claim_cron_tick(job, next, next, &[pending], Some(&claim))
            .await
            .unwrap()
    );
}

fn now_ms() -> u64 {
    switchyard::protocol::now_ms()
}

/// An instance that claimed a tick and died is replaced: a live instance
/// takes the claim over and fires the tick if the dead one never started
/// it (here: an earlier run of the same instance id, restarted since),
/// records the dead one's result without firing again if it had finished,
/// and records `unknown` without firing if it died with the call running
/// (here: an instance with no record left, long gone).
#[tokio::test]
async fn a_dead_instances_claimed_tick_is_taken_over_and_never_fired_twice() {
    use switchyard::services::idempotent::full_key;
    let (_redis, servers) = instances(2).await;
    let server = &servers[0];
    let mut admin = server.client(ADMIN).await;
    let mut watcher = servers[servers.len() - 1].client(ADMIN).await;
    watcher
        .call("subscribe", json!({"channels": [CHANNEL]}))
        .await;
    // Yearly: its own schedule stays out of the way (an hourly one fired
    // into the watch when the test ran at the top of an hour).
    admin
        .call("cron.add", channel_job("hourly", "0 0 1 1 *"))
        .await;
    let base = now_ms() / 1000 * 1000 - 60_000;
    let (never_started, finished, mid_call) = (base, base + 1000, base + 2000);
    let idem = server.app.idempotency_store();
    let key = |tick: u64| full_key("cron", "", &format!("hourly@{tick}"));
    idem.claim_idempotency(&key(finished), 60_000)
        .await
        .unwrap();
    idem.finish_idempotency(&key(finished), Some(&json!({"delivered": 42})), 60_000)
        .await
        .unwrap();
    idem.claim_idempotency(&key(mid_call), 60_000)
        .await
        .unwrap();
    let (me, generation) = (server.app.instance_id.clone(), server.app.generation);
    leave_claim(server, "hourly", never_started, &me, generation - 1, 1500).await;
    leave_claim(server, "hourly", finished, "gone", 1, 600_000).await;
    leave_claim(server, "hourly", mid_call, "gone", 1, 600_000).await;

    let started = Instant::now();
    let ticks = ticks_for(&mut watcher, Duration::from_secs(3)).await;
    assert_eq!(ticks, [never_started], "only the unstarted tick fires");
    let deadline = Instant::now() + WAIT;
    let history = loop {
        let history = runs(&mut admin, "hourly").await;
        if history.iter().all(|r| r["outcome"] != "pending") || Instant::now() > deadline {
            break history;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of = |tick: u64| {
        history
            .iter()
            .find(|r| r["tickAt"] == tick)
            .unwrap_or_else(|| panic!("no record of {tick}: {history:?}"))
            .clone()
    };
    assert_eq!(history.len(), 3, "{history:?}");
    let fired = of(never_started);
    assert_eq!(fired["outcome"], "ok", "{fired}");
    assert_eq!(fired["recoveredFrom"], me.as_str(), "{fired}");
    let kept = of(finished);
    assert_eq!(kept["outcome"], "ok", "{kept}");
    assert_eq!(kept["result"], json!({"delivered": 42}), "{kept}");
    assert_eq!(kept["recoveredFrom"], "gone", "{kept}");
    let unknown = of(mid_call);
    assert_eq!(unknown["outcome"], "unknown", "{unknown}");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gone"),
        "{unknown}"
    );
    assert!(
        server
            .app
            .cron_store()
            .cron_claims()
            .await
            .unwrap()
            .is_empty()
    );
    println!(
        "three orphaned ticks settled in {} ms",
        started.elapsed().as_millis()
    );
}
