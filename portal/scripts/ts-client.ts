// The portal's TypeScript client driven from a CLI home (client.json and a sealed identity
// keystore), as a second implementation of `medledger record get` and `record put`: the
// transactions are signed here and committed by the validators, records encrypted and decrypted
// here. Used by the Rust end-to-end test crates/cli/tests/portal.rs against real validators.
//
//   MEDLEDGER_PASSPHRASE=… node dist/scripts/ts-client.js HOME ALIAS read RECORD [PURPOSE]
//   MEDLEDGER_PASSPHRASE=… node dist/scripts/ts-client.js HOME ALIAS write PATIENT FILE
//   MEDLEDGER_PASSPHRASE=… node dist/scripts/ts-client.js HOME ALIAS request ROLE ORG [NAME]
//       (makes ALIAS's keys: HOME/identities/ALIAS.key, and prints the enrolment request)
//   MEDLEDGER_PASSPHRASE=… node dist/scripts/ts-client.js HOME ADMIN approve REQUEST_FILE
//   node dist/scripts/ts-client.js HOME - verify-receipt FILE
//       (a receipt file checked against the genesis validators; no key needed)
//   MEDLEDGER_PASSPHRASE=… node dist/scripts/ts-client.js HOME ALIAS bench-read RECORD N
//       (N reads; prints the time after each access committed: p50, p99, in ms)
//
// Prints one JSON line (read: {record, version, access, height, plaintext (hex), metadata};
// write: {record, height}); on a refusal prints one line on stderr and exits 3 (denied) or 1.

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { ApiProblem, Client, type ReadTimings } from "../packages/protocol/src/client.js";
import { type Role, requestEnrolment } from "../packages/protocol/src/enrolment.js";
import { type KeyFile, identityFromSecret, openKeystore } from "../packages/protocol/src/keystore.js";
import { fromHex, toHex, utf8 } from "../packages/protocol/src/bytes.js";
import { PURPOSES, type PurposeOfUse } from "../packages/protocol/src/tx.js";

async function main(): Promise<number> {
  const [home, alias, command, target, extra, more] = process.argv.slice(2);
  const purpose = command === "read" ? (extra ?? "TREAT") : "TREAT";
  const known =
    command === "read" ||
    command === "approve" ||
    command === "verify-receipt" ||
    ((command === "write" || command === "request" || command === "bench-read") && extra);
  const usage = !home || !alias || !target || !known;
  if (usage || !(PURPOSES as readonly string[]).includes(purpose)) {
    process.stderr.write(
      "usage: ts-client HOME ALIAS read RECORD [PURPOSE] | write PATIENT FILE | request ROLE ORG [NAME] | approve FILE | bench-read RECORD N | verify-receipt FILE\n",
    );
    return 2;
  }
  if (command === "verify-receipt") {
    const config = JSON.parse(readFileSync(join(home, "client.json"), "utf8")) as { chain_id: string; nodes: string[] };
    try {
      const checked = await new Client(config.nodes, config.chain_id).verifyReceipt(new Uint8Array(readFileSync(target)));
      const out = { ...checked, height: Number(checked.height), time: Number(checked.time), certifiedHeight: Number(checked.certifiedHeight) };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return 0;
    } catch (e) {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      return 4;
    }
  }
  const passphrase = process.env.MEDLEDGER_PASSPHRASE;
  if (!passphrase) {
    process.stderr.write("MEDLEDGER_PASSPHRASE is not set\n");
    return 2;
  }
  const config = JSON.parse(readFileSync(join(home, "client.json"), "utf8")) as { chain_id: string; nodes: string[] };
  if (command === "request") {
    const keyPath = join(home, "identities", `${alias}.key`);
    if (existsSync(keyPath)) {
      process.stderr.write(`${alias} exists in this home\n`);
      return 2;
    }
    try {
      const made = await requestEnrolment(config.chain_id, target as Role, extra!, more ?? null, passphrase);
      writeFileSync(keyPath, JSON.stringify(made.keyFile), { mode: 0o600 });
      process.stdout.write(`${JSON.stringify(made.request)}\n`);
      return 0;
    } catch (e) {
      process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
      return 2;
    }
  }
  const file = JSON.parse(readFileSync(join(home, "identities", `${alias}.key`), "utf8")) as KeyFile;
  const secret = await openKeystore(utf8(passphrase), fromHex(file.sealed));
  const keys = await identityFromSecret(file.suite, secret);
  secret.fill(0);
  const client = new Client(config.nodes, config.chain_id);
  try {
    const me = { member: file.member, keys };
    if (command === "bench-read") {
      const n = Math.min(Math.max(Number(extra), 1), 10_000);
      const phases = { after_commit: [] as number[], commit: [] as number[], bundle: [] as number[], keys: [] as number[] };
      for (let i = 0; i < n; i++) {
        const t: ReadTimings = {};
        await client.read(me, target, "TREAT", t);
        phases.commit.push(t.committedMs!);
        phases.after_commit.push(t.totalMs! - t.committedMs!);
        phases.bundle.push(t.bundleMs!);
        phases.keys.push(t.keysMs!);
      }
      const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
      const ms = (x: number) => Math.round(x * 10) / 10;
      // The first read of a session (connections opened, code compiled) apart.
      const out: Record<string, number> = { reads: n, first_after_commit_ms: ms(phases.after_commit[0]!) };
      for (const [name, xs] of Object.entries(phases)) {
        out[`${name}_p50_ms`] = ms(pct(xs, 50));
        out[`${name}_p99_ms`] = ms(pct(xs, 99));
      }
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return 0;
    }
    if (command === "approve") {
      const { enroll, committed } = await client.approveEnrolment({ ...me, org: file.org }, readFileSync(target, "utf8"));
      process.stdout.write(`${JSON.stringify({ member: enroll.member, role: enroll.role, height: committed.height })}\n`);
      return 0;
    }
    if (command === "write") {
      const plaintext = readFileSync(extra!);
      const json = (() => {
        try {
          return JSON.parse(plaintext.toString("utf8")) as { resourceType?: string };
        } catch {
          return null;
        }
      })();
      const metadata = json?.resourceType
        ? { resource_type: json.resourceType, content_type: "application/fhir+json" }
        : { resource_type: null, content_type: "application/octet-stream" };
      const written = await client.writeRecord(me, target, new Uint8Array(plaintext), metadata);
      process.stdout.write(`${JSON.stringify({ record: written.record, height: written.committed.height })}\n`);
      return 0;
    }
    const opened = await client.read(me, target, purpose as PurposeOfUse);
    const out = {
      record: opened.entry.record,
      version: opened.entry.version,
      access: opened.access.tx,
      height: opened.access.height,
      plaintext: toHex(opened.plaintext),
      metadata: opened.metadata,
    };
    process.stdout.write(`${JSON.stringify(out)}\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    return e instanceof ApiProblem && e.denied ? 3 : 1;
  }
}

process.exitCode = await main();
