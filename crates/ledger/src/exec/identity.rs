//! Identity and keys: enrolment, suspension, key rotation, custody release and key recovery.

use medledger_crypto::sign::VerifyingKey;
use medledger_crypto::wrap::EncryptionKey;
use medledger_types::limits::DISPLAY_NAME_BYTES_MAX;
use medledger_types::{MemberId, Role};

use super::run::{Applied, Run};
use crate::genesis::NetworkPolicy;
use crate::policy::Rejection;
use crate::sidecar::{KeyHolder, KeySubject};
use crate::state::{
    AuditAction, ChartEntry, CustodyReleaseEntry, KeyEvent, MemberEntry, MemberStatus, RecoveryEntry, StateView, keys,
    read,
};
use crate::tx::{CustodyRelease, Enroll, KeyChange, Recovery, RecoveryAction, RotateKeys, Suspend, claim_code_hash};

pub(super) fn key_event(reason: KeyChange) -> KeyEvent {
    match reason {
        KeyChange::Routine => KeyEvent::Rotated,
        KeyChange::RecoveryCode => KeyEvent::RestoredFromRecoveryCode,
        KeyChange::Claim { .. } => KeyEvent::CustodyClaimed,
    }
}

pub(super) fn recovery_event(action: &RecoveryAction) -> KeyEvent {
    match action {
        RecoveryAction::Request { .. } => KeyEvent::RecoveryRequested,
        RecoveryAction::Cancel => KeyEvent::RecoveryCancelled,
        RecoveryAction::Complete => KeyEvent::RecoveryCompleted,
    }
}

/// How long a patient has to claim an identity released from custody.
const CLAIM_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

impl Run<'_, '_> {
    /// Whether `id` is the signer id of a validator of any epoch (see `validator_member_id`).
    fn is_validator_id(&self, id: &MemberId) -> bool {
        let count: u32 = read(self.state, keys::VALIDATOR_COUNT).unwrap_or(0);
        let from_state =
            (0..count).filter_map(|i| read::<crate::governance::ValidatorEntry>(self.state, &keys::validator(i)));
        from_state
            .map(|v| v.public_key)
            .chain(self.ctx.validators.iter().copied())
            .any(|k| crate::tx::validator_member_id(&k) == *id)
    }

    pub(super) fn enroll(&mut self, e: &Enroll) -> Result<(), Rejection> {
        if read::<crate::state::OrgEntry>(self.state, &keys::org(&e.org)).is_none() {
            return Err(Rejection::UnknownOrg);
        }
        if self.signer.role != Role::Admin || self.signer.org != e.org {
            return Err(Rejection::NotAdminOfOrg);
        }
        if self.member(&e.member).is_some()
            || self.team(&e.member).is_some()
            || self.is_directory(&e.member)
            || self.is_validator_id(&e.member)
        {
            // A validator's id signs its share-key transactions: a member under it could use up
            // the validator's nonces.
            return Err(Rejection::MemberExists);
        }
        if self.state.get(&keys::signing_key(&e.signing_key)).is_some() {
            return Err(Rejection::KeyInUse);
        }
        let is_patient = e.role == Role::Patient;
        let name_ok = match &e.display_name {
            None => true,
            Some(name) => {
                !is_patient
                    && !name.is_empty()
                    && name.len() <= DISPLAY_NAME_BYTES_MAX
                    && !name.chars().any(char::is_control)
            }
        };
        let keys_ok = e.signing_key.check().is_ok()
            && e.encryption_key.check().is_ok()
            && e.chart_key.as_ref().is_none_or(|k| k.check().is_ok());
        if !name_ok || !keys_ok || is_patient != e.chart_key.is_some() || (e.custodial && !is_patient) {
            return Err(Rejection::InvalidEnrollment);
        }
        let entry = MemberEntry {
            id: e.member,
            org: e.org.clone(),
            role: e.role,
            signing_key: e.signing_key,
            encryption_key: e.encryption_key.clone(),
            display_name: e.display_name.clone(),
            status: MemberStatus::Active,
            enrolled_at: self.ctx.time,
            enrolled_by: Some(self.signer.id),
            custodial: e.custodial,
        };
        self.state.put(keys::member(&e.member), &entry);
        self.state.put(keys::signing_key(&e.signing_key), &e.member);
        if e.role != Role::Patient {
            // The staff directory reads this index: it never walks (or pages through) patients.
            self.state.put(keys::staff(e.role, &e.member), &());
        }
        if let Some(chart_key) = &e.chart_key {
            let chart = ChartEntry {
                patient: e.member,
                epoch: 0,
                public_key: chart_key.clone(),
                holders: vec![],
                delegates: vec![],
                teams: vec![],
                sensitive: Default::default(),
            };
            self.put_chart(&e.member, &chart);
            self.put_envelope(
                KeySubject::Chart { patient: e.member, epoch: 0 },
                KeyHolder::Member { member: e.member },
            );
        }
        Ok(())
    }

