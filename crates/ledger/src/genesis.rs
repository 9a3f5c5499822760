//! Genesis: the organisations with their admin keys, and the validators. Every validator derives
//! the same chain id (a hash of the whole genesis) and the same initial state from it.

use std::collections::BTreeSet;

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::sign::VerifyingKey;
use medledger_crypto::wrap::EncryptionKey;
use medledger_types::limits::{DISPLAY_NAME_BYTES_MAX, ORGS_MAX, VALIDATORS_MAX};
use medledger_types::{ChainId, Height, MemberId, OrgId, Role, Timestamp, Trailing, encode};

use crate::governance::{ValidatorEntry, ValidatorEpoch};
use serde::{Deserialize, Serialize};

use crate::state::{MemberEntry, MemberStatus, OrgEntry, WriteSet, keys};

/// An organisation's admin, by public keys only (the admin made them on their side).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct GenesisMember {
    pub member: MemberId,
    pub signing_key: VerifyingKey,
    pub encryption_key: EncryptionKey,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct GenesisOrg {
    pub id: OrgId,
    pub name: String,
    pub admin: GenesisMember,
}

impl GenesisOrg {
    /// The organisation's state entry and its admin's, as genesis (or the governance proposal
    /// that admits it at `enrolled_at`) writes them.
    pub(crate) fn entries(&self, enrolled_at: Timestamp) -> (OrgEntry, MemberEntry) {
        let org = OrgEntry { id: self.id.clone(), name: self.name.clone(), admin: self.admin.member, left_at: None };
        let admin = MemberEntry {
            id: self.admin.member,
            org: self.id.clone(),
            role: Role::Admin,
            signing_key: self.admin.signing_key,
            encryption_key: self.admin.encryption_key.clone(),
            display_name: None,
            status: MemberStatus::Active,
            enrolled_at,
            enrolled_by: None,
            custodial: false,
        };
        (org, admin)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct GenesisValidator {
    pub org: OrgId,
    /// The validator's consensus key (Ed25519).
    pub public_key: VerifyingKey,
    /// Where its peers reach it (`host:port`).
    pub p2p_address: String,
    /// Where clients reach its API (`host:port`).
    pub api_address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_name: String,
    /// Milliseconds since the Unix epoch; the time of block 0.
    pub created_at: Timestamp,
    pub orgs: Vec<GenesisOrg>,
    pub validators: Vec<GenesisValidator>,
    /// Each validator's share key (HPKE), in validator order: the network releases record keys
    /// by threshold (DESIGN §6a). Absent in networks made before it existed, whose chain id it
    /// leaves unchanged.
    #[borsh(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_keys: Option<Vec<EncryptionKey>>,
    /// The network's own break-glass limits; absent, the defaults (24 h, 3 per member per 24 h),
    /// and the chain id of a network made before this setting existed is unchanged.
    #[borsh(skip)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<NetworkPolicy>,
}

/// Limits a consortium sets for itself at genesis.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// The longest break-glass window, in milliseconds (1 minute to 7 days).
    pub break_glass_max_ms: u64,
    /// Break-glass openings per member per 24 hours (1 to 100).
    pub break_glass_per_day: u32,
    /// How long an admin-approved key recovery waits before it can be completed, in
    /// milliseconds (1 second to 30 days; absent, 72 hours). Last field: policies made before it
    /// keep their encoding and chain id.
    #[serde(default, skip_serializing_if = "trailing_is_none")]
    pub recovery_delay_ms: Trailing<u64>,
}

fn trailing_is_none<T>(t: &Trailing<T>) -> bool {
    t.0.is_none()
}

impl Default for NetworkPolicy {
    fn default() -> Self {
        Self {
            break_glass_max_ms: medledger_types::limits::BREAK_GLASS_MS_MAX,
            break_glass_per_day: medledger_types::limits::BREAK_GLASS_PER_DAY as u32,
            recovery_delay_ms: Trailing(None),
        }
    }
}

impl NetworkPolicy {
    const WINDOW_MS_MIN: u64 = 60_000;
    const WINDOW_MS_MAX: u64 = 7 * 24 * 3600 * 1000;

