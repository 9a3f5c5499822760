//! What a member does: enrol people, write and read records, grant, revoke, read the audit trail.
//! Every secret is made and opened here, on the member's side; validators see ciphertext,
//! wrapped keys and signed transactions only.
//!
//! This module holds the [`Session`], the sealing and opening of envelopes every domain shares,
//! and the signing, submitting and waiting of transactions; each domain has its own file:
//! - `identity`: keys and enrolment (new members, key rotation, recovery, custody, resolving names);
//! - `records`: writing, reading, rotating and erasing records;
//! - `consent`: grants, revocations, delegates and the chart key's epochs;
//! - `teams`: care teams and their keys;
//! - `directory`: the organisation's directory key (for records that describe no patient);
//! - `audit`: the audit trail, break-glass and its notes, legal holds, the review queue.

mod audit;
mod consent;
mod directory;
mod identity;
mod records;
mod teams;

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt;
use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::{self, DecryptionKey, EncryptionKey};
use medledger_ledger::api::TxStatus;
use medledger_ledger::{
    KeyHolder, KeySubject, Rejection, Sidecar, SidecarEnvelope, Transaction, TxBody, TxKind, TxOutcome,
};
use medledger_types::{ChainId, Height, MemberId, Nonce, Timestamp, TxId};
use zeroize::Zeroizing;

use crate::client::{COMMIT_TIMEOUT, Client};
use crate::error::{Result, SdkError};
use crate::home::{Home, Identity};

pub use consent::ChartHeads;
pub use identity::{ENROLMENT_REQUEST_BYTES_MAX, EnrolmentRequest, RecoveryRequest};
pub use records::{
    Opened, RECORD_PLAINTEXT_MAX, RecordKeys, RecordMetadata, SENSITIVE_LABELS, Sealed, describe, is_sensitive,
};

/// A committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub tx: TxId,
    pub height: Height,
    pub time: Timestamp,
}

pub struct Session {
    pub home: Home,
    pub client: Client,
    pub chain_id: ChainId,
    /// The next nonce of each signer this session has submitted for, so concurrent requests of
    /// one member (a gateway serving several applications) never reuse a nonce. Held while
    /// signing and submitting, so a signer's transactions reach the validator in nonce order.
    nonces: tokio::sync::Mutex<HashMap<MemberId, u64>>,
    /// The nonce lane this session signs in, drawn at random when it opens: a member's clients
    /// running at once (the CLI, a gateway, an import) keep separate counters on the ledger.
    lane: u16,
    /// The network's threshold release as last fetched, and when (see [`Session::release`]).
    pub(crate) release: std::sync::Mutex<Option<crate::release::Cached>>,
    /// The network's genesis once fetched and checked (see [`Session::genesis`]).
    pub(crate) genesis: std::sync::Mutex<Option<std::sync::Arc<medledger_ledger::Genesis>>>,
}

/// Chart secrets travel as `suite ‖ secret key`.
fn chart_secret(key: &DecryptionKey) -> Zeroizing<Vec<u8>> {
    let mut secret = Zeroizing::new(vec![key.suite() as u8]);
    secret.extend_from_slice(&key.to_bytes());
    secret
}

fn chart_key_from(secret: &[u8]) -> Result<DecryptionKey> {
    let (suite, bytes) = secret.split_first().ok_or_else(|| SdkError::Integrity("empty chart key".into()))?;
    let suite = match *suite {
        s if s == KemSuite::XWing as u8 => KemSuite::XWing,
        s if s == KemSuite::X25519 as u8 => KemSuite::X25519,
        _ => return Err(SdkError::Integrity("chart key of unknown suite".into())),
    };
    DecryptionKey::from_bytes(suite, bytes).map_err(|_| SdkError::Integrity("chart key does not decode".into()))
}

impl Session {
    pub fn open(home_dir: &Path, node: Option<String>) -> Result<Self> {
        let home = Home::open(home_dir)?;
        let config = home.config()?;
        let nodes = match node {
            Some(n) => vec![n],
            None => config.nodes.clone(),
        };
        let client = Client::with_ca(nodes, config.ca_pem.as_deref())?;
        client.observe_height(home.last_height());
        // Lane 0 is the validators' own; a session draws one of the others.
        let lane = 1 + u16::from_le_bytes(medledger_crypto::random_bytes()) % (medledger_types::NONCE_LANES - 1);
        Ok(Session {
            client,
            chain_id: config.chain_id,
            home,
            nonces: Default::default(),
            lane,
            release: Default::default(),
            genesis: Default::default(),
        })
    }

