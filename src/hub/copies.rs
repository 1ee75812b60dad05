//! Copies of records only this instance's live work can prove, kept so
//! they can be written back when the backend loses them (its epoch
//! changed: Redis came back empty, or a failover or a restart from disk
//! may have lost the last writes):
//!
//! - pending approvals opened here, until they are decided or expire;
//! - the records of devices connected here (a device's connections are
//!   the subscribers of its `$device:<id>` channel), as they last
//!   authenticated here.
//!
//! Runs in progress are in the agents' [`RunBook`]; owned sessions in
//! [`OwnedSessions`]. The write-back itself is `services::write_back`.
//!
//! [`RunBook`]: crate::agents::runs::RunBook
//! [`OwnedSessions`]: super::OwnedSessions

use crate::backend::{ApprovalRecord, DeviceRecord};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Pending approvals kept at most (the oldest go first beyond it).
const APPROVALS_MAX: usize = 10_000;
/// Device records kept before those of devices gone are dropped.
const DEVICES_MAX: usize = 10_000;

#[derive(Default)]
pub struct Copies {
    approvals: Mutex<HashMap<String, ApprovalRecord>>,
    /// Device id → the record it last authenticated here with.
    devices: Mutex<HashMap<String, DeviceRecord>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Copies {
    /// Keep a copy of an approval opened here while it is pending.
    pub fn keep_approval(&self, record: &ApprovalRecord) {
        let mut map = lock(&self.approvals);
        if map.len() >= APPROVALS_MAX
            && let Some(oldest) = map
                .values()
                .min_by_key(|r| r.created_at)
                .map(|r| r.approval_id.clone())
        {
            map.remove(&oldest);
        }
        map.insert(record.approval_id.clone(), record.clone());
    }

    /// The approval was decided (or is gone for good).
    pub fn drop_approval(&self, id: &str) {
        lock(&self.approvals).remove(id);
    }

    /// The copies of approvals still pending at `now` (expired ones are
    /// dropped).
    pub fn approvals(&self, now: u64) -> Vec<ApprovalRecord> {
        let mut map = lock(&self.approvals);
        map.retain(|_, r| r.expires_at > now);
        let mut list: Vec<_> = map.values().cloned().collect();
        list.sort_by_key(|r| r.created_at);
        list
    }

    /// A device authenticated here with `record`. Beyond the cap, the
    /// records of devices `connected` says are gone are dropped.
    pub fn keep_device(&self, record: DeviceRecord, connected: impl Fn(&str) -> bool) {
        let mut map = lock(&self.devices);
        if map.len() >= DEVICES_MAX {
            map.retain(|id, _| connected(id));
        }
        map.insert(record.info.device_id.clone(), record);
    }

    /// The records of devices `connected` says are connected here (the
    /// others are dropped).
    pub fn devices(&self, connected: impl Fn(&str) -> bool) -> Vec<DeviceRecord> {
        let mut map = lock(&self.devices);
        map.retain(|id, _| connected(id));
        map.values().cloned().collect()
    }
}
