//! The whole check of a receipt (see [`medledger_ledger::receipt`]), offline, from the genesis file.

use medledger_ledger::Genesis;
use medledger_ledger::receipt::{Included, Receipt, ReceiptError};

use crate::certificate::{namespace_for_chain, verify_certificate_in};
use crate::state::validators_through;

/// Checks a receipt file against `genesis`: its network, the inclusion of the transaction and its
/// outcome, the chain of headers, the validator-set history from the genesis validators (each
/// epoch's set proved against a block the previous epoch's validators certified), and the
/// finality certificate of the block's epoch.
pub fn verify(bytes: &[u8], genesis: &Genesis) -> Result<(Receipt, Included), ReceiptError> {
    let receipt = Receipt::decode(bytes)?;
    let chain_id = genesis.chain_id();
    let included = receipt.check_inclusion(&chain_id)?;
    let keys = validators_through(genesis, &receipt.links)?;
    let epoch = receipt.links.len() as u64;
    if !verify_certificate_in(&namespace_for_chain(&chain_id), epoch, &keys, included.certified.0, &receipt.certificate)
    {
        return Err(ReceiptError::Certificate);
    }
    Ok((receipt, included))
}
