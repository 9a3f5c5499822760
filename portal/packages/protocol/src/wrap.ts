// Key wrapping with HPKE (RFC 9180) in base mode, as `medledger_crypto::wrap` does it.
//
// A short secret (a record's data key, a chart or team key) is sealed for one recipient's public
// key. The HPKE `info` is "medledger/wrap/v1" ‖ suite id ‖ chain id ‖ subject id ‖ version
// (u64, big-endian) and the AEAD's associated data is the recipient id, so an envelope opens only
// on the chain, for the subject, version and recipient it was made for.
//
// Suites: X-Wing (id 1, KEM 0x647a, draft-06: the secret key is the 32-byte seed, expanded as
// that draft says; never DeriveKeyPair, which differs between implementations) and
// DHKEM(X25519, HKDF-SHA256) (id 2), both with HKDF-SHA256 and AES-256-GCM.

import { Aes256Gcm, CipherSuite, HkdfSha256 } from "@hpke/core";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { XWing } from "@hpke/hybridkem-x-wing";
import { x25519 } from "@noble/curves/ed25519.js";

import { type Bytes, concat, fromHex, owned, randomBytes, utf8 } from "./bytes.js";
import { Reader, type Writer, encode } from "./borsh.js";
import { type KeyHolder, type KeySubject, holderContextId, subjectContextId, subjectVersion } from "./ids.js";

export enum KemSuite {
  XWing = 1,
  X25519 = 2,
}

const SIZES: Record<KemSuite, { publicKey: number; secretKey: number; enc: number }> = {
  [KemSuite.XWing]: { publicKey: 1216, secretKey: 32, enc: 1120 },
  [KemSuite.X25519]: { publicKey: 32, secretKey: 32, enc: 32 },
};

export const INFO_LABEL = "medledger/wrap/v1";
export const ENVELOPE_TAG_BYTES = 16;
/** The largest secret an envelope wraps (a data key, a chart key, a validator's two shares). */
export const MAX_WRAPPED_SECRET_BYTES = 160;

export function kemSuite(id: number): KemSuite {
  if (id !== KemSuite.XWing && id !== KemSuite.X25519) throw new Error(`unknown KEM suite ${id}`);
  return id;
}

function cipherSuite(suite: KemSuite): CipherSuite {
  const kem = suite === KemSuite.XWing ? new XWing() : new DhkemX25519HkdfSha256();
  return new CipherSuite({ kem, kdf: new HkdfSha256(), aead: new Aes256Gcm() });
}

/** A recipient's public key and its suite (`EncryptionKey`). */
export interface EncryptionKey {
  suite: KemSuite;
  bytes: Bytes;
}

/** A wrapped secret (`Envelope`): the encapsulated key and the sealed secret with its tag. */
export interface Envelope {
  suite: KemSuite;
  encapsulatedKey: Bytes;
  ciphertext: Bytes;
}

export function writeEncryptionKey(w: Writer, key: EncryptionKey): void {
  w.u8(key.suite);
  w.bytes(key.bytes);
}

/** A suite by its JSON name (`"xwing"`, `"x25519"`) or its id. */
export function kemSuiteOf(name: string | number): KemSuite {
  if (name === "xwing" || name === KemSuite.XWing) return KemSuite.XWing;
  if (name === "x25519" || name === KemSuite.X25519) return KemSuite.X25519;
  throw new Error(`unknown KEM suite ${name}`);
}

/** A suite's JSON name. */
export function kemSuiteName(suite: KemSuite): "xwing" | "x25519" {
  return suite === KemSuite.XWing ? "xwing" : "x25519";
}

/** `EncryptionKey` in its JSON form (`{"suite": "xwing", "bytes": "<hex>"}` and the like). */
export function encryptionKeyFromJson(json: { suite: string | number; bytes: string }): EncryptionKey {
  const suite = kemSuiteOf(json.suite);
  const bytes = fromHex(json.bytes);
  if (bytes.length !== SIZES[suite].publicKey) throw new Error("encryption key: wrong length for its suite");
  return { suite, bytes };
}

export function encodeEnvelope(e: Envelope): Bytes {
  return encode((w) => {
    w.u8(e.suite);
    w.bytes(e.encapsulatedKey);
    w.bytes(e.ciphertext);
  });
}

/** Decodes an envelope, checking every length against its suite before reading it. */
export function decodeEnvelope(bytes: Bytes): Envelope {
  const r = new Reader(bytes);
  const suite = kemSuite(r.u8());
  const enc = r.bytes(SIZES[suite].enc);
  if (enc.length !== SIZES[suite].enc) throw new Error("envelope: wrong encapsulated key length");
  const ciphertext = r.bytes(MAX_WRAPPED_SECRET_BYTES + ENVELOPE_TAG_BYTES);
  if (ciphertext.length < ENVELOPE_TAG_BYTES) throw new Error("envelope: ciphertext shorter than its tag");
  r.end();
  return { suite, encapsulatedKey: enc, ciphertext };
}

