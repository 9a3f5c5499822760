//! Harness shared by the consensus simulation tests (`consensus_sim.rs`, `consensus_faults.rs`):
//! a toy [`Ledger`], validator keys and configs, the deterministic runtime, the simulated network,
//! and the checks every honest validator must pass.
//!
//! The toy ledger's blocks carry no transactions. Its state is a hash chain: the state after a
//! block is [`state_after`] the parent's state (it binds the block's height, time and proposer),
//! and each header carries the state after itself, so `verify` recomputes it from the parent's
//! header. `finalized` executes every block again from the ledger's own previous state and
//! records the result per height, so validators that applied the same chain hold the same state
//! roots. `verify` enforces the real app's time rules: strictly after the parent's time and at
//! most [`BLOCK_TIME_DRIFT_MAX_MS`] ahead of the verifier's clock. Like the real app, it builds
//! only on a parent it executed (verified, built or committed).

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use commonware_p2p::simulated::{self, Link};
use commonware_p2p::utils::mux::{Muxer, SubReceiver, SubSender};
use commonware_runtime::{Handle, Spawner as _, Supervisor as _, deterministic};
use commonware_utils::{NZUsize, probability};
use medledger_ledger::governance::EPOCH_SWITCH_BLOCKS;
use medledger_ledger::{Block, BlockHeader};
use medledger_node::consensus::{
    self, Channels, EpochSet, EpochValidator, Ledger, PublicKey, Schedule, Timeouts, ValidatorConfig, ValidatorPeer,
    max_message_size, namespace_for_chain, simulated_channels, validator_public_key, verify_certificate,
};
use medledger_types::limits::BLOCK_TIME_DRIFT_MAX_MS;
use medledger_types::{BlockHash, ChainId, Digest, Height, Timestamp};
use tokio::sync::watch;

pub const CHAIN: ChainId = ChainId([7; 32]);

/// Why the toy ledger's `verify` refused a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    /// Wrong height, parent hash or chain id (the glue and the marshal check these first).
    NotAChild,
    /// The block's time is at or before its parent's.
    TimeNotAfterParent,
    /// The block's time lies more than the drift bound ahead of the verifier's clock.
    TimeBeyondDrift,
    /// The toy blocks carry no transactions.
    Transactions,
    /// The header's state root is not the state after executing the block on its parent's.
    StateRoot,
    /// The block falls in another epoch than the engine's, or its proposer is not in the epoch.
    Epoch,
}

/// What one validator's toy ledger has committed; shared across that validator's restarts (it
/// stands for the ledger's durable store).
#[derive(Default)]
pub struct ToyState {
    /// Committed blocks by height, with their certificates; height 0 is genesis.
    pub committed: BTreeMap<u64, (Block, Option<Vec<u8>>)>,
    /// The state after each committed height, as this ledger executed it from its own previous
    /// state (not read from the header).
    pub state_roots: BTreeMap<u64, Digest>,
    /// Digests of every block this ledger built as proposer.
    pub proposed: Vec<[u8; 32]>,
    /// Calls to `propose`, and how many of them had nothing to propose.
    pub propose_calls: u64,
    pub declined: u64,
    /// Re-deliveries at or below the committed height (tolerated, skipped).
    pub redelivered: u64,
    /// Blocks `verify` refused (by digest), and why.
    pub refused: BTreeMap<[u8; 32], Rejection>,
    /// Blocks this ledger executed (verified or built) and so can build on before they commit.
    pub executed: BTreeSet<[u8; 32]>,
    /// With [`ToyLedger::late_to_vote`]: blocks refused at first sight.
    pub missed: BTreeSet<[u8; 32]>,
    /// Calls to `propose` on a parent this ledger never executed (the glue executes it first).
    pub proposed_on_unexecuted: u64,
    /// Broken expectations, reported by the test at the end.
    pub violations: Vec<String>,
}

#[derive(Clone)]
pub struct ToyLedger {
    pub state: Arc<Mutex<ToyState>>,
    committed_height: Arc<watch::Sender<u64>>,
    /// `propose` has nothing to propose on every `idle_every`-th call (0: always has work).
    idle_every: u64,
    /// The genesis validators (seed indices `0..genesis`) and the validator-set changes, each
    /// adopted at a height (as a governance transaction in that block would be) with the next
    /// set's seed indices, as the real ledger schedules them.
    plan: Arc<Plan>,
    /// Refuse every block the first time `verify` sees it (as if each reached this validator too
    /// late to vote on), and check it normally the next time.
    late_to_vote: bool,
}

