//! What the end-to-end benchmarks share: the release `medledger` binary and a way to run it.

use std::path::Path;
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_medledger");
pub const PASS: &str = "bench passphrase";

/// Runs `medledger` with `home` and the bench passphrase; panics unless it succeeds.
pub fn cli(home: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("MEDLEDGER_HOME", home)
        .env("MEDLEDGER_PASSPHRASE", PASS)
        .output()
        .expect("medledger");
    assert!(out.status.success(), "medledger {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
