//! Channels: subscribe, unsubscribe, publish, presence and history.

use super::pushes::notify;
use super::{
    Doc, count, described, log_page, map, object, paged, record, replayed, string, strings,
};
use crate::backend::ChannelMember;
use crate::protocol::error;

pub const SUBSCRIBE: Doc = Doc {
    summary: "Subscribe to channels",
    description: "The channel rules decide who may subscribe to what (`public:*` anyone, \
                  `user:<sub>` only that identity, `private:*` with a matching `channels` \
                  claim…). Subscribers receive `notify`, and `presence.join` / \
                  `presence.leave` on channels with presence. `recover {channel: offset}` \
                  replays, before the reply, what a channel with history logged after `offset`; \
                  live publications follow without gap or duplicate.",
    result: |_| {
        object(&[
            (
                "subscribed",
                described(strings(), "every channel asked for, sorted"),
            ),
            (
                "recovered?",
                described(
                    map(replayed()),
                    "per channel asked to recover: what the replay did",
                ),
            ),
        ])
    },
    errors: &[error::FORBIDDEN, error::LIMIT_EXCEEDED, error::UNAVAILABLE],
};

pub const UNSUBSCRIBE: Doc = Doc {
    summary: "Leave channels",
    description: "Implicit channels (`global`, `user:<sub>`, …) cannot be left.",
    result: |_| {
        object(&[(
            "unsubscribed",
            described(strings(), "those this connection was subscribed to"),
        )])
    },
    errors: &[],
};

pub const PUBLISH: Doc = Doc {
    summary: "Publish an event on a channel",
    description: "Subscribers receive `notify {channel, event, data, timestamp, offset?}`. \
                  Publishing to `conn:<connId>` reaches that one connection on whichever \
                  instance holds it. On a channel with history the publication is numbered \
                  (`offset`) and logged.",
    result: |_| {
        object(&[
            (
                "delivered",
                described(count(), "sockets it was queued to, on every instance"),
            ),
            ("offset?", described(count(), "on a channel with history")),
        ])
    },
    errors: &[error::FORBIDDEN, error::UNAVAILABLE],
};

pub const PRESENCE_GET: Doc = Doc {
    summary: "Members of a channel with presence, a page at a time",
    description: "Takes the right to subscribe to the channel.",
    result: |g| {
        paged(
            &[("channel", string())],
            "members",
            record::<ChannelMember>(g),
        )
    },
    errors: &[error::FORBIDDEN, error::UNAVAILABLE],
};

pub const HISTORY: Doc = Doc {
    summary: "A channel's logged publications",
    description: "For a channel whose rule keeps history: the publications after offset \
                  `since`, oldest first, as their `notify` params. Takes the right to \
                  subscribe to the channel.",
    result: |g| log_page(&[("channel", string())], notify(g)),
    errors: &[error::FORBIDDEN, error::UNAVAILABLE],
};
