//! Records: registering and appending versions, rotation, reads, erasure and legal holds.

use medledger_types::limits::RECORD_CIPHERTEXT_BYTES_MAX;
use medledger_types::{MemberId, PurposeOfUse, Role, Timestamp};

use super::PRESENT;
use super::run::{Applied, Run};
use crate::policy::Rejection;
use crate::sidecar::{KeyHolder, KeySubject};
use crate::state::{
    AccessBasis, AuditAction, BreakGlassEntry, ChartEntry, CiphertextOwner, ErasedEntry, LegalHoldEntry,
    RESTRICTED_CHART_EPOCH, RecordEntry, StateView, keys, read,
};
use crate::threshold::ThresholdConfig;
use crate::tx::{
    CHART_REVIEW_WINDOW_MS, ChartReview, Erase, GrantScope, LegalHold, RecordAccess, RegisterRecord, Rotate,
};

impl Run<'_, '_> {
    /// Version 1 of a new record, or (`append`) the next version of an existing one. Both need the
    /// same right: the patient, or a doctor holding the patient's live write grant.
    pub(super) fn register(&mut self, r: &RegisterRecord, append: bool) -> Result<Applied, Rejection> {
        if self.is_directory(&r.patient) {
            return self.register_in_directory(r, append);
        }
        let (_, chart) = self.chart(&r.patient)?;
        if self.signer.id != r.patient {
            match self.signer.role {
                Role::Admin => return Err(Rejection::AdminHasNoClinicalAccess),
                Role::Doctor => match self.grant_entry(&r.patient, &self.signer.id, &GrantScope::All) {
                    Some(g) if g.write && g.is_live(self.ctx.time) => {}
                    Some(g) if g.write => return Err(Rejection::GrantExpired),
                    _ => return Err(Rejection::NoWriteGrant),
                },
                _ => return Err(Rejection::NotAllowedToWrite),
            }
        } else if self.signer.role != Role::Patient {
            return Err(Rejection::NotAllowedToWrite);
        }
        let previous = self.check_version(r, append)?;
        let chart_holder = KeyHolder::Chart { patient: r.patient, epoch: chart.epoch };
        let author_holder = KeyHolder::Member { member: self.signer.id };
        for holder in &r.recipients {
            match holder {
                KeyHolder::Member { member } => {
                    if self.member(member).is_none() {
                        return Err(Rejection::UnknownRecipient);
                    }
                }
                KeyHolder::Chart { patient, epoch } => {
                    if *patient != r.patient {
                        return Err(Rejection::UnknownRecipient);
                    }
                    if *epoch != chart.epoch {
                        return Err(Rejection::StaleChartEpoch);
                    }
                }
                KeyHolder::Team { team, epoch } => match self.team(team) {
                    None => return Err(Rejection::UnknownRecipient),
                    Some(t) if t.epoch != *epoch => return Err(Rejection::StaleTeamEpoch),
                    Some(_) => {}
                },
            }
        }
        // Not wrapped for the chart key: a record outside chart-wide grants (sensitive). Wrapped
        // for members only: the patient, the author, every live grantee of sensitive records.
        let restricted = !r.recipients.contains(&chart_holder);
        if let Some(p) = previous.as_ref().filter(|p| p.chart_epoch == RESTRICTED_CHART_EPOCH) {
            // A sensitive record's next version (an update, a rotation) comes from one who reads
            // it, and stays sensitive unless the patient lifts it.
            let me = self.signer.id;
            let subject = KeySubject::Record { record: p.record, version: p.version };
            let enveloped = self.state.get(&keys::envelope(&subject, &KeyHolder::Member { member: me })).is_some();
            let live =
                |scope: GrantScope| self.grant_entry(&r.patient, &me, &scope).is_some_and(|g| g.is_live(self.ctx.time));
            // Authorship reads while it lasts (as in `access`).
            let author = p.author == me
                && self.state.get(&keys::author_revoked(&p.record, &me)).is_none()
                && self.state.get(&keys::authorship_ended(&r.patient, &me)).is_none();
            let reads_it = me == r.patient
                || author
                || (enveloped && (live(GrantScope::Sensitive) || live(GrantScope::Record(p.record))));
            if !reads_it {
                return Err(Rejection::AccessDenied);
            }
            if !restricted && self.signer.id != r.patient {
                return Err(Rejection::RestrictedRecipients);
            }
        }
        if restricted {
            if r.recipients.iter().any(|h| !matches!(h, KeyHolder::Member { .. })) {
                return Err(Rejection::RestrictedRecipients);
            }
            let mut required = vec![KeyHolder::Member { member: r.patient }, author_holder];
            required.extend(self.sensitive_readers(&chart).into_iter().map(|member| KeyHolder::Member { member }));
            if required.iter().any(|h| !r.recipients.contains(h)) {
                return Err(Rejection::RecipientsMissing);
            }
            return self.store_version(r, previous.is_none(), RESTRICTED_CHART_EPOCH);
        }
        if !r.recipients.contains(&author_holder) {
            return Err(Rejection::RecipientsMissing);
        }
        // Teams with a live --all grant read new records through their own current keys.
        let teams = self.chart_teams(&chart);
        if teams.iter().any(|t| !r.recipients.contains(&KeyHolder::Team { team: t.team, epoch: t.epoch })) {
            return Err(Rejection::RecipientsMissing);
        }
        self.store_version(r, previous.is_none(), chart.epoch)
    }

