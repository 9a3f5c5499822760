//! Consent: grants, revocations, delegates, and the chart-key epochs they move.

use medledger_types::limits::{DELEGATES_MAX, GRANT_TTL_MS_MAX};
use medledger_types::{MemberId, Role, Timestamp, Trailing};

use super::PRESENT;
use super::run::{Applied, Run};
use crate::policy::{CHART_HOLDERS_MAX, CHART_TEAMS_MAX, Rejection, SENSITIVE_GRANTEES_MAX};
use crate::sidecar::{KeyHolder, KeySubject};
use crate::state::{AuditAction, ChartEntry, GrantEntry, MemberStatus, StateView, keys, read};
use crate::tx::{Delegate, Grant, GrantScope, NewChartEpoch, Revoke};

impl Run<'_, '_> {
    /// Moves `patient`'s chart to its next epoch, wrapped (by the sidecar) for exactly those who
    /// keep holding it: the patient, every live `--all` grantee but `revoked`, every delegate but
    /// `dismissed`.
    pub(super) fn next_chart_epoch(
        &mut self,
        patient: &MemberId,
        chart: &ChartEntry,
        revoked: Option<&MemberId>,
        dismissed: Option<&MemberId>,
        new_chart: Option<&NewChartEpoch>,
        team_grant: bool,
    ) -> Result<ChartEntry, Rejection> {
        let new_chart = new_chart.ok_or(Rejection::NewChartRequired)?;
        let now = self.ctx.time;
        let holders: Vec<MemberId> = chart
            .holders
            .iter()
            .copied()
            .filter(|m| Some(m) != revoked)
            .filter(|m| self.grant_entry(patient, m, &GrantScope::All).is_some_and(|g| g.is_live(now)))
            .collect();
        let delegates: Vec<MemberId> = chart.delegates.iter().copied().filter(|m| Some(m) != dismissed).collect();
        let mut expected: Vec<MemberId> = holders.iter().chain(&delegates).copied().collect();
        expected.push(*patient);
        expected.sort();
        expected.dedup();
        let mut named = new_chart.recipients.clone();
        named.sort();
        let epoch = chart.epoch.checked_add(1).ok_or(Rejection::NewChartRequired)?;
        let subject = KeySubject::Chart { patient: *patient, epoch };
        // The sidecar wraps the next epoch for them, this epoch for the next (the link back) and,
        // for a grant to a team, this epoch for the team.
        let current = KeySubject::Chart { patient: *patient, epoch: chart.epoch };
        let link = KeyHolder::Chart { patient: *patient, epoch };
        let sidecar_ok = self.sidecar.is_some_and(|s| {
            s.subjects.iter().zip(&s.holders).all(|(subject_, holder)| match holder {
                KeyHolder::Member { .. } => *subject_ == subject,
                KeyHolder::Chart { .. } => *holder == link && *subject_ == current,
                KeyHolder::Team { .. } => team_grant && *subject_ == current,
            }) && s.holders.contains(&link)
        });
        if named != expected || !sidecar_ok || new_chart.public_key.check().is_err() {
            return Err(Rejection::NewChartRequired);
        }
        let next = ChartEntry {
            patient: *patient,
            epoch,
            public_key: new_chart.public_key.clone(),
            holders,
            delegates,
            teams: chart.teams.clone(),
            sensitive: chart.sensitive.clone(),
        };
        self.put_chart(patient, &next);
        for member in &new_chart.recipients {
            self.put_envelope(subject, KeyHolder::Member { member: *member });
        }
        self.put_envelope(current, link);
        Ok(next)
    }

    pub(super) fn grant_entry(&self, patient: &MemberId, grantee: &MemberId, scope: &GrantScope) -> Option<GrantEntry> {
        read(self.state, &keys::grant(patient, grantee, scope))
    }

