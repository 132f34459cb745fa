//! The stored attribute values one request knows.

use std::collections::HashMap;

/// The stored attribute values a request knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(in crate::session) struct Known {
    /// By name, as loaded or as a compare-and-set left them; `None`: known
    /// to be absent.
    pub(in crate::session) values: HashMap<String, Option<String>>,
    /// Whether `values` holds every stored attribute.
    pub(in crate::session) complete: bool,
    /// How many attributes the store holds, when it said.
    pub(in crate::session) count: Option<usize>,
}

impl Known {
    /// Everything is known: there is nothing stored.
    pub(in crate::session) fn nothing() -> Self {
        Self {
            values: HashMap::new(),
            complete: true,
            count: Some(0),
        }
    }

    /// Nothing is known yet of a stored session.
    pub(in crate::session) fn unknown() -> Self {
        Self {
            values: HashMap::new(),
            complete: false,
            count: None,
        }
    }

    /// The stored value of `name`, if known: `Some(None)` when known absent.
    pub(in crate::session) fn get(&self, name: &str) -> Option<Option<&str>> {
        match self.values.get(name) {
            Some(value) => Some(value.as_deref()),
            None if self.complete => Some(None),
            None => None,
        }
    }

    /// Whether every stored attribute is known.
    pub(in crate::session) fn is_complete(&self) -> bool {
        self.complete
    }

    /// Records the stored value of `name`.
    pub(in crate::session) fn insert(&mut self, name: &str, value: Option<String>) {
        self.values.insert(name.to_owned(), value);
    }

    /// The stored names, as far as known.
    pub(in crate::session) fn names(&self) -> impl Iterator<Item = &str> {
        self.values
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(n, _)| n.as_str())
    }
}
