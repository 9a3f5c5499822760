//! The deterministic state machine: a block's transactions applied in order to the state before it.
//!
//! A transaction is either *invalid* (wrong chain, unknown signer, bad signature, sidecar that does
//! not match its digest): it cannot appear in a block, the proposer drops it and a validator that
//! finds one votes against the block. Or it is *valid* and gets an outcome: applied, or rejected with
//! a [`Rejection`]. A rejected transaction changes nothing but the signer's nonce, its own result
//! entry and, when it concerned a patient, a `Denied` event in that patient's audit trail (every
//! denied attempt is on the ledger). A stale nonce changes nothing at all (a replay must not
//! overwrite the original's result).

use medledger_crypto::sign::{VerifyingKey, verify_batch};
use medledger_crypto::wrap::EncryptionKey;
use medledger_types::limits::{
    DELEGATES_MAX, DISPLAY_NAME_BYTES_MAX, GRANT_TTL_MS_MAX, RECORD_CIPHERTEXT_BYTES_MAX, SHARE_KEY_INTERVAL_MS,
    TEAM_EPOCHS_MAX, TEAM_MEMBERS_MAX, TEAMS_PER_MEMBER_MAX,
};
use medledger_types::{ChainId, Height, MemberId, PurposeOfUse, Role, Timestamp, TxId, encode};

use crate::genesis::NetworkPolicy;
use crate::governance::{self, Proposal, ProposalEntry, ValidatorEntry, ValidatorEpoch};
use crate::policy::{CHART_HOLDERS_MAX, CHART_TEAMS_MAX, Rejection};
use crate::sidecar::{KeyHolder, KeySubject, SidecarError, SidecarFacts};
use crate::state::{
    AccessBasis, AuditAction, AuditEvent, BreakGlassEntry, ChartEntry, CustodyReleaseEntry, Decision, EnvelopeRef,
    ErasedEntry, FlaggedEntry, GrantEntry, KeyEvent, LegalHoldEntry, MemberEntry, MemberStatus, OrgEntry, Overlay,
    RecordEntry, RecoveryEntry, StateView, TeamEntry, TxResultEntry, WriteSet, keys, last_nonce, read,
};
use crate::threshold::ThresholdConfig;
use crate::tx::{
    BreakGlass, CustodyRelease, Delegate, Enroll, Erase, Grant, GrantScope, KeyChange, LegalHold, NewChartEpoch,
    RecordAccess, Recovery, RecoveryAction, RegisterRecord, Revoke, Rotate, RotateKeys, Suspend, TX_NAMESPACE, TeamAdd,
    TeamCreate, TeamRemove, Transaction, TxKind, TxOutcome, claim_code_hash,
};

/// What execution knows about the block: nothing else, in particular no wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockContext<'g> {
    pub chain_id: ChainId,
    pub height: Height,
    pub time: Timestamp,
    /// The validators' consensus keys, in genesis order (they sign validators' own transactions).
    pub validators: &'g [VerifyingKey],
}

/// The result of executing a block: its writes (applied atomically) and one outcome per transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Execution {
    pub writes: WriteSet,
    pub results: Vec<TxOutcome>,
}

/// Why a transaction cannot be in a block at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxInvalid {
    #[error("transaction is for another chain")]
    WrongChain,
    #[error("signer is not enrolled")]
    UnknownSigner,
    #[error("signature does not verify")]
    BadSignature,
    #[error("sidecar: {0}")]
    Sidecar(#[from] SidecarError),
}

/// Why a block is invalid: the first invalid transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transaction {index} is invalid: {error}")]
pub struct BlockInvalid {
    pub index: usize,
    pub error: TxInvalid,
}

/// Applies transactions one at a time on top of a base state; the proposer uses it to build a block
/// (dropping invalid transactions), [`execute_block`] to check one.
pub struct Executor<'a, V: StateView + ?Sized> {
    state: Overlay<'a, V>,
    ctx: BlockContext<'a>,
    results: Vec<TxOutcome>,
    audit_index: u32,
    /// Replaying finalized history: sidecars an erasure purged are accepted as their kept facts.
    history: bool,
}

/// The writes of one transaction over the block's state so far.
struct TxState<'s> {
    outer: &'s dyn StateView,
    writes: WriteSet,
}

impl StateView for TxState<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(value) => value.clone(),
            None => self.outer.get(key),
        }
    }
}

impl TxState<'_> {
    fn put(&mut self, key: Vec<u8>, value: &impl borsh::BorshSerialize) {
        self.writes.insert(key, Some(encode(value)));
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }
}

/// The marker value of index entries whose key says everything.
const PRESENT: u8 = 1;

impl<'a, V: StateView + ?Sized> Executor<'a, V> {
    pub fn new(base: &'a V, ctx: BlockContext<'a>) -> Self {
        Self { state: Overlay::new(base), ctx, results: Vec::new(), audit_index: 0, history: false }
    }

    /// An executor for finalized blocks, whose purged sidecars it accepts (see [`SidecarFacts`]).
    pub fn for_history(base: &'a V, ctx: BlockContext<'a>) -> Self {
        Self { history: true, ..Self::new(base, ctx) }
    }