    /// The live grantees of `chart`'s records outside chart-wide grants.
    fn sensitive_readers(&self, chart: &ChartEntry) -> Vec<MemberId> {
        let now = self.ctx.time;
        let listed = chart.sensitive.0.as_deref().unwrap_or_default();
        listed
            .iter()
            .copied()
            .filter(|m| self.grant_entry(&chart.patient, m, &GrantScope::Sensitive).is_some_and(|g| g.is_live(now)))
            .collect()
    }

    /// A directory record (see [`crate::tx::directory_id`]): written, and appended to, by active
    /// staff of the directory's organisation, its data key wrapped for the directory's key and
    /// the author; no chart, so no chart key, teams or grants.
    fn register_in_directory(&mut self, r: &RegisterRecord, append: bool) -> Result<Applied, Rejection> {
        if !self.is_directory_staff(&r.patient) {
            return Err(Rejection::NotDirectoryStaff);
        }
        let directory = self.team(&r.patient).ok_or(Rejection::UnknownTeam)?;
        let previous = self.check_version(r, append)?;
        let holders =
            [KeyHolder::Team { team: r.patient, epoch: directory.epoch }, KeyHolder::Member { member: self.signer.id }];
        if r.recipients.len() != holders.len() || holders.iter().any(|h| !r.recipients.contains(h)) {
            return Err(Rejection::RecipientsMissing);
        }
        self.store_version(r, previous.is_none(), 0)
    }

    /// The checks every new version passes, whoever owns it: not erased, the right version after
    /// the previous one (returned), within the limits, a ciphertext no version owns yet.
    fn check_version(&self, r: &RegisterRecord, append: bool) -> Result<Option<RecordEntry>, Rejection> {
        if self.state.get(&keys::erased(&r.record)).is_some() {
            return Err(Rejection::RecordErased);
        }
        let previous: Option<RecordEntry> = read(self.state, &keys::record(&r.record));
        match (&previous, append) {
            (Some(_), false) => return Err(Rejection::RecordExists),
            (None, true) => return Err(Rejection::UnknownRecord),
            (Some(p), true) if p.patient != r.patient => return Err(Rejection::WrongPatient),
            (Some(p), true) if Some(r.version) != p.version.checked_add(1) => {
                return Err(Rejection::VersionMismatch);
            }
            (None, false) if r.version != 1 => return Err(Rejection::VersionMismatch),
            _ => {}
        }
        if r.version > crate::policy::RECORD_VERSIONS_MAX {
            return Err(Rejection::TooManyVersions);
        }
        if r.size_bytes > RECORD_CIPHERTEXT_BYTES_MAX {
            return Err(Rejection::TooLarge);
        }
        // A ciphertext belongs to exactly one record version, for good (erased ones included): no
        // writer can name another's ciphertext and have it deleted by erasing or rotating their own.
        if self.state.get(&keys::ciphertext(&r.digest)).is_some() {
            return Err(Rejection::DigestInUse);
        }
        Ok(previous)
    }

