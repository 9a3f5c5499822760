//! Care teams: creation, membership, and the team keys' epochs.

use medledger_types::limits::{TEAM_EPOCHS_MAX, TEAM_MEMBERS_MAX, TEAMS_PER_MEMBER_MAX};
use medledger_types::{MemberId, Role};

use super::run::Run;
use crate::policy::Rejection;
use crate::sidecar::{KeyHolder, KeySubject};
use crate::state::{ChartEntry, MemberStatus, StateView, TeamEntry, keys, read};
use crate::tx::{GrantScope, TeamAdd, TeamCreate, TeamRemove, directory_id};

impl Run<'_, '_> {
    pub(super) fn team(&self, id: &MemberId) -> Option<TeamEntry> {
        read(self.state, &keys::team(id))
    }

    /// The care teams `member` belongs to.
    pub(super) fn teams_of(&self, member: &MemberId) -> Vec<MemberId> {
        read(self.state, &keys::member_teams(member)).unwrap_or_default()
    }

    /// Teams with a live `--all` grant on `chart`, with their entries (each new record's key is
    /// wrapped for their current keys).
    pub(super) fn chart_teams(&self, chart: &ChartEntry) -> Vec<TeamEntry> {
        let now = self.ctx.time;
        chart
            .teams
            .iter()
            .filter(|t| self.grant_entry(&chart.patient, t, &GrantScope::All).is_some_and(|g| g.is_live(now)))
            .filter_map(|t| self.team(t))
            .filter(|t| !t.members.is_empty())
            .collect()
    }

    /// A doctor of `team` (who may add and remove its members).
    pub(super) fn require_team_doctor(&self, team: &TeamEntry) -> Result<(), Rejection> {
        if self.signer.role != Role::Doctor || !team.has(&self.signer.id) {
            return Err(Rejection::NotATeamDoctor);
        }
        Ok(())
    }

    /// Whether `member` may join a care team: an active doctor, nurse or emergency member.
    pub(super) fn team_candidate(&self, member: &MemberId) -> Result<(), Rejection> {
        match self.member(member) {
            Some(m)
                if m.status == MemberStatus::Active
                    && matches!(m.role, Role::Doctor | Role::Nurse | Role::Emergency) =>
            {
                Ok(())
            }
            _ => Err(Rejection::TeamMemberNotClinical),
        }
    }

    pub(super) fn join_team(&mut self, member: &MemberId, team: &MemberId) -> Result<(), Rejection> {
        let mut teams = self.teams_of(member);
        let Err(at) = teams.binary_search(team) else { return Err(Rejection::AlreadyInTeam) };
        if teams.len() >= TEAMS_PER_MEMBER_MAX {
            return Err(Rejection::TooManyTeams);
        }
        teams.insert(at, *team);
        self.state.put(keys::member_teams(member), &teams);
        Ok(())
    }

    /// The team key epoch that `subject` is wrapped for `team` under, if it is.
    pub(super) fn team_epoch_of(&self, subject: &KeySubject, team: &MemberId) -> Option<u32> {
        read(self.state, &keys::team_envelope(subject, team))
    }

    /// Whether `id` is an organisation's directory (reserved when the organisation joined).
    pub(super) fn is_directory(&self, id: &MemberId) -> bool {
        self.state.get(&keys::directory(id)).is_some()
    }

    /// Whether the signer is active staff of the organisation whose directory `id` is.
    pub(super) fn is_directory_staff(&self, id: &MemberId) -> bool {
        self.signer.role != Role::Patient && *id == directory_id(&self.signer.org) && self.is_directory(id)
    }

    /// Whether `member` may hold the key of `directory`: an active staff member of its organisation.
    fn directory_candidate(&self, member: &MemberId, directory: &MemberId) -> Result<(), Rejection> {
        match self.member(member) {
            Some(m)
                if m.status == MemberStatus::Active
                    && m.role != Role::Patient
                    && directory_id(&m.org) == *directory =>
            {
                Ok(())
            }
            _ => Err(Rejection::NotDirectoryStaff),
        }
    }

