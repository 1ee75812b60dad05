//! Sliding-window rate limiting.
//!
//! Two flavours, chosen by how exact a limit must be:
//! - [`SlidingLog`] keeps every hit's timestamp: exact, used by the backend
//!   for connection attempts and failed authentications per IP, where a
//!   limit must hold to the unit across instances.
//! - [`SlidingCounter`] weights the previous fixed window by its overlap with
//!   the sliding one: O(1) memory, used per connection on the hot path.
//!
//! Per-identity message limits lease budgets from the backend in batches
//! ([`IdentityBudget`]) so a frame never waits for a backend round trip
//! except once per batch.

use crate::config::Window;
use std::collections::VecDeque;

/// The outcome of one rate check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Hits counted in the window (after this one when allowed).
    pub count: u32,
    /// When rejected: how long until a hit would be allowed.
    pub retry_after_ms: u64,
}

/// Exact sliding window over recorded timestamps.
#[derive(Debug, Default)]
pub struct SlidingLog {
    hits: VecDeque<u64>,
}

impl SlidingLog {
    fn expire(&mut self, window: Window, now_ms: u64) {
        // The window is (now - window_ms, now]; nothing can have left it
        // before a full window has elapsed since time zero.
        let Some(start) = now_ms.checked_sub(window.window_ms) else {
            return;
        };
        while self.hits.front().is_some_and(|&t| t <= start) {
            self.hits.pop_front();
        }
    }

    /// Record a hit if the window has room.
    pub fn hit(&mut self, window: Window, now_ms: u64) -> Decision {
        self.expire(window, now_ms);
        if self.hits.len() as u32 >= window.limit {
            return self.rejected(window, now_ms);
        }
        self.hits.push_back(now_ms);
        Decision {
            allowed: true,
            count: self.hits.len() as u32,
            retry_after_ms: 0,
        }
    }

    /// Record `want` hits at most, returning how many fitted.
    pub fn take(&mut self, window: Window, want: u32, now_ms: u64) -> (u32, u64) {
        self.expire(window, now_ms);
        let room = window.limit.saturating_sub(self.hits.len() as u32);
        let granted = room.min(want);
        self.hits
            .extend(std::iter::repeat_n(now_ms, granted as usize));
        let retry = if granted == 0 {
            self.rejected(window, now_ms).retry_after_ms
        } else {
            0
        };
        (granted, retry)
    }

    /// Look without recording: would a hit be rejected?
    pub fn peek(&mut self, window: Window, now_ms: u64) -> Decision {
        self.expire(window, now_ms);
        if self.hits.len() as u32 >= window.limit {
            return self.rejected(window, now_ms);
        }
        Decision {
            allowed: true,
            count: self.hits.len() as u32,
            retry_after_ms: 0,
        }
    }

    fn rejected(&self, window: Window, now_ms: u64) -> Decision {
        // The oldest hit that must leave for one slot to free up.
        let idx = self.hits.len().saturating_sub(window.limit as usize);
        let oldest = self.hits.get(idx).copied().unwrap_or(now_ms);
        Decision {
            allowed: false,
            count: self.hits.len() as u32,
            retry_after_ms: (oldest + window.window_ms).saturating_sub(now_ms).max(1),
        }
    }

    /// Forget the most recent hit.
    pub fn undo(&mut self) {
        self.hits.pop_back();
    }

    /// Time of the most recent recorded hit.
    pub fn newest(&self) -> Option<u64> {
        self.hits.back().copied()
    }
}

/// Approximate sliding window in constant memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct SlidingCounter {
    window_start: u64,
    current: u32,
    previous: u32,
}

impl SlidingCounter {
    pub fn hit(&mut self, window: Window, now_ms: u64) -> Decision {
        let w = window.window_ms.max(1);
        let start = now_ms - now_ms % w;
        if start != self.window_start {
            self.previous = if start == self.window_start + w {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.window_start = start;
        }
        let elapsed = now_ms - start;
        let weight = (w - elapsed) as f64 / w as f64;
        let estimate = self.current as f64 + self.previous as f64 * weight;
        if estimate + 1.0 > window.limit as f64 {
            return Decision {
                allowed: false,
                count: estimate as u32,
                retry_after_ms: retry_after(self.previous, self.current, window, elapsed),
            };
        }
        self.current += 1;
        Decision {
            allowed: true,
            count: (estimate + 1.0) as u32,
            retry_after_ms: 0,
        }
    }
}

/// Time until the weighted estimate drops enough to admit one hit.
fn retry_after(previous: u32, current: u32, window: Window, elapsed: u64) -> u64 {
    let w = window.window_ms as f64;
    let room = window.limit as f64 - 1.0 - current as f64;
    if previous == 0 || room < 0.0 {
        // Only the current window counts: wait for it to end.
        return (window.window_ms - elapsed).max(1);
    }
    // previous * (w - t) / w <= room  →  t >= w - room * w / previous
    let t = w - room * w / previous as f64;
    ((t - elapsed as f64).ceil() as u64).max(1)
}

/// A locally held share of an identity's window, leased from the backend.
#[derive(Debug, Default)]
pub struct IdentityBudget {
    pub remaining: u32,
    /// Until this instant (ms) the backend said no; frames are rejected
    /// without asking again.
    pub blocked_until: u64,
}

/// How many hits to lease at once for a window: a tenth of the limit,
/// between 1 and 50, so that leftovers on one instance stay small.
pub fn lease_size(window: Window) -> u32 {
    (window.limit / 10).clamp(1, 50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_exact() {
        let w = Window::new(3, 1000);
        let mut log = SlidingLog::default();
        for t in [0, 10, 20] {
            assert!(log.hit(w, t).allowed);
        }
        let d = log.hit(w, 30);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 970);
        assert!(log.hit(w, 1001).allowed, "first hit left the window");
        assert!(!log.hit(w, 1002).allowed);
    }

    #[test]
    fn log_take_grants_what_fits() {
        let w = Window::new(5, 1000);
        let mut log = SlidingLog::default();
        assert_eq!(log.take(w, 3, 0).0, 3);
        assert_eq!(log.take(w, 3, 1).0, 2);
        let (granted, retry) = log.take(w, 3, 2);
        assert_eq!(granted, 0);
        assert!(retry > 0);
    }

    #[test]
    fn counter_limits_and_recovers() {
        let w = Window::new(10, 1000);
        let mut c = SlidingCounter::default();
        let allowed = (0..20).filter(|i| c.hit(w, 5000 + i).allowed).count();
        assert_eq!(allowed, 10);
        let d = c.hit(w, 5100);
        assert!(!d.allowed && d.retry_after_ms > 0);
        // Two windows later everything has slid out.
        assert!(c.hit(w, 7100).allowed);
    }

    #[test]
    fn lease_sizes() {
        assert_eq!(lease_size(Window::new(5, 1000)), 1);
        assert_eq!(lease_size(Window::new(2000, 1000)), 50);
        assert_eq!(lease_size(Window::new(100, 1000)), 10);
    }
}
