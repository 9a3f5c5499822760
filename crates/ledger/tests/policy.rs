//! The permission table of DESIGN §3 for the kinds of this ledger, row by row: allowed and denied.

use std::collections::BTreeMap;

use medledger_crypto::sign::{Signature, SigningKey, VerifyingKey};
use medledger_crypto::suite::KemSuite;
use medledger_crypto::threshold as shamir;
use medledger_crypto::wrap::{self, DecryptionKey, EncryptionKey};
use medledger_ledger::governance::{self, NewValidator, Proposal};
use medledger_ledger::state::{AuditAction, AuditEvent, ChartEntry, Decision, KeyEvent, keys};
use medledger_ledger::threshold::{ThresholdConfig, ThresholdShares, WrappedShare, share_context};
use medledger_ledger::{
    BlockContext, BreakGlass, CustodyRelease, Delegate, EmergencyReason, Enroll, Erase, Genesis, GenesisMember,
    GenesisOrg, GenesisValidator, Grant, GrantScope, KeyChange, KeyHolder, KeySubject, LegalHold, NewChartEpoch,
    RecordAccess, Recovery, RecoveryAction, RegisterRecord, Rejection, Revoke, RotateKeys, Sidecar, SidecarEnvelope,
    SidecarError, Suspend, TeamAdd, TeamCreate, TeamRemove, Transaction, TxBody, TxInvalid, TxKind, TxOutcome,
    claim_code_hash, claim_proof, directory_id, execute_block, execute_block_verified,
};
use medledger_types::{
    ChainId, Digest, Height, MemberId, Nonce, OrgId, PurposeOfUse, RecordId, Role, Timestamp, Trailing,
};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

struct Who {
    id: MemberId,
    sign: SigningKey,
    enc: DecryptionKey,
    nonce: u64,
}

impl Who {
    fn new(n: u8) -> Self {
        Who {
            id: MemberId::new([n; 16]),
            sign: SigningKey::generate(),
            enc: wrap::generate(KemSuite::X25519),
            nonce: 0,
        }
    }
}

struct World {
    chain: ChainId,
    state: State,
    height: u64,
    time: u64,
    chart: BTreeMap<MemberId, (u32, DecryptionKey)>,
    /// The validators' share keys (threshold release); empty on a network without it.
    share_keys: Vec<DecryptionKey>,
    /// The threshold shares the next write carries instead of well-made ones.
    next_shares: Option<Trailing<ThresholdShares>>,
    /// The ciphertext digest the next write names instead of its own.
    next_digest: Option<Digest>,
    /// The state at genesis and every block since, to replay.
    genesis_state: State,
    history: Vec<Past>,
    /// The validators' consensus keys (they sign their own share-key transactions).
    validators: Vec<SigningKey>,
    validator_keys: Vec<VerifyingKey>,
    /// Every record version's sidecar as written (what a validator or an observer keeps).
    sidecars: BTreeMap<(RecordId, u32), Sidecar>,
    /// Care teams' current epochs and keys.
    teams: BTreeMap<MemberId, (u32, DecryptionKey)>,
    /// Per patient, the teams holding an `--all` grant (new records are wrapped for them).
    team_grants: BTreeMap<MemberId, Vec<MemberId>>,
    /// How many state entries the last block wrote.
    last_writes: usize,
}

/// A block executed earlier: height, time, transactions and sidecars.
type Past = (Height, Timestamp, Vec<Transaction>, Vec<Option<Vec<u8>>>);

const T0: u64 = 1_700_000_000_000;

/// The digest of a record version's ciphertext in these tables: distinct per version, as real
/// ciphertexts (fresh keys each time) are.
fn digest_of(record: RecordId, version: u32) -> Digest {
    let mut bytes = record.as_bytes().to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    Digest::new(medledger_crypto::sha256(&bytes))
}

fn envelope(chain: ChainId, to: &EncryptionKey, holder: KeyHolder, subject: KeySubject) -> SidecarEnvelope {
    let ctx = subject.wrap_context(chain, holder);
    SidecarEnvelope { holder, subject, envelope: wrap::seal(to, &[7u8; 32], &ctx).expect("seal") }
}

impl World {
    fn new(admins: &[(&str, &Who)]) -> Self {
        Self::with_validators(admins, 1, false)
    }

    /// A network of `n` validators; with `threshold`, each has a share key.
    fn with_validators(admins: &[(&str, &Who)], n: usize, threshold: bool) -> Self {
        Self::with_policy(admins, n, threshold, None)
    }

    fn with_policy(
        admins: &[(&str, &Who)],
        n: usize,
        threshold: bool,
        policy: Option<medledger_ledger::NetworkPolicy>,
    ) -> Self {
        let share_keys: Vec<DecryptionKey> =
            if threshold { (0..n).map(|_| wrap::generate(KemSuite::X25519)).collect() } else { vec![] };
        let validators: Vec<SigningKey> = (0..n).map(|_| SigningKey::generate()).collect();
        let genesis = Genesis {
            chain_name: "test".into(),
            created_at: Timestamp::new(T0),
            orgs: admins
                .iter()
                .map(|(org, who)| GenesisOrg {
                    id: OrgId::new(org).unwrap(),
                    name: org.to_string(),
                    admin: GenesisMember {
                        member: who.id,
                        signing_key: who.sign.verifying_key(),
                        encryption_key: who.enc.encryption_key().clone(),
                    },
                })
                .collect(),
            validators: (0..n)
                .map(|k| GenesisValidator {
                    org: OrgId::new(admins[k % admins.len()].0).unwrap(),
                    public_key: validators[k].verifying_key(),
                    p2p_address: format!("127.0.0.1:{}", 100 + k),
                    api_address: format!("127.0.0.1:{}", 200 + k),
                })
                .collect(),
            share_keys: threshold.then(|| share_keys.iter().map(|k| k.encryption_key().clone()).collect()),
            policy,
        };
        genesis.validate().expect("valid genesis");
        let state: State = genesis.state().into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        World {
            chain: genesis.chain_id(),
            genesis_state: state.clone(),
            history: Vec::new(),
            validator_keys: validators.iter().map(SigningKey::verifying_key).collect(),
            validators,
            sidecars: BTreeMap::new(),
            teams: BTreeMap::new(),
            team_grants: BTreeMap::new(),
            last_writes: 0,
            state,
            height: 0,
            time: T0,
            chart: BTreeMap::new(),
            share_keys,
            next_shares: None,
            next_digest: None,
        }
    }

    /// Well-made shares of a fresh `k_thr` of `record`/`version` for the validators' current keys.
    fn deal(&self, record: RecordId, version: u32) -> ThresholdShares {
        let config: ThresholdConfig = borsh::from_slice(&self.state[keys::THRESHOLD]).expect("threshold config");
        let n = config.share_keys.len();
        let (thr, verifier) = shamir::split(&[5u8; 32], usize::from(config.threshold), n).unwrap();
        let (env, emergency_verifier) = shamir::split(&[6u8; 32], usize::from(config.emergency_threshold), n).unwrap();
        let shares = (0..n)
            .map(|i| {
                let both = [&thr[i].as_bytes()[..], &env[i].as_bytes()[..]].concat();
                let context = share_context(self.chain, record, version, config.epoch, i as u32);
                WrappedShare { envelope: wrap::seal(&config.share_keys[i], &both, &context).unwrap() }
            })
            .collect();
        ThresholdShares::for_config(&config, &verifier, &emergency_verifier, shares)
    }

    fn tx(&self, who: &mut Who, kind: TxKind, sidecar: Option<&Sidecar>) -> (Transaction, Option<Vec<u8>>) {
        who.nonce += 1;
        let body = TxBody {
            chain_id: self.chain,
            signer: who.id,
            nonce: Nonce::new(who.nonce),
            kind,
            sidecar_digest: sidecar.map(Sidecar::digest),
        };
        (Transaction::sign(body, &who.sign), sidecar.map(Sidecar::encode))
    }

    /// Executes one block and applies it; returns the outcomes.
    fn block(&mut self, txs: Vec<(Transaction, Option<Vec<u8>>)>) -> Vec<TxOutcome> {
        self.try_block(txs).expect("block is valid")
    }

    fn try_block(&mut self, txs: Vec<(Transaction, Option<Vec<u8>>)>) -> Result<Vec<TxOutcome>, TxInvalid> {
        self.height += 1;
        self.time += 1_000;
        let (height, time) = (Height::new(self.height), Timestamp::new(self.time));
        let ctx = BlockContext { chain_id: self.chain, height, time, validators: &self.validator_keys };
        let (txs, sidecars): (Vec<_>, Vec<_>) = txs.into_iter().unzip();
        let exec = execute_block(&self.state, ctx, &txs, &sidecars).map_err(|e| e.error)?;
        self.history.push((height, time, txs, sidecars));
        self.last_writes = exec.writes.len();
        for (k, v) in exec.writes {
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        Ok(exec.results)
    }

    fn one(&mut self, who: &mut Who, kind: TxKind, sidecar: Option<&Sidecar>) -> TxOutcome {
        let tx = self.tx(who, kind, sidecar);
        self.block(vec![tx]).remove(0)
    }

    fn enroll(&mut self, admin: &mut Who, who: &Who, org: &str, role: Role) -> TxOutcome {
        self.enroll_as(admin, who, org, role, false)
    }

    fn enroll_as(&mut self, admin: &mut Who, who: &Who, org: &str, role: Role, custodial: bool) -> TxOutcome {
        let (chart_key, sidecar) = if role == Role::Patient {
            let chart = wrap::generate(KemSuite::X25519);
            let holder = KeyHolder::Member { member: who.id };
            let subject = KeySubject::Chart { patient: who.id, epoch: 0 };
            let sidecar = Sidecar {
                envelopes: vec![envelope(self.chain, who.enc.encryption_key(), holder, subject)],
                metadata: None,
                threshold: Default::default(),
            };
            let public = chart.encryption_key().clone();
            self.chart.insert(who.id, (0, chart));
            (Some(public), Some(sidecar))
        } else {
            (None, None)
        };
        let kind = TxKind::Enroll(Enroll {
            member: who.id,
            org: OrgId::new(org).unwrap(),
            role,
            signing_key: who.sign.verifying_key(),
            encryption_key: who.enc.encryption_key().clone(),
            display_name: (role != Role::Patient).then(|| "Dr Test".to_string()),
            chart_key,
            custodial,
        });
        self.one(admin, kind, sidecar.as_ref())
    }

    fn put(&mut self, author: &mut Who, patient: MemberId, record: RecordId) -> TxOutcome {
        self.write(author, patient, record, 1, &[])
    }

    /// Registers `version` of `record` (an append when it is above 1), wrapped for the chart, the
    /// author and `also`.
    fn write(
        &mut self,
        author: &mut Who,
        patient: MemberId,
        record: RecordId,
        version: u32,
        also: &[&Who],
    ) -> TxOutcome {
        let (body, sidecar) = self.registration(author, patient, record, version, also);
        let kind = if version == 1 { TxKind::RegisterRecord(body) } else { TxKind::AppendVersion(body) };
        self.submit_version(author, kind, sidecar)
    }

    /// Submits a registration made by [`World::registration`]; keeps its sidecar if applied.
    fn submit_version(&mut self, author: &mut Who, kind: TxKind, sidecar: Sidecar) -> TxOutcome {
        let (record, version) = match &kind {
            TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) => (r.record, r.version),
            TxKind::Rotate(r) => (r.next.record, r.next.version),
            other => panic!("not a registration: {other:?}"),
        };
        let outcome = self.one(author, kind, Some(&sidecar));
        if outcome.is_applied() {
            self.sidecars.insert((record, version), sidecar);
        }
        outcome
    }

    /// The body and sidecar of `version` of `record`, wrapped for the chart, the author, `also` and
    /// the teams holding an `--all` grant; its ciphertext digest is its own (`digest_of`) unless
    /// [`World::next_digest`] names another.
    fn registration(
        &mut self,
        author: &Who,
        patient: MemberId,
        record: RecordId,
        version: u32,
        also: &[&Who],
    ) -> (RegisterRecord, Sidecar) {
        let epoch = self.chart.get(&patient).map_or(0, |c| c.0);
        let chart_key = self.chart.get(&patient).map(|c| c.1.encryption_key().clone());
        let chart_holder = KeyHolder::Chart { patient, epoch };
        let author_holder = KeyHolder::Member { member: author.id };
        let subject = KeySubject::Record { record, version };
        let mut envelopes = vec![envelope(self.chain, author.enc.encryption_key(), author_holder, subject)];
        if let Some(key) = chart_key {
            envelopes.push(envelope(self.chain, &key, chart_holder, subject));
        }
        for who in also {
            envelopes.push(envelope(
                self.chain,
                who.enc.encryption_key(),
                KeyHolder::Member { member: who.id },
                subject,
            ));
        }
        for team in self.team_grants.get(&patient).into_iter().flatten() {
            let (epoch, key) = &self.teams[team];
            let holder = KeyHolder::Team { team: *team, epoch: *epoch };
            envelopes.push(envelope(self.chain, key.encryption_key(), holder, subject));
        }
        let recipients = envelopes.iter().map(|e| e.holder).collect();
        let threshold = match self.next_shares.take() {
            Some(chosen) => chosen,
            None if self.share_keys.is_empty() => Trailing(None),
            None => Trailing(Some(self.deal(record, version))),
        };
        let sidecar = Sidecar { envelopes, metadata: Some(vec![1, 2, 3]), threshold };
        let body = RegisterRecord {
            record,
            patient,
            version,
            digest: self.next_digest.take().unwrap_or_else(|| digest_of(record, version)),
            size_bytes: 4096,
            recipients,
        };
        (body, sidecar)
    }

    fn put_own(&mut self, patient: &mut Who, record: RecordId) -> TxOutcome {
        let id = patient.id;
        self.put(patient, id, record)
    }

    fn grant(
        &mut self,
        patient: &mut Who,
        to: &Who,
        scope: GrantScope,
        write: bool,
        expires: Option<u64>,
    ) -> TxOutcome {
        let id = patient.id;
        self.grant_as(patient, id, to, scope, write, expires)
    }

    /// A grant on `patient`'s chart signed by `signer` (the patient, or a delegate).
    fn grant_as(
        &mut self,
        signer: &mut Who,
        patient: MemberId,
        to: &Who,
        scope: GrantScope,
        write: bool,
        expires: Option<u64>,
    ) -> TxOutcome {
        let (subject, chart_epoch) = match scope {
            GrantScope::Record(record) => (KeySubject::Record { record, version: 1 }, None),
            GrantScope::All => {
                let epoch = self.chart.get(&patient).map_or(0, |c| c.0);
                (KeySubject::Chart { patient, epoch }, Some(epoch))
            }
            // No envelope: the records written from now on are wrapped for the grantee.
            GrantScope::Sensitive => {
                let kind = TxKind::Grant(Grant {
                    patient,
                    grantee: to.id,
                    scope,
                    write,
                    expires_at: expires.map(Timestamp::new),
                    chart_epoch: None,
                    new_chart: None,
                });
                return self.one(signer, kind, None);
            }
        };
        let holder = KeyHolder::Member { member: to.id };
        let sidecar = Sidecar {
            envelopes: vec![envelope(self.chain, to.enc.encryption_key(), holder, subject)],
            metadata: None,
            threshold: Default::default(),
        };
        let kind = TxKind::Grant(Grant {
            patient,
            grantee: to.id,
            scope,
            write,
            expires_at: expires.map(Timestamp::new),
            chart_epoch,
            new_chart: None,
        });
        self.one(signer, kind, Some(&sidecar))
    }

    /// Registers version 1 of each of `records` for `patient` (wrapped like [`World::write`] does)
    /// in blocks of a thousand.
    fn put_many(&mut self, author: &mut Who, patient: MemberId, records: &[RecordId]) -> Vec<TxOutcome> {
        let mut outcomes = Vec::new();
        for chunk in records.chunks(1_000) {
            let mut txs = Vec::new();
            for record in chunk {
                let subject = KeySubject::Record { record: *record, version: 1 };
                let (epoch, chart) = &self.chart[&patient];
                let mut envelopes = vec![
                    envelope(self.chain, author.enc.encryption_key(), KeyHolder::Member { member: author.id }, subject),
                    envelope(self.chain, chart.encryption_key(), KeyHolder::Chart { patient, epoch: *epoch }, subject),
                ];
                for team in self.team_grants.get(&patient).into_iter().flatten() {
                    let (epoch, key) = &self.teams[team];
                    envelopes.push(envelope(
                        self.chain,
                        key.encryption_key(),
                        KeyHolder::Team { team: *team, epoch: *epoch },
                        subject,
                    ));
                }
                let recipients = envelopes.iter().map(|e| e.holder).collect();
                let sidecar = Sidecar { envelopes, metadata: Some(vec![1]), threshold: Trailing(None) };
                let body = RegisterRecord {
                    record: *record,
                    patient,
                    version: 1,
                    digest: digest_of(*record, 1),
                    size_bytes: 4096,
                    recipients,
                };
                txs.push(self.tx(author, TxKind::RegisterRecord(body), Some(&sidecar)));
            }
            outcomes.extend(self.block(txs));
        }
        outcomes
    }

    /// `doctor` creates care team `team` of `members` (itself among them, or not: the test says).
    fn team_create(&mut self, doctor: &mut Who, team: MemberId, members: &[(MemberId, EncryptionKey)]) -> TxOutcome {
        let key = wrap::generate(KemSuite::X25519);
        let subject = KeySubject::Team { team, epoch: 0 };
        let envelopes = members
            .iter()
            .map(|(id, key)| envelope(self.chain, key, KeyHolder::Member { member: *id }, subject))
            .collect();
        let kind = TxKind::TeamCreate(TeamCreate {
            team,
            public_key: key.encryption_key().clone(),
            members: members.iter().map(|w| w.0).collect(),
        });
        let sidecar = Sidecar { envelopes, metadata: None, threshold: Default::default() };
        let outcome = self.one(doctor, kind, Some(&sidecar));
        if outcome.is_applied() {
            self.teams.insert(team, (0, key));
        }
        outcome
    }

    /// `signer` adds `member`, wrapping team epoch `epoch` for them.
    fn team_add(&mut self, signer: &mut Who, team: MemberId, member: &Who, epoch: u32) -> TxOutcome {
        let subject = KeySubject::Team { team, epoch };
        let holder = KeyHolder::Member { member: member.id };
        let sidecar = Sidecar {
            envelopes: vec![envelope(self.chain, member.enc.encryption_key(), holder, subject)],
            metadata: None,
            threshold: Default::default(),
        };
        self.one(signer, TxKind::TeamAdd(TeamAdd { team, member: member.id }), Some(&sidecar))
    }

    /// `signer` removes `member`: the next key wrapped for `remaining`, and with `link` the current
    /// key wrapped for it.
    fn team_remove(
        &mut self,
        signer: &mut Who,
        team: MemberId,
        member: MemberId,
        remaining: &[(MemberId, EncryptionKey)],
        link: bool,
    ) -> TxOutcome {
        let epoch = self.teams[&team].0;
        let next = wrap::generate(KemSuite::X25519);
        let subject = KeySubject::Team { team, epoch: epoch + 1 };
        let mut envelopes: Vec<SidecarEnvelope> = remaining
            .iter()
            .map(|(id, key)| envelope(self.chain, key, KeyHolder::Member { member: *id }, subject))
            .collect();
        if link {
            let holder = KeyHolder::Team { team, epoch: epoch + 1 };
            envelopes.push(envelope(self.chain, next.encryption_key(), holder, KeySubject::Team { team, epoch }));
        }
        let kind = TxKind::TeamRemove(TeamRemove { team, member, public_key: next.encryption_key().clone() });
        let sidecar = Sidecar { envelopes, metadata: None, threshold: Default::default() };
        let outcome = self.one(signer, kind, Some(&sidecar));
        if outcome.is_applied() {
            self.teams.insert(team, (epoch + 1, next));
        }
        outcome
    }

    /// `patient` grants care team `team` all of their records: the chart's current key for the
    /// team, the next epoch for `holders` (the patient and any other holder).
    fn grant_team_all(
        &mut self,
        patient: &mut Who,
        team: MemberId,
        holders: &[(MemberId, EncryptionKey)],
    ) -> TxOutcome {
        let pid = patient.id;
        let chart_epoch = self.chart[&pid].0;
        let (team_epoch, team_key) = (self.teams[&team].0, self.teams[&team].1.encryption_key().clone());
        let (new_chart, mut sidecar, next) = self.next_chart(pid, holders);
        let holder = KeyHolder::Team { team, epoch: team_epoch };
        let current = KeySubject::Chart { patient: pid, epoch: chart_epoch };
        sidecar.envelopes.insert(0, envelope(self.chain, &team_key, holder, current));
        let kind = TxKind::Grant(Grant {
            patient: pid,
            grantee: team,
            scope: GrantScope::All,
            write: false,
            expires_at: None,
            chart_epoch: Some(chart_epoch),
            new_chart: Some(new_chart),
        });
        let outcome = self.one(patient, kind, Some(&sidecar));
        if outcome.is_applied() {
            self.chart.insert(pid, (chart_epoch + 1, next));
            self.team_grants.entry(pid).or_default().push(team);
        }
        outcome
    }

    /// `signer` appoints `delegate` for `patient`, wrapping chart epoch `epoch` for them.
    fn appoint(&mut self, signer: &mut Who, patient: MemberId, delegate: &Who, epoch: u32) -> TxOutcome {
        let subject = KeySubject::Chart { patient, epoch };
        let holder = KeyHolder::Member { member: delegate.id };
        let sidecar = Sidecar {
            envelopes: vec![envelope(self.chain, delegate.enc.encryption_key(), holder, subject)],
            metadata: None,
            threshold: Default::default(),
        };
        let kind = TxKind::Delegate(Delegate {
            patient,
            delegate: delegate.id,
            appoint: true,
            chart_epoch: Some(epoch),
            new_chart: None,
        });
        self.one(signer, kind, Some(&sidecar))
    }

