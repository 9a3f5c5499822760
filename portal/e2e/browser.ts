// What the browser tests share: Debian's Chromium launched through playwright-core, a page that
// records every request it sends and every error it logs, signing in with a key file, and the
// checks every screen gets (axe-core; no sideways scrolling at its width).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { type Browser, type Locator, type Page, type Request, chromium } from "playwright-core";

export const env = (name: string): string => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set (this test is started by crates/cli/tests/portal.rs)`);
  return value;
};

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** A request as a server could read it. */
export interface Sent {
  url: string;
  headers: Record<string, string>;
  body: string;
}

/** Records every request `page` sends into `sent`. */
export function recordRequests(page: Page, sent: Sent[]): void {
  page.on("request", (r: Request) => {
    sent.push({ url: r.url(), headers: r.headers(), body: r.postDataBuffer()?.toString("latin1") ?? "" });
  });
}

export type WatchedPage = Page & { errors?: string[] };

/** A new page at `url` (`width` px wide), its requests recorded and its errors collected in `errors`. */
export async function openPage(browser: Browser, url: string, sent: Sent[], width = 1024, clock = false): Promise<WatchedPage> {
  const page: WatchedPage = await browser.newPage({ viewport: { width, height: 800 } });
  if (clock) await page.clock.install();
  recordRequests(page, sent);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${m.text()} ${m.location().url}`);
  });
  page.errors = errors;
  const response = await page.goto(url);
  assert.equal(response?.status(), 200);
  return page;
}

/** Signs in with the key file `file` and its passphrase. */
export async function signIn(page: Page, file: string, secret: string): Promise<void> {
  await page.getByLabel("Key file", { exact: true }).setInputFiles(file);
  await page.getByLabel("Passphrase", { exact: true }).fill(secret);
  await page.getByRole("button", { name: "Unlock" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor({ timeout: 30_000 });
}

/** Clicks a download link and saves the file at `to`; returns its bytes. */
export async function saveDownload(page: Page, link: Locator, to: string): Promise<Buffer> {
  const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
  await download.saveAs(to);
  return readFileSync(to);
}

/** No sideways scrolling of the page at its width (the elements sticking out named, when some do). */
export async function fitsWidth(page: Page, screen: string): Promise<void> {
  const overflow = Number(await page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"));
  const wide = await page.evaluate(`[...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className && typeof e.className === "string" ? "." + e.className : ""))
    .slice(0, 8)`);
  assert.ok(overflow <= 0, `${screen}: sideways scrolling of ${overflow} px (${JSON.stringify(wide)})`);
}

/**
 * Every visible, enabled control on the page is reached by the Tab key alone (a screen works by
 * keyboard): the controls are counted, then Tab is pressed from the top until each was focused.
 */
export async function keyboardReachable(page: Page, screen: string): Promise<void> {
  const count = Number(
    await page.evaluate(`(() => {
      const visible = (e) => e.checkVisibility({ contentVisibilityAuto: true, opacityProperty: true, visibilityProperty: true });
      const all = [...document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]:not([tabindex='-1'])")]
        .filter((e) => !e.disabled && visible(e));
      document.querySelectorAll("[data-kb]").forEach((e) => e.removeAttribute("data-kb"));
      all.forEach((e, i) => e.setAttribute("data-kb", String(i)));
      if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
      return all.length;
    })()`),
  );
  const seen = new Set<string>();
  // From wherever the focus navigation starts (after the last control used): once round, and then some.
  for (let i = 0; i < 2 * count + 5 && seen.size < count; i++) {
    await page.keyboard.press("Tab");
    const k = (await page.evaluate(`document.activeElement?.getAttribute("data-kb") ?? ""`)) as string;
    if (k) seen.add(k);
  }
  const missed = (await page.evaluate(`[...document.querySelectorAll("[data-kb]")]
    .filter((e) => !${JSON.stringify([...seen])}.includes(e.getAttribute("data-kb")))
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + " " + (e.getAttribute("aria-label") ?? e.textContent ?? "").trim().slice(0, 40))`)) as string[];
  assert.deepEqual(missed, [], `${screen}: controls the keyboard never reaches`);
}

/**
 * axe-core on the page as it is: no serious or critical violation; every control reached by
 * keyboard; nothing scrolling sideways at 360 px.
 */
export async function accessible(page: Page, screen: string): Promise<void> {
  const source = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
  // Evaluated by the driver (the page's CSP forbids inline script, as it should).
  await page.evaluate(source);
  const result = (await page.evaluate(`axe.run(document, { resultTypes: ["violations"] })`)) as {
    violations: { id: string; impact: string; nodes: unknown[] }[];
  };
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id} (${v.impact}, ${v.nodes.length})`), [], `${screen}: accessibility`);
  await keyboardReachable(page, screen);
  // And at a phone's width: nothing scrolls sideways.
  const size = page.viewportSize();
  if (size && size.width !== 360) {
    await page.setViewportSize({ width: 360, height: size.height });
    await fitsWidth(page, `${screen} at 360 px`);
    await page.setViewportSize(size);
  }
}

/** Every screen's checks at once: accessible, no sideways scrolling, a screenshot saved. */
export async function checkScreen(page: Page, screen: string, shot: string): Promise<void> {
  await accessible(page, screen);
  await fitsWidth(page, screen);
  await page.screenshot({ path: shot, fullPage: true });
}
