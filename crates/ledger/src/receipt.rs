//! Verifiable receipts: the evidence that a transaction (an access, a grant, a break-glass, any
//! audit event) and its outcome are in a finalized block, checkable offline from the genesis file.
//!
//! A receipt carries the transaction and its outcome, their Merkle paths to the transaction and
//! result roots of the block that holds them, that block's header and each header after it up to
//! the first one a finality certificate covers (a finalized block finalizes its ancestors), and the
//! certificate. This crate checks everything but the certificate's signatures, which belong to the
//! consensus engine (`medledger_node::receipt` does the whole check).
//!
//! A block finalized after a change of the validator set is certified by that epoch's validators,
//! whom the genesis file does not name: the receipt then carries the validator-set history, one
//! [`EpochLink`] per epoch since genesis, each checkable with the previous epoch's validators (the
//! first with the genesis ones).
//!
//! The encoding is canonical and every byte is covered: the transaction and outcome by the paths,
//! the paths and headers by the hash chain up to the certified digest, the certificate by its
//! signatures. Changing any byte makes the check fail.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_types::limits::VALIDATORS_MAX;
use medledger_types::{BlockHash, ChainId, DecodeError, Digest, Height, Timestamp, decode_canonical, encode};

use crate::block::BlockHeader;
use crate::governance::{EPOCH_SWITCH_BLOCKS, ValidatorEntry, ValidatorEpoch};
use crate::merkle::{self, PathStep};
use crate::state::keys;
use crate::tx::{Transaction, TxOutcome};

/// What a receipt file starts with.
pub const RECEIPT_MAGIC: &[u8] = b"medledger/receipt/v1\n";
/// Headers a receipt may carry (the block and its descendants up to a certified one).
pub const RECEIPT_HEADERS_MAX: usize = 256;
/// Largest receipt accepted (a transaction, two paths, the headers and a certificate, and the
/// validator-set history).
pub const RECEIPT_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Epochs of validator-set history a receipt may carry.
pub const RECEIPT_EPOCHS_MAX: usize = 64;
/// Bytes of one Merkle proof of a state entry (a sparse Merkle path of at most 256 siblings).
const STATE_PROOF_BYTES_MAX: usize = 16 * 1024;
/// Steps of a Merkle path (a block holds at most 2,000 transactions: 11 levels).
const PATH_STEPS_MAX: usize = 32;
/// Bytes of a finality certificate (64 validators' signatures and a bitmap fit in 8 KiB).
const CERTIFICATE_BYTES_MAX: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Receipt {
    pub tx: Transaction,
    pub outcome: TxOutcome,
    /// From the encoded transaction to `headers[0].tx_root`.
    pub tx_path: Vec<PathStep>,
    /// From the encoded outcome to `headers[0].results_root`; the same sides as `tx_path`.
    pub result_path: Vec<PathStep>,
    /// The block holding the transaction, then each child up to the certified block.
    pub headers: Vec<BlockHeader>,
    /// The finality certificate of the last header's digest.
    pub certificate: Vec<u8>,
    /// The validator-set history: one link per epoch after genesis, up to the epoch of the
    /// certificate (none while the genesis validators certify).
    pub links: Vec<EpochLink>,
}

/// How a verifier who trusts epoch `e - 1`'s validators learns epoch `e`'s: the block that
/// adopted the change (its state holds the new set), its descendants up to one the previous
/// epoch's validators certified, that certificate, and the new set's state entries with their
/// Merkle proofs against the adopting block's state root. The entries never change once written,
/// so they are the set for the whole epoch.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct EpochLink {
    /// The epoch's entry (`ve/{epoch}`).
    pub set: ValidatorEpoch,
    /// Its validators' entries (`va/{index}`), in the order of `set.validators`.
    pub validators: Vec<ValidatorEntry>,
    /// The adopting block's header, then each child up to the certified one.
    pub headers: Vec<BlockHeader>,
    /// The previous epoch's finality certificate of the last header.
    pub certificate: Vec<u8>,
    /// Proofs against `headers[0].state_root`: of `set`, then of each entry of `validators`.
    pub proofs: Vec<Vec<u8>>,
}

/// What the rest of a link's check needs, once its shape is checked: the state root and digest
/// its proofs and certificate are for, and each (state key, value) the proofs must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub state_root: Digest,
    pub certified: BlockHash,
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl EpochLink {
    /// Checks the link's shape for epoch `epoch` on `chain_id`: the set and its entries agree,
    /// one proof per entry, the headers chain from the adopting block (which scheduled the epoch
    /// at the height governance does) to the certified one.
    pub fn check(&self, chain_id: &ChainId, epoch: u64) -> Result<LinkClaims, ReceiptError> {
        let (Some(first), Some(last)) = (self.headers.first(), self.headers.last()) else {
            return Err(ReceiptError::History);
        };
        let indices: Vec<u32> = self.validators.iter().map(|v| v.index).collect();
        if self.set.epoch != epoch
            || self.set.proposal.is_none()
            || indices != self.set.validators
            || self.proofs.len() != self.validators.len() + 1
            || self.set.first_height.get() != first.height.get().saturating_add(EPOCH_SWITCH_BLOCKS + 1)
            || last.height >= self.set.first_height
        {
            return Err(ReceiptError::History);
        }
        if self.headers.iter().any(|h| h.chain_id != *chain_id) {
            return Err(ReceiptError::WrongChain);
        }
        for pair in self.headers.windows(2) {
            if pair[1].parent != pair[0].digest() || pair[1].height.get() != pair[0].height.get() + 1 {
                return Err(ReceiptError::BrokenChain);
            }
        }
        let mut entries = vec![(keys::validator_epoch(epoch), encode(&self.set))];
        entries.extend(self.validators.iter().map(|v| (keys::validator(v.index), encode(v))));
        Ok(LinkClaims { state_root: first.state_root, certified: last.digest(), entries })
    }
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("not a medledger receipt")]
    Magic,
    #[error("receipt does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("receipt is over its limits")]
    Limits,
    #[error("receipt is for another network")]
    WrongChain,
    #[error("receipt's headers do not form a chain")]
    BrokenChain,
    #[error("transaction is not in the block's transaction root")]
    TxPath,
    #[error("outcome is not the transaction's in the block's result root")]
    ResultPath,
    #[error("finality certificate does not verify for this block")]
    Certificate,
    #[error("the validator-set history does not hold")]
    History,
}

