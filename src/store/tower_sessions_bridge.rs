//! This crate's stores behind tower-sessions' own layer: for an app that
//! cannot change its session code yet (one built on axum-login, whose
//! `AuthSession` takes tower-sessions' `Session`), but wants its sessions in
//! this crate's Redis, Redis Cluster, PostgreSQL or memory store.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tower_sessions_core::session::{Id, Record as TsRecord};
use tower_sessions_core::session_store::{Error as TsError, Result as TsResult};

use crate::store::key::{SELECTOR_LEN, VERIFIER_LEN};
use crate::store::{
    Applied, ChangeSet, Created, Record, SessionStore, StoreError, StoreKey, Touch, VerifierHash,
    now,
};

/// How many fresh ids a new record draws if one is taken.
const CREATE_ATTEMPTS: usize = 4;

/// Any of this crate's stores as a tower-sessions `SessionStore`, for
/// tower-sessions' `SessionManagerLayer`.
///
/// ```
/// use tower_httpsession::MemoryStore;
/// use tower_httpsession::store::tower_sessions::ForTowerSessions;
///
/// // tower_sessions::SessionManagerLayer::new(store) takes it as any store.
/// let store = ForTowerSessions::new(MemoryStore::default());
/// # let _ = store;
/// ```
///
/// # The trade-offs
///
/// tower-sessions' layer decides how sessions are written, so none of this
/// crate's guarantees about writes holds through the bridge:
///
/// - **Whole records, not atomic across requests.** tower-sessions saves the
///   whole record at the end of each request that changed it; the bridge
///   reads the stored names and writes the record in a second call, so of
///   two concurrent requests the later save wins, as with tower-sessions'
///   own stores.
/// - **The cookie is the store key.** tower-sessions' cookie carries the
///   record id, which the bridge uses as the store key, with a verifier
///   derived from the id itself: a dump of the store holds working cookies,
///   where this crate's own layer keeps only the hash of a secret the store
///   never sees.
/// - **No principal index**, no combined `update`, no `409` for a session
///   that ended under a request.
///
/// Use it to move the storage first, and move the code to this crate's
/// layer later (MIGRATING.md).
#[derive(Clone)]
pub struct ForTowerSessions<S> {
    store: S,
}

impl<S: SessionStore> fmt::Debug for ForTowerSessions<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForTowerSessions")
            .field("store", &self.store.backend())
            .finish()
    }
}

impl<S> ForTowerSessions<S> {
    /// `store`, as a tower-sessions store.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The store behind the bridge.
    pub fn get_ref(&self) -> &S {
        &self.store
    }
}

/// The store key of a tower-sessions id: its 16 bytes.
fn key_of(id: &Id) -> StoreKey {
    let bytes: [u8; SELECTOR_LEN] = id.0.to_le_bytes();
    StoreKey::from_selector(&bytes)
}

/// The verifier hash the bridge stores for `id`: derived from the id,
/// since tower-sessions' cookie carries nothing else.
fn verifier_of(id: &Id) -> VerifierHash {
    let mut hasher = Sha256::new();
    hasher.update(b"tower-httpsession bridge verifier\0");
    hasher.update(id.0.to_le_bytes());
    let digest: [u8; VERIFIER_LEN] = hasher.finalize().into();
    VerifierHash::of_verifier(&digest)
}

#[allow(clippy::needless_pass_by_value, reason = "the shape map_err takes")]
fn backend(e: StoreError) -> TsError {
    TsError::Backend(crate::store::chain(&e))
}

/// The idle timeout that makes a session touched now expire at `record`'s
/// expiry (at least a millisecond).
fn lifetime(record: &TsRecord) -> Duration {
    let left = record.expiry_date - now();
    Duration::try_from(left)
        .unwrap_or_default()
        .max(Duration::from_millis(1))
}

fn attributes(record: &TsRecord) -> TsResult<HashMap<String, String>> {
    record
        .data
        .iter()
        .map(|(name, value)| {
            serde_json::to_string(value)
                .map(|json| (name.clone(), json))
                .map_err(|e| TsError::Encode(e.to_string()))
        })
        .collect()
}

impl<S: SessionStore> ForTowerSessions<S> {
    async fn create_record(&self, record: &mut TsRecord) -> TsResult<()> {
        let attributes = attributes(record)?;
        for _ in 0..CREATE_ATTEMPTS {
            let at = now();
            let stored = Record::new(
                verifier_of(&record.id),
                at,
                at,
                lifetime(record),
                record.expiry_date,
                attributes.clone(),
            );
            match self
                .store
                .create(&key_of(&record.id), &stored, None)
                .await
                .map_err(backend)?
            {
                Created::Stored => return Ok(()),
                _ => record.id = Id::default(),
            }
        }
        Err(TsError::Backend(
            "every freshly drawn session id was already taken".to_owned(),
        ))
    }
}

#[async_trait]
impl<S: SessionStore> tower_sessions_core::SessionStore for ForTowerSessions<S> {
    async fn create(&self, record: &mut TsRecord) -> TsResult<()> {
        self.create_record(record).await
    }

    async fn save(&self, record: &TsRecord) -> TsResult<()> {
        let key = key_of(&record.id);
        let verifier = verifier_of(&record.id);
        let stored = self.store.load(&key).await.map_err(backend)?;
        let Some(stored) = stored.filter(|s| s.verifier.matches(&verifier)) else {
            // tower-sessions saves records it has not created (after a
            // cycle_id, or one whose session expired meanwhile): store it.
            let mut fresh = record.clone();
            return self.create_record(&mut fresh).await;
        };
        let mut changes = ChangeSet::builder()
            .with_max_inactive(lifetime(record))
            .with_touch(Touch::new(now(), None, None))
            .with_required_verifier(verifier);
        for (name, json) in attributes(record)? {
            changes = changes.with_attribute(name, json);
        }
        for name in stored.attributes.keys() {
            if !record.data.contains_key(name) {
                changes = changes.with_removed_attribute(name.clone());
            }
        }
        match self
            .store
            .apply(&key, &changes.build())
            .await
            .map_err(backend)?
        {
            Applied::Written => Ok(()),
            _ => {
                let mut fresh = record.clone();
                self.create_record(&mut fresh).await
            }
        }
    }

    async fn load(&self, id: &Id) -> TsResult<Option<TsRecord>> {
        let Some(stored) = self.store.load(&key_of(id)).await.map_err(backend)? else {
            return Ok(None);
        };
        if !stored.verifier.matches(&verifier_of(id)) {
            return Ok(None);
        }
        let mut data = HashMap::with_capacity(stored.attributes.len());
        for (name, json) in stored.attributes {
            let value = serde_json::from_str(&json).map_err(|e| TsError::Decode(e.to_string()))?;
            data.insert(name, value);
        }
        Ok(Some(TsRecord {
            id: *id,
            data,
            expiry_date: stored.expires_at,
        }))
    }

    async fn delete(&self, id: &Id) -> TsResult<()> {
        self.store
            .delete(&key_of(id), &verifier_of(id))
            .await
            .map_err(backend)
    }
}