    pub(super) fn suspend(&mut self, s: &Suspend) -> Result<(), Rejection> {
        let mut member = self.member(&s.member).ok_or(Rejection::UnknownMember)?;
        if self.signer.role != Role::Admin || self.signer.org != member.org {
            return Err(Rejection::NotAdminOfOrg);
        }
        if s.member == self.signer.id {
            return Err(Rejection::SelfSuspension);
        }
        member.status = if s.suspended { MemberStatus::Suspended } else { MemberStatus::Active };
        self.state.put(keys::member(&s.member), &member);
        Ok(())
    }

    /// Puts `member`'s new keys in place of their current ones.
    pub(super) fn replace_keys(
        &mut self,
        mut member: MemberEntry,
        signing_key: VerifyingKey,
        encryption_key: EncryptionKey,
    ) -> Result<MemberEntry, Rejection> {
        if signing_key.check().is_err() || encryption_key.check().is_err() {
            return Err(Rejection::InvalidEnrollment);
        }
        if self.state.get(&keys::signing_key(&signing_key)).is_some() {
            return Err(Rejection::KeyInUse);
        }
        self.state.delete(keys::signing_key(&member.signing_key));
        self.state.put(keys::signing_key(&signing_key), &member.id);
        member.signing_key = signing_key;
        member.encryption_key = encryption_key;
        Ok(member)
    }

    /// The signer's own next keys (signed with the current ones). A patient brings the chart's
    /// current key wrapped for the new encryption key; a claim from custody brings the proof of
    /// the code and moves the chart to a new epoch, which the custodian never holds.
    pub(super) fn rotate_keys(&mut self, k: &RotateKeys) -> Result<Applied, Rejection> {
        let mut member = self.signer.clone();
        let chart = if member.role == Role::Patient { Some(self.chart(&member.id)?.1) } else { None };
        let claim = matches!(k.reason, KeyChange::Claim { .. });
        if claim != k.new_chart.is_some() {
            return Err(Rejection::NewChartRequired);
        }
        if let KeyChange::Claim { proof } = &k.reason {
            if !member.custodial {
                return Err(Rejection::NotCustodial);
            }
            let release: CustodyReleaseEntry =
                read(self.state, &keys::custody_release(&member.id)).ok_or(Rejection::NoCustodyRelease)?;
            if self.ctx.time >= release.expires_at {
                return Err(Rejection::ClaimExpired);
            }
            if claim_code_hash(&member.id, proof) != release.code_hash {
                return Err(Rejection::ClaimCodeMismatch);
            }
            self.state.delete(keys::custody_release(&member.id));
            member.custodial = false;
            // The custodian held the chart's keys so far: records from now on are wrapped for a
            // next epoch only the patient (with the new key) and those who keep holding it get.
            let chart = chart.as_ref().ok_or(Rejection::NotCustodial)?;
            self.next_chart_epoch(&member.id, chart, None, None, k.new_chart.as_ref(), false)?;
            let member = self.replace_keys(member, k.signing_key, k.encryption_key.clone())?;
            self.state.put(keys::member(&member.id), &member);
            return Ok(self.audit(member.id, AuditAction::Keys { event: key_event(k.reason) }, None));
        }
        let wrapped = chart.as_ref().map(|c| KeySubject::Chart { patient: member.id, epoch: c.epoch });
        let sidecar_ok = match (wrapped, self.sidecar) {
            (Some(subject), Some(s)) => {
                s.subjects == [subject] && s.holders == [KeyHolder::Member { member: member.id }]
            }
            (None, None) => true,
            _ => false,
        };
        if !sidecar_ok {
            return Err(Rejection::ChartKeyRequired);
        }
        let member = self.replace_keys(member, k.signing_key, k.encryption_key.clone())?;
        if let Some(subject) = wrapped {
            self.put_envelope(subject, KeyHolder::Member { member: member.id });
        }
        self.state.put(keys::member(&member.id), &member);
        Ok(self.audit(member.id, AuditAction::Keys { event: key_event(k.reason) }, None))
    }

