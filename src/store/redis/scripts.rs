//! The Lua scripts that make each write one atomic round trip.
//!
//! Every script takes the session's hash as its only key, so it runs on the
//! one node that owns the key's slot, also on Redis Cluster. Scripts are
//! sent as `EVALSHA` with their 40-character hash; the script text goes over
//! the wire only when the server does not know it yet (after a restart or a
//! failover), through [`redis::Script`]'s fallback.

use std::sync::LazyLock;

use ::redis::Script;

use super::codec;

/// Stores a new session unless the key exists.
///
/// - `KEYS[1]`: the session's hash.
/// - `ARGV[1]`: the expiry, Unix milliseconds.
/// - `ARGV[2]`: the split length (see [`EXPAND`]), `0` for none.
/// - `ARGV[3..]`: field, value, field, value, ...
///
/// Answers 1 when stored, 0 when the key was taken.
pub(super) static CREATE: LazyLock<Script> = LazyLock::new(|| Script::new(&create_script("")));

/// [`CREATE`] for a session bound to a principal (the fields include
/// `m:principal`), which writes nothing if the principal's index evicted
/// the key before it was stored.
///
/// - `KEYS[2]`: the key's tombstone (see [`super::principals`]).
///
/// Answers as [`CREATE`], or 2 when the key was evicted.
pub(super) static CREATE_BOUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&create_script(
        "if redis.call('EXISTS', KEYS[2]) == 1 then\n  return 2\nend",
    ))
});

