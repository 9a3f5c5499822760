//! The FHIR REST surface (R4, JSON) that local applications talk to.
//!
//! The gateway acts as the member whose keys it holds, so it listens on loopback only, refuses
//! requests whose `Host` is not a loopback name (DNS rebinding), and takes bodies only as
//! `application/fhir+json` or `application/json` (a cross-site form cannot send those without a
//! CORS preflight, which it never grants). A browser's cross-site request (`Sec-Fetch-Site:
//! cross-site` or `same-site`, or an `Origin` other than a loopback one) is refused before
//! anything is signed: a web page's `<img src=http://127.0.0.1:PORT/Observation>` would otherwise
//! have the gateway commit audited reads in the member's name. And every request but the
//! capability statement carries the gateway's local credential (`Authorization: Bearer`, a
//! random token the gateway writes, readable by its owner only, when it starts), so another user
//! or program on the machine cannot have it sign either. Every error is an OperationOutcome with
//! the FHIR status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use medledger_types::MemberId;
use serde_json::{Value, json};

use crate::export;
use crate::fhir::{self, FhirError};
use crate::params;
use crate::service::{self, Gateway, Search, Stored};

/// How long one request may take (a transaction Bundle waits for its commits).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

struct App {
    gateway: Gateway,
    base: String,
    /// Bulk exports started here (at most [`EXPORT_JOBS_MAX`] kept), by job id.
    exports: std::sync::Mutex<std::collections::BTreeMap<String, ExportJob>>,
    /// Requests with bodies over [`LARGE_BODY_BYTES`] are handled a few at a time (parsed off the
    /// async threads): the gateway's memory stays bounded whatever number arrive together.
    large_parses: tokio::sync::Semaphore,
}

/// A body from this size on takes one of [`LARGE_PARSES`] permits to be parsed.
const LARGE_BODY_BYTES: usize = 1 << 20;
const LARGE_PARSES: usize = 2;

type Shared = Arc<App>;

fn fhir_json(status: StatusCode, value: &Value) -> Response {
    let mut response = (status, value.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(fhir::FHIR_JSON));
    response
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        fhir_json(status, &self.outcome())
    }
}

/// The router, for `base` (the URL clients reach it at, e.g. `http://127.0.0.1:8080`), admitting
/// requests that bear `credential` (after the loopback and cross-site checks).
pub fn router(gateway: Gateway, base: String, credential: Credential) -> Router {
    let app = Arc::new(App {
        gateway,
        base: base.trim_end_matches('/').to_string(),
        exports: Default::default(),
        large_parses: tokio::sync::Semaphore::new(LARGE_PARSES),
    });
    Router::new()
        .route("/metadata", get(metadata))
        .route("/", axum::routing::post(transaction))
        .route("/{kind}", get(search).post(create).put(conditional_update))
        .route("/{kind}/{id}", get(read).put(update).delete(delete))
        .route("/{kind}/{id}/{operation}", get(operation))
        .route("/{kind}/{id}/_history/{vid}", get(vread))
        .route("/Patient/$export", get(export_patients))
        .route("/$export-poll-status/{job}", get(export_status).delete(export_cancel))
        .route("/$export-files/{job}/{file}", get(export_file))
        .fallback(|| async { FhirError::not_found("no such FHIR interaction") })
        .layer(DefaultBodyLimit::max(fhir::BODY_BYTES_MAX))
        .layer(middleware::from_fn_with_state(Arc::new(credential), authorize))
        .layer(middleware::from_fn(guard))
        .with_state(app)
}

/// Serves until `shutdown` completes, to requests bearing `token` (see [`Credential`]). Refuses
/// non-loopback addresses.
pub async fn serve(
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    token: Credential,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other("the gateway acts with your keys: it listens on a loopback address only"));
    }
    let base = format!("http://{addr}");
    axum::serve(listener, router(gateway, base, token)).with_graceful_shutdown(shutdown).await
}

/// The gateway's local credential: a random bearer token made when it starts. Kept as its SHA-256
/// only, and compared as such (the comparison's time says nothing about the token).
pub struct Credential {
    digest: [u8; 32],
}

impl Credential {
    /// A new random credential and its text (64 hex digits) for the token file.
    pub fn generate() -> (Self, zeroize::Zeroizing<String>) {
        let token = zeroize::Zeroizing::new(hex::encode(medledger_crypto::random_bytes::<32>()));
        (Credential { digest: medledger_crypto::sha256(token.as_bytes()) }, token)
    }

    fn admits(&self, presented: &str) -> bool {
        medledger_crypto::sha256(presented.as_bytes()) == self.digest
    }
}

