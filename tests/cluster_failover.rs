//! Redis Cluster failover with real processes: three primaries with a
//! replica each (`cluster-node-timeout` 1 s), two gateway instances on the
//! cluster (docs/durability.md).
//!
//! The gateway's shared records live on one slot (the `{prefix}` hash
//! tag), so the shard holding it is the one failed over: its primary
//! SIGKILLed mid-work and its replica promoted by the cluster itself. An
//! acknowledged decision reads back unchanged and cannot be decided again,
//! a pending approval raced by two approvers has one winner, both
//! instances agree on a new epoch and every connection is told, the logs
//! are intact and live delivery goes on.
//!
//! Not a behaviour test: it starts its own Redis processes whatever
//! `SWITCHYARD_TEST_REDIS` says.

mod common;

use common::instance::*;
use common::replicas::*;
use common::*;
use serde_json::{Value, json};
use std::process::Child;
use std::time::{Duration, Instant};

/// The key naming the epoch: on the slot every shared record shares.
const EPOCH_KEY: &str = "sy:{sy}:epoch";

/// Six cluster nodes (three primaries, three replicas). Killed on drop.
struct Sharded {
    nodes: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl Sharded {
    fn start() -> Self {
        let dir = temp_path("cluster-failover");
        std::fs::create_dir_all(&dir).expect("dir");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            let child = redis_server(
                port,
                &dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "1000",
                ],
            );
            wait_until(Duration::from_secs(10), "a cluster node", || {
                cli(port, &["PING"]).contains("PONG")
            });
            nodes.push((port, child));
        }
        let set = Self { nodes, dir };
        let mut create = std::process::Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in set.ports() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = output_within(&mut create, Duration::from_secs(30))
            .expect("the cluster is created within 30 s");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        set.wait_healthy();
        set
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    fn url(&self) -> String {
        let ports = self.ports();
        let rest: Vec<String> = ports[1..]
            .iter()
            .map(|p| format!("node=127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://127.0.0.1:{}?{}", ports[0], rest.join("&"))
    }

    /// The live nodes (not SIGKILLed).
    fn live(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|p| cli(*p, &["PING"]).contains("PONG"))
            .collect()
    }

