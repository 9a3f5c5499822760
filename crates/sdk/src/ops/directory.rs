//! The organisation's directory: the key under which its staff keep the records that describe no
//! patient (Practitioner, Organization, Location, Medication...), and the directory's id, which
//! stands where a chart's patient would (see [`medledger_ledger::directory_id`]).

use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap;
use medledger_ledger::state::{MemberStatus, RecordEntry, TeamEntry};
use medledger_ledger::{KeySubject, Rejection, Sidecar, TeamCreate, TxKind, directory_id};
use medledger_types::limits::SIDECAR_ENVELOPES_MAX;
use medledger_types::{MemberId, Role};

use super::{Committed, Session, all_pages, chart_secret};
use crate::error::{Result, SdkError};
use crate::home::Identity;

/// Staff pages (of up to 1000 members each, per role) read when a directory key is first made.
const STAFF_PAGES_MAX: usize = 8;

impl Session {
    /// The id of `me`'s organisation's directory.
    pub fn directory_of(&self, me: &Identity) -> MemberId {
        directory_id(&me.org)
    }

    /// `me`'s organisation's directory entry, its key made first if no one has yet: wrapped for
    /// `me` and the organisation's other active staff (as many as one transaction carries; a
    /// holder passes it on to the others with [`Session::directory_add`]). Staff only.
    pub async fn directory(&self, me: &Identity) -> Result<TeamEntry> {
        if me.role == Role::Patient {
            return Err(SdkError::Denied("an organisation's directory is kept by its staff".into()));
        }
        let id = self.directory_of(me);
        if let Some(entry) = self.client.team(me, &id).await? {
            return Ok(entry);
        }
        let key = wrap::generate(KemSuite::default());
        let mut members = self.colleagues(me).await?;
        members.push(me.member);
        members.sort();
        members.dedup();
        let envelopes =
            self.seal_for_members(me, &members, KeySubject::Team { team: id, epoch: 0 }, &chart_secret(&key)).await?;
        let kind = TxKind::TeamCreate(TeamCreate { team: id, public_key: key.encryption_key().clone(), members });
        let sidecar = Sidecar { envelopes, metadata: None, threshold: Default::default() };
        match self.transact(me, kind, Some(sidecar)).await {
            // A colleague made it first: theirs is the directory.
            Ok(_) => {}
            Err(SdkError::Usage(m)) if m.contains(Rejection::MemberExists.as_str()) => {}
            Err(e) => return Err(e),
        }
        self.client.team(me, &id).await?.ok_or_else(|| SdkError::NotFound("the organisation's directory".into()))
    }

    /// A holder of the directory key passes it on to `member`, an active staff member of the
    /// organisation who joined after it was made.
    pub async fn directory_add(&self, me: &Identity, member: &MemberId) -> Result<Committed> {
        let id = self.directory_of(me);
        self.team_add(me, &id, member).await
    }

    /// The records of `me`'s organisation's directory (staff only), every page.
    pub async fn directory_records(&self, me: &Identity) -> Result<Vec<RecordEntry>> {
        let id = self.directory_of(me);
        all_pages(|after| async move { self.client.patient_records_page(me, &id, after.as_deref()).await }).await
    }

    /// Other active staff of `me`'s organisation, at most as many as one transaction wraps for.
    async fn colleagues(&self, me: &Identity) -> Result<Vec<MemberId>> {
        let mut found = Vec::new();
        for role in [Role::Doctor, Role::Nurse, Role::Emergency, Role::Admin, Role::Auditor] {
            let mut after = None;
            for _ in 0..STAFF_PAGES_MAX {
                let page = self.client.staff(role, after.as_ref()).await?;
                found.extend(
                    page.members
                        .iter()
                        .filter(|m| m.org == me.org && m.status == MemberStatus::Active && m.id != me.member)
                        .map(|m| m.id),
                );
                if found.len() >= SIDECAR_ENVELOPES_MAX - 1 {
                    found.truncate(SIDECAR_ENVELOPES_MAX - 1);
                    return Ok(found);
                }
                match page.next.as_deref().map(str::parse::<MemberId>) {
                    Some(Ok(next)) => after = Some(next),
                    _ => break,
                }
            }
        }
        Ok(found)
    }
}
