//! Servlet-style HTTP sessions for axum and tower apps that run as several
//! instances behind a load balancer.
//!
//! - A [`Session`] extractor with the servlet's API: `get`, `set`, `remove`,
//!   `attribute_names`, `invalidate`, `max_inactive_interval`, `change_id`,
//!   and an atomic `update`.
//! - Minimal writes: the session records which attributes a request changed
//!   and the [`SessionLayer`] writes only those, in one store call, so a
//!   request that changes one small value in a large session sends a few
//!   bytes, and two requests that change different attributes at the same
//!   time both keep their change.
//! - Stores shared by every instance: Redis (feature `redis`) and PostgreSQL
//!   (feature `postgres`), over TLS with the feature `tls`
//!   (`store::tls`), or the bounded in-process [`MemoryStore`].
//! - [`health`] (feature `health`, on by default): actuator-style endpoints a
//!   load balancer polls, with an ACL-protected toggle to take an instance
//!   out of rotation for a deploy.
//! - [`profile`] (feature `profile`, on by default): the store chosen by
//!   configuration (`SESSION_STORE=memory | redis | postgres`), the way a
//!   Spring profile swaps a bean.
//!
//! # Example
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode, header};
//! use tower::ServiceExt;
//! use tower_httpsession::{MemoryStore, Session, SessionError, SessionLayer};
//!
//! async fn login(session: Session) -> Result<&'static str, SessionError> {
//!     session.change_id().await?; // against session fixation
//!     session.set("user", "alice").await?;
//!     Ok("welcome")
//! }
//!
//! async fn whoami(session: Session) -> Result<String, SessionError> {
//!     Ok(session.get::<String>("user").await?.unwrap_or_else(|| "nobody".into()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let app = Router::new()
//!     .route("/login", get(login))
//!     .route("/whoami", get(whoami))
//!     .layer(SessionLayer::new(MemoryStore::default()));
//!
//! let response = app
//!     .clone()
//!     .oneshot(Request::get("/login").body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
//! let cookie = set_cookie.split(';').next().unwrap().to_owned();
//!
//! let response = app
//!     .oneshot(
//!         Request::get("/whoami")
//!             .header(header::COOKIE, cookie)
//!             .body(Body::empty())
//!             .unwrap(),
//!     )
//!     .await
//!     .unwrap();
//! let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
//! assert_eq!(&body[..], b"alice");
//! # }
//! ```
//!
//! # Metrics and traces
//!
//! Every store call runs in a `tracing` span at debug level, a child of the
//! request's, named `session_store`, with OpenTelemetry's attributes
//! `db.system.name`, `db.operation.name` and, when it fails, `error.type`
//! (`otel.name` and `otel.kind` are set for an OpenTelemetry bridge).
//!
//! With the feature `metrics` (off by default) the crate records through the
//! [`metrics`](https://docs.rs/metrics) facade; the app installs the recorder
//! (a Prometheus exporter, an OpenTelemetry bridge) **before** it builds the
//! [`SessionLayer`] and `Health`, which register their metrics with the
//! recorder installed then. Without the feature none of this is compiled.
//! Names follow OpenTelemetry's conventions: its own where one exists, the
//! crate's under `httpsession.` otherwise (OpenTelemetry's `session.`
//! namespace is for client sessions).
//!
//! | Name | Kind | Unit | Labels | What |
//! | --- | --- | --- | --- | --- |
//! | `db.client.operation.duration` | histogram | s | `db.system.name`, `db.operation.name`, `error.type` on failures | each store call |
//! | `httpsession.store.errors` | counter | | `db.system.name`, `db.operation.name`, `error.type` | failed store calls |
//! | `httpsession.sessions.live` | gauge | | `db.system.name` | sessions the store holds, set by each health check that counts them |
//! | `httpsession.sessions.created` | counter | | | new sessions stored |
//! | `httpsession.sessions.invalidated` | counter | | | sessions invalidated and deleted |
//! | `httpsession.sessions.expired` | counter | | | sessions a request met past their timeout, and deleted |
//! | `httpsession.sessions.rotated` | counter | | | stored sessions given a new id by `change_id` |
//! | `httpsession.commits` | counter | | | writes of a request's changes the store took |
//! | `httpsession.commit.size` | histogram | bytes | | attribute names and values per write |
//! | `httpsession.compare_and_set.attempts` | counter | | | compare-and-sets of `Session::update` |
//! | `httpsession.compare_and_set.losses` | counter | | | those lost to another write, then retried |
//! | `httpsession.responses.unavailable` | counter | | | responses answered 503 because the store was out |
//!
//! `db.system.name` is `redis`, `postgresql`, `memory`, `tower_sessions` for
//! the tower-sessions adapter, or a third-party store's
//! [`backend`](SessionStore::backend) name. `db.operation.name` is one of
//! `load`, `load_some`, `create`, `apply`, `compare_and_set`, `delete`,
//! `health`; `error.type` the [`StoreErrorKind`](store::StoreErrorKind) in
//! snake case (`unavailable`, `corrupt`, `backend`, `config`), or `_OTHER`
//! for a failed health check. No session id, verifier, cookie, store key,
//! principal or attribute value is ever a label.
//!
//! # Conventions
//!
//! Everything in the crate is built the same way:
//!
//! - `Type::new(required…)` builds the common case with every default and
//!   never fails: [`SessionLayer::new`], [`MemoryStore::new`],
//!   `Health::new`. A store that must reach its server has
//!   `Type::connect(required…)` instead, which is async.
//! - `Type::builder(required…)` returns a `TypeBuilder` for the rest, or
//!   `Type::builder_for_*` where the required input takes another form
//!   (`RedisStore::builder_for_cluster(urls)`,
//!   `PostgresStore::builder_for_pool(pool)`). A builder is consumed by its
//!   setters, each named `with_*` and taking the plain value, never an
//!   `Option`. A setter without an argument turns a mode on or a default
//!   off and says which in its name: `without_connection_check`, or the
//!   risk it takes, `with_insecure_cookie_over_http`.
//! - A builder ends in `build()`, which checks every setting and returns
//!   `Result<Type, TypeError>` (the memory store's returns the store, since
//!   none of its settings can be wrong), or in `connect()`, async, and
//!   `connect_lazy()` for a store. What they return works: no method of a
//!   built value fails or panics because of its configuration.
//! - [`SessionConfig`], which a profile produces too, is a value with
//!   `Default` and the same `with_*` setters, checked by the constructor
//!   that takes it, [`SessionLayer::with_config`].
//! - A store is taken as `impl SessionStore`, and a store the app already
//!   shares as `Arc<dyn SessionStore>` is one, used as it is:
//!   `SessionLayer::new(sessions.store())`.
//! - `from_*` makes a value from what the app already has:
//!   `PostgresStore::from_pool`, `Profile::from_env`.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod error;
#[cfg(feature = "health")]
#[cfg_attr(docsrs, doc(cfg(feature = "health")))]
pub mod health;
mod layer;
#[cfg(feature = "axum-login")]
pub mod login;
#[cfg(feature = "profile")]
#[cfg_attr(docsrs, doc(cfg(feature = "profile")))]
pub mod profile;
pub mod session;
pub mod store;
mod telemetry;

#[doc(hidden)]
pub use http as __http;

pub use crate::config::{ConfigError, IntoDuration, SessionConfig};
pub use crate::error::{Limit, SessionError, SessionFailure};
pub use crate::layer::{SessionLayer, SessionService};
pub use crate::session::{Session, SessionId, SessionInfo, SessionRegistry};
#[cfg(feature = "postgres")]
pub use crate::store::postgres::PostgresStore;
#[cfg(feature = "redis")]
pub use crate::store::redis::RedisStore;
pub use crate::store::{MemoryStore, SessionStore, StoreError};

// The README's Rust code blocks, compiled as doctests so that they stay true.
#[cfg(all(doctest, feature = "health", feature = "profile"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
