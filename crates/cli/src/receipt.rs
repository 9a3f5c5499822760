//! `medledger receipt`: save receipts and check them offline from the genesis file.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use medledger_ledger::receipt::RECEIPT_BYTES_MAX;
use medledger_ledger::{Genesis, TxOutcome};
use medledger_sdk::{Identity, Result, SdkError, Session};
use medledger_types::{MemberId, TxId};
use serde_json::json;

/// Largest genesis file read (64 organisations and validators with their keys fit well within).
const GENESIS_BYTES_MAX: u64 = 4 * 1024 * 1024;

fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| SdkError::Usage(format!("cannot read the {what}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| SdkError::Other(format!("cannot read the {what}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(SdkError::Integrity(format!("the {what} is larger than {max} bytes")));
    }
    Ok(bytes)
}

/// Fetches the receipt of `tx` and writes it to `path`.
pub async fn save(session: &Session, me: &Identity, tx: &TxId, patient: Option<&MemberId>, path: &Path) -> Result<()> {
    let bytes = session.client.receipt(me, tx, patient).await?;
    std::fs::write(path, &bytes).map_err(|e| SdkError::Other(format!("cannot write {}: {e}", path.display())))
}

/// `receipt verify FILE --genesis GENESIS`: no node is contacted.
pub fn verify(file: &Path, genesis: &Path, json: bool) -> Result<()> {
    let text = read_bounded(genesis, GENESIS_BYTES_MAX, "genesis file")?;
    let text = String::from_utf8(text).map_err(|_| SdkError::Usage("the genesis file is not UTF-8 JSON".into()))?;
    // Parsed and validated (organisations, validators, keys, limits).
    let genesis = Genesis::from_json(&text).map_err(|e| SdkError::Usage(format!("not a genesis file: {e}")))?;
    let bytes = read_bounded(file, RECEIPT_BYTES_MAX as u64 + 64, "receipt")?;
    let (receipt, included) = medledger_proof::receipt::verify(&bytes, &genesis)
        .map_err(|e| SdkError::Integrity(format!("receipt does not verify: {e}")))?;
    let tx = &receipt.tx;
    let outcome = match &receipt.outcome {
        TxOutcome::Applied => "applied".to_string(),
        TxOutcome::Rejected { reason } => format!("rejected ({reason})"),
    };
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(included.time.get()));
    if json {
        println!(
            "{}",
            json!({"valid": true, "tx": tx.id(), "kind": tx.body.kind.name(), "signer": tx.body.signer, "outcome": receipt.outcome, "height": included.height.get(), "time": time.to_string(), "certified_height": included.certified_height.get(), "certified_block": included.certified.to_hex(), "epoch": receipt.links.len(), "chain": genesis.chain_name})
        );
    } else {
        let by = match receipt.links.len() {
            0 => "the genesis validators".to_string(),
            epoch => format!("the validators of epoch {epoch} (set history from genesis checked)"),
        };
        println!(
            "receipt ok: {} {} by {}: {outcome}, block {} at {time}, finalized by a certificate of {by} on block {}",
            tx.body.kind.name(),
            tx.id(),
            tx.body.signer,
            included.height,
            included.certified_height
        );
    }
    Ok(())
}
