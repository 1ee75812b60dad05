//! Agent definitions on Redis: one hash, agent id → JSON definition
//! (`<prefix>:{<prefix>}:agentdefs`). Writes and deletes are Lua scripts
//! that read the stored version and compare it with the one the caller
//! expects, so a stale write is refused atomically across instances; a
//! single key, so it lives on one Redis Cluster slot.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::agent_defs::{MAX_DEFINITIONS, next_version, stale};
use crate::backend::{AgentDefStore, AgentDefinition, BackendError, BackendResult};
use async_trait::async_trait;
use fred::prelude::HashesInterface;
use fred::types::scripts::Script;
use std::sync::LazyLock;

/// Write a definition over version ARGV[2]. KEYS: the hash. ARGV: agent
/// id, base version, JSON, most definitions. Returns -1 when written, -2
/// when full, else the stored version (0: none).
static PUT_AGENT_DEF: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local ver = 0
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if not ok then return redis.error_reply('corrupt agent definition') end
  ver = tonumber(rec.version) or 0
end
if ver ~= tonumber(ARGV[2]) then return ver end
if ver == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return -1
"#,
    )
});

/// Remove a definition, if at version ARGV[2] (empty: any). KEYS: the hash.
/// ARGV: agent id, base version. Returns the JSON removed, `missing`, or
/// `stale:<stored version>`.
static DELETE_AGENT_DEF: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 'missing' end
if ARGV[2] ~= '' then
  local ok, rec = pcall(cjson.decode, cur)
  local ver = ok and (tonumber(rec.version) or 0) or 0
  if ver ~= tonumber(ARGV[2]) then return 'stale:' .. ver end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return cur
"#,
    )
});

#[async_trait]
impl AgentDefStore for RedisBackend {
    async fn put_definition(
        &self,
        def: &AgentDefinition,
        base: u64,
    ) -> BackendResult<AgentDefinition> {
        let client = self.ready()?;
        let written = next_version(def, base);
        let outcome: i64 = PUT_AGENT_DEF
            .evalsha_with_reload(
                client,
                vec![self.shared().keys.agent_defs()],
                vec![
                    def.agent_id.clone(),
                    base.to_string(),
                    json(&written)?,
                    MAX_DEFINITIONS.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        match outcome {
            -1 => Ok(written),
            -2 => Err(BackendError::Limit("agent definitions", MAX_DEFINITIONS)),
            0 => Err(BackendError::NotFound("agent definition")),
            stored => Err(stale(&def.agent_id, stored as u64, base)),
        }
    }

    async fn definition(&self, agent_id: &str) -> BackendResult<Option<AgentDefinition>> {
        let client = self.ready()?;
        let raw: Option<String> = client
            .hget(self.shared().keys.agent_defs(), agent_id)
            .await
            .map_err(unavailable)?;
        raw.as_deref().map(parse).transpose()
    }

    async fn definitions(&self) -> BackendResult<Vec<AgentDefinition>> {
        let client = self.ready()?;
        let raw: Vec<String> = client
            .hvals(self.shared().keys.agent_defs())
            .await
            .map_err(unavailable)?;
        let mut defs = raw
            .iter()
            .map(|r| parse::<AgentDefinition>(r))
            .collect::<BackendResult<Vec<_>>>()?;
        defs.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        Ok(defs)
    }

    async fn delete_definition(
        &self,
        agent_id: &str,
        base: Option<u64>,
    ) -> BackendResult<AgentDefinition> {
        let client = self.ready()?;
        let outcome: String = DELETE_AGENT_DEF
            .evalsha_with_reload(
                client,
                vec![self.shared().keys.agent_defs()],
                vec![
                    agent_id.to_owned(),
                    base.map(|b| b.to_string()).unwrap_or_default(),
                ],
            )
            .await
            .map_err(unavailable)?;
        if outcome == "missing" {
            return Err(BackendError::NotFound("agent definition"));
        }
        match outcome.strip_prefix("stale:") {
            Some(stored) => Err(stale(
                agent_id,
                stored.parse().unwrap_or(0),
                base.unwrap_or(0),
            )),
            None => parse(&outcome),
        }
    }
}
