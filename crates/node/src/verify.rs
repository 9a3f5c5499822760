//! Offline verification of a validator's files: every block's hash chain, transaction root,
//! finality certificate (against the validator set of the block's epoch, as the re-executed
//! state before it records it, from the genesis set on), proposer, time, and state root (by re-executing from genesis), every record
//! ciphertext in the blob store against its digest on the ledger, and every erasure carried out:
//! no ciphertext of an erased record left in the store, no sidecar of one left in the chain log.

use std::path::Path;

use medledger_ledger::{BlockContext, TxKind, execute_block, results_root};
use medledger_store::{BlobError, Blobs, ChainLog, StateDb};
use std::collections::BTreeMap;

use medledger_types::limits::RECORD_CIPHERTEXT_BYTES_MAX;
use medledger_types::{Digest, RecordId};

use crate::config::{load_genesis, load_validator, validator_dir};
use crate::consensus::{namespace_for_chain, verify_certificate_in};
use medledger_ledger::governance;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub blocks: u64,
    pub transactions: u64,
    pub state_root: Digest,
    pub ciphertexts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verification failed at height {height}: {reason}")]
    At { height: u64, reason: String },
    #[error("ciphertext of record {record} fails: {reason}")]
    Ciphertext { record: String, reason: String },
    #[error("record {record} was erased at height {height} but {what} is still kept")]
    NotErased { record: String, height: u64, what: &'static str },
    #[error("{0}")]
    Setup(String),
}

fn setup(e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Setup(e.to_string())
}

