//! Record payload encryption: AES-256-GCM in the STREAM construction
//! (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and
//! its Nonce-Reuse Misuse-Resistance", 2015), streaming in bounded memory.
//!
//! # Format
//!
//! ```text
//! ciphertext = header ‖ segment_0 ‖ … ‖ segment_{n-1}
//! header     = "MLP1" ‖ suite (1) ‖ record (16) ‖ version (4, BE)
//!              ‖ segment_size_bytes (4, BE) ‖ key_commitment (32) ‖ nonce_prefix (7)   = 68 bytes
//! segment_i  = AES-256-GCM(DEK, nonce_i, aad = header, plaintext_i) ‖ tag (16)
//! nonce_i    = nonce_prefix (7) ‖ i (4, BE) ‖ last (1: 0x01 on the final segment, else 0x00)
//! ```
//!
//! Every segment but the last carries exactly [`SEGMENT_SIZE_BYTES`] of
//! plaintext; the last carries 0 to [`SEGMENT_SIZE_BYTES`] (0 only when the
//! whole plaintext is empty). The nonce prefix is random per encryption.
//!
//! # Invariants
//!
//! - The header is the AAD of every segment, so it is authenticated.
//! - The segment index and last flag are in the nonce, so reordering,
//!   dropping, truncating or extending segments fails authentication.
//! - The header carries a key commitment
//!   `SHA-256("medledger/key-commit" ‖ DEK ‖ record ‖ version_be)`, checked
//!   (in constant time) before any decryption: AES-GCM alone does not commit to
//!   its key, so without it an author could hand different readers different
//!   keys that decrypt one ciphertext (one digest) to different plaintexts.
//! - [`decrypt`] writes only authenticated segments. On `Err` the writer may
//!   already hold authenticated *earlier* segments: callers must write to a
//!   temporary file and discard it on `Err`.
//! - Memory is bounded: about two segments (one ciphertext segment and one
//!   plaintext segment) whatever the payload size.

use std::io::{ErrorKind, Read, Write};

use zeroize::Zeroizing;

use crate::aead::{Aes256Gcm, NONCE_BYTES};
use crate::suite::PayloadSuite;
use crate::{CryptoError, Sha256Stream};

/// Plaintext bytes per segment.
pub const SEGMENT_SIZE_BYTES: u32 = 64 * 1024;
/// AES-GCM tag length.
pub const TAG_BYTES: usize = crate::aead::TAG_BYTES;
/// Length of the encoded [`Header`].
pub const HEADER_BYTES: usize = 4 + 1 + 16 + 4 + 4 + 32 + 7;
/// The header's magic prefix.
pub const MAGIC: [u8; 4] = *b"MLP1";
/// The largest plaintext accepted by [`encrypt`] and [`decrypt`] (4 GiB).
pub const MAX_PLAINTEXT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Length of a data key.
pub const DATA_KEY_BYTES: usize = 32;
/// Domain-separation label of the key commitment.
pub const KEY_COMMITMENT_LABEL: &[u8] = b"medledger/key-commit";

const SEGMENT: usize = SEGMENT_SIZE_BYTES as usize;

/// A record's 256-bit data encryption key (DEK). Wiped when dropped; its
/// `Debug` never shows the key.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; DATA_KEY_BYTES]>);

impl DataKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; DATA_KEY_BYTES]);
        crate::fill_random(key.as_mut_slice());
        Self(key)
    }

    /// A key from its bytes (e.g. just unwrapped from an envelope).
    pub fn from_bytes(bytes: &[u8; DATA_KEY_BYTES]) -> Self {
        Self(Zeroizing::new(*bytes))
    }

    /// A key from a byte slice, which must be [`DATA_KEY_BYTES`] long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: &[u8; DATA_KEY_BYTES] = bytes.try_into().map_err(|_| CryptoError::InvalidLength {
            what: "data key",
            expected: DATA_KEY_BYTES,
            actual: bytes.len(),
        })?;
        Ok(Self::from_bytes(array))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; DATA_KEY_BYTES] {
        &self.0
    }

    fn aead(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// `SHA-256("medledger/key-commit" ‖ DEK ‖ record ‖ version_be)`.
pub fn key_commitment(dek: &DataKey, record: &[u8; 16], version: u32) -> [u8; 32] {
    let mut hash = Sha256Stream::new();
    hash.update(KEY_COMMITMENT_LABEL);
    hash.update(dek.as_bytes());
    hash.update(record);
    hash.update(&version.to_be_bytes());
    hash.finalize()
}

/// The authenticated payload header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The payload suite.
    pub suite: PayloadSuite,
    /// The record id.
    pub record: [u8; 16],
    /// The record version.
    pub version: u32,
    /// Plaintext bytes per segment.
    pub segment_size_bytes: u32,
    /// The key commitment (see [`key_commitment`]).
    pub key_commitment: [u8; 32],
    /// Random per-encryption nonce prefix.
    pub nonce_prefix: [u8; 7],
}

