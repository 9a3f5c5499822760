// An admin's screens: enrolment requests approved, members suspended and reinstated, a lost-keys
// recovery approved (the member's new public keys, made on their new device), and a patient
// released from the organisation's custody (a one-time code and a claim file for the patient,
// made here from the custody keystore entry). The admin never holds a member's new keys.

import { approveRecovery, parseRecoveryRequest, releaseCustody } from "@medledger/protocol";

import { type Ctx, act } from "./context.js";
import { download, h, replace, shortId } from "./dom.js";
import { approveForm, suspendForm } from "./enrol.js";

export function showAdminHome(ctx: Ctx, main: HTMLElement): void {
  const admin = { ...ctx.me, org: ctx.me.org };
  replace(
    main,
    approveForm(ctx.client, admin, ctx.say, ctx.errorText),
    suspendForm(ctx.client, admin, ctx.say, ctx.errorText),
    recoveryForm(ctx),
    custodyForm(ctx),
  );
}

/** Reads the file chosen in `input` (at most `max` bytes). */
async function chosenText(input: HTMLInputElement, max = 64 * 1024): Promise<string> {
  const file = input.files?.[0];
  if (!file) throw new Error("Choose a file.");
  if (file.size > max) throw new Error("That file is too large to be what was asked for.");
  return file.text();
}

/** Approves a member's recovery request: their keys are replaced after the network's delay, unless they object. */
function recoveryForm(ctx: Ctx): HTMLElement {
  const file = h("input", { id: "recovery-file", type: "file", accept: ".json,application/json", required: true });
  const go = h("button", { type: "submit" }, "Approve the recovery");
  const form = h(
    "form",
    { "aria-labelledby": "recovery-title", class: "add" },
    h("h2", { id: "recovery-title" }, "Approve a key recovery"),
    h("p", {}, "For a member of your organisation who lost their keys and recovery code: check who they are in person first. Their new keys replace the old ones after the network's delay, unless they cancel with their current keys."),
    h("label", { for: "recovery-file" }, "Recovery request file"),
    file,
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(ctx, go, "Recording the recovery request on the ledger…", async () => {
      const request = parseRecoveryRequest(await chosenText(file));
      const done = await approveRecovery(ctx.client, ctx.me, request);
      return `Recovery of member ${shortId(request.member)} approved (block ${done.height}); it completes after the network's delay.`;
    });
  });
  return form;
}

/** Releases a patient from custody: the code and claim file to hand them, in person. */
function custodyForm(ctx: Ctx): HTMLElement {
  const file = h("input", { id: "custody-file", type: "file", accept: ".key,application/json", required: true });
  const go = h("button", { type: "submit" }, "Release for a claim");
  const result = h("div", { id: "custody-result", "aria-live": "polite" });
  const form = h(
    "form",
    { "aria-labelledby": "custody-title", class: "add" },
    h("h2", { id: "custody-title" }, "Release a patient from custody"),
    h("p", {}, "Choose the patient's entry of your organisation's custody keystore (custody/ORG/MEMBER.key). It opens with your keys, here; the patient gets a one-time code and a claim file, with which they make their own keys."),
    h("label", { for: "custody-file" }, "Custody keystore entry"),
    file,
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(ctx, go, "Opening the custody entry here, then recording the release…", async () => {
      const released = await releaseCustody(ctx.client, { ...ctx.me, org: ctx.me.org }, await chosenText(file));
      const id = released.member.slice(0, 8);
      replace(
        result,
        h("h3", {}, `Patient ${shortId(released.member)} released`),
        h("p", {}, "Hand the patient this one-time code, in person (it is shown once):"),
        h("p", {}, h("code", { id: "claim-code" }, released.code)),
        h("p", {}, download(`claim-${id}.json`, JSON.stringify(released.claimFile, null, 2), "Download the claim file (for the patient)")),
        h("p", {}, "Then delete the custody keystore entry: the patient's new keys will replace it."),
      );
      return `Released (block ${released.committed.height}).`;
    });
  });
  return h("section", {}, form, result);
}
