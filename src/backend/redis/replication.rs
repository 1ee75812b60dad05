//! What the Redis primary says about its replication, and the two things
//! the gateway builds on it: telling when acknowledged writes may have been
//! lost, and making approval decisions survive a failover.
//!
//! **Lost writes.** Every primary has a replication id (`master_replid`)
//! that names its history. It changes when a replica is promoted (Sentinel
//! failover: the new primary's history continues the old one only up to
//! what had reached it) and when Redis restarts from its append-only file
//! (`appendfsync everysec` may have lost the last second). Either way the
//! writes acknowledged last may be gone, and nothing on the new primary
//! says which. Each instance therefore reads `INFO replication` of every
//! primary after each reconnect (before it serves anything again) and once
//! a second, and keeps the ids as the *history* token. The epoch
//! ([`Health::epoch`]) is stored beside the token it was taken under: an
//! instance that sees a different history starts a new epoch (one script:
//! the first instance to look starts it, the others read it). A primary
//! whose offset went back under the same id (restored from a snapshot) is
//! caught by the instance that had seen the larger offset. A new epoch
//! makes every instance re-assert, push `epoch.changed` to its
//! connections and answer readers of older offsets with `epochChanged`.
//! The check is conservative: it cannot prove that nothing was lost, so a
//! failover or a restart from disk always starts a new epoch.
//!
//! **Decisions that are never reversed.** A decision (the first resolver
//! wins) is written and then `WAIT`ed for on a connection of its own (WAIT
//! blocks the connection it runs on) until a replica has it, once Redis
//! history has had a replica. Sentinel promotes the replica with the most
//! data, so an acknowledged decision is on the new primary. A decision no
//! replica confirms in time (the replica is down, or this primary was cut
//! off from it by a failover and not yet demoted) is answered -32005: it
//! was not acknowledged.
//!
//! [`Health::epoch`]: crate::backend::Health::epoch

use super::{RedisBackend, unavailable};
use crate::backend::{BackendError, BackendResult};
use fred::clients::Client;
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::InfoKind;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The name of the one primary outside a cluster.
const PRIMARY: &str = "primary";

/// One primary's replication, as `INFO replication` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct NodeReplication {
    /// `role`: `master`, or `slave` on a primary that was demoted.
    pub role: String,
    pub replid: String,
    pub offset: u64,
    /// `connected_slaves`.
    pub replicas: u64,
}

/// Parse the reply of `INFO replication`.
pub(super) fn parse_info(text: &str) -> NodeReplication {
    let mut node = NodeReplication::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        match key {
            "role" => node.role = value.to_owned(),
            "master_replid" => node.replid = value.to_owned(),
            "master_repl_offset" => node.offset = value.parse().unwrap_or(0),
            "connected_slaves" => node.replicas = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    node
}

/// What this instance has seen of the primaries.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// Server (`host:port`) → its replication, last look.
    nodes: BTreeMap<String, NodeReplication>,
    /// The last look still describes the connection: cleared when the
    /// connection drops, set by the next look. An epoch read meanwhile
    /// does not judge the history (a stale look would start a new epoch
    /// over one another instance already started).
    current: bool,
    /// Counts the drops: a look whose request went out before the last
    /// drop may carry the old server's answer, and is not taken.
    drops: u64,
    /// The epoch token this instance last read: a rewound primary asks to
    /// replace exactly this one.
    pub last_epoch: Option<String>,
    /// Set when a primary's offset went back under the same id.
    pub rewound_from: Option<String>,
    /// Server → its current history (replication id) has had a replica:
    /// from then on a decision written there needs one to confirm it, even
    /// while none is connected (a failover may promote the replica that
    /// missed it). A history that never had one has nothing to wait for:
    /// its first replica copies everything. Per primary: in a cluster,
    /// only the shard holding the shared slot matters.
    replicated: BTreeMap<String, bool>,
}

impl Observed {
    /// The history token: the primaries' replication ids (empty before
    /// the first look).
    pub fn history(&self) -> String {
        if !self.current {
            return String::new();
        }
        self.token()
    }

    /// The set of replication ids, sorted: two instances whose views of
    /// a cluster's topology differ for a while (one still lists a demoted
    /// primary, which reports its new primary's id) name the same history.
    fn token(&self) -> String {
        let ids: std::collections::BTreeSet<&str> =
            self.nodes.values().map(|n| n.replid.as_str()).collect();
        ids.into_iter().collect::<Vec<_>>().join(",")
    }

    /// The connection dropped: the next look decides.
    pub fn invalidate(&mut self) {
        self.current = false;
        self.drops += 1;
    }

    /// What a look begun now is checked against when it comes back.
    fn begin(&self) -> u64 {
        self.drops
    }

