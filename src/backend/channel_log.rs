//! A channel's numbered log: what a session's `session.send` delivers (on
//! its channel `$session:<id>`) and what `publish` delivers on a channel
//! with history, what `session.history` / `history` read, and what a
//! resuming owner or a recovering subscriber is replayed.
//!
//! Every logged frame carries an `offset`: 1, 2, 3… per channel, given by
//! the backend in the same atomic step that appends the frame to the
//! channel's log (the newest `keep` are kept) and publishes it, so
//! receivers on every instance see offsets in increasing order and a
//! reader of the log never finds a hole that was delivered live.
//!
//! The backend numbers the frame without parsing JSON: the caller builds
//! [`LoggedFrame`], whose frame is `head` + offset + `tail` (the offset is
//! the params' last field), and a Lua script splices the number in.
//! [`logged_offset`] reads it back from a frame the same way.

use super::BackendResult;
use crate::protocol::Frame;
use async_trait::async_trait;
use serde_json::Value;

/// The notifications that are logged, by method: a session's own events
/// and its agent's run events (both on the session's log), and channel
/// publications.
const LOGGED_METHODS: [&str; 3] = ["session.event", "agent.event", "notify"];
/// The params' last field.
const OFFSET_FIELD: &str = r#""offset":"#;
/// How every notification frame begins (`frame::notification`), up to its
/// method's name; `","params":` follows the name.
const FRAME_START: &str = r#"{"jsonrpc":"2.0","method":""#;
const PARAMS_START: &str = r#"","params":"#;

/// Numbered channel logs: history, resume, recovery.
#[async_trait]
pub trait ChannelLog: Send + Sync + 'static {
    /// Number `frame` with `channel`'s next offset, append it to the
    /// channel's log (keeping the newest `keep`) and deliver it on the
    /// channel to every instance, in one atomic step: receivers everywhere
    /// see offsets in increasing order, and a frame is in the log before
    /// anyone can see it live. Returns the offset and the sockets
    /// subscribed to the channel cluster-wide.
    async fn log_publish(
        &self,
        channel: &str,
        frame: &LoggedFrame,
        keep: usize,
    ) -> BackendResult<(u64, usize)>;
    /// The logged frames of `channel` after offset `after`, oldest first,
    /// at most `limit`, and the newest offset given.
    async fn channel_log(
        &self,
        channel: &str,
        after: u64,
        limit: usize,
    ) -> BackendResult<EventPage>;
    /// Make `channel`'s next offset come after `offset` (a session written
    /// back after the backend lost its state keeps numbering where its
    /// members left off).
    async fn advance_log(&self, channel: &str, offset: u64) -> BackendResult<()>;
}

/// A logged notification waiting for its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedFrame {
    /// Everything before the offset's digits.
    pub head: String,
    /// Everything after them.
    pub tail: &'static str,
}

impl LoggedFrame {
    /// The notification `method` (one of [`LOGGED_METHODS`]) for `params`
    /// (an object; its own `offset`, if any, is replaced; anything else is
    /// wrapped as `{"data": params}`).
    pub fn new(method: &str, params: Value) -> Self {
        let mut params = match params {
            Value::Object(map) => map,
            other => serde_json::Map::from_iter([("data".to_owned(), other)]),
        };
        params.remove("offset");
        let mut body = Value::Object(params).to_string();
        body.pop(); // the closing brace; the offset goes last
        let comma = if body.len() > 1 { "," } else { "" };
        Self {
            head: format!("{FRAME_START}{method}{PARAMS_START}{body}{comma}{OFFSET_FIELD}"),
            tail: "}}",
        }
    }

    /// The frame numbered `offset`.
    pub fn frame(&self, offset: u64) -> Frame {
        format!("{}{offset}{}", self.head, self.tail).into()
    }
}

/// The offset of a frame built by [`LoggedFrame`]; `None` for any other
/// frame (a frame of a logged method without an offset included).
pub fn logged_offset(frame: &str) -> Option<u64> {
    let (method, _) = frame.strip_prefix(FRAME_START)?.split_once(PARAMS_START)?;
    if !LOGGED_METHODS.contains(&method) {
        return None;
    }
    let (_, digits) = frame.strip_suffix("}}")?.rsplit_once(OFFSET_FIELD)?;
    digits.parse().ok()
}

/// A stretch of a session's log: the events after some offset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    /// `(offset, frame)`, oldest first, consecutive.
    pub events: Vec<(u64, Frame)>,
    /// The newest offset given so far (0: none yet).
    pub latest: u64,
}

