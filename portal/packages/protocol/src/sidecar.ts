// A transaction's sidecar (borsh, as the ledger's `Sidecar`): the envelopes it carries, each
// bound to its holder and subject, and optionally the record's encrypted metadata. Its SHA-256 is
// the transaction's `sidecar_digest`.

import { type Bytes, toHex } from "./bytes.js";
import { type Writer, encode } from "./borsh.js";
import { sha256 } from "./hash.js";
import { type KeyHolder, type KeySubject, writeKeyHolder, writeKeySubject } from "./ids.js";
import type { Envelope } from "./wrap.js";

export interface SidecarEnvelope {
  holder: KeyHolder;
  subject: KeySubject;
  envelope: Envelope;
}

/** The validators' shares of a record version's `k_thr` (and emergency `k_env`), as the sidecar carries them. */
export interface ThresholdShares {
  epoch: number;
  threshold: number;
  emergency_threshold: number;
  /** The stable indices of the validators holding the shares. */
  validators: number[];
  /** Pedersen commitments (32 bytes each) of the `k_thr` sharing, then of the `k_env` sharing. */
  verifier: Bytes[];
  emergency_verifier: Bytes[];
  /** Share `i` wrapped for validator `validators[i]`'s share key. */
  shares: Envelope[];
}

export interface Sidecar {
  envelopes: SidecarEnvelope[];
  metadata: Bytes | null;
  threshold?: ThresholdShares | null;
}

function writeEnvelope(w: Writer, e: Envelope): void {
  w.u8(e.suite);
  w.bytes(e.encapsulatedKey);
  w.bytes(e.ciphertext);
}

export function encodeSidecar(s: Sidecar): Bytes {
  return encode((w) => {
    w.vec(s.envelopes, (w, e) => {
      writeKeyHolder(w, e.holder);
      writeKeySubject(w, e.subject);
      writeEnvelope(w, e.envelope);
    });
    w.option(s.metadata, (w, m) => w.bytes(m));
    // The threshold shares are a trailing field: absent, nothing is written; present, an option.
    if (s.threshold) {
      const t = s.threshold;
      w.u8(1);
      w.u32(t.epoch);
      w.u8(t.threshold);
      w.u8(t.emergency_threshold);
      w.vec(t.validators, (w, v) => w.u32(v));
      w.vec(t.verifier, (w, c) => w.fixed(c, 32));
      w.vec(t.emergency_verifier, (w, c) => w.fixed(c, 32));
      w.vec(t.shares, writeEnvelope);
    }
  });
}

/** The `sidecar_digest` of a transaction carrying `bytes`. */
export function sidecarDigest(bytes: Bytes): string {
  return toHex(sha256(bytes));
}
