//! Sidecars: the wrapped keys (and encrypted metadata) that travel beside a transaction, committed by
//! their digest in the signed body and kept in validator state outside the Merkle tree, so blocks
//! verify without them and erasure can purge them without touching history.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::wrap::{Envelope, WrapContext};
use medledger_types::limits::VALIDATORS_MAX;
use medledger_types::limits::{METADATA_BYTES_MAX, SIDECAR_BYTES_MAX, SIDECAR_ENVELOPES_MAX};
use medledger_types::{ChainId, Digest, MemberId, RecordId, Trailing, decode_canonical, encode};
use serde::{Deserialize, Serialize};

/// Who can open an envelope: a member, whoever holds a patient's chart key of an epoch, or a care
/// team's key of an epoch (its members).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeyHolder {
    Member { member: MemberId },
    Chart { patient: MemberId, epoch: u32 },
    Team { team: MemberId, epoch: u32 },
}

/// What secret an envelope wraps: a record version's data key, or a chart key's secret.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeySubject {
    Record {
        record: RecordId,
        version: u32,
    },
    Chart {
        patient: MemberId,
        epoch: u32,
    },
    /// The key of a break-glass note (random id), wrapped for the patient and the auditors.
    Note {
        id: [u8; 16],
    },
    /// A care team's key of an epoch: wrapped for its members, and for the team's next epoch (so
    /// the current key leads back to every earlier one, never forward).
    Team {
        team: MemberId,
        epoch: u32,
    },
}

fn tagged_hash(tag: &[u8], value: &impl BorshSerialize) -> [u8; 32] {
    let mut bytes = tag.to_vec();
    bytes.extend_from_slice(&encode(value));
    medledger_crypto::sha256(&bytes)
}

impl KeyHolder {
    /// The HPKE AAD naming this recipient.
    pub fn context_id(&self) -> [u8; 32] {
        tagged_hash(b"medledger/holder/v1", self)
    }
}

impl KeySubject {
    fn context_id(&self) -> [u8; 32] {
        tagged_hash(b"medledger/subject/v1", self)
    }

    fn version(&self) -> u64 {
        match self {
            KeySubject::Record { version, .. } => u64::from(*version),
            KeySubject::Chart { epoch, .. } | KeySubject::Team { epoch, .. } => u64::from(*epoch),
            KeySubject::Note { .. } => 0,
        }
    }

