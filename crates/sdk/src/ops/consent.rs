//! Consent: grants and revocations, delegates, and the chart key's epochs.

use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::{self, DecryptionKey, EncryptionKey};
use medledger_ledger::state::{RESTRICTED_CHART_EPOCH, RecordEntry, TeamEntry};
use medledger_ledger::{
    Delegate, Grant, GrantScope, KeyHolder, KeySubject, NewChartEpoch, RecordAccess, Revoke, Sidecar, SidecarEnvelope,
    TxKind,
};
use medledger_types::{MemberId, PurposeOfUse, Timestamp};

use super::{Committed, Session, chart_key_from, chart_secret};
use crate::error::{Result, SdkError};
use crate::home::{Contact, Identity};

impl Session {
    /// The Grant of a patient's whole chart to `to` (`write` for a doctor's treatment
    /// relationship), signed by the patient: the chart key's secret wrapped for the grantee.
    pub(super) async fn grant_all(
        &self,
        me: &Identity,
        patient: &MemberId,
        to: &MemberId,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<(TxKind, Sidecar)> {
        let (epoch, envelope) = self.chart_key_for(me, patient, to).await?;
        let kind = TxKind::Grant(Grant {
            patient: *patient,
            grantee: *to,
            scope: GrantScope::All,
            write,
            expires_at,
            chart_epoch: Some(epoch),
            new_chart: None,
        });
        Ok((kind, Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() }))
    }

    /// An `--all` grant to a care team: the chart's current key wrapped for the team's (the
    /// records so far), and the chart's next epoch for everyone else who holds it (records from
    /// now on are wrapped for the team's own key, so a member it removes holds no key to them).
    async fn grant_all_to_team(
        &self,
        me: &Identity,
        patient: &MemberId,
        team: &TeamEntry,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<(TxKind, Sidecar)> {
        let (epoch, chart) = self.chart_key(me, patient).await?;
        let holder = KeyHolder::Team { team: team.team, epoch: team.epoch };
        let subject = KeySubject::Chart { patient: *patient, epoch };
        let to_team = self.seal_for(&team.public_key, holder, subject, &chart_secret(&chart))?;
        let (new_chart, mut sidecar) = self.next_chart_epoch(me, patient, None, None, None).await?;
        sidecar.envelopes.insert(0, to_team);
        let kind = TxKind::Grant(Grant {
            patient: *patient,
            grantee: team.team,
            scope: GrantScope::All,
            write,
            expires_at,
            chart_epoch: Some(epoch),
            new_chart: Some(new_chart),
        });
        Ok((kind, sidecar))
    }

    /// `patient`'s current chart key (which `me` holds) wrapped for `to`, and its epoch.
    async fn chart_key_for(&self, me: &Identity, patient: &MemberId, to: &MemberId) -> Result<(u32, SidecarEnvelope)> {
        let member = self.proved_member(me, to).await?;
        let (epoch, chart) = self.chart_key(me, patient).await?;
        let subject = KeySubject::Chart { patient: *patient, epoch };
        let holder = KeyHolder::Member { member: *to };
        Ok((epoch, self.seal_for(&member.encryption_key, holder, subject, &chart_secret(&chart))?))
    }

    /// A fresh next epoch of `patient`'s chart, wrapped for everyone who keeps holding it: the
    /// patient (for `patient_key` when given, their next key at a custody claim), each live
    /// `--all` grantee but `revoked`, each delegate but `dismissed`.
    pub(super) async fn next_chart_epoch(
        &self,
        me: &Identity,
        patient: &MemberId,
        revoked: Option<&MemberId>,
        dismissed: Option<&MemberId>,
        patient_key: Option<&EncryptionKey>,
    ) -> Result<(NewChartEpoch, Sidecar)> {
        let chart = self.client.chart(me, patient).await?;
        let epoch = chart.epoch.checked_add(1).ok_or_else(|| SdkError::Other("chart epochs exhausted".into()))?;
        let now = Timestamp::new(crate::client::now_ms());
        let mut recipients = vec![*patient];
        for holder in chart.holders.iter().filter(|m| Some(*m) != revoked) {
            if self.client.grant(me, patient, holder).await?.is_some_and(|g| g.is_live(now)) {
                recipients.push(*holder);
            }
        }
        recipients.extend(chart.delegates.iter().filter(|m| Some(*m) != dismissed));
        recipients.sort();
        recipients.dedup();
        let next = wrap::generate(KemSuite::default());
        let secret = chart_secret(&next);
        let subject = KeySubject::Chart { patient: *patient, epoch };
        // The link back: this epoch's key wrapped for the next one.
        let (current_epoch, current) = self.chart_key(me, patient).await?;
        if current_epoch != chart.epoch {
            return Err(SdkError::Conflict("the chart moved on meanwhile; try again".into()));
        }
        let link = KeyHolder::Chart { patient: *patient, epoch };
        let mut envelopes = vec![self.seal_for(
            next.encryption_key(),
            link,
            KeySubject::Chart { patient: *patient, epoch: current_epoch },
            &chart_secret(&current),
        )?];
        match patient_key {
            Some(key) => {
                let others: Vec<MemberId> = recipients.iter().copied().filter(|m| m != patient).collect();
                envelopes.extend(self.seal_for_members(me, &others, subject, &secret).await?);
                envelopes.push(self.seal_for(key, KeyHolder::Member { member: *patient }, subject, &secret)?);
            }
            None => envelopes.extend(self.seal_for_members(me, &recipients, subject, &secret).await?),
        }
        Ok((
            NewChartEpoch { public_key: next.encryption_key().clone(), recipients },
            Sidecar { envelopes, metadata: None, threshold: Default::default() },
        ))
    }

    /// The patient `me` appoints `to` as their delegate (`appoint`), or dismisses them (the chart
    /// then moves to an epoch they never hold).
    pub async fn delegate(&self, me: &Identity, to: &Contact, appoint: bool) -> Result<Committed> {
        let (kind, sidecar) = if appoint {
            let (epoch, envelope) = self.chart_key_for(me, &me.member, &to.member).await?;
            let kind = TxKind::Delegate(Delegate {
                patient: me.member,
                delegate: to.member,
                appoint,
                chart_epoch: Some(epoch),
                new_chart: None,
            });
            (kind, Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() })
        } else {
            let (new_chart, sidecar) = self.next_chart_epoch(me, &me.member, None, Some(&to.member), None).await?;
            let kind = TxKind::Delegate(Delegate {
                patient: me.member,
                delegate: to.member,
                appoint,
                chart_epoch: None,
                new_chart: Some(new_chart),
            });
            (kind, sidecar)
        };
        self.transact(me, kind, Some(sidecar)).await
    }

