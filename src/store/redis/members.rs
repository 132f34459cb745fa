//! Reading and settling many members of a principal's index at once: one
//! pipeline on a single node; on a cluster, where a pipeline goes to one
//! node, one request per member, all sent at once over the multiplexed
//! connection (so the round trips overlap, one per primary in effect).

use ::redis::{Cmd, Pipeline, RedisError, Value};
use futures_util::future::join_all;

use super::principals::TOMBSTONE_TTL;
use super::{Connection, RedisStore, codec, index_scripts, unexpected};
use crate::store::{
    Label, Operation, Principal, PrincipalSession, StoreError, StoreKey, duration_millis,
    from_unix_millis,
};

/// What [`SETTLE`](index_scripts::SETTLE) does to a member.
#[derive(Clone, Copy)]
pub(super) enum Settle {
    Evict,
    Check,
    Revoke,
}

/// A member's metadata, as read for an eviction or a listing.
pub(super) struct Meta {
    pub(super) principal: Option<Vec<u8>>,
    pub(super) created: i64,
    pub(super) accessed: i64,
    pub(super) expires: i64,
    pub(super) label: Option<Vec<u8>>,
}

/// The fields a listing or an eviction reads of each member.
const META_FIELDS: [&[u8]; 5] = [
    codec::PRINCIPAL,
    codec::CREATED,
    codec::ACCESSED,
    codec::EXPIRES,
    codec::LABEL,
];

impl RedisStore {
    /// Runs [`SETTLE`](index_scripts::SETTLE) on each key, in one pipeline
    /// (on a cluster, one request per key, all at once), and answers for
    /// each whether it was bound to the principal.
    pub(super) async fn settle(
        &self,
        op: Operation,
        principal: &Principal,
        how: Settle,
        keys: &[StoreKey],
    ) -> Result<Vec<bool>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mode: &[u8] = match how {
            Settle::Evict => b"d",
            Settle::Check => b"c",
            Settle::Revoke => b"r",
        };
        let token = principal.digest_hex();
        let ttl = duration_millis(TOMBSTONE_TTL);
        let invocations: Vec<_> = keys
            .iter()
            .map(|key| {
                let mut invocation = index_scripts::SETTLE.prepare_invoke();
                invocation
                    .key(self.key(key))
                    .key(self.tombstone(key))
                    .arg(principal.as_str())
                    .arg(mode)
                    .arg(&token)
                    .arg(ttl);
                invocation
            })
            .collect();
        let replies = match &self.inner.connection {
            Connection::Single(_) | Connection::Sentinel(_) => {
                let mut pipe = ::redis::pipe();
                pipe.load_script(&index_scripts::SETTLE).ignore();
                for invocation in &invocations {
                    pipe.invoke_script(invocation);
                }
                self.pipeline(op, &pipe).await?
            }
            Connection::Cluster(_) => {
                let calls = invocations.iter().map(|invocation| {
                    let mut connection = self.inner.connection.clone();
                    async move { invocation.invoke_async::<Value>(&mut connection).await }
                });
                self.run_once(op, collect(join_all(calls))).await?
            }
        };
        replies
            .into_iter()
            .map(|reply| match reply {
                Value::Int(n) => Ok(n == 1),
                _ => Err(unexpected(op)),
            })
            .collect()
    }

    /// Reads each key's [`META_FIELDS`] in one pipeline (on a cluster, one
    /// request per key, all at once): `None` for a session that is not
    /// there.
    pub(super) async fn read_meta(
        &self,
        op: Operation,
        keys: &[StoreKey],
    ) -> Result<Vec<Option<Meta>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let commands: Vec<Cmd> = keys
            .iter()
            .map(|key| {
                ::redis::cmd("HMGET")
                    .arg(self.key(key))
                    .arg(&META_FIELDS[..])
                    .to_owned()
            })
            .collect();
        let replies = match &self.inner.connection {
            Connection::Single(_) | Connection::Sentinel(_) => {
                let mut pipe = ::redis::pipe();
                for command in commands {
                    pipe.add_command(command);
                }
                self.pipeline(op, &pipe).await?
            }
            Connection::Cluster(_) => {
                let calls = commands.iter().map(|command| {
                    let mut connection = self.inner.connection.clone();
                    async move { command.query_async::<Value>(&mut connection).await }
                });
                self.run_once(op, collect(join_all(calls))).await?
            }
        };
        replies.into_iter().map(|reply| meta(reply, op)).collect()
    }

    async fn pipeline(&self, op: Operation, pipe: &Pipeline) -> Result<Vec<Value>, StoreError> {
        let mut connection = self.inner.connection.clone();
        let replies = self
            .run_once(op, pipe.query_async::<Vec<Value>>(&mut connection))
            .await?;
        // A reply that is a server error is that error, of its own kind.
        replies
            .into_iter()
            .map(Value::extract_error)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| super::redis_error(op, e))
    }
}

