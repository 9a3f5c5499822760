// What the browser believes of a validator's answer about the ledger's state, checked as the CLI
// checks it (`medledger_proof::check_state`), by code that shares nothing with the node's: the
// network's genesis only when it hashes to the chain id the portal was configured with; a block
// only with a finality certificate of a quorum of the genesis validators; a state entry (a
// member's keys, a chart's key) only with a Merkle proof against that block's state root.
//
// After validator-set changes, the evidence carries the set's history from genesis (epoch links),
// followed one link at a time (see epochs.ts): a later set is never taken on a validator's word.

import { type Bytes, equal, fromBase64, fromHex, toHex, utf8 } from "./bytes.js";
import { Reader, encode } from "./borsh.js";
import { certifiedThrough, readLinks } from "./epochs.js";
import { verifyStateProof } from "./evidence.js";
import { sha256 } from "./hash.js";
import { type KeyHolder, type KeySubject, writeId16, writeKeyHolder, writeKeySubject } from "./ids.js";
import { type EncryptionKey, encryptionKeyFromJson, kemSuite, kemSuiteOf, writeEncryptionKey } from "./wrap.js";

interface KeyJson {
  suite: string | number;
  bytes: string;
}

/** The network's genesis as `GET /v1/genesis` serves it. */
export interface GenesisJson {
  chain_name: string;
  created_at: number;
  orgs: { id: string; name: string; admin: { member: string; signing_key: string; encryption_key: KeyJson } }[];
  validators: { org: string; public_key: string; p2p_address: string; api_address: string }[];
  share_keys?: KeyJson[];
  policy?: { break_glass_max_ms: number; break_glass_per_day: number; recovery_delay_ms?: number };
}

/** The chain id a genesis stands for: SHA-256 over a tag and its canonical encoding. */
export function genesisChainId(g: GenesisJson): string {
  const core = encode((w) => {
    w.bytes(utf8(g.chain_name));
    w.u64(g.created_at);
    w.vec(g.orgs, (w, o) => {
      w.bytes(utf8(o.id));
      w.bytes(utf8(o.name));
      writeId16(w, o.admin.member, "admin");
      w.fixed(fromHex(o.admin.signing_key), 32);
      writeEncryptionKey(w, encryptionKeyFromJson(o.admin.encryption_key));
    });
    w.vec(g.validators, (w, v) => {
      w.bytes(utf8(v.org));
      w.fixed(fromHex(v.public_key), 32);
      w.bytes(utf8(v.p2p_address));
      w.bytes(utf8(v.api_address));
    });
  });
  const parts = [utf8("medledger/genesis/v1"), core];
  if (g.share_keys) parts.push(encode((w) => w.vec(g.share_keys!, (w, k) => writeEncryptionKey(w, encryptionKeyFromJson(k)))));
  if (g.policy) {
    const p = g.policy;
    parts.push(
      utf8("medledger/genesis-policy/v1"),
      encode((w) => {
        w.u64(p.break_glass_max_ms);
        w.u32(p.break_glass_per_day);
        if (p.recovery_delay_ms !== undefined && p.recovery_delay_ms !== null) w.u8(1).u64(p.recovery_delay_ms);
      }),
    );
  }
  return toHex(sha256(...parts));
}

/** The genesis validators' consensus keys, once the genesis is the chain id's. */
export function trustedValidators(genesis: GenesisJson, chainId: string): Bytes[] {
  if (genesisChainId(genesis) !== chainId) throw new Error("the validator served another network's genesis");
  return genesis.validators.map((v) => fromHex(v.public_key));
}

/** A block header (borsh: 180 bytes): what a certificate finalizes, by its SHA-256. */
export interface Header {
  digest: Bytes;
  chainId: Bytes;
  height: bigint;
  parent: Bytes;
  time: bigint;
  txRoot: Bytes;
  resultsRoot: Bytes;
  stateRoot: Bytes;
}

const HEADER_BYTES = 32 + 8 + 32 + 8 + 32 + 32 + 32 + 4;

export function readHeader(r: Reader): Header {
  const bytes = r.fixed(HEADER_BYTES);
  const h = new Reader(bytes);
  const chainId = h.fixed(32);
  const height = h.u64();
  const parent = h.fixed(32);
  const time = h.u64();
  const txRoot = h.fixed(32);
  const resultsRoot = h.fixed(32);
  const stateRoot = h.fixed(32);
  return { digest: sha256(bytes), chainId, height, parent, time, txRoot, resultsRoot, stateRoot };
}

/** Largest state evidence accepted (as the CLI: 1 MiB). */
const STATE_EVIDENCE_BYTES_MAX = 1024 * 1024;

/** The entries of a checked state evidence: each key (hex) with its value, or `null` where proved absent. */
export interface ProvedState {
  height: bigint;
  entries: Map<string, Bytes | null>;
}

