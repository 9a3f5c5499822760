//! `medledger import`: a hospital's existing records (FHIR NDJSON, Bundles of any type, or single
//! resources; a file or a folder) loaded through the gateway's own write path.
//!
//! - Patients found in the files who are not enrolled yet are enrolled in the importing doctor's
//!   organisation's custody (DESIGN §8) with an `--all --write` grant to that doctor.
//! - Files are read and planned a group at a time; each group's records are sealed on every core,
//!   uploaded a few at a time and registered in one batch.
//! - Resumable: record and patient ids are derived from the importer's secret and the file's
//!   digest, so a re-run skips what is on the ledger; a journal (encrypted at rest) remembers
//!   finished files and the source's patient keys.
//! - Invalid resources are reported (file, entry, FHIR path) and skipped; the rest goes on.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use medledger_crypto::local::LocalKey;
use medledger_sdk::{Custody, SdkError};
use medledger_types::{MemberId, RecordId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fhir::{self, FhirError};
use crate::plan::{Item, Plan};
use crate::service::Gateway;

/// Largest file read.
pub const FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Most files under one folder.
pub const FILES_MAX: usize = 100_000;
/// Resources planned and written together, by default (`--batch`).
pub const BATCH_DEFAULT: usize = 2_000;
/// Largest batch.
pub const BATCH_MAX: usize = 20_000;
/// Invalid entries listed in the summary (all are counted).
const INVALID_LISTED_MAX: usize = 1_000;

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub files: usize,
    /// Files finished by an earlier run (from the journal).
    pub files_already_done: usize,
    pub resources_written: usize,
    /// Resources found on the ledger already (an interrupted run resumed).
    pub resources_already_present: usize,
    /// Resources of no FHIR R4 type (nothing else is skipped: those that name no patient, such
    /// as Practitioner, Organization or Medication, go to the organisation's directory).
    pub resources_not_patient_data: usize,
    pub resources_invalid: usize,
    pub resources_failed: usize,
    pub patients_enrolled: usize,
    pub seconds: f64,
    pub resources_per_second: f64,
    /// `file: entry N: problem`, without resource content.
    pub problems: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Journal {
    /// Source patient keys (`urn:uuid:..`, `Patient/123`) to the members they became.
    patients: HashMap<String, MemberId>,
    /// SHA-256 of every finished file.
    files_done: BTreeSet<String>,
}

struct JournalFile {
    path: PathBuf,
    key: LocalKey,
    /// Scope of derived ids: one per importer and source.
    scope: String,
    state: Journal,
}

impl JournalFile {
    fn open(gateway: &Gateway, source: &Path) -> Result<Self, SdkError> {
        let canonical = source.canonicalize().map_err(|e| SdkError::Usage(format!("{}: {e}", source.display())))?;
        let scope = hex::encode(gateway.me.local_id(format!("import/{}", canonical.display()).as_bytes())?);
        let dir = gateway.session.home.dir().join("imports");
        std::fs::create_dir_all(&dir).map_err(|e| SdkError::Other(e.to_string()))?;
        let path = dir.join(format!("{scope}.journal"));
        let key = gateway.me.local_key("medledger/import-journal/v1")?;
        let state = match std::fs::read(&path) {
            Ok(sealed) => {
                let plain = key
                    .open(scope.as_bytes(), &sealed)
                    .map_err(|_| SdkError::Integrity("the import journal does not open with this identity".into()))?;
                serde_json::from_slice(&plain).map_err(|_| SdkError::Other("the import journal is malformed".into()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Journal::default(),
            Err(e) => return Err(SdkError::Other(format!("{}: {e}", path.display()))),
        };
        Ok(JournalFile { path, key, scope, state })
    }

    fn save(&self) -> Result<(), SdkError> {
        let json = serde_json::to_vec(&self.state).map_err(|e| SdkError::Other(e.to_string()))?;
        let sealed = self.key.seal(self.scope.as_bytes(), &json).map_err(|e| SdkError::Other(e.to_string()))?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, sealed)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .map_err(|e| SdkError::Other(e.to_string()))
    }
}

/// The files to import: FILE itself, or every `.json`, `.ndjson` and `.jsonl` under DIR (sorted).
pub fn files_of(input: &Path) -> Result<Vec<PathBuf>, SdkError> {
    let meta = std::fs::metadata(input).map_err(|e| SdkError::Usage(format!("{}: {e}", input.display())))?;
    if meta.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(input.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| SdkError::Usage(format!("{}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() && depth < 16 {
                stack.push((path, depth + 1));
            } else if kind.is_file()
                && path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "json" | "ndjson" | "jsonl"))
            {
                out.push(path);
                if out.len() > FILES_MAX {
                    return Err(SdkError::Usage(format!("more than {FILES_MAX} files under one folder")));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One file's resources, valid ones only; invalid ones are reported into `summary`.
fn read_items(path: &Path, bytes: &[u8], label: &str, summary: &mut Summary) -> Vec<Item> {
    let mut items = Vec::new();
    let problem = |summary: &mut Summary, what: String| {
        summary.resources_invalid += 1;
        if summary.problems.len() < INVALID_LISTED_MAX {
            summary.problems.push(format!("{label}: {what}"));
        }
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        problem(summary, "not UTF-8".into());
        return items;
    };
    let ndjson = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e != "json");
    let mut raw: Vec<(String, Option<String>, Value)> = Vec::new();
    if ndjson {
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) => raw.push((format!("line {}", n + 1), None, v)),
                Err(_) => problem(summary, format!("line {}: not JSON", n + 1)),
            }
        }
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(v) if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") => {
                for (n, entry) in v.get("entry").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    let url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_string);
                    if let Some(resource) = entry.get("resource") {
                        raw.push((format!("entry {n}"), url, resource.clone()));
                    }
                }
            }
            Ok(v) => raw.push(("resource".into(), None, v)),
            Err(e) => problem(summary, format!("not JSON (line {})", e.line())),
        }
    }
    for (at, full_url, value) in raw {
        let Value::Object(resource) = value else {
            problem(summary, format!("{at}: not a JSON object"));
            continue;
        };
        let kind = fhir::resource_type(&resource).to_string();
        if !fhir::is_resource_type(&kind) {
            summary.resources_not_patient_data += 1;
            continue;
        }
        let text = serde_json::to_string(&resource).unwrap_or_default();
        if let Err(e) = fhir::validate(&text) {
            let first = e.issues.first().map_or_else(|| e.diagnostics.clone(), |(path, msg)| format!("{path}: {msg}"));
            problem(summary, format!("{at}: {kind}: {first}"));
            continue;
        }
        items.push(Item { full_url, resource });
    }
    items
}

