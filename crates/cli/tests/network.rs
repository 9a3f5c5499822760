//! Four validators as separate processes on 127.0.0.1: BFT under kill -9 of each in turn, a stall
//! without a fork when two of four are down, and the memory an idle validator holds.

mod common;

use std::time::{Duration, Instant};

use common::{Net, OBSERVATION};
use medledger_ledger::api::TxStatus;
use medledger_ledger::{RecordAccess, Transaction, TxBody, TxKind};
use medledger_sdk::{Client, Home};
use medledger_types::{PurposeOfUse, RecordId};

/// Waits until every listed validator reports the same height and state root, at least `min`.
fn converge(net: &Net, validators: &[usize], min: u64) -> (u64, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses: Vec<_> = validators.iter().map(|k| net.status_of(*k)).collect();
        let heights: Vec<u64> = statuses.iter().map(|s| s["height"].as_u64().unwrap()).collect();
        let roots: Vec<&str> = statuses.iter().map(|s| s["state_root"].as_str().unwrap()).collect();
        if heights.iter().all(|h| *h == heights[0] && *h >= min) && roots.iter().all(|r| *r == roots[0]) {
            return (heights[0], roots[0].to_string());
        }
        assert!(Instant::now() < deadline, "validators did not converge: {heights:?} {roots:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn four_validators_survive_kill_9_of_each_in_turn() {
    let mut net = Net::start_n(4);
    net.cast();
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let mut acknowledged = Vec::new();
    // Writes through each validator's API in turn.
    for k in 0..4 {
        let node = format!("http://{}", net.apis[k]);
        let record =
            net.ok(&["--node", &node, "record", "put", "--as", "drbob", "--patient", "alice", obs.to_str().unwrap()]);
        acknowledged.push(record.trim().to_string());
    }
    // Kill -9 each validator in turn; the other three keep finalizing writes.
    for k in 0..4 {
        net.kill9_validator(k);
        for _ in 0..2 {
            let record = net.ok(&["record", "put", "--as", "drbob", "--patient", "alice", obs.to_str().unwrap()]);
            acknowledged.push(record.trim().to_string());
        }
        net.start_validator(k);
    }
    let (height, _) = converge(&net, &[0, 1, 2, 3], 1);
    assert!(height >= 5 + acknowledged.len() as u64, "every write is a block or in one: {height}");
    // Every acknowledged record is on every validator, and readable through any of them.
    for k in 0..4 {
        let node = format!("http://{}", net.apis[k]);
        let listed = net.ok(&["--node", &node, "record", "list", "--as", "alice"]);
        for record in &acknowledged {
            assert!(listed.contains(record.as_str()), "validator {k} lacks acknowledged record {record}");
        }
    }
    let last = acknowledged.last().unwrap();
    let node = format!("http://{}", net.apis[3]);
    assert_eq!(net.ok(&["--node", &node, "record", "get", "--as", "alice", last]), OBSERVATION);
    // Every validator's chain verifies (hash chain, certificates, re-execution, ciphertexts).
    let verify = net.ok(&["verify"]);
    assert_eq!(verify.matches("chain ok").count(), 4, "{verify}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_four_down_stalls_without_forking_then_resumes() {
    let mut net = Net::start_n(4);
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "h1-admin"]);
    let (before, _) = converge(&net, &[0, 1, 2, 3], 1);
    net.kill9_validator(2);
    net.kill9_validator(3);
    // Validator 0's status sees its peers: 1 up, 2 and 3 down.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = net.status_of(0)["peers"].as_array().unwrap().clone();
        let up: Vec<u64> = peers.iter().filter(|p| p["up"] == true).map(|p| p["validator"].as_u64().unwrap()).collect();
        if up == [1] && peers.len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "peers never showed 2 and 3 down: {peers:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    let home = Home::open(&net.home).unwrap();
    let config = home.config().unwrap();
    let alice = home.load_identity("alice", b"correct horse battery staple").unwrap();
    let client = Client::new(vec![format!("http://{}", net.apis[0])]).unwrap();
    let nonce = client.next_nonce(&alice, 1).await.unwrap();
    let kind =
        TxKind::RecordAccess(RecordAccess { record: RecordId::new([3; 16]), version: 1, purpose: PurposeOfUse::Treat });
    let body = TxBody { chain_id: config.chain_id, signer: alice.member, nonce, kind, sidecar_digest: None };
    let id = client.submit(Transaction::sign(body, &alice.signing), None).await.unwrap();
    // Two of four cannot form a quorum: nothing is finalized.
    let stalled = client.wait(&id, Duration::from_secs(4)).await;
    assert!(stalled.is_err(), "committed without a quorum: {stalled:?}");
    for k in [0, 1] {
        assert_eq!(net.status_of(k)["height"].as_u64().unwrap(), before, "validator {k} moved without a quorum");
    }
    // One returns: three of four finalize again, the pending transaction included.
    net.start_validator(2);
    let status = client.wait(&id, Duration::from_secs(60)).await.unwrap();
    assert!(matches!(status, TxStatus::Committed { .. }), "{status:?}");
    let (after, _) = converge(&net, &[0, 1, 2], before + 1);
    net.start_validator(3);
    converge(&net, &[0, 1, 2, 3], after);
}

