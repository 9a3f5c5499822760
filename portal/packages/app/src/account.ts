// A member's keys when they change hands: a patient claims their identity from custody (the claim
// file and one-time code an admin handed them) and makes their own keys here; a member who lost
// their keys and recovery code makes new ones here and a request for their admin, and completes
// the recovery once approved and the delay has passed; a signed-in member cancels a recovery
// they did not ask for. Every new key is made on this device.

import { type Client, claimIdentity, finishRecovery, requestRecovery } from "@medledger/protocol";

import { type Ctx, type Say, act, idOf } from "./context.js";
import { download, h, replace, shortId } from "./dom.js";
import { type Member, unlock } from "./session.js";

type ErrorText = (e: unknown) => string;

function passFields(prefix: string): { pass: HTMLInputElement; again: HTMLInputElement; fields: HTMLElement[]; check(say: Say): string | null } {
  const pass = h("input", { id: `${prefix}-pass`, type: "password", required: true, minlength: "8", autocomplete: "new-password" });
  const again = h("input", { id: `${prefix}-pass-again`, type: "password", required: true, autocomplete: "new-password" });
  return {
    pass,
    again,
    fields: [h("label", { for: `${prefix}-pass` }, "New passphrase (8 characters or more)"), pass, h("label", { for: `${prefix}-pass-again` }, "The new passphrase again"), again],
    check(say) {
      if (pass.value !== again.value) {
        say("The two passphrases differ.", "error");
        return null;
      }
      if (pass.value.length < 8) {
        say("Choose a passphrase of 8 characters or more.", "error");
        return null;
      }
      return pass.value;
    },
  };
}

/** The new keys' recovery code and key file, shown once. */
function newKeys(result: HTMLElement, title: string, recoveryCode: string, keyFile: unknown, member: string, then: string): void {
  replace(
    result,
    h("h3", {}, title),
    h("p", {}, "Write down your recovery code and keep it somewhere safe: it restores your keys if this device and your key file are lost."),
    h("p", {}, h("code", { id: "recovery-code" }, recoveryCode)),
    h("p", {}, download(`medledger-${member.slice(0, 8)}.key`, JSON.stringify(keyFile), "Download your key file (keep it: you sign in with it)")),
    h("p", {}, then),
  );
}

/** A patient released from custody claims their identity with the claim file and the one-time code. */
export function claimForm(client: Client, say: Say, errorText: ErrorText): HTMLElement {
  const file = h("input", { id: "claim-file", type: "file", accept: ".json,application/json", required: true });
  const code = h("input", { id: "claim-code-input", required: true, autocomplete: "one-time-code", spellcheck: "false" });
  const pass = passFields("claim");
  const go = h("button", { type: "submit" }, "Claim my identity");
  const result = h("div", { id: "claim-result", "aria-live": "polite" });
  const form = h(
    "form",
    { "aria-labelledby": "claim-title" },
    h("h2", { id: "claim-title" }, "Claim your identity"),
    h("p", {}, "If your hospital kept your records for you (custody), it gave you a claim file and a one-time code. Your own keys are made here and replace the ones it held; it can no longer read your chart."),
    h("label", { for: "claim-file" }, "Claim file"),
    file,
    h("label", { for: "claim-code-input" }, "One-time code"),
    code,
    ...pass.fields,
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const passphrase = pass.check(say);
    const chosen = file.files?.[0];
    if (!passphrase || !chosen) {
      if (!chosen) say("Choose the claim file.", "error");
      return;
    }
    go.disabled = true;
    say("Making your keys here, then claiming your identity on the ledger…");
    chosen
      .text()
      .then((text) => claimIdentity(client, text, code.value, passphrase))
      .then((claimed) => {
        pass.pass.value = "";
        pass.again.value = "";
        code.value = "";
        newKeys(result, "Your identity is yours", claimed.recoveryCode, claimed.keyFile, claimed.member, "Sign in with your new key file and passphrase.");
        say(`Claimed (block ${claimed.committed.height}).`);
      })
      .catch((e: unknown) => {
        go.disabled = false;
        say(errorText(e), "error");
      });
  });
  return h("section", { class: "new-member" }, form, result);
}

