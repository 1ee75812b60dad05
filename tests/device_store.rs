//! The device store's contract, written against `dyn Backend` so memory
//! and Redis (a Redis Cluster with `SWITCHYARD_TEST_REDIS=cluster`) run the
//! same checks: revision check-and-set (the first decision wins), the
//! pending cap, the token index with its expiring entries, TTLs, last
//! seen outside the revision, and the capped audit trail.

mod common;

use common::RedisProcess;
use std::sync::Arc;
use std::time::Duration;
use switchyard::backend::devices::{AUDIT_MAX, CHANGED};
use switchyard::backend::memory::MemoryBackend;
use switchyard::backend::redis::{RedisBackend, RedisSettings};
use switchyard::backend::*;
use switchyard::protocol::now_ms;

/// An inbox that drops everything (the store delivers nothing).
struct Nowhere;

impl Inbox for Nowhere {
    fn deliver(&self, _: Envelope) -> usize {
        0
    }
}

/// Memory, and Redis on a `redis-server` of its own.
async fn backends() -> Vec<(&'static str, Arc<dyn Backend>, Option<RedisProcess>)> {
    let redis_server = RedisProcess::start();
    let settings = RedisSettings {
        url: redis_server.url(),
        prefix: "sy".into(),
        tls: Default::default(),
        alive_ttl: Duration::from_secs(10),
        command_timeout: Duration::from_secs(2),
    };
    let redis: Arc<dyn Backend> = Arc::new(RedisBackend::connect(settings).await.unwrap());
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let mut all = Vec::new();
    for (kind, backend, server) in [
        ("memory", memory, None),
        ("redis", redis, Some(redis_server)),
    ] {
        backend
            .attach("test-instance", 1, Arc::new(Nowhere))
            .await
            .unwrap();
        all.push((kind, backend, server));
    }
    all
}

fn record(id: &str, status: DeviceStatus, rev: u64) -> DeviceRecord {
    let now = now_ms();
    DeviceRecord {
        info: DeviceInfo {
            device_id: id.into(),
            name: "n".into(),
            platform: "p".into(),
            public_key: None,
            status,
            code: "ABCD-EFGH".into(),
            requested_at: now,
            expires_at: now + 60_000,
            role: None,
            scopes: Vec::new(),
            decided_by: None,
            decided_at: None,
            note: None,
            token_issued_at: None,
            previous_token_until: None,
            last_seen: None,
        },
        tokens: TokenHashes::default(),
        requester_conn: "c1".into(),
        rev,
    }
}

fn change(record: DeviceRecord, expected_rev: u64, action: &str) -> DeviceChange {
    DeviceChange {
        audit: DeviceEvent {
            at: now_ms(),
            device_id: record.info.device_id.clone(),
            action: action.into(),
            by: "tester".into(),
            note: None,
            role: None,
            scopes: Vec::new(),
        },
        record,
        expected_rev,
        pending: Pending::Keep,
        ttl_ms: None,
        tokens: Vec::new(),
        now: now_ms(),
    }
}

fn request(id: &str, expected_rev: u64, max: usize) -> DeviceChange {
    let mut c = change(
        record(id, DeviceStatus::Pending, expected_rev + 1),
        expected_rev,
        "requested",
    );
    c.pending = Pending::Add { max };
    c.ttl_ms = Some(60_000);
    c
}

fn is_changed(result: &BackendResult<()>) -> bool {
    matches!(result, Err(BackendError::Conflict(why)) if why == CHANGED)
}