    /// Take a new look begun at `begun` ([`Observed::begin`]). Returns
    /// whether the history changed (or went back) since the previous one;
    /// the first look changes nothing, and a look begun before the last
    /// drop is not taken (it may be the old server's answer, read late:
    /// judged current, it would start a second epoch over the one the
    /// server that came back already has).
    fn update(&mut self, begun: u64, nodes: BTreeMap<String, NodeReplication>) -> bool {
        if begun != self.drops {
            return false;
        }
        self.current = true;
        // A new history has had no replica yet: its first replica syncs
        // everything from it.
        self.replicated = nodes
            .iter()
            .map(|(server, now)| {
                let same = self
                    .nodes
                    .get(server)
                    .is_some_and(|b| b.replid == now.replid);
                let had = same && self.replicated.get(server).copied().unwrap_or(false);
                (server.clone(), now.replicas > 0 || had)
            })
            .collect();
        if self.nodes.is_empty() {
            self.nodes = nodes;
            return false;
        }
        let rewound = nodes.iter().any(|(server, now)| {
            self.nodes
                .get(server)
                .is_some_and(|before| before.replid == now.replid && now.offset < before.offset)
        });
        if rewound && self.rewound_from.is_none() {
            self.rewound_from = self.last_epoch.clone();
        }
        let before = self.token();
        self.nodes = nodes;
        rewound || self.token() != before
    }

    /// Whether a write to the primary `server` must wait for a replica:
    /// its current history has had one. A primary not looked at yet (just
    /// promoted) has a new history.
    fn needs_replica(&self, server: &str) -> bool {
        self.replicated.get(server).copied().unwrap_or(false)
    }
}

pub(super) type Replication = Mutex<Observed>;

impl RedisBackend {
    pub(super) fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.0.replication.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read every primary's replication now (bypassing the availability
    /// flag: this runs before a reconnected instance serves again). Returns
    /// whether the history changed since the last look. A connection that
    /// reaches a demoted primary is re-established through Sentinel.
    pub(super) async fn observe_replication(&self) -> BackendResult<bool> {
        let client = &self.0.client;
        let begun = self.observed().begin();
        let mut nodes = BTreeMap::new();
        if self.0.clustered {
            let primaries = client
                .cached_cluster_state()
                .map(|state| state.unique_primary_nodes())
                .unwrap_or_default();
            for server in primaries {
                let text: String = client
                    .with_cluster_node(server.clone())
                    .info(Some(InfoKind::Replication))
                    .await
                    .map_err(unavailable)?;
                nodes.insert(server.to_string(), parse_info(&text));
            }
        } else {
            let text: String = client
                .info(Some(InfoKind::Replication))
                .await
                .map_err(unavailable)?;
            let node = parse_info(&text);
            if node.role != "master" {
                tracing::warn!(
                    role = %node.role,
                    "the redis server this instance writes to is no longer a primary; reconnecting"
                );
                self.observed().invalidate();
                let _ = client.force_reconnection().await;
                let _ = self.0.durable.force_reconnection().await;
                return Err(BackendError::Unavailable(
                    "redis server is not a primary".into(),
                ));
            }
            nodes.insert(String::from(PRIMARY), node);
        }
        if nodes.is_empty() {
            return Ok(false);
        }
        Ok(self.observed().update(begun, nodes))
    }

    /// The connection decisions are written on (see the module docs).
    pub(super) fn durable(&self) -> BackendResult<&Client> {
        self.ready()?;
        Ok(&self.0.durable)
    }

