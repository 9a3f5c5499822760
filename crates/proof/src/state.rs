//! State proofs and the certified state root they are checked against.

use medledger_ledger::api::StateEvidence;
use medledger_ledger::receipt::{EpochLink, ReceiptError};
use medledger_ledger::{BlockHeader, Genesis};
use medledger_types::{Digest, Height};

use crate::certificate::{namespace_for_chain, verify_certificate_in};

/// Checks a proof made by the validator's state database: the state with root `root` holds
/// `value` at `key` (a sparse Merkle proof of the Jellyfish Merkle tree, SHA-256, borsh-encoded).
pub fn verify_state_proof(root: &Digest, key: &[u8], value: &[u8], proof: &[u8]) -> bool {
    verify_state_proof_of(root, key, Some(value), proof)
}

/// [`verify_state_proof`], also of an absence: with `value` `None`, the state with root `root`
/// holds nothing at `key`.
pub fn verify_state_proof_of(root: &Digest, key: &[u8], value: Option<&[u8]>, proof: &[u8]) -> bool {
    let Ok(proof) = borsh::from_slice::<jmt::proof::SparseMerkleProof<sha2::Sha256>>(proof) else { return false };
    let key = jmt::KeyHash::with::<sha2::Sha256>(key);
    proof.verify(jmt::RootHash(*root.as_bytes()), key, value).is_ok()
}

/// The validators (Ed25519 public keys) of epoch `links.len()`, learned from `genesis`'s one link
/// at a time: each epoch's set is proved against the state of a block that the previous epoch's
/// validators certified.
pub fn validators_through(genesis: &Genesis, links: &[EpochLink]) -> Result<Vec<[u8; 32]>, ReceiptError> {
    let chain_id = genesis.chain_id();
    let namespace = namespace_for_chain(&chain_id);
    let mut keys: Vec<[u8; 32]> = genesis.validators.iter().map(|v| v.public_key.0).collect();
    for (epoch, link) in (1u64..).zip(links) {
        let claims = link.check(&chain_id, epoch)?;
        if !verify_certificate_in(&namespace, epoch - 1, &keys, claims.certified.0, &link.certificate) {
            return Err(ReceiptError::History);
        }
        let proved = claims
            .entries
            .iter()
            .zip(&link.proofs)
            .all(|((key, value), proof)| verify_state_proof(&claims.state_root, key, value, proof));
        if !proved {
            return Err(ReceiptError::History);
        }
        keys = link.validators.iter().map(|v| v.public_key.0).collect();
    }
    Ok(keys)
}

/// The state root of `header`, once `certificate` shows that a quorum of the validators of its
/// epoch (epoch `links.len()`, learned through `links` from genesis) finalized it.
pub fn certified_root(
    genesis: &Genesis,
    header: &BlockHeader,
    certificate: &[u8],
    links: &[EpochLink],
) -> Result<Digest, ReceiptError> {
    let chain_id = genesis.chain_id();
    if header.chain_id != chain_id {
        return Err(ReceiptError::WrongChain);
    }
    // A block of epoch e lies at or after the first block of epoch e.
    if links.last().is_some_and(|link| header.height < link.set.first_height) {
        return Err(ReceiptError::History);
    }
    let keys = validators_through(genesis, links)?;
    let epoch = links.len() as u64;
    if !verify_certificate_in(&namespace_for_chain(&chain_id), epoch, &keys, header.digest().0, certificate) {
        return Err(ReceiptError::Certificate);
    }
    Ok(header.state_root)
}

/// Why a [`StateEvidence`] is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("the evidence does not decode or is over its limits")]
    Malformed,
    #[error("the evidence's block is not certified: {0}")]
    Uncertified(#[from] ReceiptError),
    #[error("a state entry's proof does not check against the certified root")]
    Proof,
    #[error("the evidence is of block {height}, older than block {seen} this client has seen")]
    Stale { height: u64, seen: u64 },
    #[error("the evidence does not prove an entry it must")]
    NotProved,
}

/// The state entries of a checked [`StateEvidence`], each present or proved absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvedEntries {
    /// The certified block the entries are of.
    pub height: Height,
    entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl ProvedEntries {
    /// The certified value at `key` (`None`: proved absent), decoded; an error if the evidence
    /// proves nothing about `key` or holds a value that does not decode as a `T`.
    pub fn get<T: borsh::BorshDeserialize>(&self, key: &[u8]) -> Result<Option<T>, StateError> {
        let (_, value) = self.entries.iter().find(|(k, _)| k == key).ok_or(StateError::NotProved)?;
        value.as_deref().map(|v| borsh::from_slice(v).map_err(|_| StateError::Malformed)).transpose()
    }

    /// [`ProvedEntries::get`] of an entry that must be present.
    pub fn require<T: borsh::BorshDeserialize>(&self, key: &[u8]) -> Result<T, StateError> {
        self.get(key)?.ok_or(StateError::NotProved)
    }
}

/// Checks `text` (a [`StateEvidence`] in text form) against `genesis`: its block is certified by
/// a quorum of its epoch's validators, no older than block `seen` (the newest this client has
/// learned of, so that a validator cannot answer from a state before a revocation the client knows
/// of), and every entry's proof checks against its state root.
pub fn check_state(genesis: &Genesis, text: &str, seen: u64) -> Result<ProvedEntries, StateError> {
    let evidence = StateEvidence::from_text(text).ok_or(StateError::Malformed)?;
    let root = certified_root(genesis, &evidence.header, &evidence.certificate, &evidence.links)?;
    let height = evidence.header.height;
    if height.get() < seen {
        return Err(StateError::Stale { height: height.get(), seen });
    }
    let mut entries = Vec::with_capacity(evidence.entries.len());
    for e in evidence.entries {
        if !verify_state_proof_of(&root, &e.key, e.value.as_deref(), &e.proof) {
            return Err(StateError::Proof);
        }
        entries.push((e.key, e.value));
    }
    Ok(ProvedEntries { height, entries })
}
