//! Identifiers, roles, purposes, limits and the canonical binary encoding shared by every medledger crate.
//!
//! Every id and counter is a newtype built explicitly (no `From<u64>`), so a record id can never be
//! passed where a member id is expected. The canonical encoding is borsh, bounded by a caller-given
//! size limit and checked for canonicity by re-encoding: a value has exactly one accepted encoding,
//! so the hash of its bytes is a stable identity.

mod encoding;
mod ids;
pub mod limits;
mod roles;
pub mod schema;

pub use encoding::{DecodeError, Trailing, decode_canonical, encode};
pub use ids::{
    BlockHash, ChainId, Commitment, Digest, Height, MemberId, NONCE_LANE_BITS, NONCE_LANES, Nonce, OrgId, OrgIdError,
    RecordId, Timestamp, TxId,
};
pub use roles::{ParseError, PurposeOfUse, Role};
