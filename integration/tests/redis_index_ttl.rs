//! The Redis store's principal indexes expire with their sessions: the
//! store's keys of principals who log in once and never come back
//! disappear by Redis expiry, while an index whose sessions stay in use
//! lives on. On a redis-server of the test's own and on a cluster of three
//! primaries.
#![cfg(all(feature = "redis", feature = "testing"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::time::{Duration, Instant};

use redis_support::{Cluster, RedisServer, unique_prefix};
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{
    Applied, Binding, ChangeSet, Created, LimitPolicy, Principal, Revocation, SessionLimit,
    SessionStore, Touch, now,
};

/// The idle timeout of the short sessions: the headroom an index keeps is
/// as long, so its keys go by twice this after the last touch.
const IDLE: Duration = Duration::from_secs(1);

fn principal(n: usize) -> Principal {
    Principal::new(format!("user-{n}@example.com")).unwrap()
}

async fn cluster_store() -> (RedisStore, Vec<String>) {
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("start the cluster");
    let store = RedisStore::builder_for_cluster(cluster.urls())
        .with_key_prefix(unique_prefix("ttl"))
        .connect()
        .await
        .unwrap();
    (store, cluster.urls())
}

/// Connections to every node (one for a single node).
struct Nodes(Vec<redis::aio::MultiplexedConnection>);

impl Nodes {
    async fn open(urls: &[String]) -> Self {
        let mut connections = Vec::new();
        for url in urls {
            let client = redis::Client::open(url.as_str()).unwrap();
            connections.push(client.get_multiplexed_async_connection().await.unwrap());
        }
        Self(connections)
    }