fn create_script(preamble: &str) -> String {
    format!(
        r"{preamble}
{EXPAND}
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local sets = expand(KEYS[1], 3, #ARGV, tonumber(ARGV[2]), true)
batched('HSET', KEYS[1], sets)
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"
    )
}

/// Lua shared by the scripts that write attributes: `expand` turns the
/// field-value pairs `ARGV[first..=last]` into the arguments of `HSET`,
/// splitting an attribute's value in two when that keeps the hash a
/// listpack, and lists the continuation fields that a value written whole
/// leaves stale; `batched` sends a long argument list in slices that Lua's
/// `unpack` can hold.
///
/// Redis keeps a hash compact (a listpack) only while every name and value
/// is at most `hash-max-listpack-value` bytes (64 by default); one longer
/// value turns it into a hashtable, about 60 bytes more per field, for
/// good. With a split length `split` (the server's setting, or 0 for
/// none), an attribute value longer than `split` and at most twice as long
/// is stored as its first `split` bytes under `a:<name>` and the rest under
/// `b:<name>`; readers join the two. Nothing is split when the hash is a
/// hashtable already (`fresh` is false and `OBJECT ENCODING` says so), or
/// when this write holds a name or value the split cannot keep compact,
/// since the hash then becomes a hashtable anyway. An attribute written
/// whole deletes its continuation, so no stale rest outlives its value.
pub(super) const EXPAND: &str = r"
local function expand(key, first, last, split, fresh)
  local long = false
  if split > 0 then
    for i = first, last, 2 do
      local n = string.len(ARGV[i + 1])
      local attribute = string.sub(ARGV[i], 1, 2) == 'a:'
      if string.len(ARGV[i]) > split or n > 2 * split or (n > split and not attribute) then
        split = 0
        break
      end
      if n > split then
        long = true
      end
    end
  end
  if long and split > 0 and not fresh then
    local encoding = redis.call('OBJECT', 'ENCODING', key)
    if encoding ~= 'listpack' and encoding ~= 'ziplist' then
      split = 0
    end
  end
  local sets, stale = {}, {}
  for i = first, last, 2 do
    local field, value = ARGV[i], ARGV[i + 1]
    if string.sub(field, 1, 2) == 'a:' then
      local rest = 'b:' .. string.sub(field, 3)
      if split > 0 and string.len(value) > split then
        table.insert(sets, field)
        table.insert(sets, string.sub(value, 1, split))
        table.insert(sets, rest)
        table.insert(sets, string.sub(value, split + 1))
      else
        table.insert(sets, field)
        table.insert(sets, value)
        table.insert(stale, rest)
      end
    else
      table.insert(sets, field)
      table.insert(sets, value)
    end
  end
  return sets, stale
end
local function batched(command, key, items)
  for i = 1, #items, 200 do
    redis.call(command, key, unpack(items, i, math.min(i + 199, #items)))
  end
end
";

/// Applies a change set to a live session; writes nothing to a missing one,
/// to one whose verifier hash is not the required one, or when the change
/// adds names past the attribute limit.
///
/// - `KEYS[1]`: the session's hash.
/// - `ARGV[1]`: the verifier hash the stored one must equal, or empty.
/// - `ARGV[2]`: the touch's access time in Unix milliseconds, or empty to
///   keep the access time and the expiry.
/// - `ARGV[3]`: the absolute timeout in milliseconds, or empty for none.
/// - `ARGV[4]`: the touch interval in milliseconds, or empty for a
///   twentieth of the idle timeout.
/// - `ARGV[5]`: the attribute limit, or empty for none.
/// - `ARGV[6]`: how many of the arguments after `ARGV[7]` are fields and
///   values to set (twice the number of fields).
/// - `ARGV[7]`: the split length (see [`EXPAND`]), `0` for none.
/// - then the fields and values to set, then the attribute fields to
///   delete (their continuations go with them).
///
/// One `HMGET` reads what every check needs: whether the session exists,
/// its verifier hash, the times a touch works from, and which attributes set
/// have a rest to delete. The attribute limit
/// counts fields one by one only when the session's size plus the names set
/// could pass it (`HLEN` also counts continuation fields, so it is an upper
/// bound; the script then counts the `a:` fields).
///
/// The touch is applied only once it is due, the interval after the stored
/// access. It moves the expiry to the earlier of the access time plus the
/// idle timeout (as stored after the change) and the creation time plus the
/// absolute timeout. Lua numbers are doubles, exact for integers below 2^53:
/// milliseconds since 1970 stay far below.
///
/// Answers 1 when written, 2 when over the limit, 0 when gone, 3 when the
/// stored verifier hash is not the required one. When written to a session
/// bound to a principal, whose touch moved its expiry later, it answers
/// `{1, principal, wanted}` instead: the principal's index must then live
/// until `wanted` (the new expiry plus the idle timeout), which the caller
/// sees to, as the index may sit on another node.
pub(super) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&apply_script(
        "",
        "#ARGV",
        "",
        "if expires and meta[5] and expires > tonumber(meta[7] or '0') then
  return {1, meta[5], expires + idle}
end
return 1",
    ))
});

/// [`APPLY`] for a change set that binds the session to a principal (the
/// fields set include `m:principal`), which writes nothing if the
/// principal's index evicted the key meanwhile.
///
/// - `KEYS[2]`: the key's tombstone (see [`super::principals`]).
/// - the last but one `ARGV`: when the principal's index expires (Unix
///   ms).
/// - the last `ARGV`: the tombstone's value that names this principal.
///
/// Answers as [`APPLY`], except that "written" is `{1}`, or
/// `{1, previous}` when the session was bound to a principal before; and
/// `{4, wanted}`, writing nothing, when the index would not outlive the
/// session's expiry (after the touch) by its idle timeout: the caller
/// raises the index's expiry to `wanted` and tries again.
pub(super) static APPLY_BOUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&apply_script(
        "if redis.call('GET', KEYS[2]) == ARGV[#ARGV] then\n  return 0\nend",
        "#ARGV - 2",
        "local wanted = (expires or tonumber(meta[7] or '0')) + idle
if wanted > tonumber(ARGV[#ARGV - 1]) then
  return {4, wanted}
end",
        "return {1, meta[5]}",
    ))
});