#[test]
fn restored_and_wiped_validators_catch_up() {
    let mut net = Net::start_n(4);
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "h1-admin"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let put = |net: &Net| {
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]).trim().to_string()
    };
    let mut records = vec![put(&net), put(&net)];
    converge(&net, &[0, 1, 2, 3], 1);
    let dir = net.dir.to_str().unwrap().to_string();

    // A running validator is not backed up (its files are moving).
    let backup_dir = net.root.path().join("backup-3");
    let running = net.cli(&["backup", "--dir", &dir, "--validator", "3", "--to", backup_dir.to_str().unwrap()]);
    assert_eq!(running.code, 2, "{}", running.stderr);
    // Stop it, back it up, and let the network move on without it.
    net.kill9_validator(3);
    net.ok(&["backup", "--dir", &dir, "--validator", "3", "--to", backup_dir.to_str().unwrap()]);
    records.push(put(&net));
    records.push(put(&net));
    // Lose the validator's folder; restore the (older) backup; it catches up from its peers.
    std::fs::rename(net.dir.join("validator-3"), net.root.path().join("lost-3")).unwrap();
    net.ok(&["restore", "--dir", &dir, "--validator", "3", "--from", backup_dir.to_str().unwrap()]);
    net.start_validator(3);
    let (height, _) = converge(&net, &[0, 1, 2, 3], 1);

    // A brand-new validator (keys only, no data) syncs the whole chain from genesis.
    net.kill9_validator(2);
    std::fs::remove_dir_all(net.dir.join("validator-2").join("data")).unwrap();
    net.start_validator(2);
    records.push(put(&net));
    converge(&net, &[0, 1, 2, 3], height + 1);
    for k in [2, 3] {
        let node = format!("http://{}", net.apis[k]);
        let listed = net.ok(&["--node", &node, "record", "list", "--as", "alice"]);
        for record in &records {
            assert!(listed.contains(record.as_str()), "validator {k} lacks {record}");
        }
    }
}

