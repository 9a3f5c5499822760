// Reads a record with the portal's TypeScript client, from a CLI home (client.json and a sealed
// identity keystore), as a second implementation of `medledger record get`: the RecordAccess is
// signed here, committed by the validators, and the record decrypted here. Used by the Rust
// end-to-end test crates/cli/tests/portal.rs against real validator processes.
//
//   MEDLEDGER_PASSPHRASE=… node dist/scripts/read-record.js HOME ALIAS RECORD [PURPOSE]
//
// Prints one JSON line ({record, version, access, height, plaintext (hex), metadata}); on a
// refusal prints one line on stderr and exits 3 (denied) or 1.

import { readFileSync } from "node:fs";
import { join } from "node:path";

import { ApiProblem, Client } from "../packages/protocol/src/client.js";
import { type KeyFile, identityFromSecret, openKeystore } from "../packages/protocol/src/keystore.js";
import { fromHex, toHex, utf8 } from "../packages/protocol/src/bytes.js";
import { PURPOSES, type PurposeOfUse } from "../packages/protocol/src/tx.js";

async function main(): Promise<number> {
  const [home, alias, record, purpose = "TREAT"] = process.argv.slice(2);
  if (!home || !alias || !record || !(PURPOSES as readonly string[]).includes(purpose)) {
    process.stderr.write("usage: read-record HOME ALIAS RECORD [PURPOSE]\n");
    return 2;
  }
  const passphrase = process.env.MEDLEDGER_PASSPHRASE;
  if (!passphrase) {
    process.stderr.write("MEDLEDGER_PASSPHRASE is not set\n");
    return 2;
  }
  const config = JSON.parse(readFileSync(join(home, "client.json"), "utf8")) as { chain_id: string; nodes: string[] };
  const file = JSON.parse(readFileSync(join(home, "identities", `${alias}.key`), "utf8")) as KeyFile;
  const secret = await openKeystore(utf8(passphrase), fromHex(file.sealed));
  const keys = await identityFromSecret(file.suite, secret);
  secret.fill(0);
  const client = new Client(config.nodes, config.chain_id);
  try {
    const opened = await client.read({ member: file.member, keys }, record, purpose as PurposeOfUse);
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
