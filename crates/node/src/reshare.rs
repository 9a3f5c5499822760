//! This validator's part in re-sharing (DESIGN §6a; the protocol is in
//! `medledger_ledger::exec::reshare`'s docs): when the validator set changes, every record version
//! whose shares an earlier set holds is re-shared to the current one.
//!
//! - **Deal**: for each such version of which this validator holds a share, it deals the share
//!   afresh to the current set (fresh polynomials, sub-shares wrapped for the current share keys)
//!   and keeps what it dealt in its vault, to answer complaints.
//! - **Check**: when a dealing commits, this validator (if in the current set) opens its sub-shares
//!   and checks them against the dealing's commitments; good ones go to its vault, bad ones get a
//!   complaint. A complaint about its own dealing is answered by revealing the sub-shares it dealt
//!   the complainer (the ledger checks them).
//! - **Finish**: once enough dealings have settled, a validator of the current set names them
//!   (validators take turns, a few seconds apart, so normally one finish is sent); when the finish
//!   commits, each new holder combines its sub-shares from those dealers into its new share, and
//!   every validator deletes its share of the earlier generation and what it kept for re-sharing.
//!
//! The work list is rebuilt from the ledger whenever the validator set it was built for is no
//! longer current, and at start; a step whose transaction is lost is taken again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::threshold::{self as vss, SHARE_BYTES, Share};
use medledger_ledger::state::{RecordEntry, keys, last_nonce, read};
use medledger_ledger::threshold::{
    Complaint, Dealing, RESHARE_COMPLAINT_WINDOW_MS, SHARES_SECRET_BYTES, ThresholdConfig, ThresholdShares,
    WrappedShare, reshare_context,
};
use medledger_ledger::{Reshare, ReshareStep, Sidecar, Transaction, TxBody, TxKind, validator_member_id};
use medledger_types::{Nonce, RecordId, Trailing, TxId};
use zeroize::Zeroizing;

use crate::janitor::Janitor;
use crate::keyring::Keyring;

/// The nonce lane of this validator's re-sharing transactions (share keys use lane 0).
const LANE: u16 = 1;
/// Most re-sharing transactions submitted at once.
const SUBMIT_PER_TICK: usize = 64;
/// How far apart the validators of the current set take their turn to send a finish.
const FINISH_TURN_MS: u64 = 3_000;
/// How often pending re-sharing is looked at while there is some.
const TICK: Duration = Duration::from_secs(1);
/// Vault row suffixes: a sub-share received from a dealer, and this validator's own dealing.
const SUB: u8 = b'S';
const DEALT: u8 = b'D';

/// What the re-sharing worker remembers between ticks.
#[derive(Default)]
pub struct ReshareWork {
    /// The validator set `pending` was built for.
    scanned_for: Option<Vec<u32>>,
    /// Record versions whose shares an earlier set holds.
    pending: BTreeSet<(RecordId, u32)>,
    /// Versions this validator cannot deal (no vaulted share: its disk was wiped, say); the other
    /// holders deal them. Tried again when the set changes or the validator restarts.
    cannot_deal: BTreeSet<(RecordId, u32)>,
    /// This validator's re-sharing transactions, by version and step, while in its mempool.
    submitted: BTreeMap<(RecordId, u32, u8), TxId>,
    /// The next nonce counter of [`LANE`] (at least the ledger's last plus one).
    next_counter: u64,
}

/// What this validator dealt of one version: the set and each holder's two sub-shares.
#[derive(BorshSerialize, BorshDeserialize)]
struct Dealt {
    validators: Vec<u32>,
    subs: Vec<Vec<u8>>,
}

/// A received sub-share row: the dealer's old participant id, this validator's new one, and the
/// two sub-shares (empty until a complaint is answered, when they did not verify).
struct Received {
    dealer_id: u8,
    my_id: u8,
    shares: Option<Zeroizing<Vec<u8>>>,
}

