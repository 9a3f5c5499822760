//! An organisation's custody keystore (DESIGN §8): the keys of patients enrolled without a device
//! of their own (for example, migrated from an existing EHR) until they claim their identity.
//!
//! It lives in the home of whoever runs the organisation's migrations, under
//! `custody/ORG/MEMBER.key`, each identity sealed with a key derived (HKDF) from the secret of
//! the organisation's admin who enrolled it, so opening it needs that admin's keystore and
//! passphrase; the member id is bound as associated data, so files cannot be swapped.

use std::path::PathBuf;

use medledger_crypto::local::LocalKey;
use medledger_types::{MemberId, Role};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SdkError};
use crate::home::{Home, Identity, write_file};

#[derive(Serialize, Deserialize)]
struct CustodyFile {
    member: MemberId,
    suite: u8,
    /// Hex of the sealed `signing seed ‖ encryption secret`.
    sealed: String,
}

/// The custody keystore of one organisation, opened with its admin's identity.
pub struct Custody<'h> {
    home: &'h Home,
    admin: &'h Identity,
    key: LocalKey,
}

impl<'h> Custody<'h> {
    pub fn open(home: &'h Home, admin: &'h Identity) -> Result<Self> {
        if admin.role != Role::Admin {
            return Err(SdkError::Usage("a custody keystore is opened by an admin of the organisation".into()));
        }
        let label = format!("medledger/custody/{}", admin.org.as_str());
        let key = LocalKey::derive(&admin.secret(), label.as_bytes()).map_err(SdkError::other)?;
        Ok(Custody { home, admin, key })
    }

    fn dir(&self) -> PathBuf {
        self.home.dir().join("custody").join(self.admin.org.as_str())
    }

    fn path(&self, member: &MemberId) -> PathBuf {
        self.dir().join(format!("{}.key", member.to_hex()))
    }

    pub fn contains(&self, member: &MemberId) -> bool {
        self.path(member).exists()
    }

    pub fn save(&self, patient: &Identity) -> Result<()> {
        if patient.role != Role::Patient || patient.org != self.admin.org {
            return Err(SdkError::Usage("custody holds patients of the admin's own organisation".into()));
        }
        std::fs::create_dir_all(self.dir()).map_err(SdkError::other)?;
        let sealed = self.key.seal(patient.member.as_bytes(), &patient.secret()).map_err(SdkError::other)?;
        let file = CustodyFile {
            member: patient.member,
            suite: patient.encryption.suite() as u8,
            sealed: hex::encode(sealed),
        };
        write_file(&self.path(&patient.member), serde_json::to_string(&file).map_err(SdkError::other)?.as_bytes())
    }

    pub fn load(&self, member: &MemberId) -> Result<Identity> {
        let text = std::fs::read_to_string(self.path(member))
            .map_err(|_| SdkError::Usage("that patient is not in this organisation's custody keystore".into()))?;
        let file: CustodyFile =
            serde_json::from_str(&text).map_err(|_| SdkError::Other("custody keystore entry is malformed".into()))?;
        if file.member != *member {
            return Err(SdkError::Integrity("custody keystore entry is for another member".into()));
        }
        let sealed =
            hex::decode(&file.sealed).map_err(|_| SdkError::Other("custody keystore entry is malformed".into()))?;
        let secret = self
            .key
            .open(member.as_bytes(), &sealed)
            .map_err(|_| SdkError::Integrity("custody keystore entry does not open with this admin's key".into()))?;
        let alias = format!("custody-{}", &member.to_hex()[..12]);
        Identity::from_secret(&alias, *member, Role::Patient, self.admin.org.clone(), file.suite, &secret)
    }
}

impl Custody<'_> {
    /// Destroys the custody copy of `member`'s keys (after their release for a claim).
    pub fn destroy(&self, member: &MemberId) -> Result<()> {
        std::fs::remove_file(self.path(member)).map_err(SdkError::other)
    }
}

/// A claim file: a released patient's custody keys sealed (Argon2id + AEAD, as keystores are)
/// under the one-time code handed to them.
#[derive(Serialize, Deserialize)]
struct ClaimFile {
    format: String,
    member: MemberId,
    org: medledger_types::OrgId,
    suite: u8,
    sealed: String,
}

const CLAIM_FORMAT: &str = "medledger-claim/v1";
/// Largest claim file read.
pub const CLAIM_FILE_BYTES_MAX: usize = 64 * 1024;

pub(crate) fn claim_file(patient: &Identity, code: &crate::recovery::ClaimCode) -> Result<Vec<u8>> {
    let sealed = medledger_crypto::keystore::seal(&code.0, &patient.secret()).map_err(SdkError::other)?;
    let file = ClaimFile {
        format: CLAIM_FORMAT.into(),
        member: patient.member,
        org: patient.org.clone(),
        suite: patient.encryption.suite() as u8,
        sealed: hex::encode(sealed),
    };
    serde_json::to_vec_pretty(&file).map_err(SdkError::other)
}

pub(crate) fn open_claim_file(alias: &str, bytes: &[u8], code: &crate::recovery::ClaimCode) -> Result<Identity> {
    if bytes.len() > CLAIM_FILE_BYTES_MAX {
        return Err(SdkError::Usage("not a claim file".into()));
    }
    let file: ClaimFile = serde_json::from_slice(bytes).map_err(|_| SdkError::Usage("not a claim file".into()))?;
    if file.format != CLAIM_FORMAT {
        return Err(SdkError::Usage("not a claim file".into()));
    }
    let sealed = hex::decode(&file.sealed).map_err(|_| SdkError::Usage("the claim file is damaged".into()))?;
    let secret = medledger_crypto::keystore::open(&code.0, &sealed)
        .map_err(|_| SdkError::Denied("the claim code does not open this claim file".into()))?;
    Identity::from_secret(alias, file.member, Role::Patient, file.org, file.suite, &secret)
}
