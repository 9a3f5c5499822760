"""Validates medledger's FHIR audit export with an outside parser: every line of stdin must be an
HL7 FHIR AuditEvent that the fhir.resources (PyPI) R4B model accepts. Prints one JSON line of
facts (count, type codes, outcomes, purposes) for the Rust test."""

import json
import sys

from fhir.resources.R4B.auditevent import AuditEvent

facts = {"count": 0, "types": [], "outcomes": [], "purposes": [], "actions": [], "agent_roles": []}
for line in sys.stdin:
    if not line.strip():
        continue
    event = AuditEvent.model_validate_json(line)  # raises on any invalid field
    facts["count"] += 1
    facts["types"].append(event.type.code)
    facts["outcomes"].append(event.outcome)
    facts["actions"].append(event.action)
    facts["agent_roles"].append(
        [coding.code for agent in event.agent for role in agent.role or [] for coding in role.coding or []]
    )
    for purpose in event.purposeOfEvent or []:
        facts["purposes"].extend(c.code for c in purpose.coding or [])
print(json.dumps(facts))