impl EventPage {
    /// Whether the page starts right after `after`: nothing between was
    /// trimmed from the log (or lost with the backend's state), and
    /// `after` is not from a numbering the log no longer has.
    pub fn continues(&self, after: u64) -> bool {
        after <= self.latest
            && match self.events.first() {
                Some((first, _)) => *first == after.saturating_add(1),
                None => after == self.latest,
            }
    }

    /// The params of each event, for `session.history` and `history`;
    /// `with_method` adds the notification's `method` to each (a session's
    /// log holds `session.event`s and `agent.event`s).
    pub fn params(&self, with_method: bool) -> Vec<Value> {
        self.events
            .iter()
            .filter_map(|(_, frame)| {
                let mut value: Value = serde_json::from_str(frame.as_str()).ok()?;
                let mut params = value.get_mut("params")?.take();
                if with_method {
                    params["method"] = value.get_mut("method")?.take();
                }
                Some(params)
            })
            .collect()
    }
}

/// Take the log's `(offset, frame)` entries after `after`, at most
/// `limit`, from a log whose oldest kept entry is `first` (memory and
/// Redis share this arithmetic).
pub fn window(len: usize, first: u64, after: u64, limit: usize) -> std::ops::Range<usize> {
    let start = after
        .saturating_add(1)
        .saturating_sub(first)
        .min(len as u64) as usize;
    start..(start + limit).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame;
    use serde_json::json;

    #[test]
    fn the_frame_is_the_notification_with_the_offset_last() {
        let params = json!({"sessionId": "s", "event": "e", "data": {"offset": 9}});
        let event = LoggedFrame::new("session.event", params.clone());
        let framed = event.frame(42);
        let value: Value = serde_json::from_str(framed.as_str()).unwrap();
        let mut expected = params.clone();
        expected["offset"] = json!(42);
        assert_eq!(value["params"], expected);
        assert_eq!(value["method"], "session.event");
        for method in LOGGED_METHODS {
            let plain = frame::notification(method, &params);
            let (named, _) = plain.as_str()[FRAME_START.len()..]
                .split_once(PARAMS_START)
                .unwrap();
            assert_eq!(named, method, "{plain}");
        }
        // The data's own "offset" is not the event's.
        assert_eq!(logged_offset(framed.as_str()), Some(42));
    }

    #[test]
    fn odd_params_still_make_valid_frames() {
        for params in [json!({}), json!("text"), json!({"offset": 3, "a": 1})] {
            let framed = LoggedFrame::new("notify", params.clone()).frame(7);
            let value: Value = serde_json::from_str(framed.as_str()).unwrap();
            assert_eq!(value["params"]["offset"], 7, "{params}");
            assert_eq!(logged_offset(framed.as_str()), Some(7));
        }
        let other = frame::notification("session.updated", &json!({"offset": 1}));
        assert_eq!(logged_offset(other.as_str()), None);
        // A notification without an offset, whatever its data holds.
        let plain = frame::notification(
            "notify",
            &json!({"channel": "c", "data": {"offset": 5}, "event": "e"}),
        );
        assert_eq!(logged_offset(plain.as_str()), None);
    }

    #[test]
    fn a_page_continues_only_without_a_hole() {
        let page = |offsets: &[u64], latest| EventPage {
            events: offsets
                .iter()
                .map(|o| (*o, Frame::from(String::new())))
                .collect(),
            latest,
        };
        assert!(page(&[4, 5], 5).continues(3));
        assert!(!page(&[5], 5).continues(3), "4 was trimmed");
        assert!(page(&[], 5).continues(5));
        assert!(!page(&[], 5).continues(2), "3..5 were trimmed");
        assert!(!page(&[], 0).continues(8), "numbering restarted");
        assert!(!page(&[], 5).continues(u64::MAX));
    }

    #[test]
    fn windows_follow_the_kept_entries() {
        // Entries 11..=20 kept (len 10, first 11).
        assert_eq!(window(10, 11, 0, 100), 0..10);
        assert_eq!(window(10, 11, 14, 100), 4..10);
        assert_eq!(window(10, 11, 14, 3), 4..7);
        assert_eq!(window(10, 11, 20, 100), 10..10);
        assert_eq!(window(10, 11, 99, 100), 10..10);
        assert_eq!(window(0, 1, 0, 100), 0..0);
        // Any offset a client sends is safe.
        assert_eq!(window(10, 11, u64::MAX, 100), 10..10);
    }
}
