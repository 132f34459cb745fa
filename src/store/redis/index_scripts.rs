//! The Lua scripts of the principal index (see [`super::principals`]).
//!
//! [`ADMIT`], [`EVICT`] and [`PRUNE`] take the principal's index and its
//! mark as their keys, which share the principal's hash tag; [`SETTLE`]
//! takes a session's hash and its tombstone, which share the session's.
//! So each runs on the one node that owns its slot, also on a cluster.

use std::sync::LazyLock;

use ::redis::Script;

use super::codec;
use super::scripts::field;

/// How far an index may grow past twice its size after the last prune
/// before a binding without a limit prunes it.
pub(super) const PRUNE_SLACK: u32 = 16;

/// A Lua function that makes an index (`KEYS[1]`) and its mark (`KEYS[2]`)
/// live at least until `target` (Unix ms, as Redis's clock reads it):
/// raises their expiry, never lowers it. A persistent index is given one
/// only when `force` is set; a missing one is left missing. Answers the
/// index's expiry after (Unix ms), -1 when persistent, -2 when missing.
///
/// The current expiry is `TIME` plus `PTTL` (`PEXPIRETIME` would need
/// Redis 7), and `PEXPIREAT` sets the new one: no `GT` flag, which Redis
/// 6.2 lacks for `PEXPIREAT` on a key without expiry.
const RAISE: &str = r"
local function raise(target, force)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl == -2 or (ttl == -1 and not force) then
    return ttl
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if ttl >= 0 and now + ttl >= tonumber(target) then
    return now + ttl
  end
  redis.call('PEXPIREAT', KEYS[1], target)
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('PEXPIREAT', KEYS[2], target)
  end
  return tonumber(target)
end
";

/// Lua that gives the mark (`KEYS[2]`), just written by `SET` (which
/// clears a key's expiry), the index's expiry; or deletes it when the
/// index is gone.
const MARK_FOLLOWS: &str = r"
local left = redis.call('PTTL', KEYS[1])
if left == -2 then
  redis.call('DEL', KEYS[2])
elseif left > 0 then
  redis.call('PEXPIRE', KEYS[2], left)
end";

/// Raises the expiry of a principal's index and its mark (see [`RAISE`]).
///
/// - `KEYS[1]`: the index; `KEYS[2]`: its mark.
/// - `ARGV[1]`: the earliest expiry wanted, Unix ms; `ARGV[2]`: `f` to give
///   a persistent index (written before indexes expired) an expiry, empty
///   to leave it persistent.
///
/// Answers as [`RAISE`].
pub(super) static EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{RAISE}\nreturn raise(ARGV[1], ARGV[2] == 'f')\n")));

/// Enters a session in a principal's index, if the limit lets it.
///
/// - `KEYS[1]`: the index (sorted set: member the store key, score the
///   bind time in Unix ms); `KEYS[2]`: its mark (its size after the last
///   prune).
/// - `ARGV[1]`: the store key; `ARGV[2]`: the bind time; `ARGV[3]`: the
///   limit, or empty for none; `ARGV[4]`: `e` (evict) or `r` (refuse);
///   `ARGV[5]`: when the index may expire at the earliest (Unix ms: the
///   session's expiry plus headroom); `ARGV[6..]`: members to remove first
///   (found dead by the caller).
///
/// Answers `{0, expiry}` when entered and nothing more is to be done, `{1,
/// expiry, members}` when entered past an evicting limit, `{2, 0,
/// members}` when a refusing limit is full (nothing entered), `{3, expiry,
/// members}` when entered and the index is due for a prune. The session
/// being bound never counts against its own limit. `expiry` is when the
/// index expires once entered (raised to `ARGV[5]` if earlier), or -1 for
/// an index written before indexes expired, which the script leaves
/// persistent: only the caller, having read every member, can tell how
/// long it must live.
pub(super) static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{RAISE}
local legacy = redis.call('PTTL', KEYS[1]) == -1
for i = 6, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
local limited = ARGV[3] ~= ''
if limited and ARGV[4] == 'r' then
  local others = redis.call('ZCARD', KEYS[1])
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    others = others - 1
  end
  if others >= tonumber(ARGV[3]) then
    return {{2, 0, redis.call('ZRANGE', KEYS[1], 0, -1)}}
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
local code = 0
if limited then
  if ARGV[4] == 'e' and n > tonumber(ARGV[3]) then
    code = 1
  end
