// The portal's screens. Every request that touches a patient's data is signed here and every
// record is decrypted here (see @medledger/protocol); the server only forwards to the validators.
//
// This first version: sign in with a CLI key file and its passphrase, a chart's records (the
// patient's own, or a patient's by id for staff), a record opened (its access committed on the
// ledger first, with the purpose of use), shown as text; idle logoff.

import { ApiProblem, Client, type KeyFile, PURPOSES, type PurposeOfUse, type RecordEntry } from "@medledger/protocol";

import { h, replace, shortId, when } from "./dom.js";
import { type KeptKey, forget, keep, keptKeys } from "./device.js";
import { breakGlassForm, showFlagged } from "./emergency.js";
import { approveForm, newMemberForm, suspendForm } from "./enrol.js";
import { passkeysAvailable, registerPasskey, unlockWithPasskey } from "./passkey.js";
import { renderContent } from "./render.js";
import { MEASURES, observation } from "./observation.js";
import { directory, showSharing, staffLabel } from "./sharing.js";
import { showTimeline } from "./timeline.js";
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
  replace(main, keptSection, form, newMemberForm(config.chainId, say, errorText));
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
  if (member.role === "admin") {
    replace(main, approveForm(client, member, say, errorText), suspendForm(client, member, say, errorText));
    return;
  }
  if (member.role === "auditor") {
    const section = h("section", { id: "flagged-queue", "aria-live": "polite" });
    replace(main, section);
    say("Reading the flagged queue…");
    showFlagged(client, member, section, say, errorText)
      .then(() => say(""))
      .catch((e: unknown) => say(errorText(e), "error"));
    return;
  }
  if (member.role === "patient") {
    const me = member;
    const section = h("section", { id: "chart", "aria-live": "polite" });
    const records = h("button", { type: "button", "aria-pressed": "true" }, "Your records");
    const timeline = h("button", { type: "button", "aria-pressed": "false" }, "Access timeline");
    const sharing = h("button", { type: "button", "aria-pressed": "false" }, "Who has access");
    const choose = (chosen: HTMLButtonElement) => {
      for (const b of [records, timeline, sharing]) b.setAttribute("aria-pressed", String(b === chosen));
    };
    sharing.addEventListener("click", () => {
      choose(sharing);
      say("Reading who has access…");
      showSharing(client, me, section, say, errorText)
        .then(() => say(""))
        .catch((e: unknown) => say(errorText(e), "error"));
    });
    records.addEventListener("click", () => {
      choose(records);
      void showChart(me.member, "Your records");
    });
    timeline.addEventListener("click", () => {
      choose(timeline);
      say("Reading your access trail…");
      showTimeline(client, me, me.member, section)
        .then(() => say(""))
        .catch((e: unknown) => say(errorText(e), "error"));
    });
    replace(main, h("nav", { "aria-label": "Your chart" }, records, " ", timeline, " ", sharing), section);
    void showChart(me.member, "Your records");
    return;
  }
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
    void showChart(patient.value.trim().toLowerCase(), "Records");
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
    const chart = document.getElementById("chart");
    if (chart) replace(chart, h("section", { id: "record", "aria-label": "The record opened", hidden: true }));
    void openRecord(record.value.trim().toLowerCase(), purpose.value as PurposeOfUse);
  });
  // Doctors and emergency clinicians may break the glass (the ledger refuses anyone else).
  const emergency =
    member.role === "doctor" || member.role === "emergency"
      ? breakGlassForm(client, member, say, errorText, (id) => {
          record.focus();
          purpose.value = "ETREAT";
          patient.value = id;
        })
      : null;
  replace(main, form, byId, h("section", { id: "chart", "aria-live": "polite" }), emergency);
  patient.focus();
}

async function showChart(patient: string, title: string): Promise<void> {
  if (!member) return;
  const me = member;
  const target = document.getElementById("chart") ?? main;
  say("Listing the records…");
  let records: RecordEntry[];
  try {
    records = await client.records(me, patient);
  } catch (e) {
    say(errorText(e), "error");
    return;
  }
  const purpose = purposeSelect("purpose");
  const rows = records.map((entry) => {
    const open = h("button", { type: "button", "data-record": entry.record }, "Open");
    open.setAttribute("aria-label", `Open record ${shortId(entry.record)}, version ${entry.version}`);
    open.addEventListener("click", () => void openRecord(entry.record, purpose.value as PurposeOfUse));
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
  const staff = me.role !== "patient";
  replace(
    target,
    h("h2", {}, title),
    staff
      ? null
      : h("p", {}, "Your patient id (your clinicians open your chart with it): ", h("code", { id: "my-id" }, me.member)),
    staff ? h("label", { for: "purpose" }, "Purpose of use") : null,
    staff ? purpose : null,
    table,
    h("section", { id: "record", "aria-label": "The record opened", hidden: true }),
    staff ? newObservationForm(patient) : null,
    !staff && records.length > 0 ? exportButton(records) : null,
  );
  say("");
}

/** A clinician adds an Observation to `patient`'s chart (their grant must allow writing). */
function newObservationForm(patient: string): HTMLFormElement {
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
    if (!member) return;
    const me = member;
    let resource: Record<string, unknown>;
    try {
      resource = observation(patient, MEASURES[Number(measure.value)]!, Number(value.value), note.value);
    } catch (e) {
      say(errorText(e), "error");
      return;
    }
    save.disabled = true;
    say("Encrypting here, then registering on the ledger…");
    const bytes = new TextEncoder().encode(JSON.stringify(resource));
    client
      .writeRecord(me, patient, bytes, { resource_type: "Observation", content_type: "application/fhir+json" })
      .then(async (written) => {
        await showChart(patient, "Records");
        say(`Added: record ${shortId(written.record)} (block ${written.committed.height}).`);
      })
      .catch((e: unknown) => {
        save.disabled = false;
        say(errorText(e), "error");
      });
  });
  return form;
}

