//! Binary Merkle roots over SHA-256 (RFC 6962 shape: leaves and inner nodes are domain-separated,
//! an odd node is promoted), used for the transaction and result roots of a block header.

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

/// The root over `leaves` in order; the root of no leaves is SHA-256 of the empty string.
pub fn root<L: AsRef<[u8]>>(leaves: &[L]) -> Digest {
    if leaves.is_empty() {
        return Digest::new(medledger_crypto::sha256(&[]));
    }
    let mut level: Vec<[u8; 32]> = leaves.iter().map(|l| leaf_hash(l.as_ref())).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
    }
    Digest::new(level[0])
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
    fn golden_root() {
        // Pins the tree shape (value computed independently: sha256(1‖sha256(1‖H(0‖a)‖H(0‖b))‖H(0‖c)));
        // changing it changes every block hash.
        assert_eq!(
            root(&[b"a".as_slice(), b"b", b"c"]).to_hex(),
            "36642e73c2540ab121e3a6bf9545b0a24982cd830eb13d3cd19de3ce6c021ec1"
        );
    }
}
