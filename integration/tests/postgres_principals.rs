//! The PostgreSQL store's principal index against a real server, beyond the
//! shared suite (run in `postgres_store.rs`): the migration of a database
//! at the first schema version, the index left behind by many short
//! sessions of one user, and the time a large revocation takes.
#![cfg(all(feature = "postgres", feature = "testing"))]

mod postgres_support;

use std::path::Path;
use std::time::{Duration, Instant};

use postgres_support::{SchemaGuard, connect, database_url, store};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tower_httpsession::SessionStore;
use tower_httpsession::store::postgres::PostgresStore;
use tower_httpsession::store::testing::{fresh_key, fresh_principal, record};
use tower_httpsession::store::{
    Applied, Binding, ChangeSet, Created, Label, LimitPolicy, Principal, Record, Revocation,
    SessionLimit,
};

/// The rows of `schema`'s sessions bound to `principal`, live or expired:
/// what the index holds for it.
async fn rows_of(schema: &str, principal: &Principal) -> i64 {
    let mut conn = connect().await;
    let n = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.sessions WHERE principal = $1"
    ))
    .bind(principal.as_str())
    .fetch_one(&mut conn)
    .await
    .expect("count");
    let _ = conn.close().await;
    n
}

/// A store of two connections to `url` in `schema`, not migrated.
async fn small_store(url: String, schema: &SchemaGuard) -> PostgresStore {
    PostgresStore::builder(url)
        .with_schema(&schema.name)
        .with_max_connections(2)
        .connect()
        .await
        .expect("connect")
}

/// `rec` with its times moved `by` into the past.
fn aged(mut rec: Record, by: Duration) -> Record {
    rec.created -= by;
    rec.last_accessed -= by;
    rec.expires_at -= by;
    rec
}

/// A database whose store schema was migrated by a version that knew only
/// the first migration, and holds a session, migrates to the principal
/// index: the session stays, unbound, and can be bound, listed and limited.
#[tokio::test]
async fn a_database_at_the_first_migration_migrates_in_place() {
    let schema = SchemaGuard::new().await;
    let options: PgConnectOptions = database_url().parse().expect("url");
    let mut conn = options
        .clone()
        .options([("search_path", schema.name.as_str())])
        .connect()
        .await
        .expect("connect");
    sqlx::query(&format!("CREATE SCHEMA {}", schema.name))
        .execute(&mut conn)
        .await
        .expect("schema");
    let mut first = Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations"))
        .await
        .expect("migrations");
    first.migrations.to_mut().retain(|m| m.version == 1);
    first.run(&mut conn).await.expect("first migration");
    let _ = conn.close().await;

    let store = small_store(database_url(), &schema).await;
    // Written as the old version wrote it: the columns of the first
    // migration.
    let (id, key) = fresh_key();
    let old = record(&id, Duration::from_secs(600), &[("cart", "[]")]);
    let mut conn = connect().await;
    sqlx::query(&format!(
        "WITH s AS ( \
             INSERT INTO {0}.sessions \
                 (key, verifier, created_at, last_accessed_at, idle_timeout_ms, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING key \
         ) \
         INSERT INTO {0}.attributes SELECT key, 'cart', '[]' FROM s",
        schema.name
    ))
    .bind(key.as_str())
    .bind(id.as_bytes().as_slice())
    .bind(old.created)
    .bind(old.last_accessed)
    .bind(i64::try_from(old.max_inactive.as_millis()).expect("millis"))
    .bind(old.expires_at)
    .execute(&mut conn)
    .await
    .expect("the old version's row");
    let _ = conn.close().await;

    store
        .migrate()
        .await
        .expect("migrate to the principal index");
    let loaded = store.load(&key).await.expect("load").expect("kept");
    assert_eq!(loaded, old, "the session survives, unbound");
    assert_eq!(loaded.principal, None);

    let alice = fresh_principal();
    let one = SessionLimit::new(1, LimitPolicy::RefuseNewLogin).expect("limit");
    let login = ChangeSet::builder()
        .with_binding(Binding::new(alice.clone(), Some(one)))
        .with_label(Label::new("Firefox on Linux").expect("label"))
        .with_required_verifier(id)
        .build();
    assert_eq!(
        store.apply(&key, &login).await.expect("apply"),
        Applied::Written
    );
    let listed = store.principal_sessions(&alice).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key);
    let (other_id, other) = fresh_key();
    let second = record(&other_id, Duration::from_secs(600), &[]).with_principal(Some(alice));
    assert_eq!(
        store
            .create(&other, &second, Some(&one))
            .await
            .expect("create"),
        Created::LimitReached
    );
}

