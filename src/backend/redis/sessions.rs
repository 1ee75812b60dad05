//! Sessions in Redis: one hash `{data, rev}` per session, changed only by
//! compare-and-set.
//!
//! Every change reads the record, computes the new one in Rust (members,
//! JSON merge patch) and writes it with the `CAS_SESSION` script, which
//! also maintains the side indexes (owned-by, member-of, detached) in the
//! same atomic step. A concurrent change makes the script refuse and the
//! change is recomputed on the fresh record. Creation is its own script
//! (id uniqueness and the owner's session count).

use super::{RedisBackend, json, parse, unavailable};
use crate::backend::sessions::{add_invited, add_member, patch_meta, reclaim_owner, remove_member};
use crate::backend::{Admission, BackendError, BackendResult, SessionRecord, SessionStore};
use async_trait::async_trait;
use fred::prelude::{HashesInterface, SetsInterface, SortedSetsInterface};
use serde_json::Value;

/// Attempts before a contended change gives up.
const CAS_ATTEMPTS: usize = 32;

#[async_trait]
impl SessionStore for RedisBackend {
    async fn create_session(&self, record: SessionRecord, max_owned: usize) -> BackendResult<()> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let owner = record.owner.clone().unwrap_or_default();
        let outcome: i64 = self
            .shared()
            .scripts
            .create_session
            .evalsha_with_reload(
                client,
                vec![
                    keys.session(&record.session_id),
                    keys.owned(&owner),
                    keys.session_index(),
                    keys.member_of(&owner),
                ],
                vec![
                    json(&record)?,
                    max_owned.to_string(),
                    record.session_id.clone(),
                ],
            )
            .await
            .map_err(unavailable)?;
        match outcome {
            1 => Ok(()),
            -1 => Err(BackendError::Conflict("session already exists".into())),
            _ => Err(BackendError::Limit("sessions per connection", max_owned)),
        }
    }

    async fn session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        Ok(load(self, session_id).await?.map(|(r, _)| r))
    }

    async fn sessions(&self) -> BackendResult<Vec<SessionRecord>> {
        let client = self.ready()?;
        let ids: Vec<String> = client
            .smembers(self.shared().keys.session_index())
            .await
            .map_err(unavailable)?;
        let loads = ids.iter().map(|id| load(self, id));
        let mut records: Vec<SessionRecord> = futures_util::future::try_join_all(loads)
            .await?
            .into_iter()
            .flatten()
            .map(|(r, _)| r)
            .collect();
        records.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.session_id.cmp(&b.session_id))
        });
        Ok(records)
    }

    async fn join_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        admission: Admission,
    ) -> BackendResult<SessionRecord> {
        let member_of = self.shared().keys.member_of(conn_id);
        let updated = update(self, session_id, |mut rec| {
            if !add_member(&mut rec, conn_id, identity, admission)? {
                return Ok(Change::Keep(rec));
            }
            Ok(Change::Write(
                rec,
                vec![Side::Add(member_of.clone(), session_id.to_owned())],
            ))
        })
        .await?;
        updated.ok_or(BackendError::NotFound("session"))
    }

    async fn invite_session(
        &self,
        session_id: &str,
        identities: &[String],
    ) -> BackendResult<SessionRecord> {
        let updated = update(self, session_id, |mut rec| {
            if !add_invited(&mut rec, identities)? {
                return Ok(Change::Keep(rec));
            }
            Ok(Change::Write(rec, Vec::new()))
        })
        .await?;
        updated.ok_or(BackendError::NotFound("session"))
    }

    async fn leave_session(&self, session_id: &str, conn_id: &str) -> BackendResult<SessionRecord> {
        leave(self, session_id, conn_id, crate::protocol::now_ms()).await
    }

    async fn reclaim_session(
        &self,
        session_id: &str,
        conn_id: &str,
        identity: &str,
        takeover: bool,
    ) -> BackendResult<SessionRecord> {
        let keys = self.shared().keys.clone();
        let updated = update(self, session_id, |mut rec| {
            let previous = rec.owner.clone();
            if !reclaim_owner(&mut rec, conn_id, identity, takeover)? {
                return Ok(Change::Keep(rec));
            }
            let mut sides = vec![
                Side::Attached(session_id.to_owned()),
                Side::Add(keys.owned(conn_id), session_id.to_owned()),
                Side::Add(keys.member_of(conn_id), session_id.to_owned()),
            ];
            if let Some(previous) = previous {
                sides.push(Side::Remove(keys.owned(&previous), session_id.to_owned()));
            }
            Ok(Change::Write(rec, sides))
        })
        .await?;
        updated.ok_or(BackendError::NotFound("session"))
    }

    async fn patch_session(
        &self,
        session_id: &str,
        patch: &Value,
        base_version: Option<u64>,
    ) -> BackendResult<SessionRecord> {
        let updated = update(self, session_id, |mut rec| {
            patch_meta(&mut rec, patch, base_version)?;
            Ok(Change::Write(rec, Vec::new()))
        })
        .await?;
        updated.ok_or(BackendError::NotFound("session"))
    }

    async fn close_session(&self, session_id: &str) -> BackendResult<Option<SessionRecord>> {
        let keys = self.shared().keys.clone();
        let outcome = update(self, session_id, |rec| {
            let mut sides = vec![
                Side::Remove(keys.session_index(), session_id.to_owned()),
                Side::Attached(session_id.to_owned()),
            ];
            if let Some(owner) = &rec.owner {
                sides.push(Side::Remove(keys.owned(owner), session_id.to_owned()));
            }
            for member in &rec.members {
                sides.push(Side::Remove(keys.member_of(member), session_id.to_owned()));
            }
            Ok(Change::Delete(sides))
        })
        .await;
        match outcome {
            Err(BackendError::NotFound(_)) => Ok(None),
            other => other,
        }
    }

    async fn detach_connection(&self, conn_id: &str, now_ms: u64) -> BackendResult<Vec<String>> {
        let client = self.ready()?;
        let keys = &self.shared().keys;
        let mut ids: Vec<String> = client
            .sunion(vec![keys.member_of(conn_id), keys.owned(conn_id)])
            .await
            .map_err(unavailable)?;
        ids.sort();
        let mut touched = Vec::new();
        for id in ids {
            match leave(self, &id, conn_id, now_ms).await {
                Ok(_) => touched.push(id),
                Err(BackendError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(touched)
    }

    async fn expired_sessions(&self, cutoff_ms: u64) -> BackendResult<Vec<String>> {
        let client = self.ready()?;
        client
            .zrangebyscore(
                self.shared().keys.detached(),
                "-inf",
                cutoff_ms as f64,
                false,
                None,
            )
            .await
            .map_err(unavailable)
    }
}

/// The record and its revision.
async fn load(backend: &RedisBackend, id: &str) -> BackendResult<Option<(SessionRecord, String)>> {
    let client = backend.ready()?;
    let (data, rev): (Option<String>, Option<String>) = client
        .hmget(backend.shared().keys.session(id), vec!["data", "rev"])
        .await
        .map_err(unavailable)?;
    match (data, rev) {
        (Some(data), Some(rev)) => Ok(Some((parse(&data)?, rev))),
        _ => Ok(None),
    }
}

/// Drop `conn_id` from a session's members at `now_ms` (the owner leaving
/// detaches it): `leave_session`, and `detach_connection` for each session
/// the connection was in.
async fn leave(
    backend: &RedisBackend,
    id: &str,
    conn_id: &str,
    now_ms: u64,
) -> BackendResult<SessionRecord> {
    let keys = backend.shared().keys.clone();
    let updated = update(backend, id, |mut rec| {
        let mut sides = vec![Side::Remove(keys.member_of(conn_id), id.to_owned())];
        if rec.owner.as_deref() == Some(conn_id) {
            sides.push(Side::Remove(keys.owned(conn_id), id.to_owned()));
            sides.push(Side::Detached(id.to_owned(), now_ms));
        }
        remove_member(&mut rec, conn_id, now_ms);
        Ok(Change::Write(rec, sides))
    })
    .await?;
    updated.ok_or(BackendError::NotFound("session"))
}

/// A side-index change applied together with a CAS.
enum Side {
    Add(String, String),
    Remove(String, String),
    Detached(String, u64),
    Attached(String),
}

/// What a change decided.
enum Change {
    Write(SessionRecord, Vec<Side>),
    Delete(Vec<Side>),
    /// Nothing to write; answer with this record.
    Keep(SessionRecord),
}

/// Read-modify-CAS until it sticks.
async fn update<F>(
    backend: &RedisBackend,
    id: &str,
    mut change: F,
) -> BackendResult<Option<SessionRecord>>
where
    F: FnMut(SessionRecord) -> BackendResult<Change>,
{
    for _ in 0..CAS_ATTEMPTS {
        let Some((record, rev)) = load(backend, id).await? else {
            return Err(BackendError::NotFound("session"));
        };
        let before = record.clone();
        let (data, sides, result) = match change(record)? {
            Change::Keep(record) => return Ok(Some(record)),
            Change::Write(record, sides) => (json(&record)?, sides, Some(record)),
            Change::Delete(sides) => (String::new(), sides, Some(before)),
        };
        match cas(backend, id, &rev, data, sides).await? {
            1 => return Ok(result),
            -1 => return Err(BackendError::NotFound("session")),
            _ => continue,
        }
    }
    Err(BackendError::Conflict(
        "session is changing too fast; retry".into(),
    ))
}

async fn cas(
    backend: &RedisBackend,
    id: &str,
    rev: &str,
    data: String,
    sides: Vec<Side>,
) -> BackendResult<i64> {
    let client = backend.ready()?;
    let keys = &backend.shared().keys;
    let mut key_list = vec![keys.session(id)];
    let mut args = vec![rev.to_owned(), data];
    for side in sides {
        let (op, key, member, score) = match side {
            Side::Add(key, member) => ("sadd", key, member, String::new()),
            Side::Remove(key, member) => ("srem", key, member, String::new()),
            Side::Detached(member, at) => ("zadd", keys.detached(), member, at.to_string()),
            Side::Attached(member) => ("zrem", keys.detached(), member, String::new()),
        };
        key_list.push(key);
        args.extend([op.to_owned(), key_list.len().to_string(), member, score]);
    }
    backend
        .shared()
        .scripts
        .cas_session
        .evalsha_with_reload(client, key_list, args)
        .await
        .map_err(unavailable)
}
