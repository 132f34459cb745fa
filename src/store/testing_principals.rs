//! The principal index's part of the behavioural suite, for stores that
//! [support principals](crate::store::SessionStore::supports_principals):
//! [`principal_suite!`](crate::principal_suite) runs it.
//!
//! Every check uses a fresh random principal name, so checks can run in
//! parallel against one store.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{
    Applied, Binding, ChangeSet, Created, Label, LimitPolicy, Principal, Revocation, SessionLimit,
    SessionStore, StoreKey, Swap, VerifierHash,
};

use super::{aged, fresh_key, record};

/// A principal name no other check uses.
#[must_use]
pub fn fresh_principal() -> Principal {
    let (_, key) = fresh_key();
    Principal::new(format!("user-{}@example.com", key.as_str())).expect("a valid name")
}

fn limit(max: u32, policy: LimitPolicy) -> SessionLimit {
    SessionLimit::new(max, policy).expect("a limit above zero")
}

/// Creates a session bound to `principal` (with `limit`), aged by `age`
/// (its last access that long ago), and answers what the store said.
async fn create_bound(
    store: &dyn SessionStore,
    principal: &Principal,
    limit: Option<&SessionLimit>,
    age: Duration,
) -> (Created, VerifierHash, StoreKey) {
    let (id, key) = fresh_key();
    let rec = aged(record(&id, Duration::from_secs(3600), &[("a", "1")]), age)
        .with_principal(Some(principal.clone()));
    let created = store.create(&key, &rec, limit).await.expect("create");
    (created, id, key)
}

async fn bound(
    store: &dyn SessionStore,
    principal: &Principal,
    age: Duration,
) -> (VerifierHash, StoreKey) {
    let (created, id, key) = create_bound(store, principal, None, age).await;
    assert_eq!(created, Created::Stored);
    (id, key)
}

/// Creates `rec` under `key`, which must be free.
async fn put(store: &dyn SessionStore, key: &StoreKey, rec: &crate::store::Record) {
    assert_eq!(
        store.create(key, rec, None).await.expect("create"),
        Created::Stored
    );
}

async fn listed(store: &dyn SessionStore, principal: &Principal) -> Vec<StoreKey> {
    let mut keys: Vec<StoreKey> = store
        .principal_sessions(principal)
        .await
        .expect("principal_sessions")
        .into_iter()
        .map(|s| s.key)
        .collect();
    keys.sort();
    keys
}

fn sorted(mut keys: Vec<StoreKey>) -> Vec<StoreKey> {
    keys.sort();
    keys
}

async fn is_live(store: &dyn SessionStore, key: &StoreKey) -> bool {
    store.load(key).await.expect("load").is_some()
}

/// A binding written by `create` or by `apply` lists the session under its
/// principal with what a "your devices" page shows, and a load returns the
/// principal and the label; unbound sessions and other principals'
/// sessions are not listed.
pub async fn bound_sessions_are_listed(store: &dyn SessionStore) {
    assert!(store.supports_principals());
    let alice = fresh_principal();
    let bob = fresh_principal();
    let label = Label::new("Firefox on Linux").expect("label");

    let (id, created_bound) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("a", "1")])
        .with_principal(Some(alice.clone()))
        .with_label(Some(label.clone()));
    assert_eq!(
        store
            .create(&created_bound, &rec, None)
            .await
            .expect("create"),
        Created::Stored
    );
    let (unbound_id, applied_bound) = fresh_key();
    let unbound = record(&unbound_id, Duration::from_secs(600), &[("b", "2")]);
    assert_eq!(
        store
            .create(&applied_bound, &unbound, None)
            .await
            .expect("create"),
        Created::Stored
    );
    let (other_id, never_bound) = fresh_key();
    let other = record(&other_id, Duration::from_secs(600), &[]);
    assert_eq!(
        store
            .create(&never_bound, &other, None)
            .await
            .expect("create"),
        Created::Stored
    );
    let _ = bound(store, &bob, Duration::ZERO).await;

    let changes = ChangeSet::builder()
        .with_binding(Binding::new(alice.clone(), None))
        .with_required_verifier(unbound_id)
        .build();
    assert_eq!(
        store.apply(&applied_bound, &changes).await.expect("apply"),
        Applied::Written
    );

    assert_eq!(
        listed(store, &alice).await,
        sorted(vec![created_bound.clone(), applied_bound.clone()])
    );
    let sessions = store.principal_sessions(&alice).await.expect("list");
    let first = sessions
        .iter()
        .find(|s| s.key == created_bound)
        .expect("listed");
    assert_eq!(first.created, rec.created);
    assert_eq!(first.last_accessed, rec.last_accessed);
    assert_eq!(first.expires_at, rec.expires_at);
    assert_eq!(first.label.as_ref(), Some(&label));

    let loaded = store
        .load(&created_bound)
        .await
        .expect("load")
        .expect("live");
    assert_eq!(loaded.principal.as_ref(), Some(&alice));
    assert_eq!(loaded.label.as_ref(), Some(&label));
    let partial = store
        .load_some(&applied_bound, &[])
        .await
        .expect("load_some")
        .expect("live");
    assert_eq!(partial.record.principal.as_ref(), Some(&alice));
    assert_eq!(
        partial.record.attributes.len(),
        0,
        "no attribute was asked for"
    );
    assert_eq!(listed(store, &bob).await.len(), 1);
}

