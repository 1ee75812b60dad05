//! Devices and pairing: a device asks to pair, an operator decides (the
//! first decision wins cluster-wide), a paired device holds a token whose
//! SHA-256 is all that is stored, and every step joins an audit trail.
//!
//! The store knows no rule: `services::devices` reads a record, decides
//! the next one and writes it back with [`DeviceStore::write_device`], a
//! check-and-set on the record's revision. Two instances deciding at once
//! both read revision `n`; one write lands (`n + 1`), the other finds the
//! revision moved ([`BackendError::Conflict`] with [`CHANGED`]), reads
//! again and sees the decision already made.

use super::{BackendError, BackendResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Where a device stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    /// Asked to pair; waits for an operator.
    Pending,
    /// Approved: holds a device token.
    Paired,
    Rejected,
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paired => "paired",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
        }
    }
}

/// What clients see of a device (never a token or its hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub device_id: String,
    pub name: String,
    pub platform: String,
    /// Ed25519 public key (32 bytes, base64url without padding) the device
    /// proves possession of when it authenticates.
    #[serde(default)]
    pub public_key: Option<String>,
    pub status: DeviceStatus,
    /// The pairing code shown to the device and to operators.
    pub code: String,
    pub requested_at: u64,
    /// When the pending request expires unanswered.
    pub expires_at: u64,
    /// `node`, or `operator` with `scopes`, once paired.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decided_at: Option<u64>,
    #[serde(default)]
    pub note: Option<String>,
    /// When its current token was issued (pairing or rotation).
    #[serde(default)]
    pub token_issued_at: Option<u64>,
    /// Until when the token replaced by the latest rotation still works.
    #[serde(default)]
    pub previous_token_until: Option<u64>,
    /// The last successful authentication with its token.
    #[serde(default)]
    pub last_seen: Option<u64>,
}

/// The token hashes of a device (hex SHA-256), never sent to clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenHashes {
    #[serde(default)]
    pub current: Option<String>,
    #[serde(default)]
    pub previous: Option<String>,
    /// `previous` works until this time (ms).
    #[serde(default)]
    pub previous_until: u64,
}

/// A device as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRecord {
    #[serde(flatten)]
    pub info: DeviceInfo,
    #[serde(default)]
    pub tokens: TokenHashes,
    /// The connection that asked to pair (the waiting device).
    #[serde(default)]
    pub requester_conn: String,
    /// Check-and-set revision: 1 for a new record, +1 per write.
    pub rev: u64,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceEvent {
    pub at: u64,
    pub device_id: String,
    /// `requested`, `approved`, `rejected`, `revoked` or `rotated`.
    pub action: String,
    /// Who: an operator's identity, or `device` (from its address) for a
    /// request.
    pub by: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// What a write does to the pending index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Add the device (refused with a limit error when `max` are pending).
    Add {
        max: usize,
    },
    Remove,
    Keep,
}

/// A change to the token index (token hash → device id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenIndex {
    Set(String),
    Delete(String),
    /// Keep it this many ms more, then drop it.
    Expire(String, u64),
}

/// One check-and-set write of a device record.
#[derive(Debug, Clone)]
pub struct DeviceChange {
    /// The new record; its `rev` must be `expected_rev + 1`.
    pub record: DeviceRecord,
    /// The revision the record has now (0: no record).
    pub expected_rev: u64,
    pub pending: Pending,
    /// The record is dropped this long after the write (None: kept).
    pub ttl_ms: Option<u64>,
    pub tokens: Vec<TokenIndex>,
    /// Appended to the audit trail in the same step.
    pub audit: DeviceEvent,
    /// The time of the write (ms), for expiring pending entries.
    pub now: u64,
}

/// Devices, their token index and the audit trail.
#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// The device `id`, if known (records with a TTL vanish after it).
    async fn device(&self, id: &str) -> BackendResult<Option<DeviceRecord>>;
    /// Every known device, by first request, oldest first.
    async fn devices(&self) -> BackendResult<Vec<DeviceRecord>>;
    /// Write `change` if the record's revision is still `expected_rev`:
    /// otherwise `Conflict(CHANGED)`; `Limit` when the pending index is
    /// full. Record, pending index, token index and audit trail change
    /// together or not at all.
    async fn write_device(&self, change: &DeviceChange) -> BackendResult<()>;
    /// The device whose token hash (current, or previous within its grace)
    /// is `token_hash`, as indexed; the caller checks the record.
    async fn device_by_token(&self, token_hash: &str) -> BackendResult<Option<DeviceRecord>>;
    /// Note a successful authentication (`lastSeen`), outside the
    /// revision: it never makes a decision fail.
    async fn touch_device(&self, id: &str, at: u64) -> BackendResult<()>;
    /// The audit trail, newest first.
    async fn device_history(&self, limit: usize) -> BackendResult<Vec<DeviceEvent>>;
}

/// Entries kept in the devices' audit trail.
pub const AUDIT_MAX: usize = 1000;

/// The conflict message of a write that lost its race.
pub const CHANGED: &str = "device record changed";

/// The Conflict a lost race answers.
pub(super) fn changed() -> BackendError {
    BackendError::Conflict(CHANGED.into())
}
