//! Records: writing (put, append, rotate), sealing, reading and opening, listing and erasing.

use futures::StreamExt;
use medledger_crypto::payload::{self, DataKey};
use medledger_crypto::suite::PayloadSuite;
use medledger_crypto::threshold;
use medledger_crypto::wrap::DecryptionKey;
use medledger_crypto::wrap::EncryptionKey;
use medledger_ledger::api::AccessBundle;
use medledger_ledger::state::{
    ChartEntry, GrantEntry, MemberEntry, RESTRICTED_CHART_EPOCH, RecordEntry, TeamEntry, keys,
};
use medledger_ledger::{
    ChartReview, Erase, GrantScope, KeyHolder, KeySubject, RecordAccess, RegisterRecord, Rotate, Sidecar, TxKind,
    directory_id,
};
use medledger_types::{Digest, MemberId, PurposeOfUse, RecordId, Role, Timestamp, TxId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{Committed, Session, all_pages, chart_key_from};
use crate::error::{Result, SdkError};
use crate::home::{Contact, Identity};

/// Largest record accepted by `put` through the API (the node's upload limit, minus overhead).
pub const RECORD_PLAINTEXT_MAX: usize = 64 * 1024 * 1024 - 64 * 1024;

/// Metadata kept encrypted beside a record; listing and searching happen on the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMetadata {
    /// FHIR resourceType, when the record is a FHIR resource.
    pub resource_type: Option<String>,
    pub content_type: String,
    pub size_bytes: u64,
    /// Sensitive (a FHIR resource labelled so in `meta.security`, or marked by the writer): kept
    /// outside chart-wide grants. Which label, only the resource says.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// `meta.security` codes that keep a resource outside chart-wide grants: confidentiality R
/// (restricted) and V (very restricted), and the HL7 v3 sensitivity codes for substance use
/// (42 CFR Part 2), HIV, mental and behavioural health, sexual and domestic violence, sexuality
/// and reproductive health, genetics and the like.
pub const SENSITIVE_LABELS: &[&str] = &[
    "R",
    "V",
    "ETH",
    "ETHUD",
    "OPIOIDUD",
    "SUD",
    "42CFRPart2",
    "HIV",
    "STD",
    "PSY",
    "PSYTHPN",
    "BH",
    "MH",
    "SDV",
    "SEX",
    "SICKLE",
    "GDIS",
    "DRGIS",
    "TBOOST",
];

/// Whether a FHIR resource's `meta.security` carries one of [`SENSITIVE_LABELS`].
pub fn is_sensitive(resource: &serde_json::Value) -> bool {
    let Some(labels) = resource.pointer("/meta/security").and_then(serde_json::Value::as_array) else { return false };
    labels.iter().any(|label| {
        let system = label.get("system").and_then(serde_json::Value::as_str).unwrap_or_default();
        let hl7 = system.is_empty() || system.starts_with("http://terminology.hl7.org/CodeSystem/v3-");
        hl7 && label.get("code").and_then(serde_json::Value::as_str).is_some_and(|c| SENSITIVE_LABELS.contains(&c))
    })
}

/// A decrypted record.
pub struct Opened {
    pub record: RecordEntry,
    pub access: Committed,
    pub metadata: Option<RecordMetadata>,
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl Session {
    /// Encrypts a record for `patient`, uploads the ciphertext and registers it.
    pub async fn put_record(
        &self,
        me: &Identity,
        patient: &Contact,
        plaintext: &[u8],
    ) -> Result<(RecordId, Committed)> {
        self.put_record_marked(me, patient, plaintext, false).await
    }

    /// [`Session::put_record`], kept outside chart-wide grants when `sensitive` (as a FHIR
    /// resource labelled sensitive in `meta.security` always is).
    pub async fn put_record_marked(
        &self,
        me: &Identity,
        patient: &Contact,
        plaintext: &[u8],
        sensitive: bool,
    ) -> Result<(RecordId, Committed)> {
        match self.put_record_once(me, patient, plaintext, sensitive).await {
            Err(e) if self.stale_shares(&e).await? => self.put_record_once(me, patient, plaintext, sensitive).await,
            other => other,
        }
    }

    async fn put_record_once(
        &self,
        me: &Identity,
        patient: &Contact,
        plaintext: &[u8],
        sensitive: bool,
    ) -> Result<(RecordId, Committed)> {
        let mut metadata = describe(plaintext)?;
        metadata.sensitive |= sensitive;
        self.release().await?;
        let keys = self.record_keys(me, &patient.member).await?;
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
        let mut metadata = describe(plaintext)?;
        self.release().await?;
        let entry = self.client.record(me, &record).await?;
        // A sensitive record stays so (the ledger lets only the patient lift it).
        metadata.sensitive |= entry.chart_epoch == RESTRICTED_CHART_EPOCH;
        if expected.is_some_and(|v| v != entry.version) {
            return Err(SdkError::Conflict(format!("the record is at version {}", entry.version)));
        }
        let version =
            entry.version.checked_add(1).ok_or_else(|| SdkError::Usage("the record has too many versions".into()))?;
        let keys = self.record_keys(me, &entry.patient).await?;
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
        let mut metadata = describe(&current.plaintext)?;
        metadata.sensitive |= entry.chart_epoch == RESTRICTED_CHART_EPOCH;
        let keys = self.record_keys(me, &entry.patient).await?;
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
    /// key of each care team holding a live `--all` grant, all read from certified state (no single
    /// validator can have the record wrapped for a key of its own).
    pub async fn record_keys(&self, me: &Identity, patient: &MemberId) -> Result<RecordKeys> {
        if *patient == directory_id(&me.org) {
            // The directory's key, made first if no one has yet.
            self.directory(me).await?;
            let directory = self.proved_team(me, patient, patient).await?;
            return Ok(RecordKeys { owner: *patient, chart: None, teams: vec![directory], sensitive: Vec::new() });
        }
        let entries = self.proved_state(me, &format!("/v1/charts/{patient}/proof")).await?;
        let integrity = |e: medledger_proof::StateError| SdkError::Integrity(format!("the chart's keys: {e}"));
        let chart: ChartEntry = entries.require(&keys::chart(patient)).map_err(integrity)?;
        let now = Timestamp::new(crate::client::now_ms());
        let mut teams = Vec::new();
        for team in &chart.teams {
            let grant: Option<GrantEntry> =
                entries.get(&keys::grant(patient, team, &GrantScope::All)).map_err(integrity)?;
            if grant.is_some_and(|g| g.is_live(now))
                && let Some(entry) = entries.get::<TeamEntry>(&keys::team(team)).map_err(integrity)?
                // A dissolved team (its last member left) is not wrapped for.
                && !entry.members.is_empty()
            {
                teams.push(entry);
            }
        }
        // Sensitive records are wrapped for the patient and the live grantees of them.
        let patient_entry: MemberEntry = entries.require(&keys::member(patient)).map_err(integrity)?;
        let mut sensitive = vec![(*patient, patient_entry.encryption_key)];
        for member in chart.sensitive.0.iter().flatten() {
            let grant: Option<GrantEntry> =
                entries.get(&keys::grant(patient, member, &GrantScope::Sensitive)).map_err(integrity)?;
            if grant.is_some_and(|g| g.is_live(now)) {
                let entry: MemberEntry = entries.require(&keys::member(member)).map_err(integrity)?;
                sensitive.push((*member, entry.encryption_key));
            }
        }
        Ok(RecordKeys { owner: *patient, chart: Some(chart), teams, sensitive })
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
        let patient = keys.owner;
        let subject = KeySubject::Record { record, version };
        let me_holder = KeyHolder::Member { member: me.member };
        if metadata.sensitive && keys.chart.is_none() {
            return Err(SdkError::Usage(
                "a sensitive resource names its patient: the organisation's directory is read by all its staff".into(),
            ));
        }
        let mut envelopes = vec![self.seal_for(me.encryption.encryption_key(), me_holder, subject, &wrapped)?];
        match &keys.chart {
            // Sensitive: outside chart-wide grants, for the patient and the grantees of such records.
            Some(_) if metadata.sensitive => {
                for (member, key) in keys.sensitive.iter().filter(|(m, _)| *m != me.member) {
                    envelopes.push(self.seal_for(key, KeyHolder::Member { member: *member }, subject, &wrapped)?);
                }
            }
            chart => {
                if let Some(chart) = chart {
                    let chart_holder = KeyHolder::Chart { patient, epoch: chart.epoch };
                    envelopes.push(self.seal_for(&chart.public_key, chart_holder, subject, &wrapped)?);
                }
                for team in &keys.teams {
                    let holder = KeyHolder::Team { team: team.team, epoch: team.epoch };
                    envelopes.push(self.seal_for(&team.public_key, holder, subject, &wrapped)?);
                }
            }
        }
        let recipients = envelopes.iter().map(|e| e.holder).collect();
        let body = RegisterRecord { record, patient, version, digest, size_bytes: sealed.ciphertext_len, recipients };
        let kind = if version == 1 { TxKind::RegisterRecord(body) } else { TxKind::AppendVersion(body) };
        let sidecar = Sidecar { envelopes, metadata: Some(meta_ct), threshold: threshold.into() };
        Ok(Sealed { record, digest, ciphertext, kind, sidecar })
    }

    /// Signs a RecordAccess, waits for it to commit (the audit event is on the ledger before any
    /// byte leaves a validator), then fetches, checks and decrypts.
    pub async fn get_record(&self, me: &Identity, record: RecordId, purpose: PurposeOfUse) -> Result<Opened> {
        // The version only: the entry is for those the ledger entitles, the access for anyone to
        // ask (and be denied, in the patient's trail).
        let version = self.client.record_version(me, &record).await?;
        let kind = TxKind::RecordAccess(RecordAccess { record, version, purpose });
        let access = self.transact(me, kind, None).await?;
        self.open_access(me, record, version, access).await
    }

    /// Reads version `version` of `record` (the current one or an earlier one the ledger keeps
    /// readable), under the same rules and audit as a read of the current version.
    pub async fn get_record_version(
        &self,
        me: &Identity,
        record: RecordId,
        version: u32,
        purpose: PurposeOfUse,
    ) -> Result<Opened> {
        let kind = TxKind::RecordAccess(RecordAccess { record, version, purpose });
        let access = self.transact(me, kind, None).await?;
        self.open_access(me, record, version, access).await
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
                Ok(access) => self.open_access(me, r.record, r.version, access).await,
                Err(e) => Err(e),
            }
        });
        Ok(futures::stream::iter(opens).buffered(OPENS_IN_FLIGHT).collect().await)
    }

    /// Fetches, checks and decrypts version `version` of `record`, which an allowed, committed
    /// access names. Everything used is checked: the keys against the state a quorum certified,
    /// the ciphertext against the certified digest (from another validator when the first one's
    /// does not match), the plaintext by the payload's authentication.
    pub async fn open_access(
        &self,
        me: &Identity,
        record: RecordId,
        version: u32,
        access: Committed,
    ) -> Result<Opened> {
        // The shares are asked for while the ciphertext comes.
        let (key, ciphertext) =
            tokio::join!(self.data_key(me, &access.tx, record, version), self.client.access_content(me, &access.tx));
        let (dek, bundle_record, metadata) = key?;
        let digest_of = |bytes: &[u8]| Digest::new(medledger_crypto::sha256(bytes));
        let ciphertext = match ciphertext {
            Ok(bytes) if digest_of(&bytes) == bundle_record.digest => bytes,
            Err(e @ (SdkError::Denied(_) | SdkError::NotFound(_))) => return Err(e),
            first => match self.content_matching(me, &access.tx, &bundle_record.digest).await {
                Some(bytes) => bytes,
                None => {
                    return Err(first.err().unwrap_or_else(|| {
                        SdkError::Integrity("ciphertext does not match the digest on the ledger".into())
                    }));
                }
            },
        };
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

    /// The ciphertext of an allowed access from the first validator that serves bytes with the
    /// certified digest, if any does.
    async fn content_matching(&self, me: &Identity, access: &TxId, digest: &Digest) -> Option<bytes::Bytes> {
        for node in self.client.nodes() {
            if let Ok(bytes) = self.client.access_content_from(node, me, access).await
                && Digest::new(medledger_crypto::sha256(&bytes)) == *digest
            {
                return Some(bytes);
            }
        }
        None
    }

    /// What this reader's envelopes wrap for the record of `bundle`: its data key (direct suite)
    /// or `k_env` (threshold release); `None` when the reader holds no envelope for it.
    pub(super) fn wrapped_secret(&self, me: &Identity, bundle: &AccessBundle) -> Result<Option<Zeroizing<Vec<u8>>>> {
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
    async fn data_key(
        &self,
        me: &Identity,
        access: &TxId,
        record: RecordId,
        version: u32,
    ) -> Result<(DataKey, RecordEntry, Option<Vec<u8>>)> {
        // A re-sharing may finish between the bundle and the shares, seen by some validators
        // before the one that served the bundle: the bundle is read again once that one has had
        // a moment to catch up (a bounded number of times).
        for pause_ms in [200, 500, 1_000] {
            match self.data_key_once(me, access, record, version).await {
                Err(SdkError::Conflict(m)) if m == crate::release::SHARES_MOVED => {
                    tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                }
                other => return other,
            }
        }
        self.data_key_once(me, access, record, version).await
    }

    async fn data_key_once(
        &self,
        me: &Identity,
        access: &TxId,
        record: RecordId,
        version: u32,
    ) -> Result<(DataKey, RecordEntry, Option<Vec<u8>>)> {
        let bundle = self.verified_bundle(me, access, record, version).await?;
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

    /// An auditor (or an admin, refused) first commits a chart review, an event in the patient's
    /// trail, as DESIGN §3 asks of any view of a chart by someone outside the patient's care.
    pub async fn list(&self, me: &Identity, patient: &Contact) -> Result<Vec<RecordEntry>> {
        all_pages(|after| async move { self.list_page(me, patient, after.as_deref()).await }).await
    }

    /// One page of [`Session::list`] after the cursor `after` (none: the first page, for which an
    /// auditor's chart review is committed), and the cursor of the next page.
    pub async fn list_page(
        &self,
        me: &Identity,
        patient: &Contact,
        after: Option<&str>,
    ) -> Result<(Vec<RecordEntry>, Option<String>)> {
        if after.is_none() && matches!(me.role, Role::Auditor | Role::Admin) {
            let review = ChartReview { patient: patient.member, purpose: PurposeOfUse::Hoperat };
            self.transact(me, TxKind::ChartReview(review), None).await?;
        }
        self.client.patient_records_page(me, &patient.member, after).await
    }

    /// The patient erases a record: once committed, every validator deletes each version's
    /// ciphertext, sidecar and key share.
    pub async fn erase(&self, me: &Identity, record: RecordId) -> Result<Committed> {
        self.transact(me, TxKind::Erase(Erase { record }), None).await
    }
}

/// Records fetched and decrypted at once by [`Session::get_records`].
const OPENS_IN_FLIGHT: usize = 8;

/// What a new record of a patient is wrapped for (see [`Session::record_keys`]).
pub struct RecordKeys {
    /// Whose records these are: a patient (their chart), or an organisation's directory.
    pub owner: MemberId,
    /// The patient's chart; none for a directory.
    pub chart: Option<ChartEntry>,
    /// The care teams with a live `--all` grant on the chart, or the directory's own key.
    pub teams: Vec<TeamEntry>,
    /// Who reads the chart's records outside chart-wide grants (sensitive ones): the patient and
    /// every live grantee of them, with their keys. Empty for a directory.
    pub sensitive: Vec<(MemberId, EncryptionKey)>,
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
                sensitive: is_sensitive(&value),
            });
        }
        let content_type = "application/json".into();
        return Ok(RecordMetadata { resource_type: None, content_type, size_bytes, sensitive: false });
    }
    let content_type = "application/octet-stream".into();
    Ok(RecordMetadata { resource_type: None, content_type, size_bytes, sensitive: false })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(200).collect()
}