/// Verifies validator `index` of the network in `dir`.
pub async fn verify_dir(dir: &Path, index: u32) -> Result<VerifyReport, VerifyError> {
    let genesis = load_genesis(dir).map_err(setup)?;
    let file = load_validator(dir, index).map_err(setup)?;
    let namespace = namespace_for_chain(&genesis.chain_id());
    let validator_keys: Vec<_> = genesis.validators.iter().map(|v| v.public_key).collect();
    let scratch = tempfile::tempdir().map_err(setup)?;
    let db = StateDb::open(&scratch.path().join("replay.redb")).map_err(setup)?;
    let (genesis_block, pending) = crate::app::genesis_block(&db, &genesis).map_err(setup)?;
    db.commit(pending, genesis_block.digest(), &[], &[], None).map_err(setup)?;

    let log = validator_dir(dir, index).join("data").join("chain.log");
    let mut prev = genesis_block.header.clone();
    let mut uncertified: Option<u64> = None;
    let mut transactions = 0u64;
    let mut records: BTreeMap<Digest, RecordId> = BTreeMap::new();
    // Per record: the heights of blocks in this log that carry one of its sidecars whole.
    let mut whole_sidecars: BTreeMap<RecordId, Vec<u64>> = BTreeMap::new();
    let mut erased: BTreeMap<RecordId, (u64, Vec<Digest>)> = BTreeMap::new();
    for entry in ChainLog::entries(&log).map_err(setup)? {
        let height = prev.height.get() + 1;
        let at = |reason: String| VerifyError::At { height, reason };
        let entry = entry.map_err(|e| at(e.to_string()))?;
        if entry.height.get() != height {
            return Err(at(format!("entry claims height {}", entry.height)));
        }
        let block =
            medledger_ledger::Block::decode(&entry.block).map_err(|e| at(format!("block does not decode: {e}")))?;
        let h = &block.header;
        if h.height.get() != height || h.chain_id != prev.chain_id || h.parent != prev.digest() {
            return Err(at("block does not extend its parent".into()));
        }
        if h.time <= prev.time {
            return Err(at("block time not after its parent's".into()));
        }
        let digest = block.digest();
        let view = db.view(&[]).map_err(setup)?;
        // The validator set of the block's epoch, as the state before it records it.
        let set = governance::epoch_at(&view, h.height).ok_or_else(|| at("no validator-set epoch holds it".into()))?;
        if !set.validators.contains(&h.proposer) {
            return Err(at(format!("proposer {} is not a validator of epoch {}", h.proposer, set.epoch)));
        }
        let keys: Vec<[u8; 32]> = governance::members(&view, &set).iter().map(|v| v.public_key.0).collect();
        if entry.certificate.is_empty() {
            uncertified.get_or_insert(height);
        } else if verify_certificate_in(&namespace, set.epoch, &keys, digest.0, &entry.certificate) {
            uncertified = None;
        } else {
            return Err(at(format!("finality certificate does not verify against epoch {}'s validators", set.epoch)));
        }
        let ctx = BlockContext { chain_id: h.chain_id, height: h.height, time: h.time, validators: &validator_keys };
        let execution = execute_block(&view, ctx, &block.txs, &block.sidecars).map_err(|e| at(e.to_string()))?;
        drop(view);
        if results_root(&execution.results) != h.results_root {
            return Err(at("transaction results do not match the header".into()));
        }
        for (tx, slot) in block.txs.iter().zip(&block.sidecars) {
            let whole = slot.as_deref().is_some_and(|s| medledger_ledger::parse_purged(s).is_none());
            if let (true, Some(record)) = (whole, tx.body.kind.sidecar_record()) {
                whole_sidecars.entry(record).or_default().push(height);
            }
        }
        // Every version's ciphertext must be in the store, except those a rotation retired and
        // those of erased records, which must be gone.
        for (tx, _) in block.txs.iter().zip(&execution.results).filter(|(_, o)| o.is_applied()) {
            match &tx.body.kind {
                TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) => {
                    records.insert(r.digest, r.record);
                }
                TxKind::Rotate(rotate) => {
                    records.remove(&rotate.replaces);
                    records.insert(rotate.next.digest, rotate.next.record);
                }
                TxKind::Erase(e) => {
                    let gone: Vec<Digest> = records.iter().filter(|(_, r)| **r == e.record).map(|(d, _)| *d).collect();
                    for d in &gone {
                        records.remove(d);
                    }
                    erased.insert(e.record, (height, gone));
                }
                _ => {}
            }
        }
        let pending = db.compute(&[], h.height, execution.writes).map_err(setup)?;
        if pending.root != h.state_root {
            return Err(at("state root does not match re-execution".into()));
        }
        transactions += block.txs.len() as u64;
        db.commit(pending, digest, &[], &[], None).map_err(setup)?;
        prev = block.header;
    }
    if let Some(height) = uncertified {
        return Err(VerifyError::At { height, reason: "no finality certificate covers this block".into() });
    }
    let blobs =
        Blobs::open(&file.storage, dir, file.s3_endpoint.as_deref(), RECORD_CIPHERTEXT_BYTES_MAX).map_err(setup)?;
    for (digest, record) in &records {
        blobs.get(digest).await.map_err(|e| {
            let ciphertext = |reason: &str| VerifyError::Ciphertext { record: record.to_hex(), reason: reason.into() };
            match e {
                BlobError::Integrity => ciphertext("bytes do not match the ledger's digest"),
                BlobError::NotFound => ciphertext("missing from the blob store"),
                // Not a finding about the data: the store could not be read (credentials, endpoint).
                other => VerifyError::Setup(format!("cannot read the blob store: {other}")),
            }
        })?;
    }
    for (record, (height, digests)) in &erased {
        let not_erased = |what| VerifyError::NotErased { record: record.to_hex(), height: *height, what };
        // (A later attempt to reuse the id, refused, carries keys of other data.)
        if whole_sidecars.get(record).is_some_and(|heights| heights.iter().any(|h| h <= height)) {
            return Err(not_erased("a sidecar in the chain log"));
        }
        for digest in digests {
            match blobs.get(digest).await {
                Err(BlobError::NotFound) => {}
                Ok(_) | Err(BlobError::Integrity) => return Err(not_erased("a ciphertext in the blob store")),
                Err(other) => return Err(VerifyError::Setup(format!("cannot read the blob store: {other}"))),
            }
        }
    }
    Ok(VerifyReport {
        blocks: prev.height.get(),
        transactions,
        state_root: prev.state_root,
        ciphertexts: records.len() as u64,
    })
}