/// Refuses (401) a request without the gateway's credential; the capability statement is open
/// (clients read it before anything else, and it says nothing of any patient).
async fn authorize(State(credential): State<Arc<Credential>>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET && request.uri().path() == "/metadata" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if presented.is_some_and(|token| credential.admits(token)) {
        return next.run(request).await;
    }
    let mut response =
        FhirError::new(401, "login", "send the gateway's token (Authorization: Bearer, from its token file)")
            .into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name == "localhost" || name == "[::1]" || name.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a browser says the request comes from another site: `Sec-Fetch-Site` of another site,
/// or an `Origin` that is not a loopback origin (a native client sends neither).
fn cross_site(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("?").to_ascii_lowercase());
    let fetched_from_elsewhere = value("sec-fetch-site").is_some_and(|site| site != "same-origin" && site != "none");
    let foreign_origin = value("origin").is_some_and(|origin| {
        let host = origin.strip_prefix("http://").unwrap_or("not-a-loopback-origin");
        origin == "null" || !loopback_host(host)
    });
    fetched_from_elsewhere || foreign_origin
}

async fn guard(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !loopback_host(host) {
        return FhirError::forbidden("requests must address the gateway by a loopback name").into_response();
    }
    if cross_site(request.headers()) {
        return FhirError::forbidden("cross-site requests are refused: the gateway acts with your keys")
            .into_response();
    }
    if matches!(*request.method(), Method::POST | Method::PUT) {
        let ct = request.headers().get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let media = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        if media != "application/fhir+json" && media != "application/json" {
            return FhirError::new(415, "not-supported", "send application/fhir+json").into_response();
        }
        // A declared length over the limit is refused before a byte of the body is read (a
        // client that sent `Expect: 100-continue` never sends it at all).
        let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > fhir::BODY_BYTES_MAX as u64) {
            return as_outcome(StatusCode::PAYLOAD_TOO_LARGE.into_response());
        }
    }
    let format = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("_format=")).map(str::to_ascii_lowercase));
    if format.is_some_and(|f| !f.contains("json")) || !accepts_json(request.headers()) {
        return FhirError::new(406, "not-supported", "this gateway speaks FHIR JSON only (application/fhir+json)")
            .into_response();
    }
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => FhirError::new(504, "timeout", "the network did not answer in time").into_response(),
    };
    as_outcome(response)
}

/// Whether the client takes JSON: no `Accept`, or one naming FHIR JSON, JSON or a wildcard
/// (`_format` is checked apart).
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT) else { return true };
    let accept = accept.to_str().unwrap_or_default().to_ascii_lowercase();
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let refused = parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0)));
        !refused && matches!(media, "" | "*/*" | "application/*" | "application/json" | "application/fhir+json")
    })
}

/// An error the HTTP layer made (a body over the limit, a method the path does not have, an
/// unreadable request) as an OperationOutcome with the same status: FHIR clients parse every
/// error body as one.
fn as_outcome(response: Response) -> Response {
    let status = response.status();
    let is_fhir = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/fhir+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_fhir {
        return response;
    }
    let code = match status.as_u16() {
        413 => "too-costly",
        405 | 415 => "not-supported",
        404 => "not-found",
        408 | 504 => "timeout",
        400..=499 => "invalid",
        _ => "exception",
    };
    let reason = status.canonical_reason().unwrap_or("error").to_ascii_lowercase();
    let diagnostics = match status.as_u16() {
        413 => format!("bodies are limited to {} MiB", fhir::BODY_BYTES_MAX >> 20),
        405 => "this interaction is not supported on this path".to_string(),
        _ => reason,
    };
    let mut outcome = FhirError::new(status.as_u16(), code, diagnostics).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        outcome.headers_mut().insert(header::ALLOW, allow.clone());
    }
    outcome
}

/// What `Prefer: return=` asks of a create or update.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Return {
    Representation,
    Minimal,
    Outcome,
}

fn prefer(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split([',', ';'])).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().trim_matches('"').to_ascii_lowercase())
    })
}

fn prefer_return(headers: &HeaderMap) -> Return {
    match prefer(headers, "return").as_deref() {
        Some("minimal") => Return::Minimal,
        Some("operationoutcome") => Return::Outcome,
        _ => Return::Representation,
    }
}

/// `Prefer: handling=strict`: refuse what is not supported instead of ignoring it.
fn strict(headers: &HeaderMap) -> bool {
    prefer(headers, "handling").as_deref() == Some("strict")
}

/// Parameters every interaction takes (the format is checked by the guard, paging by each search).
const COMMON_PARAMETERS: &[&str] = &["_format", "_pretty", "_count", "_offset"];

/// Under `Prefer: handling=strict`, a 400 naming the parameters outside `supported`.
fn refuse_unsupported(headers: &HeaderMap, pairs: &[(String, String)], supported: &[&str]) -> Result<(), FhirError> {
    if !strict(headers) {
        return Ok(());
    }
    let unknown: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !supported.contains(k) && !COMMON_PARAMETERS.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(FhirError::invalid(format!(
        "unsupported search parameter(s) under Prefer: handling=strict: {} (supported: {})",
        unknown.join(", "),
        supported.join(", ")
    )))
}