/// Genesis validators (seed indices `0..n`) and the changes: (adoption height, next set).
pub type Plan = (u32, Vec<(u64, Vec<u32>)>);

/// The toy epochs: epoch 0 from genesis, epoch `i + 1` from `adopt_i + EPOCH_SWITCH_BLOCKS + 1`.
fn toy_epochs(plan: &Plan) -> Vec<(u64, Vec<u32>)> {
    let mut epochs = vec![(0, (0..plan.0).collect())];
    for (adopted, set) in &plan.1 {
        epochs.push((adopted + EPOCH_SWITCH_BLOCKS + 1, set.clone()));
    }
    epochs
}

/// The toy epoch of `height` (its number and validators), by the plan alone: every toy chain has
/// a block at each height, so an adoption at height `a` is in every branch that reaches `a`.
pub fn toy_epoch_of(plan: &Plan, height: u64) -> (u64, Vec<u32>) {
    let epochs = toy_epochs(plan);
    let (epoch, (_, set)) =
        epochs.iter().enumerate().rev().find(|(_, (first, _))| *first <= height).expect("epoch 0 starts at 0");
    (epoch as u64, set.clone())
}

fn empty_root() -> Digest {
    medledger_ledger::merkle::root::<Vec<u8>>(&[])
}

/// The toy state after executing a block with `header` on the state `before`.
pub fn state_after(before: Digest, header: &BlockHeader) -> Digest {
    let mut bytes = b"medledger-toy-state".to_vec();
    bytes.extend_from_slice(before.as_bytes());
    bytes.extend_from_slice(&header.height.get().to_be_bytes());
    bytes.extend_from_slice(&header.time.get().to_be_bytes());
    bytes.extend_from_slice(&header.proposer.to_be_bytes());
    Digest::new(medledger_crypto::sha256(&bytes))
}

pub fn genesis() -> Block {
    Block {
        header: BlockHeader {
            chain_id: CHAIN,
            height: Height::new(0),
            parent: BlockHash::new([0; 32]),
            time: Timestamp::new(0),
            tx_root: empty_root(),
            results_root: empty_root(),
            state_root: Digest::new([0; 32]),
            proposer: 0,
        },
        txs: vec![],
        sidecars: vec![],
    }
}

/// The block an honest toy ledger builds on `parent`: time now (or just after the parent's, if
/// that is later) and the state after it.
pub fn child_of(parent: &Block, proposer: u32, now_ms: u64) -> Block {
    let mut header = BlockHeader {
        chain_id: parent.header.chain_id,
        height: parent.header.height.checked_next().expect("heights stay small"),
        parent: parent.digest(),
        time: Timestamp::new(now_ms.max(parent.header.time.get() + 1)),
        tx_root: empty_root(),
        results_root: empty_root(),
        state_root: Digest::new([0; 32]),
        proposer,
    };
    header.state_root = state_after(parent.header.state_root, &header);
    Block { header, txs: vec![], sidecars: vec![] }
}

/// The toy ledger's validity rule for `block` proposed on `parent`, checked at `now_ms`.
pub fn check_child(parent: &Block, block: &Block, now_ms: u64) -> Result<(), Rejection> {
    let header = &block.header;
    if parent.header.height.checked_next() != Some(header.height)
        || header.parent != parent.digest()
        || header.chain_id != parent.header.chain_id
    {
        return Err(Rejection::NotAChild);
    }
    if header.time <= parent.header.time {
        return Err(Rejection::TimeNotAfterParent);
    }
    if header.time.get() > now_ms.saturating_add(BLOCK_TIME_DRIFT_MAX_MS) {
        return Err(Rejection::TimeBeyondDrift);
    }
    if !block.txs.is_empty() {
        return Err(Rejection::Transactions);
    }
    if header.state_root != state_after(parent.header.state_root, header) {
        return Err(Rejection::StateRoot);
    }
    Ok(())
}

impl ToyLedger {
    /// The ledger of a network of `validators` genesis validators that never changes its set.
    pub fn new(validators: u32, idle_every: u64) -> Self {
        Self::with_changes(validators, idle_every, vec![])
    }

    /// The ledger of a network whose set changes as `changes` says: (adoption height, next set).
    pub fn with_changes(validators: u32, idle_every: u64, changes: Vec<(u64, Vec<u32>)>) -> Self {
        let mut state = ToyState::default();
        let genesis = genesis();
        state.state_roots.insert(0, genesis.header.state_root);
        state.committed.insert(0, (genesis, None));
        let (committed_height, _) = watch::channel(0);
        Self {
            state: Arc::new(Mutex::new(state)),
            committed_height: Arc::new(committed_height),
            idle_every,
            plan: Arc::new((validators, changes)),
            late_to_vote: false,
        }
    }

