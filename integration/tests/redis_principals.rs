//! The Redis store's principal index, measured on redis-servers of the
//! test's own: round trips (counted by a loopback proxy in front of the
//! server, one per burst the client sends after an answer), commands
//! (`INFO commandstats`), the index's size after many logins that expire,
//! and how long revoking a thousand sessions takes.
//!
//! `cargo test --all-features --test redis_principals -- --nocapture`
//! prints the figures.
#![cfg(all(feature = "redis", feature = "testing"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_support::{RedisServer, command_calls, delta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::testing::{fresh_key, record};
use tower_httpsession::store::{
    Applied, Binding, ChangeSet, Created, LimitPolicy, Principal, Revocation, SessionLimit,
    SessionStore, Touch, now,
};

/// A proxy on `listen` in front of `upstream` that counts round trips: each
/// time a client sends after the server answered (or first) is one.
async fn counting_proxy(listen: u16, upstream: u16) -> Arc<AtomicU64> {
    let trips = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind(("127.0.0.1", listen)).await.unwrap();
    let counter = trips.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let answered = Arc::new(AtomicBool::new(true));
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let (trips, sent) = (counter.clone(), answered.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                    if sent.swap(false, Ordering::SeqCst) {
                        trips.fetch_add(1, Ordering::SeqCst);
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                    answered.store(true, Ordering::SeqCst);
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    trips
}

fn principal(name: &str) -> Principal {
    Principal::new(name).unwrap()
}

fn limit(max: u32, policy: LimitPolicy) -> SessionLimit {
    SessionLimit::new(max, policy).unwrap()
}

/// Round trips `f` takes, after the settling of any earlier traffic.
async fn trips_of<F: Future<Output = ()>>(trips: &AtomicU64, f: F) -> u64 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = trips.load(Ordering::SeqCst);
    f.await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    trips.load(Ordering::SeqCst) - before
}

#[tokio::test]
async fn binding_and_listing_take_two_round_trips_and_unbound_requests_one() {
    let server = RedisServer::start_on(16_711);
    let trips = counting_proxy(16_712, server.port).await;
    let store = RedisStore::connect("redis://127.0.0.1:16712")
        .await
        .unwrap();
    let alice = principal("alice@example.com");
    let three = limit(3, LimitPolicy::EvictLeastRecentlyUsed);
    // Warm-up: the server loads every script once (after a restart the
    // first call of each pays for it once).
    let (id, key) = fresh_key();
    let rec = record(&id, Duration::from_secs(600), &[]).with_principal(Some(alice.clone()));
    let _ = store.create(&key, &rec, Some(&three)).await.unwrap();
    let rebind = ChangeSet::builder()
        .with_binding(Binding::new(alice.clone(), Some(three)))
        .with_required_verifier(id)
        .build();
    let _ = store.apply(&key, &rebind).await.unwrap();
    let plain = ChangeSet::builder().with_attribute("n", "0").build();
    let _ = store.apply(&key, &plain).await.unwrap();
    let touch = ChangeSet::builder()
        .with_touch(Touch::new(now(), None, Some(Duration::ZERO)))
        .build();
    let _ = store.apply(&key, &touch).await.unwrap();
    store.delete(&key, &id).await.unwrap();

    let (id, key) = fresh_key();
    let rec =
        record(&id, Duration::from_secs(600), &[("a", "1")]).with_principal(Some(alice.clone()));
    let login = trips_of(&trips, async {
        let created = store.create(&key, &rec, Some(&three)).await.unwrap();
        assert_eq!(created, Created::Stored);
    })
    .await;
    println!("binding at login: {login} round trips");
    assert_eq!(login, 2, "binding at login (no eviction needed)");

    let (anon_id, anon) = fresh_key();
    let unbound = record(&anon_id, Duration::from_secs(600), &[]);
    let _ = store.create(&anon, &unbound, None).await.unwrap();
    let changes = ChangeSet::builder()
        .with_binding(Binding::new(alice.clone(), Some(three)))
        .with_required_verifier(anon_id)
        .build();
    let apply_login = trips_of(&trips, async {
        assert_eq!(
            store.apply(&anon, &changes).await.unwrap(),
            Applied::Written
        );
    })
    .await;
    assert_eq!(apply_login, 2, "binding an existing session at login");

    // Unbound requests cost what they cost before the index: one command
    // each, one round trip each.
    let calls_before = command_calls(&server);
    let read = trips_of(&trips, async {
        store.load(&anon).await.unwrap().unwrap();
    })
    .await;
    let set = ChangeSet::builder()
        .with_attribute("n", "1")
        .with_required_verifier(anon_id)
        .build();
    let write = trips_of(&trips, async {
        assert_eq!(store.apply(&anon, &set).await.unwrap(), Applied::Written);
    })
    .await;
    let calls = delta(&calls_before, &command_calls(&server));
    println!("unbound read then write: {read} + {write} round trips, commands {calls:?}");
    assert_eq!((read, write), (1, 1));
    assert_eq!(calls.get("hgetall"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("evalsha"), Some(&1), "{calls:?}");
    assert!(
        !calls.keys().any(|c| c.starts_with('z')),
        "an unbound request touches no index: {calls:?}"
    );

    // A touch of a bound session that moves its expiry also extends its
    // principal's index (another node's, on a cluster): one more round
    // trip. A touch not yet due costs nothing more.
    let due = ChangeSet::builder()
        .with_touch(Touch::new(now(), None, Some(Duration::ZERO)))
        .with_required_verifier(anon_id)
        .build();
    let touched = trips_of(&trips, async {
        assert_eq!(store.apply(&anon, &due).await.unwrap(), Applied::Written);
    })
    .await;
    let throttled = ChangeSet::builder()
        .with_touch(Touch::new(now(), None, None))
        .with_required_verifier(anon_id)
        .build();
    let not_due = trips_of(&trips, async {
        assert_eq!(
            store.apply(&anon, &throttled).await.unwrap(),
            Applied::Written
        );
    })
    .await;
    println!("touch of a bound session: {touched} round trips ({not_due} when not due)");
    assert_eq!((touched, not_due), (2, 1));

    let bob = principal("bob@example.com");
    for _ in 0..100 {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[]).with_principal(Some(bob.clone()));
        assert_eq!(
            store.create(&key, &rec, None).await.unwrap(),
            Created::Stored
        );
    }
    let mut listed = 0;
    let listing = trips_of(&trips, async {
        listed = store.principal_sessions(&bob).await.unwrap().len();
    })
    .await;
    println!("listing {listed} sessions: {listing} round trips");
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let names: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        names
            .iter()
            .all(|n| !n.contains("alice") && !n.contains("bob")),
        "no key name shows a principal's name: {names:?}"
    );
    assert_eq!(listed, 100);
    assert_eq!(listing, 2, "listing 100 sessions");
}

