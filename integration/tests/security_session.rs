//! Attacks on the session itself: guessing, fixation, forgery, replay after
//! logout, a stolen store dump, ids in the wrong places. Each test is named in
//! SECURITY.md next to the requirement it proves.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Method, Request, StatusCode, header};
use tower::ServiceExt as _;
use tower_httpsession::config::SameSite;
use tower_httpsession::store::Record;
use tower_httpsession::{
    ConfigError, MemoryStore, SessionConfig, SessionId, SessionLayer, SessionStore,
};

/// What a test needs to see of one response.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    set_cookies: Vec<String>,
    body: String,
}

impl Answer {
    /// The `name=value` pair of the one `Set-Cookie`, if the response sent one.
    fn cookie(&self) -> Option<String> {
        assert!(self.set_cookies.len() <= 1, "{:?}", self.set_cookies);
        self.set_cookies
            .first()
            .map(|c| c.split(';').next().expect("a pair").to_owned())
    }

    fn removes_cookie(&self) -> bool {
        self.set_cookies.len() == 1 && self.set_cookies[0].contains("Max-Age=0")
    }
}

async fn send(app: &Router, method: Method, uri: &str, cookie: Option<&str>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let set_cookies = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        set_cookies,
        body: String::from_utf8(body.to_vec()).expect("utf-8 body"),
    }
}

fn app_over(store: Arc<MemoryStore>, config: SessionConfig) -> Router {
    common::app(SessionLayer::with_config(store, config).expect("valid config"))
}

/// A store and the test routes over it, with the test configuration.
fn setup() -> (Arc<MemoryStore>, Router) {
    let store = Arc::new(MemoryStore::new(10_000));
    (store.clone(), app_over(store, common::config()))
}

/// Starts a session holding `user=<user>` and returns its cookie pair.
async fn logged_in(app: &Router, user: &str) -> String {
    let answer = send(app, Method::POST, &format!("/login/{user}"), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.cookie().expect("a new session sends its cookie")
}

fn value_of(pair: &str) -> &str {
    pair.split_once('=').expect("name=value").1
}

fn id_of(pair: &str) -> SessionId {
    SessionId::from_cookie_value(value_of(pair)).expect("a well-formed id")
}

#[test]
fn ids_are_unique_and_uniformly_random() {
    const N: usize = 20_000;
    let mut values = HashSet::with_capacity(N);
    let mut keys = HashSet::with_capacity(N);
    let mut ones = [0u32; 48 * 8];
    for _ in 0..N {
        let id = SessionId::generate().expect("the OS CSPRNG works");
        let value = id.expose_cookie_value();
        let bytes = URL_SAFE_NO_PAD.decode(&value).expect("base64url");
        assert_eq!(bytes.len(), 48, "128-bit selector + 256-bit verifier");
        for (i, one) in ones.iter_mut().enumerate() {
            *one += u32::from((bytes[i / 8] >> (i % 8)) & 1);
        }
        keys.insert(id.store_key());
        assert!(values.insert(value), "a session id repeated");
    }
    assert_eq!(keys.len(), N, "a selector repeated");
    // Each of the 384 bits is set about half the time: 20,000 draws put one
    // standard deviation at 0.35%, so 45%..55% is over 14 of them.
    for (bit, &count) in ones.iter().enumerate() {
        let share = f64::from(count) / N as f64;
        assert!((0.45..0.55).contains(&share), "bit {bit} set {share:.3}");
    }
}

#[tokio::test]
async fn session_cookie_attributes_are_secure_by_default() {
    let store = Arc::new(MemoryStore::new(100));
    let app = app_over(store, SessionConfig::default());
    let answer = send(&app, Method::POST, "/set/a/1", None).await;
    assert_eq!(answer.set_cookies.len(), 1);
    let cookie = &answer.set_cookies[0];
    let parts: Vec<&str> = cookie.split(';').map(str::trim).collect();
    let (name, value) = parts[0].split_once('=').expect("pair");
    assert_eq!(name, "SESSION");
    assert!(SessionId::from_cookie_value(value).is_some());
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(parts.contains(&attribute), "{attribute} missing: {cookie}");
    }
    for absent in ["Domain", "Expires", "Max-Age"] {
        assert!(
            !parts.iter().any(|p| p.starts_with(absent)),
            "{absent} set: {cookie}"
        );
    }
    assert!(
        parts[0].len() <= 4096,
        "name and value fit a browser's limit"
    );
}

