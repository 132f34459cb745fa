//! The per-request session handle.

mod combine;
mod commit;
mod compat;
pub(crate) mod id;
mod principal;
mod state;
mod update;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::FromRequestParts;
use http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::config::{MAX_INACTIVE_LIMIT, SessionConfig};
use crate::error::SessionError;
use crate::layer::cookie::CookieLines;
use crate::store::instrumented::Instrumented;
use crate::store::{self, SessionStore};
use crate::telemetry::SessionMetrics;

use self::combine::Combiner;
pub(crate) use self::commit::CookieAction;
pub use self::id::SessionId;
pub use self::principal::{SessionInfo, SessionRegistry};
use self::state::{Loaded, Predecessor};
use crate::store::policy::to_time;

/// The locked state of one request's session.
type State<'a> = MappedMutexGuard<'a, Loaded>;

/// What the layer shares with every session handle.
pub(crate) struct Shared {
    /// The store, each call traced and measured.
    pub(crate) store: Instrumented,
    pub(crate) config: SessionConfig,
    /// The session counters (nothing without the feature `metrics`).
    pub(crate) metrics: SessionMetrics,
    /// Combining for `update`: see the `combine` module.
    combiner: Combiner,
}

impl Shared {
    pub(crate) fn new(store: Arc<dyn SessionStore>, config: SessionConfig) -> Self {
        Self {
            store: Instrumented::new(store),
            config,
            metrics: SessionMetrics::default(),
            combiner: Combiner::default(),
        }
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
    /// The request's `Cookie` lines, read for the session cookie when a
    /// method first needs it.
    cookie_lines: CookieLines,
    /// The session cookie's id, once looked for.
    cookie: OnceLock<Option<SessionId>>,
    /// What the request knows of its session, once a method asked. Boxed:
    /// a request that never uses its session neither builds nor copies it.
    state: Mutex<Option<Box<Loaded>>>,
    /// Whether a method has set out to build the state: until then the
    /// commit has nothing to do.
    used: AtomicBool,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("store", &self.inner.shared.store.backend())
            .field("has_cookie", &self.cookie().is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, cookie_lines: CookieLines) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared,
                cookie_lines,
                cookie: OnceLock::new(),
                state: Mutex::new(None),
                used: AtomicBool::new(false),
            }),
        }
    }

    /// The id the request's session cookie carries, if it has a
    /// well-formed one: looked for in the `Cookie` lines on the first call.
    fn cookie(&self) -> Option<&SessionId> {
        let inner = &*self.inner;
        inner
            .cookie
            .get_or_init(|| {
                inner
                    .cookie_lines
                    .session_id(&inner.shared.config.cookie_name)
            })
            .as_ref()
    }

    fn config(&self) -> &SessionConfig {
        &self.inner.shared.config
    }

    fn store(&self) -> &Instrumented {
        &self.inner.shared.store
    }

    /// Records that the session this request read ended under it: its id
    /// was changed or it was ended by another request, or it expired.
    /// Nothing more is read or written, and the response becomes
    /// [`SessionError::Ended`] with the cookie removed.
    fn end(loaded: &mut Loaded) -> SessionError {
        tracing::debug!("session ended while the request was using it");
        loaded.end();
        SessionError::Ended
    }

    /// Whether a record loaded after the request's first read is still the
    /// session the request read: same verifier (and live, since the store
    /// returned it).
    fn still_ours(loaded: &Loaded, record: &crate::store::Record) -> bool {
        loaded
            .verifier()
            .is_some_and(|hash| hash.matches(&record.verifier))
    }

    /// Locks the state, loading the session first if no call has yet, and
    /// makes sure the stored values of `names` are known: a request that
    /// touches a few attributes of a large session reads only those.
    async fn loaded(&self, names: &[&str]) -> Result<State<'_>, SessionError> {
        let mut loaded = self.state(|| self.load(Some(names))).await?;
        loaded.check_live()?;
        if !loaded.is_read() {
            self.verify(&mut loaded, names).await?;
        }
        let unknown = loaded.unknown(names);
        if !unknown.is_empty() {
            let key = loaded.id.store_key();
            let partial = self.store().load_some(&key, &unknown).await?;
            // The session ended, or its id changed, since the request first
            // read it: the old cookie reads nothing more.
            let Some(partial) = partial.filter(|p| Self::still_ours(&loaded, &p.record)) else {
                return Err(Self::end(&mut loaded));
            };
            loaded.learn(&unknown, partial.record.attributes, partial.attribute_count);
        }
        Ok(loaded)
    }

    /// Locks the state with every stored attribute known.
    async fn loaded_whole(&self) -> Result<State<'_>, SessionError> {
        let mut loaded = self.state(|| self.load(None)).await?;
        loaded.check_live()?;
        if !loaded.is_read() {
            self.verify(&mut loaded, &[]).await?;
        }
        if !loaded.known.is_complete() {
            let key = loaded.id.store_key();
            let record = self.store().load(&key).await?;
            let Some(record) = record.filter(|r| Self::still_ours(&loaded, r)) else {
                return Err(Self::end(&mut loaded));
            };
            loaded.learn_all(record.attributes);
        }
        Ok(loaded)
    }

    /// Locks the state for a write, without reading the store: a session
    /// the cookie names and this request has not read yet is written
    /// blind, and the store checks the cookie when the write lands.
    async fn for_write(&self) -> Result<State<'_>, SessionError> {
        let loaded = self
            .state(|| async {
                let config = self.config();
                let now = store::now();
                match self.cookie() {
                    Some(id) => Ok(Loaded::unread(id.clone(), config, now)),
                    None => Loaded::new(config, now, Predecessor::None),
                }
            })
            .await?;
        loaded.check_live()?;
        Ok(loaded)
    }

    /// Locks the state, making it with `init` if no call has yet. Calls of
    /// one request wait for each other, so `init` runs once.
    async fn state<F, Fut>(&self, init: F) -> Result<State<'_>, SessionError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Loaded, SessionError>>,
    {
        match MutexGuard::try_map(self.lock_state().await, Option::as_deref_mut) {
            Ok(state) => Ok(state),
            Err(empty) => {
                self.inner.used.store(true, Ordering::Release);
                let loaded = init().await?;
                Ok(MutexGuard::map(empty, |state| {
                    &mut **state.insert(Box::new(loaded))
                }))
            }
        }
    }

    /// Locks the state: at once if nobody holds or waits for it, as is the
    /// rule, else in turn.
    async fn lock_state(&self) -> MutexGuard<'_, Option<Box<Loaded>>> {
        match self.inner.state.try_lock() {
            Ok(state) => state,
            Err(_) => self.inner.state.lock().await,
        }
    }

    /// Whether no method has used the session: the commit has nothing to
    /// write and no cookie to send.
    pub(crate) fn is_untouched(&self) -> bool {
        !self.inner.used.load(Ordering::Acquire)
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
        let Some(id) = self.cookie() else {
            return Loaded::new(config, now, Predecessor::None);
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
            return Loaded::new(config, now, Predecessor::StaleCookie);
        };
        if !id.matches(&record.verifier) {
            tracing::debug!("session cookie verifier does not match; starting a new session");
            return Loaded::new(config, now, Predecessor::StaleCookie);
        }
        let absolute_end = config
            .absolute_timeout
            .map(|limit| record.created.saturating_add(to_time(limit)));
        if record.expires_at <= now || absolute_end.is_some_and(|end| end <= now) {
            tracing::debug!("session past its timeout; deleting it");
            self.store().delete(&key, &record.verifier).await?;
            self.inner.shared.metrics.expired();
            return Loaded::new(config, now, Predecessor::StaleCookie);
        }
        let mut loaded = Loaded::read(id.clone(), record, complete, count, config, now);
        if let Some(names) = names {
            // Asked for and not returned: known to be absent.
            let attributes = std::collections::HashMap::new();
            let unknown = loaded.unknown(names);
            loaded.learn(&unknown, attributes, None);
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
        Ok(loaded.record_remove(name))
    }

    /// The names of the session's attributes, sorted.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn attribute_names(&self) -> Result<Vec<String>, SessionError> {
        Ok(self.loaded_whole().await?.names())
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
        self.loaded(&[]).await?.invalidate(self.config())
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
    pub async fn set_max_inactive_interval(
        &self,
        interval: impl crate::config::IntoDuration,
    ) -> Result<(), SessionError> {
        let interval = interval.into_duration().unwrap_or_default();
        if interval < Duration::from_secs(1) || interval > MAX_INACTIVE_LIMIT {
            return Err(SessionError::InvalidArgument(
                "max inactive interval must be between 1 second and 400 days",
            ));
        }
        self.loaded(&[]).await?.set_max_inactive(interval);
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
        self.read(|l| !l.is_stored()).await
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
        self.loaded(&[]).await?.rotate()
    }

    async fn read<R>(&self, f: impl FnOnce(&Loaded) -> R) -> Result<R, SessionError> {
        Ok(f(&*self.loaded(&[]).await?))
    }

    /// Forgets what the request changed, but an invalidation: called by
    /// the layer for a 5xx response when configured to.
    pub(crate) async fn discard_changes(&self) {
        if let Some(loaded) = self.lock_state().await.as_mut() {
            loaded.discard();
        }
    }

    /// Writes what the request changed; called by the layer once the
    /// handler has answered. What it writes is the commit engine's
    /// (`session/commit.rs`).
    pub(crate) async fn commit(&self) -> Result<CookieAction, SessionError> {
        let Ok(mut loaded) = MutexGuard::try_map(self.lock_state().await, Option::as_deref_mut)
        else {
            return Ok(CookieAction::Keep);
        };
        commit::commit(&self.inner.shared, &mut loaded).await
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
