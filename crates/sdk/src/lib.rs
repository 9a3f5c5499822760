//! The medledger client SDK, used by the CLI, the tests and the benchmarks: the home directory
//! (keystores, address book, client config), the validators' HTTP API, and the member-side
//! operations where every key is made and every secret opened.

mod client;
mod custody;
mod error;
mod evidence;
mod home;
mod ops;
pub mod recovery;
mod release;

pub use client::{COMMIT_TIMEOUT, Client};
pub use custody::{CLAIM_FILE_BYTES_MAX, Custody};
pub use error::{Result, SdkError};
pub use home::{ClientConfig, Contact, Home, Identity, check_alias};
pub use ops::{
    ChartHeads, Committed, ENROLMENT_REQUEST_BYTES_MAX, EnrolmentRequest, Opened, RECORD_PLAINTEXT_MAX, RecordKeys,
    RecordMetadata, RecoveryRequest, SENSITIVE_LABELS, Sealed, Session, describe, is_sensitive,
};
pub use release::Release;
