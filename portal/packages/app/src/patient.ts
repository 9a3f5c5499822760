// A patient's screens: their records, their access timeline, who has access (and their
// delegates), and the charts they look after as someone's delegate, where they do the same for
// that patient.

import { showChart } from "./chart.js";
import { type Ctx } from "./context.js";
import { h, replace, shortId } from "./dom.js";
import { showSharing } from "./sharing.js";
import { showTimeline } from "./timeline.js";

/** A row of buttons of which one is pressed (the screen shown). */
function tabs(label: string, items: [string, () => Promise<void>][], firstShown = true): HTMLElement {
  const buttons = items.map(([text]) => h("button", { type: "button", "aria-pressed": "false" }, text));
  buttons.forEach((b, i) =>
    b.addEventListener("click", () => {
      for (const other of buttons) other.setAttribute("aria-pressed", String(other === b));
      void items[i]![1]();
    }),
  );
  if (firstShown) buttons[0]?.setAttribute("aria-pressed", "true");
  return h("nav", { "aria-label": label }, ...buttons.flatMap((b) => [b, " "]));
}

/** The views of one chart: `patient`'s records, access timeline and who has access. */
function chartViews(ctx: Ctx, section: HTMLElement, patient: string, title: string): [string, () => Promise<void>][] {
  const run = async (doing: string, work: () => Promise<void>) => {
    ctx.say(doing);
    try {
      await work();
      ctx.say("");
    } catch (e) {
      ctx.say(ctx.errorText(e), "error");
    }
  };
  const self = patient === ctx.me.member;
  return [
    [self ? "Your records" : "Records", () => showChart(ctx, section, patient, title, true)],
    ["Access timeline", () => run("Reading the access trail…", () => showTimeline(ctx.client, ctx.me, patient, section))],
    ["Who has access", () => run("Reading who has access…", () => showSharing(ctx, section, patient))],
  ];
}

export function showPatientHome(ctx: Ctx, main: HTMLElement): void {
  const section = h("section", { id: "chart", "aria-live": "polite" });
  const others = h("section", { id: "looked-after", "aria-labelledby": "looked-after-title", hidden: true });
  const views = chartViews(ctx, section, ctx.me.member, "Your records");
  replace(main, tabs("Your chart", views), section, others);
  void views[0]![1]();
  void showLookedAfter(ctx, others);
}

/** The charts this patient looks after as a delegate (a guardian, a proxy), each with its views. */
async function showLookedAfter(ctx: Ctx, target: HTMLElement): Promise<void> {
  let charts: string[];
  try {
    const page = await ctx.client.get<{ charts: string[] }>(`/v1/members/${ctx.me.member}/charts?limit=100`, ctx.me);
    charts = page.charts.filter((p) => p !== ctx.me.member);
    // Only those whose chart names this patient as a delegate (not merely a past grant).
    const entries = await Promise.all(charts.map((p) => ctx.client.chart(ctx.me, p).catch(() => null)));
    charts = charts.filter((_, i) => entries[i]?.delegates?.includes(ctx.me.member));
  } catch (e) {
    ctx.say(ctx.errorText(e), "error");
    return;
  } finally {
    // Looked for (tests, and assistive tools, can tell "none" from "not yet").
    target.dataset.checked = "true";
  }
  if (charts.length === 0) return;
  target.hidden = false;
  const section = h("section", { id: "delegate-chart", "aria-live": "polite" });
  replace(
    target,
    h("h2", { id: "looked-after-title" }, "Charts you look after"),
    h("p", {}, "You are the delegate of these patients: what you do here is in their access timeline, under your name and theirs."),
    ...charts.map((p) => h("div", {}, h("h3", {}, `Patient ${shortId(p)}`), tabs(`Patient ${shortId(p)}'s chart`, chartViews(ctx, section, p, `Records of patient ${shortId(p)}`), false))),
    section,
  );
}
