"""An outside FHIR client: PyPI's fhirpy (nobody here wrote it) against the gateway at $GATEWAY.

It knows nothing of medledger: it creates a patient and observations, pages through a search,
updates, reads earlier versions and the history, gets-or-creates (conditional create), runs
$everything, deletes, and checks every answer. Prints one JSON line of facts for the Rust test;
any failed expectation exits non-zero.
"""

import json
import os

from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

BASE = os.environ["GATEWAY"].rstrip("/")
client = SyncFHIRClient(
    BASE,
    authorization=f"Bearer {os.environ['GATEWAY_TOKEN']}",
    extra_headers={"Accept": "application/fhir+json"},
)

mrn = {"system": "urn:oid:2.16.840.1.113883.19.5", "value": f"PY-{os.getpid()}"}
patient = client.resource("Patient", identifier=[mrn], name=[{"family": "Pyclient", "given": ["Grace"]}])
patient.save()
assert patient.id and patient["meta"]["versionId"] == "1", patient

observations = []
for value in (7.1, 7.2, 7.3):
    observation = client.resource(
        "Observation",
        status="final",
        code={"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        subject=patient.to_reference(),
        effectiveDateTime="2024-05-06",
        valueQuantity={"value": value, "unit": "%"},
    )
    observation.save()
    observations.append(observation)

# A search, paged two at a time: fhirpy follows the server's next links.
found = client.resources("Observation").search(patient=patient.id).limit(2).fetch_all()
assert sorted(o.id for o in found) == sorted(o.id for o in observations), found
assert client.resources("Observation").search(patient=patient.id).count() == 3
by_family = client.resources("Patient").search(family="pyclient").fetch_all()
assert [p.id for p in by_family] == [patient.id], by_family

# Update, then the earlier version and the history.
first = observations[0]
first["status"] = "amended"
first.save()
assert first["meta"]["versionId"] == "2", first
v1 = client.execute(f"Observation/{first.id}/_history/1", method="get")
assert v1["status"] == "final" and v1["valueQuantity"]["value"] == 7.1, v1
history = client.execute(f"Observation/{first.id}/_history", method="get")
assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"], history

# Get-or-create finds the patient instead of making another one.
again, created = client.resources("Patient").search(identifier=f"{mrn['system']}|{mrn['value']}").get_or_create(
    client.resource("Patient", identifier=[mrn])
)
assert (again.id, created) == (patient.id, False), (again, created)

everything = patient.execute("$everything", method="get")
assert everything["total"] == 4, everything

# A delete: reads then answer 410 (an OperationOutcome), searches leave it out.
observations[2].delete()
try:
    client.get("Observation", observations[2].id)
    raise AssertionError("a deleted resource was read")
except (OperationOutcome, ResourceNotFound):
    pass
assert client.resources("Observation").search(patient=patient.id).count() == 2

print(json.dumps({"patient": patient.id, "observations": [o.id for o in observations], "everything": everything["total"]}))
