//! An app in the shape of axum-login's own example (a user store with
//! password hashes, a login form, protected routes, permissions, flash
//! messages, logout), with axum-login's traits implemented exactly as there
//! and only the imports pointing here. It answers the same statuses and
//! redirects on every store, and gains what this crate adds: the login binds
//! the session to the user, and a changed password ends every session.
#![cfg(feature = "axum-login")]
#![allow(clippy::unwrap_used)]

mod common;
#[cfg(all(feature = "postgres", feature = "testing"))]
mod postgres_support;
#[cfg(all(feature = "redis", feature = "testing"))]
mod redis_support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use axum::extract::Query;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::{Form, Router};
use http::{StatusCode, header};
use serde::Deserialize;
use tower_httpsession::login::{
    AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, AuthzBackend, Messages,
    MessagesManagerLayer, UserId,
};
use tower_httpsession::{MemoryStore, SessionLayer, SessionStore};

#[derive(Clone, Debug)]
struct User {
    id: i64,
    username: String,
    password: String,
}

impl AuthUser for User {
    type Id = i64;

    fn id(&self) -> Self::Id {
        self.id
    }

    fn session_auth_hash(&self) -> &[u8] {
        // As the example does: the password (a hash, there) changes the
        // auth hash, which logs the user out everywhere.
        self.password.as_bytes()
    }
}

#[derive(Clone, Deserialize)]
struct Credentials {
    username: String,
    password: String,
    next: Option<String>,
}

#[derive(Clone, Default)]
struct Backend {
    users: Arc<RwLock<HashMap<i64, User>>>,
    permissions: Arc<RwLock<HashMap<i64, HashSet<String>>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("backend error")]
