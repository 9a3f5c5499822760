// What a reader checks of a validator's answer, implemented a second time (the node's own check
// is `medledger_proof`): finality certificates of the consensus engine (commonware Simplex with
// Ed25519 votes) and Jellyfish Merkle proofs of state entries against a certified state root.
//
// A finalization certificate, as the engine encodes it:
//   proposal    = epoch (varint) ‖ view (varint) ‖ parent view (varint) ‖ block digest (32)
//   signers     = bit count (u64, BE) ‖ bitmap (bit i of byte i/8 is participant i)
//   signatures  = count (varint) ‖ 64-byte Ed25519 signatures, in participant order
// Participants are the epoch's validators sorted by public key; a quorum is n − ⌊(n−1)/3⌋. Each
// signature is over `varint(len(ns)) ‖ ns ‖ proposal`, ns = namespace ‖ "_FINALIZE", and the
// namespace is "medledger-consensus-v1:" ‖ chain id.
//
// A state proof (jmt's SparseMerkleProof<Sha256>, borsh): an optional leaf (key hash, value
// hash), then the siblings from the bottom up, each null, internal (left, right) or a leaf.

import { type Bytes, concat, equal, toHex, utf8 } from "./bytes.js";
import { Reader } from "./borsh.js";
import { sha256 } from "./hash.js";
import { verify } from "./sign.js";

export const CONSENSUS_NAMESPACE_PREFIX = "medledger-consensus-v1:";

export function consensusNamespace(chainId: Bytes): Bytes {
  return concat(utf8(CONSENSUS_NAMESPACE_PREFIX), chainId);
}

/** A reader of commonware's codec: big-endian fixed integers, LEB128 varints. */
class CodecReader {
  private at = 0;

  constructor(private readonly data: Bytes) {}

  take(n: number): Bytes {
    if (n > this.data.length - this.at) throw new Error("certificate: unexpected end");
    const out = this.data.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  varint(): bigint {
    let value = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const byte = this.take(1)[0]!;
      value |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) {
        if (byte === 0 && shift > 0n) throw new Error("certificate: non-canonical varint");
        return value;
      }
    }
    throw new Error("certificate: varint too long");
  }

  u64(): bigint {
    return new DataView(this.take(8).slice().buffer).getBigUint64(0);
  }

  end(): void {
    if (this.at !== this.data.length) throw new Error("certificate: trailing bytes");
  }
}

export interface Finalization {
  epoch: bigint;
  view: bigint;
  parent: bigint;
  blockDigest: Bytes;
  /** The encoded proposal: what each vote signs. */
  proposal: Bytes;
  signers: number[];
  signatures: Bytes[];
}

/** Decodes a finalization certificate for a set of `participants` validators. */
export function decodeFinalization(bytes: Bytes, participants: number): Finalization {
  const r = new CodecReader(bytes);
  const epoch = r.varint();
  const view = r.varint();
  const parent = r.varint();
  const blockDigest = r.take(32).slice();
  const proposalEnd = encodedVarintLength(epoch) + encodedVarintLength(view) + encodedVarintLength(parent) + 32;
  const proposal = bytes.slice(0, proposalEnd);
  const bits = r.u64();
  if (bits !== BigInt(participants)) throw new Error("certificate: signer bitmap of another set size");
  const bitmap = r.take(Math.ceil(participants / 8));
  const signers: number[] = [];
  for (let i = 0; i < participants; i++) if ((bitmap[i >> 3]! >> (i & 7)) & 1) signers.push(i);
  for (let i = participants; i < bitmap.length * 8; i++) {
    if ((bitmap[i >> 3]! >> (i & 7)) & 1) throw new Error("certificate: bits set past the set");
  }
  const count = r.varint();
  if (count !== BigInt(signers.length) || signers.length === 0) throw new Error("certificate: signers and signatures differ");
  const signatures = signers.map(() => r.take(64).slice());
  r.end();
  return { epoch, view, parent, blockDigest, proposal, signers, signatures };
}

