// Keys that change hands (DESIGN §8): a patient held in an organisation's custody (enrolled
// without a device, e.g. migrated from an EHR) is released by an admin with a one-time code and
// claims the identity on their own device, where new keys replace the custody keys and the chart
// moves to a key the custodian never held; a member who lost their keys makes new ones on a new
// device and asks an admin to approve their recovery, which completes after the network's delay
// unless the member objects with their current keys. No admin ever holds the new keys. The CLI's
// counterparts are `crates/sdk/src/custody.rs` and `crates/sdk/src/ops/identity.rs`.

import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";

import { type Bytes, equal, fromHex, owned, randomBytes, toHex, utf8 } from "./bytes.js";
import type { Client, Committed, Identity } from "./client.js";
import { nextChartEpoch } from "./consent.js";
import { type KeyJson, keysFromRecoveryCode, revealRecoveryCode } from "./enrolment.js";
import { sha256 } from "./hash.js";
import type { MemberId } from "./ids.js";
import { type IdentityKeys, type KeyFile, identityFromSecret, identitySecret, openKeystore, sealKeystore } from "./keystore.js";
import { KemSuite, kemSuiteName } from "./wrap.js";

export const CLAIM_FORMAT = "medledger-claim/v1";
export const RECOVERY_REQUEST_FORMAT = "medledger-recovery-request/v1";
const CLAIM_FILE_BYTES_MAX = 64 * 1024;
const RECOVERY_REQUEST_BYTES_MAX = 16 * 1024;
const CUSTODY_FILE_BYTES_MAX = 64 * 1024;
const ORG_ID = /^[a-z0-9_-]{1,32}$/;

/** A claim file: a released patient's custody keys sealed (as key files are) under the one-time code. */
export interface ClaimFile {
  format: string;
  member: MemberId;
  org: string;
  suite: number;
  sealed: string;
}

/** A member's request, from a new device, that an admin approve the recovery of their keys. */
export interface RecoveryRequest {
  format: string;
  member: MemberId;
  /** Ed25519 public key, hex. */
  signing_key: string;
  encryption_key: KeyJson;
}

function groups(bytes: Bytes): string {
  const out: string[] = [];
  for (let i = 0; i < bytes.length; i += 4) out.push(toHex(bytes.subarray(i, i + 4)));
  return out.join("-");
}

/** A one-time claim code (16 bytes) as typed: groups of hex digits, dashes and spaces ignored. */
export function parseClaimCode(text: string): Bytes {
  const digits = text.replace(/[-\s]/g, "").toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(digits)) throw new Error("a claim code is 4 groups of 8 hex digits, as it was handed to you");
  return fromHex(digits);
}

/** What a claim shows the ledger of its code: a one-way function of it (the code opens the claim file). */
export function claimProof(code: Bytes): Bytes {
  return sha256(utf8("medledger/claim-proof/v1"), code).subarray(0, 16);
}

/** The hash a claim's proof must match, bound to the member (so a code serves one only). */
export function claimCodeHash(member: MemberId, proof: Bytes): string {
  return toHex(sha256(utf8("medledger/claim-code/v1"), fromHex(member), proof));
}

/**
 * Opens an entry of an organisation's custody keystore (`custody/ORG/MEMBER.key` in the home of
 * whoever runs its migrations), sealed under a key derived from the secret of the admin who
 * enrolled it (HKDF-SHA256, then AES-256-GCM bound to the member id, as the CLI's `LocalKey`).
 */
