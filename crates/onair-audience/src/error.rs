//! The audience service's errors and their transport-neutral codes.

use onair_kit::auth::AuthError;
use onair_kit::error::{ErrorCode, ServiceError};
use onair_kit::presence::PresenceError;
use onair_kit::store::StoreError;

/// Everything an audience call can fail with; each variant names its
/// gRPC/HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    /// The request is malformed: a missing or malformed id, too many ids.
    #[error("{0}")]
    InvalidArgument(String),
    /// A channel, slot or poll that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Refused as things stand: a vote on a poll that is closed or not
    /// open yet, a second vote where a vote can't be changed.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Who is calling, or whether they may.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The presence board.
    #[error(transparent)]
    Presence(#[from] PresenceError),
    /// Too much is waiting: more ballots than the writer's queue holds.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The media service does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the caller sees only "internal error".
    #[error("{0}")]
    Internal(String),
}

impl From<sqlx::Error> for AudienceError {
    fn from(error: sqlx::Error) -> Self {
        AudienceError::Store(StoreError::from(error))
    }
}

impl AudienceError {
    /// The error of the media service's answer: what the caller can act on
    /// passes through, the rest is the media service being unavailable.
    pub fn from_media(status: &tonic::Status) -> AudienceError {
        match status.code() {
            tonic::Code::NotFound => AudienceError::NotFound(status.message().to_owned()),
            tonic::Code::InvalidArgument => {
                AudienceError::InvalidArgument(status.message().to_owned())
            }
            _ => AudienceError::Unavailable(format!(
                "the media service does not answer: {}",
                status.message()
            )),
        }
    }
}

impl ServiceError for AudienceError {
    fn error_code(&self) -> ErrorCode {
        match self {
            AudienceError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            AudienceError::NotFound(_) => ErrorCode::NotFound,
            AudienceError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            AudienceError::Auth(error) => error.error_code(),
            AudienceError::Store(error) => error.error_code(),
            AudienceError::Presence(_) | AudienceError::Unavailable(_) => ErrorCode::Unavailable,
            AudienceError::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            AudienceError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<AudienceError> for tonic::Status {
    fn from(error: AudienceError) -> Self {
        onair_kit::error::into_status(error)
    }
}
