//! What a session costs in Redis's memory, against tower-sessions' whole
//! record (a MessagePack string per session) of the same attributes, on a
//! redis-server of the test's own: `used_memory` before and after storing
//! many sessions, divided by their number.
//!
//! `cargo itest --all-features --test redis_memory -- --nocapture` prints
//! the figures.
#![cfg(all(feature = "redis", feature = "testing"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis_support::RedisServer;
use tower_httpsession::SessionId;
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::{Created, Record, SessionStore, now};

/// The advice the store logs when it connects to a server whose setting
/// keeps sessions of small values out of the compact encoding.
const ADVICE: &str = "hash-max-listpack-value";

/// Letters and digits that look random, so nothing compresses them.
fn text(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn attributes(count: usize, bytes: usize) -> HashMap<String, String> {
    (0..count)
        .map(|i| {
            let value = serde_json::to_string(&text(bytes)).unwrap();
            (format!("attr_{i:02}"), value)
        })
        .collect()
}

/// Log lines written while the store connects.
async fn connect_logged(url: &str) -> (RedisStore, String) {
    connect_logged_with(url, true).await
}

/// The same, with values split or not.
async fn connect_logged_with(url: &str, split: bool) -> (RedisStore, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let store = RedisStore::builder(url)
        .with_key_prefix("mem:")
        .with_split_values(split)
        .connect()
        .await
        .unwrap();
    drop(guard);
    let logged = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (store, logged)
}

async fn used_memory(redis: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(redis)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Bytes of `used_memory` per session for `sessions` sessions of this
/// crate's store, and the encoding of one of them.
async fn ours(
    store: &RedisStore,
    redis: &mut redis::aio::MultiplexedConnection,
    sessions: usize,
    shape: (usize, usize),
) -> (f64, String) {
    let _: () = redis::cmd("FLUSHALL").query_async(redis).await.unwrap();
    let before = used_memory(redis).await;
    for _ in 0..sessions {
        let id = SessionId::generate().unwrap();
        let t = now();
        let ttl = Duration::from_secs(3600);
        let record = Record::new(
            id.verifier_hash(),
            t,
            t,
            ttl,
            t + ttl,
            attributes(shape.0, shape.1),
        );
        let created = store.create(&id.store_key(), &record, None).await.unwrap();
        assert_eq!(created, Created::Stored);
    }
    let per_session = (used_memory(redis).await - before) / sessions as f64;
    let key: String = redis::cmd("RANDOMKEY").query_async(redis).await.unwrap();
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&key)
        .query_async(redis)
        .await
        .unwrap();
    (per_session, encoding)
}

/// The same for tower-sessions' Redis store's layout: the whole record,
/// MessagePack-encoded, as one string with an expiry.
async fn peer(
    redis: &mut redis::aio::MultiplexedConnection,
    sessions: usize,
    shape: (usize, usize),
) -> f64 {
    let _: () = redis::cmd("FLUSHALL").query_async(redis).await.unwrap();
    let before = used_memory(redis).await;
    for _ in 0..sessions {
        let data = (0..shape.0)
            .map(|i| {
                (
                    format!("attr_{i:02}"),
                    serde_json::Value::from(text(shape.1)),
                )
            })
            .collect();
        let record = tower_sessions::session::Record {
            id: tower_sessions::session::Id::default(),
            data,
            expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        };
        let bytes = rmp_serde::to_vec(&record).unwrap();
        let _: () = redis
            .set_ex(record.id.to_string(), bytes, 3600)
            .await
            .unwrap();
    }
    (used_memory(redis).await - before) / sessions as f64
}

/// Under Redis's default `hash-max-listpack-value` (64), a session of 20
/// values of 100 bytes stays a listpack because the store splits each value
/// in two fields, and costs far less than the hashtable it is with
/// splitting off; the store still advises the setting the README
/// recommends (256), under which such a session costs no more than the
/// whole record plus 10%, and a session of 50 values of 1,000 bytes, a
/// hashtable either way, costs no more than its whole record either.
#[tokio::test]
async fn a_session_stays_compact_and_costs_about_the_whole_record() {
    const TYPICAL: (usize, usize) = (20, 100);
    const BIG: (usize, usize) = (50, 1_000);
    let server = RedisServer::start();
    let client = redis::Client::open(server.url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();

    let (store, logged) = connect_logged(&server.url()).await;
    assert!(logged.contains(ADVICE), "no advice logged: {logged}");
    let (split, split_encoding) = ours(&store, &mut redis, 2_000, TYPICAL).await;
    let default_peer = peer(&mut redis, 2_000, TYPICAL).await;
    let (store, _) = connect_logged_with(&server.url(), false).await;
    let (whole, whole_encoding) = ours(&store, &mut redis, 2_000, TYPICAL).await;
    let (big_default, big_default_encoding) = ours(&store, &mut redis, 200, BIG).await;

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("hash-max-listpack-value")
        .arg("256")
        .query_async(&mut redis)
        .await
        .unwrap();
    let (store, logged) = connect_logged(&server.url()).await;
    assert!(
        !logged.contains(ADVICE),
        "advice logged needlessly: {logged}"
    );
    let (typical, typical_encoding) = ours(&store, &mut redis, 2_000, TYPICAL).await;
    let typical_peer = peer(&mut redis, 2_000, TYPICAL).await;
    let (big, big_encoding) = ours(&store, &mut redis, 200, BIG).await;
    let big_peer = peer(&mut redis, 200, BIG).await;

    println!(
        "bytes per session, 20 x 100 B, default setting: {split:.0} ({split_encoding}, \
         values split), {whole:.0} ({whole_encoding}, splitting off), whole record \
         {default_peer:.0}; setting 256: {typical:.0} ({typical_encoding}), whole record \
         {typical_peer:.0}; 50 x 1,000 B: {big:.0} ({big_encoding}; {big_default:.0} \
         under the default setting), whole record {big_peer:.0}"
    );
    assert_eq!(split_encoding, "listpack");
    assert_eq!(whole_encoding, "hashtable");
    assert!(split <= whole * 0.85, "{split} against {whole}");
    // The split's extra field per value costs its name and a few bytes, and
    // the listpack's allocation rounds up to a size class of the allocator
    // (512 bytes apart here): about 1.0 times the whole record for names of
    // two characters, 1.2 times for these names of seven.
    assert!(
        split <= default_peer * 1.25,
        "{split} > {default_peer} + 25%"
    );
    assert_eq!(typical_encoding, "listpack");
    assert!(
        typical <= typical_peer * 1.1,
        "{typical} > {typical_peer} + 10%"
    );
    assert_eq!(big_encoding, "hashtable");
    assert_eq!(big_default_encoding, "hashtable");
    assert!(big <= big_peer * 1.1, "{big} > {big_peer} + 10%");
    assert!(
        big_default <= big_peer * 1.1,
        "{big_default} > {big_peer} + 10%"
    );
}
