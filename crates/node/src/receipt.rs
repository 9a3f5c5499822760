//! Receipts (see [`medledger_ledger::receipt`]): built by a validator from its chain log (and the
//! proofs of each validator-set epoch it kept when committing the block that adopted it), checked
//! by anyone from the genesis file alone.

use medledger_ledger::governance;
use medledger_ledger::receipt::{self, EpochLink, RECEIPT_HEADERS_MAX, Receipt};
use medledger_ledger::{BlockHeader, Rejection, StateView, TxOutcome};
use medledger_types::{Height, TxId};

use crate::app::{App, tx_outcome};

/// Why a validator could not build a receipt.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no committed transaction with this id")]
    NotCommitted,
    #[error("the block is not finalized by a certificate yet")]
    NotCertified,

    #[error("{0}")]
    Local(String),
}

/// The receipt of committed transaction `id`, from `app`'s chain log and `view` (its committed
/// state, for the outcomes of the block's transactions).
pub fn build(app: &App, view: &impl StateView, id: &TxId) -> Result<Receipt, BuildError> {
    let local = |e: medledger_store::StoreError| BuildError::Local(e.to_string());
    let (height, index) = app.inner().db.tx_location(id).map_err(local)?.ok_or(BuildError::NotCommitted)?;
    let (block, certificate) = app.block_at(height).map_err(local)?.ok_or(BuildError::NotCommitted)?;
    // Each transaction's outcome is in state under its id, at its own position; a transaction
    // without one there was a stale replay (the only outcome execution does not record).
    let outcomes: Vec<TxOutcome> = block
        .txs
        .iter()
        .enumerate()
        .map(|(i, tx)| match tx_outcome(view, &tx.id()) {
            Some(entry) if entry.height == height && entry.index as usize == i => entry.outcome,
            _ => TxOutcome::Rejected { reason: Rejection::StaleNonce },
        })
        .collect();
    let (headers, certificate) = certified_chain(app, block.header.clone(), certificate)?;
    let certified = headers.last().map_or(height, |h| h.height);
    let epoch = governance::epoch_at(view, certified).map_or(0, |e| e.epoch);
    let links = links(app, view, epoch)?;
    receipt::build(&block.txs, &outcomes, index as usize, headers, certificate, links)
        .ok_or_else(|| BuildError::Local(format!("block {height} does not match its recorded outcomes")))
}

/// `header` and each child up to the first committed block with its own finality certificate,
/// and that certificate.
fn certified_chain(
    app: &App,
    header: BlockHeader,
    certificate: Vec<u8>,
) -> Result<(Vec<BlockHeader>, Vec<u8>), BuildError> {
    let mut next = header.height.get();
    let (mut headers, mut certificate) = (vec![header], certificate);
    while certificate.is_empty() {
        next += 1;
        if headers.len() >= RECEIPT_HEADERS_MAX {
            return Err(BuildError::NotCertified);
        }
        let found = app.block_at(Height::new(next)).map_err(|e| BuildError::Local(e.to_string()))?;
        let Some((child, child_certificate)) = found else {
            return Err(BuildError::NotCertified);
        };
        headers.push(child.header);
        certificate = child_certificate;
    }
    Ok((headers, certificate))
}

/// The validator-set history up to epoch `epoch` (one link per epoch after genesis), built once
/// per epoch and kept in memory.
pub(crate) fn links(app: &App, view: &impl StateView, epoch: u64) -> Result<Vec<EpochLink>, BuildError> {
    let mut kept = app.inner().epoch_links.lock().expect("links lock");
    while (kept.len() as u64) < epoch {
        let next = kept.len() as u64 + 1;
        kept.push(link(app, view, next)?);
    }
    Ok(kept[..epoch as usize].to_vec())
}

/// The history link of epoch `epoch`: its set, the adopting block certified by the previous
/// epoch's validators, and the proofs this validator kept when it committed that block.
fn link(app: &App, view: &impl StateView, epoch: u64) -> Result<EpochLink, BuildError> {
    let missing = || BuildError::Local(format!("this validator keeps no history of validator-set epoch {epoch}"));
    let set = governance::epoch(view, epoch).ok_or_else(missing)?;
    let validators: Vec<_> = set
        .validators
        .iter()
        .map(|index| governance::validator(view, *index))
        .collect::<Option<_>>()
        .ok_or_else(missing)?;
    let (adopted, proofs) =
        app.inner().db.epoch_link(epoch).map_err(|e| BuildError::Local(e.to_string()))?.ok_or_else(missing)?;
    let (block, certificate) =
        app.block_at(adopted).map_err(|e| BuildError::Local(e.to_string()))?.ok_or_else(missing)?;
    let (headers, certificate) = certified_chain(app, block.header, certificate)?;
    Ok(EpochLink { set, validators, headers, certificate, proofs })
}
