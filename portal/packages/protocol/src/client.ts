// A medledger client over the validators' HTTP API, as the CLI's SDK is one: every request that
// touches a patient's data signed (RFC 9421), transactions signed and submitted, and the read
// path done on this device: a RecordAccess committed (the audit event) before the bytes leave a
// validator, the data key recovered from the reader's envelopes and, under threshold release,
// from the validators' released shares, the ciphertext checked against the ledger's digest and
// decrypted here. No server sees a key or plaintext.

import { type Bytes, equal, fromHex, randomBytes, toHex, utf8 } from "./bytes.js";
import { type Writer, encode } from "./borsh.js";
import { sha256 } from "./hash.js";
import { partsOfUrl, signRequest } from "./httpsig.js";
import { type KeyHolder, type KeySubject, type MemberId, type RecordId, writeId16 } from "./ids.js";
import type { IdentityKeys } from "./keystore.js";
import { PayloadSuite, openPayload, sealPayload } from "./payload.js";
import {
  HALF_KEY_BYTES,
  SHARE_BYTES,
  type Share,
  combine,
  decodeShare,
  decodeVerifier,
  deriveDataKey,
  encodeShare,
  randomSecret,
  split,
  verifyShare,
} from "./threshold.js";
import { type EmergencyReason, type PurposeOfUse, type TxKind, chainIdBytes, signTransaction, submitRequest } from "./tx.js";
import {
  type CheckedBundle,
  type GenesisJson,
  type RecordEntryJson,
  type ProvedState,
  chartStateKey,
  checkAccess,
  checkState,
  decodeChart,
  decodeMember,
  decodeTeam,
  grantIsLive,
  grantStateKey,
  memberStateKey,
  teamStateKey,
  sameJson,
  trustedValidators,
} from "./certified.js";
import { type Enroll, verifyEnrolmentRequest } from "./enrolment.js";
import { type VerifiedReceipt, verifyReceipt } from "./receipt.js";
import { type Sidecar, type SidecarEnvelope, type ThresholdShares, encodeSidecar, sidecarDigest } from "./sidecar.js";
import { type Binding, DecryptionKey, type EncryptionKey, type Envelope, KemSuite, encryptionKeyFromJson, kemSuite, kemSuiteOf, seal } from "./wrap.js";

/** A member as this client signs for them: their id and their keys. */
export interface Identity {
  member: MemberId;
  keys: IdentityKeys;
}

/** A validator's refusal, as its RFC 9457 problem says. */
export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    title: string,
  ) {
    super(title);
  }

  /** An access the ledger refused (and audited). */
  get denied(): boolean {
    return this.status === 401 || this.status === 403 || this.type === "urn:medledger:problem:access-denied";
  }
}

/** A ledger entry of a record version (`GET /v1/records/{id}`, and in every record list). */
export type RecordEntry = RecordEntryJson;

/** One event of a patient's audit trail (`GET /v1/patients/{id}/audit`). */
export interface AuditEvent {
  tx: string;
  height: number;
  time: number;
  actor: MemberId;
  actor_org: string;
  actor_role: string;
  action: { type: string; record?: RecordId; version?: number; grantee?: MemberId; scope?: unknown; [field: string]: unknown };
  purpose: string | null;
  decision: { decision: "allowed" } | { decision: "denied"; reason: unknown };
  delegate_of: MemberId | null;
}

/** An enrolled member as the ledger shows them (no secret: public keys and a staff name). */
export interface MemberEntry {
  id: MemberId;
  org: string;
  role: string;
  display_name: string | null;
  status: unknown;
  encryption_key?: { suite: string | number; bytes: string };
}

/** The validators' share keys (`GET /v1/threshold`). */
export interface ReleaseConfig {
  epoch: number;
  threshold: number;
  emergency_threshold: number;
  validators: number[];
  share_keys: { suite: string | number; bytes: string }[];
}

/** Largest record (the validators' upload limit less the payload's overhead). */
export const RECORD_PLAINTEXT_MAX = 64 * 1024 * 1024 - 64 * 1024;

/** The `chart_epoch` of a record version wrapped for no chart key (outside chart-wide grants). */
export const RESTRICTED_CHART_EPOCH = 0xffff_ffff;

/** What a new record of a chart is wrapped for (see `Client.recordKeys`). */
export interface RecordKeys {
  chart: { epoch: number; publicKey: EncryptionKey };
  teams: { team: MemberId; epoch: number; publicKey: EncryptionKey }[];
  /** The patient first, then each live grantee of the records outside chart-wide grants. */
  sensitive: { member: MemberId; key: EncryptionKey }[];
}

/** A patient's chart entry (`GET /v1/charts/{patient}`). */
export interface ChartEntry {
  patient: MemberId;
  epoch: number;
  holders: MemberId[];
  delegates?: MemberId[];
  teams?: MemberId[];
}

interface EnvelopeJson {
  suite: string | number;
  encapsulated_key: string;
  ciphertext: string;
}

export interface SidecarEnvelopeJson {
  holder: KeyHolder;
  subject: KeySubject;
  envelope: EnvelopeJson;
}

interface ThresholdPublicJson {
  epoch: number;
  validators: number[];
  threshold: number;
  verifier: string[];
  emergency_threshold: number;
  emergency_verifier: string[];
}

interface AccessBundleJson {
  record: RecordEntry;
  envelopes: SidecarEnvelopeJson[];
  metadata: number[] | null;
  threshold?: ThresholdPublicJson;
  evidence?: string;
}

interface ReleasedShareJson {
  validator: number;
  epoch: number;
  envelope: EnvelopeJson;
  emergency: boolean;
}

/** A committed transaction. */
export interface Committed {
  tx: string;
  height: number;
  time: number;
}

/** Where a read's time goes: until its access committed (the audit event), and in all. */
export interface ReadTimings {
  /** From the start to the access's commit. */
  committedMs?: number;
  /** The bundle fetched and checked against its evidence. */
  bundleMs?: number;
  /** Envelopes opened, shares collected and ciphertext fetched (together). */
  keysMs?: number;
  totalMs?: number;
}

/** A record read: its entry, its plaintext and its decrypted metadata (when it has some). */
export interface Opened {
  entry: RecordEntry;
  access: Committed;
  plaintext: Bytes;
  metadata: Record<string, unknown> | null;
}

/** The nonce lane this client signs in: lane 1 keeps nonces exact as JavaScript numbers. */
export const LANE = 1;
const COUNTER_BITS = 52;
/** Most time one request waits as validators ask (`Retry-After`), over all its attempts. */
const RETRY_WAIT_MAX_MS = 75_000;
/** How long a transaction may take to commit. */
const COMMIT_TIMEOUT_MS = 60_000;
/** Largest answer read from a validator. */
const RESPONSE_BYTES_MAX = 80 * 1024 * 1024;

