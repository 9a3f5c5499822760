//! Charts, care teams and chart-wide grants, and the key envelopes that lead a reader to a record's key.

use axum::Json;
use axum::extract::{Path, Query, State};
use medledger_ledger::state::{ChartEntry, EnvelopeRef, GrantEntry, MemberEntry, RecordEntry, TeamEntry, keys, read};
use medledger_ledger::{GrantScope, KeyHolder, KeySubject, Sidecar, SidecarEnvelope, StateView};
use medledger_types::MemberId;

use medledger_ledger::serve::entitled;
use medledger_types::Role;

use super::auth::Signed;
use super::{ApiError, ApiResult, ApiState, Problems, now, parse, view};

#[utoipa::path(
    get,
    path = "/v1/charts/{patient}",
    tag = "records",
    params(("patient" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The patient's chart (key epoch and holders), for the patient and those the patient's consent or an open break-glass entitles.", body = ChartEntry), Problems)
)]
pub(super) async fn chart(
    State(state): State<ApiState>,
    Path(patient): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<ChartEntry>> {
    let patient: MemberId = parse(&patient, "patient id")?;
    let view = view(&state)?;
    if !entitled(&view, &me, &patient, None, now()) {
        return Err(ApiError::denied("no care relationship with this patient"));
    }
    read(&view, &keys::chart(&patient)).map(Json).ok_or(ApiError::not_found("chart"))
}

/// Chart epochs a key path walks back at most (each revocation of an `--all` grant, dismissal of a
/// delegate and grant to a team adds one).
const CHART_LINKS_MAX: u32 = 1024;

/// The first chart epoch, from the record's on, that `has` (an envelope of that epoch for a
/// holder) finds; with the links back from it to the record's epoch and the record's envelope for
/// that epoch's key.
pub(super) fn chart_path(
    state: &ApiState,
    view: &impl StateView,
    record: &RecordEntry,
    holder: KeyHolder,
) -> ApiResult<Option<Vec<SidecarEnvelope>>> {
    let Some(chart) = read::<ChartEntry>(view, &keys::chart(&record.patient)) else { return Ok(None) };
    let patient = record.patient;
    let last = chart.epoch.min(record.chart_epoch.saturating_add(CHART_LINKS_MAX));
    for epoch in record.chart_epoch..=last {
        let Some(to_chart) = envelope(state, view, KeySubject::Chart { patient, epoch }, holder)? else { continue };
        let mut path = vec![to_chart];
        path.extend(chart_links(state, view, patient, epoch, record.chart_epoch)?);
        let subject = KeySubject::Record { record: record.record, version: record.version };
        path.extend(envelope(state, view, subject, KeyHolder::Chart { patient, epoch: record.chart_epoch })?);
        return Ok(Some(path));
    }
    Ok(None)
}

/// The links from chart epoch `from` back to `to`.
fn chart_links(
    state: &ApiState,
    view: &impl StateView,
    patient: MemberId,
    from: u32,
    to: u32,
) -> ApiResult<Vec<SidecarEnvelope>> {
    let mut links = Vec::new();
    for epoch in (to + 1..=from).rev() {
        let link = KeySubject::Chart { patient, epoch: epoch - 1 };
        links.extend(envelope(state, view, link, KeyHolder::Chart { patient, epoch })?);
    }
    Ok(links)
}

/// The envelopes by which a member of a care team reaches a record's key: their envelope of the
/// team's current key, the links back to the team epoch the record's key (or, for records written
/// before the team's `--all` grant, a chart key) was wrapped for, that envelope and, through a
/// chart key, the chart's links back to the record's epoch.
pub(super) fn team_path(
    state: &ApiState,
    view: &impl StateView,
    me: &MemberEntry,
    record: &RecordEntry,
) -> ApiResult<Vec<SidecarEnvelope>> {
    let subject = KeySubject::Record { record: record.record, version: record.version };
    let mut teams: Vec<MemberId> = read(view, &keys::member_teams(&me.id)).unwrap_or_default();
    // A directory record: through the organisation's directory key (whose holders are its staff,
    // not a member list).
    let directory = medledger_ledger::serve::is_directory_staff(view, me, &record.patient);
    if directory {
        teams = vec![record.patient];
    }
    for id in teams {
        let Some(team) = read::<TeamEntry>(view, &keys::team(&id)).filter(|t| directory || t.has(&me.id)) else {
            continue;
        };
        let team_path_to = |epoch: u32| -> ApiResult<Vec<SidecarEnvelope>> {
            let mut path = Vec::new();
            let mine = KeySubject::Team { team: id, epoch: team.epoch };
            path.extend(envelope(state, view, mine, KeyHolder::Member { member: me.id })?);
            for k in (epoch + 1..=team.epoch).rev() {
                let link = KeySubject::Team { team: id, epoch: k - 1 };
                path.extend(envelope(state, view, link, KeyHolder::Team { team: id, epoch: k })?);
            }
            Ok(path)
        };
        if let Some(epoch) = read::<u32>(view, &keys::team_envelope(&subject, &id)) {
            let mut path = team_path_to(epoch)?;
            path.extend(envelope(state, view, subject, KeyHolder::Team { team: id, epoch })?);
            return Ok(path);
        }
        let Some(chart) = read::<ChartEntry>(view, &keys::chart(&record.patient)) else { continue };
        let last = chart.epoch.min(record.chart_epoch.saturating_add(CHART_LINKS_MAX));
        for chart_epoch in record.chart_epoch..=last {
            let to_chart = KeySubject::Chart { patient: record.patient, epoch: chart_epoch };
            let Some(epoch) = read::<u32>(view, &keys::team_envelope(&to_chart, &id)) else { continue };
            let mut path = team_path_to(epoch)?;
            path.extend(envelope(state, view, to_chart, KeyHolder::Team { team: id, epoch })?);
            path.extend(chart_links(state, view, record.patient, chart_epoch, record.chart_epoch)?);
            let holder = KeyHolder::Chart { patient: record.patient, epoch: record.chart_epoch };
            path.extend(envelope(state, view, subject, holder)?);
            return Ok(path);
        }
    }
    Ok(Vec::new())
}

#[utoipa::path(
    get,
    path = "/v1/teams/{id}",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Care team id (32 hex)."), ("patient" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "A patient whose chart the team holds an `--all` grant on: those in that patient's care see its members.")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "A care team: its key epoch and public key (what a patient granting it needs), and its members (pseudonymous ids) for its members, the staff of its organisation, and those in the care of a patient whose chart it holds (`patient`); empty for anyone else.", body = TeamEntry), Problems)
)]
pub(super) async fn team(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<TeamQuery>,
    Signed(me): Signed,
) -> ApiResult<Json<TeamEntry>> {
    let id: MemberId = parse(&id, "team id")?;
    let patient = query.patient.as_deref().map(|p| parse::<MemberId>(p, "patient id")).transpose()?;
    let view = view(&state)?;
    let mut team: TeamEntry = read(&view, &keys::team(&id)).ok_or(ApiError::not_found("care team"))?;
    if !team_shown(&view, &me, &team, patient.as_ref()) {
        team.members.clear();
    }
    Ok(Json(team))
}

