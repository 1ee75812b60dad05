//! The runtime config document: one versioned override document shared by
//! every instance, its change history, and the announcement of each new
//! version.
//!
//! A write names the version it was based on and succeeds only while that
//! is still the stored one (compare and set, atomic across instances);
//! the version then goes up by one and the change joins the history.
//! What the document may contain and how it applies is
//! `config::runtime`'s and `services::runtime_config`'s business; here it
//! is an opaque JSON object.

use super::BackendResult;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;

/// The stored override document. Version 0 is "nothing stored".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDocument {
    pub version: u64,
    /// A JSON object shaped like the config file.
    pub overrides: Value,
    /// When it was written (ms; 0 at version 0).
    #[serde(default)]
    pub updated_at: u64,
}

impl Default for ConfigDocument {
    fn default() -> Self {
        Self {
            version: 0,
            overrides: Value::Object(Map::new()),
            updated_at: 0,
        }
    }
}

/// One entry of the change history: who changed what, when, from which
/// version to which.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChange {
    pub from_version: u64,
    pub version: u64,
    /// The identity (`sub`) that made it; `restore` for a write-back.
    pub by: String,
    pub at: u64,
    /// `set`, `patch`, `apply` or `restore`.
    pub op: String,
    /// The dotted path of a `set`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The value set, the merge patch, or the document applied (secrets
    /// redacted).
    #[serde(default)]
    pub value: Value,
}

/// How a compare-and-set write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigWrite {
    /// Stored as this version.
    Written(u64),
    /// The stored version is not the base given; nothing was written.
    Stale { current: u64 },
}

/// Entries kept in the change history.
pub const CONFIG_HISTORY_MAX: usize = 100;

/// The shared runtime config document.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// The stored version (0: none), in one cheap read: instances poll it.
    async fn config_version(&self) -> BackendResult<u64>;

    /// The stored document (version 0 and an empty object when none).
    async fn config_document(&self) -> BackendResult<ConfigDocument>;

    /// Store `overrides` as version `base + 1` if the stored version is
    /// still `base`, push `change` (its versions filled in) onto the
    /// history (newest first, at most [`CONFIG_HISTORY_MAX`]), and announce
    /// the new version to every instance ([`ConfigStore::config_changes`]).
    async fn put_config(
        &self,
        base: u64,
        overrides: &Value,
        change: &ConfigChange,
        now_ms: u64,
    ) -> BackendResult<ConfigWrite>;

    /// Write `document` back, keeping its version, only if nothing is
    /// stored (shared state was lost). `Ok(false)` when something is.
    async fn restore_config(&self, document: &ConfigDocument) -> BackendResult<bool>;

    /// The change history, newest first.
    async fn config_history(&self, limit: usize) -> BackendResult<Vec<ConfigChange>>;

    /// Versions announced by writers on any instance (best effort: a
    /// missed announcement is caught by polling [`config_version`]).
    ///
    /// [`config_version`]: ConfigStore::config_version
    fn config_changes(&self) -> watch::Receiver<u64>;
}
