//! HTTP client of the validators' API, with fail-over between validators and signed requests.

use std::time::Duration;

use bytes::Bytes;
use medledger_ledger::api::{
    AccessBundle, BlobUpload, HEADER_NEXT, PROBLEM_ACCESS_DENIED, PROBLEM_INTEGRITY, Problem, ReleasedShare,
    SubmitRequest, SubmitResponse, TxStatus,
};
use medledger_ledger::httpsig::{self, RequestParts};
use medledger_ledger::state::{AuditEvent, ChartEntry, GrantEntry, MemberEntry, RecordEntry, TeamEntry};
use medledger_ledger::{SidecarEnvelope, Transaction};
use medledger_types::{Digest, MemberId, Nonce, RecordId, Role, TxId, encode};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::{Result, SdkError};
use crate::home::Identity;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client waits for its transaction to commit.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response body read (ciphertexts included).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024 + 4096;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    nodes: Vec<String>,
    /// The highest committed height this client has seen; validators answer only once they are
    /// at least there (read-your-writes across validators).
    min_height: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Client {
    pub fn new(nodes: Vec<String>) -> Result<Self> {
        Self::with_ca(nodes, None)
    }

    /// A client that trusts only `ca_pem` (the network's CA) for HTTPS validators.
    pub fn with_ca(nodes: Vec<String>, ca_pem: Option<&str>) -> Result<Self> {
        if nodes.is_empty() {
            return Err(SdkError::Usage("no validator API configured".into()));
        }
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(pem) = ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|_| SdkError::Usage("the client config's CA certificate is malformed".into()))?;
            builder = builder.tls_certs_only([ca]);
        }
        let http = builder.build().map_err(SdkError::other)?;
        Ok(Self { http, nodes, min_height: Default::default() })
    }

    /// Sends a request to the first validator that answers; transport failures (refused, reset,
    /// timed out) move on to the next, and the list is tried twice. Every request of the API is
    /// idempotent (submissions are deduplicated by transaction id, blobs by digest), and a
    /// signed one is signed afresh for each try.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        signer: Option<&Identity>,
    ) -> Result<Bytes> {
        let nodes: Vec<&str> = self.nodes.iter().chain(&self.nodes).map(String::as_str).collect();
        self.send_via(&nodes, method, path, body, signer).await.map(|(bytes, _)| bytes)
    }

    /// One page of a paged list (`GET path`, signed by `me`) and the cursor of the next page,
    /// which the validator names in [`HEADER_NEXT`] when the page is full.
    async fn get_page<T: DeserializeOwned>(&self, path: &str, me: &Identity) -> Result<(Vec<T>, Option<String>)> {
        let nodes: Vec<&str> = self.nodes.iter().chain(&self.nodes).map(String::as_str).collect();
        let (bytes, next) = self.send_via(&nodes, Method::GET, path, None, Some(me)).await?;
        let items = serde_json::from_slice(&bytes)
            .map_err(|e| SdkError::Other(format!("unexpected response from validator: {e}")))?;
        Ok((items, next))
    }

    /// As [`Client::send`], over exactly `nodes` in order.
    async fn send_via(
        &self,
        nodes: &[&str],
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        signer: Option<&Identity>,
    ) -> Result<(Bytes, Option<String>)> {
        let mut last = None;
        // Time spent waiting as validators asked (429 with `Retry-After`), over all attempts.
        let mut waited = Duration::ZERO;
        // An index, not an iterator held across the awaits: the future stays `Send` for callers
        // that spawn it (an iterator of `&&str` made it not general enough).
        let mut at = 0;
        while let Some(&node) = nodes.get(at) {
            let url = format!("{}{}", node.trim_end_matches('/'), path);
            // Signed as the client library will send it (normalized), so the node rebuilds the same base.
            let url = reqwest::Url::parse(&url).map(String::from).unwrap_or(url);
            let mut request = self.http.request(method.clone(), &url);
            let min_height = self.min_height();
            if min_height > 0 {
                request = request.header("x-medledger-min-height", min_height.to_string());
            }
            if let Some(me) = signer {
                let body = body.as_deref().unwrap_or_default();
                let parts = RequestParts::of_url(method.as_str(), &url, body)
                    .ok_or_else(|| SdkError::Usage(format!("not an http(s) URL: {node}")))?;
                let keyid = me.member.to_hex();
                for (name, value) in httpsig::sign(&me.signing, &keyid, &parts, now_ms(), &httpsig::new_nonce()) {
                    request = request.header(name, value);
                }
            }
            if let Some(body) = &body {
                request = request.header("content-type", "application/octet-stream").body(body.clone());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    last = Some(SdkError::Other(format!("validator {node} unreachable")));
                    at += 1;
                    continue;
                }
                Err(e) => return Err(SdkError::other(e)),
            };
            let status = response.status();
            let response_retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(len) = response.content_length()
                && len as usize > RESPONSE_BYTES_MAX
            {
                return Err(SdkError::Other("response over the size limit".into()));
            }
            let next = response
                .headers()
                .get(HEADER_NEXT)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 256 && v.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_string);
            let bytes = response.bytes().await.map_err(SdkError::other)?;
            if status.is_success() {
                return Ok((bytes, next));
            }
            let error = problem_error(status, &bytes);
            // Over a limit (this signer's live requests, this client's rate, a full mempool):
            // the same validator again once it said to (a new signature: a fresh request), as
            // long as the waits stay within a bound.
            if let Some(wait) = retry_after(status, response_retry_after)
                && waited + wait <= RETRY_WAIT_MAX
            {
                waited += wait;
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == StatusCode::SERVICE_UNAVAILABLE {
                last = Some(error);
                at += 1;
                continue;
            }
            return Err(error);
        }
        Err(last.unwrap_or_else(|| SdkError::Other("no validator answered".into())))
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str, signer: Option<&Identity>) -> Result<T> {
        let bytes = self.send(Method::GET, path, None, signer).await?;
        serde_json::from_slice(&bytes).map_err(|e| SdkError::Other(format!("unexpected response from validator: {e}")))
    }

    /// The highest committed height this client has seen.
    pub fn min_height(&self) -> u64 {
        self.min_height.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Raises the height validators must have reached before answering this client.
    pub fn observe_height(&self, height: u64) {
        self.min_height.fetch_max(height, std::sync::atomic::Ordering::SeqCst);
    }

    pub async fn status(&self) -> Result<serde_json::Value> {
        self.get_json("/v1/status", None).await
    }

    /// A committed block's summary (`height`, `time`, `txs`, ...), or an error if not committed yet.
    pub async fn block(&self, height: u64) -> Result<serde_json::Value> {
        self.get_json(&format!("/v1/blocks/{height}"), None).await
    }

    /// Member `id`'s entry, as `me` may see it (staff: anyone; a patient: those in their care).
    pub async fn member(&self, me: &Identity, id: &MemberId) -> Result<MemberEntry> {
        self.get_json(&format!("/v1/members/{id}"), Some(me)).await
    }

    /// The next nonce of member `id` in `lane` (each of a member's clients signs in a lane of its
    /// own, so a gateway, an import and the CLI never take each other's nonces).
    pub async fn next_nonce(&self, me: &Identity, lane: u16) -> Result<Nonce> {
        let id = me.member;
        let counter =
            match self.get_json::<serde_json::Value>(&format!("/v1/members/{id}/nonce?lane={lane}"), Some(me)).await {
                Ok(v) => {
                    let last = v
                        .get("nonce")
                        .and_then(serde_json::Value::as_u64)
                        .map(Nonce::new)
                        .ok_or_else(|| SdkError::Other("bad nonce reply".into()))?;
                    if last.lane() == lane { last.counter() + 1 } else { 1 }
                }
                // Keys the ledger does not authenticate yet (a recovery's requested keys, which sign
                // only its completion): the clock alone gives the nonce.
                Err(SdkError::Denied(_)) => 1,
                Err(e) => return Err(e),
            };
        // Microseconds keep a lane's nonces increasing across restarts without coordination.
        Nonce::in_lane(lane, counter.max(now_ms() * 1000)).ok_or_else(|| SdkError::Other("nonces exhausted".into()))
    }

    pub async fn chart(&self, me: &Identity, patient: &MemberId) -> Result<ChartEntry> {
        self.get_json(&format!("/v1/charts/{patient}"), Some(me)).await
    }

    pub async fn chart_envelope(&self, me: &Identity, patient: &MemberId) -> Result<SidecarEnvelope> {
        self.get_json(&format!("/v1/charts/{patient}/envelope"), Some(me)).await
    }

    /// `patient`'s grant to `grantee` on one record, if there is one.
    pub async fn record_grant(
        &self,
        me: &Identity,
        patient: &MemberId,
        grantee: &MemberId,
        record: &medledger_types::RecordId,
    ) -> Result<Option<GrantEntry>> {
        match self.get_json(&format!("/v1/grants/{patient}/{grantee}?record={record}"), Some(me)).await {
            Ok(g) => Ok(Some(g)),
            Err(SdkError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `patient`'s grant to `grantee` on their sensitive records, if there is one.
    pub async fn sensitive_grant(
        &self,
        me: &Identity,
        patient: &MemberId,
        grantee: &MemberId,
    ) -> Result<Option<GrantEntry>> {
        match self.get_json(&format!("/v1/grants/{patient}/{grantee}?sensitive=true"), Some(me)).await {
            Ok(g) => Ok(Some(g)),
            Err(SdkError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn grant(&self, me: &Identity, patient: &MemberId, grantee: &MemberId) -> Result<Option<GrantEntry>> {
        match self.get_json(&format!("/v1/grants/{patient}/{grantee}"), Some(me)).await {
            Ok(g) => Ok(Some(g)),
            Err(SdkError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The care team `id`, if it names one (its members are listed for its members and its
    /// organisation's staff only).
    pub async fn team(&self, me: &Identity, id: &MemberId) -> Result<Option<TeamEntry>> {
        self.team_in_care(me, id, None).await
    }

    /// [`Client::team`], its members shown to those in `patient`'s care when the team holds an
    /// `--all` grant on that chart (a writer wraps each new record for its live teams).
    pub async fn team_in_care(
        &self,
        me: &Identity,
        id: &MemberId,
        patient: Option<&MemberId>,
    ) -> Result<Option<TeamEntry>> {
        let query = patient.map(|p| format!("?patient={p}")).unwrap_or_default();
        match self.get_json(&format!("/v1/teams/{id}{query}"), Some(me)).await {
            Ok(t) => Ok(Some(t)),
            Err(SdkError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `me`'s envelope of care team `team`'s current key.
    pub async fn team_envelope(&self, me: &Identity, team: &MemberId) -> Result<SidecarEnvelope> {
        self.get_json(&format!("/v1/teams/{team}/envelope"), Some(me)).await
    }

    pub async fn record(&self, me: &Identity, id: &RecordId) -> Result<RecordEntry> {
        self.get_json(&format!("/v1/records/{id}"), Some(me)).await
    }

    /// Record `id`'s current version (any member may ask: it is what a RecordAccess names).
    pub async fn record_version(&self, me: &Identity, id: &RecordId) -> Result<u32> {
        let v: serde_json::Value = self.get_json(&format!("/v1/records/{id}/version"), Some(me)).await?;
        v.get("version")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| SdkError::Other("bad version reply".into()))
    }

    /// A page of `patient`'s records (at most 1,000) after record `after`, and the cursor of the
    /// next page if there may be one.
    pub async fn patient_records_page(
        &self,
        me: &Identity,
        patient: &MemberId,
        after: Option<&str>,
    ) -> Result<(Vec<RecordEntry>, Option<String>)> {
        let after = after.map(|a| format!("?after={a}")).unwrap_or_default();
        self.get_page(&format!("/v1/patients/{patient}/records{after}"), me).await
    }

    /// A page of `patient`'s audit trail (at most 1,000 events) after the cursor `after`, and the
    /// cursor of the next page if there may be one.
    pub async fn audit_page(
        &self,
        me: &Identity,
        patient: &MemberId,
        after: Option<&str>,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        let after = after.map(|a| format!("?after={a}")).unwrap_or_default();
        self.get_page(&format!("/v1/patients/{patient}/audit{after}"), me).await
    }

    /// A page of the auditors' review queue after the cursor `after`, and the next cursor.
    pub async fn flagged_page(
        &self,
        me: &Identity,
        after: Option<&str>,
    ) -> Result<(Vec<medledger_ledger::state::FlaggedEntry>, Option<String>)> {
        let after = after.map(|a| format!("?after={a}")).unwrap_or_default();
        self.get_page(&format!("/v1/audit/flagged{after}"), me).await
    }

    pub async fn put_blob(&self, me: &Identity, digest: &Digest, bytes: Vec<u8>) -> Result<()> {
        self.send(Method::PUT, &format!("/v1/blobs/{digest}"), Some(bytes), Some(me)).await.map(|_| ())
    }

    /// Uploads many ciphertexts in one signed request (see `POST /v1/blobs` for the limits).
    pub async fn put_blobs(&self, me: &Identity, blobs: Vec<(Digest, Vec<u8>)>) -> Result<()> {
        let uploads: Vec<BlobUpload> = blobs.into_iter().map(|(digest, bytes)| BlobUpload { digest, bytes }).collect();
        self.send(Method::POST, "/v1/blobs", Some(encode(&uploads)), Some(me)).await.map(|_| ())
    }

    pub async fn access_bundle(&self, me: &Identity, access: &TxId) -> Result<AccessBundle> {
        self.get_json(&format!("/v1/access/{access}/bundle"), Some(me)).await
    }

    /// [`Client::access_bundle`] from validator `node` only (not yet checked: see
    /// `Session::verified_bundle`).
    pub async fn access_bundle_from(&self, node: &str, me: &Identity, access: &TxId) -> Result<AccessBundle> {
        self.get_json_from(node, &format!("/v1/access/{access}/bundle"), me).await
    }

    /// `GET path` signed by `me`, from validator `node` only (for answers checked against
    /// evidence, where the next validator is asked only if this one's does not check).
    pub async fn get_json_from<T: DeserializeOwned>(&self, node: &str, path: &str, me: &Identity) -> Result<T> {
        let (bytes, _) = self.send_via(&[node], Method::GET, path, None, Some(me)).await?;
        serde_json::from_slice(&bytes).map_err(|e| SdkError::Other(format!("unexpected response from validator: {e}")))
    }

    /// The validator API base URLs this client talks to, in the order it tries them.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(String::as_str)
    }

    /// Validator `api`'s share of the record key named by the allowed access `access`, wrapped
    /// for `me` (threshold release). Asks that validator only.
    pub async fn access_share(&self, api: &str, me: &Identity, access: &TxId) -> Result<ReleasedShare> {
        let (bytes, _) =
            self.send_via(&[api], Method::GET, &format!("/v1/access/{access}/share"), None, Some(me)).await?;
        serde_json::from_slice(&bytes).map_err(|e| SdkError::Other(format!("unexpected response from validator: {e}")))
    }

    /// A page of the staff directory of `role` (staff only; patients are never listed).
    pub async fn staff(&self, role: Role, after: Option<&MemberId>) -> Result<medledger_ledger::api::StaffPage> {
        let after = after.map(|m| format!("&after={m}")).unwrap_or_default();
        self.get_json(&format!("/v1/staff?role={}{after}", role.as_str()), None).await
    }

    /// A page of the charts `of` (the signer, or a care team of theirs) has held a grant on or
    /// been a delegate of (`GET /v1/members/{id}/charts`).
    pub async fn reader_charts(
        &self,
        me: &Identity,
        of: &MemberId,
        after: Option<&MemberId>,
        since: Option<u64>,
    ) -> Result<medledger_ledger::api::ChartsPage> {
        let mut query: Vec<String> = Vec::new();
        query.extend(after.map(|m| format!("after={m}")));
        query.extend(since.map(|h| format!("since={h}")));
        let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
        self.get_json(&format!("/v1/members/{of}/charts{query}"), Some(me)).await
    }

    /// A page of the record entries of the charts `of` (the signer, or a care team of theirs)
    /// holds or held a grant on, or with `since` of those whose head moved after it, paged by
    /// entries (`GET /v1/members/{id}/records`; `after` is a page's `next`).
    pub async fn reader_chart_records(
        &self,
        me: &Identity,
        of: &MemberId,
        after: Option<&str>,
        since: Option<u64>,
    ) -> Result<medledger_ledger::api::ChartRecordsPage> {
        let mut query: Vec<String> = Vec::new();
        query.extend(after.filter(|a| a.bytes().all(|b| b.is_ascii_hexdigit())).map(|a| format!("after={a}")));
        query.extend(since.map(|h| format!("since={h}")));
        let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
        self.get_json(&format!("/v1/members/{of}/records{query}"), Some(me)).await
    }

    /// The height at which `patient`'s record list (or a directory's) last changed, 0 for never
    /// (`GET /v1/patients/{id}/records/head`; for those who may list it).
    pub async fn records_head(&self, me: &Identity, patient: &MemberId) -> Result<u64> {
        let head: medledger_ledger::api::RecordsHead =
            self.get_json(&format!("/v1/patients/{patient}/records/head"), Some(me)).await?;
        Ok(head.height)
    }

    /// A break-glass note, for the patient or an auditor it was written for.
    pub async fn break_glass_note(&self, me: &Identity, tx: &TxId) -> Result<medledger_ledger::api::BreakGlassNote> {
        self.get_json(&format!("/v1/tx/{tx}/note"), Some(me)).await
    }

    /// The receipt of committed transaction `tx` (checkable offline: `medledger_node::receipt`).
    /// `patient` names the audit trail holding its event when `me` did not sign it.
    pub async fn receipt(&self, me: &Identity, tx: &TxId, patient: Option<&MemberId>) -> Result<Bytes> {
        let query = patient.map(|p| format!("?patient={p}")).unwrap_or_default();
        self.send(Method::GET, &format!("/v1/tx/{tx}/receipt{query}"), None, Some(me)).await
    }

    /// Validator `api`'s view of the current share keys (threshold release).
    pub async fn threshold_at(&self, api: &str) -> Result<medledger_ledger::threshold::ThresholdConfig> {
        let (bytes, _) = self.send_via(&[api], Method::GET, "/v1/threshold", None, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| SdkError::Other(format!("unexpected response from validator: {e}")))
    }

    /// The validator-set epochs as a validator's committed state records them (`GET /v1/governance`).
    pub async fn governance(&self) -> Result<serde_json::Value> {
        self.get_json("/v1/governance", None).await
    }

    /// A governance proposal and its approvals, if any organisation approved it yet.
    pub async fn proposal(&self, id: &medledger_types::Digest) -> Result<Option<serde_json::Value>> {
        match self.get_json(&format!("/v1/governance/proposals/{id}"), None).await {
            Ok(p) => Ok(Some(p)),
            Err(SdkError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The network's genesis as a validator serves it (the caller checks it against its chain id).
    pub async fn genesis(&self) -> Result<medledger_ledger::Genesis> {
        self.get_json("/v1/genesis", None).await
    }

    /// `https` when this client talks TLS to the validators, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.nodes.iter().any(|n| n.starts_with("https://")) { "https" } else { "http" }
    }

    /// [`Client::access_content`] from validator `node` only.
    pub async fn access_content_from(&self, node: &str, me: &Identity, access: &TxId) -> Result<Bytes> {
        let path = format!("/v1/access/{access}/content");
        self.send_via(&[node], Method::GET, &path, None, Some(me)).await.map(|(bytes, _)| bytes)
    }

    pub async fn access_content(&self, me: &Identity, access: &TxId) -> Result<Bytes> {
        self.send(Method::GET, &format!("/v1/access/{access}/content"), None, Some(me)).await
    }

    pub async fn submit(&self, tx: Transaction, sidecar: Option<Vec<u8>>) -> Result<TxId> {
        let body = encode(&SubmitRequest { tx, sidecar });
        let bytes = self.send(Method::POST, "/v1/tx", Some(body), None).await?;
        let reply: SubmitResponse = serde_json::from_slice(&bytes).map_err(SdkError::other)?;
        Ok(reply.tx_id)
    }

    /// Submits up to 1000 transactions in one request; one result per transaction, in order.
    pub async fn submit_batch(
        &self,
        txs: Vec<(Transaction, Option<Vec<u8>>)>,
    ) -> Result<Vec<std::result::Result<TxId, String>>> {
        let batch: Vec<SubmitRequest> = txs.into_iter().map(|(tx, sidecar)| SubmitRequest { tx, sidecar }).collect();
        let bytes = self.send(Method::POST, "/v1/tx/batch", Some(encode(&batch)), None).await?;
        let replies: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(SdkError::other)?;
        Ok(replies
            .into_iter()
            .map(|r| match (r.get("tx_id").and_then(|v| v.as_str()), r.get("error").and_then(|v| v.as_str())) {
                (Some(id), _) => id.parse().map_err(|_| "malformed transaction id".to_string()),
                (None, Some(error)) => Err(error.to_string()),
                _ => Err("malformed reply".to_string()),
            })
            .collect())
    }

    /// The status of each configured validator (None where it does not answer).
    pub async fn statuses(&self) -> Vec<(String, Option<serde_json::Value>)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let single = Client { http: self.http.clone(), nodes: vec![node.clone()], min_height: Default::default() };
            out.push((node.clone(), single.status().await.ok()));
        }
        out
    }

    /// Waits until the transaction is in a finalized, committed block.
    pub async fn wait(&self, id: &TxId, timeout: Duration) -> Result<TxStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let wait_ms = left.as_millis().min(10_000) as u64;
            let status: TxStatus = self.get_json(&format!("/v1/tx/{id}?wait_ms={wait_ms}"), None).await?;
            match status {
                TxStatus::Committed { height, .. } => {
                    self.observe_height(height.get());
                    return Ok(status);
                }
                TxStatus::Unknown => return Err(SdkError::Other("the validator dropped the transaction".into())),
                TxStatus::Pending if left.is_zero() => {
                    return Err(SdkError::Other(format!("transaction not committed within {}s", timeout.as_secs())));
                }
                TxStatus::Pending => {}
            }
        }
    }
}

/// Most time one request spends waiting as validators ask (`Retry-After`): a signer's live
/// requests leave the node's window within a minute.
const RETRY_WAIT_MAX: Duration = Duration::from_secs(75);

/// How long to wait before sending again, for an answer that says to (429 or 503 with
/// `Retry-After` in seconds; at most a minute at a time).
fn retry_after(status: StatusCode, seconds: Option<u64>) -> Option<Duration> {
    let limited = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    seconds.filter(|_| limited).map(|s| Duration::from_secs(s.clamp(1, 60)))
}

/// Maps a problem response to an error.
fn problem_error(status: StatusCode, body: &[u8]) -> SdkError {
    let problem: Option<Problem> = serde_json::from_slice(body).ok();
    let title = problem.as_ref().map_or_else(|| format!("validator answered {status}"), |p| p.title.clone());
    match problem.as_ref().map(|p| p.kind.as_str()) {
        Some(PROBLEM_ACCESS_DENIED) => SdkError::Denied(title),
        Some(PROBLEM_INTEGRITY) => SdkError::Integrity(title),
        _ if status == StatusCode::NOT_FOUND || status == StatusCode::GONE => SdkError::NotFound(title),
        _ if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN => SdkError::Denied(title),
        _ if status.is_client_error() => SdkError::Usage(title),
        _ => SdkError::Other(title),
    }
}
