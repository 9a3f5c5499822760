// FHIR on the client: what a record is (its metadata, and whether its `meta.security` keeps it
// outside chart-wide grants, as the CLI decides), and the ledger's audit events as FHIR R4
// AuditEvent resources for an auditor's export, mapped as the gateway maps them
// (`crates/gateway/src/audit.rs`, `medledger audit --format fhir`).

import type { AuditEvent } from "./client.js";
import type { MemberId } from "./ids.js";

/**
 * `meta.security` codes that keep a resource outside chart-wide grants (the SDK's
 * `SENSITIVE_LABELS`, which a test compares with this list): confidentiality R and V, and the HL7
 * v3 sensitivity codes for substance use, HIV, mental and behavioural health, sexual and domestic
 * violence, sexuality and reproductive health, genetics and the like.
 */
export const SENSITIVE_LABELS = [
  "R", "V", "ETH", "ETHUD", "OPIOIDUD", "SUD", "42CFRPart2", "HIV", "STD", "PSY", "PSYTHPN", "BH", "MH", "SDV", "SEX",
  "SICKLE", "GDIS", "DRGIS", "TBOOST",
] as const;

type Json = Record<string, unknown>;

/** Whether a FHIR resource's `meta.security` carries one of `SENSITIVE_LABELS` (HL7 v3 systems, or none named). */
export function isSensitive(resource: Json): boolean {
  const meta = resource.meta as Json | undefined;
  const labels = meta && Array.isArray(meta.security) ? (meta.security as unknown[]) : [];
  return labels.some((l) => {
    const label = l as Json | null;
    if (!label || typeof label !== "object") return false;
    const system = typeof label.system === "string" ? label.system : "";
    const hl7 = system === "" || system.startsWith("http://terminology.hl7.org/CodeSystem/v3-");
    return hl7 && typeof label.code === "string" && (SENSITIVE_LABELS as readonly string[]).includes(label.code);
  });
}

/** What a record's bytes are, as its encrypted metadata says. */
export interface RecordDescription {
  resource_type: string | null;
  content_type: string;
  sensitive: boolean;
}

/**
 * Describes a record's bytes: a JSON object with a `resourceType` is a FHIR resource (which must
 * then be a plausible one: an object, a resource type of letters), other JSON is JSON, a PDF is a
 * PDF, anything else a file of `fallbackType`. Malformed JSON is refused (as the CLI refuses it).
 */
export function describeRecord(bytes: Uint8Array, fallbackType = "application/octet-stream"): RecordDescription {
  const first = bytes.find((b) => b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09);
  if (first === 0x7b) {
    let value: unknown;
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch {
      throw new Error("the file is not valid JSON");
    }
    const resource = value as Json;
    if (typeof resource.resourceType === "string") {
      if (!/^[A-Z][A-Za-z]{1,63}$/.test(resource.resourceType)) throw new Error("not a FHIR resource: its resourceType is not a type name");
      return { resource_type: resource.resourceType, content_type: "application/fhir+json", sensitive: isSensitive(resource) };
    }
    return { resource_type: null, content_type: "application/json", sensitive: false };
  }
  const pdf = bytes.length >= 5 && String.fromCharCode(...bytes.subarray(0, 5)) === "%PDF-";
  return { resource_type: null, content_type: pdf ? "application/pdf" : fallbackType, sensitive: false };
}

const DCM = "http://dicom.nema.org/resources/ontology/DCM";
const INTERACTION = "http://hl7.org/fhir/restful-interaction";
const ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass";
const SECURITY_SOURCE = "http://terminology.hl7.org/CodeSystem/security-source-type";

/** A change of a member's keys, in the words the ledger's `KeyEvent::as_str` uses. */
const KEY_EVENTS: Record<string, string> = {
  rotated: "keys rotated",
  restored_from_recovery_code: "keys restored from the recovery code and rotated",
  custody_released: "released from custody for a claim",
  custody_claimed: "identity claimed from custody",
  recovery_requested: "key recovery requested by an admin",
  recovery_cancelled: "key recovery cancelled",
  recovery_completed: "key recovery completed",
};

