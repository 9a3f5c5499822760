//! Seeded, replayable fault tests of the consensus glue on the deterministic runtime and the
//! simulated network:
//!
//! - 4 and 7 validators under a random schedule of crashes and restarts (from the same storage),
//!   partitions (links removed and added back) and slow, jittery, lossy links;
//! - one Byzantine validator of four: a forging ledger behind the real engine, a hand-written
//!   Byzantine leader on the wire (invalid blocks, equivocation with valid blocks), and
//!   commonware's own Byzantine participants (`simplex::mocks`: conflicter, nuller, outdated,
//!   equivocator).
//!
//! Every run ends with the same checks on the honest validators: each committed the same block at
//! every height up to a target (safety), its own execution of that chain reached the same state
//! root (deterministic state), its toy ledger saw nothing out of order, every certificate it holds
//! verifies offline, and all of them reached the target after the faults stopped (progress).
//!
//! Every run prints its seed. `MEDLEDGER_SIM_SEED=<seed>` runs each test with that one seed instead
//! of its defaults: the fault schedule and the runtime (message delays, losses, task order) are
//! functions of the seed alone, so a failing run replays exactly, e.g.
//! `MEDLEDGER_SIM_SEED=103 cargo test -p medledger-node --test consensus_faults -- four_validators --nocapture`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{
    Rejection, SimOracle, ToyLedger, assert_same_chain, child_of, configs, epoch_zero, genesis, good_link, public_key,
    runner, seed_of, simulated_network, start_validator, state_after, verify_certificates,
};
use commonware_codec::{Copying, Decode as _, DecodeExt as _, Encode as _};
use commonware_consensus::Viewable as _;
use commonware_consensus::simplex::elector::{Config as _, Elector as _, RoundRobin, RoundRobinElector};
use commonware_consensus::simplex::mocks;
use commonware_consensus::simplex::types::{Certificate, Notarize, Proposal, Vote};
use commonware_consensus::types::{Epoch, Participant, Round, ViewDelta};
use commonware_cryptography::certificate::Verifier as _;
use commonware_cryptography::ed25519::PrivateKey;
use commonware_cryptography::{Digestible as _, Sha256};
use commonware_p2p::simulated::Link;
use commonware_p2p::{Receiver as _, Recipients, Sender as _};
use commonware_runtime::{Clock, Handle, Runner as _, Spawner as _, Supervisor as _, deterministic};
use commonware_utils::Probability;
use commonware_utils::ordered::Set;
use futures::future::{Either, select};
use medledger_ledger::Block;
use medledger_node::consensus::{
    ChainBlock, Channels, Digest, Ledger, PublicKey, Scheme, Timeouts, ValidatorConfig, namespace_for_chain,
    simulated_channels,
};
use medledger_types::Timestamp;
use medledger_types::limits::BLOCK_TIME_DRIFT_MAX_MS;

/// Set to one seed to replay it in every test of this file.
const SEED_VAR: &str = "MEDLEDGER_SIM_SEED";

/// The seeds a test runs: its defaults, or the one seed in [`SEED_VAR`].
fn seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var(SEED_VAR) {
        Ok(value) => vec![value.trim().parse().unwrap_or_else(|_| panic!("{SEED_VAR}={value:?} is not a u64 seed"))],
        Err(_) => defaults.to_vec(),
    }
}

fn announce(test: &str, seed: u64) {
    println!(
        "{test}: seed {seed} (replay: {SEED_VAR}={seed} cargo test -p medledger-node --test consensus_faults -- {test} --exact --nocapture)"
    );
}

/// Milliseconds since the Unix epoch on the virtual clock.
fn now_ms(context: &deterministic::Context) -> u64 {
    let elapsed = context.current().duration_since(UNIX_EPOCH).expect("the virtual clock starts at the epoch");
    u64::try_from(elapsed.as_millis()).expect("virtual time fits in u64 milliseconds")
}

/// Runs `future` for at most `limit` of virtual time; `None` if it did not finish.
async fn within<F: Future>(context: &deterministic::Context, limit: Duration, future: F) -> Option<F::Output> {
    match select(Box::pin(future), Box::pin(context.sleep(limit))).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(((), _)) => None,
    }
}

/// Waits until every ledger has committed `height` and holds a certified block at or above it,
/// panicking with everyone's heights after `limit` of virtual time.
async fn wait_all(context: &deterministic::Context, ledgers: &[ToyLedger], height: u64, limit: Duration, what: &str) {
    let all = futures::future::join_all(ledgers.iter().map(|ledger| async move {
        ledger.wait_for(height).await;
        ledger.wait_for_certified(height).await;
    }));
    if within(context, limit, all).await.is_none() {
        let heights: Vec<(u64, u64)> =
            ledgers.iter().map(|ledger| (ledger.height(), ledger.highest_certified())).collect();
        panic!(
            "{what}: not every validator committed and certified {height} within {limit:?}; (committed, certified): {heights:?}"
        );
    }
}

