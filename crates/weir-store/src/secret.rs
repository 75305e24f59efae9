//! Key secrets: making new keys and ids from the OS random number generator, and hashing a
//! presented key with the server secret ([`KeyHasher`]).
//!
//! Keys are `wk-` followed by 43 base62 characters: 43 × log2(62) ≈ 256.03 bits of entropy.
//! A key that random needs no slow password hash: a keyed BLAKE3 hash (tens of nanoseconds)
//! is enough, and it keeps authentication to one hash and one indexed lookup per request.
//! The key of that hash is derived from the server secret
//! ([`KeyStore::hashing_secret`](crate::KeyStore::hashing_secret)), so a copy of the database
//! alone does not let anyone test guesses offline.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::error::{StoreError, StoreResult};
use crate::keys::KeyHash;

/// What every gateway key starts with.
pub const KEY_PREFIX: &str = "wk-";
/// Base62 characters after the prefix.
pub const KEY_RANDOM_LEN: usize = 43;
/// What every key id starts with.
pub const KEY_ID_PREFIX: &str = "key_";

/// BLAKE3 key-derivation context: fixed forever, or every stored hash stops matching.
const HASH_CONTEXT: &str = "weir gateway key hashing 2026-11 v1";

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Hashes presented keys with a secret: the same key and secret always give the same
/// [`KeyHash`]; another secret gives another hash. `Debug` never shows the secret.
pub struct KeyHasher {
    key: SecretBox<[u8; 32]>,
}

impl KeyHasher {
    /// A hasher keyed by `secret` (any length; the store's is 32 random bytes). The hashing key
    /// is derived from it with BLAKE3's key derivation, under a context fixed to weir.
    pub fn new(secret: &[u8]) -> Self {
        KeyHasher {
            key: SecretBox::new(Box::new(blake3::derive_key(HASH_CONTEXT, secret))),
        }
    }

    /// The keyed hash of a presented key. Allocates nothing beyond the digest.
    pub fn hash(&self, presented_key: &str) -> KeyHash {
        KeyHash(*blake3::keyed_hash(self.key.expose_secret(), presented_key.as_bytes()).as_bytes())
    }
}

impl Clone for KeyHasher {
    fn clone(&self) -> Self {
        KeyHasher {
            key: SecretBox::new(Box::new(*self.key.expose_secret())),
        }
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher { secret: [redacted] }")
    }
}

/// A new random key and its hint: `("wk-" + 43 base62 characters, "wk-Ab3x…9fQz")`. The hint
/// (first 7 characters, `…`, last 4) is what listings show so people can tell keys apart. A
/// failing OS random number generator is [`StoreError::Random`], never a panic.
pub fn generate_key() -> StoreResult<(SecretString, String)> {
    key_from(fill_random)
}

/// A new key id: `key_` + 16 lowercase hex characters (64 random bits), or
/// [`StoreError::Random`].
pub fn generate_key_id() -> StoreResult<String> {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes)?;
    Ok(key_id_from(&bytes))
}

