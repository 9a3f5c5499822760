//! The outside review's findings (security hardening), each shown on real validator processes:
//! what one writer, one admin or one client could do to a record that is not theirs, and no longer
//! can.

mod common;

use common::{
    Gateway, Net, ask_forger_first, forging_alices_record, forging_validator, put_forger_in_front_of_validator_0,
    wait_until,
};
use medledger_sdk::{Identity, Sealed, Session, describe};
use medledger_types::{Digest, RecordId};

const PASS: &[u8] = b"correct horse battery staple";

/// Seals `text` as `author` for `patient`'s chart (a fresh record id, version 1) and uploads its
/// ciphertext; the caller registers it (or a forgery of it).
async fn seal(session: &Session, author: &Identity, patient: &Identity, text: &str) -> Sealed {
    let chart = session.record_keys(author, &patient.member).await.unwrap();
    let record = RecordId::new(medledger_crypto::random_bytes());
    let metadata = describe(text.as_bytes()).unwrap();
    let sealed = session.seal_record(author, &chart, record, 1, text.as_bytes(), &metadata).unwrap();
    session.client.put_blob(author, &sealed.digest, sealed.ciphertext.clone()).await.unwrap();
    sealed
}

/// The same registration naming another ciphertext digest.
fn naming(kind: &medledger_ledger::TxKind, digest: Digest) -> medledger_ledger::TxKind {
    use medledger_ledger::TxKind;
    match kind.clone() {
        TxKind::RegisterRecord(mut r) => {
            r.digest = digest;
            TxKind::RegisterRecord(r)
        }
        TxKind::AppendVersion(mut r) => {
            r.digest = digest;
            TxKind::AppendVersion(r)
        }
        other => panic!("not a registration: {other:?}"),
    }
}

/// Waits until validator 0's janitor (blobs, sidecars, vault) has handled block `height`.
fn janitor_done(net: &Net, height: u64) {
    let cursor = net.data_dir().join("blob-gc-height");
    wait_until("the janitor handled the block", || {
        std::fs::read_to_string(&cursor).ok().and_then(|s| s.trim().parse::<u64>().ok()).is_some_and(|h| h >= height)
    });
}

/// Finding 1 (high): registration took any digest, and the janitor deleted every digest an erased
/// or rotated record's transactions named, applied or not. A patient could so destroy another
/// patient's ciphertext by registering, rotating or failing to append a record of her own that
/// names it, then erasing that record. Rotation also ignored legal holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writer_can_delete_another_records_ciphertext() {
    let net = Net::start();
    net.cast();
    net.ok(&["id", "create", "mallory", "--role", "patient", "--as", &net.admin]);
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin]);
    let session = Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", PASS).unwrap();
    let mallory = session.home.load_identity("mallory", PASS).unwrap();
    session.release().await.unwrap();

    let text = r#"{"resourceType":"Basic","code":{"text":"victim-marker"}}"#;
    let victim = seal(&session, &alice, &alice, text).await;
    session.transact(&alice, victim.kind.clone(), Some(victim.sidecar.clone())).await.unwrap();
    let id = victim.record.to_string();
    let still_reads = |when: &str| {
        let get = net.cli(&["record", "get", "--as", "alice", &id]);
        assert_eq!((get.code, get.stdout.as_str()), (0, text), "{when}: {}", get.stderr);
        assert!(net.blob_dir().join(victim.digest.to_hex()).exists(), "{when}: the ciphertext left the store");
    };
    still_reads("before");

    // (a) Mallory registers a record of her own naming alice's digest, and erases it.
    let forged = seal(&session, &mallory, &mallory, r#"{"resourceType":"Basic","code":{"text":"m1"}}"#).await;
    let registered =
        session.transact(&mallory, naming(&forged.kind, victim.digest), Some(forged.sidecar.clone())).await;
    match registered {
        Err(medledger_sdk::SdkError::Usage(m)) => assert!(m.contains("digest"), "{m}"),
        other => {
            // The old ledger took it: the erasure then deleted alice's ciphertext.
            let erased = session.erase(&mallory, forged.record).await.unwrap();
            janitor_done(&net, erased.height.get());
            panic!("a registration naming another record's digest was applied: {other:?}");
        }
    }
    still_reads("after a registration naming her digest");

    // (b) Mallory registers a record with its own ciphertext, then rotates it naming alice's
    // digest as the replaced one: refused (the replaced digest must be the record's own).
    let own = seal(&session, &mallory, &mallory, r#"{"resourceType":"Basic","code":{"text":"m2"}}"#).await;
    session.transact(&mallory, own.kind.clone(), Some(own.sidecar.clone())).await.unwrap();
    let next = {
        let chart = session.record_keys(&mallory, &mallory.member).await.unwrap();
        let text = br#"{"resourceType":"Basic","code":{"text":"m2 v2"}}"#;
        let metadata = describe(text).unwrap();
        let sealed = session.seal_record(&mallory, &chart, own.record, 2, text, &metadata).unwrap();
        session.client.put_blob(&mallory, &sealed.digest, sealed.ciphertext.clone()).await.unwrap();
        sealed
    };
    let medledger_ledger::TxKind::AppendVersion(body) = next.kind.clone() else { panic!("an append") };
    let rotate = medledger_ledger::TxKind::Rotate(medledger_ledger::Rotate { next: body, replaces: victim.digest });
    let rotated = session.transact(&mallory, rotate, Some(next.sidecar.clone())).await;
    assert!(rotated.is_err(), "a rotation replacing another record's ciphertext was applied");

    // (c) A rejected AppendVersion of her record (naming alice as its patient) names alice's
    // digest; then she erases her record. The janitor deletes only what the record's applied
    // versions owned, never what a rejected (or rotated-away, as in (b)) transaction named.
    let rejected = match naming(&next.kind, victim.digest) {
        medledger_ledger::TxKind::AppendVersion(mut r) => {
            r.patient = alice.member;
            medledger_ledger::TxKind::AppendVersion(r)
        }
        _ => unreachable!(),
    };
    assert!(session.transact(&mallory, rejected, Some(next.sidecar.clone())).await.is_err());
    let erased = session.erase(&mallory, own.record).await.unwrap();
    janitor_done(&net, erased.height.get());
    assert!(!net.blob_dir().join(own.digest.to_hex()).exists(), "her own ciphertext is gone");
    still_reads("after her record named in a rejected append was erased");

    // (d) A legal hold on alice's record blocks its rotation too (a rotation deletes ciphertext).
    net.ok(&["legal-hold", "--as", "audrey", "--patient", "alice", "--record", &id]);
    let held = net.cli(&["record", "rotate", "--as", "alice", &id]);
    assert_eq!(held.code, 3, "a held record was rotated: {}", held.stderr);
    assert!(held.stderr.contains("legal hold"), "{}", held.stderr);
    still_reads("after a refused rotation");
}

/// Validator processes started by a test, killed when it ends.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn medledger(home: &std::path::Path, args: &[&str]) -> common::Run {
    std::process::Command::new(common::BIN)
        .args(args)
        .env("MEDLEDGER_HOME", home)
        .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
        .env_remove("MEDLEDGER_NODE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run medledger")
        .into()
}

