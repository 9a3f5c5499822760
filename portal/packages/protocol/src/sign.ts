// Ed25519 signatures, as the ledger makes and checks them.
//
// Transactions are signed under a namespace the way commonware-cryptography does it: the signed
// message is `varint(len(namespace)) ‖ namespace ‖ message` (unsigned LEB128 length), so a
// transaction signature can never pass for a vote or a request signature. Request signatures
// (RFC 9421) sign their signature base as it is. Verification follows ZIP-215, the validators'
// rule, so a signature this code accepts is one every validator accepts.

import { ed25519 } from "@noble/curves/ed25519.js";

import { type Bytes, concat } from "./bytes.js";

export const SIGNING_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

/** The bytes signed for `message` under `namespace`. */
export function namespaced(namespace: Bytes, message: Bytes): Bytes {
  const prefix: number[] = [];
  let n = namespace.length;
  do {
    const low = n & 0x7f;
    n >>>= 7;
    prefix.push(n > 0 ? low | 0x80 : low);
  } while (n > 0);
  return concat(Uint8Array.from(prefix), namespace, message);
}

export class SigningKey {
  private constructor(private readonly seed: Bytes) {}

  /** From a 32-byte seed (what a keystore holds). */
  static fromSeed(seed: Bytes): SigningKey {
    if (seed.length !== SIGNING_KEY_BYTES) throw new Error("an Ed25519 seed is 32 bytes");
    return new SigningKey(seed.slice());
  }

  static generate(): SigningKey {
    return new SigningKey(ed25519.utils.randomSecretKey());
  }

  publicKey(): Bytes {
    return ed25519.getPublicKey(this.seed);
  }

  /** Signs `message` as it is (RFC 9421 signature bases). */
  signRaw(message: Bytes): Bytes {
    return ed25519.sign(message, this.seed);
  }

  /** Signs `message` under `namespace` (transactions). */
  sign(namespace: Bytes, message: Bytes): Bytes {
    return this.signRaw(namespaced(namespace, message));
  }

  /** The seed, for a keystore to seal. */
  exportSeed(): Bytes {
    return this.seed.slice();
  }

  /** Overwrites the seed: the key is unusable afterwards. */
  wipe(): void {
    this.seed.fill(0);
  }
}

export function verifyRaw(publicKey: Bytes, message: Bytes, signature: Bytes): boolean {
  if (publicKey.length !== 32 || signature.length !== SIGNATURE_BYTES) return false;
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: true });
  } catch {
    return false;
  }
}

export function verify(publicKey: Bytes, namespace: Bytes, message: Bytes, signature: Bytes): boolean {
  return verifyRaw(publicKey, namespaced(namespace, message), signature);
}