function identifier(kind: string, value: string): Json {
  return { identifier: { system: `urn:medledger:${kind}`, value } };
}

/**
 * `event`, filed in `patient`'s trail on chain `chainId`, as an R4 AuditEvent: the same resource
 * the gateway makes, but for `outcomeDesc`, which names the ledger's refusal by its code (the
 * gateway by its sentence).
 */
export function auditEventResource(chainId: string, patient: MemberId, event: AuditEvent): Json {
  const a = event.action;
  const record = typeof a.record === "string" ? a.record : null;
  let type: [string, string];
  let action: string;
  let subtype: string | null = null;
  let entityRecord: string | null = null;
  switch (a.type) {
    case "read":
    case "read_restricted":
      [type, action, subtype, entityRecord] = [["110110", "Patient Record"], "R", "read", record];
      break;
    case "write": {
      const update = (a.version ?? 1) > 1;
      [type, action, subtype, entityRecord] = [["110110", "Patient Record"], update ? "U" : "C", update ? "update" : "create", record];
      break;
    }
    case "grant":
    case "revoke":
    case "delegate":
      [type, action] = [["110136", "Security Roles Changed"], "U"];
      break;
    case "keys":
      [type, action] = [["110137", "User Security Attributes Changed"], "U"];
      break;
    case "break_glass":
      [type, action] = [["110127", "Emergency Override Started"], "E"];
      break;
    case "erase":
      [type, action, subtype, entityRecord] = [["110110", "Patient Record"], "D", "delete", record];
      break;
    case "legal_hold":
      [type, action, entityRecord] = [["110110", "Patient Record"], "U", record];
      break;
    case "chart_review":
      [type, action, subtype] = [["110110", "Patient Record"], "R", "search-type"];
      break;
    default:
      throw new Error(`an audit event of an unknown kind: ${a.type}`);
  }
  const subject: Json = { what: identifier("patient", patient), type: { system: ENTITY_TYPE, code: "1", display: "Person" } };
  if (a.type === "break_glass" && typeof a.reason === "string") subject.detail = [{ type: "emergency-reason", valueString: a.reason }];
  if (a.type === "keys" && typeof a.event === "string") subject.detail = [{ type: "key-event", valueString: KEY_EVENTS[a.event] ?? a.event }];
  if (a.type === "legal_hold") subject.detail = [{ type: "legal-hold", valueString: a.hold ? "placed" : "lifted" }];
  const entity: Json[] = [subject];
  if (entityRecord) entity.push({ what: identifier("record", entityRecord), type: { system: ENTITY_TYPE, code: "2", display: "System Object" } });
  const agent: Json[] = [{ who: identifier("member", event.actor), type: { text: event.actor_role }, requestor: true }];
  const resource: Json = {
    resourceType: "AuditEvent",
    id: event.tx,
    type: { system: DCM, code: type[0], display: type[1] },
    action,
    recorded: new Date(event.time).toISOString(),
    outcome: event.decision.decision === "allowed" ? "0" : "4",
    agent,
    source: {
      site: `block ${event.height}`,
      observer: { identifier: { system: "urn:medledger:chain", value: chainId } },
      type: [{ system: SECURITY_SOURCE, code: "4", display: "Application Server" }],
    },
    entity,
  };
  if (event.delegate_of) {
    agent[0]!.role = [{ coding: [{ system: ROLE_CLASS, code: "AGNT", display: "agent" }] }];
    agent.push({ who: identifier("member", event.delegate_of), type: { text: "patient" }, role: [{ coding: [{ system: ROLE_CLASS, code: "PAT", display: "patient" }] }], requestor: false });
  }
  if (subtype) resource.subtype = [{ system: INTERACTION, code: subtype }];
  if (event.decision.decision === "denied") resource.outcomeDesc = String(event.decision.reason);
  if (event.purpose) resource.purposeOfEvent = [{ coding: [{ system: ACT_REASON, code: event.purpose }] }];
  return resource;
}
