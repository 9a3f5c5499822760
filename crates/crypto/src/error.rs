//! The crate's error type.
//!
//! Every variant carries only non-secret, structured data: lengths, limits,
//! suite ids, segment indices. No key bytes, plaintext or record identifiers
//! ever appear in an error.

use crate::suite::KemSuite;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A byte string had the wrong length for what it encodes.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    InvalidLength {
        /// What was being decoded.
        what: &'static str,
        /// The only length accepted.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// An input exceeded a documented limit.
    #[error("{what}: {actual} bytes exceeds the limit of {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// The limit.
        max: u64,
        /// The length received (or reached before stopping).
        actual: u64,
    },
    /// A suite id that this version does not know.
    #[error("unknown {kind} suite id {id}")]
    UnknownSuite {
        /// Which suite family (`"kem"` or `"payload"`).
        kind: &'static str,
        /// The id received.
        id: u8,
    },
    /// A text suite name that this version does not know.
    #[error("unknown {kind} suite name")]
    UnknownSuiteName {
        /// Which suite family (`"kem"` or `"payload"`).
        kind: &'static str,
    },
    /// A key and an envelope (or two keys) name different suites.
    #[error("suite mismatch: key is {key}, envelope is {envelope}")]
    SuiteMismatch {
        /// The suite of the key.
        key: KemSuite,
        /// The suite named by the envelope.
        envelope: KemSuite,
    },
    /// Malformed hexadecimal text.
    #[error("invalid hex for {what}")]
    InvalidHex {
        /// What was being decoded.
        what: &'static str,
    },
    /// A public key that does not decode to a valid key of its suite.
    #[error("invalid public key for {what}")]
    InvalidPublicKey {
        /// Which kind of key (`"ed25519"`, `"xwing"`, `"x25519"`).
        what: &'static str,
    },
    /// An Ed25519 signature that does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// An envelope that could not be sealed for the recipient key.
    #[error("could not seal envelope")]
    SealFailed,
    /// An envelope that does not open: wrong key, wrong context, or altered.
    /// Deliberately does not say which.
    #[error("envelope does not open with this key and context")]
    EnvelopeOpenFailed,
    /// A payload header that is not well formed.
    #[error("malformed payload header: {reason}")]
    MalformedHeader {
        /// Which check failed.
        reason: &'static str,
    },
    /// The payload header names a different record than expected.
    #[error("payload header is for a different record")]
    RecordMismatch,
    /// The payload header names a different version than expected.
    #[error("payload header is for version {actual}, expected {expected}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: u32,
        /// The version in the header.
        actual: u32,
    },
    /// The data key does not match the header's key commitment.
    #[error("data key does not match the payload's key commitment")]
    KeyCommitmentMismatch,
    /// A payload segment failed authentication (altered, reordered, or
    /// encrypted under another key).
    #[error("payload segment {segment} failed authentication")]
    SegmentAuthenticationFailed {
        /// Zero-based index of the segment.
        segment: u32,
    },
    /// The payload ends before its last segment.
    #[error("payload is truncated after {segments} complete segments")]
    Truncated {
        /// How many segments authenticated before the stream ended.
        segments: u32,
    },
    /// The ciphertext's SHA-256 differs from the expected (ledger) digest.
    #[error("payload digest does not match the expected digest")]
    DigestMismatch,
    /// Bytes follow the payload's last segment.
    #[error("payload has bytes after its last segment")]
    TrailingData,
    /// A keystore blob that is not well formed.
    #[error("malformed keystore: {reason}")]
    MalformedKeystore {
        /// Which check failed.
        reason: &'static str,
    },
    /// Keystore key-derivation parameters outside the accepted bounds.
    #[error("keystore Argon2 parameters out of bounds (m = {m_cost_kib} KiB, t = {t_cost}, p = {p_cost})")]
    KdfParametersOutOfBounds {
        /// Memory cost in KiB.
        m_cost_kib: u32,
        /// Number of passes.
        t_cost: u32,
        /// Degree of parallelism.
        p_cost: u32,
    },
    /// The passphrase does not open the keystore (or the keystore was altered).
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// Argon2 refused its inputs.
    #[error("key derivation failed")]
    KeyDerivation,
    /// A locally sealed blob (cache, custody keystore) that is malformed or over its limit, or a
    /// secret too short to derive its key from.
    #[error("local blob: {reason}")]
    LocalBlob {
        /// Which check failed.
        reason: &'static str,
    },
    /// A locally sealed blob that does not authenticate (another key, another name, or altered).
    #[error("local blob does not open with this key and name")]
    LocalOpenFailed,
    /// Threshold sharing refused its parameters or shares (DESIGN §6a).
    #[error("threshold sharing: {reason}")]
    Threshold {
        /// Which check failed.
        reason: &'static str,
    },
    /// Reading or writing a stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
