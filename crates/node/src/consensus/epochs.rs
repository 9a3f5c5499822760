//! Validator-set epochs as the consensus glue sees them: the ledger's schedule (from its committed
//! state), the marshal's [`Epocher`] over it, and the per-epoch signing schemes.
//!
//! The ledger schedules epoch `e + 1` at `adoption + EPOCH_SWITCH_BLOCKS + 1` (see
//! [`medledger_ledger::governance`]). So once this validator has committed height `c`, every
//! boundary at or below `c + EPOCH_SWITCH_BLOCKS` is known to it: an adoption it has not yet
//! executed lies above `c` and so schedules its boundary above that horizon. [`ChainEpocher`]
//! places a height in an epoch only up to the horizon and answers `None` beyond it (the marshal
//! then ignores a delivery it cannot place, without blaming the peer), so every validator places
//! every height it places the same way, whatever its progress.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use commonware_codec::{Copying, DecodeExt as _};
use commonware_consensus::types::{Epoch, EpochInfo, Epocher, Height};
use commonware_cryptography::Signer as _;
use commonware_cryptography::certificate::{Provider, Scoped};
use commonware_cryptography::ed25519::PrivateKey;
use commonware_utils::ordered::Set;
use medledger_ledger::governance::EPOCH_SWITCH_BLOCKS;

use super::{PublicKey, Scheme};

/// One validator of an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochValidator {
    /// The validator's stable index (its `proposer` number in block headers).
    pub index: u32,
    /// Ed25519 consensus key.
    pub public_key: [u8; 32],
    /// Where it accepts p2p connections, when its listed address is an IP address and port.
    pub address: Option<SocketAddr>,
}

/// One epoch of the validator set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochSet {
    pub epoch: u64,
    /// Height of the epoch's first block (0 for epoch 0).
    pub first_height: u64,
    /// Its validators, by stable index.
    pub validators: Vec<EpochValidator>,
}

/// The validator sets the ledger's committed state records, and how far it has committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Height of the last committed block.
    pub committed: u64,
    /// Every epoch, oldest first, numbered from 0 without gaps.
    pub epochs: Vec<EpochSet>,
}

impl Schedule {
    /// Highest height this schedule places in an epoch.
    pub fn horizon(&self) -> u64 {
        self.committed.saturating_add(EPOCH_SWITCH_BLOCKS)
    }

    /// The epoch containing `height`, if the height is within the horizon.
    pub fn containing(&self, height: u64) -> Option<&EpochSet> {
        if height > self.horizon() {
            return None;
        }
        self.epochs.iter().rev().find(|e| e.first_height <= height)
    }

    pub fn epoch(&self, epoch: u64) -> Option<&EpochSet> {
        self.epochs.get(usize::try_from(epoch).ok()?).filter(|e| e.epoch == epoch)
    }

    /// The last height of `epoch`: the block before the next epoch's first, or, for the latest
    /// epoch, the end of time (until a change is scheduled).
    pub fn last(&self, epoch: u64) -> Option<u64> {
        self.epoch(epoch)?;
        match self.epoch(epoch.checked_add(1)?) {
            Some(next) => next.first_height.checked_sub(1),
            None => Some(OPEN_EPOCH_LAST),
        }
    }

    /// The epoch the next block (`committed + 1`) belongs to.
    pub fn current(&self) -> Option<&EpochSet> {
        self.containing(self.committed.saturating_add(1))
    }

    /// Every validator that ever took part, by stable index (latest address wins).
    pub fn validator(&self, key: &[u8; 32]) -> Option<&EpochValidator> {
        self.epochs.iter().rev().flat_map(|e| &e.validators).find(|v| &v.public_key == key)
    }
}

/// Validator-set changes a validator follows without a restart: its p2p layer is sized at start
/// for the largest set it knows plus this many validators.
pub const PEER_SET_GROWTH: usize = 4;

/// The most distinct identities one tracked peer set may hold (the local one included) for a
/// validator starting with `schedule`: the p2p layer sizes every channel's mailbox by it (times
/// each channel's burst), so it is kept near the sets' real size rather than at
/// [`VALIDATORS_MAX`](medledger_types::limits::VALIDATORS_MAX).
pub fn peer_set_limit(schedule: &Schedule) -> usize {
    let largest = schedule.epochs.iter().map(|e| e.validators.len()).max().unwrap_or(1);
    largest.saturating_add(PEER_SET_GROWTH).min(medledger_types::limits::VALIDATORS_MAX) + 1
}

/// The last height of an epoch with no successor scheduled. Not `u64::MAX`: the marshal computes
/// `last + 1` in places.
const OPEN_EPOCH_LAST: u64 = u64::MAX - 1;

/// The schedule shared by the glue's components; the committer refreshes it after every block.
#[derive(Clone, Default)]
pub(crate) struct Known(Arc<RwLock<Schedule>>);

