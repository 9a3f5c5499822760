//! Interop vectors between this code and the portal's TypeScript (`portal/packages/protocol`),
//! which implements the same formats a second time (DESIGN §11: the browser cannot run these
//! crates). Both directions, each a committed file:
//!
//! - `portal/vectors/rust.json`, written here (`MEDLEDGER_WRITE_VECTORS=1 cargo test -p
//!   medledger-ledger --test interop`), read by the TypeScript tests: namespaced Ed25519
//!   signatures, HPKE envelopes of both suites with their binding, STREAM payloads, RFC 9421
//!   request signatures, signed transactions, and Pedersen-shared threshold keys.
//! - `portal/vectors/ts.json`, written by the TypeScript (`npm run vectors` in `portal/`), read
//!   here: every envelope opens with the recorded key, every payload decrypts to the recorded
//!   plaintext under the recorded digest, every request signature passes the node's check, every
//!   transaction decodes canonically with its signature and id, every dealt share verifies
//!   against its commitments and the shares recover the secret.
//!
//! Without the variable, this test also checks that `rust.json` is still what this code makes
//! or accepts (deterministic items recomputed, random ones opened), so a format change that is
//! not carried to the portal fails here.

use std::path::PathBuf;

use medledger_crypto::payload::{self, DataKey};
use medledger_crypto::sign::SigningKey;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::threshold;
use medledger_crypto::wrap::{self, DecryptionKey, Envelope};
use medledger_ledger::httpsig::{self, RequestParts};
use medledger_ledger::{
    BreakGlass, CustodyRelease, Delegate, EmergencyReason, Erase, Grant, GrantScope, KeyChange, KeyHolder, KeySubject,
    LegalHold, NewChartEpoch, RecordAccess, Recovery, RecoveryAction, RegisterRecord, Revoke, RotateKeys, TeamAdd,
    TeamCreate, TeamRemove, Transaction, TxBody, TxKind,
};
use medledger_types::{ChainId, Digest, MemberId, Nonce, PurposeOfUse, RecordId, Timestamp, decode_canonical, encode};
use serde_json::{Value, json};

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../portal/vectors")
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("valid hex")
}

fn array<const N: usize>(v: &Value) -> [u8; N] {
    unhex(v).try_into().expect("the vector's length")
}

/// Seeded test material: the same every run, so the deterministic vectors are stable.
fn seed(n: u8) -> [u8; 32] {
    medledger_crypto::sha256(&[b"medledger/interop-vectors/".as_slice(), &[n]].concat())
}

/// Byte `i` of a payload vector's plaintext (the TypeScript side makes the same).
fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn suite_of(v: &Value) -> KemSuite {
    match v.as_u64() {
        Some(1) => KemSuite::XWing,
        Some(2) => KemSuite::X25519,
        other => panic!("unknown suite {other:?}"),
    }
}

const PAYLOAD_LENGTHS: [usize; 4] = [0, 3, 65_536, 65_536 + 100];
const URLS: [(&str, &str, &[u8]); 3] = [
    ("GET", "http://127.0.0.1:7100/v1/charts/00112233445566778899aabbccddeeff", b""),
    ("GET", "http://localhost/v1/staff?role=doctor&after=00", b""),
    ("POST", "https://validator.example:8443/v1/tx", b"\x00\x01body"),
];

