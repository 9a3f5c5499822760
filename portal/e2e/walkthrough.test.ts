// The portal in a real browser (Debian's Chromium, driven by playwright-core) against real
// validators: started by crates/cli/tests/portal.rs, which makes the network, writes the record
// and passes what the test needs in the environment:
//   MEDLEDGER_PORTAL_URL   the portal's URL (`medledger portal`)
//   MEDLEDGER_E2E_HOME     the CLI home whose identities/ALIAS.key files the users sign in with
//   MEDLEDGER_E2E_PATIENT  alice's member id; MEDLEDGER_E2E_RECORD the record the CLI wrote
//   MEDLEDGER_E2E_MARKER   a word in the record's plaintext; MEDLEDGER_PASSPHRASE the keystores'
//   MEDLEDGER_E2E_SHOTS    where screenshots go; MEDLEDGER_E2E_ADMIN, _ORG: an admin and their
//   organisation; MEDLEDGER_E2E_NURSE: nina's member id

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import type { Browser, Page } from "playwright-core";

import { type Sent, type WatchedPage, accessible, env, fitsWidth, launch, openPage, recordRequests, signIn as signInWith } from "./browser.js";

const url = env("MEDLEDGER_PORTAL_URL");
const home = env("MEDLEDGER_E2E_HOME");
const patient = env("MEDLEDGER_E2E_PATIENT");
const record = env("MEDLEDGER_E2E_RECORD");
const marker = env("MEDLEDGER_E2E_MARKER");
const passphrase = env("MEDLEDGER_PASSPHRASE");
const shots = env("MEDLEDGER_E2E_SHOTS");
const adminAlias = env("MEDLEDGER_E2E_ADMIN");
const org = env("MEDLEDGER_E2E_ORG");
const nurseId = env("MEDLEDGER_E2E_NURSE");
/** The passphrase and recovery code of the member enrolled in the browser: never sent anywhere. */
const newPassphrase = "ada's own long passphrase";
let recoveryCode = "";
const keyFile = (alias: string) => join(home, "identities", `${alias}.key`);

let browser: Browser;
/** The record the doctor writes in the browser (found by the patient). */
let written = "";
/** Every request any page sent, as a server could read it. */
const sent: Sent[] = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

function open(width = 1024, clock = false): Promise<WatchedPage> {
  return openPage(browser, url, sent, width, clock);
}

function signIn(page: Page, alias: string, file = keyFile(alias), secret = passphrase): Promise<void> {
  return signInWith(page, file, secret);
}

/** What the portal keeps in this browser's IndexedDB (the `keys` store), read by the driver. */
async function keptOnDevice(page: Page): Promise<Record<string, any>[]> {
  return (await page.evaluate(`new Promise((resolve, reject) => {
    const r = indexedDB.open("medledger");
    r.onsuccess = () => { const g = r.result.transaction("keys").objectStore("keys").getAll(); g.onsuccess = () => resolve(g.result); g.onerror = reject; };
    r.onerror = reject;
  })`)) as Record<string, any>[];
}

