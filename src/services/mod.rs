//! The domain rules, one module per domain, used alike by the JSON-RPC
//! methods (`rpc`), the HTTP API (`server`) and the background tasks.
//!
//! A service takes the application's infrastructure ([`crate::app::App`])
//! and the caller (its connection or identity) and decides: who may do
//! what, what is written to the backend, who is told. It knows no wire
//! method and no route, so an HTTP route and the WebSocket method for the
//! same action share one authorization and one effect.
//!
//! Each domain keeps its own hooks beside its rules: what a closing
//! connection undoes (`on_disconnect` / `leave`), what it writes back after
//! the backend lost its state (`reassert`), what the janitor runs
//! (`close_expired`, `expire`).

pub mod agent_defs;
pub mod agents;
pub mod approvals;
pub mod channels;
pub mod connections;
pub mod credentials;
pub mod cron;
pub mod devices;
pub mod idempotent;
pub mod page;
pub mod reattach;
pub mod replay;
pub mod runs;
pub mod runtime_config;
pub mod sessions;
pub mod system;
pub mod write_back;
