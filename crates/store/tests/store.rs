use bytes::Bytes;
use medledger_ledger::WriteSet;
use medledger_store::{BlobError, Blobs, ChainLog, StateDb};
use medledger_types::{BlockHash, Digest, Height};

fn writes(pairs: &[(&str, Option<&str>)]) -> WriteSet {
    pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()))).collect()
}

#[test]
fn speculative_roots_equal_committed_roots() {
    let dir = tempfile::tempdir().unwrap();
    let a = StateDb::open(&dir.path().join("a.redb")).unwrap();
    let b = StateDb::open(&dir.path().join("b.redb")).unwrap();
    let g = writes(&[("o/org1", Some("x")), ("m/1", Some("y"))]);
    let root_a = a.init_genesis(BlockHash::new([0; 32]), g.clone()).unwrap();
    let root_b = b.init_genesis(BlockHash::new([0; 32]), g).unwrap();
    assert_eq!(root_a, root_b, "same genesis, same root");

    // a: execute blocks 1 and 2 speculatively (2 on top of pending 1), then commit both.
    let w1 = writes(&[("k/1", Some("1")), ("m/1", None)]);
    let w2 = writes(&[("k/2", Some("2")), ("k/1", Some("1b"))]);
    let p1 = a.compute(&[], Height::new(1), w1.clone()).unwrap();
    let p2 = a.compute(&[&p1], Height::new(2), w2.clone()).unwrap();
    {
        let chain = [&p1, &p2];
        let view = a.view(&chain).unwrap();
        use medledger_ledger::StateView;
        assert_eq!(view.get(b"k/1"), Some(b"1b".to_vec()));
        assert_eq!(view.get(b"m/1"), None);
        assert_eq!(view.get(b"o/org1"), Some(b"x".to_vec()));
    }
    let (r1, r2) = (p1.root, p2.root);
    assert_ne!(r1, root_a);
    assert_ne!(r1, r2);
    a.commit(p1, BlockHash::new([1; 32]), &[], &[], None).unwrap();
    a.commit(p2, BlockHash::new([2; 32]), &[], &[], None).unwrap();

    // b: compute and commit one at a time: the same roots.
    let q1 = b.compute(&[], Height::new(1), w1).unwrap();
    assert_eq!(q1.root, r1);
    b.commit(q1, BlockHash::new([1; 32]), &[], &[], None).unwrap();
    let q2 = b.compute(&[], Height::new(2), w2).unwrap();
    assert_eq!(q2.root, r2);
    b.commit(q2, BlockHash::new([2; 32]), &[], &[], None).unwrap();

    // A block without writes keeps the root and the next block still builds on it.
    let q3 = b.compute(&[], Height::new(3), WriteSet::new()).unwrap();
    assert_eq!(q3.root, r2);
    b.commit(q3, BlockHash::new([3; 32]), &[], &[], None).unwrap();
    let q4 = b.compute(&[], Height::new(4), writes(&[("k/4", Some("4"))])).unwrap();
    assert_ne!(q4.root, r2);

    // Out of order commits are refused.
    let stale = b.compute(&[], Height::new(9), WriteSet::new()).unwrap();
    assert!(b.commit(stale, BlockHash::new([9; 32]), &[], &[], None).is_err());
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let root = {
        let db = StateDb::open(&path).unwrap();
        db.init_genesis(BlockHash::new([0; 32]), writes(&[("a", Some("1"))])).unwrap();
        let p = db.compute(&[], Height::new(1), writes(&[("b", Some("2"))])).unwrap();
        let root = p.root;
        db.commit(p, BlockHash::new([7; 32]), &[], &[], Some((0, 10))).unwrap();
        root
    };
    let db = StateDb::open(&path).unwrap();
    let last = db.last_applied().unwrap().unwrap();
    assert_eq!(
        (last.height, last.digest, last.state_root, last.log_len),
        (Height::new(1), BlockHash::new([7; 32]), root, 10)
    );
    let view = db.view(&[]).unwrap();
    assert_eq!(view.scan(b"", None, 10).unwrap().len(), 2);
}

