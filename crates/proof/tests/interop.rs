//! Interop vectors of what a client verifies, for the portal's TypeScript
//! (`portal/packages/protocol/src/evidence.ts`), which checks them a second time with code that
//! shares nothing with this crate: finality certificates of the consensus engine (commonware
//! Simplex, Ed25519 votes) and Jellyfish Merkle proofs of state entries, of presence and absence.
//!
//! `portal/vectors/rust-proofs.json` is written here (`MEDLEDGER_WRITE_VECTORS=1 cargo test -p
//! medledger-proof --test interop`); without the variable this test checks that the committed file
//! still verifies with this crate, so a format change that is not carried to the portal fails here.
//! The TypeScript only verifies these formats (validators make them), so vectors go one way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use commonware_codec::{Copying, DecodeExt as _, Encode as _};
use commonware_consensus::simplex::types::{Finalization, Finalize, Proposal};
use commonware_consensus::types::{Epoch, Round, View};
use commonware_cryptography::ed25519::PrivateKey;
use commonware_cryptography::{Signer as _, sha256};
use commonware_parallel::Sequential;
use commonware_utils::non_empty;
use commonware_utils::ordered::Set;
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use medledger_proof::certificate::{Scheme, public_keys, verify_certificate_in};
use medledger_proof::verify_state_proof_of;
use medledger_types::Digest;
use serde_json::{Value, json};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../portal/vectors/rust-proofs.json")
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("valid hex")
}

fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    PrivateKey::decode(Copying(&seed[..])).unwrap().public_key().as_ref().try_into().unwrap()
}

/// A finalization of `digest` in round (`epoch`, `view`), signed by the validators at `signers`
/// (positions in `seeds`), as the engine assembles it under `namespace`.
fn finalization(
    namespace: &[u8],
    seeds: &[[u8; 32]],
    signers: &[usize],
    round: (u64, u64),
    digest: [u8; 32],
) -> Vec<u8> {
    let keys: Vec<[u8; 32]> = seeds.iter().map(public_key).collect();
    let participants = Set::try_from(public_keys(keys.iter()).unwrap()).unwrap();
    let schemes: Vec<Scheme> = seeds
        .iter()
        .map(|s| Scheme::signer(namespace, participants.clone(), PrivateKey::decode(Copying(&s[..])).unwrap()).unwrap())
        .collect();
    let (epoch, view) = round;
    let proposal =
        Proposal::new(Round::new(Epoch::new(epoch), View::new(view)), View::new(view - 1), sha256::Digest(digest));
    let finalizes: Vec<_> = signers.iter().map(|&i| Finalize::sign(&schemes[i], proposal.clone()).unwrap()).collect();
    Finalization::from_finalizes(&schemes[0], non_empty![@&finalizes], &Sequential).unwrap().encode().to_vec()
}

/// A Jellyfish Merkle tree in memory, built the way the validators' state database builds it.
#[derive(Default)]
struct Tree {
    nodes: Mutex<HashMap<NodeKey, Node>>,
    values: Mutex<HashMap<KeyHash, OwnedValue>>,
}

impl TreeReader for Tree {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.nodes.lock().unwrap().get(key).cloned())
    }

    fn get_value_option(&self, _: Version, key: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self.values.lock().unwrap().get(&key).cloned())
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("not used")
    }
}

