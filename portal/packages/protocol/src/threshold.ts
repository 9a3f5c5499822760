// Threshold release (DESIGN §6a), the reader's and the writer's side, as
// `medledger_crypto::threshold` does it: a record's data key is
// DEK = HKDF-SHA256(salt "medledger/threshold-dek/v1", k_env ‖ k_thr, info record ‖ version (BE)),
// and k_thr is shared among the validators with Pedersen's verifiable secret sharing over
// Ristretto255.
//
// A share is `id (1 byte) ‖ a(id) ‖ b(id)` (canonical little-endian scalars); a verifier is the
// commitments `C_k = a_k·G + b_k·H` (compressed points, constant term first), with
// H = the RFC 9496 element derived from SHA-512("medledger/pedersen-h/ristretto255/v1"). A share
// is checked with `a(id)·G + b(id)·H = Σ C_k·id^k` before it is used, and k_thr is the Lagrange
// combination at 0 of `threshold` checked shares.

import { ristretto255, ristretto255_hasher } from "@noble/curves/ed25519.js";
import { bytesToNumberLE, numberToBytesLE } from "@noble/curves/utils.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 as nobleSha256, sha512 } from "@noble/hashes/sha2.js";

import { type Bytes, concat, randomBytes, utf8 } from "./bytes.js";

type Point = InstanceType<typeof ristretto255.Point>;
const Point = ristretto255.Point;
const Fn = Point.Fn;
const L = Fn.ORDER;

export const HALF_KEY_BYTES = 32;
export const SHARE_BYTES = 65;
export const POINT_BYTES = 32;
export const SHARES_MAX = 255;

/** The blinding generator H (nobody knows its discrete log to base G). */
export const BLINDING_GENERATOR: Point = ristretto255_hasher.deriveToCurve!(
  sha512(utf8("medledger/pedersen-h/ristretto255/v1")),
) as Point;

function scalarOf(bytes: Bytes, what: string): bigint {
  if (bytes.length !== 32) throw new Error(`${what}: a scalar is 32 bytes`);
  const n = bytesToNumberLE(bytes);
  if (n >= L) throw new Error(`${what}: not a canonical scalar`);
  return n;
}

function scalarBytes(n: bigint): Bytes {
  return numberToBytesLE(Fn.create(n), 32);
}

/** A uniformly random scalar (from 64 random bytes, reduced). */
function randomScalar(): bigint {
  return Fn.create(bytesToNumberLE(randomBytes(64)));
}

/** A fresh k_thr: the canonical encoding of a uniformly random scalar. */
export function randomSecret(): Bytes {
  return scalarBytes(randomScalar());
}

/** A decoded share: participant id (position + 1), a(id), b(id). */
export interface Share {
  id: number;
  value: bigint;
  blind: bigint;
}

export function decodeShare(bytes: Bytes): Share {
  if (bytes.length !== SHARE_BYTES) throw new Error("a threshold share is 65 bytes");
  const id = bytes[0]!;
  if (id === 0) throw new Error("a share has participant id 1 or more");
  return { id, value: scalarOf(bytes.subarray(1, 33), "share"), blind: scalarOf(bytes.subarray(33, 65), "share blind") };
}

export function encodeShare(s: Share): Bytes {
  return concat(Uint8Array.of(s.id), scalarBytes(s.value), scalarBytes(s.blind));
}

/** Decodes a verifier's compressed points; refuses any that is not a Ristretto255 encoding. */
export function decodeVerifier(points: Bytes[]): Point[] {
  if (points.length === 0 || points.length > SHARES_MAX) throw new Error("a verifier has 1..=255 commitments");
  return points.map((p) => Point.fromBytes(p));
}

/** `Σ C_k·id^k`: the commitment to participant `id`'s share. */
function evaluate(verifier: Point[], id: number): Point {
  let acc = Point.ZERO;
  let power = 1n;
  for (const c of verifier) {
    acc = acc.add(c.multiplyUnsafe(power));
    power = Fn.mul(power, BigInt(id));
  }
  return acc;
}

/** Whether `share` is the share of participant `share.id` that `verifier` commits to. */
export function verifyShare(verifier: Point[], share: Share): boolean {
  const committed = Point.BASE.multiplyUnsafe(share.value).add(BLINDING_GENERATOR.multiplyUnsafe(share.blind));
  return committed.equals(evaluate(verifier, share.id));
}

/** k_thr from shares of distinct participants (each checked against its verifier first). */
export function combine(shares: Share[]): Bytes {
  if (shares.length === 0) throw new Error("no shares");
  const ids = shares.map((s) => BigInt(s.id));
  if (new Set(ids).size !== ids.length) throw new Error("shares of one participant twice");
  let secret = 0n;
  for (const [i, share] of shares.entries()) {
    let num = 1n;
    let den = 1n;
    for (const [j, xj] of ids.entries()) {
      if (j === i) continue;
      num = Fn.mul(num, xj);
      den = Fn.mul(den, Fn.sub(xj, ids[i]!));
    }
    secret = Fn.add(secret, Fn.mul(share.value, Fn.mul(num, Fn.inv(den))));
  }
  return scalarBytes(secret);
}

/** Shares `secret` among `count` participants (ids 1..=count), any `threshold` of which recover it. */
export function split(secret: Bytes, threshold: number, count: number): { shares: Share[]; verifier: Bytes[] } {
  if (threshold < 1 || threshold > count || count > SHARES_MAX) throw new Error("threshold must be 1..=count ≤ 255");
  const a = [scalarOf(secret, "secret"), ...Array.from({ length: threshold - 1 }, randomScalar)];
  const b = Array.from({ length: threshold }, randomScalar);
  const at = (coefficients: bigint[], x: bigint) => coefficients.reduceRight((acc, c) => Fn.add(Fn.mul(acc, x), c), 0n);
  const shares = Array.from({ length: count }, (_, i) => ({ id: i + 1, value: at(a, BigInt(i + 1)), blind: at(b, BigInt(i + 1)) }));
  // Secret coefficients: constant-time multiplication (which refuses 0, itself a 2^-252 event).
  const times = (p: Point, k: bigint) => (k === 0n ? Point.ZERO : p.multiply(k));
  const verifier = a.map((ak, k) => times(Point.BASE, ak).add(times(BLINDING_GENERATOR, b[k]!)).toBytes());
  return { shares, verifier };
}

/** The record's data key from its two halves. */
export function deriveDataKey(kEnv: Bytes, kThr: Bytes, record: Bytes, version: number): Bytes {
  if (kEnv.length !== HALF_KEY_BYTES || kThr.length !== HALF_KEY_BYTES || record.length !== 16) {
    throw new Error("k_env and k_thr are 32 bytes, a record id 16");
  }
  const info = new Uint8Array(20);
  info.set(record);
  new DataView(info.buffer).setUint32(16, version);
  return hkdf(nobleSha256, concat(kEnv, kThr), utf8("medledger/threshold-dek/v1"), info, 32);
}
