//! One transaction's run: the [`Run`] context, its dispatch by kind, and the helpers every domain shares.

use medledger_types::{MemberId, Role, TxId};

use super::{BlockContext, TxState, event};
use crate::policy::Rejection;
use crate::sidecar::{KeyHolder, KeySubject, SidecarFacts};
use crate::state::{
    AuditAction, AuditEvent, ChartEntry, Decision, EnvelopeRef, MemberEntry, RecordEntry, StateView, keys, read,
};
use crate::tx::TxKind;

/// One transaction's policy checks and writes. Every check comes before the first write.
pub(super) struct Run<'r, 's> {
    pub(super) state: &'r mut TxState<'s>,
    pub(super) ctx: BlockContext<'r>,
    pub(super) signer: &'r MemberEntry,
    pub(super) tx_id: TxId,
    pub(super) sidecar: Option<&'r SidecarFacts>,
    /// Set once the signer is found to act as this patient's delegate (their events name both).
    pub(super) on_behalf_of: Option<MemberId>,
}

/// An applied transaction may leave one audit event in a patient's trail.
pub(super) type Applied = Option<(MemberId, AuditEvent)>;

impl Run<'_, '_> {
    pub(super) fn kind(&mut self, kind: &TxKind) -> Result<Applied, Rejection> {
        match kind {
            TxKind::Enroll(e) => self.enroll(e).map(|()| None),
            TxKind::RegisterRecord(r) => self.register(r, false),
            TxKind::AppendVersion(r) => self.register(r, true),
            TxKind::Suspend(s) => self.suspend(s).map(|()| None),
            TxKind::Grant(g) => self.grant(g),
            TxKind::Revoke(r) => self.revoke(r),
            TxKind::RecordAccess(a) => self.access(a),
            TxKind::BreakGlass(b) => self.break_glass(b),
            TxKind::Erase(e) => self.erase(e),
            // Applied before any member is looked up (see `Executor::apply_share_key`).
            TxKind::ShareKey(_) => Err(Rejection::InvalidShareKey),
            TxKind::Reshare(_) => Err(Rejection::NotAShareholder),
            TxKind::LegalHold(h) => self.legal_hold(h),
            TxKind::ChartReview(c) => self.chart_review(c),
            TxKind::Delegate(d) => self.delegate(d),
            TxKind::TeamCreate(t) => self.team_create(t).map(|()| None),
            TxKind::TeamAdd(t) => self.team_add(t).map(|()| None),
            TxKind::TeamRemove(t) => self.team_remove(t).map(|()| None),
            TxKind::RotateKeys(k) => self.rotate_keys(k),
            TxKind::CustodyRelease(c) => self.custody_release(c),
            TxKind::Recovery(r) => self.recovery(r),
            TxKind::Governance(p) => self.governance(p).map(|()| None),
            TxKind::Rotate(r) => self.rotate(r),
        }
    }

    /// A live record; an erased one is told apart from one that never existed.
    pub(super) fn record(&self, id: &medledger_types::RecordId) -> Result<RecordEntry, Rejection> {
        read(self.state, &keys::record(id)).ok_or_else(|| {
            if self.state.get(&keys::erased(id)).is_some() { Rejection::RecordErased } else { Rejection::UnknownRecord }
        })
    }

    pub(super) fn member(&self, id: &MemberId) -> Option<MemberEntry> {
        read(self.state, &keys::member(id))
    }

    pub(super) fn chart(&self, patient: &MemberId) -> Result<(MemberEntry, ChartEntry), Rejection> {
        let entry = self.member(patient).filter(|m| m.role == Role::Patient).ok_or(Rejection::UnknownPatient)?;
        let chart = read(self.state, &keys::chart(patient)).ok_or(Rejection::UnknownPatient)?;
        Ok((entry, chart))
    }

    pub(super) fn audit(
        &self,
        patient: MemberId,
        action: AuditAction,
        purpose: Option<medledger_types::PurposeOfUse>,
    ) -> Applied {
        let event = event(self.signer, self.tx_id, self.ctx, action, purpose, Decision::Allowed, self.on_behalf_of);
        Some((patient, event))
    }

    /// Writes a patient's chart entry: who may list and read the chart changed, so its head
    /// moves too (a reader's client lists it again, or drops it: see [`keys::RECORDS_HEAD`]).
    pub(super) fn put_chart(&mut self, patient: &MemberId, chart: &ChartEntry) {
        self.state.put(keys::chart(patient), chart);
        self.moved_head(patient);
    }

    /// The chart's (or directory's) record list or readers changed at this height.
    pub(super) fn moved_head(&mut self, owner: &MemberId) {
        self.state.put(keys::records_head(owner), &self.ctx.height.get());
    }

    pub(super) fn put_envelope(&mut self, subject: KeySubject, holder: KeyHolder) {
        let sidecar = self.sidecar.map(|s| s.digest).expect("envelopes come from a checked sidecar");
        self.state.put(keys::envelope(&subject, &holder), &EnvelopeRef { sidecar, tx: self.tx_id });
        if let KeyHolder::Team { team, epoch } = holder {
            self.state.put(keys::team_envelope(&subject, &team), &epoch);
        }
    }

    /// A patient acting on their own chart.
    pub(super) fn require_patient(&self, patient: &MemberId) -> Result<(), Rejection> {
        if self.signer.role == Role::Admin {
            return Err(Rejection::AdminHasNoClinicalAccess);
        }
        if self.signer.id != *patient || self.signer.role != Role::Patient {
            return Err(Rejection::NotThePatient);
        }
        Ok(())
    }

    /// The patient, or one of the patient's delegates acting for them (then noted for the audit).
    pub(super) fn require_patient_or_delegate(&mut self, patient: &MemberId) -> Result<(), Rejection> {
        match self.require_patient(patient) {
            Err(Rejection::NotThePatient) if self.is_delegate_of(patient) => {
                self.on_behalf_of = Some(*patient);
                Ok(())
            }
            other => other,
        }
    }

    pub(super) fn is_delegate_of(&self, patient: &MemberId) -> bool {
        self.signer.role == Role::Patient
            && read::<ChartEntry>(self.state, &keys::chart(patient)).is_some_and(|c| c.is_delegate(&self.signer.id))
    }
}
