//! Threshold release (DESIGN §6a) on a 4-validator network (f = 1, threshold 2), real processes
//! over TCP: a record's key needs `k_env` (from an envelope) and `k_thr` (from two validators'
//! shares, released only to the signer of an allowed, committed RecordAccess).

mod common;

use common::{Net, wait_until};
use medledger_crypto::payload;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::threshold::{SHARE_BYTES, Share, combine, derive_data_key};
use medledger_crypto::wrap::{self, DecryptionKey};
use medledger_ledger::threshold::share_context;
use medledger_ledger::{KeyHolder, KeySubject, RecordAccess, TxKind};
use medledger_sdk::{COMMIT_TIMEOUT, Identity, SdkError, Sealed, Session, describe};
use medledger_types::{PurposeOfUse, RecordId, TxId};

const PASS: &[u8] = b"correct horse battery staple";

/// Validator `k`'s share key, as its operator has it (validator.json).
fn share_key(net: &Net, k: usize) -> DecryptionKey {
    let path = net.dir.join(format!("validator-{k}")).join("validator.json");
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let secret = hex::decode(file["share_secret"].as_str().expect("a share key")).unwrap();
    DecryptionKey::from_bytes(KemSuite::XWing, &secret).unwrap()
}

/// Seals a FHIR resource for `patient` as `author` and registers it; returns what the author made.
async fn write(session: &Session, author: &Identity, patient: &Identity, text: &str) -> Sealed {
    let chart = session.record_keys(author, &patient.member).await.unwrap();
    let record = RecordId::new(medledger_crypto::random_bytes());
    let metadata = describe(text.as_bytes()).unwrap();
    let sealed = session.seal_record(author, &chart, record, 1, text.as_bytes(), &metadata).unwrap();
    session.client.put_blob(author, &sealed.digest, sealed.ciphertext.clone()).await.unwrap();
    session.transact(author, sealed.kind.clone(), Some(sealed.sidecar.clone())).await.unwrap();
    sealed
}

/// Every validator's shares of `sealed`'s key halves, opened with that validator's own key (what
/// Byzantine operators would pool): its `k_thr` share and its emergency `k_env` share.
fn operator_shares(net: &Net, session: &Session, sealed: &Sealed) -> Vec<(Share, Share)> {
    let shares = sealed.sidecar.threshold.0.as_ref().expect("threshold shares");
    (0..shares.shares.len())
        .map(|k| {
            let context = share_context(session.chain_id, sealed.record, 1, 0, k as u32);
            let bytes = wrap::open(&share_key(net, k), &shares.shares[k].envelope, &context).unwrap();
            assert_eq!(bytes.len(), 2 * SHARE_BYTES);
            (Share::from_slice(&bytes[..SHARE_BYTES]).unwrap(), Share::from_slice(&bytes[SHARE_BYTES..]).unwrap())
        })
        .collect()
}

/// Whether `k_env` and these shares decrypt `sealed`.
fn opens(sealed: &Sealed, k_env: &[u8; 32], shares: &[Share]) -> bool {
    let k_thr = combine(shares).unwrap();
    let dek = derive_data_key(k_env, &k_thr, sealed.record.as_bytes(), 1).unwrap();
    payload::decrypt(&dek, sealed.record.as_bytes(), 1, &sealed.ciphertext[..], &mut Vec::new()).is_ok()
}

/// Submits a RecordAccess and waits for its commit, allowed or not; returns its id.
async fn access(session: &Session, reader: &Identity, record: RecordId) -> TxId {
    let kind = TxKind::RecordAccess(RecordAccess { record, version: 1, purpose: PurposeOfUse::Treat });
    let id = session.submit_signed(vec![(reader, kind, None)]).await.unwrap().remove(0).unwrap();
    session.client.wait(&id, COMMIT_TIMEOUT).await.unwrap();
    id
}