/** The patient erases a record of hers, after a confirmation that says what erasure does. */
function eraseControls(record: string): HTMLElement {
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
      if (!member) return;
      yes.disabled = true;
      say("Erasing on the ledger…");
      client
        .transact(member, { type: "erase", record })
        .then(async (done) => {
          const me = member;
          if (me) await showChart(me.member, "Your records");
          say(`Record ${shortId(record)} erased (block ${done.height}).`);
        })
        .catch((e: unknown) => {
          yes.disabled = false;
          say(errorText(e), "error");
        });
    });
  });
  return box;
}

/** The patient's whole chart as FHIR NDJSON (right of access): each record read, audited, here. */
function exportButton(records: RecordEntry[]): HTMLElement {
  const go = h("button", { type: "button", class: "secondary" }, "Download my whole chart (FHIR NDJSON)");
  const link = h("p", { id: "export" });
  go.addEventListener("click", () => {
    if (!member) return;
    const me = member;
    go.disabled = true;
    say(`Reading your ${records.length} records here (each read is in your access trail)…`);
    void (async () => {
      const lines: string[] = [];
      let files = 0;
      for (const entry of records) {
        const opened = await client.read(me, entry.record, "PATRQT");
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
      replace(link, h("a", { href: url, download: "my-chart.ndjson", class: "download" }, `Save my chart (${lines.length} resources)`));
      say(`Your chart is ready: ${lines.length} FHIR resources${files ? `, ${files} files not included (open them one by one)` : ""}.`);
    })()
      .catch((e: unknown) => say(errorText(e), "error"))
      .finally(() => {
        go.disabled = false;
      });
  });
  return h("div", {}, go, link);
}

/** The patient shares the record just opened with one clinician (a per-record grant). */
async function shareRecordForm(record: string): Promise<HTMLFormElement> {
  const staff = await directory(client);
  const select = h(
    "select",
    { id: "share-with", required: true },
    h("option", { value: "" }, "Choose a clinician"),
    ...staff.map((m) => h("option", { value: m.id }, staffLabel(m))),
  );
  const share = h("button", { type: "submit" }, "Share this record");
  const form = h(
    "form",
    { "aria-labelledby": "share-title", class: "add" },
    h("h3", { id: "share-title" }, "Share this record only"),
    h("label", { for: "share-with" }, "With"),
    select,
    share,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!member || !/^[0-9a-f]{32}$/.test(select.value)) {
      say("Choose a clinician.", "error");
      return;
    }
    const name = select.selectedOptions[0]?.textContent ?? "them";
    share.disabled = true;
    say("Wrapping this record's key for them, on this device…");
    client
      .grantRecord(member, record, select.value)
      .then((done) => say(`Shared with ${name} (block ${done.height}).`))
      .catch((e: unknown) => say(errorText(e), "error"))
      .finally(() => {
        share.disabled = false;
      });
  });
  return form;
}

function purposeSelect(id: string): HTMLSelectElement {
  return h("select", { id }, ...PURPOSES.map((p) => h("option", { value: p, selected: p === "TREAT" }, p)));
}

async function openRecord(record: string, purpose: PurposeOfUse): Promise<void> {
  const panel = document.getElementById("record");
  if (!member || !panel) return;
  if (!/^[0-9a-f]{32}$/.test(record)) {
    say("A record id is 32 hexadecimal characters.", "error");
    return;
  }
  say("Recording the access on the ledger, then decrypting here…");
  try {
    const opened = await client.read(member, record, purpose);
    const title = h("h3", { tabindex: "-1" }, `Record ${shortId(record)}, version ${opened.entry.version}`);
    const own = member.role === "patient" && opened.entry.patient === member.member;
    replace(
      panel,
      title,
      renderContent(opened.plaintext, opened.metadata),
      own ? await shareRecordForm(record) : null,
      own ? eraseControls(record) : null,
    );
    panel.hidden = false;
    title.focus();
    say(`Opened; the access is in block ${opened.access.height} of the ledger.`);
  } catch (e) {
    say(errorText(e), "error");
  }
}

async function start(): Promise<void> {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    config = (await response.json()) as PortalConfig;
    client = new Client(
      config.validators.map((v) => ({ url: new URL(v.url, window.location.href).toString(), signedAs: v.signedAs })),
      config.chainId,
    );
  } catch (e) {
    say(`The portal is not configured: ${errorText(e)}`, "error");
    return;
  }
  showSignIn();
}

void start();