/// Safety, state and certificate checks on the honest `ledgers` through `through`.
fn check_honest(ledgers: &[ToyLedger], n: usize, through: u64) {
    assert_same_chain(ledgers, through);
    for (index, ledger) in ledgers.iter().enumerate() {
        let (certified, _) = verify_certificates(ledger, n);
        assert!(certified > 0, "validator {index} holds no certificate");
        assert!(ledger.highest_certified() >= through, "validator {index}: no certificate covers {through}");
    }
}

// ---------------------------------------------------------------------------------------------
// Crashes, partitions, lossy links.
// ---------------------------------------------------------------------------------------------

/// The fault schedule's dice: SplitMix64 seeded from the run's seed. Kept apart from the runtime's
/// random source so a change in how much randomness the engine draws does not reshuffle the
/// schedule of a seed.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x6d65_646c_6564_6765)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (the modulo bias is irrelevant here).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    fn pick(&mut self, items: &[usize]) -> usize {
        items[usize::try_from(self.below(items.len() as u64)).expect("few items")]
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.below(100) < chance
    }
}

/// A slow, jittery, lossy link: 5–400 ms mean latency, jitter up to a quarter of it, 60–100 %
/// of messages delivered.
fn bad_link(dice: &mut Dice) -> Link {
    let latency = dice.between(5, 400);
    Link {
        latency: Duration::from_millis(latency),
        jitter: Duration::from_millis(dice.between(0, latency / 4)),
        success_rate: Probability::new(dice.between(60, 100), 100).expect("a fraction"),
    }
}

/// `n` honest validators on a simulated network whose links and processes the test breaks.
struct Cluster {
    context: deterministic::Context,
    oracle: SimOracle,
    cfgs: Vec<ValidatorConfig>,
    ledgers: Vec<ToyLedger>,
    /// Each validator's running task tree, `None` while crashed.
    running: Vec<Option<Handle<()>>>,
    incarnations: Vec<u32>,
    /// Directed links currently removed (partitions).
    cut: BTreeSet<(usize, usize)>,
    /// Directed links currently slow or lossy; every other link is [`good_link`].
    degraded: BTreeMap<(usize, usize), Link>,
}

impl Cluster {
    async fn start(context: deterministic::Context, n: usize) -> Self {
        let oracle = simulated_network(&context, n).await;
        let cfgs = configs(n, Timeouts::default());
        let ledgers: Vec<ToyLedger> = (0..n).map(|_| ToyLedger::new(n as u32, 0)).collect();
        let mut running = vec![];
        for (cfg, ledger) in cfgs.iter().zip(&ledgers) {
            running.push(Some(start_validator(&context, &oracle, cfg.clone(), ledger.clone(), 0).await));
        }
        Self {
            context,
            oracle,
            cfgs,
            ledgers,
            running,
            incarnations: vec![0; n],
            cut: BTreeSet::new(),
            degraded: BTreeMap::new(),
        }
    }

    fn n(&self) -> usize {
        self.ledgers.len()
    }

    fn up(&self) -> Vec<usize> {
        (0..self.n()).filter(|index| self.running[*index].is_some()).collect()
    }

    fn crashed(&self) -> Vec<usize> {
        (0..self.n()).filter(|index| self.running[*index].is_none()).collect()
    }

    /// Aborts validator `index`'s whole task tree; its storage and ledger stay.
    async fn crash(&mut self, index: usize) {
        let handle = self.running[index].take().expect("crash a running validator");
        handle.abort();
        let _ = handle.await;
    }

    /// Starts validator `index` again from the same storage partitions and the same ledger.
    async fn restart(&mut self, index: usize) {
        assert!(self.running[index].is_none(), "restart a crashed validator");
        self.incarnations[index] += 1;
        let cfg = self.cfgs[index].clone();
        let handle =
            start_validator(&self.context, &self.oracle, cfg, self.ledgers[index].clone(), self.incarnations[index])
                .await;
        self.running[index] = Some(handle);
    }

    fn link_of(&self, pair: (usize, usize)) -> Link {
        self.degraded.get(&pair).cloned().unwrap_or_else(good_link)
    }

    /// Sets the quality of link `pair` (`None`: good); a cut link gets it when it is healed.
    async fn set_link(&mut self, pair: (usize, usize), link: Option<Link>) {
        match link {
            Some(link) => self.degraded.insert(pair, link),
            None => self.degraded.remove(&pair),
        };
        if !self.cut.contains(&pair) {
            // The simulated network refuses to add a link that exists: replace it.
            let (from, to) = (public_key(pair.0), public_key(pair.1));
            self.oracle.remove_link(from.clone(), to.clone()).await.expect("a present link");
            self.oracle.add_link(from, to, self.link_of(pair)).await.expect("link");
        }
    }

    /// Removes every link between a validator with `side[i]` true and one with it false.
    async fn partition(&mut self, side: &[bool]) {
        for from in 0..self.n() {
            for to in 0..self.n() {
                if side[from] != side[to] && self.cut.insert((from, to)) {
                    self.oracle.remove_link(public_key(from), public_key(to)).await.expect("a present link");
                }
            }
        }
    }