    /// The next epoch of `patient`'s chart wrapped for `recipients`: what a revocation of an
    /// `--all` grant or a dismissal carries. Returns the new chart key with it.
    fn next_chart(
        &self,
        patient: MemberId,
        recipients: &[(MemberId, EncryptionKey)],
    ) -> (NewChartEpoch, Sidecar, DecryptionKey) {
        let epoch = self.chart.get(&patient).map_or(0, |c| c.0) + 1;
        let next = wrap::generate(KemSuite::X25519);
        let subject = KeySubject::Chart { patient, epoch };
        let mut envelopes: Vec<SidecarEnvelope> = recipients
            .iter()
            .map(|(id, key)| envelope(self.chain, key, KeyHolder::Member { member: *id }, subject))
            .collect();
        let link = KeyHolder::Chart { patient, epoch };
        envelopes.push(envelope(
            self.chain,
            next.encryption_key(),
            link,
            KeySubject::Chart { patient, epoch: epoch - 1 },
        ));
        let new_chart = NewChartEpoch {
            public_key: next.encryption_key().clone(),
            recipients: recipients.iter().map(|w| w.0).collect(),
        };
        (new_chart, Sidecar { envelopes, metadata: None, threshold: Default::default() }, next)
    }

    /// `signer` dismisses `delegate`, the chart moving on for `recipients`.
    fn dismiss(
        &mut self,
        signer: &mut Who,
        patient: MemberId,
        delegate: &Who,
        recipients: &[(MemberId, EncryptionKey)],
    ) -> TxOutcome {
        let (new_chart, sidecar, next) = self.next_chart(patient, recipients);
        let kind = TxKind::Delegate(Delegate {
            patient,
            delegate: delegate.id,
            appoint: false,
            chart_epoch: None,
            new_chart: Some(new_chart),
        });
        let outcome = self.one(signer, kind, Some(&sidecar));
        if outcome == TxOutcome::Applied {
            let epoch = self.chart.get(&patient).map_or(0, |c| c.0) + 1;
            self.chart.insert(patient, (epoch, next));
        }
        outcome
    }

    fn break_glass(&mut self, who: &mut Who, patient: MemberId, reason: Option<EmergencyReason>, ms: u64) -> TxOutcome {
        let kind = TxKind::BreakGlass(BreakGlass { patient, reason, duration_ms: ms });
        self.one(who, kind, None)
    }

    fn read_for(&mut self, who: &mut Who, record: RecordId, purpose: PurposeOfUse) -> TxOutcome {
        let kind = TxKind::RecordAccess(RecordAccess { record, version: 1, purpose });
        self.one(who, kind, None)
    }

    fn flagged(&self) -> Vec<medledger_ledger::state::FlaggedEntry> {
        self.state
            .range(keys::FLAGGED.to_vec()..)
            .take_while(|(k, _)| k.starts_with(keys::FLAGGED))
            .map(|(_, v)| borsh::from_slice(v).unwrap())
            .collect()
    }

    fn read(&mut self, who: &mut Who, record: RecordId) -> TxOutcome {
        self.read_version(who, record, 1)
    }

    fn read_version(&mut self, who: &mut Who, record: RecordId, version: u32) -> TxOutcome {
        let kind = TxKind::RecordAccess(RecordAccess { record, version, purpose: PurposeOfUse::Treat });
        self.one(who, kind, None)
    }

    fn audit_of(&self, patient: &Who) -> Vec<AuditEvent> {
        let prefix = keys::audit_of(&patient.id);
        self.state
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| borsh::from_slice(v).unwrap())
            .collect()
    }

    /// The state without the entries every valid transaction writes (nonce, result, audit, and a
    /// rejection's denial count).
    fn policy_state(&self) -> State {
        self.state
            .iter()
            .filter(|(k, _)| {
                ![keys::NONCE, keys::TX_RESULT, keys::AUDIT, keys::DENIALS, keys::FLAGGED]
                    .iter()
                    .any(|p| k.starts_with(p))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn rejected(reason: Rejection) -> TxOutcome {
    TxOutcome::Rejected { reason }
}

struct Cast {
    w: World,
    admin: Who,
    other_admin: Who,
    patient: Who,
    d1: Who,
    d2: Who,
    nurse: Who,
    auditor: Who,
}

fn cast() -> Cast {
    let mut admin = Who::new(1);
    let other_admin = Who::new(2);
    let mut w = World::new(&[("org1", &admin), ("org2", &other_admin)]);
    let (patient, d1, d2, nurse, auditor) = (Who::new(10), Who::new(11), Who::new(12), Who::new(13), Who::new(14));
    for (who, role) in [
        (&patient, Role::Patient),
        (&d1, Role::Doctor),
        (&d2, Role::Doctor),
        (&nurse, Role::Nurse),
        (&auditor, Role::Auditor),
    ] {
        assert_eq!(w.enroll(&mut admin, who, "org1", role), TxOutcome::Applied);
    }
    Cast { w, admin, other_admin, patient, d1, d2, nurse, auditor }
}

#[test]
fn enrolment_rows() {
    let mut c = cast();
    let newcomer = Who::new(20);
    // Denied: an admin of another organisation, a doctor, a patient with a display name.
    assert_eq!(c.w.enroll(&mut c.other_admin, &newcomer, "org1", Role::Nurse), rejected(Rejection::NotAdminOfOrg));
    assert_eq!(c.w.enroll(&mut c.d1, &newcomer, "org1", Role::Nurse), rejected(Rejection::NotAdminOfOrg));
    assert_eq!(c.w.enroll(&mut c.admin, &newcomer, "nope", Role::Nurse), rejected(Rejection::UnknownOrg));
    assert_eq!(c.w.enroll(&mut c.admin, &c.d1, "org1", Role::Nurse), rejected(Rejection::MemberExists));
    let reused =
        Who { id: MemberId::new([21; 16]), sign: c.d1.sign.clone(), enc: wrap::generate(KemSuite::X25519), nonce: 0 };
    assert_eq!(c.w.enroll(&mut c.admin, &reused, "org1", Role::Nurse), rejected(Rejection::KeyInUse));
    // Allowed: the other organisation's admin enrols into its own organisation.
    assert_eq!(c.w.enroll(&mut c.other_admin, &newcomer, "org2", Role::Nurse), TxOutcome::Applied);
    // Custody is for patients only; a custodial patient is marked so on the ledger.
    let staff = Who::new(22);
    assert_eq!(c.w.enroll_as(&mut c.admin, &staff, "org1", Role::Doctor, true), rejected(Rejection::InvalidEnrollment));
    let migrated = Who::new(23);
    assert_eq!(c.w.enroll_as(&mut c.admin, &migrated, "org1", Role::Patient, true), TxOutcome::Applied);
    let entry: medledger_ledger::state::MemberEntry =
        borsh::from_slice(&c.w.state[&keys::member(&migrated.id)]).unwrap();
    assert!(entry.custodial);
    let entry: medledger_ledger::state::MemberEntry =
        borsh::from_slice(&c.w.state[&keys::member(&c.patient.id)]).unwrap();
    assert!(!entry.custodial);
}

#[test]
fn suspension_rows() {
    let mut c = cast();
    let r = |n| RecordId::new([n; 16]);
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, r(1)), TxOutcome::Applied);
    let suspend = |id, suspended| TxKind::Suspend(Suspend { member: id, suspended });
    // Denied: another organisation's admin, a doctor, an admin suspending themself, nobody.
    assert_eq!(c.w.one(&mut c.other_admin, suspend(c.d1.id, true), None), rejected(Rejection::NotAdminOfOrg));
    assert_eq!(c.w.one(&mut c.d2, suspend(c.d1.id, true), None), rejected(Rejection::NotAdminOfOrg));
    let admin_id = c.admin.id;
    assert_eq!(c.w.one(&mut c.admin, suspend(admin_id, true), None), rejected(Rejection::SelfSuspension));
    assert_eq!(c.w.one(&mut c.admin, suspend(MemberId::new([99; 16]), true), None), rejected(Rejection::UnknownMember));
    // Allowed: the organisation's admin. The suspended doctor can then do nothing, and each
    // attempt on a patient's chart is a denied event in that patient's trail.
    assert_eq!(c.w.one(&mut c.admin, suspend(c.d1.id, true), None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d1, r(1)), rejected(Rejection::SignerSuspended));
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, r(2)), rejected(Rejection::SignerSuspended));
    let last = c.w.audit_of(&c.patient).pop().unwrap();
    assert_eq!((last.actor, last.decision), (c.d1.id, Decision::Denied { reason: Rejection::SignerSuspended }));
    // Nobody grants to a suspended member; lifting the suspension restores what the grants allow.
    assert_eq!(
        c.w.grant(&mut c.patient, &c.d1, GrantScope::Record(r(1)), false, None),
        rejected(Rejection::UnknownMember)
    );
    assert_eq!(c.w.one(&mut c.admin, suspend(c.d1.id, false), None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d1, r(1)), TxOutcome::Applied);
}

#[test]
fn version_rows() {
    let mut c = cast();
    let r = |n| RecordId::new([n; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, r(1)), TxOutcome::Applied);
    let pid = c.patient.id;
    // Denied: skipping or repeating a version, an unknown record, another patient's record, and
    // everyone who may not write for the patient.
    assert_eq!(c.w.write(&mut c.patient, pid, r(1), 3, &[]), rejected(Rejection::VersionMismatch));
    assert_eq!(c.w.write(&mut c.patient, pid, r(9), 2, &[]), rejected(Rejection::UnknownRecord));
    assert_eq!(c.w.write(&mut c.d1, pid, r(1), 2, &[]), rejected(Rejection::NoWriteGrant));
    assert_eq!(c.w.write(&mut c.nurse, pid, r(1), 2, &[]), rejected(Rejection::NotAllowedToWrite));
    assert_eq!(c.w.write(&mut c.admin, pid, r(1), 2, &[]), rejected(Rejection::AdminHasNoClinicalAccess));
    let mut other = Who::new(30);
    assert_eq!(c.w.enroll(&mut c.admin, &other, "org1", Role::Patient), TxOutcome::Applied);
    let other_id = other.id;
    assert_eq!(c.w.write(&mut other, other_id, r(1), 2, &[]), rejected(Rejection::WrongPatient));
    // A per-record grantee of version 1 reads it.
    assert_eq!(c.w.grant(&mut c.patient, &c.nurse, GrantScope::Record(r(1)), false, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.nurse, r(1)), TxOutcome::Applied);
    // Allowed: the patient appends version 2; version 1 stays readable (FHIR vread and history)
    // under the same rules, as it was registered; a version that never was is not.
    assert_eq!(c.w.write(&mut c.patient, pid, r(1), 2, &[]), TxOutcome::Applied);
    assert_eq!(c.w.write(&mut c.patient, pid, r(1), 2, &[]), rejected(Rejection::VersionMismatch), "no second v2");
    assert_eq!(c.w.read_version(&mut c.patient, r(1), 1), TxOutcome::Applied);
    assert_eq!(c.w.read_version(&mut c.patient, r(1), 2), TxOutcome::Applied);
    assert_eq!(c.w.read_version(&mut c.patient, r(1), 0), rejected(Rejection::VersionMismatch));
    assert_eq!(c.w.read_version(&mut c.patient, r(1), 3), rejected(Rejection::VersionMismatch));
    // The per-record grant covers only versions wrapped for the grantee: v1 was, v2 was not.
    assert_eq!(c.w.read_version(&mut c.nurse, r(1), 1), TxOutcome::Applied);
    assert_eq!(c.w.read_version(&mut c.nurse, r(1), 2), rejected(Rejection::AccessDenied));
    // Another patient's reader gets nothing of any version.
    assert_eq!(c.w.read_version(&mut other, r(1), 1), rejected(Rejection::AccessDenied));
    let v1 = keys::record_version(&r(1), 1);
    let first: medledger_ledger::state::RecordEntry = borsh::from_slice(&c.w.state[&v1]).unwrap();
    assert_eq!((first.version, first.digest), (1, digest_of(r(1), 1)), "version 1 keeps its own entry");
    // A doctor with the write grant appends v3 and carries the nurse's grant forward.
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    let nurse = Who { id: c.nurse.id, sign: c.nurse.sign.clone(), enc: c.nurse.enc.clone(), nonce: 0 };
    assert_eq!(c.w.write(&mut c.d1, pid, r(1), 3, &[&nurse]), TxOutcome::Applied);
    assert_eq!(c.w.read_version(&mut c.nurse, r(1), 3), TxOutcome::Applied);
    let entry: medledger_ledger::state::RecordEntry = borsh::from_slice(&c.w.state[&keys::record(&r(1))]).unwrap();
    assert_eq!((entry.version, entry.author, entry.digest), (3, c.d1.id, digest_of(r(1), 3)));
    // Every write is in the patient's trail, denied ones included.
    let writes =
        c.w.audit_of(&c.patient)
            .iter()
            .filter(|e| matches!(e.action, medledger_ledger::state::AuditAction::Write { .. }))
            .count();
    assert_eq!(writes, 3 + 6, "3 applied writes and 6 denied attempts on the patient's chart");
    // Erasure takes every version with it.
    assert_eq!(c.w.erase(&mut c.patient, r(1)), TxOutcome::Applied);
    assert!((1..=3).all(|v| !c.w.state.contains_key(&keys::record_version(&r(1), v))));
    assert_eq!(c.w.read_version(&mut c.patient, r(1), 1), rejected(Rejection::RecordErased));
}

#[test]
fn record_creation_rows() {
    let mut c = cast();
    let r = |n| RecordId::new([n; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, r(1)), TxOutcome::Applied, "patient self-reports");
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, r(2)), rejected(Rejection::NoWriteGrant), "doctor without grant");
    assert_eq!(c.w.put(&mut c.nurse, c.patient.id, r(2)), rejected(Rejection::NotAllowedToWrite), "nurse never writes");
    assert_eq!(c.w.put(&mut c.admin, c.patient.id, r(2)), rejected(Rejection::AdminHasNoClinicalAccess));
    assert_eq!(c.w.put_own(&mut c.patient, r(1)), rejected(Rejection::RecordExists));
    // A read-only --all grant does not let a doctor write.
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::All, false, None), TxOutcome::Applied);
    assert_eq!(c.w.put(&mut c.d2, c.patient.id, r(2)), rejected(Rejection::NoWriteGrant));
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, r(2)), TxOutcome::Applied, "doctor with --all --write");
    // Envelopes must cover the chart key: a record without the chart envelope is refused.
    let saved = c.w.chart.remove(&c.patient.id);
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, r(3)), rejected(Rejection::RecipientsMissing));
    c.w.chart.insert(c.patient.id, saved.unwrap());
    // An expired write grant stops writes.
    let now = c.w.time;
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, Some(now + 1_500)), TxOutcome::Applied);
    c.w.time += 10_000;
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, r(4)), rejected(Rejection::GrantExpired));
}

/// Threshold release (DESIGN §6a): on a network with share keys, every record version carries one
/// well-formed share per validator with the network's threshold; elsewhere, none.
#[test]
fn threshold_share_rows() {
    let mut admin = Who::new(1);
    let other_admin = Who::new(2);
    let mut w = World::with_validators(&[("org1", &admin), ("org2", &other_admin)], 3, true);
    let mut patient = Who::new(10);
    assert_eq!(w.enroll(&mut admin, &patient, "org1", Role::Patient), TxOutcome::Applied);
    let r = |n| RecordId::new([n; 16]);
    assert_eq!(w.put_own(&mut patient, r(1)), TxOutcome::Applied, "one share per validator, threshold f + 1");
    let entry: medledger_ledger::state::RecordEntry =
        medledger_ledger::state::read(&w.state, &keys::record(&r(1))).unwrap();
    assert_eq!(entry.threshold.0.map(|t| (t.epoch, t.threshold)), Some((0, 1)));
    let good = w.deal(r(2), 1);
    let mut bad = Vec::new();
    bad.push(("no shares", Trailing(None)));
    let mut fewer = good.clone();
    fewer.shares.pop();
    fewer.validators.pop();
    bad.push(("a validator left out", Trailing(Some(fewer))));
    let mut more = good.clone();
    more.shares.push(good.shares[0].clone());
    more.validators.push(3);
    bad.push(("a share too many", Trailing(Some(more))));
    let mut elsewhere = good.clone();
    elsewhere.validators[2] = 7;
    bad.push(("a share for a validator outside the set", Trailing(Some(elsewhere))));
    let mut other_threshold = ThresholdShares { threshold: 2, ..good.clone() };
    other_threshold.verifier.push(good.verifier[0]);
    bad.push(("another threshold", Trailing(Some(other_threshold))));
    bad.push(("another epoch", Trailing(Some(ThresholdShares { epoch: 1, ..good.clone() }))));
    let mut other_suite = good.clone();
    let xwing = wrap::generate(KemSuite::XWing);
    other_suite.shares[1].envelope =
        wrap::seal(xwing.encryption_key(), &[1u8; 33], &share_context(w.chain, r(2), 1, 0, 1)).unwrap();
    bad.push(("a share under another suite than its validator's key", Trailing(Some(other_suite))));
    for (what, shares) in bad {
        w.next_shares = Some(shares);
        assert_eq!(w.put_own(&mut patient, r(2)), rejected(Rejection::ThresholdShares), "{what}");
    }
    assert!(w.audit_of(&patient).iter().filter(|e| matches!(e.decision, Decision::Denied { .. })).count() >= 6);
    w.next_shares = Some(Trailing(Some(good)));
    assert_eq!(w.put_own(&mut patient, r(2)), TxOutcome::Applied);

    // A network without share keys refuses shares.
    let mut c = cast();
    c.w.next_shares = Some(Trailing(Some(w.deal(r(3), 1))));
    assert_eq!(c.w.put_own(&mut c.patient, r(3)), rejected(Rejection::ThresholdShares));
    assert_eq!(c.w.put_own(&mut c.patient, r(3)), TxOutcome::Applied);
    // Shares ride only on record writes: on a grant the transaction cannot be in a block.
    let holder = KeyHolder::Member { member: c.d1.id };
    let subject = KeySubject::Chart { patient: c.patient.id, epoch: 0 };
    let sidecar = Sidecar {
        envelopes: vec![envelope(c.w.chain, c.d1.enc.encryption_key(), holder, subject)],
        metadata: None,
        threshold: Trailing(Some(w.deal(r(3), 1))),
    };
    let kind = TxKind::Grant(Grant {
        patient: c.patient.id,
        grantee: c.d1.id,
        scope: GrantScope::All,
        write: false,
        expires_at: None,
        chart_epoch: Some(0),
        new_chart: None,
    });
    let tx = c.w.tx(&mut c.patient, kind, Some(&sidecar));
    assert!(matches!(c.w.try_block(vec![tx]), Err(TxInvalid::Sidecar(_))));
    // Commitments that are not as many as the threshold, or not group points, make the sidecar
    // malformed: no block carries it.
    let mut short = w.deal(r(4), 1);
    short.verifier.clear();
    let mut off_curve = w.deal(r(4), 1);
    off_curve.emergency_verifier[0] = medledger_types::Commitment::new([0xff; 32]);
    for shares in [short, off_curve] {
        let sidecar = Sidecar { envelopes: Vec::new(), metadata: None, threshold: Trailing(Some(shares)) };
        assert!(Sidecar::decode(&sidecar.encode()).is_err());
    }
}

/// Break-glass (DESIGN §3): doctors and emergency members, with a reason, time-boxed, rate-limited,
/// every opening and attempt flagged; reads under it only for emergency treatment.
#[test]
fn break_glass_rows() {
    let mut c = cast();
    let mut medic = Who::new(20);
    assert_eq!(c.w.enroll(&mut c.admin, &medic, "org1", Role::Emergency), TxOutcome::Applied);
    let record = RecordId::new([1; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, record), TxOutcome::Applied);
    let reason = Some(EmergencyReason::Unconscious);
    let hour = 3_600_000;
    let etreat = PurposeOfUse::Etreat;

    assert_eq!(c.w.read_for(&mut c.d1, record, etreat), rejected(Rejection::AccessDenied), "no glass broken yet");
    assert_eq!(c.w.break_glass(&mut c.nurse, c.patient.id, reason, hour), rejected(Rejection::BreakGlassRole));
    assert_eq!(c.w.break_glass(&mut c.admin, c.patient.id, reason, hour), rejected(Rejection::BreakGlassRole));
    let own = c.patient.id;
    assert_eq!(c.w.break_glass(&mut c.patient, own, reason, hour), rejected(Rejection::BreakGlassRole));
    assert_eq!(c.w.break_glass(&mut c.d1, c.patient.id, None, hour), rejected(Rejection::BreakGlassReason));
    assert_eq!(c.w.break_glass(&mut c.d1, c.patient.id, reason, 0), rejected(Rejection::BadExpiry));
    assert_eq!(c.w.break_glass(&mut c.d1, c.patient.id, reason, 24 * hour + 1), rejected(Rejection::BadExpiry));
    assert_eq!(c.w.break_glass(&mut c.d1, c.nurse.id, reason, hour), rejected(Rejection::UnknownPatient));
    let denied_attempts = c.w.flagged().len();
    // The refused emergency read and the six refused openings on a patient (not the one naming a
    // nurse as patient: it concerns no patient's trail).
    assert_eq!(denied_attempts, 7, "every refused attempt on the patient is flagged");

    assert_eq!(c.w.break_glass(&mut c.d1, c.patient.id, reason, hour), TxOutcome::Applied);
    assert_eq!(c.w.read_for(&mut c.d1, record, PurposeOfUse::Treat), rejected(Rejection::AccessDenied), "ETREAT only");
    assert_eq!(c.w.read_for(&mut c.d1, record, etreat), TxOutcome::Applied);
    assert_eq!(c.w.read_for(&mut c.d2, record, etreat), rejected(Rejection::AccessDenied), "the glass is d1's");
    assert_eq!(
        c.w.break_glass(&mut medic, c.patient.id, Some(EmergencyReason::MassCasualty), hour),
        TxOutcome::Applied
    );
    assert_eq!(c.w.read_for(&mut medic, record, etreat), TxOutcome::Applied, "emergency role");
    // Reads allowed only by break-glass are marked, so validators release emergency shares.
    let bases = c.w.state.keys().filter(|k| k.starts_with(keys::ACCESS_BASIS)).count();
    assert_eq!(bases, 2);
    let trail = c.w.audit_of(&c.patient);
    assert!(trail.iter().any(|e| matches!(e.action, AuditAction::BreakGlass { until: Some(_), .. })
        && e.decision == Decision::Allowed
        && e.is_flagged()));
    let flagged = c.w.flagged();
    // + two openings, two allowed emergency reads and d2's refused one (the TREAT read is not flagged).
    assert_eq!(flagged.len(), denied_attempts + 5, "openings and emergency reads, allowed or not");
    assert!(flagged.iter().all(|f| f.patient == c.patient.id && f.event.is_flagged()));

    // The window closes.
    c.w.time += hour;
    assert_eq!(c.w.read_for(&mut c.d1, record, etreat), rejected(Rejection::BreakGlassExpired));

    // At most 3 openings per member in 24 hours; the limit slides.
    for _ in 0..2 {
        assert_eq!(c.w.break_glass(&mut c.d1, c.patient.id, reason, hour), TxOutcome::Applied);
    }
    assert_eq!(c.w.break_glass(&mut c.d1, c.patient.id, reason, hour), rejected(Rejection::BreakGlassRateLimited));
    c.w.time += 24 * hour;
    assert_eq!(c.w.break_glass(&mut c.d1, c.patient.id, reason, hour), TxOutcome::Applied);
}

