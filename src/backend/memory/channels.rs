//! Channel subscribers in memory: channel → conn id → presence member
//! (`None`: counted, no presence); a channel's map goes when its last
//! subscriber leaves.

use super::{MemoryBackend, page_after};
use crate::backend::{BackendResult, ChannelInfo, ChannelMember, ChannelStore};
use async_trait::async_trait;

#[async_trait]
impl ChannelStore for MemoryBackend {
    async fn channel_join(
        &self,
        channel: &str,
        conn_id: &str,
        member: Option<ChannelMember>,
    ) -> BackendResult<()> {
        self.lock()
            .subscribers
            .entry(channel.to_owned())
            .or_default()
            .insert(conn_id.to_owned(), member);
        Ok(())
    }

    async fn channel_leave(&self, channel: &str, conn_id: &str) -> BackendResult<()> {
        let mut state = self.lock();
        if let Some(subs) = state.subscribers.get_mut(channel) {
            subs.remove(conn_id);
            if subs.is_empty() {
                state.subscribers.remove(channel);
            }
        }
        Ok(())
    }

    async fn channel_members(
        &self,
        channel: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<ChannelMember>, Option<String>)> {
        let state = self.lock();
        let Some(subs) = state.subscribers.get(channel) else {
            return Ok((Vec::new(), None));
        };
        let (page, next) = page_after(subs, cursor, limit);
        Ok((page.into_iter().flatten().collect(), next))
    }

    async fn channels(&self) -> BackendResult<Vec<ChannelInfo>> {
        let state = self.lock();
        Ok(state
            .subscribers
            .iter()
            .map(|(channel, subs)| ChannelInfo {
                channel: channel.clone(),
                subscribers: subs.len(),
            })
            .collect())
    }
}
