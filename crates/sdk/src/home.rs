//! The client's home directory: keystores, address book and client config.
//!
//! ```text
//! HOME/client.json              chain id, validator API URLs, network directory
//! HOME/identities/ALIAS.key     an identity's secret keys, sealed with the passphrase (Argon2id)
//! HOME/book.json                local aliases → member ids (names never leave this file)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use medledger_crypto::sign::SigningKey;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::DecryptionKey;
use medledger_types::{ChainId, MemberId, OrgId, Role};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Result, SdkError};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClientConfig {
    pub chain_id: ChainId,
    pub nodes: Vec<String>,
    #[serde(default)]
    pub network_dir: Option<PathBuf>,
    /// The network's CA certificate (PEM) when its APIs serve HTTPS (`init --tls`); the client
    /// then trusts that CA only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// An address-book entry: who an alias stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub member: MemberId,
    pub role: Role,
    pub org: OrgId,
}

/// A member's own keys, unsealed for the duration of a command.
pub struct Identity {
    pub alias: String,
    pub member: MemberId,
    pub role: Role,
    pub org: OrgId,
    pub signing: SigningKey,
    pub encryption: DecryptionKey,
    /// The member's earlier encryption keys (before a rotation), which still open the envelopes
    /// wrapped for them.
    pub previous: Vec<DecryptionKey>,
}

impl Identity {
    /// Makes a new identity: all keys are generated here, on the member's side.
    pub fn generate(alias: &str, role: Role, org: OrgId, suite: KemSuite) -> Self {
        Identity {
            alias: alias.to_string(),
            member: MemberId::new(medledger_crypto::random_bytes()),
            role,
            org,
            signing: SigningKey::generate(),
            encryption: medledger_crypto::wrap::generate(suite),
            previous: Vec::new(),
        }
    }

    /// The keys `code` gives member `member`, before the ledger has said who the member is (role
    /// and organisation are placeholders, the suite the default): enough to sign the lookup of
    /// the member's own entry, after which [`Identity::placed`] fills them in.
    pub fn unplaced(alias: &str, member: MemberId, code: &crate::recovery::RecoveryCode) -> Result<Self> {
        let org = OrgId::new("unplaced").map_err(SdkError::other)?;
        Self::from_recovery_code(alias, member, Role::Patient, org, KemSuite::default(), code)
    }

    /// This identity with the role and organisation the ledger gives the member.
    pub fn placed(mut self, entry: &medledger_ledger::state::MemberEntry) -> Self {
        self.role = entry.role;
        self.org = entry.org.clone();
        self
    }

    /// An identity whose keys derive from `code` (the recovery code shown to the member once):
    /// the code alone restores them.
    pub fn from_recovery_code(
        alias: &str,
        member: MemberId,
        role: Role,
        org: OrgId,
        suite: KemSuite,
        code: &crate::recovery::RecoveryCode,
    ) -> Result<Self> {
        let (signing, encryption) = code.keys(suite)?;
        Ok(Identity { alias: alias.to_string(), member, role, org, signing, encryption, previous: Vec::new() })
    }

    /// `signing seed ‖ encryption secret ‖ (suite ‖ earlier encryption secret)*`, as keystores
    /// seal it.
    pub(crate) fn secret(&self) -> Zeroizing<Vec<u8>> {
        let mut secret = Zeroizing::new(Vec::with_capacity(64 + 33 * self.previous.len()));
        secret.extend_from_slice(&*self.signing.to_bytes());
        secret.extend_from_slice(&self.encryption.to_bytes());
        for key in &self.previous {
            secret.push(key.suite() as u8);
            secret.extend_from_slice(&key.to_bytes());
        }
        secret
    }

