// Finality certificates and state proofs made by the Rust crates (portal/vectors/rust-proofs.json,
// written by crates/proof/tests/interop.rs), verified here by code that shares nothing with them,
// and refused once anything in them is altered.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { fromHex, utf8 } from "../src/bytes.js";
import { verifyFinalization, verifyStateProof } from "../src/evidence.js";

interface ProofVectors {
  format: string;
  certificates: { namespace: string; validators: string[]; epoch: number; block_digest: string; certificate: string }[];
  state_proofs: { root: string; key: string; value: string | null; proof: string }[];
}

const vectors = JSON.parse(readFileSync(new URL("../../vectors/rust-proofs.json", import.meta.url), "utf8")) as ProofVectors;

describe("finality certificates", () => {
  it("a quorum's certificate verifies, in any order of the validators", () => {
    assert.equal(vectors.format, "medledger proof vectors v1 (from Rust)");
    assert.ok(vectors.certificates.length >= 3);
    for (const v of vectors.certificates) {
      const validators = v.validators.map(fromHex);
      const [namespace, digest, certificate] = [fromHex(v.namespace), fromHex(v.block_digest), fromHex(v.certificate)];
      assert.ok(verifyFinalization(namespace, v.epoch, validators, digest, certificate));
      assert.ok(verifyFinalization(namespace, v.epoch, [...validators].reverse(), digest, certificate));
    }
  });

  it("is refused for another block, epoch, namespace or set, or with any byte altered", () => {
    for (const v of vectors.certificates) {
      const validators = v.validators.map(fromHex);
      const [namespace, digest, certificate] = [fromHex(v.namespace), fromHex(v.block_digest), fromHex(v.certificate)];
      const otherDigest = digest.slice();
      otherDigest[0]! ^= 1;
      assert.ok(!verifyFinalization(namespace, v.epoch, validators, otherDigest, certificate), "another block");
      assert.ok(!verifyFinalization(namespace, v.epoch + 1, validators, digest, certificate), "another epoch");
      assert.ok(!verifyFinalization(utf8("other"), v.epoch, validators, digest, certificate), "another namespace");
      assert.ok(!verifyFinalization(namespace, v.epoch, validators.slice(1), digest, certificate), "another set");
      const stranger = fromHex("3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29");
      assert.ok(!verifyFinalization(namespace, v.epoch, [...validators.slice(0, 3), stranger], digest, certificate), "a stranger");
      for (let i = 0; i < certificate.length; i++) {
        const altered = certificate.slice();
        altered[i]! ^= 0x01;
        assert.ok(!verifyFinalization(namespace, v.epoch, validators, digest, altered), `byte ${i} altered`);
      }
      assert.ok(!verifyFinalization(namespace, v.epoch, validators, digest, certificate.subarray(0, certificate.length - 1)));
    }
  });
});

describe("state proofs", () => {
  it("prove presence and absence against the root, and nothing else", () => {
    const present = vectors.state_proofs.filter((p) => p.value !== null);
    const absent = vectors.state_proofs.filter((p) => p.value === null);
    assert.ok(present.length >= 3 && absent.length >= 3);
    for (const p of vectors.state_proofs) {
      const [root, key, proof] = [fromHex(p.root), fromHex(p.key), fromHex(p.proof)];
      const value = p.value === null ? null : fromHex(p.value);
      assert.ok(verifyStateProof(root, key, value, proof), `key ${p.key}`);
      assert.ok(!verifyStateProof(root, key, value === null ? utf8("something") : null, proof), "the opposite claim");
      if (value !== null) assert.ok(!verifyStateProof(root, key, utf8("another value"), proof), "another value");
      assert.ok(!verifyStateProof(root, utf8("another key"), value, proof) || value === null, "another key");
      const otherRoot = root.slice();
      otherRoot[31]! ^= 1;
      assert.ok(!verifyStateProof(otherRoot, key, value, proof), "another root");
      for (let i = 0; i < proof.length; i += 7) {
        const altered = proof.slice();
        altered[i]! ^= 0x10;
        assert.ok(!verifyStateProof(root, key, value, altered), `proof byte ${i} altered`);
      }
    }
  });
});
