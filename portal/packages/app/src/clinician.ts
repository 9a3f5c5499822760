// A clinician's screens (doctor, nurse, emergency): a chart opened by the patient's id, a record
// opened by its id (shared with this clinician alone) with a purpose of use, break-glass for
// doctors and emergency clinicians, and their care teams.

import { type PurposeOfUse, myTeams } from "@medledger/protocol";

import { openRecord, purposeSelect, showChart } from "./chart.js";
import { type Ctx, idOf } from "./context.js";
import { h, replace, shortId } from "./dom.js";
import { breakGlassForm } from "./emergency.js";
import { showTeams } from "./teams.js";

export function showClinicianHome(ctx: Ctx, main: HTMLElement): void {
  const view = h("div", { id: "view" });
  const charts = h("button", { type: "button", "aria-pressed": "true" }, "Charts");
  const teams = h("button", { type: "button", "aria-pressed": "false" }, "Care teams");
  const choose = (chosen: HTMLButtonElement) => {
    for (const b of [charts, teams]) b.setAttribute("aria-pressed", String(b === chosen));
  };
  charts.addEventListener("click", () => {
    choose(charts);
    showCharts(ctx, view);
  });
  teams.addEventListener("click", () => {
    choose(teams);
    ctx.say("Reading your care teams…");
    showTeams(ctx, view)
      .then(() => ctx.say(""))
      .catch((e: unknown) => ctx.say(ctx.errorText(e), "error"));
  });
  replace(main, h("nav", { "aria-label": "Your work" }, charts, " ", teams), view);
  showCharts(ctx, view);
}

function showCharts(ctx: Ctx, view: HTMLElement): void {
  const chart = h("section", { id: "chart", "aria-live": "polite" });
  const patient = h("input", { id: "patient", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { "aria-labelledby": "open-title" },
    h("h2", { id: "open-title" }, "Open a chart"),
    h("label", { for: "patient" }, "Patient id (32 hexadecimal characters)"),
    patient,
    h("button", { type: "submit" }, "Open chart"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = idOf(patient.value);
    if (!id) {
      ctx.say("A patient id is 32 hexadecimal characters.", "error");
      return;
    }
    void showChart(ctx, chart, id, "Records", false);
  });
  // A record shared with this member alone (a per-record grant) is opened by its id.
  const record = h("input", { id: "record-id", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const purpose = purposeSelect("record-purpose");
  const byId = h(
    "form",
    { "aria-labelledby": "record-title" },
    h("h2", { id: "record-title" }, "Open a record"),
    h("label", { for: "record-id" }, "Record id (32 hexadecimal characters)"),
    record,
    h("label", { for: "record-purpose" }, "Purpose of use"),
    purpose,
    h("button", { type: "submit" }, "Open this record"),
  );
  byId.addEventListener("submit", (event) => {
    event.preventDefault();
    const panel = h("section", { id: "record", "aria-label": "The record opened", hidden: true });
    replace(chart, panel);
    const id = record.value.trim().toLowerCase();
    const chosen = purpose.value as PurposeOfUse;
    // After a new version, the record is opened again (a new access, in the patient's trail).
    const reopen = (): Promise<void> => openRecord(ctx, panel, id, chosen, reopen);
    void reopen();
  });
  // Doctors and emergency clinicians may break the glass (the ledger refuses anyone else).
  const emergency =
    ctx.me.role === "doctor" || ctx.me.role === "emergency"
      ? breakGlassForm(ctx.client, ctx.me, ctx.say, ctx.errorText, (id) => {
          record.focus();
          purpose.value = "ETREAT";
          patient.value = id;
        })
      : null;
  const mine = h("section", { id: "my-patients", "aria-labelledby": "my-patients-title" });
  replace(view, mine, form, byId, chart, emergency);
  patient.focus();
  void showMyPatients(ctx, mine, chart);
}

/**
 * The charts this clinician (or a care team of theirs) holds or held a grant on: each opened with
 * a click (whether it still may be read is the ledger's decision at each read).
 */
async function showMyPatients(ctx: Ctx, target: HTMLElement, chart: HTMLElement): Promise<void> {
  let charts: string[];
  try {
    const teams = await myTeams(ctx.client, ctx.me);
    const lists = await Promise.all(
      [ctx.me.member, ...teams.map((t) => t.team)].map((id) =>
        ctx.client.get<{ charts: string[] }>(`/v1/members/${id}/charts?limit=100`, ctx.me).then((p) => p.charts),
      ),
    );
    charts = [...new Set(lists.flat())].sort();
  } catch (e) {
    ctx.say(ctx.errorText(e), "error");
    return;
  }
  const title = h("h2", { id: "my-patients-title" }, "Your patients");
  if (charts.length === 0) {
    replace(target, title, h("p", {}, "No patient has given you (or a care team of yours) access yet."));
    return;
  }
  replace(
    target,
    title,
    h(
      "ul",
      { class: "patients" },
      ...charts.map((p) => {
        const open = h("button", { type: "button", class: "secondary", "data-patient": p }, `Patient ${shortId(p)}`);
        open.setAttribute("aria-label", `Open the chart of patient ${shortId(p)}`);
        open.addEventListener("click", () => void showChart(ctx, chart, p, `Records of patient ${shortId(p)}`, false));
        return h("li", {}, open);
      }),
    ),
  );
}
