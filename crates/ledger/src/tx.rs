//! Signed transactions and their outcomes.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::sign::{Signature, SigningKey, VerifyingKey};
use medledger_crypto::wrap::EncryptionKey;
use medledger_types::limits::TX_BYTES_MAX;
use medledger_types::{
    ChainId, DecodeError, Digest, MemberId, Nonce, OrgId, PurposeOfUse, RecordId, Role, Timestamp, TxId,
    decode_canonical, encode,
};
use serde::{Deserialize, Serialize};

use crate::policy::Rejection;
use crate::sidecar::KeyHolder;

/// Signing namespace of transactions: a transaction signature can never be confused with a vote,
/// an API request or anything else signed by the same key.
pub const TX_NAMESPACE: &[u8] = b"medledger/tx/v1";

/// What the signer signs: the chain, who, which nonce, what, and the digest of the sidecar.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TxBody {
    pub chain_id: ChainId,
    pub signer: MemberId,
    pub nonce: Nonce,
    pub kind: TxKind,
    /// SHA-256 of the sidecar's canonical encoding, when the transaction carries one.
    pub sidecar_digest: Option<Digest>,
}

/// A signed transaction as it appears in a block (its sidecar travels beside it).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Transaction {
    pub body: TxBody,
    pub signature: Signature,
}

impl Transaction {
    /// Signs `body` with the signer's key.
    pub fn sign(body: TxBody, key: &SigningKey) -> Self {
        let signature = key.sign(TX_NAMESPACE, &encode(&body));
        Self { body, signature }
    }

    /// The bytes covered by the signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        encode(&self.body)
    }

    /// SHA-256 of the whole encoded transaction (body and signature).
    pub fn id(&self) -> TxId {
        TxId::new(medledger_crypto::sha256(&encode(self)))
    }

    /// Checks the signature against `key`.
    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        key.verify(TX_NAMESPACE, &self.signed_bytes(), &self.signature).is_ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a transaction from outside input: bounded, canonical.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_canonical(bytes, TX_BYTES_MAX)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TxKind {
    Enroll(Enroll),
    RegisterRecord(RegisterRecord),
    Grant(Grant),
    Revoke(Revoke),
    RecordAccess(RecordAccess),
    /// A new version of an existing record (same shape as a registration; `version` = current + 1).
    AppendVersion(RegisterRecord),
    Suspend(Suspend),
    /// Emergency access to a patient's records (DESIGN §3): doctors and emergency members only,
    /// with a reason, time-boxed, rate-limited, flagged to the patient and the auditors.
    BreakGlass(BreakGlass),
    /// The next version of a record under fresh keys, replacing the current version's ciphertext,
    /// which every validator then deletes from the store (for when a revoked reader may have
    /// kept a key).
    Rotate(Rotate),
    /// The patient erases a record (DESIGN §8, GDPR Art. 17): every version's ciphertext, sidecar
    /// and validator share goes; the chain keeps digests and the erasure event.
    Erase(Erase),
    /// An auditor places or lifts a legal hold (GDPR Art. 17(3)) on a patient's records or one of them.
    LegalHold(LegalHold),
    /// A validator replaces its share key (after an erasure, so the old key, which opens the
    /// shares in any copy of an erased record's sidecar, can be destroyed). Signed with the
    /// validator's consensus key; the signer is [`validator_member_id`] of that key.
    ShareKey(ShareKey),
    /// The patient appoints or dismisses a delegate (a guardian for a minor, a proxy), who then
    /// acts for them in grants, revocations, reads and their audit trail (DESIGN §8).
    Delegate(Delegate),
    /// A doctor creates a care team: a key holder like a member, its key (per epoch) wrapped for
    /// each member; grants can go to it (DESIGN §4).
    TeamCreate(TeamCreate),
    /// A doctor of the team adds a member: one envelope of the team's current key.
    TeamAdd(TeamAdd),
    /// A doctor of the team removes a member (or a member leaves): the team's key moves to a new
    /// epoch for the remaining members.
    TeamRemove(TeamRemove),
    /// The signer replaces their own keys, signing with the current ones: routinely, after
    /// restoring them from their recovery code, or claiming an identity held in custody.
    RotateKeys(RotateKeys),
    /// An admin of a patient's organisation releases the patient's identity from custody: the
    /// hash of a one-time code handed to the patient in person, with which they claim it.
    CustodyRelease(CustodyRelease),
    /// Recovery of a member's lost keys approved by an admin of their organisation: requested,
    /// then completed with the new keys after the network's delay, unless the member cancels.
    Recovery(Recovery),
    /// An admin of an organisation proposes, or approves, an organisation joining or leaving the
    /// consortium; adopted when 2/3 of the organisations approved it (see [`crate::governance`]).
    Governance(crate::governance::Proposal),
    /// An auditor opens a patient's record list for review (DESIGN §3: an auditor's view of a
    /// chart is itself an audited access); validators serve the list to that auditor for
    /// [`CHART_REVIEW_WINDOW_MS`] after. Admins have no clinical view: theirs is refused.
    ChartReview(ChartReview),
    /// A validator's step in re-sharing a record version's threshold shares to the current
    /// validator set (see [`crate::threshold`]): deal, complain, answer, finish. Signed with the
    /// validator's consensus key like [`TxKind::ShareKey`].
    Reshare(Reshare),
}

