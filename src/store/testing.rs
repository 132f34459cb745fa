//! The behavioural suite: the store contract as executable checks.
//!
//! Every store in this crate runs it, and a store written elsewhere can too.
//! Each check is a public async function that panics with a message on a
//! broken promise; [`store_suite!`](crate::store_suite) turns the whole list
//! into one `#[tokio::test]` per check:
//!
//! ```
//! use tower_httpsession::MemoryStore;
//!
//! async fn make_store() -> MemoryStore {
//!     MemoryStore::default()
//! }
//!
//! tower_httpsession::store_suite!(make_store);
//! # fn main() {}
//! ```
//!
//! The calling crate needs `tokio` (with the `macros` and `rt-multi-thread`
//! features) as a dev-dependency. Checks use fresh random keys, so they can
//! run in parallel against one store.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::store::{
    Applied, ChangeSet, Created, HealthStatus, PartialRecord, Principal, PrincipalSession, Record,
    Revocation, SessionLimit, SessionStore, StoreError, StoreHealth, StoreKey, Swap, Touch,
    VerifierHash, now,
};

#[path = "testing_principals.rs"]
mod principals;
pub use self::principals::*;

/// A store kept together with a guard that cleans up after a check (drops
/// a test schema, deletes a key prefix): the guard lives exactly as long as
/// the store, and every call goes to the store.
#[derive(Debug)]
pub struct Guarded<S, G> {
    store: S,
    _guard: G,
}

impl<S, G> Guarded<S, G> {
    /// `store`, with `guard` dropped after it.
    pub fn new(store: S, guard: G) -> Self {
        Self {
            store,
            _guard: guard,
        }
    }

    /// The store itself.
    pub fn store(&self) -> &S {
        &self.store
    }
}

#[async_trait]
impl<S: SessionStore, G: fmt::Debug + Send + Sync + 'static> SessionStore for Guarded<S, G> {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.store.load(key).await
    }
    async fn load_some(
        &self,
        key: &StoreKey,
        names: &[&str],
    ) -> Result<Option<PartialRecord>, StoreError> {
        self.store.load_some(key, names).await
    }
    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        self.store.create(key, record, limit).await
    }
    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        self.store.apply(key, changes).await
    }
    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        self.store
            .compare_and_set(key, verifier, name, expected, new)
            .await
    }
    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        self.store.delete(key, verifier).await
    }
    async fn health(&self) -> StoreHealth {
        self.store.health().await
    }
    fn supports_principals(&self) -> bool {
        self.store.supports_principals()
    }
    async fn principal_sessions(
        &self,
        principal: &Principal,
    ) -> Result<Vec<PrincipalSession>, StoreError> {
        self.store.principal_sessions(principal).await
    }
    async fn revoke(
        &self,
        principal: &Principal,
        which: Revocation<'_>,
    ) -> Result<u64, StoreError> {
        self.store.revoke(principal, which).await
    }
}

/// A fresh random key, with the hash of a fresh random verifier.
#[must_use]
pub fn fresh_key() -> (VerifierHash, StoreKey) {
    let rng = "the OS random number generator works";
    (
        VerifierHash::random().expect(rng),
        StoreKey::random().expect(rng),
    )
}

/// A record with the verifier hash `id` that lives for `ttl`, with
/// `attributes`.
#[must_use]
pub fn record(id: &VerifierHash, ttl: Duration, attributes: &[(&str, &str)]) -> Record {
    let now = now();
    Record {
        verifier: *id,
        created: now,
        last_accessed: now,
        max_inactive: ttl,
        expires_at: now + ttl,
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        principal: None,
        label: None,
    }
}

/// `record` as it stands `by` later: its creation, last access and expiry
/// moved back by `by`, as if that much time had passed since it was
/// written. For a store, which compares these times with its own clock,
/// writing an aged record is the same as waiting: one aged past its expiry
/// is expired at once.
fn aged(mut record: Record, by: Duration) -> Record {
    record.created -= by;
    record.last_accessed -= by;
    record.expires_at -= by;
    record
}

async fn stored(store: &dyn SessionStore, attributes: &[(&str, &str)]) -> (VerifierHash, StoreKey) {
    let (id, key) = fresh_key();
    let created = store
        .create(
            &key,
            &record(&id, Duration::from_secs(600), attributes),
            None,
        )
        .await
        .expect("create");
    assert_eq!(created, Created::Stored);
    (id, key)
}

