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
    let mut request = reqwest::Client::new().request(method, station.http_url(path));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
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

/// Unix milliseconds as an RFC 3339 time, as the API takes them.
pub fn rfc3339(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .expect("a time in range")
        .to_string()
}