impl World {
    fn ctx(&self, height: Height, time: Timestamp) -> BlockContext<'_> {
        BlockContext { chain_id: self.chain, height, time, validators: &self.validator_keys }
    }

    fn erase(&mut self, who: &mut Who, record: RecordId) -> TxOutcome {
        self.one(who, TxKind::Erase(Erase { record }), None)
    }

    fn hold(&mut self, who: &mut Who, patient: MemberId, record: Option<RecordId>, hold: bool) -> TxOutcome {
        self.one(who, TxKind::LegalHold(LegalHold { patient, record, hold }), None)
    }
}

#[test]
fn erasure_and_legal_hold_rows() {
    let mut c = cast();
    let (record, kept) = (RecordId::new([1; 16]), RecordId::new([2; 16]));
    assert_eq!(c.w.put_own(&mut c.patient, record), TxOutcome::Applied);
    let pid = c.patient.id;
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::Record(record), false, None), TxOutcome::Applied);
    assert_eq!(c.w.write(&mut c.patient, pid, record, 2, &[&c.d1]), TxOutcome::Applied);
    assert_eq!(c.w.put_own(&mut c.patient, kept), TxOutcome::Applied);

    // Only the patient erases.
    assert_eq!(c.w.erase(&mut c.d1, record), rejected(Rejection::NotThePatient), "a grantee");
    assert_eq!(c.w.erase(&mut c.auditor, record), rejected(Rejection::NotThePatient));
    assert_eq!(c.w.erase(&mut c.admin, record), rejected(Rejection::AdminHasNoClinicalAccess));
    assert_eq!(c.w.erase(&mut c.patient, RecordId::new([9; 16])), rejected(Rejection::UnknownRecord));

    // Only auditors place and lift holds.
    for who in [&mut c.patient, &mut c.d1, &mut c.nurse, &mut c.admin] {
        assert_eq!(c.w.hold(who, pid, None, true), rejected(Rejection::NotAnAuditor));
    }
    let nurse = c.nurse.id;
    assert_eq!(c.w.hold(&mut c.auditor, nurse, None, true), rejected(Rejection::UnknownPatient));
    assert_eq!(c.w.hold(&mut c.auditor, pid, None, false), rejected(Rejection::NoSuchHold));
    let elsewhere = RecordId::new([9; 16]);
    assert_eq!(c.w.hold(&mut c.auditor, pid, Some(elsewhere), true), rejected(Rejection::UnknownRecord));

    // A hold on the chart, then on the record, each blocks erasure until lifted.
    assert_eq!(c.w.hold(&mut c.auditor, pid, None, true), TxOutcome::Applied);
    assert_eq!(c.w.erase(&mut c.patient, record), rejected(Rejection::LegalHold));
    assert_eq!(c.w.hold(&mut c.auditor, pid, Some(record), false), rejected(Rejection::NoSuchHold), "scopes differ");
    assert_eq!(c.w.hold(&mut c.auditor, pid, None, false), TxOutcome::Applied);
    assert_eq!(c.w.hold(&mut c.auditor, pid, Some(record), true), TxOutcome::Applied);
    assert_eq!(c.w.erase(&mut c.patient, record), rejected(Rejection::LegalHold));
    assert_eq!(c.w.erase(&mut c.patient, kept), TxOutcome::Applied, "the hold covers one record");
    assert_eq!(c.w.hold(&mut c.auditor, pid, Some(record), false), TxOutcome::Applied);
    assert!(c.w.read_version(&mut c.d1, record, 2).is_applied(), "still readable before erasure");
    assert_eq!(c.w.erase(&mut c.patient, record), TxOutcome::Applied);

    // What is left: a tombstone; the id is dead for every kind.
    assert!(!c.w.state.contains_key(&keys::record(&record)));
    assert!(!c.w.state.contains_key(&keys::patient_record(&pid, &record)));
    let tombstone: medledger_ledger::state::ErasedEntry =
        borsh::from_slice(&c.w.state[&keys::erased(&record)]).expect("tombstone");
    assert_eq!((tombstone.patient, tombstone.versions), (pid, 2));
    assert_eq!(c.w.read(&mut c.patient, record), rejected(Rejection::RecordErased));
    assert_eq!(c.w.read(&mut c.d1, record), rejected(Rejection::RecordErased));
    assert_eq!(c.w.erase(&mut c.patient, record), rejected(Rejection::RecordErased));
    assert_eq!(c.w.put_own(&mut c.patient, record), rejected(Rejection::RecordErased), "ids are never reused");
    assert_eq!(c.w.write(&mut c.patient, pid, record, 3, &[]), rejected(Rejection::RecordErased));
    assert_eq!(
        c.w.grant(&mut c.patient, &c.d2, GrantScope::Record(record), false, None),
        rejected(Rejection::RecordErased)
    );
    assert_eq!(c.w.hold(&mut c.auditor, pid, Some(record), true), rejected(Rejection::RecordErased));

    // The trail: refused and allowed erasures, holds, and the reads of the erased record.
    let trail = c.w.audit_of(&c.patient);
    let erasures: Vec<&Decision> = trail
        .iter()
        .filter(|e| matches!(e.action, AuditAction::Erase { record: r, .. } if r == record))
        .map(|e| &e.decision)
        .collect();
    assert_eq!(erasures.iter().filter(|d| ***d == Decision::Allowed).count(), 1);
    assert_eq!(erasures.len(), 7, "d1, auditor, admin, two under hold, the erasure and one after it");
    assert!(trail.iter().any(|e| e.action == AuditAction::Erase { record, versions: 2 } && e.actor == pid));
    let holds = trail.iter().filter(|e| matches!(e.action, AuditAction::LegalHold { .. })).count();
    assert_eq!(
        holds,
        4 + 3 + 4 + 1,
        "four non-auditors, two lifts of no hold, an unknown record, four applied, the dead id"
    );
    let dead_reads = trail
        .iter()
        .filter(|e| e.decision == Decision::Denied { reason: Rejection::RecordErased } && e.actor == c.d1.id)
        .count();
    assert_eq!(dead_reads, 1, "a read of an erased record is still on the patient's trail");
}

/// A ciphertext belongs to exactly one record version (finding 1 of the security review): a
/// registration, append or rotation naming a digest any record version already named is refused,
/// so erasing or rotating one's own record can never name another's ciphertext; and a rotation,
/// which deletes the replaced ciphertext, is refused under a legal hold like an erasure.
#[test]
fn a_ciphertext_digest_belongs_to_one_record_version_and_holds_stop_rotation() {
    let mut c = cast();
    let mut mallory = Who::new(30);
    assert_eq!(c.w.enroll(&mut c.admin, &mallory, "org1", Role::Patient), TxOutcome::Applied);
    let (victim, own) = (RecordId::new([1; 16]), RecordId::new([2; 16]));
    assert_eq!(c.w.put_own(&mut c.patient, victim), TxOutcome::Applied);
    let taken = digest_of(victim, 1);

    // Naming the victim's digest: a new record, a new version of one's own, a rotation's next
    // version; each refused and changing nothing but the nonce, result and trail.
    let mid = mallory.id;
    c.w.next_digest = Some(taken);
    let before = c.w.policy_state();
    assert_eq!(c.w.put_own(&mut mallory, own), rejected(Rejection::DigestInUse), "a new record");
    assert_eq!(c.w.policy_state(), before);
    assert_eq!(c.w.put_own(&mut mallory, own), TxOutcome::Applied);
    c.w.next_digest = Some(taken);
    assert_eq!(c.w.write(&mut mallory, mid, own, 2, &[]), rejected(Rejection::DigestInUse), "an append");
    c.w.next_digest = Some(digest_of(own, 1));
    assert_eq!(c.w.write(&mut mallory, mid, own, 2, &[]), rejected(Rejection::DigestInUse), "its own earlier one");
    let (next, sidecar) = c.w.registration(&mallory, mid, own, 2, &[]);
    let kind = TxKind::Rotate(medledger_ledger::Rotate { next: next.clone(), replaces: taken });
    assert_eq!(c.w.submit_version(&mut mallory, kind, sidecar.clone()), rejected(Rejection::VersionMismatch));
    c.w.next_digest = Some(taken);
    let (forged, forged_sidecar) = c.w.registration(&mallory, mid, own, 2, &[]);
    let kind = TxKind::Rotate(medledger_ledger::Rotate { next: forged, replaces: digest_of(own, 1) });
    assert_eq!(c.w.submit_version(&mut mallory, kind, forged_sidecar), rejected(Rejection::DigestInUse));
    // Her own rotation, with a fresh digest, is applied.
    let kind = TxKind::Rotate(medledger_ledger::Rotate { next, replaces: digest_of(own, 1) });
    assert_eq!(c.w.submit_version(&mut mallory, kind, sidecar), TxOutcome::Applied);

    // A legal hold (on the chart, then on the record) refuses a rotation until lifted.
    let pid = c.patient.id;
    let rotate = |w: &mut World, who: &mut Who, version: u32| {
        let (next, sidecar) = w.registration(who, pid, victim, version, &[]);
        let replaces = digest_of(victim, version - 1);
        w.submit_version(who, TxKind::Rotate(medledger_ledger::Rotate { next, replaces }), sidecar)
    };
    for scope in [None, Some(victim)] {
        assert_eq!(c.w.hold(&mut c.auditor, pid, scope, true), TxOutcome::Applied);
        assert_eq!(rotate(&mut c.w, &mut c.patient, 2), rejected(Rejection::LegalHold));
        assert_eq!(c.w.hold(&mut c.auditor, pid, scope, false), TxOutcome::Applied);
    }
    assert_eq!(rotate(&mut c.w, &mut c.patient, 2), TxOutcome::Applied);
    // The version a rotation replaced is gone (its ciphertext is deleted): no longer readable.
    assert_eq!(c.w.read_version(&mut c.patient, victim, 1), rejected(Rejection::VersionMismatch));
    assert_eq!(c.w.read_version(&mut c.patient, victim, 2), TxOutcome::Applied);
    assert!(!c.w.state.contains_key(&keys::record_version(&victim, 1)));
}

/// Finding 5 of the security review: admins have no clinical view, not even of a record list; an
/// auditor's view of a chart is itself an audited event (a chart review, open for a window).
#[test]
fn chart_review_rows() {
    let mut c = cast();
    let pid = c.patient.id;
    let review =
        |patient| TxKind::ChartReview(medledger_ledger::ChartReview { patient, purpose: PurposeOfUse::Hoperat });
    let before = c.w.policy_state();
    assert_eq!(c.w.one(&mut c.admin, review(pid), None), rejected(Rejection::AdminHasNoClinicalAccess));
    assert_eq!(c.w.one(&mut c.d1, review(pid), None), rejected(Rejection::NotAnAuditor));
    assert_eq!(c.w.one(&mut c.patient, review(pid), None), rejected(Rejection::NotAnAuditor));
    let nurse = c.nurse.id;
    assert_eq!(c.w.one(&mut c.auditor, review(nurse), None), rejected(Rejection::UnknownPatient));
    assert_eq!(c.w.policy_state(), before, "refusals change nothing");
    assert_eq!(c.w.one(&mut c.auditor, review(pid), None), TxOutcome::Applied);
    let until: Timestamp = borsh::from_slice(&c.w.state[&keys::chart_review(&pid, &c.auditor.id)]).unwrap();
    assert_eq!(until.get(), c.w.time + medledger_ledger::CHART_REVIEW_WINDOW_MS);
    let reviews: Vec<(MemberId, Decision)> =
        c.w.audit_of(&c.patient)
            .into_iter()
            .filter(|e| e.action == AuditAction::ChartReview)
            .map(|e| (e.actor, e.decision))
            .collect();
    assert_eq!(
        reviews,
        vec![
            (c.admin.id, Decision::Denied { reason: Rejection::AdminHasNoClinicalAccess }),
            (c.d1.id, Decision::Denied { reason: Rejection::NotAnAuditor }),
            (c.patient.id, Decision::Denied { reason: Rejection::NotAnAuditor }),
            (c.auditor.id, Decision::Allowed),
        ],
        "every review and attempt is in the patient's trail"
    );
}

/// Finding 8 of the security review: any member filled a patient's trail (and a nurse's refused
/// break-glass the auditors' queue) without limit. Every denial is counted per signer and window;
/// only the first ones of each window become events.
#[test]
fn denials_are_counted_and_filed_within_a_bound_per_signer() {
    use medledger_ledger::state::{DENIAL_EVENTS_PER_WINDOW, DENIAL_WINDOW_MS, DenialCount};
    let mut c = cast();
    let pid = c.patient.id;
    let tries = DENIAL_EVENTS_PER_WINDOW as usize + 50;
    let kind =
        TxKind::BreakGlass(BreakGlass { patient: pid, reason: Some(EmergencyReason::Unconscious), duration_ms: 1_000 });
    let txs: Vec<_> = (0..tries).map(|_| c.w.tx(&mut c.nurse, kind.clone(), None)).collect();
    let outcomes = c.w.block(txs);
    assert!(outcomes.iter().all(|o| *o == rejected(Rejection::BreakGlassRole)));
    let denied = |w: &World, patient: MemberId, who: MemberId| {
        let prefix = keys::audit_of(&patient);
        w.state
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| borsh::from_slice::<AuditEvent>(v).unwrap())
            .filter(|e| e.actor == who && e.decision != Decision::Allowed)
            .count()
    };
    assert_eq!(denied(&c.w, pid, c.nurse.id), DENIAL_EVENTS_PER_WINDOW as usize, "the trail is bounded");
    assert_eq!(c.w.flagged().len(), DENIAL_EVENTS_PER_WINDOW as usize, "the review queue is bounded");
    let window = c.w.time / DENIAL_WINDOW_MS;
    let count: DenialCount = borsh::from_slice(&c.w.state[&keys::denials(&c.nurse.id, window)]).unwrap();
    assert_eq!(count, DenialCount { filed: DENIAL_EVENTS_PER_WINDOW, unfiled: 50 }, "every denial is counted");
    // Another signer's denials are filed as usual; the nurse's next window files again.
    assert_eq!(c.w.read(&mut c.d2, RecordId::new([9; 16])), rejected(Rejection::UnknownRecord));
    let rec = RecordId::new([1; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, rec), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, rec), rejected(Rejection::AccessDenied));
    assert_eq!(denied(&c.w, pid, c.d2.id), 1);
    c.w.time += DENIAL_WINDOW_MS;
    let tx = c.w.tx(&mut c.nurse, kind, None);
    c.w.block(vec![tx]);
    assert_eq!(denied(&c.w, pid, c.nurse.id), DENIAL_EVENTS_PER_WINDOW as usize + 1);
}

/// Finding 11 of the security review (low): legal holds placed or lifted across organisations,
/// and a member enrolled under a validator's id (whose share-key transactions it could then
/// starve of nonces).
#[test]
fn holds_stay_within_the_patients_organisation_and_no_member_takes_a_validators_id() {
    let mut c = cast();
    let pid = c.patient.id;
    let mut foreign = Who::new(40);
    assert_eq!(c.w.enroll(&mut c.other_admin, &foreign, "org2", Role::Auditor), TxOutcome::Applied);
    let before = c.w.policy_state();
    assert_eq!(c.w.hold(&mut foreign, pid, None, true), rejected(Rejection::WrongOrganisation), "placed across");
    assert_eq!(c.w.policy_state(), before);
    assert_eq!(c.w.hold(&mut c.auditor, pid, None, true), TxOutcome::Applied);
    assert_eq!(c.w.hold(&mut foreign, pid, None, false), rejected(Rejection::WrongOrganisation), "lifted across");
    assert_eq!(c.w.hold(&mut c.auditor, pid, None, false), TxOutcome::Applied);

    let validator = medledger_ledger::validator_member_id(&c.w.validator_keys[0]);
    let mut impostor = Who::new(41);
    impostor.id = validator;
    assert_eq!(c.w.enroll(&mut c.admin, &impostor, "org1", Role::Nurse), rejected(Rejection::MemberExists));
}

impl World {
    /// Validator `signer` signs a share-key transaction naming validator `named`.
    /// The state every validator reaches executing this world's blocks from genesis.
    fn replayed(&self) -> State {
        let mut replayed = self.genesis_state.clone();
        for (height, time, txs, sidecars) in &self.history {
            let ctx =
                BlockContext { chain_id: self.chain, height: *height, time: *time, validators: &self.validator_keys };
            for (k, v) in execute_block(&replayed, ctx, txs, sidecars).expect("replays").writes {
                match v {
                    Some(v) => replayed.insert(k, v),
                    None => replayed.remove(&k),
                };
            }
        }
        replayed
    }

    fn share_key_tx(&self, signer: usize, named: u32, key: &EncryptionKey, nonce: u64) -> Transaction {
        let body = TxBody {
            chain_id: self.chain,
            signer: medledger_ledger::validator_member_id(&self.validator_keys[signer]),
            nonce: Nonce::new(nonce),
            kind: TxKind::ShareKey(medledger_ledger::ShareKey { validator: named, public_key: key.clone() }),
            sidecar_digest: None,
        };
        Transaction::sign(body, &self.validators[signer])
    }
}

/// A validator replaces its share key (after an erasure): only with its own consensus key, only
/// with a new key of the same suite; records dealt for the old keys are refused from then on.
#[test]
fn share_key_rows() {
    let (mut admin, mut patient) = (Who::new(1), Who::new(10));
    let others = [Who::new(2), Who::new(3), Who::new(4)];
    let orgs = [("org1", &admin), ("org2", &others[0]), ("org3", &others[1]), ("org4", &others[2])];
    let mut w = World::with_validators(&orgs, 4, true);
    assert_eq!(w.enroll(&mut admin, &patient, "org1", Role::Patient), TxOutcome::Applied);
    let config = |w: &World| -> ThresholdConfig { borsh::from_slice(&w.state[keys::THRESHOLD]).unwrap() };
    let before = config(&w);
    let next = wrap::generate(KemSuite::X25519);
    let stale = w.deal(RecordId::new([1; 16]), 1);

    // Someone else's index, a forged signer id, a member: invalid, not in any block.
    let other = w.share_key_tx(1, 2, next.encryption_key(), 1);
    assert_eq!(w.try_block(vec![(other, None)]), Err(TxInvalid::UnknownSigner));
    let mut forged = w.share_key_tx(2, 2, next.encryption_key(), 1);
    forged.body.kind =
        TxKind::ShareKey(medledger_ledger::ShareKey { validator: 1, public_key: next.encryption_key().clone() });
    assert_eq!(w.try_block(vec![(forged, None)]), Err(TxInvalid::UnknownSigner));
    let mut resigned = w.share_key_tx(1, 1, next.encryption_key(), 1);
    resigned.signature = w.validators[2].sign(medledger_ledger::TX_NAMESPACE, &resigned.signed_bytes());
    assert_eq!(w.try_block(vec![(resigned, None)]), Err(TxInvalid::BadSignature));
    let kind = TxKind::ShareKey(medledger_ledger::ShareKey { validator: 1, public_key: next.encryption_key().clone() });
    assert_eq!(w.try_block(vec![w.tx(&mut patient, kind, None)]), Err(TxInvalid::UnknownSigner));

    // A key already in use, or of another suite: rejected.
    let current = before.share_keys[1].clone();
    let outcome = |w: &mut World, tx: Transaction| w.block(vec![(tx, None)]).remove(0);
    let tx = w.share_key_tx(1, 1, &current, 1);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::InvalidShareKey));
    let tx = w.share_key_tx(1, 1, &before.share_keys[3], 2);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::InvalidShareKey), "another validator's key");
    let xwing = wrap::generate(KemSuite::XWing);
    let tx = w.share_key_tx(1, 1, xwing.encryption_key(), 3);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::InvalidShareKey), "another suite");
    assert_eq!(config(&w), before);

    // Its own new key: applied, the epoch moves on, the other keys stay.
    let tx = w.share_key_tx(1, 1, next.encryption_key(), 4);
    assert_eq!(outcome(&mut w, tx.clone()), TxOutcome::Applied);
    let after = config(&w);
    assert_eq!(after.epoch, before.epoch + 1);
    assert_eq!(&after.share_keys[1], next.encryption_key());
    assert_eq!(
        [&after.share_keys[0], &after.share_keys[2], &after.share_keys[3]],
        [&before.share_keys[0], &before.share_keys[2], &before.share_keys[3]]
    );
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::StaleNonce), "a replay");
    // Not again within the interval (each replacement moves the epoch clients write for).
    let soon = wrap::generate(KemSuite::X25519);
    let tx = w.share_key_tx(1, 1, soon.encryption_key(), 5);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::ShareKeyTooSoon));
    let tx = w.share_key_tx(2, 2, soon.encryption_key(), 1);
    assert_eq!(outcome(&mut w, tx), TxOutcome::Applied, "another validator's own interval");
    w.time += medledger_types::limits::SHARE_KEY_INTERVAL_MS;
    let later = wrap::generate(KemSuite::X25519);
    let tx = w.share_key_tx(1, 1, later.encryption_key(), 6);
    assert_eq!(outcome(&mut w, tx), TxOutcome::Applied, "after the interval");

    // Records dealt for the old keys are refused; dealt for the new ones, applied.
    w.next_shares = Some(Trailing(Some(stale)));
    assert_eq!(w.put_own(&mut patient, RecordId::new([1; 16])), rejected(Rejection::ThresholdShares));
    assert_eq!(w.put_own(&mut patient, RecordId::new([2; 16])), TxOutcome::Applied);

    // A network without share keys has none to replace.
    let mut plain = World::with_validators(&[("org1", &admin)], 1, false);
    let tx = plain.share_key_tx(0, 0, next.encryption_key(), 1);
    assert_eq!(outcome(&mut plain, tx), rejected(Rejection::ThresholdShares));
}

