//! Certified state entries for writers: the keys a writer wraps a data key or a chart key for (a
//! chart's current key and its care teams', a member's, a team's), each with a Merkle proof
//! against the state root of a block a quorum of the validators finalized. The client checks the
//! evidence against its genesis (`medledger_proof::check_state`) and reads the entries out of it,
//! so no single validator can have a writer wrap a key for a key pair of its own.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use medledger_ledger::api::{ProvedEntry, ProvedState, StateEvidence};
use medledger_ledger::governance;
use medledger_ledger::receipt::EpochLink;
use medledger_ledger::serve::entitled;
use medledger_ledger::state::{ChartEntry, MemberEntry, TeamEntry, keys, read};
use medledger_ledger::{BlockHeader, GrantScope, StateView};
use medledger_store::SpecView;
use medledger_types::MemberId;

use super::auth::Signed;
use super::charts::{TeamQuery, team_shown};
use super::members::member_shown;
use super::{ApiError, ApiResult, ApiState, Problems, now, parse, view};

/// A certified block's header, its finality certificate, the validator-set links from genesis to
/// its epoch, and proofs (encoded) against its state root.
pub(super) type Certified = (BlockHeader, Vec<u8>, Vec<EpochLink>, Vec<Vec<u8>>);

/// The [`Certified`] evidence of `keys` in `view`'s last block, or `None` when that block carries
/// no finality certificate of its own (a later commit will).
pub(super) fn certified(state: &ApiState, view: &SpecView<'_>, keys: &[Vec<u8>]) -> ApiResult<Option<Certified>> {
    let (last, proofs) = view.prove_committed(keys).map_err(ApiError::internal)?;
    let (header, certificate) = state
        .app
        .certified_header(last.height)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal("the last block is not in the chain log"))?;
    if certificate.is_empty() {
        return Ok(None);
    }
    let epoch = governance::epoch_at(view, last.height).map_or(0, |e| e.epoch);
    let links = crate::receipt::links(&state.app, view, epoch).map_err(ApiError::internal)?;
    Ok(Some((header, certificate, links, proofs)))
}

/// Commits a proof waits for, at most, until the last committed block carries a certificate.
pub(super) const EVIDENCE_ATTEMPTS: usize = 4;
/// How long each of those waits lasts at most.
pub(super) const EVIDENCE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub(super) fn uncertified() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "uncertified",
        "this validator's last block is not certified yet; try again or another validator",
    )
}

/// The entries `keys_of` names in the committed state (it also decides whether the signer may
/// have them), proved against the last certified block.
async fn proved(
    state: &ApiState,
    keys_of: impl Fn(&SpecView<'_>) -> ApiResult<Vec<Vec<u8>>>,
) -> ApiResult<Json<ProvedState>> {
    let mut commits = state.app.subscribe();
    for _ in 0..EVIDENCE_ATTEMPTS {
        let evidence = {
            let view = view(state)?;
            let keys = keys_of(&view)?;
            certified(state, &view, &keys)?.map(|(header, certificate, links, proofs)| {
                let entries = keys
                    .into_iter()
                    .zip(proofs)
                    .map(|(key, proof)| ProvedEntry { value: view.get(&key), key, proof })
                    .collect();
                StateEvidence { header, certificate, links, entries }
            })
        };
        if let Some(evidence) = evidence {
            return Ok(Json(ProvedState { evidence: evidence.to_text() }));
        }
        let _ = tokio::time::timeout(EVIDENCE_WAIT, commits.changed()).await;
    }
    Err(uncertified())
}

/// Care teams a chart's proof covers at most (each adds its grant and its entry).
const CHART_TEAMS_PROVED_MAX: usize = 256;
/// Grantees of sensitive records one chart proof carries (the ledger allows fewer).
const CHART_SENSITIVE_PROVED_MAX: usize = 256;

#[utoipa::path(
    get,
    path = "/v1/charts/{patient}/proof",
    tag = "records",
    params(("patient" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "What a new record of the patient is wrapped for, certified: the chart entry and, for each care team it names, the team's `--all` grant (or its absence) and the team's entry. For those `GET /v1/charts/{patient}` answers.", body = ProvedState), Problems)
)]
pub(super) async fn chart_proof(
    State(state): State<ApiState>,
    Path(patient): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<ProvedState>> {
    let patient: MemberId = parse(&patient, "patient id")?;
    proved(&state, |view| {
        if !entitled(view, &me, &patient, None, now()) {
            return Err(ApiError::denied("no care relationship with this patient"));
        }
        let chart: ChartEntry = read(view, &keys::chart(&patient)).ok_or(ApiError::not_found("chart"))?;
        let mut proved = vec![keys::chart(&patient), keys::member(&patient)];
        for team in chart.teams.iter().take(CHART_TEAMS_PROVED_MAX) {
            proved.push(keys::grant(&patient, team, &GrantScope::All));
            proved.push(keys::team(team));
        }
        // The grantees of the patient's sensitive records (each such record is wrapped for the live ones).
        for member in chart.sensitive.0.iter().flatten().take(CHART_SENSITIVE_PROVED_MAX) {
            proved.push(keys::grant(&patient, member, &GrantScope::Sensitive));
            proved.push(keys::member(member));
        }
        Ok(proved)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/members/{id}/proof",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Member id (32 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The member's entry (role, organisation, public keys), certified; for those `GET /v1/members/{id}` answers.", body = ProvedState), Problems)
)]
pub(super) async fn member_proof(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<ProvedState>> {
    let id: MemberId = parse(&id, "member id")?;
    proved(&state, |view| {
        let entry: MemberEntry = read(view, &keys::member(&id)).ok_or(ApiError::not_found("member"))?;
        if !member_shown(view, &me, &entry) {
            return Err(ApiError::not_found("member"));
        }
        Ok(vec![keys::member(&id)])
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/teams/{id}/proof",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Care team id (32 hex)."), ("patient" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "The patient in whose care (or, for the patient and their delegates, whose choice of a team to grant) the team is asked for.")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The care team's entry (key epoch, public key, members), certified; for those `GET /v1/teams/{id}` shows the members to, and for a patient (or delegate) granting the team.", body = ProvedState), Problems)
)]
pub(super) async fn team_proof(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<TeamQuery>,
    Signed(me): Signed,
) -> ApiResult<Json<ProvedState>> {
    let id: MemberId = parse(&id, "team id")?;
    let patient = query.patient.as_deref().map(|p| parse::<MemberId>(p, "patient id")).transpose()?;
    proved(&state, |view| {
        let team: TeamEntry = read(view, &keys::team(&id)).ok_or(ApiError::not_found("care team"))?;
        // A patient (or their delegate) about to grant the team their chart sees whom they grant.
        let granting = patient.is_some_and(|p| {
            p == me.id || read::<ChartEntry>(view, &keys::chart(&p)).is_some_and(|c| c.is_delegate(&me.id))
        });
        if !(granting || team_shown(view, &me, &team, patient.as_ref())) {
            return Err(ApiError::denied("the team's members are not shown to the signer"));
        }
        Ok(vec![keys::team(&id)])
    })
    .await
}
