//! What a member does: enrol people, write and read records, grant, revoke, read the audit trail.
//! Every secret is made and opened here, on the member's side; validators see ciphertext,
//! wrapped keys and signed transactions only.

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt;
use medledger_crypto::payload::{self, DataKey};
use medledger_crypto::suite::{KemSuite, PayloadSuite};
use medledger_crypto::threshold;
use medledger_crypto::wrap::{self, DecryptionKey, EncryptionKey};
use medledger_ledger::api::{AccessBundle, TxStatus};
use medledger_ledger::state::{AuditEvent, ChartEntry, FlaggedEntry, MemberStatus, RecordEntry, TeamEntry};
use medledger_ledger::{
    BreakGlass, CustodyRelease, Delegate, EmergencyReason, Enroll, Erase, Grant, GrantScope, KeyChange, KeyHolder,
    KeySubject, LegalHold, NewChartEpoch, RecordAccess, Recovery, RecoveryAction, RegisterRecord, Revoke, Rotate,
    RotateKeys, Sidecar, SidecarEnvelope, TeamAdd, TeamCreate, TeamRemove, Transaction, TxBody, TxKind, TxOutcome,
    claim_code_hash,
};
use medledger_types::limits::{BREAK_GLASS_NOTE_BYTES_MAX, NOTE_READERS_MAX};
use medledger_types::{ChainId, Digest, Height, MemberId, Nonce, OrgId, PurposeOfUse, RecordId, Role, Timestamp, TxId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::client::{COMMIT_TIMEOUT, Client};
use crate::error::{Result, SdkError};
use crate::home::{Contact, Home, Identity};
use crate::recovery::{ClaimCode, RecoveryCode};

/// Largest record accepted by `put` through the API (the node's upload limit, minus overhead).
pub const RECORD_PLAINTEXT_MAX: usize = 64 * 1024 * 1024 - 64 * 1024;

/// Metadata kept encrypted beside a record; listing and searching happen on the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMetadata {
    /// FHIR resourceType, when the record is a FHIR resource.
    pub resource_type: Option<String>,
    pub content_type: String,
    pub size_bytes: u64,
}

/// A committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub tx: TxId,
    pub height: Height,
    pub time: Timestamp,
}

/// A decrypted record.
pub struct Opened {
    pub record: RecordEntry,
    pub access: Committed,
    pub metadata: Option<RecordMetadata>,
    pub plaintext: Zeroizing<Vec<u8>>,
}

pub struct Session {
    pub home: Home,
    pub client: Client,
    pub chain_id: ChainId,
    /// The next nonce of each signer this session has submitted for, so concurrent requests of
    /// one member (a gateway serving several applications) never reuse a nonce. Held while
    /// signing and submitting, so a signer's transactions reach the validator in nonce order.
    nonces: tokio::sync::Mutex<HashMap<MemberId, u64>>,
    /// The network's threshold release as last fetched, and when (see [`Session::release`]).
    pub(crate) release: std::sync::Mutex<Option<crate::release::Cached>>,
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
        Ok(Session { client, chain_id: config.chain_id, home, nonces: Default::default(), release: Default::default() })
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
                self.client.member(member).await?.encryption_key
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

    /// Signs, submits and waits for the commit of a transaction; a rejection becomes an error.
    pub async fn transact(&self, me: &Identity, kind: TxKind, sidecar: Option<Sidecar>) -> Result<Committed> {
        let mut submitted = self.submit_signed(vec![(me, kind.clone(), sidecar.clone())]).await?;
        if let Some(Err(e)) = submitted.first()
            && e.contains("nonce")
        {
            // Another client of the same member moved its nonce on; submit_signed re-read it.
            submitted = self.submit_signed(vec![(me, kind, sidecar)]).await?;
        }
        let id = submitted.pop().ok_or_else(|| SdkError::Other("no reply for the transaction".into()))?;
        let id = id.map_err(|e| SdkError::Usage(format!("refused: {e}")))?;
        let status = self.client.wait(&id, COMMIT_TIMEOUT).await?;
        if let TxStatus::Committed { height, .. } = &status {
            self.home.save_last_height(height.get());
        }
        outcome(id, status)
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
                None => self.client.next_nonce(&me.member).await?.get(),
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

    /// Makes a member's keys here and has `admin` enrol them. Returns the new identity (saved in
    /// the home keystore under `alias`).
    pub async fn create_identity(
        &self,
        admin: &Identity,
        alias: &str,
        role: Role,
        org: OrgId,
        display_name: Option<String>,
        passphrase: &[u8],
    ) -> Result<(Identity, RecoveryCode)> {
        crate::home::check_alias(alias)?;
        if self.home.has_identity(alias) || self.home.book()?.contains_key(alias) {
            return Err(SdkError::Usage("that name is already taken in this home".to_string()));
        }
        let code = RecoveryCode::generate();
        let member = MemberId::new(medledger_crypto::random_bytes());
        let identity = Identity::from_recovery_code(alias, member, role, org, KemSuite::default(), &code)?;
        let (kind, sidecar) = self.enrolment(&identity, display_name, false)?;
        self.transact(admin, kind, sidecar).await?;
        self.home.save_identity(&identity, passphrase)?;
        Ok((identity, code))
    }

    /// `me` replaces their keys with new ones (derived from a new recovery code, returned), signing
    /// with the current ones; a patient wraps their chart's current key for the new encryption
    /// key. The new identity keeps the earlier encryption keys for the envelopes made for them.
    pub async fn rotate_keys(&self, me: &Identity, reason: KeyChange) -> Result<(Identity, RecoveryCode, Committed)> {
        let code = RecoveryCode::generate();
        let mut next =
            Identity::from_recovery_code(&me.alias, me.member, me.role, me.org.clone(), me.encryption.suite(), &code)?;
        next.previous = me
            .decryption_keys()
            .map(|k| DecryptionKey::from_bytes(k.suite(), &k.to_bytes()))
            .collect::<std::result::Result<_, _>>()
            .map_err(SdkError::other)?;
        let sidecar = if me.role == Role::Patient {
            let (epoch, chart) = self.chart_key(me, &me.member).await?;
            let holder = KeyHolder::Member { member: me.member };
            let subject = KeySubject::Chart { patient: me.member, epoch };
            let envelope = self.seal_for(next.encryption.encryption_key(), holder, subject, &chart_secret(&chart))?;
            Some(Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() })
        } else {
            None
        };
        let kind = TxKind::RotateKeys(RotateKeys {
            signing_key: next.signing.verifying_key(),
            encryption_key: next.encryption.encryption_key().clone(),
            reason,
        });
        let committed = self.transact(me, kind, sidecar).await?;
        Ok((next, code, committed))
    }