#[test]
fn chain_log_cuts_uncommitted_tail_and_flags_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.log");
    let mut log = ChainLog::open(&path, 0).unwrap();
    let (o1, l1) = log.append(Height::new(1), b"block-one", b"cert").unwrap();
    let (o2, l2) = log.append(Height::new(2), b"block-two", b"cert").unwrap();
    assert_eq!(o2, o1 + l1);
    drop(log);
    // The state only knew block 1: block 2 is cut.
    let log = ChainLog::open(&path, o1 + l1).unwrap();
    assert_eq!(log.len(), o1 + l1);
    assert_eq!(log.read_at(o1).unwrap().block, b"block-one");
    let entries: Vec<_> = ChainLog::entries(&path).unwrap().collect();
    assert_eq!(entries.len(), 1);
    let _ = l2;
    // A changed magic byte is reported with its offset.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let first = ChainLog::entries(&path).unwrap().next().unwrap();
    assert!(first.is_err());
}

#[tokio::test]
async fn blobs_check_digests_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["memory://", "file://blobs"] {
        let blobs = Blobs::open(url, dir.path(), None, 1 << 20).unwrap();
        let data = Bytes::from_static(b"ciphertext bytes");
        let digest = Digest::new(medledger_crypto::sha256(&data));
        let wrong = Digest::new([0; 32]);
        assert!(matches!(blobs.put(&wrong, data.clone()).await, Err(BlobError::Integrity)));
        assert!(!blobs.exists(&wrong).await.unwrap());
        blobs.put(&digest, data.clone()).await.unwrap();
        blobs.put(&digest, data.clone()).await.unwrap();
        assert_eq!(blobs.get(&digest).await.unwrap(), data);
        assert!(matches!(blobs.get(&wrong).await, Err(BlobError::NotFound)));
        let big = Bytes::from(vec![0u8; (1 << 20) + 1]);
        let big_digest = Digest::new(medledger_crypto::sha256(&big));
        assert!(matches!(blobs.put(&big_digest, big).await, Err(BlobError::TooLarge)));
    }
    // Flip one byte in the stored file: the read fails as an integrity error.
    let path = dir.path().join("blobs").join("c");
    let file = std::fs::read_dir(&path).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[3] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let blobs = Blobs::open("file://blobs", dir.path(), None, 1 << 20).unwrap();
    let digest = Digest::new(medledger_crypto::sha256(b"ciphertext bytes"));
    assert!(matches!(blobs.get(&digest).await, Err(BlobError::Integrity)));
    assert!(matches!(Blobs::open("ftp://x", dir.path(), None, 1), Err(BlobError::Url(_))));
}

#[test]
fn pruned_tree_keeps_working_and_roots_are_history_independent() {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(&dir.path().join("long.redb")).unwrap();
    db.init_genesis(BlockHash::new([0; 32]), writes(&[("seed", Some("0"))])).unwrap();
    let mut state = std::collections::BTreeMap::from([("seed".to_string(), "0".to_string())]);
    // 150 blocks rewriting and deleting 40 keys: stale nodes are pruned at heights 64 and 128.
    for height in 1..=150u64 {
        let mut w = WriteSet::new();
        for i in 0..5u64 {
            let key = format!("k/{}", (height * 7 + i * 13) % 40);
            if (height + i) % 9 == 0 {
                w.insert(key.clone().into_bytes(), None);
                state.remove(&key);
            } else {
                let value = format!("v{height}-{i}");
                w.insert(key.clone().into_bytes(), Some(value.clone().into_bytes()));
                state.insert(key, value);
            }
        }
        let pending = db.compute(&[], Height::new(height), w).unwrap();
        db.commit(pending, BlockHash::new([height as u8; 32]), &[], &[], None).unwrap();
    }
    let last = db.last_applied().unwrap().unwrap();
    // A fresh tree with only the final key/values has the same root: nothing needed was pruned.
    let fresh = StateDb::open(&dir.path().join("fresh.redb")).unwrap();
    let all: WriteSet = state.iter().map(|(k, v)| (k.clone().into_bytes(), Some(v.clone().into_bytes()))).collect();
    let root = fresh.init_genesis(BlockHash::new([0; 32]), all).unwrap();
    assert_eq!(root, last.state_root);
    // And the pruned tree still takes new blocks after a reopen.
    drop(db);
    let db = StateDb::open(&dir.path().join("long.redb")).unwrap();
    let next = db.compute(&[], Height::new(151), writes(&[("k/1", Some("again"))])).unwrap();
    db.commit(next, BlockHash::new([9; 32]), &[], &[], None).unwrap();
}

