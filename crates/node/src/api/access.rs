//! Record access: what the signer of a committed, allowed RecordAccess receives (envelopes, a
//! threshold share, the ciphertext).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use medledger_ledger::api::{AccessBundle, AccessEvidence, PROBLEM_INTEGRITY, ReleasedShare, ThresholdPublic};
use medledger_ledger::serve::{Refusal, Served, served_access};
use medledger_ledger::state::{EnvelopeRef, MemberEntry, RecordEntry, keys, read};
use medledger_ledger::threshold;
use medledger_ledger::{KeyHolder, KeySubject, Sidecar, SidecarEnvelope, TxKind};
use medledger_store::BlobError;
use medledger_types::limits::ACCESS_WINDOW_MS;
use medledger_types::{Digest, TxId};
use zeroize::Zeroizing;

use super::auth::Signed;
use super::blobs::storage_failure;
use super::charts::{chart_path, envelope, team_path};
use super::proofs::{EVIDENCE_ATTEMPTS, EVIDENCE_WAIT, certified, uncertified};
use super::{ApiError, ApiResult, ApiState, Problems, parse, view};
use crate::app::wall_clock_ms;

/// The record of an allowed RecordAccess signed by the requester, committed within the window.
/// A committed transaction, from the block that holds it.
pub(super) fn committed_tx(
    state: &ApiState,
    tx: &TxId,
    what: &'static str,
) -> ApiResult<medledger_ledger::Transaction> {
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
pub(super) async fn access_bundle(
    State(state): State<ApiState>,
    Path(tx): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<AccessBundle>> {
    let tx: TxId = parse(&tx, "transaction id")?;
    let mut commits = state.app.subscribe();
    // The evidence is for the last committed block, which nearly always carries its own
    // finality certificate; one finalized only through a descendant waits for the next commit.
    for _ in 0..EVIDENCE_ATTEMPTS {
        if let Some(bundle) = bundle_now(&state, &tx, me.clone())? {
            return Ok(Json(bundle));
        }
        let _ = tokio::time::timeout(EVIDENCE_WAIT, commits.changed()).await;
    }
    Err(uncertified())
}

/// The bundle of the allowed access `tx` and its evidence, read from one view of the committed
/// state; `None` when the last committed block has no finality certificate of its own.
fn bundle_now(state: &ApiState, tx: &TxId, me: MemberEntry) -> ApiResult<Option<AccessBundle>> {
    let (me, Served { record, .. }) = allowed_access(state, tx, me)?;
    let view = view(state)?;
    // The same entry as the access saw (the version it names), read again from the view the
    // proofs are made from.
    let record: RecordEntry = read(&view, &keys::record_version(&record.record, record.version))
        .filter(|now: &RecordEntry| now.version == record.version && now.digest == record.digest)
        .ok_or_else(|| ApiError::denied("the record changed since the access"))?;
    let subject = KeySubject::Record { record: record.record, version: record.version };
    let me_holder = KeyHolder::Member { member: me.id };
    let mut envelopes = Vec::new();
    if let Some(e) = envelope(state, &view, subject, me_holder)? {
        envelopes.push(e);
    }
    if let Some(path) = chart_path(state, &view, &record, me_holder)? {
        envelopes.extend(path);
    }
    if envelopes.is_empty() {
        envelopes = team_path(state, &view, &me, &record)?;
    }
    let own = state.app.inner().db.sidecar(&record.sidecar).map_err(ApiError::internal)?;
    let own = own.ok_or_else(|| ApiError::not_found("record"))?;
    let Some(evidence) = evidence(state, &view, &record, &own, &envelopes)? else { return Ok(None) };
    let sidecar = Sidecar::decode(&own).unwrap_or_default();
    let threshold = record.threshold.0.as_ref().map(ThresholdPublic::of);
    Ok(Some(AccessBundle {
        record,
        envelopes,
        metadata: sidecar.metadata,
        threshold,
        evidence: Some(evidence.to_text()),
    }))
}

/// The evidence of a bundle of `record` (whose sidecar is `own`, already read) and `envelopes`
/// read from `view` (see [`AccessEvidence`]); `None` when the view's last block has no finality
/// certificate of its own.
fn evidence(
    state: &ApiState,
    view: &medledger_store::SpecView<'_>,
    record: &RecordEntry,
    own: &[u8],
    envelopes: &[SidecarEnvelope],
) -> ApiResult<Option<AccessEvidence>> {
    let entry = |e: &SidecarEnvelope| keys::envelope(&e.subject, &e.holder);
    let refs: Vec<EnvelopeRef> = envelopes
        .iter()
        .map(|e| read(view, &entry(e)).ok_or_else(|| ApiError::internal("an envelope's state entry is missing")))
        .collect::<ApiResult<_>>()?;
    let mut proved = vec![keys::record_version(&record.record, record.version)];
    proved.extend(envelopes.iter().map(entry));
    let Some((header, certificate, links, proofs)) = certified(state, view, &proved)? else { return Ok(None) };
    let mut digests: Vec<Digest> = refs.iter().map(|r| r.sidecar).collect();
    digests.push(record.sidecar);
    digests.sort_unstable();
    digests.dedup();
    let db = &state.app.inner().db;
    let sidecars = digests
        .iter()
        .map(|d| match d == &record.sidecar {
            true => Ok(own.to_vec()),
            false => db.sidecar(d).map_err(ApiError::internal)?.ok_or_else(|| ApiError::not_found("record")),
        })
        .collect::<ApiResult<_>>()?;
    Ok(Some(AccessEvidence { header, certificate, links, refs, proofs, sidecars }))
}

#[utoipa::path(
    get,
    path = "/v1/access/{tx}/share",
    tag = "records",
    params(("tx" = String, Path, pattern = "^[0-9a-f]{64}$", description = "RecordAccess transaction id (64 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "This validator's share of the record's k_thr, wrapped for the signer of this committed, allowed RecordAccess (threshold release).", body = ReleasedShare), Problems)
)]
pub(super) async fn access_share(
    State(state): State<ApiState>,
    Path(tx): Path<String>,
    Signed(me): Signed,
) -> ApiResult<Json<ReleasedShare>> {
    let tx: TxId = parse(&tx, "transaction id")?;
    let (me, Served { record, emergency, .. }) = allowed_access(&state, &tx, me)?;
    let Some(info) = record.threshold.0.clone() else {
        return Err(ApiError::not_found("threshold share (the record uses the direct suite)"));
    };
    let chain_id = state.app.inner().chain_id;
    let db = &state.app.inner().db;
    // The vault holds the share once the janitor has seen the record's block; until then it is
    // opened from the sidecar.
    let Some(keyring) = state.keyring.as_deref() else {
        return Err(ApiError::not_found("threshold share (this validator holds no share key)"));
    };
    // The share's position among the version's holders: the set it was dealt to, or re-shared to.
    let position = info
        .position(state.index)
        .ok_or_else(|| ApiError::not_found("threshold share (this validator holds none of this record)"))?;
    let share_index = u32::try_from(position).map_err(ApiError::internal)?;
    let vaulted = vaulted_share(&state, keyring, &record, |opened| info.opened_fits(position, opened)).await?;
    let opened = match vaulted {
        Some(opened) => opened,
        // Not vaulted yet (the janitor has not seen the record's block): the author's dealing is
        // opened from the sidecar. A re-shared generation is only ever in the vault.
        _ if info.generation == 0 => {
            let shares = db
                .sidecar(&record.sidecar)
                .map_err(ApiError::internal)?
                .and_then(|b| Sidecar::decode(&b).ok())
                .and_then(|s| s.threshold.0)
                .ok_or_else(|| ApiError::not_found("threshold share"))?;
            let key = keyring.current();
            let mine = shares.shares.get(position).ok_or_else(|| ApiError::not_found("threshold share"))?;
            let miswrapped = || {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "share-unopenable",
                    "the author wrapped or dealt this validator's share wrongly",
                )
            };
            let context = threshold::share_context(chain_id, record.record, record.version, info.epoch, share_index);
            let opened = medledger_crypto::wrap::open(&key, &mine.envelope, &context).map_err(|_| miswrapped())?;
            if !info.opened_fits(position, &opened) {
                return Err(miswrapped());
            }
            opened
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "share-unavailable",
                "this validator has no verified share of the record's current generation",
            ));
        }
    };
    // The emergency share of k_env goes only to a reader whom break-glass alone allowed (they
    // hold no envelope); everyone else gets the k_thr share.
    let released = if emergency { &opened[..] } else { &opened[..medledger_crypto::threshold::SHARE_BYTES] };
    let context = threshold::release_context(chain_id, record.record, record.version, info.epoch, share_index, me.id);
    let envelope = medledger_crypto::wrap::seal(&me.encryption_key, released, &context).map_err(ApiError::internal)?;
    state.app.inner().metrics.shares_released.inc();
    let height = Some(state.app.last_applied().height);
    Ok(Json(ReleasedShare { validator: share_index, epoch: info.epoch, envelope, emergency, height }))
}