    pub(crate) fn from_secret(
        alias: &str,
        member: MemberId,
        role: Role,
        org: OrgId,
        suite: u8,
        secret: &[u8],
    ) -> Result<Self> {
        if secret.len() < 33 {
            return Err(SdkError::Other("keystore is malformed".into()));
        }
        let seed: [u8; 32] = secret[..32].try_into().map_err(SdkError::other)?;
        let suite_of = |suite: u8| match suite {
            s if s == KemSuite::XWing as u8 => Ok(KemSuite::XWing),
            s if s == KemSuite::X25519 as u8 => Ok(KemSuite::X25519),
            _ => Err(SdkError::Other("keystore names an unknown suite".into())),
        };
        let malformed = || SdkError::Other("keystore is malformed".into());
        let (current, rest) = secret[32..].split_at_checked(32).ok_or_else(malformed)?;
        let encryption = DecryptionKey::from_bytes(suite_of(suite)?, current).map_err(SdkError::other)?;
        if rest.len() % 33 != 0 {
            return Err(malformed());
        }
        let previous = rest
            .chunks(33)
            .map(|c| DecryptionKey::from_bytes(suite_of(c[0])?, &c[1..]).map_err(SdkError::other))
            .collect::<Result<Vec<_>>>()?;
        Ok(Identity {
            alias: alias.to_string(),
            member,
            role,
            org,
            signing: SigningKey::from_bytes(&seed),
            encryption,
            previous,
        })
    }

    /// This member's encryption keys, the current one first.
    pub fn decryption_keys(&self) -> impl Iterator<Item = &DecryptionKey> {
        std::iter::once(&self.encryption).chain(&self.previous)
    }

    /// A key for this member's local blobs (a cache, a journal), derived from their secret for
    /// `label`; never stored.
    pub fn local_key(&self, label: &str) -> Result<medledger_crypto::local::LocalKey> {
        medledger_crypto::local::LocalKey::derive(&self.secret(), label.as_bytes()).map_err(SdkError::other)
    }

    /// A stable 16-byte id for `context`, keyed by this member's secret (see
    /// [`medledger_crypto::local::derive_id`]).
    pub fn local_id(&self, context: &[u8]) -> Result<[u8; 16]> {
        medledger_crypto::local::derive_id(&self.secret(), context).map_err(SdkError::other)
    }

    pub fn contact(&self) -> Contact {
        Contact { member: self.member, role: self.role, org: self.org.clone() }
    }
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    member: MemberId,
    role: Role,
    org: OrgId,
    suite: u8,
    /// Hex of the keystore blob sealing `signing seed ‖ encryption secret`.
    sealed: String,
}

pub struct Home {
    dir: PathBuf,
}

/// Local names: letters, digits, `.`, `_`, `-`; 1 to 64 bytes.
pub fn check_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 64
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(SdkError::Usage("names are 1-64 letters, digits, '.', '_' or '-'".into())) }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| SdkError::Other(format!("{} is malformed: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SdkError::Other(format!("{}: {e}", path.display()))),
    }
}

pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(|e| SdkError::Other(format!("{}: {e}", tmp.display())))?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(SdkError::other)?;
    std::fs::rename(&tmp, path).map_err(SdkError::other)
}

