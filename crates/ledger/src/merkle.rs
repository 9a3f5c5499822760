//! Binary Merkle roots over SHA-256 (RFC 6962 shape: leaves and inner nodes are domain-separated,
//! an odd node is promoted), used for the transaction and result roots of a block header.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_types::Digest;

fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(1 + leaf.len());
    bytes.push(0);
    bytes.extend_from_slice(leaf);
    medledger_crypto::sha256(&bytes)
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut bytes = [0u8; 65];
    bytes[0] = 1;
    bytes[1..33].copy_from_slice(left);
    bytes[33..].copy_from_slice(right);
    medledger_crypto::sha256(&bytes)
}

fn next_level(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => node_hash(left, right),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// The root over `leaves` in order; the root of no leaves is SHA-256 of the empty string.
pub fn root<L: AsRef<[u8]>>(leaves: &[L]) -> Digest {
    if leaves.is_empty() {
        return Digest::new(medledger_crypto::sha256(&[]));
    }
    let mut level: Vec<[u8; 32]> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    while level.len() > 1 {
        level = next_level(&level);
    }
    Digest::new(level[0])
}

/// One step of an inclusion proof, from the leaf up: the sibling's hash and which side it is on.
/// Levels where the node is promoted (an odd last node) have no step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PathStep {
    pub sibling: Digest,
    pub sibling_is_left: bool,
}

/// The inclusion proof of `leaves[index]`, or `None` when there is no such leaf.
///
/// The path names no index and no leaf count: the sides alone walk the tree from the leaf to the
/// root, so there is nothing in a proof that could be changed and still verify. Two proofs in trees
/// with the same number of leaves and the same sides are proofs of the same position.
pub fn proof<L: AsRef<[u8]>>(leaves: &[L], index: usize) -> Option<Vec<PathStep>> {
    if index >= leaves.len() {
        return None;
    }
    let mut level: Vec<[u8; 32]> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    let mut at = index;
    let mut path = Vec::new();
    while level.len() > 1 {
        let sibling = at ^ 1;
        if sibling < level.len() {
            path.push(PathStep { sibling: Digest::new(level[sibling]), sibling_is_left: sibling < at });
        }
        level = next_level(&level);
        at /= 2;
    }
    Some(path)
}

/// Whether `path` leads from `leaf` to `root`.
pub fn verify(root: &Digest, leaf: &[u8], path: &[PathStep]) -> bool {
    let mut hash = leaf_hash(leaf);
    for step in path {
        hash = if step.sibling_is_left { node_hash(&step.sibling.0, &hash) } else { node_hash(&hash, &step.sibling.0) };
    }
    hash == root.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_matter() {
        let a = root(&[b"a".as_slice(), b"b"]);
        assert_ne!(a, root(&[b"b".as_slice(), b"a"]));
        assert_ne!(a, root(&[b"a".as_slice(), b"b", b"c"]));
        assert_ne!(root(&[b"a".as_slice()]), root::<&[u8]>(&[]));
    }

    #[test]
    fn leaf_cannot_pose_as_inner_node() {
        let l = leaf_hash(b"x");
        let mut forged = vec![];
        forged.extend_from_slice(&l);
        forged.extend_from_slice(&l);
        assert_ne!(root(&[b"x".as_slice(), b"x"]), root(&[forged]));
    }

    #[test]
    fn every_leaf_has_a_proof_and_no_proof_serves_another_leaf() {
        for count in 1..=19usize {
            let leaves: Vec<Vec<u8>> = (0..count).map(|i| format!("leaf {i}").into_bytes()).collect();
            let root = root(&leaves);
            assert!(proof(&leaves, count).is_none());
            let paths: Vec<Vec<PathStep>> = (0..count).map(|i| proof(&leaves, i).expect("in range")).collect();
            for (i, path) in paths.iter().enumerate() {
                assert!(verify(&root, &leaves[i], path), "leaf {i} of {count}");
                assert!(!verify(&root, b"another leaf", path));
                for (j, leaf) in leaves.iter().enumerate() {
                    assert_eq!(verify(&root, leaf, path), i == j, "leaf {j} with the path of {i} of {count}");
                }
                // Flipping a side or a sibling bit breaks it.
                for k in 0..path.len() {
                    let mut side = path.clone();
                    side[k].sibling_is_left = !side[k].sibling_is_left;
                    assert!(!verify(&root, &leaves[i], &side));
                    let mut sibling = path.clone();
                    sibling[k].sibling.0[k % 32] ^= 1;
                    assert!(!verify(&root, &leaves[i], &sibling));
                }
                // The sides alone name the position.
                let sides = |p: &[PathStep]| p.iter().map(|s| s.sibling_is_left).collect::<Vec<_>>();
                for (j, other) in paths.iter().enumerate() {
                    assert_eq!(sides(path) == sides(other), i == j);
                }
            }
        }
    }

    #[test]
    fn golden_root() {
        // Pins the tree shape (value computed independently: sha256(1‖sha256(1‖H(0‖a)‖H(0‖b))‖H(0‖c)));
        // changing it changes every block hash.
        assert_eq!(
            root(&[b"a".as_slice(), b"b", b"c"]).to_hex(),
            "36642e73c2540ab121e3a6bf9545b0a24982cd830eb13d3cd19de3ce6c021ec1"
        );
    }
}