impl TxKind {
    /// The stable index of the validator whose consensus key signs this transaction, for the
    /// validators' own transactions.
    pub fn validator_signer(&self) -> Option<u32> {
        match self {
            TxKind::ShareKey(k) => Some(k.validator),
            TxKind::Reshare(r) => Some(r.validator),
            _ => None,
        }
    }

    /// The record whose keys this transaction's sidecar carries, if any: a version's envelopes and
    /// shares, or a per-record grant's envelope (what an erasure of the record must purge).
    pub fn sidecar_record(&self) -> Option<RecordId> {
        match self {
            TxKind::RegisterRecord(r) | TxKind::AppendVersion(r) => Some(r.record),
            TxKind::Rotate(rotate) => Some(rotate.next.record),
            TxKind::Grant(Grant { scope: GrantScope::Record(record), .. }) => Some(*record),
            TxKind::Reshare(Reshare { record, step: ReshareStep::Deal { .. }, .. }) => Some(*record),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            TxKind::Enroll(_) => "enroll",
            TxKind::RegisterRecord(_) => "register_record",
            TxKind::Grant(_) => "grant",
            TxKind::Revoke(_) => "revoke",
            TxKind::RecordAccess(_) => "record_access",
            TxKind::AppendVersion(_) => "append_version",
            TxKind::Suspend(_) => "suspend",
            TxKind::BreakGlass(_) => "break_glass",
            TxKind::Rotate(_) => "rotate",
            TxKind::Erase(_) => "erase",
            TxKind::LegalHold(_) => "legal_hold",
            TxKind::ShareKey(_) => "share_key",
            TxKind::Delegate(_) => "delegate",
            TxKind::TeamCreate(_) => "team_create",
            TxKind::TeamAdd(_) => "team_add",
            TxKind::TeamRemove(_) => "team_remove",
            TxKind::RotateKeys(_) => "rotate_keys",
            TxKind::CustodyRelease(_) => "custody_release",
            TxKind::Recovery(_) => "recovery",
            TxKind::Governance(_) => "governance",
            TxKind::ChartReview(_) => "chart_review",
            TxKind::Reshare(_) => "reshare",
        }
    }
}

/// How long a committed chart review lets its auditor list the patient's records.
pub const CHART_REVIEW_WINDOW_MS: u64 = 10 * 60 * 1000;

/// An auditor's review of a patient's record list, for a coded purpose.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ChartReview {
    pub patient: MemberId,
    pub purpose: PurposeOfUse,
}

/// An organisation's admin enrols a member. Carries only public keys; the member made them.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Enroll {
    pub member: MemberId,
    pub org: OrgId,
    pub role: Role,
    pub signing_key: VerifyingKey,
    pub encryption_key: EncryptionKey,
    /// Staff may carry a public display name (a provider directory is public); patients may not.
    pub display_name: Option<String>,
    /// A patient's first chart key (epoch 0); the sidecar wraps its secret for the patient.
    pub chart_key: Option<EncryptionKey>,
    /// A patient without a device of their own: their keys sit in the organisation's custody
    /// keystore until they claim the identity (DESIGN §8). Only for patients.
    pub custodial: bool,
}

/// An admin of the member's organisation suspends a member (who can then do nothing: every
/// attempt is rejected, and audited when it concerns a patient) or lifts the suspension.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Suspend {
    pub member: MemberId,
    pub suspended: bool,
}

/// Registers version 1 of a record whose ciphertext is already in the blob store (and, as
/// [`TxKind::AppendVersion`], each later version).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RegisterRecord {
    pub record: RecordId,
    pub patient: MemberId,
    pub version: u32,
    /// SHA-256 of the ciphertext; also its object key in the blob store.
    pub digest: Digest,
    pub size_bytes: u64,
    /// The key holders whose envelopes the sidecar carries (validators cannot open envelopes, but
    /// they check that the patient's current chart key and the author are covered).
    pub recipients: Vec<KeyHolder>,
}

/// What a grant covers.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// One record (its DEK is wrapped for the grantee).
    Record(RecordId),
    /// The patient's whole chart, existing and future records (the chart key is wrapped for the grantee).
    All,
    /// The patient's records outside chart-wide grants (sensitive: 42 CFR Part 2, HIV, mental
    /// health...): each one written from now on is wrapped for the grantee too; those written
    /// before are given one by one, with per-record grants. No sidecar.
    Sensitive,
}

