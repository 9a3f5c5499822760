//! The gateway's local cache of resources this member has written or read, kept encrypted at rest
//! (one file per record under `HOME/gateway/MEMBER/`, each sealed with a key derived from the
//! member's own secret and bound to its record id), so searches run on the client without
//! fetching every ciphertext again. It is a copy, never the authority: every resource the gateway
//! returns is first read on the ledger (an audited access), and a denied access evicts it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use medledger_crypto::local::LocalKey;
use medledger_sdk::{Home, Identity, Result, SdkError};
use medledger_types::{MemberId, RecordId};
use serde::{Deserialize, Serialize};

/// Most records kept; past it, new reads are served but not cached.
pub const CACHE_ENTRIES_MAX: usize = 200_000;

/// One cached resource, at one version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cached {
    pub record: RecordId,
    pub patient: MemberId,
    pub version: u32,
    pub resource_type: String,
    /// The resource's JSON as stored in the record.
    pub resource: String,
}

pub struct Cache {
    dir: PathBuf,
    key: LocalKey,
    index: RwLock<HashMap<RecordId, Arc<Cached>>>,
}

impl Cache {
    /// Opens (and loads) `me`'s cache in `home`. Entries that do not open are dropped.
    pub fn open(home: &Home, me: &Identity) -> Result<Self> {
        let dir = home.dir().join("gateway").join(me.member.to_hex());
        std::fs::create_dir_all(&dir).map_err(|e| SdkError::Other(format!("{}: {e}", dir.display())))?;
        let key = me.local_key("medledger/gateway-cache/v1")?;
        let cache = Cache { dir, key, index: RwLock::default() };
        let mut index = HashMap::new();
        let entries = std::fs::read_dir(&cache.dir).map_err(|e| SdkError::Other(e.to_string()))?;
        for entry in entries.flatten().take(CACHE_ENTRIES_MAX) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(record) = name.parse::<RecordId>() else { continue };
            match cache.load(&record) {
                Some(c) => {
                    index.insert(record, Arc::new(c));
                }
                None => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        *cache.index.write().expect("cache lock") = index;
        Ok(cache)
    }

    fn path(&self, record: &RecordId) -> PathBuf {
        self.dir.join(record.to_hex())
    }

    fn load(&self, record: &RecordId) -> Option<Cached> {
        let sealed = std::fs::read(self.path(record)).ok()?;
        let plain = self.key.open(record.as_bytes(), &sealed).ok()?;
        let cached: Cached = serde_json::from_slice(&plain).ok()?;
        (cached.record == *record).then_some(cached)
    }

    pub fn get(&self, record: &RecordId) -> Option<Arc<Cached>> {
        self.index.read().expect("cache lock").get(record).cloned()
    }

    /// Stores (or replaces) an entry; best effort: a cache that cannot be written only costs a
    /// later re-read.
    pub fn put(&self, cached: Cached) {
        let mut index = self.index.write().expect("cache lock");
        if index.len() >= CACHE_ENTRIES_MAX && !index.contains_key(&cached.record) {
            return;
        }
        let Ok(json) = serde_json::to_vec(&cached) else { return };
        let Ok(sealed) = self.key.seal(cached.record.as_bytes(), &json) else { return };
        let path = self.path(&cached.record);
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, sealed).and_then(|()| std::fs::rename(&tmp, &path)).is_ok() {
            index.insert(cached.record, Arc::new(cached));
        }
    }

    pub fn remove(&self, record: &RecordId) {
        self.index.write().expect("cache lock").remove(record);
        let _ = std::fs::remove_file(self.path(record));
    }

    /// The cached records of one patient.
    pub fn of_patient(&self, patient: &MemberId) -> Vec<Arc<Cached>> {
        self.index.read().expect("cache lock").values().filter(|c| c.patient == *patient).cloned().collect()
    }

    /// Every patient with a cached record.
    pub fn patients(&self) -> Vec<MemberId> {
        let mut out: Vec<MemberId> = self.index.read().expect("cache lock").values().map(|c| c.patient).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The record holding a patient's Patient resource, if cached.
    pub fn patient_resource(&self, patient: &MemberId) -> Option<Arc<Cached>> {
        self.of_patient(patient).into_iter().find(|c| c.resource_type == "Patient")
    }
}
