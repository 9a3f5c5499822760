//! Throughput and latency of the crate's operations (and of the raw
//! primitives they are built on, to choose implementations).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use medledger_crypto::payload::{self, DataKey};
use medledger_crypto::sign::{self, SigningKey, VerifyingKey};
use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::{self, WrapContext};

const MIB: usize = 1024 * 1024;
const NS: &[u8] = b"medledger/bench";

fn payload_benches(c: &mut Criterion) {
    let dek = DataKey::generate();
    let record = [7u8; 16];
    let plaintext = vec![0x5Au8; MIB];
    let mut ciphertext = Vec::with_capacity(MIB + 1024);
    payload::encrypt(&dek, &record, 1, &plaintext[..], &mut ciphertext).unwrap();

    let mut group = c.benchmark_group("payload");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("encrypt_1MiB", |b| {
        let mut out = Vec::with_capacity(MIB + 1024);
        b.iter(|| {
            out.clear();
            payload::encrypt(&dek, &record, 1, black_box(&plaintext[..]), &mut out).unwrap()
        })
    });
    group.bench_function("decrypt_1MiB", |b| {
        let mut out = Vec::with_capacity(MIB);
        b.iter(|| {
            out.clear();
            payload::decrypt(&dek, &record, 1, black_box(&ciphertext[..]), &mut out).unwrap()
        })
    });
    group.finish();
}

fn primitive_benches(c: &mut Criterion) {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1u8; 32]).unwrap());
    let mut group = c.benchmark_group("aes256gcm_aws_lc");
    for size in [16 * 1024, MIB] {
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("seal_{size}"), |b| {
            b.iter(|| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0u8; 12]),
                    Aad::empty(),
                    black_box(&mut buf[..]),
                )
                .unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("sha256");
    for size in [64usize, MIB] {
        let data = vec![0xA5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("sha2_{size}"), |b| {
            b.iter(|| {
                use sha2::Digest as _;
                sha2::Sha256::digest(black_box(&data[..]))
            })
        });
        group.bench_function(format!("aws_lc_{size}"), |b| {
            b.iter(|| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, black_box(&data[..])))
        });
        group.bench_function(format!("crate_{size}"), |b| b.iter(|| medledger_crypto::sha256(black_box(&data[..]))));
    }
    group.finish();
}

fn wrap_benches(c: &mut Criterion) {
    let ctx = WrapContext { chain_id: [1; 32], subject: [2; 32], version: 3, recipient: [4; 32] };
    let secret = [9u8; 32];
    let mut group = c.benchmark_group("wrap");
    for suite in KemSuite::ALL {
        let key = wrap::generate(suite);
        let envelope = wrap::seal(key.encryption_key(), &secret, &ctx).unwrap();
        group.bench_function(format!("seal_{suite}"), |b| {
            b.iter(|| wrap::seal(key.encryption_key(), black_box(&secret), &ctx).unwrap())
        });
        group.bench_function(format!("open_{suite}"), |b| {
            b.iter(|| wrap::open(&key, black_box(&envelope), &ctx).unwrap())
        });
    }
    group.finish();
}

/// Threshold release: what a write deals (k_thr 2-of-4 and k_env 3-of-4), what a reader checks
/// per released share, and what one re-sharing dealing and combination cost (4 → 5 validators).
fn threshold_benches(c: &mut Criterion) {
    use medledger_crypto::threshold::{self, combine, combine_subshares, combine_verifiers, reshare, split};
    let mut group = c.benchmark_group("threshold");
    let secret = threshold::random_secret();
    group.bench_function("split_2_of_4", |b| b.iter(|| split(black_box(&secret), 2, 4).unwrap()));
    group.bench_function("split_3_of_4", |b| b.iter(|| split(black_box(&secret), 3, 4).unwrap()));
    let (shares, verifier) = split(&secret, 2, 4).unwrap();
    group.bench_function("verify_share_2_of_4", |b| b.iter(|| assert!(verifier.verify(black_box(&shares[1])))));
    group.bench_function("combine_2", |b| b.iter(|| combine(black_box(&shares[..2])).unwrap()));
    group.bench_function("reshare_deal_2_of_5", |b| b.iter(|| reshare(black_box(&shares[0]), 2, 5).unwrap()));
    let dealt: Vec<_> = shares[..2].iter().map(|s| reshare(s, 2, 5).unwrap()).collect();
    group.bench_function("reshare_combine_subshares", |b| {
        b.iter(|| combine_subshares(&[(1, dealt[0].0[0].clone()), (2, dealt[1].0[0].clone())], 1).unwrap())
    });
    group.bench_function("reshare_combine_verifiers", |b| {
        b.iter(|| combine_verifiers(&[(1, &dealt[0].1), (2, &dealt[1].1)]).unwrap())
    });
    group.finish();
}

fn sign_benches(c: &mut Criterion) {
    let key = SigningKey::generate();
    let msg = [0x42u8; 256];
    let sig = key.sign(NS, &msg);
    let vk = key.verifying_key();
    let mut group = c.benchmark_group("ed25519");
    group.bench_function("sign_256B", |b| b.iter(|| key.sign(NS, black_box(&msg))));
    group.bench_function("verify_256B", |b| b.iter(|| vk.verify(NS, black_box(&msg), &sig).unwrap()));
    let keys: Vec<SigningKey> = (0..64).map(|_| SigningKey::generate()).collect();
    let msgs: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 256]).collect();
    let items: Vec<(VerifyingKey, &[u8], sign::Signature)> =
        keys.iter().zip(&msgs).map(|(k, m)| (k.verifying_key(), m.as_slice(), k.sign(NS, m))).collect();
    group.throughput(Throughput::Elements(64));
    group.bench_function("verify_batch_64", |b| b.iter(|| assert!(sign::verify_batch(NS, black_box(&items)))));
    group.bench_function("verify_single_x64", |b| {
        b.iter(|| {
            for (k, m, s) in &items {
                k.verify(NS, m, s).unwrap();
            }
        })
    });
    group.finish();
}

fn keystore_benches(c: &mut Criterion) {
    let blob = medledger_crypto::keystore::seal(b"passphrase", &[7u8; 96]).unwrap();
    let mut group = c.benchmark_group("keystore");
    group.sample_size(10);
    group.bench_function("open_argon2id_19MiB_t2", |b| {
        b.iter_batched(
            || blob.clone(),
            |blob| medledger_crypto::keystore::open(b"passphrase", &blob).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    payload_benches,
    primitive_benches,
    wrap_benches,
    threshold_benches,
    sign_benches,
    keystore_benches
);
criterion_main!(benches);
