//! Re-sharing a record version's threshold shares to the current validator set (DESIGN §6a;
//! the protocol is Herzberg et al.'s share renewal with Pedersen commitments, complaints answered
//! in the open as in Gennaro et al.'s DKG; the arithmetic is in `medledger_crypto::threshold`).
//!
//! When governance changes the validator set, the shares of every record version dealt to an
//! earlier set are re-shared, one version at a time, in four kinds of step, each a validator's own
//! transaction signed with its consensus key:
//! 1. **Deal**: an old holder `i` deals its share afresh to the current set, wrapped for the
//!    current share keys. Execution checks that the dealing fits those keys and that the constant
//!    term of its commitments is the version's commitments evaluated at `i`: `i` cannot deal
//!    anything but its own committed share.
//! 2. **Complain**: a holder of the current set whose sub-shares from `i` do not open or verify
//!    says so.
//! 3. **Answer**: `i` reveals the sub-shares it dealt that holder; execution checks them against
//!    `i`'s commitments. A complaint left unanswered makes `i`'s dealing unusable. (What is revealed
//!    is what the complainer would have held; fewer than the threshold of any polynomial.)
//! 4. **Finish**: once as many dealings as the old threshold are at least
//!    [`RESHARE_COMPLAINT_WINDOW_MS`] old with every complaint about them answered, any validator
//!    of the current set names them. Execution combines their commitments (Lagrange weights over
//!    the dealers' old ids) into the version's new commitments and makes the current set its
//!    holders; each new holder combines its sub-shares from the same dealers the same way. The old
//!    shares are then useless with the new ones: a validator that left, with its old share and
//!    those of up to f current validators, learns nothing.

use medledger_crypto::threshold::{Verifier, combine_verifiers};
use medledger_types::{Commitment, Trailing, encode};

use super::Executor;
use crate::policy::Rejection;
use crate::sidecar::SidecarFacts;
use crate::state::{RecordEntry, StateView, WriteSet, keys, read};
use crate::threshold::{
    Complaint, Dealing, RESHARE_COMPLAINT_WINDOW_MS, ThresholdConfig, ThresholdInfo, dealing_fits, verifier,
};
use crate::tx::{Reshare, ReshareStep};

/// A holder's participant id: its position in its set, plus one.
fn share_id(position: usize) -> Result<u8, Rejection> {
    u8::try_from(position + 1).map_err(|_| Rejection::NotAShareholder)
}

/// Whether `new` starts with `old` evaluated at participant `id` (both valid commitments).
fn deals_own_share(old: &[Commitment], new: &[Commitment], id: u8) -> bool {
    let Some(old) = verifier(old) else { return false };
    old.evaluate(id).is_ok_and(|point| new.first().is_some_and(|first| first.0 == point))
}

