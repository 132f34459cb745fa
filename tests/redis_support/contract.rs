//! Focused checks of the store contract, run against each topology.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tower_httpsession::SessionId;
use tower_httpsession::store::{
    Applied, ChangeSet, Created, Record, SessionStore, StoreKey, Swap, Touch, now,
};

/// A fresh key and a record that lives for `ttl`.
pub fn record(ttl: Duration, attributes: &[(&str, &str)]) -> (StoreKey, Record) {
    let id = SessionId::generate().expect("random id");
    let t = now();
    let record = Record {
        verifier: id.verifier_hash(),
        created: t,
        last_accessed: t,
        max_inactive: ttl,
        expires_at: t + ttl,
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    (id.store_key(), record)
}

/// Stores a new record of the given attributes, living a minute.
pub async fn stored(store: &impl SessionStore, attributes: &[(&str, &str)]) -> (StoreKey, Record) {
    let (key, record) = record(Duration::from_secs(60), attributes);
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Stored);
    (key, record)
}

pub async fn round_trip_and_never_overwrite(store: &impl SessionStore) {
    let tricky = "\"\u{0}é\u{1F600}\\\"\n{}a:m:\"";
    let (key, record) = stored(store, &[("user", "\"alice\""), ("m:created", tricky)]).await;
    assert_eq!(store.load(&key).await.unwrap(), Some(record.clone()));
    let (_, other) = self::record(Duration::from_secs(60), &[("x", "1")]);
    assert_eq!(store.create(&key, &other).await.unwrap(), Created::KeyTaken);
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
}

pub async fn apply_writes_only_the_delta(store: &impl SessionStore) {
    let (key, mut record) = stored(store, &[("keep", "1"), ("drop", "2"), ("change", "3")]).await;
    let new_verifier = SessionId::generate().unwrap().verifier_hash();
    let mut changes = ChangeSet::new();
    changes.remove_attribute("drop");
    changes.set_attribute("change", "4");
    changes.set_attribute("add", "5");
    changes.set_max_inactive(Some(Duration::from_secs(90)));
    changes.set_new_verifier(Some(new_verifier));
    let t = now();
    changes.set_touch(Some(Touch {
        last_accessed: t,
        expires_at: t + Duration::from_secs(90),
    }));
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    changes.apply_to(&mut record);
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
}

pub async fn apply_never_resurrects(store: &impl SessionStore) {
    let (key, _) = stored(store, &[("a", "1")]).await;
    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    let mut changes = ChangeSet::new();
    changes.set_attribute("a", "2");
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Gone);
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert_eq!(
        store
            .compare_and_set(&key, "a", None, Some("3"))
            .await
            .unwrap(),
        Swap::Gone
    );
    assert_eq!(store.load(&key).await.unwrap(), None);
}

pub async fn expired_records_are_gone(store: &impl SessionStore) {
    let (key, record) = record(Duration::from_millis(300), &[("a", "1")]);
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Stored);
    assert!(store.load(&key).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(store.load(&key).await.unwrap(), None);
    let mut changes = ChangeSet::new();
    changes.set_attribute("a", "2");
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Gone);
    assert_eq!(store.load(&key).await.unwrap(), None);
    // The key is free again.
    let (_, again) = self::record(Duration::from_secs(60), &[]);
    assert_eq!(store.create(&key, &again).await.unwrap(), Created::Stored);
    store.delete(&key).await.unwrap();
}

pub async fn touch_extends_the_expiry(store: &impl SessionStore) {
    let (key, record) = record(Duration::from_millis(400), &[("a", "1")]);
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Stored);
    let mut changes = ChangeSet::new();
    let t = now();
    changes.set_touch(Some(Touch {
        last_accessed: t,
        expires_at: t + Duration::from_secs(60),
    }));
    assert_eq!(store.apply(&key, &changes).await.unwrap(), Applied::Written);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let loaded = store.load(&key).await.unwrap().expect("still live");
    assert_eq!(loaded.expires_at, t + Duration::from_secs(60));
    store.delete(&key).await.unwrap();
}

