//! Devices in memory: records by id (with the time a record with a TTL
//! vanishes), the token index, the pending count and the audit trail,
//! all under the backend's one lock, so a write is one step.

use super::MemoryBackend;
use crate::backend::devices::{AUDIT_MAX, changed};
use crate::backend::{
    BackendError, BackendResult, DeviceChange, DeviceEvent, DeviceRecord, DeviceStatus,
    DeviceStore, Pending, TokenIndex,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A stored device: the record, when it vanishes, when it was first seen.
struct Stored {
    record: DeviceRecord,
    expires: Option<u64>,
    first_seen: u64,
}

/// The devices' part of the memory backend's state.
#[derive(Default)]
pub(super) struct Devices {
    records: BTreeMap<String, Stored>,
    /// token hash → (device id, dropped at ms).
    tokens: HashMap<String, (String, Option<u64>)>,
    audit: VecDeque<DeviceEvent>,
}

impl Devices {
    /// Drop what has passed its time.
    fn purge(&mut self, now: u64) {
        self.records
            .retain(|_, s| s.expires.is_none_or(|at| at > now));
        self.tokens
            .retain(|_, (_, at)| at.is_none_or(|at| at > now));
    }

    fn pending_count(&self, now: u64, except: &str) -> usize {
        self.records
            .iter()
            .filter(|(id, s)| {
                id.as_str() != except
                    && s.record.info.status == DeviceStatus::Pending
                    && s.record.info.expires_at > now
            })
            .count()
    }
}

#[async_trait]
impl DeviceStore for MemoryBackend {
    async fn device(&self, id: &str) -> BackendResult<Option<DeviceRecord>> {
        let mut state = self.lock();
        state.devices.purge(crate::protocol::now_ms());
        Ok(state.devices.records.get(id).map(|s| s.record.clone()))
    }

    async fn devices(&self) -> BackendResult<Vec<DeviceRecord>> {
        let mut state = self.lock();
        state.devices.purge(crate::protocol::now_ms());
        let mut all: Vec<&Stored> = state.devices.records.values().collect();
        all.sort_by_key(|s| s.first_seen);
        Ok(all.into_iter().map(|s| s.record.clone()).collect())
    }

    async fn write_device(&self, change: &DeviceChange) -> BackendResult<()> {
        let mut state = self.lock();
        let devices = &mut state.devices;
        let now = change.now;
        devices.purge(now);
        let id = &change.record.info.device_id;
        let current = devices.records.get(id).map_or(0, |s| s.record.rev);
        if current != change.expected_rev {
            return Err(changed());
        }
        if let Pending::Add { max } = change.pending
            && devices.pending_count(now, id) >= max
        {
            return Err(BackendError::Limit("pending pairing requests", max));
        }
        let first_seen = devices.records.get(id).map_or(now, |s| s.first_seen);
        // `lastSeen` lives outside the revision (see `touch_device`).
        let mut record = change.record.clone();
        let seen = devices
            .records
            .get(id)
            .and_then(|s| s.record.info.last_seen);
        record.info.last_seen = record.info.last_seen.max(seen);
        devices.records.insert(
            id.clone(),
            Stored {
                record,
                expires: change.ttl_ms.map(|ttl| now + ttl),
                first_seen,
            },
        );
        for op in &change.tokens {
            match op {
                TokenIndex::Set(hash) => {
                    devices.tokens.insert(hash.clone(), (id.clone(), None));
                }
                TokenIndex::Delete(hash) => {
                    devices.tokens.remove(hash);
                }
                TokenIndex::Expire(hash, ms) => {
                    if let Some(entry) = devices.tokens.get_mut(hash) {
                        entry.1 = Some(now + ms);
                    }
                }
            }
        }
        devices.audit.push_front(change.audit.clone());
        devices.audit.truncate(AUDIT_MAX);
        Ok(())
    }

    async fn device_by_token(&self, token_hash: &str) -> BackendResult<Option<DeviceRecord>> {
        let mut state = self.lock();
        state.devices.purge(crate::protocol::now_ms());
        let devices = &state.devices;
        Ok(devices
            .tokens
            .get(token_hash)
            .and_then(|(id, _)| devices.records.get(id))
            .map(|s| s.record.clone()))
    }

    async fn touch_device(&self, id: &str, at: u64) -> BackendResult<()> {
        if let Some(stored) = self.lock().devices.records.get_mut(id) {
            stored.record.info.last_seen = Some(at);
        }
        Ok(())
    }

    async fn device_history(&self, limit: usize) -> BackendResult<Vec<DeviceEvent>> {
        Ok(self
            .lock()
            .devices
            .audit
            .iter()
            .take(limit)
            .cloned()
            .collect())
    }
}