/// A label set by `apply` is listed and loaded.
pub async fn labels_are_written_by_apply(store: &dyn SessionStore) {
    let alice = fresh_principal();
    let (id, key) = bound(store, &alice, Duration::ZERO).await;
    let label = Label::new("Safari on iPhone").expect("label");
    let changes = ChangeSet::builder()
        .with_label(label.clone())
        .with_required_verifier(id)
        .build();
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Written
    );
    let sessions = store.principal_sessions(&alice).await.expect("list");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].label.as_ref(), Some(&label));
}

/// Deleted and expired sessions are not listed, and a session bound to
/// another principal leaves the first one's list.
pub async fn listing_skips_ended_sessions(store: &dyn SessionStore) {
    let alice = fresh_principal();
    let bob = fresh_principal();
    let (deleted_id, deleted) = bound(store, &alice, Duration::ZERO).await;
    let (moved_id, moved) = bound(store, &alice, Duration::ZERO).await;
    let (_, kept) = bound(store, &alice, Duration::ZERO).await;
    let (short_id, short) = fresh_key();
    let rec = record(&short_id, Duration::from_millis(300), &[("a", "1")])
        .with_principal(Some(alice.clone()));
    put(store, &short, &rec).await;
    store.delete(&deleted, &deleted_id).await.expect("delete");
    let changes = ChangeSet::builder()
        .with_binding(Binding::new(bob.clone(), None))
        .with_required_verifier(moved_id)
        .build();
    assert_eq!(
        store.apply(&moved, &changes).await.expect("apply"),
        Applied::Written
    );
    tokio::time::sleep(Duration::from_millis(600)).await;

    assert_eq!(listed(store, &alice).await, vec![kept]);
    assert_eq!(listed(store, &bob).await, vec![moved]);
}

/// `revoke` deletes exactly the named sessions of the principal and
/// answers how many; a key of another principal's session deletes nothing.
pub async fn revoke_deletes_only_the_principals_sessions(store: &dyn SessionStore) {
    let alice = fresh_principal();
    let bob = fresh_principal();
    let (_, a1) = bound(store, &alice, Duration::ZERO).await;
    let (_, a2) = bound(store, &alice, Duration::ZERO).await;
    let (_, a3) = bound(store, &alice, Duration::ZERO).await;
    let (_, a4) = bound(store, &alice, Duration::ZERO).await;
    let (_, b1) = bound(store, &bob, Duration::ZERO).await;
    let (_, missing) = fresh_key();

    let only = [a1.clone(), b1.clone(), missing];
    assert_eq!(
        store
            .revoke(&alice, Revocation::Only(&only))
            .await
            .expect("revoke"),
        1,
        "only alice's own session is revoked"
    );
    assert!(!is_live(store, &a1).await, "revoked at once");
    assert!(
        is_live(store, &b1).await,
        "bob's session is not alice's to revoke"
    );

    assert_eq!(
        store
            .revoke(&alice, Revocation::AllExcept(&a2))
            .await
            .expect("revoke"),
        2
    );
    assert!(is_live(store, &a2).await);
    assert!(!is_live(store, &a3).await && !is_live(store, &a4).await);
    assert_eq!(listed(store, &alice).await, vec![a2.clone()]);

    assert_eq!(
        store.revoke(&alice, Revocation::All).await.expect("revoke"),
        1
    );
    assert!(!is_live(store, &a2).await);
    assert!(listed(store, &alice).await.is_empty());
    assert_eq!(
        store.revoke(&alice, Revocation::All).await.expect("revoke"),
        0
    );
    assert!(is_live(store, &b1).await);
}

