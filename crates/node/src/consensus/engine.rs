//! Wiring of one validator: storage archives, the marshal (block ordering, gossip, backfill),
//! the Simplex engine behind the marshal's inline-verification wrapper, and the task that hands
//! finalized blocks to the ledger. Generic over the runtime and the p2p transport, so the same
//! code runs on the tokio runtime over TCP and on the deterministic runtime over the simulated
//! network.

use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_codec::{Copying, Decode as _, DecodeExt as _};
use commonware_consensus::marshal::core::Actor;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::marshal::{self, Start};
use commonware_consensus::types::ViewDelta;
use commonware_cryptography::certificate::Verifier as _;
use commonware_cryptography::ed25519::PrivateKey;
use commonware_cryptography::{Digested, Digestible as _, Signer as _};
use commonware_p2p::{AddressableManager, Blocker, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Metrics, Spawner, Storage};
use commonware_storage::archive::{immutable, prunable};
use commonware_storage::translator::EightCap;
use commonware_utils::NonZeroDuration;
use commonware_utils::ordered::Set;
use medledger_types::limits::VALIDATORS_MAX;
use rand_core::CryptoRng;
use tracing::info;

use tokio::sync::watch;

use super::app::Glue;
use super::block::{ChainBlock, Digest};
use super::commit::{FinalizedQueue, run_committer};
use super::epochs::{ChainEpocher, EpochSchemes, Known};
use super::orchestrator::Orchestrator;
use super::{ConsensusError, Finalization, Ledger, PublicKey, Scheme, ValidatorConfig};

/// The five p2p channels one validator uses, each a (sender, receiver) pair.
///
/// Build them with [`super::simulated_channels`] for the simulated network; [`super::run_tokio`]
/// registers them on the authenticated TCP transport.
pub struct Channels<S, R> {
    /// Simplex votes.
    pub votes: (S, R),
    /// Simplex certificates (notarizations, nullifications, finalizations).
    pub certificates: (S, R),
    /// Simplex fetches of missing certificates.
    pub resolver: (S, R),
    /// Gossip of proposed blocks (the marshal's broadcast buffer).
    pub blocks: (S, R),
    /// The marshal's backfill of missing finalized blocks.
    pub backfill: (S, R),
}

/// Page size of the storage page cache.
const PAGE_SIZE: NonZeroU16 = NonZeroU16::new(4096).expect("4096 is not zero");
/// Pages held by the storage page cache (16 MiB).
const PAGE_CACHE_PAGES: NonZeroUsize = NonZeroUsize::new(4096).expect("4096 is not zero");
/// Bytes buffered when replaying a journal at startup.
pub(crate) const REPLAY_BUFFER_BYTES: NonZeroUsize = NonZeroUsize::new(1 << 20).expect("1 MiB is not zero");
/// Bytes buffered before a journal write reaches its blob.
pub(crate) const WRITE_BUFFER_BYTES: NonZeroUsize = NonZeroUsize::new(64 << 10).expect("64 KiB is not zero");
/// Items per archive section. Fixed for the life of the stored data: never change it.
const ARCHIVE_ITEMS_PER_SECTION: NonZeroU64 = NonZeroU64::new(4096).expect("4096 is not zero");
/// Blocks per section of the finalized-block archive: the unit it is pruned by, so a block leaves
/// the disk at most this many blocks after the retention window passed it. Fixed for the life of
/// the stored data: never change it.
const BLOCK_ITEMS_PER_SECTION: NonZeroU64 = NonZeroU64::new(64).expect("64 is not zero");
/// The partitions of the finalized-block archive before it became prunable (removed at start).
const OLD_BLOCK_PARTITIONS: [&str; 5] = ["metadata", "freezer-table", "freezer-key", "freezer-value", "ordinal"];
/// Views per section of the marshal's prunable caches.
const CACHE_ITEMS_PER_SECTION: NonZeroU64 = NonZeroU64::new(256).expect("256 is not zero");
/// Depth of the engine's internal mailboxes.
pub(crate) const MAILBOX_SIZE: NonZeroUsize = NonZeroUsize::new(1024).expect("1024 is not zero");
/// Finalized blocks the marshal hands out before it waits for acknowledgements.
const MAX_PENDING_ACKS: NonZeroUsize = NonZeroUsize::new(16).expect("16 is not zero");
/// Missing finalized heights fetched from peers at a time.
const MAX_REPAIR: NonZeroUsize = NonZeroUsize::new(32).expect("32 is not zero");
/// Views behind the finalized tip kept for peers that lag.
pub(crate) const VIEW_RETENTION: ViewDelta = ViewDelta::new(256);
/// Blocks cached per sender by the gossip buffer.
const BUFFER_BLOCKS_PER_PEER: usize = 16;
/// Delay before re-trying a fetch no peer answered.
pub(crate) const FETCH_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The validated identity of this validator.
pub(crate) struct Identity {
    pub(crate) signer: PrivateKey,
}