/**
 * Checks a `/proof` answer's evidence (base64 of borsh `StateEvidence`) against the genesis
 * validators: the block's certificate, then every entry's proof against its state root; refuses
 * evidence older than `seen`, the highest block this client has seen committed.
 */
export function checkState(validators: Bytes[], chainId: string, text: string, seen: bigint): ProvedState {
  if (text.length > (STATE_EVIDENCE_BYTES_MAX / 3) * 4 + 4) throw new Error("the evidence is over its limit");
  const r = new Reader(fromBase64(text));
  const header = readHeader(r);
  const certificate = r.bytes(64 * 1024);
  const links = readLinks(r);
  const count = r.u32();
  if (count > 1024) throw new Error("the evidence has too many entries");
  const proved: { key: Bytes; value: Bytes | null; proof: Bytes }[] = [];
  for (let i = 0; i < count; i++) {
    const key = r.bytes(1024);
    const value = r.option((r) => r.bytes(STATE_EVIDENCE_BYTES_MAX));
    const proof = r.bytes(256 * 1024);
    proved.push({ key, value, proof });
  }
  r.end();
  if (!equal(header.chainId, fromHex(chainId))) throw new Error("the evidence is of another network");
  certifiedThrough(validators, chainId, links, header, certificate);
  if (header.height < seen) throw new Error(`the evidence is of block ${header.height}, older than block ${seen} this client has seen`);
  const entries = new Map<string, Bytes | null>();
  for (const e of proved) {
    if (!verifyStateProof(header.stateRoot, e.key, e.value, e.proof)) throw new Error("a state entry's proof does not check");
    entries.set(toHex(e.key), e.value);
  }
  return { height: header.height, entries };
}

/** The state key of member `id`'s entry. */
export function memberStateKey(id: string): Bytes {
  return new Uint8Array([...utf8("m/"), ...fromHex(id)]);
}

/** The state key of `patient`'s chart entry. */
export function chartStateKey(patient: string): Bytes {
  return new Uint8Array([...utf8("c/"), ...fromHex(patient)]);
}

function readKey(r: Reader): EncryptionKey {
  const suite = kemSuite(r.u8());
  return { suite, bytes: r.bytes(2048) };
}

/** A certified member entry, as far as a writer needs it: its id, role and encryption key. */
export function decodeMember(value: Bytes): { id: string; org: string; role: number; encryptionKey: EncryptionKey } {
  const r = new Reader(value);
  const id = toHex(r.fixed(16));
  const org = new TextDecoder().decode(r.bytes(32));
  const role = r.u8();
  r.fixed(32);
  return { id, org, role, encryptionKey: readKey(r) };
}

/** A certified chart entry: its key epoch and public key, its chart-wide grantees, delegates and care teams. */
export function decodeChart(value: Bytes): {
  patient: string;
  epoch: number;
  publicKey: EncryptionKey;
  holders: string[];
  delegates: string[];
  teams: string[];
  sensitive: string[];
} {
  const r = new Reader(value);
  const patient = toHex(r.fixed(16));
  const epoch = r.u32();
  const publicKey = readKey(r);
  const ids = () => {
    const n = r.u32();
    if (n > 100_000) throw new Error("a chart entry lists too many members");
    return Array.from({ length: n }, () => toHex(r.fixed(16)));
  };
  const [holders, delegates, teams] = [ids(), ids(), ids()];
  // Grantees of the records outside chart-wide grants: a trailing field, absent in older charts.
  let sensitive: string[] = [];
  if (!r.atEnd()) {
    if (r.u8() !== 1) throw new Error("a chart entry's trailing field is malformed");
    sensitive = ids();
  }
  r.end();
  return { patient, epoch, publicKey, holders, delegates, teams, sensitive };
}

/** The state key of care team `team`'s entry. */
export function teamStateKey(team: string): Bytes {
  return new Uint8Array([...utf8("tm/"), ...fromHex(team)]);
}

/** The state key of `patient`'s grant to `grantee` on the whole chart (`*`) or on its sensitive records (`s`). */
export function grantStateKey(patient: string, grantee: string, scope: "all" | "sensitive"): Bytes {
  return new Uint8Array([...utf8("g/"), ...fromHex(patient), ...fromHex(grantee), ...utf8(scope === "all" ? "*" : "s")]);
}

/** A certified care team entry: its key epoch and public key, and its members. */
export function decodeTeam(value: Bytes): { team: string; org: string; epoch: number; publicKey: EncryptionKey; members: string[] } {
  const r = new Reader(value);
  const team = toHex(r.fixed(16));
  const org = new TextDecoder().decode(r.bytes(32));
  const epoch = r.u32();
  const publicKey = readKey(r);
  const n = r.u32();
  if (n > 10_000) throw new Error("a team entry lists too many members");
  const members = Array.from({ length: n }, () => toHex(r.fixed(16)));
  return { team, org, epoch, publicKey, members };
}