/// After `revoke` returns, a request that read the session before, and
/// still holds its verifier, writes nothing: `apply` answers `Gone`,
/// `compare_and_set` answers `Gone`, and nothing comes back.
pub async fn revoked_sessions_refuse_writes(store: &dyn SessionStore) {
    let alice = fresh_principal();
    let (id, key) = bound(store, &alice, Duration::ZERO).await;
    assert_eq!(
        store.revoke(&alice, Revocation::All).await.expect("revoke"),
        1
    );
    let changes = ChangeSet::builder()
        .with_attribute("cart", "[\"teapot\"]")
        .with_required_verifier(id)
        .build();
    assert_eq!(
        store.apply(&key, &changes).await.expect("apply"),
        Applied::Gone
    );
    assert_eq!(
        store
            .compare_and_set(&key, &id, "a", Some("1"), Some("2"))
            .await
            .expect("cas"),
        Swap::Gone
    );
    assert!(!is_live(store, &key).await, "nothing was brought back");
    assert!(listed(store, &alice).await.is_empty());
}

/// With [`LimitPolicy::EvictLeastRecentlyUsed`], a binding past the limit
/// deletes the least recently used sessions at once, by `create` or by
/// `apply`.
pub async fn limit_evicts_least_recently_used(store: &dyn SessionStore) {
    let alice = fresh_principal();
    let two = limit(2, LimitPolicy::EvictLeastRecentlyUsed);
    let (_, oldest) = bound(store, &alice, Duration::from_secs(300)).await;
    let (_, middle) = bound(store, &alice, Duration::from_secs(200)).await;
    let (created, _, newest) = create_bound(store, &alice, Some(&two), Duration::ZERO).await;
    assert_eq!(created, Created::Stored);
    assert!(
        !is_live(store, &oldest).await,
        "the least recently used is gone at once"
    );
    assert_eq!(
        listed(store, &alice).await,
        sorted(vec![middle.clone(), newest.clone()])
    );

    // An anonymous session bound by a later write (a login without a new
    // session) evicts too.
    let (id, key) = fresh_key();
    let anonymous = record(&id, Duration::from_secs(600), &[("cart", "[]")]);
    put(store, &key, &anonymous).await;
    let login = ChangeSet::builder()
        .with_binding(Binding::new(alice.clone(), Some(two)))
        .with_required_verifier(id)
        .build();
    assert_eq!(
        store.apply(&key, &login).await.expect("apply"),
        Applied::Written
    );
    assert!(!is_live(store, &middle).await);
    assert_eq!(listed(store, &alice).await, sorted(vec![newest, key]));
}