/// Parses a request body (see [`fhir::parse_resource`]). A large one is checked for its shape
/// first, then waits for one of the few permits large requests take for their whole handling
/// (parse on a blocking thread, seal, commit): the permit comes back with the resource.
async fn body_resource<'a>(
    app: &'a App,
    bytes: &Bytes,
) -> Result<(serde_json::Map<String, Value>, Option<tokio::sync::SemaphorePermit<'a>>), FhirError> {
    if bytes.len() < LARGE_BODY_BYTES {
        return Ok((fhir::parse_resource(bytes)?, None));
    }
    // A body refused for its shape holds nothing and waits for nothing.
    fhir::check_shape(bytes)?;
    let permit = app.large_parses.acquire().await.map_err(|_| FhirError::new(503, "transient", "shutting down"))?;
    let bytes = bytes.clone();
    let resource = tokio::task::spawn_blocking(move || fhir::parse_resource(&bytes))
        .await
        .map_err(|_| FhirError::new(500, "exception", "the parser stopped"))??;
    Ok((resource, Some(permit)))
}

fn respond(app: &App, status: StatusCode, stored: &Stored) -> Response {
    respond_as(app, status, stored, Return::Representation)
}

/// The reply to a read, create or update: the resource (or, as `Prefer: return=` asks, nothing or
/// an OperationOutcome) with its version headers.
fn respond_as(app: &App, status: StatusCode, stored: &Stored, prefer: Return) -> Response {
    let mut response = match prefer {
        Return::Representation => fhir_json(status, &Value::Object(stored.resource.clone())),
        Return::Minimal => status.into_response(),
        Return::Outcome => {
            let what = if status == StatusCode::CREATED { "created" } else { "updated" };
            let diagnostics = format!("{} {}/{} version {}", what, stored.resource_type(), stored.id(), stored.version);
            fhir_json(status, &informational(&diagnostics))
        }
    };
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", stored.version)) {
        headers.insert(header::ETAG, v);
    }
    let location = format!("{}/{}/{}/_history/{}", app.base, stored.resource_type(), stored.id(), stored.version);
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.insert(header::CONTENT_LOCATION, v.clone());
        if status == StatusCode::CREATED {
            headers.insert(header::LOCATION, v);
        }
    }
    let updated = std::time::UNIX_EPOCH + Duration::from_millis(stored.updated.get());
    if let Ok(v) = HeaderValue::from_str(&httpdate(updated)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
    response
}

/// An HTTP date (RFC 9110 IMF-fixdate).
fn httpdate(t: std::time::SystemTime) -> String {
    // humantime gives RFC 3339; Last-Modified wants IMF-fixdate, built from the same instant.
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m, s) = ((secs % 86_400) / 3600, (secs % 3600) / 60, secs % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let date = humantime::format_rfc3339_seconds(t).to_string();
    let (y, mo, d) = (&date[0..4], &date[5..7], &date[8..10]);
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [mo.parse::<usize>().unwrap_or(1).clamp(1, 12) - 1];
    format!("{weekday}, {d} {month} {y} {h:02}:{m:02}:{s:02} GMT")
}

async fn metadata(State(app): State<Shared>) -> Response {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    fhir_json(StatusCode::OK, &fhir::capability_statement(&app.base, &now[..10]))
}

fn check_type(kind: &str) -> Result<(), FhirError> {
    if fhir::is_resource_type(kind) { Ok(()) } else { Err(FhirError::not_found("unknown resource type")) }
}

/// An OperationOutcome that informs (no error).
fn informational(diagnostics: &str) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational", "diagnostics": diagnostics}]})
}

