// Transactions: the JSON form the validators' API shows, their canonical (borsh) encoding, the
// signature over it and the id, as `medledger_ledger::tx` makes them.
//
// The kinds a member's browser sends are encoded here (and an admin's enrolment of a member who
// asked); the others (governance, validators' own re-sharing steps) are refused by `writeKind`
// rather than guessed at.

import { type Bytes, concat, fromHexN, toHex, utf8 } from "./bytes.js";
import { type Enroll, type KeyJson, writeEnroll } from "./enrolment.js";
import { type Writer, encode } from "./borsh.js";
import { sha256 } from "./hash.js";
import { type Hash32, type KeyHolder, type MemberId, type RecordId, writeHash32, writeId16, writeKeyHolder } from "./ids.js";
import type { SigningKey } from "./sign.js";
import { encryptionKeyFromJson, writeEncryptionKey } from "./wrap.js";

export const TX_NAMESPACE = utf8("medledger/tx/v1");

/** HL7 v3 PurposeOfUse codes, in the ledger's order. */
export const PURPOSES = ["TREAT", "ETREAT", "HPAYMT", "HOPERAT", "PATRQT", "HRESCH", "LEGAL"] as const;
export type PurposeOfUse = (typeof PURPOSES)[number];

/** Break-glass reasons, in the ledger's order. */
export const EMERGENCY_REASONS = ["unconscious", "life-threatening", "unable-to-consent", "mass-casualty"] as const;
export type EmergencyReason = (typeof EMERGENCY_REASONS)[number];

/** One record, the whole chart, or the chart's sensitive records (outside chart-wide grants). */
export type GrantScope = "all" | "sensitive" | { record: RecordId };

export interface NewChartEpoch {
  /** The JSON form of an `EncryptionKey`: `{"suite": "xwing", "bytes": "<hex>"}`. */
  public_key: { suite: string | number; bytes: string };
  recipients: MemberId[];
}

export interface RegisterRecord {
  record: RecordId;
  patient: MemberId;
  version: number;
  digest: Hash32;
  size_bytes: number;
  recipients: KeyHolder[];
}

export type TxKind =
  | ({ type: "enroll" } & Enroll)
  | ({ type: "register_record" } & RegisterRecord)
  | ({ type: "append_version" } & RegisterRecord)
  | {
      type: "grant";
      patient: MemberId;
      grantee: MemberId;
      scope: GrantScope;
      write: boolean;
      expires_at: number | null;
      chart_epoch: number | null;
      new_chart: NewChartEpoch | null;
    }
  | { type: "revoke"; patient: MemberId; grantee: MemberId; scope: GrantScope; new_chart: NewChartEpoch | null }
  | { type: "record_access"; record: RecordId; version: number; purpose: PurposeOfUse }
  | { type: "break_glass"; patient: MemberId; reason: EmergencyReason | null; duration_ms: number }
  | { type: "erase"; record: RecordId }
  | { type: "suspend"; member: MemberId; suspended: boolean }
  | { type: "legal_hold"; patient: MemberId; record: RecordId | null; hold: boolean }
  | {
      type: "delegate";
      patient: MemberId;
      delegate: MemberId;
      appoint: boolean;
      chart_epoch: number | null;
      new_chart: NewChartEpoch | null;
    }
  | { type: "team_create"; team: MemberId; public_key: KeyJson; members: MemberId[] }
  | { type: "team_add"; team: MemberId; member: MemberId }
  | { type: "team_remove"; team: MemberId; member: MemberId; public_key: KeyJson }
  | {
      type: "rotate_keys";
      /** Ed25519 public key, hex. */
      signing_key: string;
      encryption_key: KeyJson;
      reason: KeyChange;
      new_chart: NewChartEpoch | null;
    }
  | { type: "custody_release"; member: MemberId; code_hash: Hash32 }
  | { type: "recovery"; member: MemberId; action: RecoveryAction };

