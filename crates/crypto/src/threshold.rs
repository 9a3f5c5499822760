//! Threshold release (DESIGN §6a): a record's data key is derived from two halves,
//! `DEK = HKDF-SHA256(k_env ‖ k_thr)`. `k_env` is wrapped for the record's key holders as before;
//! `k_thr` is split into one share per validator with Pedersen's verifiable secret sharing over
//! Ristretto255, so no reader gets the data key without `threshold` validators releasing their
//! shares, which honest validators do only after executing the reader's allowed RecordAccess.
//!
//! Each secret comes with a [`Verifier`]: Pedersen commitments `C_k = a_k·G + b_k·H` to the
//! coefficients of the sharing polynomial `a` and of a blinding polynomial `b`. A share
//! `(i, a(i), b(i))` is checked against it by anyone (`a(i)·G + b(i)·H = Σ C_k·i^k`), so a reader
//! tells a validator that released a wrong share from one that released a right one, and a
//! validator tells a well-dealt share from a bad one. The commitments are perfectly hiding: they
//! say nothing about the secret even to an adversary with unbounded computing power, so putting
//! them on the ledger costs none of the post-quantum confidentiality the X-Wing wraps give.
//!
//! **Re-sharing** (Herzberg–Jarecki–Krawczyk–Yung, Desmedt–Jajodia): when the validator set
//! changes, each old holder `i` deals its share `(s_i, r_i)` afresh to the new set ([`reshare`]);
//! the dealing's verifier `D_i` starts with `D_i0 = s_i·G + r_i·H`, which anyone compares with the
//! old verifier evaluated at `i` ([`Verifier::evaluate`]), so a holder cannot deal anything but its
//! own share. New holder `j` combines the sub-shares of any `t_old` dealers `Q`
//! ([`combine_subshares`]) and the new verifier is the same combination of theirs
//! ([`combine_verifiers`]): the new shares are a fresh sharing of the same secret, on which the
//! old shares are useless.
//!
//! Nothing here implements a primitive: the group and field are curve25519-dalek's, the sharing
//! and its checks vsss-rs's, HKDF and SHA-2 aws-lc-rs's. This module adds the Lagrange weights that
//! combine dealings (the same weights vsss-rs uses to combine shares; a test holds them equal).

use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use vsss_rs::{
    IdentifierPrimeField, PedersenResult, PedersenVerifierSet, ReadableShareSet, Share as _, ValueGroup,
    pedersen::PedersenOptions,
};
use zeroize::Zeroizing;

use crate::CryptoError;
use crate::payload::{DATA_KEY_BYTES, DataKey};

/// Bytes of `k_env` and of `k_thr` (each the canonical encoding of a Ristretto255 scalar).
pub const HALF_KEY_BYTES: usize = 32;
/// Bytes of one share: the participant id (the holder's position + 1), the share of the secret
/// and the share of the blinding polynomial, each a canonical scalar.
pub const SHARE_BYTES: usize = 1 + 2 * SCALAR_BYTES;
/// Bytes of one commitment (a compressed Ristretto255 point).
pub const POINT_BYTES: usize = 32;
/// Most shares of one secret (participant ids are one byte, 0 excluded).
pub const SHARES_MAX: usize = 255;

const SCALAR_BYTES: usize = 32;
const DEK_SALT: &[u8] = b"medledger/threshold-dek/v1";
/// `H` is hashed to the group from this label: nobody knows its discrete log to base `G`.
const BLINDING_GENERATOR_LABEL: &[u8] = b"medledger/pedersen-h/ristretto255/v1";

type FieldShare = vsss_rs::PrimeFieldShare<Scalar>;
type Point = ValueGroup<RistrettoPoint>;

fn blinding_generator() -> RistrettoPoint {
    let wide = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, BLINDING_GENERATOR_LABEL);
    let bytes: [u8; 64] = wide.as_ref().try_into().expect("SHA-512 is 64 bytes");
    RistrettoPoint::from_uniform_bytes(&bytes)
}

fn generators() -> (Point, Point) {
    (ValueGroup(curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT), ValueGroup(blinding_generator()))
}

fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let array: [u8; SCALAR_BYTES] = bytes.try_into().ok()?;
    Option::from(Scalar::from_canonical_bytes(array))
}

fn id_scalar(id: u8) -> IdentifierPrimeField<Scalar> {
    IdentifierPrimeField(Scalar::from(u64::from(id)))
}

/// A fresh secret: the canonical encoding of a uniformly random scalar.
pub fn random_secret() -> Zeroizing<[u8; HALF_KEY_BYTES]> {
    let wide = Zeroizing::new(crate::random_bytes::<64>());
    Zeroizing::new(Scalar::from_bytes_mod_order_wide(&wide).to_bytes())
}

/// One holder's share of a secret: participant id, `a(id)`, `b(id)`. Wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Share(Zeroizing<[u8; SHARE_BYTES]>);

impl Share {
    /// A share from its bytes (as unwrapped from an envelope): id 1..=255, canonical scalars.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; SHARE_BYTES] = bytes.try_into().map_err(|_| CryptoError::InvalidLength {
            what: "threshold share",
            expected: SHARE_BYTES,
            actual: bytes.len(),
        })?;
        if array[0] == 0 {
            return Err(CryptoError::Threshold { reason: "share has participant id 0" });
        }
        if scalar(&array[1..1 + SCALAR_BYTES]).is_none() || scalar(&array[1 + SCALAR_BYTES..]).is_none() {
            return Err(CryptoError::Threshold { reason: "share is not a pair of canonical scalars" });
        }
        Ok(Self(Zeroizing::new(array)))
    }

    fn from_parts(id: u8, value: &Scalar, blind: &Scalar) -> Self {
        let mut bytes = Zeroizing::new([0u8; SHARE_BYTES]);
        bytes[0] = id;
        bytes[1..1 + SCALAR_BYTES].copy_from_slice(value.as_bytes());
        bytes[1 + SCALAR_BYTES..].copy_from_slice(blind.as_bytes());
        Self(bytes)
    }

    /// The share's bytes (participant id first).
    pub fn as_bytes(&self) -> &[u8; SHARE_BYTES] {
        &self.0
    }

    /// The participant id: the holder's position in its set, plus one.
    pub fn id(&self) -> u8 {
        self.0[0]
    }

    /// The holder's position in its set.
    pub fn index(&self) -> usize {
        usize::from(self.0[0]) - 1
    }

    fn value(&self) -> Scalar {
        scalar(&self.0[1..1 + SCALAR_BYTES]).expect("checked when made")
    }

    fn blind(&self) -> Scalar {
        scalar(&self.0[1 + SCALAR_BYTES..]).expect("checked when made")
    }

    fn parts(&self) -> (FieldShare, FieldShare) {
        let id = id_scalar(self.id());
        (
            FieldShare::with_identifier_and_value(id, IdentifierPrimeField(self.value())),
            FieldShare::with_identifier_and_value(id, IdentifierPrimeField(self.blind())),
        )
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(index {}, ..)", self.index())
    }
}

/// The public Pedersen commitments of one sharing: `threshold` compressed points, constant term
/// first. Decoded only from points that decompress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier(Vec<RistrettoPoint>);

impl Verifier {
    /// A verifier from its compressed points; refuses an empty list, more than [`SHARES_MAX`]
    /// points, or a point that is not a valid Ristretto255 encoding.
    pub fn from_points(points: &[[u8; POINT_BYTES]]) -> Result<Self, CryptoError> {
        if points.is_empty() || points.len() > SHARES_MAX {
            return Err(CryptoError::Threshold { reason: "a verifier has 1..=255 commitments" });
        }
        points
            .iter()
            .map(|p| CompressedRistretto(*p).decompress())
            .collect::<Option<Vec<_>>>()
            .map(Self)
            .ok_or(CryptoError::Threshold { reason: "a commitment is not a Ristretto255 point" })
    }

    /// The compressed points.
    pub fn to_points(&self) -> Vec<[u8; POINT_BYTES]> {
        self.0.iter().map(|p| p.compress().to_bytes()).collect()
    }

    /// Shares needed to recover the secret: the number of commitments.
    pub fn threshold(&self) -> usize {
        self.0.len()
    }