/**
 * Where a validator's API is reached (`url`), and, behind a proxy (the portal's origin), the
 * base URL the validator knows itself by (`signedAs`): requests are signed for the validator's
 * own `@authority` and path, so the proxy can forward them and nothing else can.
 */
export interface ValidatorAddress {
  url: string;
  signedAs?: string;
}

export class Client {
  private nonces = new Map<MemberId, number>();
  /** The genesis validators' keys, once checked. */
  private trust: Promise<Bytes[]> | null = null;
  /** The highest committed block this client has seen: older evidence is refused. */
  private seen = 0n;
  readonly validators: ValidatorAddress[];
  /** Validators that joined after those configured, by stable index, once looked up. */
  private joinedAt = new Map<number, ValidatorAddress>();
  private readonly joined: (index: number, apiAddress: string) => ValidatorAddress;

  /**
   * `validators[i]` is the API of validator `i` (as the network's genesis orders them): a base
   * URL or a `ValidatorAddress`. Requests go to the first that answers, released shares to each
   * record's holders.
   */
  constructor(
    validators: (string | ValidatorAddress)[],
    readonly chainId: string,
    private readonly fetchFn: typeof fetch = globalThis.fetch.bind(globalThis),
    private readonly now: () => number = Date.now,
    joined?: (index: number, apiAddress: string) => ValidatorAddress,
  ) {
    if (validators.length === 0) throw new Error("no validator to talk to");
    this.validators = validators.map((v) => (typeof v === "string" ? { url: v } : v));
    chainIdBytes(chainId);
    // By default a validator that joined is asked directly, with the configured ones' scheme.
    const scheme = new URL(this.validators[0]!.signedAs ?? this.validators[0]!.url).protocol;
    this.joined = joined ?? ((_, api) => ({ url: `${scheme}//${api}` }));
  }

  /**
   * Where validator `index` (its stable index) is asked: one this client was configured with, or
   * one that joined since, by the API address the network's governance status gives it (any
   * validator's say: the shares a wrong address could give are checked against the record's
   * certified commitments, and its evidence against the validator-set history).
   */
  async addressOf(index: number): Promise<ValidatorAddress> {
    const known = this.validators[index] ?? this.joinedAt.get(index);
    if (known) return known;
    const status = await this.get<{ epochs?: { validators?: { index?: number; api_address?: string }[] }[] }>("/v1/governance", null);
    for (const epoch of status.epochs ?? []) {
      for (const v of epoch.validators ?? []) {
        if (v.index === index && typeof v.api_address === "string" && /^[A-Za-z0-9.:[\]-]{1,255}$/.test(v.api_address)) {
          const address = this.joined(index, v.api_address);
          this.joinedAt.set(index, address);
          return address;
        }
      }
    }
    throw new Error(`validator ${index} has no known address`);
  }

  /**
   * One request to `base`, signed by `me` when given; waits and sends again (signed anew) when
   * the validator says to (429 or 503 with `Retry-After`), within a bound. Returns the body and
   * the next-page cursor; throws an `ApiProblem` for a refusal.
   */
  async send(
    validator: ValidatorAddress,
    method: string,
    path: string,
    me: Identity | null,
    body?: Bytes,
  ): Promise<{ bytes: Bytes; next: string | null }> {
    // A base may carry a path (a validator behind the portal's proxy): the path is appended.
    const join = (base: string) => new URL(`${base.replace(/\/+$/, "")}${path}`).toString();
    const url = join(validator.url);
    const signed = join(validator.signedAs ?? validator.url);
    let waited = 0;
    for (;;) {
      const headers: Record<string, string> = {};
      if (me) {
        for (const [name, value] of signRequest(me.keys.signing, me.member, partsOfUrl(method, signed, body), this.now())) {
          headers[name] = value;
        }
      }
      if (body) headers["content-type"] = "application/octet-stream";
      // A validator behind the blocks this client has seen waits for them before answering.
      if (this.seen > 0n) headers["x-medledger-min-height"] = this.seen.toString();
      const response = await this.fetchFn(url, { method, headers, body: body ? new Uint8Array(body) : undefined });
      const length = Number(response.headers.get("content-length") ?? "0");
      if (length > RESPONSE_BYTES_MAX) throw new Error("the validator's answer is over the size limit");
      const bytes = new Uint8Array(await response.arrayBuffer());
      if (response.ok) {
        const next = response.headers.get("x-medledger-next");
        return { bytes, next: next && /^[0-9a-f]{1,256}$/.test(next) ? next : null };
      }
      const retryAfter = Number(response.headers.get("retry-after"));
      if ((response.status === 429 || response.status === 503) && retryAfter > 0) {
        const wait = Math.min(retryAfter, 60) * 1000;
        if (waited + wait <= RETRY_WAIT_MAX_MS) {
          waited += wait;
          await new Promise((resolve) => setTimeout(resolve, wait));
          continue;
        }
      }
      throw problemOf(response.status, bytes);
    }
  }

  /** A JSON answer from the first validator that gives one (the next after one unreachable or busy). */
  async get<T>(path: string, me: Identity | null): Promise<T> {
    return JSON.parse(new TextDecoder().decode((await this.firstAnswer("GET", path, me)).bytes)) as T;
  }

  /** One request to the first validator that answers it (the next after one unreachable or busy). */
  async firstAnswer(method: string, path: string, me: Identity | null, body?: Bytes) {
    let last: unknown = new Error("no validator answered");
    for (const validator of this.validators) {
      try {
        return await this.send(validator, method, path, me, body);
      } catch (e) {
        if (e instanceof ApiProblem && e.status !== 503) throw e;
        last = e;
      }
    }
    throw last;
  }

  /** The next nonce of `me` in this client's lane. */
  private async nextNonce(me: Identity): Promise<number> {
    const known = this.nonces.get(me.member);
    let counter: number;
    if (known !== undefined) {
      counter = known;
    } else {
      try {
        const { nonce } = await this.get<{ nonce: number }>(`/v1/members/${me.member}/nonce?lane=${LANE}`, me);
        const lane = Math.floor(nonce / 2 ** COUNTER_BITS);
        counter = lane === LANE ? nonce - LANE * 2 ** COUNTER_BITS + 1 : 1;
      } catch (e) {
        // Keys the ledger does not authenticate yet (a recovery's requested keys, which sign
        // only its completion): the clock alone gives the nonce.
        if (!(e instanceof ApiProblem && e.denied)) throw e;
        counter = 1;
      }
    }
    // Microseconds keep a lane's nonces increasing across restarts without coordination.
    counter = Math.max(counter, this.now() * 1000);
    this.nonces.set(me.member, counter + 1);
    return LANE * 2 ** COUNTER_BITS + counter;
  }

