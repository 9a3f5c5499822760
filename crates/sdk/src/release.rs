//! Threshold release on the client (DESIGN §6a): dealing a record's `k_thr` to the validators when
//! writing, and collecting `threshold` released shares when reading.
//!
//! The validators' share keys start as the network's genesis names them (the client checks the
//! genesis against the chain id it was configured with). A validator replaces its key after an
//! erasure (a `ShareKey` transaction it signs), so the client asks every validator for the
//! current keys and uses only keys at least f + 1 of them report alike: one of those is honest,
//! so no f validators can substitute keys of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use medledger_crypto::payload::DataKey;
use medledger_crypto::threshold::{self as shamir, HALF_KEY_BYTES, SHARE_BYTES, Share};
use medledger_crypto::wrap;
use medledger_ledger::api::ThresholdPublic;
use medledger_ledger::state::RecordEntry;
use medledger_ledger::threshold::{
    self, SHARES_SECRET_BYTES, ThresholdConfig, ThresholdShares, WrappedShare, release_context, share_context,
};
use medledger_types::{RecordId, TxId};
use zeroize::Zeroizing;

use crate::error::{Result, SdkError};
use crate::home::Identity;
use crate::ops::Session;

/// The network's threshold release: the validators' share keys and where each one is reached.
#[derive(Debug)]
pub struct Release {
    pub config: ThresholdConfig,
    /// The API base URL of every validator the network has had, by stable index (a record dealt
    /// to an earlier set is released by that set's validators).
    pub apis: BTreeMap<u32, String>,
}

/// How long the fetched share keys are used before they are fetched again (a write the ledger
/// refuses for stale keys also refetches them).
const RELEASE_TTL: Duration = Duration::from_secs(30);

/// The release configuration as fetched, and when.
pub(crate) type Cached = (Option<Arc<Release>>, Instant);

/// What sealing a record under threshold release produced beside the ciphertext.
pub(crate) struct Dealt {
    pub dek: DataKey,
    /// `k_env`: what the record's envelopes wrap.
    pub k_env: Zeroizing<[u8; HALF_KEY_BYTES]>,
    pub shares: ThresholdShares,
}

impl Session {
    /// The network's threshold release: its validators and their current share keys (fetched at
    /// most every [`RELEASE_TTL`]); `None` on a network without it.
    pub async fn release(&self) -> Result<Option<Arc<Release>>> {
        if let Some((release, at)) = self.release.lock().expect("release lock").clone()
            && at.elapsed() < RELEASE_TTL
        {
            return Ok(release);
        }
        self.refresh_release().await
    }

    /// Fetches the release configuration again: the genesis (checked against this session's chain
    /// id), the validators governance added since, then the current share keys that at least
    /// f + 1 validators of the newest set report alike.
    pub async fn refresh_release(&self) -> Result<Option<Arc<Release>>> {
        let genesis = self.genesis().await?;
        let release = match genesis.share_keys.clone() {
            None => None,
            Some(keys) => {
                let scheme = self.client.scheme();
                let mut apis: BTreeMap<u32, String> = (0u32..)
                    .zip(&genesis.validators)
                    .map(|(i, v)| (i, format!("{scheme}://{}", v.api_address)))
                    .collect();
                // Validators that joined since genesis, and the newest set (a node's say: the
                // ledger checks every record's shares against the set it has, so a wrong answer
                // costs a retry, never a share dealt to the wrong key).
                let mut newest: Vec<u32> = apis.keys().copied().collect();
                if let Ok(status) = self.client.governance().await {
                    for epoch in status["epochs"].as_array().into_iter().flatten() {
                        let mut set = Vec::new();
                        for v in epoch["validators"].as_array().into_iter().flatten() {
                            let (Some(index), Some(api)) = (v["index"].as_u64(), v["api_address"].as_str()) else {
                                continue;
                            };
                            let Ok(index) = u32::try_from(index) else { continue };
                            apis.entry(index).or_insert_with(|| format!("{scheme}://{api}"));
                            set.push(index);
                        }
                        if !set.is_empty() {
                            newest = set;
                        }
                    }
                }
                let config = self.current_share_keys(&apis, &newest, ThresholdConfig::genesis(keys)).await?;
                Some(Arc::new(Release { config, apis }))
            }
        };
        *self.release.lock().expect("release lock") = Some((release.clone(), Instant::now()));
        Ok(release)
    }

