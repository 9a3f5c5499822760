//! Consensus glue: runs the commonware Simplex BFT engine (Ed25519 votes, round-robin leaders) with
//! its marshal, which orders finalized blocks by height, and connects both to the node's
//! [`Ledger`].
//!
//! Data flow: the engine asks the leader's [`Ledger::propose`] for a block and every other
//! validator's [`Ledger::verify`] to check it; once a block is finalized, the marshal stores it and
//! the glue calls [`Ledger::finalized`] with the block and its finalization certificate, then
//! acknowledges it. The glue keeps these invariants:
//!
//! - A block is acknowledged to the marshal only after [`Ledger::finalized`] returned for it, so a
//!   crash at any point re-delivers every block the ledger may not have committed.
//! - Votes are journaled (and synced) before they are sent, so a restarted validator never signs
//!   a vote that conflicts with one it sent before the crash.
//! - The glue never invents a block: when the ledger has nothing to propose, the view is declined;
//!   it times out after [`Timeouts::leader`] and Simplex moves to the next leader without a block
//!   (so an idle network, even a single validator, runs about one empty view per leader timeout).
//!
//! Storage (all under the runtime's storage root, which [`tokio_runner`] sets to
//! [`ValidatorConfig::storage_dir`]): every partition starts with [`ValidatorConfig::partition_prefix`]
//! (`medledger-v{index}-{first 8 bytes of the validator key in hex}`), so several validators can
//! share one runtime's storage (simulations; several validators in one process). The tokio runtime
//! takes an exclusive lock (`.hold`) on its storage root, so separate processes need separate
//! `storage_dir`s. `{prefix}-votes` is the Simplex vote journal; `{prefix}-marshal-*` the
//! marshal's caches and delivery cursor; `{prefix}-finalizations-by-height-*` and
//! `{prefix}-finalized-blocks-*` the immutable archives of finalization certificates and finalized
//! blocks.
//!
//! The validator set changes by governance (DESIGN.md §5a.6): the ledger schedules each new set
//! as an epoch starting at a known height ([`medledger_ledger::governance`]); [`epochs`] places
//! heights in epochs for the marshal and gives each epoch's signing scheme; the orchestrator runs
//! one Simplex engine per epoch this validator belongs to, on per-epoch p2p subchannels, and
//! follows the chain without voting while it belongs to none. Epoch 0 (genesis) keeps the vote
//! journal `{prefix}-votes`; epoch `e` uses `{prefix}-votes-e{e}`.

mod app;
mod block;
mod commit;
mod engine;
pub mod epochs;
mod network;
mod orchestrator;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use medledger_ledger::Block;

pub use block::{CHAIN_BLOCK_BYTES_MAX, ChainBlock, ChainBlockError, Digest};
pub use engine::{Channels, run};
pub use epochs::{EpochSet, EpochValidator, Schedule};
pub use medledger_proof::certificate::{
    Finalization, PublicKey, Scheme, namespace_for_chain, verify_certificate, verify_certificate_in,
};
pub use network::{
    CHANNEL_BACKFILL, CHANNEL_BLOCKS, CHANNEL_CERTIFICATES, CHANNEL_RESOLVER, CHANNEL_VOTES, channel_quota,
    max_message_size, run_tokio, simulated_channels, tokio_runner,
};

