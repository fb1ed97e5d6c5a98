//! The one error type of the bus.

/// Why a bus operation failed. Every message says what to do about it where that is
/// known, because these end up in logs and API errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached right now (server down, reconnecting, request timed
    /// out); retrying later may succeed. A durable publish that fails this way may still
    /// have been stored, so consumers should tolerate duplicates.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A subject or subject pattern breaks the naming rules (see [`crate::subject`]).
    #[error("invalid subject: {0}")]
    InvalidSubject(String),
    /// A durable stream declaration is unusable: a bad name, bad subjects, or subjects
    /// that another stream already captures.
    #[error("invalid stream: {0}")]
    InvalidStream(String),
    /// A stream named by the caller was never declared.
    #[error("unknown stream {0:?}: declare it with ensure_stream first")]
    UnknownStream(String),
    /// A durable publish whose subject no declared stream captures.
    #[error(
        "no durable stream captures subject {0:?}: declare a stream whose subjects match it with ensure_stream first"
    )]
    NoStreamForSubject(String),
    /// The payload is larger than the bus accepts.
    #[error("payload of {size} bytes exceeds the bus limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the rejected payload, in bytes.
        size: usize,
        /// Largest payload the bus accepts, in bytes.
        limit: usize,
    },
    /// Writing or reading a durable stream's journal failed (disk full, permissions,
    /// a journal that is not ours).
    #[error("durable storage failed: {0}")]
    Storage(String),
    /// The server refused the request for a reason not covered above.
    #[error("bus rejected the request: {0}")]
    Rejected(String),
}
