//! What the end-to-end benchmarks share: the release `medledger` binary and a way to run it, a
//! network of validator processes, and carebundle's synthetic patients.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// Validator processes on 127.0.0.1 and a home with the walkthrough's admin and `drbob`; killed on drop.
pub struct Network {
    _root: tempfile::TempDir,
    pub home: PathBuf,
    nodes: Vec<Child>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// Initialises and starts `validators` validators on ports from `base_port`.
pub fn start(validators: usize, base_port: u16, extra_init: &[&str]) -> Network {
    let root = tempfile::tempdir().unwrap();
    let (dir, home) = (root.path().join("net"), root.path().join("home"));
    let (n, port) = (validators.to_string(), base_port.to_string());
    let mut args = vec!["init", "--dir", dir.to_str().unwrap(), "--base-port", &port, "--validators", &n];
    args.extend_from_slice(extra_init);
    cli(&home, &args);
    let mut nodes = Vec::new();
    for k in 0..validators {
        let log = std::fs::File::create(dir.join(format!("validator-{k}")).join("node.log")).unwrap();
        nodes.push(
            Command::new(BIN)
                .args(["node", "--dir", dir.to_str().unwrap(), "--validator", &k.to_string()])
                .env("MEDLEDGER_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        while std::net::TcpStream::connect(("127.0.0.1", base_port + k as u16)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    cli(&home, &["id", "create", "drbob", "--role", "doctor", "--as", "org1-admin"]);
    Network { _root: root, home, nodes }
}

/// Generates `patients` type 2 diabetes patients (seed 42) as transaction Bundles in `out`;
/// returns how many resources they hold.
pub fn carebundle(patients: usize, out: &Path) -> usize {
    carebundle_seeded(patients, 42, out)
}

/// As [`carebundle`], with another seed (another cohort).
pub fn carebundle_seeded(patients: usize, seed: u64, out: &Path) -> usize {
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .expect("python3");
    let bin = Path::new(String::from_utf8_lossy(&scripts.stdout).trim()).join("carebundle");
    let run = Command::new(bin)
        .args([
            "generate",
            "--profile",
            "type2_diabetes",
            "--count",
            &patients.to_string(),
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(out)
        .output()
        .expect("carebundle (pip install carebundle==0.5.0)");
    assert!(run.status.success());
    std::fs::read_dir(out)
        .unwrap()
        .map(|f| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
            v["entry"].as_array().map_or(0, Vec::len)
        })
        .sum()
}