    fn set(&self) -> Vec<Point> {
        let (g, h) = generators();
        let points: Vec<Point> = self.0.iter().copied().map(ValueGroup).collect();
        <Vec<Point> as PedersenVerifierSet<FieldShare, Point>>::pedersen_set_with_generators_and_verifiers(
            g, h, &points,
        )
    }

    /// Whether `share` is the share of participant `share.id()` this verifier commits to.
    pub fn verify(&self, share: &Share) -> bool {
        let (value, blind) = share.parts();
        <Vec<Point> as PedersenVerifierSet<FieldShare, Point>>::verify_share_and_blinder(&self.set(), &value, &blind)
            .is_ok()
    }

    /// The commitment to participant `id`'s share: `Σ C_k·id^k` (`id` ≥ 1).
    pub fn evaluate(&self, id: u8) -> Result<[u8; POINT_BYTES], CryptoError> {
        let point =
            <Vec<Point> as PedersenVerifierSet<FieldShare, Point>>::evaluate_verifier_at(&self.set(), &id_scalar(id))
                .map_err(|_| CryptoError::Threshold { reason: "participant id 0 has no share" })?;
        Ok(point.0.compress().to_bytes())
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

/// Shares `value` (with blinding constant `blind`) among `count` participants with ids
/// `1..=count`, any `threshold` of which recover it.
fn deal(value: &Scalar, blind: &Scalar, threshold: usize, count: usize) -> Result<(Vec<Share>, Verifier), CryptoError> {
    if threshold == 0 || threshold > count || count > SHARES_MAX {
        return Err(CryptoError::Threshold { reason: "threshold must be 1..=count and count at most 255" });
    }
    let id = |i: usize| u8::try_from(i + 1).expect("count is at most 255");
    let (g, h) = generators();
    if threshold == 1 {
        // A constant polynomial: every participant holds the secret (f = 0 tolerates no Byzantine
        // validator anyway). vsss-rs starts at threshold 2.
        let shares = (0..count).map(|i| Share::from_parts(id(i), value, blind)).collect();
        return Ok((shares, Verifier(vec![g.0 * value + h.0 * blind])));
    }
    let options = PedersenOptions {
        secret: &IdentifierPrimeField(*value),
        blinder: Some(IdentifierPrimeField(*blind)),
        secret_generator: Some(g),
        blinder_generator: Some(h),
    };
    let ids = (0..count).map(|i| id_scalar(id(i)));
    let dealt = vsss_rs::pedersen::split_secret_with_participant_ids_iter::<FieldShare, Point>(
        threshold, count, &options, OsRng, ids,
    )
    .map_err(|_| CryptoError::Threshold { reason: "secret sharing failed" })?;
    let shares = dealt
        .secret_shares()
        .iter()
        .zip(dealt.blinder_shares())
        .enumerate()
        .map(|(i, (value, blind))| Share::from_parts(id(i), &value.value().0, &blind.value().0))
        .collect();
    let set = dealt.pedersen_verifier_set();
    let points = <Vec<Point> as PedersenVerifierSet<FieldShare, Point>>::blind_verifiers(set);
    let verifier = Verifier(points.iter().map(|p| p.0).collect());
    Ok((shares, verifier))
}

/// Splits `secret` (a canonical scalar, e.g. from [`random_secret`]) into `count` shares, any
/// `threshold` of which recover it; share `i` belongs to the holder at position `i`. A threshold
/// of 1 gives every holder the secret itself (a network of one to three validators tolerates no
/// Byzantine one: f = 0).
pub fn split(
    secret: &[u8; HALF_KEY_BYTES],
    threshold: usize,
    count: usize,
) -> Result<(Vec<Share>, Verifier), CryptoError> {
    let value = scalar(secret).ok_or(CryptoError::Threshold { reason: "the secret is not a canonical scalar" })?;
    let blind = Scalar::from_bytes_mod_order_wide(&Zeroizing::new(crate::random_bytes::<64>()));
    deal(&value, &blind, threshold, count)
}

/// Deals `share` afresh to a set of `count` holders with `threshold`: the sub-shares for new
/// positions `0..count` and the dealing's verifier, whose constant term equals the old verifier
/// evaluated at `share.id()` (the check that keeps a dealer to its own share).
pub fn reshare(share: &Share, threshold: usize, count: usize) -> Result<(Vec<Share>, Verifier), CryptoError> {
    deal(&share.value(), &share.blind(), threshold, count)
}

/// Recovers the secret from shares of distinct holders. With fewer than the threshold the
/// result is a wrong key, which the record's key commitment then refuses: the caller checks each
/// share against its verifier first and what it recovers after.
pub fn combine(shares: &[Share]) -> Result<Zeroizing<[u8; HALF_KEY_BYTES]>, CryptoError> {
    let out = match shares {
        [] => return Err(CryptoError::Threshold { reason: "no shares" }),
        [one] => one.value(),
        many => {
            let values: Vec<FieldShare> = many.iter().map(|s| s.parts().0).collect();
            values.combine().map_err(|_| CryptoError::Threshold { reason: "shares do not combine" })?.0
        }
    };
    Ok(Zeroizing::new(out.to_bytes()))
}

/// The Lagrange weights at 0 of distinct participant ids: `λ_i = Π_{j≠i} x_j / (x_j − x_i)`.
fn lagrange_at_zero(ids: &[u8]) -> Result<Vec<Scalar>, CryptoError> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if ids.is_empty() || sorted.len() != ids.len() || sorted[0] == 0 {
        return Err(CryptoError::Threshold { reason: "dealers must be distinct participants" });
    }
    Ok(ids
        .iter()
        .map(|&i| {
            let xi = Scalar::from(u64::from(i));
            let (num, den) = ids.iter().filter(|&&j| j != i).fold((Scalar::ONE, Scalar::ONE), |(n, d), &j| {
                let xj = Scalar::from(u64::from(j));
                (n * xj, d * (xj - xi))
            });
            num * den.invert()
        })
        .collect())
}

/// New holder `id`'s share after a re-sharing: the Lagrange combination, over the dealers' old
/// ids, of the sub-shares `(dealer id, sub-share)` it received from the chosen `t_old` dealers.
pub fn combine_subshares(dealt: &[(u8, Share)], id: u8) -> Result<Share, CryptoError> {
    let ids: Vec<u8> = dealt.iter().map(|(dealer, _)| *dealer).collect();
    if id == 0 || dealt.iter().any(|(_, s)| s.id() != id) {
        return Err(CryptoError::Threshold { reason: "sub-shares for another holder" });
    }
    let weights = lagrange_at_zero(&ids)?;
    let (value, blind) = dealt
        .iter()
        .zip(&weights)
        .fold((Scalar::ZERO, Scalar::ZERO), |(v, b), ((_, s), w)| (v + w * s.value(), b + w * s.blind()));
    Ok(Share::from_parts(id, &value, &blind))
}

/// The verifier of the new sharing: the same Lagrange combination of the chosen dealings'
/// verifiers, which must all have one length (the new threshold).
pub fn combine_verifiers(dealt: &[(u8, &Verifier)]) -> Result<Verifier, CryptoError> {
    let ids: Vec<u8> = dealt.iter().map(|(dealer, _)| *dealer).collect();
    let weights = lagrange_at_zero(&ids)?;
    let len = dealt[0].1.threshold();
    if dealt.iter().any(|(_, v)| v.threshold() != len) {
        return Err(CryptoError::Threshold { reason: "dealings of different thresholds" });
    }
    Ok(Verifier((0..len).map(|k| dealt.iter().zip(&weights).map(|((_, v), w)| v.0[k] * w).sum()).collect()))
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

    fn pick(shares: &[Share], subset: &[usize]) -> Vec<Share> {
        subset.iter().map(|&i| shares[i].clone()).collect()
    }

    #[test]
    fn any_threshold_of_shares_recovers_the_secret_and_fewer_do_not() {
        let secret = random_secret();
        for (threshold, count) in [(1, 1), (1, 3), (2, 4), (3, 7), (5, 16)] {
            let (shares, verifier) = split(&secret, threshold, count).unwrap();
            assert_eq!((shares.len(), verifier.threshold()), (count, threshold));
            assert!(shares.iter().enumerate().all(|(i, s)| s.index() == i && verifier.verify(s)));
            for subset in subsets(count.min(7), threshold) {
                assert_eq!(*combine(&pick(&shares, &subset)).unwrap(), *secret, "{threshold}-of-{count} {subset:?}");
            }
            if threshold > 1 {
                for subset in subsets(count.min(7), threshold - 1) {
                    assert_ne!(
                        *combine(&pick(&shares, &subset)).unwrap(),
                        *secret,
                        "{threshold}-of-{count} {subset:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_share_verifies_only_against_its_own_sharing_and_position() {
        let secret = random_secret();
        let (shares, verifier) = split(&secret, 2, 4).unwrap();
        let (other, other_verifier) = split(&secret, 2, 4).unwrap();
        assert!(shares.iter().all(|s| verifier.verify(s) && !other_verifier.verify(s)));
        assert!(other.iter().all(|s| !verifier.verify(s)));
        // A share moved to another position, or with one byte of either scalar changed, fails.
        let mut moved = *shares[0].as_bytes();
        moved[0] = 2;
        assert!(!verifier.verify(&Share::from_slice(&moved).unwrap()));
        for at in [1, 1 + SCALAR_BYTES] {
            let mut bytes = *shares[1].as_bytes();
            bytes[at] ^= 1;
            if let Ok(tampered) = Share::from_slice(&bytes) {
                assert!(!verifier.verify(&tampered));
            }
        }
        // Two sharings of one secret share nothing, and no share is the secret.
        assert!(shares.iter().zip(&other).all(|(a, b)| a != b));
        assert!(shares.iter().all(|s| s.as_bytes()[1..1 + SCALAR_BYTES] != secret[..]));
        // The commitments hide the secret: its own commitment under G alone is not among them.
        let bare = (curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT * scalar(&secret[..]).unwrap()).compress();
        assert!(verifier.to_points().iter().all(|p| *p != bare.to_bytes()));
    }

    #[test]
    fn verifiers_round_trip_and_bad_points_are_refused() {
        let (_, verifier) = split(&random_secret(), 3, 5).unwrap();
        assert_eq!(Verifier::from_points(&verifier.to_points()).unwrap(), verifier);
        assert!(Verifier::from_points(&[]).is_err());
        // Not every 32-byte string is a Ristretto255 encoding (the high bit set never is).
        assert!(Verifier::from_points(&[[0xff; POINT_BYTES]]).is_err());
        assert!(verifier.evaluate(0).is_err());
    }

    #[test]
    fn bad_parameters_and_shares_are_refused() {
        let secret = random_secret();
        assert!(split(&secret, 0, 4).is_err());
        assert!(split(&secret, 5, 4).is_err());
        assert!(split(&secret, 2, 256).is_err());
        assert!(split(&[0xff; 32], 2, 4).is_err(), "a non-canonical scalar is no secret");
        assert!(Share::from_slice(&[0u8; SHARE_BYTES]).is_err());
        assert!(Share::from_slice(&[1u8; SHARE_BYTES - 1]).is_err());
        let mut high = [0u8; SHARE_BYTES];
        high[0] = 1;
        high[SHARE_BYTES - 1] = 0xff;
        assert!(Share::from_slice(&high).is_err(), "non-canonical scalars are refused");
        let (shares, _) = split(&secret, 2, 4).unwrap();
        // The same holder twice is not two shares.
        assert!(combine(&[shares[1].clone(), shares[1].clone()]).is_err());
        assert!(combine(&[]).is_err());
    }

    /// Re-shares a 2-of-4 sharing to a 2-of-5 set through every pair of dealers.
    #[test]
    fn resharing_keeps_the_secret_and_makes_the_old_shares_useless() {
        let secret = random_secret();
        let (old, old_verifier) = split(&secret, 2, 4).unwrap();
        let dealings: Vec<(Vec<Share>, Verifier)> = old.iter().map(|s| reshare(s, 2, 5).unwrap()).collect();
        for (share, (sub, dealing)) in old.iter().zip(&dealings) {
            // A dealing commits to the dealer's own share, as the old verifier says it is.
            assert_eq!(dealing.to_points()[0], old_verifier.evaluate(share.id()).unwrap());
            assert!(sub.iter().all(|s| dealing.verify(s)));
        }
        for q in subsets(4, 2) {
            let verifier =
                combine_verifiers(&q.iter().map(|&i| (old[i].id(), &dealings[i].1)).collect::<Vec<_>>()).unwrap();
            let new: Vec<Share> = (0..5)
                .map(|j| {
                    let dealt: Vec<(u8, Share)> = q.iter().map(|&i| (old[i].id(), dealings[i].0[j].clone())).collect();
                    combine_subshares(&dealt, u8::try_from(j + 1).unwrap()).unwrap()
                })
                .collect();
            assert!(new.iter().all(|s| verifier.verify(s)), "{q:?}");
            assert!(old.iter().all(|s| !verifier.verify(s)), "{q:?}");
            for pair in subsets(5, 2) {
                assert_eq!(*combine(&pick(&new, &pair)).unwrap(), *secret, "{q:?} {pair:?}");
            }
            // A holder that left (old share 3) and one new holder (f = 1) recover nothing.
            for (j, share) in new.iter().enumerate().filter(|(_, s)| s.id() != old[3].id()) {
                let mixed = [old[3].clone(), share.clone()];
                assert_ne!(*combine(&mixed).unwrap(), *secret, "{q:?} new {j}");
            }
        }
    }

    #[test]
    fn resharing_from_or_to_threshold_one_and_bad_dealer_sets() {
        let secret = random_secret();
        let (old, _) = split(&secret, 1, 3).unwrap();
        let (sub, dealing) = reshare(&old[0], 2, 4).unwrap();
        let new: Vec<Share> = sub
            .iter()
            .enumerate()
            .map(|(j, s)| combine_subshares(&[(1, s.clone())], u8::try_from(j + 1).unwrap()).unwrap())
            .collect();
        assert_eq!(*combine(&new[1..3]).unwrap(), *secret);
        assert!(combine_verifiers(&[(1, &dealing)]).unwrap().verify(&new[0]));
        // Sub-shares of another holder, a dealer twice, dealer id 0: refused.
        assert!(combine_subshares(&[(1, sub[0].clone())], 2).is_err());
        assert!(combine_subshares(&[(1, sub[0].clone()), (1, sub[0].clone())], 1).is_err());
        assert!(combine_subshares(&[(0, sub[0].clone())], 1).is_err());
        let (_, other) = reshare(&old[1], 3, 4).unwrap();
        assert!(combine_verifiers(&[(1, &dealing), (2, &other)]).is_err(), "thresholds differ");
    }

    /// The Lagrange weights here are the ones vsss-rs combines shares with.
    #[test]
    fn lagrange_weights_agree_with_vsss_combination() {
        let secret = random_secret();
        let (shares, _) = split(&secret, 3, 7).unwrap();
        let chosen = pick(&shares, &[1, 4, 6]);
        let ids: Vec<u8> = chosen.iter().map(Share::id).collect();
        let weights = lagrange_at_zero(&ids).unwrap();
        let by_weights: Scalar = chosen.iter().zip(&weights).map(|(s, w)| w * s.value()).sum();
        assert_eq!(by_weights.to_bytes(), *combine(&chosen).unwrap());
        assert_eq!(by_weights.to_bytes(), *secret);
    }

    #[test]
    fn the_blinding_generator_is_pinned() {
        // Pinned: `H` is part of the format (a changed label would orphan every verifier).
        assert_eq!(hex::encode(blinding_generator().compress().as_bytes()), GOLDEN_H);
        assert_ne!(blinding_generator(), curve25519_dalek::constants::RISTRETTO_BASEPOINT_POINT);
    }

    /// Computed independently: libsodium's `crypto_core_ristretto255_from_hash` of the SHA-512 of
    /// the label (Python's hashlib and ctypes).
    const GOLDEN_H: &str = "060a7f0d1ef392208557309fd77d6cab565bcdc76fbc4ecc3445060a280a305c";

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
