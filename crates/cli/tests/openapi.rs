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
    ("get", "/v1/members/{id}", false),
    ("get", "/v1/members/{id}/nonce", false),
    ("get", "/v1/charts/{patient}", false),
    ("get", "/v1/charts/{patient}/envelope", true),
    ("get", "/v1/grants/{patient}/{grantee}", false),
    ("get", "/v1/records/{id}", false),
    ("get", "/v1/patients/{id}/records", true),
    ("get", "/v1/patients/{id}/audit", true),
    ("put", "/v1/blobs/{digest}", true),
    ("post", "/v1/blobs", true),
    ("get", "/v1/access/{tx}/bundle", true),
    ("get", "/v1/access/{tx}/content", true),
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
    assert!(report.contains("Tested: 22"), "{report}");
    assert!(report.contains("passed") && !report.contains("failures"), "{report}");
}