/// Parses and checks the genesis validator set and this validator's key: a genesis validator's
/// key must be the one genesis lists at its index. A validator that joined later (an index past
/// the genesis set) is checked against the ledger's validator set when an epoch lists it.
pub(crate) fn identity(cfg: &ValidatorConfig) -> Result<Identity, ConsensusError> {
    let keys = public_keys(cfg.validators.iter().map(|peer| &peer.public_key))?;
    Set::try_from(keys.clone()).map_err(|_| ConsensusError::DuplicateValidator)?;
    let signer = PrivateKey::decode(Copying(&cfg.signing_seed[..]))
        .map_err(|_| ConsensusError::KeyMismatch { index: cfg.index })?;
    let own = signer.public_key();
    match keys.get(cfg.index as usize) {
        Some(listed) if *listed != own => Err(ConsensusError::KeyMismatch { index: cfg.index }),
        None if keys.contains(&own) => Err(ConsensusError::KeyMismatch { index: cfg.index }),
        _ => Ok(Identity { signer }),
    }
}

/// Decodes raw Ed25519 public keys, in order, within the validator-set limit.
pub(crate) fn public_keys<'a>(
    raw: impl ExactSizeIterator<Item = &'a [u8; 32]>,
) -> Result<Vec<PublicKey>, ConsensusError> {
    use medledger_proof::certificate::KeysError;
    medledger_proof::certificate::public_keys(raw).map_err(|e| match e {
        KeysError::Empty => ConsensusError::NoValidators,
        KeysError::TooMany { count } => ConsensusError::TooManyValidators { count, max: VALIDATORS_MAX },
        KeysError::Invalid { index } => ConsensusError::InvalidPublicKey { index },
    })
}

