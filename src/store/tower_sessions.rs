//! Any `tower-sessions` store as a backend (feature `tower-sessions`), and
//! this crate's stores as tower-sessions stores ([`ForTowerSessions`]).
//!
//! The `tower-sessions` ecosystem has stores for many databases (SQLite,
//! MongoDB, DynamoDB, ...). [`TowerSessionsStore`] lets any of them keep this
//! crate's sessions:
//!
//! ```
//! # #[cfg(feature = "tower-sessions")] {
//! use tower_httpsession::SessionLayer;
//! use tower_httpsession::store::tower_sessions::TowerSessionsStore;
//! # #[derive(Debug, Default)] struct SomeStore;
//! # #[async_trait::async_trait]
//! # impl tower_sessions_core::SessionStore for SomeStore {
//! #     async fn save(&self, _: &tower_sessions_core::session::Record) -> tower_sessions_core::session_store::Result<()> { Ok(()) }
//! #     async fn load(&self, _: &tower_sessions_core::session::Id) -> tower_sessions_core::session_store::Result<Option<tower_sessions_core::session::Record>> { Ok(None) }
//! #     async fn delete(&self, _: &tower_sessions_core::session::Id) -> tower_sessions_core::session_store::Result<()> { Ok(()) }
//! # }
//!
//! let layer = SessionLayer::new(TowerSessionsStore::new(SomeStore::default()));
//! # let _ = layer;
//! # }
//! ```
//!
//! # The trade-off
//!
//! A `tower-sessions` store reads and writes whole records, so this adapter
//! cannot write attribute by attribute: every commit loads the record,
//! applies the change set and saves the whole record back. Within one
//! process the adapter serialises the commits of one session (a striped
//! lock), so concurrent requests that reach the same instance keep each
//! other's changes and `update` stays atomic. Across instances it cannot:
//! two instances that commit one session at the same moment may lose one
//! change, and `create` checks for a taken key before writing, which is not
//! atomic either. With a shared deployment, prefer the Redis or PostgreSQL
//! store.
//!
//! The record keeps this crate's metadata under one reserved key and each
//! attribute's JSON text as a string, so values round-trip exactly.

#[path = "tower_sessions_bridge.rs"]
mod bridge;

pub use self::bridge::ForTowerSessions;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tower_sessions_core::session::{Id, Record as TsRecord};
use tower_sessions_core::session_store::Error as TsError;

use super::{
    Applied, ChangeSet, Created, Operation, Record, SessionLimit, SessionStore, StoreError,
    StoreErrorKind, StoreHealth, StoreKey, Swap, VerifierHash, duration_millis,
};

const BACKEND: &str = "tower-sessions";
/// The reserved key of the metadata in a `tower-sessions` record.
const META: &str = "__httpsession";
/// Prefix of attribute keys, so no attribute can take the metadata's key.
const ATTRIBUTE: &str = "a:";
const STRIPES: usize = 64;

#[derive(Serialize, Deserialize)]
struct Meta {
    verifier: String,
    created_ms: i64,
    last_accessed_ms: i64,
    max_inactive_ms: i64,
}

/// Adapts a `tower_sessions_core::SessionStore` to this crate's
/// [`SessionStore`]. See the [module docs](self) for the trade-off.
pub struct TowerSessionsStore<S> {
    inner: S,
    stripes: Box<[Mutex<()>]>,
    hasher: RandomState,
}