#[tokio::test]
async fn host_prefixed_cookie_meets_its_rules() {
    let store = Arc::new(MemoryStore::new(100));
    let config = SessionConfig::default()
        .with_cookie_name("__Host-SESSION")
        .with_same_site(SameSite::Strict);
    let app = app_over(store.clone(), config);
    let answer = send(&app, Method::POST, "/set/a/1", None).await;
    let cookie = &answer.set_cookies[0];
    assert!(cookie.starts_with("__Host-SESSION="), "{cookie}");
    for part in ["Secure", "Path=/", "SameSite=Strict", "HttpOnly"] {
        assert!(cookie.contains(part), "{part} missing: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    let pair = answer.cookie().expect("a cookie");
    let answer = send(&app, Method::GET, "/get/a", Some(&pair)).await;
    assert_eq!(answer.body, "\"1\"");

    let broken = |config: SessionConfig| SessionLayer::with_config(MemoryStore::new(1), config);
    let host = || SessionConfig::default().with_cookie_name("__Host-SESSION");
    for (config, rule) in [
        (host().with_path("/app"), ConfigError::HostPrefix),
        (host().with_domain("example.com"), ConfigError::HostPrefix),
        (
            host().with_insecure_cookie_over_http(),
            ConfigError::HostPrefix,
        ),
        (
            SessionConfig::default()
                .with_cookie_name("__Secure-SESSION")
                .with_insecure_cookie_over_http(),
            ConfigError::SecurePrefix,
        ),
        (
            SessionConfig::default()
                .with_same_site(SameSite::None)
                .with_insecure_cookie_over_http(),
            ConfigError::SameSiteNoneWithoutSecure,
        ),
    ] {
        assert_eq!(broken(config).err(), Some(rule));
    }
}

#[tokio::test]
async fn only_the_session_cookie_carries_the_id() {
    let (_, app) = setup();
    let pair = logged_in(&app, "alice").await;
    let value = value_of(&pair).to_owned();

    // The id in the URL, under another name, in another header: no session.
    let answer = send(
        &app,
        Method::GET,
        &format!("/get/user?SESSION={value}"),
        None,
    )
    .await;
    assert_eq!(answer.body, "");
    for elsewhere in [
        format!("session={value}"),
        format!("SESSIONX={value}"),
        format!("XSESSION={value}"),
        format!("SESSION=\"{value}\" x"),
    ] {
        let answer = send(&app, Method::GET, "/get/user", Some(&elsewhere)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "", "{elsewhere} reached the session");
    }
    let request = Request::get("/get/user")
        .header(header::AUTHORIZATION, format!("Bearer {value}"))
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .expect("body");
    assert!(body.is_empty());

    // The id goes out in Set-Cookie and nowhere else.
    let answer = send(&app, Method::POST, "/login/bob", Some(&pair)).await;
    let new = answer.cookie().expect("a rotated id");
    let new_value = value_of(&new);
    assert!(!answer.body.contains(new_value));
    for (name, header) in &answer.headers {
        if name != header::SET_COOKIE {
            assert!(!header.to_str().unwrap_or("").contains(new_value), "{name}");
        }
    }
}

#[tokio::test]
async fn server_never_adopts_a_client_chosen_id() {
    let (store, app) = setup();
    let chosen = SessionId::generate().expect("rng");
    let planted = format!("SESSION={}", chosen.expose_cookie_value());
    let answer = send(&app, Method::POST, "/login/alice", Some(&planted)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let issued = answer.cookie().expect("a fresh id");
    assert_ne!(issued, planted);
    assert_ne!(id_of(&issued).store_key(), chosen.store_key());
    assert!(
        store
            .load(&chosen.store_key())
            .await
            .expect("load")
            .is_none()
    );
}

#[tokio::test]
async fn login_rotates_the_id_and_the_pre_login_cookie_is_dead() {
    let (store, app) = setup();
    // The attacker gets a session of their own and plants its cookie.
    let planted = send(&app, Method::POST, "/set/cart/teapot", None)
        .await
        .cookie()
        .expect("a cookie");
    // The victim logs in with it.
    let answer = send(&app, Method::POST, "/login/victim", Some(&planted)).await;
    let victim = answer.cookie().expect("login sends a new id");
    assert_ne!(victim, planted);
    assert_eq!(
        send(&app, Method::GET, "/get/user", Some(&victim))
            .await
            .body,
        "\"victim\""
    );
    assert_eq!(
        send(&app, Method::GET, "/get/cart", Some(&victim))
            .await
            .body,
        "\"teapot\"",
        "attributes survive the rotation"
    );

    // The planted cookie reads nothing, writes nowhere, ends nothing.
    assert_eq!(
        send(&app, Method::GET, "/get/user", Some(&planted))
            .await
            .body,
        ""
    );
    let answer = send(&app, Method::POST, "/set/user/attacker", Some(&planted)).await;
    assert_ne!(answer.cookie().as_deref(), Some(planted.as_str()));
    send(&app, Method::POST, "/invalidate", Some(&planted)).await;
    assert_eq!(
        send(&app, Method::GET, "/get/user", Some(&victim))
            .await
            .body,
        "\"victim\""
    );
    let record = store
        .load(&id_of(&victim).store_key())
        .await
        .expect("load")
        .expect("the victim's session lives");
    assert!(!id_of(&planted).matches(&record.verifier));
}

#[tokio::test]
async fn forged_verifier_for_a_known_selector_gets_nothing() {
    let (store, app) = setup();
    let real = logged_in(&app, "alice").await;
    let key = id_of(&real).store_key();
    // Keep the selector, forge every verifier bit a guess could.
    let value = value_of(&real);
    let forged_value = format!("{}{}", &value[..22], "A".repeat(42));
    let forged = format!("SESSION={forged_value}");
    assert!(SessionId::from_cookie_value(&forged_value).is_some());
    assert_eq!(id_of(&forged).store_key(), key);

    let answer = send(&app, Method::GET, "/get/user", Some(&forged)).await;
    assert_eq!(answer.body, "");
    assert!(answer.removes_cookie());
    send(&app, Method::POST, "/invalidate", Some(&forged)).await;
    send(&app, Method::POST, "/remove/user", Some(&forged)).await;
    // A write that does not read first is checked by the store: the forged
    // verifier is not the stored one, so nothing is written and the answer
    // says so.
    let answer = send(&app, Method::POST, "/set/user/mallory", Some(&forged)).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert!(answer.removes_cookie());
    assert_eq!(
        send(&app, Method::GET, "/get/user", Some(&real)).await.body,
        "\"alice\""
    );
    assert!(store.load(&key).await.expect("load").is_some());
}

/// Every text a leaked record could show: its fields, its `Debug`, the hash in
/// the encodings a dump might use.
fn dump(record: &Record) -> String {
    let hash = record.verifier.as_bytes();
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = format!(
        "{record:?} {hex} {} {} {} {} {:?}",
        URL_SAFE_NO_PAD.encode(hash),
        base64::engine::general_purpose::STANDARD.encode(hash),
        record.created,
        record.expires_at,
        record.max_inactive,
    );
    for (name, value) in &record.attributes {
        text.push_str(&format!(" {name}={value}"));
    }
    text
}

#[tokio::test]
async fn store_record_holds_no_usable_cookie() {
    let (store, app) = setup();
    let pair = logged_in(&app, "alice").await;
    let id = id_of(&pair);
    let value = value_of(&pair).to_owned();
    let token = URL_SAFE_NO_PAD.decode(&value).expect("base64url");
    let (selector, verifier) = token.split_at(16);
    let record = store
        .load(&id.store_key())
        .await
        .expect("load")
        .expect("stored");

    let text = dump(&record);
    assert!(!text.contains(&value), "the cookie value is in the record");
    for secret in [
        URL_SAFE_NO_PAD.encode(verifier),
        base64::engine::general_purpose::STANDARD.encode(verifier),
        verifier.iter().map(|b| format!("{b:02x}")).collect(),
    ] {
        assert!(!text.contains(&secret), "the verifier is in the record");
    }
    assert_ne!(&record.verifier.as_bytes()[..], verifier);
    assert!(
        !record
            .verifier
            .as_bytes()
            .windows(8)
            .any(|w| verifier.windows(8).any(|v| v == w)),
        "the stored hash shares bytes with the verifier"
    );

    // What a dump does hold does not open the session: the key alone, or the
    // key with the stored hash in the verifier's place.
    let mut with_hash = selector.to_vec();
    with_hash.extend_from_slice(record.verifier.as_bytes());
    for attempt in [
        format!("SESSION={}", id.store_key().as_str()),
        format!("SESSION={}", URL_SAFE_NO_PAD.encode(&with_hash)),
    ] {
        let answer = send(&app, Method::GET, "/get/user", Some(&attempt)).await;
        assert_eq!(answer.body, "", "{attempt} opened the session");
    }
    assert_eq!(
        send(&app, Method::GET, "/get/user", Some(&pair)).await.body,
        "\"alice\""
    );
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let (store, app) = setup();
    let pair = logged_in(&app, "alice").await;
    let key = id_of(&pair).store_key();

    let answer = send(&app, Method::POST, "/invalidate", Some(&pair)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.removes_cookie(), "{:?}", answer.set_cookies);
    assert!(answer.set_cookies[0].contains("Path=/"));
    assert!(
        store.load(&key).await.expect("load").is_none(),
        "the store still holds the session"
    );

    // Replaying the old cookie: no attributes, and a write starts a new
    // session under a new id.
    let answer = send(&app, Method::GET, "/names", Some(&pair)).await;
    assert_eq!(answer.body, "");
    assert!(answer.removes_cookie());
    let answer = send(&app, Method::POST, "/set/a/1", Some(&pair)).await;
    let fresh = answer.cookie().expect("a new session");
    assert_ne!(fresh, pair);
    assert_ne!(id_of(&fresh).store_key(), key);
    assert!(store.load(&key).await.expect("load").is_none());
}

#[tokio::test]
async fn idle_timeout_ends_the_session_on_the_server() {
    let store = Arc::new(MemoryStore::new(100));
    let config = common::config().with_max_inactive_interval(Duration::from_secs(60));
    let app = app_over(store.clone(), config);
    let pair = logged_in(&app, "alice").await;
    let key = id_of(&pair).store_key();
    common::rewind(&*store, &pair, Duration::from_secs(61)).await;

    let answer = send(&app, Method::GET, "/get/user", Some(&pair)).await;
    assert_eq!(answer.body, "");
    assert!(answer.removes_cookie());
    assert!(store.load(&key).await.expect("load").is_none());
    let answer = send(&app, Method::POST, "/set/user/mallory", Some(&pair)).await;
    assert_ne!(answer.cookie().map(|c| id_of(&c).store_key()), Some(key));
}

#[tokio::test]
async fn absolute_timeout_holds_however_active_the_session() {
    let store = Arc::new(MemoryStore::new(100));
    let config = common::config()
        .with_max_inactive_interval(Duration::from_secs(600))
        .with_touch_interval(Duration::from_secs(10))
        .with_absolute_timeout(Duration::from_secs(60));
    let app = app_over(store.clone(), config);
    let pair = logged_in(&app, "alice").await;
    let key = id_of(&pair).store_key();
    // Changing the id or the idle timeout does not restart the clock.
    let rotated = send(&app, Method::POST, "/login/alice", Some(&pair))
        .await
        .cookie()
        .expect("rotated");
    let record = store.load(&key).await.expect("load").expect("stored");
    assert!(record.expires_at <= record.created + Duration::from_secs(60));
    // A request every 18 s, each due to touch the session: the first three
    // find it, the fourth comes past the absolute timeout.
    for request in 1..=4 {
        common::rewind(&*store, &rotated, Duration::from_secs(18)).await;
        let answer = send(&app, Method::POST, "/incr/n", Some(&rotated)).await;
        assert_eq!(answer.status, StatusCode::OK);
        if request < 4 {
            assert_eq!(answer.body, request.to_string(), "request {request}");
        }
    }
    let answer = send(&app, Method::GET, "/get/user", Some(&rotated)).await;
    assert_eq!(answer.body, "", "activity extended the absolute timeout");
    assert!(store.load(&key).await.expect("load").is_none());
}

#[tokio::test]
async fn a_store_failure_answers_without_the_id() {
    /// A memory store whose writes fail as an unreachable server does.
    #[derive(Debug)]
    struct ReadOnly(MemoryStore);

    fn down(operation: tower_httpsession::store::Operation) -> tower_httpsession::StoreError {
        tower_httpsession::StoreError::without_source(
            "read-only",
            operation,
            tower_httpsession::store::StoreErrorKind::Unavailable,
        )
    }

    #[async_trait::async_trait]
    impl SessionStore for ReadOnly {
        fn backend(&self) -> &'static str {
            "read-only"
        }
        async fn load(
            &self,
            key: &tower_httpsession::store::StoreKey,
        ) -> Result<Option<Record>, tower_httpsession::StoreError> {
            self.0.load(key).await
        }
        async fn create(
            &self,
            key: &tower_httpsession::store::StoreKey,
            record: &Record,
            limit: Option<&tower_httpsession::store::SessionLimit>,
        ) -> Result<tower_httpsession::store::Created, tower_httpsession::StoreError> {
            if record.attributes.contains_key("user") {
                return self.0.create(key, record, limit).await;
            }
            Err(down(tower_httpsession::store::Operation::Create))
        }
        async fn apply(
            &self,
            _: &tower_httpsession::store::StoreKey,
            _: &tower_httpsession::store::ChangeSet,
        ) -> Result<tower_httpsession::store::Applied, tower_httpsession::StoreError> {
            Err(down(tower_httpsession::store::Operation::Apply))
        }
        async fn compare_and_set(
            &self,
            _: &tower_httpsession::store::StoreKey,
            _: &tower_httpsession::store::VerifierHash,
            _: &str,
            _: Option<&str>,
            _: Option<&str>,
        ) -> Result<tower_httpsession::store::Swap, tower_httpsession::StoreError> {
            Err(down(tower_httpsession::store::Operation::CompareAndSet))
        }
        async fn delete(
            &self,
            _: &tower_httpsession::store::StoreKey,
            _: &tower_httpsession::store::VerifierHash,
        ) -> Result<(), tower_httpsession::StoreError> {
            Err(down(tower_httpsession::store::Operation::Delete))
        }
        async fn health(&self) -> tower_httpsession::store::StoreHealth {
            self.0.health().await
        }
    }

    let layer = SessionLayer::with_config(ReadOnly(MemoryStore::new(100)), common::config())
        .expect("config");
    let app = common::app(layer);
    let pair = logged_in(&app, "alice").await;
    let value = value_of(&pair).to_owned();
    for (method, uri) in [
        (Method::POST, "/set/a/1"),
        (Method::POST, "/invalidate"),
        (Method::POST, "/login/bob"),
        (Method::POST, "/incr/n"),
    ] {
        let answer = send(&app, method, uri, Some(&pair)).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(answer.headers.contains_key(header::RETRY_AFTER), "{uri}");
        assert!(
            answer.set_cookies.is_empty(),
            "{uri}: {:?}",
            answer.set_cookies
        );
        assert!(!answer.body.contains(&value), "{uri}");
    }
    // Nothing was lost or half-applied: the session is as it was.
    assert_eq!(
        send(&app, Method::GET, "/get/user", Some(&pair)).await.body,
        "\"alice\""
    );
}

/// A response that sets the session cookie must not be kept by a shared
/// cache, which would hand the cookie to the next visitor.
#[tokio::test]
async fn a_response_that_sets_the_cookie_is_not_cacheable() {
    let (_, app) = setup();
    for (uri, cookie) in [("/login/alice", None), ("/set/a/1", None)] {
        let answer = send(&app, Method::POST, uri, cookie).await;
        assert!(answer.cookie().is_some());
        let cache = answer
            .headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            cache.contains("no-store") || cache.contains("private"),
            "{uri}: Set-Cookie with Cache-Control {cache:?}"
        );
    }
}
