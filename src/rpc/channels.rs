//! Channels: subscribe, unsubscribe, publish, presence and history.
//!
//! Rights come from the configured prefix rules ([`access_for`]). A
//! subscription is local first (the hub's index, which subscribes the
//! instance on the backend when it is the first), then counted in the
//! backend, where channels with presence also record the member and
//! announce `presence.join` / `presence.leave` to the channel.
//!
//! A rule with `history = N` logs the channel's publications: each
//! `notify` carries an `offset`, `history` reads the newest N, and
//! `subscribe` with `recover {channel: offset}` replays what a returning
//! subscriber missed before live delivery resumes (`rpc::replay`).

use super::Ctx;
use super::page::Page;
use crate::backend::{ChannelMember, LoggedFrame};
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
    /// Channel → the newest offset the client has: replay what it missed.
    #[serde(default)]
    recover: std::collections::BTreeMap<String, u64>,
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

pub async fn subscribe(ctx: &Ctx<'_>, mut p: ChannelsParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    let config = &ctx.app.config;
    let recover = std::mem::take(&mut p.recover);
    let names = p.names()?;
    for channel in recover.keys() {
        if !names.contains(channel) {
            return Err(RpcError::invalid_params(
                "recover",
                format!("{channel} is not among the channels subscribed"),
            ));
        }
        history_of(config, channel)?;
    }
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
    let mut recovered = serde_json::Map::new();
    for name in &names {
        let is_fresh = fresh.contains(name);
        match recover.get(name) {
            Some(&after) => {
                let keep = history_of(config, name)?;
                let joined = async {
                    if is_fresh {
                        join(ctx.app, ctx.conn, name).await?;
                    }
                    Ok(())
                };
                let done =
                    super::replay::replay(ctx.app, ctx.conn, name, after, keep, joined).await?;
                recovered.insert(name.clone(), done.to_json());
            }
            None if is_fresh => join(ctx.app, ctx.conn, name).await?,
            None => {}
        }
    }
    if recovered.is_empty() {
        return Ok(json!({ "subscribed": names }));
    }
    Ok(json!({ "subscribed": names, "recovered": recovered }))
}

/// How many publications `channel` keeps; -32602 when it keeps none.
fn history_of(config: &crate::config::Config, channel: &str) -> Result<usize, RpcError> {
    match access_for(&config.channels, channel).history {
        0 => Err(RpcError::invalid_params(
            "channel",
            format!("{channel} keeps no history"),
        )),
        keep => Ok(keep),
    }
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
    let published = publish_event(ctx.app, &p.channel, &p.event, &p.data, ctx.answered).await?;
    Ok(published.to_json())
}

/// What a publication reached.
#[derive(Debug, Clone, Copy)]
pub struct Published {
    /// Sockets subscribed (0 when not counted).
    pub delivered: usize,
    /// Its offset, on a channel with history.
    pub offset: Option<u64>,
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

/// Publish a `notify` event; shared by `publish` and the HTTP API.
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
    if let Some(conn_id) = channel.strip_prefix("conn:") {
        // One connection: targeted delivery to whichever instance holds it.
        let envelope = crate::backend::Envelope::Conn {
            conn_id: conn_id.to_owned(),
            frame: frame::notification("notify", &params),
        };
        let reached = app.backend.send_to_conn(envelope).await?;
        return Ok(plain(usize::from(reached)));
    }
    let keep = access_for(&app.config.channels, channel).history;
    if keep > 0 {
        let logged = LoggedFrame::new("notify", params);
        let (offset, delivered) = app.backend.log_publish(channel, &logged, keep).await?;
        return Ok(Published {
            delivered,
            offset: Some(offset),
        });
    }
    let frame = frame::notification("notify", &params);
    if count {
        Ok(plain(app.backend.publish(channel, frame, false).await?))
    } else {
        app.backend.broadcast(channel, frame, false).await?;
        Ok(plain(0))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryParams {
    channel: String,
    /// Publications after this offset (0: from the oldest kept).
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

/// The channel's logged publications after `since`, oldest first (as
/// their `notify` params). `complete` says nothing between `since` and
/// the first one returned is missing.
pub async fn history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    may_subscribe(ctx, &p.channel, "read the history of")?;
    let keep = history_of(&ctx.app.config, &p.channel)?;
    let head = json!({ "channel": p.channel });
    super::replay::history(ctx.app, head, &p.channel, p.since, p.limit, keep, false).await
}

/// The caller's right to subscribe to `channel`, which reading it any
/// other way (presence, history) takes too; `action` words the refusal.
fn may_subscribe(ctx: &Ctx<'_>, channel: &str, action: &str) -> Result<(), RpcError> {
    let identity = ctx.identity()?;
    validate_name("channel", channel)?;
    let rule = access_for(&ctx.app.config.channels, channel);
    if !identity.check_access(rule.subscribe, channel, ctx.conn.id()) {
        return Err(RpcError::forbidden(format!("may not {action} {channel}")));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct PresenceParams {
    channel: String,
    #[serde(flatten)]
    page: Page,
}

pub async fn presence(ctx: &Ctx<'_>, p: PresenceParams) -> Result<Value, RpcError> {
    may_subscribe(ctx, &p.channel, "see presence of")?;
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
