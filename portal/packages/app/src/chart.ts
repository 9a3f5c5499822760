// A chart and a record, as every role sees them: the record list (the patient's own, a chart a
// delegate looks after, or a patient's by id for staff), a record opened (its access committed
// on the ledger first, with the purpose of use, then decrypted here), and what may be done with
// it: staff add an Observation from a form or upload a FHIR resource or a document, anyone who
// may write adds a new version, the patient shares one record or erases it, and downloads the
// whole chart. Whether any of it is allowed is the ledger's decision, never this page's.

import {
  type Opened,
  PURPOSES,
  type PurposeOfUse,
  RECORD_PLAINTEXT_MAX,
  type RecordEntry,
  describeRecord,
  grantRecord,
} from "@medledger/protocol";

import { type Ctx, act, idOf } from "./context.js";
import { h, replace, shortId, when } from "./dom.js";
import { MEASURES, observation } from "./observation.js";
import { renderContent } from "./render.js";
import { directory, staffLabel } from "./sharing.js";

export function purposeSelect(id: string): HTMLSelectElement {
  return h("select", { id }, ...PURPOSES.map((p) => h("option", { value: p, selected: p === "TREAT" }, p)));
}

/**
 * Shows `patient`'s records in `target` (the element with id `chart`), with what the member may
 * do there: `own` is true for the patient herself and for a delegate acting for her.
 */
export async function showChart(ctx: Ctx, target: HTMLElement, patient: string, title: string, own: boolean): Promise<void> {
  ctx.say("Listing the records…");
  let records: RecordEntry[];
  try {
    records = await ctx.client.records(ctx.me, patient);
  } catch (e) {
    ctx.say(ctx.errorText(e), "error");
    return;
  }
  const staff = ctx.me.role !== "patient";
  const purpose = purposeSelect("purpose");
  const panel = h("section", { id: "record", "aria-label": "The record opened", hidden: true });
  const rows = records.map((entry) => {
    const open = h("button", { type: "button", "data-record": entry.record }, "Open");
    open.setAttribute("aria-label", `Open record ${shortId(entry.record)}, version ${entry.version}`);
    open.addEventListener("click", () => void openRecord(ctx, panel, entry.record, staff ? (purpose.value as PurposeOfUse) : "PATRQT", () => showChart(ctx, target, patient, title, own)));
    return h(
      "tr",
      {},
      h("td", { title: entry.record }, shortId(entry.record)),
      h("td", {}, String(entry.version)),
      h("td", {}, when(entry.created_at)),
      h("td", {}, open),
    );
  });
  const table =
    records.length === 0
      ? h("p", {}, "No records in this chart yet.")
      : h(
          "table",
          { id: "records" },
          h("caption", {}, `${records.length} record${records.length === 1 ? "" : "s"}; opening one is recorded in the patient's access trail.`),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Record"), h("th", { scope: "col" }, "Version"), h("th", { scope: "col" }, "Registered"), h("th", { scope: "col" }, "Content"))),
          h("tbody", {}, ...rows),
        );
  const refresh = () => showChart(ctx, target, patient, title, own);
  replace(
    target,
    h("h2", {}, title),
    own && patient === ctx.me.member
      ? h("p", {}, "Your patient id (your clinicians open your chart with it): ", h("code", { id: "my-id" }, ctx.me.member))
      : null,
    staff ? h("label", { for: "purpose" }, "Purpose of use") : null,
    staff ? purpose : null,
    table,
    panel,
    staff ? newObservationForm(ctx, patient, refresh) : null,
    uploadForm(ctx, patient, refresh),
    own && records.length > 0 ? exportButton(ctx, records) : null,
  );
  ctx.say("");
}

/** A clinician adds an Observation to `patient`'s chart (their grant must allow writing). */
function newObservationForm(ctx: Ctx, patient: string, refresh: () => Promise<void>): HTMLFormElement {
  const measure = h("select", { id: "measure" }, ...MEASURES.map((m, i) => h("option", { value: String(i) }, `${m.name} (${m.unit})`)));
  const value = h("input", { id: "measure-value", type: "number", step: "any", required: true, inputmode: "decimal" });
  const note = h("textarea", { id: "measure-note", rows: "2", maxlength: "2000" });
  const save = h("button", { type: "submit" }, "Add to the chart");
  const form = h(
    "form",
    { "aria-labelledby": "add-title", class: "add" },
    h("h3", { id: "add-title" }, "Add an observation"),
    h("label", { for: "measure" }, "Measurement"),
    measure,
    h("label", { for: "measure-value" }, "Value"),
    value,
    h("label", { for: "measure-note" }, "Note (optional)"),
    note,
    save,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let resource: Record<string, unknown>;
    try {
      resource = observation(patient, MEASURES[Number(measure.value)]!, Number(value.value), note.value);
    } catch (e) {
      ctx.say(ctx.errorText(e), "error");
      return;
    }
    act(ctx, save, "Encrypting here, then registering on the ledger…", async () => {
      const bytes = new TextEncoder().encode(JSON.stringify(resource));
      const written = await ctx.client.writeRecord(ctx.me, patient, bytes, { resource_type: "Observation", content_type: "application/fhir+json" });
      await refresh();
      return `Added: record ${shortId(written.record)} (block ${written.committed.height}).`;
    });
  });
  return form;
}

