//! The state database: latest key/values, the Jellyfish Merkle tree over them, and indexes.

use std::path::Path;

use borsh::{BorshDeserialize, BorshSerialize};
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use medledger_ledger::{StateView, WriteSet};
use medledger_types::{BlockHash, Digest, Height, RecordId, TxId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_nodes");
/// key hash → (version, value): the latest value of each leaf, for proofs.
const VALUES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("jmt_values");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SIDECARS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("sidecars");
/// tx id → (height, index in block).
const TXS: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("txs");
/// height → (offset, length) of the block's entry in the chain log.
const BLOCKS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("blocks");
/// Tree nodes no longer in the latest tree, by the height that replaced them, waiting to be pruned.
const STALE: TableDefinition<&[u8], ()> = TableDefinition::new("jmt_stale");

/// (record ‖ version, big-endian) → this validator's opened key shares of that version. Local
/// secrets: outside the Merkle tree and never in a snapshot; erasure deletes them.
const VAULT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("share_vault");

/// (record ‖ height, big-endian) → (): the blocks whose transactions carry a sidecar of the record
/// (its versions, its per-record grants), so an erasure finds them without reading the whole chain
/// log. Kept by the validator's janitor, in height order from `RECORD_INDEX_FROM`.
const RECORD_BLOCKS: TableDefinition<&[u8], ()> = TableDefinition::new("record_blocks");
const RECORD_INDEX_FROM: &str = "record_index_from";

/// epoch (big-endian) → (adoption height, Merkle proofs): for each validator-set epoch after
/// genesis, proofs of its set's state entries against the state root of the block that adopted
/// it, made when that block was committed (the tree keeps only the latest version's nodes).
/// Receipts carry them as the validator-set history.
const EPOCH_LINKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("epoch_links");

/// The height of the block that adopted a validator-set epoch, and the Merkle proofs (encoded) of
/// the set's state entries against its state root.
pub type EpochProofs = (Height, Vec<Vec<u8>>);

/// Stale tree nodes are deleted in one go every this many heights: nodes are keyed version first,
/// so the deletions of many blocks fall on few pages instead of one page per node per block.
const PRUNE_EVERY_HEIGHTS: u64 = 64;

const LAST_APPLIED: &str = "last_applied";

/// The state database's page cache (redb's default): what it holds in memory besides the
/// batches of a snapshot install, however large the state.
const STATE_CACHE_BYTES: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("state database: {0}")]
    Db(String),
    #[error("merkle tree: {0}")]
    Tree(String),
    #[error("state database is not initialised")]
    Uninitialised,
    #[error("block {0} does not follow the last applied block")]
    OutOfOrder(u64),
    #[error("the snapshot's state does not have the certified state root")]
    SnapshotRoot,
    #[error("the snapshot's keys are not in strictly increasing order")]
    SnapshotOrder,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Where the state stands: the last finalized block applied, and the chain log's length after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct LastApplied {
    pub height: Height,
    pub digest: BlockHash,
    pub state_root: Digest,
    pub log_len: u64,
}

/// The outcome of executing a block not yet finalized: its writes and tree nodes.
#[derive(Clone, Debug)]
pub struct Pending {
    pub height: Height,
    pub writes: WriteSet,
    pub tree: TreeUpdateBatch,
    pub root: Digest,
}

pub struct StateDb {
    db: Database,
}

/// Tree nodes are stored under (version big-endian ‖ nibble path): the nodes of one block are
/// adjacent, so inserting them appends and pruning a range of old versions touches few pages.
fn node_key_bytes(key: &NodeKey) -> Result<Vec<u8>, StoreError> {
    let mut bytes = key.version().to_be_bytes().to_vec();
    borsh::to_writer(&mut bytes, key.nibble_path()).map_err(db_err)?;
    Ok(bytes)
}

fn key_hash(key: &[u8]) -> KeyHash {
    KeyHash::with::<sha2::Sha256>(key)
}

