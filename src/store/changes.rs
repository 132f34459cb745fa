//! What one request changed in a session.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use time::OffsetDateTime;

use super::{Applied, Binding, Label, Record, VerifierHash, policy};

/// A new last-access time. The store works out the new expiry from it and
/// what it holds, so that a request that did not read the session can
/// touch it: see [`Touch::expires_at`].
///
/// Touches are throttled: the store applies one only when it is
/// [due](Touch::is_due), or when the change also sets the idle timeout or
/// the verifier. So a write that changes only attributes, within the touch
/// interval of the last touch, leaves the session's metadata alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Touch {
    /// When the session was last used.
    pub last_accessed: OffsetDateTime,
    /// The absolute timeout, counted from the session's creation, if any.
    pub absolute_timeout: Option<Duration>,
    /// How long after the stored last access the touch is due; `None`: a
    /// twentieth of the stored idle timeout.
    pub interval: Option<Duration>,
}

impl Touch {
    /// A touch at `last_accessed`, with the absolute timeout (if any) and
    /// the touch interval (`None`: the default, a twentieth of the idle
    /// timeout).
    #[must_use]
    pub fn new(
        last_accessed: OffsetDateTime,
        absolute_timeout: Option<Duration>,
        interval: Option<Duration>,
    ) -> Self {
        Self {
            last_accessed,
            absolute_timeout,
            interval,
        }
    }

    /// The expiry of a session created at `created` with the idle timeout
    /// `max_inactive` (the new one, if the change set changes it): the
    /// earlier of `last_accessed + max_inactive` and
    /// `created + absolute_timeout`.
    #[must_use]
    pub fn expires_at(&self, created: OffsetDateTime, max_inactive: Duration) -> OffsetDateTime {
        policy::expires_at(
            created,
            self.last_accessed,
            max_inactive,
            self.absolute_timeout,
        )
    }

    /// Whether the touch is due for a session last accessed at `stored`
    /// with the idle timeout `max_inactive`.
    #[must_use]
    pub fn is_due(&self, stored: OffsetDateTime, max_inactive: Duration) -> bool {
        policy::touch_due(self.last_accessed, stored, max_inactive, self.interval)
    }
}

/// The delta a request made to a stored session, committed in one store call.
///
/// An attribute name is either set, removed or untouched, never two of these:
/// the methods keep that true, so a store can write the set names and delete
/// the removed ones in any order. Attribute values are serde_json text.
///
/// Two conditions guard the write, so that a request may change a session
/// it has not read: the stored verifier hash must be the
/// [required](Self::required_verifier) one, and the session may hold at most
/// [a number of attributes](Self::attribute_limit) once the change adds
/// new names.
///
/// `Debug` prints attribute names and value sizes, never values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    set: BTreeMap<String, String>,
    removed: BTreeSet<String>,
    max_inactive: Option<Duration>,
    new_verifier: Option<VerifierHash>,
    touch: Option<Touch>,
    required_verifier: Option<VerifierHash>,
    attribute_limit: Option<usize>,
    binding: Option<Binding>,
    label: Option<Label>,
}

impl ChangeSet {
    /// An empty change set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, for a store's own tests and tools: the session layer
    /// builds the change sets a store is given, and a store only reads them.
    pub fn builder() -> ChangeSetBuilder {
        ChangeSetBuilder(Self::default())
    }

    /// Records that `name` now holds `json`.
    pub(crate) fn set_attribute(&mut self, name: impl Into<String>, json: impl Into<String>) {
        let name = name.into();
        self.removed.remove(&name);
        self.set.insert(name, json.into());
    }

    /// Records that `name` was removed.
    pub(crate) fn remove_attribute(&mut self, name: impl Into<String>) {
        let name = name.into();
        self.set.remove(&name);
        self.removed.insert(name);
    }

    /// Drops any change recorded for `name`.
    pub(crate) fn forget_attribute(&mut self, name: &str) {
        self.set.remove(name);
        self.removed.remove(name);
    }

