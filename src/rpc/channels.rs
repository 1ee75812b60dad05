//! Channels: subscribe, unsubscribe, publish and presence.
//!
//! Rights come from the configured prefix rules ([`access_for`]). A
//! subscription is local first (the hub's index, which subscribes the
//! instance on the backend when it is the first), then counted in the
//! backend, where channels with presence also record the member and
//! announce `presence.join` / `presence.leave` to the channel.

use super::Ctx;
use super::page::Page;
use crate::backend::ChannelMember;
use crate::config::{ChannelAccess, ChannelConfig};
use crate::conn::ConnHandle;
use crate::protocol::{RpcError, frame, now_ms};
use crate::server::App;
use serde::Deserialize;
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

#[derive(Deserialize)]
pub struct ChannelsParams {
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    channel: Option<String>,
}

impl ChannelsParams {
    fn names(self) -> Result<Vec<String>, RpcError> {
        let mut names = self.channels;
        names.extend(self.channel);
        if names.is_empty() {
            return Err(RpcError::invalid_params("channels", "at least one channel"));
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }
}

pub async fn subscribe(ctx: &Ctx<'_>, p: ChannelsParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let config = &ctx.app.config;
    let names = p.names()?;
    let implicit = crate::conn::implicit_channels(&identity);
    let mut fresh = Vec::new();
    {
        let state = ctx.conn.state();
        for (i, name) in names.iter().enumerate() {
            validate_name(&format!("channels[{i}]"), name)?;
            let rule = access_for(&config.channels, name);
            if !identity.check_access(rule.subscribe, name, ctx.conn.id()) {
                return Err(RpcError::forbidden(format!("may not subscribe to {name}")));
            }
            if !state.subscriptions.contains(name) && !implicit.contains(name) {
                fresh.push(name.clone());
            }
        }
        let max = config.limits.max_subscriptions;
        if state.subscriptions.len() + fresh.len() > max {
            return Err(RpcError::limit("subscriptions per connection", max));
        }
    }
    for name in &fresh {
        join(ctx.app, ctx.conn, name).await?;
    }
    Ok(json!({ "subscribed": names }))
}

async fn join(app: &App, conn: &ConnHandle, channel: &str) -> Result<(), RpcError> {
    app.hub.subscribe_local(channel, conn).await?;
    conn.state().subscriptions.insert(channel.to_owned());
    let presence =
        access_for(&app.config.channels, channel).presence && app.config.channels.presence;
    let member = presence.then(|| member_of(conn)).flatten();
    app.backend
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
    if let Err(e) = app.backend.broadcast(channel, frame, false).await {
        tracing::warn!(%channel, error = %e, "presence event not published");
    }
}

pub async fn unsubscribe(ctx: &Ctx<'_>, p: ChannelsParams) -> Result<Value, RpcError> {
    let names = p.names()?;
    let mut left = Vec::new();
    for name in names {
        let held = ctx.conn.state().subscriptions.remove(&name);
        if held {
            leave(ctx.app, ctx.conn, &name).await;
            left.push(name);
        }
    }
    Ok(json!({ "unsubscribed": left }))
}

/// Drop one explicit subscription (the caller already removed it from the
/// connection's state).
pub async fn leave(app: &App, conn: &ConnHandle, channel: &str) {
    app.hub.unsubscribe_local(channel, conn.id()).await;
    if let Err(e) = app.backend.channel_leave(channel, conn.id()).await {
        tracing::warn!(%channel, error = %e, "channel leave failed");
    }
    let presence =
        access_for(&app.config.channels, channel).presence && app.config.channels.presence;
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
        let presence =
            access_for(&app.config.channels, &channel).presence && app.config.channels.presence;
        let member = presence.then(|| member_of(conn)).flatten();
        if let Err(e) = app.backend.channel_join(&channel, conn.id(), member).await {
            tracing::warn!(%channel, error = %e, "re-asserting a subscription failed");
        }
    }
}

#[derive(Deserialize)]
pub struct PublishParams {
    channel: String,
    #[serde(default = "default_event")]
    event: String,
    #[serde(default)]
    data: Value,
}

fn default_event() -> String {
    "message".into()
}

pub async fn publish(ctx: &Ctx<'_>, p: PublishParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    validate_name("channel", &p.channel)?;
    let rule = access_for(&ctx.app.config.channels, &p.channel);
    if !identity.check_access(rule.publish, &p.channel, ctx.conn.id()) {
        return Err(RpcError::forbidden(format!(
            "may not publish to {}",
            p.channel
        )));
    }
    let delivered = publish_event(ctx.app, &p.channel, &p.event, &p.data, ctx.answered).await?;
    Ok(json!({ "delivered": delivered }))
}

/// Publish a `notify` event; shared by `publish` and the HTTP API.
/// Returns the sockets reached when `count` is asked for (0 otherwise: the
/// count costs a read of every instance's interest in the channel).
pub async fn publish_event(
    app: &App,
    channel: &str,
    event: &str,
    data: &Value,
    count: bool,
) -> Result<usize, RpcError> {
    let frame = frame::notification(
        "notify",
        &json!({ "channel": channel, "event": event, "data": data, "timestamp": now_ms() }),
    );
    if let Some(conn_id) = channel.strip_prefix("conn:") {
        // One connection: targeted delivery to whichever instance holds it.
        let envelope = crate::backend::Envelope::Conn {
            conn_id: conn_id.to_owned(),
            frame,
        };
        return Ok(usize::from(app.backend.send_to_conn(envelope).await?));
    }
    if count {
        Ok(app.backend.publish(channel, frame, false).await?)
    } else {
        app.backend.broadcast(channel, frame, false).await?;
        Ok(0)
    }
}

#[derive(Deserialize)]
pub struct PresenceParams {
    channel: String,
    #[serde(flatten)]
    page: Page,
}

pub async fn presence(ctx: &Ctx<'_>, p: PresenceParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    validate_name("channel", &p.channel)?;
    let rule = access_for(&ctx.app.config.channels, &p.channel);
    if !identity.check_access(rule.subscribe, &p.channel, ctx.conn.id()) {
        return Err(RpcError::forbidden(format!(
            "may not see presence of {}",
            p.channel
        )));
    }
    members_page(ctx.app, &p.channel, &p.page).await
}

/// One page of a channel's presence members (`presence.get` and
/// `GET /api/presence/{channel}`).
pub async fn members_page(app: &App, channel: &str, page: &Page) -> Result<Value, RpcError> {
    let (members, next) = app
        .backend
        .channel_members(channel, page.cursor(), page.limit()?)
        .await?;
    Ok(json!({
        "channel": channel,
        "count": members.len(),
        "members": members,
        "nextCursor": next,
    }))
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