/// The replies of commands sent at once; a reply that is a server error
/// (a node answering `CLUSTERDOWN` or `TRYAGAIN` during a failover) is that
/// error, so that it maps to the right kind.
async fn collect(
    calls: impl Future<Output = Vec<Result<Value, RedisError>>>,
) -> Result<Vec<Value>, RedisError> {
    calls
        .await
        .into_iter()
        .map(|reply| reply.and_then(Value::extract_error))
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

pub(super) fn strings(value: Value, op: Operation) -> Result<Vec<String>, StoreError> {
    let unexpected = || unexpected(op);
    let Value::Array(items) = value else {
        return Err(unexpected());
    };
    items
        .into_iter()
        .map(|v| text(v).ok_or_else(unexpected))
        .collect()
}

/// A score in whole milliseconds (the index only holds whole ones).
#[allow(clippy::cast_possible_truncation)]
fn score(value: Value) -> Option<i64> {
    match value {
        Value::Double(d) => Some(d as i64),
        other => {
            let text = text(other)?;
            text.parse::<i64>()
                .ok()
                .or_else(|| text.parse::<f64>().ok().map(|d| d as i64))
        }
    }
}

/// Members and scores from `ZRANGE .. WITHSCORES`, flat (RESP2) or in pairs
/// (RESP3).
pub(super) fn scored(value: Value) -> Option<Vec<(String, i64)>> {
    let Value::Array(items) = value else {
        return None;
    };
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let Some(item) = items.next() {
        match item {
            Value::Array(pair) => {
                let mut pair = pair.into_iter();
                out.push((text(pair.next()?)?, score(pair.next()?)?));
            }
            member => out.push((text(member)?, score(items.next()?)?)),
        }
    }
    Some(out)
}

fn meta(reply: Value, op: Operation) -> Result<Option<Meta>, StoreError> {
    let Value::Array(items) = reply else {
        return Err(unexpected(op));
    };
    let mut fields = items.into_iter().map(|v| match v {
        Value::BulkString(bytes) => Some(bytes),
        _ => None,
    });
    let mut next = || fields.next().flatten();
    let (principal, created, accessed, expires, label) = (next(), next(), next(), next(), next());
    let number = |bytes: Option<Vec<u8>>| {
        bytes
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.parse::<i64>().ok())
    };
    let (Some(created), Some(accessed), Some(expires)) =
        (number(created), number(accessed), number(expires))
    else {
        return Ok(None);
    };
    Ok(Some(Meta {
        principal,
        created,
        accessed,
        expires,
        label,
    }))
}

pub(super) fn listed(key: StoreKey, m: Meta) -> Option<PrincipalSession> {
    let label = m
        .label
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| Label::new(t).ok());
    Some(PrincipalSession::new(
        key,
        from_unix_millis(m.created)?,
        from_unix_millis(m.accessed)?,
        from_unix_millis(m.expires)?,
        label,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn scores_read_flat_and_in_pairs() {
        let flat = Value::Array(vec![
            bulk("k1"),
            bulk("1700000000001"),
            bulk("k2"),
            bulk("2.5"),
        ]);
        assert_eq!(
            scored(flat),
            Some(vec![
                ("k1".to_owned(), 1_700_000_000_001),
                ("k2".to_owned(), 2)
            ])
        );
        let pairs = Value::Array(vec![Value::Array(vec![bulk("k1"), Value::Double(7.0)])]);
        assert_eq!(scored(pairs), Some(vec![("k1".to_owned(), 7)]));
        assert_eq!(scored(Value::Array(vec![bulk("k1")])), None);
        assert_eq!(scored(Value::Int(1)), None);
    }

    #[test]
    fn a_missing_session_reads_as_none_and_a_live_one_in_full() {
        let missing = Value::Array(vec![Value::Nil; 5]);
        assert!(meta(missing, Operation::ListPrincipal).unwrap().is_none());
        let live = Value::Array(vec![
            bulk("alice"),
            bulk("1"),
            bulk("2"),
            bulk("3"),
            Value::Nil,
        ]);
        let m = meta(live, Operation::ListPrincipal).unwrap().unwrap();
        assert_eq!(m.principal.as_deref(), Some(&b"alice"[..]));
        assert_eq!((m.created, m.accessed, m.expires), (1, 2, 3));
        assert!(m.label.is_none());
        assert!(meta(Value::Int(1), Operation::ListPrincipal).is_err());
    }
}
