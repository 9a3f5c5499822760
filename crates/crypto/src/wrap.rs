//! Key wrapping with HPKE (RFC 9180) in base mode.
//!
//! A short secret (a record's data key, or a chart or team private key) is
//! sealed for one recipient's [`EncryptionKey`] into an [`Envelope`].
//!
//! Binding: the HPKE `info` is
//! `"medledger/wrap/v1" ‖ suite id (1 B) ‖ chain_id (32 B) ‖ subject (32 B) ‖ version (8 B, big-endian)`
//! and the AEAD associated data is the recipient id (32 B), so an envelope
//! opens only on the chain, for the subject, version and recipient it was
//! made for. Moving an envelope anywhere else makes [`open`] fail.
//!
//! Suites (see [`KemSuite`]): X-Wing (default, post-quantum hybrid) and
//! DHKEM(X25519); both with HKDF-SHA256 and AES-256-GCM. An envelope names its
//! suite and opens only with a key of that suite.
//!
//! Limits: wrapped secrets are at most [`MAX_WRAPPED_SECRET_BYTES`]; every
//! length in a decoded key or envelope is checked against its suite before
//! anything is allocated or parsed.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use hpke::aead::{AeadTag, AesGcm256};
use hpke::inout::InOutBuf;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::CryptoError;
use crate::suite::KemSuite;

/// The largest secret that can be wrapped: a data key, a chart or team key, or a validator's two
/// threshold shares (2 × 65 bytes), with room to spare.
pub const MAX_WRAPPED_SECRET_BYTES: usize = 160;
/// Length of the AES-256-GCM tag at the end of an envelope's ciphertext.
pub const TAG_BYTES: usize = 16;
/// Domain-separation label at the start of the HPKE `info`.
pub const INFO_LABEL: &[u8] = b"medledger/wrap/v1";
/// Length of the HPKE `info` built by [`WrapContext::info`].
pub const INFO_BYTES: usize = INFO_LABEL.len() + 1 + 32 + 32 + 8;

type Aead = AesGcm256;
type Kdf = HkdfSha256;

impl KemSuite {
    /// Length of a public (encryption) key of this suite.
    pub const fn encryption_key_bytes(self) -> usize {
        match self {
            KemSuite::XWing => 1216,
            KemSuite::X25519 => 32,
        }
    }

    /// Length of a secret (decryption) key of this suite.
    pub const fn decryption_key_bytes(self) -> usize {
        match self {
            KemSuite::XWing => 32,
            KemSuite::X25519 => 32,
        }
    }

    /// Length of the encapsulated key in an envelope of this suite.
    pub const fn encapsulated_key_bytes(self) -> usize {
        match self {
            KemSuite::XWing => 1120,
            KemSuite::X25519 => 32,
        }
    }
}

/// A recipient's public key for wrapping, tagged with its suite.
///
/// Decoding (borsh or serde) checks the length for the suite; [`check`]
/// (and [`seal`]) also check that the bytes are a valid key.
///
/// [`check`]: EncryptionKey::check
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EncryptionKey {
    /// The suite this key belongs to.
    pub suite: KemSuite,
    /// The HPKE-serialized public key.
    pub bytes: Vec<u8>,
}

impl EncryptionKey {
    /// Builds a key, checking its length and validity for `suite`.
    pub fn new(suite: KemSuite, bytes: Vec<u8>) -> Result<Self, CryptoError> {
        let key = Self { suite, bytes };
        key.check()?;
        Ok(key)
    }

    /// Checks that the bytes are a valid public key of the suite.
    pub fn check(&self) -> Result<(), CryptoError> {
        check_len("encryption key", self.suite.encryption_key_bytes(), self.bytes.len())?;
        match self.suite {
            KemSuite::XWing => parse_public::<XWing>(self.suite, &self.bytes).map(|_| ()),
            KemSuite::X25519 => parse_public::<X25519HkdfSha256>(self.suite, &self.bytes).map(|_| ()),
        }
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The full X-Wing key is 1216 bytes; a digest prefix identifies it.
        let digest = crate::sha256(&self.bytes);
        write!(f, "EncryptionKey({}, {} B, sha256 {}…)", self.suite, self.bytes.len(), hex::encode(&digest[..8]))
    }
}

