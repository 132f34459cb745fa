//! Hostile records: rows written around the crate (a bad migration, a
//! hand-edited row, an attacker with write access to the database) with
//! values the crate never writes. Loading them must never panic: the answer
//! is 200, a 413 for a limit or a clear 500, and other sessions are
//! unaffected.
//!
//! The stores decode records in private functions, so these cases reach the
//! decoders the only way they can: through `load` on a tampered row.
#![cfg(all(feature = "testing", any(feature = "postgres", feature = "redis")))]

mod common;
#[cfg(feature = "postgres")]
mod postgres_support;
#[cfg(feature = "redis")]
mod redis_support;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::{SessionId, SessionLayer};

async fn send(app: &Router, method: &str, uri: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let app = app.clone();
    let request = request.body(Body::empty()).expect("request");
    // In a task of its own, so a panic shows as a failed join, not as this
    // test's panic.
    let response = tokio::spawn(async move { app.oneshot(request).await })
        .await
        .unwrap_or_else(|e| panic!("{method} {uri} panicked: {e}"))
        .expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// What a request against a tampered record may answer: served, a limit, a
/// corrupt record, or (a verifier that is no longer the cookie's) a session
/// that ended under the request, which writes nothing.
const ACCEPTED: [StatusCode; 4] = [
    StatusCode::OK,
    StatusCode::CONFLICT,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::INTERNAL_SERVER_ERROR,
];

/// Logs in and returns the cookie and its store key.
async fn login(app: &Router) -> (String, String) {
    let request = Request::post("/login/alice")
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let key = SessionId::from_cookie_value(cookie.split_once('=').expect("pair").1)
        .expect("id")
        .store_key();
    (cookie, key.as_str().to_owned())
}

/// The requests every tampered session gets.
const REQUESTS: [(&str, &str); 6] = [
    ("GET", "/get/user"),
    ("GET", "/names"),
    ("POST", "/set/x/1"),
    ("POST", "/incr/n"),
    ("POST", "/login/bob"),
    ("POST", "/invalidate"),
];

/// Logs in, runs `sql` on the new session's rows (`$1` is its key), then
/// drives every kind of request with its cookie: each must answer 200, 409
/// (the verifier is not the cookie's any more), 413 (a limit) or 500 (a
/// corrupt record), and a fresh session must still work.
#[cfg(feature = "postgres")]
async fn tamper(sql_for: impl Fn(&str) -> String) -> Vec<String> {
    let (store, schema) = postgres_support::store().await;
    let layer = SessionLayer::with_config(store, common::config()).expect("config");
    let app = common::app(layer);
    let mut conn = postgres_support::connect().await;
    let sql = sql_for(&schema.name);
    let mut outcomes = Vec::new();
    for (method, uri) in REQUESTS {
        let (cookie, key) = login(&app).await;
        sqlx::query(&sql)
            .bind(&key)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let (status, _) = send(&app, method, uri, Some(&cookie)).await;
        assert!(
            ACCEPTED.contains(&status),
            "{sql}: {method} {uri}: {status}"
        );
        outcomes.push(format!("{method} {uri}: {}", status.as_u16()));
        let (status, _) = send(&app, "POST", "/set/a/1", None).await;
        assert_eq!(status, StatusCode::OK, "other sessions are unaffected");
    }
    outcomes
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn tampered_postgres_rows_never_panic() {
    let cases: [fn(&str) -> String; 7] = [
        // The cleanup's mark may not pass the expiry (a check constraint).
        |s| {
            format!(
                "UPDATE {s}.sessions SET expires_at = '-infinity', sweep_at = '-infinity' \
                 WHERE key = $1"
            )
        },
        |s| format!("UPDATE {s}.sessions SET idle_timeout_ms = 9223372036854775807 WHERE key = $1"),
        |s| format!("UPDATE {s}.sessions SET verifier = sha256('x') WHERE key = $1"),
        |s| format!("UPDATE {s}.attributes SET value = 'not json' WHERE session_key = $1"),
        |s| format!("UPDATE {s}.attributes SET value = '' WHERE session_key = $1"),
        |s| format!("UPDATE {s}.attributes SET name = '' WHERE session_key = $1"),
        |s| {
            format!(
                "INSERT INTO {s}.attributes (session_key, name, value) \
                 SELECT $1, 'n' || i, repeat('9', 100) FROM generate_series(1, 5000) i"
            )
        },
    ];
    for case in cases {
        let outcomes = tamper(case).await;
        println!("{}: {outcomes:?}", case("s"));
    }
}

/// A timestamp outside the range the `time` crate holds (`infinity`, year
/// 200000, 4713 BC) panics inside sqlx's decoder while the store loads the
/// row.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn out_of_range_timestamps_never_panic() {
    let cases: [fn(&str) -> String; 5] = [
        |s| format!("UPDATE {s}.sessions SET expires_at = 'infinity' WHERE key = $1"),
        |s| format!("UPDATE {s}.sessions SET created_at = '-infinity' WHERE key = $1"),
        |s| format!("UPDATE {s}.sessions SET last_accessed_at = 'infinity' WHERE key = $1"),
        |s| format!("UPDATE {s}.sessions SET expires_at = '200000-01-01' WHERE key = $1"),
        |s| format!("UPDATE {s}.sessions SET created_at = '4713-01-01 BC' WHERE key = $1"),
    ];
    for case in cases {
        let outcomes = tamper(case).await;
        println!("{}: {outcomes:?}", case("s"));
    }
}

/// The same timestamps through `load_some`, the store's other decoder of
/// session rows: never a panic; a corrupt error for a time out of the range
/// the crate holds, a record for one inside it (4713 BC is in range), none
/// for a session the tampering expired.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn load_some_of_tampered_timestamps_never_panics() {
    use std::time::Duration;

    use tower_httpsession::SessionStore;
    use tower_httpsession::store::testing::{fresh_key, record};
    use tower_httpsession::store::{Created, StoreErrorKind};

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Outcome {
        Corrupt,
        Loaded,
        Expired,
    }

    let (store, schema) = postgres_support::store().await;
    let mut conn = postgres_support::connect().await;
    let s = &schema.name;
    let cases = [
        ("expires_at = 'infinity'", Outcome::Corrupt),
        ("created_at = '-infinity'", Outcome::Corrupt),
        ("last_accessed_at = 'infinity'", Outcome::Corrupt),
        ("expires_at = '200000-01-01'", Outcome::Corrupt),
        ("last_accessed_at = '100000-01-01'", Outcome::Corrupt),
        ("created_at = '4713-01-01 BC'", Outcome::Loaded),
        // The cleanup's mark may not pass the expiry (a check constraint).
        (
            "expires_at = '-infinity', sweep_at = '-infinity'",
            Outcome::Expired,
        ),
    ];
    for (assignment, expected) in cases {
        let sql = format!("UPDATE {s}.sessions SET {assignment} WHERE key = $1");
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[("a", "1"), ("b", "2")]);
        assert_eq!(
            store.create(&key, &rec, None).await.expect("create"),
            Created::Stored
        );
        sqlx::query(&sql)
            .bind(key.as_str())
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let task_store = store.clone();
        let outcome = tokio::spawn(async move { task_store.load_some(&key, &["a"]).await })
            .await
            .unwrap_or_else(|e| panic!("{assignment}: load_some panicked: {e}"));
        let got = match outcome {
            Err(e) if e.kind() == StoreErrorKind::Corrupt => Outcome::Corrupt,
            Err(e) => panic!("{assignment}: {e:?}"),
            Ok(Some(some)) => {
                assert_eq!(some.record.attributes.len(), 1, "{assignment}");
                Outcome::Loaded
            }
            Ok(None) => Outcome::Expired,
        };
        assert_eq!(got, expected, "{assignment}");
    }
}