impl Header {
    /// The fixed-size encoding.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        let mut at = 0;
        for part in [
            &MAGIC[..],
            &[self.suite.id()],
            &self.record,
            &self.version.to_be_bytes(),
            &self.segment_size_bytes.to_be_bytes(),
            &self.key_commitment,
            &self.nonce_prefix,
        ] {
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        assert_eq!(at, HEADER_BYTES, "header fields fill the header exactly");
        out
    }

    /// Decodes and checks magic, suite and segment size.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Result<Self, CryptoError> {
        let (magic, rest) = bytes.split_at(4);
        if magic != MAGIC {
            return Err(CryptoError::MalformedHeader { reason: "bad magic" });
        }
        let suite = PayloadSuite::try_from(rest[0])?;
        let rest = &rest[1..];
        let (record, rest) = rest.split_at(16);
        let (version, rest) = rest.split_at(4);
        let (segment_size, rest) = rest.split_at(4);
        let (commitment, nonce_prefix) = rest.split_at(32);
        let header = Header {
            suite,
            record: record.try_into().expect("16-byte field"),
            version: u32::from_be_bytes(version.try_into().expect("4-byte field")),
            segment_size_bytes: u32::from_be_bytes(segment_size.try_into().expect("4-byte field")),
            key_commitment: commitment.try_into().expect("32-byte field"),
            nonce_prefix: nonce_prefix.try_into().expect("7-byte field"),
        };
        if header.segment_size_bytes != SEGMENT_SIZE_BYTES {
            return Err(CryptoError::MalformedHeader { reason: "segment size is not the suite's" });
        }
        Ok(header)
    }

    fn nonce(&self, segment: u32, last: bool) -> [u8; NONCE_BYTES] {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..7].copy_from_slice(&self.nonce_prefix);
        nonce[7..11].copy_from_slice(&segment.to_be_bytes());
        nonce[11] = u8::from(last);
        nonce
    }
}

/// What [`encrypt`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Total ciphertext length, header included.
    pub ciphertext_len: u64,
    /// SHA-256 of the whole ciphertext, header included.
    pub digest: [u8; 32],
    /// The key commitment written in the header.
    pub key_commitment: [u8; 32],
}

/// Encrypts `plaintext` for `record`/`version` under `dek`, writing the
/// ciphertext to `out` (then flushing it).
///
/// Fails with [`CryptoError::TooLong`] past [`MAX_PLAINTEXT_BYTES`] (having
/// written a partial ciphertext, which the caller discards).
pub fn encrypt<R: Read, W: Write>(
    dek: &DataKey,
    record: &[u8; 16],
    version: u32,
    plaintext: R,
    out: W,
) -> Result<Sealed, CryptoError> {
    encrypt_with_suite(PayloadSuite::Aes256GcmStream64K, dek, record, version, plaintext, out)
}

/// As [`encrypt`], naming `suite` in the authenticated header: the suites share the segment
/// format and differ in how the data key was made (see [`PayloadSuite`]), which a reader checks
/// against what the ledger says before trusting the result.
pub fn encrypt_with_suite<R: Read, W: Write>(
    suite: PayloadSuite,
    dek: &DataKey,
    record: &[u8; 16],
    version: u32,
    plaintext: R,
    out: W,
) -> Result<Sealed, CryptoError> {
    encrypt_with_limit(suite, dek, record, version, plaintext, out, MAX_PLAINTEXT_BYTES, crate::random_bytes())
}

