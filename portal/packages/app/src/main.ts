// The portal: sign-in (a key file and its passphrase, a key file kept on this device, a
// passkey), idle logoff, and each role's home screen (patient.ts, clinician.ts, admin.ts,
// auditor.ts). Every request that touches a patient's data is signed here and every record is
// decrypted here (see @medledger/protocol); the server only forwards to the validators.

import { ApiProblem, Client, type KeyFile } from "@medledger/protocol";

import { claimForm, completeRecoveryForm, lostKeysForm, yourKeys } from "./account.js";
import { showAdminHome } from "./admin.js";
import { showAuditorHome } from "./auditor.js";
import { showClinicianHome } from "./clinician.js";
import type { Ctx } from "./context.js";
import { type KeptKey, forget, keep, keptKeys } from "./device.js";
import { h, replace, shortId } from "./dom.js";
import { newMemberForm } from "./enrol.js";
import { passkeysAvailable, registerPasskey, unlockWithPasskey } from "./passkey.js";
import { showPatientHome } from "./patient.js";
import { IDLE_MINUTES_DEFAULT, type Member, unlock, watchIdle, wipe } from "./session.js";

interface PortalConfig {
  chainId: string;
  validators: { url: string; signedAs: string }[];
  idleMinutes?: number;
}

const main = document.getElementById("main") as HTMLElement;
const status = document.getElementById("status") as HTMLElement;
const who = document.getElementById("who") as HTMLElement;

let config: PortalConfig;
let client: Client;
let member: Member | null = null;
let idle: { stop(): void } | null = null;

/** Says something to the user (an `aria-live` region: screen readers read it too). */
function say(text: string, kind: "info" | "error" = "info"): void {
  status.textContent = text;
  status.className = kind;
}