    /// A staff member creates their organisation's directory key (once), wrapped for themselves
    /// and other active staff of the organisation. Unlike a care team's, its membership is the
    /// organisation's staff (the ledger keeps no list: who holds an envelope may be given more),
    /// and its key is not rotated: a member who is suspended or whose organisation leaves reads
    /// nothing more (the validators release no share to them), whatever key they kept.
    fn directory_create(&mut self, t: &TeamCreate) -> Result<(), Rejection> {
        if !self.is_directory_staff(&t.team) {
            return Err(Rejection::NotDirectoryStaff);
        }
        if self.team(&t.team).is_some() {
            return Err(Rejection::MemberExists);
        }
        let mut members = t.members.clone();
        members.sort();
        members.dedup();
        if members.binary_search(&self.signer.id).is_err() {
            return Err(Rejection::NotInTeam);
        }
        for member in &members {
            self.directory_candidate(member, &t.team)?;
        }
        let subject = KeySubject::Team { team: t.team, epoch: 0 };
        if t.public_key.check().is_err() || !self.sidecar.is_some_and(|s| s.subjects.iter().all(|x| *x == subject)) {
            return Err(Rejection::StaleTeamEpoch);
        }
        for member in &members {
            self.put_envelope(subject, KeyHolder::Member { member: *member });
        }
        self.put_new_team(t, Vec::new());
        Ok(())
    }

    /// The entry of a team (or directory) `t` creates, listing `members`, at key epoch 0.
    fn put_new_team(&mut self, t: &TeamCreate, members: Vec<MemberId>) {
        let entry = TeamEntry {
            team: t.team,
            org: self.signer.org.clone(),
            epoch: 0,
            public_key: t.public_key.clone(),
            members,
            created_by: self.signer.id,
            created_at: self.ctx.time,
        };
        self.state.put(keys::team(&t.team), &entry);
    }

    /// A staff member who holds the directory key wraps it for another active staff member of
    /// the organisation (one envelope).
    fn directory_add(&mut self, t: &TeamAdd, team: &TeamEntry) -> Result<(), Rejection> {
        let subject = KeySubject::Team { team: t.team, epoch: team.epoch };
        let holds =
            |member: &MemberId| self.state.get(&keys::envelope(&subject, &KeyHolder::Member { member: *member }));
        if !self.is_directory_staff(&t.team) || holds(&self.signer.id).is_none() {
            return Err(Rejection::NotDirectoryStaff);
        }
        self.directory_candidate(&t.member, &t.team)?;
        if holds(&t.member).is_some() {
            return Err(Rejection::AlreadyInTeam);
        }
        if self.sidecar.is_none_or(|s| s.subjects != [subject]) {
            return Err(Rejection::StaleTeamEpoch);
        }
        self.put_envelope(subject, KeyHolder::Member { member: t.member });
        Ok(())
    }

    /// A doctor creates a care team with its first key, wrapped for each member (the doctor among them).
    pub(super) fn team_create(&mut self, t: &TeamCreate) -> Result<(), Rejection> {
        if self.is_directory(&t.team) {
            return self.directory_create(t);
        }
        if self.signer.role != Role::Doctor {
            return Err(Rejection::NotATeamDoctor);
        }
        if self.member(&t.team).is_some() || self.team(&t.team).is_some() {
            return Err(Rejection::MemberExists);
        }
        let mut members = t.members.clone();
        members.sort();
        members.dedup();
        if members.is_empty() || members.len() > TEAM_MEMBERS_MAX {
            return Err(Rejection::TeamFull);
        }
        if members.binary_search(&self.signer.id).is_err() {
            return Err(Rejection::NotInTeam);
        }
        for member in &members {
            self.team_candidate(member)?;
        }
        let subject = KeySubject::Team { team: t.team, epoch: 0 };
        if t.public_key.check().is_err() || !self.sidecar.is_some_and(|s| s.subjects.iter().all(|x| *x == subject)) {
            return Err(Rejection::StaleTeamEpoch);
        }
        for member in &members {
            self.join_team(member, &t.team)?;
            self.put_envelope(subject, KeyHolder::Member { member: *member });
        }
        self.put_new_team(t, members);
        Ok(())
    }

