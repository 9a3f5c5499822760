//! The one AES-256-GCM used by payloads and keystores (aws-lc-rs), behind a
//! small interface so both call it the same way and the Wycheproof vectors
//! test exactly this code.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// AES-GCM nonce length.
pub(crate) const NONCE_BYTES: usize = NONCE_LEN;
/// AES-GCM tag length.
pub(crate) const TAG_BYTES: usize = 16;

/// An AES-256-GCM key (aws-lc wipes its key schedule when dropped).
pub(crate) struct Aes256Gcm(LessSafeKey);

/// Authentication failed.
#[derive(Debug)]
pub(crate) struct OpenError;

impl Aes256Gcm {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256-GCM takes a 32-byte key")))
    }

    /// Encrypts `in_out` in place and returns the tag.
    ///
    /// # Panics
    ///
    /// If `in_out` exceeds AES-GCM's per-message limit (about 64 GiB); callers
    /// bound their inputs far below it.
    pub(crate) fn seal_in_place(&self, nonce: [u8; NONCE_BYTES], aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_BYTES] {
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .expect("callers bound messages far below the AES-GCM limit");
        tag.as_ref().try_into().expect("the AES-GCM tag is 16 bytes")
    }

    /// Authenticates and decrypts `ciphertext` ‖ `tag` into `plaintext`
    /// (same length as `ciphertext`). On error, `plaintext` holds no
    /// plaintext and the inputs are untouched.
    pub(crate) fn open(
        &self,
        nonce: [u8; NONCE_BYTES],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        plaintext: &mut [u8],
    ) -> Result<(), OpenError> {
        if tag.len() != TAG_BYTES || plaintext.len() != ciphertext.len() {
            return Err(OpenError);
        }
        self.0
            .open_separate_gather(Nonce::assume_unique_for_key(nonce), Aad::from(aad), ciphertext, tag, plaintext)
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::TestResult;
    use wycheproof::aead::{TestName, TestSet};

    /// Every Wycheproof AES-GCM vector with a 256-bit key, 96-bit nonce and
    /// 128-bit tag, through the exact calls payloads and keystores make.
    #[test]
    fn wycheproof_aes_256_gcm() {
        let set = TestSet::load(TestName::AesGcm).expect("bundled vectors load");
        let mut run = 0;
        let mut must_fail = 0;
        for group in set.test_groups {
            if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
                continue;
            }
            for test in group.tests {
                let key = Aes256Gcm::new(test.key[..].try_into().unwrap());
                let nonce: [u8; 12] = test.nonce[..].try_into().unwrap();
                let mut opened = vec![0u8; test.ct.len()];
                let result = key.open(nonce, &test.aad, &test.ct, &test.tag, &mut opened);
                match test.result {
                    TestResult::Valid => {
                        assert!(result.is_ok(), "tcId {} must open", test.tc_id);
                        assert_eq!(opened[..], test.pt[..], "tcId {}", test.tc_id);
                        let mut sealed = test.pt.to_vec();
                        let tag = key.seal_in_place(nonce, &test.aad, &mut sealed);
                        assert_eq!(sealed[..], test.ct[..], "tcId {} ciphertext", test.tc_id);
                        assert_eq!(tag[..], test.tag[..], "tcId {} tag", test.tc_id);
                    }
                    TestResult::Invalid => {
                        must_fail += 1;
                        assert!(result.is_err(), "tcId {} must not open", test.tc_id);
                    }
                    TestResult::Acceptable => {
                        if result.is_ok() {
                            assert_eq!(opened[..], test.pt[..], "tcId {}", test.tc_id);
                        }
                    }
                }
                run += 1;
            }
        }
        // wycheproof 0.7 bundles 66 such vectors (39 valid, 27 invalid).
        assert_eq!(run, 66);
        assert_eq!(must_fail, 27);
    }

    #[test]
    fn open_rejects_bad_tag_length() {
        let key = Aes256Gcm::new(&[1; 32]);
        let mut buf = *b"hello";
        let tag = key.seal_in_place([0; 12], b"", &mut buf);
        let mut out = [0u8; 5];
        assert!(key.open([0; 12], b"", &buf, &tag[..15], &mut out).is_err());
        assert!(key.open([0; 12], b"", &buf, &tag, &mut out).is_ok());
        assert_eq!(&out, b"hello");
    }
}
