//! Ed25519 signatures under ZIP-215 rules, over namespaced messages.
//!
//! The implementation is commonware-cryptography's `ed25519` (a vendored
//! `ed25519-consensus`), the same code the consensus engine uses for votes,
//! so a transaction and a vote can never be judged by different rules.
//!
//! Invariants:
//! - Validation follows [ZIP-215]: non-canonical encodings of `A` and `R` are
//!   accepted, `s` must be canonical (`s < ℓ`), and the cofactored equation
//!   `[8][s]B = [8]R + [8][k]A` is used. Hence [`verify_batch`] returns `true`
//!   exactly when every item passes [`VerifyingKey::verify`]: validators can
//!   batch or not without splitting.
//! - Every message is signed under a namespace: the signed bytes are
//!   `varint(len(namespace)) ‖ namespace ‖ msg` (commonware's `union_unique`),
//!   so a signature made for one purpose never verifies for another.
//!
//! [ZIP-215]: https://zips.z.cash/zip-0215

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use commonware_codec::{Copying, ReadExt as _, Write as _};
use commonware_cryptography::{BatchEntry, BatchVerifier as _, Signer as _, Verifier as _, ed25519};
use commonware_parallel::Sequential;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of an Ed25519 secret seed.
pub const SIGNING_KEY_BYTES: usize = 32;
/// Length of an encoded Ed25519 public key.
pub const VERIFYING_KEY_BYTES: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;

/// An Ed25519 secret key. Zeroized on drop; its `Debug` never shows the secret.
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519::PrivateKey,
    verifying_key: VerifyingKey,
}

impl SigningKey {
    /// Generates a key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; SIGNING_KEY_BYTES]);
        crate::fill_random(seed.as_mut_slice());
        Self::from_bytes(&seed)
    }

    /// Rebuilds a key from its 32-byte seed (RFC 8032 secret key).
    pub fn from_bytes(seed: &[u8; SIGNING_KEY_BYTES]) -> Self {
        let inner = ed25519::PrivateKey::read(&mut Copying(seed.as_slice())).expect("any 32 bytes are an Ed25519 seed");
        let public = inner.public_key();
        let verifying_key = VerifyingKey(public.as_ref().try_into().expect("an Ed25519 public key is 32 bytes"));
        Self { inner, verifying_key }
    }

    /// The 32-byte seed, in a buffer that is wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SIGNING_KEY_BYTES]> {
        let mut seed = Zeroizing::new([0u8; SIGNING_KEY_BYTES]);
        self.inner.write(&mut seed.as_mut_slice());
        seed
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying_key
    }

    /// Signs `msg` itself (RFC 8032 Ed25519, no namespace), for formats whose verifiers are not
    /// ours, such as HTTP Message Signatures (RFC 9421). Everything medledger verifies itself is
    /// signed with [`Self::sign`].
    pub fn sign_raw(&self, msg: &[u8]) -> Signature {
        let key = ed25519_consensus::SigningKey::from(*self.to_bytes());
        Signature(key.sign(msg).to_bytes())
    }

    /// Signs `msg` under `namespace`.
    pub fn sign(&self, namespace: &[u8], msg: &[u8]) -> Signature {
        let signature = self.inner.sign(namespace, msg);
        Signature(signature.as_ref().try_into().expect("an Ed25519 signature is 64 bytes"))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("verifying_key", &self.verifying_key).finish_non_exhaustive()
    }
}

/// An encoded Ed25519 public key (32 bytes, as received; not necessarily a
/// valid point until checked by [`VerifyingKey::check`] or a verification).
///
/// Equality, ordering and hashing are over the encoding, so two non-canonical
/// encodings of one point are different keys.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct VerifyingKey(pub [u8; VERIFYING_KEY_BYTES]);

impl VerifyingKey {
    /// The raw encoding.
    pub fn as_bytes(&self) -> &[u8; VERIFYING_KEY_BYTES] {
        &self.0
    }

    /// Checks that the encoding is a point on the curve (ZIP-215 accepts
    /// non-canonical encodings and small-order points).
    pub fn check(&self) -> Result<(), CryptoError> {
        self.decode().map(|_| ())
    }

    /// Verifies a [`SigningKey::sign_raw`] signature over `msg` (ZIP-215 rules, like [`Self::verify`]).
    pub fn verify_raw(&self, msg: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        let key = ed25519_consensus::VerificationKey::try_from(self.0)
            .map_err(|_| CryptoError::InvalidPublicKey { what: "ed25519" })?;
        key.verify(&ed25519_consensus::Signature::from(signature.0), msg).map_err(|_| CryptoError::InvalidSignature)
    }

