//! Statements per compare-and-set attempt on the PostgreSQL store, counted
//! from sqlx's query log events.
//!
//! One test in a binary of its own: the counting subscriber is global, so no
//! other test may run statements while it counts.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres_support::{connect, store};
use sqlx::Connection;
use tower_httpsession::SessionStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{Created, Swap};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Statements sqlx ran on the test's thread, counted from its `sqlx::query`
/// log events.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Whether this thread's statements are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

struct CountStatements;

impl<S: Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" && COUNTED.get() {
            STATEMENTS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Runs `call` and answers its result and the statements it ran.
async fn statements<T>(call: impl Future<Output = T>) -> (T, u64) {
    let before = STATEMENTS.load(Ordering::SeqCst);
    let out = call.await;
    (out, STATEMENTS.load(Ordering::SeqCst) - before)
}

// A current-thread runtime: the store's calls all run on the test's thread,
// the only one whose statements are counted.
#[tokio::test(flavor = "current_thread")]
async fn compare_and_set_is_one_statement_per_attempt() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(CountStatements))
        .expect("subscriber");
    COUNTED.set(true);
    let (store, _schema) = store().await;
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[("n", "1")]);
    assert_eq!(
        store.create(&key, &rec).await.expect("create"),
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
