//! Oversized input: huge cookie headers, a flood of attributes, huge values
//! and names. Each gets its documented limit and a clear 4xx, never a 5xx,
//! a panic, a hang or a store that grows past the limit.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path};
use axum::routing::{get, post};
use http::{Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::store::StoreKey;
use tower_httpsession::{
    MemoryStore, Session, SessionConfig, SessionError, SessionFailure, SessionId, SessionLayer,
    SessionStore,
};

const MIB: usize = 1024 * 1024;

fn app(store: Arc<MemoryStore>, config: SessionConfig) -> Router {
    let layer = SessionLayer::with_config(store, config).expect("config");
    Router::new()
        .route(
            "/many/{from}/{count}",
            post(
                |session: Session, Path((from, count)): Path<(usize, usize)>| async move {
                    for i in from..from + count {
                        session.set(&format!("k{i}"), &i).await?;
                    }
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/sized/{bytes}",
            post(|session: Session, Path(bytes): Path<usize>| async move {
                session.set("blob", &"x".repeat(bytes)).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/update-sized/{bytes}",
            post(|session: Session, Path(bytes): Path<usize>| async move {
                session
                    .update("blob", |_: Option<String>| "x".repeat(bytes))
                    .await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/body",
            post(|session: Session, body: Bytes| async move {
                session.set("body", &String::from_utf8_lossy(&body)).await?;
                Ok::<_, SessionError>("ok")
            })
            .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/body-default-limit",
            post(|session: Session, body: Bytes| async move {
                session.set("body", &body.len()).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/named/{bytes}",
            post(|session: Session, Path(bytes): Path<usize>| async move {
                session.set(&"n".repeat(bytes), &1).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/read-named/{bytes}",
            get(|session: Session, Path(bytes): Path<usize>| async move {
                let name = "n".repeat(bytes);
                let value: Option<u64> = session.get(&name).await?;
                let removed = session.remove(&name).await?;
                Ok::<_, SessionError>(format!("{value:?} {removed}"))
            }),
        )
        .route(
            "/count",
            get(|session: Session| async move {
                Ok::<_, SessionError>(session.attribute_names().await?.len().to_string())
            }),
        )
        .layer(layer)
}

fn setup() -> (Arc<MemoryStore>, Router) {
    let store = Arc::new(MemoryStore::new(1_000));
    let config = common::config();
    (store.clone(), app(store, config))
}

struct Answer {
    status: StatusCode,
    cookie: Option<String>,
    failure: Option<SessionFailure>,
    body: String,
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(request))
        .await
        .expect("answered in time")
        .expect("infallible");
    let status = response.status();
    let cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(|c| c.split(';').next().unwrap_or_default().to_owned());
    let failure = response.extensions().get::<SessionFailure>().cloned();
    let body = axum::body::to_bytes(response.into_body(), MIB)
        .await
        .expect("body");
    Answer {
        status,
        cookie,
        failure,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn post_to(uri: &str, cookie: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(body.into()).expect("request")
}

fn key_of(pair: &str) -> StoreKey {
    let value = pair.split_once('=').expect("pair").1;
    SessionId::from_cookie_value(value)
        .expect("a session id")
        .store_key()
}

fn assert_too_large(answer: &Answer, what: &str) {
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{what}");
    let failure = answer.failure.as_ref().expect("the error travels along");
    match &*failure.0 {
        SessionError::TooLarge {
            what: limit, name, ..
        } => {
            assert_eq!(limit.to_string(), what);
            assert!(name.len() <= 64, "the error carries the whole name");
        }
        other => panic!("not TooLarge: {other:?}"),
    }
}

#[tokio::test]
async fn ten_thousand_attributes_in_one_request_stop_at_the_limit() {
    let (store, app) = setup();
    let answer = send(&app, post_to("/many/0/10000", None, Body::empty())).await;
    assert_too_large(&answer, "attribute count");
    // What the handler set before the limit is kept, as with any error
    // after a set; never more than the limit.
    let cookie = answer.cookie.as_ref().expect("the session was created");
    let record = store
        .load(&key_of(cookie))
        .await
        .expect("load")
        .expect("the session is stored");
    let count = record.attributes.len();
    assert!(count <= 1024, "{count} attributes stored");
}

#[tokio::test]
async fn ten_thousand_attributes_over_many_requests_stop_at_the_limit() {
    let (store, app) = setup();
    let first = send(&app, post_to("/many/0/100", None, Body::empty())).await;
    assert_eq!(first.status, StatusCode::OK);
    let cookie = first.cookie.expect("a session");
    let mut refused = 0;
    for batch in 1..100 {
        let uri = format!("/many/{}/100", batch * 100);
        let answer = send(&app, post_to(&uri, Some(&cookie), Body::empty())).await;
        match answer.status {
            StatusCode::OK => assert_eq!(refused, 0, "a batch passed after a refusal"),
            _ => {
                assert_too_large(&answer, "attribute count");
                refused += 1;
            }
        }
    }
    assert!(refused >= 89, "{refused}");
    let record = store
        .load(&key_of(&cookie))
        .await
        .expect("load")
        .expect("the session lives");
    // Sets that do not read the session are checked by the store when they
    // land, all at once: the batch that would cross the limit is refused
    // whole, so the ten batches before it are what is kept.
    assert_eq!(record.attributes.len(), 1000);
    let count = send(
        &app,
        Request::get("/count")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(count.body, "1000");
}

#[tokio::test]
async fn a_ten_megabyte_value_is_refused_and_nothing_is_stored() {
    let (store, app) = setup();
    let answer = send(&app, post_to("/sized/10485760", None, Body::empty())).await;
    assert_too_large(&answer, "value bytes");
    assert!(answer.cookie.is_none());
    assert!(store.is_empty());

    // The limit is exact: 1 MiB of JSON passes, one byte more does not.
    let fits = MIB - 2; // the two quotes of a JSON string
    let answer = send(
        &app,
        post_to(&format!("/sized/{fits}"), None, Body::empty()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let cookie = answer.cookie.expect("stored");
    let uri = format!("/sized/{}", fits + 1);
    let answer = send(&app, post_to(&uri, Some(&cookie), Body::empty())).await;
    assert_too_large(&answer, "value bytes");
    let record = store
        .load(&key_of(&cookie))
        .await
        .expect("load")
        .expect("kept");
    assert_eq!(record.attributes["blob"].len(), MIB, "the old value stays");

    // Through update, a compare-and-set on a stored session, too.
    let uri = format!("/update-sized/{}", 10 * MIB);
    let answer = send(&app, post_to(&uri, Some(&cookie), Body::empty())).await;
    assert_too_large(&answer, "value bytes");
    let record = store
        .load(&key_of(&cookie))
        .await
        .expect("load")
        .expect("kept");
    assert_eq!(record.attributes["blob"].len(), MIB);
}

#[tokio::test]
async fn a_ten_megabyte_request_body_is_413_from_either_limit() {
    let (store, app) = setup();
    let body = vec![b'x'; 10 * MIB];
    // axum's own body limit answers first where the app keeps it.
    let answer = send(
        &app,
        post_to("/body-default-limit", None, Bytes::from(body.clone())),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.cookie.is_none());
    // Where the app lifts it, the session's limit still holds.
    let answer = send(&app, post_to("/body", None, Bytes::from(body))).await;
    assert_too_large(&answer, "value bytes");
    assert!(answer.cookie.is_none());
    assert!(store.is_empty());
}

#[tokio::test]
async fn a_hundred_kilobyte_name_is_refused() {
    let (store, app) = setup();
    let answer = send(&app, post_to("/named/102400", None, Body::empty())).await;
    assert_too_large(&answer, "name bytes");
    assert!(answer.cookie.is_none());
    assert!(store.is_empty());
    let answer = send(&app, post_to("/named/256", None, Body::empty())).await;
    assert_eq!(answer.status, StatusCode::OK, "256 bytes is the limit");
    let answer = send(&app, post_to("/named/257", None, Body::empty())).await;
    assert_too_large(&answer, "name bytes");

    // Reading or removing by a huge name is harmless.
    let request = Request::get("/read-named/102400")
        .body(Body::empty())
        .expect("request");
    let answer = send(&app, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "None false");
}

#[tokio::test]
async fn configured_limits_are_the_ones_enforced() {
    let store = Arc::new(MemoryStore::new(100));
    let config = common::config()
        .with_max_attributes(10)
        .with_max_name_bytes(8)
        .with_max_attribute_bytes(100);
    let app = app(store, config);
    let answer = send(&app, post_to("/many/0/10", None, Body::empty())).await;
    assert_eq!(answer.status, StatusCode::OK);
    let cookie = answer.cookie.expect("a session");
    let answer = send(&app, post_to("/many/10/1", Some(&cookie), Body::empty())).await;
    assert_too_large(&answer, "attribute count");
    let answer = send(&app, post_to("/named/9", None, Body::empty())).await;
    assert_too_large(&answer, "name bytes");
    let answer = send(&app, post_to("/sized/99", None, Body::empty())).await;
    assert_too_large(&answer, "value bytes");
}

/// Sends raw bytes to `addr` and returns the status line's code, or `None`
/// if the server closed the connection without an answer.
async fn raw_status(addr: std::net::SocketAddr, head: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(head).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes in time");
    if read.is_err() && answer.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn request_head(cookie_headers: &[String]) -> Vec<u8> {
    let mut head = String::from("GET /count HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for cookie in cookie_headers {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test]
async fn huge_cookie_headers_over_a_real_socket() {
    let (_, app) = setup();
    let addr = common::serve(app).await;
    let valid = SessionId::generate().expect("rng").expose_cookie_value();

    // 64 KB in one Cookie header is within hyper's buffer: the request is
    // served, the junk is no session.
    let big = format!("SESSION={}; SESSION={valid}", "A".repeat(64 * 1024));
    assert_eq!(raw_status(addr, &request_head(&[big])).await, Some(200));

    // 10,000 cookies in one header: served, parsed in bounded time.
    let many: Vec<String> = (0..10_000).map(|i| format!("c{i}=v")).collect();
    let many = format!("{}; SESSION={valid}", many.join("; "));
    assert!(many.len() > 64 * 1024);
    let started = std::time::Instant::now();
    assert_eq!(raw_status(addr, &request_head(&[many])).await, Some(200));
    // It takes a few tens of milliseconds: 5 s leaves a loaded machine a
    // hundred times that, and is still short of a parser that rescans the
    // 100 KB header for each of the 10,000 cookies.
    assert!(started.elapsed() < Duration::from_secs(5));

    // 1 MiB of header: hyper refuses it before any layer runs, 431.
    let huge = format!("SESSION={}", "A".repeat(MIB));
    let status = raw_status(addr, &request_head(&[huge])).await;
    assert_eq!(status, Some(431), "expected 431, got {status:?}");

    // More header lines than hyper takes: 431 too.
    let lines: Vec<String> = (0..200).map(|i| format!("c{i}=v")).collect();
    let status = raw_status(addr, &request_head(&lines)).await;
    assert_eq!(status, Some(431), "expected 431, got {status:?}");

    // And the server is still fine.
    let ok = format!("SESSION={valid}");
    assert_eq!(raw_status(addr, &request_head(&[ok])).await, Some(200));
}
