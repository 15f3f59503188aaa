//! Every Lua script machinist runs, in one place. Each makes one step atomic that Go does in
//! several round trips (or not atomically at all). Redis runs a script without interleaving any
//! other command; in a cluster every key a script touches must be declared and live in one slot,
//! which is why the processing and dead-letter lists carry the queue's hash tag (`keys.rs`).
//!
//! | script | keys | what |
//! |---|---|---|
//! | [`FETCH`] | queue, processing | move up to N messages queue → processing (`LRANGE`, `LTRIM`, `RPUSH`); optionally each with its task's stored state |
//! | [`REQUEUE`] | processing, queue | remove one message from processing; if it was there, push it back to the queue's front |
//! | [`DEAD_LETTER`] | processing, dead | remove one message from processing; if it was there, append its dead-letter record (trimmed) |
//! | [`REAP`] | processing, queue | move a whole processing list back to the queue's front, in order |
//! | [`MOVE_DUE`] | delayed set | move up to N due tasks to their `RoutingKey` lists (standalone) |
//! | [`CLAIM_DUE`] | delayed set | return up to N due tasks, made due again one lease later (cluster: the client pushes them, then removes them) |
//! | [`PURGE`] | queue | count and delete a queue |
//! | [`SET_STATE`] | state | (a bare `set_state`) write a state, carrying `TaskName`/`CreatedAt` over from the stored one, and announce it |
//! | [`TRIGGER_CHORD`] | group meta [, `TriggerChordMutex`] | flip `ChordTriggered` once, unless a Go worker holds the chord mutex |
//! | [`RELEASE_MUTEX`] | mutex | redsync's compare-and-delete |
//! | [`LOCK`] | lock key | Go's periodic lock: `SET NX PX`, or take over an expired deadline |

use std::sync::LazyLock;

use redis::Script;

/// KEYS: queue, processing. ARGV: n, read states (`1` or `0`). Moves up to n messages from
/// the queue's head to the processing list's tail and returns them, oldest first: what n
/// `LMOVE … LEFT RIGHT` do, in three commands whatever n (`LRANGE`, `LTRIM`, `RPUSH`),
/// atomically. With states read, returns pairs instead: each message, then the value stored
/// under its task's UUID, or `""` when there is none, it is not a string, or it was not read.
/// It is read only for a message without `"CreatedAt":"` in its last 80 bytes (a Go
/// producer's: a machinist producer's message carries its PENDING's `CreatedAt`, written after
/// Go's keys, which is all the worker wants from the state; reading it cost Redis about 2.5 µs
/// per task, and looking for the key in the whole message another 0.2–1). Where the key is
/// elsewhere, the state is read all the same (and the worker carries its `CreatedAt` over, as
/// Go would). The UUID is the first `"UUID":"…"` in the JSON, which is the signature's own in
/// Go's field order and machinist's, found without a pattern when the message starts with it;
/// the worker checks the state's `TaskUUID`. The states are read with one `MGET` per 1,000
/// messages. Only on a standalone server: the state keys are not declared (they live in other
/// cluster slots).
pub(crate) static FETCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = tonumber(ARGV[1])
if n < 1 then return {} end
local out = redis.call('LRANGE', KEYS[1], 0, n - 1)
if #out == 0 then return out end
redis.call('LTRIM', KEYS[1], #out, -1)
for i = 1, #out, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(out, i, math.min(i + 999, #out)))
end
if ARGV[2] ~= '1' then return out end
local got = #out
local with = {}
local ids, at = {}, {}
for i = 1, got do
  local m = out[i]
  with[2 * i - 1] = m
  with[2 * i] = ''
  if not string.find(m, '"CreatedAt":"', math.max(1, #m - 80), true) then
    local id
    if string.sub(m, 1, 9) == '{"UUID":"' then
      local e = string.find(m, '"', 10, true)
      if e and e > 10 then
        id = string.sub(m, 10, e - 1)
        if string.find(id, '\\', 1, true) then id = nil end
      end
    end
    if not id then id = string.match(m, '"UUID"%s*:%s*"([^"\\]+)"') end
    if id then
      ids[#ids + 1] = id
      at[#at + 1] = 2 * i
    end
  end
end
for i = 1, #ids, 1000 do
  local last = math.min(i + 999, #ids)
  local states = redis.call('MGET', unpack(ids, i, last))
  for k = i, last do
    local v = states[k - i + 1]
    if type(v) == 'string' then with[at[k]] = v end
  end
end
return with
"#,
    )
});

/// KEYS: processing, queue. ARGV: body. Returns 1 if the message was requeued, 0 if it was no
/// longer in the processing list (already settled or reaped).
pub(crate) static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
",
    )
});

