//! SHA-256 for digests, ids, key commitments and Merkle trees.
//!
//! Backed by aws-lc-rs (already here for AES-GCM): on this machine's SHA-NI
//! it matches the `sha2` crate on large inputs and is several times faster on
//! the short inputs that ids and Merkle nodes hash (see the `sha256` bench).

use aws_lc_rs::digest::{Context, SHA256, digest};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    digest(&SHA256, data).as_ref().try_into().expect("SHA-256 digests are 32 bytes")
}

/// Incremental SHA-256, for data that arrives in pieces.
#[derive(Clone)]
pub struct Sha256Stream {
    inner: Context,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    /// Starts an empty hash.
    pub fn new() -> Self {
        Self { inner: Context::new(&SHA256) }
    }

    /// Absorbs `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The digest of everything absorbed.
    pub fn finalize(self) -> [u8; 32] {
        self.inner.finish().as_ref().try_into().expect("SHA-256 digests are 32 bytes")
    }
}

impl std::fmt::Debug for Sha256Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256Stream")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // FIPS 180-2 examples.
        assert_eq!(hex::encode(sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex::encode(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn agrees_with_the_sha2_crate() {
        use sha2::Digest as _;
        for len in [0usize, 1, 55, 56, 63, 64, 65, 1000, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let want: [u8; 32] = sha2::Sha256::digest(&data).into();
            assert_eq!(sha256(&data), want, "length {len}");
        }
    }

    #[test]
    fn stream_matches_one_shot_for_any_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let want = sha256(&data);
        for split in [0, 1, 63, 64, 65, 500, 999, 1000] {
            let mut stream = Sha256Stream::new();
            stream.update(&data[..split]);
            stream.update(&data[split..]);
            assert_eq!(stream.finalize(), want, "split at {split}");
        }
    }
}
