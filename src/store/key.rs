//! The names a store keeps sessions under, and the hash it checks writes
//! against.
//!
//! A session's cookie carries a random *selector* and a random *verifier*
//! (see [`SessionId`](crate::SessionId)). The store sees only the
//! selector, as a [`StoreKey`], and the SHA-256 of the verifier, as a
//! [`VerifierHash`]: a dump of the store holds no usable cookie.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a selector in bytes.
pub(crate) const SELECTOR_LEN: usize = 16;
/// Length of a verifier in bytes.
pub(crate) const VERIFIER_LEN: usize = 32;
/// Length of a [`StoreKey`]: 16 bytes in unpadded base64url.
const STORE_KEY_LEN: usize = 22;

/// The store's name for a session: the selector half of a
/// [`SessionId`](crate::SessionId).
///
/// Always 22 characters of base64url, so it is safe in a Redis key or a SQL
/// parameter. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(String);

impl StoreKey {
    /// The key of a selector.
    pub(crate) fn from_selector(selector: &[u8; SELECTOR_LEN]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(selector))
    }

    /// A key drawn from the operating system's CSPRNG, as a new session's
    /// would be: for a store's own tests and tools.
    ///
    /// # Errors
    ///
    /// Fails only if the operating system cannot supply random bytes.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut selector = [0u8; SELECTOR_LEN];
        getrandom::fill(&mut selector)?;
        Ok(Self::from_selector(&selector))
    }

    /// The key as text, for the store to use.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a key read back from a store; `None` unless it is well formed.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let mut selector = [0u8; SELECTOR_LEN];
        (text.len() == STORE_KEY_LEN
            && matches!(
                URL_SAFE_NO_PAD.decode_slice(text.as_bytes(), &mut selector),
                Ok(SELECTOR_LEN)
            ))
        .then(|| Self(text.to_owned()))
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(<redacted>)")
    }
}

/// SHA-256 of a session's verifier: what the store keeps instead of the
/// secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifierHash([u8; 32]);

impl VerifierHash {
    /// The hash of a verifier.
    pub(crate) fn of_verifier(verifier: &[u8; VERIFIER_LEN]) -> Self {
        Self(Sha256::digest(verifier).into())
    }

    /// The hash of a verifier drawn from the operating system's CSPRNG: for
    /// a store's own tests and tools.
    ///
    /// # Errors
    ///
    /// Fails only if the operating system cannot supply random bytes.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut verifier = [0u8; VERIFIER_LEN];
        getrandom::fill(&mut verifier)?;
        Ok(Self::of_verifier(&verifier))
    }

    /// The raw 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From raw bytes as a store kept them; `None` unless exactly 32 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Whether two hashes are equal, compared in constant time.
    #[must_use]
    pub fn matches(&self, other: &VerifierHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for VerifierHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifierHash(<redacted>)")
    }
}
