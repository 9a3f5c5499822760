// What every screen works with: the client (the validators, through the portal's origin), the
// member signed in (their keys in memory until sign-out or idle logoff), and the status line.

import type { Client } from "@medledger/protocol";

import type { Member } from "./session.js";

export type Say = (text: string, kind?: "info" | "error") => void;

export interface Ctx {
  client: Client;
  me: Member;
  /** Says something to the user (an `aria-live` region: screen readers read it too). */
  say: Say;
  /** An error as one line for the user (a refusal by the ledger says so). */
  errorText(e: unknown): string;
}

/** Runs `work` with `button` disabled and the status line saying `doing`, then `done`'s text (or the error). */
export function act(ctx: Ctx, button: HTMLButtonElement, doing: string, work: () => Promise<string | void>): void {
  button.disabled = true;
  ctx.say(doing);
  work()
    .then((done) => {
      if (typeof done === "string") ctx.say(done);
    })
    .catch((e: unknown) => ctx.say(ctx.errorText(e), "error"))
    .finally(() => {
      button.disabled = false;
    });
}

export const HEX32 = /^[0-9a-f]{32}$/;

/** A member or record id as typed: trimmed, lower case; `null` unless 32 hexadecimal characters. */
export function idOf(text: string): string | null {
  const id = text.trim().toLowerCase();
  return HEX32.test(id) ? id : null;
}
