//! Care teams: creating them, adding and removing members, and the team's key.

use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::{self, DecryptionKey};
use medledger_ledger::state::TeamEntry;
use medledger_ledger::{KeyHolder, KeySubject, Sidecar, TeamAdd, TeamCreate, TeamRemove, TxKind};
use medledger_types::MemberId;

use super::{Committed, Session, chart_key_from, chart_secret};
use crate::error::{Result, SdkError};
use crate::home::Identity;

impl Session {
    /// Care team `team`'s current key, from `me`'s envelope (a member's).
    async fn team_key(&self, me: &Identity, team: &MemberId) -> Result<(TeamEntry, DecryptionKey)> {
        let mut entry =
            self.client.team(me, team).await?.ok_or_else(|| SdkError::NotFound("no such care team".into()))?;
        let envelope = self.client.team_envelope(me, team).await?;
        let KeySubject::Team { team: t, epoch } = envelope.subject else {
            return Err(SdkError::Integrity("team envelope of the wrong kind".into()));
        };
        if t != *team || epoch != entry.epoch {
            // The team moved on between the two reads: its entry again.
            entry = self.client.team(me, team).await?.ok_or_else(|| SdkError::NotFound("no such care team".into()))?;
        }
        Ok((entry, chart_key_from(&self.open_mine(me, &envelope)?)?))
    }

    /// A doctor creates a care team of themself and `members`; returns its id.
    pub async fn team_create(&self, me: &Identity, members: &[MemberId]) -> Result<(MemberId, Committed)> {
        let team = MemberId::new(medledger_crypto::random_bytes());
        let key = wrap::generate(KemSuite::default());
        let secret = chart_secret(&key);
        let mut all = members.to_vec();
        all.push(me.member);
        all.sort();
        all.dedup();
        let envelopes = self.seal_for_members(me, &all, KeySubject::Team { team, epoch: 0 }, &secret).await?;
        let kind = TxKind::TeamCreate(TeamCreate { team, public_key: key.encryption_key().clone(), members: all });
        let sidecar = Sidecar { envelopes, metadata: None, threshold: Default::default() };
        Ok((team, self.transact(me, kind, Some(sidecar)).await?))
    }

    /// A doctor of `team` adds `member`: the team's current key wrapped for them.
    pub async fn team_add(&self, me: &Identity, team: &MemberId, member: &MemberId) -> Result<Committed> {
        let (entry, key) = self.team_key(me, team).await?;
        let to = self.proved_member(me, member).await?.encryption_key;
        let subject = KeySubject::Team { team: *team, epoch: entry.epoch };
        let envelope = self.seal_for(&to, KeyHolder::Member { member: *member }, subject, &chart_secret(&key))?;
        let kind = TxKind::TeamAdd(TeamAdd { team: *team, member: *member });
        self.transact(
            me,
            kind,
            Some(Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() }),
        )
        .await
    }

    /// A doctor of `team` removes `member` (or `me` leaves): a fresh key for the remaining members,
    /// with the current key wrapped for it.
    pub async fn team_remove(&self, me: &Identity, team: &MemberId, member: &MemberId) -> Result<Committed> {
        let (entry, key) = self.team_key(me, team).await?;
        let epoch = entry.epoch.checked_add(1).ok_or_else(|| SdkError::Other("team epochs exhausted".into()))?;
        let next = wrap::generate(KemSuite::default());
        let secret = chart_secret(&next);
        let remaining: Vec<MemberId> = entry.members.iter().copied().filter(|m| m != member).collect();
        let mut envelopes =
            self.seal_for_members(me, &remaining, KeySubject::Team { team: *team, epoch }, &secret).await?;
        let current = KeySubject::Team { team: *team, epoch: entry.epoch };
        let link = KeyHolder::Team { team: *team, epoch };
        envelopes.push(self.seal_for(next.encryption_key(), link, current, &chart_secret(&key))?);
        let kind =
            TxKind::TeamRemove(TeamRemove { team: *team, member: *member, public_key: next.encryption_key().clone() });
        self.transact(me, kind, Some(Sidecar { envelopes, metadata: None, threshold: Default::default() })).await
    }
}
