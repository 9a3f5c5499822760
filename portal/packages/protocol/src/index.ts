// @medledger/protocol: what a browser needs to be a medledger client, without any UI.

export * from "./bytes.js";
export * from "./borsh.js";
export * from "./hash.js";
export * from "./httpsig.js";
export * from "./ids.js";
export * from "./payload.js";
export * from "./sign.js";
export * from "./tx.js";
export * from "./wrap.js";
export * from "./threshold.js";
export * from "./evidence.js";
export * from "./keystore.js";
export * from "./client.js";
export * from "./sidecar.js";
export * from "./enrolment.js";
export * from "./certified.js";
export * from "./receipt.js";
export * from "./consent.js";
export * from "./teams.js";
export * from "./fhir.js";
export * from "./custody.js";
export * from "./epochs.js";