/// How many of the attributes a change sets the apply script asks about
/// their rest (`b:`) in the `HMGET` it starts with, so that it deletes only
/// the rests that exist; the rests of any further ones it deletes blindly.
/// Bounded, since Lua's `unpack` holds some thousands of values.
const PROBED_RESTS: usize = 64;

/// The apply script: `preamble` runs first, the delete list ends at
/// argument `argc`, `check` runs before anything is written (with the
/// touch's new expiry in `expires`, `nil` when the touch is not due) and
/// `written` answers once written.
fn apply_script(preamble: &str, argc: &str, check: &str, written: &str) -> String {
    format!(
        r"{preamble}
{EXPAND}
local key = KEYS[1]
local last = 7 + tonumber(ARGV[6])
local probe = {{'{verifier}', '{created}', '{max_inactive}', '{accessed}', '{principal}', '{label}', '{expires}'}}
for i = 8, math.min(last, 7 + 2 * {probed}), 2 do
  if string.sub(ARGV[i], 1, {prefix_len}) == '{attribute}' then
    table.insert(probe, '{rest}' .. string.sub(ARGV[i], {prefix_len} + 1))
  end
end
local meta = redis.call('HMGET', key, unpack(probe))
if not meta[1] then
  return 0
end
if ARGV[1] ~= '' and meta[1] ~= ARGV[1] then
  return 3
end
local absent = {{}}
for j = 8, #probe do
  if not meta[j] then
    absent[probe[j]] = true
  end
end
local idle = tonumber(meta[3])
local names = 0
for i = 8, last, 2 do
  if string.sub(ARGV[i], 1, {prefix_len}) == '{attribute}' then
    names = names + 1
  elseif ARGV[i] == '{max_inactive}' then
    idle = tonumber(ARGV[i + 1])
  end
end
if ARGV[5] ~= '' then
  local limit = tonumber(ARGV[5])
  local stored = redis.call('HLEN', key) - {metadata_count}
  if meta[5] then stored = stored - 1 end
  if meta[6] then stored = stored - 1 end
  if stored + names > limit then
    stored = 0
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, {prefix_len}) == '{attribute}' then
        stored = stored + 1
      end
    end
  end
  if stored + names > limit then
    local added = 0
    for i = 8, last, 2 do
      if string.sub(ARGV[i], 1, {prefix_len}) == '{attribute}' and redis.call('HEXISTS', key, ARGV[i]) == 0 then
        added = added + 1
      end
    end
    if added > 0 then
      local count = stored + added
      for i = last + 1, {argc} do
        count = count - redis.call('HEXISTS', key, ARGV[i])
      end
      if count > limit then
        return 2
      end
    end
  end
end
local expires = nil
if ARGV[2] ~= '' then
  local access = tonumber(ARGV[2])
  local interval = math.floor(idle / {touch_divisor})
  if ARGV[4] ~= '' then
    interval = tonumber(ARGV[4])
  end
  if access - tonumber(meta[4]) >= interval then
    expires = access + idle
    if ARGV[3] ~= '' then
      expires = math.min(expires, tonumber(meta[2]) + tonumber(ARGV[3]))
    end
  end
end
{check}
local sets, candidates = expand(key, 8, last, tonumber(ARGV[7]), false)
local at = nil
if expires then
  at = string.format('%.0f', expires)
  table.insert(sets, '{accessed}')
  table.insert(sets, ARGV[2])
  table.insert(sets, '{expires}')
  table.insert(sets, at)
end
batched('HSET', key, sets)
local stale = {{}}
for _, field in ipairs(candidates) do
  if not absent[field] then
    table.insert(stale, field)
  end
end
for i = last + 1, {argc} do
  table.insert(stale, ARGV[i])
  table.insert(stale, '{rest}' .. string.sub(ARGV[i], {prefix_len} + 1))
end
batched('HDEL', key, stale)
if at then
  redis.call('PEXPIREAT', key, at)
end
{written}
",
        verifier = field(codec::VERIFIER),
        created = field(codec::CREATED),
        max_inactive = field(codec::MAX_INACTIVE),
        accessed = field(codec::ACCESSED),
        expires = field(codec::EXPIRES),
        principal = field(codec::PRINCIPAL),
        label = field(codec::LABEL),
        attribute = field(codec::ATTRIBUTE),
        rest = field(codec::REST),
        probed = PROBED_RESTS,
        prefix_len = codec::ATTRIBUTE.len(),
        metadata_count = codec::METADATA_FIELDS.len(),
        touch_divisor = crate::store::policy::TOUCH_DIVISOR,
    )
}

