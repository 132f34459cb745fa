//! Session ids as split tokens.
//!
//! A cookie value is `base64url(selector ‖ verifier)`: a 128-bit random
//! *selector* that names the record in the store, and a 256-bit random
//! *verifier* of which the store keeps only the SHA-256 hash. A dump of the
//! store therefore holds no usable cookie value, and changing the id
//! ([`Session::change_id`](crate::Session::change_id)) keeps the selector and
//! draws a new verifier: one write to one key, which also works on Redis
//! Cluster where a cross-slot rename does not.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::store::key::{SELECTOR_LEN, VERIFIER_LEN};
use crate::store::{StoreKey, VerifierHash};

const TOKEN_LEN: usize = SELECTOR_LEN + VERIFIER_LEN;
/// Length of a cookie value: 48 bytes in unpadded base64url.
pub(crate) const COOKIE_VALUE_LEN: usize = 64;

/// The id of a session: what the cookie carries.
///
/// `Debug` never prints the value. [`SessionId::expose_cookie_value`] is the
/// one way to read it, and its name says what the caller takes on.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId {
    selector: [u8; SELECTOR_LEN],
    verifier: [u8; VERIFIER_LEN],
}

impl SessionId {
    /// Draws a new id from the operating system's CSPRNG.
    ///
    /// # Errors
    ///
    /// Fails only if the operating system cannot supply random bytes.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut token = [0u8; TOKEN_LEN];
        getrandom::fill(&mut token)?;
        Ok(Self::from_token(&token))
    }

    fn from_token(token: &[u8; TOKEN_LEN]) -> Self {
        let mut selector = [0u8; SELECTOR_LEN];
        let mut verifier = [0u8; VERIFIER_LEN];
        selector.copy_from_slice(&token[..SELECTOR_LEN]);
        verifier.copy_from_slice(&token[SELECTOR_LEN..]);
        Self { selector, verifier }
    }

    /// Parses a cookie value. Anything that is not exactly a well-formed id
    /// (wrong length, characters outside base64url, non-canonical encoding)
    /// gives `None`: such a cookie is treated as no session at all.
    #[must_use]
    pub fn from_cookie_value(value: &str) -> Option<Self> {
        if value.len() != COOKIE_VALUE_LEN {
            return None;
        }
        let mut token = [0u8; TOKEN_LEN];
        match URL_SAFE_NO_PAD.decode_slice(value.as_bytes(), &mut token) {
            Ok(TOKEN_LEN) => Some(Self::from_token(&token)),
            _ => None,
        }
    }

    /// The value to put in the cookie. Treat it like a password: whoever
    /// holds it holds the session.
    #[must_use]
    pub fn expose_cookie_value(&self) -> String {
        let mut token = [0u8; TOKEN_LEN];
        token[..SELECTOR_LEN].copy_from_slice(&self.selector);
        token[SELECTOR_LEN..].copy_from_slice(&self.verifier);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The key under which the store keeps this session. It does not work as
    /// a cookie.
    #[must_use]
    pub fn store_key(&self) -> StoreKey {
        StoreKey::from_selector(&self.selector)
    }

    /// The hash of the verifier, the only part of the secret the store keeps.
    #[must_use]
    pub fn verifier_hash(&self) -> VerifierHash {
        VerifierHash::of_verifier(&self.verifier)
    }

    /// Same selector, new verifier: the old cookie value stops matching.
    pub(crate) fn with_new_verifier(&self) -> Result<Self, getrandom::Error> {
        let mut verifier = [0u8; VERIFIER_LEN];
        getrandom::fill(&mut verifier)?;
        Ok(Self {
            selector: self.selector,
            verifier,
        })
    }

    /// Whether `hash` is this id's verifier hash, compared in constant time.
    #[must_use]
    pub fn matches(&self, hash: &VerifierHash) -> bool {
        self.verifier_hash().matches(hash)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_value_round_trips() {
        let id = SessionId::generate().unwrap();
        let value = id.expose_cookie_value();
        assert_eq!(value.len(), COOKIE_VALUE_LEN);
        assert_eq!(SessionId::from_cookie_value(&value), Some(id));
    }

    #[test]
    fn ids_differ() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a.expose_cookie_value(), b.expose_cookie_value());
        assert_ne!(a.store_key(), b.store_key());
    }

    #[test]
    fn malformed_values_are_rejected() {
        let good = SessionId::generate().unwrap().expose_cookie_value();
        for bad in [
            String::new(),
            "x".repeat(63),
            "x".repeat(65),
            "é".repeat(32),
            format!("{}=", &good[..63]),
            format!("{}+", &good[..63]),
            "A".repeat(64 * 1024),
        ] {
            assert_eq!(SessionId::from_cookie_value(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn any_well_formed_value_decodes_to_another_id() {
        // 48 bytes encode to exactly 64 characters with no spare bits, so
        // every 64-character base64url string decodes; a forged value is
        // simply an id no store knows.
        let good = SessionId::generate().unwrap().expose_cookie_value();
        let mut flipped = good.into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(SessionId::from_cookie_value(&flipped).is_some());
    }

    #[test]
    fn change_keeps_selector_and_breaks_old_verifier() {
        let old = SessionId::generate().unwrap();
        let new = old.with_new_verifier().unwrap();
        assert_eq!(old.store_key(), new.store_key());
        assert!(!old.matches(&new.verifier_hash()));
        assert!(new.matches(&new.verifier_hash()));
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let id = SessionId::generate().unwrap();
        let value = id.expose_cookie_value();
        let key = id.store_key();
        let printed = format!("{id:?} {key:?} {:?}", id.verifier_hash());
        assert!(!printed.contains(&value));
        assert!(!printed.contains(key.as_str()));
    }

    #[test]
    fn store_key_parse() {
        let key = SessionId::generate().unwrap().store_key();
        assert_eq!(StoreKey::parse(key.as_str()), Some(key));
        assert_eq!(StoreKey::parse("short"), None);
        assert_eq!(StoreKey::parse(&"!".repeat(22)), None);
    }
}