/** A certified grant entry, as far as a writer needs it: whether it is live at `now` (ms). */
export function grantIsLive(value: Bytes, now: number): boolean {
  const r = new Reader(value);
  r.fixed(16);
  r.fixed(16);
  const scope = r.u8();
  if (scope === 0) r.fixed(16);
  else if (scope > 2) throw new Error("unknown grant scope");
  r.bool();
  r.u64();
  const expires = r.option((r) => r.u64());
  return expires === null || BigInt(now) < expires;
}

/** A record version's threshold release as its certified entry holds it. */
export interface ThresholdInfoJson {
  epoch: number;
  threshold: number;
  emergency_threshold: number;
  validators: number[];
  verifier: string[];
  emergency_verifier: string[];
  generation: number;
}

/** A record entry in its JSON form (`RecordEntry`). */
export interface RecordEntryJson {
  record: string;
  patient: string;
  author: string;
  version: number;
  digest: string;
  size_bytes: number;
  sidecar: string;
  chart_epoch: number;
  created_at: number;
  created_height: number;
  threshold?: ThresholdInfoJson | null;
}

/** The ledger's encoding of a record entry: what its state proof is of. */
export function encodeRecordEntry(e: RecordEntryJson): Bytes {
  return encode((w) => {
    writeId16(w, e.record, "record");
    writeId16(w, e.patient, "patient");
    writeId16(w, e.author, "author");
    w.u32(e.version);
    w.fixed(fromHex(e.digest), 32);
    w.u64(e.size_bytes);
    w.fixed(fromHex(e.sidecar), 32);
    w.u32(e.chart_epoch);
    w.u64(e.created_at);
    w.u64(e.created_height);
    // A trailing field: absent, nothing is written.
    const t = e.threshold;
    if (t) {
      w.u8(1);
      w.u32(t.epoch);
      w.u8(t.threshold);
      w.u8(t.emergency_threshold);
      w.vec(t.validators, (w, v) => w.u32(v));
      w.vec(t.verifier, (w, c) => w.fixed(fromHex(c), 32));
      w.vec(t.emergency_verifier, (w, c) => w.fixed(fromHex(c), 32));
      w.u32(t.generation);
    }
  });
}

interface SidecarEnvelopeJson {
  holder: KeyHolder;
  subject: KeySubject;
  envelope: { suite: string | number; encapsulated_key: string; ciphertext: string };
}

export function readHolder(r: Reader): KeyHolder {
  switch (r.u8()) {
    case 0:
      return { type: "member", member: toHex(r.fixed(16)) };
    case 1:
      return { type: "chart", patient: toHex(r.fixed(16)), epoch: r.u32() };
    case 2:
      return { type: "team", team: toHex(r.fixed(16)), epoch: r.u32() };
    default:
      throw new Error("unknown key holder");
  }
}

function readSubject(r: Reader): KeySubject {
  switch (r.u8()) {
    case 0:
      return { type: "record", record: toHex(r.fixed(16)), version: r.u32() };
    case 1:
      return { type: "chart", patient: toHex(r.fixed(16)), epoch: r.u32() };
    case 2:
      return { type: "note", id: Array.from(r.fixed(16)) };
    case 3:
      return { type: "team", team: toHex(r.fixed(16)), epoch: r.u32() };
    default:
      throw new Error("unknown key subject");
  }
}

/** A sidecar's envelopes (holder, subject, encoded envelope) and metadata, decoded from its bytes. */
function decodeSidecar(bytes: Bytes): { envelopes: { holder: KeyHolder; subject: KeySubject; envelope: Bytes }[]; metadata: Bytes | null } {
  const r = new Reader(bytes);
  const n = r.u32();
  if (n > 4096) throw new Error("a sidecar with too many envelopes");
  const envelopes = [];
  for (let i = 0; i < n; i++) {
    const holder = readHolder(r);
    const subject = readSubject(r);
    const suite = r.u8();
    const enc = r.bytes(2048);
    const ct = r.bytes(1024);
    envelopes.push({ holder, subject, envelope: encode((w) => w.u8(suite).bytes(enc).bytes(ct)) });
  }
  const metadata = r.option((r) => r.bytes(1024 * 1024));
  // The threshold shares follow (a trailing field): the reader takes its commitments from the
  // certified record entry, not from here.
  return { envelopes, metadata };
}

function envelopeBytes(e: SidecarEnvelopeJson["envelope"]): Bytes {
  const suite = kemSuiteOf(e.suite);
  return encode((w) => w.u8(suite).bytes(fromHex(e.encapsulated_key)).bytes(fromHex(e.ciphertext)));
}

