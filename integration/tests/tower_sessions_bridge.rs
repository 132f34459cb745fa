//! This crate's stores behind tower-sessions' own layer: an app written for
//! tower-sessions (as one built on axum-login is) keeps its code and moves
//! its sessions into this crate's memory, Redis or PostgreSQL store.
#![cfg(feature = "tower-sessions")]
#![allow(clippy::unwrap_used)]

mod common;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres_support;
#[cfg(all(feature = "redis", feature = "testing"))]
mod redis_support;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use http::{StatusCode, header};
use tower_httpsession::store::tower_sessions::ForTowerSessions;
use tower_httpsession::{MemoryStore, SessionStore};
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// A tower-sessions app, unchanged but for the store it is given.
fn app(store: Arc<dyn SessionStore>) -> Router {
    let layer = SessionManagerLayer::new(ForTowerSessions::new(store))
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(10)));
    Router::new()
        .route(
            "/count",
            get(|session: Session| async move {
                let n: usize = session.get("n").await.unwrap().unwrap_or_default();
                session.insert("n", n + 1).await.unwrap();
                n.to_string()
            }),
        )
        .route(
            "/login",
            post(|session: Session| async move {
                session.cycle_id().await.unwrap();
                session.insert("user", "alice").await.unwrap();
                "welcome"
            }),
        )
        .route(
            "/user",
            get(|session: Session| async move {
                let user: Option<String> = session.get("user").await.unwrap();
                user.unwrap_or_default()
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move {
                session.flush().await.unwrap();
                "bye"
            }),
        )
        .layer(layer)
}

async fn send(app: &Router, method: &str, uri: &str, cookie: Option<&str>) -> common::Reply {
    let headers: Vec<_> = cookie.map(|c| (header::COOKIE, c)).into_iter().collect();
    common::oneshot(app, method, uri, &headers).await
}

async fn a_tower_sessions_app_runs_on(store: Arc<dyn SessionStore>) {
    let app = app(store.clone());
    let first = send(&app, "GET", "/count", None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "0"));
    let cookie = common::pair(&first.set_cookie.unwrap());
    for expected in ["1", "2"] {
        assert_eq!(
            send(&app, "GET", "/count", Some(&cookie)).await.body,
            expected
        );
    }
    let login = send(&app, "POST", "/login", Some(&cookie)).await;
    let logged_in = common::pair(&login.set_cookie.unwrap());
    assert_ne!(logged_in, cookie, "cycle_id gave a new id");
    assert_eq!(
        send(&app, "GET", "/user", Some(&logged_in)).await.body,
        "alice"
    );
    assert_eq!(
        send(&app, "GET", "/user", Some(&cookie)).await.body,
        "",
        "the old id names nothing"
    );
    assert_eq!(
        send(&app, "GET", "/count", Some(&logged_in)).await.body,
        "3"
    );
    send(&app, "POST", "/logout", Some(&logged_in)).await;
    assert_eq!(send(&app, "GET", "/user", Some(&logged_in)).await.body, "");
}

#[tokio::test]
async fn memory() {
    a_tower_sessions_app_runs_on(Arc::new(MemoryStore::default())).await;
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[tokio::test]
async fn redis() {
    let store = redis_support::clean_store("bridge").await;
    a_tower_sessions_app_runs_on(Arc::new(store)).await;
}

#[cfg(all(feature = "postgres", feature = "testing"))]
#[tokio::test]
async fn postgres() {
    let store = postgres_support::suite_store().await;
    a_tower_sessions_app_runs_on(Arc::new(store)).await;
}