    /// Stores a checked version: its entry, its ciphertext's owner, its envelopes, the write event.
    fn store_version(&mut self, r: &RegisterRecord, first: bool, chart_epoch: u32) -> Result<Applied, Rejection> {
        let sidecar = self.sidecar.map(|s| s.digest).ok_or(Rejection::EnvelopeMissing)?;
        let config: Option<ThresholdConfig> = read(self.state, keys::THRESHOLD);
        let threshold = match (&config, self.sidecar.and_then(|s| s.shares.as_ref())) {
            (Some(config), Some(shares)) if shares.fits(config) => Some(shares.info()),
            (None, None) => None,
            _ => return Err(Rejection::ThresholdShares),
        };
        let entry = RecordEntry {
            record: r.record,
            patient: r.patient,
            author: self.signer.id,
            version: r.version,
            digest: r.digest,
            size_bytes: r.size_bytes,
            sidecar,
            chart_epoch,
            created_at: self.ctx.time,
            created_height: self.ctx.height,
            threshold: threshold.into(),
        };
        self.state.put(keys::record(&r.record), &entry);
        self.state.put(keys::record_version(&r.record, r.version), &entry);
        self.state.put(keys::ciphertext(&r.digest), &CiphertextOwner { record: r.record, version: r.version });
        if first {
            self.state.put(keys::patient_record(&r.patient, &r.record), &PRESENT);
        }
        self.moved_head(&r.patient);
        let subject = KeySubject::Record { record: r.record, version: r.version };
        for holder in &r.recipients {
            self.put_envelope(subject, *holder);
        }
        Ok(self.audit(r.patient, AuditAction::Write { record: r.record, version: r.version }, None))
    }

    /// A rotation: the next version, registered as an append, provided the current version is the one
    /// it replaces.
    pub(super) fn rotate(&mut self, r: &Rotate) -> Result<Applied, Rejection> {
        let current = self.record(&r.next.record)?;
        if current.digest != r.replaces {
            return Err(Rejection::VersionMismatch);
        }
        // A rotation deletes the replaced ciphertext: a legal hold stops it as it stops erasure.
        self.require_no_hold(&current)?;
        let applied = self.register(&r.next, true)?;
        // The replaced version's ciphertext goes: it is no longer a readable version.
        self.state.delete(keys::record_version(&current.record, current.version));
        Ok(applied)
    }

