//! Replica acknowledgement: after each write, `WAIT` until enough replicas
//! have it, so that a failover right after a request cannot lose what the
//! request was told is stored.

use std::time::Duration;

use ::redis::aio::ConnectionLike;
use ::redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{Cmd, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

use super::connection::Connection;
use super::{BACKEND, Problem, RedisStore, config_error, redis_error};
use crate::store::{Operation, StoreError, StoreErrorKind};

/// How many replicas must acknowledge each write, and how long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReplicaAcks {
    pub(super) replicas: u32,
    pub(super) timeout: Duration,
}

impl ReplicaAcks {
    pub(super) fn validate(self, command_timeout: Duration) -> Result<(), StoreError> {
        if self.replicas == 0 {
            return Err(config_error(
                "replica acknowledgement needs at least one replica",
            ));
        }
        if self.timeout < Duration::from_millis(1) {
            return Err(config_error(
                "the replica acknowledgement timeout must be at least a millisecond",
            ));
        }
        if self.timeout >= command_timeout {
            return Err(config_error(
                "the replica acknowledgement timeout must be shorter than the command timeout",
            ));
        }
        Ok(())
    }
}

impl super::RedisStoreBuilder {
    /// Waits after every write until `replicas` replicas have it, for at
    /// most `timeout`, before the write counts as done. Default: off, a
    /// write is done when the primary has it.
    ///
    /// Redis replicates asynchronously: without this, a primary that dies
    /// right after answering may take writes with it that the new primary
    /// never got, and a request that was answered "added to cart" loses its
    /// item. With it, each write is followed by `WAIT replicas timeout` in
    /// the same pipeline, on the same connection (on a cluster, to the node
    /// that holds the session), so an acknowledged write sits on at least
    /// `replicas` replicas as well. The write and its `WAIT` together may
    /// take the command timeout plus `timeout`. Every write then waits
    /// until its replicas have it (no extra round trip from the app).
    /// Reads send nothing more, but a `WAIT` holds up the commands behind
    /// it on the same connection, so while a replica lags, reads wait too
    /// (up to `timeout` for each `WAIT` ahead of them, within the command
    /// timeout).
    ///
    /// If fewer replicas acknowledge within `timeout`, the write fails as
    /// [unavailable](StoreErrorKind::Unavailable) (503 with `Retry-After`
    /// at the layer), although the primary has it and may keep it: the
    /// request may have taken effect, as with any failure after a write
    /// was sent. `WAIT` makes a lost write unlikely, not impossible: a
    /// replica that acknowledged may still not be the one promoted.
    ///
    /// `replicas` must be at least 1, and `timeout` at least a millisecond
    /// and shorter than the [command
    /// timeout](super::RedisStoreBuilder::with_command_timeout).
    pub fn with_replica_acknowledgement(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_acks = Some(ReplicaAcks { replicas, timeout });
        self
    }
}

