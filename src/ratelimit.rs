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
//!
//! Credential checks use a [`CheckLog`]: a sliding log whose entries are
//! either failures or checks still running, so that a window filled by
//! concurrent good checks (a burst of clients behind one address) says
//! "retry in a moment" rather than "retry when the oldest failure ages
//! out".

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

/// An entry of an exact sliding window: something that happened at a time.
trait Stamped {
    fn at(&self) -> u64;
}

impl Stamped for u64 {
    fn at(&self) -> u64 {
        *self
    }
}

/// Drop the entries that left the window (oldest first in `entries`).
fn expire<T: Stamped>(entries: &mut VecDeque<T>, window: Window, now_ms: u64) {
    // The window is (now - window_ms, now]; nothing can have left it
    // before a full window has elapsed since time zero.
    let Some(start) = now_ms.checked_sub(window.window_ms) else {
        return;
    };
    while entries.front().is_some_and(|e| e.at() <= start) {
        entries.pop_front();
    }
}

/// The refusal of a full window: retry when the oldest entry that must
/// leave for one slot to free up does.
fn refusal<T: Stamped>(entries: &VecDeque<T>, window: Window, now_ms: u64) -> Decision {
    let idx = entries.len().saturating_sub(window.limit as usize);
    let oldest = entries.get(idx).map_or(now_ms, Stamped::at);
    Decision {
        allowed: false,
        count: entries.len() as u32,
        retry_after_ms: (oldest + window.window_ms).saturating_sub(now_ms).max(1),
    }
}

/// Exact sliding window over recorded timestamps.
#[derive(Debug, Default)]
pub struct SlidingLog {
    hits: VecDeque<u64>,
}

impl SlidingLog {
    /// Record a hit if the window has room.
    pub fn hit(&mut self, window: Window, now_ms: u64) -> Decision {
        expire(&mut self.hits, window, now_ms);
        if self.hits.len() as u32 >= window.limit {
            return refusal(&self.hits, window, now_ms);
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
        expire(&mut self.hits, window, now_ms);
        let room = window.limit.saturating_sub(self.hits.len() as u32);
        let granted = room.min(want);
        self.hits
            .extend(std::iter::repeat_n(now_ms, granted as usize));
        let retry = if granted == 0 {
            refusal(&self.hits, window, now_ms).retry_after_ms
        } else {
            0
        };
        (granted, retry)
    }

    /// Look without recording: would a hit be rejected?
    pub fn peek(&mut self, window: Window, now_ms: u64) -> Decision {
        expire(&mut self.hits, window, now_ms);
        if self.hits.len() as u32 >= window.limit {
            return refusal(&self.hits, window, now_ms);
        }
        Decision {
            allowed: true,
            count: self.hits.len() as u32,
            retry_after_ms: 0,
        }
    }

    /// Time of the most recent recorded hit.
    pub fn newest(&self) -> Option<u64> {
        self.hits.back().copied()
    }
}

/// How long a reserved credential check may stay unsettled before it
/// counts as a failure (its instance died mid-check). A check settles in
/// one backend round trip, bounded by the command timeout.
pub const CHECK_PENDING_MS: u64 = 5_000;

/// What a refusal suggests while the window is full of checks still
/// running: they settle in milliseconds, and a good one frees its slot.
pub const CHECK_RETRY_MS: u64 = 1_000;

/// One entry of a [`CheckLog`].
#[derive(Debug, Clone)]
struct Check {
    at: u64,
    id: String,
    pending: bool,
}

impl Stamped for Check {
    fn at(&self) -> u64 {
        self.at
    }
}

/// The failed-authentication window of one address: exact like
/// [`SlidingLog`], where every credential check first reserves a slot
/// ([`CheckLog::reserve`]) and then settles it ([`CheckLog::settle`]): a
/// failure keeps its slot for the window, a good credential frees it. So a
/// burst of concurrent guesses can never exceed the limit, and a refusal
/// tells apart a window full of failures (retry when the oldest ages out)
/// from one that holds checks still running (retry in [`CHECK_RETRY_MS`]).
/// The Redis backend keeps the same log in a sorted set (`CHECK` script).
#[derive(Debug, Default)]
pub struct CheckLog {
    checks: VecDeque<Check>,
}

impl CheckLog {
    /// Reserve a slot for check `id` if the window has room.
    pub fn reserve(&mut self, window: Window, id: &str, now_ms: u64) -> Decision {
        expire(&mut self.checks, window, now_ms);
        let count = self.checks.len() as u32;
        if count >= window.limit {
            let mut refused = refusal(&self.checks, window, now_ms);
            let running = self
                .checks
                .iter()
                .any(|c| c.pending && c.at + CHECK_PENDING_MS > now_ms);
            if running {
                refused.retry_after_ms = refused.retry_after_ms.min(CHECK_RETRY_MS);
            }
            return refused;
        }
        self.checks.push_back(Check {
            at: now_ms,
            id: id.to_owned(),
            pending: true,
        });
        Decision {
            allowed: true,
            count: count + 1,
            retry_after_ms: 0,
        }
    }

