//! Choosing the store from configuration: each profile starts against the
//! real service, and every bad configuration fails with a message that names
//! the variable.
#![cfg(feature = "profile")]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use tower_httpsession::SessionConfig;
use tower_httpsession::config::SameSite;
use tower_httpsession::profile::{Profile, ProfileError, StoreProfile};

fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

fn profile(vars: &[(&str, &str)]) -> Result<Profile, ProfileError> {
    Profile::from_lookup(lookup(vars))
}

async fn start(
    vars: &[(&str, &str)],
) -> Result<tower_httpsession::profile::Sessions, ProfileError> {
    profile(vars)?.connect().await
}

fn message(result: Result<impl std::fmt::Debug, ProfileError>) -> String {
    result
        .expect_err("the configuration must be refused")
        .to_string()
}

#[tokio::test]
async fn memory_is_the_default() {
    let sessions = start(&[]).await.unwrap();
    assert_eq!(sessions.profile(), "memory");
    assert_eq!(sessions.store().backend(), "memory");
    assert_eq!(sessions.config().cookie_name(), "SESSION");
}

#[tokio::test]
async fn settings_reach_the_session_config() {
    let sessions = start(&[
        ("SESSION_STORE", "memory"),
        ("SESSION_MEMORY_CAPACITY", "10"),
        ("SESSION_COOKIE_NAME", "__Host-sid"),
        ("SESSION_MAX_INACTIVE_SECS", "900"),
        ("SESSION_ABSOLUTE_TIMEOUT_SECS", "28800"),
        ("SESSION_SAME_SITE", "strict"),
    ])
    .await
    .unwrap();
    assert_eq!(sessions.config().cookie_name(), "__Host-sid");
    assert_eq!(sessions.config().max_inactive_interval().as_secs(), 900);
}

#[test]
fn the_environment_and_a_file_give_the_same_profile() {
    let from_env = profile(&[
        ("SESSION_COOKIE_NAME", "sid"),
        ("SESSION_COOKIE_DOMAIN", "example.com"),
        ("SESSION_SAME_SITE", "strict"),
        ("SESSION_ABSOLUTE_TIMEOUT_SECS", "3600"),
        ("SESSION_CONNECT_TIMEOUT_SECS", "2"),
    ])
    .unwrap();
    let from_file: Profile = serde_json::from_str(
        r#"{"cookie_name": "sid", "cookie_domain": "example.com", "same_site": "strict",
            "absolute_timeout_secs": 3600, "connect_timeout_secs": 2}"#,
    )
    .unwrap();
    assert_eq!(from_env, from_file);
    assert_eq!(from_env.connect_timeout, Duration::from_secs(2));
    let expected = SessionConfig::default()
        .with_cookie_name("sid")
        .with_domain("example.com")
        .with_same_site(SameSite::Strict)
        .with_absolute_timeout(Duration::from_secs(3600));
    assert_eq!(from_env.session, expected);
    assert_eq!(Profile::default().session, SessionConfig::default());
}

#[tokio::test]
async fn the_memory_store_takes_its_bounds_from_the_environment() {
    assert_eq!(
        profile(&[]).unwrap().store,
        StoreProfile::Memory {
            capacity: 100_000,
            max_bytes: 64 * 1024 * 1024
        }
    );
    let vars = [
        ("SESSION_MEMORY_CAPACITY", "10"),
        ("SESSION_MEMORY_MAX_BYTES", "1048576"),
    ];
    assert_eq!(
        profile(&vars).unwrap().store,
        StoreProfile::Memory {
            capacity: 10,
            max_bytes: 1_048_576
        }
    );
    let sessions = start(&vars).await.unwrap();
    let store = format!("{:?}", sessions.store());
    assert!(
        store.contains("max_bytes: 1048576, max_sessions: 10,"),
        "{store}"
    );
}

#[test]
fn unknown_profile_names_the_accepted_values() {
    assert_eq!(
        message(profile(&[("SESSION_STORE", "mongo")])),
        "SESSION_STORE=\"mongo\": expected one of memory, redis, postgres"
    );
}