    /// The keys under `prefix` (`SCAN` skips keys that have expired, even
    /// before Redis reclaims them).
    async fn keys_left(&mut self, prefix: &str) -> Vec<String> {
        let mut left = Vec::new();
        for conn in &mut self.0 {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(conn)
                    .await
                    .unwrap();
                left.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        left
    }

    /// The remaining lifetime of `key` in ms on whichever node holds it
    /// (-1: no expiry; -2: no such key).
    async fn pttl(&mut self, key: &str) -> i64 {
        let mut found = -2;
        for conn in &mut self.0 {
            // A cluster node that does not own the key answers MOVED.
            match redis::cmd("PTTL").arg(key).query_async::<i64>(conn).await {
                Ok(-2) | Err(_) => {}
                Ok(ttl) => found = ttl,
            }
        }
        found
    }

    async fn persist(&mut self, key: &str) {
        for conn in &mut self.0 {
            let _: Result<i64, _> = redis::cmd("PERSIST").arg(key).query_async(conn).await;
        }
    }
}

fn index_key(store: &RedisStore, who: &Principal) -> String {
    format!("{}principal:{{{}}}", store.key_prefix(), who.digest_hex())
}

/// `count` principals log in once (a few of them twice under an evicting
/// limit of one, which writes the index's mark), and never come back:
/// once their sessions expired, no key of the store is left.
async fn one_time_logins_leave_nothing(store: &RedisStore, urls: &[String], count: usize) {
    let mut nodes = Nodes::open(urls).await;
    let one = SessionLimit::new(1, LimitPolicy::EvictLeastRecentlyUsed).unwrap();
    let mut keys = 0;
    for n in 0..count {
        let who = principal(n);
        let logins = if n % 25 == 0 { 2 } else { 1 };
        for _ in 0..logins {
            let (id, key) = fresh_key();
            let rec = record(&id, IDLE, &[]).with_principal(Some(who.clone()));
            // Two logins in the same millisecond rank by key: either may go.
            let created = store.create(&key, &rec, Some(&one)).await.unwrap();
            assert!(
                matches!(created, Created::Stored | Created::Evicted),
                "{created:?}"
            );
        }
        // The index outlives the session (1 s) by its headroom (1 s more).
        let index = index_key(store, &who);
        let ttl = nodes.pttl(&index).await;
        assert!(ttl > 1_000, "the index outlives its session: {ttl} ms");
        keys += 2;
        if logins == 2 {
            let mark = nodes.pttl(&format!("{index}:mark")).await;
            assert!(mark > 1_000, "the eviction's mark expires: {mark} ms");
            keys += 1;
        }
    }
    let written = Instant::now();
    // Expiry plus headroom, plus a margin for a loaded machine.
    let limit = 2 * IDLE + Duration::from_secs(4);
    loop {
        let left = nodes.keys_left(store.key_prefix()).await;
        if left.is_empty() {
            println!(
                "{count} one-time logins: {keys} keys, none left {:?} after the last login",
                written.elapsed()
            );
            break;
        }
        assert!(
            written.elapsed() < limit,
            "{} keys left {:?} after the logins, e.g. {:?}",
            left.len(),
            written.elapsed(),
            &left[..left.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A session kept in use past its index's first expiry stays listed,
/// counted by the limit and revocable: each touch extends the index.
async fn a_session_in_use_keeps_its_index(store: &RedisStore) {
    let idle = Duration::from_secs(2);
    let who = principal(1_000_000);
    let (id, key) = fresh_key();
    let rec = record(&id, idle, &[]).with_principal(Some(who.clone()));
    assert_eq!(
        store.create(&key, &rec, None).await.unwrap(),
        Created::Stored
    );
    // The index first lives until expiry plus headroom: 4 s. Keep the
    // session in use for 6 s.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let touch = ChangeSet::builder()
            .with_touch(Touch::new(now(), None, None))
            .with_required_verifier(id)
            .build();
        assert_eq!(store.apply(&key, &touch).await.unwrap(), Applied::Written);
    }
    let listed = store.principal_sessions(&who).await.unwrap();
    assert!(
        listed.iter().any(|s| s.key == key),
        "the session in use is listed after {:?}",
        started.elapsed()
    );
    let refuse = SessionLimit::new(1, LimitPolicy::RefuseNewLogin).unwrap();
    let (other_id, other) = fresh_key();
    let rec = record(&other_id, idle, &[]).with_principal(Some(who.clone()));
    assert_eq!(
        store.create(&other, &rec, Some(&refuse)).await.unwrap(),
        Created::LimitReached,
        "the session in use counts against the limit"
    );
    assert_eq!(store.revoke(&who, Revocation::All).await.unwrap(), 1);
    assert!(store.load(&key).await.unwrap().is_none(), "revoked");
}

/// An index written before indexes expired gets an expiry at the next
/// binding, one that outlives its older, longer sessions too.
async fn an_index_from_before_gets_an_expiry(store: &RedisStore, urls: &[String]) {
    let who = principal(2_000_000);
    let (id, key) = fresh_key();
    let long = record(&id, Duration::from_secs(600), &[]).with_principal(Some(who.clone()));
    assert_eq!(
        store.create(&key, &long, None).await.unwrap(),
        Created::Stored
    );
    let index = index_key(store, &who);
    // As an earlier version left it: no expiry.
    let mut nodes = Nodes::open(urls).await;
    nodes.persist(&index).await;
    assert_eq!(nodes.pttl(&index).await, -1);
    let (id, short_key) = fresh_key();
    let short = record(&id, IDLE, &[]).with_principal(Some(who.clone()));
    assert_eq!(
        store.create(&short_key, &short, None).await.unwrap(),
        Created::Stored
    );
    let ttl = nodes.pttl(&index).await;
    // The long session expires in 600 s; with its headroom, 1200 s.
    assert!(
        ttl > 1_100_000,
        "the index outlives its older session: {ttl} ms"
    );
    assert_eq!(store.revoke(&who, Revocation::All).await.unwrap(), 2);
}

/// Binding a session that exists (at login) makes the index outlive it
/// too, though the store cannot tell its idle timeout beforehand.
async fn binding_a_stored_session_raises_its_index(store: &RedisStore, urls: &[String]) {
    let who = principal(3_000_000);
    let (id, key) = fresh_key();
    let anonymous = record(&id, Duration::from_secs(600), &[]);
    assert_eq!(
        store.create(&key, &anonymous, None).await.unwrap(),
        Created::Stored
    );
    let login = ChangeSet::builder()
        .with_binding(Binding::new(who.clone(), None))
        .with_touch(Touch::new(now(), None, None))
        .with_required_verifier(id)
        .build();
    assert_eq!(store.apply(&key, &login).await.unwrap(), Applied::Written);
    let ttl = Nodes::open(urls).await.pttl(&index_key(store, &who)).await;
    // The session expires in 600 s; with its headroom, 1200 s.
    assert!(ttl > 1_100_000, "the index outlives the session: {ttl} ms");
    assert_eq!(store.revoke(&who, Revocation::All).await.unwrap(), 1);
}

#[tokio::test]
async fn single_node_one_time_logins_leave_nothing() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    one_time_logins_leave_nothing(&store, &[server.url()], 500).await;
}

#[tokio::test]
async fn single_node_a_session_in_use_keeps_its_index() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    a_session_in_use_keeps_its_index(&store).await;
}

#[tokio::test]
async fn single_node_an_index_from_before_gets_an_expiry() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    an_index_from_before_gets_an_expiry(&store, &[server.url()]).await;
}

#[tokio::test]
async fn cluster_one_time_logins_leave_nothing() {
    let (store, urls) = cluster_store().await;
    one_time_logins_leave_nothing(&store, &urls, 200).await;
}

#[tokio::test]
async fn cluster_a_session_in_use_keeps_its_index() {
    let (store, _) = cluster_store().await;
    a_session_in_use_keeps_its_index(&store).await;
}

#[tokio::test]
async fn cluster_an_index_from_before_gets_an_expiry() {
    let (store, urls) = cluster_store().await;
    an_index_from_before_gets_an_expiry(&store, &urls).await;
}

#[tokio::test]
async fn single_node_binding_a_stored_session_raises_its_index() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    binding_a_stored_session_raises_its_index(&store, &[server.url()]).await;
}

#[tokio::test]
async fn cluster_binding_a_stored_session_raises_its_index() {
    let (store, urls) = cluster_store().await;
    binding_a_stored_session_raises_its_index(&store, &urls).await;
}
