//! Deleting ciphertext the ledger has retired. A rotation (`TxKind::Rotate`) names the ciphertext
//! it replaces; once the block is committed, every validator deletes that object from the store
//! (one that is already gone is fine: the validators share the store). A cursor file in the
//! validator's data directory remembers the last height handled, so deletions missed while the
//! validator was down happen when it comes back.

use std::path::PathBuf;

use medledger_ledger::TxKind;
use medledger_store::Blobs;
use medledger_types::Height;

use crate::app::{App, tx_outcome};

/// Runs until the application stops committing (process exit).
pub async fn run(app: App, blobs: Blobs, cursor: PathBuf) {
    let mut done: u64 = std::fs::read_to_string(&cursor).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let mut commits = app.subscribe();
    loop {
        let top = app.last_applied().height.get();
        while done < top {
            match retire(&app, &blobs, Height::new(done + 1)).await {
                Ok(()) => {
                    done += 1;
                    if let Err(e) = std::fs::write(&cursor, done.to_string()) {
                        tracing::warn!(error = %e, "cannot save the blob clean-up cursor");
                    }
                }
                Err(e) => {
                    // The store is unavailable: try again at the next commit.
                    tracing::warn!(height = done + 1, error = %e, "retired ciphertext not deleted yet");
                    break;
                }
            }
        }
        if commits.changed().await.is_err() {
            return;
        }
    }
}

/// Deletes the ciphertexts that the applied rotations of block `height` replace.
async fn retire(app: &App, blobs: &Blobs, height: Height) -> Result<(), String> {
    let Some((block, _)) = app.block_at(height).map_err(|e| e.to_string())? else {
        // Not in this validator's log (it started from a peer's state): nothing it can do.
        return Ok(());
    };
    let mut retired = Vec::new();
    {
        let view = app.inner().db.view(&[]).map_err(|e| e.to_string())?;
        for tx in &block.txs {
            if let TxKind::Rotate(rotate) = &tx.body.kind
                && tx_outcome(&view, &tx.id()).is_some_and(|r| r.outcome.is_applied())
            {
                retired.push(rotate.replaces);
            }
        }
    }
    for digest in retired {
        blobs.delete(&digest).await.map_err(|e| e.to_string())?;
        tracing::info!(height = height.get(), "retired ciphertext deleted");
    }
    Ok(())
}