/// Asks every validator for its share of the access `tx`; how many refused as access denied.
async fn refusals(session: &Session, reader: &Identity, tx: &TxId) -> usize {
    let release = session.release().await.unwrap().unwrap();
    let mut denied = 0;
    for api in release.apis.values() {
        match session.client.access_share(api, reader, tx).await {
            Err(SdkError::Denied(_)) => denied += 1,
            other => panic!("validator {api} did not refuse: {other:?}"),
        }
    }
    denied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_audited_access_no_f_validators_open_a_record_and_f_withheld_do_not_block_reads() {
    let mut net = Net::start_n(4);
    net.cast();
    let session = Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", PASS).unwrap();
    let bob = session.home.load_identity("drbob", PASS).unwrap();
    let release = session.release().await.unwrap().expect("networks release by threshold by default");
    assert_eq!((release.config.threshold, release.config.share_keys.len()), (2, 4));

    let text = r#"{"resourceType":"Basic","code":{"text":"threshold-marker"}}"#;
    let sealed = write(&session, &alice, &alice, text).await;
    let entry = session.client.record(&alice, &sealed.record).await.unwrap();
    assert_eq!(entry.threshold.0.map(|t| (t.epoch, t.threshold)), Some((0, 2)));
    let header = payload::Header::decode(sealed.ciphertext[..payload::HEADER_BYTES].try_into().unwrap()).unwrap();
    assert_eq!(header.suite, medledger_crypto::suite::PayloadSuite::Aes256GcmStream64KThreshold);

    // Someone holding an envelope (here the patient's own) and the ciphertext, with the data of
    // any one validator (f = 1), opens nothing; any two validators' shares do (so the refusal is
    // the threshold's, not a broken test).
    let subject = KeySubject::Record { record: sealed.record, version: 1 };
    let holder = KeyHolder::Member { member: alice.member };
    let envelope = sealed.sidecar.envelope_for(holder, subject).unwrap();
    let k_env = wrap::open(&alice.encryption, envelope, &subject.wrap_context(session.chain_id, holder)).unwrap();
    let k_env: [u8; 32] = k_env[..].try_into().unwrap();
    let pooled = operator_shares(&net, &session, &sealed);
    let shares: Vec<Share> = pooled.iter().map(|(thr, _)| thr.clone()).collect();
    let emergency: Vec<Share> = pooled.iter().map(|(_, env)| env.clone()).collect();
    for k in 0..4 {
        assert!(!opens(&sealed, &k_env, &[shares[k].clone()]), "validator {k} alone opened the record");
        for j in k + 1..4 {
            assert!(opens(&sealed, &k_env, &[shares[k].clone(), shares[j].clone()]), "validators {k},{j}");
            // Without an envelope, even two validators (f + 1) lack k_env: its emergency shares
            // need 2f + 1 = 3.
            assert_ne!(*combine(&[emergency[k].clone(), emergency[j].clone()]).unwrap(), k_env);
        }
    }
    assert_eq!(*combine(&emergency[..3]).unwrap(), k_env, "2f + 1 emergency shares are k_env");
    // The shares alone, without k_env, are not the data key either.
    assert!(!opens(&sealed, &[0u8; 32], &[shares[0].clone(), shares[1].clone()]));
    // A validator's key opens its own share only.
    let other = share_context(session.chain_id, sealed.record, 1, 0, 1);
    assert!(
        wrap::open(&share_key(&net, 0), &sealed.sidecar.threshold.0.as_ref().unwrap().shares[1].envelope, &other)
            .is_err()
    );

    // Through the API: a denied access gets no share from any validator, and it is on the ledger.
    let denied = access(&session, &bob, sealed.record).await;
    assert_eq!(refusals(&session, &bob, &denied).await, 4);
    // Nor does a transaction that is not a RecordAccess (alice's own, allowed, registration).
    let trail = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
    assert!(trail.contains("\"denied\""), "{trail}");

    // Granted, bob reads through the shares of the validators; with one validator down
    // (withholding), two of the other three still release.
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all"]);
    let id = sealed.record.to_string();
    assert_eq!(net.ok(&["record", "get", "--as", "drbob", &id]), text);
    net.kill9_validator(3);
    assert_eq!(net.ok(&["record", "get", "--as", "drbob", &id]), text);
    let metrics = common::http_get(&net.apis[0], "/metrics").1;
    assert!(
        metrics.lines().any(|l| l.starts_with("medledger_shares_released_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_reader_keeps_old_envelopes_but_gets_no_shares() {
    let net = Net::start_n(4);
    net.cast();
    let session = Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", PASS).unwrap();
    let bob = session.home.load_identity("drbob", PASS).unwrap();
    session.release().await.unwrap();

    // bob holds alice's chart key of epoch 0 through an --all grant, and keeps a copy of it.
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all"]);
    let to_bob = session.client.chart_envelope(&bob, &alice.member).await.unwrap();
    let secret =
        wrap::open(&bob.encryption, &to_bob.envelope, &to_bob.subject.wrap_context(session.chain_id, to_bob.holder))
            .unwrap();
    let (suite, key) = secret.split_first().unwrap();
    assert_eq!(*suite, KemSuite::XWing as u8);
    let chart_key = DecryptionKey::from_bytes(KemSuite::XWing, key).unwrap();

    // A record he never reads, written while he could; then alice revokes him.
    let text = r#"{"resourceType":"Basic","code":{"text":"never-read-marker"}}"#;
    let sealed = write(&session, &alice, &alice, text).await;
    net.ok(&["revoke", "--as", "alice", "--from", "drbob", "--all"]);

    // His old chart key still opens the record's envelope (it was wrapped for epoch 0)...
    let subject = KeySubject::Record { record: sealed.record, version: 1 };
    let chart_holder = KeyHolder::Chart { patient: alice.member, epoch: 0 };
    let envelope = sealed.sidecar.envelope_for(chart_holder, subject).unwrap();
    let k_env = wrap::open(&chart_key, envelope, &subject.wrap_context(session.chain_id, chart_holder)).unwrap();
    let k_env: [u8; 32] = k_env[..].try_into().unwrap();
    // ...but his access is denied, every validator refuses its share, and one Byzantine
    // validator's share is not enough.
    let denied = access(&session, &bob, sealed.record).await;
    assert_eq!(refusals(&session, &bob, &denied).await, 4);
    let get = net.cli(&["record", "get", "--as", "drbob", &sealed.record.to_string()]);
    assert_eq!(get.code, 3, "{}", get.stderr);
    let byzantine = operator_shares(&net, &session, &sealed).remove(0).0;
    assert!(!opens(&sealed, &k_env, &[byzantine]));
    // alice, the patient, still reads it.
    assert_eq!(net.ok(&["record", "get", "--as", "alice", &sealed.record.to_string()]), text);

    // An author who wraps one validator's share wrongly (validators cannot tell at write time)
    // does not make the record unreadable: that validator answers 409, the others release.
    let chart = session.record_keys(&alice, &alice.member).await.unwrap();
    let record = RecordId::new(medledger_crypto::random_bytes());
    let text = r#"{"resourceType":"Basic","code":{"text":"miswrapped-marker"}}"#;
    let mut sealed =
        session.seal_record(&alice, &chart, record, 1, text.as_bytes(), &describe(text.as_bytes()).unwrap()).unwrap();
    let release = session.release().await.unwrap().unwrap();
    let wrong = share_context(session.chain_id, record, 1, 0, 1);
    let shares = sealed.sidecar.threshold.0.as_mut().unwrap();
    shares.shares[0].envelope = wrap::seal(&release.config.share_keys[0], &[0u8; 2 * SHARE_BYTES], &wrong).unwrap();
    session.client.put_blob(&alice, &sealed.digest, sealed.ciphertext.clone()).await.unwrap();
    session.transact(&alice, sealed.kind.clone(), Some(sealed.sidecar.clone())).await.unwrap();
    let allowed = access(&session, &alice, record).await;
    match session.client.access_share(&release.apis[&0], &alice, &allowed).await {
        Err(SdkError::Usage(problem)) => assert!(problem.contains("wrapped"), "{problem}"),
        other => panic!("validator 0 released a share it cannot open: {other:?}"),
    }
    assert_eq!(net.ok(&["record", "get", "--as", "alice", &record.to_string()]), text);
}

#[test]
fn a_network_without_threshold_release_keeps_the_direct_suite() {
    let net = Net::start_with(&["--no-threshold"]);
    net.cast();
    let record = net.file("obs.json", br#"{"resourceType":"Basic","code":{"text":"direct"}}"#);
    let id = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", record.to_str().unwrap()]);
    let entry = common::api_get(&net, 0, Some("alice"), &format!("/v1/records/{}", id.trim())).1;
    let entry: serde_json::Value = serde_json::from_str(&entry).unwrap();
    assert!(entry["threshold"].is_null(), "{entry}");
    assert_eq!(net.ok(&["record", "get", "--as", "alice", id.trim()]).as_bytes(), std::fs::read(&record).unwrap());
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net.dir.join("genesis.json")).unwrap()).unwrap();
    assert!(genesis.get("share_keys").is_none());
}

/// Break-glass without any master key: an emergency member who was never given a key reads a
/// patient's record through the validators' emergency shares of `k_env` (3 of 4 here), only
/// after a committed BreakGlass and only for emergency treatment; every step is flagged.
#[test]
fn break_glass_opens_records_never_shared_and_flags_every_use() {
    let net = Net::start_n(4);
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "medic", "--role", "emergency", "--as", &admin, "--display-name", "Medic One"]);
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &admin, "--display-name", "Audrey"]);
    let text = r#"{"resourceType":"AllergyIntolerance","patient":{"reference":"Patient/x"},"code":{"text":"penicillin-marker"}}"#;
    let file = net.file("allergy.json", text.as_bytes());
    let id = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let id = id.trim();

    // Before breaking the glass: denied.
    let early = net.cli(&["record", "get", "--as", "medic", id, "--purpose", "ETREAT"]);
    assert_eq!(early.code, 3, "{}", early.stderr);
    // Wrong role, or no valid reason: refused (the nurse's attempt is on alice's trail).
    let nurse = net.cli(&["break-glass", "--as", "nina", "--patient", "alice", "--reason", "unconscious"]);
    assert_eq!(nurse.code, 3, "{}", nurse.stderr);
    let bogus = net.cli(&["break-glass", "--as", "medic", "--patient", "alice", "--reason", "curiosity"]);
    assert_eq!(bogus.code, 2, "{}", bogus.stderr);
    let too_long =
        net.cli(&["break-glass", "--as", "medic", "--patient", "alice", "--reason", "unconscious", "--for", "25h"]);
    assert_eq!(too_long.code, 2, "{}", too_long.stderr);

    let note = "Found unresponsive in ward 3; checking allergies before sedation.";
    let long = "x".repeat(1025);
    let too_much =
        net.cli(&["break-glass", "--as", "medic", "--patient", "alice", "--reason", "unconscious", "--note", &long]);
    assert_eq!(too_much.code, 2, "{}", too_much.stderr);
    let opened: serde_json::Value = serde_json::from_str(&net.ok(&[
        "--json",
        "break-glass",
        "--as",
        "medic",
        "--patient",
        "alice",
        "--reason",
        "unconscious",
        "--for",
        "1h",
        "--note",
        note,
    ]))
    .unwrap();
    assert!(opened["until"].is_string(), "{opened}");
    let opening: TxId = opened["tx"].as_str().unwrap().parse().unwrap();
    // The note is on the ledger only encrypted, for the patient and the auditors.
    for k in 0..4 {
        let log = std::fs::read(net.dir.join(format!("validator-{k}")).join("data").join("chain.log")).unwrap();
        assert!(!common::contains(&log, b"unresponsive"), "validator {k} keeps the note in the clear");
    }
    // For emergency treatment only.
    let treat = net.cli(&["record", "get", "--as", "medic", id]);
    assert_eq!(treat.code, 3, "{}", treat.stderr);
    assert_eq!(net.ok(&["record", "get", "--as", "medic", id, "--purpose", "ETREAT"]), text);

    // The patient sees it flagged; the auditors' queue has the opening, the attempts and the reads.
    let trail = net.ok(&["audit", "--as", "alice", "--patient", "alice"]);
    assert!(trail.lines().any(|l| l.contains("break-glass (unconscious) until") && l.contains("FLAGGED")), "{trail}");
    assert!(trail.contains(&format!("note: {note}")), "the patient reads the note: {trail}");
    let audited = net.ok(&["audit", "--as", "audrey", "--patient", "alice"]);
    assert!(audited.contains(&format!("note: {note}")), "an auditor reads the note: {audited}");
    // Nobody else gets its key, the clinician who wrote it included.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = Session::open(&net.home, None).unwrap();
    for name in ["medic", "nina", "drbob"] {
        let who = session.home.load_identity(name, PASS).unwrap();
        let got = rt.block_on(session.break_glass_note(&who, &opening));
        assert!(matches!(got, Err(SdkError::Denied(_))), "{name} got the note: {got:?}");
    }
    let alice = session.home.load_identity("alice", PASS).unwrap();
    assert_eq!(rt.block_on(session.break_glass_note(&alice, &opening)).unwrap(), note);
    let queue = net.ok(&["--json", "audit", "--as", "audrey", "--flagged"]);
    let events: Vec<serde_json::Value> = queue.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |actor: &str, kind: &str, decision: &str| {
        events
            .iter()
            .filter(|e| {
                e["actor_name"] == actor && e["action"]["type"] == kind && e["decision"]["decision"] == decision
            })
            .count()
    };
    assert_eq!(count("medic", "break_glass", "allowed"), 1, "{queue}");
    assert_eq!(count("nina", "break_glass", "denied"), 1, "{queue}");
    assert_eq!(count("medic", "read", "allowed"), 1, "{queue}");
    assert_eq!(count("medic", "read", "denied"), 1, "the early emergency read: {queue}");
    assert!(events.iter().all(|e| e["flagged"] == true));
    // Only auditors read the queue.
    let nosy = net.cli(&["audit", "--as", "drbob", "--flagged"]);
    assert_eq!(nosy.code, 3, "{}", nosy.stderr);

    // The FHIR export, checked by an outside parser (fhir.resources R4B AuditEvent).
    let trail = net.ok(&["audit", "--as", "audrey", "--patient", "alice", "--format", "fhir"]);
    let facts = fhir_audit_facts(&trail);
    assert_eq!(facts["count"].as_u64(), Some(trail.lines().count() as u64));
    let has = |field: &str, value: &str| facts[field].as_array().unwrap().iter().any(|v| v == value);
    assert!(has("types", "110127"), "break-glass is DICOM Emergency Override Started: {facts}");
    assert!(has("types", "110110") && has("actions", "R") && has("actions", "C"), "{facts}");
    assert!(has("outcomes", "0") && has("outcomes", "4"), "allowed and denied: {facts}");
    assert!(has("purposes", "ETREAT"), "{facts}");
    let queue = fhir_audit_facts(&net.ok(&["audit", "--as", "audrey", "--flagged", "--format", "fhir"]));
    assert_eq!(queue["count"].as_u64(), Some(events.len() as u64));
}

