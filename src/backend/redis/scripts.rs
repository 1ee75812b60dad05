//! Lua scripts: every decision that reads and writes several keys runs
//! atomically in Redis, loaded once and called by SHA (reloaded after a
//! Redis restart by `evalsha_with_reload`).

use fred::types::scripts::Script;

/// Sliding window. KEYS: window zset, its total. ARGV: now, window_ms,
/// limit, want, unique id. Returns {granted, count, retry_after_ms}.
/// `want = 0` peeks.
///
/// A grant is one member, `<unique>#<n>` scored by time (a member without
/// `#` counts one: windows written by earlier versions), and the total of
/// the members in the window is kept beside the set, so a lease of 1 000
/// hits is one `ZADD`, not 1 000, and the count is one `GET`. Members
/// leaving the window are read once, as they leave, to take them off the
/// total; a total that is missing is counted again from the set.
const RATE: &str = r#"
local key, total = KEYS[1], KEYS[2]
local now, win = tonumber(ARGV[1]), tonumber(ARGV[2])
local limit, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local function size(member)
  local n = string.match(member, '#(%d+)$')
  if n then return tonumber(n) end
  return 1
end
local count = tonumber(redis.call('GET', total) or '-1')
local changed = false
if count < 0 then
  count = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. (now - win), '+inf')) do
    count = count + size(m)
  end
  changed = true
else
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now - win)) do
    count = count - size(m)
    changed = true
  end
  count = math.max(0, count)
end
if changed then redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win) end
local before = count
local granted = math.max(0, math.min(limit - count, want))
if granted > 0 then
  redis.call('ZADD', key, now, ARGV[5] .. '#' .. granted)
  redis.call('PEXPIRE', key, win)
  count = count + granted
  redis.call('SET', total, count, 'PX', win)
elseif changed then
  -- The total expires with the set, never after it.
  local ttl = redis.call('PTTL', key)
  if ttl == -2 then
    redis.call('DEL', total)
  elseif ttl > 0 then
    redis.call('SET', total, count, 'PX', ttl)
  else
    redis.call('SET', total, count, 'PX', win)
  end
end
local retry = 0
if before >= limit then
  -- Room for one hit once this many have left the window.
  local over = before - limit + 1
  local t = now
  local oldest = redis.call('ZRANGE', key, 0, 63, 'WITHSCORES')
  for i = 1, #oldest, 2 do
    t = tonumber(oldest[i + 1])
    over = over - size(oldest[i])
    if over <= 0 then break end
  end
  retry = math.max(1, t + win - now)
end
return {granted, count, retry}
"#;

/// Credential checks of one address (`ratelimit::CheckLog`): members
/// `p:<id>` (running) and `f:<id>` (failed), score = ms. KEYS: the zset.
/// ARGV: op (reserve|fail|pass), check id; reserve adds now, window_ms,
/// limit, pending_ms, retry_ms. reserve → {allowed, count, retry_after_ms}:
/// retry is when the oldest counted entry leaves the window, or retry_ms
/// when a check younger than pending_ms still runs. fail keeps the slot as
/// a failure, pass frees it; both → {1, 0, 0}.
const CHECK: &str = r#"
local key, op, id = KEYS[1], ARGV[1], ARGV[2]
if op == 'reserve' then
  local now, win = tonumber(ARGV[3]), tonumber(ARGV[4])
  local limit, pending, short = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
  local count = redis.call('ZCARD', key)
  if count < limit then
    redis.call('ZADD', key, now, 'p:' .. id)
    redis.call('PEXPIRE', key, win)
    return {1, count + 1, 0}
  end
  local idx = math.max(0, count - limit)
  local oldest = redis.call('ZRANGE', key, idx, idx, 'WITHSCORES')
  local t = now
  if oldest[2] then t = tonumber(oldest[2]) end
  local retry = t + win - now
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '(' .. (now - pending), '+inf')) do
    if string.sub(m, 1, 2) == 'p:' then
      retry = math.min(retry, short)
      break
    end
  end
  return {0, count, math.max(1, retry)}
end
local score = redis.call('ZSCORE', key, 'p:' .. id)
if score then
  redis.call('ZREM', key, 'p:' .. id)
  if op == 'fail' then redis.call('ZADD', key, score, 'f:' .. id) end
end
return {1, 0, 0}
"#;

/// Targeted delivery in one round trip. KEYS: owners hash. ARGV: conn id,
/// inbox prefix, payload. Returns 1 when an owner was found.
const ROUTE: &str = r#"
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return 0 end
redis.call('PUBLISH', ARGV[2] .. owner, ARGV[3])
return 1
"#;

/// KEYS: subscribers hash, channel index, conn channels. ARGV: conn,
/// member JSON or "", channel.
const JOIN: &str = r#"
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
end
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"#;

/// KEYS: subscribers hash, channel index, conn channels. ARGV: conn,
/// channel. Returns the member JSON that was removed ("" if none).
const LEAVE: &str = r#"
local member = redis.call('HGET', KEYS[1], ARGV[1])
if member then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
redis.call('SREM', KEYS[3], ARGV[2])
return member or ''
"#;

/// KEYS: session, owned(owner), index, member-of(owner). ARGV: data,
/// max owned, id. Returns 1, -1 (exists) or -2 (owner at its limit).
const CREATE_SESSION: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -2 end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'rev', 1)
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3])
return 1
"#;