async fn create(
    State(app): State<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, FhirError> {
    if kind == "Bundle" {
        // A Bundle is a container, not a record: its entries are (each in its patient's chart).
        return Err(FhirError::new(
            422,
            "not-supported",
            "a Bundle is not stored as one resource: send its entries as a Bundle of type transaction to the base \
             URL (POST /), and each becomes a record of its patient's chart (or of the organisation's directory)",
        ));
    }
    check_type(&kind)?;
    let (resource, _large) = body_resource(&app, &body).await?;
    // Conditional create (`If-None-Exist: identifier=sys|value`, or the same criteria as the
    // query of the POST, as some clients send them): a search over every chart the member may
    // read; one match is returned as it is (200), several are 412, none creates.
    let in_query: Vec<(String, String)> =
        query_pairs(query.as_deref()).into_iter().filter(|(k, _)| !COMMON_PARAMETERS.contains(&k.as_str())).collect();
    let criteria = match headers.get("if-none-exist") {
        Some(value) => {
            let text = value.to_str().map_err(|_| FhirError::invalid("If-None-Exist is not text"))?;
            Some(query_pairs(Some(text.trim_start_matches('?'))))
        }
        None if !in_query.is_empty() => Some(in_query),
        None => None,
    };
    if let Some(pairs) = criteria {
        let matches = conditional_matches(&app, &kind, &pairs, "If-None-Exist").await?;
        match matches.hits.len() {
            0 => {}
            1 => {
                // The one match, as the ledger lets this member read it now (audited).
                if let Some(found) = app.gateway.read_hits(&matches.hits, &matches.just_read).await?.first() {
                    return Ok(respond_as(&app, StatusCode::OK, found, prefer_return(&headers)));
                }
            }
            n => {
                return Err(FhirError::new(
                    412,
                    "multiple-matches",
                    format!("If-None-Exist matches {n} resources: make the criteria more selective"),
                ));
            }
        }
    }
    let stored = app.gateway.create(&kind, resource).await?;
    Ok(respond_as(&app, StatusCode::CREATED, &stored, prefer_return(&headers)))
}

/// `GET /{type}/{id}/_history/{vid}`: that version (see [`Gateway::read_version`]).
async fn vread(
    State(app): State<Shared>,
    Path((kind, id, vid)): Path<(String, String, String)>,
) -> Result<Response, FhirError> {
    check_type(&kind)?;
    if !fhir::is_id(&id) {
        return Err(FhirError::not_found("no such resource"));
    }
    let vid: u32 = vid.parse().map_err(|_| FhirError::not_found("a version id is a number"))?;
    let stored = app.gateway.read_version(&kind, &id, vid).await?;
    Ok(respond(&app, StatusCode::OK, &stored))
}

/// `GET /{type}/{id}/_history`: a Bundle of type history, newest version first, paged.
async fn history(app: &App, kind: &str, id: &str, pairs: &[(String, String)]) -> Result<Response, FhirError> {
    check_type(kind)?;
    if !fhir::is_id(id) {
        return Err(FhirError::not_found("no such resource"));
    }
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.parse::<usize>());
    let count = get("_count").transpose().map_err(|_| FhirError::invalid("_count takes a number"))?;
    let offset = get("_offset").transpose().map_err(|_| FhirError::invalid("_offset takes a number"))?.unwrap_or(0);
    let count = count.unwrap_or(fhir::PAGE_DEFAULT).clamp(1, fhir::PAGE_MAX);
    let (versions, total) = app.gateway.history(kind, id, count, offset).await?;
    let path = format!("{}/{kind}/{id}/_history", app.base);
    let mut link = vec![json!({"relation": "self", "url": format!("{path}?_count={count}&_offset={offset}")})];
    if offset + count < total {
        link.push(json!({"relation": "next", "url": format!("{path}?_count={count}&_offset={}", offset + count)}));
    }
    let entry: Vec<Value> = versions
        .into_iter()
        .map(|s| {
            let deleted = service::is_deleted(&s.resource);
            let (method, status) = match (deleted, s.version) {
                (true, _) => ("DELETE", "200 OK"),
                (false, 1) => ("POST", "201 Created"),
                (false, _) => ("PUT", "200 OK"),
            };
            let url = if s.version == 1 { kind.to_string() } else { format!("{kind}/{id}") };
            let mut e = json!({
                "fullUrl": format!("{}/{kind}/{id}", app.base),
                "request": {"method": method, "url": url},
                "response": {
                    "status": status,
                    "etag": format!("W/\"{}\"", s.version),
                    "lastModified": service::rfc3339(s.updated),
                }
            });
            if !deleted {
                e["resource"] = Value::Object(s.resource);
            }
            e
        })
        .collect();
    Ok(fhir_json(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "type": "history", "total": total, "link": link, "entry": entry}),
    ))
}

/// `DELETE /{type}/{id}`: see [`Gateway::delete`]; 200 with an OperationOutcome either way.
async fn delete(State(app): State<Shared>, Path((kind, id)): Path<(String, String)>) -> Result<Response, FhirError> {
    check_type(&kind)?;
    if !fhir::is_id(&id) {
        return Err(FhirError::not_found("no such resource"));
    }
    let diagnostics = match app.gateway.delete(&kind, &id).await? {
        Some(version) => format!("deleted: version {version} marks {kind}/{id} entered in error; reads now answer 410"),
        None => format!("{kind}/{id} was deleted already"),
    };
    Ok(fhir_json(StatusCode::OK, &informational(&diagnostics)))
}

async fn read(State(app): State<Shared>, Path((kind, id)): Path<(String, String)>) -> Result<Response, FhirError> {
    check_type(&kind)?;
    if !fhir::is_id(&id) {
        return Err(FhirError::not_found("no such resource"));
    }
    let stored = app.gateway.read(&kind, &id).await?;
    Ok(respond(&app, StatusCode::OK, &stored))
}

/// `W/"3"` or `"3"` to 3.
fn if_match(headers: &HeaderMap) -> Result<Option<u32>, FhirError> {
    let Some(value) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse().map(Some).map_err(|_| FhirError::invalid("If-Match takes an ETag such as W/\"1\""))
}

async fn update(
    State(app): State<Shared>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    check_type(&kind)?;
    let expected = if_match(&headers)?;
    let (resource, _large) = body_resource(&app, &body).await?;
    let stored = app.gateway.update(&kind, &id, resource, expected).await?;
    Ok(respond_as(&app, StatusCode::OK, &stored, prefer_return(&headers)))
}

