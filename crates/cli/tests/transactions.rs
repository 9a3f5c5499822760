//! Replayed and forged transactions, submitted straight to the API.

mod common;

use common::Net;
use medledger_ledger::api::TxStatus;
use medledger_ledger::{RecordAccess, Transaction, TxBody, TxKind, TxOutcome};
use medledger_sdk::{COMMIT_TIMEOUT, Client, Home, SdkError};
use medledger_types::{Nonce, PurposeOfUse, RecordId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_forged_transactions_are_rejected() {
    let net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    net.ok(&["id", "create", "drbob", "--role", "doctor", "--as", "org1-admin"]);
    let home = Home::open(&net.home).unwrap();
    let config = home.config().unwrap();
    let alice = home.load_identity("alice", b"correct horse battery staple").unwrap();
    let bob = home.load_identity("drbob", b"correct horse battery staple").unwrap();
    let client = Client::new(config.nodes.clone()).unwrap();
    let kind =
        TxKind::RecordAccess(RecordAccess { record: RecordId::new([1; 16]), version: 1, purpose: PurposeOfUse::Treat });
    let body = |signer: &medledger_sdk::Identity, nonce: u64| TxBody {
        chain_id: config.chain_id,
        signer: signer.member,
        nonce: Nonce::new(nonce),
        kind: kind.clone(),
        sidecar_digest: None,
    };

    // A valid transaction (about an unknown record: rejected by policy, but committed).
    let nonce = client.next_nonce(&alice, 1).await.unwrap().get();
    let tx = Transaction::sign(body(&alice, nonce), &alice.signing);
    let id = client.submit(tx.clone(), None).await.unwrap();
    let status = client.wait(&id, COMMIT_TIMEOUT).await.unwrap();
    assert!(matches!(status, TxStatus::Committed { outcome: TxOutcome::Rejected { .. }, .. }), "{status:?}");
    let height = net.height();

    // Replay: refused at the door, nothing committed.
    let replay = client.submit(tx, None).await;
    assert!(matches!(&replay, Err(SdkError::Usage(m)) if m.contains("nonce")), "{replay:?}");
    // Forged: alice's body signed with bob's key; a zero signature; another chain.
    let forged = Transaction::sign(body(&alice, nonce + 10), &bob.signing);
    assert!(matches!(client.submit(forged, None).await, Err(SdkError::Usage(m)) if m.contains("signature")));
    let mut zero = Transaction::sign(body(&alice, nonce + 11), &alice.signing);
    zero.signature = medledger_crypto::sign::Signature([0; 64]);
    assert!(client.submit(zero, None).await.is_err());
    let mut other_chain = body(&alice, nonce + 12);
    other_chain.chain_id = medledger_types::ChainId::new([9; 32]);
    let other = Transaction::sign(other_chain, &alice.signing);
    assert!(matches!(client.submit(other, None).await, Err(SdkError::Usage(m)) if m.contains("chain")));
    assert_eq!(net.height(), height, "nothing was committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_and_ciphertext_go_only_to_the_signer_of_an_allowed_access() {
    let net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    net.ok(&["id", "create", "drbob", "--role", "doctor", "--as", "org1-admin"]);
    let session = medledger_sdk::Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", b"correct horse battery staple").unwrap();
    let bob = session.home.load_identity("drbob", b"correct horse battery staple").unwrap();
    let (record, _) = session.put_record(&alice, &alice.contact(), common::OBSERVATION.as_bytes()).await.unwrap();
    let opened = session.get_record(&alice, record, PurposeOfUse::Patrqt).await.unwrap();
    assert_eq!(&opened.plaintext[..], common::OBSERVATION.as_bytes());
    let allowed = opened.access.tx;
    // Alice's allowed access does not serve Bob.
    assert!(matches!(session.client.access_bundle(&bob, &allowed).await, Err(SdkError::Denied(_))));
    assert!(matches!(session.client.access_content(&bob, &allowed).await, Err(SdkError::Denied(_))));
    // Bob's own access is denied by policy, committed, and serves nothing.
    let denied = session.get_record(&bob, record, PurposeOfUse::Treat).await;
    assert!(matches!(denied, Err(SdkError::Denied(_))), "{:?}", denied.err());
    let nonce = session.client.next_nonce(&bob, session.lane()).await.unwrap();
    let kind = TxKind::RecordAccess(RecordAccess { record, version: 1, purpose: PurposeOfUse::Treat });
    let body = TxBody { chain_id: session.chain_id, signer: bob.member, nonce, kind, sidecar_digest: None };
    let id = session.client.submit(Transaction::sign(body, &bob.signing), None).await.unwrap();
    session.client.wait(&id, COMMIT_TIMEOUT).await.unwrap();
    assert!(matches!(session.client.access_bundle(&bob, &id).await, Err(SdkError::Denied(_))));
    assert!(matches!(session.client.access_content(&bob, &id).await, Err(SdkError::Denied(_))));
    // A transaction id that is not a committed access is not found.
    let unknown = medledger_types::TxId::new([7; 32]);
    assert!(session.client.access_content(&alice, &unknown).await.is_err());
    // Alice's access still works for Alice.
    assert!(session.client.access_content(&alice, &allowed).await.is_ok());
}

/// Reads about a patient need an RFC 9421 signature by an enrolled, active identity, and a signed
/// request is answered once: a captured copy is refused.
#[test]
fn signed_requests_cannot_be_replayed_forged_or_skipped() {
    use medledger_ledger::httpsig::{self, RequestParts};
    let net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let home = Home::open(&net.home).unwrap();
    let alice = home.load_identity("alice", b"correct horse battery staple").unwrap();
    let api = &net.apis[0];
    let path = format!("/v1/patients/{}/audit", alice.member.to_hex());
    let url = format!("http://{api}{path}");
    let sign = |key: &medledger_crypto::sign::SigningKey, url: &str, nonce: &str| {
        let parts = RequestParts::of_url("GET", url, b"").unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        httpsig::sign(key, &alice.member.to_hex(), &parts, now, nonce).to_vec()
    };
    let headers = sign(&alice.signing, &url, "first-nonce");

    let (status, body) = common::http_get_with(api, &path, &headers);
    assert_eq!(status, 200, "{body}");
    // The same bytes again: refused as a replay.
    let (status, body) = common::http_get_with(api, &path, &headers);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("replayed"), "{body}");
    // Unsigned.
    let (status, body) = common::http_get(api, &path);
    assert_eq!(status, 401, "{body}");
    // Signed for alice's id by a key that is not hers.
    let stranger = medledger_crypto::sign::SigningKey::generate();
    let (status, body) = common::http_get_with(api, &path, &sign(&stranger, &url, "n2"));
    assert_eq!(status, 401, "{body}");
    // A valid signature moved to another path (another patient's audit).
    let other = format!("/v1/patients/{}/audit", "00".repeat(16));
    let (status, body) = common::http_get_with(api, &other, &sign(&alice.signing, &url, "n3"));
    assert_eq!(status, 401, "{body}");
    // Signed for another node address (the Host it was meant for is covered).
    let elsewhere = format!("http://127.0.0.1:1{path}");
    let (status, body) = common::http_get_with(api, &path, &sign(&alice.signing, &elsewhere, "n4"));
    assert_eq!(status, 401, "{body}");
    // And a fresh signature still works.
    let (status, body) = common::http_get_with(api, &path, &sign(&alice.signing, &url, "n5"));
    assert_eq!(status, 200, "{body}");

    // Listing a patient's records: the patient, and a doctor only once holding a chart-wide grant.
    net.ok(&["id", "create", "drbob", "--role", "doctor", "--as", "org1-admin"]);
    let denied = net.cli(&["record", "list", "--as", "drbob", "--patient", "alice"]);
    assert_eq!(denied.code, 3, "{}", denied.stderr);
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all"]);
    let allowed = net.cli(&["record", "list", "--as", "drbob", "--patient", "alice"]);
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
}

/// A suspended member can do nothing: signed API reads are refused with 403, transactions are
/// rejected and, when they concern a patient, audited as denied; reinstated, they work again.
#[test]
fn a_suspended_member_is_refused_and_every_attempt_is_audited() {
    let net = Net::start();
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    let record = net.file("obs.json", br#"{"resourceType":"Basic","code":{"text":"x"}}"#);
    let id = net.ok(&["record", "put", "--as", "drbob", "--patient", "alice", record.to_str().unwrap()]);
    let id = id.trim();

    // Only an admin of drbob's organisation suspends him.
    let denied = net.cli(&["id", "suspend", "drbob", "--as", "drcarol"]);
    assert_eq!(denied.code, 3, "{}", denied.stderr);
    net.ok(&["id", "suspend", "drbob", "--as", &admin]);

    // Signed API read (the record list): 403, and the CLI's access-denied exit code.
    let list = net.cli(&["record", "list", "--as", "drbob", "--patient", "alice"]);
    assert_eq!(list.code, 3, "{}", list.stderr);
    assert!(list.stderr.contains("suspended"), "{}", list.stderr);
    // A read attempt: rejected on the ledger and audited in alice's trail.
    let get = net.cli(&["record", "get", "--as", "drbob", id]);
    assert_eq!(get.code, 3, "{}", get.stderr);
    let trail = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
    let last: serde_json::Value = serde_json::from_str(trail.lines().last().unwrap()).unwrap();
    assert_eq!(last["actor_name"], "drbob");
    assert_eq!(last["decision"]["decision"], "denied");
    assert_eq!(last["decision"]["reason"], "signer_suspended");

    net.ok(&["id", "reinstate", "drbob", "--as", &admin]);
    // Reinstated, he reads again; `-o` onto a FIFO (as onto /dev/null) writes into it and never
    // replaces it with a file.
    let fifo = net.dir.join("record.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (sent, received) = std::sync::mpsc::channel();
    {
        let fifo = fifo.clone();
        std::thread::spawn(move || sent.send(std::fs::read(fifo).unwrap()));
    }
    let get = net.cli(&["record", "get", "--as", "drbob", id, "-o", fifo.to_str().unwrap()]);
    assert_eq!(get.code, 0, "{}", get.stderr);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced by a file");
    let read = received.recv_timeout(std::time::Duration::from_secs(30)).expect("nothing was written into the FIFO");
    assert_eq!(read, std::fs::read(&record).unwrap());
    // Onto a regular file: replaced whole, private to its owner, no temporary file left beside it.
    let out = net.dir.join("out").join("record.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, b"an older, longer file that must not survive in part").unwrap();
    net.ok(&["record", "get", "--as", "drbob", id, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&record).unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);
    // Onto a directory: a clear error, and the directory is untouched.
    let onto_dir = net.cli(&["record", "get", "--as", "drbob", id, "-o", out.parent().unwrap().to_str().unwrap()]);
    assert_ne!(onto_dir.code, 0);
    assert!(onto_dir.stderr.contains("directory"), "{}", onto_dir.stderr);
    assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);
}

/// The API's per-client rate limit (`api_requests_per_second`, `api_request_burst` in
/// validator.json): over it, 429 problems with Retry-After; the validator keeps serving.
#[test]
fn a_client_over_its_request_rate_gets_429_and_retry_after() {
    let mut net = Net::start();
    net.kill9();
    let config = net.dir.join("validator-0").join("validator.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(file["api_requests_per_second"], 20_000, "the default is written by init");
    file["api_requests_per_second"] = 1.into();
    file["api_request_burst"] = 5.into();
    std::fs::write(&config, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    net.start_node();
    let statuses: Vec<_> = (0..8).map(|_| common::http_request(&net.api, "GET", "/v1/health", &[], b"")).collect();
    let limited: Vec<_> = statuses.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(statuses.iter().filter(|(s, _, _)| *s == 200).count() <= 5, "the burst is 5");
    assert!(!limited.is_empty(), "{:?}", statuses.iter().map(|s| s.0).collect::<Vec<_>>());
    let (_, headers, body) = limited[0];
    let retry_after: u64 = common::header(headers, "retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let problem: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (problem["status"].as_u64(), problem["type"].as_str()),
        (Some(429), Some("urn:medledger:problem:rate-limited"))
    );
    // A client that honours Retry-After is served again.
    std::thread::sleep(std::time::Duration::from_secs(retry_after));
    assert_eq!(common::http_request(&net.api, "GET", "/v1/health", &[], b"").0, 200);
}
