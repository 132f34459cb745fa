//! Group commit on the PostgreSQL store: concurrent writes share
//! transactions (of different sessions, and of one session in the order
//! sent), and each still gets its own answer, only for what committed.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::task::Poll;
use std::time::Duration;

use postgres_support::{SchemaGuard, connect, database_url, unique_name};
use sqlx::Connection;
use tower_httpsession::SessionStore;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{
    Applied, ChangeSet, Created, StoreError, StoreKey, Touch, VerifierHash,
};

const TTL: Duration = Duration::from_secs(600);
/// Sessions written concurrently, one change each.
const SESSIONS: usize = 48;
/// Changes of one more session, sent in this order, all at once.
const SEQUENCE: usize = 5;

/// A store whose pool has two connections, so that writes queue behind
/// the batches in flight.
async fn small_store(group_commit: bool) -> (PostgresStore, SchemaGuard) {
    let guard = SchemaGuard::new().await;
    let builder = PostgresStore::builder(database_url())
        .with_schema(&guard.name)
        .with_application_name(unique_name("ths-group-"))
        .with_max_connections(2);
    let builder = if group_commit {
        builder.with_group_commit(16)
    } else {
        builder.without_group_commit()
    };
    let store = builder.connect().await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, guard)
}

/// The change a request sends that sets `name` to `value`: touch not due,
/// the cookie's verifier required, the attribute limit given.
fn set(name: &str, value: &str, verifier: &VerifierHash, limit: usize) -> ChangeSet {
    ChangeSet::builder()
        .with_attribute(name, value)
        .with_touch(Touch::new(
            time::OffsetDateTime::now_utc(),
            None,
            Some(Duration::from_secs(60)),
        ))
        .with_required_verifier(*verifier)
        .with_attribute_limit(limit)
        .build()
}

async fn create(store: &PostgresStore, attributes: &[(&str, &str)]) -> (VerifierHash, StoreKey) {
    let (verifier, key) = fresh_key();
    let created = store
        .create(&key, &record(&verifier, TTL, attributes), None)
        .await
        .expect("create");
    assert_eq!(created, Created::Stored);
    (verifier, key)
}

/// One write of the mix, and the answer it must get.
struct Case {
    key: StoreKey,
    changes: ChangeSet,
    expected: Applied,
    /// The value `n` holds afterwards (`None`: absent, or no session).
    stored: Option<String>,
}

/// Sends every write at once: each is polled once, in order, so all are
/// queued in that order before the first batch's answer comes back; then
/// waits for all.
async fn apply_in_order(
    store: &PostgresStore,
    writes: Vec<(&StoreKey, &ChangeSet)>,
) -> Vec<Result<Applied, StoreError>> {
    let mut pending: Vec<_> = writes
        .into_iter()
        .map(|(key, changes)| store.apply(key, changes))
        .collect();
    let mut answers = Vec::with_capacity(pending.len());
    for write in &mut pending {
        answers.push(match futures_util::poll!(write.as_mut()) {
            Poll::Ready(answer) => Some(answer),
            Poll::Pending => None,
        });
    }
    let mut done = Vec::with_capacity(pending.len());
    for (write, answer) in pending.iter_mut().zip(answers) {
        done.push(match answer {
            Some(answer) => answer,
            None => write.as_mut().await,
        });
    }
    done
}

