//! [`HealthBuilder`]: the ACL, paths, timeouts and indicators of the health
//! endpoints, checked into a [`Health`].

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::endpoints::{self, Inner};
use super::{
    Acl, DEFAULT_CHECK_TIMEOUT, DEFAULT_DRAIN_PERIOD, DEFAULT_PATH, Health, HealthIndicator, Paths,
    TrafficState,
};
use crate::store::SessionStore;
use crate::store::instrumented::Instrumented;

/// Sets up [`Health`]; the configuration is checked by
/// [`build`](Self::build), so the health endpoints it gives always serve.
///
/// Every setter documents its default.
///
/// ```
/// use std::time::Duration;
/// use tower_httpsession::MemoryStore;
/// use tower_httpsession::health::{Acl, Health};
///
/// let health = Health::builder(MemoryStore::default())
///     .with_acl(Acl::builder().with_allowed_network("10.0.0.0/8").build().unwrap())
///     .with_l7_check_path("/monitor/l7check")
///     .with_check_timeout(Duration::from_secs(1))
///     .build()
///     .unwrap();
/// let app: axum::Router = axum::Router::new().merge(health.router());
/// # let _ = app;
///
/// let bad = Health::builder(MemoryStore::default()).with_path("/health/{id}").build();
/// assert!(bad.unwrap_err().to_string().contains("/health/{id}"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct HealthBuilder {
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

impl fmt::Debug for HealthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.indicators.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HealthBuilder")
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

impl HealthBuilder {
    pub(super) fn new(store: Arc<dyn SessionStore>) -> Self {
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
    /// let health = Health::builder(MemoryStore::default())
    ///     .with_traffic_state(state.clone())
    ///     .build()
    ///     .unwrap();
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

    /// How long [`Health::shutdown_signal`] waits between leaving the
    /// rotation and letting the server stop. Default:
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

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// A [`HealthConfigError`] naming the offending value.
    pub fn build(self) -> Result<Health, HealthConfigError> {
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
        Ok(self.assemble())
    }

    /// The [`Health`] these settings describe, unchecked: for the defaults,
    /// which are valid, and for [`build`](Self::build) once it checked.
    pub(super) fn assemble(self) -> Health {
        let paths = Paths {
            liveness: self.liveness(),
            readiness: self.readiness(),
            health: self.path,
            l7_check: self.l7_check_path,
        };
        Health {
            inner: Arc::new(Inner {
                store: Instrumented::new(self.store),
                indicators: self.indicators,
                acl: self.acl,
                state: self.state,
                timeout: self.timeout,
                warned_no_connect_info: AtomicBool::new(false),
                put_without_connect_info_logged: AtomicBool::new(false),
            }),
            drain_period: self.drain_period,
            paths: Arc::new(paths),
        }
    }
}

/// Checks that `path` is a plain absolute path axum routes as it is: no
/// parameters, wildcards or segments that axum reads as one.
fn check_path(path: &str) -> Result<(), HealthConfigError> {
    let plain = |c: char| c.is_ascii_graphic() && !matches!(c, '{' | '}' | '*' | '?' | '#');
    if path.len() < 2
        || !path.starts_with('/')
        || path.contains("//")
        || !path.chars().all(plain)
        || path.split('/').any(|segment| segment.starts_with(':'))
    {
        return Err(HealthConfigError::InvalidPath(path.to_owned()));
    }
    Ok(())
}

/// A [`Health`] configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HealthConfigError {
    /// A path is not a plain absolute path (`/`, parameters, wildcards and
    /// segments starting with `:` are refused).
    #[error(
        "health path {0:?} must start with '/' and hold no spaces, '{{', '}}', '*', '?', '#' or segments starting with ':'"
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
    use crate::health::Health;
    use crate::health::tests::Up;

    fn builder() -> HealthBuilder {
        Health::builder(MemoryStore::default())
    }

    #[test]
    fn configuration_is_checked() {
        let err = |b: HealthBuilder| b.build().unwrap_err();
        assert_eq!(
            err(builder().with_path("actuator")),
            HealthConfigError::InvalidPath("actuator".into())
        );
        assert_eq!(
            err(builder().with_path("")),
            HealthConfigError::InvalidPath(String::new())
        );
        assert_eq!(
            err(builder().with_l7_check_path("/x/{id}")),
            HealthConfigError::InvalidPath("/x/{id}".into())
        );
        assert_eq!(
            err(builder().with_l7_check_path("/x/:id")),
            HealthConfigError::InvalidPath("/x/:id".into())
        );
        assert_eq!(
            err(builder().with_l7_check_path("/actuator/health/readiness")),
            HealthConfigError::DuplicatePath("/actuator/health/readiness".into())
        );
        assert_eq!(
            err(builder().with_indicator("sessionStore", Up)),
            HealthConfigError::DuplicateComponent("sessionStore".into())
        );
        assert_eq!(
            err(builder().with_indicator("db", Up).with_indicator("db", Up)),
            HealthConfigError::DuplicateComponent("db".into())
        );
        assert_eq!(
            err(builder().with_check_timeout(Duration::ZERO)),
            HealthConfigError::ZeroTimeout
        );
        assert!(builder().with_indicator("db", Up).build().is_ok());
    }

    #[test]
    fn the_defaults_pass_the_checks() {
        let health = builder().build().unwrap();
        let _ = health.router();
        let _ = Health::new(MemoryStore::default()).router();
    }

    #[test]
    fn a_path_with_a_colon_inside_a_segment_is_served() {
        let health = builder().with_l7_check_path("/monitor/l7:check").build();
        let _ = health.unwrap().router();
    }

    #[test]
    fn probe_paths_follow_the_main_path() {
        let b = builder().with_path("/manage/health/");
        assert_eq!(b.liveness(), "/manage/health/liveness");
        let b = builder().with_path("/h").with_readiness_path("/ready");
        assert_eq!(b.readiness(), "/ready");
        assert_eq!(b.liveness(), "/h/liveness");
    }
}