  /**
   * Signs `kind` for `me` (with its sidecar, when it carries envelopes), submits it and waits for
   * its commit; a rejection is an `ApiProblem` (403 for a denial).
   */
  async transact(me: Identity, kind: TxKind, sidecar: Sidecar | Bytes | null = null): Promise<Committed> {
    const nonce = await this.nextNonce(me);
    const carried = sidecar instanceof Uint8Array ? sidecar : sidecar ? encodeSidecar(sidecar) : null;
    const body = { chain_id: this.chainId, signer: me.member, nonce, kind, sidecar_digest: carried ? sidecarDigest(carried) : null };
    const tx = signTransaction(body, me.keys.signing);
    let submitted: { bytes: Bytes };
    try {
      submitted = await this.firstAnswer("POST", "/v1/tx", null, submitRequest(tx, carried));
    } catch (e) {
      this.nonces.delete(me.member);
      throw e;
    }
    const { tx_id } = JSON.parse(new TextDecoder().decode(submitted.bytes)) as { tx_id: string };
    if (tx_id !== tx.id) throw new Error("the validator named another transaction than the one sent");
    return this.wait(tx.id);
  }

  /** Waits for transaction `id` to commit (its outcome: applied, or an `ApiProblem`). */
  async wait(id: string): Promise<Committed> {
    const deadline = this.now() + COMMIT_TIMEOUT_MS;
    for (;;) {
      const left = Math.max(0, Math.min(10_000, deadline - this.now()));
      const status = await this.get<TxStatusJson>(`/v1/tx/${id}?wait_ms=${left}`, null);
      if (status.status === "unknown") throw new Error("the validator dropped the transaction");
      if (status.status === "committed") {
        const { height, time, outcome } = status;
        if (BigInt(height) > this.seen) this.seen = BigInt(height);
        if (outcome.outcome === "applied") return { tx: id, height, time };
        const reason = JSON.stringify(outcome.reason ?? outcome);
        throw new ApiProblem(403, "urn:medledger:problem:access-denied", `rejected: ${reason} (height ${height})`);
      }
      if (left === 0) throw new Error(`transaction not committed within ${COMMIT_TIMEOUT_MS / 1000}s`);
    }
  }

  /** Every record entry of `patient`'s chart `me` may list. */
  async records(me: Identity, patient: MemberId): Promise<RecordEntry[]> {
    const out: RecordEntry[] = [];
    let after = "";
    for (;;) {
      const page = await this.firstAnswer("GET", `/v1/patients/${patient}/records${after}`, me);
      out.push(...(JSON.parse(new TextDecoder().decode(page.bytes)) as RecordEntry[]));
      if (!page.next) return out;
      after = `?after=${page.next}`;
    }
  }

  /** `patient`'s audit trail as `me` may read it (the patient, a delegate, an auditor), oldest first, at most `max` events. */
  async audit(me: Identity, patient: MemberId, max = 10_000): Promise<AuditEvent[]> {
    const out: AuditEvent[] = [];
    let after = "";
    while (out.length < max) {
      const page = await this.firstAnswer("GET", `/v1/patients/${patient}/audit${after}`, me);
      out.push(...(JSON.parse(new TextDecoder().decode(page.bytes)) as AuditEvent[]));
      if (!page.next) break;
      after = `?after=${page.next}`;
    }
    return out.slice(0, max);
  }

  /** A member's entry as `me` may see it (staff entries are the provider directory). */
  async member(me: Identity, id: MemberId): Promise<MemberEntry> {
    return this.get<MemberEntry>(`/v1/members/${id}`, me);
  }

  /** The staff directory of `role` (doctor, nurse, …): enrolled clinicians, their names and public keys. */
  async staff(role: string, max = 5_000): Promise<MemberEntry[]> {
    const out: MemberEntry[] = [];
    let after = "";
    while (out.length < max) {
      const page = await this.get<{ members: MemberEntry[]; next: string | null }>(`/v1/staff?role=${encodeURIComponent(role)}${after}`, null);
      out.push(...page.members);
      if (!page.next || !/^[0-9a-f]{32}$/.test(page.next)) break;
      after = `&after=${page.next}`;
    }
    return out.slice(0, max);
  }

  /** The genesis validators' consensus keys, from a genesis that hashes to this client's chain id (fetched once). */
  private trusted(): Promise<Bytes[]> {
    this.trust ??= (async () => {
      let last: unknown = new Error("no validator served the genesis");
      for (const validator of this.validators) {
        try {
          const { bytes } = await this.send(validator, "GET", "/v1/genesis", null);
          return trustedValidators(JSON.parse(new TextDecoder().decode(bytes)) as GenesisJson, this.chainId);
        } catch (e) {
          last = e;
        }
      }
      throw last;
    })().catch((e: unknown) => {
      this.trust = null;
      throw e;
    });
    return this.trust;
  }

  /**
   * The certified state entries a `/proof` endpoint (`path`) serves, from the first validator
   * whose evidence checks (a quorum's certificate, Merkle proofs, no older than what this client
   * has seen); a refusal every validator gives is that refusal.
   */
  async proved(me: Identity, path: string): Promise<ProvedState> {
    const validators = await this.trusted();
    let refused: unknown = null;
    let last: unknown = new Error("no validator answered");
    for (const validator of this.validators) {
      try {
        const { bytes } = await this.send(validator, "GET", path, me);
        const { evidence } = JSON.parse(new TextDecoder().decode(bytes)) as { evidence: string };
        const state = checkState(validators, this.chainId, evidence, this.seen);
        if (state.height > this.seen) this.seen = state.height;
        return state;
      } catch (e) {
        if (e instanceof ApiProblem && e.status !== 503) refused ??= e;
        else last = e;
      }
    }
    throw refused ?? last;
  }

  /** Member `id`'s encryption key, from certified state: what a grant or a chart key is wrapped for. */
  async provedEncryptionKey(me: Identity, id: MemberId): Promise<EncryptionKey> {
    const state = await this.proved(me, `/v1/members/${id}/proof`);
    const value = state.entries.get(toHex(memberStateKey(id)));
    if (!value) throw new Error("the validators' evidence does not show that member");
    const member = decodeMember(value);
    if (member.id !== id) throw new Error("the evidence shows another member");
    return member.encryptionKey;
  }

