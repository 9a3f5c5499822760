// The ledger's identifiers and the key-holder and key-subject names envelopes are bound to,
// in their JSON form (as the validators' API and `serde` write them) and their borsh form.

import { type Bytes, fromHexN, utf8 } from "./bytes.js";
import { type Writer, encode } from "./borsh.js";
import { sha256 } from "./hash.js";

/** A member, team or patient id: 32 hex digits. */
export type MemberId = string;
/** A record id: 32 hex digits. */
export type RecordId = string;
/** A SHA-256 digest, chain id or transaction id: 64 hex digits. */
export type Hash32 = string;

export function writeId16(w: Writer, id: string, what = "id"): void {
  w.fixed(fromHexN(id, 16, what), 16);
}

export function writeHash32(w: Writer, hash: string, what = "hash"): void {
  w.fixed(fromHexN(hash, 32, what), 32);
}

export type KeyHolder =
  | { type: "member"; member: MemberId }
  | { type: "chart"; patient: MemberId; epoch: number }
  | { type: "team"; team: MemberId; epoch: number };

export type KeySubject =
  | { type: "record"; record: RecordId; version: number }
  | { type: "chart"; patient: MemberId; epoch: number }
  | { type: "note"; id: number[] }
  | { type: "team"; team: MemberId; epoch: number };

export function writeKeyHolder(w: Writer, h: KeyHolder): void {
  switch (h.type) {
    case "member":
      w.u8(0);
      writeId16(w, h.member, "member");
      return;
    case "chart":
      w.u8(1);
      writeId16(w, h.patient, "patient");
      w.u32(h.epoch);
      return;
    case "team":
      w.u8(2);
      writeId16(w, h.team, "team");
      w.u32(h.epoch);
      return;
  }
}

export function writeKeySubject(w: Writer, s: KeySubject): void {
  switch (s.type) {
    case "record":
      w.u8(0);
      writeId16(w, s.record, "record");
      w.u32(s.version);
      return;
    case "chart":
      w.u8(1);
      writeId16(w, s.patient, "patient");
      w.u32(s.epoch);
      return;
    case "note":
      w.u8(2);
      w.fixed(Uint8Array.from(s.id), 16);
      return;
    case "team":
      w.u8(3);
      writeId16(w, s.team, "team");
      w.u32(s.epoch);
      return;
  }
}

/** The HPKE AAD naming a recipient: SHA-256("medledger/holder/v1" ‖ borsh(holder)). */
export function holderContextId(h: KeyHolder): Bytes {
  return sha256(utf8("medledger/holder/v1"), encode((w) => writeKeyHolder(w, h)));
}

/** SHA-256("medledger/subject/v1" ‖ borsh(subject)). */
export function subjectContextId(s: KeySubject): Bytes {
  return sha256(utf8("medledger/subject/v1"), encode((w) => writeKeySubject(w, s)));
}

/** The version an envelope of `s` is bound to: a record's version, a key's epoch, 0 for a note. */
export function subjectVersion(s: KeySubject): number {
  switch (s.type) {
    case "record":
      return s.version;
    case "chart":
    case "team":
      return s.epoch;
    case "note":
      return 0;
  }
}
