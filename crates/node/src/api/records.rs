//! Records: ledger entries, a patient's record list, and break-glass notes.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use medledger_ledger::api::BreakGlassNote;
use medledger_ledger::state::{ChartEntry, MemberEntry, RecordEntry, keys, read};
use medledger_ledger::{KeyHolder, Sidecar, StateView, TxKind};
use medledger_types::limits::PAGE_ITEMS_MAX;
use medledger_types::{MemberId, RecordId, Role, Timestamp, TxId};
use serde::Deserialize;

use super::access::committed_tx;
use super::auth::{Enrolled, Signed};
use super::{ApiError, ApiResult, ApiState, NextPage, Problems, now, parse, view};
use medledger_ledger::serve::entitled;

#[utoipa::path(
    get,
    path = "/v1/records/{id}",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Record id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "A record's ledger entry (patient, author, digest, version), for those the patient's consent, authorship or an open break-glass entitles.", body = RecordEntry), Problems)
)]
pub(super) async fn record(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<RecordEntry>> {
    let id: RecordId = parse(&id, "record id")?;
    let view = view(&state)?;
    let entry = live_record(&view, &id)?;
    if !entitled(&view, &me, &entry.patient, Some(&entry), now()) {
        return Err(ApiError::denied("no care relationship with this record's patient"));
    }
    Ok(Json(entry))
}

/// The record's entry, or why there is none (erased: 410).
fn live_record(view: &impl StateView, id: &RecordId) -> ApiResult<RecordEntry> {
    match read(view, &keys::record(id)) {
        Some(entry) => Ok(entry),
        None if view.get(&keys::erased(id)).is_some() => {
            Err(ApiError::new(StatusCode::GONE, "erased", "the record was erased"))
        }
        None => Err(ApiError::not_found("record")),
    }
}

/// What a reader must name in a RecordAccess: the record's current version, and nothing else.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct RecordVersion {
    version: u32,
}

/// A record's current version, for any enrolled member (a suspended one too): what they name in
/// a RecordAccess, which the ledger then allows or denies, and audits either way (the entry
/// itself is for the entitled only).
#[utoipa::path(
    get,
    path = "/v1/records/{id}/version",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Record id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The record's current version.", body = RecordVersion), Problems)
)]
pub(super) async fn record_version(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Enrolled(_me): Enrolled,
) -> ApiResult<Json<RecordVersion>> {
    let id: RecordId = parse(&id, "record id")?;
    Ok(Json(RecordVersion { version: live_record(&view(&state)?, &id)?.version }))
}

/// A page size: absent, the largest; outside 1..=[`PAGE_ITEMS_MAX`], refused (not clamped: the
/// documented bound is the contract).
pub(super) fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(PAGE_ITEMS_MAX),
        Some(n) if (1..=PAGE_ITEMS_MAX).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad(format!("limit is 1 to {PAGE_ITEMS_MAX}"))),
    }
}

#[derive(Deserialize)]
pub(super) struct Page {
    pub(super) after: Option<String>,
    pub(super) limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/patients/{id}/records",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex)."), ("after" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "Record id to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The patient's records, a page.", body = Vec<RecordEntry>), Problems)
)]
pub(super) async fn patient_records(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
    Signed(me): Signed,
) -> ApiResult<(NextPage, Json<Vec<RecordEntry>>)> {
    let patient: MemberId = parse(&id, "patient id")?;
    let view = view(&state)?;
    if !may_list(&view, &me, &patient) {
        return Err(ApiError::denied(
            "only the patient, their delegates and chart-wide grantees, and auditors under a committed chart review \
             list records",
        ));
    }
    let prefix = keys::patient_records(&patient);
    let after = page.after.as_deref().map(|a| parse::<RecordId>(a, "cursor")).transpose()?;
    let after_key = after.map(|r| keys::patient_record(&patient, &r));
    let limit = page_limit(page.limit)?;
    let rows = view.scan(&prefix, after_key.as_deref(), limit).map_err(ApiError::internal)?;
    let full = rows.len() == limit;
    let mut records = Vec::with_capacity(rows.len());
    let mut last = None;
    for (key, _) in rows {
        let record = RecordId::new(key[prefix.len()..].try_into().map_err(ApiError::internal)?);
        last = Some(record);
        if let Some(entry) = read::<RecordEntry>(&view, &keys::record(&record)) {
            records.push(entry);
        }
    }
    Ok((NextPage(last.filter(|_| full).map(|r| r.to_hex())), Json(records)))
}