  /**
   * What a new record of `patient` is wrapped for, all from certified state (no single validator
   * can have a record wrapped for a key of its own): the chart's current key, the current key of
   * each care team holding a live chart-wide grant (and members), and, for records outside
   * chart-wide grants, the patient's key and each live grantee's of such records.
   */
  async recordKeys(me: Identity, patient: MemberId): Promise<RecordKeys> {
    const state = await this.proved(me, `/v1/charts/${patient}/proof`);
    const proved = (key: Bytes): Bytes | null => {
      const value = state.entries.get(toHex(key));
      if (value === undefined) throw new Error("the validators' evidence leaves out part of the chart's keys");
      return value;
    };
    const value = proved(chartStateKey(patient));
    if (!value) throw new Error("the validators' evidence does not show that chart");
    const chart = decodeChart(value);
    if (chart.patient !== patient) throw new Error("the evidence shows another chart");
    const now = this.now();
    const teams: RecordKeys["teams"] = [];
    for (const id of chart.teams) {
      const grant = proved(grantStateKey(patient, id, "all"));
      const entry = proved(teamStateKey(id));
      if (!grant || !grantIsLive(grant, now) || !entry) continue;
      const team = decodeTeam(entry);
      // A dissolved team (its last member left) is not wrapped for.
      if (team.team === id && team.members.length > 0) teams.push({ team: id, epoch: team.epoch, publicKey: team.publicKey });
    }
    const memberKey = (id: MemberId): EncryptionKey => {
      const entry = proved(memberStateKey(id));
      if (!entry) throw new Error("the validators' evidence does not show a member the chart names");
      const member = decodeMember(entry);
      if (member.id !== id) throw new Error("the evidence shows another member");
      return member.encryptionKey;
    };
    const sensitive = [{ member: patient, key: memberKey(patient) }];
    for (const id of chart.sensitive) {
      const grant = proved(grantStateKey(patient, id, "sensitive"));
      if (grant && grantIsLive(grant, now)) sensitive.push({ member: id, key: memberKey(id) });
    }
    return { chart: { epoch: chart.epoch, publicKey: chart.publicKey }, teams, sensitive };
  }

  /** `patient`'s chart entry: its key epoch, its chart-wide grantees and delegates. */
  async chart(me: Identity, patient: MemberId): Promise<ChartEntry> {
    return this.get<ChartEntry>(`/v1/charts/${patient}`, me);
  }

  /** The current chart key of `patient`, opened with `me`'s keys: its epoch and its secret (suite ‖ key). */
  async chartSecret(me: Identity, patient: MemberId): Promise<{ epoch: number; secret: Bytes }> {
    const e = await this.get<SidecarEnvelopeJson>(`/v1/charts/${patient}/envelope`, me);
    if (e.subject.type !== "chart" || e.subject.patient !== patient) throw new Error("chart envelope of the wrong kind");
    return { epoch: e.subject.epoch, secret: await this.openMine(me, e) };
  }

  /** Opens an envelope wrapped for `me`, with their current key or an earlier one they keep. */
  async openMine(me: Identity, e: SidecarEnvelopeJson): Promise<Bytes> {
    const chainId = chainIdBytes(this.chainId);
    for (const key of [me.keys.encryption, ...me.keys.previous]) {
      try {
        return await key.open(envelopeOf(e.envelope), { chainId, subject: e.subject, holder: e.holder });
      } catch {
        // an earlier key, perhaps
      }
    }
    throw new Error("a wrapped key does not open for this reader");
  }

  /** `secret` wrapped for `key`, bound to this network, `holder` and `subject`. */
  async sealFor(key: EncryptionKey, holder: KeyHolder, subject: KeySubject, secret: Bytes): Promise<SidecarEnvelope> {
    return { holder, subject, envelope: await seal(key, secret, { chainId: chainIdBytes(this.chainId), subject, holder }) };
  }

  /**
   * The validators' current share keys (threshold release) as more than a third of them report
   * alike; `null` on a network without threshold release.
   */
  async release(): Promise<ReleaseConfig | null> {
    const needed = Math.floor((this.validators.length - 1) / 3) + 1;
    const answers = await Promise.allSettled(this.validators.map((v) => this.send(v, "GET", "/v1/threshold", null)));
    const counts = new Map<string, number>();
    let absent = 0;
    for (const a of answers) {
      if (a.status === "rejected") {
        if (a.reason instanceof ApiProblem && a.reason.status === 404) absent += 1;
        continue;
      }
      const text = new TextDecoder().decode(a.value.bytes);
      counts.set(text, (counts.get(text) ?? 0) + 1);
    }
    for (const [text, count] of counts) {
      if (count >= needed) return JSON.parse(text) as ReleaseConfig;
    }
    if (absent >= needed) return null;
    throw new Error(`fewer than ${needed} validators agree on the validators' share keys`);
  }

