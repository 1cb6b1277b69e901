//! Key material: generation, hashing, display prefixes and constant-time
//! comparison. Nothing here touches the database.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, Result};

/// Every host key starts with this, so a leaked key is recognisable in a
/// log or a secret scanner ("Elsinore host key").
pub const KEY_PREFIX: &str = "ehk_";

/// Random bytes in a key: 256 bits.
const KEY_BYTES: usize = 32;

/// Characters of the key shown in listings and the audit log: the fixed
/// `ehk_` plus 8 characters (48 of the 256 random bits), enough to tell
/// keys apart and nowhere near enough to guess the rest.
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

/// A freshly generated host key: shown once, then only its hash is kept.
/// `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// 256 random bits from the operating system, URL-safe base64 without
    /// padding, behind [`KEY_PREFIX`]: `ehk_` + 43 characters.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|err| Error::Random(err.to_string()))?;
        let mut key = String::with_capacity(KEY_PREFIX.len() + 43);
        key.push_str(KEY_PREFIX);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut key);
        Ok(Self(key))
    }

    /// The key itself, to show the caller once. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its SHA-256, what the database stores.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The short prefix shown in listings.
    pub fn display_prefix(&self) -> &str {
        display_prefix(&self.0)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}…)", self.display_prefix())
    }
}

/// The first [`DISPLAY_PREFIX_LEN`] characters of a key (all of a shorter
/// string).
pub fn display_prefix(key: &str) -> &str {
    key.get(..DISPLAY_PREFIX_LEN).unwrap_or(key)
}

/// SHA-256 of a key. Keys carry 256 random bits, so a plain (unsalted)
/// hash cannot be reversed, and it lets a presented key be found by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes any presented credential (a host key, or a project key so that
    /// comparing two hashes also hides the configured key's length).
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// Compares in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Reads a hash stored as a BLOB; `None` when it is not 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not secret, but there is no reason to print it either.
        f.write_str("KeyHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_256_bit_url_safe_and_unique() {
        let a = SecretKey::generate().expect("key");
        let b = SecretKey::generate().expect("key");
        assert_ne!(a, b);
        let key = a.expose();
        assert!(key.starts_with(KEY_PREFIX));
        let body = &key[KEY_PREFIX.len()..];
        assert_eq!(body.len(), 43, "32 bytes in unpadded base64");
        assert!(body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("decodes").len(), 32);
    }

    #[test]
    fn debug_shows_only_the_prefix() {
        let key = SecretKey::generate().expect("key");
        let debug = format!("{key:?}");
        assert!(!debug.contains(key.expose()), "{debug}");
        assert!(debug.contains(key.display_prefix()));
        assert_eq!(key.display_prefix().len(), DISPLAY_PREFIX_LEN);
    }

    #[test]
    fn hashes_compare_by_value() {
        let key = SecretKey::generate().expect("key");
        assert!(key.hash().ct_eq(&KeyHash::of(key.expose())));
        assert!(!key.hash().ct_eq(&KeyHash::of("ehk_other")));
        // SHA-256("abc"), the FIPS 180-2 test vector.
        assert_eq!(
            KeyHash::of("abc").0[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256 of a known input"
        );
        assert_eq!(KeyHash::from_slice(&[0; 31]), None);
        assert_eq!(KeyHash::from_slice(&[7; 32]), Some(KeyHash([7; 32])));
    }

    #[test]
    fn display_prefix_of_short_strings() {
        assert_eq!(display_prefix("abc"), "abc");
        assert_eq!(display_prefix("ehk_123456789"), "ehk_12345678");
    }
}
