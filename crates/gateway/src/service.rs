//! What the gateway does for a FHIR client, as one member: create, read, update, search and
//! transaction, each through the SDK (validate, encrypt, register; audit before every read).
//!
//! Ids: a resource's FHIR id is its record id (32 hex digits, a random pseudonym already on the
//! ledger), except a Patient's, which is the patient's member id, so `Patient/ID` in a
//! reference names the chart itself. No type, code, name or date leaves this process in the
//! clear: the ledger sees record ids, digests and envelopes; metadata is encrypted in the sidecar.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

use medledger_ledger::state::RecordEntry;
use medledger_ledger::{RecordAccess, TxKind};
use medledger_sdk::{Committed, Custody, Identity, RecordMetadata, SdkError, Session};
use medledger_types::{MemberId, PurposeOfUse, RecordId, Role, Timestamp};
use serde_json::{Map, Value};

use crate::cache::{Cache, Cached};
use crate::fhir::{self, FhirError};
use crate::plan::Planned;

pub type FhirResult<T> = std::result::Result<T, FhirError>;

/// The input positions of an upload batch, and its (digest, ciphertext) pairs.
type UploadBatch = (Vec<usize>, Vec<(medledger_types::Digest, Vec<u8>)>);

/// Upload batches in flight at once.
const UPLOADS_IN_FLIGHT: usize = 2;
/// Ciphertexts per upload batch, and their largest total (the node's limits are 1024 and 32 MiB).
const UPLOAD_BATCH_ITEMS: usize = 256;
const UPLOAD_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Most charts a search without `patient` looks through (the ledger lists them 1,000 a page).
pub const SEARCH_CHARTS_MAX: usize = 100_000;

/// A resource as the gateway returns it, with its version and ledger time.
#[derive(Clone, Debug)]
pub struct Stored {
    pub resource: Map<String, Value>,
    pub version: u32,
    pub updated: Timestamp,
}

impl Stored {
    pub fn resource_type(&self) -> &str {
        fhir::resource_type(&self.resource)
    }
    pub fn id(&self) -> &str {
        self.resource.get("id").and_then(Value::as_str).unwrap_or_default()
    }
}

/// Resources submitted by [`Gateway::submit_many`], awaiting [`Gateway::finish`].
pub struct Submitted {
    planned: Vec<Planned>,
    texts: Vec<String>,
    results: Vec<Option<FhirResult<Option<Stored>>>>,
    /// The input position of each submitted transaction.
    positions: Vec<usize>,
    ids: Vec<Result<medledger_types::TxId, String>>,
}

/// One search: the type (None for `$everything`), the patients, and the filters.
#[derive(Clone, Debug, Default)]
pub struct Search {
    pub resource_type: Option<String>,
    pub patient: Option<MemberId>,
    pub ids: Vec<String>,
    /// List every chart again, not only those whose head moved (`Cache-Control: no-cache`).
    pub fresh: bool,
}

pub struct Gateway {
    pub session: Session,
    pub me: Identity,
    /// An admin of the member's organisation, when the gateway may enrol patients in its custody.
    pub custodian: Option<Identity>,
    pub cache: Cache,
    /// What searches run on: see [`crate::index`].
    pub index: crate::index::Index,
    pub purpose: PurposeOfUse,
}

pub fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.get())).to_string()
}

/// `Patient/ID` or `ID` (a member id) to the member.
pub fn patient_param(value: &str) -> FhirResult<MemberId> {
    let id = value.strip_prefix("Patient/").unwrap_or(value);
    id.parse().map_err(|_| FhirError::not_found("no such patient (patient ids are 32 hex digits)"))
}

fn parse_json(text: &str) -> FhirResult<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(FhirError::new(502, "exception", "a stored record is not a FHIR resource")),
    }
}

impl Gateway {
    /// Where a resource that names no patient goes: a patient's own chart, or (for staff) their
    /// organisation's directory, readable by its staff (Practitioner, Organization, Location,
    /// Medication, a List without a subject...).
    pub fn patientless_owner(&self) -> MemberId {
        match self.me.role {
            Role::Patient => self.me.member,
            _ => self.session.directory_of(&self.me),
        }
    }

