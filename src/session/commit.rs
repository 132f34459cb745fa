//! The commit: what a request writes when its response goes out.
//!
//! One table answers "what does this request write?", by where its session
//! came from ([`Origin`]):
//!
//! | Origin | Changed? | Writes | Then the cookie |
//! | --- | --- | --- | --- |
//! | `Ended` | any | nothing | removed; the response becomes 409 |
//! | `New(Invalidated)` | any | `delete` of the old session (if its verifier is still the cookie's), then as `New` | |
//! | `New(_)` | holds no attribute and is bound to no principal | nothing | removed if the request carried one, else untouched |
//! | `New(_)` | holds attributes, or is bound to a principal | `create` (a fresh id if the key is taken), with the principal's limit | set |
//! | `Read` | nothing, no touch due | nothing | untouched |
//! | `Unread` | nothing | nothing | untouched |
//! | `Read` / `Unread` | changes or a due touch | one `apply`, guarded by the cookie's verifier and the attribute limit | set if the id changed, else untouched |
//!
//! and what the store answers to that `apply`:
//!
//! | Answer | Means | Then |
//! | --- | --- | --- |
//! | `Written` | | as above |
//! | `TooManyAttributes` | the change adds names past the limit; nothing written | 413 |
//! | `LimitReached` | the change binds a principal that holds its session limit, and the policy refuses; nothing written | 409, cookie kept |
//! | `Stale` | the session is live but its verifier is not the cookie's: the id changed after the cookie was issued | nothing written; 409, cookie removed |
//! | `Gone`, session `Read` | it ended while the request ran | nothing written; 409, cookie removed |
//! | `Gone`, session `Unread` | the cookie named no live session | what the request set goes into a new session (`create`), as if it had read first |

use crate::config::SessionConfig;
use crate::error::{Limit, SessionError};
use crate::session::state::{Loaded, Origin, Predecessor};
use crate::session::{SessionId, Shared};
use crate::store::{Applied, Created, Touch};

/// How many fresh ids a new session draws if one is taken.
const CREATE_ATTEMPTS: usize = 4;

/// What the response's `Set-Cookie` must do after a commit.
#[derive(Debug)]
pub(crate) enum CookieAction {
    Keep,
    /// Send the cookie, with this `Max-Age` if it is persistent.
    Set(SessionId, Option<std::time::Duration>),
    Remove,
}

/// The cookie's `Max-Age` if the layer sends persistent cookies: the idle
/// timeout, or what is left of the absolute timeout if that ends first.
fn max_age(config: &SessionConfig, loaded: &Loaded) -> Option<std::time::Duration> {
    if !config.persistent_cookie {
        return None;
    }
    let idle = loaded.max_inactive;
    let left = config.absolute_timeout.map(|limit| {
        let end = loaded.created + crate::store::policy::to_time(limit);
        std::time::Duration::try_from(end - loaded.now).unwrap_or_default()
    });
    Some(left.map_or(idle, |left| left.min(idle)))
}

/// Sends the cookie again.
fn set(config: &SessionConfig, loaded: &Loaded) -> CookieAction {
    CookieAction::Set(loaded.id.clone(), max_age(config, loaded))
}

/// Writes what the request changed (see the [module docs](self)).
pub(super) async fn commit(
    shared: &Shared,
    loaded: &mut Loaded,
) -> Result<CookieAction, SessionError> {
    match loaded.origin.clone() {
        Origin::Ended => Err(SessionError::Ended),
        Origin::New(predecessor) => {
            if let Predecessor::Invalidated { key, verifier } = &predecessor {
                shared.store.delete(key, verifier).await?;
                shared.metrics.invalidated();
            }
            create(shared, loaded, predecessor != Predecessor::None).await
        }
        Origin::Read { touch_due, .. } if !loaded.changes.has_changes() && !touch_due => {
            Ok(CookieAction::Keep)
        }
        Origin::Unread { .. } if !loaded.changes.has_changes() => Ok(CookieAction::Keep),
        Origin::Read { verifier, .. } | Origin::Unread { verifier } => {
            apply(shared, loaded, verifier).await
        }
    }
}