/// Whether `me` may list `patient`'s records (or a directory's): the patient, their delegates and
/// members holding a chart-wide grant (the list carries no plaintext: metadata is encrypted); an
/// auditor within the window of a committed chart review (itself an event in the patient's
/// trail); a directory's staff; no admin otherwise (DESIGN §3: no clinical view).
pub(super) fn may_list(view: &impl StateView, me: &MemberEntry, patient: &MemberId) -> bool {
    let holder = || {
        read::<ChartEntry>(view, &keys::chart(patient))
            .is_some_and(|chart| chart.holders.contains(&me.id) || chart.is_delegate(&me.id))
    };
    let reviewing = || {
        let now = Timestamp::new(crate::app::wall_clock_ms());
        read::<Timestamp>(view, &keys::chart_review(patient, &me.id)).is_some_and(|until| now < until)
    };
    match me.role {
        _ if medledger_ledger::serve::is_directory_staff(view, me, patient) => true,
        Role::Admin => false,
        Role::Auditor => reviewing(),
        _ => me.id == *patient || holder(),
    }
}

/// The height at which a chart's record list last changed (0: never), for those who may list it.
pub(super) fn records_head(view: &impl StateView, me: &MemberEntry, patient: &MemberId) -> Option<u64> {
    may_list(view, me, patient).then(|| read::<u64>(view, &keys::records_head(patient)).unwrap_or(0))
}

/// When a chart's (or a directory's) record list last changed: a client holding a copy lists the
/// chart again only when this moved.
#[utoipa::path(
    get,
    path = "/v1/patients/{id}/records/head",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient (or directory) id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The height of the list's last change (0: none yet).", body = medledger_ledger::api::RecordsHead), Problems)
)]
pub(super) async fn patient_records_head(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<medledger_ledger::api::RecordsHead>> {
    let patient: MemberId = parse(&id, "patient id")?;
    let view = view(&state)?;
    let height = records_head(&view, &me, &patient)
        .ok_or_else(|| ApiError::denied("only those who may list the records see when the list changed"))?;
    Ok(Json(medledger_ledger::api::RecordsHead { height }))
}

/// A break-glass note, for one of its readers.
#[utoipa::path(
    get,
    path = "/v1/tx/{id}/note",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "BreakGlass transaction id (64 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The note key wrapped for the signer (the patient or an auditor it was written for) and the encrypted note.", body = BreakGlassNote), Problems)
)]
pub(super) async fn break_glass_note(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<BreakGlassNote>> {
    let tx: TxId = parse(&id, "transaction id")?;
    let body = committed_tx(&state, &tx, "transaction")?.body;
    let (TxKind::BreakGlass(_), Some(digest)) = (&body.kind, body.sidecar_digest) else {
        return Err(ApiError::not_found("break-glass note"));
    };
    let sidecar =
        state.app.inner().db.sidecar(&digest).map_err(ApiError::internal)?.and_then(|b| Sidecar::decode(&b).ok());
    let sidecar = sidecar.ok_or(ApiError::not_found("break-glass note"))?;
    let holder = KeyHolder::Member { member: me.id };
    let envelope = sidecar.envelopes.iter().find(|e| e.holder == holder).cloned();
    let envelope = envelope.ok_or_else(|| ApiError::denied("the note is for the patient and the auditors"))?;
    Ok(Json(BreakGlassNote { envelope, ciphertext: sidecar.metadata.unwrap_or_default() }))
}
