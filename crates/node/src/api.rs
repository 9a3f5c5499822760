//! The validator's HTTP/JSON API. It only ever handles signed transactions, ciphertext and
//! wrapped keys; envelopes and ciphertext go only to the signer of a committed, allowed
//! RecordAccess, within [`ACCESS_WINDOW_MS`] of its block.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use medledger_ledger::api::{
    AccessBundle, BLOB_BATCH_BYTES_MAX, BLOB_BATCH_MAX, BlobUpload, BreakGlassNote, PROBLEM_ACCESS_DENIED,
    PROBLEM_INTEGRITY, Problem, ReleasedShare, StaffPage, SubmitRequest, SubmitResponse, ThresholdPublic, TxStatus,
};
use medledger_ledger::httpsig::{self, RequestParts};
use medledger_ledger::serve::{Refusal, Served, served_access};
use medledger_ledger::state::{
    AuditEvent, ChartEntry, EnvelopeRef, FlaggedEntry, GrantEntry, MemberEntry, MemberStatus, RecordEntry, TeamEntry,
    TxResultEntry, keys, last_nonce, read,
};
use medledger_ledger::threshold::{self, ThresholdConfig};
use medledger_ledger::{GrantScope, KeyHolder, KeySubject, Sidecar, SidecarEnvelope, StateView, TxKind};
use medledger_store::{BlobError, Blobs};
use medledger_types::limits::{ACCESS_WINDOW_MS, BLOCK_TXS_MAX, PAGE_ITEMS_MAX, SIDECAR_BYTES_MAX, TX_BYTES_MAX};
use medledger_types::{Digest, MemberId, RecordId, Role, Timestamp, TxId, decode_canonical};
use serde::{Deserialize, Serialize};

use crate::app::{App, wall_clock_ms};
use crate::forward::{BATCH_TXS_MAX, HEADER_FORWARDED};
use crate::replay::Refused;

/// Largest ciphertext accepted through the API in one request.
pub const BLOB_UPLOAD_MAX: usize = 64 * 1024 * 1024;
/// Largest `POST /v1/tx/batch` body.
const BATCH_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Longest a client may long-poll for a transaction to commit.
const WAIT_MAX: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct ApiState {
    pub app: App,
    pub blobs: Blobs,
    pub validators: Vec<String>,
    pub forwarder: Option<crate::forward::Forwarder>,
    /// This validator's index in genesis.
    pub index: u32,
    pub peers: crate::peers::Peers,
    pub ops: Ops,
    /// This validator's share key (threshold release); `None` on a network without it.
    /// This validator's share key and vault (threshold release).
    pub keyring: Option<std::sync::Arc<crate::keyring::Keyring>>,
}

/// What the operations endpoints read: the metrics encoder (the consensus runtime's registry) and
/// whether consensus has started (after any state sync).
#[derive(Clone, Default)]
pub struct Ops {
    pub metrics: Option<std::sync::Arc<dyn Fn() -> String + Send + Sync>>,
    pub consensus_running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Nonces of signed requests within the signature window (replay protection).
    pub nonces: std::sync::Arc<crate::replay::Nonces>,
    /// The per-client request-rate limit (none in in-process tests).
    pub limiter: Option<std::sync::Arc<crate::ratelimit::RequestLimiter>>,
}

/// A validator more than this many blocks behind its most advanced peer is not ready.
pub const READY_LAG_BLOCKS_MAX: u64 = 8;

/// The API's OpenAPI document: info, the signature scheme, and the error responses every
/// operation shares; the paths come from the handlers' `#[utoipa::path]` as they are routed.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "medledger validator API",
        version = "1",
        description = "A validator's HTTP/JSON API. It handles signed transactions, ciphertext and wrapped keys only. Requests that touch a patient's data carry an RFC 9421 HTTP Message Signature (Ed25519) over @method, @path, @query, @authority and content-digest, with created, nonce, keyid (member id), alg=\"ed25519\" and tag=\"medledger-api\". Errors are RFC 9457 problems with a stable `type` URN."
    ),
    modifiers(&SignatureScheme),
    tags(
        (name = "operations", description = "Health, readiness, metrics, status"),
        (name = "transactions", description = "Submitting signed transactions and following them to commit"),
        (name = "chain", description = "Committed blocks"),
        (name = "members", description = "Enrolled identities (pseudonymous)"),
        (name = "records", description = "Charts, records, grants, audit trails, envelopes and ciphertext"),
        (name = "sync", description = "Validator-to-validator state sync (validators only)")
    )
)]
struct ApiDoc;

/// Declares the RFC 9421 signature as a security scheme (OpenAPI has no type for it: an API key
/// in the `Signature` header, with `Signature-Input` and `Content-Digest` beside it).
struct SignatureScheme;

impl utoipa::Modify for SignatureScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "rfc9421",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Signature",
                "RFC 9421 signature; also send Signature-Input and Content-Digest (see the API description)",
            ))),
        );
    }
}