/** A member who lost their keys and recovery code: new keys here, and a request for their admin. */
export function lostKeysForm(say: Say, errorText: ErrorText): HTMLElement {
  const member = h("input", { id: "lost-member", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const role = h("select", { id: "lost-role" }, ...["patient", "doctor", "nurse", "admin", "auditor", "emergency"].map((r) => h("option", { value: r }, r)));
  const org = h("input", { id: "lost-org", required: true, pattern: "[a-z0-9_-]{1,32}", spellcheck: "false" });
  const pass = passFields("lost");
  const go = h("button", { type: "submit" }, "Make new keys and a recovery request");
  const result = h("div", { id: "lost-result", "aria-live": "polite" });
  const form = h(
    "form",
    { "aria-labelledby": "lost-title" },
    h("h2", { id: "lost-title" }, "Lost your keys and your recovery code?"),
    h("p", {}, "New keys are made here. Your admin approves the request in person; after the network's delay you complete the recovery below with the new key file."),
    h("label", { for: "lost-member" }, "Your member id"),
    member,
    h("label", { for: "lost-role" }, "Your role"),
    role,
    h("label", { for: "lost-org" }, "Your organisation (its id)"),
    org,
    ...pass.fields,
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = idOf(member.value);
    const passphrase = pass.check(say);
    if (!id || !passphrase) {
      if (!id) say("A member id is 32 hexadecimal characters.", "error");
      return;
    }
    go.disabled = true;
    requestRecovery(id, role.value, org.value.trim(), passphrase)
      .then((made) => {
        pass.pass.value = "";
        pass.again.value = "";
        newKeys(result, "Your new keys are ready", made.recoveryCode, made.keyFile, id, "Give your admin the recovery request:");
        result.append(h("p", {}, download(`recovery-${id.slice(0, 8)}.json`, JSON.stringify(made.request, null, 2), "Download your recovery request (give it to your admin)")));
        say("New keys made; they work once your admin approved and the delay passed.");
      })
      .catch((e: unknown) => {
        go.disabled = false;
        say(errorText(e), "error");
      });
  });
  return h("section", { class: "new-member" }, form, result);
}

/** Completes an approved recovery with the new key file, then signs in with it. */
export function completeRecoveryForm(client: Client, say: Say, errorText: ErrorText, signedIn: (m: Member) => void): HTMLElement {
  const file = h("input", { id: "complete-file", type: "file", accept: ".key,application/json", required: true });
  const pass = h("input", { id: "complete-pass", type: "password", required: true, autocomplete: "current-password" });
  const go = h("button", { type: "submit" }, "Complete my recovery");
  const form = h(
    "form",
    { "aria-labelledby": "complete-title" },
    h("h2", { id: "complete-title" }, "Complete a key recovery"),
    h("label", { for: "complete-file" }, "Your new key file"),
    file,
    h("label", { for: "complete-pass" }, "Its passphrase"),
    pass,
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen) {
      say("Choose your new key file.", "error");
      return;
    }
    go.disabled = true;
    say("Opening your new keys, then completing the recovery on the ledger…");
    chosen
      .text()
      .then((text) => unlock(text, pass.value))
      .then(async (m) => {
        const done = await finishRecovery(client, m, true);
        pass.value = "";
        signedIn(m);
        say(`Your new keys are now yours on the ledger (block ${done.height}).`);
      })
      .catch((e: unknown) => {
        go.disabled = false;
        say(errorText(e), "error");
      });
  });
  return h("section", { class: "new-member" }, form);
}

/** For a signed-in member: cancel a recovery of their keys they did not ask for. */
export function yourKeys(ctx: Ctx): HTMLElement {
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel a key recovery I did not ask for");
  cancel.addEventListener("click", () =>
    act(ctx, cancel, "Cancelling on the ledger…", async () => {
      const done = await finishRecovery(ctx.client, ctx.me, false);
      return `The recovery of your keys is cancelled (block ${done.height}). Tell your admin.`;
    }),
  );
  return h(
    "details",
    { class: "your-keys" },
    h("summary", {}, "Your keys"),
    h("p", {}, `You are ${ctx.me.role} ${shortId(ctx.me.member)} of ${ctx.me.org}. If an admin approved a recovery of your keys that you did not ask for, stop it here before the delay ends.`),
    cancel,
  );
}
