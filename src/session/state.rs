//! What one request knows of its session, and what it changed.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::SessionConfig;
use crate::error::SessionError;
use crate::session::SessionId;
use crate::store::{ChangeSet, Record, StoreKey, VerifierHash, policy};

/// The session as this request sees it.
pub(super) struct Loaded {
    pub(super) id: SessionId,
    /// Whether the record exists in the store (presumed, until verified).
    pub(super) stored: bool,
    /// Whether the store said the cookie names a live session. A request
    /// that only sets attributes does not ask: its write requires the
    /// cookie's verifier hash instead.
    pub(super) verified: bool,
    /// The verifier hash the stored session has, as the cookie says: what
    /// a write requires.
    pub(super) cookie_hash: Option<VerifierHash>,
    /// The stored values this request knows (as loaded, or as a
    /// compare-and-set left them); `None`: known to be absent.
    pub(super) known: HashMap<String, Option<String>>,
    /// Whether `known` holds every stored attribute.
    pub(super) complete: bool,
    /// How many attributes the store holds, when it said.
    pub(super) stored_count: Option<usize>,
    /// What this request changed.
    pub(super) changes: ChangeSet,
    pub(super) created: OffsetDateTime,
    pub(super) last_accessed: OffsetDateTime,
    pub(super) max_inactive: Duration,
    pub(super) original_max_inactive: Duration,
    /// The request's time, used for the touch and the expiry.
    pub(super) now: OffsetDateTime,
    pub(super) touch_due: bool,
    /// A stored session this request invalidated, deleted at commit if
    /// its stored verifier hash is still the one the cookie carried.
    pub(super) to_delete: Option<(StoreKey, VerifierHash)>,
    /// The request's cookie named no live session: remove it unless a new
    /// one is sent.
    pub(super) cookie_stale: bool,
    /// Send the id in a new cookie even if the session was stored before.
    pub(super) id_changed: bool,
}

impl Loaded {
    pub(super) fn fresh(
        config: &SessionConfig,
        now: OffsetDateTime,
        cookie_stale: bool,
    ) -> Result<Self, SessionError> {
        let id = SessionId::generate().map_err(SessionError::Random)?;
        Ok(Self::new(id, config, now, cookie_stale))
    }

    /// A new, empty session with `id`, not stored.
    fn new(id: SessionId, config: &SessionConfig, now: OffsetDateTime, cookie_stale: bool) -> Self {
        Self {
            id,
            stored: false,
            verified: true,
            cookie_hash: None,
            known: HashMap::new(),
            complete: true,
            stored_count: Some(0),
            changes: ChangeSet::new(),
            created: now,
            last_accessed: now,
            max_inactive: config.max_inactive,
            original_max_inactive: config.max_inactive,
            now,
            touch_due: false,
            to_delete: None,
            cookie_stale,
            id_changed: false,
        }
    }

    /// The session the cookie names, not read yet: the request only writes
    /// to it, and the store checks the cookie when the write lands.
    pub(super) fn unverified(id: SessionId, config: &SessionConfig, now: OffsetDateTime) -> Self {
        Self {
            cookie_hash: Some(id.verifier_hash()),
            stored: true,
            verified: false,
            complete: false,
            stored_count: None,
            ..Self::new(id, config, now, false)
        }
    }

    /// Takes over the attributes an unverified state set: the session they
    /// were meant for turned out to be this one.
    pub(super) fn adopt(&mut self, pending: &ChangeSet) {
        for (name, json) in pending.attributes_set() {
            self.changes.set_attribute(name, json);
        }
    }

    pub(super) fn from_record(
        id: SessionId,
        record: Record,
        complete: bool,
        stored_count: Option<usize>,
        config: &SessionConfig,
        now: OffsetDateTime,
    ) -> Self {
        let touch_interval = config.touch_interval_for(record.max_inactive);
        let since = now - record.last_accessed;
        Self {
            // The caller checked that the cookie's verifier hashes to it.
            cookie_hash: Some(record.verifier),
            id,
            stored: true,
            verified: true,
            known: record
                .attributes
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect(),
            complete,
            stored_count,
            changes: ChangeSet::new(),
            created: record.created,
            last_accessed: record.last_accessed,
            max_inactive: record.max_inactive,
            original_max_inactive: record.max_inactive,
            now,
            touch_due: since >= touch_interval,
            to_delete: None,
            cookie_stale: false,
            id_changed: false,
        }
    }

    /// The stored value of `name`, if known: `Some(None)` when known absent.
    pub(super) fn stored(&self, name: &str) -> Option<Option<&str>> {
        match self.known.get(name) {
            Some(value) => Some(value.as_deref()),
            None if self.complete => Some(None),
            None => None,
        }
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
            self.known.insert((*name).to_owned(), found.remove(*name));
        }
        if count.is_some() {
            self.stored_count = count;
        }
    }

    /// The value this request sees: its own change, else the stored one
    /// (the caller made sure it is known).
    pub(super) fn value(&self, name: &str) -> Option<&str> {
        match self.changes.attribute(name) {
            Some(changed) => changed,
            None => self.stored(name).flatten(),
        }
    }

    /// How many attributes the session holds with this request's changes,
    /// if the stored count is known.
    pub(super) fn attribute_count(&self) -> Option<usize> {
        let stored = if self.complete {
            self.known.values().filter(|v| v.is_some()).count()
        } else {
            self.stored_count?
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
        if name.len() > config.max_name_bytes {
            return Err(SessionError::too_large(
                name,
                "name bytes",
                config.max_name_bytes,
            ));
        }
        if json.len() > config.max_attribute_bytes {
            return Err(SessionError::too_large(
                name,
                "value bytes",
                config.max_attribute_bytes,
            ));
        }
        if self.value(name).is_none()
            && self.attribute_count().unwrap_or(0) >= config.max_attributes
        {
            return Err(SessionError::too_large(
                name,
                "attribute count",
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

    pub(super) fn record(&self, config: &SessionConfig) -> Record {
        let mut attributes: HashMap<String, String> = self
            .known
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
        }
    }
}
