//! The memory store's principal index.
//!
//! One map from each principal to the keys of its sessions, behind one
//! mutex. Every operation that binds, lists or revokes takes the mutex for
//! its whole run, so bindings of one store are serialized and a limit holds
//! however many logins race. Requests that don't bind never take it.
//!
//! The cache tells the index when a bound session leaves it (expired,
//! evicted, deleted) through its eviction listener, which only queues the
//! key: the listener may run inside a cache call made while the mutex is
//! held. The queue is drained under the mutex by every index operation and
//! every `create`, so the index holds a principal's live sessions plus the
//! sessions that left since the last drain, and a principal whose sessions
//! all ended leaves the map.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::live;
use crate::store::{
    LimitPolicy, Principal, PrincipalSession, Record, Revocation, SessionLimit, StoreKey,
};

/// Below this many entries, a principal without a limit is never pruned
/// on binding (departures still apply).
const PRUNE_FLOOR: usize = 16;

/// A bound session that left the cache.
type Departure = (Principal, StoreKey);

pub(super) struct Index {
    state: Mutex<State>,
    departures: mpsc::Sender<Departure>,
}

struct State {
    by_principal: HashMap<Principal, HashSet<StoreKey>>,
    departures: mpsc::Receiver<Departure>,
}

/// What a binding may do, decided under the index lock.
pub(super) enum Admission {
    /// Write it (the least recently used sessions were evicted if the
    /// limit asked for room).
    Admitted,
    /// The principal holds its limit and the policy refuses new sessions.
    Refused,
}

impl Index {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            state: Mutex::new(State {
                by_principal: HashMap::new(),
                departures: rx,
            }),
            departures: tx,
        }
    }

    /// The eviction listener's end of the queue.
    pub(super) fn listener(&self) -> impl Fn(Arc<StoreKey>, Arc<Record>, RemovalCause) + use<> {
        let tx = Mutex::new(self.departures.clone());
        move |key, record, cause| {
            // A replaced record is the same session written again.
            if cause == RemovalCause::Replaced {
                return;
            }
            if let (Some(principal), Ok(tx)) = (&record.principal, tx.lock()) {
                let _ = tx.send((principal.clone(), StoreKey::clone(&key)));
            }
        }
    }

    /// The locked index, with the departures queued so far applied.
    pub(super) fn lock(&self, cache: &Cache<StoreKey, Arc<Record>>) -> Locked<'_> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.apply_departures(cache);
        Locked { state }
    }

    /// Applies the queued departures if nobody holds the index: what every
    /// `create` does, so that a principal who never comes back leaves the
    /// map once its sessions ended.
    pub(super) fn tidy(&self, cache: &Cache<StoreKey, Arc<Record>>) {
        if let Ok(mut state) = self.state.try_lock() {
            state.apply_departures(cache);
        }
    }
}

/// Whether the cache holds a live session under `key` bound to `principal`.
fn bound_to(cache: &Cache<StoreKey, Arc<Record>>, key: &StoreKey, principal: &Principal) -> bool {
    cache
        .get(key)
        .is_some_and(|r| live(&r) && r.principal.as_ref() == Some(principal))
}

impl State {
    fn apply_departures(&mut self, cache: &Cache<StoreKey, Arc<Record>>) {
        let departed: Vec<Departure> = self.departures.try_iter().collect();
        for (principal, key) in departed {
            if !bound_to(cache, &key, &principal) {
                self.remove(&principal, &key);
            }
        }
    }

    fn remove(&mut self, principal: &Principal, key: &StoreKey) {
        if let Some(keys) = self.by_principal.get_mut(principal) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_principal.remove(principal);
            }
        }
    }
}

pub(super) struct Locked<'a> {
    state: MutexGuard<'a, State>,
}

