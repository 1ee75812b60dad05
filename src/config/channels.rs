//! Channel settings: the `[channels]` section, rules by name prefix
//! deciding who may subscribe and publish.

use crate::protocol::names;
use serde::{Deserialize, Serialize};

/// Who may do what on channels, by name prefix.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelConfig {
    /// First matching rule wins; channels no rule matches use `default`.
    pub rules: Vec<ChannelRule>,
    pub default: ChannelAccess,
    /// Channels with presence tracking (join/leave events) by default.
    pub presence: bool,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            rules: vec![
                ChannelRule::new("public:", Access::Authenticated, Access::Write, true),
                ChannelRule::new(names::USER_PREFIX, Access::Owner, Access::Admin, false),
                ChannelRule::new(names::CONN_PREFIX, Access::Owner, Access::Admin, false),
                ChannelRule::new("private:", Access::Claim, Access::Claim, true),
                ChannelRule::new(names::GLOBAL, Access::Authenticated, Access::Admin, false),
                ChannelRule::new(names::APPROVALS, Access::Approvals, Access::Admin, false),
            ],
            default: ChannelAccess {
                subscribe: Access::Authenticated,
                publish: Access::Write,
                presence: true,
                history: 0,
            },
            presence: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRule {
    /// Channel name prefix (`public:`), or an exact name (`global`).
    pub prefix: String,
    #[serde(flatten)]
    pub access: ChannelAccess,
}

impl ChannelRule {
    pub fn new(prefix: &str, subscribe: Access, publish: Access, presence: bool) -> Self {
        Self {
            prefix: prefix.into(),
            access: ChannelAccess {
                subscribe,
                publish,
                presence,
                history: 0,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelAccess {
    pub subscribe: Access,
    pub publish: Access,
    #[serde(default = "yes")]
    pub presence: bool,
    /// Publications kept for `history` and `subscribe` with `recover`
    /// (0: none, and publications carry no offset).
    #[serde(default)]
    pub history: usize,
}

fn yes() -> bool {
    true
}

/// A right on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Any authenticated connection.
    Authenticated,
    /// `operator.read` (or admin).
    Read,
    /// `operator.write` (or admin).
    Write,
    /// `operator.approvals` (or admin).
    Approvals,
    /// `operator.admin` only.
    Admin,
    /// The channel's suffix is the caller's own `sub` (`user:`) or
    /// connection id (`conn:`); admins may use any.
    Owner,
    /// The caller's `channels` claim lists the channel (or a `*` pattern
    /// matching it); admins may use any.
    Claim,
    /// Nobody.
    Deny,
}
