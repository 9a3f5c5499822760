//! Ed25519 against Wycheproof and against the ZIP-215 reference.
//!
//! commonware-cryptography (what `medledger_crypto::sign` calls) only verifies
//! namespaced messages: the signed bytes are `varint(len(ns)) ‖ ns ‖ msg`.
//! Wycheproof vectors sign raw messages, so they are checked three ways:
//!
//! 1. All 151 vectors against `ed25519-consensus`, the reference
//!    implementation of ZIP-215 rules that commonware's `ed25519` vendors:
//!    every valid vector verifies, and the invalid vectors it accepts are
//!    exactly the documented list [`ZIP215_ACCEPTS`].
//! 2. Every vector whose raw message happens to parse as `varint(n) ‖ ns ‖
//!    msg` goes through `medledger_crypto::sign` itself, and must give the
//!    same verdict.
//! 3. commonware (through our API) and the reference must agree on every
//!    vector's key and signature over a framed message, on small-order and
//!    non-canonical points, and on random corruptions, for single and batch
//!    verification.

use ed25519_consensus as reference;
use medledger_crypto::sign::{self, Signature, SigningKey, VerifyingKey};
use wycheproof::TestResult;
use wycheproof::eddsa::{TestName, TestSet};

const NS: &[u8] = b"medledger/test";

/// Wycheproof `invalid` vectors that ZIP-215 accepts, by tcId, with their
/// Wycheproof flag and why. ZIP-215 accepts every encoding that decodes to a
/// curve point, canonical or not, so validators never disagree on encodings.
const ZIP215_ACCEPTS: &[(usize, &str, &str)] = &[(
    151,
    "InvalidEncoding",
    "R = 0100…0080 encodes y = 1 with the sign bit of x set: a non-canonical \
     encoding of the identity (x = 0, so \"-0\"). RFC 8032 decoding rejects it; \
     ZIP-215 accepts non-canonical R, so the signature verifies.",
)];

/// commonware's `union_unique` framing, written out independently.
fn frame(namespace: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut len = namespace.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(namespace);
    out.extend_from_slice(msg);
    out
}

/// Splits a raw message into `(namespace, msg)` if it starts with a canonical
/// one-byte varint `n` followed by at least `n` bytes.
fn unframe(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&n, rest) = raw.split_first()?;
    if n >= 0x80 || rest.len() < n as usize {
        return None;
    }
    Some(rest.split_at(n as usize))
}

fn reference_verify(pk: &[u8; 32], sig: &[u8; 64], msg: &[u8]) -> bool {
    let Ok(vk) = reference::VerificationKey::try_from(*pk) else {
        return false;
    };
    vk.verify(&reference::Signature::from(*sig), msg).is_ok()
}

struct Vector {
    tc_id: usize,
    result: TestResult,
    flags: String,
    pk: [u8; 32],
    sig: Vec<u8>,
    msg: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let set = TestSet::load(TestName::Ed25519).expect("bundled vectors load");
    let mut out = Vec::new();
    for group in set.test_groups {
        let pk: [u8; 32] = group.key.pk[..].try_into().expect("32-byte keys");
        for test in group.tests {
            out.push(Vector {
                tc_id: test.tc_id,
                result: test.result,
                flags: format!("{:?}", test.flags),
                pk,
                sig: test.sig.to_vec(),
                msg: test.msg.to_vec(),
            });
        }
    }
    out
}

#[test]
fn wycheproof_under_the_zip215_reference() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 151);
    let mut accepted_invalid = Vec::new();
    let mut valid = 0;
    for v in &vectors {
        let parsed = Signature::try_from(&v.sig[..]);
        let accepted = match &parsed {
            Ok(sig) => reference_verify(&v.pk, &sig.0, &v.msg),
            Err(_) => false,
        };
        match v.result {
            TestResult::Valid => {
                valid += 1;
                assert!(accepted, "valid tcId {} ({}) must verify", v.tc_id, v.flags);
            }
            TestResult::Invalid => {
                if accepted {
                    accepted_invalid.push(v.tc_id);
                    let documented = ZIP215_ACCEPTS.iter().find(|(id, _, _)| *id == v.tc_id);
                    if let Some((_, flag, _)) = documented {
                        assert!(v.flags.contains(flag), "tcId {} flags {}", v.tc_id, v.flags);
                    }
                }
            }
            TestResult::Acceptable => {}
        }
        // Wrong-length signatures never parse.
        assert_eq!(parsed.is_ok(), v.sig.len() == 64, "tcId {}", v.tc_id);
    }
    let documented: Vec<usize> = ZIP215_ACCEPTS.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(accepted_invalid, documented, "the invalid vectors ZIP-215 accepts must be exactly the documented ones");
    assert!(valid > 50);
}

#[test]
fn wycheproof_through_medledger_where_the_message_frames() {
    let mut checked = 0;
    for v in vectors() {
        let Some((namespace, msg)) = unframe(&v.msg) else {
            continue;
        };
        let Ok(sig) = Signature::try_from(&v.sig[..]) else {
            continue;
        };
        assert_eq!(frame(namespace, msg), v.msg);
        let vk = VerifyingKey(v.pk);
        let ours = vk.verify(namespace, msg, &sig).is_ok();
        let expected = v.result == TestResult::Valid || ZIP215_ACCEPTS.iter().any(|(id, _, _)| *id == v.tc_id);
        assert_eq!(ours, expected, "tcId {} ({})", v.tc_id, v.flags);
        assert_eq!(sign::verify_batch(namespace, &[(vk, msg, sig)]), ours);
        // And a changed message must not verify.
        let mut altered = msg.to_vec();
        altered.push(0);
        assert!(vk.verify(namespace, &altered, &sig).is_err());
        checked += 1;
    }
    // 13 of the bundled vectors (all valid) have framable messages.
    assert_eq!(checked, 13);
}