    /// The newest share-key configuration that f + 1 validators of the newest set report alike.
    async fn current_share_keys(
        &self,
        apis: &BTreeMap<u32, String>,
        newest: &[u32],
        genesis: ThresholdConfig,
    ) -> Result<ThresholdConfig> {
        let asked: Vec<&String> = newest.iter().filter_map(|i| apis.get(i)).collect();
        let needed = asked.len().saturating_sub(1) / 3 + 1;
        let answers = futures::future::join_all(asked.iter().map(|api| self.client.threshold_at(api))).await;
        let mut votes: Vec<(ThresholdConfig, usize)> = Vec::new();
        for config in answers.into_iter().flatten() {
            match votes.iter_mut().find(|(c, _)| *c == config) {
                Some((_, n)) => *n += 1,
                None => votes.push((config, 1)),
            }
        }
        let agreed = votes
            .into_iter()
            .filter(|(c, n)| *n >= needed && c.share_keys.len() == c.validators.len())
            .map(|(c, _)| c)
            .max_by_key(|c| c.epoch)
            .ok_or_else(|| {
                SdkError::Other("fewer than f + 1 validators agree on the share keys; retry shortly".into())
            })?;
        let expected =
            ThresholdConfig::for_validators(agreed.epoch, agreed.validators.clone(), agreed.share_keys.clone());
        if (agreed.epoch == 0 && agreed != genesis) || agreed != expected {
            return Err(SdkError::Integrity("validators report share keys their genesis does not name".into()));
        }
        Ok(agreed)
    }

    /// The release configuration loaded by [`Session::release`] (which every async write path
    /// awaits before sealing).
    pub(crate) fn loaded_release(&self) -> Result<Option<Arc<Release>>> {
        self.release
            .lock()
            .expect("release lock")
            .as_ref()
            .map(|(release, _)| release.clone())
            .ok_or_else(|| SdkError::Other("the network's release configuration was not loaded".into()))
    }

    /// Whether `error` is the ledger refusing a record dealt for share keys a validator has since
    /// replaced; if so, fetches the current keys (the caller then seals again).
    pub async fn stale_shares(&self, error: &SdkError) -> Result<bool> {
        let stale =
            matches!(error, SdkError::Usage(m) if m.contains(medledger_ledger::Rejection::ThresholdShares.as_str()));
        if stale {
            self.refresh_release().await?;
        }
        Ok(stale)
    }

    /// Makes a record version's two key halves, its data key and the validators' wrapped shares:
    /// each validator gets its share of `k_thr` (threshold f + 1) and its emergency share of
    /// `k_env` (threshold 2f + 1, for break-glass), in one envelope.
    pub(crate) fn deal(&self, release: &Release, record: RecordId, version: u32) -> Result<Dealt> {
        let k_env = shamir::random_secret();
        let k_thr = shamir::random_secret();
        let dek = shamir::derive_data_key(&k_env, &k_thr, record.as_bytes(), version).map_err(SdkError::other)?;
        let config = &release.config;
        let n = config.share_keys.len();
        let (thr, verifier) = shamir::split(&k_thr, usize::from(config.threshold), n).map_err(SdkError::other)?;
        let (env, emergency_verifier) =
            shamir::split(&k_env, usize::from(config.emergency_threshold), n).map_err(SdkError::other)?;
        let mut shares = Vec::with_capacity(n);
        for (i, key) in config.share_keys.iter().enumerate() {
            let mut both = Zeroizing::new([0u8; SHARES_SECRET_BYTES]);
            both[..SHARE_BYTES].copy_from_slice(thr[i].as_bytes());
            both[SHARE_BYTES..].copy_from_slice(env[i].as_bytes());
            let context = share_context(self.chain_id, record, version, config.epoch, index(i));
            shares.push(WrappedShare { envelope: wrap::seal(key, &both[..], &context).map_err(SdkError::other)? });
        }
        let shares = ThresholdShares::for_config(config, &verifier, &emergency_verifier, shares);
        Ok(Dealt { dek, k_env, shares })
    }

