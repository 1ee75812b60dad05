//! Switchyard: a real-time control plane for AI agents, tools and the people
//! who operate them.
//!
//! One WebSocket + HTTP gateway speaking JSON-RPC 2.0. Any number of
//! identical instances can serve at once; each keeps only its own sockets in
//! memory and everything shared lives behind the [`backend::Backend`] seam
//! (in-process memory in standalone mode, Redis in cluster mode).
//!
//! Follow a frame through the crate in this order:
//!
//! - [`protocol`] — wire types only: JSON-RPC frames, error codes.
//! - [`conn`] — one connection: reader loop, writer task, heartbeat,
//!   bounded outbound queue, deadlines.
//! - [`rpc`] — the method table and one module per namespace
//!   (system, channels, sessions, nodes); scope checks and rate limits.
//! - [`auth`] — credentials, JWT, static tokens, scopes, origin and proxy
//!   guards.
//! - [`hub`] — this instance's sockets: registry, local channel index,
//!   fan-out; the instance's inbox for backend deliveries.
//! - [`backend`] — shared state and cross-instance delivery.
//! - [`agents`], [`relay`] — agents registered here, routing policies, and
//!   calls relayed to a node on whichever instance holds it.
//! - [`server`] — axum router, upgrade guards, HTTP API, background tasks,
//!   drain.
//! - [`config`], [`ratelimit`], [`telemetry`], [`otel`], [`client`],
//!   [`bench`] — settings, sliding windows, logs and metrics, OpenTelemetry
//!   traces, a small async client and the load generator.

pub mod agents;
pub mod auth;
pub mod backend;
pub mod bench;
pub mod client;
pub mod config;
pub mod conn;
pub mod hub;
pub mod otel;
pub mod protocol;
pub mod ratelimit;
pub mod relay;
pub mod rpc;
pub mod server;
pub mod telemetry;
