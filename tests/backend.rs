//! The backend contract, written against `dyn Backend` so every
//! implementation runs the same checks (see `docs/architecture.md`).

mod common;

use common::{RedisProcess, eventually};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::backend::memory::MemoryBackend;
use switchyard::backend::redis::{RedisBackend, RedisSettings};
use switchyard::backend::*;
use switchyard::config::Window;

/// An inbox that records what it is given.
#[derive(Default)]
struct Recorder(Mutex<Vec<Envelope>>);

impl Inbox for Recorder {
    /// Records everything; holds no sockets, so targeted envelopes count
    /// as not delivered here.
    fn deliver(&self, envelope: Envelope) -> usize {
        let counted = usize::from(matches!(envelope, Envelope::Channel { .. }));
        self.0.lock().unwrap().push(envelope);
        counted
    }
}

impl Recorder {
    fn take(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A backend under test, its recording inbox and the Redis it may use.
struct Under {
    backend: Arc<dyn Backend>,
    inbox: Arc<Recorder>,
    _redis: Option<RedisProcess>,
}

/// Every backend, each attached to a recording inbox: memory, and Redis on
/// a `redis-server` of its own.
async fn backends() -> Vec<Under> {
    let memory: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let redis_server = RedisProcess::start();
    let settings = RedisSettings {
        url: redis_server.url(),
        prefix: "sy".into(),
        tls: Default::default(),
        alive_ttl: Duration::from_secs(10),
        command_timeout: Duration::from_secs(2),
    };
    let redis: Arc<dyn Backend> = Arc::new(RedisBackend::connect(settings).await.unwrap());
    let mut all = Vec::new();
    for (backend, server) in [(memory, None), (redis, Some(redis_server))] {
        let inbox = Arc::new(Recorder::default());
        backend
            .attach("test-instance", 1, inbox.clone())
            .await
            .unwrap();
        all.push(Under {
            backend,
            inbox,
            _redis: server,
        });
    }
    all
}

/// What the inbox got within a short quiet period (for "nothing arrives").
async fn quiet(inbox: &Recorder) -> Vec<Envelope> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    inbox.take()
}

/// Wait until the inbox got `n` envelopes, then take them.
async fn received(inbox: &Recorder, n: usize) -> Vec<Envelope> {
    eventually(|| async { inbox.0.lock().unwrap().len() >= n }).await;
    // Anything more would arrive promptly too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    inbox.take()
}

fn session(id: &str, owner: &str) -> SessionRecord {
    SessionRecord {
        session_id: id.into(),
        owner: Some(owner.into()),
        owner_identity: format!("user-{owner}"),
        members: vec![owner.into()],
        member_identities: vec![format!("user-{owner}")],
        meta: json!({"a": {"b": 1, "c": 2}}),
        version: 0,
        max_members: 2,
        created_at: 1,
        updated_at: 1,
        detached_at: None,
        resume_token: "t".into(),
        invited: Vec::new(),
        open: false,
    }
}

fn presence(conn: &str) -> PresenceEntry {
    PresenceEntry {
        conn_id: conn.into(),
        node_id: "test-instance".into(),
        generation: 1,
        identity: Some("alice".into()),
        role: Some("operator".into()),
        client: json!({}),
        connected_at: 1,
        last_seen: 1,
    }
}

#[tokio::test]
async fn sessions_are_unique_bounded_and_versioned() {
    for Under { backend: b, .. } in backends().await {
        b.create_session(session("s1", "c1"), 2).await.unwrap();
        let dup = b.create_session(session("s1", "c2"), 2).await;
        assert!(
            matches!(dup, Err(BackendError::Conflict(_))),
            "{}",
            b.kind()
        );
        b.create_session(session("s2", "c1"), 2).await.unwrap();
        let over = b.create_session(session("s3", "c1"), 2).await;
        assert!(matches!(over, Err(BackendError::Limit(_, 2))));

        // The session's rule: not invited, not in.
        let refused = b.join_session("s1", "c2", "user-c2", Admission::Rule).await;
        assert!(
            matches!(refused, Err(BackendError::Forbidden(_))),
            "{}: {refused:?}",
            b.kind()
        );
        let invited = b
            .invite_session("s1", &["user-c2".to_owned(), "user-c2".to_owned()])
            .await
            .unwrap();
        assert_eq!(invited.invited, ["user-c2"], "invited once");
        let joined = b
            .join_session("s1", "c2", "user-c2", Admission::Rule)
            .await
            .unwrap();
        assert_eq!(joined.members, ["c1", "c2"]);
        b.join_session("s1", "c2", "user-c2", Admission::Rule)
            .await
            .unwrap();
        // Without the rule (an admin, a re-join) only the cap applies.
        let full = b
            .join_session("s1", "c3", "user-c3", Admission::Unchecked)
            .await;
        assert!(matches!(full, Err(BackendError::Limit(_, 2))));
        let missing = b
            .join_session("nope", "c3", "x", Admission::Unchecked)
            .await;
        assert!(matches!(
            b.invite_session("nope", &["x".to_owned()]).await,
            Err(BackendError::NotFound("session"))
        ));
        // An open session admits anyone; the owner's identity is always in.
        let mut open = session("s-open", "c9");
        open.open = true;
        open.max_members = 3;
        b.create_session(open, 2).await.unwrap();
        b.join_session("s-open", "c10", "anyone", Admission::Rule)
            .await
            .unwrap();
        b.join_session("s-open", "c11", "user-c9", Admission::Rule)
            .await
            .unwrap();
        assert!(matches!(missing, Err(BackendError::NotFound("session"))));

        let patched = b
            .patch_session("s1", &json!({"a": {"b": null, "d": 4}}), Some(0))
            .await
            .unwrap();
        assert_eq!(patched.meta, json!({"a": {"c": 2, "d": 4}}));
        assert_eq!(patched.version, 1);
        let stale = b.patch_session("s1", &json!({"x": 1}), Some(0)).await;
        assert!(matches!(stale, Err(BackendError::Conflict(_))));
        assert_eq!(b.session("s1").await.unwrap().unwrap().version, 1);
    }
}

#[tokio::test]
async fn detaching_an_owner_starts_its_resume_window() {
    for Under { backend: b, .. } in backends().await {
        b.create_session(session("s1", "c1"), 5).await.unwrap();
        b.join_session("s1", "c2", "user-c2", Admission::Unchecked)
            .await
            .unwrap();
        let touched = b.detach_connection("c1", 1000).await.unwrap();
        assert_eq!(touched, ["s1"]);
        let rec = b.session("s1").await.unwrap().unwrap();
        assert_eq!(rec.owner, None);
        assert_eq!(rec.detached_at, Some(1000));
        assert_eq!(rec.members, ["c2"]);
        assert!(b.expired_sessions(999).await.unwrap().is_empty());
        assert_eq!(b.expired_sessions(1000).await.unwrap(), ["s1"]);
        // A detached session no longer counts against its old owner.
        b.create_session(session("s2", "c1"), 1).await.unwrap();
        assert!(b.close_session("s1").await.unwrap().is_some());
        assert!(b.close_session("s1").await.unwrap().is_none());
        assert!(b.session("s1").await.unwrap().is_none());
    }
}

/// An owner taken for gone (reaped while its instance was cut off) takes
/// its session back: owner and first member again, out of the resume
/// window, counted as its session; nobody else can.
#[tokio::test]
async fn an_owner_reclaims_a_detached_session() {
    for Under { backend: b, .. } in backends().await {
        let kind = b.kind();
        b.create_session(session("s1", "c1"), 5).await.unwrap();
        b.join_session("s1", "c2", "user-c2", Admission::Unchecked)
            .await
            .unwrap();
        b.detach_connection("c1", 1000).await.unwrap();
        let other = b.reclaim_session("s1", "c2", "user-c2", false).await;
        assert!(matches!(other, Err(BackendError::Conflict(_))), "{kind}");
        let rec = b
            .reclaim_session("s1", "c1", "user-c1", false)
            .await
            .unwrap();
        assert_eq!(rec.owner.as_deref(), Some("c1"), "{kind}");
        assert_eq!(rec.detached_at, None, "{kind}");
        assert_eq!(rec.members, ["c1", "c2"], "{kind}");
        assert_eq!(rec.member_identities, ["user-c1", "user-c2"], "{kind}");
        assert!(
            b.expired_sessions(u64::MAX).await.unwrap().is_empty(),
            "{kind}"
        );
        // Owned again: it counts against the owner's cap.
        let over = b.create_session(session("s2", "c1"), 1).await;
        assert!(matches!(over, Err(BackendError::Limit(..))), "{kind}");
        // Again is a no-op; a session owned by someone else is refused.
        assert_eq!(
            b.reclaim_session("s1", "c1", "user-c1", false)
                .await
                .unwrap(),
            rec
        );
        let taken = b.reclaim_session("s1", "c9", "user-c1", false).await;
        assert!(matches!(taken, Err(BackendError::Conflict(_))), "{kind}");
        let missing = b.reclaim_session("nope", "c1", "user-c1", false).await;
        assert!(matches!(missing, Err(BackendError::NotFound(_))), "{kind}");
        // A takeover (a resume from a new connection) moves ownership from
        // a still attached owner, which stays a member; not across identities.
        let stolen = b.reclaim_session("s1", "c9", "user-c2", true).await;
        assert!(matches!(stolen, Err(BackendError::Conflict(_))), "{kind}");
        let rec = b
            .reclaim_session("s1", "c9", "user-c1", true)
            .await
            .unwrap();
        assert_eq!(rec.owner.as_deref(), Some("c9"), "{kind}");
        assert_eq!(rec.members, ["c9", "c1", "c2"], "{kind}");
        // c1 no longer owns it: its cap is free, its disconnect detaches nothing.
        b.create_session(session("s2", "c1"), 1).await.unwrap();
        b.close_session("s2").await.unwrap();
        b.detach_connection("c1", 2000).await.unwrap();
        let rec = b.session("s1").await.unwrap().unwrap();
        assert_eq!(
            (rec.owner.as_deref(), rec.detached_at),
            (Some("c9"), None),
            "{kind}"
        );
        // Closing it clears every index the reclaim wrote.
        b.close_session("s1").await.unwrap();
        b.create_session(session("s3", "c1"), 1).await.unwrap();
        b.create_session(session("s4", "c9"), 1).await.unwrap();
    }
}

/// Channel logs (here a session's channel): frames numbered from 1 in one
/// step with their delivery, the newest `keep` kept, read back after any
/// offset; the numbering can be moved forward (a restore) and a closed
/// session's log is dropped.
#[tokio::test]
async fn channel_logs_are_numbered_kept_and_delivered() {
    for Under {
        backend: b, inbox, ..
    } in backends().await
    {
        let kind = b.kind();
        let channel = "$session:s1";
        b.create_session(session("s1", "c1"), 5).await.unwrap();
        b.set_interest(channel, 2).await.unwrap();
        let event = |n: u64| LoggedFrame::new("session.event", json!({"sessionId": "s1", "n": n}));
        for n in 1..=5 {
            let (offset, count) = b.log_publish(channel, &event(n), 3).await.unwrap();
            assert_eq!((offset, count), (n, 2), "{kind}");
        }
        let delivered: Vec<u64> = received(&inbox, 5)
            .await
            .into_iter()
            .filter_map(|e| match e {
                Envelope::Channel {
                    channel: c,
                    frame,
                    last,
                } if c == channel && !last => logged_offset(frame.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(delivered, [1, 2, 3, 4, 5], "{kind}");

        let offsets = |page: &EventPage| page.events.iter().map(|e| e.0).collect::<Vec<_>>();
        let all = b.channel_log(channel, 0, 100).await.unwrap();
        assert_eq!((offsets(&all), all.latest), (vec![3, 4, 5], 5), "{kind}");
        assert!(!all.continues(0), "1 and 2 were trimmed ({kind})");
        assert_eq!(logged_offset(all.events[0].1.as_str()), Some(3), "{kind}");
        assert_eq!(all.params(false)[2]["n"], 5, "{kind}");
        assert_eq!(all.params(true)[2]["method"], "session.event", "{kind}");
        let after = b.channel_log(channel, 3, 1).await.unwrap();
        assert_eq!(offsets(&after), [4], "{kind}");
        assert!(after.continues(3), "{kind}");
        let none = b.channel_log(channel, 5, 100).await.unwrap();
        assert!(none.events.is_empty() && none.continues(5), "{kind}");
        let unknown = b.channel_log("$session:nope", 0, 10).await.unwrap();
        assert_eq!((unknown.latest, unknown.events.len()), (0, 0), "{kind}");

        // Moving the numbering forward drops a log that no longer lines up;
        // moving it back does nothing.
        b.advance_log(channel, 40).await.unwrap();
        b.advance_log(channel, 7).await.unwrap();
        let (offset, _) = b.log_publish(channel, &event(41), 3).await.unwrap();
        assert_eq!(offset, 41, "{kind}");
        let page = b.channel_log(channel, 0, 100).await.unwrap();
        assert_eq!(offsets(&page), [41], "{kind}");

        b.close_session("s1").await.unwrap();
        b.forget_session_records("s1").await.unwrap();
        assert_eq!(
            b.channel_log(channel, 0, 10).await.unwrap().latest,
            0,
            "{kind}"
        );
    }
}

#[tokio::test]
async fn rate_windows_are_exact() {
    for Under { backend: b, .. } in backends().await {
        let kind = b.kind();
        let w = Window::new(3, 1000);
        for t in [10, 20, 30] {
            assert!(b.rate_hit("k", w, t).await.unwrap().allowed);
        }
        let no = b.rate_hit("k", w, 40).await.unwrap();
        assert!(!no.allowed);
        assert_eq!(no.retry_after_ms, 970);
        assert!(!b.rate_peek("k", w, 41).await.unwrap().allowed);
        assert!(b.rate_peek("other", w, 41).await.unwrap().allowed);
        assert!(b.rate_hit("k", w, 1011).await.unwrap().allowed);
        let (granted, _) = b.rate_take("lease", w, 2, 0).await.unwrap();
        assert_eq!(granted, 2);
        let (granted, _) = b.rate_take("lease", w, 2, 1).await.unwrap();
        assert_eq!(granted, 1);
        let (granted, retry) = b.rate_take("lease", w, 2, 2).await.unwrap();
        assert_eq!((granted, retry > 0), (0, true));
        // Large leases: each counts in full, and leaves the window whole.
        let big = Window::new(1500, 1000);
        let take = |at: u64| b.rate_take("big", big, 1000, at);
        assert_eq!(take(0).await.unwrap(), (1000, 0), "{kind}");
        assert_eq!(take(100).await.unwrap(), (500, 0), "{kind}");
        assert_eq!(
            take(200).await.unwrap(),
            (0, 800),
            "{kind}: room when the first leaves"
        );
        let full = b.rate_peek("big", big, 300).await.unwrap();
        assert_eq!((full.allowed, full.count), (false, 1500), "{kind}");
        assert_eq!(
            take(1001).await.unwrap(),
            (1000, 0),
            "{kind}: the first lease left"
        );
        assert_eq!(
            take(1101).await.unwrap(),
            (500, 0),
            "{kind}: the second left"
        );
        let now = b.rate_peek("big", big, 1102).await.unwrap();
        assert_eq!(now.count, 1500, "{kind}");
    }
}

/// Credential checks hold a slot of the failure window from their start:
/// a good one gives it back, a failure keeps it. A refusal while checks
/// still run says "in a second", one from failures alone waits for the
/// oldest to leave; a check never settled counts as a failure once stale.
#[tokio::test]
async fn credential_checks_reserve_and_settle() {
    use switchyard::ratelimit::{CHECK_PENDING_MS, CHECK_RETRY_MS};
    for Under { backend: b, .. } in backends().await {
        let kind = b.kind();
        let w = Window::new(3, 60_000);
        for (id, t) in [("a", 0), ("b", 1), ("c", 2)] {
            assert!(b.check_reserve("ip", w, id, t).await.unwrap().allowed);
        }
        let full = b.check_reserve("ip", w, "d", 3).await.unwrap();
        assert!(!full.allowed, "{kind}");
        assert_eq!(
            full.retry_after_ms, CHECK_RETRY_MS,
            "{kind}: checks still run"
        );
        b.check_settle("ip", "b", false).await.unwrap();
        assert!(
            b.check_reserve("ip", w, "d", 4).await.unwrap().allowed,
            "{kind}: a good check gave its slot back"
        );
        for id in ["a", "c", "d"] {
            b.check_settle("ip", id, true).await.unwrap();
        }
        // Settling twice, or an unknown check, changes nothing.
        b.check_settle("ip", "a", false).await.unwrap();
        b.check_settle("ip", "zz", false).await.unwrap();
        let locked = b.check_reserve("ip", w, "e", 10).await.unwrap();
        assert!(!locked.allowed, "{kind}");
        assert_eq!(locked.retry_after_ms, 60_000 - 10, "{kind}: failures only");
        assert!(
            b.check_reserve("other", w, "e", 10).await.unwrap().allowed,
            "{kind}: per key"
        );

        // A check whose instance died before settling it.
        let one = Window::new(1, 60_000);
        assert!(b.check_reserve("lost", one, "x", 0).await.unwrap().allowed);
        let soon = b.check_reserve("lost", one, "y", 100).await.unwrap();
        assert_eq!(soon.retry_after_ms, CHECK_RETRY_MS, "{kind}");
        let stale = CHECK_PENDING_MS + 1;
        let later = b.check_reserve("lost", one, "y", stale).await.unwrap();
        assert_eq!(later.retry_after_ms, 60_000 - stale, "{kind}: stale");
    }
}

#[tokio::test]
async fn channels_count_subscribers_and_presence() {
    for Under { backend: b, .. } in backends().await {
        let member = ChannelMember {
            conn_id: "c1".into(),
            identity: "alice".into(),
            client: json!({}),
            joined_at: 1,
        };
        b.channel_join("room", "c1", Some(member.clone()))
            .await
            .unwrap();
        b.channel_join("room", "c2", None).await.unwrap();
        let (members, next) = b.channel_members("room", None, 10).await.unwrap();
        assert_eq!((members, next), (vec![member], None));
        let channels = b.channels().await.unwrap();
        assert_eq!(channels.len(), 1);
        assert_eq!(channels[0].subscribers, 2);
        b.channel_leave("room", "c1").await.unwrap();
        b.channel_leave("room", "c2").await.unwrap();
        assert!(b.channels().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn delivery_reaches_only_interested_instances_and_known_connections() {
    for Under {
        backend: b, inbox, ..
    } in backends().await
    {
        // What instances send: a JSON-RPC notification (Redis drops
        // anything else as malformed).
        let frame = switchyard::protocol::frame::notification("notify", &json!({"n": 1}));
        assert_eq!(b.publish("room", frame.clone(), false).await.unwrap(), 0);
        assert!(quiet(&inbox).await.is_empty(), "no interest, no delivery");
        b.set_interest("room", 3).await.unwrap();
        assert_eq!(b.publish("room", frame.clone(), false).await.unwrap(), 3);
        let got = received(&inbox, 1).await;
        assert!(
            matches!(&got[..], [Envelope::Channel { channel, .. }] if channel == "room"),
            "{}: {got:?}",
            b.kind()
        );
        let extra = quiet(&inbox).await;
        assert!(extra.is_empty(), "{}: delivered twice: {extra:?}", b.kind());
        b.set_interest("room", 0).await.unwrap();
        assert_eq!(b.publish("room", frame.clone(), false).await.unwrap(), 0);
        if common::redis_cluster_mode() && b.kind() == "redis" {
            // fred resolves SUNSUBSCRIBE once written, so on Redis Cluster
            // an envelope already on its way may still arrive (the hub
            // drops it: no local subscriber). The interest must still end.
            let stopped = eventually(|| async {
                inbox.take();
                b.publish("room", frame.clone(), false).await.unwrap();
                quiet(&inbox).await.is_empty()
            })
            .await;
            assert!(stopped, "redis cluster: deliveries never stopped");
        } else {
            let late = quiet(&inbox).await;
            assert!(late.is_empty(), "{}: {late:?}", b.kind());
        }

        let to_c1 = Envelope::Conn {
            conn_id: "c1".into(),
            frame,
        };
        assert!(!b.send_to_conn(to_c1.clone()).await.unwrap());
        inbox.take();
        b.put_connection(presence("c1")).await.unwrap();
        assert!(b.send_to_conn(to_c1).await.unwrap());
        let got = received(&inbox, 1).await;
        assert!(
            got.iter()
                .any(|e| matches!(e, Envelope::Conn { conn_id, .. } if conn_id == "c1")),
            "{}: {got:?}",
            b.kind()
        );
        assert_eq!(b.connections().await.unwrap().len(), 1);
        assert!(b.connection("c1").await.unwrap().is_some());
        b.remove_connection("c1").await.unwrap();
        assert!(b.connections().await.unwrap().is_empty());
    }
}

/// Listing presence (connections, a channel's members) a page at a time:
/// every entry over the walk (exactly once in memory), pages of about the
/// asked size, the last page says so.
#[tokio::test]
async fn presence_pages_walk_every_entry() {
    for Under { backend: b, .. } in backends().await {
        let kind = b.kind();
        let (page, next) = b.connections_page(None, 10).await.unwrap();
        assert!(page.is_empty() && next.is_none(), "{kind}: empty");
        // More than Redis keeps in a listpack, so HSCAN really pages.
        let all: std::collections::BTreeSet<String> =
            (0..300).map(|i| format!("c{i:03}")).collect();
        for id in &all {
            b.put_connection(presence(id)).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let (page, next) = b.connections_page(cursor.as_deref(), 50).await.unwrap();
            pages += 1;
            assert!(page.len() <= 150, "{kind}: a page of {}", page.len());
            seen.extend(page.into_iter().map(|e| e.conn_id));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(pages < 100, "{kind}: the walk ends");
        }
        assert!(pages >= 3, "{kind}: {pages} pages");
        // A channel's presence members page the same way (more than the
        // 512 entries a Redis hash of small values keeps as a listpack,
        // which HSCAN returns whole).
        let all_members: std::collections::BTreeSet<String> =
            (0..700).map(|i| format!("m{i:03}")).collect();
        for id in &all_members {
            let member = ChannelMember {
                conn_id: id.clone(),
                identity: "alice".into(),
                client: json!({}),
                joined_at: 1,
            };
            b.channel_join("big", id, Some(member)).await.unwrap();
        }
        let mut members = std::collections::BTreeSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let (page, next) = b
                .channel_members("big", cursor.as_deref(), 50)
                .await
                .unwrap();
            assert!(page.len() <= 150, "{kind}: a page of {}", page.len());
            members.extend(page.into_iter().map(|m| m.conn_id));
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "{kind}: the walk ends");
        assert_eq!(members, all_members, "{kind}: every member");
        let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique, all, "{kind}");
        if kind == "memory" {
            // Redis's HSCAN may repeat an entry when the hash is rehashed.
            assert_eq!(seen.len(), all.len(), "{kind}: each once");
        } else {
            let bad = b.connections_page(Some("not-a-cursor"), 10).await;
            assert!(
                matches!(bad, Err(BackendError::Invalid("cursor", _))),
                "{bad:?}"
            );
        }
    }
}

#[tokio::test]
async fn connection_counts_follow_puts_role_changes_and_removals() {
    for Under { backend: b, .. } in backends().await {
        let expect = |connections, nodes| {
            let b = b.clone();
            async move {
                let want = ConnectionCounts { connections, nodes };
                assert_eq!(b.connection_counts().await.unwrap(), want, "{}", b.kind());
            }
        };
        expect(0, 0).await;
        let node = PresenceEntry {
            role: Some("node".into()),
            ..presence("n1")
        };
        for entry in [presence("c1"), presence("c2"), node.clone()] {
            b.put_connection(entry).await.unwrap();
        }
        expect(3, 1).await;
        // Putting it again with another role (re-authentication) un-counts it.
        let operator = PresenceEntry {
            role: Some("operator".into()),
            ..node.clone()
        };
        b.put_connection(operator).await.unwrap();
        expect(3, 0).await;
        b.remove_connection("c1").await.unwrap();
        expect(2, 0).await;
        // Removing a node un-counts it as a node too.
        b.put_connection(node.clone()).await.unwrap();
        expect(2, 1).await;
        b.remove_connection("n1").await.unwrap();
        expect(1, 0).await;
    }
}

#[tokio::test]
async fn instances_register_and_leave() {
    for Under { backend: b, .. } in backends().await {
        let info = InstanceInfo {
            id: "i1".into(),
            generation: 7,
            version: "test".into(),
            started_at: 1,
            connections: 0,
            last_seen: switchyard::protocol::now_ms(),
            config_version: 0,
            backend_up: true,
            pubsub_lag_ms: None,
        };
        b.register_instance(info.clone()).await.unwrap();
        b.register_instance(InstanceInfo {
            connections: 3,
            config_version: 4,
            pubsub_lag_ms: Some(2),
            ..info
        })
        .await
        .unwrap();
        let all = b.instances().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].connections, 3);
        assert_eq!(all[0].config_version, 4);
        assert_eq!(all[0].pubsub_lag_ms, Some(2));
        b.deregister_instance("i1").await.unwrap();
        assert!(b.instances().await.unwrap().is_empty());
    }
}

fn run_record(session: &str, run: &str, caller: &str) -> RunRecord {
    RunRecord {
        run_id: run.into(),
        session_id: session.into(),
        agent_id: String::new(),
        instance_id: String::new(),
        generation: 0,
        caller: caller.into(),
        task: "t".into(),
        status: RunStatus::Running,
        result: None,
        error: None,
        started_at: 1,
        finished_at: None,
        deadline: None,
        agent_identity: String::new(),
        attached: 0,
    }
}

#[tokio::test]
async fn runs_are_limited_and_finished_once() {
    for u in backends().await {
        let b = &u.backend;
        let kind = b.kind();
        for i in 0..2 {
            b.start_run(&run_record(&format!("s{i}"), &format!("r{i}"), "ann"), 2)
                .await
                .unwrap();
        }
        // Per caller, and one at a time per session.
        let third = b.start_run(&run_record("s2", "r2", "ann"), 2).await;
        assert!(
            matches!(third, Err(BackendError::Limit(..))),
            "{kind}: {third:?}"
        );
        let again = b.start_run(&run_record("s0", "rx", "bob"), 2).await;
        assert!(
            matches!(again, Err(BackendError::Conflict(_))),
            "{kind}: {again:?}"
        );
        for session in ["s0", "s1"] {
            let run = b.run(session).await.unwrap().expect("recorded");
            assert_eq!(run.status, RunStatus::Running, "{kind}: {session}");
        }

        // The first finisher wins; a stale run id finishes nothing.
        let mut done = run_record("s0", "r0", "ann");
        done.status = RunStatus::Completed;
        done.result = Some(json!({"ok": 1}));
        assert!(b.finish_run(&done).await.unwrap().is_some(), "{kind}");
        let mut late = done.clone();
        late.status = RunStatus::Cancelled;
        assert!(b.finish_run(&late).await.unwrap().is_none(), "{kind}");
        let stale = RunRecord {
            run_id: "other".into(),
            ..run_record("s1", "other", "ann")
        };
        assert!(b.finish_run(&stale).await.unwrap().is_none(), "{kind}");
        let stored = b.run("s0").await.unwrap().unwrap();
        assert_eq!(stored.status, RunStatus::Completed, "{kind}");
        assert_eq!(stored.result, Some(json!({"ok": 1})), "{kind}");
        // The finished run freed a slot of its caller.
        b.start_run(&run_record("s2", "r2", "ann"), 2)
            .await
            .unwrap();

        // History is bounded and dropped with the session's records.
        let entries: Vec<_> = (0..5).map(|i| json!({"n": i})).collect();
        b.append_history("s1", &entries, 3).await.unwrap();
        assert_eq!(
            b.history("s1", 10).await.unwrap(),
            [json!({"n": 2}), json!({"n": 3}), json!({"n": 4})],
            "{kind}"
        );
        assert_eq!(
            b.history("s1", 1).await.unwrap(),
            [json!({"n": 4})],
            "{kind}"
        );
        b.forget_session_records("s1").await.unwrap();
        assert!(b.history("s1", 10).await.unwrap().is_empty(), "{kind}");
        assert!(b.run("s1").await.unwrap().is_none(), "{kind}");
        // Its running slot went with it.
        b.start_run(&run_record("s3", "r3", "ann"), 2)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_lost_run_is_reattached_once_and_only_its_latest_attach_finishes_it() {
    for u in backends().await {
        let b = &u.backend;
        let kind = b.kind();
        b.start_run(&run_record("lost", "r", "cal"), 1)
            .await
            .unwrap();
        // Its serving instance names itself while it runs.
        let mut served = run_record("lost", "r", "cal");
        served.instance_id = "b".into();
        served.generation = 7;
        assert!(b.serve_run(&served).await.unwrap(), "{kind}");
        let stored = b.run("lost").await.unwrap().expect("recorded");
        assert_eq!(
            (
                stored.status,
                stored.instance_id.as_str(),
                stored.generation
            ),
            (RunStatus::Running, "b", 7),
            "{kind}"
        );
        let mut stranger = served.clone();
        stranger.run_id = "not-it".into();
        assert!(!b.serve_run(&stranger).await.unwrap(), "{kind}");
        // Only an ended run can be taken back.
        let mut back = run_record("lost", "r", "cal");
        back.attached = 1;
        assert!(!b.reattach_run(&back).await.unwrap(), "{kind}");
        let mut lost = run_record("lost", "r", "cal");
        lost.status = RunStatus::Error;
        lost.error = Some(json!({"code": -32005, "data": {"reason": "instance_lost"}}));
        assert!(b.finish_run(&lost).await.unwrap().is_some(), "{kind}");
        // Once: a second re-attach under the same count loses.
        back.instance_id = "a".into();
        assert!(b.reattach_run(&back).await.unwrap(), "{kind}");
        assert!(!b.reattach_run(&back).await.unwrap(), "{kind}");
        let stored = b.run("lost").await.unwrap().expect("recorded");
        assert_eq!(
            (stored.status, stored.attached, stored.instance_id.as_str()),
            (RunStatus::Running, 1, "a"),
            "{kind}"
        );
        // Running again, it holds its caller's slot.
        let other = b.start_run(&run_record("other", "o", "cal"), 1).await;
        assert!(
            matches!(other, Err(BackendError::Limit(..))),
            "{kind}: {other:?}"
        );
        // The lost call's late finish (count 0) does not end it; the
        // re-attached agent's does.
        let mut late = lost.clone();
        late.status = RunStatus::Completed;
        assert!(b.finish_run(&late).await.unwrap().is_none(), "{kind}");
        assert!(
            !b.serve_run(&served).await.unwrap(),
            "{kind}: a stale count"
        );
        let mut done = back.clone();
        done.status = RunStatus::Completed;
        done.result = Some(json!("ok"));
        assert!(b.finish_run(&done).await.unwrap().is_some(), "{kind}");
        assert_eq!(
            b.run("lost").await.unwrap().unwrap().result,
            Some(json!("ok"))
        );
        b.start_run(&run_record("other", "o", "cal"), 1)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn approvals_are_decided_once_and_audited() {
    for u in backends().await {
        let b = &u.backend;
        let kind = b.kind();
        let pending = ApprovalRecord {
            approval_id: "ap1".into(),
            session_id: None,
            tool: "rm".into(),
            args: json!({}),
            summary: "s".into(),
            requester_conn: "c1".into(),
            requester: "node".into(),
            status: ApprovalStatus::Pending,
            decided_by: None,
            note: None,
            created_at: 10,
            expires_at: 60_000,
            resolved_at: None,
        };
        b.create_approval(&pending).await.unwrap();
        let twice = b.create_approval(&pending).await;
        assert!(matches!(twice, Err(BackendError::Conflict(_))), "{kind}");
        assert_eq!(b.pending_approvals().await.unwrap().len(), 1, "{kind}");

        let decide = |status, by: &str| ApprovalRecord {
            status,
            decided_by: Some(by.into()),
            resolved_at: Some(20),
            ..pending.clone()
        };
        let won = b
            .resolve_approval(&decide(ApprovalStatus::Approved, "ann"))
            .await;
        assert_eq!(won.unwrap().decided_by.as_deref(), Some("ann"), "{kind}");
        let lost = b
            .resolve_approval(&decide(ApprovalStatus::Denied, "bob"))
            .await;
        assert!(
            matches!(lost, Err(BackendError::Conflict(_))),
            "{kind}: {lost:?}"
        );
        let unknown = ApprovalRecord {
            approval_id: "nope".into(),
            ..decide(ApprovalStatus::Denied, "bob")
        };
        let missing = b.resolve_approval(&unknown).await;
        assert!(matches!(missing, Err(BackendError::NotFound(_))), "{kind}");

        assert!(b.pending_approvals().await.unwrap().is_empty(), "{kind}");
        let stored = b.approval("ap1").await.unwrap().unwrap();
        assert_eq!(stored.status, ApprovalStatus::Approved, "{kind}");
        let audit = b.approval_history(10).await.unwrap();
        assert_eq!(audit.len(), 1, "{kind}");
        assert_eq!(audit[0].decided_by.as_deref(), Some("ann"), "{kind}");
    }
}

#[tokio::test]
async fn idempotency_keys_and_the_agent_registry() {
    for u in backends().await {
        let b = &u.backend;
        let kind = b.kind();
        assert_eq!(
            b.claim_idempotency("k", 5_000).await.unwrap(),
            None,
            "{kind}"
        );
        assert_eq!(
            b.claim_idempotency("k", 5_000).await.unwrap(),
            Some(Idempotency::Pending),
            "{kind}"
        );
        b.finish_idempotency("k", Some(&json!(42)), 5_000)
            .await
            .unwrap();
        assert_eq!(
            b.idempotency("k").await.unwrap(),
            Some(Idempotency::Done { result: json!(42) }),
            "{kind}"
        );
        // A failed call releases its key.
        b.claim_idempotency("f", 5_000).await.unwrap();
        b.finish_idempotency("f", None, 5_000).await.unwrap();
        assert_eq!(
            b.claim_idempotency("f", 5_000).await.unwrap(),
            None,
            "{kind}"
        );
        // Markers expire.
        b.claim_idempotency("short", 50).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(b.idempotency("short").await.unwrap(), None, "{kind}");

        let entry = AgentEntry {
            agent_id: "a1".into(),
            name: "a".into(),
            kind: "agent".into(),
            capabilities: vec!["x".into()],
            tools: vec![],
            models: vec![],
            methods: vec![],
            max_concurrency: 2,
            status: "idle".into(),
            online: true,
            conn_id: "c".into(),
            instance_id: "test-instance".into(),
            generation: 1,
            identity: "n".into(),
            load: 0,
            registered_at: 1,
            updated_at: 1,
            defined: None,
        };
        b.put_agent(&entry).await.unwrap();
        b.put_agent(&AgentEntry {
            load: 1,
            ..entry.clone()
        })
        .await
        .unwrap();
        let all = b.agents().await.unwrap();
        assert_eq!(all.len(), 1, "{kind}: replaced, not added");
        assert_eq!(all[0].load, 1, "{kind}");
        b.remove_agent("a1").await.unwrap();
        assert!(b.agents().await.unwrap().is_empty(), "{kind}");
    }
}

fn cron_job(id: &str) -> CronJob {
    CronJob {
        id: id.into(),
        schedule: "@every 1s".into(),
        timezone: None,
        target: CronTarget::Channel {
            channel: "public:ticks".into(),
            event: "tick".into(),
            data: json!({}),
        },
        enabled: true,
        created_by: CronCreator {
            sub: "admin".into(),
            role: "operator".into(),
            scopes: vec!["operator.admin".into()],
            channels: vec![],
        },
        created_at: 1,
        updated_at: 1,
    }
}

fn cron_run(tick_at: u64) -> CronRun {
    CronRun {
        tick_at,
        fired_at: tick_at + 3,
        instance: "a".into(),
        kind: RunKind::Scheduled,
        outcome: RunOutcome::Ok,
        result: Some(json!({"delivered": 1})),
        error: None,
        missed: None,
        last_tick_at: None,
        recovered_from: None,
    }
}

#[tokio::test]
async fn cron_jobs_are_unique_capped_and_versioned() {
    for u in backends().await {
        let b = &u.backend;
        let kind = b.kind();
        let v0 = b.cron_version().await.unwrap();
        b.create_cron_job(&cron_job("a"), Some(1000), 2)
            .await
            .unwrap();
        let again = b.create_cron_job(&cron_job("a"), Some(1000), 2).await;
        assert!(matches!(again, Err(BackendError::Conflict(_))), "{kind}");
        b.create_cron_job(&cron_job("b"), None, 2).await.unwrap();
        let full = b.create_cron_job(&cron_job("c"), Some(1000), 2).await;
        assert!(matches!(full, Err(BackendError::Limit(_, 2))), "{kind}");
        assert!(b.cron_version().await.unwrap() >= v0 + 2, "{kind}");
        let ids: Vec<String> = b
            .cron_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(ids, ["a", "b"], "{kind}");
        // Only enabled jobs have a due tick.
        assert_eq!(b.cron_due().await.unwrap(), [("a".into(), 1000)], "{kind}");
        assert_eq!(
            b.cron_job("a").await.unwrap(),
            Some(cron_job("a")),
            "{kind}"
        );
        assert_eq!(b.cron_job("zz").await.unwrap(), None, "{kind}");

        let mut changed = cron_job("b");
        changed.schedule = "@every 2s".into();
        let v1 = b.cron_version().await.unwrap();
        b.update_cron_job(&changed, Some(4000)).await.unwrap();
        assert!(b.cron_version().await.unwrap() > v1, "{kind}");
        assert_eq!(b.cron_job("b").await.unwrap(), Some(changed), "{kind}");
        let missing = b.update_cron_job(&cron_job("zz"), Some(1)).await;
        assert!(matches!(missing, Err(BackendError::NotFound(_))), "{kind}");
        // Disabling drops the due tick.
        b.update_cron_job(&cron_job("b"), None).await.unwrap();
        assert_eq!(b.cron_due().await.unwrap().len(), 1, "{kind}");

        assert!(b.remove_cron_job("a").await.unwrap(), "{kind}");
        assert!(!b.remove_cron_job("a").await.unwrap(), "{kind}");
        assert!(b.cron_due().await.unwrap().is_empty(), "{kind}");
        // Room again under the cap.
        b.create_cron_job(&cron_job("c"), Some(1000), 2)
            .await
            .unwrap();
    }
}

fn pending(tick_at: u64) -> CronRun {
    CronRun {
        outcome: RunOutcome::Pending,
        result: None,
        ..cron_run(tick_at)
    }
}

#[tokio::test]
async fn a_cron_tick_is_claimed_once() {
    for u in backends().await {
        let b = u.backend.clone();
        let kind = b.kind();
        b.create_cron_job(&cron_job("j"), Some(5000), 10)
            .await
            .unwrap();
        // Twenty claimants race for tick 5000: one wins.
        let claims: Vec<_> = (0..20)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.claim_cron_tick("j", 5000, 6000, &[pending(5000)], None)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for claim in claims {
            won += usize::from(claim.await.unwrap());
        }
        assert_eq!(won, 1, "{kind}");
        // The winner's pending record alone, replaced by its outcome.
        assert_eq!(
            b.cron_runs("j", 10).await.unwrap(),
            [pending(5000)],
            "{kind}"
        );
        b.record_cron_run("j", &cron_run(5000)).await.unwrap();
        assert_eq!(
            b.cron_runs("j", 10).await.unwrap(),
            [cron_run(5000)],
            "{kind}"
        );
        assert_eq!(b.cron_due().await.unwrap(), [("j".into(), 6000)], "{kind}");
        // A stale tick, a job gone or disabled: nothing to claim.
        assert!(
            !b.claim_cron_tick("j", 5000, 7000, &[], None).await.unwrap(),
            "{kind}"
        );
        assert!(
            !b.claim_cron_tick("zz", 0, 1, &[], None).await.unwrap(),
            "{kind}"
        );
        b.update_cron_job(&cron_job("j"), Some(9000)).await.unwrap();
        assert!(
            !b.claim_cron_tick("j", 6000, 7000, &[], None).await.unwrap(),
            "{kind}"
        );
        assert!(
            b.claim_cron_tick("j", 9000, 10_000, &[], None)
                .await
                .unwrap(),
            "{kind}"
        );
        b.update_cron_job(&cron_job("j"), None).await.unwrap();
        assert!(
            !b.claim_cron_tick("j", 10_000, 11_000, &[], None)
                .await
                .unwrap(),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn cron_runs_are_kept_newest_first_and_capped() {
    for u in backends().await {
        let b = &u.backend;
        let kind = b.kind();
        b.create_cron_job(&cron_job("r"), Some(1), 10)
            .await
            .unwrap();
        for tick in 0..(RUNS_MAX as u64 + 5) {
            b.record_cron_run("r", &cron_run(tick)).await.unwrap();
        }
        let runs = b.cron_runs("r", 1000).await.unwrap();
        assert_eq!(runs.len(), RUNS_MAX, "{kind}");
        assert_eq!(runs[0], cron_run(RUNS_MAX as u64 + 4), "{kind}");
        assert_eq!(runs[RUNS_MAX - 1].tick_at, 5, "{kind}");
        assert_eq!(b.cron_runs("r", 3).await.unwrap().len(), 3, "{kind}");
        assert!(b.cron_runs("r", 0).await.unwrap().is_empty(), "{kind}");
        // A claim adds what it missed and what it fires, in that order;
        // the outcome takes the pending record's place.
        let missed = CronRun {
            outcome: RunOutcome::Missed,
            missed: Some(3),
            last_tick_at: Some(900),
            result: None,
            ..cron_run(700)
        };
        assert!(
            b.claim_cron_tick("r", 1, 2000, &[missed.clone(), pending(1000)], None)
                .await
                .unwrap()
        );
        let newest = b.cron_runs("r", 3).await.unwrap();
        assert_eq!(newest[..2], [pending(1000), missed.clone()], "{kind}");
        b.record_cron_run("r", &cron_run(1000)).await.unwrap();
        let newest = b.cron_runs("r", 3).await.unwrap();
        assert_eq!(newest[..2], [cron_run(1000), missed], "{kind}");
        assert_eq!(
            b.cron_runs("r", 1000).await.unwrap().len(),
            RUNS_MAX,
            "{kind}"
        );
        // A job's history goes with it, and a run of a job gone is dropped.
        b.remove_cron_job("r").await.unwrap();
        assert!(b.cron_runs("r", 10).await.unwrap().is_empty(), "{kind}");
        b.record_cron_run("r", &cron_run(1)).await.unwrap();
        assert!(b.cron_runs("r", 10).await.unwrap().is_empty(), "{kind}");
    }
}

fn claim(job: &str, tick_at: u64, instance: &str) -> CronClaim {
    CronClaim {
        job: job.into(),
        tick_at,
        instance: instance.into(),
        generation: 7,
        claimed_at: 100,
    }
}

#[tokio::test]
async fn a_claimed_tick_is_held_until_recorded_and_taken_over_once() {
    for u in backends().await {
        let b = u.backend.clone();
        let kind = b.kind();
        b.create_cron_job(&cron_job("k"), Some(1000), 10)
            .await
            .unwrap();
        b.create_cron_job(&cron_job("other"), Some(1000), 10)
            .await
            .unwrap();
        let dead = claim("k", 1000, "dead");
        assert!(
            b.claim_cron_tick("k", 1000, 2000, &[pending(1000)], Some(&dead))
                .await
                .unwrap(),
            "{kind}"
        );
        // A lost claim race leaves no claim behind.
        assert!(
            !b.claim_cron_tick("k", 1000, 2000, &[], Some(&claim("k", 1000, "late")))
                .await
                .unwrap(),
            "{kind}"
        );
        assert!(
            b.claim_cron_tick("other", 1000, 2000, &[], Some(&claim("other", 1000, "x")))
                .await
                .unwrap(),
            "{kind}"
        );
        assert_eq!(
            b.cron_claims().await.unwrap(),
            [claim("k", 1000, "dead"), claim("other", 1000, "x")],
            "{kind}"
        );
        // Ten instances race to take the dead instance's claim: one does.
        let takers: Vec<_> = (0..10)
            .map(|i| {
                let (b, dead) = (b.clone(), dead.clone());
                tokio::spawn(async move {
                    let mine = claim("k", 1000, &format!("taker-{i}"));
                    b.take_cron_claim(&dead, &mine).await.unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for taker in takers {
            won += usize::from(taker.await.unwrap());
        }
        assert_eq!(won, 1, "{kind}");
        let held = b.cron_claims().await.unwrap();
        assert!(held[0].instance.starts_with("taker-"), "{kind}: {held:?}");
        // Taking a claim that moved on, or that is gone, fails.
        assert!(
            !b.take_cron_claim(&dead, &claim("k", 1000, "again"))
                .await
                .unwrap(),
            "{kind}"
        );
        // Recording the scheduled outcome drops the claim and replaces the
        // pending record; a manual run at the same instant does neither.
        let manual = CronRun {
            kind: RunKind::Manual,
            ..cron_run(1000)
        };
        b.record_cron_run("k", &manual).await.unwrap();
        assert_eq!(b.cron_claims().await.unwrap().len(), 2, "{kind}");
        let recovered = CronRun {
            recovered_from: Some("dead".into()),
            ..cron_run(1000)
        };
        b.record_cron_run("k", &recovered).await.unwrap();
        assert_eq!(
            b.cron_claims().await.unwrap(),
            [claim("other", 1000, "x")],
            "{kind}"
        );
        let runs = b.cron_runs("k", 10).await.unwrap();
        assert_eq!(runs, [manual, recovered], "{kind}");
        assert!(
            !b.take_cron_claim(&held[0], &claim("k", 1000, "late"))
                .await
                .unwrap(),
            "{kind}"
        );
        // Removing a job drops its claims.
        b.remove_cron_job("other").await.unwrap();
        assert!(b.cron_claims().await.unwrap().is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn decisions_wait_for_an_absent_requester_and_reach_one_connection() {
    for u in backends().await {
        let b = u.backend.clone();
        let kind = b.kind();
        assert!(
            b.take_approval_notices("agent-1").await.unwrap().is_empty(),
            "{kind}"
        );
        for id in ["a1", "a2"] {
            b.defer_approval_notice("agent-1", id, 60_000)
                .await
                .unwrap();
        }
        b.defer_approval_notice("agent-2", "b1", 60_000)
            .await
            .unwrap();
        // Several connections of the requester come back at once: the
        // notices go to one of them, oldest first.
        let takers: Vec<_> = (0..5)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.take_approval_notices("agent-1").await.unwrap() })
            })
            .collect();
        let mut taken = Vec::new();
        for taker in takers {
            taken.extend(taker.await.unwrap());
        }
        assert_eq!(taken, ["a1", "a2"], "{kind}");
        assert_eq!(
            b.take_approval_notices("agent-2").await.unwrap(),
            ["b1"],
            "{kind}"
        );
        // Bounded per requester; expired ones are not delivered.
        for n in 0..(NOTICES_MAX + 5) {
            b.defer_approval_notice("busy", &format!("n{n}"), 60_000)
                .await
                .unwrap();
        }
        let kept = b.take_approval_notices("busy").await.unwrap();
        assert_eq!(kept.len(), NOTICES_MAX, "{kind}");
        assert_eq!(kept[0], "n5", "{kind}: the oldest go first");
        b.defer_approval_notice("late", "x", 30).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            b.take_approval_notices("late").await.unwrap().is_empty(),
            "{kind}"
        );
    }
}