/// How long a share request waits, at most, for this validator's re-sharing worker to vault its
/// share of a re-sharing that finished just before (the reader asked as soon as it committed).
const RESHARED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// This validator's vaulted share of `record`'s version, opened, if it fits (`fits`). For a
/// re-shared generation not vaulted yet, waits (at most [`RESHARED_WAIT`]) for the re-sharing
/// worker, which combines it when the re-sharing's finish commits.
async fn vaulted_share(
    state: &ApiState,
    keyring: &crate::keyring::Keyring,
    record: &RecordEntry,
    fits: impl Fn(&[u8]) -> bool,
) -> ApiResult<Option<Zeroizing<Vec<u8>>>> {
    let db = &state.app.inner().db;
    let mut reshared = state.app.subscribe_reshared();
    let deadline = tokio::time::Instant::now() + RESHARED_WAIT;
    let re_shared = record.threshold.0.as_ref().is_some_and(|info| info.generation > 0);
    loop {
        let vaulted = db.vault_get(&record.record, record.version).map_err(ApiError::internal)?;
        let opened = vaulted.and_then(|row| keyring.open_share(&record.record, record.version, &row));
        if opened.as_ref().is_some_and(|o| fits(o)) || !re_shared {
            return Ok(opened.filter(|o| fits(o)));
        }
        if tokio::time::timeout_at(deadline, reshared.changed()).await.is_err() {
            return Ok(None);
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/access/{tx}/content",
    tag = "records",
    params(("tx" = String, Path, pattern = "^[0-9a-f]{64}$", description = "RecordAccess transaction id (64 hex).")),
    security(("rfc9421" = [])),
    responses((status = 200, description = "The record ciphertext.", body = Vec<u8>, content_type = "application/octet-stream"), Problems)
)]
pub(super) async fn access_content(
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
        // The ledger names this ciphertext and the access was allowed: its absence is a failure of
        // the store's integrity (a deletion outside the ledger), not a mistyped id.
        BlobError::NotFound => {
            state.app.inner().metrics.storage_errors.inc();
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                PROBLEM_INTEGRITY,
                "the ciphertext the ledger names is missing from the store",
            )
        }
        other => storage_failure(&state, other),
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
