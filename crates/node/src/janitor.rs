//! What committed blocks ask of this validator beyond its state, done behind the commits in
//! height order. A cursor file in the data directory remembers the last height handled, so work
//! missed while the validator was down (or failed, e.g. the store was unreachable) happens later;
//! every step is idempotent.
//!
//! - **Vaulting**: this validator opens its share of each new record version with its share key
//!   and keeps it in its vault (local, outside the Merkle state, sealed; see [`crate::keyring`]),
//!   so releases need the vault, not the key.
//! - **Share-key rotation**: an erasure asks for a new share key; the janitor announces the
//!   successor (a `ShareKey` transaction signed with the consensus key) and, when this validator's
//!   announcement is committed, switches to it and destroys the old key.
//! - **Rotation**: the ciphertext an applied `Rotate` replaced is deleted from the store (the
//!   validators share the store, so an object already gone is fine).
//! - **Re-sharing**: a record version's shares held by an earlier validator set are dealt to the
//!   current one, checked, and combined ([`crate::reshare`]).
//! - **Erasure**: for an applied `Erase`, the ciphertext of every applied version leaves the store; every
//!   sidecar of the record (its versions' envelopes and shares, per-record grants) leaves the
//!   state database and this validator's chain log, where each is replaced in place by the facts
//!   execution needs (`medledger_ledger::purged_slot`), so the chain still verifies; and this
//!   validator's shares leave its vault.
//!
//! A ciphertext is deleted only if the ledger's owner index (`keys::ciphertext`) gives it to the
//! rotated or erased record: a digest belongs to exactly one record version, and a rejected
//! transaction deletes nothing, so no writer can have another record's ciphertext deleted.

use std::path::PathBuf;
use std::sync::Arc;

use medledger_crypto::sign::SigningKey;
use std::time::Duration;

use medledger_ledger::state::{CiphertextOwner, keys, last_nonce, read};
use medledger_ledger::{
    GrantScope, ShareKey, Sidecar, Transaction, TxBody, TxKind, parse_purged, purged_slot, threshold,
    validator_member_id,
};
use medledger_store::Blobs;
use medledger_types::Timestamp;
use medledger_types::limits::SHARE_KEY_INTERVAL_MS;
use medledger_types::{Digest, Height, RecordId, TxId};

use crate::app::{App, tx_outcome};
use crate::keyring::Keyring;

pub struct Janitor {
    pub app: App,
    pub blobs: Blobs,
    /// This validator's share key and vault (threshold release), if the network has them.
    pub keyring: Option<Arc<Keyring>>,
    /// This validator's index in the validator set, and its consensus key (it signs the
    /// validator's own transactions).
    pub index: u32,
    pub consensus_key: SigningKey,
    /// Hands this validator's own transactions to its peers too, so whichever leads next
    /// proposes them.
    pub forwarder: Option<crate::forward::Forwarder>,
    pub cursor: PathBuf,
    /// Re-sharing to a new validator set ([`crate::reshare`]).
    pub reshare: std::sync::Mutex<crate::reshare::ReshareWork>,
}