/// Whether `me` is shown care team `team`'s members: its members, its organisation's staff, and
/// those in the care of `patient` when the team holds an `--all` grant on that chart.
pub(super) fn team_shown(
    view: &impl StateView,
    me: &MemberEntry,
    team: &TeamEntry,
    patient: Option<&MemberId>,
) -> bool {
    let in_care = patient.is_some_and(|p| {
        read::<ChartEntry>(view, &keys::chart(p)).is_some_and(|c| c.teams.contains(&team.team))
            && entitled(view, me, p, None, now())
    });
    team.has(&me.id) || (me.role != Role::Patient && me.org == team.org) || in_care
}

#[derive(serde::Deserialize)]
pub(super) struct TeamQuery {
    pub(super) patient: Option<String>,
}

/// A member's envelope of their care team's current key.
#[utoipa::path(
    get,
    path = "/v1/teams/{id}/envelope",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Care team id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The team's current key wrapped for the signer, a member.", body = SidecarEnvelope), Problems)
)]
pub(super) async fn team_envelope(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<SidecarEnvelope>> {
    let id: MemberId = parse(&id, "team id")?;
    let view = view(&state)?;
    let team: TeamEntry = read(&view, &keys::team(&id)).ok_or(ApiError::not_found("care team"))?;
    let directory = medledger_ledger::serve::is_directory_staff(&view, &me, &id);
    if !(team.has(&me.id) || directory) {
        return Err(ApiError::denied("not a member of the care team"));
    }
    let subject = KeySubject::Team { team: id, epoch: team.epoch };
    envelope(&state, &view, subject, KeyHolder::Member { member: me.id })?.map(Json).ok_or_else(|| match directory {
        // Staff who joined after the directory key was made hold it once a holder passes it on.
        true => ApiError::not_found("envelope of the organisation's directory key (a colleague who holds it adds you)"),
        false => ApiError::internal("a member's team envelope is missing"),
    })
}

pub(super) fn envelope(
    state: &ApiState,
    view: &impl StateView,
    subject: KeySubject,
    holder: KeyHolder,
) -> ApiResult<Option<SidecarEnvelope>> {
    let Some(at) = read::<EnvelopeRef>(view, &keys::envelope(&subject, &holder)) else { return Ok(None) };
    let bytes = state
        .app
        .inner()
        .db
        .sidecar(&at.sidecar)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("sidecar missing"))?;
    let sidecar = Sidecar::decode(&bytes).map_err(ApiError::internal)?;
    Ok(sidecar.envelope_for(holder, subject).map(|envelope| SidecarEnvelope {
        holder,
        subject,
        envelope: envelope.clone(),
    }))
}

