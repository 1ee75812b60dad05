//! Who subscribes to which channel, cluster-wide: a count per channel (the
//! HTTP channel list, `system.status`) and, for channels with presence,
//! the members (`presence.get`, `presence.join` / `presence.leave`).
//!
//! This is bookkeeping only; whether envelopes reach an instance is its
//! interest, reported through [`Bus::set_interest`](super::Bus::set_interest).

use super::BackendResult;
use crate::protocol::Frame;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A member of a channel's presence set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelMember {
    pub conn_id: String,
    pub identity: String,
    pub client: Value,
    pub joined_at: u64,
}

impl ChannelMember {
    /// The `presence.join` / `presence.leave` push announcing this member.
    pub fn event_frame(&self, event: &str, channel: &str) -> Frame {
        crate::protocol::frame::notification(
            event,
            &serde_json::json!({
                "channel": channel,
                "connId": self.conn_id,
                "identity": self.identity,
                "client": self.client,
                "timestamp": crate::protocol::now_ms(),
            }),
        )
    }
}

/// A channel with subscribers somewhere in the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelInfo {
    pub channel: String,
    pub subscribers: usize,
}

/// Channel subscribers and presence members.
#[async_trait]
pub trait ChannelStore: Send + Sync + 'static {
    /// Count a subscriber (and its presence when `member` is given).
    async fn channel_join(
        &self,
        channel: &str,
        conn_id: &str,
        member: Option<ChannelMember>,
    ) -> BackendResult<()>;
    async fn channel_leave(&self, channel: &str, conn_id: &str) -> BackendResult<()>;
    /// One page of a channel's presence members, paged like
    /// [`Presence::connections_page`](super::Presence::connections_page).
    async fn channel_members(
        &self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<ChannelMember>, Option<String>)>;
    /// Channels with at least one subscriber, with counts.
    async fn channels(&self) -> BackendResult<Vec<ChannelInfo>>;
}