/// What the consensus glue needs from the ledger application. Implemented by the node's app.
pub trait Ledger: Clone + Send + Sync + 'static {
    /// The genesis block (height 0); every validator derives the same one from genesis.json.
    fn genesis(&self) -> Block;

    /// The finalization certificate of the block this validator's state was synced to from a
    /// peer (see [`crate::sync`]), if it was in this run: the marshal starts from that block
    /// instead of replaying from its own progress.
    fn floor(&self) -> Option<Vec<u8>> {
        None
    }

    /// Builds a child of `parent` proposed by validator `proposer` at `now_ms` (runtime clock), or None
    /// when there is nothing to propose (the view then times out; no empty-block flood).
    /// May wait (bounded, well under the leader timeout) for work to arrive.
    ///
    /// The glue declines the view if this takes longer than [`Timeouts::propose_budget`], and
    /// drops a block that is not a child of `parent` proposed by `proposer`.
    ///
    /// `epoch` is the epoch of the engine asking: a ledger builds no block that its committed and
    /// speculative state place in another epoch (the last block of an epoch is the last this
    /// epoch's engine builds). While a change of the validator set is pending, the ledger builds
    /// a block even with nothing to propose, so the chain reaches the new epoch.
    fn propose(
        &self,
        parent: &Block,
        proposer: u32,
        epoch: u64,
        now_ms: u64,
    ) -> impl Future<Output = Option<Block>> + Send;

    /// Re-checks a block proposed by someone else on top of `parent` (time bounds, signatures, state root...).
    ///
    /// The glue has already checked that `block` extends `parent` (height, parent hash, chain id)
    /// and that its `proposer` led the view. Return `false` only for a block that is invalid for
    /// good; for one that may become valid (a time slightly ahead of this validator's clock), wait
    /// before answering rather than reject it.
    ///
    /// `epoch` is the epoch of the engine asking: a block its parent's state places in another
    /// epoch, or whose proposer is not in the epoch's set, is invalid.
    fn verify(&self, parent: &Block, block: &Block, epoch: u64, now_ms: u64) -> impl Future<Output = bool> + Send;

    /// Whether this ledger holds the state after the block with `digest` (committed, or executed
    /// speculatively by `propose` or `verify`). The glue re-verifies a block's unknown ancestors
    /// first (a validator that got a parent's notarization certificate without verifying the
    /// parent itself). A ledger that needs no parent state answers `true`.
    fn knows(&self, _digest: &[u8; 32]) -> bool {
        true
    }

    /// The validator sets the committed state records (every epoch, oldest first) and the
    /// committed height. Called at startup and after every committed block.
    fn schedule(&self) -> Schedule;

    /// The digest of the committed block at `height`, if committed (an epoch's engine starts on
    /// top of the previous epoch's last block).
    fn committed_digest(&self, height: u64) -> Option<[u8; 32]>;

    /// Executes and durably commits a finalized block, with the engine's finalization certificate
    /// (encoded bytes) when the marshal has it. Returns only after the commit is durable; the glue
    /// acknowledges the block to the marshal after this returns. Re-deliveries at or below the last
    /// committed height must be tolerated (the app skips them).
    ///
    /// The certificate checks offline with [`verify_certificate`]. It is `None` for a block
    /// finalized only through a descendant's certificate, or recovered after a crash before its
    /// own certificate was stored; the next certified descendant covers it through the hash chain
    /// (each header commits to its parent).
    fn finalized(&self, block: Block, certificate: Option<Vec<u8>>) -> impl Future<Output = ()> + Send;
}

/// One validator of the genesis validator set, in genesis order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorPeer {
    /// Ed25519 public key: the validator's network identity and vote-signing key.
    pub public_key: [u8; 32],
    /// Where the validator accepts p2p connections.
    pub address: SocketAddr,
}

/// Engine time-outs. The defaults suit validators on one LAN or a few regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long validators wait for the leader's proposal before voting to skip the view.
    pub leader: Duration,
    /// How long validators wait for a view to be notarized and certified before voting to skip it.
    /// Must exceed `leader`.
    pub certification: Duration,
    /// How often a validator stuck in a view re-broadcasts its vote to skip it. 2 s rather than
    /// the engine's usual 10 s: after a partition with no quorum on either side heals, the chain
    /// resumes within about this long (measured in simulation: 6-8 s with 10 s, 0.1-2.2 s with 2 s).
    pub nullify_retry: Duration,
    /// How long a request to a peer for a missing block or certificate may take.
    pub fetch: Duration,
    /// Longest [`Ledger::propose`] may take before the glue declines the view; keep it under
    /// `leader`.
    pub propose_budget: Duration,
}

impl Timeouts {
    /// Checks the relations the engine requires (it would panic on them otherwise).
    pub fn check(&self) -> Result<(), ConsensusError> {
        let problem = if self.leader.is_zero() {
            "the leader time-out must not be zero"
        } else if self.certification <= self.leader {
            "the certification time-out must exceed the leader time-out"
        } else if self.nullify_retry.is_zero() {
            "the nullify retry interval must not be zero"
        } else if self.fetch.is_zero() {
            "the fetch time-out must not be zero"
        } else if self.propose_budget.is_zero() || self.propose_budget >= self.leader {
            "the propose budget must be above zero and under the leader time-out"
        } else {
            return Ok(());
        };
        Err(ConsensusError::InvalidTimeouts(problem))
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            leader: Duration::from_secs(1),
            certification: Duration::from_secs(2),
            nullify_retry: Duration::from_secs(2),
            fetch: Duration::from_secs(2),
            propose_budget: Duration::from_millis(750),
        }
    }
}

