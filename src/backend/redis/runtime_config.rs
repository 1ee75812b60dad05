//! The runtime config document on Redis: one hash (`version`, `overrides`,
//! `updatedAt`) and a capped history list, both under the shared hash tag
//! so the compare-and-set script touches one Cluster slot. A new version
//! is announced with `PUBLISH` on the config topic (plain pub/sub, which
//! Redis Cluster forwards to every node); instances also poll the version
//! (`HGET`), so a lost announcement only delays them.

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::runtime_config::CONFIG_HISTORY_MAX;
use crate::backend::{BackendResult, ConfigChange, ConfigDocument, ConfigStore, ConfigWrite};
use async_trait::async_trait;
use fred::prelude::{HashesInterface, ListInterface, PubsubInterface};
use fred::types::scripts::Script;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::LazyLock;
use tokio::sync::watch;

/// Compare and set. KEYS: document hash, history list. ARGV: base
/// version, overrides JSON, updated-at, the history entry's JSON after
/// its opening brace (the script writes `{"fromVersion":B,"version":V,`
/// before it), history length. Returns `{1, new version}` or
/// `{0, current version}`.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then return {0, current} end
local version = current + 1
redis.call('HSET', KEYS[1], 'version', version, 'overrides', ARGV[2], 'updatedAt', ARGV[3])
local entry = '{"fromVersion":' .. current .. ',"version":' .. version .. ',' .. ARGV[4]
redis.call('LPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
return {1, version}
"#,
    )
});

/// Write back a lost document. KEYS: document hash. ARGV: version,
/// overrides JSON, updated-at. Returns 1, or 0 when one is stored.
static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'overrides', ARGV[2], 'updatedAt', ARGV[3])
return 1
"#,
    )
});

#[async_trait]
impl ConfigStore for RedisBackend {
    async fn config_version(&self) -> BackendResult<u64> {
        let client = self.ready()?;
        let version: Option<u64> = client
            .hget(self.shared().keys.config(), "version")
            .await
            .map_err(unavailable)?;
        Ok(version.unwrap_or(0))
    }

    async fn config_document(&self) -> BackendResult<ConfigDocument> {
        let client = self.ready()?;
        let fields: HashMap<String, String> = client
            .hgetall(self.shared().keys.config())
            .await
            .map_err(unavailable)?;
        let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let overrides = match fields.get("overrides") {
            Some(text) => parse(text)?,
            None => Value::Object(Default::default()),
        };
        Ok(ConfigDocument {
            version: number("version"),
            overrides,
            updated_at: number("updatedAt"),
        })
    }

    async fn put_config(
        &self,
        base: u64,
        overrides: &Value,
        change: &ConfigChange,
        now_ms: u64,
    ) -> BackendResult<ConfigWrite> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        // The entry without its versions: the script puts them first.
        let mut rest = serde_json::to_value(change)
            .map_err(|e| crate::backend::BackendError::Internal(e.to_string()))?;
        if let Some(map) = rest.as_object_mut() {
            map.remove("fromVersion");
            map.remove("version");
        }
        let rest = json(&rest)?;
        let (written, version): (i64, u64) = PUT
            .evalsha_with_reload(
                client,
                vec![keys.config(), keys.config_history()],
                vec![
                    base.to_string(),
                    json(overrides)?,
                    now_ms.to_string(),
                    rest[1..].to_owned(),
                    CONFIG_HISTORY_MAX.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        if written != 1 {
            return Ok(ConfigWrite::Stale { current: version });
        }
        // The document is stored; an announcement lost here is caught by
        // every instance's poll of the version.
        if let Err(e) = client
            .publish::<i64, _, _>(keys.config_topic(), version.to_string())
            .await
        {
            tracing::warn!(error = %e, version, "runtime config announcement failed");
        }
        Ok(ConfigWrite::Written(version))
    }

    async fn restore_config(&self, document: &ConfigDocument) -> BackendResult<bool> {
        let client = self.ready()?;
        let written: i64 = RESTORE
            .evalsha_with_reload(
                client,
                vec![self.shared().keys.config()],
                vec![
                    document.version.to_string(),
                    json(&document.overrides)?,
                    document.updated_at.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(written == 1)
    }

    async fn config_history(&self, limit: usize) -> BackendResult<Vec<ConfigChange>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let client = self.ready()?;
        let raw: Vec<String> = client
            .lrange(self.shared().keys.config_history(), 0, limit as i64 - 1)
            .await
            .map_err(unavailable)?;
        raw.iter().map(|r| parse(r)).collect()
    }

    fn config_changes(&self) -> watch::Receiver<u64> {
        self.shared().config_changes.subscribe()
    }
}