function errorText(e: unknown): string {
  if (e instanceof ApiProblem && e.denied) return `Refused by the ledger: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

function signOut(reason: string): void {
  idle?.stop();
  idle = null;
  if (member) wipe(member.keys);
  member = null;
  replace(who);
  showSignIn();
  say(reason);
}

/** Signs `m` in: keys in memory, the idle logoff armed, the home screen. */
function signedIn(m: Member): void {
  member = m;
  const minutes = config.idleMinutes ?? IDLE_MINUTES_DEFAULT;
  idle = watchIdle(minutes, () =>
    signOut(`Signed out after ${minutes} minutes without activity; your keys were wiped from memory.`),
  );
  const out = h("button", { type: "button", id: "signout" }, "Sign out");
  out.addEventListener("click", () => signOut("Signed out; your keys were wiped from memory."));
  replace(who, h("span", { title: m.member }, `${m.role} ${shortId(m.member)}`), " ", out);
  say("");
  showHome();
}

function showSignIn(): void {
  const file = h("input", { id: "keyfile", type: "file", accept: ".key,application/json", required: true });
  const passphrase = h("input", { id: "passphrase", type: "password", autocomplete: "current-password", required: true });
  const keepIt = h("input", { id: "keep", type: "checkbox" });
  const withPasskey = h("input", { id: "with-passkey", type: "checkbox" });
  const button = h("button", { type: "submit" }, "Unlock");
  const form = h(
    "form",
    { "aria-labelledby": "signin-title" },
    h("h2", { id: "signin-title" }, "Sign in"),
    h("p", {}, "Your keys stay on this device: the key file is opened here, with your passphrase, and nothing secret is sent."),
    h("label", { for: "keyfile" }, "Key file"),
    file,
    h("label", { for: "passphrase" }, "Passphrase"),
    passphrase,
    h("div", { class: "check" }, keepIt, h("label", { for: "keep" }, "Keep my key file on this device (sealed: it opens with my passphrase only)")),
    passkeysAvailable()
      ? h("div", { class: "check" }, withPasskey, h("label", { for: "with-passkey" }, "…and unlock it with a passkey on this device"))
      : null,
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen) {
      say("Choose your key file.", "error");
      return;
    }
    button.disabled = true;
    say("Opening your keys…");
    void chosen
      .text()
      .then(async (text) => {
        const m = await unlock(text, passphrase.value);
        if (keepIt.checked || withPasskey.checked) {
          const passkey = withPasskey.checked ? await registerPasskey(m.member, m.role, m.keys) : undefined;
          await keep(JSON.parse(text) as KeyFile, passkey);
        }
        return m;
      })
      .then((m) => {
        passphrase.value = "";
        signedIn(m);
      })
      .catch((e: unknown) => {
        say(errorText(e), "error");
        button.disabled = false;
        passphrase.focus();
      });
  });
  const keptSection = h("section", { id: "kept", "aria-labelledby": "kept-title", hidden: true });
  replace(
    main,
    keptSection,
    form,
    newMemberForm(config.chainId, say, errorText),
    claimForm(client, say, errorText),
    lostKeysForm(say, errorText),
    completeRecoveryForm(client, say, errorText, signedIn),
  );
  file.focus();
  void keptKeys().then((files) => {
    if (files.length === 0) return;
    keptSection.hidden = false;
    replace(
      keptSection,
      h("h2", { id: "kept-title" }, "Keys on this device"),
      ...files.map((f, i) => keptForm(f, i)),
    );
    document.getElementById(`kept-pass-0`)?.focus();
  });
}

/** Sign in with a key file kept on this device: the passphrase alone, or its passkey. */
function keptForm(file: KeptKey, i: number): HTMLFormElement {
  const pass = h("input", { id: `kept-pass-${i}`, type: "password", autocomplete: "current-password", required: true });
  const go = h("button", { type: "submit" }, "Sign in");
  const drop = h("button", { type: "button", class: "secondary" }, "Forget on this device");
  const form = h(
    "form",
    { class: "kept" },
    h("label", { for: `kept-pass-${i}` }, `Passphrase for ${file.role} ${shortId(file.member)}`),
    pass,
    go,
    drop,
  );
  const wrap = file.passkey;
  if (wrap) {
    const withKey = h("button", { type: "button" }, "Sign in with my passkey");
    withKey.addEventListener("click", () => {
      say("Asking your passkey…");
      unlockWithPasskey(file.member, file.suite, wrap)
        .then((keys) => signedIn({ member: file.member, role: String(file.role), org: String(file.org), keys }))
        .catch((e: unknown) => say(errorText(e), "error"));
    });
    form.insertBefore(withKey, form.firstChild);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go.disabled = true;
    say("Opening your keys…");
    unlock(JSON.stringify(file), pass.value)
      .then((m) => {
        pass.value = "";
        signedIn(m);
      })
      .catch((e: unknown) => {
        go.disabled = false;
        say(errorText(e), "error");
      });
  });
  drop.addEventListener("click", () => {
    void forget(file.member).then(() => {
      form.remove();
      say("That key file is no longer kept on this device.");
    });
  });
  return form;
}

function showHome(): void {
  if (!member) return;
  const ctx: Ctx = { client, me: member, say, errorText };
  const screens: Record<string, (ctx: Ctx, main: HTMLElement) => void> = {
    admin: showAdminHome,
    auditor: showAuditorHome,
    patient: showPatientHome,
  };
  const body = h("div", { id: "home" });
  replace(main, body, yourKeys(ctx));
  (screens[member.role] ?? showClinicianHome)(ctx, body);
}

async function start(): Promise<void> {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    config = (await response.json()) as PortalConfig;
    const scheme = new URL(config.validators[0]?.signedAs ?? window.location.href).protocol;
    client = new Client(
      config.validators.map((v) => ({ url: new URL(v.url, window.location.href).toString(), signedAs: v.signedAs })),
      config.chainId,
      undefined,
      undefined,
      // A validator that joined after the portal started: through the portal too, which forwards
      // to it once the validators it knows agree on its address.
      (k, api) => ({ url: new URL(`/api/${k}`, window.location.href).toString(), signedAs: `${scheme}//${api}` }),
    );
  } catch (e) {
    say(`The portal is not configured: ${errorText(e)}`, "error");
    return;
  }
  showSignIn();
}

void start();
