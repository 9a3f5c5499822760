//! Transactions: submitting them, following them to commit, committed blocks and receipts.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medledger_ledger::api::{SubmitRequest, SubmitResponse, TxStatus};
use medledger_ledger::state::{AuditEvent, TxResultEntry, keys, read};
use medledger_types::limits::{BLOCK_TXS_MAX, SIDECAR_BYTES_MAX, TX_BYTES_MAX};
use medledger_types::{MemberId, Timestamp, TxId, decode_canonical};
use serde::{Deserialize, Serialize};

use super::access::committed_tx;
use super::audit::trail_reader;
use super::auth::Signed;
use super::{ApiError, ApiResult, ApiState, BATCH_BYTES_MAX, Problems, WAIT_MAX, parse, view};
use crate::forward::{BATCH_TXS_MAX, HEADER_FORWARDED};

fn submit_error(e: crate::app::SubmitError) -> ApiError {
    match e {
        crate::app::SubmitError::Full => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()).retry_after(1)
        }
        crate::app::SubmitError::SignerFull => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "signer-busy", e.to_string()).retry_after(1)
        }
        crate::app::SubmitError::Storage(_) => ApiError::internal(e),
        other => ApiError::bad(other.to_string()),
    }
}

fn admit(state: &ApiState, request: SubmitRequest, forwarded: bool) -> ApiResult<TxId> {
    let forward = (!forwarded).then(|| state.forwarder.as_ref().map(|_| request.clone())).flatten();
    let (tx_id, new) = state.app.submit(request.tx, request.sidecar).map_err(submit_error)?;
    if let (true, Some(request), Some(forwarder)) = (new, forward, &state.forwarder) {
        forwarder.forward(request);
    }
    Ok(tx_id)
}

#[utoipa::path(
    post,
    path = "/v1/tx",
    tag = "transactions",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A borsh-encoded SubmitRequest (signed transaction and its sidecar)."),
    responses((status = 202, description = "Admitted to the mempool (or already there).", body = SubmitResponse), Problems)
)]
pub(super) async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<SubmitResponse>)> {
    let request: SubmitRequest = decode_canonical(&body, TX_BYTES_MAX + SIDECAR_BYTES_MAX + 64)
        .map_err(|_| ApiError::bad("submission does not decode"))?;
    let tx_id = admit(&state, request, headers.contains_key(HEADER_FORWARDED))?;
    Ok((StatusCode::ACCEPTED, Json(SubmitResponse { tx_id })))
}

/// One result per submitted transaction, in order.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    Accepted { tx_id: TxId },
    Refused { error: String },
}

/// Up to [`BATCH_TXS_MAX`] transactions in one request (clients with load, and peers forwarding).
#[utoipa::path(
    post,
    path = "/v1/tx/batch",
    tag = "transactions",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A borsh-encoded list of SubmitRequests."),
    responses((status = 202, description = "One result per transaction, in order.", body = Vec<BatchResult>), Problems)
)]
pub(super) async fn submit_batch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Vec<BatchResult>>)> {
    let requests: Vec<SubmitRequest> =
        decode_canonical(&body, BATCH_BYTES_MAX).map_err(|_| ApiError::bad("batch does not decode"))?;
    if requests.len() > BATCH_TXS_MAX {
        return Err(ApiError::bad(format!("at most {BATCH_TXS_MAX} transactions per batch")));
    }
    let forwarded = headers.contains_key(HEADER_FORWARDED);
    let txs: Vec<(medledger_ledger::Transaction, Option<Vec<u8>>)> =
        requests.iter().map(|r| (r.tx.clone(), r.sidecar.clone())).collect();
    let outcomes = state.app.submit_many(txs);
    let mut results = Vec::with_capacity(outcomes.len());
    for (request, outcome) in requests.into_iter().zip(outcomes) {
        results.push(match outcome {
            Ok((tx_id, new)) => {
                if let (true, false, Some(forwarder)) = (new, forwarded, &state.forwarder) {
                    forwarder.forward(request);
                }
                BatchResult::Accepted { tx_id }
            }
            Err(e) => BatchResult::Refused { error: submit_error(e).title },
        });
    }
    Ok((StatusCode::ACCEPTED, Json(results)))
}

#[derive(Deserialize)]
pub(super) struct WaitQuery {
    wait_ms: Option<u64>,
}

fn lookup_status(state: &ApiState, id: &TxId) -> ApiResult<TxStatus> {
    if let Some(committed) = committed_status(state, id)? {
        return Ok(committed);
    }
    if state.app.has_pending(id) {
        return Ok(TxStatus::Pending);
    }
    // A block commits its transactions before it takes them out of the mempool: one committed
    // between the two looks above is committed now (seen: a wait answered "unknown", and the
    // client called a committed transaction dropped, under many waits at once).
    Ok(committed_status(state, id)?.unwrap_or(TxStatus::Unknown))
}

/// The transaction's committed status, if it is committed.
fn committed_status(state: &ApiState, id: &TxId) -> ApiResult<Option<TxStatus>> {
    let entry: Option<TxResultEntry> = read(&view(state)?, &keys::tx_result(id));
    // A result entry is written for every valid transaction except a stale replay; the tx index
    // says whether this very transaction is the one committed.
    if let Some(entry) = entry
        && state.app.inner().db.tx_location(id).map_err(ApiError::internal)?.is_some()
    {
        return Ok(Some(TxStatus::Committed {
            height: entry.height,
            index: entry.index,
            time: entry.time,
            outcome: entry.outcome,
        }));
    }
    Ok(None)
}