enum SecretKey {
    // Boxed: the expanded ML-KEM key is ~1.7 KB, the X25519 one 32 B.
    XWing(Box<<XWing as Kem>::PrivateKey>),
    X25519(<X25519HkdfSha256 as Kem>::PrivateKey),
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        match self {
            SecretKey::XWing(key) => SecretKey::XWing(key.clone()),
            SecretKey::X25519(key) => SecretKey::X25519(key.clone()),
        }
    }
}

/// A recipient's secret key for unwrapping. The hpke key types wipe
/// themselves when dropped; `Debug` never shows the secret.
#[derive(Clone)]
pub struct DecryptionKey {
    secret: SecretKey,
    public: EncryptionKey,
}

impl DecryptionKey {
    /// The suite of this key.
    pub fn suite(&self) -> KemSuite {
        self.public.suite
    }

    /// The secret key bytes (32 B for both suites), wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        match &self.secret {
            SecretKey::XWing(key) => secret_bytes(key.as_ref()),
            SecretKey::X25519(key) => secret_bytes(key),
        }
    }

    /// Rebuilds a key from [`DecryptionKey::to_bytes`] output.
    pub fn from_bytes(suite: KemSuite, bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("decryption key", suite.decryption_key_bytes(), bytes.len())?;
        match suite {
            KemSuite::XWing => {
                let secret = <XWing as Kem>::PrivateKey::from_bytes(bytes).map_err(|_| CryptoError::InvalidLength {
                    what: "decryption key",
                    expected: suite.decryption_key_bytes(),
                    actual: bytes.len(),
                })?;
                let public = public_of::<XWing>(suite, &secret);
                Ok(Self { secret: SecretKey::XWing(Box::new(secret)), public })
            }
            KemSuite::X25519 => {
                let secret = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(bytes).map_err(|_| {
                    CryptoError::InvalidLength {
                        what: "decryption key",
                        expected: suite.decryption_key_bytes(),
                        actual: bytes.len(),
                    }
                })?;
                let public = public_of::<X25519HkdfSha256>(suite, &secret);
                Ok(Self { secret: SecretKey::X25519(secret), public })
            }
        }
    }

    /// The matching public key.
    pub fn encryption_key(&self) -> &EncryptionKey {
        &self.public
    }
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKey").field("public", &self.public).finish_non_exhaustive()
    }
}

/// Generates a key pair of `suite` from the operating system's randomness.
pub fn generate(suite: KemSuite) -> DecryptionKey {
    match suite {
        KemSuite::XWing => {
            let (secret, public) = XWing::gen_keypair();
            DecryptionKey { secret: SecretKey::XWing(Box::new(secret)), public: public_key(suite, &public) }
        }
        KemSuite::X25519 => {
            let (secret, public) = X25519HkdfSha256::gen_keypair();
            DecryptionKey { secret: SecretKey::X25519(secret), public: public_key(suite, &public) }
        }
    }
}

/// What an envelope is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct WrapContext {
    /// The chain the envelope belongs to.
    pub chain_id: [u8; 32],
    /// The record id, or the chart or team key id, whose key is wrapped.
    pub subject: [u8; 32],
    /// The version (record version or key epoch) of the subject.
    pub version: u64,
    /// The id of the key holder the envelope is for.
    pub recipient: [u8; 32],
}

