//! The portal's server over real TCP: what it serves, with which headers, what its configuration
//! tells the page, and what it forwards (to a stand-in validator on 127.0.0.1) and refuses.

use std::net::SocketAddr;

use medledger_portal::{APP_JS, PortalConfig, bundle_sha256};

/// A stand-in validator: answers `GET /v1/echo?x` with the request's signature headers and
/// path, and everything else with 404; its address.
async fn validator() -> SocketAddr {
    validator_naming(serde_json::json!({"epochs": []})).await
}

/// A stand-in validator whose `GET /v1/governance` answers `governance`.
async fn validator_naming(governance: serde_json::Value) -> SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new().route("/v1/governance", get(move || async move { axum::Json(governance) })).route(
        "/v1/echo",
        get(|headers: axum::http::HeaderMap, uri: axum::http::Uri| async move {
            let pick = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            (
                [("x-medledger-next", "00ff"), ("set-cookie", "not=forwarded")],
                axum::Json(serde_json::json!({
                    "path": uri.path(),
                    "query": uri.query(),
                    "signature": pick("signature"),
                    "host": pick("host"),
                    "cookie": pick("cookie"),
                })),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn portal(validators: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = PortalConfig { chain_id: "ab".repeat(32), validators, idle_minutes: 7 };
    tokio::spawn(medledger_portal::serve(listener, config));
    format!("http://{addr}")
}

#[tokio::test]
async fn serves_the_page_with_a_strict_policy_and_forwards_only_the_api() {
    let upstream = validator().await;
    let base = portal(vec![format!("http://{upstream}")]).await;
    let http = reqwest::Client::new();

    // The page, its script pinned by integrity, every answer under the policy.
    let page = http.get(&base).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let html = page.text().await.unwrap();
    assert!(html.contains("integrity=\"sha256-"), "{html}");
    let script = http.get(format!("{base}/app.js")).send().await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    let served = script.bytes().await.unwrap();
    assert_eq!(&served[..], APP_JS.as_bytes());
    use sha2::Digest as _;
    assert_eq!(hex::encode(sha2::Sha256::digest(&served)), bundle_sha256(), "the printed hash is of what is served");

    // The configuration the page reads: the chain, where each validator is reached and what it
    // is signed for, the idle logoff.
    let config: serde_json::Value = http.get(format!("{base}/config.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(config["chainId"], "ab".repeat(32));
    assert_eq!(config["validators"][0]["url"], "/api/0");
    assert_eq!(config["validators"][0]["signedAs"], format!("http://{upstream}"));
    assert_eq!(config["idleMinutes"], 7);

    // Forwarded unchanged (path, query, signature headers), answered with the API's headers only.
    let forwarded = http
        .get(format!("{base}/api/0/v1/echo?after=00"))
        .header("signature", "sig=:abc:")
        .header("cookie", "session=1")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 200);
    assert_eq!(forwarded.headers()["x-medledger-next"], "00ff");
    assert!(forwarded.headers().get("set-cookie").is_none(), "only the API's own headers come back");
    assert!(forwarded.headers().contains_key("content-security-policy"));
    let echo: serde_json::Value = forwarded.json().await.unwrap();
    assert_eq!((echo["path"].as_str(), echo["query"].as_str()), (Some("/v1/echo"), Some("after=00")));
    assert_eq!(echo["signature"], "sig=:abc:");
    assert_eq!(echo["host"], upstream.to_string(), "the validator sees its own authority");
    assert_eq!(echo["cookie"], "", "nothing but the signed request's headers is forwarded");

    // Refused: another validator index, a path outside the API, a traversal, an unknown page.
    for path in ["/api/1/v1/echo", "/api/0/metrics", "/api/0/v1/../metrics", "/nothing"] {
        let status = http.get(format!("{base}{path}")).send().await.unwrap().status();
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(http.get(format!("{base}/api/x/v1/echo")).send().await.unwrap().status(), 400, "not a validator index");
    let status = http.request(reqwest::Method::PATCH, format!("{base}/api/0/v1/echo")).send().await.unwrap().status();
    assert_eq!(status, 405);
}

#[tokio::test]
async fn a_validator_that_does_not_answer_is_a_502_problem() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let base = portal(vec![format!("http://{closed}")]).await;
    let answer = reqwest::get(format!("{base}/api/0/v1/status")).await.unwrap();
    assert_eq!(answer.status(), 502);
    assert_eq!(answer.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["status"], 502);
}

/// A validator that joined after the portal started is forwarded to only when more than a third
/// of the validators the portal knows name the same address for it: one Byzantine validator
/// naming a host of its choosing gets the portal to send nothing there.
#[tokio::test]
async fn a_joined_validator_is_reached_only_at_an_address_enough_validators_agree_on() {
    let http = reqwest::Client::new();
    let joined = validator().await;
    let naming = |addr: SocketAddr| serde_json::json!({"epochs": [{"validators": [{"index": 4, "api_address": addr.to_string()}]}]});
    let silent = serde_json::json!({"epochs": [{"validators": [{"index": 0, "api_address": "127.0.0.1:1"}]}]});
    // One of four names it (f + 1 = 2 are needed): refused, whoever it names.
    let mut alone = vec![validator_naming(naming(joined)).await];
    for _ in 0..3 {
        alone.push(validator_naming(silent.clone()).await);
    }
    let base = portal(alone.iter().map(|a| format!("http://{a}")).collect()).await;
    let refused = http.get(format!("{base}/api/4/v1/echo")).send().await.unwrap();
    assert_eq!(refused.status(), 404, "one validator's word");
    // Two of four agree: forwarded there; an index nobody names stays unknown.
    let mut two = vec![validator_naming(naming(joined)).await, validator_naming(naming(joined)).await];
    for _ in 0..2 {
        two.push(validator_naming(silent.clone()).await);
    }
    let base = portal(two.iter().map(|a| format!("http://{a}")).collect()).await;
    let forwarded = http.get(format!("{base}/api/4/v1/echo")).send().await.unwrap();
    assert_eq!(forwarded.status(), 200);
    let echoed: serde_json::Value = forwarded.json().await.unwrap();
    assert_eq!(echoed["host"], joined.to_string(), "sent to the validator they named");
    assert_eq!(http.get(format!("{base}/api/5/v1/echo")).send().await.unwrap().status(), 404);
    assert_eq!(http.get(format!("{base}/api/99999/v1/echo")).send().await.unwrap().status(), 404);
}