/// The errors any operation may answer, as problems (`application/problem+json`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Problems {
    /// Malformed input (path, query, body); nothing changed.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] Problem),
    /// Missing, stale, replayed or forged request signature, or an unknown signer.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthenticated(#[to_schema] Problem),
    /// The signer may not see this (policy, suspended identity, admin without clinical access).
    #[response(status = 403, content_type = "application/problem+json")]
    Denied(#[to_schema] Problem),
    /// No such item or endpoint.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(#[to_schema] Problem),
    /// What the ledger holds for this request is unusable (a record whose author wrapped this
    /// validator's key share wrongly: the other validators' shares still serve the read).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(#[to_schema] Problem),
    /// The record was erased (GDPR Art. 17): only its tombstone and the erasure event remain.
    #[response(status = 410, content_type = "application/problem+json")]
    Gone(#[to_schema] Problem),
    /// The body is over the endpoint's limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(#[to_schema] Problem),
    /// Over this client's request rate (`api_requests_per_second`); see `Retry-After`.
    #[response(status = 429, content_type = "application/problem+json")]
    TooManyRequests(#[to_schema] Problem),
    /// A storage failure inside the validator.
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(#[to_schema] Problem),
    /// Busy (mempool full), behind the client's height, not ready, or the object store is unavailable: retry.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] Problem),
}

/// The routes and, from the same declarations, their OpenAPI document.
pub fn routes() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
    use utoipa_axum::routes;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(status))
        .routes(routes!(submit).layer(DefaultBodyLimit::max(TX_BYTES_MAX + SIDECAR_BYTES_MAX + 64)))
        .routes(routes!(submit_batch).layer(DefaultBodyLimit::max(BATCH_BYTES_MAX)))
        .routes(routes!(tx_status))
        .routes(routes!(block))
        .routes(routes!(member))
        .routes(routes!(nonce))
        .routes(routes!(chart))
        .routes(routes!(chart_envelope))
        .routes(routes!(grant_all))
        .routes(routes!(record))
        .routes(routes!(patient_records))
        .routes(routes!(audit))
        .routes(routes!(put_blob).layer(DefaultBodyLimit::max(BLOB_UPLOAD_MAX)))
        .routes(routes!(put_blobs).layer(DefaultBodyLimit::max(BLOB_BATCH_BYTES_MAX)))
        .routes(routes!(access_bundle))
        .routes(routes!(access_content))
        .routes(routes!(access_share))
        .routes(routes!(flagged))
        .routes(routes!(staff))
        .routes(routes!(break_glass_note))
        .routes(routes!(tx_receipt))
        .routes(routes!(team))
        .routes(routes!(team_envelope))
        .routes(routes!(genesis))
        .routes(routes!(threshold_config))
        .routes(routes!(governance))
        .routes(routes!(governance_proposal))
        .merge(crate::sync::routes())
        .split_for_parts()
}

/// The OpenAPI document of this API (what `GET /v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

pub fn router(state: ApiState) -> Router {
    let (routes, document) = routes();
    let document = std::sync::Arc::new(document);
    routes
        .route("/v1/openapi.json", get(move || async move { Json(document.as_ref().clone()) }))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), read_your_writes))
        .layer(axum::middleware::map_response(problem_for_rejections))
        .layer(axum::middleware::from_fn_with_state(state.ops.limiter.clone(), crate::ratelimit::limit))
        .with_state(state)
}

/// Turns the framework's own error responses (a malformed query string, a wrong method, a body
/// over a limit) into problems like every other error.
async fn problem_for_rejections(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        s if s.is_server_error() => "internal",
        _ => "bad-request",
    };
    let title = status.canonical_reason().unwrap_or("error");
    ApiError::new(status, code, title).into_response()
}

/// Header by which a client asks a validator to answer only once it has committed at least this
/// height (the height of the client's last committed transaction, wherever it was submitted), so
/// a client reads its own writes from any validator.
pub const HEADER_MIN_HEIGHT: &str = "x-medledger-min-height";
/// Longest a request waits for this validator to catch up to the client's height.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

