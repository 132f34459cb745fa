//! The Redis store against the local Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`), each test under a key prefix of its own.
#![cfg(feature = "redis")]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::time::Duration;

use redis_support::{CleanStore, contract, local_url, shared, unique_prefix};
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::{SessionStore, StoreErrorKind};

#[tokio::test]
async fn round_trip_and_never_overwrite() {
    contract::round_trip_and_never_overwrite(&CleanStore::local("rt").await).await;
}

#[tokio::test]
async fn apply_writes_only_the_delta() {
    contract::apply_writes_only_the_delta(&CleanStore::local("delta").await).await;
}

#[tokio::test]
async fn apply_never_resurrects() {
    contract::apply_never_resurrects(&CleanStore::local("gone").await).await;
}

#[tokio::test]
async fn expired_records_are_gone() {
    contract::expired_records_are_gone(&CleanStore::local("exp").await).await;
}

#[tokio::test]
async fn touch_extends_the_expiry() {
    contract::touch_extends_the_expiry(&CleanStore::local("touch").await).await;
}

#[tokio::test]
async fn compare_and_set_semantics() {
    contract::compare_and_set_semantics(&CleanStore::local("cas").await).await;
}

#[tokio::test]
async fn concurrent_writers_keep_every_attribute() {
    contract::concurrent_writers_keep_every_attribute(shared(CleanStore::local("w16").await)).await;
}

#[tokio::test]
async fn concurrent_increments_keep_every_increment() {
    contract::concurrent_increments_keep_every_increment(shared(CleanStore::local("c32").await))
        .await;
}

#[tokio::test]
async fn health_is_up() {
    contract::health_is_up(&CleanStore::local("health").await).await;
}

#[tokio::test]
async fn one_hash_per_session_with_namespaced_fields() {
    let store = CleanStore::local("layout").await;
    let (key, _) = contract::stored(&store, &[("m:created", "1"), ("user", "2")]).await;
    let client = redis::Client::open(local_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = format!("{}{{{}}}", store.inner().key_prefix(), key.as_str());
    let kind: String = redis::cmd("TYPE")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    let mut fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            "a:m:created",
            "a:user",
            "m:accessed",
            "m:created",
            "m:expires",
            "m:max_inactive",
            "m:verifier"
        ]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((50_000..=60_000).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn a_malformed_record_is_corrupt_not_a_panic() {
    let store = CleanStore::local("corrupt").await;
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let client = redis::Client::open(local_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = format!("{}{{{}}}", store.inner().key_prefix(), key.as_str());
    let _: i64 = redis::cmd("HSET")
        .arg(&name)
        .arg("m:created")
        .arg("yesterday")
        .query_async(&mut conn)
        .await
        .unwrap();
    let error = store.load(&key).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Corrupt);
    assert_eq!(error.backend(), "redis");
    assert!(std::error::Error::source(&error).is_some());

    // A key of another type under the session's name.
    let _: i64 = redis::cmd("DEL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&name)
        .arg("x")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.load(&key).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
}

#[tokio::test]
async fn debug_shows_no_password_and_no_session_key() {
    let store = CleanStore::local("debug").await;
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let printed = format!("{:?}", store.inner());
    assert!(printed.contains("127.0.0.1"), "{printed}");
    assert!(!printed.contains(key.as_str()), "{printed}");
    let lazy = RedisStore::builder()
        .connect_lazy("redis://:s3cret-pass@127.0.0.1:6379")
        .unwrap();
    assert!(!format!("{lazy:?}").contains("s3cret"));
}

#[tokio::test]
async fn a_wrong_password_fails_without_hanging() {
    let started = std::time::Instant::now();
    let result = RedisStore::builder()
        .with_key_prefix(unique_prefix("auth"))
        .with_connect_timeout(Duration::from_secs(2))
        .connect("redis://:wrong-password@127.0.0.1:6379")
        .await;
    // The local Redis has no password, so AUTH fails; either way the
    // constructor returns within its bound and never prints the password.
    if let Err(error) = result {
        assert_eq!(error.backend(), "redis");
        assert!(
            !tower_httpsession::store::StoreError::to_string(&error).contains("wrong-password")
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}