    /// A doctor of the team adds a member: the team entry, the member's list of teams and one
    /// envelope, whatever the number of records the team can read.
    pub(super) fn team_add(&mut self, t: &TeamAdd) -> Result<(), Rejection> {
        let mut team = self.team(&t.team).ok_or(Rejection::UnknownTeam)?;
        if self.is_directory(&t.team) {
            return self.directory_add(t, &team);
        }
        self.require_team_doctor(&team)?;
        self.team_candidate(&t.member)?;
        let Err(at) = team.members.binary_search(&t.member) else { return Err(Rejection::AlreadyInTeam) };
        if team.members.len() >= TEAM_MEMBERS_MAX {
            return Err(Rejection::TeamFull);
        }
        let subject = KeySubject::Team { team: t.team, epoch: team.epoch };
        if self.sidecar.is_none_or(|s| s.subjects != [subject]) {
            return Err(Rejection::StaleTeamEpoch);
        }
        team.members.insert(at, t.member);
        self.join_team(&t.member, &t.team)?;
        self.put_envelope(subject, KeyHolder::Member { member: t.member });
        self.state.put(keys::team(&t.team), &team);
        Ok(())
    }

    /// A doctor of the team removes a member, or a member leaves: the team's key moves to the
    /// next epoch, wrapped for exactly the remaining members, with the current key wrapped for
    /// it (so they still read what the team could read; the removed member never holds it).
    pub(super) fn team_remove(&mut self, t: &TeamRemove) -> Result<(), Rejection> {
        let mut team = self.team(&t.team).ok_or(Rejection::UnknownTeam)?;
        if self.is_directory(&t.team) {
            return Err(Rejection::DirectoryNotAChart);
        }
        if t.member == self.signer.id {
            if !team.has(&self.signer.id) {
                return Err(Rejection::NotInTeam);
            }
        } else {
            self.require_team_doctor(&team)?;
        }
        let Ok(at) = team.members.binary_search(&t.member) else { return Err(Rejection::NotInTeam) };
        if team.members.len() == 1 {
            // The last member leaves (no one else could be removing them): the team is dissolved,
            // so no member can be trapped in a team whose doctors left. The entry stays, empty,
            // so its id is never reused (its grants stay inert: no one reads through it, and new
            // records are not wrapped for it).
            let mut teams = self.teams_of(&t.member);
            teams.retain(|x| *x != t.team);
            self.state.put(keys::member_teams(&t.member), &teams);
            team.members.clear();
            self.state.put(keys::team(&t.team), &team);
            return Ok(());
        }
        let epoch = team.epoch.checked_add(1).filter(|e| *e < TEAM_EPOCHS_MAX).ok_or(Rejection::TeamEpochsExhausted)?;
        team.members.remove(at);
        let (current, next) =
            (KeySubject::Team { team: t.team, epoch: team.epoch }, KeySubject::Team { team: t.team, epoch });
        let link = KeyHolder::Team { team: t.team, epoch };
        let facts = self.sidecar.ok_or(Rejection::StaleTeamEpoch)?;
        let mut wrapped_for: Vec<MemberId> = Vec::new();
        let mut linked = false;
        for (subject, holder) in facts.subjects.iter().zip(&facts.holders) {
            match holder {
                KeyHolder::Member { member } if *subject == next => wrapped_for.push(*member),
                h if *h == link && *subject == current => linked = true,
                _ => return Err(Rejection::StaleTeamEpoch),
            }
        }
        wrapped_for.sort();
        if !linked || wrapped_for != team.members || t.public_key.check().is_err() {
            return Err(Rejection::StaleTeamEpoch);
        }
        let mut teams = self.teams_of(&t.member);
        teams.retain(|x| *x != t.team);
        self.state.put(keys::member_teams(&t.member), &teams);
        self.put_envelope(current, link);
        for member in &team.members {
            self.put_envelope(next, KeyHolder::Member { member: *member });
        }
        team.epoch = epoch;
        team.public_key = t.public_key.clone();
        self.state.put(keys::team(&t.team), &team);
        Ok(())
    }
}
