//! Reserved channel names: the ones the server itself publishes on.
//!
//! Client channel names may not start with `$`, so internal channels such
//! as a session's cannot be subscribed to directly; the others are
//! ordinary names whose access the channel rules decide.

/// Every authenticated connection's broadcast channel.
pub const GLOBAL: &str = "global";

/// Where approval requests and decisions go (approvers join it implicitly).
pub const APPROVALS: &str = "approval";

/// Where pairing requests and decisions go (operators with
/// `operator.pairing` join it implicitly). Internal: no client may
/// subscribe to it or publish on it.
pub const PAIRING: &str = "$pairing";

/// Prefix of the internal channel every connection of a device joins: its
/// revocation is published there as the channel's last frame, and the
/// instances holding the device's sockets close them (4003).
pub const DEVICE_CHANNEL_PREFIX: &str = "$device:";

/// The internal channel of device `id`.
pub fn device_channel(id: &str) -> String {
    format!("{DEVICE_CHANNEL_PREFIX}{id}")
}

/// Prefix of a user's own channel (`user:<sub>`).
pub const USER_PREFIX: &str = "user:";

/// Prefix of a connection's own channel (`conn:<id>`), routed rather than
/// subscribed.
pub const CONN_PREFIX: &str = "conn:";

/// Prefix of the internal channel carrying a session's events to its
/// members.
pub const SESSION_CHANNEL_PREFIX: &str = "$session:";

/// The internal channel of session `id`.
pub fn session_channel(id: &str) -> String {
    format!("{SESSION_CHANNEL_PREFIX}{id}")
}

/// The channel of user `sub`.
pub fn user_channel(sub: &str) -> String {
    format!("{USER_PREFIX}{sub}")
}
