// Care teams (DESIGN §4), done on a doctor's device: a team is a key holder like a member, its key
// (per epoch) wrapped for each member; a patient's chart-wide grant to the team reaches every
// member through it. Adding a member wraps the current key for them; removing one moves the team
// to a fresh key for those who stay (with a link back), so the removed member holds no key to
// what is written after. The CLI's counterpart is `crates/sdk/src/ops/teams.rs`.

import { randomBytes, toHex } from "./bytes.js";
import type { Client, Committed, Identity, SidecarEnvelopeJson } from "./client.js";
import type { KeySubject, MemberId } from "./ids.js";
import type { SidecarEnvelope } from "./sidecar.js";
import { DecryptionKey, KemSuite } from "./wrap.js";

/** A care team as `GET /v1/members/{id}/teams` lists it. */
export interface Team {
  team: MemberId;
  org: string;
  epoch: number;
  public_key: { suite: string | number; bytes: string };
  members: MemberId[];
  created_by: MemberId;
  created_at: number;
}

/** The care teams `me` belongs to. */
export function myTeams(client: Client, me: Identity): Promise<Team[]> {
  return client.get<Team[]>(`/v1/members/${me.member}/teams`, me);
}

/** A fresh team key: its public key's JSON form, and its secret as envelopes carry it (suite ‖ key). */
async function freshKey(): Promise<{ publicKey: { suite: number; bytes: string }; secret: Uint8Array; key: DecryptionKey }> {
  const key = await DecryptionKey.generate(KemSuite.XWing);
  return {
    publicKey: { suite: key.publicKey.suite, bytes: toHex(key.publicKey.bytes) },
    secret: new Uint8Array([key.suite, ...key.exportSecret()]),
    key,
  };
}

async function sealForMembers(client: Client, me: Identity, members: MemberId[], subject: KeySubject, secret: Uint8Array): Promise<SidecarEnvelope[]> {
  const out: SidecarEnvelope[] = [];
  for (const member of members) {
    const key = member === me.member ? me.keys.encryption.publicKey : await client.provedEncryptionKey(me, member);
    out.push(await client.sealFor(key, { type: "member", member }, subject, secret));
  }
  return out;
}

/** The doctor `me` creates a care team of themself and `members`; returns its id. */
export async function createTeam(client: Client, me: Identity, members: MemberId[]): Promise<{ team: MemberId; committed: Committed }> {
  const team = toHex(randomBytes(16));
  const all = [...new Set([...members, me.member])].sort();
  const fresh = await freshKey();
  try {
    const envelopes = await sealForMembers(client, me, all, { type: "team", team, epoch: 0 }, fresh.secret);
    const committed = await client.transact(me, { type: "team_create", team, public_key: fresh.publicKey, members: all }, { envelopes, metadata: null });
    return { team, committed };
  } finally {
    fresh.secret.fill(0);
    fresh.key.wipe();
  }
}

/** Team `team`'s current key, opened from `me`'s envelope (a member's), with the team's entry. */
async function teamSecret(client: Client, me: Identity, team: MemberId): Promise<{ entry: Team; secret: Uint8Array }> {
  const envelope = await client.get<SidecarEnvelopeJson>(`/v1/teams/${team}/envelope`, me);
  if (envelope.subject.type !== "team" || envelope.subject.team !== team) throw new Error("team envelope of the wrong kind");
  const entry = await client.get<Team>(`/v1/teams/${team}`, me);
  if (entry.epoch !== envelope.subject.epoch) throw new Error("the care team moved on meanwhile; try again");
  return { entry, secret: await client.openMine(me, envelope) };
}

/** A doctor of `team` adds `member`: the team's current key wrapped for them. */
export async function addToTeam(client: Client, me: Identity, team: MemberId, member: MemberId): Promise<Committed> {
  const { entry, secret } = await teamSecret(client, me, team);
  try {
    const key = await client.provedEncryptionKey(me, member);
    const envelope = await client.sealFor(key, { type: "member", member }, { type: "team", team, epoch: entry.epoch }, secret);
    return await client.transact(me, { type: "team_add", team, member }, { envelopes: [envelope], metadata: null });
  } finally {
    secret.fill(0);
  }
}

/**
 * A doctor of `team` removes `member` (or `me` leaves): a fresh key for the remaining members,
 * with the current key wrapped for it (the records so far stay readable to them).
 */
export async function removeFromTeam(client: Client, me: Identity, team: MemberId, member: MemberId): Promise<Committed> {
  const { entry, secret } = await teamSecret(client, me, team);
  const fresh = await freshKey();
  try {
    const epoch = entry.epoch + 1;
    const remaining = entry.members.filter((m) => m !== member);
    const envelopes = await sealForMembers(client, me, remaining, { type: "team", team, epoch }, fresh.secret);
    envelopes.push(await client.sealFor(fresh.key.publicKey, { type: "team", team, epoch }, { type: "team", team, epoch: entry.epoch }, secret));
    return await client.transact(me, { type: "team_remove", team, member, public_key: fresh.publicKey }, { envelopes, metadata: null });
  } finally {
    secret.fill(0);
    fresh.secret.fill(0);
    fresh.key.wipe();
  }
}
