use onair_kit::auth::AuthError;
use onair_kit::error::{ErrorCode, RetryLater, ServiceError};
use onair_kit::store::StoreError;

use crate::display_name::DisplayNameError;

/// Everything a user service call can fail with; each maps to one gRPC and HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// A display name that breaks the rules; the caller's mistake.
    #[error(transparent)]
    DisplayName(#[from] DisplayNameError),
    /// No user has this id.
    #[error("no user with id {0:?}")]
    NotFound(String),
    /// A request field that is missing or out of range; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller does not outrank the user they act on (a moderator banning a moderator).
    #[error("{0}")]
    PermissionDenied(String),
    /// Refused in the state things are in: banning yourself, demoting or banning the
    /// operator account.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's credentials are missing, invalid, or lack the role the call needs.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The database failed or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Over a limit per client address; says when to try again.
    #[error(transparent)]
    Limited(#[from] RetryLater),
    /// A fault of the service itself (a corrupt stored key); logged, and shown to the
    /// caller only as `internal error`.
    #[error("{0}")]
    Internal(String),
}

impl ServiceError for UserError {
    fn error_code(&self) -> ErrorCode {
        match self {
            UserError::DisplayName(_) | UserError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            UserError::NotFound(_) => ErrorCode::NotFound,
            UserError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            UserError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            UserError::Auth(error) => error.error_code(),
            UserError::Store(error) => error.error_code(),
            UserError::Limited(error) => error.error_code(),
            UserError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            UserError::Limited(error) => error.retry_after(),
            _ => None,
        }
    }
}

impl From<UserError> for tonic::Status {
    fn from(error: UserError) -> Self {
        onair_kit::error::into_status(error)
    }
}
