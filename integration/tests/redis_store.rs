//! The Redis store against the local Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`), each test under a key prefix of its own whose
//! keys are deleted when the test's store is dropped: the behavioural suite,
//! then what is particular to Redis.
#![cfg(all(feature = "redis", feature = "testing"))]
// helpers outside #[test] fns unwrap too: a test should fail loudly
#![allow(clippy::unwrap_used)]

mod redis_support;

use std::time::{Duration, Instant};

use redis_support::{CleanStore, RedisServer, clean_store, contract, local_url, unique_prefix};
use tower_httpsession::store::redis::RedisStore;
use tower_httpsession::store::{Operation, SessionStore, StoreErrorKind};

/// How long the password test lets a connect wait: well past the store's
/// retries of a refused connect, also on a loaded machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn make_store() -> CleanStore {
    clean_store("suite").await
}

tower_httpsession::store_suite!(make_store);
tower_httpsession::principal_suite!(make_store);

#[tokio::test]
async fn attribute_names_cannot_touch_metadata() {
    contract::attribute_names_cannot_touch_metadata(&clean_store("names").await).await;
}

#[tokio::test]
async fn an_empty_value_is_not_absent() {
    contract::an_empty_value_is_not_absent(&clean_store("empty").await).await;
}

#[tokio::test]
async fn many_fields_land_whole() {
    contract::many_fields_land_whole(&clean_store("many").await).await;
}

#[tokio::test]
async fn touch_moves_the_key_expiry() {
    contract::touch_moves_the_key_expiry(&clean_store("touch").await).await;
}

