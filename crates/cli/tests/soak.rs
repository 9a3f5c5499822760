//! Mixed load with validator restarts on four real validator processes. In CI it runs for 40 s;
//! the long soak is the same test with a longer duration:
//! `MEDLEDGER_SOAK_SECS=1800 cargo test --release -p medledger-cli --test soak -- --nocapture`.
//! The validators' resident memory is sampled each cycle; a soak of 15 minutes or more checks
//! (issue 17, P8) that the largest resident size in its last 5 minutes is within 10 % of the
//! largest between its 5th and 10th minutes (restarts included: a leak shows as growth across them).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Net, OBSERVATION};

#[test]
fn mixed_load_with_restarts_loses_nothing_and_converges() {
    let seconds: u64 = std::env::var("MEDLEDGER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    let net = Arc::new(Mutex::new(Net::start_n(4)));
    let (home, root, apis, admin) = {
        let n = net.lock().unwrap();
        (n.home.clone(), n.root.path().to_path_buf(), n.apis.clone(), n.admin.clone())
    };
    {
        let n = net.lock().unwrap();
        n.ok(&["id", "create", "alice", "--role", "patient", "--as", &admin]);
        n.ok(&["id", "create", "drbob", "--role", "doctor", "--as", &admin]);
        n.ok(&["id", "create", "nina", "--role", "nurse", "--as", &admin]);
        n.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    }
    let file = root.join("soak.json");
    std::fs::write(&file, OBSERVATION).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // (seconds since the load began, the largest validator's resident KiB then)
    let resident = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .env("MEDLEDGER_HOME", &home)
            .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
            .output()
            .unwrap()
    };
    std::thread::scope(|scope| {
        // Writers: the doctor adds records; the patient shares and reads them.
        for author in ["drbob", "alice"] {
            let (stop, acknowledged, file) = (stop.clone(), acknowledged.clone(), file.clone());
            scope.spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let out = run(&["record", "put", "--as", author, "--patient", "alice", file.to_str().unwrap()]);
                    if out.status.success() {
                        let record = String::from_utf8(out.stdout).unwrap().trim().to_string();
                        acknowledged.lock().unwrap().push(record.clone());
                        if author == "alice" {
                            let _ = run(&["grant", "--as", "alice", "--to", "nina", "--record", &record]);
                            let _ = run(&["record", "get", "--as", "nina", &record]);
                        }
                    }
                }
            });
        }
        // Chaos: kill -9 one validator at a time (never more than f = 1), restart it 2 s later.
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut victim = 0;
        let mut restarts = 0;
        let started = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(3));
            {
                let n = net.lock().unwrap();
                let at = started.elapsed().as_secs();
                let largest = (0..4).filter_map(|k| n.resident_kib(k)).max().unwrap_or(0);
                resident.lock().unwrap().push((at, largest));
            }
            net.lock().unwrap().kill9_validator(victim);
            std::thread::sleep(Duration::from_secs(2));
            net.lock().unwrap().start_validator(victim);
            victim = (victim + 1) % 4;
            restarts += 1;
        }
        stop.store(true, Ordering::SeqCst);
        println!("soak: {seconds} s, {restarts} validator restarts");
    });
    let net = net.lock().unwrap();
    let records = acknowledged.lock().unwrap().clone();
    println!("soak: {} records acknowledged", records.len());
    assert!(records.len() >= 5, "the network kept committing under restarts: {}", records.len());
    // Converge, then every acknowledged record is on every validator, and every chain verifies.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st: Vec<serde_json::Value> = (0..4).map(|k| net.status_of(k)).collect();
        if st.iter().all(|s| s["state_root"] == st[0]["state_root"] && s["height"] == st[0]["height"]) {
            break;
        }
        assert!(Instant::now() < deadline, "validators did not converge");
        std::thread::sleep(Duration::from_millis(200));
    }
    for api in &apis {
        let listed = net.ok(&["--node", &format!("http://{api}"), "record", "list", "--as", "alice"]);
        for record in &records {
            assert!(listed.contains(record.as_str()), "{api} lacks acknowledged record {record}");
        }
    }
    println!("soak: {} records acknowledged, all present on all 4 validators", records.len());
    let samples = resident.lock().unwrap().clone();
    let largest_in =
        |from: u64, to: u64| samples.iter().filter(|(at, _)| (from..to).contains(at)).map(|(_, kib)| *kib).max();
    println!(
        "soak: largest validator resident memory, first minute {:?} KiB, whole run {:?} KiB",
        largest_in(0, 60),
        largest_in(0, u64::MAX)
    );
    if seconds >= 900 {
        let (baseline, last) = (largest_in(300, 600).unwrap(), largest_in(seconds - 300, seconds + 60).unwrap());
        println!("soak: resident memory, minutes 5-10: {baseline} KiB; last 5 minutes: {last} KiB");
        assert!(last * 10 <= baseline * 11, "resident memory grew more than 10 %: {baseline} -> {last} KiB");
    }
    assert_eq!(net.ok(&["verify"]).matches("chain ok").count(), 4);
}
