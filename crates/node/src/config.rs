//! The files of a network directory, as `medledger init` writes them:
//!
//! ```text
//! DIR/genesis.json                  organisations, admin public keys, validators (public)
//! DIR/validator-K/validator.json    validator K's consensus key and listen addresses (0600)
//! DIR/validator-K/data/             its state, chain log and consensus journal
//! DIR/blobs/                        the default object store (file://), shared locally
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use medledger_crypto::sign::VerifyingKey;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::DecryptionKey;
use medledger_ledger::{Genesis, GenesisOrg, GenesisValidator};
use medledger_types::{OrgId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::consensus::{ValidatorConfig, ValidatorPeer, namespace_for_chain, validator_public_key};

#[derive(Clone, Serialize, Deserialize)]
pub struct ValidatorFile {
    pub index: u32,
    /// Hex of the Ed25519 consensus key seed.
    pub signing_seed: String,
    pub p2p_listen: SocketAddr,
    pub api_listen: SocketAddr,
    /// Object store URL: `file://PATH`, `s3://BUCKET`, or `memory://`.
    pub storage: String,
    /// Endpoint of a non-AWS S3 server (e.g. `http://127.0.0.1:9000`).
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// A starting validator more than this many blocks behind its most advanced peer installs
    /// that peer's verified state instead of replaying the blocks (see `medledger_node::sync`).
    #[serde(default = "default_sync_gap")]
    pub sync_gap_blocks: u64,
    /// Finalized blocks the consensus engine's archive keeps behind the committed tip (at least
    /// `sync_gap_blocks` plus a margin, so every peer that lags less than that catches up from
    /// it); older blocks, and the bytes of any sidecar an erasure purged, leave it.
    #[serde(default = "default_archive_retention")]
    pub archive_retention_blocks: u64,
    /// Sustained API requests per second from one client address (0: no limit).
    #[serde(default = "default_rate")]
    pub api_requests_per_second: u32,
    /// Requests one client address may send in a burst above the sustained rate.
    #[serde(default = "default_burst")]
    pub api_request_burst: u32,
    /// Most signed requests one member may have within the signature window (a minute); over
    /// it, 429 with `Retry-After` until the oldest leaves the window.
    #[serde(default = "default_signer_requests")]
    pub signer_requests_per_window: usize,
    /// HTTPS for the API (`medledger init --tls`); absent: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::TlsFiles>,
    /// Hex of this validator's share key (X-Wing), whose public half is in genesis: it opens the
    /// validator's shares of record keys (threshold release, DESIGN §6a). Absent in networks
    /// made without threshold release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_secret: Option<String>,
    /// Further `host:port` names clients reach this validator's API by (behind a proxy or a
    /// DNS name): signed requests must name one of them, its listen address, its genesis
    /// address or `localhost:PORT` as `@authority`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_authorities: Vec<String>,
}

fn default_rate() -> u32 {
    crate::ratelimit::REQUESTS_PER_SECOND_DEFAULT
}

fn default_signer_requests() -> usize {
    crate::replay::NONCES_PER_SIGNER_MAX
}

fn default_burst() -> u32 {
    crate::ratelimit::REQUEST_BURST_DEFAULT
}

fn default_sync_gap() -> u64 {
    crate::sync::SYNC_GAP_BLOCKS_DEFAULT
}

fn default_archive_retention() -> u64 {
    ARCHIVE_RETENTION_DEFAULT
}

/// Default finalized blocks kept in the consensus archive: twice the default state-sync gap.
pub const ARCHIVE_RETENTION_DEFAULT: u64 = 2 * crate::sync::SYNC_GAP_BLOCKS_DEFAULT;
/// The fewest finalized blocks the consensus archive keeps, whatever the file says.
pub const ARCHIVE_RETENTION_MIN: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    Parse { path: PathBuf, error: String },
    #[error("{0} already exists; choose an empty directory")]
    Exists(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |error| ConfigError::Io { path: path.to_path_buf(), error }
}

pub fn genesis_path(dir: &Path) -> PathBuf {
    dir.join("genesis.json")
}

pub fn validator_dir(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("validator-{index}"))
}

pub fn load_genesis(dir: &Path) -> Result<Genesis, ConfigError> {
    let path = genesis_path(dir);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    Genesis::from_json(&text).map_err(|e| ConfigError::Parse { path, error: e.to_string() })
}

pub fn load_validator(dir: &Path, index: u32) -> Result<ValidatorFile, ConfigError> {
    let path = validator_dir(dir, index).join("validator.json");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| ConfigError::Parse { path, error: e.to_string() })
}

