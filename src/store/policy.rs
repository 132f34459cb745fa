//! The expiry and touch policy, defined once.
//!
//! Every store applies it inside its own atomic step (the Redis script and
//! the PostgreSQL statement are written from [`TOUCH_DIVISOR`]; the memory
//! store and the adapter call [`expires_at`] and [`touch_due`]), and the
//! session layer uses the same functions to decide what a request writes.

use std::time::Duration;

use time::OffsetDateTime;

/// By default a touch is due once a session has been idle for this fraction
/// of its idle timeout: `max_inactive / TOUCH_DIVISOR`. A session may so end
/// up to a twentieth of its idle timeout early, never late.
pub const TOUCH_DIVISOR: u32 = 20;

/// The default touch interval of a session with the idle timeout
/// `max_inactive`.
#[must_use]
pub fn default_touch_interval(max_inactive: Duration) -> Duration {
    max_inactive / TOUCH_DIVISOR
}

/// When a session expires: the earlier of `last_accessed + max_inactive`
/// and `created + absolute_timeout` (when there is one). Saturates rather
/// than overflows.
#[must_use]
pub fn expires_at(
    created: OffsetDateTime,
    last_accessed: OffsetDateTime,
    max_inactive: Duration,
    absolute_timeout: Option<Duration>,
) -> OffsetDateTime {
    let idle = last_accessed.saturating_add(to_time(max_inactive));
    match absolute_timeout {
        Some(limit) => idle.min(created.saturating_add(to_time(limit))),
        None => idle,
    }
}

/// Whether a touch at `now` is due for a session last accessed at `stored`
/// with the idle timeout `max_inactive`: `interval` after the stored access
/// (`None`: the [default](default_touch_interval)).
#[must_use]
pub fn touch_due(
    now: OffsetDateTime,
    stored: OffsetDateTime,
    max_inactive: Duration,
    interval: Option<Duration>,
) -> bool {
    let interval = interval.unwrap_or_else(|| default_touch_interval(max_inactive));
    now - stored >= to_time(interval)
}

/// A standard duration as a `time` one, saturating.
pub(crate) fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_the_earlier_deadline() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let idle = Duration::from_secs(60);
        let at = t0 + Duration::from_secs(100);
        assert_eq!(expires_at(t0, at, idle, None), at + idle);
        assert_eq!(
            expires_at(t0, at, idle, Some(Duration::from_secs(120))),
            t0 + Duration::from_secs(120)
        );
        assert_eq!(
            expires_at(t0, at, Duration::MAX, None),
            at.saturating_add(time::Duration::MAX)
        );
    }

    #[test]
    fn a_touch_is_due_after_the_interval() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let idle = Duration::from_secs(200);
        assert!(!touch_due(t0 + Duration::from_secs(9), t0, idle, None));
        assert!(touch_due(t0 + Duration::from_secs(10), t0, idle, None));
        assert!(touch_due(t0, t0, idle, Some(Duration::ZERO)));
    }
}
