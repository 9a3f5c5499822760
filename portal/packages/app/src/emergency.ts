// Break-glass, in the browser: a doctor or emergency clinician opens time-boxed access to a
// patient's records with a reason (and a note only the patient and the auditors can read), sees
// the window count down, and reads with purpose ETREAT; the auditors review the flagged queue and
// read the notes. Every step is flagged on the ledger.

import { type AuditEvent, type Client, EMERGENCY_REASONS, type EmergencyReason, type Identity } from "@medledger/protocol";

import { h, replace, shortId, when } from "./dom.js";
import { describe } from "./timeline.js";

type Say = (text: string, kind?: "info" | "error") => void;

/** Longest window offered here (the network's policy may allow less: the ledger decides). */
const MINUTES_MAX = 24 * 60;

function countdown(until: number, patient: string): HTMLElement {
  const clock = h("p", { role: "timer", "aria-live": "off", id: "break-glass-timer" });
  const tick = () => {
    const left = until - Date.now();
    if (left <= 0) {
      clock.textContent = `The emergency window on ${shortId(patient)} has closed.`;
      return;
    }
    const minutes = Math.floor(left / 60_000);
    const seconds = Math.floor((left % 60_000) / 1000);
    clock.textContent = `Emergency access to ${shortId(patient)} open until ${new Date(until).toLocaleTimeString()} (${minutes}:${String(seconds).padStart(2, "0")} left). Reads are flagged to the patient and the auditors.`;
    window.setTimeout(tick, 1000);
  };
  tick();
  return clock;
}

/** The break-glass form; `opened` is called with the patient once the window is open. */
export function breakGlassForm(client: Client, me: Identity, say: Say, errorText: (e: unknown) => string, opened: (patient: string) => void): HTMLElement {
  const patient = h("input", { id: "bg-patient", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const reason = h("select", { id: "bg-reason" }, ...EMERGENCY_REASONS.map((r) => h("option", { value: r }, r.replaceAll("-", " "))));
  const minutes = h("input", { id: "bg-minutes", type: "number", min: "1", max: String(MINUTES_MAX), value: "60", required: true });
  const note = h("textarea", { id: "bg-note", rows: "2", maxlength: "1000" });
  const go = h("button", { type: "submit" }, "Open emergency access");
  const status = h("div", { id: "bg-status" });
  const form = h(
    "form",
    { "aria-labelledby": "bg-title", class: "add" },
    h("h2", { id: "bg-title" }, "Emergency access (break-glass)"),
    h("p", {}, "For a patient who cannot consent. The patient and the auditors are told; every read is flagged."),
    h("label", { for: "bg-patient" }, "Patient in need of emergency care (their id)"),
    patient,
    h("label", { for: "bg-reason" }, "Reason"),
    reason,
    h("label", { for: "bg-minutes" }, "For how many minutes"),
    minutes,
    h("label", { for: "bg-note" }, "Note for the patient and the auditors (optional, encrypted for them)"),
    note,
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = patient.value.trim().toLowerCase();
    const span = Number(minutes.value);
    if (!/^[0-9a-f]{32}$/.test(id)) {
      say("A patient id is 32 hexadecimal characters.", "error");
      return;
    }
    if (!Number.isInteger(span) || span < 1 || span > MINUTES_MAX) {
      say(`Between 1 and ${MINUTES_MAX} minutes.`, "error");
      return;
    }
    go.disabled = true;
    say("Opening emergency access on the ledger…");
    client
      .breakGlass(me, id, reason.value as EmergencyReason, span * 60_000, note.value.trim() || null)
      .then((done) => {
        replace(status, countdown(done.time + span * 60_000, id));
        say(`Emergency access opened (block ${done.height}).`);
        opened(id);
      })
      .catch((e: unknown) => say(errorText(e), "error"))
      .finally(() => {
        go.disabled = false;
      });
  });
  return h("section", {}, form, status);
}

/** The auditors' review queue: every flagged event, newest first, with its note when it has one. */
export async function showFlagged(client: Client, me: Identity, target: HTMLElement, say: Say, errorText: (e: unknown) => string): Promise<void> {
  const entries = (await client.flagged(me)).reverse();
  const rows = entries.map(({ patient, event }: { patient: string; event: AuditEvent }) => {
    const cell = h("td");
    if (event.action.type === "break_glass") {
      const read = h("button", { type: "button", "aria-label": `Read the note of the break-glass at ${when(event.time)}` }, "Read the note");
      read.addEventListener("click", () => {
        client
          .breakGlassNote(me, event.tx)
          .then((text) => replace(cell, h("q", { class: "note" }, text)))
          .catch((e: unknown) => say(errorText(e), "error"));
      });
      cell.append(read);
    }
    return h(
      "tr",
      {},
      h("td", {}, when(event.time)),
      h("td", { title: patient }, shortId(patient)),
      h("td", { title: event.actor }, `${event.actor_role} ${shortId(event.actor)} (${event.actor_org})`),
      h("td", {}, describe(event, shortId)),
      h("td", {}, event.decision.decision === "denied" ? "Refused" : "Allowed"),
      cell,
    );
  });
  replace(
    target,
    h("h2", {}, "Flagged for review"),
    entries.length === 0
      ? h("p", {}, "Nothing flagged.")
      : h(
          "div",
          { class: "scroll", tabindex: "0", role: "region", "aria-label": "Flagged events" },
          h(
            "table",
            { id: "flagged" },
            h("caption", {}, `${entries.length} flagged event${entries.length === 1 ? "" : "s"}, newest first`),
            h("thead", {}, h("tr", {}, ...["When", "Patient", "Who", "What", "Decision", "Note"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, ...rows),
          ),
        ),
  );
}
