//! Why a transaction was rejected. Structured, so clients can map a reason to an exit code and an
//! auditor can count denials by kind; the text never names a patient.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rejection {
    /// The nonce is not above the signer's last one (a replay or a reordering).
    StaleNonce,
    /// The signer is enrolled but suspended.
    SignerSuspended,
    /// Only an admin of the member's organisation may enrol it.
    NotAdminOfOrg,
    UnknownOrg,
    MemberExists,
    /// The signing key is already enrolled for another member.
    KeyInUse,
    /// Keys, display name or chart key do not fit the role.
    InvalidEnrollment,
    /// Only the patient may do this on their chart.
    NotThePatient,
    UnknownPatient,
    UnknownMember,
    /// Grants go only to clinical members (doctor, nurse, emergency).
    GranteeNotClinical,
    /// `--write` is only for doctors, and only with `--all`.
    WriteOnlyForDoctors,
    /// A doctor adds records only for a patient who granted them `--all --write`.
    NoWriteGrant,
    /// A record is created by its patient or a doctor holding the patient's write grant.
    NotAllowedToWrite,
    RecordExists,
    UnknownRecord,
    /// The record belongs to another patient.
    WrongPatient,
    VersionMismatch,
    /// The record's envelopes must cover the patient's current chart key and the author.
    RecipientsMissing,
    /// An envelope is addressed to a member or chart key that does not exist.
    UnknownRecipient,
    /// The envelope is for an older chart epoch than the current one.
    StaleChartEpoch,
    /// The expiry is not after the block time or is too far ahead.
    BadExpiry,
    /// The sidecar does not carry the envelope this transaction needs.
    EnvelopeMissing,
    NoSuchGrant,
    /// Revoking `--all` must move the chart key to a new epoch for exactly the remaining holders.
    NewChartRequired,
    /// The record is over the size limit.
    TooLarge,
    /// An admin manages identities; it has no clinical access.
    AdminHasNoClinicalAccess,
    /// No grant, authorship or ownership allows this read.
    AccessDenied,
    /// The grant that allowed it has expired.
    GrantExpired,
    /// A chart key is shared with at most [`CHART_HOLDERS_MAX`] `--all` grantees.
    TooManyHolders,
    /// An admin does not suspend themself (another admin of the organisation does).
    SelfSuspension,
    /// The record's sidecar must carry one share of `k_thr` per validator of the current share
    /// epoch, with the network's threshold (DESIGN §6a), and only on a network that has one.
    ThresholdShares,
    /// Only doctors and emergency members break the glass.
    BreakGlassRole,
    /// Breaking the glass needs a reason code.
    BreakGlassReason,
    /// Over the member's break-glass openings per 24 hours.
    BreakGlassRateLimited,
    /// The break-glass window has closed.
    BreakGlassExpired,
    /// The record was erased; its id is never used again.
    RecordErased,
    /// A legal hold covers the record: it cannot be erased until the hold is lifted.
    LegalHold,
    /// Only auditors place and lift legal holds.
    NotAnAuditor,
    /// No such legal hold to lift.
    NoSuchHold,
    /// A share key must be valid, of the suite of the key it replaces, and new.
    InvalidShareKey,
    /// A break-glass note is wrapped for the patient and auditors only, at least one auditor.
    BreakGlassNote,
    /// The validator replaced its share key less than `SHARE_KEY_INTERVAL_MS` ago.
    ShareKeyTooSoon,
    DelegateNotAPerson,
    AlreadyDelegate,
    NoSuchDelegate,
    TooManyDelegates,
    UnknownTeam,
    NotATeamDoctor,
    TeamMemberNotClinical,
    AlreadyInTeam,
    NotInTeam,
    TeamFull,
    TooManyTeams,
    /// No longer given (the last member of a team may now leave: the team dissolves); kept so
    /// the encoding of the rejections after it does not move.
    LastTeamMember,
    StaleTeamEpoch,
    TeamEpochsExhausted,
    NotYourKeys,
    NotCustodial,
    NoCustodyRelease,
    ClaimCodeMismatch,
    ClaimExpired,
    NoRecoveryPending,
    RecoveryPending,
    RecoveryTooSoon,
    ChartKeyRequired,
    /// The signer's organisation left the consortium (its staff sign nothing after).
    OrgLeft,
    /// Governance is for an admin of a member organisation.
    NotAnOrgAdmin,
    /// The organisation already approved this proposal.
    AlreadyApproved,
    /// The proposal's approval window has closed (or runs longer than 7 days).
    ProposalExpired,
    /// Another change of the validator set is still waiting for its epoch.
    ChangePending,
    /// The organisation (or one of its keys or its validator's) already takes part.
    OrgExists,
    /// The proposal is malformed or leaves a validator set the network cannot run on.
    InvalidProposal,
    /// The proposal was already adopted.
    ProposalAdopted,
    /// The ciphertext digest already belongs to a record version (its own or another's).
    DigestInUse,
    /// Another organisation's business (a legal hold on a patient of another organisation).
    WrongOrganisation,
    /// The record has [`RECORD_VERSIONS_MAX`] versions.
    TooManyVersions,
    /// The record version's shares are already held by the current validator set, or it has none.
    NothingToReshare,
    /// The re-sharing step names a validator outside the set it must be in (old holders deal and
    /// answer, the current set complains and finishes).
    NotAShareholder,
    /// A dealing that does not fit the current set, or whose commitments are not of the dealer's
    /// own committed share.
    BadDealing,
    /// The dealing, complaint or answer was already made.
    ReshareStepRepeated,
    /// No such dealing, or no such open complaint.
    NoSuchDealing,
    /// Revealed sub-shares that do not verify against the dealing's commitments.
    BadAnswer,
    /// A finish naming dealings that are not usable (too recent, an open complaint, too few).
    ReshareNotReady,
    /// An organisation's directory is kept and read by its own active staff (its key is wrapped
    /// for them only, and added by a staff member who holds it).
    NotDirectoryStaff,
    /// An organisation's directory key is not rotated and its records are not a chart: grants,
    /// erasure, holds and break-glass are for patients' charts.
    DirectoryNotAChart,
    /// A record outside chart-wide grants is wrapped for members only: the patient, its author
    /// and every live grantee of the patient's sensitive records.
    RestrictedRecipients,
}