    /// An admin of a custodial patient's organisation releases the identity for its claim.
    pub(super) fn custody_release(&mut self, c: &CustodyRelease) -> Result<Applied, Rejection> {
        let member = self.member(&c.member).ok_or(Rejection::UnknownMember)?;
        if self.signer.role != Role::Admin || self.signer.org != member.org {
            return Err(Rejection::NotAdminOfOrg);
        }
        if !member.custodial {
            return Err(Rejection::NotCustodial);
        }
        let expires_at = self.ctx.time.checked_add_ms(CLAIM_WINDOW_MS).ok_or(Rejection::BadExpiry)?;
        let entry =
            CustodyReleaseEntry { code_hash: c.code_hash, released_by: self.signer.id, expires_at, tx: self.tx_id };
        self.state.put(keys::custody_release(&c.member), &entry);
        Ok(self.audit(c.member, AuditAction::Keys { event: KeyEvent::CustodyReleased }, None))
    }

    /// An admin-approved recovery of lost keys: requested by an admin of the member's
    /// organisation, cancelled by the member, completed with the new keys after the delay.
    pub(super) fn recovery(&mut self, r: &Recovery) -> Result<Applied, Rejection> {
        let member = self.member(&r.member).ok_or(Rejection::UnknownMember)?;
        let pending: Option<RecoveryEntry> = read(self.state, &keys::recovery(&r.member));
        match &r.action {
            RecoveryAction::Request { signing_key, encryption_key } => {
                if self.signer.role != Role::Admin || self.signer.org != member.org || self.signer.id == member.id {
                    return Err(Rejection::NotAdminOfOrg);
                }
                if pending.is_some() {
                    return Err(Rejection::RecoveryPending);
                }
                if signing_key.check().is_err() || encryption_key.check().is_err() {
                    return Err(Rejection::InvalidEnrollment);
                }
                if self.state.get(&keys::signing_key(signing_key)).is_some() {
                    return Err(Rejection::KeyInUse);
                }
                let policy: NetworkPolicy = read(self.state, keys::POLICY).unwrap_or_default();
                let effective_at =
                    self.ctx.time.checked_add_ms(policy.recovery_delay_ms()).ok_or(Rejection::BadExpiry)?;
                let entry = RecoveryEntry {
                    signing_key: *signing_key,
                    encryption_key: encryption_key.clone(),
                    requested_by: self.signer.id,
                    requested_at: self.ctx.time,
                    effective_at,
                    tx: self.tx_id,
                };
                self.state.put(keys::recovery(&r.member), &entry);
            }
            RecoveryAction::Cancel => {
                if self.signer.id != r.member {
                    return Err(Rejection::NotYourKeys);
                }
                pending.ok_or(Rejection::NoRecoveryPending)?;
                self.state.delete(keys::recovery(&r.member));
            }
            RecoveryAction::Complete => {
                // The signature was checked against the requested keys.
                if self.signer.id != r.member {
                    return Err(Rejection::NotYourKeys);
                }
                let pending = pending.ok_or(Rejection::NoRecoveryPending)?;
                if self.ctx.time < pending.effective_at {
                    return Err(Rejection::RecoveryTooSoon);
                }
                self.state.delete(keys::recovery(&r.member));
                let member = self.replace_keys(member, pending.signing_key, pending.encryption_key)?;
                self.state.put(keys::member(&member.id), &member);
            }
        }
        Ok(self.audit(r.member, AuditAction::Keys { event: recovery_event(&r.action) }, None))
    }
}