async fn read_your_writes(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wanted =
        request.headers().get(HEADER_MIN_HEIGHT).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(wanted) = wanted {
        let mut commits = state.app.subscribe();
        let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
        while commits.borrow_and_update().height.get() < wanted {
            if tokio::time::timeout_at(deadline, commits.changed()).await.is_err() {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "behind",
                    "this validator is behind the client; try another",
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// An error as a JSON problem; the detail never carries patient data.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: String,
    title: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, title: impl Into<String>) -> Self {
        let kind = if code.starts_with("urn:") { code.to_string() } else { format!("urn:medledger:problem:{code}") };
        Self { status, kind, title: title.into() }
    }
    pub(crate) fn bad(title: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", title)
    }
    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", format!("{what} not found"))
    }
    pub(crate) fn denied(title: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, PROBLEM_ACCESS_DENIED, title)
    }
    pub(crate) fn unauthenticated(title: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", title)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem { kind: self.kind, title: self.title, status: self.status.as_u16(), detail: None };
        (self.status, [(header::CONTENT_TYPE, "application/problem+json")], Json(problem)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> ApiResult<T> {
    s.parse().map_err(|_| ApiError::bad(format!("malformed {what}")))
}

fn view(state: &ApiState) -> ApiResult<medledger_store::SpecView<'_>> {
    state.app.inner().db.view(&[]).map_err(ApiError::internal)
}

/// Checks the request's RFC 9421 signature (see [`medledger_ledger::httpsig`]): profile, body
/// digest, time window, the signer's committed key, its status, and that the nonce is new.
/// Returns the signer's member entry.
fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> ApiResult<MemberEntry> {
    let signed = signed_request(headers, method, uri, body)?;
    let id: MemberId = signed.keyid.parse().map_err(|_| ApiError::unauthenticated("keyid is not a member id"))?;
    let Some(member) = read::<MemberEntry>(&view(state)?, &keys::member(&id)) else {
        // Logged here, not on the ledger: anyone can send this. No identifier is logged.
        tracing::warn!(route = %route_of(uri), "request signed by an unknown identity");
        return Err(ApiError::unauthenticated("unknown signer"));
    };
    if !signed.verify(&member.signing_key) {
        tracing::warn!(route = %route_of(uri), "request with a bad signature");
        return Err(ApiError::unauthenticated("bad request signature"));
    }
    if member.status != MemberStatus::Active {
        tracing::warn!(route = %route_of(uri), role = member.role.as_str(), "request by a suspended member refused");
        return Err(ApiError::denied("this identity is suspended"));
    }
    admit_nonce(state, &signed, uri)?;
    Ok(member)
}

/// Parses and checks a request's RFC 9421 signature headers against the request (profile, body
/// digest, time window); the caller checks the key behind `keyid` and the nonce.
pub(crate) fn signed_request(
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> ApiResult<httpsig::SignedBy> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let parts = RequestParts {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query(),
        authority: header("host").unwrap_or_default(),
        body,
    };
    httpsig::check(
        &parts,
        header(httpsig::HEADER_SIGNATURE_INPUT),
        header(httpsig::HEADER_SIGNATURE),
        header(httpsig::HEADER_CONTENT_DIGEST),
        wall_clock_ms(),
    )
    .map_err(|e| {
        tracing::warn!(route = %route_of(uri), reason = %e, "unsigned or badly signed request refused");
        ApiError::unauthenticated(e.to_string())
    })
}

/// A request's path for the logs, with every id (hex segment) replaced by `{id}`: logs name the
/// route, never a patient's or a record's pseudonym.
pub(crate) fn route_of(uri: &Uri) -> String {
    uri.path()
        .split('/')
        .map(|seg| if seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit()) { "{id}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Refuses a second use of a signed request's nonce (see [`crate::replay`]).
pub(crate) fn admit_nonce(state: &ApiState, signed: &httpsig::SignedBy, uri: &Uri) -> ApiResult<()> {
    state.ops.nonces.admit(&signed.keyid, &signed.nonce, signed.created_ms, wall_clock_ms()).map_err(|refused| {
        match refused {
            Refused::Replayed => {
                tracing::warn!(route = %route_of(uri), "replayed request refused");
                ApiError::unauthenticated("replayed request: this nonce was used before")
            }
            Refused::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many requests; retry later"),
        }
    })
}

/// A request without a body signed by an enrolled member (see [`authenticate`]).
pub struct Signed(pub MemberEntry);

impl axum::extract::FromRequestParts<ApiState> for Signed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &ApiState) -> Result<Self, ApiError> {
        authenticate(state, &parts.headers, &parts.method, &parts.uri, &[]).map(Signed)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "operations",
    responses((status = 200, description = "The process answers.", body = Health), Problems)
)]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
struct Ready {
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
async fn ready(State(state): State<ApiState>) -> Result<Json<Ready>, ApiError> {
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
async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let encode = state.ops.metrics.as_ref().ok_or(ApiError::not_found("metrics"))?;
    let metrics = &state.app.inner().metrics;
    metrics.mempool.set(i64::try_from(state.app.mempool_len()).unwrap_or(i64::MAX));
    let body = encode();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct StatusResponse {
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
async fn status(State(state): State<ApiState>) -> Json<StatusResponse> {
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

fn submit_error(e: crate::app::SubmitError) -> ApiError {
    match e {
        crate::app::SubmitError::Full => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
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
async fn submit(
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
async fn submit_batch(
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
struct WaitQuery {
    wait_ms: Option<u64>,
}

fn lookup_status(state: &ApiState, id: &TxId) -> ApiResult<TxStatus> {
    let entry: Option<TxResultEntry> = read(&view(state)?, &keys::tx_result(id));
    // A result entry is written for every valid transaction except a stale replay; the tx index
    // says whether this very transaction is the one committed.
    if let Some(entry) = entry
        && state.app.inner().db.tx_location(id).map_err(ApiError::internal)?.is_some()
    {
        return Ok(TxStatus::Committed {
            height: entry.height,
            index: entry.index,
            time: entry.time,
            outcome: entry.outcome,
        });
    }
    if state.app.has_pending(id) { Ok(TxStatus::Pending) } else { Ok(TxStatus::Unknown) }
}

#[utoipa::path(
    get,
    path = "/v1/tx/{id}",
    tag = "transactions",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Transaction id (64 hex)."), ("wait_ms" = Option<u64>, Query, maximum = 30000, description = "Wait up to this long (ms, at most 30000) for a pending transaction to commit.")),
    responses((status = 200, description = "Committed (with its outcome), pending, or unknown.", body = TxStatus), Problems)
)]
async fn tx_status(
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
struct BlockSummary {
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
async fn block(State(state): State<ApiState>, Path(height): Path<String>) -> ApiResult<Json<BlockSummary>> {
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

#[utoipa::path(
    get,
    path = "/v1/members/{id}",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Member id (32 hex).")),
    responses((status = 200, description = "An enrolled member (pseudonymous id, role, public keys).", body = MemberEntry), Problems)
)]
async fn member(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<MemberEntry>> {
    let id: MemberId = parse(&id, "member id")?;
    read(&view(&state)?, &keys::member(&id)).map(Json).ok_or(ApiError::not_found("member"))
}

#[utoipa::path(
    get,
    path = "/v1/members/{id}/nonce",
    tag = "members",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Member id (32 hex).")),
    responses((status = 200, description = "The last nonce the member used.", body = NonceResponse), Problems)
)]
async fn nonce(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<NonceResponse>> {
    let id: MemberId = parse(&id, "member id")?;
    let nonce = last_nonce(&view(&state)?, &id);
    Ok(Json(NonceResponse { nonce: nonce.get() }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct NonceResponse {
    /// The last nonce the member used (0 before its first transaction).
    nonce: u64,
}

#[utoipa::path(
    get,
    path = "/v1/charts/{patient}",
    tag = "records",
    params(("patient" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex).")),
    responses((status = 200, description = "The patient's chart (key epoch and holders).", body = ChartEntry), Problems)
)]
async fn chart(State(state): State<ApiState>, Path(patient): Path<String>) -> ApiResult<Json<ChartEntry>> {
    let patient: MemberId = parse(&patient, "patient id")?;
    read(&view(&state)?, &keys::chart(&patient)).map(Json).ok_or(ApiError::not_found("chart"))
}

/// Chart epochs a key path walks back at most (each revocation of an `--all` grant, dismissal of a
/// delegate and grant to a team adds one).
const CHART_LINKS_MAX: u32 = 1024;

/// The first chart epoch, from the record's on, that `has` (an envelope of that epoch for a
/// holder) finds; with the links back from it to the record's epoch and the record's envelope for
/// that epoch's key.
fn chart_path(
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
fn team_path(
    state: &ApiState,
    view: &impl StateView,
    me: &MemberEntry,
    record: &RecordEntry,
) -> ApiResult<Vec<SidecarEnvelope>> {
    let subject = KeySubject::Record { record: record.record, version: record.version };
    let teams: Vec<MemberId> = read(view, &keys::member_teams(&me.id)).unwrap_or_default();
    for id in teams {
        let Some(team) = read::<TeamEntry>(view, &keys::team(&id)).filter(|t| t.has(&me.id)) else { continue };
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
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Care team id (32 hex).")),
    responses((status = 200, description = "A care team: its key epoch and public key, and its members (pseudonymous ids).", body = TeamEntry), Problems)
)]
async fn team(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<TeamEntry>> {
    let id: MemberId = parse(&id, "team id")?;
    read(&view(&state)?, &keys::team(&id)).map(Json).ok_or(ApiError::not_found("care team"))
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
async fn team_envelope(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<SidecarEnvelope>> {
    let id: MemberId = parse(&id, "team id")?;
    let view = view(&state)?;
    let team: TeamEntry = read(&view, &keys::team(&id)).ok_or(ApiError::not_found("care team"))?;
    if !team.has(&me.id) {
        return Err(ApiError::denied("not a member of the care team"));
    }
    let subject = KeySubject::Team { team: id, epoch: team.epoch };
    envelope(&state, &view, subject, KeyHolder::Member { member: me.id })?
        .map(Json)
        .ok_or_else(|| ApiError::internal("a member's team envelope is missing"))
}

fn envelope(
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
async fn chart_envelope(
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

/// A patient's `--all` grant to a member (public: the ledger's grants carry only pseudonyms).
#[utoipa::path(
    get,
    path = "/v1/grants/{patient}/{grantee}",
    tag = "records",
    params(("patient" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex)."), ("grantee" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Grantee member id (32 hex).")),
    responses((status = 200, description = "A chart-wide grant.", body = GrantEntry), Problems)
)]
async fn grant_all(
    State(state): State<ApiState>,
    Path((patient, grantee)): Path<(String, String)>,
) -> ApiResult<Json<GrantEntry>> {
    let patient: MemberId = parse(&patient, "patient id")?;
    let grantee: MemberId = parse(&grantee, "member id")?;
    read(&view(&state)?, &keys::grant(&patient, &grantee, &GrantScope::All))
        .map(Json)
        .ok_or(ApiError::not_found("grant"))
}

#[utoipa::path(
    get,
    path = "/v1/records/{id}",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Record id (32 hex).")),
    responses((status = 200, description = "A record's ledger entry (digest, version, encrypted metadata).", body = RecordEntry), Problems)
)]
async fn record(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<RecordEntry>> {
    let id: RecordId = parse(&id, "record id")?;
    let view = view(&state)?;
    match read(&view, &keys::record(&id)) {
        Some(entry) => Ok(Json(entry)),
        None if view.get(&keys::erased(&id)).is_some() => {
            Err(ApiError::new(StatusCode::GONE, "erased", "the record was erased"))
        }
        None => Err(ApiError::not_found("record")),
    }
}

/// A page size: absent, the largest; outside 1..=[`PAGE_ITEMS_MAX`], refused (not clamped: the
/// documented bound is the contract).
fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(PAGE_ITEMS_MAX),
        Some(n) if (1..=PAGE_ITEMS_MAX).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad(format!("limit is 1 to {PAGE_ITEMS_MAX}"))),
    }
}

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/patients/{id}/records",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex)."), ("after" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "Record id to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The patient's records, a page.", body = Vec<RecordEntry>), Problems)
)]
async fn patient_records(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
    Signed(me): Signed,
) -> ApiResult<Json<Vec<RecordEntry>>> {
    let patient: MemberId = parse(&id, "patient id")?;
    // The patient, their delegates, members holding a chart-wide grant, auditors, and admins see
    // the list (its entries carry no plaintext: metadata is encrypted); anyone else is refused.
    let holder = || {
        view(&state)
            .ok()
            .and_then(|v| read::<ChartEntry>(&v, &keys::chart(&patient)))
            .is_some_and(|chart| chart.holders.contains(&me.id) || chart.is_delegate(&me.id))
    };
    if me.id != patient && !matches!(me.role, Role::Auditor | Role::Admin) && !holder() {
        return Err(ApiError::denied(
            "only the patient, their delegates and chart-wide grantees, auditors and admins list records",
        ));
    }
    let prefix = keys::patient_records(&patient);
    let after = page.after.as_deref().map(|a| parse::<RecordId>(a, "cursor")).transpose()?;
    let after_key = after.map(|r| keys::patient_record(&patient, &r));
    let limit = page_limit(page.limit)?;
    let view = view(&state)?;
    let rows = view.scan(&prefix, after_key.as_deref(), limit).map_err(ApiError::internal)?;
    let mut records = Vec::with_capacity(rows.len());
    for (key, _) in rows {
        let record = RecordId::new(key[prefix.len()..].try_into().map_err(ApiError::internal)?);
        if let Some(entry) = read::<RecordEntry>(&view, &keys::record(&record)) {
            records.push(entry);
        }
    }
    Ok(Json(records))
}

/// A patient's audit trail: for the patient, auditors, and admins (events of their own members).
#[utoipa::path(
    get,
    path = "/v1/patients/{id}/audit",
    tag = "records",
    params(("id" = String, Path, pattern = "^[0-9a-f]{32}$", description = "Patient member id (32 hex)."), ("after" = Option<String>, Query, pattern = "^([0-9a-f]{2}){1,128}$", description = "Event key (hex) to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The patient's audit trail, a page.", body = Vec<AuditEvent>), Problems)
)]
async fn audit(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
    Signed(me): Signed,
) -> ApiResult<Json<Vec<AuditEvent>>> {
    let patient: MemberId = parse(&id, "patient id")?;
    let view = view(&state)?;
    let own_org_only = trail_reader(&view, &me, &patient)?;
    let prefix = keys::audit_of(&patient);
    let after_key = match page.after.as_deref() {
        Some(cursor) if cursor.len() <= 256 => {
            Some(hex::decode(cursor).map_err(|_| ApiError::bad("malformed cursor"))?)
        }
        Some(_) => return Err(ApiError::bad("cursor too long")),
        None => None,
    };
    let limit = page_limit(page.limit)?;
    let rows = view.scan(&prefix, after_key.as_deref(), limit).map_err(ApiError::internal)?;
    let events = rows
        .into_iter()
        .filter_map(|(_, v)| borsh::from_slice::<AuditEvent>(&v).ok())
        .filter(|e| !own_org_only || e.actor_org == me.org)
        .collect();
    Ok(Json(events))
}

/// Who reads `patient`'s audit trail: the patient, their delegates and auditors all of it
/// (`false`), an admin the events of their own organisation's members (`true`); anyone else is
/// refused.
fn trail_reader(view: &impl StateView, me: &MemberEntry, patient: &MemberId) -> ApiResult<bool> {
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

#[derive(Deserialize, utoipa::IntoParams)]
struct ReceiptQuery {
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
async fn tx_receipt(
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

/// The auditors' review queue: every break-glass opening or attempt and every emergency read.
#[utoipa::path(
    get,
    path = "/v1/audit/flagged",
    tag = "records",
    params(("after" = Option<String>, Query, pattern = "^([0-9a-f]{2}){1,128}$", description = "Entry key (hex) to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "Flagged events, oldest first, each with the patient whose trail holds it.", body = Vec<FlaggedEntry>), Problems)
)]
async fn flagged(
    State(state): State<ApiState>,
    Query(page): Query<Page>,
    Signed(me): Signed,
) -> ApiResult<Json<Vec<FlaggedEntry>>> {
    if me.role != Role::Auditor {
        return Err(ApiError::denied("only auditors read the review queue"));
    }
    let after_key = match page.after.as_deref() {
        Some(cursor) if cursor.len() <= 256 => {
            Some(hex::decode(cursor).map_err(|_| ApiError::bad("malformed cursor"))?)
        }
        Some(_) => return Err(ApiError::bad("cursor too long")),
        None => None,
    };
    let limit = page_limit(page.limit)?;
    let rows = view(&state)?.scan(keys::FLAGGED, after_key.as_deref(), limit).map_err(ApiError::internal)?;
    Ok(Json(rows.into_iter().filter_map(|(_, v)| borsh::from_slice::<FlaggedEntry>(&v).ok()).collect()))
}

#[derive(Deserialize)]
struct StaffQuery {
    role: String,
    after: Option<String>,
    limit: Option<usize>,
}

/// Members read per staff directory request (the directory scans members in id order).
const STAFF_SCAN_MAX: usize = 10_000;

/// The staff directory by role (public, like a provider directory; patients are never listed).
#[utoipa::path(
    get,
    path = "/v1/staff",
    tag = "members",
    params(("role" = Role, Query, description = "A staff role (a patient is never listed: that page is empty)."), ("after" = Option<String>, Query, pattern = "^[0-9a-f]{32}$", description = "Member id to continue after."), ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size (1 to 1000; default 1000).")),
    responses((status = 200, description = "Members of the role, in id order; `next` continues the scan.", body = StaffPage), Problems)
)]
async fn staff(State(state): State<ApiState>, Query(query): Query<StaffQuery>) -> ApiResult<Json<StaffPage>> {
    let role: Role = query.role.parse().map_err(|_| ApiError::bad("unknown role"))?;
    if role == Role::Patient {
        return Ok(Json(StaffPage { members: Vec::new(), next: None }));
    }
    let after = query.after.as_deref().map(|a| parse::<MemberId>(a, "member id")).transpose()?;
    let limit = page_limit(query.limit)?;
    let after_key = after.map(|m| keys::member(&m));
    let rows = view(&state)?.scan(keys::MEMBER, after_key.as_deref(), STAFF_SCAN_MAX).map_err(ApiError::internal)?;
    let scanned = rows.len();
    let mut members = Vec::new();
    let mut last = None;
    for (_, value) in rows {
        let Ok(member) = borsh::from_slice::<MemberEntry>(&value) else { continue };
        last = Some(member.id);
        if member.role == role {
            members.push(member);
            if members.len() == limit {
                break;
            }
        }
    }
    let more = members.len() == limit || scanned == STAFF_SCAN_MAX;
    Ok(Json(StaffPage { members, next: last.filter(|_| more).map(|m| m.to_hex()) }))
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
async fn break_glass_note(
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

#[utoipa::path(
    put,
    path = "/v1/blobs/{digest}",
    tag = "records",
    params(("digest" = String, Path, pattern = "^[0-9a-f]{64}$", description = "SHA-256 of the ciphertext (64 hex).")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Record ciphertext, at most 64 MiB."),
    security(("rfc9421" = [])),
    responses((status = 201, description = "Stored (idempotent)."), Problems)
)]
async fn put_blob(
    State(state): State<ApiState>,
    Path(digest): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    uploader(&state, &headers, &method, &uri, &body)?;
    let digest: Digest = parse(&digest, "digest")?;
    state.blobs.put(&digest, body).await.map_err(|e| blob_failure(&state, e))?;
    Ok(StatusCode::CREATED)
}

/// The signer of an upload: any enrolled member with clinical access (not an admin).
fn uploader(state: &ApiState, headers: &HeaderMap, method: &Method, uri: &Uri, body: &[u8]) -> ApiResult<MemberEntry> {
    let me = authenticate(state, headers, method, uri, body)?;
    if me.role == Role::Admin {
        return Err(ApiError::denied("an admin has no clinical access"));
    }
    Ok(me)
}

fn blob_failure(state: &ApiState, error: BlobError) -> ApiError {
    match error {
        BlobError::Integrity => {
            ApiError::new(StatusCode::BAD_REQUEST, PROBLEM_INTEGRITY, "bytes do not match the digest")
        }
        BlobError::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "blob over the size limit"),
        other => storage_failure(state, other),
    }
}

#[utoipa::path(
    post,
    path = "/v1/blobs",
    tag = "records",
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Borsh `Vec<BlobUpload>`: up to 1024 ciphertexts, 32 MiB in all, each stored under its SHA-256."),
    security(("rfc9421" = [])),
    responses((status = 201, description = "All stored (idempotent); nothing is stored unless every digest matches its bytes."), Problems)
)]
async fn put_blobs(
    State(state): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    uploader(&state, &headers, &method, &uri, &body)?;
    let uploads: Vec<BlobUpload> =
        decode_canonical(&body, BLOB_BATCH_BYTES_MAX).map_err(|_| ApiError::bad("the upload batch does not decode"))?;
    if uploads.len() > BLOB_BATCH_MAX {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "too many ciphertexts in one batch"));
    }
    // Every digest is checked before anything is stored.
    if uploads.iter().any(|u| Digest::new(medledger_crypto::sha256(&u.bytes)) != u.digest) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, PROBLEM_INTEGRITY, "bytes do not match the digest"));
    }
    use futures::StreamExt;
    let blobs = &state.blobs;
    let mut writes = futures::stream::iter(uploads)
        .map(|u| async move { blobs.put(&u.digest, Bytes::from(u.bytes)).await })
        .buffer_unordered(BLOB_WRITES_IN_FLIGHT);
    while let Some(result) = writes.next().await {
        result.map_err(|e| match e {
            BlobError::TooLarge => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "blob over the size limit")
            }
            other => storage_failure(&state, other),
        })?;
    }
    Ok(StatusCode::CREATED)
}

