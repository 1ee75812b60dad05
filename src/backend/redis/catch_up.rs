//! Logged frames delivered once, in order, through lost subscriptions.
//!
//! A publication on a channel with a log (a session's channel, a channel
//! with history) reaches this instance only while its subscription stands.
//! When the subscriber connection dropped, or a Redis Cluster shard failed
//! over (the demoted primary drops the sharded subscriptions it held, and
//! for a moment both the old and the new primary may deliver), frames are
//! missed, or arrive twice. The log has them all, numbered. So [`Marks`]
//! keeps, per channel, the offset of the last logged frame delivered here
//! and the last few frames' fingerprints:
//!
//! - a frame already delivered (same offset and content) is dropped;
//! - a frame past a hole (its offset more than one past the last) is held,
//!   the hole is read from the log (`pubsub` spawns the read) and
//!   delivered first, then what was held;
//! - when the subscriptions are issued again (`pubsub::resubscribe`), each
//!   channel still subscribed is read from its log after its mark, live
//!   frames held meanwhile: what was published while they were gone
//!   arrives even if nothing follows it.
//!
//! A frame at or below the mark that is not a recent one is a log that
//! started over (Redis lost it): delivered, and the mark follows it.
//! Deliveries happen under the lock, so a channel's frames reach the inbox
//! in offset order. At most [`HOLD_CAP`] frames are held; past that they
//! go out as they come, and a client fills the hole from the log as it
//! would after any loss.

use crate::backend::{Envelope, EventPage, logged_offset};
use crate::protocol::Frame;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

/// Live frames held at once, at most.
const HOLD_CAP: usize = 10_000;
/// Log entries read per channel at once, at most.
pub const READ_LIMIT: usize = 1_000;
/// Fingerprints kept per channel to recognise a second copy.
const RECENT: usize = 64;

/// What became of a live frame.
pub enum Admit {
    /// Deliver it now.
    Deliver(Envelope),
    /// Held (a catch-up runs), or a second copy: nothing to do.
    Nothing,
    /// Held behind a hole: read `channel`'s log after `after`, then
    /// [`Marks::filled`].
    Fill { channel: String, after: u64 },
}

#[derive(Default)]
pub struct Marks(Mutex<State>);

#[derive(Default)]
struct State {
    channels: HashMap<String, Mark>,
    /// Live logged frames held while a re-subscription's catch-up runs.
    held: Option<Vec<(u64, Envelope)>>,
}

#[derive(Default)]
struct Mark {
    /// Offset of the last logged frame delivered here.
    last: u64,
    /// (offset, fingerprint) of the last frames delivered.
    recent: VecDeque<(u64, u64)>,
    /// Frames held behind a hole being read from the log.
    filling: Option<Vec<(u64, Envelope)>>,
}

fn fingerprint(frame: &Frame) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    frame.as_str().hash(&mut h);
    h.finish()
}

impl Mark {
    /// Whether `offset` / `frame` is to be delivered (then it is noted).
    fn take(&mut self, offset: u64, frame: &Frame) -> bool {
        let print = fingerprint(frame);
        if offset <= self.last && self.recent.contains(&(offset, print)) {
            return false;
        }
        if offset <= self.last {
            // Not a copy: the log started over.
            self.recent.clear();
        }
        self.last = offset;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((offset, print));
        true
    }

    /// Deliver the log's entries of `channel` past the mark; how many.
    fn deliver_logged(
        &mut self,
        channel: &str,
        events: Vec<(u64, Frame)>,
        deliver: &impl Fn(Envelope),
    ) -> u64 {
        let mut delivered = 0;
        for (offset, frame) in events {
            if offset > self.last && self.take(offset, &frame) {
                delivered += 1;
                deliver(Envelope::Channel {
                    channel: channel.to_owned(),
                    frame,
                    last: false,
                });
            }
        }
        delivered
    }
}

/// `channel`'s mark, made on first use.
fn mark_of<'a>(channels: &'a mut HashMap<String, Mark>, channel: &str) -> &'a mut Mark {
    if !channels.contains_key(channel) {
        channels.insert(channel.to_owned(), Mark::default());
    }
    channels.get_mut(channel).expect("just made")
}

fn parts(envelope: &Envelope) -> Option<(&str, &Frame, u64)> {
    let Envelope::Channel { channel, frame, .. } = envelope else {
        return None;
    };
    Some((channel, frame, logged_offset(frame.as_str())?))
}