  /**
   * Writes a record in `patient`'s chart as `me` (the patient, or a clinician with write access):
   * a new one, or with `options.record` the next version of that record (refused as a conflict
   * when another version was written first). Encrypted here under a fresh data key (under
   * threshold release: derived from `k_env`, which the envelopes wrap, and `k_thr`, dealt to the
   * validators as verifiable shares), wrapped for the author and for what `recordKeys` names
   * (the chart key and the care teams holding it; a sensitive record, or a version of one, for
   * the patient and the grantees of sensitive records only), the ciphertext uploaded, the
   * registration committed. Returns the record id and the commit.
   */
  async writeRecord(
    me: Identity,
    patient: MemberId,
    plaintext: Bytes,
    metadata: { resource_type: string | null; content_type: string },
    options: { record?: RecordId; sensitive?: boolean } = {},
  ): Promise<{ record: RecordId; version: number; committed: Committed }> {
    if (plaintext.length > RECORD_PLAINTEXT_MAX) throw new Error("records are limited to 64 MiB");
    let version = 1;
    let sensitive = options.sensitive ?? false;
    if (options.record) {
      const entry = await this.get<RecordEntry>(`/v1/records/${options.record}`, me);
      if (entry.patient !== patient) throw new Error("that record is in another patient's chart");
      version = entry.version + 1;
      // A sensitive record stays so (the ledger lets only the patient lift it).
      sensitive ||= entry.chart_epoch === RESTRICTED_CHART_EPOCH;
    }
    const release = await this.release();
    const keys = await this.recordKeys(me, patient);
    const chainId = chainIdBytes(this.chainId);
    const record = options.record ?? toHex(randomBytes(16));
    const recordBytes = fromHex(record);
    let dek: Bytes;
    let wrapped: Bytes;
    let threshold: ThresholdShares | null = null;
    if (release) {
      const kEnv = randomSecret();
      const kThr = randomSecret();
      dek = deriveDataKey(kEnv, kThr, recordBytes, version);
      const n = release.share_keys.length;
      const thr = split(kThr, release.threshold, n);
      const env = split(kEnv, release.emergency_threshold, n);
      const shares: Envelope[] = [];
      for (const [i, json] of release.share_keys.entries()) {
        const both = new Uint8Array([...encodeShare(thr.shares[i]!), ...encodeShare(env.shares[i]!)]);
        shares.push(await seal(encryptionKeyFromJson(json), both, shareBinding(chainId, record, version, release.epoch, i)));
        both.fill(0);
      }
      threshold = {
        epoch: release.epoch,
        threshold: release.threshold,
        emergency_threshold: release.emergency_threshold,
        validators: release.validators,
        verifier: thr.verifier,
        emergency_verifier: env.verifier,
        shares,
      };
      wrapped = kEnv;
      kThr.fill(0);
    } else {
      dek = randomBytes(32);
      wrapped = dek;
    }
    const suite = release ? PayloadSuite.Threshold : PayloadSuite.Direct;
    const sealed = await sealPayload(dek, recordBytes, version, plaintext, suite);
    const meta = utf8(JSON.stringify({ ...metadata, size_bytes: plaintext.length, ...(sensitive ? { sensitive } : {}) }));
    const metaCt = (await sealPayload(dek, recordBytes, 0, meta)).ciphertext;
    const subject: KeySubject = { type: "record", record, version };
    const to: [KeyHolder, EncryptionKey][] = [[{ type: "member", member: me.member }, me.keys.encryption.publicKey]];
    if (sensitive) {
      for (const { member, key } of keys.sensitive) if (member !== me.member) to.push([{ type: "member", member }, key]);
    } else {
      to.push([{ type: "chart", patient, epoch: keys.chart.epoch }, keys.chart.publicKey]);
      for (const team of keys.teams) to.push([{ type: "team", team: team.team, epoch: team.epoch }, team.publicKey]);
    }
    const holders = to.map(([holder]) => holder);
    const envelopes: SidecarEnvelope[] = [];
    for (const [holder, key] of to) {
      envelopes.push({ holder, subject, envelope: await seal(key, wrapped, { chainId, subject, holder }) });
    }
    dek.fill(0);
    wrapped.fill(0);
    const digest = toHex(sealed.digest);
    await this.firstAnswer("PUT", `/v1/blobs/${digest}`, me, sealed.ciphertext);
    const kind: TxKind = {
      type: version === 1 ? "register_record" : "append_version",
      record,
      patient,
      version,
      digest,
      size_bytes: sealed.ciphertext.length,
      recipients: holders,
    };
    try {
      const committed = await this.transact(me, kind, { envelopes, metadata: metaCt, threshold });
      return { record, version, committed };
    } catch (e) {
      if (e instanceof ApiProblem && /version_mismatch/.test(e.message)) {
        throw new ApiProblem(409, "urn:medledger:problem:conflict", "another version of this record was written first; open it again");
      }
      throw e;
    }
  }

  /**
   * Commits a RecordAccess to the current version of `record` (the audit event), then fetches its
   * bundle and opens what this reader's envelopes wrap for it (`null`: none of them does).
   */
  async access(
    me: Identity,
    record: RecordId,
    purpose: PurposeOfUse,
    timings?: ReadTimings,
  ): Promise<{ access: Committed; bundle: AccessBundleJson; secret: Bytes | null }> {
    const { access, bundle } = await this.accessBundle(me, record, purpose, timings);
    return { access, bundle, secret: await this.wrappedSecret(me, bundle) };
  }

  /** The access committed, then its bundle as its evidence certified it. */
  private async accessBundle(
    me: Identity,
    record: RecordId,
    purpose: PurposeOfUse,
    timings?: ReadTimings,
  ): Promise<{ access: Committed; bundle: AccessBundleJson }> {
    const { access, version } = await this.commitAccess(me, record, purpose, timings);
    return { access, bundle: await this.certifiedBundle(me, access, record, version, timings) };
  }

  /** Commits a RecordAccess to the current version of `record`: the audit event, allowed or denied. */
  private async commitAccess(
    me: Identity,
    record: RecordId,
    purpose: PurposeOfUse,
    timings?: ReadTimings,
  ): Promise<{ access: Committed; version: number }> {
    const start = performance.now();
    const { version } = await this.get<{ version: number }>(`/v1/records/${record}/version`, me);
    const access = await this.transact(me, { type: "record_access", record, version, purpose });
    if (timings) timings.committedMs = performance.now() - start;
    return { access, version };
  }

  /** The bundle of a committed access, as its evidence certified it (metadata and threshold from certified state). */
  private async certifiedBundle(
    me: Identity,
    access: Committed,
    record: RecordId,
    version: number,
    timings?: ReadTimings,
  ): Promise<AccessBundleJson> {
    const start = performance.now();
    const { bundle, checked } = await this.checkedBundle(me, access.tx, record, version);
    if (timings) timings.bundleMs = performance.now() - start;
    const certified: AccessBundleJson = { ...bundle, metadata: checked.metadata ? Array.from(checked.metadata) : null };
    if (checked.threshold) certified.threshold = checked.threshold;
    else delete certified.threshold;
    return certified;
  }

  /**
   * The bundle of the allowed access `access`, from the first validator whose bundle checks
   * against the certified state (see `checkAccess`); a refusal every validator gives is that refusal.
   */
  private async checkedBundle(
    me: Identity,
    access: string,
    record: RecordId,
    version: number,
  ): Promise<{ bundle: AccessBundleJson; checked: CheckedBundle }> {
    const validators = await this.trusted();
    let refused: unknown = null;
    let last: unknown = new Error("no validator answered");
    for (const validator of this.validators) {
      try {
        const { bytes } = await this.send(validator, "GET", `/v1/access/${access}/bundle`, me);
        const bundle = JSON.parse(new TextDecoder().decode(bytes)) as AccessBundleJson;
        const checked = checkAccess(validators, this.chainId, bundle, record, version, this.seen);
        if (checked.height > this.seen) this.seen = checked.height;
        return { bundle, checked };
      } catch (e) {
        if (e instanceof ApiProblem && e.status !== 503) refused ??= e;
        else last = e;
      }
    }
    throw refused ?? last;
  }