/// The signer's envelope of a patient's current chart key (the patient, or an `--all` grantee).
#[utoipa::path(
    get,
    path = "/v1/charts/{patient}/envelope",
    tag = "records",
    params(("patient" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The signer's wrapped chart key.", body = SidecarEnvelope), Problems)
)]
pub(super) async fn chart_envelope(
    State(state): State<ApiState>,
    Path(patient): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<SidecarEnvelope>> {
    let patient: MemberId = parse(&patient, "patient id")?;
    let view = view(&state)?;
    let chart: ChartEntry = read(&view, &keys::chart(&patient)).ok_or(ApiError::not_found("chart"))?;
    let subject = KeySubject::Chart { patient, epoch: chart.epoch };
    envelope(&state, &view, subject, KeyHolder::Member { member: me.id })?
        .map(Json)
        .ok_or_else(|| ApiError::denied("no envelope of this chart for the signer"))
}

#[derive(serde::Deserialize)]
pub(super) struct GrantQuery {
    record: Option<String>,
    sensitive: Option<bool>,
}

/// A patient's `--all` grant to a member, or (`?record=`) their grant on one record.
#[utoipa::path(
    get,
    path = "/v1/grants/{patient}/{grantee}",
    tag = "records",
    params(("patient" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex)."), ("grantee" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Grantee member id (32 hex)."), ("record" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "A record id (32 hex): the grant on that record instead of the chart-wide one."), ("sensitive" = Option<bool>, Query, description = "true: the grant on the patient's sensitive records instead.")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "A chart-wide grant (or the one on `record`, or on sensitive records), for its grantee and for those the patient's consent or an open break-glass entitles.", body = GrantEntry), Problems)
)]
pub(super) async fn grant_all(
    State(state): State<ApiState>,
    Path((patient, grantee)): Path<(String, String)>,
    axum::extract::Query(query): axum::extract::Query<GrantQuery>,
    Signed(me): Signed,
) -> ApiResult<Json<GrantEntry>> {
    let patient: MemberId = parse(&patient, "patient id")?;
    let grantee: MemberId = parse(&grantee, "member id")?;
    let scope = match (query.record.as_deref(), query.sensitive) {
        (Some(_), Some(true)) => return Err(ApiError::bad("name a record or sensitive, not both")),
        (Some(record), _) => GrantScope::Record(parse(record, "record id")?),
        (None, Some(true)) => GrantScope::Sensitive,
        (None, _) => GrantScope::All,
    };
    let view = view(&state)?;
    if me.id != grantee && !entitled(&view, &me, &patient, None, now()) {
        return Err(ApiError::denied("no care relationship with this patient"));
    }
    read(&view, &keys::grant(&patient, &grantee, &scope)).map(Json).ok_or(ApiError::not_found("grant"))
}

/// Every grant a patient has given (chart-wide, on sensitive records, on single records; live or
/// expired: each says when it ends), for the patient and their delegates: who manages the consent.
#[utoipa::path(
    get,
    path = "/v1/charts/{patient}/grants",
    tag = "records",
    params(("patient" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex)."), ("after" = Option<String>, Query, pattern = "^([0-9a-f]{2}){1,128}$", description = "Grant key (hex) to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The patient's grants, a page, by grantee.", body = Vec<GrantEntry>), Problems)
)]
pub(super) async fn patient_grants(
    State(state): State<ApiState>,
    Path(patient): Path<String>,
    Query(page): Query<super::records::Page>,
    Signed(me): Signed,
) -> ApiResult<(super::NextPage, Json<Vec<GrantEntry>>)> {
    let patient: MemberId = parse(&patient, "patient id")?;
    let view = view(&state)?;
    let manages =
        me.id == patient || read::<ChartEntry>(&view, &keys::chart(&patient)).is_some_and(|c| c.is_delegate(&me.id));
    if !manages {
        return Err(ApiError::denied("a patient's grants are listed to the patient and their delegates"));
    }
    let after = super::audit::cursor(page.after.as_deref())?;
    let limit = super::records::page_limit(page.limit)?;
    let rows = view.scan(&keys::grants_of(&patient), after.as_deref(), limit).map_err(ApiError::internal)?;
    let next = super::NextPage::after(&rows, limit);
    let grants = rows.into_iter().filter_map(|(_, v)| borsh::from_slice::<GrantEntry>(&v).ok()).collect();
    Ok((next, Json(grants)))
}
