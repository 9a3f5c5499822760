//! Finality certificates of the consensus engine (commonware's Simplex with Ed25519 votes), checked
//! offline: by `medledger verify` and receipts years later, by a syncing validator, and by every
//! reader who checks a validator's answer against the state a quorum certified.

use commonware_codec::{Copying, Decode as _, DecodeExt as _};
use commonware_consensus::Epochable as _;
use commonware_consensus::types::Epoch;
use commonware_cryptography::certificate::Verifier as _;
use commonware_parallel::Sequential;
use commonware_utils::ordered::Set;
use commonware_utils::sys_rng;
use medledger_types::ChainId;
use medledger_types::limits::VALIDATORS_MAX;

/// The engine's signing scheme: Ed25519 votes, certificates carrying each signer's signature.
pub type Scheme = commonware_consensus::simplex::scheme::ed25519::Scheme;
/// A validator's identity and vote-signing key.
pub type PublicKey = commonware_cryptography::ed25519::PublicKey;
/// The digest the engine orders (a block's hash).
pub type Digest = commonware_cryptography::sha256::Digest;
/// A finalization certificate as the engine produces it.
pub type Finalization = commonware_consensus::simplex::types::Finalization<Scheme, Digest>;

/// The consensus signing namespace of a chain.
pub fn namespace_for_chain(chain_id: &ChainId) -> Vec<u8> {
    let mut namespace = b"medledger-consensus-v1:".to_vec();
    namespace.extend_from_slice(chain_id.as_bytes());
    namespace
}

/// Why a list of validator keys cannot make a validator set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("the validator set is empty")]
    Empty,
    #[error("the validator set has {count} validators, over the limit of {VALIDATORS_MAX}")]
    TooMany { count: usize },
    #[error("validator {index}'s public key is not a valid Ed25519 key")]
    Invalid { index: usize },
}

/// Decodes raw Ed25519 public keys, in order, within the validator-set limit.
pub fn public_keys<'a>(raw: impl ExactSizeIterator<Item = &'a [u8; 32]>) -> Result<Vec<PublicKey>, KeysError> {
    let count = raw.len();
    if count == 0 {
        return Err(KeysError::Empty);
    }
    if count > VALIDATORS_MAX {
        return Err(KeysError::TooMany { count });
    }
    raw.enumerate()
        .map(|(index, bytes)| PublicKey::decode(Copying(&bytes[..])).map_err(|_| KeysError::Invalid { index }))
        .collect()
}

/// Checks offline that `certificate` (a finalization certificate as the engine stores it next to a
/// block) finalizes the block whose digest is `block_digest`, signed by a quorum of `validators`
/// (their Ed25519 public keys, in any order) under the consensus `namespace` (see
/// [`namespace_for_chain`]).
///
/// Returns `false` for anything else: bytes that do not decode (or carry trailing data), a
/// certificate for another block or epoch, too few signers, an unknown signer or a bad signature.
pub fn verify_certificate(
    namespace: &[u8],
    validators: &[[u8; 32]],
    block_digest: [u8; 32],
    certificate: &[u8],
) -> bool {
    verify_certificate_in(namespace, 0, validators, block_digest, certificate)
}

/// [`verify_certificate`] for a block of validator-set epoch `epoch`, whose validators are
/// `validators`: the certificate must name that epoch.
pub fn verify_certificate_in(
    namespace: &[u8],
    epoch: u64,
    validators: &[[u8; 32]],
    block_digest: [u8; 32],
    certificate: &[u8],
) -> bool {
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
    if finalization.proposal.payload.0 != block_digest || finalization.epoch() != Epoch::new(epoch) {
        return false;
    }
    finalization.verify(&mut sys_rng(), &verifier, &Sequential)
}

#[cfg(test)]
mod tests {
    use commonware_codec::Encode as _;
    use commonware_consensus::simplex::types::{Finalize, Proposal};
    use commonware_consensus::types::{Round, View};
    use commonware_cryptography::ed25519::PrivateKey;
    use commonware_utils::non_empty;

    use super::*;
    use commonware_cryptography::{Signer as _, sha256};

    fn validator_public_key(seed: &[u8; 32]) -> [u8; 32] {
        let key = PrivateKey::decode(Copying(&seed[..])).expect("a seed");
        key.public_key().as_ref().try_into().expect("32 bytes")
    }

    /// A finalization of view 7 (parent view 6) over digest `[9; 32]`, signed by the first three of
    /// four validators, as the engine assembles it.
    fn sample() -> (Vec<[u8; 32]>, Vec<u8>) {
        let seeds = [[1u8; 32], [2; 32], [3; 32], [4; 32]];
        let keys: Vec<[u8; 32]> = seeds.iter().map(validator_public_key).collect();
        let participants = Set::try_from(public_keys(keys.iter()).expect("valid keys")).expect("distinct");
        let schemes: Vec<Scheme> = seeds
            .iter()
            .map(|seed| {
                let key = PrivateKey::decode(Copying(&seed[..])).expect("a seed");
                Scheme::signer(b"pin", participants.clone(), key).expect("a participant")
            })
            .collect();
        let round = Round::new(Epoch::zero(), View::new(7));
        let proposal = Proposal::new(round, View::new(6), sha256::Digest([9; 32]));
        let finalizes: Vec<_> =
            schemes[..3].iter().map(|scheme| Finalize::sign(scheme, proposal.clone()).expect("a signer")).collect();
        let finalization =
            Finalization::from_finalizes(&schemes[0], non_empty![@&finalizes], &Sequential).expect("a quorum");
        (keys, finalization.encode().to_vec())
    }

    #[test]
    fn a_quorum_certificate_verifies_and_a_short_one_does_not() {
        let (keys, certificate) = sample();
        assert!(verify_certificate(b"pin", &keys, [9; 32], &certificate));
        assert!(!verify_certificate(b"pin", &keys[..3], [9; 32], &certificate));
        assert!(!verify_certificate(b"other", &keys, [9; 32], &certificate));
    }

    /// Certificates are stored next to blocks and checked by `medledger verify` years later: an
    /// engine upgrade that changes their encoding must be noticed.
    #[test]
    fn certificate_encoding_is_pinned() {
        let (_, certificate) = sample();
        assert_eq!(
            hex::encode(medledger_crypto::sha256(&certificate)),
            "385e914d7124a431d3e080c69ad692a2994499d468f95d8a241b4901288aef87"
        );
    }
}
