//! Health endpoints a load balancer polls, and a toggle to take an instance
//! out of rotation for a deploy.
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{Router, body::Body, extract::ConnectInfo, routing::get};
//! use http::{Request, StatusCode, header};
//! use tower::ServiceExt;
//! use tower_httpsession::MemoryStore;
//! use tower_httpsession::health::{Acl, Health};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let acl = Acl::builder().allow("127.0.0.1/32").build().unwrap();
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .merge(Health::new(MemoryStore::default()).with_acl(acl).router());
//!
//! let get = |path| Request::get(path).body(Body::empty()).unwrap();
//! let response = app.clone().oneshot(get("/actuator/health/readiness")).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! // an operator on the host takes the instance out of rotation
//! let mut put = Request::put("/actuator/health")
//!     .header(header::CONTENT_TYPE, "application/json")
//!     .body(Body::from(r#"{"status": "OUT_OF_SERVICE"}"#))
//!     .unwrap();
//! // axum::serve(.., app.into_make_service_with_connect_info::<SocketAddr>()) does this
//! put.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
//! let response = app.clone().oneshot(put).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! let response = app.clone().oneshot(get("/actuator/health/readiness")).await.unwrap();
//! assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
//! let response = app.oneshot(get("/actuator/health/liveness")).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! # }
//! ```
//!
//! # Endpoints
//!
//! Paths are the defaults; each is configurable on [`Health`].
//!
//! | Method and path                   | Answers                                                                 |
//! |-----------------------------------|-------------------------------------------------------------------------|
//! | `GET /actuator/health`            | the worst of the traffic state, the store and every indicator          |
//! | `GET /actuator/health/liveness`   | always `UP`: the process answers (the toggle does not change it)       |
//! | `GET /actuator/health/readiness`  | `UP` only while the state is `Running` and the store is `UP`           |
//! | `GET` alias (off by default)      | readiness as a status code and one word, for L4/L7 switches            |
//! | `PUT /actuator/health`            | sets the traffic state; allowed callers only                           |
//!
//! A `GET` answers 200 for `UP` and 503 otherwise, with a JSON body such as
//! `{"status": "OUT_OF_SERVICE"}`. Callers the [`Acl`] allows also see the
//! traffic state and the components with their details (backend, latency,
//! session count, error text):
//!
//! ```json
//! {"status": "UP", "traffic": "RUNNING",
//!  "components": {"sessionStore": {"status": "UP",
//!                 "details": {"backend": "redis", "latencyMs": 0.4, "sessions": 1234}}}}
//! ```
//!
//! Every check runs concurrently and is bounded by
//! [`with_check_timeout`](Health::with_check_timeout): a check that does not
//! answer in time, or panics, is `DOWN`. `DOWN` outranks `OUT_OF_SERVICE`,
//! which outranks `UP`; every state but `Running` counts as
//! `OUT_OF_SERVICE`.
//!
//! # The toggle
//!
//! `PUT` with `Content-Type: application/json` and `{"status": "UP"}`,
//! `{"status": "OUT_OF_SERVICE"}` or `{"status": "DOWN"}` (the same as
//! `OUT_OF_SERVICE`: an operator's decision, not a failure):
//!
//! - 200 with `{"status", "traffic", "previous"}` when done;
//! - 400 with `{"error": ...}` for a body that is not one of these (not
//!   JSON, another content type, an unknown status, a repeated or unknown
//!   key, over 1 KiB);
//! - 403 for a caller the ACL refuses, including every caller when no ACL
//!   is configured or when the request has no
//!   [`ConnectInfo`](axum::extract::ConnectInfo), and a request that names
//!   a host outside the ACL's [allowed hosts](AclBuilder::allow_host);
//! - 409 when the [state machine](state) refuses, such as `UP` while
//!   shutting down.
//!
//! Refusals and rejections are logged with `tracing`, with the caller's
//! address and never the token.
//!
//! # Rolling deploys
//!
//! Serve with connection info so the ACL sees the peer, and let
//! [`Health::shutdown_signal`] drain the instance on `SIGTERM`. (In front
//! of the internet, serve with a header read timeout and a connection
//! limit, which `axum::serve` does not set; the crate's `shop` example
//! shows how.)
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::Router;
//! use tower_httpsession::MemoryStore;
//! use tower_httpsession::health::{Acl, Health};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let health = Health::new(MemoryStore::default())
//!     .with_acl(Acl::builder().allow("10.0.0.0/8").build().unwrap())
//!     .with_l7_check_path("/monitor/l7check");
//! let app = Router::new().merge(health.router());
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .with_graceful_shutdown(health.shutdown_signal())
//!     .await
//! # }
//! ```