elseif n > 2 * tonumber(redis.call('GET', KEYS[2]) or '0') + {PRUNE_SLACK} then
  code = 3
end
local members = nil
if code ~= 0 then
  members = redis.call('ZRANGE', KEYS[1], 0, -1)
end
local expiry = -1
if not legacy then
  expiry = raise(ARGV[5], true)
end
if members then
  return {{code, expiry, members}}
end
return {{code, expiry}}
"
    ))
});

/// Takes the least recently used sessions out of an index that holds more
/// than its limit, and answers them (the caller then deletes them).
///
/// - `KEYS[1]`: the index; `KEYS[2]`: its mark.
/// - `ARGV[1]`: the limit; `ARGV[2]`: the grace cutoff (Unix ms);
///   `ARGV[3..]`: what the caller read of the members, four arguments
///   each: the store key, `L` (live and bound to the principal) or `D`
///   (not), the last access and the creation time (Unix ms).
///
/// Members read as `D` whose bind time is before the cutoff ended long ago
/// and are only dropped. Other `D` members (ended, or a binding still on
/// its way) are evicted first, then live ones by last access and creation
/// time; members the caller did not read (bound since) rank by their bind
/// time.
pub(super) static EVICT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local max = tonumber(ARGV[1])
local cutoff = tonumber(ARGV[2])
local read = {{}}
for i = 3, #ARGV, 4 do
  read[ARGV[i]] = {{ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])}}
end
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local entries = {{}}
for j = 1, #all, 2 do
  local member = all[j]
  local score = tonumber(all[j + 1])
  local seen = read[member]
  if seen and seen[1] == 'D' and score < cutoff then
    redis.call('ZREM', KEYS[1], member)
  elseif seen and seen[1] == 'D' then
    entries[#entries + 1] = {{member, -1, -1}}
  elseif seen then
    entries[#entries + 1] = {{member, seen[2], seen[3]}}
  else
    entries[#entries + 1] = {{member, score, score}}
  end
end
table.sort(entries, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  if a[3] ~= b[3] then return a[3] < b[3] end
  return a[1] < b[1]
end)
local victims = {{}}
for k = 1, #entries - max do
  redis.call('ZREM', KEYS[1], entries[k][1])
  victims[#victims + 1] = entries[k][1]
end
redis.call('SET', KEYS[2], #entries - #victims)
{MARK_FOLLOWS}
return victims
"
    ))
});

/// Drops members from an index, and deletes the index when it is empty.
///
/// - `KEYS[1]`: the index; `KEYS[2]`: its mark.
/// - `ARGV[1]`: drop only members bound before this time (Unix ms), or
///   empty for any; `ARGV[2..]`: the members.
///
/// Answers how many members it dropped, and records the size left as the
/// mark.
pub(super) static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local dropped = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and (ARGV[1] == '' or tonumber(score) < tonumber(ARGV[1])) then
    dropped = dropped + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('SET', KEYS[2], n)
  {MARK_FOLLOWS}
end
return dropped
"
    ))
});

/// Settles one member of a principal's index in its session's slot.
///
/// - `KEYS[1]`: the session's hash; `KEYS[2]`: its tombstone.
/// - `ARGV[1]`: the principal's name; `ARGV[2]`: `d` (evict), `c`
///   (check) or `r` (revoke); `ARGV[3]`: the tombstone's value;
///   `ARGV[4]`: the tombstone's lifetime in ms.
///
/// A session bound to the principal is deleted (`d`, `r`) or kept (`c`),
/// and the answer is 1. Otherwise the answer is 0, and (`d`, `c`) the
/// tombstone is set, so that a binding of this key to the principal still
/// on its way writes nothing: after this script, the key is not a live
/// session of the principal and will not become one by that binding.
pub(super) static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
if redis.call('HGET', KEYS[1], '{principal}') == ARGV[1] then
  if ARGV[2] ~= 'c' then
    redis.call('DEL', KEYS[1])
  end
  return 1
end
if ARGV[2] ~= 'r' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
return 0
",
        principal = field(codec::PRINCIPAL),
    ))
});