/// Erasure purges sidecars from the validators' copies of the blocks; the blocks still replay
/// to the same state from their kept facts, and no proposal may carry a purged slot.
#[test]
fn purged_sidecars_replay_to_the_same_state() {
    let (mut admin, mut patient, reader) = (Who::new(1), Who::new(10), Who::new(11));
    let others = [Who::new(2), Who::new(3), Who::new(4)];
    let orgs = [("org1", &admin), ("org2", &others[0]), ("org3", &others[1]), ("org4", &others[2])];
    let mut w = World::with_validators(&orgs, 4, true);
    assert_eq!(w.enroll(&mut admin, &patient, "org1", Role::Patient), TxOutcome::Applied);
    assert_eq!(w.enroll(&mut admin, &reader, "org1", Role::Doctor), TxOutcome::Applied);
    let record = RecordId::new([1; 16]);
    assert_eq!(w.put_own(&mut patient, record), TxOutcome::Applied);
    let pid = patient.id;
    assert_eq!(w.write(&mut patient, pid, record, 2, &[&reader]), TxOutcome::Applied);
    assert_eq!(w.grant(&mut patient, &reader, GrantScope::All, false, None), TxOutcome::Applied);
    assert_eq!(w.erase(&mut patient, record), TxOutcome::Applied);

    let mut history = w.history.clone();
    let mut purged = 0;
    for (_, _, txs, sidecars) in &mut history {
        for (tx, slot) in txs.iter().zip(sidecars.iter_mut()) {
            let names_record = matches!(&tx.body.kind,
                TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) if r.record == record);
            if let (true, Some(bytes)) = (names_record, slot) {
                let facts = Sidecar::decode(bytes).expect("sidecar").facts();
                *bytes = medledger_ledger::purged_slot(&facts, bytes.len()).expect("facts fit");
                assert!(medledger_ledger::parse_purged(bytes).is_some());
                purged += 1;
            }
        }
    }
    assert_eq!(purged, 2, "both versions' sidecars");

    let replay = |history: &[Past]| -> Result<State, TxInvalid> {
        let mut state = w.genesis_state.clone();
        for (height, time, txs, sidecars) in history {
            let exec = execute_block(&state, w.ctx(*height, *time), txs, sidecars).map_err(|e| e.error)?;
            for (k, v) in exec.writes {
                match v {
                    Some(v) => state.insert(k, v),
                    None => state.remove(&k),
                };
            }
        }
        Ok(state)
    };
    assert_eq!(replay(&history).expect("history replays"), w.state, "same state from the kept facts");

    // A proposal (live execution) refuses a purged slot.
    let (index, block) = history
        .iter()
        .enumerate()
        .find(|(_, b)| b.3.iter().flatten().any(|s| medledger_ledger::parse_purged(s).is_some()))
        .expect("a purged block");
    let mut state = w.genesis_state.clone();
    for (height, time, txs, sidecars) in &w.history[..index] {
        for (k, v) in execute_block(&state, w.ctx(*height, *time), txs, sidecars).unwrap().writes {
            match v {
                Some(v) => state.insert(k, v),
                None => state.remove(&k),
            };
        }
    }
    let live = execute_block_verified(&state, w.ctx(block.0, block.1), &block.2, &block.3, &[]);
    assert!(live.is_err(), "a purged sidecar is never accepted in a proposal");

    // Facts that name another digest, or trailing bytes that are not zero, do not replay.
    let mut forged = history.clone();
    let slot = forged[index].3.iter_mut().flatten().next().expect("slot");
    let mut facts = medledger_ledger::parse_purged(slot).expect("purged");
    facts.digest = Digest::new([0xee; 32]);
    *slot = medledger_ledger::purged_slot(&facts, slot.len()).expect("fits");
    assert_eq!(replay(&forged), Err(TxInvalid::Sidecar(SidecarError::DigestMismatch)));
    let mut padded = history.clone();
    let slot = padded[index].3.iter_mut().flatten().next().expect("slot");
    *slot.last_mut().expect("byte") = 1;
    assert!(replay(&padded).is_err(), "a slot that is neither a sidecar nor a clean purge");
}

impl World {
    /// A break-glass by `who` whose note key is wrapped for `readers`, with a note of `len` bytes.
    fn break_glass_noted(
        &mut self,
        who: &mut Who,
        patient: MemberId,
        readers: &[KeyHolder],
        len: usize,
    ) -> (Transaction, Option<Vec<u8>>) {
        let subject = KeySubject::Note { id: [9; 16] };
        let key = wrap::generate(KemSuite::X25519);
        let envelopes =
            readers.iter().map(|holder| envelope(self.chain, key.encryption_key(), *holder, subject)).collect();
        let sidecar = Sidecar { envelopes, metadata: Some(vec![1; len]), threshold: Default::default() };
        let kind = TxKind::BreakGlass(BreakGlass {
            patient,
            reason: Some(EmergencyReason::Unconscious),
            duration_ms: 3_600_000,
        });
        self.tx(who, kind, Some(&sidecar))
    }
}

#[test]
fn break_glass_note_rows() {
    let mut c = cast();
    let member = |w: &Who| KeyHolder::Member { member: w.id };
    let (patient, auditor, nurse) = (member(&c.patient), member(&c.auditor), member(&c.nurse));
    let pid = c.patient.id;
    let noted = |c: &mut Cast, readers: &[KeyHolder], len: usize| {
        let tx = c.w.break_glass_noted(&mut c.d1, pid, readers, len);
        c.w.try_block(vec![tx]).map(|mut o| o.remove(0))
    };
    assert_eq!(noted(&mut c, &[patient, auditor], 300), Ok(TxOutcome::Applied));
    assert_eq!(noted(&mut c, &[auditor], 300), Ok(rejected(Rejection::BreakGlassNote)), "not for the patient");
    assert_eq!(noted(&mut c, &[patient], 300), Ok(rejected(Rejection::BreakGlassNote)), "for no auditor");
    assert_eq!(noted(&mut c, &[patient, auditor, nurse], 300), Ok(rejected(Rejection::BreakGlassNote)), "a nurse");
    // Malformed notes never reach a block.
    let chart = KeyHolder::Chart { patient: pid, epoch: 0 };
    assert_eq!(noted(&mut c, &[patient, auditor, chart], 300), Err(TxInvalid::Sidecar(SidecarError::Recipients)));
    assert_eq!(noted(&mut c, &[patient, auditor], 0), Err(TxInvalid::Sidecar(SidecarError::Recipients)), "empty");
    let long = medledger_types::limits::BREAK_GLASS_NOTE_BYTES_MAX + medledger_ledger::NOTE_OVERHEAD_BYTES + 1;
    assert_eq!(noted(&mut c, &[patient, auditor], long), Err(TxInvalid::Sidecar(SidecarError::Recipients)), "too long");
    // The trail shows each opening, the refused ones too, all flagged.
    let openings = c.w.audit_of(&c.patient).into_iter().filter(|e| matches!(e.action, AuditAction::BreakGlass { .. }));
    assert_eq!(openings.filter(|e| e.is_flagged()).count(), 4);
}

/// A consortium sets its own break-glass window and rate at genesis; they bind every validator.
#[test]
fn break_glass_limits_are_the_networks() {
    let (mut admin, mut doctor, patient) = (Who::new(1), Who::new(20), Who::new(21));
    let hour = 3_600_000;
    let policy =
        medledger_ledger::NetworkPolicy { break_glass_max_ms: hour, break_glass_per_day: 1, ..Default::default() };
    let mut w = World::with_policy(&[("org1", &admin)], 1, false, Some(policy));
    let default = World::new(&[("org1", &admin)]);
    assert_ne!(w.chain, default.chain, "the limits are part of the chain id");
    assert_eq!(w.enroll(&mut admin, &doctor, "org1", Role::Doctor), TxOutcome::Applied);
    assert_eq!(w.enroll(&mut admin, &patient, "org1", Role::Patient), TxOutcome::Applied);
    let reason = Some(EmergencyReason::LifeThreatening);
    assert_eq!(w.break_glass(&mut doctor, patient.id, reason, hour + 1), rejected(Rejection::BadExpiry));
    assert_eq!(w.break_glass(&mut doctor, patient.id, reason, hour), TxOutcome::Applied);
    assert_eq!(w.break_glass(&mut doctor, patient.id, reason, hour), rejected(Rejection::BreakGlassRateLimited));
    w.time += 24 * hour;
    assert_eq!(w.break_glass(&mut doctor, patient.id, reason, hour), TxOutcome::Applied, "a day later");
    // Limits out of range make no genesis.
    for bad in [
        medledger_ledger::NetworkPolicy { break_glass_max_ms: 59_999, break_glass_per_day: 1, ..Default::default() },
        medledger_ledger::NetworkPolicy {
            break_glass_max_ms: 7 * 24 * hour + 1,
            break_glass_per_day: 1,
            ..Default::default()
        },
        medledger_ledger::NetworkPolicy { break_glass_max_ms: hour, break_glass_per_day: 0, ..Default::default() },
        medledger_ledger::NetworkPolicy { break_glass_max_ms: hour, break_glass_per_day: 101, ..Default::default() },
    ] {
        assert!(!bad.check(), "{bad:?}");
    }
}

#[test]
fn grant_rows() {
    let mut c = cast();
    let rec = RecordId::new([1; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, rec), TxOutcome::Applied);
    assert_eq!(
        c.w.grant(&mut c.patient, &c.nurse, GrantScope::All, true, None),
        rejected(Rejection::WriteOnlyForDoctors)
    );
    assert_eq!(
        c.w.grant(&mut c.patient, &c.d1, GrantScope::Record(rec), true, None),
        rejected(Rejection::WriteOnlyForDoctors)
    );
    assert_eq!(
        c.w.grant(&mut c.d1, &c.nurse, GrantScope::Record(rec), false, None),
        rejected(Rejection::NotThePatient)
    );
    assert_eq!(
        c.w.grant(&mut c.admin, &c.nurse, GrantScope::Record(rec), false, None),
        rejected(Rejection::AdminHasNoClinicalAccess)
    );
    assert_eq!(
        c.w.grant(&mut c.patient, &c.admin, GrantScope::All, false, None),
        rejected(Rejection::GranteeNotClinical)
    );
    assert_eq!(
        c.w.grant(&mut c.patient, &c.auditor, GrantScope::All, false, None),
        rejected(Rejection::GranteeNotClinical)
    );
    let past = c.w.time;
    assert_eq!(
        c.w.grant(&mut c.patient, &c.nurse, GrantScope::Record(rec), false, Some(past)),
        rejected(Rejection::BadExpiry)
    );
    assert_eq!(
        c.w.grant(&mut c.patient, &c.nurse, GrantScope::Record(RecordId::new([5; 16])), false, None),
        rejected(Rejection::UnknownRecord)
    );
    assert_eq!(c.w.grant(&mut c.patient, &c.nurse, GrantScope::Record(rec), false, None), TxOutcome::Applied);
}

#[test]
fn read_rows_and_audit() {
    let mut c = cast();
    let rec = RecordId::new([1; 16]);
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, rec), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.patient, rec), TxOutcome::Applied, "the patient");
    assert_eq!(c.w.read(&mut c.d1, rec), TxOutcome::Applied, "the author with --all");
    assert_eq!(c.w.read(&mut c.d2, rec), rejected(Rejection::AccessDenied), "no relationship");
    assert_eq!(c.w.read(&mut c.nurse, rec), rejected(Rejection::AccessDenied), "before the grant");
    assert_eq!(c.w.read(&mut c.admin, rec), rejected(Rejection::AdminHasNoClinicalAccess), "admin never reads");
    assert_eq!(c.w.read(&mut c.auditor, rec), rejected(Rejection::AccessDenied), "auditor reads trails, not records");
    assert_eq!(c.w.grant(&mut c.patient, &c.nurse, GrantScope::Record(rec), false, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.nurse, rec), TxOutcome::Applied, "per-record grant");

    // Revoke the nurse's record grant: denied again.
    let revoke = TxKind::Revoke(Revoke {
        patient: c.patient.id,
        grantee: c.nurse.id,
        scope: GrantScope::Record(rec),
        new_chart: None,
    });
    assert_eq!(c.w.one(&mut c.patient, revoke.clone(), None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.nurse, rec), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.one(&mut c.patient, revoke, None), rejected(Rejection::NoSuchGrant));

    // Expired grant: its own reason.
    let now = c.w.time;
    assert_eq!(
        c.w.grant(&mut c.patient, &c.d2, GrantScope::Record(rec), false, Some(now + 10_000)),
        TxOutcome::Applied
    );
    assert_eq!(c.w.read(&mut c.d2, rec), TxOutcome::Applied);
    c.w.time += 20_000;
    assert_eq!(c.w.read(&mut c.d2, rec), rejected(Rejection::GrantExpired));

    // Every read is in the patient's trail, denied ones with who, what, purpose and height.
    let trail = c.w.audit_of(&c.patient);
    let denied: Vec<_> = trail.iter().filter(|e| matches!(e.decision, Decision::Denied { .. })).collect();
    assert!(
        denied.iter().any(|e| e.actor == c.d2.id && e.decision == Decision::Denied { reason: Rejection::AccessDenied })
    );
    assert!(denied.iter().any(|e| e.actor == c.admin.id && e.actor_role == Role::Admin));
    assert!(
        denied.iter().any(|e| e.actor == c.d2.id && e.decision == Decision::Denied { reason: Rejection::GrantExpired })
    );
    assert!(
        denied
            .iter()
            .filter(|e| matches!(e.action, medledger_ledger::state::AuditAction::Read { .. }))
            .all(|e| e.purpose == Some(PurposeOfUse::Treat) && e.height.get() > 0)
    );
    let reads = trail.iter().filter(|e| matches!(e.action, medledger_ledger::state::AuditAction::Read { .. })).count();
    assert_eq!(reads, 10, "every RecordAccess, allowed or denied, is one event");
}

#[test]
fn revoke_all_moves_the_chart_to_a_new_epoch() {
    let mut c = cast();
    let rec = RecordId::new([1; 16]);
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::All, false, None), TxOutcome::Applied);
    assert_eq!(c.w.put_own(&mut c.patient, rec), TxOutcome::Applied);
    // Two records d1 wrote under the treatment relationship.
    let (by_d1, also_by_d1) = (RecordId::new([4; 16]), RecordId::new([5; 16]));
    let pid = c.patient.id;
    assert_eq!(c.w.put(&mut c.d1, pid, by_d1), TxOutcome::Applied);
    assert_eq!(c.w.put(&mut c.d1, pid, also_by_d1), TxOutcome::Applied);
    let chain = c.w.chain;
    let next = wrap::generate(KemSuite::X25519);
    let d1id = c.d1.id;
    let subject = KeySubject::Chart { patient: pid, epoch: 1 };
    let members = |ws: &[&Who]| ws.iter().map(|w| (w.id, w.enc.encryption_key().clone())).collect::<Vec<_>>();
    let with_link = |recipients: Vec<(MemberId, EncryptionKey)>, link: bool| {
        let mut envelopes: Vec<SidecarEnvelope> = recipients
            .iter()
            .map(|(id, key)| envelope(chain, key, KeyHolder::Member { member: *id }, subject))
            .collect();
        if link {
            let holder = KeyHolder::Chart { patient: pid, epoch: 1 };
            envelopes.push(envelope(
                chain,
                next.encryption_key(),
                holder,
                KeySubject::Chart { patient: pid, epoch: 0 },
            ));
        }
        let new_chart = NewChartEpoch {
            public_key: next.encryption_key().clone(),
            recipients: recipients.iter().map(|w| w.0).collect(),
        };
        (
            TxKind::Revoke(Revoke { patient: pid, grantee: d1id, scope: GrantScope::All, new_chart: Some(new_chart) }),
            Sidecar { envelopes, metadata: None, threshold: Default::default() },
        )
    };
    let revoke = |recipients| with_link(recipients, true);
    // Without the link from epoch 0 to epoch 1 (whoever holds 1 reads the records of 0): invalid.
    let (kind, sidecar) = with_link(members(&[&c.patient, &c.d2]), false);
    let tx = c.w.tx(&mut c.patient, kind, Some(&sidecar));
    assert!(matches!(c.w.try_block(vec![tx]), Err(TxInvalid::Sidecar(_))));
    c.w.height -= 1;
    c.w.time -= 1_000;
    // Without the remaining holder d2, or still including d1: refused, state unchanged.
    let before = c.w.policy_state();
    let (kind, sidecar) = revoke(members(&[&c.patient]));
    assert_eq!(c.w.one(&mut c.patient, kind, Some(&sidecar)), rejected(Rejection::NewChartRequired));
    let (kind, sidecar) = revoke(members(&[&c.patient, &c.d1, &c.d2]));
    assert_eq!(c.w.one(&mut c.patient, kind, Some(&sidecar)), rejected(Rejection::NewChartRequired));
    assert_eq!(before, c.w.policy_state(), "rejections change no policy state");
    let (kind, sidecar) = revoke(members(&[&c.patient, &c.d2]));
    assert_eq!(c.w.one(&mut c.patient, kind, Some(&sidecar)), TxOutcome::Applied);
    c.w.chart.insert(c.patient.id, (1, next));
    assert_eq!(c.w.read(&mut c.d1, rec), rejected(Rejection::AccessDenied), "revoked --all");
    assert_eq!(c.w.read(&mut c.d2, rec), TxOutcome::Applied, "remaining --all holder");
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, RecordId::new([2; 16])), rejected(Rejection::NoWriteGrant));
    // The relationship's end ends d1's reads as an author too (finding 9 of the security review);
    // a per-record grant restores exactly that record.
    assert_eq!(c.w.read(&mut c.d1, by_d1), rejected(Rejection::AccessDenied), "authorship outlived --all");
    assert_eq!(c.w.read(&mut c.d1, also_by_d1), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::Record(by_d1), false, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d1, by_d1), TxOutcome::Applied, "re-granted");
    assert_eq!(c.w.read(&mut c.d1, also_by_d1), rejected(Rejection::AccessDenied), "not re-granted");
    // New records must use epoch 1: an envelope for epoch 0 is stale.
    c.w.chart.get_mut(&c.patient.id).unwrap().0 = 0;
    assert_eq!(c.w.put_own(&mut c.patient, RecordId::new([3; 16])), rejected(Rejection::StaleChartEpoch));
}

#[test]
fn replay_and_rejection_change_nothing() {
    let mut c = cast();
    let rec = RecordId::new([1; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, rec), TxOutcome::Applied);
    let tx = c.w.tx(
        &mut c.d2,
        TxKind::RecordAccess(RecordAccess { record: rec, version: 1, purpose: PurposeOfUse::Treat }),
        None,
    );
    let before_all = c.w.state.clone();
    assert_eq!(c.w.block(vec![tx.clone()]), vec![rejected(Rejection::AccessDenied)]);
    let after_first = c.w.state.clone();
    assert_ne!(before_all, after_first, "a denial leaves its nonce, result and audit event");
    assert_eq!(c.w.block(vec![tx.clone()]), vec![rejected(Rejection::StaleNonce)]);
    assert_eq!(after_first, c.w.state, "a replay changes nothing at all");
    // Two copies in one block: the second is stale.
    let tx2 = c.w.tx(
        &mut c.patient,
        TxKind::RecordAccess(RecordAccess { record: rec, version: 1, purpose: PurposeOfUse::Patrqt }),
        None,
    );
    assert_eq!(c.w.block(vec![tx2.clone(), tx2]), vec![TxOutcome::Applied, rejected(Rejection::StaleNonce)]);
}

#[test]
fn forged_and_foreign_transactions_invalidate_the_block() {
    let mut c = cast();
    let rec = RecordId::new([1; 16]);
    let kind = TxKind::RecordAccess(RecordAccess { record: rec, version: 1, purpose: PurposeOfUse::Treat });
    let (mut tx, sidecar) = c.w.tx(&mut c.patient, kind.clone(), None);
    tx.signature = Signature([0; 64]);
    let before = c.w.state.clone();
    assert_eq!(c.w.try_block(vec![(tx, sidecar)]), Err(TxInvalid::BadSignature));
    // Signed by someone else's key under the patient's id.
    let (mut tx, _) = c.w.tx(&mut c.patient, kind.clone(), None);
    tx = Transaction::sign(tx.body, &c.d1.sign);
    assert_eq!(c.w.try_block(vec![(tx, None)]), Err(TxInvalid::BadSignature));
    let stranger = &mut Who::new(99);
    let (tx, _) = c.w.tx(stranger, kind.clone(), None);
    assert_eq!(c.w.try_block(vec![(tx, None)]), Err(TxInvalid::UnknownSigner));
    let (mut tx, _) = c.w.tx(&mut c.patient, kind, None);
    tx.body.chain_id = ChainId::new([0; 32]);
    let tx = Transaction::sign(tx.body, &c.patient.sign);
    assert_eq!(c.w.try_block(vec![(tx, None)]), Err(TxInvalid::WrongChain));
    assert_eq!(before, c.w.state);
}

