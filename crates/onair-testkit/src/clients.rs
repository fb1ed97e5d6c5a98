//! The clients a test talks to a station with: gRPC requests with
//! credentials, REST calls, and the calls most tests begin with.

use crate::station::TestStation;

/// A request with `authorization: Bearer <credential>`.
pub fn authorized<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {credential}")
        .parse()
        .expect("ascii credential");
    request.metadata_mut().insert("authorization", value);
    request
}

/// A REST call; returns the status and the JSON body (or the text as a JSON
/// string when it is not JSON).
pub async fn send(
    station: &TestStation,
    method: reqwest::Method,
    path: &str,
    credential: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, _, body) = send_at(station.http_addr, method, path, credential, body).await;
    (status, body)
}

/// A REST call to the HTTP port at `http` (a station in another process);
/// returns the status, the `Retry-After` header's seconds if any, and the
/// JSON body (or the text as a JSON string when it is not JSON).
pub async fn send_at(
    http: std::net::SocketAddr,
    method: reqwest::Method,
    path: &str,
    credential: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, Option<u64>, serde_json::Value) {
    let mut request = reqwest::Client::new().request(method, format!("http://{http}{path}"));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok());
    let text = response.text().await.unwrap();
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The `message` of an error answer's JSON body.
pub fn error_message(body: &serde_json::Value) -> &str {
    body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an error body with a message: {body}"))
}

/// The text a station's `/metrics` answers.
pub async fn metrics_text(station: &TestStation) -> String {
    reqwest::get(station.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A response header as text; the test fails when the header is missing or
/// is not text.
pub fn header_text(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

/// Creates a viewer account over REST and returns the answer: `user`,
/// `accessToken` and `refreshToken`.
pub async fn create_viewer(station: &TestStation, name: &str) -> serde_json::Value {
    let (status, created) = send(
        station,
        reqwest::Method::POST,
        "/v1/users",
        None,
        Some(serde_json::json!({"displayName": name})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created
}

/// Creates a channel as the operator.
pub async fn create_channel(station: &TestStation, id: &str) {
    let response = reqwest::Client::new()
        .post(station.http_url("/v1/channels"))
        .bearer_auth(&station.operator_key)
        .json(&serde_json::json!({"id": id, "number": 1, "name": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
}

/// Creates a program as the operator (`duration` as the API takes it, e.g.
/// `"600s"`) and returns it.
pub async fn create_program(
    station: &TestStation,
    title: &str,
    duration: &str,
) -> serde_json::Value {
    let (status, program) = send(
        station,
        reqwest::Method::POST,
        "/v1/programs",
        Some(&station.operator_key),
        Some(serde_json::json!({"title": title, "duration": duration})),
    )
    .await;
    assert_eq!(status, 201, "{program}");
    program
}

/// Schedules `program` on `channel` from `start_ms` to `end_ms` (Unix
/// milliseconds) as the operator and returns the slot's id.
pub async fn schedule_slot(
    station: &TestStation,
    channel: &str,
    program: &serde_json::Value,
    start_ms: i64,
    end_ms: i64,
) -> String {
    let (status, slot) = send(
        station,
        reqwest::Method::POST,
        &format!("/v1/channels/{channel}/slots"),
        Some(&station.operator_key),
        Some(serde_json::json!({
            "programId": program["id"],
            "startTime": rfc3339(start_ms),
            "endTime": rfc3339(end_ms),
        })),
    )
    .await;
    assert_eq!(status, 201, "{slot}");
    slot["id"].as_str().expect("a slot id").to_owned()
}

/// Unix milliseconds as an RFC 3339 time, as the API takes them.
pub fn rfc3339(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .expect("a time in range")
        .to_string()
}
