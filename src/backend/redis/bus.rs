//! Delivery on Redis: attaching an instance, its interest counts, and
//! publishing to channels, connections and instances. The receiving side
//! (the subscriber connection, its message loop and canary) and the
//! payload formats are in [`pubsub`](super::pubsub).
//!
//! Interest: each instance keeps its local count per channel in the
//! channel's `interest` hash (instance → count) and subscribes the
//! channel's topic on the 0 ↔ 1 transitions; a publisher reads the hash
//! to learn how many sockets subscribe cluster-wide.

use super::pubsub::{self, confirm, encode_inbox};
use super::{Attached, RedisBackend, reaper, unavailable};
use crate::backend::{BackendError, BackendResult, Bus, Envelope, Inbox};
use crate::protocol::Frame;
use async_trait::async_trait;
use fred::prelude::{HashesInterface, KeysInterface, PubsubInterface, SetsInterface};
use std::sync::Arc;

#[async_trait]
impl Bus for RedisBackend {
    async fn attach(
        &self,
        instance_id: &str,
        generation: u64,
        inbox: Arc<dyn Inbox>,
    ) -> BackendResult<()> {
        let attached = Attached {
            id: instance_id.to_owned(),
            generation,
            inbox,
        };
        if self.shared().attached.set(attached).is_err() {
            return Err(BackendError::Internal(
                "redis backend attached twice".into(),
            ));
        }
        self.watch_connection();
        self.forget_previous_run().await?;
        pubsub::start(self).await?;
        reaper::start(self);
        Ok(())
    }

    /// Record this instance's local count for a channel and (un)subscribe
    /// the channel topic on the 0 ↔ 1 transitions.
    async fn set_interest(&self, channel: &str, count: usize) -> BackendResult<()> {
        let client = self.ready()?;
        let shared = self.shared();
        let instance = &self.attached()?.id;
        let topic = shared.keys.channel_topic(channel);
        let was = {
            let mut interest = shared.interest.lock().unwrap_or_else(|p| p.into_inner());
            if count == 0 {
                shared.marks.forget(channel);
                interest.remove(channel)
            } else {
                interest.insert(channel.to_owned(), count)
            }
        };
        if count == 0 {
            let (a, b) = tokio::join!(
                client.hdel::<(), _, _>(shared.keys.interest(channel), instance.as_str()),
                client.srem::<(), _, _>(shared.keys.instance_channels(instance), channel),
            );
            a.and(b).map_err(unavailable)?;
            if was.is_some() {
                if shared.clustered {
                    shared.subscriber.sunsubscribe(topic).await
                } else {
                    shared.subscriber.unsubscribe(topic).await
                }
                .map_err(unavailable)?;
                confirm(self).await?;
            }
            return Ok(());
        }
        if was.is_none() {
            if shared.clustered {
                shared.subscriber.ssubscribe(topic).await
            } else {
                shared.subscriber.subscribe(topic).await
            }
            .map_err(unavailable)?;
            confirm(self).await?;
        }
        let (a, b) = tokio::join!(
            client.hset::<(), _, _>(
                shared.keys.interest(channel),
                (instance.as_str(), count as i64)
            ),
            client.sadd::<(), _, _>(shared.keys.instance_channels(instance), channel),
        );
        a.and(b).map_err(unavailable)
    }

