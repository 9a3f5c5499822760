// Consent, done on the patient's device (or a delegate's): chart-wide grants to members and care
// teams, one record shared, revocations that move the chart to a key the revoked never hold, and
// delegates. Every key is wrapped here; what goes to the ledger is envelopes and public keys.
// The CLI's counterpart is `crates/sdk/src/ops/consent.rs`.

import { toHex } from "./bytes.js";
import { decodeTeam, teamStateKey } from "./certified.js";
import { ApiProblem, type Client, type Committed, type Identity } from "./client.js";
import type { KeyHolder, KeySubject, MemberId, RecordId } from "./ids.js";
import type { SidecarEnvelope } from "./sidecar.js";
import type { NewChartEpoch, TxKind } from "./tx.js";
import { DecryptionKey, type EncryptionKey, KemSuite } from "./wrap.js";

/** A care team's current key from certified state (`null`: `id` is no team). */
export async function provedTeam(
  client: Client,
  me: Identity,
  id: MemberId,
  patient: MemberId,
): Promise<{ team: MemberId; epoch: number; publicKey: EncryptionKey; members: MemberId[] } | null> {
  try {
    // Whether `id` is a team is any validator's say; its key is certified state.
    await client.get(`/v1/teams/${id}?patient=${patient}`, me);
  } catch (e) {
    if (e instanceof ApiProblem && e.status === 404) return null;
    throw e;
  }
  const state = await client.proved(me, `/v1/teams/${id}/proof?patient=${patient}`);
  const value = state.entries.get(toHex(teamStateKey(id)));
  if (!value) throw new Error("the validators' evidence does not show that care team");
  const team = decodeTeam(value);
  if (team.team !== id) throw new Error("the evidence shows another care team");
  return team;
}

/**
 * `patient`'s chart moves to a fresh key epoch, wrapped for everyone who keeps holding it: the
 * patient (for `patientKey` when given: their next key at a custody claim), each live chart-wide
 * grantee but `revoked`, each delegate but `dismissed`; with a link back to the current key (the
 * records so far). `me` is the patient or a delegate, and holds the current key.
 */
export async function nextChartEpoch(
  client: Client,
  me: Identity,
  patient: MemberId,
  leaving: { revoked?: MemberId; dismissed?: MemberId; patientKey?: EncryptionKey } = {},
): Promise<{ newChart: NewChartEpoch; envelopes: SidecarEnvelope[] }> {
  const chart = await client.chart(me, patient);
  const epoch = chart.epoch + 1;
  const recipients = new Set<MemberId>([patient]);
  for (const holder of chart.holders.filter((m) => m !== leaving.revoked)) {
    try {
      const grant = await client.get<{ expires_at: number | null }>(`/v1/grants/${patient}/${holder}`, me);
      if (grant.expires_at === null || Date.now() < grant.expires_at) recipients.add(holder);
    } catch (e) {
      if (!(e instanceof ApiProblem && e.status === 404)) throw e;
    }
  }
  for (const d of chart.delegates ?? []) if (d !== leaving.dismissed) recipients.add(d);
  const sorted = [...recipients].sort();
  const current = await client.chartSecret(me, patient);
  if (current.epoch !== chart.epoch) {
    current.secret.fill(0);
    throw new ApiProblem(409, "urn:medledger:problem:conflict", "the chart moved on meanwhile; try again");
  }
  const next = await DecryptionKey.generate(KemSuite.XWing);
  const nextSecret = new Uint8Array([next.suite, ...next.exportSecret()]);
  try {
    const subject: KeySubject = { type: "chart", patient, epoch };
    // The link back: the current key wrapped for the next one.
    const link: KeyHolder = { type: "chart", patient, epoch };
    const back: KeySubject = { type: "chart", patient, epoch: current.epoch };
    const envelopes = [await client.sealFor(next.publicKey, link, back, current.secret)];
    for (const member of sorted) {
      const key =
        member === patient
          ? (leaving.patientKey ?? (me.member === patient ? me.keys.encryption.publicKey : await client.provedEncryptionKey(me, member)))
          : await client.provedEncryptionKey(me, member);
      envelopes.push(await client.sealFor(key, { type: "member", member }, subject, nextSecret));
    }
    const publicKey = { suite: next.publicKey.suite, bytes: toHex(next.publicKey.bytes) };
    return { newChart: { public_key: publicKey, recipients: sorted }, envelopes };
  } finally {
    current.secret.fill(0);
    nextSecret.fill(0);
    next.wipe();
  }
}

/**
 * `me` (the patient, or a delegate acting for them) gives `grantee` access to `patient`'s whole
 * chart (until `expiresAt`, ms, when given; with `write`, a doctor may add records too). A member
 * gets the chart's current key wrapped for their enrolled key; a care team gets it wrapped for
 * the team's key (the records so far) and the chart moves to a next epoch for everyone else, so
 * records from now on reach the team through its own key (and a member it removes holds none).
 */
