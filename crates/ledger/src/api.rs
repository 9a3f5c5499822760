//! The data formats clients and validators exchange over HTTP: what a submission carries, what a
//! status looks like, and how a request is signed. Shared by the node and the SDK.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::wrap::Envelope;
use medledger_types::{Commitment, Height, MemberId, Timestamp, TxId};
use serde::{Deserialize, Serialize};

use crate::TxOutcome;
use crate::sidecar::SidecarEnvelope;
use crate::state::RecordEntry;

/// Body of `POST /v1/tx` (borsh, `application/octet-stream`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SubmitRequest {
    pub tx: crate::Transaction,
    pub sidecar: Option<Vec<u8>>,
}

/// One ciphertext of `POST /v1/blobs` (a borsh `Vec<BlobUpload>`, `application/octet-stream`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BlobUpload {
    pub digest: medledger_types::Digest,
    pub bytes: Vec<u8>,
}

/// Most ciphertexts in one `POST /v1/blobs`.
pub const BLOB_BATCH_MAX: usize = 1024;
/// Largest body of one `POST /v1/blobs`.
pub const BLOB_BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitResponse {
    pub tx_id: TxId,
}

/// `GET /v1/tx/{id}`: where a transaction stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// In this validator's mempool, not yet in a finalized block.
    Pending,
    /// In a finalized, committed block.
    Committed { height: Height, index: u32, time: Timestamp, outcome: TxOutcome },
    /// Not known to this validator (never submitted here, or dropped as invalid).
    Unknown,
}

/// `GET /v1/access/{tx}/bundle`: what the reader of an allowed RecordAccess needs to decrypt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessBundle {
    pub record: RecordEntry,
    /// Envelopes that lead the reader to the record's data key: one addressed to the reader for
    /// the record, or one for the chart key plus the chart's envelope of the record.
    pub envelopes: Vec<SidecarEnvelope>,
    /// Record metadata, encrypted under the data key.
    pub metadata: Option<Vec<u8>>,
    /// For a record under threshold release: how many validators' shares the reader needs and
    /// the commitment each released share must match (share `i` is validator `i`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<ThresholdPublic>,
    /// [`AccessEvidence`] (borsh, then base64): what the reader checks all of the above against,
    /// so that no single validator can hand them anything a quorum did not certify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// Largest [`AccessEvidence`] (encoded): the sidecars of a key path are the bulk of it.
pub const ACCESS_EVIDENCE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The evidence of an [`AccessBundle`]: Merkle proofs of the state entries the bundle comes from
/// (the record entry, then the entry naming each envelope's sidecar) against the state root of a
/// block that a quorum of its epoch's validators finalized, the validator-set history from genesis
/// to that epoch, and the sidecars those entries name (each hashes to the digest its entry holds).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AccessEvidence {
    /// The certified block whose state root the proofs are against.
    pub header: crate::BlockHeader,
    /// Its finality certificate.
    pub certificate: Vec<u8>,
    /// One link per validator-set epoch after genesis, up to the block's epoch.
    pub links: Vec<crate::receipt::EpochLink>,
    /// The state entry of each of the bundle's envelopes, in the bundle's order.
    pub refs: Vec<crate::state::EnvelopeRef>,
    /// Proofs against `header.state_root`: the record entry's, then one per entry of `refs`.
    pub proofs: Vec<Vec<u8>>,
    /// The record's sidecar and those `refs` name, each once.
    pub sidecars: Vec<Vec<u8>>,
}

impl AccessEvidence {
    /// The text form carried in [`AccessBundle::evidence`].
    pub fn to_text(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(medledger_types::encode(self))
    }

    /// Decodes the text form from outside input, within [`ACCESS_EVIDENCE_BYTES_MAX`].
    pub fn from_text(text: &str) -> Option<Self> {
        use base64::Engine as _;
        if text.len() > ACCESS_EVIDENCE_BYTES_MAX / 3 * 4 + 4 {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
        medledger_types::decode_canonical(&bytes, ACCESS_EVIDENCE_BYTES_MAX).ok()
    }
}

/// `GET /v1/charts/{patient}/proof`, `/v1/members/{id}/proof`, `/v1/teams/{id}/proof`: state
/// entries a writer wraps keys for (a chart's current key and its care teams', a member's or a
/// team's public key), as [`StateEvidence`] in text form. The client reads the entries out of the
/// evidence it has checked, never beside it, so no single validator can hand it a key of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProvedState {
    /// [`StateEvidence`] (borsh, then base64).
    pub evidence: String,
}

/// Largest [`StateEvidence`] (encoded): a chart with its teams, or one member or team entry.
pub const STATE_EVIDENCE_BYTES_MAX: usize = 1024 * 1024;

/// State entries with Merkle proofs (of presence or of absence) against the state root of a block
/// a quorum of its epoch's validators finalized, with the validator-set history from genesis to
/// that epoch.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct StateEvidence {
    pub header: crate::BlockHeader,
    pub certificate: Vec<u8>,
    pub links: Vec<crate::receipt::EpochLink>,
    pub entries: Vec<ProvedEntry>,
}

/// One state key, its value in the certified state (`None`: absent) and the proof of it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ProvedEntry {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub proof: Vec<u8>,
}