pub mod acl;
mod drain;
mod endpoints;
mod host;
mod indicator;
pub mod state;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

pub use self::acl::{Access, Acl, AclBuilder, AclError, Refusal};
pub use self::drain::{drain, terminate_signal};
pub use self::indicator::{ComponentHealth, HealthIndicator, Status};
pub use self::state::{TrafficPhase, TrafficState, Transition, TransitionError};
use crate::store::SessionStore;

/// The default path of the health endpoint and the toggle.
pub const DEFAULT_PATH: &str = "/actuator/health";
/// The default time a check may take before it counts as `DOWN`.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time between leaving the rotation and closing the listener.
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(10);

/// Builds the health [`Router`]; see the [module docs](self).
///
/// Every setter documents its default. [`router`](Self::router) can be
/// called more than once; every router it builds shares one
/// [`TrafficState`].
#[derive(Clone)]
#[must_use]
pub struct Health {
    store: Arc<dyn SessionStore>,
    indicators: Vec<(String, Arc<dyn HealthIndicator>)>,
    acl: Option<Acl>,
    state: TrafficState,
    timeout: Duration,
    drain_period: Duration,
    path: String,
    liveness_path: Option<String>,
    readiness_path: Option<String>,
    l7_check_path: Option<String>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.indicators.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Health")
            .field("store", &self.store)
            .field("indicators", &names)
            .field("acl", &self.acl)
            .field("state", &self.state)
            .field("timeout", &self.timeout)
            .field("drain_period", &self.drain_period)
            .field("path", &self.path)
            .field("liveness_path", &self.liveness())
            .field("readiness_path", &self.readiness())
            .field("l7_check_path", &self.l7_check_path)
            .finish()
    }
}

impl Health {
    /// Health endpoints that report `store`, with no ACL (no toggle, no
    /// details), a [`TrafficState`] that starts `Running`, and the defaults
    /// below.
    pub fn new(store: impl SessionStore) -> Self {
        Self::from_shared(Arc::new(store))
    }

