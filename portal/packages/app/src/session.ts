// The signed-in member: their keys, in memory only while signed in, and the idle logoff that wipes
// them (HIPAA's automatic logoff): after the configured minutes without a key press, click or
// touch, the keys are zeroed and dropped and the portal returns to its sign-in screen.

import { type Identity, type IdentityKeys, type KeyFile, fromHex, identityFromSecret, openKeystore, utf8 } from "@medledger/protocol";

/** Minutes without activity before the keys are wiped (15, unless the page says otherwise). */
export const IDLE_MINUTES_DEFAULT = 15;

export interface Member extends Identity {
  role: string;
  org: string;
}

/** Opens a CLI keystore file (`~/.medledger/identities/ALIAS.key`) with its passphrase. */
export async function unlock(fileText: string, passphrase: string): Promise<Member> {
  let file: KeyFile;
  try {
    file = JSON.parse(fileText) as KeyFile;
  } catch {
    throw new Error("this is not a medledger key file");
  }
  if (!/^[0-9a-f]{32}$/.test(file.member ?? "") || typeof file.sealed !== "string" || typeof file.suite !== "number") {
    throw new Error("this is not a medledger key file");
  }
  const secret = await openKeystore(utf8(passphrase), fromHex(file.sealed));
  try {
    const keys = await identityFromSecret(file.suite, secret);
    return { member: file.member, role: String(file.role), org: String(file.org), keys };
  } finally {
    secret.fill(0);
  }
}

/** Zeroes a member's secret keys (the object is unusable afterwards). */
export function wipe(keys: IdentityKeys): void {
  keys.signing.wipe();
  keys.encryption.wipe();
  for (const key of keys.previous) key.wipe();
}

/** Calls `onIdle` once after `minutes` without user activity; `stop()` ends the watch. */
export function watchIdle(minutes: number, onIdle: () => void): { stop(): void } {
  const events = ["keydown", "pointerdown", "touchstart", "wheel"] as const;
  let timer = 0;
  const arm = () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      stop();
      onIdle();
    }, minutes * 60_000);
  };
  const stop = () => {
    window.clearTimeout(timer);
    for (const e of events) window.removeEventListener(e, arm, true);
  };
  for (const e of events) window.addEventListener(e, arm, { capture: true, passive: true });
  arm();
  return { stop };
}
