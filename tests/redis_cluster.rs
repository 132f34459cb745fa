//! The Redis store against a Redis Cluster of three primaries that this test
//! binary starts on free loopback ports (one cluster for the binary, killed
//! when it exits), each test under a key prefix of its own.
#![cfg(feature = "redis")]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use redis_support::{Cluster, contract, shared, unique_prefix};
use tower_httpsession::store::redis::RedisStore;

async fn make_store() -> RedisStore {
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("start the cluster");
    RedisStore::builder()
        .with_key_prefix(unique_prefix("cluster"))
        .connect_cluster(cluster.urls())
        .await
        .expect("connect to the cluster")
}

#[tokio::test]
async fn round_trip_and_never_overwrite() {
    contract::round_trip_and_never_overwrite(&make_store().await).await;
}

#[tokio::test]
async fn apply_writes_only_the_delta() {
    contract::apply_writes_only_the_delta(&make_store().await).await;
}

#[tokio::test]
async fn apply_never_resurrects() {
    contract::apply_never_resurrects(&make_store().await).await;
}

#[tokio::test]
async fn expired_records_are_gone() {
    contract::expired_records_are_gone(&make_store().await).await;
}

#[tokio::test]
async fn compare_and_set_semantics() {
    contract::compare_and_set_semantics(&make_store().await).await;
}

#[tokio::test]
async fn concurrent_writers_keep_every_attribute() {
    contract::concurrent_writers_keep_every_attribute(shared(make_store().await)).await;
}

#[tokio::test]
async fn concurrent_increments_keep_every_increment() {
    contract::concurrent_increments_keep_every_increment(shared(make_store().await)).await;
}

#[tokio::test]
async fn health_is_up() {
    contract::health_is_up(&make_store().await).await;
}

#[tokio::test]
async fn sessions_spread_over_every_primary() {
    // Many sessions land on all three primaries: the hash tag keeps one
    // session in one slot, not every session in the same slot.
    let store = make_store().await;
    let mut keys = Vec::new();
    for _ in 0..60 {
        keys.push(contract::stored(&store, &[("a", "1")]).await.0);
    }
    let cluster = Cluster::shared();
    for port in &cluster.ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let size: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert!(size > 0, "node {port} holds no session");
    }
    for key in keys {
        tower_httpsession::SessionStore::delete(&store, &key)
            .await
            .unwrap();
    }
}
