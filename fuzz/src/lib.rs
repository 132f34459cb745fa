//! What each fuzz target does with its input, shared with the crate's tests.
//!
//! The fuzz targets in `fuzz_targets/` call these functions, and
//! `integration/tests/security_fuzz_seeds.rs` includes this file and calls the same
//! functions on every checked-in seed under `fuzz/seeds/<target>/`, so the
//! seeds run in every `cargo test` even where libFuzzer cannot be built.
//!
//! Each function panics if the crate breaks a promise on that input; any
//! other outcome (including "the input is refused") is a pass.

use std::cell::RefCell;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{HeaderValue, Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::store::StoreKey;
use tower_httpsession::{MemoryStore, Session, SessionError, SessionId, SessionLayer};

/// The session cookie's name, the default one.
const COOKIE_NAME: &str = "SESSION";
/// Length of a well-formed cookie value.
const COOKIE_VALUE_LEN: usize = 64;
/// Characters a cookie value and its store key share: the selector's first
/// 15 bytes encode to 20 characters, and the 21st carries 6 more of its bits.
const SHARED_PREFIX: usize = 21;

/// `SessionId::from_cookie_value` and `StoreKey::parse` on arbitrary bytes.
///
/// Promises checked: no panic; a value that parses is exactly one canonical
/// 64-character base64url value that re-encodes to itself; its store key is
/// well formed, shares the selector's characters, and is not a cookie; `Debug`
/// prints none of it.
pub fn cookie_value(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // A value that is not text never reaches the parser: the layer
        // hands it only cookie values that are UTF-8.
        return;
    };
    if let Some(id) = SessionId::from_cookie_value(text) {
        assert_eq!(text.len(), COOKIE_VALUE_LEN);
        assert_eq!(
            id.expose_cookie_value(),
            text,
            "accepted a non-canonical id"
        );
        let key = id.store_key();
        assert_eq!(StoreKey::parse(key.as_str()).as_ref(), Some(&key));
        assert_eq!(key.as_str()[..SHARED_PREFIX], text[..SHARED_PREFIX]);
        assert!(SessionId::from_cookie_value(key.as_str()).is_none());
        assert!(id.matches(&id.verifier_hash()));
        let printed = format!("{id:?} {key:?} {:?}", id.verifier_hash());
        assert!(!printed.contains(text) && !printed.contains(key.as_str()));
    }
    if let Some(key) = StoreKey::parse(text) {
        assert_eq!(key.as_str(), text);
        assert!(SessionId::from_cookie_value(text).is_none());
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let runtime = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        });
        runtime.block_on(future)
    })
}

/// Reads an attribute no cookie can reach, then sets it.
async fn visit(session: Session) -> Result<&'static str, SessionError> {
    let seen: Option<bool> = session.get("seen").await?;
    session.set("seen", &true).await?;
    Ok(if seen.is_some() { "known" } else { "fresh" })
}

/// One request with `data` as its `Cookie` header through a router behind
/// the session layer, then requests with a live session cookie in the same
/// header line as `data`.
///
/// Promises checked: no panic; the answer is 200; the handler never sees a
/// session (nobody can guess a live id); the response sets exactly one new,
/// well-formed session cookie whose value does not occur in the input, so the
/// server never adopts an id the client chose. Whatever bytes the input
/// holds, a live session cookie before it is found, and so is one after it
/// when the input names no `SESSION` of its own.
pub fn cookie_header(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        // Bytes no HTTP parser lets through as a header value.
        return;
    };
    let request = Request::get("/")
        .header(header::COOKIE, value)
        .body(Body::empty())
        .expect("a valid request");
    // A fresh store per input. libFuzzer watches comparisons, so it learns
    // the cookie value the check below compares with the input and writes it
    // into the next input; with a shared store that cookie would be live.
    let layer = SessionLayer::with_config(
        MemoryStore::new(16),
        tower_httpsession::SessionConfig::default().with_insecure_cookie_over_http(),
    )
    .expect("a valid configuration");
    let app = Router::new().route("/", get(visit)).layer(layer);
    block_on(async move {
        let response = app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let cookies: Vec<&str> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().expect("a Set-Cookie header is text"))
            .collect();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let pair = cookies[0].split(';').next().expect("a name=value pair");
        let (name, value) = pair.split_once('=').expect("name=value");
        assert_eq!(name, COOKIE_NAME);
        assert!(SessionId::from_cookie_value(value).is_some(), "{value:?}");
        assert!(
            !data.windows(value.len()).any(|w| w == value.as_bytes()),
            "the server adopted an id from the request"
        );
        // The cookie just set names a live session from here on.
        let live = format!("{name}={value}").into_bytes();
        let body = axum::body::to_bytes(response.into_body(), 64)
            .await
            .expect("a short body");
        assert_eq!(&body[..], b"fresh", "an unknown cookie reached a session");

        let mut lines = vec![[&live[..], b"; ", data].concat()];
        if !data
            .windows(COOKIE_NAME.len())
            .any(|w| w == COOKIE_NAME.as_bytes())
        {
            lines.push([data, b"; ", &live[..]].concat());
        }
        for line in lines {
            let value = HeaderValue::from_bytes(&line).expect("valid bytes around a cookie");
            let request = Request::get("/")
                .header(header::COOKIE, value)
                .body(Body::empty())
                .expect("a valid request");
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            let body = axum::body::to_bytes(response.into_body(), 64)
                .await
                .expect("a short body");
            assert_eq!(&body[..], b"known", "the input hid a live session");
        }
    });
}

