//! Principals from inside a request: binding the session to a user, and
//! the user's other sessions ("your devices", "sign out everywhere else").

use std::fmt;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{Session, Shared};
use crate::config::SessionConfig;
use crate::error::SessionError;
use crate::store::{
    Binding, Label, Principal, PrincipalSession, Revocation, SessionRef, SessionStore, StoreKey,
};

/// One live session of a principal, as a "your devices" page shows it.
///
/// The [`reference`](Self::reference) names the session for
/// [`SessionRegistry::revoke`] and [`Session::revoke_session`]; it is not a
/// cookie and cannot be made into one. `Debug` shows neither the reference
/// nor the label.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// An opaque name for the session, safe to show and to send back.
    pub reference: SessionRef,
    /// When the session was created.
    pub created: OffsetDateTime,
    /// When it was last used (touches are throttled: within the touch
    /// interval, a use may not show).
    pub last_accessed: OffsetDateTime,
    /// When it expires unless used again.
    pub expires_at: OffsetDateTime,
    /// The label the app gave it ([`Session::set_label`]), if any.
    pub label: Option<String>,
    /// Whether it is the session of the request that asked.
    pub current: bool,
}

impl fmt::Debug for SessionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionInfo")
            .field("created", &self.created)
            .field("last_accessed", &self.last_accessed)
            .field("expires_at", &self.expires_at)
            .field("has_label", &self.label.is_some())
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

fn info(session: PrincipalSession, current: Option<&StoreKey>) -> SessionInfo {
    SessionInfo {
        reference: SessionRef::of(&session.key),
        created: session.created,
        last_accessed: session.last_accessed,
        expires_at: session.expires_at,
        label: session.label.map(|l| l.as_str().to_owned()),
        current: current == Some(&session.key),
    }
}

/// Lists and revokes a principal's sessions from outside a request: an
/// administrator's endpoint, a password-change handler, a background job
/// that disables an account. Cheap to clone.
///
/// Get one from the layer ([`SessionLayer::registry`](crate::SessionLayer::registry))
/// or over a store ([`SessionRegistry::new`]). Revocations are atomic per
/// session and checked in the store: once a call returns, no request
/// carrying a revoked session's cookie can read or write it, including
/// requests already in flight.
///
/// ```
/// use tower_httpsession::{MemoryStore, SessionLayer};
///
/// # async fn run() -> Result<(), tower_httpsession::SessionError> {
/// let layer = SessionLayer::new(MemoryStore::default());
/// let registry = layer.registry()?;
/// // After a password change: end every session of the account.
/// let ended = registry.revoke_all("alice@example.com").await?;
/// # let _ = ended;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SessionRegistry {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRegistry")
            .field("store", &self.shared.store.backend())
            .finish()
    }
}

impl SessionRegistry {
    /// A registry over `store`, which must keep a principal index.
    ///
    /// # Errors
    ///
    /// [`SessionError::PrincipalsUnsupported`] if it does not (such as the
    /// tower-sessions adapter).
    pub fn new(store: impl SessionStore) -> Result<Self, SessionError> {
        let store = crate::layer::shared_store(store);
        Self::from_shared(Arc::new(Shared::new(store, SessionConfig::default())))
    }

    pub(crate) fn from_shared(shared: Arc<Shared>) -> Result<Self, SessionError> {
        if !shared.store.supports_principals() {
            return Err(SessionError::PrincipalsUnsupported {
                backend: shared.store.backend(),
            });
        }
        Ok(Self { shared })
    }

    /// The live sessions of `principal`, oldest first.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidName`] for a malformed principal name;
    /// [`SessionError::Store`] if the store fails.
    pub async fn sessions(&self, principal: &str) -> Result<Vec<SessionInfo>, SessionError> {
        let principal = Principal::new(principal)?;
        list(&self.shared, &principal, None).await
    }

    /// Revokes the session of `principal` that `reference` names. Answers
    /// `false`, having deleted nothing, if the reference names no live
    /// session of `principal` (forged, another principal's, already gone).
    ///
    /// # Errors
    ///
    /// As [`sessions`](Self::sessions).
    pub async fn revoke(
        &self,
        principal: &str,
        reference: &SessionRef,
    ) -> Result<bool, SessionError> {
        let principal = Principal::new(principal)?;
        revoke_one(&self.shared, &principal, reference).await
    }