    /// Restores `contact`'s keys from their recovery code (they must be the member's keys on the
    /// ledger) and at once replaces them (the lost device holds them too).
    pub async fn recover_with_code(
        &self,
        alias: &str,
        contact: &Contact,
        code: &RecoveryCode,
    ) -> Result<(Identity, RecoveryCode, Committed)> {
        let entry = self.client.member(&contact.member).await?;
        let restored = Identity::from_recovery_code(
            alias,
            contact.member,
            entry.role,
            entry.org,
            entry.encryption_key.suite,
            code,
        )?;
        if restored.signing.verifying_key() != entry.signing_key {
            return Err(SdkError::Usage("this recovery code is not for the member's current keys".into()));
        }
        self.rotate_keys(&restored, KeyChange::RecoveryCode).await
    }

    /// An admin releases a patient from their organisation's custody: a one-time code (returned,
    /// for the patient, in person) and a claim file holding the custody keys sealed under it.
    /// The custody copy is destroyed once the release is on the ledger.
    pub async fn release_custody(
        &self,
        admin: &Identity,
        custody: &crate::Custody<'_>,
        member: &MemberId,
    ) -> Result<(ClaimCode, Vec<u8>, Committed)> {
        let patient = custody.load(member)?;
        let code = ClaimCode::generate();
        let file = crate::custody::claim_file(&patient, &code)?;
        let kind =
            TxKind::CustodyRelease(CustodyRelease { member: *member, code_hash: claim_code_hash(member, &code.0) });
        let committed = self.transact(admin, kind, None).await?;
        custody.destroy(member)?;
        Ok((code, file, committed))
    }

    /// A patient claims their identity from a claim file and its one-time code: new keys (with
    /// their own recovery code) replace the custody keys, which stay only to open what was
    /// wrapped for them.
    pub async fn claim(
        &self,
        alias: &str,
        file: &[u8],
        code: &ClaimCode,
    ) -> Result<(Identity, RecoveryCode, Committed)> {
        let custody = crate::custody::open_claim_file(alias, file, code)?;
        self.rotate_keys(&custody, KeyChange::Claim { code: code.0 }).await
    }

    /// An admin of the member's organisation asks for their lost keys to be replaced by the
    /// public keys of `request` (made on the member's new device); it takes the network's delay.
    pub async fn request_recovery(&self, admin: &Identity, request: &RecoveryRequest) -> Result<Committed> {
        let kind = TxKind::Recovery(Recovery {
            member: request.member,
            action: RecoveryAction::Request {
                signing_key: request.signing_key,
                encryption_key: request.encryption_key.clone(),
            },
        });
        self.transact(admin, kind, None).await
    }

    /// The member cancels a recovery they did not ask for (with their current keys), or completes
    /// theirs (with the new keys, `me` being the new device's identity).
    pub async fn finish_recovery(&self, me: &Identity, complete: bool) -> Result<Committed> {
        let action = if complete { RecoveryAction::Complete } else { RecoveryAction::Cancel };
        self.transact(me, TxKind::Recovery(Recovery { member: me.member, action }), None).await
    }

