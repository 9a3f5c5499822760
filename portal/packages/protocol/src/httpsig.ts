// API request signatures: HTTP Message Signatures (RFC 9421) with Ed25519 and a Content-Digest
// (RFC 9530) of the body, in the profile `medledger_ledger::httpsig` checks:
//
//   Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//   Signature-Input: sig=("@method" "@path" "@query" "@authority" "content-digest");created=<unix s>;
//                    nonce="<random>";keyid="<member id>";alg="ed25519";tag="medledger-api"
//   Signature: sig=:<base64 Ed25519 signature over the RFC 9421 §2.5 signature base>:
//
// A validator accepts a signature within a minute of its clock, once per nonce, and only for a
// request addressed to it (`@authority`).

import { type Bytes, randomBytes, toBase64, toBase64Url, utf8 } from "./bytes.js";
import { sha256 } from "./hash.js";
import type { SigningKey } from "./sign.js";

export const COMPONENTS = ["@method", "@path", "@query", "@authority", "content-digest"] as const;
export const TAG = "medledger-api";

/** The parts of a request a signature covers. */
export interface RequestParts {
  method: string;
  path: string;
  /** Without `?`; `null` when the URL has none. */
  query: string | null;
  /** `host[:port]` as the request addresses it. */
  authority: string;
  body: Bytes;
}

/** The parts of a request to an absolute `http(s)://authority/path?query` URL. */
export function partsOfUrl(method: string, url: string, body: Bytes = new Uint8Array()): RequestParts {
  const rest = url.startsWith("http://") ? url.slice(7) : url.startsWith("https://") ? url.slice(8) : null;
  const slash = rest?.indexOf("/") ?? -1;
  if (rest === null || slash <= 0) throw new Error(`not an absolute http(s) URL with a path: ${url}`);
  const authority = rest.slice(0, slash);
  const target = rest.slice(slash);
  const q = target.indexOf("?");
  return {
    method,
    path: q < 0 ? target : target.slice(0, q),
    query: q < 0 ? null : target.slice(q + 1),
    authority,
    body,
  };
}

export function contentDigest(body: Bytes): string {
  return `sha-256=:${toBase64(sha256(body))}:`;
}

function normalizedAuthority(raw: string): string {
  const lower = raw.trim().toLowerCase();
  return lower.endsWith(":80") ? lower.slice(0, -3) : lower;
}

/** A structured-field string (RFC 8941) of the profile's plain ASCII values. */
function sfString(value: string): string {
  if (!/^[\x20-\x7e]*$/.test(value) || /["\\]/.test(value)) throw new Error("not a plain ASCII parameter");
  return `"${value}"`;
}

/** A random nonce: 16 bytes, base64url. */
export function newNonce(): string {
  return toBase64Url(randomBytes(16));
}

/** The headers that sign a request: `[name, value]` pairs to add to it. */
export function signRequest(
  key: SigningKey,
  keyid: string,
  parts: RequestParts,
  createdMs: number,
  nonce: string = newNonce(),
): [string, string][] {
  const params =
    `(${COMPONENTS.map((c) => `"${c}"`).join(" ")})` +
    `;created=${Math.floor(createdMs / 1000)};nonce=${sfString(nonce)};keyid=${sfString(keyid)}` +
    `;alg="ed25519";tag="${TAG}"`;
  const digest = contentDigest(parts.body);
  const values = [parts.method, parts.path, `?${parts.query ?? ""}`, normalizedAuthority(parts.authority), digest];
  const base = COMPONENTS.map((name, i) => `"${name}": ${values[i]}\n`).join("") + `"@signature-params": ${params}`;
  const signature = key.signRaw(utf8(base));
  return [
    ["content-digest", digest],
    ["signature-input", `sig=${params}`],
    ["signature", `sig=:${toBase64(signature)}:`],
  ];
}