    /// Whose records a new resource joins: the chart its patient reference names, or (naming
    /// none) [`Gateway::patientless_owner`].
    async fn owner_of(&self, resource: &Map<String, Value>) -> FhirResult<MemberId> {
        match fhir::patient_reference(resource) {
            Some(reference) => {
                let (_, id) = fhir::reference_target(&reference)
                    .ok_or_else(|| FhirError::unprocessable("the patient reference must be Patient/ID"))?;
                let member: MemberId = id
                    .parse()
                    .map_err(|_| FhirError::unprocessable("the patient reference names no patient of this network"))?;
                let contact = self.session.contact_of(&self.me, &member).await.map_err(|e| match e {
                    SdkError::NotFound(_) => {
                        FhirError::unprocessable("the patient reference names no enrolled patient")
                    }
                    e => e.into(),
                })?;
                if contact.role != Role::Patient {
                    return Err(FhirError::unprocessable("the patient reference names a member who is not a patient"));
                }
                Ok(contact.member)
            }
            None => Ok(self.patientless_owner()),
        }
    }

    /// Encrypts and registers one resource as version `version` of `record` in `chart`.
    async fn write(
        &self,
        chart: &MemberId,
        record: RecordId,
        version: u32,
        resource: &mut Map<String, Value>,
    ) -> FhirResult<Stored> {
        set_meta(resource, version);
        let text = serde_json::to_string(resource).map_err(|_| FhirError::invalid("resource does not serialize"))?;
        let metadata = medledger_sdk::describe(text.as_bytes())?;
        let committed = if version == 1 {
            let create = || async {
                self.session.release().await?;
                let keys = self.session.record_keys(&self.me, chart).await?;
                let sealed = self.session.seal_record(&self.me, &keys, record, 1, text.as_bytes(), &metadata)?;
                self.session.client.put_blob(&self.me, &sealed.digest, sealed.ciphertext).await?;
                self.session.transact(&self.me, sealed.kind, Some(sealed.sidecar)).await
            };
            // Sealed for share keys a validator replaced meanwhile: once more with the new keys.
            match create().await {
                Err(e) if self.session.stale_shares(&e).await? => create().await?,
                other => other?,
            }
        } else {
            self.session.append_version(&self.me, record, Some(version - 1), text.as_bytes()).await?
        };
        self.remember(record, *chart, version, resource, &text);
        let mut returned = resource.clone();
        set_last_updated(&mut returned, committed.time);
        Ok(Stored { resource: returned, version, updated: committed.time })
    }

    fn remember(&self, record: RecordId, patient: MemberId, version: u32, resource: &Map<String, Value>, text: &str) {
        self.cache.put(Cached {
            record,
            patient,
            version,
            resource_type: fhir::resource_type(resource).to_string(),
            resource: text.to_string(),
        });
    }

    /// `POST /{type}`.
    pub async fn create(&self, kind: &str, mut resource: Map<String, Value>) -> FhirResult<Stored> {
        if fhir::resource_type(&resource) != kind {
            return Err(FhirError::invalid("resourceType does not match the URL"));
        }
        if kind == "Patient" {
            let identifier = crate::plan::patient_identifier(&resource);
            let mut charts = self.new_patient_charts(&[identifier]).await?;
            let (patient, record) =
                charts.pop().ok_or_else(|| FhirError::new(500, "exception", "enrolment returned nothing"))?;
            resource.insert("id".into(), Value::String(patient.to_hex()));
            return self.write(&patient, record, 1, &mut resource).await;
        }
        let record = RecordId::new(medledger_crypto::random_bytes());
        let owner = self.owner_of(&resource).await?;
        resource.insert("id".into(), Value::String(record.to_hex()));
        self.write(&owner, record, 1, &mut resource).await
    }

