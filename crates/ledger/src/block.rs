//! Blocks: a header every validator signs off on (through the engine's certificate), the ordered
//! transactions, and their sidecars beside them (committed through each transaction's
//! `sidecar_digest`, outside the block's identity, so erasure can purge them without touching history).

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_types::limits::{BLOCK_BYTES_MAX, BLOCK_TXS_MAX};
use medledger_types::{BlockHash, ChainId, DecodeError, Digest, Height, MemberId, Timestamp, decode_canonical, encode};
use serde::{Deserialize, Serialize};

use crate::sidecar::{Sidecar, SidecarError, SidecarFacts};
use crate::tx::{Transaction, TxOutcome};

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct BlockHeader {
    pub chain_id: ChainId,
    pub height: Height,
    pub parent: BlockHash,
    /// Milliseconds since the Unix epoch, strictly after the parent's and within the validators'
    /// clocks plus a small bound. The only clock execution sees.
    pub time: Timestamp,
    /// Merkle root over the encoded transactions.
    pub tx_root: Digest,
    /// Merkle root over the encoded outcomes, one per transaction.
    pub results_root: Digest,
    /// The state commitment after executing this block.
    pub state_root: Digest,
    /// The validator that proposed the block (index into the genesis validator set).
    pub proposer: u32,
}

impl BlockHeader {
    /// The block's identity: SHA-256 of the encoded header.
    pub fn digest(&self) -> BlockHash {
        BlockHash::new(medledger_crypto::sha256(&encode(self)))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<Transaction>,
    /// One entry per transaction: its sidecar bytes when it commits to one.
    pub sidecars: Vec<Option<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    #[error("block does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("block has {0} transactions, over the limit")]
    TooManyTxs(usize),
    #[error("block's transaction root does not match its transactions")]
    TxRoot,
    #[error("block carries {sidecars} sidecar slots for {txs} transactions")]
    SidecarCount { txs: usize, sidecars: usize },
    #[error("transaction {index}: {error}")]
    Sidecar { index: usize, error: SidecarError },
}

/// The Merkle root over a block's transactions.
pub fn tx_root(txs: &[Transaction]) -> Digest {
    let leaves: Vec<Vec<u8>> = txs.iter().map(Transaction::encode).collect();
    crate::merkle::root(&leaves)
}

/// The Merkle root over a block's outcomes.
pub fn results_root(results: &[TxOutcome]) -> Digest {
    let leaves: Vec<Vec<u8>> = results.iter().map(encode).collect();
    crate::merkle::root(&leaves)
}

impl Block {
    pub fn digest(&self) -> BlockHash {
        self.header.digest()
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a block from a peer or from disk and checks what needs no state: limits, the
    /// transaction root, and that every sidecar matches the digest its transaction commits to.
    pub fn decode(bytes: &[u8]) -> Result<Self, BlockError> {
        let block: Block = decode_canonical(bytes, BLOCK_BYTES_MAX)?;
        block.check_shape()?;
        Ok(block)
    }

    pub fn check_shape(&self) -> Result<(), BlockError> {
        if self.txs.len() > BLOCK_TXS_MAX {
            return Err(BlockError::TooManyTxs(self.txs.len()));
        }
        if self.sidecars.len() != self.txs.len() {
            return Err(BlockError::SidecarCount { txs: self.txs.len(), sidecars: self.sidecars.len() });
        }
        if tx_root(&self.txs) != self.header.tx_root {
            return Err(BlockError::TxRoot);
        }
        for (index, (tx, sidecar)) in self.txs.iter().zip(&self.sidecars).enumerate() {
            sidecar_facts(tx, sidecar.as_deref(), true).map_err(|error| BlockError::Sidecar { index, error })?;
        }
        Ok(())
    }

    /// Whether an erasure purged any of this block's sidecars. Such a block is history: it is
    /// replayed (its header certifies the state it leads to) but never accepted as a proposal.
    pub fn has_purged_sidecars(&self) -> bool {
        self.sidecars.iter().flatten().any(|bytes| crate::sidecar::parse_purged(bytes).is_some())
    }

    pub fn proposer_is(&self, proposer: u32) -> bool {
        self.header.proposer == proposer
    }

    pub fn signers(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.txs.iter().map(|tx| tx.body.signer)
    }
}

/// What execution needs of a transaction's sidecar slot: [`check_sidecar`]'s facts for a full
/// sidecar or, with `allow_purged` (replaying finalized history), the facts a purged slot kept,
/// which must name the digest the transaction commits to.
pub fn sidecar_facts(
    tx: &Transaction,
    sidecar: Option<&[u8]>,
    allow_purged: bool,
) -> Result<Option<SidecarFacts>, SidecarError> {
    if allow_purged
        && let Some(bytes) = sidecar
        && let Some(facts) = crate::sidecar::parse_purged(bytes)
    {
        return match tx.body.sidecar_digest {
            Some(digest) if digest == facts.digest => Ok(Some(facts)),
            _ => Err(SidecarError::DigestMismatch),
        };
    }
    Ok(check_sidecar(tx, sidecar)?.map(|s| s.facts()))
}

/// Checks that `sidecar` is present exactly when `tx` commits to one, matches that digest, decodes
/// within its limits and, for a record, carries an envelope for each named recipient and no other.
pub fn check_sidecar(tx: &Transaction, sidecar: Option<&[u8]>) -> Result<Option<Sidecar>, SidecarError> {
    if crate::sidecar::required(&tx.body.kind).is_some_and(|required| required != tx.body.sidecar_digest.is_some()) {
        return Err(SidecarError::Presence);
    }
    match (tx.body.sidecar_digest, sidecar) {
        (None, None) => Ok(None),
        (Some(digest), Some(bytes)) => {
            if Digest::new(medledger_crypto::sha256(bytes)) != digest {
                return Err(SidecarError::DigestMismatch);
            }
            let sidecar = Sidecar::decode(bytes)?;
            crate::sidecar::check_against(tx, &sidecar)?;
            Ok(Some(sidecar))
        }
        _ => Err(SidecarError::Presence),
    }
}
