//! Principals: the users sessions belong to, and the index from a principal
//! to its sessions.
//!
//! A session may be *bound* to a principal (a user name, an account id) in
//! the same write as the rest of a request's changes. A store that
//! [supports principals](super::SessionStore::supports_principals) keeps an
//! index from each principal to its sessions, so that an app can list them
//! ("your devices"), revoke one, revoke all, and limit how many a principal
//! holds at once.
//!
//! Principal names and labels are personal data: their `Debug` output shows
//! only their length, and the crate never logs them or uses them as a
//! metric label.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::StoreKey;

/// The longest principal name accepted, in bytes of UTF-8.
pub const MAX_PRINCIPAL_BYTES: usize = 256;
/// The longest session label accepted, in bytes of UTF-8.
pub const MAX_LABEL_BYTES: usize = 256;

/// Why a principal name or a label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// It holds no character.
    #[error("the {what} is empty")]
    Empty {
        /// `"principal name"` or `"session label"`.
        what: &'static str,
    },
    /// It is longer than allowed.
    #[error("the {what} is {len} bytes long; at most {max} bytes are accepted")]
    TooLong {
        /// `"principal name"` or `"session label"`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// It holds a control character (such as a newline or a NUL byte).
    #[error("the {what} holds a control character")]
    ControlCharacter {
        /// `"principal name"` or `"session label"`.
        what: &'static str,
    },
    /// Its bytes are not UTF-8.
    #[error("the {what} is not valid UTF-8")]
    NotUtf8 {
        /// `"principal name"` or `"session label"`.
        what: &'static str,
    },
}

fn check(what: &'static str, text: &str, max: usize) -> Result<(), InvalidName> {
    if text.is_empty() {
        return Err(InvalidName::Empty { what });
    }
    if text.len() > max {
        return Err(InvalidName::TooLong {
            what,
            len: text.len(),
            max,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(InvalidName::ControlCharacter { what });
    }
    Ok(())
}

/// The name of the user (or account, or client) a session belongs to: 1 to
/// [`MAX_PRINCIPAL_BYTES`] bytes of UTF-8 without control characters.
///
/// `Debug` shows only the length: a principal name is personal data.
///
/// ```
/// use tower_httpsession::store::Principal;
///
/// let alice = Principal::new("alice@example.com").unwrap();
/// assert_eq!(alice.as_str(), "alice@example.com");
/// assert!(Principal::new("").is_err());
/// assert!(Principal::new("x".repeat(300)).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(String);

impl Principal {
    /// A principal name, checked.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] if it is empty, too long or holds a control
    /// character.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        check("principal name", &name, MAX_PRINCIPAL_BYTES)?;
        Ok(Self(name))
    }

    /// A principal name from raw bytes, such as a form field.
    ///
    /// # Errors
    ///
    /// [`InvalidName::NotUtf8`], or as [`new`](Self::new).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidName> {
        let text = std::str::from_utf8(bytes).map_err(|_| InvalidName::NotUtf8 {
            what: "principal name",
        })?;
        Self::new(text)
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the name, in lowercase hex: what a store may put in a key
    /// name instead of the name itself, so that keys have a bounded length
    /// and a key listing shows no user name.
    #[must_use]
    pub fn digest_hex(&self) -> String {
        use fmt::Write as _;
        let digest = Sha256::digest(self.0.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest {
            let _ = write!(hex, "{byte:02x}");
        }
        hex
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal(<{} bytes>)", self.0.len())
    }
}

/// A short text an app attaches to a session for a "your devices" page,
/// such as "Firefox on Linux": 1 to [`MAX_LABEL_BYTES`] bytes of UTF-8
/// without control characters.
///
/// `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Label(String);

impl Label {
    /// A label, checked.
    ///
    /// # Errors
    ///
    /// [`InvalidName`] if it is empty, too long or holds a control
    /// character.
    pub fn new(text: impl Into<String>) -> Result<Self, InvalidName> {
        let text = text.into();
        check("session label", &text, MAX_LABEL_BYTES)?;
        Ok(Self(text))
    }

    /// A label made from any text, such as a `User-Agent` header: control
    /// characters dropped, cut at a character boundary to
    /// [`MAX_LABEL_BYTES`]; `None` if nothing is left.
    #[must_use]
    pub fn lossy(text: &str) -> Option<Self> {
        let mut label = String::new();
        for c in text.chars().filter(|c| !c.is_control()) {
            if label.len() + c.len_utf8() > MAX_LABEL_BYTES {
                break;
            }
            label.push(c);
        }
        let label = label.trim();
        (!label.is_empty()).then(|| Self(label.to_owned()))
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Label(<{} bytes>)", self.0.len())
    }
}

/// What happens when a principal that already holds the most sessions
/// allowed logs in once more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitPolicy {
    /// The principal's least recently used sessions are deleted, at once,
    /// to make room for the new one.
    EvictLeastRecentlyUsed,
    /// The new login is refused and nothing is written: the request gets
    /// `409 Conflict` ([`SessionError::SessionLimit`](crate::SessionError::SessionLimit)).
    RefuseNewLogin,
}

/// At most `max` live sessions per principal, and what to do past it.
///
/// ```
/// use tower_httpsession::store::{LimitPolicy, SessionLimit};
///
/// let limit = SessionLimit::new(3, LimitPolicy::EvictLeastRecentlyUsed).unwrap();
/// assert_eq!(limit.max(), 3);
/// assert!(SessionLimit::new(0, LimitPolicy::RefuseNewLogin).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionLimit {
    max: u32,
    policy: LimitPolicy,
}

