//! Wire types only: JSON-RPC frames, error codes, the events the server
//! pushes and the channel names it reserves. Nothing here does I/O.

pub mod error;
pub mod frame;
pub mod names;

pub use error::RpcError;
pub use frame::{Call, ClientReply, Frame, Incoming, Message};

/// Protocol version spoken by this server (`connect.minProtocol` ..
/// `maxProtocol` must include it).
pub const PROTOCOL_VERSION: u64 = 1;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