async fn attributes(store: &dyn SessionStore, key: &StoreKey) -> HashMap<String, String> {
    store
        .load(key)
        .await
        .expect("load")
        .expect("the session exists")
        .attributes
}

fn set(pairs: &[(&str, &str)]) -> ChangeSet {
    let mut changes = ChangeSet::new();
    for (k, v) in pairs {
        changes.set_attribute(*k, *v);
    }
    changes
}

/// Loading a key that was never stored gives `None`.
pub async fn load_missing_is_none(store: &dyn SessionStore) {
    let (_, key) = fresh_key();
    assert!(store.load(&key).await.expect("load").is_none());
}

/// A created record loads back equal, field by field.
pub async fn create_then_load_round_trips(store: &dyn SessionStore) {
    let (id, key) = fresh_key();
    let rec = record(
        &id,
        Duration::from_secs(600),
        &[("user", "\"alice\""), ("n", "1")],
    );
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded, rec, "the record must round-trip exactly");
    assert!(id.matches(&loaded.verifier));
}

/// `load_some` gives the metadata and exactly the named attributes that
/// exist, and treats a missing or expired session as `None`.
pub async fn load_some_reads_only_the_named(store: &dyn SessionStore) {
    let (id, key) = fresh_key();
    let rec = record(
        &id,
        Duration::from_secs(600),
        &[("a", "1"), ("b", "\"two\""), ("c", "[3]")],
    );
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );

    let some = store
        .load_some(&key, &["a", "c", "absent"])
        .await
        .expect("load_some")
        .expect("stored");
    let mut expected = rec.clone();
    expected.attributes.remove("b");
    assert_eq!(
        some.record, expected,
        "metadata and the named attributes, nothing else"
    );
    assert!(
        matches!(some.attribute_count, None | Some(3)),
        "{:?}",
        some.attribute_count
    );

    let meta = store
        .load_some(&key, &[])
        .await
        .expect("load_some")
        .expect("stored");
    assert!(meta.record.attributes.is_empty());
    assert!(id.matches(&meta.record.verifier));
    assert_eq!(meta.record.expires_at, rec.expires_at);

    let (_, missing) = fresh_key();
    assert!(
        store
            .load_some(&missing, &["a"])
            .await
            .expect("load_some")
            .is_none()
    );

    let (id, key) = fresh_key();
    let expired = aged(
        record(&id, Duration::from_secs(60), &[("a", "1")]),
        Duration::from_secs(61),
    );
    assert_eq!(
        store.create(&key, &expired, None).await.expect("create"),
        Created::Stored
    );
    assert!(
        store
            .load_some(&key, &["a"])
            .await
            .expect("load_some")
            .is_none(),
        "an expired record was loaded"
    );
}

/// `create` on a taken key answers `KeyTaken` and keeps the first record.
pub async fn create_never_overwrites(store: &dyn SessionStore) {
    let (id, key) = stored(store, &[("owner", "\"first\"")]).await;
    let second = record(&id, Duration::from_secs(600), &[("owner", "\"second\"")]);
    assert_eq!(
        store.create(&key, &second, None).await.expect("create"),
        Created::KeyTaken
    );
    assert_eq!(attributes(store, &key).await["owner"], "\"first\"");
}

/// `apply` writes the delta and leaves other attributes alone.
pub async fn apply_writes_only_the_delta(store: &dyn SessionStore) {
    let (_, key) = stored(store, &[("keep", "1"), ("change", "2"), ("drop", "3")]).await;
    let mut changes = set(&[("change", "20"), ("add", "4")]);
    changes.remove_attribute("drop");
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let attrs = attributes(store, &key).await;
    let mut names: Vec<_> = attrs.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["add", "change", "keep"]);
    assert_eq!(attrs["keep"], "1");
    assert_eq!(attrs["change"], "20");
    assert_eq!(attrs["add"], "4");
}