impl SessionLimit {
    /// The limit, or `None` if `max` is zero.
    #[must_use]
    pub fn new(max: u32, policy: LimitPolicy) -> Option<Self> {
        (max > 0).then_some(Self { max, policy })
    }

    /// The most live sessions one principal may hold.
    #[must_use]
    pub fn max(&self) -> u32 {
        self.max
    }

    /// What happens past the limit.
    #[must_use]
    pub fn policy(&self) -> LimitPolicy {
        self.policy
    }
}

/// A write that binds a session to a principal: the principal, and the
/// limit the store enforces in the same operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Binding {
    /// The principal the session belongs to from now on.
    pub principal: Principal,
    /// The principal's session limit, if any.
    pub limit: Option<SessionLimit>,
}

impl Binding {
    /// Binds to `principal`, with `limit` if any.
    #[must_use]
    pub fn new(principal: Principal, limit: Option<SessionLimit>) -> Self {
        Self { principal, limit }
    }
}

/// One live session of a principal, as a store lists it.
///
/// It holds the session's [`StoreKey`], so it is for the layer and the
/// store, not for pages: [`SessionInfo`](crate::SessionInfo) is what an app
/// shows. `Debug` shows neither the key nor the label.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrincipalSession {
    /// The session's key.
    pub key: StoreKey,
    /// When the session was created.
    pub created: OffsetDateTime,
    /// When it was last used (as last written: touches are throttled).
    pub last_accessed: OffsetDateTime,
    /// When it expires unless used again.
    pub expires_at: OffsetDateTime,
    /// The label the app gave it, if any.
    pub label: Option<Label>,
}

impl PrincipalSession {
    /// A listed session with every field given.
    #[must_use]
    pub fn new(
        key: StoreKey,
        created: OffsetDateTime,
        last_accessed: OffsetDateTime,
        expires_at: OffsetDateTime,
        label: Option<Label>,
    ) -> Self {
        Self {
            key,
            created,
            last_accessed,
            expires_at,
            label,
        }
    }
}