    /// Adds back every removed link, with its current quality.
    async fn heal(&mut self) {
        for pair in std::mem::take(&mut self.cut) {
            self.oracle.add_link(public_key(pair.0), public_key(pair.1), self.link_of(pair)).await.expect("link");
        }
    }

    /// Ends every fault: restarts the crashed validators, adds back every link, all of them good.
    async fn heal_all(&mut self) {
        for index in self.crashed() {
            self.restart(index).await;
        }
        self.heal().await;
        for pair in self.degraded.keys().copied().collect::<Vec<_>>() {
            self.set_link(pair, None).await;
        }
    }

    fn heights(&self) -> Vec<u64> {
        self.ledgers.iter().map(ToyLedger::height).collect()
    }
}

/// Counts of what a fault schedule did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Faults {
    crashes: u32,
    restarts: u32,
    partitions: u32,
    heals: u32,
    degraded_links: u32,
    restores: u32,
}

/// Runs `steps` random faults, 0.2–3.5 s of virtual time apart: crashes (at most `f` validators down
/// at once, so the others can keep finalizing), restarts, random two-way partitions (either side
/// may lack a quorum), heals, and slow or lossy links. Returns what it did, one line per step.
async fn chaos(cluster: &mut Cluster, dice: &mut Dice, steps: usize) -> (Faults, Vec<String>) {
    let n = cluster.n();
    let f = (n - 1) / 3;
    let mut faults = Faults::default();
    let mut events = vec![];
    for _ in 0..steps {
        cluster.context.sleep(Duration::from_millis(dice.between(200, 3_500))).await;
        let roll = dice.below(100);
        let event = match roll {
            0..=14 if cluster.crashed().len() < f => {
                let victim = dice.pick(&cluster.up());
                cluster.crash(victim).await;
                faults.crashes += 1;
                format!("crash {victim}")
            }
            15..=34 if !cluster.crashed().is_empty() => {
                let revived = dice.pick(&cluster.crashed());
                cluster.restart(revived).await;
                faults.restarts += 1;
                format!("restart {revived}")
            }
            0..=34 => "steady".to_string(),
            35..=47 => {
                let side = loop {
                    let side: Vec<bool> = (0..n).map(|_| dice.percent(50)).collect();
                    if side.iter().any(|in_a| *in_a) && side.iter().any(|in_a| !*in_a) {
                        break side;
                    }
                };
                cluster.partition(&side).await;
                faults.partitions += 1;
                let group: Vec<usize> = (0..n).filter(|index| side[*index]).collect();
                format!("partition {group:?} from the rest")
            }
            48..=69 => {
                cluster.heal().await;
                faults.heals += 1;
                "heal partitions".to_string()
            }
            70..=84 => {
                let mut changed = vec![];
                for from in 0..n {
                    for to in 0..n {
                        if from != to && dice.percent(30) {
                            let link = bad_link(dice);
                            changed.push(format!(
                                "{from}->{to} {}±{} ms {:.0}%",
                                link.latency.as_millis(),
                                link.jitter.as_millis(),
                                link.success_rate.as_f64() * 100.0
                            ));
                            cluster.set_link((from, to), Some(link)).await;
                            faults.degraded_links += 1;
                        }
                    }
                }
                format!("degrade {}", changed.join(", "))
            }
            _ => {
                for pair in cluster.degraded.keys().copied().collect::<Vec<_>>() {
                    cluster.set_link(pair, None).await;
                }
                faults.restores += 1;
                "restore link quality".to_string()
            }
        };
        let line = format!("{:>7} ms: {event} (heights {:?})", now_ms(&cluster.context), cluster.heights());
        println!("  {line}");
        events.push(line);
    }
    (faults, events)
}

/// Chaos steps per run.
const CHAOS_STEPS: usize = 30;
/// Blocks every validator must commit after the faults end, above the highest height seen then.
const BLOCKS_AFTER_HEALING: u64 = 5;
/// Virtual time the healed network gets to catch up and make progress.
const HEALING_TIME_MAX: Duration = Duration::from_secs(300);

/// What a fault run left behind, for the checks and the replay comparison.
struct FaultRun {
    ledgers: Vec<ToyLedger>,
    faults: Faults,
    events: Vec<String>,
    target: u64,
}

