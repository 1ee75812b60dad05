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
        node_ttl: Duration::from_secs(10),
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

        let joined = b.join_session("s1", "c2", "user-c2").await.unwrap();
        assert_eq!(joined.members, ["c1", "c2"]);
        b.join_session("s1", "c2", "user-c2").await.unwrap();
        let full = b.join_session("s1", "c3", "user-c3").await;
        assert!(matches!(full, Err(BackendError::Limit(_, 2))));
        let missing = b.join_session("nope", "c3", "x").await;
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
        b.join_session("s1", "c2", "user-c2").await.unwrap();
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

#[tokio::test]
async fn rate_windows_are_exact() {
    for Under { backend: b, .. } in backends().await {
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
        assert_eq!(b.channel_members("room").await.unwrap(), [member]);
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
        let frame: switchyard::protocol::Frame = "{}".into();
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
        };
        b.register_instance(info.clone()).await.unwrap();
        b.register_instance(InstanceInfo {
            connections: 3,
            ..info
        })
        .await
        .unwrap();
        let all = b.instances().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].connections, 3);
        b.deregister_instance("i1").await.unwrap();
        assert!(b.instances().await.unwrap().is_empty());
    }
}
