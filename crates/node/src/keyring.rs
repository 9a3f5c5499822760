//! This validator's share key (threshold release, DESIGN §6a), its vault, and their rotation.
//!
//! The share key opens this validator's shares in records' sidecars. Once a record's block is
//! committed, the janitor opens the share and keeps it in the vault, sealed under a key derived
//! from the share key; releases read the vault. After an erasure the validator replaces its share
//! key (a `ShareKey` transaction signed with its consensus key) and, when the replacement is
//! committed, re-seals the vault under the successor and destroys the old key. A copy of an erased
//! record's sidecar taken before the erasure then opens with nothing the validator keeps, and vault
//! rows the database left in freed pages are sealed under a key that no longer exists.
//!
//! A successor is fresh randomness, written to the keyring file (fsynced) before it is announced,
//! so a crash between announcing it and switching loses nothing; it is never derived from an
//! earlier key, so no `validator.json`, backup or keyring file from before a switch tells anything
//! about the keys after it (an earlier design derived it with HKDF from the current key: whoever
//! held one old file could compute every later key).
//!
//! `data/share-key.json` (0600) holds the current secret, the successor made but not yet switched
//! to, the one being retired during a switch, and whether an erasure asks for a rotation; absent,
//! the key is `validator.json`'s `share_secret`, which the first switch removes from that file.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use medledger_crypto::local::LocalKey;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::{DecryptionKey, EncryptionKey};
use medledger_store::StateDb;
use medledger_types::{ChainId, RecordId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const FILE: &str = "share-key.json";
const VAULT_LABEL: &[u8] = b"medledger/share-vault/v1";
/// A vault row starts with the first bytes of the SHA-256 of the public key it is sealed under.
const KEY_ID_BYTES: usize = 8;

#[derive(Serialize, Deserialize)]
struct KeyFile {
    secret: String,
    /// The successor, made before it is announced and kept until the ledger names it.
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    retiring: Option<String>,
    #[serde(default)]
    rotate: bool,
}

struct Keys {
    current: DecryptionKey,
    next: Option<DecryptionKey>,
    retiring: Option<DecryptionKey>,
    rotate: bool,
}

pub struct Keyring {
    path: PathBuf,
    validator_json: PathBuf,
    chain_id: ChainId,
    keys: RwLock<Keys>,
}

fn key_id(key: &EncryptionKey) -> [u8; KEY_ID_BYTES] {
    let digest = medledger_crypto::sha256(&key.bytes);
    digest[..KEY_ID_BYTES].try_into().expect("8 of 32 bytes")
}

fn decode(suite: KemSuite, hex_secret: &str) -> Result<DecryptionKey, String> {
    let bytes = Zeroizing::new(hex::decode(hex_secret).map_err(|_| "malformed share key file".to_string())?);
    DecryptionKey::from_bytes(suite, &bytes).map_err(|_| "malformed share key file".to_string())
}

impl Keyring {
    /// Opens the keyring in `data_dir`; `initial` is the key `validator.json` names (checked
    /// against genesis), used until the first switch. Finishes a switch a crash interrupted.
    pub fn open(
        data_dir: &Path,
        validator_json: &Path,
        chain_id: ChainId,
        suite: KemSuite,
        initial: Option<DecryptionKey>,
        db: &StateDb,
    ) -> Result<Self, String> {
        let path = data_dir.join(FILE);
        let in_validator_json = initial.as_ref().map(|k| k.encryption_key().clone());
        let keys = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: KeyFile = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                Keys {
                    current: decode(suite, &file.secret)?,
                    next: file.next.as_deref().map(|s| decode(suite, s)).transpose()?,
                    retiring: file.retiring.as_deref().map(|s| decode(suite, s)).transpose()?,
                    rotate: file.rotate,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let current =
                    initial.ok_or("the validator has no share key (validator.json or data/share-key.json)")?;
                Keys { current, next: None, retiring: None, rotate: false }
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        // A switch interrupted between the keyring and validator.json: the old key goes now.
        let stale = in_validator_json.is_some_and(|k| &k != keys.current.encryption_key());
        let keyring = Self { path, validator_json: validator_json.to_path_buf(), chain_id, keys: RwLock::new(keys) };
        if stale {
            keyring.scrub_validator_json()?;
        }
        keyring.finish_switch(db)?;
        Ok(keyring)
    }

    pub fn current(&self) -> DecryptionKey {
        self.keys.read().expect("keyring lock").current.clone()
    }

    /// The key this one is replaced by at the next rotation: made from fresh randomness the
    /// first time it is asked for and kept (durably, before anyone can announce it) until the
    /// switch, so an announcement repeated after a crash names the same key.
    pub fn successor(&self) -> Result<DecryptionKey, String> {
        let mut keys = self.keys.write().expect("keyring lock");
        if let Some(next) = &keys.next {
            return Ok(next.clone());
        }
        let next = medledger_crypto::wrap::generate(keys.current.suite());
        keys.next = Some(next.clone());
        self.save(&keys)?;
        Ok(next)
    }

    /// Whether an erasure asks for the key to be replaced.
    pub fn wants_rotation(&self) -> bool {
        self.keys.read().expect("keyring lock").rotate
    }

    /// An erasure was committed: the key must be replaced (remembered across restarts).
    pub fn request_rotation(&self) -> Result<(), String> {
        let mut keys = self.keys.write().expect("keyring lock");
        if !keys.rotate {
            keys.rotate = true;
            self.save(&keys)?;
        }
        Ok(())
    }

    /// The ledger now names `next` as this validator's share key. If it is the successor this
    /// keyring made, switches: the vault is re-sealed under it and the old key destroyed (here and
    /// in `validator.json`). Returns whether it switched; the current key or one this validator
    /// did not make changes nothing.
    pub fn advance(&self, next: &EncryptionKey, db: &StateDb) -> Result<bool, String> {
        if self.current().encryption_key() == next {
            return Ok(false);
        }
        let Some(successor) = self.keys.read().expect("keyring lock").next.clone() else {
            tracing::warn!("the ledger names a share key this validator did not make; not switching");
            return Ok(false);
        };
        if successor.encryption_key() != next {
            // Not the key this validator would switch to: an older announcement handled again
            // (its cursor was not saved), or a keyring restored from elsewhere. Nothing to do
            // here; the janitor goes on.
            tracing::warn!("the ledger names a share key this validator does not hold; not switching");
            return Ok(false);
        }
        {
            let mut keys = self.keys.write().expect("keyring lock");
            let old = std::mem::replace(&mut keys.current, successor);
            keys.next = None;
            keys.retiring = Some(old);
            keys.rotate = false;
            self.save(&keys)?;
        }
        self.scrub_validator_json()?;
        self.finish_switch(db)?;
        Ok(true)
    }

    /// Re-seals the vault under the current key and forgets the retiring one.
    fn finish_switch(&self, db: &StateDb) -> Result<(), String> {
        if self.keys.read().expect("keyring lock").retiring.is_none() {
            return Ok(());
        }
        let resealed = db
            .vault_rekey(|record, version, sealed| {
                let opened = self.open_share(record, version, sealed)?;
                self.seal_share(record, version, &opened).ok()
            })
            .map_err(|e| e.to_string())?;
        let mut keys = self.keys.write().expect("keyring lock");
        keys.retiring = None;
        self.save(&keys)?;
        tracing::info!(resealed, "share key replaced; the old one is destroyed");
        Ok(())
    }

    fn aad(&self, record: &RecordId, version: u32) -> Vec<u8> {
        let mut aad = b"medledger/vault/v1".to_vec();
        aad.extend_from_slice(self.chain_id.as_bytes());
        aad.extend_from_slice(record.as_bytes());
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }

    /// Seals an opened share for the vault under the current key.
    pub fn seal_share(&self, record: &RecordId, version: u32, opened: &[u8]) -> Result<Vec<u8>, String> {
        let current = self.current();
        let vault = LocalKey::derive(&current.to_bytes(), VAULT_LABEL).map_err(|e| e.to_string())?;
        let mut row = key_id(current.encryption_key()).to_vec();
        row.extend(vault.seal(&self.aad(record, version), opened).map_err(|e| e.to_string())?);
        Ok(row)
    }

    /// Opens a vault row sealed under the current key or the one being retired.
    pub fn open_share(&self, record: &RecordId, version: u32, row: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (id, sealed) = row.split_at_checked(KEY_ID_BYTES)?;
        let keys = self.keys.read().expect("keyring lock");
        let key = [Some(&keys.current), keys.retiring.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| key_id(k.encryption_key()) == id)?;
        let vault = LocalKey::derive(&key.to_bytes(), VAULT_LABEL).ok()?;
        vault.open(&self.aad(record, version), sealed).ok()
    }

    fn save(&self, keys: &Keys) -> Result<(), String> {
        let file = KeyFile {
            secret: hex::encode(&*keys.current.to_bytes()),
            next: keys.next.as_ref().map(|k| hex::encode(&*k.to_bytes())),
            retiring: keys.retiring.as_ref().map(|k| hex::encode(&*k.to_bytes())),
            rotate: keys.rotate,
        };
        let text = Zeroizing::new(serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?);
        write_private(&self.path, text.as_bytes())
    }

    /// Removes the genesis share key from `validator.json` (the keyring file holds the key now).
    fn scrub_validator_json(&self) -> Result<(), String> {
        let text = std::fs::read_to_string(&self.validator_json).map_err(|e| e.to_string())?;
        let mut value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if value.as_object_mut().and_then(|o| o.remove("share_secret")).is_some() {
            let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
            write_private(&self.validator_json, text.as_bytes())?;
        }
        Ok(())
    }
}

/// Replaces `path` atomically with `bytes`, readable by the owner only, and makes it durable.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().ok_or("no parent directory")?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    file.as_file().set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    file.write_all(bytes).map_err(|e| e.to_string())?;
    file.as_file().sync_all().map_err(|e| e.to_string())?;
    file.persist(path).map_err(|e| e.to_string())?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(dir: &Path, initial: &DecryptionKey) -> (Keyring, StateDb) {
        let validator_json = dir.join("validator.json");
        if !validator_json.exists() {
            let text = format!("{{\"share_secret\":\"{}\"}}", hex::encode(&*initial.to_bytes()));
            std::fs::write(&validator_json, text).unwrap();
        }
        let db = StateDb::open(&dir.join("state.redb")).unwrap();
        let chain = ChainId::new([3; 32]);
        let keyring = Keyring::open(dir, &validator_json, chain, initial.suite(), Some(initial.clone()), &db).unwrap();
        (keyring, db)
    }

    /// Finding 2 of the security review: a successor derived from the current key let whoever
    /// held an old `validator.json`, backup or keyring file compute every later share key. A
    /// successor is fresh randomness, kept (crash-safe) before it is announced.
    #[test]
    fn a_successor_is_fresh_randomness_that_no_earlier_file_yields() {
        let genesis = medledger_crypto::wrap::generate(KemSuite::X25519);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ring, db) = keyring(a.path(), &genesis);
        let (twin, _twin_db) = keyring(b.path(), &genesis);
        let before: Vec<u8> = [
            std::fs::read(a.path().join("validator.json")).unwrap(),
            std::fs::read(a.path().join(FILE)).unwrap_or_default(),
        ]
        .concat();

        let next = ring.successor().unwrap();
        const SUCCESSOR_LABEL: &[u8] = b"medledger/share-key/next/v1";
        use medledger_crypto::local::derive_secret;
        // The old one-way derivation from the current key does not give it...
        let derived = derive_secret(&genesis.to_bytes(), SUCCESSOR_LABEL).unwrap();
        let derived = DecryptionKey::from_bytes(genesis.suite(), &derived[..]).unwrap();
        assert_ne!(derived.encryption_key(), next.encryption_key(), "the successor is derivable from the current key");
        // ...nor does anyone else holding the same key (a copy of validator.json), ...
        assert_ne!(twin.successor().unwrap().encryption_key(), next.encryption_key());
        // ...and the files as they were before hold none of its bytes.
        let secret = next.to_bytes();
        assert!(!before.windows(secret.len()).any(|w| w == &secret[..]));
        assert!(!before.windows(2 * secret.len()).any(|w| w == hex::encode(&*secret).as_bytes()));

        // Kept before it is announced: asked again, or after a crash (the keyring reopened), the
        // same successor; the switch then destroys the old key everywhere.
        assert_eq!(ring.successor().unwrap().encryption_key(), next.encryption_key());
        drop(ring);
        drop(db);
        let (ring, db) = keyring(a.path(), &genesis);
        assert_eq!(ring.successor().unwrap().encryption_key(), next.encryption_key(), "lost across a restart");
        assert!(!ring.advance(derived.encryption_key(), &db).unwrap(), "switched to a key it did not make");
        assert!(ring.advance(next.encryption_key(), &db).unwrap());
        assert_eq!(ring.current().encryption_key(), next.encryption_key());
        let files = [
            std::fs::read_to_string(a.path().join("validator.json")).unwrap(),
            std::fs::read_to_string(a.path().join(FILE)).unwrap(),
        ]
        .concat();
        assert!(!files.contains(&hex::encode(&*genesis.to_bytes())), "the old key survives the switch");
        // The next successor is fresh again.
        assert_ne!(ring.successor().unwrap().encryption_key(), next.encryption_key());
    }
}
