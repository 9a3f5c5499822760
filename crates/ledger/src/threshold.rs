//! Threshold release on the ledger (DESIGN §6a): which validators hold shares of a record's `k_thr`,
//! what a record's sidecar must carry for them, and the bindings of the two wraps a share goes
//! through (author → validator in the sidecar, validator → reader on release).
//!
//! A network whose genesis names share keys requires every new record version to carry one share
//! per validator of the current set, `threshold = f + 1` of which recover `k_thr`; validators check
//! the shape (they cannot open the other validators' shares) and release their own share only to
//! the signer of an allowed RecordAccess they executed. When governance changes the validator set,
//! the share configuration changes with it, at the block the new set takes over: new versions are
//! dealt to the new set with its threshold. Records of a network without share keys keep the
//! direct suite.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::wrap::{EncryptionKey, Envelope, WrapContext};
use medledger_types::{ChainId, Commitment, MemberId, RecordId, encode};
use serde::{Deserialize, Serialize};

/// The share keys of the validator set of one share epoch. Kept in state.
///
/// Share `i` belongs to validator `validators[i]` (its stable index): the positions are the
/// shares' participant ids minus one, the indices say who holds them.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThresholdConfig {
    /// 0 for the genesis keys; each replaced share key and each new validator set is a new epoch.
    pub epoch: u32,
    /// Shares needed to recover `k_thr`: f + 1.
    pub threshold: u8,
    /// Emergency shares needed to recover `k_env` under break-glass: 2f + 1.
    pub emergency_threshold: u8,
    /// The stable indices of the validators holding the shares, ascending.
    pub validators: Vec<u32>,
    /// `share_keys[i]` is the share key of validator `validators[i]`.
    pub share_keys: Vec<EncryptionKey>,
}

impl ThresholdConfig {
    /// The configuration of `n` validators' share keys with n = 3f + 1: threshold f + 1, so f
    /// Byzantine validators cannot release a key alone; emergency threshold 2f + 1, so break-glass
    /// needs a quorum of validators to have executed the BreakGlass and the flagged read.
    /// `validators[i]` holds `share_keys[i]`.
    pub fn for_validators(epoch: u32, validators: Vec<u32>, share_keys: Vec<EncryptionKey>) -> Self {
        let f = share_keys.len().saturating_sub(1) / 3;
        let count = |t: usize| u8::try_from(t).unwrap_or(u8::MAX);
        Self { epoch, threshold: count(f + 1), emergency_threshold: count(2 * f + 1), validators, share_keys }
    }

    /// The genesis configuration: validators `0..n` with the genesis share keys.
    pub fn genesis(share_keys: Vec<EncryptionKey>) -> Self {
        let validators = (0..share_keys.len()).map(|i| u32::try_from(i).unwrap_or(u32::MAX)).collect();
        Self::for_validators(0, validators, share_keys)
    }

    /// The position (share index) of validator `index` in this set.
    pub fn position(&self, index: u32) -> Option<usize> {
        self.validators.iter().position(|v| *v == index)
    }
}

/// A share configuration waiting for its validator set: adopted with a governance change, it
/// becomes the configuration at `first_height`, the first block of the new set. Kept in state.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PendingThreshold {
    pub first_height: medledger_types::Height,
    /// The new set's configuration (its epoch is set when it takes over).
    pub config: ThresholdConfig,
}

/// One validator's shares, wrapped together for its share key: its share of `k_thr` followed by its
/// emergency share of `k_env` ([`SHARES_SECRET_BYTES`]).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WrappedShare {
    pub envelope: Envelope,
}

/// What a validator's share envelope wraps: the `k_thr` share, then the emergency `k_env` share.
pub const SHARES_SECRET_BYTES: usize = 2 * medledger_crypto::threshold::SHARE_BYTES;

/// The validators' shares of one record version's `k_thr`, carried in its sidecar.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThresholdShares {
    pub epoch: u32,
    pub threshold: u8,
    pub emergency_threshold: u8,
    /// The stable indices of the validators holding the shares (the epoch's set).
    pub validators: Vec<u32>,
    /// The Pedersen commitments of the `k_thr` sharing (`threshold` points): anyone checks a
    /// share against them ([`medledger_crypto::threshold::Verifier`]).
    pub verifier: Vec<Commitment>,
    /// The same of the emergency sharing of `k_env` (`emergency_threshold` points).
    pub emergency_verifier: Vec<Commitment>,
    /// Share `i` belongs to validator `validators[i]`.
    pub shares: Vec<WrappedShare>,
}

