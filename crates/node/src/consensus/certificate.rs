//! Offline check of a finalization certificate, for `medledger verify` and for clients that hold a
//! block and its certificate but no connection to a validator.

use commonware_codec::Decode as _;
use commonware_consensus::Epochable as _;
use commonware_consensus::types::Epoch;
use commonware_cryptography::certificate::Verifier as _;
use commonware_parallel::Sequential;
use commonware_utils::ordered::Set;
use commonware_utils::sys_rng;

use super::engine::public_keys;
use super::{Finalization, Scheme};

/// Checks offline that `certificate` (a finalization certificate as handed to
/// [`super::Ledger::finalized`]) finalizes the block whose digest is `block_digest`, signed by a
/// quorum of `validators` (their Ed25519 public keys, in any order) under the consensus
/// `namespace` (see [`super::namespace_for_chain`]).
///
/// Returns `false` for anything else: bytes that do not decode (or carry trailing data), a
/// certificate for another block or epoch, too few signers, an unknown signer or a bad signature.
pub fn verify_certificate(namespace: &[u8], validators: &[[u8; 32]], block_digest: [u8; 32], certificate: &[u8]) -> bool {
    let Ok(keys) = public_keys(validators.iter()) else {
        return false;
    };
    let Ok(participants) = Set::try_from(keys) else {
        return false;
    };
    let verifier = Scheme::verifier(namespace, participants);
    let Ok(finalization) = Finalization::decode_cfg(certificate.to_vec(), &verifier.certificate_codec_config()) else {
        return false;
    };
    if finalization.proposal.payload.0 != block_digest || finalization.epoch() != Epoch::zero() {
        return false;
    }
    finalization.verify(&mut sys_rng(), &verifier, &Sequential)
}
