//! Members: enrolled identities (pseudonymous), their nonces, and the staff directory.

use axum::Json;
use axum::extract::{Path, Query, State};
use medledger_ledger::api::StaffPage;
use medledger_ledger::state::{MemberEntry, keys, last_nonce, read};
use medledger_types::{MemberId, Role};
use serde::{Deserialize, Serialize};

use medledger_ledger::serve::entitled;

use super::auth::Signed;
use super::records::page_limit;
use super::{ApiError, ApiResult, ApiState, Problems, now, parse, view};

#[utoipa::path(
    get,
    path = "/v1/members/{id}",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Member id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "An enrolled member (pseudonymous id, role, organisation, public keys). Staff entries (the provider directory) are served to every member; a patient's only to members of the patient's organisation and to those the patient's consent or an open break-glass entitles (to anyone else the id is unknown).", body = MemberEntry), Problems)
)]
pub(super) async fn member(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<MemberEntry>> {
    let id: MemberId = parse(&id, "member id")?;
    let view = view(&state)?;
    let entry: MemberEntry = read(&view, &keys::member(&id)).ok_or(ApiError::not_found("member"))?;
    if !member_shown(&view, &me, &entry) {
        return Err(ApiError::not_found("member"));
    }
    Ok(Json(entry))
}

/// Whether `me` is shown member `entry`: staff to everyone enrolled, a patient to their own
/// organisation and those in their care. Emergency staff break the glass on patients they have
/// never seen (and wrap the note of it for the patient): that is their role, and the break-glass
/// itself is audited.
pub(super) fn member_shown(view: &impl medledger_ledger::StateView, me: &MemberEntry, entry: &MemberEntry) -> bool {
    entry.role != Role::Patient
        || me.org == entry.org
        || me.role == Role::Emergency
        || entitled(view, me, &entry.id, None, now())
}

#[utoipa::path(
    get,
    path = "/v1/members/{id}/nonce",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Member id (32 hex)."), ("lane" = Option<u16>, Query, minimum = 0, maximum = 4095, description = "The nonce lane (default 0): each of a member's clients signs in its own.")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The last nonce the signer (the member) used in the lane.", body = NonceResponse), Problems)
)]
pub(super) async fn nonce(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<NonceQuery>,
    Signed(me): Signed,
) -> ApiResult<Json<NonceResponse>> {
    let id: MemberId = parse(&id, "member id")?;
    if id != me.id {
        return Err(ApiError::denied("a member's nonces are the member's own"));
    }
    let lane = query.lane.unwrap_or(0);
    if lane >= medledger_types::NONCE_LANES {
        return Err(ApiError::bad(format!("lane is 0 to {}", medledger_types::NONCE_LANES - 1)));
    }
    let nonce = last_nonce(&view(&state)?, &id, lane);
    Ok(Json(NonceResponse { nonce: nonce.get() }))
}

