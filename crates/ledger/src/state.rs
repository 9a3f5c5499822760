//! The state layout: every key the ledger writes, and the values behind them.
//!
//! Keys are short prefixes followed by fixed-width ids, so a store can list by prefix (a patient's
//! records, grants and audit trail) while the Merkle tree commits to every key and value. Values are
//! borsh-encoded entries. Nothing here names a patient other than by pseudonym.

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::sign::VerifyingKey;
use medledger_crypto::wrap::EncryptionKey;
use medledger_types::{
    Digest, Height, MemberId, Nonce, OrgId, PurposeOfUse, RecordId, Role, Timestamp, Trailing, TxId,
};
use serde::{Deserialize, Serialize};

use crate::policy::Rejection;
use crate::tx::GrantScope;

/// Read access to the state before (or during) a block.
pub trait StateView {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

/// Writes of a block or transaction: `None` deletes. Ordered, so applying them is deterministic.
pub type WriteSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A view of `base` with `writes` applied on top.
pub struct Overlay<'a, V: StateView + ?Sized> {
    base: &'a V,
    pub writes: WriteSet,
}

impl<'a, V: StateView + ?Sized> Overlay<'a, V> {
    pub fn new(base: &'a V) -> Self {
        Self { base, writes: WriteSet::new() }
    }
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }
}

impl<V: StateView + ?Sized> StateView for Overlay<'_, V> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(value) => value.clone(),
            None => self.base.get(key),
        }
    }
}

impl StateView for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}

/// Reads and decodes an entry. State is only written by this crate, so a value that fails to
/// decode is a broken invariant, not outside input.
pub fn read<T: BorshDeserialize>(view: &(impl StateView + ?Sized), key: &[u8]) -> Option<T> {
    view.get(key).map(|bytes| borsh::from_slice(&bytes).expect("state values are written by the ledger and decode"))
}

pub mod keys {
    //! State keys. The first byte(s) name the table.
    use super::*;

    fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut k = prefix.to_vec();
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }

    pub const ORG: &[u8] = b"o/";
    pub const MEMBER: &[u8] = b"m/";
    pub const NONCE: &[u8] = b"n/";
    pub const CHART: &[u8] = b"c/";
    pub const RECORD: &[u8] = b"r/";
    /// Every readable version of a record: the entry as that version registered it.
    pub const RECORD_VERSION: &[u8] = b"rv/";
    pub const PATIENT_RECORD: &[u8] = b"pr/";
    pub const GRANT: &[u8] = b"g/";
    pub const AUTHOR_REVOKED: &[u8] = b"ar/";
    pub const ENVELOPE: &[u8] = b"e/";
    pub const AUDIT: &[u8] = b"a/";
    pub const TX_RESULT: &[u8] = b"t/";
    pub const SIGNING_KEY: &[u8] = b"k/";
    /// The validators' share keys of the current share epoch (threshold release).
    pub const THRESHOLD: &[u8] = b"v/threshold";
    /// The share configuration of an adopted validator set, until its first block.
    pub const THRESHOLD_NEXT: &[u8] = b"v/threshold-next";
    /// The network's own limits from genesis (absent: the defaults).
    pub const POLICY: &[u8] = b"v/policy";
    pub const BREAK_GLASS: &[u8] = b"bg/";
    pub const BREAK_GLASS_USES: &[u8] = b"bu/";
    /// Audit events for the auditors' review queue (break-glass, emergency reads), by height.
    pub const FLAGGED: &[u8] = b"f/";
    /// RecordAccess transactions allowed only by break-glass (validators then release emergency shares).
    pub const ACCESS_BASIS: &[u8] = b"ab/";
    /// Tombstones of erased records (their ids are never reused).
    pub const ERASED: &[u8] = b"x/";
    /// Which record version each ciphertext digest belongs to (for good: a digest is never named
    /// by a second version, even after an erasure).
    pub const CIPHERTEXT: &[u8] = b"cx/";
    /// Members whose reads as authors of a patient's records ended with their `--all` grant.
    pub const AUTHORSHIP_ENDED: &[u8] = b"ae/";
    /// Auditors' chart reviews: until when each may list the patient's records.
    pub const CHART_REVIEW: &[u8] = b"cv/";
    /// Denials per signer and window: how many were filed as events and how many only counted.
    pub const DENIALS: &[u8] = b"dn/";
    /// The staff directory: staff members by role (never a patient).
    pub const STAFF: &[u8] = b"sf/";
    /// Legal holds, on a patient's whole chart or on one record.
    pub const LEGAL_HOLD: &[u8] = b"lh/";
    /// Care teams (and organisations' directories, see [`crate::tx::directory_id`]), by id.
    pub const TEAM: &[u8] = b"tm/";
    /// The organisation whose directory an id is (written when the organisation joins: no member
    /// or team may take the id).
    pub const DIRECTORY: &[u8] = b"dy/";
    /// The care teams each member belongs to.
    pub const MEMBER_TEAMS: &[u8] = b"mt/";
    /// The charts a member has held a grant on or been appointed a delegate of (never removed:
    /// what the member may read of them is still the ledger's decision, read by read).
    pub const READER_CHARTS: &[u8] = b"rc/";
    /// For a subject wrapped for a care team: the team key epoch it was wrapped for.
    pub const TEAM_ENVELOPE: &[u8] = b"te/";
    /// Pending admin-approved key recoveries, by member.
    pub const RECOVERY: &[u8] = b"ry/";
    /// Identities released from custody, waiting for their patient's claim.
    pub const CUSTODY_RELEASE: &[u8] = b"cr/";
    /// Every validator that ever took part, by stable index.
    pub const VALIDATOR: &[u8] = b"va/";
    /// How many validators ever took part (the next stable index).
    pub const VALIDATOR_COUNT: &[u8] = b"v/validators";
    /// The validator set of each epoch.
    pub const VALIDATOR_EPOCH: &[u8] = b"ve/";
    /// The latest epoch number.
    pub const EPOCH_LATEST: &[u8] = b"v/epoch";
    /// How many organisations take part (not counting those that left).
    pub const ORG_COUNT: &[u8] = b"v/orgs";
    /// Governance proposals, by id.
    pub const PROPOSAL: &[u8] = b"gp/";
    /// The height at which a chart's (or a directory's) record list or readers last changed: a
    /// version registered, a record erased, the chart entry written (grants, revocations,
    /// delegates). Lets a reader's client tell which charts to list again, or to drop.
    pub const RECORDS_HEAD: &[u8] = b"rh/";

    pub fn records_head(owner: &MemberId) -> Vec<u8> {
        key(RECORDS_HEAD, &[owner.as_bytes()])
    }

    pub fn validator(index: u32) -> Vec<u8> {
        key(VALIDATOR, &[&index.to_be_bytes()])
    }
    pub fn validator_epoch(epoch: u64) -> Vec<u8> {
        key(VALIDATOR_EPOCH, &[&epoch.to_be_bytes()])
    }
    pub fn proposal(id: &Digest) -> Vec<u8> {
        key(PROPOSAL, &[id.as_bytes()])
    }

    pub fn directory(id: &MemberId) -> Vec<u8> {
        key(DIRECTORY, &[id.as_bytes()])
    }
    pub fn org(org: &OrgId) -> Vec<u8> {
        key(ORG, &[org.as_str().as_bytes()])
    }
    pub fn recovery(id: &MemberId) -> Vec<u8> {
        key(RECOVERY, &[id.as_bytes()])
    }
    pub fn custody_release(id: &MemberId) -> Vec<u8> {
        key(CUSTODY_RELEASE, &[id.as_bytes()])
    }
    pub fn team(id: &MemberId) -> Vec<u8> {
        key(TEAM, &[id.as_bytes()])
    }
    pub fn member_teams(id: &MemberId) -> Vec<u8> {
        key(MEMBER_TEAMS, &[id.as_bytes()])
    }
    pub fn reader_chart(reader: &MemberId, patient: &MemberId) -> Vec<u8> {
        key(READER_CHARTS, &[reader.as_bytes(), patient.as_bytes()])
    }
    pub fn reader_charts(reader: &MemberId) -> Vec<u8> {
        key(READER_CHARTS, &[reader.as_bytes()])
    }
    pub fn team_envelope(subject: &crate::KeySubject, team: &MemberId) -> Vec<u8> {
        key(TEAM_ENVELOPE, &[&medledger_types::encode(subject), team.as_bytes()])
    }
    pub fn member(id: &MemberId) -> Vec<u8> {
        key(MEMBER, &[id.as_bytes()])
    }
    pub fn nonce(id: &MemberId, lane: u16) -> Vec<u8> {
        key(NONCE, &[id.as_bytes(), &lane.to_be_bytes()])
    }
    pub fn signing_key(k: &VerifyingKey) -> Vec<u8> {
        key(SIGNING_KEY, &[&k.0])
    }
    pub fn chart(patient: &MemberId) -> Vec<u8> {
        key(CHART, &[patient.as_bytes()])
    }
    pub fn record(id: &RecordId) -> Vec<u8> {
        key(RECORD, &[id.as_bytes()])
    }
    pub fn record_version(id: &RecordId, version: u32) -> Vec<u8> {
        key(RECORD_VERSION, &[id.as_bytes(), &version.to_be_bytes()])
    }
    pub fn patient_records(patient: &MemberId) -> Vec<u8> {
        key(PATIENT_RECORD, &[patient.as_bytes()])
    }
    pub fn patient_record(patient: &MemberId, record: &RecordId) -> Vec<u8> {
        key(PATIENT_RECORD, &[patient.as_bytes(), record.as_bytes()])
    }
    pub fn grants_of(patient: &MemberId) -> Vec<u8> {
        key(GRANT, &[patient.as_bytes()])
    }
    pub fn grant(patient: &MemberId, grantee: &MemberId, scope: &GrantScope) -> Vec<u8> {
        match scope {
            GrantScope::All => key(GRANT, &[patient.as_bytes(), grantee.as_bytes(), b"*"]),
            GrantScope::Sensitive => key(GRANT, &[patient.as_bytes(), grantee.as_bytes(), b"s"]),
            GrantScope::Record(r) => key(GRANT, &[patient.as_bytes(), grantee.as_bytes(), b"r", r.as_bytes()]),
        }
    }
    /// Set when a patient revokes a member's `--all` grant: from then on the member reads none of
    /// the patient's records as their author (per-record grants still count).
    pub fn authorship_ended(patient: &MemberId, member: &MemberId) -> Vec<u8> {
        key(AUTHORSHIP_ENDED, &[patient.as_bytes(), member.as_bytes()])
    }

    /// A signer's denials in window `window` (block time / [`DENIAL_WINDOW_MS`]).
    pub fn denials(signer: &MemberId, window: u64) -> Vec<u8> {
        key(DENIALS, &[signer.as_bytes(), &window.to_be_bytes()])
    }

    /// A staff member's entry in the directory index of `role`.
    pub fn staff(role: Role, member: &MemberId) -> Vec<u8> {
        key(STAFF, &[role.as_str().as_bytes(), b"/", member.as_bytes()])
    }

    /// The directory index of `role`: [`staff`] keys share it.
    pub fn staff_of(role: Role) -> Vec<u8> {
        key(STAFF, &[role.as_str().as_bytes(), b"/"])
    }

    /// Until when an auditor's committed review lets them list a patient's records.
    pub fn chart_review(patient: &MemberId, auditor: &MemberId) -> Vec<u8> {
        key(CHART_REVIEW, &[patient.as_bytes(), auditor.as_bytes()])
    }

    pub fn author_revoked(record: &RecordId, author: &MemberId) -> Vec<u8> {
        key(AUTHOR_REVOKED, &[record.as_bytes(), author.as_bytes()])
    }
    pub fn envelope(subject: &crate::KeySubject, holder: &crate::KeyHolder) -> Vec<u8> {
        key(ENVELOPE, &[&medledger_types::encode(subject), &medledger_types::encode(holder)])
    }
    pub fn audit_of(patient: &MemberId) -> Vec<u8> {
        key(AUDIT, &[patient.as_bytes()])
    }
    pub fn audit(patient: &MemberId, height: Height, index: u32) -> Vec<u8> {
        key(AUDIT, &[patient.as_bytes(), &height.get().to_be_bytes(), &index.to_be_bytes()])
    }
    pub fn break_glass(patient: &MemberId, member: &MemberId) -> Vec<u8> {
        key(BREAK_GLASS, &[patient.as_bytes(), member.as_bytes()])
    }
    pub fn break_glass_uses(member: &MemberId) -> Vec<u8> {
        key(BREAK_GLASS_USES, &[member.as_bytes()])
    }
    pub fn flagged(height: Height, index: u32) -> Vec<u8> {
        key(FLAGGED, &[&height.get().to_be_bytes(), &index.to_be_bytes()])
    }
    pub fn access_basis(tx: &TxId) -> Vec<u8> {
        key(ACCESS_BASIS, &[tx.as_bytes()])
    }
    /// Validator `dealer`'s dealing of its share of a record version to the current set.
    pub fn reshare_dealing(record: &RecordId, version: u32, dealer: u32) -> Vec<u8> {
        key(b"rs/d/", &[record.as_bytes(), &version.to_be_bytes(), &dealer.to_be_bytes()])
    }
    /// The current set's `holder` complaining about `dealer`'s dealing of a record version.
    pub fn reshare_complaint(record: &RecordId, version: u32, dealer: u32, holder: u32) -> Vec<u8> {
        key(b"rs/c/", &[record.as_bytes(), &version.to_be_bytes(), &dealer.to_be_bytes(), &holder.to_be_bytes()])
    }
    pub fn ciphertext(digest: &Digest) -> Vec<u8> {
        key(CIPHERTEXT, &[digest.as_bytes()])
    }

    pub fn erased(record: &RecordId) -> Vec<u8> {
        key(ERASED, &[record.as_bytes()])
    }
    /// A hold on the whole chart (`record: None`) or on one record.
    pub fn legal_hold(patient: &MemberId, record: Option<&RecordId>) -> Vec<u8> {
        match record {
            None => key(LEGAL_HOLD, &[patient.as_bytes(), b"*"]),
            Some(r) => key(LEGAL_HOLD, &[patient.as_bytes(), b"r", r.as_bytes()]),
        }
    }
    /// When validator `index` last replaced its share key.
    pub fn share_key_replaced(index: u32) -> Vec<u8> {
        key(b"v/sk/", &[&index.to_be_bytes()])
    }
    pub fn tx_result(tx: &TxId) -> Vec<u8> {
        key(TX_RESULT, &[tx.as_bytes()])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct OrgEntry {
    pub id: OrgId,
    pub name: String,
    pub admin: MemberId,
    /// The block that adopted the organisation's leaving, if it left: its staff sign nothing after.
    pub left_at: Option<Height>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    Suspended,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberEntry {
    pub id: MemberId,
    pub org: OrgId,
    pub role: Role,
    pub signing_key: VerifyingKey,
    pub encryption_key: EncryptionKey,
    pub display_name: Option<String>,
    pub status: MemberStatus,
    pub enrolled_at: Timestamp,
    /// The admin who enrolled the member; `None` for the admins of genesis.
    pub enrolled_by: Option<MemberId>,
    /// Enrolled in the organisation's custody (keys held by the organisation until claimed).
    pub custodial: bool,
}

/// A patient's current chart key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChartEntry {
    pub patient: MemberId,
    pub epoch: u32,
    pub public_key: EncryptionKey,
    /// Members holding an `--all` grant, whose envelopes of this epoch's key exist (sorted). The
    /// next epoch after a revocation must be wrapped for exactly the patient and these, minus the
    /// revoked member and any expired grant.
    pub holders: Vec<MemberId>,
    /// The patient's delegates (sorted), who hold this epoch's key and act for the patient.
    pub delegates: Vec<MemberId>,
    /// Care teams with an `--all` grant (sorted): each new record's key is wrapped for each live
    /// one's current key (they never hold this epoch's chart key).
    pub teams: Vec<MemberId>,
    /// Members holding a grant on the records outside chart-wide grants (sorted): each such
    /// record is wrapped for each live one. Last field: absent in charts written before.
    #[schema(value_type = Option<Vec<MemberId>>)]
    pub sensitive: Trailing<Vec<MemberId>>,
}

/// The `chart_epoch` of a record version wrapped for no chart key: outside chart-wide grants
/// (a sensitive record, readable by the patient, its author and those granted it or sensitive
/// records). All the ledger knows of it: not its category.
pub const RESTRICTED_CHART_EPOCH: u32 = u32::MAX;

impl ChartEntry {
    pub fn is_delegate(&self, member: &MemberId) -> bool {
        self.delegates.binary_search(member).is_ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
/// A record as of its current version (earlier versions' entries are in the chain's history).
pub struct RecordEntry {
    pub record: RecordId,
    pub patient: MemberId,
    /// The author of the current version.
    pub author: MemberId,
    pub version: u32,
    pub digest: Digest,
    pub size_bytes: u64,
    /// The sidecar with the record's envelopes and encrypted metadata.
    pub sidecar: Digest,
    /// The chart epoch the data key is wrapped for.
    pub chart_epoch: u32,
    /// When the current version was registered.
    pub created_at: Timestamp,
    pub created_height: Height,
    /// Set when the data key needs the validators' shares (DESIGN §6a). Last field: absent in
    /// records written before threshold release existed, whose encoding it leaves unchanged.
    #[schema(value_type = Option<crate::threshold::ThresholdInfo>)]
    pub threshold: Trailing<crate::threshold::ThresholdInfo>,
}

/// A care team: its current key epoch and public key, and its members (sorted).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TeamEntry {
    pub team: MemberId,
    pub org: OrgId,
    pub epoch: u32,
    pub public_key: EncryptionKey,
    pub members: Vec<MemberId>,
    pub created_by: MemberId,
    pub created_at: Timestamp,
}

impl TeamEntry {
    pub fn has(&self, member: &MemberId) -> bool {
        self.members.binary_search(member).is_ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GrantEntry {
    pub patient: MemberId,
    pub grantee: MemberId,
    pub scope: GrantScope,
    pub write: bool,
    pub granted_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub tx: TxId,
}

impl GrantEntry {
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// Where a holder's envelope of a subject lives: which sidecar, committed by which transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvelopeRef {
    pub sidecar: Digest,
    pub tx: TxId,
}

/// What an audit event is about.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditAction {
    Read {
        record: RecordId,
        version: u32,
    },
    Write {
        record: RecordId,
        version: u32,
    },
    Grant {
        grantee: MemberId,
        scope: GrantScope,
        write: bool,
        expires_at: Option<Timestamp>,
    },
    Revoke {
        grantee: MemberId,
        scope: GrantScope,
    },
    /// A break-glass opening (or attempt) on the patient's records, open until `until`.
    BreakGlass {
        reason: Option<crate::tx::EmergencyReason>,
        until: Option<Timestamp>,
    },
    /// The erasure (or an attempt) of a record and its `versions` versions.
    Erase {
        record: RecordId,
        versions: u32,
    },
    /// A legal hold placed (`hold`) or lifted on the chart (`record: None`) or one record.
    LegalHold {
        record: Option<RecordId>,
        hold: bool,
    },
    /// A delegate appointed (`appoint`) or dismissed.
    Delegate {
        delegate: MemberId,
        appoint: bool,
    },
    /// The member's keys: changed, released from custody, or a recovery requested, cancelled or
    /// completed (filed in the member's own trail).
    Keys {
        event: KeyEvent,
    },
    /// An auditor's review of the patient's record list (or an attempt).
    ChartReview,
    /// A read under break-glass of a record outside chart-wide grants (a sensitive one): flagged
    /// apart from other emergency reads, and never hidden among them.
    ReadRestricted {
        record: RecordId,
        version: u32,
    },
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyEvent {
    Rotated,
    RestoredFromRecoveryCode,
    CustodyReleased,
    CustodyClaimed,
    RecoveryRequested,
    RecoveryCancelled,
    RecoveryCompleted,
}

impl KeyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyEvent::Rotated => "keys rotated",
            KeyEvent::RestoredFromRecoveryCode => "keys restored from the recovery code and rotated",
            KeyEvent::CustodyReleased => "released from custody for a claim",
            KeyEvent::CustodyClaimed => "identity claimed from custody",
            KeyEvent::RecoveryRequested => "key recovery requested by an admin",
            KeyEvent::RecoveryCancelled => "key recovery cancelled",
            KeyEvent::RecoveryCompleted => "key recovery completed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Denied { reason: Rejection },
}

/// One entry of a patient's audit trail.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub tx: TxId,
    pub height: Height,
    pub time: Timestamp,
    pub actor: MemberId,
    pub actor_org: OrgId,
    pub actor_role: Role,
    pub action: AuditAction,
    pub purpose: Option<PurposeOfUse>,
    pub decision: Decision,
    /// Set when the actor acted as this patient's delegate: the event names both.
    pub delegate_of: Option<MemberId>,
}

impl AuditEvent {
    /// Whether the auditors review it: every break-glass opening or attempt, and every read for
    /// emergency treatment.
    pub fn is_flagged(&self) -> bool {
        matches!(
            self.action,
            AuditAction::BreakGlass { .. }
                | AuditAction::ReadRestricted { .. }
                | AuditAction::Keys { event: KeyEvent::RecoveryRequested | KeyEvent::RecoveryCompleted }
        ) || self.purpose == Some(PurposeOfUse::Etreat)
    }
}

/// An entry of the auditors' review queue: a flagged event and whose trail it is in.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlaggedEntry {
    pub patient: MemberId,
    pub event: AuditEvent,
}

/// A member's open break-glass window on a patient's records.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BreakGlassEntry {
    pub reason: crate::tx::EmergencyReason,
    pub opened_at: Timestamp,
    pub until: Timestamp,
    pub tx: TxId,
}