/// What `init` decides about the network.
pub struct NetworkPlan {
    pub chain_name: String,
    pub orgs: Vec<GenesisOrg>,
    pub validators: usize,
    pub base_port: u16,
    pub storage: Option<String>,
    pub s3_endpoint: Option<String>,
    /// Give every validator a share key: record keys are then released by threshold.
    pub threshold_release: bool,
    /// The consortium's own break-glass limits (absent: the defaults).
    pub policy: Option<medledger_ledger::NetworkPolicy>,
}

fn write_private(path: &Path, contents: &str) -> Result<(), ConfigError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

/// Makes the keys and the file of a validator that joins an existing network by governance
/// (`medledger governance join`): validator `index` (the next stable index) listening on the
/// given addresses, storing blobs like the others. Returns its consensus public key and, on a
/// network with threshold release, its share key.
pub fn write_joining_validator(
    dir: &Path,
    index: u32,
    p2p_listen: SocketAddr,
    api_listen: SocketAddr,
    storage: String,
    s3_endpoint: Option<String>,
    threshold_release: bool,
) -> Result<(VerifyingKey, Option<medledger_crypto::wrap::EncryptionKey>), ConfigError> {
    let vdir = validator_dir(dir, index);
    if vdir.join("validator.json").exists() {
        return Err(ConfigError::Exists(vdir.join("validator.json")));
    }
    std::fs::create_dir_all(&vdir).map_err(io(&vdir))?;
    let (file, public, share) = fresh_validator(index, p2p_listen, api_listen, storage, s3_endpoint, threshold_release);
    let text = serde_json::to_string_pretty(&file).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    write_private(&vdir.join("validator.json"), &text)?;
    Ok((public, share))
}

/// A validator's file with freshly made keys (consensus seed and, with threshold release, share
/// key), made on this host; returns it with the public halves.
fn fresh_validator(
    index: u32,
    p2p_listen: SocketAddr,
    api_listen: SocketAddr,
    storage: String,
    s3_endpoint: Option<String>,
    threshold_release: bool,
) -> (ValidatorFile, VerifyingKey, Option<medledger_crypto::wrap::EncryptionKey>) {
    let seed: [u8; 32] = medledger_crypto::random_bytes();
    let share = threshold_release.then(|| medledger_crypto::wrap::generate(KemSuite::XWing));
    let file = ValidatorFile {
        index,
        signing_seed: hex::encode(seed),
        p2p_listen,
        api_listen,
        storage,
        s3_endpoint,
        sync_gap_blocks: default_sync_gap(),
        archive_retention_blocks: default_archive_retention(),
        api_requests_per_second: default_rate(),
        api_request_burst: default_burst(),
        signer_requests_per_window: default_signer_requests(),
        tls: None,
        share_secret: share.as_ref().map(|key| hex::encode(&*key.to_bytes())),
        api_authorities: Vec::new(),
    };
    (file, VerifyingKey(validator_public_key(&seed)), share.map(|key| key.encryption_key().clone()))
}

