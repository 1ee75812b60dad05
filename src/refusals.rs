//! Refusals an operator must be able to see. A browser only shows close
//! code 1006 for a refused upgrade, so each refusal is logged at `info`
//! with its reason and the setting that governs it, and counted in
//! `switchyard_refusals_total{reason}`. A log line never carries a
//! credential: the detail is an `Origin`, a `Host`, a carrier name or an
//! authentication error's text. Under a flood each reason logs at most one
//! line per second, with how many it did not log meanwhile.

use crate::protocol::now_ms;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// What was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A `Host` this gateway does not answer to (403).
    Host,
    /// A cross-site `Origin` (403).
    Origin,
    /// Too many connection attempts from the address (429).
    ConnectRate,
    /// A credential that did not check out (401, -32000).
    Credentials,
    /// The address failed too often and is locked out (429, -32029).
    LockedOut,
    /// Too many connections from the address (429).
    PerAddress,
    /// The instance holds as many connections as it may (503).
    Capacity,
}

const KINDS: usize = 7;

impl Refused {
    /// Every kind, in index order.
    pub const ALL: [Refused; KINDS] = [
        Refused::Host,
        Refused::Origin,
        Refused::ConnectRate,
        Refused::Credentials,
        Refused::LockedOut,
        Refused::PerAddress,
        Refused::Capacity,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Host => "host",
            Refused::Origin => "origin",
            Refused::ConnectRate => "connect_rate",
            Refused::Credentials => "credentials",
            Refused::LockedOut => "locked_out",
            Refused::PerAddress => "per_address",
            Refused::Capacity => "capacity",
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refused::Host => "Host not allowed",
            Refused::Origin => "Origin not allowed",
            Refused::ConnectRate => "too many connection attempts from this address",
            Refused::Credentials => "credentials refused",
            Refused::LockedOut => "address locked out after failed authentications",
            Refused::PerAddress => "too many connections from this address",
            Refused::Capacity => "connection limit of the instance reached",
        }
    }

    /// The setting that decides it, as a file key and its variable.
    pub fn setting(self) -> &'static str {
        match self {
            Refused::Host => "allowed_hosts (SWITCHYARD_ALLOWED_HOSTS)",
            Refused::Origin => "allowed_origins (SWITCHYARD_ALLOWED_ORIGINS)",
            Refused::ConnectRate => {
                "rate_limits.connect_per_ip (SWITCHYARD_RATE_LIMITS__CONNECT_PER_IP__LIMIT)"
            }
            Refused::Credentials => {
                "auth (SWITCHYARD_TOKENS, SWITCHYARD_API_KEYS, SWITCHYARD_JWT_SECRET, \
                 SWITCHYARD_PASSWORD, …)"
            }
            Refused::LockedOut => {
                "rate_limits.auth_failures_per_ip \
                 (SWITCHYARD_RATE_LIMITS__AUTH_FAILURES_PER_IP__LIMIT)"
            }
            Refused::PerAddress => {
                "limits.max_connections_per_ip (SWITCHYARD_LIMITS__MAX_CONNECTIONS_PER_IP)"
            }
            Refused::Capacity => "limits.max_connections (SWITCHYARD_LIMITS__MAX_CONNECTIONS)",
        }
    }
}

static LAST_LOGGED_MS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
static NOT_LOGGED: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

/// Count a refusal of `ip` and log it (see the module docs). `detail` must
/// not hold a secret.
pub fn refused(what: Refused, ip: IpAddr, detail: &str) {
    metrics::counter!("switchyard_refusals_total", "reason" => what.label()).increment(1);
    let i = what.index();
    let now = now_ms();
    let last = LAST_LOGGED_MS[i].load(Ordering::Relaxed);
    let due = now.saturating_sub(last) >= 1_000
        && LAST_LOGGED_MS[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if !due {
        NOT_LOGGED[i].fetch_add(1, Ordering::Relaxed);
        return;
    }
    let not_logged = NOT_LOGGED[i].swap(0, Ordering::Relaxed);
    tracing::info!(
        %ip,
        reason = what.reason(),
        setting = what.setting(),
        detail,
        not_logged,
        "refused"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_slot_label_and_setting() {
        let mut seen = std::collections::HashSet::new();
        for (i, kind) in Refused::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert!(seen.insert(kind.label()));
            assert!(kind.setting().contains("SWITCHYARD_"), "{kind:?}");
        }
    }
}