    /// Records a new idle timeout.
    pub(crate) fn set_max_inactive(&mut self, interval: Option<Duration>) {
        self.max_inactive = interval;
    }

    /// Records a new verifier hash: the id changed, the old cookie must stop
    /// working.
    pub(crate) fn set_new_verifier(&mut self, hash: Option<VerifierHash>) {
        self.new_verifier = hash;
    }

    /// Records a new last-access time.
    pub(crate) fn set_touch(&mut self, touch: Option<Touch>) {
        self.touch = touch;
    }

    /// Binds the session to a principal, with the principal's limit.
    pub(crate) fn bind(&mut self, binding: Option<Binding>) {
        self.binding = binding;
    }

    /// Sets the session's label.
    pub(crate) fn set_label(&mut self, label: Option<Label>) {
        self.label = label;
    }

    /// Writes only if the stored verifier hash is `hash`: the cookie that
    /// asked for the change must name the session, not only its key. A
    /// mismatch is answered as [`Applied::Stale`]. The session layer always
    /// sets it; a change set without it is not checked.
    pub(crate) fn require_verifier(&mut self, hash: Option<VerifierHash>) {
        self.required_verifier = hash;
    }

    /// Writes only if the session then holds at most `limit` attributes, or
    /// adds no new name; otherwise the answer is
    /// [`Applied::TooManyAttributes`] and nothing is written.
    pub(crate) fn limit_attributes(&mut self, limit: Option<usize>) {
        self.attribute_limit = limit;
    }

    /// The verifier hash the stored one must equal, if any.
    #[must_use]
    pub fn required_verifier(&self) -> Option<&VerifierHash> {
        self.required_verifier.as_ref()
    }

    /// The most attributes the session may hold once new names are added.
    #[must_use]
    pub fn attribute_limit(&self) -> Option<usize> {
        self.attribute_limit
    }

    /// The attributes set, by name, with their serde_json text.
    pub fn attributes_set(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.set.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The names removed.
    pub fn attributes_removed(&self) -> impl ExactSizeIterator<Item = &str> {
        self.removed.iter().map(String::as_str)
    }

    /// The change recorded for one attribute: `Some(Some(json))` set,
    /// `Some(None)` removed, `None` untouched.
    #[must_use]
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        if let Some(v) = self.set.get(name) {
            Some(Some(v))
        } else if self.removed.contains(name) {
            Some(None)
        } else {
            None
        }
    }

    /// The new idle timeout, if it changed.
    #[must_use]
    pub fn max_inactive(&self) -> Option<Duration> {
        self.max_inactive
    }

    /// The new verifier hash, if the id changed.
    #[must_use]
    pub fn new_verifier(&self) -> Option<&VerifierHash> {
        self.new_verifier.as_ref()
    }

    /// The principal the session is bound to from now on, and that
    /// principal's limit, if this change binds it.
    #[must_use]
    pub fn binding(&self) -> Option<&Binding> {
        self.binding.as_ref()
    }

    /// The session's new label, if it changed.
    #[must_use]
    pub fn label(&self) -> Option<&Label> {
        self.label.as_ref()
    }

    /// The new last-access time, if any.
    #[must_use]
    pub fn touch(&self) -> Option<&Touch> {
        self.touch.as_ref()
    }

    /// Whether the change sets metadata (the idle timeout or the verifier),
    /// which makes its touch due whatever the interval.
    #[must_use]
    pub fn sets_metadata(&self) -> bool {
        self.max_inactive.is_some() || self.new_verifier.is_some()
    }

    /// Whether anything beyond a touch changed.
    #[must_use]
    pub fn has_changes(&self) -> bool {
        !self.set.is_empty()
            || !self.removed.is_empty()
            || self.max_inactive.is_some()
            || self.new_verifier.is_some()
            || self.binding.is_some()
            || self.label.is_some()
    }

