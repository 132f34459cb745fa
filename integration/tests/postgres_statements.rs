//! Statements per operation on the PostgreSQL store, counted from sqlx's
//! query log events.
//!
//! The counting subscriber is global, but it counts only the statements of
//! a thread that asked for it, into that thread's own counter: each test
//! runs on a current-thread runtime, so its store calls all run on its
//! thread, and tests may run side by side.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::cell::Cell;
use std::sync::Once;
use std::time::{Duration, Instant};

use postgres_support::{connect, store};
use sqlx::Connection;
use tower_httpsession::SessionStore;
use tower_httpsession::store::testing::{fresh_key, fresh_principal, record};
use tower_httpsession::store::{
    Applied, Binding, ChangeSet, Created, LimitPolicy, Revocation, SessionLimit, Swap,
};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

thread_local! {
    /// Whether this thread's statements are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// Statements sqlx ran on this thread, counted from its `sqlx::query`
    /// log events.
    static STATEMENTS: Cell<u64> = const { Cell::new(0) };
}

/// Installs the counting subscriber (once per process) and counts this
/// thread's statements from now on.
fn count_this_thread() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(CountStatements),
        )
        .expect("subscriber");
    });
    COUNTED.set(true);
}

struct CountStatements;

impl<S: Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" && COUNTED.get() {
            STATEMENTS.set(STATEMENTS.get() + 1);
        }
    }
}

/// Runs `call` and answers its result and the statements it ran.
async fn statements<T>(call: impl Future<Output = T>) -> (T, u64) {
    let before = STATEMENTS.get();
    let out = call.await;
    (out, STATEMENTS.get() - before)
}

// A current-thread runtime: the store's calls all run on the test's thread,
// the only one whose statements are counted.
#[tokio::test(flavor = "current_thread")]
async fn compare_and_set_is_one_statement_per_attempt() {
    count_this_thread();
    let (store, _schema) = store().await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("n", "1")]);
    assert_eq!(
        store.create(&key, &rec, None).await.expect("create"),
        Created::Stored
    );
    let verifier = id;
    // Warm up: the pool's connection and its prepared statements.
    for _ in 0..2 {
        let _ = store
            .compare_and_set(&key, &verifier, "n", Some("0"), Some("0"))
            .await;
        let _ = store
            .compare_and_set(&key, &verifier, "m", None, Some("0"))
            .await;
        let _ = store
            .compare_and_set(&key, &verifier, "m", Some("0"), None)
            .await;
    }

    let cas = |expected: Option<&'static str>, new: Option<&'static str>| {
        let store = store.clone();
        let key = key.clone();
        async move {
            store
                .compare_and_set(&key, &verifier, "n", expected, new)
                .await
        }
    };
    let (swap, n) = statements(cas(Some("0"), Some("5"))).await;
    assert_eq!(
        swap.expect("cas"),
        Swap::Mismatch {
            current: Some("1".to_owned())
        }
    );
    assert_eq!(
        n, 1,
        "a mismatch answers the current value in one statement"
    );
    let (swap, n) = statements(cas(None, Some("5"))).await;
    assert_eq!(
        swap.expect("cas"),
        Swap::Mismatch {
            current: Some("1".to_owned())
        }
    );
    assert_eq!(n, 1, "an insert that finds the name taken");
    let (swap, n) = statements(cas(Some("1"), Some("2"))).await;
    assert_eq!(swap.expect("cas"), Swap::Swapped);
    assert_eq!(n, 1, "a swap");
    let (swap, n) = statements(cas(Some("2"), None)).await;
    assert_eq!(swap.expect("cas"), Swap::Swapped);
    assert_eq!(n, 1, "a removal");
    let (swap, n) = statements(cas(Some("2"), Some("3"))).await;
    assert_eq!(swap.expect("cas"), Swap::Mismatch { current: None });
    assert_eq!(n, 1, "a mismatch on an absent attribute");
    let (swap, n) = statements(cas(None, Some("2"))).await;
    assert_eq!(swap.expect("cas"), Swap::Swapped);
    assert_eq!(n, 1, "an insert");
    let (_, missing) = fresh_key();
    let (swap, n) =
        statements(store.compare_and_set(&missing, &verifier, "n", Some("1"), Some("2"))).await;
    assert_eq!(swap.expect("cas"), Swap::Gone);
    assert_eq!(n, 1, "a missing session");

    // Under contention: another transaction has changed the value and not
    // committed yet. The swap waits for it, finds the new value, and answers
    // that value (not the one in its snapshot, which is the expected one)
    // in the same statement. The other transaction runs on a thread of its
    // own, whose statements are not counted, and commits only once it has
    // seen the swap wait for its lock.
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let row_key = key.as_str().to_owned();
    let schema = store.schema().to_owned();
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut conn = connect().await;
            let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
                .expect("pid");
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query(&format!(
                "UPDATE {schema}.attributes SET value = '9' \
                 WHERE session_key = $1 AND name = 'n'"
            ))
            .bind(&row_key)
            .execute(&mut *tx)
            .await
            .expect("update");
            locked_tx.send(()).expect("signal");
            let mut watcher = connect().await;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let waiting: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                     WHERE $1 = ANY(pg_blocking_pids(pid)))",
                )
                .bind(holder)
                .fetch_one(&mut watcher)
                .await
                .expect("blocked backends");
                if waiting {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the swap did not wait for the lock"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tx.commit().await.expect("commit");
            let _ = conn.close().await;
            let _ = watcher.close().await;
        });
    });
    locked_rx
        .await
        .expect("the other transaction holds the row");
    let (swap, n) = statements(cas(Some("2"), Some("3"))).await;
    other.join().expect("other transaction");
    assert_eq!(
        swap.expect("cas"),
        Swap::Mismatch {
            current: Some("9".to_owned())
        },
        "the value committed while the swap waited"
    );
    assert_eq!(n, 1, "a contended mismatch in one statement");
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "n", Some("9"), Some("10"))
            .await
            .expect("cas"),
        Swap::Swapped
    );
}