fn sample_transactions(chain_id: ChainId, signer: MemberId) -> Vec<TxBody> {
    let patient = MemberId::new(seed(20)[..16].try_into().unwrap());
    let record = RecordId::new(seed(21)[..16].try_into().unwrap());
    let team = MemberId::new(seed(33)[..16].try_into().unwrap());
    let xwing = DecryptionKey::from_bytes(KemSuite::XWing, &seed(34)).unwrap().encryption_key().clone();
    let x25519 = DecryptionKey::from_bytes(KemSuite::X25519, &seed(35)).unwrap().encryption_key().clone();
    let next_signing = SigningKey::from_bytes(&seed(36)).verifying_key();
    let body = |nonce: u64, kind: TxKind, sidecar: Option<[u8; 32]>| TxBody {
        chain_id,
        signer,
        nonce: Nonce::new(nonce),
        kind,
        sidecar_digest: sidecar.map(Digest::new),
    };
    vec![
        body(1, TxKind::RecordAccess(RecordAccess { record, version: 3, purpose: PurposeOfUse::Treat }), None),
        body(
            2,
            TxKind::Grant(Grant {
                patient,
                grantee: signer,
                scope: GrantScope::All,
                write: true,
                expires_at: Some(Timestamp::new(1_800_000_000_000)),
                chart_epoch: Some(4),
                new_chart: None,
            }),
            Some(seed(22)),
        ),
        body(
            3,
            TxKind::Grant(Grant {
                patient,
                grantee: signer,
                scope: GrantScope::Record(record),
                write: false,
                expires_at: None,
                chart_epoch: None,
                new_chart: None,
            }),
            Some(seed(23)),
        ),
        body(
            4,
            TxKind::Revoke(Revoke { patient, grantee: signer, scope: GrantScope::Record(record), new_chart: None }),
            None,
        ),
        body(
            // Lane 1: nonces of lanes 0 and 1 stay below 2^53, exact as JSON numbers in a browser.
            Nonce::in_lane(1, 7).unwrap().get(),
            TxKind::RegisterRecord(RegisterRecord {
                record,
                patient,
                version: 1,
                digest: Digest::new(seed(24)),
                size_bytes: 4_164,
                recipients: vec![
                    KeyHolder::Member { member: signer },
                    KeyHolder::Chart { patient, epoch: 4 },
                    KeyHolder::Team { team: patient, epoch: 2 },
                ],
            }),
            Some(seed(25)),
        ),
        body(6, TxKind::Erase(Erase { record }), None),
        body(
            7,
            TxKind::BreakGlass(BreakGlass {
                patient,
                reason: Some(EmergencyReason::Unconscious),
                duration_ms: 3_600_000,
            }),
            None,
        ),
        // The patient's grant on sensitive records (no sidecar), and its revocation.
        body(
            8,
            TxKind::Grant(Grant {
                patient,
                grantee: signer,
                scope: GrantScope::Sensitive,
                write: false,
                expires_at: Some(Timestamp::new(1_800_000_000_000)),
                chart_epoch: None,
                new_chart: None,
            }),
            None,
        ),
        body(
            9,
            TxKind::Revoke(Revoke { patient, grantee: signer, scope: GrantScope::Sensitive, new_chart: None }),
            None,
        ),
        // What the portal's other screens send: delegates, care teams, legal holds, custody and recovery.
        body(10, TxKind::LegalHold(LegalHold { patient, record: Some(record), hold: true }), None),
        body(11, TxKind::LegalHold(LegalHold { patient, record: None, hold: false }), None),
        body(
            12,
            TxKind::Delegate(Delegate {
                patient,
                delegate: signer,
                appoint: true,
                chart_epoch: Some(2),
                new_chart: None,
            }),
            Some(seed(26)),
        ),
        body(
            13,
            TxKind::Delegate(Delegate {
                patient,
                delegate: signer,
                appoint: false,
                chart_epoch: None,
                new_chart: Some(NewChartEpoch { public_key: xwing.clone(), recipients: vec![patient] }),
            }),
            Some(seed(27)),
        ),
        body(
            14,
            TxKind::TeamCreate(TeamCreate { team, public_key: xwing.clone(), members: vec![patient, signer] }),
            Some(seed(28)),
        ),
        body(15, TxKind::TeamAdd(TeamAdd { team, member: signer }), Some(seed(29))),
        body(16, TxKind::TeamRemove(TeamRemove { team, member: signer, public_key: x25519.clone() }), Some(seed(30))),
        body(
            17,
            TxKind::RotateKeys(RotateKeys {
                signing_key: next_signing,
                encryption_key: xwing.clone(),
                reason: KeyChange::Claim { proof: [0x5a; 16] },
                new_chart: Some(NewChartEpoch { public_key: x25519.clone(), recipients: vec![signer, team] }),
            }),
            Some(seed(31)),
        ),
        body(
            18,
            TxKind::RotateKeys(RotateKeys {
                signing_key: next_signing,
                encryption_key: x25519.clone(),
                reason: KeyChange::RecoveryCode,
                new_chart: None,
            }),
            None,
        ),
        body(19, TxKind::CustodyRelease(CustodyRelease { member: patient, code_hash: Digest::new(seed(32)) }), None),
        body(
            20,
            TxKind::Recovery(Recovery {
                member: patient,
                action: RecoveryAction::Request { signing_key: next_signing, encryption_key: xwing },
            }),
            None,
        ),
        body(21, TxKind::Recovery(Recovery { member: patient, action: RecoveryAction::Complete }), None),
        body(22, TxKind::Recovery(Recovery { member: patient, action: RecoveryAction::Cancel }), None),
    ]
}