/// A batch submitted and not yet accounted: its resources' (file, entry) labels and its files.
struct Pending {
    submitted: crate::service::Submitted,
    labels: Vec<(String, usize)>,
    finished: Vec<(String, String, u64)>,
}

/// Counts a batch's results and marks its files done (those with no failed resource).
fn account(
    summary: &mut Summary,
    journal: &mut JournalFile,
    results: Vec<Result<Option<crate::service::Stored>, FhirError>>,
    labels: Vec<(String, usize)>,
    finished: Vec<(String, String, u64)>,
    done_bytes: &mut u64,
) -> Result<(), SdkError> {
    let mut failed_files = BTreeSet::new();
    for (result, (label, index)) in results.into_iter().zip(labels) {
        match result {
            Ok(Some(_)) => summary.resources_written += 1,
            Ok(None) => summary.resources_already_present += 1,
            Err(e) => {
                summary.resources_failed += 1;
                if summary.problems.len() < INVALID_LISTED_MAX {
                    summary.problems.push(format!("{label}: entry {index}: {}", e.diagnostics));
                }
                failed_files.insert(label);
            }
        }
    }
    for (label, digest, len) in finished {
        *done_bytes += len;
        if !failed_files.contains(&label) {
            journal.state.files_done.insert(digest);
        }
    }
    journal.save()
}

