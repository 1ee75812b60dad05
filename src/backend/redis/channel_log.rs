//! Channel logs on Redis (see `backend::channel_log`): a counter and a capped
//! list per channel, hash-tagged like the channel's topic, so numbering,
//! logging and publishing a frame is one script on one shard — and
//! receivers on every instance see offsets in order.

use super::{RedisBackend, unavailable};
use crate::backend::{BackendError, BackendResult, ChannelLog, EventPage, LoggedFrame};
use async_trait::async_trait;
use fred::prelude::HashesInterface;
use fred::types::Value as RedisValue;

/// Idle time after which a channel's log and offset expire (like a
/// session's chat history): a channel silent that long numbers from 1
/// again, which readers see as a page that does not continue.
const LOG_TTL_MS: u64 = 7 * 24 * 3_600_000;

#[async_trait]
impl ChannelLog for RedisBackend {
    async fn log_publish(
        &self,
        channel: &str,
        frame: &LoggedFrame,
        keep: usize,
    ) -> BackendResult<(u64, usize)> {
        let client = self.ready()?;
        let shared = self.shared();
        let keys = &shared.keys;
        let publish = if shared.clustered {
            "spublish"
        } else {
            "publish"
        };
        let logged = shared.scripts.log_publish.evalsha_with_reload::<i64, _, _>(
            client,
            vec![keys.log_offset(channel), keys.log(channel)],
            vec![
                frame.head.clone(),
                frame.tail.to_owned(),
                keep.max(1).to_string(),
                LOG_TTL_MS.to_string(),
                keys.channel_topic(channel),
                publish.to_owned(),
            ],
        );
        let counts = client.hvals::<Vec<i64>, _>(keys.interest(channel));
        let (offset, counts) = tokio::join!(logged, counts);
        let offset = offset.map_err(unavailable)?;
        let total: i64 = counts.map_err(unavailable)?.iter().sum();
        Ok((offset.max(0) as u64, total.max(0) as usize))
    }

    async fn channel_log(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> BackendResult<EventPage> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let reply: Vec<RedisValue> = self
            .shared()
            .scripts
            .log_read
            .evalsha_with_reload(
                client,
                vec![keys.log_offset(channel), keys.log(channel)],
                vec![after.to_string(), limit.to_string()],
            )
            .await
            .map_err(unavailable)?;
        let mut items = reply.into_iter();
        let number = |v: Option<RedisValue>| v.and_then(|v| v.as_i64()).unwrap_or(0);
        let latest = number(items.next()).max(0) as u64;
        let first = number(items.next()).max(1) as u64;
        let start = first.max(after.saturating_add(1));
        let mut events = Vec::new();
        for (value, offset) in items.zip(start..) {
            let Some(text) = value.as_str() else {
                return Err(BackendError::Internal("log entry is not text".into()));
            };
            events.push((offset, text.to_string().into()));
        }
        Ok(EventPage { events, latest })
    }

    async fn advance_log(&self, channel: &str, offset: u64) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        self.shared()
            .scripts
            .log_advance
            .evalsha_with_reload::<i64, _, _>(
                client,
                vec![keys.log_offset(channel), keys.log(channel)],
                vec![offset.to_string(), LOG_TTL_MS.to_string()],
            )
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
