//! What one address and garbage input can do, over the real server on both
//! databases: account and comment floods from one address are limited
//! (REST and gRPC alike, whatever the client claims about its address),
//! while other addresses go on; a NUL byte in any kind of input is refused
//! with 400, the same on SQLite and PostgreSQL; and nothing a client names
//! can split a line of the IPTV playlist.

use std::net::IpAddr;
use std::time::Duration;

use onair_proto::comment::v1 as comment_pb;
use onair_proto::comment::v1::comment_service_client::CommentServiceClient;
use onair_proto::media::v1 as media_pb;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use onair_proto::playout::v1 as playout_pb;
use onair_proto::playout::v1::playout_service_client::PlayoutServiceClient;
use onair_proto::user::v1 as user_pb;
use onair_proto::user::v1::user_service_client::UserServiceClient;
use onair_testkit::on_both_backends;
use onair_testkit::{Backend, TestStation, authorized, rfc3339};
use reqwest::Method;
use serde_json::{Value, json};
use tonic::transport::Channel;

on_both_backends!(
    account_floods_from_one_address_are_limited,
    comment_floods_from_one_address_are_limited,
    comment_pace_refusals_say_when_to_retry,
    a_nul_in_any_input_is_refused_with_400,
    nothing_splits_a_line_of_the_playlist,
);

/// An HTTP client whose connections come from `address` (any of 127/8 on
/// loopback).
fn client_from(address: &str) -> reqwest::Client {
    let address: IpAddr = address.parse().expect("an address");
    reqwest::Client::builder()
        .local_address(address)
        .build()
        .expect("an HTTP client")
}

/// A gRPC channel whose connection comes from `address`.
async fn grpc_from(station: &TestStation, address: &str) -> Channel {
    let address: IpAddr = address.parse().expect("an address");
    Channel::from_shared(format!("http://{}", station.grpc_addr))
        .expect("valid URL")
        .local_address(Some(address))
        .connect()
        .await
        .expect("connect to the gRPC port")
}

/// What a REST call answered.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// The `Retry-After` header, in seconds.
    fn retry_after(&self) -> u64 {
        let header = self
            .headers
            .get(reqwest::header::RETRY_AFTER)
            .unwrap_or_else(|| panic!("a Retry-After header: {}", self.body));
        header.to_str().unwrap().parse().expect("whole seconds")
    }

    /// The `google.rpc.RetryInfo` detail of the error body.
    fn retry_delay(&self) -> &str {
        let detail = &self.body["details"][0];
        assert_eq!(
            detail["@type"], "type.googleapis.com/google.rpc.RetryInfo",
            "{}",
            self.body
        );
        detail["retryDelay"].as_str().expect("a retry delay")
    }
}