#[test]
fn execution_is_deterministic() {
    let c = cast();
    let mut a = cast();
    // Two worlds with different keys still execute a given block identically when replayed on the same state.
    let rec = RecordId::new([1; 16]);
    let _ = a.w.put_own(&mut a.patient, rec);
    let tx = a.w.tx(
        &mut a.patient,
        TxKind::RecordAccess(RecordAccess { record: rec, version: 1, purpose: PurposeOfUse::Treat }),
        None,
    );
    let ctx = a.w.ctx(Height::new(99), Timestamp::new(T0 + 99_000));
    let first = execute_block(&a.w.state, ctx, std::slice::from_ref(&tx.0), &[None]).unwrap();
    let second = execute_block(&a.w.state.clone(), ctx, &[tx.0], &[None]).unwrap();
    assert_eq!(first, second);
    assert_ne!(c.w.chain, a.w.chain, "each genesis has its own chain id");
}

/// SplitMix64: a seeded, replayable sequence for the simulation below (not for keys).
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// How the f Byzantine validators of a simulation behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Byzantine {
    /// Open their shares for anyone who asks, logged access or not, erased record or not.
    ReleaseToAnyone,
    /// Release nothing, ever.
    Withhold,
}

/// One seeded run: `n` validators (one per organisation), f of them Byzantine, and a random mix of
/// writes, per-record grants and revocations, reads by every role and erasures, executed by the
/// real executor. After every read attempt each validator decides as the node does
/// ([`served_access`]) and opens its real share envelope; the reader combines what it gets.
/// Invariant: the reader recovers `k_thr` exactly when the ledger holds an allowed access of its
/// own for the record's current version: f Byzantine releases never suffice, f withheld shares
/// never stop an allowed read. Returns how many reads succeeded and how many were refused.
fn simulate_share_release(seed: u64) -> (usize, usize) {
    use medledger_crypto::threshold::{SHARE_BYTES, Share};
    use medledger_ledger::serve::served_access;

    let mut rng = Seeded(seed);
    let n = [4, 7][rng.below(2)];
    let f = (n - 1) / 3;
    let mode = if rng.below(2) == 0 { Byzantine::ReleaseToAnyone } else { Byzantine::Withhold };
    let mut byzantine = std::collections::BTreeSet::new();
    while byzantine.len() < f {
        byzantine.insert(rng.below(n));
    }
    let mut admins: Vec<Who> = (0..n).map(|k| Who::new(1 + k as u8)).collect();
    let names: Vec<String> = (0..n).map(|k| format!("org{k}")).collect();
    let orgs: Vec<(&str, &Who)> = names.iter().map(String::as_str).zip(admins.iter()).collect();
    let mut w = World::with_validators(&orgs, n, true);
    let mut cast: Vec<(Who, Role)> = [
        (40, Role::Patient),
        (41, Role::Patient),
        (42, Role::Doctor),
        (43, Role::Doctor),
        (44, Role::Nurse),
        (45, Role::Auditor),
        (46, Role::Emergency),
    ]
    .into_iter()
    .map(|(k, role)| (Who::new(k), role))
    .collect();
    for (who, role) in &cast {
        assert_eq!(w.enroll(&mut admins[0], who, "org0", *role), TxOutcome::Applied);
    }
    let config: ThresholdConfig = borsh::from_slice(&w.state[keys::THRESHOLD]).unwrap();
    let threshold = usize::from(config.threshold);
    let mut records: Vec<(RecordId, usize)> = Vec::new();
    let (mut served_reads, mut refused_reads) = (0, 0);
    for step in 0..60 {
        let context = format!("seed {seed} step {step} (n = {n}, Byzantine {byzantine:?} {mode:?})");
        match rng.below(10) {
            0 | 1 => {
                let owner = rng.below(2);
                let record = RecordId::new(rng.next().to_be_bytes().repeat(2).try_into().unwrap());
                assert_eq!(w.put_own(&mut cast[owner].0, record), TxOutcome::Applied, "{context}");
                records.push((record, owner));
            }
            2 | 3 if !records.is_empty() => {
                let (record, owner) = records[rng.below(records.len())];
                let to = 2 + rng.below(cast.len() - 2);
                let (head, tail) = cast.split_at_mut(to);
                let _ = w.grant(&mut head[owner].0, &tail[0].0, GrantScope::Record(record), false, None);
            }
            4 if !records.is_empty() => {
                let (record, owner) = records[rng.below(records.len())];
                let from = cast[2 + rng.below(cast.len() - 2)].0.id;
                let patient = cast[owner].0.id;
                let kind = TxKind::Revoke(Revoke {
                    patient,
                    grantee: from,
                    scope: GrantScope::Record(record),
                    new_chart: None,
                });
                let _ = w.one(&mut cast[owner].0, kind, None);
            }
            5 if !records.is_empty() => {
                let (record, owner) = records[rng.below(records.len())];
                let _ = w.erase(&mut cast[owner].0, record);
            }
            _ if !records.is_empty() => {
                let (record, owner) = records[rng.below(records.len())];
                let reader = if rng.below(3) == 0 { owner } else { rng.below(cast.len()) };
                let access = RecordAccess { record, version: 1, purpose: PurposeOfUse::Treat };
                let tx = w.tx(&mut cast[reader].0, TxKind::RecordAccess(access.clone()), None);
                let allowed = w.block(vec![tx.clone()]).remove(0).is_applied();
                let tx_id = tx.0.id();
                let served = served_access(&w.state, &tx_id, &access, &cast[reader].0.id);
                assert_eq!(served.is_ok(), allowed, "{context}: served iff allowed (version 1 is current)");
                let sidecar = &w.sidecars[&(record, 1)];
                let shares = &sidecar.threshold.0.as_ref().unwrap().shares;
                let released: Vec<Share> = (0..n)
                    .filter(|i| match (byzantine.contains(i), mode) {
                        (true, Byzantine::ReleaseToAnyone) => true,
                        (true, Byzantine::Withhold) => false,
                        (false, _) => served.is_ok(),
                    })
                    .map(|i| {
                        let context = share_context(w.chain, record, 1, config.epoch, i as u32);
                        let opened = wrap::open(&w.share_keys[i], &shares[i].envelope, &context).unwrap();
                        Share::from_slice(&opened[..SHARE_BYTES]).unwrap()
                    })
                    .collect();
                let recovered =
                    released.len() >= threshold && *shamir::combine(&released[..threshold]).unwrap() == [5u8; 32];
                assert_eq!(recovered, allowed, "{context}: {} shares released", released.len());
                if allowed {
                    served_reads += 1;
                } else {
                    refused_reads += 1;
                    assert!(released.len() <= f, "{context}: honest validators released for a refused read");
                }
            }
            _ => {}
        }
    }
    (served_reads, refused_reads)
}

/// DESIGN §6a under f Byzantine validators, deterministic and replayable: `MEDLEDGER_SIM_SEED=S`
/// runs one seed.
#[test]
fn share_release_simulation_with_f_byzantine_validators() {
    let seeds: Vec<u64> = match std::env::var("MEDLEDGER_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("MEDLEDGER_SIM_SEED is a number")],
        Err(_) => (0..16).collect(),
    };
    let (mut served, mut refused) = (0, 0);
    for seed in seeds {
        let (s, r) = simulate_share_release(seed);
        served += s;
        refused += r;
    }
    println!("share release simulation: {served} reads served, {refused} refused");
    assert!(served > 20 && refused > 20, "the runs exercise both sides: {served} served, {refused} refused");
}

fn keys_of(who: &[&Who]) -> Vec<(MemberId, EncryptionKey)> {
    who.iter().map(|w| (w.id, w.enc.encryption_key().clone())).collect()
}

/// Delegates (DESIGN §8): appointed and dismissed by the patient only, a person (not staff); they
/// read, grant, revoke and read the trail for the patient, every such event naming both; never
/// erase, write or appoint; dismissal moves the chart to an epoch they never hold.
#[test]
fn delegate_rows() {
    let mut c = cast();
    let (mut guardian, mut g2) = (Who::new(15), Who::new(16));
    for who in [&guardian, &g2] {
        assert_eq!(c.w.enroll(&mut c.admin, who, "org1", Role::Patient), TxOutcome::Applied);
    }
    let pid = c.patient.id;
    let rec = RecordId::new([1; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, rec), TxOutcome::Applied);

    // Appointing: the patient only, a person only, the current epoch, once.
    assert_eq!(c.w.appoint(&mut c.d1, pid, &guardian, 0), rejected(Rejection::NotThePatient));
    assert_eq!(c.w.appoint(&mut c.admin, pid, &guardian, 0), rejected(Rejection::AdminHasNoClinicalAccess));
    for staff in [&c.nurse, &c.d2, &c.auditor] {
        assert_eq!(c.w.appoint(&mut c.patient, pid, staff, 0), rejected(Rejection::DelegateNotAPerson));
    }
    let me = Who { id: pid, sign: SigningKey::generate(), enc: wrap::generate(KemSuite::X25519), nonce: 0 };
    assert_eq!(c.w.appoint(&mut c.patient, pid, &me, 0), rejected(Rejection::DelegateNotAPerson), "not oneself");
    assert_eq!(c.w.appoint(&mut c.patient, pid, &guardian, 1), rejected(Rejection::StaleChartEpoch));
    let before = c.w.policy_state();
    assert_eq!(c.w.read(&mut guardian, rec), rejected(Rejection::AccessDenied), "before the appointment");
    assert_eq!(before, c.w.policy_state(), "rejections change no policy state");
    assert_eq!(c.w.appoint(&mut c.patient, pid, &guardian, 0), TxOutcome::Applied);
    assert_eq!(c.w.appoint(&mut c.patient, pid, &guardian, 0), rejected(Rejection::AlreadyDelegate));
    assert_eq!(c.w.appoint(&mut guardian, pid, &g2, 0), rejected(Rejection::NotThePatient), "delegates do not appoint");

    // Acting for the patient: read, grant, revoke; never write or erase.
    assert_eq!(c.w.read(&mut guardian, rec), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut g2, rec), rejected(Rejection::AccessDenied), "another person");
    assert_eq!(c.w.grant_as(&mut guardian, pid, &c.d1, GrantScope::Record(rec), false, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d1, rec), TxOutcome::Applied, "granted by the delegate");
    assert_eq!(c.w.grant_as(&mut guardian, pid, &c.d2, GrantScope::All, false, None), TxOutcome::Applied);
    assert_eq!(
        c.w.grant_as(&mut g2, pid, &c.nurse, GrantScope::Record(rec), false, None),
        rejected(Rejection::NotThePatient)
    );
    let revoke =
        TxKind::Revoke(Revoke { patient: pid, grantee: c.d1.id, scope: GrantScope::Record(rec), new_chart: None });
    assert_eq!(c.w.one(&mut guardian, revoke, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d1, rec), rejected(Rejection::AccessDenied), "revoked by the delegate");
    assert_eq!(c.w.put(&mut guardian, pid, RecordId::new([2; 16])), rejected(Rejection::NotAllowedToWrite));
    assert_eq!(c.w.one(&mut guardian, TxKind::Erase(Erase { record: rec }), None), rejected(Rejection::NotThePatient));

    // Every delegated action names both: the delegate as actor, the patient it acted for.
    let trail = c.w.audit_of(&c.patient);
    let delegated: Vec<&AuditEvent> = trail.iter().filter(|e| e.delegate_of.is_some()).collect();
    assert_eq!(delegated.len(), 4, "read, two grants, revocation: {delegated:?}");
    assert!(delegated.iter().all(|e| e.actor == guardian.id && e.delegate_of == Some(pid)));
    assert!(trail.iter().any(|e| e.action == AuditAction::Delegate { delegate: guardian.id, appoint: true }));
    assert!(
        trail.iter().filter(|e| e.actor != guardian.id).all(|e| e.delegate_of.is_none()),
        "nobody else's event says delegate"
    );

    // A revocation of an --all grant keeps the chart for the delegates.
    assert_eq!(c.w.appoint(&mut c.patient, pid, &g2, 0), TxOutcome::Applied);
    let (new_chart, sidecar, _) = c.w.next_chart(pid, &keys_of(&[&c.patient]));
    let revoke_all =
        |new_chart| TxKind::Revoke(Revoke { patient: pid, grantee: c.d2.id, scope: GrantScope::All, new_chart });
    assert_eq!(
        c.w.one(&mut c.patient, revoke_all(Some(new_chart)), Some(&sidecar)),
        rejected(Rejection::NewChartRequired),
        "the delegates left out"
    );
    let (new_chart, sidecar, next) = c.w.next_chart(pid, &keys_of(&[&c.patient, &guardian, &g2]));
    assert_eq!(
        c.w.one(&mut guardian, revoke_all(Some(new_chart)), Some(&sidecar)),
        TxOutcome::Applied,
        "by a delegate"
    );
    c.w.chart.insert(pid, (1, next));

    // Dismissal: the patient only; the chart moves on for exactly those who remain.
    assert_eq!(
        {
            let r = keys_of(&[&c.patient, &g2]);
            c.w.dismiss(&mut g2, pid, &guardian, &r)
        },
        rejected(Rejection::NotThePatient)
    );
    assert_eq!(
        {
            let r = keys_of(&[&c.patient, &guardian, &g2]);
            c.w.dismiss(&mut c.patient, pid, &guardian, &r)
        },
        rejected(Rejection::NewChartRequired),
        "still wrapped for the dismissed"
    );
    assert_eq!(
        {
            let r = keys_of(&[&c.patient]);
            c.w.dismiss(&mut c.patient, pid, &guardian, &r)
        },
        rejected(Rejection::NewChartRequired)
    );
    let no_chart = TxKind::Delegate(Delegate {
        patient: pid,
        delegate: guardian.id,
        appoint: false,
        chart_epoch: None,
        new_chart: None,
    });
    assert_eq!(c.w.one(&mut c.patient, no_chart, None), rejected(Rejection::NewChartRequired));
    assert_eq!(
        {
            let r = keys_of(&[&c.patient, &g2]);
            c.w.dismiss(&mut c.patient, pid, &guardian, &r)
        },
        TxOutcome::Applied
    );
    assert_eq!(c.w.read(&mut guardian, rec), rejected(Rejection::AccessDenied), "dismissed");
    assert_eq!(
        c.w.grant_as(&mut guardian, pid, &c.d1, GrantScope::Record(rec), false, None),
        rejected(Rejection::NotThePatient)
    );
    assert_eq!(c.w.read(&mut g2, rec), TxOutcome::Applied, "the other delegate stays");
    assert_eq!(
        {
            let r = keys_of(&[&c.patient, &g2]);
            c.w.dismiss(&mut c.patient, pid, &guardian, &r)
        },
        rejected(Rejection::NoSuchDelegate)
    );

    // At most DELEGATES_MAX at once.
    let epoch = c.w.chart[&pid].0;
    let mut extra = Vec::new();
    for n in 0..medledger_types::limits::DELEGATES_MAX as u8 {
        let who = Who::new(40 + n);
        assert_eq!(c.w.enroll(&mut c.admin, &who, "org1", Role::Patient), TxOutcome::Applied);
        extra.push(who);
    }
    let (fits, over) = extra.split_at(medledger_types::limits::DELEGATES_MAX - 1);
    for who in fits {
        assert_eq!(c.w.appoint(&mut c.patient, pid, who, epoch), TxOutcome::Applied);
    }
    assert_eq!(c.w.appoint(&mut c.patient, pid, &over[0], epoch), rejected(Rejection::TooManyDelegates));
}

/// A per-record grant of `record` (version 1) to care team `team` at its current epoch.
fn grant_team_record(w: &mut World, patient: &mut Who, team: MemberId, record: RecordId, write: bool) -> TxOutcome {
    let (epoch, key) = (w.teams[&team].0, w.teams[&team].1.encryption_key().clone());
    let subject = KeySubject::Record { record, version: 1 };
    let sidecar = Sidecar {
        envelopes: vec![envelope(w.chain, &key, KeyHolder::Team { team, epoch }, subject)],
        metadata: None,
        threshold: Default::default(),
    };
    let kind = TxKind::Grant(Grant {
        patient: patient.id,
        grantee: team,
        scope: GrantScope::Record(record),
        write,
        expires_at: None,
        chart_epoch: None,
        new_chart: None,
    });
    w.one(patient, kind, Some(&sidecar))
}

/// Care teams (DESIGN §3, §4): created and managed by a doctor of the team, members clinical and
/// active; grants to the team (per record or `--all`, never `--write`) let its members read;
/// adding a member wraps the current key once; removing one moves the key to a new epoch for
/// exactly the others (linked back), after which the removed member is refused everything and
/// holds no key to records written since.
#[test]
fn care_team_rows() {
    let mut c = cast();
    let (mut n2, mut p2) = (Who::new(17), Who::new(18));
    assert_eq!(c.w.enroll(&mut c.admin, &n2, "org1", Role::Nurse), TxOutcome::Applied);
    assert_eq!(c.w.enroll(&mut c.admin, &p2, "org1", Role::Patient), TxOutcome::Applied);
    let team = MemberId::new([0x7e; 16]);
    let pid = c.patient.id;
    let (before, after, late, solo) =
        (RecordId::new([1; 16]), RecordId::new([2; 16]), RecordId::new([3; 16]), RecordId::new([4; 16]));
    assert_eq!(c.w.put_own(&mut c.patient, before), TxOutcome::Applied);

    // Creating: a doctor who is a member; members active and clinical; a fresh id.
    let d1_nurse = keys_of(&[&c.d1, &c.nurse]);
    assert_eq!(c.w.team_create(&mut c.nurse, team, &d1_nurse), rejected(Rejection::NotATeamDoctor));
    assert_eq!(c.w.team_create(&mut c.admin, team, &d1_nurse), rejected(Rejection::NotATeamDoctor));
    let r = keys_of(&[&c.nurse]);
    assert_eq!(c.w.team_create(&mut c.d1, team, &r), rejected(Rejection::NotInTeam));
    for outsider in [&c.auditor, &p2, &c.admin] {
        let r = keys_of(&[&c.d1, outsider]);
        assert_eq!(c.w.team_create(&mut c.d1, team, &r), rejected(Rejection::TeamMemberNotClinical));
    }
    let r = keys_of(&[&c.d1]);
    assert_eq!(c.w.team_create(&mut c.d1, pid, &r), rejected(Rejection::MemberExists), "a member's id");
    assert_eq!(c.w.team_create(&mut c.d1, team, &d1_nurse), TxOutcome::Applied);
    assert_eq!(c.w.team_create(&mut c.d1, team, &d1_nurse), rejected(Rejection::MemberExists));
    assert_eq!(c.w.enroll(&mut c.admin, &Who::new(0x7e), "org1", Role::Nurse), rejected(Rejection::MemberExists));

    // Grants to the team.
    assert_eq!(c.w.read(&mut c.nurse, before), rejected(Rejection::AccessDenied), "no grant yet");
    assert_eq!(
        grant_team_record(&mut c.w, &mut c.patient, team, before, true),
        rejected(Rejection::WriteOnlyForDoctors)
    );
    assert_eq!(grant_team_record(&mut c.w, &mut p2, team, before, false), rejected(Rejection::WrongPatient));
    assert_eq!(c.w.put_own(&mut c.patient, solo), TxOutcome::Applied);
    assert_eq!(grant_team_record(&mut c.w, &mut c.patient, team, solo, false), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.nurse, solo), TxOutcome::Applied, "a per-record grant to the team");
    assert_eq!(c.w.read(&mut c.nurse, before), rejected(Rejection::AccessDenied), "that record only");
    let r = keys_of(&[&c.patient]);
    assert_eq!(c.w.grant_team_all(&mut c.patient, team, &r), TxOutcome::Applied);
    assert_eq!(c.w.chart[&pid].0, 1, "the chart moved on: the team holds only the epoch before");
    assert_eq!(c.w.read(&mut c.nurse, before), TxOutcome::Applied, "through the chart key the team holds");
    assert_eq!(c.w.read(&mut c.d2, before), rejected(Rejection::AccessDenied), "not in the team");
    assert_eq!(c.w.put_own(&mut c.patient, after), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.nurse, after), TxOutcome::Applied, "through the team's own key");
    // A new record must be wrapped for the team's current key.
    let grants = c.w.team_grants.remove(&pid).unwrap();
    assert_eq!(c.w.put_own(&mut c.patient, RecordId::new([9; 16])), rejected(Rejection::RecipientsMissing));
    c.w.team_grants.insert(pid, grants);
    c.w.teams.get_mut(&team).unwrap().0 = 5;
    assert_eq!(c.w.put_own(&mut c.patient, RecordId::new([9; 16])), rejected(Rejection::StaleTeamEpoch));
    c.w.teams.get_mut(&team).unwrap().0 = 0;

    // Adding: a doctor of the team, a clinical member, the current key, once.
    assert_eq!(c.w.team_add(&mut c.nurse, team, &n2, 0), rejected(Rejection::NotATeamDoctor));
    assert_eq!(c.w.team_add(&mut c.d2, team, &n2, 0), rejected(Rejection::NotATeamDoctor), "not in the team");
    assert_eq!(c.w.team_add(&mut c.d1, team, &c.auditor, 0), rejected(Rejection::TeamMemberNotClinical));
    assert_eq!(c.w.team_add(&mut c.d1, team, &n2, 1), rejected(Rejection::StaleTeamEpoch));
    assert_eq!(c.w.read(&mut n2, before), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.team_add(&mut c.d1, team, &n2, 0), TxOutcome::Applied);
    assert_eq!(c.w.team_add(&mut c.d1, team, &n2, 0), rejected(Rejection::AlreadyInTeam));
    assert_eq!(c.w.read(&mut n2, before), TxOutcome::Applied, "a new member reads what the team reads");

    // Removing: a doctor of the team; the next key for exactly the others, linked back.
    let r = keys_of(&[&c.d1, &c.nurse]);
    assert_eq!(c.w.team_remove(&mut c.nurse, team, n2.id, &r, true), rejected(Rejection::NotATeamDoctor));
    let r = keys_of(&[&c.d1, &c.nurse, &n2]);
    assert_eq!(
        c.w.team_remove(&mut c.d1, team, c.nurse.id, &r, true),
        rejected(Rejection::StaleTeamEpoch),
        "still for the removed"
    );
    let r = keys_of(&[&c.d1]);
    assert_eq!(
        c.w.team_remove(&mut c.d1, team, c.nurse.id, &r, true),
        rejected(Rejection::StaleTeamEpoch),
        "one left out"
    );
    let r = keys_of(&[&c.d1, &n2]);
    let epoch = c.w.teams[&team].0;
    let (mut tx, sidecar) = c.w.tx(
        &mut c.d1,
        TxKind::TeamRemove(TeamRemove {
            team,
            member: c.nurse.id,
            public_key: wrap::generate(KemSuite::X25519).encryption_key().clone(),
        }),
        None,
    );
    tx.body.sidecar_digest = None;
    assert!(c.w.try_block(vec![(tx, sidecar)]).is_err(), "a removal carries its keys");
    assert_eq!(c.w.teams[&team].0, epoch);
    assert_eq!(c.w.team_remove(&mut c.d1, team, c.nurse.id, &r, true), TxOutcome::Applied);
    for record in [before, after, solo] {
        assert_eq!(c.w.read(&mut c.nurse, record), rejected(Rejection::AccessDenied), "removed");
        assert_eq!(c.w.read(&mut n2, record), TxOutcome::Applied, "remaining");
    }
    assert_eq!(c.w.put_own(&mut c.patient, late), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.nurse, late), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.read(&mut n2, late), TxOutcome::Applied);
    // The late record's key is wrapped for nothing the removed nurse holds (her own key, the
    // team's epoch 0 and, through it, the chart's epoch 0).
    let held = [
        KeyHolder::Member { member: c.nurse.id },
        KeyHolder::Team { team, epoch: 0 },
        KeyHolder::Chart { patient: pid, epoch: 0 },
    ];
    let holders: Vec<KeyHolder> = c.w.sidecars[&(late, 1)].envelopes.iter().map(|e| e.holder).collect();
    assert!(holders.contains(&KeyHolder::Team { team, epoch: 1 }), "{holders:?}");
    assert!(holders.iter().all(|h| !held.contains(h)), "{holders:?}");

    // Leaving, and the last member stays.
    let r = keys_of(&[&c.d1]);
    let n2_id = n2.id;
    assert_eq!(c.w.team_remove(&mut n2, team, n2_id, &r, true), TxOutcome::Applied, "a member leaves");
    assert_eq!(c.w.read(&mut n2, before), rejected(Rejection::AccessDenied));
    let d1_id = c.d1.id;

    // Revoking the team's --all grant: reads stop, the chart stays (the team never held it).
    let epoch = c.w.chart[&pid].0;
    let revoke = TxKind::Revoke(Revoke { patient: pid, grantee: team, scope: GrantScope::All, new_chart: None });
    assert_eq!(c.w.one(&mut c.patient, revoke, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d1, before), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.chart[&pid].0, epoch);
    c.w.team_grants.remove(&pid);
    assert_eq!(c.w.put_own(&mut c.patient, RecordId::new([10; 16])), TxOutcome::Applied, "no team envelope needed");
    assert_eq!(c.w.read(&mut c.d1, solo), TxOutcome::Applied, "the per-record grant stays");

    // The last member can always leave (finding 11 of the security review: a doctor who adds a
    // member and leaves cannot trap them in the team and use up their team slots): the team is
    // dissolved, and reads through it end.
    assert_eq!(c.w.team_remove(&mut c.d1, team, d1_id, &[], true), TxOutcome::Applied, "the last member leaves");
    let dissolved: medledger_ledger::state::TeamEntry = borsh::from_slice(&c.w.state[&keys::team(&team)]).unwrap();
    assert!(dissolved.members.is_empty(), "the team is dissolved (its id kept, never reused)");
    let left: Vec<MemberId> = borsh::from_slice(&c.w.state[&keys::member_teams(&d1_id)]).unwrap();
    assert!(!left.contains(&team));
    assert_eq!(c.w.read(&mut c.d1, solo), rejected(Rejection::AccessDenied), "no team, no read through it");
}

