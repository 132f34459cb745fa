//! The store contract, checked against a tower-sessions store behind the
//! adapter.
//!
//! The adapter writes whole records, so it cannot keep the contract across
//! instances; within one process its striped lock makes each commit atomic,
//! which is what this suite (one process) checks, concurrency cases included.
#![cfg(all(feature = "tower-sessions", feature = "testing"))]

use tower_httpsession::store::tower_sessions::TowerSessionsStore;
use tower_sessions_memory_store::MemoryStore;

async fn make_store() -> TowerSessionsStore<MemoryStore> {
    TowerSessionsStore::new(MemoryStore::default())
}

tower_httpsession::store_suite!(make_store);
