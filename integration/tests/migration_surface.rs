//! What an app written for tower-sessions finds here: the names it calls,
//! `time::Duration` where it passes one, and an extractor whose rejection is
//! `(StatusCode, &'static str)`. Each case is a small app in the shape of
//! tower-sessions' own examples (a counter, a counter extractor, a strongly
//! typed bucket, a signed-cookie counter), written against this crate with
//! the changes MIGRATING.md lists, and checked for the statuses and bodies
//! the original answers.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::routing::get;
use http::request::Parts;
use http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower_httpsession::{ConfigError, MemoryStore, Session, SessionConfig, SessionLayer};

const COUNTER_KEY: &str = "counter";

#[derive(Default, Deserialize, Serialize)]
struct Counter(usize);

/// tower-sessions' `SessionManagerLayer::new(store).with_secure(false)
/// .with_expiry(Expiry::OnInactivity(Duration::seconds(10)))`.
fn layer() -> SessionLayer {
    let config = SessionConfig::default()
        .with_insecure_cookie_over_http()
        .with_max_inactive_interval(time::Duration::seconds(10));
    SessionLayer::with_config(MemoryStore::default(), config).unwrap()
}

/// Requests `/` three times with one cookie jar; the bodies.
async fn three_visits(app: Router) -> Vec<String> {
    let mut cookie: Option<String> = None;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let headers: Vec<_> = cookie
            .as_deref()
            .map(|c| (header::COOKIE, c))
            .into_iter()
            .collect();
        let reply = common::oneshot(&app, "GET", "/", &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        if let Some(set) = reply.set_cookie {
            cookie = Some(common::pair(&set));
        }
        bodies.push(reply.body);
    }
    bodies
}

#[tokio::test]
async fn the_counter() {
    async fn handler(session: Session) -> String {
        let counter: Counter = session.get(COUNTER_KEY).await.unwrap().unwrap_or_default();
        session.insert(COUNTER_KEY, counter.0 + 1).await.unwrap();
        format!("Current count: {}", counter.0)
    }
    let app = Router::new().route("/", get(handler)).layer(layer());
    assert_eq!(
        three_visits(app).await,
        ["Current count: 0", "Current count: 1", "Current count: 2"]
    );
}

/// The signed-cookie counter: this crate's cookies cannot be forged (the
/// store keeps a hash of the cookie's secret half), so the `Key` and
/// `with_signed` lines go, and the rest is the counter.
#[tokio::test]
async fn the_signed_counter_needs_no_key() {
    async fn handler(session: Session) -> String {
        let counter: Counter = session.get(COUNTER_KEY).await.unwrap().unwrap_or_default();
        session.insert(COUNTER_KEY, counter.0 + 1).await.unwrap();
        format!("Current count: {}", counter.0)
    }
    let app = Router::new().route("/", get(handler)).layer(layer());
    let bodies = three_visits(app).await;
    assert_eq!(bodies[2], "Current count: 2");
}

impl<S: Send + Sync> FromRequestParts<S> for Counter {
    // tower-sessions' own rejection type: `?` on the session works.
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        let counter: Counter = session.get(COUNTER_KEY).await?.unwrap_or_default();
        session.insert(COUNTER_KEY, counter.0 + 1).await?;
        Ok(counter)
    }
}

#[tokio::test]
async fn the_counter_extractor() {
    async fn handler(counter: Counter) -> String {
        format!("Current count: {}", counter.0)
    }
    let app = Router::new().route("/", get(handler)).layer(layer());
    assert_eq!(three_visits(app).await[2], "Current count: 2");

    // Without the layer, the rejection is tower-sessions' shape: a status
    // and a short text, not a panic.
    let bare = Router::new().route("/", get(handler));
    let reply = common::oneshot(&bare, "GET", "/", &[]).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "Internal Server Error");
}

#[derive(Clone, Deserialize, Serialize)]
struct GuestData {
    pageviews: usize,
    first_seen: OffsetDateTime,
    last_seen: OffsetDateTime,
}

struct Guest {
    session: Session,
    data: GuestData,
}

impl Guest {
    const KEY: &'static str = "guest.data";

    async fn mark_pageview(&mut self) {
        self.data.pageviews += 1;
        self.session
            .insert(Self::KEY, self.data.clone())
            .await
            .unwrap();
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Guest {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        let now = OffsetDateTime::now_utc();
        let mut data: GuestData = session.get(Self::KEY).await?.unwrap_or(GuestData {
            pageviews: 0,
            first_seen: now,
            last_seen: now,
        });
        data.last_seen = now;
        session.insert(Self::KEY, data.clone()).await?;
        Ok(Self { session, data })
    }
}

#[tokio::test]
async fn the_strongly_typed_bucket() {
    async fn handler(mut guest: Guest) -> String {
        guest.mark_pageview().await;
        format!("pageviews: {}", guest.data.pageviews)
    }
    let app = Router::new().route("/", get(handler)).layer(layer());
    assert_eq!(
        three_visits(app).await,
        ["pageviews: 1", "pageviews: 2", "pageviews: 3"]
    );
}

/// The other tower-sessions names: `get_value`, `remove` as `take` and
/// `remove_value`, `cycle_id`, `clear`, `is_empty`, `flush`.
#[tokio::test]
async fn the_other_names_behave_as_there() {
    async fn handler(session: Session) -> String {
        session.insert("a", 1).await.unwrap();
        session.insert("b", "two").await.unwrap();
        let a = session.get_value("a").await.unwrap();
        let taken: Option<u32> = session.take("a").await.unwrap();
        let gone: Option<u32> = session.take("a").await.unwrap();
        let b = session.remove_value("b").await.unwrap();
        session.insert("c", true).await.unwrap();
        session.cycle_id().await.unwrap();
        let before = session.is_empty().await.unwrap();
        session.clear().await.unwrap();
        let after = session.is_empty().await.unwrap();
        format!("{a:?} {taken:?} {gone:?} {b:?} {before} {after}")
    }
    let app = Router::new().route("/", get(handler)).layer(layer());
    let reply = common::oneshot(&app, "GET", "/", &[]).await;
    assert_eq!(
        reply.body,
        "Some(Number(1)) Some(1) None Some(String(\"two\")) false true"
    );
}

#[test]
fn time_durations_are_accepted_and_negative_ones_refused() {
    let std =
        SessionConfig::default().with_max_inactive_interval(std::time::Duration::from_secs(600));
    let time = SessionConfig::default().with_max_inactive_interval(time::Duration::minutes(10));
    assert_eq!(std, time);
    let negative = SessionConfig::default().with_absolute_timeout(time::Duration::hours(-1));
    let refused = SessionLayer::with_config(MemoryStore::default(), negative).unwrap_err();
    assert_eq!(refused, ConfigError::NegativeDuration("absolute timeout"));
    assert_eq!(refused.to_string(), "absolute timeout must not be negative");
}
