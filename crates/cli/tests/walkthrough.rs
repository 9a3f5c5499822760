//! The README walkthrough against a real validator process, with every denied path.

mod common;

use common::{Net, OBSERVATION, contains, files_under};

#[test]
fn walkthrough_denials_audit_and_confidentiality() {
    let net = Net::start();
    net.cast();
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    let obs = net.file("observation.json", OBSERVATION.as_bytes());
    let record =
        net.ok(&["record", "put", "--as", "drbob", "--patient", "alice", obs.to_str().unwrap()]).trim().to_string();
    assert_eq!(record.len(), 32, "a record id: {record}");

    // Before the grant the nurse is denied; after it she reads the exact bytes.
    let before = net.cli(&["record", "get", "--as", "nina", &record]);
    assert_eq!(before.code, 3, "{}", before.stderr);
    assert!(before.stdout.is_empty());
    net.ok(&["grant", "--as", "alice", "--to", "nina", "--record", &record]);
    assert_eq!(net.ok(&["record", "get", "--as", "nina", &record]), OBSERVATION);
    let out = net.root.path().join("copy.json");
    net.ok(&["record", "get", "--as", "drbob", &record, "-o", out.to_str().unwrap(), "--purpose", "TREAT"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), OBSERVATION);
    assert_eq!(net.ok(&["record", "get", "--as", "alice", &record, "--purpose", "PATRQT"]), OBSERVATION);

    // The second doctor has no relationship: denied, nothing printed.
    let carol = net.cli(&["record", "get", "--as", "drcarol", &record]);
    assert_eq!(carol.code, 3, "{}", carol.stderr);
    assert!(carol.stdout.is_empty());
    assert_eq!(carol.stderr.lines().count(), 1, "one line: {}", carol.stderr);

    // An admin can neither read nor act for a patient.
    assert_eq!(net.cli(&["record", "get", "--as", "org1-admin", &record]).code, 3);
    assert_eq!(net.cli(&["record", "put", "--as", "org1-admin", "--patient", "alice", obs.to_str().unwrap()]).code, 3);
    // A nurse never writes; a doctor without a write grant neither.
    assert_eq!(net.cli(&["record", "put", "--as", "nina", "--patient", "alice", obs.to_str().unwrap()]).code, 3);
    assert_eq!(net.cli(&["record", "put", "--as", "drcarol", "--patient", "alice", obs.to_str().unwrap()]).code, 3);
    // Only the patient grants; --write only to doctors.
    assert_eq!(net.cli(&["grant", "--as", "drbob", "--to", "nina", "--record", &record]).code, 3);
    assert_eq!(net.cli(&["grant", "--as", "alice", "--to", "nina", "--all", "--write"]).code, 3);

    // Revoke: the nurse is denied again.
    net.ok(&["revoke", "--as", "alice", "--from", "nina", "--record", &record]);
    assert_eq!(net.cli(&["record", "get", "--as", "nina", &record]).code, 3);

    // Expired grant: allowed until the expiry, denied after, with its own reason.
    net.ok(&["grant", "--as", "alice", "--to", "drcarol", "--record", &record, "--expires", "4s"]);
    assert_eq!(net.ok(&["record", "get", "--as", "drcarol", &record]), OBSERVATION);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let expired = net.cli(&["record", "get", "--as", "drcarol", &record]);
    assert_eq!(expired.code, 3, "{}", expired.stderr);
    assert!(expired.stderr.contains("expired"), "{}", expired.stderr);

    // The audit trail has every attempt, with who, when, record, purpose and height.
    let audit = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
    let events: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let denied_reads: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["action"]["type"] == "read" && e["decision"]["decision"] == "denied").collect();
    let by = |name: &str| denied_reads.iter().filter(|e| e["actor_name"] == name).count();
    assert_eq!(by("nina"), 2, "nina denied before the grant and after the revoke");
    assert_eq!(by("drcarol"), 2, "drcarol denied without a grant and after expiry");
    assert_eq!(by("org1-admin"), 1, "the admin's attempt");
    for e in &denied_reads {
        assert_eq!(e["action"]["record"], record);
        assert_eq!(e["purpose"], "TREAT");
        assert!(e["height"].as_u64().unwrap() > 0);
        assert!(e["time"].as_str().unwrap().starts_with("20"));
    }
    assert!(events.iter().any(|e| e["decision"]["reason"] == "grant_expired"));
    // Others cannot read alice's trail; an auditor could, the nurse cannot.
    assert_eq!(net.cli(&["audit", "--as", "nina", "--patient", "alice"]).code, 3);

    // Listing shows the record (ledger entries, contents encrypted).
    assert!(net.ok(&["record", "list", "--as", "alice"]).contains(&record));

    // verify passes: chain, certificates, re-execution and the ciphertext.
    let verify = net.ok(&["verify"]);
    assert!(verify.contains("chain ok") && verify.contains("1 ciphertexts ok"), "{verify}");

    // No plaintext marker and no patient alias in the blob store, the ledger's files or the logs.
    let mut files = files_under(&net.dir);
    files.retain(|f| !f.ends_with("genesis.json") && !f.ends_with("validator.json"));
    assert!(files.iter().any(|f| f.ends_with("chain.log")));
    assert!(files.iter().any(|f| f.starts_with(net.blob_dir())));
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(!contains(&bytes, b"MARKER-7f3a9c"), "plaintext in {}", file.display());
        assert!(!contains(&bytes, b"Heart rate"), "plaintext in {}", file.display());
        assert!(!contains(&bytes, b"alice"), "patient alias in {}", file.display());
    }
}

