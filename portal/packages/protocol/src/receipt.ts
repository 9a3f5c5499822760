// A receipt (`GET /v1/tx/{id}/receipt`, the file `medledger receipt verify` checks) verified a
// second time, in the browser, by code that shares nothing with the node's: the transaction and
// its outcome are in the first header's Merkle roots, the headers chain up to one a quorum of the
// genesis validators certified, all of this network's. What a patient checks of an event in
// their trail without trusting the validator that served it.
//
// The transaction is decoded as far as the kinds a trail holds (enrolment, records, consent,
// reads, break-glass, erasure, legal holds, delegates, chart reviews); a receipt of another kind
// (a validator's own steps, governance) is refused here: `medledger receipt verify` checks those.

import { type Bytes, equal, fromHex, toHex, utf8 } from "./bytes.js";
import { Reader } from "./borsh.js";
import { type Header, readHeader, readHolder } from "./certified.js";
import { certifiedThrough, readLinks } from "./epochs.js";
import { sha256 } from "./hash.js";

export const RECEIPT_MAGIC = utf8("medledger/receipt/v1\n");
/** Largest receipt accepted. */
const RECEIPT_BYTES_MAX = 4 * 1024 * 1024;
const PATH_MAX = 64;
const HEADERS_MAX = 1024;

/** The kinds, by their index in the ledger's `TxKind`, this verifier decodes. */
const KINDS: Record<number, string> = {
  0: "enroll",
  1: "register_record",
  2: "grant",
  3: "revoke",
  4: "record_access",
  5: "append_version",
  6: "suspend",
  7: "break_glass",
  8: "rotate",
  9: "erase",
  10: "legal_hold",
  12: "delegate",
  20: "chart_review",
};

export interface VerifiedReceipt {
  /** The transaction id (SHA-256 of its encoding), hex. */
  tx: string;
  kind: string;
  signer: string;
  /** The block holding it, its time (ms), and the certified block the chain reaches. */
  height: bigint;
  time: bigint;
  certifiedHeight: bigint;
  /** Applied, or the index of the ledger's rejection. */
  applied: boolean;
  /** The validator-set epoch whose validators certified it (0: genesis). */
  epoch: number;
}

function key(r: Reader): void {
  r.u8();
  r.bytes(2048);
}

function registerRecord(r: Reader): void {
  r.fixed(16 + 16);
  r.u32();
  r.fixed(32);
  r.u64();
  const n = r.u32();
  if (n > 1024) throw new Error("too many recipients");
  for (let i = 0; i < n; i++) readHolder(r);
}

function scope(r: Reader): void {
  const tag = r.u8();
  if (tag === 0) r.fixed(16);
  else if (tag > 2) throw new Error("unknown grant scope");
}

function newChart(r: Reader): void {
  r.option((r) => {
    key(r);
    const n = r.u32();
    if (n > 100_000) throw new Error("too many recipients");
    r.fixed(16 * n);
  });
}

/** Reads the kind's fields (the reader moves past them); throws for a kind not decoded here. */
function skipKind(r: Reader, index: number): void {
  switch (KINDS[index]) {
    case "enroll":
      r.fixed(16);
      r.bytes(32);
      r.u8();
      r.fixed(32);
      key(r);
      r.option((r) => r.bytes(1024));
      r.option(key);
      r.bool();
      return;
    case "register_record":
    case "append_version":
      registerRecord(r);
      return;
    case "grant":
      r.fixed(32);
      scope(r);
      r.bool();
      r.option((r) => r.u64());
      r.option((r) => r.u32());
      newChart(r);
      return;
    case "revoke":
      r.fixed(32);
      scope(r);
      newChart(r);
      return;
    case "record_access":
      r.fixed(16);
      r.u32();
      r.u8();
      return;
    case "suspend":
      r.fixed(16);
      r.bool();
      return;
    case "break_glass":
      r.fixed(16);
      r.option((r) => r.u8());
      r.u64();
      return;
    case "rotate":
      registerRecord(r);
      r.fixed(32);
      return;
    case "erase":
      r.fixed(16);
      return;
    case "legal_hold":
      r.fixed(16);
      r.option((r) => r.fixed(16));
      r.bool();
      return;
    case "delegate":
      r.fixed(32);
      r.bool();
      r.option((r) => r.u32());
      newChart(r);
      return;
    case "chart_review":
      r.fixed(16);
      r.u8();
      return;
    default:
      throw new Error("a receipt of this kind of transaction is checked by `medledger receipt verify`, not in the browser");
  }
}

