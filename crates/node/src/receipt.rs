//! Receipts (see [`medledger_ledger::receipt`]): built by a validator from its chain log, checked
//! by anyone from the genesis file alone.

use medledger_ledger::receipt::{self, Included, RECEIPT_HEADERS_MAX, Receipt, ReceiptError};
use medledger_ledger::{Genesis, Rejection, StateView, TxOutcome};
use medledger_types::{Height, TxId};

use crate::app::{App, tx_outcome};
use crate::consensus::{namespace_for_chain, verify_certificate};

/// Why a validator could not build a receipt.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("no committed transaction with this id")]
    NotCommitted,
    #[error("the block is not finalized by a certificate yet")]
    NotCertified,
    /// The certificate is of a validator set after genesis: checking it offline needs the
    /// validator-set history, which receipts do not carry yet.
    #[error("the block was finalized by a validator set after a governance change")]
    AfterSetChange,
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
    let mut headers = vec![block.header.clone()];
    let mut certificate = certificate;
    let mut next = height.get();
    while certificate.is_empty() {
        next += 1;
        if headers.len() >= RECEIPT_HEADERS_MAX {
            return Err(BuildError::NotCertified);
        }
        let Some((child, child_certificate)) = app.block_at(Height::new(next)).map_err(local)? else {
            return Err(BuildError::NotCertified);
        };
        headers.push(child.header);
        certificate = child_certificate;
    }
    if medledger_ledger::governance::epoch_at(view, Height::new(next)).is_none_or(|e| e.epoch != 0) {
        return Err(BuildError::AfterSetChange);
    }
    receipt::build(&block.txs, &outcomes, index as usize, headers, certificate)
        .ok_or_else(|| BuildError::Local(format!("block {height} does not match its recorded outcomes")))
}

/// Checks a receipt file offline against `genesis`: its network, the inclusion of the transaction
/// and its outcome, the chain of headers, and the finality certificate of the genesis validators.
pub fn verify(bytes: &[u8], genesis: &Genesis) -> Result<(Receipt, Included), ReceiptError> {
    let receipt = Receipt::decode(bytes)?;
    let chain_id = genesis.chain_id();
    let included = receipt.check_inclusion(&chain_id)?;
    let keys: Vec<[u8; 32]> = genesis.validators.iter().map(|v| v.public_key.0).collect();
    if !verify_certificate(&namespace_for_chain(&chain_id), &keys, included.certified.0, &receipt.certificate) {
        return Err(ReceiptError::Certificate);
    }
    Ok((receipt, included))
}
