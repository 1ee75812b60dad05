//! Cross-instance delivery: the backend carries [`Envelope`]s to the
//! [`Inbox`] of the instance(s) holding their target.
//!
//! - An instance calls [`Bus::attach`] once with its inbox; the backend
//!   then calls [`Inbox::deliver`] for every envelope addressed to that
//!   instance, in publish order per channel. `deliver` never blocks.
//! - **Interest**: an instance reports through [`Bus::set_interest`] how
//!   many local sockets subscribe to a channel; channel envelopes only
//!   reach instances with a count above zero. Gaining interest is in force
//!   when the call returns; losing it may let envelopes already in flight
//!   arrive shortly after (the hub drops them).
//! - Logged frames (numbered, kept for replay) are published through
//!   [`ChannelLog::log_publish`](super::ChannelLog::log_publish) instead,
//!   which delivers them the same way.

use super::BackendResult;
use crate::protocol::Frame;
use async_trait::async_trait;
use std::sync::Arc;

/// What an instance receives from the backend.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// Fan out to this instance's subscribers of `channel`. With `last`,
    /// the channel ends here: local subscriptions to it are dropped.
    Channel {
        channel: String,
        frame: Frame,
        last: bool,
    },
    /// One frame for one connection.
    Conn { conn_id: String, frame: Frame },
    /// Close one connection.
    Kick {
        conn_id: String,
        code: u16,
        reason: String,
    },
    /// A message of the call relay (`crate::relay`), opaque here. Sent
    /// with [`Bus::send_to_conn`] to the instance holding `conn_id`, or
    /// with [`Bus::send_to_instance`] (then `conn_id` is empty).
    Relay { conn_id: String, body: String },
}

/// The receiving end of an instance: the hub implements it.
pub trait Inbox: Send + Sync + 'static {
    /// Deliver locally; returns how many sockets it was queued to. Must not
    /// block.
    fn deliver(&self, envelope: Envelope) -> usize;

    /// Whether the connection `conn_id` is held here, so that
    /// [`Bus::send_to_conn`] can deliver without asking the backend. A
    /// relay message is only read once it is known to be for a local
    /// connection: reading a routed call just written, to learn that its
    /// node is elsewhere, was 4.7 % of a caller's instance.
    fn holds(&self, conn_id: &str) -> bool {
        let _ = conn_id;
        true
    }
}

/// Delivery to instances. See the module docs.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Start delivering envelopes for this instance (`instance_id`, started
    /// as `generation`) to `inbox`.
    async fn attach(
        &self,
        instance_id: &str,
        generation: u64,
        inbox: Arc<dyn Inbox>,
    ) -> BackendResult<()>;

    /// This instance now has `local_subscribers` sockets subscribed to
    /// `channel` (0: none left). The first one makes the instance receive
    /// the channel's envelopes, 0 stops it; the counts of all instances
    /// make up what [`Bus::publish`] reports.
    async fn set_interest(&self, channel: &str, local_subscribers: usize) -> BackendResult<()>;

    /// Deliver a frame to every subscriber of `channel` on every instance.
    /// Returns the number of sockets subscribed to it cluster-wide (the sum
    /// of the instances' interest counts).
    async fn publish(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<usize>;

    /// [`Bus::publish`] for a publisher that does not use the count
    /// (events, notifications): a backend may skip reading it.
    async fn broadcast(&self, channel: &str, frame: Frame, last: bool) -> BackendResult<()> {
        self.publish(channel, frame, last).await.map(|_| ())
    }

    /// Deliver a `Conn` or `Kick` envelope to the instance holding the
    /// connection. `Ok(false)` when no instance holds it.
    async fn send_to_conn(&self, envelope: Envelope) -> BackendResult<bool>;

    /// Deliver a `Relay` envelope to one instance's inbox. `Ok(false)`
    /// when that instance is not attached (standalone: not this one).
    async fn send_to_instance(&self, instance_id: &str, envelope: Envelope) -> BackendResult<bool>;
}