    /// Verifies `signature` over `msg` under `namespace`.
    pub fn verify(&self, namespace: &[u8], msg: &[u8], signature: &Signature) -> Result<(), CryptoError> {
        let public = self.decode()?;
        if public.verify(namespace, msg, &signature.decode()) { Ok(()) } else { Err(CryptoError::InvalidSignature) }
    }

    fn decode(&self) -> Result<ed25519::PublicKey, CryptoError> {
        ed25519::PublicKey::read(&mut Copying(self.0.as_slice()))
            .map_err(|_| CryptoError::InvalidPublicKey { what: "ed25519" })
    }
}

/// An Ed25519 signature: `R ‖ s`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; SIGNATURE_BYTES]);

impl Signature {
    /// The raw encoding.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_BYTES] {
        &self.0
    }

    fn decode(&self) -> ed25519::Signature {
        ed25519::Signature::read(&mut Copying(self.0.as_slice())).expect("any 64 bytes decode as a signature")
    }
}

impl TryFrom<&[u8]> for Signature {
    type Error = CryptoError;

    fn try_from(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes.try_into().map(Signature).map_err(|_| CryptoError::InvalidLength {
            what: "ed25519 signature",
            expected: SIGNATURE_BYTES,
            actual: bytes.len(),
        })
    }
}

impl TryFrom<&[u8]> for VerifyingKey {
    type Error = CryptoError;

    fn try_from(bytes: &[u8]) -> Result<Self, CryptoError> {
        bytes.try_into().map(VerifyingKey).map_err(|_| CryptoError::InvalidLength {
            what: "ed25519 public key",
            expected: VERIFYING_KEY_BYTES,
            actual: bytes.len(),
        })
    }
}

/// Verifies many signatures under one namespace at once.
///
/// Returns `true` iff every item would pass [`VerifyingKey::verify`]
/// (ZIP-215 makes the randomized batch equation agree with the single one);
/// an empty batch is `true`. It does not say which item failed: on `false`,
/// verify the items singly to find out.
pub fn verify_batch(namespace: &[u8], items: &[(VerifyingKey, &[u8], Signature)]) -> bool {
    if items.is_empty() {
        return true;
    }
    let mut prepared = Vec::with_capacity(items.len());
    for (key, msg, signature) in items {
        let Ok(public) = key.decode() else {
            return false;
        };
        prepared.push((public, *msg, signature.decode()));
    }
    ed25519::PublicKey::verify_batch(
        &mut commonware_utils::sys_rng(),
        &prepared,
        |_, (public_key, message, signature)| BatchEntry { namespace, message, public_key, signature },
        &Sequential,
    )
}

/// Hex encoding and decoding of fixed-size byte arrays.
pub(crate) mod hex_array {
    use crate::CryptoError;

    pub(crate) fn decode<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], CryptoError> {
        if text.len() != 2 * N {
            return Err(CryptoError::InvalidLength { what, expected: 2 * N, actual: text.len() });
        }
        let mut out = [0u8; N];
        hex::decode_to_slice(text, &mut out).map_err(|_| CryptoError::InvalidHex { what })?;
        Ok(out)
    }
}