  /**
   * An admin enrols the member of an enrolment request (its text, as the member handed it over)
   * once it checks: for this network, signed by the keys it enrols, of the admin's organisation.
   */
  async approveEnrolment(admin: Identity & { org: string }, requestText: string): Promise<{ enroll: Enroll; committed: Committed }> {
    const { enroll, sidecar } = verifyEnrolmentRequest(requestText, this.chainId);
    if (enroll.org !== admin.org) {
      throw new ApiProblem(403, "urn:medledger:problem:access-denied", "an admin enrols members of their own organisation only");
    }
    const committed = await this.transact(admin, { type: "enroll", ...enroll }, sidecar);
    return { enroll, committed };
  }

  /**
   * Reads the current version of `record` as `me`: the access is committed on the ledger first
   * (allowed or denied, it is an event in the patient's trail), then the key path and the
   * ciphertext are fetched, checked and opened here.
   */
  async read(me: Identity, record: RecordId, purpose: PurposeOfUse = "TREAT", timings?: ReadTimings): Promise<Opened> {
    const start = performance.now();
    const committed = await this.commitAccess(me, record, purpose, timings);
    const access = committed.access;
    // Once the access is committed, the validators' shares and the ciphertext are asked for
    // while the bundle is fetched and checked: nothing asked is used before it is checked
    // against the certified bundle (the shares against its commitments, the bytes against the
    // ledger's digest).
    const early = this.prefetch(me, access.tx);
    const bundle = await this.certifiedBundle(me, access, record, committed.version, timings);
    const entry = bundle.record;
    const version = entry.version;
    const recordBytes = fromHex(record);
    // Then the envelopes are opened and the shares combined at the same time. Without an
    // envelope of its own the reader is under break-glass, where the validators release
    // k_env's emergency shares too.
    const parallel = performance.now();
    const own = bundle.envelopes.length > 0;
    const threshold = bundle.threshold;
    const [secret, shares, ciphertext] = await Promise.all([
      this.wrappedSecret(me, bundle),
      threshold ? this.collectShares(me, access.tx, entry, threshold, !own, early.shares) : Promise.resolve(null),
      this.content(me, access.tx, fromHex(entry.digest), early.content),
    ]);
    if (timings) timings.keysMs = performance.now() - parallel;
    let dek: Bytes;
    if (threshold) {
      let { kThr, kEnv } = shares!;
      if (own && !secret) {
        // Envelopes, none of which opens for this reader: the emergency shares, if the ledger allows.
        kThr.fill(0);
        ({ kThr, kEnv } = await this.collectShares(me, access.tx, entry, threshold, true));
      }
      dek = deriveDataKey(secret ?? kEnv!, kThr, recordBytes, version);
      kThr.fill(0);
      kEnv?.fill(0);
      secret?.fill(0);
    } else {
      if (!secret) throw new Error("no wrapped key for this reader");
      dek = secret;
    }
    const suite = bundle.threshold ? PayloadSuite.Threshold : PayloadSuite.Direct;
    const plaintext = await openPayload(dek, ciphertext, { record: recordBytes, version, digest: fromHex(entry.digest), suite });
    let metadata: Record<string, unknown> | null = null;
    if (bundle.metadata) {
      try {
        const opened = await openPayload(dek, Uint8Array.from(bundle.metadata), { record: recordBytes, version: 0 });
        metadata = JSON.parse(new TextDecoder().decode(opened)) as Record<string, unknown>;
      } catch {
        metadata = null;
      }
    }
    dek.fill(0);
    if (timings) timings.totalMs = performance.now() - start;
    return { entry, access, plaintext, metadata };
  }

  /**
   * Asks, as soon as an access is committed, for what its read will need: the ciphertext from the
   * first validator, and each configured validator's released share (by stable index). Nothing
   * here is believed: `content` and `collectShares` check what they use.
   */
  private prefetch(me: Identity, access: string): { content: Promise<Bytes>; shares: Map<number, Promise<Bytes>> } {
    const quiet = <T>(p: Promise<T>): Promise<T> => {
      // Handled later, or never (a validator that holds no share): no unhandled rejection.
      p.catch(() => undefined);
      return p;
    };
    const content = quiet(this.send(this.validators[0]!, "GET", `/v1/access/${access}/content`, me).then((a) => a.bytes));
    const shares = new Map<number, Promise<Bytes>>();
    for (const [index, address] of this.validators.entries()) {
      shares.set(index, quiet(this.send(address, "GET", `/v1/access/${access}/share`, me).then((a) => a.bytes)));
    }
    return { content, shares };
  }

  /**
   * The ciphertext an allowed access names, from the first validator that serves bytes with the
   * certified digest (one that serves others is passed over).
   */
  private async content(me: Identity, access: string, digest: Bytes, early?: Promise<Bytes>): Promise<Bytes> {
    if (early) {
      const bytes = await early.catch(() => null);
      if (bytes && equal(sha256(bytes), digest)) return bytes;
    }
    let refused: unknown = null;
    for (const validator of this.validators) {
      try {
        const { bytes } = await this.send(validator, "GET", `/v1/access/${access}/content`, me);
        if (equal(sha256(bytes), digest)) return bytes;
      } catch (e) {
        if (e instanceof ApiProblem && e.status !== 503) refused ??= e;
      }
    }
    throw refused ?? new Error("the ciphertext is not the one the ledger names");
  }