/// Storage configuration of one immutable archive named `name` under `prefix`.
fn archive_config<C>(prefix: &str, name: &str, page_cache: &CacheRef, codec_config: C) -> immutable::Config<C> {
    let partition = |part: &str| format!("{prefix}-{name}-{part}");
    immutable::Config {
        metadata_partition: partition("metadata"),
        freezer_table_partition: partition("freezer-table"),
        freezer_table_initial_size: 65_536,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 16_384,
        freezer_key_partition: partition("freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: partition("freezer-value"),
        freezer_value_target_size: 256 << 20,
        freezer_value_compression: None,
        ordinal_partition: partition("ordinal"),
        items_per_section: ARCHIVE_ITEMS_PER_SECTION,
        freezer_key_write_buffer: WRITE_BUFFER_BYTES,
        freezer_value_write_buffer: WRITE_BUFFER_BYTES,
        ordinal_write_buffer: WRITE_BUFFER_BYTES,
        replay_buffer: REPLAY_BUFFER_BYTES,
        codec_config,
    }
}

/// Runs one validator until the runtime stops it or one of its components stops.
///
/// `context` is the runtime (tokio or deterministic); its storage holds this validator's
/// partitions (see the module docs). `peers` is the p2p layer's peer-set manager: the glue tells it
/// which validators to connect to as the validator set changes, and the marshal asks it whom to
/// gossip blocks to and fetch missing ones from; `blocker` lets the engine disconnect a peer that
/// sent invalid data. Returns `Err` only for a configuration or storage problem found at startup.
pub async fn run<E, L, P, B, S, R>(
    context: E,
    cfg: ValidatorConfig,
    ledger: L,
    peers: P,
    blocker: B,
    channels: Channels<S, R>,
) -> Result<(), ConsensusError>
where
    E: Spawner + Clock + Storage + Metrics + CryptoRng,
    L: Ledger,
    P: AddressableManager<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey>,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
{
    let identity = identity(&cfg)?;
    cfg.timeouts.check()?;
    let genesis = ledger.genesis();
    if genesis.header.height.get() != 0 || genesis.header.parent.0 != [0; 32] {
        return Err(ConsensusError::InvalidGenesis);
    }
    let genesis = ChainBlock::new(genesis)?;
    let genesis_digest = genesis.digest();
    let known = Known::new(ledger.schedule());
    if known.get().epochs.is_empty() {
        return Err(ConsensusError::NoValidators);
    }
    let peer_limit = super::epochs::peer_set_limit(&known.get());
    let schemes = EpochSchemes::new(known.clone(), cfg.namespace.clone(), identity.signer.clone());
    let public_key = identity.signer.public_key();
    let prefix = cfg.partition_prefix();
    let page_cache = CacheRef::new(PAGE_SIZE, PAGE_CACHE_PAGES);
    let fetch_timeout = NonZeroDuration::new(cfg.timeouts.fetch)
        .ok_or(ConsensusError::InvalidTimeouts("the fetch time-out must not be zero"))?;

    // Archives of finalization certificates and finalized blocks, both indexed by height.
    let finalizations = immutable::Archive::<E, Digest, Finalization>::init(
        context.child("finalizations_by_height"),
        archive_config(&prefix, "finalizations-by-height", &page_cache, Scheme::certificate_codec_config_unbounded()),
    )
    .await
    .map_err(|error| ConsensusError::Storage(format!("finalization archive: {error}")))?;
    // Finalized blocks: a prunable archive, kept to `archive_retention` blocks behind the committed
    // tip (see `commit`). An earlier layout's immutable archive, which could never drop an erased
    // sidecar's bytes, is removed.
    for part in OLD_BLOCK_PARTITIONS {
        let _ = context.remove(&format!("{prefix}-finalized-blocks-{part}"), None).await;
    }
    let blocks = prunable::Archive::<EightCap, E, Digest, Arc<ChainBlock>>::init(
        context.child("finalized_blocks"),
        prunable::Config {
            translator: EightCap,
            metadata_partition: format!("{prefix}-finalized-blocks-v2-metadata"),
            key_partition: format!("{prefix}-finalized-blocks-v2-key"),
            key_page_cache: page_cache.clone(),
            value_partition: format!("{prefix}-finalized-blocks-v2-value"),
            compression: None,
            codec_config: (),
            items_per_section: BLOCK_ITEMS_PER_SECTION,
            key_write_buffer: WRITE_BUFFER_BYTES,
            value_write_buffer: WRITE_BUFFER_BYTES,
            replay_buffer: REPLAY_BUFFER_BYTES,
        },
    )
    .await
    .map_err(|error| ConsensusError::Storage(format!("block archive: {error}")))?;

    // After a state sync the marshal starts from the synced block's certificate (which the sync
    // verified); otherwise from genesis, or from its own progress on disk when that is further.
    let start = match ledger.floor() {
        Some(bytes) => {
            let finalization = Finalization::decode_cfg(bytes, &Scheme::certificate_codec_config_unbounded())
                .map_err(|_| ConsensusError::InvalidFloor)?;
            info!(validator = cfg.index, height = ?finalization.proposal.round, "marshal starts from a synced state");
            Start::Floor(finalization)
        }
        None => Start::Genesis(Digested::precomputed(genesis, genesis_digest)),
    };
    let marshal_config = marshal::Config {
        provider: schemes.clone(),
        epocher: ChainEpocher(known.clone()),
        start,
        partition_prefix: format!("{prefix}-marshal"),
        mailbox_size: MAILBOX_SIZE,
        // Views kept behind the finalized tip: no more than the blocks the archive keeps.
        view_retention: ViewDelta::new(VIEW_RETENTION.get().min(cfg.archive_retention)),
        prunable_items_per_section: CACHE_ITEMS_PER_SECTION,
        page_cache: page_cache.clone(),
        replay_buffer: REPLAY_BUFFER_BYTES,
        key_write_buffer: WRITE_BUFFER_BYTES,
        value_write_buffer: WRITE_BUFFER_BYTES,
        block_codec_config: (),
        max_repair: MAX_REPAIR,
        max_pending_acks: MAX_PENDING_ACKS,
        strategy: Sequential,
    };
    let (actor, marshal, floor) = Actor::<_, Standard<ChainBlock>, _, _, _, _, _>::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal_config,
    )
    .await;
    info!(
        validator = cfg.index,
        processed = ?floor.processed().map(|processed| processed.height().get()),
        "marshal opened"
    );

    // Backfill of missing blocks and certificates from peers.
    let resolver = marshal::resolver::p2p::init(
        context.child("marshal_resolver"),
        marshal::resolver::p2p::Config {
            public_key: public_key.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: MAILBOX_SIZE,
            fetch_timeout,
            fetch_retry_delay: FETCH_RETRY_DELAY,
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );
    // Gossip of proposed blocks.
    let (buffer_engine, buffer) = buffered::Engine::new(
        context.child("block_buffer"),
        buffered::Config {
            public_key,
            mailbox_size: MAILBOX_SIZE,
            deque_size: BUFFER_BLOCKS_PER_PEER,
            priority: false,
            codec_config: (),
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    let buffer_handle = buffer_engine.start(channels.blocks);

    let (queue, deliveries) = FinalizedQueue::new();
    let marshal_handle = actor.start(queue, buffer, resolver);
    let (committed, committed_watch) = watch::channel(known.get().committed);
    let committer_handle = {
        let (ledger, marshal, known) = (ledger.clone(), marshal.clone(), known.clone());
        let retention = cfg.archive_retention;
        context.child("committer").spawn(move |_| {
            run_committer(ledger, marshal, deliveries, retention, move |schedule| {
                let height = schedule.committed;
                known.set(schedule);
                committed.send_replace(height);
            })
        })
    };

    // Simplex, with the marshal's inline-verification wrapper as automaton, relay and reporter,
    // one engine per epoch this validator belongs to (see `orchestrator`).
    let timeouts = cfg.timeouts;
    let glue = Glue::new(ledger.clone(), known.clone(), identity.signer.public_key(), timeouts.propose_budget);
    let wrapper = Inline::new(context.child("application"), glue, marshal.clone(), ChainEpocher(known.clone()));
    let epochs = Orchestrator {
        context: context.child("epochs"),
        index: cfg.index,
        me: identity.signer.public_key(),
        known,
        committed: committed_watch,
        schemes,
        ledger,
        marshal,
        peers,
        blocker,
        wrapper,
        genesis_digest,
        prefix,
        page_cache,
        timeouts,
        fetch_timeout,
        peer_limit,
    };
    let epochs_handle = context
        .child("orchestrator")
        .spawn(move |_| epochs.run(channels.votes, channels.certificates, channels.resolver));
    info!(validator = cfg.index, "consensus started");

    // Run until any component stops (normally: the runtime shuts down and aborts them all).
    let (stopped, index, _) =
        futures::future::select_all([epochs_handle, marshal_handle, committer_handle, buffer_handle]).await;
    let component = ["epochs", "marshal", "committer", "block buffer"].get(index).copied().unwrap_or("unknown");
    info!(validator = cfg.index, component, result = ?stopped, "consensus stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{Timeouts, ValidatorPeer, validator_public_key};

    fn config(seeds: &[[u8; 32]], index: u32, signing_seed: [u8; 32]) -> ValidatorConfig {
        ValidatorConfig {
            index,
            signing_seed,
            validators: seeds
                .iter()
                .map(|seed| ValidatorPeer {
                    public_key: validator_public_key(seed),
                    address: "127.0.0.1:1".parse().expect("an address"),
                })
                .collect(),
            listen: "127.0.0.1:1".parse().expect("an address"),
            storage_dir: std::env::temp_dir(),
            namespace: b"test".to_vec(),
            timeouts: Timeouts::default(),
            archive_retention: 1024,
        }
    }

    #[test]
    fn identity_of_a_genesis_validator_and_of_one_that_joined() {
        let seeds = [[3; 32], [1; 32], [2; 32]];
        let identity = identity(&config(&seeds, 1, [1; 32])).expect("valid");
        assert_eq!(identity.signer.public_key().as_ref(), &validator_public_key(&[1; 32]));
        // Index 3 is past genesis: a validator that joined by governance, with a key of its own.
        assert!(super::identity(&config(&seeds, 3, [9; 32])).is_ok());
        // But not with the key of a genesis validator.
        assert!(matches!(super::identity(&config(&seeds, 3, [2; 32])), Err(ConsensusError::KeyMismatch { index: 3 })));
    }

    #[test]
    fn identity_rejects_bad_sets_and_keys() {
        let seeds = [[1; 32], [2; 32]];
        assert!(matches!(identity(&config(&seeds, 0, [2; 32])), Err(ConsensusError::KeyMismatch { index: 0 })));
        assert!(matches!(identity(&config(&[[1; 32], [1; 32]], 0, [1; 32])), Err(ConsensusError::DuplicateValidator)));
        assert!(matches!(identity(&config(&[], 0, [1; 32])), Err(ConsensusError::NoValidators)));
        let mut bad_point = config(&seeds, 0, [1; 32]);
        // y = 2 is not the y-coordinate of any point on the curve.
        bad_point.validators[1].public_key = {
            let mut key = [0; 32];
            key[0] = 2;
            key
        };
        assert!(matches!(identity(&bad_point), Err(ConsensusError::InvalidPublicKey { index: 1 })));
    }

    #[test]
    fn timeouts_the_engine_would_reject_are_refused() {
        assert!(Timeouts::default().check().is_ok());
        let default = Timeouts::default();
        for bad in [
            Timeouts { leader: Duration::ZERO, ..default },
            Timeouts { certification: default.leader, ..default },
            Timeouts { nullify_retry: Duration::ZERO, ..default },
            Timeouts { fetch: Duration::ZERO, ..default },
            Timeouts { propose_budget: default.leader, ..default },
        ] {
            assert!(matches!(bad.check(), Err(ConsensusError::InvalidTimeouts(_))), "{bad:?}");
        }
    }
}
