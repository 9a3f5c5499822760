//! The client-side FHIR R4 gateway (`medledger gateway`) and bulk import (`medledger import`).
//!
//! Both run on the member's machine and use the SDK, so validators only ever see ciphertext,
//! wrapped keys and signed transactions:
//! - [`fhir`]: R4 vocabulary (validation with fhirkit, OperationOutcome, CapabilityStatement,
//!   references and the patient a resource belongs to);
//! - [`plan`]: a Bundle or a file planned before anything is written (ids, patients, references);
//! - [`params`]: the search parameters applied to decrypted resources (token, string, date; `_sort`);
//! - [`service`]: create, read, update, search, `$everything` and transaction as one member;
//! - [`cache`]: the encrypted-at-rest local copy of resources read or written;
//! - [`index`]: what searches run on, caught up with the ledger incrementally (chart heads);
//! - [`http`]: the FHIR REST surface (axum) on a loopback address;
//! - [`export`]: charts out as NDJSON (Bulk Data `$export`, `medledger export`);
//! - [`import`]: NDJSON and Bundle files loaded in parallel, resumable, with custody enrolment;
//! - [`audit`]: the ledger's audit events as FHIR AuditEvent resources.

pub mod audit;
pub mod cache;
pub mod export;
pub mod fhir;
pub mod http;
pub mod import;
pub mod include;
pub mod index;
pub mod params;
pub mod plan;
pub mod service;

pub use service::{Gateway, Search, Stored};
