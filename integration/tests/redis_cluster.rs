//! The Redis store against a Redis Cluster of three primaries that this test
//! binary starts on free loopback ports (one cluster for the binary, killed
//! when it exits), each test under a key prefix of its own.
#![cfg(all(feature = "redis", feature = "testing"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use redis_support::{Cluster, contract, unique_prefix};
use tower_httpsession::store::redis::RedisStore;

async fn make_store() -> RedisStore {
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("start the cluster");
    RedisStore::builder_for_cluster(cluster.urls())
        .with_key_prefix(unique_prefix("cluster"))
        .connect()
        .await
        .expect("connect to the cluster")
}

tower_httpsession::store_suite!(make_store);
tower_httpsession::principal_suite!(make_store);

#[tokio::test]
async fn attribute_names_cannot_touch_metadata() {
    contract::attribute_names_cannot_touch_metadata(&make_store().await).await;
}

#[tokio::test]
async fn an_empty_value_is_not_absent() {
    contract::an_empty_value_is_not_absent(&make_store().await).await;
}

#[tokio::test]
async fn many_fields_land_whole() {
    contract::many_fields_land_whole(&make_store().await).await;
}

#[tokio::test]
async fn touch_moves_the_key_expiry() {
    contract::touch_moves_the_key_expiry(&make_store().await).await;
}

#[tokio::test]
async fn sessions_spread_over_every_primary() {
    // Many sessions land on all three primaries: the hash tag keeps one
    // session in one slot, not every session in the same slot.
    let store = make_store().await;
    let mut keys = Vec::new();
    for _ in 0..60 {
        let (key, record) = contract::stored(&store, &[("a", "1")]).await;
        keys.push((key, record.verifier));
    }
    let cluster = Cluster::shared();
    for port in &cluster.ports {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let size: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert!(size > 0, "node {port} holds no session");
    }
    for (key, verifier) in keys {
        tower_httpsession::SessionStore::delete(&store, &key, &verifier)
            .await
            .unwrap();
    }
}
