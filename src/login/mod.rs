//! Logging users in with axum-login's traits over this crate's sessions
//! (feature `axum-login`).
//!
//! An app written for axum-login keeps its user type and its backend (the
//! [`AuthUser`], [`AuthnBackend`] and [`AuthzBackend`] traits are
//! axum-login's own, re-exported here) and changes its imports: the
//! [`AuthSession`] extractor, [`AuthManagerLayerBuilder`], the
//! [`login_required!`](crate::login_required) and
//! [`permission_required!`](crate::permission_required) guards and the flash
//! [`Messages`] come from here. What it gains:
//!
//! - [`AuthSession::login`] changes the session id and binds the session to
//!   the user (its [`AuthUser::id`] as the principal) in one write, so the
//!   user's sessions can be listed, revoked and limited
//!   ([`SessionRegistry`](crate::SessionRegistry),
//!   [`SessionConfig::with_session_limit`](crate::SessionConfig::with_session_limit)).
//! - Every request checks the user's [`AuthUser::session_auth_hash`] against
//!   the one stored at login, in constant time: changing a password (and so
//!   the hash) logs the user out everywhere.
//! - The session writes only what changed, atomically, on every store.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_httpsession::login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, UserId};
//! use tower_httpsession::{MemoryStore, SessionLayer};
//!
//! #[derive(Debug, Clone)]
//! struct User { id: i64, pw_hash: Vec<u8> }
//!
//! impl AuthUser for User {
//!     type Id = i64;
//!     fn id(&self) -> i64 { self.id }
//!     fn session_auth_hash(&self) -> &[u8] { &self.pw_hash }
//! }
//!
//! #[derive(Clone, Default)]
//! struct Backend;
//!
//! impl AuthnBackend for Backend {
//!     type User = User;
//!     type Credentials = (i64, String);
//!     type Error = std::convert::Infallible;
//!     async fn authenticate(&self, (id, password): Self::Credentials) -> Result<Option<User>, Self::Error> {
//!         Ok((password == "hunter2").then(|| User { id, pw_hash: b"v1".to_vec() }))
//!     }
//!     async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Self::Error> {
//!         Ok(Some(User { id: *id, pw_hash: b"v1".to_vec() }))
//!     }
//! }
//!
//! async fn me(auth: AuthSession<Backend>) -> String {
//!     auth.user.map(|u| u.id.to_string()).unwrap_or_default()
//! }
//!
//! let layer = AuthManagerLayerBuilder::new(Backend, SessionLayer::new(MemoryStore::default())).build();
//! let app: Router = Router::new()
//!     .route("/me", get(me))
//!     .route_layer(tower_httpsession::login_required!(Backend, login_url = "/login"))
//!     .layer(layer);
//! # let _ = app;
//! ```

mod messages;

use std::fmt;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Request, StatusCode};
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

pub use axum_login::{AuthUser, AuthnBackend, AuthzBackend, UserId};

pub use self::messages::{Level, Message, Messages, MessagesManagerLayer};
use crate::error::SessionError;
use crate::layer::SessionLayer;
use crate::session::Session;

/// The attribute that holds the logged-in user's id (its JSON).
const USER_ID: &str = "login.user_id";
/// The attribute that holds the user's session auth hash at login.
const AUTH_HASH: &str = "login.auth_hash";

/// What failed in an [`AuthSession`] call.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error<Backend: AuthnBackend> {
    /// The session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The backend failed.
    #[error(transparent)]
    Backend(Backend::Error),
}

impl<Backend: AuthnBackend> fmt::Debug for Error<Backend> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Session(e) => f.debug_tuple("Session").field(e).finish(),
            Self::Backend(e) => f.debug_tuple("Backend").field(e).finish(),
        }
    }
}