impl StateEvidence {
    /// The text form carried in [`ProvedState::evidence`].
    pub fn to_text(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(medledger_types::encode(self))
    }

    /// Decodes the text form from outside input, within [`STATE_EVIDENCE_BYTES_MAX`].
    pub fn from_text(text: &str) -> Option<Self> {
        use base64::Engine as _;
        if text.len() > STATE_EVIDENCE_BYTES_MAX / 3 * 4 + 4 {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).ok()?;
        medledger_types::decode_canonical(&bytes, STATE_EVIDENCE_BYTES_MAX).ok()
    }
}

/// The public side of a record's threshold shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThresholdPublic {
    pub epoch: u32,
    /// The stable indices of the validators holding the shares, in share order.
    pub validators: Vec<u32>,
    pub threshold: u8,
    /// The Pedersen commitments a released `k_thr` share is checked against.
    pub verifier: Vec<Commitment>,
    pub emergency_threshold: u8,
    /// The same for the emergency shares of `k_env`.
    pub emergency_verifier: Vec<Commitment>,
}

impl ThresholdPublic {
    /// The public side of a record version's threshold release, as its (certified) entry says:
    /// the holders and commitments of the latest generation of its shares.
    pub fn of(info: &crate::threshold::ThresholdInfo) -> Self {
        ThresholdPublic {
            epoch: info.epoch,
            validators: info.validators.clone(),
            threshold: info.threshold,
            verifier: info.verifier.clone(),
            emergency_threshold: info.emergency_threshold,
            emergency_verifier: info.emergency_verifier.clone(),
        }
    }
}

/// `GET /v1/access/{tx}/share`: this validator's share of the record's `k_thr`, wrapped for the
/// signer of the allowed RecordAccess `tx` (DESIGN §6a).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleasedShare {
    /// The validator's index in the share epoch (the share's participant id minus one).
    pub validator: u32,
    pub epoch: u32,
    /// Wraps the `k_thr` share; for an access allowed by break-glass, followed by the emergency
    /// share of `k_env`.
    pub envelope: Envelope,
    /// Whether the envelope carries the emergency share too.
    pub emergency: bool,
    /// The validator's committed height when it released the share: a reader whose bundle
    /// names an older generation of the record's shares (another validator had not seen a
    /// re-sharing finish yet) reads the bundle again from at least this height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<Height>,
}

/// `GET /v1/tx/{id}/note`: a break-glass note for one of its readers (the patient or an
/// auditor): the note key wrapped for the signer and the note encrypted under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BreakGlassNote {
    pub envelope: crate::sidecar::SidecarEnvelope,
    /// AES-256-GCM STREAM payload of the note's text.
    pub ciphertext: Vec<u8>,
}

/// `GET /v1/staff`: a page of the staff directory of one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StaffPage {
    pub members: Vec<crate::state::MemberEntry>,
    /// Member id (hex) to continue after; absent on the last page.
    pub next: Option<String>,
}

/// A problem report (RFC 9457) returned with every 4xx/5xx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Problem type of an access denial (clients exit 3).
/// Response header of a full page of a paged list: the cursor (`after`) of the next page.
pub const HEADER_NEXT: &str = "x-medledger-next";

pub const PROBLEM_ACCESS_DENIED: &str = "urn:medledger:problem:access-denied";
/// Problem type of an integrity failure (clients exit 4).
pub const PROBLEM_INTEGRITY: &str = "urn:medledger:problem:integrity";

/// `GET /v1/members/{id}/charts`: the charts a member has held a grant on or been a delegate of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChartsPage {
    /// Patients' member ids, in id order.
    pub charts: Vec<MemberId>,
    /// Continue after this patient (`after=`) for more.
    pub next: Option<MemberId>,
    /// For each of `charts`, the height at which its record list last changed (0: never), or
    /// null where the signer may not list it now (a grant that ended).
    #[serde(default)]
    pub heads: Vec<Option<u64>>,
    /// The committed height the page is at least as new as: the `since` of the next look.
    #[serde(default)]
    pub as_of: Option<u64>,
}

/// `GET /v1/members/{id}/records`: the record entries of the charts in a member's chart list
/// (with `since`, of those whose head moved), paged by entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChartRecordsPage {
    /// Charts in id order; the first may go on from the page before (the same patient).
    pub charts: Vec<ChartRecords>,
    /// Continue after this (`after=`): a patient id, or a patient id and a record id when the
    /// last chart goes on in the next page.
    pub next: Option<String>,
    /// The committed height the page is at least as new as: the `since` of the next look.
    pub as_of: u64,
}

/// One chart of a [`ChartRecordsPage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChartRecords {
    pub patient: MemberId,
    /// The height at which its records or readers last changed (0: never), or null where the
    /// signer may not list it now (then `records` is empty).
    pub head: Option<u64>,
    /// Its record entries in record id order (part of them when `partial`).
    pub records: Vec<RecordEntry>,
    /// The chart's entries go on in the next page.
    pub partial: bool,
}

/// `GET /v1/patients/{id}/records/head`: when a chart's record list last changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordsHead {
    /// The height of the last version registered or record erased in the chart (0: none yet).
    pub height: u64,
}