/// Object store writes in flight for one upload batch.
const BLOB_WRITES_IN_FLIGHT: usize = 16;

/// An object store failure: counted in the metrics, a 500 to the client.
fn storage_failure(state: &ApiState, error: BlobError) -> ApiError {
    state.app.inner().metrics.storage_errors.inc();
    tracing::error!(%error, "object store request failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage-unavailable",
        "the validator's object store refused or did not answer (credentials or endpoint); nothing was stored",
    )
}

/// The record of an allowed RecordAccess signed by the requester, committed within the window.
/// A committed transaction, from the block that holds it.
fn committed_tx(state: &ApiState, tx: &TxId, what: &'static str) -> ApiResult<medledger_ledger::Transaction> {
    let (height, index) =
        state.app.inner().db.tx_location(tx).map_err(ApiError::internal)?.ok_or(ApiError::not_found(what))?;
    let (mut block, _) = state.app.block_at(height).map_err(ApiError::internal)?.ok_or(ApiError::not_found("block"))?;
    let index = index as usize;
    if index >= block.txs.len() {
        return Err(ApiError::not_found(what));
    }
    Ok(block.txs.swap_remove(index))
}

fn allowed_access(state: &ApiState, tx: &TxId, me: MemberEntry) -> ApiResult<(MemberEntry, Served)> {
    let TxKind::RecordAccess(access) = committed_tx(state, tx, "committed access")?.body.kind else {
        return Err(ApiError::bad("not a record access"));
    };
    let served = served_access(&view(state)?, tx, &access, &me.id).map_err(|refusal| match refusal {
        Refusal::NotCommitted => ApiError::not_found("committed access"),
        Refusal::OtherSigner => ApiError::denied("the access was signed by someone else"),
        Refusal::Denied => ApiError::denied("the access was denied"),
        Refusal::RecordGone => ApiError::not_found("record"),
        Refusal::RecordChanged => ApiError::denied("the record changed since the access"),
    })?;
    if wall_clock_ms().saturating_sub(served.result.time.get()) > ACCESS_WINDOW_MS {
        return Err(ApiError::denied("the access has expired; request it again"));
    }
    Ok((me, served))
}