#[allow(clippy::too_many_arguments)]
fn encrypt_with_limit<R: Read, W: Write>(
    suite: PayloadSuite,
    dek: &DataKey,
    record: &[u8; 16],
    version: u32,
    mut plaintext: R,
    mut out: W,
    max_plaintext_bytes: u64,
    nonce_prefix: [u8; 7],
) -> Result<Sealed, CryptoError> {
    let header = Header {
        suite,
        record: *record,
        version,
        segment_size_bytes: SEGMENT_SIZE_BYTES,
        key_commitment: key_commitment(dek, record, version),
        nonce_prefix,
    };
    let header_bytes = header.encode();
    let key = dek.aead();
    let mut digest = Sha256Stream::new();
    out.write_all(&header_bytes)?;
    digest.update(&header_bytes);
    let mut ciphertext_len = HEADER_BYTES as u64;

    // Holds plaintext, encrypted in place, then the tag; wiped when dropped.
    let mut buffer = Zeroizing::new(vec![0u8; SEGMENT + TAG_BYTES]);
    let mut lookahead = Lookahead::default();
    let mut plaintext_len: u64 = 0;
    let mut segment: u32 = 0;
    loop {
        let filled = lookahead.fill(&mut plaintext, &mut buffer[..SEGMENT])?;
        plaintext_len += filled as u64;
        if plaintext_len > max_plaintext_bytes {
            return Err(CryptoError::TooLong {
                what: "payload plaintext",
                max: max_plaintext_bytes,
                actual: plaintext_len,
            });
        }
        let last = filled < SEGMENT || lookahead.at_end(&mut plaintext)?;
        let tag = key.seal_in_place(header.nonce(segment, last), &header_bytes, &mut buffer[..filled]);
        buffer[filled..filled + TAG_BYTES].copy_from_slice(&tag);
        let chunk = &buffer[..filled + TAG_BYTES];
        out.write_all(chunk)?;
        digest.update(chunk);
        ciphertext_len += chunk.len() as u64;
        if last {
            break;
        }
        segment = segment.checked_add(1).expect("the plaintext limit keeps the segment index within u32");
    }
    out.flush()?;
    Ok(Sealed { ciphertext_len, digest: digest.finalize(), key_commitment: header.key_commitment })
}

/// Decrypts a payload written by [`encrypt`], writing the plaintext to `out`
/// (then flushing it) and returning its length.
///
/// Before decrypting anything it checks the header's magic, suite and segment
/// size, that the header names `record` and `version`, and that `dek` matches
/// the header's key commitment (constant-time comparison). Then each segment
/// is authenticated before it is written. Truncation (no last segment),
/// reordering, extension (bytes after the last segment) and any flipped byte
/// are detected.
///
/// On `Err`, `out` may already have received authenticated earlier segments:
/// write to a temporary file and discard it on `Err`.
pub fn decrypt<R: Read, W: Write>(
    dek: &DataKey,
    record: &[u8; 16],
    version: u32,
    ciphertext: R,
    out: W,
) -> Result<u64, CryptoError> {
    decrypt_with_limit(dek, record, version, ciphertext, out, MAX_PLAINTEXT_BYTES)
}

