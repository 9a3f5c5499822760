// Writes portal/vectors/ts.json: envelopes, payloads, request signatures and transactions made
// by this implementation, which crates/ledger/tests/interop.rs opens and checks with the Rust
// crates. `npm run vectors` (then commit the file).

import { writeFileSync } from "node:fs";

import { toHex } from "../packages/protocol/src/bytes.js";
import type { KeyHolder, KeySubject } from "../packages/protocol/src/ids.js";
import { partsOfUrl, signRequest } from "../packages/protocol/src/httpsig.js";
import { sealKeystore } from "../packages/protocol/src/keystore.js";
import { sealPayload } from "../packages/protocol/src/payload.js";
import { SigningKey } from "../packages/protocol/src/sign.js";
import { deriveDataKey, encodeShare, randomSecret, split } from "../packages/protocol/src/threshold.js";
import { type TxBody, encodeBody, signTransaction } from "../packages/protocol/src/tx.js";
import { DecryptionKey, KemSuite, encodeEnvelope, seal, wrapAad, wrapInfo } from "../packages/protocol/src/wrap.js";
import { plaintext, seed, vectorsPath } from "../packages/protocol/test/vectors.js";

const chainId = seed(1);
const signer = SigningKey.fromSeed(seed(2));
const member = toHex(seed(3).subarray(0, 16));
const patient = toHex(seed(20).subarray(0, 16));
const record = toHex(seed(21).subarray(0, 16));

const signing = [
  ["medledger/tx/v1", ""],
  ["", "abc"],
].map(([namespace, message]) => {
  const [ns, msg] = [new TextEncoder().encode(namespace), new TextEncoder().encode(message)];
  return {
    seed: toHex(seed(2)),
    public_key: toHex(signer.publicKey()),
    namespace: toHex(ns),
    message: toHex(msg),
    signature: toHex(signer.sign(ns, msg)),
  };
});

const contexts: [KeySubject, KeyHolder][] = [
  [{ type: "record", record, version: 2 }, { type: "member", member }],
  [{ type: "chart", patient, epoch: 3 }, { type: "team", team: patient, epoch: 1 }],
  [{ type: "note", id: Array.from(seed(9).subarray(0, 16)) }, { type: "chart", patient, epoch: 0 }],
];
const wrap = [];
for (const [n, suite] of [
  [10, KemSuite.XWing],
  [11, KemSuite.X25519],
] as const) {
  const key = await DecryptionKey.fromBytes(suite, seed(n));
  for (const [i, [subject, holder]] of contexts.entries()) {
    const secret = seed(30 + i).subarray(0, [32, 32, 17][i]);
    const ctx = { chainId, subject, holder };
    const envelope = await seal(key.publicKey, secret, ctx);
    wrap.push({
      suite,
      secret_key: toHex(key.exportSecret()),
      public_key: toHex(key.publicKey.bytes),
      chain_id: toHex(chainId),
      subject,
      holder,
      info: toHex(wrapInfo(suite, ctx)),
      aad: toHex(wrapAad(ctx)),
      envelope: toHex(encodeEnvelope(envelope)),
      secret: toHex(secret),
    });
  }
}

const payload = [];
for (const [i, len] of [0, 3, 65_536, 65_536 + 100].entries()) {
  const dek = seed(40 + i);
  const id = seed(50 + i).subarray(0, 16);
  const sealed = await sealPayload(dek, id, 1 + i, plaintext(len));
  payload.push({
    dek: toHex(dek),
    record: toHex(id),
    version: 1 + i,
    plaintext_len: len,
    ciphertext: toHex(sealed.ciphertext),
    digest: toHex(sealed.digest),
  });
}

const httpsig = [
  ["GET", `http://127.0.0.1:7480/v1/charts/${patient}`, new Uint8Array()],
  ["POST", "https://portal.example/v1/tx", Uint8Array.of(0, 1, 2)],
].map(([method, url, body], i) => {
  const createdMs = 1_797_000_000_000 + i * 1000;
  const nonce = `ts-nonce-${i}`;
  const parts = partsOfUrl(method as string, url as string, body as Uint8Array);
  return {
    seed: toHex(seed(2)),
    keyid: member,
    method,
    url,
    body: toHex(body as Uint8Array),
    created_ms: createdMs,
    nonce,
    headers: signRequest(signer, member, parts, createdMs, nonce),
  };
});

const body = (nonce: number, kind: TxBody["kind"], sidecar: string | null = null): TxBody => ({
  chain_id: toHex(chainId),
  signer: member,
  nonce,
  kind,
  sidecar_digest: sidecar,
});
const bodies: TxBody[] = [
  body(1, { type: "record_access", record, version: 1, purpose: "PATRQT" }),
  body(2, { type: "grant", patient, grantee: member, scope: "all", write: false, expires_at: null, chart_epoch: 0, new_chart: null }, toHex(seed(22))),
  body(3, { type: "revoke", patient, grantee: member, scope: { record }, new_chart: null }),
  body(2 ** 52 + 4, {
    type: "append_version",
    record,
    patient,
    version: 2,
    digest: toHex(seed(24)),
    size_bytes: 70_000,
    recipients: [
      { type: "member", member },
      { type: "chart", patient, epoch: 0 },
    ],
  }, toHex(seed(25))),
  body(5, { type: "break_glass", patient, reason: "mass-casualty", duration_ms: 900_000 }),
  body(7, { type: "grant", patient, grantee: member, scope: "sensitive", write: false, expires_at: 1_800_000_000_000, chart_epoch: null, new_chart: null }),
  body(8, { type: "revoke", patient, grantee: member, scope: "sensitive", new_chart: null }),
  body(6, { type: "erase", record }),
];
const transactions = bodies.map((b) => {
  const signed = signTransaction(b, signer);
  return { seed: toHex(seed(2)), json: b, body: toHex(encodeBody(b)), transaction: toHex(signed.bytes), id: signed.id };
});

const threshold = [
  [1, 1],
  [2, 4],
  [3, 7],
].map(([t, n], i) => {
  const secret = randomSecret();
  const dealt = split(secret, t!, n!);
  const kEnv = randomSecret();
  const id = seed(60 + i).subarray(0, 16);
  return {
    secret: toHex(secret),
    threshold: t,
    verifier: dealt.verifier.map(toHex),
    shares: dealt.shares.map((s) => toHex(encodeShare(s))),
    k_env: toHex(kEnv),
    record: toHex(id),
    version: 2,
    dek: toHex(deriveDataKey(kEnv, secret, id, 2)),
  };
});

const keystores = [];
for (const [passphrase, secret] of [
  ["correct horse battery staple", seed(70)],
  ["é 🔑 pass", new Uint8Array([...seed(71), ...seed(72), 2, ...seed(73)])],
] as const) {
  const sealed = await sealKeystore(new TextEncoder().encode(passphrase), secret);
  keystores.push({ passphrase, sealed: toHex(sealed), secret: toHex(secret) });
}

const vectors = { format: "medledger interop vectors v1 (from TypeScript)", keystores, threshold, signing, wrap, payload, httpsig, transactions };
writeFileSync(vectorsPath("ts"), JSON.stringify(vectors, null, 2) + "\n");
console.log(`wrote ${vectorsPath("ts").pathname}`);