#[derive(Deserialize)]
pub(super) struct NonceQuery {
    lane: Option<u16>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct NonceResponse {
    /// The last nonce the member used in the lane (0 before its first transaction there).
    nonce: u64,
}

#[derive(Deserialize)]
pub(super) struct ChartsQuery {
    after: Option<String>,
    limit: Option<usize>,
    since: Option<u64>,
}

/// The charts a member (or a care team they belong to) has held a grant on or been a delegate
/// of: where a member's client looks for what it may read (each read is still the ledger's
/// decision). Only for the member themselves, or a member of the team.
#[utoipa::path(
    get,
    path = "/v1/members/{id}/charts",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "The signer's own member id, or a care team they belong to."), ("after" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "Patient id to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000)."), ("since" = Option<u64>, Query, description = "Only the charts whose head (records or readers) moved after this height (a page's `as_of`).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "Patients' ids in id order; `next` continues the list.", body = medledger_ledger::api::ChartsPage), Problems)
)]
pub(super) async fn charts(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<ChartsQuery>,
    Signed(me): Signed,
) -> ApiResult<Json<medledger_ledger::api::ChartsPage>> {
    let id: MemberId = parse(&id, "member id")?;
    // Read before the view, so the view is at least this new: a change after `as_of` is seen
    // by the next `since=as_of` (perhaps twice, never missed).
    let as_of = state.app.last_applied().height.get();
    let view = view(&state)?;
    let own = id == me.id
        || read::<medledger_ledger::state::TeamEntry>(&view, &keys::team(&id)).is_some_and(|t| t.has(&me.id));
    if !own {
        return Err(ApiError::denied("a member's charts are the member's own (or their care team's)"));
    }
    let after = query.after.as_deref().map(|a| parse::<MemberId>(a, "patient id")).transpose()?;
    let limit = page_limit(query.limit)?;
    let prefix = keys::reader_charts(&id);
    let (mut charts, mut heads) = (Vec::new(), Vec::new());
    let mut after_key = after.map(|p| keys::reader_chart(&id, &p));
    let mut scanned = 0usize;
    // With `since` most charts are left out: the scan goes on past a page's worth of rows (up to
    // a bound), so a member who has read many charts still learns what moved in one request.
    let budget = if query.since.is_some() { SINCE_SCAN_ROWS_MAX } else { limit };
    let next = loop {
        let rows = view.scan(&prefix, after_key.as_deref(), limit).map_err(ApiError::internal)?;
        let full = rows.len() == limit;
        let mut last = None;
        for (key, _) in rows {
            let patient = MemberId::new(key[prefix.len()..].try_into().map_err(ApiError::internal)?);
            last = Some(patient);
            scanned += 1;
            let moved_at = read::<u64>(&view, &keys::records_head(&patient)).unwrap_or(0);
            // Since a height: only the charts whose head moved after it (listable or not any more).
            if query.since.is_some_and(|since| moved_at <= since) {
                continue;
            }
            charts.push(patient);
            heads.push(super::records::may_list(&view, &me, &patient).then_some(moved_at));
        }
        match last.filter(|_| full) {
            Some(last) if charts.len() < limit && scanned < budget => {
                after_key = Some(keys::reader_chart(&id, &last));
            }
            more => break more,
        }
    };
    Ok(Json(medledger_ledger::api::ChartsPage { charts, next, heads, as_of: Some(as_of) }))
}

/// Most reader-chart rows one `since=` request looks through.
const SINCE_SCAN_ROWS_MAX: usize = 50_000;

#[derive(Deserialize)]
pub(super) struct StaffQuery {
    role: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// The staff directory by role (public, like a provider directory; patients are never listed).
#[utoipa::path(
    get,
    path = "/v1/staff",
    tag = "members",
    params(("role" = Role, Query, description = "A staff role (a patient is never listed: that page is empty)."), ("after" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "Member id to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    responses((status = 200, description = "Members of the role, in id order; `next` (a member of the role) continues the list.", body = StaffPage), Problems)
)]
pub(super) async fn staff(
    State(state): State<ApiState>,
    Query(query): Query<StaffQuery>,
) -> ApiResult<Json<StaffPage>> {
    let role: Role = query.role.parse().map_err(|_| ApiError::bad("unknown role"))?;
    if role == Role::Patient {
        return Ok(Json(StaffPage { members: Vec::new(), next: None }));
    }
    let after = query.after.as_deref().map(|a| parse::<MemberId>(a, "member id")).transpose()?;
    let limit = page_limit(query.limit)?;
    // The role's own index: a page reads `limit` entries, and neither the page nor its cursor
    // ever names a member of another role (a patient least of all).
    let prefix = keys::staff_of(role);
    let after_key = after.map(|m| keys::staff(role, &m));
    let view = view(&state)?;
    let rows = view.scan(&prefix, after_key.as_deref(), limit).map_err(ApiError::internal)?;
    let full = rows.len() == limit;
    let mut members = Vec::with_capacity(rows.len());
    for (key, _) in rows {
        let id = MemberId::new(key[prefix.len()..].try_into().map_err(ApiError::internal)?);
        members.extend(read::<MemberEntry>(&view, &keys::member(&id)).filter(|m| m.role == role));
    }
    let next = members.last().filter(|_| full).map(|m| m.id.to_hex());
    Ok(Json(StaffPage { members, next }))
}
