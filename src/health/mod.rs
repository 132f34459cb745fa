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
//! let acl = Acl::builder().with_allowed_network("127.0.0.1/32").build().unwrap();
//! let health = Health::builder(MemoryStore::default()).with_acl(acl).build().unwrap();
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .merge(health.router());
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
//! Paths are the defaults; each is configurable on [`HealthBuilder`].
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
//! [`with_check_timeout`](HealthBuilder::with_check_timeout): a check that
//! does not answer in time, or panics, is `DOWN`. `DOWN` outranks
//! `OUT_OF_SERVICE`, which outranks `UP`; every state but `Running` counts
//! as `OUT_OF_SERVICE`.
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
//!   a host outside the ACL's [allowed hosts](AclBuilder::with_allowed_host);
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
//! let health = Health::builder(MemoryStore::default())
//!     .with_acl(Acl::builder().with_allowed_network("10.0.0.0/8").build().unwrap())
//!     .with_l7_check_path("/monitor/l7check")
//!     .build()
//!     .unwrap();
//! let app = Router::new().merge(health.router());
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .with_graceful_shutdown(health.shutdown_signal())
//!     .await
//! # }
//! ```

pub mod acl;
mod builder;
mod drain;
mod endpoints;
mod host;
mod indicator;
pub mod state;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

pub use self::acl::{Access, Acl, AclBuilder, AclError, Refusal};
pub use self::builder::{HealthBuilder, HealthConfigError};
pub use self::drain::{drain, terminate_signal};
pub use self::indicator::{ComponentHealth, HealthIndicator, Status};
pub use self::state::{TrafficPhase, TrafficState, Transition, TransitionError};
use crate::layer::shared_store;
use crate::store::SessionStore;

/// The default path of the health endpoint and the toggle.
pub const DEFAULT_PATH: &str = "/actuator/health";
/// The default time a check may take before it counts as `DOWN`.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The default time between leaving the rotation and closing the listener.
pub const DEFAULT_DRAIN_PERIOD: Duration = Duration::from_secs(10);

/// The health endpoints, checked and ready to serve; see the
/// [module docs](self).
///
/// [`new`](Self::new) reports a store with every default; [`builder`](Self::builder)
/// sets the ACL, the paths, the timeouts and custom indicators, checked by
/// [`HealthBuilder::build`]. Clones share one [`TrafficState`], and so do
/// the routers [`router`](Self::router) builds.
#[derive(Clone)]
pub struct Health {
    inner: Arc<endpoints::Inner>,
    drain_period: Duration,
    paths: Arc<Paths>,
}

/// The paths of the endpoints, each checked to be a plain absolute path
/// that no other endpoint uses.
#[derive(Debug)]
struct Paths {
    health: String,
    liveness: String,
    readiness: String,
    l7_check: Option<String>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let names: Vec<&str> = inner.indicators.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Health")
            .field("store", &inner.store)
            .field("indicators", &names)
            .field("acl", &inner.acl)
            .field("state", &inner.state)
            .field("timeout", &inner.timeout)
            .field("drain_period", &self.drain_period)
            .field("path", &self.paths.health)
            .field("liveness_path", &self.paths.liveness)
            .field("readiness_path", &self.paths.readiness)
            .field("l7_check_path", &self.paths.l7_check)
            .finish()
    }
}

impl Health {
    /// Health endpoints that report `store`, with every default: no ACL
    /// (no toggle, no details for anyone), a [`TrafficState`] that starts
    /// `Running`, and the paths and timeouts [`HealthBuilder`] documents.
    ///
    /// `store` is any [`SessionStore`]; the one the app's
    /// [`SessionLayer`](crate::SessionLayer) uses, shared as
    /// `Arc<dyn SessionStore>`, is used as it is.
    #[must_use]
    pub fn new(store: impl SessionStore) -> Self {
        Self::builder(store).assemble()
    }

    /// A builder for health endpoints that report `store` (taken as by
    /// [`new`](Self::new)).
    pub fn builder(store: impl SessionStore) -> HealthBuilder {
        HealthBuilder::new(shared_store(store))
    }

    /// The traffic state the router reports, for the app to drive.
    #[must_use]
    pub fn traffic_state(&self) -> TrafficState {
        self.inner.state.clone()
    }

    /// Drains on `SIGTERM` or Ctrl-C: a future for axum's
    /// `with_graceful_shutdown`; see [`drain`].
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        drain(self.traffic_state(), terminate_signal(), self.drain_period)
    }

    /// Drains when `signal` resolves: a future for axum's
    /// `with_graceful_shutdown`; see [`drain`].
    pub fn shutdown_on<F>(&self, signal: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drain(self.traffic_state(), signal, self.drain_period)
    }

    /// The router, to `merge` into the app. Every router it builds shares
    /// this [`Health`]'s state.
    pub fn router(&self) -> Router {
        let paths = &self.paths;
        let mut router = Router::new()
            .route(
                &paths.health,
                get(endpoints::health).put(endpoints::put_state),
            )
            .route(&paths.liveness, get(endpoints::liveness))
            .route(&paths.readiness, get(endpoints::readiness));
        if let Some(path) = &paths.l7_check {
            router = router.route(path, get(endpoints::l7_check));
        }
        router.with_state(Arc::clone(&self.inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    /// An indicator that is always up.
    #[derive(Debug)]
    pub(super) struct Up;

    #[async_trait::async_trait]
    impl HealthIndicator for Up {
        async fn check(&self) -> ComponentHealth {
            ComponentHealth::up()
        }
    }

    #[test]
    fn debug_shows_configuration_not_secrets() {
        let acl = Acl::builder()
            .with_bearer_token("a-very-secret-token-value")
            .build()
            .unwrap();
        let health = Health::builder(MemoryStore::default())
            .with_acl(acl)
            .with_indicator("db", Up)
            .build()
            .unwrap();
        let debug = format!("{health:?}");
        assert!(debug.contains("\"db\"") && !debug.contains("secret"));
    }
}