/// Runs `n` validators through [`chaos`] with `seed`, heals everything and waits until every
/// validator has committed (and holds a certificate at or above) the highest height seen at
/// healing plus [`BLOCKS_AFTER_HEALING`].
fn fault_run(test: &str, n: usize, seed: u64) -> FaultRun {
    announce(test, seed);
    let started = Instant::now();
    let (ledgers, faults, events, target, virtual_ms) = runner(seed).start(|context| async move {
        let mut cluster = Cluster::start(context, n).await;
        let mut dice = Dice::new(seed);
        let (faults, events) = chaos(&mut cluster, &mut dice, CHAOS_STEPS).await;
        let at_healing = cluster.heights();
        cluster.heal_all().await;
        let target = at_healing.iter().max().expect("validators") + BLOCKS_AFTER_HEALING;
        let context = &cluster.context;
        println!("  {:>7} ms: heal everything at heights {at_healing:?}; target {target}", now_ms(context));
        wait_all(context, &cluster.ledgers, target, HEALING_TIME_MAX, &format!("{test} seed {seed}")).await;
        let virtual_ms = now_ms(context);
        (cluster.ledgers, faults, events, target, virtual_ms)
    });
    println!(
        "{test}: seed {seed}: {faults:?}; all {n} reached {target} at {virtual_ms} ms virtual, {:?} wall",
        started.elapsed()
    );
    FaultRun { ledgers, faults, events, target }
}

fn check_fault_run(run: &FaultRun, n: usize) {
    check_honest(&run.ledgers, n, run.target);
    // The schedule did break things (a seed that rolled no faults would prove nothing).
    let faults = &run.faults;
    assert!(faults.crashes + faults.partitions + faults.degraded_links > 0, "no faults rolled: {faults:?}");
}

#[test]
fn four_validators_agree_after_crashes_partitions_and_lossy_links() {
    let test = "four_validators_agree_after_crashes_partitions_and_lossy_links";
    let seeds = seeds(&[101, 102, 103]);
    let runs: Vec<FaultRun> = seeds.iter().map(|seed| fault_run(test, 4, *seed)).collect();
    for run in &runs {
        check_fault_run(run, 4);
    }
    // The same seed replays the same faults and the same chain.
    let (first, again) = (&runs[0], fault_run(test, 4, seeds[0]));
    assert_eq!(first.events, again.events, "seed {} did not replay the same schedule", seeds[0]);
    assert_eq!(first.target, again.target, "seed {} did not replay", seeds[0]);
    let through = usize::try_from(first.target).expect("small");
    assert_eq!(
        first.ledgers[0].chain()[..=through],
        again.ledgers[0].chain()[..=through],
        "seed {} did not replay",
        seeds[0]
    );
}

#[test]
fn seven_validators_agree_after_crashes_partitions_and_lossy_links() {
    let test = "seven_validators_agree_after_crashes_partitions_and_lossy_links";
    for seed in seeds(&[201, 202, 203]) {
        let run = fault_run(test, 7, seed);
        check_fault_run(&run, 7);
    }
}

// ---------------------------------------------------------------------------------------------
// One Byzantine validator of four.
// ---------------------------------------------------------------------------------------------

/// The Byzantine validator's genesis index in the four-validator tests.
const BYZANTINE: usize = 3;
/// Honest validators in those tests.
const HONEST: usize = 3;

/// A block a Byzantine proposer builds instead of an honest child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Forgery {
    /// Names the parent's parent as its parent (at the right height).
    WrongParent,
    /// Skips a height.
    WrongHeight,
    /// Commits to a state its execution does not produce.
    BadStateRoot,
    /// Carries its parent's time.
    TimeAtParent,
    /// Carries a time before its parent's.
    TimeBeforeParent,
    /// Carries a time a minute ahead of the proposer's clock (the bound is 2 s).
    TimeBeyondDrift,
    /// An honest child (the Byzantine validator does not always misbehave).
    Valid,
}

impl Forgery {
    /// Why the honest toy ledger's `verify` refuses the forgery. `None` for a valid block, and for
    /// the forgeries consensus refuses before any ledger sees them: the glue does not propose a
    /// block that is not a child of the parent it was asked to build on, and the marshal does not
    /// pass one to `verify`.
    fn ledger_refusal(self) -> Option<Rejection> {
        match self {
            Self::BadStateRoot => Some(Rejection::StateRoot),
            Self::TimeAtParent | Self::TimeBeforeParent => Some(Rejection::TimeNotAfterParent),
            Self::TimeBeyondDrift => Some(Rejection::TimeBeyondDrift),
            Self::WrongParent | Self::WrongHeight | Self::Valid => None,
        }
    }
}

/// Checks what the honest `ledgers` made of a block the Byzantine validator built as `forgery`:
/// an invalid one was never committed, and every honest `verify` that refused it gave the reason
/// its forgery calls for (at least one did, when the forgery reaches the ledgers at all); a valid
/// one was refused by none.
fn assert_judged(ledgers: &[ToyLedger], forgery: Forgery, digest: &[u8; 32]) {
    let refusals: BTreeSet<Rejection> = ledgers.iter().filter_map(|ledger| ledger.refusal(digest)).collect();
    let expected: BTreeSet<Rejection> = forgery.ledger_refusal().into_iter().collect();
    assert_eq!(refusals, expected, "honest verify on the {forgery:?} block {}", hex::encode(digest));
    if forgery != Forgery::Valid {
        assert!(!committed_digests(ledgers).contains(digest), "the {forgery:?} block was finalized");
    }
}

