// Unlocking the keys kept on this device with a passkey (WebAuthn, PRF extension): the passkey's
// PRF output for a random salt, through HKDF-SHA256, is a key-encryption key under which the
// member's secrets are kept (AES-256-GCM, bound to the member id) beside the key file sealed
// under the passphrase, which stays the fallback. The authenticator never gives out the PRF
// secret itself, and the wrapped secrets open only with the passkey and user verification.

import { type IdentityKeys, fromHex, identityFromSecret, identitySecret, owned, randomBytes, toHex, utf8 } from "@medledger/protocol";

/** What is kept for a passkey: its credential id, the PRF salt, and the secrets wrapped (iv ‖ ciphertext), hex. */
export interface PasskeyWrap {
  credential: string;
  salt: string;
  wrapped: string;
}

/** Whether this browser can make passkeys here (a secure context: https, or http://localhost). */
export function passkeysAvailable(): boolean {
  return typeof window.PublicKeyCredential === "function" && window.isSecureContext && window.location.hostname !== "127.0.0.1";
}

interface PrfOutputs {
  prf?: { enabled?: boolean; results?: { first?: ArrayBuffer } };
}

async function keyEncryptionKey(prf: ArrayBuffer, member: string): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey("raw", prf, "HKDF", false, ["deriveKey"]);
  return crypto.subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: owned(utf8("medledger/passkey-kek/v1")), info: owned(fromHex(member)) },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

async function prfOf(credential: Uint8Array, salt: Uint8Array): Promise<ArrayBuffer> {
  const got = (await navigator.credentials.get({
    publicKey: {
      challenge: owned(randomBytes(32)),
      allowCredentials: [{ type: "public-key", id: owned(credential) }],
      userVerification: "required",
      extensions: { prf: { eval: { first: owned(salt) } } } as AuthenticationExtensionsClientInputs,
    },
  })) as PublicKeyCredential | null;
  const first = (got?.getClientExtensionResults() as PrfOutputs | undefined)?.prf?.results?.first;
  if (!first) throw new Error("this passkey cannot derive a key (no PRF support): sign in with your passphrase");
  return first;
}

/** Makes a passkey for `member` on this device and wraps their secrets under it. */
export async function registerPasskey(member: string, role: string, keys: IdentityKeys): Promise<PasskeyWrap> {
  const salt = randomBytes(32);
  const name = `${role} ${member.slice(0, 8)}`;
  const created = (await navigator.credentials.create({
    publicKey: {
      rp: { name: "medledger" },
      user: { id: owned(fromHex(member)), name, displayName: name },
      challenge: owned(randomBytes(32)),
      pubKeyCredParams: [
        { type: "public-key", alg: -7 },
        { type: "public-key", alg: -257 },
      ],
      authenticatorSelection: { userVerification: "required", residentKey: "preferred" },
      extensions: { prf: { eval: { first: owned(salt) } } } as AuthenticationExtensionsClientInputs,
    },
  })) as PublicKeyCredential | null;
  if (!created) throw new Error("no passkey was made");
  const credential = new Uint8Array(created.rawId);
  const outputs = created.getClientExtensionResults() as PrfOutputs;
  if (outputs.prf?.enabled === false) throw new Error("this authenticator has no PRF support: keep using your passphrase");
  const first = outputs.prf?.results?.first ?? (await prfOf(credential, salt));
  const key = await keyEncryptionKey(first, member);
  const iv = randomBytes(12);
  const secret = identitySecret(keys);
  try {
    const wrapped = await crypto.subtle.encrypt({ name: "AES-GCM", iv: owned(iv), additionalData: owned(fromHex(member)) }, key, owned(secret));
    return { credential: toHex(credential), salt: toHex(salt), wrapped: toHex(iv) + toHex(new Uint8Array(wrapped)) };
  } finally {
    secret.fill(0);
  }
}

/** The member's keys, unwrapped with their passkey (user verification on this device). */
export async function unlockWithPasskey(member: string, suite: number, wrap: PasskeyWrap): Promise<IdentityKeys> {
  const first = await prfOf(fromHex(wrap.credential), fromHex(wrap.salt));
  const key = await keyEncryptionKey(first, member);
  const all = fromHex(wrap.wrapped);
  let secret: Uint8Array;
  try {
    secret = new Uint8Array(
      await crypto.subtle.decrypt({ name: "AES-GCM", iv: owned(all.subarray(0, 12)), additionalData: owned(fromHex(member)) }, key, owned(all.subarray(12))),
    );
  } catch {
    throw new Error("this passkey does not open these keys");
  }
  try {
    return await identityFromSecret(suite, secret);
  } finally {
    secret.fill(0);
  }
}
