//! [`Session::update`]: an atomic read-modify-write of one attribute.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Session, SessionId};
use crate::error::SessionError;
use crate::store::Swap;

/// How many times [`Session::update`] retries a lost compare-and-set.
const UPDATE_ATTEMPTS: usize = 128;

/// Waits a random while, growing with `attempt`, after a lost
/// compare-and-set, so that contending requests spread out instead of
/// colliding again at once.
async fn backoff(attempt: usize) {
    let ceiling_us = 200u64 << attempt.min(7);
    let jitter = getrandom::u64().unwrap_or(ceiling_us / 2);
    tokio::time::sleep(Duration::from_micros(jitter % ceiling_us)).await;
}

impl Session {
    /// Atomically replaces attribute `name` with `f(old)` and returns the new
    /// value: concurrent updates of one attribute in one session never lose
    /// each other's change.
    ///
    /// Unlike [`set`](Self::set), the write happens now, as a compare-and-set
    /// in the store; if another request changed the value meanwhile, `f` runs
    /// again on the newer value. `f` may therefore run more than once and
    /// should do nothing but compute.
    ///
    /// ```
    /// # use tower_httpsession::{Session, SessionError};
    /// async fn hit(session: Session) -> Result<String, SessionError> {
    ///     let hits = session.update("hits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
    ///     Ok(hits.to_string())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`SessionError::Contended`] if the compare-and-set lost 128 times in a
    /// row; the other errors as for [`get`](Self::get) and [`set`](Self::set).
    pub async fn update<T, F>(&self, name: &str, mut f: F) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let config = self.config();
        // A request without a cookie has a session nobody else knows: it
        // takes no turn.
        let key = self.inner.cookie.as_ref().map(SessionId::store_key);
        for attempt in 0..UPDATE_ATTEMPTS {
            // Take the turn before reading, so that the value read is the
            // one the last request of this process wrote. The turn is held
            // for one read and one compare-and-set, never across a back-off.
            let turn = match &key {
                Some(key) => Some(self.inner.shared.turns.take(key, name).await),
                None => None,
            };
            let mut loaded = self.loaded(&[name]).await?;
            if loaded.needs_count_for(name) {
                drop(loaded);
                loaded = self.loaded_whole().await?;
            }
            let old = match loaded.value(name) {
                Some(json) => Some(serde_json::from_str(json).map_err(|source| {
                    SessionError::Deserialize {
                        name: name.to_owned(),
                        source,
                    }
                })?),
                None => None,
            };
            let new = f(old);
            let json = serde_json::to_string(&new).map_err(|source| SessionError::Serialize {
                name: name.to_owned(),
                source,
            })?;
            if !loaded.is_stored() {
                // Nobody else knows this session yet: a local change is atomic.
                loaded.record_set(name, json, config)?;
                return Ok(new);
            }
            loaded.check_limits(name, &json, config)?;
            let expected = loaded.stored(name).flatten().map(str::to_owned);
            if expected.as_deref() == Some(json.as_str()) {
                loaded.changes.forget_attribute(name);
                return Ok(new);
            }
            let Some(verifier) = loaded.verifier() else {
                return Err(Self::end(&mut loaded));
            };
            let swap = self
                .store()
                .compare_and_set(
                    &loaded.id.store_key(),
                    &verifier,
                    name,
                    expected.as_deref(),
                    Some(&json),
                )
                .await?;
            let lost = matches!(swap, Swap::Mismatch { .. });
            self.inner.shared.metrics.compare_and_set(lost);
            loaded.changes.forget_attribute(name);
            match swap {
                Swap::Swapped => {
                    loaded.known.insert(name, Some(json));
                    return Ok(new);
                }
                // Another process wrote meanwhile (or this request read the
                // value before its turn): try again from the value it wrote.
                Swap::Mismatch { current } => loaded.known.insert(name, current),
                Swap::Gone => return Err(Self::end(&mut loaded)),
            }
            drop(loaded);
            drop(turn);
            backoff(attempt).await;
        }
        Err(SessionError::Contended {
            name: name.to_owned(),
        })
    }
}