impl Locked<'_> {
    /// The live sessions of `principal` other than `except`, pruning the
    /// entries that name none.
    fn live_sessions(
        &mut self,
        cache: &Cache<StoreKey, Arc<Record>>,
        principal: &Principal,
        except: Option<&StoreKey>,
    ) -> Vec<(StoreKey, Arc<Record>)> {
        let Some(keys) = self.state.by_principal.get_mut(principal) else {
            return Vec::new();
        };
        let mut found = Vec::with_capacity(keys.len());
        keys.retain(|key| match cache.get(key) {
            Some(record) if live(&record) && record.principal.as_ref() == Some(principal) => {
                if except != Some(key) {
                    found.push((key.clone(), record));
                }
                true
            }
            _ => false,
        });
        if keys.is_empty() {
            self.state.by_principal.remove(principal);
        }
        found
    }

    /// Makes room for the session under `key` among `principal`'s sessions:
    /// evicts the least recently used past the limit, or refuses.
    pub(super) fn admit(
        &mut self,
        cache: &Cache<StoreKey, Arc<Record>>,
        principal: &Principal,
        key: &StoreKey,
        limit: Option<&SessionLimit>,
    ) -> Admission {
        let Some(limit) = limit else {
            // No limit to check the others against: prune now and then, when
            // the entry count reaches a power of two, so that entries whose
            // departure never came (a session that expired before the cache
            // held it) cost amortized constant time and at most as many
            // entries as there are live sessions, plus `PRUNE_FLOOR`.
            let held = self.len(principal);
            if held >= PRUNE_FLOOR && held.is_power_of_two() {
                self.live_sessions(cache, principal, None);
            }
            return Admission::Admitted;
        };
        let mut others = self.live_sessions(cache, principal, Some(key));
        let max = usize::try_from(limit.max()).unwrap_or(usize::MAX);
        if others.len() < max {
            return Admission::Admitted;
        }
        match limit.policy() {
            LimitPolicy::RefuseNewLogin => Admission::Refused,
            LimitPolicy::EvictLeastRecentlyUsed => {
                others.sort_by_key(|(_, record)| (record.last_accessed, record.created));
                let excess = others.len() + 1 - max;
                for (victim, _) in others.into_iter().take(excess) {
                    cache.invalidate(&victim);
                    self.state.remove(principal, &victim);
                }
                Admission::Admitted
            }
        }
    }

    /// Records that the session under `key` is now bound to `principal`,
    /// and no longer to `previous` if it was bound to another one.
    pub(super) fn enter(
        &mut self,
        principal: &Principal,
        key: &StoreKey,
        previous: Option<&Principal>,
    ) {
        if let Some(previous) = previous.filter(|p| *p != principal) {
            self.state.remove(previous, key);
        }
        self.state
            .by_principal
            .entry(principal.clone())
            .or_default()
            .insert(key.clone());
    }

    /// The live sessions of `principal`.
    pub(super) fn list(
        &mut self,
        cache: &Cache<StoreKey, Arc<Record>>,
        principal: &Principal,
    ) -> Vec<PrincipalSession> {
        self.live_sessions(cache, principal, None)
            .into_iter()
            .map(|(key, record)| {
                PrincipalSession::new(
                    key,
                    record.created,
                    record.last_accessed,
                    record.expires_at,
                    record.label.clone(),
                )
            })
            .collect()
    }

    /// Deletes the sessions of `principal` that `which` names.
    pub(super) fn revoke(
        &mut self,
        cache: &Cache<StoreKey, Arc<Record>>,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> u64 {
        let mut revoked = 0;
        for (key, _) in self.live_sessions(cache, principal, None) {
            if which.includes(&key) {
                cache.invalidate(&key);
                self.state.remove(principal, &key);
                revoked += 1;
            }
        }
        revoked
    }

    /// How many keys the index holds for `principal`, live or not.
    pub(super) fn len(&self, principal: &Principal) -> usize {
        self.state
            .by_principal
            .get(principal)
            .map_or(0, HashSet::len)
    }
}