/** What an envelope of the ledger's key hierarchy is bound to. */
export interface WrapContext {
  chainId: Bytes;
  subject: KeySubject;
  holder: KeyHolder;
}

/**
 * A binding given by its hashes: the subject's and the recipient's context ids (32 bytes each)
 * and the version, for what is not a key-hierarchy envelope (a validator's released share).
 */
export interface RawBinding {
  chainId: Bytes;
  subjectId: Bytes;
  version: number;
  recipientId: Bytes;
}

export type Binding = WrapContext | RawBinding;

function raw(ctx: Binding): RawBinding {
  if ("subjectId" in ctx) return ctx;
  return {
    chainId: ctx.chainId,
    subjectId: subjectContextId(ctx.subject),
    version: subjectVersion(ctx.subject),
    recipientId: holderContextId(ctx.holder),
  };
}

export function wrapInfo(suite: KemSuite, ctx: Binding): Bytes {
  const b = raw(ctx);
  if (b.chainId.length !== 32) throw new Error("a chain id is 32 bytes");
  const version = new Uint8Array(8);
  new DataView(version.buffer).setBigUint64(0, BigInt(b.version));
  return concat(utf8(INFO_LABEL), Uint8Array.of(suite), b.chainId, b.subjectId, version);
}

export function wrapAad(ctx: Binding): Bytes {
  return raw(ctx).recipientId;
}

/** Seals `secret` for `recipient`, bound to `ctx`. */
export async function seal(recipient: EncryptionKey, secret: Bytes, ctx: Binding): Promise<Envelope> {
  if (secret.length > MAX_WRAPPED_SECRET_BYTES) throw new Error("wrapped secret too long");
  if (recipient.bytes.length !== SIZES[recipient.suite].publicKey) throw new Error("encryption key: wrong length");
  const suite = cipherSuite(recipient.suite);
  const publicKey = await suite.kem.deserializePublicKey(owned(recipient.bytes));
  const sealed = await suite.seal(
    { recipientPublicKey: publicKey, info: owned(wrapInfo(recipient.suite, ctx)) },
    owned(secret),
    owned(wrapAad(ctx)),
  );
  return { suite: recipient.suite, encapsulatedKey: new Uint8Array(sealed.enc), ciphertext: new Uint8Array(sealed.ct) };
}

/** A recipient's secret key: the 32-byte seed (X-Wing) or scalar (X25519) and its public key. */
export class DecryptionKey {
  private constructor(
    readonly suite: KemSuite,
    private readonly secret: Bytes,
    readonly publicKey: EncryptionKey,
  ) {}

  static async fromBytes(suite: KemSuite, secret: Bytes): Promise<DecryptionKey> {
    if (secret.length !== SIZES[suite].secretKey) throw new Error("decryption key: wrong length");
    let publicBytes: Bytes;
    if (suite === KemSuite.XWing) {
      const pair = await new XWing().generateKeyPairDerand(owned(secret));
      publicBytes = new Uint8Array(await new XWing().serializePublicKey(pair.publicKey));
    } else {
      publicBytes = x25519.getPublicKey(secret);
    }
    return new DecryptionKey(suite, secret.slice(), { suite, bytes: publicBytes });
  }

  static async generate(suite: KemSuite = KemSuite.XWing): Promise<DecryptionKey> {
    return DecryptionKey.fromBytes(suite, randomBytes(SIZES[suite].secretKey));
  }

  /** The secret bytes, for a keystore to seal. */
  exportSecret(): Bytes {
    return this.secret.slice();
  }

  wipe(): void {
    this.secret.fill(0);
  }

  /** Opens `envelope`, checking it was made for `ctx`; throws on any mismatch or alteration. */
  async open(envelope: Envelope, ctx: Binding): Promise<Bytes> {
    if (envelope.suite !== this.suite) throw new Error("the envelope is of another suite than the key");
    if (envelope.encapsulatedKey.length !== SIZES[this.suite].enc) throw new Error("envelope: wrong length");
    const suite = cipherSuite(this.suite);
    const recipientKey = await suite.kem.deserializePrivateKey(owned(this.secret));
    try {
      const opened = await suite.open(
        { recipientKey, enc: owned(envelope.encapsulatedKey), info: owned(wrapInfo(this.suite, ctx)) },
        owned(envelope.ciphertext),
        owned(wrapAad(ctx)),
      );
      return new Uint8Array(opened);
    } catch {
      throw new Error("the envelope does not open with this key for this context");
    }
  }
}