impl<V: StateView + ?Sized> Executor<'_, V> {
    /// One re-sharing step of `r.validator` (see the module docs); the writes it makes.
    pub(super) fn reshare(&self, r: &Reshare, facts: Option<&SidecarFacts>) -> Result<WriteSet, Rejection> {
        let config: ThresholdConfig = read(&self.state, keys::THRESHOLD).ok_or(Rejection::NothingToReshare)?;
        let entry_key = keys::record_version(&r.record, r.version);
        let mut entry: RecordEntry = read(&self.state, &entry_key).ok_or(Rejection::NothingToReshare)?;
        let info = entry.threshold.0.clone().ok_or(Rejection::NothingToReshare)?;
        if info.held_by(&config) {
            return Err(Rejection::NothingToReshare);
        }
        let mut writes = WriteSet::new();
        match &r.step {
            ReshareStep::Deal { participant } => {
                let id = share_id(info.position(r.validator).ok_or(Rejection::NotAShareholder)?)?;
                if *participant != id {
                    return Err(Rejection::BadDealing);
                }
                let shape = facts.and_then(|f| f.shares.as_ref()).ok_or(Rejection::BadDealing)?;
                if !shape.fits(&config)
                    || !deals_own_share(&info.verifier, &shape.verifier, id)
                    || !deals_own_share(&info.emergency_verifier, &shape.emergency_verifier, id)
                {
                    return Err(Rejection::BadDealing);
                }
                let key = keys::reshare_dealing(&r.record, r.version, r.validator);
                if let Some(earlier) = read::<Dealing>(&self.state, &key) {
                    if earlier.validators == config.validators {
                        return Err(Rejection::ReshareStepRepeated);
                    }
                    // A dealing to a set that is no longer current: replaced, with its complaints.
                    self.forget_complaints(&mut writes, r, r.validator, &earlier);
                }
                let dealing = Dealing {
                    validators: config.validators.clone(),
                    verifier: shape.verifier.clone(),
                    emergency_verifier: shape.emergency_verifier.clone(),
                    at: self.ctx.time,
                };
                writes.insert(key, Some(encode(&dealing)));
            }
            ReshareStep::Complain { dealer } => {
                config.position(r.validator).ok_or(Rejection::NotAShareholder)?;
                self.live_dealing(r, *dealer, &config)?;
                let key = keys::reshare_complaint(&r.record, r.version, *dealer, r.validator);
                if read::<Complaint>(&self.state, &key).is_some() {
                    return Err(Rejection::ReshareStepRepeated);
                }
                writes.insert(key, Some(encode(&Complaint { at: self.ctx.time, answered: false })));
            }
            ReshareStep::Answer { holder, shares } => {
                let dealing = self.live_dealing(r, r.validator, &config)?;
                let key = keys::reshare_complaint(&r.record, r.version, r.validator, *holder);
                let mut complaint: Complaint = read(&self.state, &key).ok_or(Rejection::NoSuchDealing)?;
                if complaint.answered {
                    return Err(Rejection::ReshareStepRepeated);
                }
                let position = config.position(*holder).ok_or(Rejection::NotAShareholder)?;
                if !dealing_fits(&dealing, position, shares) {
                    return Err(Rejection::BadAnswer);
                }
                complaint.answered = true;
                writes.insert(key, Some(encode(&complaint)));
            }
            ReshareStep::Finish { dealers } => {
                config.position(r.validator).ok_or(Rejection::NotAShareholder)?;
                if dealers.len() != usize::from(info.threshold) || !dealers.windows(2).all(|w| w[0] < w[1]) {
                    return Err(Rejection::ReshareNotReady);
                }
                let mut chosen = Vec::with_capacity(dealers.len());
                for dealer in dealers {
                    let id = share_id(info.position(*dealer).ok_or(Rejection::NotAShareholder)?)?;
                    let dealing = self.live_dealing(r, *dealer, &config).map_err(|_| Rejection::ReshareNotReady)?;
                    let settled = dealing.at.get().saturating_add(RESHARE_COMPLAINT_WINDOW_MS) <= self.ctx.time.get();
                    let open_complaint = config.validators.iter().any(|holder| {
                        read::<Complaint>(&self.state, &keys::reshare_complaint(&r.record, r.version, *dealer, *holder))
                            .is_some_and(|c| !c.answered)
                    });
                    if !settled || open_complaint {
                        return Err(Rejection::ReshareNotReady);
                    }
                    let (Some(thr), Some(env)) = (verifier(&dealing.verifier), verifier(&dealing.emergency_verifier))
                    else {
                        return Err(Rejection::BadDealing);
                    };
                    chosen.push((id, thr, env));
                }
                let thr: Vec<(u8, &Verifier)> = chosen.iter().map(|(id, thr, _)| (*id, thr)).collect();
                let env: Vec<(u8, &Verifier)> = chosen.iter().map(|(id, _, env)| (*id, env)).collect();
                let (Ok(thr), Ok(env)) = (combine_verifiers(&thr), combine_verifiers(&env)) else {
                    return Err(Rejection::BadDealing);
                };
                let next = ThresholdInfo::for_config(&config, &thr, &env, info.generation.saturating_add(1));
                entry.threshold = Trailing(Some(next));
                writes.insert(entry_key, Some(encode(&entry)));
                let current_key = keys::record(&r.record);
                if let Some(mut current) = read::<RecordEntry>(&self.state, &current_key)
                    && current.version == r.version
                {
                    current.threshold = entry.threshold.clone();
                    writes.insert(current_key, Some(encode(&current)));
                }
                // Every dealing of the version, used or not, and the complaints about them.
                for dealer in &info.validators {
                    let key = keys::reshare_dealing(&r.record, r.version, *dealer);
                    if let Some(dealing) = read::<Dealing>(&self.state, &key) {
                        self.forget_complaints(&mut writes, r, *dealer, &dealing);
                        writes.insert(key, None);
                    }
                }
            }
        }
        Ok(writes)
    }

    /// `dealer`'s dealing of the version, if it was made to the current set.
    fn live_dealing(&self, r: &Reshare, dealer: u32, config: &ThresholdConfig) -> Result<Dealing, Rejection> {
        read::<Dealing>(&self.state, &keys::reshare_dealing(&r.record, r.version, dealer))
            .filter(|d| d.validators == config.validators)
            .ok_or(Rejection::NoSuchDealing)
    }

    /// Deletes the complaints about `dealer`'s `dealing` of the version.
    fn forget_complaints(&self, writes: &mut WriteSet, r: &Reshare, dealer: u32, dealing: &Dealing) {
        for holder in &dealing.validators {
            let key = keys::reshare_complaint(&r.record, r.version, dealer, *holder);
            if self.state.get(&key).is_some() {
                writes.insert(key, None);
            }
        }
    }
}
