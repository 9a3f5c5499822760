//! Keys and enrolment: new members, key rotation, recovery, custody, suspension, resolving names.

use medledger_crypto::suite::KemSuite;
use medledger_crypto::wrap::{self, DecryptionKey};
use medledger_ledger::{
    CustodyRelease, Enroll, KeyChange, KeyHolder, KeySubject, Recovery, RecoveryAction, RotateKeys, Sidecar, TxKind,
    claim_code_hash,
};
use medledger_types::{MemberId, OrgId, Role};

use super::{Committed, Session, chart_secret};
use crate::error::{Result, SdkError};
use crate::home::{Contact, Identity};
use crate::recovery::{ClaimCode, RecoveryCode};

impl Session {
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
        self.welcome_to_directory(admin, &identity.member, role).await;
        Ok((identity, code))
    }

    /// `me` replaces their keys with new ones (derived from a new recovery code, returned), signing
    /// with the current ones; a patient wraps their chart's current key for the new encryption
    /// key (at a custody claim, a new chart epoch instead, which the custodian never held). The
    /// new identity keeps the earlier encryption keys for the envelopes made for them.
    pub async fn rotate_keys(&self, me: &Identity, reason: KeyChange) -> Result<(Identity, RecoveryCode, Committed)> {
        let code = RecoveryCode::generate();
        let mut next =
            Identity::from_recovery_code(&me.alias, me.member, me.role, me.org.clone(), me.encryption.suite(), &code)?;
        next.previous = me
            .decryption_keys()
            .map(|k| DecryptionKey::from_bytes(k.suite(), &k.to_bytes()))
            .collect::<std::result::Result<_, _>>()
            .map_err(SdkError::other)?;
        let claim = matches!(reason, KeyChange::Claim { .. });
        let mut new_chart = None;
        let sidecar = if claim {
            let next_key = next.encryption.encryption_key();
            let (chart, sidecar) = self.next_chart_epoch(me, &me.member, None, None, Some(next_key)).await?;
            new_chart = Some(chart);
            Some(sidecar)
        } else if me.role == Role::Patient {
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
            new_chart,
        });
        let committed = self.transact(me, kind, sidecar).await?;
        Ok((next, code, committed))
    }

    /// Restores `contact`'s keys from their recovery code (they must be the member's keys on the
    /// ledger) and at once replaces them (the lost device holds them too).
    pub async fn recover_with_code(
        &self,
        alias: &str,
        member: &MemberId,
        code: &RecoveryCode,
    ) -> Result<(Identity, RecoveryCode, Committed)> {
        // The code's signing key is the member's if the code is theirs: it signs the lookup of
        // the member's entry (a wrong code is an unknown signer), whose suite the keys then take.
        let not_theirs = || SdkError::Usage("this recovery code is not for the member's current keys".into());
        let probe = Identity::unplaced(alias, *member, code)?;
        let entry = match self.client.member(&probe, member).await {
            Ok(entry) => entry,
            Err(SdkError::Denied(m)) if m.contains("signer") || m.contains("signature") => return Err(not_theirs()),
            Err(e) => return Err(e),
        };
        let restored =
            Identity::from_recovery_code(alias, *member, entry.role, entry.org, entry.encryption_key.suite, code)?;
        if restored.signing.verifying_key() != entry.signing_key {
            return Err(not_theirs());
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
        let kind = TxKind::CustodyRelease(CustodyRelease {
            member: *member,
            code_hash: claim_code_hash(member, &code.proof()),
        });
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
        self.rotate_keys(&custody, KeyChange::Claim { proof: code.proof() }).await
    }

    /// A member's side of enrolment by request: makes their keys on this device (saved in the
    /// home keystore under `alias`) and, for a patient, their first chart key, wrapped for them
    /// alone; returns the identity, its recovery code, and the signed request (public keys only)
    /// an admin of `org` approves with [`Session::approve_enrolment`]. No admin ever holds the
    /// member's secrets, nor a patient's chart key.
    pub fn request_enrolment(
        &self,
        alias: &str,
        role: Role,
        org: OrgId,
        display_name: Option<String>,
        passphrase: &[u8],
    ) -> Result<(Identity, RecoveryCode, EnrolmentRequest)> {
        crate::home::check_alias(alias)?;
        if self.home.has_identity(alias) || self.home.book()?.contains_key(alias) {
            return Err(SdkError::Usage("that name is already taken in this home".to_string()));
        }
        if role == Role::Patient && display_name.is_some() {
            return Err(SdkError::Usage("patients have no public display name".into()));
        }
        let code = RecoveryCode::generate();
        let member = MemberId::new(medledger_crypto::random_bytes());
        let identity = Identity::from_recovery_code(alias, member, role, org, KemSuite::default(), &code)?;
        let (kind, sidecar) = self.enrolment(&identity, display_name, false)?;
        let TxKind::Enroll(enroll) = kind else { return Err(SdkError::Other("an enrolment is an Enroll".into())) };
        let request = EnrolmentRequest::sign(self.chain_id, enroll, sidecar, &identity.signing);
        self.home.save_identity(&identity, passphrase)?;
        Ok((identity, code, request))
    }

    /// `admin` enrols the member of `request` (see [`Session::request_enrolment`]), once its
    /// signature shows the keys are the requester's and it is for this network and the admin's
    /// own organisation.
    pub async fn approve_enrolment(&self, admin: &Identity, request: &EnrolmentRequest) -> Result<Committed> {
        let (enroll, sidecar) = request.verified(self.chain_id)?;
        if enroll.org != admin.org {
            return Err(SdkError::Denied("an admin enrols members of their own organisation only".into()));
        }
        let (member, role) = (enroll.member, enroll.role);
        let committed = self.transact(admin, TxKind::Enroll(enroll), sidecar).await?;
        self.welcome_to_directory(admin, &member, role).await;
        Ok(committed)
    }

    /// A new staff member is given the organisation's directory key by the admin who enrolled
    /// them, when the directory exists and the admin holds it. Best effort: the enrolment stands
    /// either way, and any holder of the key can pass it on later (`directory add`).
    async fn welcome_to_directory(&self, admin: &Identity, member: &MemberId, role: Role) {
        if role == Role::Patient || admin.role == Role::Patient {
            return;
        }
        let directory = self.directory_of(admin);
        if let Ok(Some(_)) = self.client.team(admin, &directory).await {
            // Refused only when the admin holds no envelope of the key (or the member has one).
            let _ = self.directory_add(admin, member).await;
        }
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
            match self.client.member(admin, &patient.member).await {
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
            if self.client.grant(patient, &patient.member, &doctor.member).await?.is_some_and(|g| g.write) {
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

    /// An admin of the member's organisation suspends them (`suspended`) or lifts the suspension.
    pub async fn suspend(&self, admin: &Identity, member: &Contact, suspended: bool) -> Result<Committed> {
        let kind = TxKind::Suspend(medledger_ledger::Suspend { member: member.member, suspended });
        self.transact(admin, kind, None).await
    }

    /// Whom a grant can go to: a member (alias or id, as [`Session::resolve`]) or a care team
    /// (its local alias, or its id).
    pub async fn resolve_grantee(&self, me: &Identity, name: &str) -> Result<MemberId> {
        if let Some(team) = self.home.teams()?.get(name) {
            return Ok(*team);
        }
        if let Ok(id) = name.parse::<MemberId>()
            && self.client.team(me, &id).await?.is_some()
        {
            return Ok(id);
        }
        Ok(self.resolve(me, name).await?.member)
    }

    /// A local alias, or a member id (32 hex digits, e.g. a patient enrolled in custody by an
    /// import), to a contact.
    pub async fn resolve(&self, me: &Identity, name: &str) -> Result<Contact> {
        match self.home.resolve(name) {
            Ok(contact) => Ok(contact),
            Err(e) => match name.parse::<MemberId>() {
                Ok(member) => self.contact_of(me, &member).await,
                Err(_) => Err(e),
            },
        }
    }

    /// Whom a member id names, from the ledger (role and organisation), as `me` may see it.
    pub async fn contact_of(&self, me: &Identity, member: &MemberId) -> Result<Contact> {
        let entry = self.client.member(me, member).await?;
        Ok(Contact { member: entry.id, role: entry.role, org: entry.org })
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

/// A member's request to be enrolled, made on their own device (`medledger id request`): the
/// Enroll transaction an admin submits (public keys, role, organisation; for a patient the first
/// chart key and the sidecar wrapping its secret for the patient alone), signed with the member's
/// own signing key so the admin knows the keys are the requester's and nothing was changed on
/// the way.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnrolmentRequest {
    pub format: String,
    pub chain_id: medledger_types::ChainId,
    pub enroll: Enroll,
    /// The borsh sidecar, hex (a patient's chart-key envelope).
    pub sidecar: Option<String>,
    /// Ed25519 by `enroll.signing_key` over [`EnrolmentRequest::signed_bytes`], hex.
    pub signature: String,
}

/// Signing namespace of enrolment requests.
const ENROLMENT_REQUEST_NAMESPACE: &[u8] = b"medledger/enrolment-request/v1";
/// Largest enrolment request file accepted.
pub const ENROLMENT_REQUEST_BYTES_MAX: usize = 64 * 1024;

impl EnrolmentRequest {
    pub const FORMAT: &str = "medledger-enrolment-request/v1";

    /// What the member signs: the chain, the Enroll transaction, the sidecar.
    fn signed_bytes(chain_id: medledger_types::ChainId, enroll: &Enroll, sidecar: Option<&[u8]>) -> Vec<u8> {
        medledger_types::encode(&(chain_id, enroll, sidecar.map(<[u8]>::to_vec)))
    }

    fn sign(
        chain_id: medledger_types::ChainId,
        enroll: Enroll,
        sidecar: Option<Sidecar>,
        key: &medledger_crypto::sign::SigningKey,
    ) -> Self {
        let sidecar = sidecar.map(|s| s.encode());
        let signature =
            key.sign(ENROLMENT_REQUEST_NAMESPACE, &Self::signed_bytes(chain_id, &enroll, sidecar.as_deref()));
        EnrolmentRequest {
            format: Self::FORMAT.into(),
            chain_id,
            enroll,
            sidecar: sidecar.map(hex::encode),
            signature: hex::encode(signature.as_bytes()),
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let request: EnrolmentRequest = (bytes.len() <= ENROLMENT_REQUEST_BYTES_MAX)
            .then(|| serde_json::from_slice(bytes).ok())
            .flatten()
            .ok_or_else(|| SdkError::Usage("not an enrolment request".into()))?;
        if request.format != Self::FORMAT {
            return Err(SdkError::Usage("not an enrolment request".into()));
        }
        Ok(request)
    }

    /// The Enroll transaction and sidecar, once the request is for `chain_id`, signed by the
    /// signing key it enrols, and shaped as an enrolment by request is (not custodial; a
    /// patient's sidecar holds exactly their chart key's envelope for them, nobody else's).
    pub fn verified(&self, chain_id: medledger_types::ChainId) -> Result<(Enroll, Option<Sidecar>)> {
        let integrity = |what: &str| SdkError::Integrity(format!("the enrolment request {what}"));
        if self.chain_id != chain_id {
            return Err(SdkError::Usage("the enrolment request is for another network".into()));
        }
        let sidecar_bytes =
            self.sidecar.as_deref().map(hex::decode).transpose().map_err(|_| integrity("has a malformed sidecar"))?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| integrity("has a malformed signature"))?;
        let signed = Self::signed_bytes(chain_id, &self.enroll, sidecar_bytes.as_deref());
        let signature = medledger_crypto::sign::Signature(signature);
        if self.enroll.signing_key.verify(ENROLMENT_REQUEST_NAMESPACE, &signed, &signature).is_err() {
            return Err(integrity("is not signed by the keys it enrols, or was altered"));
        }
        let sidecar =
            sidecar_bytes.map(|b| Sidecar::decode(&b)).transpose().map_err(|_| integrity("has a malformed sidecar"))?;
        let member = self.enroll.member;
        let own_chart_key = |s: &Sidecar| {
            matches!(s.envelopes.as_slice(), [e] if e.holder == KeyHolder::Member { member }
                && e.subject == KeySubject::Chart { patient: member, epoch: 0 })
                && s.metadata.is_none()
        };
        let shaped = !self.enroll.custodial
            && match (self.enroll.role, &self.enroll.chart_key, &sidecar) {
                (Role::Patient, Some(_), Some(s)) => own_chart_key(s) && self.enroll.display_name.is_none(),
                (Role::Patient, _, _) => false,
                (_, None, None) => true,
                _ => false,
            };
        if !shaped {
            return Err(SdkError::Usage(
                "the enrolment request is not shaped as one (custody, or a chart key of another)".into(),
            ));
        }
        Ok((self.enroll.clone(), sidecar))
    }
}
