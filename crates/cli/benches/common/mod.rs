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

/// Validator processes on 127.0.0.1 (their folder `dir`, API addresses `apis`) and a home for the
/// clients; killed on drop.
pub struct Network {
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    pub home: PathBuf,
    pub nodes: Vec<Child>,
    pub apis: Vec<String>,
}

impl Drop for Network {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

impl Network {
    /// Initialises `validators` validators on ports from `base_port` (`medledger init` with
    /// `extra_init`) and starts them.
    pub fn start_with(validators: usize, base_port: u16, extra_init: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let (dir, home) = (root.path().join("net"), root.path().join("home"));
        let (n, port) = (validators.to_string(), base_port.to_string());
        let mut args = vec!["init", "--dir", dir.to_str().unwrap(), "--base-port", &port, "--validators", &n];
        args.extend_from_slice(extra_init);
        cli(&home, &args);
        let mut net = Network { _root: root, dir, home, nodes: Vec::new(), apis: Vec::new() };
        for k in 0..validators {
            net.apis.push(format!("http://127.0.0.1:{}", base_port as usize + k));
            let child = net.spawn(k);
            net.nodes.push(child);
        }
        net
    }

    /// Starts validator `k` (its log appended to `validator-K/node.log`) and waits for its API.
    pub fn spawn(&self, k: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("validator-{k}")).join("node.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["node", "--dir", self.dir.to_str().unwrap(), "--validator", &k.to_string()])
            .env("MEDLEDGER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let api = self.apis[k].trim_start_matches("http://");
        while std::net::TcpStream::connect(api).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }
}

/// A network of `validators` with the walkthrough's admin and `drbob`, a doctor.
pub fn start(validators: usize, base_port: u16, extra_init: &[&str]) -> Network {
    let net = Network::start_with(validators, base_port, extra_init);
    cli(&net.home, &["id", "create", "drbob", "--role", "doctor", "--as", "org1-admin"]);
    net
}

/// The `p`-quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
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