async fn call(
    client: &reqwest::Client,
    station: &TestStation,
    method: Method,
    path: &str,
    credential: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client.request(method, station.http_url(path));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the station answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// A new viewer made from `client`'s address: their id and access token.
async fn viewer(client: &reqwest::Client, station: &TestStation, name: &str) -> (String, String) {
    let created = call(
        client,
        station,
        Method::POST,
        "/v1/users",
        None,
        Some(json!({"displayName": name})),
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    (
        created.body["user"]["id"].as_str().unwrap().to_owned(),
        created.body["accessToken"].as_str().unwrap().to_owned(),
    )
}

/// A request that claims another client address in its metadata.
fn claiming<T>(message: T, credential: Option<&str>, address: &str) -> tonic::Request<T> {
    let mut request = match credential {
        Some(credential) => authorized(message, credential),
        None => tonic::Request::new(message),
    };
    request
        .metadata_mut()
        .insert("x-onair-client-address", address.parse().unwrap());
    request
        .metadata_mut()
        .insert("x-forwarded-for", address.parse().unwrap());
    request
}

/// Claims of another address that a client may put on a REST request.
const CLAIMS: &[(&str, &str)] = &[
    ("x-forwarded-for", "203.0.113.7"),
    ("x-real-ip", "203.0.113.7"),
    ("grpc-metadata-x-onair-client-address", "203.0.113.7"),
];

async fn account_floods_from_one_address_are_limited(backend: Backend) {
    let station = TestStation::start(backend).await;
    let here = client_from("127.0.0.1");

    // 300 accounts from one address: a crowd's worth pass, then the rest wait.
    let mut made = 0;
    let mut refused = None;
    for index in 0..300 {
        let answer = call(
            &here,
            &station,
            Method::POST,
            "/v1/users",
            None,
            Some(json!({"displayName": format!("Viewer {index}")})),
            &[],
        )
        .await;
        match answer.status {
            201 => made += 1,
            429 => {
                refused = Some(answer);
                break;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    let refused = refused.expect("300 accounts from one address are not all made");
    assert_eq!(
        made, 30,
        "the default burst lets 30 viewers behind one NAT in"
    );
    assert_eq!(refused.body["code"], 8, "ResourceExhausted");
    assert!(
        refused.message().contains("from your network address")
            && refused.message().contains("try again in"),
        "{}",
        refused.body
    );
    let wait = refused.retry_after();
    assert_eq!(wait, 6, "one account every 6 s at 10 a minute");
    assert_eq!(refused.retry_delay(), "6s");

    // Claiming another address changes nothing, over REST or gRPC.
    let claimed = call(
        &here,
        &station,
        Method::POST,
        "/v1/users",
        None,
        Some(json!({})),
        CLAIMS,
    )
    .await;
    assert_eq!(claimed.status, 429, "{}", claimed.body);
    let mut users_here = UserServiceClient::new(grpc_from(&station, "127.0.0.1").await);
    let status = users_here
        .create_user(claiming(
            user_pb::CreateUserRequest::default(),
            None,
            "203.0.113.8",
        ))
        .await
        .expect_err("the same address over gRPC is limited too");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        onair_kit::error::retry_delay(&status),
        Some(Duration::from_secs(6)),
        "the wait travels as google.rpc.RetryInfo"
    );

    // Other addresses make accounts as before.
    let there = client_from("127.0.0.2");
    viewer(&there, &station, "Neighbour").await;
    let mut users_elsewhere = UserServiceClient::new(grpc_from(&station, "127.0.0.3").await);
    users_elsewhere
        .create_user(user_pb::CreateUserRequest::default())
        .await
        .expect("another address over gRPC");

    // The operator is not limited.
    let by_operator = call(
        &here,
        &station,
        Method::POST,
        "/v1/users",
        Some(&station.operator_key),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(by_operator.status, 201, "{}", by_operator.body);
    users_here
        .create_user(authorized(
            user_pb::CreateUserRequest::default(),
            &station.operator_key,
        ))
        .await
        .expect("the operator key over gRPC");

    // After the wait it said, the address may make one more.
    station.clock.advance(Duration::from_secs(wait));
    viewer(&here, &station, "Patient").await;
    let again = call(
        &here,
        &station,
        Method::POST,
        "/v1/users",
        None,
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(again.status, 429, "{}", again.body);
    station.stop().await;
}

/// A channel `news` with a program on air from the station's (moved) clock on.
async fn on_air(station: &TestStation) -> String {
    let operator = station.operator_key.clone();
    let here = client_from("127.0.0.1");
    let channel = call(
        &here,
        station,
        Method::POST,
        "/v1/channels",
        Some(&operator),
        Some(json!({"id": "news", "number": 1, "name": "News"})),
        &[],
    )
    .await;
    assert_eq!(channel.status, 201, "{}", channel.body);
    let program = call(
        &here,
        station,
        Method::POST,
        "/v1/programs",
        Some(&operator),
        Some(json!({"title": "The News", "duration": "3600s"})),
        &[],
    )
    .await;
    assert_eq!(program.status, 201, "{}", program.body);
    let start_ms = (station.clock.now_ms() / 1000 + 60) * 1000;
    let slot = call(
        &here,
        station,
        Method::POST,
        "/v1/channels/news/slots",
        Some(&operator),
        Some(json!({
            "programId": program.body["id"],
            "startTime": rfc3339(start_ms),
            "endTime": rfc3339(start_ms + 3_600_000),
        })),
        &[],
    )
    .await;
    assert_eq!(slot.status, 201, "{}", slot.body);
    station.clock.advance(Duration::from_secs(61));
    slot.body["id"].as_str().unwrap().to_owned()
}

async fn post(
    client: &reqwest::Client,
    station: &TestStation,
    token: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    call(
        client,
        station,
        Method::POST,
        "/v1/channels/news/comments",
        Some(token),
        Some(json!({ "body": body })),
        headers,
    )
    .await
}

async fn comment_floods_from_one_address_are_limited(backend: Backend) {
    use futures::StreamExt as _;
    let station = TestStation::start(backend).await;
    on_air(&station).await;
    let here = client_from("127.0.0.1");

    // 25 fresh accounts, 20 comments each (what each may post in a minute
    // under the default chat settings), all at once from one address.
    let mut tokens = Vec::new();
    for index in 0..25 {
        tokens.push(viewer(&here, &station, &format!("Fan {index}")).await.1);
    }
    let posts = (0..500).map(|index| {
        let token = tokens[index % tokens.len()].clone();
        let here = here.clone();
        let station = &station;
        async move { post(&here, station, &token, &format!("goal {index}"), &[]).await }
    });
    let answers: Vec<Answer> = futures::stream::iter(posts)
        .buffer_unordered(50)
        .collect()
        .await;
    let published = answers.iter().filter(|answer| answer.status == 201).count();
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|answer| answer.status == 429)
        .collect();
    assert_eq!(
        published + limited.len(),
        500,
        "every post is published or limited"
    );
    assert_eq!(published, 40, "the default burst per address and channel");
    let refused = limited[0];
    assert!(
        refused
            .message()
            .contains("from your network address on channel news"),
        "{}",
        refused.body
    );
    assert_eq!(refused.retry_after(), 1, "240 a minute: one every 250 ms");
    assert_eq!(refused.retry_delay(), "0.250s");

    // Claims of another address change nothing.
    let claimed = post(&here, &station, &tokens[0], "claimed", CLAIMS).await;
    assert_eq!(claimed.status, 429, "{}", claimed.body);
    let mut comments_here = CommentServiceClient::new(grpc_from(&station, "127.0.0.1").await);
    let request = comment_pb::PostCommentRequest {
        channel_id: "news".to_owned(),
        body: "over grpc".to_owned(),
        commands: Vec::new(),
    };
    let status = comments_here
        .post_comment(claiming(request.clone(), Some(&tokens[1]), "203.0.113.8"))
        .await
        .expect_err("the same address over gRPC is limited too");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(onair_kit::error::retry_delay(&status).is_some());

    // Another address posts, with an account made here or there.
    let there = client_from("127.0.0.2");
    let moved = post(&there, &station, &tokens[2], "from the other flat", &[]).await;
    assert_eq!(moved.status, 201, "{}", moved.body);
    let (_neighbour, neighbour_token) = viewer(&there, &station, "Neighbour").await;
    let neighbour = post(&there, &station, &neighbour_token, "hello", &[]).await;
    assert_eq!(neighbour.status, 201, "{}", neighbour.body);
    let mut comments_elsewhere = CommentServiceClient::new(grpc_from(&station, "127.0.0.3").await);
    comments_elsewhere
        .post_comment(authorized(request.clone(), &tokens[3]))
        .await
        .expect("another address over gRPC");

    // The operator is not limited, from the flooded address either.
    let operator = post(&here, &station, &station.operator_key, "studio", &[]).await;
    assert_eq!(operator.status, 201, "{}", operator.body);

    // The wait it said is enough.
    station
        .clock
        .advance(Duration::from_secs(refused.retry_after()));
    let later = post(&here, &station, &tokens[4], "after the wait", &[]).await;
    assert_eq!(later.status, 201, "{}", later.body);
    station.stop().await;
}

async fn comment_pace_refusals_say_when_to_retry(backend: Backend) {
    let station = TestStation::start(backend).await;
    on_air(&station).await;
    let here = client_from("127.0.0.1");
    let (_ann, ann) = viewer(&here, &station, "Ann").await;
    let settings = |change: Value| {
        let here = here.clone();
        let station = &station;
        async move {
            let mut settings = json!({
                "commentsEnabled": true,
                "holdBelowTrustScore": 20,
                "shadowBelowTrustScore": 5,
                "displayRatePerSecond": 30,
                "duplicateWindowSeconds": 30,
                "maxCommentsPerMinute": 20,
                "reportThreshold": 3,
            });
            for (key, value) in change.as_object().unwrap() {
                settings[key] = value.clone();
            }
            let stored = call(
                &here,
                station,
                Method::PUT,
                "/v1/channels/news/chatSettings",
                Some(&station.operator_key),
                Some(settings),
                &[],
            )
            .await;
            assert_eq!(stored.status, 200, "{}", stored.body);
        }
    };

    settings(json!({"slowModeSeconds": 10})).await;
    assert_eq!(post(&here, &station, &ann, "first", &[]).await.status, 201);
    let slow = post(&here, &station, &ann, "second", &[]).await;
    assert_eq!(slow.status, 429, "{}", slow.body);
    assert!(slow.message().contains("slow mode"), "{}", slow.body);
    assert_eq!(slow.retry_after(), 10);
    assert_eq!(slow.retry_delay(), "10s");
    let mut comments = CommentServiceClient::new(grpc_from(&station, "127.0.0.1").await);
    let status = comments
        .post_comment(authorized(
            comment_pb::PostCommentRequest {
                channel_id: "news".to_owned(),
                body: "third".to_owned(),
                commands: Vec::new(),
            },
            &ann,
        ))
        .await
        .expect_err("slow mode over gRPC");
    assert_eq!(
        onair_kit::error::retry_delay(&status),
        Some(Duration::from_secs(10))
    );

    settings(json!({"slowModeSeconds": 0, "maxCommentsPerMinute": 2})).await;
    station.clock.advance(Duration::from_secs(10));
    assert_eq!(post(&here, &station, &ann, "fourth", &[]).await.status, 201);
    let flood = post(&here, &station, &ann, "fifth", &[]).await;
    assert_eq!(flood.status, 429, "{}", flood.body);
    assert!(flood.message().contains("a minute"), "{}", flood.body);
    // The first of the two in the window was 10 s ago.
    assert_eq!(flood.retry_after(), 50);
    station.stop().await;
}

/// Asserts that a gRPC call was refused as an invalid argument.
fn refused_for_nul<T: std::fmt::Debug>(
    answer: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
) {
    match answer {
        Ok(response) => panic!("{what} answered {response:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{what}: {status:?}"
            );
        }
    }
}

/// A request that must be refused with 400 for the NUL it carries.
struct Garbage {
    method: Method,
    path: String,
    credential: Option<String>,
    body: Option<Value>,
    /// What the message names, when the refusal is the NUL rule's own.
    names: Option<&'static str>,
}

fn garbage(method: Method, path: &str, credential: &str, body: Option<Value>) -> Garbage {
    Garbage {
        method,
        path: path.to_owned(),
        credential: (!credential.is_empty()).then(|| credential.to_owned()),
        body,
        names: None,
    }
}

impl Garbage {
    fn naming(mut self, field: &'static str) -> Garbage {
        self.names = Some(field);
        self
    }
}

async fn a_nul_in_any_input_is_refused_with_400(backend: Backend) {
    let station = TestStation::start(backend).await;
    let slot = on_air(&station).await;
    let here = client_from("127.0.0.1");
    let operator = station.operator_key.clone();
    let (viewer_id, token) = viewer(&here, &station, "Ann").await;
    let posted = post(&here, &station, &token, "hello", &[]).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    let comment_id = posted.body["id"].as_str().unwrap().to_owned();
    let times = format!(
        "startTime={}&endTime={}",
        rfc3339(station.clock.now_ms()),
        rfc3339(station.clock.now_ms() + 3_600_000)
    );
    let nul = "a\u{0}b";
    use Method as M;
    let cases = vec![
        // Users: ids in paths and queries, bodies, tokens, reasons.
        garbage(M::GET, "/v1/users/%00", &operator, None).naming("userId"),
        garbage(M::GET, "/v1/users:batchGet?userIds=%00", &operator, None).naming("userIds[0]"),
        garbage(
            M::GET,
            "/v1/users:batchGet?userIds=ann&userIds=b%00",
            &operator,
            None,
        )
        .naming("userIds[1]"),
        garbage(M::POST, "/v1/users", "", Some(json!({"displayName": nul}))),
        garbage(
            M::PATCH,
            "/v1/users/me",
            &token,
            Some(json!({"displayName": nul})),
        ),
        garbage(
            M::POST,
            "/v1/tokens:refresh",
            "",
            Some(json!({"refreshToken": nul})),
        )
        .naming("refreshToken"),
        garbage(
            M::POST,
            "/v1/users/%00:ban",
            &operator,
            Some(json!({"reason": "spam"})),
        ),
        garbage(
            M::POST,
            &format!("/v1/users/{viewer_id}:ban"),
            &operator,
            Some(json!({"reason": nul})),
        )
        .naming("reason"),
        garbage(M::POST, "/v1/users/%00:unban", &operator, Some(json!({}))),
        garbage(
            M::POST,
            "/v1/users/%00:setRole",
            &operator,
            Some(json!({"role": "MODERATOR"})),
        ),
        // Channels, programs, slots, the schedule.
        garbage(M::GET, "/v1/channels/%00", "", None),
        garbage(M::GET, "/v1/channels?pageToken=%00", "", None).naming("pageToken"),
        garbage(
            M::POST,
            "/v1/channels",
            &operator,
            Some(json!({"id": "sport", "name": nul})),
        ),
        garbage(
            M::PATCH,
            "/v1/channels/news",
            &operator,
            Some(json!({"name": nul})),
        ),
        garbage(
            M::PATCH,
            "/v1/channels/%00",
            &operator,
            Some(json!({"name": "x"})),
        ),
        garbage(M::GET, "/v1/programs/%00", "", None),
        garbage(M::GET, "/v1/programs?pageToken=%00", "", None).naming("pageToken"),
        garbage(
            M::POST,
            "/v1/programs",
            &operator,
            Some(json!({"title": nul})),
        ),
        garbage(
            M::POST,
            "/v1/programs",
            &operator,
            Some(json!({"title": "Night", "description": nul})),
        ),
        garbage(M::GET, "/v1/slots/%00", "", None),
        garbage(M::DELETE, "/v1/slots/%00", &operator, None),
        garbage(
            M::PATCH,
            "/v1/slots/%00",
            &operator,
            Some(json!({"cut": true})),
        ),
        garbage(
            M::POST,
            "/v1/channels/%00/slots",
            &operator,
            Some(json!({"programId": "x"})),
        ),
        garbage(
            M::GET,
            &format!("/v1/channels/%00/timetable?{times}"),
            "",
            None,
        ),
        garbage(
            M::GET,
            &format!("/v1/timetable?{times}&timeZone=%00"),
            "",
            None,
        ),
        garbage(M::GET, "/v1/channels/%00/now", "", None),
        garbage(M::GET, "/v1/now?channelIds=%00", "", None),
        garbage(M::GET, "/v1/channels/%00/gaps", &operator, None),
        garbage(M::GET, "/v1/schedule:watch?channelId=%00", &operator, None),
        // Assets, stream keys, playout.
        garbage(M::GET, "/v1/assets/%00", &operator, None).naming("assetId"),
        garbage(M::GET, "/v1/assets?pageToken=%00", &operator, None).naming("pageToken"),
        garbage(
            M::POST,
            "/v1/assets",
            &operator,
            Some(json!({"id": "clip", "sourcePath": "/tmp/a\u{0}.mp4"})),
        ),
        garbage(M::GET, "/v1/assets/%00/job:watch", &operator, None),
        garbage(
            M::POST,
            "/v1/slots/%00:issueStreamKey",
            &operator,
            Some(json!({})),
        ),
        garbage(M::GET, "/v1/channels/%00/playout", &operator, None),
        // Comments: bodies, ids, page tokens, reasons, blocked terms.
        garbage(
            M::POST,
            "/v1/channels/news/comments",
            &token,
            Some(json!({"body": nul})),
        ),
        garbage(
            M::POST,
            "/v1/channels/%00/comments",
            &token,
            Some(json!({"body": "hi"})),
        ),
        garbage(M::GET, "/v1/slots/%00/comments", "", None),
        garbage(
            M::GET,
            &format!("/v1/slots/{slot}/comments?pageToken=%00"),
            "",
            None,
        ),
        garbage(M::GET, "/v1/channels/%00/comments:watch", "", None),
        garbage(
            M::POST,
            "/v1/comments/%00:report",
            &token,
            Some(json!({"reason": "x"})),
        ),
        garbage(
            M::POST,
            &format!("/v1/comments/{comment_id}:report"),
            &operator,
            Some(json!({"reason": nul})),
        )
        .naming("reason"),
        garbage(
            M::POST,
            "/v1/comments/%00:approve",
            &operator,
            Some(json!({})),
        ),
        garbage(
            M::POST,
            &format!("/v1/comments/{comment_id}:reject"),
            &operator,
            Some(json!({"reason": nul})),
        )
        .naming("reason"),
        garbage(M::POST, "/v1/comments/%00:hide", &operator, Some(json!({}))),
        garbage(
            M::GET,
            "/v1/moderation/queue?channelId=%00",
            &operator,
            None,
        ),
        garbage(M::GET, "/v1/channels/%00/chatSettings", "", None),
        garbage(
            M::PUT,
            "/v1/channels/news/chatSettings",
            &operator,
            Some(json!({
                "blockedTerms": ["fine", nul],
                "commentsEnabled": true,
                "holdBelowTrustScore": 20,
                "shadowBelowTrustScore": 5,
                "displayRatePerSecond": 30,
                "duplicateWindowSeconds": 30,
                "maxCommentsPerMinute": 20,
                "reportThreshold": 3,
            })),
        )
        .naming("chatSettings.blockedTerms[1]"),
        garbage(M::GET, "/v1/comments/%00", "", None),
        // Share links and their pages.
        garbage(
            M::POST,
            "/v1/shares",
            &token,
            Some(json!({"channelId": nul})),
        ),
        garbage(
            M::POST,
            "/v1/shares",
            &token,
            Some(json!({"commentId": nul})),
        ),
        garbage(M::GET, "/v1/shares/%00", "", None),
        garbage(M::GET, "/v1/shares:counts?targetIds=%00", &operator, None),
        garbage(M::GET, "/s/%00", "", None),
        // The live socket, players and encoders.
        garbage(M::GET, "/v1/channels/%00/live", "", None),
        garbage(M::GET, "/hls/%00/master.m3u8", "", None),
        garbage(M::GET, "/hls/news/%00/index.m3u8", "", None),
        garbage(M::GET, "/vod/%00/master.m3u8", "", None),
        garbage(M::PUT, "/ingest/%00/index.m3u8", "", Some(json!("x"))),
        garbage(M::PUT, "/ingest/key/%00.ts", "", Some(json!("x"))),
    ];
    let mut wrong = Vec::new();
    for case in &cases {
        let mut headers = Vec::new();
        if case.path.ends_with("/live") {
            headers.push(("accept", "text/event-stream"));
        }
        let answer = call(
            &here,
            &station,
            case.method.clone(),
            &case.path,
            case.credential.as_deref(),
            case.body.clone(),
            &headers,
        )
        .await;
        let named = case.names.is_none_or(|field| {
            answer
                .message()
                .starts_with(&format!("{field} contains a NUL"))
        });
        if answer.status != 400 || !named {
            wrong.push(format!(
                "{} {} -> {} {}",
                case.method, case.path, answer.status, answer.body
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused with 400:\n{}",
        wrong.join("\n")
    );

    // Straight over gRPC, streams included.
    let channel = grpc_from(&station, "127.0.0.1").await;
    let mut users = UserServiceClient::new(channel.clone());
    refused_for_nul(
        users
            .get_user(authorized(
                user_pb::GetUserRequest {
                    user_id: nul.to_owned(),
                },
                &operator,
            ))
            .await,
        "GetUser",
    );
    refused_for_nul(
        users
            .authenticate_api_key(user_pb::AuthenticateApiKeyRequest {
                api_key: nul.to_owned(),
            })
            .await,
        "AuthenticateApiKey",
    );
    refused_for_nul(
        users
            .adjust_trust_score(authorized(
                user_pb::AdjustTrustScoreRequest {
                    user_id: viewer_id.clone(),
                    delta: 1,
                    reason: nul.to_owned(),
                },
                &operator,
            ))
            .await,
        "AdjustTrustScore",
    );
    let mut media = MediaServiceClient::new(channel.clone());
    let items = vec![
        media_pb::ImportScheduleItem {
            item: Some(media_pb::import_schedule_item::Item::Channel(
                media_pb::Channel {
                    id: "fine".to_owned(),
                    name: "Fine".to_owned(),
                    ..Default::default()
                },
            )),
            line: 1,
        },
        media_pb::ImportScheduleItem {
            item: Some(media_pb::import_schedule_item::Item::Channel(
                media_pb::Channel {
                    id: "bad".to_owned(),
                    name: nul.to_owned(),
                    ..Default::default()
                },
            )),
            line: 2,
        },
    ];
    refused_for_nul(
        media
            .import_schedule(authorized(futures::stream::iter(items), &operator))
            .await,
        "ImportSchedule",
    );
    refused_for_nul(
        media
            .batch_get_channels(media_pb::BatchGetChannelsRequest {
                channel_ids: vec![nul.to_owned()],
            })
            .await,
        "BatchGetChannels",
    );
    let mut playout = PlayoutServiceClient::new(channel.clone());
    let upload = vec![playout_pb::UploadAssetRequest {
        asset: Some(playout_pb::Asset::default()),
        file_name: nul.to_owned(),
        data: Vec::new(),
    }];
    refused_for_nul(
        playout
            .upload_asset(authorized(futures::stream::iter(upload), &operator))
            .await,
        "UploadAsset",
    );
    let mut comments = CommentServiceClient::new(channel);
    refused_for_nul(
        comments
            .post_comment(authorized(
                comment_pb::PostCommentRequest {
                    channel_id: "news".to_owned(),
                    body: nul.to_owned(),
                    commands: Vec::new(),
                },
                &token,
            ))
            .await,
        "PostComment",
    );

    // Nothing was stored, and the station serves on.
    let listed = call(&here, &station, M::GET, "/v1/channels", None, None, &[]).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["channels"].as_array().unwrap().len(), 1);
    station.stop().await;
}

async fn nothing_splits_a_line_of_the_playlist(backend: Backend) {
    let station = TestStation::start(backend).await;
    let here = client_from("127.0.0.1");
    let operator = station.operator_key.clone();
    let injected = "News\u{2028}#EXTINF:-1,Fake\u{2029}http://evil.example/\u{85}x";

    // The media service refuses separators in whatever reaches the playlist.
    let refusals = [
        json!({"id": "sport", "name": injected}),
        json!({"id": "sport", "name": "Sport", "group": "Sport\u{2029}News"}),
        json!({"id": "sport", "name": "Sport", "logoUrl": "https://x.example/\u{85}l.png"}),
        json!({"id": "sport", "name": "Sport\u{2028}Two"}),
    ];
    for channel in refusals {
        let refused = call(
            &here,
            &station,
            Method::POST,
            "/v1/channels",
            Some(&operator),
            Some(channel.clone()),
            &[],
        )
        .await;
        assert_eq!(refused.status, 400, "{channel}: {}", refused.body);
        assert!(refused.message().contains("one line"), "{}", refused.body);
    }
    let title = call(
        &here,
        &station,
        Method::POST,
        "/v1/programs",
        Some(&operator),
        Some(json!({"title": "Night\u{2028}News"})),
        &[],
    )
    .await;
    assert_eq!(title.status, 400, "{}", title.body);
    let created = call(
        &here,
        &station,
        Method::POST,
        "/v1/channels",
        Some(&operator),
        Some(json!({"id": "sport", "number": 2, "name": "Sport"})),
        &[],
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let renamed = call(
        &here,
        &station,
        Method::PATCH,
        "/v1/channels/sport",
        Some(&operator),
        Some(json!({"name": injected})),
        &[],
    )
    .await;
    assert_eq!(renamed.status, 400, "{}", renamed.body);

    // A name stored before the rule (written straight into the database)
    // still can't split a playlist line.
    let url = match &station.database {
        Some(database) => database.url.clone(),
        None => format!("sqlite://{}", station.dir.path().join("onair.db").display()),
    };
    let db = onair_kit::store::Db::open_url(&url)
        .await
        .expect("the station's database");
    let store = onair_media::MediaStore::open(db.clone())
        .await
        .expect("the media tables");
    let mut write = store
        .begin_write(&[onair_media::store::WriteLock::ChannelNumbers])
        .await
        .expect("a write");
    let old = onair_media::model::ChannelRecord {
        id: "old".to_owned(),
        number: 1,
        name: injected.to_owned(),
        logo_url: "https://x.example/\u{2028}logo.png".to_owned(),
        group: "Old\u{2029}Times".to_owned(),
        slate_asset_id: String::new(),
        comments_enabled: true,
        create_time_ms: 0,
        update_time_ms: 0,
    };
    assert!(write.insert_channel(&old).await.expect("an old row"));
    write.commit().await.expect("committed");
    db.close().await;
    // A write makes the media service read the channel list again.
    let another = call(
        &here,
        &station,
        Method::POST,
        "/v1/channels",
        Some(&operator),
        Some(json!({"id": "movies", "number": 3, "name": "Movies"})),
        &[],
    )
    .await;
    assert_eq!(another.status, 201, "{}", another.body);

    let playlist = call(
        &here,
        &station,
        Method::GET,
        "/iptv/channels.m3u",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(playlist.status, 200, "{}", playlist.body);
    let Value::String(text) = &playlist.body else {
        panic!("the playlist is text: {}", playlist.body);
    };
    assert!(
        text.contains("tvg-id=\"old."),
        "the old channel is listed: {text}"
    );
    assert!(
        !text.contains(['\u{2028}', '\u{2029}', '\u{85}', '\r']),
        "{text:?}"
    );
    let entries = text
        .lines()
        .filter(|line| line.starts_with("#EXTINF"))
        .count();
    assert_eq!(entries, 3, "one entry per channel, none injected: {text}");
    assert_eq!(text.lines().count(), 1 + 2 * 3, "{text}");
    station.stop().await;
}