export async function openCustodyEntry(admin: IdentityKeys, org: string, text: string): Promise<{ member: MemberId; suite: number; secret: Bytes }> {
  if (text.length > CUSTODY_FILE_BYTES_MAX) throw new Error("not a custody keystore entry");
  if (!ORG_ID.test(org)) throw new Error("not an organisation id");
  let file: { member?: unknown; suite?: unknown; sealed?: unknown };
  try {
    file = JSON.parse(text) as typeof file;
  } catch {
    throw new Error("not a custody keystore entry");
  }
  if (typeof file.member !== "string" || !/^[0-9a-f]{32}$/.test(file.member) || typeof file.suite !== "number" || typeof file.sealed !== "string") {
    throw new Error("not a custody keystore entry");
  }
  const sealed = fromHex(file.sealed);
  const magic = utf8("MLL1");
  if (sealed.length < 4 + 12 + 16 || !equal(sealed.subarray(0, 4), magic)) throw new Error("the custody keystore entry is damaged");
  const adminSecret = identitySecret(admin);
  const raw = hkdf(nobleSha256, adminSecret, utf8("medledger/local/v1"), utf8(`medledger/custody/${org}`), 32);
  adminSecret.fill(0);
  try {
    const key = await crypto.subtle.importKey("raw", owned(raw), { name: "AES-GCM" }, false, ["decrypt"]);
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: owned(sealed.subarray(4, 16)), additionalData: owned(fromHex(file.member)) },
      key,
      owned(sealed.subarray(16)),
    );
    return { member: file.member, suite: file.suite, secret: new Uint8Array(plain) };
  } catch {
    throw new Error("the custody keystore entry does not open with this admin's keys");
  } finally {
    raw.fill(0);
  }
}

/**
 * An admin releases a patient from custody: a one-time code (for the patient, in person) and a
 * claim file holding the custody keys sealed under it; the release (the hash of the code's
 * proof) committed on the ledger. The admin then destroys the custody entry.
 */
export async function releaseCustody(
  client: Client,
  admin: Identity & { org: string },
  custodyText: string,
): Promise<{ member: MemberId; code: string; claimFile: ClaimFile; committed: Committed }> {
  const entry = await openCustodyEntry(admin.keys, admin.org, custodyText);
  const code = randomBytes(16);
  try {
    const sealed = await sealKeystore(code, entry.secret);
    const claimFile: ClaimFile = { format: CLAIM_FORMAT, member: entry.member, org: admin.org, suite: entry.suite, sealed: toHex(sealed) };
    const committed = await client.transact(admin, { type: "custody_release", member: entry.member, code_hash: claimCodeHash(entry.member, claimProof(code)) });
    return { member: entry.member, code: groups(code), claimFile, committed };
  } finally {
    entry.secret.fill(0);
    code.fill(0);
  }
}

/** Fresh keys from a fresh recovery code, keeping `previous` to open what was wrapped for them. */
async function freshKeys(suite: number, previous: IdentityKeys | null): Promise<{ keys: IdentityKeys; recoveryCode: string }> {
  const seed = randomBytes(32);
  try {
    const keys = await keysFromRecoveryCode(seed, suite);
    if (previous) keys.previous = [previous.encryption, ...previous.previous];
    return { keys, recoveryCode: revealRecoveryCode(seed) };
  } finally {
    seed.fill(0);
  }
}

async function keyFileOf(member: MemberId, role: string, org: string, keys: IdentityKeys, passphrase: string): Promise<KeyFile> {
  const secret = identitySecret(keys);
  try {
    return { member, role, org, suite: keys.encryption.suite, sealed: toHex(await sealKeystore(utf8(passphrase), secret)) };
  } finally {
    secret.fill(0);
  }
}

/**
 * A patient claims their identity from a claim file and its one-time code: new keys (from a new
 * recovery code) replace the custody keys, signed with them; the chart moves to a fresh key
 * epoch the custodian never held, wrapped for the new key. Returns the new key file (sealed under
 * `passphrase`; it keeps the custody key too, for what was wrapped for it) and the recovery code.
 */
