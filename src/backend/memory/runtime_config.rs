//! The runtime config document in memory: the document, its history
//! newest first, and a watch channel announcing new versions.

use super::MemoryBackend;
use crate::backend::runtime_config::CONFIG_HISTORY_MAX;
use crate::backend::{BackendResult, ConfigChange, ConfigDocument, ConfigStore, ConfigWrite};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::VecDeque;
use tokio::sync::watch;

/// The runtime config part of the in-memory state.
pub(super) struct ConfigState {
    /// `None` until the first write (or after none was ever made).
    document: Option<ConfigDocument>,
    history: VecDeque<ConfigChange>,
    changes: watch::Sender<u64>,
}

impl Default for ConfigState {
    fn default() -> Self {
        Self {
            document: None,
            history: VecDeque::new(),
            changes: watch::channel(0).0,
        }
    }
}

#[async_trait]
impl ConfigStore for MemoryBackend {
    async fn config_version(&self) -> BackendResult<u64> {
        Ok(self
            .lock()
            .config
            .document
            .as_ref()
            .map_or(0, |d| d.version))
    }

    async fn config_document(&self) -> BackendResult<ConfigDocument> {
        Ok(self.lock().config.document.clone().unwrap_or_default())
    }

    async fn put_config(
        &self,
        base: u64,
        overrides: &Value,
        change: &ConfigChange,
        now_ms: u64,
    ) -> BackendResult<ConfigWrite> {
        let mut state = self.lock();
        let config = &mut state.config;
        let current = config.document.as_ref().map_or(0, |d| d.version);
        if current != base {
            return Ok(ConfigWrite::Stale { current });
        }
        let version = current + 1;
        config.document = Some(ConfigDocument {
            version,
            overrides: overrides.clone(),
            updated_at: now_ms,
        });
        config.history.push_front(ConfigChange {
            from_version: current,
            version,
            ..change.clone()
        });
        config.history.truncate(CONFIG_HISTORY_MAX);
        config.changes.send_replace(version);
        Ok(ConfigWrite::Written(version))
    }

    async fn restore_config(&self, document: &ConfigDocument) -> BackendResult<bool> {
        let mut state = self.lock();
        if state.config.document.is_some() {
            return Ok(false);
        }
        state.config.document = Some(document.clone());
        Ok(true)
    }

    async fn config_history(&self, limit: usize) -> BackendResult<Vec<ConfigChange>> {
        Ok(self
            .lock()
            .config
            .history
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }

    fn config_changes(&self) -> watch::Receiver<u64> {
        self.lock().config.changes.subscribe()
    }
}
