// Who may read a patient's chart, and the patient's consent: chart-wide access given to a
// clinician from the staff directory or to a care team by its id (optionally until a date, and
// for a doctor with the right to add records) and taken back; delegates (a guardian, a proxy)
// appointed and dismissed by the patient. The keys move here: giving access wraps the chart key
// for the clinician's enrolled key (or the team's); taking it back moves the chart to a new key
// the others receive and the clinician never does. A delegate sees this screen for the charts
// they look after, and may do all of it but appoint or dismiss delegates.

import {
  type Client,
  type GrantEntry,
  type MemberEntry,
  appointDelegate,
  dismissDelegate,
  grantChart,
  listGrants,
  revokeChart,
  revokeRecord,
} from "@medledger/protocol";

import { type Ctx, act, idOf } from "./context.js";
import { h, replace, shortId, when } from "./dom.js";

const ROLES = ["doctor", "nurse", "emergency"] as const;

function label(m: MemberEntry): string {
  return `${m.display_name ?? `${m.role} ${shortId(m.id)}`} (${m.role}, ${m.org})`;
}

export { label as staffLabel };

/** Every clinician of the staff directory, for choosing whom to give access. */
export async function directory(client: Client): Promise<MemberEntry[]> {
  return (await Promise.all(ROLES.map((r) => client.staff(r)))).flat();
}

/** A list of ids with one button each, or a sentence when it is empty. */
function listOf(id: string, ids: string[], empty: string, item: (id: string) => (HTMLElement | string)[]): HTMLElement {
  return ids.length === 0 ? h("p", { id }, empty) : h("ul", { id }, ...ids.map((m) => h("li", {}, ...item(m))));
}

