//! The FHIR gateway at hospital size: carebundle's synthetic patients (about 49 resources each;
//! 2 100 patients make about 100 000 records) imported into a real validator process, then a real
//! `medledger gateway` process (release build) searched over HTTP as a FHIR client would, and the
//! whole population exported through Bulk Data `$export`.
//!
//! Prints, as Markdown: the index's first catch-up (every chart listed, every record indexed from
//! the gateway's encrypted cache), the latency (p50/p99) of common searches (each returns a page of
//! 20 read through audited accesses, or a count), the export's resources/s, and the gateway's peak
//! memory.
//!
//! `cargo bench -p medledger-cli --bench fhir` (`MEDLEDGER_BENCH_FHIR_PATIENTS`, default 2100;
//! `MEDLEDGER_BENCH_FHIR_RUNS`, default 100 searches of each kind).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Network, PASS, cli, ms, percentile, start};

/// A running `medledger gateway`, killed on drop.
struct Gateway {
    addr: String,
    token: String,
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(net: &Network, member: &str) -> Gateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(["gateway", "--as", member, "--listen", &addr])
            .env("MEDLEDGER_HOME", &net.home)
            .env("MEDLEDGER_PASSPHRASE", PASS)
            .env("MEDLEDGER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut banner = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
        assert!(banner.contains(&addr), "gateway did not start: {banner}");
        let token = std::fs::read_to_string(net.home.join("gateways").join(format!("{port}.token"))).unwrap();
        Gateway { addr, token, child }
    }

    /// `GET path` with the gateway's token (and `extra` header lines): the status, the response
    /// head and the body.
    fn exchange(&self, path: &str, extra: &str) -> (u16, String, String) {
        let mut stream = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: application/fhir+json\r\n{extra}Connection: close\r\n\r\n",
            self.addr, self.token
        )
        .unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        (status, head.to_string(), body.to_string())
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.exchange(path, "");
        (status, body)
    }

    fn json(&self, path: &str) -> serde_json::Value {
        self.json_with(path, "")
    }

    fn json_with(&self, path: &str, extra: &str) -> serde_json::Value {
        let (status, _, body) = self.exchange(path, extra);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Header `name` of the answer to an asynchronous request (`Prefer: respond-async`).
    fn header(&self, path: &str, name: &str) -> Option<String> {
        let (_, head, _) = self.exchange(path, "Prefer: respond-async\r\n");
        head.lines().find_map(|l| {
            l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string())
        })
    }

    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
    }
}

/// Two carebundle runs at once (seeds 42 and 43), `patients` in all.
fn cohort(patients: usize, out: &Path) -> usize {
    let halves = [patients.div_ceil(2), patients / 2];
    std::thread::scope(|scope| {
        let runs: Vec<_> = halves
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let dir = out.join(format!("part{i}"));
                scope.spawn(move || common::carebundle_seeded(*n, 42 + i as u64, &dir))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).sum()
    })
}

fn main() {
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let patients = env("MEDLEDGER_BENCH_FHIR_PATIENTS", 2100);
    let runs = env("MEDLEDGER_BENCH_FHIR_RUNS", 100).max(2);
    let data = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let resources = cohort(patients, data.path());
    println!(
        "carebundle: {patients} patients, {resources} resources ({:.0} s to generate)",
        started.elapsed().as_secs_f64()
    );

    let net = start(1, 29_800, &[]);
    let out = cli(&net.home, &["--json", "import", "--as", "drbob", data.path().to_str().unwrap()]);
    let summary: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    println!(
        "import: {} resources written in {:.1} s ({:.0}/s), {} patients enrolled\n",
        summary["resources_written"],
        summary["seconds"].as_f64().unwrap(),
        summary["resources_per_second"].as_f64().unwrap(),
        summary["patients_enrolled"]
    );

    // Query values from the data itself: a patient's identifier and family name, a LOINC code.
    let first = std::fs::read_dir(data.path().join("part0")).unwrap().next().unwrap().unwrap().path();
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(first).unwrap()).unwrap();
    let patient =
        bundle["entry"].as_array().unwrap().iter().find(|e| e["resource"]["resourceType"] == "Patient").unwrap();
    let identifier = patient["resource"]["identifier"][0]["value"].as_str().unwrap().to_string();
    let family = patient["resource"]["name"][0]["family"].as_str().unwrap();
    let prefix: String = family.chars().take(3).collect();

    let gw = Gateway::start(&net, "drbob");
    let started = Instant::now();
    let all = gw.json("/Patient?_summary=count");
    let catch_up = started.elapsed();
    let indexed = gw.json("/Observation?_summary=count")["total"].as_u64().unwrap();
    let pid = gw.json(&format!("/Patient?identifier={identifier}"))["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    println!(
        "first search (index catch-up: {} charts listed, every record indexed from the encrypted cache): {:.2} s; {} Patients, {indexed} Observations\n",
        all["total"],
        catch_up.as_secs_f64(),
        all["total"]
    );

    const NO_CACHE: &str = "Cache-Control: no-cache\r\n";
    let queries: Vec<(&str, String, &str)> = vec![
        ("Patient by identifier", format!("/Patient?identifier={identifier}"), ""),
        ("Patient by family name prefix", format!("/Patient?family={prefix}&_count=20"), ""),
        (
            "Observation by LOINC code (one per patient)",
            "/Observation?code=http://loinc.org%7C2951-2&_count=20".into(),
            "",
        ),
        (
            "the same with `Cache-Control: no-cache` (a catch-up each time: every chart's head asked)",
            "/Observation?code=http://loinc.org%7C2951-2&_count=20".into(),
            NO_CACHE,
        ),
        ("Observation since 2020, newest first", "/Observation?date=ge2020-01-01&_sort=-date&_count=20".into(), ""),
        ("Observation count (`_summary=count`)", "/Observation?_summary=count".into(), ""),
        ("Observation count, `Cache-Control: no-cache`", "/Observation?_summary=count".into(), NO_CACHE),
        ("one patient's Conditions (`patient=`)", format!("/Condition?patient={pid}"), ""),
    ];
    println!("| search ({resources} records indexed) | matches | page read | p50 | p99 | n |");
    println!("|---|---|---|---|---|---|");
    for (what, path, extra) in &queries {
        let mut times = Vec::with_capacity(runs);
        let mut last = serde_json::Value::Null;
        for _ in 0..runs {
            let t = Instant::now();
            last = gw.json_with(path, extra);
            times.push(t.elapsed());
        }
        times.sort();
        let page = last["entry"].as_array().map_or(0, Vec::len);
        println!(
            "| {what}: `{path}` | {} | {page} | {} | {} | {runs} |",
            last["total"],
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        );
    }

    // Bulk export of every chart: each resource an audited read, NDJSON files per type.
    let started = Instant::now();
    let poll = gw.header("/Patient/$export", "content-location").expect("Content-Location");
    let poll = &poll[poll.find("/$export-poll-status").unwrap()..];
    let manifest = loop {
        let (status, body) = gw.get(poll);
        match status {
            202 => std::thread::sleep(Duration::from_millis(200)),
            200 => break serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            other => panic!("export status {other}: {body}"),
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let exported: u64 = manifest["output"].as_array().unwrap().iter().map(|o| o["count"].as_u64().unwrap()).sum();
    println!(
        "\n| export | resources | seconds | resources/s |\n|---|---|---|---|\n| `GET /Patient/$export`, {} charts | {exported} | {elapsed:.1} | {:.0} |",
        all["total"],
        exported as f64 / elapsed
    );
    println!("\ngateway peak RSS: {:.0} MiB", gw.peak_rss_mib());
}
