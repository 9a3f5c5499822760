//! The portal's TypeScript client opening a 4 KiB record on four validators (threshold release,
//! X-Wing): the time from the access's commit (the audit event on the ledger) to the plaintext
//! (the bundle fetched and checked against its certificate and proofs, the envelopes opened, the
//! validators' shares collected, checked and combined, the ciphertext fetched and decrypted).
//! The same code runs in the browser; this runs it under Node (`portal/dist/scripts/ts-client.js`).
//!
//! `cargo bench -p medledger-cli --bench portal` (`npm --prefix portal run build` first);
//! `MEDLEDGER_BENCH_PORTAL_READS` (default 300).

mod common;

use std::process::Command;

use common::{PASS, cli};

fn main() {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../portal/dist/scripts/ts-client.js");
    assert!(
        script.exists(),
        "{} is missing: run `npm --prefix portal ci && npm --prefix portal run build`",
        script.display()
    );
    let reads: usize = std::env::var("MEDLEDGER_BENCH_PORTAL_READS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let net = common::start(4, 23400, &[]);
    cli(&net.home, &["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let file = net.home.join("record.bin");
    let body: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let record = cli(&net.home, &["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    let out = Command::new("node")
        .arg(&script)
        .arg(&net.home)
        .args(["alice", "bench-read", record.trim(), &reads.to_string()])
        .env("MEDLEDGER_PASSPHRASE", PASS)
        .output()
        .expect("node");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("TypeScript client (Node {}), 4 KiB record, 4 validators, {reads} reads:", node_version());
    println!("| measure | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| after the access committed: bundle checked, shares combined, content decrypted | {} ms | {} ms |",
        figures["after_commit_p50_ms"], figures["after_commit_p99_ms"]
    );
    println!(
        "| … of which the bundle fetched and checked (certificate, proofs) | {} ms | {} ms |",
        figures["bundle_p50_ms"], figures["bundle_p99_ms"]
    );
    println!(
        "| … of which envelopes opened, shares collected, ciphertext fetched (together) | {} ms | {} ms |",
        figures["keys_p50_ms"], figures["keys_p99_ms"]
    );
    println!(
        "| the access's commit (signed, submitted, finalized) | {} ms | {} ms |",
        figures["commit_p50_ms"], figures["commit_p99_ms"]
    );
    println!("The session's first read, after its commit: {} ms.", figures["first_after_commit_ms"]);
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
