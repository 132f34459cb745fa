//! The memory store's own tests: its bounds and eviction.

use std::collections::HashMap;

use super::*;

const MIB: u64 = 1024 * 1024;

pub(super) fn record(expires_in: Duration) -> Record {
    let now = crate::store::now();
    Record {
        verifier: VerifierHash::random().unwrap(),
        created: now,
        last_accessed: now,
        max_inactive: expires_in,
        expires_at: now + expires_in,
        attributes: HashMap::new(),
        principal: None,
        label: None,
    }
}

/// A live record holding one attribute of `bytes` bytes.
pub(super) fn sized(bytes: usize) -> Record {
    let mut record = record(Duration::from_secs(60));
    record
        .attributes
        .insert("profile".to_owned(), "p".repeat(bytes));
    record
}

/// Creates a session holding `record` under a new key, which it returns.
async fn create(store: &MemoryStore, record: &Record) -> StoreKey {
    let key = StoreKey::random().unwrap();
    assert_eq!(
        store.create(&key, record, None).await.unwrap(),
        Created::Stored
    );
    key
}

#[tokio::test]
async fn capacity_bounds_the_number_of_sessions() {
    let store = MemoryStore::new(100);
    for _ in 0..1_000 {
        create(&store, &record(Duration::from_secs(60))).await;
    }
    assert!(store.len() <= 100, "{}", store.len());
}

#[tokio::test]
async fn least_recently_used_is_evicted_first() {
    let store = MemoryStore::new(10);
    let keep = create(&store, &record(Duration::from_secs(60))).await;
    for _ in 0..50 {
        assert!(store.load(&keep).await.unwrap().is_some());
        create(&store, &record(Duration::from_secs(60))).await;
        store.cache.run_pending_tasks();
    }
    assert!(store.load(&keep).await.unwrap().is_some());
}

#[tokio::test]
async fn large_sessions_never_push_the_weight_past_the_budget() {
    let budget = 16 * MIB;
    let store = MemoryStore::builder().with_max_bytes(budget).build();
    let large = sized(1024 * 1024);
    let mut last = None;
    for _ in 0..300 {
        last = Some(create(&store, &large).await);
        store.cache.run_pending_tasks();
        let weight = store.cache.weighted_size();
        assert!(weight <= budget, "{weight} bytes held");
    }
    let held = store.len();
    assert!((1..=16).contains(&held), "{held} sessions of 1 MiB held");
    let last = last.unwrap();
    assert!(
        store.load(&last).await.unwrap().is_some(),
        "the newest session is kept"
    );
}

#[tokio::test]
async fn the_session_bound_is_a_weight_floor() {
    let store = MemoryStore::builder()
        .with_max_bytes(MIB)
        .with_max_sessions(10)
        .build();
    for _ in 0..100 {
        create(&store, &record(Duration::from_secs(60))).await;
    }
    assert_eq!(store.len(), 10);
    assert_eq!(store.estimated_bytes(), MIB / 10 * 10);
}

#[tokio::test]
async fn a_flood_evicts_idle_sessions_and_keeps_used_ones() {
    let store = MemoryStore::builder().with_max_bytes(MIB).build();
    let session = sized(4 * 1024);
    let used = create(&store, &session).await;
    let idle = create(&store, &session).await;
    // Ten times what the budget holds, with the used session read
    // between the flood's requests, as its user's browser would.
    let mut newest = None;
    for _ in 0..2_500 {
        newest = Some(create(&store, &session).await);
        assert!(store.load(&used).await.unwrap().is_some());
    }
    assert!(store.estimated_bytes() <= MIB, "{store:?}");
    assert!(
        store.load(&idle).await.unwrap().is_none(),
        "the idle session is evicted"
    );
    assert!(store.load(&used).await.unwrap().is_some());
    assert!(
        store.load(&newest.unwrap()).await.unwrap().is_some(),
        "a new session is kept, even at the budget"
    );
}

#[tokio::test]
async fn a_session_heavier_than_the_budget_is_not_kept() {
    let store = MemoryStore::builder().with_max_bytes(64 * 1024).build();
    let small = create(&store, &sized(1024)).await;
    let huge = create(&store, &sized(128 * 1024)).await;
    store.cache.run_pending_tasks();
    assert!(store.load(&huge).await.unwrap().is_none());
    assert!(
        store.load(&small).await.unwrap().is_some(),
        "nothing is evicted for it"
    );
}

#[tokio::test]
async fn zero_bounds_keep_nothing() {
    for store in [
        MemoryStore::builder().with_max_bytes(0).build(),
        MemoryStore::builder().with_max_sessions(0).build(),
        MemoryStore::new(0),
    ] {
        let key = create(&store, &record(Duration::from_secs(60))).await;
        store.cache.run_pending_tasks();
        assert!(store.load(&key).await.unwrap().is_none(), "{store:?}");
        assert!(store.is_empty());
    }
}

#[tokio::test]
async fn debug_shows_the_bounds_and_what_is_held() {
    let store = MemoryStore::builder()
        .with_max_bytes(MIB)
        .with_max_sessions(1_000)
        .build();
    create(&store, &sized(10_000)).await;
    assert_eq!(store.len(), 1);
    let bytes = store.estimated_bytes();
    assert!(bytes > 10_000, "{bytes}");
    assert_eq!(
        format!("{store:?}"),
        format!(
            "MemoryStore {{ max_bytes: 1048576, max_sessions: 1000, bytes: {bytes}, sessions: 1 }}"
        )
    );
}
