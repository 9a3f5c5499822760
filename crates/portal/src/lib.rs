//! The web portal's server: it serves the portal (a browser client that signs, encrypts, decrypts
//! and audits on the user's device: portal/packages/app on top of portal/packages/protocol) and
//! forwards its signed requests to the validators, from one origin.
//!
//! It holds no key and sees what a validator sees from the CLI: signed requests, signed
//! transactions, ciphertext and wrapped keys. Because a host that served modified script could
//! take keys, every page is served with a strict Content-Security-Policy (`script-src 'self'`, no
//! inline script, no other origin, `frame-ancestors 'none'`), the script is pinned in the page by
//! Subresource Integrity, and the bundle's SHA-256 is printed at start so an organisation can
//! pin what it serves.
//!
//! The browser signs each request for the validator's own `@authority` and path
//! (`/config.json` names them); `/api/{k}/…` forwards it unchanged to validator `k`, whose
//! signature check then holds as if the browser had called it directly. A validator that joined
//! the network after the portal started (a stable index past those configured) is forwarded to
//! once more than a third of the configured validators name the same API address for it in
//! their governance status: no single validator can point the portal at a host of its choosing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use sha2::{Digest, Sha256};

/// The portal as built from portal/ (`npm --prefix portal run build:app`, committed; CI builds it
/// again and checks it is these bytes).
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
pub const APP_JS: &str = include_str!("../assets/app.js");
pub const APP_CSS: &str = include_str!("../assets/app.css");

/// The Content-Security-Policy of every answer: this origin's script, style and connections only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Largest request body forwarded (a ciphertext upload is at most 64 MiB at the validator).
const FORWARD_BODY_BYTES_MAX: usize = 65 * 1024 * 1024;
/// Largest answer forwarded.
const FORWARD_ANSWER_BYTES_MAX: usize = 80 * 1024 * 1024;
/// How long a forwarded request may take (a transaction's wait is at most 30 s at the validator).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// The request headers a validator reads, forwarded as they are (the signature covers them).
const FORWARDED_REQUEST_HEADERS: [&str; 5] =
    ["signature", "signature-input", "content-digest", "content-type", "x-medledger-min-height"];
/// The answer headers the portal's client reads.
const FORWARDED_ANSWER_HEADERS: [&str; 4] = ["content-type", "x-medledger-next", "retry-after", "location"];

/// What the portal serves for: the network's chain id and its validators' API base URLs
/// (`http://host:port`, as each validator knows itself), in the genesis order.
#[derive(Clone, Debug)]
pub struct PortalConfig {
    pub chain_id: String,
    pub validators: Vec<String>,
    /// Minutes without activity after which the page wipes the keys and signs the member out.
    pub idle_minutes: u32,
}

/// The idle logoff's default (HIPAA automatic logoff): 15 minutes.
pub const IDLE_MINUTES_DEFAULT: u32 = 15;
/// The longest idle time a portal may be configured with.
pub const IDLE_MINUTES_MAX: u32 = 8 * 60;

struct Portal {
    config: PortalConfig,
    http: reqwest::Client,
    /// Validators that joined since the portal started: their base URL (or none, when the
    /// configured validators did not agree on one), and when that was learned.
    joined: Mutex<HashMap<usize, (Option<String>, Instant)>>,
}

/// Highest stable validator index looked up (the ledger allows fewer validators than this ever).
const JOINED_INDEX_MAX: usize = 1024;
/// How long a joined validator's address is kept (an agreement), or its absence (none).
const JOINED_TTL: Duration = Duration::from_secs(300);
const JOINED_MISS_TTL: Duration = Duration::from_secs(5);
/// How long the governance status of one configured validator may take.
const GOVERNANCE_TIMEOUT: Duration = Duration::from_secs(5);

/// SHA-256 (hex) of the portal's script, as served: what an organisation pins.
pub fn bundle_sha256() -> String {
    hex::encode(Sha256::digest(APP_JS.as_bytes()))
}

/// The portal's routes.
pub fn router(config: PortalConfig) -> Router {
    let http = reqwest::Client::builder()
        .timeout(FORWARD_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client with no TLS setting to fail");
    let portal = Arc::new(Portal { config, http, joined: Mutex::default() });
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { page("text/javascript; charset=utf-8", APP_JS) }))
        .route("/app.css", get(|| async { page("text/css; charset=utf-8", APP_CSS) }))
        .route("/config.json", get(config_json))
        .route("/api/{validator}/{*path}", any(forward))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
        .layer(DefaultBodyLimit::max(FORWARD_BODY_BYTES_MAX))
        .layer(axum::middleware::map_response(secure))
        .with_state(portal)
}

/// Serves the portal on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, config: PortalConfig) -> std::io::Result<()> {
    axum::serve(listener, router(config).into_make_service_with_connect_info::<SocketAddr>()).await
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The headers every answer carries.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(headers, header::CONTENT_SECURITY_POLICY, CSP);
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, HeaderName::from_static("cross-origin-opener-policy"), "same-origin");
    set(headers, HeaderName::from_static("cross-origin-resource-policy"), "same-origin");
    set(headers, HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=()");
    response
}