/// Length of a denial-counting window, in milliseconds of block time.
pub const DENIAL_WINDOW_MS: u64 = 60 * 60 * 1000;
/// Denials of one signer filed as audit events per window; beyond, they are only counted.
pub const DENIAL_EVENTS_PER_WINDOW: u32 = 100;

/// A signer's denials in one window: every one is counted, the first
/// [`DENIAL_EVENTS_PER_WINDOW`] are also events in the patients' trails (and the review queue).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DenialCount {
    pub filed: u32,
    pub unfiled: u32,
}

/// The one record version a ciphertext belongs to: erasing or rotating that record is the only
/// thing that deletes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CiphertextOwner {
    pub record: RecordId,
    pub version: u32,
}

/// What is left of an erased record: who it belonged to and when it went (the digests of its
/// versions stay in the chain's transactions).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErasedEntry {
    pub record: RecordId,
    pub patient: MemberId,
    /// How many versions it had.
    pub versions: u32,
    pub erased_at: Timestamp,
    pub tx: TxId,
}

/// A member's keys waiting to replace their lost ones (an admin-approved recovery).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecoveryEntry {
    pub signing_key: VerifyingKey,
    pub encryption_key: EncryptionKey,
    pub requested_by: MemberId,
    pub requested_at: Timestamp,
    /// From then on the member completes it with the new keys (until then they may cancel).
    pub effective_at: Timestamp,
    pub tx: TxId,
}