/// Binding at login, listing and revoking are one statement each, with or
/// without a limit to enforce; requests that don't bind a session run the
/// same one statement as before.
#[tokio::test(flavor = "current_thread")]
async fn principal_operations_are_one_statement_each() {
    count_this_thread();
    let (store, _schema) = store().await;
    let alice = fresh_principal();
    let limit = SessionLimit::new(100, LimitPolicy::EvictLeastRecentlyUsed).expect("limit");
    let login = |limit: Option<SessionLimit>| {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[("user", "\"alice\"")])
            .with_principal(Some(alice.clone()));
        let store = store.clone();
        async move { store.create(&key, &rec, limit.as_ref()).await }
    };
    let anonymous = || {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[("cart", "[]")]);
        let store = store.clone();
        async move {
            let created = store.create(&key, &rec, None).await.expect("create");
            assert_eq!(created, Created::Stored);
            (id, key)
        }
    };
    let bind = |id, limit| {
        ChangeSet::builder()
            .with_binding(Binding::new(alice.clone(), limit))
            .with_attribute("user", "\"alice\"")
            .with_required_verifier(id)
            .build()
    };
    // Warm up: the pool's connection and its prepared statements.
    for _ in 0..2 {
        let _ = login(Some(limit)).await.expect("create");
        let (id, key) = anonymous().await;
        let _ = store.load(&key).await.expect("load");
        let _ = store.apply(&key, &bind(id, Some(limit))).await;
        let _ = store.principal_sessions(&alice).await.expect("list");
        let _ = store.revoke(&alice, Revocation::All).await.expect("revoke");
    }

    // Unbound: as before the index existed.
    let ((id, key), n) = statements(anonymous()).await;
    assert_eq!(n, 1, "an anonymous session's create");
    let (loaded, n) = statements(store.load(&key)).await;
    assert!(loaded.expect("load").is_some());
    assert_eq!(n, 1, "a load");
    let (loaded, n) = statements(store.load_some(&key, &["cart"])).await;
    assert!(loaded.expect("load_some").is_some());
    assert_eq!(n, 1, "a partial load");
    let write = ChangeSet::builder()
        .with_attribute("cart", "[\"teapot\"]")
        .with_required_verifier(id)
        .build();
    let (applied, n) = statements(store.apply(&key, &write)).await;
    assert_eq!(applied.expect("apply"), Applied::Written);
    assert_eq!(n, 1, "an unbound write");

    // Binding at login, by create and by apply, with a limit.
    let (created, n) = statements(login(Some(limit))).await;
    assert_eq!(created.expect("create"), Created::Stored);
    assert_eq!(n, 1, "a login with a new session");
    let (applied, n) = statements(store.apply(&key, &bind(id, Some(limit)))).await;
    assert_eq!(applied.expect("apply"), Applied::Written);
    assert_eq!(n, 1, "a login binding the anonymous session");
    let (created, n) = statements(login(None)).await;
    assert_eq!(created.expect("create"), Created::Stored);
    assert_eq!(n, 1, "a login without a limit");

    // Listing a hundred sessions, and one more login that evicts.
    for _ in 0..97 {
        assert_eq!(login(None).await.expect("create"), Created::Stored);
    }
    let (listed, n) = statements(store.principal_sessions(&alice)).await;
    assert_eq!(listed.expect("list").len(), 100);
    assert_eq!(n, 1, "listing a hundred sessions");
    let (created, n) = statements(login(Some(limit))).await;
    assert_eq!(created.expect("create"), Created::Stored);
    assert_eq!(n, 1, "a login that evicts");
    let (revoked, n) = statements(store.revoke(&alice, Revocation::All)).await;
    assert_eq!(revoked.expect("revoke"), 100);
    assert_eq!(n, 1, "revoking a hundred sessions");
}
