// The interop vectors' shape and the test material both sides derive the same way.

import { readFileSync } from "node:fs";

import { type Bytes, concat, utf8 } from "../src/bytes.js";
import { sha256 } from "../src/hash.js";

export interface Vectors {
  format: string;
  signing: { seed: string; public_key: string; namespace: string; message: string; signature: string }[];
  wrap: {
    suite: number;
    secret_key: string;
    public_key: string;
    chain_id: string;
    subject: import("../src/ids.js").KeySubject;
    holder: import("../src/ids.js").KeyHolder;
    info: string;
    aad: string;
    envelope: string;
    secret: string;
  }[];
  payload: { dek: string; record: string; version: number; plaintext_len: number; ciphertext: string; digest: string }[];
  httpsig: {
    seed: string;
    keyid: string;
    method: string;
    url: string;
    body: string;
    created_ms: number;
    nonce: string;
    headers: [string, string][];
  }[];
  transactions: { seed: string; json: import("../src/tx.js").TxBody; body: string; transaction: string; id: string }[];
  keystores: { passphrase: string; sealed: string; secret: string }[];
  threshold: {
    secret: string;
    threshold: number;
    verifier: string[];
    shares: string[];
    k_env: string;
    record: string;
    version: number;
    dek: string;
  }[];
}

/** `portal/vectors/NAME.json` (the tests run from `portal/dist/test/`). */
export function vectorsPath(name: string): URL {
  return new URL(`../../vectors/${name}.json`, import.meta.url);
}

export function readVectors(name: string): Vectors {
  return JSON.parse(readFileSync(vectorsPath(name), "utf8")) as Vectors;
}

/** Byte `i` of a payload vector's plaintext: `i % 251`, as the Rust side makes it. */
export function plaintext(len: number): Bytes {
  return Uint8Array.from({ length: len }, (_, i) => i % 251);
}

/** Seeded test material of the TypeScript side's vectors. */
export function seed(n: number): Bytes {
  return sha256(concat(utf8("medledger/interop-vectors-ts/"), Uint8Array.of(n)));
}