/// The bearer token of the ACL [`health_put`] runs behind.
const HEALTH_TOKEN: &str = "fuzz-health-token-0123456789";

/// Counts the entries of a JSON object as written, repeated keys included
/// (a `serde_json::Value` keeps only the last of them).
struct Entries;

impl<'de> serde::de::DeserializeSeed<'de> for Entries {
    type Value = usize;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Entries {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut n = 0;
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {
            n += 1;
        }
        Ok(n)
    }
}

/// What the toggle must answer to an allowed caller: `Some(target)` for one
/// of the three bodies it documents (one key, written once), `None` for
/// anything else.
fn expected_target(body: &[u8]) -> Option<&'static str> {
    use serde::de::DeserializeSeed as _;

    if body.len() > 1024 {
        return None;
    }
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(body) else {
        return None;
    };
    let entries = Entries.deserialize(&mut serde_json::Deserializer::from_slice(body));
    if object.len() != 1 || entries.ok()? != 1 {
        return None;
    }
    match object.get("status")?.as_str()? {
        "UP" => Some("RUNNING"),
        "DOWN" | "OUT_OF_SERVICE" => Some("OUT_OF_SERVICE"),
        _ => None,
    }
}

/// Whether `value` presents [`HEALTH_TOKEN`] as a bearer token: the scheme
/// in any case, the token exactly, surrounding blanks ignored.
fn presents_token(value: &[u8]) -> bool {
    let scheme = b"bearer ";
    value.len() > scheme.len()
        && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        && value[scheme.len()..].trim_ascii() == HEALTH_TOKEN.as_bytes()
}

async fn put(
    app: &Router,
    peer: &str,
    headers: &[(http::HeaderName, HeaderValue)],
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::put("/actuator/health")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a valid request");
    for (name, value) in headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    let peer: std::net::SocketAddr = peer.parse().expect("a socket address");
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("a short body");
    (status, body.to_vec())
}

/// The toggle's `PUT` with `data` as its body, and as the `Authorization`
/// and `X-Forwarded-For` of a caller outside the ACL.
///
/// Promises checked: no panic and never a 5xx; an allowed caller gets 200
/// exactly for the three documented bodies (and the state follows) and 400
/// for anything else; a caller outside the allowed network, whatever it
/// forwards, gets 403 and changes nothing unless it presents the token.
pub fn health_put(data: &[u8]) {
    use tower_httpsession::health::{Acl, Health, TrafficPhase};

    let acl = Acl::builder()
        .with_allowed_network("127.0.0.1/32")
        .with_bearer_token(HEALTH_TOKEN)
        .build()
        .expect("a valid ACL");
    let health = Health::builder(MemoryStore::new(10))
        .with_acl(acl)
        .build()
        .expect("a valid health configuration");
    let state = health.traffic_state();
    let app = health.router();
    block_on(async move {
        // An allowed caller: the body alone decides.
        let (status, answer) = put(&app, "127.0.0.1:4000", &[], data.to_vec()).await;
        match expected_target(data) {
            Some(traffic) => {
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "{:?}",
                    String::from_utf8_lossy(&answer)
                );
                let answer: serde_json::Value =
                    serde_json::from_slice(&answer).expect("a JSON answer");
                assert_eq!(answer["traffic"], traffic);
            }
            None => assert_eq!(status, StatusCode::BAD_REQUEST),
        }
        state.mark_running().expect("back to running");

        // A caller outside the network that puts the input everywhere a
        // credential could hide.
        let mut headers = Vec::new();
        if let Ok(value) = HeaderValue::from_bytes(data) {
            headers.push((header::AUTHORIZATION, value.clone()));
            headers.push((http::HeaderName::from_static("x-forwarded-for"), value));
        }
        let body = br#"{"status": "OUT_OF_SERVICE"}"#.to_vec();
        let (status, _) = put(&app, "203.0.113.9:4000", &headers, body).await;
        if presents_token(data) {
            assert_eq!(status, StatusCode::OK);
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(
                state.phase(),
                TrafficPhase::Running,
                "a refused PUT took effect"
            );
        }
    });
}
