//! Switchyard: a real-time control plane for AI agents, tools and the people
//! who operate them.
//!
//! One WebSocket + HTTP gateway speaking JSON-RPC 2.0. Any number of
//! identical instances can serve at once; each keeps only its own sockets in
//! memory and everything shared lives behind the [`backend::Backend`] seam
//! (in-process memory in standalone mode, Redis in cluster mode).
//!
//! The crate reads bottom-up; no module imports one above it:
//!
//! - [`protocol`] — wire types only: JSON-RPC frames, error codes, the
//!   channel names the server reserves.
//! - [`config`], [`ratelimit`], [`telemetry`], [`otel`] — settings, sliding
//!   windows, logs and metrics, OpenTelemetry traces.
//! - [`auth`] — identities and scopes, credentials, JWT, origin and proxy
//!   guards.
//! - [`backend`] — shared state and cross-instance delivery (memory or
//!   Redis).
//! - [`conn`] — one connection: reader loop, writer task, heartbeat,
//!   bounded outbound queue, deadlines; generic over a `ConnService`, it
//!   knows no method.
//! - [`hub`] — this instance's sockets: registry, local channel index,
//!   fan-out.
//! - [`agents`], [`relay`] — agents registered here, routing policies, run
//!   bookkeeping, and calls relayed to a node on whichever instance holds
//!   it.
//! - [`app`] — the infrastructure handles every handler shares.
//! - [`services`] — the domain rules (channels, sessions, agents, runs,
//!   approvals, connections), shared by every entry point.
//! - [`rpc`] — the method table: params → service → JSON.
//! - [`server`] — axum router, upgrade, the connection service, HTTP API,
//!   background tasks, drain.
//! - [`client`], [`bench`] — a small async client, and the load generator
//!   with the bare reference server it is compared against.

pub mod agents;
pub mod app;
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
pub mod refusals;
pub mod relay;
pub mod rpc;
pub mod server;
pub mod services;
pub mod telemetry;
