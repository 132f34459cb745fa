//! The per-request session handle.

pub(crate) mod id;
mod state;

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::config::{MAX_INACTIVE_LIMIT, SessionConfig};
use crate::error::SessionError;
use crate::store::{self, Applied, Created, SessionStore, Swap, Touch};

pub use self::id::SessionId;
use self::state::Loaded;
use crate::store::policy::to_time;

/// How many times [`Session::update`] retries a lost compare-and-set.
const UPDATE_ATTEMPTS: usize = 128;
/// How many fresh ids [`Session`] draws if a new one is taken.
const CREATE_ATTEMPTS: usize = 4;

/// The locked state of one request's session.
type State<'a> = MappedMutexGuard<'a, Loaded>;

/// How many locks [`Session::update`] spreads attributes over.
const UPDATE_STRIPES: usize = 64;

/// What the layer shares with every session handle.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) config: SessionConfig,
    /// Requests of this process that update one attribute of one session
    /// take turns (attributes share a lock by the hash of their session key
    /// and name): their compare-and-sets then rarely collide, where
    /// dozens of concurrent ones would mostly lose and retry. Requests of
    /// other processes still meet at the store's compare-and-set.
    update_stripes: Box<[Mutex<()>]>,
    stripe_hasher: RandomState,
}

impl Shared {
    pub(crate) fn new(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        Self {
            store,
            config,
            update_stripes: (0..UPDATE_STRIPES).map(|_| Mutex::new(())).collect(),
            stripe_hasher: RandomState::new(),
        }
    }

    fn update_stripe(&self, key: &store::StoreKey, name: &str) -> &Mutex<()> {
        let hash = self.stripe_hasher.hash_one((key.as_str(), name));
        let index = usize::try_from(hash % UPDATE_STRIPES as u64).unwrap_or(0);
        &self.update_stripes[index]
    }
}

/// A servlet-style HTTP session: named attributes kept in the shared store.
///
/// Take it as an axum extractor in any handler behind a
/// [`SessionLayer`](crate::SessionLayer); plain tower services find it in the
/// request extensions. It is a cheap handle: clones share one state.
///
/// The session is loaded the first time a method reads it, and only the
/// attributes named are read, so a handler that never calls one costs no
/// store round trip. Every method that may load is `async`. Changes are
/// recorded, not written: when the response goes out, the layer writes
/// exactly the attributes this request changed, in one store call. A
/// request that only [`set`](Self::set)s reads nothing: its write checks the
/// cookie in the store. A session is stored, and its cookie sent, only once
/// it holds an attribute.
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_httpsession::{MemoryStore, Session, SessionError, SessionLayer};
///
/// async fn add_to_cart(session: Session) -> Result<String, SessionError> {
///     let mut cart: Vec<String> = session.get("cart").await?.unwrap_or_default();
///     cart.push("teapot".to_owned());
///     session.set("cart", &cart).await?;
///     Ok(format!("{} items", cart.len()))
/// }
///
/// let app: Router = Router::new()
///     .route("/cart", post(add_to_cart))
///     .layer(SessionLayer::new(MemoryStore::default()));
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    cookie: Option<SessionId>,
    /// What the request knows of its session, once a method asked.
    state: Mutex<Option<Loaded>>,
    /// The session this request was using ended under it (another request
    /// changed its id or ended it): nothing more is written, and the
    /// response says so.
    ended: AtomicBool,
}

/// What the response's `Set-Cookie` must do after a commit.
#[derive(Debug)]
pub(crate) enum CookieAction {
    Keep,
    Set(SessionId),
    Remove,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("store", &self.inner.shared.store.backend())
            .field("has_cookie", &self.inner.cookie.is_some())
            .finish_non_exhaustive()
    }
}

