//! Runtime config.

use super::{Doc, any, count, counted, described, object, record, strings};
use crate::backend::ConfigChange;
use crate::protocol::error;
use schemars::SchemaGenerator;
use serde_json::Value;

/// What every changing method's description ends with.
macro_rules! rules {
    () => {
        " Live settings: `rate_limits.*`, `channels.*`, `hooks`, and \
     `limits.` `max_payload`, `max_batch`, `max_json_depth`, `outbound_queue`, `heartbeat_ms`, \
     `client_timeout_ms`, `handshake_timeout_ms` (connections opened afterwards), \
     `max_sessions_per_client`, `max_session_members`, `session_history`, `max_subscriptions`, \
     `max_connections`, `resume_window_ms`, `request_timeout_ms`, `drain_deadline_ms`, \
     `unready_after_ms`. Any other setting is refused with -32602 naming it and saying it \
     needs a restart. Values are validated like the config file (-32602 names the field); a \
     `baseVersion` that is not the stored version gets -32007 with `data.currentVersion`. \
     Every instance applies the new version within a second."
    };
}

pub const CONFIG_GET: Doc = Doc {
    summary: "The runtime config in force on this instance",
    description: "The effective live settings (file/env values with the runtime overrides \
                  applied; webhook secrets shown as `<redacted>`), the override document, \
                  the paths it sets and its version; with `schema: true` also the JSON \
                  Schema of the live settings.",
    result: settings,
    errors: &[],
};

pub const CONFIG_SET: Doc = Doc {
    summary: "Set or remove one runtime setting",
    description: concat!(
        "`path` is dotted (`rate_limits.messages_per_conn.limit`); `value: null` removes the \
         override so the file/env value applies again. Without `baseVersion` it applies to \
         whatever version is stored.",
        rules!()
    ),
    result: settings,
    errors: &[error::CONFLICT, error::UNAVAILABLE],
};

pub const CONFIG_PATCH: Doc = Doc {
    summary: "Merge a JSON merge patch (RFC 7396) into the runtime overrides",
    description: concat!(
        "Members set overrides, `null` members remove them.",
        rules!()
    ),
    result: settings,
    errors: &[error::CONFLICT, error::UNAVAILABLE],
};

pub const CONFIG_APPLY: Doc = Doc {
    summary: "Replace the whole runtime override document",
    description: concat!("`{}` removes every override.", rules!()),
    result: settings,
    errors: &[error::CONFLICT, error::UNAVAILABLE],
};

pub const CONFIG_HISTORY: Doc = Doc {
    summary: "Who changed the runtime config, when, and how",
    description: "Newest first; the last 100 changes are kept. Each names the identity, the \
                  operation (`set`, `patch`, `apply`, or `restore` after shared state was \
                  lost), the path or the patch (secrets redacted) and the versions before \
                  and after.",
    result: |g| counted("entries", record::<ConfigChange>(g)),
    errors: &[error::UNAVAILABLE],
};

fn settings(_: &mut SchemaGenerator) -> Value {
    object(&[
        (
            "version",
            described(count(), "the document version in force (0: none)"),
        ),
        (
            "config",
            described(
                any(),
                "the effective live settings: `limits` (live fields), `rate_limits`, \
                 `channels`, `hooks`",
            ),
        ),
        ("overrides", described(any(), "the override document")),
        (
            "overridden",
            described(strings(), "dotted paths the overrides set"),
        ),
        (
            "schema?",
            described(
                any(),
                "`config.get` with `schema: true`: the JSON Schema of the live settings",
            ),
        ),
    ])
}
