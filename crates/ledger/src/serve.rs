//! What a validator serves for a committed access: the rule every validator applies before it hands
//! out a record's envelopes, its ciphertext or its key share (DESIGN §6a). The access must be a
//! committed, allowed RecordAccess signed by the reader, for the record's current version; a share
//! released under it is the emergency share too only when break-glass alone allowed the access.
//! (How recent the access must be is the node's business: it needs a clock.)

use medledger_types::{MemberId, Role, Timestamp, TxId};

use crate::state::{
    AccessBasis, BreakGlassEntry, ChartEntry, GrantEntry, MemberEntry, RecordEntry, StateView, TeamEntry,
    TxResultEntry, keys, read,
};
use crate::tx::{GrantScope, RecordAccess};

/// Why a validator serves nothing for an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No committed transaction has this id.
    NotCommitted,
    /// Someone else signed the access.
    OtherSigner,
    /// The ledger denied the access.
    Denied,
    /// The record is gone (erased) since.
    RecordGone,
    /// The record has had another version since.
    RecordChanged,
}

/// What an access allows a validator to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub result: TxResultEntry,
    pub record: RecordEntry,
    /// Only break-glass allowed the access: the reader holds no envelope, so validators release
    /// their emergency shares of `k_env` with their `k_thr` shares.
    pub emergency: bool,
}

/// Applies the rule to the committed transaction `tx`, whose body is `access`, for `reader`.
pub fn served_access(
    view: &(impl StateView + ?Sized),
    tx: &TxId,
    access: &RecordAccess,
    reader: &MemberId,
) -> Result<Served, Refusal> {
    let result: TxResultEntry = read(view, &keys::tx_result(tx)).ok_or(Refusal::NotCommitted)?;
    if result.signer != *reader {
        return Err(Refusal::OtherSigner);
    }
    if !result.outcome.is_applied() {
        return Err(Refusal::Denied);
    }
    // The version the access was for: the current one, or an earlier one still readable.
    let record: RecordEntry = read(view, &keys::record(&access.record)).ok_or(Refusal::RecordGone)?;
    let record = if record.version == access.version {
        record
    } else {
        read(view, &keys::record_version(&access.record, access.version)).ok_or(Refusal::RecordChanged)?
    };
    let emergency = read::<AccessBasis>(view, &keys::access_basis(tx)) == Some(AccessBasis::BreakGlass);
    Ok(Served { result, record, emergency })
}

/// Whether `directory` is the directory of `signer`'s organisation and `signer` its staff (see
/// [`crate::tx::directory_id`]): its records are theirs to list and read.
pub fn is_directory_staff(view: &(impl StateView + ?Sized), signer: &MemberEntry, directory: &MemberId) -> bool {
    signer.role != Role::Patient
        && *directory == crate::tx::directory_id(&signer.org)
        && view.get(&keys::directory(directory)).is_some()
}

/// Whether `signer` stands in a care relationship with `patient` that entitles them to read the
/// patient's ledger entries (chart, grants, and `record`'s entry when given): the patient, one of
/// their delegates, a member holding a live grant from them (`--all`, or on `record`) directly or
/// through a care team they belong to, `record`'s author while their authorship lasts, or a
/// clinician with an open break-glass window on the patient. Everyone else learns nothing from
/// those entries: not whom the patient sees, nor which organisation keeps their chart.
pub fn entitled(
    view: &(impl StateView + ?Sized),
    signer: &MemberEntry,
    patient: &MemberId,
    record: Option<&RecordEntry>,
    now: Timestamp,
) -> bool {
    let me = signer.id;
    if me == *patient && signer.role == Role::Patient {
        return true;
    }
    if is_directory_staff(view, signer, patient) {
        return true;
    }
    let chart: Option<ChartEntry> = read(view, &keys::chart(patient));
    if signer.role == Role::Patient && chart.as_ref().is_some_and(|c| c.is_delegate(&me)) {
        return true;
    }
    if let Some(r) = record
        && r.author == me
        && view.get(&keys::author_revoked(&r.record, &me)).is_none()
        && view.get(&keys::authorship_ended(patient, &me)).is_none()
    {
        return true;
    }
    let mut scopes = vec![GrantScope::All, GrantScope::Sensitive];
    scopes.extend(record.map(|r| GrantScope::Record(r.record)));
    let live = |grantee: &MemberId| {
        scopes.iter().any(|scope| {
            read::<GrantEntry>(view, &keys::grant(patient, grantee, scope)).is_some_and(|g| g.is_live(now))
        })
    };
    if live(&me) {
        return true;
    }
    let teams: Vec<MemberId> = read(view, &keys::member_teams(&me)).unwrap_or_default();
    if teams.iter().any(|t| read::<TeamEntry>(view, &keys::team(t)).is_some_and(|team| team.has(&me)) && live(t)) {
        return true;
    }
    let clinician = matches!(signer.role, Role::Doctor | Role::Emergency);
    clinician && read::<BreakGlassEntry>(view, &keys::break_glass(patient, &me)).is_some_and(|g| now < g.until)
}