/// Builds `forgery` on `parent`. Every other field is what an honest proposer would write, and the
/// state root matches the forged header (except for `BadStateRoot`), so each forgery breaks
/// exactly one rule.
fn forge(parent: &Block, proposer: u32, now_ms: u64, forgery: Forgery) -> Block {
    let mut block = child_of(parent, proposer, now_ms);
    let header = &mut block.header;
    match forgery {
        Forgery::WrongParent => header.parent = parent.header.parent,
        Forgery::WrongHeight => {
            header.height = header.height.checked_next().expect("heights stay small");
        }
        Forgery::TimeAtParent => header.time = parent.header.time,
        Forgery::TimeBeforeParent => header.time = Timestamp::new(parent.header.time.get().saturating_sub(1)),
        Forgery::TimeBeyondDrift => header.time = Timestamp::new(now_ms + BLOCK_TIME_DRIFT_MAX_MS + 60_000),
        Forgery::BadStateRoot | Forgery::Valid => {}
    }
    header.state_root = if forgery == Forgery::BadStateRoot {
        medledger_types::Digest::new([0xee; 32])
    } else {
        state_after(parent.header.state_root, header)
    };
    block
}

/// Every block a Byzantine validator built, by kind, with its digest.
type Forged = Arc<Mutex<Vec<(Forgery, [u8; 32])>>>;

fn forged_digests(forged: &Forged, wanted: impl Fn(Forgery) -> bool) -> BTreeSet<[u8; 32]> {
    forged.lock().unwrap().iter().filter(|(kind, _)| wanted(*kind)).map(|(_, digest)| *digest).collect()
}

/// Digests committed by any of `ledgers`.
fn committed_digests(ledgers: &[ToyLedger]) -> BTreeSet<[u8; 32]> {
    ledgers.iter().flat_map(ToyLedger::chain).collect()
}

/// Sum over `ledgers` of the blocks their `verify` refused for `reason`.
fn rejected(ledgers: &[ToyLedger], reason: Rejection) -> usize {
    ledgers.iter().map(|ledger| ledger.rejected(reason)).sum()
}

/// Polls (every virtual second) until `done`, failing after `limit`.
async fn poll_until(context: &deterministic::Context, limit: Duration, what: &str, done: impl Fn() -> bool) {
    let polled = within(context, limit, async {
        while !done() {
            context.sleep(Duration::from_secs(1)).await;
        }
    });
    assert!(polled.await.is_some(), "{what} within {limit:?}");
}

/// A validator whose ledger forges blocks when it leads (cycling through `plan`) and votes for
/// anything. It runs the real consensus glue and engine, so the glue's own checks apply to its
/// proposals: a block that is not a child of the requested parent never leaves it.
#[derive(Clone)]
struct ForgingLedger {
    inner: ToyLedger,
    plan: Vec<Forgery>,
    forged: Forged,
}

impl Ledger for ForgingLedger {
    fn genesis(&self) -> Block {
        self.inner.genesis()
    }

    async fn propose(&self, parent: &Block, proposer: u32, _: u64, now_ms: u64) -> Option<Block> {
        let mut forged = self.forged.lock().unwrap();
        let forgery = self.plan[forged.len() % self.plan.len()];
        let block = forge(parent, proposer, now_ms, forgery);
        forged.push((forgery, block.digest().0));
        Some(block)
    }

    async fn verify(&self, _: &Block, _: &Block, _: u64, _: u64) -> bool {
        true
    }

    async fn finalized(&self, block: Block, certificate: Option<Vec<u8>>) {
        self.inner.finalized(block, certificate).await;
    }

    fn schedule(&self) -> medledger_node::consensus::Schedule {
        self.inner.schedule()
    }

    fn committed_digest(&self, height: u64) -> Option<[u8; 32]> {
        self.inner.committed_digest(height)
    }
}

/// Starts the three honest validators of a four-validator network.
async fn start_honest(
    context: &deterministic::Context,
    oracle: &SimOracle,
    cfgs: &[ValidatorConfig],
    ledgers: &[ToyLedger],
) -> Vec<Handle<()>> {
    let mut handles = vec![];
    for (cfg, ledger) in cfgs.iter().zip(ledgers).take(HONEST) {
        handles.push(start_validator(context, oracle, cfg.clone(), ledger.clone(), 0).await);
    }
    handles
}