    /// The binding of an envelope of this subject for `holder` on `chain_id`.
    pub fn wrap_context(&self, chain_id: ChainId, holder: KeyHolder) -> WrapContext {
        WrapContext {
            chain_id: *chain_id.as_bytes(),
            subject: self.context_id(),
            version: self.version(),
            recipient: holder.context_id(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SidecarEnvelope {
    pub holder: KeyHolder,
    pub subject: KeySubject,
    pub envelope: Envelope,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Sidecar {
    pub envelopes: Vec<SidecarEnvelope>,
    /// Record metadata (resource type, dates, codes) encrypted under the record's data key.
    pub metadata: Option<Vec<u8>>,
    /// The validators' shares of the record's `k_thr` (DESIGN §6a). Last field: sidecars written
    /// before threshold release keep their encoding and digest.
    pub threshold: Trailing<crate::threshold::ThresholdShares>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    #[error("sidecar is malformed or over its limits")]
    Malformed,
    #[error("sidecar does not match the digest the transaction commits to")]
    DigestMismatch,
    #[error("transaction commits to a sidecar but none was sent, or the reverse")]
    Presence,
    #[error("sidecar envelopes do not match the transaction's recipients")]
    Recipients,
}

impl Sidecar {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn digest(&self) -> Digest {
        Digest::new(medledger_crypto::sha256(&self.encode()))
    }

    /// Decodes a sidecar from outside input and checks its limits.
    pub fn decode(bytes: &[u8]) -> Result<Self, SidecarError> {
        let sidecar: Sidecar = decode_canonical(bytes, SIDECAR_BYTES_MAX).map_err(|_| SidecarError::Malformed)?;
        if sidecar.envelopes.len() > SIDECAR_ENVELOPES_MAX
            || sidecar.metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX)
            || sidecar.threshold.0.as_ref().is_some_and(|t| !t.well_formed(VALIDATORS_MAX))
        {
            return Err(SidecarError::Malformed);
        }
        Ok(sidecar)
    }

    /// The envelope for `holder` of `subject`, if this sidecar carries one.
    pub fn envelope_for(&self, holder: KeyHolder, subject: KeySubject) -> Option<&Envelope> {
        self.envelopes.iter().find(|e| e.holder == holder && e.subject == subject).map(|e| &e.envelope)
    }

    /// The holders this sidecar has envelopes for, sorted and without duplicates.
    pub fn holders(&self) -> Vec<KeyHolder> {
        let mut holders: Vec<KeyHolder> = self.envelopes.iter().map(|e| e.holder).collect();
        holders.sort();
        holders.dedup();
        holders
    }
}

/// What execution reads from a sidecar. When erasure purges a sidecar, the validators keep this in
/// its place (see [`purged_slot`]), so the blocks that carried it still re-execute to the states
/// their headers certify, while no wrapped key survives.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SidecarFacts {
    /// The digest the transaction committed to.
    pub digest: Digest,
    /// The subject of each envelope, in order.
    pub subjects: Vec<KeySubject>,
    /// The holder of each envelope, in order.
    pub holders: Vec<KeyHolder>,
    pub shares: Option<crate::threshold::SharesShape>,
}

impl Sidecar {
    pub fn facts(&self) -> SidecarFacts {
        SidecarFacts {
            digest: self.digest(),
            subjects: self.envelopes.iter().map(|e| e.subject).collect(),
            holders: self.envelopes.iter().map(|e| e.holder).collect(),
            shares: self.threshold.0.as_ref().map(|t| t.shape()),
        }
    }
}

/// What encryption adds to a note (the payload header and one segment's tag, with room to spare).
pub const NOTE_OVERHEAD_BYTES: usize = 256;

/// How a purged sidecar slot starts. A real sidecar cannot: its first four bytes are its envelope
/// count, and this prefix reads as a count far over the limit.
const PURGED_MAGIC: &[u8; 16] = b"medledger/purged";

/// The bytes that replace a purged sidecar in a block: the magic, the facts, then zeros up to
/// `len` (the purged sidecar's length, so the block keeps its length and can be rewritten in
/// place). `None` when the facts do not fit in `len` bytes.
pub fn purged_slot(facts: &SidecarFacts, len: usize) -> Option<Vec<u8>> {
    let mut bytes = PURGED_MAGIC.to_vec();
    bytes.extend_from_slice(&encode(facts));
    if bytes.len() > len {
        return None;
    }
    bytes.resize(len, 0);
    Some(bytes)
}

/// The facts of a purged slot; `None` when the bytes are not one (a full sidecar, or malformed).
pub fn parse_purged(bytes: &[u8]) -> Option<SidecarFacts> {
    let mut rest = bytes.strip_prefix(PURGED_MAGIC.as_slice())?;
    let facts = SidecarFacts::deserialize(&mut rest).ok()?;
    let bounded = facts.subjects.len() <= SIDECAR_ENVELOPES_MAX
        && facts.holders.len() <= SIDECAR_ENVELOPES_MAX
        && facts
            .shares
            .as_ref()
            .is_none_or(|s| s.suites.len() <= VALIDATORS_MAX && s.validators.len() <= VALIDATORS_MAX);
    (bounded && rest.iter().all(|b| *b == 0)).then_some(facts)
}

/// Whether a transaction of this kind must carry a sidecar (`Some(true)`), must not
/// (`Some(false)`), or may (`None`: a break-glass with or without a note).
pub(crate) fn required(kind: &crate::TxKind) -> Option<bool> {
    use crate::TxKind;
    match kind {
        TxKind::Enroll(e) => Some(e.chart_key.is_some()),
        TxKind::Grant(g) => Some(g.scope != crate::tx::GrantScope::Sensitive),
        TxKind::RegisterRecord(_) | TxKind::AppendVersion(_) | TxKind::Rotate(_) => Some(true),
        TxKind::Revoke(r) => Some(r.new_chart.is_some()),
        TxKind::TeamCreate(_) | TxKind::TeamAdd(_) | TxKind::TeamRemove(_) => Some(true),
        // A patient's new keys come with the chart key wrapped for them; others' without.
        TxKind::RotateKeys(_) => None,
        TxKind::CustodyRelease(_) | TxKind::Recovery(_) | TxKind::Governance(_) => Some(false),
        TxKind::Delegate(d) => Some(d.appoint || d.new_chart.is_some()),
        TxKind::BreakGlass(_) => None,
        TxKind::RecordAccess(_)
        | TxKind::Suspend(_)
        | TxKind::Erase(_)
        | TxKind::LegalHold(_)
        | TxKind::ChartReview(_)
        | TxKind::ShareKey(_) => Some(false),
        TxKind::Reshare(r) => Some(matches!(r.step, crate::ReshareStep::Deal { .. })),
    }
}

/// A chart's next epoch: one envelope per named recipient, all of one chart epoch of `patient`,
/// and the link: the epoch before wrapped for the next (so whoever holds a chart key reaches the
/// records of every earlier epoch, never of a later one).
fn new_chart_envelopes(
    patient: &MemberId,
    new_chart: Option<&crate::NewChartEpoch>,
    envelopes: &[&SidecarEnvelope],
) -> Result<(), SidecarError> {
    let Some(new_chart) = new_chart else {
        return Err(SidecarError::Presence);
    };
    let (link, envelopes): (Vec<&SidecarEnvelope>, Vec<&SidecarEnvelope>) =
        envelopes.iter().partition(|e| matches!(e.holder, KeyHolder::Chart { .. }));
    let linked = match (link.as_slice(), envelopes.first()) {
        ([l], Some(first)) => matches!(
            (l.holder, l.subject, first.subject),
            (KeyHolder::Chart { patient: p, epoch: to }, KeySubject::Chart { patient: q, epoch: from }, KeySubject::Chart { epoch: next, .. })
                if p == *patient && q == *patient && to == next && from.checked_add(1) == Some(to)
        ),
        _ => false,
    };
    if !linked {
        return Err(SidecarError::Recipients);
    }
    let mut named: Vec<KeyHolder> = new_chart.recipients.iter().map(|m| KeyHolder::Member { member: *m }).collect();
    named.sort();
    named.dedup();
    let mut holders: Vec<KeyHolder> = envelopes.iter().map(|e| e.holder).collect();
    holders.sort();
    if named.len() != new_chart.recipients.len()
        || named != holders
        || envelopes.iter().any(|e| !matches!(e.subject, KeySubject::Chart { patient: p, .. } if p == *patient))
    {
        return Err(SidecarError::Recipients);
    }
    let epochs: std::collections::BTreeSet<_> = envelopes.iter().map(|e| e.subject).collect();
    if epochs.len() > 1 {
        return Err(SidecarError::Recipients);
    }
    Ok(())
}

/// A care team's key of one epoch, wrapped for each of `members` and nobody else.
fn team_key_for(team: &MemberId, members: &[MemberId], envelopes: &[&SidecarEnvelope]) -> Result<(), SidecarError> {
    let mut named: Vec<KeyHolder> = members.iter().map(|m| KeyHolder::Member { member: *m }).collect();
    named.sort();
    named.dedup();
    let mut holders: Vec<KeyHolder> = envelopes.iter().map(|e| e.holder).collect();
    holders.sort();
    let subjects: std::collections::BTreeSet<_> = envelopes.iter().map(|e| e.subject).collect();
    let one_team_key =
        subjects.len() == 1 && subjects.iter().all(|s| matches!(s, KeySubject::Team { team: t, .. } if t == team));
    if named.len() != members.len() || named != holders || !one_team_key {
        return Err(SidecarError::Recipients);
    }
    Ok(())
}

/// Checks, without state, that a sidecar carries exactly the envelopes its transaction names.
/// What needs state (current chart epoch, record version) is checked during execution.
pub(crate) fn check_against(tx: &crate::Transaction, sidecar: &Sidecar) -> Result<(), SidecarError> {
    use crate::{GrantScope, TxKind};
    let mut seen = std::collections::BTreeSet::new();
    if !sidecar.envelopes.iter().all(|e| seen.insert(e.holder)) {
        return Err(SidecarError::Recipients);
    }
    if sidecar.envelopes.iter().any(|e| e.envelope.check().is_err()) {
        return Err(SidecarError::Malformed);
    }
    let is_record = matches!(
        tx.body.kind,
        TxKind::RegisterRecord(_)
            | TxKind::AppendVersion(_)
            | TxKind::Rotate(_)
            | TxKind::Reshare(crate::Reshare { step: crate::ReshareStep::Deal { .. }, .. })
    );
    if sidecar.threshold.0.as_ref().is_some_and(|t| !is_record || t.shares.iter().any(|s| s.envelope.check().is_err()))
    {
        return Err(SidecarError::Malformed);
    }
    let is_note = matches!(tx.body.kind, TxKind::BreakGlass(_));
    let metadata_allowed = sidecar.metadata.is_none() || is_record || is_note;
    if !metadata_allowed {
        return Err(SidecarError::Malformed);
    }
    let one = |holder: KeyHolder, subject_ok: &dyn Fn(&KeySubject) -> bool| match sidecar.envelopes.as_slice() {
        [e] if e.holder == holder && subject_ok(&e.subject) => Ok(()),
        _ => Err(SidecarError::Recipients),
    };
    match &tx.body.kind {
        TxKind::Enroll(e) => {
            one(KeyHolder::Member { member: e.member }, &|s| *s == KeySubject::Chart { patient: e.member, epoch: 0 })
        }
        TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) | TxKind::Rotate(crate::tx::Rotate { next: r, .. }) => {
            let mut named: Vec<KeyHolder> = r.recipients.clone();
            named.sort();
            named.dedup();
            let subject = KeySubject::Record { record: r.record, version: r.version };
            if named.len() != r.recipients.len()
                || named != sidecar.holders()
                || sidecar.envelopes.iter().any(|e| e.subject != subject)
            {
                return Err(SidecarError::Recipients);
            }
            Ok(())
        }
        // A grant to a member or to a care team (the holder names which; the state checks it). An
        // `--all` grant to a team also moves the chart to an epoch the team never holds.
        TxKind::Grant(g) => {
            let grantee = |holder: &KeyHolder| match holder {
                KeyHolder::Member { member } => *member == g.grantee,
                KeyHolder::Team { team, .. } => *team == g.grantee,
                KeyHolder::Chart { .. } => false,
            };
            match (g.scope, g.chart_epoch, &g.new_chart) {
                (GrantScope::Record(record), None, None) => match sidecar.envelopes.as_slice() {
                    [e] if grantee(&e.holder)
                        && matches!(e.subject, KeySubject::Record { record: r, .. } if r == record) =>
                    {
                        Ok(())
                    }
                    _ => Err(SidecarError::Recipients),
                },
                (GrantScope::All, Some(epoch), None) => one(KeyHolder::Member { member: g.grantee }, &|s| {
                    *s == KeySubject::Chart { patient: g.patient, epoch }
                }),
                (GrantScope::All, Some(epoch), Some(new_chart)) => {
                    let current = KeySubject::Chart { patient: g.patient, epoch };
                    let (to_team, rest): (Vec<&SidecarEnvelope>, Vec<&SidecarEnvelope>) =
                        sidecar.envelopes.iter().partition(|e| matches!(e.holder, KeyHolder::Team { .. }));
                    match to_team.as_slice() {
                        [e] if e.subject == current
                            && matches!(e.holder, KeyHolder::Team { team, .. } if team == g.grantee) => {}
                        _ => return Err(SidecarError::Recipients),
                    }
                    let next_epoch = epoch.checked_add(1).ok_or(SidecarError::Recipients)?;
                    let next = KeySubject::Chart { patient: g.patient, epoch: next_epoch };
                    let is_link =
                        |e: &SidecarEnvelope| matches!(e.holder, KeyHolder::Chart { .. }) && e.subject == current;
                    if rest.iter().any(|e| e.subject != next && !is_link(e)) {
                        return Err(SidecarError::Recipients);
                    }
                    new_chart_envelopes(&g.patient, Some(new_chart), &rest)
                }
                _ => Err(SidecarError::Recipients),
            }
        }
        TxKind::Revoke(r) => {
            new_chart_envelopes(&r.patient, r.new_chart.as_ref(), &sidecar.envelopes.iter().collect::<Vec<_>>())
        }
        TxKind::TeamCreate(t) => team_key_for(&t.team, &t.members, &sidecar.envelopes.iter().collect::<Vec<_>>()),
        TxKind::TeamAdd(t) => one(
            KeyHolder::Member { member: t.member },
            &|s| matches!(s, KeySubject::Team { team, .. } if *team == t.team),
        ),
        // The next key for the remaining members, and the link: the current key wrapped for the next.
        TxKind::TeamRemove(t) => {
            let (link, members): (Vec<&SidecarEnvelope>, Vec<&SidecarEnvelope>) =
                sidecar.envelopes.iter().partition(|e| matches!(e.holder, KeyHolder::Team { .. }));
            match link.as_slice() {
                [e] if matches!((e.holder, e.subject), (KeyHolder::Team { team, epoch }, KeySubject::Team { team: s, epoch: prev })
                    if team == t.team && s == t.team && Some(epoch) == prev.checked_add(1)) => {}
                _ => return Err(SidecarError::Recipients),
            }
            let ids: Vec<MemberId> = members
                .iter()
                .filter_map(|e| match e.holder {
                    KeyHolder::Member { member } => Some(member),
                    _ => None,
                })
                .collect();
            // No one left to wrap the next key for: the last member leaves (the team dissolves).
            if members.is_empty() { Ok(()) } else { team_key_for(&t.team, &ids, &members) }
        }
        TxKind::Delegate(d) => match (d.appoint, d.chart_epoch, &d.new_chart) {
            (true, Some(epoch), None) => one(KeyHolder::Member { member: d.delegate }, &|s| {
                *s == KeySubject::Chart { patient: d.patient, epoch }
            }),
            (false, None, Some(new_chart)) => {
                new_chart_envelopes(&d.patient, Some(new_chart), &sidecar.envelopes.iter().collect::<Vec<_>>())
            }
            _ => Err(SidecarError::Recipients),
        },
        // A note: its ciphertext, and its key wrapped under one subject for each of its readers
        // (which ones may read it is checked with the state).
        TxKind::BreakGlass(_) => {
            let note_len = sidecar.metadata.as_ref().map_or(0, Vec::len);
            let subjects: std::collections::BTreeSet<_> = sidecar.envelopes.iter().map(|e| e.subject).collect();
            let one_note = matches!(subjects.iter().next(), Some(KeySubject::Note { .. })) && subjects.len() == 1;
            let members = sidecar.envelopes.iter().all(|e| matches!(e.holder, KeyHolder::Member { .. }));
            if !one_note
                || !members
                || sidecar.envelopes.len() > medledger_types::limits::NOTE_READERS_MAX + 1
                || note_len == 0
                || note_len > medledger_types::limits::BREAK_GLASS_NOTE_BYTES_MAX + NOTE_OVERHEAD_BYTES
            {
                return Err(SidecarError::Recipients);
            }
            Ok(())
        }
        // A custody claim moves the chart to a new epoch; any other patient's rotation brings
        // the current chart key for the new encryption key.
        TxKind::RotateKeys(k) if k.new_chart.is_some() => {
            new_chart_envelopes(&tx.body.signer, k.new_chart.as_ref(), &sidecar.envelopes.iter().collect::<Vec<_>>())
        }
        TxKind::RotateKeys(_) => one(
            KeyHolder::Member { member: tx.body.signer },
            &|s| matches!(s, KeySubject::Chart { patient, .. } if *patient == tx.body.signer),
        ),
        TxKind::RecordAccess(_)
        | TxKind::Suspend(_)
        | TxKind::Erase(_)
        | TxKind::LegalHold(_)
        | TxKind::ShareKey(_)
        | TxKind::CustodyRelease(_)
        | TxKind::Recovery(_)
        | TxKind::ChartReview(_)
        | TxKind::Governance(_) => Err(SidecarError::Presence),
        // A dealing is its threshold shares only: no envelopes, no metadata.
        TxKind::Reshare(_)
            if sidecar.envelopes.is_empty() && sidecar.metadata.is_none() && sidecar.threshold.0.is_some() =>
        {
            Ok(())
        }
        TxKind::Reshare(_) => Err(SidecarError::Malformed),
    }
}
