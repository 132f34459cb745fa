//! The embedded store: bounded by bytes, in this process, on a concurrent
//! cache.
//!
//! Sessions live in a [`moka`] cache. Each write is atomic per session (the
//! cache's per-key compute), so concurrent requests of one session keep
//! every change, and each record is dropped at its own expiry.
//!
//! It is the default because it needs nothing, but it is not shared: with
//! several instances behind a balancer use the Redis or PostgreSQL store.
//!
//! # Bounds
//!
//! The store is bounded by the memory its sessions take, not by their
//! number alone: at most [`DEFAULT_MAX_BYTES`] (64 MiB) by default, set with
//! [`MemoryStoreBuilder::with_max_bytes`]. Each session weighs an estimate
//! of its heap footprint: about 600 bytes for the record, its key and the
//! cache's entry, plus, for each attribute, its name and value and about 160
//! bytes for the map entry and the two strings. Those overheads were
//! measured: the process grew by about 580 bytes per empty session and 165
//! bytes per extra small attribute.
//!
//! A second bound caps the number of sessions, at most [`DEFAULT_CAPACITY`]
//! (100,000) by default, set with [`MemoryStoreBuilder::with_max_sessions`].
//! The cache has one capacity, so the count bound is a weight floor: every
//! session weighs at least the byte budget divided by the session bound.
//! With the defaults that floor is 671 bytes, about what an empty session
//! takes, so a store of small sessions holds up to 100,000 of them and a
//! store of large ones holds 64 MiB of them (64 sessions of 1 MiB).
//!
//! 64 MiB is a figure a small server survives while it still keeps 100,000
//! small sessions. Plan for the process to hold up to twice the budget,
//! with the cache's own upkeep (below) and the allocator's slack: churning
//! sessions of 256 KiB to 1 MiB through a full store, the test process grew
//! by 74 to 85 MiB in five runs, and stayed there.
//!
//! The budget holds once the cache has done its upkeep, which runs at least
//! every 64 writes: the sessions written since the last run may sit above it
//! for that long. A session that alone weighs more than the budget is not
//! kept at all; its next request finds no session.
//!
//! # Eviction, and what a flood does
//!
//! Past the budget the least recently used sessions are evicted first. A
//! flood of new sessions (a burst of logins, or a client that never sends
//! its cookie back) therefore evicts the least recently used sessions,
//! logged in or not: a session used between the flood's requests stays, one
//! left idle while the flood fills the budget is lost, and its user has to
//! log in again.
//!
//! The cache's other policy, TinyLFU, would protect frequently used
//! sessions from a flood, but it admits a newcomer only if it has been seen
//! more often than the sessions it would evict. A new session has never
//! been seen, so once the store is full it would refuse every new session
//! while [`create`](SessionStore::create) reports it stored: every login
//! during and after the flood would fail. The store keeps least recently
//! used eviction, which always keeps the new session.
//!
//! A deployment that must keep its logged-in users through a flood keeps
//! its sessions in Redis or PostgreSQL (the store for several instances
//! behind a balancer anyway), or raises the budget to what the flood can
//! fill. The memory store is for one instance.

mod bounds;
mod principals;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;
use time::OffsetDateTime;

use self::principals::Admission;
use super::{
    Applied, ChangeSet, Created, PartialRecord, Principal, PrincipalSession, Record, Revocation,
    SessionLimit, SessionStore, StoreError, StoreHealth, StoreKey, Swap, VerifierHash,
};

pub use self::bounds::MemoryStoreBuilder;

/// The default bound on the number of sessions a [`MemoryStore`] holds.
pub const DEFAULT_CAPACITY: u64 = 100_000;