/// Two change sets on different attributes, applied one after the other
/// from the same loaded state, both survive.
pub async fn interleaved_applies_keep_both(store: &dyn SessionStore) {
    let (_, key) = stored(store, &[("base", "0")]).await;
    let first = set(&[("a", "1")]);
    let second = set(&[("b", "2")]);
    assert_eq!(
        store.apply(&key, &first).await.expect("apply"),
        Applied::Written
    );
    assert_eq!(
        store.apply(&key, &second).await.expect("apply"),
        Applied::Written
    );
    let attrs = attributes(store, &key).await;
    assert_eq!(
        (
            attrs["a"].as_str(),
            attrs["b"].as_str(),
            attrs["base"].as_str()
        ),
        ("1", "2", "0")
    );
}

/// `apply` on a deleted session answers `Gone` and does not bring it back.
pub async fn apply_never_resurrects(store: &dyn SessionStore) {
    let (id, key) = stored(store, &[("a", "1")]).await;
    store.delete(&key, &id).await.expect("delete");
    let mut changes = set(&[("b", "2")]);
    let at = now();
    changes.set_touch(Some(Touch {
        last_accessed: at,
        absolute_timeout: None,
        interval: Some(Duration::ZERO),
    }));
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Gone
    );
    assert!(
        store.load(&key).await.expect("load").is_none(),
        "apply resurrected a deleted session"
    );
}

/// `apply` on a key never stored answers `Gone` and creates nothing.
pub async fn apply_on_missing_is_gone(store: &dyn SessionStore) {
    let (_, key) = fresh_key();
    assert_eq!(
        store.apply(&key, &set(&[("a", "1")])).await.expect("apply"),
        Applied::Gone
    );
    assert!(store.load(&key).await.expect("load").is_none());
}

/// Metadata changes land: idle timeout, verifier, touch.
pub async fn apply_writes_metadata(store: &dyn SessionStore) {
    let (_, key) = stored(store, &[("a", "1")]).await;
    let new_id = VerifierHash::random().expect("rng");
    let at = now() + Duration::from_secs(5);
    let mut changes = ChangeSet::new();
    changes.set_max_inactive(Some(Duration::from_secs(1234)));
    changes.set_new_verifier(Some(new_id));
    changes.set_touch(Some(Touch {
        last_accessed: at,
        absolute_timeout: None,
        interval: Some(Duration::ZERO),
    }));
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded.max_inactive, Duration::from_secs(1234));
    assert!(
        new_id.matches(&loaded.verifier),
        "the new verifier must be stored"
    );
    assert_eq!(loaded.last_accessed, at);
    assert_eq!(loaded.expires_at, at + Duration::from_secs(1234));
    assert_eq!(loaded.attributes["a"], "1");
}

/// A record past its expiry is not loaded, and `apply` treats it as gone.
///
/// The record is written a second past its expiry, so the check waits for
/// nothing; [`touch_extends_expiry`] sees a record expire by the store's
/// own clock.
pub async fn expired_records_are_gone(store: &dyn SessionStore) {
    let (id, key) = fresh_key();
    let rec = aged(
        record(&id, Duration::from_secs(60), &[("a", "1")]),
        Duration::from_secs(61),
    );
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    assert!(
        store.load(&key).await.expect("load").is_none(),
        "an expired record was loaded"
    );
    assert_eq!(
        store.apply(&key, &set(&[("b", "2")])).await.expect("apply"),
        Applied::Gone
    );
    assert!(store.load(&key).await.expect("load").is_none());
}