/// `GET /config.json`: the chain id and, per validator, where the browser sends its requests
/// (`/api/{k}`) and the base URL it signs them for.
async fn config_json(State(portal): State<Arc<Portal>>) -> Response {
    let validators: Vec<serde_json::Value> = portal
        .config
        .validators
        .iter()
        .enumerate()
        .map(|(k, base)| serde_json::json!({"url": format!("/api/{k}"), "signedAs": base.trim_end_matches('/')}))
        .collect();
    let body = serde_json::json!({
        "chainId": portal.config.chain_id,
        "validators": validators,
        "idleMinutes": portal.config.idle_minutes,
    });
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(body)).into_response()
}

fn problem(status: StatusCode, title: &str) -> Response {
    let body = serde_json::json!({"type": "urn:medledger:problem:portal", "title": title, "status": status.as_u16()});
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
}

/// Validator `k`'s API base URL: a configured one's, or that of one that joined since, which more
/// than a third of the configured validators give alike (looked up again after a while).
async fn base_of(portal: &Portal, k: usize) -> Option<String> {
    if let Some(base) = portal.config.validators.get(k) {
        return Some(base.clone());
    }
    if k > JOINED_INDEX_MAX {
        return None;
    }
    if let Some((base, at)) = portal.joined.lock().expect("joined lock").get(&k).cloned() {
        let ttl = if base.is_some() { JOINED_TTL } else { JOINED_MISS_TTL };
        if at.elapsed() < ttl {
            return base;
        }
    }
    let asks = portal.config.validators.iter().map(|base| async move {
        let url = format!("{}/v1/governance", base.trim_end_matches('/'));
        let answer = portal.http.get(url).timeout(GOVERNANCE_TIMEOUT).send().await.ok()?;
        let status: serde_json::Value = answer.json().await.ok()?;
        let named = status["epochs"]
            .as_array()?
            .iter()
            .filter_map(|epoch| epoch["validators"].as_array())
            .flatten()
            .find_map(|v| {
                (v["index"].as_u64() == Some(k as u64)).then(|| v["api_address"].as_str().map(str::to_string)).flatten()
            });
        named.filter(|api| {
            !api.is_empty() && api.len() <= 255 && api.chars().all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
    });
    let answers = futures::future::join_all(asks).await;
    let mut votes: HashMap<String, usize> = HashMap::new();
    for api in answers.into_iter().flatten() {
        *votes.entry(api).or_default() += 1;
    }
    let needed = (portal.config.validators.len() - 1) / 3 + 1;
    let scheme = portal.config.validators[0].split("://").next().unwrap_or("http").to_string();
    let base = votes.into_iter().find(|(_, n)| *n >= needed).map(|(api, _)| format!("{scheme}://{api}"));
    portal.joined.lock().expect("joined lock").insert(k, (base.clone(), Instant::now()));
    base
}

/// `ANY /api/{k}/{path}`: the request, as the browser signed it, to validator `k`'s `/{path}`.
async fn forward(
    State(portal): State<Arc<Portal>>,
    Path((validator, path)): Path<(usize, String)>,
    request: Request,
) -> Response {
    let Some(base) = base_of(&portal, validator).await else {
        return problem(StatusCode::NOT_FOUND, "no such validator");
    };
    // Only the validators' API: no other path of theirs, nowhere else.
    if !path.starts_with("v1/") || path.split('/').any(|seg| seg == ".." || seg == ".") {
        return problem(StatusCode::NOT_FOUND, "not a validator API path");
    }
    let method = request.method().clone();
    if ![Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::HEAD].contains(&method) {
        return problem(StatusCode::METHOD_NOT_ALLOWED, "method not forwarded");
    }
    let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{}/{path}{query}", base.trim_end_matches('/'));
    let mut outgoing = portal.http.request(method, &url);
    for name in FORWARDED_REQUEST_HEADERS {
        if let Some(value) = request.headers().get(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let body: Bytes = match axum::body::to_bytes(request.into_body(), FORWARD_BODY_BYTES_MAX).await {
        Ok(body) => body,
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "request body over the portal's limit"),
    };
    if !body.is_empty() {
        outgoing = outgoing.body(body);
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(validator, timeout = e.is_timeout(), "a validator did not answer the portal");
            return problem(StatusCode::BAD_GATEWAY, "the validator did not answer");
        }
    };
    if answer.content_length().is_some_and(|n| n as usize > FORWARD_ANSWER_BYTES_MAX) {
        return problem(StatusCode::BAD_GATEWAY, "the validator's answer is over the portal's limit");
    }
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for name in FORWARDED_ANSWER_HEADERS {
        if let Some(value) = answer.headers().get(name)
            && let Ok(value) = HeaderValue::from_bytes(value.as_bytes())
        {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match answer.bytes().await {
        Ok(bytes) if bytes.len() <= FORWARD_ANSWER_BYTES_MAX => (status, headers, Body::from(bytes)).into_response(),
        _ => problem(StatusCode::BAD_GATEWAY, "the validator's answer did not arrive whole"),
    }
}
