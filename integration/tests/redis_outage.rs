//! Redis going away and coming back, on a redis-server of the test's own:
//! store calls fail fast as unavailable, requests get 503 with
//! `Retry-After`, and the same store works again once Redis is back.
#![cfg(all(feature = "redis", feature = "testing"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode, header};
use redis_support::{Cluster, RedisServer, contract, free_port};
use tower::ServiceExt;
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::{ChangeSet, HealthStatus, SessionStore, StoreError};
use tower_httpsession::{Session, SessionError, SessionLayer};

/// The command timeout of the stores here.
const TIMEOUT: Duration = Duration::from_millis(300);

/// What a call may take past the timeout it waited for before it no longer
/// counts as failing fast. A loaded two-core machine fires the timer late by
/// tens of milliseconds (16 ms measured with six busy processes beside the
/// test); 700 ms is many times that, and still keeps a call that waited for
/// the default command timeout (1 s) instead of the configured one on the
/// wrong side of the bound.
const SLACK: Duration = Duration::from_millis(700);

async fn store_on(url: &str) -> RedisStore {
    RedisStore::builder(url)
        .with_command_timeout(TIMEOUT)
        .connect()
        .await
        .unwrap()
}

/// Runs `call`, checks it failed as unavailable within the timeout (and
/// the slack).
async fn fails_fast<T: std::fmt::Debug>(
    what: &str,
    call: impl Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let error = call.await.expect_err(what);
    let took = started.elapsed();
    println!("{what}: failed in {took:?}: {error}");
    assert!(error.is_unavailable(), "{what}: {error:?}");
    assert_eq!(error.backend(), "redis");
    assert!(std::error::Error::source(&error).is_some(), "{what}");
    assert!(took < TIMEOUT + SLACK, "{what} took {took:?}");
}