/// Writes genesis and one validator file per validator; validator keys are made here, on the
/// operator's machine. Validators are spread over organisations round-robin.
pub fn write_network(dir: &Path, plan: NetworkPlan) -> Result<Genesis, ConfigError> {
    if genesis_path(dir).exists() {
        return Err(ConfigError::Exists(genesis_path(dir)));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir = dir.canonicalize().map_err(io(dir))?;
    let port = |offset: usize| -> Result<u16, ConfigError> {
        u16::try_from(usize::from(plan.base_port) + offset)
            .map_err(|_| ConfigError::Invalid("port out of range".into()))
    };
    let mut seeds = Vec::new();
    let mut validators = Vec::new();
    let share_keys: Vec<DecryptionKey> = if plan.threshold_release {
        (0..plan.validators).map(|_| medledger_crypto::wrap::generate(KemSuite::XWing)).collect()
    } else {
        Vec::new()
    };
    for k in 0..plan.validators {
        let seed: [u8; 32] = medledger_crypto::random_bytes();
        let org: &OrgId = &plan.orgs[k % plan.orgs.len()].id;
        validators.push(GenesisValidator {
            org: org.clone(),
            public_key: VerifyingKey(validator_public_key(&seed)),
            p2p_address: format!("127.0.0.1:{}", port(100 + k)?),
            api_address: format!("127.0.0.1:{}", port(k)?),
        });
        seeds.push(seed);
    }
    let genesis = Genesis {
        chain_name: plan.chain_name,
        created_at: Timestamp::new(crate::app::wall_clock_ms()),
        orgs: plan.orgs,
        validators,
        share_keys: plan.threshold_release.then(|| share_keys.iter().map(|k| k.encryption_key().clone()).collect()),
        policy: plan.policy,
    };
    genesis.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let storage = plan.storage.unwrap_or_else(|| format!("file://{}", dir.join("blobs").display()));
    for (k, seed) in seeds.iter().enumerate() {
        let vdir = validator_dir(&dir, k as u32);
        std::fs::create_dir_all(&vdir).map_err(io(&vdir))?;
        let v = &genesis.validators[k];
        let file = ValidatorFile {
            index: k as u32,
            signing_seed: hex::encode(seed),
            p2p_listen: v.p2p_address.parse().map_err(|_| ConfigError::Invalid("bad address".into()))?,
            api_listen: v.api_address.parse().map_err(|_| ConfigError::Invalid("bad address".into()))?,
            storage: storage.clone(),
            s3_endpoint: plan.s3_endpoint.clone(),
            sync_gap_blocks: default_sync_gap(),
            archive_retention_blocks: default_archive_retention(),
            api_requests_per_second: default_rate(),
            api_request_burst: default_burst(),
            signer_requests_per_window: default_signer_requests(),
            tls: None,
            share_secret: share_keys.get(k).map(|key| hex::encode(&*key.to_bytes())),
            api_authorities: Vec::new(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        write_private(&vdir.join("validator.json"), &text)?;
    }
    let path = genesis_path(&dir);
    std::fs::write(&path, genesis.to_json()).map_err(io(&path))?;
    Ok(genesis)
}

/// This validator's genesis share key, checked against the public key genesis names for it;
/// `None` on a network without threshold release, or once the validator has replaced it (the
/// keyring in its data directory holds the current key then; see [`crate::keyring`]).
pub fn share_key(genesis: &Genesis, file: &ValidatorFile) -> Result<Option<DecryptionKey>, ConfigError> {
    let Some(keys) = &genesis.share_keys else { return Ok(None) };
    let Some(secret) = file.share_secret.as_deref() else { return Ok(None) };
    let secret = hex::decode(secret).map_err(|_| ConfigError::Invalid("malformed share_secret".into()))?;
    let secret = zeroize::Zeroizing::new(secret);
    // A validator that joined by governance: its key's public half is in the Join proposal the
    // ledger adopted (checked when the validator starts, against its state), of the network's suite.
    let Some(public) = keys.get(file.index as usize) else {
        let suite = keys.first().map(|k| k.suite).ok_or_else(|| ConfigError::Invalid("no share keys".into()))?;
        let key = DecryptionKey::from_bytes(suite, &secret)
            .map_err(|_| ConfigError::Invalid("malformed share_secret".into()))?;
        return Ok(Some(key));
    };
    let key = DecryptionKey::from_bytes(public.suite, &secret)
        .map_err(|_| ConfigError::Invalid("malformed share_secret".into()))?;
    if key.encryption_key() != public {
        return Err(ConfigError::Invalid("share key does not match genesis".into()));
    }
    Ok(Some(key))
}

/// The consensus configuration of validator `file.index` of `genesis`.
pub fn consensus_config(dir: &Path, genesis: &Genesis, file: &ValidatorFile) -> Result<ValidatorConfig, ConfigError> {
    let seed: [u8; 32] = hex::decode(&file.signing_seed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ConfigError::Invalid("malformed validator key".into()))?;
    let mut validators = Vec::new();
    for v in &genesis.validators {
        let address =
            v.p2p_address.parse().map_err(|_| ConfigError::Invalid(format!("bad p2p address {}", v.p2p_address)))?;
        validators.push(ValidatorPeer { public_key: v.public_key.0, address });
    }
    let key = validator_public_key(&seed);
    match validators.get(file.index as usize) {
        Some(me) if me.public_key != key => {
            return Err(ConfigError::Invalid("validator key does not match genesis".into()));
        }
        // A validator that joins by governance: its key is in no genesis slot; the ledger's
        // validator set names it once its organisation's proposal is adopted.
        None if validators.iter().any(|v| v.public_key == key) => {
            return Err(ConfigError::Invalid("a joining validator's key is a genesis validator's".into()));
        }
        _ => {}
    }
    Ok(ValidatorConfig {
        index: file.index,
        signing_seed: seed,
        validators,
        listen: file.p2p_listen,
        storage_dir: validator_dir(dir, file.index).join("data").join("consensus"),
        namespace: namespace_for_chain(&genesis.chain_id()),
        timeouts: Default::default(),
        // Never below the state-sync gap: a peer lagging less than that catches up from this
        // archive (a peer further behind installs a verified state when it starts).
        archive_retention: file.archive_retention_blocks.max(file.sync_gap_blocks).max(ARCHIVE_RETENTION_MIN),
    })
}

/// What one organisation contributes to a genesis ceremony: public keys and addresses only. The
/// secrets behind them stay on the host that made them (see [`contribute`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Contribution {
    pub org: GenesisOrg,
    pub validator: GenesisValidator,
    /// The validator's share key (threshold release); absent for a network without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_key: Option<medledger_crypto::wrap::EncryptionKey>,
}

/// The pending validator file a contribution leaves on its host until genesis names its index.
pub fn pending_validator_path(dir: &Path) -> PathBuf {
    dir.join("validator.pending.json")
}

/// Step 1 of the genesis ceremony, on an organisation's own host: makes its validator's consensus
/// and share keys, keeps the secrets in `DIR/validator.pending.json` (0600) and returns the public
/// part, which is all that leaves the host.
#[allow(clippy::too_many_arguments)]
pub fn contribute(
    dir: &Path,
    org: GenesisOrg,
    p2p_listen: SocketAddr,
    api_listen: SocketAddr,
    storage: String,
    s3_endpoint: Option<String>,
    threshold_release: bool,
) -> Result<Contribution, ConfigError> {
    if genesis_path(dir).exists() {
        return Err(ConfigError::Exists(genesis_path(dir)));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let pending = pending_validator_path(dir);
    // Genesis decides the index (`install`).
    let (file, public_key, share_key) =
        fresh_validator(u32::MAX, p2p_listen, api_listen, storage, s3_endpoint, threshold_release);
    let text = serde_json::to_string_pretty(&file).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    write_private(&pending, &text)?;
    Ok(Contribution {
        validator: GenesisValidator {
            org: org.id.clone(),
            public_key,
            p2p_address: p2p_listen.to_string(),
            api_address: api_listen.to_string(),
        },
        org,
        share_key,
    })
}

/// Step 2, anywhere (it handles public data only): genesis from the organisations'
/// contributions, validators in the order given.
pub fn assemble(
    chain_name: String,
    parts: Vec<Contribution>,
    policy: Option<medledger_ledger::NetworkPolicy>,
) -> Result<Genesis, ConfigError> {
    let with_share_keys = parts.iter().filter(|p| p.share_key.is_some()).count();
    if with_share_keys != 0 && with_share_keys != parts.len() {
        return Err(ConfigError::Invalid(
            "every contribution or none must carry a share key (threshold release)".into(),
        ));
    }
    let share_keys = (with_share_keys != 0).then(|| parts.iter().filter_map(|p| p.share_key.clone()).collect());
    let genesis = Genesis {
        chain_name,
        created_at: Timestamp::new(crate::app::wall_clock_ms()),
        orgs: parts.iter().map(|p| p.org.clone()).collect(),
        validators: parts.into_iter().map(|p| p.validator).collect(),
        share_keys,
        policy,
    };
    genesis.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(genesis)
}

/// Step 3, on each organisation's host: takes the assembled genesis into `dir`, finds this host's
/// validator in it by its consensus key and moves the pending file to `validator-K/`. Returns K.
pub fn install(dir: &Path, genesis: &Genesis) -> Result<u32, ConfigError> {
    let path = genesis_path(dir);
    if path.exists() {
        return Err(ConfigError::Exists(path));
    }
    let pending = pending_validator_path(dir);
    let text = std::fs::read_to_string(&pending).map_err(io(&pending))?;
    let mut file: ValidatorFile =
        serde_json::from_str(&text).map_err(|e| ConfigError::Parse { path: pending.clone(), error: e.to_string() })?;
    let seed: [u8; 32] = hex::decode(&file.signing_seed)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ConfigError::Invalid("malformed validator key".into()))?;
    let public = VerifyingKey(validator_public_key(&seed));
    let index = genesis
        .validators
        .iter()
        .position(|v| v.public_key == public)
        .ok_or_else(|| ConfigError::Invalid("this host's validator is not in that genesis".into()))?;
    let v = &genesis.validators[index];
    if v.p2p_address != file.p2p_listen.to_string() || v.api_address != file.api_listen.to_string() {
        return Err(ConfigError::Invalid("genesis names other addresses for this host's validator".into()));
    }
    file.index = index as u32;
    if share_key(genesis, &file)?.is_none() && genesis.share_keys.is_some() {
        return Err(ConfigError::Invalid("genesis expects a share key this host did not make".into()));
    }
    let vdir = validator_dir(dir, file.index);
    std::fs::create_dir_all(&vdir).map_err(io(&vdir))?;
    let text = serde_json::to_string_pretty(&file).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    write_private(&vdir.join("validator.json"), &text)?;
    std::fs::write(&path, genesis.to_json()).map_err(io(&path))?;
    std::fs::remove_file(&pending).map_err(io(&pending))?;
    Ok(file.index)
}
