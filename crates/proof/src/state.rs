//! State proofs and the certified state root they are checked against.

use medledger_ledger::receipt::{EpochLink, ReceiptError};
use medledger_ledger::{BlockHeader, Genesis};
use medledger_types::Digest;

use crate::certificate::{namespace_for_chain, verify_certificate_in};

/// Checks a proof made by the validator's state database: the state with root `root` holds
/// `value` at `key` (a sparse Merkle proof of the Jellyfish Merkle tree, SHA-256, borsh-encoded).
pub fn verify_state_proof(root: &Digest, key: &[u8], value: &[u8], proof: &[u8]) -> bool {
    let Ok(proof) = borsh::from_slice::<jmt::proof::SparseMerkleProof<sha2::Sha256>>(proof) else { return false };
    let key = jmt::KeyHash::with::<sha2::Sha256>(key);
    proof.verify(jmt::RootHash(*root.as_bytes()), key, Some(value)).is_ok()
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
