//! Durable storage of a validator: the ledger state with its Merkle commitment, the finalized
//! chain, and the blob store of record ciphertexts.
//!
//! - [`StateDb`]: one redb file holding the latest state (key → value, for reads and prefix
//!   listings), the Jellyfish Merkle tree over it (the state root in every header), sidecars,
//!   indexes and `last_applied`. A finalized block is committed in one redb write transaction.
//! - [`ChainLog`]: the finalized blocks and their certificates, appended in height order to a
//!   plain file that `medledger verify` re-checks from genesis.
//! - [`Blobs`]: content-addressed ciphertexts through `object_store` (local folder, S3, memory).
//!
//! Speculative execution: Simplex builds on notarized, not yet finalized, parents, so a block is
//! executed when it is proposed or verified, and its writes and tree nodes are kept as a
//! [`Pending`] batch. Children of unfinalized blocks read through their ancestors' batches
//! ([`SpecView`]); finalization commits the batch that was computed at verification.

mod blobs;
mod chain;
mod state;

pub use blobs::{BlobError, Blobs, S3Config};
pub use chain::{ChainEntry, ChainError, ChainLog};
pub use state::{Entry, LastApplied, Pending, SnapshotInstall, SpecView, StateDb, StoreError, SyncedBlock, VaultRow};
