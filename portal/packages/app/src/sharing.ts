// Who may read the patient's chart, and the patient's consent: chart-wide access given to a
// clinician from the staff directory (optionally until a date) and taken back. The keys move
// here: giving access wraps the chart key for the clinician's enrolled key; taking it back moves
// the chart to a new key the others receive and the clinician never does.

import type { Client, Identity, MemberEntry } from "@medledger/protocol";

import { h, replace, shortId } from "./dom.js";

const ROLES = ["doctor", "nurse", "emergency"] as const;

function label(m: MemberEntry): string {
  return `${m.display_name ?? `${m.role} ${shortId(m.id)}`} (${m.role}, ${m.org})`;
}

/** Shows who holds chart-wide access, with a revoke button each, and the form to give access. */
/** Every clinician of the staff directory, for choosing whom to give access. */
export async function directory(client: Client): Promise<MemberEntry[]> {
  return (await Promise.all(ROLES.map((r) => client.staff(r)))).flat();
}

export { label as staffLabel };

export async function showSharing(
  client: Client,
  me: Identity,
  target: HTMLElement,
  say: (text: string, kind?: "info" | "error") => void,
  errorText: (e: unknown) => string,
): Promise<void> {
  const [chart, staff] = await Promise.all([client.chart(me, me.member), directory(client)]);
  const byId = new Map(staff.map((m) => [m.id, m]));
  const refresh = () => showSharing(client, me, target, say, errorText);

  const holders = chart.holders.filter((m) => m !== me.member);
  const list =
    holders.length === 0
      ? h("p", { id: "holders" }, "Nobody but you can read your whole chart.")
      : h(
          "ul",
          { id: "holders" },
          ...holders.map((id) => {
            const who = byId.get(id);
            const name = who ? label(who) : `member ${shortId(id)}`;
            const revoke = h("button", { type: "button", "aria-label": `Take access from ${name}` }, "Take access back");
            revoke.addEventListener("click", () => {
              revoke.disabled = true;
              say("Moving your chart to a new key they will not have…");
              client
                .revokeAll(me, id)
                .then((done) => {
                  say(`Access taken from ${name} (block ${done.height}).`);
                  return refresh();
                })
                .catch((e: unknown) => {
                  revoke.disabled = false;
                  say(errorText(e), "error");
                });
            });
            return h("li", {}, h("span", { title: id }, name), " ", revoke);
          }),
        );

  const candidates = staff.filter((m) => !holders.includes(m.id));
  const select = h(
    "select",
    { id: "grantee", required: true },
    h("option", { value: "" }, "Choose a clinician"),
    ...candidates.map((m) => h("option", { value: m.id }, label(m))),
  );
  const until = h("input", { id: "until", type: "date" });
  const write = h("input", { id: "may-write", type: "checkbox" });
  const give = h("button", { type: "submit" }, "Give access to my whole chart");
  const form = h(
    "form",
    { "aria-labelledby": "give-title" },
    h("h3", { id: "give-title" }, "Give access"),
    h("label", { for: "grantee" }, "Clinician (from the staff directory)"),
    select,
    h("label", { for: "until" }, "Until (optional)"),
    until,
    h("div", { class: "check" }, write, h("label", { for: "may-write" }, "They may also add records to my chart")),
    give,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const grantee = select.value;
    if (!/^[0-9a-f]{32}$/.test(grantee)) {
      say("Choose a clinician.", "error");
      return;
    }
    const expires = until.value ? Date.parse(`${until.value}T23:59:59`) : null;
    if (expires !== null && (Number.isNaN(expires) || expires <= Date.now())) {
      say("The end date is in the past.", "error");
      return;
    }
    give.disabled = true;
    const who = byId.get(grantee);
    say("Wrapping your chart key for them, on this device…");
    client
      .grantAll(me, grantee, expires, write.checked)
      .then((done) => {
        say(`${who ? label(who) : "They"} can now read your chart (block ${done.height}).`);
        return refresh();
      })
      .catch((e: unknown) => {
        give.disabled = false;
        say(errorText(e), "error");
      });
  });
  replace(
    target,
    h("h2", {}, "Who has access"),
    h("p", {}, "Besides you, these clinicians can read your whole chart. Each read is in your access timeline."),
    list,
    form,
  );
}
