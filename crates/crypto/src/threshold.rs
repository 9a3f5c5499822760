//! Threshold release (DESIGN §6a): a record's data key is derived from two halves,
//! `DEK = HKDF-SHA256(k_env ‖ k_thr)`. `k_env` is wrapped for the record's key holders as before;
//! `k_thr` is split with Shamir's scheme over GF(2⁸) (vsss-rs) into one share per validator, so no
//! reader gets the data key without `threshold` validators releasing their shares, which honest
//! validators do only after executing the reader's allowed RecordAccess.
//!
//! Each share is published beside the record as a hash commitment, so a reader can tell a
//! validator that released a wrong share from one that released a right one, and try another.
//!
//! Nothing here implements a primitive: the secret sharing is vsss-rs's, HKDF and SHA-256 are
//! aws-lc-rs's.

use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use vsss_rs::{Gf256, IdentifierGf256, ParticipantIdGenerator};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::payload::{DATA_KEY_BYTES, DataKey};

/// Bytes of `k_env` and of `k_thr`.
pub const HALF_KEY_BYTES: usize = 32;
/// Bytes of one share: the participant id (the validator's index + 1) and 32 bytes.
pub const SHARE_BYTES: usize = 1 + HALF_KEY_BYTES;
/// Most shares of one secret (participant ids are one byte, 0 excluded).
pub const SHARES_MAX: usize = 255;

const DEK_SALT: &[u8] = b"medledger/threshold-dek/v1";
const SHARE_COMMIT_LABEL: &[u8] = b"medledger/share-commit/v1";

/// One validator's share of a record's `k_thr` (or of an emergency key). Wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Share(Zeroizing<[u8; SHARE_BYTES]>);

impl Share {
    /// A share from its bytes (as unwrapped from an envelope).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; SHARE_BYTES] = bytes.try_into().map_err(|_| CryptoError::InvalidLength {
            what: "threshold share",
            expected: SHARE_BYTES,
            actual: bytes.len(),
        })?;
        if array[0] == 0 {
            return Err(CryptoError::Threshold { reason: "share has participant id 0" });
        }
        Ok(Self(Zeroizing::new(array)))
    }

    /// The share's bytes (participant id first).
    pub fn as_bytes(&self) -> &[u8; SHARE_BYTES] {
        &self.0
    }

    /// The validator index this share belongs to.
    pub fn index(&self) -> usize {
        usize::from(self.0[0]) - 1
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(index {}, ..)", self.index())
    }
}

/// The operating system's randomness behind the `rand_core` 0.10 traits vsss-rs takes.
struct OsRng;