/// A touch moves the expiry: a record kept alive by touches outlives its
/// first deadline.
///
/// Two records share a first deadline and only one is touched before it.
/// The check then polls, on the store's own clock (a Redis or PostgreSQL
/// server's), until the untouched one has expired, and the touched one must
/// still load. Nothing is timed: a slow machine only makes the polling
/// longer.
pub async fn touch_extends_expiry(store: &dyn SessionStore) {
    let mut first = Duration::from_millis(500);
    let (touched, untouched) = loop {
        let (id, touched) = fresh_key();
        let (other, untouched) = fresh_key();
        let rec = record(&id, first, &[("a", "1")]);
        let twin = Record {
            verifier: other,
            ..rec.clone()
        };
        for (key, rec) in [(&touched, &rec), (&untouched, &twin)] {
            assert_eq!(
                store.create(key, rec, None).await.expect("create"),
                Created::Stored
            );
        }
        let mut touch = ChangeSet::new();
        touch.set_max_inactive(Some(Duration::from_secs(60)));
        touch.set_touch(Some(Touch {
            last_accessed: now(),
            absolute_timeout: None,
            interval: Some(Duration::ZERO),
        }));
        match store.apply(&touched, &touch).await.expect("apply") {
            Applied::Written => break (touched, untouched),
            // The machine took longer than the first deadline to get from
            // the create to the touch: nothing was checked. Again, with a
            // longer one.
            Applied::Gone if first < Duration::from_secs(8) => first *= 4,
            other => panic!("the touch of a live record answered {other:?}"),
        }
    };
    let deadline = Instant::now() + first + Duration::from_secs(30);
    while store.load(&untouched).await.expect("load").is_some() {
        assert!(
            Instant::now() < deadline,
            "a record outlived its expiry by 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.load(&touched).await.expect("load").is_some(),
        "the touch did not extend the expiry"
    );
}

/// A touch moves the expiry to the earlier of the idle deadline (with the
/// idle timeout the change sets, if any) and the absolute one, counted from
/// the stored creation time.
pub async fn touch_sets_the_expiry(store: &dyn SessionStore) {
    let (_, key) = stored(store, &[("a", "1")]).await;
    let created = store
        .load(&key)
        .await
        .expect("load")
        .expect("stored")
        .created;
    let at = created + Duration::from_secs(5);
    let touch = |absolute_timeout| {
        let mut changes = ChangeSet::new();
        changes.set_touch(Some(Touch {
            last_accessed: at,
            absolute_timeout,
            interval: Some(Duration::ZERO),
        }));
        changes
    };
    for (changes, expected) in [
        (touch(None), at + Duration::from_secs(600)),
        (
            touch(Some(Duration::from_secs(3600))),
            at + Duration::from_secs(600),
        ),
        (
            touch(Some(Duration::from_secs(100))),
            created + Duration::from_secs(100),
        ),
        (
            {
                let mut changes = touch(None);
                changes.set_max_inactive(Some(Duration::from_secs(30)));
                changes
            },
            at + Duration::from_secs(30),
        ),
    ] {
        assert_eq!(
            store.apply(&key, &changes).await.expect("apply"),
            Applied::Written
        );
        let loaded = store.load(&key).await.expect("load").expect("stored");
        assert_eq!(loaded.last_accessed, at, "{changes:?}");
        assert_eq!(loaded.expires_at, expected, "{changes:?}");
    }
}

/// A touch within its interval of the stored last access is skipped, unless
/// the change sets metadata; the attributes it carries are written anyway.
pub async fn touch_is_throttled(store: &dyn SessionStore) {
    let (_, key) = stored(store, &[("a", "1")]).await;
    let before = store.load(&key).await.expect("load").expect("stored");
    let touch = |after, interval| Touch {
        last_accessed: before.last_accessed + after,
        absolute_timeout: None,
        interval,
    };
    // The stored idle timeout is 600 s: a twentieth is 30 s.
    let mut changes = set(&[("a", "2")]);
    changes.set_touch(Some(touch(Duration::from_secs(20), None)));
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded.attributes["a"], "2");
    assert_eq!(
        (loaded.last_accessed, loaded.expires_at),
        (before.last_accessed, before.expires_at),
        "a touch before its interval was written"
    );
    let mut changes = set(&[("a", "3")]);
    changes.set_touch(Some(touch(
        Duration::from_secs(20),
        Some(Duration::from_secs(10)),
    )));
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    let at = before.last_accessed + Duration::from_secs(20);
    assert_eq!(loaded.last_accessed, at, "a due touch was skipped");
    assert_eq!(loaded.expires_at, at + Duration::from_secs(600));
    let mut changes = ChangeSet::new();
    changes.set_max_inactive(Some(Duration::from_secs(900)));
    changes.set_touch(Some(touch(Duration::from_secs(21), None)));
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    let at = before.last_accessed + Duration::from_secs(21);
    assert_eq!(
        loaded.last_accessed, at,
        "a metadata change skipped its touch"
    );
    assert_eq!(loaded.expires_at, at + Duration::from_secs(900));
    assert_eq!(loaded.max_inactive, Duration::from_secs(900));
}

