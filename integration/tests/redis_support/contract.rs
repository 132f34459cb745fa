//! Checks of the Redis layout beyond the behavioural suite, run against
//! each topology.

use std::time::{Duration, Instant};

use tower_httpsession::SessionId;
use tower_httpsession::store::{
    Applied, ChangeSet, Created, Record, SessionStore, StoreKey, Swap, Touch, now,
};

/// A fresh key and a record that lives for `ttl`.
pub fn record(ttl: Duration, attributes: &[(&str, &str)]) -> (StoreKey, Record) {
    let id = SessionId::generate().expect("random id");
    let t = now();
    let record = Record::new(
        id.verifier_hash(),
        t,
        t,
        ttl,
        t + ttl,
        attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    (id.store_key(), record)
}

/// Stores a new record of the given attributes, living a minute.
pub async fn stored(store: &impl SessionStore, attributes: &[(&str, &str)]) -> (StoreKey, Record) {
    let (key, record) = record(Duration::from_secs(60), attributes);
    assert_eq!(
        store.create(&key, &record, None).await.unwrap(),
        Created::Stored
    );
    (key, record)
}

/// Attributes named like metadata fields are kept apart from the metadata,
/// whether created, applied, or swapped.
pub async fn attribute_names_cannot_touch_metadata(store: &impl SessionStore) {
    let (key, mut record) = stored(
        store,
        &[
            ("m:created", "\"shadow\""),
            ("m:verifier", "1"),
            ("a:x", "2"),
        ],
    )
    .await;
    let verifier = record.verifier;
    assert_eq!(store.load(&key).await.unwrap(), Some(record.clone()));

    let t = now();
    let changes = ChangeSet::builder()
        .with_attribute("m:expires", "0")
        .with_attribute("m:max_inactive", "-1")
        .with_removed_attribute("m:verifier")
        .with_touch(Touch::new(t, None, Some(Duration::ZERO)))
        .build();
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    changes.apply_to(&mut record);
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "m:accessed", None, Some("\"x\""))
            .await
            .unwrap(),
        Swap::Swapped
    );
    record
        .attributes
        .insert("m:accessed".to_owned(), "\"x\"".to_owned());
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
    store.delete(&key, &verifier).await.unwrap();
}

/// For compare-and-set, an empty value is a value, not an absent one.
pub async fn an_empty_value_is_not_absent(store: &impl SessionStore) {
    let (key, record) = stored(store, &[("empty", "")]).await;
    let verifier = record.verifier;
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "empty", None, Some("x"))
            .await
            .unwrap(),
        Swap::Mismatch {
            current: Some(String::new())
        }
    );
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "gone", Some(""), Some("x"))
            .await
            .unwrap(),
        Swap::Mismatch { current: None }
    );
    assert_eq!(
        store
            .compare_and_set(&key, &verifier, "empty", Some(""), None)
            .await
            .unwrap(),
        Swap::Swapped
    );
    assert!(
        store
            .load(&key)
            .await
            .unwrap()
            .unwrap()
            .attributes
            .is_empty()
    );
    store.delete(&key, &verifier).await.unwrap();
}

/// A touch sets the key's own expiry: the record outlives its first
/// deadline and reports the new one.
///
/// An untouched twin with the same first deadline shows when that deadline
/// has passed on the server's clock: the check polls until the twin is gone
/// instead of sleeping for a guessed time.
pub async fn touch_moves_the_key_expiry(store: &impl SessionStore) {
    let mut first = Duration::from_millis(400);
    let (key, record, twin, t) = loop {
        let (key, record) = record(first, &[("a", "1")]);
        let other = SessionId::generate().expect("random id");
        let twin = other.store_key();
        let mut twin_record = record.clone();
        twin_record.verifier = other.verifier_hash();
        assert_eq!(
            store.create(&key, &record, None).await.unwrap(),
            Created::Stored
        );
        assert_eq!(
            store.create(&twin, &twin_record, None).await.unwrap(),
            Created::Stored
        );
        let t = now();
        let changes = ChangeSet::builder()
            .with_max_inactive(Duration::from_secs(60))
            .with_touch(Touch::new(t, None, Some(Duration::ZERO)))
            .build();
        match store.apply(&key, &changes).await.unwrap() {
            Applied::Written => break (key, record, twin, t),
            // Slower than the first deadline from create to touch: again,
            // with a longer one.
            Applied::Gone if first < Duration::from_secs(6) => first *= 4,
            other => panic!("the touch of a live record answered {other:?}"),
        }
    };
    let deadline = Instant::now() + first + Duration::from_secs(30);
    while store.load(&twin).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "a key outlived its expiry by 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let loaded = store.load(&key).await.unwrap().expect("still live");
    assert_eq!(loaded.expires_at, t + Duration::from_secs(60));
    assert_eq!(loaded.last_accessed, t);
    store.delete(&key, &record.verifier).await.unwrap();
}

/// Writes of hundreds of fields (more than the scripts pass to one `HSET`
/// or `HDEL`) land whole.
pub async fn many_fields_land_whole(store: &impl SessionStore) {
    let names: Vec<String> = (0..450).map(|i| format!("f{i}")).collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let (key, mut record) = stored(store, &pairs).await;
    let verifier = record.verifier;
    assert_eq!(store.load(&key).await.unwrap(), Some(record.clone()));

    let mut changes = ChangeSet::builder();
    for name in &names[..300] {
        changes = changes.with_removed_attribute(name.as_str());
    }
    for i in 0..333 {
        changes = changes.with_attribute(format!("g{i}"), i.to_string());
    }
    let changes = changes.build();
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    changes.apply_to(&mut record);
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(loaded.attributes.len(), 150 + 333);
    assert_eq!(loaded, record);
    store.delete(&key, &verifier).await.unwrap();
}
