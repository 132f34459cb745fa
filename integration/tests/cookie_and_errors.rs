//! Two settings a user coming from tower-sessions looks for: a persistent
//! cookie ("remember me") whose `Max-Age` follows the session's life, and
//! dropping a request's changes when its response is a server error.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{StatusCode, header};
use tower_httpsession::{
    MemoryStore, Session, SessionConfig, SessionError, SessionLayer, SessionStore,
};

fn app(store: Arc<dyn SessionStore>, config: SessionConfig) -> Router {
    let layer = SessionLayer::with_config(store, config).unwrap();
    Router::new()
        .route(
            "/set/{value}",
            post(|session: Session, Path(value): Path<String>| async move {
                session.set("v", &value).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/get",
            get(|session: Session| async move {
                let v: Option<String> = session.get("v").await?;
                Ok::<_, SessionError>(v.unwrap_or_default())
            }),
        )
        .route(
            "/login",
            post(|session: Session| async move {
                session.change_id().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/fail/set/{value}",
            post(|session: Session, Path(value): Path<String>| async move {
                session.set("v", &value).await?;
                Ok::<_, SessionError>((StatusCode::INTERNAL_SERVER_ERROR, "failed"))
            }),
        )
        .route(
            "/fail/update",
            post(|session: Session| async move {
                session
                    .update("n", |n: Option<u32>| n.unwrap_or(0) + 1)
                    .await?;
                Ok::<_, SessionError>((StatusCode::INTERNAL_SERVER_ERROR, "failed"))
            }),
        )
        .route(
            "/n",
            get(|session: Session| async move {
                let n: Option<u32> = session.get("n").await?;
                Ok::<_, SessionError>(n.unwrap_or(0).to_string())
            }),
        )
        .route(
            "/fail/login",
            post(|session: Session| async move {
                session.change_id().await?;
                Ok::<_, SessionError>((StatusCode::INTERNAL_SERVER_ERROR, "failed"))
            }),
        )
        .route(
            "/fail/logout",
            post(|session: Session| async move {
                session.invalidate().await?;
                Ok::<_, SessionError>((StatusCode::BAD_GATEWAY, "failed"))
            }),
        )
        .layer(layer)
}

async fn send(app: &Router, method: &str, uri: &str, cookie: Option<&str>) -> common::Reply {
    let headers: Vec<_> = cookie.map(|c| (header::COOKIE, c)).into_iter().collect();
    common::oneshot(app, method, uri, &headers).await
}

fn max_age(set_cookie: &str) -> Option<u64> {
    set_cookie
        .split(';')
        .find_map(|part| part.trim().strip_prefix("Max-Age="))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn cookies_are_browser_session_cookies_by_default() {
    let app = app(Arc::new(MemoryStore::default()), common::config());
    let set = send(&app, "POST", "/set/a", None).await.set_cookie.unwrap();
    assert_eq!(max_age(&set), None, "{set}");
}

#[tokio::test]
async fn a_persistent_cookie_lives_as_long_as_the_session() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    let config = common::config().with_persistent_cookie();
    let app = app(store.clone(), config);

    let set = send(&app, "POST", "/set/a", None).await.set_cookie.unwrap();
    assert_eq!(max_age(&set), Some(1800), "{set}");
    let cookie = common::pair(&set);

    // Within the touch interval, reads and writes send no cookie.
    let read = send(&app, "GET", "/get", Some(&cookie)).await;
    assert_eq!(read.body, "a");
    assert_eq!(read.set_cookie, None);
    let write = send(&app, "POST", "/set/b", Some(&cookie)).await;
    assert_eq!(write.set_cookie, None);

    // Once the touch is due, the read that writes it sends the cookie
    // again with a fresh Max-Age.
    common::rewind(&*store, &cookie, Duration::from_secs(120)).await;
    let touched = send(&app, "GET", "/get", Some(&cookie)).await;
    let again = touched
        .set_cookie
        .expect("the touch sends the cookie again");
    assert_eq!(common::pair(&again), cookie, "same id");
    assert_eq!(max_age(&again), Some(1800));

    // A login sends the new id, persistent too.
    let login = send(&app, "POST", "/login", Some(&cookie)).await;
    assert_eq!(max_age(&login.set_cookie.unwrap()), Some(1800));
}

#[tokio::test]
async fn a_persistent_cookie_never_outlives_the_absolute_timeout() {
    let config = common::config()
        .with_persistent_cookie()
        .with_absolute_timeout(Duration::from_secs(600));
    let app = app(Arc::new(MemoryStore::default()), config);
    let set = send(&app, "POST", "/set/a", None).await.set_cookie.unwrap();
    let age = max_age(&set).unwrap();
    assert!((599..=600).contains(&age), "{set}");
}

#[tokio::test]
async fn a_server_error_commits_by_default() {
    let app = app(Arc::new(MemoryStore::default()), common::config());
    let cookie = common::pair(&send(&app, "POST", "/set/a", None).await.set_cookie.unwrap());
    let failed = send(&app, "POST", "/fail/set/b", Some(&cookie)).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(send(&app, "GET", "/get", Some(&cookie)).await.body, "b");
}

#[tokio::test]
async fn a_server_error_drops_the_changes_when_configured() {
    let config = common::config().with_changes_dropped_on_server_error();
    let app = app(Arc::new(MemoryStore::default()), config);

    // A new session that only a failed request would create is not stored.
    let failed = send(&app, "POST", "/fail/set/x", None).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.set_cookie, None);

    let cookie = common::pair(&send(&app, "POST", "/set/a", None).await.set_cookie.unwrap());
    let failed = send(&app, "POST", "/fail/set/b", Some(&cookie)).await;
    assert_eq!(failed.set_cookie, None);
    assert_eq!(send(&app, "GET", "/get", Some(&cookie)).await.body, "a");

    // A failed login keeps the old id working and sends no new one.
    let failed = send(&app, "POST", "/fail/login", Some(&cookie)).await;
    assert_eq!(failed.set_cookie, None);
    assert_eq!(send(&app, "GET", "/get", Some(&cookie)).await.body, "a");

    // `update` committed when it returned: the error does not undo it.
    send(&app, "POST", "/fail/update", Some(&cookie)).await;
    assert_eq!(send(&app, "GET", "/n", Some(&cookie)).await.body, "1");

    // A logout is never undone by an error.
    let failed = send(&app, "POST", "/fail/logout", Some(&cookie)).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);
    assert!(failed.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(send(&app, "GET", "/get", Some(&cookie)).await.body, "");
}