#[utoipa::path(
    get,
    path = "/v1/tx/{id}",
    tag = "transactions",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Transaction id (64 hex)."), ("wait_ms" = Option<u64>, Query, maximum = 30000, description = "Wait up to this long (ms, at most 30000) for a pending transaction to commit.")),
    responses((status = 200, description = "Committed (with its outcome), pending, or unknown.", body = TxStatus), Problems)
)]
pub(super) async fn tx_status(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<TxStatus>> {
    let id: TxId = parse(&id, "transaction id")?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0));
    if wait > WAIT_MAX {
        return Err(ApiError::bad(format!("wait_ms is at most {}", WAIT_MAX.as_millis())));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut commits = state.app.subscribe();
    loop {
        let status = lookup_status(&state, &id)?;
        if !matches!(status, TxStatus::Pending) || tokio::time::Instant::now() >= deadline {
            return Ok(Json(status));
        }
        if tokio::time::timeout_at(deadline, commits.changed()).await.is_err() {
            return Ok(Json(lookup_status(&state, &id)?));
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct BlockSummary {
    height: u64,
    digest: String,
    parent: String,
    time: Timestamp,
    proposer: u32,
    state_root: String,
    txs: Vec<TxId>,
    certified: bool,
}

/// A committed block's header and transaction ids (the chain explorer's view; no sidecars).
#[utoipa::path(
    get,
    path = "/v1/blocks/{height}",
    tag = "chain",
    params(("height" = u64, Path, minimum = 0, description = "Block height.")),
    responses((status = 200, description = "A committed block's header and transaction ids.", body = BlockSummary), Problems)
)]
pub(super) async fn block(State(state): State<ApiState>, Path(height): Path<String>) -> ApiResult<Json<BlockSummary>> {
    let height: u64 = parse(&height, "height")?;
    let (block, certificate) = state
        .app
        .block_at(medledger_types::Height::new(height))
        .map_err(ApiError::internal)?
        .ok_or(ApiError::not_found("block"))?;
    let h = &block.header;
    Ok(Json(BlockSummary {
        height: h.height.get(),
        digest: block.digest().to_hex(),
        parent: h.parent.to_hex(),
        time: h.time,
        proposer: h.proposer,
        state_root: h.state_root.to_hex(),
        txs: block.txs.iter().map(medledger_ledger::Transaction::id).collect(),
        certified: !certificate.is_empty(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct ReceiptQuery {
    /// The patient whose audit trail holds the transaction's event (for a reader of that trail who
    /// is not the transaction's signer).
    patient: Option<String>,
}

/// The receipt of a committed transaction: the transaction and its outcome, their Merkle paths to
/// the block's roots, the headers up to a certified block and its finality certificate, checkable
/// offline from the genesis file (`medledger receipt verify`). For the transaction's signer, or
/// for a reader of the audit trail that holds its event.
#[utoipa::path(
    get,
    path = "/v1/tx/{id}/receipt",
    tag = "chain",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Transaction id (64 hex)."), ReceiptQuery),
    security(("rfc9421" = [])),
    responses(
        (status = 200, description = "The receipt (`medledger/receipt/v1` then its canonical encoding).", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 503, description = "The block is not covered by a finality certificate yet; try again.", body = medledger_ledger::api::Problem, content_type = "application/problem+json"),
        Problems
    )
)]
pub(super) async fn tx_receipt(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<ReceiptQuery>,
    Signed(me): Signed,
) -> ApiResult<Response> {
    let id: TxId = parse(&id, "transaction id")?;
    let tx = committed_tx(&state, &id, "transaction")?;
    let view = view(&state)?;
    if tx.body.signer != me.id {
        let Some(patient) = query.patient else {
            return Err(ApiError::denied(
                "a receipt is for the transaction's signer or a reader of the trail holding it",
            ));
        };
        let patient: MemberId = parse(&patient, "patient id")?;
        let own_org_only = trail_reader(&view, &me, &patient)?;
        let result = crate::app::tx_outcome(&view, &id).ok_or(ApiError::not_found("transaction"))?;
        let mut prefix = keys::audit_of(&patient);
        prefix.extend_from_slice(&result.height.get().to_be_bytes());
        let rows = view.scan(&prefix, None, BLOCK_TXS_MAX).map_err(ApiError::internal)?;
        let in_trail = rows
            .into_iter()
            .filter_map(|(_, v)| borsh::from_slice::<AuditEvent>(&v).ok())
            .any(|e| e.tx == id && (!own_org_only || e.actor_org == me.org));
        if !in_trail {
            return Err(ApiError::not_found("event in this audit trail"));
        }
    }
    let receipt = crate::receipt::build(&state.app, &view, &id).map_err(|e| match e {
        crate::receipt::BuildError::NotCommitted => ApiError::not_found("transaction"),
        crate::receipt::BuildError::NotCertified => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-certified",
            "no finality certificate covers the block yet; try again",
        ),
        crate::receipt::BuildError::Local(e) => ApiError::internal(e),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], receipt.encode()).into_response())
}
