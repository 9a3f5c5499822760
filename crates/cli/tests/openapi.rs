//! The node's OpenAPI document: served, complete, and true to the running node, as checked by
//! schemathesis (PyPI), which fuzzes every operation from the document alone.

mod common;

use common::{Net, OBSERVATION};

/// Every route the node serves, with whether it needs an RFC 9421 signature.
const OPERATIONS: &[(&str, &str, bool)] = &[
    ("get", "/v1/health", false),
    ("get", "/v1/ready", false),
    ("get", "/metrics", false),
    ("get", "/v1/status", false),
    ("post", "/v1/tx", false),
    ("post", "/v1/tx/batch", false),
    ("get", "/v1/tx/{id}", false),
    ("get", "/v1/blocks/{height}", false),
    ("get", "/v1/members/{id}", true),
    ("get", "/v1/members/{id}/nonce", true),
    ("get", "/v1/members/{id}/charts", true),
    ("get", "/v1/members/{id}/records", true),
    ("get", "/v1/members/{id}/teams", true),
    ("get", "/v1/charts/{patient}", true),
    ("get", "/v1/charts/{patient}/envelope", true),
    ("get", "/v1/grants/{patient}/{grantee}", true),
    ("get", "/v1/charts/{patient}/grants", true),
    ("get", "/v1/records/{id}", true),
    ("get", "/v1/records/{id}/version", true),
    ("get", "/v1/patients/{id}/records", true),
    ("get", "/v1/patients/{id}/records/head", true),
    ("get", "/v1/patients/{id}/audit", true),
    ("put", "/v1/blobs/{digest}", true),
    ("post", "/v1/blobs", true),
    ("get", "/v1/access/{tx}/bundle", true),
    ("get", "/v1/access/{tx}/content", true),
    ("get", "/v1/access/{tx}/share", true),
    ("get", "/v1/genesis", false),
    ("get", "/v1/threshold", false),
    ("get", "/v1/governance", false),
    ("get", "/v1/governance/proposals/{id}", false),
    ("get", "/v1/audit/flagged", true),
    ("get", "/v1/staff", false),
    ("get", "/v1/tx/{id}/note", true),
    ("get", "/v1/tx/{id}/receipt", true),
    ("get", "/v1/teams/{id}", true),
    ("get", "/v1/teams/{id}/envelope", true),
    ("get", "/v1/charts/{patient}/proof", true),
    ("get", "/v1/members/{id}/proof", true),
    ("get", "/v1/teams/{id}/proof", true),
    ("get", "/v1/sync/state", true),
    ("get", "/v1/sync/chain", true),
];

