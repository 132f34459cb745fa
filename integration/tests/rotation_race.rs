//! A request that read its session before a login changed the session's id
//! must change nothing after the change, on every store.
//!
//! Each case holds a request open between its load and its write, logs the
//! same browser in meanwhile (which rotates the id), then lets the held
//! request go on. Whatever it was about to do (a blind `set`, an atomic
//! `update`, a `remove`, a further read, `invalidate`), the logged-in session
//! is unchanged afterwards, and the held request is answered `409 Conflict`
//! with its cookie removed, never a `200` that claims the change.
#![allow(clippy::unwrap_used)]

mod common;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres_support;
#[cfg(all(feature = "redis", feature = "testing"))]
mod redis_support;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{StatusCode, header};
use tokio::sync::Notify;
use tower_httpsession::{MemoryStore, Session, SessionError, SessionLayer, SessionStore};

/// What the held request does once it is let go.
const STEPS: [&str; 6] = ["set", "update", "remove", "read", "names", "invalidate"];

/// Where the held request stops: it says when it has read the session, and
/// waits to be let go.
#[derive(Default)]
struct Gate {
    loaded: Notify,
    go: Notify,
}

fn app(store: Arc<dyn SessionStore>, gate: Arc<Gate>) -> Router {
    let layer = SessionLayer::with_config(store, common::config()).unwrap();
    Router::new()
        .route(
            "/start",
            post(|session: Session| async move {
                session.set("cart", &vec!["teapot"]).await?;
                Ok::<_, SessionError>("started")
            }),
        )
        .route(
            "/login",
            post(|session: Session| async move {
                session.change_id().await?;
                session.set("user", "alice").await?;
                Ok::<_, SessionError>("welcome")
            }),
        )
        .route(
            "/held/{step}",
            post(|session: Session, Path(step): Path<String>| async move {
                let _: Option<Vec<String>> = session.get("cart").await?;
                gate.loaded.notify_one();
                gate.go.notified().await;
                match step.as_str() {
                    "set" => session.set("cart", &vec!["evil"]).await?,
                    "update" => {
                        session
                            .update("cart", |cart: Option<Vec<String>>| {
                                let mut cart = cart.unwrap_or_default();
                                cart.push("evil".to_owned());
                                cart
                            })
                            .await?;
                    }
                    "remove" => {
                        session.remove("cart").await?;
                    }
                    "read" => {
                        let user: Option<String> = session.get("user").await?;
                        return Ok(user.unwrap_or_default());
                    }
                    "names" => return Ok(session.attribute_names().await?.join(",")),
                    "invalidate" => session.invalidate().await?,
                    other => panic!("unknown step {other}"),
                }
                Ok::<_, SessionError>(String::new())
            }),
        )
        .route(
            "/state",
            get(|session: Session| async move {
                let cart: Option<Vec<String>> = session.get("cart").await?;
                let user: Option<String> = session.get("user").await?;
                Ok::<_, SessionError>(format!("{cart:?} {user:?}"))
            }),
        )
        .layer(layer)
}

struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    body: String,
}

async fn send(app: &Router, uri: &str, cookie: Option<&str>) -> Answer {
    let method = if uri == "/state" { "GET" } else { "POST" };
    let headers: Vec<_> = cookie.map(|c| (header::COOKIE, c)).into_iter().collect();
    let reply = common::oneshot(app, method, uri, &headers).await;
    Answer {
        status: reply.status,
        set_cookie: reply.set_cookie,
        body: reply.body,
    }
}

fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// Runs every step against `store`.
async fn held_requests_change_nothing_after_a_login(store: Arc<dyn SessionStore>) {
    for step in STEPS {
        let gate = Arc::new(Gate::default());
        let app = app(store.clone(), gate.clone());
        let started = send(&app, "/start", None).await;
        assert_eq!(started.status, StatusCode::OK);
        let before = pair(&started.set_cookie.expect("a new session's cookie"));

        let held = tokio::spawn({
            let app = app.clone();
            let before = before.clone();
            async move { send(&app, &format!("/held/{step}"), Some(&before)).await }
        });
        gate.loaded.notified().await;
        let login = send(&app, "/login", Some(&before)).await;
        assert_eq!(login.status, StatusCode::OK, "{step}: login");
        let after = pair(&login.set_cookie.expect("login sends the new cookie"));
        assert_ne!(after, before);
        gate.go.notify_one();
        let held = held.await.unwrap();

        let state = send(&app, "/state", Some(&after)).await;
        assert_eq!(
            state.body, "Some([\"teapot\"]) Some(\"alice\")",
            "{step}: the pre-login cookie changed the logged-in session"
        );
        if step == "invalidate" {
            // Ending the session is what the old cookie may not do; the
            // browser that asked is told to drop its cookie either way.
            assert!(
                held.set_cookie
                    .as_deref()
                    .is_some_and(|c| c.contains("Max-Age=0"))
            );
            continue;
        }
        assert_eq!(
            held.status,
            StatusCode::CONFLICT,
            "{step}: the held request claimed success: {:?}",
            held.body
        );
        assert!(
            !held.body.contains("alice"),
            "{step}: the old cookie read the logged-in session"
        );
        let removal = held
            .set_cookie
            .expect("the held request removes its cookie");
        assert!(removal.contains("Max-Age=0"), "{step}: {removal}");
        let old = send(&app, "/state", Some(&before)).await;
        assert_eq!(old.body, "None None", "{step}: the old cookie still works");
    }
}

#[tokio::test]
async fn memory() {
    held_requests_change_nothing_after_a_login(Arc::new(MemoryStore::default())).await;
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[tokio::test]
async fn redis() {
    let store = redis_support::clean_store("rotation").await;
    held_requests_change_nothing_after_a_login(Arc::new(store)).await;
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[tokio::test]
async fn redis_cluster() {
    let cluster = tokio::task::spawn_blocking(redis_support::Cluster::shared)
        .await
        .unwrap();
    let store = tower_httpsession::store::redis::RedisStore::builder_for_cluster(cluster.urls())
        .with_key_prefix(redis_support::unique_prefix("rotation"))
        .connect()
        .await
        .unwrap();
    held_requests_change_nothing_after_a_login(Arc::new(store)).await;
}

#[cfg(all(feature = "postgres", feature = "testing"))]
#[tokio::test]
async fn postgres() {
    let store = postgres_support::suite_store().await;
    held_requests_change_nothing_after_a_login(Arc::new(store)).await;
}
