// What the browser decides about a record before it encrypts it, checked against the CLI's rules.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";

import { SENSITIVE_LABELS, auditEventResource, describeRecord, isSensitive } from "../src/fhir.js";

const utf8 = (s: string) => new TextEncoder().encode(s);

describe("records described on the client", () => {
  it("keeps outside chart-wide grants exactly what the SDK does (its SENSITIVE_LABELS, read from its source)", () => {
    const source = readFileSync(new URL("../../../crates/sdk/src/ops/records.rs", import.meta.url), "utf8");
    const block = /pub const SENSITIVE_LABELS: &\[&str\] = &\[([\s\S]*?)\];/.exec(source);
    assert.ok(block, "the SDK's list is where this test looks for it");
    const rust = [...block[1]!.matchAll(/"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual([...SENSITIVE_LABELS], rust);
  });

  it("labels a resource sensitive by an HL7 v3 security code only", () => {
    const labelled = (system: string | undefined, code: string) => ({ resourceType: "Observation", meta: { security: [{ system, code }] } });
    assert.equal(isSensitive(labelled("http://terminology.hl7.org/CodeSystem/v3-ActCode", "HIV")), true);
    assert.equal(isSensitive(labelled("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "R")), true);
    assert.equal(isSensitive(labelled(undefined, "PSY")), true, "no system named: the HL7 code");
    assert.equal(isSensitive(labelled("http://example.org/local", "HIV")), false, "another system's HIV is not HL7's");
    assert.equal(isSensitive(labelled("http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "N")), false, "normal");
    assert.equal(isSensitive({ resourceType: "Observation" }), false);
    assert.equal(isSensitive({ resourceType: "Observation", meta: { security: "HIV" } }), false, "malformed: not a list");
  });

  it("tells FHIR resources, other JSON, PDFs and files apart, and refuses malformed JSON", () => {
    assert.deepEqual(describeRecord(utf8(' {"resourceType":"Condition"}')), { resource_type: "Condition", content_type: "application/fhir+json", sensitive: false });
    assert.equal(describeRecord(utf8(JSON.stringify({ resourceType: "Observation", meta: { security: [{ code: "SUD" }] } }))).sensitive, true);
    assert.deepEqual(describeRecord(utf8('{"a":1}')), { resource_type: null, content_type: "application/json", sensitive: false });
    assert.equal(describeRecord(utf8("%PDF-1.4\n...")).content_type, "application/pdf");
    assert.equal(describeRecord(utf8("plain words"), "text/plain").content_type, "text/plain");
    assert.throws(() => describeRecord(utf8('{"resourceType":')), /not valid JSON/);
    assert.throws(() => describeRecord(utf8('{"resourceType":"<script>"}')), /not a FHIR resource/);
  });

  it("maps a denied emergency-era read to a FHIR AuditEvent as the gateway does", () => {
    const event = {
      tx: "01".repeat(32),
      height: 7,
      time: 1_700_000_000_000,
      actor: "02".repeat(16),
      actor_org: "org1",
      actor_role: "emergency",
      action: { type: "break_glass", reason: "unconscious", until: null },
      purpose: "ETREAT",
      decision: { decision: "allowed" as const },
      delegate_of: null,
    };
    const r = auditEventResource("03".repeat(32), "04".repeat(16), event) as Record<string, any>;
    assert.equal(r.type.code, "110127");
    assert.equal(r.entity[0].detail[0].valueString, "unconscious");
    assert.equal(r.purposeOfEvent[0].coding[0].code, "ETREAT");
    assert.equal(r.outcome, "0");
    assert.equal(r.recorded, "2023-11-14T22:13:20.000Z");
    const read = { ...event, action: { type: "read", record: "05".repeat(16), version: 1 }, purpose: null, decision: { decision: "denied" as const, reason: "access_denied" } };
    const d = auditEventResource("03".repeat(32), "04".repeat(16), read) as Record<string, any>;
    assert.deepEqual([d.type.code, d.action, d.outcome, d.outcomeDesc], ["110110", "R", "4", "access_denied"]);
    assert.equal(d.entity[1].what.identifier.value, "05".repeat(16));
    assert.equal(d.purposeOfEvent, undefined);
  });
});
