//! Human-in-the-loop approvals.

use super::{Doc, counted, described, ms, object, record, string};
use crate::backend::ApprovalRecord;
use crate::protocol::error;
use schemars::SchemaGenerator;
use serde_json::Value;

pub const APPROVAL_REQUEST: Doc = Doc {
    summary: "Ask a human for a decision (from a node)",
    description: "Approvers (`operator.approvals`, on any instance) receive \
                  `approval.requested`; one that connects later while it is pending receives \
                  it then. Unanswered, it expires after `timeoutMs` as `expired`.",
    result: |_| {
        object(&[
            ("approvalId", string()),
            ("expiresAt", described(ms(), "when it expires unanswered")),
        ])
    },
    errors: &[error::UNAVAILABLE],
};

pub const APPROVAL_RESOLVE: Doc = Doc {
    summary: "Decide an approval",
    description: "The first decision wins cluster-wide; later ones get -32007. Approvers and \
                  the requesting connection receive `approval.resolved`. Every decision is \
                  kept in the audit trail (`approval.history`).",
    result: approval,
    errors: &[error::NOT_FOUND, error::CONFLICT, error::UNAVAILABLE],
};

pub const APPROVAL_WAIT: Doc = Doc {
    summary: "Wait for an approval's decision",
    description: "The requester's identity or an approver. Answers the record once it is \
                  decided or expired (-32006 after `timeoutMs`).",
    result: approval,
    errors: &[
        error::NOT_FOUND,
        error::FORBIDDEN,
        error::TIMEOUT,
        error::UNAVAILABLE,
    ],
};

pub const APPROVAL_LIST: Doc = Doc {
    summary: "The pending approvals",
    description: "Oldest first.",
    result: |g| counted("approvals", approval(g)),
    errors: &[error::UNAVAILABLE],
};

pub const APPROVAL_HISTORY: Doc = Doc {
    summary: "The audit trail of decisions",
    description: "Who decided what, when, with which note; newest first.",
    result: |g| counted("entries", approval(g)),
    errors: &[error::UNAVAILABLE],
};

fn approval(g: &mut SchemaGenerator) -> Value {
    record::<ApprovalRecord>(g)
}
