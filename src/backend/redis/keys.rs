//! The Redis key and channel schema (documented in `docs/redis.md`).
//!
//! Every multi-key structure shares the hash tag `{<prefix>}` so Lua scripts
//! that touch several of them run on one Redis Cluster slot. Rate-limit
//! windows are single-key and carry their own tag so they spread over
//! shards. Pub/sub channels are not keys and carry no tag.

/// Builds every key and channel name from the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// `<prefix>:{<prefix>}` — the shared-slot stem.
    stem: String,
    /// The two names every routed call passes to the route script, built
    /// once.
    owners: String,
    inbox_prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let stem = format!("{prefix}:{{{prefix}}}");
        Self {
            prefix: prefix.to_owned(),
            owners: format!("{stem}:owners"),
            inbox_prefix: format!("{prefix}:inbox:"),
            stem,
        }
    }

    /// Hash: instance id → JSON `InstanceInfo`.
    pub fn instances(&self) -> String {
        format!("{}:instances", self.stem)
    }
    /// String with TTL `alive_ttl`: the instance's generation while alive.
    pub fn alive(&self, instance: &str) -> String {
        format!("{}:alive:{instance}", self.stem)
    }
    /// String, no TTL: a random token naming the lifetime of the shared
    /// state; when it is gone or changed, Redis lost everything.
    pub fn epoch(&self) -> String {
        format!("{}:epoch", self.stem)
    }
    /// String, no TTL: the primaries' replication ids the epoch was taken
    /// under; a different set means a failover or a restart from disk.
    pub fn epoch_history(&self) -> String {
        format!("{}:epoch:history", self.stem)
    }
    /// Hash: conn id → JSON `PresenceEntry`.
    pub fn conns(&self) -> String {
        format!("{}:conns", self.stem)
    }
    /// Set: conn ids whose presence entry has role `"node"` (counted with
    /// `SCARD`, so counts never read `conns`).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.stem)
    }
    /// Hash: conn id → instance id holding it.
    pub fn owners(&self) -> String {
        self.owners.clone()
    }
    /// Hash: conn id → presence member JSON (or "") of a channel.
    pub fn subscribers(&self, channel: &str) -> String {
        format!("{}:subs:{channel}", self.stem)
    }
    /// Hash: channel → explicit subscriber count.
    pub fn channel_index(&self) -> String {
        format!("{}:channels", self.stem)
    }
    /// Set: channels a connection joined (to reap them).
    pub fn conn_channels(&self, conn: &str) -> String {
        format!("{}:cchans:{conn}", self.stem)
    }
    /// Hash: instance id → local socket count subscribed to a channel.
    pub fn interest(&self, channel: &str) -> String {
        format!("{}:interest:{channel}", self.stem)
    }
    /// Set: channels an instance reported interest in (to reap them).
    pub fn instance_channels(&self, instance: &str) -> String {
        format!("{}:ichans:{instance}", self.stem)
    }
    /// Hash {data, rev}: one session.
    pub fn session(&self, id: &str) -> String {
        format!("{}:session:{id}", self.stem)
    }
    /// Set: every session id.
    pub fn session_index(&self) -> String {
        format!("{}:sessions", self.stem)
    }
    /// Set: sessions a connection owns.
    pub fn owned(&self, conn: &str) -> String {
        format!("{}:owned:{conn}", self.stem)
    }
    /// Set: sessions a connection is a member of.
    pub fn member_of(&self, conn: &str) -> String {
        format!("{}:memberof:{conn}", self.stem)
    }
    /// Sorted set: detached session id → detached-at ms.
    pub fn detached(&self) -> String {
        format!("{}:detached", self.stem)
    }
    /// Hash: agent id → JSON `AgentEntry`.
    pub fn agents(&self) -> String {
        format!("{}:agents", self.stem)
    }
    /// Hash: session id → JSON `RunRecord` (its latest run).
    pub fn runs(&self) -> String {
        format!("{}:runs", self.stem)
    }
    /// Set: sessions with a running run started by `caller`.
    pub fn running(&self, caller: &str) -> String {
        format!("{}:running:{caller}", self.stem)
    }
    /// List with TTL: a session's chat history (JSON entries).
    pub fn history(&self, session: &str) -> String {
        format!("{}:history:{{{session}}}", self.prefix)
    }
    /// String: a channel's newest log offset. Tagged like the channel's
    /// topic, so one script numbers, logs and publishes a frame on one
    /// Redis Cluster shard.
    pub fn log_offset(&self, channel: &str) -> String {
        format!("{}:offset:{{{channel}}}", self.prefix)
    }
    /// List: a channel's newest logged frames (whole notifications).
    pub fn log(&self, channel: &str) -> String {
        format!("{}:log:{{{channel}}}", self.prefix)
    }
    /// String with TTL: one approval (JSON `ApprovalRecord`).
    pub fn approval(&self, id: &str) -> String {
        format!("{}:approval:{id}", self.stem)
    }
    /// List with TTL: ids of approvals decided while identity `sub` had no
    /// connection, oldest first.
    pub fn approvals_away(&self, sub: &str) -> String {
        format!("{}:approvals:away:{sub}", self.stem)
    }
    /// Sorted set: pending approval id → created-at ms.
    pub fn approvals_pending(&self) -> String {
        format!("{}:approvals:pending", self.stem)
    }
    /// List: decided approvals, newest first (the audit trail).
    pub fn approvals_audit(&self) -> String {
        format!("{}:approvals:audit", self.stem)
    }
    /// String (TTL while pending, rejected or revoked): one device (JSON
    /// record with its token hashes and revision).
    pub fn device(&self, id: &str) -> String {
        format!("{}:device:{id}", self.stem)
    }
    /// Sorted set: every device id → first request ms.
    pub fn devices(&self) -> String {
        format!("{}:devices", self.stem)
    }
    /// Sorted set: pending device id → expiry ms.
    pub fn devices_pending(&self) -> String {
        format!("{}:devices:pending", self.stem)
    }
    /// String (TTL for a rotated-out token): SHA-256 of a device token →
    /// device id.
    pub fn device_token(&self, hash: &str) -> String {
        format!("{}:devices:token:{hash}", self.stem)
    }
    /// Hash: device id → last authentication ms.
    pub fn devices_seen(&self) -> String {
        format!("{}:devices:seen", self.stem)
    }
    /// List: the devices' audit trail (JSON events), newest first.
    pub fn devices_audit(&self) -> String {
        format!("{}:devices:audit", self.stem)
    }
    /// Hash: cron job id → JSON `CronJob`. Cron keys share their own
    /// hash tag, so one script touches a job, its tick and its history.
    pub fn cron_jobs(&self) -> String {
        format!("{}:cron:{{{}:cron}}:jobs", self.prefix, self.prefix)
    }
    /// Hash: enabled cron job id → its due tick (ms).
    pub fn cron_due(&self) -> String {
        format!("{}:cron:{{{}:cron}}:due", self.prefix, self.prefix)
    }
    /// String: counter moved on every change to a cron job.
    pub fn cron_version(&self) -> String {
        format!("{}:cron:{{{}:cron}}:version", self.prefix, self.prefix)
    }
    /// Hash: `<job>@<tick>` → JSON `CronClaim`, for each tick claimed and
    /// not yet recorded.
    pub fn cron_claims(&self) -> String {
        format!("{}:cron:{{{}:cron}}:claims", self.prefix, self.prefix)
    }
    /// List: a cron job's firings, newest first (JSON `CronRun`).
    pub fn cron_runs(&self, id: &str) -> String {
        format!("{}:cron:{{{}:cron}}:runs:{id}", self.prefix, self.prefix)
    }
    /// Hash: agent id → JSON `AgentDefinition` (its version inside).
    pub fn agent_defs(&self) -> String {
        format!("{}:agentdefs", self.stem)
    }
    /// String with TTL (the idle time): an MCP session (JSON).
    pub fn mcp_session(&self, id: &str) -> String {
        format!("{}:mcp:session:{id}", self.prefix)
    }
    /// String with TTL: an idempotency marker or result.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{{{key}}}", self.prefix)
    }
    /// String with TTL: the reaper lock.
    pub fn reaper_lock(&self) -> String {
        format!("{}:reaper", self.stem)
    }
    /// Sorted set: one sliding window.
    pub fn rate(&self, key: &str) -> String {
        format!("{}:rl:{{{key}}}", self.prefix)
    }
    /// String, TTL the window: the hits in [`Keys::rate`]'s window (the
    /// same hash tag, so the same slot).
    pub fn rate_total(&self, key: &str) -> String {
        format!("{}:rl:{{{key}}}:n", self.prefix)
    }

    /// Pub/sub: fan-out of a channel. Hash-tagged by the channel so that on
    /// Redis Cluster (sharded pub/sub) topics spread over the shards.
    pub fn channel_topic(&self, channel: &str) -> String {
        format!("{}:ch:{{{channel}}}", self.prefix)
    }
    /// The channel a topic belongs to, if it is a channel topic.
    pub fn channel_of_topic<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(&self.prefix)?
            .strip_prefix(":ch:{")?
            .strip_suffix('}')
    }
    /// Pub/sub: an instance's inbox.
    pub fn inbox(&self, instance: &str) -> String {
        format!("{}:inbox:{instance}", self.prefix)
    }
    /// Prefix of inbox channels (the Lua router appends the owner).
    pub fn inbox_prefix(&self) -> String {
        self.inbox_prefix.clone()
    }
    /// Hash: the runtime config document (`version`, `overrides` JSON,
    /// `updatedAt`). Written only by the compare-and-set script.
    pub fn config(&self) -> String {
        format!("{}:config", self.stem)
    }
    /// List: runtime config changes, newest first (capped).
    pub fn config_history(&self) -> String {
        format!("{}:config:history", self.stem)
    }
    /// Pub/sub channel announcing a new runtime config version.
    pub fn config_topic(&self) -> String {
        format!("{}:config:changed", self.prefix)
    }
    /// Pub/sub pattern of external notifications.
    pub fn notify_pattern(&self) -> String {
        format!("{}:notify:*", self.prefix)
    }
    /// The channel an external notification topic names, if `topic` is one
    /// (read per pub/sub message: nothing is built to compare).
    pub fn notify_channel_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&self.prefix)?.strip_prefix(":notify:")
    }
    /// Whether `topic` is [`Keys::config_topic`] (read per pub/sub message).
    pub fn is_config_topic(&self, topic: &str) -> bool {
        topic.strip_prefix(&self.prefix) == Some(":config:changed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_keys_share_one_hash_tag() {
        let k = Keys::new("sy");
        for key in [
            k.conns(),
            k.owners(),
            k.nodes(),
            k.session("a"),
            k.owned("c"),
            k.subscribers("x"),
        ] {
            assert!(key.starts_with("sy:{sy}:"), "{key}");
        }
        assert_eq!(k.rate("connect:1.2.3.4"), "sy:rl:{connect:1.2.3.4}");
        assert_eq!(
            fred::util::redis_keyslot(k.rate_total("msg:u").as_bytes()),
            fred::util::redis_keyslot(k.rate("msg:u").as_bytes()),
            "a window and its total share a slot"
        );
        assert_eq!(k.channel_topic("public:a"), "sy:ch:{public:a}");
        assert_eq!(k.channel_of_topic("sy:ch:{a{b}c}"), Some("a{b}c"));
        assert_eq!(k.channel_of_topic("sy:inbox:x"), None);
        assert_eq!(k.notify_pattern(), "sy:notify:*");
        assert_eq!(k.notify_channel_of("sy:notify:agent:s1"), Some("agent:s1"));
        assert_eq!(k.notify_channel_of("sy:inbox:x"), None);
        assert!(k.is_config_topic(&k.config_topic()));
        assert!(!k.is_config_topic("sy:config:changed2"));
        assert_eq!(k.owners(), "sy:{sy}:owners");
        assert_eq!(k.inbox_prefix(), "sy:inbox:");
        assert!(k.inbox("i1").starts_with(&k.inbox_prefix()));
        // A channel's log and offset share its topic's hash tag.
        let tag = |key: &str| key[key.find('{').unwrap()..].to_owned();
        for channel in ["$session:s1", "public:a"] {
            let topic = k.channel_topic(channel);
            assert_eq!(tag(&k.log(channel)), tag(&topic));
            assert_eq!(tag(&k.log_offset(channel)), tag(&topic));
        }
    }
}