    /// Revokes every session of `principal`; answers how many.
    ///
    /// # Errors
    ///
    /// As [`sessions`](Self::sessions).
    pub async fn revoke_all(&self, principal: &str) -> Result<u64, SessionError> {
        let principal = Principal::new(principal)?;
        Ok(self
            .shared
            .store
            .revoke(&principal, Revocation::All)
            .await?)
    }

    /// Revokes every session of `principal` but the one `keep` names;
    /// answers how many.
    ///
    /// # Errors
    ///
    /// As [`sessions`](Self::sessions).
    pub async fn revoke_all_except(
        &self,
        principal: &str,
        keep: &SessionRef,
    ) -> Result<u64, SessionError> {
        let principal = Principal::new(principal)?;
        let listed = self.shared.store.principal_sessions(&principal).await?;
        let kept = listed
            .into_iter()
            .find(|s| SessionRef::of(&s.key) == *keep)
            .map(|s| s.key);
        let which = match &kept {
            Some(key) => Revocation::AllExcept(key),
            None => Revocation::All,
        };
        Ok(self.shared.store.revoke(&principal, which).await?)
    }
}

async fn list(
    shared: &Shared,
    principal: &Principal,
    current: Option<&StoreKey>,
) -> Result<Vec<SessionInfo>, SessionError> {
    let mut listed: Vec<SessionInfo> = shared
        .store
        .principal_sessions(principal)
        .await?
        .into_iter()
        .map(|s| info(s, current))
        .collect();
    listed.sort_by_key(|s| s.created);
    Ok(listed)
}

async fn revoke_one(
    shared: &Shared,
    principal: &Principal,
    reference: &SessionRef,
) -> Result<bool, SessionError> {
    let listed = shared.store.principal_sessions(principal).await?;
    let Some(found) = listed
        .into_iter()
        .find(|s| SessionRef::of(&s.key) == *reference)
    else {
        return Ok(false);
    };
    let keys = [found.key];
    Ok(shared
        .store
        .revoke(principal, Revocation::Only(&keys))
        .await?
        > 0)
}

impl Session {
    fn require_index(&self) -> Result<(), SessionError> {
        let store = &self.inner.shared.store;
        if store.supports_principals() {
            Ok(())
        } else {
            Err(SessionError::PrincipalsUnsupported {
                backend: store.backend(),
            })
        }
    }

    /// Binds the session to `principal` (a user name, an account id), in
    /// the same write as the request's other changes: the store enters it
    /// in the principal's index and enforces the
    /// [session limit](SessionConfig::with_session_limit), if any. A new
    /// session is stored even if it holds no attribute.
    ///
    /// At login use [`login`](Self::login), which also changes the id.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidName`] (400) for an empty, too long (over
    /// [`MAX_PRINCIPAL_BYTES`](crate::store::MAX_PRINCIPAL_BYTES)) or
    /// control-character name; [`SessionError::PrincipalsUnsupported`] if
    /// the store keeps no principal index. The limit's refusal
    /// ([`SessionError::SessionLimit`], 409) comes with the response, when
    /// the write is made.
    pub async fn set_principal(&self, principal: &str) -> Result<(), SessionError> {
        let principal = Principal::new(principal)?;
        self.require_index()?;
        let limit = self.config().session_limit;
        let mut loaded = self.for_write().await?;
        loaded.changes.bind(Some(Binding::new(principal, limit)));
        Ok(())
    }