pub async fn compare_and_set_semantics(store: &impl SessionStore) {
    let (key, _) = stored(store, &[("n", "1"), ("empty", "")]).await;
    assert_eq!(
        store
            .compare_and_set(&key, "n", Some("2"), Some("3"))
            .await
            .unwrap(),
        Swap::Mismatch {
            current: Some("1".to_owned())
        }
    );
    assert_eq!(
        store
            .compare_and_set(&key, "n", None, Some("3"))
            .await
            .unwrap(),
        Swap::Mismatch {
            current: Some("1".to_owned())
        }
    );
    assert_eq!(
        store
            .compare_and_set(&key, "n", Some("1"), Some("2"))
            .await
            .unwrap(),
        Swap::Swapped
    );
    assert_eq!(
        store
            .compare_and_set(&key, "new", Some("x"), Some("1"))
            .await
            .unwrap(),
        Swap::Mismatch { current: None }
    );
    assert_eq!(
        store
            .compare_and_set(&key, "new", None, Some("1"))
            .await
            .unwrap(),
        Swap::Swapped
    );
    // An empty value is not an absent one.
    assert_eq!(
        store
            .compare_and_set(&key, "empty", None, Some("x"))
            .await
            .unwrap(),
        Swap::Mismatch {
            current: Some(String::new())
        }
    );
    assert_eq!(
        store
            .compare_and_set(&key, "empty", Some(""), None)
            .await
            .unwrap(),
        Swap::Swapped
    );
    let attributes = store.load(&key).await.unwrap().unwrap().attributes;
    let expected: HashMap<String, String> = [("n", "2"), ("new", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(attributes, expected);
    store.delete(&key).await.unwrap();
}

/// 16 concurrent requests each set a different attribute of one session;
/// every one of them is kept.
pub async fn concurrent_writers_keep_every_attribute<S: SessionStore>(store: Arc<S>) {
    let (key, _) = stored(&*store, &[("base", "0")]).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut changes = ChangeSet::new();
            changes.set_attribute(format!("w{i}"), i.to_string());
            let t = now();
            changes.set_touch(Some(Touch {
                last_accessed: t,
                expires_at: t + Duration::from_secs(60),
            }));
            store.apply(&key, &changes).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Applied::Written);
    }
    let attributes = store.load(&key).await.unwrap().unwrap().attributes;
    assert_eq!(attributes.len(), 17, "{:?}", attributes.keys());
    for i in 0..16 {
        assert_eq!(attributes[&format!("w{i}")], i.to_string());
    }
    store.delete(&key).await.unwrap();
}

/// 32 concurrent read-modify-write loops each add one to a counter through
/// compare-and-set; the counter ends at 32.
pub async fn concurrent_increments_keep_every_increment<S: SessionStore>(store: Arc<S>) {
    let (key, _) = stored(&*store, &[]).await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut current: Option<String> = None;
            loop {
                let next = current.as_deref().map_or(0, |n| n.parse::<u64>().unwrap()) + 1;
                match store
                    .compare_and_set(&key, "count", current.as_deref(), Some(&next.to_string()))
                    .await
                    .unwrap()
                {
                    Swap::Swapped => return,
                    Swap::Mismatch { current: now } => current = now,
                    Swap::Gone => panic!("session vanished"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let record = store.load(&key).await.unwrap().unwrap();
    assert_eq!(record.attributes["count"], "32");
    store.delete(&key).await.unwrap();
}

pub async fn health_is_up(store: &impl SessionStore) {
    let health = store.health().await;
    assert_eq!(
        health.status,
        tower_httpsession::store::HealthStatus::Up,
        "{health:?}"
    );
    assert_eq!(health.backend, "redis");
    assert_eq!(health.sessions, None);
}
