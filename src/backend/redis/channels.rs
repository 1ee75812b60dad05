//! Channel subscribers on Redis: per channel a hash conn id → presence
//! member JSON (or "" for a subscriber without presence), an index of
//! channels with their counts, and per connection the set of channels it
//! joined (so the reaper can take a dead connection out of them). Joining
//! and leaving are Lua scripts that keep the three in step.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{BackendResult, ChannelInfo, ChannelMember, ChannelStore};
use async_trait::async_trait;
use fred::prelude::{HashesInterface, SetsInterface};
use std::collections::HashMap;

#[async_trait]
impl ChannelStore for RedisBackend {
    async fn channel_join(
        &self,
        channel: &str,
        conn_id: &str,
        member: Option<ChannelMember>,
    ) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let member = member.as_ref().map(json).transpose()?.unwrap_or_default();
        self.0
            .scripts
            .join
            .evalsha_with_reload::<i64, _, _>(
                client,
                vec![
                    keys.subscribers(channel),
                    keys.channel_index(),
                    keys.conn_channels(conn_id),
                ],
                vec![conn_id.to_owned(), member, channel.to_owned()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn channel_leave(&self, channel: &str, conn_id: &str) -> BackendResult<()> {
        self.leave_channel(channel, conn_id).await.map(|_| ())
    }

    async fn channel_members(
        &self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<ChannelMember>, Option<String>)> {
        let key = self.0.keys.subscribers(channel);
        let (values, next) = self.hscan(key, cursor, limit).await?;
        let mut members: Vec<ChannelMember> = values
            .iter()
            .filter(|v| !v.is_empty())
            .filter_map(|v| parse(v).ok())
            .collect();
        members.sort_by_key(|m| m.joined_at);
        Ok((members, next))
    }

    async fn channels(&self) -> BackendResult<Vec<ChannelInfo>> {
        let client = self.ready()?;
        let all: HashMap<String, i64> = client
            .hgetall(self.0.keys.channel_index())
            .await
            .map_err(unavailable)?;
        let mut list: Vec<ChannelInfo> = all
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(channel, n)| ChannelInfo {
                channel,
                subscribers: n as usize,
            })
            .collect();
        list.sort_by(|a, b| a.channel.cmp(&b.channel));
        Ok(list)
    }
}

impl RedisBackend {
    /// Leave a channel; returns the presence member that was removed.
    pub(super) async fn leave_channel(
        &self,
        channel: &str,
        conn_id: &str,
    ) -> BackendResult<Option<ChannelMember>> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let removed: String = self
            .0
            .scripts
            .leave
            .evalsha_with_reload(
                client,
                vec![
                    keys.subscribers(channel),
                    keys.channel_index(),
                    keys.conn_channels(conn_id),
                ],
                vec![conn_id.to_owned(), channel.to_owned()],
            )
            .await
            .map_err(unavailable)?;
        Ok(if removed.is_empty() {
            None
        } else {
            parse(&removed).ok()
        })
    }

    /// Channels a connection joined (for reaping).
    pub(super) async fn conn_channels(&self, conn_id: &str) -> BackendResult<Vec<String>> {
        let client = self.ready()?;
        client
            .smembers(self.0.keys.conn_channels(conn_id))
            .await
            .map_err(unavailable)
    }
}