/// `PUT /{type}?criteria` (conditional update): the criteria searched over every chart the member
/// may read (and the organisation's directory); no match creates the resource (201), one match is
/// updated (200; an id in the body must be that one's), several are 412.
async fn conditional_update(
    State(app): State<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, FhirError> {
    check_type(&kind)?;
    let pairs: Vec<(String, String)> =
        query_pairs(query.as_deref()).into_iter().filter(|(k, _)| !COMMON_PARAMETERS.contains(&k.as_str())).collect();
    if pairs.is_empty() {
        return Err(FhirError::new(405, "not-supported", "PUT to a type needs search criteria (conditional update)"));
    }
    let expected = if_match(&headers)?;
    let (mut resource, _large) = body_resource(&app, &body).await?;
    match conditional_matches(&app, &kind, &pairs, "The conditional update").await?.hits.as_slice() {
        [] => {
            if resource.get("id").is_some() {
                return Err(FhirError::invalid(
                    "no resource matches, and ids are the server's: leave id out to create it",
                ));
            }
            let stored = app.gateway.create(&kind, resource).await?;
            Ok(respond_as(&app, StatusCode::CREATED, &stored, prefer_return(&headers)))
        }
        [one] => {
            let id = one.id().to_string();
            match resource.get("id").and_then(Value::as_str) {
                Some(given) if given != id => {
                    return Err(FhirError::invalid("the resource's id is not that of the resource the criteria match"));
                }
                _ => resource.insert("id".into(), Value::String(id.clone())),
            };
            let stored = app.gateway.update(&kind, &id, resource, expected).await?;
            Ok(respond_as(&app, StatusCode::OK, &stored, prefer_return(&headers)))
        }
        many => Err(FhirError::new(
            412,
            "multiple-matches",
            format!("the criteria match {} resources: make them more selective", many.len()),
        )),
    }
}

/// What the criteria of a conditional create or update (`what`) match, over every chart the
/// member may read; criteria that name no search parameter of the type are refused.
async fn conditional_matches(
    app: &App,
    kind: &str,
    pairs: &[(String, String)],
    what: &str,
) -> Result<crate::index::Found, FhirError> {
    let found = run_search(app, kind, pairs, false).await?;
    if found.applied.is_empty() {
        return Err(FhirError::invalid(format!(
            "{what} names no search parameter of {kind} (supported: {})",
            params::supported(kind).join(", ")
        )));
    }
    Ok(crate::index::Found { hits: found.hits, just_read: found.just_read })
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else { return Vec::new() };
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .take(100)
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn search(
    State(app): State<Shared>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    check_type(&kind)?;
    let pairs = query_pairs(query.as_deref());
    refuse_unsupported(&headers, &pairs, &params::supported(&kind))?;
    let mut specs = (Vec::new(), Vec::new());
    let mut asked = Vec::new();
    for (k, v) in &pairs {
        let into = match k.as_str() {
            "_include" => &mut specs.0,
            "_revinclude" => &mut specs.1,
            _ => continue,
        };
        if asked.len() >= crate::include::SPECS_MAX {
            return Err(FhirError::invalid(format!("at most {} _include and _revinclude", crate::include::SPECS_MAX)));
        }
        into.push(crate::include::Spec::parse(v)?);
        asked.push((k.clone(), v.clone()));
    }
    let found = run_search(&app, &kind, &pairs, no_cache(&headers)).await?;
    let path = format!("{}/{kind}", app.base);
    if found.summary_count {
        // A count returns no resource: nothing is read.
        let query = link_query(&found.applied);
        let link = [json!({"relation": "self", "url": format!("{path}?{query}")})];
        return Ok(fhir_json(
            StatusCode::OK,
            &json!({"resourceType": "Bundle", "type": "searchset", "total": found.hits.len(), "link": link}),
        ));
    }
    let count = found.count.clamp(1, fhir::PAGE_MAX);
    let window: Vec<_> = found.hits.iter().skip(found.offset).take(count).cloned().collect();
    let page = app.gateway.read_hits(&window, &found.just_read).await?;
    let included = crate::include::included(&app.gateway, &kind, &page, &specs.0, &specs.1).await?;
    let mut applied = found.applied;
    applied.extend(asked);
    let bundle = searchset(&app, &path, &applied, page, found.hits.len(), count, found.offset, included);
    Ok(fhir_json(StatusCode::OK, &bundle))
}

/// What a search found (from the index, nothing read yet but what its catch-up read), and how
/// it was asked.
struct Searched {
    hits: Vec<std::sync::Arc<crate::index::Indexed>>,
    just_read: crate::index::JustRead,
    applied: Vec<(String, String)>,
    count: usize,
    offset: usize,
    summary_count: bool,
}

/// `Cache-Control: no-cache` (as HAPI FHIR reads it): the index lists every chart again before
/// the search, not only those whose head moved since it last looked.
fn no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
}

/// A search of `kind` with these parameters over every chart the member may read (see
/// [`params`]); parameters the type does not have are left out of `applied`.
async fn run_search(app: &App, kind: &str, pairs: &[(String, String)], fresh: bool) -> Result<Searched, FhirError> {
    let mut s = Search { resource_type: Some(kind.to_string()), fresh, ..Search::default() };
    let (mut count, mut offset) = (fhir::PAGE_DEFAULT, 0usize);
    let (mut filters, mut sort, mut summary_count) = (Vec::new(), None, false);
    let mut applied = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "patient" | "subject" => {
                s.patient =
                    Some(service::patient_param(v).map_err(|_| FhirError::invalid("patient takes Patient/ID"))?);
                applied.push((k.clone(), v.clone()));
            }
            "_id" => {
                s.ids.extend(v.split(',').map(str::to_string));
                applied.push((k.clone(), v.clone()));
            }
            "_count" => count = v.parse().map_err(|_| FhirError::invalid("_count takes a number"))?,
            "_offset" => offset = v.parse().map_err(|_| FhirError::invalid("_offset takes a number"))?,
            "_sort" => {
                sort = Some(params::sort(kind, v)?);
                applied.push((k.clone(), v.clone()));
            }
            "_summary" if v == "count" => {
                summary_count = true;
                applied.push((k.clone(), v.clone()));
            }
            "_summary" => return Err(FhirError::invalid("_summary takes count only")),
            // The type's own parameters; any other is ignored, as FHIR's lenient handling allows
            // (the self link shows which were applied; `Prefer: handling=strict` refuses them).
            _ => {
                if let Some(filter) = params::filter(kind, k, v)? {
                    filters.push(filter);
                    applied.push((k.clone(), v.clone()));
                }
            }
        }
    }
    // Only the page needs an order (a count none).
    let sorted = if summary_count { 0 } else { offset.saturating_add(count.clamp(1, fhir::PAGE_MAX)) };
    let found = app.gateway.find(&s, &filters, sort.as_ref(), sorted).await?;
    Ok(Searched { hits: found.hits, just_read: found.just_read, applied, count, offset, summary_count })
}

