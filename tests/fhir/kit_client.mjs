// An outside FHIR client: npm's fhir-kit-client (nobody here wrote it) against the gateway at
// $GATEWAY, with its bearer token $GATEWAY_TOKEN. It knows nothing of medledger: create, read
// through the Location it is given, vread, update with If-Match (and a stale one refused),
// conditional create, search with paging, history, $everything, a transaction Bundle and a Bulk
// Data export. Prints one JSON line of facts for the Rust test; any failed expectation exits 1.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

// Installed by scripts/test under target/test-data (the test passes its folder).
const { Client } = await import(pathToFileURL(join(process.env.FHIR_KIT_CLIENT, 'dist/index.js')).href);

const base = process.env.GATEWAY.replace(/\/$/, '');
const token = process.env.GATEWAY_TOKEN;
const client = new Client({ baseUrl: base, bearerToken: token });
const headersOf = (result) => Client.httpFor(result).response.headers;
const pathOf = (url) => url.slice(url.indexOf(base) + base.length);

const capability = await client.capabilityStatement();
assert.equal(capability.fhirVersion, '4.0.1');

// Create, then read through the Location the server handed out.
const mrn = { system: 'urn:oid:2.16.840.1.113883.19.5', value: `KIT-${process.pid}` };
const patient = await client.create({
  resourceType: 'Patient',
  body: { resourceType: 'Patient', identifier: [mrn], name: [{ family: 'Kitclient', given: ['Ada'] }] },
});
const location = headersOf(patient).get('location');
assert.ok(location.includes(`/Patient/${patient.id}/_history/1`), location);
const viaLocation = await client.request(pathOf(location));
assert.equal(viaLocation.id, patient.id);

const observation = (value) => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: [{ system: 'http://loinc.org', code: '4548-4' }] },
  subject: { reference: `Patient/${patient.id}` },
  effectiveDateTime: '2025-01-02T03:04:05Z',
  valueQuantity: { value, unit: '%' },
});
const observations = [];
for (const value of [6.1, 6.2, 6.3]) {
  observations.push(await client.create({ resourceType: 'Observation', body: observation(value) }));
}
const first = observations[0];

// Update with If-Match; a stale ETag is refused (412); vread of both versions.
const amended = { ...observation(6.9), id: first.id, status: 'amended' };
const updated = await client.update({
  resourceType: 'Observation',
  id: first.id,
  body: amended,
  options: { headers: { 'If-Match': 'W/"1"' } },
});
assert.equal(updated.meta.versionId, '2');
await assert.rejects(
  client.update({ resourceType: 'Observation', id: first.id, body: amended, options: { headers: { 'If-Match': 'W/"1"' } } }),
  (error) => error.response.status === 412,
);
const v1 = await client.vread({ resourceType: 'Observation', id: first.id, version: '1' });
assert.equal(v1.valueQuantity.value, 6.1);
const v2 = await client.vread({ resourceType: 'Observation', id: first.id, version: '2' });
assert.equal(v2.status, 'amended');

// Conditional create finds the patient instead of making a second one.
const again = await client.create({
  resourceType: 'Patient',
  body: { resourceType: 'Patient', identifier: [mrn] },
  options: { headers: { 'If-None-Exist': `identifier=${mrn.system}|${mrn.value}` } },
});
assert.equal(again.id, patient.id);

// Search with paging, following the server's next links.
let page = await client.search({ resourceType: 'Observation', searchParams: { patient: patient.id, _count: 2 } });
assert.equal(page.total, 3);
let found = page.entry.length;
while ((page = await client.nextPage({ bundle: page }))) {
  found += page.entry.length;
}
assert.equal(found, 3);

// History, newest first; $everything.
const history = await client.history({ resourceType: 'Observation', id: first.id });
assert.equal(history.type, 'history');
assert.deepEqual(history.entry.map((e) => e.resource.meta.versionId), ['2', '1']);
const everything = await client.operation({ name: '$everything', resourceType: 'Patient', id: patient.id, method: 'GET' });
assert.equal(everything.total, 4);

// A transaction Bundle: a new patient and an Observation that names it by its urn:uuid.
const response = await client.transaction({
  body: {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: 'urn:uuid:9a1b7c2e-0000-4000-8000-000000000001',
        resource: { resourceType: 'Patient', name: [{ family: 'Kitbundle' }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        resource: { ...observation(5.5), subject: { reference: 'urn:uuid:9a1b7c2e-0000-4000-8000-000000000001' } },
        request: { method: 'POST', url: 'Observation' },
      },
    ],
  },
});
assert.equal(response.type, 'transaction-response');
assert.equal(response.entry.length, 2);

// A Bulk Data export of this patient's chart: kick-off, polling, then the NDJSON files.
const kickoff = await client.request(`Patient/${patient.id}/$export`, {
  options: { headers: { Prefer: 'respond-async', Accept: 'application/fhir+json' } },
});
const status = pathOf(headersOf(kickoff).get('content-location'));
let manifest;
for (let i = 0; i < 600 && !manifest; i += 1) {
  const poll = await client.request(status);
  if (Client.httpFor(poll).response.status === 200) manifest = poll;
  else await new Promise((resolve) => setTimeout(resolve, 100));
}
assert.ok(manifest, 'the export finished');
const exported = {};
for (const output of manifest.output) {
  const file = await fetch(output.url, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(file.status, 200);
  exported[output.type] = (await file.text()).trim().split('\n').length;
}
assert.deepEqual(exported, { Observation: 3, Patient: 1 });

console.log(JSON.stringify({
  patient: patient.id,
  observations: observations.map((o) => o.id),
  everything: everything.total,
  exported,
}));