/// A care team of 50 members shares 10,000 records of 20 patients (half written before each
/// patient's `--all` grant to the team, half after). Adding a member writes exactly as many
/// entries as adding one to an empty team; the new member reads both halves; a removed member
/// reads nothing, and the records written after the removal carry no key they hold.
#[test]
fn a_care_team_of_50_shares_10000_records_and_adding_a_member_is_constant() {
    let mut admin = Who::new(1);
    let mut w = World::new(&[("org1", &admin)]);
    let mut lead = Who::new(2);
    assert_eq!(w.enroll(&mut admin, &lead, "org1", Role::Doctor), TxOutcome::Applied);
    let mut members: Vec<Who> = (0..49)
        .map(|i| Who { id: MemberId::new([3, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), ..Who::new(3) })
        .collect();
    for (i, m) in members.iter().enumerate() {
        let role = if i % 2 == 0 { Role::Nurse } else { Role::Doctor };
        assert_eq!(w.enroll(&mut admin, m, "org1", role), TxOutcome::Applied);
    }
    let mut all: Vec<&Who> = members.iter().collect();
    all.push(&lead);
    let team = MemberId::new([0x7e; 16]);
    let r = keys_of(&all);
    assert_eq!(w.team_create(&mut lead, team, &r), TxOutcome::Applied);

    let mut patients: Vec<Who> = (0..20)
        .map(|i| Who { id: MemberId::new([4, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), ..Who::new(4) })
        .collect();
    let mut first_records = Vec::new();
    for (i, p) in patients.iter_mut().enumerate() {
        assert_eq!(w.enroll(&mut admin, p, "org1", Role::Patient), TxOutcome::Applied);
        let ids: Vec<RecordId> = (0..500u32)
            .map(|n| {
                let mut id = [5u8; 16];
                id[..4].copy_from_slice(&(i as u32).to_be_bytes());
                id[4..8].copy_from_slice(&n.to_be_bytes());
                RecordId::new(id)
            })
            .collect();
        let pid = p.id;
        assert!(w.put_many(p, pid, &ids[..250]).iter().all(TxOutcome::is_applied));
        let r = keys_of(&[&*p]);
        assert_eq!(w.grant_team_all(p, team, &r), TxOutcome::Applied);
        assert!(w.put_many(p, pid, &ids[250..]).iter().all(TxOutcome::is_applied));
        first_records.push((ids[0], ids[499]));
    }
    let records = w.state.keys().filter(|k| k.starts_with(keys::RECORD)).count();
    assert_eq!(records, 10_000);

    // Adding the 51st member, against adding a member to a team that can read nothing.
    let mut newbie = Who::new(90);
    let other = Who::new(91);
    assert_eq!(w.enroll(&mut admin, &newbie, "org1", Role::Nurse), TxOutcome::Applied);
    assert_eq!(w.enroll(&mut admin, &other, "org1", Role::Nurse), TxOutcome::Applied);
    let empty = MemberId::new([0x7f; 16]);
    let r = keys_of(&[&lead]);
    assert_eq!(w.team_create(&mut lead, empty, &r), TxOutcome::Applied);
    assert_eq!(w.team_add(&mut lead, empty, &other, 0), TxOutcome::Applied);
    let small = w.last_writes;
    assert_eq!(w.team_add(&mut lead, team, &newbie, 0), TxOutcome::Applied);
    assert_eq!(w.last_writes, small, "the same entries whatever the team can read");
    assert!(small <= 5, "nonce, result, team, the member's teams, one envelope: {small}");
    for (old, new) in &first_records[..3] {
        assert_eq!(w.read(&mut newbie, *old), TxOutcome::Applied, "before the patient's grant");
        assert_eq!(w.read(&mut newbie, *new), TxOutcome::Applied, "after it");
    }

    // Removing one of the 51: the others keep reading; the removed reads nothing.
    let mut removed = members.remove(0);
    let mut remaining: Vec<&Who> = members.iter().collect();
    remaining.push(&lead);
    remaining.push(&newbie);
    let r = keys_of(&remaining);
    assert_eq!(w.team_remove(&mut lead, team, removed.id, &r, true), TxOutcome::Applied);
    let late = RecordId::new([6; 16]);
    let pid0 = patients[0].id;
    assert_eq!(w.put_own(&mut patients[0], late), TxOutcome::Applied);
    for record in [first_records[0].0, first_records[0].1, late] {
        assert_eq!(w.read(&mut removed, record), rejected(Rejection::AccessDenied));
        assert_eq!(w.read(&mut newbie, record), TxOutcome::Applied);
    }
    let held = [
        KeyHolder::Member { member: removed.id },
        KeyHolder::Team { team, epoch: 0 },
        KeyHolder::Chart { patient: pid0, epoch: 0 },
    ];
    assert!(w.sidecars[&(late, 1)].envelopes.iter().all(|e| !held.contains(&e.holder)));
}

/// A member's next keys, and the RotateKeys that installs them (a patient's with the chart's
/// current key wrapped for the new encryption key at `epoch`, or without any sidecar).
fn rotation(
    w: &World,
    who: &Who,
    epoch: Option<u32>,
    reason: KeyChange,
) -> (SigningKey, DecryptionKey, TxKind, Option<Sidecar>) {
    let (sign, enc) = (SigningKey::generate(), wrap::generate(KemSuite::X25519));
    let sidecar = epoch.map(|epoch| Sidecar {
        envelopes: vec![envelope(
            w.chain,
            enc.encryption_key(),
            KeyHolder::Member { member: who.id },
            KeySubject::Chart { patient: who.id, epoch },
        )],
        metadata: None,
        threshold: Default::default(),
    });
    let kind = TxKind::RotateKeys(RotateKeys {
        signing_key: sign.verifying_key(),
        encryption_key: enc.encryption_key().clone(),
        reason,
        new_chart: None,
    });
    (sign, enc, kind, sidecar)
}

/// Key rotation, recovery code, custody claim and admin-approved recovery (DESIGN §3, §8): a
/// member changes only their own keys, signed with the current ones (a patient's come with the
/// chart key); from the block after (and within the block, from the next transaction) only the
/// new keys sign; a custodial patient claims with the released one-time code, once and in time; an
/// admin's recovery waits for the network's delay, the member may cancel it, and it is completed
/// only with the requested keys. Every step is in the member's trail; recoveries are flagged.
#[test]
fn key_lifecycle_rows() {
    let mut c = cast();
    let rec = RecordId::new([1; 16]);
    assert_eq!(c.w.put_own(&mut c.patient, rec), TxOutcome::Applied);
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, false, None), TxOutcome::Applied);

    // A doctor's routine rotation; the old key signs nothing afterwards, even in the same block.
    let (_, _, kind, sidecar) = rotation(&c.w, &c.d1, Some(0), KeyChange::Routine);
    assert_eq!(c.w.one(&mut c.d1, kind, sidecar.as_ref()), rejected(Rejection::ChartKeyRequired), "staff carry none");
    let read_kind = TxKind::RecordAccess(RecordAccess { record: rec, version: 1, purpose: PurposeOfUse::Treat });
    let old = c.d1.sign.verifying_key();
    let (sign, enc, kind, _) = rotation(&c.w, &c.d1, None, KeyChange::Routine);
    let rotate = c.w.tx(&mut c.d1, kind, None);
    let stale = c.w.tx(&mut c.d1, read_kind, None);
    assert_eq!(
        c.w.try_block(vec![rotate.clone(), stale.clone()]),
        Err(TxInvalid::BadSignature),
        "old key after its rotation"
    );
    c.w.height -= 1;
    c.w.time -= 1_000;
    let ctx = c.w.ctx(Height::new(c.w.height + 1), Timestamp::new(c.w.time + 1_000));
    let vouched = execute_block_verified(
        &c.w.state,
        ctx,
        &[rotate.0.clone(), stale.0.clone()],
        &[None, None],
        &[Some(old), Some(old)],
    );
    assert!(vouched.is_err(), "a key vouched for before the rotation is not trusted after it");
    assert_eq!(c.w.block(vec![rotate]), vec![TxOutcome::Applied]);
    assert_eq!(c.w.try_block(vec![stale]), Err(TxInvalid::BadSignature), "nor in a later block");
    c.w.height -= 1;
    c.w.time -= 1_000;
    (c.d1.sign, c.d1.enc) = (sign, enc);
    assert_eq!(c.w.read(&mut c.d1, rec), TxOutcome::Applied, "the new key signs");
    // Another member's key is not free to take.
    let taken = TxKind::RotateKeys(RotateKeys {
        signing_key: c.d2.sign.verifying_key(),
        encryption_key: wrap::generate(KemSuite::X25519).encryption_key().clone(),
        reason: KeyChange::Routine,
        new_chart: None,
    });
    assert_eq!(c.w.one(&mut c.d1, taken, None), rejected(Rejection::KeyInUse));

    // A patient's rotation brings the chart's current key for the new encryption key.
    let (_, _, kind, _) = rotation(&c.w, &c.patient, None, KeyChange::Routine);
    assert_eq!(c.w.one(&mut c.patient, kind, None), rejected(Rejection::ChartKeyRequired));
    let (_, _, kind, sidecar) = rotation(&c.w, &c.patient, Some(3), KeyChange::Routine);
    assert_eq!(c.w.one(&mut c.patient, kind, sidecar.as_ref()), rejected(Rejection::ChartKeyRequired), "stale epoch");
    let (sign, enc, kind, sidecar) = rotation(&c.w, &c.patient, Some(0), KeyChange::RecoveryCode);
    assert_eq!(c.w.one(&mut c.patient, kind, sidecar.as_ref()), TxOutcome::Applied);
    (c.patient.sign, c.patient.enc) = (sign, enc);
    assert_eq!(c.w.read(&mut c.patient, rec), TxOutcome::Applied);

    // Custody: released by an admin of the patient's organisation, claimed once with the code.
    let mut ward = Who::new(30);
    assert_eq!(c.w.enroll_as(&mut c.admin, &ward, "org1", Role::Patient, true), TxOutcome::Applied);
    let code = [9u8; 16];
    // A claim shows the proof of the code (never the code, which opens the claim file) and moves
    // the chart to an epoch wrapped for the patient's new key only (the custodian held the
    // current one).
    let claim = |w: &World, who: &Who, code: [u8; 16]| {
        let (sign, enc) = (SigningKey::generate(), wrap::generate(KemSuite::X25519));
        let (new_chart, sidecar, _) = w.next_chart(who.id, &[(who.id, enc.encryption_key().clone())]);
        let kind = TxKind::RotateKeys(RotateKeys {
            signing_key: sign.verifying_key(),
            encryption_key: enc.encryption_key().clone(),
            reason: KeyChange::Claim { proof: claim_proof(&code) },
            new_chart: Some(new_chart),
        });
        (sign, enc, kind, Some(sidecar))
    };
    let (_, _, kind, sidecar) = claim(&c.w, &ward, code);
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), rejected(Rejection::NoCustodyRelease));
    let release = |member: MemberId| {
        TxKind::CustodyRelease(CustodyRelease { member, code_hash: claim_code_hash(&member, &claim_proof(&code)) })
    };
    assert_eq!(c.w.one(&mut c.other_admin, release(ward.id), None), rejected(Rejection::NotAdminOfOrg));
    assert_eq!(c.w.one(&mut c.d2, release(ward.id), None), rejected(Rejection::NotAdminOfOrg));
    assert_eq!(c.w.one(&mut c.admin, release(c.patient.id), None), rejected(Rejection::NotCustodial));
    assert_eq!(c.w.one(&mut c.admin, release(ward.id), None), TxOutcome::Applied);
    let (_, _, kind, sidecar) = claim(&c.w, &ward, [8; 16]);
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), rejected(Rejection::ClaimCodeMismatch));
    c.w.time += 7 * 24 * 3_600_000;
    let (_, _, kind, sidecar) = claim(&c.w, &ward, code);
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), rejected(Rejection::ClaimExpired));
    assert_eq!(c.w.one(&mut c.admin, release(ward.id), None), TxOutcome::Applied, "released again");
    // The code itself is no proof, and a claim that keeps the chart's current key (which the
    // custodian holds) is refused, as is a new chart on any other key change.
    let (_, _, kind, sidecar) = rotation(&c.w, &ward, Some(0), KeyChange::Claim { proof: code });
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), rejected(Rejection::NewChartRequired));
    let (_, _, mut kind, sidecar) = claim(&c.w, &ward, code);
    if let TxKind::RotateKeys(k) = &mut kind {
        k.reason = KeyChange::Claim { proof: code };
    }
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), rejected(Rejection::ClaimCodeMismatch), "the raw code");
    let (_, _, mut kind, sidecar) = claim(&c.w, &ward, code);
    if let TxKind::RotateKeys(k) = &mut kind {
        k.reason = KeyChange::Routine;
    }
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), rejected(Rejection::NewChartRequired));
    let (sign, enc, kind, sidecar) = claim(&c.w, &ward, code);
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), TxOutcome::Applied);
    (ward.sign, ward.enc) = (sign, enc);
    let member: medledger_ledger::state::MemberEntry = borsh::from_slice(&c.w.state[&keys::member(&ward.id)]).unwrap();
    assert!(!member.custodial, "claimed");
    let chart: ChartEntry = borsh::from_slice(&c.w.state[&keys::chart(&ward.id)]).unwrap();
    assert_eq!(chart.epoch, 1, "the claim moved the chart past the custodian's epoch");
    let (_, _, kind, sidecar) = claim(&c.w, &ward, code);
    assert_eq!(c.w.one(&mut ward, kind, sidecar.as_ref()), rejected(Rejection::NotCustodial), "once");
    assert_eq!(c.w.one(&mut c.admin, release(ward.id), None), rejected(Rejection::NotCustodial));

    // Admin-approved recovery of the nurse's lost keys.
    let (new_sign, new_enc) = (SigningKey::generate(), wrap::generate(KemSuite::X25519));
    let request = |member: MemberId| {
        TxKind::Recovery(Recovery {
            member,
            action: RecoveryAction::Request {
                signing_key: new_sign.verifying_key(),
                encryption_key: new_enc.encryption_key().clone(),
            },
        })
    };
    let nid = c.nurse.id;
    let action = |action| TxKind::Recovery(Recovery { member: nid, action });
    assert_eq!(c.w.one(&mut c.d1, request(nid), None), rejected(Rejection::NotAdminOfOrg));
    assert_eq!(c.w.one(&mut c.other_admin, request(nid), None), rejected(Rejection::NotAdminOfOrg));
    let admin_id = c.admin.id;
    assert_eq!(c.w.one(&mut c.admin, request(admin_id), None), rejected(Rejection::NotAdminOfOrg), "not one's own");
    assert_eq!(c.w.one(&mut c.nurse, action(RecoveryAction::Cancel), None), rejected(Rejection::NoRecoveryPending));
    assert_eq!(c.w.one(&mut c.admin, request(nid), None), TxOutcome::Applied);
    assert_eq!(c.w.one(&mut c.admin, request(nid), None), rejected(Rejection::RecoveryPending));
    let mut device = Who {
        id: nid,
        sign: SigningKey::from_bytes(&new_sign.to_bytes()),
        enc: wrap::generate(KemSuite::X25519),
        nonce: c.nurse.nonce,
    };
    assert_eq!(c.w.one(&mut device, action(RecoveryAction::Complete), None), rejected(Rejection::RecoveryTooSoon));
    c.nurse.nonce = device.nonce;
    assert_eq!(c.w.one(&mut c.d1, action(RecoveryAction::Cancel), None), rejected(Rejection::NotYourKeys));
    assert_eq!(
        c.w.one(&mut c.nurse, action(RecoveryAction::Cancel), None),
        TxOutcome::Applied,
        "the member still had the keys"
    );
    device.nonce = c.nurse.nonce;
    let (tx, _) = c.w.tx(&mut device, action(RecoveryAction::Complete), None);
    assert!(c.w.try_block(vec![(tx, None)]).is_err(), "nothing pending: the new keys sign nothing");
    c.w.height -= 1;
    c.w.time -= 1_000;
    device.nonce -= 1;
    assert_eq!(c.w.one(&mut c.admin, request(nid), None), TxOutcome::Applied);
    c.w.time += 72 * 3_600_000;
    assert_eq!(c.w.one(&mut device, action(RecoveryAction::Complete), None), TxOutcome::Applied);
    c.nurse.nonce = device.nonce;
    assert!(
        c.w.try_block(vec![c.w.tx(&mut c.nurse, action(RecoveryAction::Cancel), None)]).is_err(),
        "the lost keys sign nothing"
    );
    c.w.height -= 1;
    c.w.time -= 1_000;
    c.nurse.nonce -= 1;
    (c.nurse.sign, c.nurse.enc) = (device.sign, device.enc);
    assert_eq!(c.w.one(&mut c.nurse, action(RecoveryAction::Cancel), None), rejected(Rejection::NoRecoveryPending));

    // The trails: each member's own, recoveries flagged for the auditors.
    let events = |who: &Who| -> Vec<(KeyEvent, bool)> {
        let prefix = keys::audit_of(&who.id);
        c.w.state
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| borsh::from_slice::<AuditEvent>(v).unwrap())
            .filter(|e| e.decision == Decision::Allowed)
            .filter_map(|e| match e.action {
                AuditAction::Keys { event } => Some((event, e.is_flagged())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(events(&c.d1), vec![(KeyEvent::Rotated, false)]);
    assert_eq!(events(&c.patient), vec![(KeyEvent::RestoredFromRecoveryCode, false)]);
    assert_eq!(
        events(&ward),
        vec![(KeyEvent::CustodyReleased, false), (KeyEvent::CustodyReleased, false), (KeyEvent::CustodyClaimed, false)]
    );
    assert_eq!(
        events(&c.nurse),
        vec![
            (KeyEvent::RecoveryRequested, true),
            (KeyEvent::RecoveryCancelled, false),
            (KeyEvent::RecoveryRequested, true),
            (KeyEvent::RecoveryCompleted, true)
        ]
    );
}

/// A proposal that `org` joins with `admin` and a fresh validator at `port`.
fn join_proposal(w: &World, org: &str, admin: &Who, port: u16, share_key: bool) -> (Proposal, SigningKey) {
    let validator = SigningKey::generate();
    let proposal = Proposal::Join {
        org: Box::new(GenesisOrg {
            id: OrgId::new(org).unwrap(),
            name: org.to_string(),
            admin: GenesisMember {
                member: admin.id,
                signing_key: admin.sign.verifying_key(),
                encryption_key: admin.enc.encryption_key().clone(),
            },
        }),
        validator: Box::new(NewValidator {
            public_key: validator.verifying_key(),
            p2p_address: format!("127.0.0.1:{port}"),
            api_address: format!("127.0.0.1:{}", port + 1),
            share_key: share_key.then(|| wrap::generate(KemSuite::X25519).encryption_key().clone()),
        }),
        expires_at: Timestamp::new(w.time + 3_600_000),
    };
    (proposal, validator)
}

/// Four organisations, each with its admin and validator, threshold release on.
fn four_organisations() -> (Vec<Who>, World) {
    let admins: Vec<Who> = (1..=4).map(Who::new).collect();
    let names = ["org1", "org2", "org3", "org4"];
    let w = World::with_validators(&names.iter().zip(&admins).map(|(n, a)| (*n, a)).collect::<Vec<_>>(), 4, true);
    (admins, w)
}

#[test]
fn governance_rows() {
    let (mut admins, mut w) = four_organisations();
    let mut doctor = Who::new(20);
    assert_eq!(w.enroll(&mut admins[0], &doctor, "org1", Role::Doctor), TxOutcome::Applied);
    assert_eq!(governance::latest_epoch(&w.state), 0);
    assert_eq!(governance::epochs(&w.state)[0].validators, vec![0, 1, 2, 3], "genesis is epoch 0");

    let mut admin5 = Who::new(5);
    let (join, _) = join_proposal(&w, "org5", &admin5, 900, true);
    let gov = |p: &Proposal| TxKind::Governance(p.clone());
    // Denied: staff who are not admins; a proposal already expired or open longer than 7 days;
    // the joining admin before the organisation exists.
    assert_eq!(w.one(&mut doctor, gov(&join), None), rejected(Rejection::NotAnOrgAdmin));
    let early = w.tx(&mut admin5, gov(&join), None);
    assert_eq!(w.try_block(vec![early]), Err(TxInvalid::UnknownSigner));
    (w.height, w.time, admin5.nonce) = (w.height - 1, w.time - 1_000, 0);
    let mut expired = join.clone();
    if let Proposal::Join { expires_at, .. } = &mut expired {
        *expires_at = Timestamp::new(w.time);
    }
    assert_eq!(w.one(&mut admins[0], gov(&expired), None), rejected(Rejection::ProposalExpired));
    if let Proposal::Join { expires_at, .. } = &mut expired {
        *expires_at = Timestamp::new(w.time + 8 * 24 * 3_600_000);
    }
    assert_eq!(w.one(&mut admins[0], gov(&expired), None), rejected(Rejection::ProposalExpired));
    // Malformed: an organisation, admin key or validator key already taking part; an address
    // that is empty; a network with threshold release and a validator without a share key.
    let (mut taken, _) = join_proposal(&w, "org2", &admin5, 910, true);
    assert_eq!(w.one(&mut admins[0], gov(&taken), None), rejected(Rejection::OrgExists), "org id");
    if let Proposal::Join { org, .. } = &mut taken {
        org.id = OrgId::new("org9").unwrap();
        org.admin.signing_key = admins[1].sign.verifying_key();
    }
    assert_eq!(w.one(&mut admins[0], gov(&taken), None), rejected(Rejection::OrgExists), "admin key");
    let (mut bad, _) = join_proposal(&w, "org9", &admin5, 920, true);
    if let Proposal::Join { validator, .. } = &mut bad {
        validator.public_key = w.validator_keys[2];
    }
    assert_eq!(w.one(&mut admins[0], gov(&bad), None), rejected(Rejection::OrgExists), "validator key");
    if let Proposal::Join { validator, .. } = &mut bad {
        validator.public_key = SigningKey::generate().verifying_key();
        validator.p2p_address = String::new();
    }
    assert_eq!(w.one(&mut admins[0], gov(&bad), None), rejected(Rejection::InvalidProposal), "address");
    let (no_share, _) = join_proposal(&w, "org9", &admin5, 930, false);
    assert_eq!(w.one(&mut admins[0], gov(&no_share), None), rejected(Rejection::InvalidProposal), "share key");
    assert_eq!(
        w.one(
            &mut admins[0],
            gov(&Proposal::Leave { org: OrgId::new("org7").unwrap(), expires_at: join.expires_at() }),
            None
        ),
        rejected(Rejection::UnknownOrg)
    );

    // Approvals: one per organisation; 3 of 4 adopt. Nothing changes before the third.
    assert_eq!(w.one(&mut admins[0], gov(&join), None), TxOutcome::Applied);
    assert_eq!(w.one(&mut admins[0], gov(&join), None), rejected(Rejection::AlreadyApproved));
    assert_eq!(w.one(&mut admins[1], gov(&join), None), TxOutcome::Applied);
    assert_eq!(governance::latest_epoch(&w.state), 0, "2 of 4 is not 2/3");
    assert!(!w.state.contains_key(&keys::org(&OrgId::new("org5").unwrap())));
    assert_eq!(w.one(&mut admins[2], gov(&join), None), TxOutcome::Applied);
    let adopted_at = w.height;
    let epochs = governance::epochs(&w.state);
    assert_eq!(epochs.len(), 2);
    assert_eq!(epochs[1].validators, vec![0, 1, 2, 3, 4]);
    assert_eq!(epochs[1].first_height, Height::new(adopted_at + governance::EPOCH_SWITCH_BLOCKS + 1));
    assert_eq!(epochs[1].proposal, Some(join.id()));
    assert_eq!(governance::validator(&w.state, 4).map(|v| v.org), Some(OrgId::new("org5").unwrap()));
    assert_eq!(w.one(&mut admins[3], gov(&join), None), rejected(Rejection::ProposalAdopted));
    // The new organisation's admin acts at once; its validator joins at the epoch.
    let mut doctor5 = Who::new(21);
    assert_eq!(w.enroll(&mut admin5, &doctor5, "org5", Role::Doctor), TxOutcome::Applied);
    // One change at a time: until the new epoch starts, no other proposal is taken.
    let leave5 =
        Proposal::Leave { org: OrgId::new("org5").unwrap(), expires_at: Timestamp::new(w.time + 3_600_000 * 24) };
    assert_eq!(w.one(&mut admins[0], gov(&leave5), None), rejected(Rejection::ChangePending));
    // Threshold release follows the set: until the new set's first block, records are dealt to
    // the genesis four; a record dealt then and finalized after the switch is refused.
    let config = |w: &World| -> ThresholdConfig { borsh::from_slice(&w.state[keys::THRESHOLD]).unwrap() };
    let genesis_config = config(&w);
    assert_eq!(genesis_config.validators, vec![0, 1, 2, 3]);
    let mut patient1 = Who::new(30);
    assert_eq!(w.enroll(&mut admins[0], &patient1, "org1", Role::Patient), TxOutcome::Applied);
    let late = w.registration(&patient1, patient1.id, RecordId::new([31; 16]), 1, &[]);
    while w.height + 1 < epochs[1].first_height.get() {
        w.block(vec![]);
    }
    assert_eq!(
        governance::epoch_at(&w.state, Height::new(w.height)).map(|e| e.epoch),
        Some(0),
        "the boundary block is the last of epoch 0"
    );
    assert_eq!(config(&w), genesis_config, "the share keys change with the set, not before");
    w.block(vec![]);
    assert_eq!(governance::epoch_at(&w.state, Height::new(w.height)).map(|e| e.epoch), Some(1));
    let five = config(&w);
    assert_eq!(five.validators, vec![0, 1, 2, 3, 4], "the joined validator holds shares of new records");
    assert_eq!((five.epoch, five.threshold, five.emergency_threshold), (genesis_config.epoch + 1, 2, 3));
    assert_eq!(five.share_keys[..4], genesis_config.share_keys[..], "the staying validators keep their keys");
    let Proposal::Join { validator: joining, .. } = &join else { unreachable!() };
    assert_eq!(Some(&five.share_keys[4]), joining.share_key.as_ref());
    assert!(!w.state.contains_key(keys::THRESHOLD_NEXT));
    assert_eq!(
        w.submit_version(&mut patient1, TxKind::RegisterRecord(late.0), late.1),
        rejected(Rejection::ThresholdShares),
        "dealt to the set before"
    );
    assert_eq!(w.put_own(&mut patient1, RecordId::new([31; 16])), TxOutcome::Applied, "dealt to the five");

    // Leaving: 4 of 5 organisations now (the leaving one may approve).
    let mut patient5 = Who::new(22);
    assert_eq!(w.enroll(&mut admin5, &patient5, "org5", Role::Patient), TxOutcome::Applied);
    assert_eq!(w.put_own(&mut patient5, RecordId::new([5; 16])), TxOutcome::Applied);
    assert_eq!(w.one(&mut admin5, gov(&leave5), None), TxOutcome::Applied);
    for admin in &mut admins[..2] {
        assert_eq!(w.one(admin, gov(&leave5), None), TxOutcome::Applied);
    }
    assert_eq!(governance::latest_epoch(&w.state), 1, "3 of 5 is not 2/3");
    assert_eq!(w.one(&mut admins[2], gov(&leave5), None), TxOutcome::Applied);
    let epochs = governance::epochs(&w.state);
    assert_eq!(epochs[2].validators, vec![0, 1, 2, 3], "org5's validator leaves");
    // Its staff sign nothing after (the attempt is refused); its patients keep their records.
    assert_eq!(w.enroll(&mut admin5, &Who::new(23), "org5", Role::Nurse), rejected(Rejection::OrgLeft));
    assert_eq!(w.read(&mut doctor5, RecordId::new([5; 16])), rejected(Rejection::OrgLeft));
    assert_eq!(w.read(&mut patient5, RecordId::new([5; 16])), TxOutcome::Applied);
    // Its admin no longer votes, and the departed organisation no longer counts.
    while w.height + 1 < epochs[2].first_height.get() {
        w.block(vec![]);
    }
    w.block(vec![]);
    // New records go to the four that stay: the validator that left holds no share of them.
    let four = config(&w);
    assert_eq!(four.validators, vec![0, 1, 2, 3]);
    assert_eq!((four.epoch, four.threshold), (five.epoch + 1, 2));
    assert_eq!(four.share_keys[..], five.share_keys[..4]);
    assert_eq!(w.put_own(&mut patient1, RecordId::new([32; 16])), TxOutcome::Applied);
    let dealt = w.sidecars[&(RecordId::new([32; 16]), 1)].threshold.0.clone().unwrap();
    assert_eq!((dealt.validators.clone(), dealt.shares.len()), (vec![0, 1, 2, 3], 4));
    let mut admin6 = Who::new(6);
    let (join6, _) = join_proposal(&w, "org6", &admin6, 940, true);
    assert_eq!(w.one(&mut admin5, gov(&join6), None), rejected(Rejection::OrgLeft));
    for admin in &mut admins[..2] {
        assert_eq!(w.one(admin, gov(&join6), None), TxOutcome::Applied);
    }
    assert_eq!(governance::latest_epoch(&w.state), 2, "2 of 4");
    assert_eq!(w.one(&mut admins[3], gov(&join6), None), TxOutcome::Applied);
    assert_eq!(governance::epochs(&w.state)[3].validators, vec![0, 1, 2, 3, 5], "stable indices: 4 is never reused");
    assert_eq!(w.enroll(&mut admin6, &Who::new(24), "org6", Role::Doctor), TxOutcome::Applied);
    // Every validator executing the same blocks from genesis reaches the same state.
    assert_eq!(w.replayed(), w.state);
}

#[test]
fn two_thirds_of_the_organisations() {
    let rows = [(0, 1, false), (1, 1, true), (1, 2, false), (2, 2, true), (2, 3, true), (2, 4, false), (3, 4, true)];
    for (approvals, orgs, adopted) in rows {
        assert_eq!(governance::is_supermajority(approvals, orgs), adopted, "{approvals} of {orgs}");
    }
    assert!(!governance::is_supermajority(3, 5) && governance::is_supermajority(4, 5));
    assert!(!governance::is_supermajority(0, 0));
}

/// A validator's own transaction (a re-sharing step), signed with its consensus key.
fn validator_tx(
    w: &World,
    key: &SigningKey,
    nonce: &mut u64,
    step: (RecordId, u32, u32, medledger_ledger::ReshareStep),
    sidecar: Option<&Sidecar>,
) -> (Transaction, Option<Vec<u8>>) {
    let (record, version, validator, step) = step;
    *nonce += 1;
    let bytes = sidecar.map(Sidecar::encode);
    let body = TxBody {
        chain_id: w.chain,
        signer: medledger_ledger::validator_member_id(&key.verifying_key()),
        nonce: Nonce::new(*nonce),
        kind: TxKind::Reshare(medledger_ledger::Reshare { validator, record, version, step }),
        sidecar_digest: bytes.as_ref().map(|b| Digest::new(medledger_crypto::sha256(b))),
    };
    (Transaction::sign(body, key), bytes)
}

/// `dealer`'s dealing of `opened` (its two shares) of `record`/`version` to the current set, and
/// the sub-shares it dealt each holder.
fn dealing(w: &World, record: RecordId, version: u32, dealer: u32, opened: &[u8]) -> (Sidecar, Vec<Vec<u8>>) {
    use medledger_crypto::threshold::{SHARE_BYTES, Share};
    let config: ThresholdConfig = borsh::from_slice(&w.state[keys::THRESHOLD]).unwrap();
    let n = config.share_keys.len();
    let thr = Share::from_slice(&opened[..SHARE_BYTES]).unwrap();
    let env = Share::from_slice(&opened[SHARE_BYTES..]).unwrap();
    let (thr_subs, verifier) = shamir::reshare(&thr, usize::from(config.threshold), n).unwrap();
    let (env_subs, emergency) = shamir::reshare(&env, usize::from(config.emergency_threshold), n).unwrap();
    let subs: Vec<Vec<u8>> =
        (0..n).map(|j| [&thr_subs[j].as_bytes()[..], &env_subs[j].as_bytes()[..]].concat()).collect();
    let shares = (0..n)
        .map(|j| {
            let context =
                medledger_ledger::threshold::reshare_context(w.chain, record, version, config.epoch, dealer, j as u32);
            WrappedShare { envelope: wrap::seal(&config.share_keys[j], &subs[j], &context).unwrap() }
        })
        .collect();
    let shares = ThresholdShares::for_config(&config, &verifier, &emergency, shares);
    (Sidecar { envelopes: Vec::new(), metadata: None, threshold: Trailing(Some(shares)) }, subs)
}

/// Re-sharing (issue 14, finding 3): after a validator joins, each old holder deals its own
/// committed share to the new set, holders complain about bad sub-shares and dealers answer in
/// the open, and a finish with settled dealings makes the new set the holders, with commitments
/// the new shares verify against and the same key. Every step by the wrong validator, of the
/// wrong share, too early or repeated is refused.
#[test]
fn reshare_rows() {
    use medledger_crypto::threshold::{SHARE_BYTES, Share, Verifier, combine_subshares, combine_verifiers};
    use medledger_ledger::ReshareStep::{Answer, Complain, Deal, Finish};
    use medledger_ledger::state::RecordEntry;
    use medledger_ledger::threshold::{RESHARE_COMPLAINT_WINDOW_MS, ThresholdInfo};

    let (mut admins, mut w) = four_organisations();
    let mut patient = Who::new(30);
    assert_eq!(w.enroll(&mut admins[0], &patient, "org1", Role::Patient), TxOutcome::Applied);
    let r = RecordId::new([40; 16]);
    assert_eq!(w.put_own(&mut patient, r), TxOutcome::Applied);
    let dealt = w.sidecars[&(r, 1)].threshold.0.clone().unwrap();
    let opened: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let context = share_context(w.chain, r, 1, dealt.epoch, i as u32);
            wrap::open(&w.share_keys[i], &dealt.shares[i].envelope, &context).unwrap().to_vec()
        })
        .collect();
    let keys_of: Vec<SigningKey> = w.validators.clone();
    let mut nonces = vec![0u64; 6];
    let info = |w: &World| -> ThresholdInfo {
        let entry: RecordEntry = medledger_ledger::state::read(&w.state, &keys::record_version(&r, 1)).unwrap();
        entry.threshold.0.unwrap()
    };
    let outcome = |w: &mut World, tx: (Transaction, Option<Vec<u8>>)| w.block(vec![tx]).remove(0);

    // Nothing to re-share while the set that holds the shares is the current one.
    let (sidecar, _) = dealing(&w, r, 1, 0, &opened[0]);
    let tx = validator_tx(&w, &keys_of[0], &mut nonces[0], (r, 1, 0, Deal { participant: 1 }), Some(&sidecar));
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::NothingToReshare));

    // org5 joins with its validator (index 4); the set switches.
    let admin5 = Who::new(5);
    let share5 = wrap::generate(KemSuite::X25519);
    let (mut join, key5) = join_proposal(&w, "org5", &admin5, 950, true);
    if let Proposal::Join { validator, .. } = &mut join {
        validator.share_key = Some(share5.encryption_key().clone());
    }
    for admin in &mut admins[..3] {
        assert_eq!(w.one(admin, TxKind::Governance(join.clone()), None), TxOutcome::Applied);
    }
    let first = governance::epochs(&w.state)[1].first_height.get();
    while w.height < first {
        w.block(vec![]);
    }
    assert!(!info(&w).held_by(&borsh::from_slice(&w.state[keys::THRESHOLD]).unwrap()));
    let mut signers = keys_of.clone();
    signers.push(key5);

    // Deal: only an old holder, only under its own participant id, only its own share.
    let (sidecar, _) = dealing(&w, r, 1, 4, &opened[0]);
    let tx = validator_tx(&w, &signers[4], &mut nonces[4], (r, 1, 4, Deal { participant: 5 }), Some(&sidecar));
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::NotAShareholder), "the joined validator held none");
    let (sidecar, _) = dealing(&w, r, 1, 1, &opened[1]);
    let tx = validator_tx(&w, &signers[1], &mut nonces[1], (r, 1, 1, Deal { participant: 1 }), Some(&sidecar));
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::BadDealing), "another participant id");
    let (sidecar, _) = dealing(&w, r, 1, 1, &opened[0]);
    let tx = validator_tx(&w, &signers[1], &mut nonces[1], (r, 1, 1, Deal { participant: 2 }), Some(&sidecar));
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::BadDealing), "validator 0's share dealt by 1");
    // A member cannot sign a validator's step at all.
    let kind = TxKind::Reshare(medledger_ledger::Reshare {
        validator: 0,
        record: r,
        version: 1,
        step: Finish { dealers: vec![0, 1] },
    });
    assert_eq!(w.try_block(vec![w.tx(&mut patient, kind, None)]), Err(TxInvalid::UnknownSigner));
    let mut deals = BTreeMap::new();
    for i in [0u32, 1, 2] {
        let (sidecar, subs) = dealing(&w, r, 1, i, &opened[i as usize]);
        let participant = i as u8 + 1;
        let tx = validator_tx(
            &w,
            &signers[i as usize],
            &mut nonces[i as usize],
            (r, 1, i, Deal { participant }),
            Some(&sidecar),
        );
        assert_eq!(outcome(&mut w, tx.clone()), TxOutcome::Applied, "dealer {i}");
        let again = validator_tx(
            &w,
            &signers[i as usize],
            &mut nonces[i as usize],
            (r, 1, i, Deal { participant }),
            Some(&sidecar),
        );
        assert_eq!(outcome(&mut w, again), rejected(Rejection::ReshareStepRepeated));
        deals.insert(i, (sidecar, subs));
    }

    // Finish: not with too few dealings, not before they settled.
    let finish = |w: &World, nonces: &mut Vec<u64>, by: usize, dealers: Vec<u32>| {
        validator_tx(w, &signers[by], &mut nonces[by], (r, 1, by as u32, Finish { dealers }), None)
    };
    let tx = finish(&w, &mut nonces, 4, vec![0]);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::ReshareNotReady), "one dealing of two needed");
    let tx = finish(&w, &mut nonces, 4, vec![1, 0]);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::ReshareNotReady), "not ascending");
    let tx = finish(&w, &mut nonces, 4, vec![0, 1]);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::ReshareNotReady), "not settled");

    // Complain (the joined validator about dealer 0); an answer must reveal what 0 dealt it.
    let tx = validator_tx(&w, &signers[4], &mut nonces[4], (r, 1, 4, Complain { dealer: 0 }), None);
    assert_eq!(outcome(&mut w, tx), TxOutcome::Applied);
    let tx = validator_tx(&w, &signers[4], &mut nonces[4], (r, 1, 4, Complain { dealer: 0 }), None);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::ReshareStepRepeated));
    let tx = validator_tx(&w, &signers[4], &mut nonces[4], (r, 1, 4, Complain { dealer: 3 }), None);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::NoSuchDealing), "3 has not dealt");
    w.time += RESHARE_COMPLAINT_WINDOW_MS;
    let tx = finish(&w, &mut nonces, 4, vec![0, 1]);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::ReshareNotReady), "a complaint about 0 is open");
    let wrong = deals[&1].1[4].clone();
    let tx = validator_tx(&w, &signers[0], &mut nonces[0], (r, 1, 0, Answer { holder: 4, shares: wrong }), None);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::BadAnswer), "1's sub-shares, not 0's");
    let right = deals[&0].1[4].clone();
    let tx =
        validator_tx(&w, &signers[0], &mut nonces[0], (r, 1, 0, Answer { holder: 4, shares: right.clone() }), None);
    assert_eq!(outcome(&mut w, tx), TxOutcome::Applied);
    let tx = validator_tx(&w, &signers[0], &mut nonces[0], (r, 1, 0, Answer { holder: 4, shares: right }), None);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::ReshareStepRepeated));

    // Finish with 0 and 2: the five hold the shares now, under the combined commitments.
    let before = info(&w);
    let tx = finish(&w, &mut nonces, 4, vec![0, 2]);
    assert_eq!(outcome(&mut w, tx), TxOutcome::Applied);
    let after = info(&w);
    assert_eq!((after.validators.clone(), after.threshold, after.generation), (vec![0, 1, 2, 3, 4], 2, 1));
    let current: RecordEntry = medledger_ledger::state::read(&w.state, &keys::record(&r)).unwrap();
    assert_eq!(current.threshold.0.as_ref(), Some(&after), "the record's current entry too");
    let verifier_of = |points: &[medledger_types::Commitment]| {
        Verifier::from_points(&points.iter().map(|c| c.0).collect::<Vec<_>>()).unwrap()
    };
    let dealt_verifier = |i: u32| {
        let shares = deals[&i].0.threshold.0.as_ref().unwrap();
        verifier_of(&shares.verifier)
    };
    let (v0, v2) = (dealt_verifier(0), dealt_verifier(2));
    assert_eq!(verifier_of(&after.verifier), combine_verifiers(&[(1, &v0), (3, &v2)]).unwrap());
    let new: Vec<Share> = (0..5)
        .map(|j| {
            let sub = |i: u32| Share::from_slice(&deals[&i].1[j][..SHARE_BYTES]).unwrap();
            combine_subshares(&[(1, sub(0)), (3, sub(2))], j as u8 + 1).unwrap()
        })
        .collect();
    assert!(new.iter().all(|s| verifier_of(&after.verifier).verify(s)), "each new share verifies");
    assert_eq!(*shamir::combine(&new[3..5]).unwrap(), [5u8; 32], "the same k_thr");
    let old3 = Share::from_slice(&opened[3][..SHARE_BYTES]).unwrap();
    assert!(!verifier_of(&after.verifier).verify(&old3), "an old share is not of the new sharing");
    assert_ne!(*shamir::combine(&[old3, new[0].clone()]).unwrap(), [5u8; 32]);
    assert_ne!(before, after);
    // Nothing of the re-sharing stays in state; nothing more to re-share.
    for dealer in 0..5 {
        assert!(!w.state.contains_key(&keys::reshare_dealing(&r, 1, dealer)));
        assert!(!w.state.contains_key(&keys::reshare_complaint(&r, 1, dealer, 4)));
    }
    let tx = finish(&w, &mut nonces, 4, vec![0, 2]);
    assert_eq!(outcome(&mut w, tx), rejected(Rejection::NothingToReshare));
    // Every validator executing the same blocks from genesis reaches the same state.
    assert_eq!(w.replayed(), w.state);
}

