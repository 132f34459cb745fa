//! The bounds of a [`MemoryStore`]: its builder, and what a session weighs
//! against the byte budget.

use std::sync::Arc;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{DEFAULT_CAPACITY, DEFAULT_MAX_BYTES, MemoryStore, UntilExpiry, principals};
use crate::store::{Record, StoreKey};

/// What one session weighs besides its attributes: the record, the `Arc`
/// around it, its key and the cache's entry (measured: about 580 bytes).
const SESSION_OVERHEAD: usize = 600;

/// What one attribute weighs besides its name and value: its share of the
/// map's table and the two strings' allocations (measured: about 165 bytes
/// with small names and values).
const ATTRIBUTE_OVERHEAD: usize = 160;

/// The bounds of a [`MemoryStore`], from [`MemoryStore::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
    max_sessions: u64,
}

impl Default for MemoryStoreBuilder {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_sessions: DEFAULT_CAPACITY,
        }
    }
}

impl MemoryStoreBuilder {
    /// The most bytes the sessions may take, as estimated from their
    /// attributes plus a fixed overhead per session and per attribute.
    /// Default: [`DEFAULT_MAX_BYTES`] (64 MiB). Zero keeps no session.
    ///
    /// ```
    /// # use tower_httpsession::MemoryStore;
    /// let store = MemoryStore::builder().with_max_bytes(16 * 1024 * 1024).build();
    /// # let _ = store;
    /// ```
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// The most sessions the store holds. Default: [`DEFAULT_CAPACITY`]
    /// (100,000). Zero keeps no session.
    ///
    /// Kept as a weight floor: every session weighs at least the byte budget
    /// divided by this bound, so the store never holds more sessions than
    /// this, and holds fewer when they are large.
    ///
    /// ```
    /// # use tower_httpsession::MemoryStore;
    /// let store = MemoryStore::builder().with_max_sessions(10_000).build();
    /// # let _ = store;
    /// ```
    pub fn with_max_sessions(mut self, sessions: u64) -> Self {
        self.max_sessions = sessions;
        self
    }

    /// The store.
    #[must_use]
    pub fn build(self) -> MemoryStore {
        // Every session weighs at least the floor, and the capacity is
        // `max_sessions` floors at most (a budget smaller by the remainder),
        // so no more than `max_sessions` sessions fit.
        let (capacity, floor) = match self.max_sessions {
            0 => (0, u32::MAX),
            sessions => {
                let floor = u32::try_from(self.max_bytes / sessions)
                    .unwrap_or(u32::MAX)
                    .max(1);
                let most = u64::from(floor).saturating_mul(sessions);
                (self.max_bytes.min(most), floor)
            }
        };
        let index = Arc::new(principals::Index::new());
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(move |key: &StoreKey, record: &Arc<Record>| weight(key, record).max(floor))
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilExpiry)
            .eviction_listener(index.listener())
            .build();
        MemoryStore {
            cache,
            index,
            max_bytes: self.max_bytes,
            max_sessions: self.max_sessions,
        }
    }
}

/// A session's estimated heap footprint in bytes, saturating at
/// `u32::MAX` (4 GiB; the default limits allow at most about 1 GiB).
pub(super) fn weight(key: &StoreKey, record: &Record) -> u32 {
    let attributes = record
        .attributes
        .iter()
        .fold(0_usize, |sum, (name, value)| {
            sum.saturating_add(ATTRIBUTE_OVERHEAD)
                .saturating_add(name.len())
                .saturating_add(value.len())
        });
    let named = record.principal.as_ref().map_or(0, |p| p.as_str().len())
        + record.label.as_ref().map_or(0, |l| l.as_str().len());
    let bytes = SESSION_OVERHEAD
        .saturating_add(key.as_str().len())
        .saturating_add(named)
        .saturating_add(attributes);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::memory::tests::{record, sized};

    #[test]
    fn a_session_weighs_its_names_and_values_plus_overheads() {
        let key = StoreKey::random().unwrap();
        let empty = weight(&key, &record(Duration::from_secs(60)));
        assert_eq!(
            empty as usize,
            SESSION_OVERHEAD + key.as_str().len(),
            "an empty session"
        );
        let one = weight(&key, &sized(1_000));
        assert_eq!(
            (one - empty) as usize,
            ATTRIBUTE_OVERHEAD + "profile".len() + 1_000
        );
    }
}