    pub(super) fn access(&mut self, a: &RecordAccess) -> Result<Applied, Rejection> {
        let current = self.record(&a.record)?;
        // An earlier version is read under the same rules, as that version was registered (its
        // author, its envelopes); one a rotation replaced is gone.
        let entry = if a.version == current.version {
            current
        } else {
            read::<RecordEntry>(self.state, &keys::record_version(&a.record, a.version))
                .filter(|e| e.patient == current.patient)
                .ok_or(Rejection::VersionMismatch)?
        };
        if self.is_directory(&entry.patient) {
            // A directory record: its organisation's active staff read it (admins included: it
            // describes no patient), audited like any read; no one else, break-glass included.
            if !self.is_directory_staff(&entry.patient) {
                return Err(Rejection::NotDirectoryStaff);
            }
            let read = AuditAction::Read { record: a.record, version: a.version };
            return Ok(self.audit(entry.patient, read, Some(a.purpose)));
        }
        if self.signer.role == Role::Admin {
            return Err(Rejection::AdminHasNoClinicalAccess);
        }
        let me = self.signer.id;
        let now = self.ctx.time;
        let is_patient = me == entry.patient && self.signer.role == Role::Patient;
        // Outside chart-wide grants (sensitive): not for delegates, `--all` grantees or teams.
        let restricted = entry.chart_epoch == RESTRICTED_CHART_EPOCH;
        if !is_patient && !restricted && self.is_delegate_of(&entry.patient) {
            self.on_behalf_of = Some(entry.patient);
            let read = AuditAction::Read { record: a.record, version: a.version };
            return Ok(self.audit(entry.patient, read, Some(a.purpose)));
        }
        // Authorship reads last while the treatment relationship does: revoking the author's
        // `--all` grant ends them for every record of the chart (a per-record grant restores one).
        let is_author = me == entry.author
            && self.state.get(&keys::author_revoked(&a.record, &me)).is_none()
            && self.state.get(&keys::authorship_ended(&entry.patient, &me)).is_none();
        let grants = [GrantScope::Record(a.record), GrantScope::All, GrantScope::Sensitive]
            .map(|s| self.grant_entry(&entry.patient, &me, &s));
        // A per-record grant covers the versions whose data key was wrapped for the grantee; an
        // `--all` grant covers every version through the chart key, but those outside chart-wide
        // grants; a grant on sensitive records covers those of them wrapped for the grantee.
        let enveloped = || {
            let subject = KeySubject::Record { record: a.record, version: entry.version };
            self.state.get(&keys::envelope(&subject, &KeyHolder::Member { member: me })).is_some()
        };
        let wrapped_for_me = |scope: &GrantScope| match scope {
            GrantScope::All => !restricted,
            GrantScope::Record(_) => enveloped(),
            GrantScope::Sensitive => restricted && enveloped(),
        };
        let live_grant = grants.iter().flatten().any(|g| g.is_live(now) && wrapped_for_me(&g.scope));
        let via_team = || {
            let subject = KeySubject::Record { record: a.record, version: entry.version };
            self.teams_of(&me).iter().any(|t| {
                let member = self.team(t).is_some_and(|team| team.has(&me));
                let all = !restricted
                    && self.grant_entry(&entry.patient, t, &GrantScope::All).is_some_and(|g| g.is_live(now));
                let one =
                    self.grant_entry(&entry.patient, t, &GrantScope::Record(a.record)).is_some_and(|g| g.is_live(now))
                        && self.team_epoch_of(&subject, t).is_some();
                member && (all || one)
            })
        };
        if !(is_patient || is_author || live_grant || via_team()) {
            // Break-glass: an open window, for emergency treatment only; the read is flagged.
            let glass: Option<BreakGlassEntry> = read(self.state, &keys::break_glass(&entry.patient, &me));
            let clinician = matches!(self.signer.role, Role::Doctor | Role::Emergency);
            match glass {
                Some(g) if clinician && now < g.until && a.purpose == PurposeOfUse::Etreat => {
                    self.state.put(keys::access_basis(&self.tx_id), &AccessBasis::BreakGlass);
                    let read = match restricted {
                        true => AuditAction::ReadRestricted { record: a.record, version: a.version },
                        false => AuditAction::Read { record: a.record, version: a.version },
                    };
                    return Ok(self.audit(entry.patient, read, Some(a.purpose)));
                }
                Some(g) if clinician && now >= g.until => return Err(Rejection::BreakGlassExpired),
                _ => {}
            }
            let expired = grants.iter().flatten().any(|g| !g.is_live(now));
            return Err(if expired { Rejection::GrantExpired } else { Rejection::AccessDenied });
        }
        Ok(self.audit(entry.patient, AuditAction::Read { record: a.record, version: a.version }, Some(a.purpose)))
    }