/// The patient (or a delegate) grants a member or a care team access (`write` also lets a doctor
/// add records for the patient).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Grant {
    pub patient: MemberId,
    pub grantee: MemberId,
    pub scope: GrantScope,
    pub write: bool,
    pub expires_at: Option<Timestamp>,
    /// For `All`: the chart epoch whose secret the sidecar wraps for the grantee.
    pub chart_epoch: Option<u32>,
    /// For `All` to a care team: the chart's next epoch, for everyone who holds it but the team
    /// (which then reads records written from now on through envelopes for its own key, so a
    /// member it removes later holds no key to them).
    pub new_chart: Option<NewChartEpoch>,
}

/// The next chart key after an `--all` revocation, wrapped for the remaining holders.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct NewChartEpoch {
    pub public_key: EncryptionKey,
    pub recipients: Vec<MemberId>,
}

/// The patient revokes a grant (and, for a record's author, the author's access).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Revoke {
    pub patient: MemberId,
    pub grantee: MemberId,
    pub scope: GrantScope,
    /// Required for `All`: the chart moves to a new epoch the revoked member never holds.
    pub new_chart: Option<NewChartEpoch>,
}

/// A reader asks to read a record version for a purpose. Allowed or denied, it is on the ledger.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RecordAccess {
    pub record: RecordId,
    pub version: u32,
    pub purpose: PurposeOfUse,
}

/// Why a clinician breaks the glass: coded, never free text on the ledger.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum EmergencyReason {
    /// The patient is unconscious or cannot communicate.
    Unconscious,
    /// A life-threatening condition needs the history now.
    LifeThreatening,
    /// The patient cannot consent and no delegate is reachable.
    UnableToConsent,
    /// A mass-casualty incident or disaster.
    MassCasualty,
}

impl EmergencyReason {
    pub const ALL: [EmergencyReason; 4] = [
        EmergencyReason::Unconscious,
        EmergencyReason::LifeThreatening,
        EmergencyReason::UnableToConsent,
        EmergencyReason::MassCasualty,
    ];

    pub fn code(self) -> &'static str {
        match self {
            EmergencyReason::Unconscious => "unconscious",
            EmergencyReason::LifeThreatening => "life-threatening",
            EmergencyReason::UnableToConsent => "unable-to-consent",
            EmergencyReason::MassCasualty => "mass-casualty",
        }
    }
}

impl std::str::FromStr for EmergencyReason {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|r| r.code() == s).ok_or(())
    }
}

/// Opens a patient's records to the signer for `duration_ms` (at most
/// [`medledger_types::limits::BREAK_GLASS_MS_MAX`]). `reason` is required; a missing one is
/// refused and audited.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct BreakGlass {
    pub patient: MemberId,
    pub reason: Option<EmergencyReason>,
    pub duration_ms: u64,
}

/// A rotation: `next` is registered as an append (`version` = current + 1) and `replaces`, the
/// current version's ciphertext digest, is deleted from the store by the validators.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Rotate {
    pub next: RegisterRecord,
    pub replaces: Digest,
}

/// Erases a record, all of its versions. Refused while a legal hold covers it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Erase {
    pub record: RecordId,
}

/// Places (`hold`) or lifts a legal hold on all of a patient's records (`record: None`) or one.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct LegalHold {
    pub patient: MemberId,
    pub record: Option<RecordId>,
    pub hold: bool,
}

/// Appoints (`appoint`) or dismisses `delegate` for `patient`. Appointing wraps the chart's current
/// key for the delegate (`chart_epoch`); dismissing moves the chart to a new epoch the dismissed
/// delegate never holds (`new_chart`), as revoking an `--all` grant does.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Delegate {
    pub patient: MemberId,
    pub delegate: MemberId,
    pub appoint: bool,
    pub chart_epoch: Option<u32>,
    pub new_chart: Option<NewChartEpoch>,
}

/// A care team: its id (random, never a member's), its first key and its members (sorted, the
/// creating doctor among them); the sidecar wraps the key's secret for each member.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TeamCreate {
    pub team: MemberId,
    pub public_key: EncryptionKey,
    pub members: Vec<MemberId>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TeamAdd {
    pub team: MemberId,
    pub member: MemberId,
}

/// Removes `member`; `public_key` is the team's next key, wrapped (sidecar) for every remaining
/// member, with the current key wrapped for it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TeamRemove {
    pub team: MemberId,
    pub member: MemberId,
    pub public_key: EncryptionKey,
}