/// Ten thousand logins of one user, each session expired by the next
/// login, leave no more of the user's rows than the limit, without the
/// cleanup task: every binding prunes the principal's expired sessions.
#[tokio::test]
async fn many_short_sessions_of_one_user_leave_no_rows_behind() {
    // Commits not waiting for the disk: what is measured is the rows left
    // behind, and ten thousand flushes would take minutes.
    let schema = SchemaGuard::new().await;
    let url = format!("{}?options=-c%20synchronous_commit%3Doff", database_url());
    let store = small_store(url, &schema).await;
    store.migrate().await.expect("migrate");
    let alice = fresh_principal();
    let limit = SessionLimit::new(3, LimitPolicy::EvictLeastRecentlyUsed).expect("limit");
    let started = Instant::now();
    for _ in 0..10_000 {
        let (id, key) = fresh_key();
        // Created a minute ago with an idle timeout of a second: expired
        // as soon as it is written.
        let rec = aged(
            record(&id, Duration::from_secs(1), &[("user", "\"alice\"")]),
            Duration::from_secs(60),
        )
        .with_principal(Some(alice.clone()));
        assert_eq!(
            store
                .create(&key, &rec, Some(&limit))
                .await
                .expect("create"),
            Created::Stored
        );
    }
    eprintln!("10000 login-expire cycles took {:?}", started.elapsed());
    let rows = rows_of(&schema.name, &alice).await;
    assert!(
        rows <= i64::from(limit.max()),
        "the principal's rows grew to {rows}"
    );
    assert!(
        store
            .principal_sessions(&alice)
            .await
            .expect("list")
            .is_empty()
    );
}

/// Revoking a thousand sessions of one principal is one statement and
/// takes well under a second on a quiet machine (asserted loosely).
#[tokio::test]
async fn revoking_a_thousand_sessions_is_quick() {
    let (store, schema) = store().await;
    let alice = fresh_principal();
    let (_, kept) = fresh_key();
    // The sessions, written in one statement: their creation is not what
    // is measured.
    let mut conn = connect().await;
    sqlx::query(&format!(
        "INSERT INTO {}.sessions \
             (key, verifier, created_at, last_accessed_at, idle_timeout_ms, expires_at, principal) \
         SELECT 'k' || lpad(n::text, 20, '0') || 'A', sha256(n::text::bytea), now(), now(), 600000, \
                now() + interval '10 minutes', $1 \
         FROM generate_series(1, 1000) AS n",
        schema.name
    ))
    .bind(alice.as_str())
    .execute(&mut conn)
    .await
    .expect("sessions");
    sqlx::query(&format!(
        "INSERT INTO {0}.attributes (session_key, name, value) \
         SELECT key, 'cart', '[]' FROM {0}.sessions",
        schema.name
    ))
    .execute(&mut conn)
    .await
    .expect("attributes");
    let _ = conn.close().await;
    let bob_id = fresh_key().0;
    let bob =
        record(&bob_id, Duration::from_secs(600), &[]).with_principal(Some(fresh_principal()));
    assert_eq!(
        store.create(&kept, &bob, None).await.expect("create"),
        Created::Stored
    );
    assert_eq!(
        store.principal_sessions(&alice).await.expect("list").len(),
        1000
    );

    let started = Instant::now();
    let revoked = store.revoke(&alice, Revocation::All).await.expect("revoke");
    let took = started.elapsed();
    eprintln!("revoking 1000 sessions took {took:?}");
    assert_eq!(revoked, 1000);
    assert!(took < Duration::from_secs(5), "revoking took {took:?}");
    assert!(
        store
            .principal_sessions(&alice)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store.load(&kept).await.expect("load").is_some(),
        "another principal's session stays"
    );
}

/// Logins that bind existing sessions race, sixty-four at once with a
/// limit of one: anonymous sessions under each policy, and sessions already
/// bound to the principal (each login evicting the others while they bind
/// too). Exactly one session ends up bound and live, and no binding fails:
/// none deadlocks with another that evicts its session.
#[tokio::test]
async fn racing_logins_by_apply_leave_exactly_one_bound_session() {
    let (store, _schema) = store().await;
    for (policy, already_bound) in [
        (LimitPolicy::EvictLeastRecentlyUsed, false),
        (LimitPolicy::RefuseNewLogin, false),
        (LimitPolicy::EvictLeastRecentlyUsed, true),
    ] {
        for round in 0..5 {
            let alice = fresh_principal();
            let one = SessionLimit::new(1, policy).expect("limit");
            let mut sessions = Vec::new();
            for _ in 0..64 {
                let (id, key) = fresh_key();
                let rec = record(&id, Duration::from_secs(600), &[("cart", "[]")])
                    .with_principal(already_bound.then(|| alice.clone()));
                assert_eq!(
                    store.create(&key, &rec, None).await.expect("create"),
                    Created::Stored
                );
                sessions.push((id, key));
            }
            let logins: Vec<_> = sessions
                .iter()
                .map(|(id, key)| {
                    let (store, key) = (store.clone(), key.clone());
                    let login = ChangeSet::builder()
                        .with_binding(Binding::new(alice.clone(), Some(one)))
                        .with_required_verifier(*id)
                        .build();
                    tokio::spawn(async move { store.apply(&key, &login).await })
                })
                .collect();
            let mut written = 0;
            for login in logins {
                match login.await.expect("task").expect("apply") {
                    Applied::Written => written += 1,
                    Applied::LimitReached | Applied::Gone => {}
                    other => panic!("{policy:?}: {other:?}"),
                }
            }
            let mut bound = 0;
            for (_, key) in &sessions {
                if let Some(rec) = store.load(key).await.expect("load") {
                    bound += usize::from(rec.principal.as_ref() == Some(&alice));
                }
            }
            assert_eq!(bound, 1, "{policy:?}, round {round}: {bound} bound");
            if policy == LimitPolicy::RefuseNewLogin {
                assert_eq!(written, 1, "{policy:?}, round {round}");
            }
            let listed = store.principal_sessions(&alice).await.expect("list");
            assert_eq!(listed.len(), 1);
        }
    }
}