/// A verifier's points as the ledger carries them.
pub fn commitments(verifier: &medledger_crypto::threshold::Verifier) -> Vec<Commitment> {
    verifier.to_points().into_iter().map(Commitment::new).collect()
}

/// `points` as a verifier, if each is a Ristretto255 point (and there are 1..=255).
pub fn verifier(points: &[Commitment]) -> Option<medledger_crypto::threshold::Verifier> {
    let raw: Vec<[u8; 32]> = points.iter().map(|c| c.0).collect();
    medledger_crypto::threshold::Verifier::from_points(&raw).ok()
}

impl ThresholdShares {
    /// Shares dealt to `config`'s validators (`shares[i]` for `config.validators[i]`) under these
    /// commitments of `k_thr` and of the emergency `k_env`.
    pub fn for_config(
        config: &ThresholdConfig,
        verifier: &medledger_crypto::threshold::Verifier,
        emergency: &medledger_crypto::threshold::Verifier,
        shares: Vec<WrappedShare>,
    ) -> Self {
        Self {
            epoch: config.epoch,
            threshold: config.threshold,
            emergency_threshold: config.emergency_threshold,
            validators: config.validators.clone(),
            verifier: commitments(verifier),
            emergency_verifier: commitments(emergency),
            shares,
        }
    }

    /// What execution checks of these shares (all it needs once erasure purged them).
    pub fn shape(&self) -> SharesShape {
        SharesShape {
            epoch: self.epoch,
            threshold: self.threshold,
            emergency_threshold: self.emergency_threshold,
            validators: self.validators.clone(),
            suites: self.shares.iter().map(|s| s.envelope.suite.id()).collect(),
            verifier: self.verifier.clone(),
            emergency_verifier: self.emergency_verifier.clone(),
        }
    }

    /// The position of validator `index`'s share.
    pub fn position(&self, index: u32) -> Option<usize> {
        self.validators.iter().position(|v| *v == index)
    }

    /// Whether `opened` (what the share envelope at `position` unwrapped to) is the two shares
    /// this sharing's verifiers commit to for that position.
    pub fn opened_fits(&self, position: usize, opened: &[u8]) -> bool {
        self.shape().info().opened_fits(position, opened)
    }

    /// Whether the shares are well formed without state: one per validator, validators
    /// ascending, and each verifier as long as its threshold, of valid points.
    pub fn well_formed(&self, validators_max: usize) -> bool {
        self.shares.len() <= validators_max
            && self.validators.len() == self.shares.len()
            && self.validators.windows(2).all(|w| w[0] < w[1])
            && self.verifier.len() == usize::from(self.threshold)
            && self.emergency_verifier.len() == usize::from(self.emergency_threshold)
            && verifier(&self.verifier).is_some()
            && verifier(&self.emergency_verifier).is_some()
    }
}

/// The shape of a record version's shares: epoch, thresholds, each share's KEM suite (by id) and
/// the public commitments. The shares themselves are checked well-formed with the sidecar they
/// came in.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SharesShape {
    pub epoch: u32,
    pub threshold: u8,
    pub emergency_threshold: u8,
    pub validators: Vec<u32>,
    pub suites: Vec<u8>,
    pub verifier: Vec<Commitment>,
    pub emergency_verifier: Vec<Commitment>,
}

impl SharesShape {
    /// Whether the shares fit `config`: its epoch and thresholds, one share per validator, each
    /// wrapped with the suite of that validator's key.
    pub fn fits(&self, config: &ThresholdConfig) -> bool {
        self.epoch == config.epoch
            && self.threshold == config.threshold
            && self.emergency_threshold == config.emergency_threshold
            && self.validators == config.validators
            && self.suites.len() == config.share_keys.len()
            && self.suites.iter().zip(&config.share_keys).all(|(suite, key)| *suite == key.suite.id())
    }

