//! Order-free ledger logic: transactions, blocks, genesis, state layout and the deterministic policy
//! state machine that every validator executes.
//!
//! This crate does no I/O and reads no clock and no randomness: [`execute_block`] takes the state
//! before a block (through [`StateView`]), the block's context (chain id, height, block time) and its
//! transactions, and returns the writes and one [`TxOutcome`] per transaction. Two validators given
//! the same inputs produce byte-identical outputs, which is what lets them agree on a state root.

pub mod api;
mod block;
mod exec;
mod genesis;
pub mod governance;
pub mod httpsig;
pub mod merkle;
mod policy;
pub mod receipt;
pub mod serve;
mod sidecar;
pub mod state;
pub mod threshold;
mod tx;

pub use block::{Block, BlockError, BlockHeader, check_sidecar, results_root, sidecar_facts, tx_root};
pub use exec::{BlockContext, BlockInvalid, Execution, Executor, TxInvalid, execute_block, execute_block_verified};
pub use genesis::{Genesis, GenesisError, GenesisMember, GenesisOrg, GenesisValidator, NetworkPolicy};
pub use policy::{CHART_HOLDERS_MAX, Rejection};
pub use sidecar::{
    KeyHolder, KeySubject, NOTE_OVERHEAD_BYTES, Sidecar, SidecarEnvelope, SidecarError, SidecarFacts, parse_purged,
    purged_slot,
};
pub use state::{StateView, WriteSet};
pub use tx::{
    BreakGlass, CHART_REVIEW_WINDOW_MS, ChartReview, CustodyRelease, Delegate, EmergencyReason, Enroll, Erase, Grant,
    GrantScope, KeyChange, LegalHold, NewChartEpoch, RecordAccess, Recovery, RecoveryAction, RegisterRecord, Reshare,
    ReshareStep, Revoke, Rotate, RotateKeys, ShareKey, Suspend, TX_NAMESPACE, TeamAdd, TeamCreate, TeamRemove,
    Transaction, TxBody, TxKind, TxOutcome, claim_code_hash, claim_proof, directory_id, validator_member_id,
};
