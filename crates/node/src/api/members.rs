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

#[utoipa::path(
    get,
    path = "/v1/members/{id}/teams",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "The signer's own member id.")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The care teams the signer belongs to (at most 64), with their key epoch, public key and members.", body = Vec<medledger_ledger::state::TeamEntry>), Problems)
)]
pub(super) async fn teams(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<Vec<medledger_ledger::state::TeamEntry>>> {
    let id: MemberId = parse(&id, "member id")?;
    if id != me.id {
        return Err(ApiError::denied("a member's care teams are listed to the member only"));
    }
    let view = view(&state)?;
    let ids: Vec<MemberId> = read(&view, &keys::member_teams(&id)).unwrap_or_default();
    let teams = ids
        .iter()
        .filter_map(|t| read::<medledger_ledger::state::TeamEntry>(&view, &keys::team(t)))
        .filter(|t| t.has(&id))
        .collect();
    Ok(Json(teams))
}

/// A page of a member's chart list (`/charts`) or of its charts' record entries (`/records`).
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
    own_charts(&view, &me, &id)?;
    let after = query.after.as_deref().map(|a| parse::<MemberId>(a, "patient id")).transpose()?;
    let limit = page_limit(query.limit)?;
    let (mut charts, mut heads) = (Vec::new(), Vec::new());
    let next = moved_charts(&view, &id, after, query.since, limit, |patient, moved_at| {
        charts.push(patient);
        heads.push(super::records::may_list(&view, &me, &patient).then_some(moved_at));
        Ok(if charts.len() < limit { Taken::More } else { Taken::Full })
    })?;
    Ok(Json(medledger_ledger::api::ChartsPage { charts, next: next.map(|(last, _)| last), heads, as_of: Some(as_of) }))
}

/// Refuses a chart list that is not the signer's own (or a care team's they belong to).
fn own_charts(view: &impl medledger_ledger::StateView, me: &MemberEntry, id: &MemberId) -> ApiResult<()> {
    let own = *id == me.id
        || read::<medledger_ledger::state::TeamEntry>(view, &keys::team(id)).is_some_and(|t| t.has(&me.id));
    if own { Ok(()) } else { Err(ApiError::denied("a member's charts are the member's own (or their care team's)")) }
}

/// What a visitor of [`moved_charts`] did with a chart.
enum Taken {
    /// Took it whole; go on.
    More,
    /// Took it whole, and the page is full.
    Full,
    /// Took part of it (the page filled up within it): the next page goes on within this chart.
    Part,
}

/// Calls `take(patient, head)` for each chart `of` has held a grant on or been a delegate of,
/// after `after`, in id order (with `since`: only those whose head moved after it, scanning up
/// to [`SINCE_SCAN_ROWS_MAX`] rows), until `take` says the page is full. Returns where the next
/// page starts: after that chart, or within it (`true`), or `None` at the list's end.
fn moved_charts(
    view: &medledger_store::SpecView<'_>,
    of: &MemberId,
    after: Option<MemberId>,
    since: Option<u64>,
    limit: usize,
    mut take: impl FnMut(MemberId, u64) -> ApiResult<Taken>,
) -> ApiResult<Option<(MemberId, bool)>> {
    let prefix = keys::reader_charts(of);
    let mut after_key = after.map(|p| keys::reader_chart(of, &p));
    let mut scanned = 0usize;
    // With `since` most charts are left out: the scan goes on past a page's worth of rows (up to
    // a bound), so a member who has read many charts still learns what moved in one request.
    let budget = if since.is_some() { SINCE_SCAN_ROWS_MAX } else { limit };
    loop {
        let rows = view.scan(&prefix, after_key.as_deref(), limit).map_err(ApiError::internal)?;
        let full = rows.len() == limit;
        let mut last = None;
        for (key, _) in rows {
            let patient = MemberId::new(key[prefix.len()..].try_into().map_err(ApiError::internal)?);
            last = Some(patient);
            scanned += 1;
            let moved_at = read::<u64>(view, &keys::records_head(&patient)).unwrap_or(0);
            // Since a height: only the charts whose head moved after it (listable or not any more).
            if since.is_some_and(|since| moved_at <= since) {
                continue;
            }
            match take(patient, moved_at)? {
                Taken::More => {}
                Taken::Full => return Ok(Some((patient, false))),
                Taken::Part => return Ok(Some((patient, true))),
            }
        }
        match last.filter(|_| full) {
            Some(last) if scanned < budget => after_key = Some(keys::reader_chart(of, &last)),
            more => return Ok(more.map(|last| (last, false))),
        }
    }
}