    const RECOVERY_DELAY_MS_DEFAULT: u64 = 72 * 3600 * 1000;
    const RECOVERY_DELAY_MS_MIN: u64 = 1_000;
    const RECOVERY_DELAY_MS_MAX: u64 = 30 * 24 * 3600 * 1000;

    pub fn check(&self) -> bool {
        (Self::WINDOW_MS_MIN..=Self::WINDOW_MS_MAX).contains(&self.break_glass_max_ms)
            && (1..=100).contains(&self.break_glass_per_day)
            && self
                .recovery_delay_ms
                .0
                .is_none_or(|d| (Self::RECOVERY_DELAY_MS_MIN..=Self::RECOVERY_DELAY_MS_MAX).contains(&d))
    }

    /// The wait of an admin-approved key recovery.
    pub fn recovery_delay_ms(&self) -> u64 {
        self.recovery_delay_ms.0.unwrap_or(Self::RECOVERY_DELAY_MS_DEFAULT)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    #[error("genesis is not valid JSON for this version: {0}")]
    Json(String),
    #[error("genesis needs 1 to {ORGS_MAX} organisations with distinct ids")]
    Orgs,
    #[error("genesis needs 1 to {VALIDATORS_MAX} validators with distinct keys and addresses")]
    Validators,
    #[error("validator of unknown organisation {0}")]
    UnknownOrg(String),
    #[error("organisation {org} holds {count} validators, more than f = {f} of {n}")]
    TooManyValidators { org: String, count: usize, n: usize, f: usize },
    #[error("admin keys of organisation {0} are malformed or reused")]
    AdminKeys(String),
    #[error("names must be 1 to {DISPLAY_NAME_BYTES_MAX} printable bytes")]
    Name,
    #[error("share keys must be one valid, distinct key per validator")]
    ShareKeys,
    #[error(
        "network limits out of range (break-glass window 1 minute to 7 days, 1 to 100 openings a day; recovery delay 1 second to 30 days)"
    )]
    Policy,
}

impl Genesis {
    pub fn from_json(text: &str) -> Result<Self, GenesisError> {
        let genesis: Genesis = serde_json::from_str(text).map_err(|e| GenesisError::Json(e.to_string()))?;
        genesis.validate()?;
        Ok(genesis)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis serializes")
    }

    /// The chain id: SHA-256 over a domain tag and the canonical encoding of the whole genesis.
    pub fn chain_id(&self) -> ChainId {
        let mut bytes = b"medledger/genesis/v1".to_vec();
        bytes.extend_from_slice(&encode(self));
        if let Some(keys) = &self.share_keys {
            bytes.extend_from_slice(&encode(keys));
        }
        if let Some(policy) = &self.policy {
            bytes.extend_from_slice(b"medledger/genesis-policy/v1");
            bytes.extend_from_slice(&encode(policy));
        }
        ChainId::new(medledger_crypto::sha256(&bytes))
    }

    /// The most validators that may fail (Byzantine): n = 3f + 1.
    pub fn max_faulty(&self) -> usize {
        self.validators.len().saturating_sub(1) / 3
    }