/// `apply` with a required verifier hash other than the stored one answers
/// `Gone` and writes nothing; with the stored one it writes.
pub async fn apply_requires_the_verifier(store: &dyn SessionStore) {
    let (id, key) = stored(store, &[("a", "1")]).await;
    let other = VerifierHash::random().expect("rng");
    let mut changes = set(&[("a", "2"), ("b", "2")]);
    changes.require_verifier(Some(other));
    changes.set_new_verifier(Some(other));
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Stale
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded.attributes.len(), 1);
    assert_eq!(loaded.attributes["a"], "1");
    assert!(id.matches(&loaded.verifier), "the verifier was replaced");

    changes.require_verifier(Some(id));
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded.attributes["b"], "2");
    assert!(other.matches(&loaded.verifier));
}

/// `apply` refuses, writing nothing, a change that adds names past the
/// attribute limit; replacing values and adding in place of removed names
/// stay allowed.
pub async fn apply_limits_attributes(store: &dyn SessionStore) {
    let (_, key) = stored(store, &[("a", "1"), ("b", "1")]).await;
    let before = store.load(&key).await.expect("load").expect("stored");
    let limited = |mut changes: ChangeSet, limit| {
        changes.limit_attributes(Some(limit));
        changes.set_touch(Some(Touch {
            last_accessed: before.last_accessed + Duration::from_secs(9),
            absolute_timeout: None,
            interval: None,
        }));
        changes
    };
    assert_eq!(
        store
            .apply(&key, &limited(set(&[("c", "1")]), 2))
            .await
            .expect("apply"),
        Applied::TooManyAttributes
    );
    let loaded = store.load(&key).await.expect("load").expect("stored");
    assert_eq!(loaded, before, "a refused change wrote something");

    assert_eq!(
        store
            .apply(&key, &limited(set(&[("a", "2"), ("b", "2")]), 2))
            .await
            .expect("apply"),
        Applied::Written
    );
    let mut swap = set(&[("c", "3")]);
    swap.remove_attribute("a");
    assert_eq!(
        store.apply(&key, &limited(swap, 2)).await.expect("apply"),
        Applied::Written
    );
    assert_eq!(
        store
            .apply(&key, &limited(set(&[("d", "4"), ("b", "5")]), 3))
            .await
            .expect("apply"),
        Applied::Written
    );
    let attrs = attributes(store, &key).await;
    let mut names: Vec<&str> = attrs.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["b", "c", "d"]);
    assert_eq!(attrs["b"], "5");
}

/// `compare_and_set` swaps on a match, reports the current value on a
/// mismatch, and treats `None` as absent.
pub async fn compare_and_set_semantics(store: &dyn SessionStore) {
    let (id, key) = stored(store, &[("n", "1")]).await;
    let verifier = id;
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "n", Some("1"), Some("2"))
            .await
            .expect("cas"),
        Swap::Swapped
    );
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "n", Some("1"), Some("3"))
            .await
            .expect("cas"),
        Swap::Mismatch {
            current: Some("2".to_owned())
        }
    );
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "fresh", None, Some("1"))
            .await
            .expect("cas"),
        Swap::Swapped
    );
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "fresh", None, Some("9"))
            .await
            .expect("cas"),
        Swap::Mismatch {
            current: Some("1".to_owned())
        }
    );
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "absent", Some("1"), Some("2"))
            .await
            .expect("cas"),
        Swap::Mismatch { current: None }
    );
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "n", Some("2"), None)
            .await
            .expect("cas"),
        Swap::Swapped
    );
    let attrs = attributes(store, &key).await;
    assert!(!attrs.contains_key("n"));
    assert_eq!(attrs["fresh"], "1");
    let (_, missing) = fresh_key();
    assert_eq!(
        store
            .compare_and_set(&missing, &verifier, "n", None, Some("1"))
            .await
            .expect("cas"),
        Swap::Gone
    );
    assert!(store.load(&missing).await.expect("load").is_none());
}

/// 16 concurrent writers of distinct attributes in one session keep all 16.
pub async fn concurrent_distinct_writes_all_kept(store: Arc<dyn SessionStore>) {
    let (_, key) = stored(&*store, &[("base", "0")]).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let changes = set(&[(&format!("k{i}"), &i.to_string())]);
                store.apply(&key, &changes).await.expect("apply")
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), Applied::Written);
    }
    let attrs = attributes(&*store, &key).await;
    for i in 0..16 {
        assert_eq!(
            attrs.get(&format!("k{i}")),
            Some(&i.to_string()),
            "k{i} was lost"
        );
    }
}