/// A patient's identity released from custody: the claim must bring the one-time code.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CustodyReleaseEntry {
    pub code_hash: Digest,
    pub released_by: MemberId,
    pub expires_at: Timestamp,
    pub tx: TxId,
}

/// A legal hold: erasure of what it covers is refused until an auditor lifts it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LegalHoldEntry {
    pub placed_by: MemberId,
    pub placed_at: Timestamp,
    pub tx: TxId,
}

/// Why a RecordAccess was allowed, when it matters to the validators' share release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub enum AccessBasis {
    /// Only an open break-glass window allowed it: the reader holds no envelope, so validators
    /// release their emergency shares of `k_env` too.
    BreakGlass,
}

/// The outcome of a committed transaction, kept so clients can learn it and nodes can check a
/// reader's RecordAccess before serving bytes.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TxResultEntry {
    pub height: Height,
    pub index: u32,
    pub time: Timestamp,
    pub signer: MemberId,
    pub outcome: crate::TxOutcome,
}

/// The last nonce a signer used.
/// The last nonce a signer used in `lane` (see [`medledger_types::NONCE_LANE_BITS`]).
pub fn last_nonce(view: &(impl StateView + ?Sized), member: &MemberId, lane: u16) -> Nonce {
    read(view, &keys::nonce(member, lane)).unwrap_or(Nonce::ZERO)
}