    /// The Enroll transaction (and, for a patient, the sidecar wrapping their first chart key for
    /// them) of an identity made on this side.
    pub fn enrolment(
        &self,
        identity: &Identity,
        display_name: Option<String>,
        custodial: bool,
    ) -> Result<(TxKind, Option<Sidecar>)> {
        let role = identity.role;
        let (chart_key, sidecar) = if role == Role::Patient {
            let chart = wrap::generate(KemSuite::default());
            let holder = KeyHolder::Member { member: identity.member };
            let subject = KeySubject::Chart { patient: identity.member, epoch: 0 };
            let envelope =
                self.seal_for(identity.encryption.encryption_key(), holder, subject, &chart_secret(&chart))?;
            (
                Some(chart.encryption_key().clone()),
                Some(Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() }),
            )
        } else {
            (None, None)
        };
        let kind = TxKind::Enroll(Enroll {
            member: identity.member,
            org: identity.org.clone(),
            role,
            signing_key: identity.signing.verifying_key(),
            encryption_key: identity.encryption.encryption_key().clone(),
            display_name: if role == Role::Patient { None } else { display_name },
            chart_key,
            custodial,
        });
        Ok((kind, sidecar))
    }

    /// The Grant of a patient's whole chart to `to` (`write` for a doctor's treatment
    /// relationship), signed by the patient: the chart key's secret wrapped for the grantee.
    async fn grant_all(
        &self,
        me: &Identity,
        patient: &MemberId,
        to: &MemberId,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<(TxKind, Sidecar)> {
        let (epoch, envelope) = self.chart_key_for(me, patient, to).await?;
        let kind = TxKind::Grant(Grant {
            patient: *patient,
            grantee: *to,
            scope: GrantScope::All,
            write,
            expires_at,
            chart_epoch: Some(epoch),
            new_chart: None,
        });
        Ok((kind, Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() }))
    }

    /// An `--all` grant to a care team: the chart's current key wrapped for the team's (the
    /// records so far), and the chart's next epoch for everyone else who holds it (records from
    /// now on are wrapped for the team's own key, so a member it removes holds no key to them).
    async fn grant_all_to_team(
        &self,
        me: &Identity,
        patient: &MemberId,
        team: &TeamEntry,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<(TxKind, Sidecar)> {
        let (epoch, chart) = self.chart_key(me, patient).await?;
        let holder = KeyHolder::Team { team: team.team, epoch: team.epoch };
        let subject = KeySubject::Chart { patient: *patient, epoch };
        let to_team = self.seal_for(&team.public_key, holder, subject, &chart_secret(&chart))?;
        let (new_chart, mut sidecar) = self.next_chart_epoch(me, patient, None, None).await?;
        sidecar.envelopes.insert(0, to_team);
        let kind = TxKind::Grant(Grant {
            patient: *patient,
            grantee: team.team,
            scope: GrantScope::All,
            write,
            expires_at,
            chart_epoch: Some(epoch),
            new_chart: Some(new_chart),
        });
        Ok((kind, sidecar))
    }

    /// Care team `team`'s current key, from `me`'s envelope (a member's).
    async fn team_key(&self, me: &Identity, team: &MemberId) -> Result<(TeamEntry, DecryptionKey)> {
        let mut entry = self.client.team(team).await?.ok_or_else(|| SdkError::NotFound("no such care team".into()))?;
        let envelope = self.client.team_envelope(me, team).await?;
        let KeySubject::Team { team: t, epoch } = envelope.subject else {
            return Err(SdkError::Integrity("team envelope of the wrong kind".into()));
        };
        if t != *team || epoch != entry.epoch {
            // The team moved on between the two reads: its entry again.
            entry = self.client.team(team).await?.ok_or_else(|| SdkError::NotFound("no such care team".into()))?;
        }
        Ok((entry, chart_key_from(&self.open_mine(me, &envelope)?)?))
    }

    /// A doctor creates a care team of themself and `members`; returns its id.
    pub async fn team_create(&self, me: &Identity, members: &[MemberId]) -> Result<(MemberId, Committed)> {
        let team = MemberId::new(medledger_crypto::random_bytes());
        let key = wrap::generate(KemSuite::default());
        let secret = chart_secret(&key);
        let mut all = members.to_vec();
        all.push(me.member);
        all.sort();
        all.dedup();
        let envelopes = self.seal_for_members(me, &all, KeySubject::Team { team, epoch: 0 }, &secret).await?;
        let kind = TxKind::TeamCreate(TeamCreate { team, public_key: key.encryption_key().clone(), members: all });
        let sidecar = Sidecar { envelopes, metadata: None, threshold: Default::default() };
        Ok((team, self.transact(me, kind, Some(sidecar)).await?))
    }

    /// A doctor of `team` adds `member`: the team's current key wrapped for them.
    pub async fn team_add(&self, me: &Identity, team: &MemberId, member: &MemberId) -> Result<Committed> {
        let (entry, key) = self.team_key(me, team).await?;
        let to = self.client.member(member).await?.encryption_key;
        let subject = KeySubject::Team { team: *team, epoch: entry.epoch };
        let envelope = self.seal_for(&to, KeyHolder::Member { member: *member }, subject, &chart_secret(&key))?;
        let kind = TxKind::TeamAdd(TeamAdd { team: *team, member: *member });
        self.transact(
            me,
            kind,
            Some(Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() }),
        )
        .await
    }

    /// A doctor of `team` removes `member` (or `me` leaves): a fresh key for the remaining members,
    /// with the current key wrapped for it.
    pub async fn team_remove(&self, me: &Identity, team: &MemberId, member: &MemberId) -> Result<Committed> {
        let (entry, key) = self.team_key(me, team).await?;
        let epoch = entry.epoch.checked_add(1).ok_or_else(|| SdkError::Other("team epochs exhausted".into()))?;
        let next = wrap::generate(KemSuite::default());
        let secret = chart_secret(&next);
        let remaining: Vec<MemberId> = entry.members.iter().copied().filter(|m| m != member).collect();
        let mut envelopes =
            self.seal_for_members(me, &remaining, KeySubject::Team { team: *team, epoch }, &secret).await?;
        let current = KeySubject::Team { team: *team, epoch: entry.epoch };
        let link = KeyHolder::Team { team: *team, epoch };
        envelopes.push(self.seal_for(next.encryption_key(), link, current, &chart_secret(&key))?);
        let kind =
            TxKind::TeamRemove(TeamRemove { team: *team, member: *member, public_key: next.encryption_key().clone() });
        self.transact(me, kind, Some(Sidecar { envelopes, metadata: None, threshold: Default::default() })).await
    }

    /// `patient`'s current chart key (which `me` holds) wrapped for `to`, and its epoch.
    async fn chart_key_for(&self, me: &Identity, patient: &MemberId, to: &MemberId) -> Result<(u32, SidecarEnvelope)> {
        let member = self.client.member(to).await?;
        let (epoch, chart) = self.chart_key(me, patient).await?;
        let subject = KeySubject::Chart { patient: *patient, epoch };
        let holder = KeyHolder::Member { member: *to };
        Ok((epoch, self.seal_for(&member.encryption_key, holder, subject, &chart_secret(&chart))?))
    }

    /// A fresh next epoch of `patient`'s chart, wrapped for everyone who keeps holding it: the
    /// patient, each live `--all` grantee but `revoked`, each delegate but `dismissed`.
    async fn next_chart_epoch(
        &self,
        me: &Identity,
        patient: &MemberId,
        revoked: Option<&MemberId>,
        dismissed: Option<&MemberId>,
    ) -> Result<(NewChartEpoch, Sidecar)> {
        let chart = self.client.chart(patient).await?;
        let epoch = chart.epoch.checked_add(1).ok_or_else(|| SdkError::Other("chart epochs exhausted".into()))?;
        let now = Timestamp::new(crate::client::now_ms());
        let mut recipients = vec![*patient];
        for holder in chart.holders.iter().filter(|m| Some(*m) != revoked) {
            if self.client.grant(patient, holder).await?.is_some_and(|g| g.is_live(now)) {
                recipients.push(*holder);
            }
        }
        recipients.extend(chart.delegates.iter().filter(|m| Some(*m) != dismissed));
        recipients.sort();
        recipients.dedup();
        let next = wrap::generate(KemSuite::default());
        let secret = chart_secret(&next);
        let subject = KeySubject::Chart { patient: *patient, epoch };
        // The link back: this epoch's key wrapped for the next one.
        let (current_epoch, current) = self.chart_key(me, patient).await?;
        if current_epoch != chart.epoch {
            return Err(SdkError::Conflict("the chart moved on meanwhile; try again".into()));
        }
        let link = KeyHolder::Chart { patient: *patient, epoch };
        let mut envelopes = vec![self.seal_for(
            next.encryption_key(),
            link,
            KeySubject::Chart { patient: *patient, epoch: current_epoch },
            &chart_secret(&current),
        )?];
        envelopes.extend(self.seal_for_members(me, &recipients, subject, &secret).await?);
        Ok((
            NewChartEpoch { public_key: next.encryption_key().clone(), recipients },
            Sidecar { envelopes, metadata: None, threshold: Default::default() },
        ))
    }

    /// The patient `me` appoints `to` as their delegate (`appoint`), or dismisses them (the chart
    /// then moves to an epoch they never hold).
    pub async fn delegate(&self, me: &Identity, to: &Contact, appoint: bool) -> Result<Committed> {
        let (kind, sidecar) = if appoint {
            let (epoch, envelope) = self.chart_key_for(me, &me.member, &to.member).await?;
            let kind = TxKind::Delegate(Delegate {
                patient: me.member,
                delegate: to.member,
                appoint,
                chart_epoch: Some(epoch),
                new_chart: None,
            });
            (kind, Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() })
        } else {
            let (new_chart, sidecar) = self.next_chart_epoch(me, &me.member, None, Some(&to.member)).await?;
            let kind = TxKind::Delegate(Delegate {
                patient: me.member,
                delegate: to.member,
                appoint,
                chart_epoch: None,
                new_chart: Some(new_chart),
            });
            (kind, sidecar)
        };
        self.transact(me, kind, Some(sidecar)).await
    }

    /// Enrols `count` new patients in `admin`'s organisation's custody (DESIGN §8), each with an
    /// `--all --write` grant to `doctor` (the treatment relationship of the clinician who brings
    /// their records).
    pub async fn enroll_custodial(
        &self,
        admin: &Identity,
        custody: &crate::Custody<'_>,
        doctor: &Contact,
        count: usize,
    ) -> Result<Vec<Identity>> {
        let members = (0..count).map(|_| MemberId::new(medledger_crypto::random_bytes())).collect();
        Ok(self.ensure_custodial(admin, custody, doctor, members).await?.0)
    }

    /// Makes sure each of `members` is a patient in `admin`'s organisation's custody with an
    /// `--all --write` grant to `doctor`, doing only what is missing: keys made here and saved
    /// in the custody keystore before anything is submitted, then one batch of enrolments and
    /// one of grants. Safe to repeat after an interruption (a bulk import derives the member ids).
    /// Returns the identities and how many were newly enrolled.
    pub async fn ensure_custodial(
        &self,
        admin: &Identity,
        custody: &crate::Custody<'_>,
        doctor: &Contact,
        members: Vec<MemberId>,
    ) -> Result<(Vec<Identity>, usize)> {
        let mut patients = Vec::with_capacity(members.len());
        for member in members {
            let patient = if custody.contains(&member) {
                custody.load(&member)?
            } else {
                let mut patient = Identity::generate("custody", Role::Patient, admin.org.clone(), KemSuite::default());
                patient.member = member;
                patient.alias = format!("custody-{}", &member.to_hex()[..12]);
                custody.save(&patient)?;
                patient
            };
            patients.push(patient);
        }
        let mut enrolments = Vec::new();
        for patient in &patients {
            match self.client.member(&patient.member).await {
                Ok(entry) if entry.signing_key == patient.signing.verifying_key() => continue,
                Ok(_) => return Err(SdkError::Integrity("a custodial member id is taken by other keys".into())),
                Err(SdkError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            let (kind, sidecar) = self.enrolment(patient, None, true)?;
            enrolments.push((admin, kind, sidecar));
        }
        let enrolled = enrolments.len();
        for result in self.transact_batch(enrolments).await? {
            result?;
        }
        let mut grants = Vec::new();
        for patient in &patients {
            if self.client.grant(&patient.member, &doctor.member).await?.is_some_and(|g| g.write) {
                continue;
            }
            let (kind, sidecar) = self.grant_all(patient, &patient.member, &doctor.member, true, None).await?;
            grants.push((patient, kind, Some(sidecar)));
        }
        for result in self.transact_batch(grants).await? {
            result?;
        }
        Ok((patients, enrolled))
    }

    /// Encrypts a record for `patient`, uploads the ciphertext and registers it.
    pub async fn put_record(
        &self,
        me: &Identity,
        patient: &Contact,
        plaintext: &[u8],
    ) -> Result<(RecordId, Committed)> {
        match self.put_record_once(me, patient, plaintext).await {
            Err(e) if self.stale_shares(&e).await? => self.put_record_once(me, patient, plaintext).await,
            other => other,
        }
    }

    async fn put_record_once(
        &self,
        me: &Identity,
        patient: &Contact,
        plaintext: &[u8],
    ) -> Result<(RecordId, Committed)> {
        let metadata = describe(plaintext)?;
        self.release().await?;
        let keys = self.record_keys(&patient.member).await?;
        let record = RecordId::new(medledger_crypto::random_bytes());
        let sealed = self.seal_record(me, &keys, record, 1, plaintext, &metadata)?;
        self.client.put_blob(me, &sealed.digest, sealed.ciphertext).await?;
        let committed = self.transact(me, sealed.kind, Some(sealed.sidecar)).await?;
        Ok((record, committed))
    }

    /// Writes the next version of `record`. With `expected`, refuses (conflict) unless the
    /// record is still at that version.
    pub async fn append_version(
        &self,
        me: &Identity,
        record: RecordId,
        expected: Option<u32>,
        plaintext: &[u8],
    ) -> Result<Committed> {
        match self.append_version_once(me, record, expected, plaintext).await {
            Err(e) if self.stale_shares(&e).await? => self.append_version_once(me, record, expected, plaintext).await,
            other => other,
        }
    }

    async fn append_version_once(
        &self,
        me: &Identity,
        record: RecordId,
        expected: Option<u32>,
        plaintext: &[u8],
    ) -> Result<Committed> {
        let metadata = describe(plaintext)?;
        self.release().await?;
        let entry = self.client.record(&record).await?;
        if expected.is_some_and(|v| v != entry.version) {
            return Err(SdkError::Conflict(format!("the record is at version {}", entry.version)));
        }
        let version =
            entry.version.checked_add(1).ok_or_else(|| SdkError::Usage("the record has too many versions".into()))?;
        let keys = self.record_keys(&entry.patient).await?;
        let sealed = self.seal_record(me, &keys, record, version, plaintext, &metadata)?;
        self.client.put_blob(me, &sealed.digest, sealed.ciphertext).await?;
        match self.transact(me, sealed.kind, Some(sealed.sidecar)).await {
            Err(SdkError::Usage(m)) if m.contains(medledger_ledger::Rejection::VersionMismatch.as_str()) => {
                Err(SdkError::Conflict("another version was written first".into()))
            }
            other => other,
        }
    }

    /// Re-encrypts `record` under fresh keys as its next version and retires the current
    /// ciphertext, which every validator then deletes from the store: for when a reader who lost
    /// access may have kept a key. Reading the current version is an audited access as always.
    pub async fn rotate(&self, me: &Identity, record: RecordId, purpose: PurposeOfUse) -> Result<Committed> {
        match self.rotate_once(me, record, purpose).await {
            Err(e) if self.stale_shares(&e).await? => self.rotate_once(me, record, purpose).await,
            other => other,
        }
    }

    async fn rotate_once(&self, me: &Identity, record: RecordId, purpose: PurposeOfUse) -> Result<Committed> {
        self.release().await?;
        let current = self.get_record(me, record, purpose).await?;
        let entry = current.record;
        let version =
            entry.version.checked_add(1).ok_or_else(|| SdkError::Usage("the record has too many versions".into()))?;
        let metadata = describe(&current.plaintext)?;
        let keys = self.record_keys(&entry.patient).await?;
        let sealed = self.seal_record(me, &keys, record, version, &current.plaintext, &metadata)?;
        self.client.put_blob(me, &sealed.digest, sealed.ciphertext).await?;
        let TxKind::AppendVersion(next) = sealed.kind else {
            return Err(SdkError::Other("a rotation seals a next version".into()));
        };
        let kind = TxKind::Rotate(Rotate { next, replaces: entry.digest });
        match self.transact(me, kind, Some(sealed.sidecar)).await {
            Err(SdkError::Usage(m)) if m.contains(medledger_ledger::Rejection::VersionMismatch.as_str()) => {
                Err(SdkError::Conflict("the record changed during the rotation; rotate again".into()))
            }
            other => other,
        }
    }

    /// The keys a new record of `patient` is wrapped for: the chart's current key and the current
    /// key of each care team holding a live `--all` grant.
    pub async fn record_keys(&self, patient: &MemberId) -> Result<RecordKeys> {
        let chart = self.client.chart(patient).await?;
        let now = Timestamp::new(crate::client::now_ms());
        let mut teams = Vec::new();
        for team in &chart.teams {
            if self.client.grant(patient, team).await?.is_some_and(|g| g.is_live(now))
                && let Some(entry) = self.client.team(team).await?
            {
                teams.push(entry);
            }
        }
        Ok(RecordKeys { chart, teams })
    }

    /// Encrypts `plaintext` as `version` of `record` in the chart of `keys`' patient, wraps its
    /// data key for the chart key, the care teams of `keys` and the author, and encrypts its
    /// metadata: everything a registration (version 1) or an append needs, nothing sent yet.
    pub fn seal_record(
        &self,
        me: &Identity,
        keys: &RecordKeys,
        record: RecordId,
        version: u32,
        plaintext: &[u8],
        metadata: &RecordMetadata,
    ) -> Result<Sealed> {
        if plaintext.len() > RECORD_PLAINTEXT_MAX {
            return Err(SdkError::Usage(format!("records are limited to {} MiB", RECORD_PLAINTEXT_MAX >> 20)));
        }
        // Under threshold release the envelopes wrap k_env and the validators hold k_thr's shares;
        // otherwise the envelopes wrap the data key itself.
        let (dek, wrapped, suite, threshold) = match self.loaded_release()? {
            Some(release) => {
                let dealt = self.deal(&release, record, version)?;
                let k_env = Zeroizing::new(dealt.k_env.to_vec());
                (dealt.dek, k_env, PayloadSuite::Aes256GcmStream64KThreshold, Some(dealt.shares))
            }
            None => {
                let dek = DataKey::generate();
                let bytes = Zeroizing::new(dek.as_bytes().to_vec());
                (dek, bytes, PayloadSuite::Aes256GcmStream64K, None)
            }
        };
        let mut ciphertext = Vec::with_capacity(plaintext.len() + plaintext.len() / 4096 + 128);
        let sealed = payload::encrypt_with_suite(suite, &dek, record.as_bytes(), version, plaintext, &mut ciphertext)
            .map_err(SdkError::other)?;
        let digest = Digest::new(sealed.digest);
        let mut meta_ct = Vec::new();
        let meta_json = serde_json::to_vec(metadata).map_err(SdkError::other)?;
        payload::encrypt(&dek, record.as_bytes(), 0, meta_json.as_slice(), &mut meta_ct).map_err(SdkError::other)?;
        let chart = &keys.chart;
        let patient = chart.patient;
        let subject = KeySubject::Record { record, version };
        let me_holder = KeyHolder::Member { member: me.member };
        let chart_holder = KeyHolder::Chart { patient, epoch: chart.epoch };
        let mut envelopes = vec![
            self.seal_for(me.encryption.encryption_key(), me_holder, subject, &wrapped)?,
            self.seal_for(&chart.public_key, chart_holder, subject, &wrapped)?,
        ];
        for team in &keys.teams {
            let holder = KeyHolder::Team { team: team.team, epoch: team.epoch };
            envelopes.push(self.seal_for(&team.public_key, holder, subject, &wrapped)?);
        }
        let recipients = envelopes.iter().map(|e| e.holder).collect();
        let body = RegisterRecord { record, patient, version, digest, size_bytes: sealed.ciphertext_len, recipients };
        let kind = if version == 1 { TxKind::RegisterRecord(body) } else { TxKind::AppendVersion(body) };
        let sidecar = Sidecar { envelopes, metadata: Some(meta_ct), threshold: threshold.into() };
        Ok(Sealed { record, digest, ciphertext, kind, sidecar })
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

    /// An admin of the member's organisation suspends them (`suspended`) or lifts the suspension.
    pub async fn suspend(&self, admin: &Identity, member: &Contact, suspended: bool) -> Result<Committed> {
        let kind = TxKind::Suspend(medledger_ledger::Suspend { member: member.member, suspended });
        self.transact(admin, kind, None).await
    }

    /// Whom a grant can go to: a member (alias or id, as [`Session::resolve`]) or a care team
    /// (its local alias, or its id).
    pub async fn resolve_grantee(&self, name: &str) -> Result<MemberId> {
        if let Some(team) = self.home.teams()?.get(name) {
            return Ok(*team);
        }
        if let Ok(id) = name.parse::<MemberId>()
            && self.client.team(&id).await?.is_some()
        {
            return Ok(id);
        }
        Ok(self.resolve(name).await?.member)
    }

    /// A local alias, or a member id (32 hex digits, e.g. a patient enrolled in custody by an
    /// import), to a contact.
    pub async fn resolve(&self, name: &str) -> Result<Contact> {
        match self.home.resolve(name) {
            Ok(contact) => Ok(contact),
            Err(e) => match name.parse::<MemberId>() {
                Ok(member) => self.contact_of(&member).await,
                Err(_) => Err(e),
            },
        }
    }

    /// Whom a member id names, from the ledger (role and organisation).
    pub async fn contact_of(&self, member: &MemberId) -> Result<Contact> {
        let entry = self.client.member(member).await?;
        Ok(Contact { member: entry.id, role: entry.role, org: entry.org })
    }

    /// Signs a RecordAccess, waits for it to commit (the audit event is on the ledger before any
    /// byte leaves a validator), then fetches, checks and decrypts.
    pub async fn get_record(&self, me: &Identity, record: RecordId, purpose: PurposeOfUse) -> Result<Opened> {
        let entry = self.client.record(&record).await?;
        let kind = TxKind::RecordAccess(RecordAccess { record, version: entry.version, purpose });
        let access = self.transact(me, kind, None).await?;
        self.open_access(me, record, access).await
    }

    /// Reads many records: one batch of RecordAccess transactions (each audited on the ledger
    /// before any byte leaves a validator), then the allowed ones fetched, checked and decrypted
    /// a few at a time. One result per record, in order.
    pub async fn get_records(
        &self,
        me: &Identity,
        records: &[RecordEntry],
        purpose: PurposeOfUse,
    ) -> Result<Vec<Result<Opened>>> {
        let accesses = records
            .iter()
            .map(|r| (me, TxKind::RecordAccess(RecordAccess { record: r.record, version: r.version, purpose }), None))
            .collect();
        let committed = self.transact_batch(accesses).await?;
        let opens = records.iter().zip(committed).map(|(r, access)| async move {
            match access {
                Ok(access) => self.open_access(me, r.record, access).await,
                Err(e) => Err(e),
            }
        });
        Ok(futures::stream::iter(opens).buffered(OPENS_IN_FLIGHT).collect().await)
    }

    /// Fetches, checks and decrypts the record an allowed, committed access names.
    pub async fn open_access(&self, me: &Identity, record: RecordId, access: Committed) -> Result<Opened> {
        // The shares are asked for while the ciphertext comes.
        let (key, ciphertext) = tokio::join!(self.data_key(me, &access.tx), self.client.access_content(me, &access.tx));
        let (dek, bundle_record, metadata) = key?;
        let ciphertext = ciphertext?;
        if Digest::new(medledger_crypto::sha256(&ciphertext)) != bundle_record.digest {
            return Err(SdkError::Integrity("ciphertext does not match the digest on the ledger".into()));
        }
        let expected = if bundle_record.threshold.0.is_some() {
            PayloadSuite::Aes256GcmStream64KThreshold
        } else {
            PayloadSuite::Aes256GcmStream64K
        };
        let header =
            ciphertext.get(..payload::HEADER_BYTES).and_then(|h| h.try_into().ok()).map(payload::Header::decode);
        if !matches!(header, Some(Ok(h)) if h.suite == expected) {
            return Err(SdkError::Integrity("the ciphertext's suite is not the one the ledger records".into()));
        }
        let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
        payload::decrypt_with_digest(
            &dek,
            record.as_bytes(),
            bundle_record.version,
            bundle_record.digest.as_bytes(),
            &ciphertext[..],
            &mut *plaintext,
        )
        .map_err(|_| SdkError::Integrity("ciphertext does not authenticate".into()))?;
        let metadata = metadata.and_then(|ct| {
            let mut out = Vec::new();
            payload::decrypt(&dek, record.as_bytes(), 0, &ct[..], &mut out).ok()?;
            serde_json::from_slice(&out).ok()
        });
        Ok(Opened { record: bundle_record, access, metadata, plaintext })
    }

    /// What this reader's envelopes wrap for the record of `bundle`: its data key (direct suite)
    /// or `k_env` (threshold release); `None` when the reader holds no envelope for it.
    fn wrapped_secret(&self, me: &Identity, bundle: &AccessBundle) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let record = &bundle.record;
        let patient = record.patient;
        let subject = KeySubject::Record { record: record.record, version: record.version };
        let me_holder = KeyHolder::Member { member: me.member };
        let find = |holder, subject| bundle.envelopes.iter().find(|e| e.holder == holder && e.subject == subject);
        let broken = || SdkError::Integrity("the key path to this record is broken".into());
        // From a chart key of `epoch` back, one link per epoch, to the record's epoch and its key.
        let down_chart = |mut key: DecryptionKey, mut epoch: u32| -> Result<Zeroizing<Vec<u8>>> {
            while epoch > record.chart_epoch {
                let link = find(KeyHolder::Chart { patient, epoch }, KeySubject::Chart { patient, epoch: epoch - 1 })
                    .ok_or_else(broken)?;
                key = chart_key_from(&self.open_envelope(&key, link)?)?;
                epoch -= 1;
            }
            let to_record = find(KeyHolder::Chart { patient, epoch }, subject).ok_or_else(broken)?;
            self.open_envelope(&key, to_record)
        };
        // The chart key of the latest epoch `holder` has an envelope of.
        let chart_of = |holder: KeyHolder| {
            bundle.envelopes.iter().filter(|e| e.holder == holder).find_map(|e| match e.subject {
                KeySubject::Chart { patient: p, epoch } if p == patient => Some((e, epoch)),
                _ => None,
            })
        };
        // Wrapped for me directly (with a key I may no longer hold, after a recovery: then the
        // chart or a team still leads to it).
        if let Some(direct) = find(me_holder, subject)
            && let Ok(secret) = self.open_mine(me, direct)
        {
            return Ok(Some(secret));
        }
        // Through a care team: my envelope of its current key, then back one epoch per link to
        // the key the record's key (or, for an earlier record, a chart key) was wrapped for.
        let team_key = bundle.envelopes.iter().find_map(|e| match (e.holder, e.subject) {
            (h, KeySubject::Team { team, epoch }) if h == me_holder => Some((e, team, epoch)),
            _ => None,
        });
        if let Some((mine, team, mut epoch)) = team_key {
            let mut key = chart_key_from(&self.open_mine(me, mine)?)?;
            loop {
                let holder = KeyHolder::Team { team, epoch };
                if let Some(e) = find(holder, subject) {
                    return Ok(Some(self.open_envelope(&key, e)?));
                }
                if let Some((e, chart_epoch)) = chart_of(holder) {
                    return Ok(Some(down_chart(chart_key_from(&self.open_envelope(&key, e)?)?, chart_epoch)?));
                }
                let previous = epoch.checked_sub(1).ok_or_else(broken)?;
                let link = find(holder, KeySubject::Team { team, epoch: previous }).ok_or_else(broken)?;
                key = chart_key_from(&self.open_envelope(&key, link)?)?;
                epoch = previous;
            }
        }
        let Some((to_chart, epoch)) = chart_of(me_holder) else { return Ok(None) };
        Ok(Some(down_chart(chart_key_from(&self.open_mine(me, to_chart)?)?, epoch)?))
    }

    /// The data key of the record named by an allowed access, from the envelopes a validator
    /// serves and, under threshold release, the validators' shares. A reader without an envelope
    /// (break-glass) gets `k_env` from the emergency shares.
    async fn data_key(&self, me: &Identity, access: &TxId) -> Result<(DataKey, RecordEntry, Option<Vec<u8>>)> {
        let bundle = self.client.access_bundle(me, access).await?;
        let record = &bundle.record;
        let secret = self.wrapped_secret(me, &bundle)?;
        let malformed = || SdkError::Integrity("record key half malformed".into());
        let dek = match (&bundle.threshold, secret) {
            (None, Some(secret)) => {
                DataKey::from_slice(&secret).map_err(|_| SdkError::Integrity("data key malformed".into()))?
            }
            (None, None) => return Err(SdkError::Denied("no wrapped key for this reader".into())),
            (Some(public), secret) => {
                let (k_thr, emergency) = self.collect_shares(me, access, record, public, secret.is_none()).await?;
                let k_env: Zeroizing<[u8; 32]> = match (&secret, emergency) {
                    (Some(s), _) => Zeroizing::new(s.as_slice().try_into().map_err(|_| malformed())?),
                    (None, Some(k)) => k,
                    (None, None) => return Err(malformed()),
                };
                threshold::derive_data_key(&k_env, &k_thr, record.record.as_bytes(), record.version)
                    .map_err(SdkError::other)?
            }
        };
        Ok((dek, bundle.record, bundle.metadata))
    }

    /// The patient's current chart key, opened from the patient's envelope.
    /// `patient`'s current chart key, from its envelope for `me` (the patient, a delegate or an
    /// `--all` grantee).
    async fn chart_key(&self, me: &Identity, patient: &MemberId) -> Result<(u32, DecryptionKey)> {
        let envelope = self.client.chart_envelope(me, patient).await?;
        let KeySubject::Chart { epoch, .. } = envelope.subject else {
            return Err(SdkError::Integrity("chart envelope of the wrong kind".into()));
        };
        Ok((epoch, chart_key_from(&self.open_mine(me, &envelope)?)?))
    }

    /// The patient grants `to` access to one record or to the whole chart.
    pub async fn grant(
        &self,
        me: &Identity,
        to: &Contact,
        scope: GrantScope,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<Committed> {
        self.grant_for(me, &me.member, &to.member, scope, write, expires_at).await
    }

    /// [`Session::grant`] on `patient`'s chart: `me` is the patient or one of their delegates.
    pub async fn grant_for(
        &self,
        me: &Identity,
        patient: &MemberId,
        to: &MemberId,
        scope: GrantScope,
        write: bool,
        expires_at: Option<Timestamp>,
    ) -> Result<Committed> {
        let team = self.client.team(to).await?;
        let GrantScope::Record(record) = scope else {
            let (kind, sidecar) = match &team {
                Some(team) => self.grant_all_to_team(me, patient, team, write, expires_at).await?,
                None => self.grant_all(me, patient, to, write, expires_at).await?,
            };
            return self.transact(me, kind, Some(sidecar)).await;
        };
        let (key, holder) = match &team {
            Some(team) => (team.public_key.clone(), KeyHolder::Team { team: team.team, epoch: team.epoch }),
            None => (self.client.member(to).await?.encryption_key, KeyHolder::Member { member: *to }),
        };
        // The patient reads the record's key like any reader: a logged access first.
        let entry = self.client.record(&record).await?;
        let kind = TxKind::RecordAccess(RecordAccess { record, version: entry.version, purpose: PurposeOfUse::Patrqt });
        let access = self.transact(me, kind, None).await?;
        // Re-wrapped for the grantee: what the patient's envelopes wrap (k_env under threshold
        // release, so the grantee still needs the validators' shares at each read).
        let bundle = self.client.access_bundle(me, &access.tx).await?;
        let secret = self
            .wrapped_secret(me, &bundle)?
            .ok_or_else(|| SdkError::Denied("no wrapped key for this reader".into()))?;
        let subject = KeySubject::Record { record, version: bundle.record.version };
        let envelope = self.seal_for(&key, holder, subject, &secret)?;
        let kind = TxKind::Grant(Grant {
            patient: *patient,
            grantee: *to,
            scope,
            write,
            expires_at,
            chart_epoch: None,
            new_chart: None,
        });
        self.transact(
            me,
            kind,
            Some(Sidecar { envelopes: vec![envelope], metadata: None, threshold: Default::default() }),
        )
        .await
    }

    /// The patient revokes a grant; `--all` moves the chart key to a new epoch for the others.
    pub async fn revoke(&self, me: &Identity, from: &Contact, scope: GrantScope) -> Result<Committed> {
        self.revoke_for(me, &me.member, &from.member, scope).await
    }

    /// [`Session::revoke`] on `patient`'s chart: `me` is the patient or one of their delegates.
    pub async fn revoke_for(
        &self,
        me: &Identity,
        patient: &MemberId,
        from: &MemberId,
        scope: GrantScope,
    ) -> Result<Committed> {
        let team_grant = self.client.chart(patient).await?.teams.contains(from);
        let (new_chart, sidecar) = match scope {
            // A team never held the chart's current key: nothing to move.
            GrantScope::Record(_) => (None, None),
            GrantScope::All if team_grant => (None, None),
            GrantScope::All => {
                let (new_chart, sidecar) = self.next_chart_epoch(me, patient, Some(from), None).await?;
                (Some(new_chart), Some(sidecar))
            }
        };
        let kind = TxKind::Revoke(Revoke { patient: *patient, grantee: *from, scope, new_chart });
        self.transact(me, kind, sidecar).await
    }

    pub async fn audit(&self, me: &Identity, patient: &Contact) -> Result<Vec<AuditEvent>> {
        self.client.audit(me, &patient.member).await
    }

    pub async fn list(&self, me: &Identity, patient: &Contact) -> Result<Vec<RecordEntry>> {
        self.client.patient_records(me, &patient.member).await
    }

    /// Breaks the glass on `patient`'s records for `duration_ms`: once committed, this member's
    /// reads for emergency treatment (ETREAT) are allowed and flagged until the window closes.
    pub async fn break_glass(
        &self,
        me: &Identity,
        patient: &Contact,
        reason: Option<EmergencyReason>,
        duration_ms: u64,
        note: Option<&str>,
    ) -> Result<Committed> {
        let kind = TxKind::BreakGlass(BreakGlass { patient: patient.member, reason, duration_ms });
        let sidecar = match note {
            Some(note) => Some(self.seal_note(patient, note).await?),
            None => None,
        };
        self.transact(me, kind, sidecar).await
    }

    /// A break-glass note encrypted under a fresh key, wrapped for the patient and every auditor.
    async fn seal_note(&self, patient: &Contact, note: &str) -> Result<Sidecar> {
        if note.is_empty() || note.len() > BREAK_GLASS_NOTE_BYTES_MAX {
            return Err(SdkError::Usage(format!("a note is 1 to {BREAK_GLASS_NOTE_BYTES_MAX} bytes")));
        }
        let mut auditors = Vec::new();
        let mut after = None;
        loop {
            let page = self.client.staff(Role::Auditor, after.as_ref()).await?;
            auditors.extend(page.members.into_iter().filter(|m| m.status == MemberStatus::Active));
            match page.next.as_deref().and_then(MemberId::from_hex) {
                Some(next) if auditors.len() <= NOTE_READERS_MAX => after = Some(next),
                _ => break,
            }
        }
        if auditors.is_empty() || auditors.len() > NOTE_READERS_MAX {
            return Err(SdkError::Usage(format!("a note needs 1 to {NOTE_READERS_MAX} auditors on the network")));
        }
        let key = DataKey::generate();
        let id: [u8; 16] = medledger_crypto::random_bytes();
        let mut ciphertext = Vec::new();
        payload::encrypt(&key, &id, 0, note.as_bytes(), &mut ciphertext).map_err(SdkError::other)?;
        let subject = KeySubject::Note { id };
        let patient_key = self.client.member(&patient.member).await?.encryption_key;
        let mut envelopes =
            vec![self.seal_for(&patient_key, KeyHolder::Member { member: patient.member }, subject, key.as_bytes())?];
        for auditor in &auditors {
            let holder = KeyHolder::Member { member: auditor.id };
            envelopes.push(self.seal_for(&auditor.encryption_key, holder, subject, key.as_bytes())?);
        }
        Ok(Sidecar { envelopes, metadata: Some(ciphertext), threshold: Default::default() })
    }

    /// The note of the break-glass `tx`, for the patient or an auditor it was written for.
    pub async fn break_glass_note(&self, me: &Identity, tx: &TxId) -> Result<String> {
        let note = self.client.break_glass_note(me, tx).await?;
        let KeySubject::Note { id } = note.envelope.subject else {
            return Err(SdkError::Integrity("a note's key is wrapped under another subject".into()));
        };
        let key = self.open_mine(me, &note.envelope)?;
        let key =
            DataKey::from_slice(&key).map_err(|_| SdkError::Integrity("a note key has the wrong length".into()))?;
        let mut text = Vec::new();
        payload::decrypt(&key, &id, 0, note.ciphertext.as_slice(), &mut text)
            .map_err(|_| SdkError::Integrity("the note does not decrypt".into()))?;
        String::from_utf8(text).map_err(|_| SdkError::Integrity("the note is not text".into()))
    }

    /// The patient erases a record: once committed, every validator deletes each version's
    /// ciphertext, sidecar and key share.
    pub async fn erase(&self, me: &Identity, record: RecordId) -> Result<Committed> {
        self.transact(me, TxKind::Erase(Erase { record }), None).await
    }

    /// An auditor places (`hold`) or lifts a legal hold on a patient's chart or one record.
    pub async fn legal_hold(
        &self,
        me: &Identity,
        patient: &Contact,
        record: Option<RecordId>,
        hold: bool,
    ) -> Result<Committed> {
        self.transact(me, TxKind::LegalHold(LegalHold { patient: patient.member, record, hold }), None).await
    }

    /// The auditors' review queue (break-glass openings and attempts, emergency reads).
    pub async fn flagged(&self, me: &Identity) -> Result<Vec<FlaggedEntry>> {
        self.client.flagged(me).await
    }
}

/// The most transactions per batch request (the node's limit is 1000).
const SUBMIT_BATCH_MAX: usize = 500;
/// The most bytes of transactions and sidecars per batch request.
const SUBMIT_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Records fetched and decrypted at once by [`Session::get_records`].
const OPENS_IN_FLIGHT: usize = 8;
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

/// A member's request, from their new device, that an admin approve the recovery of their keys.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryRequest {
    pub format: String,
    pub member: MemberId,
    pub signing_key: medledger_crypto::sign::VerifyingKey,
    pub encryption_key: medledger_crypto::wrap::EncryptionKey,
}

impl RecoveryRequest {
    pub const FORMAT: &str = "medledger-recovery-request/v1";

    pub fn of(next: &Identity) -> Self {
        RecoveryRequest {
            format: Self::FORMAT.into(),
            member: next.member,
            signing_key: next.signing.verifying_key(),
            encryption_key: next.encryption.encryption_key().clone(),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let request: RecoveryRequest = (bytes.len() <= 16 * 1024)
            .then(|| serde_json::from_slice(bytes).ok())
            .flatten()
            .ok_or_else(|| SdkError::Usage("not a recovery request".into()))?;
        if request.format != Self::FORMAT {
            return Err(SdkError::Usage("not a recovery request".into()));
        }
        Ok(request)
    }
}

/// What a new record of a patient is wrapped for (see [`Session::record_keys`]).
pub struct RecordKeys {
    pub chart: ChartEntry,
    pub teams: Vec<TeamEntry>,
}

/// A record encrypted and wrapped on this side: the ciphertext to upload and the transaction
/// (registration or append) with its sidecar.
pub struct Sealed {
    pub record: RecordId,
    pub digest: Digest,
    pub ciphertext: Vec<u8>,
    pub kind: TxKind,
    pub sidecar: Sidecar,
}

/// Checks the input and describes it: FHIR R4 JSON is parsed strictly as FHIR.
pub fn describe(plaintext: &[u8]) -> Result<RecordMetadata> {
    let size_bytes = plaintext.len() as u64;
    let looks_json = plaintext.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if looks_json {
        let text = std::str::from_utf8(plaintext).map_err(|_| SdkError::Usage("JSON input is not UTF-8".into()))?;
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| SdkError::Usage(format!("input is not valid JSON: line {}", e.line())))?;
        if value.get("resourceType").is_some() {
            let resource: fhirkit::r4::Resource = fhirkit::from_json_strict(text).map_err(|e| {
                SdkError::Usage(format!("not a valid FHIR R4 resource: {}", first_line(&e.to_string())))
            })?;
            return Ok(RecordMetadata {
                resource_type: Some(resource.resource_type().to_string()),
                content_type: "application/fhir+json".into(),
                size_bytes,
            });
        }
        return Ok(RecordMetadata { resource_type: None, content_type: "application/json".into(), size_bytes });
    }
    Ok(RecordMetadata { resource_type: None, content_type: "application/octet-stream".into(), size_bytes })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(200).collect()
}
