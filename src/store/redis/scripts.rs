//! The Lua scripts that make each write one atomic round trip.
//!
//! Every script takes the session's hash as its only key, so it runs on the
//! one node that owns the key's slot, also on Redis Cluster. Scripts are
//! sent as `EVALSHA` with their 40-character hash; the script text goes over
//! the wire only when the server does not know it yet (after a restart or a
//! failover), through [`redis::Script`]'s fallback.

use std::sync::LazyLock;

use ::redis::Script;

/// Stores a new session unless the key exists.
///
/// - `KEYS[1]`: the session's hash.
/// - `ARGV[1]`: the expiry, Unix milliseconds.
/// - `ARGV[2..]`: field, value, field, value, ...
///
/// Answers 1 when stored, 0 when the key was taken.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 2, #ARGV, 200 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 199, #ARGV)))
end
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
",
    )
});

/// Applies a change set to a live session; writes nothing to a missing one.
///
/// - `KEYS[1]`: the session's hash.
/// - `ARGV[1]`: the new expiry in Unix milliseconds, or empty to keep it.
/// - `ARGV[2]`: how many of the following arguments are fields and values
///   to set (twice the number of fields).
/// - then the fields and values to set, then the fields to delete.
///
/// Answers 1 when written, 0 when the session is gone.
pub(super) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local last = 2 + tonumber(ARGV[2])
for i = 3, last, 200 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 199, last)))
end
for i = last + 1, #ARGV, 200 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 199, #ARGV)))
end
if ARGV[1] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[1])
end
return 1
",
    )
});

/// Swaps one field of a live session if it holds the expected value.
///
/// - `KEYS[1]`: the session's hash.
/// - `ARGV[1]`: the field.
/// - `ARGV[2]`: the expected value: `0` for absent, or `1` followed by the
///   value.
/// - `ARGV[3]`: the new value, encoded the same way (`0`: delete the field).
///
/// Answers `{1}` when swapped, `{2, current}` (or `{2}` when the field is
/// absent) on a mismatch, and `{0}` when the session is gone.
pub(super) static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local current = redis.call('HGET', KEYS[1], ARGV[1])
local expected = ARGV[2]
local matches
if current then
  matches = string.sub(expected, 1, 1) == '1' and string.sub(expected, 2) == current
else
  matches = expected == '0'
end
if not matches then
  if current then
    return {2, current}
  end
  return {2}
end
if string.sub(ARGV[3], 1, 1) == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], string.sub(ARGV[3], 2))
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return {1}
",
    )
});

/// `0` for `None`, `1` followed by the bytes for `Some`: how the
/// compare-and-set script tells an absent value from an empty one.
pub(super) fn tagged(value: Option<&str>) -> Vec<u8> {
    match value {
        None => vec![b'0'],
        Some(text) => {
            let mut bytes = Vec::with_capacity(text.len() + 1);
            bytes.push(b'1');
            bytes.extend_from_slice(text.as_bytes());
            bytes
        }
    }
}
