use onair_kit::auth::AuthError;
use onair_kit::error::{ErrorCode, RetryLater, ServiceError};
use onair_kit::store::StoreError;

use crate::display_name::DisplayNameError;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    DisplayName(#[from] DisplayNameError),
    #[error("no user with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Over a limit per client address; says when to try again.
    #[error(transparent)]
    Limited(#[from] RetryLater),
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