/** A file chosen for a record: its bytes, checked and described (FHIR JSON, a PDF, another file). */
async function fileContent(input: HTMLInputElement): Promise<{ bytes: Uint8Array; meta: ReturnType<typeof describeRecord> }> {
  const file = input.files?.[0];
  if (!file) throw new Error("Choose a file.");
  if (file.size > RECORD_PLAINTEXT_MAX) throw new Error("records are limited to 64 MiB");
  const bytes = new Uint8Array(await file.arrayBuffer());
  return { bytes, meta: describeRecord(bytes, file.type || "application/octet-stream") };
}

/** A FHIR resource (JSON) or a document (PDF, any file) added to `patient`'s chart, encrypted here. */
function uploadForm(ctx: Ctx, patient: string, refresh: () => Promise<void>): HTMLFormElement {
  const file = h("input", { id: "upload-file", type: "file", accept: ".json,.pdf,application/json,application/fhir+json,application/pdf", required: true });
  const save = h("button", { type: "submit" }, "Encrypt and add");
  const form = h(
    "form",
    { "aria-labelledby": "upload-title", class: "add" },
    h("h3", { id: "upload-title" }, "Add a FHIR resource or a document"),
    h("label", { for: "upload-file" }, "File (FHIR JSON or PDF; up to 64 MiB)"),
    file,
    save,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(ctx, save, "Encrypting the file here, then registering it on the ledger…", async () => {
      const { bytes, meta } = await fileContent(file);
      const written = await ctx.client.writeRecord(
        ctx.me,
        patient,
        bytes,
        { resource_type: meta.resource_type, content_type: meta.content_type },
        { sensitive: meta.sensitive },
      );
      bytes.fill(0);
      file.value = "";
      await refresh();
      const what = meta.resource_type ?? meta.content_type;
      return `Added ${what}${meta.sensitive ? " (sensitive: outside chart-wide access)" : ""}: record ${shortId(written.record)} (block ${written.committed.height}).`;
    });
  });
  return form;
}

/**
 * The next version of the record opened: a FHIR resource edited here (its JSON), or a file
 * uploaded in its place. The ledger refuses it to anyone without write access, and as a conflict
 * when someone else wrote a version first.
 */
function newVersionForm(ctx: Ctx, opened: Opened, refresh: () => Promise<void>): HTMLElement {
  const record = opened.entry.record;
  const fhir = opened.metadata?.resource_type ? new TextDecoder().decode(opened.plaintext) : null;
  const text = fhir === null ? null : h("textarea", { id: "version-json", rows: "10", spellcheck: "false" });
  if (text && fhir !== null) {
    try {
      text.value = JSON.stringify(JSON.parse(fhir), null, 2);
    } catch {
      text.value = fhir;
    }
  }
  const file = h("input", { id: "version-file", type: "file", accept: ".json,.pdf,application/json,application/fhir+json,application/pdf" });
  const save = h("button", { type: "submit" }, "Save as a new version");
  const form = h(
    "form",
    { "aria-labelledby": "version-title", class: "add" },
    h("h3", { id: "version-title" }, `New version (now version ${opened.entry.version})`),
    text ? h("label", { for: "version-json" }, "The resource (FHIR JSON), edited") : null,
    text,
    h("label", { for: "version-file" }, text ? "…or a file in its place" : "A file in its place (FHIR JSON or PDF)"),
    file,
    save,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    act(ctx, save, "Encrypting the new version here, then registering it…", async () => {
      let bytes: Uint8Array;
      let meta: ReturnType<typeof describeRecord>;
      if (file.files?.length) {
        ({ bytes, meta } = await fileContent(file));
      } else if (text) {
        bytes = new TextEncoder().encode(text.value);
        meta = describeRecord(bytes);
        if (!meta.resource_type) throw new Error("the edited text is not a FHIR resource");
      } else {
        throw new Error("Choose a file.");
      }
      const written = await ctx.client.writeRecord(
        ctx.me,
        opened.entry.patient,
        bytes,
        { resource_type: meta.resource_type, content_type: meta.content_type },
        { record, sensitive: meta.sensitive },
      );
      bytes.fill(0);
      await refresh();
      return `Saved: record ${shortId(record)} is now at version ${written.version} (block ${written.committed.height}).`;
    });
  });
  return form;
}