#[test]
fn openapi_document_is_complete_and_schemathesis_finds_nothing() {
    let net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]);

    let (status, body) = common::http_get(&net.apis[0], "/v1/openapi.json");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, OPERATIONS.len(), "documented operations: {:?}", paths.keys().collect::<Vec<_>>());
    for (method, path, signed) in OPERATIONS {
        let operation = &paths[*path][*method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert_eq!(operation["security"].is_array(), *signed, "{method} {path}: security");
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.contains_key("401"), "{method} {path}: 401 undocumented");
        for (code, response) in responses.iter().filter(|(code, _)| code.starts_with('4') || code.starts_with('5')) {
            let content = &response["content"];
            assert!(content["application/problem+json"].is_object(), "{method} {path}: {code} is a problem");
        }
    }
    assert!(doc["components"]["securitySchemes"]["rfc9421"].is_object());

    // schemathesis generates requests from the document alone (valid and invalid) and checks
    // that the node never answers 5xx, answers only documented statuses and content types, and
    // that bodies match their schemas. Seeded so a failure replays.
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/api/schemathesis.toml");
    let url = format!("http://{}/v1/openapi.json", net.apis[0]);
    let bin = common::python_tool("schemathesis");
    let run = std::process::Command::new(&bin)
        .args(["--config-file", config, "run", &url, "--max-examples", "20", "--seed", "20261127"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run schemathesis ({e}); scripts/test installs it"));
    let report = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{report}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(report.contains(&format!("Tested: {}", OPERATIONS.len())), "{report}");
    assert!(report.contains("passed") && !report.contains("failures"), "{report}");
}

/// schemathesis cannot sign requests, so it sees the signed operations answer 401. This fuzzes
/// them with valid RFC 9421 signatures of an enrolled member: seeded random path parameters
/// (real ids, other hex, non-hex, long, encoded), queries and bodies. Every answer is a
/// documented status, never a 5xx, and every error is a problem whose status matches.
#[test]
fn signed_operations_answer_documented_problems_for_hostile_input() {
    use medledger_ledger::httpsig::{self, RequestParts};
    let net = Net::start();
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", "org1-admin"]);
    let obs = net.file("obs.json", OBSERVATION.as_bytes());
    let record = net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]);
    let home = medledger_sdk::Home::open(&net.home).unwrap();
    let alice = home.load_identity("alice", b"correct horse battery staple").unwrap();
    let (_, doc) = common::http_get(&net.apis[0], "/v1/openapi.json");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();

    let mut seed: u64 = 20_261_127;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let ids = [
        alice.member.to_hex(),
        record.trim().to_string(),
        "00".repeat(16),
        "ab".repeat(32),
        "not-hex".to_string(),
        "f".repeat(300),
        "%00%ff".to_string(),
        "..".to_string(),
        "1".to_string(),
    ];
    let queries = [
        "",
        "limit=0",
        "limit=999999999999",
        "after=zz",
        "after=00",
        "wait_ms=-1",
        "from=18446744073709551615",
        "x=%ff",
    ];
    let (mut tried, mut authenticated, mut succeeded) = (0, 0, 0);
    for (method, path, signed) in OPERATIONS.iter().filter(|(_, _, s)| *s) {
        let documented: Vec<u16> = doc["paths"][*path][*method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter_map(|k| k.parse().ok())
            .collect();
        for _ in 0..12 {
            let mut concrete = path.to_string();
            while let Some(start) = concrete.find('{') {
                let end = concrete[start..].find('}').unwrap() + start;
                let id = &ids[(next() % ids.len() as u64) as usize];
                concrete.replace_range(start..=end, id);
            }
            let query = queries[(next() % queries.len() as u64) as usize];
            let target = if query.is_empty() { concrete.clone() } else { format!("{concrete}?{query}") };
            let body: Vec<u8> = match (*method, next() % 3) {
                ("get", _) => Vec::new(),
                (_, 0) => Vec::new(),
                (_, 1) => (0..(next() % 4096)).map(|_| next() as u8).collect(),
                _ => medledger_types::encode(&vec![medledger_ledger::api::BlobUpload {
                    digest: medledger_types::Digest::new([7; 32]),
                    bytes: b"not the digest".to_vec(),
                }]),
            };
            let url = format!("http://{}{target}", net.apis[0]);
            let verb = method.to_uppercase();
            let parts = RequestParts::of_url(&verb, &url, &body).unwrap();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
            let nonce = format!("fuzz-{tried}");
            let headers = httpsig::sign(&alice.signing, &alice.member.to_hex(), &parts, now, &nonce);
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, _, reply) =
                common::http_request(&net.apis[0], &method.to_uppercase(), &target, &headers, &body);
            tried += 1;
            authenticated += usize::from(status != 401);
            succeeded += usize::from((200..300).contains(&status));
            assert!(status < 500, "{method} {target} ({signed}): {status} {reply}");
            assert!(documented.contains(&status), "{method} {target}: undocumented {status} {reply}");
            if status >= 400 {
                let problem: serde_json::Value =
                    serde_json::from_str(&reply).unwrap_or_else(|_| panic!("{method} {target}: {reply}"));
                assert_eq!(problem["status"].as_u64(), Some(status as u64), "{method} {target}: {reply}");
            }
        }
    }
    assert_eq!(tried, 12 * OPERATIONS.iter().filter(|o| o.2).count());
    // The signatures were good: most requests got past authentication, some succeeded (the
    // sync endpoints rightly answer 401 to a member: they take validators' signatures only).
    assert!(authenticated > tried * 2 / 3, "{authenticated} of {tried} authenticated");
    assert!(succeeded > 0, "no signed request succeeded");
}