impl WrapContext {
    /// The HPKE `info` for `suite`: label ‖ suite ‖ chain ‖ subject ‖ version (BE).
    pub fn info(&self, suite: KemSuite) -> [u8; INFO_BYTES] {
        let mut info = [0u8; INFO_BYTES];
        let mut at = 0;
        for part in [INFO_LABEL, &[suite.id()], &self.chain_id, &self.subject, &self.version.to_be_bytes()] {
            info[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        assert_eq!(at, INFO_BYTES, "info parts fill the info exactly");
        info
    }

    /// The AEAD associated data: the recipient id.
    pub fn aad(&self) -> &[u8; 32] {
        &self.recipient
    }
}

/// A wrapped secret: the HPKE encapsulated key and the AEAD ciphertext
/// (secret ‖ 16-byte tag).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Envelope {
    /// The suite the envelope was sealed with.
    pub suite: KemSuite,
    /// The HPKE encapsulated key (`enc`).
    pub encapsulated_key: Vec<u8>,
    /// The sealed secret followed by the AEAD tag.
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// Checks the lengths against the suite and limits.
    pub fn check(&self) -> Result<(), CryptoError> {
        check_len("encapsulated key", self.suite.encapsulated_key_bytes(), self.encapsulated_key.len())?;
        check_ciphertext_len(self.ciphertext.len())
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("suite", &self.suite)
            .field("encapsulated_key_len", &self.encapsulated_key.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// Seals `secret` for `recipient`, bound to `ctx`.
pub fn seal(recipient: &EncryptionKey, secret: &[u8], ctx: &WrapContext) -> Result<Envelope, CryptoError> {
    if secret.len() > MAX_WRAPPED_SECRET_BYTES {
        return Err(CryptoError::TooLong {
            what: "wrapped secret",
            max: MAX_WRAPPED_SECRET_BYTES as u64,
            actual: secret.len() as u64,
        });
    }
    check_len("encryption key", recipient.suite.encryption_key_bytes(), recipient.bytes.len())?;
    let info = ctx.info(recipient.suite);
    let (encapsulated_key, ciphertext) = match recipient.suite {
        KemSuite::XWing => seal_with::<XWing>(recipient, &info, ctx.aad(), secret)?,
        KemSuite::X25519 => seal_with::<X25519HkdfSha256>(recipient, &info, ctx.aad(), secret)?,
    };
    let envelope = Envelope { suite: recipient.suite, encapsulated_key, ciphertext };
    envelope.check().expect("a sealed envelope has the lengths of its suite");
    Ok(envelope)
}

/// Opens `envelope` with `key`, checking it was made for `ctx`.
///
/// Fails with [`CryptoError::SuiteMismatch`] if the envelope names another
/// suite, with a length error if the envelope is malformed, and with
/// [`CryptoError::EnvelopeOpenFailed`] for a wrong key, wrong context or
/// altered envelope (deliberately indistinguishable).
pub fn open(key: &DecryptionKey, envelope: &Envelope, ctx: &WrapContext) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if envelope.suite != key.suite() {
        return Err(CryptoError::SuiteMismatch { key: key.suite(), envelope: envelope.suite });
    }
    envelope.check()?;
    let info = ctx.info(envelope.suite);
    match &key.secret {
        SecretKey::XWing(secret) => open_with::<XWing>(secret.as_ref(), envelope, &info, ctx.aad()),
        SecretKey::X25519(secret) => open_with::<X25519HkdfSha256>(secret, envelope, &info, ctx.aad()),
    }
}

fn seal_with<K: Kem>(
    recipient: &EncryptionKey,
    info: &[u8],
    aad: &[u8],
    secret: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
    let public = parse_public::<K>(recipient.suite, &recipient.bytes)?;
    let (encapsulated, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, K>(&OpModeS::Base, &public, info, secret, aad)
        .map_err(|_| CryptoError::SealFailed)?;
    Ok((encapsulated.to_bytes().to_vec(), ciphertext))
}

fn open_with<K: Kem>(
    secret: &K::PrivateKey,
    envelope: &Envelope,
    info: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let encapsulated =
        K::EncappedKey::from_bytes(&envelope.encapsulated_key).map_err(|_| CryptoError::EnvelopeOpenFailed)?;
    let split = envelope.ciphertext.len().checked_sub(TAG_BYTES).ok_or(CryptoError::EnvelopeOpenFailed)?;
    let (sealed, tag) = envelope.ciphertext.split_at(split);
    let tag = AeadTag::<Aead>::from_bytes(tag).map_err(|_| CryptoError::EnvelopeOpenFailed)?;
    let mut plaintext = Zeroizing::new(sealed.to_vec());
    hpke::single_shot_open_inout_detached::<Aead, Kdf, K>(
        &OpModeR::Base,
        secret,
        &encapsulated,
        info,
        InOutBuf::from(plaintext.as_mut_slice()),
        aad,
        &tag,
    )
    .map_err(|_| CryptoError::EnvelopeOpenFailed)?;
    Ok(plaintext)
}

fn parse_public<K: Kem>(suite: KemSuite, bytes: &[u8]) -> Result<K::PublicKey, CryptoError> {
    K::PublicKey::from_bytes(bytes).map_err(|_| CryptoError::InvalidPublicKey { what: suite.name() })
}

fn public_key<P: Serializable>(suite: KemSuite, public: &P) -> EncryptionKey {
    let key = EncryptionKey { suite, bytes: public.to_bytes().to_vec() };
    assert_eq!(key.bytes.len(), suite.encryption_key_bytes(), "hpke serializes public keys at the suite's length");
    key
}

fn public_of<K: Kem>(suite: KemSuite, secret: &K::PrivateKey) -> EncryptionKey {
    public_key(suite, &K::sk_to_pk(secret))
}

fn secret_bytes<S: Serializable>(secret: &S) -> Zeroizing<Vec<u8>> {
    let mut array = secret.to_bytes();
    let bytes = Zeroizing::new(array.to_vec());
    array.as_mut_slice().zeroize();
    bytes
}

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<(), CryptoError> {
    if expected == actual { Ok(()) } else { Err(CryptoError::InvalidLength { what, expected, actual }) }
}

fn check_ciphertext_len(len: usize) -> Result<(), CryptoError> {
    if len < TAG_BYTES {
        return Err(CryptoError::InvalidLength { what: "envelope ciphertext", expected: TAG_BYTES, actual: len });
    }
    let max = MAX_WRAPPED_SECRET_BYTES + TAG_BYTES;
    if len > max {
        return Err(CryptoError::TooLong { what: "envelope ciphertext", max: max as u64, actual: len as u64 });
    }
    Ok(())
}

// ---- Binary encoding (borsh) -------------------------------------------
//
// Same layout as derived borsh (suite byte, then u32-LE-length-prefixed
// byte strings), but lengths are checked against the suite *before* the
// bytes are read, so a crafted length cannot make the decoder allocate.

fn invalid_data(error: CryptoError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, error)
}

fn write_bytes<W: std::io::Write>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| {
        invalid_data(CryptoError::TooLong { what: "byte string", max: u32::MAX as u64, actual: bytes.len() as u64 })
    })?;
    writer.write_all(&len.to_le_bytes())?;
    writer.write_all(bytes)
}

/// Reads a u32-LE length prefix, lets `check` vet it, then reads that many bytes.
fn read_bytes<R: std::io::Read>(
    reader: &mut R,
    check: impl FnOnce(usize) -> Result<(), CryptoError>,
) -> std::io::Result<Vec<u8>> {
    let len = u32::deserialize_reader(reader)? as usize;
    check(len).map_err(invalid_data)?;
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl BorshSerialize for EncryptionKey {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        BorshSerialize::serialize(&self.suite, writer)?;
        write_bytes(writer, &self.bytes)
    }
}

impl BorshDeserialize for EncryptionKey {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let suite = KemSuite::deserialize_reader(reader)?;
        let bytes = read_bytes(reader, |len| check_len("encryption key", suite.encryption_key_bytes(), len))?;
        Ok(Self { suite, bytes })
    }
}