/// The hint listings show for `key`: its first 7 characters, `…`, its last 4.
pub fn key_hint(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() <= 11 {
        // Too short to hide anything by eliding: show only the start.
        return chars.iter().take(chars.len().min(3)).collect::<String>() + "…";
    }
    let head: String = chars[..7].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Fill `buf` from the OS random number generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> StoreResult<()> {
    getrandom::fill(buf).map_err(|e| StoreError::Random(e.to_string()))
}

fn key_id_from(bytes: &[u8; 8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(KEY_ID_PREFIX.len() + 16);
    id.push_str(KEY_ID_PREFIX);
    for b in bytes {
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    id
}

/// Build a key from random bytes, by rejection sampling: a byte below 248 (= 4 × 62) maps to
/// `byte % 62` with every character equally likely; bytes 248..=255 are skipped.
fn key_from<E>(
    mut fill: impl FnMut(&mut [u8]) -> Result<(), E>,
) -> Result<(SecretString, String), E> {
    let mut key = String::with_capacity(KEY_PREFIX.len() + KEY_RANDOM_LEN);
    key.push_str(KEY_PREFIX);
    let mut buf = [0u8; 64];
    let mut drawn = 0;
    while drawn < KEY_RANDOM_LEN {
        fill(&mut buf)?;
        for &b in &buf {
            if b < 248 && drawn < KEY_RANDOM_LEN {
                key.push(char::from(BASE62[usize::from(b % 62)]));
                drawn += 1;
            }
        }
    }
    buf.fill(0);
    let hint = key_hint(&key);
    Ok((SecretString::from(key), hint))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn hasher_is_deterministic_and_secret_dependent() {
        let a = KeyHasher::new(b"secret one");
        let again = KeyHasher::new(b"secret one");
        let b = KeyHasher::new(b"secret two");
        assert_eq!(a.hash("wk-abc"), again.hash("wk-abc"));
        assert_eq!(a.hash("wk-abc"), a.clone().hash("wk-abc"));
        assert_ne!(a.hash("wk-abc"), b.hash("wk-abc"), "another secret");
        assert_ne!(a.hash("wk-abc"), a.hash("wk-abd"), "another key");
    }

    #[test]
    fn hasher_debug_redacts_the_secret() {
        let secret = "hunter2-very-secret";
        let hasher = KeyHasher::new(secret.as_bytes());
        let shown = format!("{hasher:?} {:?}", hasher.clone());
        assert!(!shown.contains(secret));
        assert!(shown.contains("redacted"), "{shown}");
        let derived = blake3::derive_key(HASH_CONTEXT, secret.as_bytes());
        let hex: String = derived.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !shown.contains(&hex[..8]),
            "the derived key is not shown either"
        );
    }

    #[test]
    fn generated_keys_have_prefix_length_charset_and_hint() {
        let (key, hint) = generate_key().unwrap();
        let key = key.expose_secret();
        assert!(key.starts_with(KEY_PREFIX), "{hint}");
        assert_eq!(key.len(), KEY_PREFIX.len() + KEY_RANDOM_LEN);
        assert!(
            key[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert_eq!(hint, format!("{}…{}", &key[..7], &key[key.len() - 4..]));
        assert_eq!(hint.chars().count(), 12);
    }

    #[test]
    fn generated_keys_are_unique_and_use_every_character() {
        let mut seen = HashSet::new();
        let mut chars = HashSet::new();
        for _ in 0..2000 {
            let (key, _) = generate_key().unwrap();
            let key = key.expose_secret().to_string();
            chars.extend(key[KEY_PREFIX.len()..].bytes());
            assert!(seen.insert(key), "duplicate key");
        }
        assert_eq!(chars.len(), 62, "all of base62 shows up in 86k draws");
    }

    #[test]
    fn generated_ids_have_prefix_and_hex() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let id = generate_key_id().unwrap();
            assert_eq!(id.len(), KEY_ID_PREFIX.len() + 16);
            assert!(id.starts_with(KEY_ID_PREFIX));
            assert!(
                id[KEY_ID_PREFIX.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert!(seen.insert(id), "duplicate id");
        }
    }

    #[test]
    fn rejection_sampling_skips_biased_bytes() {
        // 248..=255 are skipped; 61 maps to 'z', 62 wraps to '0'.
        let mut calls = 0;
        let (key, _) = key_from(|buf: &mut [u8]| {
            calls += 1;
            let fill: &[u8] = if calls == 1 { &[255, 61, 62] } else { &[0] };
            for (i, b) in buf.iter_mut().enumerate() {
                *b = fill[i % fill.len()];
            }
            Ok::<(), ()>(())
        })
        .expect("infallible");
        let key = key.expose_secret();
        assert!(key.starts_with("wk-z0z0"), "{key}");
        assert_eq!(key.len(), KEY_PREFIX.len() + KEY_RANDOM_LEN);
    }

    #[test]
    fn hints_of_short_keys_hide_most_of_them() {
        assert_eq!(key_hint("wk-abcdefghijklmn"), "wk-abcd…klmn");
        assert_eq!(key_hint("short"), "sho…");
    }
}
