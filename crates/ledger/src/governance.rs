//! Governance (DESIGN §3, §5a.6): an organisation joins or leaves the consortium by a proposal that
//! 2/3 of the current organisations approve, and the validator set changes at a new epoch.
//!
//! Every validator that ever took part has a stable index (the genesis validators 0..n, each joining
//! one the next number), so a block's `proposer` and a validator's share key mean the same thing
//! for the life of the chain. An epoch is a run of heights with one validator set:
//!
//! - epoch 0 starts at height 0 with the genesis validators;
//! - a proposal adopted in block `h` schedules epoch `e + 1` from height
//!   `h + EPOCH_SWITCH_BLOCKS + 1`; block `h + EPOCH_SWITCH_BLOCKS` is the last of epoch `e`.
//!
//! The gap lets every validator learn of the change from a *finalized* block well before the
//! boundary (the consensus glue places a height in an epoch only when it can be sure: no adoption
//! it has not yet executed can move a boundary below `committed + EPOCH_SWITCH_BLOCKS`), and gives
//! a joining validator time to connect. Validators propose empty blocks while a change is pending,
//! so an idle network still reaches the boundary. One change is pending at a time.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::sign::VerifyingKey;
use medledger_crypto::wrap::EncryptionKey;
use medledger_types::limits::{ORGS_MAX, VALIDATORS_MAX};
use medledger_types::{Digest, Height, OrgId, Timestamp, encode};
use serde::{Deserialize, Serialize};

use crate::genesis::GenesisOrg;
use crate::state::{StateView, keys, read};

/// Blocks between a proposal's adoption and the first block of the new epoch. Above the
/// consensus glue's repair window (32 heights), so a lagging validator never asks for a block it
/// cannot yet place in an epoch.
pub const EPOCH_SWITCH_BLOCKS: u64 = 64;
/// Longest a proposal stays open for approvals: 7 days.
pub const PROPOSAL_TTL_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Longest host:port of a validator's address.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// A validator, by its stable index.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ValidatorEntry {
    pub index: u32,
    pub org: OrgId,
    /// Consensus key (Ed25519): its network identity and vote-signing key.
    pub public_key: VerifyingKey,
    /// Where its peers reach it (`host:port`).
    pub p2p_address: String,
    /// Where clients reach its API (`host:port`).
    pub api_address: String,
    /// Its share key for threshold release, when the network has one.
    pub share_key: Option<EncryptionKey>,
}

/// One epoch of the validator set.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ValidatorEpoch {
    pub epoch: u64,
    /// The epoch's first block (0 for epoch 0: genesis).
    pub first_height: Height,
    /// Stable indices of its validators, ascending.
    pub validators: Vec<u32>,
    /// The adopted proposal that made it (none for epoch 0).
    pub proposal: Option<Digest>,
}

/// A proposal as the organisations sign it: the proposal itself is the ballot; an admin of each
/// approving organisation submits the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub enum Proposal {
    /// A new organisation joins with its admin and one validator.
    Join { org: Box<GenesisOrg>, validator: Box<NewValidator>, expires_at: Timestamp },
    /// An organisation leaves: its validators leave the set; its staff can sign nothing after
    /// (its patients keep their records and rights).
    Leave { org: OrgId, expires_at: Timestamp },
}

/// The validator a joining organisation brings.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct NewValidator {
    pub public_key: VerifyingKey,
    pub p2p_address: String,
    pub api_address: String,
    pub share_key: Option<EncryptionKey>,
}

impl Proposal {
    /// The proposal's id: what approvals are counted against.
    pub fn id(&self) -> Digest {
        let mut bytes = b"medledger/proposal/v1".to_vec();
        bytes.extend_from_slice(&encode(self));
        Digest::new(medledger_crypto::sha256(&bytes))
    }

    pub fn expires_at(&self) -> Timestamp {
        match self {
            Proposal::Join { expires_at, .. } | Proposal::Leave { expires_at, .. } => *expires_at,
        }
    }

