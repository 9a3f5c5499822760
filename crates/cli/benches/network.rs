//! End-to-end figures on a real one-validator network (release build, durable storage, every
//! signature verified): committed transactions per second, and put/get latency for 4 KiB and
//! 1 MiB records. `cargo bench -p medledger-cli --bench network`; prints a Markdown table.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medledger_ledger::{RecordAccess, Transaction, TxBody, TxKind};
use medledger_sdk::{COMMIT_TIMEOUT, Home, Session};
use medledger_types::{Nonce, PurposeOfUse};

const BIN: &str = env!("CARGO_BIN_EXE_medledger");
const PASS: &str = "bench passphrase";

fn cli(home: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("MEDLEDGER_HOME", home)
        .env("MEDLEDGER_PASSPHRASE", PASS)
        .output()
        .expect("medledger");
    assert!(out.status.success(), "medledger {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Node(Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let (dir, home) = (root.path().join("net"), root.path().join("home"));
    cli(&home, &["init", "--dir", dir.to_str().unwrap(), "--base-port", "27400"]);
    let log = std::fs::File::create(root.path().join("node.log")).unwrap();
    let _node = Node(
        Command::new(BIN)
            .args(["node", "--dir", dir.to_str().unwrap(), "--validator", "0"])
            .env("MEDLEDGER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    while std::net::TcpStream::connect("127.0.0.1:27400").is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let signers = 16;
    for k in 0..signers {
        cli(&home, &["id", "create", &format!("p{k}"), "--role", "patient", "--as", "org1-admin"]);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let session = Session::open(&home, None).unwrap();
    let h = Home::open(&home).unwrap();
    let ids: Vec<_> = (0..signers).map(|k| h.load_identity(&format!("p{k}"), PASS.as_bytes()).unwrap()).collect();

    println!("| measurement | p50 | p99 | n |\n|---|---|---|---|");
    let mut records = Vec::new();
    for (label, size) in [("4 KiB", 4096usize), ("1 MiB", 1 << 20)] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        let me = &ids[0];
        let patient = me.contact();
        for _ in 0..20 {
            let t = Instant::now();
            let (record, _) = rt.block_on(session.put_record(me, &patient, &data)).unwrap();
            puts.push(t.elapsed());
            let t = Instant::now();
            let opened = rt.block_on(session.get_record(me, record, PurposeOfUse::Patrqt)).unwrap();
            gets.push(t.elapsed());
            assert_eq!(&opened.plaintext[..], &data[..]);
            records.push(record);
        }
        puts.sort();
        gets.sort();
        println!(
            "| put {label} (encrypt, upload, commit) | {} | {} | {} |",
            ms(percentile(&puts, 0.5)),
            ms(percentile(&puts, 0.99)),
            puts.len()
        );
        println!(
            "| get {label} (audited access commit, fetch, decrypt) | {} | {} | {} |",
            ms(percentile(&gets, 0.5)),
            ms(percentile(&gets, 0.99)),
            gets.len()
        );
    }

    // Throughput: every signer reads its own record over and over (allowed, audited); all
    // transactions are submitted up front and the clock stops when the last one is committed.
    let per_signer = 500u64;
    let chain_id = session.chain_id;
    let mut own = Vec::new();
    for me in &ids {
        let (record, _) = rt.block_on(session.put_record(me, &me.contact(), b"small record")).unwrap();
        own.push(record);
    }
    let mut txs = Vec::new();
    for (me, record) in ids.iter().zip(&own) {
        let first = rt.block_on(session.client.next_nonce(&me.member)).unwrap().get();
        for i in 0..per_signer {
            let kind =
                TxKind::RecordAccess(RecordAccess { record: *record, version: 1, purpose: PurposeOfUse::Patrqt });
            let body = TxBody { chain_id, signer: me.member, nonce: Nonce::new(first + i), kind, sidecar_digest: None };
            txs.push((me.member, Transaction::sign(body, &me.signing)));
        }
    }
    let total = txs.len();
    let start = Instant::now();
    let last_ids = rt.block_on(async {
        let mut tasks = Vec::new();
        for chunk in txs.chunks(per_signer as usize) {
            let client = session.client.clone();
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                let mut last = None;
                for (_, tx) in chunk {
                    last = Some(client.submit(tx, None).await.unwrap());
                }
                last.unwrap()
            }));
        }
        let mut last = Vec::new();
        for t in tasks {
            last.push(t.await.unwrap());
        }
        last
    });
    let submitted = start.elapsed();
    for id in &last_ids {
        rt.block_on(session.client.wait(id, COMMIT_TIMEOUT)).unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "\ncommitted {total} transactions from {signers} signers in {:.2} s (submission took {:.2} s): {:.0} tx/s",
        elapsed.as_secs_f64(),
        submitted.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}
