// Enrolment by request, in the browser: a new member makes their keys here (from a recovery code
// they write down), keeps the key file, and hands their admin the request (public keys only,
// signed); an admin checks a request and enrols its member. No admin ever holds a member's secret.

import { type Client, type Identity, ROLES, type Role, requestEnrolment, verifyEnrolmentRequest } from "@medledger/protocol";

import { download, h, replace, shortId } from "./dom.js";

type Say = (text: string, kind?: "info" | "error") => void;


/** The form a new member fills in to make their keys and their enrolment request. */
export function newMemberForm(chainId: string, say: Say, errorText: (e: unknown) => string): HTMLElement {
  const role = h(
    "select",
    { id: "new-role" },
    ...ROLES.map((r) => h("option", { value: r, selected: r === "patient" }, r)),
  );
  const org = h("input", { id: "new-org", required: true, pattern: "[a-z0-9_-]{1,32}", autocomplete: "organization", spellcheck: "false" });
  const name = h("input", { id: "new-name", maxlength: "128", autocomplete: "name" });
  const pass = h("input", { id: "new-pass", type: "password", required: true, minlength: "8", autocomplete: "new-password" });
  const again = h("input", { id: "new-pass-again", type: "password", required: true, autocomplete: "new-password" });
  const make = h("button", { type: "submit" }, "Make my keys");
  const result = h("div", { id: "new-member", "aria-live": "polite" });
  const form = h(
    "form",
    { "aria-labelledby": "new-title" },
    h("h2", { id: "new-title" }, "New here? Make your keys"),
    h("p", {}, "Your keys are made on this device and never leave it. Your organisation's admin gets a request with your public keys only."),
    h("label", { for: "new-role" }, "I am a"),
    role,
    h("label", { for: "new-org" }, "Organisation (its id, from your admin)"),
    org,
    h("label", { for: "new-name" }, "Name shown to patients (staff only)"),
    name,
    h("label", { for: "new-pass" }, "New passphrase (8 characters or more)"),
    pass,
    h("label", { for: "new-pass-again" }, "The passphrase again"),
    again,
    make,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (pass.value !== again.value) {
      say("The two passphrases differ.", "error");
      return;
    }
    if (pass.value.length < 8) {
      say("Choose a passphrase of 8 characters or more.", "error");
      return;
    }
    make.disabled = true;
    say("Making your keys on this device…");
    const displayName = role.value === "patient" ? null : name.value.trim() || null;
    requestEnrolment(chainId, role.value as Role, org.value.trim(), displayName, pass.value)
      .then((made) => {
        pass.value = "";
        again.value = "";
        const id = shortId(made.member).replace("…", "");
        replace(
          result,
          h("h3", {}, "Your keys are ready"),
          h("p", {}, "Write down your recovery code and keep it somewhere safe: it restores your keys if this device and your key file are lost."),
          h("p", {}, h("code", { id: "recovery-code" }, made.recoveryCode)),
          h("p", {}, download(`medledger-${id}.key`, JSON.stringify(made.keyFile), "Download your key file (keep it: you sign in with it)")),
          h("p", {}, download(`enrolment-${id}.json`, JSON.stringify(made.request, null, 2), "Download your enrolment request (give it to your admin)")),
          h("p", {}, "When your admin has approved the request, sign in with your key file and passphrase."),
        );
        made.keys.signing.wipe();
        made.keys.encryption.wipe();
        say(`Keys made for member ${shortId(made.member)}`);
      })
      .catch((e: unknown) => {
        make.disabled = false;
        say(errorText(e), "error");
      });
  });
  return h("section", { class: "new-member" }, form, result);
}

/** An admin's screen: check an enrolment request and enrol its member. */
export function approveForm(
  client: Client,
  admin: Identity & { org: string },
  say: Say,
  errorText: (e: unknown) => string,
): HTMLElement {
  const file = h("input", { id: "request-file", type: "file", accept: ".json,application/json", required: true });
  const summary = h("div", { id: "request-summary", "aria-live": "polite" });
  const form = h(
    "form",
    { "aria-labelledby": "approve-title" },
    h("h2", { id: "approve-title" }, "Approve an enrolment request"),
    h("label", { for: "request-file" }, "Request file"),
    file,
    h("button", { type: "submit" }, "Check the request"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = file.files?.[0];
    if (!chosen) {
      say("Choose a request file.", "error");
      return;
    }
    void chosen.text().then((text) => {
      let checked;
      try {
        checked = verifyEnrolmentRequest(text, client.chainId);
      } catch (e) {
        replace(summary);
        say(errorText(e), "error");
        return;
      }
      const e = checked.enroll;
      const approve = h("button", { type: "button" }, "Approve and enrol");
      approve.addEventListener("click", () => {
        approve.disabled = true;
        say("Enrolling on the ledger…");
        client
          .approveEnrolment(admin, text)
          .then((done) => {
            replace(summary, h("p", {}, `Enrolled member ${shortId(done.enroll.member)} as ${done.enroll.role} (block ${done.committed.height}).`));
            say("Enrolled.");
          })
          .catch((err: unknown) => {
            approve.disabled = false;
            say(errorText(err), "error");
          });
      });
      const list = h("dl", { class: "summary" });
      for (const [label, value] of [
        ["Member", e.member],
        ["Role", e.role],
        ["Organisation", e.org],
        ["Name", e.display_name ?? "(none)"],
        ["Signed by its own keys", "yes"],
      ] as const) {
        list.append(h("dt", {}, label), h("dd", {}, value));
      }
      replace(summary, list, approve);
      say("The request checks: it is signed by the keys it enrols and is for this network.");
    });
  });
  return h("section", {}, form, summary);
}

/** An admin suspends a member of their organisation (who can then do nothing) or reinstates them. */
export function suspendForm(client: Client, admin: Identity, say: Say, errorText: (e: unknown) => string): HTMLElement {
  const member = h("input", { id: "suspend-member", pattern: "[0-9a-f]{32}", required: true, autocomplete: "off", spellcheck: "false" });
  const suspend = h("button", { type: "button" }, "Suspend");
  const reinstate = h("button", { type: "button", class: "secondary" }, "Reinstate");
  const act = (suspended: boolean) => {
    const id = member.value.trim().toLowerCase();
    if (!/^[0-9a-f]{32}$/.test(id)) {
      say("A member id is 32 hexadecimal characters.", "error");
      return;
    }
    say(suspended ? "Suspending on the ledger…" : "Reinstating on the ledger…");
    client
      .transact(admin, { type: "suspend", member: id, suspended })
      .then((done) => say(`Member ${shortId(id)} ${suspended ? "suspended" : "reinstated"} (block ${done.height}).`))
      .catch((e: unknown) => say(errorText(e), "error"));
  };
  suspend.addEventListener("click", () => act(true));
  reinstate.addEventListener("click", () => act(false));
  return h(
    "form",
    { "aria-labelledby": "suspend-title", class: "add" },
    h("h2", { id: "suspend-title" }, "Suspend or reinstate a member"),
    h("p", {}, "A suspended member can do nothing; every attempt on a patient's chart is audited."),
    h("label", { for: "suspend-member" }, "Member id"),
    member,
    h("div", { class: "buttons" }, suspend, " ", reinstate),
  );
}