    /// Asks every validator for its share of the record key the allowed access `access` names,
    /// keeps the released shares that match their published commitments, and combines the first
    /// `threshold` of them into `k_thr`. Under break-glass (`emergency`: the reader holds no
    /// envelope) it needs `emergency_threshold` validators, each releasing its emergency share of
    /// `k_env` too, and also returns `k_env`. Validators that refuse, lag or lie are skipped;
    /// without enough honest releases the read fails.
    pub(crate) async fn collect_shares(
        &self,
        me: &Identity,
        access: &TxId,
        record: &RecordEntry,
        public: &ThresholdPublic,
        emergency: bool,
    ) -> Result<(Key, Option<Key>)> {
        let release = self
            .release()
            .await?
            .ok_or_else(|| SdkError::Integrity("the record needs validator shares but the network has none".into()))?;
        // The record's shares may be of an earlier share epoch, even of an earlier validator set:
        // each validator keeps its shares, and the record names who holds them.
        let n = public.validators.len();
        let threshold = usize::from(public.threshold);
        let needed = if emergency { usize::from(public.emergency_threshold) } else { threshold };
        let (Some(verifier), Some(emergency_verifier)) =
            (threshold::verifier(&public.verifier), threshold::verifier(&public.emergency_verifier))
        else {
            return Err(SdkError::Integrity("the record's share commitments are not group points".into()));
        };
        if verifier.threshold() != threshold
            || emergency_verifier.threshold() != usize::from(public.emergency_threshold)
            || threshold == 0
            || needed < threshold
            || needed > n
        {
            return Err(SdkError::Integrity("the record's shares do not fit the network's validators".into()));
        }
        let mut asks: FuturesUnordered<_> = public
            .validators
            .iter()
            .enumerate()
            .map(|(i, validator)| {
                let api = release.apis.get(validator);
                async move {
                    match api {
                        Some(api) => (i, self.client.access_share(api, me, access).await),
                        None => (i, Err(SdkError::Other(format!("validator {validator} has no known address")))),
                    }
                }
            })
            .collect();
        let (mut thr, mut env): (Vec<Share>, Vec<Share>) = (Vec::new(), Vec::new());
        let mut denied = 0;
        let mut failures = Vec::new();
        while let Some((i, reply)) = asks.next().await {
            let checked = reply.and_then(|released| {
                if (released.epoch != public.epoch || released.validator != index(i))
                    && released.height.is_some_and(|h| h.get() > self.client.min_height())
                {
                    // The validator is ahead of the bundle: it has seen the record's shares move
                    // to a new generation the bundle does not name yet. (Only a hint: the session's
                    // minimum height is not raised on one validator's word.)
                    return Err(SdkError::Conflict(SHARES_MOVED.into()));
                }
                if released.validator != index(i) || released.epoch != public.epoch || released.emergency != emergency {
                    return Err(SdkError::Integrity("a validator released another share than asked".into()));
                }
                let context =
                    release_context(self.chain_id, record.record, record.version, public.epoch, index(i), me.member);
                let bytes = wrap::open(&me.encryption, &released.envelope, &context)
                    .map_err(|_| SdkError::Integrity("a released share does not open for this reader".into()))?;
                let expected = if emergency { SHARES_SECRET_BYTES } else { SHARE_BYTES };
                if bytes.len() != expected {
                    return Err(SdkError::Integrity("a released share has the wrong length".into()));
                }
                let check = |bytes: &[u8], verifier: &shamir::Verifier| -> Result<Share> {
                    let share = Share::from_slice(bytes).map_err(SdkError::other)?;
                    if share.index() != i || !verifier.verify(&share) {
                        return Err(SdkError::Integrity("a released share does not match its commitments".into()));
                    }
                    Ok(share)
                };
                let thr_share = check(&bytes[..SHARE_BYTES], &verifier)?;
                let env_share = if emergency { Some(check(&bytes[SHARE_BYTES..], &emergency_verifier)?) } else { None };
                Ok((thr_share, env_share))
            });
            match checked {
                Ok((t, e)) => {
                    thr.push(t);
                    env.extend(e);
                    if thr.len() == needed {
                        let k_thr = shamir::combine(&thr[..threshold]).map_err(SdkError::other)?;
                        let k_env =
                            if emergency { Some(shamir::combine(&env).map_err(SdkError::other)?) } else { None };
                        return Ok((k_thr, k_env));
                    }
                }
                Err(SdkError::Denied(_)) => denied += 1,
                Err(e) => failures.push(e),
            }
        }
        if failures.iter().any(|e| matches!(e, SdkError::Conflict(m) if m == SHARES_MOVED)) {
            return Err(SdkError::Conflict(SHARES_MOVED.into()));
        }
        if denied > 0 && thr.is_empty() && failures.is_empty() {
            return Err(SdkError::Denied("the validators refused to release the record key".into()));
        }
        Err(SdkError::Other(format!(
            "only {} of the {needed} validator shares needed were released{}",
            thr.len(),
            failures.first().map(|e| format!(" ({e})")).unwrap_or_default()
        )))
    }
}

/// Why a share collection is started again: a validator released a share of a newer generation
/// than the bundle named (a re-sharing finished in between).
pub(crate) const SHARES_MOVED: &str = "the record's shares moved to a new generation during the read";

/// A recovered key half.
pub(crate) type Key = Zeroizing<[u8; HALF_KEY_BYTES]>;

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("validator sets are small")
}
