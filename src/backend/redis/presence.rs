//! Presence on Redis: a hash of presence entries (conn id → JSON), a hash
//! of owners (conn id → the instance holding it, which `ROUTE` reads to
//! deliver to a connection), and the set of node connections, so counting
//! never reads the entries.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::{BackendResult, ConnectionCounts, Presence, PresenceEntry};
use async_trait::async_trait;
use fred::prelude::{HashesInterface, KeysInterface, SetsInterface};
use std::collections::HashMap;

#[async_trait]
impl Presence for RedisBackend {
    async fn put_connection(&self, entry: PresenceEntry) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let record = json(&entry)?;
        let conn_id = entry.conn_id.as_str();
        // The role may change (authentication after connecting): keep the
        // node set in step either way.
        let node = async {
            if entry.role.as_deref() == Some("node") {
                client.sadd::<(), _, _>(keys.nodes(), conn_id).await
            } else {
                client.srem::<(), _, _>(keys.nodes(), conn_id).await
            }
        };
        let (a, b, c) = tokio::join!(
            client.hset::<(), _, _>(keys.conns(), (conn_id, record)),
            client.hset::<(), _, _>(keys.owners(), (conn_id, entry.node_id.as_str())),
            node,
        );
        a.and(b).and(c).map_err(unavailable)
    }

    async fn remove_connection(&self, conn_id: &str) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        let (a, b, c, d) = tokio::join!(
            client.hdel::<(), _, _>(keys.owners(), conn_id),
            client.hdel::<(), _, _>(keys.conns(), conn_id),
            client.srem::<(), _, _>(keys.nodes(), conn_id),
            client.del::<(), _>(keys.conn_channels(conn_id)),
        );
        a.and(b).and(c).and(d).map_err(unavailable)
    }

    async fn connection(&self, conn_id: &str) -> BackendResult<Option<PresenceEntry>> {
        let client = self.ready()?;
        let raw: Option<String> = client
            .hget(self.0.keys.conns(), conn_id)
            .await
            .map_err(unavailable)?;
        raw.map(|r| parse(&r)).transpose()
    }

    async fn connections(&self) -> BackendResult<Vec<PresenceEntry>> {
        let client = self.ready()?;
        let all: HashMap<String, String> = client
            .hgetall(self.0.keys.conns())
            .await
            .map_err(unavailable)?;
        let mut entries: Vec<PresenceEntry> = all.values().filter_map(|v| parse(v).ok()).collect();
        entries.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        Ok(entries)
    }

    async fn connections_page(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> BackendResult<(Vec<PresenceEntry>, Option<String>)> {
        let (values, next) = self.hscan(self.0.keys.conns(), cursor, limit).await?;
        let mut entries: Vec<PresenceEntry> = values.iter().filter_map(|v| parse(v).ok()).collect();
        entries.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        Ok((entries, next))
    }

    async fn connection_counts(&self) -> BackendResult<ConnectionCounts> {
        let client = self.ready()?;
        let keys = &self.0.keys;
        // HLEN and SCARD are O(1) and read no entry; pipelined together.
        let (connections, nodes) = tokio::join!(
            client.hlen::<u64, _>(keys.conns()),
            client.scard::<u64, _>(keys.nodes()),
        );
        Ok(ConnectionCounts {
            connections: connections.map_err(unavailable)? as usize,
            nodes: nodes.map_err(unavailable)? as usize,
        })
    }

    async fn forget_unheld(
        &self,
        held: &(dyn for<'c> Fn(&'c str) -> bool + Sync),
        settled_ms: u64,
    ) -> BackendResult<usize> {
        self.reap_unheld(held, settled_ms).await
    }
}