#[test]
fn redis_without_a_url_is_refused() {
    assert_eq!(
        message(profile(&[("SESSION_STORE", "redis")])),
        "REDIS_URL is required with SESSION_STORE=redis: set it to a redis:// URL such as \
         redis://127.0.0.1:6379, or set REDIS_CLUSTER_URLS to the nodes of a cluster"
    );
}

#[test]
fn postgres_without_a_url_is_refused() {
    assert_eq!(
        message(profile(&[("SESSION_STORE", "postgres")])),
        "DATABASE_URL is required with SESSION_STORE=postgres: set it to a postgres:// URL \
         such as postgres://postgres@127.0.0.1/test"
    );
}

#[test]
fn malformed_numbers_and_words_are_refused() {
    let cases = [
        (
            ("SESSION_MAX_INACTIVE_SECS", "half an hour"),
            "SESSION_MAX_INACTIVE_SECS=\"half an hour\": expected a whole number of seconds",
        ),
        (
            ("SESSION_MEMORY_CAPACITY", "0"),
            "SESSION_MEMORY_CAPACITY=\"0\": expected a number of sessions above 0",
        ),
        (
            ("SESSION_MEMORY_MAX_BYTES", "64MiB"),
            "SESSION_MEMORY_MAX_BYTES=\"64MiB\": expected a number of bytes above 0",
        ),
        (
            ("SESSION_MEMORY_MAX_BYTES", "0"),
            "SESSION_MEMORY_MAX_BYTES=\"0\": expected a number of bytes above 0",
        ),
        (
            ("SESSION_SAME_SITE", "sometimes"),
            "SESSION_SAME_SITE=\"sometimes\": expected one of lax, strict, none",
        ),
        (
            ("SESSION_COOKIE_SECURE", "maybe"),
            "SESSION_COOKIE_SECURE=\"maybe\": expected true or false",
        ),
    ];
    for ((name, value), expected) in cases {
        assert_eq!(message(profile(&[(name, value)])), expected);
    }
}

#[tokio::test]
async fn settings_that_break_cookie_rules_are_refused_at_start() {
    assert_eq!(
        message(start(&[("SESSION_MAX_INACTIVE_SECS", "0")]).await),
        "session settings: max inactive interval must be between 1 second and 400 days"
    );
    assert_eq!(
        message(
            start(&[
                ("SESSION_SAME_SITE", "none"),
                ("SESSION_COOKIE_SECURE", "false")
            ])
            .await
        ),
        "session settings: SameSite=None requires a Secure cookie"
    );
    assert_eq!(
        message(
            start(&[
                ("SESSION_COOKIE_NAME", "__Host-x"),
                ("SESSION_COOKIE_PATH", "/app")
            ])
            .await
        ),
        "session settings: a cookie named __Host-… must be Secure, have path \"/\" and no domain"
    );
}