    /// The chart and record of each new Patient resource (`identifiers`: each one's
    /// [`crate::plan::patient_identifier`]): the member's own chart (a patient), or a patient
    /// enrolled in the organisation's custody with this clinician's treatment grant. A patient
    /// with an identifier gets the chart the organisation's blind index names (the import's too),
    /// so a second Patient with the same identifier is refused as a duplicate, not enrolled again.
    async fn new_patient_charts(&self, identifiers: &[Option<String>]) -> FhirResult<Vec<(MemberId, RecordId)>> {
        let fresh = || RecordId::new(medledger_crypto::random_bytes());
        if identifiers.is_empty() {
            return Ok(Vec::new());
        }
        if self.me.role == Role::Patient {
            if identifiers.len() > 1 || self.cache.patient_resource(&self.me.member).is_some() {
                return Err(FhirError::new(409, "duplicate", "this chart already has a Patient resource; update it"));
            }
            return Ok(vec![(self.me.member, fresh())]);
        }
        let Some(admin) = &self.custodian else {
            return Err(FhirError::unprocessable(
                "patients are enrolled by their organisation: start the gateway with --custodian ADMIN, or enrol \
                 them with `medledger id create`",
            ));
        };
        if self.me.role != Role::Doctor {
            return Err(FhirError::forbidden("only a doctor enrols patients in custody (with a treatment grant)"));
        }
        let mut charts = Vec::with_capacity(identifiers.len());
        for (i, identifier) in identifiers.iter().enumerate() {
            let Some(identifier) = identifier else {
                charts.push((MemberId::new(medledger_crypto::random_bytes()), fresh()));
                continue;
            };
            let patient = crate::plan::identified_patient(admin, identifier)?;
            let record = crate::plan::source_record(admin, &patient, &format!("Patient#{identifier}"))?;
            let taken = match self.session.client.record(&self.me, &record).await {
                Ok(_) | Err(SdkError::Denied(_)) => true,
                Err(SdkError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            };
            if taken || charts.iter().any(|(p, _)| *p == patient) {
                let which = if identifiers.len() > 1 { format!("entry {i}: ") } else { String::new() };
                return Err(FhirError::new(
                    409,
                    "duplicate",
                    format!(
                        "{which}a patient with this identifier is enrolled in this organisation already: \
                         Patient/{patient} (search by identifier, or use If-None-Exist)"
                    ),
                ));
            }
            charts.push((patient, record));
        }
        let custody = Custody::open(&self.session.home, admin)?;
        let members = charts.iter().map(|(p, _)| *p).collect();
        self.session.ensure_custodial(admin, &custody, &self.me.contact(), members).await?;
        Ok(charts)
    }

    /// The record and ledger entry behind `Type/id`.
    async fn locate(&self, kind: &str, id: &str) -> FhirResult<RecordEntry> {
        if !fhir::is_resource_type(kind) {
            return Err(FhirError::not_found("unknown resource type"));
        }
        if kind == "Patient" {
            let patient = patient_param(id)?;
            if let Some(cached) = self.cache.patient_resource(&patient) {
                return Ok(self.session.client.record(&self.me, &cached.record).await?);
            }
            // Not seen yet: read the chart until its Patient resource shows up.
            let contact = self
                .session
                .contact_of(&self.me, &patient)
                .await
                .map_err(|_| FhirError::not_found("no such patient"))?;
            let entries = self.session.list(&self.me, &contact).await?;
            let unseen: Vec<RecordEntry> = entries
                .into_iter()
                .filter(|e| self.cache.get(&e.record).is_none_or(|c| c.version != e.version))
                .collect();
            self.read_entries(&unseen).await?;
            let cached = self
                .cache
                .patient_resource(&patient)
                .ok_or_else(|| FhirError::not_found("no Patient resource in this chart"))?;
            return Ok(self.session.client.record(&self.me, &cached.record).await?);
        }
        let record: RecordId = id.parse().map_err(|_| FhirError::not_found("no such resource"))?;
        match self.session.client.record(&self.me, &record).await {
            Ok(entry) => Ok(entry),
            Err(SdkError::NotFound(_)) => Err(FhirError::not_found("no such resource")),
            Err(SdkError::Denied(_)) => {
                // Not entitled to the entry: the access is asked all the same, so the ledger
                // denies it and the attempt is in the patient's trail.
                let version = self.session.client.record_version(&self.me, &record).await?;
                let kind = TxKind::RecordAccess(RecordAccess { record, version, purpose: self.purpose });
                self.session.transact(&self.me, kind, None).await?;
                Ok(self.session.client.record(&self.me, &record).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /{type}/{id}`: an audited access on the ledger, then decrypt. A resource deleted
    /// through the API answers 410.
    pub async fn read(&self, kind: &str, id: &str) -> FhirResult<Stored> {
        let stored = self.read_current(kind, id).await?;
        if is_deleted(&stored.resource) {
            return Err(FhirError::new(
                410,
                "deleted",
                format!("deleted at version {} (marked entered in error)", stored.version),
            ));
        }
        Ok(stored)
    }

    /// `GET /{type}/{id}/_history/{vid}`: version `vid`, current or earlier (an audited access of
    /// that version). A version that marks a delete answers 410, as does one a rotation replaced.
    pub async fn read_version(&self, kind: &str, id: &str, version: u32) -> FhirResult<Stored> {
        let current = self.locate(kind, id).await?;
        if version == 0 || version > current.version {
            return Err(FhirError::not_found(format!("no version {version}: the current one is {}", current.version)));
        }
        let stored = match self.open_versions(&current, &[version]).await?.pop() {
            Some(Ok(stored)) => stored,
            Some(Err(e)) => return Err(e),
            None => return Err(FhirError::not_found("no such version")),
        };
        if stored.resource_type() != kind {
            return Err(FhirError::not_found("no such resource"));
        }
        if is_deleted(&stored.resource) {
            return Err(FhirError::new(410, "deleted", format!("version {version} marks a delete")));
        }
        Ok(stored)
    }

    /// `GET /{type}/{id}/_history`: the versions the ledger keeps readable, newest first, from
    /// `offset`, at most `count` (each an audited access of that version); and how many there are.
    pub async fn history(&self, kind: &str, id: &str, count: usize, offset: usize) -> FhirResult<(Vec<Stored>, usize)> {
        let current = self.locate(kind, id).await?;
        let total = current.version as usize;
        let versions: Vec<u32> = (1..=current.version).rev().skip(offset).take(count).collect();
        let mut out = Vec::with_capacity(versions.len());
        for read in self.open_versions(&current, &versions).await? {
            match read {
                Ok(stored) if stored.resource_type() == kind => out.push(stored),
                Ok(_) => return Err(FhirError::not_found("no such resource")),
                // One a rotation replaced is no longer kept: left out, as a purged version is.
                Err(e) if e.status == 410 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((out, total))
    }

    /// Reads `versions` of `current`'s record: one batch of audited accesses, then each opened
    /// (earlier versions are not cached: the cache holds current ones).
    async fn open_versions(&self, current: &RecordEntry, versions: &[u32]) -> FhirResult<Vec<FhirResult<Stored>>> {
        let accesses = versions
            .iter()
            .map(|&version| {
                let kind =
                    TxKind::RecordAccess(RecordAccess { record: current.record, version, purpose: self.purpose });
                (&self.me, kind, None)
            })
            .collect();
        let committed = self.session.transact_batch(accesses).await?;
        let opens = versions.iter().copied().zip(committed).map(move |(version, access)| async move {
            let gone = |e: SdkError| match e {
                SdkError::Usage(m) if m.contains(medledger_ledger::Rejection::VersionMismatch.as_str()) => {
                    FhirError::new(
                        410,
                        "deleted",
                        format!("version {version} is no longer kept (a rotation replaced it)"),
                    )
                }
                e => e.into(),
            };
            let access = access.map_err(gone)?;
            let opened = self.session.open_access(&self.me, current.record, version, access).await?;
            let text = String::from_utf8(opened.plaintext.to_vec())
                .map_err(|_| FhirError::new(415, "not-supported", "this record is not a FHIR resource"))?;
            if opened.metadata.as_ref().and_then(|m: &RecordMetadata| m.resource_type.as_ref()).is_none() {
                return Err(FhirError::new(415, "not-supported", "this record is not a FHIR resource"));
            }
            let mut resource = parse_json(&text)?;
            set_id(&mut resource, current);
            set_meta(&mut resource, version);
            set_last_updated(&mut resource, opened.record.created_at);
            Ok(Stored { resource, version, updated: opened.record.created_at })
        });
        use futures::StreamExt;
        Ok(futures::stream::iter(opens).buffered(8).collect().await)
    }

    /// The current version of `Type/id`, deleted or not (an audited access).
    async fn read_current(&self, kind: &str, id: &str) -> FhirResult<Stored> {
        let entry = self.locate(kind, id).await?;
        let found = self.read_entries(std::slice::from_ref(&entry)).await?;
        let stored = found.into_iter().next().ok_or_else(|| FhirError::not_found("no such resource"))??;
        if stored.resource_type() != kind {
            return Err(FhirError::not_found("no such resource"));
        }
        Ok(stored)
    }

    /// `DELETE /{type}/{id}`: on a ledger nothing is unwritten. The delete is the next version of
    /// the record, the same resource tagged [`DELETED_TAG`] (entered in error), written like any
    /// update (a write in the patient's trail); reads then answer 410 and searches leave it out.
    /// Erasing a record for good is the patient's (`record erase`). Returns the version that
    /// marks it, or `None` when it was deleted already (nothing is written).
    pub async fn delete(&self, kind: &str, id: &str) -> FhirResult<Option<u32>> {
        let current = self.read_current(kind, id).await?;
        if is_deleted(&current.resource) {
            return Ok(None);
        }
        if kind == "Patient" {
            return Err(FhirError::new(
                405,
                "not-supported",
                "a Patient resource is not deleted through the API: the patient erases their records",
            ));
        }
        let mut resource = current.resource;
        let meta = resource.entry("meta").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            let tags = meta.entry("tag").or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(tags) = tags {
                tags.push(serde_json::json!({"system": DELETED_TAG.0, "code": DELETED_TAG.1, "display": "Deleted through the FHIR API (entered in error)"}));
            }
        }
        let stored = self.update(kind, id, resource, Some(current.version)).await?;
        Ok(Some(stored.version))
    }

    /// Reads ledger entries: one batch of audited accesses; the allowed ones come from the cache
    /// when it holds that version, otherwise they are fetched and decrypted. Denied ones are
    /// evicted from the cache.
    pub(crate) async fn read_entries(&self, entries: &[RecordEntry]) -> FhirResult<Vec<FhirResult<Stored>>> {
        let accesses = entries
            .iter()
            .map(|e| {
                let kind =
                    TxKind::RecordAccess(RecordAccess { record: e.record, version: e.version, purpose: self.purpose });
                (&self.me, kind, None)
            })
            .collect();
        let committed = self.session.transact_batch(accesses).await?;
        let opens: Vec<_> =
            entries.iter().zip(committed).map(|(entry, access)| self.open_or_evict(entry, access)).collect();
        use futures::StreamExt;
        Ok(futures::stream::iter(opens).buffered(8).collect().await)
    }

    async fn open_or_evict(&self, entry: &RecordEntry, access: medledger_sdk::Result<Committed>) -> FhirResult<Stored> {
        match access {
            Ok(access) => self.open(entry, access).await,
            Err(e) => {
                if matches!(e, SdkError::Denied(_)) {
                    self.cache.remove(&entry.record);
                    self.index.remove(&entry.record);
                }
                Err(e.into())
            }
        }
    }

    async fn open(&self, entry: &RecordEntry, access: Committed) -> FhirResult<Stored> {
        let cached = self.cache.get(&entry.record).filter(|c| c.version == entry.version);
        let text = match cached {
            Some(c) => c.resource.clone(),
            None => {
                let opened = self.session.open_access(&self.me, entry.record, entry.version, access).await?;
                let text = String::from_utf8(opened.plaintext.to_vec())
                    .map_err(|_| FhirError::new(415, "not-supported", "this record is not a FHIR resource"))?;
                if opened.metadata.as_ref().and_then(|m: &RecordMetadata| m.resource_type.as_ref()).is_none() {
                    return Err(FhirError::new(415, "not-supported", "this record is not a FHIR resource"));
                }
                let resource = parse_json(&text)?;
                self.remember(entry.record, entry.patient, entry.version, &resource, &text);
                text
            }
        };
        self.stored(entry, &text)
    }

    /// `entry`'s resource as the gateway returns it, from its stored text.
    pub(crate) fn stored(&self, entry: &RecordEntry, text: &str) -> FhirResult<Stored> {
        let mut resource = parse_json(text)?;
        set_id(&mut resource, entry);
        set_meta(&mut resource, entry.version);
        set_last_updated(&mut resource, entry.created_at);
        Ok(Stored { resource, version: entry.version, updated: entry.created_at })
    }

    /// `PUT /{type}/{id}`: the next version (If-Match checked against the ledger's version).
    pub async fn update(
        &self,
        kind: &str,
        id: &str,
        mut resource: Map<String, Value>,
        if_match: Option<u32>,
    ) -> FhirResult<Stored> {
        if fhir::resource_type(&resource) != kind {
            return Err(FhirError::invalid("resourceType does not match the URL"));
        }
        if resource.get("id").and_then(Value::as_str) != Some(id) {
            return Err(FhirError::invalid("the resource's id must equal the id in the URL"));
        }
        let entry = match self.locate(kind, id).await {
            Err(e) if e.status == 404 => {
                return Err(FhirError::new(405, "not-supported", "update as create is not supported: POST to create"));
            }
            other => other?,
        };
        if let Some(expected) = if_match
            && expected != entry.version
        {
            return Err(FhirError::new(412, "conflict", format!("the resource is at version {}", entry.version)));
        }
        // The stored type must match too (reading it is an audited access, as any update needs).
        let current = self.read_entries(std::slice::from_ref(&entry)).await?.pop();
        match current {
            Some(Ok(s)) if s.resource_type() == kind => {}
            Some(Err(e)) => return Err(e),
            _ => return Err(FhirError::not_found("no such resource")),
        }
        if kind != "Patient" && self.owner_of(&resource).await? != entry.patient {
            return Err(FhirError::unprocessable(
                "a record cannot move to another patient's chart (nor between a chart and the directory)",
            ));
        }
        let version = entry.version.checked_add(1).ok_or_else(|| FhirError::unprocessable("too many versions"))?;
        let patient = entry.patient;
        self.write(&patient, entry.record, version, &mut resource).await.map_err(|e| {
            if e.status == 409 { FhirError::new(412, "conflict", "another version was written first") } else { e }
        })
    }

    /// `entries` of `patient`'s chart less the sensitive ones (outside chart-wide grants) this
    /// member has no way to read: asking for them would only fill the patient's trail with
    /// denials (and use up the signer's denial budget).
    pub(crate) async fn without_unreadable_sensitive(
        &self,
        patient: MemberId,
        entries: Vec<RecordEntry>,
    ) -> medledger_sdk::Result<Vec<RecordEntry>> {
        use medledger_ledger::state::RESTRICTED_CHART_EPOCH;
        let me = self.me.member;
        // Under break-glass (emergency treatment) the ledger decides each one: nothing left out.
        let emergency = self.purpose == PurposeOfUse::Etreat;
        if me == patient || emergency || entries.iter().all(|e| e.chart_epoch != RESTRICTED_CHART_EPOCH) {
            return Ok(entries);
        }
        let teams: Vec<MemberId> = self.session.home.teams().unwrap_or_default().into_values().collect();
        let now =
            Timestamp::new(std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64));
        let client = &self.session.client;
        let sensitive = client.sensitive_grant(&self.me, &patient, &me).await?.is_some_and(|g| g.is_live(now));
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut readable = entry.chart_epoch != RESTRICTED_CHART_EPOCH || sensitive || entry.author == me;
            // A per-record grant to the member, or to a care team of theirs.
            for grantee in std::iter::once(&me).chain(&teams) {
                if readable {
                    break;
                }
                // Not shown to this member (a team's grant it cannot see): the ledger decides.
                readable = match client.record_grant(&self.me, &patient, grantee, &entry.record).await {
                    Ok(grant) => grant.is_some_and(|g| g.is_live(now)),
                    Err(_) => true,
                };
            }
            if readable {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// `POST /` with a transaction Bundle: every entry checked and planned before anything is
    /// written (bad input changes nothing); then each entry is a record, written in one batch.
    pub async fn transaction(&self, bundle: Map<String, Value>) -> FhirResult<Vec<(Stored, &'static str)>> {
        if bundle.get("type").and_then(Value::as_str) != Some("transaction") {
            return Err(FhirError::invalid("POST / takes a Bundle of type transaction"));
        }
        let entries = bundle.get("entry").and_then(Value::as_array).cloned().unwrap_or_default();
        if entries.len() > fhir::BUNDLE_ENTRIES_MAX {
            return Err(FhirError::new(413, "too-costly", format!("at most {} entries", fhir::BUNDLE_ENTRIES_MAX)));
        }
        let mut items = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let method = entry.get("request").and_then(|r| r.get("method")).and_then(Value::as_str);
            if method != Some("POST") {
                return Err(FhirError::not_supported(format!("entry {i}: only POST entries are supported")));
            }
            let Some(Value::Object(resource)) = entry.get("resource") else {
                return Err(FhirError::invalid(format!("entry {i} has no resource")));
            };
            let full_url = entry.get("fullUrl").and_then(Value::as_str).map(str::to_string);
            items.push(crate::plan::Item { full_url, resource: resource.clone() });
        }
        crate::plan::check_items(&items)?;
        let plan = crate::plan::Plan::new(items, |_| None)?;
        if !plan.unresolved_patients.is_empty() {
            return Err(FhirError::unprocessable(
                "an entry references a patient who is neither in the Bundle nor enrolled on this network",
            ));
        }
        // New patients (Patient entries) are enrolled first; they need a custodian or are me.
        let identifiers: Vec<Option<String>> = plan.new_patients.iter().map(|key| plan.match_identifier(key)).collect();
        let mut members = HashMap::new();
        let mut patient_records = HashMap::new();
        for (key, (member, record)) in plan.new_patients.iter().zip(self.new_patient_charts(&identifiers).await?) {
            members.insert(key.clone(), member);
            patient_records.insert(member, record);
        }
        let existing: HashSet<MemberId> = plan.existing_patients.iter().copied().collect();
        for member in &existing {
            let contact = self.session.contact_of(&self.me, member).await.map_err(|_| {
                FhirError::unprocessable("an entry references a patient who is not enrolled on this network")
            })?;
            if contact.role != Role::Patient {
                return Err(FhirError::unprocessable(
                    "an entry's patient reference names a member who is not a patient",
                ));
            }
        }
        let directory = Some(self.patientless_owner());
        let (planned, skipped) = plan.resolve(&members, directory, |_, source| {
            // A new patient's own entry: the record its identifier names (see above).
            match source {
                Some((patient, source)) if source.starts_with("Patient#") => patient_records.get(&patient).copied(),
                _ => None,
            }
            .unwrap_or_else(|| RecordId::new(medledger_crypto::random_bytes()))
        })?;
        if let Some((i, why)) = skipped.first() {
            return Err(FhirError::unprocessable(format!("entry {i} {why}")));
        }
        let mut out = Vec::with_capacity(planned.len());
        for written in self.write_many(planned).await? {
            let stored = written?.ok_or_else(|| FhirError::new(500, "exception", "record id collision"))?;
            out.push((stored, "201 Created"));
        }
        Ok(out)
    }

    /// Uploads the sealed ciphertexts in signed batches (a few in flight); one result per item.
    async fn upload_all(&self, sealed: &mut [FhirResult<medledger_sdk::Sealed>]) -> Vec<FhirResult<()>> {
        use futures::StreamExt;
        let mut batches: Vec<UploadBatch> = Vec::new();
        let mut bytes = usize::MAX;
        for (i, s) in sealed.iter_mut().enumerate() {
            let Ok(s) = s else { continue };
            let ciphertext = std::mem::take(&mut s.ciphertext);
            let full = batches.last().is_none_or(|(items, _)| items.len() >= UPLOAD_BATCH_ITEMS);
            if full || bytes + ciphertext.len() > UPLOAD_BATCH_BYTES {
                batches.push((Vec::new(), Vec::new()));
                bytes = 0;
            }
            bytes += ciphertext.len();
            let (items, blobs) = batches.last_mut().expect("a batch was just pushed");
            items.push(i);
            blobs.push((s.digest, ciphertext));
        }
        let mut results: Vec<FhirResult<()>> =
            sealed.iter().map(|s| s.as_ref().map(|_| ()).map_err(Clone::clone)).collect();
        let uploads: Vec<_> = batches
            .into_iter()
            .map(|(items, blobs)| async move { (items, self.session.client.put_blobs(&self.me, blobs).await) })
            .collect();
        let mut done = futures::stream::iter(uploads).buffer_unordered(UPLOADS_IN_FLIGHT);
        while let Some((items, result)) = done.next().await {
            if let Err(e) = result {
                let e = FhirError::from(e);
                for i in items {
                    results[i] = Err(e.clone());
                }
            }
        }
        results
    }

    /// Writes planned resources as version 1 of their records in one batch: sealed here on
    /// every core, ciphertexts uploaded a few at a time, registrations submitted together and
    /// awaited. One result per resource, in order. A record that already exists (an import
    /// resumed with the same derived ids) comes back as `Ok(None)`.
    pub async fn write_many(&self, planned: Vec<Planned>) -> FhirResult<Vec<FhirResult<Option<Stored>>>> {
        let submitted = self.submit_many(planned).await?;
        Ok(self.finish(submitted).await)
    }

    /// The first half of [`Gateway::write_many`]: sealed, uploaded and submitted, not awaited,
    /// so a caller (the import) prepares its next batch while this one commits.
    pub async fn submit_many(&self, planned: Vec<Planned>) -> FhirResult<Submitted> {
        let mut charts = HashMap::new();
        self.session.release().await?;
        for p in &planned {
            if let std::collections::hash_map::Entry::Vacant(slot) = charts.entry(p.patient) {
                slot.insert(self.session.record_keys(&self.me, &p.patient).await?);
            }
        }
        let mut planned = planned;
        let texts: Vec<String> = planned
            .iter_mut()
            .map(|p| {
                set_meta(&mut p.resource, 1);
                serde_json::to_string(&p.resource).unwrap_or_default()
            })
            .collect();
        let seal = |range: std::ops::Range<usize>| -> Vec<FhirResult<medledger_sdk::Sealed>> {
            range
                .map(|i| {
                    // Validated when planned: the metadata is known without parsing again.
                    let metadata = RecordMetadata {
                        resource_type: Some(fhir::resource_type(&planned[i].resource).to_string()),
                        content_type: "application/fhir+json".into(),
                        size_bytes: texts[i].len() as u64,
                        sensitive: medledger_sdk::is_sensitive(&Value::Object(planned[i].resource.clone())),
                    };
                    let chart = &charts[&planned[i].patient];
                    Ok(self.session.seal_record(
                        &self.me,
                        chart,
                        planned[i].record,
                        1,
                        texts[i].as_bytes(),
                        &metadata,
                    )?)
                })
                .collect()
        };
        let n = planned.len();
        let mut sealed = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let half = n / 2;
                let second = scope.spawn(move || seal(half..n));
                let mut first = seal(0..half);
                first.extend(second.join().unwrap_or_default());
                first
            })
        });
        if sealed.len() != n {
            return Err(FhirError::new(500, "exception", "sealing failed"));
        }
        let uploaded = self.upload_all(&mut sealed).await;
        let mut results: Vec<Option<FhirResult<Option<Stored>>>> = (0..n).map(|_| None).collect();
        let mut batch = Vec::new();
        let mut positions = Vec::new();
        for (i, (s, up)) in sealed.into_iter().zip(uploaded).enumerate() {
            match (s, up) {
                (Ok(s), Ok(())) => {
                    batch.push((&self.me, s.kind, Some(s.sidecar)));
                    positions.push(i);
                }
                (Err(e), _) | (_, Err(e)) => results[i] = Some(Err(e)),
            }
        }
        let ids = self.session.submit_signed(batch).await?;
        Ok(Submitted { planned, texts, results, positions, ids })
    }

    /// The second half of [`Gateway::write_many`]: waits for the commits and caches what was
    /// written. One result per resource, in order.
    pub async fn finish(&self, submitted: Submitted) -> Vec<FhirResult<Option<Stored>>> {
        let Submitted { planned, texts, mut results, positions, ids } = submitted;
        let committed = self.session.wait_all(ids).await;
        for (i, c) in positions.into_iter().zip(committed) {
            let p = &planned[i];
            results[i] = Some(match c {
                Ok(c) => {
                    self.remember(p.record, p.patient, 1, &p.resource, &texts[i]);
                    let mut returned = p.resource.clone();
                    set_last_updated(&mut returned, c.time);
                    Ok(Some(Stored { resource: returned, version: 1, updated: c.time }))
                }
                Err(SdkError::Usage(m)) if m.contains(medledger_ledger::Rejection::RecordExists.as_str()) => Ok(None),
                Err(e) => Err(e.into()),
            });
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(FhirError::new(500, "exception", "lost")))).collect()
    }
}

/// Sets `meta.versionId` (and drops a client's `lastUpdated`: the ledger's time is the truth).
/// Also puts `resourceType`, `id` and `meta` first, as FHIR servers write them.
/// The tag (system, code) of a version that deletes its resource through the API.
pub const DELETED_TAG: (&str, &str) = ("https://medledger.org/fhir/CodeSystem/lifecycle", "deleted");

/// Whether this version of a resource is a delete made through the API.
pub fn is_deleted(resource: &Map<String, Value>) -> bool {
    resource.get("meta").and_then(|m| m.get("tag")).and_then(Value::as_array).is_some_and(|tags| {
        tags.iter().any(|t| {
            t.get("system").and_then(Value::as_str) == Some(DELETED_TAG.0)
                && t.get("code").and_then(Value::as_str) == Some(DELETED_TAG.1)
        })
    })
}

/// A stored resource's id is its record's (a Patient's, its patient's), whoever wrote it and
/// whatever id it carried when written (a record put with the CLI, an import).
fn set_id(resource: &mut Map<String, Value>, entry: &RecordEntry) {
    let id = if fhir::resource_type(resource) == "Patient" { entry.patient.to_hex() } else { entry.record.to_hex() };
    resource.insert("id".into(), Value::String(id));
}

fn set_meta(resource: &mut Map<String, Value>, version: u32) {
    let mut meta = match resource.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.remove("lastUpdated");
    let mut ordered = Map::with_capacity(resource.len() + 1);
    for key in ["resourceType", "id"] {
        if let Some(v) = resource.shift_remove(key) {
            ordered.insert(key.into(), v);
        }
    }
    ordered.insert("meta".into(), Value::Object(meta));
    ordered.append(resource);
    *resource = ordered;
}

/// The ledger's time of the version, on a resource being returned.
fn set_last_updated(resource: &mut Map<String, Value>, time: Timestamp) {
    if let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert("lastUpdated".into(), Value::String(rfc3339(time)));
    }
}
