//! The backend as a whole: which one it is, whether shared state is
//! reachable, and whether that state may have been lost.
//!
//! `/ready`, `system.status` and the metrics read availability; on every
//! [`Health::resync_events`] change the instance re-asserts what its
//! sockets prove, and it compares [`Health::epoch`] to tell whether the
//! sessions its sockets own must be written back.

use super::BackendResult;
use async_trait::async_trait;

/// Kind, reachability and the lifetime of shared state.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    /// `memory` or `redis`.
    fn kind(&self) -> &'static str;

    /// Whether shared state is reachable right now (feeds `/ready`).
    fn is_available(&self) -> bool;
    /// The last measured pub/sub delivery lag (ms); `None` without one.
    fn pubsub_lag_ms(&self) -> Option<u64> {
        None
    }

    /// Changes each time shared state may have been lost (a reconnect to a
    /// Redis that may have restarted empty): the instance then re-asserts
    /// what its local sockets prove.
    fn resync_events(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }

    /// A token of the shared state's lifetime: it changes when the backend
    /// has lost everything (Redis restarted without persistence, or was
    /// flushed) and stays the same across a mere reconnect. An instance
    /// compares it on re-assert to tell whether records only its sockets
    /// still know (the sessions they own) must be written back. A backend
    /// that cannot lose its state on its own keeps this constant.
    async fn epoch(&self) -> BackendResult<String> {
        Ok(String::from("constant"))
    }
}
