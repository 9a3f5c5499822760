//! Chain configuration: genesis, the validator-set epochs and proposals, and the threshold-release keys.

use axum::Json;
use axum::extract::{Path, State};
use medledger_ledger::state::{keys, read};
use medledger_ledger::threshold::ThresholdConfig;
use medledger_types::Digest;
use serde::Serialize;

use super::{ApiError, ApiResult, ApiState, Problems, view};

#[utoipa::path(
    get,
    path = "/v1/genesis",
    tag = "chain",
    responses((status = 200, description = "The network's genesis (organisations, validators and their share keys); its SHA-256 under the genesis tag is the chain id, so a client checks it against the chain id it was configured with.", body = Object), Problems)
)]
pub(super) async fn genesis(State(state): State<ApiState>) -> Json<medledger_ledger::Genesis> {
    Json(state.app.inner().genesis.clone())
}

/// A validator of an epoch (the consortium's validators are public).
#[derive(Serialize, utoipa::ToSchema)]
struct GovernanceValidator {
    /// Stable index: the validator's `proposer` number in block headers.
    index: u32,
    org: String,
    /// Hex of its Ed25519 consensus key.
    public_key: String,
    p2p_address: String,
    api_address: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct GovernanceEpoch {
    epoch: u64,
    /// Height of the epoch's first block.
    first_height: u64,
    /// Hex id of the adopted proposal that made it (none for epoch 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    proposal: Option<String>,
    validators: Vec<GovernanceValidator>,
}

/// The validator sets this validator's committed state records.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct GovernanceResponse {
    /// The committed height.
    height: u64,
    /// The epoch of the next block.
    epoch: u64,
    /// Organisations taking part.
    orgs: u64,
    /// Every epoch, oldest first (a later one whose first height is above `height` is pending).
    epochs: Vec<GovernanceEpoch>,
}

#[utoipa::path(
    get,
    path = "/v1/governance",
    tag = "chain",
    responses((status = 200, description = "The validator-set epochs the committed state records: each set, from which height, and which adopted proposal made it.", body = GovernanceResponse), Problems)
)]
pub(super) async fn governance(State(state): State<ApiState>) -> ApiResult<Json<GovernanceResponse>> {
    use medledger_ledger::governance as gov;
    let height = state.app.last_applied().height;
    let view = view(&state)?;
    let epochs: Vec<GovernanceEpoch> = gov::epochs(&view)
        .into_iter()
        .map(|e| GovernanceEpoch {
            epoch: e.epoch,
            first_height: e.first_height.get(),
            proposal: e.proposal.map(|p| p.to_hex()),
            validators: gov::members(&view, &e)
                .into_iter()
                .map(|v| GovernanceValidator {
                    index: v.index,
                    org: v.org.to_string(),
                    public_key: hex::encode(v.public_key.0),
                    p2p_address: v.p2p_address,
                    api_address: v.api_address,
                })
                .collect(),
        })
        .collect();
    let next = medledger_types::Height::new(height.get().saturating_add(1));
    let epoch = gov::epoch_at(&view, next).map_or(0, |e| e.epoch);
    let orgs: u64 = read(&view, keys::ORG_COUNT).unwrap_or(0);
    Ok(Json(GovernanceResponse { height: height.get(), epoch, orgs, epochs }))
}

/// A governance proposal and its approvals.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ProposalResponse {
    id: String,
    /// `join` or `leave`.
    kind: String,
    org: String,
    expires_at: medledger_types::Timestamp,
    /// The organisations that approved it, in order.
    approvals: Vec<String>,
    /// The block that adopted it, once 2/3 of the organisations approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    adopted_at: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/governance/proposals/{id}",
    tag = "chain",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Hex id of the proposal (SHA-256 of its encoding under the proposal tag, 64 hex).")),
    responses((status = 200, description = "A proposal that has at least one approval.", body = ProposalResponse), Problems)
)]
pub(super) async fn governance_proposal(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProposalResponse>> {
    use medledger_ledger::governance::{Proposal, ProposalEntry};
    let id: Digest = Digest::from_hex(&id).ok_or(ApiError::bad("malformed proposal id"))?;
    let entry: ProposalEntry = read(&view(&state)?, &keys::proposal(&id)).ok_or(ApiError::not_found("proposal"))?;
    let kind = match entry.proposal {
        Proposal::Join { .. } => "join",
        Proposal::Leave { .. } => "leave",
    };
    Ok(Json(ProposalResponse {
        id: id.to_hex(),
        kind: kind.into(),
        org: entry.proposal.org().to_string(),
        expires_at: entry.proposal.expires_at(),
        approvals: entry.approvals.iter().map(ToString::to_string).collect(),
        adopted_at: entry.adopted_at.map(|h| h.get()),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/threshold",
    tag = "chain",
    responses((status = 200, description = "The validators' current share keys (threshold release) as this validator's committed state has them: each validator replaces its key after an erasure, and the epoch counts the replacements. Clients use keys that f + 1 validators report alike.", body = ThresholdConfig), Problems)
)]
pub(super) async fn threshold_config(State(state): State<ApiState>) -> ApiResult<Json<ThresholdConfig>> {
    let config: Option<ThresholdConfig> = read(&view(&state)?, keys::THRESHOLD);
    config.map(Json).ok_or_else(|| ApiError::not_found("threshold release (the network has no share keys)"))
}