/** Why a member's keys change (a claim carries the proof of its one-time code: 16 bytes). */
export type KeyChange = { type: "routine" } | { type: "recovery_code" } | { type: "claim"; proof: number[] };

/** A recovery's step: the admin's request with the member's new public keys, or the member's answer. */
export type RecoveryAction =
  | { type: "request"; signing_key: string; encryption_key: KeyJson }
  | { type: "cancel" }
  | { type: "complete" };

export interface TxBody {
  chain_id: Hash32;
  signer: MemberId;
  /** A nonce in lane 0 or 1 (below 2^53: exact as a JSON number). */
  nonce: number;
  kind: TxKind;
  sidecar_digest: Hash32 | null;
}

const KIND_INDEX: Record<TxKind["type"], number> = {
  enroll: 0,
  register_record: 1,
  grant: 2,
  revoke: 3,
  record_access: 4,
  append_version: 5,
  suspend: 6,
  break_glass: 7,
  erase: 9,
  legal_hold: 10,
  delegate: 12,
  team_create: 13,
  team_add: 14,
  team_remove: 15,
  rotate_keys: 16,
  custody_release: 17,
  recovery: 18,
};

const KEY_CHANGES = ["routine", "recovery_code", "claim"] as const;
const RECOVERY_ACTIONS = ["request", "cancel", "complete"] as const;

function indexIn<T>(list: readonly T[], value: T, what: string): number {
  const i = list.indexOf(value);
  if (i < 0) throw new Error(`unknown ${what}: ${String(value)}`);
  return i;
}

function writeScope(w: Writer, scope: GrantScope): void {
  if (scope === "all") {
    w.u8(1);
  } else if (scope === "sensitive") {
    w.u8(2);
  } else {
    w.u8(0);
    writeId16(w, scope.record, "record");
  }
}

function writeNewChart(w: Writer, c: NewChartEpoch): void {
  writeEncryptionKey(w, encryptionKeyFromJson(c.public_key));
  w.vec(c.recipients, (w, m) => writeId16(w, m, "recipient"));
}

function writeRegister(w: Writer, r: RegisterRecord): void {
  writeId16(w, r.record, "record");
  writeId16(w, r.patient, "patient");
  w.u32(r.version);
  writeHash32(w, r.digest, "digest");
  w.u64(r.size_bytes);
  w.vec(r.recipients, writeKeyHolder);
}