    /// Like [`new`](Self::new), for a store the app already shares, such as
    /// the one its [`SessionLayer`](crate::SessionLayer) uses.
    pub fn from_shared(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            indicators: Vec::new(),
            acl: None,
            state: TrafficState::running(),
            timeout: DEFAULT_CHECK_TIMEOUT,
            drain_period: DEFAULT_DRAIN_PERIOD,
            path: DEFAULT_PATH.to_owned(),
            liveness_path: None,
            readiness_path: None,
            l7_check_path: None,
        }
    }

    /// Who may `PUT` and see details. Default: none, so no one may.
    pub fn with_acl(mut self, acl: Acl) -> Self {
        self.acl = Some(acl);
        self
    }

    /// The traffic state to report and drive. Default: a new one that
    /// starts `Running`. Give [`TrafficState::starting`] to fail readiness
    /// until the app calls [`TrafficState::finish_startup`].
    ///
    /// ```
    /// # use tower_httpsession::{MemoryStore, health::{Health, TrafficState}};
    /// let state = TrafficState::starting();
    /// let health = Health::new(MemoryStore::default()).with_traffic_state(state.clone());
    /// // ... after warm-up:
    /// state.finish_startup();
    /// assert!(health.traffic_state().is_ready());
    /// ```
    pub fn with_traffic_state(mut self, state: TrafficState) -> Self {
        self.state = state;
        self
    }

    /// Adds a component to `GET` [`DEFAULT_PATH`] (not to readiness).
    /// Default: none. Names must be unique and not `sessionStore`.
    pub fn with_indicator(
        mut self,
        name: impl Into<String>,
        indicator: impl HealthIndicator,
    ) -> Self {
        self.indicators.push((name.into(), Arc::new(indicator)));
        self
    }

    /// How long one check may take before it counts as `DOWN`. Default:
    /// [`DEFAULT_CHECK_TIMEOUT`] (2 s). Keep it under the balancer's check
    /// timeout.
    pub fn with_check_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long [`shutdown_signal`](Self::shutdown_signal) waits between
    /// leaving the rotation and letting the server stop. Default:
    /// [`DEFAULT_DRAIN_PERIOD`] (10 s). Make it longer than the balancer's
    /// check interval times its fall count.
    pub fn with_drain_period(mut self, period: Duration) -> Self {
        self.drain_period = period;
        self
    }

    /// The path of the health endpoint and the toggle. Default:
    /// [`DEFAULT_PATH`]. Liveness and readiness follow it unless set.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The liveness path. Default: the [path](Self::with_path) plus
    /// `/liveness`.
    pub fn with_liveness_path(mut self, path: impl Into<String>) -> Self {
        self.liveness_path = Some(path.into());
        self
    }

    /// The readiness path. Default: the [path](Self::with_path) plus
    /// `/readiness`.
    pub fn with_readiness_path(mut self, path: impl Into<String>) -> Self {
        self.readiness_path = Some(path.into());
        self
    }

    /// Adds a plain alias of readiness, such as `/monitor/l7check`, for
    /// switches that read only the status code: 200 `UP` or 503 with
    /// `OUT_OF_SERVICE` or `DOWN` as text. Default: none.
    pub fn with_l7_check_path(mut self, path: impl Into<String>) -> Self {
        self.l7_check_path = Some(path.into());
        self
    }

    /// The traffic state the router reports, for the app to drive.
    #[must_use]
    pub fn traffic_state(&self) -> TrafficState {
        self.state.clone()
    }

    /// Drains on `SIGTERM` or Ctrl-C: a future for axum's
    /// `with_graceful_shutdown`; see [`drain`].
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        drain(self.state.clone(), terminate_signal(), self.drain_period)
    }

    /// Drains when `signal` resolves: a future for axum's
    /// `with_graceful_shutdown`; see [`drain`].
    pub fn shutdown_on<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drain(self.state.clone(), signal, self.drain_period)
    }

    fn liveness(&self) -> String {
        self.liveness_path
            .clone()
            .unwrap_or_else(|| format!("{}/liveness", self.path.trim_end_matches('/')))
    }

    fn readiness(&self) -> String {
        self.readiness_path
            .clone()
            .unwrap_or_else(|| format!("{}/readiness", self.path.trim_end_matches('/')))
    }

    /// The router, to `merge` into the app.
    ///
    /// # Panics
    ///
    /// If the configuration is invalid (see [`try_router`](Self::try_router)),
    /// as axum's own `route` panics on a bad path: a mistake to fix before
    /// the app ever serves.
    pub fn router(&self) -> Router {
        match self.try_router() {
            Ok(router) => router,
            Err(e) => panic!("invalid health configuration: {e}"),
        }
    }

    /// The router, to `merge` into the app, or why the configuration
    /// cannot work.
    ///
    /// # Errors
    ///
    /// A [`HealthConfigError`] naming the offending value.
    pub fn try_router(&self) -> Result<Router, HealthConfigError> {
        if self.timeout.is_zero() {
            return Err(HealthConfigError::ZeroTimeout);
        }
        let mut names = HashSet::from([endpoints::STORE_COMPONENT]);
        for (name, _) in &self.indicators {
            if name.is_empty() || !names.insert(name.as_str()) {
                return Err(HealthConfigError::DuplicateComponent(name.clone()));
            }
        }
        let (liveness, readiness) = (self.liveness(), self.readiness());
        let mut paths = HashSet::new();
        let all = [Some(&self.path), Some(&liveness), Some(&readiness)];
        for path in all
            .into_iter()
            .chain([self.l7_check_path.as_ref()])
            .flatten()
        {
            check_path(path)?;
            if !paths.insert(path.as_str()) {
                return Err(HealthConfigError::DuplicatePath(path.clone()));
            }
        }

        let inner = Arc::new(endpoints::Inner {
            store: Arc::clone(&self.store),
            indicators: self.indicators.clone(),
            acl: self.acl.clone(),
            state: self.state.clone(),
            timeout: self.timeout,
            warned_no_connect_info: AtomicBool::new(false),
        });
        let mut router = Router::new()
            .route(&self.path, get(endpoints::health).put(endpoints::put_state))
            .route(&liveness, get(endpoints::liveness))
            .route(&readiness, get(endpoints::readiness));
        if let Some(path) = &self.l7_check_path {
            router = router.route(path, get(endpoints::l7_check));
        }
        Ok(router.with_state(inner))
    }
}

