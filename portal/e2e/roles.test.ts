// Every role's other stories in a real browser (Debian's Chromium, driven by playwright-core)
// against real validators: care teams, delegates, documents and new versions, sensitive records,
// legal holds and the AuditEvent export, a custody claim, and key recovery. Started by
// crates/cli/tests/portal.rs (`the_portal_covers_every_role`), which makes the network and
// checks afterwards, with the CLI, what the browser did. It passes in the environment:
//   MEDLEDGER_PORTAL_URL, MEDLEDGER_E2E_HOME, MEDLEDGER_PASSPHRASE, MEDLEDGER_E2E_SHOTS,
//   MEDLEDGER_E2E_ADMIN (alias), MEDLEDGER_E2E_ORG, MEDLEDGER_E2E_RECORD (alice's CLI-written
//   record), MEDLEDGER_E2E_MARKER (a word in it), MEDLEDGER_E2E_IDS (JSON: alias → member id),
//   MEDLEDGER_E2E_CUSTODY (a custody keystore entry), MEDLEDGER_E2E_KID_RECORD (the record the
//   doctor wrote for the patient in custody).

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import type { Browser, Page } from "playwright-core";

import { type Sent, type WatchedPage, checkScreen, env, launch, openPage, saveDownload, signIn as signInWith } from "./browser.js";

const url = env("MEDLEDGER_PORTAL_URL");
const home = env("MEDLEDGER_E2E_HOME");
const passphrase = env("MEDLEDGER_PASSPHRASE");
const shots = env("MEDLEDGER_E2E_SHOTS");
const adminAlias = env("MEDLEDGER_E2E_ADMIN");
const org = env("MEDLEDGER_E2E_ORG");
const record = env("MEDLEDGER_E2E_RECORD");
const marker = env("MEDLEDGER_E2E_MARKER");
const ids = JSON.parse(env("MEDLEDGER_E2E_IDS")) as Record<string, string>;
const custodyEntry = env("MEDLEDGER_E2E_CUSTODY");
const kidRecord = env("MEDLEDGER_E2E_KID_RECORD");
const alice = ids.alice!;
const keyFile = (alias: string) => join(home, "identities", `${alias}.key`);
/** Passphrases chosen in the browser (for claimed and recovered keys): never sent anywhere. */
const claimPassphrase = "kid's own passphrase";
const recoveryPassphrase = "nina's new passphrase";

let browser: Browser;
const sent: Sent[] = [];
/** What the tests find along the way, for the later ones (and the Rust side, through files). */
const found: Record<string, string> = {};

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
  writeFileSync(join(shots, "roles-found.json"), JSON.stringify(found));
});

function open(width = 1024): Promise<WatchedPage> {
  return openPage(browser, url, sent, width);
}

async function as(alias: string, width = 1024): Promise<WatchedPage> {
  const page = await open(width);
  await signInWith(page, keyFile(alias), passphrase);
  return page;
}

/** The records the chart on screen lists (their ids). */
function listed(page: Page): Promise<string[]> {
  return page.locator("button[data-record]").evaluateAll((els) => els.map((e) => e.getAttribute("data-record") ?? ""));
}

/** A clinician opens `patient`'s chart. */
async function openChart(page: Page, patient: string): Promise<void> {
  await page.getByLabel(/Patient id/).fill(patient);
  await page.getByRole("button", { name: "Open chart" }).click();
  await page.locator("#records, #chart p").first().waitFor({ timeout: 30_000 });
}

/** A clinician opens a record by its id; resolves to its content's text, or the refusal. */
async function openById(page: Page, id: string): Promise<string> {
  await page.getByLabel(/Record id/).fill(id);
  await page.getByRole("button", { name: "Open this record" }).click();
  const outcome = page.locator(".content").or(page.getByText(/^Refused by the ledger/));
  await outcome.first().waitFor({ timeout: 30_000 });
  return (await page.locator(".content").count()) > 0 ? page.locator(".content").innerText() : page.locator("#status").innerText();
}

/** Adds an Observation from the form; returns the new record's id. */
async function addObservation(page: Page, measure: string, value: string): Promise<string> {
  const before = await listed(page);
  await page.getByLabel("Measurement").selectOption({ label: measure });
  await page.getByLabel("Value", { exact: true }).fill(value);
  await page.getByRole("button", { name: "Add to the chart" }).click();
  await page.getByText(/^Added: record [0-9a-f]{8}… \(block \d+\)/).waitFor({ timeout: 30_000 });
  const added = (await listed(page)).filter((r) => !before.includes(r));
  assert.equal(added.length, 1, "the chart lists the new record");
  return added[0]!;
}