/// The default bound on the estimated bytes a [`MemoryStore`]'s sessions
/// take: 64 MiB. See the [module docs](self) for why.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// A bounded in-process store. Clones share one cache.
///
/// It holds sessions up to a byte budget ([`DEFAULT_MAX_BYTES`], 64 MiB, by
/// default) and up to a number of sessions ([`DEFAULT_CAPACITY`], 100,000,
/// by default), and evicts the least recently used past either. The
/// [module docs](self) say how a session is weighed and what a flood of new
/// sessions does.
///
/// ```
/// use tower_httpsession::MemoryStore;
///
/// // At most 256 MiB of sessions, and at most 500,000 of them.
/// let store = MemoryStore::builder()
///     .with_max_bytes(256 * 1024 * 1024)
///     .with_max_sessions(500_000)
///     .build();
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<StoreKey, Arc<Record>>,
    index: Arc<principals::Index>,
    max_bytes: u64,
    max_sessions: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("max_sessions", &self.max_sessions)
            .field("bytes", &self.cache.weighted_size())
            .field("sessions", &self.cache.entry_count())
            .finish()
    }
}

impl Default for MemoryStore {
    /// A store of at most [`DEFAULT_MAX_BYTES`] and [`DEFAULT_CAPACITY`]
    /// sessions.
    fn default() -> Self {
        Self::builder().build()
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
    /// A store of at most `capacity` sessions within the default byte budget
    /// ([`DEFAULT_MAX_BYTES`]); past either, the least recently used session
    /// is evicted. [`builder`](Self::builder) sets both bounds.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self::builder().with_max_sessions(capacity).build()
    }

    /// A builder for a store with other bounds than the defaults.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder::default()
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

    /// The estimated bytes the held sessions take, as weighed against the
    /// budget (a small session counts at least the weight floor);
    /// approximate while writes are in flight.
    #[must_use]
    pub fn estimated_bytes(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    /// How many sessions the principal index holds for `principal`,
    /// including those that ended since the index last looked: what the
    /// tests check stays bounded.
    #[must_use]
    pub fn principal_index_len(&self, principal: &Principal) -> usize {
        self.cache.run_pending_tasks();
        self.index.lock(&self.cache).len(principal)
    }

    fn create_unbound(&self, key: &StoreKey, record: &Record) -> bool {
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
        stored
    }

    fn apply_unbound(&self, key: &StoreKey, changes: &ChangeSet) -> (Applied, Option<Principal>) {
        let mut outcome = Applied::Gone;
        let mut previous = None;
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|existing| match existing {
                Some(entry) if live(entry.value()) => {
                    let mut record = Record::clone(entry.value());
                    previous.clone_from(&record.principal);
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
        (outcome, previous)
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
                principal: whole.principal.clone(),
                label: whole.label.clone(),
            },
            attribute_count: Some(whole.attributes.len()),
        }))
    }

    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        let Some(principal) = &record.principal else {
            self.index.tidy(&self.cache);
            return Ok(if self.create_unbound(key, record) {
                Created::Stored
            } else {
                Created::KeyTaken
            });
        };
        let mut index = self.index.lock(&self.cache);
        if self.cache.get(key).is_some_and(|r| live(&r)) {
            return Ok(Created::KeyTaken);
        }
        if let Admission::Refused = index.admit(&self.cache, principal, key, limit) {
            return Ok(Created::LimitReached);
        }
        if !self.create_unbound(key, record) {
            return Ok(Created::KeyTaken);
        }
        index.enter(principal, key, None);
        Ok(Created::Stored)
    }

    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        let Some(binding) = changes.binding() else {
            return Ok(self.apply_unbound(key, changes).0);
        };
        let mut index = self.index.lock(&self.cache);
        // Check the guards first: a request that may not write must not
        // evict anybody.
        let Some(current) = self.cache.get(key).filter(|r| live(r)) else {
            return Ok(Applied::Gone);
        };
        let mut trial = Record::clone(&current);
        match changes.apply_checked(&mut trial) {
            Applied::Written => {}
            refused => return Ok(refused),
        }
        let principal = &binding.principal;
        if let Admission::Refused = index.admit(&self.cache, principal, key, binding.limit.as_ref())
        {
            return Ok(Applied::LimitReached);
        }
        let (outcome, previous) = self.apply_unbound(key, changes);
        if outcome == Applied::Written {
            index.enter(principal, key, previous.as_ref());
        }
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

    fn supports_principals(&self) -> bool {
        true
    }

    async fn principal_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        Ok(self.index.lock(&self.cache).list(&self.cache, principal))
    }

    async fn revoke(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        Ok(self
            .index
            .lock(&self.cache)
            .revoke(&self.cache, principal, which))
    }
}

#[cfg(test)]
mod tests;
