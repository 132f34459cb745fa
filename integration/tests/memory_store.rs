//! The store contract, checked against the embedded memory store.
#![cfg(feature = "testing")]

use tower_httpsession::MemoryStore;

async fn make_store() -> MemoryStore {
    MemoryStore::new(10_000)
}

tower_httpsession::store_suite!(make_store);
tower_httpsession::principal_suite!(make_store);