    pub(super) fn grant(&mut self, g: &Grant) -> Result<Applied, Rejection> {
        self.require_patient_or_delegate(&g.patient)?;
        let (_, mut chart) = self.chart(&g.patient)?;
        if self.is_directory(&g.grantee) {
            // A whole organisation's staff is not a grantee: a patient grants people and care teams.
            return Err(Rejection::DirectoryNotAChart);
        }
        if g.scope == GrantScope::Sensitive {
            return self.grant_sensitive(g, chart);
        }
        let team = self.team(&g.grantee);
        let holder = match &team {
            Some(_) if g.write => return Err(Rejection::WriteOnlyForDoctors),
            Some(team) => KeyHolder::Team { team: team.team, epoch: team.epoch },
            None => {
                let grantee = self.member(&g.grantee).ok_or(Rejection::UnknownMember)?;
                if grantee.status != MemberStatus::Active {
                    return Err(Rejection::UnknownMember);
                }
                if !grantee.role.is_clinical() {
                    return Err(Rejection::GranteeNotClinical);
                }
                if g.write && (grantee.role != Role::Doctor || g.scope != GrantScope::All) {
                    return Err(Rejection::WriteOnlyForDoctors);
                }
                KeyHolder::Member { member: g.grantee }
            }
        };
        // A team's envelope must be for its current key.
        if team.is_some() && !self.sidecar.is_some_and(|s| s.holders.contains(&holder)) {
            return Err(Rejection::StaleTeamEpoch);
        }
        self.check_expiry(g)?;
        let wrapped = self.sidecar.and_then(|s| s.subjects.first()).copied().ok_or(Rejection::EnvelopeMissing)?;
        match g.scope {
            GrantScope::Record(record) => {
                let entry = self.record(&record)?;
                if entry.patient != g.patient {
                    return Err(Rejection::WrongPatient);
                }
                let subject = KeySubject::Record { record, version: entry.version };
                if wrapped != subject {
                    return Err(Rejection::VersionMismatch);
                }
                self.put_envelope(subject, holder);
            }
            GrantScope::All if team.is_some() => {
                if g.chart_epoch != Some(chart.epoch) {
                    return Err(Rejection::StaleChartEpoch);
                }
                // The team gets this epoch's key (the records written so far); the chart moves to
                // an epoch it never holds, and each record from now on is wrapped for the team.
                if let Err(at) = chart.teams.binary_search(&g.grantee) {
                    if chart.teams.len() >= CHART_TEAMS_MAX {
                        return Err(Rejection::TooManyHolders);
                    }
                    chart.teams.insert(at, g.grantee);
                }
                self.put_envelope(KeySubject::Chart { patient: g.patient, epoch: chart.epoch }, holder);
                self.next_chart_epoch(&g.patient, &chart, None, None, g.new_chart.as_ref(), true)?;
            }
            GrantScope::All => {
                if g.chart_epoch != Some(chart.epoch) || g.new_chart.is_some() {
                    return Err(Rejection::StaleChartEpoch);
                }
                if let Err(at) = chart.holders.binary_search(&g.grantee) {
                    if chart.holders.len() >= CHART_HOLDERS_MAX {
                        return Err(Rejection::TooManyHolders);
                    }
                    chart.holders.insert(at, g.grantee);
                }
                self.put_chart(&g.patient, &chart);
                self.put_envelope(KeySubject::Chart { patient: g.patient, epoch: chart.epoch }, holder);
            }
            GrantScope::Sensitive => return Err(Rejection::EnvelopeMissing),
        }
        Ok(self.grant_entry_put(g))
    }

    fn check_expiry(&self, g: &Grant) -> Result<(), Rejection> {
        if let Some(expires) = g.expires_at {
            let latest = self.ctx.time.checked_add_ms(GRANT_TTL_MS_MAX).unwrap_or(Timestamp::new(u64::MAX));
            if expires <= self.ctx.time || expires > latest {
                return Err(Rejection::BadExpiry);
            }
        }
        Ok(())
    }

    /// A grant on the patient's records outside chart-wide grants, to a clinician (a person, not
    /// a team): the chart names them, so every such record written from now on is wrapped for
    /// them; reading one needs its version wrapped for them (records written before: per-record
    /// grants). No envelope comes with it.
    fn grant_sensitive(&mut self, g: &Grant, mut chart: ChartEntry) -> Result<Applied, Rejection> {
        // The patient's own choice: a delegate, who never reads these records, does not route them.
        self.require_patient(&g.patient)?;
        let grantee = self.member(&g.grantee).ok_or(Rejection::UnknownMember)?;
        if grantee.status != MemberStatus::Active {
            return Err(Rejection::UnknownMember);
        }
        if !grantee.role.is_clinical() {
            return Err(Rejection::GranteeNotClinical);
        }
        if g.write {
            return Err(Rejection::WriteOnlyForDoctors);
        }
        if g.chart_epoch.is_some() || g.new_chart.is_some() {
            return Err(Rejection::StaleChartEpoch);
        }
        self.check_expiry(g)?;
        let mut sensitive = chart.sensitive.0.take().unwrap_or_default();
        if let Err(at) = sensitive.binary_search(&g.grantee) {
            // Each sensitive record is wrapped for the patient, its author and every grantee.
            if sensitive.len() >= SENSITIVE_GRANTEES_MAX {
                return Err(Rejection::TooManyHolders);
            }
            sensitive.insert(at, g.grantee);
        }
        chart.sensitive = Trailing(Some(sensitive));
        self.put_chart(&g.patient, &chart);
        Ok(self.grant_entry_put(g))
    }

    /// The grant's entry, the grantee's chart index and the event in the patient's trail.
    fn grant_entry_put(&mut self, g: &Grant) -> Applied {
        let entry = GrantEntry {
            patient: g.patient,
            grantee: g.grantee,
            scope: g.scope,
            write: g.write,
            granted_at: self.ctx.time,
            expires_at: g.expires_at,
            tx: self.tx_id,
        };
        self.state.put(keys::grant(&g.patient, &g.grantee, &g.scope), &entry);
        self.state.put(keys::reader_chart(&g.grantee, &g.patient), &PRESENT);
        let action =
            AuditAction::Grant { grantee: g.grantee, scope: g.scope, write: g.write, expires_at: g.expires_at };
        self.audit(g.patient, action, None)
    }