/// A field name as Lua string text (the names are plain ASCII).
pub(super) fn field(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or_default()
}

/// Swaps one field of a live session whose verifier hash is the given one,
/// if the field holds the expected value.
///
/// - `KEYS[1]`: the session's hash.
/// - `ARGV[1]`: the field.
/// - `ARGV[2]`: the expected value: `0` for absent, or `1` followed by the
///   value.
/// - `ARGV[3]`: the new value, encoded the same way (`0`: delete the field).
/// - `ARGV[4]`: the verifier hash the stored one must equal.
/// - `ARGV[5]`: the split length (see [`EXPAND`]), `0` for none.
///
/// One `HMGET` reads the verifier, the field and its continuation. Answers `{1}` when
/// swapped, `{2, current}` (or `{2}` when the field is absent) on a
/// mismatch, and `{0}` when the session is gone or its verifier differs.
pub(super) static COMPARE_AND_SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local rest = '{rest}' .. string.sub(ARGV[1], {prefix_len} + 1)
local found = redis.call('HMGET', KEYS[1], '{verifier}', ARGV[1], rest)
if found[1] ~= ARGV[4] then
  return {{0}}
end
local current = found[2]
if current and found[3] then
  current = current .. found[3]
end
local expected = ARGV[2]
local matches
if current then
  matches = string.sub(expected, 1, 1) == '1' and string.sub(expected, 2) == current
else
  matches = expected == '0'
end
if not matches then
  if current then
    return {{2, current}}
  end
  return {{2}}
end
if string.sub(ARGV[3], 1, 1) == '1' then
  local value = string.sub(ARGV[3], 2)
  local split = tonumber(ARGV[5])
  local n = string.len(value)
  if split > 0 and n > split and n <= 2 * split and string.len(ARGV[1]) <= split then
    local encoding = redis.call('OBJECT', 'ENCODING', KEYS[1])
    if encoding ~= 'listpack' and encoding ~= 'ziplist' then
      split = 0
    end
  else
    split = 0
  end
  if split > 0 then
    redis.call('HSET', KEYS[1], ARGV[1], string.sub(value, 1, split), rest, string.sub(value, split + 1))
  else
    redis.call('HSET', KEYS[1], ARGV[1], value)
    if found[3] then
      redis.call('HDEL', KEYS[1], rest)
    end
  end
else
  redis.call('HDEL', KEYS[1], ARGV[1], rest)
end
return {{1}}
",
        verifier = field(codec::VERIFIER),
        rest = field(codec::REST),
        prefix_len = codec::ATTRIBUTE.len(),
    ))
});

/// Deletes a session if its verifier hash is the given one.
///
/// - `KEYS[1]`: the session's hash.
/// - `ARGV[1]`: the verifier hash the stored one must equal.
///
/// Answers the principal's name when it deleted a bound session (so that
/// the caller takes it out of the principal's index), 1 when it deleted an
/// unbound one, 0 otherwise.
pub(super) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"
local found = redis.call('HMGET', KEYS[1], '{verifier}', '{principal}')
if found[1] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if found[2] then
    return found[2]
  end
  return 1
end
return 0
",
        verifier = field(codec::VERIFIER),
        principal = field(codec::PRINCIPAL),
    ))
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
