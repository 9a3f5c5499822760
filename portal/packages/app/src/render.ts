// A record's content as a clinician or a patient reads it: the common FHIR resources as a few
// labelled lines (what was measured, the value and its unit, when, status), any other resource as
// its fields, and a file as a download. Text only (see dom.ts).

import { h } from "./dom.js";

type Json = Record<string, unknown>;

function obj(v: unknown): Json | null {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Json) : null;
}

function str(v: unknown): string | null {
  return typeof v === "string" ? v : typeof v === "number" || typeof v === "boolean" ? String(v) : null;
}

/** A CodeableConcept as words: its text, else its first coding's display, else system|code. */
export function concept(v: unknown): string | null {
  const c = obj(v);
  if (!c) return null;
  if (str(c.text)) return str(c.text);
  const codings = Array.isArray(c.coding) ? c.coding.map(obj).filter((x): x is Json => x !== null) : [];
  for (const coding of codings) {
    if (str(coding.display)) return str(coding.display);
  }
  const first = codings[0];
  if (first && str(first.code)) return `${str(first.system) ?? ""}|${str(first.code)}`;
  return null;
}

function quantity(v: unknown): string | null {
  const q = obj(v);
  if (!q || str(q.value) === null) return null;
  const unit = str(q.unit) ?? str(q.code);
  return unit ? `${str(q.value)} ${unit}` : (str(q.value) as string);
}

function value(resource: Json): string | null {
  return (
    quantity(resource.valueQuantity) ??
    concept(resource.valueCodeableConcept) ??
    str(resource.valueString) ??
    str(resource.valueBoolean) ??
    str(resource.valueInteger) ??
    str(resource.valueDateTime)
  );
}

function dateOf(resource: Json): string | null {
  const period = obj(resource.effectivePeriod) ?? obj(resource.period);
  return (
    str(resource.effectiveDateTime) ??
    str(resource.issued) ??
    str(resource.recordedDate) ??
    str(resource.authoredOn) ??
    str(resource.onsetDateTime) ??
    (period ? str(period.start) : null) ??
    str(resource.date)
  );
}

/** What a resource is about, by type. */
function headline(resource: Json): string {
  const kind = str(resource.resourceType) ?? "Resource";
  switch (kind) {
    case "Observation":
    case "Condition":
    case "Procedure":
    case "DiagnosticReport":
    case "AllergyIntolerance":
      return concept(resource.code) ?? kind;
    case "MedicationRequest":
    case "MedicationStatement":
      return concept(resource.medicationCodeableConcept) ?? kind;
    case "Encounter":
      return concept(Array.isArray(resource.type) ? resource.type[0] : null) ?? concept(resource.class) ?? kind;
    case "Patient": {
      const name = Array.isArray(resource.name) ? obj(resource.name[0]) : null;
      const given = name && Array.isArray(name.given) ? name.given.map(str).filter(Boolean).join(" ") : "";
      return [given, name ? str(name.family) : null].filter(Boolean).join(" ") || kind;
    }
    default:
      return kind;
  }
}

/** The rows of a resource's summary: label and text. */
export function summary(resource: Json): [string, string][] {
  const rows: [string, string][] = [];
  const add = (label: string, text: string | null) => {
    if (text) rows.push([label, text]);
  };
  add("Type", str(resource.resourceType));
  add("What", headline(resource));
  add("Value", value(resource));
  if (Array.isArray(resource.component)) {
    for (const part of resource.component.slice(0, 20)) {
      const c = obj(part);
      if (c) add(concept(c.code) ?? "Component", value(c));
    }
  }
  add("Status", str(resource.status) ?? concept(resource.clinicalStatus));
  add("Category", concept(Array.isArray(resource.category) ? resource.category[0] : resource.category));
  const date = dateOf(resource);
  add("When", date && !Number.isNaN(Date.parse(date)) && date.length > 10 ? new Date(date).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" }) : date);
  add("Gender", str(resource.gender));
  add("Born", str(resource.birthDate));
  add("Dose", Array.isArray(resource.dosageInstruction) ? str(obj(resource.dosageInstruction[0])?.text) : null);
  add("Conclusion", str(resource.conclusion));
  return rows;
}

/**
 * A record's content as elements: a FHIR resource as a summary list (its narrative, if any, is
 * not shown: it is XHTML this portal does not render); anything else as a download.
 */
export function renderContent(plaintext: Uint8Array, metadata: Record<string, unknown> | null, record = "record"): HTMLElement {
  const contentType = typeof metadata?.content_type === "string" ? metadata.content_type : "application/octet-stream";
  let resource: Json | null = null;
  if (metadata?.resource_type || contentType.includes("json")) {
    try {
      resource = obj(JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plaintext)));
    } catch {
      resource = null;
    }
  }
  if (resource && str(resource.resourceType)) {
    const list = h("dl", { class: "summary" });
    for (const [label, text] of summary(resource)) {
      list.append(h("dt", {}, label), h("dd", {}, text));
    }
    const raw = h("details", {}, h("summary", {}, "Every field (FHIR JSON)"), h("pre", {}, JSON.stringify(resource, null, 2)));
    return h("div", { class: "content", "data-resource-type": str(resource.resourceType) ?? "" }, list, raw);
  }
  const blob = new Blob([new Uint8Array(plaintext)], { type: contentType });
  const extension = contentType === "application/pdf" ? ".pdf" : contentType.includes("json") ? ".json" : "";
  const kind = contentType === "application/pdf" ? "A PDF document" : `A file (${contentType})`;
  const link = h("a", { href: URL.createObjectURL(blob), download: `${record}${extension}`, class: "download" }, `Download the file (${plaintext.length} bytes)`);
  return h("div", { class: "content", "data-content-type": contentType }, h("p", {}, `${kind}, decrypted on this device.`), link);
}