/// Issue 15, finding 2: an organisation's directory (Practitioner, Organization, Location... the
/// resources that describe no patient). Its key is created and passed on by the organisation's
/// active staff only, never rotated away from them; its records are written and read by that
/// staff (admins too: no patient in them), audited; it is no chart (no grant, erasure or
/// removal), and its id is no one else's.
#[test]
fn directory_rows() {
    let mut c = cast();
    let (org1, org2) = (OrgId::new("org1").unwrap(), OrgId::new("org2").unwrap());
    let dir = directory_id(&org1);
    assert_ne!(dir, directory_id(&org2));
    let r = |n| RecordId::new([n; 16]);
    let mut foreign = Who::new(31);
    assert_eq!(c.w.enroll(&mut c.other_admin, &foreign, "org2", Role::Doctor), TxOutcome::Applied);

    // Nobody takes the directory's id: not as a member, not as a care team.
    let squatter = Who { id: dir, ..Who::new(30) };
    assert_eq!(c.w.enroll(&mut c.admin, &squatter, "org1", Role::Nurse), rejected(Rejection::MemberExists));
    // Created only by the organisation's staff, for its staff.
    assert_eq!(
        {
            let members = keys_of(&[&foreign]);
            c.w.team_create(&mut foreign, dir, &members)
        },
        rejected(Rejection::NotDirectoryStaff)
    );
    assert_eq!(
        {
            let members = keys_of(&[&c.patient]);
            c.w.team_create(&mut c.patient, dir, &members)
        },
        rejected(Rejection::NotDirectoryStaff)
    );
    let with_patient = keys_of(&[&c.d1, &c.patient]);
    assert_eq!(c.w.team_create(&mut c.d1, dir, &with_patient), rejected(Rejection::NotDirectoryStaff));
    let with_foreign = keys_of(&[&c.d1, &foreign]);
    assert_eq!(c.w.team_create(&mut c.d1, dir, &with_foreign), rejected(Rejection::NotDirectoryStaff));
    assert_eq!(
        {
            let members = keys_of(&[&c.nurse]);
            c.w.team_create(&mut c.d1, dir, &members)
        },
        rejected(Rejection::NotInTeam)
    );
    assert_eq!(
        {
            let members = keys_of(&[&c.d1, &c.nurse]);
            c.w.team_create(&mut c.d1, dir, &members)
        },
        TxOutcome::Applied
    );
    assert_eq!(
        {
            let members = keys_of(&[&c.d2]);
            c.w.team_create(&mut c.d2, dir, &members)
        },
        rejected(Rejection::MemberExists)
    );
    // Passed on by a holder of the key to active staff: the nurse gives it to the admin; the
    // other doctor, who holds none yet, gives nothing; a patient and foreign staff get nothing.
    assert_eq!(c.w.team_add(&mut c.d2, dir, &c.auditor, 0), rejected(Rejection::NotDirectoryStaff));
    assert_eq!(c.w.team_add(&mut c.nurse, dir, &c.admin, 0), TxOutcome::Applied);
    assert_eq!(c.w.team_add(&mut c.nurse, dir, &c.admin, 0), rejected(Rejection::AlreadyInTeam));
    assert_eq!(c.w.team_add(&mut c.nurse, dir, &c.patient, 0), rejected(Rejection::NotDirectoryStaff));
    assert_eq!(c.w.team_add(&mut c.nurse, dir, &foreign, 0), rejected(Rejection::NotDirectoryStaff));
    assert_eq!(c.w.team_add(&mut foreign, dir, &c.d2, 0), rejected(Rejection::NotDirectoryStaff));
    let remaining = keys_of(&[&c.d1]);
    assert_eq!(c.w.team_remove(&mut c.d1, dir, c.nurse.id, &remaining, true), rejected(Rejection::DirectoryNotAChart));

    // Written by its staff, nurses too, wrapped for the directory's key and the author.
    c.w.team_grants.insert(dir, vec![dir]);
    assert_eq!(c.w.put(&mut c.nurse, dir, r(1)), TxOutcome::Applied);
    assert_eq!(c.w.write(&mut c.d2, dir, r(1), 2, &[]), TxOutcome::Applied);
    assert_eq!(c.w.put(&mut c.patient, dir, r(2)), rejected(Rejection::NotDirectoryStaff));
    assert_eq!(c.w.put(&mut foreign, dir, r(3)), rejected(Rejection::NotDirectoryStaff));
    // Wrapped for someone else besides: refused (a directory record has no other readers).
    assert_eq!(c.w.write(&mut c.d1, dir, r(4), 1, &[&c.patient]), rejected(Rejection::RecipientsMissing));
    // Not into a patient's chart, nor a chart record into the directory.
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.put(&mut c.d1, c.patient.id, r(5)), TxOutcome::Applied);
    assert_eq!(c.w.write(&mut c.d1, dir, r(5), 2, &[]), rejected(Rejection::WrongPatient));

    // Read by its active staff (admins included); not by a patient or another organisation.
    for who in [&mut c.d1, &mut c.d2, &mut c.admin, &mut c.auditor] {
        assert_eq!(c.w.read(who, r(1)), TxOutcome::Applied);
    }
    assert_eq!(c.w.read(&mut c.patient, r(1)), rejected(Rejection::NotDirectoryStaff));
    assert_eq!(c.w.read(&mut foreign, r(1)), rejected(Rejection::NotDirectoryStaff));
    let trail = c.w.audit_of(&Who { id: dir, ..Who::new(32) });
    let reads = |allowed: bool| {
        trail
            .iter()
            .filter(|e| matches!(e.action, AuditAction::Read { .. }))
            .filter(|e| (e.decision == Decision::Allowed) == allowed)
            .count()
    };
    assert_eq!((reads(true), reads(false)), (4, 2), "each read, and each refused attempt, is in the directory's trail");
    // A suspended staff member reads nothing more.
    let suspend = TxKind::Suspend(Suspend { member: c.d2.id, suspended: true });
    assert_eq!(c.w.one(&mut c.admin, suspend, None), TxOutcome::Applied);
    assert!(!c.w.read(&mut c.d2, r(1)).is_applied());

    // It is no chart: no grant to it, no erasure of its records.
    let whole_org = Who { id: dir, ..Who::new(33) };
    assert_eq!(
        c.w.grant(&mut c.patient, &whole_org, GrantScope::All, false, None),
        rejected(Rejection::DirectoryNotAChart)
    );
    assert_eq!(c.w.erase(&mut c.d1, r(1)), rejected(Rejection::NotThePatient));
    // Another organisation's directory is its own.
    let other = directory_id(&org2);
    assert_eq!(
        {
            let members = keys_of(&[&foreign]);
            c.w.team_create(&mut foreign, other, &members)
        },
        TxOutcome::Applied
    );
    assert_eq!(
        {
            let members = keys_of(&[&c.d1]);
            c.w.team_create(&mut c.d1, other, &members)
        },
        rejected(Rejection::NotDirectoryStaff)
    );
}

