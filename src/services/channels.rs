//! Channel rules: who may subscribe to and publish on a channel, joining
//! and leaving (with presence), and publishing (routed, logged or plain).
//!
//! Rights come from the configured prefix rules ([`access_for`]); every
//! entry point (the `subscribe` / `publish` / `presence.get` / `history`
//! methods and the HTTP API) asks [`may_subscribe`] or [`may_publish`], so
//! they cannot disagree. A subscription is local first (the hub's index,
//! which subscribes the instance on the backend when it is the first),
//! then counted in the backend, where channels with presence also record
//! the member and announce `presence.join` / `presence.leave`.

use crate::app::App;
use crate::auth::Identity;
use crate::backend::{ChannelInfo, ChannelMember, LoggedFrame};
use crate::config::{Access, ChannelAccess, ChannelConfig};
use crate::conn::ConnHandle;
use crate::protocol::{RpcError, frame, names, now_ms};
use crate::services::page::Page;
use serde_json::{Value, json};

/// Longest accepted channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 256;

/// The rule that governs `channel`: first matching prefix, else the default.
pub fn access_for(config: &ChannelConfig, channel: &str) -> ChannelAccess {
    config
        .rules
        .iter()
        .find(|rule| {
            if rule.prefix.ends_with(':') || rule.prefix.ends_with('*') {
                channel.starts_with(rule.prefix.trim_end_matches('*'))
            } else {
                channel == rule.prefix
            }
        })
        .map_or(config.default, |rule| rule.access)
}

/// Client channel names: 1-256 bytes, no control characters or spaces,
/// and not starting with `$` (reserved for internal channels).
pub fn validate_name(field: &str, channel: &str) -> Result<(), RpcError> {
    let bad = channel.is_empty()
        || channel.len() > MAX_CHANNEL_LEN
        || channel.starts_with('$')
        || channel.chars().any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(RpcError::invalid_params(
            field,
            "channel names are 1-256 bytes without spaces or control characters and must not start with '$'",
        ));
    }
    Ok(())
}

/// How many publications `channel` keeps; -32602 when it keeps none.
pub fn history_of(config: &crate::config::Config, channel: &str) -> Result<usize, RpcError> {
    match access_for(&config.channels, channel).history {
        0 => Err(RpcError::invalid_params(
            "channel",
            format!("{channel} keeps no history"),
        )),
        keep => Ok(keep),
    }
}

/// Subscribe `conn` to `channel` (already authorised) and record it.
pub async fn join(app: &App, conn: &ConnHandle, channel: &str) -> Result<(), RpcError> {
    app.hub.subscribe_local(channel, conn).await?;
    conn.state().subscriptions.insert(channel.to_owned());
    let presence = access_for(&app.live.peek().channels, channel).presence
        && app.live.peek().channels.presence;
    let member = presence.then(|| member_of(conn)).flatten();
    app.channel_store()
        .channel_join(channel, conn.id(), member.clone())
        .await?;
    if let Some(member) = member {
        announce(app, channel, "presence.join", &member).await;
    }
    Ok(())
}

fn member_of(conn: &ConnHandle) -> Option<ChannelMember> {
    let state = conn.state();
    let identity = state.identity.as_ref()?;
    Some(ChannelMember {
        conn_id: conn.id().to_owned(),
        identity: identity.sub.clone(),
        client: state.client.clone(),
        joined_at: now_ms(),
    })
}

async fn announce(app: &App, channel: &str, event: &str, member: &ChannelMember) {
    let frame = member.event_frame(event, channel);
    if let Err(e) = app.bus().broadcast(channel, frame, false).await {
        tracing::warn!(%channel, error = %e, "presence event not published");
    }
}

/// Drop one explicit subscription (the caller already removed it from the
/// connection's state).
pub async fn leave(app: &App, conn: &ConnHandle, channel: &str) {
    app.hub.unsubscribe_local(channel, conn.id()).await;
    if let Err(e) = app.channel_store().channel_leave(channel, conn.id()).await {
        tracing::warn!(%channel, error = %e, "channel leave failed");
    }
    let presence = access_for(&app.live.peek().channels, channel).presence
        && app.live.peek().channels.presence;
    if presence && let Some(mut member) = member_of(conn) {
        member.joined_at = now_ms();
        announce(app, channel, "presence.leave", &member).await;
    }
}

/// Re-record a connection's explicit subscriptions (after the backend lost
/// them); no presence events are sent again.
pub async fn reassert(app: &App, conn: &ConnHandle) {
    let channels: Vec<String> = conn.state().subscriptions.iter().cloned().collect();
    for channel in channels {
        let presence = access_for(&app.live.peek().channels, &channel).presence
            && app.live.peek().channels.presence;
        let member = presence.then(|| member_of(conn)).flatten();
        if let Err(e) = app
            .channel_store()
            .channel_join(&channel, conn.id(), member)
            .await
        {
            tracing::warn!(%channel, error = %e, "re-asserting a subscription failed");
        }
    }
}

