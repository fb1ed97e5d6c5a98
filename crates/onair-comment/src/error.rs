//! The comment service's errors and their transport-neutral codes.

use onair_kit::auth::AuthError;
use onair_kit::error::{ErrorCode, RetryLater, ServiceError};
use onair_kit::store::StoreError;

/// Everything a comment call can fail with; each variant names its gRPC/HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum CommentError {
    /// The request is malformed: an empty or too long body, a control
    /// character, a bad page token, a setting out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// A comment or channel that does not exist.
    #[error("no {kind} with id {id:?}")]
    NotFound {
        /// `comment` or `channel`.
        kind: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// Another service said something does not exist; its message says what.
    #[error("{0}")]
    PeerNotFound(String),
    /// The channel does not take this comment as things stand: comments are
    /// off, nothing is on air, the comment repeats the user's last one, or a
    /// moderation action does not apply to the comment's status.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The user is banned or may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    #[error(transparent)]
    /// The caller's credentials are missing or do not check out.
    Auth(#[from] AuthError),
    #[error(transparent)]
    /// The comment database failed.
    Store(#[from] StoreError),
    /// The user posts faster than slow mode or the flood limit allows, or
    /// their address faster than its limit; says how long to wait.
    #[error(transparent)]
    Limited(#[from] RetryLater),
    /// Another service or the bus does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the caller sees only "internal error".
    #[error("{0}")]
    Internal(String),
}

impl CommentError {
    /// A [`CommentError::NotFound`] for the comment with this id.
    pub fn comment_not_found(id: &str) -> CommentError {
        CommentError::NotFound {
            kind: "comment",
            id: id.to_owned(),
        }
    }

    /// The error of another service's answer, keeping what the caller can act
    /// on (not found, unavailable) and hiding the rest.
    pub fn from_peer(service: &str, status: &tonic::Status) -> CommentError {
        match status.code() {
            tonic::Code::NotFound => CommentError::PeerNotFound(status.message().to_owned()),
            tonic::Code::InvalidArgument => {
                CommentError::InvalidArgument(status.message().to_owned())
            }
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                CommentError::PermissionDenied(status.message().to_owned())
            }
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                CommentError::Unavailable(format!(
                    "the {service} service does not answer: {}",
                    status.message()
                ))
            }
            _ => CommentError::Internal(format!("the {service} service failed: {status}")),
        }
    }
}

impl From<sqlx::Error> for CommentError {
    fn from(error: sqlx::Error) -> Self {
        CommentError::Store(StoreError::from(error))
    }
}

impl ServiceError for CommentError {
    fn error_code(&self) -> ErrorCode {
        match self {
            CommentError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            CommentError::NotFound { .. } | CommentError::PeerNotFound(_) => ErrorCode::NotFound,
            CommentError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            CommentError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            CommentError::Auth(error) => error.error_code(),
            CommentError::Store(error) => error.error_code(),
            CommentError::Limited(error) => error.error_code(),
            CommentError::Unavailable(_) => ErrorCode::Unavailable,
            CommentError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            CommentError::Limited(error) => error.retry_after(),
            _ => None,
        }
    }
}

impl From<CommentError> for tonic::Status {
    fn from(error: CommentError) -> Self {
        onair_kit::error::into_status(error)
    }
}
