//! The embedded store: bounded, in this process, on a concurrent cache.
//!
//! Sessions live in a [`moka`] cache bounded by a number of sessions, with the
//! least recently used evicted first and each record dropped at its own
//! expiry. Each write is atomic per session (the cache's per-key
//! compute), so concurrent requests of one session keep every change.
//!
//! It is the default because it needs nothing, but it is not shared: with
//! several instances behind a balancer use the Redis or PostgreSQL store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use time::OffsetDateTime;

use super::{
    Applied, ChangeSet, Created, PartialRecord, Record, SessionStore, StoreError, StoreHealth,
    StoreKey, Swap, VerifierHash,
};

/// The default number of sessions a [`MemoryStore`] holds.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// A bounded in-process store. Clones share one cache.
///
/// ```
/// use tower_httpsession::MemoryStore;
///
/// let store = MemoryStore::new(10_000); // at most 10,000 sessions
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<StoreKey, Arc<Record>>,
    capacity: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("sessions", &self.cache.entry_count())
            .finish()
    }
}

impl Default for MemoryStore {
    /// A store of at most [`DEFAULT_CAPACITY`] sessions.
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

/// Each record expires at its own `expires_at`.
struct UntilExpiry;

fn remaining(record: &Record) -> Duration {
    let left = record.expires_at - OffsetDateTime::now_utc();
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

impl Expiry<StoreKey, Arc<Record>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &StoreKey,
        record: &Arc<Record>,
        _: Instant,
    ) -> Option<Duration> {
        Some(remaining(record))
    }

    fn expire_after_update(
        &self,
        _: &StoreKey,
        record: &Arc<Record>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(remaining(record))
    }
}

fn live(record: &Record) -> bool {
    record.expires_at > OffsetDateTime::now_utc()
}

impl MemoryStore {
    /// A store of at most `capacity` sessions; past it, the least recently
    /// used session is evicted.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(UntilExpiry)
            .build();
        Self { cache, capacity }
    }

    /// How many sessions the store holds; approximate while writes are in
    /// flight.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Whether the store holds no session.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        Ok(self
            .cache
            .get(key)
            .filter(|r| live(r))
            .map(|r| Record::clone(&r)))
    }

    async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        let Some(whole) = self.cache.get(key).filter(|r| live(r)) else {
            return Ok(None);
        };
        // Copy the metadata and the named values only: a large session's
        // other values stay where they are.
        let attributes = names
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), whole.attributes.get(*name)?.clone())))
            .collect();
        Ok(Some(PartialRecord {
            record: Record {
                verifier: whole.verifier,
                created: whole.created,
                last_accessed: whole.last_accessed,
                max_inactive: whole.max_inactive,
                expires_at: whole.expires_at,
                attributes,
            },
            attribute_count: Some(whole.attributes.len()),
        }))
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let mut stored = false;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(entry) if live(entry.value()) => Op::Nop,
                _ => {
                    stored = true;
                    Op::Put(Arc::new(record.clone()))
                }
            });
        Ok(if stored {
            Created::Stored
        } else {
            Created::KeyTaken
        })
    }

    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        let mut outcome = Applied::Gone;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(entry) if live(entry.value()) => {
                    let mut record = Record::clone(entry.value());
                    outcome = changes.apply_checked(&mut record);
                    if outcome == Applied::Written {
                        Op::Put(Arc::new(record))
                    } else {
                        Op::Nop
                    }
                }
                Some(_) => Op::Remove,
                None => Op::Nop,
            });
        Ok(outcome)
    }

    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        let mut outcome = Swap::Gone;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(entry) if live(entry.value()) => {
                    if !verifier.matches(&entry.value().verifier) {
                        return Op::Nop;
                    }
                    let current = entry.value().attributes.get(name).map(String::as_str);
                    if current != expected {
                        outcome = Swap::Mismatch {
                            current: current.map(str::to_owned),
                        };
                        return Op::Nop;
                    }
                    let mut record = Record::clone(entry.value());
                    match new {
                        Some(value) => record.attributes.insert(name.to_owned(), value.to_owned()),
                        None => record.attributes.remove(name),
                    };
                    outcome = Swap::Swapped;
                    Op::Put(Arc::new(record))
                }
                Some(_) => Op::Remove,
                None => Op::Nop,
            });
        Ok(outcome)
    }

    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(entry) if verifier.matches(&entry.value().verifier) => Op::Remove,
                Some(entry) if !live(entry.value()) => Op::Remove,
                _ => Op::Nop,
            });
        Ok(())
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth::measure("memory", async { Ok(Some(self.cache.entry_count())) }).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn record(expires_in: Duration) -> Record {
        let now = crate::store::now();
        Record {
            verifier: VerifierHash::random().unwrap(),
            created: now,
            last_accessed: now,
            max_inactive: expires_in,
            expires_at: now + expires_in,
            attributes: HashMap::new(),
        }
    }

    #[tokio::test]
    async fn capacity_bounds_the_number_of_sessions() {
        let store = MemoryStore::new(100);
        for _ in 0..1_000 {
            let key = StoreKey::random().unwrap();
            assert_eq!(
                store
                    .create(&key, &record(Duration::from_secs(60)))
                    .await
                    .unwrap(),
                Created::Stored
            );
        }
        assert!(store.len() <= 100, "{}", store.len());
    }

    #[tokio::test]
    async fn least_recently_used_is_evicted_first() {
        let store = MemoryStore::new(10);
        let keep = StoreKey::random().unwrap();
        let _ = store
            .create(&keep, &record(Duration::from_secs(60)))
            .await
            .unwrap();
        for _ in 0..50 {
            assert!(store.load(&keep).await.unwrap().is_some());
            let key = StoreKey::random().unwrap();
            let _ = store
                .create(&key, &record(Duration::from_secs(60)))
                .await
                .unwrap();
            store.cache.run_pending_tasks();
        }
        assert!(store.load(&keep).await.unwrap().is_some());
    }
}
