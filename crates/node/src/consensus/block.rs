//! The ledger's [`Block`] as the engine sees it: a length-prefixed canonical encoding, a cached
//! digest, and the parent link and height the marshal orders blocks by.
//!
//! Invariant: `digest` is always `block.digest()` and `encoded` is always `block.encode()`; both are
//! computed once, when the value is built or decoded, so the engine can hash and re-send a block
//! without re-encoding it. Decoding goes through [`Block::decode`], which is bounded and canonical,
//! so `encode(decode(bytes)) == bytes` as the engine's `Block` trait requires.

use bytes::{BufMut, Bytes};
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::{BoundedBlock, Heightable, types::Height};
use commonware_cryptography::{Digestible, sha256};
use medledger_ledger::{Block, BlockError};
use medledger_types::limits::BLOCK_BYTES_MAX;

/// The engine's digest type: SHA-256, the same bytes as the ledger's [`medledger_types::BlockHash`].
pub type Digest = sha256::Digest;

/// Largest encoded [`ChainBlock`]: the block bound plus the widest length prefix (a `u32` varint).
pub const CHAIN_BLOCK_BYTES_MAX: usize = BLOCK_BYTES_MAX + 5;

/// A ledger block wrapped for the consensus engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock {
    block: Block,
    digest: Digest,
    encoded: Bytes,
}

/// A block that cannot be handed to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainBlockError {
    /// The encoded block is over [`BLOCK_BYTES_MAX`]; peers would refuse it.
    #[error("encoded block is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The block would not decode on a peer (non-canonical, or its shape is wrong).
    #[error("block would not decode on a peer: {0}")]
    Invalid(#[from] BlockError),
}

impl ChainBlock {
    /// Wraps a block built locally (a proposal or the genesis block), encoding and hashing it once.
    ///
    /// The encoding is decoded back as a peer would, so a block that peers would refuse (too
    /// large, or failing [`Block::decode`]'s shape checks) is caught here, before it is proposed.
    pub fn new(block: Block) -> Result<Self, ChainBlockError> {
        let encoded = block.encode();
        if encoded.len() > BLOCK_BYTES_MAX {
            return Err(ChainBlockError::TooLarge { len: encoded.len(), max: BLOCK_BYTES_MAX });
        }
        Block::decode(&encoded)?;
        let digest = sha256::Digest(block.digest().0);
        Ok(Self { block, digest, encoded: Bytes::from(encoded) })
    }

    /// The ledger block.
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The ledger block, by value.
    pub fn into_block(self) -> Block {
        self.block
    }
}

impl Write for ChainBlock {
    fn write(&self, buf: &mut impl BufMut) {
        self.encoded.len().write(buf);
        buf.put_slice(&self.encoded);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.encoded.len().encode_size() + self.encoded.len()
    }
}

impl Read for ChainBlock {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let len = usize::read_cfg(buf, &RangeCfg::new(..=BLOCK_BYTES_MAX))?;
        let encoded: Bytes = buf.try_take_owned(len).map_err(|_| CodecError::EndOfBuffer)?;
        let block = Block::decode(&encoded).map_err(|error| CodecError::Wrapped("ChainBlock", Box::new(error)))?;
        let digest = sha256::Digest(block.digest().0);
        Ok(Self { block, digest, encoded })
    }
}

impl Digestible for ChainBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        self.digest
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.block.header.height.get())
    }
}

impl commonware_consensus::Block for ChainBlock {
    fn parent(&self) -> Digest {
        sha256::Digest(self.block.header.parent.0)
    }
}

impl BoundedBlock for ChainBlock {
    fn max_encode_size(_: &()) -> usize {
        CHAIN_BLOCK_BYTES_MAX
    }
}

#[cfg(test)]
mod tests {
    use commonware_codec::{Decode as _, Encode as _};
    use commonware_consensus::Block as _;
    use medledger_ledger::BlockHeader;
    use medledger_types::{BlockHash, ChainId, Digest as LedgerDigest, Height as LedgerHeight, Timestamp};

    use super::*;

    fn sample(height: u64) -> Block {
        let empty = medledger_ledger::merkle::root::<Vec<u8>>(&[]);
        Block {
            header: BlockHeader {
                chain_id: ChainId::new([1; 32]),
                height: LedgerHeight::new(height),
                parent: BlockHash::new([2; 32]),
                time: Timestamp::new(1_700_000_000_000),
                tx_root: empty,
                results_root: empty,
                state_root: LedgerDigest::new([3; 32]),
                proposer: 2,
            },
            txs: vec![],
            sidecars: vec![],
        }
    }

    #[test]
    fn round_trips_canonically_with_the_ledger_digest() {
        let block = ChainBlock::new(sample(9)).expect("a valid block");
        let bytes = block.encode();
        assert_eq!(bytes.len(), block.encode_size());
        let decoded = ChainBlock::decode_cfg(bytes.clone(), &()).expect("decodes");
        assert_eq!(decoded, block);
        assert_eq!(decoded.encode(), bytes, "encode(decode(bytes)) == bytes");
        assert_eq!(block.digest().0, sample(9).digest().0);
        assert_eq!(block.parent().0, [2; 32]);
        assert_eq!(block.height().get(), 9);
    }

    #[test]
    fn length_prefix_over_the_block_limit_is_refused_before_reading() {
        let mut bytes = Vec::new();
        (BLOCK_BYTES_MAX + 1).write(&mut bytes);
        assert!(ChainBlock::decode_cfg(bytes, &()).is_err());
    }

    #[test]
    fn truncated_trailing_or_corrupt_bytes_are_refused() {
        let bytes = ChainBlock::new(sample(1)).expect("a valid block").encode().to_vec();
        assert!(ChainBlock::decode_cfg(bytes[..bytes.len() - 1].to_vec(), &()).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(ChainBlock::decode_cfg(trailing, &()).is_err());
        // The last byte is the top byte of the (u32) sidecar count: a huge count with nothing behind it.
        let mut corrupt = bytes;
        let last = corrupt.len() - 1;
        corrupt[last] = 1;
        assert!(ChainBlock::decode_cfg(corrupt, &()).is_err());
    }

    #[test]
    fn a_block_peers_would_refuse_is_not_wrapped() {
        let mut block = sample(1);
        block.header.tx_root = LedgerDigest::new([9; 32]);
        assert!(matches!(ChainBlock::new(block), Err(ChainBlockError::Invalid(_))));
    }
}
