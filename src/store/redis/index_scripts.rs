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

/// Enters a session in a principal's index, if the limit lets it.
///
/// - `KEYS[1]`: the index (sorted set: member the store key, score the
///   bind time in Unix ms); `KEYS[2]`: its mark (its size after the last
///   prune).
/// - `ARGV[1]`: the store key; `ARGV[2]`: the bind time; `ARGV[3]`: the
///   limit, or empty for none; `ARGV[4]`: `e` (evict) or `r` (refuse);
///   `ARGV[5..]`: members to remove first (found dead by the caller).
///
/// Answers `{0}` when entered and nothing more is to be done, `{1,
/// members}` when entered past an evicting limit, `{2, members}` when a
/// refusing limit is full (nothing entered), `{3, members}` when entered
/// and the index is due for a prune. The session being bound never counts
/// against its own limit.
pub(super) static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
for i = 5, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
end
local limited = ARGV[3] ~= ''
if limited and ARGV[4] == 'r' then
  local others = redis.call('ZCARD', KEYS[1])
  if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    others = others - 1
  end
  if others >= tonumber(ARGV[3]) then
    return {{2, redis.call('ZRANGE', KEYS[1], 0, -1)}}
  end
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if limited then
  if ARGV[4] == 'e' and n > tonumber(ARGV[3]) then
    return {{1, redis.call('ZRANGE', KEYS[1], 0, -1)}}
  end
  return {{0}}
end
local mark = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > 2 * mark + {PRUNE_SLACK} then
  return {{3, redis.call('ZRANGE', KEYS[1], 0, -1)}}
end
return {{0}}
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
    Script::new(
        r"
local max = tonumber(ARGV[1])
local cutoff = tonumber(ARGV[2])
local read = {}
for i = 3, #ARGV, 4 do
  read[ARGV[i]] = {ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])}
end
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local entries = {}
for j = 1, #all, 2 do
  local member = all[j]
  local score = tonumber(all[j + 1])
  local seen = read[member]
  if seen and seen[1] == 'D' and score < cutoff then
    redis.call('ZREM', KEYS[1], member)
  elseif seen and seen[1] == 'D' then
    entries[#entries + 1] = {member, -1, -1}
  elseif seen then
    entries[#entries + 1] = {member, seen[2], seen[3]}
  else
    entries[#entries + 1] = {member, score, score}
  end
end
table.sort(entries, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  if a[3] ~= b[3] then return a[3] < b[3] end
  return a[1] < b[1]
end)
local victims = {}
for k = 1, #entries - max do
  redis.call('ZREM', KEYS[1], entries[k][1])
  victims[#victims + 1] = entries[k][1]
end
redis.call('SET', KEYS[2], #entries - #victims)
return victims
",
    )
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
    Script::new(
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
end
return dropped
",
    )
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
