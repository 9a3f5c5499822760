// A transaction's sidecar (borsh, as the ledger's `Sidecar`): the envelopes it carries, each
// bound to its holder and subject, and optionally the record's encrypted metadata. Its SHA-256 is
// the transaction's `sidecar_digest`.

import { type Bytes, toHex } from "./bytes.js";
import { encode } from "./borsh.js";
import { sha256 } from "./hash.js";
import { type KeyHolder, type KeySubject, writeKeyHolder, writeKeySubject } from "./ids.js";
import type { Envelope } from "./wrap.js";

export interface SidecarEnvelope {
  holder: KeyHolder;
  subject: KeySubject;
  envelope: Envelope;
}

export interface Sidecar {
  envelopes: SidecarEnvelope[];
  metadata: Bytes | null;
}

export function encodeSidecar(s: Sidecar): Bytes {
  return encode((w) => {
    w.vec(s.envelopes, (w, e) => {
      writeKeyHolder(w, e.holder);
      writeKeySubject(w, e.subject);
      w.u8(e.envelope.suite);
      w.bytes(e.envelope.encapsulatedKey);
      w.bytes(e.envelope.ciphertext);
    });
    w.option(s.metadata, (w, m) => w.bytes(m));
    // The threshold shares are a trailing field: absent, nothing is written.
  });
}

/** The `sidecar_digest` of a transaction carrying `bytes`. */
export function sidecarDigest(bytes: Bytes): string {
  return toHex(sha256(bytes));
}