#[test]
fn forging_ledger_behind_the_real_engine_gets_no_invalid_block_finalized() {
    let test = "forging_ledger_behind_the_real_engine_gets_no_invalid_block_finalized";
    let plan = vec![
        Forgery::BadStateRoot,
        Forgery::TimeAtParent,
        Forgery::TimeBeforeParent,
        Forgery::TimeBeyondDrift,
        Forgery::WrongParent,
        Forgery::WrongHeight,
        Forgery::Valid,
    ];
    for seed in seeds(&[301, 302]) {
        announce(test, seed);
        let started = Instant::now();
        let honest: Vec<ToyLedger> = (0..HONEST).map(|_| ToyLedger::new(4, 0)).collect();
        let forged: Forged = Arc::default();
        let byzantine = ForgingLedger { inner: ToyLedger::new(4, 0), plan: plan.clone(), forged: forged.clone() };
        let (target, settled) = runner(seed).start(|context| {
            let (honest, plan, forged) = (honest.clone(), plan.clone(), forged.clone());
            async move {
                let oracle = simulated_network(&context, 4).await;
                let cfgs = configs(4, Timeouts::default());
                let _honest = start_honest(&context, &oracle, &cfgs, &honest).await;
                let _byzantine = start_validator(&context, &oracle, cfgs[BYZANTINE].clone(), byzantine, 0).await;
                // Twice through the plan, then a few more honest blocks so those views settle (a
                // proposal made after this point may still be in flight when the run stops).
                poll_until(&context, Duration::from_secs(600), "the forger led twice through its plan", || {
                    forged.lock().unwrap().len() >= 2 * plan.len()
                })
                .await;
                let settled = forged.lock().unwrap().len();
                let target = honest.iter().map(ToyLedger::height).max().expect("validators") + 3;
                wait_all(&context, &honest, target, Duration::from_secs(120), &format!("{test} seed {seed}")).await;
                (target, settled)
            }
        });
        check_honest(&honest, 4, target);
        // Each forgery that leaves the glue reaches the honest ledgers' verify and is refused for
        // its reason; a wrong parent or height never leaves the glue.
        for (forgery, digest) in forged.lock().unwrap().iter().take(settled) {
            assert_judged(&honest, *forgery, digest);
        }
        assert_eq!(rejected(&honest, Rejection::NotAChild), 0, "a block that is not a child reached a ledger");
        // The Byzantine validator's valid blocks are finalized like anyone's.
        let valid = forged_digests(&forged, |kind| kind == Forgery::Valid);
        assert!(
            !committed_digests(&honest).is_disjoint(&valid),
            "no valid block of the Byzantine validator was finalized"
        );
        let rejections: Vec<(Rejection, usize)> =
            [Rejection::StateRoot, Rejection::TimeNotAfterParent, Rejection::TimeBeyondDrift, Rejection::NotAChild]
                .into_iter()
                .map(|reason| (reason, rejected(&honest, reason)))
                .collect();
        println!(
            "{test}: seed {seed}: {} forged proposals, honest at {target}, honest verify refused {rejections:?}, {:?} wall",
            forged.lock().unwrap().len(),
            started.elapsed()
        );
    }
}

/// What the hand-written Byzantine leader does in a view it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Move {
    /// Gossips one forged block to everyone and votes for it.
    Forge(Forgery),
    /// Gossips one valid block (and votes for it) to one honest validator and a different valid
    /// block to the two others.
    Equivocate,
}

/// What the Byzantine leader did: each move with the digests it sent.
type Moves = Arc<Mutex<Vec<(Move, Vec<[u8; 32]>)>>>;

/// The validator-set members, sorted as the engine orders them (signer indices, leader rotation).
fn participants(n: usize) -> Set<PublicKey> {
    Set::try_from((0..n).map(public_key).collect::<Vec<_>>()).expect("distinct keys")
}

/// Validator `index`'s vote-signing scheme.
fn signing_scheme(index: usize, n: usize) -> Scheme {
    let key = PrivateKey::decode(Copying(&seed_of(index)[..])).expect("a signing key");
    Scheme::signer(&namespace_for_chain(&common::CHAIN), participants(n), key).expect("a participant")
}

