//! How Redis encodes a session's hash, and what that costs in memory.
//!
//! A session is one hash, a field per attribute. Redis keeps a hash in one
//! of two encodings. A **listpack** is one packed allocation, a few bytes of
//! framing per field: a hash takes it while it has at most
//! `hash-max-listpack-entries` fields (128 by default) and no field name or
//! value longer than `hash-max-listpack-value` bytes (64 by default). Past
//! either, Redis turns the hash into a **hashtable** for good: an entry, a
//! string for the name and a string for the value per field, some 60 to
//! 70 bytes more per field than the listpack.
//!
//! That matters for sessions of many small values just over 64 bytes, so
//! the write scripts store a value longer than the setting, and at most
//! twice as long, as two fields (see [`EXPAND`](super::scripts::EXPAND)).
//! On Redis 7.0, under the default setting, a session of 20 attributes of
//! 100 bytes then stays a listpack of 2,600 to 3,260 bytes (the second
//! field of each value costs its name and a few bytes, and the allocation
//! rounds up to the allocator's size classes), where unsplit it is a
//! hashtable of about 4,000 bytes, and tower-sessions' whole-record string
//! of the same attributes takes 2,700; a session of 50 attributes of 1,000
//! bytes takes about 54,700 bytes as a hashtable, less than the whole
//! record (57,700), since the framing is small beside such values
//! (`integration/tests/redis_memory.rs`). A listpack is read and written by
//! scanning it, so it suits small hashes; Redis's thresholds exist to keep
//! large ones in hashtables.
//!
//! The store does not change the server's configuration, which belongs to
//! whoever runs the server and is often closed on managed services. When it
//! connects, it reads `hash-max-listpack-value`, splits values at it, and,
//! if the server answers with less than [`RECOMMENDED_LISTPACK_VALUE`],
//! logs once (at `info`) what raising it saves. A server that refuses
//! `CONFIG GET` is left alone, and values are split at Redis's default.

use std::sync::atomic::Ordering;

use ::redis::Value;

use super::{Operation, RedisStore};

/// Redis's default `hash-max-listpack-value`: the split length of a store
/// that has not read the server's (built by `connect_lazy`, or on a server
/// that refuses `CONFIG GET`).
pub(super) const DEFAULT_LISTPACK_VALUE: u64 = 64;

/// The `hash-max-listpack-value` the README recommends: attribute values of
/// up to this many bytes (as serde_json text) keep a session compact, while
/// sessions with values of a kilobyte and more stay hashtables, which cost
/// them little and keep writes to them constant-time.
pub(super) const RECOMMENDED_LISTPACK_VALUE: u64 = 256;

/// The server settings that decide a hash's encoding.
const SETTINGS: [&str; 2] = ["hash-max-listpack-value", "hash-max-ziplist-value"];

impl RedisStore {
    /// Reads the server's `hash-max-listpack-value`: with `split_values`,
    /// the write scripts split values at it from now on (see
    /// [`EXPAND`](super::scripts::EXPAND)); logs, at `info`, when it is
    /// below [`RECOMMENDED_LISTPACK_VALUE`]. Never fails: a server may
    /// refuse `CONFIG`, and the store then splits at Redis's default.
    pub(super) async fn learn_hash_encoding(&self, split_values: bool) {
        match self.listpack_value_limit().await {
            Some(limit) => {
                if split_values {
                    self.inner.split.store(limit, Ordering::Relaxed);
                }
                if limit < RECOMMENDED_LISTPACK_VALUE {
                    let kept = if split_values { 2 * limit } else { limit };
                    tracing::info!(
                        hash_max_listpack_value = limit,
                        recommended = RECOMMENDED_LISTPACK_VALUE,
                        "Redis stores a session hash that holds an attribute value over \
                         {kept} bytes as a hashtable, about 1.5 times the memory of the \
                         compact listpack for sessions of small values; setting \
                         hash-max-listpack-value to {RECOMMENDED_LISTPACK_VALUE} on the \
                         server keeps them compact (see the README, Redis memory)"
                    );
                }
            }
            None => tracing::debug!(
                "Redis did not tell its hash-max-listpack-value; the session \
                 hashes' encoding is not checked"
            ),
        }
    }

    /// The server's `hash-max-listpack-value` (`hash-max-ziplist-value`
    /// before Redis 7), or `None` when it does not tell.
    pub(super) async fn listpack_value_limit(&self) -> Option<u64> {
        for setting in SETTINGS {
            let command = &::redis::cmd("CONFIG").arg("GET").arg(setting).clone();
            let answer = self
                .run::<Value, _, _>(Operation::Connect, |mut c| async move {
                    command.query_async(&mut c).await
                })
                .await
                .ok()?;
            if let Some(limit) = parse(&answer, setting) {
                return Some(limit);
            }
        }
        None
    }
}

/// The value of `setting` in a `CONFIG GET` answer: a flat array of names
/// and values (RESP2) or a map (RESP3).
fn parse(answer: &Value, setting: &str) -> Option<u64> {
    let pairs: Vec<(&Value, &Value)> = match answer {
        Value::Array(items) => items
            .chunks_exact(2)
            .map(|pair| (&pair[0], &pair[1]))
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return None,
    };
    pairs.into_iter().find_map(|(name, value)| {
        (text(name)? == setting)
            .then(|| text(value)?.parse().ok())
            .flatten()
    })
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn reads_the_setting_from_either_protocol() {
        let name = "hash-max-listpack-value";
        let resp2 = Value::Array(vec![bulk(name), bulk("64")]);
        assert_eq!(parse(&resp2, name), Some(64));
        let resp3 = Value::Map(vec![(bulk(name), bulk("256"))]);
        assert_eq!(parse(&resp3, name), Some(256));
    }

    #[test]
    fn an_unknown_setting_or_a_bad_answer_tells_nothing() {
        let name = "hash-max-listpack-value";
        assert_eq!(parse(&Value::Array(vec![]), name), None);
        let other = Value::Array(vec![bulk("hash-max-ziplist-value"), bulk("64")]);
        assert_eq!(parse(&other, name), None);
        let garbage = Value::Array(vec![bulk(name), bulk("many")]);
        assert_eq!(parse(&garbage, name), None);
        assert_eq!(parse(&Value::Nil, name), None);
        let odd = Value::Array(vec![bulk(name)]);
        assert_eq!(parse(&odd, name), None);
    }
}