impl Marks {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A channel envelope arrived live.
    pub fn admit(&self, envelope: Envelope) -> Admit {
        let Some((channel, frame, offset)) = parts(&envelope) else {
            return Admit::Deliver(envelope);
        };
        let mut state = self.lock();
        let State { channels, held } = &mut *state;
        if let Some(held) = held.as_mut()
            && held.len() < HOLD_CAP
        {
            held.push((offset, envelope));
            return Admit::Nothing;
        }
        let mark = mark_of(channels, channel);
        if let Some(waiting) = mark.filling.as_mut()
            && waiting.len() < HOLD_CAP
        {
            waiting.push((offset, envelope));
            return Admit::Nothing;
        }
        if mark.last > 0 && offset > mark.last + 1 && mark.filling.is_none() {
            let after = mark.last;
            let channel = channel.to_owned();
            mark.filling = Some(vec![(offset, envelope)]);
            return Admit::Fill { channel, after };
        }
        if mark.take(offset, frame) {
            Admit::Deliver(envelope)
        } else {
            Admit::Nothing
        }
    }

    /// The log read for a hole on `channel` came back (`None`: the read
    /// failed): deliver what it holds past the mark, then what was held.
    /// How many came from the log.
    pub fn filled(
        &self,
        channel: &str,
        page: Option<EventPage>,
        deliver: impl Fn(Envelope),
    ) -> u64 {
        let mut state = self.lock();
        let Some(mark) = state.channels.get_mut(channel) else {
            return 0;
        };
        let events = page.map(|p| p.events).unwrap_or_default();
        let from_log = mark.deliver_logged(channel, events, &deliver);
        for (offset, envelope) in mark.filling.take().unwrap_or_default() {
            if let Some((_, frame, _)) = parts(&envelope)
                && mark.take(offset, frame)
            {
                deliver(envelope);
            }
        }
        from_log
    }

    /// A channel no longer subscribed here is forgotten.
    pub fn forget(&self, channel: &str) {
        self.lock().channels.remove(channel);
    }

    /// A re-subscription begins: live logged frames are held until
    /// [`Marks::release`]. The channels to read (those `subscribed` still;
    /// the others are forgotten) and the offset each was delivered up to.
    pub fn begin(&self, subscribed: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
        let mut state = self.lock();
        state.channels.retain(|channel, _| subscribed(channel));
        state.held.get_or_insert_with(Vec::new);
        state
            .channels
            .iter()
            .filter(|(_, m)| m.last > 0)
            .map(|(c, m)| (c.clone(), m.last))
            .collect()
    }

    /// What `channel`'s log holds after `from`, where its catch-up
    /// started: delivered past what arrived meanwhile. A log whose newest
    /// offset is behind `from` started over (Redis lost it): nothing.
    pub fn caught(&self, channel: &str, from: u64, page: EventPage, deliver: impl Fn(Envelope)) {
        let mut state = self.lock();
        let Some(mark) = state.channels.get_mut(channel) else {
            return;
        };
        if page.latest >= from {
            mark.deliver_logged(channel, page.events, &deliver);
        }
    }

