// Record payloads: AES-256-GCM in the STREAM construction, with a key commitment, exactly as
// `medledger_crypto::payload` writes them.
//
//   ciphertext = header ‖ segment_0 ‖ … ‖ segment_{n-1}
//   header     = "MLP1" ‖ suite (1) ‖ record (16) ‖ version (4, BE) ‖ segment size (4, BE)
//                ‖ key commitment (32) ‖ nonce prefix (7)                         = 68 bytes
//   segment_i  = AES-256-GCM(DEK, nonce_i, aad = header, plaintext_i) ‖ tag (16)
//   nonce_i    = nonce prefix (7) ‖ i (4, BE) ‖ last (1: 1 on the final segment)
//   commitment = SHA-256("medledger/key-commit" ‖ DEK ‖ record ‖ version (4, BE))
//
// Every segment but the last holds 64 KiB of plaintext. The commitment is checked before anything
// is decrypted (AES-GCM does not commit to its key), and nothing unauthenticated is returned.

import { type Bytes, concat, equal, owned, randomBytes, utf8 } from "./bytes.js";
import { sha256 } from "./hash.js";

export const MAGIC = utf8("MLP1");
export const HEADER_BYTES = 68;
export const SEGMENT_BYTES = 64 * 1024;
export const SEGMENT_TAG_BYTES = 16;
export const DATA_KEY_BYTES = 32;

export enum PayloadSuite {
  /** The data key is random and wrapped as it is. */
  Direct = 1,
  /** The data key is derived from an envelope half and a threshold-released half. */
  Threshold = 2,
}

export function keyCommitment(dek: Bytes, record: Bytes, version: number): Bytes {
  return sha256(utf8("medledger/key-commit"), dek, record, u32be(version));
}

function u32be(v: number): Bytes {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v);
  return out;
}

function nonce(prefix: Bytes, segment: number, last: boolean): Uint8Array<ArrayBuffer> {
  return owned(concat(prefix, u32be(segment), Uint8Array.of(last ? 1 : 0)));
}

async function aesKey(dek: Bytes, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  if (dek.length !== DATA_KEY_BYTES) throw new Error("a data key is 32 bytes");
  return crypto.subtle.importKey("raw", owned(dek), { name: "AES-GCM" }, false, [usage]);
}

export interface Sealed {
  ciphertext: Bytes;
  /** SHA-256 of the ciphertext: its name in the store and on the ledger. */
  digest: Bytes;
}

/** Encrypts `plaintext` as version `version` of record `record` (16 bytes) under `dek`. */
export async function sealPayload(
  dek: Bytes,
  record: Bytes,
  version: number,
  plaintext: Bytes,
  suite: PayloadSuite = PayloadSuite.Direct,
): Promise<Sealed> {
  if (record.length !== 16) throw new Error("a record id is 16 bytes");
  const key = await aesKey(dek, "encrypt");
  const prefix = randomBytes(7);
  const header = concat(MAGIC, Uint8Array.of(suite), record, u32be(version), u32be(SEGMENT_BYTES), keyCommitment(dek, record, version), prefix);
  const parts: Bytes[] = [header];
  const segments = Math.max(1, Math.ceil(plaintext.length / SEGMENT_BYTES));
  for (let i = 0; i < segments; i++) {
    const chunk = plaintext.subarray(i * SEGMENT_BYTES, (i + 1) * SEGMENT_BYTES);
    const sealed = await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce(prefix, i, i === segments - 1), additionalData: owned(header), tagLength: 128 },
      key,
      owned(chunk),
    );
    parts.push(new Uint8Array(sealed));
  }
  const ciphertext = concat(...parts);
  return { ciphertext, digest: sha256(ciphertext) };
}

export interface Expected {
  record: Bytes;
  version: number;
  /** The suite the ledger recorded for the version. */
  suite?: PayloadSuite;
  /** The ciphertext's digest on the ledger: checked before anything is decrypted. */
  digest?: Bytes;
}

/** Decrypts a payload, checking its header, key commitment, digest and every segment's tag. */
export async function openPayload(dek: Bytes, ciphertext: Bytes, expected: Expected): Promise<Bytes> {
  if (expected.digest && !equal(sha256(ciphertext), expected.digest)) {
    throw new Error("the ciphertext is not the one the ledger names");
  }
  if (ciphertext.length < HEADER_BYTES + SEGMENT_TAG_BYTES) throw new Error("payload too short");
  const header = ciphertext.subarray(0, HEADER_BYTES);
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  if (!equal(header.subarray(0, 4), MAGIC)) throw new Error("not a medledger payload");
  const suite = header[4]!;
  if (suite !== PayloadSuite.Direct && suite !== PayloadSuite.Threshold) throw new Error("unknown payload suite");
  if (expected.suite !== undefined && suite !== expected.suite) throw new Error("the payload's suite is not the ledger's");
  if (!equal(header.subarray(5, 21), expected.record) || view.getUint32(21) !== expected.version) {
    throw new Error("the payload is of another record or version");
  }
  if (view.getUint32(25) !== SEGMENT_BYTES) throw new Error("the payload's segment size is not the suite's");
  if (!equal(header.subarray(29, 61), keyCommitment(dek, expected.record, expected.version))) {
    throw new Error("the data key is not the one the payload commits to");
  }
  const prefix = header.subarray(61, 68);
  const key = await aesKey(dek, "decrypt");
  const body = ciphertext.subarray(HEADER_BYTES);
  const stride = SEGMENT_BYTES + SEGMENT_TAG_BYTES;
  const segments = Math.max(1, Math.ceil(body.length / stride));
  const parts: Bytes[] = [];
  for (let i = 0; i < segments; i++) {
    const chunk = body.subarray(i * stride, (i + 1) * stride);
    if (chunk.length < SEGMENT_TAG_BYTES) throw new Error("truncated payload segment");
    try {
      const opened = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonce(prefix, i, i === segments - 1), additionalData: owned(header), tagLength: 128 },
        key,
        owned(chunk),
      );
      parts.push(new Uint8Array(opened));
    } catch {
      throw new Error(`payload segment ${i} does not authenticate`);
    }
  }
  return concat(...parts);
}