#[tokio::test]
async fn one_hash_per_session_with_namespaced_fields() {
    let store = clean_store("layout").await;
    let (key, _) = contract::stored(&store, &[("m:created", "1"), ("user", "2")]).await;
    let client = redis::Client::open(local_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = format!("{}{{{}}}", store.store().key_prefix(), key.as_str());
    let kind: String = redis::cmd("TYPE")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    let mut fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    fields.sort();
    assert_eq!(
        fields,
        [
            "a:m:created",
            "a:user",
            "m:accessed",
            "m:created",
            "m:expires",
            "m:max_inactive",
            "m:verifier"
        ]
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((50_000..=60_000).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn a_malformed_record_is_corrupt_not_a_panic() {
    let store = clean_store("corrupt").await;
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let client = redis::Client::open(local_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = format!("{}{{{}}}", store.store().key_prefix(), key.as_str());
    let _: i64 = redis::cmd("HSET")
        .arg(&name)
        .arg("m:created")
        .arg("yesterday")
        .query_async(&mut conn)
        .await
        .unwrap();
    let error = store.load(&key).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Corrupt);
    assert_eq!(error.backend(), "redis");
    assert!(std::error::Error::source(&error).is_some());

    // A key of another type under the session's name.
    let _: i64 = redis::cmd("DEL")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(&name)
        .arg("x")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.load(&key).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
}

#[tokio::test]
async fn load_some_of_a_large_session_gives_exactly_the_named_attribute() {
    let store = clean_store("some-large").await;
    // 50 attributes of 1,000 bytes of JSON each.
    let value = format!("\"{}\"", "x".repeat(998));
    let names: Vec<String> = (0..50).map(|i| format!("item{i:02}")).collect();
    let attributes: Vec<(&str, &str)> = names
        .iter()
        .map(|name| (name.as_str(), value.as_str()))
        .collect();
    let (key, record) = contract::stored(&store, &attributes).await;

    let some = store
        .load_some(&key, &["item17"])
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(some.attribute_count, None);
    let mut expected = record.clone();
    expected.attributes.retain(|name, _| name == "item17");
    assert_eq!(some.record, expected);
    assert_eq!(some.record.attributes["item17"].len(), 1_000);

    let none = store
        .load_some(&key, &["absent"])
        .await
        .unwrap()
        .expect("stored");
    assert!(none.record.attributes.is_empty());
    assert_eq!(none.record.verifier, record.verifier);
}

#[tokio::test]
async fn load_some_fetches_attributes_named_like_metadata() {
    let store = clean_store("some-names").await;
    let (key, record) = contract::stored(
        &store,
        &[
            ("m:verifier", "\"not a hash\""),
            ("m:created", "\"yesterday\""),
            ("m:expires", "0"),
            ("user", "\"alice\""),
        ],
    )
    .await;
    let some = store
        .load_some(&key, &["m:verifier", "m:created", "m:expires", "m:absent"])
        .await
        .unwrap()
        .expect("stored");
    let mut expected = record.clone();
    expected.attributes.remove("user");
    assert_eq!(some.record, expected);
    assert_eq!(some.record.attributes["m:verifier"], "\"not a hash\"");
    assert_eq!(some.record.created, record.created);
}

#[tokio::test]
async fn load_some_of_a_malformed_record_is_corrupt() {
    let store = clean_store("some-corrupt").await;
    let client = redis::Client::open(local_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = |key: &tower_httpsession::store::StoreKey| {
        format!("{}{{{}}}", store.store().key_prefix(), key.as_str())
    };

    // A metadata field holding junk.
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let _: i64 = redis::cmd("HSET")
        .arg(name(&key))
        .arg("m:created")
        .arg("yesterday")
        .query_async(&mut conn)
        .await
        .unwrap();
    let error = store.load_some(&key, &["a"]).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Corrupt);
    assert_eq!(error.backend(), "redis");
    assert!(std::error::Error::source(&error).is_some());

    // A metadata field missing while the others are there.
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let _: i64 = redis::cmd("HDEL")
        .arg(name(&key))
        .arg("m:verifier")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.load_some(&key, &["a"]).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );

    // An attribute value that is not UTF-8.
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let _: i64 = redis::cmd("HSET")
        .arg(name(&key))
        .arg("a:a")
        .arg(b"\xff".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.load_some(&key, &["a"]).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
    assert!(store.load_some(&key, &[]).await.unwrap().is_some());

    // A key of another type under the session's name.
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let _: i64 = redis::cmd("DEL")
        .arg(name(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(name(&key))
        .arg("x")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.load_some(&key, &["a"]).await.unwrap_err().kind(),
        StoreErrorKind::Corrupt
    );
}

#[tokio::test]
async fn debug_shows_no_password_and_no_session_key() {
    let store = clean_store("debug").await;
    let (key, _) = contract::stored(&store, &[("a", "1")]).await;
    let printed = format!("{:?}", store.store());
    assert!(printed.contains("127.0.0.1"), "{printed}");
    assert!(!printed.contains(key.as_str()), "{printed}");
    let lazy = RedisStore::builder("redis://:s3cret-pass@127.0.0.1:6379")
        .connect_lazy()
        .unwrap();
    assert!(!format!("{lazy:?}").contains("s3cret"));
}

#[tokio::test]
async fn a_wrong_password_fails_without_hanging() {
    let server = RedisServer::start_with_password("right-password");
    let url = |password: &str| format!("redis://:{password}@127.0.0.1:{}", server.port);
    let connect = |url: String| async move {
        RedisStore::builder(&url)
            .with_key_prefix(unique_prefix("auth"))
            .with_connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
    };
    let started = Instant::now();
    let error = connect(url("wrong-password"))
        .await
        .expect_err("a wrong password must not connect");
    println!("refused in {:?}: {error}", started.elapsed());
    assert_eq!(error.backend(), "redis");
    assert_eq!(error.operation(), Operation::Connect);
    // The store retries a refused connect with back-off (six attempts,
    // about 2.5 s) before it gives up, so no tight bound on the time holds;
    // the kind tells whether it gave up on the refusal (a configuration
    // error) or hung until the connect timeout (unavailable).
    assert_eq!(error.kind(), StoreErrorKind::Config, "{error:?}");
    let mut text = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(!text.contains("wrong-password"), "{text}");
    // The same server and URL with the right password: the refusal above
    // was the password's.
    connect(url("right-password"))
        .await
        .expect("the right password connects");
}

/// With replica acknowledgement, each write and its `WAIT` leave together,
/// in one pipeline on one connection. `WAIT` counts the replicas that have
/// the last write of its own connection: one sent apart, after a
/// reconnection or once a Sentinel store has moved to a new primary, would
/// count replicas that never saw this write and could acknowledge a write
/// that a failover then loses. A proxy between the store and a server of
/// the test's own records what the store sends; the server has no replica,
/// so the write fails as unavailable, and says why.
#[tokio::test]
async fn a_write_and_its_wait_leave_together() {
    let server = RedisServer::start();
    let (proxy, sent) = recording_proxy(server.port).await;
    let store = RedisStore::builder(&format!("redis://{proxy}"))
        .with_replica_acknowledgement(1, Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let (verifier, key) = tower_httpsession::store::testing::fresh_key();
    let record = tower_httpsession::store::testing::record(
        &verifier,
        Duration::from_secs(60),
        &[("cart", "[]")],
    );
    let error = store.create(&key, &record, None).await.unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Unavailable, "{error:?}");
    assert!(
        redis_support::error_chain(&error).contains("0 of 1 replicas"),
        "{error}"
    );
    // A fresh server knows no script, so the first pair met NOSCRIPT and
    // the script was loaded before the pair went again.
    let sent = sent.lock().unwrap();
    let writes: Vec<&[u8]> = sent
        .iter()
        .filter_map(|chunk| find(chunk, b"EVALSHA").map(|at| &chunk[at..]))
        .collect();
    assert_eq!(writes.len(), 2, "two writes: before and after SCRIPT LOAD");
    for write in writes {
        assert!(
            find(write, b"WAIT").is_some(),
            "a write left without its WAIT ({} bytes)",
            write.len()
        );
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A TCP proxy on loopback to the Redis on `port`; records each chunk a
/// client sends, as read (a pipeline is written at once, so it arrives in
/// one chunk of this size on loopback).
async fn recording_proxy(
    port: u16,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut from_client, mut to_server) = (client, server);
            let record = std::sync::Arc::clone(&record);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = from_client.split();
                let (mut server_read, mut server_write) = to_server.split();
                let upstream = async {
                    let mut buffer = vec![0; 1 << 16];
                    while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                        record.lock().unwrap().push(buffer[..n].to_vec());
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let downstream = tokio::io::copy(&mut server_read, &mut client_write);
                tokio::select! {
                    () = upstream => {}
                    _ = downstream => {}
                }
            });
        }
    });
    (address, sent)
}

/// The encoding of a session's hash and its fields, sorted.
async fn layout(
    store: &CleanStore,
    key: &tower_httpsession::store::StoreKey,
) -> (String, Vec<String>) {
    let client = redis::Client::open(local_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let name = format!("{}{{{}}}", store.store().key_prefix(), key.as_str());
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    fields.retain(|field| !field.starts_with("m:"));
    fields.sort();
    (encoding, fields)
}

fn json(len: usize) -> String {
    format!("\"{}\"", "v".repeat(len - 2))
}

/// Under Redis's default `hash-max-listpack-value` (64, the local
/// server's), a value of up to 128 bytes is stored in two fields so that
/// the hash stays a listpack; a value written whole again takes its rest
/// with it; once a longer value makes the hash a hashtable, nothing more is
/// split; and a store with splitting off reads what another split.
#[tokio::test]
async fn values_up_to_twice_the_listpack_limit_are_split_and_the_hash_stays_compact() {
    use tower_httpsession::store::{Applied, ChangeSet};
    let store = clean_store("split").await;
    let (key, mut record) = contract::stored(
        &store,
        &[
            ("short", &json(64)),
            ("long", &json(100)),
            ("max", &json(128)),
        ],
    )
    .await;
    let (encoding, fields) = layout(&store, &key).await;
    assert_eq!(encoding, "listpack");
    assert_eq!(fields, ["a:long", "a:max", "a:short", "b:long", "b:max"]);
    assert_eq!(store.load(&key).await.unwrap().unwrap(), record);

    let unsplit = RedisStore::builder(&local_url())
        .with_key_prefix(store.store().key_prefix().to_owned())
        .with_split_values(false)
        .connect()
        .await
        .unwrap();
    assert_eq!(unsplit.load(&key).await.unwrap().unwrap(), record);
    let some = unsplit.load_some(&key, &["long"]).await.unwrap().unwrap();
    assert_eq!(some.record.attributes["long"], json(100));

    // Whole again: the rest goes; split again by a compare-and-set.
    let changes = ChangeSet::builder()
        .with_attribute("long", json(10))
        .build();
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    let swapped = store
        .compare_and_set(
            &key,
            &record.verifier,
            "short",
            Some(&json(64)),
            Some(&json(90)),
        )
        .await
        .unwrap();
    assert_eq!(swapped, tower_httpsession::store::Swap::Swapped);
    let (encoding, fields) = layout(&store, &key).await;
    assert_eq!(encoding, "listpack");
    assert_eq!(fields, ["a:long", "a:max", "a:short", "b:max", "b:short"]);
    record.attributes.insert("long".into(), json(10));
    record.attributes.insert("short".into(), json(90));
    assert_eq!(
        store.load(&key).await.unwrap().unwrap().attributes,
        record.attributes
    );

    // A long value makes it a hashtable: new values are no longer split,
    // the ones split before still read whole.
    let changes = ChangeSet::builder()
        .with_attribute("huge", json(1_000))
        .with_attribute("long", json(100))
        .build();
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    let changes = ChangeSet::builder()
        .with_attribute("later", json(100))
        .build();
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    let (encoding, fields) = layout(&store, &key).await;
    assert_eq!(encoding, "hashtable");
    assert_eq!(
        fields,
        [
            "a:huge", "a:later", "a:long", "a:max", "a:short", "b:max", "b:short"
        ]
    );
    record.attributes.insert("huge".into(), json(1_000));
    record.attributes.insert("long".into(), json(100));
    record.attributes.insert("later".into(), json(100));
    assert_eq!(
        store.load(&key).await.unwrap().unwrap().attributes,
        record.attributes
    );

    // Removing an attribute removes both its fields.
    let changes = ChangeSet::builder().with_removed_attribute("max").build();
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    let (_, fields) = layout(&store, &key).await;
    assert_eq!(
        fields,
        ["a:huge", "a:later", "a:long", "a:short", "b:short"]
    );
}