impl Received {
    fn seal(&self, keyring: &Keyring, record: &RecordId, version: u32) -> Result<Vec<u8>, String> {
        let mut plain = Zeroizing::new(vec![self.dealer_id, self.my_id]);
        if let Some(shares) = &self.shares {
            plain.extend_from_slice(shares);
        }
        keyring.seal_share(record, version, &plain)
    }

    fn open(keyring: &Keyring, record: &RecordId, version: u32, row: &[u8]) -> Option<Self> {
        let plain = keyring.open_share(record, version, row)?;
        let (&[dealer_id, my_id], rest) = plain.split_first_chunk::<2>()?;
        let shares = match rest.len() {
            0 => None,
            SHARES_SECRET_BYTES => Some(Zeroizing::new(rest.to_vec())),
            _ => return None,
        };
        Some(Self { dealer_id, my_id, shares })
    }
}

fn sub_suffix(dealer: u32) -> Vec<u8> {
    let mut suffix = vec![SUB];
    suffix.extend_from_slice(&dealer.to_be_bytes());
    suffix
}

fn step_tag(step: &ReshareStep) -> u8 {
    match step {
        ReshareStep::Deal { .. } => b'D',
        ReshareStep::Complain { .. } => b'C',
        ReshareStep::Answer { .. } => b'A',
        ReshareStep::Finish { .. } => b'F',
    }
}