    fn seal_for(
        &self,
        to: &EncryptionKey,
        holder: KeyHolder,
        subject: KeySubject,
        secret: &[u8],
    ) -> Result<SidecarEnvelope> {
        let envelope = wrap::seal(to, secret, &subject.wrap_context(self.chain_id, holder)).map_err(SdkError::other)?;
        Ok(SidecarEnvelope { holder, subject, envelope })
    }

    /// `secret` wrapped under `subject` for each of `members` (`me` from the keys at hand, the
    /// others from their enrolled keys).
    async fn seal_for_members(
        &self,
        me: &Identity,
        members: &[MemberId],
        subject: KeySubject,
        secret: &[u8],
    ) -> Result<Vec<SidecarEnvelope>> {
        let mut envelopes = Vec::with_capacity(members.len());
        for member in members {
            let key = if *member == me.member {
                me.encryption.encryption_key().clone()
            } else {
                self.proved_member(me, member).await?.encryption_key
            };
            envelopes.push(self.seal_for(&key, KeyHolder::Member { member: *member }, subject, secret)?);
        }
        Ok(envelopes)
    }

    /// Opens an envelope wrapped for `me`, with their current key or an earlier one.
    fn open_mine(&self, me: &Identity, e: &SidecarEnvelope) -> Result<Zeroizing<Vec<u8>>> {
        let context = e.subject.wrap_context(self.chain_id, e.holder);
        me.decryption_keys()
            .find_map(|key| wrap::open(key, &e.envelope, &context).ok())
            .ok_or_else(|| SdkError::Integrity("a wrapped key does not open for this reader".into()))
    }

    fn open_envelope(&self, key: &DecryptionKey, e: &SidecarEnvelope) -> Result<Zeroizing<Vec<u8>>> {
        wrap::open(key, &e.envelope, &e.subject.wrap_context(self.chain_id, e.holder))
            .map_err(|_| SdkError::Integrity("a wrapped key does not open for this reader".into()))
    }

    /// The nonce lane this session signs in.
    pub fn lane(&self) -> u16 {
        self.lane
    }