/// The record entries of every chart in the member's (or their care team's) chart list, or with
/// `since` of those whose head moved after it, paged by entries: what a client keeping an index
/// of everything it may read asks, one request per thousand entries rather than one per chart.
#[utoipa::path(
    get,
    path = "/v1/members/{id}/records",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "The signer's own member id, or a care team they belong to."), ("after" = Option<String>, Query, pattern = "^([0-9a-f]{32}|[0-9a-f]{64})$", description = "A page's `next`: a patient id (continue after that chart) or a patient id and a record id (continue within that chart)."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Most entries in the page (a chart with none, or not listable, counts one; 1 to 1000; default 1000)."), ("since" = Option<u64>, Query, description = "Only the charts whose head (records or readers) moved after this height (a page's `as_of`).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "Charts in id order, each with its head (null: the signer may not list it now) and its record entries; `next` continues.", body = medledger_ledger::api::ChartRecordsPage), Problems)
)]
pub(super) async fn chart_records(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<ChartsQuery>,
    Signed(me): Signed,
) -> ApiResult<Json<medledger_ledger::api::ChartRecordsPage>> {
    use medledger_ledger::api::{ChartRecords, ChartRecordsPage};
    use medledger_ledger::state::RecordEntry;
    use medledger_types::RecordId;
    let id: MemberId = parse(&id, "member id")?;
    let as_of = state.app.last_applied().height.get();
    let view = view(&state)?;
    own_charts(&view, &me, &id)?;
    let (after, mut within) = match query.after.as_deref() {
        None => (None, None),
        Some(a) if a.len() == 64 => {
            let (patient, record) = a.split_at(32);
            (Some(parse::<MemberId>(patient, "cursor")?), Some(parse::<RecordId>(record, "cursor")?))
        }
        Some(a) => (Some(parse::<MemberId>(a, "cursor")?), None),
    };
    let limit = page_limit(query.limit)?;
    let mut charts: Vec<ChartRecords> = Vec::new();
    let mut items = 0usize;
    // The last record row taken: where a page that stops within a chart goes on.
    let mut last_row = None;
    // A chart the last page stopped within goes on first, from where it stopped.
    let mut take = |patient: MemberId, head: u64, from: Option<RecordId>| -> ApiResult<Taken> {
        let listable = super::records::may_list(&view, &me, &patient);
        let mut chart = ChartRecords { patient, head: listable.then_some(head), records: Vec::new(), partial: false };
        let mut taken = Taken::More;
        if listable {
            let prefix = keys::patient_records(&patient);
            let from = from.map(|r| keys::patient_record(&patient, &r));
            let room = limit - items;
            let rows = view.scan(&prefix, from.as_deref(), room + 1).map_err(ApiError::internal)?;
            chart.partial = rows.len() > room;
            for (key, _) in rows.into_iter().take(room) {
                let record = RecordId::new(key[prefix.len()..].try_into().map_err(ApiError::internal)?);
                last_row = Some(record);
                if let Some(entry) = read::<RecordEntry>(&view, &keys::record(&record)) {
                    chart.records.push(entry);
                }
            }
            if chart.partial {
                taken = Taken::Part;
            }
        }
        items += chart.records.len().max(1);
        charts.push(chart);
        Ok(match taken {
            Taken::More if items >= limit => Taken::Full,
            taken => taken,
        })
    };
    let next = match (after, within.take()) {
        // Within a chart: the rest of it first (if its list is still this signer's).
        (Some(patient), Some(record)) => match take(patient, head_of(&view, &patient), Some(record))? {
            Taken::More => moved_charts(&view, &id, Some(patient), query.since, limit, |p, h| take(p, h, None))?,
            Taken::Full => Some((patient, false)),
            Taken::Part => Some((patient, true)),
        },
        (after, _) => moved_charts(&view, &id, after, query.since, limit, |p, h| take(p, h, None))?,
    };
    let next = next.map(|(patient, within)| match (within, last_row) {
        (true, Some(record)) => format!("{}{}", patient.to_hex(), record.to_hex()),
        _ => patient.to_hex(),
    });
    Ok(Json(ChartRecordsPage { charts, next, as_of }))
}

/// A chart's head (0: never moved).
fn head_of(view: &impl medledger_ledger::StateView, patient: &MemberId) -> u64 {
    read::<u64>(view, &keys::records_head(patient)).unwrap_or(0)
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