#[utoipa::path(
    get,
    path = "/v1/access/{tx}/bundle",
    tag = "records",
    params(("tx" = String, Path, pattern = "^[0-9a-f]{64}$", description = "RecordAccess transaction id (64 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "Envelopes for the signer of this committed, allowed RecordAccess.", body = AccessBundle), Problems)
)]
async fn access_bundle(
    State(state): State<ApiState>,
    Path(tx): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<AccessBundle>> {
    let tx: TxId = parse(&tx, "transaction id")?;
    let (me, Served { record, .. }) = allowed_access(&state, &tx, me)?;
    let view = view(&state)?;
    let subject = KeySubject::Record { record: record.record, version: record.version };
    let me_holder = KeyHolder::Member { member: me.id };
    let mut envelopes = Vec::new();
    if let Some(e) = envelope(&state, &view, subject, me_holder)? {
        envelopes.push(e);
    }
    if let Some(path) = chart_path(&state, &view, &record, me_holder)? {
        envelopes.extend(path);
    }
    if envelopes.is_empty() {
        envelopes = team_path(&state, &view, &me, &record)?;
    }
    let sidecar = state.app.inner().db.sidecar(&record.sidecar).map_err(ApiError::internal)?;
    let sidecar = sidecar.and_then(|b| Sidecar::decode(&b).ok()).unwrap_or_default();
    let threshold = sidecar.threshold.0.map(|t| ThresholdPublic {
        epoch: t.epoch,
        threshold: t.threshold,
        commitments: t.shares.iter().map(|s| s.commitment).collect(),
        emergency_threshold: t.emergency_threshold,
        emergency_commitments: t.shares.iter().map(|s| s.emergency_commitment).collect(),
    });
    Ok(Json(AccessBundle { record, envelopes, metadata: sidecar.metadata, threshold }))
}

#[utoipa::path(
    get,
    path = "/v1/access/{tx}/share",
    tag = "records",
    params(("tx" = String, Path, pattern = "^[0-9a-f]{64}$", description = "RecordAccess transaction id (64 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "This validator's share of the record's k_thr, wrapped for the signer of this committed, allowed RecordAccess (threshold release).", body = ReleasedShare), Problems)
)]
async fn access_share(
    State(state): State<ApiState>,
    Path(tx): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<ReleasedShare>> {
    let tx: TxId = parse(&tx, "transaction id")?;
    let (me, Served { record, emergency, .. }) = allowed_access(&state, &tx, me)?;
    let Some(info) = record.threshold.0 else {
        return Err(ApiError::not_found("threshold share (the record uses the direct suite)"));
    };
    let chain_id = state.app.inner().chain_id;
    let db = &state.app.inner().db;
    // The vault holds the share once the janitor has seen the record's block; until then it is
    // opened from the sidecar.
    let Some(keyring) = state.keyring.as_deref() else {
        return Err(ApiError::not_found("threshold share (this validator holds no share key)"));
    };
    let vaulted = db.vault_get(&record.record, record.version).map_err(ApiError::internal)?;
    let opened = match vaulted.and_then(|row| keyring.open_share(&record.record, record.version, &row)) {
        Some(opened) => opened,
        None => {
            let key = keyring.current();
            let bytes = db.sidecar(&record.sidecar).map_err(ApiError::internal)?;
            let shares = bytes
                .and_then(|b| Sidecar::decode(&b).ok())
                .and_then(|s| s.threshold.0)
                .ok_or_else(|| ApiError::not_found("threshold share"))?;
            let mine = shares.shares.get(state.index as usize).ok_or_else(|| ApiError::not_found("threshold share"))?;
            let miswrapped = || {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "share-unopenable",
                    "the author wrapped this validator's share wrongly",
                )
            };
            let context = threshold::share_context(chain_id, record.record, record.version, info.epoch, state.index);
            let opened = medledger_crypto::wrap::open(&key, &mine.envelope, &context).map_err(|_| miswrapped())?;
            if opened.len() != threshold::SHARES_SECRET_BYTES {
                return Err(miswrapped());
            }
            opened
        }
    };
    // The emergency share of k_env goes only to a reader whom break-glass alone allowed (they
    // hold no envelope); everyone else gets the k_thr share.
    let released = if emergency { &opened[..] } else { &opened[..medledger_crypto::threshold::SHARE_BYTES] };
    let context = threshold::release_context(chain_id, record.record, record.version, info.epoch, state.index, me.id);
    let envelope = medledger_crypto::wrap::seal(&me.encryption_key, released, &context).map_err(ApiError::internal)?;
    state.app.inner().metrics.shares_released.inc();
    Ok(Json(ReleasedShare { validator: state.index, epoch: info.epoch, envelope, emergency }))
}

#[utoipa::path(
    get,
    path = "/v1/genesis",
    tag = "chain",
    responses((status = 200, description = "The network's genesis (organisations, validators and their share keys); its SHA-256 under the genesis tag is the chain id, so a client checks it against the chain id it was configured with.", body = Object), Problems)
)]
async fn genesis(State(state): State<ApiState>) -> Json<medledger_ledger::Genesis> {
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
struct GovernanceResponse {
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
async fn governance(State(state): State<ApiState>) -> ApiResult<Json<GovernanceResponse>> {
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
struct ProposalResponse {
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
async fn governance_proposal(
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
async fn threshold_config(State(state): State<ApiState>) -> ApiResult<Json<ThresholdConfig>> {
    let config: Option<ThresholdConfig> = read(&view(&state)?, keys::THRESHOLD);
    config.map(Json).ok_or_else(|| ApiError::not_found("threshold release (the network has no share keys)"))
}

#[utoipa::path(
    get,
    path = "/v1/access/{tx}/content",
    tag = "records",
    params(("tx" = String, Path, pattern = "^[0-9a-f]{64}$", description = "RecordAccess transaction id (64 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The record ciphertext.", body = Vec<u8>, content_type = "application/octet-stream"), Problems)
)]
async fn access_content(
    State(state): State<ApiState>,
    Path(tx): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Response> {
    let tx: TxId = parse(&tx, "transaction id")?;
    let (_, Served { record, .. }) = allowed_access(&state, &tx, me)?;
    let bytes = state.blobs.get(&record.digest).await.map_err(|e| match e {
        BlobError::Integrity => {
            state.app.inner().metrics.storage_errors.inc();
            ApiError::new(StatusCode::BAD_GATEWAY, PROBLEM_INTEGRITY, "stored ciphertext does not match the ledger")
        }
        BlobError::NotFound => ApiError::not_found("ciphertext"),
        other => storage_failure(&state, other),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn logged_routes_carry_no_ids() {
        let uri: axum::http::Uri = "/v1/patients/0123456789abcdef0123456789abcdef/records?x=1".parse().unwrap();
        assert_eq!(super::route_of(&uri), "/v1/patients/{id}/records");
        let uri: axum::http::Uri = "/v1/status".parse().unwrap();
        assert_eq!(super::route_of(&uri), "/v1/status");
    }
}
