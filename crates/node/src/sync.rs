//! State sync: a validator that is far behind (a new one, or one restored from an old backup)
//! installs a peer's state instead of replaying every block since its own height.
//!
//! Trust: nothing the peer sends is believed. The joining validator
//!
//! 1. downloads the peer's committed state (every key/value, from one read snapshot) at height S,
//!    writing it to disk as it arrives (bounded memory, one uncommitted write transaction);
//! 2. downloads the chain entries (block + finalization certificate) from its own height up to
//!    the first block at or after S that carries its own certificate, checking every block's shape
//!    (limits, transaction root, sidecar digests) and that each names the previous one as parent;
//! 3. checks that certificate against the genesis validator set: the hash links then tie every
//!    block back to its own last block, and block S's header (digest and state root) to the
//!    peer's claim;
//! 4. rebuilds the Merkle tree of the downloaded state (a batch at a time) and commits it only if
//!    its root is block S's state root, with the chain log and indexes of the new blocks;
//! 5. executes the few blocks after S up to the certified one like any finalized block, and
//!    starts consensus with the marshal's floor at that certificate.
//!
//! The chain log stays complete from genesis, so `medledger verify` still re-executes the whole
//! history on this validator. The endpoints serve only requests signed by a genesis validator.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::sign::SigningKey;
use medledger_ledger::httpsig::{self, RequestParts};
use medledger_ledger::{Block, Transaction};
use medledger_store::{Entry, SnapshotInstall, SyncedBlock};
use medledger_types::limits::BLOCK_BYTES_MAX;
use medledger_types::{BlockHash, Digest, Height, TxId};
use serde::Deserialize;

use crate::api::{ApiError, ApiState};
use crate::app::{App, wall_clock_ms};
use crate::consensus::namespace_for_chain;
use medledger_ledger::governance;
use medledger_ledger::receipt::EpochLink;
use medledger_proof::certificate::verify_certificate_in;
use medledger_proof::state::validators_through;

/// Key id prefix of a validator's sync requests (RFC 9421 signatures, like members' requests,
/// with `keyid="validator-K"`, K its index in genesis).
pub const KEYID_PREFIX: &str = "validator-";
/// Default gap, in blocks, beyond which a starting validator syncs state instead of replaying.
pub const SYNC_GAP_BLOCKS_DEFAULT: u64 = 1024;

/// Largest frame of a sync stream.
const FRAME_BYTES_MAX: usize = BLOCK_BYTES_MAX + (1 << 20);
/// A state frame is flushed once it holds this much.
const STATE_FRAME_BYTES: usize = 256 * 1024;
/// Most entries and bytes of a state snapshot this validator accepts (written to disk as they
/// arrive; the limits bound the time and disk a peer can make it spend).
const SNAPSHOT_ENTRIES_MAX: u64 = 50_000_000;
const SNAPSHOT_BYTES_MAX: u64 = 8 << 30;
/// Most blocks, and bytes, in one chain page.
const CHAIN_PAGE_BLOCKS: u64 = 512;
const CHAIN_PAGE_BYTES: usize = 32 << 20;
/// Most blocks after the snapshot's height before one with its own certificate.
const TAIL_BLOCKS_MAX: usize = 1024;
/// How long a peer's status may take to answer, and how long a sync stream may stall.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The first frame of `GET /v1/sync/state`.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SyncHead {
    pub height: u64,
    pub digest: [u8; 32],
    pub state_root: [u8; 32],
    pub entries: u64,
    /// The validator-set history from genesis to the peer's current epoch (one link per set
    /// change), so the syncing validator learns who certifies the chain it downloads from its
    /// genesis alone.
    pub links: Vec<EpochLink>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error("snapshot from {peer} rejected: {reason}")]
    Rejected { peer: String, reason: String },
    #[error("local storage: {0}")]
    Local(String),
}

pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new().routes(routes!(serve_state)).routes(routes!(serve_chain))
}

/// Frames: a little-endian u32 length, then that many bytes.
fn frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A request signed by a genesis validator; holds its index.
struct ValidatorSigned(#[allow(dead_code)] u32);

impl axum::extract::FromRequestParts<ApiState> for ValidatorSigned {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &ApiState) -> Result<Self, ApiError> {
        check_validator_request(state, &parts.headers, &parts.method, &parts.uri).map(ValidatorSigned)
    }
}

