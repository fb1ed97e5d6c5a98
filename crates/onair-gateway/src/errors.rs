//! Errors as the gateway answers them: a `google.rpc.Status` JSON body with
//! grpc-gateway's HTTP status, `Retry-After` and `google.rpc.RetryInfo` when
//! the service says when to come back, and the service's metadata as
//! `Grpc-Metadata-*` headers. A leaf: the REST routes, the live sockets and
//! the IPTV exports all answer errors through it.

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value as Json;

/// The `google.rpc.Status` JSON of an error with no details.
pub(crate) fn status_json(code: tonic::Code, message: &str) -> Json {
    serde_json::json!({"code": code as i32, "message": message, "details": []})
}

/// A `google.rpc.Status` JSON error body.
pub fn status_response(code: tonic::Code, message: &str, status: StatusCode) -> Response {
    let mut response = json_response(status, &status_json(code, message));
    if code == tonic::Code::Unauthenticated {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The JSON error answer of a service's status, with its retry hint and
/// metadata.
pub(crate) fn error_response(status: &tonic::Status) -> Response {
    let http_status = onair_kit::error::http_status_of(status.code());
    if let Some(wait) = onair_kit::error::retry_delay(status) {
        let mut response = retry_response(status.code(), status.message(), http_status, wait);
        metadata_headers(status.metadata(), response.headers_mut());
        return response;
    }
    let mut response = status_response(status.code(), status.message(), http_status);
    metadata_headers(status.metadata(), response.headers_mut());
    if let Some(retry) = status.metadata().get("retry-after")
        && let Ok(value) = retry.to_str()
        && let Ok(value) = HeaderValue::from_str(value)
    {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    response
}

/// An error that says when to come back: `Retry-After` in whole seconds
/// (rounded up), and the `google.rpc.RetryInfo` detail as grpc-gateway
/// writes it.
pub(crate) fn retry_response(
    code: tonic::Code,
    message: &str,
    status: StatusCode,
    wait: std::time::Duration,
) -> Response {
    let detail = serde_json::json!({
        "@type": onair_kit::error::RETRY_INFO_TYPE_URL,
        "retryDelay": duration_json(wait),
    });
    let body = serde_json::json!({"code": code as i32, "message": message, "details": [detail]});
    let mut response = json_response(status, &body);
    let seconds = onair_kit::abuse::whole_seconds(wait);
    response
        .headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A `google.protobuf.Duration` in the proto3 JSON mapping: `"2.500s"`.
fn duration_json(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        format!("{seconds}s")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{seconds}.{:03}s", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{seconds}.{:06}s", nanos / 1_000)
    } else {
        format!("{seconds}.{nanos:09}s")
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    bytes_response(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A JSON body as it is, with its status.
pub(crate) fn bytes_response(status: StatusCode, bytes: impl Into<Bytes>) -> Response {
    let mut response = Response::new(axum::body::Body::from(bytes.into()));
    *response.status_mut() = status;
    // Room for what the layers add on the way out (the request id, CORS,
    // the length, nosniff, response metadata) without growing the map.
    let headers = response.headers_mut();
    headers.reserve(RESPONSE_HEADERS);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// How many headers a JSON answer is made with room for.
const RESPONSE_HEADERS: usize = 12;

/// A service's response metadata as `Grpc-Metadata-*` headers.
pub(crate) fn metadata_headers(metadata: &tonic::metadata::MetadataMap, headers: &mut HeaderMap) {
    for (name, value) in metadata.clone().into_headers() {
        let Some(name) = name else { continue };
        if is_transport_header(name.as_str()) || name.as_str().ends_with("-bin") {
            continue;
        }
        if let Ok(header) = http::HeaderName::from_bytes(format!("grpc-metadata-{name}").as_bytes())
        {
            headers.append(header, value);
        }
    }
}

/// Response metadata that the gateway does not pass on.
fn is_transport_header(name: &str) -> bool {
    matches!(
        name,
        "content-type" | "date" | "content-length" | "te" | "trailer" | "transfer-encoding"
    ) || name.starts_with("grpc-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_in_the_status_becomes_retry_after_in_whole_seconds() {
        let status = onair_kit::error::status_with_retry(
            tonic::Code::ResourceExhausted,
            "slow mode is on",
            std::time::Duration::from_millis(2_500),
        );
        let response = error_response(&status);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "3");
        assert_eq!(
            duration_json(std::time::Duration::from_millis(2_500)),
            "2.500s"
        );
        assert_eq!(duration_json(std::time::Duration::from_secs(4)), "4s");
        assert_eq!(
            duration_json(std::time::Duration::from_nanos(1)),
            "0.000000001s"
        );
    }
}