/// Everything one validator needs to take part in consensus.
#[derive(Clone)]
pub struct ValidatorConfig {
    /// This validator's stable index (its `proposer` number in block headers): its place in
    /// `validators` for a genesis validator, a later number for one that joined by governance.
    pub index: u32,
    /// Ed25519 private key bytes (`commonware_cryptography::ed25519::PrivateKey`); must match
    /// `validators[index].public_key`.
    pub signing_seed: [u8; 32],
    /// The genesis validator set, in genesis order (later sets come from the ledger's schedule).
    pub validators: Vec<ValidatorPeer>,
    /// Address the p2p transport listens on.
    pub listen: SocketAddr,
    /// Directory holding the vote journal and the marshal's archives ([`run_tokio`] only; other
    /// runtimes bring their own storage).
    pub storage_dir: PathBuf,
    /// Signing namespace of every vote and certificate, derived from the chain id with
    /// [`namespace_for_chain`] so no vote is valid on another chain.
    pub namespace: Vec<u8>,
    /// Engine time-outs.
    pub timeouts: Timeouts,
    /// Finalized blocks the marshal keeps behind the committed tip, to serve peers that lag (a
    /// peer further behind installs a verified state instead, `medledger_node::sync`). Older
    /// blocks leave its archive, and with them the bytes of sidecars an erasure purged from the
    /// chain log.
    pub archive_retention: u64,
}

impl std::fmt::Debug for ValidatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorConfig")
            .field("index", &self.index)
            .field("signing_seed", &"<redacted>")
            .field("validators", &self.validators)
            .field("listen", &self.listen)
            .field("storage_dir", &self.storage_dir)
            .field("namespace", &hex::encode(&self.namespace))
            .field("timeouts", &self.timeouts)
            .field("archive_retention", &self.archive_retention)
            .finish()
    }
}

impl ValidatorConfig {
    /// The prefix of every storage partition this validator uses.
    pub fn partition_prefix(&self) -> String {
        let key = validator_public_key(&self.signing_seed);
        format!("medledger-v{}-{}", self.index, hex::encode(&key[..8]))
    }
}

/// The Ed25519 public key of a validator's signing seed, as listed in [`ValidatorPeer::public_key`].
pub fn validator_public_key(signing_seed: &[u8; 32]) -> [u8; 32] {
    use commonware_codec::{Copying, DecodeExt as _};
    use commonware_cryptography::Signer as _;
    let key = commonware_cryptography::ed25519::PrivateKey::decode(Copying(&signing_seed[..]))
        .expect("every 32-byte string is an Ed25519 seed");
    key.public_key().as_ref().try_into().expect("Ed25519 public keys are 32 bytes")
}

/// Why the consensus glue could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// The validator set is empty.
    #[error("the validator set is empty")]
    NoValidators,
    /// The ledger's floor certificate (after a state sync) does not decode.
    #[error("the synced state's finalization certificate does not decode")]
    InvalidFloor,
    /// The validator set is larger than the ledger allows.
    #[error("the validator set has {count} validators, over the limit of {max}")]
    TooManyValidators {
        /// Validators configured.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A configured public key is not a valid Ed25519 point.
    #[error("validator {index}'s public key is not a valid Ed25519 key")]
    InvalidPublicKey {
        /// Index of the offending validator.
        index: usize,
    },
    /// Two validators share a public key.
    #[error("the validator set lists a public key twice")]
    DuplicateValidator,
    /// The signing key is not the configured validator's key.
    #[error("the signing key does not belong to validator {index}")]
    KeyMismatch {
        /// The configured index.
        index: u32,
    },
    /// The ledger's genesis block is not a height-0 block with an all-zero parent.
    #[error("the genesis block must be at height 0 with an all-zero parent")]
    InvalidGenesis,
    /// The genesis block cannot be handed to the engine (too large, or it does not decode).
    #[error("the genesis block cannot be used: {0}")]
    UnusableGenesis(#[from] ChainBlockError),
    /// The time-outs do not fit together (see [`Timeouts::check`]).
    #[error("invalid time-outs: {0}")]
    InvalidTimeouts(&'static str),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// The p2p transport could not be configured.
    #[error("network: {0}")]
    Network(String),
}
