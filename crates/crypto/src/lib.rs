//! Sign and verify, wrap keys for recipients, and encrypt and decrypt record payloads with reviewed primitives.
//!
//! Modules:
//! - [`sign`]: Ed25519 under ZIP-215 rules (commonware-cryptography), namespaced
//!   messages, batch verification that agrees with single verification.
//! - [`wrap`]: HPKE (RFC 9180) base-mode key wrapping; X-Wing by default.
//! - [`payload`]: AES-256-GCM in the STREAM construction with a key-committing
//!   header, streaming in bounded memory.
//! - [`keystore`]: passphrase-encrypted secrets (Argon2id + AES-256-GCM).
//! - [`local`]: blobs kept at rest on a member's machine, under an HKDF-derived key.
//! - [`threshold`]: Pedersen verifiable shares of a record key half for the validators (threshold
//!   release), and their re-sharing to a new validator set.
//! - [`suite`]: the stable ids that make every format crypto-agile.
//!
//! Nothing here implements a primitive: the algorithms come from
//! commonware-cryptography, hpke, aws-lc-rs, argon2 and vsss-rs.

#![deny(missing_docs)]

mod aead;
mod error;
mod hash;
pub mod keystore;
pub mod local;
pub mod payload;
pub mod sign;
pub mod suite;
pub mod threshold;
pub mod wrap;

pub use error::CryptoError;
pub use hash::{Sha256Stream, sha256};

/// Fills an array from the operating system's random number generator.
///
/// # Panics
///
/// Panics if the operating system cannot provide randomness: no key, nonce or
/// salt may ever be made without it, and there is no safe fallback.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fill_random(&mut bytes);
    bytes
}

/// Fills `dest` from the operating system's random number generator.
///
/// # Panics
///
/// As [`random_bytes`].
pub(crate) fn fill_random(dest: &mut [u8]) {
    getrandom::fill(dest).expect("the operating system's random number generator is available");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ() {
        let a: [u8; 32] = random_bytes();
        let b: [u8; 32] = random_bytes();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