fn write_vectors() -> Value {
    let chain_id = ChainId::new(seed(1));
    let signer_key = SigningKey::from_bytes(&seed(2));
    let signer = MemberId::new(seed(3)[..16].try_into().unwrap());

    let signing: Vec<Value> = [(b"medledger/tx/v1".as_slice(), b"".as_slice()), (b"", b"abc"), (b"ns", &[7u8; 300])]
        .iter()
        .map(|(namespace, message)| {
            json!({
                "seed": h(&seed(2)),
                "public_key": h(signer_key.verifying_key().as_bytes()),
                "namespace": h(namespace),
                "message": h(message),
                "signature": h(signer_key.sign(namespace, message).as_bytes()),
            })
        })
        .collect();

    let subjects = [
        (KeySubject::Record { record: RecordId::new([9; 16]), version: 2 }, KeyHolder::Member { member: signer }),
        (KeySubject::Chart { patient: signer, epoch: 3 }, KeyHolder::Team { team: MemberId::new([4; 16]), epoch: 1 }),
        (KeySubject::Note { id: [5; 16] }, KeyHolder::Chart { patient: MemberId::new([6; 16]), epoch: 0 }),
    ];
    let mut wraps = Vec::new();
    for (n, suite) in [(10u8, KemSuite::XWing), (11, KemSuite::X25519)] {
        let key = DecryptionKey::from_bytes(suite, &seed(n)).unwrap();
        for (i, (subject, holder)) in subjects.iter().enumerate() {
            let secret = &seed(30 + i as u8)[..[32, 32, 17][i]];
            let ctx = subject.wrap_context(chain_id, *holder);
            let envelope = wrap::seal(key.encryption_key(), secret, &ctx).unwrap();
            wraps.push(json!({
                "suite": suite.id(),
                "secret_key": h(&key.to_bytes()),
                "public_key": h(&key.encryption_key().bytes),
                "chain_id": h(chain_id.as_bytes()),
                "subject": serde_json::to_value(subject).unwrap(),
                "holder": serde_json::to_value(holder).unwrap(),
                "info": h(&ctx.info(suite)),
                "aad": h(ctx.aad()),
                "envelope": h(&encode(&envelope)),
                "secret": h(secret),
            }));
        }
    }

    let payloads: Vec<Value> = PAYLOAD_LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let dek = DataKey::from_bytes(&seed(40 + i as u8));
            let record: [u8; 16] = seed(50 + i as u8)[..16].try_into().unwrap();
            let mut ciphertext = Vec::new();
            let sealed =
                payload::encrypt(&dek, &record, 1 + i as u32, plaintext(len).as_slice(), &mut ciphertext).unwrap();
            json!({
                "dek": h(dek.as_bytes()),
                "record": h(&record),
                "version": 1 + i as u32,
                "plaintext_len": len,
                "ciphertext": h(&ciphertext),
                "digest": h(&sealed.digest),
            })
        })
        .collect();

    let requests: Vec<Value> = URLS
        .iter()
        .enumerate()
        .map(|(i, (method, url, body))| {
            let parts = RequestParts::of_url(method, url, body).unwrap();
            let created_ms = 1_796_000_000_000 + i as u64 * 1_000;
            let nonce = format!("nonce-{i}_AZaz09");
            let headers = httpsig::sign(&signer_key, &signer.to_hex(), &parts, created_ms, &nonce);
            json!({
                "seed": h(&seed(2)),
                "keyid": signer.to_hex(),
                "method": method,
                "url": url,
                "body": h(body),
                "created_ms": created_ms,
                "nonce": nonce,
                "headers": headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
            })
        })
        .collect();

    let transactions: Vec<Value> = sample_transactions(chain_id, signer)
        .into_iter()
        .map(|body| {
            let tx = Transaction::sign(body.clone(), &signer_key);
            json!({
                "seed": h(&seed(2)),
                "json": serde_json::to_value(&body).unwrap(),
                "body": h(&encode(&body)),
                "transaction": h(&tx.encode()),
                "id": h(tx.id().as_bytes()),
            })
        })
        .collect();

    let thresholds: Vec<Value> = [(1usize, 1usize), (2, 4), (3, 7)]
        .iter()
        .enumerate()
        .map(|(i, &(t, n))| {
            let secret = threshold::random_secret();
            let (shares, verifier) = threshold::split(&secret, t, n).unwrap();
            let k_env: [u8; 32] = *threshold::random_secret();
            let record: [u8; 16] = seed(60 + i as u8)[..16].try_into().unwrap();
            let dek = threshold::derive_data_key(&k_env, &secret, &record, 2).unwrap();
            json!({
                "secret": h(&*secret),
                "threshold": t,
                "verifier": verifier.to_points().iter().map(|p| h(p)).collect::<Vec<_>>(),
                "shares": shares.iter().map(|s| h(s.as_bytes())).collect::<Vec<_>>(),
                "k_env": h(&k_env),
                "record": h(&record),
                "version": 2,
                "dek": h(dek.as_bytes()),
            })
        })
        .collect();

    // An identity keystore's secret as the CLI lays it out: signing seed, current decryption key,
    // then each earlier key as suite ‖ key.
    let identity = [seed(70).as_slice(), &seed(71), &[KemSuite::X25519.id()], &seed(72)].concat();
    let keystores: Vec<Value> = [("correct horse battery staple", identity.clone()), ("é 🔑 pass", seed(73).to_vec())]
        .iter()
        .map(|(passphrase, secret)| {
            let sealed = medledger_crypto::keystore::seal(passphrase.as_bytes(), secret).unwrap();
            json!({ "passphrase": passphrase, "sealed": h(&sealed), "secret": h(secret) })
        })
        .collect();

    json!({
        "format": "medledger interop vectors v1 (from Rust)",
        "keystores": keystores,
        "threshold": thresholds,
        "signing": signing,
        "wrap": wraps,
        "payload": payloads,
        "httpsig": requests,
        "transactions": transactions,
    })
}