/// 32 concurrent compare-and-set increments of one counter keep all 32.
pub async fn concurrent_increments_all_kept(store: Arc<dyn SessionStore>) {
    let (id, key) = stored(&*store, &[("n", "0")]).await;
    let verifier = id;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut current = Some("0".to_owned());
                for _ in 0..1000 {
                    let n: u64 = current
                        .as_deref()
                        .map_or(0, |v| v.parse().expect("a number"));
                    let next = (n + 1).to_string();
                    match store
                        .compare_and_set(&key, &verifier, "n", current.as_deref(), Some(&next))
                        .await
                        .expect("cas")
                    {
                        Swap::Swapped => return,
                        Swap::Mismatch { current: now } => current = now,
                        Swap::Gone => panic!("the session vanished"),
                    }
                }
                panic!("an increment never won its compare-and-set");
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(attributes(&*store, &key).await["n"], "32");
}

/// `delete` removes the record and is idempotent.
pub async fn delete_is_idempotent(store: &dyn SessionStore) {
    let (id, key) = stored(store, &[("a", "1")]).await;
    let verifier = id;
    store.delete(&key, &verifier).await.expect("delete");
    store.delete(&key, &verifier).await.expect("second delete");
    assert!(store.load(&key).await.expect("load").is_none());
    let (_, never) = fresh_key();
    store
        .delete(&never, &verifier)
        .await
        .expect("delete of a missing key");
}

/// Once a session's verifier was replaced (its id changed), every
/// operation that carries the old verifier changes nothing: `apply`
/// answers `Stale`, `compare_and_set` answers `Gone`, `delete` deletes
/// nothing. The new verifier still works for each.
pub async fn stale_verifier_changes_nothing(store: &dyn SessionStore) {
    let (old, key) = stored(store, &[("cart", "1")]).await;
    let new = VerifierHash::random().expect("rng");
    let mut rotation = ChangeSet::new();
    rotation.require_verifier(Some(old));
    rotation.set_new_verifier(Some(new));
    assert_eq!(
        store.apply(&key, &rotation).await.expect("rotate"),
        Applied::Written
    );
    let before = store.load(&key).await.expect("load").expect("stored");

    let mut write = set(&[("cart", "2"), ("added", "1")]);
    write.remove_attribute("gone");
    write.require_verifier(Some(old));
    write.set_touch(Some(Touch {
        last_accessed: before.last_accessed + Duration::from_secs(3600),
        absolute_timeout: None,
        interval: Some(Duration::ZERO),
    }));
    assert_eq!(
        store.apply(&key, &write).await.expect("apply"),
        Applied::Stale
    );
    let mut back = ChangeSet::new();
    back.require_verifier(Some(old));
    back.set_new_verifier(Some(old));
    assert_eq!(
        store.apply(&key, &back).await.expect("apply"),
        Applied::Stale,
        "the old cookie took the session back"
    );
    for (expected, new_value) in [(Some("1"), Some("2")), (None, Some("1")), (Some("1"), None)] {
        let name = if expected.is_some() { "cart" } else { "fresh" };
        assert_eq!(
            store
                .compare_and_set(&key, &old, name, expected, new_value)
                .await
                .expect("cas"),
            Swap::Gone,
            "a swap with the old verifier"
        );
    }
    store.delete(&key, &old).await.expect("delete");
    let after = store.load(&key).await.expect("load").expect("still stored");
    assert_eq!(after, before, "a stale verifier changed the session");
    assert!(new.matches(&after.verifier));

    assert_eq!(
        store
            .compare_and_set(&key, &new, "cart", Some("1"), Some("3"))
            .await
            .expect("cas"),
        Swap::Swapped
    );
    store.delete(&key, &new).await.expect("delete");
    assert!(store.load(&key).await.expect("load").is_none());
}

/// A JSON string of `len` bytes whose two-byte character `é` straddles a
/// cut after the first `cut` bytes (when there is room), so that a store
/// cutting values there must join bytes, not characters.
fn json_of_len(len: usize, cut: usize, fill: char) -> String {
    let inner = len.saturating_sub(2);
    let mut text = String::with_capacity(inner);
    while text.len() + 1 < inner {
        // The opening quote is byte 0: `é` takes bytes `cut - 1` and `cut`.
        if text.len() + 2 == cut && text.len() + 3 <= inner {
            text.push('é');
        } else {
            text.push(fill);
        }
    }
    while text.len() < inner {
        text.push(fill);
    }
    format!("\"{text}\"")
}