    /// The state with every transaction applied so far.
    pub fn view(&self) -> &Overlay<'a, V> {
        &self.state
    }

    /// Applies one transaction. `checked_with`, the key the caller already verified the signature
    /// against, skips the check when it is the key this state holds for the signer.
    pub fn apply(
        &mut self,
        tx: &Transaction,
        sidecar: Option<&[u8]>,
        checked_with: Option<&VerifyingKey>,
    ) -> Result<&TxOutcome, TxInvalid> {
        let body = &tx.body;
        if body.chain_id != self.ctx.chain_id {
            return Err(TxInvalid::WrongChain);
        }
        if let TxKind::ShareKey(share_key) = &body.kind {
            return self.apply_share_key(tx, share_key, checked_with);
        }
        let signer: MemberEntry = read(&self.state, &keys::member(&body.signer)).ok_or(TxInvalid::UnknownSigner)?;
        // A recovery is completed with the keys it installs (the member lost the old ones).
        let key = match &body.kind {
            TxKind::Recovery(Recovery { action: RecoveryAction::Complete, .. }) => {
                read::<RecoveryEntry>(&self.state, &keys::recovery(&body.signer))
                    .ok_or(TxInvalid::BadSignature)?
                    .signing_key
            }
            _ => signer.signing_key,
        };
        if checked_with != Some(&key) && !tx.verify_signature(&key) {
            return Err(TxInvalid::BadSignature);
        }
        let sidecar = crate::block::sidecar_facts(tx, sidecar, self.history)?;

        let index = self.results.len();
        if body.nonce <= last_nonce(&self.state, &body.signer) {
            self.results.push(TxOutcome::Rejected { reason: Rejection::StaleNonce });
            return Ok(&self.results[index]);
        }
        let tx_id = tx.id();
        let mut local = TxState { outer: &self.state, writes: WriteSet::new() };
        let outcome = if signer.status == MemberStatus::Suspended {
            Err(Rejection::SignerSuspended)
        } else if signer.role != Role::Patient && org_left(&self.state, &signer.org) {
            Err(Rejection::OrgLeft)
        } else {
            let mut run = Run {
                state: &mut local,
                ctx: self.ctx,
                signer: &signer,
                tx_id,
                sidecar: sidecar.as_ref(),
                on_behalf_of: None,
            };
            run.kind(&body.kind)
        };
        let writes = match outcome {
            Ok(audit) => {
                let mut writes = local.writes;
                if let Some((patient, event)) = audit {
                    self.file_audit(&mut writes, patient, event);
                }
                self.results.push(TxOutcome::Applied);
                writes
            }
            Err(reason) => {
                let denied = denial_event(&self.state, &signer, &body.kind, reason, tx_id, self.ctx);
                let mut writes = WriteSet::new();
                if let Some((patient, event)) = denied {
                    self.file_audit(&mut writes, patient, event);
                }
                self.results.push(TxOutcome::Rejected { reason });
                writes
            }
        };
        Ok(self.close(tx, tx_id, index, writes))
    }

    /// Records a transaction's nonce and result beside its writes and applies them.
    fn close(&mut self, tx: &Transaction, tx_id: TxId, index: usize, mut writes: WriteSet) -> &TxOutcome {
        writes.insert(keys::nonce(&tx.body.signer), Some(encode(&tx.body.nonce)));
        let result = TxResultEntry {
            height: self.ctx.height,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            time: self.ctx.time,
            signer: tx.body.signer,
            outcome: self.results[index].clone(),
        };
        writes.insert(keys::tx_result(&tx_id), Some(encode(&result)));
        self.state.writes.extend(writes);
        &self.results[index]
    }

    /// A validator's own transaction: its next share key. The signer must be the id of the named
    /// validator's consensus key, and the signature that key's.
    fn apply_share_key(
        &mut self,
        tx: &Transaction,
        next: &crate::tx::ShareKey,
        checked_with: Option<&VerifyingKey>,
    ) -> Result<&TxOutcome, TxInvalid> {
        let body = &tx.body;
        let key = self.ctx.validators.get(next.validator as usize).ok_or(TxInvalid::UnknownSigner)?;
        if body.signer != crate::tx::validator_member_id(key) {
            return Err(TxInvalid::UnknownSigner);
        }
        if checked_with != Some(key) && !tx.verify_signature(key) {
            return Err(TxInvalid::BadSignature);
        }
        crate::block::check_sidecar(tx, None)?;
        let index = self.results.len();
        if body.nonce <= last_nonce(&self.state, &body.signer) {
            self.results.push(TxOutcome::Rejected { reason: Rejection::StaleNonce });
            return Ok(&self.results[index]);
        }
        let mut writes = WriteSet::new();
        let config: Option<ThresholdConfig> = read(&self.state, keys::THRESHOLD);
        let outcome = match config {
            None => TxOutcome::Rejected { reason: Rejection::ThresholdShares },
            Some(mut config) => {
                let current = config.share_keys.get(next.validator as usize);
                let replaced = keys::share_key_replaced(next.validator);
                let last: Option<Timestamp> = read(&self.state, &replaced);
                let too_soon =
                    last.is_some_and(|t| self.ctx.time.get() < t.get().saturating_add(SHARE_KEY_INTERVAL_MS));
                if next.public_key.check().is_err()
                    || current.is_none_or(|k| k.suite != next.public_key.suite)
                    || config.share_keys.contains(&next.public_key)
                {
                    TxOutcome::Rejected { reason: Rejection::InvalidShareKey }
                } else if too_soon {
                    TxOutcome::Rejected { reason: Rejection::ShareKeyTooSoon }
                } else {
                    config.share_keys[next.validator as usize] = next.public_key.clone();
                    config.epoch = config.epoch.saturating_add(1);
                    writes.insert(keys::THRESHOLD.to_vec(), Some(encode(&config)));
                    writes.insert(replaced, Some(encode(&self.ctx.time)));
                    TxOutcome::Applied
                }
            }
        };
        self.results.push(outcome);
        Ok(self.close(tx, tx.id(), index, writes))
    }

    /// Files an event in the patient's trail and, when flagged, in the auditors' review queue.
    fn file_audit(&mut self, writes: &mut WriteSet, patient: MemberId, event: AuditEvent) {
        if event.is_flagged() {
            let flagged = FlaggedEntry { patient, event: event.clone() };
            writes.insert(keys::flagged(self.ctx.height, self.audit_index), Some(encode(&flagged)));
        }
        writes.insert(keys::audit(&patient, self.ctx.height, self.audit_index), Some(encode(&event)));
        self.audit_index += 1;
    }

    pub fn finish(self) -> Execution {
        Execution { writes: self.state.writes, results: self.results }
    }
}

/// Executes a finalized block on top of `base` (committing it, or replaying history, where a
/// sidecar may have been purged by an erasure since). Signatures of signers already enrolled
/// before the block are checked in one batch; those enrolled within the block, one by one.
pub fn execute_block<V: StateView + ?Sized>(
    base: &V,
    ctx: BlockContext<'_>,
    txs: &[Transaction],
    sidecars: &[Option<Vec<u8>>],
) -> Result<Execution, BlockInvalid> {
    execute(base, ctx, txs, sidecars, &[], true)
}

/// Executes a proposed block: every sidecar must be whole. `verified[i]`, when set, is the key
/// the caller already checked transaction `i`'s signature against; it is trusted only while it is
/// still the signer's key (a member's keys can change, even earlier in the same block).
pub fn execute_block_verified<V: StateView + ?Sized>(
    base: &V,
    ctx: BlockContext<'_>,
    txs: &[Transaction],
    sidecars: &[Option<Vec<u8>>],
    verified: &[Option<VerifyingKey>],
) -> Result<Execution, BlockInvalid> {
    execute(base, ctx, txs, sidecars, verified, false)
}

