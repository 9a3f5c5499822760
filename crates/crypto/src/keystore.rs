//! Passphrase-encrypted secret blobs (Argon2id + AES-256-GCM).
//!
//! # Format (version 1)
//!
//! ```text
//! "MLKS1" (5) ‖ kdf id (1, = 1: Argon2id v1.3)
//!   ‖ m_cost_kib (4, BE) ‖ t_cost (4, BE) ‖ p_cost (4, BE)
//!   ‖ salt (16) ‖ nonce (12)                                   = 46-byte header
//!   ‖ AES-256-GCM(key = Argon2id(passphrase, salt), nonce, aad = header, secret) ‖ tag (16)
//! ```
//!
//! The header is the AEAD's associated data, so the stored parameters are
//! authenticated. On read the parameters are bounded
//! ([`M_COST_KIB_MAX`], [`T_COST_MAX`], [`P_COST_MAX`]) *before* Argon2 runs,
//! so a crafted file cannot demand huge memory or time; they also must not be
//! weaker than the minimums, so a planted file cannot make a passphrase cheap
//! to guess.
//!
//! A wrong passphrase and a tampered salt, nonce or ciphertext both give
//! [`CryptoError::WrongPassphrase`]: AES-GCM cannot tell them apart, and the
//! error says nothing more.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::aead::Aes256Gcm;

/// Magic prefix (the digit is the format version).
pub const MAGIC: &[u8; 5] = b"MLKS1";
/// KDF id for Argon2id version 0x13.
pub const KDF_ARGON2ID: u8 = 1;
/// Argon2id memory cost used when sealing (19 MiB).
pub const M_COST_KIB: u32 = 19 * 1024;
/// Argon2id passes used when sealing.
pub const T_COST: u32 = 2;
/// Argon2id lanes used when sealing.
pub const P_COST: u32 = 1;
/// Smallest memory cost accepted on read.
pub const M_COST_KIB_MIN: u32 = M_COST_KIB;
/// Largest memory cost accepted on read (256 MiB).
pub const M_COST_KIB_MAX: u32 = 256 * 1024;
/// Smallest number of passes accepted on read.
pub const T_COST_MIN: u32 = T_COST;
/// Largest number of passes accepted on read.
pub const T_COST_MAX: u32 = 16;
/// Smallest number of lanes accepted on read.
pub const P_COST_MIN: u32 = 1;
/// Largest number of lanes accepted on read.
pub const P_COST_MAX: u32 = 4;
/// Salt length.
pub const SALT_BYTES: usize = 16;
/// AES-GCM nonce length.
pub const NONCE_BYTES: usize = crate::aead::NONCE_BYTES;
/// AES-GCM tag length.
pub const TAG_BYTES: usize = crate::aead::TAG_BYTES;
/// Length of the header (everything before the ciphertext).
pub const HEADER_BYTES: usize = MAGIC.len() + 1 + 3 * 4 + SALT_BYTES + NONCE_BYTES;
/// The largest secret a keystore holds.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Argon2id cost parameters as stored in a keystore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The parameters [`seal`] uses.
    pub const DEFAULT: KdfParams = KdfParams { m_cost_kib: M_COST_KIB, t_cost: T_COST, p_cost: P_COST };

    /// Checks the parameters against the accepted bounds.
    pub fn check(&self) -> Result<(), CryptoError> {
        let ok = (M_COST_KIB_MIN..=M_COST_KIB_MAX).contains(&self.m_cost_kib)
            && (T_COST_MIN..=T_COST_MAX).contains(&self.t_cost)
            && (P_COST_MIN..=P_COST_MAX).contains(&self.p_cost);
        if ok {
            Ok(())
        } else {
            Err(CryptoError::KdfParametersOutOfBounds {
                m_cost_kib: self.m_cost_kib,
                t_cost: self.t_cost,
                p_cost: self.p_cost,
            })
        }
    }

    fn derive_key(&self, passphrase: &[u8], salt: &[u8; SALT_BYTES]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        self.check()?;
        let params =
            Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32)).map_err(|_| CryptoError::KeyDerivation)?;
        let mut key = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, key.as_mut_slice())
            .map_err(|_| CryptoError::KeyDerivation)?;
        Ok(key)
    }
}

/// Encrypts `secret` under `passphrase` with the default parameters.
pub fn seal(passphrase: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal_with(passphrase, secret, KdfParams::DEFAULT)
}