    /// Every live node sees the cluster as ok and every primary serving
    /// slots with a live replica has it online.
    fn wait_healthy(&self) {
        wait_until(Duration::from_secs(30), "the cluster to be ok", || {
            self.live()
                .iter()
                .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
    }

    /// The primary holding the shared slot.
    fn holder(&self) -> u16 {
        let mut found = None;
        wait_until(Duration::from_secs(30), "the shared slot's primary", || {
            found = self.live().into_iter().find(|p| {
                cli(*p, &["INFO", "replication"]).contains("role:master")
                    && cli(*p, &["EXISTS", EPOCH_KEY]).trim() == "1"
            });
            found.is_some()
        });
        found.expect("found")
    }

    /// The primary serving `slot`.
    fn primary_of(&self, slot: u16) -> u16 {
        let nodes = cli(self.live()[0], &["CLUSTER", "NODES"]);
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let serves = fields.get(8..)?.iter().any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                });
                serves.then(|| fields[1].split('@').next()?.rsplit(':').next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no primary serves slot {slot}: {nodes}"))
    }

    /// The live replica of the primary on `port`, once it is in sync.
    fn replica_of(&self, port: u16) -> u16 {
        let mut found = None;
        wait_until(Duration::from_secs(30), "a replica in sync", || {
            found = self.live().into_iter().find(|p| {
                let info = cli(*p, &["INFO", "replication"]);
                info.contains(&format!("master_port:{port}"))
                    && info.contains("master_link_status:up")
            });
            found.is_some()
        });
        found.expect("found")
    }

    /// Wait (bounded) until the node on `port` is a primary.
    fn wait_primary(&self, port: u16) {
        wait_until(Duration::from_secs(30), "the promotion", || {
            cli(port, &["INFO", "replication"]).contains("role:master")
        });
    }

    fn kill(&mut self, port: u16) {
        let (_, child) = self
            .nodes
            .iter_mut()
            .find(|(p, _)| *p == port)
            .expect("a node");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
}

impl Drop for Sharded {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The acknowledged decision reads back as `decision` and cannot be made
/// again; two approvers racing for `raced` get at most one winner, which
/// is what is stored.
async fn decisions_hold(scene: &mut Scene, decided: &Value, decision: &Value, raced: &Value) {
    let read = call_when_back(
        &mut scene.approver,
        "approval.wait",
        json!({"approvalId": decided, "timeoutMs": 1000}),
    )
    .await;
    assert_eq!(&read["result"], decision, "{read}");
    let again = scene
        .approver
        .request(
            "approval.resolve",
            json!({"approvalId": decided, "decision": "deny"}),
        )
        .await;
    assert_eq!(again["error"]["code"], -32007, "{again}");
    let winner = race(&mut scene.approver, &mut scene.second, raced).await;
    let stored = scene
        .node
        .request(
            "approval.wait",
            json!({"approvalId": raced, "timeoutMs": 2000}),
        )
        .await;
    match winner {
        Some(winner) => assert_eq!(winner, stored["result"], "{stored}"),
        // Neither acknowledged (no replica confirmed in time): decided
        // once by one of them, or still pending.
        None => assert!(
            stored["result"]["status"].is_string() || stored["error"]["code"] == -32006,
            "{stored}"
        ),
    }
}

/// Both instances on a new epoch other than `old`, announced to the
/// watcher and the node; the log unchanged from `before`, a reader of
/// `old` told so. The new epoch.
async fn new_epoch_told(scene: &mut Scene, old: &Value, before: &Value) -> Value {
    let epoch = both_on_a_new_epoch(&scene.a, &scene.b, &mut scene.watcher, old).await;
    let told = push_where(&mut scene.watcher, "epoch.changed", |p| p["epoch"] == epoch).await;
    let node = push_where(&mut scene.node, "epoch.changed", |p| p["epoch"] == epoch).await;
    assert_eq!(node, told);
    let after = scene
        .watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    assert_eq!(after["events"], before["events"], "{after}");
    let stale = scene
        .watcher
        .call(
            "history",
            json!({"channel": "audit:trail", "since": 1, "epoch": old}),
        )
        .await;
    assert_eq!(
        (stale["epochChanged"].clone(), stale["complete"].clone()),
        (json!(true), json!(false)),
        "{stale}"
    );
    epoch
}

#[tokio::test]
async fn the_shared_slots_primary_killed_mid_work_fails_over_with_nothing_acknowledged_lost() {
    let mut redis = Sharded::start();
    let mut scene = scene(&redis.url()).await;
    for i in 1..=3 {
        publish(&mut scene.watcher, i).await;
    }
    let decided = request_approval(&mut scene.node, "decided").await;
    let raced = request_approval(&mut scene.node, "raced after the failover").await;
    let holder = redis.holder();
    let replica = redis.replica_of(holder);
    let waits = calls(holder, "wait");
    let decision = scene
        .approver
        .call(
            "approval.resolve",
            json!({"approvalId": decided, "decision": "approve", "note": "fine"}),
        )
        .await;
    assert_eq!(decision["status"], "approved", "{decision}");
    // Acknowledged once a replica had it.
    assert_eq!(calls(holder, "wait"), waits + 1);
    let before = scene
        .watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    let old_epoch = before["epoch"].clone();

    // The primary is SIGKILLed once its replica is in sync; the cluster
    // promotes the replica (`cluster-node-timeout` 1 s).
    wait_until(Duration::from_secs(10), "the replica to catch up", || {
        let offset = |port| {
            cli(port, &["INFO", "replication"])
                .lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .map(|v| v.trim().to_owned())
        };
        offset(holder).is_some() && offset(holder) == offset(replica)
    });
    let started = Instant::now();
    redis.kill(holder);
    redis.wait_primary(replica);
    redis.wait_healthy();
    new_epoch_told(&mut scene, &old_epoch, &before).await;
    eprintln!(
        "cluster: new epoch after the primary's SIGKILL announced in {} ms",
        started.elapsed().as_millis()
    );
    decisions_hold(&mut scene, &decided, &decision, &raced).await;

    // Live delivery goes on, numbered after what the log holds: the
    // sharded subscriptions follow the shard to its new primary.
    let mut writer = scene.b.client(WRITER).await;
    assert_eq!(publish(&mut writer, 4).await, 4);
    while notify_on(&mut scene.watcher, "audit:trail").await["data"] != json!({"i": 4}) {}
    let _ = std::fs::remove_file(&scene.config);
}

/// Publications of the planned-failover test (the channel keeps 100).
const PUBLISHED: u64 = 80;

/// A planned failover (`CLUSTER FAILOVER` on a replica: the old primary,
/// alive, is demoted and drops the sharded subscriptions it held) of the
/// shard holding a channel, while a publisher on the other instance keeps
/// publishing: the subscriber gets everything the channel's log holds,
/// live, once, in order (what was published while its subscription was
/// gone is caught up from the log).
#[tokio::test]
async fn a_planned_failover_of_a_channels_shard_loses_no_live_delivery() {
    let redis = Sharded::start();
    let mut scene = scene(&redis.url()).await;
    let slot: u16 = cli(redis.ports()[0], &["CLUSTER", "KEYSLOT", "{audit:trail}"])
        .trim()
        .parse()
        .expect("a slot");
    let primary = redis.primary_of(slot);
    let replica = redis.replica_of(primary);
    let mut writer = scene.b.client(WRITER).await;
    for i in 1..=PUBLISHED {
        if i == 10 {
            assert!(cli(replica, &["CLUSTER", "FAILOVER"]).contains("OK"));
        }
        // Refused while the shard moves: asked again (a publication
        // refused may still have been logged; the log is what counts).
        call_when_back(
            &mut writer,
            "publish",
            json!({"channel": "audit:trail", "event": "entry", "data": {"i": i}}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.wait_primary(replica);
    let log = call_when_back(
        &mut scene.watcher,
        "history",
        json!({"channel": "audit:trail", "limit": 1000}),
    )
    .await;
    let logged: Vec<u64> = log["result"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{log}"))
        .iter()
        .map(|e| e["offset"].as_u64().unwrap_or_else(|| panic!("{e}")))
        .collect();
    assert!(logged.len() as u64 >= PUBLISHED, "{log}");
    // Everything the watcher was pushed on the channel, until it has been
    // quiet for a while.
    let offset_of = |f: &Value| {
        (f["method"] == "notify" && f["params"]["channel"] == "audit:trail")
            .then(|| f["params"]["offset"].as_u64().expect("an offset"))
    };
    let mut live: Vec<u64> = scene
        .watcher
        .pushed
        .drain(..)
        .filter_map(|f| offset_of(&f))
        .collect();
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_secs(5), scene.watcher.next_json()).await
    {
        live.extend(offset_of(&frame));
    }
    assert_eq!(live, logged, "live delivery is the log, once, in order");
    let _ = std::fs::remove_file(&scene.config);
}
