//! The data formats clients and validators exchange over HTTP: what a submission carries, what a
//! status looks like, and how a request is signed. Shared by the node and the SDK.

use borsh::{BorshDeserialize, BorshSerialize};
use medledger_crypto::sign::{Signature, SigningKey, VerifyingKey};
use medledger_types::{Height, MemberId, Timestamp, TxId};
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub tx_id: TxId,
}

/// `GET /v1/tx/{id}`: where a transaction stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessBundle {
    pub record: RecordEntry,
    /// Envelopes that lead the reader to the record's data key: one addressed to the reader for
    /// the record, or one for the chart key plus the chart's envelope of the record.
    pub envelopes: Vec<SidecarEnvelope>,
    /// Record metadata, encrypted under the data key.
    pub metadata: Option<Vec<u8>>,
}

/// A problem report (RFC 9457) returned with every 4xx/5xx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Problem type of an access denial (clients exit 3).
pub const PROBLEM_ACCESS_DENIED: &str = "urn:medledger:problem:access-denied";
/// Problem type of an integrity failure (clients exit 4).
pub const PROBLEM_INTEGRITY: &str = "urn:medledger:problem:integrity";

/// Signing namespace of API requests.
pub const REQUEST_NAMESPACE: &[u8] = b"medledger/api/v1";
pub const HEADER_SIGNER: &str = "x-medledger-signer";
pub const HEADER_TIME: &str = "x-medledger-time";
pub const HEADER_SIGNATURE: &str = "x-medledger-signature";

/// What a request signature covers: method, path with query, time, and the body's SHA-256.
pub fn request_message(method: &str, path_and_query: &str, time: Timestamp, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(96 + path_and_query.len());
    message.extend_from_slice(method.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(path_and_query.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(&time.get().to_be_bytes());
    message.extend_from_slice(&medledger_crypto::sha256(body));
    message
}

/// The three header values of a signed request.
pub fn sign_request(
    key: &SigningKey,
    signer: MemberId,
    method: &str,
    path_and_query: &str,
    time: Timestamp,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signature = key.sign(REQUEST_NAMESPACE, &request_message(method, path_and_query, time, body));
    [
        (HEADER_SIGNER, signer.to_hex()),
        (HEADER_TIME, time.get().to_string()),
        (HEADER_SIGNATURE, hex::encode(signature.0)),
    ]
}

/// Checks a request signature.
pub fn verify_request(
    key: &VerifyingKey,
    method: &str,
    path_and_query: &str,
    time: Timestamp,
    body: &[u8],
    signature: &Signature,
) -> bool {
    key.verify(REQUEST_NAMESPACE, &request_message(method, path_and_query, time, body), signature).is_ok()
}