    pub(super) fn revoke(&mut self, r: &Revoke) -> Result<Applied, Rejection> {
        self.require_patient_or_delegate(&r.patient)?;
        let (_, mut chart) = self.chart(&r.patient)?;
        if self.member(&r.grantee).is_none() && self.team(&r.grantee).is_none() {
            return Err(Rejection::UnknownMember);
        }
        match r.scope {
            GrantScope::Record(record) => {
                if r.new_chart.is_some() {
                    return Err(Rejection::NewChartRequired);
                }
                let entry = self.record(&record)?;
                if entry.patient != r.patient {
                    return Err(Rejection::WrongPatient);
                }
                let grant_key = keys::grant(&r.patient, &r.grantee, &r.scope);
                let has_grant = self.state.get(&grant_key).is_some();
                let author_key = keys::author_revoked(&record, &r.grantee);
                let is_author = entry.author == r.grantee
                    && self.state.get(&author_key).is_none()
                    && self.state.get(&keys::authorship_ended(&r.patient, &r.grantee)).is_none();
                if !has_grant && !is_author {
                    return Err(Rejection::NoSuchGrant);
                }
                self.state.delete(grant_key);
                if is_author {
                    self.state.put(author_key, &PRESENT);
                }
            }
            GrantScope::All => {
                let grant_key = keys::grant(&r.patient, &r.grantee, &GrantScope::All);
                if self.state.get(&grant_key).is_none() {
                    return Err(Rejection::NoSuchGrant);
                }
                // A team never held the chart's current key: its grant ends, the chart stays.
                if let Ok(at) = chart.teams.binary_search(&r.grantee) {
                    if r.new_chart.is_some() {
                        return Err(Rejection::NewChartRequired);
                    }
                    chart.teams.remove(at);
                    self.put_chart(&r.patient, &chart);
                } else {
                    self.next_chart_epoch(&r.patient, &chart, Some(&r.grantee), None, r.new_chart.as_ref(), false)?;
                    // The treatment relationship ends: so do the member's reads as an author.
                    self.state.put(keys::authorship_ended(&r.patient, &r.grantee), &PRESENT);
                }
                self.state.delete(grant_key);
            }
            GrantScope::Sensitive => {
                self.require_patient(&r.patient)?;
                let grant_key = keys::grant(&r.patient, &r.grantee, &GrantScope::Sensitive);
                if r.new_chart.is_some() {
                    return Err(Rejection::NewChartRequired);
                }
                if self.state.get(&grant_key).is_none() {
                    return Err(Rejection::NoSuchGrant);
                }
                // No key moves: the records wrapped for them are refused to them from now on (the
                // validators release no share), and later ones are not wrapped for them.
                let mut sensitive = chart.sensitive.0.take().unwrap_or_default();
                sensitive.retain(|m| *m != r.grantee);
                chart.sensitive = Trailing((!sensitive.is_empty()).then_some(sensitive));
                self.put_chart(&r.patient, &chart);
                self.state.delete(grant_key);
            }
        }
        Ok(self.audit(r.patient, AuditAction::Revoke { grantee: r.grantee, scope: r.scope }, None))
    }

    /// The patient (only: a delegate does not appoint another) appoints or dismisses a delegate.
    pub(super) fn delegate(&mut self, d: &Delegate) -> Result<Applied, Rejection> {
        self.require_patient(&d.patient)?;
        let (_, mut chart) = self.chart(&d.patient)?;
        if d.appoint {
            let person = self
                .member(&d.delegate)
                .filter(|m| m.role == Role::Patient && m.status == MemberStatus::Active && m.id != d.patient);
            if person.is_none() {
                return Err(Rejection::DelegateNotAPerson);
            }
            let Err(at) = chart.delegates.binary_search(&d.delegate) else {
                return Err(Rejection::AlreadyDelegate);
            };
            if chart.delegates.len() >= DELEGATES_MAX {
                return Err(Rejection::TooManyDelegates);
            }
            if d.chart_epoch != Some(chart.epoch) || d.new_chart.is_some() {
                return Err(Rejection::StaleChartEpoch);
            }
            chart.delegates.insert(at, d.delegate);
            self.put_chart(&d.patient, &chart);
            self.state.put(keys::reader_chart(&d.delegate, &d.patient), &PRESENT);
            self.put_envelope(
                KeySubject::Chart { patient: d.patient, epoch: chart.epoch },
                KeyHolder::Member { member: d.delegate },
            );
        } else {
            if !chart.is_delegate(&d.delegate) {
                return Err(Rejection::NoSuchDelegate);
            }
            self.next_chart_epoch(&d.patient, &chart, None, Some(&d.delegate), d.new_chart.as_ref(), false)?;
        }
        Ok(self.audit(d.patient, AuditAction::Delegate { delegate: d.delegate, appoint: d.appoint }, None))
    }
}