fn execute<V: StateView + ?Sized>(
    base: &V,
    ctx: BlockContext<'_>,
    txs: &[Transaction],
    sidecars: &[Option<Vec<u8>>],
    verified: &[Option<VerifyingKey>],
    history: bool,
) -> Result<Execution, BlockInvalid> {
    let mut pre_checked: Vec<Option<VerifyingKey>> =
        (0..txs.len()).map(|i| verified.get(i).copied().flatten()).collect();
    let mut batch = Vec::with_capacity(txs.len());
    let mut batch_index = Vec::with_capacity(txs.len());
    let signed: Vec<Vec<u8>> = txs.iter().map(Transaction::signed_bytes).collect();
    for (index, tx) in txs.iter().enumerate() {
        if pre_checked[index].is_some() || matches!(tx.body.kind, TxKind::Recovery(_)) {
            continue;
        }
        if let Some(signer) = read::<MemberEntry>(base, &keys::member(&tx.body.signer)) {
            batch.push((signer.signing_key, signed[index].as_slice(), tx.signature));
            batch_index.push(index);
        }
    }
    // A failed batch falls back to one-by-one checks, which name the culprit.
    if !batch.is_empty() && verify_batch(TX_NAMESPACE, &batch) {
        for (index, (key, _, _)) in batch_index.into_iter().zip(&batch) {
            pre_checked[index] = Some(*key);
        }
    }
    let mut executor = if history { Executor::for_history(base, ctx) } else { Executor::new(base, ctx) };
    for (index, tx) in txs.iter().enumerate() {
        let sidecar = sidecars.get(index).and_then(|s| s.as_deref());
        executor.apply(tx, sidecar, pre_checked[index].as_ref()).map_err(|error| BlockInvalid { index, error })?;
    }
    Ok(executor.finish())
}

/// The audit event of a rejected transaction, filed under the patient it concerned (if any).
fn denial_event(
    state: &dyn StateView,
    signer: &MemberEntry,
    kind: &TxKind,
    reason: Rejection,
    tx: TxId,
    ctx: BlockContext<'_>,
) -> Option<(MemberId, AuditEvent)> {
    let is_patient =
        |m: &MemberId| read::<MemberEntry>(state, &keys::member(m)).is_some_and(|e| e.role == Role::Patient);
    let (patient, action, purpose) = match kind {
        TxKind::Enroll(_)
        | TxKind::Suspend(_)
        | TxKind::ShareKey(_)
        | TxKind::TeamCreate(_)
        | TxKind::TeamAdd(_)
        | TxKind::TeamRemove(_)
        | TxKind::Governance(_) => return None,
        TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) | TxKind::Rotate(Rotate { next: r, .. }) => {
            (r.patient, AuditAction::Write { record: r.record, version: r.version }, None)
        }
        TxKind::Grant(g) => (
            g.patient,
            AuditAction::Grant { grantee: g.grantee, scope: g.scope, write: g.write, expires_at: g.expires_at },
            None,
        ),
        TxKind::Revoke(r) => (r.patient, AuditAction::Revoke { grantee: r.grantee, scope: r.scope }, None),
        TxKind::RecordAccess(a) => {
            let patient = record_patient(state, &a.record)?;
            (patient, AuditAction::Read { record: a.record, version: a.version }, Some(a.purpose))
        }
        TxKind::Erase(e) => {
            let versions = read::<RecordEntry>(state, &keys::record(&e.record)).map_or(0, |r| r.version);
            (record_patient(state, &e.record)?, AuditAction::Erase { record: e.record, versions }, None)
        }
        TxKind::LegalHold(h) => (h.patient, AuditAction::LegalHold { record: h.record, hold: h.hold }, None),
        TxKind::Delegate(d) => (d.patient, AuditAction::Delegate { delegate: d.delegate, appoint: d.appoint }, None),
        TxKind::RotateKeys(k) => (signer.id, AuditAction::Keys { event: key_event(k.reason) }, None),
        TxKind::CustodyRelease(c) => (c.member, AuditAction::Keys { event: KeyEvent::CustodyReleased }, None),
        TxKind::Recovery(r) => (r.member, AuditAction::Keys { event: recovery_event(&r.action) }, None),
        TxKind::BreakGlass(b) => {
            (b.patient, AuditAction::BreakGlass { reason: b.reason, until: None }, Some(PurposeOfUse::Etreat))
        }
    };
    if !is_patient(&patient) {
        return None;
    }
    Some((patient, event(signer, tx, ctx, action, purpose, Decision::Denied { reason }, None)))
}

fn key_event(reason: KeyChange) -> KeyEvent {
    match reason {
        KeyChange::Routine => KeyEvent::Rotated,
        KeyChange::RecoveryCode => KeyEvent::RestoredFromRecoveryCode,
        KeyChange::Claim { .. } => KeyEvent::CustodyClaimed,
    }
}

fn recovery_event(action: &RecoveryAction) -> KeyEvent {
    match action {
        RecoveryAction::Request { .. } => KeyEvent::RecoveryRequested,
        RecoveryAction::Cancel => KeyEvent::RecoveryCancelled,
        RecoveryAction::Complete => KeyEvent::RecoveryCompleted,
    }
}

/// Whether `org` has left the consortium.
fn org_left(state: &dyn StateView, org: &medledger_types::OrgId) -> bool {
    read::<OrgEntry>(state, &keys::org(org)).is_some_and(|o| o.left_at.is_some())
}

/// How long a patient has to claim an identity released from custody.
const CLAIM_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;

/// The patient of a record, live or erased.
fn record_patient(state: &dyn StateView, record: &medledger_types::RecordId) -> Option<MemberId> {
    match read::<RecordEntry>(state, &keys::record(record)) {
        Some(entry) => Some(entry.patient),
        None => read::<ErasedEntry>(state, &keys::erased(record)).map(|e| e.patient),
    }
}

fn event(
    signer: &MemberEntry,
    tx: TxId,
    ctx: BlockContext<'_>,
    action: AuditAction,
    purpose: Option<medledger_types::PurposeOfUse>,
    decision: Decision,
    delegate_of: Option<MemberId>,
) -> AuditEvent {
    AuditEvent {
        tx,
        height: ctx.height,
        time: ctx.time,
        actor: signer.id,
        actor_org: signer.org.clone(),
        actor_role: signer.role,
        action,
        purpose,
        decision,
        delegate_of,
    }
}