/// As [`decrypt`], and also checks that the SHA-256 of the whole ciphertext
/// (header included) equals `expected_digest`, the digest recorded when the
/// payload was sealed (see [`Sealed::digest`]). An author holding the key could
/// make several authentic ciphertexts for one record; this pins the one the
/// ledger committed to.
///
/// The digest is known only once the input is exhausted, so on
/// [`CryptoError::DigestMismatch`] `out` has received the plaintext: discard it
/// as for any `Err`.
pub fn decrypt_with_digest<R: Read, W: Write>(
    dek: &DataKey,
    record: &[u8; 16],
    version: u32,
    expected_digest: &[u8; 32],
    ciphertext: R,
    out: W,
) -> Result<u64, CryptoError> {
    let mut hashing = HashingReader { inner: ciphertext, hash: Sha256Stream::new() };
    let len = decrypt_with_limit(dek, record, version, &mut hashing, out, MAX_PLAINTEXT_BYTES)?;
    if hashing.hash.finalize() != *expected_digest {
        return Err(CryptoError::DigestMismatch);
    }
    Ok(len)
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256Stream,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn decrypt_with_limit<R: Read, W: Write>(
    dek: &DataKey,
    record: &[u8; 16],
    version: u32,
    mut ciphertext: R,
    mut out: W,
    max_plaintext_bytes: u64,
) -> Result<u64, CryptoError> {
    let mut header_bytes = [0u8; HEADER_BYTES];
    if read_full(&mut ciphertext, &mut header_bytes)? < HEADER_BYTES {
        return Err(CryptoError::MalformedHeader { reason: "shorter than a header" });
    }
    let header = Header::decode(&header_bytes)?;
    if header.record != *record {
        return Err(CryptoError::RecordMismatch);
    }
    if header.version != version {
        return Err(CryptoError::VersionMismatch { expected: version, actual: header.version });
    }
    let commitment = key_commitment(dek, record, version);
    aws_lc_rs::constant_time::verify_slices_are_equal(&commitment, &header.key_commitment)
        .map_err(|_| CryptoError::KeyCommitmentMismatch)?;

    let key = dek.aead();
    let mut sealed = vec![0u8; SEGMENT + TAG_BYTES];
    let mut opened = Zeroizing::new(vec![0u8; SEGMENT]);
    let mut lookahead = Lookahead::default();
    let mut plaintext_len: u64 = 0;
    let mut segment: u32 = 0;
    loop {
        let filled = lookahead.fill(&mut ciphertext, &mut sealed)?;
        if filled < TAG_BYTES {
            // Nothing (or less than a tag) where a segment should be.
            return Err(CryptoError::Truncated { segments: segment });
        }
        let last = filled < sealed.len() || lookahead.at_end(&mut ciphertext)?;
        let body_len = filled - TAG_BYTES;
        if plaintext_len + body_len as u64 > max_plaintext_bytes {
            return Err(CryptoError::TooLong {
                what: "payload plaintext",
                max: max_plaintext_bytes,
                actual: plaintext_len + body_len as u64,
            });
        }
        let (body, tag) = sealed[..filled].split_at(body_len);
        let open = |last: bool, into: &mut [u8]| key.open(header.nonce(segment, last), &header_bytes, body, tag, into);
        if open(last, &mut opened[..body_len]).is_err() {
            // Say why, if we can: a segment that opens with the other value of
            // the last flag shows where the stream was cut or extended.
            let diagnosis = if open(!last, &mut opened[..body_len]).is_ok() {
                if last { CryptoError::Truncated { segments: segment + 1 } } else { CryptoError::TrailingData }
            } else {
                CryptoError::SegmentAuthenticationFailed { segment }
            };
            return Err(diagnosis);
        }
        out.write_all(&opened[..body_len])?;
        plaintext_len += body_len as u64;
        if last {
            break;
        }
        segment = match segment.checked_add(1) {
            Some(next) => next,
            None => {
                return Err(CryptoError::TooLong {
                    what: "payload plaintext",
                    max: max_plaintext_bytes,
                    actual: plaintext_len,
                });
            }
        };
    }
    out.flush()?;
    Ok(plaintext_len)
}

/// One byte of read-ahead, to learn whether a full segment is the last one
/// without buffering a second segment.
#[derive(Default)]
struct Lookahead {
    byte: Option<u8>,
}

impl Lookahead {
    /// Fills `buf` from the held byte (if any) and then `reader`, until full
    /// or end of input. Returns the number of bytes placed.
    fn fill<R: Read>(&mut self, reader: &mut R, buf: &mut [u8]) -> Result<usize, CryptoError> {
        let mut filled = 0;
        if let Some(byte) = self.byte.take() {
            buf[0] = byte;
            filled = 1;
        }
        filled += read_full(reader, &mut buf[filled..])?;
        Ok(filled)
    }

    /// Whether `reader` is exhausted; if not, holds its next byte.
    fn at_end<R: Read>(&mut self, reader: &mut R) -> Result<bool, CryptoError> {
        assert!(self.byte.is_none(), "lookahead holds at most one byte");
        let mut byte = [0u8; 1];
        if read_full(reader, &mut byte)? == 0 {
            Ok(true)
        } else {
            self.byte = Some(byte[0]);
            Ok(false)
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<usize, CryptoError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD: [u8; 16] = [7; 16];
    const VERSION: u32 = 3;
    const SEG: usize = SEGMENT;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect()
    }

    fn seal(dek: &DataKey, plaintext: &[u8]) -> (Vec<u8>, Sealed) {
        let mut out = Vec::new();
        let sealed = encrypt(dek, &RECORD, VERSION, plaintext, &mut out).unwrap();
        (out, sealed)
    }

    fn open(dek: &DataKey, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::new();
        let len = decrypt(dek, &RECORD, VERSION, ciphertext, &mut out)?;
        assert_eq!(len, out.len() as u64);
        Ok(out)
    }

    /// Byte ranges of each segment in a ciphertext of `plaintext_len`.
    fn segment_ranges(plaintext_len: usize) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut at = HEADER_BYTES;
        let mut left = plaintext_len;
        loop {
            let body = left.min(SEG);
            let last = left <= SEG;
            ranges.push(at..at + body + TAG_BYTES);
            at += body + TAG_BYTES;
            left -= body;
            if last {
                break;
            }
        }
        ranges
    }

    #[test]
    fn round_trip_at_segment_boundaries() {
        let dek = DataKey::generate();
        for len in [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 5] {
            let plaintext = data(len);
            let (ciphertext, sealed) = seal(&dek, &plaintext);
            let segments = segment_ranges(len);
            assert_eq!(ciphertext.len(), segments.last().unwrap().end, "length {len}: {} segments", segments.len());
            assert_eq!(sealed.ciphertext_len, ciphertext.len() as u64);
            assert_eq!(sealed.digest, crate::sha256(&ciphertext));
            assert_eq!(sealed.key_commitment, key_commitment(&dek, &RECORD, VERSION));
            assert_eq!(open(&dek, &ciphertext).unwrap(), plaintext, "length {len}");
        }
    }

    #[test]
    fn segment_counts_follow_the_format() {
        assert_eq!(segment_ranges(0).len(), 1);
        assert_eq!(segment_ranges(SEG).len(), 1);
        assert_eq!(segment_ranges(SEG + 1).len(), 2);
        assert_eq!(segment_ranges(3 * SEG + 5).len(), 4);
    }

    #[test]
    fn header_is_authenticated_and_well_formed() {
        let dek = DataKey::generate();
        let (ciphertext, _) = seal(&dek, &data(10));
        let header = Header::decode(ciphertext[..HEADER_BYTES].try_into().unwrap()).unwrap();
        assert_eq!(header.record, RECORD);
        assert_eq!(header.version, VERSION);
        assert_eq!(header.suite, PayloadSuite::Aes256GcmStream64K);
        assert_eq!(header.segment_size_bytes, SEGMENT_SIZE_BYTES);
        assert_eq!(header.encode(), ciphertext[..HEADER_BYTES]);
        assert_eq!(&ciphertext[..4], b"MLP1");
        // The nonce prefix is fresh per encryption.
        let (again, _) = seal(&dek, &data(10));
        assert_ne!(ciphertext[61..68], again[61..68]);
    }

    #[test]
    fn every_header_byte_flip_fails_clearly() {
        let dek = DataKey::generate();
        let (ciphertext, _) = seal(&dek, &data(100));
        for i in 0..HEADER_BYTES {
            let mut bad = ciphertext.clone();
            bad[i] ^= 0x01;
            let err = open(&dek, &bad).unwrap_err();
            let expected_kind = match i {
                0..=3 => matches!(err, CryptoError::MalformedHeader { .. }),
                4 => matches!(err, CryptoError::UnknownSuite { .. }),
                5..=20 => matches!(err, CryptoError::RecordMismatch),
                21..=24 => matches!(err, CryptoError::VersionMismatch { .. }),
                25..=28 => matches!(err, CryptoError::MalformedHeader { .. }),
                29..=60 => matches!(err, CryptoError::KeyCommitmentMismatch),
                _ => matches!(err, CryptoError::SegmentAuthenticationFailed { segment: 0 }),
            };
            assert!(expected_kind, "header byte {i}: {err:?}");
        }
    }

    #[test]
    fn byte_flip_in_each_segment_fails() {
        let dek = DataKey::generate();
        let len = 3 * SEG + 5;
        let (ciphertext, _) = seal(&dek, &data(len));
        for (index, range) in segment_ranges(len).into_iter().enumerate() {
            for at in [range.start, range.start + (range.len() / 2), range.end - 1] {
                let mut bad = ciphertext.clone();
                bad[at] ^= 0x80;
                let err = open(&dek, &bad).unwrap_err();
                assert!(
                    matches!(err, CryptoError::SegmentAuthenticationFailed { segment } if segment as usize == index),
                    "segment {index} byte {at}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_key_fails_before_decrypting() {
        let dek = DataKey::generate();
        let (ciphertext, _) = seal(&dek, &data(SEG + 1));
        let mut out = Vec::new();
        let err = decrypt(&DataKey::generate(), &RECORD, VERSION, &ciphertext[..], &mut out).unwrap_err();
        assert!(matches!(err, CryptoError::KeyCommitmentMismatch));
        assert!(out.is_empty());
    }

    #[test]
    fn forged_commitment_under_another_key_fails() {
        // An author encrypts under DEK B but writes DEK A's commitment into
        // the header (so a reader holding A would accept the header). The
        // reader holding A must fail on every segment; the reader holding B
        // must fail the commitment check.
        let dek_a = DataKey::generate();
        let dek_b = DataKey::generate();
        let mut header = Header {
            suite: PayloadSuite::Aes256GcmStream64K,
            record: RECORD,
            version: VERSION,
            segment_size_bytes: SEGMENT_SIZE_BYTES,
            key_commitment: key_commitment(&dek_a, &RECORD, VERSION),
            nonce_prefix: [9; 7],
        };
        let header_bytes = header.encode();
        let key_b = dek_b.aead();
        let mut body = data(100);
        let tag = key_b.seal_in_place(header.nonce(0, true), &header_bytes, &mut body);
        let mut forged = header_bytes.to_vec();
        forged.extend_from_slice(&body);
        forged.extend_from_slice(&tag);
        assert!(matches!(open(&dek_a, &forged).unwrap_err(), CryptoError::SegmentAuthenticationFailed { segment: 0 }));
        assert!(matches!(open(&dek_b, &forged).unwrap_err(), CryptoError::KeyCommitmentMismatch));
        // And with the honest commitment for B, B opens it.
        header.key_commitment = key_commitment(&dek_b, &RECORD, VERSION);
        let header_bytes = header.encode();
        let mut body = data(100);
        let tag = key_b.seal_in_place(header.nonce(0, true), &header_bytes, &mut body);
        let mut honest = header_bytes.to_vec();
        honest.extend_from_slice(&body);
        honest.extend_from_slice(&tag);
        assert_eq!(open(&dek_b, &honest).unwrap(), data(100));
    }

    #[test]
    fn wrong_record_or_version_fails() {
        let dek = DataKey::generate();
        let (ciphertext, _) = seal(&dek, &data(10));
        let mut out = Vec::new();
        assert!(matches!(
            decrypt(&dek, &[8; 16], VERSION, &ciphertext[..], &mut out).unwrap_err(),
            CryptoError::RecordMismatch
        ));
        assert!(matches!(
            decrypt(&dek, &RECORD, VERSION + 1, &ciphertext[..], &mut out).unwrap_err(),
            CryptoError::VersionMismatch { expected: 4, actual: 3 }
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn truncation_at_every_boundary_and_mid_segment_fails() {
        let dek = DataKey::generate();
        let len = 3 * SEG + 5;
        let plaintext = data(len);
        let (ciphertext, _) = seal(&dek, &plaintext);
        let ranges = segment_ranges(len);
        // Cut at the header and at each segment boundary before the end.
        let mut cuts: Vec<usize> = vec![0, 1, HEADER_BYTES - 1, HEADER_BYTES];
        cuts.extend(ranges[..ranges.len() - 1].iter().map(|r| r.end));
        for cut in cuts {
            let err = open(&dek, &ciphertext[..cut]).unwrap_err();
            let clear = match cut {
                c if c < HEADER_BYTES => matches!(err, CryptoError::MalformedHeader { .. }),
                c if c == HEADER_BYTES => matches!(err, CryptoError::Truncated { segments: 0 }),
                c => {
                    let complete = ranges.iter().filter(|r| r.end <= c).count() as u32;
                    matches!(err, CryptoError::Truncated { segments } if segments == complete)
                }
            };
            assert!(clear, "cut at {cut}: {err:?}");
        }
        // Cut in the middle of every segment, and one byte short of the end.
        for range in &ranges {
            for cut in [range.start + 1, range.start + range.len() / 2, range.end - 1] {
                let err = open(&dek, &ciphertext[..cut]).unwrap_err();
                assert!(
                    matches!(err, CryptoError::SegmentAuthenticationFailed { .. } | CryptoError::Truncated { .. }),
                    "cut at {cut}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn partial_output_is_only_authenticated_segments() {
        let dek = DataKey::generate();
        let len = 3 * SEG + 5;
        let plaintext = data(len);
        let (mut ciphertext, _) = seal(&dek, &plaintext);
        let ranges = segment_ranges(len);
        ciphertext[ranges[2].start + 10] ^= 1;
        let mut out = Vec::new();
        let err = decrypt(&dek, &RECORD, VERSION, &ciphertext[..], &mut out).unwrap_err();
        assert!(matches!(err, CryptoError::SegmentAuthenticationFailed { segment: 2 }));
        assert_eq!(out, plaintext[..2 * SEG]);
    }

    #[test]
    fn reordered_segments_fail() {
        let dek = DataKey::generate();
        let len = 3 * SEG + 5;
        let (ciphertext, _) = seal(&dek, &data(len));
        let ranges = segment_ranges(len);
        // Swap the first two (full) segments.
        let mut swapped = ciphertext[..HEADER_BYTES].to_vec();
        swapped.extend_from_slice(&ciphertext[ranges[1].clone()]);
        swapped.extend_from_slice(&ciphertext[ranges[0].clone()]);
        swapped.extend_from_slice(&ciphertext[ranges[2].start..]);
        assert!(matches!(open(&dek, &swapped).unwrap_err(), CryptoError::SegmentAuthenticationFailed { segment: 0 }));
        // Duplicate a segment in place of another.
        let mut duplicated = ciphertext[..ranges[1].start].to_vec();
        duplicated.extend_from_slice(&ciphertext[ranges[0].clone()]);
        duplicated.extend_from_slice(&ciphertext[ranges[2].start..]);
        assert!(matches!(
            open(&dek, &duplicated).unwrap_err(),
            CryptoError::SegmentAuthenticationFailed { segment: 1 }
        ));
        // Move the short last segment forward (drop segment 2).
        let mut dropped = ciphertext[..ranges[2].start].to_vec();
        dropped.extend_from_slice(&ciphertext[ranges[3].clone()]);
        assert!(matches!(open(&dek, &dropped).unwrap_err(), CryptoError::SegmentAuthenticationFailed { segment: 2 }));
    }

    #[test]
    fn appended_bytes_fail() {
        let dek = DataKey::generate();
        for len in [0, 5, SEG, 2 * SEG, 3 * SEG + 5] {
            let (ciphertext, _) = seal(&dek, &data(len));
            for extra in [1usize, TAG_BYTES, SEG + TAG_BYTES + 3] {
                let mut extended = ciphertext.clone();
                extended.extend(std::iter::repeat_n(0xA5u8, extra));
                let err = open(&dek, &extended).unwrap_err();
                let clear = if len % SEG == 0 && len > 0 {
                    // A full last segment followed by anything is recognised.
                    matches!(err, CryptoError::TrailingData)
                } else {
                    matches!(err, CryptoError::SegmentAuthenticationFailed { .. })
                };
                assert!(clear, "len {len} extra {extra}: {err:?}");
            }
            // Appending a copy of the valid last segment.
            let ranges = segment_ranges(len);
            let mut doubled = ciphertext.clone();
            doubled.extend_from_slice(&ciphertext[ranges.last().unwrap().clone()]);
            assert!(open(&dek, &doubled).is_err(), "len {len} doubled last");
        }
    }

    #[test]
    fn plaintext_limit_is_enforced() {
        let dek = DataKey::generate();
        let plaintext = data(2 * SEG + 1);
        let mut out = Vec::new();
        let err = encrypt_with_limit(
            PayloadSuite::Aes256GcmStream64K,
            &dek,
            &RECORD,
            VERSION,
            &plaintext[..],
            &mut out,
            2 * SEG as u64,
            [0; 7],
        )
        .unwrap_err();
        assert!(matches!(err, CryptoError::TooLong { .. }));
        // Exactly at the limit is fine, and decrypt enforces its own limit.
        let (ciphertext, _) = seal(&dek, &plaintext);
        let mut out = Vec::new();
        let err = decrypt_with_limit(&dek, &RECORD, VERSION, &ciphertext[..], &mut out, 2 * SEG as u64).unwrap_err();
        assert!(matches!(err, CryptoError::TooLong { .. }));
        let mut out = Vec::new();
        let len = decrypt_with_limit(&dek, &RECORD, VERSION, &ciphertext[..], &mut out, 2 * SEG as u64 + 1).unwrap();
        assert_eq!(len, plaintext.len() as u64);
    }

    /// A reader that returns at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_give_the_same_ciphertext_layout() {
        let dek = DataKey::generate();
        let plaintext = data(2 * SEG + 17);
        let mut out = Vec::new();
        let sealed = encrypt_with_limit(
            PayloadSuite::Aes256GcmStream64K,
            &dek,
            &RECORD,
            VERSION,
            Trickle { data: &plaintext, step: 1000 },
            &mut out,
            MAX_PLAINTEXT_BYTES,
            [1; 7],
        )
        .unwrap();
        let mut reference = Vec::new();
        encrypt_with_limit(
            PayloadSuite::Aes256GcmStream64K,
            &dek,
            &RECORD,
            VERSION,
            &plaintext[..],
            &mut reference,
            MAX_PLAINTEXT_BYTES,
            [1; 7],
        )
        .unwrap();
        assert_eq!(out, reference);
        assert_eq!(sealed.digest, crate::sha256(&reference));
        let mut back = Vec::new();
        decrypt(&dek, &RECORD, VERSION, Trickle { data: &out, step: 777 }, &mut back).unwrap();
        assert_eq!(back, plaintext);
    }

    #[test]
    fn golden_ciphertext_is_pinned() {
        // Pins the format: header layout, nonce layout, segmenting, AAD.
        let dek = DataKey::from_bytes(&[0x42; 32]);
        let mut out = Vec::new();
        let plaintext = data(SEG + 3);
        let sealed = encrypt_with_limit(
            PayloadSuite::Aes256GcmStream64K,
            &dek,
            &RECORD,
            VERSION,
            &plaintext[..],
            &mut out,
            MAX_PLAINTEXT_BYTES,
            [0x11; 7],
        )
        .unwrap();
        assert_eq!(
            hex::encode(sealed.key_commitment),
            hex::encode(crate::sha256(
                &[KEY_COMMITMENT_LABEL, &[0x42; 32][..], &RECORD[..], &VERSION.to_be_bytes()[..]].concat()
            ))
        );
        assert_eq!(sealed.ciphertext_len, (HEADER_BYTES + SEG + 3 + 2 * TAG_BYTES) as u64);
        assert_eq!(hex::encode(sealed.digest), GOLDEN_DIGEST, "the payload format changed");
    }

    /// Computed independently from the format description above with Python's
    /// `cryptography` AESGCM (OpenSSL) and hashlib, not by this code.
    const GOLDEN_DIGEST: &str = "072ea9ad84f82adca3665a2d07917f869857668aac9de335a413f9bc89fa1da8";

    #[test]
    fn digest_is_checked_against_the_sealed_one() {
        let dek = DataKey::generate();
        let plaintext = data(SEG + 9);
        let (ciphertext, sealed) = seal(&dek, &plaintext);
        let mut out = Vec::new();
        let len = decrypt_with_digest(&dek, &RECORD, VERSION, &sealed.digest, &ciphertext[..], &mut out).unwrap();
        assert_eq!(len, plaintext.len() as u64);
        assert_eq!(out, plaintext);
        // Another authentic encryption of the same plaintext under the same
        // key (fresh nonce prefix) has another digest, and is refused.
        let (other, other_sealed) = seal(&dek, &plaintext);
        assert_ne!(other_sealed.digest, sealed.digest);
        let mut out = Vec::new();
        assert!(matches!(
            decrypt_with_digest(&dek, &RECORD, VERSION, &sealed.digest, &other[..], &mut out).unwrap_err(),
            CryptoError::DigestMismatch
        ));
        // Tampering is still reported as such, before the digest.
        let mut bad = ciphertext.clone();
        bad[HEADER_BYTES + 3] ^= 1;
        assert!(matches!(
            decrypt_with_digest(&dek, &RECORD, VERSION, &sealed.digest, &bad[..], &mut Vec::new()).unwrap_err(),
            CryptoError::SegmentAuthenticationFailed { segment: 0 }
        ));
    }

    #[test]
    fn data_key_debug_hides_key() {
        let dek = DataKey::from_bytes(&[0xAB; 32]);
        assert!(!format!("{dek:?}").contains("ab"));
        assert!(DataKey::from_slice(&[0; 31]).is_err());
        assert_eq!(DataKey::from_slice(&[1; 32]).unwrap().as_bytes(), &[1; 32]);
    }
}