impl BorshSerialize for Envelope {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        BorshSerialize::serialize(&self.suite, writer)?;
        write_bytes(writer, &self.encapsulated_key)?;
        write_bytes(writer, &self.ciphertext)
    }
}

impl BorshDeserialize for Envelope {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let suite = KemSuite::deserialize_reader(reader)?;
        let encapsulated_key =
            read_bytes(reader, |len| check_len("encapsulated key", suite.encapsulated_key_bytes(), len))?;
        let ciphertext = read_bytes(reader, check_ciphertext_len)?;
        Ok(Self { suite, encapsulated_key, ciphertext })
    }
}

// ---- Text encoding (serde): byte strings as lowercase hex ----------------

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = EncryptionKey)]
struct EncryptionKeyText {
    #[schema(inline)]
    suite: KemSuite,
    /// The public key, lowercase hex.
    #[schema(pattern = "^([0-9a-f]{2})+$")]
    bytes: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Envelope)]
struct EnvelopeText {
    #[schema(inline)]
    suite: KemSuite,
    /// Lowercase hex.
    #[schema(pattern = "^([0-9a-f]{2})+$")]
    encapsulated_key: String,
    /// Lowercase hex.
    #[schema(pattern = "^([0-9a-f]{2})+$")]
    ciphertext: String,
}

