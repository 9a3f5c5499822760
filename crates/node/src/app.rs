//! The ledger application behind the consensus engine: mempool, speculative execution of
//! proposed and verified blocks, and the atomic commit of finalized ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medledger_crypto::sign::VerifyingKey;
use medledger_ledger::governance;
use medledger_ledger::state::{MemberEntry, RecoveryEntry, keys, last_nonce, read};
use medledger_ledger::{
    Block, BlockContext, BlockHeader, Executor, Genesis, Recovery, RecoveryAction, StateView, Transaction, TxInvalid,
    TxKind, execute_block, execute_block_verified, results_root, tx_root, validator_member_id,
};
use medledger_store::{ChainEntry, ChainLog, LastApplied, Pending, SnapshotInstall, StateDb, StoreError};
use medledger_types::limits::{BLOCK_BYTES_MAX, BLOCK_TIME_DRIFT_MAX_MS, BLOCK_TXS_MAX, MEMPOOL_TXS_MAX, TX_BYTES_MAX};
use medledger_types::{BlockHash, ChainId, Digest, Height, MemberId, Timestamp, TxId};
use tokio::sync::{Notify, watch};

use crate::consensus::{EpochSet, EpochValidator, Ledger, Schedule};

/// How long a leader with an empty mempool waits for work before declining its view.
const PROPOSE_WAIT: Duration = Duration::from_millis(650);

/// Why a transaction was not admitted to the mempool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("transaction does not decode or is over {TX_BYTES_MAX} bytes")]
    Malformed,
    #[error(transparent)]
    Invalid(#[from] medledger_ledger::TxInvalid),
    #[error("nonce already used")]
    StaleNonce,
    #[error("mempool is full; retry later")]
    Full,
    #[error("too many of this signer's transactions wait; retry later")]
    SignerFull,
    #[error("storage: {0}")]
    Storage(String),
}

/// A block executed but not yet finalized.
struct Speculative {
    parent: BlockHash,
    pending: Pending,
}

struct Mempool {
    order: VecDeque<TxId>,
    /// Each admitted transaction with its sidecar and the key its signature was checked against.
    txs: HashMap<TxId, (Transaction, Option<Vec<u8>>, VerifyingKey)>,
    /// Transactions waiting per signer (at most [`MEMPOOL_TXS_PER_SIGNER_MAX`]).
    per_signer: HashMap<MemberId, usize>,
}

/// The most transactions of one signer waiting in a validator's mempool: one member cannot fill
/// it for everyone (the whole pool holds [`MEMPOOL_TXS_MAX`]).
pub const MEMPOOL_TXS_PER_SIGNER_MAX: usize = 5_000;

impl Mempool {
    fn insert(&mut self, id: TxId, tx: Transaction, sidecar: Option<Vec<u8>>, key: VerifyingKey) {
        *self.per_signer.entry(tx.body.signer).or_default() += 1;
        self.order.push_back(id);
        self.txs.insert(id, (tx, sidecar, key));
    }

    fn remove(&mut self, id: &TxId) {
        if let Some((tx, _, _)) = self.txs.remove(id)
            && let std::collections::hash_map::Entry::Occupied(mut n) = self.per_signer.entry(tx.body.signer)
        {
            *n.get_mut() -= 1;
            if *n.get() == 0 {
                n.remove();
            }
        }
    }

    fn waiting_of(&self, signer: &MemberId) -> usize {
        self.per_signer.get(signer).copied().unwrap_or(0)
    }

    /// Drops ids whose transaction left the pool.
    fn prune(&mut self) {
        let Mempool { order, txs, .. } = self;
        order.retain(|id| txs.contains_key(id));
    }
}

/// The validator sets last read from the state, with the (latest epoch, validator count) stamp
/// they were read at: governance changes one or the other.
type ScheduleCache = (Option<(u64, u32)>, Vec<EpochSet>);

/// A validator-set epoch a block adopts, and the proofs of its set's entries (see
/// `App::epoch_link_proofs`).
type NewEpochProofs = (u64, Vec<Vec<u8>>);