    pub fn validate(&self) -> Result<(), GenesisError> {
        let printable =
            |s: &str| !s.is_empty() && s.len() <= DISPLAY_NAME_BYTES_MAX && !s.chars().any(char::is_control);
        if !printable(&self.chain_name) {
            return Err(GenesisError::Name);
        }
        let ids: BTreeSet<&OrgId> = self.orgs.iter().map(|o| &o.id).collect();
        if self.orgs.is_empty() || self.orgs.len() > ORGS_MAX || ids.len() != self.orgs.len() {
            return Err(GenesisError::Orgs);
        }
        let mut signing = BTreeSet::new();
        let mut members = BTreeSet::new();
        for org in &self.orgs {
            let a = &org.admin;
            if !printable(&org.name)
                || a.signing_key.check().is_err()
                || a.encryption_key.check().is_err()
                || !signing.insert(a.signing_key)
                || !members.insert(a.member)
            {
                return Err(GenesisError::AdminKeys(org.id.to_string()));
            }
        }
        let n = self.validators.len();
        let keys: BTreeSet<_> = self.validators.iter().map(|v| v.public_key).collect();
        let addresses: BTreeSet<_> = self.validators.iter().map(|v| &v.p2p_address).collect();
        if n == 0 || n > VALIDATORS_MAX || keys.len() != n || addresses.len() != n {
            return Err(GenesisError::Validators);
        }
        for v in &self.validators {
            if !ids.contains(&v.org) {
                return Err(GenesisError::UnknownOrg(v.org.to_string()));
            }
            if v.public_key.check().is_err() || v.p2p_address.len() > 255 || v.api_address.len() > 255 {
                return Err(GenesisError::Validators);
            }
        }
        if let Some(share_keys) = &self.share_keys {
            let distinct: BTreeSet<&[u8]> = share_keys.iter().map(|k| k.bytes.as_slice()).collect();
            if share_keys.len() != n || distinct.len() != n || share_keys.iter().any(|k| k.check().is_err()) {
                return Err(GenesisError::ShareKeys);
            }
        }
        if self.policy.as_ref().is_some_and(|p| !p.check()) {
            return Err(GenesisError::Policy);
        }
        // A consortium (n >= 4) must not let one organisation hold more than f validators;
        // smaller networks are development mode.
        if n >= 4 {
            let f = self.max_faulty();
            for org in &self.orgs {
                let count = self.validators.iter().filter(|v| v.org == org.id).count();
                if count > f {
                    return Err(GenesisError::TooManyValidators { org: org.id.to_string(), count, n, f });
                }
            }
        }
        Ok(())
    }

    /// The state of block 0: organisations and their admins.
    pub fn state(&self) -> WriteSet {
        let mut writes = WriteSet::new();
        for org in &self.orgs {
            let (entry, admin) = org.entries(self.created_at);
            writes.insert(keys::org(&org.id), Some(encode(&entry)));
            writes.insert(keys::directory(&crate::tx::directory_id(&org.id)), Some(encode(&org.id)));
            writes.insert(keys::member(&org.admin.member), Some(encode(&admin)));
            writes.insert(keys::staff(Role::Admin, &org.admin.member), Some(encode(&())));
            writes.insert(keys::signing_key(&org.admin.signing_key), Some(encode(&org.admin.member)));
        }
        writes.insert(keys::ORG_COUNT.to_vec(), Some(encode(&(self.orgs.len() as u64))));
        for (index, v) in self.validators.iter().enumerate() {
            let entry = ValidatorEntry {
                index: index as u32,
                org: v.org.clone(),
                public_key: v.public_key,
                p2p_address: v.p2p_address.clone(),
                api_address: v.api_address.clone(),
                share_key: self.share_keys.as_ref().and_then(|keys| keys.get(index).cloned()),
            };
            writes.insert(keys::validator(index as u32), Some(encode(&entry)));
        }
        writes.insert(keys::VALIDATOR_COUNT.to_vec(), Some(encode(&(self.validators.len() as u32))));
        let epoch = ValidatorEpoch {
            epoch: 0,
            first_height: Height::new(0),
            validators: (0..self.validators.len() as u32).collect(),
            proposal: None,
        };
        writes.insert(keys::validator_epoch(0), Some(encode(&epoch)));
        writes.insert(keys::EPOCH_LATEST.to_vec(), Some(encode(&0u64)));
        if let Some(share_keys) = &self.share_keys {
            let config = crate::threshold::ThresholdConfig::genesis(share_keys.clone());
            writes.insert(keys::THRESHOLD.to_vec(), Some(encode(&config)));
        }
        if let Some(policy) = &self.policy {
            writes.insert(keys::POLICY.to_vec(), Some(encode(policy)));
        }
        writes
    }
}