    /// The re-subscription's catch-up is over: the frames held meanwhile
    /// that the log did not give, in the order they arrived.
    pub fn release(&self, deliver: impl Fn(Envelope)) {
        let mut state = self.lock();
        let State { channels, held } = &mut *state;
        for (offset, envelope) in held.take().unwrap_or_default() {
            let Some((channel, frame, _)) = parts(&envelope) else {
                continue;
            };
            if mark_of(channels, channel).take(offset, frame) {
                deliver(envelope);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LoggedFrame;
    use serde_json::json;
    use std::cell::RefCell;

    fn frame(channel: &str, offset: u64) -> Envelope {
        Envelope::Channel {
            channel: channel.into(),
            frame: LoggedFrame::new("notify", json!({"channel": channel})).frame(offset),
            last: false,
        }
    }

    fn offset(e: &Envelope) -> u64 {
        parts(e).map_or(0, |(_, _, o)| o)
    }

    fn page(channel: &str, from: u64, to: u64) -> EventPage {
        EventPage {
            events: (from..=to)
                .map(|o| {
                    let f = LoggedFrame::new("notify", json!({"channel": channel}));
                    (o, f.frame(o))
                })
                .collect(),
            latest: to,
        }
    }

    fn delivered(marks: &Marks, e: Envelope) -> Vec<u64> {
        match marks.admit(e) {
            Admit::Deliver(e) => vec![offset(&e)],
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_second_copy_is_dropped_and_a_new_log_is_followed() {
        let marks = Marks::default();
        assert_eq!(delivered(&marks, frame("h", 1)), [1]);
        assert_eq!(delivered(&marks, frame("h", 2)), [2]);
        assert!(delivered(&marks, frame("h", 2)).is_empty(), "a copy");
        assert!(delivered(&marks, frame("h", 1)).is_empty(), "a late copy");
        // Another frame numbered 1: the log started over.
        let other = Envelope::Channel {
            channel: "h".into(),
            frame: LoggedFrame::new("notify", json!({"channel": "h", "n": 9})).frame(1),
            last: false,
        };
        assert_eq!(delivered(&marks, other), [1]);
        assert_eq!(delivered(&marks, frame("h", 2)), [2]);
    }

    #[test]
    fn a_hole_is_filled_from_the_log_before_what_came_after_it() {
        let marks = Marks::default();
        marks.admit(frame("h", 1));
        let Admit::Fill { channel, after } = marks.admit(frame("h", 4)) else {
            panic!("a hole");
        };
        assert_eq!((channel.as_str(), after), ("h", 1));
        // Held while the log is read.
        assert!(matches!(marks.admit(frame("h", 5)), Admit::Nothing));
        let out = RefCell::new(Vec::new());
        marks.filled("h", Some(page("h", 2, 4)), |e| {
            out.borrow_mut().push(offset(&e))
        });
        assert_eq!(*out.borrow(), [2, 3, 4, 5], "4 once: the log's copy");
        assert_eq!(delivered(&marks, frame("h", 6)), [6]);
    }

    #[test]
    fn a_failed_read_lets_the_held_frames_go() {
        let marks = Marks::default();
        marks.admit(frame("h", 1));
        assert!(matches!(marks.admit(frame("h", 3)), Admit::Fill { .. }));
        let out = RefCell::new(Vec::new());
        marks.filled("h", None, |e| out.borrow_mut().push(offset(&e)));
        assert_eq!(*out.borrow(), [3]);
    }

    #[test]
    fn what_was_missed_while_resubscribing_comes_from_the_log_first() {
        let marks = Marks::default();
        marks.admit(frame("h", 1));
        marks.admit(frame("h", 2));
        marks.admit(frame("gone", 7));
        let todo = marks.begin(|c| c == "h");
        assert_eq!(todo, [("h".to_owned(), 2)], "gone is forgotten");
        assert!(matches!(marks.admit(frame("h", 5)), Admit::Nothing));
        assert!(matches!(marks.admit(frame("h", 6)), Admit::Nothing));
        let out = RefCell::new(Vec::new());
        marks.caught("h", 2, page("h", 3, 5), |e| {
            out.borrow_mut().push(offset(&e))
        });
        marks.release(|e| out.borrow_mut().push(offset(&e)));
        assert_eq!(*out.borrow(), [3, 4, 5, 6]);
        assert_eq!(delivered(&marks, frame("h", 7)), [7]);
    }

    #[test]
    fn a_log_that_started_over_is_not_read_and_its_frames_go_out() {
        let marks = Marks::default();
        marks.admit(frame("h", 40));
        marks.begin(|_| true);
        let other = Envelope::Channel {
            channel: "h".into(),
            frame: LoggedFrame::new("notify", json!({"channel": "h", "new": true})).frame(1),
            last: false,
        };
        marks.admit(other);
        let out = RefCell::new(Vec::new());
        marks.caught("h", 40, page("h", 1, 1), |e| {
            out.borrow_mut().push(offset(&e))
        });
        assert!(out.borrow().is_empty(), "behind the mark: not read");
        marks.release(|e| out.borrow_mut().push(offset(&e)));
        assert_eq!(*out.borrow(), [1], "the new log's frame");
    }

    #[test]
    fn frames_without_an_offset_are_never_held() {
        let marks = Marks::default();
        marks.begin(|_| true);
        let plain = Envelope::Channel {
            channel: "h".into(),
            frame: crate::protocol::frame::notification("presence.join", &json!({})),
            last: false,
        };
        assert!(matches!(marks.admit(plain), Admit::Deliver(_)));
        let out = RefCell::new(0);
        marks.release(|_| *out.borrow_mut() += 1);
        assert_eq!(*out.borrow(), 0);
    }
}
