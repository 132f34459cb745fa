//! One stored session, whole or in part.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use super::{Label, Principal, VerifierHash};

/// One stored session.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Hash of the cookie's verifier.
    pub verifier: VerifierHash,
    /// When the session was created.
    pub created: OffsetDateTime,
    /// When the session was last used (as last written: touches are
    /// throttled).
    pub last_accessed: OffsetDateTime,
    /// The idle timeout of this session.
    pub max_inactive: Duration,
    /// When the store may forget the session.
    pub expires_at: OffsetDateTime,
    /// Attribute values as serde_json text, by name.
    pub attributes: HashMap<String, String>,
    /// The principal the session is bound to, if any.
    pub principal: Option<Principal>,
    /// The label the app gave the session, if any.
    pub label: Option<Label>,
}

impl Record {
    /// A record with every field given: what a store builds from what it
    /// read.
    #[must_use]
    pub fn new(
        verifier: VerifierHash,
        created: OffsetDateTime,
        last_accessed: OffsetDateTime,
        max_inactive: Duration,
        expires_at: OffsetDateTime,
        attributes: HashMap<String, String>,
    ) -> Self {
        Self {
            verifier,
            created,
            last_accessed,
            max_inactive,
            expires_at,
            attributes,
            principal: None,
            label: None,
        }
    }

    /// The record bound to `principal`.
    #[must_use]
    pub fn with_principal(mut self, principal: Option<Principal>) -> Self {
        self.principal = principal;
        self
    }

    /// The record with `label`.
    #[must_use]
    pub fn with_label(mut self, label: Option<Label>) -> Self {
        self.label = label;
        self
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.attributes.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Record")
            .field("created", &self.created)
            .field("last_accessed", &self.last_accessed)
            .field("max_inactive", &self.max_inactive)
            .field("expires_at", &self.expires_at)
            .field("attributes", &names)
            .field("principal", &self.principal)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// A record with only some of its attributes, from
/// [`SessionStore::load_some`](super::SessionStore::load_some).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartialRecord {
    /// The metadata, and the attributes asked for that exist.
    pub record: Record,
    /// How many attributes the session holds in all, if the store could tell
    /// in the same round trip.
    pub attribute_count: Option<usize>,
}

impl PartialRecord {
    /// `record`, holding only some attributes, and how many the session
    /// holds in all if the store could tell.
    #[must_use]
    pub fn new(record: Record, attribute_count: Option<usize>) -> Self {
        Self {
            record,
            attribute_count,
        }
    }

    /// Cuts a whole record down to the attributes in `names`.
    #[must_use]
    pub fn from_record(mut record: Record, names: &[&str]) -> Self {
        let attribute_count = Some(record.attributes.len());
        record
            .attributes
            .retain(|name, _| names.contains(&name.as_str()));
        Self {
            record,
            attribute_count,
        }
    }
}

impl fmt::Debug for PartialRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartialRecord")
            .field("record", &self.record)
            .field("attribute_count", &self.attribute_count)
            .finish()
    }
}
