//! Bulk export (FHIR Bulk Data Access IG, the way migrations and research extracts leave an EHR;
//! GDPR Art. 15/20 for a patient's own chart): every resource of some charts as NDJSON, one file
//! per resource type.
//!
//! Each resource is an audited read (the same RecordAccess as any read), so an export is in each
//! patient's trail resource by resource. Charts are read one at a time and written out as they
//! come: memory holds a few charts. Resources deleted through the API are left out, as a search
//! leaves them.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use medledger_types::MemberId;

use crate::fhir::FhirError;
use crate::index::JustRead;
use crate::service::{Gateway, Search, Stored};

/// Most charts one export reads.
pub const EXPORT_CHARTS_MAX: usize = 10_000;
/// Charts read at once: memory holds at most this many charts' resources.
const CHARTS_IN_FLIGHT: usize = 4;

/// One NDJSON file of an export.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Output {
    #[serde(rename = "type")]
    pub resource_type: String,
    /// The file's name in the export's folder (`Type.ndjson`).
    pub file: String,
    pub count: usize,
}

/// What to export: whose charts, which types, and how far it got (charts done, charts in all).
pub struct Request {
    pub patients: Vec<MemberId>,
    /// Only these types (`_type`), when given.
    pub types: Option<Vec<String>>,
    /// A chart the member may not read is an error (one named patient), not left out (every
    /// chart the member holds a grant on, some of them since revoked).
    pub strict: bool,
}

/// Exports `request` into `dir` (created, 0700; files 0600): one `Type.ndjson` per type found.
/// `progress(done, total)` is called after each chart. Returns the files, by type. On an error
/// the folder is removed: nothing half-written is left.
pub async fn export(
    gateway: &Gateway,
    request: &Request,
    dir: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<Vec<Output>, FhirError> {
    create_private_dir(dir).map_err(io)?;
    let result = export_into(gateway, request, dir, progress).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn io(e: std::io::Error) -> FhirError {
    FhirError::new(500, "exception", format!("writing the export: {e}"))
}

async fn export_into(
    gateway: &Gateway,
    request: &Request,
    dir: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Output>, FhirError> {
    use futures::StreamExt;
    let mut files: BTreeMap<String, (std::io::BufWriter<std::fs::File>, usize)> = BTreeMap::new();
    let total = request.patients.len().min(EXPORT_CHARTS_MAX);
    // Many charts: one look over all of them first (their entries a thousand per request, not
    // a request per chart), then each chart from the index.
    let many = if request.patients.len() > 1 { Some(gateway.look_over_all().await?) } else { None };
    let many = many.as_ref();
    // A few charts read at once (each one batch of audited accesses), written out in order.
    let mut charts = futures::stream::iter(request.patients.iter().take(EXPORT_CHARTS_MAX).copied())
        .map(|patient| export_chart(gateway, request, many, patient))
        .buffered(CHARTS_IN_FLIGHT);
    let mut done = 0;
    while let Some(found) = charts.next().await {
        for stored in found? {
            let kind = stored.resource_type().to_string();
            if !files.contains_key(&kind) {
                let file = open_private(&dir.join(format!("{kind}.ndjson"))).map_err(io)?;
                files.insert(kind.clone(), (std::io::BufWriter::new(file), 0));
            }
            let (writer, count) = files.get_mut(&kind).expect("inserted above");
            let line = serde_json::to_string(&stored.resource).map_err(|e| io(std::io::Error::other(e)))?;
            writer.write_all(line.as_bytes()).and_then(|()| writer.write_all(b"\n")).map_err(io)?;
            *count += 1;
        }
        done += 1;
        progress(done, total);
    }
    let mut outputs = Vec::with_capacity(files.len());
    for (kind, (mut writer, count)) in files {
        writer.flush().map_err(io)?;
        writer.get_ref().sync_all().map_err(io)?;
        outputs.push(Output { file: format!("{kind}.ndjson"), resource_type: kind, count });
    }
    Ok(outputs)
}

/// One chart's resources of the types asked for, read (audited): from the index after a look
/// over all charts (`many`), else by a search of that chart.
async fn export_chart(
    gateway: &Gateway,
    request: &Request,
    many: Option<&(HashSet<MemberId>, JustRead)>,
    patient: MemberId,
) -> Result<Vec<Stored>, FhirError> {
    // What this chart's own search read already, when it had one.
    let (hits, searched) = match many {
        Some((scope, _)) if !scope.contains(&patient) => {
            if request.strict {
                return Err(FhirError::forbidden("this member may not list that patient's records"));
            }
            return Ok(Vec::new());
        }
        Some(_) => (gateway.chart_hits(&patient), None),
        None => {
            let search = Search { patient: Some(patient), ..Search::default() };
            match gateway.find(&search, &[], None, usize::MAX).await {
                Ok(found) => (found.hits, Some(found.just_read)),
                // A chart this member may no longer read: nothing of it.
                Err(e) if !request.strict && (e.status == 403 || e.status == 404) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
    };
    // Only the types asked for are read (each read is an event in the patient's trail).
    let wanted: Vec<_> = hits
        .into_iter()
        .filter(|h| request.types.as_ref().is_none_or(|t| t.iter().any(|k| **k == *h.resource_type)))
        .collect();
    let none = JustRead::default();
    let just_read = searched.as_ref().or(many.map(|(_, j)| j)).unwrap_or(&none);
    gateway.read_hits(&wanted, just_read).await
}

/// Every chart the member may read (see [`medledger_sdk::Session::readable_charts`]).
pub async fn readable_charts(gateway: &Gateway) -> Result<Vec<MemberId>, FhirError> {
    let teams: Vec<MemberId> = gateway.session.home.teams().unwrap_or_default().into_values().collect();
    Ok(gateway.session.readable_charts(&gateway.me, &teams, EXPORT_CHARTS_MAX).await?)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn open_private(path: &PathBuf) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}