/// The signer's next keys. A patient's sidecar wraps the chart's current key for the new
/// encryption key (their earlier envelopes stay openable with the earlier keys they keep).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RotateKeys {
    pub signing_key: VerifyingKey,
    pub encryption_key: EncryptionKey,
    pub reason: KeyChange,
    /// A claim from custody moves the patient's chart to a new epoch the custodian never held
    /// (the sidecar wraps it for the patient's new key and everyone who keeps holding the chart,
    /// and links it back); absent for every other change.
    #[serde(default)]
    pub new_chart: Option<NewChartEpoch>,
}

/// Why a member's keys change.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeyChange {
    Routine,
    /// The member restored their keys from the recovery code shown at enrolment.
    RecoveryCode,
    /// A patient claims their identity from custody with the proof of the release's one-time
    /// code: a one-way function of the code ([`claim_proof`]), so the code itself, which opens
    /// the claim file, never reaches the ledger.
    Claim {
        proof: [u8; 16],
    },
}

/// What a claim shows of its one-time code `code`: the first 16 bytes of a domain-separated
/// SHA-256 of it (the code cannot be had back from it, and it opens nothing).
pub fn claim_proof(code: &[u8; 16]) -> [u8; 16] {
    let mut bytes = b"medledger/claim-proof/v1".to_vec();
    bytes.extend_from_slice(code);
    let digest = medledger_crypto::sha256(&bytes);
    let mut proof = [0u8; 16];
    proof.copy_from_slice(&digest[..16]);
    proof
}

/// The hash a claim's proof must match (bound to the member, so a code serves one only).
pub fn claim_code_hash(member: &MemberId, proof: &[u8; 16]) -> Digest {
    let mut bytes = b"medledger/claim-code/v1".to_vec();
    bytes.extend_from_slice(member.as_bytes());
    bytes.extend_from_slice(proof);
    Digest::new(medledger_crypto::sha256(&bytes))
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CustodyRelease {
    pub member: MemberId,
    pub code_hash: Digest,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Recovery {
    pub member: MemberId,
    pub action: RecoveryAction,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecoveryAction {
    /// By an admin of the member's organisation: the keys the member made on a new device.
    Request { signing_key: VerifyingKey, encryption_key: EncryptionKey },
    /// By the member, with their current keys: the request was not theirs.
    Cancel,
    /// By the member, signed with the requested keys, once the delay has passed.
    Complete,
}

/// Validator `validator`'s next share key. New records wrap that validator's share for it from
/// the block after; the share epoch moves on by one.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ShareKey {
    pub validator: u32,
    pub public_key: EncryptionKey,
}

/// Validator `validator`'s step in re-sharing version `version` of `record` to the current set.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Reshare {
    pub validator: u32,
    pub record: RecordId,
    pub version: u32,
    pub step: ReshareStep,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum ReshareStep {
    /// A holder of the version's shares deals its share afresh to the current set: the sidecar's
    /// threshold shares are the sub-shares, wrapped for the current share keys, with the
    /// dealing's commitments (whose constant term must be the holder's committed share).
    /// `participant` is the dealer's participant id among the version's holders (position + 1).
    Deal { participant: u8 },
    /// A holder of the current set: `dealer`'s sub-shares for it do not open or do not verify.
    Complain { dealer: u32 },
    /// The dealer answers a complaint by revealing the sub-shares it dealt to `holder`
    /// ([`crate::threshold::SHARES_SECRET_BYTES`]), which everyone checks against its commitments.
    Answer { holder: u32, shares: Vec<u8> },
    /// A validator of the current set: the re-sharing is done with the dealings of `dealers` (as
    /// many of the old holders as the old threshold, ascending); the version's holders become the
    /// current set, with the combined commitments.
    Finish { dealers: Vec<u32> },
}

/// The signer id a validator uses for its own transactions: derived from its consensus key, so it
/// can never be a member's (members' ids are random).
/// The id of an organisation's directory: the key holder (like a care team's) whose key every
/// staff member of the organisation holds an envelope of, and the owner (in place of a patient)
/// of the organisation's directory records: Practitioner, Organization, Location and the other
/// resources that describe no patient. Reserved when the organisation joins, so no member or
/// team can take it.
pub fn directory_id(org: &medledger_types::OrgId) -> MemberId {
    let mut bytes = b"medledger/directory/v1/".to_vec();
    bytes.extend_from_slice(org.as_str().as_bytes());
    let digest = medledger_crypto::sha256(&bytes);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    MemberId::new(id)
}

pub fn validator_member_id(consensus_key: &VerifyingKey) -> MemberId {
    let mut bytes = b"medledger/validator/v1".to_vec();
    bytes.extend_from_slice(&consensus_key.0);
    let digest = medledger_crypto::sha256(&bytes);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    MemberId::new(id)
}

/// What executing a transaction did.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TxOutcome {
    Applied,
    Rejected { reason: Rejection },
}

impl TxOutcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, TxOutcome::Applied)
    }
}
