//! End-to-end figures on real networks of 1 and 4 validator processes (release build, durable
//! storage, every signature verified): put/get latency for 4 KiB and 1 MiB records, and a sweep
//! of offered load (batched submissions) giving committed transactions per second and commit
//! latency; then, on 4 validators, how long a validator rejoining with no data takes to catch up
//! by replay and by state sync. `cargo bench -p medledger-cli --bench network`; prints Markdown
//! tables.
//!
//! `MEDLEDGER_BENCH_READS=N` measures only the read path, with and without threshold release:
//! two networks of the same size side by side, N reads of a 4 KiB record on each, interleaved so
//! both see the same machine.
//!
//! `MEDLEDGER_BENCH_AUDIT=N` measures the first page of a patient's audit trail (what the patient
//! sees first) at 100 events and at N (issue 17, P7: 10 000), on one validator.
//!
//! `MEDLEDGER_BENCH_ERASE=N` measures erasure on 4 validators after N records: the erasure's
//! commit, and the time until it is carried out everywhere (ciphertext gone from the store, every
//! validator's share key replaced, which follows the janitor's scan of its chain log). The erasures
//! are spaced by the share-key interval (`SHARE_KEY_INTERVAL_MS`), which they would otherwise wait for.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medledger_ledger::{RecordAccess, Transaction, TxBody, TxKind};
use medledger_sdk::{Client, Home, Identity, Session};
use medledger_types::{Nonce, PurposeOfUse, TxId};

use common::{Network, PASS, cli, ms, percentile};

const SIGNERS: usize = 32;
const SWEEP_SECONDS: f64 = 3.0;

impl Network {
    fn start(validators: usize, base_port: u16) -> Self {
        Self::start_with(validators, base_port, &[])
    }

    fn status(&self, rt: &tokio::runtime::Runtime, k: usize) -> serde_json::Value {
        let client = Client::new(vec![self.apis[k].clone()]).unwrap();
        rt.block_on(client.status()).unwrap_or_default()
    }