#[cfg(test)]
mod tests {
    /// Every key constant of [`super::keys`], read from this file so a new table cannot be left
    /// out: a table's prefix that equals or begins another's makes a scan of one return the
    /// other's rows (seen: pending key recoveries and the charts a member reads shared `rc/`, so a
    /// member's chart list failed while their recovery was pending).
    #[test]
    fn no_key_prefix_begins_another() {
        let source = include_str!("state.rs");
        let mut prefixes: Vec<(&str, &str)> = Vec::new();
        for line in source.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("pub const ") else { continue };
            let Some((name, value)) = rest.split_once(": &[u8] = b\"") else { continue };
            let Some(value) = value.strip_suffix("\";") else { continue };
            prefixes.push((name, value));
        }
        assert!(prefixes.len() > 30, "the key constants were not found");
        for (i, (a, pa)) in prefixes.iter().enumerate() {
            for (b, pb) in prefixes.iter().skip(i + 1) {
                // Tables (ending in `/`) must be prefix-free against every other key; single keys
                // (`v/...`) are only ever read whole, so one may extend another.
                let table_clash =
                    (pa.ends_with('/') && pb.starts_with(pa)) || (pb.ends_with('/') && pa.starts_with(pb));
                assert!(pa != pb && !table_clash, "{a} ({pa}) and {b} ({pb}) overlap");
            }
        }
    }
}