macro_rules! hex_codecs {
    ($ty:ident, $len:expr, $what:literal) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), hex::encode(self.0))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl FromStr for $ty {
            type Err = CryptoError;

            fn from_str(s: &str) -> Result<Self, CryptoError> {
                hex_array::decode::<$len>($what, s).map($ty)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&hex::encode(self.0))
            }
        }

        impl utoipa::PartialSchema for $ty {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                medledger_types::schema::hex_string($len, $what)
            }
        }
        impl utoipa::ToSchema for $ty {}

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_codecs!(VerifyingKey, VERIFYING_KEY_BYTES, "ed25519 public key");
hex_codecs!(Signature, SIGNATURE_BYTES, "ed25519 signature");

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &[u8] = b"medledger/test";

    /// The order of the prime subgroup, ℓ, little-endian.
    const ELL: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
    ];

    fn h32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// Encodings of the eight small-order points, plus non-canonical encodings
    /// of some of them (y ≥ p, or x = 0 with the sign bit set). ZIP-215 must
    /// accept all of them as points.
    pub(crate) fn small_order_encodings() -> Vec<[u8; 32]> {
        [
            // identity (0, 1), canonical
            "0100000000000000000000000000000000000000000000000000000000000000",
            // order 2: (0, -1)
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            // order 4: (±sqrt(-1), 0)
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000080",
            // order 8
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
            // non-canonical: identity with the sign bit set ("-0")
            "0100000000000000000000000000000000000000000000000000000000000080",
            // non-canonical: y = p + 1 (identity)
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            // non-canonical: y = p + 1 with the sign bit set
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            // non-canonical: y = p (order 4), both signs
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            // order 2 with the sign bit set (x = 0, so non-canonical)
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ]
        .iter()
        .map(|s| h32(s))
        .collect()
    }

    fn signature(r: [u8; 32], s: [u8; 32]) -> Signature {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&r);
        bytes[32..].copy_from_slice(&s);
        Signature(bytes)
    }

    #[test]
    fn sign_verify_round_trip() {
        let key = SigningKey::generate();
        let vk = key.verifying_key();
        let sig = key.sign(NS, b"hello");
        assert!(vk.verify(NS, b"hello", &sig).is_ok());
        assert!(matches!(vk.verify(NS, b"hellp", &sig), Err(CryptoError::InvalidSignature)));
        assert!(vk.verify(b"medledger/other", b"hello", &sig).is_err());
        let other = SigningKey::generate().verifying_key();
        assert!(other.verify(NS, b"hello", &sig).is_err());
    }

    #[test]
    fn namespace_framing_is_unambiguous() {
        // ("ab", "c") and ("a", "bc") must not share a signature.
        let key = SigningKey::generate();
        let sig = key.sign(b"ab", b"c");
        assert!(key.verifying_key().verify(b"ab", b"c", &sig).is_ok());
        assert!(key.verifying_key().verify(b"a", b"bc", &sig).is_err());
    }

    #[test]
    fn rfc8032_key_derivation_and_deterministic_signing() {
        // RFC 8032 §7.1 TEST 1 key; the public key must match the RFC.
        let seed = h32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let key = SigningKey::from_bytes(&seed);
        assert_eq!(
            hex::encode(key.verifying_key().0),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(*key.to_bytes(), seed);
        // Signing is deterministic.
        assert_eq!(key.sign(NS, b"m"), key.sign(NS, b"m"));
    }

    #[test]
    fn seed_round_trip_and_debug_hides_secret() {
        let key = SigningKey::generate();
        let seed = key.to_bytes();
        let again = SigningKey::from_bytes(&seed);
        assert_eq!(again.verifying_key(), key.verifying_key());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(*seed)));
        assert!(shown.contains(&hex::encode(key.verifying_key().0)));
    }

    #[test]
    fn invalid_point_is_rejected_as_public_key() {
        // y = 2 is not on the curve.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let vk = VerifyingKey(bytes);
        assert!(matches!(vk.check(), Err(CryptoError::InvalidPublicKey { .. })));
        let sig = SigningKey::generate().sign(NS, b"x");
        assert!(vk.verify(NS, b"x", &sig).is_err());
        assert!(!verify_batch(NS, &[(vk, b"x".as_slice(), sig)]));
    }

    #[test]
    fn zip215_accepts_small_order_and_non_canonical_points() {
        // With A and R of small order and s = 0, the cofactored equation holds
        // for every message: ZIP-215 accepts, and batch must agree.
        let encodings = small_order_encodings();
        for a in &encodings {
            let vk = VerifyingKey(*a);
            assert!(vk.check().is_ok(), "small-order point {} must decode", hex::encode(a));
            for r in &encodings {
                let sig = signature(*r, [0u8; 32]);
                for msg in [b"".as_slice(), b"any message"] {
                    assert!(vk.verify(NS, msg, &sig).is_ok(), "A={} R={}", hex::encode(a), hex::encode(r));
                    assert!(verify_batch(NS, &[(vk, msg, sig)]));
                }
            }
        }
    }

    #[test]
    fn zip215_rejects_non_canonical_s() {
        // Same construction, but s = ℓ (≡ 0 mod ℓ, not canonical): rejected
        // by single and batch verification alike.
        let encodings = small_order_encodings();
        let honest = SigningKey::generate();
        let honest_sig = honest.sign(NS, b"m");
        for a in &encodings {
            let vk = VerifyingKey(*a);
            let sig = signature(encodings[0], ELL);
            assert!(vk.verify(NS, b"m", &sig).is_err());
            assert!(!verify_batch(NS, &[(vk, b"m".as_slice(), sig)]));
            assert!(!verify_batch(
                NS,
                &[(honest.verifying_key(), b"m".as_slice(), honest_sig), (vk, b"m".as_slice(), sig)]
            ));
        }
        // s = 1 with small-order A and R: [8]B ≠ 0, rejected.
        let mut one = [0u8; 32];
        one[0] = 1;
        let sig = signature(encodings[0], one);
        assert!(VerifyingKey(encodings[0]).verify(NS, b"m", &sig).is_err());
        assert!(!verify_batch(NS, &[(VerifyingKey(encodings[0]), b"m".as_slice(), sig)]));
    }

    #[test]
    fn batch_agrees_on_a_mix_of_honest_and_small_order_items() {
        let encodings = small_order_encodings();
        let keys: Vec<SigningKey> = (0..4).map(|_| SigningKey::generate()).collect();
        let msgs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 10]).collect();
        let mut items: Vec<(VerifyingKey, &[u8], Signature)> =
            keys.iter().zip(&msgs).map(|(k, m)| (k.verifying_key(), m.as_slice(), k.sign(NS, m))).collect();
        for a in &encodings {
            items.push((VerifyingKey(*a), b"zz".as_slice(), signature(*a, [0u8; 32])));
        }
        let singles = items.iter().all(|(k, m, s)| k.verify(NS, m, s).is_ok());
        assert!(singles);
        assert!(verify_batch(NS, &items));
    }

    #[test]
    fn batch_agrees_with_single_on_random_corruptions() {
        let keys: Vec<SigningKey> = (0..8).map(|_| SigningKey::generate()).collect();
        let msgs: Vec<Vec<u8>> = (0..16u8).map(|i| vec![i.wrapping_mul(37); i as usize]).collect();
        let base: Vec<(VerifyingKey, Vec<u8>, Signature)> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let k = &keys[i % keys.len()];
                (k.verifying_key(), m.clone(), k.sign(NS, m))
            })
            .collect();
        let check = |v: &[(VerifyingKey, Vec<u8>, Signature)]| {
            let items: Vec<(VerifyingKey, &[u8], Signature)> =
                v.iter().map(|(k, m, s)| (*k, m.as_slice(), *s)).collect();
            let singles = items.iter().all(|(k, m, s)| k.verify(NS, m, s).is_ok());
            let batch = verify_batch(NS, &items);
            assert_eq!(singles, batch);
            singles
        };
        assert!(check(&base));
        let mut rejected = 0;
        for round in 0..200u32 {
            let mut v = base.clone();
            let rand: [u8; 8] = crate::random_bytes();
            let idx = rand[0] as usize % v.len();
            let byte = rand[1] as usize;
            let bit = 1u8 << (rand[2] % 8);
            match round % 3 {
                0 => v[idx].2.0[byte % 64] ^= bit,
                1 => v[idx].0.0[byte % 32] ^= bit,
                _ => {
                    if v[idx].1.is_empty() {
                        v[idx].1.push(bit);
                    } else {
                        let len = v[idx].1.len();
                        v[idx].1[byte % len] ^= bit;
                    }
                }
            }
            if !check(&v) {
                rejected += 1;
            }
        }
        // A one-bit change in a signature, key or message must never verify
        // (a flipped sign bit of a key still decodes, but to another key).
        assert_eq!(rejected, 200);
    }

    #[test]
    fn empty_batch_is_true() {
        assert!(verify_batch(NS, &[]));
    }

    #[test]
    fn codecs_round_trip() {
        let key = SigningKey::generate();
        let vk = key.verifying_key();
        let sig = key.sign(NS, b"m");
        assert_eq!(borsh::to_vec(&vk).unwrap(), vk.0.to_vec());
        assert_eq!(borsh::to_vec(&sig).unwrap(), sig.0.to_vec());
        assert_eq!(borsh::from_slice::<VerifyingKey>(&vk.0).unwrap(), vk);
        assert!(borsh::from_slice::<Signature>(&sig.0[..63]).is_err());
        let json = serde_json::to_string(&vk).unwrap();
        assert_eq!(json, format!("\"{}\"", hex::encode(vk.0)));
        assert_eq!(serde_json::from_str::<VerifyingKey>(&json).unwrap(), vk);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        assert!(serde_json::from_str::<Signature>("\"abcd\"").is_err());
        assert!(serde_json::from_str::<VerifyingKey>(&format!("\"{}\"", "zz".repeat(32))).is_err());
        assert!(matches!(
            Signature::try_from(&[0u8; 63][..]),
            Err(CryptoError::InvalidLength { expected: 64, actual: 63, .. })
        ));
    }
}