/// KEYS: processing, dead. ARGV: body, record, max kept. Returns 1 if dead-lettered.
pub(crate) static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  local max = tonumber(ARGV[3])
  if max and max > 0 then redis.call('LTRIM', KEYS[2], -max, -1) end
  return 1
end
return 0
",
    )
});

/// KEYS: processing, queue. Moves every message back to the queue's front, keeping their
/// order (the oldest ends up first). Returns how many.
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT') do n = n + 1 end
return n
",
    )
});

/// The Lua helper both delayed-task scripts use to find a message's queue.
const ROUTING_KEY_LUA: &str = r"
local function routing_key(m, default)
  local ok, sig = pcall(cjson.decode, m)
  if ok and type(sig) == 'table' then
    local rk = sig['RoutingKey']
    if rk == nil then
      for k, v in pairs(sig) do
        if type(k) == 'string' and string.lower(k) == 'routingkey' then rk = v end
      end
    end
    if type(rk) == 'string' and rk ~= '' then return rk end
  end
  return default
end
";

/// KEYS: delayed set. ARGV: now (unix ns), default queue, limit. Moves up to `limit` tasks due
/// at `now` to their `RoutingKey` (the default queue when empty or undecodable) with `RPUSH`,
/// the same bytes Go re-pushes. Returns `{moved, earliest remaining score or ''}`.
///
/// The queue keys are not declared (they come from the messages), which standalone Redis
/// allows; clusters use [`CLAIM_DUE`].
pub(crate) static MOVE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ROUTING_KEY_LUA}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #due do
  local m = due[i]
  redis.call('ZREM', KEYS[1], m)
  redis.call('RPUSH', routing_key(m, ARGV[2]), m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {{#due, nxt[2] or ''}}
"
    ))
});

/// KEYS: delayed set. ARGV: now (unix ns), limit, claimed until (unix ns). Claims up to
/// `limit` due tasks: each stays in the set with the score `claimed until`, so no other mover
/// takes it meanwhile, and returns `{tasks, earliest remaining score or ''}`. The client pushes
/// each to its queue, then removes it from the set; a client that dies between the two leaves
/// its claimed tasks to be claimed again once they are due again (at-least-once: a task pushed
/// but not yet removed may be pushed twice, none is lost).
pub(crate) static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #due do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], due[i]) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {due, nxt[2] or ''}
",
    )
});

/// KEYS: queue. Returns the queue's length, then deletes it.
pub(crate) static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
",
    )
});

/// Lua: `s` as a JSON string literal in Go's bytes (cjson escapes `/` and leaves `<`, `>`,
/// `&`, U+2028, U+2029 raw; Go does the opposite, and keeps DEL raw). A string with nothing
/// either would escape (no control byte, `"`, `\`, `/`, `<`, `>`, `&` or non-ASCII byte — task
/// names and times) is quoted as it is, without cjson and the substitutions.
const GO_STRING_LUA: &str = r#"
local function go_string(s)
  if not string.find(s, '[%c"\\/<>&\128-\255]') then return '"' .. s .. '"' end
  local e = cjson.encode(s)
  e = string.gsub(e, '\\/', '/')
  e = string.gsub(e, '<', '\\u003c')
  e = string.gsub(e, '>', '\\u003e')
  e = string.gsub(e, '&', '\\u0026')
  e = string.gsub(e, '\226\128\168', '\\u2028')
  e = string.gsub(e, '\226\128\169', '\\u2029')
  e = string.gsub(e, '\\u007f', '\127')
  return e
