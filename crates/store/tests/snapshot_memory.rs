//! A state sync installs a peer's snapshot as it streams in: entries are written to disk and the
//! Merkle tree is built a batch at a time, so a validator joining a large network holds a few
//! batches in memory, never the whole state.
//!
//! The workspace forbids `unsafe`, so instead of a counting allocator this resets the process's
//! peak resident size (`/proc/self/clear_refs`) and reads `VmHWM` after the install. Its own test
//! binary, so no other test moves the peak.
#![cfg(target_os = "linux")]

use std::cell::RefCell;

use medledger_ledger::{StateView, WriteSet};
use medledger_store::StateDb;
use medledger_types::{BlockHash, Height};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs is mounted");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("the field is reported")
}

const BLOCKS: u64 = 12;
const PER_BLOCK: u64 = 10_000;
const VALUE_BYTES: usize = 1024;
/// The installing database's page cache: small, so that what the install itself holds shows.
const CACHE_BYTES: usize = 4 << 20;

fn block_writes(height: u64) -> WriteSet {
    (0..PER_BLOCK)
        .map(|i| {
            let n = height * PER_BLOCK + i;
            let mut value = vec![(n % 251) as u8; VALUE_BYTES];
            value[..8].copy_from_slice(&n.to_be_bytes());
            (format!("e/{n:012}").into_bytes(), Some(value))
        })
        .collect()
}

#[test]
fn a_large_snapshot_installs_in_bounded_memory_across_many_batches() {
    let dir = tempfile::tempdir().unwrap();
    let source = StateDb::open(&dir.path().join("source.redb")).unwrap();
    source.init_genesis(BlockHash::new([0; 32]), block_writes(0)).unwrap();
    for height in 1..BLOCKS {
        let pending = source.compute(&[], Height::new(height), block_writes(height)).unwrap();
        source.commit(pending, BlockHash::new([height as u8; 32]), &[], &[], None).unwrap();
    }
    let head = source.last_applied().unwrap().unwrap();
    let target = StateDb::open_with_cache(&dir.path().join("target.redb"), CACHE_BYTES).unwrap();
    target.init_genesis(BlockHash::new([0; 32]), [(b"seed".to_vec(), Some(b"0".to_vec()))].into()).unwrap();

    // From here on, the peak resident size counts only the install.
    std::fs::write("/proc/self/clear_refs", "5").expect("the peak resident size can be reset");
    let before = status_kib("VmRSS:");
    let install = RefCell::new(None);
    let (mut entries, mut bytes) = (0u64, 0u64);
    source
        .export(
            |last, announced| {
                *install.borrow_mut() = Some(target.begin_snapshot(last.height, announced, 1 << 30).unwrap());
                true
            },
            |k, v| {
                entries += 1;
                bytes += (k.len() + v.len()) as u64;
                install.borrow_mut().as_mut().unwrap().push(k.to_vec(), v.to_vec()).unwrap();
                true
            },
        )
        .unwrap();
    let install = install.into_inner().unwrap();
    install.finish(head.digest, head.state_root, 0).unwrap();
    let peak_rise_kib = status_kib("VmHWM:").saturating_sub(before);
    let state_kib = bytes / 1024;
    eprintln!(
        "installed {entries} entries ({state_kib} KiB of keys and values): peak resident rise {peak_rise_kib} KiB"
    );
    assert_eq!(entries, BLOCKS * PER_BLOCK);
    assert!(
        peak_rise_kib < state_kib / 4,
        "the install's peak resident rise ({peak_rise_kib} KiB) is not a fraction of the state's size ({state_kib} KiB)"
    );

    // The installed tree is the source's: same root, same values, and the next block (which
    // builds on the tree's nodes of every batch) gives the same root on both.
    let after = target.last_applied().unwrap().unwrap();
    assert_eq!((after.height, after.state_root), (head.height, head.state_root));
    let view = target.view(&[]).unwrap();
    for n in [0, 1, 16_383, 16_384, 70_001, BLOCKS * PER_BLOCK - 1] {
        let key = format!("e/{n:012}").into_bytes();
        assert_eq!(view.get(&key), source.view(&[]).unwrap().get(&key), "entry {n}");
    }
    drop(view);
    let next: WriteSet =
        [(b"e/000000000007".to_vec(), None), (b"e/999999999999".to_vec(), Some(b"new".to_vec()))].into();
    let a = source.compute(&[], Height::new(BLOCKS), next.clone()).unwrap();
    let b = target.compute(&[], Height::new(BLOCKS), next).unwrap();
    assert_eq!(a.root, b.root);
}
