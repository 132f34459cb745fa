//! What one request knows of its session, and what it changed.
//!
//! [`Loaded`] is the per-request state. Where the session came from, and so
//! what the commit may do with it, is one explicit [`Origin`]; the methods
//! that move between origins are the only way it changes:
//!
//! ```text
//!             no cookie, or the cookie names no live session
//!   request ─────────────────────────────────────────────► New
//!      │  cookie, first call is a set        read                │ invalidate
//!      ├──────────────────────────► Unread ─────────► Read ◄─────┘ (New again,
//!      │  cookie, first call reads              ▲       │          predecessor
//!      └────────────────────────────────────────┘       │          Invalidated)
//!                                                       │ its verifier changed
//!                       any state, store says so ──► Ended ◄┘ under the request
//! ```

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::SessionConfig;
use crate::error::SessionError;
use crate::session::SessionId;
use crate::store::{ChangeSet, Label, Principal, Record, StoreKey, VerifierHash, policy};

#[path = "known.rs"]
mod known;
pub(super) use self::known::Known;

/// Where the request's session came from, and what the store said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// No stored session stands behind this request: it had no cookie, its
    /// cookie named no live session, or it invalidated the one it named. A
    /// new session, stored at commit only if it holds an attribute.
    New(Predecessor),
    /// The cookie names a session this request has not read: what it sets
    /// goes out blind, and the store checks the cookie's verifier when the
    /// write lands.
    Unread {
        /// The hash of the cookie's verifier.
        verifier: VerifierHash,
    },
    /// The store said the cookie names this live session.
    Read {
        /// The verifier hash the store holds, which the cookie matched: every
        /// write requires it.
        verifier: VerifierHash,
        /// Whether the stored last access is a touch interval old.
        touch_due: bool,
    },
    /// The session ended under the request: another request changed its id
    /// or ended it, or it expired, after this one first read it. Nothing
    /// more is read or written; every call answers
    /// [`SessionError::Ended`], and so does the response.
    Ended,
}

/// What a [new](Origin::New) session stands in place of: it decides the
/// request's cookie when nothing is stored, and what the commit deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Predecessor {
    /// The request had no session cookie.
    None,
    /// The cookie named no live session (unknown, forged, expired): the
    /// browser is told to drop it unless a new cookie is sent.
    StaleCookie,
    /// This request invalidated the session its cookie named: the commit
    /// deletes it (if its verifier is still the cookie's), and the browser
    /// is told to drop the cookie unless a new one is sent.
    Invalidated {
        /// The invalidated session's key.
        key: StoreKey,
        /// The verifier hash it had.
        verifier: VerifierHash,
    },
}

/// The session as this request sees it.
#[derive(Debug)]
pub(super) struct Loaded {
    /// The id the response's cookie carries if one is sent.
    pub(super) id: SessionId,
    /// Where the session came from.
    pub(super) origin: Origin,
    /// The stored values this request knows.
    pub(super) known: Known,
    /// What this request changed.
    pub(super) changes: ChangeSet,
    pub(super) created: OffsetDateTime,
    pub(super) last_accessed: OffsetDateTime,
    /// The idle timeout as the request sees it (its own change included).
    pub(super) max_inactive: Duration,
    /// The idle timeout as stored.
    stored_max_inactive: Duration,
    /// The request's time, used for the touch and the expiry.
    pub(super) now: OffsetDateTime,
    /// The principal the store holds the session bound to, once read.
    pub(super) stored_principal: Option<Principal>,
    /// The label the store holds, once read.
    pub(super) stored_label: Option<Label>,
}

impl Loaded {
    /// A new, empty session under a freshly drawn id, standing in place of
    /// `predecessor`.
    pub(super) fn new(
        config: &SessionConfig,
        now: OffsetDateTime,
        predecessor: Predecessor,
    ) -> Result<Self, SessionError> {
        let id = SessionId::generate().map_err(SessionError::Random)?;
        Ok(Self::with(
            id,
            Origin::New(predecessor),
            Known::nothing(),
            config,
            now,
        ))
    }