/// First and longest wait before failed janitor work is tried again without a new commit.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Janitor {
    /// Runs until the application stops committing (process exit).
    pub async fn run(self) {
        let mut done: u64 = std::fs::read_to_string(&self.cursor).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mut commits = self.app.subscribe();
        let mut announced: Option<TxId> = None;
        // After failed work (the store unreachable, say), when to try again without waiting for
        // the next commit (an idle network may not commit for a long time): doubling, bounded.
        let mut backoff = RETRY_MIN;
        // The record index covers what this janitor handles from now on (all of a new validator).
        if let Err(e) = self.app.inner().db.start_record_index(done + 1) {
            tracing::warn!(error = %e, "cannot start the record index");
            return;
        }
        loop {
            let top = self.app.last_applied().height.get();
            let mut failed = false;
            while done < top {
                match self.handle(Height::new(done + 1)).await {
                    Ok(()) => {
                        done += 1;
                        if let Err(e) = std::fs::write(&self.cursor, done.to_string()) {
                            tracing::warn!(error = %e, "cannot save the janitor's cursor");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(height = done + 1, error = %e, "janitor work not done yet");
                        failed = true;
                        break;
                    }
                }
            }
            let mut retry = None;
            if failed {
                retry = Some(backoff);
                backoff = (backoff * 2).min(RETRY_MAX);
            } else {
                backoff = RETRY_MIN;
            }
            if done == top {
                match self.announce_successor(done, &mut announced) {
                    Ok(wait) => retry = wait,
                    Err(e) => {
                        tracing::warn!(error = %e, "share key successor not announced yet");
                        retry = Some(backoff);
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
                match self.reshare_tick() {
                    Ok(wait) => retry = [retry, wait].into_iter().flatten().min(),
                    Err(e) => tracing::warn!(error = %e, "re-sharing not looked at"),
                }
            }
            // Wake at the next commit, at the retry, or when a replacement put off by the interval is due.
            let next = match retry {
                Some(wait) => tokio::time::timeout(wait, commits.changed()).await.unwrap_or(Ok(())),
                None => commits.changed().await,
            };
            if next.is_err() {
                return;
            }
        }
    }

    /// When an erasure asks for it (and every committed block has been handled, `done`), submits
    /// this validator's next share key, unless an announcement still waits in the mempool. An
    /// announcement that committed was handled already: the key switched (and a rotation still
    /// wanted is a later erasure's) or it was refused; one dropped is made again. Returns how long
    /// to wait when the last replacement is too recent (`SHARE_KEY_INTERVAL_MS`).
    fn announce_successor(&self, done: u64, announced: &mut Option<TxId>) -> Result<Option<Duration>, String> {
        let Some(keyring) = &self.keyring else { return Ok(None) };
        if !keyring.wants_rotation() || self.app.last_applied().height.get() != done {
            return Ok(None);
        }
        if announced.as_ref().is_some_and(|id| self.app.has_pending(id)) {
            return Ok(None);
        }
        let signer = validator_member_id(&self.consensus_key.verifying_key());
        let nonce = {
            let view = self.app.inner().db.view(&[]).map_err(|e| e.to_string())?;
            let last: Option<Timestamp> = read(&view, &keys::share_key_replaced(self.index));
            let due = last.map_or(0, |t| t.get().saturating_add(SHARE_KEY_INTERVAL_MS));
            let now = crate::app::wall_clock_ms();
            if now < due {
                return Ok(Some(Duration::from_millis(due - now)));
            }
            last_nonce(&view, &signer, 0).checked_next().ok_or("nonces exhausted")?
        };
        let successor = keyring.successor()?;
        let body = TxBody {
            chain_id: self.app.inner().chain_id,
            signer,
            nonce,
            kind: TxKind::ShareKey(ShareKey { validator: self.index, public_key: successor.encryption_key().clone() }),
            sidecar_digest: None,
        };
        let tx = Transaction::sign(body, &self.consensus_key);
        let (id, _) = self.app.submit(tx.clone(), None).map_err(|e| e.to_string())?;
        if let Some(forwarder) = &self.forwarder {
            forwarder.forward(medledger_ledger::api::SubmitRequest { tx, sidecar: None });
        }
        tracing::info!("share key successor announced");
        *announced = Some(id);
        Ok(None)
    }

    /// The work block `height` asks for.
    async fn handle(&self, height: Height) -> Result<(), String> {
        let Some((block, _)) = self.app.block_at(height).map_err(|e| e.to_string())? else {
            // Not in this validator's log (it started from a peer's state): nothing it can do.
            return Ok(());
        };
        let applied: Vec<bool> = {
            let view = self.app.inner().db.view(&[]).map_err(|e| e.to_string())?;
            block.txs.iter().map(|tx| tx_outcome(&view, &tx.id()).is_some_and(|r| r.outcome.is_applied())).collect()
        };
        let db = &self.app.inner().db;
        let mut named: Vec<RecordId> = block.txs.iter().filter_map(|tx| tx.body.kind.sidecar_record()).collect();
        named.sort();
        named.dedup();
        db.index_record_blocks(height, &named).map_err(|e| e.to_string())?;
        let (mut vault, mut retired, mut erased) = (Vec::new(), Vec::new(), Vec::new());
        // In block order: a share-key switch applies to the records after it in the block.
        for ((tx, slot), applied) in block.txs.iter().zip(&block.sidecars).zip(applied) {
            if !applied {
                continue;
            }
            let written = match &tx.body.kind {
                TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) => Some(r),
                TxKind::Rotate(rotate) => {
                    retired.push((rotate.next.record, rotate.replaces));
                    Some(&rotate.next)
                }
                TxKind::Erase(erase) => {
                    erased.push(erase.record);
                    if let Some(keyring) = &self.keyring {
                        keyring.request_rotation()?;
                    }
                    None
                }
                TxKind::Reshare(reshare) => {
                    if let Some(keyring) = &self.keyring {
                        self.reshare_seen(keyring, reshare, slot.as_deref())?;
                    }
                    None
                }
                TxKind::ShareKey(next) if next.validator == self.index => {
                    if let Some(keyring) = &self.keyring {
                        db.vault_put(&std::mem::take(&mut vault)).map_err(|e| e.to_string())?;
                        keyring.advance(&next.public_key, db)?;
                    }
                    None
                }
                _ => None,
            };
            if let (Some(r), Some(bytes), Some(keyring)) = (written, slot, &self.keyring)
                && let Some(opened) = self.open_share(keyring, r.record, r.version, bytes)
            {
                vault.push((r.record, r.version, keyring.seal_share(&r.record, r.version, &opened)?));
            }
        }
        // A version put and erased in the same block is vaulted, then erased.
        if !vault.is_empty() {
            db.vault_put(&vault).map_err(|e| e.to_string())?;
        }
        for (record, digest) in retired {
            for digest in self.owned_by(&record, vec![digest])? {
                self.blobs.delete(&digest).await.map_err(|e| e.to_string())?;
                tracing::info!(height = height.get(), "retired ciphertext deleted");
            }
        }
        for record in erased {
            self.erase(record, height).await?;
        }
        Ok(())
    }

    /// Those of `digests` the ledger's owner index gives to `record` (a digest belongs to one
    /// record version, for good); any other is logged and left alone.
    fn owned_by(&self, record: &RecordId, digests: Vec<Digest>) -> Result<Vec<Digest>, String> {
        let view = self.app.inner().db.view(&[]).map_err(|e| e.to_string())?;
        let (owned, foreign): (Vec<Digest>, Vec<Digest>) = digests.into_iter().partition(|d| {
            read::<CiphertextOwner>(&view, &keys::ciphertext(d)).is_some_and(|owner| owner.record == *record)
        });
        if !foreign.is_empty() {
            tracing::warn!(count = foreign.len(), "not deleting ciphertexts the record does not own");
        }
        Ok(owned)
    }

    /// This validator's opened share of a record version, from the sidecar that carried it.
    fn open_share(
        &self,
        keyring: &Keyring,
        record: RecordId,
        version: u32,
        sidecar: &[u8],
    ) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let key = keyring.current();
        let shares = Sidecar::decode(sidecar).ok()?.threshold.0?;
        let position = shares.position(self.index)?;
        let mine = shares.shares.get(position)?;
        let chain_id = self.app.inner().chain_id;
        let context = threshold::share_context(chain_id, record, version, shares.epoch, u32::try_from(position).ok()?);
        match medledger_crypto::wrap::open(&key, &mine.envelope, &context) {
            Ok(opened) if shares.opened_fits(position, &opened) => Some(opened),
            _ => {
                // The author wrapped this validator's share wrongly, or dealt one its commitments
                // refuse: the other validators' shares still serve the record (and this one
                // answers 409 to a release).
                tracing::warn!(version, "a share for this validator does not open or verify; not vaulted");
                None
            }
        }
    }

    /// Carries out the erasure of `record`, committed at `height` (see the module docs).
    ///
    /// The ciphertexts it deletes are those of the record's *applied* versions, each checked
    /// against the ledger's owner index (a digest belongs to exactly one record version): a
    /// rejected transaction that named the record, or a digest another record owns, deletes
    /// nothing. Sidecars of every transaction naming the record are purged (they are about it).
    async fn erase(&self, record: RecordId, height: Height) -> Result<(), String> {
        let (mut sidecars, mut ciphertexts): (Vec<Digest>, Vec<Digest>) = (Vec::new(), Vec::new());
        let mut purged = 0usize;
        // The blocks the index names, and every block below the index (a validator that ran an
        // earlier version) searched the long way.
        let (indexed, from) = self.app.inner().db.record_blocks(&record).map_err(|e| e.to_string())?;
        let below = 1..from.unwrap_or(1).min(height.get() + 1);
        let heights: Vec<u64> = below.chain(indexed.iter().map(|h| h.get()).filter(|h| *h <= height.get())).collect();
        for h in heights {
            let Some((mut block, _)) = self.app.block_at(Height::new(h)).map_err(|e| e.to_string())? else {
                continue;
            };
            let applied: Vec<bool> = {
                let view = self.app.inner().db.view(&[]).map_err(|e| e.to_string())?;
                block.txs.iter().map(|tx| tx_outcome(&view, &tx.id()).is_some_and(|r| r.outcome.is_applied())).collect()
            };
            let mut changed = false;
            for ((tx, slot), applied) in block.txs.iter().zip(block.sidecars.iter_mut()).zip(applied) {
                let names_record = match &tx.body.kind {
                    TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) if r.record == record => {
                        if applied {
                            ciphertexts.push(r.digest);
                        }
                        true
                    }
                    TxKind::Rotate(rotate) if rotate.next.record == record => {
                        if applied {
                            ciphertexts.extend([rotate.next.digest, rotate.replaces]);
                        }
                        true
                    }
                    TxKind::Grant(grant) => grant.scope == GrantScope::Record(record),
                    // A re-sharing dealing of one of its versions: sub-shares of its key.
                    TxKind::Reshare(_) => tx.body.kind.sidecar_record() == Some(record),
                    _ => false,
                };
                if !names_record {
                    continue;
                }
                sidecars.extend(tx.body.sidecar_digest);
                let Some(bytes) = slot.as_mut() else { continue };
                if parse_purged(bytes).is_some() {
                    continue;
                }
                let facts = Sidecar::decode(bytes).map_err(|e| format!("block {h}: {e}"))?.facts();
                *bytes = purged_slot(&facts, bytes.len()).ok_or_else(|| format!("block {h}: facts do not fit"))?;
                changed = true;
                purged += 1;
            }
            if changed {
                self.app.rewrite_block(Height::new(h), &block)?;
            }
        }
        ciphertexts.sort();
        ciphertexts.dedup();
        let ciphertexts = self.owned_by(&record, ciphertexts)?;
        let db = &self.app.inner().db;
        db.delete_sidecars(&sidecars).map_err(|e| e.to_string())?;
        let shares = db.vault_erase(&record).map_err(|e| e.to_string())?;
        for digest in &ciphertexts {
            self.blobs.delete(digest).await.map_err(|e| e.to_string())?;
        }
        self.app.inner().metrics.erasures.inc();
        tracing::info!(
            height = height.get(),
            ciphertexts = ciphertexts.len(),
            sidecars = purged,
            shares,
            "erasure carried out"
        );
        Ok(())
    }
}