impl<Backend: AuthnBackend> IntoResponse for Error<Backend> {
    fn into_response(self) -> Response {
        match self {
            Self::Session(e) => e.into_response(),
            Self::Backend(e) => {
                tracing::error!(error = %e, "authentication backend failed");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// The logged-in user of a request, and the means to log one in or out.
///
/// An extractor, behind [`AuthManagerLayerBuilder`]'s layer. `user` is the
/// user the session was logged in as, loaded through the backend, or `None`
/// (not logged in, or its auth hash changed since: then the session is
/// ended).
#[derive(Clone)]
pub struct AuthSession<Backend: AuthnBackend> {
    /// The logged-in user, if any.
    pub user: Option<Backend::User>,
    /// The backend.
    pub backend: Backend,
    /// The session.
    pub session: Session,
}

impl<Backend: AuthnBackend> fmt::Debug for AuthSession<Backend> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSession")
            .field("logged_in", &self.user.is_some())
            .finish_non_exhaustive()
    }
}

impl<Backend: AuthnBackend> AuthSession<Backend> {
    /// Checks `creds` with the backend: the user, or `None` if they are
    /// wrong.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] if the backend fails.
    pub async fn authenticate(
        &self,
        creds: Backend::Credentials,
    ) -> Result<Option<Backend::User>, Error<Backend>> {
        self.backend
            .authenticate(creds)
            .await
            .map_err(Error::Backend)
    }

    /// Logs `user` in: changes the session id and binds the session to the
    /// user's id in one write, and keeps the user's auth hash to check on
    /// later requests.
    ///
    /// # Errors
    ///
    /// [`Error::Session`] if the id does not make a valid principal name
    /// (1 to 256 bytes) or the session fails.
    pub async fn login(&mut self, user: &Backend::User) -> Result<(), Error<Backend>> {
        self.session.login(&user.id().to_string()).await?;
        self.session.set(USER_ID, &user.id()).await?;
        self.session
            .set(AUTH_HASH, &hex(user.session_auth_hash()))
            .await?;
        self.user = Some(user.clone());
        Ok(())
    }

    /// Logs the user out: the session ends. Answers who was logged in.
    ///
    /// # Errors
    ///
    /// [`Error::Session`] if the session fails.
    pub async fn logout(&mut self) -> Result<Option<Backend::User>, Error<Backend>> {
        self.session.invalidate().await?;
        Ok(self.user.take())
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The backend, as [`AuthManagerLayer`] puts it in the request.
#[derive(Clone)]
struct BackendSlot<Backend>(Backend);

/// The user found for this request, once an extractor looked.
#[derive(Clone)]
struct UserSlot<User>(Option<User>);

impl<S, Backend> FromRequestParts<S> for AuthSession<Backend>
where
    S: Send + Sync,
    Backend: AuthnBackend + 'static,
    Backend::User: 'static,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(BackendSlot(backend)) = parts.extensions.get::<BackendSlot<Backend>>().cloned()
        else {
            tracing::error!(
                "a handler takes an AuthSession but no AuthManagerLayer wraps its route"
            );
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        if let Some(UserSlot(user)) = parts.extensions.get::<UserSlot<Backend::User>>() {
            return Ok(Self {
                user: user.clone(),
                backend,
                session,
            });
        }
        let user = logged_in(&session, &backend)
            .await
            .map_err(IntoResponse::into_response)?;
        parts.extensions.insert(UserSlot(user.clone()));
        Ok(Self {
            user,
            backend,
            session,
        })
    }
}

/// The user the session is logged in as, if its auth hash still matches;
/// a session whose hash no longer matches is ended.
async fn logged_in<Backend: AuthnBackend>(
    session: &Session,
    backend: &Backend,
) -> Result<Option<Backend::User>, Error<Backend>> {
    let Some(id) = session.get::<UserId<Backend>>(USER_ID).await? else {
        return Ok(None);
    };
    let stored: Option<String> = session.get(AUTH_HASH).await?;
    let user = backend.get_user(&id).await.map_err(Error::Backend)?;
    let current = user.as_ref().map(|u| hex(u.session_auth_hash()));
    let matches = match (&stored, &current) {
        (Some(stored), Some(current)) => bool::from(stored.as_bytes().ct_eq(current.as_bytes())),
        _ => false,
    };
    if matches {
        Ok(user)
    } else {
        tracing::debug!("the user's auth hash changed or the user is gone; ending the session");
        session.invalidate().await?;
        Ok(None)
    }
}

/// Builds the layer that puts the backend (and the sessions) under every
/// route: `AuthManagerLayerBuilder::new(backend, session_layer).build()`.
#[derive(Debug, Clone)]
pub struct AuthManagerLayerBuilder<Backend> {
    backend: Backend,
    sessions: SessionLayer,
}

impl<Backend: AuthnBackend> AuthManagerLayerBuilder<Backend> {
    /// The backend, over the sessions of `sessions`.
    pub fn new(backend: Backend, sessions: SessionLayer) -> Self {
        Self { backend, sessions }
    }

    /// The layer.
    pub fn build(self) -> AuthManagerLayer<Backend> {
        AuthManagerLayer {
            backend: self.backend,
            sessions: self.sessions,
        }
    }
}

/// Sessions, and the backend for [`AuthSession`]. Built by
/// [`AuthManagerLayerBuilder`].
#[derive(Debug, Clone)]
pub struct AuthManagerLayer<Backend> {
    backend: Backend,
    sessions: SessionLayer,
}

impl<S, Backend: Clone> Layer<S> for AuthManagerLayer<Backend> {
    type Service = <SessionLayer as Layer<AuthManager<S, Backend>>>::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.sessions.layer(AuthManager {
            inner,
            backend: self.backend.clone(),
        })
    }
}

/// The service that puts the backend in each request.
#[derive(Debug, Clone)]
pub struct AuthManager<S, Backend> {
    inner: S,
    backend: Backend,
}

impl<S, Backend, ReqBody> Service<Request<ReqBody>> for AuthManager<S, Backend>
where
    S: Service<Request<ReqBody>>,
    Backend: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        request
            .extensions_mut()
            .insert(BackendSlot(self.backend.clone()));
        self.inner.call(request)
    }
}