impl RedisStore {
    /// The `WAIT` to send after each write, if the store waits for
    /// replicas, and how long the write and its `WAIT` may take together:
    /// the command timeout plus the acknowledgement timeout.
    pub(super) fn wait_command(&self) -> Option<(Cmd, Duration)> {
        let acks = self.inner.replica_acks?;
        let millis = u64::try_from(acks.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut wait = ::redis::cmd("WAIT");
        wait.arg(acks.replicas).arg(millis);
        Some((wait, self.inner.command_timeout + acks.timeout))
    }

    /// Checks the answer to the `WAIT` that followed a write.
    pub(super) fn check_acknowledgement(
        &self,
        operation: Operation,
        reply: Value,
    ) -> Result<(), StoreError> {
        let Some(acks) = self.inner.replica_acks else {
            return Ok(());
        };
        let acked = match reply {
            Value::Int(acked) => acked,
            Value::ServerError(error) => return Err(refused(operation, error.into())),
            _ => return Err(super::unexpected(operation)),
        };
        if acked >= i64::from(acks.replicas) {
            Ok(())
        } else {
            Err(StoreError::new(
                BACKEND,
                operation,
                StoreErrorKind::Unavailable,
                Problem::TooFewReplicas {
                    acked,
                    wanted: acks.replicas,
                    timeout: acks.timeout,
                },
            ))
        }
    }
}

/// Sends the write `eval` (an `EVALSHA` of `script`) and `wait` as one
/// pipeline, so that both take the same connection: `WAIT` counts the
/// replicas that have the last write of its own connection, and one sent
/// on another (after a reconnection, or once a Sentinel store has moved
/// to a new primary, or a cluster's slot map to a new node) would count
/// replicas that never saw this write. On a cluster both go to the primary
/// of `slot_key`'s slot. A script the server does not know yet is loaded
/// and the pair sent again. Answers the script's reply and the
/// `WAIT`'s; an error reply to the script is an error.
pub(super) async fn write_then_wait(
    mut connection: Connection,
    script: &Script,
    eval: &Cmd,
    wait: &Cmd,
    slot_key: &str,
) -> RedisResult<(Value, Value)> {
    let mut replies = send_pair(&mut connection, eval, wait, slot_key).await;
    let unknown_script = match &replies {
        Err(error) => error.kind() == ErrorKind::Server(ServerErrorKind::NoScript),
        Ok((Value::ServerError(error), _)) => error.kind() == Some(ServerErrorKind::NoScript),
        Ok(_) => false,
    };
    if unknown_script {
        script.load_async(&mut connection).await?;
        replies = send_pair(&mut connection, eval, wait, slot_key).await;
    }
    match replies? {
        (Value::ServerError(error), _) => Err(error.into()),
        replies => Ok(replies),
    }
}

/// Sends `eval` and `wait` in one pipeline on one connection; on a
/// cluster, to the primary of `slot_key`'s slot (the `redis` crate sends
/// the whole pipeline on where a MOVED or ASK points).
async fn send_pair(
    connection: &mut Connection,
    eval: &Cmd,
    wait: &Cmd,
    slot_key: &str,
) -> RedisResult<(Value, Value)> {
    let mut pipe = ::redis::pipe();
    pipe.add_command(eval.clone()).add_command(wait.clone());
    let replies = match connection {
        Connection::Cluster(cluster) => {
            let node = Route::with_key(slot_key, SlotAddr::Master);
            let routing = SingleNodeRoutingInfo::SpecificNode(node);
            cluster.route_pipeline(pipe, 0, 2, routing).await?
        }
        other => other.req_packed_commands(&pipe, 0, 2).await?,
    };
    two(replies)
}

/// The two replies of a pipeline of two commands.
fn two(replies: Vec<Value>) -> RedisResult<(Value, Value)> {
    let mut replies = replies.into_iter();
    match (replies.next(), replies.next(), replies.next()) {
        (Some(written), Some(waited), None) => Ok((written, waited)),
        _ => Err(RedisError::from((
            ErrorKind::Parse,
            "a pipeline of a write and WAIT answered other than two replies",
        ))),
    }
}

/// Maps an error answer to `WAIT`. The write before it succeeded, so a
/// node that refuses to count its replicas has changed role under the
/// request (a replica now, or unblocked by a failover): the write's fate is
/// unknown until the failover settles, which is an outage, not a bug. A
/// user whose ACL forbids `WAIT` has a configuration error.
fn refused(operation: Operation, error: RedisError) -> StoreError {
    let kind = match error.kind() {
        ErrorKind::Server(ServerErrorKind::NoPerm) => StoreErrorKind::Config,
        ErrorKind::Server(_) | ErrorKind::Extension => StoreErrorKind::Unavailable,
        _ => return redis_error(operation, error),
    };
    StoreError::new(BACKEND, operation, kind, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_refused(text: &'static str) -> StoreError {
        let value = ::redis::parse_redis_value(text.as_bytes()).unwrap();
        let Value::ServerError(error) = value else {
            panic!("not an error reply: {value:?}");
        };
        refused(Operation::Apply, error.into())
    }

    #[test]
    fn a_wait_refused_by_a_demoted_primary_is_an_outage() {
        let error = wait_refused(
            "-ERR WAIT cannot be used with replica instances. Please also note that \
             since Redis 4.0 if a replica is configured to be writable (which is not \
             the default) writes to replicas are just local and are not propagated.\r\n",
        );
        assert_eq!(error.kind(), StoreErrorKind::Unavailable);
        let error = wait_refused(
            "-UNBLOCKED force unblock from blocking operation, instance state changed \
             (master -> replica?)\r\n",
        );
        assert_eq!(error.kind(), StoreErrorKind::Unavailable);
        let error = wait_refused("-CLUSTERDOWN The cluster is down\r\n");
        assert_eq!(error.kind(), StoreErrorKind::Unavailable);
    }

    #[test]
    fn a_wait_the_acl_forbids_is_a_configuration_error() {
        let error =
            wait_refused("-NOPERM User app has no permissions to run the 'wait' command\r\n");
        assert_eq!(error.kind(), StoreErrorKind::Config);
    }

    #[tokio::test]
    async fn impossible_acknowledgement_settings_are_config_errors() {
        let url = "redis://127.0.0.1:1";
        let second = Duration::from_secs(1);
        for (replicas, timeout) in [
            (0, Duration::from_millis(100)),
            (1, Duration::ZERO),
            (1, second),
        ] {
            let error = RedisStore::builder(url)
                .with_command_timeout(second)
                .with_replica_acknowledgement(replicas, timeout)
                .connect_lazy()
                .unwrap_err();
            assert_eq!(
                error.kind(),
                StoreErrorKind::Config,
                "{replicas} {timeout:?}"
            );
        }
        let fine = RedisStore::builder(url)
            .with_replica_acknowledgement(1, Duration::from_millis(100))
            .connect_lazy();
        assert!(fine.is_ok());
    }
}
