//! The middleware: cookie in, session handle for the handler, commit out.

pub(crate) mod cookie;

use std::any::Any;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use tower_layer::Layer;
use tower_service::Service;

use self::cookie::{CookieLines, append_cookie, removal_cookie, session_cookie_value};
use crate::config::{ConfigError, SessionConfig};
use crate::error::{SessionError, SessionFailure};
use crate::session::{CookieAction, Session, Shared};
use crate::store::SessionStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds a [`Session`] to every request and commits what the handler changed.
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::{Request, StatusCode, header};
/// use tower::ServiceExt;
/// use tower_httpsession::{MemoryStore, Session, SessionError, SessionLayer};
///
/// async fn visit(session: Session) -> Result<String, SessionError> {
///     let n = session.update("visits", |n: Option<u32>| n.unwrap_or(0) + 1).await?;
///     Ok(n.to_string())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let app = Router::new()
///     .route("/", get(visit))
///     .layer(SessionLayer::new(MemoryStore::default()));
///
/// let response = app.oneshot(Request::new(Body::empty())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
/// assert!(cookie.starts_with("SESSION="));
/// assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"));
/// # }
/// ```
///
/// When the store fails, the handler's response is replaced: 503 with
/// `Retry-After` for an outage, 500 otherwise, with the [`SessionError`](crate::SessionError) in
/// the response extensions as a [`SessionFailure`] and logged with `tracing`.
/// A cookie that is malformed, forged, unknown or expired is no session: the
/// handler gets a new one and the browser is told to drop the old cookie.
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("store", &self.shared.store)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl SessionLayer {
    /// A layer over `store` with the default [`SessionConfig`].
    ///
    /// `store` is any [`SessionStore`]; a store the app already shares as
    /// `Arc<dyn SessionStore>`, such as the one a profile connected, is used
    /// as it is, not wrapped again.
    #[must_use]
    pub fn new(store: impl SessionStore) -> Self {
        Self::from_parts(shared_store(store), SessionConfig::default())
    }

    /// A layer over `store` with `config`, checked. `store` is taken as by
    /// [`new`](Self::new).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] that names the rule the configuration breaks.
    pub fn with_config(
        store: impl SessionStore,
        config: SessionConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let store = shared_store(store);
        if config.principal_index && !store.supports_principals() {
            return Err(ConfigError::PrincipalsUnsupported {
                backend: store.backend(),
            });
        }
        Ok(Self::from_parts(store, config))
    }

    /// A layer over a store already shared as `Arc<dyn SessionStore>`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] that names the rule the configuration breaks.
    #[deprecated(
        note = "use `SessionLayer::with_config`, which takes an `Arc<dyn SessionStore>` as it is"
    )]
    pub fn shared(
        store: Arc<dyn SessionStore>,
        config: SessionConfig,
    ) -> Result<Self, ConfigError> {
        Self::with_config(store, config)
    }

    fn from_parts(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(store, config)),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// A [`SessionRegistry`](crate::SessionRegistry) over this layer's
    /// store: to list and revoke a principal's sessions from outside a
    /// request (an admin endpoint, a password-change job).
    ///
    /// # Errors
    ///
    /// [`SessionError::PrincipalsUnsupported`](crate::SessionError::PrincipalsUnsupported)
    /// if the store keeps no principal index.
    pub fn registry(&self) -> Result<crate::SessionRegistry, crate::SessionError> {
        crate::SessionRegistry::from_shared(self.shared.clone())
    }
}

/// `store` behind one `Arc<dyn SessionStore>`: a store already shared that
/// way is used as it is, where wrapping it again would add a second dynamic
/// call and a boxed future to every store call.
pub(crate) fn shared_store<S: SessionStore>(store: S) -> Arc<dyn SessionStore> {
    let mut slot = Some(store);
    let shared = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<Arc<dyn SessionStore>>>()
        .and_then(Option::take);
    match (shared, slot) {
        (Some(shared), _) => shared,
        (None, Some(store)) => Arc::new(store),
        (None, None) => unreachable!("the slot is emptied only when it held a shared store"),
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let cookie = CookieLines::of(request.headers());
        let session = Session::new(self.shared.clone(), cookie);
        request.extensions_mut().insert(session.clone());
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut response = inner.call(request).await?.map(Body::new);
            let counted = answer_failure(&shared, &mut response);
            if session.is_untouched() {
                // Nothing to commit and no cookie to send: the response
                // goes out as the handler made it.
                return Ok(response);
            }
            // Boxed: the commit's future is large, and a request that never
            // used its session should not carry it.
            Ok(Box::pin(finish(&shared, &session, response, counted)).await)
        })
    }
}

