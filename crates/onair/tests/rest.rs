//! REST/JSON through the gateway, served from the contracts' HTTP rules, on a
//! real station over HTTP.

use onair_testkit::{Backend, TestStation};
use serde_json::{Value, json};

struct Rest {
    client: reqwest::Client,
    base: String,
}

impl Rest {
    fn new(station: &TestStation) -> Rest {
        Rest {
            client: reqwest::Client::new(),
            base: format!("http://{}", station.http_addr),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        credential: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, json)
    }
}

async fn viewer(rest: &Rest, name: &str) -> (String, String) {
    let (status, _, body) = rest
        .send(
            reqwest::Method::POST,
            "/v1/users",
            None,
            Some(json!({"displayName": name})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (
        body["user"]["id"].as_str().unwrap().to_owned(),
        body["accessToken"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_create_answers_201_with_the_proto3_json_mapping() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    let (status, headers, body) = rest
        .send(
            reqwest::Method::POST,
            "/v1/users",
            None,
            Some(json!({"displayName": "Alice"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let user = &body["user"];
    assert_eq!(user["displayName"], "Alice");
    assert_eq!(user["role"], "VIEWER");
    assert_eq!(user["trustScore"], 50);
    assert!(
        user["createTime"].as_str().unwrap().ends_with('Z'),
        "{user}"
    );
    assert!(
        body["refreshToken"]
            .as_str()
            .unwrap()
            .starts_with("onair_rt_")
    );

    // REST calls are counted per route template.
    let metrics = onair_testkit::metrics_text(&station).await;
    let counted =
        "onair_http_server_requests_total{route=\"/v1/users\",method=\"POST\",code=\"201\"} 1";
    assert!(metrics.contains(counted), "{metrics}");
    station.stop().await;
}

#[tokio::test]
async fn paths_prefer_literals_and_bind_variables_and_verbs() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    let (id, token) = viewer(&rest, "Bob").await;

    let (status, _, me) = rest
        .send(reqwest::Method::GET, "/v1/users/me", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], id.as_str());

    let path = format!("/v1/users/{id}");
    let (status, _, user) = rest
        .send(reqwest::Method::GET, &path, Some(&token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(user["displayName"], "Bob");

    // A custom verb with `body: "*"`; int64 fields as JSON strings.
    let ban = format!("/v1/users/{id}:ban");
    let (status, _, banned) = rest
        .send(
            reqwest::Method::POST,
            &ban,
            Some(&station.operator_key),
            Some(json!({"durationSeconds": "60", "reason": "spam"})),
        )
        .await;
    assert_eq!(status, 200, "{banned}");
    assert_eq!(banned["ban"]["reason"], "spam");
    let unban = format!("/v1/users/{id}:unban");
    let (status, _, unbanned) = rest
        .send(
            reqwest::Method::POST,
            &unban,
            Some(&station.operator_key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(unbanned["ban"], Value::Null);
    station.stop().await;
}

#[tokio::test]
async fn a_field_body_and_query_parameters_fill_the_request() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    let (first_id, token) = viewer(&rest, "Carol").await;
    let (second_id, _) = viewer(&rest, "Dave").await;

    // `body: "user"` with the update mask from the query.
    let (status, _, renamed) = rest
        .send(
            reqwest::Method::PATCH,
            "/v1/users/me?updateMask=displayName",
            Some(&token),
            Some(json!({"displayName": "Caroline"})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["displayName"], "Caroline");

    // A repeated field from repeated query parameters, by JSON or proto name.
    let path =
        format!("/v1/users:batchGet?userIds={second_id}&user_ids={first_id}&userIds=missing");
    let (status, _, batch) = rest
        .send(reqwest::Method::GET, &path, Some(&token), None)
        .await;
    assert_eq!(status, 200, "{batch}");
    let names: Vec<&str> = batch["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Dave", "Caroline"]);
    assert_eq!(batch["missingUserIds"], json!(["missing"]));

    // Unpopulated fields are present, as grpc-gateway emits them.
    let path = format!("/v1/users:batchGet?userIds={first_id}");
    let (_, _, found) = rest
        .send(reqwest::Method::GET, &path, Some(&token), None)
        .await;
    assert_eq!(found["missingUserIds"], json!([]));

    let (status, _, error) = rest
        .send(
            reqwest::Method::GET,
            "/v1/users:batchGet?colour=red",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        onair_testkit::error_message(&error).contains("colour"),
        "{error}"
    );
    station.stop().await;
}

#[tokio::test]
async fn errors_are_google_rpc_status_with_grpc_gateway_statuses() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    let (_, token) = viewer(&rest, "Eve").await;

    let (status, _, body) = rest
        .send(reqwest::Method::GET, "/v1/users/nobody", Some(&token), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 5);
    assert_eq!(body["message"], "no user with id \"nobody\"");
    assert_eq!(body["details"], json!([]));

    let (status, headers, body) = rest
        .send(reqwest::Method::GET, "/v1/users/me", None, None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], 16);
    assert_eq!(headers["www-authenticate"], "Bearer");

    let (status, _, body) = rest
        .send(
            reqwest::Method::POST,
            "/v1/users/operator:setRole",
            Some(&token),
            Some(json!({"role": "VIEWER"})),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], 7);

    let (status, _, body) = rest
        .send(
            reqwest::Method::POST,
            "/v1/users",
            None,
            Some(json!({"displayName": "   "})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 3);
    assert!(
        onair_testkit::error_message(&body).contains("display name"),
        "{body}"
    );

    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/users", station.http_addr))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let (status, _, _) = rest
        .send(reqwest::Method::GET, "/v1/nothing/here", None, None)
        .await;
    assert_eq!(status, 404);

    let (status, headers, _) = rest
        .send(reqwest::Method::DELETE, "/v1/users/me", Some(&token), None)
        .await;
    assert_eq!(status, 405);
    let allowed = headers["allow"].to_str().unwrap();
    assert!(
        allowed.contains("GET") && allowed.contains("PATCH"),
        "{allowed}"
    );

    station.stop().await;

    // A service this process doesn't run answers 503 with the way to fix it.
    let station = TestStation::start_with(Backend::Sqlite, &[("roles", "user,gateway")]).await;
    let rest = Rest::new(&station);
    let (status, _, body) = rest
        .send(reqwest::Method::GET, "/v1/channels", None, None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("--peers media=URL"),
        "{body}"
    );
    station.stop().await;
}

#[tokio::test]
async fn grpc_metadata_headers_become_metadata() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    let (id, token) = viewer(&rest, "Frank").await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/users/me", station.http_addr))
        .header("Grpc-Metadata-Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(me["id"], id.as_str());
    station.stop().await;
}

#[tokio::test]
async fn the_jwks_is_served_at_its_well_known_path() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    let (status, _, jwks) = rest
        .send(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(status, 200);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    station.stop().await;
}

/// `/openapi.json` is OpenAPI 3.1 generated from the descriptors, and
/// `openapi-spec-validator` (PyPI; scripts/test.sh installs it) accepts it.
#[tokio::test]
async fn openapi_describes_every_route_and_validates() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    let (status, _, document) = rest
        .send(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");
    let create = &document["paths"]["/v1/users"]["post"];
    assert_eq!(create["operationId"], "UserService_CreateUser");
    assert!(create["responses"]["201"].is_object(), "{create}");
    let ban = &document["paths"]["/v1/users/{user_id}:ban"]["post"];
    assert_eq!(ban["parameters"][0]["name"], "user_id");
    assert_eq!(ban["parameters"][0]["in"], "path");
    let timetable = &document["paths"]["/v1/timetable"]["get"];
    let query: Vec<&str> = timetable["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|parameter| parameter["name"].as_str().unwrap())
        .collect();
    assert!(
        query.contains(&"startTime") && query.contains(&"broadcastDay"),
        "{query:?}"
    );
    let user = &document["components"]["schemas"]["onair.user.v1.User"];
    assert_eq!(user["properties"]["role"]["enum"][1], "VIEWER");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let output = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    station.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_refused_before_any_service_is_called() {
    let station = TestStation::start(Backend::Sqlite).await;
    let rest = Rest::new(&station);
    for credential in ["bad.token.here", "onair_op_not_a_key"] {
        let (status, headers, body) = rest
            .send(reqwest::Method::GET, "/v1/users/me", Some(credential), None)
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(headers["www-authenticate"], "Bearer");
    }
    let metrics = onair_testkit::metrics_text(&station).await;
    assert!(
        !metrics.contains("method=\"GetMe\""),
        "the user service never saw the request:\n{metrics}"
    );
    station.stop().await;
}

#[tokio::test]
async fn request_ids_go_in_and_out_and_cors_answers_preflights() {
    let station = TestStation::start(Backend::Sqlite).await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/.well-known/jwks.json", station.http_addr);
    let generated = client.get(&url).send().await.unwrap();
    let id = onair_testkit::header_text(&generated, "x-request-id");
    assert_eq!(id.len(), 32, "{id}");
    let echoed = client
        .get(&url)
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");

    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{}/v1/users", station.http_addr),
        )
        .header("origin", "https://tv.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap();
    assert!(methods.contains("POST"), "{methods}");
    station.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let station =
        TestStation::start_with(Backend::Sqlite, &[("gateway.rate_limit_per_ip", "2")]).await;
    let rest = Rest::new(&station);
    let mut limited = None;
    for _ in 0..20 {
        let (status, headers, body) = rest
            .send(reqwest::Method::GET, "/.well-known/jwks.json", None, None)
            .await;
        if status == 429 {
            limited = Some((headers, body));
            break;
        }
        assert_eq!(status, 200);
    }
    let (headers, body) = limited.expect("the burst of 4 runs out within 20 requests");
    assert_eq!(body["code"], 8);
    assert!(
        onair_testkit::error_message(&body).contains("retry after"),
        "{body}"
    );
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    station.stop().await;
}