    /// Signs, submits and waits for the commit of a transaction; a rejection becomes an error.
    ///
    /// A nonce conflict (another client of the same member that shares this session's lane took
    /// the nonce, refused at admission or rejected as stale at execution, where it changes
    /// nothing) is transient: the nonce is read again and the transaction signed anew, a few
    /// times, before anything is reported.
    pub async fn transact(&self, me: &Identity, kind: TxKind, sidecar: Option<Sidecar>) -> Result<Committed> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last_try = attempt >= NONCE_CONFLICT_TRIES;
            let mut submitted = self.submit_signed(vec![(me, kind.clone(), sidecar.clone())]).await?;
            let id = submitted.pop().ok_or_else(|| SdkError::Other("no reply for the transaction".into()))?;
            let id = match id {
                // submit_signed forgot the signer's cached nonce: the next try reads it again.
                Err(e) if e.contains("nonce") && !last_try => continue,
                Err(e) => return Err(SdkError::Usage(format!("refused: {e}"))),
                Ok(id) => id,
            };
            let status = self.client.wait(&id, COMMIT_TIMEOUT).await?;
            if let TxStatus::Committed { outcome: TxOutcome::Rejected { reason: Rejection::StaleNonce }, .. } = &status
                && !last_try
            {
                self.nonces.lock().await.remove(&me.member);
                continue;
            }
            if let TxStatus::Committed { height, .. } = &status {
                self.home.save_last_height(height.get());
            }
            return outcome(id, status);
        }
    }

    /// Signs transactions with each signer's next nonces (consecutive, in order) and submits
    /// them in batches; one id or refusal per transaction. A refusal makes the next call re-read
    /// that signer's nonce from the ledger.
    pub async fn submit_signed(
        &self,
        items: Vec<(&Identity, TxKind, Option<Sidecar>)>,
    ) -> Result<Vec<std::result::Result<TxId, String>>> {
        let mut nonces = self.nonces.lock().await;
        let mut signed = Vec::with_capacity(items.len());
        let mut signers = Vec::with_capacity(items.len());
        for (me, kind, sidecar) in items {
            let next = match nonces.get(&me.member) {
                Some(n) => *n,
                None => self.client.next_nonce(me, self.lane).await?.get(),
            };
            nonces.insert(me.member, next + 1);
            let body = TxBody {
                chain_id: self.chain_id,
                signer: me.member,
                nonce: Nonce::new(next),
                kind,
                sidecar_digest: sidecar.as_ref().map(Sidecar::digest),
            };
            signed.push((Transaction::sign(body, &me.signing), sidecar.map(|s| s.encode())));
            signers.push(me.member);
        }
        let mut ids = Vec::with_capacity(signed.len());
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0usize;
        let mut rest = signed.into_iter().peekable();
        while let Some((tx, sidecar)) = rest.next() {
            chunk_bytes += tx.encode().len() + sidecar.as_ref().map_or(0, Vec::len);
            chunk.push((tx, sidecar));
            if chunk.len() == SUBMIT_BATCH_MAX || chunk_bytes > SUBMIT_BATCH_BYTES || rest.peek().is_none() {
                match self.client.submit_batch(std::mem::take(&mut chunk)).await {
                    Ok(replies) => ids.extend(replies),
                    Err(e) => {
                        nonces.clear();
                        return Err(e);
                    }
                }
                chunk_bytes = 0;
            }
        }
        for (id, signer) in ids.iter().zip(&signers) {
            if id.is_err() {
                nonces.remove(signer);
            }
        }
        Ok(ids)
    }

    /// Signs and submits many transactions at once (each signer's in order, with consecutive
    /// nonces) and waits for all of them; one result per transaction, in order.
    pub async fn transact_batch(
        &self,
        items: Vec<(&Identity, TxKind, Option<Sidecar>)>,
    ) -> Result<Vec<Result<Committed>>> {
        let ids = self.submit_signed(items).await?;
        Ok(self.wait_all(ids).await)
    }

    /// Waits for submitted transactions (as [`Session::submit_signed`] returned them) to commit;
    /// one outcome per transaction, in order.
    pub async fn wait_all(&self, ids: Vec<std::result::Result<TxId, String>>) -> Vec<Result<Committed>> {
        let waits = ids.into_iter().map(|id| async move {
            let id = id.map_err(|e| SdkError::Usage(format!("refused: {e}")))?;
            let status = self.client.wait(&id, COMMIT_TIMEOUT).await?;
            outcome(id, status)
        });
        let results: Vec<Result<Committed>> = futures::stream::iter(waits).buffered(WAITS_IN_FLIGHT).collect().await;
        if let Some(height) = results.iter().filter_map(|r| r.as_ref().ok()).map(|c| c.height.get()).max() {
            self.home.save_last_height(height);
        }
        results
    }
}

/// Every item of a paged list, reading `page(after)` from the start until a page names no next
/// cursor.
async fn all_pages<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>>,
{
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let (more, next) = page(after.take()).await?;
        items.extend(more);
        match next {
            Some(next) => after = Some(next),
            None => return Ok(items),
        }
    }
}

/// How many times [`Session::transact`] signs a transaction anew after a nonce conflict.
const NONCE_CONFLICT_TRIES: u32 = 4;

/// The most transactions per batch request (the node's limit is 1000).
const SUBMIT_BATCH_MAX: usize = 500;
/// The most bytes of transactions and sidecars per batch request.
const SUBMIT_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Commit waits (long polls) in flight at once.
const WAITS_IN_FLIGHT: usize = 64;

/// A committed transaction's outcome; a rejection becomes an error.
fn outcome(id: TxId, status: TxStatus) -> Result<Committed> {
    match status {
        TxStatus::Committed { height, time, outcome: TxOutcome::Applied, .. } => Ok(Committed { tx: id, height, time }),
        TxStatus::Committed { outcome: TxOutcome::Rejected { reason }, height, .. } => {
            if reason.is_access_denial() {
                Err(SdkError::Denied(format!("{reason} (recorded at height {height})")))
            } else {
                Err(SdkError::Usage(format!("rejected: {reason} (height {height})")))
            }
        }
        _ => Err(SdkError::Other("transaction did not commit".into())),
    }
}
