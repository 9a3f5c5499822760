//! Operations endpoints: health, readiness, metrics and status.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{ApiError, ApiState, Problems, READY_LAG_BLOCKS_MAX};

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Health {
    /// Always `ok`.
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "operations",
    responses((status = 200, description = "The process answers.", body = Health), Problems)
)]
pub(super) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Ready {
    ready: bool,
    /// The last committed height.
    height: u64,
}

/// Ready for clients: consensus is running and this validator is within [`READY_LAG_BLOCKS_MAX`]
/// of the most advanced peer it can reach. 503 otherwise (load balancers take it out).
#[utoipa::path(
    get,
    path = "/v1/ready",
    tag = "operations",
    responses((status = 200, description = "Consensus runs and this validator is within 8 blocks of its peers.", body = Ready), Problems)
)]
pub(super) async fn ready(State(state): State<ApiState>) -> Result<Json<Ready>, ApiError> {
    let not_ready = |title: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", title);
    if !state.ops.consensus_running.load(std::sync::atomic::Ordering::Acquire) {
        return Err(not_ready("starting: consensus is not running yet".into()));
    }
    let height = state.app.last_applied().height.get();
    let best = state.peers.snapshot().iter().filter_map(|p| p.height).max().unwrap_or(0);
    if best > height + READY_LAG_BLOCKS_MAX {
        return Err(not_ready(format!("catching up: {} blocks behind a peer", best - height)));
    }
    Ok(Json(Ready { ready: true, height }))
}

/// Prometheus text exposition of the validator's, the engine's and the runtime's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition.", body = String, content_type = "text/plain"), Problems)
)]
pub(super) async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let encode = state.ops.metrics.as_ref().ok_or(ApiError::not_found("metrics"))?;
    let metrics = &state.app.inner().metrics;
    metrics.mempool.set(i64::try_from(state.app.mempool_len()).unwrap_or(i64::MAX));
    let body = encode();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct StatusResponse {
    chain_id: String,
    validator: u32,
    /// The last finalized and committed block (a validator applies finalized blocks only).
    height: u64,
    block: String,
    state_root: String,
    mempool: usize,
    validators: Vec<String>,
    peers: Vec<crate::peers::PeerState>,
    /// Set when this validator started by installing a peer's verified state at this height.
    #[serde(skip_serializing_if = "Option::is_none")]
    state_synced_at: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operations",
    responses((status = 200, description = "This validator and what it sees of its peers.", body = StatusResponse), Problems)
)]
pub(super) async fn status(State(state): State<ApiState>) -> Json<StatusResponse> {
    let last = state.app.last_applied();
    Json(StatusResponse {
        chain_id: state.app.inner().chain_id.to_hex(),
        validator: state.index,
        height: last.height.get(),
        block: last.digest.to_hex(),
        state_root: last.state_root.to_hex(),
        mempool: state.app.mempool_len(),
        validators: state.validators.clone(),
        peers: state.peers.snapshot(),
        state_synced_at: state.app.synced_at().map(|h| h.get()),
    })
}
