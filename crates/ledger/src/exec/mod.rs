//! The deterministic state machine: a block's transactions applied in order to the state before it.
//!
//! A transaction is either *invalid* (wrong chain, unknown signer, bad signature, sidecar that does
//! not match its digest): it cannot appear in a block, the proposer drops it and a validator that
//! finds one votes against the block. Or it is *valid* and gets an outcome: applied, or rejected with
//! a [`Rejection`]. A rejected transaction changes nothing but the signer's nonce, its own result
//! entry and, when it concerned a patient, the signer's denial count for the window and (the first
//! [`DENIAL_EVENTS_PER_WINDOW`] of each window) a `Denied` event in that patient's audit trail:
//! every denied attempt is accounted for on the ledger, and no signer writes unbounded events.
//! A stale nonce changes nothing at all (a replay must not
//! overwrite the original's result).

mod consent;
mod emergency;
mod governance;
mod identity;
mod records;
mod reshare;
mod run;
mod teams;

use medledger_crypto::sign::{VerifyingKey, verify_batch};
use medledger_types::limits::SHARE_KEY_INTERVAL_MS;
use medledger_types::{ChainId, Height, MemberId, PurposeOfUse, Role, Timestamp, TxId, encode};

use self::identity::{key_event, recovery_event};
use self::run::Run;
use crate::policy::Rejection;
use crate::sidecar::SidecarError;
use crate::state::{
    AuditAction, AuditEvent, DENIAL_EVENTS_PER_WINDOW, DENIAL_WINDOW_MS, Decision, DenialCount, ErasedEntry,
    FlaggedEntry, KeyEvent, MemberEntry, MemberStatus, OrgEntry, Overlay, RecordEntry, RecoveryEntry, StateView,
    TxResultEntry, WriteSet, keys, last_nonce, read,
};
use crate::threshold::{PendingThreshold, ThresholdConfig};
use crate::tx::{Recovery, RecoveryAction, Rotate, TX_NAMESPACE, Transaction, TxKind, TxOutcome};

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
        let mut executor = Self { state: Overlay::new(base), ctx, results: Vec::new(), audit_index: 0, history: false };
        executor.switch_share_epoch();
        executor
    }

    /// At the first block of a new validator set, its share configuration takes over (one epoch
    /// after the current one): from this block on, new record versions are dealt to the new set.
    fn switch_share_epoch(&mut self) {
        let Some(pending) = read::<PendingThreshold>(&self.state, keys::THRESHOLD_NEXT) else { return };
        if pending.first_height > self.ctx.height {
            return;
        }
        let epoch = read::<ThresholdConfig>(&self.state, keys::THRESHOLD).map_or(0, |c| c.epoch.saturating_add(1));
        let config = ThresholdConfig { epoch, ..pending.config };
        self.state.put(keys::THRESHOLD.to_vec(), encode(&config));
        self.state.delete(keys::THRESHOLD_NEXT.to_vec());
    }

    /// An executor for finalized blocks, whose purged sidecars it accepts (see
    /// [`SidecarFacts`](crate::SidecarFacts)).
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
        if let Some(validator) = body.kind.validator_signer() {
            return self.apply_validator_tx(tx, validator, sidecar, checked_with);
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
        if body.nonce <= last_nonce(&self.state, &body.signer, body.nonce.lane()) {
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
                    // Every denial is counted per signer and window; the first few of each window
                    // are filed as events, so no one signer writes unbounded trail or queue
                    // entries (DESIGN §3: denial audits are rate-limited per signer).
                    let window = self.ctx.time.get() / DENIAL_WINDOW_MS;
                    let key = keys::denials(&signer.id, window);
                    let mut count: DenialCount = read(&self.state, &key).unwrap_or_default();
                    if count.filed < DENIAL_EVENTS_PER_WINDOW {
                        count.filed += 1;
                        self.file_audit(&mut writes, patient, event);
                    } else {
                        count.unfiled = count.unfiled.saturating_add(1);
                    }
                    writes.insert(key, Some(encode(&count)));
                }
                self.results.push(TxOutcome::Rejected { reason });
                writes
            }
        };
        Ok(self.close(tx, tx_id, index, writes))
    }

    /// Records a transaction's nonce and result beside its writes and applies them.
    fn close(&mut self, tx: &Transaction, tx_id: TxId, index: usize, mut writes: WriteSet) -> &TxOutcome {
        writes.insert(keys::nonce(&tx.body.signer, tx.body.nonce.lane()), Some(encode(&tx.body.nonce)));
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

    /// A validator's own transaction (its next share key, a re-sharing step). The signer must be
    /// the id of the named validator's consensus key, and the signature that key's.
    fn apply_validator_tx(
        &mut self,
        tx: &Transaction,
        validator: u32,
        sidecar: Option<&[u8]>,
        checked_with: Option<&VerifyingKey>,
    ) -> Result<&TxOutcome, TxInvalid> {
        let body = &tx.body;
        // A genesis validator's key is in genesis; one that joined since, in its Join proposal.
        let key = match self.ctx.validators.get(validator as usize) {
            Some(key) => *key,
            None => crate::governance::validator(&self.state, validator).ok_or(TxInvalid::UnknownSigner)?.public_key,
        };
        if body.signer != crate::tx::validator_member_id(&key) {
            return Err(TxInvalid::UnknownSigner);
        }
        if checked_with != Some(&key) && !tx.verify_signature(&key) {
            return Err(TxInvalid::BadSignature);
        }
        let facts = crate::block::sidecar_facts(tx, sidecar, self.history)?;
        let index = self.results.len();
        if body.nonce <= last_nonce(&self.state, &body.signer, body.nonce.lane()) {
            self.results.push(TxOutcome::Rejected { reason: Rejection::StaleNonce });
            return Ok(&self.results[index]);
        }
        let result = match &body.kind {
            TxKind::ShareKey(next) => self.share_key(next),
            TxKind::Reshare(reshare) => self.reshare(reshare, facts.as_ref()),
            _ => Err(Rejection::NotAShareholder),
        };
        let writes = match result {
            Ok(writes) => {
                self.results.push(TxOutcome::Applied);
                writes
            }
            Err(reason) => {
                self.results.push(TxOutcome::Rejected { reason });
                WriteSet::new()
            }
        };
        Ok(self.close(tx, tx.id(), index, writes))
    }

    /// A validator's next share key.
    fn share_key(&self, next: &crate::tx::ShareKey) -> Result<WriteSet, Rejection> {
        let mut writes = WriteSet::new();
        let Some(mut config) = read::<ThresholdConfig>(&self.state, keys::THRESHOLD) else {
            return Err(Rejection::ThresholdShares);
        };
        let pending: Option<PendingThreshold> = read(&self.state, keys::THRESHOLD_NEXT);
        // The validator's key in the current set, or (joining) in the set that comes next.
        let position = config.position(next.validator);
        let pending_position = pending.as_ref().and_then(|p| p.config.position(next.validator));
        let current = match (position, &pending, pending_position) {
            (Some(p), _, _) => config.share_keys.get(p),
            (None, Some(pending), Some(p)) => pending.config.share_keys.get(p),
            _ => None,
        };
        let replaced = keys::share_key_replaced(next.validator);
        let last: Option<Timestamp> = read(&self.state, &replaced);
        let too_soon = last.is_some_and(|t| self.ctx.time.get() < t.get().saturating_add(SHARE_KEY_INTERVAL_MS));
        let in_use = config.share_keys.contains(&next.public_key)
            || pending.as_ref().is_some_and(|p| p.config.share_keys.contains(&next.public_key));
        if next.public_key.check().is_err() || current.is_none_or(|k| k.suite != next.public_key.suite) || in_use {
            return Err(Rejection::InvalidShareKey);
        }
        if too_soon {
            return Err(Rejection::ShareKeyTooSoon);
        }
        if let Some(p) = position {
            config.share_keys[p] = next.public_key.clone();
            config.epoch = config.epoch.saturating_add(1);
            writes.insert(keys::THRESHOLD.to_vec(), Some(encode(&config)));
        }
        if let (Some(mut pending), Some(p)) = (pending, pending_position) {
            pending.config.share_keys[p] = next.public_key.clone();
            writes.insert(keys::THRESHOLD_NEXT.to_vec(), Some(encode(&pending)));
        }
        writes.insert(replaced, Some(encode(&self.ctx.time)));
        Ok(writes)
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
    // A patient's trail, or an organisation's directory's (attempts on its records are filed too).
    let is_patient = |m: &MemberId| {
        read::<MemberEntry>(state, &keys::member(m)).is_some_and(|e| e.role == Role::Patient)
            || state.get(&keys::directory(m)).is_some()
    };
    let (patient, action, purpose) = match kind {
        TxKind::Enroll(_)
        | TxKind::Suspend(_)
        | TxKind::ShareKey(_)
        | TxKind::Reshare(_)
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
        TxKind::ChartReview(c) => (c.patient, AuditAction::ChartReview, Some(c.purpose)),
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

/// Whether `org` has left the consortium.
fn org_left(state: &dyn StateView, org: &medledger_types::OrgId) -> bool {
    read::<OrgEntry>(state, &keys::org(org)).is_some_and(|o| o.left_at.is_some())
}

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