    /// Wipes validator `k`'s data, restarts it with `sync_gap_blocks = gap`, and times how long it
    /// takes to reach the height validator 0 had when it restarted.
    fn rejoin(&mut self, rt: &tokio::runtime::Runtime, k: usize, gap: u64) -> (Duration, u64, bool) {
        let _ = self.nodes[k].kill();
        let _ = self.nodes[k].wait();
        std::fs::remove_dir_all(self.dir.join(format!("validator-{k}")).join("data")).unwrap();
        let config = self.dir.join(format!("validator-{k}")).join("validator.json");
        let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        file["sync_gap_blocks"] = gap.into();
        std::fs::write(&config, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
        let target = self.status(rt, 0)["height"].as_u64().unwrap_or(0);
        let started = Instant::now();
        self.nodes[k] = self.spawn(k);
        loop {
            let status = self.status(rt, k);
            if status["height"].as_u64().is_some_and(|h| h >= target) {
                return (started.elapsed(), target, status["state_synced_at"].is_u64());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn latency_rows(rt: &tokio::runtime::Runtime, session: &Session, me: &Identity, label_n: usize) {
    for (label, size) in [("4 KiB", 4096usize), ("1 MiB", 1 << 20)] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let t = Instant::now();
            let (record, _) = rt.block_on(session.put_record(me, &me.contact(), &data)).unwrap();
            puts.push(t.elapsed());
            let t = Instant::now();
            let opened = rt.block_on(session.get_record(me, record, PurposeOfUse::Patrqt)).unwrap();
            gets.push(t.elapsed());
            assert_eq!(&opened.plaintext[..], &data[..]);
        }
        puts.sort();
        gets.sort();
        for (what, v) in [("put", &puts), ("get", &gets)] {
            println!(
                "| {label_n} | {what} {label} | {} | {} | {} |",
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                v.len()
            );
        }
    }
}

/// Offers `rate` tx/s for SWEEP_SECONDS in batches every 20 ms. Each validator's API gets the
/// transactions of its own signers, in nonce order, from one sequential submitter (a signer's
/// transactions must arrive in order). Returns (committed tx/s, commit latencies, offered).
fn offer(
    rt: &tokio::runtime::Runtime,
    clients: &[Client],
    queues: &mut [std::vec::IntoIter<Transaction>],
    rate: usize,
) -> (f64, Vec<Duration>, usize) {
    let tick = Duration::from_millis(20);
    let per_tick = (rate * tick.as_millis() as usize / 1000 / clients.len()).max(1);
    let ticks = (SWEEP_SECONDS / tick.as_secs_f64()) as usize;
    let submitted: Arc<Mutex<HashMap<TxId, Instant>>> = Arc::default();
    let committed: Arc<Mutex<(Vec<Duration>, Option<Instant>)>> = Arc::default();
    let watcher_client = clients[0].clone();
    let start_height = rt.block_on(watcher_client.status()).unwrap()["height"].as_u64().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let total = per_tick * ticks * clients.len();
    // Watch committed blocks on validator 0 and time every transaction we submitted.
    let watcher = {
        let (submitted, committed, stop) = (submitted.clone(), committed.clone(), stop.clone());
        rt.spawn(async move {
            let mut next = start_height + 1;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match watcher_client.block(next).await {
                    Ok(block) => {
                        let now = Instant::now();
                        let mut done = committed.lock().unwrap();
                        for id in block["txs"].as_array().unwrap() {
                            let id: TxId = id.as_str().unwrap().parse().unwrap();
                            if let Some(t) = submitted.lock().unwrap().remove(&id) {
                                done.0.push(now - t);
                                done.1 = Some(now);
                            }
                        }
                        next += 1;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        })
    };
    type Batch = Vec<(Transaction, Option<Vec<u8>>)>;
    let senders: Vec<tokio::sync::mpsc::UnboundedSender<Batch>> = clients
        .iter()
        .map(|client| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Batch>();
            let client = client.clone();
            rt.spawn(async move {
                while let Some(batch) = rx.recv().await {
                    let _ = client.submit_batch(batch).await;
                }
            });
            tx
        })
        .collect();
    let begin = Instant::now();
    rt.block_on(async {
        let mut interval = tokio::time::interval(tick);
        for _ in 0..ticks {
            interval.tick().await;
            for (queue, sender) in queues.iter_mut().zip(&senders) {
                let batch: Batch = queue.take(per_tick).map(|t| (t, None)).collect();
                let now = Instant::now();
                let mut map = submitted.lock().unwrap();
                for (tx, _) in &batch {
                    map.insert(tx.id(), now);
                }
                drop(map);
                let _ = sender.send(batch);
            }
        }
    });
    drop(senders);
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed.lock().unwrap().0.len() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = rt.block_on(watcher);
    let (mut latencies, last) = committed.lock().unwrap().clone();
    latencies.sort();
    let elapsed = last.map_or(f64::INFINITY, |l| (l - begin).as_secs_f64());
    (latencies.len() as f64 / elapsed, latencies, total)
}

/// Read latency with threshold release against the direct suite, on networks of each size.
fn read_path(rt: &tokio::runtime::Runtime, sizes: &[usize], reads: usize) {
    println!("| validators | read path (4 KiB) | p50 | p99 | n |\n|---|---|---|---|---|");
    for &validators in sizes {
        let modes = [("threshold release (f+1 shares)", &[][..]), ("direct (--no-threshold)", &["--no-threshold"][..])];
        let nets: Vec<(&str, Network, Session, Identity, medledger_types::RecordId)> = modes
            .iter()
            .enumerate()
            .map(|(m, (label, extra))| {
                let net = Network::start_with(validators, 29400 + 200 * m as u16 + 10 * validators as u16, extra);
                cli(&net.home, &["id", "create", "p0", "--role", "patient", "--as", "org1-admin"]);
                let session = Session::open(&net.home, None).unwrap();
                let me = Home::open(&net.home).unwrap().load_identity("p0", PASS.as_bytes()).unwrap();
                let data: Vec<u8> = (0..4096).map(|i| (i * 31 % 251) as u8).collect();
                let (record, _) = rt.block_on(session.put_record(&me, &me.contact(), &data)).unwrap();
                (*label, net, session, me, record)
            })
            .collect();
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); nets.len()];
        for _ in 0..reads {
            for (i, (_, _, session, me, record)) in nets.iter().enumerate() {
                let t = Instant::now();
                let opened = rt.block_on(session.get_record(me, *record, PurposeOfUse::Patrqt)).unwrap();
                times[i].push(t.elapsed());
                assert_eq!(opened.plaintext.len(), 4096);
            }
        }
        for ((label, ..), v) in nets.iter().zip(times) {
            print_row(validators, label, v);
        }
        key_paths(rt, &nets[0].1, &nets[0].2, &nets[0].3, nets[0].4, validators, reads);
    }
}

/// On a threshold network: the patient's own read against a care-team member's read of the same
/// record through the longest key path the team gives (the member's key of team epoch 1, the link
/// to epoch 0, the chart key of epoch 0 the team holds, the record's key), interleaved; then the
/// receipt of one read: its size, fetching it, and checking it offline from the genesis file.
fn key_paths(
    rt: &tokio::runtime::Runtime,
    net: &Network,
    session: &Session,
    patient: &Identity,
    record: medledger_types::RecordId,
    validators: usize,
    reads: usize,
) {
    for (name, role) in [("d0", "doctor"), ("n0", "nurse"), ("x0", "nurse")] {
        cli(&net.home, &["id", "create", name, "--role", role, "--as", "org1-admin"]);
    }
    cli(&net.home, &["team", "create", "ward", "--as", "d0", "--members", "n0,x0"]);
    cli(&net.home, &["grant", "--as", "p0", "--to", "ward", "--all"]);
    cli(&net.home, &["team", "remove", "ward", "--as", "d0", "--member", "x0"]);
    let nurse = Home::open(&net.home).unwrap().load_identity("n0", PASS.as_bytes()).unwrap();
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..reads {
        for (i, me) in [patient, &nurse].into_iter().enumerate() {
            let t = Instant::now();
            let opened = rt.block_on(session.get_record(me, record, PurposeOfUse::Treat)).unwrap();
            times[i].push(t.elapsed());
            assert_eq!(opened.plaintext.len(), 4096);
        }
    }
    for (label, v) in ["patient's own read", "care-team member (team link, chart key)"].into_iter().zip(times) {
        print_row(validators, label, v);
    }
    // A receipt of the nurse's last read.
    let trail = rt.block_on(session.audit(patient, &patient.contact())).unwrap();
    let tx = trail.iter().rev().find(|e| e.actor == nurse.member).expect("the nurse's read is on the trail").tx;
    let genesis =
        medledger_ledger::Genesis::from_json(&std::fs::read_to_string(net.dir.join("genesis.json")).unwrap()).unwrap();
    let (mut fetch, mut check) = (Vec::new(), Vec::new());
    let mut size = 0;
    for _ in 0..reads {
        let t = Instant::now();
        let bytes = rt.block_on(session.client.receipt(&nurse, &tx, None)).unwrap();
        fetch.push(t.elapsed());
        let t = Instant::now();
        medledger_proof::receipt::verify(&bytes, &genesis).unwrap();
        check.push(t.elapsed());
        size = bytes.len();
    }
    for (label, v) in [("receipt: fetch", fetch), ("receipt: verify offline", check)] {
        print_row(validators, &format!("{label} ({size} bytes)"), v);
    }
    // What every read now checks: the access bundle's evidence (proofs against a certified
    // state), fetched and checked on its own for the nurse's last read.
    let (mut fetch, mut check) = (Vec::new(), Vec::new());
    let mut size = 0;
    for _ in 0..reads {
        let t = Instant::now();
        let bundle = rt.block_on(session.client.access_bundle(&nurse, &tx)).unwrap();
        fetch.push(t.elapsed());
        let t = Instant::now();
        medledger_proof::check_access(&genesis, &bundle, record, 1).unwrap();
        check.push(t.elapsed());
        size = bundle.evidence.as_ref().map_or(0, String::len);
    }
    for (label, v) in [("access bundle: fetch", fetch), ("access bundle: check evidence", check)] {
        print_row(validators, &format!("{label} ({size} bytes of evidence)"), v);
    }
}

/// One table row: p50 and p99 of `times`.
fn print_row(validators: usize, label: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "| {validators} | {label} | {} | {} | {} |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        times.len()
    );
}

fn erasure(rt: &tokio::runtime::Runtime, records: usize) {
    let net = Network::start(4, 31400);
    cli(&net.home, &["id", "create", "p0", "--role", "patient", "--as", "org1-admin"]);
    let session = Session::open(&net.home, None).unwrap();
    let me = Home::open(&net.home).unwrap().load_identity("p0", PASS.as_bytes()).unwrap();
    let data: Vec<u8> = (0..4096).map(|i| (i * 31 % 251) as u8).collect();
    let mut written = Vec::new();
    for _ in 0..records {
        written.push(rt.block_on(session.put_record(&me, &me.contact(), &data)).unwrap());
    }
    let epoch = |session: &Session| -> Vec<u32> {
        net.apis.iter().map(|api| rt.block_on(session.client.threshold_at(api)).map_or(0, |c| c.epoch)).collect()
    };
    let (mut commits, mut shredded) = (Vec::new(), Vec::new());
    let mut height = 0;
    for (k, (record, _)) in written.iter().take(5).enumerate() {
        if k > 0 {
            // A validator replaces its share key at most once per interval: measure each erasure
            // on its own, not the wait for the previous one's interval.
            std::thread::sleep(Duration::from_millis(medledger_types::limits::SHARE_KEY_INTERVAL_MS));
        }
        let entry = rt.block_on(session.client.record(&me, record)).unwrap();
        let blob = net.dir.join("blobs").join(entry.digest.to_hex());
        let before = epoch(&session).into_iter().max().unwrap_or(0);
        let t = Instant::now();
        let committed = rt.block_on(session.erase(&me, *record)).unwrap();
        commits.push(t.elapsed());
        height = committed.height.get();
        while blob.exists() || epoch(&session).iter().any(|e| *e < before + 4) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "erasure not carried out: blob {} epochs {:?} (from {before})",
                blob.exists(),
                epoch(&session)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        shredded.push(t.elapsed());
    }
    commits.sort();
    shredded.sort();
    println!("| measurement (4 validators, chain of {height} blocks) | p50 | max | n |\n|---|---|---|---|");
    let row = |label: &str, v: &[Duration]| {
        println!("| {label} | {} | {} | {} |", ms(percentile(v, 0.5)), ms(*v.last().unwrap()), v.len())
    };
    row("erase committed", &commits);
    row("erasure carried out everywhere (store, sidecars, shares, keys)", &shredded);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Some(records) = std::env::var("MEDLEDGER_BENCH_ERASE").ok().and_then(|v| v.parse().ok()) {
        return erasure(&rt, records);
    }
    if let Some(reads) = std::env::var("MEDLEDGER_BENCH_READS").ok().and_then(|v| v.parse().ok()) {
        return read_path(&rt, &[1, 4], reads);
    }
    if let Some(events) = std::env::var("MEDLEDGER_BENCH_AUDIT").ok().and_then(|v| v.parse().ok()) {
        return audit_trail(&rt, events);
    }
    let mut sweeps = Vec::new();
    let mut catch_up = None;
    println!("| validators | measurement | p50 | p99 | n |\n|---|---|---|---|---|");
    // MEDLEDGER_BENCH_VALIDATORS=4 and MEDLEDGER_BENCH_RATES=1000,2000 narrow the run for profiling.
    let sizes: Vec<usize> = std::env::var("MEDLEDGER_BENCH_VALIDATORS")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 4]);
    let rates: Vec<usize> = std::env::var("MEDLEDGER_BENCH_RATES")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|_| vec![500, 1000, 2000, 4000, 8000, 16000]);
    for validators in sizes {
        let base_port = 27400 + 100 * validators as u16;
        let net = Network::start(validators, base_port);
        let admin = "org1-admin";
        for k in 0..SIGNERS {
            cli(&net.home, &["id", "create", &format!("p{k}"), "--role", "patient", "--as", admin]);
        }
        let session = Session::open(&net.home, None).unwrap();
        let home = Home::open(&net.home).unwrap();
        let ids: Vec<Identity> =
            (0..SIGNERS).map(|k| home.load_identity(&format!("p{k}"), PASS.as_bytes()).unwrap()).collect();
        if std::env::var("MEDLEDGER_BENCH_RATES").is_err() {
            latency_rows(&rt, &session, &ids[0], validators);
        }

        // Pre-signed load: every signer reads its own record (allowed, audited).
        let per_signer = rates.iter().map(|r| r * SWEEP_SECONDS as usize).sum::<usize>() / SIGNERS + 2;
        let mut by_signer = Vec::new();
        for me in &ids {
            let (record, _) = rt.block_on(session.put_record(me, &me.contact(), b"small record")).unwrap();
            let first = rt.block_on(session.client.next_nonce(me, session.lane())).unwrap().get();
            let txs: Vec<Transaction> = (0..per_signer as u64)
                .map(|i| {
                    let kind = TxKind::RecordAccess(RecordAccess { record, version: 1, purpose: PurposeOfUse::Patrqt });
                    let body = TxBody {
                        chain_id: session.chain_id,
                        signer: me.member,
                        nonce: Nonce::new(first + i),
                        kind,
                        sidecar_digest: None,
                    };
                    Transaction::sign(body, &me.signing)
                })
                .collect();
            by_signer.push(txs);
        }
        // Signer s submits through validator s mod n; each queue interleaves its signers.
        let n = net.apis.len();
        let mut queues: Vec<std::vec::IntoIter<Transaction>> = (0..n)
            .map(|v| {
                let mine: Vec<&Vec<Transaction>> = by_signer.iter().skip(v).step_by(n).collect();
                let mut q = Vec::new();
                for i in 0..per_signer {
                    for txs in &mine {
                        q.push(txs[i].clone());
                    }
                }
                q.into_iter()
            })
            .collect();
        let clients: Vec<Client> = net.apis.iter().map(|a| Client::new(vec![a.clone()]).unwrap()).collect();
        for &rate in &rates {
            let (tps, lat, offered) = offer(&rt, &clients, &mut queues, rate);
            let (p50, p99) = if lat.is_empty() {
                (Duration::ZERO, Duration::ZERO)
            } else {
                (percentile(&lat, 0.5), percentile(&lat, 0.99))
            };
            sweeps.push((validators, rate, tps, p50, p99, lat.len(), offered));
        }
        // After the sweep's blocks: a validator rejoining with no data, by replay and by state sync.
        if validators > 1 {
            let mut net = net;
            let (replay, height, synced) = net.rejoin(&rt, validators - 1, u64::MAX);
            assert!(!synced, "replay run used a state sync");
            let (sync, _, synced) = net.rejoin(&rt, validators - 1, 0);
            assert!(synced, "sync run replayed");
            catch_up = Some(vec![("replay of every block", height, replay), ("state sync from a peer", height, sync)]);
        }
    }
    if let Some(rows) = catch_up {
        println!("\n| validator rejoining with empty data | blocks behind | time to catch up |\n|---|---|---|");
        for (how, height, time) in rows {
            println!("| {how} | {height} | {} |", ms(time));
        }
    }
    println!("\n| validators | offered tx/s | committed tx/s | commit latency p50 | p99 | committed / offered |");
    println!("|---|---|---|---|---|---|");
    for (v, rate, tps, p50, p99, n, offered) in sweeps {
        println!("| {v} | {rate} | {tps:.0} | {} | {} | {n} / {offered} |", ms(p50), ms(p99));
    }
}

