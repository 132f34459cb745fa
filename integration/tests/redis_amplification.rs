//! What one request costs Redis, measured on a redis-server of the test's
//! own through the real layer: bytes sent (`total_net_input_bytes`) and
//! commands run (`INFO commandstats`). Assertions are on counts, not time.
//!
//! `cargo test --all-features --test redis_amplification -- --nocapture`
//! prints the figures.
#![cfg(all(feature = "redis", feature = "testing"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use http::{Request, StatusCode, header};
use redis_support::{RedisServer, command_calls, contract, delta};
use tower::ServiceExt;
use tower_httpsession::store::SessionStore;
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::{Session, SessionError, SessionLayer};

const ATTRIBUTES: usize = 50;
const VALUE_BYTES: usize = 1_000;
const REQUESTS: u64 = 200;
/// Commands the apply script runs on the server.
const SCRIPT_COMMANDS: [&str; 8] = [
    "exists",
    "hget",
    "hexists",
    "hlen",
    "hmget",
    "hset",
    "hdel",
    "pexpireat",
];

async fn seed(session: Session) -> Result<&'static str, SessionError> {
    // A JSON string of 998 characters is 1,000 bytes of JSON.
    let value = "x".repeat(VALUE_BYTES - 2);
    for i in 0..ATTRIBUTES {
        session.set(&format!("item{i:02}"), &value).await?;
    }
    Ok("seeded")
}

async fn bump(session: Session, Path(n): Path<u64>) -> Result<&'static str, SessionError> {
    session.set("n", &n).await?;
    Ok("set")
}

async fn read(session: Session) -> Result<String, SessionError> {
    Ok(session.get::<u64>("n").await?.unwrap_or(0).to_string())
}

async fn send(app: &Router, path: &str, cookie: Option<&str>) -> http::Response<Body> {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response
}

fn stat(server: &RedisServer, name: &str) -> u64 {
    server.info("stats")[name].parse().unwrap()
}

#[tokio::test]
async fn one_small_change_in_a_large_session_sends_a_few_hundred_bytes() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let app = Router::new()
        .route("/seed", get(seed))
        .route("/bump/{n}", get(bump))
        .route("/read", get(read))
        .layer(SessionLayer::new(store));

    let response = send(&app, "/seed", None).await;
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // One warm-up write, so the server has loaded the apply script; after a
    // restart the first write pays for it once.
    send(&app, "/bump/0", Some(&cookie)).await;

    let input_before = stat(&server, "total_net_input_bytes");
    let output_before = stat(&server, "total_net_output_bytes");
    let calls_before = command_calls(&server);
    for n in 1..=REQUESTS {
        send(&app, &format!("/bump/{n}"), Some(&cookie)).await;
    }
    let input = stat(&server, "total_net_input_bytes") - input_before;
    let output = stat(&server, "total_net_output_bytes") - output_before;
    let calls = delta(&calls_before, &command_calls(&server));
    let per_request = input / REQUESTS;
    println!(
        "write: session of {ATTRIBUTES} x {VALUE_BYTES} B, {REQUESTS} requests each setting one \
         small integer: {input} B sent to Redis = {per_request} B/request \
         (Redis answered {} B/request); commands: {calls:?}",
        output / REQUESTS
    );
    assert!(per_request <= 500, "{per_request} bytes per request");
    let answered = output / REQUESTS;
    assert!(
        answered <= 500,
        "Redis answered {answered} bytes per write request"
    );
    // One command from the app per request: EVALSHA of the apply script,
    // sent without reading the session first. The others are run by the
    // script on the server (commandstats counts them too: the verifier
    // check, the metadata the new expiry is worked out from, the write)
    // and cost no bytes on the wire.
    assert_eq!(calls.get("evalsha"), Some(&REQUESTS), "{calls:?}");
    let from_app: Vec<&str> = calls
        .keys()
        .map(String::as_str)
        .filter(|name| !SCRIPT_COMMANDS.contains(name))
        .collect();
    assert_eq!(from_app, ["evalsha"], "{calls:?}");

    let input_before = stat(&server, "total_net_input_bytes");
    let output_before = stat(&server, "total_net_output_bytes");
    let dirty_before = server.info("persistence")["rdb_changes_since_last_save"]
        .parse::<u64>()
        .unwrap();
    let calls_before = command_calls(&server);
    for _ in 0..REQUESTS {
        let response = send(&app, "/read", Some(&cookie)).await;
        assert!(!response.headers().contains_key(header::SET_COOKIE));
    }
    let input = stat(&server, "total_net_input_bytes") - input_before;
    let output = stat(&server, "total_net_output_bytes") - output_before;
    let calls = delta(&calls_before, &command_calls(&server));
    let dirty = server.info("persistence")["rdb_changes_since_last_save"]
        .parse::<u64>()
        .unwrap()
        - dirty_before;
    let per_request = input / REQUESTS;
    println!(
        "read inside the touch interval: {REQUESTS} requests: {per_request} B/request sent, \
         {} B/request answered, commands: {calls:?}, keys changed: {dirty}",
        output / REQUESTS
    );
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls.get("hmget"), Some(&REQUESTS), "{calls:?}");
    assert_eq!(dirty, 0);
    let answered = output / REQUESTS;
    assert!(
        answered <= 300,
        "Redis answered {answered} bytes per read request"
    );
}

/// Bytes on the wire and commands run for `REQUESTS` calls of `load`.
async fn measure<F, Fut>(server: &RedisServer, mut load: F) -> (u64, u64, BTreeMap<String, u64>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let input_before = stat(server, "total_net_input_bytes");
    let output_before = stat(server, "total_net_output_bytes");
    let calls_before = command_calls(server);
    for _ in 0..REQUESTS {
        load().await;
    }
    let input = stat(server, "total_net_input_bytes") - input_before;
    let output = stat(server, "total_net_output_bytes") - output_before;
    // INFO's own replies are in the output figure; they are the same for
    // both loads and small next to what is measured.
    (
        input / REQUESTS,
        output / REQUESTS,
        delta(&calls_before, &command_calls(server)),
    )
}

#[tokio::test]
async fn load_some_of_one_small_attribute_answers_a_few_hundred_bytes() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let value = format!("\"{}\"", "x".repeat(VALUE_BYTES - 2));
    let names: Vec<String> = (0..ATTRIBUTES).map(|i| format!("item{i:02}")).collect();
    let mut attributes: Vec<(&str, &str)> = names
        .iter()
        .map(|name| (name.as_str(), value.as_str()))
        .collect();
    attributes.push(("n", "7"));
    let (key, _) = contract::stored(&store, &attributes).await;

    let (sent, answered, calls) = measure(&server, || async {
        assert!(store.load(&key).await.unwrap().is_some());
    })
    .await;
    println!(
        "load of a session of {ATTRIBUTES} x {VALUE_BYTES} B: {sent} B/request sent, \
         {answered} B/request answered, commands: {calls:?}"
    );
    assert!(answered >= (ATTRIBUTES * VALUE_BYTES) as u64, "{answered}");

    let (sent, answered, calls) = measure(&server, || async {
        let some = store.load_some(&key, &["n"]).await.unwrap().unwrap();
        assert_eq!(some.record.attributes["n"], "7");
    })
    .await;
    println!(
        "load_some of one small attribute of it: {sent} B/request sent, \
         {answered} B/request answered, commands: {calls:?}"
    );
    assert!(answered <= 500, "{answered} bytes answered per request");
    assert!(sent <= 300, "{sent} bytes sent per request");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls.get("hmget"), Some(&REQUESTS), "{calls:?}");
}
