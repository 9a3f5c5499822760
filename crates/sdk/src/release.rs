//! Threshold release on the client (DESIGN §6a): dealing a record's `k_thr` to the validators when
//! writing, and collecting `threshold` released shares when reading.
//!
//! The validators' share keys come from the network's genesis, which the client checks against the
//! chain id it was configured with, so no single validator can substitute its own keys.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use medledger_crypto::payload::DataKey;
use medledger_crypto::threshold::{self as shamir, HALF_KEY_BYTES, Share};
use medledger_crypto::wrap;
use medledger_ledger::api::ThresholdPublic;
use medledger_ledger::state::RecordEntry;
use medledger_ledger::threshold::{ThresholdConfig, ThresholdShares, WrappedShare, release_context, share_context};
use medledger_types::{Digest, RecordId, TxId};
use zeroize::Zeroizing;

use crate::error::{Result, SdkError};
use crate::home::Identity;
use crate::ops::Session;

/// The network's threshold release: the validators' share keys and where each one is reached.
#[derive(Debug)]
pub struct Release {
    pub config: ThresholdConfig,
    /// Validator `i`'s API base URL.
    pub apis: Vec<String>,
}

/// What sealing a record under threshold release produced beside the ciphertext.
pub(crate) struct Dealt {
    pub dek: DataKey,
    /// `k_env`: what the record's envelopes wrap.
    pub k_env: Zeroizing<[u8; HALF_KEY_BYTES]>,
    pub shares: ThresholdShares,
}

impl Session {
    /// The network's threshold release, from its genesis (fetched once and checked against this
    /// session's chain id); `None` on a network without it.
    pub async fn release(&self) -> Result<Option<Arc<Release>>> {
        self.release
            .get_or_try_init(|| async {
                let genesis = self.client.genesis().await?;
                if genesis.chain_id() != self.chain_id || genesis.validate().is_err() {
                    return Err(SdkError::Integrity("the validator served another network's genesis".into()));
                }
                let scheme = self.client.scheme();
                Ok(genesis.share_keys.clone().map(|keys| {
                    Arc::new(Release {
                        config: ThresholdConfig::for_validators(0, keys),
                        apis: genesis.validators.iter().map(|v| format!("{scheme}://{}", v.api_address)).collect(),
                    })
                }))
            })
            .await
            .cloned()
    }

    /// The release configuration loaded by [`Session::release`] (which every async write path
    /// awaits before sealing).
    pub(crate) fn loaded_release(&self) -> Result<Option<Arc<Release>>> {
        self.release
            .get()
            .cloned()
            .ok_or_else(|| SdkError::Other("the network's release configuration was not loaded".into()))
    }

    /// Makes a record version's two key halves, its data key and the validators' wrapped shares.
    pub(crate) fn deal(&self, release: &Release, record: RecordId, version: u32) -> Result<Dealt> {
        let k_env = Zeroizing::new(medledger_crypto::random_bytes::<HALF_KEY_BYTES>());
        let k_thr = Zeroizing::new(medledger_crypto::random_bytes::<HALF_KEY_BYTES>());
        let dek = shamir::derive_data_key(&k_env, &k_thr, record.as_bytes(), version).map_err(SdkError::other)?;
        let config = &release.config;
        let pieces =
            shamir::split(&k_thr, usize::from(config.threshold), config.share_keys.len()).map_err(SdkError::other)?;
        let mut shares = Vec::with_capacity(pieces.len());
        for (i, (share, key)) in pieces.iter().zip(&config.share_keys).enumerate() {
            let context = share_context(self.chain_id, record, version, config.epoch, index(i));
            shares.push(WrappedShare {
                envelope: wrap::seal(key, share.as_bytes(), &context).map_err(SdkError::other)?,
                commitment: Digest::new(shamir::share_commitment(record.as_bytes(), version, share)),
            });
        }
        let shares = ThresholdShares { epoch: config.epoch, threshold: config.threshold, shares };
        Ok(Dealt { dek, k_env, shares })
    }

    /// Asks every validator for its share of the record key the allowed access `access` names,
    /// keeps the released shares that match their published commitments, and combines the first
    /// `threshold` of them. Validators that refuse, lag or lie are skipped; fewer than
    /// `threshold` honest releases and the read fails.
    pub(crate) async fn collect_k_thr(
        &self,
        me: &Identity,
        access: &TxId,
        record: &RecordEntry,
        public: &ThresholdPublic,
    ) -> Result<Zeroizing<[u8; HALF_KEY_BYTES]>> {
        let release = self
            .release()
            .await?
            .ok_or_else(|| SdkError::Integrity("the record needs validator shares but the network has none".into()))?;
        let needed = usize::from(public.threshold);
        if public.epoch != release.config.epoch
            || public.commitments.len() != release.apis.len()
            || needed == 0
            || needed > release.apis.len()
        {
            return Err(SdkError::Integrity("the record's shares do not fit the network's validators".into()));
        }
        let mut asks: FuturesUnordered<_> = release
            .apis
            .iter()
            .enumerate()
            .map(|(i, api)| async move { (i, self.client.access_share(api, me, access).await) })
            .collect();
        let mut shares: Vec<Share> = Vec::with_capacity(needed);
        let mut denied = 0;
        let mut failures = Vec::new();
        while let Some((i, reply)) = asks.next().await {
            let checked = reply.and_then(|released| {
                if released.validator != index(i) || released.epoch != public.epoch {
                    return Err(SdkError::Integrity("a validator released another validator's share".into()));
                }
                let context =
                    release_context(self.chain_id, record.record, record.version, public.epoch, index(i), me.member);
                let bytes = wrap::open(&me.encryption, &released.envelope, &context)
                    .map_err(|_| SdkError::Integrity("a released share does not open for this reader".into()))?;
                let share = Share::from_slice(&bytes).map_err(SdkError::other)?;
                let commitment = shamir::share_commitment(record.record.as_bytes(), record.version, &share);
                if share.index() != i || Digest::new(commitment) != public.commitments[i] {
                    return Err(SdkError::Integrity("a released share does not match its commitment".into()));
                }
                Ok(share)
            });
            match checked {
                Ok(share) => {
                    shares.push(share);
                    if shares.len() == needed {
                        return shamir::combine(&shares).map_err(SdkError::other);
                    }
                }
                Err(SdkError::Denied(_)) => denied += 1,
                Err(e) => failures.push(e),
            }
        }
        if denied > 0 && shares.is_empty() && failures.is_empty() {
            return Err(SdkError::Denied("the validators refused to release the record key".into()));
        }
        Err(SdkError::Other(format!(
            "only {} of the {needed} validator shares needed were released{}",
            shares.len(),
            failures.first().map(|e| format!(" ({e})")).unwrap_or_default()
        )))
    }
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("validator sets are small")
}