/// Checks a vectors file against this code: every signature verifies (and, for Rust's own file,
/// is reproduced: Ed25519 is deterministic), every envelope opens to its secret, every payload
/// decrypts to its plaintext under its digest, every request passes the node's check, every
/// transaction decodes canonically, is signed by its seed's key and has its id.
fn check_vectors(vectors: &Value, reproduce: bool) {
    let mut checked = 0;
    for v in vectors["signing"].as_array().unwrap() {
        let key = SigningKey::from_bytes(&array(&v["seed"]));
        assert_eq!(h(key.verifying_key().as_bytes()), v["public_key"].as_str().unwrap());
        let (namespace, message) = (unhex(&v["namespace"]), unhex(&v["message"]));
        let signature = medledger_crypto::sign::Signature(array(&v["signature"]));
        key.verifying_key().verify(&namespace, &message, &signature).expect("the signature verifies");
        if reproduce {
            assert_eq!(key.sign(&namespace, &message), signature);
        }
        checked += 1;
    }
    for v in vectors["wrap"].as_array().unwrap() {
        let suite = suite_of(&v["suite"]);
        let key = DecryptionKey::from_bytes(suite, &unhex(&v["secret_key"])).unwrap();
        assert_eq!(h(&key.encryption_key().bytes), v["public_key"].as_str().unwrap(), "the public key of the seed");
        let subject: KeySubject = serde_json::from_value(v["subject"].clone()).unwrap();
        let holder: KeyHolder = serde_json::from_value(v["holder"].clone()).unwrap();
        let ctx = subject.wrap_context(ChainId::new(array(&v["chain_id"])), holder);
        assert_eq!(h(&ctx.info(suite)), v["info"].as_str().unwrap());
        assert_eq!(h(ctx.aad()), v["aad"].as_str().unwrap());
        let envelope: Envelope = decode_canonical(&unhex(&v["envelope"]), 4096).unwrap();
        let opened = wrap::open(&key, &envelope, &ctx).expect("the envelope opens");
        assert_eq!(h(&opened), v["secret"].as_str().unwrap());
        // Bound to its holder: the same envelope does not open for another.
        let other = subject
            .wrap_context(ChainId::new(array(&v["chain_id"])), KeyHolder::Member { member: MemberId::new([0xee; 16]) });
        assert!(wrap::open(&key, &envelope, &other).is_err());
        checked += 1;
    }
    for v in vectors["payload"].as_array().unwrap() {
        let dek = DataKey::from_bytes(&array(&v["dek"]));
        let record: [u8; 16] = array(&v["record"]);
        let version = u32::try_from(v["version"].as_u64().unwrap()).unwrap();
        let ciphertext = unhex(&v["ciphertext"]);
        let mut out = Vec::new();
        payload::decrypt_with_digest(&dek, &record, version, &array(&v["digest"]), ciphertext.as_slice(), &mut out)
            .expect("the payload decrypts under its digest");
        assert_eq!(out, plaintext(v["plaintext_len"].as_u64().unwrap() as usize));
        checked += 1;
    }
    for v in vectors["httpsig"].as_array().unwrap() {
        let key = SigningKey::from_bytes(&array(&v["seed"]));
        let body = unhex(&v["body"]);
        let parts = RequestParts::of_url(v["method"].as_str().unwrap(), v["url"].as_str().unwrap(), &body).unwrap();
        let header =
            |name: &str| v["headers"].as_array().unwrap().iter().find(|p| p[0] == name).and_then(|p| p[1].as_str());
        let created_ms = v["created_ms"].as_u64().unwrap();
        let signed = httpsig::check(
            &parts,
            header("signature-input"),
            header("signature"),
            header("content-digest"),
            created_ms + 500,
        )
        .expect("the request signature is well formed");
        assert!(signed.verify(&key.verifying_key()), "the request signature verifies");
        assert_eq!(signed.keyid, v["keyid"].as_str().unwrap());
        assert_eq!(signed.nonce, v["nonce"].as_str().unwrap());
        if reproduce {
            let made = httpsig::sign(&key, &signed.keyid, &parts, created_ms, &signed.nonce);
            let expected: Vec<Value> = made.iter().map(|(n, v)| json!([n, v])).collect();
            assert_eq!(&Value::Array(expected), &v["headers"]);
        }
        checked += 1;
    }
    for v in vectors["transactions"].as_array().unwrap() {
        let key = SigningKey::from_bytes(&array(&v["seed"]));
        let tx = Transaction::decode(&unhex(&v["transaction"])).expect("the transaction decodes canonically");
        let body: TxBody = serde_json::from_value(v["json"].clone()).unwrap();
        assert_eq!(tx.body, body, "the encoding is of the JSON form");
        assert_eq!(h(&encode(&tx.body)), v["body"].as_str().unwrap());
        assert!(tx.verify_signature(&key.verifying_key()), "signed by the seed's key");
        assert_eq!(h(tx.id().as_bytes()), v["id"].as_str().unwrap());
        checked += 1;
    }
    for v in vectors["threshold"].as_array().unwrap() {
        let points: Vec<[u8; 32]> = v["verifier"].as_array().unwrap().iter().map(array).collect();
        let verifier = threshold::Verifier::from_points(&points).expect("the commitments are points");
        let t = v["threshold"].as_u64().unwrap() as usize;
        assert_eq!(verifier.threshold(), t);
        let shares: Vec<threshold::Share> =
            v["shares"].as_array().unwrap().iter().map(|s| threshold::Share::from_slice(&unhex(s)).unwrap()).collect();
        assert!(shares.len() >= t);
        for share in &shares {
            assert!(verifier.verify(share), "share {} verifies", share.id());
        }
        let mut forged = shares[0].as_bytes().to_vec();
        forged[1] ^= 1;
        assert!(!verifier.verify(&threshold::Share::from_slice(&forged).unwrap()), "an altered share verifies");
        let secret = threshold::combine(&shares[shares.len() - t..]).unwrap();
        assert_eq!(h(&*secret), v["secret"].as_str().unwrap(), "any {t} shares recover the secret");
        let dek = threshold::derive_data_key(&array(&v["k_env"]), &secret, &array(&v["record"]), 2).unwrap();
        assert_eq!(h(dek.as_bytes()), v["dek"].as_str().unwrap());
        checked += 1;
    }
    for v in vectors["keystores"].as_array().unwrap() {
        let passphrase = v["passphrase"].as_str().unwrap().as_bytes();
        let opened = medledger_crypto::keystore::open(passphrase, &unhex(&v["sealed"])).expect("the keystore opens");
        assert_eq!(h(&opened), v["secret"].as_str().unwrap());
        assert!(medledger_crypto::keystore::open(b"wrong", &unhex(&v["sealed"])).is_err());
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} vectors checked");
}

#[test]
fn rust_vectors_are_what_this_code_makes() {
    let path = vectors_dir().join("rust.json");
    if std::env::var_os("MEDLEDGER_WRITE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&write_vectors()).unwrap();
        std::fs::create_dir_all(vectors_dir()).unwrap();
        std::fs::write(&path, text + "\n").unwrap();
    }
    let vectors: Value = serde_json::from_slice(&std::fs::read(&path).expect("portal/vectors/rust.json")).unwrap();
    check_vectors(&vectors, true);
}

#[test]
fn typescript_vectors_open_and_verify_here() {
    let path = vectors_dir().join("ts.json");
    let vectors: Value = serde_json::from_slice(&std::fs::read(&path).expect("portal/vectors/ts.json")).unwrap();
    assert_eq!(vectors["format"], "medledger interop vectors v1 (from TypeScript)");
    check_vectors(&vectors, false);
}
