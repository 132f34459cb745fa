//! Health statuses and the checks that report them.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

/// A health status as the endpoints spell it.
///
/// When several are combined, the worst wins: `DOWN`, then
/// `OUT_OF_SERVICE`, then `UP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Working; 200.
    Up,
    /// Deliberately not taking traffic; 503.
    OutOfService,
    /// Broken; 503.
    Down,
}

impl Status {
    /// The status's name, such as `"OUT_OF_SERVICE"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::OutOfService => "OUT_OF_SERVICE",
            Self::Down => "DOWN",
        }
    }

    /// The HTTP status a probe answers with: 200 for `UP`, 503 otherwise.
    #[must_use]
    pub const fn http_status(self) -> http::StatusCode {
        match self {
            Self::Up => http::StatusCode::OK,
            Self::OutOfService | Self::Down => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one check reports: a status and, optionally, details that only
/// callers the ACL allows get to see.
///
/// ```
/// use serde_json::json;
/// use tower_httpsession::health::{ComponentHealth, Status};
///
/// let report = ComponentHealth::down().with_details(json!({ "error": "connection refused" }));
/// assert_eq!(report.status, Status::Down);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ComponentHealth {
    /// The status.
    pub status: Status,
    /// Anything useful to an operator: latency, versions, error text.
    pub details: Option<serde_json::Value>,
}

impl ComponentHealth {
    /// A report with `status` and no details.
    pub const fn new(status: Status) -> Self {
        Self {
            status,
            details: None,
        }
    }

    /// `UP`, no details.
    pub const fn up() -> Self {
        Self::new(Status::Up)
    }

    /// `DOWN`, no details.
    pub const fn down() -> Self {
        Self::new(Status::Down)
    }

    /// Adds details, shown only to callers the ACL allows.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// A check the app registers with
/// [`HealthBuilder::with_indicator`](super::HealthBuilder::with_indicator), such as a
/// downstream service or a database the sessions do not live in.
///
/// Object safe; the health endpoint runs every indicator concurrently and
/// reports one that takes longer than the configured timeout, or panics, as
/// `DOWN`.
///
/// ```
/// use async_trait::async_trait;
/// use tower_httpsession::health::{ComponentHealth, HealthIndicator};
///
/// #[derive(Debug)]
/// struct Disk;
///
/// #[async_trait]
/// impl HealthIndicator for Disk {
///     async fn check(&self) -> ComponentHealth {
///         ComponentHealth::up().with_details(serde_json::json!({ "free": "12G" }))
///     }
/// }
/// ```
#[async_trait]
pub trait HealthIndicator: Send + Sync + 'static {
    /// Checks the component.
    async fn check(&self) -> ComponentHealth;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_wins() {
        let all = [Status::Up, Status::Down, Status::OutOfService];
        assert_eq!(all.iter().max(), Some(&Status::Down));
        assert_eq!(Status::Up.max(Status::OutOfService), Status::OutOfService);
        assert_eq!(
            serde_json::to_string(&Status::OutOfService).unwrap(),
            "\"OUT_OF_SERVICE\""
        );
    }
}
