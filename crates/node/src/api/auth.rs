//! Request authentication: RFC 9421 signatures, replay protection and the [`Signed`] extractor.

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use medledger_ledger::httpsig::{self, RequestParts};
use medledger_ledger::state::{MemberEntry, MemberStatus, OrgEntry, keys, read};
use medledger_types::{MemberId, Role};

use super::{ApiError, ApiResult, ApiState, view};
use crate::app::wall_clock_ms;
use crate::replay::Refused;

/// Checks the request's RFC 9421 signature (see [`medledger_ledger::httpsig`]): profile, body
/// digest, time window, the signer's committed key, its status, and that the nonce is new.
/// Returns the signer's member entry.
pub(super) fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> ApiResult<MemberEntry> {
    authenticate_member(state, headers, method, uri, body, true)
}

/// [`authenticate`], also for a suspended member or staff of an organisation that left when
/// `active_only` is false (for what the ledger itself then refuses and audits).
fn authenticate_member(
    state: &ApiState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    active_only: bool,
) -> ApiResult<MemberEntry> {
    let signed = signed_request(state, headers, method, uri, body)?;
    let id: MemberId = signed.keyid.parse().map_err(|_| ApiError::unauthenticated("keyid is not a member id"))?;
    let view = view(state)?;
    let Some(member) = read::<MemberEntry>(&view, &keys::member(&id)) else {
        // Logged here, not on the ledger: anyone can send this. No identifier is logged.
        tracing::warn!(route = %route_of(uri), "request signed by an unknown identity");
        return Err(ApiError::unauthenticated("unknown signer"));
    };
    if !signed.verify(&member.signing_key) {
        tracing::warn!(route = %route_of(uri), "request with a bad signature");
        return Err(ApiError::unauthenticated("bad request signature"));
    }
    if !active_only {
        drop(view);
        admit_nonce(state, &signed, uri)?;
        return Ok(member);
    }
    if member.status != MemberStatus::Active {
        tracing::warn!(route = %route_of(uri), role = member.role.as_str(), "request by a suspended member refused");
        return Err(ApiError::denied("this identity is suspended"));
    }
    // Staff of an organisation that left the consortium sign nothing, on the ledger or here (its
    // patients keep their records and rights).
    if member.role != Role::Patient
        && read::<OrgEntry>(&view, &keys::org(&member.org)).is_some_and(|o| o.left_at.is_some())
    {
        tracing::warn!(route = %route_of(uri), "request by staff of an organisation that left refused");
        return Err(ApiError::denied("the member's organisation has left the network"));
    }
    drop(view);
    admit_nonce(state, &signed, uri)?;
    Ok(member)
}

/// Parses and checks a request's RFC 9421 signature headers against the request (profile, body
/// digest, time window, and an `@authority` that names this validator, so a request signed for
/// one validator cannot be replayed on another); the caller checks the key behind `keyid` and
/// the nonce.
pub(crate) fn signed_request(
    state: &ApiState,
    headers: &HeaderMap,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> ApiResult<httpsig::SignedBy> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorities = &state.ops.authorities;
    if !authorities.is_empty() {
        let host = header("host").unwrap_or_default().to_ascii_lowercase();
        if !authorities.contains(&host) {
            tracing::warn!(route = %route_of(uri), "signed request for another authority refused");
            return Err(ApiError::unauthenticated("the request is signed for another validator (@authority)"));
        }
    }
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
            Refused::Busy => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many requests; retry later").retry_after(1)
            }
            Refused::SignerBusy { retry_after_ms } => {
                state.app.inner().metrics.signer_busy.inc();
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "signer-busy",
                    "too many requests by this signer within the signature window; retry later",
                )
                .retry_after(retry_after_ms.div_ceil(1_000))
            }
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

/// A request without a body signed by an enrolled member, active or not: for the one read whose
/// answer only leads to a transaction the ledger judges (and audits) itself.
pub struct Enrolled(pub MemberEntry);

impl axum::extract::FromRequestParts<ApiState> for Enrolled {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &ApiState) -> Result<Self, ApiError> {
        authenticate_member(state, &parts.headers, &parts.method, &parts.uri, &[], false).map(Enrolled)
    }
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