fn check_path(path: &str) -> Result<(), HealthConfigError> {
    let plain = |c: char| c.is_ascii_graphic() && !matches!(c, '{' | '}' | '*' | '?' | '#');
    if path.len() < 2 || !path.starts_with('/') || path.contains("//") || !path.chars().all(plain) {
        return Err(HealthConfigError::InvalidPath(path.to_owned()));
    }
    Ok(())
}

/// A [`Health`] configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthConfigError {
    /// A path is not a plain absolute path (`/`, parameters and wildcards
    /// are refused).
    #[error(
        "health path {0:?} must start with '/' and hold no spaces, '{{', '}}', '*', '?' or '#'"
    )]
    InvalidPath(String),
    /// Two endpoints share a path.
    #[error("health path {0:?} is used by two endpoints")]
    DuplicatePath(String),
    /// An indicator name is empty, taken, or `sessionStore`.
    #[error("health component name {0:?} is empty or used twice")]
    DuplicateComponent(String),
    /// The check timeout is zero.
    #[error("the health check timeout must be more than zero")]
    ZeroTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    #[derive(Debug)]
    struct Up;

    #[async_trait::async_trait]
    impl HealthIndicator for Up {
        async fn check(&self) -> ComponentHealth {
            ComponentHealth::up()
        }
    }

    fn health() -> Health {
        Health::new(MemoryStore::default())
    }

    #[test]
    fn configuration_is_checked() {
        let err = |h: Health| h.try_router().unwrap_err();
        assert_eq!(
            err(health().with_path("actuator")),
            HealthConfigError::InvalidPath("actuator".into())
        );
        assert_eq!(
            err(health().with_l7_check_path("/x/{id}")),
            HealthConfigError::InvalidPath("/x/{id}".into())
        );
        assert_eq!(
            err(health().with_l7_check_path("/actuator/health/readiness")),
            HealthConfigError::DuplicatePath("/actuator/health/readiness".into())
        );
        assert_eq!(
            err(health().with_indicator("sessionStore", Up)),
            HealthConfigError::DuplicateComponent("sessionStore".into())
        );
        assert_eq!(
            err(health().with_indicator("db", Up).with_indicator("db", Up)),
            HealthConfigError::DuplicateComponent("db".into())
        );
        assert_eq!(
            err(health().with_check_timeout(Duration::ZERO)),
            HealthConfigError::ZeroTimeout
        );
        assert!(health().with_indicator("db", Up).try_router().is_ok());
    }

    #[test]
    fn probe_paths_follow_the_main_path() {
        let h = health().with_path("/manage/health/");
        assert_eq!(h.liveness(), "/manage/health/liveness");
        let h = health().with_path("/h").with_readiness_path("/ready");
        assert_eq!(h.readiness(), "/ready");
        assert_eq!(h.liveness(), "/h/liveness");
    }

    #[test]
    #[should_panic(expected = "invalid health configuration")]
    fn router_panics_on_a_bad_path() {
        let _ = health().with_path("").router();
    }

    #[test]
    fn debug_shows_configuration_not_secrets() {
        let acl = Acl::builder()
            .bearer_token("a-very-secret-token-value")
            .build()
            .unwrap();
        let debug = format!("{:?}", health().with_acl(acl).with_indicator("db", Up));
        assert!(debug.contains("\"db\"") && !debug.contains("secret"));
    }
}