impl Home {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("identities"))
            .map_err(|e| SdkError::Other(format!("{}: {e}", dir.display())))?;
        Ok(Home { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> Result<ClientConfig> {
        read_json(&self.dir.join("client.json"))?.ok_or_else(|| {
            SdkError::Usage(format!(
                "no client config in {}; run `medledger init` or `medledger up` first",
                self.dir.display()
            ))
        })
    }

    pub fn save_config(&self, config: &ClientConfig) -> Result<()> {
        write_file(
            &self.dir.join("client.json"),
            serde_json::to_string_pretty(config).map_err(SdkError::other)?.as_bytes(),
        )
    }

    /// The height of the last transaction this home saw committed (for read-your-writes).
    pub fn last_height(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("height")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Records a committed height if it is above the stored one (best effort: a lost update only
    /// makes a later read wait less).
    pub fn save_last_height(&self, height: u64) {
        if height > self.last_height() {
            let _ = write_file(&self.dir.join("height"), height.to_string().as_bytes());
        }
    }

    pub fn book(&self) -> Result<BTreeMap<String, Contact>> {
        Ok(read_json(&self.dir.join("book.json"))?.unwrap_or_default())
    }

    pub fn add_contact(&self, alias: &str, contact: Contact) -> Result<()> {
        check_alias(alias)?;
        let mut book = self.book()?;
        if let Some(existing) = book.get(alias)
            && *existing != contact
        {
            return Err(SdkError::Usage("that name is already taken in this address book".to_string()));
        }
        book.insert(alias.to_string(), contact);
        write_file(
            &self.dir.join("book.json"),
            serde_json::to_string_pretty(&book).map_err(SdkError::other)?.as_bytes(),
        )
    }

    /// The care teams this home names: alias → team id (`teams.json`).
    pub fn teams(&self) -> Result<BTreeMap<String, MemberId>> {
        Ok(read_json(&self.dir.join("teams.json"))?.unwrap_or_default())
    }

    /// Names a care team locally (an alias no member of the address book has).
    pub fn add_team(&self, alias: &str, team: MemberId) -> Result<()> {
        check_alias(alias)?;
        let mut teams = self.teams()?;
        if self.book()?.contains_key(alias) || teams.get(alias).is_some_and(|t| *t != team) {
            return Err(SdkError::Usage("that name is already taken in this address book".to_string()));
        }
        teams.insert(alias.to_string(), team);
        write_file(
            &self.dir.join("teams.json"),
            serde_json::to_string_pretty(&teams).map_err(SdkError::other)?.as_bytes(),
        )
    }

    /// Resolves a local alias to a contact.
    pub fn resolve(&self, name: &str) -> Result<Contact> {
        if let Some(contact) = self.book()?.get(name) {
            return Ok(contact.clone());
        }
        Err(SdkError::Usage("unknown name: names are local aliases made by `id create` in this home".to_string()))
    }

    /// The alias of a member, if this home knows it.
    pub fn alias_of(&self, member: &MemberId) -> Option<String> {
        let contact = self.book().ok()?.into_iter().find(|(_, c)| c.member == *member).map(|(alias, _)| alias);
        contact.or_else(|| self.teams().ok()?.into_iter().find(|(_, t)| t == member).map(|(alias, _)| alias))
    }

    fn key_path(&self, alias: &str) -> PathBuf {
        self.dir.join("identities").join(format!("{alias}.key"))
    }

    pub fn save_identity(&self, identity: &Identity, passphrase: &[u8]) -> Result<()> {
        check_alias(&identity.alias)?;
        if self.key_path(&identity.alias).exists() {
            return Err(SdkError::Usage(format!("an identity named {} already exists", identity.alias)));
        }
        self.write_identity(identity, passphrase)
    }

    /// Replaces the keystore of `identity.alias` (after its keys changed): the new one is written
    /// beside it, then renamed over it.
    pub fn replace_identity(&self, identity: &Identity, passphrase: &[u8]) -> Result<()> {
        check_alias(&identity.alias)?;
        self.write_identity(identity, passphrase)
    }

    fn write_identity(&self, identity: &Identity, passphrase: &[u8]) -> Result<()> {
        let path = self.key_path(&identity.alias);
        let sealed = medledger_crypto::keystore::seal(passphrase, &identity.secret()).map_err(SdkError::other)?;
        let file = KeyFile {
            member: identity.member,
            role: identity.role,
            org: identity.org.clone(),
            suite: identity.encryption.suite() as u8,
            sealed: hex::encode(sealed),
        };
        write_file(&path, serde_json::to_string_pretty(&file).map_err(SdkError::other)?.as_bytes())?;
        self.add_contact(&identity.alias, identity.contact())
    }

    /// Deletes the keystore of `alias` (a pending recovery's, once it is the member's).
    pub fn remove_identity(&self, alias: &str) -> Result<()> {
        check_alias(alias)?;
        std::fs::remove_file(self.key_path(alias)).map_err(SdkError::other)
    }

    pub fn has_identity(&self, alias: &str) -> bool {
        self.key_path(alias).exists()
    }

    pub fn load_identity(&self, alias: &str, passphrase: &[u8]) -> Result<Identity> {
        check_alias(alias)?;
        let file: KeyFile = read_json(&self.key_path(alias))?.ok_or_else(|| {
            SdkError::Usage(
                "no identity of that name in this home (keys stay on the device that made them)".to_string(),
            )
        })?;
        let sealed = hex::decode(&file.sealed).map_err(|_| SdkError::Other("keystore is malformed".into()))?;
        let secret = medledger_crypto::keystore::open(passphrase, &sealed)
            .map_err(|_| SdkError::Usage("wrong passphrase, or the keystore is damaged".to_string()))?;
        Identity::from_secret(alias, file.member, file.role, file.org, file.suite, &secret)
    }
}
