//! Replica acknowledgement: after each write, `WAIT` until enough replicas
//! have it, so that a failover right after a request cannot lose what the
//! request was told is stored.

use std::time::Duration;

use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{ErrorKind, RedisError, ServerErrorKind, Value};

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
    /// item. With it, each write is followed by `WAIT replicas timeout` on
    /// the same connection (on a cluster, on the node that holds the
    /// session), so an acknowledged write sits on at least `replicas`
    /// replicas as well. It costs one more round trip plus the replication
    /// delay on every write. Reads send nothing more, but a `WAIT` holds up
    /// the commands behind it on the same connection, so while a replica
    /// lags, reads wait too (up to `timeout` for each `WAIT` ahead of them,
    /// within the command timeout).
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
    /// timeout](super::RedisStoreBuilder::with_command_timeout), which
    /// bounds the `WAIT` too.
    pub fn with_replica_acknowledgement(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_acks = Some(ReplicaAcks { replicas, timeout });
        self
    }
}

impl RedisStore {
    /// Waits for the replicas the store was told to wait for, after a write
    /// under `key` (the full Redis key).
    pub(super) async fn acknowledge(
        &self,
        operation: Operation,
        key: &str,
    ) -> Result<(), StoreError> {
        let Some(acks) = self.inner.replica_acks else {
            return Ok(());
        };
        let millis = u64::try_from(acks.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut wait = ::redis::cmd("WAIT");
        wait.arg(acks.replicas).arg(millis);
        let limit = self.inner.command_timeout;
        let mut connection = self.inner.connection.clone();
        let reply = match &mut connection {
            Connection::Cluster(cluster) => {
                let node = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(node));
                tokio::time::timeout(limit, cluster.route_command(wait, routing)).await
            }
            other => tokio::time::timeout(limit, wait.query_async(other)).await,
        };
        let acked = match reply {
            Ok(Ok(Value::Int(acked))) => acked,
            Ok(Ok(Value::ServerError(error))) => return Err(refused(operation, error.into())),
            Ok(Ok(_)) => return Err(super::unexpected(operation)),
            Ok(Err(error)) => return Err(refused(operation, error)),
            Err(_) => {
                return Err(StoreError::new(
                    BACKEND,
                    operation,
                    StoreErrorKind::Unavailable,
                    Problem::NoAnswer(limit),
                ));
            }
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