/// What a publication reached.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// Sockets subscribed (0 when not counted).
    pub delivered: usize,
    /// Its offset, on a channel with history.
    pub offset: Option<u64>,
}

/// The channels of `all` that `identity` may see: client channels (not
/// internal ones) it may subscribe to. An HTTP listing has no connection.
pub fn visible(app: &App, identity: &Identity, all: Vec<ChannelInfo>) -> Vec<ChannelInfo> {
    all.into_iter()
        .filter(|c| may_subscribe(app, identity, "", &c.channel, "list").is_ok())
        .collect()
}

/// Publish a `notify` event (already authorised); shared by `publish`, the
/// HTTP API and webhooks.
/// Counts the sockets reached when `count` is asked for (0 otherwise: the
/// count costs a read of every instance's interest in the channel). On a
/// channel with history the event is numbered and logged as it is
/// published.
pub async fn publish_event(
    app: &App,
    channel: &str,
    event: &str,
    data: &Value,
    count: bool,
) -> Result<Published, RpcError> {
    let params = json!({ "channel": channel, "event": event, "data": data, "timestamp": now_ms() });
    let plain = |delivered| Published {
        delivered,
        offset: None,
    };
    if let Some(conn_id) = channel.strip_prefix(names::CONN_PREFIX) {
        // One connection: targeted delivery to whichever instance holds it.
        let envelope = crate::backend::Envelope::Conn {
            conn_id: conn_id.to_owned(),
            frame: frame::notification("notify", &params),
        };
        let reached = app.bus().send_to_conn(envelope).await?;
        return Ok(plain(usize::from(reached)));
    }
    let keep = access_for(&app.live.peek().channels, channel).history;
    if keep > 0 {
        let logged = LoggedFrame::new("notify", params);
        let (offset, delivered) = app
            .channel_log()
            .log_publish(channel, &logged, keep)
            .await?;
        return Ok(Published {
            delivered,
            offset: Some(offset),
        });
    }
    let frame = frame::notification("notify", &params);
    if count {
        Ok(plain(app.bus().publish(channel, frame, false).await?))
    } else {
        app.bus().broadcast(channel, frame, false).await?;
        Ok(plain(0))
    }
}

/// The right to subscribe to `channel`, which reading it any other way
/// (presence, history) takes too; `action` words the refusal. `conn_id` is
/// the asking connection (empty over HTTP: no `conn:` channel is its own).
pub fn may_subscribe(
    app: &App,
    identity: &Identity,
    conn_id: &str,
    channel: &str,
    action: &str,
) -> Result<(), RpcError> {
    may(
        app,
        identity,
        conn_id,
        channel,
        |rule| rule.subscribe,
        action,
    )
}

/// The right to publish on `channel` (see [`may_subscribe`]).
pub fn may_publish(
    app: &App,
    identity: &Identity,
    conn_id: &str,
    channel: &str,
) -> Result<(), RpcError> {
    may(
        app,
        identity,
        conn_id,
        channel,
        |rule| rule.publish,
        "publish to",
    )
}

/// Whether `identity` holds the `right` of `channel`'s rule.
fn may(
    app: &App,
    identity: &Identity,
    conn_id: &str,
    channel: &str,
    right: fn(&ChannelAccess) -> Access,
    action: &str,
) -> Result<(), RpcError> {
    validate_name("channel", channel)?;
    let rule = access_for(&app.live.peek().channels, channel);
    if !identity.check_access(right(&rule), channel, conn_id) {
        return Err(RpcError::forbidden(format!("may not {action} {channel}")));
    }
    Ok(())
}

/// One page of a channel's presence members (`presence.get` and
/// `GET /api/presence/{channel}`).
pub async fn members_page(app: &App, channel: &str, page: &Page) -> Result<Value, RpcError> {
    let (members, next) = app
        .channel_store()
        .channel_members(channel, page.cursor(), page.limit()?)
        .await?;
    Ok(json!({
        "channel": channel,
        "count": members.len(),
        "members": members,
        "nextCursor": next,
    }))
}

impl Published {
    /// `{delivered, offset?}`.
    pub fn to_json(self) -> Value {
        let mut reply = json!({ "delivered": self.delivered });
        if let Some(offset) = self.offset {
            reply["offset"] = json!(offset);
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Access;

    #[test]
    fn rules_match_by_prefix_or_exact_name() {
        let config = ChannelConfig::default();
        assert_eq!(
            access_for(&config, "public:news").subscribe,
            Access::Authenticated
        );
        assert_eq!(access_for(&config, "user:alice").subscribe, Access::Owner);
        assert_eq!(access_for(&config, "approval").subscribe, Access::Approvals);
        // "approvals" is not the exact name "approval": default rule.
        assert_eq!(access_for(&config, "approvals").publish, Access::Write);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("c", "public:a").is_ok());
        for bad in ["", "$session:x", "a b", "a\nb"] {
            assert!(validate_name("c", bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("c", &"x".repeat(257)).is_err());
    }
}