fn check_validator_request(state: &ApiState, headers: &HeaderMap, method: &Method, uri: &Uri) -> Result<u32, ApiError> {
    let signed = crate::api::signed_request(state, headers, method, uri, &[])?;
    let index: u32 = signed
        .keyid
        .strip_prefix(KEYID_PREFIX)
        .and_then(|k| k.parse().ok())
        .ok_or(ApiError::unauthenticated("not a validator's key id"))?;
    // Any validator that ever took part, by its stable index (genesis or joined by governance).
    let public_key = {
        let view = state.app.inner().db.view(&[]).map_err(ApiError::internal)?;
        medledger_ledger::governance::validator(&view, index)
            .ok_or(ApiError::unauthenticated("unknown validator"))?
            .public_key
    };
    if !signed.verify(&public_key) {
        return Err(ApiError::unauthenticated("bad request signature"));
    }
    // Only a validator of the current or a pending epoch: one whose organisation left (or that
    // left the set) reads no more of the chain.
    if !state.app.serving_validators().contains(&index) {
        return Err(ApiError::denied("not a validator of the current or a pending epoch"));
    }
    crate::api::admit_nonce(state, &signed, uri)?;
    Ok(index)
}

/// `GET /v1/sync/state`: the committed state, streamed from one read snapshot.
#[utoipa::path(
    get,
    path = "/v1/sync/state",
    tag = "sync",
    security(("rfc9421" = [])),
    responses(
        (status = 200, description = "Frames (u32 LE length, bytes): a borsh SyncHead, then borsh batches of (key, value).", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 401, description = "Not signed by a genesis validator (keyid validator-K).", body = medledger_ledger::api::Problem, content_type = "application/problem+json")
    )
)]
async fn serve_state(State(state): State<ApiState>, _: ValidatorSigned) -> Response {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let app = state.app.clone();
    tokio::task::spawn_blocking(move || {
        // The set history up to this validator's current epoch (none before the first change).
        let links = app
            .inner()
            .db
            .view(&[])
            .map_err(|e| e.to_string())
            .and_then(|view| {
                let epoch = governance::epoch_at(&view, app.last_applied().height).map_or(0, |e| e.epoch);
                crate::receipt::links(&app, &view, epoch).map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no validator-set history to serve with the state");
                Vec::new()
            });
        // Both callbacks send frames; the receiver going away (peer hung up) stops the export.
        let sink = std::cell::RefCell::new(Some(sender));
        let send = |payload: &[u8]| {
            let mut sink = sink.borrow_mut();
            let mut bytes = Vec::with_capacity(payload.len() + 4);
            frame(&mut bytes, payload);
            if sink.as_ref().is_some_and(|s| s.blocking_send(Ok(Bytes::from(bytes))).is_err()) {
                *sink = None;
            }
            sink.is_some()
        };
        let mut batch: Vec<Entry> = Vec::new();
        let mut batch_bytes = 0;
        let result = app.inner().db.export(
            |last, entries| {
                let head = SyncHead {
                    height: last.height.get(),
                    digest: last.digest.0,
                    state_root: *last.state_root.as_bytes(),
                    entries,
                    links: links.clone(),
                };
                send(&borsh::to_vec(&head).unwrap_or_default())
            },
            |key, value| {
                batch_bytes += key.len() + value.len() + 8;
                batch.push((key.to_vec(), value.to_vec()));
                if batch_bytes < STATE_FRAME_BYTES {
                    return true;
                }
                batch_bytes = 0;
                send(&borsh::to_vec(&std::mem::take(&mut batch)).unwrap_or_default())
            },
        );
        if !batch.is_empty() {
            send(&borsh::to_vec(&batch).unwrap_or_default());
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "state export failed");
            if let Some(sender) = sink.borrow_mut().take() {
                let _ = sender.blocking_send(Err(std::io::Error::other("state export failed")));
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    ([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(stream)).into_response()
}

#[derive(Deserialize)]
struct ChainQuery {
    from: u64,
}

/// `GET /v1/sync/chain?from=H`: committed chain entries (block, certificate) from height H, up to
/// [`CHAIN_PAGE_BLOCKS`] or [`CHAIN_PAGE_BYTES`]; an empty body past the tip.
#[utoipa::path(
    get,
    path = "/v1/sync/chain",
    tag = "sync",
    security(("rfc9421" = [])),
    params(("from" = u64, Query, description = "First height.")),
    responses(
        (status = 200, description = "Frames (u32 LE length, bytes) of borsh (block, certificate) pairs.", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Malformed query.", body = medledger_ledger::api::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed by a genesis validator (keyid validator-K).", body = medledger_ledger::api::Problem, content_type = "application/problem+json"),
        (status = 500, description = "Storage failure.", body = medledger_ledger::api::Problem, content_type = "application/problem+json")
    )
)]
async fn serve_chain(
    State(state): State<ApiState>,
    _: ValidatorSigned,
    Query(query): Query<ChainQuery>,
) -> Result<Response, ApiError> {
    let app = state.app.clone();
    let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let tip = app.last_applied().height.get();
        let mut body = Vec::new();
        let mut height = query.from.max(1);
        while height <= tip && height - query.from.max(1) < CHAIN_PAGE_BLOCKS && body.len() < CHAIN_PAGE_BYTES {
            let entry = app.chain_entry(Height::new(height)).map_err(ApiError::internal)?;
            let Some(entry) = entry else { break };
            let pair = borsh::to_vec(&(entry.block, entry.certificate)).map_err(ApiError::internal)?;
            frame(&mut body, &pair);
            height += 1;
        }
        Ok(body)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// Reads length-prefixed frames from a response body as it arrives.
struct Frames {
    response: reqwest::Response,
    buffer: Vec<u8>,
    start: usize,
}

impl Frames {
    fn new(response: reqwest::Response) -> Self {
        Self { response, buffer: Vec::new(), start: 0 }
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            let available = &self.buffer[self.start..];
            if available.len() >= 4 {
                let len = u32::from_le_bytes(available[..4].try_into().expect("4 bytes")) as usize;
                if len > FRAME_BYTES_MAX {
                    return Err(format!("frame of {len} bytes is over the limit"));
                }
                if available.len() >= 4 + len {
                    let frame = available[4..4 + len].to_vec();
                    self.start += 4 + len;
                    return Ok(Some(frame));
                }
            }
            let chunk = tokio::time::timeout(STALL_TIMEOUT, self.response.chunk())
                .await
                .map_err(|_| "stream stalled".to_string())?
                .map_err(|e| format!("stream broke: {e}"))?;
            let Some(chunk) = chunk else {
                return if self.start == self.buffer.len() { Ok(None) } else { Err("stream ends mid-frame".into()) };
            };
            self.buffer.drain(..self.start);
            self.start = 0;
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

/// Who this validator is when it asks peers for sync data.
pub struct SyncIdentity {
    pub index: u32,
    pub key: SigningKey,
}

impl SyncIdentity {
    fn get(&self, http: &reqwest::Client, url: &str, path_and_query: &str) -> reqwest::RequestBuilder {
        let full = reqwest::Url::parse(&format!("{url}{path_and_query}")).map(String::from).unwrap_or_default();
        let mut request = http.get(&full);
        if let Some(parts) = RequestParts::of_url("GET", &full, &[]) {
            let keyid = format!("{KEYID_PREFIX}{}", self.index);
            for (name, value) in httpsig::sign(&self.key, &keyid, &parts, wall_clock_ms(), &httpsig::new_nonce()) {
                request = request.header(name, value);
            }
        }
        request
    }
}

/// The peer with the highest committed height, among those that answer.
async fn best_peer(http: &reqwest::Client, peers: &[(u32, String)]) -> Option<(u64, String)> {
    let asks = peers.iter().map(|(_, url)| async move {
        let reply = http.get(format!("{url}/v1/status")).timeout(STATUS_TIMEOUT).send().await.ok()?;
        let status: serde_json::Value = reply.error_for_status().ok()?.json().await.ok()?;
        Some((status.get("height")?.as_u64()?, url.clone()))
    });
    futures::future::join_all(asks).await.into_iter().flatten().max_by_key(|(height, _)| *height)
}

/// Syncs state from the most advanced peer if this validator is more than `gap` blocks behind it.
/// Returns the height consensus resumes from, or `None` when replay is the better way.
pub async fn catch_up(
    app: &App,
    me: &SyncIdentity,
    peers: &[(u32, String)],
    gap: u64,
) -> Result<Option<Height>, SyncError> {
    let http = crate::tls::peer_client()
        .connect_timeout(STATUS_TIMEOUT)
        .build()
        .map_err(|e| SyncError::Local(e.to_string()))?;
    let local = app.last_applied();
    let Some((peer_height, peer)) = best_peer(&http, peers).await else { return Ok(None) };
    if peer_height <= local.height.get().saturating_add(gap) {
        return Ok(None);
    }
    tracing::info!(local = local.height.get(), peer_height, %peer, "far behind: syncing state from a peer");
    let started = std::time::Instant::now();
    let fail = |reason: String| SyncError::Peer { peer: peer.clone(), reason };
    let reject = |reason: &str| SyncError::Rejected { peer: peer.clone(), reason: reason.to_string() };

    // 1. The peer's state.
    let response = me
        .get(&http, &peer, "/v1/sync/state")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| fail(e.to_string()))?;
    let mut frames = Frames::new(response);
    let head: SyncHead = borsh::from_slice(&frames.next().await.map_err(&fail)?.ok_or_else(|| fail("empty".into()))?)
        .map_err(|_| reject("malformed head"))?;
    if head.height <= local.height.get() || head.entries > SNAPSHOT_ENTRIES_MAX {
        return Err(reject("snapshot height or size out of bounds"));
    }
    // Who certifies the chain: the set of the peer's epoch, learned link by link from genesis.
    let genesis = &app.inner().genesis;
    let certifiers =
        validators_through(genesis, &head.links).map_err(|_| reject("validator-set history does not check"))?;
    let certifying_epoch = head.links.len() as u64;
    let snapshot_height = Height::new(head.height);
    // The state goes to disk as it arrives (one write transaction, committed only in step 4).
    let local_err = |e: medledger_store::StoreError| SyncError::Local(e.to_string());
    let mut install = app.begin_snapshot(snapshot_height, head.entries, SNAPSHOT_BYTES_MAX).map_err(local_err)?;
    let mut bytes = 0u64;
    while let Some(frame) = frames.next().await.map_err(&fail)? {
        let batch: Vec<Entry> = borsh::from_slice(&frame).map_err(|_| reject("malformed state frame"))?;
        for (k, v) in batch {
            bytes += (k.len() + v.len()) as u64;
            install.push(k, v).map_err(|e| match e {
                medledger_store::StoreError::SnapshotOrder => reject("state keys out of order"),
                e => local_err(e),
            })?;
        }
        if install.len() > head.entries || bytes > SNAPSHOT_BYTES_MAX {
            return Err(reject("state larger than announced"));
        }
    }
    if install.len() != head.entries {
        return Err(reject("state shorter than announced"));
    }

    // 2. The chain from here to the first self-certified block at or after the snapshot.
    let (tail, certified) = match fetch_chain(app, me, &http, &peer, &head, &mut install).await {
        Ok(chain) => chain,
        Err(e) => {
            drop(install);
            app.discard_unsynced_log().map_err(SyncError::Local)?;
            return Err(e);
        }
    };
    // 3. The certificate ties the whole downloaded chain, and the snapshot's header, to consensus:
    // signed by the set of the peer's epoch (a peer that crossed into a later epoch since it sent
    // the history fails here, and replay catches up instead).
    let namespace = namespace_for_chain(&app.inner().chain_id);
    if !verify_certificate_in(&namespace, certifying_epoch, &certifiers, certified.0.0, &certified.1) {
        drop(install);
        app.discard_unsynced_log().map_err(SyncError::Local)?;
        return Err(reject("finalization certificate does not verify"));
    }
    // 4. The state must have the certified block's state root.
    let log_len = app.unsynced_log_len();
    let (digest, root) = (BlockHash::new(head.digest), Digest::new(head.state_root));
    if let Err(e) = app.finish_snapshot(install, digest, root, log_len) {
        app.discard_unsynced_log().map_err(SyncError::Local)?;
        return Err(match e {
            medledger_store::StoreError::SnapshotRoot => reject("state does not match the certified state root"),
            e => local_err(e),
        });
    }
    // 5. The blocks after the snapshot, executed like any finalized block.
    for (block, certificate) in &tail {
        app.commit_finalized(block, certificate).map_err(SyncError::Local)?;
    }
    let height = app.last_applied().height;
    app.set_floor(height, certified.1);
    tracing::info!(
        snapshot = snapshot_height.get(),
        height = height.get(),
        seconds = started.elapsed().as_secs_f64(),
        "state synced from a peer"
    );
    Ok(Some(height))
}

type FetchedChain = (Vec<(Block, Vec<u8>)>, (BlockHash, Vec<u8>));

/// Downloads and appends (unsynced to the state) the chain entries up to the snapshot's height,
/// indexing them in `install` a page at a time, and keeps the ones after it up to the first
/// self-certified block. Checks shapes and hash links; returns the tail, and the certified block's
/// digest and certificate.
async fn fetch_chain(
    app: &App,
    me: &SyncIdentity,
    http: &reqwest::Client,
    peer: &str,
    head: &SyncHead,
    install: &mut SnapshotInstall,
) -> Result<FetchedChain, SyncError> {
    let fail = |reason: String| SyncError::Peer { peer: peer.to_string(), reason };
    let reject = |reason: String| SyncError::Rejected { peer: peer.to_string(), reason };
    let local = app.last_applied();
    let chain_id = app.inner().chain_id;
    let (mut height, mut parent) = (local.height.get(), local.digest);
    let mut tail = Vec::new();
    let index = |install: &mut SnapshotInstall, page: &[(Block, Vec<u8>, Vec<u8>)]| {
        install.add_blocks(&append(app, page)?).map_err(|e| SyncError::Local(e.to_string()))
    };
    loop {
        let response = me
            .get(http, peer, &format!("/v1/sync/chain?from={}", height + 1))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fail(e.to_string()))?;
        let mut frames = Frames::new(response);
        let mut page: Vec<(Block, Vec<u8>, Vec<u8>)> = Vec::new();
        let before = height;
        while let Some(frame) = frames.next().await.map_err(&fail)? {
            let (bytes, certificate): (Vec<u8>, Vec<u8>) =
                borsh::from_slice(&frame).map_err(|_| reject("malformed chain frame".into()))?;
            let block = Block::decode(&bytes).map_err(|e| reject(format!("block {}: {e}", height + 1)))?;
            let h = &block.header;
            if h.chain_id != chain_id || h.height.get() != height + 1 || h.parent != parent {
                return Err(reject(format!("block {} does not extend the chain", height + 1)));
            }
            height += 1;
            parent = block.digest();
            if height == head.height && (parent.0 != head.digest || h.state_root.as_bytes() != &head.state_root) {
                return Err(reject("the snapshot's block is not on the chain".into()));
            }
            let certified = height >= head.height && !certificate.is_empty();
            if height <= head.height {
                page.push((block, bytes, certificate.clone()));
            } else {
                tail.push((block, certificate.clone()));
                if tail.len() > TAIL_BLOCKS_MAX {
                    return Err(reject("no certified block after the snapshot".into()));
                }
            }
            if certified {
                index(install, &page)?;
                return Ok((tail, (parent, certificate)));
            }
        }
        if height == before {
            return Err(fail(format!("no chain entries from height {}", height + 1)));
        }
        index(install, &page)?;
    }
}

/// Appends a page of blocks to the chain log; returns what the indexes need of them.
fn append(app: &App, page: &[(Block, Vec<u8>, Vec<u8>)]) -> Result<Vec<SyncedBlock>, SyncError> {
    let entries: Vec<(Height, &[u8], &[u8])> =
        page.iter().map(|(block, bytes, cert)| (block.header.height, bytes.as_slice(), cert.as_slice())).collect();
    let locations = app.append_unsynced(&entries).map_err(SyncError::Local)?;
    Ok(page
        .iter()
        .zip(locations)
        .map(|((block, _, _), location)| SyncedBlock {
            height: block.header.height,
            location,
            txs: block.txs.iter().map(Transaction::id).collect::<Vec<TxId>>(),
            sidecars: block
                .txs
                .iter()
                .zip(&block.sidecars)
                .filter_map(|(tx, s)| Some((tx.body.sidecar_digest?, s.clone()?)))
                .filter(|(_, bytes)| medledger_ledger::parse_purged(bytes).is_none())
                .collect(),
        })
        .collect())
}