/// Builds a state through 20 blocks and returns it with its key/values as `export` sees them.
fn built_state(path: &std::path::Path) -> (StateDb, Vec<medledger_store::Entry>) {
    let db = StateDb::open(path).unwrap();
    db.init_genesis(BlockHash::new([0; 32]), writes(&[("seed", Some("0"))])).unwrap();
    for height in 1..=20u64 {
        let w = writes(&[(&format!("k/{}", height % 7), Some(&format!("v{height}"))), ("seed", None)]);
        let pending = db.compute(&[], Height::new(height), w).unwrap();
        db.commit(pending, BlockHash::new([height as u8; 32]), &[], &[], None).unwrap();
    }
    let mut entries = Vec::new();
    let mut announced = 0;
    db.export(
        |_, n| {
            announced = n;
            true
        },
        |k, v| {
            entries.push((k.to_vec(), v.to_vec()));
            true
        },
    )
    .unwrap();
    assert_eq!(announced, entries.len() as u64);
    assert_eq!(entries.len(), 7, "seven live keys, the deleted seed gone");
    (db, entries)
}

#[test]
fn snapshot_installs_only_with_the_certified_root_and_then_extends_like_the_source() {
    use medledger_store::SyncedBlock;
    let dir = tempfile::tempdir().unwrap();
    let (source, entries) = built_state(&dir.path().join("source.redb"));
    let head = source.last_applied().unwrap().unwrap();

    // A joining state at genesis.
    let target = StateDb::open(&dir.path().join("target.redb")).unwrap();
    target.init_genesis(BlockHash::new([0; 32]), writes(&[("seed", Some("0"))])).unwrap();
    let before = target.last_applied().unwrap().unwrap();
    let block = SyncedBlock {
        height: head.height,
        location: (0, 99),
        txs: vec![medledger_types::TxId::new([5; 32])],
        sidecars: vec![(Digest::new([6; 32]), b"sidecar".to_vec())],
    };
    let install = |entries: Vec<medledger_store::Entry>, root: Digest| {
        let mut install = target.begin_snapshot(head.height, entries.len() as u64, 1 << 20)?;
        for (k, v) in entries {
            install.push(k, v)?;
        }
        install.add_blocks(std::slice::from_ref(&block))?;
        install.finish(head.digest, root, 99)
    };

    // One changed value, one missing entry, one extra entry, or a wrong claimed root: refused, nothing changes.
    let mut changed = entries.clone();
    changed[3].1 = b"forged".to_vec();
    let mut extra = entries.clone();
    extra.push((b"z/extra".to_vec(), b"1".to_vec()));
    let mut swapped = entries.clone();
    swapped.swap(1, 2);
    for (bad, root, expected) in [
        (changed, head.state_root, "root"),
        (entries[1..].to_vec(), head.state_root, "root"),
        (extra, head.state_root, "root"),
        (entries.clone(), Digest::new([1; 32]), "root"),
        (swapped, head.state_root, "order"),
    ] {
        match (install(bad, root), expected) {
            (Err(medledger_store::StoreError::SnapshotRoot), "root") => {}
            (Err(medledger_store::StoreError::SnapshotOrder), "order") => {}
            (other, _) => panic!("expected a refused {expected}, got {other:?}"),
        }
        assert_eq!(target.last_applied().unwrap().unwrap(), before);
        assert_eq!(target.view(&[]).unwrap().scan(b"", None, 100).unwrap(), vec![(b"seed".to_vec(), b"0".to_vec())]);
        assert_eq!(target.sidecar(&Digest::new([6; 32])).unwrap(), None);
    }

    // The real one installs: same state, same root, indexes of the synced block.
    install(entries.clone(), head.state_root).unwrap();
    let after = target.last_applied().unwrap().unwrap();
    assert_eq!(
        (after.height, after.digest, after.state_root, after.log_len),
        (head.height, head.digest, head.state_root, 99)
    );
    assert_eq!(target.view(&[]).unwrap().scan(b"", None, 100).unwrap(), entries);
    assert_eq!(target.tx_location(&medledger_types::TxId::new([5; 32])).unwrap(), Some((head.height, 0)));
    assert_eq!(target.sidecar(&Digest::new([6; 32])).unwrap(), Some(b"sidecar".to_vec()));
    assert_eq!(target.block_location(head.height).unwrap(), Some((0, 99)));

    // The next block gives the same root on both, and both keep going past a pruning height.
    for height in head.height.get() + 1..=70 {
        let w = writes(&[(&format!("k/{}", height % 11), Some(&format!("w{height}")))]);
        let a = source.compute(&[], Height::new(height), w.clone()).unwrap();
        let b = target.compute(&[], Height::new(height), w).unwrap();
        assert_eq!(a.root, b.root, "height {height}");
        source.commit(a, BlockHash::new([height as u8; 32]), &[], &[], None).unwrap();
        target.commit(b, BlockHash::new([height as u8; 32]), &[], &[], None).unwrap();
    }
}

