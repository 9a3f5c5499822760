// Enrolment by request (DESIGN §11): a member makes their keys on their own device, from a
// recovery code they write down (the CLI's derivation, so `medledger id recover` restores the
// same keys), and hands their organisation's admin a request signed with the new keys; the admin
// checks it and submits the Enroll transaction. No admin ever holds a member's secret.

import { type Bytes, fromHex, randomBytes, toHex, utf8 } from "./bytes.js";
import { type Writer, encode } from "./borsh.js";
import { sha256 } from "./hash.js";
import { type MemberId, type KeyHolder, type KeySubject, writeHash32, writeId16 } from "./ids.js";
import { type IdentityKeys, identitySecret, sealKeystore, type KeyFile } from "./keystore.js";
import { SigningKey, verify } from "./sign.js";
import { encodeSidecar } from "./sidecar.js";
import { DecryptionKey, KemSuite, encryptionKeyFromJson, kemSuiteName, seal, writeEncryptionKey } from "./wrap.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";

/** The roles in the ledger's order (their borsh index). */
export const ROLES = ["patient", "doctor", "nurse", "admin", "auditor", "emergency"] as const;
export type Role = (typeof ROLES)[number];

/** An encryption key in its JSON form. */
export interface KeyJson {
  suite: string | number;
  bytes: string;
}

/** The Enroll transaction, in its JSON form (as an enrolment request carries it). */
export interface Enroll {
  member: MemberId;
  org: string;
  role: Role;
  /** Ed25519 public key, hex. */
  signing_key: string;
  encryption_key: KeyJson;
  display_name: string | null;
  /** A patient's first chart key (epoch 0). */
  chart_key: KeyJson | null;
  custodial: boolean;
}

export interface EnrolmentRequest {
  format: string;
  chain_id: string;
  enroll: Enroll;
  /** The borsh sidecar, hex (a patient's chart-key envelope for themselves). */
  sidecar: string | null;
  /** Ed25519 by `enroll.signing_key` over the chain id, the Enroll and the sidecar, hex. */
  signature: string;
}

export const ENROLMENT_REQUEST_FORMAT = "medledger-enrolment-request/v1";
const REQUEST_NAMESPACE = utf8("medledger/enrolment-request/v1");
const SECRET_SALT = utf8("medledger/local-secret/v1");
const SIGN_LABEL = utf8("medledger/recovery-code/signing/v1");
const ENCRYPT_LABEL = utf8("medledger/recovery-code/encryption/v1");
const ORG_ID = /^[a-z0-9_-]{1,32}$/;

export function writeEnroll(w: Writer, e: Enroll): void {
  writeId16(w, e.member, "member");
  if (!ORG_ID.test(e.org)) throw new Error("organisation ids are 1 to 32 characters of a-z, 0-9, '-' and '_'");
  w.bytes(utf8(e.org));
  const role = ROLES.indexOf(e.role);
  if (role < 0) throw new Error(`unknown role ${String(e.role)}`);
  w.u8(role);
  w.fixed(fromHex(e.signing_key), 32);
  writeEncryptionKey(w, encryptionKeyFromJson(e.encryption_key));
  w.option(e.display_name, (w, n) => w.bytes(utf8(n)));
  w.option(e.chart_key, (w, k) => writeEncryptionKey(w, encryptionKeyFromJson(k)));
  w.bool(e.custodial);
}

/** What the member signs: borsh of (chain id, Enroll, sidecar). */
function signedBytes(chainId: string, enroll: Enroll, sidecar: Bytes | null): Bytes {
  return encode((w) => {
    writeHash32(w, chainId, "chain id");
    writeEnroll(w, enroll);
    w.option(sidecar, (w, s) => w.bytes(s));
  });
}

/** A recovery code as it is written down: 9 groups of 8 hex digits, the last a checksum. */
export function revealRecoveryCode(seed: Bytes): string {
  const check = sha256(utf8("medledger/recovery-code/check"), seed).subarray(0, 4);
  const all = new Uint8Array([...seed, ...check]);
  const groups: string[] = [];
  for (let i = 0; i < all.length; i += 4) groups.push(toHex(all.subarray(i, i + 4)));
  return groups.join("-");
}

/** The member's keys a recovery code stands for (as the CLI derives them). */
export async function keysFromRecoveryCode(seed: Bytes, suite: KemSuite = KemSuite.XWing): Promise<IdentityKeys> {
  if (seed.length !== 32) throw new Error("a recovery code is 32 bytes");
  const signing = hkdf(nobleSha256, seed, SECRET_SALT, SIGN_LABEL, 32);
  const encryption = hkdf(nobleSha256, seed, SECRET_SALT, ENCRYPT_LABEL, 32);
  try {
    return { signing: SigningKey.fromSeed(signing), encryption: await DecryptionKey.fromBytes(suite, encryption), previous: [] };
  } finally {
    signing.fill(0);
    encryption.fill(0);
  }
}