/// How many transactions wrote the attribute rows named `n` in `schema`.
async fn writing_transactions(schema: &str) -> i64 {
    let mut conn = connect().await;
    let count: i64 = sqlx::query_scalar(&format!(
        "SELECT count(DISTINCT xmin::text) FROM {schema}.attributes \
         WHERE name = 'n' AND value NOT LIKE '%step%'"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("count transactions");
    let _ = conn.close().await;
    count
}

/// Sends a mix of writes at once (all queued in this order before any
/// runs): to live sessions, with a stale verifier, to deleted sessions,
/// past the attribute limit, and several to one session. Checks each
/// answer and what is stored; answers how many writes of different
/// sessions were stored, and how many transactions wrote them.
async fn mixed_writes(store: &PostgresStore, schema: &str) -> (usize, i64) {
    let mut cases = Vec::new();
    let mut written = 0;
    for i in 0..SESSIONS {
        let (verifier, key) = create(store, &[("a", "1"), ("b", "2")]).await;
        let value = format!("{i}");
        let case = match i % 6 {
            // A cookie whose id was changed since.
            1 => Case {
                changes: set("n", &value, &fresh_key().0, 1024),
                expected: Applied::Stale,
                stored: None,
                key,
            },
            // A session deleted before the write.
            2 => {
                store.delete(&key, &verifier).await.expect("delete");
                Case {
                    changes: set("n", &value, &verifier, 1024),
                    expected: Applied::Gone,
                    stored: None,
                    key,
                }
            }
            // A third attribute where two are allowed.
            3 => Case {
                changes: set("n", &value, &verifier, 2),
                expected: Applied::TooManyAttributes,
                stored: None,
                key,
            },
            _ => {
                written += 1;
                Case {
                    changes: set("n", &value, &verifier, 1024),
                    expected: Applied::Written,
                    stored: Some(value),
                    key,
                }
            }
        };
        cases.push(case);
    }
    // One session changed several times: the last change sent wins.
    let (verifier, key) = create(store, &[]).await;
    for step in 0..SEQUENCE {
        let value = format!("\"step{step}\"");
        cases.push(Case {
            key: key.clone(),
            changes: set("n", &value, &verifier, 1024),
            expected: Applied::Written,
            stored: (step + 1 == SEQUENCE).then_some(value),
        });
    }
    let answers = apply_in_order(
        store,
        cases
            .iter()
            .map(|case| (&case.key, &case.changes))
            .collect(),
    )
    .await;
    for (i, (case, answer)) in cases.iter().zip(answers).enumerate() {
        let answer = answer.expect("apply");
        assert_eq!(answer, case.expected, "write {i}");
        let loaded = store.load(&case.key).await.expect("load");
        let n = loaded.as_ref().and_then(|r| r.attributes.get("n").cloned());
        if case.expected != Applied::Written || case.stored.is_some() {
            assert_eq!(n, case.stored, "write {i}: stored value");
        }
        if case.expected == Applied::Gone {
            assert!(loaded.is_none(), "write {i}: a deleted session came back");
        }
    }
    // No attribute row of a deleted session either.
    let mut conn = connect().await;
    let orphans: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.attributes a \
         WHERE NOT EXISTS (SELECT 1 FROM {schema}.sessions s WHERE s.key = a.session_key)"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("orphans");
    let _ = conn.close().await;
    assert_eq!(orphans, 0);
    (written, writing_transactions(schema).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_keep_their_answers() {
    let (store, schema) = small_store(true).await;
    let (written, transactions) = mixed_writes(&store, &schema.name).await;
    let transactions = usize::try_from(transactions).expect("a count");
    eprintln!("{written} writes of different sessions in {transactions} transactions");
    assert!(
        transactions * 2 <= written,
        "{written} writes committed in {transactions} transactions: no group commit"
    );
}

/// Concurrent writes of one session (a page's parallel calls) share
/// transactions too, in the order they were sent: each sets an attribute
/// of its own and `last`, which must end as the last write sent set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_session_share_commits_in_their_order() {
    const WRITES: usize = 24;
    let (store, schema) = small_store(true).await;
    let (verifier, key) = create(&store, &[]).await;
    let changes: Vec<ChangeSet> = (0..WRITES)
        .map(|i| {
            ChangeSet::builder()
                .with_attribute(format!("w{i:02}"), format!("{i}"))
                .with_attribute("last", format!("{i}"))
                .with_required_verifier(verifier)
                .with_attribute_limit(1024)
                .build()
        })
        .collect();
    let answers = apply_in_order(&store, changes.iter().map(|c| (&key, c)).collect()).await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("apply"), Applied::Written, "write {i}");
    }
    let stored = store.load(&key).await.expect("load").expect("the session");
    assert_eq!(
        stored.attributes.get("last").map(String::as_str),
        Some("23"),
        "the last write sent is the last applied"
    );
    for i in 0..WRITES {
        assert_eq!(
            stored.attributes.get(&format!("w{i:02}")),
            Some(&format!("{i}")),
            "write {i} stored"
        );
    }
    let mut conn = connect().await;
    let transactions: i64 = sqlx::query_scalar(&format!(
        "SELECT count(DISTINCT xmin::text) FROM {}.attributes WHERE name LIKE 'w%'",
        schema.name
    ))
    .fetch_one(&mut conn)
    .await
    .expect("count transactions");
    let _ = conn.close().await;
    let transactions = usize::try_from(transactions).expect("a count");
    eprintln!("{WRITES} writes of one session in {transactions} transactions");
    assert!(
        transactions * 4 <= WRITES,
        "{WRITES} writes of one session committed in {transactions} transactions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_group_commit_each_write_commits_alone() {
    // The measure above tells batches from single commits.
    let (store, schema) = small_store(false).await;
    let (written, transactions) = mixed_writes(&store, &schema.name).await;
    assert_eq!(usize::try_from(transactions).expect("a count"), written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_member_fails_alone_and_nobody_else_is_told_a_lie() {
    let (store, schema) = small_store(true).await;
    let mut sessions = Vec::new();
    for _ in 0..24 {
        sessions.push(create(&store, &[("a", "1")]).await);
    }
    // The server refuses a NUL character in text: that write fails, in
    // whatever batch it lands.
    let changes: Vec<ChangeSet> = sessions
        .iter()
        .enumerate()
        .map(|(i, (verifier, _))| {
            let value = if i % 8 == 5 {
                "\"bad\0\"".to_owned()
            } else {
                format!("{i}")
            };
            set("n", &value, verifier, 1024)
        })
        .collect();
    let answers = apply_in_order(
        &store,
        sessions.iter().map(|(_, key)| key).zip(&changes).collect(),
    )
    .await;
    for (i, ((_, key), answer)) in sessions.iter().zip(answers).enumerate() {
        let n = store
            .load(key)
            .await
            .expect("load")
            .and_then(|r| r.attributes.get("n").cloned());
        if i % 8 == 5 {
            assert!(
                answer.is_err(),
                "write {i}: a refused value reported stored"
            );
            assert_eq!(n, None, "write {i}");
        } else {
            assert_eq!(answer.expect("apply"), Applied::Written, "write {i}");
            assert_eq!(
                n,
                Some(format!("{i}")),
                "write {i}: reported written, not stored"
            );
        }
    }
    drop(schema);
}