    /// Whether there is nothing at all to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.has_changes() && self.touch.is_none()
    }

    /// Checks the guards against a whole record and, if they hold, applies
    /// the delta to it: for stores that keep records whole (the memory
    /// store, the tower-sessions adapter). The caller has made sure the
    /// record is live.
    pub fn apply_checked(&self, record: &mut Record) -> Applied {
        if self
            .required_verifier
            .is_some_and(|hash| !hash.matches(&record.verifier))
        {
            return Applied::Stale;
        }
        if let Some(limit) = self.attribute_limit {
            let added = self
                .set
                .keys()
                .filter(|name| !record.attributes.contains_key(*name))
                .count();
            let removed = self
                .removed
                .iter()
                .filter(|name| record.attributes.contains_key(*name))
                .count();
            if added > 0 && record.attributes.len() + added - removed > limit {
                return Applied::TooManyAttributes;
            }
        }
        self.apply_to(record);
        Applied::Written
    }

    /// Applies the delta to a whole record, without checking the guards.
    pub fn apply_to(&self, record: &mut Record) {
        for name in &self.removed {
            record.attributes.remove(name);
        }
        for (name, json) in &self.set {
            record.attributes.insert(name.clone(), json.clone());
        }
        let touch_due = self.touch.filter(|touch| {
            self.sets_metadata() || touch.is_due(record.last_accessed, record.max_inactive)
        });
        if let Some(interval) = self.max_inactive {
            record.max_inactive = interval;
        }
        if let Some(hash) = self.new_verifier {
            record.verifier = hash;
        }
        if let Some(binding) = &self.binding {
            record.principal = Some(binding.principal.clone());
        }
        if let Some(label) = &self.label {
            record.label = Some(label.clone());
        }
        if let Some(touch) = touch_due {
            record.last_accessed = touch.last_accessed;
            record.expires_at = touch.expires_at(record.created, record.max_inactive);
        }
    }
}

/// Builds a [`ChangeSet`], for a store's own tests and tools.
///
/// ```
/// use tower_httpsession::store::ChangeSet;
///
/// let changes = ChangeSet::builder()
///     .with_attribute("cart", "[\"teapot\"]")
///     .with_removed_attribute("coupon")
///     .build();
/// assert_eq!(changes.attribute("cart"), Some(Some("[\"teapot\"]")));
/// assert_eq!(changes.attribute("coupon"), Some(None));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ChangeSetBuilder(ChangeSet);

impl ChangeSetBuilder {
    /// Sets attribute `name` to the serde_json text `json`.
    pub fn with_attribute(mut self, name: impl Into<String>, json: impl Into<String>) -> Self {
        self.0.set_attribute(name, json);
        self
    }

    /// Removes attribute `name`.
    pub fn with_removed_attribute(mut self, name: impl Into<String>) -> Self {
        self.0.remove_attribute(name);
        self
    }

    /// Sets a new idle timeout.
    pub fn with_max_inactive(mut self, interval: Duration) -> Self {
        self.0.set_max_inactive(Some(interval));
        self
    }

    /// Sets a new verifier hash (the id changed).
    pub fn with_new_verifier(mut self, hash: VerifierHash) -> Self {
        self.0.set_new_verifier(Some(hash));
        self
    }

    /// Binds the session to a principal.
    pub fn with_binding(mut self, binding: Binding) -> Self {
        self.0.bind(Some(binding));
        self
    }

    /// Sets the session's label.
    pub fn with_label(mut self, label: Label) -> Self {
        self.0.set_label(Some(label));
        self
    }

    /// Touches the session.
    pub fn with_touch(mut self, touch: Touch) -> Self {
        self.0.set_touch(Some(touch));
        self
    }

    /// Writes only if the stored verifier hash is `hash`.
    pub fn with_required_verifier(mut self, hash: VerifierHash) -> Self {
        self.0.require_verifier(Some(hash));
        self
    }

