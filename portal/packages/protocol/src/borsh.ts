// Borsh (https://borsh.io), the canonical encoding of everything the ledger signs and stores:
// little-endian integers, u32-length-prefixed byte strings and vectors, a one-byte tag for
// options and enums. Only what the protocol's types need, with every read bounded.

import type { Bytes } from "./bytes.js";

export class Writer {
  private chunks: number[] = [];

  u8(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new Error(`u8 out of range: ${v}`);
    this.chunks.push(v);
    return this;
  }

  bool(v: boolean): this {
    return this.u8(v ? 1 : 0);
  }

  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new Error(`u32 out of range: ${v}`);
    for (let i = 0; i < 4; i++) this.chunks.push((v >>> (8 * i)) & 0xff);
    return this;
  }

  u64(v: bigint | number): this {
    let n = BigInt(v);
    if (n < 0n || n > 0xffff_ffff_ffff_ffffn) throw new Error(`u64 out of range: ${v}`);
    for (let i = 0; i < 8; i++) {
      this.chunks.push(Number(n & 0xffn));
      n >>= 8n;
    }
    return this;
  }

  /** Bytes as they are (a fixed-size array). */
  fixed(bytes: Bytes, n: number): this {
    if (bytes.length !== n) throw new Error(`expected ${n} bytes, got ${bytes.length}`);
    for (const b of bytes) this.chunks.push(b);
    return this;
  }

  /** A `Vec<u8>`: u32 length, then the bytes. */
  bytes(bytes: Bytes): this {
    this.u32(bytes.length);
    for (const b of bytes) this.chunks.push(b);
    return this;
  }

  option<T>(v: T | null | undefined, write: (w: this, v: T) => void): this {
    if (v === null || v === undefined) return this.u8(0);
    this.u8(1);
    write(this, v);
    return this;
  }

  vec<T>(items: readonly T[], write: (w: this, v: T) => void): this {
    this.u32(items.length);
    for (const item of items) write(this, item);
    return this;
  }

  finish(): Bytes {
    return Uint8Array.from(this.chunks);
  }
}

export function encode(write: (w: Writer) => void): Bytes {
  const w = new Writer();
  write(w);
  return w.finish();
}

export class Reader {
  private at = 0;

  constructor(private readonly data: Bytes) {}

  private take(n: number): Bytes {
    if (n > this.data.length - this.at) throw new Error("unexpected end of input");
    const out = this.data.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  u8(): number {
    return this.take(1)[0]!;
  }

  bool(): boolean {
    const v = this.u8();
    if (v > 1) throw new Error("not a bool");
    return v === 1;
  }

  u32(): number {
    const b = this.take(4);
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16)) + b[3]! * 0x100_0000;
  }

  u64(): bigint {
    const b = this.take(8);
    let n = 0n;
    for (let i = 7; i >= 0; i--) n = (n << 8n) | BigInt(b[i]!);
    return n;
  }

  fixed(n: number): Bytes {
    return this.take(n).slice();
  }

  /** A `Vec<u8>` of at most `max` bytes (checked before anything is copied). */
  bytes(max: number): Bytes {
    const n = this.u32();
    if (n > max) throw new Error(`byte string over its limit (${n} > ${max})`);
    return this.fixed(n);
  }

  option<T>(read: (r: this) => T): T | null {
    const tag = this.u8();
    if (tag > 1) throw new Error("not an option tag");
    return tag === 1 ? read(this) : null;
  }

  /** The bytes from `start` to `end` of the input (a part already read, as it was encoded). */
  slice(start: number, end: number): Bytes {
    return this.data.subarray(start, end);
  }

  /** How many bytes were read so far. */
  offset(): number {
    return this.at;
  }

  /** Fails unless every byte was read (canonical decoding). */
  /** Whether every byte has been read (a trailing field is absent). */
  atEnd(): boolean {
    return this.at === this.data.length;
  }

  end(): void {
    if (this.at !== this.data.length) throw new Error("trailing bytes");
  }
}