/// One transaction's policy checks and writes. Every check comes before the first write.
struct Run<'r, 's> {
    state: &'r mut TxState<'s>,
    ctx: BlockContext<'r>,
    signer: &'r MemberEntry,
    tx_id: TxId,
    sidecar: Option<&'r SidecarFacts>,
    /// Set once the signer is found to act as this patient's delegate (their events name both).
    on_behalf_of: Option<MemberId>,
}

/// An applied transaction may leave one audit event in a patient's trail.
type Applied = Option<(MemberId, AuditEvent)>;

impl Run<'_, '_> {
    fn kind(&mut self, kind: &TxKind) -> Result<Applied, Rejection> {
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
            TxKind::LegalHold(h) => self.legal_hold(h),
            TxKind::Delegate(d) => self.delegate(d),
            TxKind::TeamCreate(t) => self.team_create(t).map(|()| None),
            TxKind::TeamAdd(t) => self.team_add(t).map(|()| None),
            TxKind::TeamRemove(t) => self.team_remove(t).map(|()| None),
            TxKind::RotateKeys(k) => self.rotate_keys(k),
            TxKind::CustodyRelease(c) => self.custody_release(c),
            TxKind::Recovery(r) => self.recovery(r),
            TxKind::Governance(p) => self.governance(p).map(|()| None),
            TxKind::Rotate(r) => {
                let current = self.record(&r.next.record)?;
                if current.digest != r.replaces {
                    return Err(Rejection::VersionMismatch);
                }
                self.register(&r.next, true)
            }
        }
    }

    /// A live record; an erased one is told apart from one that never existed.
    fn record(&self, id: &medledger_types::RecordId) -> Result<RecordEntry, Rejection> {
        read(self.state, &keys::record(id)).ok_or_else(|| {
            if self.state.get(&keys::erased(id)).is_some() { Rejection::RecordErased } else { Rejection::UnknownRecord }
        })
    }

    fn member(&self, id: &MemberId) -> Option<MemberEntry> {
        read(self.state, &keys::member(id))
    }

    fn team(&self, id: &MemberId) -> Option<TeamEntry> {
        read(self.state, &keys::team(id))
    }

    /// The care teams `member` belongs to.
    fn teams_of(&self, member: &MemberId) -> Vec<MemberId> {
        read(self.state, &keys::member_teams(member)).unwrap_or_default()
    }

    /// Teams with a live `--all` grant on `chart`, with their entries (each new record's key is
    /// wrapped for their current keys).
    fn chart_teams(&self, chart: &ChartEntry) -> Vec<TeamEntry> {
        let now = self.ctx.time;
        chart
            .teams
            .iter()
            .filter(|t| self.grant_entry(&chart.patient, t, &GrantScope::All).is_some_and(|g| g.is_live(now)))
            .filter_map(|t| self.team(t))
            .collect()
    }

    /// A doctor of `team` (who may add and remove its members).
    fn require_team_doctor(&self, team: &TeamEntry) -> Result<(), Rejection> {
        if self.signer.role != Role::Doctor || !team.has(&self.signer.id) {
            return Err(Rejection::NotATeamDoctor);
        }
        Ok(())
    }

    /// Whether `member` may join a care team: an active doctor, nurse or emergency member.
    fn team_candidate(&self, member: &MemberId) -> Result<(), Rejection> {
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

    fn join_team(&mut self, member: &MemberId, team: &MemberId) -> Result<(), Rejection> {
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
    fn team_epoch_of(&self, subject: &KeySubject, team: &MemberId) -> Option<u32> {
        read(self.state, &keys::team_envelope(subject, team))
    }

    fn chart(&self, patient: &MemberId) -> Result<(MemberEntry, ChartEntry), Rejection> {
        let entry = self.member(patient).filter(|m| m.role == Role::Patient).ok_or(Rejection::UnknownPatient)?;
        let chart = read(self.state, &keys::chart(patient)).ok_or(Rejection::UnknownPatient)?;
        Ok((entry, chart))
    }

    fn audit(&self, patient: MemberId, action: AuditAction, purpose: Option<medledger_types::PurposeOfUse>) -> Applied {
        let event = event(self.signer, self.tx_id, self.ctx, action, purpose, Decision::Allowed, self.on_behalf_of);
        Some((patient, event))
    }

    fn put_envelope(&mut self, subject: KeySubject, holder: KeyHolder) {
        let sidecar = self.sidecar.map(|s| s.digest).expect("envelopes come from a checked sidecar");
        self.state.put(keys::envelope(&subject, &holder), &EnvelopeRef { sidecar, tx: self.tx_id });
        if let KeyHolder::Team { team, epoch } = holder {
            self.state.put(keys::team_envelope(&subject, &team), &epoch);
        }
    }

    /// A patient acting on their own chart.
    fn require_patient(&self, patient: &MemberId) -> Result<(), Rejection> {
        if self.signer.role == Role::Admin {
            return Err(Rejection::AdminHasNoClinicalAccess);
        }
        if self.signer.id != *patient || self.signer.role != Role::Patient {
            return Err(Rejection::NotThePatient);
        }
        Ok(())
    }

    /// The patient, or one of the patient's delegates acting for them (then noted for the audit).
    fn require_patient_or_delegate(&mut self, patient: &MemberId) -> Result<(), Rejection> {
        match self.require_patient(patient) {
            Err(Rejection::NotThePatient) if self.is_delegate_of(patient) => {
                self.on_behalf_of = Some(*patient);
                Ok(())
            }
            other => other,
        }
    }

    fn is_delegate_of(&self, patient: &MemberId) -> bool {
        self.signer.role == Role::Patient
            && read::<ChartEntry>(self.state, &keys::chart(patient)).is_some_and(|c| c.is_delegate(&self.signer.id))
    }

    /// Moves `patient`'s chart to its next epoch, wrapped (by the sidecar) for exactly those who
    /// keep holding it: the patient, every live `--all` grantee but `revoked`, every delegate but
    /// `dismissed`.
    fn next_chart_epoch(
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
        };
        self.state.put(keys::chart(patient), &next);
        for member in &new_chart.recipients {
            self.put_envelope(subject, KeyHolder::Member { member: *member });
        }
        self.put_envelope(current, link);
        Ok(next)
    }

    fn grant_entry(&self, patient: &MemberId, grantee: &MemberId, scope: &GrantScope) -> Option<GrantEntry> {
        read(self.state, &keys::grant(patient, grantee, scope))
    }

    fn enroll(&mut self, e: &Enroll) -> Result<(), Rejection> {
        if read::<crate::state::OrgEntry>(self.state, &keys::org(&e.org)).is_none() {
            return Err(Rejection::UnknownOrg);
        }
        if self.signer.role != Role::Admin || self.signer.org != e.org {
            return Err(Rejection::NotAdminOfOrg);
        }
        if self.member(&e.member).is_some() || self.team(&e.member).is_some() {
            return Err(Rejection::MemberExists);
        }
        if self.state.get(&keys::signing_key(&e.signing_key)).is_some() {
            return Err(Rejection::KeyInUse);
        }
        let is_patient = e.role == Role::Patient;
        let name_ok = match &e.display_name {
            None => true,
            Some(name) => {
                !is_patient
                    && !name.is_empty()
                    && name.len() <= DISPLAY_NAME_BYTES_MAX
                    && !name.chars().any(char::is_control)
            }
        };
        let keys_ok = e.signing_key.check().is_ok()
            && e.encryption_key.check().is_ok()
            && e.chart_key.as_ref().is_none_or(|k| k.check().is_ok());
        if !name_ok || !keys_ok || is_patient != e.chart_key.is_some() || (e.custodial && !is_patient) {
            return Err(Rejection::InvalidEnrollment);
        }
        let entry = MemberEntry {
            id: e.member,
            org: e.org.clone(),
            role: e.role,
            signing_key: e.signing_key,
            encryption_key: e.encryption_key.clone(),
            display_name: e.display_name.clone(),
            status: MemberStatus::Active,
            enrolled_at: self.ctx.time,
            enrolled_by: Some(self.signer.id),
            custodial: e.custodial,
        };
        self.state.put(keys::member(&e.member), &entry);
        self.state.put(keys::signing_key(&e.signing_key), &e.member);
        if let Some(chart_key) = &e.chart_key {
            let chart = ChartEntry {
                patient: e.member,
                epoch: 0,
                public_key: chart_key.clone(),
                holders: vec![],
                delegates: vec![],
                teams: vec![],
            };
            self.state.put(keys::chart(&e.member), &chart);
            self.put_envelope(
                KeySubject::Chart { patient: e.member, epoch: 0 },
                KeyHolder::Member { member: e.member },
            );
        }
        Ok(())
    }

    /// An admin proposes or approves a governance change; the approval that brings it to 2/3 of
    /// the organisations adopts it (see [`crate::governance`]).
    fn governance(&mut self, proposal: &Proposal) -> Result<(), Rejection> {
        let own_org: Option<OrgEntry> = read(self.state, &keys::org(&self.signer.org));
        if self.signer.role != Role::Admin || own_org.is_none_or(|o| o.left_at.is_some()) {
            return Err(Rejection::NotAnOrgAdmin);
        }
        let expires = proposal.expires_at();
        if expires <= self.ctx.time
            || expires.get() > self.ctx.time.get().saturating_add(governance::PROPOSAL_TTL_MS_MAX)
        {
            return Err(Rejection::ProposalExpired);
        }
        let id = proposal.id();
        let key = keys::proposal(&id);
        let mut entry: ProposalEntry = read(self.state, &key).unwrap_or(ProposalEntry {
            proposal: proposal.clone(),
            approvals: Vec::new(),
            adopted_at: None,
        });
        if entry.adopted_at.is_some() {
            return Err(Rejection::ProposalAdopted);
        }
        if entry.approvals.contains(&self.signer.org) {
            return Err(Rejection::AlreadyApproved);
        }
        let latest =
            governance::epoch(self.state, governance::latest_epoch(self.state)).ok_or(Rejection::ChangePending)?;
        if latest.first_height > self.ctx.height {
            return Err(Rejection::ChangePending);
        }
        // Checked at every approval, not only the adopting one: a proposal that cannot be adopted
        // collects no approvals.
        let change = self.validator_change(proposal, &latest)?;
        entry.approvals.push(self.signer.org.clone());
        let approving = entry.approvals.iter().filter(|org| !org_left(&*self.state, org)).count();
        let orgs: u64 = read(self.state, keys::ORG_COUNT).unwrap_or(0);
        if governance::is_supermajority(approving, usize::try_from(orgs).unwrap_or(usize::MAX)) {
            entry.adopted_at = Some(self.ctx.height);
            self.adopt(proposal, change, &latest, id, orgs);
        }
        self.state.put(key, &entry);
        Ok(())
    }

    /// The validator set after `proposal` (stable indices, ascending) and, for a join, the new
    /// validator's entry; or why the proposal cannot be adopted.
    fn validator_change(
        &self,
        proposal: &Proposal,
        latest: &ValidatorEpoch,
    ) -> Result<(Vec<u32>, Option<ValidatorEntry>), Rejection> {
        let mut next = governance::members(&*self.state, latest);
        let mut joining = None;
        match proposal {
            Proposal::Join { org, validator, .. } => {
                let orgs: u64 = read(self.state, keys::ORG_COUNT).unwrap_or(0);
                let admin = &org.admin;
                if self.state.get(&keys::org(&org.id)).is_some()
                    || self.member(&admin.member).is_some()
                    || self.state.get(&keys::signing_key(&admin.signing_key)).is_some()
                    || governance::validators(&*self.state).iter().any(|v| v.public_key == validator.public_key)
                {
                    return Err(Rejection::OrgExists);
                }
                let printable =
                    |s: &str| !s.is_empty() && s.len() <= DISPLAY_NAME_BYTES_MAX && !s.chars().any(char::is_control);
                let threshold = self.state.get(keys::THRESHOLD).is_some();
                if usize::try_from(orgs).unwrap_or(usize::MAX) >= governance::orgs_max()
                    || !printable(&org.name)
                    || admin.signing_key.check().is_err()
                    || admin.encryption_key.check().is_err()
                    || !governance::new_validator_is_valid(validator)
                    || threshold != validator.share_key.is_some()
                {
                    return Err(Rejection::InvalidProposal);
                }
                let index: u32 = read(self.state, keys::VALIDATOR_COUNT).unwrap_or(0);
                let entry = ValidatorEntry {
                    index,
                    org: org.id.clone(),
                    public_key: validator.public_key,
                    p2p_address: validator.p2p_address.clone(),
                    api_address: validator.api_address.clone(),
                    share_key: validator.share_key.clone(),
                };
                next.push(entry.clone());
                joining = Some(entry);
            }
            Proposal::Leave { org, .. } => {
                let entry: OrgEntry = read(self.state, &keys::org(org)).ok_or(Rejection::UnknownOrg)?;
                let orgs: u64 = read(self.state, keys::ORG_COUNT).unwrap_or(0);
                if entry.left_at.is_some() {
                    return Err(Rejection::UnknownOrg);
                }
                if orgs <= 1 {
                    return Err(Rejection::InvalidProposal);
                }
                next.retain(|v| &v.org != org);
            }
        }
        if !governance::set_is_valid(&next) {
            return Err(Rejection::InvalidProposal);
        }
        let mut indices: Vec<u32> = next.iter().map(|v| v.index).collect();
        indices.sort_unstable();
        Ok((indices, joining))
    }

    /// Carries out an adopted proposal: the organisation joins (with its admin, and its validator
    /// from the new epoch) or leaves, and the new epoch is scheduled.
    fn adopt(
        &mut self,
        proposal: &Proposal,
        (validators, joining): (Vec<u32>, Option<ValidatorEntry>),
        latest: &ValidatorEpoch,
        id: medledger_types::Digest,
        orgs: u64,
    ) {
        match proposal {
            Proposal::Join { org, .. } => {
                let (entry, admin) = org.entries(self.ctx.time);
                self.state.put(keys::org(&org.id), &entry);
                self.state.put(keys::member(&org.admin.member), &admin);
                self.state.put(keys::signing_key(&org.admin.signing_key), &org.admin.member);
                self.state.put(keys::ORG_COUNT.to_vec(), &orgs.saturating_add(1));
                if let Some(validator) = joining {
                    self.state.put(keys::VALIDATOR_COUNT.to_vec(), &validator.index.saturating_add(1));
                    self.state.put(keys::validator(validator.index), &validator);
                }
            }
            Proposal::Leave { org, .. } => {
                if let Some(mut entry) = read::<OrgEntry>(self.state, &keys::org(org)) {
                    entry.left_at = Some(self.ctx.height);
                    self.state.put(keys::org(org), &entry);
                }
                self.state.put(keys::ORG_COUNT.to_vec(), &orgs.saturating_sub(1));
            }
        }
        let epoch = latest.epoch.saturating_add(1);
        let first_height = Height::new(self.ctx.height.get().saturating_add(governance::EPOCH_SWITCH_BLOCKS + 1));
        let next = ValidatorEpoch { epoch, first_height, validators, proposal: Some(id) };
        self.state.put(keys::validator_epoch(epoch), &next);
        self.state.put(keys::EPOCH_LATEST.to_vec(), &epoch);
    }

    fn suspend(&mut self, s: &Suspend) -> Result<(), Rejection> {
        let mut member = self.member(&s.member).ok_or(Rejection::UnknownMember)?;
        if self.signer.role != Role::Admin || self.signer.org != member.org {
            return Err(Rejection::NotAdminOfOrg);
        }
        if s.member == self.signer.id {
            return Err(Rejection::SelfSuspension);
        }
        member.status = if s.suspended { MemberStatus::Suspended } else { MemberStatus::Active };
        self.state.put(keys::member(&s.member), &member);
        Ok(())
    }

    /// Version 1 of a new record, or (`append`) the next version of an existing one. Both need the
    /// same right: the patient, or a doctor holding the patient's live write grant.
    fn register(&mut self, r: &RegisterRecord, append: bool) -> Result<Applied, Rejection> {
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
        if r.size_bytes > RECORD_CIPHERTEXT_BYTES_MAX {
            return Err(Rejection::TooLarge);
        }
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
        if !r.recipients.contains(&chart_holder) || !r.recipients.contains(&author_holder) {
            return Err(Rejection::RecipientsMissing);
        }
        // Teams with a live --all grant read new records through their own current keys.
        let teams = self.chart_teams(&chart);
        if teams.iter().any(|t| !r.recipients.contains(&KeyHolder::Team { team: t.team, epoch: t.epoch })) {
            return Err(Rejection::RecipientsMissing);
        }
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
            chart_epoch: chart.epoch,
            created_at: self.ctx.time,
            created_height: self.ctx.height,
            threshold: threshold.into(),
        };
        self.state.put(keys::record(&r.record), &entry);
        if previous.is_none() {
            self.state.put(keys::patient_record(&r.patient, &r.record), &PRESENT);
        }
        let subject = KeySubject::Record { record: r.record, version: r.version };
        for holder in &r.recipients {
            self.put_envelope(subject, *holder);
        }
        Ok(self.audit(r.patient, AuditAction::Write { record: r.record, version: r.version }, None))
    }

    fn grant(&mut self, g: &Grant) -> Result<Applied, Rejection> {
        self.require_patient_or_delegate(&g.patient)?;
        let (_, mut chart) = self.chart(&g.patient)?;
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
        if let Some(expires) = g.expires_at {
            let latest = self.ctx.time.checked_add_ms(GRANT_TTL_MS_MAX).unwrap_or(Timestamp::new(u64::MAX));
            if expires <= self.ctx.time || expires > latest {
                return Err(Rejection::BadExpiry);
            }
        }
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
                self.state.put(keys::chart(&g.patient), &chart);
                self.put_envelope(KeySubject::Chart { patient: g.patient, epoch: chart.epoch }, holder);
            }
        }
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
        let action =
            AuditAction::Grant { grantee: g.grantee, scope: g.scope, write: g.write, expires_at: g.expires_at };
        Ok(self.audit(g.patient, action, None))
    }

    fn revoke(&mut self, r: &Revoke) -> Result<Applied, Rejection> {
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
                let is_author = entry.author == r.grantee && self.state.get(&author_key).is_none();
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
                    self.state.put(keys::chart(&r.patient), &chart);
                } else {
                    self.next_chart_epoch(&r.patient, &chart, Some(&r.grantee), None, r.new_chart.as_ref(), false)?;
                }
                self.state.delete(grant_key);
            }
        }
        Ok(self.audit(r.patient, AuditAction::Revoke { grantee: r.grantee, scope: r.scope }, None))
    }

    fn break_glass(&mut self, b: &BreakGlass) -> Result<Applied, Rejection> {
        if !matches!(self.signer.role, Role::Doctor | Role::Emergency) {
            return Err(Rejection::BreakGlassRole);
        }
        self.chart(&b.patient)?;
        let reason = b.reason.ok_or(Rejection::BreakGlassReason)?;
        let policy: NetworkPolicy = read(self.state, keys::POLICY).unwrap_or_default();
        if b.duration_ms == 0 || b.duration_ms > policy.break_glass_max_ms {
            return Err(Rejection::BadExpiry);
        }
        // A note's key is wrapped for the patient and for auditors, nobody else.
        if let Some(note) = self.sidecar {
            let mut auditors = 0;
            let mut patient = false;
            for holder in &note.holders {
                match holder {
                    KeyHolder::Member { member } if *member == b.patient => patient = true,
                    KeyHolder::Member { member } if self.member(member).is_some_and(|m| m.role == Role::Auditor) => {
                        auditors += 1
                    }
                    _ => return Err(Rejection::BreakGlassNote),
                }
            }
            if !patient || auditors == 0 {
                return Err(Rejection::BreakGlassNote);
            }
        }
        let now = self.ctx.time;
        let day_ago = now.get().saturating_sub(24 * 3600 * 1000);
        let mut uses: Vec<Timestamp> = read(self.state, &keys::break_glass_uses(&self.signer.id)).unwrap_or_default();
        uses.retain(|t| t.get() > day_ago);
        if uses.len() >= policy.break_glass_per_day as usize {
            return Err(Rejection::BreakGlassRateLimited);
        }
        uses.push(now);
        self.state.put(keys::break_glass_uses(&self.signer.id), &uses);
        let until = now.checked_add_ms(b.duration_ms).ok_or(Rejection::BadExpiry)?;
        let entry = BreakGlassEntry { reason, opened_at: now, until, tx: self.tx_id };
        self.state.put(keys::break_glass(&b.patient, &self.signer.id), &entry);
        let action = AuditAction::BreakGlass { reason: Some(reason), until: Some(until) };
        Ok(self.audit(b.patient, action, Some(PurposeOfUse::Etreat)))
    }

    fn access(&mut self, a: &RecordAccess) -> Result<Applied, Rejection> {
        let entry = self.record(&a.record)?;
        if entry.version != a.version {
            return Err(Rejection::VersionMismatch);
        }
        if self.signer.role == Role::Admin {
            return Err(Rejection::AdminHasNoClinicalAccess);
        }
        let me = self.signer.id;
        let now = self.ctx.time;
        let is_patient = me == entry.patient && self.signer.role == Role::Patient;
        if !is_patient && self.is_delegate_of(&entry.patient) {
            self.on_behalf_of = Some(entry.patient);
            let read = AuditAction::Read { record: a.record, version: a.version };
            return Ok(self.audit(entry.patient, read, Some(a.purpose)));
        }
        let is_author = me == entry.author && self.state.get(&keys::author_revoked(&a.record, &me)).is_none();
        let grants = [GrantScope::Record(a.record), GrantScope::All].map(|s| self.grant_entry(&entry.patient, &me, &s));
        // A per-record grant covers the versions whose data key was wrapped for the grantee; an
        // `--all` grant covers every version through the chart key.
        let wrapped_for_me = |scope: &GrantScope| match scope {
            GrantScope::All => true,
            GrantScope::Record(record) => {
                let subject = KeySubject::Record { record: *record, version: entry.version };
                self.state.get(&keys::envelope(&subject, &KeyHolder::Member { member: me })).is_some()
            }
        };
        let live_grant = grants.iter().flatten().any(|g| g.is_live(now) && wrapped_for_me(&g.scope));
        let via_team = || {
            let subject = KeySubject::Record { record: a.record, version: entry.version };
            self.teams_of(&me).iter().any(|t| {
                let member = self.team(t).is_some_and(|team| team.has(&me));
                let all = self.grant_entry(&entry.patient, t, &GrantScope::All).is_some_and(|g| g.is_live(now));
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
                    let read = AuditAction::Read { record: a.record, version: a.version };
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
    fn erase(&mut self, e: &Erase) -> Result<Applied, Rejection> {
        let entry = self.record(&e.record)?;
        self.require_patient(&entry.patient)?;
        let held = |key: Vec<u8>| self.state.get(&key).is_some();
        if held(keys::legal_hold(&entry.patient, None)) || held(keys::legal_hold(&entry.patient, Some(&e.record))) {
            return Err(Rejection::LegalHold);
        }
        let tombstone = ErasedEntry {
            record: e.record,
            patient: entry.patient,
            versions: entry.version,
            erased_at: self.ctx.time,
            tx: self.tx_id,
        };
        self.state.delete(keys::record(&e.record));
        self.state.delete(keys::patient_record(&entry.patient, &e.record));
        self.state.put(keys::erased(&e.record), &tombstone);
        Ok(self.audit(entry.patient, AuditAction::Erase { record: e.record, versions: entry.version }, None))
    }

    /// The patient (only: a delegate does not appoint another) appoints or dismisses a delegate.
    fn delegate(&mut self, d: &Delegate) -> Result<Applied, Rejection> {
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
            self.state.put(keys::chart(&d.patient), &chart);
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

    /// Puts `member`'s new keys in place of their current ones.
    fn replace_keys(
        &mut self,
        mut member: MemberEntry,
        signing_key: VerifyingKey,
        encryption_key: EncryptionKey,
    ) -> Result<MemberEntry, Rejection> {
        if signing_key.check().is_err() || encryption_key.check().is_err() {
            return Err(Rejection::InvalidEnrollment);
        }
        if self.state.get(&keys::signing_key(&signing_key)).is_some() {
            return Err(Rejection::KeyInUse);
        }
        self.state.delete(keys::signing_key(&member.signing_key));
        self.state.put(keys::signing_key(&signing_key), &member.id);
        member.signing_key = signing_key;
        member.encryption_key = encryption_key;
        Ok(member)
    }

    /// The signer's own next keys (signed with the current ones). A patient brings the chart's
    /// current key wrapped for the new encryption key; a claim from custody brings the code.
    fn rotate_keys(&mut self, k: &RotateKeys) -> Result<Applied, Rejection> {
        let mut member = self.signer.clone();
        let chart = if member.role == Role::Patient { Some(self.chart(&member.id)?.1) } else { None };
        if let KeyChange::Claim { code } = &k.reason {
            if !member.custodial {
                return Err(Rejection::NotCustodial);
            }
            let release: CustodyReleaseEntry =
                read(self.state, &keys::custody_release(&member.id)).ok_or(Rejection::NoCustodyRelease)?;
            if self.ctx.time >= release.expires_at {
                return Err(Rejection::ClaimExpired);
            }
            if claim_code_hash(&member.id, code) != release.code_hash {
                return Err(Rejection::ClaimCodeMismatch);
            }
            self.state.delete(keys::custody_release(&member.id));
            member.custodial = false;
        }
        let wrapped = chart.as_ref().map(|c| KeySubject::Chart { patient: member.id, epoch: c.epoch });
        let sidecar_ok = match (wrapped, self.sidecar) {
            (Some(subject), Some(s)) => {
                s.subjects == [subject] && s.holders == [KeyHolder::Member { member: member.id }]
            }
            (None, None) => true,
            _ => false,
        };
        if !sidecar_ok {
            return Err(Rejection::ChartKeyRequired);
        }
        let member = self.replace_keys(member, k.signing_key, k.encryption_key.clone())?;
        if let Some(subject) = wrapped {
            self.put_envelope(subject, KeyHolder::Member { member: member.id });
        }
        self.state.put(keys::member(&member.id), &member);
        Ok(self.audit(member.id, AuditAction::Keys { event: key_event(k.reason) }, None))
    }

    /// An admin of a custodial patient's organisation releases the identity for its claim.
    fn custody_release(&mut self, c: &CustodyRelease) -> Result<Applied, Rejection> {
        let member = self.member(&c.member).ok_or(Rejection::UnknownMember)?;
        if self.signer.role != Role::Admin || self.signer.org != member.org {
            return Err(Rejection::NotAdminOfOrg);
        }
        if !member.custodial {
            return Err(Rejection::NotCustodial);
        }
        let expires_at = self.ctx.time.checked_add_ms(CLAIM_WINDOW_MS).ok_or(Rejection::BadExpiry)?;
        let entry =
            CustodyReleaseEntry { code_hash: c.code_hash, released_by: self.signer.id, expires_at, tx: self.tx_id };
        self.state.put(keys::custody_release(&c.member), &entry);
        Ok(self.audit(c.member, AuditAction::Keys { event: KeyEvent::CustodyReleased }, None))
    }

    /// An admin-approved recovery of lost keys: requested by an admin of the member's
    /// organisation, cancelled by the member, completed with the new keys after the delay.
    fn recovery(&mut self, r: &Recovery) -> Result<Applied, Rejection> {
        let member = self.member(&r.member).ok_or(Rejection::UnknownMember)?;
        let pending: Option<RecoveryEntry> = read(self.state, &keys::recovery(&r.member));
        match &r.action {
            RecoveryAction::Request { signing_key, encryption_key } => {
                if self.signer.role != Role::Admin || self.signer.org != member.org || self.signer.id == member.id {
                    return Err(Rejection::NotAdminOfOrg);
                }
                if pending.is_some() {
                    return Err(Rejection::RecoveryPending);
                }
                if signing_key.check().is_err() || encryption_key.check().is_err() {
                    return Err(Rejection::InvalidEnrollment);
                }
                if self.state.get(&keys::signing_key(signing_key)).is_some() {
                    return Err(Rejection::KeyInUse);
                }
                let policy: NetworkPolicy = read(self.state, keys::POLICY).unwrap_or_default();
                let effective_at =
                    self.ctx.time.checked_add_ms(policy.recovery_delay_ms()).ok_or(Rejection::BadExpiry)?;
                let entry = RecoveryEntry {
                    signing_key: *signing_key,
                    encryption_key: encryption_key.clone(),
                    requested_by: self.signer.id,
                    requested_at: self.ctx.time,
                    effective_at,
                    tx: self.tx_id,
                };
                self.state.put(keys::recovery(&r.member), &entry);
            }
            RecoveryAction::Cancel => {
                if self.signer.id != r.member {
                    return Err(Rejection::NotYourKeys);
                }
                pending.ok_or(Rejection::NoRecoveryPending)?;
                self.state.delete(keys::recovery(&r.member));
            }
            RecoveryAction::Complete => {
                // The signature was checked against the requested keys.
                if self.signer.id != r.member {
                    return Err(Rejection::NotYourKeys);
                }
                let pending = pending.ok_or(Rejection::NoRecoveryPending)?;
                if self.ctx.time < pending.effective_at {
                    return Err(Rejection::RecoveryTooSoon);
                }
                self.state.delete(keys::recovery(&r.member));
                let member = self.replace_keys(member, pending.signing_key, pending.encryption_key)?;
                self.state.put(keys::member(&member.id), &member);
            }
        }
        Ok(self.audit(r.member, AuditAction::Keys { event: recovery_event(&r.action) }, None))
    }

    /// A doctor creates a care team with its first key, wrapped for each member (the doctor among them).
    fn team_create(&mut self, t: &TeamCreate) -> Result<(), Rejection> {
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
        Ok(())
    }

    /// A doctor of the team adds a member: the team entry, the member's list of teams and one
    /// envelope, whatever the number of records the team can read.
    fn team_add(&mut self, t: &TeamAdd) -> Result<(), Rejection> {
        let mut team = self.team(&t.team).ok_or(Rejection::UnknownTeam)?;
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
    fn team_remove(&mut self, t: &TeamRemove) -> Result<(), Rejection> {
        let mut team = self.team(&t.team).ok_or(Rejection::UnknownTeam)?;
        if t.member == self.signer.id {
            if !team.has(&self.signer.id) {
                return Err(Rejection::NotInTeam);
            }
        } else {
            self.require_team_doctor(&team)?;
        }
        let Ok(at) = team.members.binary_search(&t.member) else { return Err(Rejection::NotInTeam) };
        if team.members.len() == 1 {
            return Err(Rejection::LastTeamMember);
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

    /// An auditor places or lifts a legal hold on a patient's chart or one of its records.
    fn legal_hold(&mut self, h: &LegalHold) -> Result<Applied, Rejection> {
        if self.signer.role != Role::Auditor {
            return Err(Rejection::NotAnAuditor);
        }
        self.chart(&h.patient)?;
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
            if self.state.get(&key).is_none() {
                return Err(Rejection::NoSuchHold);
            }
            self.state.delete(key);
        }
        Ok(self.audit(h.patient, AuditAction::LegalHold { record: h.record, hold: h.hold }, None))
    }
}
