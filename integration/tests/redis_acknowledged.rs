//! The behavioural suites on a store with replica acknowledgement on, so
//! that every write goes as a pipeline of its script and `WAIT`: against a
//! primary and its replica of this binary's own, started once and killed
//! when the binary exits. Each test works under a key prefix of its own.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::sync::OnceLock;
use std::time::Duration;

use redis_support::{RedisServer, unique_prefix, wait_until};
use tower_httpsession::store::redis::RedisStore;

/// The primary and its replica, in sync.
fn servers() -> &'static (RedisServer, RedisServer) {
    static SERVERS: OnceLock<(RedisServer, RedisServer)> = OnceLock::new();
    SERVERS.get_or_init(|| {
        let primary = RedisServer::start();
        let replica = RedisServer::start_replica_of(primary.port);
        wait_until("replication link", Duration::from_secs(20), || {
            replica
                .info("replication")
                .get("master_link_status")
                .is_some_and(|status| status == "up")
        });
        (primary, replica)
    })
}

async fn make_store() -> RedisStore {
    let (primary, _) = tokio::task::spawn_blocking(servers).await.unwrap();
    RedisStore::builder(&primary.url())
        .with_key_prefix(unique_prefix("acked"))
        .with_replica_acknowledgement(1, Duration::from_millis(500))
        .connect()
        .await
        .unwrap()
}

tower_httpsession::store_suite!(make_store);
tower_httpsession::principal_suite!(make_store);