    /// Settle check `id`: a failure keeps its slot, a pass frees it.
    pub fn settle(&mut self, id: &str, failed: bool) {
        let Some(i) = self.checks.iter().position(|c| c.pending && c.id == id) else {
            return;
        };
        if failed {
            self.checks[i].pending = false;
        } else {
            self.checks.remove(i);
        }
    }

    /// Time of the most recent entry.
    pub fn newest(&self) -> Option<u64> {
        self.checks.back().map(|c| c.at)
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
    /// A lease is being taken ahead of need (see [`IdentityBudget::take`]).
    pub refilling: bool,
}

/// What the local share says about one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// Allowed from the local share; `refill`: the share runs low, lease
    /// more now (in the background) so the next messages need not wait.
    Allowed { refill: bool },
    /// Refused until the backend's window lets it through (ms).
    Blocked(u64),
    /// Nothing left locally: ask the backend before answering.
    Empty,
}

impl IdentityBudget {
    /// Take one message from the local share at `now`. Once it falls to
    /// half a lease, one refill is asked for ahead of need, so a steady
    /// sender does not wait on the backend every `lease` messages.
    pub fn take(&mut self, lease: u32, now: u64) -> Take {
        if self.remaining > 0 {
            self.remaining -= 1;
            let refill = !self.refilling && self.remaining <= lease / 2;
            self.refilling |= refill;
            Take::Allowed { refill }
        } else if self.blocked_until > now {
            Take::Blocked(self.blocked_until - now)
        } else {
            Take::Empty
        }
    }

    /// A lease came back with `granted` messages (`retry` ms to wait when
    /// none were).
    pub fn granted(&mut self, granted: u32, retry: u64, now: u64) {
        self.remaining += granted;
        if granted == 0 {
            self.blocked_until = now + retry;
        }
    }
}

/// How many hits to lease at once for a window: a tenth of the limit,
/// between 1 and 50, so that leftovers on one instance stay small; for a
/// large limit a fortieth of it, at most 1 000, so that a sender near it
/// does not wait on the backend every few hundred microseconds (one
/// identity sending 47 000 messages a second to one instance used up 50
/// before the next lease was back, and 1 % of its calls waited for it).
pub fn lease_size(window: Window) -> u32 {
    let small = (window.limit / 10).clamp(1, 50);
    small.max((window.limit / 40).min(1_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_is_refilled_ahead_of_need_once() {
        let mut b = IdentityBudget::default();
        assert_eq!(b.take(10, 0), Take::Empty);
        b.granted(10, 0, 0);
        for _ in 0..4 {
            assert_eq!(b.take(10, 0), Take::Allowed { refill: false });
        }
        assert_eq!(b.take(10, 0), Take::Allowed { refill: true }, "half left");
        assert_eq!(b.take(10, 0), Take::Allowed { refill: false }, "asked once");
        b.refilling = false;
        b.granted(0, 500, 100);
        for _ in 0..4 {
            assert!(matches!(b.take(10, 100), Take::Allowed { .. }));
        }
        assert_eq!(b.take(10, 200), Take::Blocked(400));
        assert_eq!(b.take(10, 700), Take::Empty);
    }

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
    fn checks_hold_a_slot_until_settled() {
        let w = Window::new(3, 60_000);
        let mut log = CheckLog::default();
        assert!(log.reserve(w, "a", 0).allowed);
        assert!(log.reserve(w, "b", 1).allowed);
        assert!(log.reserve(w, "c", 2).allowed);
        // Full of checks still running: retry in a moment.
        let d = log.reserve(w, "d", 3);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, CHECK_RETRY_MS);
        log.settle("b", false);
        assert!(
            log.reserve(w, "d", 4).allowed,
            "a good check freed its slot"
        );
        for id in ["a", "c", "d"] {
            log.settle(id, true);
        }
        // Full of failures: retry when the oldest ages out.
        let d = log.reserve(w, "e", 10);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 60_000 - 10);
        assert!(
            log.reserve(w, "e", 60_001).allowed,
            "the oldest failure left"
        );
    }

    #[test]
    fn a_check_never_settled_counts_as_a_failure() {
        let w = Window::new(1, 60_000);
        let mut log = CheckLog::default();
        assert!(log.reserve(w, "lost", 0).allowed);
        assert_eq!(log.reserve(w, "x", 100).retry_after_ms, CHECK_RETRY_MS);
        let later = CHECK_PENDING_MS + 1;
        assert_eq!(log.reserve(w, "x", later).retry_after_ms, 60_000 - later);
        // Settling an unknown or settled check changes nothing.
        log.settle("nobody", false);
        log.settle("lost", true);
        log.settle("lost", false);
        assert!(!log.reserve(w, "x", later).allowed);
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
        assert_eq!(lease_size(Window::new(8_000, 1000)), 200);
        assert_eq!(lease_size(Window::new(100_000_000, 1000)), 1_000);
    }
}