impl<S: fmt::Debug> fmt::Debug for TowerSessionsStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> TowerSessionsStore<S> {
    /// Wraps `store`.
    #[must_use]
    pub fn new(store: S) -> Self {
        Self {
            inner: store,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The wrapped store.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn stripe(&self, key: &StoreKey) -> &Mutex<()> {
        let hash = self.hasher.hash_one(key);
        // The remainder is below STRIPES, so it fits a usize.
        let index = usize::try_from(hash % STRIPES as u64).unwrap_or(0);
        &self.stripes[index]
    }
}

fn id_of(key: &StoreKey) -> Id {
    let mut bytes = [0u8; 16];
    // Keys are 22 characters of base64url for 16 bytes; anything else would
    // not be a key, and maps to id 0, which no session has.
    if matches!(
        URL_SAFE_NO_PAD.decode_slice(key.as_str(), &mut bytes),
        Ok(16)
    ) {
        Id(i128::from_le_bytes(bytes))
    } else {
        Id(0)
    }
}

fn error(operation: Operation, e: TsError) -> StoreError {
    let kind = match e {
        TsError::Decode(_) => StoreErrorKind::Corrupt,
        TsError::Encode(_) => StoreErrorKind::Backend,
        // A backend failure is most often an unreachable server: answer
        // 503 so clients retry.
        TsError::Backend(_) => StoreErrorKind::Unavailable,
    };
    StoreError::new(BACKEND, operation, kind, e)
}

fn corrupt(operation: Operation, what: &'static str) -> StoreError {
    StoreError::new(BACKEND, operation, StoreErrorKind::Corrupt, what)
}

fn encode(key: &StoreKey, record: &Record) -> Result<TsRecord, StoreError> {
    let meta = Meta {
        verifier: URL_SAFE_NO_PAD.encode(record.verifier.as_bytes()),
        created_ms: super::unix_millis(record.created),
        last_accessed_ms: super::unix_millis(record.last_accessed),
        max_inactive_ms: duration_millis(record.max_inactive),
    };
    let mut data = HashMap::with_capacity(record.attributes.len() + 1);
    let meta = serde_json::to_value(meta)
        .map_err(|e| StoreError::new(BACKEND, Operation::Apply, StoreErrorKind::Backend, e))?;
    data.insert(META.to_owned(), meta);
    for (name, json) in &record.attributes {
        data.insert(format!("{ATTRIBUTE}{name}"), Value::String(json.clone()));
    }
    Ok(TsRecord {
        id: id_of(key),
        data,
        expiry_date: record.expires_at,
    })
}

fn decode(operation: Operation, record: TsRecord) -> Result<Record, StoreError> {
    let mut data = record.data;
    let meta = data
        .remove(META)
        .ok_or_else(|| corrupt(operation, "metadata missing"))?;
    let meta: Meta = serde_json::from_value(meta)
        .map_err(|e| StoreError::new(BACKEND, operation, StoreErrorKind::Corrupt, e))?;
    let verifier = URL_SAFE_NO_PAD
        .decode(&meta.verifier)
        .ok()
        .and_then(|b| VerifierHash::from_slice(&b))
        .ok_or_else(|| corrupt(operation, "bad verifier"))?;
    let time = |ms| super::from_unix_millis(ms).ok_or_else(|| corrupt(operation, "bad time"));
    let max_inactive = u64::try_from(meta.max_inactive_ms)
        .map(Duration::from_millis)
        .map_err(|_| corrupt(operation, "bad idle timeout"))?;
    let mut attributes = HashMap::with_capacity(data.len());
    for (key, value) in data {
        let (Some(name), Value::String(json)) = (key.strip_prefix(ATTRIBUTE), value) else {
            return Err(corrupt(operation, "attribute is not kept as text"));
        };
        attributes.insert(name.to_owned(), json);
    }
    Ok(Record {
        verifier,
        created: time(meta.created_ms)?,
        last_accessed: time(meta.last_accessed_ms)?,
        max_inactive,
        expires_at: record.expiry_date,
        attributes,
        principal: None,
        label: None,
    })
}

impl<S: tower_sessions_core::SessionStore> TowerSessionsStore<S> {
    async fn live(
        &self,
        operation: Operation,
        key: &StoreKey,
    ) -> Result<Option<Record>, StoreError> {
        let Some(record) = self
            .inner
            .load(&id_of(key))
            .await
            .map_err(|e| error(operation, e))?
        else {
            return Ok(None);
        };
        let record = decode(operation, record)?;
        Ok((record.expires_at > OffsetDateTime::now_utc()).then_some(record))
    }

    async fn save(
        &self,
        operation: Operation,
        key: &StoreKey,
        record: &Record,
    ) -> Result<(), StoreError> {
        let encoded = encode(key, record)?;
        self.inner
            .save(&encoded)
            .await
            .map_err(|e| error(operation, e))
    }
}

#[async_trait]
impl<S: tower_sessions_core::SessionStore> SessionStore for TowerSessionsStore<S> {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Record>, StoreError> {
        self.live(Operation::Load, key).await
    }

    async fn create(
        &self,
        key: &StoreKey,
        record: &Record,
        _limit: Option<&SessionLimit>,
    ) -> Result<Created, StoreError> {
        let _guard = self.stripe(key).lock().await;
        if self.live(Operation::Create, key).await?.is_some() {
            return Ok(Created::KeyTaken);
        }
        let mut encoded = encode(key, record)?;
        let wanted = encoded.id;
        self.inner
            .create(&mut encoded)
            .await
            .map_err(|e| error(Operation::Create, e))?;
        if encoded.id != wanted {
            // The store moved the record to an id of its own choosing.
            self.inner
                .delete(&encoded.id)
                .await
                .map_err(|e| error(Operation::Create, e))?;
            return Ok(Created::KeyTaken);
        }
        Ok(Created::Stored)
    }

    async fn apply(&self, key: &StoreKey, changes: &ChangeSet) -> Result<Applied, StoreError> {
        let _guard = self.stripe(key).lock().await;
        let Some(mut record) = self.live(Operation::Apply, key).await? else {
            return Ok(Applied::Gone);
        };
        let outcome = changes.apply_checked(&mut record);
        if outcome == Applied::Written {
            self.save(Operation::Apply, key, &record).await?;
        }
        Ok(outcome)
    }

    async fn compare_and_set(
        &self,
        key: &StoreKey,
        verifier: &VerifierHash,
        name: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<Swap, StoreError> {
        let _guard = self.stripe(key).lock().await;
        let Some(mut record) = self.live(Operation::CompareAndSet, key).await? else {
            return Ok(Swap::Gone);
        };
        if !verifier.matches(&record.verifier) {
            return Ok(Swap::Gone);
        }
        let current = record.attributes.get(name).map(String::as_str);
        if current != expected {
            return Ok(Swap::Mismatch {
                current: current.map(str::to_owned),
            });
        }
        match new {
            Some(value) => record.attributes.insert(name.to_owned(), value.to_owned()),
            None => record.attributes.remove(name),
        };
        self.save(Operation::CompareAndSet, key, &record).await?;
        Ok(Swap::Swapped)
    }

    async fn delete(&self, key: &StoreKey, verifier: &VerifierHash) -> Result<(), StoreError> {
        let _guard = self.stripe(key).lock().await;
        match self.live(Operation::Delete, key).await? {
            Some(record) if !verifier.matches(&record.verifier) => Ok(()),
            _ => self
                .inner
                .delete(&id_of(key))
                .await
                .map_err(|e| error(Operation::Delete, e)),
        }
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth::measure(BACKEND, async {
            // One round trip for an id no session has.
            self.inner
                .load(&Id(0))
                .await
                .map(|_| None)
                .map_err(|e| error(Operation::Health, e))
        })
        .await
    }
}