    async fn publish(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<usize> {
        fan_out(self, channel, &frame, last, true).await
    }

    async fn broadcast(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<()> {
        fan_out(self, channel, &frame, last, false)
            .await
            .map(|_| ())
    }

    /// Look the connection's owner up and publish to its inbox, in one
    /// round trip (Lua). A connection held here is served without Redis.
    async fn send_to_conn(&self, envelope: Envelope) -> BackendResult<bool> {
        let shared = self.shared();
        let attached = self.attached()?;
        let Some((conn_id, payload)) = encode_inbox(&envelope) else {
            return Err(BackendError::Internal(
                "channel envelope sent to a conn".into(),
            ));
        };
        let conn_id = conn_id.to_owned();
        if attached.inbox.holds(&conn_id) && attached.inbox.deliver(envelope) > 0 {
            return Ok(true);
        }
        let client = self.ready()?;
        let found: i64 = shared
            .scripts
            .route
            .evalsha_with_reload(
                client,
                vec![shared.keys.owners()],
                vec![conn_id, shared.keys.inbox_prefix(), payload],
            )
            .await
            .map_err(unavailable)?;
        Ok(found == 1)
    }

    /// Publish a relay envelope to one instance's inbox (this instance: no
    /// Redis). `Ok(false)` when no instance listens there.
    async fn send_to_instance(&self, instance_id: &str, envelope: Envelope) -> BackendResult<bool> {
        let attached = self.attached()?;
        if instance_id == attached.id {
            return Ok(attached.inbox.deliver(envelope) > 0);
        }
        let Some((_, payload)) = encode_inbox(&envelope) else {
            return Err(BackendError::Internal(
                "channel envelope sent to an instance".into(),
            ));
        };
        let client = self.ready()?;
        let receivers: i64 = client
            .publish(self.shared().keys.inbox(instance_id), payload)
            .await
            .map_err(unavailable)?;
        Ok(receivers > 0)
    }
}

/// Publish a frame on a channel; with `count`, returns the sockets
/// subscribed to it (otherwise 0). `PUBLISH` (`SPUBLISH` on Redis Cluster,
/// where the topic lives on its own shard) and `HVALS` of the interest
/// counts go out together, so it is one round trip; as two plain commands
/// they cost Redis a fraction of one Lua call, which matters on the
/// busiest path there is. Without `count` the `HVALS` is not sent at all:
/// a notification's publisher gets no reply to put the count in.
async fn fan_out(
    backend: &RedisBackend,
    channel: &str,
    frame: &Frame,
    last: bool,
    count: bool,
) -> BackendResult<usize> {
    let Ok(client) = backend.ready() else {
        return publish_locally(backend, channel, frame, last);
    };
    let shared = backend.shared();
    let payload = format!("{}{}", if last { '1' } else { '0' }, frame.as_str());
    let topic = shared.keys.channel_topic(channel);
    let sent = async {
        if shared.clustered {
            client.spublish::<i64, _, _>(topic, payload).await
        } else {
            client.publish::<i64, _, _>(topic, payload).await
        }
    };
    if !count {
        sent.await.map_err(unavailable)?;
        return Ok(0);
    }
    let counts = client.hvals::<Vec<i64>, _>(shared.keys.interest(channel));
    let (sent, counts) = tokio::join!(sent, counts);
    sent.map_err(unavailable)?;
    let total: i64 = counts.map_err(unavailable)?.iter().sum();
    Ok(total.max(0) as usize)
}

/// Redis is away: local subscribers still get the frame (local fan-out
/// keeps working); other instances cannot be reached until it is back.
fn publish_locally(
    backend: &RedisBackend,
    channel: &str,
    frame: &Frame,
    last: bool,
) -> BackendResult<usize> {
    let attached = backend.attached()?;
    metrics::counter!("switchyard_publish_local_only_total").increment(1);
    let local = backend
        .shared()
        .interest
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(channel)
        .copied()
        .unwrap_or(0);
    attached.inbox.deliver(Envelope::Channel {
        channel: channel.to_owned(),
        frame: frame.clone(),
        last,
    });
    Ok(local)
}

impl RedisBackend {
    /// A previous run under this instance id (crashed, restarted at once)
    /// may have left interest counts behind that the reaper never sees (the
    /// id is alive again). A fresh run has no local subscriber yet, so drop
    /// them all before serving.
    async fn forget_previous_run(&self) -> BackendResult<()> {
        let id = self.attached()?.id.clone();
        self.drop_interest_of(&id).await
    }

    /// Remove every interest count `instance` reported.
    pub(super) async fn drop_interest_of(&self, instance: &str) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let channels: Vec<String> = client
            .smembers(keys.instance_channels(instance))
            .await
            .map_err(unavailable)?;
        for channel in channels {
            client
                .hdel::<(), _, _>(keys.interest(&channel), instance)
                .await
                .map_err(unavailable)?;
        }
        client
            .del::<(), _>(keys.instance_channels(instance))
            .await
            .map_err(unavailable)
    }
}