/// What a receipt shows once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Included {
    /// The block holding the transaction.
    pub height: Height,
    pub time: Timestamp,
    /// The certified block (the same one or a descendant) and its digest.
    pub certified_height: Height,
    pub certified: BlockHash,
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = RECEIPT_MAGIC.to_vec();
        bytes.extend_from_slice(&encode(self));
        bytes
    }

    /// Decodes a receipt from outside input: the magic, then the canonical encoding within limits.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let body = bytes.strip_prefix(RECEIPT_MAGIC).ok_or(ReceiptError::Magic)?;
        let receipt: Receipt = decode_canonical(body, RECEIPT_BYTES_MAX)?;
        let link_over = |l: &EpochLink| {
            l.headers.is_empty()
                || l.headers.len() > RECEIPT_HEADERS_MAX
                || l.certificate.len() > CERTIFICATE_BYTES_MAX
                || l.validators.len() > VALIDATORS_MAX
                || l.proofs.iter().any(|p| p.len() > STATE_PROOF_BYTES_MAX)
        };
        if receipt.headers.is_empty()
            || receipt.headers.len() > RECEIPT_HEADERS_MAX
            || receipt.tx_path.len() > PATH_STEPS_MAX
            || receipt.result_path.len() > PATH_STEPS_MAX
            || receipt.certificate.len() > CERTIFICATE_BYTES_MAX
            || receipt.links.len() > RECEIPT_EPOCHS_MAX
            || receipt.links.iter().any(link_over)
        {
            return Err(ReceiptError::Limits);
        }
        Ok(receipt)
    }

    /// Checks everything but the certificate's signatures: the network, the inclusion of the
    /// transaction and its outcome at the same position of the first block, and the hash chain up
    /// to the last header. Returns what the certificate must then finalize.
    pub fn check_inclusion(&self, chain_id: &ChainId) -> Result<Included, ReceiptError> {
        let (first, last) = match (self.headers.first(), self.headers.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => return Err(ReceiptError::Limits),
        };
        if self.tx.body.chain_id != *chain_id || self.headers.iter().any(|h| h.chain_id != *chain_id) {
            return Err(ReceiptError::WrongChain);
        }
        for pair in self.headers.windows(2) {
            if pair[1].parent != pair[0].digest() || pair[1].height.get() != pair[0].height.get() + 1 {
                return Err(ReceiptError::BrokenChain);
            }
        }
        if !merkle::verify(&first.tx_root, &self.tx.encode(), &self.tx_path) {
            return Err(ReceiptError::TxPath);
        }
        let sides = |path: &[PathStep]| path.iter().map(|s| s.sibling_is_left).collect::<Vec<_>>();
        if sides(&self.tx_path) != sides(&self.result_path)
            || !merkle::verify(&first.results_root, &encode(&self.outcome), &self.result_path)
        {
            return Err(ReceiptError::ResultPath);
        }
        // A block of epoch e is certified by epoch e's validators: it lies at or after the first
        // block of the last epoch the history reaches.
        if self.links.last().is_some_and(|link| first.height < link.set.first_height) {
            return Err(ReceiptError::History);
        }
        Ok(Included { height: first.height, time: first.time, certified_height: last.height, certified: last.digest() })
    }
}

/// Builds the receipt of `txs[index]` from the block's transactions and outcomes and the headers
/// from that block to a certified one; `None` when the inputs do not match the first header.
pub fn build(
    txs: &[Transaction],
    outcomes: &[TxOutcome],
    index: usize,
    headers: Vec<BlockHeader>,
    certificate: Vec<u8>,
    links: Vec<EpochLink>,
) -> Option<Receipt> {
    let first = headers.first()?;
    if txs.len() != outcomes.len()
        || crate::block::tx_root(txs) != first.tx_root
        || crate::block::results_root(outcomes) != first.results_root
    {
        return None;
    }
    let tx_leaves: Vec<Vec<u8>> = txs.iter().map(Transaction::encode).collect();
    let result_leaves: Vec<Vec<u8>> = outcomes.iter().map(encode).collect();
    Some(Receipt {
        tx: txs.get(index)?.clone(),
        outcome: outcomes.get(index)?.clone(),
        tx_path: merkle::proof(&tx_leaves, index)?,
        result_path: merkle::proof(&result_leaves, index)?,
        headers,
        certificate,
        links,
    })
}