    /// The public part a record entry keeps, as the author dealt it.
    pub fn info(&self) -> ThresholdInfo {
        ThresholdInfo {
            epoch: self.epoch,
            threshold: self.threshold,
            emergency_threshold: self.emergency_threshold,
            validators: self.validators.clone(),
            verifier: self.verifier.clone(),
            emergency_verifier: self.emergency_verifier.clone(),
            generation: 0,
        }
    }
}

/// What a record version's entry says about its threshold release: which validators hold its
/// shares, how many a reader needs, and the commitments each released share is checked against.
/// The author's dealing is generation 0; each re-sharing to a new validator set makes the next
/// generation, with the new set's holders and commitments (the shares of earlier generations are
/// useless with the new ones).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThresholdInfo {
    /// The share epoch whose binding the released shares carry.
    pub epoch: u32,
    pub threshold: u8,
    pub emergency_threshold: u8,
    /// The stable indices of the validators holding the shares, in share order.
    pub validators: Vec<u32>,
    pub verifier: Vec<Commitment>,
    pub emergency_verifier: Vec<Commitment>,
    pub generation: u32,
}

impl ThresholdInfo {
    /// Generation `generation` of a version's shares, held by `config`'s validators under these
    /// commitments.
    pub fn for_config(
        config: &ThresholdConfig,
        verifier: &medledger_crypto::threshold::Verifier,
        emergency: &medledger_crypto::threshold::Verifier,
        generation: u32,
    ) -> Self {
        Self {
            epoch: config.epoch,
            threshold: config.threshold,
            emergency_threshold: config.emergency_threshold,
            validators: config.validators.clone(),
            verifier: commitments(verifier),
            emergency_verifier: commitments(emergency),
            generation,
        }
    }

    /// The position of validator `index`'s share.
    pub fn position(&self, index: u32) -> Option<usize> {
        self.validators.iter().position(|v| *v == index)
    }

    /// Whether `opened` is the two shares (k_thr, emergency k_env) these commitments name for
    /// `position`.
    pub fn opened_fits(&self, position: usize, opened: &[u8]) -> bool {
        shares_fit(&self.verifier, &self.emergency_verifier, position, opened)
    }

    /// Whether these shares are held by the validators of `config` (else they wait for a
    /// re-sharing to that set).
    pub fn held_by(&self, config: &ThresholdConfig) -> bool {
        self.validators == config.validators
    }
}

/// How long after a dealing its new holders may still complain about it before it can be used
/// to finish a re-sharing (block time): a holder's janitor checks its sub-shares at commit, so
/// this is a margin for a holder that was restarting.
pub const RESHARE_COMPLAINT_WINDOW_MS: u64 = 10_000;

/// One old holder's dealing of its share of a record version to the current validator set, kept
/// in state until the re-sharing finishes. The sub-shares themselves ride in the dealing's sidecar.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Dealing {
    /// The validator set dealt to (a dealing for a set that is no longer current is void).
    pub validators: Vec<u32>,
    pub verifier: Vec<Commitment>,
    pub emergency_verifier: Vec<Commitment>,
    /// Block time of the dealing's commit.
    pub at: medledger_types::Timestamp,
}

/// A new holder's complaint that the sub-shares a dealing gave it do not open or verify; the
/// dealer answers by revealing them (checked against the dealing's commitments), or its dealing
/// cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Complaint {
    pub at: medledger_types::Timestamp,
    pub answered: bool,
}

/// Whether `opened` is the two sub-shares `dealing` commits to for the holder at `position`.
pub fn dealing_fits(dealing: &Dealing, position: usize, opened: &[u8]) -> bool {
    shares_fit(&dealing.verifier, &dealing.emergency_verifier, position, opened)
}

/// Whether `opened` is a `k_thr` share then an emergency `k_env` share of participant
/// `position + 1`, each verifying against its commitments.
fn shares_fit(verifier_points: &[Commitment], emergency_points: &[Commitment], position: usize, opened: &[u8]) -> bool {
    use medledger_crypto::threshold::{SHARE_BYTES, Share};
    let check = |bytes: &[u8], points: &[Commitment]| {
        Share::from_slice(bytes)
            .is_ok_and(|share| share.index() == position && verifier(points).is_some_and(|v| v.verify(&share)))
    };
    opened.len() == SHARES_SECRET_BYTES
        && check(&opened[..SHARE_BYTES], verifier_points)
        && check(&opened[SHARE_BYTES..], emergency_points)
}

