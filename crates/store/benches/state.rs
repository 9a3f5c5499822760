//! What a block costs the state store: Merkle (Jellyfish) update of its writes, and the durable
//! commit, on a state that already holds 100 000 keys. `cargo bench -p medledger-store --bench state`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use medledger_ledger::WriteSet;
use medledger_store::StateDb;
use medledger_types::{BlockHash, Height};

fn writes(block: u64, n: usize) -> WriteSet {
    (0..n)
        .map(|i| {
            let key = medledger_crypto::sha256(&[block.to_le_bytes(), (i as u64).to_le_bytes()].concat()).to_vec();
            (key, Some(vec![7u8; 120]))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = StateDb::open(&dir.path().join("bench.redb")).unwrap();
    let genesis = db.compute(&[], Height::ZERO, writes(0, 100_000)).unwrap();
    db.commit(genesis, BlockHash::new([0; 32]), &[], &[], None).unwrap();
    let height = std::cell::Cell::new(1u64);
    let mut group = c.benchmark_group("state");
    group.sample_size(10);
    for n in [600usize, 6_000] {
        group.bench_function(format!("merkle_update_{n}_keys"), |b| {
            b.iter_batched(
                || writes(999_999, n),
                |w| db.compute(&[], Height::new(height.get()), w).unwrap(),
                BatchSize::LargeInput,
            )
        });
        group.bench_function(format!("merkle_update_and_commit_{n}_keys"), |b| {
            b.iter_batched(
                || writes(height.get(), n),
                |w| {
                    let pending = db.compute(&[], Height::new(height.get()), w).unwrap();
                    db.commit(pending, BlockHash::new([1; 32]), &[], &[], None).unwrap();
                    height.set(height.get() + 1);
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