    fn with(
        id: SessionId,
        origin: Origin,
        known: Known,
        config: &SessionConfig,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            origin,
            known,
            changes: ChangeSet::new(),
            created: now,
            last_accessed: now,
            max_inactive: config.max_inactive,
            stored_max_inactive: config.max_inactive,
            now,
            stored_principal: None,
            stored_label: None,
        }
    }

    /// The session the cookie names, not read yet: the request only writes
    /// to it, and the store checks the cookie when the write lands.
    pub(super) fn unread(id: SessionId, config: &SessionConfig, now: OffsetDateTime) -> Self {
        let verifier = id.verifier_hash();
        Self::with(
            id,
            Origin::Unread { verifier },
            Known::unknown(),
            config,
            now,
        )
    }

    /// The session the store holds under the cookie's key, whose verifier
    /// the cookie matched. `complete`: `record` holds every attribute;
    /// `count`: how many the store holds, if it said.
    pub(super) fn read(
        id: SessionId,
        record: Record,
        complete: bool,
        count: Option<usize>,
        config: &SessionConfig,
        now: OffsetDateTime,
    ) -> Self {
        let touch_interval = config.touch_interval_for(record.max_inactive);
        let known = Known {
            values: record
                .attributes
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect(),
            complete,
            count,
        };
        Self {
            id,
            origin: Origin::Read {
                verifier: record.verifier,
                touch_due: now - record.last_accessed >= policy::to_time(touch_interval),
            },
            known,
            changes: ChangeSet::new(),
            created: record.created,
            last_accessed: record.last_accessed,
            max_inactive: record.max_inactive,
            stored_max_inactive: record.max_inactive,
            now,
            stored_principal: record.principal,
            stored_label: record.label,
        }
    }

    /// Takes over the attributes an earlier state set: the session they
    /// were meant for turned out to be this one (a read after a blind set),
    /// or a new one (a blind set whose session was gone).
    pub(super) fn adopt(&mut self, pending: &ChangeSet) {
        for (name, json) in pending.attributes_set() {
            self.changes.set_attribute(name, json);
        }
        if let Some(binding) = pending.binding() {
            self.changes.bind(Some(binding.clone()));
        }
        if let Some(label) = pending.label() {
            self.changes.set_label(Some(label.clone()));
        }
    }

    /// The principal the session is bound to, as this request sees it:
    /// its own binding, else the stored one.
    pub(super) fn principal(&self) -> Option<&Principal> {
        self.changes
            .binding()
            .map(|b| &b.principal)
            .or(self.stored_principal.as_ref())
    }

    /// Whether a new session is stored even without attributes (bound).
    pub(super) fn is_bound_new(&self) -> bool {
        self.changes.binding().is_some()
    }

    /// Ends the session for this request: it goes on as a new, empty
    /// session that will be deleted at commit. Invalidating twice keeps the
    /// first predecessor.
    pub(super) fn invalidate(&mut self, config: &SessionConfig) -> Result<(), SessionError> {
        let predecessor = match (&self.origin, self.is_stored()) {
            (Origin::Read { verifier, .. }, _) => Predecessor::Invalidated {
                key: self.id.store_key(),
                verifier: *verifier,
            },
            (Origin::New(Predecessor::Invalidated { key, verifier }), _) => {
                Predecessor::Invalidated {
                    key: key.clone(),
                    verifier: *verifier,
                }
            }
            _ => Predecessor::StaleCookie,
        };
        *self = Self::new(config, self.now, predecessor)?;
        Ok(())
    }

    /// Gives the session a new verifier: written at commit, so that the old
    /// cookie stops working in the same write.
    pub(super) fn rotate(&mut self) -> Result<(), SessionError> {
        let id = self.id.with_new_verifier().map_err(SessionError::Random)?;
        if self.is_stored() {
            self.changes.set_new_verifier(Some(id.verifier_hash()));
        }
        self.id = id;
        Ok(())
    }

    /// Forgets the request's changes (an invalidation stays: it is the
    /// origin, not a change).
    pub(super) fn discard(&mut self) {
        self.changes = ChangeSet::new();
    }

    /// The session ended under the request: nothing more is read or written.
    pub(super) fn end(&mut self) {
        self.origin = Origin::Ended;
        self.changes = ChangeSet::new();
        self.known = Known::nothing();
    }

    /// Whether the session is (or is presumed to be) in the store.
    pub(super) fn is_stored(&self) -> bool {
        matches!(self.origin, Origin::Unread { .. } | Origin::Read { .. })
    }

    /// Whether the store has confirmed the cookie (or there is no stored
    /// session to confirm).
    pub(super) fn is_read(&self) -> bool {
        !matches!(self.origin, Origin::Unread { .. })
    }

    /// The verifier hash a write to the stored session must carry.
    pub(super) fn verifier(&self) -> Option<VerifierHash> {
        match self.origin {
            Origin::Unread { verifier } | Origin::Read { verifier, .. } => Some(verifier),
            Origin::New(_) | Origin::Ended => None,
        }
    }

    /// Fails with [`SessionError::Ended`] once the session ended.
    pub(super) fn check_live(&self) -> Result<(), SessionError> {
        if self.origin == Origin::Ended {
            Err(SessionError::Ended)
        } else {
            Ok(())
        }
    }

    /// Whether the idle timeout is one the store does not hold yet.
    pub(super) fn set_max_inactive(&mut self, interval: Duration) {
        self.max_inactive = interval;
        let changed = interval != self.stored_max_inactive;
        self.changes.set_max_inactive(changed.then_some(interval));
    }

    /// The stored value of `name`, if known: `Some(None)` when known absent.
    pub(super) fn stored(&self, name: &str) -> Option<Option<&str>> {
        self.known.get(name)
    }

    pub(super) fn stored_has(&self, name: &str) -> bool {
        matches!(self.stored(name), Some(Some(_)))
    }

    /// The names of `names` whose stored value this request does not know.
    pub(super) fn unknown<'n>(&self, names: &[&'n str]) -> Vec<&'n str> {
        names
            .iter()
            .copied()
            .filter(|n| self.stored(n).is_none())
            .collect()
    }

    /// Records what a load said of `names`: the ones it did not return are
    /// absent.
    pub(super) fn learn(
        &mut self,
        names: &[&str],
        attributes: HashMap<String, String>,
        count: Option<usize>,
    ) {
        let mut found = attributes;
        for name in names {
            self.known.insert(name, found.remove(*name));
        }
        if count.is_some() {
            self.known.count = count;
        }
    }

    /// Records every stored attribute, from a load of the whole session.
    pub(super) fn learn_all(&mut self, attributes: HashMap<String, String>) {
        self.known = Known {
            count: Some(attributes.len()),
            values: attributes.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            complete: true,
        };
    }

    /// The value this request sees: its own change, else the stored one
    /// (the caller made sure it is known).
    pub(super) fn value(&self, name: &str) -> Option<&str> {
        match self.changes.attribute(name) {
            Some(changed) => changed,
            None => self.stored(name).flatten(),
        }
    }

    /// The names the request sees, sorted: the stored ones it did not
    /// remove, and the ones it set. The caller made sure all are known.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .known
            .names()
            .filter(|n| self.changes.attribute(n).is_none())
            .map(str::to_owned)
            .chain(self.changes.attributes_set().map(|(n, _)| n.to_owned()))
            .collect();
        names.sort_unstable();
        names
    }

    /// How many attributes the session holds with this request's changes,
    /// if the stored count is known.
    pub(super) fn attribute_count(&self) -> Option<usize> {
        let stored = if self.known.complete {
            self.known.names().count()
        } else {
            self.known.count?
        };
        let removed = self
            .changes
            .attributes_removed()
            .filter(|n| self.stored_has(n))
            .count();
        let added = self
            .changes
            .attributes_set()
            .filter(|(n, _)| !self.stored_has(n))
            .count();
        Some((stored + added).saturating_sub(removed))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.attribute_count() == Some(0)
    }

    /// Whether setting `name` would add an attribute to a session whose
    /// count is not known yet: the whole session must be read to check the
    /// limit.
    pub(super) fn needs_count_for(&self, name: &str) -> bool {
        self.value(name).is_none() && self.attribute_count().is_none()
    }

    /// Checks `json` for `name` against the configured limits.
    pub(super) fn check_limits(
        &self,
        name: &str,
        json: &str,
        config: &SessionConfig,
    ) -> Result<(), SessionError> {
        use crate::error::Limit;
        if name.len() > config.max_name_bytes {
            return Err(SessionError::too_large(
                name,
                Limit::NameBytes,
                config.max_name_bytes,
            ));
        }
        if json.len() > config.max_attribute_bytes {
            return Err(SessionError::too_large(
                name,
                Limit::ValueBytes,
                config.max_attribute_bytes,
            ));
        }
        if self.value(name).is_none()
            && self.attribute_count().unwrap_or(0) >= config.max_attributes
        {
            return Err(SessionError::too_large(
                name,
                Limit::AttributeCount,
                config.max_attributes,
            ));
        }
        Ok(())
    }

    /// Records `json` for `name`, or no change if it equals the stored value.
    pub(super) fn record_set(
        &mut self,
        name: &str,
        json: String,
        config: &SessionConfig,
    ) -> Result<(), SessionError> {
        self.check_limits(name, &json, config)?;
        if self.stored(name) == Some(Some(json.as_str())) {
            self.changes.forget_attribute(name);
        } else {
            self.changes.set_attribute(name, json);
        }
        Ok(())
    }

    /// Records the removal of `name`; answers whether it was there.
    pub(super) fn record_remove(&mut self, name: &str) -> bool {
        let present = self.value(name).is_some();
        if self.stored_has(name) {
            self.changes.remove_attribute(name);
        } else {
            self.changes.forget_attribute(name);
        }
        present
    }

    /// The whole record of a new session, as the commit creates it.
    pub(super) fn record(&self, config: &SessionConfig) -> Record {
        let mut attributes: HashMap<String, String> = self
            .known
            .values
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        for name in self.changes.attributes_removed() {
            attributes.remove(name);
        }
        for (name, json) in self.changes.attributes_set() {
            attributes.insert(name.to_owned(), json.to_owned());
        }
        Record {
            verifier: self.id.verifier_hash(),
            created: self.created,
            last_accessed: self.now,
            max_inactive: self.max_inactive,
            expires_at: policy::expires_at(
                self.created,
                self.now,
                self.max_inactive,
                config.absolute_timeout,
            ),
            attributes,
            principal: self.principal().cloned(),
            label: self.changes.label().or(self.stored_label.as_ref()).cloned(),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