pub struct Inner {
    pub chain_id: ChainId,
    pub genesis: Genesis,
    genesis_block: Block,
    /// The validators' consensus keys, in genesis order (execution checks validators' own
    /// transactions against them).
    pub validator_keys: Vec<VerifyingKey>,
    pub db: StateDb,
    log: Mutex<ChainLog>,
    speculative: Mutex<HashMap<BlockHash, Arc<Speculative>>>,
    mempool: Mutex<Mempool>,
    work: Notify,
    committed: watch::Sender<LastApplied>,
    /// Bumped each time the re-sharing worker vaults this validator's share of a finished
    /// re-sharing, so a share request that came first waits for it instead of failing.
    reshared: watch::Sender<u64>,
    /// The finalization certificate consensus starts from after a state sync (see [`crate::sync`]).
    floor: Mutex<Option<(Height, Vec<u8>)>>,
    /// The validator sets of the committed state, and the (latest epoch, validator count) they
    /// were read at.
    schedule: Mutex<ScheduleCache>,
    /// The header and finality certificate of the last committed block that has one of its own:
    /// the state every access bundle's evidence is for (see `api::access`).
    certified_tip: Mutex<Option<(BlockHeader, Vec<u8>)>>,
    /// The validator-set history (one link per epoch after genesis) as far as it was built:
    /// links never change once their epoch is adopted (see [`crate::receipt::links`]).
    pub(crate) epoch_links: Mutex<Vec<medledger_ledger::receipt::EpochLink>>,
    pub metrics: crate::metrics::NodeMetrics,
}

/// The application; cheap to clone (shared state).
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chain(#[from] medledger_store::ChainError),
    #[error("the state on disk belongs to another genesis")]
    GenesisMismatch,
}

/// The block at height 0 and the tree batch of the genesis state.
pub(crate) fn genesis_block(db: &StateDb, genesis: &Genesis) -> Result<(Block, Pending), StoreError> {
    let pending = db.compute(&[], Height::ZERO, genesis.state())?;
    let header = BlockHeader {
        chain_id: genesis.chain_id(),
        height: Height::ZERO,
        parent: BlockHash::new([0; 32]),
        time: genesis.created_at,
        tx_root: tx_root(&[]),
        results_root: results_root(&[]),
        state_root: pending.root,
        proposer: 0,
    };
    Ok((Block { header, txs: vec![], sidecars: vec![] }, pending))
}

