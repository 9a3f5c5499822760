//! Record payloads (the STREAM construction with its key-committing header): arbitrary bytes
//! never decrypt to anything, and every plaintext round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use medledger_crypto::payload::{DataKey, decrypt, encrypt};

fuzz_target!(|data: &[u8]| {
    let dek = DataKey::from_bytes(&[7; 32]);
    let record = [1u8; 16];
    let mut out = Vec::new();
    // Outside ciphertext: rejected or, never, opened (no one here made it with this key).
    assert!(decrypt(&dek, &record, 1, data, &mut out).is_err(), "unauthenticated bytes decrypted");
    // The input as a plaintext: sealed and opened again, exactly.
    let mut sealed = Vec::new();
    encrypt(&dek, &record, 1, data, &mut sealed).expect("encrypt");
    let mut opened = Vec::new();
    decrypt(&dek, &record, 1, &sealed[..], &mut opened).expect("decrypt what was sealed");
    assert_eq!(opened, data);
    // One flipped bit anywhere is refused.
    if !sealed.is_empty() {
        let at = data.len() % sealed.len();
        sealed[at] ^= 1;
        assert!(decrypt(&dek, &record, 1, &sealed[..], &mut Vec::new()).is_err(), "a flipped byte decrypted");
    }
});
