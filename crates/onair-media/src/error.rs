//! The media service's errors and their transport-neutral codes.

use onair_kit::auth::AuthError;
use onair_kit::error::{ErrorCode, ServiceError};
use onair_kit::store::StoreError;

/// Everything a media call can fail with; each variant names its gRPC/HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The request is malformed: a missing or out-of-range time, a bad id, an
    /// unknown field in an update mask. Retrying it unchanged fails again.
    #[error("{0}")]
    InvalidArgument(String),
    /// A channel, program or slot id that no stored entity has.
    #[error("no {kind} with id {id:?}")]
    NotFound {
        /// `channel`, `program` or `slot`.
        kind: &'static str,
        /// The id the caller gave, so the message says which one is unknown.
        id: String,
    },
    /// An id or a channel number that is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The schedule forbids the change as it stands: an overlap with another
    /// slot, a slot shorter than its program, a slot on air. The caller must
    /// change the schedule (or force) before retrying.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A request larger than a configured bound (an import with too many items).
    #[error("{0}")]
    ResourceExhausted(String),
    /// Who is calling, or whether they may.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus (a WatchSchedule subscription) does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the caller sees only "internal error".
    #[error("{0}")]
    Internal(String),
}

impl MediaError {
    /// A `NotFound` for a channel id.
    pub fn channel_not_found(id: &str) -> MediaError {
        MediaError::NotFound {
            kind: "channel",
            id: id.to_owned(),
        }
    }

    /// A `NotFound` for a program id.
    pub fn program_not_found(id: &str) -> MediaError {
        MediaError::NotFound {
            kind: "program",
            id: id.to_owned(),
        }
    }

    /// A `NotFound` for a slot id.
    pub fn slot_not_found(id: &str) -> MediaError {
        MediaError::NotFound {
            kind: "slot",
            id: id.to_owned(),
        }
    }
}

impl From<sqlx::Error> for MediaError {
    fn from(error: sqlx::Error) -> Self {
        MediaError::Store(StoreError::from(error))
    }
}

impl ServiceError for MediaError {
    fn error_code(&self) -> ErrorCode {
        match self {
            MediaError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            MediaError::NotFound { .. } => ErrorCode::NotFound,
            MediaError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            MediaError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            MediaError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            MediaError::Auth(error) => error.error_code(),
            MediaError::Store(error) => error.error_code(),
            MediaError::Unavailable(_) => ErrorCode::Unavailable,
            MediaError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<MediaError> for tonic::Status {
    fn from(error: MediaError) -> Self {
        onair_kit::error::into_status(error)
    }
}
