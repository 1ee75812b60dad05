//! Reserved channel names: the ones the server itself publishes on.
//!
//! Client channel names may not start with `$`, so internal channels such
//! as a session's cannot be subscribed to directly; the others are
//! ordinary names whose access the channel rules decide.

/// Every authenticated connection's broadcast channel.
pub const GLOBAL: &str = "global";

/// Where approval requests and decisions go (approvers join it implicitly).
pub const APPROVALS: &str = "approval";

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