/// A validator far behind its peers installs a peer's state, checked against a finalization
/// certificate, instead of replaying every block; it then votes, serves reads, and its chain log
/// still verifies from genesis.
#[test]
fn far_behind_validator_installs_a_verified_state_from_a_peer() {
    let mut net = Net::start_n(4);
    let dir = net.dir.to_str().unwrap().to_string();
    // Validator 3 is lost before the others build a chain; it will come back with keys only and a
    // sync threshold of 4 blocks (the default is 1024).
    net.kill9_validator(3);
    std::fs::remove_dir_all(net.dir.join("validator-3").join("data")).unwrap();
    let config = net.dir.join("validator-3").join("validator.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    file["sync_gap_blocks"] = 4.into();
    std::fs::write(&config, serde_json::to_vec_pretty(&file).unwrap()).unwrap();

    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "h1-admin"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let put = |net: &Net| {
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]).trim().to_string()
    };
    let mut records: Vec<String> = (0..6).map(|_| put(&net)).collect();
    let (behind, _) = converge(&net, &[0, 1, 2], 7);

    net.start_validator(3);
    let (height, root) = converge(&net, &[0, 1, 2, 3], behind);
    let synced = net.status_of(3)["state_synced_at"].as_u64();
    assert!(synced.is_some_and(|h| h >= behind), "validator 3 replayed instead of syncing: {synced:?}");
    for k in 0..3 {
        assert!(net.status_of(k)["state_synced_at"].is_null(), "validator {k} did not need a sync");
    }
    assert_eq!(net.status_of(0)["state_root"].as_str(), Some(root.as_str()));

    // It takes part from there: new writes commit on all four, and it serves them.
    records.push(put(&net));
    converge(&net, &[0, 1, 2, 3], height + 1);
    let node = format!("http://{}", net.apis[3]);
    let listed = net.ok(&["--node", &node, "record", "list", "--as", "alice"]);
    for record in &records {
        assert!(listed.contains(record.as_str()), "validator 3 lacks {record}");
    }
    // Ready for clients, and its metrics count what it committed, without patient identifiers.
    let (status, body) = common::http_get(&net.apis[3], "/v1/ready");
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = common::http_get(&net.apis[3], "/metrics");
    assert_eq!(status, 200);
    let applied = metrics
        .lines()
        .find(|l| l.contains("medledger_transactions_total") && l.contains("kind=\"register_record\""))
        .unwrap_or_else(|| panic!("no record counter in\n{metrics}"));
    let count: u64 = applied.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(applied.contains("result=\"applied\"") && count >= 1, "{applied}");
    assert!(metrics.contains("medledger_blocks_committed_total"), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("simplex") || l.contains("_simplex_")), "no engine metrics");
    let book: Vec<serde_json::Value> =
        net.ok(&["--json", "id", "list"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for entry in book {
        let member = entry["member"].as_str().unwrap();
        assert!(!metrics.contains(member), "metrics name member {member}");
    }
    // Its chain log holds every block from genesis: verify re-executes the whole history there too.
    let verified = net.ok(&["verify", "--dir", &dir]);
    assert!(verified.contains("validator 3: chain ok"), "{verified}");
}

/// `init --tls`: four validators serve HTTPS with certificates from the network's local CA, talk
/// to each other over it (forwarding, status polls), and clients trust that CA only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_network_serves_https_and_trusts_only_its_ca() {
    let net = tokio::task::spawn_blocking(|| {
        let net = Net::start_n_with(4, &["--tls"]);
        net.ok(&["id", "create", "alice", "--role", "patient", "--as", &net.admin.clone()]);
        net
    })
    .await
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.home.join("client.json")).unwrap()).unwrap();
    let nodes: Vec<String> =
        config["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    assert!(nodes.iter().all(|n| n.starts_with("https://")), "{nodes:?}");
    let ca = config["ca_pem"].as_str().unwrap().to_string();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    // Writes through one validator reach all four (peer calls over TLS), reads work.
    let home = net.home.clone();
    let record = net.file("obs.json", br#"{"resourceType":"Basic","code":{"text":"tls"}}"#);
    let put = net.ok(&[
        "--node",
        &nodes[2],
        "record",
        "put",
        "--as",
        "alice",
        "--patient",
        "alice",
        record.to_str().unwrap(),
    ]);
    let got = net.ok(&["--node", &nodes[1], "record", "get", "--as", "alice", put.trim()]);
    assert!(got.contains("tls"), "{got}");
    // Each validator polls its peers' status over TLS every 2 s (its first round may have found
    // them still starting): each comes to see the other three up.
    for node in &nodes {
        let trusting = medledger_sdk::Client::with_ca(vec![node.clone()], Some(&ca)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = trusting.status().await.unwrap();
            let up = status["peers"].as_array().map(|p| p.iter().filter(|x| x["up"] == true).count());
            if up == Some(3) {
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A client that does not trust the network's CA, and plain HTTP, get nothing.
    let untrusting = medledger_sdk::Client::new(vec![nodes[0].clone()]).unwrap();
    assert!(untrusting.status().await.is_err(), "a certificate from an unknown CA is refused");
    let plain = nodes[0].replace("https://", "http://");
    let plain = medledger_sdk::Client::new(vec![plain]).unwrap();
    assert!(plain.status().await.is_err(), "plain HTTP is not served");
    // The CA's key stays with the network's files, private.
    let key = net.dir.join("tls").join("ca.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!std::fs::read_to_string(home.join("client.json")).unwrap().contains("PRIVATE KEY"));
    tokio::task::spawn_blocking(move || drop(net)).await.unwrap();
}

/// Issue 17, P5b: each validator of a fresh four-validator network, idle after some work, holds
/// less than 128 MiB. It held 454-467 MB, nearly all of it empty mailbox slots the p2p layer
/// preallocates at peers × each channel's burst (the burst was a second's worth of the rate).
#[test]
fn an_idle_validator_of_four_holds_under_128_mib() {
    let net = Net::start_n(4);
    net.cast();
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let record = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]);
    net.ok(&["record", "get", "--as", "alice", record.trim()]);
    converge(&net, &[0, 1, 2, 3], net.height());
    let resident: Vec<u64> = (0..4).map(|k| net.resident_kib(k).expect("the validator runs")).collect();
    println!("resident memory of the four validators (KiB): {resident:?}");
    assert!(resident.iter().all(|kib| *kib < 128 * 1024), "{resident:?} KiB");
}
