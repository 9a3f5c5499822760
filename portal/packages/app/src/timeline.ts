// A patient's access timeline: every event of their audit trail (who read, wrote, granted,
// revoked, opened break-glass; allowed or denied), newest first, with filters and a plot of
// accesses per day. The trail is the ledger's; the names are the provider directory's (a
// patient's own name is never on the ledger).

import type { AuditEvent, Client, Identity, MemberEntry } from "@medledger/protocol";

import { h, replace, shortId, when } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

type Filter = "all" | "read" | "write" | "consent" | "denied" | "flagged";

const FILTERS: [Filter, string][] = [
  ["all", "Everything"],
  ["read", "Reads"],
  ["write", "Writes"],
  ["consent", "Grants and revocations"],
  ["denied", "Refused"],
  ["flagged", "Emergency (break-glass)"],
];

function denied(e: AuditEvent): boolean {
  return e.decision.decision === "denied";
}

function flagged(e: AuditEvent): boolean {
  return e.action.type === "break_glass" || e.action.type === "read_restricted" || e.purpose === "ETREAT";
}

function matches(e: AuditEvent, filter: Filter): boolean {
  switch (filter) {
    case "all":
      return true;
    case "read":
      return e.action.type === "read" || e.action.type === "read_restricted";
    case "write":
      return e.action.type === "write";
    case "consent":
      return e.action.type === "grant" || e.action.type === "revoke" || e.action.type === "delegate";
    case "denied":
      return denied(e);
    case "flagged":
      return flagged(e);
  }
}

/** What happened, in words. */
export function describe(e: AuditEvent, name: (id: string) => string): string {
  const a = e.action;
  const record = a.record ? `record ${shortId(a.record)}` : "";
  const version = a.version !== undefined ? ` (version ${a.version})` : "";
  const scope = a.scope === "all" ? "the whole chart" : a.scope === "sensitive" ? "sensitive records" : "one record";
  switch (a.type) {
    case "read":
      return `Read ${record}${version}`;
    case "read_restricted":
      return `Read ${record}${version} under break-glass (sensitive)`;
    case "write":
      return `Wrote ${record}${version}`;
    case "grant":
      return `Access to ${scope} given to ${a.grantee ? name(a.grantee) : "someone"}`;
    case "revoke":
      return `Access to ${scope} taken from ${a.grantee ? name(a.grantee) : "someone"}`;
    case "break_glass":
      return "Emergency access (break-glass) opened";
    case "erase":
      return `Erased ${record}`;
    case "delegate":
      return `${typeof a.delegate === "string" ? name(a.delegate) : "Someone"} ${a.appoint ? "appointed" : "dismissed"} as delegate`;
    case "legal_hold":
      return `Legal hold ${a.hold ? "placed on" : "lifted from"} ${record || "the whole chart"}`;
    case "chart_review":
      return "Record list reviewed by an auditor";
    case "keys":
      return `Keys: ${String(a.event).replaceAll("_", " ")}`;
    default:
      return a.type.replaceAll("_", " ");
  }
}

/** Accesses per day over the trail's span (at most 60 days back from the last event), as bars. */
function plot(events: AuditEvent[]): SVGSVGElement | null {
  const reads = events.filter((e) => e.action.type === "read" || e.action.type === "read_restricted");
  if (reads.length === 0) return null;
  const day = 86_400_000;
  const last = Math.floor(Math.max(...reads.map((e) => e.time)) / day);
  const first = Math.max(Math.floor(Math.min(...reads.map((e) => e.time)) / day), last - 59);
  const days = last - first + 1;
  const allowed = new Array<number>(days).fill(0);
  const refused = new Array<number>(days).fill(0);
  for (const e of reads) {
    const i = Math.floor(e.time / day) - first;
    if (i < 0) continue;
    (denied(e) ? refused : allowed)[i]! += 1;
  }
  const top = Math.max(1, ...allowed.map((n, i) => n + refused[i]!));
  const [width, height] = [600, 120];
  const bar = Math.min(width / days, 24);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 20}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("class", "plot");
  const total = reads.length;
  const refusedTotal = refused.reduce((a, b) => a + b, 0);
  svg.setAttribute("aria-label", `Reads per day over ${days} day${days === 1 ? "" : "s"}: ${total} in all, ${refusedTotal} refused`);
  const rect = (x: number, y: number, w: number, hgt: number, fill: string) => {
    const r = document.createElementNS(SVG, "rect");
    for (const [k, v] of [["x", x], ["y", y], ["width", w], ["height", hgt], ["fill", fill]] as const) r.setAttribute(k, String(v));
    svg.append(r);
  };
  for (let i = 0; i < days; i++) {
    const ok = (allowed[i]! / top) * height;
    const no = (refused[i]! / top) * height;
    rect(i * bar + 1, height - ok, Math.max(1, bar - 2), ok, "#0b5cad");
    rect(i * bar + 1, height - ok - no, Math.max(1, bar - 2), no, "#a01212");
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "0");
  label.setAttribute("y", String(height + 16));
  label.setAttribute("font-size", "16");
  label.textContent = `${new Date(first * day).toLocaleDateString()} – ${new Date(last * day).toLocaleDateString()} (blue: reads, red: refused)`;
  svg.append(label);
  return svg;
}