  /**
   * What this reader's envelopes wrap for the bundle's record: its data key, or `k_env` under
   * threshold release. Directly for the reader, through a care team's key (back one epoch per
   * link), or through the chart key (back to the record's chart epoch).
   */
  private async wrappedSecret(me: Identity, bundle: AccessBundleJson): Promise<Bytes | null> {
    const entry = bundle.record;
    const patient = entry.patient;
    const chainId = chainIdBytes(this.chainId);
    const subject: KeySubject = { type: "record", record: entry.record, version: entry.version };
    const meHolder: KeyHolder = { type: "member", member: me.member };
    const find = (holder: KeyHolder, s: KeySubject) => bundle.envelopes.find((e) => sameJson(e.holder, holder) && sameJson(e.subject, s));
    const broken = () => new Error("the key path to this record is broken");
    const openWith = (key: DecryptionKey, e: SidecarEnvelopeJson) =>
      key.open(envelopeOf(e.envelope), { chainId, subject: e.subject, holder: e.holder });
    const openMine = (e: SidecarEnvelopeJson) => this.openMine(me, e);
    const downChart = async (key: DecryptionKey, epoch: number): Promise<Bytes> => {
      while (epoch > entry.chart_epoch) {
        const link = find({ type: "chart", patient, epoch }, { type: "chart", patient, epoch: epoch - 1 });
        if (!link) throw broken();
        key = await chartKey(await openWith(key, link));
        epoch -= 1;
      }
      const toRecord = find({ type: "chart", patient, epoch }, subject);
      if (!toRecord) throw broken();
      return openWith(key, toRecord);
    };
    const chartOf = (holder: KeyHolder) => {
      for (const e of bundle.envelopes) {
        if (sameJson(e.holder, holder) && e.subject.type === "chart" && e.subject.patient === patient) {
          return { e, epoch: e.subject.epoch };
        }
      }
      return null;
    };
    const direct = find(meHolder, subject);
    if (direct) {
      try {
        return await openMine(direct);
      } catch {
        // wrapped for a key this reader no longer holds: a team or the chart may lead there
      }
    }
    const teamKey = bundle.envelopes.find((e) => sameJson(e.holder, meHolder) && e.subject.type === "team");
    if (teamKey && teamKey.subject.type === "team") {
      const team = teamKey.subject.team;
      let epoch = teamKey.subject.epoch;
      let key = await chartKey(await openMine(teamKey));
      for (;;) {
        const holder: KeyHolder = { type: "team", team, epoch };
        const e = find(holder, subject);
        if (e) return openWith(key, e);
        const toChart = chartOf(holder);
        if (toChart) return downChart(await chartKey(await openWith(key, toChart.e)), toChart.epoch);
        if (epoch === 0) throw broken();
        const link = find(holder, { type: "team", team, epoch: epoch - 1 });
        if (!link) throw broken();
        key = await chartKey(await openWith(key, link));
        epoch -= 1;
      }
    }
    const toChart = chartOf(meHolder);
    if (!toChart) return null;
    return downChart(await chartKey(await openMine(toChart.e)), toChart.epoch);
  }

  /**
   * Asks each validator holding a share of the record's `k_thr` for it, keeps those that open
   * for this reader and match their commitments, and combines the first `threshold` of them.
   * Under break-glass (`emergency`: the reader holds no envelope) it needs `emergency_threshold`
   * validators, each releasing its emergency share of `k_env` too, and also returns `k_env`.
   */
  private async collectShares(
    me: Identity,
    access: string,
    entry: RecordEntry,
    pub: ThresholdPublicJson,
    emergency = false,
    early?: Map<number, Promise<Bytes>>,
  ): Promise<{ kThr: Bytes; kEnv: Bytes | null }> {
    const verifier = decodeVerifier(pub.verifier.map((c) => fromHex(c)));
    const emergencyVerifier = decodeVerifier(pub.emergency_verifier.map((c) => fromHex(c)));
    const threshold = pub.threshold;
    const needed = emergency ? pub.emergency_threshold : threshold;
    if (
      threshold < 1 ||
      needed < threshold ||
      needed > pub.validators.length ||
      verifier.length !== threshold ||
      emergencyVerifier.length !== pub.emergency_threshold
    ) {
      throw new Error("the record's shares do not fit the network's validators");
    }
    const chainId = chainIdBytes(this.chainId);
    const shares: [Share, Share | null][] = [];
    // Every holder is asked at once, but only as many released shares are opened (a KEM
    // decapsulation each, the costly step here) as are still needed: the others wait, and are
    // opened only if one of those fails its check.
    let opening = 0;
    const waiting: (() => void)[] = [];
    const enough = new Error("enough shares");
    const asks = pub.validators.map(async (validator, i): Promise<[Share, Share | null]> => {
      const asked = early?.get(validator);
      const bytes = asked ? await asked : (await this.send(await this.addressOf(validator), "GET", `/v1/access/${access}/share`, me)).bytes;
      const released = JSON.parse(new TextDecoder().decode(bytes)) as ReleasedShareJson;
      if (released.validator !== i || released.epoch !== pub.epoch || released.emergency !== emergency) {
        throw new Error("a validator released another share than asked");
      }
      while (shares.length + opening >= needed) {
        if (shares.length >= needed) throw enough;
        await new Promise<void>((wake) => waiting.push(wake));
      }
      opening += 1;
      const binding = releaseBinding(chainId, entry.record, entry.version, pub.epoch, i, me.member);
      let opened: Bytes;
      try {
        opened = await me.keys.encryption.open(envelopeOf(released.envelope), binding);
      } finally {
        // (A waiting share is woken once this ask settles, checked or failed: see below.)
        opening -= 1;
      }
      if (opened.length !== (emergency ? 2 * SHARE_BYTES : SHARE_BYTES)) throw new Error("a released share has the wrong length");
      const check = (bytes: Bytes, v: typeof verifier) => {
        const share = decodeShare(bytes);
        if (share.id !== i + 1 || !verifyShare(v, share)) throw new Error("a released share does not match its commitments");
        return share;
      };
      const thr = check(opened.subarray(0, SHARE_BYTES), verifier);
      const env = emergency ? check(opened.subarray(SHARE_BYTES), emergencyVerifier) : null;
      opened.fill(0);
      return [thr, env];
    });
    const failures: unknown[] = [];
    await new Promise<void>((resolve) => {
      let settled = 0;
      for (const ask of asks) {
        ask
          .then((s) => shares.push(s))
          .catch((e) => {
            if (e !== enough) failures.push(e);
          })
          .finally(() => {
            settled += 1;
            if (shares.length >= needed || settled === asks.length) resolve();
            // A share that waited is opened now if this one failed, or let go.
            waiting.shift()?.();
          });
      }
    });
    // Those still waiting give up (enough were opened).
    for (const wake of waiting.splice(0)) wake();
    if (shares.length < needed) {
      const denied = failures.find((e) => e instanceof ApiProblem && e.denied);
      if (denied && shares.length === 0) throw denied;
      throw new Error(`only ${shares.length} of the ${needed} validator shares needed were released (${String(failures[0])})`);
    }
    const kThr = combine(shares.slice(0, threshold).map(([t]) => t));
    if (kThr.length !== HALF_KEY_BYTES) throw new Error("k_thr is malformed");
    const kEnv = emergency ? combine(shares.slice(0, needed).map(([, e]) => e!)) : null;
    return { kThr, kEnv };
  }

