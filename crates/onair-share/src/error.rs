//! The share service's errors and their transport-neutral codes.

use onair_kit::auth::AuthError;
use onair_kit::error::{ErrorCode, ServiceError};
use onair_kit::store::StoreError;

/// Everything a share call can fail with; each variant names its
/// gRPC/HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The request is malformed: no target or two, a malformed id or code,
    /// a moment outside the slot.
    #[error("{0}")]
    InvalidArgument(String),
    /// A share link, channel, slot or comment that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller made as many links as they may for now; they may make
    /// more after the wait.
    #[error("{message}")]
    TooMany {
        /// What the caller is told.
        message: String,
        /// How long until they may make another.
        retry_after: std::time::Duration,
    },
    /// Who is calling, or whether they may.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The media or comment service does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the caller sees only "internal error".
    #[error("{0}")]
    Internal(String),
}

impl From<sqlx::Error> for ShareError {
    fn from(error: sqlx::Error) -> Self {
        ShareError::Store(StoreError::from(error))
    }
}

impl ShareError {
    /// The error of another service's answer: what the caller can act on
    /// (an unknown or malformed target) passes through, the rest is that
    /// service being unavailable.
    pub fn from_peer(service: &str, status: &tonic::Status) -> ShareError {
        match status.code() {
            tonic::Code::NotFound => ShareError::NotFound(status.message().to_owned()),
            tonic::Code::InvalidArgument => {
                ShareError::InvalidArgument(status.message().to_owned())
            }
            _ => ShareError::Unavailable(format!(
                "the {service} service does not answer: {}",
                status.message()
            )),
        }
    }
}

impl ServiceError for ShareError {
    fn error_code(&self) -> ErrorCode {
        match self {
            ShareError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ShareError::NotFound(_) => ErrorCode::NotFound,
            ShareError::TooMany { .. } => ErrorCode::ResourceExhausted,
            ShareError::Auth(error) => error.error_code(),
            ShareError::Store(error) => error.error_code(),
            ShareError::Unavailable(_) => ErrorCode::Unavailable,
            ShareError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ShareError::TooMany { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<ShareError> for tonic::Status {
    fn from(error: ShareError) -> Self {
        onair_kit::error::into_status(error)
    }
}
