//! The Redis store on the primary that three Redis Sentinels name: the
//! behavioural suite (with replica acknowledgement on, so every write also
//! waits for the replica), the start-up errors, and a failover followed
//! without a restart.
#![cfg(all(feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis_support::sentinel::{PRIMARY, Sentinels, range_port};
use redis_support::{error_chain, unique_prefix};
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Operation, SessionStore, StoreErrorKind};

/// One primary, replica and three sentinels for the suite, killed by the
/// watchdog when the binary exits.
fn shared() -> &'static Sentinels {
    static SENTINELS: OnceLock<Sentinels> = OnceLock::new();
    SENTINELS.get_or_init(Sentinels::start)
}

async fn make_store() -> RedisStore {
    let sentinels = tokio::task::spawn_blocking(shared).await.unwrap();
    RedisStore::builder_for_sentinel(sentinels.urls(), PRIMARY)
        .with_key_prefix(unique_prefix("sentinel"))
        .with_replica_acknowledgement(1, Duration::from_millis(500))
        .connect()
        .await
        .expect("connect through the sentinels")
}

tower_httpsession::store_suite!(make_store);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_name_no_sentinel_knows_stops_start_up_in_words() {
    let sentinels = tokio::task::spawn_blocking(shared).await.unwrap();
    let error = RedisStore::builder_for_sentinel(sentinels.urls(), "no-such-primary")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Config);
    assert_eq!(error.operation(), Operation::Connect);
    let message = error_chain(&error);
    assert!(message.contains("no-such-primary"), "{message}");
    assert!(message.contains("no sentinel knows a primary"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_sentinel_stops_start_up_in_words_without_the_password() {
    let urls = [
        format!("redis://:hunter2@127.0.0.1:{}", range_port()),
        format!("redis://:hunter2@127.0.0.1:{}", range_port()),
    ];
    let started = Instant::now();
    let error = RedisStore::builder_for_sentinel(&urls, PRIMARY)
        .with_connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(6));
    let message = error_chain(&error);
    assert!(message.contains("no sentinel answered"), "{message}");
    let chain = format!("{error:?} {}", error_chain(&error));
    assert!(!chain.contains("hunter2"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_acknowledgement_that_cannot_be_met_is_an_outage() {
    let sentinels = tokio::task::spawn_blocking(shared).await.unwrap();
    // One replica exists; waiting for two never succeeds.
    let store = RedisStore::builder_for_sentinel(sentinels.urls(), PRIMARY)
        .with_key_prefix(unique_prefix("acks"))
        .with_replica_acknowledgement(2, Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let (verifier, key) = fresh_key();
    let started = Instant::now();
    let error = store
        .create(
            &key,
            &record(&verifier, Duration::from_secs(60), &[("a", "1")]),
            None,
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(error.kind(), StoreErrorKind::Unavailable);
    let message = error_chain(&error);
    assert!(message.contains("1 of 2 replicas"), "{message}");
    // The primary kept the write, as documented.
    assert!(store.load(&key).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_a_failover_without_a_restart() {
    let sentinels = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let store = RedisStore::builder_for_sentinel(sentinels.urls(), PRIMARY)
        .with_command_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let (verifier, key) = fresh_key();
    let stored = record(&verifier, Duration::from_secs(60), &[("cart", "teapot")]);
    assert_eq!(
        store.create(&key, &stored, None).await.unwrap(),
        tower_httpsession::store::Created::Stored
    );
    // Replicated before the kill, so the promoted replica has it.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (sentinels, promoted) = sentinels.fail_over().await;
    let recovered = loop {
        match store.load(&key).await {
            Ok(found) => {
                assert!(found.is_some(), "the promoted replica lacks the session");
                break Instant::now();
            }
            Err(error) => assert!(error.is_unavailable(), "{error}"),
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(10),
            "the store never reached the promoted replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after = recovered.saturating_duration_since(promoted);
    eprintln!("sentinel: the store reached the new primary {after:?} after the promotion");
    assert!(after < Duration::from_secs(2), "{after:?}");
    assert_eq!(sentinels.replicas[0].role().as_deref(), Some("master"));
    drop(sentinels);
}