fn medledger_ok(home: &std::path::Path, args: &[&str]) -> String {
    let run = medledger(home, args);
    assert_eq!(run.code, 0, "`medledger {}` failed: {}", args.join(" "), run.stderr);
    run.stdout
}

/// Finding 2 (high): `init` made every validator's keys on one machine. In the genesis ceremony
/// each organisation makes its keys on its own host (here: its own directory and home) and hands
/// over only public keys; genesis is assembled from those; each host installs it beside its own
/// secrets, and the four validators run a network on which records are written and read.
#[test]
fn a_genesis_ceremony_keeps_each_organisations_secrets_on_its_host() {
    let root = tempfile::tempdir().unwrap();
    let blobs = root.path().join("shared-blobs");
    let storage = format!("file://{}", blobs.display());
    let hosts: Vec<(std::path::PathBuf, std::path::PathBuf, String)> = (1..=4)
        .map(|k| {
            (root.path().join(format!("host{k}/net")), root.path().join(format!("host{k}/home")), format!("org{k}"))
        })
        .collect();
    let mut parts = Vec::new();
    let mut secrets = Vec::new();
    let mut apis = Vec::new();
    for (dir, home, org) in &hosts {
        let (api, p2p) = Net::free_addresses();
        let part = root.path().join(format!("{org}.json"));
        medledger_ok(
            home,
            &[
                "genesis",
                "contribute",
                "--dir",
                dir.to_str().unwrap(),
                "--org",
                org,
                "--p2p",
                &p2p,
                "--api",
                &api,
                "--storage",
                &storage,
                "--out",
                part.to_str().unwrap(),
            ],
        );
        let pending: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("validator.pending.json")).unwrap()).unwrap();
        for field in ["signing_seed", "share_secret"] {
            secrets.push(pending[field].as_str().expect("a secret").to_string());
        }
        parts.push(part);
        apis.push(api);
    }
    // Nothing handed over holds a secret of any host.
    for part in &parts {
        let text = std::fs::read_to_string(part).unwrap();
        assert!(secrets.iter().all(|s| !text.contains(s.as_str())), "{} carries a secret", part.display());
    }
    // The coordinator (here org1's home) assembles genesis from the public parts.
    let genesis = root.path().join("genesis.json");
    let mut args = vec!["genesis", "assemble", "--chain-name", "ceremony", "--out", genesis.to_str().unwrap()];
    args.extend(parts.iter().map(|p| p.to_str().unwrap()));
    medledger_ok(&hosts[0].1, &args);
    let text = std::fs::read_to_string(&genesis).unwrap();
    assert!(secrets.iter().all(|s| !text.contains(s.as_str())), "genesis carries a secret");
    // A part with a tampered key is refused (one line, exit 2), and so is a second install.
    let bad = root.path().join("bad.json");
    std::fs::write(&bad, "{\"org\":1}").unwrap();
    let refused = medledger(
        &hosts[0].1,
        &["genesis", "assemble", "--out", root.path().join("g2").to_str().unwrap(), bad.to_str().unwrap()],
    );
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);

    let mut nodes = Processes(Vec::new());
    for (k, (dir, home, _)) in hosts.iter().enumerate() {
        let out = medledger_ok(
            home,
            &["--json", "genesis", "install", "--dir", dir.to_str().unwrap(), "--genesis", genesis.to_str().unwrap()],
        );
        let installed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(installed["validator"], k as u64);
        // Each host holds its own validator's secrets and no other's.
        let mine = std::fs::read_to_string(dir.join(format!("validator-{k}/validator.json"))).unwrap();
        for (j, secret) in secrets.iter().enumerate() {
            assert_eq!(mine.contains(secret.as_str()), j / 2 == k, "host {k} and secret {j}");
        }
        assert!(!dir.join("validator.pending.json").exists());
        let again = medledger(
            home,
            &["genesis", "install", "--dir", dir.to_str().unwrap(), "--genesis", genesis.to_str().unwrap()],
        );
        assert_eq!(again.code, 2, "{}", again.stderr);
        let log = std::fs::File::create(dir.join("node.log")).unwrap();
        nodes.0.push(
            std::process::Command::new(common::BIN)
                .args(["node", "--dir", dir.to_str().unwrap(), "--validator", &k.to_string()])
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }
    for api in &apis {
        wait_until("the validator serves its API", || std::net::TcpStream::connect(api).is_ok());
    }
    // org1's admin (its keys made on host 1 only) enrols a patient there, who writes and reads.
    let home = &hosts[0].1;
    medledger_ok(home, &["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let file = root.path().join("obs.json");
    std::fs::write(&file, r#"{"resourceType":"Basic","code":{"text":"ceremony-marker"}}"#).unwrap();
    let record = medledger_ok(home, &["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let read = medledger_ok(home, &["record", "get", "--as", "alice", record.trim()]);
    assert!(read.contains("ceremony-marker"));
    // Another host's admin is not in this home: its keys never left host 2.
    let other = medledger(home, &["id", "create", "bob", "--role", "patient", "--as", "org2-admin"]);
    assert_ne!(other.code, 0);
}

/// Finding 12: an authorization failure is exit 3 everywhere (revoking a grant on another
/// patient's record answered exit 2, as if mistyped), and a record whose ciphertext has left the
/// store is an integrity failure, exit 4 (it answered exit 2, "ciphertext not found").
#[test]
fn authorization_failures_exit_3_and_a_missing_ciphertext_exits_4() {
    let net = Net::start();
    net.cast();
    net.ok(&["id", "create", "bob", "--role", "patient", "--as", &net.admin]);
    let file = net.file("obs.json", br#"{"resourceType":"Basic","code":{"text":"exit-marker"}}"#);
    let record = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let record = record.trim();
    net.ok(&["grant", "--as", "alice", "--to", "nina", "--record", record]);
    let revoke = net.cli(&["revoke", "--as", "bob", "--from", "nina", "--record", record]);
    assert_eq!(revoke.code, 3, "{}", revoke.stderr);
    assert_eq!(revoke.stderr.lines().count(), 1, "{}", revoke.stderr);
    let grant = net.cli(&["grant", "--as", "bob", "--to", "drbob", "--record", record]);
    assert_eq!(grant.code, 3, "{}", grant.stderr);

    // The ciphertext leaves the store behind the ledger's back.
    let entry: serde_json::Value =
        serde_json::from_str(&common::api_get(&net, 0, Some("alice"), &format!("/v1/records/{record}")).1)
            .unwrap_or_default();
    let digest = entry["digest"].as_str().map(str::to_string).unwrap_or_else(|| {
        // The record entry is a signed read: find the one object in the store instead.
        let files = common::files_under(&net.blob_dir());
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].file_name().unwrap().to_str().unwrap().to_string()
    });
    std::fs::remove_file(net.blob_dir().join(&digest)).unwrap();
    let get = net.cli(&["record", "get", "--as", "alice", record]);
    assert_eq!(get.code, 4, "{}", get.stderr);
    assert!(get.stdout.is_empty());
    assert!(get.stderr.contains("missing"), "{}", get.stderr);
}

/// Finding 5: an admin listed any patient's records (authors, sizes), and an auditor did so
/// unseen. An admin is refused (exit 3, and the attempt is in the patient's trail); an auditor's
/// list is a chart review committed in the patient's trail first.
#[test]
fn admins_list_no_records_and_an_auditors_list_is_audited() {
    let net = Net::start();
    net.cast();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin]);
    let file = net.file("obs.json", br#"{"resourceType":"Basic","code":{"text":"list-marker"}}"#);
    let record = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let admin = net.cli(&["record", "list", "--as", &net.admin, "--patient", "alice"]);
    assert_eq!(admin.code, 3, "an admin listed records: {}", admin.stdout);
    assert!(admin.stdout.is_empty());
    let nurse = net.cli(&["record", "list", "--as", "nina", "--patient", "alice"]);
    assert_eq!(nurse.code, 3, "{}", nurse.stdout);
    let listed = net.ok(&["record", "list", "--as", "audrey", "--patient", "alice"]);
    assert!(listed.contains(record.trim()), "{listed}");
    let trail = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
    let reviews: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["action"]["type"] == "chart_review")
        .collect();
    assert_eq!(reviews.len(), 2, "{trail}");
    assert_eq!(reviews[0]["actor_name"], net.admin.as_str());
    assert_eq!(reviews[0]["decision"]["decision"], "denied");
    assert_eq!(reviews[1]["actor_name"], "audrey");
    assert_eq!(reviews[1]["decision"]["decision"], "allowed");
}

/// Finding 7: a client made the API park a request for 10 s with `x-medledger-min-height:
/// 2^64-1` (any number of them), and the staff directory walked the member table (patients
/// included) 10 000 rows a call, its cursor naming whatever it read last. A height far ahead of
/// the validator is refused at once; the directory reads its own role's index, and its pages and
/// cursors name members of that role only. (The per-signer bound on request nonces is a unit test
/// of `medledger_node::replay`.)
#[test]
fn the_api_bounds_what_one_request_can_make_it_do() {
    let net = Net::start();
    net.cast();
    for k in 0..6 {
        net.ok(&["id", "create", &format!("p{k}"), "--role", "patient", "--as", &net.admin]);
    }
    net.ok(&["id", "create", "drdan", "--role", "doctor", "--as", &net.admin]);
    let far = [("x-medledger-min-height", u64::MAX.to_string())];
    let started = std::time::Instant::now();
    let (status, body) = common::http_get_with(&net.api, "/v1/staff?role=doctor", &far);
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "parked for {:?}", started.elapsed());
    // A height a few blocks ahead is still waited for (read-your-writes across validators).
    let near = [("x-medledger-min-height", (net.height() + 1).to_string())];
    let (status, _) = common::http_get_with(&net.api, "/v1/staff?role=doctor", &near);
    assert!(status == 200 || status == 503);

    let doctors: std::collections::BTreeSet<String> = ["drbob", "drcarol", "drdan"]
        .iter()
        .map(|alias| {
            let contact = net.ok(&["--json", "id", "list"]);
            let line = contact.lines().find(|l| l.contains(&format!("\"{alias}\""))).unwrap().to_string();
            serde_json::from_str::<serde_json::Value>(&line).unwrap()["member"].as_str().unwrap().to_string()
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let query = match &after {
            Some(a) => format!("/v1/staff?role=doctor&limit=1&after={a}"),
            None => "/v1/staff?role=doctor&limit=1".to_string(),
        };
        let (status, body) = common::http_get(&net.api, &query);
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        for m in page["members"].as_array().unwrap() {
            assert_eq!(m["role"], "doctor");
            seen.insert(m["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => {
                assert!(doctors.contains(next), "the cursor names a non-doctor");
                after = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!(seen, doctors);
    let (_, body) = common::http_get(&net.api, "/v1/staff?role=patient");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["members"], serde_json::json!([]));
}

/// A one-validator network where alice granted drbob `--all --write` and he wrote her an
/// Observation carrying `marker`; returns its record id.
fn drbob_wrote_an_observation(marker: &str) -> (Net, String) {
    let net = Net::start();
    net.cast();
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    let obs = format!(r#"{{"resourceType":"Observation","status":"final","code":{{"text":"{marker}"}}}}"#);
    let file = net.file("obs.json", obs.as_bytes());
    let record = net.ok(&["record", "put", "--as", "drbob", "--patient", "alice", file.to_str().unwrap()]);
    let record = record.trim().to_string();
    (net, record)
}

/// Finding 10: the gateway and the CLI acting as one member took each other's nonces (the
/// gateway's next request failed with 422 "nonce already used"; an import beside a polling
/// gateway lost hundreds of resources). Each client signs in a nonce lane of its own, and a
/// nonce conflict is retried, never reported: CLI reads and an import while a client polls the
/// gateway, zero failures.
#[test]
fn a_members_clients_running_at_once_never_fail_on_each_others_nonces() {
    let (net, record) = drbob_wrote_an_observation("lane-marker");
    // An EHR export to import meanwhile: one patient and 40 observations (NDJSON).
    let export = net.root.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    let mut ndjson = String::from(
        r#"{"resourceType":"Patient","id":"p1","identifier":[{"system":"urn:mrn","value":"1"}],"gender":"female"}"#,
    );
    for k in 0..40 {
        ndjson.push('\n');
        ndjson.push_str(&format!(
            r#"{{"resourceType":"Observation","id":"o{k}","status":"final","code":{{"text":"import {k}"}},"subject":{{"reference":"Patient/p1"}}}}"#
        ));
    }
    std::fs::write(export.join("data.ndjson"), ndjson).unwrap();

    let gateway = Gateway::start(&net, "drbob", &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (stop, addr, path) = (stop.clone(), gateway.addr.clone(), format!("/Observation/{record}"));
        let bearer = format!("Bearer {}", gateway.token);
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || statuses.len() < 5 {
                let (status, _, body) = common::http_request(&addr, "GET", &path, &[("Authorization", &bearer)], &[]);
                statuses.push((status, if status == 200 { String::new() } else { body }));
            }
            statuses
        })
    };
    for _ in 0..4 {
        assert!(net.ok(&["record", "get", "--as", "drbob", &record]).contains("lane-marker"));
    }
    let summary: serde_json::Value = serde_json::from_str(
        net.ok(&["--json", "import", "--as", "drbob", export.to_str().unwrap()]).lines().last().unwrap(),
    )
    .unwrap();
    for _ in 0..4 {
        assert!(net.ok(&["record", "get", "--as", "drbob", &record]).contains("lane-marker"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = poller.join().unwrap();
    let failed: Vec<&(u16, String)> = statuses.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "{} of {} gateway reads failed: {failed:?}", failed.len(), statuses.len());
    assert_eq!(summary["resources_failed"], 0, "{summary}");
    assert_eq!(summary["resources_written"], 41, "{summary}");
}

/// Finding 13: `audit --patient P` and `record list --patient P` printed exactly the first 1,000
/// entries, exit 0, with no sign that more existed. Both page through everything now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trails_and_record_lists_page_through_everything() {
    let net = Net::start();
    net.cast();
    let session = Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", PASS).unwrap();
    session.release().await.unwrap();
    // 1,100 records (registered without uploading: a list reads the ledger only).
    let chart = session.record_keys(&alice, &alice.member).await.unwrap();
    let text = br#"{"resourceType":"Basic","code":{"text":"page-marker"}}"#;
    let metadata = describe(text).unwrap();
    let mut items = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..1_100 {
        let record = RecordId::new(medledger_crypto::random_bytes());
        let sealed = session.seal_record(&alice, &chart, record, 1, text, &metadata).unwrap();
        ids.insert(record.to_string());
        items.push((&alice, sealed.kind, Some(sealed.sidecar)));
    }
    let results = session.transact_batch(items).await.unwrap();
    let failed: Vec<String> = results.iter().filter_map(|r| r.as_ref().err()).map(|e| e.to_string()).collect();
    assert!(failed.is_empty(), "{} of 1,100 registrations failed, e.g. {:?}", failed.len(), failed.first());
    let listed = net.ok(&["--json", "record", "list", "--as", "alice", "--patient", "alice"]);
    let listed: std::collections::BTreeSet<String> = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids, "the list stops early or repeats");
    // The trail: 1,100 writes and the enrolment's entries; every event, in text, JSON and FHIR.
    let trail = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
    let writes = trail.lines().filter(|l| l.contains("\"type\":\"write\"")).count();
    assert_eq!(writes, 1_100, "{} lines", trail.lines().count());
    let fhir = net.ok(&["audit", "--as", "alice", "--patient", "alice", "--format", "fhir"]);
    assert_eq!(fhir.lines().count(), trail.lines().count());
    let text = net.ok(&["audit", "--as", "alice", "--patient", "alice"]);
    assert_eq!(text.lines().filter(|l| l.contains("write")).count(), 1_100);
}

/// Finding 11 (low): the passphrase prompt echoed what was typed, and an empty passphrase was
/// accepted. On a terminal (a pseudo-terminal made by `script`) nothing typed is shown; an empty
/// passphrase is refused with exit 2.
#[test]
fn the_passphrase_is_read_without_echo_and_never_empty() {
    use std::io::{Read, Write};
    let root = tempfile::tempdir().unwrap();
    let (dir, home) = (root.path().join("net"), root.path().join("home"));
    medledger_ok(&home, &["init", "--dir", dir.to_str().unwrap(), "--validators", "1"]);
    let empty = std::process::Command::new(common::BIN)
        .args(["id", "create", "alice", "--role", "patient", "--as", "org1-admin"])
        .env("MEDLEDGER_HOME", &home)
        .env("MEDLEDGER_PASSPHRASE", "")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&empty.stderr);
    assert_eq!(empty.status.code(), Some(2), "{said}");
    assert!(said.contains("must not be empty"), "an empty passphrase was tried: {said}");

    let command = format!("{} --home {} record list --as org1-admin", common::BIN, home.display());
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("MEDLEDGER_PASSPHRASE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs the CLI on a pseudo-terminal");
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    // Type only once the prompt is up (and echo is off, if the CLI turned it off).
    while !String::from_utf8_lossy(&seen).contains("passphrase:") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    child.stdin.take().unwrap().write_all(b"typed-secret-marker\n").unwrap();
    out.read_to_end(&mut seen).unwrap();
    child.wait().unwrap();
    let shown = String::from_utf8_lossy(&seen);
    assert!(!shown.contains("typed-secret-marker"), "the passphrase was echoed: {shown}");
    assert!(shown.contains("error"), "a wrong passphrase opens nothing: {shown}");
}

/// Finding 11 (low): a signed request was answered once by each validator, so one captured at
/// one validator could be replayed at every other. A validator answers only requests whose
/// signed `@authority` names it.
#[test]
fn a_signed_request_is_answered_only_by_the_validator_it_names() {
    use medledger_ledger::httpsig;
    let net = Net::start();
    net.cast();
    let home = medledger_sdk::Home::open(&net.home).unwrap();
    let alice = home.load_identity("alice", PASS).unwrap();
    let path = format!("/v1/patients/{}/audit", alice.member);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let signed_for = |authority: &str| {
        let url = format!("http://{authority}{path}");
        let parts = httpsig::RequestParts::of_url("GET", &url, b"").unwrap();
        httpsig::sign(&alice.signing, &alice.member.to_hex(), &parts, now, &httpsig::new_nonce())
    };
    let send = |authority: &str, headers: [(&'static str, String); 3]| {
        let mut all: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.push(("Host", authority));
        common::http_request(&net.api, "GET", &path, &all, b"").0
    };
    // Signed for this validator: answered.
    assert_eq!(send(&net.api, signed_for(&net.api)), 200);
    // Signed for another validator (and sent with that Host, as a replay would be): refused.
    let other = "127.0.0.1:1";
    assert_eq!(send(other, signed_for(other)), 401);
}

/// Finding 11 (low): the gateway served cross-site requests: a web page's `<img
/// src=http://127.0.0.1:PORT/Observation/ID>` had it commit an audited read in the clinician's
/// name. A browser's cross-site request is refused (403) and nothing is signed, with or without
/// the gateway's local credential; so is any request without that credential (401: another user
/// or program on the machine), and a wrong one.
#[test]
fn the_gateway_refuses_a_web_pages_cross_site_requests() {
    let (net, record) = drbob_wrote_an_observation("csrf-marker");
    let path = format!("/Observation/{record}");
    let gateway = Gateway::start(&net, "drbob", &[]);
    let reads = || {
        let trail = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
        trail.lines().filter(|l| l.contains("\"type\":\"read\"")).count()
    };
    let before = reads();
    let bearer = format!("Bearer {}", gateway.token);
    for headers in [
        vec![("Sec-Fetch-Site", "cross-site"), ("Sec-Fetch-Dest", "image")],
        vec![("Origin", "https://evil.example")],
        vec![("Origin", "https://evil.example"), ("Authorization", bearer.as_str())],
    ] {
        let (status, _, body) = common::http_request(&gateway.addr, "GET", &path, &headers, b"");
        assert_eq!(status, 403, "{headers:?}: {body}");
    }
    let wrong = format!("Bearer {}", "0".repeat(64));
    for headers in [vec![], vec![("Authorization", wrong.as_str())], vec![("Sec-Fetch-Site", "same-origin")]] {
        let (status, _, body) = common::http_request(&gateway.addr, "GET", &path, &headers, b"");
        assert_eq!(status, 401, "{headers:?}: {body}");
    }
    assert_eq!(reads(), before, "a cross-site or unauthenticated request signed an access");
    let file = net.home.join("gateways").join(format!("{}.token", gateway.addr.rsplit(':').next().unwrap()));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the token file is readable by others: {mode:o}");
    // The clinician's own application (no browser headers, or same-origin, and the credential)
    // reads as before; the capability statement needs no credential.
    let headers = [("Sec-Fetch-Site", "same-origin"), ("Authorization", bearer.as_str())];
    let (status, _, body) = common::http_request(&gateway.addr, "GET", &path, &headers, b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(reads(), before + 1);
    assert_eq!(common::http_request(&gateway.addr, "GET", "/metadata", &[], b"").0, 200);
}

/// Finding 6 (medium): a reader took the record entry, the envelopes and the threshold
/// configuration from the first validator that answered, so one Byzantine validator could hand a
/// clinician forged clinical content under a key it made. Each bundle now carries Merkle proofs
/// against the state root of a block a quorum certified: the forgery is refused (exit 4) when the
/// forger is the only validator asked, and the true record is read from the others otherwise.
#[test]
fn a_byzantine_validator_cannot_hand_a_reader_forged_content() {
    let mut net = Net::start_n(4);
    net.cast();
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"true-marker"}}"#;
    let file = net.file("obs.json", text.as_bytes());
    let record = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let record: RecordId = record.trim().parse().unwrap();

    let forged = forging_alices_record(&net, record);
    put_forger_in_front_of_validator_0(&mut net, &forged);
    let id = record.to_string();

    // Only the forger asked: refused as an integrity failure, the forgery never printed.
    let url = format!("http://{forged}");
    let only = net.cli(&["--node", &url, "record", "get", "--as", "alice", &id]);
    assert_eq!(only.code, 4, "stdout: {} stderr: {}", only.stdout, only.stderr);
    assert!(!only.stdout.contains("FORGED"), "{}", only.stdout);
    // The forger asked first, the honest validators after it: the true record.
    ask_forger_first(&net, &url);
    let get = net.cli(&["record", "get", "--as", "alice", &id]);
    assert_eq!((get.code, get.stdout.as_str()), (0, text), "{}", get.stderr);
}

/// Finding 6, the writer's side: a writer took the chart's public key, its care teams' keys and a
/// grantee's key from the first validator that answered, so one Byzantine validator could have a
/// doctor wrap each new record, and a patient her chart key, for a key pair of its own. The keys a
/// writer wraps for now come from certified state entries with Merkle proofs, checked against the
/// genesis: the forger alone gets an integrity failure (exit 4) and nothing is written; asked
/// first, it is passed over and the record is wrapped for the true keys.
#[test]
fn a_byzantine_validator_cannot_have_a_writer_wrap_for_its_key() {
    use medledger_crypto::suite::KemSuite;
    use medledger_ledger::api::{ProvedState, StateEvidence};
    use medledger_ledger::state::{ChartEntry, MemberEntry, keys};
    use medledger_types::MemberId;

    let mut net = Net::start_n(4);
    net.cast();
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    let (alice, nina) = (net.id_of("alice"), net.id_of("nina"));
    let (alice_id, nina_id) = (MemberId::from_hex(&alice).unwrap(), MemberId::from_hex(&nina).unwrap());
    // The forger's own key pair, put in place of the chart's and nina's public keys wherever they
    // are served: plain JSON entries and the values inside proofs.
    let forged_key = medledger_crypto::wrap::generate(KemSuite::default()).encryption_key().clone();
    let (chart_path, nina_path) = (format!("/v1/charts/{alice}"), format!("/v1/members/{nina}"));
    let key = forged_key.clone();
    let forged = forging_validator(net.apis[0].clone(), move |path, body| {
        let path = path.split('?').next().unwrap_or_default();
        if path == chart_path {
            let mut chart: ChartEntry = serde_json::from_slice(&body).unwrap();
            chart.public_key = key.clone();
            serde_json::to_vec(&chart).unwrap()
        } else if path == nina_path {
            let mut member: MemberEntry = serde_json::from_slice(&body).unwrap();
            member.encryption_key = key.clone();
            serde_json::to_vec(&member).unwrap()
        } else if path == format!("{chart_path}/proof") || path == format!("{nina_path}/proof") {
            let proved: ProvedState = serde_json::from_slice(&body).unwrap();
            let mut evidence = StateEvidence::from_text(&proved.evidence).unwrap();
            for entry in &mut evidence.entries {
                let Some(value) = entry.value.as_mut() else { continue };
                if entry.key == keys::chart(&alice_id) {
                    let mut chart: ChartEntry = medledger_types::decode_canonical(value, 1 << 20).unwrap();
                    chart.public_key = key.clone();
                    *value = medledger_types::encode(&chart);
                } else if entry.key == keys::member(&nina_id) {
                    let mut member: MemberEntry = medledger_types::decode_canonical(value, 1 << 20).unwrap();
                    member.encryption_key = key.clone();
                    *value = medledger_types::encode(&member);
                }
            }
            serde_json::to_vec(&ProvedState { evidence: evidence.to_text() }).unwrap()
        } else {
            body
        }
    });
    put_forger_in_front_of_validator_0(&mut net, &forged);
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"wrapped-right"}}"#;
    let file = net.file("obs.json", text.as_bytes());
    let file = file.to_str().unwrap();
    let honest = format!("http://{}", net.apis[1]);
    let first = net.ok(&["--node", &honest, "record", "put", "--as", "drbob", "--patient", "alice", file]);
    let first = first.trim().to_string();
    let records = || net.ok(&["record", "list", "--as", "alice", "--patient", "alice"]).lines().count();
    let before = records();

    // Only the forger asked: refused as an integrity failure, and nothing written.
    let url = format!("http://{forged}");
    let put = net.cli(&["--node", &url, "record", "put", "--as", "drbob", "--patient", "alice", file]);
    assert_eq!(put.code, 4, "stdout: {} stderr: {}", put.stdout, put.stderr);
    assert_eq!(records(), before, "a record was wrapped for the forger's key");
    let grant = net.cli(&["--node", &url, "grant", "--as", "alice", "--to", "nina", "--all"]);
    assert_eq!(grant.code, 4, "stdout: {} stderr: {}", grant.stdout, grant.stderr);
    let denied = net.cli(&["--node", &honest, "record", "get", "--as", "nina", &first]);
    assert_eq!(denied.code, 3, "nina was granted through the forger's key: {}", denied.stderr);

    // The forger asked first: passed over. The record is wrapped for the true chart key (alice
    // reads it through the chart) and the grant for nina's true key (she reads it too).
    ask_forger_first(&net, &url);
    let record = net.ok(&["record", "put", "--as", "drbob", "--patient", "alice", file]).trim().to_string();
    net.ok(&["grant", "--as", "alice", "--to", "nina", "--all"]);
    for (reader, id) in [("alice", &record), ("nina", &record), ("nina", &first)] {
        let get = net.cli(&["record", "get", "--as", reader, id]);
        assert_eq!((get.code, get.stdout.as_str()), (0, text), "{reader}: {}", get.stderr);
    }
}

/// Finding 4 (medium): chart, member, record, grant and team entries answered unsigned requests,
/// so anyone who reached a validator linked patients to their doctors, teams and clinics. Every
/// GET of the OpenAPI document is called, unsigned and signed by a doctor of another
/// organisation, with each path parameter naming the patient's id, her record, her grantee, her
/// care team or one of her transactions: no answer carries the patient's id or the team's
/// members. A member in her care still reads them.
#[test]
fn no_endpoint_tells_an_outsider_who_a_patient_sees() {
    let net = Net::start_n(2);
    net.cast();
    net.ok(&["id", "create", "eve", "--role", "doctor", "--as", "h2-admin"]);
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    let file = net.file("obs.json", br#"{"resourceType":"Observation","status":"final","code":{"text":"f4"}}"#);
    let record = net.ok(&["record", "put", "--as", "drbob", "--patient", "alice", file.to_str().unwrap()]);
    let record = record.trim().to_string();
    let team = net.ok(&["team", "create", "ward", "--as", "drbob", "--members", "nina"]).trim().to_string();
    net.ok(&["grant", "--as", "alice", "--to", "ward", "--all"]);
    let home = medledger_sdk::Home::open(&net.home).unwrap();
    let id_of = |alias: &str| home.resolve(alias).unwrap().member.to_hex();
    let (alice, drbob, nina) = (id_of("alice"), id_of("drbob"), id_of("nina"));
    let trail = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
    let txs: Vec<String> = trail
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["tx"].as_str().map(str::to_string))
        .collect();
    assert!(txs.len() >= 3, "{trail}");

    let (status, doc) = common::http_get(&net.apis[0], "/v1/openapi.json");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let mut calls = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        if operations.get("get").is_none() {
            continue;
        }
        // Each way of filling the path's parameters with something of alice's.
        let mut filled = vec![path.clone()];
        for (param, values) in [
            ("{patient}", vec![alice.clone()]),
            ("{grantee}", vec![drbob.clone(), team.clone()]),
            ("{height}", (1..=net.height()).map(|h| h.to_string()).collect()),
            ("{tx}", txs.clone()),
            ("{digest}", vec![]),
        ] {
            if path.contains(param) {
                filled = filled.iter().flat_map(|p| values.iter().map(move |v| p.replace(param, v))).collect();
            }
        }
        if path.contains("{id}") {
            let ids: Vec<String> = if path.starts_with("/v1/records") {
                vec![record.clone()]
            } else if path.starts_with("/v1/teams") {
                vec![team.clone()]
            } else if path.starts_with("/v1/tx") || path.starts_with("/v1/governance") {
                txs.clone()
            } else {
                vec![alice.clone(), team.clone()]
            };
            filled = filled.iter().flat_map(|p| ids.iter().map(move |v| p.replace("{id}", v))).collect();
        }
        for p in filled {
            if p == "/v1/staff" {
                calls.extend(["doctor", "nurse", "patient"].map(|r| format!("{p}?role={r}")));
            } else {
                calls.push(p);
            }
        }
    }
    assert!(calls.len() > 40, "{calls:?}");
    for call in &calls {
        for caller in [None, Some("eve")] {
            let (status, body) = common::api_get(&net, 0, caller, call);
            let who = caller.unwrap_or("an unsigned client");
            assert!(!body.contains(&alice), "{who} learned the patient's id from {call} ({status}): {body}");
            if call.starts_with("/v1/teams/") && status == 200 {
                let entry: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(entry["members"], serde_json::json!([]), "{who} learned the team's members from {call}");
            }
            if call.starts_with("/v1/grants/") || call.starts_with("/v1/charts/") {
                assert_ne!(status, 200, "{who} read {call}: {body}");
            }
        }
    }
    // Those in her care still read what they need.
    for (who, call) in [
        ("drbob", format!("/v1/charts/{alice}")),
        ("drbob", format!("/v1/records/{record}")),
        ("drbob", format!("/v1/grants/{alice}/{drbob}")),
        ("nina", format!("/v1/teams/{team}")),
        ("alice", format!("/v1/members/{alice}")),
    ] {
        let (status, body) = common::api_get(&net, 0, Some(who), &call);
        assert_eq!(status, 200, "{who} {call}: {body}");
        assert!(body.contains(&alice) || body.contains(&nina), "{who} {call}: {body}");
    }
}

/// Finding 11 (erasure and the consensus archive): the engine's finalized-block archive keeps only
/// a window of blocks behind the tip (`archive_retention_blocks`), so an erased record's sidecar,
/// purged from the chain log at once, leaves every file of the validator once the window has
/// passed its block; before, the engine's archive kept every block for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_sidecar_leaves_the_consensus_archive_once_its_window_passes() {
    use medledger_ledger::{RecordAccess, TxKind};
    use medledger_sdk::COMMIT_TIMEOUT;
    use medledger_types::PurposeOfUse;

    let mut net = Net::start_n(1);
    net.kill9_validator(0);
    let file = net.dir.join("validator-0").join("validator.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    config["archive_retention_blocks"] = 16.into();
    config["sync_gap_blocks"] = 8.into();
    std::fs::write(&file, config.to_string()).unwrap();
    net.start_validator(0);
    net.cast();
    let session = Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", PASS).unwrap();
    session.release().await.unwrap();
    let sealed = seal(&session, &alice, &alice, r#"{"resourceType":"Basic","code":{"text":"archived"}}"#).await;
    session.transact(&alice, sealed.kind.clone(), Some(sealed.sidecar.clone())).await.unwrap();
    let kept = seal(&session, &alice, &alice, r#"{"resourceType":"Basic","code":{"text":"kept"}}"#).await;
    session.transact(&alice, kept.kind.clone(), Some(kept.sidecar.clone())).await.unwrap();
    let shares = sealed.sidecar.threshold.0.as_ref().unwrap();
    let mut needles: Vec<Vec<u8>> =
        shares.shares.iter().map(|s| medledger_types::encode(&s.envelope)[..64].to_vec()).collect();
    needles.extend(sealed.sidecar.envelopes.iter().map(|e| medledger_types::encode(&e.envelope)[..64].to_vec()));
    let consensus = net.dir.join("validator-0").join("data").join("consensus");
    let validator_dir = net.dir.join("validator-0");
    let held = |needles: &[Vec<u8>]| -> Vec<String> {
        common::files_under(&validator_dir)
            .into_iter()
            .filter(|f| {
                let bytes = std::fs::read(f).unwrap_or_default();
                needles.iter().any(|n| common::contains(&bytes, n))
            })
            .map(|f| f.strip_prefix(&validator_dir).unwrap().display().to_string())
            .collect()
    };
    // Before the erasure the engine's archive holds the sidecar, as its block does.
    assert!(held(&needles).iter().any(|f| f.contains("consensus")), "{:?}", held(&needles));
    let id = sealed.record.to_string();
    let erased: serde_json::Value =
        serde_json::from_str(&net.ok(&["--json", "record", "erase", "--as", "alice", &id])).unwrap();
    let height = erased["height"].as_u64().unwrap();
    janitor_done(&net, height);
    // Life goes on (reads of the kept record, each a block) until the window, rounded up to the
    // archive's and the caches' sections, has passed the block of the erased record's sidecar.
    let kind = TxKind::RecordAccess(RecordAccess { record: kept.record, version: 1, purpose: PurposeOfUse::Treat });
    while net.status_of(0)["height"].as_u64().unwrap() < height + 16 + 256 + 64 {
        let id = session.submit_signed(vec![(&alice, kind.clone(), None)]).await.unwrap().remove(0).unwrap();
        session.client.wait(&id, COMMIT_TIMEOUT).await.unwrap();
    }
    net.kill9_validator(0);
    let left = held(&needles);
    assert!(left.is_empty(), "files keeping the erased sidecar: {left:?}");
    // The archive still holds the recent blocks (the kept record's reads), not nothing.
    assert!(
        common::files_under(&consensus).iter().any(|f| f.display().to_string().contains("finalized-blocks-v2-value")
            && std::fs::metadata(f).unwrap().len() > 0)
    );
}