/// The applied parameters as a query string (each value percent-encoded), ending in `&` when not empty.
fn link_query(applied: &[(String, String)]) -> String {
    let encode = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    applied.iter().map(|(k, v)| format!("{}={}&", encode(k), encode(v))).collect()
}

/// A searchset Bundle: one page of matches (`page`, at `offset` of `total`) and what they include.
#[allow(clippy::too_many_arguments)]
fn searchset(
    app: &App,
    path: &str,
    applied: &[(String, String)],
    page: Vec<Stored>,
    total: usize,
    count: usize,
    offset: usize,
    included: Vec<Stored>,
) -> Value {
    let query = link_query(applied);
    let mut link = vec![json!({"relation": "self", "url": format!("{path}?{query}_count={count}&_offset={offset}")})];
    if offset + count < total {
        link.push(
            json!({"relation": "next", "url": format!("{path}?{query}_count={count}&_offset={}", offset + count)}),
        );
    }
    let entry: Vec<Value> = page
        .into_iter()
        .map(|s| {
            json!({
                "fullUrl": format!("{}/{}/{}", app.base, s.resource_type(), s.id()),
                "resource": Value::Object(s.resource),
                "search": {"mode": "match"}
            })
        })
        .chain(included.into_iter().map(|s| {
            json!({
                "fullUrl": format!("{}/{}/{}", app.base, s.resource_type(), s.id()),
                "resource": Value::Object(s.resource),
                "search": {"mode": "include"}
            })
        }))
        .collect();
    json!({"resourceType": "Bundle", "type": "searchset", "total": total, "link": link, "entry": entry})
}