/// Polls `call` until it succeeds; answers how long that took.
async fn recovers<T>(what: &str, mut call: impl AsyncFnMut() -> Result<T, StoreError>) -> Duration {
    let started = Instant::now();
    loop {
        match call().await {
            Ok(_) => break,
            Err(error) => {
                assert!(error.is_unavailable(), "{what}: {error:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{what}: still failing: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let took = started.elapsed();
    println!("{what}: recovered after {took:?}");
    took
}

#[tokio::test]
async fn calls_fail_fast_while_down_and_work_again_when_back() {
    let mut server = RedisServer::start();
    let store = store_on(&server.url()).await;
    let (key, record) = contract::stored(&store, &[("a", "1")]).await;

    server.stop();
    let changes = ChangeSet::builder().with_attribute("a", "2").build();
    for _ in 0..3 {
        fails_fast("load", store.load(&key)).await;
        fails_fast("create", store.create(&key, &record, None)).await;
        fails_fast("apply", store.apply(&key, &changes)).await;
        fails_fast(
            "compare_and_set",
            store.compare_and_set(&key, &record.verifier, "a", None, Some("1")),
        )
        .await;
        fails_fast("delete", store.delete(&key, &record.verifier)).await;
        let started = Instant::now();
        let health = store.health().await;
        assert_eq!(health.status, HealthStatus::Down);
        assert!(health.error.is_some());
        let took = started.elapsed();
        assert!(took < TIMEOUT + SLACK, "health took {took:?}");
    }

    server.resume();
    recovers("load", async || store.load(&key).await).await;
    // The server kept nothing on disk: the session is gone, and new ones
    // work on the same store.
    assert_eq!(store.load(&key).await.unwrap(), None);
    let (key, record) = contract::stored(&store, &[("a", "2")]).await;
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
    assert_eq!(store.health().await.status, HealthStatus::Up);
}

#[tokio::test]
async fn a_hung_server_times_out_as_unavailable() {
    let server = RedisServer::start();
    let store = store_on(&server.url()).await;
    let (key, record) = contract::stored(&store, &[("a", "1")]).await;

    server.signal("STOP");
    let (hung, hung_key) = (store.clone(), key.clone());
    let outcome = async move {
        fails_fast("load from a hung server", hung.load(&hung_key)).await;
        let changes = ChangeSet::builder().with_attribute("a", "2").build();
        fails_fast("apply to a hung server", hung.apply(&hung_key, &changes)).await;
    };
    // Thaw the server even if a check fails, so its guard can stop it.
    let result = tokio::spawn(outcome).await;
    server.signal("CONT");
    result.unwrap();

    recovers("load", async || store.load(&key).await).await;
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
}

#[tokio::test]
async fn the_constructor_is_bounded_when_redis_is_down() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let error = RedisStore::builder(&url)
        .with_connect_timeout(connect_timeout)
        .connect()
        .await
        .unwrap_err();
    let took = started.elapsed();
    println!("connect: failed in {took:?}: {error}");
    assert!(error.is_unavailable(), "{error:?}");
    // The default connect timeout (5 s) is far past this bound.
    assert!(took < connect_timeout + SLACK, "connect took {took:?}");

    // A lazy store builds at once, fails fast, and heals when Redis starts.
    let store = RedisStore::builder(&url)
        .with_command_timeout(TIMEOUT)
        .connect_lazy()
        .unwrap();
    let key = tower_httpsession::SessionId::generate()
        .unwrap()
        .store_key();
    fails_fast("lazy load", store.load(&key)).await;
    let _server = RedisServer::start_on(port);
    recovers("lazy load", async || store.load(&key).await).await;
}

async fn visit(session: Session) -> Result<String, SessionError> {
    let n = session
        .update("visits", |n: Option<u32>| n.unwrap_or(0) + 1)
        .await?;
    Ok(n.to_string())
}

async fn send(app: &Router, cookie: Option<&str>) -> http::Response<Body> {
    let mut request = Request::get("/");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn requests_get_503_with_retry_after_while_down_and_200_when_back() {
    let mut server = RedisServer::start();
    let app = Router::new()
        .route("/", get(visit))
        .layer(SessionLayer::new(store_on(&server.url()).await));

    let response = send(&app, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    server.stop();
    for cookie in [Some(cookie.as_str()), None] {
        let started = Instant::now();
        let response = send(&app, cookie).await;
        println!(
            "while down: {} in {:?}",
            response.status(),
            started.elapsed()
        );
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        assert!(!response.headers().contains_key(header::SET_COOKIE));
        // One store call each (the load with the cookie, the new session's
        // create without); the bound leaves room for a second.
        let took = started.elapsed();
        assert!(took < 2 * TIMEOUT + SLACK, "503 after {took:?}");
    }

    server.resume();
    let started = Instant::now();
    loop {
        let response = send(&app, Some(&cookie)).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(10), "still 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("200 again after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_cluster_node_going_away_is_unavailable_and_heals() {
    let mut cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let store = RedisStore::builder_for_cluster(cluster.urls())
        .with_command_timeout(TIMEOUT)
        .connect()
        .await
        .unwrap();

    // Find a session that the first node holds.
    let client = redis::Client::open(cluster.urls()[0].as_str()).unwrap();
    let mut first = client.get_multiplexed_async_connection().await.unwrap();
    let key = loop {
        let (key, _) = contract::stored(&store, &[("a", "1")]).await;
        let name = format!("{}{{{}}}", store.key_prefix(), key.as_str());
        let held: Result<i64, _> = redis::cmd("EXISTS")
            .arg(&name)
            .query_async(&mut first)
            .await;
        if held == Ok(1) {
            break key;
        }
    };
    drop(first);

    cluster.stop_node(0);
    let changes = ChangeSet::builder().with_attribute("a", "2").build();
    for _ in 0..3 {
        fails_fast("cluster load", store.load(&key)).await;
        fails_fast("cluster apply", store.apply(&key, &changes)).await;
    }

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.resume_node(0);
        cluster.wait_until_ok();
        cluster
    })
    .await
    .unwrap();
    recovers("cluster load", async || store.load(&key).await).await;
    // The node kept nothing on disk but its cluster state: the session is
    // gone, and new ones work on the same store.
    assert_eq!(store.load(&key).await.unwrap(), None);
    for _ in 0..10 {
        let (key, record) = contract::stored(&store, &[("b", "1")]).await;
        assert_eq!(store.load(&key).await.unwrap(), Some(record));
    }
    drop(cluster);
}