#[tokio::test]
async fn writes_are_checked_against_the_revision_so_one_decision_wins() {
    for (kind, b, _redis) in backends().await {
        b.write_device(&request("d1", 0, 10)).await.unwrap();
        assert!(
            is_changed(&b.write_device(&request("d1", 0, 10)).await),
            "{kind}: a second create"
        );
        let pending = b.device("d1").await.unwrap().expect("stored");
        assert_eq!(pending.rev, 1, "{kind}");

        // Two decisions made on revision 1: the first lands, the second
        // finds the revision moved.
        let mut approved = record("d1", DeviceStatus::Paired, 2);
        approved.tokens.current = Some("h1".into());
        let mut approve = change(approved, 1, "approved");
        approve.pending = Pending::Remove;
        approve.tokens = vec![TokenIndex::Set("h1".into())];
        let reject = change(record("d1", DeviceStatus::Rejected, 2), 1, "rejected");
        b.write_device(&approve).await.unwrap();
        assert!(is_changed(&b.write_device(&reject).await), "{kind}");
        let now = b.device("d1").await.unwrap().unwrap();
        assert_eq!(
            (now.info.status, now.rev),
            (DeviceStatus::Paired, 2),
            "{kind}"
        );
        let found = b.device_by_token("h1").await.unwrap().expect("indexed");
        assert_eq!(found.info.device_id, "d1", "{kind}");
        assert!(b.device_by_token("h2").await.unwrap().is_none(), "{kind}");
        assert!(b.device("nobody").await.unwrap().is_none(), "{kind}");

        let history = b.device_history(10).await.unwrap();
        let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["approved", "requested"], "{kind}: newest first");
        assert_eq!(b.device_history(1).await.unwrap().len(), 1, "{kind}");
        assert!(b.device_history(0).await.unwrap().is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn the_pending_index_is_capped_and_forgets_expired_requests() {
    for (kind, b, _redis) in backends().await {
        b.write_device(&request("a", 0, 2)).await.unwrap();
        b.write_device(&request("b", 0, 2)).await.unwrap();
        let full = b.write_device(&request("c", 0, 2)).await;
        assert!(
            matches!(full, Err(BackendError::Limit(_, 2))),
            "{kind}: {full:?}"
        );
        assert!(
            b.device("c").await.unwrap().is_none(),
            "{kind}: not written"
        );
        // Re-writing a device already pending does not count twice.
        let mut again = request("a", 1, 2);
        again.record.rev = 2;
        b.write_device(&again).await.unwrap();

        // A request whose time passed leaves the index (and, with its
        // TTL, the store).
        let mut short = request("e", 0, 10);
        short.ttl_ms = Some(300);
        short.record.info.expires_at = now_ms() + 300;
        let mut removed = change(record("b", DeviceStatus::Rejected, 2), 1, "rejected");
        removed.pending = Pending::Remove;
        b.write_device(&removed).await.unwrap();
        b.write_device(&short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(b.device("e").await.unwrap().is_none(), "{kind}: expired");
        let mut late = request("c", 0, 2);
        late.now = now_ms();
        b.write_device(&late).await.unwrap();
        let listed: Vec<String> = b
            .devices()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.info.device_id)
            .collect();
        assert_eq!(listed, ["a", "b", "c"], "{kind}: by first request");
    }
}

#[tokio::test]
async fn token_index_entries_expire_and_go_and_last_seen_stays_outside_the_revision() {
    for (kind, b, _redis) in backends().await {
        let mut paired = record("t", DeviceStatus::Paired, 1);
        paired.tokens.current = Some("old".into());
        let mut create = change(paired, 0, "approved");
        create.tokens = vec![TokenIndex::Set("old".into())];
        b.write_device(&create).await.unwrap();

        b.touch_device("t", 42).await.unwrap();
        let seen = b.device("t").await.unwrap().unwrap();
        assert_eq!((seen.info.last_seen, seen.rev), (Some(42), 1), "{kind}");

        let mut rotated = seen.clone();
        rotated.rev = 2;
        rotated.info.last_seen = None;
        rotated.tokens.current = Some("new".into());
        rotated.tokens.previous = Some("old".into());
        let mut rotate = change(rotated, 1, "rotated");
        rotate.tokens = vec![
            TokenIndex::Set("new".into()),
            TokenIndex::Expire("old".into(), 300),
        ];
        b.write_device(&rotate).await.unwrap();
        assert!(b.device_by_token("old").await.unwrap().is_some(), "{kind}");
        assert!(b.device_by_token("new").await.unwrap().is_some(), "{kind}");
        let kept = b.device("t").await.unwrap().unwrap();
        assert_eq!(kept.info.last_seen, Some(42), "{kind}: a write keeps it");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(b.device_by_token("old").await.unwrap().is_none(), "{kind}");

        let mut revoked = kept.clone();
        revoked.rev = 3;
        revoked.info.status = DeviceStatus::Revoked;
        revoked.tokens = TokenHashes::default();
        let mut revoke = change(revoked, 2, "revoked");
        revoke.tokens = vec![TokenIndex::Delete("new".into())];
        revoke.ttl_ms = Some(300);
        b.write_device(&revoke).await.unwrap();
        assert!(b.device_by_token("new").await.unwrap().is_none(), "{kind}");
        assert!(b.device("t").await.unwrap().is_some(), "{kind}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(b.device("t").await.unwrap().is_none(), "{kind}: its TTL");
        assert!(b.devices().await.unwrap().is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn the_audit_trail_is_capped() {
    for (kind, b, _redis) in backends().await {
        for rev in 0..(AUDIT_MAX + 5) as u64 {
            let c = change(
                record("busy", DeviceStatus::Paired, rev + 1),
                rev,
                "rotated",
            );
            b.write_device(&c).await.unwrap();
        }
        let all = b.device_history(AUDIT_MAX * 2).await.unwrap();
        assert_eq!(all.len(), AUDIT_MAX, "{kind}");
    }
}