#[test]
fn bad_input_is_a_usage_error_and_changes_nothing() {
    let net = Net::start();
    net.cast();
    let height = net.height();
    let bad_fhir = net
        .file("bad.json", br#"{"resourceType":"Observation","status":"not-a-status","valueQuantity":{"value":"x"}}"#);
    let run = net.cli(&["record", "put", "--as", "alice", "--patient", "alice", bad_fhir.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1);
    let not_json = net.file("broken.json", b"{ not json");
    assert_eq!(net.cli(&["record", "put", "--as", "alice", "--patient", "alice", not_json.to_str().unwrap()]).code, 2);
    assert_eq!(net.cli(&["record", "put", "--as", "alice", "--patient", "nobody", not_json.to_str().unwrap()]).code, 2);
    assert_eq!(net.cli(&["record", "get", "--as", "alice", "not-hex"]).code, 2);
    assert_eq!(
        net.cli(&["record", "get", "--as", "alice", "00112233445566778899aabbccddeeff", "--purpose", "GOSSIP"]).code,
        2
    );
    assert_eq!(net.cli(&["grant", "--as", "alice", "--to", "nina"]).code, 2, "needs --record or --all");
    assert_eq!(net.cli(&["id", "create", "bob", "--role", "wizard", "--as", "org1-admin"]).code, 2);
    assert_eq!(net.cli(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]).code, 2, "alias taken");
    assert_eq!(net.cli(&["frobnicate"]).code, 2);
    let wrong_pass = std::process::Command::new(common::BIN)
        .args(["record", "list", "--as", "alice"])
        .env("MEDLEDGER_HOME", &net.home)
        .output()
        .unwrap();
    // Listing a patient's records is a signed read now: without the passphrase there is no key.
    assert_eq!(wrong_pass.status.code(), Some(2), "{}", String::from_utf8_lossy(&wrong_pass.stderr));
    assert_eq!(net.height(), height, "no transaction was committed by bad input");
}

/// Enrolment by request (issue 16, DESIGN §4): a patient and a nurse make their keys in homes of
/// their own and hand their admin a signed request with public keys only; the admin's home never
/// holds their secrets, nor the patient's chart key. Altered requests, another organisation's
/// admin and a replayed request are refused, and nothing is enrolled by them.
#[test]
fn members_make_their_own_keys_and_an_admin_enrols_them_by_request() {
    let net = Net::start_n(2);
    // The members' own devices: homes with only the network's client configuration.
    let device = |name: &str| {
        let home = net.root.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::copy(net.home.join("client.json"), home.join("client.json")).unwrap();
        home
    };
    let (pat_home, nurse_home) = (device("pat-device"), device("nurse-device"));
    let on = |home: &std::path::Path, args: &[&str]| {
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_medledger"))
            .args(args)
            .env("MEDLEDGER_HOME", home)
            .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
            .env_remove("MEDLEDGER_NODE")
            .output()
            .unwrap();
        (
            run.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&run.stdout).to_string(),
            String::from_utf8_lossy(&run.stderr).to_string(),
        )
    };
    let pat_req = net.root.path().join("pat.request.json");
    let nurse_req = net.root.path().join("nurse.request.json");
    let (code, out, err) = on(
        &pat_home,
        &["id", "request", "pat", "--role", "patient", "--org", "h1", "--out", pat_req.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("written to"), "{out}");
    let (code, _, err) = on(
        &nurse_home,
        &[
            "id",
            "request",
            "nora",
            "--role",
            "nurse",
            "--org",
            "h1",
            "--display-name",
            "Nora N",
            "--out",
            nurse_req.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let request: serde_json::Value = serde_json::from_slice(&std::fs::read(&pat_req).unwrap()).unwrap();
    let member = request["enroll"]["member"].as_str().unwrap().to_string();

    // Altered on the way (another role, another signing key's claim): refused as an integrity
    // failure, nothing enrolled.
    let mut altered = request.clone();
    altered["enroll"]["role"] = serde_json::json!("admin");
    altered["enroll"]["chart_key"] = serde_json::Value::Null;
    altered["sidecar"] = serde_json::Value::Null;
    let altered_path = net.file("altered.json", &serde_json::to_vec(&altered).unwrap());
    let run = net.cli(&["id", "approve", "--as", "h1-admin", altered_path.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let mut resigned = request.clone();
    resigned["enroll"]["display_name"] = serde_json::json!("Pat");
    let resigned_path = net.file("named.json", &serde_json::to_vec(&resigned).unwrap());
    assert_eq!(net.cli(&["id", "approve", "--as", "h1-admin", resigned_path.to_str().unwrap()]).code, 4);
    // Another organisation's admin: denied.
    let run = net.cli(&["id", "approve", "--as", "h2-admin", pat_req.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let garbage = net.file("garbage.json", b"{\"format\": \"something else\"}");
    assert_eq!(net.cli(&["id", "approve", "--as", "h1-admin", garbage.to_str().unwrap()]).code, 2);
    // Not enrolled by any of that: the patient's keys sign for nobody yet.
    let obs = net.file("own.json", OBSERVATION.as_bytes());
    let (code, _, err) = on(&pat_home, &["record", "put", "--as", "pat", "--patient", "pat", obs.to_str().unwrap()]);
    assert_eq!(code, 3, "a request's keys acted before approval: {err}");

    // The admin approves both; the members read and write from their own devices.
    let out = net.ok(&["id", "approve", "--as", "h1-admin", pat_req.to_str().unwrap()]);
    assert!(out.contains(&member), "{out}");
    net.ok(&["id", "approve", "--as", "h1-admin", nurse_req.to_str().unwrap()]);
    // A replayed request enrols nobody twice.
    assert_ne!(net.cli(&["id", "approve", "--as", "h1-admin", pat_req.to_str().unwrap()]).code, 0);
    let (code, out, err) = on(&pat_home, &["record", "put", "--as", "pat", "--patient", "pat", obs.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let record = out.trim().to_string();
    let (code, out, err) = on(&pat_home, &["record", "get", "--as", "pat", &record]);
    assert_eq!((code, out.as_str()), (0, OBSERVATION), "{err}");

    // The admin's home holds neither member's keystore, and no file of the admin's home or of the
    // network holds the patient's or the nurse's secret keys.
    assert!(
        !net.home.join("identities").join("pat.key").exists() && !net.home.join("identities").join("nora.key").exists()
    );
    let home = medledger_sdk::Home::open(&pat_home).unwrap();
    let pat = home.load_identity("pat", b"correct horse battery staple").unwrap();
    let secret = pat.encryption.to_bytes();
    let seed = pat.signing.to_bytes();
    for file in files_under(&net.home).into_iter().chain(files_under(&net.dir)) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !contains(&bytes, &secret[..]) && !contains(&bytes, &seed[..]),
            "{} holds the patient's keys",
            file.display()
        );
    }
}