/// Runs `tests/fhir/audit_events.py` (fhir.resources) on NDJSON AuditEvents; its facts.
fn fhir_audit_facts(ndjson: &str) -> serde_json::Value {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fhir/audit_events.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(ndjson.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{ndjson}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Rotation after a revocation: the record is re-encrypted under fresh keys as its next version,
/// every validator deletes the replaced ciphertext from the store, and the chain still verifies.
#[test]
fn rotate_reencrypts_and_the_validators_delete_the_replaced_ciphertext() {
    let net = Net::start_n(4);
    net.cast();
    let text = r#"{"resourceType":"Basic","code":{"text":"rotate-marker"}}"#;
    let file = net.file("basic.json", text.as_bytes());
    let id = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let id = id.trim();
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all"]);
    assert_eq!(net.ok(&["record", "get", "--as", "drbob", id]), text);
    net.ok(&["revoke", "--as", "alice", "--from", "drbob", "--all"]);
    let entry = |net: &Net| -> serde_json::Value {
        serde_json::from_str(&common::api_get(net, 0, Some("alice"), &format!("/v1/records/{id}")).1).unwrap()
    };
    let before = entry(&net);
    let old = net.blob_dir().join(before["digest"].as_str().unwrap());
    assert!(old.exists());

    // A nurse cannot rotate (she cannot even read it); the patient can.
    assert_eq!(net.cli(&["record", "rotate", "--as", "nina", id]).code, 3);
    let rotated: serde_json::Value =
        serde_json::from_str(&net.ok(&["--json", "record", "rotate", "--as", "alice", id])).unwrap();
    let height = rotated["height"].as_u64().unwrap();
    let after = entry(&net);
    assert_eq!(after["version"], 2);
    assert_ne!(after["digest"], before["digest"]);
    // The validators delete the replaced ciphertext once the rotation is committed.
    wait_until("the replaced ciphertext is deleted from the store", || !old.exists());
    assert!(net.blob_dir().join(after["digest"].as_str().unwrap()).exists());
    assert_eq!(net.ok(&["record", "get", "--as", "alice", id]), text);
    assert_eq!(net.cli(&["record", "get", "--as", "drbob", id]).code, 3);
    // `verify` checks each validator's own chain: wait until every one has the rotation.
    wait_until("every validator has the rotation", || {
        (0..4).all(|k| net.status_of(k)["height"].as_u64() >= Some(height))
    });
    let verify = net.ok(&["verify", "--dir", net.dir.to_str().unwrap()]);
    assert!(verify.contains("ok") || verify.contains("verified"), "{verify}");
}

/// Validator `k`'s share key as its files hold it now: its keyring once it has replaced the
/// genesis key, else `validator.json`.
fn current_share_key(net: &Net, k: usize) -> DecryptionKey {
    let keyring = net.dir.join(format!("validator-{k}")).join("data").join("share-key.json");
    match std::fs::read_to_string(keyring) {
        Ok(text) => {
            let file: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(file["retiring"].is_null(), "validator {k} is still switching keys");
            let secret = hex::decode(file["secret"].as_str().unwrap()).unwrap();
            DecryptionKey::from_bytes(KemSuite::XWing, &secret).unwrap()
        }
        Err(_) => share_key(net, k),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_nothing_that_opens_the_record_and_a_legal_hold_blocks_it() {
    let mut net = Net::start_n(4);
    net.cast();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin.clone()]);
    let session = Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", PASS).unwrap();
    session.release().await.unwrap();
    // A client that fetched the share keys before the erasure, and keeps them.
    let stale = Session::open(&net.home, None).unwrap();
    stale.release().await.unwrap();

    // The record to erase, read by a per-record grantee; and one to keep.
    let text = r#"{"resourceType":"Basic","code":{"text":"erase-marker"}}"#;
    let sealed = write(&session, &alice, &alice, text).await;
    let id = sealed.record.to_string();
    // An allowed access of alice's, committed before the erasure.
    let allowed = access(&session, &alice, sealed.record).await;
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--record", &id]);
    assert_eq!(net.ok(&["record", "get", "--as", "drbob", &id]), text);
    let kept = r#"{"resourceType":"Basic","code":{"text":"kept-marker"}}"#;
    let kept_id = net.ok(&[
        "record",
        "put",
        "--as",
        "alice",
        "--patient",
        "alice",
        net.file("k.json", kept.as_bytes()).to_str().unwrap(),
    ]);
    let kept_id = kept_id.trim().to_string();
    let before = operator_shares(&net, &session, &sealed);
    // Every validator's key files as a backup taken now would hold them (once any key switch
    // still under way has finished: a loaded machine can lag behind the ledger).
    let settled = |net: &Net| {
        (0..4).all(|k| {
            let keyring = net.dir.join(format!("validator-{k}")).join("data").join("share-key.json");
            std::fs::read_to_string(keyring).map_or(true, |t| t.contains("\"retiring\": null"))
        })
    };
    wait_until("no validator is switching share keys", || settled(&net));
    let backups: Vec<(DecryptionKey, Vec<u8>)> = (0..4)
        .map(|k| {
            let vdir = net.dir.join(format!("validator-{k}"));
            let files = [
                std::fs::read(vdir.join("validator.json")).unwrap(),
                std::fs::read(vdir.join("data").join("share-key.json")).unwrap_or_default(),
            ];
            (current_share_key(&net, k), files.concat())
        })
        .collect();

    // A legal hold blocks the erasure until an auditor lifts it; only auditors place one.
    let nurse = net.cli(&["legal-hold", "--as", "nina", "--patient", "alice", "--record", &id]);
    assert_eq!(nurse.code, 3, "{}", nurse.stderr);
    net.ok(&["legal-hold", "--as", "audrey", "--patient", "alice", "--record", &id]);
    let held = net.cli(&["record", "erase", "--as", "alice", &id]);
    assert_eq!(held.code, 3, "{}", held.stderr);
    assert!(held.stderr.contains("legal hold"), "{}", held.stderr);
    let not_hers = net.cli(&["record", "erase", "--as", "drbob", &id]);
    assert_eq!(not_hers.code, 3, "{}", not_hers.stderr);
    net.ok(&["legal-hold", "--as", "audrey", "--patient", "alice", "--record", &id, "--lift"]);
    let erased: serde_json::Value =
        serde_json::from_str(&net.ok(&["--json", "record", "erase", "--as", "alice", &id])).unwrap();
    let height = erased["height"].as_u64().unwrap();

    // Every validator carries the erasure out and replaces its share key (the epoch counts the
    // four replacements); each one's files then hold the new key.
    wait_until("every validator replaced its share key", || {
        (0..4).all(|k| {
            let (status, body) = common::http_get(&net.apis[k], "/v1/threshold");
            let config: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            status == 200 && config["epoch"] == 4
        })
    });
    let release = session.refresh_release().await.unwrap().unwrap();
    assert_eq!(release.config.epoch, 4);
    wait_until("every validator switched to its announced key", || {
        (0..4).all(|k| {
            let keyring = net.dir.join(format!("validator-{k}")).join("data").join("share-key.json");
            std::fs::read_to_string(keyring).is_ok_and(|t| t.contains("\"retiring\": null"))
        })
    });
    // No function of the files from before yields a new key (finding 2 of the security review):
    // not the one-way derivation an earlier design used, and no copy of the new secret.
    for (k, (old, files)) in backups.iter().enumerate() {
        let new = current_share_key(&net, k);
        let derived = medledger_crypto::local::derive_secret(&old.to_bytes(), b"medledger/share-key/next/v1").unwrap();
        let derived = DecryptionKey::from_bytes(KemSuite::XWing, &derived[..]).unwrap();
        assert_ne!(derived.encryption_key(), new.encryption_key(), "validator {k}'s new key derives from its old one");
        assert!(!common::contains(files, hex::encode(&*new.to_bytes()).as_bytes()), "validator {k}");
    }
    for k in 0..4 {
        assert_eq!(current_share_key(&net, k).encryption_key(), &release.config.share_keys[k], "validator {k}");
        let file = std::fs::read_to_string(net.dir.join(format!("validator-{k}")).join("validator.json")).unwrap();
        assert!(!file.contains("share_secret"), "validator {k} still keeps its genesis share key");
    }

    // The ledger keeps the erasure, not the record; no validator releases a share for the
    // access made before; the store keeps no ciphertext of it.
    assert_eq!(common::api_get(&net, 0, Some("alice"), &format!("/v1/records/{id}")).0, 410, "gone: erased");
    for api in release.apis.values() {
        assert!(session.client.access_share(api, &alice, &allowed).await.is_err(), "{api} released a share");
    }
    assert!(!net.blob_dir().join(sealed.digest.to_hex()).exists(), "the ciphertext is still in the store");
    let get = net.cli(&["record", "get", "--as", "alice", &id]);
    assert_ne!(get.code, 0);
    assert!(get.stderr.contains("erased"), "{}", get.stderr);
    let trail = net.ok(&["audit", "--as", "alice", "--patient", "alice"]);
    assert!(trail.contains("erase (1 versions)") && trail.contains("legal hold placed"), "{trail}");

    // Nothing a validator keeps opens the record, even with alice's old keys and copies of the
    // sidecar and the ciphertext taken before the erasure: her chart key still opens k_env...
    let chart = session.client.chart(&alice, &alice.member).await.unwrap();
    assert_eq!(chart.epoch, 0);
    let keys = medledger_sdk::RecordKeys {
        owner: chart.patient,
        chart: Some(chart.clone()),
        teams: vec![],
        sensitive: vec![],
    };
    let to_alice = session.client.chart_envelope(&alice, &alice.member).await.unwrap();
    let secret = wrap::open(
        &alice.encryption,
        &to_alice.envelope,
        &to_alice.subject.wrap_context(session.chain_id, to_alice.holder),
    )
    .unwrap();
    let chart_key = DecryptionKey::from_bytes(KemSuite::XWing, &secret[1..]).unwrap();
    let subject = KeySubject::Record { record: sealed.record, version: 1 };
    let holder = KeyHolder::Chart { patient: alice.member, epoch: 0 };
    let envelope = sealed.sidecar.envelope_for(holder, subject).unwrap();
    let k_env: [u8; 32] =
        wrap::open(&chart_key, envelope, &subject.wrap_context(session.chain_id, holder)).unwrap()[..]
            .try_into()
            .unwrap();
    assert!(opens(&sealed, &k_env, &[before[0].0.clone(), before[1].0.clone()]), "the shares as they were open it");
    // ...but no validator's current key opens its share in the sidecar copy,
    let shares = sealed.sidecar.threshold.0.as_ref().unwrap();
    for k in 0..4 {
        let context = share_context(session.chain_id, sealed.record, 1, 0, k as u32);
        assert!(
            wrap::open(&current_share_key(&net, k), &shares.shares[k].envelope, &context).is_err(),
            "validator {k}"
        );
    }
    // ...no chain log or stored object holds any of the sidecar's bytes, and no validator's
    // database holds the sidecar or a vaulted share (checked with the validators stopped).
    let needles: Vec<Vec<u8>> =
        shares.shares.iter().map(|s| medledger_types::encode(&s.envelope)[..64].to_vec()).collect();
    for k in 0..4 {
        let log = std::fs::read(net.dir.join(format!("validator-{k}")).join("data").join("chain.log")).unwrap();
        assert!(needles.iter().all(|n| !common::contains(&log, n)), "validator {k}'s chain log keeps the sidecar");
    }
    for file in common::files_under(&net.blob_dir()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(needles.iter().all(|n| !common::contains(&bytes, n)), "{} keeps the sidecar", file.display());
    }

    // Life goes on: the kept record (its shares now only in the validators' vaults) still reads,
    // and the erased id cannot be reused.
    assert_eq!(net.ok(&["record", "get", "--as", "alice", &kept_id]), kept);
    let metadata = describe(kept.as_bytes()).unwrap();
    // (A new session: the CLI has used alice's nonces since.)
    let session = Session::open(&net.home, None).unwrap();
    session.release().await.unwrap();
    let reuse = session.seal_record(&alice, &keys, sealed.record, 1, kept.as_bytes(), &metadata).unwrap();
    session.client.put_blob(&alice, &reuse.digest, reuse.ciphertext.clone()).await.unwrap();
    match session.transact(&alice, reuse.kind, Some(reuse.sidecar)).await {
        Err(SdkError::Usage(m)) => assert!(m.contains("erased"), "{m}"),
        other => panic!("an erased id was reused: {other:?}"),
    }
    // A record sealed for the share keys fetched before the rotation is refused; the client
    // fetches the current keys and the record sealed again is written and read.
    let record = RecordId::new(medledger_crypto::random_bytes());
    let old = stale.seal_record(&alice, &keys, record, 1, kept.as_bytes(), &metadata).unwrap();
    assert_eq!(old.sidecar.threshold.0.as_ref().unwrap().epoch, 0);
    stale.client.put_blob(&alice, &old.digest, old.ciphertext.clone()).await.unwrap();
    let refused = stale.transact(&alice, old.kind, Some(old.sidecar)).await.unwrap_err();
    assert!(stale.stale_shares(&refused).await.unwrap(), "{refused}");
    let again = stale.seal_record(&alice, &keys, record, 1, kept.as_bytes(), &metadata).unwrap();
    assert_eq!(again.sidecar.threshold.0.as_ref().unwrap().epoch, 4);
    stale.client.put_blob(&alice, &again.digest, again.ciphertext.clone()).await.unwrap();
    stale.transact(&alice, again.kind, Some(again.sidecar)).await.unwrap();
    let read = stale.get_record(&alice, record, PurposeOfUse::Patrqt).await.unwrap();
    assert_eq!(&read.plaintext[..], kept.as_bytes());

    // A second erasure: every validator replaces its key again (the epoch counts eight).
    let keys_before: Vec<_> = (0..4).map(|k| current_share_key(&net, k).encryption_key().clone()).collect();
    stale.erase(&alice, record).await.unwrap();
    wait_until("every validator replaced its share key again", || {
        (0..4).all(|k| {
            let (status, body) = common::http_get(&net.apis[k], "/v1/threshold");
            let config: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let keyring = net.dir.join(format!("validator-{k}")).join("data").join("share-key.json");
            status == 200
                && config["epoch"] == 8
                && std::fs::read_to_string(keyring).is_ok_and(|t| t.contains("\"retiring\": null"))
        })
    });
    for (k, before) in keys_before.iter().enumerate() {
        assert_ne!(current_share_key(&net, k).encryption_key(), before, "validator {k} kept its key");
    }

    // verify passes on every validator (chain re-executed from purged sidecars; the erased
    // ciphertext gone), after every validator has the erasure.
    wait_until("every validator has the erasure", || {
        (0..4).all(|k| net.status_of(k)["height"].as_u64() >= Some(height))
    });
    let verify = net.ok(&["verify", "--dir", net.dir.to_str().unwrap()]);
    assert_eq!(verify.lines().filter(|l| l.contains("chain ok")).count(), 4, "{verify}");
    for k in 0..4 {
        net.kill9_validator(k);
        let db =
            medledger_store::StateDb::open(&net.dir.join(format!("validator-{k}")).join("data").join("state.redb"))
                .unwrap();
        assert_eq!(db.sidecar(&sealed.sidecar.digest()).unwrap(), None, "validator {k} keeps the sidecar");
        assert_eq!(db.vault_get(&sealed.record, 1).unwrap(), None, "validator {k} keeps its share");
        let kept_record: RecordId = kept_id.parse().unwrap();
        assert!(db.vault_get(&kept_record, 1).unwrap().is_some(), "validator {k} lost a kept share");
    }
}

#[test]
fn a_consortium_sets_its_own_break_glass_limits_at_genesis() {
    let net = Net::start_with(&["--break-glass-max", "1h", "--break-glass-per-day", "1"]);
    net.cast();
    let genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net.dir.join("genesis.json")).unwrap()).unwrap();
    assert_eq!(genesis["policy"]["break_glass_max_ms"], 3_600_000);
    let open = |window: &str| {
        net.cli(&["break-glass", "--as", "drbob", "--patient", "alice", "--reason", "unconscious", "--for", window])
    };
    assert_eq!(open("2h").code, 2, "over the network's window");
    assert_eq!(open("1h").code, 0);
    let again = open("30m");
    assert_eq!(again.code, 3, "over the network's rate: {}", again.stderr);
    assert!(again.stderr.contains("too many break-glass"), "{}", again.stderr);
    // Limits out of range make no network.
    let dir = net.dir.parent().unwrap().join("bad-limits");
    let bad = net.cli(&["init", "--dir", dir.to_str().unwrap(), "--validators", "1", "--break-glass-max", "8d"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(!dir.join("genesis.json").exists());
}

/// Verifiable receipts (issue 6): every event of a trail comes with a receipt that a patient checks
/// offline from the genesis file alone, with every validator stopped; any changed byte fails it, so
/// does another network's genesis; a receipt is for the transaction's signer or a reader of the
/// trail that holds it, nobody else.
#[test]
fn receipts_prove_audit_events_offline_and_any_changed_byte_fails() {
    let mut net = Net::start_n(4);
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &admin, "--display-name", "Audrey"]);
    let file = net.file("obs.json", common::OBSERVATION.as_bytes());
    let id = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let id = id.trim();
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--record", id]);
    net.ok(&["record", "get", "--as", "drbob", id]);
    assert_eq!(net.cli(&["record", "get", "--as", "nina", id]).code, 3);

    let events: Vec<serde_json::Value> = net
        .ok(&["--json", "audit", "--as", "alice", "--patient", "alice"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tx_of = |actor: &str, action: &str, decision: &str| -> TxId {
        let event = events
            .iter()
            .find(|e| {
                e["actor_name"] == actor && e["action"]["type"] == action && e["decision"]["decision"] == decision
            })
            .unwrap_or_else(|| panic!("no {action} {decision} by {actor} in {events:?}"));
        event["tx"].as_str().unwrap().parse().unwrap()
    };
    let read = tx_of("drbob", "read", "allowed");
    let (denied, grant) = (tx_of("nina", "read", "denied"), tx_of("alice", "grant", "allowed"));

    // Who gets a receipt: the signer; readers of the trail holding the event; nobody else.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = Session::open(&net.home, None).unwrap();
    let who = |name: &str| session.home.load_identity(name, PASS).unwrap();
    let (alice, drbob, drcarol, nina, audrey) =
        (who("alice"), who("drbob"), who("drcarol"), who("nina"), who("audrey"));
    let get = |me: &Identity, tx: &TxId, patient: Option<&Identity>| {
        rt.block_on(session.client.receipt(me, tx, patient.map(|p| &p.member)))
    };
    let own = get(&drbob, &read, None);
    assert!(own.is_ok(), "the signer: {own:?}");
    let audited = get(&audrey, &read, Some(&alice));
    assert!(audited.is_ok(), "an auditor, for alice's trail: {audited:?}");
    for (name, me) in [("drcarol", &drcarol), ("nina", &nina)] {
        let got = get(me, &read, Some(&alice));
        assert!(matches!(got, Err(SdkError::Denied(_))), "{name}: {got:?}");
    }
    let no_trail = get(&audrey, &read, None);
    assert!(matches!(no_trail, Err(SdkError::Denied(_))), "{no_trail:?}");
    // drbob's read is not in drcarol's trail (she is not even a patient): no receipt by naming it.
    let elsewhere = get(&drcarol, &read, Some(&drcarol));
    assert!(elsewhere.is_err(), "{elsewhere:?}");

    let dir = net.root.path().join("receipts");
    net.ok(&["audit", "--as", "alice", "--patient", "alice", "--receipts", dir.to_str().unwrap()]);
    let saved = common::files_under(&dir);
    assert_eq!(saved.len(), events.len(), "one receipt per event");

    // Offline: every validator stopped.
    for k in 0..4 {
        net.kill9_validator(k);
    }
    let genesis = net.dir.join("genesis.json");
    let genesis_s = genesis.to_str().unwrap();
    let path = |tx: &TxId| dir.join(format!("{tx}.receipt"));
    let checked = net.ok(&["receipt", "verify", path(&read).to_str().unwrap(), "--genesis", genesis_s]);
    assert!(checked.starts_with("receipt ok: record_access") && checked.contains(": applied"), "{checked}");
    let checked = net.ok(&["--json", "receipt", "verify", path(&denied).to_str().unwrap(), "--genesis", genesis_s]);
    let checked: serde_json::Value = serde_json::from_str(&checked).unwrap();
    assert_eq!(checked["outcome"]["outcome"], "rejected", "{checked}");
    assert_eq!(checked["signer"], serde_json::json!(nina.member), "{checked}");
    let checked = net.ok(&["receipt", "verify", path(&grant).to_str().unwrap(), "--genesis", genesis_s]);
    assert!(checked.starts_with("receipt ok: grant"), "{checked}");
    for file in &saved {
        net.ok(&["receipt", "verify", file.to_str().unwrap(), "--genesis", genesis_s]);
    }

    // Any changed byte fails: each byte flipped in turn, one cut, one added.
    let genesis_v = medledger_ledger::Genesis::from_json(&std::fs::read_to_string(&genesis).unwrap()).unwrap();
    let bytes = std::fs::read(path(&read)).unwrap();
    assert!(medledger_proof::receipt::verify(&bytes, &genesis_v).is_ok());
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut changed = bytes.clone();
            changed[i] ^= bit;
            assert!(
                medledger_proof::receipt::verify(&changed, &genesis_v).is_err(),
                "byte {i} of {} xor {bit:#x} still verifies",
                bytes.len()
            );
        }
    }
    assert!(medledger_proof::receipt::verify(&bytes[..bytes.len() - 1], &genesis_v).is_err());
    assert!(medledger_proof::receipt::verify(&[bytes.as_slice(), &[0]].concat(), &genesis_v).is_err());
    // Through the CLI: exit 4 for a tampered receipt (alice's grant said to be for drcarol).
    let grant_bytes = std::fs::read(path(&grant)).unwrap();
    let (bob, carol) = (drbob.member.as_bytes().to_vec(), drcarol.member.as_bytes().to_vec());
    let at = grant_bytes.windows(16).position(|w| w == bob.as_slice()).expect("the grantee is in the receipt");
    let mut forged = grant_bytes.clone();
    forged[at..at + 16].copy_from_slice(&carol);
    let forged_path = net.file("forged.receipt", &forged);
    let refused = net.cli(&["receipt", "verify", forged_path.to_str().unwrap(), "--genesis", genesis_s]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(refused.stderr.contains("receipt does not verify"), "{}", refused.stderr);
    // Another network's genesis (same shape, other keys) does not accept it.
    let other = net.root.path().join("other");
    let other_home = net.root.path().join("other-home");
    let (other_s, other_home_s) = (other.to_str().unwrap(), other_home.to_str().unwrap());
    net.ok(&["--home", other_home_s, "init", "--dir", other_s, "--validators", "4", "--orgs", "h1,h2,h3,h4"]);
    let refused = net.cli(&[
        "receipt",
        "verify",
        path(&read).to_str().unwrap(),
        "--genesis",
        other.join("genesis.json").to_str().unwrap(),
    ]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
}

/// Delegates (issue 6): a guardian appointed by the patient reads, lists, grants and revokes for
/// her and reads her trail, every such event naming both (also in the FHIR export, checked by an
/// outside parser); staff cannot be appointed; once dismissed the guardian can do none of it and
/// does not hold the chart's next key.
#[test]
fn a_delegate_acts_for_the_patient_until_dismissed() {
    let net = Net::start_n(4);
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "gary", "--role", "patient", "--as", &admin]);
    let file = net.file("obs.json", common::OBSERVATION.as_bytes());
    let id = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let id = id.trim();

    assert_eq!(net.cli(&["record", "get", "--as", "gary", id]).code, 3, "before the appointment");
    assert_eq!(net.cli(&["audit", "--as", "gary", "--patient", "alice"]).code, 3);
    let staff = net.cli(&["delegate", "--as", "alice", "--to", "nina"]);
    assert_eq!(staff.code, 3, "{}", staff.stderr);
    assert!(staff.stderr.contains("not staff"), "{}", staff.stderr);
    net.ok(&["delegate", "--as", "alice", "--to", "gary"]);

    assert_eq!(net.ok(&["record", "get", "--as", "gary", id]), common::OBSERVATION);
    assert!(net.ok(&["record", "list", "--as", "gary", "--patient", "alice"]).contains(id));
    net.ok(&["grant", "--as", "gary", "--patient", "alice", "--to", "drbob", "--all"]);
    assert_eq!(net.ok(&["record", "get", "--as", "drbob", id]), common::OBSERVATION, "granted by the delegate");
    // Another patient cannot act for alice.
    let not_hers = net.cli(&["grant", "--as", "drcarol", "--patient", "alice", "--to", "nina", "--record", id]);
    assert_eq!(not_hers.code, 3, "{}", not_hers.stderr);

    let trail = net.ok(&["audit", "--as", "gary", "--patient", "alice"]);
    let delegated: Vec<&str> = trail.lines().filter(|l| l.contains("gary (patient) as delegate of alice")).collect();
    assert_eq!(delegated.len(), 2, "the read and the grant: {trail}");
    assert!(trail.contains("delegate appointed: gary"), "{trail}");
    let fhir = net.ok(&["audit", "--as", "alice", "--patient", "alice", "--format", "fhir"]);
    let facts = fhir_audit_facts(&fhir);
    let roles: Vec<serde_json::Value> = facts["agent_roles"].as_array().unwrap().clone();
    assert_eq!(roles.iter().filter(|r| **r == serde_json::json!(["AGNT", "PAT"])).count(), 2, "{facts}");

    net.ok(&["revoke", "--as", "gary", "--patient", "alice", "--from", "drbob", "--all"]);
    assert_eq!(net.cli(&["record", "get", "--as", "drbob", id]).code, 3, "revoked by the delegate");

    net.ok(&["delegate", "--as", "alice", "--to", "gary", "--dismiss"]);
    assert_eq!(net.cli(&["record", "get", "--as", "gary", id]).code, 3, "dismissed");
    assert_eq!(net.cli(&["audit", "--as", "gary", "--patient", "alice"]).code, 3);
    let grant = net.cli(&["grant", "--as", "gary", "--patient", "alice", "--to", "drbob", "--record", id]);
    assert_eq!(grant.code, 3, "{}", grant.stderr);
    let again = net.cli(&["delegate", "--as", "alice", "--to", "gary", "--dismiss"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    // The chart moved on: alice holds its new key, gary does not.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", PASS).unwrap();
    let gary = session.home.load_identity("gary", PASS).unwrap();
    let chart = rt.block_on(session.client.chart(&alice, &alice.member)).unwrap();
    assert_eq!(chart.epoch, 2, "a revocation of --all and a dismissal");
    assert!(chart.delegates.is_empty());
    assert!(rt.block_on(session.client.chart_envelope(&alice, &alice.member)).is_ok());
    let held = rt.block_on(session.client.chart_envelope(&gary, &alice.member));
    assert!(matches!(held, Err(SdkError::Denied(_))), "{held:?}");
    assert_eq!(net.ok(&["record", "get", "--as", "alice", id]), common::OBSERVATION);
    // A chart-wide grant made at epoch 2 opens the record of epoch 0: each epoch links back.
    net.ok(&["grant", "--as", "alice", "--to", "drcarol", "--all"]);
    assert_eq!(net.ok(&["record", "get", "--as", "drcarol", id]), common::OBSERVATION);
}

/// Care teams (issue 6) on 4 validators with threshold release: a team granted alice's chart reads
/// records from before and after the grant; a member added later reads them all (through the
/// team's linked keys); a removed member is refused everything by policy and by every validator's
/// share release, and the records written after the removal carry no key they hold.
#[test]
fn a_care_team_reads_until_a_member_is_removed() {
    let net = Net::start_n(4);
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "nora", "--role", "nurse", "--as", &admin]);
    let put = |text: &str| {
        let file = net.file("r.json", text.as_bytes());
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]).trim().to_string()
    };
    let obs = |n: u32| common::OBSERVATION.replace("\"value\":72", &format!("\"value\":{n}"));
    let r1 = put(&obs(61));

    let refused = net.cli(&["team", "create", "ward3", "--as", "nina", "--members", "drbob"]);
    assert_eq!(refused.code, 3, "a nurse does not create a team: {}", refused.stderr);
    let team = net.ok(&["team", "create", "ward3", "--as", "drbob", "--members", "nina"]);
    let team = team.trim();
    assert_eq!(team.len(), 32, "{team}");
    assert_eq!(net.cli(&["record", "get", "--as", "nina", &r1]).code, 3, "before the grant");
    net.ok(&["grant", "--as", "alice", "--to", "ward3", "--all"]);
    let r2 = put(&obs(62));
    assert_eq!(net.ok(&["record", "get", "--as", "nina", &r1]), obs(61), "through the chart key the team holds");
    assert_eq!(net.ok(&["record", "get", "--as", "nina", &r2]), obs(62), "through the team's own key");
    assert_eq!(net.cli(&["record", "get", "--as", "drcarol", &r1]).code, 3, "not in the team");
    let write = net.cli(&["grant", "--as", "alice", "--to", "ward3", "--all", "--write"]);
    assert_eq!(write.code, 3, "{}", write.stderr);

    assert_eq!(net.cli(&["team", "add", "ward3", "--as", "nina", "--member", "nora"]).code, 3, "a nurse does not add");
    net.ok(&["team", "add", "ward3", "--as", "drbob", "--member", "nora"]);
    net.ok(&["team", "remove", "ward3", "--as", "drbob", "--member", "nina"]);
    let r3 = put(&obs(63));
    for (record, text) in [(&r1, obs(61)), (&r2, obs(62)), (&r3, obs(63))] {
        assert_eq!(net.cli(&["record", "get", "--as", "nina", record]).code, 3, "removed");
        assert_eq!(net.ok(&["record", "get", "--as", "nora", record]), text, "added after, reads through the links");
    }
    // Each member's own list of teams: nora's names ward3 at its new epoch, nina's is empty, and
    // nobody lists another's.
    let teams_of =
        |who: &str, of: &str| common::api_get(&net, 0, Some(who), &format!("/v1/members/{}/teams", net.id_of(of)));
    let (status, body) = teams_of("nora", "nora");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, listed[0]["team"].as_str(), listed[0]["epoch"].as_u64()), (200, Some(team), Some(1)), "{body}");
    assert_eq!(teams_of("nina", "nina"), (200, "[]".to_string()));
    assert_eq!(teams_of("nina", "nora").0, 403);
    let listed = net.ok(&["--json", "team", "list", "--as", "drbob"]);
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed["epoch"], 1, "{listed}");
    let mut members: Vec<&str> = listed["members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    members.sort();
    assert_eq!(members, ["drbob", "nora"], "{listed}");

    // No validator releases a share to the removed member; nothing of r3 is wrapped for her keys.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = Session::open(&net.home, None).unwrap();
    let nina = session.home.load_identity("nina", PASS).unwrap();
    let nora = session.home.load_identity("nora", PASS).unwrap();
    let r3: RecordId = r3.parse().unwrap();
    let denied = rt.block_on(access(&session, &nina, r3));
    assert_eq!(rt.block_on(refusals(&session, &nina, &denied)), 4);
    let allowed = rt.block_on(access(&session, &nora, r3));
    let bundle = rt.block_on(session.client.access_bundle(&nora, &allowed)).unwrap();
    let team: medledger_types::MemberId = team.parse().unwrap();
    let subject = KeySubject::Record { record: r3, version: 1 };
    let to_record: Vec<KeyHolder> =
        bundle.envelopes.iter().filter(|e| e.subject == subject).map(|e| e.holder).collect();
    assert_eq!(to_record, vec![KeyHolder::Team { team, epoch: 1 }], "r3's key reaches nora through the team's new key");

    // The grant ends: nobody reads through the team.
    net.ok(&["revoke", "--as", "alice", "--from", "ward3", "--all"]);
    assert_eq!(net.cli(&["record", "get", "--as", "nora", &r1]).code, 3);
}