    /// The patient erases a record: its entry goes, a tombstone stays (the id is never reused),
    /// and the validators, once the block is committed, delete every version's ciphertext,
    /// sidecar and share (see the node's janitor). Refused under a legal hold.
    pub(super) fn erase(&mut self, e: &Erase) -> Result<Applied, Rejection> {
        let entry = self.record(&e.record)?;
        self.require_patient(&entry.patient)?;
        self.require_no_hold(&entry)?;
        let tombstone = ErasedEntry {
            record: e.record,
            patient: entry.patient,
            versions: entry.version,
            erased_at: self.ctx.time,
            tx: self.tx_id,
        };
        self.state.delete(keys::record(&e.record));
        for version in 1..=entry.version.min(crate::policy::RECORD_VERSIONS_MAX) {
            self.state.delete(keys::record_version(&e.record, version));
        }
        self.state.delete(keys::patient_record(&entry.patient, &e.record));
        self.moved_head(&entry.patient);
        self.state.put(keys::erased(&e.record), &tombstone);
        Ok(self.audit(entry.patient, AuditAction::Erase { record: e.record, versions: entry.version }, None))
    }

    /// An auditor reviews a patient's record list: allowed for auditors (the review is an event
    /// in the patient's trail, and validators serve the list to them for a window); an admin has
    /// no clinical view, anyone else lists through their own rights (patient, delegate, grantee).
    pub(super) fn chart_review(&mut self, c: &ChartReview) -> Result<Applied, Rejection> {
        match self.signer.role {
            Role::Admin => return Err(Rejection::AdminHasNoClinicalAccess),
            Role::Auditor => {}
            _ => return Err(Rejection::NotAnAuditor),
        }
        self.chart(&c.patient)?;
        let until = Timestamp::new(self.ctx.time.get().saturating_add(CHART_REVIEW_WINDOW_MS));
        self.state.put(keys::chart_review(&c.patient, &self.signer.id), &until);
        Ok(self.audit(c.patient, AuditAction::ChartReview, Some(c.purpose)))
    }

    /// No legal hold covers `entry` (on its patient's chart or on the record itself).
    fn require_no_hold(&self, entry: &RecordEntry) -> Result<(), Rejection> {
        let held = |key: Vec<u8>| self.state.get(&key).is_some();
        if held(keys::legal_hold(&entry.patient, None)) || held(keys::legal_hold(&entry.patient, Some(&entry.record))) {
            return Err(Rejection::LegalHold);
        }
        Ok(())
    }

    /// An auditor places or lifts a legal hold on a patient's chart or one of its records.
    pub(super) fn legal_hold(&mut self, h: &LegalHold) -> Result<Applied, Rejection> {
        if self.signer.role != Role::Auditor {
            return Err(Rejection::NotAnAuditor);
        }
        let (patient, _) = self.chart(&h.patient)?;
        // Holds are the patient's own organisation's business: its auditors place them, and only
        // auditors of the organisation that placed a hold lift it.
        if patient.org != self.signer.org {
            return Err(Rejection::WrongOrganisation);
        }
        if let Some(record) = &h.record
            && self.record(record)?.patient != h.patient
        {
            return Err(Rejection::WrongPatient);
        }
        let key = keys::legal_hold(&h.patient, h.record.as_ref());
        if h.hold {
            let entry = LegalHoldEntry { placed_by: self.signer.id, placed_at: self.ctx.time, tx: self.tx_id };
            self.state.put(key, &entry);
        } else {
            let Some(placed) = read::<LegalHoldEntry>(self.state, &key) else {
                return Err(Rejection::NoSuchHold);
            };
            if self.member(&placed.placed_by).is_none_or(|m| m.org != self.signer.org) {
                return Err(Rejection::WrongOrganisation);
            }
            self.state.delete(key);
        }
        Ok(self.audit(h.patient, AuditAction::LegalHold { record: h.record, hold: h.hold }, None))
    }
}
