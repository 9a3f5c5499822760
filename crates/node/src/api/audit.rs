//! Audit: a patient's audit trail, who may read it, and the auditors' review queue.

use axum::Json;
use axum::extract::{Path, Query, State};
use medledger_ledger::StateView;
use medledger_ledger::state::{AuditEvent, ChartEntry, FlaggedEntry, MemberEntry, keys, read};
use medledger_types::{MemberId, Role};

use super::auth::Signed;
use super::records::{Page, page_limit};
use super::{ApiError, ApiResult, ApiState, NextPage, Problems, parse, view};

/// A patient's audit trail: for the patient, auditors, and admins (events of their own members).
#[utoipa::path(
    get,
    path = "/v1/patients/{id}/audit",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex)."), ("after" = Option<String>, Query, pattern = "^([0-9a-f]{2}){1,128}$", description = "Event key (hex) to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The patient's audit trail, a page.", body = Vec<AuditEvent>), Problems)
)]
pub(super) async fn audit(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
    Signed(me): Signed,
) -> ApiResult<(NextPage, Json<Vec<AuditEvent>>)> {
    let patient: MemberId = parse(&id, "patient id")?;
    let view = view(&state)?;
    let own_org_only = trail_reader(&view, &me, &patient)?;
    let prefix = keys::audit_of(&patient);
    let after_key = cursor(page.after.as_deref())?;
    let limit = page_limit(page.limit)?;
    let rows = view.scan(&prefix, after_key.as_deref(), limit).map_err(ApiError::internal)?;
    // A full page may have more after it (an admin's page may even be empty after filtering).
    let next = NextPage::after(&rows, limit);
    let events = rows
        .into_iter()
        .filter_map(|(_, v)| borsh::from_slice::<AuditEvent>(&v).ok())
        .filter(|e| !own_org_only || e.actor_org == me.org)
        .collect();
    Ok((next, Json(events)))
}

/// A page cursor of a state scan (a key, hex), bounded.
pub(super) fn cursor(after: Option<&str>) -> ApiResult<Option<Vec<u8>>> {
    match after {
        Some(cursor) if cursor.len() <= 256 => {
            Ok(Some(hex::decode(cursor).map_err(|_| ApiError::bad("malformed cursor"))?))
        }
        Some(_) => Err(ApiError::bad("cursor too long")),
        None => Ok(None),
    }
}

/// Who reads `patient`'s audit trail: the patient, their delegates and auditors all of it
/// (`false`), an admin the events of their own organisation's members (`true`); anyone else is
/// refused.
pub(super) fn trail_reader(view: &impl StateView, me: &MemberEntry, patient: &MemberId) -> ApiResult<bool> {
    let is_delegate = || {
        me.role == Role::Patient
            && read::<ChartEntry>(view, &keys::chart(patient)).is_some_and(|c| c.is_delegate(&me.id))
    };
    match me.role {
        _ if me.id == *patient => Ok(false),
        Role::Auditor => Ok(false),
        Role::Admin => Ok(true),
        _ if is_delegate() => Ok(false),
        _ => Err(ApiError::denied("only the patient, their delegates, auditors and admins read an audit trail")),
    }
}

/// The auditors' review queue: every break-glass opening or attempt and every emergency read.
#[utoipa::path(
    get,
    path = "/v1/audit/flagged",
    tag = "records",
    params(("after" = Option<String>, Query, pattern = "^([0-9a-f]{2}){1,128}$", description = "Entry key (hex) to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "Flagged events, oldest first, each with the patient whose trail holds it.", body = Vec<FlaggedEntry>), Problems)
)]
pub(super) async fn flagged(
    State(state): State<ApiState>,
    Query(page): Query<Page>,
    Signed(me): Signed,
) -> ApiResult<(NextPage, Json<Vec<FlaggedEntry>>)> {
    if me.role != Role::Auditor {
        return Err(ApiError::denied("only auditors read the review queue"));
    }
    let after_key = cursor(page.after.as_deref())?;
    let limit = page_limit(page.limit)?;
    let rows = view(&state)?.scan(keys::FLAGGED, after_key.as_deref(), limit).map_err(ApiError::internal)?;
    let next = NextPage::after(&rows, limit);
    Ok((next, Json(rows.into_iter().filter_map(|(_, v)| borsh::from_slice::<FlaggedEntry>(&v).ok()).collect())))
}
