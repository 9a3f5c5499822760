// Passphrase-encrypted secrets in the CLI keystore's format (`medledger_crypto::keystore`), so a
// member can bring their CLI identity into the browser and the browser keeps its keys the same way:
//
//   "MLKS1" ‖ kdf id (1 = Argon2id v1.3) ‖ m_cost KiB (4, BE) ‖ t_cost (4, BE) ‖ p_cost (4, BE)
//   ‖ salt (16) ‖ nonce (12)                                             = 46-byte header
//   ‖ AES-256-GCM(key = Argon2id(passphrase, salt), nonce, aad = header, secret) ‖ tag (16)
//
// The parameters are bounded before Argon2 runs (a crafted file cannot demand huge memory or
// time) and may not be weaker than the CLI's (a planted file cannot make a passphrase cheap).
// Argon2id is @noble/hashes' (plain JavaScript: no WebAssembly, so the portal's
// Content-Security-Policy needs no 'wasm-unsafe-eval'); AES-GCM is WebCrypto's.

import { argon2id } from "@noble/hashes/argon2.js";

import { type Bytes, concat, equal, owned, randomBytes, utf8 } from "./bytes.js";
import { SigningKey } from "./sign.js";
import { DecryptionKey, kemSuite } from "./wrap.js";

export const KEYSTORE_MAGIC = utf8("MLKS1");
export const KDF_ARGON2ID = 1;
export const KEYSTORE_HEADER_BYTES = 46;
export const KDF_DEFAULT = { mCostKib: 19 * 1024, tCost: 2, pCost: 1 };
const BOUNDS = { mCostKib: [19 * 1024, 256 * 1024], tCost: [2, 16], pCost: [1, 4] } as const;
const MAX_SECRET_BYTES = 64 * 1024;

function u32be(v: number): Bytes {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, v);
  return out;
}

async function keyFor(passphrase: Bytes, salt: Bytes, p: typeof KDF_DEFAULT): Promise<CryptoKey> {
  const raw = argon2id(passphrase, salt, { m: p.mCostKib, t: p.tCost, p: p.pCost, dkLen: 32, version: 0x13 });
  try {
    return await crypto.subtle.importKey("raw", owned(raw), { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  } finally {
    raw.fill(0);
  }
}

/** Seals `secret` under `passphrase` (never empty) with the CLI's parameters. */
export async function sealKeystore(passphrase: Bytes, secret: Bytes): Promise<Bytes> {
  if (passphrase.length === 0) throw new Error("a passphrase may not be empty");
  if (secret.length > MAX_SECRET_BYTES) throw new Error("secret too large for a keystore");
  const p = KDF_DEFAULT;
  const salt = randomBytes(16);
  const nonce = randomBytes(12);
  const header = concat(KEYSTORE_MAGIC, Uint8Array.of(KDF_ARGON2ID), u32be(p.mCostKib), u32be(p.tCost), u32be(p.pCost), salt, nonce);
  const key = await keyFor(passphrase, salt, p);
  const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv: owned(nonce), additionalData: owned(header) }, key, owned(secret));
  return concat(header, new Uint8Array(sealed));
}

/**
 * Opens a keystore. A wrong passphrase and an altered file are one error (AES-GCM cannot tell
 * them apart); parameters out of bounds are refused before any key derivation.
 */
export async function openKeystore(passphrase: Bytes, sealed: Bytes): Promise<Bytes> {
  if (sealed.length < KEYSTORE_HEADER_BYTES + 16 || !equal(sealed.subarray(0, 5), KEYSTORE_MAGIC)) {
    throw new Error("not a medledger keystore");
  }
  if (sealed[5] !== KDF_ARGON2ID) throw new Error("the keystore names an unknown key derivation");
  const view = new DataView(sealed.buffer, sealed.byteOffset, KEYSTORE_HEADER_BYTES);
  const p = { mCostKib: view.getUint32(6), tCost: view.getUint32(10), pCost: view.getUint32(14) };
  for (const name of ["mCostKib", "tCost", "pCost"] as const) {
    const [min, max] = BOUNDS[name];
    if (p[name] < min || p[name] > max) throw new Error("the keystore's key-derivation parameters are out of bounds");
  }
  const header = sealed.subarray(0, KEYSTORE_HEADER_BYTES);
  const key = await keyFor(passphrase, sealed.subarray(18, 34), p);
  try {
    const opened = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: owned(sealed.subarray(34, 46)), additionalData: owned(header) },
      key,
      owned(sealed.subarray(KEYSTORE_HEADER_BYTES)),
    );
    return new Uint8Array(opened);
  } catch {
    throw new Error("wrong passphrase, or the keystore is damaged");
  }
}

/** A member's keys: the signing key, the current decryption key and the earlier ones. */
export interface IdentityKeys {
  signing: SigningKey;
  encryption: DecryptionKey;
  previous: DecryptionKey[];
}

/**
 * The keys in an identity keystore's secret, as the CLI lays them out: the Ed25519 seed (32),
 * the current decryption key (32, of suite `suite`), then each earlier key as suite (1) ‖ key (32).
 */
export async function identityFromSecret(suite: number, secret: Bytes): Promise<IdentityKeys> {
  if (secret.length < 64 || (secret.length - 64) % 33 !== 0) throw new Error("the keystore is malformed");
  const signing = SigningKey.fromSeed(secret.subarray(0, 32));
  const encryption = await DecryptionKey.fromBytes(kemSuite(suite), secret.subarray(32, 64));
  const previous: DecryptionKey[] = [];
  for (let at = 64; at < secret.length; at += 33) {
    previous.push(await DecryptionKey.fromBytes(kemSuite(secret[at]!), secret.subarray(at + 1, at + 33)));
  }
  return { signing, encryption, previous };
}

/** The secret of `identityFromSecret`'s layout, for sealing. */
export function identitySecret(keys: IdentityKeys): Bytes {
  return concat(
    keys.signing.exportSeed(),
    keys.encryption.exportSecret(),
    ...keys.previous.map((k) => concat(Uint8Array.of(k.suite), k.exportSecret())),
  );
}

/** A CLI identity file (`~/.medledger/identities/ALIAS.key`). */
export interface KeyFile {
  member: string;
  role: string;
  org: string;
  suite: number;
  sealed: string;
}