/// Imports `input` as the gateway's member (a doctor), enrolling unknown patients in the
/// custody of the gateway's custodian's organisation. `progress` is told the bytes done and the
/// resources written.
pub async fn import(
    gateway: &Gateway,
    input: &Path,
    batch: usize,
    mut progress: impl FnMut(u64, &Summary),
) -> Result<Summary, SdkError> {
    if batch == 0 || batch > BATCH_MAX {
        return Err(SdkError::Usage(format!("--batch takes 1 to {BATCH_MAX} resources")));
    }
    let started = Instant::now();
    let admin = gateway.custodian.as_ref().ok_or_else(|| SdkError::Usage("importing needs a custodian".into()))?;
    let mut files = files_of(input)?;
    // Files of Patient resources first (a Bulk Data export names its files by type), so that a
    // patient's chart is chosen by the patient's identifier before other files refer to it.
    files.sort_by_key(|f| !f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("Patient")));
    let mut journal = JournalFile::open(gateway, input)?;
    let custody = Custody::open(&gateway.session.home, admin)?;
    let me = gateway.me.contact();
    let mut summary = Summary { files: files.len(), ..Summary::default() };
    let mut done_bytes = 0u64;

    let mut pending: Option<Pending> = None;
    let mut queue = files.into_iter().peekable();
    while queue.peek().is_some() {
        // A group: whole files until about `batch` resources.
        let mut group: Vec<(String, String, Vec<Item>, u64)> = Vec::new();
        let mut size = 0;
        while size < batch {
            let Some(path) = queue.next() else { break };
            let label = path.strip_prefix(input).unwrap_or(&path).display().to_string();
            let label = if label.is_empty() { path.display().to_string() } else { label };
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len > FILE_BYTES_MAX {
                summary.resources_invalid += 1;
                summary.problems.push(format!("{label}: over {} MiB", FILE_BYTES_MAX >> 20));
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| SdkError::Usage(format!("{}: {e}", path.display())))?;
            let digest = hex::encode(medledger_crypto::sha256(&bytes));
            if journal.state.files_done.contains(&digest) {
                summary.files_already_done += 1;
                done_bytes += len;
                continue;
            }
            let items = read_items(&path, &bytes, &label, &mut summary);
            size += items.len();
            group.push((label, digest, items, len));
        }
        // Plan every file; collect the patients that need a chart.
        let mut plans = Vec::with_capacity(group.len());
        let mut wanted: Vec<String> = Vec::new();
        let mut identifiers: HashMap<String, String> = HashMap::new();
        for (label, digest, items, len) in group {
            let plan = Plan::new(items, |key| journal.state.patients.get(key).copied())
                .map_err(|e| SdkError::Other(format!("{label}: {}", e.diagnostics)))?;
            for key in plan.new_patients.iter().chain(&plan.unresolved_patients) {
                if !journal.state.patients.contains_key(key) && !wanted.contains(key) {
                    wanted.push(key.clone());
                }
                if let Some(identifier) = plan.match_identifier(key) {
                    identifiers.insert(key.clone(), identifier);
                }
            }
            plans.push((label, digest, plan, len));
        }
        if !wanted.is_empty() {
            // A patient with an identifier gets the chart that identifier names for the
            // organisation: its member id is a keyed hash of the identifier under the custodian's
            // secret (a blind index: nothing of the identifier reaches the ledger), so the same
            // patient imported again, from another folder or in another form (NDJSON, Bundles),
            // by any importer of the organisation, is the same member. One without is known by
            // its place in this import only.
            let members: Vec<MemberId> = wanted
                .iter()
                .map(|key| match identifiers.get(key) {
                    Some(identifier) => crate::plan::identified_patient(admin, identifier),
                    None => gateway
                        .me
                        .local_id(format!("import/{}/patient/{key}", journal.scope).as_bytes())
                        .map(MemberId::new),
                })
                .collect::<Result<_, _>>()?;
            let (_, enrolled) = gateway.session.ensure_custodial(admin, &custody, &me, members.clone()).await?;
            summary.patients_enrolled += enrolled;
            for (key, member) in wanted.into_iter().zip(members) {
                journal.state.patients.insert(key, member);
            }
            journal.save()?;
        }
        // Resolve and write the whole group in one batch.
        let mut planned = Vec::new();
        let mut finished = Vec::new();
        for (label, digest, plan, len) in plans {
            for (alias, key) in plan.aliases() {
                if let Some(member) = journal.state.patients.get(key).copied() {
                    journal.state.patients.entry(alias.clone()).or_insert(member);
                }
            }
            let scope = journal.scope.clone();
            let mut derive_failed = false;
            let (file_planned, skipped) = plan
                .resolve(&journal.state.patients, Some(gateway.patientless_owner()), |i, source| {
                    // A resource is known by its patient and its id in the source system, so
                    // importing it again (another folder, another form) finds it present; one
                    // without either, by its place in this file.
                    let derived = match source {
                        Some((patient, source)) => crate::plan::source_record(admin, &patient, &source),
                        None => gateway
                            .me
                            .local_id(format!("import/{scope}/record/{digest}/{i}").as_bytes())
                            .map(RecordId::new),
                    };
                    derived.unwrap_or_else(|_| {
                        derive_failed = true;
                        RecordId::new([0; 16])
                    })
                })
                .map_err(|e: FhirError| SdkError::Other(format!("{label}: {}", e.diagnostics)))?;
            if derive_failed {
                return Err(SdkError::Other("record ids could not be derived".into()));
            }
            summary.resources_not_patient_data += skipped.len();
            let labels = file_planned.iter().map(|p| (label.clone(), p.index)).collect::<Vec<_>>();
            planned.extend(file_planned.into_iter().zip(labels));
            finished.push((label, digest, len));
        }
        let (writes, labels): (Vec<_>, Vec<_>) = planned.into_iter().unzip();
        // Submitted, not awaited: this batch commits while the next one is read, planned,
        // sealed and uploaded. The previous batch is accounted once this one is on its way.
        let submitted = gateway.submit_many(writes).await.map_err(|e| SdkError::Other(e.diagnostics))?;
        if let Some(previous) = pending.replace(Pending { submitted, labels, finished }) {
            let results = gateway.finish(previous.submitted).await;
            account(&mut summary, &mut journal, results, previous.labels, previous.finished, &mut done_bytes)?;
            summary.seconds = started.elapsed().as_secs_f64();
            progress(done_bytes, &summary);
        }
    }
    if let Some(last) = pending.take() {
        let results = gateway.finish(last.submitted).await;
        account(&mut summary, &mut journal, results, last.labels, last.finished, &mut done_bytes)?;
        progress(done_bytes, &summary);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    summary.resources_per_second =
        if summary.seconds > 0.0 { summary.resources_written as f64 / summary.seconds } else { 0.0 };
    Ok(summary)
}
