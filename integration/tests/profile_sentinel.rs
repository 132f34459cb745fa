//! The Redis Sentinel and replica acknowledgement settings of a profile:
//! bad ones fail in words naming the variable, good ones start a store that
//! serves sessions through the sentinels.
#![cfg(all(feature = "profile", feature = "redis", feature = "testing"))]
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::collections::HashMap;

use redis_support::error_chain;
use redis_support::sentinel::{PRIMARY, Sentinels};
use tower_httpsession::profile::{Profile, ProfileError, StoreProfile};
use tower_httpsession::store::testing::{fresh_key, record};

fn profile(vars: &[(&str, &str)]) -> Result<Profile, ProfileError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Profile::from_lookup(move |name| map.get(name).cloned())
}

/// Why `vars` do not start, as a log line shows it.
async fn refused(vars: &[(&str, &str)]) -> String {
    let error = profile(vars).unwrap().connect().await.unwrap_err();
    error_chain(&error)
}

#[test]
fn sentinels_without_the_primary_name_are_refused() {
    let error = profile(&[
        ("SESSION_STORE", "redis"),
        ("SESSION_REDIS_SENTINELS", "redis://10.0.0.1:26379"),
    ])
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "SESSION_REDIS_SENTINEL_PRIMARY is required with SESSION_STORE=redis: set it"
    );
}

#[test]
fn bad_replica_acknowledgement_numbers_are_refused_in_words() {
    for (variable, value) in [
        ("SESSION_REDIS_REPLICA_ACKS", "0"),
        ("SESSION_REDIS_REPLICA_ACKS", "two"),
        ("SESSION_REDIS_REPLICA_ACKS", "99999999999"),
        ("SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS", "-5"),
    ] {
        let error = profile(&[
            ("SESSION_STORE", "redis"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            (variable, value),
        ])
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("{variable}=\"{value}\": expected a number of")),
            "{message}"
        );
    }
}

#[test]
fn the_settings_land_in_the_profile() {
    let profile = profile(&[
        ("SESSION_STORE", "redis"),
        (
            "SESSION_REDIS_SENTINELS",
            "redis://a:26379, redis://b:26379",
        ),
        ("SESSION_REDIS_SENTINEL_PRIMARY", "sessions"),
        ("SESSION_REDIS_REPLICA_ACKS", "2"),
        ("SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS", "250"),
    ])
    .unwrap();
    let StoreProfile::Redis {
        sentinels,
        sentinel_primary,
        replica_acks,
        replica_ack_timeout_ms,
        ..
    } = profile.store
    else {
        panic!("not a redis profile");
    };
    let sentinels: Vec<&str> = sentinels.iter().map(|s| s.expose()).collect();
    assert_eq!(sentinels, ["redis://a:26379", "redis://b:26379"]);
    assert_eq!(sentinel_primary.as_deref(), Some("sessions"));
    assert_eq!(replica_acks, Some(2));
    assert_eq!(replica_ack_timeout_ms, Some(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_through_the_sentinels_and_refuses_an_unknown_primary() {
    let sentinels = tokio::task::spawn_blocking(Sentinels::start).await.unwrap();
    let urls = sentinels.urls().join(",");
    let sessions = profile(&[
        ("SESSION_STORE", "redis"),
        ("SESSION_REDIS_SENTINELS", &urls),
        ("SESSION_REDIS_SENTINEL_PRIMARY", PRIMARY),
        ("SESSION_REDIS_REPLICA_ACKS", "1"),
    ])
    .unwrap()
    .connect()
    .await
    .unwrap();
    let store = sessions.store();
    let (verifier, key) = fresh_key();
    let stored = record(&verifier, std::time::Duration::from_secs(60), &[("a", "1")]);
    let created = store.create(&key, &stored, None).await.unwrap();
    assert_eq!(created, tower_httpsession::store::Created::Stored);
    assert!(store.load(&key).await.unwrap().is_some());

    let message = refused(&[
        ("SESSION_STORE", "redis"),
        ("SESSION_REDIS_SENTINELS", &urls),
        ("SESSION_REDIS_SENTINEL_PRIMARY", "elsewhere"),
    ])
    .await;
    assert!(
        message.starts_with("SESSION_REDIS_SENTINELS: the redis store refused the settings"),
        "{message}"
    );
    assert!(
        message.contains("no sentinel knows a primary named \"elsewhere\""),
        "{message}"
    );

    let message = refused(&[
        ("SESSION_STORE", "redis"),
        ("SESSION_REDIS_SENTINELS", &urls),
        ("SESSION_REDIS_SENTINEL_PRIMARY", PRIMARY),
        ("SESSION_REDIS_REPLICA_ACKS", "1"),
        ("SESSION_REDIS_REPLICA_ACK_TIMEOUT_MS", "5000"),
    ])
    .await;
    assert!(
        message.contains("must be shorter than the command timeout"),
        "{message}"
    );
    drop(sentinels);
}