/// Encrypts `secret` under `passphrase` with explicit (bounded) parameters.
pub fn seal_with(passphrase: &[u8], secret: &[u8], params: KdfParams) -> Result<Vec<u8>, CryptoError> {
    if secret.len() > MAX_SECRET_BYTES {
        return Err(CryptoError::TooLong {
            what: "keystore secret",
            max: MAX_SECRET_BYTES as u64,
            actual: secret.len() as u64,
        });
    }
    params.check()?;
    let salt: [u8; SALT_BYTES] = crate::random_bytes();
    let nonce: [u8; NONCE_BYTES] = crate::random_bytes();
    let mut blob = Vec::with_capacity(HEADER_BYTES + secret.len() + TAG_BYTES);
    blob.extend_from_slice(MAGIC);
    blob.push(KDF_ARGON2ID);
    blob.extend_from_slice(&params.m_cost_kib.to_be_bytes());
    blob.extend_from_slice(&params.t_cost.to_be_bytes());
    blob.extend_from_slice(&params.p_cost.to_be_bytes());
    blob.extend_from_slice(&salt);
    blob.extend_from_slice(&nonce);
    assert_eq!(blob.len(), HEADER_BYTES, "header fields fill the header");

    let key = params.derive_key(passphrase, &salt)?;
    let aead = Aes256Gcm::new(&key);
    let mut sealed = Zeroizing::new(secret.to_vec());
    let tag = aead.seal_in_place(nonce, &blob[..HEADER_BYTES], sealed.as_mut_slice());
    blob.extend_from_slice(&sealed);
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// The parameters stored in a keystore, checked for format but not bounds.
pub fn params(sealed: &[u8]) -> Result<KdfParams, CryptoError> {
    Ok(parse(sealed)?.params)
}

/// Decrypts a keystore blob.
pub fn open(passphrase: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let parsed = parse(sealed)?;
    parsed.params.check()?;
    let key = parsed.params.derive_key(passphrase, &parsed.salt)?;
    let aead = Aes256Gcm::new(&key);
    let mut plaintext = Zeroizing::new(vec![0u8; parsed.ciphertext.len()]);
    aead.open(parsed.nonce, parsed.header, parsed.ciphertext, parsed.tag, plaintext.as_mut_slice())
        .map_err(|_| CryptoError::WrongPassphrase)?;
    Ok(plaintext)
}

struct Parsed<'a> {
    header: &'a [u8],
    params: KdfParams,
    salt: [u8; SALT_BYTES],
    nonce: [u8; NONCE_BYTES],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

fn parse(sealed: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    if sealed.len() < HEADER_BYTES + TAG_BYTES {
        return Err(CryptoError::MalformedKeystore { reason: "too short" });
    }
    if sealed.len() > HEADER_BYTES + MAX_SECRET_BYTES + TAG_BYTES {
        return Err(CryptoError::TooLong {
            what: "keystore",
            max: (HEADER_BYTES + MAX_SECRET_BYTES + TAG_BYTES) as u64,
            actual: sealed.len() as u64,
        });
    }
    let (header, body) = sealed.split_at(HEADER_BYTES);
    let (magic, rest) = header.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(CryptoError::MalformedKeystore { reason: "bad magic" });
    }
    if rest[0] != KDF_ARGON2ID {
        return Err(CryptoError::MalformedKeystore { reason: "unknown key-derivation function" });
    }
    let rest = &rest[1..];
    let be = |at: usize| u32::from_be_bytes(rest[at..at + 4].try_into().expect("4-byte field"));
    let params = KdfParams { m_cost_kib: be(0), t_cost: be(4), p_cost: be(8) };
    let rest = &rest[12..];
    let (salt, nonce) = rest.split_at(SALT_BYTES);
    let (ciphertext, tag) = body.split_at(body.len() - TAG_BYTES);
    Ok(Parsed {
        header,
        params,
        salt: salt.try_into().expect("16-byte field"),
        nonce: nonce.try_into().expect("12-byte field"),
        ciphertext,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let secret = b"ed25519 seed and x-wing key".to_vec();
        let blob = seal(b"correct horse", &secret).unwrap();
        assert_eq!(&blob[..5], b"MLKS1");
        assert_eq!(blob.len(), HEADER_BYTES + secret.len() + TAG_BYTES);
        assert_eq!(params(&blob).unwrap(), KdfParams::DEFAULT);
        assert_eq!(open(b"correct horse", &blob).unwrap().as_slice(), &secret[..]);
        // Salt and nonce are fresh.
        let again = seal(b"correct horse", &secret).unwrap();
        assert_ne!(blob[18..46], again[18..46]);
        // Empty secrets round-trip too.
        let empty = seal(b"p", b"").unwrap();
        assert!(open(b"p", &empty).unwrap().is_empty());
    }

    #[test]
    fn wrong_passphrase() {
        let blob = seal(b"correct horse", b"secret").unwrap();
        let err = open(b"correct horsf", &blob).unwrap_err();
        assert!(matches!(err, CryptoError::WrongPassphrase));
        assert_eq!(err.to_string(), "wrong passphrase");
    }

    #[test]
    fn corrupted_blobs_fail() {
        let blob = seal(b"pw", b"secret").unwrap();
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            let err = open(b"pw", &bad).unwrap_err();
            let expected = match i {
                0..=4 => matches!(err, CryptoError::MalformedKeystore { .. }),
                5 => matches!(err, CryptoError::MalformedKeystore { .. }),
                // Parameter bytes: either out of bounds or (still in bounds)
                // a different key, hence the AEAD fails.
                6..=17 => matches!(err, CryptoError::KdfParametersOutOfBounds { .. } | CryptoError::WrongPassphrase),
                _ => matches!(err, CryptoError::WrongPassphrase),
            };
            assert!(expected, "byte {i}: {err:?}");
        }
        assert!(matches!(
            open(b"pw", &blob[..HEADER_BYTES + TAG_BYTES - 1]).unwrap_err(),
            CryptoError::MalformedKeystore { .. }
        ));
        assert!(open(b"pw", &blob[..blob.len() - 1]).is_err());
        let mut long = blob.clone();
        long.push(0);
        assert!(open(b"pw", &long).is_err());
    }

    #[test]
    fn absurd_parameters_are_rejected() {
        let blob = seal(b"pw", b"secret").unwrap();
        for (m, t, p) in [
            (u32::MAX, 2, 1),
            (M_COST_KIB_MAX + 1, 2, 1),
            (8, 2, 1),
            (M_COST_KIB, u32::MAX, 1),
            (M_COST_KIB, 1, 1),
            (M_COST_KIB, 2, 0),
            (M_COST_KIB, 2, 255u32),
        ] {
            let mut bad = blob.clone();
            bad[6..10].copy_from_slice(&m.to_be_bytes());
            bad[10..14].copy_from_slice(&t.to_be_bytes());
            bad[14..18].copy_from_slice(&p.to_be_bytes());
            let err = open(b"pw", &bad).unwrap_err();
            assert!(
                matches!(err, CryptoError::KdfParametersOutOfBounds { m_cost_kib, t_cost, p_cost }
                    if m_cost_kib == m && t_cost == t && p_cost == p),
                "({m}, {t}, {p}): {err:?}"
            );
        }
        assert!(seal_with(b"pw", b"s", KdfParams { m_cost_kib: u32::MAX, t_cost: 2, p_cost: 1 }).is_err());
    }

    #[test]
    fn stronger_parameters_round_trip() {
        let params = KdfParams { m_cost_kib: 32 * 1024, t_cost: 3, p_cost: 2 };
        let blob = seal_with(b"pw", b"secret", params).unwrap();
        assert_eq!(super::params(&blob).unwrap(), params);
        assert_eq!(open(b"pw", &blob).unwrap().as_slice(), b"secret");
    }

    #[test]
    fn oversized_secret_is_refused() {
        assert!(matches!(seal(b"pw", &vec![0u8; MAX_SECRET_BYTES + 1]).unwrap_err(), CryptoError::TooLong { .. }));
    }

    #[test]
    fn golden_blob_opens() {
        // Made independently from the format description above with Python's
        // `cryptography` (OpenSSL Argon2id and AES-GCM), not by this code:
        // salt 00..0f, nonce 64..6f, m = 19456 KiB, t = 2, p = 1.
        let blob = hex::decode(
            "4d4c4b53310100004c000000000200000001000102030405060708090a0b0c0d0e0f\
             6465666768696a6b6c6d6e6f2ee398ec915c7251ccf6873db53dfe40d4466828dd\
             149a20bfadbff3f903472fba8d34d3d2",
        )
        .unwrap();
        assert_eq!(params(&blob).unwrap(), KdfParams::DEFAULT);
        assert_eq!(open(b"correct horse battery staple", &blob).unwrap().as_slice(), b"medledger keystore v1");
        assert!(matches!(open(b"correct horse battery stapler", &blob).unwrap_err(), CryptoError::WrongPassphrase));
    }
}
