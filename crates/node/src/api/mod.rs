//! The validator's HTTP/JSON API. It only ever handles signed transactions, ciphertext and
//! wrapped keys; envelopes and ciphertext go only to the signer of a committed, allowed
//! RecordAccess, within [`ACCESS_WINDOW_MS`](medledger_types::limits::ACCESS_WINDOW_MS) of its block.
//!
//! One domain per module: `auth` (request signatures), `ops` (health, readiness, metrics,
//! status), `transactions` (submission, status, blocks, receipts), `members` (identities and the
//! staff directory), `charts` (charts, care teams, grants and key envelopes), `records`, `blobs`
//! (ciphertext uploads), `access` (what an allowed RecordAccess releases), `audit` (audit trails
//! and the review queue) and `governance` (genesis, validator sets, threshold keys). This module
//! holds the shared state, the routes and their OpenAPI document, and the error type.

mod access;
mod audit;
mod auth;
mod blobs;
mod charts;
mod governance;
mod members;
mod ops;
mod proofs;
mod records;
mod transactions;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use medledger_ledger::api::{BLOB_BATCH_BYTES_MAX, PROBLEM_ACCESS_DENIED, Problem};
use medledger_store::Blobs;
use medledger_types::limits::{SIDECAR_BYTES_MAX, TX_BYTES_MAX};

use crate::app::App;

pub use auth::Signed;
pub(crate) use auth::{admit_nonce, signed_request};
pub use transactions::BatchResult;

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
    /// The `host[:port]` names this validator answers signed requests for (its `@authority`,
    /// lower case); empty in in-process tests (no check).
    pub authorities: std::sync::Arc<Vec<String>>,
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
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::status))
        .routes(routes!(transactions::submit).layer(DefaultBodyLimit::max(TX_BYTES_MAX + SIDECAR_BYTES_MAX + 64)))
        .routes(routes!(transactions::submit_batch).layer(DefaultBodyLimit::max(BATCH_BYTES_MAX)))
        .routes(routes!(transactions::tx_status))
        .routes(routes!(transactions::block))
        .routes(routes!(members::member))
        .routes(routes!(members::nonce))
        .routes(routes!(members::charts))
        .routes(routes!(members::chart_records))
        .routes(routes!(members::teams))
        .routes(routes!(charts::chart))
        .routes(routes!(charts::chart_envelope))
        .routes(routes!(charts::grant_all))
        .routes(routes!(charts::patient_grants))
        .routes(routes!(records::record))
        .routes(routes!(records::record_version))
        .routes(routes!(records::patient_records))
        .routes(routes!(records::patient_records_head))
        .routes(routes!(audit::audit))
        .routes(routes!(blobs::put_blob).layer(DefaultBodyLimit::max(BLOB_UPLOAD_MAX)))
        .routes(routes!(blobs::put_blobs).layer(DefaultBodyLimit::max(BLOB_BATCH_BYTES_MAX)))
        .routes(routes!(access::access_bundle))
        .routes(routes!(access::access_content))
        .routes(routes!(access::access_share))
        .routes(routes!(audit::flagged))
        .routes(routes!(members::staff))
        .routes(routes!(records::break_glass_note))
        .routes(routes!(transactions::tx_receipt))
        .routes(routes!(charts::team))
        .routes(routes!(charts::team_envelope))
        .routes(routes!(proofs::chart_proof))
        .routes(routes!(proofs::member_proof))
        .routes(routes!(proofs::team_proof))
        .routes(routes!(governance::genesis))
        .routes(routes!(governance::threshold_config))
        .routes(routes!(governance::governance))
        .routes(routes!(governance::governance_proposal))
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
/// A client asking for a height further ahead of this validator than this is not waited for
/// (it saw that height on a peer: this validator is far behind, or the header is made up).
pub const MIN_HEIGHT_AHEAD_MAX: u64 = 64;

async fn read_your_writes(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wanted =
        request.headers().get(HEADER_MIN_HEIGHT).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(wanted) = wanted {
        if wanted > state.app.last_applied().height.get().saturating_add(MIN_HEIGHT_AHEAD_MAX) {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "behind",
                "this validator is far behind the client's height; try another",
            )
            .into_response();
        }
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

/// The cursor of the next page of a paged list, sent in the [`HEADER_NEXT`] header when the page
/// is full (absent: the list ends here).
///
/// [`HEADER_NEXT`]: medledger_ledger::api::HEADER_NEXT
pub(super) struct NextPage(pub(super) Option<String>);

impl NextPage {
    /// After a page of state rows: the last row's key (hex) when `limit` rows were read.
    pub(super) fn after(rows: &[(Vec<u8>, Vec<u8>)], limit: usize) -> Self {
        NextPage(rows.last().filter(|_| rows.len() == limit).map(|(key, _)| hex::encode(key)))
    }
}

impl axum::response::IntoResponseParts for NextPage {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut res: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        if let Some(cursor) = self.0
            && let Ok(value) = axum::http::HeaderValue::from_str(&cursor)
        {
            res.headers_mut().insert(medledger_ledger::api::HEADER_NEXT, value);
        }
        Ok(res)
    }
}

/// An error as a JSON problem; the detail never carries patient data.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: String,
    title: String,
    /// Seconds to wait before trying again (`Retry-After`), for a 429 or 503.
    retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, title: impl Into<String>) -> Self {
        let kind = if code.starts_with("urn:") { code.to_string() } else { format!("urn:medledger:problem:{code}") };
        Self { status, kind, title: title.into(), retry_after: None }
    }
    /// With `Retry-After: seconds` (at least one).
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
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
        let mut response =
            (self.status, [(header::CONTENT_TYPE, "application/problem+json")], Json(problem)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> ApiResult<T> {
    s.parse().map_err(|_| ApiError::bad(format!("malformed {what}")))
}

fn view(state: &ApiState) -> ApiResult<medledger_store::SpecView<'_>> {
    state.app.inner().db.view(&[]).map_err(ApiError::internal)
}

/// The node's clock as a ledger timestamp, for what the API decides outside execution (grant
/// expiries and break-glass windows when it serves an entry).
fn now() -> medledger_types::Timestamp {
    medledger_types::Timestamp::new(crate::app::wall_clock_ms())
}
