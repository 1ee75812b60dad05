//! The allocator, and giving memory back after a storm of connections.
//!
//! The process allocates with jemalloc ([`ALLOCATOR`]). glibc malloc, the
//! default before, served the gateway's many-kilobyte futures (every Redis
//! command, every routed call) from one arena under one lock; jemalloc's
//! per-thread caches and size classes take that lock off the path (routed
//! calls across two instances +19 to +26 %: docs/performance.md).
//!
//! What a storm leaves behind: 19 500 connections opened as fast as a
//! client could and then closed leave their memory free inside the
//! allocator. jemalloc hands free pages back on its own, over
//! `dirty_decay_ms`, from a background thread ([`MALLOC_CONF`]); a storm is
//! handed back at once:
//!
//! Every [`LOOK_EVERY`] a task looks at the number of local connections.
//! When it has fallen by at least [`DROP`] below the highest count seen
//! since the last trim, and held still for a look (the storm is over),
//! every arena's free pages are purged on a blocking thread. A steady
//! gateway never trims; one that sheds connections trims once per wave.
//!
//! jemalloc reads its options from [`MALLOC_CONF`] and then from the
//! environment's `_RJEM_MALLOC_CONF` (later options win), so an operator
//! can change them without a rebuild. (jemalloc does not build for MSVC
//! targets: there the system allocator serves and a trim only shrinks
//! the hub's maps.)

/// The global allocator.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
pub static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A C string jemalloc reads before `main`.
#[cfg(not(target_env = "msvc"))]
#[repr(transparent)]
pub struct Conf(*const std::ffi::c_char);
// SAFETY: it points at a static, immutable C string.
#[cfg(not(target_env = "msvc"))]
unsafe impl Sync for Conf {}

/// jemalloc's built-in options: one background thread returns free pages
/// to the system about a second after they were freed (dirty pages
/// decay in 1 s; "muzzy" pages, given back lazily, are skipped), so no
/// allocating thread pays for the purge and an idle gateway does not keep
/// a burst's memory.
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: Conf = Conf(
    c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0"
        .as_ptr(),
);

/// Connections fewer than the peak that make a trim worth it.
pub const DROP: usize = 1_000;
/// How often the connection count is looked at.
pub const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// When to trim, from the connection counts seen once a second.
#[derive(Debug, Default)]
pub struct Trimmer {
    peak: usize,
    last: usize,
}

impl Trimmer {
    /// Note the count now; true when memory should be trimmed.
    pub fn step(&mut self, now: usize) -> bool {
        self.peak = self.peak.max(now);
        let settled = now == self.last;
        self.last = now;
        if settled && self.peak >= now + DROP {
            self.peak = now;
            return true;
        }
        false
    }
}

/// Return every arena's free pages to the system at once.
pub async fn trim() {
    let started = std::time::Instant::now();
    let purged = tokio::task::spawn_blocking(purge_all).await;
    metrics::counter!("switchyard_memory_trims_total").increment(1);
    tracing::debug!(
        purged = matches!(purged, Ok(true)),
        ms = started.elapsed().as_millis() as u64,
        "free memory returned to the system"
    );
}

/// `arena.<all>.purge`: jemalloc's "every arena" index is 4096
/// (`MALLCTL_ARENAS_ALL`).
#[cfg(not(target_env = "msvc"))]
fn purge_all() -> bool {
    // SAFETY: a NUL-terminated control name; the purge reads and writes
    // no value, so every pointer is null and every length zero.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        ) == 0
    }
}

#[cfg(target_env = "msvc")]
fn purge_all() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(target_env = "msvc"))]
    #[test]
    fn every_arena_can_be_purged() {
        // Memory freed by this thread is there to purge; a refused
        // control name would answer false.
        drop(vec![0u8; 8 << 20]);
        assert!(purge_all());
    }

    #[test]
    fn trims_once_a_wave_of_closes_has_settled() {
        let mut t = Trimmer::default();
        for n in [0, 5_000, 20_000, 20_000] {
            assert!(!t.step(n), "growing or steady at {n}");
        }
        assert!(!t.step(8_000), "still falling");
        assert!(!t.step(200), "still falling");
        assert!(t.step(200), "settled, far below the peak");
        assert!(!t.step(200), "once per wave");
        // A small dip is not worth it.
        for n in [900, 900, 100, 100] {
            assert!(!t.step(n), "{n}");
        }
        // The next wave.
        let steps: Vec<bool> = [3_000, 3_000, 1_500, 1_500].map(|n| t.step(n)).into();
        assert_eq!(steps, [false, false, false, true]);
    }
}