impl rand_core::TryRng for OsRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(u32::from_le_bytes(crate::random_bytes()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(u64::from_le_bytes(crate::random_bytes()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        crate::fill_random(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for OsRng {}

/// Splits `secret` into `count` shares, any `threshold` of which recover it; share `i` belongs to
/// validator `i`. A threshold of 1 gives every validator the secret itself (a network of one to
/// three validators tolerates no Byzantine one: f = 0).
pub fn split(secret: &[u8; HALF_KEY_BYTES], threshold: usize, count: usize) -> Result<Vec<Share>, CryptoError> {
    if threshold == 0 || threshold > count || count > SHARES_MAX {
        return Err(CryptoError::Threshold { reason: "threshold must be 1..=count and count at most 255" });
    }
    let id = |i: usize| u8::try_from(i + 1).expect("count is at most 255");
    if threshold == 1 {
        return Ok((0..count)
            .map(|i| {
                let mut share = Zeroizing::new([0u8; SHARE_BYTES]);
                share[0] = id(i);
                share[1..].copy_from_slice(secret);
                Share(share)
            })
            .collect());
    }
    let ids: Vec<IdentifierGf256> = (0..count).map(|i| IdentifierGf256::from(Gf256(id(i)))).collect();
    let generator = ParticipantIdGenerator::from(&ids);
    let shares = Gf256::split_array_with_participant_generators(threshold, count, secret, OsRng, &[generator])
        .map_err(|_| CryptoError::Threshold { reason: "secret sharing failed" })?;
    shares.into_iter().map(|s| Share::from_slice(&Zeroizing::new(s))).collect()
}

/// Recovers the secret from shares of distinct validators. With fewer than the threshold the
/// result is a wrong key, which the record's key commitment then refuses: the caller always
/// checks what it recovers.
pub fn combine(shares: &[Share]) -> Result<Zeroizing<[u8; HALF_KEY_BYTES]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; HALF_KEY_BYTES]);
    match shares {
        [] => return Err(CryptoError::Threshold { reason: "no shares" }),
        [one] => out.copy_from_slice(&one.0[1..]),
        many => {
            let bytes: Vec<Vec<u8>> = many.iter().map(|s| s.0.to_vec()).collect();
            let secret = Zeroizing::new(
                Gf256::combine_array(&bytes).map_err(|_| CryptoError::Threshold { reason: "shares do not combine" })?,
            );
            for mut b in bytes {
                zeroize::Zeroize::zeroize(&mut b);
            }
            if secret.len() != HALF_KEY_BYTES {
                return Err(CryptoError::Threshold { reason: "shares do not combine" });
            }
            out.copy_from_slice(&secret);
        }
    }
    Ok(out)
}

/// `SHA-256("medledger/share-commit/v1" ‖ record ‖ version_be ‖ share)`: published beside the
/// record, it lets a reader check each released share before combining.
pub fn share_commitment(record: &[u8; 16], version: u32, share: &Share) -> [u8; 32] {
    let mut hash = crate::Sha256Stream::new();
    hash.update(SHARE_COMMIT_LABEL);
    hash.update(record);
    hash.update(&version.to_be_bytes());
    hash.update(share.as_bytes());
    hash.finalize()
}

struct Len32;
impl KeyType for Len32 {
    fn len(&self) -> usize {
        DATA_KEY_BYTES
    }
}

/// The record's data key: `HKDF-SHA256(salt = "medledger/threshold-dek/v1", ikm = k_env ‖ k_thr,
/// info = record ‖ version_be)`. Neither half alone says anything about the key.
pub fn derive_data_key(
    k_env: &[u8; HALF_KEY_BYTES],
    k_thr: &[u8; HALF_KEY_BYTES],
    record: &[u8; 16],
    version: u32,
) -> Result<DataKey, CryptoError> {
    let mut ikm = Zeroizing::new([0u8; 2 * HALF_KEY_BYTES]);
    ikm[..HALF_KEY_BYTES].copy_from_slice(k_env);
    ikm[HALF_KEY_BYTES..].copy_from_slice(k_thr);
    let mut info = [0u8; 20];
    info[..16].copy_from_slice(record);
    info[16..].copy_from_slice(&version.to_be_bytes());
    let info = [&info[..]];
    let mut okm = Zeroizing::new([0u8; DATA_KEY_BYTES]);
    Salt::new(HKDF_SHA256, DEK_SALT)
        .extract(&ikm[..])
        .expand(&info, Len32)
        .and_then(|k| k.fill(&mut okm[..]))
        .map_err(|_| CryptoError::Threshold { reason: "key derivation failed" })?;
    Ok(DataKey::from_bytes(&okm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        (0u32..(1 << n))
            .filter(|m| m.count_ones() as usize == k)
            .map(|m| (0..n).filter(|i| m & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn any_threshold_of_shares_recovers_the_secret_and_fewer_do_not() {
        let secret: [u8; 32] = crate::random_bytes();
        for (threshold, count) in [(1, 1), (1, 3), (2, 4), (3, 7), (5, 16)] {
            let shares = split(&secret, threshold, count).unwrap();
            assert_eq!(shares.len(), count);
            assert!(shares.iter().enumerate().all(|(i, s)| s.index() == i));
            for subset in subsets(count.min(7), threshold) {
                let chosen: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
                assert_eq!(*combine(&chosen).unwrap(), secret, "{threshold}-of-{count} {subset:?}");
            }
            if threshold > 1 {
                for subset in subsets(count.min(7), threshold - 1) {
                    let chosen: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
                    assert_ne!(*combine(&chosen).unwrap(), secret, "{threshold}-of-{count} {subset:?}");
                }
            }
        }
    }

    #[test]
    fn shares_of_a_threshold_above_one_are_not_the_secret() {
        let secret: [u8; 32] = crate::random_bytes();
        let shares = split(&secret, 2, 4).unwrap();
        assert!(shares.iter().all(|s| s.as_bytes()[1..] != secret));
        // Two splits of one secret share nothing.
        let again = split(&secret, 2, 4).unwrap();
        assert!(shares.iter().zip(&again).all(|(a, b)| a != b));
    }

    #[test]
    fn bad_parameters_and_shares_are_refused() {
        let secret = [7u8; 32];
        assert!(split(&secret, 0, 4).is_err());
        assert!(split(&secret, 5, 4).is_err());
        assert!(split(&secret, 2, 256).is_err());
        assert!(Share::from_slice(&[0u8; SHARE_BYTES]).is_err());
        assert!(Share::from_slice(&[1u8; SHARE_BYTES - 1]).is_err());
        let shares = split(&secret, 2, 4).unwrap();
        // The same validator twice is not two shares.
        assert!(combine(&[shares[1].clone(), shares[1].clone()]).is_err());
        assert!(combine(&[]).is_err());
    }

    #[test]
    fn commitments_name_one_share_of_one_record_version() {
        let shares = split(&[9u8; 32], 2, 4).unwrap();
        let record = [1u8; 16];
        let c = share_commitment(&record, 1, &shares[0]);
        assert_ne!(c, share_commitment(&record, 1, &shares[1]));
        assert_ne!(c, share_commitment(&record, 2, &shares[0]));
        assert_ne!(c, share_commitment(&[2u8; 16], 1, &shares[0]));
        assert_eq!(c, share_commitment(&record, 1, &shares[0].clone()));
    }

    #[test]
    fn the_data_key_needs_both_halves() {
        let (env, thr, record) = ([1u8; 32], [2u8; 32], [3u8; 16]);
        let dek = derive_data_key(&env, &thr, &record, 1).unwrap();
        assert_ne!(dek.as_bytes(), derive_data_key(&env, &[0u8; 32], &record, 1).unwrap().as_bytes());
        assert_ne!(dek.as_bytes(), derive_data_key(&[0u8; 32], &thr, &record, 1).unwrap().as_bytes());
        assert_ne!(dek.as_bytes(), derive_data_key(&env, &thr, &record, 2).unwrap().as_bytes());
        assert_ne!(dek.as_bytes(), derive_data_key(&thr, &env, &record, 1).unwrap().as_bytes());
        // Pinned: the derivation is part of the format.
        assert_eq!(hex::encode(dek.as_bytes()), GOLDEN_DEK);
    }

    /// Computed independently (Python's hmac, RFC 5869 by hand).
    const GOLDEN_DEK: &str = "c2e297b68198e6d178173c77d02022326fb9ef76bfdd7f11b3714f201db40e64";
}