/// Values of every length a store might cut into parts (around 64, 128
/// and 256 bytes, with a two-byte character across the cut) come back
/// whole through `create`, `apply` and `compare_and_set`, from `load` and
/// `load_some`, when a long value is replaced by a short one and the other
/// way round, and when removed; and the attribute limit counts attributes,
/// not the parts of their values.
pub async fn values_of_any_length_round_trip(store: &dyn SessionStore) {
    // A session of short values only, then one with long values too (a
    // Redis hash of either kind).
    values_of_lengths_round_trip(store, &[2, 63, 64, 65, 66, 100, 127, 128]).await;
    values_of_lengths_round_trip(
        store,
        &[
            2, 63, 64, 65, 66, 100, 127, 128, 129, 130, 200, 256, 257, 513, 1000,
        ],
    )
    .await;
}

async fn values_of_lengths_round_trip(store: &dyn SessionStore, lengths: &[usize]) {
    let long: Vec<(String, String)> = lengths
        .iter()
        .map(|&len| (format!("v{len}"), json_of_len(len, 64, 'x')))
        .collect();
    let pairs: Vec<(&str, &str)> = long.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (id, key) = stored(store, &pairs).await;
    let expected: HashMap<String, String> = long.iter().cloned().collect();
    assert_eq!(attributes(store, &key).await, expected, "after create");
    let names: Vec<&str> = long.iter().map(|(k, _)| k.as_str()).collect();
    let some = store
        .load_some(&key, &names)
        .await
        .expect("load_some")
        .expect("stored");
    assert_eq!(some.record.attributes, expected, "load_some after create");

    // Each value replaced by one of another length, through apply.
    let mut expected = expected;
    let mut changes = ChangeSet::new();
    for (i, (name, _)) in long.iter().enumerate() {
        let len = lengths[(i + 5) % lengths.len()];
        let value = json_of_len(len, 128, 'y');
        changes.set_attribute(name.clone(), value.clone());
        expected.insert(name.clone(), value);
    }
    changes.set_attribute("fresh", json_of_len(100, 64, 'z'));
    expected.insert("fresh".to_owned(), json_of_len(100, 64, 'z'));
    changes.remove_attribute("v100");
    expected.remove("v100");
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    assert_eq!(attributes(store, &key).await, expected, "after apply");
    let mut asked: Vec<&str> = expected.keys().map(String::as_str).collect();
    asked.push("v100");
    let some = store
        .load_some(&key, &asked)
        .await
        .expect("load_some")
        .expect("stored");
    assert_eq!(some.record.attributes, expected, "load_some after apply");

    // compare_and_set of long values, from long to short and back.
    for (from, to) in [(100, 10), (10, 120), (120, 70), (70, 128), (128, 90)] {
        let current = expected.get("fresh").cloned();
        assert_eq!(current.as_deref().map(str::len), Some(from));
        let next = json_of_len(to, 64, 'w');
        let stale = json_of_len(from, 64, 'q');
        assert_eq!(
            store
                .compare_and_set(&key, &id, "fresh", Some(&stale), Some(&next))
                .await
                .expect("cas"),
            Swap::Mismatch {
                current: current.clone()
            },
            "a mismatch answers the whole current value"
        );
        assert_eq!(
            store
                .compare_and_set(&key, &id, "fresh", current.as_deref(), Some(&next))
                .await
                .expect("cas"),
            Swap::Swapped
        );
        expected.insert("fresh".to_owned(), next);
        assert_eq!(attributes(store, &key).await, expected, "after cas to {to}");
    }
    let current = expected.remove("fresh");
    assert_eq!(
        store
            .compare_and_set(&key, &id, "fresh", current.as_deref(), None)
            .await
            .expect("cas"),
        Swap::Swapped
    );
    assert_eq!(attributes(store, &key).await, expected, "after cas to none");

    // The limit counts attributes: as many as there are, however long.
    let count = expected.len();
    let mut same = set(&[("v65", json_of_len(90, 64, 'k').as_str())]);
    same.limit_attributes(Some(count));
    assert_eq!(
        store.apply(&key, &same).await.expect("apply"),
        Applied::Written
    );
    let mut more = set(&[("another", json_of_len(90, 64, 'k').as_str())]);
    more.limit_attributes(Some(count));
    assert_eq!(
        store.apply(&key, &more).await.expect("apply"),
        Applied::TooManyAttributes
    );
    let mut swap = set(&[("another", json_of_len(90, 64, 'k').as_str())]);
    swap.remove_attribute("v66");
    swap.limit_attributes(Some(count));
    assert_eq!(
        store.apply(&key, &swap).await.expect("apply"),
        Applied::Written
    );
    expected.insert("v65".to_owned(), json_of_len(90, 64, 'k'));
    expected.insert("another".to_owned(), json_of_len(90, 64, 'k'));
    expected.remove("v66");
    assert_eq!(
        attributes(store, &key).await,
        expected,
        "after limited writes"
    );
}