/** Whether two key holders (or subjects) in their JSON form are the same. */
export const sameJson = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** What a checked access bundle gives the reader: from certified state only. */
export interface CheckedBundle {
  height: bigint;
  /** The record's encrypted metadata, from its certified sidecar. */
  metadata: Bytes | null;
  /** The record's threshold release, from its certified entry. */
  threshold: ThresholdInfoJson | null;
}

/** Largest access evidence accepted (as the CLI: 8 MiB). */
const ACCESS_EVIDENCE_BYTES_MAX = 8 * 1024 * 1024;

/**
 * Checks an access bundle (`GET /v1/access/{tx}/bundle`) for version `version` of `record`
 * against its evidence, as the CLI does (`medledger_proof::check_access`): the record entry and
 * each envelope's state entry proved against a block a quorum certified, each envelope found in
 * the certified sidecar its entry names, the metadata and threshold taken from certified state.
 */
export function checkAccess(
  validators: Bytes[],
  chainId: string,
  bundle: { record: RecordEntryJson; envelopes: SidecarEnvelopeJson[]; evidence?: string },
  record: string,
  version: number,
  seen: bigint,
): CheckedBundle {
  const text = bundle.evidence;
  if (!text) throw new Error("the validator gave no evidence for the bundle");
  if (text.length > (ACCESS_EVIDENCE_BYTES_MAX / 3) * 4 + 4) throw new Error("the bundle's evidence is over its limit");
  const entry = bundle.record;
  if (entry.record !== record || entry.version !== version) throw new Error("the bundle is for another record or version");
  const r = new Reader(fromBase64(text));
  const header = readHeader(r);
  const certificate = r.bytes(64 * 1024);
  const links = readLinks(r);
  const refCount = r.u32();
  if (refCount !== bundle.envelopes.length || refCount > 4096) throw new Error("the bundle's evidence does not fit its envelopes");
  const refs = Array.from({ length: refCount }, () => ({ sidecar: r.fixed(32), tx: r.fixed(32) }));
  const proofCount = r.u32();
  if (proofCount !== refCount + 1) throw new Error("the bundle's evidence does not fit its envelopes");
  const proofs = Array.from({ length: proofCount }, () => r.bytes(256 * 1024));
  const sidecarCount = r.u32();
  if (sidecarCount > 4096) throw new Error("the bundle's evidence has too many sidecars");
  const sidecars = Array.from({ length: sidecarCount }, () => r.bytes(ACCESS_EVIDENCE_BYTES_MAX));
  r.end();
  if (!equal(header.chainId, fromHex(chainId))) throw new Error("the bundle's evidence is of another network");
  certifiedThrough(validators, chainId, links, header, certificate);
  if (header.height < seen) throw new Error(`the bundle is of block ${header.height}, older than block ${seen} this client has seen`);
  const recordKey = new Uint8Array([...utf8("rv/"), ...fromHex(record), ...new Uint8Array([version >>> 24, (version >>> 16) & 0xff, (version >>> 8) & 0xff, version & 0xff])]);
  if (!verifyStateProof(header.stateRoot, recordKey, encodeRecordEntry(entry), proofs[0]!)) {
    throw new Error("the record entry is not the certified one");
  }
  const byDigest = new Map(sidecars.map((bytes) => [toHex(sha256(bytes)), bytes]));
  const decoded = new Map<string, ReturnType<typeof decodeSidecar>>();
  const sidecar = (digest: string) => {
    const bytes = byDigest.get(digest);
    if (!bytes) throw new Error("a sidecar the certified state names is missing");
    let d = decoded.get(digest);
    if (!d) {
      d = decodeSidecar(bytes);
      decoded.set(digest, d);
    }
    return d;
  };
  for (const [i, e] of bundle.envelopes.entries()) {
    const at = refs[i]!;
    const key = new Uint8Array([...utf8("e/"), ...encode((w) => writeKeySubject(w, e.subject)), ...encode((w) => writeKeyHolder(w, e.holder))]);
    const value = new Uint8Array([...at.sidecar, ...at.tx]);
    if (!verifyStateProof(header.stateRoot, key, value, proofs[i + 1]!)) throw new Error("an envelope is not the certified one");
    const carried = sidecar(toHex(at.sidecar)).envelopes.find((c) => sameJson(c.holder, e.holder) && sameJson(c.subject, e.subject));
    if (!carried || !equal(carried.envelope, envelopeBytes(e.envelope))) throw new Error("an envelope is not the certified one");
  }
  const own = sidecar(entry.sidecar);
  return { height: header.height, metadata: own.metadata, threshold: entry.threshold ?? null };
}