/// A Byzantine validator that runs no engine: it learns blocks from the gossip channel and views
/// from the certificates honest validators broadcast, and in each view it leads (after a
/// notarized or finalized parent) it plays the next move of `plan`: it gossips the block(s) itself
/// and sends its notarize vote, which is what a proposal is in Simplex. It never votes otherwise.
async fn byzantine_leader(
    context: deterministic::Context,
    oracle: SimOracle,
    index: usize,
    n: usize,
    plan: Vec<Move>,
    moves: Moves,
) {
    let me = public_key(index);
    let Channels { votes, certificates, blocks, resolver: _resolver, backfill: _backfill } =
        simulated_channels(&oracle, &me).await.expect("channels");
    let (mut vote_sender, _votes_in) = epoch_zero(&context, votes).await;
    let (_, mut certificates_in) = epoch_zero(&context, certificates).await;
    let (mut block_sender, mut blocks_in) = blocks;
    let scheme = signing_scheme(index, n);
    let participants = participants(n);
    let elector: RoundRobinElector<Scheme> = RoundRobin::<Sha256>::default().build(&participants);
    let mine = Participant::from_usize(participants.position(&me).expect("a participant"));
    let honest: Vec<PublicKey> = (0..n).filter(|other| *other != index).map(public_key).collect();
    let proposer = u32::try_from(index).expect("few validators");

    // Every block gossiped by anyone, by digest, to build on.
    let known: Arc<Mutex<BTreeMap<[u8; 32], Block>>> = Arc::default();
    known.lock().unwrap().insert(genesis().digest().0, genesis());
    let _collector = context.child("gossip").spawn({
        let known = known.clone();
        move |_| async move {
            while let Ok((_, message)) = blocks_in.recv().await {
                if let Ok(block) = ChainBlock::decode(message) {
                    known.lock().unwrap().insert(block.digest().0, block.into_block());
                }
            }
        }
    });

    let mut seen_views = BTreeSet::new();
    while let Ok((_, message)) = certificates_in.recv().await {
        let Ok(certificate) = Certificate::<Scheme, Digest>::decode_cfg(message, &scheme.certificate_codec_config())
        else {
            continue;
        };
        let (view, parent_digest) = match certificate {
            Certificate::Notarization(notarization) => (notarization.view(), notarization.proposal.payload),
            Certificate::Finalization(finalization) => (finalization.view(), finalization.proposal.payload),
            Certificate::Nullification(_) => continue,
        };
        if !seen_views.insert(view) {
            continue;
        }
        let round = Round::new(Epoch::zero(), view.next());
        if elector.elect(round, ()) != mine {
            continue;
        }
        let Some(parent) = known.lock().unwrap().get(&parent_digest.0).cloned() else {
            continue;
        };
        let turn = moves.lock().unwrap().len();
        let planned = plan[turn % plan.len()];
        let now = now_ms(&context);
        let mut propose = |block: Block, to: Recipients<PublicKey>| {
            let block = ChainBlock::new(block).expect("forgeries keep the block's shape");
            let digest = block.digest();
            block_sender.send(to.clone(), block.encode(), false);
            let notarize = Notarize::sign(&scheme, Proposal::new(round, view, digest)).expect("a signer");
            vote_sender.send(to, Vote::<Scheme, Digest>::Notarize(notarize).encode(), true);
            digest.0
        };
        let sent = match planned {
            Move::Forge(forgery) => vec![propose(forge(&parent, proposer, now, forgery), Recipients::All)],
            Move::Equivocate => {
                let victim = honest[turn % honest.len()].clone();
                let others: Vec<PublicKey> = honest.iter().filter(|key| **key != victim).cloned().collect();
                let first = child_of(&parent, proposer, now);
                let second = child_of(&parent, proposer, first.header.time.get() + 1);
                vec![propose(first, Recipients::One(victim)), propose(second, Recipients::Some(others))]
            }
        };
        moves.lock().unwrap().push((planned, sent));
    }
}

#[test]
fn byzantine_leader_on_the_wire_cannot_fork_or_finalize_invalid_blocks() {
    let test = "byzantine_leader_on_the_wire_cannot_fork_or_finalize_invalid_blocks";
    // Equivocation comes last: an honest validator that catches it blocks the Byzantine peer.
    let plan = vec![
        Move::Forge(Forgery::WrongParent),
        Move::Forge(Forgery::WrongHeight),
        Move::Forge(Forgery::BadStateRoot),
        Move::Forge(Forgery::TimeAtParent),
        Move::Forge(Forgery::TimeBeforeParent),
        Move::Forge(Forgery::TimeBeyondDrift),
        Move::Forge(Forgery::Valid),
        Move::Equivocate,
    ];
    for seed in seeds(&[401, 402]) {
        announce(test, seed);
        let started = Instant::now();
        let honest: Vec<ToyLedger> = (0..HONEST).map(|_| ToyLedger::new(4, 0)).collect();
        let moves: Moves = Arc::default();
        let (target, settled, blocked) = runner(seed).start(|context| {
            let (honest, plan, moves) = (honest.clone(), plan.clone(), moves.clone());
            async move {
                let oracle = simulated_network(&context, 4).await;
                let cfgs = configs(4, Timeouts::default());
                let _honest = start_honest(&context, &oracle, &cfgs, &honest).await;
                let _byzantine = context.child("byzantine").spawn({
                    let (oracle, plan, moves) = (oracle.clone(), plan.clone(), moves.clone());
                    move |context| byzantine_leader(context, oracle, BYZANTINE, 4, plan, moves)
                });
                poll_until(&context, Duration::from_secs(600), "the Byzantine leader played its whole plan", || {
                    moves.lock().unwrap().len() >= plan.len()
                })
                .await;
                // Moves made after this point may still be in flight when the run stops.
                let settled = moves.lock().unwrap().len();
                let target = honest.iter().map(ToyLedger::height).max().expect("validators") + 3;
                wait_all(&context, &honest, target, Duration::from_secs(120), &format!("{test} seed {seed}")).await;
                (target, settled, oracle.blocked().await.expect("the network runs"))
            }
        });
        check_honest(&honest, 4, target);
        let moves = moves.lock().unwrap();
        let committed = committed_digests(&honest);
        // Each forgery that passes the marshal's parent and height checks reaches verify and is
        // refused for its reason; a wrong parent or height is refused before any ledger sees it.
        for (played, digests) in moves.iter().take(settled) {
            match played {
                Move::Forge(forgery) => assert_judged(&honest, *forgery, &digests[0]),
                Move::Equivocate => {
                    for digest in digests {
                        assert_judged(&honest, Forgery::Valid, digest);
                    }
                    let finalized = digests.iter().filter(|digest| committed.contains(*digest)).count();
                    assert!(finalized <= 1, "both equivocating blocks were finalized");
                }
            }
        }
        assert_eq!(rejected(&honest, Rejection::NotAChild), 0, "a block that is not a child reached a ledger");
        let byzantine = public_key(BYZANTINE);
        assert!(blocked.iter().all(|(_, peer)| *peer == byzantine), "an honest validator was blocked: {blocked:?}");
        let played: Vec<Move> = moves.iter().map(|(played, _)| *played).collect();
        println!(
            "{test}: seed {seed}: moves {played:?}; honest at {target}; {} blocks by the Byzantine leader finalized; \
             blocked by {} honest validator(s); {:?} wall",
            moves.iter().flat_map(|(_, digests)| digests).filter(|digest| committed.contains(*digest)).count(),
            blocked.len(),
            started.elapsed()
        );
    }
}

