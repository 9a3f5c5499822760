// Care teams, as a clinician manages them: the teams they belong to (members named from the staff
// directory), a new team of colleagues (doctors create teams), a colleague added, a member
// removed (the team's key moves on without them). The team's id is what a patient gives access
// to. Keys are wrapped here (see @medledger/protocol's teams).

import { type MemberEntry, addToTeam, createTeam, myTeams, removeFromTeam } from "@medledger/protocol";

import { type Ctx, act } from "./context.js";
import { h, replace, shortId, when } from "./dom.js";
import { directory, staffLabel } from "./sharing.js";

export async function showTeams(ctx: Ctx, target: HTMLElement): Promise<void> {
  const [teams, staff] = await Promise.all([myTeams(ctx.client, ctx.me), directory(ctx.client)]);
  const byId = new Map<string, MemberEntry>(staff.map((m) => [m.id, m]));
  const nameOf = (id: string) => (id === ctx.me.member ? "you" : byId.get(id) ? staffLabel(byId.get(id)!) : `member ${shortId(id)}`);
  const refresh = () => showTeams(ctx, target);
  const colleagues = staff.filter((m) => m.id !== ctx.me.member && m.org === ctx.me.org);

  const cards = teams.map((team, i) => {
    const members = h(
      "ul",
      { class: "members" },
      ...team.members.map((m) => {
        const leaving = m === ctx.me.member;
        const remove = h("button", { type: "button", class: "secondary", "aria-label": leaving ? `Leave team ${shortId(team.team)}` : `Remove ${nameOf(m)} from team ${shortId(team.team)}` }, leaving ? "Leave" : "Remove");
        remove.addEventListener("click", () =>
          act(ctx, remove, "Moving the team to a new key without them…", async () => {
            const done = await removeFromTeam(ctx.client, ctx.me, team.team, m);
            await refresh();
            return `${leaving ? "You left" : `${nameOf(m)} removed from`} team ${shortId(team.team)} (block ${done.height}).`;
          }),
        );
        return h("li", {}, h("span", { title: m }, nameOf(m)), " ", remove);
      }),
    );
    const pick = h(
      "select",
      { id: `team-add-${i}` },
      h("option", { value: "" }, "Choose a colleague"),
      ...colleagues.filter((m) => !team.members.includes(m.id)).map((m) => h("option", { value: m.id }, staffLabel(m))),
    );
    const add = h("button", { type: "submit" }, "Add to the team");
    const form = h("form", { class: "add" }, h("label", { for: `team-add-${i}` }, "Add a member"), pick, add);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!pick.value) {
        ctx.say("Choose a colleague.", "error");
        return;
      }
      const who = nameOf(pick.value);
      act(ctx, add, "Wrapping the team's key for them, on this device…", async () => {
        const done = await addToTeam(ctx.client, ctx.me, team.team, pick.value);
        await refresh();
        return `${who} added to team ${shortId(team.team)} (block ${done.height}).`;
      });
    });
    return h(
      "article",
      { class: "team", "aria-labelledby": `team-${i}` },
      h("h3", { id: `team-${i}` }, `Care team ${shortId(team.team)}`),
      h("p", {}, "Its id, for a patient to give it access: ", h("code", { class: "team-id" }, team.team)),
      h("p", {}, `Created ${when(team.created_at)} by ${nameOf(team.created_by)}; key epoch ${team.epoch}.`),
      members,
      form,
    );
  });

  replace(
    target,
    h("h2", {}, "Your care teams"),
    teams.length === 0 ? h("p", {}, "You are in no care team.") : null,
    ...cards,
    ctx.me.role === "doctor" ? newTeamForm(ctx, colleagues, refresh) : h("p", {}, "Doctors create care teams."),
  );
}

/** A doctor creates a team of themself and the colleagues ticked. */
function newTeamForm(ctx: Ctx, colleagues: MemberEntry[], refresh: () => Promise<void>): HTMLElement {
  const boxes = colleagues.map((m, i) => {
    const box = h("input", { id: `new-team-${i}`, type: "checkbox", value: m.id });
    return { box, row: h("div", { class: "check" }, box, h("label", { for: `new-team-${i}` }, staffLabel(m))) };
  });
  const go = h("button", { type: "submit" }, "Create the team");
  const form = h(
    "form",
    { "aria-labelledby": "new-team-title" },
    h("h3", { id: "new-team-title" }, "A new care team"),
    h("fieldset", {}, h("legend", {}, "Members besides you"), ...boxes.map((b) => b.row)),
    go,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const members = boxes.filter((b) => b.box.checked).map((b) => b.box.value);
    act(ctx, go, "Making the team's key and wrapping it for each member, on this device…", async () => {
      const { team, committed } = await createTeam(ctx.client, ctx.me, members);
      await refresh();
      return `Care team ${shortId(team)} created (block ${committed.height}).`;
    });
  });
  return form;
}
