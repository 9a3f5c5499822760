"""An outside FHIR client: HL7 FHIR R4B models from fhir.resources (PyPI) over plain HTTP.

It knows nothing of medledger: it creates a Patient and Observations through the gateway at
$GATEWAY, reads them back, searches, and checks that every answer validates as a FHIR model and
that errors come back as OperationOutcomes. Prints one JSON line of facts for the Rust test.
"""

import json
import os
import sys
import urllib.error
import urllib.request

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient

BASE = os.environ["GATEWAY"].rstrip("/")
TOKEN = os.environ["GATEWAY_TOKEN"]
JSON = "application/fhir+json"


def call(method, path, model=None, raw=None):
    body = model.model_dump_json(exclude_none=True).encode() if model is not None else raw
    request = urllib.request.Request(BASE + path, data=body, method=method)
    request.add_header("Accept", JSON)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    if body is not None:
        request.add_header("Content-Type", JSON)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def expect(condition, what):
    if not condition:
        sys.exit(f"client check failed: {what}")


status, _, cs = call("GET", "/metadata")
capability = CapabilityStatement.model_validate(cs)
expect(status == 200 and capability.fhirVersion == "4.0.1", "metadata")

patient = Patient.model_validate(
    {"resourceType": "Patient", "name": [{"family": "Pythonista", "given": ["Ada"]}],
     "gender": "female", "birthDate": "1984-03-09"}
)
status, headers, created = call("POST", "/Patient", patient)
expect(status == 201, f"create Patient: {status} {created}")
created = Patient.model_validate(created)
expect(headers.get("Location", "").endswith(f"/Patient/{created.id}/_history/1"), "Location header")

observations = []
for code, value in (("4548-4", 6.9), ("2345-7", 5.2)):
    obs = Observation.model_validate(
        {"resourceType": "Observation", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
         "subject": {"reference": f"Patient/{created.id}"},
         "effectiveDateTime": "2026-01-01T09:30:00Z",
         "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}
    )
    status, _, body = call("POST", "/Observation", obs)
    expect(status == 201, f"create Observation: {status} {body}")
    observations.append(Observation.model_validate(body))

status, _, body = call("GET", f"/Observation/{observations[0].id}")
read = Observation.model_validate(body)
expect(status == 200 and float(read.valueQuantity.value) == 6.9, "read back")
expect(read.meta.versionId == "1" and read.meta.lastUpdated is not None, "meta")
status, _, body = call("GET", f"/Patient/{created.id}")
expect(status == 200 and Patient.model_validate(body).birthDate.isoformat() == "1984-03-09", "read Patient")

status, _, body = call("GET", f"/Observation?patient={created.id}&code=http://loinc.org|2345-7")
found = Bundle.model_validate(body)
expect(status == 200 and found.total == 1 and found.entry[0].resource.id == observations[1].id, "search by code")
status, _, body = call("GET", f"/Patient/{created.id}/$everything")
everything = Bundle.model_validate(body)
kinds = sorted(e.resource.__resource_type__ for e in everything.entry)
expect(kinds == ["Observation", "Observation", "Patient"], f"$everything: {kinds}")

read.status = "amended"
status, _, body = call("PUT", f"/Observation/{read.id}", read)
expect(status == 200 and Observation.model_validate(body).meta.versionId == "2", f"update: {status} {body}")

status, _, body = call("POST", "/Observation", raw=b'{"resourceType":"Observation","status":"final"}')
outcome = OperationOutcome.model_validate(body)
expect(status == 422 and outcome.issue[0].severity == "error", "invalid resource gives an OperationOutcome")
status, _, body = call("GET", "/Observation/00000000000000000000000000000000")
expect(status == 404 and OperationOutcome.model_validate(body).issue[0].code == "not-found", "404")

print(json.dumps({"patient": created.id, "observations": [o.id for o in observations], "everything": len(kinds)}))
