//! One transport-neutral error code for every service, mapped to gRPC and HTTP.
//!
//! Each crate has its own `thiserror` enum; each variant names its [`ErrorCode`]
//! through [`ServiceError`], and [`into_status`] turns it into a `tonic::Status`.
//! The gateway maps a status back to HTTP with [`ErrorCode::http_status`], as
//! grpc-gateway does.

use std::time::Duration;

use http::StatusCode;
use tonic::Code;

/// What kind of failure an error is, whatever the transport: each maps to
/// one gRPC code and, through it, one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed; retrying it unchanged fails again.
    InvalidArgument,
    /// No credentials, or credentials that don't verify.
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// What the request names does not exist.
    NotFound,
    /// What the request would create exists already.
    AlreadyExists,
    /// The system is not in a state that allows the request (a banned user, a
    /// slot on air).
    FailedPrecondition,
    /// A rate or size limit was hit.
    ResourceExhausted,
    /// A dependency (storage, bus, peer) does not answer; retrying may help.
    Unavailable,
    /// The request took longer than it was allowed, or was cancelled.
    DeadlineExceeded,
    /// A bug or an unexpected failure; details go to the log, not the caller.
    Internal,
}

impl ErrorCode {
    /// The gRPC code a status with this error carries.
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::AlreadyExists => Code::AlreadyExists,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorCode::Internal => Code::Internal,
        }
    }

    /// The HTTP status grpc-gateway uses for the code (FailedPrecondition is 400,
    /// not 412).
    pub fn http_status(self) -> StatusCode {
        http_status_of(self.grpc_code())
    }

    /// The error code of a gRPC status code: `OutOfRange` counts as an
    /// invalid argument, `Aborted` as already exists, `Cancelled` as a deadline
    /// exceeded, and codes with no counterpart as internal.
    pub fn from_grpc(code: Code) -> ErrorCode {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists | Code::Aborted => ErrorCode::AlreadyExists,
            Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            Code::Unavailable => ErrorCode::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => ErrorCode::DeadlineExceeded,
            _ => ErrorCode::Internal,
        }
    }
}

/// grpc-gateway's `HTTPStatusFromCode` table.
pub fn http_status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error that knows its transport-neutral code.
pub trait ServiceError: std::error::Error {
    /// The code the error is reported to callers with.
    fn error_code(&self) -> ErrorCode;

    /// How long the caller should wait before trying again, when waiting is
    /// what it takes (a rate limit); carried as `google.rpc.RetryInfo`.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Turns a service error into a gRPC status. Internal errors are logged with
/// their details and reach the caller only as "internal error".
pub fn into_status<E: ServiceError>(error: E) -> tonic::Status {
    let code = error.error_code();
    if code == ErrorCode::Internal {
        tracing::error!(error = %error, "internal error");
        return tonic::Status::internal("internal error");
    }
    if code == ErrorCode::Unavailable {
        tracing::warn!(error = %error, "dependency unavailable");
    }
    if let Some(wait) = error.retry_after() {
        return status_with_retry(code.grpc_code(), &error.to_string(), wait);
    }
    tonic::Status::new(code.grpc_code(), error.to_string())
}

/// A request over a rate limit: what to tell the person, and how long until
/// the same request would pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RetryLater {
    /// What the person is told, as the status message.
    pub message: String,
    /// How long until the same request would pass.
    pub wait: Duration,
}

impl ServiceError for RetryLater {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::ResourceExhausted
    }

    fn retry_after(&self) -> Option<Duration> {
        Some(self.wait)
    }
}

/// `google.rpc.RetryInfo`: how long to wait before retrying, the standard
/// detail of a status that grpc-gateway and Google's clients read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    /// How long to wait before retrying.
    pub retry_delay: Option<prost_types::Duration>,
}

/// The `Any` type URL of [`RetryInfo`].
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// A status whose details (`grpc-status-details-bin`, a `google.rpc.Status`)
/// carry a [`RetryInfo`] with `wait`.
pub fn status_with_retry(code: Code, message: &str, wait: Duration) -> tonic::Status {
    use prost::Message as _;
    let retry = RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(wait.subsec_nanos()).unwrap_or(0),
        }),
    };
    let details = onair_proto::google::rpc::Status {
        code: code as i32,
        message: message.to_owned(),
        details: vec![prost_types::Any {
            type_url: RETRY_INFO_TYPE_URL.to_owned(),
            value: retry.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(code, message, details.encode_to_vec().into())
}

/// The wait a status's `RetryInfo` detail asks for, if it has one.
pub fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use prost::Message as _;
    if status.details().is_empty() {
        return None;
    }
    let details = onair_proto::google::rpc::Status::decode(status.details()).ok()?;
    let any = details
        .details
        .iter()
        .find(|any| any.type_url == RETRY_INFO_TYPE_URL)?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?;
    Some(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_documented_http_statuses() {
        let expected = [
            (ErrorCode::InvalidArgument, 400),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::PermissionDenied, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::AlreadyExists, 409),
            (ErrorCode::FailedPrecondition, 400),
            (ErrorCode::ResourceExhausted, 429),
            (ErrorCode::Unavailable, 503),
        ];
        for (code, status) in expected {
            assert_eq!(code.http_status().as_u16(), status, "{code:?}");
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code);
        }
    }

    #[test]
    fn a_wait_travels_in_the_status_details() {
        let limited = RetryLater {
            message: "too many comments from your address; try again in 3 s".to_owned(),
            wait: Duration::from_millis(2_500),
        };
        let status = into_status(limited);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(retry_delay(&status), Some(Duration::from_millis(2_500)));
        assert_eq!(
            retry_delay(&tonic::Status::resource_exhausted("no wait")),
            None
        );
    }
}