impl fmt::Debug for PrincipalSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalSession")
            .field("created", &self.created)
            .field("last_accessed", &self.last_accessed)
            .field("expires_at", &self.expires_at)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Which of a principal's sessions [`SessionStore::revoke`](super::SessionStore::revoke) deletes.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Revocation<'a> {
    /// Those of these keys that are sessions of the principal.
    Only(&'a [StoreKey]),
    /// All of them.
    All,
    /// All but this one.
    AllExcept(&'a StoreKey),
}

impl Revocation<'_> {
    /// Whether the session under `key` is one to revoke.
    #[must_use]
    pub fn includes(&self, key: &StoreKey) -> bool {
        match self {
            Self::Only(keys) => keys.contains(key),
            Self::All => true,
            Self::AllExcept(kept) => *kept != key,
        }
    }
}

/// What a "your devices" page may show and send back to name a session: an
/// opaque reference derived one way from the session's key. It is neither
/// a cookie nor a store key and cannot be turned into one, so showing it
/// to the user, or in an HTML form, gives nothing away.
///
/// It prints and parses as 22 characters of base64url.
///
/// ```
/// use tower_httpsession::store::SessionRef;
///
/// assert!("not a reference".parse::<SessionRef>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionRef([u8; 16]);

impl SessionRef {
    /// The reference of the session under `key`.
    #[must_use]
    pub fn of(key: &StoreKey) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"tower-httpsession session reference\0");
        hasher.update(key.as_str().as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }
}

impl fmt::Display for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionRef({self})")
    }
}

/// A text that is not a [`SessionRef`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a session reference: expected 22 characters of base64url")]
#[non_exhaustive]
pub struct InvalidSessionRef;

impl FromStr for SessionRef {
    type Err = InvalidSessionRef;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 16];
        match URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut bytes) {
            Ok(16) if text.len() == 22 => Ok(Self(bytes)),
            _ => Err(InvalidSessionRef),
        }
    }
}

impl serde::Serialize for SessionRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(
            Principal::new(""),
            Err(InvalidName::Empty {
                what: "principal name"
            })
        );
        assert!(matches!(
            Principal::new("a".repeat(MAX_PRINCIPAL_BYTES + 1)),
            Err(InvalidName::TooLong { len: 257, .. })
        ));
        assert!(Principal::new("a".repeat(MAX_PRINCIPAL_BYTES)).is_ok());
        assert!(matches!(
            Principal::new("al\nice"),
            Err(InvalidName::ControlCharacter { .. })
        ));
        assert!(matches!(
            Principal::from_bytes(b"al\xffice"),
            Err(InvalidName::NotUtf8 { .. })
        ));
        assert_eq!(
            Principal::from_bytes("zoë".as_bytes()).map(|p| p.as_str().to_owned()),
            Ok("zoë".to_owned())
        );
        assert!(Label::new("").is_err());
    }

    #[test]
    fn debug_shows_no_name() {
        let p = Principal::new("alice@example.com").unwrap();
        let l = Label::new("Firefox").unwrap();
        let shown = format!("{p:?} {l:?}");
        assert!(
            !shown.contains("alice") && !shown.contains("Firefox"),
            "{shown}"
        );
    }

    #[test]
    fn lossy_labels_are_cut_and_cleaned() {
        assert_eq!(Label::lossy(" \t\n"), None);
        assert_eq!(
            Label::lossy("Firefox\r\non Linux").map(|l| l.as_str().to_owned()),
            Some("Firefoxon Linux".to_owned())
        );
        let long = "é".repeat(300);
        let cut = Label::lossy(&long).unwrap();
        assert!(cut.as_str().len() <= MAX_LABEL_BYTES);
        assert!(Label::new(cut.as_str()).is_ok());
    }

    #[test]
    fn references_round_trip_and_reveal_no_key() {
        let key = StoreKey::random().unwrap();
        let r = SessionRef::of(&key);
        let text = r.to_string();
        assert_eq!(text.len(), 22);
        assert_ne!(text, key.as_str());
        assert_eq!(text.parse::<SessionRef>(), Ok(r.clone()));
        assert_eq!(SessionRef::of(&key), r);
        assert!(
            "AAAAAAAAAAAAAAAAAAAAAAA".parse::<SessionRef>().is_err(),
            "23 characters"
        );
        assert!("!!!!!!!!!!!!!!!!!!!!!!".parse::<SessionRef>().is_err());
    }

    #[test]
    fn digest_is_hex_of_fixed_length() {
        let d = Principal::new("alice").unwrap().digest_hex();
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
