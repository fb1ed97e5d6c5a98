//! The playout service's errors and their transport-neutral codes.

use onair_kit::auth::AuthError;
use onair_kit::error::{ErrorCode, ServiceError};
use onair_kit::store::StoreError;

/// Everything a playout call can fail with; each variant names its gRPC/HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum PlayoutError {
    /// The request is malformed: a missing path, a file ffmpeg cannot read,
    /// a bad id. Retrying it unchanged fails again.
    #[error("{0}")]
    InvalidArgument(String),
    /// An asset, channel or slot that does not exist.
    #[error("no {kind} with id {id:?}")]
    NotFound {
        /// `asset`, `channel` or `slot`.
        kind: &'static str,
        /// The id the caller gave.
        id: String,
    },
    /// An asset id that is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be served as things stand (a slot that is not live).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request over a configured bound (an upload too large).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Who is calling, or whether they may.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The media service or the segment storage does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// The media service refused a call made for the request (a malformed
    /// slot id, a slot that does not exist): its code and message pass
    /// through.
    #[error("{message}")]
    Media {
        /// The media service's code.
        code: ErrorCode,
        /// The media service's message.
        message: String,
    },
    /// A bug or an unexpected failure; the caller sees only "internal error".
    #[error("{0}")]
    Internal(String),
}

impl PlayoutError {
    /// A `NotFound` for an asset id.
    pub fn asset_not_found(id: &str) -> PlayoutError {
        PlayoutError::NotFound {
            kind: "asset",
            id: id.to_owned(),
        }
    }
}

impl From<sqlx::Error> for PlayoutError {
    fn from(error: sqlx::Error) -> Self {
        PlayoutError::Store(StoreError::from(error))
    }
}

impl From<std::io::Error> for PlayoutError {
    fn from(error: std::io::Error) -> Self {
        PlayoutError::Unavailable(format!("segment storage: {error}"))
    }
}

impl From<tonic::Status> for PlayoutError {
    fn from(status: tonic::Status) -> Self {
        match ErrorCode::from_grpc(status.code()) {
            ErrorCode::Internal | ErrorCode::Unavailable | ErrorCode::DeadlineExceeded => {
                PlayoutError::Unavailable(format!(
                    "the media service answered {:?}: {}",
                    status.code(),
                    status.message()
                ))
            }
            code => PlayoutError::Media {
                code,
                message: status.message().to_owned(),
            },
        }
    }
}

impl ServiceError for PlayoutError {
    fn error_code(&self) -> ErrorCode {
        match self {
            PlayoutError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            PlayoutError::NotFound { .. } => ErrorCode::NotFound,
            PlayoutError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            PlayoutError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            PlayoutError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            PlayoutError::Auth(error) => error.error_code(),
            PlayoutError::Store(error) => error.error_code(),
            PlayoutError::Unavailable(_) => ErrorCode::Unavailable,
            PlayoutError::Media { code, .. } => *code,
            PlayoutError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<PlayoutError> for tonic::Status {
    fn from(error: PlayoutError) -> Self {
        onair_kit::error::into_status(error)
    }
}