/** What a member makes on their device: their keys, the code that restores them, the key file and the request. */
export interface NewMember {
  member: MemberId;
  keys: IdentityKeys;
  recoveryCode: string;
  /** The CLI's key file (`identities/ALIAS.key`): the keys sealed under the passphrase. */
  keyFile: KeyFile;
  request: EnrolmentRequest;
}

/** Makes a member's keys (from a fresh recovery code) and their signed enrolment request. */
export async function requestEnrolment(
  chainId: string,
  role: Role,
  org: string,
  displayName: string | null,
  passphrase: string,
): Promise<NewMember> {
  if (!ROLES.includes(role)) throw new Error(`unknown role ${String(role)}`);
  if (!ORG_ID.test(org)) throw new Error("organisation ids are 1 to 32 characters of a-z, 0-9, '-' and '_'");
  const name = displayName?.trim() || null;
  if (role === "patient" && name) throw new Error("patients have no public display name");
  if (name && name.length > 128) throw new Error("a display name is at most 128 characters");
  if (passphrase.length === 0) throw new Error("a passphrase may not be empty");
  const seed = randomBytes(32);
  const recoveryCode = revealRecoveryCode(seed);
  const keys = await keysFromRecoveryCode(seed);
  seed.fill(0);
  const member = toHex(randomBytes(16));
  const publicKey = (k: { suite: KemSuite; bytes: Bytes }): KeyJson => ({ suite: kemSuiteName(k.suite), bytes: toHex(k.bytes) });
  let sidecar: Bytes | null = null;
  let chartKey: KeyJson | null = null;
  if (role === "patient") {
    // The first chart key, wrapped for the patient alone.
    const chart = await DecryptionKey.generate(KemSuite.XWing);
    const secret = new Uint8Array([chart.suite, ...chart.exportSecret()]);
    const holder: KeyHolder = { type: "member", member };
    const subject: KeySubject = { type: "chart", patient: member, epoch: 0 };
    const chainIdBytes = fromHex(chainId);
    const envelope = await seal(keys.encryption.publicKey, secret, { chainId: chainIdBytes, subject, holder });
    secret.fill(0);
    chartKey = publicKey(chart.publicKey);
    chart.wipe();
    sidecar = encodeSidecar({ envelopes: [{ holder, subject, envelope }], metadata: null });
  }
  const enroll: Enroll = {
    member,
    org,
    role,
    signing_key: toHex(keys.signing.publicKey()),
    encryption_key: publicKey(keys.encryption.publicKey),
    display_name: role === "patient" ? null : name,
    chart_key: chartKey,
    custodial: false,
  };
  const signature = keys.signing.sign(REQUEST_NAMESPACE, signedBytes(chainId, enroll, sidecar));
  const secret = identitySecret(keys);
  const sealed = await sealKeystore(utf8(passphrase), secret);
  secret.fill(0);
  return {
    member,
    keys,
    recoveryCode,
    keyFile: { member, role, org, suite: keys.encryption.suite, sealed: toHex(sealed) },
    request: {
      format: ENROLMENT_REQUEST_FORMAT,
      chain_id: chainId,
      enroll,
      sidecar: sidecar ? toHex(sidecar) : null,
      signature: toHex(signature),
    },
  };
}

/** Largest enrolment request accepted (as the CLI). */
export const ENROLMENT_REQUEST_BYTES_MAX = 64 * 1024;

/**
 * The Enroll and sidecar of a request, once it is for `chainId`, signed by the signing key it
 * enrols, and shaped as an enrolment by request is (not custodial).
 */
export function verifyEnrolmentRequest(text: string, chainId: string): { enroll: Enroll; sidecar: Bytes | null } {
  if (text.length > ENROLMENT_REQUEST_BYTES_MAX) throw new Error("not an enrolment request");
  let request: EnrolmentRequest;
  try {
    request = JSON.parse(text) as EnrolmentRequest;
  } catch {
    throw new Error("not an enrolment request");
  }
  if (request?.format !== ENROLMENT_REQUEST_FORMAT || typeof request.enroll !== "object") throw new Error("not an enrolment request");
  if (request.chain_id !== chainId) throw new Error("the enrolment request is for another network");
  if (request.enroll.custodial) throw new Error("an enrolment by request is never custodial");
  const sidecar = request.sidecar ? fromHex(request.sidecar) : null;
  let signed: Bytes;
  try {
    signed = signedBytes(chainId, request.enroll, sidecar);
  } catch (e) {
    throw new Error(`the enrolment request is malformed: ${e instanceof Error ? e.message : String(e)}`);
  }
  const ok = /^[0-9a-f]{128}$/.test(request.signature ?? "") && verify(fromHex(request.enroll.signing_key), REQUEST_NAMESPACE, signed, fromHex(request.signature));
  if (!ok) throw new Error("the enrolment request is not signed by the keys it enrols, or was altered");
  return { enroll: request.enroll, sidecar };
}