/// Compare-and-set of a session. KEYS[1]: session; KEYS[2..]: keys of the
/// side operations. ARGV: expected rev, new data ("" deletes the session),
/// then groups of four: op (sadd|srem|zadd|zrem), key index, member, score.
/// Returns 1, 0 (rev changed: retry) or -1 (gone).
const CAS_SESSION: &str = r#"
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'data', ARGV[2], 'rev', tonumber(rev) + 1)
end
local i = 3
while i + 3 <= #ARGV do
  local op, k, m = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if op == 'sadd' then redis.call('SADD', k, m)
  elseif op == 'srem' then redis.call('SREM', k, m)
  elseif op == 'zadd' then redis.call('ZADD', k, ARGV[i + 3], m)
  elseif op == 'zrem' then redis.call('ZREM', k, m)
  end
  i = i + 4
end
return 1
"#;

/// All scripts, hashed once.
/// Start a run. KEYS: runs hash, the caller's running set. ARGV: session,
/// run JSON, max running per caller. Returns 1, -1 (session busy) or -2
/// (caller at its limit).
const START_RUN: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if ok and rec.status == 'running' then return -1 end
end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -2 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"#;

/// Move a run from one status to another if it is still the session's run
/// with that status and re-attach count: finishing (running → an end, the
/// first finisher wins) or re-attaching (error → running). KEYS: runs
/// hash, the caller's running set. ARGV: session, run id, expected status,
/// expected count, new JSON, 'add' or 'rem' (the running set). Returns 1
/// or 0.
const SWAP_RUN: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local ok, rec = pcall(cjson.decode, cur)
if not ok or rec.status ~= ARGV[3] or rec.runId ~= ARGV[2] then return 0 end
if (tonumber(rec.attached) or 0) ~= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
if ARGV[6] == 'add' then
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"#;

/// Create an approval. KEYS: record, pending set. ARGV: JSON, id, ttl ms,
/// created-at. Returns 1, or 0 when the id exists.
const CREATE_APPROVAL: &str = r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
return 1
"#;

/// Decide an approval: first decision wins. KEYS: record, pending set,
/// audit list. ARGV: id, decided JSON, audit length, ttl ms. Returns "ok",
/// "missing", or the status it already had.
const RESOLVE_APPROVAL: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return 'missing' end
local ok, rec = pcall(cjson.decode, cur)
if not ok then return 'corrupt' end
if rec.status ~= 'pending' then return rec.status end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
return 'ok'
"#;

/// Release a lock if it is still ours. KEYS: lock. ARGV: holder.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Number, log and publish a frame on a channel (`backend::channel_log`). KEYS:
/// offset, log — tagged like the topic, which on Redis Cluster must sit on
/// the same shard for `SPUBLISH` here. ARGV: head, tail, keep, ttl_ms,
/// topic, `publish` or `spublish`. Returns the offset.
const LOG_PUBLISH: &str = r#"
local offset = redis.call('INCR', KEYS[1])
local frame = ARGV[1] .. offset .. ARGV[2]
redis.call('RPUSH', KEYS[2], frame)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call(ARGV[6], ARGV[5], '0' .. frame)
return offset
"#;

/// Read a channel's log after an offset. KEYS: offset, log. ARGV: after,
/// limit. Returns {latest, first kept offset, frames...}.
const LOG_READ: &str = r#"
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local len = redis.call('LLEN', KEYS[2])
local first = latest - len + 1
local start = math.max(0, tonumber(ARGV[1]) + 1 - first)
local out = {latest, first}
if start < len then
  local frames = redis.call('LRANGE', KEYS[2], start, start + tonumber(ARGV[2]) - 1)
  for _, f in ipairs(frames) do out[#out + 1] = f end
end
return out
"#;

/// Move a channel's offset forward to at least ARGV[1]; a log numbered
/// under the old offset no longer lines up and is dropped. KEYS: offset,
/// log. ARGV: offset, ttl_ms.
const LOG_ADVANCE: &str = r#"
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
if latest < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[2])
end
return 1
"#;

pub struct Scripts {
    pub rate: Script,
    pub check: Script,
    pub route: Script,
    pub join: Script,
    pub leave: Script,
    pub create_session: Script,
    pub cas_session: Script,
    pub start_run: Script,
    pub swap_run: Script,
    pub create_approval: Script,
    pub resolve_approval: Script,
    pub unlock: Script,
    pub log_publish: Script,
    pub log_read: Script,
    pub log_advance: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            rate: Script::from_lua(RATE),
            check: Script::from_lua(CHECK),
            route: Script::from_lua(ROUTE),
            join: Script::from_lua(JOIN),
            leave: Script::from_lua(LEAVE),
            create_session: Script::from_lua(CREATE_SESSION),
            cas_session: Script::from_lua(CAS_SESSION),
            start_run: Script::from_lua(START_RUN),
            swap_run: Script::from_lua(SWAP_RUN),
            create_approval: Script::from_lua(CREATE_APPROVAL),
            resolve_approval: Script::from_lua(RESOLVE_APPROVAL),
            unlock: Script::from_lua(UNLOCK),
            log_publish: Script::from_lua(LOG_PUBLISH),
            log_read: Script::from_lua(LOG_READ),
            log_advance: Script::from_lua(LOG_ADVANCE),
        }
    }
}
