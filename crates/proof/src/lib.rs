//! What anyone can check offline about what a validator hands out, from the genesis file alone:
//! no single validator can make a reader, an auditor or a syncing validator accept something a
//! quorum of the validator set did not agree on.
//!
//! - [`certificate`]: the consensus engine's finality certificates (a quorum's signatures).
//! - [`state`]: Merkle proofs of state entries against a block's state root, the validator-set
//!   history from genesis to the epoch that certified a block, and so a certified state root;
//!   the check of a set of proved entries (the keys a writer wraps for).
//! - [`receipt`]: the whole check of a receipt (a transaction and its outcome in a finalized block).
//! - [`access`]: the check of an access bundle (record entry, envelopes, metadata, threshold
//!   commitments) against the state a certified block commits to.
//!
//! Pure: no I/O, no clock, no network. Validators build the evidence (`medledger-node`), clients
//! check it (`medledger-sdk`, `medledger receipt verify`).

pub mod access;
pub mod certificate;
pub mod receipt;
pub mod state;

pub use access::{AccessError, Verified, check_access};
pub use certificate::{namespace_for_chain, verify_certificate, verify_certificate_in};
pub use state::{
    ProvedEntries, StateError, certified_root, check_state, validators_through, verify_state_proof,
    verify_state_proof_of,
};
