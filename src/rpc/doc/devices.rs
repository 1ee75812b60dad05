//! Devices and pairing.

use super::{Doc, boolean, counted, described, ms, nullable, object, one_of, record, string};
use crate::backend::{DeviceEvent, DeviceInfo};
use crate::protocol::error;
use schemars::SchemaGenerator;
use serde_json::Value;

pub const DEVICE_PAIR_REQUEST: Doc = Doc {
    summary: "Ask to pair this device (before authentication)",
    description: "The calling connection becomes the waiting device: show the returned `code` \
                  to the user. Operators with `operator.pairing` (on any instance) receive \
                  `device.pair.requested`, and one that connects later while it is pending \
                  receives it then. The request expires unanswered after \
                  `auth.devices.pairing_ttl_ms` (5 minutes by default); at most \
                  `auth.devices.max_pending` requests are pending at once (-32002), and each \
                  client IP may ask `auth.devices.requests_per_ip` times per window (-32004). \
                  A device already paired or with a request pending gets -32007. On approval \
                  the connection receives `device.paired` with its token; on rejection \
                  `device.pair.rejected`. -32005 when mode `device` is off.",
    result: |_| {
        object(&[
            ("deviceId", string()),
            (
                "code",
                described(string(), "the pairing code, e.g. `K7QF-M2XD`"),
            ),
            ("status", one_of(&["pending"])),
            (
                "expiresAt",
                described(ms(), "when the request expires unanswered"),
            ),
        ])
    },
    errors: &[
        error::CONFLICT,
        error::LIMIT_EXCEEDED,
        error::RATE_LIMITED,
        error::UNAVAILABLE,
    ],
};

pub const DEVICE_PAIR_APPROVE: Doc = Doc {
    summary: "Approve a pending pairing request",
    description: "The first decision wins cluster-wide; later ones get -32007. The waiting \
                  device receives `device.paired {deviceId, deviceToken, role, scopes}` on \
                  whichever instance holds it (`delivered` says whether it was reached); the \
                  token is shown nowhere else and only its SHA-256 is stored. `role` is `node` \
                  (default) or `operator` with `scopes` no wider than the approver's own \
                  (-32003). Operators receive `device.pair.resolved`.",
    result: decided,
    errors: &[error::NOT_FOUND, error::CONFLICT, error::UNAVAILABLE],
};

pub const DEVICE_PAIR_REJECT: Doc = Doc {
    summary: "Reject a pending pairing request",
    description: "The first decision wins cluster-wide; later ones get -32007. The waiting \
                  device receives `device.pair.rejected {deviceId, reason, note}`; operators \
                  `device.pair.resolved`.",
    result: decided,
    errors: &[error::NOT_FOUND, error::CONFLICT, error::UNAVAILABLE],
};

pub const DEVICE_LIST: Doc = Doc {
    summary: "Known devices",
    description: "Pending, paired, rejected and revoked devices (rejected and revoked ones for \
                  24 hours), oldest request first; `status` keeps one state. Expired requests \
                  are left out.",
    result: |g| counted("devices", device(g)),
    errors: &[error::UNAVAILABLE],
};

pub const DEVICE_GET: Doc = Doc {
    summary: "One device",
    description: "As `device.list` lists it.",
    result: device,
    errors: &[error::NOT_FOUND, error::UNAVAILABLE],
};

pub const DEVICE_REVOKE: Doc = Doc {
    summary: "Revoke a paired device",
    description: "Its token (and a rotated-out one in its grace) stops working at once, and \
                  its connections on every instance are closed with code 4003 (they receive \
                  `device.revoked` first when their queue allows). Operators receive \
                  `device.revoked`. -32007 when the device is not paired.",
    result: device,
    errors: &[error::NOT_FOUND, error::CONFLICT, error::UNAVAILABLE],
};

pub const DEVICE_TOKEN_ROTATE: Doc = Doc {
    summary: "Issue a new token for a paired device",
    description: "For `operator.pairing`, or the device itself (authenticated with its token). \
                  The new token is in the reply only. The previous token keeps working until \
                  `previousTokenUntil` (`auth.devices.rotation_grace_ms`, 5 minutes by \
                  default); a connection authenticated with it then expires (closed like an \
                  expired JWT). -32007 when the device is not paired.",
    result: |_| {
        object(&[
            ("deviceId", string()),
            ("deviceToken", described(string(), "shown once")),
            (
                "previousTokenUntil",
                described(ms(), "the replaced token works until then"),
            ),
        ])
    },
    errors: &[error::NOT_FOUND, error::CONFLICT, error::UNAVAILABLE],
};

pub const DEVICE_HISTORY: Doc = Doc {
    summary: "The pairing audit trail",
    description: "Requests, approvals, rejections, revocations and rotations: who, when, with \
                  which note; newest first, the newest 1000 kept cluster-wide.",
    result: |g| counted("entries", record::<DeviceEvent>(g)),
    errors: &[error::UNAVAILABLE],
};

fn device(g: &mut SchemaGenerator) -> Value {
    record::<DeviceInfo>(g)
}

fn decided(g: &mut SchemaGenerator) -> Value {
    object(&[
        ("device", device(g)),
        (
            "delivered",
            described(boolean(), "the waiting device was reached"),
        ),
    ])
}

/// `device.paired`'s params.
pub fn paired(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("deviceId", string()),
        (
            "deviceToken",
            described(
                string(),
                "the device's token; store it, it is not shown again",
            ),
        ),
        ("role", one_of(&["node", "operator"])),
        ("scopes", super::strings()),
    ])
}

/// `device.pair.rejected`'s params.
pub fn rejected(_: &mut SchemaGenerator) -> Value {
    object(&[
        ("deviceId", string()),
        ("reason", one_of(&["rejected"])),
        ("note", nullable(string())),
    ])
}