    /// After a write on [`Self::durable`] to the shared slot: wait until a
    /// replica has it, once the current history has had one. Fails when none
    /// confirms it in time (the write stands on the primary, but a failover
    /// now could lose it): with a replica down, or on a primary cut off from
    /// its replicas after a failover, decisions are refused rather than
    /// acknowledged at risk.
    pub(super) async fn confirm_replicated(&self) -> BackendResult<()> {
        use fred::types::{ClusterHash, CustomCommand};
        let slot = fred::util::redis_keyslot(self.0.keys.epoch().as_bytes());
        let server = if self.0.clustered {
            self.0
                .client
                .cached_cluster_state()
                .and_then(|state| state.get_server(slot).map(ToString::to_string))
                .unwrap_or_default()
        } else {
            String::from(PRIMARY)
        };
        if !self.observed().needs_replica(&server) {
            return Ok(());
        }
        let wait_ms = (self.0.settings.command_timeout.as_millis() as u64 / 2).max(100);
        let wait = CustomCommand::new_static("WAIT", ClusterHash::Custom(slot), true);
        let acked: i64 = self
            .0
            .durable
            .custom(wait, vec![1.to_string(), wait_ms.to_string()])
            .await
            .map_err(unavailable)?;
        tracing::debug!(acked, wait_ms, "a decision waited for a replica");
        if acked >= 1 {
            Ok(())
        } else {
            metrics::counter!("switchyard_redis_unreplicated_writes_total").increment(1);
            Err(BackendError::Unavailable(format!(
                "stored on the redis primary, but no replica confirmed it within {wait_ms} ms \
                 (a failover now could lose it); read it back to see whether it stands"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(replid: &str, offset: u64) -> NodeReplication {
        NodeReplication {
            role: "master".into(),
            replid: replid.into(),
            offset,
            replicas: 1,
        }
    }

    /// A look begun and taken with no drop between.
    fn take(seen: &mut Observed, nodes: BTreeMap<String, NodeReplication>) -> bool {
        let begun = seen.begin();
        seen.update(begun, nodes)
    }

    #[test]
    fn a_look_begun_before_a_drop_is_not_taken() {
        let mut seen = Observed::default();
        take(&mut seen, look(&[("a", node("x", 10))]));
        // A look goes out; the connection drops and the server comes back
        // as another (a new replication id); the old server's answer to
        // the look is read only now.
        let begun = seen.begin();
        seen.invalidate();
        assert!(!seen.update(begun, look(&[("a", node("x", 11))])));
        assert_eq!(seen.history(), "", "still not judged");
        // The look after the reconnect tells the change.
        assert!(take(&mut seen, look(&[("a", node("y", 0))])));
        assert_eq!(seen.history(), "y");
    }

    fn look(nodes: &[(&str, NodeReplication)]) -> BTreeMap<String, NodeReplication> {
        nodes
            .iter()
            .map(|(s, n)| (s.to_string(), n.clone()))
            .collect()
    }

    #[test]
    fn info_is_parsed() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                    slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n\
                    master_replid:abc\r\nmaster_replid2:0000\r\nmaster_repl_offset:42\r\n";
        assert_eq!(
            parse_info(text),
            NodeReplication {
                role: "master".into(),
                replid: "abc".into(),
                offset: 42,
                replicas: 2
            }
        );
    }

    #[test]
    fn a_new_replication_id_or_an_offset_going_back_changes_the_history() {
        let mut seen = Observed::default();
        assert!(
            !take(&mut seen, look(&[("a", node("x", 10))])),
            "first look"
        );
        assert_eq!(seen.history(), "x");
        assert!(!take(&mut seen, look(&[("a", node("x", 50))])), "writes");
        seen.last_epoch = Some("e1".into());
        assert!(take(&mut seen, look(&[("a", node("y", 60))])), "failover");
        assert_eq!(seen.rewound_from, None);
        assert!(take(&mut seen, look(&[("a", node("y", 20))])), "rewound");
        assert_eq!(seen.rewound_from.as_deref(), Some("e1"));
        assert!(!take(&mut seen, look(&[("a", node("y", 30))])), "settled");
        seen.invalidate();
        assert_eq!(seen.history(), "", "not judged until the next look");
        assert!(!take(&mut seen, look(&[("a", node("y", 31))])));
        assert_eq!(seen.history(), "y");
        // Two views of one cluster, one still listing a demoted primary
        // (which reports its new primary's id): the same history.
        let mut fresh = Observed::default();
        take(
            &mut fresh,
            look(&[("a", node("x", 1)), ("c", node("n", 1))]),
        );
        let mut stale = Observed::default();
        take(
            &mut stale,
            look(&[
                ("a", node("x", 1)),
                ("b", node("n", 1)),
                ("c", node("n", 1)),
            ]),
        );
        assert_eq!(fresh.history(), stale.history());
        // A cluster: one shard's failover is a change of the whole.
        let mut seen = Observed::default();
        take(&mut seen, look(&[("a", node("x", 1)), ("b", node("z", 1))]));
        assert!(take(
            &mut seen,
            look(&[("a", node("x", 1)), ("b", node("w", 1))])
        ));
        assert!(seen.needs_replica("a"), "a's history goes on");
        // Only the shard written to counts: b promoted alone needs none
        // while a keeps its replica.
        let lone_b = NodeReplication {
            replicas: 0,
            ..node("v", 2)
        };
        take(&mut seen, look(&[("a", node("x", 2)), ("b", lone_b)]));
        assert!(seen.needs_replica("a"));
        assert!(!seen.needs_replica("b"), "b's new history never had one");
        assert!(!seen.needs_replica("c"), "not looked at yet");
        // Never replicated: nothing to wait for.
        let mut alone = Observed::default();
        take(
            &mut alone,
            look(&[(
                "a",
                NodeReplication {
                    replicas: 0,
                    ..node("x", 0)
                },
            )]),
        );
        assert!(!alone.needs_replica("a"));
        // Replicated, then promoted: the new history waits for its first
        // replica before decisions wait again.
        let mut seen = Observed::default();
        take(&mut seen, look(&[("a", node("x", 1))]));
        assert!(seen.needs_replica("a"));
        let lone = NodeReplication {
            replicas: 0,
            ..node("y", 5)
        };
        take(&mut seen, look(&[("a", lone.clone())]));
        assert!(!seen.needs_replica("a"), "a promoted replica alone");
        take(&mut seen, look(&[("a", node("y", 6))]));
        take(
            &mut seen,
            look(&[("a", NodeReplication { offset: 7, ..lone })]),
        );
        assert!(
            seen.needs_replica("a"),
            "its replica went away: still needed"
        );
    }
}
