// DOM helpers: elements are built with text content only. Nothing a record or a validator says is
// ever parsed as HTML (no innerHTML anywhere in the portal), so a FHIR narrative or a name with
// markup in it shows as the characters it is.

type Child = Node | string | null | undefined | false;

/** `<tag attrs…>children</tag>`; attributes are set as attributes, children as text or nodes. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | boolean | undefined> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return el;
}

/** Replaces everything in `parent` with `children`. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

/** A short form of a 32-hex id, for display (the whole id is in the element's title). */
export function shortId(id: string): string {
  return `${id.slice(0, 8)}…`;
}

/** A ledger time (ms since the epoch) as the user's local date and time. */
export function when(ms: number): string {
  return new Date(ms).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A link that saves `text` as the file `name` (made here: nothing is fetched). */
export function download(name: string, text: string, label: string, type = "application/json"): HTMLAnchorElement {
  const url = URL.createObjectURL(new Blob([text], { type }));
  return h("a", { href: url, download: name, class: "download" }, label);
}