/// The most versions of one record (every version stays readable, and an erasure removes them
/// all in one transaction).
pub const RECORD_VERSIONS_MAX: u32 = 10_000;

/// The most `--all` grantees of one chart (each holds an envelope of the chart key).
pub const CHART_HOLDERS_MAX: usize = medledger_types::limits::SIDECAR_ENVELOPES_MAX - 1;
/// Care teams with an `--all` grant on one chart (each new record carries an envelope for each).
pub const CHART_TEAMS_MAX: usize = 16;
/// Grantees of one patient's sensitive records: each such record is wrapped for them, the
/// patient and its author, in one sidecar.
pub const SENSITIVE_GRANTEES_MAX: usize = medledger_types::limits::SIDECAR_ENVELOPES_MAX - 2;

impl Rejection {
    /// Denials of access (exit code 3), as opposed to malformed or stale requests.
    pub fn is_access_denial(self) -> bool {
        matches!(
            self,
            Rejection::NotAdminOfOrg
                | Rejection::NotThePatient
                | Rejection::NoWriteGrant
                | Rejection::NotAllowedToWrite
                | Rejection::AdminHasNoClinicalAccess
                | Rejection::AccessDenied
                | Rejection::GrantExpired
                | Rejection::SignerSuspended
                | Rejection::WriteOnlyForDoctors
                | Rejection::GranteeNotClinical
                | Rejection::BreakGlassRole
                | Rejection::BreakGlassRateLimited
                | Rejection::BreakGlassExpired
                | Rejection::LegalHold
                | Rejection::NotAnAuditor
                | Rejection::DelegateNotAPerson
                | Rejection::NotATeamDoctor
                | Rejection::NotYourKeys
                | Rejection::ClaimCodeMismatch
                | Rejection::OrgLeft
                | Rejection::NotAnOrgAdmin
                | Rejection::WrongPatient
                | Rejection::WrongOrganisation
                | Rejection::NotDirectoryStaff
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::StaleNonce => "stale nonce",
            Rejection::SignerSuspended => "signer is suspended",
            Rejection::NotAdminOfOrg => "only an admin of the member's organisation may enrol it",
            Rejection::UnknownOrg => "unknown organisation",
            Rejection::MemberExists => "member already enrolled",
            Rejection::KeyInUse => "signing key already enrolled",
            Rejection::InvalidEnrollment => "keys, display name or chart key do not fit the role",
            Rejection::NotThePatient => "only the patient may do this",
            Rejection::UnknownPatient => "unknown patient",
            Rejection::UnknownMember => "unknown member",
            Rejection::GranteeNotClinical => "grants go only to clinical members",
            Rejection::WriteOnlyForDoctors => "--write is only for doctors, with --all",
            Rejection::NoWriteGrant => "no write grant from the patient",
            Rejection::NotAllowedToWrite => "only the patient or a doctor with a write grant may add records",
            Rejection::RecordExists => "record already exists",
            Rejection::UnknownRecord => "unknown record",
            Rejection::WrongPatient => "record belongs to another patient",
            Rejection::VersionMismatch => "record version mismatch",
            Rejection::RecipientsMissing => "envelopes must cover the patient's chart key and the author",
            Rejection::UnknownRecipient => "envelope for an unknown member or chart key",
            Rejection::StaleChartEpoch => "stale chart epoch",
            Rejection::BadExpiry => "expiry must be in the future and within the limit",
            Rejection::EnvelopeMissing => "the sidecar lacks a required envelope",
            Rejection::NoSuchGrant => "no such grant",
            Rejection::NewChartRequired => "revoking --all needs a new chart epoch for exactly the remaining holders",
            Rejection::TooLarge => "record is over the size limit",
            Rejection::AdminHasNoClinicalAccess => "an admin has no clinical access",
            Rejection::AccessDenied => "access denied",
            Rejection::GrantExpired => "grant expired",
            Rejection::TooManyHolders => "too many --all grantees on this chart",
            Rejection::SelfSuspension => "an admin does not suspend themself",
            Rejection::ThresholdShares => {
                "the record must carry one key share per validator with the network's threshold"
            }
            Rejection::BreakGlassRole => "only doctors and emergency members may break the glass",
            Rejection::BreakGlassReason => "breaking the glass needs a reason code",
            Rejection::BreakGlassRateLimited => "too many break-glass openings in 24 hours",
            Rejection::BreakGlassExpired => "the break-glass window has closed",
            Rejection::RecordErased => "the record was erased",
            Rejection::LegalHold => "a legal hold covers this record",
            Rejection::NotAnAuditor => "only auditors place or lift legal holds",
            Rejection::NoSuchHold => "no such legal hold",
            Rejection::InvalidShareKey => "the share key is malformed, of another suite, or not new",
            Rejection::ShareKeyTooSoon => "the validator replaced its share key moments ago; later",
            Rejection::BreakGlassNote => "a break-glass note is for the patient and the auditors (at least one) only",
            Rejection::DelegateNotAPerson => {
                "a delegate is another active member enrolled as a person (role patient), not staff"
            }
            Rejection::AlreadyDelegate => "already the patient's delegate",
            Rejection::NoSuchDelegate => "not the patient's delegate",
            Rejection::TooManyDelegates => "too many delegates on this chart",
            Rejection::UnknownTeam => "unknown care team",
            Rejection::NotATeamDoctor => "only a doctor of the care team manages it (a member may leave)",
            Rejection::TeamMemberNotClinical => "care team members are active doctors, nurses or emergency members",
            Rejection::AlreadyInTeam => "already a member of the care team",
            Rejection::NotInTeam => "not a member of the care team",
            Rejection::TeamFull => "the care team is full",
            Rejection::TooManyTeams => "the member belongs to too many care teams",
            Rejection::LastTeamMember => "a care team keeps at least one member",
            Rejection::NotYourKeys => "a member changes only their own keys (an admin asks for a recovery)",
            Rejection::NotCustodial => "the identity is not in custody",
            Rejection::NoCustodyRelease => "the organisation has not released this identity for a claim",
            Rejection::ClaimCodeMismatch => "the claim code does not match",
            Rejection::ClaimExpired => "the claim code has expired; ask the organisation for a new one",
            Rejection::NoRecoveryPending => "no key recovery is pending for this member",
            Rejection::RecoveryPending => "a key recovery is already pending for this member",
            Rejection::RecoveryTooSoon => "the recovery's waiting period has not passed",
            Rejection::ChartKeyRequired => "a patient's new keys come with the chart key wrapped for them",
            Rejection::TeamEpochsExhausted => "the care team's keys are used up; create a new team",
            Rejection::OrgLeft => "the member's organisation has left the network",
            Rejection::NotAnOrgAdmin => "only an admin of a member organisation proposes or approves governance",
            Rejection::DigestInUse => "the ciphertext digest already belongs to a record version",
            Rejection::WrongOrganisation => {
                "this is for the patient's own organisation (or the one that placed the hold)"
            }
            Rejection::AlreadyApproved => "the organisation already approved this proposal",
            Rejection::ProposalExpired => "the proposal has expired (proposals stay open up to 7 days)",
            Rejection::ChangePending => "another validator-set change is waiting for its epoch",
            Rejection::OrgExists => "the organisation, its admin's key or its validator already take part",
            Rejection::InvalidProposal => {
                "the proposal is malformed or leaves a validator set the network cannot run on"
            }
            Rejection::ProposalAdopted => "the proposal was already adopted",
            Rejection::TooManyVersions => "the record has the most versions one record may have",
            Rejection::NothingToReshare => "the record version's shares are already held by the current validator set",
            Rejection::NotAShareholder => {
                "the validator does not hold shares of this record version in the set required"
            }
            Rejection::BadDealing => "the dealing does not fit the current set or is not of the dealer's own share",
            Rejection::ReshareStepRepeated => "this re-sharing step was already taken",
            Rejection::NoSuchDealing => "no such dealing or open complaint",
            Rejection::BadAnswer => "the revealed sub-shares do not verify against the dealing",
            Rejection::ReshareNotReady => "the named dealings cannot finish the re-sharing yet",
            Rejection::NotDirectoryStaff => {
                "an organisation's directory is kept and read by its active staff who hold its key"
            }
            Rejection::RestrictedRecipients => {
                "a record outside chart-wide grants is wrapped for the patient, its author and the grantees of sensitive \
                 records only"
            }
            Rejection::DirectoryNotAChart => {
                "an organisation's directory is not a chart: grants, erasure, holds and break-glass are for patients"
            }
            Rejection::StaleTeamEpoch => "the care team's key has moved on (or its envelopes do not fit its members)",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
