//! A short-lived copy of the shared agent registry, for routing.
//!
//! Every routed call used to read the whole registry from the backend (on
//! Redis one `HGETALL` and a JSON parse of every entry) before it could
//! send anything: a round trip per call whose answer changes only when an
//! agent comes, goes or changes its load. Calls now share one read for
//! [`FRESH`]. The copy is only a hint:
//! - a selector that matches nothing in it reads the registry again (an
//!   agent registered a moment ago on another instance is found);
//! - a call whose agent is gone from its instance (the relay reports it
//!   before anything was sent) drops the copy and is routed once more on
//!   a fresh read;
//! - an agent registering or leaving on this instance drops it at once.
//!
//! - `least_loaded` with more than one candidate reads the registry again
//!   (it chooses by the loads as they are now).
//!
//! What stays stale for up to [`FRESH`]: a second agent for a selector
//! that already matched one (under the other policies).

use crate::backend::AgentEntry;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one read of the registry serves calls.
pub const FRESH: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct RegistryView {
    copy: Mutex<Option<(Instant, Arc<Vec<AgentEntry>>)>>,
}

impl RegistryView {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Arc<Vec<AgentEntry>>)>> {
        self.copy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The copy, if it was read less than [`FRESH`] ago.
    pub fn fresh(&self) -> Option<Arc<Vec<AgentEntry>>> {
        self.slot()
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, entries)| entries.clone())
    }

    /// Keep `entries`, just read.
    pub fn store(&self, entries: Vec<AgentEntry>) -> Arc<Vec<AgentEntry>> {
        let entries = Arc::new(entries);
        *self.slot() = Some((Instant::now(), entries.clone()));
        entries
    }

    /// The registry changed: the next call reads it.
    pub fn forget(&self) {
        *self.slot() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_serves_until_it_is_old_or_forgotten() {
        let view = RegistryView::default();
        assert!(view.fresh().is_none());
        view.store(Vec::new());
        assert!(view.fresh().is_some());
        view.forget();
        assert!(view.fresh().is_none());
        *view.slot() = Some((Instant::now() - FRESH, Arc::new(Vec::new())));
        assert!(view.fresh().is_none(), "too old");
    }
}
