//! Bulk import throughput: carebundle's synthetic patients (PyPI `carebundle`, type 2 diabetes
//! profile) imported by `medledger import` (release build) into real networks of 1 and 4
//! validator processes with durable storage. Also the client's sealing ceiling (encrypt + wrap
//! for chart and author + sign, no network) on the same machine, for the ratio.
//!
//! `cargo bench -p medledger-cli --bench import` (`MEDLEDGER_BENCH_PATIENTS`, default 100, about
//! 50 resources each); prints a Markdown table.

mod common;

use std::path::Path;
use std::time::Instant;

use medledger_sdk::{RecordMetadata, Session};
use medledger_types::RecordId;

use common::{Network, PASS, carebundle, cli, start};

fn main() {
    let patients: usize = std::env::var("MEDLEDGER_BENCH_PATIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let data = tempfile::tempdir().unwrap();
    let resources = carebundle(patients, data.path());
    println!("carebundle: {patients} patients, {resources} resources\n");
    println!(
        "| validators | key release | resources | patients enrolled | seconds | resources/s | client sealing ceiling (2 threads, no network) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let modes = [("threshold (default)", &[][..]), ("direct (--no-threshold)", &["--no-threshold"][..])];
    for (m, (mode, extra)) in modes.iter().enumerate() {
        for (v, validators) in [1usize, 4].into_iter().enumerate() {
            let net = start(validators, 29_400 + 200 * m as u16 + 100 * v as u16, extra);
            let out = cli(&net.home, &["--json", "import", "--as", "drbob", data.path().to_str().unwrap()]);
            let s: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
            assert_eq!(s["resources_written"].as_u64(), Some(resources as u64), "{s}");
            let ceiling = sealing_ceiling(&net, data.path(), resources);
            println!(
                "| {validators} | {mode} | {} | {} | {:.2} | {:.0} | {ceiling:.0} |",
                s["resources_written"],
                s["patients_enrolled"],
                s["seconds"].as_f64().unwrap(),
                s["resources_per_second"].as_f64().unwrap()
            );
        }
    }
}

/// The client-side ceiling on `net`: seal (encrypt, wrap for chart and author, and deal the
/// validators' shares under threshold release) the same resources, no network; resources/s.
fn sealing_ceiling(net: &Network, data: &Path, resources: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let session = Session::open(&net.home, None).unwrap();
    let me = session.home.load_identity("drbob", PASS.as_bytes()).unwrap();
    let custody_patient = std::fs::read_dir(net.home.join("custody").join("org1")).unwrap().next().unwrap().unwrap();
    let patient: medledger_types::MemberId =
        custody_patient.path().file_stem().unwrap().to_string_lossy().parse().unwrap();
    rt.block_on(session.release()).unwrap();
    let chart = rt.block_on(session.record_keys(&me, &patient)).unwrap();
    let bundle = std::fs::read_dir(data).unwrap().next().unwrap().unwrap().path();
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle).unwrap()).unwrap();
    let texts: Vec<String> = bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"].to_string()).collect();
    let meta = RecordMetadata {
        resource_type: Some("Observation".into()),
        content_type: "application/fhir+json".into(),
        size_bytes: 0,
        sensitive: false,
    };
    let n = resources.max(1000);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for half in 0..2 {
            let (session, me, chart, texts, meta) = (&session, &me, &chart, &texts, &meta);
            scope.spawn(move || {
                for i in (half..n).step_by(2) {
                    let text = &texts[i % texts.len()];
                    let record = RecordId::new(medledger_crypto::random_bytes());
                    std::hint::black_box(session.seal_record(me, chart, record, 1, text.as_bytes(), meta).unwrap());
                }
            });
        }
    });
    n as f64 / started.elapsed().as_secs_f64()
}