/// Values and names round-trip exactly: escapes, NUL escapes, non-ASCII,
/// characters that matter to stores (`:`, `{`, `'`, `%`), and a long value.
pub async fn values_round_trip_exactly(store: &dyn SessionStore) {
    let long = serde_json::to_string(&"x".repeat(1024 * 1024)).expect("json");
    let nul = serde_json::to_string("a\u{0}b").expect("json");
    let pairs = [
        ("nul", nul.as_str()),
        ("unicode", "\"žluťoučký 🐎 \\u2028\""),
        ("quotes", "\"it's \\\"quoted\\\" % _ \\\\ {braces}\""),
        ("object", "{\"a\":[1,2.5,null,true],\"b\":{}}"),
        ("weird:name{x}'%", "0"),
        ("ключ", "\"значение\""),
        ("long", long.as_str()),
        ("", "\"empty name\""),
    ];
    let (_, key) = stored(store, &pairs[..4]).await;
    let rest = set(&pairs[4..]);
    assert_eq!(
        store.apply(&key, &rest).await.expect("apply"),
        Applied::Written
    );
    let attrs = attributes(store, &key).await;
    for (name, value) in pairs {
        assert_eq!(
            attrs.get(name).map(String::as_str),
            Some(value),
            "attribute {name:?}"
        );
    }
    assert_eq!(attrs.len(), pairs.len());
}

/// A session with no attributes can be stored and loaded.
pub async fn empty_session_round_trips(store: &dyn SessionStore) {
    let (_, key) = stored(store, &[]).await;
    assert!(attributes(store, &key).await.is_empty());
    let mut removal = ChangeSet::new();
    removal.remove_attribute("never-there");
    assert_eq!(
        store.apply(&key, &removal).await.expect("apply"),
        Applied::Written
    );
}

/// `health` reports up, names the backend and takes a measurable time.
pub async fn health_is_up(store: &dyn SessionStore) {
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Up, "{health:?}");
    assert_eq!(health.backend, store.backend());
    assert!(health.error.is_none());
}

/// One `#[tokio::test]` per check of the store contract.
///
/// `$make` names an `async fn() -> S` (with `S: SessionStore`) in the calling
/// module; each test builds its own store with it.
#[macro_export]
macro_rules! store_suite {
    ($make:ident) => {
        $crate::store_suite!(@tests store_suite, $make;
            load_missing_is_none,
            create_then_load_round_trips,
            load_some_reads_only_the_named,
            create_never_overwrites,
            apply_writes_only_the_delta,
            interleaved_applies_keep_both,
            apply_never_resurrects,
            apply_on_missing_is_gone,
            apply_writes_metadata,
            expired_records_are_gone,
            touch_extends_expiry,
            touch_sets_the_expiry,
            touch_is_throttled,
            apply_requires_the_verifier,
            stale_verifier_changes_nothing,
            apply_limits_attributes,
            compare_and_set_semantics,
            delete_is_idempotent,
            values_round_trip_exactly,
            values_of_any_length_round_trip,
            empty_session_round_trips,
            health_is_up;
            concurrent_distinct_writes_all_kept,
            concurrent_increments_all_kept
        );
    };
    (@tests $module:ident, $make:ident; $($check:ident),*; $($shared_check:ident),*) => {
        mod $module {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let store = super::$make().await;
                    $crate::store::testing::$check(&store).await;
                }
            )*
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared_check() {
                    let store = ::std::sync::Arc::new(super::$make().await);
                    $crate::store::testing::$shared_check(store).await;
                }
            )*
        }
    };
}
