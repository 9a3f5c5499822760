//! Governance transactions: proposals, approvals, an organisation's join or leave (rules in [`crate::governance`]).

use medledger_types::Height;
use medledger_types::Role;
use medledger_types::limits::DISPLAY_NAME_BYTES_MAX;

use super::org_left;
use super::run::Run;
use crate::governance::{self, Proposal, ProposalEntry, ValidatorEntry, ValidatorEpoch};
use crate::policy::Rejection;
use crate::state::{OrgEntry, StateView, keys, read};
use crate::threshold::{PendingThreshold, ThresholdConfig};
use medledger_crypto::wrap::EncryptionKey;

impl Run<'_, '_> {
    /// An admin proposes or approves a governance change; the approval that brings it to 2/3 of
    /// the organisations adopts it (see [`crate::governance`]).
    pub(super) fn governance(&mut self, proposal: &Proposal) -> Result<(), Rejection> {
        let own_org: Option<OrgEntry> = read(self.state, &keys::org(&self.signer.org));
        if self.signer.role != Role::Admin || own_org.is_none_or(|o| o.left_at.is_some()) {
            return Err(Rejection::NotAnOrgAdmin);
        }
        let expires = proposal.expires_at();
        if expires <= self.ctx.time
            || expires.get() > self.ctx.time.get().saturating_add(governance::PROPOSAL_TTL_MS_MAX)
        {
            return Err(Rejection::ProposalExpired);
        }
        let id = proposal.id();
        let key = keys::proposal(&id);
        let mut entry: ProposalEntry = read(self.state, &key).unwrap_or(ProposalEntry {
            proposal: proposal.clone(),
            approvals: Vec::new(),
            adopted_at: None,
        });
        if entry.adopted_at.is_some() {
            return Err(Rejection::ProposalAdopted);
        }
        if entry.approvals.contains(&self.signer.org) {
            return Err(Rejection::AlreadyApproved);
        }
        let latest =
            governance::epoch(self.state, governance::latest_epoch(self.state)).ok_or(Rejection::ChangePending)?;
        if latest.first_height > self.ctx.height {
            return Err(Rejection::ChangePending);
        }
        // Checked at every approval, not only the adopting one: a proposal that cannot be adopted
        // collects no approvals.
        let change = self.validator_change(proposal, &latest)?;
        entry.approvals.push(self.signer.org.clone());
        let approving = entry.approvals.iter().filter(|org| !org_left(&*self.state, org)).count();
        let orgs: u64 = read(self.state, keys::ORG_COUNT).unwrap_or(0);
        if governance::is_supermajority(approving, usize::try_from(orgs).unwrap_or(usize::MAX)) {
            entry.adopted_at = Some(self.ctx.height);
            self.adopt(proposal, change, &latest, id, orgs);
        }
        self.state.put(key, &entry);
        Ok(())
    }

    /// The validator set after `proposal` (stable indices, ascending) and, for a join, the new
    /// validator's entry; or why the proposal cannot be adopted.
    pub(super) fn validator_change(
        &self,
        proposal: &Proposal,
        latest: &ValidatorEpoch,
    ) -> Result<(Vec<u32>, Option<ValidatorEntry>), Rejection> {
        let mut next = governance::members(&*self.state, latest);
        let mut joining = None;
        match proposal {
            Proposal::Join { org, validator, .. } => {
                let orgs: u64 = read(self.state, keys::ORG_COUNT).unwrap_or(0);
                let admin = &org.admin;
                // The organisation's directory id must be free (no member or care team took it
                // first), and its admin's id no directory's or team's.
                let directory = crate::tx::directory_id(&org.id);
                if self.state.get(&keys::org(&org.id)).is_some()
                    || self.member(&directory).is_some()
                    || self.team(&directory).is_some()
                    || self.is_directory(&admin.member)
                    || admin.member == directory
                    || self.team(&admin.member).is_some()
                    || self.member(&admin.member).is_some()
                    || self.state.get(&keys::signing_key(&admin.signing_key)).is_some()
                    || governance::validators(&*self.state).iter().any(|v| v.public_key == validator.public_key)
                {
                    return Err(Rejection::OrgExists);
                }
                let printable =
                    |s: &str| !s.is_empty() && s.len() <= DISPLAY_NAME_BYTES_MAX && !s.chars().any(char::is_control);
                let threshold = self.state.get(keys::THRESHOLD).is_some();
                if usize::try_from(orgs).unwrap_or(usize::MAX) >= governance::orgs_max()
                    || !printable(&org.name)
                    || admin.signing_key.check().is_err()
                    || admin.encryption_key.check().is_err()
                    || !governance::new_validator_is_valid(validator)
                    || threshold != validator.share_key.is_some()
                {
                    return Err(Rejection::InvalidProposal);
                }
                let index: u32 = read(self.state, keys::VALIDATOR_COUNT).unwrap_or(0);
                let entry = ValidatorEntry {
                    index,
                    org: org.id.clone(),
                    public_key: validator.public_key,
                    p2p_address: validator.p2p_address.clone(),
                    api_address: validator.api_address.clone(),
                    share_key: validator.share_key.clone(),
                };
                next.push(entry.clone());
                joining = Some(entry);
            }
            Proposal::Leave { org, .. } => {
                let entry: OrgEntry = read(self.state, &keys::org(org)).ok_or(Rejection::UnknownOrg)?;
                let orgs: u64 = read(self.state, keys::ORG_COUNT).unwrap_or(0);
                if entry.left_at.is_some() {
                    return Err(Rejection::UnknownOrg);
                }
                if orgs <= 1 {
                    return Err(Rejection::InvalidProposal);
                }
                next.retain(|v| &v.org != org);
            }
        }
        if !governance::set_is_valid(&next) {
            return Err(Rejection::InvalidProposal);
        }
        let mut indices: Vec<u32> = next.iter().map(|v| v.index).collect();
        indices.sort_unstable();
        Ok((indices, joining))
    }