impl Known {
    pub(crate) fn new(schedule: Schedule) -> Self {
        Self(Arc::new(RwLock::new(schedule)))
    }

    pub(crate) fn get(&self) -> std::sync::RwLockReadGuard<'_, Schedule> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(&self, schedule: Schedule) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = schedule;
    }
}

/// The marshal's view of epochs: the ledger's schedule up to the horizon.
#[derive(Clone)]
pub(crate) struct ChainEpocher(pub(crate) Known);

impl Epocher for ChainEpocher {
    fn containing(&self, height: Height) -> Option<EpochInfo> {
        let schedule = self.0.get();
        let set = schedule.containing(height.get())?;
        let last = schedule.last(set.epoch)?;
        Some(EpochInfo::new(Epoch::new(set.epoch), height, Height::new(set.first_height), Height::new(last)))
    }

    fn first(&self, epoch: Epoch) -> Option<Height> {
        self.0.get().epoch(epoch.get()).map(|e| Height::new(e.first_height))
    }

    fn last(&self, epoch: Epoch) -> Option<Height> {
        self.0.get().last(epoch.get()).map(Height::new)
    }
}

/// Decoded consensus keys of an epoch, sorted as the engine orders participants.
pub(crate) fn participants(set: &EpochSet) -> Option<Set<PublicKey>> {
    let keys: Option<Vec<PublicKey>> =
        set.validators.iter().map(|v| PublicKey::decode(Copying(&v.public_key[..])).ok()).collect();
    Set::try_from(keys?).ok()
}

/// Per-epoch signing schemes: a signer for the epochs this validator belongs to, a verifier for
/// the others.
#[derive(Clone)]
pub(crate) struct EpochSchemes {
    known: Known,
    namespace: Arc<Vec<u8>>,
    signer: PrivateKey,
    cache: Arc<Mutex<HashMap<u64, Scoped<Scheme>>>>,
}

impl EpochSchemes {
    pub(crate) fn new(known: Known, namespace: Vec<u8>, signer: PrivateKey) -> Self {
        Self { known, namespace: Arc::new(namespace), signer, cache: Default::default() }
    }
}

impl Provider for EpochSchemes {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, epoch: Epoch) -> Option<Scoped<Scheme>> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(scoped) = cache.get(&epoch.get()) {
            return Some(scoped.clone());
        }
        let participants = participants(self.known.get().epoch(epoch.get())?)?;
        let scoped = if participants.iter().any(|key| *key == self.signer.public_key()) {
            Scoped::scheme(Arc::new(Scheme::signer(&self.namespace, participants, self.signer.clone())?))
        } else {
            Scoped::verifier(Arc::new(Scheme::verifier(&self.namespace, participants)))
        };
        cache.insert(epoch.get(), scoped.clone());
        Some(scoped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(epoch: u64, first_height: u64, keys: &[u8]) -> EpochSet {
        EpochSet {
            epoch,
            first_height,
            validators: keys
                .iter()
                .map(|k| EpochValidator { index: u32::from(*k), public_key: [*k; 32], address: None })
                .collect(),
        }
    }

    #[test]
    fn heights_are_placed_only_up_to_the_horizon() {
        let mut schedule = Schedule { committed: 10, epochs: vec![set(0, 0, &[1, 2, 3, 4])] };
        let epocher = ChainEpocher(Known::new(schedule.clone()));
        assert_eq!(epocher.containing(Height::new(10 + EPOCH_SWITCH_BLOCKS)).map(|i| i.epoch()), Some(Epoch::zero()));
        assert_eq!(epocher.containing(Height::new(11 + EPOCH_SWITCH_BLOCKS)), None, "beyond the horizon");
        assert_eq!(epocher.last(Epoch::zero()), Some(Height::new(OPEN_EPOCH_LAST)), "no change scheduled");
        assert_eq!(epocher.last(Epoch::new(1)), None);

        // An adoption at height 12 schedules epoch 1 from 12 + EPOCH_SWITCH_BLOCKS + 1.
        let first = 12 + EPOCH_SWITCH_BLOCKS + 1;
        schedule.committed = 12;
        schedule.epochs.push(set(1, first, &[1, 2, 3, 4, 5]));
        epocher.0.set(schedule);
        assert_eq!(epocher.last(Epoch::zero()), Some(Height::new(first - 1)));
        let info = epocher.containing(Height::new(first - 1)).expect("within the horizon");
        assert_eq!((info.epoch(), info.first(), info.last()), (Epoch::zero(), Height::zero(), Height::new(first - 1)));
        assert_eq!(epocher.containing(Height::new(first)), None, "the new epoch starts beyond the horizon yet");
        let known = epocher.0.get().clone();
        epocher.0.set(Schedule { committed: first, ..known });
        let info = epocher.containing(Height::new(first)).expect("known");
        assert_eq!((info.epoch(), info.first()), (Epoch::new(1), Height::new(first)));
        assert_eq!(epocher.first(Epoch::new(1)), Some(Height::new(first)));
    }
}
