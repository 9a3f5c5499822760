//! Secrets kept at rest on a member's own machine (the gateway's cache, an organisation's custody
//! keystore): AES-256-GCM under a key derived with HKDF-SHA256 (RFC 5869, aws-lc-rs) from a secret
//! the member already holds, with a label per use so one secret never keys two purposes.
//!
//! Format: `"MLL1"` ‖ 12-byte random nonce ‖ ciphertext ‖ 16-byte tag; the caller's `aad` binds
//! what the blob is (for example the name it is stored under), so blobs cannot be swapped.

use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::aead::{Aes256Gcm, NONCE_BYTES, TAG_BYTES};

const MAGIC: &[u8; 4] = b"MLL1";
const SALT: &[u8] = b"medledger/local/v1";
const ID_SALT: &[u8] = b"medledger/local-id/v1";
const SECRET_SALT: &[u8] = b"medledger/local-secret/v1";
/// Largest blob sealed or opened (bounds memory on hostile input).
pub const LOCAL_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A key for local blobs; derived, never stored.
pub struct LocalKey(Aes256Gcm);

struct Len32;
impl KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 (RFC 5869) with a 32-byte output.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut okm = Zeroizing::new([0u8; 32]);
    let info = [info];
    Salt::new(HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&info, Len32)
        .and_then(|k| k.fill(&mut okm[..]))
        .map_err(|_| CryptoError::LocalBlob { reason: "key derivation failed" })?;
    Ok(okm)
}

/// A 16-byte identifier derived from `secret` and `context` (HKDF-SHA256): the same inputs give
/// the same id (so an interrupted job can be resumed without duplicates), and nobody without the
/// secret can link the id to `context`.
pub fn derive_id(secret: &[u8], context: &[u8]) -> Result<[u8; 16], CryptoError> {
    if secret.len() < 32 {
        return Err(CryptoError::LocalBlob { reason: "secret shorter than 32 bytes" });
    }
    let okm = hkdf_sha256(ID_SALT, secret, context)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&okm[..16]);
    Ok(id)
}

/// A 32-byte secret derived from `secret` for `label` (HKDF-SHA256): one-way, so whoever holds
/// the result cannot get back to `secret` (a share key's successor, for forward secrecy).
pub fn derive_secret(secret: &[u8], label: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    if secret.len() < 32 {
        return Err(CryptoError::LocalBlob { reason: "secret shorter than 32 bytes" });
    }
    hkdf_sha256(SECRET_SALT, secret, label)
}

impl LocalKey {
    /// Derives the key for `label` from `secret` (at least 32 bytes of key material).
    pub fn derive(secret: &[u8], label: &[u8]) -> Result<Self, CryptoError> {
        if secret.len() < 32 {
            return Err(CryptoError::LocalBlob { reason: "secret shorter than 32 bytes" });
        }
        let key = hkdf_sha256(SALT, secret, label)?;
        Ok(LocalKey(Aes256Gcm::new(&key)))
    }

    /// Encrypts `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if plaintext.len() > LOCAL_BYTES_MAX {
            return Err(CryptoError::LocalBlob { reason: "over the size limit" });
        }
        let nonce: [u8; NONCE_BYTES] = crate::random_bytes();
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_BYTES + plaintext.len() + TAG_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self.0.seal_in_place(nonce, aad, &mut out[start..]);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Authenticates and decrypts a blob made by [`LocalKey::seal`] with the same key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let header = MAGIC.len() + NONCE_BYTES;
        if sealed.len() < header + TAG_BYTES || sealed.len() > LOCAL_BYTES_MAX + header + TAG_BYTES {
            return Err(CryptoError::LocalBlob { reason: "wrong length" });
        }
        if &sealed[..MAGIC.len()] != MAGIC {
            return Err(CryptoError::LocalBlob { reason: "unknown format" });
        }
        let nonce: [u8; NONCE_BYTES] =
            sealed[MAGIC.len()..header].try_into().map_err(|_| CryptoError::LocalBlob { reason: "wrong length" })?;
        let (ciphertext, tag) = sealed[header..].split_at(sealed.len() - header - TAG_BYTES);
        let mut plaintext = Zeroizing::new(vec![0u8; ciphertext.len()]);
        self.0.open(nonce, aad, ciphertext, tag, &mut plaintext).map_err(|_| CryptoError::LocalOpenFailed)?;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_binding() {
        let key = LocalKey::derive(&[7u8; 32], b"cache").unwrap();
        let sealed = key.seal(b"name-1", b"resource").unwrap();
        assert_eq!(&key.open(b"name-1", &sealed).unwrap()[..], b"resource");
        // Another name, another label, another secret, a flipped bit: all refused.
        assert!(key.open(b"name-2", &sealed).is_err());
        assert!(LocalKey::derive(&[7u8; 32], b"custody").unwrap().open(b"name-1", &sealed).is_err());
        assert!(LocalKey::derive(&[8u8; 32], b"cache").unwrap().open(b"name-1", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(key.open(b"name-1", &bad).is_err(), "byte {i}");
        }
        assert!(key.open(b"name-1", &sealed[..sealed.len() - 1]).is_err());
        assert!(key.open(b"name-1", b"").is_err());
        // Two seals of the same input differ (random nonce).
        assert_ne!(sealed, key.seal(b"name-1", b"resource").unwrap());
        assert!(LocalKey::derive(&[7u8; 16], b"cache").is_err(), "short secrets are refused");
    }

    #[test]
    fn derived_ids_are_stable_and_keyed() {
        let a = derive_id(&[7u8; 32], b"file-1/0").unwrap();
        assert_eq!(a, derive_id(&[7u8; 32], b"file-1/0").unwrap());
        assert_ne!(a, derive_id(&[7u8; 32], b"file-1/1").unwrap());
        assert_ne!(a, derive_id(&[8u8; 32], b"file-1/0").unwrap());
        assert!(derive_id(&[7u8; 31], b"x").is_err());
    }

    #[test]
    fn derivation_is_rfc5869_hkdf_sha256() {
        // RFC 5869 Appendix A.1 (test case 1): the first 32 bytes of its OKM.
        let okm = hkdf_sha256(
            &hex::decode("000102030405060708090a0b0c").unwrap(),
            &[0x0b; 22],
            &hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap(),
        )
        .unwrap();
        assert_eq!(hex::encode(*okm), "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf");
    }
}
