//! `switchyard bench`: a load generator against running instances, and a
//! bare reference server to measure it against.
//!
//! Five scenarios, each printing one JSON line of results:
//! - [`latency`]: publishers on the first URL, one subscriber on the last;
//!   every message carries its send time, the subscriber records
//!   publish → delivery latency at a fixed total rate.
//! - [`fanout`]: N subscribers spread over all URLs, one publisher; counts
//!   deliveries per second and lost messages.
//! - [`idle`]: opens N authenticated connections that stay idle and reports
//!   the server's resident memory per connection (`--pid`); [`storm`] opens
//!   them all at once, holds them, closes them and follows the memory back
//!   down.
//! - [`ping`]: N connections calling `ping` in a loop; throughput and latency.
//! - [`invoke`]: N connections on the first URL calling `node.invoke` on a
//!   node connected to the last URL; routed-call throughput and latency.
//!
//! [`reference`](mod@reference) is the ceiling the scenarios are compared against in the
//! same run: a bare WebSocket JSON-RPC server answering the wire of `ping`,
//! `subscribe`, `unsubscribe` and `publish` as Switchyard does, with none
//! of its features.
//!
//! `common` holds what the scenarios share: socket settings, connecting
//! with a bearer token, one call, percentiles, reading a server's memory.
//! The bench and the servers share the machine's clock, so one process's
//! `Instant` timestamps are valid for every measurement.

pub(crate) mod common;
mod fanout;
mod idle;
mod invoke;
mod latency;
mod ping;
pub mod reference;

pub use fanout::fanout;
pub use idle::{Storm, idle, storm};
pub use invoke::invoke;
pub use latency::latency;
pub use ping::ping;

/// Errors that stop a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("connect {0}: {1}")]
    Connect(String, String),
    #[error("{0}")]
    Protocol(String),
}