/// commonware's Byzantine participants from `simplex::mocks`; each replaces the engine of one
/// validator.
#[derive(Clone, Copy, Debug)]
enum Voter {
    /// Answers every notarize and finalize with a conflicting vote for a random digest as well.
    Conflicter,
    /// Answers every notarize with both a nullify and a finalize for the same view.
    Nuller,
    /// Notarizes proposals from three views back.
    Outdated,
    /// When it leads, notarizes two different made-up payloads, one to a victim and one to the
    /// rest. The mock hands the payloads only to its in-memory `Relay`, which these validators do
    /// not read, so here it is a leader that withholds its blocks (for equivocation with real,
    /// fetchable blocks see `byzantine_leader`).
    Equivocator,
}

#[test]
fn commonware_byzantine_voters_cannot_fork_or_stall_the_chain() {
    let test = "commonware_byzantine_voters_cannot_fork_or_stall_the_chain";
    const TARGET: u64 = 12;
    for (voter, seed) in [Voter::Conflicter, Voter::Nuller, Voter::Outdated, Voter::Equivocator]
        .into_iter()
        .zip(seeds(&[501, 502, 503, 504]).into_iter().cycle())
    {
        announce(test, seed);
        let started = Instant::now();
        let honest: Vec<ToyLedger> = (0..HONEST).map(|_| ToyLedger::new(4, 0)).collect();
        let blocked = runner(seed).start(|context| {
            let honest = honest.clone();
            async move {
                let oracle = simulated_network(&context, 4).await;
                let cfgs = configs(4, Timeouts::default());
                let _honest = start_honest(&context, &oracle, &cfgs, &honest).await;
                let channels = simulated_channels(&oracle, &public_key(BYZANTINE)).await.expect("channels");
                let scheme = signing_scheme(BYZANTINE, 4);
                let byzantine = context.child("byzantine");
                let _byzantine = match voter {
                    Voter::Conflicter => mocks::conflicter::Conflicter::<_, _, Sha256>::new(
                        byzantine,
                        mocks::conflicter::Config { scheme },
                    )
                    .start(epoch_zero(&context, channels.votes).await),
                    Voter::Nuller => {
                        mocks::nuller::Nuller::<_, _, Sha256>::new(byzantine, mocks::nuller::Config { scheme })
                            .start(epoch_zero(&context, channels.votes).await)
                    }
                    Voter::Outdated => mocks::outdated::Outdated::<_, _, Sha256>::new(
                        byzantine,
                        mocks::outdated::Config { scheme, view_delta: ViewDelta::new(3) },
                    )
                    .start(epoch_zero(&context, channels.votes).await),
                    Voter::Equivocator => mocks::equivocator::Equivocator::new(
                        byzantine,
                        mocks::equivocator::Config::<_, _, Sha256> {
                            scheme,
                            elector: RoundRobin::<Sha256>::default(),
                            epoch: Epoch::zero(),
                            relay: Arc::new(mocks::relay::Relay::new()),
                        },
                    )
                    .start(
                        epoch_zero(&context, channels.votes).await,
                        epoch_zero(&context, channels.certificates).await,
                    ),
                };
                wait_all(&context, &honest, TARGET, Duration::from_secs(300), &format!("{test} {voter:?} seed {seed}"))
                    .await;
                oracle.blocked().await.expect("the network runs")
            }
        });
        check_honest(&honest, 4, TARGET);
        let byzantine = public_key(BYZANTINE);
        assert!(blocked.iter().all(|(_, peer)| *peer == byzantine), "an honest validator was blocked: {blocked:?}");
        if matches!(voter, Voter::Conflicter | Voter::Nuller) {
            // Conflicting votes are signed evidence: every honest validator that sees them blocks the peer.
            assert!(!blocked.is_empty(), "no honest validator blocked the {voter:?}");
        }
        println!(
            "{test}: {voter:?} seed {seed}: honest at {TARGET}, blocked by {} honest validators, {:?} wall",
            blocked.len(),
            started.elapsed()
        );
    }
}