  /**
   * Emergency access (break-glass) to `patient`'s records, for `durationMs`, with a reason; a
   * note, when given, is encrypted here for the patient and every active auditor (their keys
   * from certified state) and only they read it. The opening is flagged to them in any case.
   */
  async breakGlass(
    me: Identity,
    patient: MemberId,
    reason: EmergencyReason | null,
    durationMs: number,
    note: string | null,
  ): Promise<Committed> {
    const kind: TxKind = { type: "break_glass", patient, reason, duration_ms: durationMs };
    if (!note) return this.transact(me, kind);
    const text = utf8(note);
    if (text.length === 0 || text.length > BREAK_GLASS_NOTE_BYTES_MAX) throw new Error(`a note is 1 to ${BREAK_GLASS_NOTE_BYTES_MAX} bytes`);
    // MemberStatus in JSON: "active" or "suspended".
    const auditors = (await this.staff("auditor")).filter((a) => a.status === "active");
    if (auditors.length === 0 || auditors.length > NOTE_READERS_MAX) throw new Error(`a note needs 1 to ${NOTE_READERS_MAX} auditors on the network`);
    const key = randomBytes(32);
    const idBytes = randomBytes(16);
    const ciphertext = (await sealPayload(key, idBytes, 0, text)).ciphertext;
    const subject: KeySubject = { type: "note", id: Array.from(idBytes) };
    const chainId = chainIdBytes(this.chainId);
    const envelopes: SidecarEnvelope[] = [];
    for (const member of [patient, ...auditors.map((a) => a.id)]) {
      const holder: KeyHolder = { type: "member", member };
      envelopes.push({ holder, subject, envelope: await seal(await this.provedEncryptionKey(me, member), key, { chainId, subject, holder }) });
    }
    key.fill(0);
    return this.transact(me, kind, { envelopes, metadata: ciphertext });
  }

  /** The note of break-glass `tx`, for the patient or an auditor it was written for. */
  async breakGlassNote(me: Identity, tx: string): Promise<string> {
    const note = await this.get<{ envelope: SidecarEnvelopeJson; ciphertext: number[] }>(`/v1/tx/${tx}/note`, me);
    const subject = note.envelope.subject;
    if (subject.type !== "note") throw new Error("a note's key is wrapped under another subject");
    const chainId = chainIdBytes(this.chainId);
    let key: Bytes | null = null;
    for (const k of [me.keys.encryption, ...me.keys.previous]) {
      try {
        key = await k.open(envelopeOf(note.envelope.envelope), { chainId, subject, holder: note.envelope.holder });
        break;
      } catch {
        // an earlier key, perhaps
      }
    }
    if (!key || key.length !== 32) throw new Error("the note's key does not open for this member");
    const text = await openPayload(key, Uint8Array.from(note.ciphertext), { record: Uint8Array.from(subject.id), version: 0 });
    key.fill(0);
    return new TextDecoder("utf-8", { fatal: true }).decode(text);
  }

  /**
   * The receipt of committed transaction `tx` (for an event in `patient`'s trail when `me` did not
   * sign it), verified here against the genesis validators: its bytes and what it proves.
   */
  async receipt(me: Identity, tx: string, patient?: MemberId): Promise<{ bytes: Bytes; verified: VerifiedReceipt }> {
    const query = patient ? `?patient=${patient}` : "";
    const { bytes } = await this.firstAnswer("GET", `/v1/tx/${tx}/receipt${query}`, me);
    const verified = await this.verifyReceipt(bytes);
    if (verified.tx !== tx) throw new Error("the receipt is of another transaction");
    return { bytes, verified };
  }

  /** Verifies receipt bytes (from a file, say) against the genesis validators of this client's network. */
  async verifyReceipt(bytes: Bytes): Promise<VerifiedReceipt> {
    return verifyReceipt(bytes, await this.trusted(), this.chainId);
  }

  /** The auditors' review queue: flagged events (break-glass, emergency reads), oldest first. */
  async flagged(me: Identity, max = 1_000): Promise<{ patient: MemberId; event: AuditEvent }[]> {
    const out: { patient: MemberId; event: AuditEvent }[] = [];
    let after = "";
    while (out.length < max) {
      const page = await this.firstAnswer("GET", `/v1/audit/flagged${after}`, me);
      out.push(...(JSON.parse(new TextDecoder().decode(page.bytes)) as { patient: MemberId; event: AuditEvent }[]));
      if (!page.next) break;
      after = `?after=${page.next}`;
    }
    return out.slice(0, max);
  }
}

/** Longest break-glass note (bytes) and most note readers (the patient and the auditors). */
export const BREAK_GLASS_NOTE_BYTES_MAX = 1024;
export const NOTE_READERS_MAX = 64;

/** `GET /v1/tx/{id}`'s answer (serde's internally tagged form). */
type TxStatusJson =
  | { status: "pending" }
  | { status: "unknown" }
  | { status: "committed"; height: number; index: number; time: number; outcome: { outcome: "applied" | "rejected"; reason?: unknown } };

function problemOf(status: number, body: Bytes): ApiProblem {
  try {
    const problem = JSON.parse(new TextDecoder().decode(body)) as { type?: string; title?: string };
    return new ApiProblem(status, problem.type ?? "about:blank", problem.title ?? `the validator answered ${status}`);
  } catch {
    return new ApiProblem(status, "about:blank", `the validator answered ${status}`);
  }
}

function envelopeOf(json: EnvelopeJson): Envelope {
  return { suite: kemSuiteOf(json.suite), encapsulatedKey: fromHex(json.encapsulated_key), ciphertext: fromHex(json.ciphertext) };
}

/** A chart's or team's key from the secret its envelope wraps: suite (1) ‖ secret key. */
async function chartKey(secret: Bytes): Promise<DecryptionKey> {
  if (secret.length < 1) throw new Error("empty chart key");
  return DecryptionKey.fromBytes(kemSuite(secret[0]!), secret.subarray(1));
}

/** The binding of validator `validator`'s share of `record`/`version`, released to `reader`. */
export function releaseBinding(
  chainId: Bytes,
  record: RecordId,
  version: number,
  epoch: number,
  validator: number,
  reader: MemberId,
): Binding {
  return shareBindingFor(chainId, record, version, epoch, validator, (w) => {
    w.u8(1);
    writeId16(w, reader, "reader");
  });
}

/** The binding of validator `validator`'s share of `record`/`version`, wrapped by the author for its share key of `epoch`. */
export function shareBinding(chainId: Bytes, record: RecordId, version: number, epoch: number, validator: number): Binding {
  return shareBindingFor(chainId, record, version, epoch, validator, (w) => {
    w.u8(0);
    w.u32(epoch);
    w.u32(validator);
  });
}

function shareBindingFor(
  chainId: Bytes,
  record: RecordId,
  version: number,
  epoch: number,
  validator: number,
  writeHolder: (w: Writer) => void,
): Binding {
  const subject = encode((w) => {
    writeId16(w, record, "record");
    w.u32(version);
    w.u32(epoch);
    w.u32(validator);
  });
  return {
    chainId,
    subjectId: sha256(utf8("medledger/share-subject/v1"), subject),
    version,
    recipientId: sha256(utf8("medledger/share-holder/v1"), encode(writeHolder)),
  };
}