/// Waits a random while, growing with `attempt`, after a lost
/// compare-and-set, so that contending requests spread out instead of
/// colliding again at once.
async fn backoff(attempt: usize) {
    let ceiling_us = 200u64 << attempt.min(7);
    let jitter = getrandom::u64().unwrap_or(ceiling_us / 2);
    tokio::time::sleep(Duration::from_micros(jitter % ceiling_us)).await;
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, cookie: Option<SessionId>) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                cookie,
                state: Mutex::new(None),
                ended: AtomicBool::new(false),
            }),
        }
    }

    fn config(&self) -> &SessionConfig {
        &self.inner.shared.config
    }

    fn store(&self) -> &dyn SessionStore {
        &*self.inner.shared.store
    }

    /// Records that the session this request read ended under it: its id
    /// was changed or it was ended by another request, or it expired. The
    /// request goes on with a new, empty session that is never stored, and
    /// its response becomes [`SessionError::Ended`] with the cookie removed.
    fn end_mid_request(&self, loaded: &mut Loaded) -> Result<SessionError, SessionError> {
        tracing::debug!("session ended while the request was using it");
        self.inner.ended.store(true, Ordering::Release);
        *loaded = Loaded::fresh(self.config(), loaded.now, true)?;
        Ok(SessionError::Ended)
    }

    /// Checks that a record loaded after the request's first read is still
    /// the session the request read: same verifier, still live.
    fn still_ours(loaded: &Loaded, record: Option<&crate::store::Record>) -> bool {
        record.is_some_and(|record| {
            loaded
                .cookie_hash
                .is_some_and(|hash| hash.matches(&record.verifier))
        })
    }

    /// Locks the state, loading the session first if no call has yet, and
    /// makes sure the stored values of `names` are known: a request that
    /// touches a few attributes of a large session reads only those.
    async fn loaded(&self, names: &[&str]) -> Result<State<'_>, SessionError> {
        let mut loaded = self.state(|| self.load(Some(names))).await?;
        if !loaded.verified {
            self.verify(&mut loaded, names).await?;
        }
        let unknown = loaded.unknown(names);
        if !unknown.is_empty() {
            let key = loaded.id.store_key();
            let partial = self.store().load_some(&key, &unknown).await?;
            // The session ended, or its id changed, since the request first
            // read it: the old cookie reads nothing more.
            let Some(partial) = partial.filter(|p| Self::still_ours(&loaded, Some(&p.record)))
            else {
                return Err(self.end_mid_request(&mut loaded)?);
            };
            loaded.learn(&unknown, partial.record.attributes, partial.attribute_count);
        }
        Ok(loaded)
    }

    /// Locks the state with every stored attribute known.
    async fn loaded_whole(&self) -> Result<State<'_>, SessionError> {
        let mut loaded = self.state(|| self.load(None)).await?;
        if !loaded.verified {
            self.verify(&mut loaded, &[]).await?;
        }
        if !loaded.complete {
            let key = loaded.id.store_key();
            let record = self.store().load(&key).await?;
            let Some(record) = record.filter(|r| Self::still_ours(&loaded, Some(r))) else {
                return Err(self.end_mid_request(&mut loaded)?);
            };
            let attributes = record.attributes;
            loaded.stored_count = Some(attributes.len());
            loaded.known = attributes.into_iter().map(|(k, v)| (k, Some(v))).collect();
            loaded.complete = true;
        }
        Ok(loaded)
    }

    /// Locks the state for a write, without reading the store: a session
    /// the cookie names and this request has not read yet is written
    /// blind, and the store checks the cookie when the write lands.
    async fn for_write(&self) -> Result<State<'_>, SessionError> {
        self.state(|| async {
            let config = self.config();
            let now = store::now();
            match &self.inner.cookie {
                Some(id) => Ok(Loaded::unverified(id.clone(), config, now)),
                None => Loaded::fresh(config, now, false),
            }
        })
        .await
    }

    /// Locks the state, making it with `init` if no call has yet. Calls of
    /// one request wait for each other, so `init` runs once.
    async fn state<F, Fut>(&self, init: F) -> Result<State<'_>, SessionError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, SessionError>>,
    {
        match MutexGuard::try_map(self.inner.state.lock().await, Option::as_mut) {
            Ok(state) => Ok(state),
            Err(empty) => {
                let loaded = init().await?;
                Ok(MutexGuard::map(empty, |state| state.insert(loaded)))
            }
        }
    }

    /// Reads the session an unverified state stands for, with the
    /// attributes in `names`, keeping what the request set meanwhile.
    async fn verify(&self, loaded: &mut Loaded, names: &[&str]) -> Result<(), SessionError> {
        let mut found = self.load(Some(names)).await?;
        found.adopt(&loaded.changes);
        *loaded = found;
        Ok(())
    }

    /// Loads the session with the attributes in `names`, or all of them.
    async fn load(&self, names: Option<&[&str]>) -> Result<Loaded, SessionError> {
        let config = self.config();
        let now = store::now();
        let Some(id) = &self.inner.cookie else {
            return Loaded::fresh(config, now, false);
        };
        let key = id.store_key();
        let found = match names {
            Some(names) => self
                .store()
                .load_some(&key, names)
                .await?
                .map(|partial| (partial.record, false, partial.attribute_count)),
            None => self.store().load(&key).await?.map(|record| {
                let count = Some(record.attributes.len());
                (record, true, count)
            }),
        };
        let Some((record, complete, count)) = found else {
            return Loaded::fresh(config, now, true);
        };
        if !id.matches(&record.verifier) {
            tracing::debug!("session cookie verifier does not match; starting a new session");
            return Loaded::fresh(config, now, true);
        }
        let absolute_end = config
            .absolute_timeout
            .map(|limit| record.created.saturating_add(to_time(limit)));
        if record.expires_at <= now || absolute_end.is_some_and(|end| end <= now) {
            tracing::debug!("session past its timeout; deleting it");
            self.store().delete(&key, &record.verifier).await?;
            return Loaded::fresh(config, now, true);
        }
        let mut loaded = Loaded::from_record(id.clone(), record, complete, count, config, now);
        if let Some(names) = names {
            // Asked for and not returned: known to be absent.
            for name in names {
                if !loaded.known.contains_key(*name) {
                    loaded.known.insert((*name).to_owned(), None);
                }
            }
        }
        Ok(loaded)
    }

    /// The value of attribute `name`, deserialized, or `None` if the session
    /// has no such attribute.
    ///
    /// # Errors
    ///
    /// [`SessionError::Deserialize`] if the stored value is not a `T`;
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        let loaded = self.loaded(&[name]).await?;
        let Some(json) = loaded.value(name) else {
            return Ok(None);
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|source| SessionError::Deserialize {
                name: name.to_owned(),
                source,
            })
    }

    /// Sets attribute `name` to `value`.
    ///
    /// `set` does not read the store: if the request has not read the
    /// session yet, the write goes out blind when the response does, and the
    /// store checks there that the cookie names a live session (if not, a
    /// new session holds the value, as it would have had the request read
    /// first). So a request that only sets costs one store call. Setting a
    /// value the request read, unchanged, is no change and writes nothing.
    ///
    /// The attribute limit is checked here if the request knows how many
    /// attributes the session holds, else by the store when the write lands;
    /// past it, the response is 413.
    ///
    /// # Errors
    ///
    /// [`SessionError::TooLarge`] past the configured limits,
    /// [`SessionError::Serialize`] if `value` does not serialize.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let json = serde_json::to_string(value).map_err(|source| SessionError::Serialize {
            name: name.to_owned(),
            source,
        })?;
        let mut loaded = self.for_write().await?;
        loaded.record_set(name, json, self.config())
    }

    /// Removes attribute `name`, returning whether it was there.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn remove(&self, name: &str) -> Result<bool, SessionError> {
        let mut loaded = self.loaded(&[name]).await?;
        let present = loaded.value(name).is_some();
        if loaded.stored_has(name) {
            loaded.changes.remove_attribute(name);
        } else {
            loaded.changes.forget_attribute(name);
        }
        Ok(present)
    }

    /// The names of the session's attributes, sorted.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn attribute_names(&self) -> Result<Vec<String>, SessionError> {
        let loaded = self.loaded_whole().await?;
        let mut names: Vec<String> = loaded
            .known
            .iter()
            .filter(|(n, v)| v.is_some() && loaded.changes.attribute(n).is_none())
            .map(|(n, _)| n)
            .cloned()
            .chain(loaded.changes.attributes_set().map(|(n, _)| n.to_owned()))
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    /// Ends the session: the store forgets it when the response goes out and
    /// the browser is told to drop its cookie. The handle then stands for a
    /// new, empty session, which is stored only if the request sets an
    /// attribute on it.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn invalidate(&self) -> Result<(), SessionError> {
        let mut loaded = self.loaded(&[]).await?;
        let old = match (loaded.stored, loaded.cookie_hash) {
            (true, Some(hash)) => Some((loaded.id.store_key(), hash)),
            _ => loaded.to_delete.take(),
        };
        let mut fresh = Loaded::fresh(self.config(), loaded.now, true)?;
        fresh.to_delete = old;
        *loaded = fresh;
        Ok(())
    }

    /// The idle timeout: how long the session lives without a request.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn max_inactive_interval(&self) -> Result<Duration, SessionError> {
        self.read(|l| l.max_inactive).await
    }

    /// Sets this session's idle timeout, between 1 second and 400 days.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidArgument`] outside that range.
    pub async fn set_max_inactive_interval(&self, interval: Duration) -> Result<(), SessionError> {
        if interval < Duration::from_secs(1) || interval > MAX_INACTIVE_LIMIT {
            return Err(SessionError::InvalidArgument(
                "max inactive interval must be between 1 second and 400 days",
            ));
        }
        let mut loaded = self.loaded(&[]).await?;
        loaded.max_inactive = interval;
        let changed = interval != loaded.original_max_inactive;
        loaded.changes.set_max_inactive(changed.then_some(interval));
        Ok(())
    }

    /// The session's id. It stays private to the layer and the browser:
    /// `Debug` prints nothing of it.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn id(&self) -> Result<SessionId, SessionError> {
        self.read(|l| l.id.clone()).await
    }

    /// Whether the browser does not know this session yet: it was created in
    /// this request, or has not been stored because it holds no attribute.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn is_new(&self) -> Result<bool, SessionError> {
        self.read(|l| !l.stored).await
    }

    /// When the session was created.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn creation_time(&self) -> Result<OffsetDateTime, SessionError> {
        self.read(|l| l.created).await
    }

    /// When the session was last used before this request, as stored: to
    /// spare writes, the store records an access at most once per touch
    /// interval (see [`SessionConfig::with_touch_interval`]).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn last_accessed_time(&self) -> Result<OffsetDateTime, SessionError> {
        self.read(|l| l.last_accessed).await
    }

    /// Gives the session a new id and keeps its attributes: call it when the
    /// user logs in, against session fixation. The old cookie stops working
    /// in the same store write that commits the request.
    ///
    /// # Errors
    ///
    /// [`SessionError::Random`] if no random bytes could be had.
    pub async fn change_id(&self) -> Result<(), SessionError> {
        let mut loaded = self.loaded(&[]).await?;
        let id = loaded
            .id
            .with_new_verifier()
            .map_err(SessionError::Random)?;
        if loaded.stored {
            loaded.changes.set_new_verifier(Some(id.verifier_hash()));
            loaded.id_changed = true;
        }
        loaded.id = id;
        Ok(())
    }

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
        // Take the turn before reading, so that the value read is the one
        // the last request of this process wrote. A request without a
        // cookie has a session nobody else knows.
        let _turn = match &self.inner.cookie {
            Some(id) => Some(
                self.inner
                    .shared
                    .update_stripe(&id.store_key(), name)
                    .lock()
                    .await,
            ),
            None => None,
        };
        let mut loaded = self.loaded(&[name]).await?;
        if loaded.needs_count_for(name) {
            drop(loaded);
            loaded = self.loaded_whole().await?;
        }
        for attempt in 0..UPDATE_ATTEMPTS {
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
            if !loaded.stored {
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
            let key = loaded.id.store_key();
            let Some(verifier) = loaded.cookie_hash else {
                return Err(self.end_mid_request(&mut loaded)?);
            };
            match self
                .store()
                .compare_and_set(&key, &verifier, name, expected.as_deref(), Some(&json))
                .await?
            {
                Swap::Swapped => {
                    loaded.known.insert(name.to_owned(), Some(json));
                    loaded.changes.forget_attribute(name);
                    return Ok(new);
                }
                Swap::Mismatch { current } => {
                    loaded.known.insert(name.to_owned(), current);
                    loaded.changes.forget_attribute(name);
                    // A miss means another process wrote meanwhile (or this
                    // request read the value before its turn).
                    backoff(attempt).await;
                }
                Swap::Gone => return Err(self.end_mid_request(&mut loaded)?),
            }
        }
        Err(SessionError::Contended {
            name: name.to_owned(),
        })
    }

    async fn read<R>(&self, f: impl FnOnce(&Loaded) -> R) -> Result<R, SessionError> {
        Ok(f(&*self.loaded(&[]).await?))
    }

    /// Writes what the request changed; called by the layer once the
    /// handler has answered.
    pub(crate) async fn commit(&self) -> Result<CookieAction, SessionError> {
        let config = self.config();
        let store = self.store();
        let Ok(mut loaded) = MutexGuard::try_map(self.inner.state.lock().await, Option::as_mut)
        else {
            return Ok(CookieAction::Keep);
        };
        if self.inner.ended.load(Ordering::Acquire) {
            return Err(SessionError::Ended);
        }
        if let Some((key, verifier)) = loaded.to_delete.take() {
            store.delete(&key, &verifier).await?;
        }
        if loaded.stored {
            if !loaded.changes.has_changes() && !loaded.touch_due {
                return Ok(CookieAction::Keep);
            }
            let touch = Touch {
                last_accessed: loaded.now,
                absolute_timeout: config.absolute_timeout,
                interval: config.touch_interval,
            };
            loaded.changes.set_touch(Some(touch));
            let hash = loaded.cookie_hash;
            loaded.changes.require_verifier(hash);
            if loaded.attribute_count().is_none() {
                loaded.changes.limit_attributes(Some(config.max_attributes));
            }
            match store.apply(&loaded.id.store_key(), &loaded.changes).await? {
                Applied::Written if loaded.id_changed => {
                    return Ok(CookieAction::Set(loaded.id.clone()));
                }
                Applied::Written => return Ok(CookieAction::Keep),
                Applied::TooManyAttributes => {
                    let name = loaded
                        .changes
                        .attributes_set()
                        .next()
                        .map_or("", |(name, _)| name);
                    return Err(SessionError::too_large(
                        name,
                        "attribute count",
                        config.max_attributes,
                    ));
                }
                Applied::Gone if loaded.verified => {
                    tracing::debug!("session ended by another request; its changes are dropped");
                    self.inner.ended.store(true, Ordering::Release);
                    return Err(SessionError::Ended);
                }
                Applied::Stale => {
                    tracing::debug!("session id changed after the request's cookie was issued");
                    self.inner.ended.store(true, Ordering::Release);
                    return Err(SessionError::Ended);
                }
                Applied::Gone => {
                    // The cookie named no live session: what the request set
                    // goes into a new one, as if it had read first.
                    tracing::debug!("session cookie names no live session; starting a new one");
                    let pending = std::mem::take(&mut loaded.changes);
                    *loaded = Loaded::fresh(config, loaded.now, true)?;
                    loaded.adopt(&pending);
                    if loaded
                        .attribute_count()
                        .is_some_and(|count| count > config.max_attributes)
                    {
                        return Err(SessionError::too_large(
                            pending.attributes_set().next().map_or("", |(name, _)| name),
                            "attribute count",
                            config.max_attributes,
                        ));
                    }
                }
            }
        }
        if loaded.is_empty() {
            return Ok(if loaded.cookie_stale {
                CookieAction::Remove
            } else {
                CookieAction::Keep
            });
        }
        let mut record = loaded.record(config);
        for _ in 0..CREATE_ATTEMPTS {
            match store.create(&loaded.id.store_key(), &record).await? {
                Created::Stored => return Ok(CookieAction::Set(loaded.id.clone())),
                Created::KeyTaken => {
                    loaded.id = SessionId::generate().map_err(SessionError::Random)?;
                    record.verifier = loaded.id.verifier_hash();
                }
            }
        }
        Err(SessionError::InvalidArgument(
            "every freshly drawn session id was taken; the random number generator is broken",
        ))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            tracing::error!("a handler takes a Session but no SessionLayer wraps its route");
            SessionError::MissingLayer
        })
    }
}