export async function claimIdentity(
  client: Client,
  claimText: string,
  codeText: string,
  passphrase: string,
): Promise<{ member: MemberId; keyFile: KeyFile; recoveryCode: string; committed: Committed }> {
  if (passphrase.length < 8) throw new Error("choose a passphrase of 8 characters or more");
  if (claimText.length > CLAIM_FILE_BYTES_MAX) throw new Error("not a claim file");
  let file: ClaimFile;
  try {
    file = JSON.parse(claimText) as ClaimFile;
  } catch {
    throw new Error("not a claim file");
  }
  if (file.format !== CLAIM_FORMAT || !/^[0-9a-f]{32}$/.test(String(file.member)) || !ORG_ID.test(String(file.org))) {
    throw new Error("not a claim file");
  }
  const code = parseClaimCode(codeText);
  let secret: Bytes;
  try {
    secret = await openKeystore(code, fromHex(file.sealed));
  } catch {
    throw new Error("the claim code does not open this claim file");
  }
  const custody = await identityFromSecret(file.suite, secret);
  secret.fill(0);
  const me: Identity = { member: file.member, keys: custody };
  const next = await freshKeys(file.suite, custody);
  const { newChart, envelopes } = await nextChartEpoch(client, me, file.member, { patientKey: next.keys.encryption.publicKey });
  const committed = await client.transact(
    me,
    {
      type: "rotate_keys",
      signing_key: toHex(next.keys.signing.publicKey()),
      encryption_key: { suite: kemSuiteName(next.keys.encryption.suite), bytes: toHex(next.keys.encryption.publicKey.bytes) },
      reason: { type: "claim", proof: Array.from(claimProof(code)) },
      new_chart: newChart,
    },
    { envelopes, metadata: null },
  );
  code.fill(0);
  const keyFile = await keyFileOf(file.member, "patient", file.org, next.keys, passphrase);
  return { member: file.member, keyFile, recoveryCode: next.recoveryCode, committed };
}

/**
 * A member who lost their keys (and their recovery code) makes new ones on this device: the key
 * file (sealed under `passphrase`), the recovery code, and the request an admin of their
 * organisation approves. The new keys work once the recovery completes.
 */
export async function requestRecovery(
  member: MemberId,
  role: string,
  org: string,
  passphrase: string,
): Promise<{ keyFile: KeyFile; recoveryCode: string; request: RecoveryRequest }> {
  if (!/^[0-9a-f]{32}$/.test(member)) throw new Error("a member id is 32 hexadecimal characters");
  if (!ORG_ID.test(org)) throw new Error("organisation ids are 1 to 32 characters of a-z, 0-9, '-' and '_'");
  if (passphrase.length < 8) throw new Error("choose a passphrase of 8 characters or more");
  const next = await freshKeys(KemSuite.XWing, null);
  const request: RecoveryRequest = {
    format: RECOVERY_REQUEST_FORMAT,
    member,
    signing_key: toHex(next.keys.signing.publicKey()),
    encryption_key: { suite: kemSuiteName(next.keys.encryption.suite), bytes: toHex(next.keys.encryption.publicKey.bytes) },
  };
  return { keyFile: await keyFileOf(member, role, org, next.keys, passphrase), recoveryCode: next.recoveryCode, request };
}

/** Reads a recovery request as handed over (its format, its member and keys well formed). */
export function parseRecoveryRequest(text: string): RecoveryRequest {
  let request: RecoveryRequest;
  try {
    if (text.length > RECOVERY_REQUEST_BYTES_MAX) throw new Error();
    request = JSON.parse(text) as RecoveryRequest;
  } catch {
    throw new Error("not a recovery request");
  }
  if (request.format !== RECOVERY_REQUEST_FORMAT || !/^[0-9a-f]{32}$/.test(String(request.member)) || !/^[0-9a-f]{64}$/.test(String(request.signing_key))) {
    throw new Error("not a recovery request");
  }
  return request;
}

/** An admin asks for `request`'s member's keys to be replaced by its keys (after the network's delay). */
export function approveRecovery(client: Client, admin: Identity, request: RecoveryRequest): Promise<Committed> {
  return client.transact(admin, {
    type: "recovery",
    member: request.member,
    action: { type: "request", signing_key: request.signing_key, encryption_key: request.encryption_key },
  });
}

/** The member completes their recovery with the new keys (`complete`), or cancels one they did not ask for with their current keys. */
export function finishRecovery(client: Client, me: Identity, complete: boolean): Promise<Committed> {
  return client.transact(me, { type: "recovery", member: me.member, action: { type: complete ? "complete" : "cancel" } });
}

