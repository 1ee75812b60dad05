//! Channels: subscribe, unsubscribe, publish, presence and history. The
//! rules (rights, joining, publishing) are in [`crate::services::channels`].
//!
//! A rule with `history = N` logs the channel's publications: each
//! `notify` carries an `offset`, `history` reads the newest N, and
//! `subscribe` with `recover {channel: offset}` replays what a returning
//! subscriber missed before live delivery resumes (`services::replay`).

use super::Ctx;
use crate::protocol::RpcError;
use crate::services::channels::{
    history_of, join, leave, may_publish, may_subscribe, members_page, publish_event, validate_name,
};
use crate::services::page::Page;
use crate::services::{connections, replay};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsParams {
    /// The channels (with `channel`, at least one in all).
    #[serde(default)]
    channels: Vec<String>,
    /// One more channel.
    #[serde(default)]
    channel: Option<String>,
    /// Channel → the newest offset the client has: replay what it missed.
    #[serde(default)]
    recover: std::collections::BTreeMap<String, u64>,
    /// The epoch those offsets belong to (as a reply named it): when the
    /// backend lost its state since, the replay starts over with
    /// `complete: false, epochChanged: true`.
    #[serde(default)]
    recover_epoch: Option<String>,
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
    let live = ctx.app.live();
    let config: &crate::config::Config = &live;
    let recover = std::mem::take(&mut p.recover);
    let recover_epoch = p.recover_epoch.take();
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
    let implicit = connections::implicit_channels(&identity);
    let mut fresh = Vec::new();
    {
        let state = ctx.conn.state();
        for (i, name) in names.iter().enumerate() {
            validate_name(&format!("channels[{i}]"), name)?;
            may_subscribe(ctx.app, &identity, ctx.conn.id(), name, "subscribe to")?;
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
                let from = replay::From {
                    after,
                    epoch: recover_epoch.as_deref(),
                };
                let done = replay::replay(ctx.app, ctx.conn, name, from, keep, joined).await?;
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

#[derive(Deserialize, JsonSchema)]
pub struct PublishParams {
    channel: String,
    /// The event's name (default `message`).
    #[serde(default = "default_event")]
    event: String,
    /// Any JSON, delivered as is.
    #[serde(default)]
    data: Value,
}

fn default_event() -> String {
    "message".into()
}

pub async fn publish(ctx: &Ctx<'_>, p: PublishParams) -> Result<Value, RpcError> {
    let identity = ctx.identity()?;
    may_publish(ctx.app, &identity, ctx.conn.id(), &p.channel)?;
    let published = publish_event(ctx.app, &p.channel, &p.event, &p.data, ctx.answered).await?;
    Ok(published.to_json())
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryParams {
    channel: String,
    /// Publications after this offset (0: from the oldest kept).
    #[serde(default)]
    since: u64,
    /// Most publications returned: 1-1000 (default 100).
    limit: Option<usize>,
    /// The epoch `since` belongs to (as a reply named it): when the
    /// backend lost its state since, the log is read from its start, with
    /// `complete: false, epochChanged: true`.
    epoch: Option<String>,
}

/// The channel's logged publications after `since`, oldest first (as
/// their `notify` params). `complete` says nothing between `since` and
/// the first one returned is missing; `epoch` names the backend's
/// epoch the offsets belong to.
pub async fn history(ctx: &Ctx<'_>, p: HistoryParams) -> Result<Value, RpcError> {
    may_read(ctx, &p.channel, "read the history of")?;
    let keep = history_of(&ctx.app.live(), &p.channel)?;
    let head = json!({ "channel": p.channel });
    let from = replay::From {
        after: p.since,
        epoch: p.epoch.as_deref(),
    };
    replay::history(ctx.app, head, &p.channel, from, p.limit, keep, false).await
}

/// The caller's right to subscribe to `channel`, which reading it any
/// other way takes too.
fn may_read(ctx: &Ctx<'_>, channel: &str, action: &str) -> Result<(), RpcError> {
    may_subscribe(ctx.app, &*ctx.identity()?, ctx.conn.id(), channel, action)
}

#[derive(Deserialize, JsonSchema)]
pub struct PresenceParams {
    channel: String,
    #[serde(flatten)]
    page: Page,
}

pub async fn presence(ctx: &Ctx<'_>, p: PresenceParams) -> Result<Value, RpcError> {
    may_read(ctx, &p.channel, "see presence of")?;
    members_page(ctx.app, &p.channel, &p.page).await
}
