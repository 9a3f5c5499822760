//! The reader's check of an access bundle: everything it uses to decrypt (the record entry with its
//! version, digest and threshold configuration, each envelope of the key path, the encrypted
//! metadata and the threshold commitments) is in the state a quorum certified.
//!
//! What is left to a single validator after this check is only what the reader checks itself:
//! the ciphertext (its SHA-256 must be the certified digest, and the payload's key commitment
//! must match the data key) and each released share (its commitment is in the certified sidecar).

use medledger_ledger::api::{AccessBundle, AccessEvidence, ThresholdPublic};
use medledger_ledger::state::{RecordEntry, keys};
use medledger_ledger::{Genesis, Sidecar, SidecarEnvelope};
use medledger_types::{Digest, Height, RecordId, encode};

use crate::state::{certified_root, verify_state_proof};

/// Why a bundle is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    #[error("the validator gave no evidence for the bundle")]
    Missing,
    #[error("the bundle's evidence does not decode or is over its limits")]
    Malformed,
    #[error("the bundle is for another record or version than the access")]
    OtherRecord,
    #[error("the bundle's block is not certified: {0}")]
    Uncertified(#[from] medledger_ledger::receipt::ReceiptError),
    #[error("the record entry is not the certified one")]
    Record,
    #[error("an envelope is not the certified one")]
    Envelope,
    #[error("a sidecar the certified state names is missing or altered")]
    Sidecar,
}

/// What a checked bundle gives the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub record: RecordEntry,
    /// The bundle's envelopes, each found in the certified sidecar its certified entry names.
    pub envelopes: Vec<SidecarEnvelope>,
    /// From the record's certified sidecar.
    pub metadata: Option<Vec<u8>>,
    /// From the record's certified sidecar.
    pub threshold: Option<ThresholdPublic>,
    /// The certified block the evidence is for.
    pub height: Height,
}

/// Checks `bundle` for version `version` of `record` against its evidence and `genesis` (the trust
/// anchor: its validators certify epoch 0, and each later epoch is learned through them).
pub fn check_access(
    genesis: &Genesis,
    bundle: &AccessBundle,
    record: RecordId,
    version: u32,
) -> Result<Verified, AccessError> {
    let text = bundle.evidence.as_deref().ok_or(AccessError::Missing)?;
    let evidence = AccessEvidence::from_text(text).ok_or(AccessError::Malformed)?;
    let entry = &bundle.record;
    if entry.record != record || entry.version != version {
        return Err(AccessError::OtherRecord);
    }
    if evidence.refs.len() != bundle.envelopes.len() || evidence.proofs.len() != evidence.refs.len() + 1 {
        return Err(AccessError::Malformed);
    }
    let root = certified_root(genesis, &evidence.header, &evidence.certificate, &evidence.links)?;
    // The entry of the version read (every readable version keeps its own, the current one too).
    if !verify_state_proof(&root, &keys::record_version(&record, version), &encode(entry), &evidence.proofs[0]) {
        return Err(AccessError::Record);
    }
    let sidecars: Vec<(Digest, Sidecar)> = evidence
        .sidecars
        .iter()
        .map(|bytes| Some((Digest::new(medledger_crypto::sha256(bytes)), Sidecar::decode(bytes).ok()?)))
        .collect::<Option<_>>()
        .ok_or(AccessError::Sidecar)?;
    let sidecar = |digest: &Digest| sidecars.iter().find(|(d, _)| d == digest).map(|(_, s)| s);
    for ((e, at), proof) in bundle.envelopes.iter().zip(&evidence.refs).zip(&evidence.proofs[1..]) {
        if !verify_state_proof(&root, &keys::envelope(&e.subject, &e.holder), &encode(at), proof) {
            return Err(AccessError::Envelope);
        }
        let carried = sidecar(&at.sidecar).ok_or(AccessError::Sidecar)?;
        if carried.envelope_for(e.holder, e.subject) != Some(&e.envelope) {
            return Err(AccessError::Envelope);
        }
    }
    let own = sidecar(&entry.sidecar).ok_or(AccessError::Sidecar)?;
    Ok(Verified {
        record: entry.clone(),
        envelopes: bundle.envelopes.clone(),
        metadata: own.metadata.clone(),
        threshold: entry.threshold.0.as_ref().map(ThresholdPublic::of),
        height: evidence.header.height,
    })
}
