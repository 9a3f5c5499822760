//! The p2p side: channel numbers and rate limits, the message-size bound, the production
//! transport ([`run_tokio`]: commonware's authenticated `lookup` network over TCP, which admits only
//! the registered validator keys) and the simulated network used by tests.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use commonware_consensus::marshal::standard::Standard;
use commonware_cryptography::ChaCha20Poly1305;
use commonware_p2p::authenticated::lookup;
use commonware_p2p::simulated;
use commonware_p2p::utils::mux::prefixed;
use commonware_runtime::{Clock, Quota, Supervisor as _, tokio};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};

use super::block::{ChainBlock, Digest};
use super::engine::{Channels, identity, run};
use medledger_types::limits::VALIDATORS_MAX;

use super::{ConsensusError, Ledger, PublicKey, Scheme, ValidatorConfig};

/// Channel of Simplex votes.
pub const CHANNEL_VOTES: u64 = 0;
/// Channel of Simplex certificates.
pub const CHANNEL_CERTIFICATES: u64 = 1;
/// Channel of Simplex certificate fetches.
pub const CHANNEL_RESOLVER: u64 = 2;
/// Channel of proposed-block gossip.
pub const CHANNEL_BLOCKS: u64 = 3;
/// Channel of finalized-block backfill.
pub const CHANNEL_BACKFILL: u64 = 4;

/// Depth of the p2p transport's internal mailboxes.
const P2P_MAILBOX_SIZE: NonZeroUsize = NonZeroUsize::new(1024).expect("1024 is not zero");
/// Inbound handshakes accepted per second from one registered address.
const HANDSHAKES_PER_ADDRESS: Quota = Quota::per_second(NonZeroU32::new(16).expect("16 is not zero"));
/// How far a peer's handshake clock may run ahead of ours.
const HANDSHAKE_SYNCHRONY_BOUND: Duration = Duration::from_secs(5);
/// Oldest handshake message accepted.
const HANDSHAKE_AGE_MAX: Duration = Duration::from_secs(10);

/// Messages per second each peer may send us (and we may send each peer) on `channel`, and how
/// many may come at once.
///
/// Votes and certificates flow a few per view; a lone validator or a small LAN cluster runs
/// hundreds of views per second, so the rates leave room for that. Block gossip and backfill are
/// bounded lower because each message can be a whole block.
///
/// The burst is set apart from the rate because the p2p layer preallocates every channel's
/// mailbox (and the router's) at peers × burst slots: at the rate's default burst (a second's
/// worth) an idle validator of four held 400 MiB of empty mailbox slots. A burst of a few views'
/// messages is what consensus sends at once; the rate over a second is unchanged.
pub fn channel_quota(channel: u64) -> Quota {
    let (per_second, burst) = match channel {
        CHANNEL_VOTES | CHANNEL_CERTIFICATES => (10_000, 256),
        CHANNEL_BLOCKS => (1_000, 32),
        _ => (500, 64),
    };
    Quota::per_second(NonZeroU32::new(per_second).expect("quotas are not zero"))
        .allow_burst(NonZeroU32::new(burst).expect("bursts are not zero"))
}

/// The largest message any channel carries for a set of `validators`: a whole block with its
/// finalization certificate and framing, and the epoch prefix of the per-epoch subchannels.
pub fn max_message_size(validators: usize) -> Result<u32, ConsensusError> {
    let participants = u32::try_from(validators).map_err(|_| ConsensusError::TooManyValidators {
        count: validators,
        max: medledger_types::limits::VALIDATORS_MAX,
    })?;
    let consensus = commonware_consensus::simplex::max_payload_size::<Scheme, Digest>(participants);
    let marshal = commonware_consensus::marshal::max_payload_size::<Standard<ChainBlock>, Scheme>(participants, &());
    u32::try_from(prefixed(consensus.max(marshal)))
        .map_err(|_| ConsensusError::Network("the largest message does not fit the transport".into()))
}