/// The response a guard gives a request it refuses: a redirect to
/// `login_url` with the original path and query in `redirect_field`, or
/// `status` without a login URL. Used by the guard macros.
#[doc(hidden)]
#[must_use]
pub fn refused(
    login_url: Option<(&str, &str)>,
    original: &http::Uri,
    status: StatusCode,
) -> Response {
    let Some((login_url, field)) = login_url else {
        return status.into_response();
    };
    let next = original
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let separator = if login_url.contains('?') { '&' } else { '?' };
    let target = format!(
        "{login_url}{separator}{field}={}",
        form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    axum::response::Redirect::temporary(&target).into_response()
}

#[doc(hidden)]
pub use axum::middleware::{Next, from_fn as __from_fn};

/// A route layer that lets only logged-in users through: others get 401,
/// or a redirect to `login_url` with where they were going in
/// `redirect_field` (default `next`).
///
/// ```ignore
/// Router::new()
///     .route("/", get(home))
///     .route_layer(login_required!(Backend, login_url = "/login"))
/// ```
#[macro_export]
macro_rules! login_required {
    ($backend:ty) => {
        $crate::login_required!(@guard $backend, None, $crate::__http::StatusCode::UNAUTHORIZED, )
    };
    ($backend:ty, login_url = $url:expr) => {
        $crate::login_required!(@guard $backend, Some(($url, "next")), $crate::__http::StatusCode::UNAUTHORIZED, )
    };
    ($backend:ty, login_url = $url:expr, redirect_field = $field:expr) => {
        $crate::login_required!(@guard $backend, Some(($url, $field)), $crate::__http::StatusCode::UNAUTHORIZED, )
    };
    (@guard $backend:ty, $login:expr, $status:expr, $($perm:expr),*) => {
        $crate::login::__from_fn(
            |auth: $crate::login::AuthSession<$backend>,
             request: $crate::__http::Request<::axum::body::Body>,
             next: $crate::login::Next| async move {
                #[allow(unused_mut)]
                let mut allowed = auth.user.is_some();
                $(
                    if let (true, Some(user)) = (allowed, auth.user.as_ref()) {
                        use $crate::login::AuthzBackend as _;
                        allowed = auth.backend.has_perm(user, $perm.into()).await.unwrap_or(false);
                    }
                )*
                if allowed {
                    next.run(request).await
                } else {
                    $crate::login::refused($login, request.uri(), $status)
                }
            },
        )
    };
}

/// A route layer that lets through only logged-in users who hold every
/// permission named (through the backend's [`AuthzBackend`]): others get
/// 403, or with `login_url` a redirect there.
#[macro_export]
macro_rules! permission_required {
    ($backend:ty, login_url = $url:expr, redirect_field = $field:expr, $($perm:expr),+ $(,)?) => {
        $crate::login_required!(@guard $backend, Some(($url, $field)), $crate::__http::StatusCode::FORBIDDEN, $($perm),+)
    };
    ($backend:ty, login_url = $url:expr, $($perm:expr),+ $(,)?) => {
        $crate::login_required!(@guard $backend, Some(($url, "next")), $crate::__http::StatusCode::FORBIDDEN, $($perm),+)
    };
    ($backend:ty, $($perm:expr),+ $(,)?) => {
        $crate::login_required!(@guard $backend, None, $crate::__http::StatusCode::FORBIDDEN, $($perm),+)
    };
}