/// The recovery code printed (on stderr) by a command that made or replaced keys.
fn recovery_code(stderr: &str) -> String {
    let line = stderr.lines().skip_while(|l| !l.starts_with("recovery code for")).nth(1);
    line.unwrap_or_else(|| panic!("no recovery code in {stderr}")).trim().to_string()
}

/// Keys of a member's own (issue 6) on 4 validators: rotation, recovery from the code shown at
/// enrolment after the keystore is lost, a custody release and claim with a one-time code, and an
/// admin-approved recovery that waits for the network's delay, which the member can cancel; every
/// step in the member's trail, recoveries in the auditors' queue.
#[test]
fn members_rotate_recover_and_claim_their_keys() {
    let net = Net::start_n_with(4, &["--recovery-delay", "2s"]);
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &admin, "--display-name", "Audrey"]);
    let made = net.cli(&["id", "create", "pat", "--role", "patient", "--as", &admin]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let first = recovery_code(&made.stderr);
    assert!(!made.stdout.contains(&first), "the code is not on stdout");
    let file = net.file("obs.json", common::OBSERVATION.as_bytes());
    let id = net.ok(&["record", "put", "--as", "pat", "--patient", "pat", file.to_str().unwrap()]);
    let id = id.trim();

    // Rotation: new keys, a new code; what was written before still opens.
    let rotated = net.cli(&["id", "rotate", "pat"]);
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    let second = recovery_code(&rotated.stderr);
    assert_ne!(first, second);
    assert_eq!(net.ok(&["record", "get", "--as", "pat", id]), common::OBSERVATION);

    // The device is lost: the keystore goes; the code restores the keys, which are replaced at once.
    std::fs::remove_file(net.home.join("identities").join("pat.key")).unwrap();
    assert_eq!(net.cli(&["record", "get", "--as", "pat", id]).code, 2, "no keys here");
    let stale = net.cli(&["id", "recover", "pat", "--code", &first]);
    assert_eq!(stale.code, 2, "the first code is for keys replaced since: {}", stale.stderr);
    let typo = net.cli(&["id", "recover", "pat", "--code", &second.replacen('a', "b", 1).replacen('0', "1", 1)]);
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    let recovered = net.cli(&["id", "recover", "pat", "--code", &second]);
    assert_eq!(recovered.code, 0, "{}", recovered.stderr);
    assert_eq!(net.ok(&["record", "get", "--as", "pat", id]), common::OBSERVATION, "everything opens again");
    let again = net.cli(&["id", "recover", "pat", "--code", &second]);
    assert_eq!(again.code, 2, "a used code restores nothing now: {}", again.stderr);
    let trail = net.ok(&["audit", "--as", "pat", "--patient", "pat"]);
    assert!(trail.contains("keys rotated") && trail.contains("keys restored from the recovery code"), "{trail}");

    // Custody: a patient enrolled in the organisation's custody, with a record from the doctor.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = Session::open(&net.home, None).unwrap();
    let admin_id = session.home.load_identity(&admin, PASS).unwrap();
    let custody = medledger_sdk::Custody::open(&session.home, &admin_id).unwrap();
    let drbob = rt.block_on(session.resolve(&admin_id, "drbob")).unwrap();
    let kid = rt.block_on(session.enroll_custodial(&admin_id, &custody, &drbob, 1)).unwrap().remove(0);
    let kid_hex = kid.member.to_hex();
    let note = net.file("note.json", common::OBSERVATION.as_bytes());
    let record = net.ok(&["record", "put", "--as", "drbob", "--patient", &kid_hex, note.to_str().unwrap()]);
    let record = record.trim();
    let claim = net.root.path().join("claim.json");
    let released = net.ok(&["custody", "release", &kid_hex, "--as", &admin, "--out", claim.to_str().unwrap()]);
    let code = released.lines().last().unwrap().trim().to_string();
    assert!(!custody.contains(&kid.member), "the custody copy is destroyed");
    // The claim file opens the identity with the code: it is readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&claim).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the claim file is readable by others: {mode:o}");
    let wrong = net.cli(&[
        "id",
        "claim",
        "kid",
        "--file",
        claim.to_str().unwrap(),
        "--code",
        "00000000-00000000-00000000-00000000",
    ]);
    assert_eq!(wrong.code, 3, "{}", wrong.stderr);
    let claimed = net.cli(&["id", "claim", "kid", "--file", claim.to_str().unwrap(), "--code", &code]);
    assert_eq!(claimed.code, 0, "{}", claimed.stderr);
    recovery_code(&claimed.stderr);
    assert_eq!(net.ok(&["record", "get", "--as", "kid", record]), common::OBSERVATION);
    // The organisation's copy of the custody keys signs nothing now.
    let access = TxKind::RecordAccess(RecordAccess {
        record: record.parse().unwrap(),
        version: 1,
        purpose: PurposeOfUse::Patrqt,
    });
    assert!(rt.block_on(session.transact(&kid, access, None)).is_err(), "custody keys after the claim");
    let twice = net.cli(&["id", "claim", "kid2", "--file", claim.to_str().unwrap(), "--code", &code]);
    assert_ne!(twice.code, 0, "one claim");
    // The code (which opens the claim file) is in no validator's files: the claim showed only a
    // one-way proof of it.
    let code_bytes = medledger_sdk::recovery::ClaimCode::parse(&code).unwrap().0;
    for file in common::files_under(&net.dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!common::contains(&bytes, &code_bytes), "the claim code is in {}", file.display());
    }
    // The claim moved the chart to an epoch the custodian's copy of the keys does not open; what
    // is written after it is wrapped for that epoch.
    let kid_now = session.home.load_identity("kid", PASS).unwrap();
    let chart = rt.block_on(session.client.chart_envelope(&kid_now, &kid.member)).unwrap();
    let ctx = chart.subject.wrap_context(session.chain_id, chart.holder);
    assert!(medledger_crypto::wrap::open(&kid.encryption, &chart.envelope, &ctx).is_err(), "the custodian opens it");
    assert!(medledger_crypto::wrap::open(&kid_now.encryption, &chart.envelope, &ctx).is_ok());
    let medledger_ledger::KeySubject::Chart { epoch, .. } = chart.subject else { panic!("a chart key") };
    let later = net.ok(&["record", "put", "--as", "drbob", "--patient", &kid_hex, note.to_str().unwrap()]);
    let later = later.trim();
    let entry = rt.block_on(session.client.record(&kid_now, &later.parse().unwrap())).unwrap();
    assert!(epoch > 0 && entry.chart_epoch == epoch, "written for chart epoch {} of {epoch}", entry.chart_epoch);
    assert_eq!(net.ok(&["record", "get", "--as", "kid", later]), common::OBSERVATION);
    assert_eq!(net.ok(&["record", "get", "--as", "kid", record]), common::OBSERVATION, "earlier records too");
    let kid_trail = net.ok(&["audit", "--as", "kid", "--patient", "kid"]);
    assert!(kid_trail.contains("released from custody") && kid_trail.contains("identity claimed"), "{kid_trail}");

    // Admin-approved recovery of nina's keys: cancelled by nina, then completed after the delay.
    let request = net.root.path().join("request.json");
    let started = net.cli(&["id", "recovery-start", "nina", "--member", "nina", "--out", request.to_str().unwrap()]);
    assert_eq!(started.code, 0, "{}", started.stderr);
    let request_s = request.to_str().unwrap();
    assert_eq!(net.cli(&["id", "recovery-approve", "--as", "drbob", request_s]).code, 3, "an admin approves");
    net.ok(&["id", "recovery-approve", "--as", &admin, request_s]);
    let early = net.cli(&["id", "recovery-finish", "nina"]);
    assert_eq!(early.code, 2, "before the delay: {}", early.stderr);
    net.ok(&["id", "recovery-cancel", "nina"]);
    net.ok(&["id", "recovery-approve", "--as", &admin, request_s]);
    wait_until("the recovery's delay has passed", || net.cli(&["id", "recovery-finish", "nina"]).code == 0);
    assert!(!net.home.join("identities").join("nina.recovery.key").exists());
    let nina_trail = net.ok(&["audit", "--as", "nina", "--patient", "nina"]);
    for event in ["key recovery requested", "key recovery cancelled", "key recovery completed"] {
        assert!(nina_trail.contains(event), "{event}: {nina_trail}");
    }
    let queue = net.ok(&["audit", "--as", "audrey", "--flagged"]);
    assert!(queue.contains("key recovery completed"), "{queue}");
    // nina's new keys sign: her trail is hers to read again after the recovery.
    assert_eq!(net.cli(&["audit", "--as", "nina", "--patient", "alice"]).code, 3, "and nothing more");
}