/// Logs one principal in `cycles` times, each session expiring as soon as
/// it is written, and answers the size of the principal's index. A session
/// of the principal that lives on keeps the index from expiring, so it is
/// pruning that keeps it small.
async fn login_expire_cycles(
    store: &RedisStore,
    server: &RedisServer,
    who: &Principal,
    limit: Option<&SessionLimit>,
    cycles: usize,
) -> usize {
    let (id, key) = fresh_key();
    let lasting = record(&id, Duration::from_secs(600), &[]).with_principal(Some(who.clone()));
    assert_eq!(
        store.create(&key, &lasting, limit).await.unwrap(),
        Created::Stored
    );
    for _ in 0..cycles {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::ZERO, &[]).with_principal(Some(who.clone()));
        let created = store.create(&key, &rec, limit).await.unwrap();
        assert_eq!(created, Created::Stored);
    }
    index_size(server, store, who).await
}

#[tokio::test]
async fn logins_that_expire_leave_no_index_behind() {
    let server = RedisServer::start_on(16_713);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let cycles = 10_000;
    let two_lru = limit(2, LimitPolicy::EvictLeastRecentlyUsed);
    let two_refuse = limit(2, LimitPolicy::RefuseNewLogin);
    let started = Instant::now();
    let lru = login_expire_cycles(&store, &server, &principal("a"), Some(&two_lru), cycles).await;
    let refuse =
        login_expire_cycles(&store, &server, &principal("b"), Some(&two_refuse), cycles).await;
    let unlimited = login_expire_cycles(&store, &server, &principal("c"), None, cycles).await;
    println!(
        "{cycles} login-expire cycles each ({:?} in all): index of {lru} (evicting limit 2), \
         {refuse} (refusing limit 2), {unlimited} (no limit)",
        started.elapsed()
    );
    assert!(lru <= 2, "{lru} entries under an evicting limit of 2");
    assert!(refuse <= 2, "{refuse} entries under a refusing limit of 2");
    assert!(
        unlimited <= 2 + 16 + 1,
        "{unlimited} entries without a limit"
    );
}

#[tokio::test]
async fn revoking_a_thousand_sessions_is_quick() {
    let server = RedisServer::start_on(16_714);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let carol = principal("carol@example.com");
    let mut keys = Vec::new();
    for _ in 0..1_000 {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[]).with_principal(Some(carol.clone()));
        assert_eq!(
            store.create(&key, &rec, None).await.unwrap(),
            Created::Stored
        );
        keys.push(key);
    }
    let started = Instant::now();
    let revoked = store.revoke(&carol, Revocation::All).await.unwrap();
    let took = started.elapsed();
    println!("revoking {revoked} sessions took {took:?}");
    assert_eq!(revoked, 1_000);
    assert!(took < Duration::from_secs(5), "{took:?}");
    for key in keys.iter().step_by(97) {
        assert!(store.load(key).await.unwrap().is_none());
    }
    assert!(store.principal_sessions(&carol).await.unwrap().is_empty());
}

async fn index_size(server: &RedisServer, store: &RedisStore, who: &Principal) -> usize {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let index = format!("{}principal:{{{}}}", store.key_prefix(), who.digest_hex());
    redis::cmd("ZCARD")
        .arg(&index)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn logout_and_rebinding_take_the_session_out_of_the_index() {
    let server = RedisServer::start_on(16_715);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let dave = principal("dave@example.com");
    let erin = principal("erin@example.com");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let (id, key) = fresh_key();
        let rec = record(&id, Duration::from_secs(600), &[]).with_principal(Some(dave.clone()));
        assert_eq!(
            store.create(&key, &rec, None).await.unwrap(),
            Created::Stored
        );
        sessions.push((id, key));
    }
    assert_eq!(index_size(&server, &store, &dave).await, 3);
    let (id, key) = &sessions[0];
    store.delete(key, id).await.unwrap();
    assert_eq!(index_size(&server, &store, &dave).await, 2, "logout");
    let (id, key) = &sessions[1];
    let moved = ChangeSet::builder()
        .with_binding(Binding::new(erin.clone(), None))
        .with_required_verifier(*id)
        .build();
    assert_eq!(store.apply(key, &moved).await.unwrap(), Applied::Written);
    assert_eq!(index_size(&server, &store, &dave).await, 1, "rebinding");
    assert_eq!(index_size(&server, &store, &erin).await, 1);
    let (id, key) = &sessions[2];
    store.delete(key, id).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}principal:{{{}}}*",
            store.key_prefix(),
            dave.digest_hex()
        ))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(left.is_empty(), "an empty index is deleted: {left:?}");
}