/// With [`LimitPolicy::RefuseNewLogin`], a binding past the limit writes
/// nothing and answers `LimitReached`, by `create` or by `apply`; once a
/// session ends there is room again.
pub async fn limit_refuses_new_login(store: &dyn SessionStore) {
    let alice = fresh_principal();
    let two = limit(2, LimitPolicy::RefuseNewLogin);
    let (first_id, first) = bound(store, &alice, Duration::ZERO).await;
    let (_, _second) = bound(store, &alice, Duration::ZERO).await;
    let (created, _, refused) = create_bound(store, &alice, Some(&two), Duration::ZERO).await;
    assert_eq!(created, Created::LimitReached);
    assert!(
        !is_live(store, &refused).await,
        "a refused session is not stored"
    );

    let (id, key) = fresh_key();
    let anonymous = record(&id, Duration::from_secs(600), &[("cart", "[]")]);
    put(store, &key, &anonymous).await;
    let login = ChangeSet::builder()
        .with_binding(Binding::new(alice.clone(), Some(two)))
        .with_attribute("user", "\"alice\"")
        .with_required_verifier(id)
        .build();
    assert_eq!(
        store.apply(&key, &login).await.expect("apply"),
        Applied::LimitReached
    );
    let after = store.load(&key).await.expect("load").expect("kept");
    assert_eq!(
        after.principal, None,
        "nothing of the refused change was written"
    );
    assert!(!after.attributes.contains_key("user"));
    assert_eq!(listed(store, &alice).await.len(), 2);

    store.delete(&first, &first_id).await.expect("delete");
    assert_eq!(
        store.apply(&key, &login).await.expect("apply"),
        Applied::Written
    );
    assert_eq!(listed(store, &alice).await.len(), 2);
}

/// Binding again to the same principal keeps one entry, and does not count
/// the session against its own limit.
pub async fn rebinding_the_same_principal_keeps_one_entry(store: &dyn SessionStore) {
    let alice = fresh_principal();
    let one = limit(1, LimitPolicy::RefuseNewLogin);
    let (created, id, key) = create_bound(store, &alice, Some(&one), Duration::ZERO).await;
    assert_eq!(created, Created::Stored);
    let again = ChangeSet::builder()
        .with_binding(Binding::new(alice.clone(), Some(one)))
        .with_required_verifier(id)
        .build();
    assert_eq!(
        store.apply(&key, &again).await.expect("apply"),
        Applied::Written
    );
    assert_eq!(listed(store, &alice).await, vec![key]);
}

/// However many bindings of one principal race, a limit of one leaves
/// exactly one live session, whichever the policy, twenty times each.
pub async fn limit_holds_under_concurrency(store: Arc<dyn SessionStore>) {
    for policy in [
        LimitPolicy::EvictLeastRecentlyUsed,
        LimitPolicy::RefuseNewLogin,
    ] {
        for round in 0..20 {
            let alice = fresh_principal();
            let one = limit(1, policy);
            let logins = (0..64).map(|_| {
                let store = store.clone();
                let alice = alice.clone();
                tokio::spawn(async move {
                    let (created, _, key) =
                        create_bound(&*store, &alice, Some(&one), Duration::ZERO).await;
                    (created, key)
                })
            });
            let mut keys = Vec::new();
            for login in futures_join(logins).await {
                let (created, key) = login;
                assert!(
                    matches!(
                        created,
                        Created::Stored | Created::LimitReached | Created::Evicted
                    ),
                    "{created:?}"
                );
                keys.push(key);
            }
            let mut live = 0;
            for key in &keys {
                if is_live(&*store, key).await {
                    live += 1;
                }
            }
            assert_eq!(
                live, 1,
                "{policy:?}, round {round}: 64 simultaneous logins with a limit of one left {live} live sessions"
            );
            assert_eq!(listed(&*store, &alice).await.len(), 1);
        }
    }
}

async fn futures_join<T: Send + 'static>(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        out.push(task.await.expect("the task finished"));
    }
    out
}

/// The principal-index checks, as `#[tokio::test]`s, for a store whose
/// [`supports_principals`](crate::store::SessionStore::supports_principals)
/// is `true`.
#[macro_export]
macro_rules! principal_suite {
    ($make:ident) => {
        $crate::store_suite!(@tests principal_suite, $make;
            bound_sessions_are_listed,
            labels_are_written_by_apply,
            listing_skips_ended_sessions,
            revoke_deletes_only_the_principals_sessions,
            revoked_sessions_refuse_writes,
            limit_evicts_least_recently_used,
            limit_refuses_new_login,
            rebinding_the_same_principal_keeps_one_entry;
            limit_holds_under_concurrency
        );
    };
}