export function writeKind(w: Writer, kind: TxKind): void {
  const index = KIND_INDEX[kind.type];
  if (index === undefined) throw new Error(`this client does not send ${(kind as { type: string }).type} transactions`);
  w.u8(index);
  switch (kind.type) {
    case "enroll":
      writeEnroll(w, kind);
      return;
    case "register_record":
    case "append_version":
      writeRegister(w, kind);
      return;
    case "grant":
      writeId16(w, kind.patient, "patient");
      writeId16(w, kind.grantee, "grantee");
      writeScope(w, kind.scope);
      w.bool(kind.write);
      w.option(kind.expires_at, (w, t) => w.u64(t));
      w.option(kind.chart_epoch, (w, e) => w.u32(e));
      w.option(kind.new_chart, writeNewChart);
      return;
    case "revoke":
      writeId16(w, kind.patient, "patient");
      writeId16(w, kind.grantee, "grantee");
      writeScope(w, kind.scope);
      w.option(kind.new_chart, writeNewChart);
      return;
    case "record_access":
      writeId16(w, kind.record, "record");
      w.u32(kind.version);
      w.u8(indexIn(PURPOSES, kind.purpose, "purpose of use"));
      return;
    case "break_glass":
      writeId16(w, kind.patient, "patient");
      w.option(kind.reason, (w, r) => w.u8(indexIn(EMERGENCY_REASONS, r, "emergency reason")));
      w.u64(kind.duration_ms);
      return;
    case "erase":
      writeId16(w, kind.record, "record");
      return;
    case "suspend":
      writeId16(w, kind.member, "member");
      w.bool(kind.suspended);
      return;
    case "legal_hold":
      writeId16(w, kind.patient, "patient");
      w.option(kind.record, (w, r) => writeId16(w, r, "record"));
      w.bool(kind.hold);
      return;
    case "delegate":
      writeId16(w, kind.patient, "patient");
      writeId16(w, kind.delegate, "delegate");
      w.bool(kind.appoint);
      w.option(kind.chart_epoch, (w, e) => w.u32(e));
      w.option(kind.new_chart, writeNewChart);
      return;
    case "team_create":
      writeId16(w, kind.team, "team");
      writeEncryptionKey(w, encryptionKeyFromJson(kind.public_key));
      w.vec(kind.members, (w, m) => writeId16(w, m, "member"));
      return;
    case "team_add":
      writeId16(w, kind.team, "team");
      writeId16(w, kind.member, "member");
      return;
    case "team_remove":
      writeId16(w, kind.team, "team");
      writeId16(w, kind.member, "member");
      writeEncryptionKey(w, encryptionKeyFromJson(kind.public_key));
      return;
    case "rotate_keys":
      writeMemberKeys(w, kind.signing_key, kind.encryption_key);
      w.u8(indexIn(KEY_CHANGES, kind.reason.type, "key change"));
      if (kind.reason.type === "claim") w.fixed(proofBytes(kind.reason.proof), 16);
      w.option(kind.new_chart, writeNewChart);
      return;
    case "custody_release":
      writeId16(w, kind.member, "member");
      writeHash32(w, kind.code_hash, "code hash");
      return;
    case "recovery":
      writeId16(w, kind.member, "member");
      w.u8(indexIn(RECOVERY_ACTIONS, kind.action.type, "recovery action"));
      if (kind.action.type === "request") writeMemberKeys(w, kind.action.signing_key, kind.action.encryption_key);
      return;
  }
}

/** A member's public keys: the Ed25519 key (hex) and the encryption key. */
function writeMemberKeys(w: Writer, signingKey: string, encryptionKey: KeyJson): void {
  w.fixed(fromHexN(signingKey, 32, "signing key"), 32);
  writeEncryptionKey(w, encryptionKeyFromJson(encryptionKey));
}

function proofBytes(proof: number[]): Bytes {
  if (proof.length !== 16 || proof.some((b) => !Number.isInteger(b) || b < 0 || b > 255)) throw new Error("a claim's proof is 16 bytes");
  return Uint8Array.from(proof);
}

export function encodeBody(body: TxBody): Bytes {
  if (!Number.isSafeInteger(body.nonce) || body.nonce < 0) throw new Error("nonce out of the exact range");
  return encode((w) => {
    writeHash32(w, body.chain_id, "chain id");
    writeId16(w, body.signer, "signer");
    w.u64(body.nonce);
    writeKind(w, body.kind);
    w.option(body.sidecar_digest, (w, d) => writeHash32(w, d, "sidecar digest"));
  });
}

export interface SignedTransaction {
  /** The encoded transaction (body, then the 64-byte signature), as `POST /v1/tx` takes it. */
  bytes: Bytes;
  /** SHA-256 of `bytes`, hex. */
  id: Hash32;
}

export function signTransaction(body: TxBody, key: SigningKey): SignedTransaction {
  const encoded = encodeBody(body);
  const bytes = concat(encoded, key.sign(TX_NAMESPACE, encoded));
  return { bytes, id: toHex(sha256(bytes)) };
}

/** `POST /v1/tx`'s body: a borsh `SubmitRequest` (the transaction, then its optional sidecar). */
export function submitRequest(tx: SignedTransaction, sidecar: Bytes | null): Bytes {
  return encode((w) => {
    w.fixed(tx.bytes, tx.bytes.length);
    w.option(sidecar, (w, s) => w.bytes(s));
  });
}

export function chainIdBytes(chainId: Hash32): Bytes {
  return fromHexN(chainId, 32, "chain id");
}