/// One `apply` to a stored session, and what its answer means.
async fn apply(
    shared: &Shared,
    loaded: &mut Loaded,
    verifier: crate::store::VerifierHash,
) -> Result<CookieAction, SessionError> {
    let config = &shared.config;
    loaded.changes.set_touch(Some(Touch {
        last_accessed: loaded.now,
        absolute_timeout: config.absolute_timeout,
        interval: config.touch_interval,
    }));
    loaded.changes.require_verifier(Some(verifier));
    if loaded.attribute_count().is_none() {
        loaded.changes.limit_attributes(Some(config.max_attributes));
    }
    let applied = shared
        .store
        .apply(&loaded.id.store_key(), &loaded.changes)
        .await?;
    if applied == Applied::Written {
        shared.metrics.applied(&loaded.changes);
    }
    // A persistent cookie's `Max-Age` runs from when it was sent: it is
    // sent again when the touch is written (the store's expiry moved), so
    // it lives as long as the session, and not on other responses.
    let refresh = config.persistent_cookie
        && (matches!(
            loaded.origin,
            Origin::Read {
                touch_due: true,
                ..
            }
        ) || loaded.changes.max_inactive().is_some());
    match applied {
        Applied::Written if loaded.changes.new_verifier().is_some() || refresh => {
            Ok(set(config, loaded))
        }
        Applied::Written => Ok(CookieAction::Keep),
        Applied::TooManyAttributes => Err(too_many(loaded, config)),
        Applied::LimitReached => Err(SessionError::SessionLimit),
        Applied::Stale => {
            tracing::debug!("session id changed after the request's cookie was issued");
            loaded.end();
            Err(SessionError::Ended)
        }
        Applied::Gone if loaded.is_read() => {
            tracing::debug!("session ended by another request; its changes are dropped");
            loaded.end();
            Err(SessionError::Ended)
        }
        Applied::Gone => {
            // The cookie named no live session: what the request set goes
            // into a new one, as if it had read first.
            tracing::debug!("session cookie names no live session; starting a new one");
            let pending = std::mem::take(&mut loaded.changes);
            *loaded = Loaded::new(config, loaded.now, Predecessor::StaleCookie)?;
            loaded.adopt(&pending);
            if loaded
                .attribute_count()
                .is_some_and(|count| count > config.max_attributes)
            {
                return Err(too_many(loaded, config));
            }
            create(shared, loaded, true).await
        }
    }
}

/// Stores a new session if it holds an attribute. `had_cookie`: the request
/// carried a cookie that now names nothing, to be removed if nothing is
/// stored.
async fn create(
    shared: &Shared,
    loaded: &mut Loaded,
    had_cookie: bool,
) -> Result<CookieAction, SessionError> {
    let config = &shared.config;
    if loaded.is_empty() && !loaded.is_bound_new() {
        return Ok(if had_cookie {
            CookieAction::Remove
        } else {
            CookieAction::Keep
        });
    }
    let mut record = loaded.record(config);
    let limit = loaded.changes.binding().and_then(|binding| binding.limit);
    for _ in 0..CREATE_ATTEMPTS {
        let key = loaded.id.store_key();
        match shared.store.create(&key, &record, limit.as_ref()).await? {
            Created::Stored => {
                shared.metrics.created(&record);
                return Ok(set(config, loaded));
            }
            Created::LimitReached => return Err(SessionError::SessionLimit),
            Created::Evicted => {
                tracing::debug!("new session evicted by a concurrent login of its principal");
                loaded.end();
                return Err(SessionError::Ended);
            }
            Created::KeyTaken => {
                loaded.id = SessionId::generate().map_err(SessionError::Random)?;
                record.verifier = loaded.id.verifier_hash();
            }
        }
    }
    Err(SessionError::IdsExhausted)
}

fn too_many(loaded: &Loaded, config: &SessionConfig) -> SessionError {
    let name = loaded
        .changes
        .attributes_set()
        .next()
        .map_or("", |(name, _)| name);
    SessionError::too_large(name, Limit::AttributeCount, config.max_attributes)
}