/// Adds `Retry-After` to a 503 a handler made of a session error, and
/// counts a store outage; returns whether it counted one.
fn answer_failure(shared: &Shared, response: &mut Response<Body>) -> bool {
    let failure = response.extensions().get::<SessionFailure>();
    // One 503 response counts once, whether the handler's or the commit's.
    let counted = failure.is_some_and(|failure| store_out(&failure.0));
    if response.status() == http::StatusCode::SERVICE_UNAVAILABLE && failure.is_some() {
        // A handler returned a session error: the configured delay applies.
        let secs = shared.config.retry_after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if counted {
        shared.metrics.unavailable();
    }
    counted
}

/// Commits the session and sets the cookie, or replaces the response with
/// the error's if the commit failed. `counted`: whether the handler's
/// response was already counted as a store outage.
async fn finish(
    shared: &Shared,
    session: &Session,
    mut response: Response<Body>,
    counted: bool,
) -> Response<Body> {
    let config = &shared.config;
    if !config.commit_on_server_error && response.status().is_server_error() {
        session.discard_changes().await;
    }
    match session.commit().await {
        Ok(CookieAction::Keep) => response,
        Ok(CookieAction::Set(id, max_age)) => {
            let cookie = session_cookie_value(config, &id, max_age);
            append_cookie(response.headers_mut(), &cookie);
            response
        }
        Ok(CookieAction::Remove) => {
            append_cookie(response.headers_mut(), &removal_cookie(config));
            response
        }
        Err(error) => {
            let mut failed = error.to_response(config.retry_after);
            if store_out(&error) && !counted {
                shared.metrics.unavailable();
            }
            if matches!(error, SessionError::Ended) {
                // The old cookie names nothing this request may use.
                append_cookie(failed.headers_mut(), &removal_cookie(config));
            }
            failed
                .extensions_mut()
                .insert(SessionFailure(Arc::new(error)));
            failed
        }
    }
}

/// Whether `error` is the store being out: a 503 with `Retry-After`.
fn store_out(error: &SessionError) -> bool {
    matches!(error, SessionError::Store(e) if e.is_unavailable())
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use axum::Router;
    use axum::routing::get;
    use http::StatusCode;
    use tower::ServiceExt;

    use super::*;
    use crate::MemoryStore;
    use crate::session::SessionId;
    use crate::store::{
        Applied, ChangeSet, Created, Operation, Record, StoreError, StoreErrorKind, StoreHealth,
        StoreKey, Swap, VerifierHash,
    };

    /// A store whose every call fails as an unreachable server does.
    #[derive(Debug)]
    struct Unreachable;

    fn down(operation: Operation) -> StoreError {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        StoreError::new("test", operation, StoreErrorKind::Unavailable, cause)
    }

    #[async_trait]
    impl SessionStore for Unreachable {
        fn backend(&self) -> &'static str {
            "unreachable"
        }
        async fn load(&self, _: &StoreKey) -> Result<Option<Record>, StoreError> {
            Err(down(Operation::Load))
        }
        async fn create(
            &self,
            _: &StoreKey,
            _: &Record,
            _: Option<&crate::store::SessionLimit>,
        ) -> Result<Created, StoreError> {
            Err(down(Operation::Create))
        }
        async fn apply(&self, _: &StoreKey, _: &ChangeSet) -> Result<Applied, StoreError> {
            Err(down(Operation::Apply))
        }
        async fn compare_and_set(
            &self,
            _: &StoreKey,
            _: &VerifierHash,
            _: &str,
            _: Option<&str>,
            _: Option<&str>,
        ) -> Result<Swap, StoreError> {
            Err(down(Operation::CompareAndSet))
        }
        async fn delete(&self, _: &StoreKey, _: &VerifierHash) -> Result<(), StoreError> {
            Err(down(Operation::Delete))
        }
        async fn health(&self) -> StoreHealth {
            StoreHealth::measure("unreachable", async { Err(down(Operation::Health)) }).await
        }
    }

    async fn set_then_ignore_error(session: Session) -> &'static str {
        // The handler swallows the error; the commit still fails.
        let _ = session.set("a", &1).await;
        "handler answered"
    }

    fn request(cookie: Option<&str>) -> Request<Body> {
        let mut builder = Request::get("/");
        if let Some(cookie) = cookie {
            builder = builder.header(header::COOKIE, cookie);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn store_outage_on_commit_replaces_the_response_with_503() {
        let app = Router::new()
            .route("/", get(set_then_ignore_error))
            .layer(SessionLayer::new(Unreachable));
        let response = app.oneshot(request(None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        let failure = response.extensions().get::<SessionFailure>().unwrap();
        assert!(matches!(&*failure.0, SessionError::Store(e) if e.is_unavailable()));
    }

    #[tokio::test]
    async fn store_outage_on_load_is_503_through_question_mark() {
        async fn read(session: Session) -> Result<String, SessionError> {
            Ok(session.get::<String>("a").await?.unwrap_or_default())
        }
        let layer = SessionLayer::with_config(
            Unreachable,
            SessionConfig::default().with_retry_after(std::time::Duration::from_secs(7)),
        )
        .unwrap();
        let app = Router::new().route("/", get(read)).layer(layer);
        let cookie = format!(
            "SESSION={}",
            SessionId::generate().unwrap().expose_cookie_value()
        );
        let response = app.oneshot(request(Some(&cookie))).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    #[tokio::test]
    async fn untouched_session_never_reaches_a_down_store() {
        let app = Router::new()
            .route("/", get(|| async { "fine" }))
            .layer(SessionLayer::new(Unreachable));
        let cookie = format!(
            "SESSION={}",
            SessionId::generate().unwrap().expose_cookie_value()
        );
        let response = app.oneshot(request(Some(&cookie))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn an_untouched_session_leaves_the_response_as_the_handler_made_it() {
        let app = Router::new()
            .route("/", get(|| async { "fine" }))
            .layer(SessionLayer::new(Unreachable));
        let well_formed = SessionId::generate().unwrap().expose_cookie_value();
        for cookie in [
            None,
            Some(format!("SESSION={well_formed}")),
            Some("SESSION=malformed; other=1".to_owned()),
        ] {
            let response = app
                .clone()
                .oneshot(request(cookie.as_deref()))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{cookie:?}");
            let headers = response.headers();
            assert!(headers.get(header::SET_COOKIE).is_none(), "{cookie:?}");
            assert!(headers.get(header::CACHE_CONTROL).is_none(), "{cookie:?}");
        }
    }

    #[tokio::test]
    async fn missing_layer_is_a_500_not_a_200() {
        let app = Router::new().route("/", get(|_: Session| async { "unreachable" }));
        let response = app.oneshot(request(None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn oversized_values_are_413() {
        async fn big(session: Session) -> Result<&'static str, SessionError> {
            session.set("blob", &"x".repeat(2048)).await?;
            Ok("stored")
        }
        let layer = SessionLayer::with_config(
            MemoryStore::default(),
            SessionConfig::default().with_max_attribute_bytes(1024),
        )
        .unwrap();
        let app = Router::new().route("/", get(big)).layer(layer);
        let response = app.oneshot(request(None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().get(header::SET_COOKIE).is_none());
    }

    #[test]
    fn a_shared_store_is_not_wrapped_again() {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
        assert!(Arc::ptr_eq(&shared_store(Arc::clone(&store)), &store));
        let wrapped = shared_store(MemoryStore::default());
        assert_eq!(wrapped.backend(), "memory");
    }

    #[test]
    fn bad_config_is_refused_when_the_layer_is_built() {
        let config = SessionConfig::default().with_cookie_name("bad name");
        assert!(SessionLayer::with_config(MemoryStore::default(), config).is_err());
    }
}
