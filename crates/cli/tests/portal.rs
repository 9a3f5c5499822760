//! The portal's TypeScript client (portal/packages/protocol) against real validator processes, as
//! a second implementation of the read path: a record the CLI wrote is read by the TypeScript
//! code, its RecordAccess signed in TypeScript and committed by every validator, the key path
//! (direct, through the chart key, through a per-record grant) and the validators' released shares
//! opened and the payload decrypted in TypeScript. What the ledger refuses it is refused, and
//! audited, as the CLI is. `scripts/test` builds portal/dist/ before the Rust tests.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Net, start_portal, ts_client, ts_read};
use serde_json::Value;

const PASSPHRASE: &str = "correct horse battery staple";

fn plaintext_of(stdout: &str) -> (Value, Vec<u8>) {
    let read: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let bytes = hex::decode(read["plaintext"].as_str().unwrap()).unwrap();
    (read, bytes)
}

fn trail(net: &Net) -> Vec<Value> {
    net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// DESIGN §11 and issue 16 (browser client library): on four validators with threshold release,
/// what the CLI wrote the TypeScript client reads, for the patient, a chart-wide grantee and a
/// per-record grantee; each read is a committed access in the patient's trail (the TypeScript-
/// signed RecordAccess verified by every validator); someone without a grant, or after a
/// revocation, is refused, the refusal audited, and no byte of the record reaches them.
#[test]
fn the_typescript_client_reads_what_the_cli_wrote_and_is_refused_what_the_ledger_refuses() {
    let net = Net::start_n(4);
    net.cast();
    let marker = "PORTAL-INTEROP-7c1e";
    let observation = serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}], "text": marker},
        "subject": {"reference": format!("Patient/{}", net.id_of("alice"))},
        "valueQuantity": {"value": 6.1, "unit": "%"}
    })
    .to_string();
    let file = net.file("obs.json", observation.as_bytes());
    let record =
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]).trim().to_string();
    let reads = |who: &str| {
        let id = net.id_of(who);
        trail(&net)
            .iter()
            .filter(|e| e["action"]["type"] == "read" && (e["actor"] == id.as_str() || e["actor_name"] == who))
            .count()
    };

    // The patient: the record's key is wrapped for her directly.
    let (code, out, err) = ts_read(&net, "alice", &record);
    assert_eq!(code, 0, "{err}");
    let (read, bytes) = plaintext_of(&out);
    assert_eq!(bytes, observation.as_bytes(), "the CLI's plaintext, byte for byte");
    assert_eq!((read["record"].as_str(), read["version"].as_u64()), (Some(record.as_str()), Some(1)));
    assert_eq!(read["metadata"]["resource_type"], "Observation", "the encrypted metadata opens: {read}");
    assert_eq!(reads("alice"), 1, "the TypeScript read is a committed access in her trail");
    // Every validator committed it: the same block on all four.
    let height = read["height"].as_u64().unwrap();
    for api in &net.apis {
        let (status, block) = common::http_get(api, &format!("/v1/blocks/{height}"));
        assert_eq!(status, 200, "{api}: {block}");
        assert!(block.contains(read["access"].as_str().unwrap()), "{api} holds the access: {block}");
    }

    // A doctor through a chart-wide grant: the chart key, then the chart's envelope of the record.
    let (code, _, err) = ts_read(&net, "drbob", &record);
    assert_eq!(code, 3, "no grant yet: denied ({err})");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains(marker));
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all"]);
    let (code, out, err) = ts_read(&net, "drbob", &record);
    assert_eq!(code, 0, "{err}");
    assert_eq!(plaintext_of(&out).1, observation.as_bytes());
    // A nurse through a per-record grant (the record's key re-wrapped for her).
    net.ok(&["grant", "--as", "alice", "--to", "nina", "--record", &record]);
    let (code, out, err) = ts_read(&net, "nina", &record);
    assert_eq!(code, 0, "{err}");
    assert_eq!(plaintext_of(&out).1, observation.as_bytes());

    // Revoked: refused, and the refusal is an event in the patient's trail.
    net.ok(&["revoke", "--as", "alice", "--from", "drbob", "--all"]);
    let denials_before = trail(&net).iter().filter(|e| e.to_string().contains("denied")).count();
    let (code, out, err) = ts_read(&net, "drbob", &record);
    assert_eq!((code, out.as_str()), (3, ""), "{err}");
    assert!(!err.contains(marker));
    let denials = trail(&net).iter().filter(|e| e.to_string().contains("denied")).count();
    assert_eq!(denials, denials_before + 1, "the refused TypeScript access is audited");
    // Someone who never had a grant: the same.
    let (code, _, _) = ts_read(&net, "drcarol", &record);
    assert_eq!(code, 3);
    // And the CLI still reads what the TypeScript client read.
    let out_file = net.root.path().join("back.json");
    net.ok(&["record", "get", "--as", "nina", &record, "-o", out_file.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out_file).unwrap(), observation.as_bytes());

    // The other way: a record the TypeScript client writes (encrypted, its key dealt to the four
    // validators as verifiable shares, wrapped for the author and the chart key, registered with
    // a TypeScript-made sidecar) is read by the CLI, by the patient and through a chart-wide grant.
    let written_text = format!(
        "{{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{{\"text\":\"{marker} from TypeScript\"}}}}"
    );
    let written_file = net.file("ts.json", written_text.as_bytes());
    let (code, out, err) = ts_client(&net, "alice", &["write", &net.id_of("alice"), written_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let written: Value = serde_json::from_str(out.trim()).unwrap();
    let ts_record = written["record"].as_str().unwrap().to_string();
    let back = net.root.path().join("ts-back.json");
    net.ok(&["record", "get", "--as", "alice", &ts_record, "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), written_text.as_bytes(), "the CLI reads what TypeScript wrote");
    net.ok(&["grant", "--as", "alice", "--to", "drcarol", "--all"]);
    net.ok(&["record", "get", "--as", "drcarol", &ts_record, "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), written_text.as_bytes(), "through the chart key");
    let listed = net.ok(&["--json", "record", "list", "--as", "alice", "--patient", "alice"]);
    assert!(listed.contains(&ts_record), "{listed}");
    let (code, out, err) = ts_read(&net, "alice", &ts_record);
    assert_eq!(code, 0, "{err}");
    assert_eq!(plaintext_of(&out).0["metadata"]["resource_type"], "Observation", "its encrypted metadata: {out}");
    // Someone without write access to the chart is refused, and nothing is registered.
    let (code, _, err) = ts_client(&net, "drbob", &["write", &net.id_of("alice"), written_file.to_str().unwrap()]);
    assert_ne!(code, 0, "drbob may not write into alice's chart: {err}");
    assert_eq!(net.ok(&["--json", "record", "list", "--as", "alice", "--patient", "alice"]).lines().count(), 2);

    // Her trail's receipts, verified by the TypeScript implementation from the genesis (fetched
    // and hashed to the chain id) alone: inclusion of the transaction and its outcome, the chain
    // of headers, a quorum's certificate. A changed byte anywhere fails, as with the CLI's check.
    let receipts = net.root.path().join("receipts");
    net.ok(&["audit", "--as", "alice", "--patient", "alice", "--receipts", receipts.to_str().unwrap()]);
    let mut kinds = std::collections::BTreeSet::new();
    let mut some = None;
    for entry in std::fs::read_dir(&receipts).unwrap() {
        let path = entry.unwrap().path();
        let (code, out, err) = ts_client(&net, "-", &["verify-receipt", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{}: {err}", path.display());
        let checked: Value = serde_json::from_str(out.trim()).unwrap();
        kinds.insert(checked["kind"].as_str().unwrap().to_string());
        some = Some(path);
    }
    for kind in ["register_record", "grant", "record_access", "revoke"] {
        assert!(kinds.contains(kind), "a receipt of a {kind}: {kinds:?}");
    }
    let bytes = std::fs::read(some.unwrap()).unwrap();
    for offset in [bytes.len() - 1, bytes.len() / 2, 40, 100] {
        let mut bad = bytes.clone();
        bad[offset] ^= 0x01;
        let bad = net.file("bad.receipt", &bad);
        let (code, out, _) = ts_client(&net, "-", &["verify-receipt", bad.to_str().unwrap()]);
        assert_eq!(code, 4, "byte {offset} of {} changed, yet: {out}", bytes.len());
    }
}

/// The portal process (`medledger portal`), killed when dropped.
/// Issue 16 (the first stories in a real browser): the portal served by `medledger portal`, in
/// Debian's Chromium driven by playwright-core (portal/e2e/walkthrough.test.ts, node:test): the
/// patient signs in with her key file and passphrase (opened in the browser), reads her record
/// decrypted in the browser at 360 px and by keyboard, signs out (keys wiped); she gives a doctor
/// chart-wide access from the staff directory (the chart key wrapped in the browser); the doctor
/// reads; a nurse without a grant is refused (audited); the patient takes the access back (a new
/// chart key epoch made in the browser) and the doctor is refused; her access timeline shows it
/// all; a wrong passphrase opens nothing; the page has a strict CSP and integrity-pinned script,
/// no serious accessibility violation (axe-core), and no request the browser sent carries
/// plaintext, a key, the passphrase or an alias. The CLI then works on with what the browser made.
#[test]
fn the_portal_in_a_real_browser_reads_records_decrypted_on_the_device() {
    let net = Net::start_n(4);
    net.cast();
    let marker = "PORTAL-BROWSER-5d2a";
    let alice = net.id_of("alice");
    let observation = serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}], "text": format!("HbA1c {marker}")},
        "subject": {"reference": format!("Patient/{alice}")},
        "effectiveDateTime": "2026-11-02T09:30:00Z",
        "valueQuantity": {"value": 6.1, "unit": "%"}
    });
    let file = net.file("obs.json", observation.to_string().as_bytes());
    let record =
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]).trim().to_string();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &admin]);
    let portal = start_portal(&net);
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/portal-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../portal/dist/e2e/walkthrough.test.js");
    assert!(suite.exists(), "{} is missing: run `npm --prefix portal run build`", suite.display());
    let run = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .arg(&suite)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../portal"))
        .env("MEDLEDGER_PORTAL_URL", &portal.url)
        .env("MEDLEDGER_E2E_HOME", &net.home)
        .env("MEDLEDGER_E2E_PATIENT", &alice)
        .env("MEDLEDGER_E2E_RECORD", &record)
        .env("MEDLEDGER_E2E_MARKER", marker)
        .env("MEDLEDGER_E2E_SHOTS", &shots)
        .env("MEDLEDGER_E2E_ADMIN", &net.admin)
        .env("MEDLEDGER_E2E_NURSE", net.id_of("nina"))
        .env("MEDLEDGER_E2E_ORG", net.admin.trim_end_matches("-admin"))
        .env("MEDLEDGER_PASSPHRASE", PASSPHRASE)
        .output()
        .expect("node");
    let report = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the browser tests failed:\n{report}");
    assert!(report.contains("ℹ pass 15") && report.contains("ℹ fail 0"), "{report}");
    // What the browser did is in the patient's trail: her read and drbob's.
    let readers: Vec<String> = trail(&net)
        .iter()
        .filter(|e| e["action"]["type"] == "read")
        .map(|e| e["actor"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(readers.contains(&alice) && readers.contains(&net.id_of("drbob")), "{readers:?}");
    // The browser's grant and revocation are the ledger's: the CLI sees drbob refused, and the
    // chart key epoch the browser made (wrapped for alice there) is the one the CLI now uses.
    let chart: Value =
        serde_json::from_str(&common::api_get(&net, 0, Some("alice"), &format!("/v1/charts/{alice}")).1).unwrap();
    assert_eq!((chart["epoch"].as_u64(), chart["holders"].as_array().map(Vec::len)), (Some(1), Some(0)), "{chart}");
    let never = net.root.path().join("never.json");
    assert_eq!(net.cli(&["record", "get", "--as", "drbob", &record, "-o", never.to_str().unwrap()]).code, 3);
    let note = net.file("note.txt", b"after the browser's revocation");
    let later =
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", note.to_str().unwrap()]).trim().to_string();
    let out = net.root.path().join("later.txt");
    net.ok(&["record", "get", "--as", "alice", &later, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"after the browser's revocation");
}

/// Runs one of the portal's browser suites (`portal/dist/e2e/NAME.test.js`, node:test) with
/// `env`, and returns its report once every one of its `tests` passed.
fn browser_suite(name: &str, tests: usize, env: &[(&str, String)]) -> String {
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../portal/dist/e2e/{name}.test.js"));
    assert!(suite.exists(), "{} is missing: run `npm --prefix portal run build`", suite.display());
    let run = Command::new("node")
        .args(["--test", "--test-reporter=spec"])
        .arg(&suite)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../portal"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("node");
    let report = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the browser tests failed:\n{report}");
    assert!(report.contains(&format!("ℹ pass {tests}")) && report.contains("ℹ fail 0"), "{report}");
    report
}

/// Issue 16, every role's other stories in a real browser (portal/e2e/roles.test.ts) on four
/// validators, then checked with the CLI: a care team a doctor makes in the browser, given a
/// chart by the patient, reads what the doctor writes until a member is removed; a PDF and a
/// sensitive resource uploaded and a new version written in the browser read by the CLI, the
/// sensitive one refused to a chart-wide grantee; a delegate appointed and dismissed; a legal
/// hold stopping an erasure until lifted; the auditor's FHIR AuditEvent export equal to
/// `medledger audit --format fhir`; a custody release and claim; a recovery completed after the
/// network's delay and one cancelled by the member.
#[test]
fn the_portal_covers_every_role_in_a_real_browser() {
    let net = Net::start_n_with(4, &["--recovery-delay", "2s"]);
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &admin]);
    net.ok(&["id", "create", "paul", "--role", "patient", "--as", &admin]);
    let marker = "PORTAL-ROLES-71c3";
    let alice = net.id_of("alice");
    let observation = serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": format!("Ferritin {marker}")},
        "subject": {"reference": format!("Patient/{alice}")},
        "valueQuantity": {"value": 41, "unit": "ng/mL"}
    });
    let file = net.file("obs.json", observation.to_string().as_bytes());
    let record =
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]).trim().to_string();
    // A patient in the organisation's custody, with a record the doctor wrote for her.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = medledger_sdk::Session::open(&net.home, None).unwrap();
    let admin_id = session.home.load_identity(&admin, PASSPHRASE.as_bytes()).unwrap();
    let custody = medledger_sdk::Custody::open(&session.home, &admin_id).unwrap();
    let drbob = rt.block_on(session.resolve(&admin_id, "drbob")).unwrap();
    let kid = rt.block_on(session.enroll_custodial(&admin_id, &custody, &drbob, 1)).unwrap().remove(0).member.to_hex();
    let note = net.file("kid.json", common::OBSERVATION.as_bytes());
    let kid_record =
        net.ok(&["record", "put", "--as", "drbob", "--patient", &kid, note.to_str().unwrap()]).trim().to_string();
    let org = admin.trim_end_matches("-admin").to_string();
    let custody_entry = net.home.join("custody").join(&org).join(format!("{kid}.key"));
    assert!(custody_entry.exists(), "{}", custody_entry.display());
    let ids: serde_json::Map<String, Value> =
        ["alice", "paul", "nina", "drcarol"].iter().map(|a| (a.to_string(), Value::from(net.id_of(a)))).collect();
    let kid_signing_key =
        serde_json::from_str::<Value>(&common::api_get(&net, 0, Some(&admin), &format!("/v1/members/{kid}")).1)
            .unwrap()["signing_key"]
            .clone();

    let portal = start_portal(&net);
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/portal-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    browser_suite(
        "roles",
        8,
        &[
            ("MEDLEDGER_PORTAL_URL", portal.url.clone()),
            ("MEDLEDGER_E2E_HOME", net.home.display().to_string()),
            ("MEDLEDGER_PASSPHRASE", PASSPHRASE.to_string()),
            ("MEDLEDGER_E2E_SHOTS", shots.display().to_string()),
            ("MEDLEDGER_E2E_ADMIN", admin.clone()),
            ("MEDLEDGER_E2E_ORG", org),
            ("MEDLEDGER_E2E_RECORD", record.clone()),
            ("MEDLEDGER_E2E_MARKER", marker.to_string()),
            ("MEDLEDGER_E2E_IDS", Value::Object(ids).to_string()),
            ("MEDLEDGER_E2E_CUSTODY", custody_entry.display().to_string()),
            ("MEDLEDGER_E2E_KID_RECORD", kid_record),
        ],
    );
    let found: Value = serde_json::from_slice(&std::fs::read(shots.join("roles-found.json")).unwrap()).unwrap();
    let found = |k: &str| found[k].as_str().unwrap_or_else(|| panic!("{k} not found by the browser")).to_string();

    // What the browser wrote, the CLI reads: the new version (65), the sensitive resource for the
    // patient only; the PDF was erased once the hold was lifted.
    let out = net.root.path().join("out");
    net.ok(&["record", "get", "--as", "alice", &found("teamRecord"), "-o", out.to_str().unwrap()]);
    let version: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(version["valueQuantity"]["value"], 65, "{version}");
    net.ok(&["record", "get", "--as", "alice", &found("sensitive"), "-o", out.to_str().unwrap()]);
    assert!(String::from_utf8(std::fs::read(&out).unwrap()).unwrap().contains(marker));
    assert_eq!(net.cli(&["record", "get", "--as", "drcarol", &found("sensitive")]).code, 3);
    let gone = net.cli(&["record", "get", "--as", "alice", &found("pdf")]);
    assert!(gone.code != 0 && gone.stderr.contains("erased"), "{}", gone.stderr);
    // The team the browser made is the CLI's too: the doctor lists it without the removed nurse.
    let team: Value =
        serde_json::from_str(&common::api_get(&net, 0, Some("drbob"), &format!("/v1/teams/{}", found("team"))).1)
            .unwrap();
    assert_eq!((team["epoch"].as_u64(), team["members"].as_array().map(Vec::len)), (Some(1), Some(1)), "{team}");

    // The auditor's export is `medledger audit --format fhir`, event for event (the gateway names a
    // refusal in a sentence where the browser gives its code).
    let exported: Vec<Value> = std::fs::read_to_string(shots.join("alice-audit.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let cli: Vec<Value> = net
        .ok(&["audit", "--as", "audrey", "--patient", &alice, "--format", "fhir"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(exported.len() > 20 && cli.len() >= exported.len(), "{} vs {}", exported.len(), cli.len());
    let without_desc = |e: &Value| {
        let mut e = e.clone();
        e.as_object_mut().unwrap().remove("outcomeDesc");
        e
    };
    for (browser, gateway) in exported.iter().zip(&cli) {
        assert_eq!(without_desc(browser), without_desc(gateway));
        assert_eq!(browser.get("outcomeDesc").is_some(), gateway.get("outcomeDesc").is_some());
    }

    // The claim replaced the custody keys; the recovered nurse's old keys sign nothing now.
    let claimed: Value =
        serde_json::from_str(&common::api_get(&net, 0, Some(&admin), &format!("/v1/members/{kid}")).1).unwrap();
    assert_ne!(claimed["signing_key"], kid_signing_key, "new keys, made in the browser");
    assert_ne!(net.cli(&["record", "get", "--as", "nina", &record]).code, 0, "her lost keys are replaced");
    let carol = net.cli(&["record", "get", "--as", "drcarol", &record]);
    assert_eq!(carol.code, 3, "her keys still hers (no grant: refused by policy, not by signature): {}", carol.stderr);
}

/// Issue 16, enrolment by request across the two implementations: keys the TypeScript client
/// makes on the member's device (from a recovery code, the CLI's derivation), sealed in a CLI key
/// file, and a request signed with them, which the CLI's admin approves; the member then works
/// with the CLI on those keys (a patient writes and reads her chart; a doctor is in the staff
/// directory under the name asked for). A CLI-made request is approved by the TypeScript client
/// as the admin. An altered request is refused by both, and changes nothing.
#[test]
fn enrolment_requests_made_in_typescript_are_approved_by_the_cli_and_the_reverse() {
    let net = Net::start();
    net.cast();
    let admin = net.admin.clone();
    // A patient's request, made in TypeScript (with her first chart key, wrapped for her).
    let (code, out, err) = ts_client(&net, "paula", &["request", "patient", "org1"]);
    assert_eq!(code, 0, "{err}");
    let request: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(request["format"], "medledger-enrolment-request/v1");
    // Altered (another role): the CLI refuses it, and nobody is enrolled.
    let mut altered = request.clone();
    altered["enroll"]["role"] = "doctor".into();
    let altered_file = net.file("altered.json", altered.to_string().as_bytes());
    let refused = net.cli(&["id", "approve", "--as", &admin, altered_file.to_str().unwrap()]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    let (code, _, err) = ts_client(&net, &admin, &["approve", altered_file.to_str().unwrap()]);
    assert_ne!(code, 0, "the TypeScript admin refuses it too");
    assert!(err.contains("not signed by the keys it enrols"), "{err}");
    let paula = request["enroll"]["member"].as_str().unwrap().to_string();
    assert_eq!(common::api_get(&net, 0, Some(&admin), &format!("/v1/members/{paula}")).0, 404, "not enrolled");
    // As made: the CLI's admin approves it, and the keys work with the CLI.
    let file = net.file("paula.json", out.trim().as_bytes());
    net.ok(&["id", "approve", "--as", &admin, file.to_str().unwrap()]);
    assert_eq!(net.id_of("paula"), paula, "the CLI opens the key file TypeScript sealed");
    let note = net.file("note.txt", b"my own note");
    let record =
        net.ok(&["record", "put", "--as", "paula", "--patient", &paula, note.to_str().unwrap()]).trim().to_string();
    let back = net.root.path().join("back.txt");
    net.ok(&["record", "get", "--as", "paula", &record, "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), b"my own note");
    // A doctor's, with the name the provider directory shows.
    let (code, out, err) = ts_client(&net, "drtess", &["request", "doctor", "org1", "Dr Tess Ng"]);
    assert_eq!(code, 0, "{err}");
    let file = net.file("tess.json", out.trim().as_bytes());
    net.ok(&["id", "approve", "--as", &admin, file.to_str().unwrap()]);
    let (_, staff) = common::http_get(&net.api, "/v1/staff?role=doctor");
    assert!(staff.contains("Dr Tess Ng"), "{staff}");
    // The reverse: a request the CLI made, approved by the TypeScript client as the admin.
    let request_file = net.root.path().join("carl.json");
    net.ok(&["id", "request", "carl", "--role", "nurse", "--org", "org1", "--out", request_file.to_str().unwrap()]);
    let (code, out, err) = ts_client(&net, &admin, &["approve", request_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let approved: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (approved["member"].as_str(), approved["role"].as_str()),
        (Some(net.id_of("carl").as_str()), Some("nurse"))
    );
    assert_eq!(common::api_get(&net, 0, Some("carl"), &format!("/v1/members/{}", net.id_of("carl"))).0, 200);
}

/// Finding 6 of the security review, for the browser's client: one Byzantine validator answering
/// an access with a forgery of its own (a data key it made, wrapped for the reader, and the digest
/// of a ciphertext it wrote). The TypeScript client checks each bundle against its evidence (the
/// record entry and every envelope proved against a block a quorum certified, as the CLI does):
/// the forgery is refused when the forger is the only validator asked, and the true record is
/// read from the others when it is asked first. Seen failing before that check: the TypeScript
/// client printed the forged content.
#[test]
fn a_byzantine_validator_cannot_hand_the_typescript_client_forged_content() {
    use medledger_types::RecordId;

    let mut net = Net::start_n(4);
    net.cast();
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"true-marker"}}"#;
    let file = net.file("obs.json", text.as_bytes());
    let record = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let record: RecordId = record.trim().parse().unwrap();
    let forged = common::forging_alices_record(&net, record);
    common::put_forger_in_front_of_validator_0(&mut net, &forged);
    let url = format!("http://{forged}");
    let id = record.to_string();

    // Only the forger asked: refused, the forgery never printed.
    let client = net.home.join("client.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&client).unwrap()).unwrap();
    json["nodes"] = serde_json::json!([url]);
    std::fs::write(&client, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let (code, out, err) = ts_read(&net, "alice", &id);
    assert_ne!(code, 0, "stdout: {out}");
    assert!(!out.contains(&hex::encode("FORGED")), "the forgery was printed: {out}");
    assert!(err.contains("not the certified one") || err.contains("evidence"), "{err}");
    // The forger asked first, the honest validators after it: the true record.
    common::ask_forger_first(&net, &url);
    let (code, out, err) = ts_read(&net, "alice", &id);
    assert_eq!(code, 0, "{err}");
    assert_eq!(plaintext_of(&out).1, text.as_bytes());
}
