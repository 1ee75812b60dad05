//! Delivery in memory: a direct call into the one attached inbox. Interest
//! only decides whether a channel's frame is handed over at all and what
//! `publish` reports.

use super::MemoryBackend;
use crate::backend::{BackendError, BackendResult, Bus, Envelope, Inbox};
use crate::protocol::Frame;
use async_trait::async_trait;
use std::sync::Arc;

#[async_trait]
impl Bus for MemoryBackend {
    async fn attach(
        &self,
        _instance_id: &str,
        _generation: u64,
        inbox: Arc<dyn Inbox>,
    ) -> BackendResult<()> {
        self.inbox
            .set(inbox)
            .map_err(|_| BackendError::Internal("memory backend attached twice".into()))
    }

    async fn set_interest(&self, channel: &str, local_subscribers: usize) -> BackendResult<()> {
        let mut state = self.lock();
        if local_subscribers == 0 {
            state.interest.remove(channel);
        } else {
            state.interest.insert(channel.to_owned(), local_subscribers);
        }
        Ok(())
    }

    async fn publish(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<usize> {
        let Some(count) = self.lock().interest.get(channel).copied() else {
            return Ok(0);
        };
        self.deliver(Envelope::Channel {
            channel: channel.to_owned(),
            frame,
            last,
        });
        Ok(count)
    }

    async fn send_to_conn(&self, envelope: Envelope) -> BackendResult<bool> {
        let conn_id = match &envelope {
            Envelope::Conn { conn_id, .. }
            | Envelope::Kick { conn_id, .. }
            | Envelope::Relay { conn_id, .. } => conn_id,
            Envelope::Channel { .. } => {
                return Err(BackendError::Internal(
                    "channel envelope sent to a conn".into(),
                ));
            }
        };
        if !self.lock().connections.contains_key(conn_id) {
            return Ok(false);
        }
        self.deliver(envelope);
        Ok(true)
    }

    async fn send_to_instance(&self, instance_id: &str, envelope: Envelope) -> BackendResult<bool> {
        if !self.lock().instances.contains_key(instance_id) {
            return Ok(false);
        }
        Ok(self.deliver(envelope) > 0)
    }
}