export async function grantChart(
  client: Client,
  me: Identity,
  patient: MemberId,
  grantee: MemberId,
  options: { expiresAt?: number | null; write?: boolean } = {},
): Promise<Committed> {
  const team = await provedTeam(client, me, grantee, patient);
  const { epoch, secret } = await client.chartSecret(me, patient);
  const subject: KeySubject = { type: "chart", patient, epoch };
  try {
    const base = { type: "grant", patient, grantee, scope: "all", write: options.write ?? false, expires_at: options.expiresAt ?? null, chart_epoch: epoch } as const;
    if (!team) {
      const key = await client.provedEncryptionKey(me, grantee);
      const envelope = await client.sealFor(key, { type: "member", member: grantee }, subject, secret);
      return await client.transact(me, { ...base, new_chart: null }, { envelopes: [envelope], metadata: null });
    }
    const toTeam = await client.sealFor(team.publicKey, { type: "team", team: grantee, epoch: team.epoch }, subject, secret);
    const { newChart, envelopes } = await nextChartEpoch(client, me, patient);
    return await client.transact(me, { ...base, new_chart: newChart }, { envelopes: [toTeam, ...envelopes], metadata: null });
  } finally {
    secret.fill(0);
  }
}

/**
 * `me` (the patient or a delegate) takes chart-wide access from `grantee`: a member's revocation
 * moves the chart to a fresh key epoch they never hold; a care team never held the chart's
 * current key, so nothing moves.
 */
export async function revokeChart(client: Client, me: Identity, patient: MemberId, grantee: MemberId): Promise<Committed> {
  const chart = await client.chart(me, patient);
  if (chart.teams?.includes(grantee)) {
    return client.transact(me, { type: "revoke", patient, grantee, scope: "all", new_chart: null });
  }
  const { newChart, envelopes } = await nextChartEpoch(client, me, patient, { revoked: grantee });
  return client.transact(me, { type: "revoke", patient, grantee, scope: "all", new_chart: newChart }, { envelopes, metadata: null });
}

/**
 * The patient `me` (or a delegate) shares one record with `grantee`, a member or a care team: the
 * record's key is read like any reader's (an access in the patient's trail, purpose PATRQT) and
 * what it opens to (under threshold release `k_env`: the grantee still needs the validators'
 * shares at each read) wrapped for the grantee's enrolled key or the team's current key.
 */
export async function grantRecord(
  client: Client,
  me: Identity,
  record: RecordId,
  grantee: MemberId,
  expiresAt: number | null = null,
): Promise<Committed> {
  const { bundle, secret } = await client.access(me, record, "PATRQT");
  if (!secret) throw new ApiProblem(403, "urn:medledger:problem:access-denied", "no wrapped key for this reader");
  try {
    const patient = bundle.record.patient;
    const team = await provedTeam(client, me, grantee, patient);
    const [key, holder]: [EncryptionKey, KeyHolder] = team
      ? [team.publicKey, { type: "team", team: grantee, epoch: team.epoch }]
      : [await client.provedEncryptionKey(me, grantee), { type: "member", member: grantee }];
    const subject: KeySubject = { type: "record", record, version: bundle.record.version };
    const envelope = await client.sealFor(key, holder, subject, secret);
    const kind: TxKind = { type: "grant", patient, grantee, scope: { record }, write: false, expires_at: expiresAt, chart_epoch: null, new_chart: null };
    return await client.transact(me, kind, { envelopes: [envelope], metadata: null });
  } finally {
    secret.fill(0);
  }
}

/**
 * The patient `me` appoints `delegate` (another patient: a guardian, a proxy), who then acts for
 * them in grants, revocations, reads and their trail: the chart's current key wrapped for them.
 */
export async function appointDelegate(client: Client, me: Identity, delegate: MemberId): Promise<Committed> {
  const key = await client.provedEncryptionKey(me, delegate);
  const { epoch, secret } = await client.chartSecret(me, me.member);
  try {
    const envelope = await client.sealFor(key, { type: "member", member: delegate }, { type: "chart", patient: me.member, epoch }, secret);
    const kind: TxKind = { type: "delegate", patient: me.member, delegate, appoint: true, chart_epoch: epoch, new_chart: null };
    return await client.transact(me, kind, { envelopes: [envelope], metadata: null });
  } finally {
    secret.fill(0);
  }
}

/** The patient `me` dismisses `delegate`: the chart moves to a key epoch they never hold. */
export async function dismissDelegate(client: Client, me: Identity, delegate: MemberId): Promise<Committed> {
  const { newChart, envelopes } = await nextChartEpoch(client, me, me.member, { dismissed: delegate });
  const kind: TxKind = { type: "delegate", patient: me.member, delegate, appoint: false, chart_epoch: null, new_chart: newChart };
  return client.transact(me, kind, { envelopes, metadata: null });
}

/** A grant as the ledger keeps it (`GET /v1/charts/{patient}/grants`). */
export interface GrantEntry {
  patient: MemberId;
  grantee: MemberId;
  scope: "all" | "sensitive" | { record: RecordId };
  write: boolean;
  granted_at: number;
  expires_at: number | null;
  tx: string;
}

/** Every grant of `patient`'s (live or expired), for the patient or a delegate: at most `max`. */
export async function listGrants(client: Client, me: Identity, patient: MemberId, max = 10_000): Promise<GrantEntry[]> {
  const out: GrantEntry[] = [];
  let after = "";
  while (out.length < max) {
    const page = await client.firstAnswer("GET", `/v1/charts/${patient}/grants${after}`, me);
    out.push(...(JSON.parse(new TextDecoder().decode(page.bytes)) as GrantEntry[]));
    if (!page.next) break;
    after = `?after=${page.next}`;
  }
  return out.slice(0, max);
}

/** `me` (the patient or a delegate) takes back `grantee`'s grant on one record. */
export function revokeRecord(client: Client, me: Identity, patient: MemberId, grantee: MemberId, record: RecordId): Promise<Committed> {
  return client.transact(me, { type: "revoke", patient, grantee, scope: { record }, new_chart: null });
}