    /// The organisation the proposal is about.
    pub fn org(&self) -> &OrgId {
        match self {
            Proposal::Join { org, .. } => &org.id,
            Proposal::Leave { org, .. } => org,
        }
    }
}

/// A proposal being approved.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ProposalEntry {
    pub proposal: Proposal,
    /// The organisations that approved it, in order of approval.
    pub approvals: Vec<OrgId>,
    /// The block that adopted it, once 2/3 of the organisations approved.
    pub adopted_at: Option<Height>,
}

/// Whether `approvals` organisations out of `orgs` reach two thirds.
pub fn is_supermajority(approvals: usize, orgs: usize) -> bool {
    orgs > 0 && approvals.saturating_mul(3) >= orgs.saturating_mul(2)
}

/// The latest epoch number (0 before any change).
pub fn latest_epoch(state: &(impl StateView + ?Sized)) -> u64 {
    read(state, keys::EPOCH_LATEST).unwrap_or(0)
}

/// Epoch `epoch`, if it exists.
pub fn epoch(state: &(impl StateView + ?Sized), epoch: u64) -> Option<ValidatorEpoch> {
    read(state, &keys::validator_epoch(epoch))
}

/// Every epoch, oldest first.
pub fn epochs(state: &(impl StateView + ?Sized)) -> Vec<ValidatorEpoch> {
    (0..=latest_epoch(state)).filter_map(|e| epoch(state, e)).collect()
}

/// Validator `index`, if it ever existed.
pub fn validator(state: &(impl StateView + ?Sized), index: u32) -> Option<ValidatorEntry> {
    read(state, &keys::validator(index))
}

/// The validators of `epoch`, in its order.
pub fn members(state: &(impl StateView + ?Sized), epoch: &ValidatorEpoch) -> Vec<ValidatorEntry> {
    epoch.validators.iter().filter_map(|index| validator(state, *index)).collect()
}

/// Every validator that ever took part, by index.
pub fn validators(state: &(impl StateView + ?Sized)) -> Vec<ValidatorEntry> {
    let count: u32 = read(state, keys::VALIDATOR_COUNT).unwrap_or(0);
    (0..count).filter_map(|index| validator(state, index)).collect()
}

/// The epoch containing `height`.
pub fn epoch_at(state: &(impl StateView + ?Sized), height: Height) -> Option<ValidatorEpoch> {
    (0..=latest_epoch(state)).rev().filter_map(|e| epoch(state, e)).find(|e| e.first_height <= height)
}

/// Checks a validator set: 1 to [`VALIDATORS_MAX`] validators with distinct keys and addresses,
/// and, in a consortium of 4 or more, no organisation holding more than f of them.
pub fn set_is_valid(set: &[ValidatorEntry]) -> bool {
    let n = set.len();
    if n == 0 || n > VALIDATORS_MAX {
        return false;
    }
    let keys: std::collections::BTreeSet<_> = set.iter().map(|v| v.public_key).collect();
    let addresses: std::collections::BTreeSet<_> = set.iter().map(|v| &v.p2p_address).collect();
    if keys.len() != n || addresses.len() != n {
        return false;
    }
    if n >= 4 {
        let f = (n - 1) / 3;
        let mut per_org = std::collections::BTreeMap::<&OrgId, usize>::new();
        for v in set {
            *per_org.entry(&v.org).or_default() += 1;
        }
        return per_org.values().all(|count| *count <= f);
    }
    true
}

/// Checks the shape of a joining validator (keys, address lengths).
pub fn new_validator_is_valid(v: &NewValidator) -> bool {
    let address_ok = |a: &str| !a.is_empty() && a.len() <= ADDRESS_BYTES_MAX && !a.chars().any(char::is_control);
    // Validators dial each other by IP address and port (as genesis lists them).
    v.public_key.check().is_ok()
        && address_ok(&v.p2p_address)
        && v.p2p_address.parse::<std::net::SocketAddr>().is_ok()
        && address_ok(&v.api_address)
        && v.share_key.as_ref().is_none_or(|k| k.check().is_ok())
}

/// How many organisations may take part at once.
pub const fn orgs_max() -> usize {
    ORGS_MAX
}
