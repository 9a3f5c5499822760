//! Epochs: one Simplex engine per validator-set epoch this validator belongs to, started and
//! stopped as the committed chain crosses epoch boundaries.
//!
//! Invariants:
//!
//! - The epoch to run is always derived from durable state: the epoch of the block after the last
//!   committed one. A crash anywhere around a boundary restarts in the right epoch.
//! - Epoch `e + 1` starts only once this validator committed the last block of epoch `e`, with
//!   that block as the new engine's genesis (`Floor::Genesis`); the engine of epoch `e` stops then.
//! - Votes, certificates and certificate fetches travel on per-epoch subchannels, so no message of
//!   one epoch's engine reaches another's. A message for a later epoch than this validator's is
//!   evidence that it lags: it asks the sender for the finalized block it needs next.
//! - A validator outside the current set (joining before its epoch, or after leaving) runs no
//!   engine; it follows the chain by asking the current validators for the next finalized blocks.
//! - The p2p layer tracks the current set, the next one while a change is pending (so a joining
//!   validator is connected and catches up before its epoch) and, as secondary peers, the
//!   previous set (so a validator that left or lags can still fetch what it missed).

use std::time::Duration;

use commonware_codec::{Copying, DecodeExt as _};
use commonware_consensus::marshal::core::Mailbox;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::{self, Floor, ForwardPolicy, SkipPolicy};
use commonware_consensus::types::{Epoch, Height};
use commonware_cryptography::Sha256;
use commonware_cryptography::certificate::Provider as _;
use commonware_p2p::utils::mux::{Builder as _, Muxer};
use commonware_p2p::{Address, AddressableManager, AddressableTrackedPeers, Blocker, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_utils::NonZeroDuration;
use commonware_utils::ordered::Map;
use commonware_utils::vec::NonEmptyVec;
use futures::FutureExt as _;
use rand_core::CryptoRng;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::app::Glue;
use super::block::{ChainBlock, Digest};
use super::epochs::{EpochSchemes, EpochSet, Known, Schedule};
use super::{Ledger, PublicKey, Scheme, Timeouts};

/// How often a validator outside the current set asks for the next finalized blocks.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// Heights asked for at a time when following or catching up.
const FOLLOW_HEIGHTS: u64 = 32;

/// The engine-facing wrapper every epoch's engine uses.
pub(crate) type Wrapper<E, L> = Inline<E, Scheme, Glue<L>, ChainBlock, super::epochs::ChainEpocher>;

pub(crate) struct Orchestrator<E, L, P, B>
where
    E: Spawner + Clock + Storage + Metrics + CryptoRng,
    L: Ledger,
{
    pub(crate) context: E,
    pub(crate) index: u32,
    pub(crate) me: PublicKey,
    pub(crate) known: Known,
    /// The committed height, as the committer advances it.
    pub(crate) committed: watch::Receiver<u64>,
    pub(crate) schemes: EpochSchemes,
    pub(crate) ledger: L,
    pub(crate) marshal: Mailbox<Scheme, Standard<ChainBlock>>,
    pub(crate) peers: P,
    pub(crate) blocker: B,
    pub(crate) wrapper: Wrapper<E, L>,
    pub(crate) genesis_digest: Digest,
    pub(crate) prefix: String,
    pub(crate) page_cache: CacheRef,
    pub(crate) timeouts: Timeouts,
    pub(crate) fetch_timeout: NonZeroDuration,
    /// The largest peer set the p2p layer was sized for (see [`super::epochs::peer_set_limit`]).
    pub(crate) peer_limit: usize,
}

/// What woke the orchestrator.
enum Event {
    /// The committer committed a block (the schedule may have changed).
    Committed,
    /// A peer sent a message of this epoch (number) or a later one.
    Later(u64, PublicKey),
    /// Time to ask for the next blocks (when outside the set).
    Follow,
    Stop(&'static str),
}

/// The engine of one epoch; aborted when dropped.
struct Active {
    epoch: u64,
    handle: Option<Handle<()>>,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// The peer-set id of a schedule: it grows with every change of what is tracked (a new epoch
/// scheduled, then entered), and is the same on every validator with the same committed state.
fn peer_set_id(schedule: &Schedule) -> u64 {
    let latest = schedule.epochs.last().map_or(0, |e| e.epoch);
    let entered = schedule.current().is_some_and(|e| e.epoch == latest);
    latest.saturating_mul(2).saturating_add(u64::from(entered))
}

fn keys_of(set: &EpochSet) -> Vec<PublicKey> {
    super::epochs::participants(set).map(|keys| keys.iter().cloned().collect()).unwrap_or_default()
}

impl<E, L, P, B> Orchestrator<E, L, P, B>
where
    E: Spawner + Clock + Storage + Metrics + CryptoRng,
    L: Ledger,
    P: AddressableManager<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
{
    pub(crate) async fn run<S, R>(mut self, votes: (S, R), certificates: (S, R), resolver: (S, R))
    where
        S: Sender<PublicKey = PublicKey>,
        R: Receiver<PublicKey = PublicKey>,
    {
        let (mux, mut votes, mut vote_backup) =
            Muxer::builder(self.context.child("vote_mux"), votes.0, votes.1).with_backup().build();
        mux.start();
        let (mux, mut certificates, mut certificate_backup) =
            Muxer::builder(self.context.child("certificate_mux"), certificates.0, certificates.1).with_backup().build();
        mux.start();
        let (mux, mut resolver) = Muxer::new(self.context.child("resolver_mux"), resolver.0, resolver.1);
        mux.start();

        let mut tracked = None;
        let mut active: Option<Active> = None;
        let mut follow = Box::pin(self.context.sleep(Duration::ZERO));
        loop {
            let schedule = self.known.get().clone();
            self.track(&schedule, &mut tracked);
            let Some(current) = schedule.current().cloned() else {
                warn!(validator = self.index, "no epoch holds the next block; consensus stops");
                return;
            };
            let member = keys_of(&current).contains(&self.me);
            if active.as_ref().is_none_or(|a| a.epoch != current.epoch) {
                // Leave the previous epoch's engine before entering the next one.
                drop(active.take());
                if member {
                    match self.enter(&current, &schedule, &mut votes, &mut certificates, &mut resolver).await {
                        Some(handle) => active = Some(Active { epoch: current.epoch, handle: Some(handle) }),
                        None => return,
                    }
                } else {
                    info!(
                        validator = self.index,
                        epoch = current.epoch,
                        "not in this epoch's validator set; following"
                    );
                    active = Some(Active { epoch: current.epoch, handle: None });
                }
            }
            let event = {
                let engine = async {
                    match active.as_mut().and_then(|a| a.handle.as_mut()) {
                        Some(handle) => handle.await.map_err(|error| error.to_string()),
                        None => futures::future::pending().await,
                    }
                };
                futures::select_biased! {
                    changed = self.committed.changed().fuse() => match changed {
                        Ok(()) => Event::Committed,
                        Err(_) => Event::Stop("the committer stopped"),
                    },
                    message = vote_backup.recv().fuse() => match message {
                        Some((epoch, (from, _))) => Event::Later(epoch, from),
                        None => Event::Stop("the vote multiplexer stopped"),
                    },
                    message = certificate_backup.recv().fuse() => match message {
                        Some((epoch, (from, _))) => Event::Later(epoch, from),
                        None => Event::Stop("the certificate multiplexer stopped"),
                    },
                    result = engine.fuse() => {
                        warn!(validator = self.index, epoch = current.epoch, ?result, "the epoch's engine stopped");
                        Event::Stop("the epoch's engine stopped")
                    }
                    () = (&mut follow).fuse() => Event::Follow,
                }
            };
            match event {
                Event::Committed => {}
                Event::Later(epoch, from) => self.lagging(&schedule, &current, epoch, from),
                Event::Follow => {
                    if !member {
                        self.ask_for_next(&schedule, keys_of(&current));
                    }
                    follow = Box::pin(self.context.sleep(FOLLOW_INTERVAL));
                }
                Event::Stop(why) => {
                    debug!(validator = self.index, why, "epochs stop");
                    return;
                }
            }
        }
    }

    /// Tells the p2p layer whom to connect to, when that changed.
    fn track(&mut self, schedule: &Schedule, tracked: &mut Option<u64>) {
        let id = peer_set_id(schedule);
        if *tracked == Some(id) {
            return;
        }
        let Some(current) = schedule.current() else { return };
        let pending = schedule.epochs.iter().filter(|e| e.epoch > current.epoch);
        let previous = current.epoch.checked_sub(1).and_then(|e| schedule.epoch(e));
        let entries = |sets: &mut dyn Iterator<Item = &EpochSet>| -> Vec<(PublicKey, Address)> {
            let mut out: Vec<(PublicKey, Address)> = Vec::new();
            for v in sets.flat_map(|set| &set.validators) {
                let Ok(key) = PublicKey::decode(Copying(&v.public_key[..])) else { continue };
                if let Some(address) = v.address
                    && !out.iter().any(|(k, _)| *k == key)
                {
                    out.push((key, Address::from(address)));
                }
            }
            out
        };
        let primary = entries(&mut std::iter::once(current).chain(pending));
        let secondary: Vec<_> = entries(&mut previous.into_iter())
            .into_iter()
            .filter(|(key, _)| !primary.iter().any(|(k, _)| k == key))
            .collect();
        let (Ok(primary), Ok(secondary)) = (Map::try_from(primary), Map::try_from(secondary)) else {
            warn!(validator = self.index, "the validator set lists a key twice; peers unchanged");
            return;
        };
        if primary.len() + secondary.len() + 1 > self.peer_limit {
            tracing::error!(
                validator = self.index,
                peers = primary.len() + secondary.len(),
                limit = self.peer_limit,
                "the validator set outgrew what this validator's p2p layer was sized for at start; restart it"
            );
            return;
        }
        info!(validator = self.index, id, primary = primary.len(), secondary = secondary.len(), "tracking peers");
        let _ = self.peers.track(id, AddressableTrackedPeers::new(primary, secondary));
        *tracked = Some(id);
    }

    /// Starts the engine of `set`'s epoch, on top of the last block of the previous epoch.
    async fn enter<S>(
        &mut self,
        set: &EpochSet,
        schedule: &Schedule,
        votes: &mut commonware_p2p::utils::mux::MuxHandle<S>,
        certificates: &mut commonware_p2p::utils::mux::MuxHandle<S>,
        resolver: &mut commonware_p2p::utils::mux::MuxHandle<S>,
    ) -> Option<Handle<()>>
    where
        S: Sender<PublicKey = PublicKey>,
    {
        let epoch = Epoch::new(set.epoch);
        let Some(scheme) = self.schemes.scheme(epoch) else {
            warn!(validator = self.index, epoch = set.epoch, "no signing scheme for an epoch this validator is in");
            return None;
        };
        let floor = if set.epoch == 0 {
            self.genesis_digest
        } else {
            let boundary = set.first_height.checked_sub(1)?;
            match self.ledger.committed_digest(boundary) {
                Some(digest) => commonware_cryptography::sha256::Digest(digest),
                None => {
                    warn!(validator = self.index, boundary, "the previous epoch's last block is not committed here");
                    return None;
                }
            }
        };
        // Epoch 0 keeps the journal name of networks made before epochs existed.
        let partition = if set.epoch == 0 {
            format!("{}-votes", self.prefix)
        } else {
            format!("{}-votes-e{}", self.prefix, set.epoch)
        };
        let timeouts = self.timeouts;
        let engine = simplex::Engine::new(
            self.context.child("simplex").with_attribute("epoch", set.epoch),
            simplex::Config {
                scheme: scheme.as_ref().clone(),
                elector: RoundRobin::<Sha256>::default(),
                blocker: self.blocker.clone(),
                automaton: self.wrapper.clone(),
                relay: self.wrapper.clone(),
                reporter: self.wrapper.clone(),
                track_historical_votes: false,
                strategy: Sequential,
                partition,
                mailbox_size: super::engine::MAILBOX_SIZE,
                epoch,
                floor: Floor::Genesis(floor),
                replay_buffer: super::engine::REPLAY_BUFFER_BYTES,
                write_buffer: super::engine::WRITE_BUFFER_BYTES,
                page_cache: self.page_cache.clone(),
                leader_timeout: timeouts.leader,
                certification_timeout: timeouts.certification,
                timeout_retry: timeouts.nullify_retry,
                view_retention: super::engine::VIEW_RETENTION,
                skip: SkipPolicy::Disabled,
                fetch_timeout: self.fetch_timeout,
                fetch_retry_delay: super::engine::FETCH_RETRY_DELAY,
                forward: ForwardPolicy::SilentVoters,
            },
        );
        let (Ok(votes), Ok(certificates), Ok(resolver)) = (
            votes.register(set.epoch).await,
            certificates.register(set.epoch).await,
            resolver.register(set.epoch).await,
        ) else {
            debug!("p2p multiplexer closed");
            return None;
        };
        info!(
            validator = self.index,
            epoch = set.epoch,
            first_height = set.first_height,
            validators = set.validators.len(),
            committed = schedule.committed,
            "entered epoch"
        );
        Some(engine.start(votes, certificates, resolver))
    }

    /// A peer sent a message of a later epoch: this validator lags. Asks that peer for the block
    /// it needs next (the last of its epoch, when known and placeable, else the next one).
    fn lagging(&self, schedule: &Schedule, current: &EpochSet, their_epoch: u64, from: PublicKey) {
        if their_epoch <= current.epoch {
            return;
        }
        let next = schedule.committed.saturating_add(1);
        let height = schedule.last(current.epoch).filter(|last| *last <= schedule.horizon()).unwrap_or(next);
        debug!(validator = self.index, their_epoch, height, "a peer is in a later epoch; asking it for blocks");
        self.marshal.hint_finalized(Height::new(height), NonEmptyVec::new(from));
    }

    /// Outside the validator set: asks the current validators for the next finalized blocks.
    fn ask_for_next(&self, schedule: &Schedule, validators: Vec<PublicKey>) {
        let Ok(targets) = NonEmptyVec::try_from(validators) else { return };
        let from = schedule.committed.saturating_add(1);
        let to = from.saturating_add(FOLLOW_HEIGHTS - 1).min(schedule.horizon());
        for height in from..=to {
            self.marshal.hint_finalized(Height::new(height), targets.clone());
        }
    }
}