interface Step {
  sibling: Bytes;
  left: boolean;
}

function path(r: Reader): Step[] {
  const n = r.u32();
  if (n > PATH_MAX) throw new Error("a Merkle path over its limit");
  return Array.from({ length: n }, () => ({ sibling: r.fixed(32), left: r.bool() }));
}

/** RFC 6962-shaped: leaves and inner nodes are domain-separated. */
function merkleVerify(root: Bytes, leaf: Bytes, steps: Step[]): boolean {
  let hash = sha256(Uint8Array.of(0), leaf);
  for (const step of steps) {
    hash = step.left ? sha256(Uint8Array.of(1), step.sibling, hash) : sha256(Uint8Array.of(1), hash, step.sibling);
  }
  return equal(hash, root);
}

/** Verifies a receipt against the genesis validators' keys (see `trustedValidators`) and the chain id. */
export function verifyReceipt(bytes: Bytes, validators: Bytes[], chainId: string): VerifiedReceipt {
  if (bytes.length > RECEIPT_BYTES_MAX) throw new Error("the receipt is over its limit");
  if (!equal(bytes.subarray(0, RECEIPT_MAGIC.length), RECEIPT_MAGIC)) throw new Error("not a medledger receipt");
  const body = bytes.subarray(RECEIPT_MAGIC.length);
  // The transaction: its bytes are what its id and the Merkle leaf are of.
  const r = new Reader(body);
  const txChain = r.fixed(32);
  const signer = toHex(r.fixed(16));
  r.u64();
  const index = r.u8();
  skipKind(r, index);
  r.option((r) => r.fixed(32));
  r.fixed(64);
  const txBytes = body.subarray(0, r.offset());
  const outcomeStart = r.offset();
  const applied = r.u8() === 0;
  if (!applied) r.u8();
  const outcomeBytes = body.subarray(outcomeStart, r.offset());
  const txPath = path(r);
  const resultPath = path(r);
  const count = r.u32();
  if (count === 0 || count > HEADERS_MAX) throw new Error("the receipt's headers are over their limits");
  const headers: Header[] = Array.from({ length: count }, () => readHeader(r));
  const certificate = r.bytes(64 * 1024);
  const links = readLinks(r);
  r.end();
  const chain = fromHex(chainId);
  if (!equal(txChain, chain) || headers.some((h) => !equal(h.chainId, chain))) throw new Error("the receipt is of another network");
  for (let i = 1; i < headers.length; i++) {
    if (!equal(headers[i]!.parent, headers[i - 1]!.digest) || headers[i]!.height !== headers[i - 1]!.height + 1n) {
      throw new Error("the receipt's headers do not chain");
    }
  }
  const first = headers[0]!;
  const last = headers[headers.length - 1]!;
  if (!merkleVerify(first.txRoot, txBytes, txPath)) throw new Error("the transaction is not in the block");
  if (
    txPath.length !== resultPath.length ||
    txPath.some((s, i) => s.left !== resultPath[i]!.left) ||
    !merkleVerify(first.resultsRoot, outcomeBytes, resultPath)
  ) {
    throw new Error("the outcome is not the block's");
  }
  const { epoch } = certifiedThrough(validators, chainId, links, last, certificate);
  return {
    epoch,
    tx: toHex(sha256(txBytes)),
    kind: KINDS[index]!,
    signer,
    height: first.height,
    time: first.time,
    certifiedHeight: last.height,
    applied,
  };
}