describe("the portal, in Chromium, on real validators", () => {
  it("is served with a strict Content-Security-Policy and its script pinned by integrity", async () => {
    const page = await open();
    const response = await page.request.get(url);
    const csp = response.headers()["content-security-policy"] ?? "";
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    const html = await response.text();
    assert.match(html, /<script src="\/app\.js" integrity="sha256-[A-Za-z0-9+/=]+" defer><\/script>/);
    assert.doesNotMatch(html, /<script>/, "no inline script");
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await accessible(page, "sign-in");
    await page.close();
  });

  it("a wrong passphrase opens nothing", async () => {
    const page = await open();
    await page.getByLabel("Key file", { exact: true }).setInputFiles(keyFile("alice"));
    await page.getByLabel("Passphrase", { exact: true }).fill("not the passphrase");
    await page.getByRole("button", { name: "Unlock" }).click();
    await page.getByText("wrong passphrase").waitFor({ timeout: 30_000 });
    assert.equal(await page.getByRole("button", { name: "Sign out" }).count(), 0);
    await page.close();
  });

  it("a new nurse makes her keys in the browser, the admin approves her request in the browser, and she signs in", async () => {
    const page = await open();
    const form = page.locator("form[aria-labelledby=new-title]");
    await form.getByLabel("I am a").selectOption("nurse");
    await form.getByLabel(/^Organisation/).fill(org);
    await form.getByLabel(/^Name shown to patients/).fill("Nurse Ada");
    await form.getByLabel("New passphrase (8 characters or more)").fill(newPassphrase);
    await form.getByLabel("The passphrase again").fill(newPassphrase);
    await form.getByRole("button", { name: "Make my keys" }).click();
    await page.locator("#recovery-code").waitFor({ timeout: 30_000 });
    recoveryCode = await page.locator("#recovery-code").innerText();
    assert.match(recoveryCode, /^([0-9a-f]{8}-){8}[0-9a-f]{8}$/);
    const save = async (name: RegExp, to: string) => {
      const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("link", { name }).click()]);
      await download.saveAs(to);
      return readFileSync(to, "utf8");
    };
    const adaKey = join(shots, "ada.key");
    const adaRequest = join(shots, "ada-request.json");
    const keyText = await save(/Download your key file/, adaKey);
    const requestText = await save(/Download your enrolment request/, adaRequest);
    assert.ok(!keyText.includes(newPassphrase) && !requestText.includes(newPassphrase));
    assert.equal(JSON.parse(requestText).enroll.display_name, "Nurse Ada");
    await accessible(page, "new member");
    await page.screenshot({ path: join(shots, "new-member-keys.png"), fullPage: true });
    await page.close();

    const admin = await open();
    await signIn(admin, adminAlias);
    await admin.getByLabel("Request file", { exact: true }).setInputFiles(adaRequest);
    await admin.getByRole("button", { name: "Check the request" }).click();
    await admin.getByText("Signed by its own keys").waitFor({ timeout: 30_000 });
    await admin.getByRole("button", { name: "Approve and enrol" }).click();
    await admin.getByText(/^Enrolled member [0-9a-f]{8}… as nurse \(block \d+\)/).waitFor({ timeout: 30_000 });
    await accessible(admin, "admin approval");
    await admin.screenshot({ path: join(shots, "admin-approved.png"), fullPage: true });

    const ada = await open();
    await signIn(ada, "ada", adaKey, newPassphrase);
    await ada.getByRole("heading", { name: "Open a chart" }).waitFor();
    assert.match(await ada.locator("#who").innerText(), /^nurse [0-9a-f]{8}…/);
    // Suspended by the admin, she can do nothing (and is told why); reinstated, the ledger judges
    // her like anyone (no grant here: refused, for that reason).
    const adaId = (JSON.parse(requestText) as { enroll: { member: string } }).enroll.member;
    await admin.getByLabel("Member id").fill(adaId);
    await admin.getByRole("button", { name: "Suspend", exact: true }).click();
    await admin.getByText(/suspended \(block \d+\)/).waitFor({ timeout: 30_000 });
    await ada.getByLabel(/Record id/).fill(record);
    await ada.getByRole("button", { name: "Open this record" }).click();
    await ada.getByText(/suspended/).waitFor({ timeout: 30_000 });
    await admin.getByRole("button", { name: "Reinstate" }).click();
    await admin.getByText(/reinstated \(block \d+\)/).waitFor({ timeout: 30_000 });
    await ada.getByRole("button", { name: "Open this record" }).click();
    await ada.getByText(/^Refused by the ledger: rejected/).waitFor({ timeout: 30_000 });
    assert.doesNotMatch(await ada.locator("#status").innerText(), /suspended/);
    await admin.close();
    await ada.close();
  });

  it("the patient reads her record, decrypted in the browser, at 360 px and by keyboard", async () => {
    const page = await open(360);
    await signIn(page, "alice");
    await page.getByRole("heading", { name: "Your records" }).waitFor();
    assert.equal(await page.locator("#my-id").innerText(), patient, "her id, to hand to a clinician");
    const openButton = page.getByRole("button", { name: /^Open record [0-9a-f]/ });
    assert.equal(await openButton.count(), 1);
    await openButton.focus();
    await page.keyboard.press("Enter");
    const content = page.locator(".content");
    await content.waitFor({ timeout: 30_000 });
    const text = await content.innerText();
    assert.match(text, /Observation/);
    assert.match(text, /6\.1 %/);
    assert.ok(text.includes(marker), "the record's words, decrypted here");
    await page.getByText(/the access is in block \d+/).waitFor();
    await fitsWidth(page, "patient chart at 360 px");
    await accessible(page, "patient chart");
    await page.screenshot({ path: join(shots, "patient-record-360.png"), fullPage: true });
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    assert.equal(await page.getByText(marker).count(), 0, "nothing of the record is left on screen");
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  it("the patient gives a doctor access to her chart, from the staff directory", async () => {
    const page = await open(360);
    await signIn(page, "alice");
    await page.getByRole("button", { name: "Who has access" }).click();
    await page.getByText("Nobody but you can read your whole chart.").waitFor({ timeout: 30_000 });
    const drbob = await page.locator("#grantee option", { hasText: /^Dr Bob \(doctor/ }).getAttribute("value");
    assert.ok(drbob && /^[0-9a-f]{32}$/.test(drbob), "Dr Bob is in the staff directory");
    await page.getByLabel(/Clinician/).selectOption(drbob);
    await page.getByLabel("They may also add records to the chart").check();
    await page.getByRole("button", { name: "Give access to the whole chart" }).click();
    await page.getByText(/can now read the chart \(block \d+\)/).waitFor({ timeout: 30_000 });
    await page.locator("#holders li", { hasText: "Dr Bob" }).waitFor();
    await accessible(page, "who has access");
    await page.screenshot({ path: join(shots, "patient-sharing-360.png"), fullPage: true });
    await page.close();
  });

  it("a doctor with a grant opens the chart; a nurse without one is refused by the ledger", async () => {
    const page = await open();
    await signIn(page, "drbob");
    await page.getByLabel(/Patient id/).fill(patient);
    await page.getByRole("button", { name: "Open chart" }).click();
    await page.getByRole("button", { name: /^Open record [0-9a-f]/ }).click();
    await page.locator(".content").waitFor({ timeout: 30_000 });
    assert.ok((await page.locator(".content").innerText()).includes(marker));
    // The doctor adds an observation: encrypted in the browser, its key dealt to the validators.
    await page.getByLabel("Measurement").selectOption({ label: "Heart rate (/min)" });
    await page.getByLabel("Value").fill("72");
    await page.getByLabel("Note (optional)").fill("resting");
    await page.getByRole("button", { name: "Add to the chart" }).click();
    await page.getByText(/^Added: record [0-9a-f]{8}… \(block \d+\)/).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByRole("button", { name: /^Open record [0-9a-f]/ }).count(), 2, "the chart lists it");
    await accessible(page, "clinician chart");
    await page.screenshot({ path: join(shots, "clinician-record.png"), fullPage: true });
    await page.close();

    const nurse = await open();
    await signIn(nurse, "nina");
    await nurse.getByLabel(/Patient id/).fill(patient);
    await nurse.getByRole("button", { name: "Open chart" }).click();
    await nurse.getByText(/Refused by the ledger/).waitFor({ timeout: 30_000 });
    // The record itself, by id: the ledger decides (and records the refusal in the patient's trail).
    await nurse.getByLabel(/Record id/).fill(record);
    await nurse.getByRole("button", { name: "Open this record" }).click();
    await nurse.getByText(/Refused by the ledger: rejected/).waitFor({ timeout: 30_000 });
    assert.equal(await nurse.getByText(marker).count(), 0);
    await accessible(nurse, "clinician refused");
    await nurse.screenshot({ path: join(shots, "nurse-refused.png"), fullPage: true });
    await nurse.close();
  });

  it("the patient opens what the doctor wrote and shares that record only with a nurse, who reads it", async () => {
    const page = await open(360);
    await signIn(page, "alice");
    await page.getByRole("heading", { name: "Your records" }).waitFor();
    const buttons = page.locator("button[data-record]");
    assert.equal(await buttons.count(), 2);
    const ids = await buttons.evaluateAll((els) => els.map((e) => e.getAttribute("data-record") ?? ""));
    written = ids.find((id) => id !== record) ?? "";
    assert.match(written, /^[0-9a-f]{32}$/);
    await page.locator(`button[data-record="${written}"]`).click();
    const content = page.locator(".content");
    await content.waitFor({ timeout: 30_000 });
    assert.match(await content.innerText(), /Heart rate[\s\S]*72 \/min/);
    await page.getByLabel("With").selectOption(nurseId);
    await page.getByRole("button", { name: "Share this record" }).click();
    await page.getByText(/^Shared with .*\(block \d+\)/).waitFor({ timeout: 30_000 });
    await accessible(page, "patient record shared");
    await page.screenshot({ path: join(shots, "patient-share-record-360.png"), fullPage: true });
    await page.close();

    const nurse = await open();
    await signIn(nurse, "nina");
    await nurse.getByLabel(/Record id/).fill(written);
    await nurse.getByRole("button", { name: "Open this record" }).click();
    await nurse.locator(".content").waitFor({ timeout: 30_000 });
    assert.match(await nurse.locator(".content").innerText(), /72 \/min/);
    // The record shared, not the chart: her earlier one stays closed to the nurse.
    await nurse.getByLabel(/Record id/).fill(record);
    await nurse.getByRole("button", { name: "Open this record" }).click();
    await nurse.getByText(/Refused by the ledger: rejected/).waitFor({ timeout: 30_000 });
    await nurse.close();
  });

  it("the patient takes the doctor's access back, and the doctor is refused", async () => {
    const page = await open();
    await signIn(page, "alice");
    await page.getByRole("button", { name: "Who has access" }).click();
    await page.getByRole("button", { name: /^Take access from Dr Bob/ }).click();
    await page.getByText(/Access taken from Dr Bob/).waitFor({ timeout: 30_000 });
    await page.getByText("Nobody but you can read your whole chart.").waitFor();
    await page.close();
    const doctor = await open();
    await signIn(doctor, "drbob");
    await doctor.getByLabel(/Record id/).fill(record);
    await doctor.getByRole("button", { name: "Open this record" }).click();
    await doctor.getByText(/Refused by the ledger: rejected/).waitFor({ timeout: 30_000 });
    assert.equal(await doctor.getByText(marker).count(), 0);
    await doctor.close();
  });

  it("a second doctor without a grant is refused, breaks the glass, reads under it, and the auditor reads the note", async () => {
    const page = await open();
    await signIn(page, "drcarol");
    await page.getByLabel(/Record id/).fill(record);
    await page.getByRole("button", { name: "Open this record" }).click();
    await page.getByText(/^Refused by the ledger: rejected/).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByText(marker).count(), 0);
    await page.getByLabel("Patient in need of emergency care (their id)").fill(patient);
    await page.getByLabel("Reason").selectOption("unconscious");
    await page.getByLabel("For how many minutes").fill("30");
    await page.getByLabel(/^Note for the patient and the auditors/).fill("found unresponsive at home");
    await page.getByRole("button", { name: "Open emergency access" }).click();
    await page.getByRole("timer").getByText(/^Emergency access to [0-9a-f]{8}… open until/).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByLabel("Purpose of use").first().inputValue(), "ETREAT", "the purpose follows");
    await page.getByLabel(/Record id/).fill(record);
    await page.getByRole("button", { name: "Open this record" }).click();
    await page.locator(".content").waitFor({ timeout: 30_000 });
    assert.ok((await page.locator(".content").innerText()).includes(marker), "read through the validators' emergency shares");
    await accessible(page, "break-glass");
    await page.screenshot({ path: join(shots, "break-glass.png"), fullPage: true });
    await page.close();

    const auditor = await open();
    await signIn(auditor, "audrey");
    await auditor.getByRole("heading", { name: "Flagged for review" }).waitFor({ timeout: 30_000 });
    const row = auditor.locator("#flagged tbody tr", { hasText: "Emergency access (break-glass) opened" });
    assert.equal(await row.count(), 1);
    await row.getByRole("button", { name: /^Read the note/ }).click();
    await auditor.getByText("found unresponsive at home").waitFor({ timeout: 30_000 });
    assert.ok((await auditor.locator("#flagged").innerText()).includes("Read record"), "the emergency read is flagged too");
    await accessible(auditor, "auditor queue");
    await auditor.screenshot({ path: join(shots, "auditor-flagged.png"), fullPage: true });
    await auditor.close();
  });

  it("the patient's access timeline shows who read and who was refused", async () => {
    const page = await open(360);
    await signIn(page, "alice");
    await page.getByRole("button", { name: "Access timeline" }).click();
    const rows = page.locator("#timeline tbody tr");
    await rows.first().waitFor({ timeout: 30_000 });
    const text = await page.locator("#timeline").innerText();
    assert.match(text, /Dr Bob \(doctor, [a-z0-9]+\)\s+Read record/, "drbob's read, named from the provider directory");
    assert.match(text, /you\s+Read record/, "her own read");
    assert.match(text, /Access to the whole chart given to Dr Bob/);
    assert.match(text, /Access to the whole chart taken from Dr Bob/);
    assert.match(text, /Refused/, "the refused reads");
    const plotLabel = await page.locator("svg.plot").getAttribute("aria-label");
    assert.match(text, /Wrote record/, "the doctor's observation");
    assert.match(text, /Emergency access \(break-glass\) opened\s+Allowed \(flagged\)/, "the break-glass, flagged");
    assert.match(text, /Access to one record given to nurse/, "the record shared with the nurse");
    assert.match(plotLabel ?? "", /Reads per day .*: \d+ in all, 6 refused/, text);
    // A receipt verified in the page: the doctor's read, in a block a quorum certified.
    const read = rows.filter({ hasText: /Dr Bob .*Read record/ }).last();
    await read.getByRole("button", { name: /^Verify the receipt/ }).click();
    await read.getByText(/^Verified: block \d+, certified at \d+$/).waitFor({ timeout: 30_000 });
    await page.getByLabel("Show").selectOption("denied");
    assert.equal(await rows.count(), 6, "only the refusals: the new nurse's two (suspended, then without a grant), the nurse's two, the doctor's after the revocation, the second doctor's");
    assert.match(await rows.nth(5).innerText(), /Nurse Ada .*Read record.*Refused/s, "suspended: refused by the ledger, and on her record");
    assert.match(await rows.nth(4).innerText(), /Nurse Ada .*Read record.*Refused/s);
    assert.match(await rows.nth(3).innerText(), /nurse .*Read record.*Refused/s);
    assert.match(await rows.nth(2).innerText(), /nurse .*Read record.*Refused/s);
    assert.match(await rows.nth(1).innerText(), /Dr Bob .*Read record.*Refused/s);
    assert.match(await rows.nth(0).innerText(), /doctor [0-9a-f]{8}… .*Read record.*Refused/s, "the second doctor, before breaking the glass");
    await fitsWidth(page, "access timeline at 360 px");
    await accessible(page, "access timeline");
    await page.screenshot({ path: join(shots, "patient-timeline-360.png"), fullPage: true });
    await page.close();
  });

  it("the patient downloads her whole chart as FHIR NDJSON, then erases a record", async () => {
    const page = await open();
    await signIn(page, "alice");
    await page.getByRole("button", { name: /^Download the whole chart/ }).click();
    const link = page.getByRole("link", { name: /^Save the chart \(2 resources\)/ });
    await link.waitFor({ timeout: 60_000 });
    const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
    const saved = join(shots, "my-chart.ndjson");
    await download.saveAs(saved);
    const resources = readFileSync(saved, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, any>);
    assert.equal(resources.length, 2);
    assert.ok(resources.some((r) => String(r.code?.text).includes(marker)), "her CLI-written record");
    assert.ok(resources.some((r) => r.valueQuantity?.value === 72), "the doctor's observation");
    await page.locator(`button[data-record="${written}"]`).click();
    await page.locator(".content").waitFor({ timeout: 30_000 });
    await page.getByRole("button", { name: "Erase this record…" }).click();
    await accessible(page, "erase confirmation");
    await page.getByRole("button", { name: "Yes, erase it for good" }).click();
    await page.getByText(/erased \(block \d+\)/).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator("button[data-record]").count(), 1, "the erased record is gone from her chart");
    await page.close();
  });

  it("a key file kept on this device signs in with the passphrase alone, and is forgotten on request", async () => {
    const page = await open(360);
    await page.getByLabel("Key file", { exact: true }).setInputFiles(keyFile("alice"));
    await page.getByLabel("Passphrase", { exact: true }).fill(passphrase);
    await page.getByLabel(/^Keep my key file on this device/).check();
    await page.getByRole("button", { name: "Unlock" }).click();
    await page.getByRole("heading", { name: "Your records" }).waitFor({ timeout: 30_000 });
    // What IndexedDB holds: the key file as sealed, nothing else (no passphrase, no open key).
    const kept = (await keptOnDevice(page)) as Record<string, unknown>[];
    assert.equal(kept.length, 1);
    assert.deepEqual(Object.keys(kept[0]!).sort(), ["member", "org", "role", "sealed", "suite"]);
    assert.equal(kept[0]!.sealed, JSON.parse(readFileSync(keyFile("alice"), "utf8")).sealed);
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.reload();
    await page.getByLabel(/^Passphrase for patient /).fill(passphrase);
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    await page.getByRole("heading", { name: "Your records" }).waitFor({ timeout: 30_000 });
    await page.getByRole("button", { name: "Sign out" }).click();
    await accessible(page, "sign-in with kept keys");
    await page.getByRole("button", { name: "Forget on this device" }).click();
    await page.getByText("That key file is no longer kept on this device.").waitFor();
    await page.reload();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    assert.equal(await page.getByLabel(/^Passphrase for patient /).count(), 0, "forgotten");
    await page.close();
  });

  it("a passkey on this device (WebAuthn PRF) unlocks the kept keys without the passphrase", async () => {
    // Passkeys need a domain: the portal at http://localhost:PORT (a secure context).
    const page = await browser.newPage({ viewport: { width: 1024, height: 800 } });
    recordRequests(page, sent);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("WebAuthn.enable");
    await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
        hasPrf: true,
      },
    });
    await page.goto(url.replace("127.0.0.1", "localhost"));
    await page.getByLabel("Key file", { exact: true }).setInputFiles(keyFile("alice"));
    await page.getByLabel("Passphrase", { exact: true }).fill(passphrase);
    await page.getByLabel(/^Keep my key file on this device/).check();
    await page.getByLabel("…and unlock it with a passkey on this device").check();
    await page.getByRole("button", { name: "Unlock" }).click();
    await page.getByRole("heading", { name: "Your records" }).waitFor({ timeout: 30_000 });
    const kept = await keptOnDevice(page);
    assert.deepEqual(Object.keys(kept[0]!).sort(), ["member", "org", "passkey", "role", "sealed", "suite"]);
    assert.match(kept[0]!.passkey.wrapped, /^[0-9a-f]{24,}$/, "the secrets wrapped under the passkey's key, nothing in the clear");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.reload();
    await page.getByRole("button", { name: "Sign in with my passkey" }).click();
    await page.getByRole("heading", { name: "Your records" }).waitFor({ timeout: 30_000 });
    assert.equal(await page.locator("button[data-record]").count(), 1, "her chart, read with the keys the passkey opened");
    await page.close();
  });

  it("after 15 minutes without activity the keys are wiped and the member is signed out", async () => {
    const page = await open(1024, true);
    await signIn(page, "drbob");
    await page.getByRole("heading", { name: "Open a chart" }).waitFor();
    await page.clock.fastForward("14:00");
    assert.equal(await page.getByRole("button", { name: "Sign out" }).count(), 1, "still signed in after 14 minutes");
    await page.clock.fastForward("01:30");
    await page.getByText(/^Signed out after 15 minutes without activity/).waitFor({ timeout: 10_000 });
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Sign out" }).count(), 0);
    await page.close();
  });

  it("no request carried plaintext, a key, the passphrase or an alias", () => {
    assert.ok(sent.some((r) => r.url.includes("/api/") && r.headers.signature), "signed requests went out");
    const aliases = ["alice", "drbob", "nina"];
    const secrets = [marker, passphrase, newPassphrase, recoveryCode, recoveryCode.replaceAll("-", "").slice(0, 64), ...aliases.map((a) => JSON.parse(readFileSync(keyFile(a), "utf8")).sealed as string)];
    assert.ok(recoveryCode.length > 0, "the enrolment test ran first");
    for (const r of sent) {
      const seen = `${r.url}\n${JSON.stringify(r.headers)}\n${r.body}`;
      for (const secret of secrets) {
        assert.ok(!seen.includes(secret), `a request to ${r.url} carries ${secret === passphrase ? "the passphrase" : secret.slice(0, 12)}`);
      }
      // Aliases are local names: never in a path, a query or a body (signature headers are
      // base64 and could spell a short word by chance, so they are left out of this scan).
      for (const alias of aliases) assert.ok(!`${r.url}\n${r.body}`.includes(alias), `a request to ${r.url} names ${alias}`);
    }
    const origins = [new URL(url).origin, new URL(url.replace("127.0.0.1", "localhost")).origin];
    assert.ok(sent.every((r) => origins.includes(new URL(r.url).origin)), "every request went to the portal's origin");
    assert.ok(record.length === 32);
  });
});