    /// A grant on `patient`'s records outside chart-wide grants (sensitive ones): those written
    /// from now on are wrapped for `to`, and each one written before is given by a per-record
    /// grant (the patient reads its key, a logged access, and wraps it for `to`).
    async fn grant_sensitive(
        &self,
        me: &Identity,
        patient: &MemberId,
        to: &MemberId,
        is_team: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<Committed> {
        if is_team {
            return Err(SdkError::Usage("sensitive records are granted to a person, not a care team".into()));
        }
        let kind = TxKind::Grant(Grant {
            patient: *patient,
            grantee: *to,
            scope: GrantScope::Sensitive,
            write: false,
            expires_at,
            chart_epoch: None,
            new_chart: None,
        });
        let committed = self.transact(me, kind, None).await?;
        // Those written before: a per-record grant each (the patient reads its key, a logged
        // access, and wraps it for `to`); revoking the grant on sensitive records revokes them.
        for entry in self.restricted_records(me, patient).await? {
            Box::pin(self.grant_for(me, patient, to, GrantScope::Record(entry.record), false, expires_at)).await?;
        }
        Ok(committed)
    }

    /// Ends a grant on `patient`'s sensitive records: the grant, and the per-record grant `from`
    /// holds on each sensitive record (those [`Session::grant_sensitive`] gave).
    async fn revoke_sensitive(&self, me: &Identity, patient: &MemberId, from: &MemberId) -> Result<Committed> {
        // The per-record grants first, the grant itself last: a revocation cut short is finished
        // by running it again.
        for entry in self.restricted_records(me, patient).await? {
            if self.client.record_grant(me, patient, from, &entry.record).await?.is_some() {
                let scope = GrantScope::Record(entry.record);
                let kind = TxKind::Revoke(Revoke { patient: *patient, grantee: *from, scope, new_chart: None });
                self.transact(me, kind, None).await?;
            }
        }
        let kind =
            TxKind::Revoke(Revoke { patient: *patient, grantee: *from, scope: GrantScope::Sensitive, new_chart: None });
        self.transact(me, kind, None).await
    }

    /// `patient`'s records outside chart-wide grants (sensitive ones), as the ledger lists them.
    async fn restricted_records(&self, me: &Identity, patient: &MemberId) -> Result<Vec<RecordEntry>> {
        let records =
            super::all_pages(
                |after| async move { self.client.patient_records_page(me, patient, after.as_deref()).await },
            )
            .await?;
        Ok(records.into_iter().filter(|e| e.chart_epoch == RESTRICTED_CHART_EPOCH).collect())
    }

    /// The patient's current chart key, opened from the patient's envelope.
    /// `patient`'s current chart key, from its envelope for `me` (the patient, a delegate or an
    /// `--all` grantee).
    pub(super) async fn chart_key(&self, me: &Identity, patient: &MemberId) -> Result<(u32, DecryptionKey)> {
        let envelope = self.client.chart_envelope(me, patient).await?;
        let KeySubject::Chart { epoch, .. } = envelope.subject else {
            return Err(SdkError::Integrity("chart envelope of the wrong kind".into()));
        };
        Ok((epoch, chart_key_from(&self.open_mine(me, &envelope)?)?))
    }

    /// The patient grants `to` access to one record or to the whole chart.
    pub async fn grant(
        &self,
        me: &Identity,
        to: &Contact,
        scope: GrantScope,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<Committed> {
        self.grant_for(me, &me.member, &to.member, scope, write, expires_at).await
    }

    /// [`Session::grant`] on `patient`'s chart: `me` is the patient or one of their delegates.
    pub async fn grant_for(
        &self,
        me: &Identity,
        patient: &MemberId,
        to: &MemberId,
        scope: GrantScope,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<Committed> {
        // Whether `to` is a team is any validator's say; its key is certified state.
        let team = match self.client.team(me, to).await? {
            Some(_) => Some(self.proved_team(me, to, patient).await?),
            None => None,
        };
        if scope == GrantScope::Sensitive {
            return self.grant_sensitive(me, patient, to, team.is_some(), expires_at).await;
        }
        let GrantScope::Record(record) = scope else {
            let (kind, sidecar) = match &team {
                Some(team) => self.grant_all_to_team(me, patient, team, write, expires_at).await?,
                None => self.grant_all(me, patient, to, write, expires_at).await?,
            };
            return self.transact(me, kind, Some(sidecar)).await;
        };
        let (key, holder) = match &team {
            Some(team) => (team.public_key.clone(), KeyHolder::Team { team: team.team, epoch: team.epoch }),
            None => (self.proved_member(me, to).await?.encryption_key, KeyHolder::Member { member: *to }),
        };
        // The patient reads the record's key like any reader: a logged access first.
        let version = self.client.record_version(me, &record).await?;
        let kind = TxKind::RecordAccess(RecordAccess { record, version, purpose: PurposeOfUse::Patrqt });
        let access = self.transact(me, kind, None).await?;
        // Re-wrapped for the grantee: what the patient's envelopes wrap (k_env under threshold
        // release, so the grantee still needs the validators' shares at each read).
        let bundle = self.verified_bundle(me, &access.tx, record, version).await?;
        let secret = self
            .wrapped_secret(me, &bundle)?
            .ok_or_else(|| SdkError::Denied("no wrapped key for this reader".into()))?;
        let subject = KeySubject::Record { record, version: bundle.record.version };
        let envelope = self.seal_for(&key, holder, subject, &secret)?;
        let kind = TxKind::Grant(Grant {
            patient: *patient,
            grantee: *to,
            scope,
            write,
            expires_at,
            chart_epoch: None,
            new_chart: None,
        });
        self.transact(
            me,
            kind,
            Some(Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() }),
        )
        .await
    }

    /// The patient revokes a grant; `--all` moves the chart key to a new epoch for the others.
    pub async fn revoke(&self, me: &Identity, from: &Contact, scope: GrantScope) -> Result<Committed> {
        self.revoke_for(me, &me.member, &from.member, scope).await
    }

    /// [`Session::revoke`] on `patient`'s chart: `me` is the patient or one of their delegates.
    pub async fn revoke_for(
        &self,
        me: &Identity,
        patient: &MemberId,
        from: &MemberId,
        scope: GrantScope,
    ) -> Result<Committed> {
        let team_grant = self.client.chart(me, patient).await?.teams.contains(from);
        let (new_chart, sidecar) = match scope {
            // A team never held the chart's current key: nothing to move.
            GrantScope::Sensitive => return self.revoke_sensitive(me, patient, from).await,
            GrantScope::Record(_) => (None, None),
            GrantScope::All if team_grant => (None, None),
            GrantScope::All => {
                let (new_chart, sidecar) = self.next_chart_epoch(me, patient, Some(from), None, None).await?;
                (Some(new_chart), Some(sidecar))
            }
        };
        let kind = TxKind::Revoke(Revoke { patient: *patient, grantee: *from, scope, new_chart });
        self.transact(me, kind, sidecar).await
    }

    /// Every chart `me` may look in for records: their own (a patient), those they have held a
    /// grant on or been a delegate of, and those of the care teams in `teams` they belong to; at
    /// most `limit`, in no particular order. Each read is still the ledger's decision.
    pub async fn readable_charts(&self, me: &Identity, teams: &[MemberId], limit: usize) -> Result<Vec<MemberId>> {
        Ok(self.chart_heads(me, teams, limit, None).await?.charts.into_iter().map(|(chart, _)| chart).collect())
    }

    /// As [`Session::readable_charts`], each with the height at which its records or readers
    /// last changed (its head), or `None` where `me` may not list it now (a grant that ended, a
    /// care team's chart): a client keeping a copy lists a chart again only when its head moved.
    /// With `since` (an earlier answer's `as_of`), only the charts whose head moved after it
    /// (the patient's own chart always).
    pub async fn chart_heads(
        &self,
        me: &Identity,
        teams: &[MemberId],
        limit: usize,
        since: Option<u64>,
    ) -> Result<ChartHeads> {
        let mut heads = ChartHeads { charts: Vec::new(), as_of: Some(u64::MAX) };
        if me.role == medledger_types::Role::Patient {
            heads.charts.push((me.member, Some(self.client.records_head(me, &me.member).await?)));
        }
        self.heads_of(me, &me.member, limit, since, &mut heads).await?;
        for team in teams {
            match self.heads_of(me, team, limit, since, &mut heads).await {
                Ok(()) => {}
                // A team this member has left, or has never been in.
                Err(SdkError::Denied(_) | SdkError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // A chart reached twice (own grant and a team's) keeps the head it has one for.
        heads.charts.sort_unstable_by_key(|(chart, head)| (*chart, head.is_none()));
        heads.charts.dedup_by_key(|(chart, _)| *chart);
        heads.charts.truncate(limit);
        Ok(heads)
    }

    /// The charts `of` (`me`, or a care team of theirs) has held a grant on or been a delegate
    /// of (whose head moved after `since`), at most `limit`, with their heads, into `out`.
    async fn heads_of(
        &self,
        me: &Identity,
        of: &MemberId,
        limit: usize,
        since: Option<u64>,
        out: &mut ChartHeads,
    ) -> Result<()> {
        let mut after = None;
        let mut taken = 0;
        while taken < limit {
            let page = self.client.reader_charts(me, of, after.as_ref(), since).await?;
            // The earliest page bounds what the next look may skip.
            out.as_of = out.as_of.zip(page.as_of).map(|(a, b)| a.min(b));
            // A validator older than the heads: every chart is listed again.
            let heads = page.heads.iter().copied().chain(std::iter::repeat(Some(u64::MAX)));
            for (chart, head) in page.charts.into_iter().zip(heads).filter(|(c, _)| c != of) {
                out.charts.push((chart, head));
                taken += 1;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(())
    }
}

/// What [`Session::chart_heads`] found: each chart and its head (`None`: not listable now), and
/// the height to ask `since` next time (`None` from a validator that does not say).
#[derive(Clone, Debug, Default)]
pub struct ChartHeads {
    pub charts: Vec<(MemberId, Option<u64>)>,
    pub as_of: Option<u64>,
}
