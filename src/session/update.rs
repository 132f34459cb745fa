//! [`Session::update`]: an atomic read-modify-write of one attribute.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use std::sync::Arc;

use super::Session;
use super::combine::{self, Batch, Leader, Role, ToMember};
use super::state::Loaded;
use crate::error::SessionError;
use crate::store::{StoreError, Swap, VerifierHash};

/// How many times [`Session::update`] retries a lost compare-and-set.
const UPDATE_ATTEMPTS: usize = 128;

/// How many more batches a leader writes, after its own, for the members
/// that queued meanwhile, before it answers its own request and hands the
/// lead on.
const MORE_BATCHES: usize = 3;

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
    /// Concurrent updates of the same attribute of the same session in this
    /// process are combined: one request reads the value, each applies its
    /// `f` in turn to the value the one before produced, and one
    /// compare-and-set writes the result, so a burst of updates costs one
    /// read and one write, not one of each per request. Updates that queued
    /// meanwhile go in up to three more such writes, each against the value
    /// just written, without a read.
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
        // A request without a cookie has a session nobody else knows, and
        // one that changed the attribute itself must start from its own
        // change: neither combines.
        let Some(cookie) = self.cookie() else {
            return self.update_alone(name, &mut f, None, None).await;
        };
        if self.changed_here(name).await {
            return self.update_alone(name, &mut f, None, None).await;
        }
        let id = combine::slot_id(cookie.store_key(), &cookie.verifier_hash(), name);
        let combiner = &self.inner.shared.combiner;
        let mut last: Option<T> = None;
        for _ in 0..UPDATE_ATTEMPTS {
            let mut inbox = match combiner.join(&id) {
                Role::Lead(leader) => return self.lead(name, &mut f, leader, None).await,
                Role::Member(inbox) => inbox,
            };
            while let Some(message) = inbox.recv().await {
                match message {
                    ToMember::Compute { input, reply } => {
                        match self.compute(name, &mut f, input.as_deref()) {
                            Ok((value, json)) => {
                                last = Some(value);
                                let _ = reply.send(Some(json));
                            }
                            Err(e) => {
                                let _ = reply.send(None);
                                return Err(e);
                            }
                        }
                    }
                    ToMember::Written(json) => {
                        self.learn_written(name, &json).await?;
                        if let Some(value) = last.take() {
                            return Ok(value);
                        }
                    }
                    ToMember::Ended => {
                        let mut loaded = self.for_write().await?;
                        return Err(Self::end(&mut loaded));
                    }
                    ToMember::Contended => {
                        return Err(SessionError::Contended {
                            name: name.to_owned(),
                        });
                    }
                    ToMember::Alone => return self.update_alone(name, &mut f, None, None).await,
                    ToMember::Lead(written) => {
                        let leader = combiner.leader(&id);
                        return self.lead(name, &mut f, leader, written).await;
                    }
                }
            }
            // The leader went away before it was done: queue again.
        }
        Err(SessionError::Contended {
            name: name.to_owned(),
        })
    }

    /// Whether this request holds a change of `name` of its own.
    async fn changed_here(&self, name: &str) -> bool {
        self.inner
            .state
            .lock()
            .await
            .as_ref()
            .is_some_and(|loaded| loaded.changes.attribute(name).is_some())
    }

    /// `f` applied to the stored JSON `input`: the value and its JSON,
    /// checked against the size limits.
    fn compute<T, F>(
        &self,
        name: &str,
        f: &mut F,
        input: Option<&str>,
    ) -> Result<(T, String), SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let old = input
            .map(serde_json::from_str)
            .transpose()
            .map_err(|source| SessionError::Deserialize {
                name: name.to_owned(),
                source,
            })?;
        let new = f(old);
        let json = serde_json::to_string(&new).map_err(|source| SessionError::Serialize {
            name: name.to_owned(),
            source,
        })?;
        let config = self.config();
        if name.len() > config.max_name_bytes {
            return Err(SessionError::too_large(
                name,
                crate::error::Limit::NameBytes,
                config.max_name_bytes,
            ));
        }
        if json.len() > config.max_attribute_bytes {
            return Err(SessionError::too_large(
                name,
                crate::error::Limit::ValueBytes,
                config.max_attribute_bytes,
            ));
        }
        Ok((new, json))
    }

    /// Records what a batch wrote: the store holds `json` for `name`.
    async fn learn_written(&self, name: &str, json: &str) -> Result<(), SessionError> {
        let mut loaded = self.for_write().await?;
        loaded.changes.forget_attribute(name);
        if loaded.is_stored() {
            loaded.known.insert(name, Some(json.to_owned()));
        }
        Ok(())
    }

    /// Leads a slot: reads (unless the leader before handed over what it
    /// wrote), passes the value through the batch, writes.
    async fn lead<T, F>(
        &self,
        name: &str,
        f: &mut F,
        mut leader: Leader<'_>,
        written: Option<Arc<str>>,
    ) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let mut batch = Batch::default();
        let outcome = self
            .update_alone(name, f, Some((&leader, &mut batch)), written)
            .await;
        match &outcome {
            // The next leader starts from what this one wrote.
            Ok(_) => leader.hand_over(batch.take_written()),
            Err(SessionError::Ended) => batch.finish(|| ToMember::Ended),
            Err(SessionError::Contended { .. }) => batch.finish(|| ToMember::Contended),
            // The leader's own failure (its closure, the store) is not the
            // members': they go on alone.
            Err(_) => batch.finish(|| ToMember::Alone),
        }
        drop(leader);
        outcome
    }

    /// The compare-and-set loop. With a leader and its batch, each attempt
    /// takes in the members queued so far and passes the value through
    /// them after `f`, and a written value is told to them. `handed`: the
    /// value the leader before wrote, which the first attempt starts from
    /// instead of reading the store; the compare-and-set checks it there,
    /// with the cookie's verifier, as it checks a value read.
    async fn update_alone<T, F>(
        &self,
        name: &str,
        f: &mut F,
        mut lead: Option<(&Leader<'_>, &mut Batch)>,
        mut handed: Option<Arc<str>>,
    ) -> Result<T, SessionError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let config = self.config();
        let cookie_verifier = self.cookie().map(super::SessionId::verifier_hash);
        for attempt in 0..UPDATE_ATTEMPTS {
            let mut loaded = match handed.take() {
                Some(written) => {
                    let mut loaded = self.for_write().await?;
                    if loaded.is_stored() {
                        loaded.known.insert(name, Some(written.to_string()));
                    } else {
                        drop(loaded);
                        loaded = self.loaded(&[name]).await?;
                    }
                    loaded
                }
                None => self.loaded(&[name]).await?,
            };
            if loaded.needs_count_for(name) {
                drop(loaded);
                loaded = self.loaded_whole().await?;
            }
            let combining = lead.is_some()
                && loaded.is_stored()
                && loaded.verifier() == cookie_verifier
                && loaded.changes.attribute(name).is_none();
            if !combining {
                if let Some((_, batch)) = lead.take() {
                    // Not the stored session the members' cookie names
                    // (it is new, or this request changed it): each goes
                    // on alone.
                    batch.finish(|| ToMember::Alone);
                }
            }
            let (new, own) = self.compute(name, f, loaded.value(name))?;
            if !loaded.is_stored() {
                // Nobody else knows this session yet: a local change is atomic.
                loaded.record_set(name, own, config)?;
                return Ok(new);
            }
            loaded.check_limits(name, &own, config)?;
            let json = match lead.as_mut() {
                Some((leader, batch)) => {
                    leader.gather(batch);
                    if !batch.is_empty() {
                        tokio::task::yield_now().await;
                        leader.gather(batch);
                    }
                    if batch.is_empty() {
                        own
                    } else {
                        batch.compute(own).await
                    }
                }
                None => own,
            };
            let expected = loaded.stored(name).flatten().map(str::to_owned);
            if expected.as_deref() == Some(json.as_str()) {
                loaded.changes.forget_attribute(name);
                if let Some((_, batch)) = lead.as_mut() {
                    batch.written(&json.into());
                }
                return Ok(new);
            }
            let Some(verifier) = loaded.verifier() else {
                return Err(Self::end(&mut loaded));
            };
            let swap = self
                .swap(&loaded, verifier, name, expected.as_deref(), &json)
                .await?;
            loaded.changes.forget_attribute(name);
            match swap {
                Swap::Swapped => {
                    loaded.known.insert(name, Some(json.clone()));
                    if let Some((leader, batch)) = lead.as_mut() {
                        let written: Arc<str> = json.into();
                        batch.written(&written);
                        self.write_on(name, &mut loaded, verifier, leader, batch, written)
                            .await;
                    }
                    return Ok(new);
                }
                // Another process wrote meanwhile (or this request read the
                // value before its turn): try again from the value it wrote.
                Swap::Mismatch { current } => loaded.known.insert(name, current),
                Swap::Gone => return Err(Self::end(&mut loaded)),
            }
            drop(loaded);
            backoff(attempt).await;
        }
        Err(SessionError::Contended {
            name: name.to_owned(),
        })
    }

    /// One compare-and-set of `name` from `expected` to `json`, counted in
    /// the metrics.
    async fn swap(
        &self,
        loaded: &Loaded,
        verifier: VerifierHash,
        name: &str,
        expected: Option<&str>,
        json: &str,
    ) -> Result<Swap, StoreError> {
        let swap = self
            .store()
            .compare_and_set(
                &loaded.id.store_key(),
                &verifier,
                name,
                expected,
                Some(json),
            )
            .await?;
        let lost = matches!(swap, Swap::Mismatch { .. });
        self.inner.shared.metrics.compare_and_set(lost);
        Ok(swap)
    }

    /// After its own batch is written, a leader writes for the members that
    /// queued meanwhile, at most [`MORE_BATCHES`] more batches. It knows
    /// what the store holds, since it just wrote it: each batch costs one
    /// compare-and-set against that value, and no read, where a new
    /// leader would read first. If the store holds something else (another
    /// process wrote), or the call fails, the batch goes on alone, each
    /// member reading and writing for itself; if the session ended, the
    /// batch is told so.
    async fn write_on(
        &self,
        name: &str,
        loaded: &mut Loaded,
        verifier: VerifierHash,
        leader: &Leader<'_>,
        batch: &mut Batch,
        mut current: Arc<str>,
    ) {
        for _ in 0..MORE_BATCHES {
            leader.gather(batch);
            if batch.is_empty() {
                return;
            }
            tokio::task::yield_now().await;
            leader.gather(batch);
            let json = batch.compute(current.to_string()).await;
            if batch.is_empty() {
                // Every member failed on its own closure, or went away.
                return;
            }
            if *json == *current {
                batch.written(&current);
                continue;
            }
            match self
                .swap(loaded, verifier, name, Some(&current), &json)
                .await
            {
                Ok(Swap::Swapped) => {
                    loaded.known.insert(name, Some(json.clone()));
                    current = json.into();
                    batch.written(&current);
                }
                Ok(Swap::Gone) => {
                    batch.finish(|| ToMember::Ended);
                    return;
                }
                Ok(Swap::Mismatch { .. }) | Err(_) => {
                    // What this leader wrote is no longer what the store
                    // holds: the next one reads.
                    batch.take_written();
                    batch.finish(|| ToMember::Alone);
                    return;
                }
            }
        }
    }
}