function encodedVarintLength(v: bigint): number {
  let n = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    n++;
  }
  return n;
}

function compareBytes(a: Bytes, b: Bytes): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/**
 * Whether `certificate` finalizes the block `blockDigest` of validator-set epoch `epoch`, signed
 * by a quorum of `validators` (their Ed25519 public keys, in any order) under `namespace`.
 */
export function verifyFinalization(
  namespace: Bytes,
  epoch: number | bigint,
  validators: Bytes[],
  blockDigest: Bytes,
  certificate: Bytes,
): boolean {
  const participants = [...validators].sort(compareBytes);
  if (participants.length === 0 || new Set(participants.map(toHex)).size !== participants.length) return false;
  let f: Finalization;
  try {
    f = decodeFinalization(certificate, participants.length);
  } catch {
    return false;
  }
  const n = participants.length;
  const quorum = n - Math.floor((n - 1) / 3);
  if (f.epoch !== BigInt(epoch) || !equal(f.blockDigest, blockDigest) || f.signers.length < quorum) return false;
  const finalizeNamespace = concat(namespace, utf8("_FINALIZE"));
  return f.signers.every((signer, i) => verify(participants[signer]!, finalizeNamespace, f.proposal, f.signatures[i]!));
}

const LEAF_DOMAIN = utf8("JMT::LeafNode");
const INTERNAL_DOMAIN = utf8("JMT::IntrnalNode");
const PLACEHOLDER = utf8("SPARSE_MERKLE_PLACEHOLDER_HASH__");
const SIBLINGS_MAX = 256;

function leafHash(keyHash: Bytes, valueHash: Bytes): Bytes {
  return sha256(LEAF_DOMAIN, keyHash, valueHash);
}

function internalHash(left: Bytes, right: Bytes): Bytes {
  return sha256(INTERNAL_DOMAIN, left, right);
}

function bit(hash: Bytes, depth: number): boolean {
  return ((hash[depth >> 3]! >> (7 - (depth & 7))) & 1) === 1;
}

function commonPrefixBits(a: Bytes, b: Bytes): number {
  let n = 0;
  while (n < 256 && bit(a, n) === bit(b, n)) n++;
  return n;
}

/**
 * Whether `proof` shows that the state with root `root` holds `value` at `key` (`null`: holds
 * nothing there), as jmt's `SparseMerkleProof::verify` decides it.
 */
export function verifyStateProof(root: Bytes, key: Bytes, value: Bytes | null, proof: Bytes): boolean {
  try {
    const r = new Reader(proof);
    const leaf = r.option((r) => ({ keyHash: r.fixed(32), valueHash: r.fixed(32) }));
    const count = r.u32();
    if (count > SIBLINGS_MAX) return false;
    const siblings: Bytes[] = [];
    for (let i = 0; i < count; i++) {
      const tag = r.u8();
      if (tag === 0) siblings.push(PLACEHOLDER);
      else if (tag === 1) siblings.push(internalHash(r.fixed(32), r.fixed(32)));
      else if (tag === 2) siblings.push(leafHash(r.fixed(32), r.fixed(32)));
      else return false;
    }
    r.end();
    const keyHash = sha256(key);
    if (value !== null) {
      if (!leaf || !equal(leaf.keyHash, keyHash) || !equal(leaf.valueHash, sha256(value))) return false;
    } else if (leaf) {
      if (equal(leaf.keyHash, keyHash) || commonPrefixBits(keyHash, leaf.keyHash) < siblings.length) return false;
    }
    let hash = leaf ? leafHash(leaf.keyHash, leaf.valueHash) : PLACEHOLDER;
    for (const [i, sibling] of siblings.entries()) {
      hash = bit(keyHash, siblings.length - 1 - i) ? internalHash(sibling, hash) : internalHash(hash, sibling);
    }
    return equal(hash, root);
  } catch {
    return false;
  }
}