/// The share vault and the record index survive a reopen; the vault erases per record, re-seals
/// in one go, and the index says from which height it covers the chain.
#[test]
fn vault_and_record_index() {
    use medledger_types::RecordId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let (a, b) = (RecordId::new([1; 16]), RecordId::new([2; 16]));
    {
        let db = StateDb::open(&path).unwrap();
        db.vault_put(&[(a, 1, vec![1]), (a, 2, vec![2]), (b, 1, vec![3])]).unwrap();
        assert_eq!(db.start_record_index(7).unwrap(), 7);
        assert_eq!(db.start_record_index(1).unwrap(), 7, "the first start stays");
        db.index_record_blocks(Height::new(7), &[a, b]).unwrap();
        db.index_record_blocks(Height::new(9), &[a]).unwrap();
        db.index_record_blocks(Height::new(9), &[a]).unwrap();
    }
    let db = StateDb::open(&path).unwrap();
    assert_eq!(db.record_blocks(&a).unwrap(), (vec![Height::new(7), Height::new(9)], Some(7)));
    assert_eq!(db.record_blocks(&RecordId::new([3; 16])).unwrap(), (vec![], Some(7)));
    assert_eq!(db.vault_erase(&a).unwrap(), 2);
    assert_eq!((db.vault_get(&a, 1).unwrap(), db.vault_get(&a, 2).unwrap()), (None, None));
    assert_eq!(db.vault_get(&b, 1).unwrap(), Some(vec![3]));
    // Re-sealing replaces rows, and drops those the new sealer refuses.
    db.vault_put(&[(a, 3, vec![4])]).unwrap();
    let kept = db.vault_rekey(|record, _, row| (*record == b).then(|| [row, &[9]].concat())).unwrap();
    assert_eq!(kept, 1);
    assert_eq!(db.vault_get(&b, 1).unwrap(), Some(vec![3, 9]));
    assert_eq!(db.vault_get(&a, 3).unwrap(), None);
}