/// The first page of a patient's audit trail (`GET /v1/patients/{id}/audit`, signed by the
/// patient) when the trail holds 100 events and `events`: the events are the patient's own reads of
/// one record (each an audited RecordAccess, committed in batches).
fn audit_trail(rt: &tokio::runtime::Runtime, events: usize) {
    let net = Network::start(1, 28_600);
    let session = Session::open(&net.home, None).unwrap();
    let home = Home::open(&net.home).unwrap();
    println!("| events in the trail | first page (events) | p50 | p99 | n |\n|---|---|---|---|---|");
    for (k, total) in [100usize, events.max(100)].into_iter().enumerate() {
        let alias = format!("trail{k}");
        cli(&net.home, &["id", "create", &alias, "--role", "patient", "--as", "org1-admin"]);
        let me = home.load_identity(&alias, PASS.as_bytes()).unwrap();
        // The write is the trail's first event; the reads make up the rest.
        let (record, _) = rt.block_on(session.put_record(&me, &me.contact(), b"one record")).unwrap();
        let mut left = total - 1;
        while left > 0 {
            let batch = left.min(500);
            let reads = (0..batch)
                .map(|_| {
                    let kind = TxKind::RecordAccess(RecordAccess { record, version: 1, purpose: PurposeOfUse::Patrqt });
                    (&me, kind, None)
                })
                .collect();
            for result in rt.block_on(session.transact_batch(reads)).unwrap() {
                result.unwrap();
            }
            left -= batch;
        }
        let mut times = Vec::new();
        let mut shown = 0;
        for _ in 0..50 {
            let started = Instant::now();
            let (page, _) = rt.block_on(session.client.audit_page(&me, &me.member, None)).unwrap();
            times.push(started.elapsed());
            shown = page.len();
        }
        times.sort();
        println!(
            "| {total} | {shown} | {} | {} | {} |",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99)),
            times.len()
        );
    }
}
