//! SDK errors, each mapped to the CLI's exit code. Messages never carry patient data.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// Bad arguments or local state (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No such record, member or transaction on the ledger (exit 2).
    #[error("{0}")]
    NotFound(String),
    /// The ledger or a node refused (exit 3).
    #[error("access denied: {0}")]
    Denied(String),
    /// Tampering detected: digest, key commitment or authentication failed (exit 4).
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// The record changed since the caller read it (a newer version exists; exit 1).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else (exit 1).
    #[error("{0}")]
    Other(String),
}

impl SdkError {
    pub fn exit_code(&self) -> i32 {
        match self {
            SdkError::Usage(_) | SdkError::NotFound(_) => 2,
            SdkError::Denied(_) => 3,
            SdkError::Integrity(_) => 4,
            SdkError::Conflict(_) | SdkError::Other(_) => 1,
        }
    }

    pub(crate) fn other(e: impl std::fmt::Display) -> Self {
        SdkError::Other(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, SdkError>;