/** Opens `record` into `panel`: the access committed first (with `purpose`), then decrypted here. */
export async function openRecord(ctx: Ctx, panel: HTMLElement, record: string, purpose: PurposeOfUse, refresh: () => Promise<void>): Promise<void> {
  if (!idOf(record)) {
    ctx.say("A record id is 32 hexadecimal characters.", "error");
    return;
  }
  ctx.say("Recording the access on the ledger, then decrypting here…");
  try {
    const opened = await ctx.client.read(ctx.me, record, purpose);
    const title = h("h3", { tabindex: "-1" }, `Record ${shortId(record)}, version ${opened.entry.version}`);
    // The patient's own record, or one of a chart her delegate looks after.
    const own = ctx.me.role === "patient";
    replace(
      panel,
      title,
      renderContent(opened.plaintext, opened.metadata, record),
      own ? await shareRecordForm(ctx, record) : null,
      newVersionForm(ctx, opened, refresh),
      own ? eraseControls(ctx, record, refresh) : null,
    );
    panel.hidden = false;
    title.focus();
    ctx.say(`Opened; the access is in block ${opened.access.height} of the ledger.`);
  } catch (e) {
    ctx.say(ctx.errorText(e), "error");
  }
}

/** The patient erases a record of hers, after a confirmation that says what erasure does. */
function eraseControls(ctx: Ctx, record: string, refresh: () => Promise<void>): HTMLElement {
  const ask = h("button", { type: "button", class: "secondary" }, "Erase this record…");
  const box = h("div", { class: "erase" }, ask);
  ask.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger" }, "Yes, erase it for good");
    const no = h("button", { type: "button", class: "secondary" }, "Keep it");
    replace(
      box,
      h(
        "p",
        { role: "alert" },
        "Erasing deletes every version's ciphertext, keys and validator shares on every validator; the ledger keeps only digests and the erasure event. It cannot be undone. A legal hold placed by an auditor stops it.",
      ),
      yes,
      " ",
      no,
    );
    yes.focus();
    no.addEventListener("click", () => replace(box, ask));
    yes.addEventListener("click", () => {
      act(ctx, yes, "Erasing on the ledger…", async () => {
        const done = await ctx.client.transact(ctx.me, { type: "erase", record });
        await refresh();
        return `Record ${shortId(record)} erased (block ${done.height}).`;
      });
    });
  });
  return box;
}

/** The patient's whole chart as FHIR NDJSON (right of access): each record read, audited, here. */
function exportButton(ctx: Ctx, records: RecordEntry[]): HTMLElement {
  const go = h("button", { type: "button", class: "secondary" }, "Download the whole chart (FHIR NDJSON)");
  const link = h("p", { id: "export" });
  go.addEventListener("click", () => {
    act(ctx, go, `Reading the ${records.length} records here (each read is in the access trail)…`, async () => {
      const lines: string[] = [];
      let files = 0;
      for (const entry of records) {
        const opened = await ctx.client.read(ctx.me, entry.record, "PATRQT");
        try {
          const resource = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(opened.plaintext)) as { resourceType?: unknown };
          if (typeof resource.resourceType === "string") {
            lines.push(JSON.stringify(resource));
            continue;
          }
        } catch {
          // not a FHIR resource: counted below
        }
        files += 1;
      }
      const url = URL.createObjectURL(new Blob([lines.map((l) => `${l}\n`).join("")], { type: "application/fhir+ndjson" }));
      replace(link, h("a", { href: url, download: "chart.ndjson", class: "download" }, `Save the chart (${lines.length} resources)`));
      return `The chart is ready: ${lines.length} FHIR resources${files ? `, ${files} files not included (open them one by one)` : ""}.`;
    });
  });
  return h("div", {}, go, link);
}

/** The patient shares the record just opened with one clinician, or a care team by its id (a per-record grant). */
async function shareRecordForm(ctx: Ctx, record: string): Promise<HTMLFormElement> {
  const staff = await directory(ctx.client);
  const select = h(
    "select",
    { id: "share-with" },
    h("option", { value: "" }, "Choose a clinician"),
    ...staff.map((m) => h("option", { value: m.id }, staffLabel(m))),
  );
  const team = h("input", { id: "share-team", pattern: "[0-9a-f]{32}", autocomplete: "off", spellcheck: "false" });
  const share = h("button", { type: "submit" }, "Share this record");
  const form = h(
    "form",
    { "aria-labelledby": "share-title", class: "add" },
    h("h3", { id: "share-title" }, "Share this record only"),
    h("label", { for: "share-with" }, "With"),
    select,
    h("label", { for: "share-team" }, "…or a care team (its id, from your doctor)"),
    team,
    share,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const to = idOf(team.value) ?? idOf(select.value);
    if (!to) {
      ctx.say("Choose a clinician, or give a care team's id.", "error");
      return;
    }
    const name = idOf(team.value) ? `care team ${shortId(to)}` : (select.selectedOptions[0]?.textContent ?? "them");
    act(ctx, share, "Wrapping this record's key for them, on this device…", async () => {
      const done = await grantRecord(ctx.client, ctx.me, record, to);
      return `Shared with ${name} (block ${done.height}).`;
    });
  });
  return form;
}
