// SHA-256, as the ledger uses it for digests, ids and key commitments.

import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";

import type { Bytes } from "./bytes.js";

export function sha256(...parts: Bytes[]): Bytes {
  const h = nobleSha256.create();
  for (const p of parts) h.update(p);
  return h.digest();
}

/** An incremental SHA-256, for a ciphertext read segment by segment. */
export function sha256Stream(): { update(bytes: Bytes): void; digest(): Bytes } {
  const h = nobleSha256.create();
  return {
    update: (bytes) => {
      h.update(bytes);
    },
    digest: () => h.digest(),
  };
}
