//! Sentinel failover with real processes: a primary, a replica and a
//! Sentinel of the test's own, two gateway instances reaching Redis through
//! the Sentinel (docs/durability.md).
//!
//! - A planned failover (`SENTINEL FAILOVER`): an acknowledged decision is
//!   on the new primary unchanged and cannot be decided again, a pending
//!   approval is decided exactly once by two racing approvers, the logs
//!   start a new epoch and every connection is told.
//! - Writes the replica never got (it is frozen with SIGSTOP while the
//!   primary acknowledges them, then the primary is SIGKILLed): the loss
//!   is reported (`epoch.changed`, `epochChanged` with `complete: false`),
//!   a pending approval whose creation was lost is written back by the
//!   requester's instance, and a decision no replica confirmed was never
//!   acknowledged.
//!
//! Not a behaviour test: it starts its own Redis processes whatever
//! `SWITCHYARD_TEST_REDIS` says.

mod common;

use common::instance::*;
use common::replicas::*;
use common::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A primary, its replica and a Sentinel watching them (quorum 1, a
/// primary silent for 1 s is down). Killed on drop.
struct Replicated {
    primary: Child,
    replica: Child,
    sentinel: Child,
    ports: [u16; 3],
    dir: std::path::PathBuf,
}

impl Replicated {
    fn start() -> Self {
        let ports = [free_port(), free_port(), free_port()];
        let [p, r, s] = ports;
        let dir = temp_path("sentinel");
        std::fs::create_dir_all(&dir).expect("dir");
        let primary = redis_server(p, &dir, &[]);
        wait_until(Duration::from_secs(10), "the primary", || {
            cli(p, &["PING"]).contains("PONG")
        });
        let replica = redis_server(r, &dir, &["--replicaof", "127.0.0.1", &p.to_string()]);
        wait_until(Duration::from_secs(10), "the replica's link", || {
            cli(r, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {s}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {p} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let sentinel = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let set = Self {
            primary,
            replica,
            sentinel,
            ports,
            dir,
        };
        wait_until(
            Duration::from_secs(15),
            "the sentinel to see the replica",
            || cli(s, &["SENTINEL", "replicas", "mymaster"]).contains(&r.to_string()),
        );
        set
    }

    fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=mymaster",
            self.ports[2]
        )
    }

    /// The port the Sentinel names as the primary.
    fn primary_port(&self) -> String {
        cli(
            self.ports[2],
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
        )
    }

    /// Wait (bounded) until the Sentinel names the replica as the primary
    /// and the replica says it is one.
    fn wait_promoted(&self) {
        let r = self.ports[1];
        wait_until(Duration::from_secs(30), "the replica's promotion", || {
            self.primary_port().contains(&r.to_string())
                && cli(r, &["INFO", "replication"]).contains("role:master")
        });
    }

    /// Wait (bounded) until the primary on `port` has a replica online.
    fn wait_replicated(&self, port: u16) {
        wait_until(
            Duration::from_secs(30),
            "a replica of the new primary",
            || cli(port, &["INFO", "replication"]).contains("state=online"),
        );
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        for child in [&mut self.primary, &mut self.replica, &mut self.sentinel] {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_planned_failover_keeps_decisions_and_starts_a_new_epoch() {
    let redis = Replicated::start();
    let Scene {
        a,
        b,
        mut node,
        mut approver,
        mut second,
        mut watcher,
        config,
    } = scene(&redis.url()).await;

    for i in 1..=3 {
        publish(&mut watcher, i).await;
    }
    let decided = request_approval(&mut node, "decided").await;
    let raced = request_approval(&mut node, "raced").await;
    let waits = calls(redis.ports[0], "wait");
    let decision = approver
        .call(
            "approval.resolve",
            json!({"approvalId": decided, "decision": "approve", "note": "fine"}),
        )
        .await;
    assert_eq!(decision["status"], "approved", "{decision}");
    // The decision was acknowledged once a replica had it.
    assert_eq!(calls(redis.ports[0], "wait"), waits + 1);
    let before = watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    let old_epoch = before["epoch"].clone();

    let started = Instant::now();
    assert!(cli(redis.ports[2], &["SENTINEL", "FAILOVER", "mymaster"]).contains("OK"));
    redis.wait_promoted();
    both_on_a_new_epoch(&a, &b, &mut watcher, &old_epoch).await;
    // Decisions need the new primary to have a replica again (the old
    // primary, once Sentinel has turned it into one).
    redis.wait_replicated(redis.ports[1]);

    // Every connection is told of the new epoch.
    let told = watcher.expect_push("epoch.changed").await;
    let new_epoch = told["epoch"].clone();
    assert!(new_epoch.is_string() && new_epoch != old_epoch, "{told}");
    assert_eq!(node.expect_push("epoch.changed").await, told);
    eprintln!(
        "failover: new epoch announced {} ms after SENTINEL FAILOVER",
        started.elapsed().as_millis()
    );

    // The acknowledged decision is on the new primary, unchanged, and
    // stays the only one.
    let read = call_when_back(
        &mut approver,
        "approval.wait",
        json!({"approvalId": decided, "timeoutMs": 1000}),
    )
    .await;
    assert_eq!(read["result"], decision, "{read}");
    assert_eq!(
        approver
            .error_code(
                "approval.resolve",
                json!({"approvalId": decided, "decision": "deny"}),
            )
            .await,
        -32007
    );
    // Two approvers on two instances race for the pending one: one wins.
    // At most one is acknowledged; the stored decision is that one.
    let winner = race(&mut approver, &mut second, &raced).await;
    let stored = node
        .call(
            "approval.wait",
            json!({"approvalId": raced, "timeoutMs": 2000}),
        )
        .await;
    assert!(
        stored["status"] == "approved" || stored["status"] == "denied",
        "{stored}"
    );
    if let Some(winner) = winner {
        assert_eq!(winner, stored, "{stored}");
    }

    // The logs are all there; a reader of the old epoch is told.
    let after = watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    assert_eq!(after["events"], before["events"], "{after}");
    assert_eq!(after["epoch"], new_epoch, "{after}");
    let old = watcher
        .call(
            "history",
            json!({"channel": "audit:trail", "since": 3, "epoch": old_epoch}),
        )
        .await;
    assert_eq!(old["epochChanged"], true, "{old}");
    assert_eq!(old["complete"], false, "{old}");

    // Live delivery goes on, numbered after what the log holds.
    let mut writer = b.client(WRITER).await;
    assert_eq!(publish(&mut writer, 4).await, 4);
    while notify_on(&mut watcher, "audit:trail").await["data"] != json!({"i": 4}) {}
    let _ = std::fs::remove_file(config);
}

#[tokio::test]
async fn writes_the_replica_never_got_are_reported_and_what_live_work_proves_comes_back() {
    let mut redis = Replicated::start();
    let Scene {
        a,
        b,
        mut node,
        mut approver,
        mut second,
        mut watcher,
        config,
    } = scene(&redis.url()).await;

    for i in 1..=2 {
        publish(&mut watcher, i).await;
    }
    let unconfirmed = request_approval(&mut node, "decided while no replica listens").await;
    let before = watcher
        .call("history", json!({"channel": "audit:trail"}))
        .await;
    let old_epoch = before["epoch"].clone();
    wait_until(Duration::from_secs(5), "the replica to catch up", || {
        let p = cli(redis.ports[0], &["INFO", "replication"]);
        let offset = |text: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .map(|v| v.trim().to_owned())
        };
        offset(&p).is_some() && offset(&p) == offset(&cli(redis.ports[1], &["INFO", "replication"]))
    });

    // The replica freezes and loses its link; the primary acknowledges
    // what it never gets.
    signal(&redis.replica, "-STOP");
    assert!(!cli(redis.ports[0], &["CLIENT", "KILL", "TYPE", "replica"]).contains("ERR"));
    for i in 3..=5 {
        assert_eq!(publish(&mut watcher, i).await, i);
    }
    let lost_pending = request_approval(&mut node, "created, then lost with the primary").await;
    // A decision no replica confirms is not acknowledged.
    let refused = approver
        .request(
            "approval.resolve",
            json!({"approvalId": unconfirmed, "decision": "approve"}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32005, "{refused}");
    let message = refused.to_string();
    assert!(message.contains("no replica confirmed"), "{message}");

    // The primary dies; the replica, back, is promoted without them.
    let started = Instant::now();
    redis.primary.kill().expect("SIGKILL the primary");
    redis.primary.wait().expect("reap");
    signal(&redis.replica, "-CONT");
    redis.wait_promoted();
    both_on_a_new_epoch(&a, &b, &mut watcher, &old_epoch).await;

    // The loss is reported, never silent.
    let told = watcher.expect_push("epoch.changed").await;
    assert_ne!(told["epoch"], old_epoch, "{told}");
    eprintln!(
        "lost writes: new epoch announced {} ms after the primary was killed",
        started.elapsed().as_millis()
    );
    let old = call_when_back(
        &mut watcher,
        "history",
        json!({"channel": "audit:trail", "since": 5, "epoch": old_epoch}),
    )
    .await;
    assert_eq!(old["result"]["epochChanged"], true, "{old}");
    assert_eq!(old["result"]["complete"], false, "{old}");
    assert_eq!(
        old["result"]["latest"], 2,
        "the three unreplicated entries are gone: {old}"
    );

    // The approval whose creation was lost is written back by the
    // requester's instance, and approvers hear of it again.
    let restored = call_when_back(&mut approver, "approval.list", json!({})).await;
    let listed = restored["result"]["approvals"]
        .as_array()
        .is_some_and(|l| l.iter().any(|p| p["approvalId"] == lost_pending));
    assert!(listed, "{restored}");
    // Announced when it was created, and again when it was written back
    // (to the approver on the requester's instance at least).
    let mut announced = 0;
    while announced < 2 {
        let push = second.expect_push("approval.requested").await;
        if push["approvalId"] == lost_pending {
            announced += 1;
        }
    }
    // The unacknowledged decision never reached the new primary: it is
    // decided now, once.
    let now = approver
        .call(
            "approval.resolve",
            json!({"approvalId": unconfirmed, "decision": "deny", "note": "after failover"}),
        )
        .await;
    assert_eq!(now["status"], "denied", "{now}");
    assert_eq!(
        second
            .error_code(
                "approval.resolve",
                json!({"approvalId": unconfirmed, "decision": "approve"}),
            )
            .await,
        -32007
    );
    let waited = node
        .call(
            "approval.wait",
            json!({"approvalId": unconfirmed, "timeoutMs": 2000}),
        )
        .await;
    assert_eq!(waited["status"], "denied", "{waited}");

    // A new publication reuses offset 3 and reaches the live subscriber.
    assert_eq!(publish(&mut watcher, 6).await, 3);
    while notify_on(&mut watcher, "audit:trail").await["data"] != json!({"i": 6}) {}
    let _ = std::fs::remove_file(config);
}