impl utoipa::PartialSchema for EncryptionKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <EncryptionKeyText as utoipa::PartialSchema>::schema()
    }
}
impl utoipa::ToSchema for EncryptionKey {}

impl utoipa::PartialSchema for Envelope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <EnvelopeText as utoipa::PartialSchema>::schema()
    }
}
impl utoipa::ToSchema for Envelope {}

/// Decodes hex after checking the text length against `check`, so oversized
/// input is refused before decoding.
fn decode_hex(
    what: &'static str,
    text: &str,
    check: impl FnOnce(usize) -> Result<(), CryptoError>,
) -> Result<Vec<u8>, CryptoError> {
    if !text.len().is_multiple_of(2) {
        return Err(CryptoError::InvalidHex { what });
    }
    check(text.len() / 2)?;
    hex::decode(text).map_err(|_| CryptoError::InvalidHex { what })
}

impl Serialize for EncryptionKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EncryptionKeyText { suite: self.suite, bytes: hex::encode(&self.bytes) }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EncryptionKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = EncryptionKeyText::deserialize(deserializer)?;
        let suite = text.suite;
        let bytes = decode_hex("encryption key", &text.bytes, |len| {
            check_len("encryption key", suite.encryption_key_bytes(), len)
        })
        .map_err(serde::de::Error::custom)?;
        Ok(Self { suite, bytes })
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EnvelopeText {
            suite: self.suite,
            encapsulated_key: hex::encode(&self.encapsulated_key),
            ciphertext: hex::encode(&self.ciphertext),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = EnvelopeText::deserialize(deserializer)?;
        let suite = text.suite;
        let encapsulated_key = decode_hex("encapsulated key", &text.encapsulated_key, |len| {
            check_len("encapsulated key", suite.encapsulated_key_bytes(), len)
        })
        .map_err(serde::de::Error::custom)?;
        let ciphertext = decode_hex("envelope ciphertext", &text.ciphertext, check_ciphertext_len)
            .map_err(serde::de::Error::custom)?;
        Ok(Self { suite, encapsulated_key, ciphertext })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> WrapContext {
        WrapContext { chain_id: [1; 32], subject: [2; 32], version: 3, recipient: [4; 32] }
    }

    #[test]
    fn round_trip_both_suites() {
        for suite in KemSuite::ALL {
            let key = generate(suite);
            assert_eq!(key.suite(), suite);
            assert_eq!(key.encryption_key().bytes.len(), suite.encryption_key_bytes());
            key.encryption_key().check().unwrap();
            for len in [0usize, 1, 32, MAX_WRAPPED_SECRET_BYTES] {
                let secret: Vec<u8> = (0..len as u8).collect();
                let envelope = seal(key.encryption_key(), &secret, &ctx()).unwrap();
                assert_eq!(envelope.suite, suite);
                assert_eq!(envelope.encapsulated_key.len(), suite.encapsulated_key_bytes());
                assert_eq!(envelope.ciphertext.len(), len + TAG_BYTES);
                // A short ciphertext may equal its plaintext by chance (1 in
                // 256 for one byte); from 16 bytes on that chance is 2^-128.
                if len >= 16 {
                    assert_ne!(&envelope.ciphertext[..len], secret.as_slice());
                }
                let opened = open(&key, &envelope, &ctx()).unwrap();
                assert_eq!(opened.as_slice(), secret.as_slice());
            }
        }
    }

    #[test]
    fn sealing_is_randomized() {
        for suite in KemSuite::ALL {
            let key = generate(suite);
            let a = seal(key.encryption_key(), b"k", &ctx()).unwrap();
            let b = seal(key.encryption_key(), b"k", &ctx()).unwrap();
            assert_ne!(a.encapsulated_key, b.encapsulated_key);
            assert_ne!(a.ciphertext, b.ciphertext);
        }
    }

    #[test]
    fn secret_too_long_is_refused() {
        let key = generate(KemSuite::X25519);
        let err = seal(key.encryption_key(), &[0u8; MAX_WRAPPED_SECRET_BYTES + 1], &ctx()).unwrap_err();
        assert!(matches!(err, CryptoError::TooLong { max: 160, actual: 161, .. }));
    }

    #[test]
    fn wrong_recipient_key_fails() {
        for suite in KemSuite::ALL {
            let key = generate(suite);
            let other = generate(suite);
            let envelope = seal(key.encryption_key(), b"secret", &ctx()).unwrap();
            assert!(matches!(open(&other, &envelope, &ctx()), Err(CryptoError::EnvelopeOpenFailed)));
        }
    }

    #[test]
    fn every_context_field_is_bound() {
        let changes: [fn(&mut WrapContext); 4] =
            [|c| c.chain_id[31] ^= 1, |c| c.subject[0] ^= 0x80, |c| c.version += 1, |c| c.recipient[7] ^= 1];
        for suite in KemSuite::ALL {
            let key = generate(suite);
            let envelope = seal(key.encryption_key(), b"secret", &ctx()).unwrap();
            for (i, change) in changes.iter().enumerate() {
                let mut wrong = ctx();
                change(&mut wrong);
                assert!(
                    matches!(open(&key, &envelope, &wrong), Err(CryptoError::EnvelopeOpenFailed)),
                    "suite {suite}, context change {i}"
                );
            }
            assert!(open(&key, &envelope, &ctx()).is_ok());
        }
    }

    #[test]
    fn suite_mismatch_is_reported() {
        let xwing = generate(KemSuite::XWing);
        let x25519 = generate(KemSuite::X25519);
        let envelope = seal(x25519.encryption_key(), b"secret", &ctx()).unwrap();
        assert!(matches!(
            open(&xwing, &envelope, &ctx()),
            Err(CryptoError::SuiteMismatch { key: KemSuite::XWing, envelope: KemSuite::X25519 })
        ));
        // Relabelling the envelope's suite does not help either.
        let mut relabelled = envelope.clone();
        relabelled.suite = KemSuite::XWing;
        assert!(open(&xwing, &relabelled, &ctx()).is_err());
        // A key whose bytes are sent under the wrong suite is refused.
        let mislabelled = EncryptionKey { suite: KemSuite::XWing, bytes: x25519.encryption_key().bytes.clone() };
        assert!(matches!(seal(&mislabelled, b"s", &ctx()), Err(CryptoError::InvalidLength { .. })));
    }

    #[test]
    fn altered_or_truncated_envelopes_fail() {
        for suite in KemSuite::ALL {
            let key = generate(suite);
            let envelope = seal(key.encryption_key(), b"0123456789abcdef", &ctx()).unwrap();
            // Flip each byte of the ciphertext and a spread of bytes of enc.
            for i in 0..envelope.ciphertext.len() {
                let mut bad = envelope.clone();
                bad.ciphertext[i] ^= 1;
                assert!(open(&key, &bad, &ctx()).is_err(), "{suite} ct byte {i}");
            }
            let enc_len = envelope.encapsulated_key.len();
            for i in (0..enc_len).step_by(enc_len / 16).chain([enc_len - 1]) {
                let mut bad = envelope.clone();
                bad.encapsulated_key[i] ^= 0x40;
                assert!(open(&key, &bad, &ctx()).is_err(), "{suite} enc byte {i}");
            }
            // Truncations.
            let mut short = envelope.clone();
            short.ciphertext.pop();
            assert!(matches!(open(&key, &short, &ctx()), Err(CryptoError::EnvelopeOpenFailed)));
            let mut no_tag = envelope.clone();
            no_tag.ciphertext.truncate(TAG_BYTES - 1);
            assert!(matches!(open(&key, &no_tag, &ctx()), Err(CryptoError::InvalidLength { .. })));
            let mut short_enc = envelope.clone();
            short_enc.encapsulated_key.pop();
            assert!(matches!(open(&key, &short_enc, &ctx()), Err(CryptoError::InvalidLength { .. })));
            let mut long = envelope.clone();
            long.ciphertext.resize(MAX_WRAPPED_SECRET_BYTES + TAG_BYTES + 1, 0);
            assert!(matches!(open(&key, &long, &ctx()), Err(CryptoError::TooLong { .. })));
        }
    }

    #[test]
    fn low_order_x25519_key_is_refused() {
        // The all-zero X25519 public key gives an all-zero shared secret,
        // which RFC 9180 requires senders to reject.
        let key = EncryptionKey { suite: KemSuite::X25519, bytes: vec![0u8; 32] };
        assert!(seal(&key, b"s", &ctx()).is_err());
    }

    #[test]
    fn decryption_key_bytes_round_trip() {
        for suite in KemSuite::ALL {
            let key = generate(suite);
            let bytes = key.to_bytes();
            assert_eq!(bytes.len(), suite.decryption_key_bytes());
            let again = DecryptionKey::from_bytes(suite, &bytes).unwrap();
            assert_eq!(again.encryption_key(), key.encryption_key());
            let envelope = seal(key.encryption_key(), b"s", &ctx()).unwrap();
            assert_eq!(open(&again, &envelope, &ctx()).unwrap().as_slice(), b"s");
            assert!(DecryptionKey::from_bytes(suite, &bytes[..31]).is_err());
            let shown = format!("{key:?}");
            assert!(!shown.contains(&hex::encode(&bytes[..])));
        }
    }

    #[test]
    fn binary_encoding_is_checked_and_pinned() {
        for suite in KemSuite::ALL {
            let key = generate(suite);
            let envelope = seal(key.encryption_key(), b"secret", &ctx()).unwrap();
            let bytes = borsh::to_vec(&envelope).unwrap();
            // suite ‖ u32 len ‖ enc ‖ u32 len ‖ ct
            assert_eq!(bytes[0], suite.id());
            assert_eq!(bytes.len(), 1 + 4 + suite.encapsulated_key_bytes() + 4 + 6 + TAG_BYTES);
            assert_eq!(borsh::from_slice::<Envelope>(&bytes).unwrap(), envelope);
            // Truncated encodings fail.
            assert!(borsh::from_slice::<Envelope>(&bytes[..bytes.len() - 1]).is_err());
            // An unknown suite id fails.
            let mut unknown = bytes.clone();
            unknown[0] = 9;
            assert!(borsh::from_slice::<Envelope>(&unknown).is_err());
            // A huge declared length fails before allocating.
            let mut huge = bytes.clone();
            huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
            assert!(borsh::from_slice::<Envelope>(&huge).is_err());

            let pk = key.encryption_key();
            let pk_bytes = borsh::to_vec(pk).unwrap();
            assert_eq!(pk_bytes.len(), 1 + 4 + suite.encryption_key_bytes());
            assert_eq!(&borsh::from_slice::<EncryptionKey>(&pk_bytes).unwrap(), pk);
            let mut wrong_len = pk_bytes.clone();
            wrong_len[1..5].copy_from_slice(&31u32.to_le_bytes());
            assert!(borsh::from_slice::<EncryptionKey>(&wrong_len).is_err());
        }
    }

    #[test]
    fn text_encoding_round_trips_and_checks_lengths() {
        let key = generate(KemSuite::X25519);
        let envelope = seal(key.encryption_key(), b"secret", &ctx()).unwrap();
        let json = serde_json::to_string(&envelope).unwrap();
        assert!(json.contains("\"suite\":\"x25519\""));
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), envelope);
        let pk_json = serde_json::to_string(key.encryption_key()).unwrap();
        assert_eq!(&serde_json::from_str::<EncryptionKey>(&pk_json).unwrap(), key.encryption_key());
        let bad = r#"{"suite":"xwing","bytes":"00"}"#;
        assert!(serde_json::from_str::<EncryptionKey>(bad).is_err());
        let bad = r#"{"suite":"x25519","encapsulated_key":"00","ciphertext":"00"}"#;
        assert!(serde_json::from_str::<Envelope>(bad).is_err());
    }

    #[test]
    fn info_layout_is_pinned() {
        let info = ctx().info(KemSuite::XWing);
        assert_eq!(&info[..INFO_LABEL.len()], INFO_LABEL);
        assert_eq!(info[INFO_LABEL.len()], 1);
        assert_eq!(&info[INFO_BYTES - 8..], &3u64.to_be_bytes());
        assert_ne!(info, ctx().info(KemSuite::X25519));
    }
}