/// The binding of the sub-shares validator `dealer` deals of its share of `record`/`version` to
/// the holder at `position` of the set with share epoch `epoch`.
pub fn reshare_context(
    chain_id: ChainId,
    record: RecordId,
    version: u32,
    epoch: u32,
    dealer: u32,
    position: u32,
) -> WrapContext {
    #[derive(BorshSerialize)]
    struct Subject {
        record: RecordId,
        version: u32,
        dealer: u32,
    }
    WrapContext {
        chain_id: *chain_id.as_bytes(),
        subject: tagged(b"medledger/reshare-subject/v1", &Subject { record, version, dealer }),
        version: u64::from(version),
        recipient: tagged(b"medledger/share-holder/v1", &ShareHolder::Validator { epoch, validator: position }),
    }
}

/// What a share is a share of, for the HPKE bindings.
#[derive(BorshSerialize)]
struct ShareSubject {
    record: RecordId,
    version: u32,
    epoch: u32,
    validator: u32,
}

/// Who a share is wrapped for.
#[derive(BorshSerialize)]
enum ShareHolder {
    Validator { epoch: u32, validator: u32 },
    Reader { member: MemberId },
}

fn tagged(tag: &[u8], value: &impl BorshSerialize) -> [u8; 32] {
    let mut bytes = tag.to_vec();
    bytes.extend_from_slice(&encode(value));
    medledger_crypto::sha256(&bytes)
}

fn context(chain_id: ChainId, subject: &ShareSubject, holder: &ShareHolder) -> WrapContext {
    WrapContext {
        chain_id: *chain_id.as_bytes(),
        subject: tagged(b"medledger/share-subject/v1", subject),
        version: u64::from(subject.version),
        recipient: tagged(b"medledger/share-holder/v1", holder),
    }
}

/// The binding of validator `validator`'s share of `record`/`version`, wrapped by the author for
/// that validator's share key of `epoch`.
pub fn share_context(chain_id: ChainId, record: RecordId, version: u32, epoch: u32, validator: u32) -> WrapContext {
    let subject = ShareSubject { record, version, epoch, validator };
    context(chain_id, &subject, &ShareHolder::Validator { epoch, validator })
}

/// The binding of the same share, released by the validator to `reader`.
pub fn release_context(
    chain_id: ChainId,
    record: RecordId,
    version: u32,
    epoch: u32,
    validator: u32,
    reader: MemberId,
) -> WrapContext {
    let subject = ShareSubject { record, version, epoch, validator };
    context(chain_id, &subject, &ShareHolder::Reader { member: reader })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_is_f_plus_one() {
        let key = medledger_crypto::wrap::generate(medledger_crypto::suite::KemSuite::X25519).encryption_key().clone();
        for (n, t, e) in [(1, 1, 1), (3, 1, 1), (4, 2, 3), (6, 2, 3), (7, 3, 5), (10, 4, 7)] {
            let config = ThresholdConfig::genesis(vec![key.clone(); n]);
            assert_eq!(config.validators.len(), n);
            assert_eq!((config.threshold, config.emergency_threshold), (t, e), "n = {n}");
        }
    }

    #[test]
    fn bindings_differ_by_validator_reader_and_direction() {
        let chain = ChainId::new([1; 32]);
        let record = RecordId::new([2; 16]);
        let a = share_context(chain, record, 1, 0, 0);
        assert_ne!(a, share_context(chain, record, 1, 0, 1));
        assert_ne!(a, share_context(chain, record, 2, 0, 0));
        assert_ne!(a, share_context(chain, record, 1, 1, 0));
        let reader = MemberId::new([3; 16]);
        let r = release_context(chain, record, 1, 0, 0, reader);
        assert_ne!(r, a);
        assert_ne!(r, release_context(chain, record, 1, 0, 0, MemberId::new([4; 16])));
    }
}