/** Shows who holds access to `patient`'s chart (the member's own, or one they look after), and the forms to change it. */
export async function showSharing(ctx: Ctx, target: HTMLElement, patient: string): Promise<void> {
  const { client, me } = ctx;
  const [chart, staff, grants] = await Promise.all([client.chart(me, patient), directory(client), listGrants(client, me, patient)]);
  const now = Date.now();
  /** Until when a grant runs, in words (or that it ended). */
  const term = (g: GrantEntry | undefined) =>
    !g || g.expires_at === null ? "" : g.expires_at <= now ? ` (ended ${when(g.expires_at)})` : ` (until ${when(g.expires_at)})`;
  const chartWide = new Map(grants.filter((g) => g.scope === "all").map((g) => [g.grantee, g]));
  const perRecord = grants.filter((g) => typeof g.scope === "object");
  const byId = new Map(staff.map((m) => [m.id, m]));
  const refresh = () => showSharing(ctx, target, patient);
  const self = patient === me.member;
  const nameOf = (id: string) => (byId.get(id) ? label(byId.get(id)!) : `member ${shortId(id)}`);

  const takeBack = (id: string, name: string) => {
    const revoke = h("button", { type: "button", "aria-label": `Take access from ${name}` }, "Take access back");
    revoke.addEventListener("click", () =>
      act(ctx, revoke, "Taking the access back on the ledger…", async () => {
        const done = await revokeChart(client, me, patient, id);
        await refresh();
        return `Access taken from ${name} (block ${done.height}).`;
      }),
    );
    return revoke;
  };
  const holders = chart.holders.filter((m) => m !== patient);
  const members = listOf("holders", holders, "Nobody but you can read your whole chart.", (id) => [
    h("span", { title: id }, `${nameOf(id)}${chartWide.get(id)?.write ? ", may add records" : ""}${term(chartWide.get(id))}`),
    " ",
    takeBack(id, nameOf(id)),
  ]);
  const teams = listOf("teams", chart.teams ?? [], "No care team holds access.", (id) => [
    h("span", { title: id }, `Care team ${shortId(id)}${term(chartWide.get(id))}`),
    " ",
    takeBack(id, `care team ${shortId(id)}`),
  ]);
  const records =
    perRecord.length === 0
      ? h("p", { id: "record-grants" }, "No record is shared on its own.")
      : h(
          "ul",
          { id: "record-grants" },
          ...perRecord.map((g) => {
            const record = (g.scope as { record: string }).record;
            const who = chart.teams?.includes(g.grantee) ? `care team ${shortId(g.grantee)}` : nameOf(g.grantee);
            const revoke = h("button", { type: "button", "aria-label": `Take record ${shortId(record)} back from ${who}` }, "Take back");
            revoke.addEventListener("click", () =>
              act(ctx, revoke, "Taking the record back on the ledger…", async () => {
                const done = await revokeRecord(client, me, patient, g.grantee, record);
                await refresh();
                return `Record ${shortId(record)} taken back from ${who} (block ${done.height}).`;
              }),
            );
            return h("li", {}, h("span", { title: `${record} → ${g.grantee}` }, `Record ${shortId(record)} with ${who}${term(g)}`), " ", revoke);
          }),
        );
  const delegates = listOf("delegates", chart.delegates ?? [], self ? "You have no delegate." : "No other delegate.", (id) => {
    const name = `patient ${shortId(id)}`;
    if (!self) return [h("span", { title: id }, id === me.member ? "you" : name)];
    const dismiss = h("button", { type: "button", "aria-label": `Dismiss delegate ${name}` }, "Dismiss");
    dismiss.addEventListener("click", () =>
      act(ctx, dismiss, "Moving your chart to a new key your delegate will not have…", async () => {
        const done = await dismissDelegate(client, me, id);
        await refresh();
        return `Delegate ${name} dismissed (block ${done.height}).`;
      }),
    );
    return [h("span", { title: id }, name), " ", dismiss];
  });

  const candidates = staff.filter((m) => !holders.includes(m.id));
  const select = h(
    "select",
    { id: "grantee" },
    h("option", { value: "" }, "Choose a clinician"),
    ...candidates.map((m) => h("option", { value: m.id }, label(m))),
  );
  const team = h("input", { id: "grant-team", pattern: "[0-9a-f]{32}", autocomplete: "off", spellcheck: "false" });
  const until = h("input", { id: "until", type: "date" });
  const write = h("input", { id: "may-write", type: "checkbox" });
  const give = h("button", { type: "submit" }, "Give access to the whole chart");
  const form = h(
    "form",
    { "aria-labelledby": "give-title" },
    h("h3", { id: "give-title" }, "Give access"),
    h("label", { for: "grantee" }, "Clinician (from the staff directory)"),
    select,
    h("label", { for: "grant-team" }, "…or a care team (its id, from your doctor)"),
    team,
    h("label", { for: "until" }, "Until (optional)"),
    until,
    h("div", { class: "check" }, write, h("label", { for: "may-write" }, "They may also add records to the chart")),
    give,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const grantee = idOf(team.value) ?? idOf(select.value);
    if (!grantee) {
      ctx.say("Choose a clinician, or give a care team's id.", "error");
      return;
    }
    const expiresAt = until.value ? Date.parse(`${until.value}T23:59:59`) : null;
    if (expiresAt !== null && (Number.isNaN(expiresAt) || expiresAt <= Date.now())) {
      ctx.say("The end date is in the past.", "error");
      return;
    }
    const name = idOf(team.value) ? `Care team ${shortId(grantee)}` : nameOf(grantee);
    act(ctx, give, "Wrapping the chart key for them, on this device…", async () => {
      const done = await grantChart(client, me, patient, grantee, { expiresAt, write: write.checked });
      await refresh();
      return `${name} can now read the chart (block ${done.height}).`;
    });
  });

  replace(
    target,
    h("h2", {}, self ? "Who has access" : `Who has access to patient ${shortId(patient)}'s chart`),
    h("p", {}, "Besides the patient, these can read the whole chart. Each read is in the access timeline."),
    h("h3", {}, "Clinicians"),
    members,
    h("h3", {}, "Care teams"),
    teams,
    h("h3", {}, "Records shared on their own"),
    records,
    form,
    h("h3", {}, "Delegates"),
    h("p", {}, "A delegate (a guardian, a proxy: another patient) acts for the patient: reads, grants, revokes and sees the access timeline."),
    delegates,
    self ? delegateForm(ctx, refresh) : null,
  );
}

/** The patient appoints a delegate by their patient id. */
function delegateForm(ctx: Ctx, refresh: () => Promise<void>): HTMLFormElement {
  const id = h("input", { id: "delegate-id", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const go = h("button", { type: "submit" }, "Appoint as my delegate");
  const form = h(
    "form",
    { "aria-labelledby": "delegate-title" },
    h("h3", { id: "delegate-title" }, "Appoint a delegate"),
    h("label", { for: "delegate-id" }, "Their patient id (32 hexadecimal characters)"),
    id,
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const delegate = idOf(id.value);
    if (!delegate) {
      ctx.say("A patient id is 32 hexadecimal characters.", "error");
      return;
    }
    act(ctx, go, "Wrapping your chart key for your delegate, on this device…", async () => {
      const done = await appointDelegate(ctx.client, ctx.me, delegate);
      await refresh();
      return `Patient ${shortId(delegate)} is now your delegate (block ${done.height}).`;
    });
  });
  return form;
}