struct BackendError;

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = BackendError;

    async fn authenticate(&self, creds: Credentials) -> Result<Option<User>, BackendError> {
        let users = self.users.read().unwrap();
        Ok(users
            .values()
            .find(|u| u.username == creds.username && u.password == creds.password)
            .cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, BackendError> {
        Ok(self.users.read().unwrap().get(id).cloned())
    }
}

impl AuthzBackend for Backend {
    type Permission = String;

    async fn get_user_permissions(&self, user: &User) -> Result<HashSet<String>, BackendError> {
        Ok(self
            .permissions
            .read()
            .unwrap()
            .get(&user.id)
            .cloned()
            .unwrap_or_default())
    }
}

#[derive(Deserialize)]
struct NextUrl {
    next: Option<String>,
}

async fn login_page(messages: Messages, Query(NextUrl { next }): Query<NextUrl>) -> String {
    let shown: Vec<String> = messages.into_iter().map(|m| m.message).collect();
    format!(
        "login form next={} {}",
        next.unwrap_or_default(),
        shown.join("|")
    )
}

async fn login(
    mut auth: AuthSession<Backend>,
    messages: Messages,
    Form(creds): Form<Credentials>,
) -> impl IntoResponse {
    let user = match auth.authenticate(creds.clone()).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let _ = messages.error("Invalid credentials");
            return Redirect::to("/login").into_response();
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    if auth.login(&user).await.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let _ = messages.success(format!("Successfully logged in as {}", user.username));
    Redirect::to(creds.next.as_deref().unwrap_or("/")).into_response()
}

async fn logout(mut auth: AuthSession<Backend>) -> impl IntoResponse {
    match auth.logout().await {
        Ok(_) => Redirect::to("/login").into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn protected(auth: AuthSession<Backend>, messages: Messages) -> String {
    let shown: Vec<String> = messages.into_iter().map(|m| m.message).collect();
    format!(
        "Logged in as {} {}",
        auth.user.map(|u| u.username).unwrap_or_default(),
        shown.join("|")
    )
}

fn app(store: Arc<dyn SessionStore>, backend: Backend) -> Router {
    let sessions = SessionLayer::with_config(store, common::config()).unwrap();
    let auth_layer = AuthManagerLayerBuilder::new(backend, sessions).build();
    Router::new()
        .route("/admin", get(|| async { "admin area" }))
        .route_layer(tower_httpsession::permission_required!(
            Backend,
            "admin.read"
        ))
        .route("/", get(protected))
        .route_layer(tower_httpsession::login_required!(
            Backend,
            login_url = "/login"
        ))
        .route("/login", post(login).get(login_page))
        .route("/logout", get(logout))
        .layer(MessagesManagerLayer)
        .layer(auth_layer)
}

fn backend() -> Backend {
    let backend = Backend::default();
    let mut users = backend.users.write().unwrap();
    for (id, name) in [(1, "ferris"), (2, "admin")] {
        users.insert(
            id,
            User {
                id,
                username: name.to_owned(),
                password: "hunter42".to_owned(),
            },
        );
    }
    drop(users);
    backend
        .permissions
        .write()
        .unwrap()
        .insert(2, HashSet::from(["admin.read".to_owned()]));
    backend
}

struct Client {
    app: Router,
    cookie: Option<String>,
}

impl Client {
    async fn send(&mut self, method: &str, uri: &str, form: Option<&str>) -> common::Reply {
        let mut headers = Vec::new();
        let cookie = self.cookie.clone();
        if let Some(cookie) = &cookie {
            headers.push((header::COOKIE, cookie.as_str()));
        }
        if form.is_some() {
            headers.push((header::CONTENT_TYPE, "application/x-www-form-urlencoded"));
        }
        let reply =
            common::oneshot_with_body(&self.app, method, uri, &headers, form.unwrap_or("")).await;
        if let Some(set) = &reply.set_cookie {
            if set.contains("Max-Age=0") {
                self.cookie = None;
            } else {
                self.cookie = Some(common::pair(set));
            }
        }
        reply
    }
}

async fn the_example_app_runs_on(store: Arc<dyn SessionStore>) {
    let backend = backend();
    let layer_store = store.clone();
    let mut client = Client {
        app: app(store, backend.clone()),
        cookie: None,
    };
    let registry = SessionLayer::new(layer_store).registry().unwrap();

    let home = client.send("GET", "/", None).await;
    assert_eq!(home.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(home.location.as_deref(), Some("/login?next=%2F"));

    let wrong = client
        .send("POST", "/login", Some("username=ferris&password=nope"))
        .await;
    assert_eq!(wrong.status, StatusCode::SEE_OTHER);
    let page = client.send("GET", "/login", None).await;
    assert_eq!(page.body, "login form next= Invalid credentials");
    let again = client.send("GET", "/login", None).await;
    assert_eq!(
        again.body, "login form next= ",
        "a flash message is shown once"
    );

    let before = client.cookie.clone();
    let login = client
        .send(
            "POST",
            "/login",
            Some("username=ferris&password=hunter42&next=%2F"),
        )
        .await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.location.as_deref(), Some("/"));
    assert_ne!(client.cookie, before, "the login changed the session id");
    let home = client.send("GET", "/", None).await;
    assert_eq!(
        home.body,
        "Logged in as ferris Successfully logged in as ferris"
    );
    assert_eq!(
        client.send("GET", "/", None).await.body,
        "Logged in as ferris "
    );
    assert_eq!(
        registry.sessions("1").await.unwrap().len(),
        1,
        "bound to the user's id"
    );

    assert_eq!(
        client.send("GET", "/admin", None).await.status,
        StatusCode::FORBIDDEN
    );

    // A changed password (so a changed auth hash) ends the session.
    backend.users.write().unwrap().get_mut(&1).unwrap().password = "new-password".to_owned();
    let stale = client.send("GET", "/", None).await;
    assert_eq!(stale.status, StatusCode::TEMPORARY_REDIRECT);
    assert!(registry.sessions("1").await.unwrap().is_empty());

    let admin = client
        .send("POST", "/login", Some("username=admin&password=hunter42"))
        .await;
    assert_eq!(admin.status, StatusCode::SEE_OTHER);
    assert_eq!(client.send("GET", "/admin", None).await.body, "admin area");
    let out = client.send("GET", "/logout", None).await;
    assert_eq!(out.location.as_deref(), Some("/login"));
    assert_eq!(
        client.send("GET", "/", None).await.status,
        StatusCode::TEMPORARY_REDIRECT
    );
    assert!(registry.sessions("2").await.unwrap().is_empty());
}

#[tokio::test]
async fn memory() {
    the_example_app_runs_on(Arc::new(MemoryStore::default())).await;
}

#[cfg(all(feature = "redis", feature = "testing"))]
#[tokio::test]
async fn redis() {
    let store = redis_support::clean_store("login").await;
    the_example_app_runs_on(Arc::new(store)).await;
}

#[cfg(all(feature = "postgres", feature = "testing"))]
#[tokio::test]
async fn postgres() {
    let store = postgres_support::suite_store().await;
    the_example_app_runs_on(Arc::new(store)).await;
}

/// The same backend under axum-login itself, unmodified, on tower-sessions'
/// layer over this crate's stores (`ForTowerSessions`): for an app that
/// cannot change its code yet.
#[cfg(feature = "tower-sessions")]
mod on_the_bridge {
    use super::*;
    use tower_httpsession::store::tower_sessions::ForTowerSessions;

    async fn login(
        mut auth: axum_login::AuthSession<Backend>,
        Form(creds): Form<Credentials>,
    ) -> impl IntoResponse {
        match auth.authenticate(creds).await {
            Ok(Some(user)) => match auth.login(&user).await {
                Ok(()) => Redirect::to("/").into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            },
            Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }

    async fn protected(auth: axum_login::AuthSession<Backend>) -> String {
        format!(
            "Logged in as {}",
            auth.user.map(|u| u.username).unwrap_or_default()
        )
    }

    async fn logout(mut auth: axum_login::AuthSession<Backend>) -> impl IntoResponse {
        let _ = auth.logout().await;
        Redirect::to("/login")
    }

    pub(super) async fn axum_login_runs_unmodified_on(store: Arc<dyn SessionStore>) {
        let sessions = tower_sessions::SessionManagerLayer::new(ForTowerSessions::new(store))
            .with_secure(false);
        let auth_layer = axum_login::AuthManagerLayerBuilder::new(backend(), sessions).build();
        let app = Router::new()
            .route("/", get(protected))
            .route_layer(axum_login::login_required!(Backend, login_url = "/login"))
            .route("/login", post(login))
            .route("/logout", get(logout))
            .layer(auth_layer);
        let mut client = Client { app, cookie: None };
        let home = client.send("GET", "/", None).await;
        assert_eq!(home.status, StatusCode::TEMPORARY_REDIRECT);
        let login = client
            .send("POST", "/login", Some("username=ferris&password=hunter42"))
            .await;
        assert_eq!(login.status, StatusCode::SEE_OTHER);
        assert_eq!(
            client.send("GET", "/", None).await.body,
            "Logged in as ferris"
        );
        client.send("GET", "/logout", None).await;
        assert_eq!(
            client.send("GET", "/", None).await.status,
            StatusCode::TEMPORARY_REDIRECT
        );
    }

    #[tokio::test]
    async fn memory() {
        axum_login_runs_unmodified_on(Arc::new(MemoryStore::default())).await;
    }

    #[cfg(all(feature = "redis", feature = "testing"))]
    #[tokio::test]
    async fn redis() {
        let store = redis_support::clean_store("login-bridge").await;
        axum_login_runs_unmodified_on(Arc::new(store)).await;
    }

    #[cfg(all(feature = "postgres", feature = "testing"))]
    #[tokio::test]
    async fn postgres() {
        let store = postgres_support::suite_store().await;
        axum_login_runs_unmodified_on(Arc::new(store)).await;
    }
}
