//! Audit and emergency access: the audit trail, break-glass and its notes, legal holds, the review queue.

use medledger_crypto::payload::{self, DataKey};
use medledger_ledger::state::{AuditEvent, FlaggedEntry, MemberStatus};
use medledger_ledger::{BreakGlass, EmergencyReason, KeyHolder, KeySubject, LegalHold, Sidecar, TxKind};
use medledger_types::limits::{BREAK_GLASS_NOTE_BYTES_MAX, NOTE_READERS_MAX};
use medledger_types::{MemberId, RecordId, Role, TxId};

use super::{Committed, Session, all_pages};
use crate::error::{Result, SdkError};
use crate::home::{Contact, Identity};

impl Session {
    /// `patient`'s whole audit trail, every page (see [`Session::audit_page`] to stream it).
    pub async fn audit(&self, me: &Identity, patient: &Contact) -> Result<Vec<AuditEvent>> {
        all_pages(|after| async move { self.audit_page(me, patient, after.as_deref()).await }).await
    }

    /// One page of `patient`'s audit trail after the cursor `after` (none: from the start), and
    /// the cursor of the next page while there may be more.
    pub async fn audit_page(
        &self,
        me: &Identity,
        patient: &Contact,
        after: Option<&str>,
    ) -> Result<(Vec<AuditEvent>, Option<String>)> {
        self.client.audit_page(me, &patient.member, after).await
    }

    /// Breaks the glass on `patient`'s records for `duration_ms`: once committed, this member's
    /// reads for emergency treatment (ETREAT) are allowed and flagged until the window closes.
    pub async fn break_glass(
        &self,
        me: &Identity,
        patient: &Contact,
        reason: Option<EmergencyReason>,
        duration_ms: u64,
        note: Option<&str>,
    ) -> Result<Committed> {
        let kind = TxKind::BreakGlass(BreakGlass { patient: patient.member, reason, duration_ms });
        let sidecar = match note {
            Some(note) => Some(self.seal_note(me, patient, note).await?),
            None => None,
        };
        self.transact(me, kind, sidecar).await
    }

    /// A break-glass note encrypted under a fresh key, wrapped for the patient and every auditor.
    async fn seal_note(&self, me: &Identity, patient: &Contact, note: &str) -> Result<Sidecar> {
        if note.is_empty() || note.len() > BREAK_GLASS_NOTE_BYTES_MAX {
            return Err(SdkError::Usage(format!("a note is 1 to {BREAK_GLASS_NOTE_BYTES_MAX} bytes")));
        }
        let mut auditors = Vec::new();
        let mut after = None;
        loop {
            let page = self.client.staff(Role::Auditor, after.as_ref()).await?;
            auditors.extend(page.members.into_iter().filter(|m| m.status == MemberStatus::Active));
            match page.next.as_deref().and_then(MemberId::from_hex) {
                Some(next) if auditors.len() <= NOTE_READERS_MAX => after = Some(next),
                _ => break,
            }
        }
        if auditors.is_empty() || auditors.len() > NOTE_READERS_MAX {
            return Err(SdkError::Usage(format!("a note needs 1 to {NOTE_READERS_MAX} auditors on the network")));
        }
        let key = DataKey::generate();
        let id: [u8; 16] = medledger_crypto::random_bytes();
        let mut ciphertext = Vec::new();
        payload::encrypt(&key, &id, 0, note.as_bytes(), &mut ciphertext).map_err(SdkError::other)?;
        let subject = KeySubject::Note { id };
        let patient_key = self.proved_member(me, &patient.member).await?.encryption_key;
        let mut envelopes =
            vec![self.seal_for(&patient_key, KeyHolder::Member { member: patient.member }, subject, key.as_bytes())?];
        for auditor in &auditors {
            let holder = KeyHolder::Member { member: auditor.id };
            let auditor = self.proved_member(me, &auditor.id).await?;
            envelopes.push(self.seal_for(&auditor.encryption_key, holder, subject, key.as_bytes())?);
        }
        Ok(Sidecar { envelopes, metadata: Some(ciphertext), threshold: Default::default() })
    }

    /// The note of the break-glass `tx`, for the patient or an auditor it was written for.
    pub async fn break_glass_note(&self, me: &Identity, tx: &TxId) -> Result<String> {
        let note = self.client.break_glass_note(me, tx).await?;
        let KeySubject::Note { id } = note.envelope.subject else {
            return Err(SdkError::Integrity("a note's key is wrapped under another subject".into()));
        };
        let key = self.open_mine(me, &note.envelope)?;
        let key =
            DataKey::from_slice(&key).map_err(|_| SdkError::Integrity("a note key has the wrong length".into()))?;
        let mut text = Vec::new();
        payload::decrypt(&key, &id, 0, note.ciphertext.as_slice(), &mut text)
            .map_err(|_| SdkError::Integrity("the note does not decrypt".into()))?;
        String::from_utf8(text).map_err(|_| SdkError::Integrity("the note is not text".into()))
    }

    /// An auditor places (`hold`) or lifts a legal hold on a patient's chart or one record.
    pub async fn legal_hold(
        &self,
        me: &Identity,
        patient: &Contact,
        record: Option<RecordId>,
        hold: bool,
    ) -> Result<Committed> {
        self.transact(me, TxKind::LegalHold(LegalHold { patient: patient.member, record, hold }), None).await
    }

    /// The auditors' review queue (break-glass openings and attempts, emergency reads).
    pub async fn flagged(&self, me: &Identity) -> Result<Vec<FlaggedEntry>> {
        all_pages(|after| async move { self.flagged_page(me, after.as_deref()).await }).await
    }

    /// One page of the review queue after the cursor `after`, and the next cursor.
    pub async fn flagged_page(
        &self,
        me: &Identity,
        after: Option<&str>,
    ) -> Result<(Vec<FlaggedEntry>, Option<String>)> {
        self.client.flagged_page(me, after).await
    }
}
