// The Rust side's vectors (portal/vectors/rust.json, written by crates/ledger/tests/interop.rs)
// read, reproduced and opened by this implementation. The other direction (this code's vectors,
// read by Rust) is portal/vectors/ts.json, checked by the same Rust test file.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex, toHex, utf8 } from "../src/bytes.js";
import { contentDigest, partsOfUrl, signRequest } from "../src/httpsig.js";
import { identityFromSecret, identitySecret, openKeystore } from "../src/keystore.js";
import { PayloadSuite, openPayload } from "../src/payload.js";
import { SigningKey, verify } from "../src/sign.js";
import { BLINDING_GENERATOR, combine, decodeShare, decodeVerifier, deriveDataKey, encodeShare, verifyShare } from "../src/threshold.js";
import { encodeBody, signTransaction } from "../src/tx.js";
import { DecryptionKey, decodeEnvelope, encodeEnvelope, kemSuite, wrapAad, wrapInfo } from "../src/wrap.js";
import { plaintext, readVectors } from "./vectors.js";

const rust = readVectors("rust");

describe("Rust's vectors", () => {
  it("are the Rust side's", () => {
    assert.equal(rust.format, "medledger interop vectors v1 (from Rust)");
  });

  it("namespaced Ed25519 signatures are reproduced and verify", () => {
    assert.ok(rust.signing.length >= 3);
    for (const v of rust.signing) {
      const key = SigningKey.fromSeed(fromHex(v.seed));
      assert.equal(toHex(key.publicKey()), v.public_key);
      const [namespace, message] = [fromHex(v.namespace), fromHex(v.message)];
      assert.equal(toHex(key.sign(namespace, message)), v.signature);
      assert.ok(verify(key.publicKey(), namespace, message, fromHex(v.signature)));
      const flipped = fromHex(v.signature);
      flipped[0]! ^= 1;
      assert.ok(!verify(key.publicKey(), namespace, message, flipped), "a flipped signature bit verifies");
      assert.ok(!verify(key.publicKey(), fromHex("00"), message, fromHex(v.signature)), "another namespace verifies");
    }
  });

  it("envelopes of both suites open, bound to their chain, subject and holder", async () => {
    const suites = new Set(rust.wrap.map((v) => v.suite));
    assert.deepEqual([...suites].sort(), [1, 2], "X-Wing and X25519 vectors");
    for (const v of rust.wrap) {
      const suite = kemSuite(v.suite);
      const key = await DecryptionKey.fromBytes(suite, fromHex(v.secret_key));
      assert.equal(toHex(key.publicKey.bytes), v.public_key, `suite ${suite}: the public key of the secret key`);
      const ctx = { chainId: fromHex(v.chain_id), subject: v.subject, holder: v.holder };
      assert.equal(toHex(wrapInfo(suite, ctx)), v.info);
      assert.equal(toHex(wrapAad(ctx)), v.aad);
      const envelope = decodeEnvelope(fromHex(v.envelope));
      assert.equal(toHex(encodeEnvelope(envelope)), v.envelope);
      assert.equal(toHex(await key.open(envelope, ctx)), v.secret);
      const elsewhere = { ...ctx, holder: { type: "member" as const, member: "ee".repeat(16) } };
      await assert.rejects(key.open(envelope, elsewhere), /does not open/);
      const otherChain = { ...ctx, chainId: new Uint8Array(32) };
      await assert.rejects(key.open(envelope, otherChain), /does not open/);
      const altered = fromHex(v.envelope);
      altered[altered.length - 1]! ^= 1;
      await assert.rejects(key.open(decodeEnvelope(altered), ctx), /does not open/);
    }
  });

  it("payloads decrypt under their digest, and nothing altered does", async () => {
    const lengths = rust.payload.map((v) => v.plaintext_len);
    assert.ok(lengths.includes(0) && lengths.some((n) => n > 65_536), `empty and multi-segment payloads: ${lengths}`);
    for (const v of rust.payload) {
      const expected = { record: fromHex(v.record), version: v.version, digest: fromHex(v.digest), suite: PayloadSuite.Direct };
      const dek = fromHex(v.dek);
      const ciphertext = fromHex(v.ciphertext);
      assert.deepEqual(await openPayload(dek, ciphertext, expected), plaintext(v.plaintext_len));
      const flipped = ciphertext.slice();
      flipped[flipped.length - 1]! ^= 1;
      await assert.rejects(openPayload(dek, flipped, { ...expected, digest: undefined }), /does not authenticate/);
      await assert.rejects(openPayload(dek, flipped, expected), /not the one the ledger names/);
      const otherKey = dek.slice();
      otherKey[0]! ^= 1;
      await assert.rejects(openPayload(otherKey, ciphertext, expected), /commits to/);
      await assert.rejects(openPayload(dek, ciphertext, { ...expected, version: v.version + 1 }), /another record or version/);
      if (v.plaintext_len > 65_536) {
        const truncated = ciphertext.subarray(0, 68 + 65_536 + 16);
        await assert.rejects(openPayload(dek, truncated, { ...expected, digest: undefined }), /does not authenticate/);
      }
    }
  });

  it("request signatures are reproduced header for header", () => {
    assert.ok(rust.httpsig.some((v) => v.body.length > 0), "a request with a body");
    for (const v of rust.httpsig) {
      const key = SigningKey.fromSeed(fromHex(v.seed));
      const parts = partsOfUrl(v.method, v.url, fromHex(v.body));
      assert.deepEqual(signRequest(key, v.keyid, parts, v.created_ms, v.nonce), v.headers);
      assert.equal(contentDigest(fromHex(v.body)), v.headers[0]![1]);
    }
  });

  it("transactions encode, sign and hash to the same bytes and id", () => {
    const kinds = new Set(rust.transactions.map((v) => v.json.kind.type));
    for (const kind of ["grant", "revoke", "record_access", "register_record", "erase", "break_glass", "legal_hold", "delegate", "team_create", "team_add", "team_remove", "rotate_keys", "custody_release", "recovery"]) {
      assert.ok(kinds.has(kind as never), `Rust wrote no ${kind} transaction`);
    }
    for (const v of rust.transactions) {
      assert.equal(toHex(encodeBody(v.json)), v.body, v.json.kind.type);
      const signed = signTransaction(v.json, SigningKey.fromSeed(fromHex(v.seed)));
      assert.equal(toHex(signed.bytes), v.transaction, v.json.kind.type);
      assert.equal(signed.id, v.id);
    }
  });

  it("threshold shares verify against their commitments and recover k_thr and the data key", () => {
    assert.equal(toHex(BLINDING_GENERATOR.toBytes()), "060a7f0d1ef392208557309fd77d6cab565bcdc76fbc4ecc3445060a280a305c");
    assert.ok(rust.threshold.some((v) => v.threshold > 2));
    for (const v of rust.threshold) {
      const verifier = decodeVerifier(v.verifier.map(fromHex));
      const shares = v.shares.map((s) => decodeShare(fromHex(s)));
      for (const [i, share] of shares.entries()) {
        assert.ok(verifyShare(verifier, share), `share ${share.id}`);
        assert.equal(toHex(encodeShare(share)), v.shares[i]);
        assert.ok(!verifyShare(verifier, { ...share, value: share.value + 1n }), "an altered share verifies");
        if (v.threshold > 1) {
          const other = share.id === 1 ? 2 : 1;
          assert.ok(!verifyShare(verifier, { ...share, id: other }), "a share under another holder's id verifies");
        }
      }
      const t = v.threshold;
      for (let start = 0; start + t <= shares.length; start++) {
        assert.equal(toHex(combine(shares.slice(start, start + t))), v.secret, `shares ${start}..${start + t}`);
      }
      if (t > 1) assert.notEqual(toHex(combine(shares.slice(0, t - 1))), v.secret, "fewer than the threshold recover k_thr");
      const dek = deriveDataKey(fromHex(v.k_env), fromHex(v.secret), fromHex(v.record), v.version);
      assert.equal(toHex(dek), v.dek);
    }
  });

  it("CLI keystores open with their passphrase only, and their identity keys are the CLI's", async () => {
    assert.ok(rust.keystores.length >= 2);
    for (const v of rust.keystores) {
      const sealed = fromHex(v.sealed);
      const secret = await openKeystore(utf8(v.passphrase), sealed);
      assert.equal(toHex(secret), v.secret);
      await assert.rejects(openKeystore(utf8("wrong"), sealed), /wrong passphrase/);
      const altered = sealed.slice();
      altered[altered.length - 1]! ^= 1;
      await assert.rejects(openKeystore(utf8(v.passphrase), altered), /wrong passphrase/);
      // Parameters over the bounds are refused before Argon2 runs (it would reserve 1 GiB).
      const greedy = sealed.slice();
      new DataView(greedy.buffer).setUint32(6, 1024 * 1024);
      await assert.rejects(openKeystore(utf8(v.passphrase), greedy), /out of bounds/);
      const cheap = sealed.slice();
      new DataView(cheap.buffer).setUint32(10, 1);
      await assert.rejects(openKeystore(utf8(v.passphrase), cheap), /out of bounds/);
    }
    const identity = rust.keystores.find((v) => v.secret.length > 128)!;
    const keys = await identityFromSecret(1, fromHex(identity.secret));
    assert.equal(keys.previous.length, 1);
    assert.equal(toHex(identitySecret(keys)), identity.secret);
  });
});