#[test]
fn deserializes_from_config_files() {
    let profile: Profile = serde_json::from_str(
        r#"{"store": {"kind": "redis", "url": "redis://:secret@127.0.0.1:6379"}, "max_inactive_secs": 60}"#,
    )
    .unwrap();
    assert!(matches!(profile.store, StoreProfile::Redis { .. }));
    let printed = format!("{profile:?}");
    assert!(!printed.contains("secret"), "{printed}");
    let unknown = serde_json::from_str::<Profile>(r#"{"store": {"kind": "mongo"}}"#);
    assert!(unknown.is_err());
}

#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres {
    use std::time::Duration;

    use super::*;

    fn url() -> String {
        std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    #[tokio::test]
    async fn starts_migrated_and_serves_sessions() {
        let schema = format!("profile_{}", std::process::id());
        let url = url();
        let sessions = start(&[
            ("SESSION_STORE", "postgres"),
            ("DATABASE_URL", &url),
            ("SESSION_PG_SCHEMA", &schema),
        ])
        .await
        .unwrap();
        assert_eq!(sessions.profile(), "postgres");
        let store = sessions.store();
        let id = tower_httpsession::SessionId::generate().unwrap();
        let record = tower_httpsession::store::testing::record(
            &id.verifier_hash(),
            Duration::from_secs(60),
            &[("a", "1")],
        );
        let key = id.store_key();
        assert_eq!(
            store.create(&key, &record, None).await.unwrap(),
            tower_httpsession::store::Created::Stored
        );
        assert!(store.load(&key).await.unwrap().is_some());
        drop(sessions);
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_url_of_another_kind_is_refused_without_echoing_it() {
        let message = message(
            start(&[
                ("SESSION_STORE", "postgres"),
                ("DATABASE_URL", "mysql://root:hunter2@127.0.0.1/app"),
            ])
            .await,
        );
        assert_eq!(
            message,
            "DATABASE_URL=(hidden: it may hold a password): expected a postgres:// URL"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_after_the_connect_timeout() {
        let started = std::time::Instant::now();
        let message = message(
            start(&[
                ("SESSION_STORE", "postgres"),
                ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test"),
                ("SESSION_CONNECT_TIMEOUT_SECS", "1"),
            ])
            .await,
        );
        assert_eq!(
            message,
            "DATABASE_URL: the postgres store could not be reached within 1s; check that it \
             runs at the host and port the URL names, or raise SESSION_CONNECT_TIMEOUT_SECS"
        );
        // The 1 s timeout and four more for a loaded machine; waiting for
        // the default timeout (5 s) instead fails the bound.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_database_is_refused() {
        let message = message(
            start(&[
                ("SESSION_STORE", "postgres"),
                (
                    "DATABASE_URL",
                    "postgres://postgres@127.0.0.1:5432/no_such_database_here",
                ),
            ])
            .await,
        );
        // One line that says what the server said, and what to check.
        assert_eq!(
            message,
            "DATABASE_URL: the postgres store refused the settings (database \
             \"no_such_database_here\" does not exist); check the user, password, database \
             and schema or prefix it is given"
        );
    }
}

#[cfg(all(feature = "redis", feature = "testing"))]
mod redis_support;

#[cfg(all(feature = "redis", feature = "testing"))]
mod redis {
    use std::time::Duration;

    use super::*;

    use super::redis_support;

    async fn round_trip(sessions: &tower_httpsession::profile::Sessions) {
        let store = sessions.store();
        let id = tower_httpsession::SessionId::generate().unwrap();
        let record = tower_httpsession::store::testing::record(
            &id.verifier_hash(),
            Duration::from_secs(5),
            &[("a", "1")],
        );
        let key = id.store_key();
        assert_eq!(
            store.create(&key, &record, None).await.unwrap(),
            tower_httpsession::store::Created::Stored
        );
        assert_eq!(
            store.load(&key).await.unwrap().unwrap().attributes["a"],
            "1"
        );
        store.delete(&key, &id.verifier_hash()).await.unwrap();
    }

    #[tokio::test]
    async fn starts_on_a_single_node() {
        let url = redis_support::local_url();
        let prefix = redis_support::unique_prefix("profile");
        let sessions = start(&[
            ("SESSION_STORE", "redis"),
            ("REDIS_URL", &url),
            ("SESSION_REDIS_PREFIX", &prefix),
        ])
        .await
        .unwrap();
        assert_eq!(sessions.profile(), "redis");
        round_trip(&sessions).await;
    }

    #[tokio::test]
    async fn starts_on_a_cluster() {
        let cluster = redis_support::Cluster::shared();
        let urls = cluster.urls().join(",");
        let sessions = start(&[("SESSION_STORE", "redis"), ("REDIS_CLUSTER_URLS", &urls)])
            .await
            .unwrap();
        round_trip(&sessions).await;
    }

    #[tokio::test]
    async fn a_url_of_another_kind_is_refused_without_echoing_it() {
        let message = message(
            start(&[
                ("SESSION_STORE", "redis"),
                ("REDIS_URL", "http://user:hunter2@127.0.0.1:6379"),
            ])
            .await,
        );
        assert_eq!(
            message,
            "REDIS_URL=(hidden: it may hold a password): expected a redis:// or rediss:// URL"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_fails_after_the_connect_timeout() {
        let port = redis_support::free_port();
        let url = format!("redis://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        let message = message(
            start(&[
                ("SESSION_STORE", "redis"),
                ("REDIS_URL", &url),
                ("SESSION_CONNECT_TIMEOUT_SECS", "1"),
            ])
            .await,
        );
        assert_eq!(
            message,
            "REDIS_URL: the redis store could not be reached within 1s; check that it runs at \
             the host and port the URL names, or raise SESSION_CONNECT_TIMEOUT_SECS"
        );
        // The 1 s timeout and four more for a loaded machine; waiting for
        // the default timeout (5 s) instead fails the bound.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_bad_prefix_is_refused() {
        let url = redis_support::local_url();
        let message = message(
            start(&[
                ("SESSION_STORE", "redis"),
                ("REDIS_URL", &url),
                ("SESSION_REDIS_PREFIX", "{bad}"),
            ])
            .await,
        );
        assert_eq!(
            message,
            "REDIS_URL: the redis store refused the settings (the key prefix may not contain \
             '{' or '}'); check the user, password, database and schema or prefix it is given"
        );
    }
}

#[test]
fn the_session_limit_comes_from_the_environment_and_files() {
    use tower_httpsession::store::{LimitPolicy, SessionLimit};

    let limit = |vars: &[(&str, &str)]| profile(vars).unwrap().session.session_limit();
    assert_eq!(limit(&[]), None);
    assert_eq!(
        limit(&[("SESSION_LIMIT", "3")]),
        SessionLimit::new(3, LimitPolicy::EvictLeastRecentlyUsed)
    );
    assert_eq!(
        limit(&[("SESSION_LIMIT", "1"), ("SESSION_LIMIT_POLICY", "Refuse")]),
        SessionLimit::new(1, LimitPolicy::RefuseNewLogin)
    );
    let from_file: Profile =
        serde_json::from_str(r#"{ "session_limit": 2, "session_limit_policy": "refuse" }"#)
            .unwrap();
    assert_eq!(
        from_file.session.session_limit(),
        SessionLimit::new(2, LimitPolicy::RefuseNewLogin)
    );
    assert!(serde_json::from_str::<Profile>(r#"{ "session_limit": 0 }"#).is_err());

    let refused = [
        (
            vec![("SESSION_LIMIT", "0")],
            "SESSION_LIMIT=\"0\": expected a whole number of sessions per principal, 1 or more",
        ),
        (
            vec![("SESSION_LIMIT", "1"), ("SESSION_LIMIT_POLICY", "kick")],
            "SESSION_LIMIT_POLICY=\"kick\": expected evict (end the least recently used session) or refuse (refuse the new login)",
        ),
        (
            vec![("SESSION_LIMIT_POLICY", "evict")],
            "SESSION_LIMIT_POLICY=\"evict\": expected SESSION_LIMIT to be set as well",
        ),
    ];
    for (vars, expected) in refused {
        assert_eq!(message(profile(&vars)), expected);
    }
}

#[test]
fn a_persistent_cookie_is_a_setting() {
    let persistent = |vars: &[(&str, &str)]| {
        let profile = profile(vars).unwrap();
        profile.session == SessionConfig::default().with_persistent_cookie()
    };
    assert!(!persistent(&[]));
    assert!(persistent(&[("SESSION_COOKIE_PERSISTENT", "true")]));
    assert!(!persistent(&[("SESSION_COOKIE_PERSISTENT", "no")]));
    assert_eq!(
        message(profile(&[("SESSION_COOKIE_PERSISTENT", "always")])),
        "SESSION_COOKIE_PERSISTENT=\"always\": expected true or false"
    );
    let from_file: Profile = serde_json::from_str(r#"{ "cookie_persistent": true }"#).unwrap();
    assert_eq!(
        from_file.session,
        SessionConfig::default().with_persistent_cookie()
    );
}
