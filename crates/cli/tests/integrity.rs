//! Tampering and crashes: a flipped ciphertext byte, a changed ledger byte, kill -9 under writes.

mod common;

use std::sync::{Arc, Mutex};

use common::{Net, OBSERVATION};

fn put(net: &Net, author: &str) -> String {
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    net.ok(&["record", "put", "--as", author, "--patient", "alice", obs.to_str().unwrap()]).trim().to_string()
}

#[test]
fn flipped_ciphertext_byte_exits_4_and_prints_nothing() {
    let net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let record = put(&net, "alice");
    assert_eq!(net.ok(&["record", "get", "--as", "alice", &record]), OBSERVATION);

    let blob = common::files_under(&net.blob_dir()).pop().expect("one blob");
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();

    let out = net.root.path().join("out.json");
    let run = net.cli(&["record", "get", "--as", "alice", &record, "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(!out.exists(), "no output file from a tampered record");
    let run = net.cli(&["record", "get", "--as", "alice", &record]);
    assert_eq!(run.code, 4);
    assert!(!run.stdout.contains("MARKER"));
    // The validator counted the corrupt object it refused to serve.
    let (_, metrics) = common::http_get(&net.apis[0], "/metrics");
    let errors = metrics.lines().find(|l| l.starts_with("medledger_storage_errors_total")).expect("counter");
    assert!(errors.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= 2, "{errors}");
    let verify = net.cli(&["verify"]);
    assert_eq!(verify.code, 4, "{}", verify.stderr);
    assert!(verify.stderr.contains(&record), "names the record: {}", verify.stderr);
}

#[test]
fn changed_ledger_byte_fails_verify_naming_the_height() {
    let mut net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let _ = put(&net, "alice");
    let _ = put(&net, "alice");
    assert_eq!(net.cli(&["verify"]).code, 0);
    net.kill9();
    // Find the record's RegisterRecord in block 2 by its digest and change one byte of the block.
    let log_path = net.data_dir().join("chain.log");
    let log = std::fs::read(&log_path).unwrap();
    // Entries: magic, height (8), length (4), block, cert length (4), cert.
    let mut offset = 0usize;
    let mut entries = Vec::new();
    while offset < log.len() {
        let height = u64::from_le_bytes(log[offset + 4..offset + 12].try_into().unwrap());
        let len = u32::from_le_bytes(log[offset + 12..offset + 16].try_into().unwrap()) as usize;
        let cert = u32::from_le_bytes(log[offset + 16 + len..offset + 20 + len].try_into().unwrap()) as usize;
        entries.push((height, offset + 16, len));
        offset += 20 + len + cert;
    }
    assert_eq!(entries.len(), 3, "enrol + two records");
    let (height, start, len) = entries[1];
    let mut tampered = log.clone();
    tampered[start + len - 40] ^= 0x01;
    std::fs::write(&log_path, &tampered).unwrap();
    let run = net.cli(&["verify", "--dir", net.dir.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("height {height}")), "{}", run.stderr);
    // A change inside the header (its time) is caught too.
    let mut tampered = log.clone();
    tampered[start + 60] ^= 0x01;
    std::fs::write(&log_path, &tampered).unwrap();
    let run = net.cli(&["verify", "--dir", net.dir.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("height {height}")), "{}", run.stderr);
}

#[test]
fn kill_9_under_writes_loses_nothing_committed() {
    let mut net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let committed = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (home, dir) = (net.home.clone(), net.root.path().to_path_buf());
    let writer = {
        let committed = committed.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let file = dir.join("w.json");
            std::fs::write(&file, OBSERVATION).unwrap();
            let mut failures = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let out = std::process::Command::new(common::BIN)
                    .args(["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()])
                    .env("MEDLEDGER_HOME", &home)
                    .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
                    .output()
                    .unwrap();
                if out.status.success() {
                    committed.lock().unwrap().push(String::from_utf8(out.stdout).unwrap().trim().to_string());
                } else {
                    failures += 1;
                }
            }
            failures
        })
    };
    // Kill the validator mid-stream, once at least three writes were acknowledged.
    while committed.lock().unwrap().len() < 3 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    net.kill9();
    let acknowledged = committed.lock().unwrap().clone();
    net.start_node();
    // Keep writing after the restart, then stop.
    let after = acknowledged.len() + 2;
    while committed.lock().unwrap().len() < after {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _failures = writer.join().unwrap();
    let all = committed.lock().unwrap().clone();
    let listed = net.ok(&["record", "list", "--as", "alice"]);
    for record in &all {
        assert!(listed.contains(record.as_str()), "acknowledged record {record} lost");
    }
    assert_eq!(net.cli(&["verify"]).code, 0);
}