    /// This ledger refuses each block the first time it sees it (see [`ToyState::missed`]).
    pub fn late_to_vote(mut self) -> Self {
        self.late_to_vote = true;
        self
    }

    /// The epoch (number, validators) of `height`.
    pub fn epoch_of(&self, height: u64) -> (u64, Vec<u32>) {
        toy_epoch_of(&self.plan, height)
    }

    pub fn height(&self) -> u64 {
        *self.committed_height.borrow()
    }

    /// Waits (on the commit event, not a timer) until `height` is committed.
    pub async fn wait_for(&self, height: u64) {
        let mut receiver = self.committed_height.subscribe();
        receiver.wait_for(|committed| *committed >= height).await.expect("the sender lives in self");
    }

    /// Waits until a block at or above `height` is committed with its own certificate, which
    /// covers every block below it through the hash chain.
    pub async fn wait_for_certified(&self, height: u64) {
        let mut receiver = self.committed_height.subscribe();
        loop {
            if self.highest_certified() >= height {
                return;
            }
            receiver.changed().await.expect("the sender lives in self");
        }
    }

    /// The highest committed height whose block came with its own certificate (0 if none).
    pub fn highest_certified(&self) -> u64 {
        let state = self.state.lock().unwrap();
        state
            .committed
            .iter()
            .rev()
            .find(|(_, (_, certificate))| certificate.is_some())
            .map_or(0, |(height, _)| *height)
    }

    /// Digests of the committed blocks, genesis first.
    pub fn chain(&self) -> Vec<[u8; 32]> {
        self.state.lock().unwrap().committed.values().map(|(block, _)| block.digest().0).collect()
    }

    /// The state this ledger computed after committing `height`.
    pub fn state_root_at(&self, height: u64) -> Option<Digest> {
        self.state.lock().unwrap().state_roots.get(&height).copied()
    }

    /// How many distinct blocks `verify` refused for `reason`.
    pub fn rejected(&self, reason: Rejection) -> usize {
        self.state.lock().unwrap().refused.values().filter(|refused| **refused == reason).count()
    }

    /// Why `verify` refused the block with `digest`, if it did.
    pub fn refusal(&self, digest: &[u8; 32]) -> Option<Rejection> {
        self.state.lock().unwrap().refused.get(digest).copied()
    }

    pub fn check(&self) {
        let state = self.state.lock().unwrap();
        assert!(state.violations.is_empty(), "toy ledger saw: {:?}", state.violations);
    }

    /// Commits a finalized block: checks it extends the last committed one, executes it from this
    /// ledger's own state and checks the header agrees.
    fn commit(&self, block: Block, certificate: Option<Vec<u8>>) {
        let height = block.header.height.get();
        {
            let mut state = self.state.lock().unwrap();
            if let Some((committed, _)) = state.committed.get(&height) {
                if committed.digest() != block.digest() {
                    state.violations.push(format!("conflicting block finalized at height {height}"));
                }
                state.redelivered += 1;
                return;
            }
            let (last, (parent, _)) = state.committed.last_key_value().expect("genesis is committed");
            let (last, parent_digest) = (*last, parent.digest());
            if height != last + 1 || block.header.parent != parent_digest {
                state.violations.push(format!("height {height} delivered after {last}"));
            }
            let before = *state.state_roots.get(&last).expect("every committed height has a state");
            let after = state_after(before, &block.header);
            if block.header.state_root != after {
                state.violations.push(format!("block {height} commits to a state this ledger did not compute"));
            }
            state.state_roots.insert(height, after);
            state.committed.insert(height, (block, certificate));
        }
        self.committed_height.send_replace(height);
    }
}

impl Ledger for ToyLedger {
    fn genesis(&self) -> Block {
        genesis()
    }

    async fn propose(&self, parent: &Block, proposer: u32, epoch: u64, now_ms: u64) -> Option<Block> {
        let (block_epoch, set) = self.epoch_of(parent.header.height.get() + 1);
        if block_epoch != epoch || !set.contains(&proposer) {
            return None;
        }
        let mut state = self.state.lock().unwrap();
        state.propose_calls += 1;
        let parent_committed = state.committed.get(&parent.header.height.get()).map(|(b, _)| b.digest());
        if parent_committed != Some(parent.digest()) && !state.executed.contains(&parent.digest().0) {
            state.proposed_on_unexecuted += 1;
            return None;
        }
        if self.idle_every != 0 && state.propose_calls.is_multiple_of(self.idle_every) {
            state.declined += 1;
            return None;
        }
        let block = child_of(parent, proposer, now_ms);
        state.proposed.push(block.digest().0);
        state.executed.insert(block.digest().0);
        Some(block)
    }