/**
 * A button that fetches the event's receipt and verifies it here (the transaction and its
 * outcome in a block a quorum of the validators certified), then offers the file.
 */
function receiptCell(client: Client, me: Identity, patient: string, e: AuditEvent): HTMLElement {
  const cell = h("td");
  const verify = h("button", { type: "button", class: "secondary", "aria-label": `Verify the receipt of the event at ${when(e.time)}` }, "Verify");
  verify.addEventListener("click", () => {
    verify.disabled = true;
    client
      .receipt(me, e.tx, patient)
      .then(({ bytes, verified }) => {
        const url = URL.createObjectURL(new Blob([new Uint8Array(bytes)], { type: "application/octet-stream" }));
        replace(
          cell,
          h("span", { class: "verified" }, `Verified: block ${verified.height}, certified at ${verified.certifiedHeight}`),
          " ",
          h("a", { href: url, download: `receipt-${e.tx.slice(0, 16)}.bin` }, "file"),
        );
      })
      .catch((err: unknown) => {
        verify.disabled = false;
        replace(cell, h("span", { class: "unverified" }, `Not verified: ${err instanceof Error ? err.message : String(err)}`), " ", verify);
      });
  });
  cell.append(verify);
  return cell;
}

/** Shows `patient`'s access timeline in `target`. */
export async function showTimeline(client: Client, me: Identity, patient: string, target: HTMLElement): Promise<void> {
  const events = (await client.audit(me, patient)).reverse();
  const names = new Map<string, string>();
  for (const actor of new Set(events.flatMap((e) => [e.actor, ...(e.action.grantee ? [e.action.grantee] : [])]))) {
    if (actor === patient) {
      names.set(actor, "you");
      continue;
    }
    let entry: MemberEntry | null = null;
    try {
      entry = await client.member(me, actor);
    } catch {
      entry = null;
    }
    const who = entry?.display_name ?? `${entry?.role ?? "member"} ${shortId(actor)}`;
    names.set(actor, entry ? `${who} (${entry.role}, ${entry.org})` : who);
  }
  const name = (id: string) => names.get(id) ?? shortId(id);
  const select = h("select", { id: "timeline-filter" }, ...FILTERS.map(([value, label]) => h("option", { value }, label)));
  const body = h("tbody");
  const caption = h("caption");
  const render = () => {
    const filter = select.value as Filter;
    const shown = events.filter((e) => matches(e, filter));
    caption.textContent = `${shown.length} of ${events.length} event${events.length === 1 ? "" : "s"}, newest first`;
    replace(
      body,
      ...shown.map((e) =>
        h(
          "tr",
          { class: denied(e) ? "denied" : flagged(e) ? "flagged" : undefined },
          h("td", {}, when(e.time)),
          h("td", { title: e.actor }, name(e.actor)),
          h("td", {}, describe(e, name)),
          h("td", {}, e.purpose ?? ""),
          h("td", {}, denied(e) ? "Refused" : flagged(e) ? "Allowed (flagged)" : "Allowed"),
          receiptCell(client, me, patient, e),
        ),
      ),
    );
  };
  select.addEventListener("change", render);
  render();
  const table = h(
    "table",
    { id: "timeline" },
    caption,
    h(
      "thead",
      {},
      h("tr", {}, ...["When", "Who", "What", "Purpose", "Decision", "Receipt"].map((c) => h("th", { scope: "col" }, c))),
    ),
    body,
  );
  replace(
    target,
    h("h2", {}, "Access timeline"),
    h("p", {}, "Every access to your chart is on the ledger, allowed or refused, before any byte leaves a validator."),
    plot(events),
    h("label", { for: "timeline-filter" }, "Show"),
    select,
    h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": "Access events" }, table),
  );
}