describe("every role in the portal, on real validators", () => {
  it("a doctor makes a care team with a nurse; the patient gives it her chart; the nurse reads through it until she is removed", async () => {
    const doctor = await as("drbob");
    await doctor.getByRole("button", { name: "Care teams" }).click();
    await doctor.getByText("You are in no care team.").waitFor({ timeout: 30_000 });
    await doctor.locator(`input[type=checkbox][value="${ids.nina}"]`).check();
    await doctor.getByRole("button", { name: "Create the team" }).click();
    await doctor.getByText(/^Care team [0-9a-f]{8}… created \(block \d+\)/).waitFor({ timeout: 30_000 });
    found.team = await doctor.locator("code.team-id").innerText();
    assert.match(found.team, /^[0-9a-f]{32}$/);
    const members = await doctor.locator("ul.members").innerText();
    assert.match(members, /you/);
    assert.match(members, /nurse/);
    await checkScreen(doctor, "care teams", join(shots, "care-teams.png"));

    // The patient gives the team her chart (by the id her doctor gave her), and the doctor the right to write.
    const patient = await as("alice", 360);
    await patient.getByRole("button", { name: "Who has access" }).click();
    await patient.getByLabel(/or a care team/).fill(found.team);
    await patient.getByRole("button", { name: "Give access to the whole chart" }).click();
    await patient.getByText(/^Care team [0-9a-f]{8}… can now read the chart/).waitFor({ timeout: 30_000 });
    assert.match(await patient.locator("#teams").innerText(), /Care team/);
    const drbob = await patient.locator("#grantee option", { hasText: /^Dr Bob \(doctor/ }).getAttribute("value");
    await patient.getByLabel(/^Clinician/).selectOption(drbob!);
    await patient.getByLabel("They may also add records to the chart").check();
    await patient.getByRole("button", { name: "Give access to the whole chart" }).click();
    await patient.getByText(/^Dr Bob .*can now read the chart/).waitFor({ timeout: 30_000 });
    await checkScreen(patient, "who has access, with a team", join(shots, "patient-team-360.png"));
    await patient.close();

    // The doctor writes: the record is wrapped for the chart key and the team's own key.
    await doctor.getByRole("button", { name: "Charts" }).click();
    await openChart(doctor, alice);
    found.teamRecord = await addObservation(doctor, "Heart rate (/min)", "64");

    const nurse = await as("nina");
    assert.match(await openById(nurse, found.teamRecord), /64 \/min/, "through the team's key");
    assert.ok((await openById(nurse, record)).includes(marker), "her earlier record, through the chart key the team holds");
    await nurse.close();

    await doctor.getByRole("button", { name: "Care teams" }).click();
    await doctor.getByRole("button", { name: /^Remove nurse .* from team/ }).click();
    await doctor.getByText(/removed from team [0-9a-f]{8}… \(block \d+\)/).waitFor({ timeout: 30_000 });
    await doctor.getByRole("button", { name: "Charts" }).click();
    await openChart(doctor, alice);
    found.afterRemoval = await addObservation(doctor, "Heart rate (/min)", "66");
    await doctor.close();

    const removed = await as("nina");
    assert.match(await openById(removed, found.afterRemoval), /^Refused by the ledger/, "written after her removal");
    assert.match(await openById(removed, found.teamRecord), /^Refused by the ledger/, "nor what she read before");
    await removed.close();
  });

  it("a doctor uploads a PDF and a sensitive resource and writes a new version; the patient reads them; a chart-wide grantee is refused the sensitive one", async () => {
    const doctor = await as("drbob");
    await openChart(doctor, alice);
    // A PDF, encrypted in the browser.
    const pdf = join(shots, "discharge.pdf");
    writeFileSync(pdf, `%PDF-1.4\n% discharge letter ${marker}\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n`);
    let before = await listed(doctor);
    await doctor.getByLabel(/^File \(FHIR JSON or PDF/).setInputFiles(pdf);
    await doctor.getByRole("button", { name: "Encrypt and add" }).click();
    await doctor.getByText(/^Added application\/pdf: record/).waitFor({ timeout: 30_000 });
    found.pdf = (await listed(doctor)).filter((r) => !before.includes(r))[0]!;
    // A Condition labelled HIV: outside chart-wide access.
    const condition = join(shots, "condition.json");
    writeFileSync(
      condition,
      JSON.stringify({
        resourceType: "Condition",
        meta: { security: [{ system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: "HIV" }] },
        code: { text: `HIV infection ${marker}` },
        subject: { reference: `Patient/${alice}` },
      }),
    );
    before = await listed(doctor);
    await doctor.getByLabel(/^File \(FHIR JSON or PDF/).setInputFiles(condition);
    await doctor.getByRole("button", { name: "Encrypt and add" }).click();
    await doctor.getByText(/^Added Condition \(sensitive: outside chart-wide access\): record/).waitFor({ timeout: 30_000 });
    found.sensitive = (await listed(doctor)).filter((r) => !before.includes(r))[0]!;
    // A new version of the team-era observation: its value corrected in the JSON.
    await doctor.locator(`button[data-record="${found.teamRecord}"]`).click();
    const text = doctor.getByLabel("The resource (FHIR JSON), edited");
    await text.waitFor({ timeout: 30_000 });
    await text.fill((await text.inputValue()).replace(/"value": 64/, '"value": 65'));
    await doctor.getByRole("button", { name: "Save as a new version" }).click();
    await doctor.getByText(/is now at version 2 \(block \d+\)/).waitFor({ timeout: 30_000 });
    await checkScreen(doctor, "clinician record with versions", join(shots, "clinician-new-version.png"));
    await doctor.close();

    const patient = await as("alice", 360);
    await patient.getByRole("heading", { name: "Your records" }).waitFor();
    await patient.getByRole("button", { name: new RegExp(`^Open record ${found.teamRecord!.slice(0, 8)}…, version 2$`) }).click();
    await patient.locator(".content").waitFor({ timeout: 30_000 });
    assert.match(await patient.locator(".content").innerText(), /65 \/min/, "version 2");
    await patient.locator(`button[data-record="${found.pdf}"]`).click();
    await patient.getByText("A PDF document, decrypted on this device.").waitFor({ timeout: 30_000 });
    const saved = await saveDownload(patient, patient.getByRole("link", { name: /^Download the file/ }), join(shots, "discharge-downloaded.pdf"));
    assert.deepEqual(saved, readFileSync(pdf), "the PDF, byte for byte");
    await patient.locator(`button[data-record="${found.sensitive}"]`).click();
    await patient.getByText(`HIV infection ${marker}`).first().waitFor({ timeout: 30_000 });
    await checkScreen(patient, "patient document", join(shots, "patient-document-360.png"));
    // A chart-wide grant to the nurse: the PDF opens for her, the sensitive record does not.
    await patient.getByRole("button", { name: "Who has access" }).click();
    await patient.getByLabel(/^Clinician/).selectOption(ids.nina!);
    await patient.getByRole("button", { name: "Give access to the whole chart" }).click();
    await patient.getByText(/can now read the chart \(block \d+\)/).waitFor({ timeout: 30_000 });
    await patient.close();
    const nurse = await as("nina");
    assert.match(await openById(nurse, found.pdf), /A PDF document/);
    assert.match(await openById(nurse, found.sensitive), /^Refused by the ledger/, "outside chart-wide access");
    assert.equal(await nurse.getByText(`HIV infection ${marker}`).count(), 0);
    await nurse.close();
  });

  it("the patient sees every grant with its term, shares one record and takes it back; the doctor finds her among his patients", async () => {
    const doctor = await as("drbob");
    const mine = doctor.locator(`#my-patients button[data-patient="${alice}"]`);
    await mine.waitFor({ timeout: 30_000 });
    await mine.click();
    await doctor.locator(`#chart button[data-record="${record}"]`).waitFor({ timeout: 30_000 });
    await doctor.close();

    const patient = await as("alice", 360);
    await patient.locator(`button[data-record="${found.afterRemoval}"]`).click();
    await patient.getByLabel("With", { exact: true }).selectOption(ids.drcarol!);
    await patient.getByRole("button", { name: "Share this record" }).click();
    await patient.getByText(/^Shared with .*\(block \d+\)/).waitFor({ timeout: 30_000 });
    const other = await as("drcarol");
    assert.match(await openById(other, found.afterRemoval!), /66 \/min/, "the record shared with her");
    assert.match(await openById(other, record), /^Refused by the ledger/, "and nothing else");
    // A chart-wide grant with an end date: shown with its term.
    await patient.getByRole("button", { name: "Who has access" }).click();
    const until = new Date(Date.now() + 30 * 86_400_000).toISOString().slice(0, 10);
    await patient.getByLabel(/^Clinician/).selectOption(ids.drcarol!);
    await patient.getByLabel("Until (optional)").fill(until);
    await patient.getByRole("button", { name: "Give access to the whole chart" }).click();
    await patient.getByText(/can now read the chart \(block \d+\)/).waitFor({ timeout: 30_000 });
    assert.match(await patient.locator("#holders").innerText(), /doctor .*\(until /);
    const shared = await patient.locator("#record-grants").innerText();
    assert.ok(shared.includes(`Record ${found.afterRemoval!.slice(0, 8)}`), shared);
    await checkScreen(patient, "every grant", join(shots, "patient-grants-360.png"));
    // Both taken back: the record, then the chart.
    await patient.getByRole("button", { name: new RegExp(`^Take record ${found.afterRemoval!.slice(0, 8)}… back from`) }).click();
    await patient.getByText(/taken back from .*\(block \d+\)/).waitFor({ timeout: 30_000 });
    assert.ok(!(await patient.locator("#record-grants").innerText()).includes(`Record ${found.afterRemoval!.slice(0, 8)}… with doctor`));
    await patient.getByRole("button", { name: /^Take access from doctor/ }).click();
    await patient.getByText(/Access taken from doctor/).waitFor({ timeout: 30_000 });
    await patient.close();
    assert.match(await openById(other, found.afterRemoval!), /^Refused by the ledger/, "taken back");
    await other.close();
  });

  it("the patient appoints a delegate, who reads her chart and sees who has access; dismissed, he is refused", async () => {
    const patient = await as("alice", 360);
    await patient.getByRole("button", { name: "Who has access" }).click();
    await patient.getByLabel(/^Their patient id/).fill(ids.paul!);
    await patient.getByRole("button", { name: "Appoint as my delegate" }).click();
    await patient.getByText(/is now your delegate \(block \d+\)/).waitFor({ timeout: 30_000 });
    assert.match(await patient.locator("#delegates").innerText(), new RegExp(ids.paul!.slice(0, 8)));

    const delegate = await as("paul", 360);
    await delegate.getByRole("heading", { name: "Charts you look after" }).waitFor({ timeout: 30_000 });
    const tabs = delegate.getByRole("navigation", { name: `Patient ${alice.slice(0, 8)}…'s chart` });
    await tabs.getByRole("button", { name: "Records" }).click();
    await delegate.locator(`#delegate-chart button[data-record="${record}"]`).click();
    await delegate.locator("#delegate-chart .content").waitFor({ timeout: 30_000 });
    assert.ok((await delegate.locator("#delegate-chart .content").innerText()).includes(marker), "read as her delegate");
    await tabs.getByRole("button", { name: "Who has access" }).click();
    await delegate.locator("#delegate-chart #holders").waitFor({ timeout: 30_000 });
    assert.match(await delegate.locator("#delegate-chart #holders").innerText(), /Dr Bob/);
    await checkScreen(delegate, "delegate", join(shots, "delegate-360.png"));
    await delegate.close();

    await patient.getByRole("button", { name: /^Dismiss delegate patient/ }).click();
    await patient.getByText(/dismissed \(block \d+\)/).waitFor({ timeout: 30_000 });
    await patient.close();
    const dismissed = await as("paul");
    await dismissed.locator("#looked-after[data-checked]").waitFor({ state: "attached", timeout: 30_000 });
    assert.equal(await dismissed.getByRole("heading", { name: "Charts you look after" }).count(), 0, "no chart to look after");
    await dismissed.close();
  });

  it("an auditor holds a record against erasure and lifts the hold, and exports the trail as FHIR AuditEvents", async () => {
    const auditor = await as("audrey");
    await auditor.getByRole("heading", { name: "Flagged for review" }).waitFor({ timeout: 30_000 });
    await auditor.getByLabel(/^Patient id \(whose records to hold\)/).fill(alice);
    await auditor.getByLabel(/^Record id/).fill(found.pdf!);
    await auditor.getByRole("button", { name: "Place the hold" }).click();
    await auditor.getByText(/^Legal hold placed on record/).waitFor({ timeout: 30_000 });
    await checkScreen(auditor, "auditor", join(shots, "auditor-hold.png"));

    const patient = await as("alice");
    await patient.locator(`button[data-record="${found.pdf}"]`).click();
    await patient.getByRole("button", { name: "Erase this record…" }).click();
    await patient.getByRole("button", { name: "Yes, erase it for good" }).click();
    await patient.getByText(/^Refused by the ledger: .*legal_hold/).waitFor({ timeout: 30_000 });
    assert.ok((await listed(patient)).includes(found.pdf!), "still there");

    await auditor.getByRole("button", { name: "Lift the hold" }).click();
    await auditor.getByText(/^Legal hold lifted from record/).waitFor({ timeout: 30_000 });
    await patient.getByRole("button", { name: "Yes, erase it for good" }).click();
    await patient.getByText(/erased \(block \d+\)/).waitFor({ timeout: 30_000 });
    await patient.close();

    await auditor.getByLabel(/^Patient id \(whose trail to export\)/).fill(alice);
    await auditor.getByRole("button", { name: "Export the audit trail" }).click();
    const link = auditor.getByRole("link", { name: /^Save \d+ AuditEvent resources/ });
    await link.waitFor({ timeout: 30_000 });
    const exported = join(shots, "alice-audit.ndjson");
    const lines = (await saveDownload(auditor, link, exported)).toString("utf8").trim().split("\n");
    const events = lines.map((l) => JSON.parse(l) as Record<string, any>);
    assert.ok(events.every((e) => e.resourceType === "AuditEvent" && e.entity[0].what.identifier.value === alice));
    const holds = events.filter((e) => e.entity[0].detail?.[0]?.type === "legal-hold").map((e) => e.entity[0].detail[0].valueString);
    assert.deepEqual(holds, ["placed", "lifted"]);
    assert.ok(events.some((e) => e.action === "D" && e.outcome === "4" && e.outcomeDesc === "legal_hold"), "the refused erasure");
    assert.ok(events.some((e) => e.action === "D" && e.outcome === "0"), "the erasure");
    await auditor.close();
  });

  it("an admin releases a patient from custody; she claims her identity in the browser and reads her record", async () => {
    const admin = await as(adminAlias);
    await admin.getByLabel("Custody keystore entry").setInputFiles(custodyEntry);
    await admin.getByRole("button", { name: "Release for a claim" }).click();
    await admin.locator("#claim-code").waitFor({ timeout: 30_000 });
    const code = await admin.locator("#claim-code").innerText();
    assert.match(code, /^[0-9a-f]{8}(-[0-9a-f]{8}){3}$/);
    const claimFile = join(shots, "claim.json");
    await saveDownload(admin, admin.getByRole("link", { name: /^Download the claim file/ }), claimFile);
    await checkScreen(admin, "admin custody release", join(shots, "admin-custody.png"));
    await admin.close();

    const page = await open(360);
    const form = page.locator("form[aria-labelledby=claim-title]");
    await form.getByLabel("Claim file").setInputFiles(claimFile);
    await form.getByLabel("One-time code").fill("00000000-00000000-00000000-00000000");
    await form.getByLabel("New passphrase (8 characters or more)").fill(claimPassphrase);
    await form.getByLabel("The new passphrase again").fill(claimPassphrase);
    await form.getByRole("button", { name: "Claim my identity" }).click();
    await page.getByText("the claim code does not open this claim file").waitFor({ timeout: 30_000 });
    await form.getByLabel("One-time code").fill(code);
    await form.getByRole("button", { name: "Claim my identity" }).click();
    await page.getByRole("heading", { name: "Your identity is yours" }).waitFor({ timeout: 60_000 });
    const kidKey = join(shots, "kid.key");
    const keyText = (await saveDownload(page, page.getByRole("link", { name: /^Download your key file/ }), kidKey)).toString("utf8");
    assert.ok(!keyText.includes(claimPassphrase));
    found.kidKey = kidKey;
    await signInWith(page, kidKey, claimPassphrase);
    await page.locator(`button[data-record="${kidRecord}"]`).click();
    await page.locator(".content").waitFor({ timeout: 30_000 });
    assert.match(await page.locator(".content").innerText(), /Observation/, "the record the doctor wrote while she was in custody");
    await page.close();
  });

  it("a nurse who lost her keys makes new ones, the admin approves, she completes after the delay; a recovery not asked for is cancelled", async () => {
    const page = await open();
    const lost = page.locator("form[aria-labelledby=lost-title]");
    await lost.getByLabel("Your member id").fill(ids.nina!);
    await lost.getByLabel("Your role").selectOption("nurse");
    await lost.getByLabel("Your organisation (its id)").fill(org);
    await lost.getByLabel("New passphrase (8 characters or more)").fill(recoveryPassphrase);
    await lost.getByLabel("The new passphrase again").fill(recoveryPassphrase);
    await lost.getByRole("button", { name: "Make new keys and a recovery request" }).click();
    const newKey = join(shots, "nina-new.key");
    const request = join(shots, "nina-recovery.json");
    await saveDownload(page, page.getByRole("link", { name: /^Download your key file/ }), newKey);
    await saveDownload(page, page.getByRole("link", { name: /^Download your recovery request/ }), request);

    const admin = await as(adminAlias);
    await admin.getByLabel("Recovery request file").setInputFiles(request);
    await admin.getByRole("button", { name: "Approve the recovery" }).click();
    await admin.getByText(/^Recovery of member [0-9a-f]{8}… approved/).waitFor({ timeout: 30_000 });

    // The network's delay (2 s here) runs on the ledger's clock: completing before it is refused.
    const complete = page.locator("form[aria-labelledby=complete-title]");
    await complete.getByLabel("Your new key file").setInputFiles(newKey);
    await complete.getByLabel("Its passphrase").fill(recoveryPassphrase);
    for (let attempt = 0; ; attempt++) {
      await complete.getByRole("button", { name: "Complete my recovery" }).click();
      const outcome = page.getByRole("button", { name: "Sign out" }).or(page.locator("#status.error"));
      await outcome.first().waitFor({ timeout: 30_000 });
      if ((await page.getByRole("button", { name: "Sign out" }).count()) > 0) break;
      const refusal = await page.locator("#status").innerText();
      assert.match(refusal, /recovery_too_soon/, "refused only for the delay");
      assert.ok(attempt < 20, `still refused: ${refusal}`);
      // The ledger's clock moves with its blocks: look again in a moment.
      await page.waitForTimeout(500);
    }
    await page.getByRole("heading", { name: "Open a chart" }).waitFor();
    await page.close();

    // Someone asks to recover the second doctor's keys; she cancels with her current ones.
    const other = await open();
    const form = other.locator("form[aria-labelledby=lost-title]");
    await form.getByLabel("Your member id").fill(ids.drcarol!);
    await form.getByLabel("Your role").selectOption("doctor");
    await form.getByLabel("Your organisation (its id)").fill(org);
    await form.getByLabel("New passphrase (8 characters or more)").fill(recoveryPassphrase);
    await form.getByLabel("The new passphrase again").fill(recoveryPassphrase);
    await form.getByRole("button", { name: "Make new keys and a recovery request" }).click();
    const strangerKey = join(shots, "stranger.key");
    const strangerRequest = join(shots, "stranger-recovery.json");
    await saveDownload(other, other.getByRole("link", { name: /^Download your key file/ }), strangerKey);
    await saveDownload(other, other.getByRole("link", { name: /^Download your recovery request/ }), strangerRequest);
    await admin.getByLabel("Recovery request file").setInputFiles(strangerRequest);
    await admin.getByRole("button", { name: "Approve the recovery" }).click();
    await admin.getByText(/^Recovery of member [0-9a-f]{8}… approved/).waitFor({ timeout: 30_000 });
    await admin.close();
    const carol = await as("drcarol");
    await carol.getByText("Your keys", { exact: true }).click();
    await carol.getByRole("button", { name: "Cancel a key recovery I did not ask for" }).click();
    await carol.getByText(/^The recovery of your keys is cancelled/).waitFor({ timeout: 30_000 });
    await checkScreen(carol, "your keys", join(shots, "your-keys.png"));
    await carol.close();
    const complete2 = other.locator("form[aria-labelledby=complete-title]");
    await complete2.getByLabel("Your new key file").setInputFiles(strangerKey);
    await complete2.getByLabel("Its passphrase").fill(recoveryPassphrase);
    await complete2.getByRole("button", { name: "Complete my recovery" }).click();
    await other.locator("#status.error").waitFor({ timeout: 30_000 });
    assert.equal(await other.getByRole("button", { name: "Sign out" }).count(), 0, "the cancelled recovery completes nothing");
    await other.close();
  });

  it("no request carried plaintext, a passphrase or a key", () => {
    assert.ok(sent.length > 0);
    const secrets = [marker, passphrase, claimPassphrase, recoveryPassphrase];
    for (const r of sent) {
      const seen = `${r.url}\n${JSON.stringify(r.headers)}\n${r.body}`;
      for (const secret of secrets) assert.ok(!seen.includes(secret), `a request to ${r.url} carries a secret`);
    }
  });
});