    async fn verify(&self, parent: &Block, block: &Block, epoch: u64, now_ms: u64) -> bool {
        let (block_epoch, set) = self.epoch_of(block.header.height.get());
        let in_epoch =
            if block_epoch == epoch && set.contains(&block.header.proposer) { Ok(()) } else { Err(Rejection::Epoch) };
        if self.late_to_vote && self.state.lock().unwrap().missed.insert(block.digest().0) {
            return false;
        }
        match in_epoch.and_then(|()| check_child(parent, block, now_ms)) {
            Ok(()) => {
                self.state.lock().unwrap().executed.insert(block.digest().0);
                true
            }
            Err(reason) => {
                self.state.lock().unwrap().refused.insert(block.digest().0, reason);
                false
            }
        }
    }

    async fn finalized(&self, block: Block, certificate: Option<Vec<u8>>) {
        self.commit(block, certificate);
    }

    fn schedule(&self) -> Schedule {
        let committed = self.height();
        let epochs = toy_epochs(&self.plan)
            .into_iter()
            .enumerate()
            .take_while(|(epoch, (first, _))| {
                // Epoch i + 1 is known once its adoption (first - EPOCH_SWITCH_BLOCKS - 1) is committed.
                *epoch == 0 || first - EPOCH_SWITCH_BLOCKS - 1 <= committed
            })
            .map(|(epoch, (first_height, set))| EpochSet {
                epoch: epoch as u64,
                first_height,
                validators: set
                    .iter()
                    .map(|index| EpochValidator {
                        index: *index,
                        public_key: validator_public_key(&seed_of(*index as usize)),
                        address: Some(address_of(*index as usize)),
                    })
                    .collect(),
            })
            .collect();
        Schedule { committed, epochs }
    }

    fn committed_digest(&self, height: u64) -> Option<[u8; 32]> {
        self.state.lock().unwrap().committed.get(&height).map(|(block, _)| block.digest().0)
    }

    fn knows(&self, digest: &[u8; 32]) -> bool {
        let state = self.state.lock().unwrap();
        state.executed.contains(digest) || state.committed.values().any(|(block, _)| &block.digest().0 == digest)
    }
}

/// The (unused by the simulated network) p2p address of validator `index`.
pub fn address_of(index: usize) -> std::net::SocketAddr {
    format!("127.0.0.1:{}", 30_000 + index).parse().expect("a socket address")
}

pub fn seed_of(index: usize) -> [u8; 32] {
    let mut seed = [0x5a; 32];
    seed[0] = u8::try_from(index).expect("few validators");
    seed
}

pub fn public_key(index: usize) -> PublicKey {
    use commonware_codec::{Copying, DecodeExt as _};
    PublicKey::decode(Copying(&validator_public_key(&seed_of(index))[..])).expect("a valid key")
}

/// Configs of an `n`-validator network on 127.0.0.1 (addresses unused by the simulated network).
pub fn configs(n: usize, timeouts: Timeouts) -> Vec<ValidatorConfig> {
    let validators: Vec<ValidatorPeer> = (0..n)
        .map(|index| ValidatorPeer { public_key: validator_public_key(&seed_of(index)), address: address_of(index) })
        .collect();
    (0..n)
        .map(|index| ValidatorConfig {
            index: u32::try_from(index).expect("few validators"),
            signing_seed: seed_of(index),
            validators: validators.clone(),
            listen: validators[index].address,
            storage_dir: std::env::temp_dir(),
            namespace: namespace_for_chain(&CHAIN),
            timeouts,
            archive_retention: 1024,
        })
        .collect()
}

pub fn validator_keys(n: usize) -> Vec<[u8; 32]> {
    (0..n).map(|index| validator_public_key(&seed_of(index))).collect()
}

pub type SimOracle = simulated::Oracle<PublicKey, deterministic::Context>;

/// The link every pair of validators starts with: 20 ms ± 5 ms, nothing lost.
pub fn good_link() -> Link {
    Link { latency: Duration::from_millis(20), jitter: Duration::from_millis(5), success_rate: probability!(1.0) }
}

