// The validator-set history a piece of evidence carries (DESIGN §5, governance): each epoch's set
// learned from the previous one, as `medledger_proof::validators_through` learns it. An epoch
// link holds the new set's state entries (`ve/{epoch}` and each `va/{index}`), proved against the
// state root of the block that adopted it, and the headers from that block to one the previous
// epoch's validators certified. Starting from the genesis validators, the browser believes a
// later set only through an unbroken chain of such links.

import { type Bytes, equal, fromHex, utf8 } from "./bytes.js";
import type { Reader } from "./borsh.js";
import { type Header, readHeader } from "./certified.js";
import { consensusNamespace, verifyFinalization, verifyStateProof } from "./evidence.js";

/** Blocks between a set's adoption and its first block (`governance::EPOCH_SWITCH_BLOCKS`). */
export const EPOCH_SWITCH_BLOCKS = 64n;
/** Most links one piece of evidence carries, headers per link, and validators per set. */
const LINKS_MAX = 256;
const HEADERS_MAX = 256;
const VALIDATORS_MAX = 64;

export interface EpochLink {
  epoch: bigint;
  firstHeight: bigint;
  indices: number[];
  hasProposal: boolean;
  /** The set entry's encoding (its state value), and each validator's: index, key, encoding. */
  setBytes: Bytes;
  validators: { index: number; publicKey: Bytes; apiAddress: string; bytes: Bytes }[];
  headers: Header[];
  certificate: Bytes;
  proofs: Bytes[];
}

function u32be(n: number): Bytes {
  return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

function u64be(n: bigint): Bytes {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, n);
  return out;
}

/** Reads the links (borsh `Vec<EpochLink>`) at `r`, bounded. */
export function readLinks(r: Reader): EpochLink[] {
  const count = r.u32();
  if (count > LINKS_MAX) throw new Error("the evidence carries too long a validator-set history");
  const links: EpochLink[] = [];
  for (let i = 0; i < count; i++) {
    const setStart = r.offset();
    const epoch = r.u64();
    const firstHeight = r.u64();
    const n = r.u32();
    if (n > VALIDATORS_MAX) throw new Error("a validator set is over its limit");
    const indices = Array.from({ length: n }, () => r.u32());
    const hasProposal = r.option((r) => r.fixed(32)) !== null;
    const setBytes = r.slice(setStart, r.offset());
    const m = r.u32();
    if (m > VALIDATORS_MAX) throw new Error("a validator set is over its limit");
    const validators = Array.from({ length: m }, () => {
      const start = r.offset();
      const index = r.u32();
      r.bytes(64);
      const publicKey = r.fixed(32);
      r.bytes(256);
      const apiAddress = new TextDecoder().decode(r.bytes(256));
      r.option((r) => {
        r.u8();
        return r.bytes(2048);
      });
      return { index, publicKey, apiAddress, bytes: r.slice(start, r.offset()) };
    });
    const h = r.u32();
    if (h === 0 || h > HEADERS_MAX) throw new Error("a validator-set link's headers are over their limits");
    const headers = Array.from({ length: h }, () => readHeader(r));
    const certificate = r.bytes(64 * 1024);
    const p = r.u32();
    if (p > VALIDATORS_MAX + 1) throw new Error("a validator-set link has too many proofs");
    const proofs = Array.from({ length: p }, () => r.bytes(256 * 1024));
    links.push({ epoch, firstHeight, indices, hasProposal, setBytes, validators, headers, certificate, proofs });
  }
  return links;
}

/** The validators of the epoch `links` lead to (`links.length`), from the genesis validators. */
export interface EpochSet {
  epoch: number;
  /** The epoch's first block (0 for genesis). */
  firstHeight: bigint;
  keys: Bytes[];
}

/**
 * Follows `links` from the genesis validators (`genesis`): each link's set must be the one its
 * adopting block's state holds (proved) and that block's chain certified by the previous set.
 */
export function validatorsThrough(genesis: Bytes[], chainId: string, links: EpochLink[]): EpochSet {
  const chain = fromHex(chainId);
  const namespace = consensusNamespace(chain);
  let keys = genesis;
  let firstHeight = 0n;
  for (const [i, link] of links.entries()) {
    const epoch = BigInt(i + 1);
    const first = link.headers[0]!;
    const last = link.headers[link.headers.length - 1]!;
    const indices = link.validators.map((v) => v.index);
    if (
      link.epoch !== epoch ||
      !link.hasProposal ||
      indices.length !== link.indices.length ||
      indices.some((x, j) => x !== link.indices[j]) ||
      link.proofs.length !== link.validators.length + 1 ||
      link.firstHeight !== first.height + EPOCH_SWITCH_BLOCKS + 1n ||
      last.height >= link.firstHeight
    ) {
      throw new Error("the validator-set history does not hold");
    }
    if (link.headers.some((h) => !equal(h.chainId, chain))) throw new Error("the validator-set history is of another network");
    for (let j = 1; j < link.headers.length; j++) {
      const [a, b] = [link.headers[j - 1]!, link.headers[j]!];
      if (!equal(b.parent, a.digest) || b.height !== a.height + 1n) throw new Error("the validator-set history's headers do not chain");
    }
    if (!verifyFinalization(namespace, epoch - 1n, keys, last.digest, link.certificate)) {
      throw new Error("a validator-set change is not certified by the set before it");
    }
    const entries: [Bytes, Bytes][] = [
      [new Uint8Array([...utf8("ve/"), ...u64be(epoch)]), link.setBytes],
      ...link.validators.map((v): [Bytes, Bytes] => [new Uint8Array([...utf8("va/"), ...u32be(v.index)]), v.bytes]),
    ];
    if (!entries.every(([key, value], j) => verifyStateProof(first.stateRoot, key, value, link.proofs[j]!))) {
      throw new Error("a validator set is not the one its adopting block holds");
    }
    keys = link.validators.map((v) => v.publicKey);
    firstHeight = link.firstHeight;
  }
  return { epoch: links.length, firstHeight, keys };
}

/**
 * Whether `certificate` shows that the validators of the epoch `links` lead to finalized the
 * block `header`; throws when the history does not hold or the block is before that epoch.
 */
export function certifiedThrough(genesis: Bytes[], chainId: string, links: EpochLink[], header: Header, certificate: Bytes): EpochSet {
  const set = validatorsThrough(genesis, chainId, links);
  // A block of epoch e lies at or after the first block of epoch e.
  if (header.height < set.firstHeight) throw new Error("the validator-set history does not hold for this block");
  if (!verifyFinalization(consensusNamespace(fromHex(chainId)), set.epoch, set.keys, header.digest, certificate)) {
    throw new Error("the block is not certified by a quorum of its epoch's validators");
  }
  return set;
}