/// Our verdict (single and batch) and the reference's, which must agree.
fn both(vk: VerifyingKey, msg: &[u8], sig: Signature) -> bool {
    let single = vk.verify(NS, msg, &sig).is_ok();
    let batch = sign::verify_batch(NS, &[(vk, msg, sig)]);
    let reference = reference_verify(&vk.0, &sig.0, &frame(NS, msg));
    assert_eq!(single, batch, "single vs batch: A={vk} sig={sig}");
    assert_eq!(single, reference, "ours vs reference: A={vk} sig={sig}");
    single
}

#[test]
fn agrees_with_reference_on_wycheproof_keys_and_signatures() {
    for v in vectors() {
        let Ok(sig) = Signature::try_from(&v.sig[..]) else {
            continue;
        };
        both(VerifyingKey(v.pk), &v.msg, sig);
    }
}

#[test]
fn honest_signatures_verify_under_the_documented_framing() {
    for len in [0usize, 1, 127, 128, 1000] {
        let key = SigningKey::generate();
        let msg = vec![0x33u8; len];
        let sig = key.sign(NS, &msg);
        assert!(both(key.verifying_key(), &msg, sig));
        assert!(reference_verify(&key.verifying_key().0, &sig.0, &frame(NS, &msg)));
        // A long namespace uses a multi-byte varint.
        let long_ns = vec![b'n'; 300];
        let sig = key.sign(&long_ns, &msg);
        assert!(reference_verify(&key.verifying_key().0, &sig.0, &frame(&long_ns, &msg)));
    }
}

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Small-order points, canonical and not.
fn small_order() -> Vec<[u8; 32]> {
    [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ]
    .iter()
    .map(|s| h32(s))
    .collect()
}

fn sig_of(r: [u8; 32], s: [u8; 32]) -> Signature {
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&r);
    bytes[32..].copy_from_slice(&s);
    Signature(bytes)
}

#[test]
fn agrees_with_reference_on_small_order_and_non_canonical_points() {
    let ell = h32("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
    let mut ell_plus_one = ell;
    ell_plus_one[0] += 1;
    let mut one = [0u8; 32];
    one[0] = 1;
    let honest = SigningKey::generate();
    let honest_sig = honest.sign(NS, b"m");
    let points = small_order();
    let mut accepted = 0;
    for a in &points {
        for r in &points {
            for s in [[0u8; 32], one, ell, ell_plus_one] {
                if both(VerifyingKey(*a), b"m", sig_of(*r, s)) {
                    accepted += 1;
                }
            }
        }
        // A small-order key with an honest signature's (R, s).
        both(VerifyingKey(*a), b"m", honest_sig);
    }
    // Exactly the s = 0 combinations verify (cofactored equation, s < ℓ).
    assert_eq!(accepted, points.len() * points.len());
    // Not every 32-byte string is a point: y = 2 is off the curve.
    let mut off_curve = [0u8; 32];
    off_curve[0] = 2;
    assert!(!both(VerifyingKey(off_curve), b"m", honest_sig));
}

#[test]
fn agrees_with_reference_on_random_corruptions() {
    let key = SigningKey::generate();
    for round in 0..300u32 {
        let msg: [u8; 24] = medledger_crypto::random_bytes();
        let mut vk = key.verifying_key();
        let mut sig = key.sign(NS, &msg);
        let mut msg = msg.to_vec();
        let r: [u8; 4] = medledger_crypto::random_bytes();
        let bit = 1u8 << (r[1] % 8);
        match round % 4 {
            0 => sig.0[r[0] as usize % 32] ^= bit,      // R
            1 => sig.0[32 + r[0] as usize % 32] ^= bit, // s
            2 => vk.0[r[0] as usize % 32] ^= bit,       // A
            _ => msg[r[0] as usize % 24] ^= bit,        // message
        }
        assert!(!both(vk, &msg, sig), "round {round}");
    }
}

#[test]
fn batches_mixing_valid_invalid_and_edge_cases_agree() {
    let keys: Vec<SigningKey> = (0..5).map(|_| SigningKey::generate()).collect();
    let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; i as usize * 3]).collect();
    let mut items: Vec<(VerifyingKey, &[u8], Signature)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let k = &keys[i % keys.len()];
            (k.verifying_key(), m.as_slice(), k.sign(NS, m))
        })
        .collect();
    for p in small_order() {
        items.push((VerifyingKey(p), b"edge".as_slice(), sig_of(p, [0u8; 32])));
    }
    assert!(sign::verify_batch(NS, &items));
    for i in 0..items.len() {
        let mut bad = items.clone();
        bad[i].2.0[40] ^= 1;
        let singles = bad.iter().all(|(k, m, s)| k.verify(NS, m, s).is_ok());
        assert!(!singles);
        assert!(!sign::verify_batch(NS, &bad), "item {i}");
    }
}