    /// Logs `principal` in: changes the session id (against session
    /// fixation) and binds the session to `principal`, written in one
    /// commit with the request's other changes. The old cookie stops
    /// working in that same write.
    ///
    /// ```
    /// use axum::{Form, Router, routing::post};
    /// use tower_httpsession::{MemoryStore, Session, SessionError, SessionLayer};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Credentials { user: String, password: String }
    ///
    /// async fn login(session: Session, Form(c): Form<Credentials>) -> Result<&'static str, SessionError> {
    ///     // ... check c.password ...
    ///     # let _ = c.password;
    ///     session.login(&c.user).await?;
    ///     Ok("welcome")
    /// }
    ///
    /// let app: Router = Router::new()
    ///     .route("/login", post(login))
    ///     .layer(SessionLayer::new(MemoryStore::default()));
    /// # let _ = app;
    /// ```
    ///
    /// # Errors
    ///
    /// As [`set_principal`](Self::set_principal), and
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn login(&self, principal: &str) -> Result<(), SessionError> {
        let checked = Principal::new(principal)?;
        self.require_index()?;
        self.change_id().await?;
        let limit = self.config().session_limit;
        let mut loaded = self.for_write().await?;
        loaded.changes.bind(Some(Binding::new(checked, limit)));
        Ok(())
    }

    /// The principal the session is bound to: this request's binding if it
    /// made one, else the stored one.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn principal(&self) -> Result<Option<String>, SessionError> {
        Ok(self
            .loaded(&[])
            .await?
            .principal()
            .map(|p| p.as_str().to_owned()))
    }

    /// Gives the session a label for a "your devices" page, such as
    /// "Firefox on Linux" (written with the request's other changes). For
    /// a header such as `User-Agent`, clean it first with
    /// [`Label::lossy`](crate::store::Label::lossy).
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidName`] (400) for an empty, too long (over
    /// [`MAX_LABEL_BYTES`](crate::store::MAX_LABEL_BYTES)) or
    /// control-character label.
    pub async fn set_label(&self, label: &str) -> Result<(), SessionError> {
        let label = Label::new(label)?;
        let mut loaded = self.for_write().await?;
        loaded.changes.set_label(Some(label));
        Ok(())
    }

    /// The opaque reference of this session, as
    /// [`principal_sessions`](Self::principal_sessions) lists it.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn reference(&self) -> Result<SessionRef, SessionError> {
        Ok(SessionRef::of(&self.loaded(&[]).await?.id.store_key()))
    }

    /// The stored principal and this session's key, or `None` if the
    /// session is bound to nobody.
    async fn principal_and_key(&self) -> Result<Option<(Principal, StoreKey)>, SessionError> {
        self.require_index()?;
        let loaded = self.loaded(&[]).await?;
        Ok(loaded
            .principal()
            .cloned()
            .map(|p| (p, loaded.id.store_key())))
    }

    /// The live sessions of the principal this session is bound to, oldest
    /// first, with this one marked [`current`](SessionInfo::current); empty
    /// if the session is bound to nobody. A binding made by this request is
    /// written when the response goes out, so this session is listed from
    /// the next request on.
    ///
    /// # Errors
    ///
    /// [`SessionError::PrincipalsUnsupported`], or [`SessionError::Store`].
    pub async fn principal_sessions(&self) -> Result<Vec<SessionInfo>, SessionError> {
        let Some((principal, key)) = self.principal_and_key().await? else {
            return Ok(Vec::new());
        };
        list(&self.inner.shared, &principal, Some(&key)).await
    }

    /// Revokes the session `reference` names, if it is one of this
    /// principal's; answers whether it did. Revoking this very session
    /// [invalidates](Self::invalidate) it.
    ///
    /// # Errors
    ///
    /// As [`principal_sessions`](Self::principal_sessions).
    pub async fn revoke_session(&self, reference: &SessionRef) -> Result<bool, SessionError> {
        let Some((principal, key)) = self.principal_and_key().await? else {
            return Ok(false);
        };
        if SessionRef::of(&key) == *reference {
            self.invalidate().await?;
            return Ok(true);
        }
        revoke_one(&self.inner.shared, &principal, reference).await
    }

    /// Revokes every other session of this session's principal ("sign out
    /// everywhere else", or after a password change); answers how many.
    ///
    /// # Errors
    ///
    /// As [`principal_sessions`](Self::principal_sessions).
    pub async fn revoke_other_sessions(&self) -> Result<u64, SessionError> {
        let Some((principal, key)) = self.principal_and_key().await? else {
            return Ok(0);
        };
        Ok(self
            .store()
            .revoke(&principal, Revocation::AllExcept(&key))
            .await?)
    }
}
