//! Ciphertext uploads to the validator's object store.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use medledger_ledger::api::{BLOB_BATCH_BYTES_MAX, BLOB_BATCH_MAX, BlobUpload, PROBLEM_INTEGRITY};
use medledger_ledger::state::MemberEntry;
use medledger_store::BlobError;
use medledger_types::{Digest, Role, decode_canonical};

use super::auth::authenticate;
use super::{ApiError, ApiResult, ApiState, Problems, parse};

#[utoipa::path(
    put,
    path = "/v1/blobs/{digest}",
    tag = "records",
    params(("digest" = String, Path, pattern = "^[0-9a-f]{64}$", description = "SHA-256 of the ciphertext (64 hex).")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Record ciphertext, at most 64 MiB."),
    security(("rfc9421" = [])),
    responses((status = 201, description = "Stored (idempotent)."), Problems)
)]
pub(super) async fn put_blob(
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
pub(super) async fn put_blobs(
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
pub(super) fn storage_failure(state: &ApiState, error: BlobError) -> ApiError {
    state.app.inner().metrics.storage_errors.inc();
    tracing::error!(%error, "object store request failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage-unavailable",
        "the validator's object store refused or did not answer (credentials or endpoint); nothing was stored",
    )
}