impl App {
    /// Opens (or initialises from genesis) the state under `data_dir`.
    pub fn open(data_dir: &std::path::Path, genesis: Genesis) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Db(e.to_string()))?;
        let db = StateDb::open(&data_dir.join("state.redb"))?;
        let (genesis_block, pending) = genesis_block(&db, &genesis)?;
        let last = match db.last_applied()? {
            Some(last) => last,
            None => {
                db.commit(pending, genesis_block.digest(), &[], &[], None)?;
                db.last_applied()?.ok_or(StoreError::Uninitialised)?
            }
        };
        if last.height == Height::ZERO && last.digest != genesis_block.digest() {
            return Err(OpenError::GenesisMismatch);
        }
        let log = ChainLog::open(&data_dir.join("chain.log"), last.log_len)?;
        let (committed, _) = watch::channel(last);
        Ok(Self {
            inner: Arc::new(Inner {
                chain_id: genesis.chain_id(),
                validator_keys: genesis.validators.iter().map(|v| v.public_key).collect(),
                genesis,
                genesis_block,
                db,
                log: Mutex::new(log),
                speculative: Mutex::new(HashMap::new()),
                mempool: Mutex::new(Mempool {
                    order: VecDeque::new(),
                    txs: HashMap::new(),
                    per_signer: HashMap::new(),
                }),
                work: Notify::new(),
                committed,
                reshared: watch::channel(0).0,
                floor: Mutex::new(None),
                schedule: Mutex::new((None, Vec::new())),
                certified_tip: Mutex::new(None),
                epoch_links: Mutex::new(Vec::new()),
                metrics: Default::default(),
            }),
        })
    }

    pub fn inner(&self) -> &Inner {
        &self.inner
    }

    pub fn last_applied(&self) -> LastApplied {
        *self.inner.committed.borrow()
    }

    /// A receiver that changes at every commit (for long-polls).
    pub fn subscribe(&self) -> watch::Receiver<LastApplied> {
        self.inner.committed.subscribe()
    }

    /// Tells waiting share requests that the re-sharing worker vaulted new shares.
    pub(crate) fn reshared(&self) {
        self.inner.reshared.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever [`App::reshared`] is called.
    pub(crate) fn subscribe_reshared(&self) -> watch::Receiver<u64> {
        self.inner.reshared.subscribe()
    }

    /// The chain log entry of a committed block.
    pub fn block_at(&self, height: Height) -> Result<Option<(Block, Vec<u8>)>, StoreError> {
        let Some((offset, _)) = self.inner.db.block_location(height)? else { return Ok(None) };
        let entry =
            self.inner.log.lock().expect("log lock").read_at(offset).map_err(|e| StoreError::Db(e.to_string()))?;
        let block = Block::decode(&entry.block).map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(Some((block, entry.certificate)))
    }

    /// The header and finality certificate of committed block `height`: from memory when it is
    /// the last certified one, else from the chain log (the certificate is empty for a block
    /// finalized only through a descendant's).
    pub fn certified_header(&self, height: Height) -> Result<Option<(BlockHeader, Vec<u8>)>, StoreError> {
        if let Some(tip) = self.inner.certified_tip.lock().expect("tip lock").as_ref()
            && tip.0.height == height
        {
            return Ok(Some(tip.clone()));
        }
        Ok(self.block_at(height)?.map(|(block, certificate)| (block.header, certificate)))
    }

    /// Rewrites a committed block in the chain log with the same length (erasure purging its
    /// sidecars; see [`crate::janitor`]).
    pub(crate) fn rewrite_block(&self, height: Height, block: &Block) -> Result<(), String> {
        let (offset, _) = self
            .inner
            .db
            .block_location(height)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("block {height} is not in the chain log"))?;
        self.inner.log.lock().expect("log lock").rewrite_block(offset, &block.encode()).map_err(|e| e.to_string())
    }

    /// The raw chain log entry of a committed block (for peers' state sync).
    pub fn chain_entry(&self, height: Height) -> Result<Option<ChainEntry>, StoreError> {
        let Some((offset, _)) = self.inner.db.block_location(height)? else { return Ok(None) };
        let entry =
            self.inner.log.lock().expect("log lock").read_at(offset).map_err(|e| StoreError::Db(e.to_string()))?;
        Ok(Some(entry))
    }

    /// State sync: appends downloaded chain entries the state does not name yet.
    pub(crate) fn append_unsynced(&self, entries: &[(Height, &[u8], &[u8])]) -> Result<Vec<(u64, u64)>, String> {
        self.inner.log.lock().expect("log lock").append_batch(entries).map_err(|e| e.to_string())
    }

    /// State sync: the chain log's length including entries the state does not name yet.
    pub(crate) fn unsynced_log_len(&self) -> u64 {
        self.inner.log.lock().expect("log lock").len()
    }

    /// State sync failed: cuts the chain log back to what the state names.
    pub(crate) fn discard_unsynced_log(&self) -> Result<(), String> {
        let committed = self.last_applied().log_len;
        let path = self.inner.log.lock().expect("log lock").path().to_path_buf();
        let log = ChainLog::open(&path, committed).map_err(|e| e.to_string())?;
        *self.inner.log.lock().expect("log lock") = log;
        Ok(())
    }

    /// State sync: starts installing a peer's snapshot (see [`StateDb::begin_snapshot`]).
    pub(crate) fn begin_snapshot(
        &self,
        height: Height,
        announced: u64,
        max_bytes: u64,
    ) -> Result<SnapshotInstall, StoreError> {
        self.inner.db.begin_snapshot(height, announced, max_bytes)
    }

    /// State sync: commits a snapshot whose root is the certified `state_root` (see
    /// [`SnapshotInstall::finish`]).
    pub(crate) fn finish_snapshot(
        &self,
        install: SnapshotInstall,
        digest: BlockHash,
        state_root: Digest,
        log_len: u64,
    ) -> Result<(), StoreError> {
        install.finish(digest, state_root, log_len)?;
        let last = self.inner.db.last_applied()?.ok_or(StoreError::Uninitialised)?;
        self.inner.committed.send_replace(last);
        Ok(())
    }

    /// State sync: executes and commits a finalized block (its certificate checked by the caller).
    pub(crate) fn commit_finalized(&self, block: &Block, certificate: &[u8]) -> Result<(), String> {
        self.commit(block, certificate)
    }

    pub(crate) fn set_floor(&self, height: Height, certificate: Vec<u8>) {
        *self.inner.floor.lock().expect("floor lock") = Some((height, certificate));
    }

    /// The height this validator's state was synced to from a peer in this run, if it was.
    pub fn synced_at(&self) -> Option<Height> {
        self.inner.floor.lock().expect("floor lock").as_ref().map(|(height, _)| *height)
    }

    /// Checks and admits a transaction; returns its id and whether it is new here. Idempotent for
    /// a transaction already pending.
    pub fn submit(&self, tx: Transaction, sidecar: Option<Vec<u8>>) -> Result<(TxId, bool), SubmitError> {
        self.submit_many(vec![(tx, sidecar)]).pop().expect("one result per transaction")
    }

    /// Admits many transactions, checking their signatures in one batch (falling back to one by
    /// one when the batch fails, to tell which). One result per transaction, in order.
    pub fn submit_many(&self, txs: Vec<(Transaction, Option<Vec<u8>>)>) -> Vec<Result<(TxId, bool), SubmitError>> {
        let inner = &self.inner;
        let view = match inner.db.view(&[]) {
            Ok(v) => v,
            Err(e) => return txs.iter().map(|_| Err(SubmitError::Storage(e.to_string()))).collect(),
        };
        // Everything but the signature, per transaction.
        let checked: Vec<Result<VerifyingKey, SubmitError>> = txs
            .iter()
            .map(|(tx, sidecar)| {
                if tx.encode().len() > TX_BYTES_MAX {
                    return Err(SubmitError::Malformed);
                }
                if tx.body.chain_id != inner.chain_id {
                    return Err(TxInvalid::WrongChain.into());
                }
                medledger_ledger::check_sidecar(tx, sidecar.as_deref()).map_err(TxInvalid::Sidecar)?;
                let key = match &tx.body.kind {
                    // A validator's own transaction, signed with its consensus key.
                    kind if let Some(validator) = kind.validator_signer() => inner
                        .validator_keys
                        .get(validator as usize)
                        .copied()
                        .or_else(|| medledger_ledger::governance::validator(&view, validator).map(|v| v.public_key))
                        .filter(|key| validator_member_id(key) == tx.body.signer)
                        .ok_or(TxInvalid::UnknownSigner)?,
                    // A recovery is completed with the keys it installs.
                    TxKind::Recovery(Recovery { action: RecoveryAction::Complete, .. }) => {
                        read::<RecoveryEntry>(&view, &keys::recovery(&tx.body.signer))
                            .ok_or(TxInvalid::BadSignature)?
                            .signing_key
                    }
                    _ => {
                        read::<MemberEntry>(&view, &keys::member(&tx.body.signer))
                            .ok_or(TxInvalid::UnknownSigner)?
                            .signing_key
                    }
                };
                if tx.body.nonce <= last_nonce(&view, &tx.body.signer, tx.body.nonce.lane()) {
                    return Err(SubmitError::StaleNonce);
                }
                Ok(key)
            })
            .collect();
        drop(view);
        let signed: Vec<Vec<u8>> = txs.iter().map(|(tx, _)| tx.signed_bytes()).collect();
        let batch: Vec<_> = txs
            .iter()
            .zip(&checked)
            .zip(&signed)
            .filter_map(|(((tx, _), c), bytes)| c.as_ref().ok().map(|key| (*key, bytes.as_slice(), tx.signature)))
            .collect();
        let all_good =
            !batch.is_empty() && medledger_crypto::sign::verify_batch(medledger_ledger::TX_NAMESPACE, &batch);
        let mut results = Vec::with_capacity(txs.len());
        let mut admitted = false;
        {
            let mut pool = inner.mempool.lock().expect("mempool lock");
            for ((tx, sidecar), check) in txs.into_iter().zip(checked) {
                let result = check.and_then(|key| {
                    if !all_good && !tx.verify_signature(&key) {
                        return Err(TxInvalid::BadSignature.into());
                    }
                    let id = tx.id();
                    if pool.txs.contains_key(&id) {
                        return Ok((id, false));
                    }
                    if pool.txs.len() >= MEMPOOL_TXS_MAX {
                        return Err(SubmitError::Full);
                    }
                    if pool.waiting_of(&tx.body.signer) >= MEMPOOL_TXS_PER_SIGNER_MAX {
                        return Err(SubmitError::SignerFull);
                    }
                    pool.insert(id, tx, sidecar, key);
                    admitted = true;
                    Ok((id, true))
                });
                results.push(result);
            }
        }
        if admitted {
            inner.work.notify_one();
        }
        results
    }

    pub fn mempool_len(&self) -> usize {
        self.inner.mempool.lock().expect("mempool lock").txs.len()
    }

    /// The speculative batches from the last committed block up to `tip` (oldest first), or None
    /// when `tip` is neither committed nor known (its branch was never executed here).
    fn ancestry(&self, tip: &BlockHash) -> Option<Vec<Arc<Speculative>>> {
        // Read under the speculative lock, which a commit holds while it publishes the new last
        // block and drops the batches it made durable: the two are always seen together.
        let spec = self.inner.speculative.lock().expect("speculative lock");
        let last = self.last_applied();
        let mut chain = Vec::new();
        let mut cursor = *tip;
        while cursor != last.digest {
            let s = spec.get(&cursor)?;
            if s.pending.height <= last.height {
                return None;
            }
            cursor = s.parent;
            chain.push(s.clone());
        }
        chain.reverse();
        Some(chain)
    }

    fn build(&self, parent: &Block, proposer: u32, epoch: u64, now_ms: u64) -> Option<Block> {
        let inner = &self.inner;
        let ancestry = self.ancestry(&parent.digest())?;
        let pendings: Vec<&Pending> = ancestry.iter().map(|s| &s.pending).collect();
        let view = inner.db.view(&pendings).ok()?;
        let height = Height::new(parent.header.height.get() + 1);
        // The block must fall in the asking engine's epoch, by its parent's state, and its
        // proposer be one of that epoch's validators.
        let set = governance::epoch_at(&view, height)?;
        if set.epoch != epoch || !set.validators.contains(&proposer) {
            return None;
        }
        // While a new validator set waits for its epoch, blocks come even with nothing to
        // propose, so an idle chain reaches the boundary.
        let change_pending = governance::epoch(&view, governance::latest_epoch(&view))
            .is_some_and(|latest| latest.first_height > height);
        let time = Timestamp::new(now_ms.max(parent.header.time.get() + 1));
        let ctx = BlockContext { chain_id: inner.chain_id, height, time, validators: &inner.validator_keys };
        let candidates: Vec<(TxId, Transaction, Option<Vec<u8>>, VerifyingKey)> = {
            let pool = inner.mempool.lock().expect("mempool lock");
            pool.order
                .iter()
                .filter_map(|id| pool.txs.get(id).map(|(t, s, k)| (*id, t.clone(), s.clone(), *k)))
                .collect()
        };
        let committed = inner.db.view(&[]).ok()?;
        let mut executor = Executor::new(&view, ctx);
        let (mut txs, mut sidecars, mut drop) = (Vec::new(), Vec::new(), Vec::new());
        let mut bytes = 0usize;
        for (id, tx, sidecar, key) in candidates {
            if txs.len() >= BLOCK_TXS_MAX {
                break;
            }
            let size = tx.encode().len() + sidecar.as_ref().map_or(0, Vec::len) + 16;
            if bytes + size > BLOCK_BYTES_MAX - 4096 {
                break;
            }
            if tx.body.nonce <= last_nonce(&committed, &tx.body.signer, tx.body.nonce.lane()) {
                drop.push(id);
                continue;
            }
            if tx.body.nonce <= last_nonce(executor.view(), &tx.body.signer, tx.body.nonce.lane()) {
                // Already in a block of this branch that is not finalized yet.
                continue;
            }
            // Mempool admission verified the signature against `key`; execution trusts that only
            // while it is still the signer's key (keys change by rotation and recovery).
            match executor.apply(&tx, sidecar.as_deref(), Some(&key)) {
                Ok(_) => {
                    bytes += size;
                    txs.push(tx);
                    sidecars.push(sidecar);
                }
                Err(_) => drop.push(id),
            }
        }
        if !drop.is_empty() {
            let mut pool = inner.mempool.lock().expect("mempool lock");
            for id in &drop {
                pool.remove(id);
            }
            pool.prune();
        }
        if txs.is_empty() && !change_pending {
            return None;
        }
        let execution = executor.finish();
        let pending = inner.db.compute(&pendings, height, execution.writes).ok()?;
        let header = BlockHeader {
            chain_id: inner.chain_id,
            height,
            parent: parent.digest(),
            time,
            tx_root: tx_root(&txs),
            results_root: results_root(&execution.results),
            state_root: pending.root,
            proposer,
        };
        let block = Block { header, txs, sidecars };
        drop_view(view);
        drop_view(committed);
        inner
            .speculative
            .lock()
            .expect("speculative lock")
            .insert(block.digest(), Arc::new(Speculative { parent: parent.digest(), pending }));
        Some(block)
    }

    /// For a block that adopts a governance change: the new epoch and Merkle proofs of its set
    /// (the epoch entry, then each validator's entry) against the block's state root, which
    /// receipts carry as the validator-set history (the tree keeps no older versions to prove
    /// against later).
    fn epoch_link_proofs(&self, pending: &Pending) -> Result<Option<NewEpochProofs>, String> {
        let Some(Some(bytes)) = pending.writes.get(keys::EPOCH_LATEST) else { return Ok(None) };
        let epoch: u64 = borsh::from_slice(bytes).map_err(|e| e.to_string())?;
        let Some(Some(set)) = pending.writes.get(&keys::validator_epoch(epoch)) else { return Ok(None) };
        let set: governance::ValidatorEpoch = borsh::from_slice(set).map_err(|e| e.to_string())?;
        let mut proved = vec![keys::validator_epoch(epoch)];
        proved.extend(set.validators.iter().map(|index| keys::validator(*index)));
        let proofs = self.inner.db.prove(&[pending], &proved).map_err(|e| e.to_string())?;
        Ok(Some((epoch, proofs)))
    }

    /// Full re-check of someone else's block; on success its execution is kept for finalization.
    fn check(&self, parent: &Block, block: &Block, epoch: u64, now_ms: u64) -> Result<(), String> {
        let inner = &self.inner;
        let h = &block.header;
        if h.chain_id != inner.chain_id
            || h.parent != parent.digest()
            || h.height.get() != parent.header.height.get() + 1
        {
            return Err("does not extend its parent".into());
        }
        if h.time <= parent.header.time || h.time.get() > now_ms.saturating_add(BLOCK_TIME_DRIFT_MAX_MS) {
            return Err("block time out of bounds".into());
        }
        block.check_shape().map_err(|e| e.to_string())?;
        if block.has_purged_sidecars() {
            return Err("a proposal carries a purged sidecar".into());
        }
        let ancestry = self.ancestry(&parent.digest()).ok_or("parent state unknown")?;
        let pendings: Vec<&Pending> = ancestry.iter().map(|s| &s.pending).collect();
        let view = inner.db.view(&pendings).map_err(|e| e.to_string())?;
        let set = governance::epoch_at(&view, h.height).ok_or("no epoch holds the block")?;
        if set.epoch != epoch {
            return Err(format!("the block belongs to epoch {}, not {epoch}", set.epoch));
        }
        if !set.validators.contains(&h.proposer) {
            return Err("the proposer is not a validator of the epoch".into());
        }
        let ctx = BlockContext {
            chain_id: inner.chain_id,
            height: h.height,
            time: h.time,
            validators: &inner.validator_keys,
        };
        // Transactions this validator admitted had their signatures checked then, against the
        // key noted with them (trusted while it is still the signer's); the rest are checked here.
        let verified: Vec<Option<VerifyingKey>> = {
            let pool = inner.mempool.lock().expect("mempool lock");
            block.txs.iter().map(|tx| pool.txs.get(&tx.id()).map(|(_, _, key)| *key)).collect()
        };
        let execution =
            execute_block_verified(&view, ctx, &block.txs, &block.sidecars, &verified).map_err(|e| e.to_string())?;
        if results_root(&execution.results) != h.results_root {
            return Err("results root mismatch".into());
        }
        let pending = inner.db.compute(&pendings, h.height, execution.writes).map_err(|e| e.to_string())?;
        if pending.root != h.state_root {
            return Err("state root mismatch".into());
        }
        drop_view(view);
        inner
            .speculative
            .lock()
            .expect("speculative lock")
            .insert(block.digest(), Arc::new(Speculative { parent: parent.digest(), pending }));
        Ok(())
    }

    /// Commits a finalized block: chain log first (fsync), then one state transaction naming the
    /// log's new length. A crash in between cuts the log back on restart and the engine re-delivers.
    fn commit(&self, block: &Block, certificate: &[u8]) -> Result<(), String> {
        let started = std::time::Instant::now();
        let inner = &self.inner;
        let last = self.last_applied();
        let height = block.header.height;
        if height <= last.height {
            return Ok(());
        }
        if height.get() != last.height.get() + 1 || block.header.parent != last.digest {
            return Err(format!("finalized block {height} does not follow {}", last.height));
        }
        let digest = block.digest();
        let spec = inner.speculative.lock().expect("speculative lock").get(&digest).cloned();
        let pending = match spec {
            Some(s) => s.pending.clone(),
            None => {
                let view = inner.db.view(&[]).map_err(|e| e.to_string())?;
                let h = &block.header;
                let ctx = BlockContext {
                    chain_id: inner.chain_id,
                    height: h.height,
                    time: h.time,
                    validators: &inner.validator_keys,
                };
                let execution = execute_block(&view, ctx, &block.txs, &block.sidecars)
                    .map_err(|e| format!("finalized block invalid: {e}"))?;
                let pending = inner.db.compute(&[], height, execution.writes).map_err(|e| e.to_string())?;
                drop_view(view);
                pending
            }
        };
        if pending.root != block.header.state_root {
            return Err(format!("finalized block {height} has a state root this node does not reproduce"));
        }
        let location = inner
            .log
            .lock()
            .expect("log lock")
            .append(height, &block.encode(), certificate)
            .map_err(|e| e.to_string())?;
        let ids: Vec<TxId> = block.txs.iter().map(Transaction::id).collect();
        let metrics = &inner.metrics;
        for (tx, id) in block.txs.iter().zip(&ids) {
            let result = match pending.writes.get(&keys::tx_result(id)) {
                Some(Some(bytes)) => {
                    borsh::from_slice::<medledger_ledger::state::TxResultEntry>(bytes).map_or("unknown", |entry| {
                        match entry.outcome {
                            medledger_ledger::TxOutcome::Applied => "applied",
                            medledger_ledger::TxOutcome::Rejected { reason } => reason.as_str(),
                        }
                    })
                }
                _ => "unknown",
            };
            metrics.txs.get_or_create(&vec![("kind", tx.body.kind.name()), ("result", result)]).inc();
        }
        let sidecars: Vec<(Digest, Vec<u8>)> = block
            .txs
            .iter()
            .zip(&block.sidecars)
            .filter_map(|(tx, s)| Some((tx.body.sidecar_digest?, s.clone()?)))
            // A block replayed from a peer after an erasure carries purged slots: nothing to keep.
            .filter(|(_, bytes)| medledger_ledger::parse_purged(bytes).is_none())
            .collect();
        let epoch_link = self.epoch_link_proofs(&pending)?;
        inner.db.commit(pending, digest, &ids, &sidecars, Some(location)).map_err(|e| e.to_string())?;
        if let Some((epoch, proofs)) = epoch_link {
            inner.db.put_epoch_link(epoch, height, &proofs).map_err(|e| e.to_string())?;
        }
        let last = inner.db.last_applied().map_err(|e| e.to_string())?.ok_or("state vanished")?;
        {
            // The new last block and the batches it supersedes change together (see `ancestry`).
            let mut spec = inner.speculative.lock().expect("speculative lock");
            if !certificate.is_empty() {
                *inner.certified_tip.lock().expect("tip lock") = Some((block.header.clone(), certificate.to_vec()));
            }
            inner.committed.send_replace(last);
            spec.retain(|_, s| s.pending.height > height);
        }
        {
            let mut pool = inner.mempool.lock().expect("mempool lock");
            for id in &ids {
                pool.remove(id);
            }
            pool.prune();
        }
        metrics.blocks.inc();
        metrics.height.set(i64::try_from(height.get()).unwrap_or(i64::MAX));
        metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
        metrics.finality_seconds.observe(wall_clock_ms().saturating_sub(block.header.time.get()) as f64 / 1000.0);
        Ok(())
    }
}