impl StateDb {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, STATE_CACHE_BYTES)
    }

    /// [`StateDb::open`] with a page cache (read cache and write buffer) of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Database::builder().set_cache_size(cache_bytes).create(path).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(KV).map_err(db_err)?;
            txn.open_table(NODES).map_err(db_err)?;
            txn.open_table(VALUES).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            txn.open_table(SIDECARS).map_err(db_err)?;
            txn.open_table(TXS).map_err(db_err)?;
            txn.open_table(BLOCKS).map_err(db_err)?;
            txn.open_table(STALE).map_err(db_err)?;
            txn.open_table(VAULT).map_err(db_err)?;
            txn.open_table(RECORD_BLOCKS).map_err(db_err)?;
            txn.open_table(EPOCH_LINKS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Self { db })
    }

    pub fn last_applied(&self) -> Result<Option<LastApplied>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let value = meta.get(LAST_APPLIED).map_err(db_err)?;
        value.map(|v| borsh::from_slice(v.value()).map_err(db_err)).transpose()
    }

    /// Computes the tree update of `writes` at `height` on top of the committed state and the
    /// `pending` batches of the unfinalized ancestors (oldest first).
    pub fn compute(&self, pending: &[&Pending], height: Height, writes: WriteSet) -> Result<Pending, StoreError> {
        let view = self.view(pending)?;
        let tree = Sha256Jmt::new(&view);
        let set: Vec<(KeyHash, Option<OwnedValue>)> = writes.iter().map(|(k, v)| (key_hash(k), v.clone())).collect();
        let (root, tree_batch) = tree.put_value_set(set, height.get()).map_err(|e| StoreError::Tree(e.to_string()))?;
        Ok(Pending { height, writes, tree: tree_batch, root: Digest::new(root.0) })
    }

    /// Initialises the state with genesis (version 0) unless it already is; returns the root.
    pub fn init_genesis(&self, genesis_digest: BlockHash, writes: WriteSet) -> Result<Digest, StoreError> {
        if let Some(last) = self.last_applied()? {
            return self.root_at(last.height).map(|r| r.unwrap_or(last.state_root));
        }
        let pending = self.compute(&[], Height::ZERO, writes)?;
        let root = pending.root;
        self.commit(pending, genesis_digest, &[], &[], None)?;
        Ok(root)
    }

    fn root_at(&self, height: Height) -> Result<Option<Digest>, StoreError> {
        let view = self.view(&[])?;
        let tree = Sha256Jmt::new(&view);
        let root = tree.get_root_hash_option(height.get()).map_err(|e| StoreError::Tree(e.to_string()))?;
        Ok(root.map(|r| Digest::new(r.0)))
    }

    /// Commits a finalized block's execution atomically: state, tree, sidecars, tx index, block
    /// location and `last_applied`. `log_entry` is the block's (offset, length) in the chain log.
    pub fn commit(
        &self,
        pending: Pending,
        digest: BlockHash,
        txs: &[TxId],
        sidecars: &[(Digest, Vec<u8>)],
        log_entry: Option<(u64, u64)>,
    ) -> Result<(), StoreError> {
        let height = pending.height;
        if let Some(last) = self.last_applied()?
            && height.get() != last.height.get() + 1
        {
            return Err(StoreError::OutOfOrder(height.get()));
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut kv = txn.open_table(KV).map_err(db_err)?;
            for (k, v) in &pending.writes {
                match v {
                    Some(v) => kv.insert(k.as_slice(), v.as_slice()).map_err(db_err)?,
                    None => kv.remove(k.as_slice()).map_err(db_err)?,
                };
            }
            let mut nodes = txn.open_table(NODES).map_err(db_err)?;
            for (key, node) in pending.tree.node_batch.nodes() {
                let k = node_key_bytes(key)?;
                let v = borsh::to_vec(node).map_err(db_err)?;
                nodes.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
            // History is in the chain log; the tree keeps only the latest version's nodes. Nodes
            // replaced here are listed (append-only: keyed by this height) and pruned in batches.
            let mut stale_table = txn.open_table(STALE).map_err(db_err)?;
            for stale in &pending.tree.stale_node_index_batch {
                let mut k = stale.stale_since_version.to_be_bytes().to_vec();
                k.extend_from_slice(&node_key_bytes(&stale.node_key)?);
                stale_table.insert(k.as_slice(), ()).map_err(db_err)?;
            }
            if height.get().is_multiple_of(PRUNE_EVERY_HEIGHTS) {
                let mut doomed: Vec<Vec<u8>> = Vec::new();
                for entry in stale_table.range::<&[u8]>(..).map_err(db_err)? {
                    let (k, _) = entry.map_err(db_err)?;
                    doomed.push(k.value().to_vec());
                }
                let mut node_keys: Vec<&[u8]> = doomed.iter().map(|k| &k[8..]).collect();
                node_keys.sort_unstable();
                for k in node_keys {
                    nodes.remove(k).map_err(db_err)?;
                }
                for k in &doomed {
                    stale_table.remove(k.as_slice()).map_err(db_err)?;
                }
            }
            let mut values = txn.open_table(VALUES).map_err(db_err)?;
            for ((version, hash), value) in pending.tree.node_batch.values() {
                match value {
                    Some(v) => {
                        let entry = borsh::to_vec(&(*version, v)).map_err(db_err)?;
                        values.insert(&hash.0, entry.as_slice()).map_err(db_err)?
                    }
                    None => values.remove(&hash.0).map_err(db_err)?,
                };
            }
            let mut table = txn.open_table(SIDECARS).map_err(db_err)?;
            for (d, bytes) in sidecars {
                table.insert(d.as_bytes(), bytes.as_slice()).map_err(db_err)?;
            }
            let mut index = txn.open_table(TXS).map_err(db_err)?;
            for (i, tx) in txs.iter().enumerate() {
                index.insert(tx.as_bytes(), (height.get(), u32::try_from(i).unwrap_or(u32::MAX))).map_err(db_err)?;
            }
            let log_len = match log_entry {
                Some((offset, len)) => {
                    txn.open_table(BLOCKS).map_err(db_err)?.insert(height.get(), (offset, len)).map_err(db_err)?;
                    offset + len
                }
                None => 0,
            };
            let last = LastApplied { height, digest, state_root: pending.root, log_len };
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert(LAST_APPLIED, borsh::to_vec(&last).map_err(db_err)?.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(())
    }

    /// Reads the committed state in one read snapshot, for a peer's state sync: `head` gets
    /// `last_applied` and the number of entries, then `entry` every key/value in key order until
    /// it returns `false`.
    pub fn export(
        &self,
        head: impl FnOnce(&LastApplied, u64) -> bool,
        mut entry: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let last: LastApplied = match meta.get(LAST_APPLIED).map_err(db_err)? {
            Some(v) => borsh::from_slice(v.value()).map_err(db_err)?,
            None => return Err(StoreError::Uninitialised),
        };
        let kv = txn.open_table(KV).map_err(db_err)?;
        if !head(&last, kv.len().map_err(db_err)?) {
            return Ok(());
        }
        for item in kv.range::<&[u8]>(..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            if !entry(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }

    /// Starts replacing the state with a peer's snapshot at `height` of `announced` entries and
    /// at most `max_bytes` of keys and values: one write transaction, in which the entries are
    /// written as they arrive and the Merkle tree is built a batch at a time, so that what this
    /// process holds is a batch or two, whatever the state's size (plus the database's page
    /// cache, bounded by its own setting). Nothing changes unless [`SnapshotInstall::finish`]
    /// finds the certified state root.
    pub fn begin_snapshot(
        &self,
        height: Height,
        announced: u64,
        max_bytes: u64,
    ) -> Result<SnapshotInstall, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        for table in [KV, NODES] {
            txn.delete_table(table).map_err(db_err)?;
            txn.open_table(table).map_err(db_err)?;
        }
        txn.delete_table(STALE).map_err(db_err)?;
        txn.open_table(STALE).map_err(db_err)?;
        txn.delete_table(VALUES).map_err(db_err)?;
        txn.open_table(VALUES).map_err(db_err)?;
        // Each batch but the last is a tree version of its own below `height` (the last one is
        // `height` itself): batches are sized so that there are at most `height` of them.
        let h = height.get().max(1);
        let batch_entries = SNAPSHOT_BATCH_ENTRIES.max(announced.saturating_mul(2) / h + 1);
        let batch_bytes = SNAPSHOT_BATCH_BYTES.max(max_bytes.saturating_mul(2) / h + 1);
        Ok(SnapshotInstall {
            txn,
            height,
            batch_entries,
            batch_bytes,
            next_version: 0,
            written: None,
            batch: Vec::new(),
            pending_bytes: 0,
            last_key: None,
            count: 0,
        })
    }

    /// A read view over the committed state plus pending ancestors (oldest first).
    /// Merkle proofs (encoded) of `keys` against the state after the last of `pending` (the
    /// committed state when empty), as `medledger_proof::verify_state_proof` checks them.
    pub fn prove(&self, pending: &[&Pending], keys: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StoreError> {
        let version = match pending.last() {
            Some(p) => p.height.get(),
            None => self.last_applied()?.ok_or(StoreError::Uninitialised)?.height.get(),
        };
        let view = self.view(pending)?;
        let tree = Sha256Jmt::new(&view);
        keys.iter()
            .map(|key| {
                let (_, proof) =
                    tree.get_with_proof(key_hash(key), version).map_err(|e| StoreError::Tree(e.to_string()))?;
                borsh::to_vec(&proof).map_err(db_err)
            })
            .collect()
    }

    /// Keeps the proofs of epoch `epoch`'s set, adopted at `height` (see `EPOCH_LINKS`).
    pub fn put_epoch_link(&self, epoch: u64, height: Height, proofs: &[Vec<u8>]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(EPOCH_LINKS).map_err(db_err)?;
            let value = borsh::to_vec(&(height.get(), proofs)).map_err(db_err)?;
            table.insert(epoch.to_be_bytes().as_slice(), value.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// The adoption height and proofs of epoch `epoch`'s set, if this validator committed its
    /// adoption (a validator that synced its state past it has none).
    pub fn epoch_link(&self, epoch: u64) -> Result<Option<EpochProofs>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(EPOCH_LINKS).map_err(db_err)?;
        let Some(value) = table.get(epoch.to_be_bytes().as_slice()).map_err(db_err)? else { return Ok(None) };
        let (height, proofs): (u64, Vec<Vec<u8>>) = borsh::from_slice(value.value()).map_err(db_err)?;
        Ok(Some((Height::new(height), proofs)))
    }

    pub fn view<'a>(&'a self, pending: &'a [&'a Pending]) -> Result<SpecView<'a>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let kv = txn.open_table(KV).map_err(db_err)?;
        let nodes = txn.open_table(NODES).map_err(db_err)?;
        let values = txn.open_table(VALUES).map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        Ok(SpecView { kv, nodes, values, meta, pending })
    }

    pub fn sidecar(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(SIDECARS).map_err(db_err)?;
        Ok(table.get(digest.as_bytes()).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Deletes sidecars (erasure). Absent ones are fine.
    pub fn delete_sidecars(&self, digests: &[Digest]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(SIDECARS).map_err(db_err)?;
            for d in digests {
                table.remove(d.as_bytes()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Keeps this validator's opened shares of record versions (see [`VAULT`]).
    pub fn vault_put(&self, shares: &[(RecordId, u32, Vec<u8>)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(VAULT).map_err(db_err)?;
            for (record, version, bytes) in shares {
                table.insert(vault_key(record, *version).as_slice(), bytes.as_slice()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Keeps rows beside a version's share (re-sharing's sub-shares and dealings), keyed by the
    /// version and `suffix`, sealed like shares; `None` deletes. They go with the record's shares
    /// on erasure and are re-sealed with them on a key switch.
    pub fn vault_put_rows(&self, rows: &[VaultRow]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(VAULT).map_err(db_err)?;
            for (record, version, suffix, bytes) in rows {
                let mut key = vault_key(record, *version).to_vec();
                key.extend_from_slice(suffix);
                match bytes {
                    Some(bytes) => table.insert(key.as_slice(), bytes.as_slice()).map(|_| ()),
                    None => table.remove(key.as_slice()).map(|_| ()),
                }
                .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// The rows of a version whose suffix starts with `prefix`: (suffix, row).
    pub fn vault_rows(&self, record: &RecordId, version: u32, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(VAULT).map_err(db_err)?;
        let mut start = vault_key(record, version).to_vec();
        start.extend_from_slice(prefix);
        let mut out = Vec::new();
        for entry in table.range(start.as_slice()..).map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            if !k.value().starts_with(&start) {
                break;
            }
            out.push((k.value()[20..].to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn vault_get(&self, record: &RecordId, version: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(VAULT).map_err(db_err)?;
        Ok(table.get(vault_key(record, version).as_slice()).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Replaces every vault row with `reseal(record, version, row)`, or deletes it when that gives
    /// `None`, in one transaction; returns how many rows it kept.
    pub fn vault_rekey(
        &self,
        mut reseal: impl FnMut(&RecordId, u32, &[u8]) -> Option<Vec<u8>>,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut kept = 0;
        {
            let mut table = txn.open_table(VAULT).map_err(db_err)?;
            let mut rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let key = k.value();
                let (Some(record), Some(version)) = (
                    key.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()).map(RecordId::new),
                    key.get(16..20).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes),
                ) else {
                    rows.push((key.to_vec(), None));
                    continue;
                };
                rows.push((key.to_vec(), reseal(&record, version, v.value())));
            }
            for (key, row) in rows {
                match row {
                    Some(row) => {
                        table.insert(key.as_slice(), row.as_slice()).map_err(db_err)?;
                        kept += 1;
                    }
                    None => {
                        table.remove(key.as_slice()).map_err(db_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(kept)
    }

    /// Notes that the block at `height` carries sidecars of `records` (idempotent).
    pub fn index_record_blocks(&self, height: Height, records: &[RecordId]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(RECORD_BLOCKS).map_err(db_err)?;
            for record in records {
                table.insert(record_block_key(record, height.get()).as_slice(), ()).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// The heights of the blocks carrying sidecars of `record`, as far as the index goes, and the
    /// first height the index covers (blocks below it must be searched).
    pub fn record_blocks(&self, record: &RecordId) -> Result<(Vec<Height>, Option<u64>), StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(RECORD_BLOCKS).map_err(db_err)?;
        let (first, last) = (record_block_key(record, 0), record_block_key(record, u64::MAX));
        let mut heights = Vec::new();
        for entry in table.range(first.as_slice()..=last.as_slice()).map_err(db_err)? {
            let (k, _) = entry.map_err(db_err)?;
            let bytes: [u8; 8] = k.value()[16..24].try_into().map_err(db_err)?;
            heights.push(Height::new(u64::from_be_bytes(bytes)));
        }
        let meta = txn.open_table(META).map_err(db_err)?;
        let from = meta.get(RECORD_INDEX_FROM).map_err(db_err)?.and_then(|v| v.value().try_into().ok());
        Ok((heights, from.map(u64::from_be_bytes)))
    }

    /// Records the first height the record index covers, unless it is known already.
    pub fn start_record_index(&self, from: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let from = {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let known = meta.get(RECORD_INDEX_FROM).map_err(db_err)?.and_then(|v| v.value().try_into().ok());
            match known {
                Some(bytes) => u64::from_be_bytes(bytes),
                None => {
                    meta.insert(RECORD_INDEX_FROM, from.to_be_bytes().as_slice()).map_err(db_err)?;
                    from
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(from)
    }

    /// Deletes every version's shares of `record` (erasure); returns how many there were.
    pub fn vault_erase(&self, record: &RecordId) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let count = {
            let mut table = txn.open_table(VAULT).map_err(db_err)?;
            let (first, last) = (vault_key(record, 0), vault_key(record, u32::MAX));
            let doomed = table.extract_from_if(first.as_slice()..=last.as_slice(), |_, _| true).map_err(db_err)?;
            doomed.count()
        };
        txn.commit().map_err(db_err)?;
        Ok(count)
    }

    /// Where a committed transaction is: (height, index in block).
    pub fn tx_location(&self, tx: &TxId) -> Result<Option<(Height, u32)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(TXS).map_err(db_err)?;
        Ok(table.get(tx.as_bytes()).map_err(db_err)?.map(|v| {
            let (h, i) = v.value();
            (Height::new(h), i)
        }))
    }

    /// The chain log entry (offset, length) of a committed block.
    pub fn block_location(&self, height: Height) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(BLOCKS).map_err(db_err)?;
        Ok(table.get(height.get()).map_err(db_err)?.map(|v| v.value()))
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Entries, and bytes of keys and values, of a snapshot whose tree nodes are built in one batch
/// (at least: fewer, larger batches when the chain is short).
const SNAPSHOT_BATCH_ENTRIES: u64 = 16_384;
const SNAPSHOT_BATCH_BYTES: u64 = 4 << 20;

/// A peer's state being installed (see [`StateDb::begin_snapshot`]): entries in strictly
/// increasing key order, then the indexes of the chain blocks that lead to it, then
/// [`SnapshotInstall::finish`]. Dropped unfinished, it changes nothing.
pub struct SnapshotInstall {
    txn: redb::WriteTransaction,
    height: Height,
    batch_entries: u64,
    batch_bytes: u64,
    /// The tree version the next full batch is written at (always below `height`).
    next_version: u64,
    /// The version the last batch was written at.
    written: Option<Version>,
    batch: Vec<Entry>,
    pending_bytes: u64,
    last_key: Option<Vec<u8>>,
    count: u64,
}

impl SnapshotInstall {
    /// Adds one entry; keys must come in strictly increasing order.
    pub fn push(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(StoreError::SnapshotOrder);
        }
        self.last_key = Some(key.clone());
        self.count += 1;
        self.pending_bytes += (key.len() + value.len()) as u64;
        self.batch.push((key, value));
        let full = self.batch.len() as u64 >= self.batch_entries || self.pending_bytes >= self.batch_bytes;
        if full && self.next_version < self.height.get() {
            // The newest entry stays for the next batch, so the last one (which `finish` writes
            // at `height`) is never empty.
            let newest = self.batch.pop().expect("the batch holds the entry just pushed");
            let batch = std::mem::take(&mut self.batch);
            self.pending_bytes = (newest.0.len() + newest.1.len()) as u64;
            self.batch.push(newest);
            let version = self.next_version;
            self.next_version += 1;
            self.write_batch(batch, version)?;
        }
        Ok(())
    }

    /// Entries pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes `entries` and the tree nodes of adding them at `version`; the nodes they replace
    /// are deleted at once (no earlier version of a snapshot's tree is ever read).
    fn write_batch(&mut self, entries: Vec<Entry>, version: Version) -> Result<Digest, StoreError> {
        let set: Vec<(KeyHash, Option<OwnedValue>)> =
            entries.iter().map(|(k, v)| (key_hash(k), Some(v.clone()))).collect();
        // The tree builds on the root of `version - 1`: that is the last batch's root, whatever
        // version it was written at.
        let previous = self.written.map(|held| (version.saturating_sub(1), held));
        let reader = InstallTree { txn: &self.txn, previous };
        let (root, tree) =
            Sha256Jmt::new(&reader).put_value_set(set, version).map_err(|e| StoreError::Tree(e.to_string()))?;
        self.written = Some(version);
        let mut kv = self.txn.open_table(KV).map_err(db_err)?;
        for (k, v) in &entries {
            kv.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
        }
        let mut nodes = self.txn.open_table(NODES).map_err(db_err)?;
        for (key, node) in tree.node_batch.nodes() {
            let v = borsh::to_vec(node).map_err(db_err)?;
            nodes.insert(node_key_bytes(key)?.as_slice(), v.as_slice()).map_err(db_err)?;
        }
        for stale in &tree.stale_node_index_batch {
            nodes.remove(node_key_bytes(&reader.held(&stale.node_key))?.as_slice()).map_err(db_err)?;
        }
        let mut values = self.txn.open_table(VALUES).map_err(db_err)?;
        for ((version, hash), value) in tree.node_batch.values() {
            if let Some(v) = value {
                values.insert(&hash.0, borsh::to_vec(&(*version, v)).map_err(db_err)?.as_slice()).map_err(db_err)?;
            }
        }
        Ok(Digest::new(root.0))
    }

    /// Indexes blocks added to the chain log by the sync (their sidecars, transactions and log
    /// entries), a page at a time.
    pub fn add_blocks(&mut self, blocks: &[SyncedBlock]) -> Result<(), StoreError> {
        let mut sidecars = self.txn.open_table(SIDECARS).map_err(db_err)?;
        let mut index = self.txn.open_table(TXS).map_err(db_err)?;
        let mut locations = self.txn.open_table(BLOCKS).map_err(db_err)?;
        for block in blocks {
            for (d, bytes) in &block.sidecars {
                sidecars.insert(d.as_bytes(), bytes.as_slice()).map_err(db_err)?;
            }
            for (i, tx) in block.txs.iter().enumerate() {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                index.insert(tx.as_bytes(), (block.height.get(), i)).map_err(db_err)?;
            }
            locations.insert(block.height.get(), block.location).map_err(db_err)?;
        }
        Ok(())
    }

    /// Writes the last batch at the snapshot's height and commits everything if the tree's root
    /// is `state_root` (which the caller has tied to a certified block); `log_len` is the chain
    /// log's length once the blocks up to the snapshot's height are in it.
    pub fn finish(mut self, digest: BlockHash, state_root: Digest, log_len: u64) -> Result<(), StoreError> {
        let last = std::mem::take(&mut self.batch);
        if last.is_empty() {
            return Err(StoreError::SnapshotRoot);
        }
        let root = self.write_batch(last, self.height.get())?;
        if root != state_root {
            return Err(StoreError::SnapshotRoot);
        }
        {
            let last = LastApplied { height: self.height, digest, state_root, log_len };
            let mut meta = self.txn.open_table(META).map_err(db_err)?;
            meta.insert(LAST_APPLIED, borsh::to_vec(&last).map_err(db_err)?.as_slice()).map_err(db_err)?;
        }
        self.txn.commit().map_err(db_err)
    }
}

/// The tree of a snapshot being installed, read from its own write transaction. Its root at
/// `previous.0` is the one written at `previous.1`.
struct InstallTree<'t> {
    txn: &'t redb::WriteTransaction,
    previous: Option<(Version, Version)>,
}

impl InstallTree<'_> {
    /// Where node `key` is held.
    fn held(&self, key: &NodeKey) -> NodeKey {
        match self.previous {
            Some((asked, held)) if key.version() == asked && key.nibble_path().num_nibbles() == 0 => {
                NodeKey::new(held, key.nibble_path().clone())
            }
            _ => key.clone(),
        }
    }
}

impl TreeReader for InstallTree<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let nodes = self.txn.open_table(NODES)?;
        let key = node_key_bytes(&self.held(node_key))?;
        Ok(match nodes.get(key.as_slice())? {
            Some(v) => Some(borsh::from_slice(v.value())?),
            None => None,
        })
    }

    fn get_value_option(&self, max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        let values = self.txn.open_table(VALUES)?;
        Ok(match values.get(&key_hash.0)? {
            Some(v) => {
                let (version, value): (u64, Vec<u8>) = borsh::from_slice(v.value())?;
                (version <= max_version).then_some(value)
            }
            None => None,
        })
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("rightmost leaf is only used by the tree's own restore, which is not used")
    }
}

/// What the indexes need of one block added by a state sync.
pub struct SyncedBlock {
    pub height: Height,
    /// (offset, length) of its chain log entry.
    pub location: (u64, u64),
    pub txs: Vec<TxId>,
    pub sidecars: Vec<(Digest, Vec<u8>)>,
}

/// Committed state plus pending batches: a [`StateView`] for execution and a [`TreeReader`] for
/// the Merkle tree, consistent with each other (one redb read snapshot).
pub struct SpecView<'a> {
    kv: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    nodes: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    values: redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    meta: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    pending: &'a [&'a Pending],
}

impl SpecView<'_> {
    /// The last block applied to this view of the committed state, and Merkle proofs of `keys`
    /// against its state root, all from the view's one read transaction (so the proofs are of the
    /// values this view reads). Only for a view without pending batches.
    pub fn prove_committed(&self, keys: &[Vec<u8>]) -> Result<(LastApplied, Vec<Vec<u8>>), StoreError> {
        if !self.pending.is_empty() {
            return Err(StoreError::Tree("proofs are of the committed state only".into()));
        }
        let last = self.meta.get(LAST_APPLIED).map_err(db_err)?.ok_or(StoreError::Uninitialised)?;
        let last: LastApplied = borsh::from_slice(last.value()).map_err(db_err)?;
        let tree = Sha256Jmt::new(self);
        let proofs = keys
            .iter()
            .map(|key| {
                let (_, proof) = tree
                    .get_with_proof(key_hash(key), last.height.get())
                    .map_err(|e| StoreError::Tree(e.to_string()))?;
                borsh::to_vec(&proof).map_err(db_err)
            })
            .collect::<Result<_, _>>()?;
        Ok((last, proofs))
    }

    fn committed(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.kv.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Committed entries whose key starts with `prefix`, from `after` (exclusive), at most `limit`.
    /// Pending batches are not included: listings show finalized state.
    pub fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let table = &self.kv;
        let start: Vec<u8> = match after {
            Some(a) => {
                let mut k = a.to_vec();
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let mut out = Vec::new();
        for item in table.range(start.as_slice()..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            if !k.value().starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

impl StateView for SpecView<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        for p in self.pending.iter().rev() {
            if let Some(v) = p.writes.get(key) {
                return v.clone();
            }
        }
        // A storage error here cannot be expressed to the pure executor; it is fatal for the node.
        self.committed(key).expect("state database read")
    }
}

impl TreeReader for SpecView<'_> {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        for p in self.pending.iter().rev() {
            if let Some(node) = p.tree.node_batch.get_node(node_key) {
                return Ok(Some(node.clone()));
            }
        }
        let key = node_key_bytes(node_key)?;
        match self.nodes.get(key.as_slice())? {
            Some(v) => Ok(Some(borsh::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    fn get_value_option(&self, max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        for p in self.pending.iter().rev() {
            for ((version, hash), value) in p.tree.node_batch.values() {
                if *hash == key_hash && *version <= max_version {
                    return Ok(value.clone());
                }
            }
        }
        match self.values.get(&key_hash.0)? {
            Some(v) => {
                let (version, value): (u64, Vec<u8>) = borsh::from_slice(v.value())?;
                Ok((version <= max_version).then_some(value))
            }
            None => Ok(None),
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("rightmost leaf is only used for state restore, which reads snapshots instead")
    }
}

/// A vault row beside a version's share: record, version, key suffix, and the sealed row (`None`
/// deletes it).
pub type VaultRow = (RecordId, u32, Vec<u8>, Option<Vec<u8>>);

fn vault_key(record: &RecordId, version: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(record.as_bytes());
    key[16..].copy_from_slice(&version.to_be_bytes());
    key
}

fn record_block_key(record: &RecordId, height: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(record.as_bytes());
    key[16..].copy_from_slice(&height.to_be_bytes());
    key
}