fn write_vectors() -> Value {
    let seeds: Vec<[u8; 32]> =
        (1..=4u8).map(|i| medledger_crypto::sha256(&[b"interop-validator/".as_slice(), &[i]].concat())).collect();
    let namespace = b"medledger-consensus-v1:interop".to_vec();
    let keys: Vec<String> = seeds.iter().map(|s| h(&public_key(s))).collect();
    let certificates: Vec<Value> =
        [(vec![0, 1, 2], (0u64, 7u64)), (vec![3, 1, 0, 2], (0, 130)), (vec![1, 2, 3], (2, 70_000))]
            .into_iter()
            .enumerate()
            .map(|(i, (signers, round))| {
                let digest = medledger_crypto::sha256(&[i as u8]);
                json!({
                    "namespace": h(&namespace),
                    "validators": keys,
                    "epoch": round.0,
                    "block_digest": h(&digest),
                    "certificate": h(&finalization(&namespace, &seeds, &signers, round, digest)),
                })
            })
            .collect();

    let tree = Tree::default();
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..40u32)
        .map(|i| (format!("k/{i}").into_bytes(), format!("value {i}").repeat(1 + i as usize % 3).into_bytes()))
        .collect();
    let set: Vec<(KeyHash, Option<OwnedValue>)> =
        entries.iter().map(|(k, v)| (KeyHash::with::<sha2::Sha256>(k), Some(v.clone()))).collect();
    let (root, batch) = Sha256Jmt::new(&tree).put_value_set(set, 1).unwrap();
    tree.nodes.lock().unwrap().extend(batch.node_batch.nodes().iter().map(|(k, n)| (k.clone(), n.clone())));
    tree.values
        .lock()
        .unwrap()
        .extend(batch.node_batch.values().iter().filter_map(|((_, k), v)| Some((*k, v.clone()?))));
    let jmt = Sha256Jmt::new(&tree);
    let present = entries.iter().take(6).map(|(k, v)| (k.clone(), Some(v.clone())));
    let absent = ["absent/a", "absent/b", "k/40", "k/100"].iter().map(|k| (k.as_bytes().to_vec(), None));
    let proofs: Vec<Value> = present
        .chain(absent)
        .map(|(key, value)| {
            let (found, proof) = jmt.get_with_proof(KeyHash::with::<sha2::Sha256>(&key), 1).unwrap();
            assert_eq!(found, value);
            json!({
                "root": h(&root.0),
                "key": h(&key),
                "value": value.map(|v| h(&v)),
                "proof": h(&borsh::to_vec(&proof).unwrap()),
            })
        })
        .collect();
    json!({ "format": "medledger proof vectors v1 (from Rust)", "certificates": certificates, "state_proofs": proofs })
}

#[test]
fn proof_vectors_verify_with_this_crate() {
    if std::env::var_os("MEDLEDGER_WRITE_VECTORS").is_some() {
        std::fs::write(path(), serde_json::to_string_pretty(&write_vectors()).unwrap() + "\n").unwrap();
    }
    let vectors: Value =
        serde_json::from_slice(&std::fs::read(path()).expect("portal/vectors/rust-proofs.json")).unwrap();
    let certificates = vectors["certificates"].as_array().unwrap();
    assert!(certificates.len() >= 3);
    for v in certificates {
        let validators: Vec<[u8; 32]> =
            v["validators"].as_array().unwrap().iter().map(|k| unhex(k).try_into().unwrap()).collect();
        let digest: [u8; 32] = unhex(&v["block_digest"]).try_into().unwrap();
        let (namespace, certificate) = (unhex(&v["namespace"]), unhex(&v["certificate"]));
        let epoch = v["epoch"].as_u64().unwrap();
        assert!(verify_certificate_in(&namespace, epoch, &validators, digest, &certificate));
        assert!(!verify_certificate_in(&namespace, epoch + 1, &validators, digest, &certificate));
    }
    let proofs = vectors["state_proofs"].as_array().unwrap();
    assert!(proofs.iter().any(|p| p["value"].is_null()) && proofs.iter().any(|p| !p["value"].is_null()));
    for p in proofs {
        let root = Digest::new(unhex(&p["root"]).try_into().unwrap());
        let (key, proof) = (unhex(&p["key"]), unhex(&p["proof"]));
        let value = (!p["value"].is_null()).then(|| unhex(&p["value"]));
        assert!(verify_state_proof_of(&root, &key, value.as_deref(), &proof));
        // And of nothing else: an absent key is not present with a value, a present one not absent.
        let other = if value.is_some() { None } else { Some(b"another value".as_slice()) };
        assert!(!verify_state_proof_of(&root, &key, other, &proof));
    }
}