    /// Carries out an adopted proposal: the organisation joins (with its admin, and its validator
    /// from the new epoch) or leaves, and the new epoch is scheduled.
    pub(super) fn adopt(
        &mut self,
        proposal: &Proposal,
        (validators, joining): (Vec<u32>, Option<ValidatorEntry>),
        latest: &ValidatorEpoch,
        id: medledger_types::Digest,
        orgs: u64,
    ) {
        match proposal {
            Proposal::Join { org, .. } => {
                let (entry, admin) = org.entries(self.ctx.time);
                self.state.put(keys::org(&org.id), &entry);
                self.state.put(keys::directory(&crate::tx::directory_id(&org.id)), &org.id);
                self.state.put(keys::member(&org.admin.member), &admin);
                self.state.put(keys::staff(Role::Admin, &org.admin.member), &());
                self.state.put(keys::signing_key(&org.admin.signing_key), &org.admin.member);
                self.state.put(keys::ORG_COUNT.to_vec(), &orgs.saturating_add(1));
                if let Some(validator) = joining {
                    self.state.put(keys::VALIDATOR_COUNT.to_vec(), &validator.index.saturating_add(1));
                    self.state.put(keys::validator(validator.index), &validator);
                }
            }
            Proposal::Leave { org, .. } => {
                if let Some(mut entry) = read::<OrgEntry>(self.state, &keys::org(org)) {
                    entry.left_at = Some(self.ctx.height);
                    self.state.put(keys::org(org), &entry);
                }
                self.state.put(keys::ORG_COUNT.to_vec(), &orgs.saturating_sub(1));
            }
        }
        let epoch = latest.epoch.saturating_add(1);
        let first_height = Height::new(self.ctx.height.get().saturating_add(governance::EPOCH_SWITCH_BLOCKS + 1));
        self.schedule_share_keys(&validators, first_height);
        let next = ValidatorEpoch { epoch, first_height, validators, proposal: Some(id) };
        self.state.put(keys::validator_epoch(epoch), &next);
        self.state.put(keys::EPOCH_LATEST.to_vec(), &epoch);
    }

    /// On a network with threshold release, the share configuration of the adopted set: each
    /// staying validator keeps its current share key, a joining one brings the key it proposed.
    /// It takes over at the set's first block (`Executor::switch_share_epoch`).
    fn schedule_share_keys(&mut self, validators: &[u32], first_height: Height) {
        let Some(current) = read::<ThresholdConfig>(self.state, keys::THRESHOLD) else { return };
        let entries = governance::validators(&*self.state);
        let keys: Option<Vec<EncryptionKey>> = validators
            .iter()
            .map(|index| match current.position(*index) {
                Some(p) => current.share_keys.get(p).cloned(),
                None => entries.iter().find(|v| v.index == *index).and_then(|v| v.share_key.clone()),
            })
            .collect();
        // Every validator of a network with threshold release has a share key (checked at join).
        if let Some(keys) = keys {
            let config = ThresholdConfig::for_validators(0, validators.to_vec(), keys);
            self.state.put(keys::THRESHOLD_NEXT.to_vec(), &PendingThreshold { first_height, config });
        }
    }
}