/// Registers this validator's five channels on a simulated network (tests and simulations).
pub async fn simulated_channels<E: Clock>(
    oracle: &simulated::Oracle<PublicKey, E>,
    me: &PublicKey,
) -> Result<Channels<simulated::Sender<PublicKey, E>, simulated::Receiver<PublicKey>>, ConsensusError> {
    let control = oracle.control(me.clone());
    let register = |channel: u64| {
        let control = control.clone();
        async move {
            control
                .register(channel, channel_quota(channel))
                .await
                .map_err(|error| ConsensusError::Network(format!("register channel {channel}: {error}")))
        }
    };
    Ok(Channels {
        votes: register(CHANNEL_VOTES).await?,
        certificates: register(CHANNEL_CERTIFICATES).await?,
        resolver: register(CHANNEL_RESOLVER).await?,
        blocks: register(CHANNEL_BLOCKS).await?,
        backfill: register(CHANNEL_BACKFILL).await?,
    })
}

/// A tokio runtime whose storage root is `cfg.storage_dir`; start [`run_tokio`] on it.
pub fn tokio_runner(cfg: &ValidatorConfig) -> tokio::Runner {
    tokio::Runner::new(tokio::Config::new().with_storage_directory(cfg.storage_dir.clone()))
}

/// Runs a validator in production: the authenticated, encrypted TCP transport listening on
/// `cfg.listen`, which connects only to (and accepts only) the validators the ledger's schedule
/// lists (see the orchestrator), then [`run`]. `context` must come from a runner built with
/// [`tokio_runner`] so the storage lands in `cfg.storage_dir`. Sets of up to
/// [`VALIDATORS_MAX`] validators fit its limits, whatever the genesis set's size.
pub async fn run_tokio<L: Ledger>(
    context: tokio::Context,
    cfg: ValidatorConfig,
    ledger: L,
) -> Result<(), ConsensusError> {
    let identity = identity(&cfg)?;
    let max_peers =
        NonZeroUsize::new(super::epochs::peer_set_limit(&ledger.schedule())).ok_or(ConsensusError::NoValidators)?;
    let handshake = Cups::<_, ChaCha20Poly1305>::new(
        Sake {
            signer: identity.signer.clone(),
            synchrony_bound: HANDSHAKE_SYNCHRONY_BOUND,
            max_handshake_age: HANDSHAKE_AGE_MAX,
            version: sake::Version::V1,
        },
        cups::Version::V1,
    );
    let mut p2p_namespace = cfg.namespace.clone();
    p2p_namespace.extend_from_slice(b"/p2p");
    let mut p2p = lookup::Config::recommended(
        handshake,
        &p2p_namespace,
        cfg.listen,
        max_peers,
        max_message_size(VALIDATORS_MAX)?,
        P2P_MAILBOX_SIZE,
    );
    // Consortium validators often sit on private networks, and a restarted peer should be
    // reconnected within seconds, not the minute the public-internet default waits.
    p2p.allow_private_ips = true;
    p2p.peer_connection_cooldown = Duration::from_secs(1);
    // The listener admits only the registered validators' addresses, and several validators may
    // share one (behind a hospital's NAT, or a whole network on 127.0.0.1): the default of one
    // handshake per 5 s per address let their dials starve one another, and a validator that
    // joined stayed unconnected to some peers for tens of seconds (its proposals timed out).
    p2p.allowed_handshake_rate_per_ip = HANDSHAKES_PER_ADDRESS;
    let (mut network, oracle) = lookup::Network::new(context.child("p2p"), p2p);
    let mut register = |channel: u64| network.register(channel, channel_quota(channel));
    let channels = Channels {
        votes: register(CHANNEL_VOTES),
        certificates: register(CHANNEL_CERTIFICATES),
        resolver: register(CHANNEL_RESOLVER),
        blocks: register(CHANNEL_BLOCKS),
        backfill: register(CHANNEL_BACKFILL),
    };
    let network_handle = network.start();
    let result = run(context.child("consensus"), cfg, ledger, oracle.clone(), oracle, channels).await;
    network_handle.abort();
    result
}
