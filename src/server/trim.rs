//! Giving memory back after a storm of connections has closed.
//!
//! glibc malloc keeps what is freed in its per-thread arenas: after 19 500
//! connections opened as fast as a client could and then closed, the
//! process stayed at 9.7× its pre-storm RSS, all of it free inside the
//! allocator (a second storm reused it: nothing leaked). `malloc_trim(0)`
//! hands the free pages of every arena back to the system.
//!
//! Every [`LOOK_EVERY`] this task looks at the number of local
//! connections. When it has fallen by at least [`DROP`] below the highest
//! count seen since the last trim, and held still for a look (the storm is
//! over), the
//! allocator is asked to trim, on a blocking thread (it walks every
//! arena). A steady gateway never trims; one that sheds connections trims
//! once per wave. Only glibc has `malloc_trim`; elsewhere nothing runs.

/// Use one malloc arena (glibc), unless `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES` says otherwise. By default glibc gives each busy
/// thread an arena of its own, and after a storm the worker threads'
/// arenas keep pages that one small live allocation pins, which no trim
/// can return: RSS after a 19 500-connection storm came back to 1.09–1.28×
/// its value before it, against 1.07–1.09× with one arena, at the same
/// ping rate (each thread's cache of small blocks keeps most allocations
/// off the arena's lock). Called first thing, before any thread starts.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && std::env::var_os("GLIBC_TUNABLES").is_none()
    {
        // SAFETY: mallopt only sets an allocator parameter; it is called
        // before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

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

/// Return free memory to the system (glibc only).
pub async fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim only walks and releases the allocator's own
        // free lists; it takes no pointer and is thread-safe.
        let released = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        metrics::counter!("switchyard_memory_trims_total").increment(1);
        tracing::debug!(
            released = matches!(released, Ok(1)),
            ms = started.elapsed().as_millis() as u64,
            "free memory returned to the system"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