async fn operation(
    State(app): State<Shared>,
    Path((kind, id, operation)): Path<(String, String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let pairs = query_pairs(query.as_deref());
    if operation == "_history" {
        refuse_unsupported(&headers, &pairs, &[])?;
        return history(&app, &kind, &id, &pairs).await;
    }
    if operation == "$export" {
        refuse_unsupported(&headers, &pairs, EXPORT_PARAMETERS)?;
        let strict = kind == "Patient";
        let patients = match kind.as_str() {
            "Patient" => vec![service::patient_param(&id)?],
            // A care team is the gateway's Group: the charts it holds grants on.
            "Group" => {
                let team: MemberId = id.parse().map_err(|_| FhirError::not_found("no such Group (a care team id)"))?;
                app.gateway
                    .session
                    .readable_charts(&app.gateway.me, &[team], export::EXPORT_CHARTS_MAX)
                    .await?
                    .into_iter()
                    .filter(|p| app.gateway.me.role != medledger_types::Role::Patient || *p != app.gateway.me.member)
                    .collect()
            }
            _ => return Err(FhirError::not_found("$export is on Patient, Patient/ID and Group/ID")),
        };
        return start_export(&app, &pairs, patients, strict).await;
    }
    if kind != "Patient" || operation != "$everything" {
        return Err(FhirError::not_found("no such operation (this gateway has Patient/ID/$everything)"));
    }
    let patient = service::patient_param(&id)?;
    refuse_unsupported(&headers, &pairs, &[])?;
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok());
    let (count, offset) = (get("_count").unwrap_or(fhir::PAGE_MAX), get("_offset").unwrap_or(0));
    let count = count.clamp(1, fhir::PAGE_MAX);
    let search = Search { patient: Some(patient), fresh: no_cache(&headers), ..Search::default() };
    let found = match app.gateway.find(&search, &[], None, offset.saturating_add(count)).await {
        Ok(found) => found,
        // Not a chart this member may list: the Patient read answers (404 unknown, 403 denied, audited).
        Err(e) if e.status == 403 => {
            app.gateway.read("Patient", &id).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if found.hits.is_empty() {
        // Nothing this member may read (or no such chart): FHIR answers 404 for an unknown patient.
        app.gateway.read("Patient", &id).await?;
    }
    let window: Vec<_> = found.hits.iter().skip(offset).take(count).cloned().collect();
    let page = app.gateway.read_hits(&window, &found.just_read).await?;
    let path = format!("{}/Patient/{id}/$everything", app.base);
    Ok(fhir_json(StatusCode::OK, &searchset(&app, &path, &[], page, found.hits.len(), count, offset, Vec::new())))
}

async fn transaction(State(app): State<Shared>, body: Bytes) -> Result<Response, FhirError> {
    let (bundle, _large) = body_resource(&app, &body).await?;
    if fhir::resource_type(&bundle) != "Bundle" {
        return Err(FhirError::invalid("POST / takes a transaction Bundle"));
    }
    let written = app.gateway.transaction(bundle).await?;
    let entry: Vec<Value> = written
        .iter()
        .map(|(s, status)| {
            json!({
                "fullUrl": format!("{}/{}/{}", app.base, s.resource_type(), s.id()),
                "resource": Value::Object(s.resource.clone()),
                "response": {
                    "status": status,
                    "location": format!("{}/{}/_history/{}", s.resource_type(), s.id(), s.version),
                    "etag": format!("W/\"{}\"", s.version),
                    "lastModified": service::rfc3339(s.updated),
                }
            })
        })
        .collect();
    Ok(fhir_json(StatusCode::OK, &json!({"resourceType": "Bundle", "type": "transaction-response", "entry": entry})))
}

/// Bulk exports kept at once; starting one more forgets (and deletes) the oldest.
const EXPORT_JOBS_MAX: usize = 4;
/// The kick-off parameters of `$export` this gateway applies.
const EXPORT_PARAMETERS: &[&str] = &["_type", "_outputFormat"];

/// One bulk export and how far it got.
struct ExportJob {
    request: String,
    started: medledger_types::Timestamp,
    dir: std::path::PathBuf,
    state: ExportState,
}

enum ExportState {
    Running { done: usize, total: usize },
    Done(Vec<export::Output>),
    Failed(String),
}

/// `GET /Patient/$export`: every chart the member may read.
async fn export_patients(
    State(app): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let pairs = query_pairs(query.as_deref());
    refuse_unsupported(&headers, &pairs, EXPORT_PARAMETERS)?;
    let patients = export::readable_charts(&app.gateway).await?;
    start_export(&app, &pairs, patients, false).await
}

/// The Bulk Data kick-off: 202 with the status URL in `Content-Location`; the export runs in the
/// background, chart by chart (each resource an audited read).
async fn start_export(
    app: &Shared,
    pairs: &[(String, String)],
    patients: Vec<MemberId>,
    one_patient: bool,
) -> Result<Response, FhirError> {
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if let Some(format) = get("_outputFormat")
        && !matches!(format.as_str(), "application/fhir+ndjson" | "application/ndjson" | "ndjson")
    {
        return Err(FhirError::invalid("_outputFormat: this gateway exports application/fhir+ndjson"));
    }
    let types: Option<Vec<String>> = get("_type").map(|t| t.split(',').map(str::to_string).collect());
    if let Some(bad) = types.iter().flatten().find(|t| !fhir::is_resource_type(t)) {
        return Err(FhirError::invalid(format!("_type: {bad} is not a resource type this gateway stores")));
    }
    let job = hex::encode(medledger_crypto::random_bytes::<16>());
    let dir = app.gateway.session.home.dir().join("exports").join(&job);
    let request = format!("{}/Patient/$export", app.base);
    let now = medledger_types::Timestamp::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
    );
    {
        let mut jobs = app.exports.lock().expect("exports lock");
        while jobs.len() >= EXPORT_JOBS_MAX {
            let oldest = jobs.iter().min_by_key(|(_, j)| j.started).map(|(id, _)| id.clone());
            if let Some(old) = oldest.and_then(|id| jobs.remove(&id)) {
                let _ = std::fs::remove_dir_all(&old.dir);
            }
        }
        let state = ExportState::Running { done: 0, total: patients.len() };
        jobs.insert(job.clone(), ExportJob { request, started: now, dir: dir.clone(), state });
    }
    let worker = app.clone();
    let id = job.clone();
    tokio::spawn(async move {
        let request = export::Request { patients, types, strict: one_patient };
        let progress = |done, total| {
            if let Some(j) = worker.exports.lock().expect("exports lock").get_mut(&id) {
                j.state = ExportState::Running { done, total };
            }
        };
        let result = export::export(&worker.gateway, &request, &dir, progress).await;
        if let Some(j) = worker.exports.lock().expect("exports lock").get_mut(&id) {
            j.state = match result {
                Ok(outputs) => ExportState::Done(outputs),
                Err(e) => ExportState::Failed(e.diagnostics),
            };
        }
    });
    let mut response = StatusCode::ACCEPTED.into_response();
    let status = format!("{}/$export-poll-status/{job}", app.base);
    if let Ok(v) = HeaderValue::from_str(&status) {
        response.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(response)
}

/// `GET /$export-poll-status/{job}`: 202 with `X-Progress` while running, then the manifest.
async fn export_status(State(app): State<Shared>, Path(job): Path<String>) -> Result<Response, FhirError> {
    let jobs = app.exports.lock().expect("exports lock");
    let j = jobs.get(&job).ok_or_else(|| FhirError::not_found("no such export"))?;
    match &j.state {
        ExportState::Running { done, total } => {
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{done} of {total} charts")) {
                response.headers_mut().insert("x-progress", v);
            }
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(response)
        }
        ExportState::Failed(why) => Err(FhirError::new(500, "exception", format!("the export failed: {why}"))),
        ExportState::Done(outputs) => {
            let output: Vec<Value> = outputs
                .iter()
                .map(|o| json!({"type": o.resource_type, "url": format!("{}/$export-files/{job}/{}", app.base, o.file), "count": o.count}))
                .collect();
            let manifest = json!({
                "transactionTime": service::rfc3339(j.started),
                "request": j.request,
                "requiresAccessToken": true,
                "output": output,
                "error": []
            });
            let mut response = (StatusCode::OK, manifest.to_string()).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
    }
}

/// `DELETE /$export-poll-status/{job}`: forgets the export and deletes its files.
async fn export_cancel(State(app): State<Shared>, Path(job): Path<String>) -> Result<Response, FhirError> {
    let removed = app.exports.lock().expect("exports lock").remove(&job);
    let j = removed.ok_or_else(|| FhirError::not_found("no such export"))?;
    let _ = std::fs::remove_dir_all(&j.dir);
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `GET /$export-files/{job}/{file}`: one NDJSON file of a finished export, streamed.
async fn export_file(
    State(app): State<Shared>,
    Path((job, file)): Path<(String, String)>,
) -> Result<Response, FhirError> {
    let path = {
        let jobs = app.exports.lock().expect("exports lock");
        let j = jobs.get(&job).ok_or_else(|| FhirError::not_found("no such export"))?;
        let ExportState::Done(outputs) = &j.state else { return Err(FhirError::not_found("the export is not done")) };
        if !outputs.iter().any(|o| o.file == file) {
            return Err(FhirError::not_found("no such file in this export"));
        }
        j.dir.join(&file)
    };
    let handle = tokio::fs::File::open(&path).await.map_err(|_| FhirError::not_found("the file is gone"))?;
    let length = handle.metadata().await.map_err(|_| FhirError::not_found("the file is gone"))?.len();
    let chunks = futures::stream::unfold(handle, |mut handle| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 * 1024];
        match handle.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buffer)), handle))
            }
            Err(e) => Some((Err(e), handle)),
        }
    });
    let mut response = axum::body::Body::from_stream(chunks).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_only() {
        for ok in ["127.0.0.1:8080", "localhost:1", "[::1]:9", "127.0.0.1", "localhost"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "10.0.0.1:80", "", "localhost.evil.com", "127.0.0.1.evil.com:80"] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    /// Finding 11 of the security review: a web page's `<img src=http://127.0.0.1:PORT/...>` made
    /// the gateway sign accesses in the clinician's name. Browsers name the requesting site.
    #[test]
    fn browsers_cross_site_requests_are_told_apart() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        for native in [vec![], vec![("sec-fetch-site", "none")], vec![("sec-fetch-site", "same-origin")]] {
            assert!(!cross_site(&headers(&native)), "{native:?}");
        }
        assert!(!cross_site(&headers(&[("origin", "http://127.0.0.1:8080")])));
        assert!(!cross_site(&headers(&[("origin", "http://localhost:8080")])));
        for attack in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("origin", "https://evil.example")],
            vec![("origin", "http://evil.example:8080")],
            vec![("origin", "null")],
            vec![("sec-fetch-site", "cross-site"), ("origin", "http://127.0.0.1:8080")],
        ] {
            assert!(cross_site(&headers(&attack)), "{attack:?}");
        }
    }

    #[test]
    fn queries_decode() {
        let p = query_pairs(Some("code=http%3A%2F%2Floinc.org%7C4548-4&_count=2&patient=Patient/ab&x"));
        assert_eq!(p[0], ("code".into(), "http://loinc.org|4548-4".into()));
        assert_eq!(p[1], ("_count".into(), "2".into()));
        assert_eq!(p[3], ("x".into(), "".into()));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a+b%20c"), "a b c");
    }

    #[test]
    fn http_dates() {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(httpdate(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn etags() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"3\""));
        assert_eq!(if_match(&h).unwrap(), Some(3));
        h.insert(header::IF_MATCH, HeaderValue::from_static("nonsense"));
        assert_eq!(if_match(&h).unwrap_err().status, 400);
    }
}