/// Ends a read snapshot before the state is written (keeps redb from holding old pages).
fn drop_view(view: medledger_store::SpecView<'_>) {
    drop(view);
}

/// The outcome of a committed transaction, as clients see it.
pub fn tx_outcome(view: &impl StateView, id: &TxId) -> Option<medledger_ledger::state::TxResultEntry> {
    read(view, &keys::tx_result(id))
}

impl Ledger for App {
    fn genesis(&self) -> Block {
        self.inner.genesis_block.clone()
    }

    fn floor(&self) -> Option<Vec<u8>> {
        self.inner.floor.lock().expect("floor lock").as_ref().map(|(_, certificate)| certificate.clone())
    }

    async fn propose(&self, parent: &Block, proposer: u32, epoch: u64, now_ms: u64) -> Option<Block> {
        // Build as soon as there is work the parent's branch does not already hold; otherwise
        // wait for a submission or a commit (a parent notarized without this validator's vote
        // becomes buildable on once it is committed), up to the budget. Interest in both is
        // registered before each attempt, so one in between is not missed.
        let deadline = tokio::time::Instant::now() + PROPOSE_WAIT;
        let mut committed = self.inner.committed.subscribe();
        loop {
            let notified = self.inner.work.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            committed.mark_unchanged();
            if let Some(block) = self.build(parent, proposer, epoch, now_ms.max(wall_clock_ms())) {
                return Some(block);
            }
            let woken = async {
                tokio::select! {
                    () = notified => {}
                    _ = committed.changed() => {}
                }
            };
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                if self.ancestry(&parent.digest()).is_none() {
                    tracing::warn!(
                        height = parent.header.height.get(),
                        "leading a view on a parent never executed here; declining"
                    );
                }
                return None;
            }
        }
    }

    async fn verify(&self, parent: &Block, block: &Block, epoch: u64, now_ms: u64) -> bool {
        match self.check(parent, block, epoch, now_ms.max(wall_clock_ms())) {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(height = block.header.height.get(), %reason, "rejected proposed block");
                false
            }
        }
    }

    async fn finalized(&self, block: Block, certificate: Option<Vec<u8>>) {
        let height = block.header.height;
        if let Err(reason) = self.commit(&block, certificate.as_deref().unwrap_or_default()) {
            // A finalized block this node cannot apply means its state or code diverged from the
            // network: stopping beats serving a wrong state.
            tracing::error!(height = height.get(), %reason, "cannot apply finalized block; stopping");
            std::process::exit(70);
        }
        tracing::debug!(height = height.get(), txs = block.txs.len(), "committed");
    }

    fn schedule(&self) -> Schedule {
        let committed = self.last_applied().height.get();
        let Ok(view) = self.inner.db.view(&[]) else {
            return Schedule { committed, epochs: Vec::new() };
        };
        // Rebuilt only when governance changed it (a new epoch, a new validator).
        let stamp = (governance::latest_epoch(&view), read::<u32>(&view, keys::VALIDATOR_COUNT).unwrap_or(0));
        let mut cache = self.inner.schedule.lock().expect("schedule lock");
        if cache.0 != Some(stamp) {
            let epochs = governance::epochs(&view)
                .into_iter()
                .map(|e| EpochSet {
                    epoch: e.epoch,
                    first_height: e.first_height.get(),
                    validators: governance::members(&view, &e)
                        .into_iter()
                        .map(|v| EpochValidator {
                            index: v.index,
                            public_key: v.public_key.0,
                            address: v.p2p_address.parse().ok(),
                        })
                        .collect(),
                })
                .collect();
            *cache = (Some(stamp), epochs);
        }
        Schedule { committed, epochs: cache.1.clone() }
    }

    fn knows(&self, digest: &[u8; 32]) -> bool {
        let digest = BlockHash::new(*digest);
        let spec = self.inner.speculative.lock().expect("speculative lock");
        self.last_applied().digest == digest || spec.contains_key(&digest)
    }

    fn committed_digest(&self, height: u64) -> Option<[u8; 32]> {
        let last = self.last_applied();
        if height == last.height.get() {
            return Some(last.digest.0);
        }
        if height == 0 {
            return Some(self.inner.genesis_block.digest().0);
        }
        self.block_at(Height::new(height)).ok().flatten().map(|(block, _)| block.digest().0)
    }
}

pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl App {
    /// The API URLs of the validators of the epoch of the next block and of any pending epoch,
    /// but the one holding consensus key `me`.
    pub fn validator_apis(&self, scheme: &str, me: &[u8; 32]) -> Vec<String> {
        self.validator_peers(scheme, me).into_iter().map(|(_, url)| url).collect()
    }

    /// The stable indices of the validators of the current and any pending epoch (sorted).
    pub fn serving_validators(&self) -> Vec<u32> {
        let next = Height::new(self.last_applied().height.get().saturating_add(1));
        let Ok(view) = self.inner.db.view(&[]) else { return Vec::new() };
        let current = governance::epoch_at(&view, next).map_or(0, |e| e.epoch);
        let mut indices: Vec<u32> =
            governance::epochs(&view).into_iter().filter(|e| e.epoch >= current).flat_map(|e| e.validators).collect();
        indices.sort_unstable();
        indices.dedup();
        indices
    }

    /// [`App::validator_apis`] with each validator's stable index.
    pub fn validator_peers(&self, scheme: &str, me: &[u8; 32]) -> Vec<(u32, String)> {
        let indices = self.serving_validators();
        let Ok(view) = self.inner.db.view(&[]) else { return Vec::new() };
        indices
            .into_iter()
            .filter_map(|index| governance::validator(&view, index))
            .filter(|v| &v.public_key.0 != me)
            .map(|v| (v.index, format!("{scheme}://{}", v.api_address)))
            .collect()
    }

    /// Whether a transaction waits in this validator's mempool.
    pub fn has_pending(&self, id: &TxId) -> bool {
        self.inner.mempool.lock().expect("mempool lock").txs.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_crypto::sign::SigningKey;
    use medledger_ledger::{Suspend, TxBody};
    use medledger_types::Nonce;

    fn tx(signer: &SigningKey, member: MemberId, nonce: u64) -> Transaction {
        let body = TxBody {
            chain_id: ChainId::new([1; 32]),
            signer: member,
            nonce: Nonce::new(nonce),
            kind: TxKind::Suspend(Suspend { member, suspended: true }),
            sidecar_digest: None,
        };
        Transaction::sign(body, signer)
    }

    /// Finding 8 of the security review: any member filled the mempool. The pool counts each
    /// signer's waiting transactions (what admission bounds by `MEMPOOL_TXS_PER_SIGNER_MAX`) and
    /// forgets them as they leave.
    #[test]
    fn the_mempool_counts_each_signers_waiting_transactions() {
        let key = SigningKey::generate();
        let (mallory, alice) = (MemberId::new([1; 16]), MemberId::new([2; 16]));
        let mut pool = Mempool { order: VecDeque::new(), txs: HashMap::new(), per_signer: HashMap::new() };
        let ids: Vec<TxId> = (1..=3)
            .map(|n| {
                let t = tx(&key, mallory, n);
                let id = t.id();
                pool.insert(id, t, None, key.verifying_key());
                id
            })
            .collect();
        let t = tx(&key, alice, 1);
        pool.insert(t.id(), t, None, key.verifying_key());
        assert_eq!((pool.waiting_of(&mallory), pool.waiting_of(&alice)), (3, 1));
        for id in &ids {
            pool.remove(id);
            pool.remove(id);
        }
        pool.prune();
        assert_eq!((pool.waiting_of(&mallory), pool.waiting_of(&alice)), (0, 1));
        assert!(!pool.per_signer.contains_key(&mallory), "an empty count is dropped");
        assert_eq!(pool.order.len(), 1);
    }
}
