//! The session layer's own metrics, named under `httpsession.`; the store
//! calls' are in `store/instrumented.rs`. Without the feature `metrics`
//! every method here is empty and [`SessionMetrics`] holds nothing.
//!
//! No session id, verifier, cookie, store key or attribute becomes a label:
//! the counters here have none.

#[cfg(feature = "metrics")]
use metrics::{Counter, Histogram, Unit};

use crate::store::{ChangeSet, Record};

/// Counter: sessions stored for the first time.
#[cfg(feature = "metrics")]
const CREATED: &str = "httpsession.sessions.created";
/// Counter: sessions a request invalidated, deleted at its commit.
#[cfg(feature = "metrics")]
const INVALIDATED: &str = "httpsession.sessions.invalidated";
/// Counter: sessions a request found past their timeout, and deleted.
#[cfg(feature = "metrics")]
const EXPIRED: &str = "httpsession.sessions.expired";
/// Counter: stored sessions whose id `change_id` changed.
#[cfg(feature = "metrics")]
const ROTATED: &str = "httpsession.sessions.rotated";
/// Counter: commits the store took (a `create` or an `apply`).
#[cfg(feature = "metrics")]
const COMMITS: &str = "httpsession.commits";
/// Histogram: the bytes of attribute names and values a commit sent.
#[cfg(feature = "metrics")]
const COMMIT_SIZE: &str = "httpsession.commit.size";
/// Counter: compare-and-set calls of `Session::update`.
#[cfg(feature = "metrics")]
const CAS_ATTEMPTS: &str = "httpsession.compare_and_set.attempts";
/// Counter: compare-and-sets lost to another request's write.
#[cfg(feature = "metrics")]
const CAS_LOSSES: &str = "httpsession.compare_and_set.losses";
/// Counter: responses replaced by, or answered as, a 503 because the
/// store was out.
#[cfg(feature = "metrics")]
const UNAVAILABLE: &str = "httpsession.responses.unavailable";

/// The layer's metric handles, registered once when the layer is built,
/// with the recorder installed then.
#[derive(Default)]
pub(crate) struct SessionMetrics {
    #[cfg(feature = "metrics")]
    handles: Handles,
}

#[cfg(feature = "metrics")]
struct Handles {
    created: Counter,
    invalidated: Counter,
    expired: Counter,
    rotated: Counter,
    commits: Counter,
    commit_size: Histogram,
    cas_attempts: Counter,
    cas_losses: Counter,
    unavailable: Counter,
}

#[cfg(feature = "metrics")]
impl Default for Handles {
    fn default() -> Self {
        use metrics::{counter, describe_counter, describe_histogram};
        describe_counter!(CREATED, Unit::Count, "Sessions stored for the first time.");
        describe_counter!(
            INVALIDATED,
            Unit::Count,
            "Sessions invalidated and deleted."
        );
        describe_counter!(
            EXPIRED,
            Unit::Count,
            "Sessions met past their timeout, and deleted."
        );
        describe_counter!(ROTATED, Unit::Count, "Stored sessions given a new id.");
        describe_counter!(COMMITS, Unit::Count, "Session writes the store took.");
        describe_histogram!(
            COMMIT_SIZE,
            Unit::Bytes,
            "Bytes of attribute names and values per session write."
        );
        describe_counter!(
            CAS_ATTEMPTS,
            Unit::Count,
            "Compare-and-sets of Session::update."
        );
        describe_counter!(
            CAS_LOSSES,
            Unit::Count,
            "Compare-and-sets lost to another write."
        );
        describe_counter!(
            UNAVAILABLE,
            Unit::Count,
            "503 responses: the store was out."
        );
        Self {
            created: counter!(CREATED),
            invalidated: counter!(INVALIDATED),
            expired: counter!(EXPIRED),
            rotated: counter!(ROTATED),
            commits: counter!(COMMITS),
            commit_size: metrics::histogram!(COMMIT_SIZE),
            cas_attempts: counter!(CAS_ATTEMPTS),
            cas_losses: counter!(CAS_LOSSES),
            unavailable: counter!(UNAVAILABLE),
        }
    }
}

/// The bytes a write sends of attribute names and values.
#[cfg(feature = "metrics")]
fn bytes<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> f64 {
    let total: usize = pairs.map(|(name, value)| name.len() + value.len()).sum();
    total as f64
}

impl SessionMetrics {
    /// A new session was stored: `record` is what went.
    pub(crate) fn created(&self, record: &Record) {
        #[cfg(feature = "metrics")]
        {
            let h = &self.handles;
            h.created.increment(1);
            h.commits.increment(1);
            let pairs = record.attributes.iter();
            h.commit_size
                .record(bytes(pairs.map(|(n, v)| (n.as_str(), v.as_str()))));
        }
        #[cfg(not(feature = "metrics"))]
        let _ = record;
    }

    /// The store took `changes` to a stored session.
    pub(crate) fn applied(&self, changes: &ChangeSet) {
        #[cfg(feature = "metrics")]
        {
            let h = &self.handles;
            h.commits.increment(1);
            if changes.new_verifier().is_some() {
                h.rotated.increment(1);
            }
            let removed = changes.attributes_removed().map(|name| (name, ""));
            h.commit_size
                .record(bytes(changes.attributes_set().chain(removed)));
        }
        #[cfg(not(feature = "metrics"))]
        let _ = changes;
    }

    /// An invalidated session was deleted.
    pub(crate) fn invalidated(&self) {
        #[cfg(feature = "metrics")]
        self.handles.invalidated.increment(1);
    }

    /// A session met past its timeout was deleted.
    pub(crate) fn expired(&self) {
        #[cfg(feature = "metrics")]
        self.handles.expired.increment(1);
    }

    /// A compare-and-set was answered; `lost` if another write came first.
    pub(crate) fn compare_and_set(&self, lost: bool) {
        #[cfg(feature = "metrics")]
        {
            self.handles.cas_attempts.increment(1);
            if lost {
                self.handles.cas_losses.increment(1);
            }
        }
        #[cfg(not(feature = "metrics"))]
        let _ = lost;
    }

    /// A response went out as 503 because the store was out.
    pub(crate) fn unavailable(&self) {
        #[cfg(feature = "metrics")]
        self.handles.unavailable.increment(1);
    }
}
