//! What a validator serves for a committed access: the rule every validator applies before it hands
//! out a record's envelopes, its ciphertext or its key share (DESIGN §6a). The access must be a
//! committed, allowed RecordAccess signed by the reader, for the record's current version; a share
//! released under it is the emergency share too only when break-glass alone allowed the access.
//! (How recent the access must be is the node's business: it needs a clock.)

use medledger_types::{MemberId, TxId};

use crate::state::{AccessBasis, RecordEntry, StateView, TxResultEntry, keys, read};
use crate::tx::RecordAccess;

/// Why a validator serves nothing for an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No committed transaction has this id.
    NotCommitted,
    /// Someone else signed the access.
    OtherSigner,
    /// The ledger denied the access.
    Denied,
    /// The record is gone (erased) since.
    RecordGone,
    /// The record has had another version since.
    RecordChanged,
}

/// What an access allows a validator to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub result: TxResultEntry,
    pub record: RecordEntry,
    /// Only break-glass allowed the access: the reader holds no envelope, so validators release
    /// their emergency shares of `k_env` with their `k_thr` shares.
    pub emergency: bool,
}

/// Applies the rule to the committed transaction `tx`, whose body is `access`, for `reader`.
pub fn served_access(
    view: &(impl StateView + ?Sized),
    tx: &TxId,
    access: &RecordAccess,
    reader: &MemberId,
) -> Result<Served, Refusal> {
    let result: TxResultEntry = read(view, &keys::tx_result(tx)).ok_or(Refusal::NotCommitted)?;
    if result.signer != *reader {
        return Err(Refusal::OtherSigner);
    }
    if !result.outcome.is_applied() {
        return Err(Refusal::Denied);
    }
    let record: RecordEntry = read(view, &keys::record(&access.record)).ok_or(Refusal::RecordGone)?;
    if record.version != access.version {
        return Err(Refusal::RecordChanged);
    }
    let emergency = read::<AccessBasis>(view, &keys::access_basis(tx)) == Some(AccessBasis::BreakGlass);
    Ok(Served { result, record, emergency })
}