/// One tampering of a session's Redis hash, as commands on its key.
#[cfg(feature = "redis")]
type RedisTamper = fn(&str) -> Vec<redis::Cmd>;

#[cfg(feature = "redis")]
fn hset(key: &str, field: &str, value: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key).arg(field).arg(value);
    cmd
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn tampered_redis_hashes_never_panic() {
    let cases: [(&str, RedisTamper); 14] = [
        ("created not a number", |k| {
            vec![hset(k, "m:created", b"soon")]
        }),
        ("expires past year 9999", |k| {
            vec![hset(k, "m:expires", b"9223372036854775807")]
        }),
        ("accessed before year -9999", |k| {
            vec![hset(k, "m:accessed", b"-9223372036854775808")]
        }),
        ("idle timeout negative", |k| {
            vec![hset(k, "m:max_inactive", b"-1")]
        }),
        ("idle timeout huge", |k| {
            vec![hset(k, "m:max_inactive", b"9223372036854775807")]
        }),
        ("verifier short", |k| vec![hset(k, "m:verifier", b"x")]),
        ("verifier missing", |k| {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(k).arg("m:verifier");
            vec![cmd]
        }),
        ("unknown metadata", |k| vec![hset(k, "m:role", b"admin")]),
        ("field outside namespaces", |k| {
            vec![hset(k, "user", b"\"eve\"")]
        }),
        ("attribute not UTF-8", |k| {
            vec![hset(k, "a:user", b"\xff\xfe")]
        }),
        ("attribute name not UTF-8", |k| {
            vec![
                redis::cmd("HSET")
                    .arg(k)
                    .arg(&b"a:\xff"[..])
                    .arg("1")
                    .clone(),
            ]
        }),
        ("attribute not JSON", |k| {
            vec![hset(k, "a:user", b"not json")]
        }),
        ("key of another type", |k| {
            let mut del = redis::cmd("DEL");
            del.arg(k);
            let mut set = redis::cmd("SET");
            set.arg(k).arg("a string");
            vec![del, set]
        }),
        ("no expiry", |k| {
            let mut cmd = redis::cmd("PERSIST");
            cmd.arg(k);
            vec![cmd]
        }),
    ];
    let store = redis_support::clean_store("corrupt").await;
    let prefix = store.store().key_prefix().to_owned();
    let layer = SessionLayer::with_config(store.store().clone(), common::config()).expect("config");
    let app = common::app(layer);
    let client = redis::Client::open(redis_support::local_url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    for (what, tamper) in cases {
        let mut seen = Vec::new();
        for (method, uri) in REQUESTS {
            let (cookie, key) = login(&app).await;
            let redis_key = format!("{prefix}{{{key}}}");
            for cmd in tamper(&redis_key) {
                let _: redis::Value = cmd.query_async(&mut conn).await.expect(what);
            }
            let (status, _) = send(&app, method, uri, Some(&cookie)).await;
            assert!(
                ACCEPTED.contains(&status),
                "{what}: {method} {uri}: {status}"
            );
            seen.push(status.as_u16());
            let (status, _) = send(&app, "POST", "/set/a/1", None).await;
            assert_eq!(status, StatusCode::OK, "other sessions are unaffected");
        }
        println!("{what}: {seen:?}");
    }
}