    /// Writes only if the session then holds at most `limit` attributes, or
    /// adds no new name.
    pub fn with_attribute_limit(mut self, limit: usize) -> Self {
        self.0.limit_attributes(Some(limit));
        self
    }

    /// The change set.
    pub fn build(self) -> ChangeSet {
        self.0
    }
}

impl fmt::Debug for ChangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Sizes<'a>(&'a BTreeMap<String, String>);
        impl fmt::Debug for Sizes<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .iter()
                            .map(|(k, v)| (k, format!("{} bytes", v.len()))),
                    )
                    .finish()
            }
        }
        f.debug_struct("ChangeSet")
            .field("set", &Sizes(&self.set))
            .field("removed", &self.removed)
            .field("max_inactive", &self.max_inactive)
            .field("new_verifier", &self.new_verifier.is_some())
            .field("touch", &self.touch)
            .field("required_verifier", &self.required_verifier.is_some())
            .field("attribute_limit", &self.attribute_limit)
            .field("binding", &self.binding)
            .field("label", &self.label)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_then_remove_leaves_only_the_removal() {
        let mut c = ChangeSet::new();
        c.set_attribute("a", "1");
        c.remove_attribute("a");
        assert_eq!(c.attribute("a"), Some(None));
        assert_eq!(c.attributes_set().len(), 0);
        assert_eq!(c.attributes_removed().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn remove_then_set_leaves_only_the_set() {
        let mut c = ChangeSet::new();
        c.remove_attribute("a");
        c.set_attribute("a", "2");
        assert_eq!(c.attribute("a"), Some(Some("2")));
        assert_eq!(c.attributes_removed().len(), 0);
    }

    #[test]
    fn last_set_wins_and_names_are_unique() {
        let mut c = ChangeSet::new();
        c.set_attribute("a", "1");
        c.set_attribute("a", "2");
        c.set_attribute("b", "3");
        assert_eq!(
            c.attributes_set().collect::<Vec<_>>(),
            [("a", "2"), ("b", "3")]
        );
    }

    #[test]
    fn forget_drops_the_change() {
        let mut c = ChangeSet::new();
        c.set_attribute("a", "1");
        c.forget_attribute("a");
        assert!(c.is_empty());
        assert_eq!(c.attribute("a"), None);
    }

    #[test]
    fn touch_alone_is_not_a_change() {
        let mut c = ChangeSet::new();
        let now = OffsetDateTime::now_utc();
        c.set_touch(Some(Touch {
            last_accessed: now,
            absolute_timeout: None,
            interval: None,
        }));
        assert!(!c.has_changes());
        assert!(!c.is_empty());
        c.set_max_inactive(Some(Duration::from_secs(5)));
        assert!(c.has_changes());
    }

    #[test]
    fn debug_shows_sizes_not_values() {
        let mut c = ChangeSet::new();
        c.set_attribute("card", "\"4111111111111111\"");
        let printed = format!("{c:?}");
        assert!(printed.contains("card"));
        assert!(printed.contains("18 bytes"));
        assert!(!printed.contains("4111"));
    }

    #[test]
    fn apply_to_changes_only_the_delta() {
        let now = OffsetDateTime::now_utc();
        let mut record = Record {
            verifier: crate::store::VerifierHash::random().unwrap(),
            created: now,
            last_accessed: now,
            max_inactive: Duration::from_secs(60),
            expires_at: now,
            attributes: [("keep", "1"), ("drop", "2"), ("change", "3")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            principal: None,
            label: None,
        };
        let mut c = ChangeSet::new();
        c.remove_attribute("drop");
        c.set_attribute("change", "4");
        c.set_attribute("add", "5");
        c.set_max_inactive(Some(Duration::from_secs(10)));
        c.apply_to(&mut record);
        let mut names: Vec<_> = record.attributes.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["add", "change", "keep"]);
        assert_eq!(record.attributes["change"], "4");
        assert_eq!(record.attributes["keep"], "1");
        assert_eq!(record.max_inactive, Duration::from_secs(10));
    }
}