end
"#;

/// KEYS: state. ARGV: new JSON, expiry seconds, position of the `TaskName` value `""` (1-based,
/// 0 = keep the new one), position of the `CreatedAt` value `"0001-01-01T00:00:00Z"` (same),
/// announcement channel (empty: none), announcement message.
///
/// Reads the stored state (a WRONGTYPE error if the key is not a string), decodes it with
/// cjson, and splices its `TaskName` and `CreatedAt` into the new JSON text at the given
/// positions — the rest of the new bytes, and so Go's key order and escaping, are kept. A
/// stored value that is not a JSON object is overwritten without merging. Then
/// `SET key json EX ttl`; then, when a channel is given, `PUBLISH` the message (the state's
/// name) on it: the announcement result waiters subscribe to (`notify.rs`).
pub(crate) static SET_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{GO_STRING_LUA}
local new = ARGV[1]
local old = redis.call('GET', KEYS[1])
if old then
  local ok, prev = pcall(cjson.decode, old)
  if ok and type(prev) == 'table' then
    local name_at = tonumber(ARGV[3])
    local created_at = tonumber(ARGV[4])
    local zero = '"0001-01-01T00:00:00Z"'
    if created_at > 0 and type(prev['CreatedAt']) == 'string'
        and string.sub(new, created_at, created_at + #zero - 1) == zero then
      new = string.sub(new, 1, created_at - 1) .. go_string(prev['CreatedAt'])
        .. string.sub(new, created_at + #zero)
    end
    if name_at > 0 and type(prev['TaskName']) == 'string' and prev['TaskName'] ~= ''
        and string.sub(new, name_at, name_at + 1) == '""' then
      new = string.sub(new, 1, name_at - 1) .. go_string(prev['TaskName'])
        .. string.sub(new, name_at + 2)
    end
  end
end
redis.call('SET', KEYS[1], new, 'EX', ARGV[2])
if ARGV[5] and ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return 1
"#
    ))
});

/// KEYS: group meta [, `TriggerChordMutex`]. Returns `busy` while the mutex key exists (a Go
/// worker is inside its redsync-guarded trigger), `missing` when the meta is gone, `corrupt`
/// when it is not a JSON object, `already` when `ChordTriggered` is true, else flips it to
/// true in the text (keeping every other byte and the key's expiry) and returns `won`.
pub(crate) static TRIGGER_CHORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 'busy' end
local meta = redis.call('GET', KEYS[1])
if not meta then return 'missing' end
local ok, m = pcall(cjson.decode, meta)
if not ok or type(m) ~= 'table' then return 'corrupt' end
if m['ChordTriggered'] == true then return 'already' end
local s, e = string.find(meta, '"ChordTriggered"%s*:%s*false')
local new
if s then
  new = string.sub(meta, 1, s - 1) .. '"ChordTriggered":true' .. string.sub(meta, e + 1)
else
  m['ChordTriggered'] = true
  new = cjson.encode(m)
end
redis.call('SET', KEYS[1], new, 'KEEPTTL')
return 'won'
"#,
    )
});

/// KEYS: mutex. ARGV: token. Deletes the key only if it still holds `token` (redsync's
/// release).
pub(crate) static RELEASE_MUTEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// KEYS: lock key. ARGV: deadline (unix ns), expiry (ms), now (unix ns). Go's periodic lock in
/// one step: `SET key deadline PX ttl NX`; if the key exists, the lock is still taken when its
/// stored deadline has passed (Go: `GETSET`, succeed if the old deadline had passed, then
/// `EXPIRE`). Returns 1 when taken.
pub(crate) static LOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
local cur = tonumber(redis.call('GET', KEYS[1]))
if cur and cur ~= 0 and tonumber(ARGV[3]) > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
",
    )
});
