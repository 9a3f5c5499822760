// An auditor's screens: the flagged queue (break-glass and emergency reads, with the notes
// decrypted here), legal holds placed and lifted (GDPR Art. 17(3): a held record cannot be
// erased), and a patient's audit trail exported as FHIR R4 AuditEvent resources (NDJSON).

import { auditEventResource } from "@medledger/protocol";

import { type Ctx, act, idOf } from "./context.js";
import { download, h, replace, shortId } from "./dom.js";
import { showFlagged } from "./emergency.js";

export function showAuditorHome(ctx: Ctx, main: HTMLElement): void {
  const queue = h("section", { id: "flagged-queue", "aria-live": "polite" });
  replace(main, queue, legalHoldForm(ctx), exportForm(ctx));
  ctx.say("Reading the flagged queue…");
  showFlagged(ctx.client, ctx.me, queue, ctx.say, ctx.errorText)
    .then(() => ctx.say(""))
    .catch((e: unknown) => ctx.say(ctx.errorText(e), "error"));
}

function legalHoldForm(ctx: Ctx): HTMLElement {
  const patient = h("input", { id: "hold-patient", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const record = h("input", { id: "hold-record", pattern: "[0-9a-f]{32}", autocomplete: "off", spellcheck: "false" });
  const place = h("button", { type: "button" }, "Place the hold");
  const lift = h("button", { type: "button", class: "secondary" }, "Lift the hold");
  const run = (button: HTMLButtonElement, hold: boolean) => {
    const p = idOf(patient.value);
    const r = record.value.trim() ? idOf(record.value) : null;
    if (!p || (record.value.trim() && !r)) {
      ctx.say("Ids are 32 hexadecimal characters.", "error");
      return;
    }
    act(ctx, button, hold ? "Placing the legal hold on the ledger…" : "Lifting the legal hold on the ledger…", async () => {
      const done = await ctx.client.transact(ctx.me, { type: "legal_hold", patient: p, record: r, hold });
      return `Legal hold ${hold ? "placed on" : "lifted from"} ${r ? `record ${shortId(r)}` : `every record of patient ${shortId(p)}`} (block ${done.height}).`;
    });
  };
  place.addEventListener("click", () => run(place, true));
  lift.addEventListener("click", () => run(lift, false));
  return h(
    "form",
    { "aria-labelledby": "hold-title", class: "add" },
    h("h2", { id: "hold-title" }, "Legal hold"),
    h("p", {}, "While a hold is placed, the patient cannot erase the records it covers (the ledger refuses it). The hold and its lifting are in the patient's trail."),
    h("label", { for: "hold-patient" }, "Patient id (whose records to hold)"),
    patient,
    h("label", { for: "hold-record" }, "Record id (leave empty for every record of the patient)"),
    record,
    h("div", { class: "buttons" }, place, " ", lift),
  );
}

function exportForm(ctx: Ctx): HTMLElement {
  const patient = h("input", { id: "export-patient", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const go = h("button", { type: "submit" }, "Export the audit trail");
  const link = h("p", { id: "audit-export" });
  const form = h(
    "form",
    { "aria-labelledby": "export-title", class: "add" },
    h("h2", { id: "export-title" }, "Export a patient's audit trail"),
    h("p", {}, "As FHIR R4 AuditEvent resources (NDJSON), for your SIEM or compliance tools: participants and records by their ledger pseudonyms."),
    h("label", { for: "export-patient" }, "Patient id (whose trail to export)"),
    patient,
    go,
    link,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const p = idOf(patient.value);
    if (!p) {
      ctx.say("A patient id is 32 hexadecimal characters.", "error");
      return;
    }
    act(ctx, go, "Reading the trail…", async () => {
      const events = await ctx.client.audit(ctx.me, p);
      const lines = events.map((e) => `${JSON.stringify(auditEventResource(ctx.client.chainId, p, e))}\n`).join("");
      replace(link, download(`audit-${p.slice(0, 8)}.ndjson`, lines, `Save ${events.length} AuditEvent resources`, "application/fhir+ndjson"));
      return `The trail of patient ${shortId(p)} is ready: ${events.length} events.`;
    });
  });
  return form;
}