/// A simulated network of `n` validators, every pair linked both ways with [`good_link`].
pub async fn simulated_network(context: &deterministic::Context, n: usize) -> SimOracle {
    let keys: Vec<PublicKey> = (0..n).map(public_key).collect();
    let (network, oracle) = simulated::Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: max_message_size(n).expect("a small set"),
            max_peers_per_set: NZUsize!(n),
            disconnect_on_block: true,
            // The validators track the set around each governance change (see the orchestrator).
            tracked_peer_sets: NZUsize!(4),
        },
        keys.clone(),
    )
    .await;
    network.start();
    for from in &keys {
        for to in &keys {
            if from != to {
                oracle.add_link(from.clone(), to.clone(), good_link()).await.expect("link");
            }
        }
    }
    oracle
}

/// Starts validator `cfg.index` as its own task tree (aborting the handle crashes it).
pub async fn start_validator<L: Ledger>(
    context: &deterministic::Context,
    oracle: &SimOracle,
    cfg: ValidatorConfig,
    ledger: L,
    incarnation: u32,
) -> Handle<()> {
    let me = public_key(cfg.index as usize);
    let channels: Channels<_, _> = simulated_channels(oracle, &me).await.expect("channels");
    let (manager, blocker) = (oracle.socket_manager(), oracle.control(me));
    context.child("validator").with_attribute("index", cfg.index).with_attribute("incarnation", incarnation).spawn(
        move |context| async move {
            consensus::run(context, cfg, ledger, manager, blocker, channels).await.expect("validator starts");
        },
    )
}

/// One of a validator's Simplex channels (votes, certificates, certificate fetches) as validators
/// speak it: every message on the subchannel of its validator-set epoch, here epoch 0. What a
/// Byzantine peer that runs no real engine sends and receives through.
pub async fn epoch_zero<S, R>(
    context: &deterministic::Context,
    (sender, receiver): (S, R),
) -> (SubSender<S>, SubReceiver<PublicKey>)
where
    S: commonware_p2p::Sender<PublicKey = PublicKey>,
    R: commonware_p2p::Receiver<PublicKey = PublicKey>,
{
    let (mux, mut handle) = Muxer::new(context.child("epoch_mux"), sender, receiver);
    mux.start();
    handle.register(0).await.expect("a fresh multiplexer")
}

/// A deterministic runtime seeded with `seed`; a run that has not finished after an hour of
/// virtual time fails.
pub fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::new().with_seed(seed).with_timeout(Some(Duration::from_secs(3_600))),
    )
}

/// Every certificate verifies offline, and every block committed without one (finalized through
/// a descendant, or recovered after a crash) is covered by a certified descendant through the hash
/// chain. Returns how many blocks carry their own certificate.
pub fn check_certificates(ledger: &ToyLedger, n: usize) -> usize {
    let (certified, uncovered) = verify_certificates(ledger, n);
    assert_eq!(uncovered, 0, "blocks above the highest certified one");
    certified
}

/// Checks every certificate offline; returns how many blocks carry their own certificate and how
/// many committed blocks lie above the highest certified one (not yet covered by a certificate).
pub fn verify_certificates(ledger: &ToyLedger, n: usize) -> (usize, usize) {
    let keys = validator_keys(n);
    let namespace = namespace_for_chain(&CHAIN);
    let state = ledger.state.lock().unwrap();
    let mut certified = 0;
    let mut highest_certified = 0;
    for (height, (block, certificate)) in state.committed.iter().skip(1) {
        if let Some(certificate) = certificate {
            assert!(
                verify_certificate(&namespace, &keys, block.digest().0, certificate),
                "certificate of height {height} does not verify"
            );
            certified += 1;
            highest_certified = *height;
        }
    }
    let uncovered = state.committed.keys().filter(|height| **height > highest_certified).count();
    (certified, uncovered)
}

/// Every ledger committed the same blocks through `through`, none saw a violation, and their own
/// executions of the chain reached the same state at `through`.
pub fn assert_same_chain(ledgers: &[ToyLedger], through: u64) {
    let reference = ledgers[0].chain();
    let reference_state = ledgers[0].state_root_at(through);
    assert!(reference_state.is_some(), "validator 0 has not committed height {through}");
    let through_index = usize::try_from(through).expect("small");
    for (index, ledger) in ledgers.iter().enumerate() {
        ledger.check();
        let chain = ledger.chain();
        assert!(chain.len() > through_index, "validator {index} has not committed height {through}");
        assert_eq!(chain[..=through_index], reference[..=through_index], "validator {index} diverged");
        assert_eq!(ledger.state_root_at(through), reference_state, "validator {index} computed another state");
    }
}
