// Keys kept on this device: the key file as the CLI seals it (the member's secrets under a key
// from their passphrase, Argon2id with the CLI's parameters) stored in IndexedDB, so a member
// signs in again with their passphrase alone. Nothing in it opens without the passphrase; the
// unsealed keys live in memory only while signed in.

import type { KeyFile } from "@medledger/protocol";

import type { PasskeyWrap } from "./passkey.js";

/** A key file kept on this device, and its secrets wrapped under a passkey when the member made one. */
export type KeptKey = KeyFile & { passkey?: PasskeyWrap };

const DB = "medledger";
const STORE = "keys";

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE, { keyPath: "member" });
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error ?? new Error("this browser keeps no data for this site"));
  });
}

function run<T>(mode: IDBTransactionMode, work: (store: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  return open().then(
    (db) =>
      new Promise<T>((resolve, reject) => {
        const tx = db.transaction(STORE, mode);
        const request = work(tx.objectStore(STORE));
        tx.oncomplete = () => {
          db.close();
          resolve(request.result);
        };
        tx.onerror = () => {
          db.close();
          reject(tx.error ?? new Error("the keys on this device could not be read"));
        };
      }),
  );
}

/** The sealed key files kept on this device. */
export function keptKeys(): Promise<KeptKey[]> {
  return run("readonly", (s) => s.getAll() as IDBRequest<KeptKey[]>).catch(() => []);
}

/** Keeps a sealed key file on this device (replacing the member's earlier one). */
export function keep(file: KeyFile, passkey?: PasskeyWrap): Promise<void> {
  const stored: KeptKey = { member: file.member, role: file.role, org: file.org, suite: file.suite, sealed: file.sealed };
  if (passkey) stored.passkey = { credential: passkey.credential, salt: passkey.salt, wrapped: passkey.wrapped };
  return run("readwrite", (s) => s.put(stored)).then(() => undefined);
}

/** Forgets a member's key file on this device. */
export function forget(member: string): Promise<void> {
  return run("readwrite", (s) => s.delete(member)).then(() => undefined);
}