impl World {
    /// Registers `version` of `record` outside chart-wide grants: wrapped for the author and
    /// `readers` (members) only, no chart key, no team.
    fn write_restricted(
        &mut self,
        author: &mut Who,
        patient: MemberId,
        record: RecordId,
        version: u32,
        readers: &[&Who],
    ) -> TxOutcome {
        let (mut body, mut sidecar) = self.registration(author, patient, record, version, readers);
        sidecar.envelopes.retain(|e| matches!(e.holder, KeyHolder::Member { .. }));
        body.recipients.retain(|h| matches!(h, KeyHolder::Member { .. }));
        let kind = if version == 1 { TxKind::RegisterRecord(body) } else { TxKind::AppendVersion(body) };
        self.submit_version(author, kind, sidecar)
    }

    fn revoke(&mut self, patient: &mut Who, from: &Who, scope: GrantScope) -> TxOutcome {
        let kind = TxKind::Revoke(Revoke { patient: patient.id, grantee: from.id, scope, new_chart: None });
        self.one(patient, kind, None)
    }
}

/// Issue 15, finding 8: sensitive records (labelled in `meta.security`: substance use, HIV,
/// mental health...) are outside chart-wide grants. The ledger knows only that: wrapped for no
/// chart key. The patient, the author, per-record grantees and grantees of sensitive records
/// (whose versions are wrapped for them) read them; `--all` grantees, care teams and delegates
/// do not; break-glass reaches them, each such read flagged apart.
#[test]
fn sensitive_record_rows() {
    let mut c = cast();
    let r = |n| RecordId::new([n; 16]);
    let etreat = PurposeOfUse::Etreat;
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::All, false, None), TxOutcome::Applied);
    let pid = c.patient.id;

    // Written by a doctor with a write grant, for the patient and the author only.
    assert_eq!(c.w.write_restricted(&mut c.d1, pid, r(1), 1, &[]), rejected(Rejection::RecipientsMissing));
    assert_eq!(c.w.write_restricted(&mut c.d1, pid, r(1), 1, &[&c.patient]), TxOutcome::Applied);
    let entry: medledger_ledger::state::RecordEntry = borsh::from_slice(&c.w.state[&keys::record(&r(1))]).unwrap();
    assert_eq!(entry.chart_epoch, medledger_ledger::state::RESTRICTED_CHART_EPOCH);
    assert_eq!(c.w.put(&mut c.d1, pid, r(2)), TxOutcome::Applied);
    // The patient and the author read it; an --all grantee reads the ordinary record only.
    assert_eq!(c.w.read(&mut c.patient, r(1)), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d1, r(1)), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(1)), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.read(&mut c.d2, r(2)), TxOutcome::Applied);

    // A grant on sensitive records: to a person, read-only; each such record written from now
    // on must be wrapped for the grantee, who reads it; earlier ones need a per-record grant.
    assert_eq!(
        c.w.grant(&mut c.patient, &c.d2, GrantScope::Sensitive, true, None),
        rejected(Rejection::WriteOnlyForDoctors)
    );
    assert_eq!(
        c.w.grant(&mut c.patient, &c.admin, GrantScope::Sensitive, false, None),
        rejected(Rejection::GranteeNotClinical)
    );
    assert_eq!(c.w.grant(&mut c.d1, &c.d2, GrantScope::Sensitive, false, None), rejected(Rejection::NotThePatient));
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::Sensitive, false, None), TxOutcome::Applied);
    assert_eq!(c.w.write_restricted(&mut c.d1, pid, r(3), 1, &[&c.patient]), rejected(Rejection::RecipientsMissing));
    assert_eq!(c.w.write_restricted(&mut c.d1, pid, r(3), 1, &[&c.patient, &c.d2]), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(3)), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(1)), rejected(Rejection::AccessDenied), "written before: not wrapped for d2");
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::Record(r(1)), false, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(1)), TxOutcome::Applied);
    // Revoked: refused from now on, and not wrapped for any more.
    assert_eq!(c.w.revoke(&mut c.patient, &c.d2, GrantScope::Sensitive), TxOutcome::Applied);
    assert_eq!(c.w.revoke(&mut c.patient, &c.d2, GrantScope::Sensitive), rejected(Rejection::NoSuchGrant));
    assert_eq!(c.w.read(&mut c.d2, r(3)), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.write_restricted(&mut c.d1, pid, r(4), 1, &[&c.patient]), TxOutcome::Applied);

    // A care team with an --all grant does not reach it.
    let team = MemberId::new([77; 16]);
    assert_eq!(
        {
            let members = keys_of(&[&c.d1, &c.nurse]);
            c.w.team_create(&mut c.d1, team, &members)
        },
        TxOutcome::Applied
    );
    let holders = keys_of(&[&c.patient, &c.d1, &c.d2]);
    assert_eq!(c.w.grant_team_all(&mut c.patient, team, &holders), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.nurse, r(2)), TxOutcome::Applied, "the team reads the ordinary record");
    assert_eq!(c.w.read(&mut c.nurse, r(1)), rejected(Rejection::AccessDenied));
    // A sensitive record is wrapped for no team: one naming a team, or the chart, is refused as
    // such (a record wrapped for the chart key is an ordinary record).
    let (mut body, mut sidecar) = c.w.registration(&c.d1, pid, r(5), 1, &[&c.patient]);
    sidecar.envelopes.retain(|e| !matches!(e.holder, KeyHolder::Chart { .. }));
    body.recipients.retain(|h| !matches!(h, KeyHolder::Chart { .. }));
    assert!(body.recipients.iter().any(|h| matches!(h, KeyHolder::Team { .. })));
    assert_eq!(
        c.w.submit_version(&mut c.d1, TxKind::RegisterRecord(body), sidecar),
        rejected(Rejection::RestrictedRecipients)
    );
    // Break-glass reaches it, each such read flagged apart from other emergency reads.
    let mut medic = Who::new(21);
    assert_eq!(c.w.enroll(&mut c.admin, &medic, "org1", Role::Emergency), TxOutcome::Applied);
    assert_eq!(c.w.break_glass(&mut medic, pid, Some(EmergencyReason::Unconscious), 3_600_000), TxOutcome::Applied);
    assert_eq!(c.w.read_for(&mut medic, r(1), etreat), TxOutcome::Applied);
    assert_eq!(c.w.read_for(&mut medic, r(2), etreat), TxOutcome::Applied);
    let flagged = c.w.flagged();
    let restricted = flagged.iter().filter(|f| matches!(f.event.action, AuditAction::ReadRestricted { .. })).count();
    let ordinary = flagged.iter().filter(|f| matches!(f.event.action, AuditAction::Read { .. })).count();
    assert_eq!((restricted, ordinary), (1, 1), "{flagged:?}");
}

/// Review findings on sensitive records: only the patient grants them (not a delegate); a
/// sensitive record's next version comes from one who reads it and stays sensitive unless the
/// patient lifts it; the per-record grants of earlier ones end with their own revocation.
#[test]
fn sensitive_records_stay_sensitive_and_only_the_patient_grants_them() {
    let mut c = cast();
    let r = |n| RecordId::new([n; 16]);
    let pid = c.patient.id;
    assert_eq!(c.w.grant(&mut c.patient, &c.d1, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::All, true, None), TxOutcome::Applied);
    assert_eq!(c.w.write_restricted(&mut c.d1, pid, r(1), 1, &[&c.patient]), TxOutcome::Applied);

    // The grant carries no envelope: an earlier one is given by a per-record grant (what the
    // SDK does for each), and taken back with it.
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::Sensitive, false, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(1)), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.grant(&mut c.patient, &c.d2, GrantScope::Record(r(1)), false, None), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(1)), TxOutcome::Applied);
    assert_eq!(c.w.revoke(&mut c.patient, &c.d2, GrantScope::Sensitive), TxOutcome::Applied);
    assert_eq!(c.w.revoke(&mut c.patient, &c.d2, GrantScope::Record(r(1))), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(1)), rejected(Rejection::AccessDenied));

    // A delegate neither grants nor revokes sensitive records.
    let mut guardian = Who::new(40);
    assert_eq!(c.w.enroll(&mut c.admin, &guardian, "org1", Role::Patient), TxOutcome::Applied);
    let epoch = c.w.chart[&pid].0;
    assert_eq!(c.w.appoint(&mut c.patient, pid, &guardian, epoch), TxOutcome::Applied);
    assert_eq!(
        c.w.grant_as(&mut guardian, pid, &c.d2, GrantScope::Sensitive, false, None),
        rejected(Rejection::NotThePatient)
    );

    // The next version: not from a writer who does not read it; sensitive again unless the
    // patient lifts it.
    assert_eq!(c.w.write_restricted(&mut c.d2, pid, r(1), 2, &[&c.patient]), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.write(&mut c.d1, pid, r(1), 2, &[]), rejected(Rejection::RestrictedRecipients));
    assert_eq!(c.w.write_restricted(&mut c.d1, pid, r(1), 2, &[&c.patient]), TxOutcome::Applied);
    assert_eq!(c.w.read(&mut c.d2, r(1)), rejected(Rejection::AccessDenied));
    assert_eq!(c.w.write(&mut c.patient, pid, r(1), 3, &[]), TxOutcome::Applied, "the patient lifts it");
    assert_eq!(c.w.read_version(&mut c.d2, r(1), 3), TxOutcome::Applied, "the lifted version");
    assert_eq!(c.w.read(&mut c.d2, r(1)), rejected(Rejection::AccessDenied), "version 1 stays sensitive");
}

/// Review finding: an organisation's directory id is known before it joins; a care team (or a
/// member) created under it first would have made the joining organisation's directory someone
/// else's. The join is refused instead, as is a joining admin whose id is a directory's.
#[test]
fn no_one_takes_a_joining_organisations_directory() {
    let (mut admins, mut w) = four_organisations();
    let mut doctor = Who::new(20);
    assert_eq!(w.enroll(&mut admins[0], &doctor, "org1", Role::Doctor), TxOutcome::Applied);
    let squatted = directory_id(&OrgId::new("org5").unwrap());
    let members = keys_of(&[&doctor]);
    assert_eq!(w.team_create(&mut doctor, squatted, &members), TxOutcome::Applied, "before org5 exists");
    let admin5 = Who::new(5);
    let (join, _) = join_proposal(&w, "org5", &admin5, 900, true);
    assert_eq!(w.one(&mut admins[0], TxKind::Governance(join), None), rejected(Rejection::OrgExists));
    // A joining admin whose id is an existing organisation's directory.
    let posing = Who { id: directory_id(&OrgId::new("org2").unwrap()), ..Who::new(6) };
    let (join, _) = join_proposal(&w, "org6", &posing, 910, true);
    assert_eq!(w.one(&mut admins[0], TxKind::Governance(join), None), rejected(Rejection::OrgExists));
    // A joining admin whose id is the joining organisation's own directory.
    let own = Who { id: directory_id(&OrgId::new("org8").unwrap()), ..Who::new(8) };
    let (join, _) = join_proposal(&w, "org8", &own, 915, true);
    assert_eq!(w.one(&mut admins[0], TxKind::Governance(join), None), rejected(Rejection::OrgExists));
    // A fresh id joins.
    let (join, _) = join_proposal(&w, "org7", &Who::new(7), 920, true);
    assert_eq!(w.one(&mut admins[0], TxKind::Governance(join), None), TxOutcome::Applied);
}