impl Janitor {
    /// Looks at the record versions waiting for re-sharing: deals this validator's shares and
    /// sends finishes that are due. Returns when to look again (`None`: nothing waits).
    pub(crate) fn reshare_tick(&self) -> Result<Option<Duration>, String> {
        let Some(keyring) = &self.keyring else { return Ok(None) };
        let db = &self.app.inner().db;
        let view = db.view(&[]).map_err(|e| e.to_string())?;
        let Some(config) = read::<ThresholdConfig>(&view, keys::THRESHOLD) else { return Ok(None) };
        let mut work = self.reshare.lock().expect("reshare lock");
        work.submitted.retain(|_, id| self.app.has_pending(id));
        if work.scanned_for.as_ref() != Some(&config.validators) {
            work.pending.clear();
            work.cannot_deal.clear();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let batch = view.scan(keys::RECORD_VERSION, after.as_deref(), 1024).map_err(|e| e.to_string())?;
                for (_, value) in &batch {
                    if let Ok(entry) = borsh::from_slice::<RecordEntry>(value)
                        && entry.threshold.0.as_ref().is_some_and(|info| !info.held_by(&config))
                    {
                        work.pending.insert((entry.record, entry.version));
                    }
                }
                if batch.len() < 1024 {
                    break;
                }
                after = batch.last().map(|(k, _)| k.clone());
            }
            if !work.pending.is_empty() {
                tracing::info!(versions = work.pending.len(), "record versions to re-share to the current set");
            }
            work.scanned_for = Some(config.validators.clone());
        }
        let now = crate::app::wall_clock_ms();
        let mut wake = None;
        let mut steps: Vec<(Reshare, Option<Sidecar>)> = Vec::new();
        let mut finished = Vec::new();
        let mut undealt = Vec::new();
        for &(record, version) in &work.pending {
            if steps.len() >= SUBMIT_PER_TICK {
                break;
            }
            let info = read::<RecordEntry>(&view, &keys::record_version(&record, version)).and_then(|e| e.threshold.0);
            let Some(info) = info.filter(|i| !i.held_by(&config)) else {
                finished.push((record, version));
                continue;
            };
            wake = Some(TICK);
            let submitted = |tag: u8| work.submitted.contains_key(&(record, version, tag));
            let can_deal = !work.cannot_deal.contains(&(record, version));
            let dealing = |dealer: u32| {
                read::<Dealing>(&view, &keys::reshare_dealing(&record, version, dealer))
                    .filter(|d| d.validators == config.validators)
            };
            if let Some(position) = info.position(self.index)
                && can_deal
                && dealing(self.index).is_none()
                && !submitted(b'D')
            {
                match self.deal(keyring, &config, record, version, position) {
                    Ok(step) => steps.push(step),
                    Err(e) => {
                        tracing::warn!(version, error = %e, "cannot deal this validator's share; the other holders will");
                        undealt.push((record, version));
                    }
                }
            }
            let Some(rank) = config.position(self.index) else { continue };
            let mut ready: Vec<(u32, u64)> = Vec::new();
            for dealer in &info.validators {
                let Some(d) = dealing(*dealer) else { continue };
                let open = config.validators.iter().any(|holder| {
                    read::<Complaint>(&view, &keys::reshare_complaint(&record, version, *dealer, *holder))
                        .is_some_and(|c| !c.answered)
                });
                if !open {
                    ready.push((*dealer, d.at.get().saturating_add(RESHARE_COMPLAINT_WINDOW_MS)));
                }
            }
            if ready.len() < usize::from(info.threshold) || submitted(b'F') {
                continue;
            }
            ready.truncate(usize::from(info.threshold));
            let settled = ready.iter().map(|(_, at)| *at).max().unwrap_or(0);
            let due = settled.saturating_add(FINISH_TURN_MS.saturating_mul(rank as u64));
            if now >= due {
                let dealers = ready.into_iter().map(|(d, _)| d).collect();
                steps.push((
                    Reshare { validator: self.index, record, version, step: ReshareStep::Finish { dealers } },
                    None,
                ));
            }
        }
        for done in finished {
            work.pending.remove(&done);
            work.cannot_deal.remove(&done);
        }
        work.cannot_deal.extend(undealt);
        drop(view);
        self.submit_steps(&mut work, steps)?;
        Ok(wake)
    }

    /// This validator's dealing of its share of `record`/`version` (held at `position`) to the
    /// current set; what it dealt is kept in the vault, to answer complaints.
    fn deal(
        &self,
        keyring: &Keyring,
        config: &ThresholdConfig,
        record: RecordId,
        version: u32,
        position: usize,
    ) -> Result<(Reshare, Option<Sidecar>), String> {
        let db = &self.app.inner().db;
        let row = db.vault_get(&record, version).map_err(|e| e.to_string())?.ok_or("no vaulted share")?;
        let opened = keyring.open_share(&record, version, &row).ok_or("the vaulted share does not open")?;
        if opened.len() != SHARES_SECRET_BYTES {
            return Err("the vaulted share is malformed".into());
        }
        let thr = Share::from_slice(&opened[..SHARE_BYTES]).map_err(|e| e.to_string())?;
        let env = Share::from_slice(&opened[SHARE_BYTES..]).map_err(|e| e.to_string())?;
        let n = config.validators.len();
        let (thr_subs, verifier) = vss::reshare(&thr, usize::from(config.threshold), n).map_err(|e| e.to_string())?;
        let (env_subs, emergency) =
            vss::reshare(&env, usize::from(config.emergency_threshold), n).map_err(|e| e.to_string())?;
        let chain_id = self.app.inner().chain_id;
        let mut shares = Vec::with_capacity(n);
        let mut subs = Vec::with_capacity(n);
        for (j, key) in config.share_keys.iter().enumerate() {
            let mut both = Zeroizing::new(thr_subs[j].as_bytes().to_vec());
            both.extend_from_slice(env_subs[j].as_bytes());
            let position = u32::try_from(j).map_err(|e| e.to_string())?;
            let context = reshare_context(chain_id, record, version, config.epoch, self.index, position);
            shares.push(WrappedShare {
                envelope: medledger_crypto::wrap::seal(key, &both, &context).map_err(|e| e.to_string())?,
            });
            subs.push(both.to_vec());
        }
        let dealing = ThresholdShares::for_config(config, &verifier, &emergency, shares);
        let dealt = Zeroizing::new(
            borsh::to_vec(&Dealt { validators: config.validators.clone(), subs }).map_err(|e| e.to_string())?,
        );
        let sealed = keyring.seal_share(&record, version, &dealt)?;
        db.vault_put_rows(&[(record, version, vec![DEALT], Some(sealed))]).map_err(|e| e.to_string())?;
        let participant = u8::try_from(position + 1).map_err(|e| e.to_string())?;
        let sidecar = Sidecar { envelopes: Vec::new(), metadata: None, threshold: Trailing(Some(dealing)) };
        Ok((Reshare { validator: self.index, record, version, step: ReshareStep::Deal { participant } }, Some(sidecar)))
    }

    /// Signs and submits re-sharing steps with consecutive nonces of [`LANE`], and hands them to
    /// the peers.
    fn submit_steps(&self, work: &mut ReshareWork, steps: Vec<(Reshare, Option<Sidecar>)>) -> Result<(), String> {
        if steps.is_empty() {
            return Ok(());
        }
        let signer = validator_member_id(&self.consensus_key.verifying_key());
        let last = {
            let view = self.app.inner().db.view(&[]).map_err(|e| e.to_string())?;
            last_nonce(&view, &signer, LANE)
        };
        let mut counter = work.next_counter.max(if last.lane() == LANE { last.counter() + 1 } else { 1 });
        let mut batch = Vec::with_capacity(steps.len());
        let mut keys = Vec::with_capacity(steps.len());
        for (reshare, sidecar) in steps {
            let nonce = Nonce::in_lane(LANE, counter).ok_or("nonces exhausted")?;
            counter += 1;
            let bytes = sidecar.map(|s| s.encode());
            let body = TxBody {
                chain_id: self.app.inner().chain_id,
                signer,
                nonce,
                sidecar_digest: bytes.as_ref().map(|b| medledger_types::Digest::new(medledger_crypto::sha256(b))),
                kind: TxKind::Reshare(reshare.clone()),
            };
            keys.push((reshare.record, reshare.version, step_tag(&reshare.step)));
            batch.push((Transaction::sign(body, &self.consensus_key), bytes));
        }
        work.next_counter = counter;
        let results = self.app.submit_many(batch.clone());
        for ((key, (tx, sidecar)), result) in keys.into_iter().zip(batch).zip(results) {
            match result {
                Ok((id, _)) => {
                    work.submitted.insert(key, id);
                    if let Some(forwarder) = &self.forwarder {
                        forwarder.forward(medledger_ledger::api::SubmitRequest { tx, sidecar });
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a re-sharing step was not admitted"),
            }
        }
        Ok(())
    }

    /// What a committed, applied re-sharing step asks of this validator (see the module docs).
    pub(crate) fn reshare_seen(&self, keyring: &Keyring, r: &Reshare, sidecar: Option<&[u8]>) -> Result<(), String> {
        let db = &self.app.inner().db;
        let (record, version) = (r.record, r.version);
        match &r.step {
            ReshareStep::Deal { participant } => {
                // A purged sidecar (the record was erased since) holds nothing to check.
                let Some(shares) = sidecar.and_then(|b| Sidecar::decode(b).ok()).and_then(|s| s.threshold.0) else {
                    return Ok(());
                };
                let Some(position) = shares.position(self.index) else { return Ok(()) };
                let my_id = u8::try_from(position + 1).map_err(|e| e.to_string())?;
                let context = reshare_context(
                    self.app.inner().chain_id,
                    record,
                    version,
                    shares.epoch,
                    r.validator,
                    u32::try_from(position).map_err(|e| e.to_string())?,
                );
                let opened =
                    medledger_crypto::wrap::open(&keyring.current(), &shares.shares[position].envelope, &context)
                        .ok()
                        .filter(|o| shares.opened_fits(position, o));
                let good = opened.is_some();
                let received = Received { dealer_id: *participant, my_id, shares: opened };
                let row = received.seal(keyring, &record, version)?;
                db.vault_put_rows(&[(record, version, sub_suffix(r.validator), Some(row))])
                    .map_err(|e| e.to_string())?;
                if !good {
                    tracing::warn!(version, dealer = r.validator, "sub-shares that do not verify; complaining");
                    let step = ReshareStep::Complain { dealer: r.validator };
                    let mut work = self.reshare.lock().expect("reshare lock");
                    self.submit_steps(
                        &mut work,
                        vec![(Reshare { validator: self.index, record, version, step }, None)],
                    )?;
                }
            }
            ReshareStep::Complain { dealer } if *dealer == self.index => {
                let Some((_, row)) = db.vault_rows(&record, version, &[DEALT]).map_err(|e| e.to_string())?.pop() else {
                    return Err("a complaint about a dealing this validator no longer keeps".into());
                };
                let plain = keyring.open_share(&record, version, &row).ok_or("the kept dealing does not open")?;
                let dealt = Dealt::try_from_slice(&plain).map_err(|e| e.to_string())?;
                let position =
                    dealt.validators.iter().position(|v| *v == r.validator).ok_or("complainer not dealt to")?;
                let shares = dealt.subs.get(position).cloned().ok_or("complainer not dealt to")?;
                let step = ReshareStep::Answer { holder: r.validator, shares };
                let mut work = self.reshare.lock().expect("reshare lock");
                self.submit_steps(&mut work, vec![(Reshare { validator: self.index, record, version, step }, None)])?;
            }
            ReshareStep::Answer { holder, shares } if *holder == self.index => {
                let suffix = sub_suffix(r.validator);
                let rows = db.vault_rows(&record, version, &suffix).map_err(|e| e.to_string())?;
                let Some(mut received) =
                    rows.first().and_then(|(_, row)| Received::open(keyring, &record, version, row))
                else {
                    return Ok(());
                };
                received.shares = Some(Zeroizing::new(shares.clone()));
                let row = received.seal(keyring, &record, version)?;
                db.vault_put_rows(&[(record, version, suffix, Some(row))]).map_err(|e| e.to_string())?;
            }
            ReshareStep::Finish { dealers } => self.reshare_finished(keyring, record, version, dealers)?,
            _ => {}
        }
        Ok(())
    }

    /// A finished re-sharing: this validator's new share from the chosen dealers' sub-shares (if it
    /// is a new holder), in place of its old one; what re-sharing kept goes.
    fn reshare_finished(
        &self,
        keyring: &Keyring,
        record: RecordId,
        version: u32,
        dealers: &[u32],
    ) -> Result<(), String> {
        let db = &self.app.inner().db;
        let mut rows: Vec<medledger_store::VaultRow> = Vec::new();
        let mut thr = Vec::new();
        let mut env = Vec::new();
        let mut my_ids = BTreeSet::new();
        for dealer in dealers {
            let suffix = sub_suffix(*dealer);
            let received = db
                .vault_rows(&record, version, &suffix)
                .map_err(|e| e.to_string())?
                .first()
                .and_then(|(_, row)| Received::open(keyring, &record, version, row));
            if let Some(Received { dealer_id, my_id, shares: Some(shares) }) = received {
                my_ids.insert(my_id);
                thr.push((dealer_id, Share::from_slice(&shares[..SHARE_BYTES]).map_err(|e| e.to_string())?));
                env.push((dealer_id, Share::from_slice(&shares[SHARE_BYTES..]).map_err(|e| e.to_string())?));
            }
        }
        let new = match (my_ids.len(), thr.len() == dealers.len()) {
            (1, true) => {
                let my_id = *my_ids.first().expect("one id");
                let thr = vss::combine_subshares(&thr, my_id).map_err(|e| e.to_string())?;
                let env = vss::combine_subshares(&env, my_id).map_err(|e| e.to_string())?;
                let mut both = Zeroizing::new(thr.as_bytes().to_vec());
                both.extend_from_slice(env.as_bytes());
                Some(keyring.seal_share(&record, version, &both)?)
            }
            (0, _) => None,
            _ => {
                tracing::warn!(
                    version,
                    "missing sub-shares of a finished re-sharing; this validator holds no share of it"
                );
                None
            }
        };
        // The old generation's share goes, replaced by the new one where this validator holds one.
        rows.push((record, version, Vec::new(), new));
        for (suffix, _) in db.vault_rows(&record, version, &[SUB]).map_err(|e| e.to_string())? {
            rows.push((record, version, suffix, None));
        }
        rows.push((record, version, vec![DEALT], None));
        db.vault_put_rows(&rows).map_err(|e| e.to_string())?;
        self.app.reshared();
        tracing::info!(version, "re-sharing finished");
        Ok(())
    }
}
