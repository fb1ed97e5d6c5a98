//! The real binary in separate processes: `user` in one, the rest in another,
//! reaching it over gRPC; `share` apart behind another process's gateway;
//! configuration errors; help; signals.

use std::net::SocketAddr;
use std::process::Command;

use onair_proto::user::v1 as pb;
use onair_proto::user::v1::user_service_client::UserServiceClient;
use onair_testkit::PATIENCE;
use onair_testkit::{OnairProcess, assert_eventually, free_port, send_at as rest};

/// `onair` with these arguments, logging at debug level.
fn spawn(args: &[&str]) -> OnairProcess {
    spawn_with_env(args, &[])
}

fn spawn_with_env(args: &[&str], environment: &[(&str, &str)]) -> OnairProcess {
    OnairProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_onair"))
            .args(args)
            .envs(environment.iter().copied())
            .env(
                "ONAIR_LOG_LEVEL",
                "debug,h2=info,hyper=info,tower=info,sqlx=warn",
            ),
        "start onair",
    )
}

async fn readyz(http: SocketAddr) -> (u16, serde_json::Value) {
    match reqwest::get(format!("http://{http}/readyz")).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or_default())
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

// Multi-threaded: the client's connection keeps answering the server's
// shutdown handshake while the test thread waits for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_in_one_process_and_the_rest_in_another() {
    let user_dir = tempfile::tempdir().unwrap();
    let rest_dir = tempfile::tempdir().unwrap();
    let user_port = free_port();
    let user_grpc = format!("127.0.0.1:{user_port}");

    // The front process starts first, and is not ready while its peer is away.
    let peers = format!("user=http://{user_grpc}");
    let mut rest = spawn(&[
        "serve",
        "--roles",
        "gateway,media,comment",
        "--peers",
        &peers,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        rest_dir.path().to_str().unwrap(),
    ]);
    let (rest_http, rest_grpc) = rest.addresses().await;
    let (status, body) = readyz(rest_http).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["failing"]["peer user"].is_string(), "{body}");

    let user = spawn(&[
        "serve",
        "--roles",
        "user",
        "--grpc",
        &user_grpc,
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        user_dir.path().to_str().unwrap(),
    ]);
    user.addresses().await;
    assert_eventually!(
        readyz(rest_http).await.0 == 200,
        "ready once the user peer answers"
    );

    // A call to the front process crosses to the user process, trace id intact.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut client = UserServiceClient::connect(format!("http://{rest_grpc}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::CreateUserRequest {
        display_name: "Crossing".to_owned(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let created = client
        .create_user(request)
        .await
        .expect("forwarded")
        .into_inner();
    assert_eq!(created.user.unwrap().display_name, "Crossing");

    let seen_in = |process: &OnairProcess| {
        process
            .logs()
            .into_iter()
            .any(|line| line["trace_id"] == trace_id && line["method"] == "CreateUser")
    };
    assert_eventually!(
        seen_in(&rest) && seen_in(&user),
        "both processes log the request under trace {trace_id}"
    );

    // The user process saw the front process's span as its parent, not the client's.
    let user_span_parent = user.logs().into_iter().find_map(|line| {
        let span = &line["span"];
        (span["trace_id"] == trace_id).then(|| {
            span["parent_span_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    });
    if let Some(parent) = user_span_parent {
        assert_ne!(
            parent, "00f067aa0ba902b7",
            "the front process adds its own span"
        );
    }

    // REST on the front process reaches the user process too.
    let response = reqwest::Client::new()
        .post(format!("http://{rest_http}/v1/users"))
        .json(&serde_json::json!({"displayName": "Over REST"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // The token issued by the user process authenticates through the front one.
    let mut request = tonic::Request::new(pb::GetMeRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", created.access_token).parse().unwrap(),
    );
    client
        .get_me(request)
        .await
        .expect("authenticated across processes");

    // When the peer goes away, the front process says so.
    drop(user);
    assert_eventually!(
        readyz(rest_http).await.0 == 503,
        "not ready without the user peer"
    );

    let exit = rest.terminate();
    assert!(exit.success(), "SIGTERM drains and exits 0, got {exit:?}");
}

/// The share service in a process of its own: links are made and pages
/// served through the gateway of another process, and the share process
/// reads the channel from the media service there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_in_its_own_process_behind_the_gateway_of_another() {
    let front_dir = tempfile::tempdir().unwrap();
    let share_dir = tempfile::tempdir().unwrap();
    let share_grpc = format!("127.0.0.1:{}", free_port());
    let peers = format!("share=http://{share_grpc}");
    let front = spawn(&[
        "serve",
        "--roles",
        "user,media,comment,gateway",
        "--peers",
        &peers,
        "--grpc",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        front_dir.path().to_str().unwrap(),
    ]);
    let (front_http, front_grpc) = front.addresses().await;
    let front_url = format!("http://{front_http}");
    let share_peers =
        format!("user=http://{front_grpc},media=http://{front_grpc},comment=http://{front_grpc}");
    let share = spawn_with_env(
        &[
            "serve",
            "--roles",
            "share",
            "--peers",
            &share_peers,
            "--grpc",
            &share_grpc,
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            share_dir.path().to_str().unwrap(),
        ],
        &[("ONAIR_SHARE_PUBLIC_URL", &front_url)],
    );
    let (share_http, _) = share.addresses().await;
    assert_eventually!(
        readyz(front_http).await.0 == 200 && readyz(share_http).await.0 == 200,
        "both ready once they reach each other"
    );

    let operator = onair_testkit::read_operator_key(&front_dir.path().join("operator.key"));
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{front_url}/v1/channels"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({"id": "news", "number": 1, "name": "News 24"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let viewer: serde_json::Value = client
        .post(format!("{front_url}/v1/users"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = client
        .post(format!("{front_url}/v1/shares"))
        .bearer_auth(viewer["accessToken"].as_str().unwrap())
        .json(&serde_json::json!({"channelId": "news"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let link: serde_json::Value = response.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{front_url}/s/")), "{link}");
    let page = client.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<meta property=\"og:title\" content=\"News 24\">"),
        "{html}"
    );
    assert!(
        html.contains("News 24 is off air now."),
        "nothing is scheduled: {html}"
    );
    drop(share);
    drop(front);
}

#[test]
fn a_malformed_config_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("onair.toml");
    std::fs::write(&config, "http = \"127.0.0.1:0\"\nroles = [\"user\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not valid TOML"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["serve"])
        .env("ONAIR_GRPC", "everywhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ONAIR_GRPC"), "{stderr}");
    assert!(stderr.contains("\"everywhere\""), "{stderr}");
    assert!(stderr.contains("socket address"), "{stderr}");
}

#[test]
fn help_describes_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--http",
        "--grpc",
        "--data-dir",
        "--config",
        "--roles",
        "--peers",
        "--database-url",
        "--nats-url",
        "--redis-url",
        "ONAIR_DATABASE_URL",
    ] {
        assert!(help.contains(flag), "{flag} in\n{help}");
    }
    let top = Command::new(env!("CARGO_BIN_EXE_onair"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"));
}

/// Two full processes on one PostgreSQL database and one NATS server, as two
/// replicas on Kubernetes: a ban made through one is seen through the other,
/// and lands in the durable operations stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_and_nats_share_users_and_events() {
    use futures::StreamExt;
    use onair_kit::bus::{Bus, NatsBus};

    let database = onair_testkit::TestDatabase::create().await;
    let prefix = onair_testkit::unique_name("t");
    let nats_url = onair_testkit::nats_url();
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let replica = |dir: &tempfile::TempDir| {
        spawn_with_env(
            &[
                "serve",
                "--grpc",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--database-url",
                &database.url,
                "--nats-url",
                &nats_url,
            ],
            &[("ONAIR_BUS_PREFIX", &prefix)],
        )
    };
    let mut first = replica(&first_dir);
    let (first_http, first_grpc) = first.addresses().await;
    let mut second = replica(&second_dir);
    let (second_http, second_grpc) = second.addresses().await;
    for http in [first_http, second_http] {
        assert_eventually!(
            readyz(http).await.0 == 200,
            "{http} ready on PostgreSQL and NATS"
        );
    }
    let operator_key = onair_testkit::read_operator_key(&first_dir.path().join("operator.key"));

    let mut through_first = UserServiceClient::connect(format!("http://{first_grpc}"))
        .await
        .unwrap();
    let mut through_second = UserServiceClient::connect(format!("http://{second_grpc}"))
        .await
        .unwrap();
    let viewer = through_first
        .create_user(pb::CreateUserRequest {
            display_name: "Replicated".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let viewer_id = viewer.user.unwrap().id;
    let get = |user_id: &str| {
        onair_testkit::authorized(
            pb::GetUserRequest {
                user_id: user_id.to_owned(),
            },
            &operator_key,
        )
    };
    let seen = through_second
        .get_user(get(&viewer_id))
        .await
        .unwrap()
        .into_inner();
    assert!(seen.ban.is_none());

    through_first
        .ban_user(onair_testkit::authorized(
            pb::BanUserRequest {
                user_id: viewer_id.clone(),
                duration_seconds: 0,
                reason: "spam".into(),
            },
            &operator_key,
        ))
        .await
        .expect("ban through the first replica");
    assert_eventually!(
        async {
            let mut client = through_second.clone();
            let user = client.get_user(get(&viewer_id)).await.ok()?.into_inner();
            user.ban.is_some().then_some(())
        }
        .await,
        "the second replica sees the ban"
    );

    let bus = NatsBus::connect(&nats_url, &prefix).await.unwrap();
    let mut events = bus.replay("ops", 1, Some("ops.user.banned")).await.unwrap();
    let event = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("a ban event in the operations stream")
        .unwrap();
    let event: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(event["kind"], "user.banned");
    assert_eq!(event["targetId"], viewer_id.as_str());
    assert_eq!(event["actorId"], "operator");
    assert_eq!(event["reason"], "spam");

    assert!(first.terminate().success());
    assert!(second.terminate().success());
}

/// Two full replicas of the station on one PostgreSQL, NATS and Redis (with
/// a channel `news` on air when started by [`Newsroom::start`]).
struct Newsroom {
    first: OnairProcess,
    second: OnairProcess,
    first_http: SocketAddr,
    second_http: SocketAddr,
    operator_key: String,
    _database: onair_testkit::TestDatabase,
    _dirs: [tempfile::TempDir; 2],
}

impl Newsroom {
    /// Starts both replicas with `environment` besides the servers' and
    /// puts a program on air on `news`.
    async fn start(environment: &[(&str, &str)]) -> Newsroom {
        Newsroom::start_on(&onair_testkit::redis_url(), environment).await
    }

    /// Both replicas, ready, on the Redis at `redis_url`, with nothing on
    /// the air yet.
    async fn replicas(redis_url: &str, environment: &[(&str, &str)]) -> Newsroom {
        let database = onair_testkit::TestDatabase::create().await;
        let prefix = onair_testkit::unique_name("t");
        let nats_url = onair_testkit::nats_url();
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let mut environment = environment.to_vec();
        environment.push(("ONAIR_BUS_PREFIX", &prefix));
        let replica = |dir: &tempfile::TempDir| {
            spawn_with_env(
                &[
                    "serve",
                    "--grpc",
                    "127.0.0.1:0",
                    "--http",
                    "127.0.0.1:0",
                    "--data-dir",
                    dir.path().to_str().unwrap(),
                    "--database-url",
                    &database.url,
                    "--nats-url",
                    &nats_url,
                    "--redis-url",
                    redis_url,
                ],
                &environment,
            )
        };
        let first = replica(&dirs[0]);
        let (first_http, _) = first.addresses().await;
        let second = replica(&dirs[1]);
        let (second_http, _) = second.addresses().await;
        for http in [first_http, second_http] {
            assert_eventually!(
                readyz(http).await.0 == 200,
                "{http} ready on PostgreSQL, NATS and Redis"
            );
        }
        let operator_key = onair_testkit::read_operator_key(&dirs[0].path().join("operator.key"));
        Newsroom {
            first,
            second,
            first_http,
            second_http,
            operator_key,
            _database: database,
            _dirs: dirs,
        }
    }

    /// The same as [`Newsroom::start`], on the Redis at `redis_url`.
    async fn start_on(redis_url: &str, environment: &[(&str, &str)]) -> Newsroom {
        use reqwest::Method;

        let newsroom = Newsroom::replicas(redis_url, environment).await;
        let (status, _, channel) = newsroom
            .as_operator(
                Method::POST,
                "/v1/channels",
                Some(serde_json::json!({"id": "news", "number": 1, "name": "News"})),
            )
            .await;
        assert_eq!(status, 201, "{channel}");
        let (status, _, program) = newsroom
            .as_operator(
                Method::POST,
                "/v1/programs",
                Some(serde_json::json!({"title": "The News", "duration": "600s"})),
            )
            .await;
        assert_eq!(status, 201, "{program}");
        // On air now: started a minute ago, in whole seconds.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let start_ms = (now_ms / 1000 - 60) * 1000;
        let (status, _, slot) = newsroom
            .as_operator(
                Method::POST,
                "/v1/channels/news/slots",
                Some(serde_json::json!({
                    "programId": program["id"],
                    "startTime": onair_testkit::rfc3339(start_ms),
                    "endTime": onair_testkit::rfc3339(start_ms + 600_000),
                })),
            )
            .await;
        assert_eq!(status, 201, "{slot}");
        newsroom
    }

    /// A REST call to the first replica as the operator.
    async fn as_operator(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, Option<u64>, serde_json::Value) {
        rest(
            self.first_http,
            method,
            path,
            Some(&self.operator_key),
            body,
        )
        .await
    }

    /// Changes `news`'s chat settings through the first replica.
    async fn chat_settings(&self, change: serde_json::Value) {
        let path = "/v1/channels/news/chatSettings";
        let (status, _, mut settings) = self.as_operator(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{settings}");
        for (key, value) in change.as_object().unwrap() {
            settings[key] = value.clone();
        }
        let (status, _, stored) = self
            .as_operator(reqwest::Method::PUT, path, Some(settings))
            .await;
        assert_eq!(status, 200, "{stored}");
    }

    /// A new viewer's access token.
    async fn viewer(&self, name: &str) -> String {
        let (status, _, viewer) = rest(
            self.first_http,
            reqwest::Method::POST,
            "/v1/users",
            None,
            Some(serde_json::json!({ "displayName": name })),
        )
        .await;
        assert_eq!(status, 201, "{viewer}");
        viewer["accessToken"].as_str().unwrap().to_owned()
    }

    fn stop(mut self) {
        assert!(self.first.terminate().success());
        assert!(self.second.terminate().success());
    }
}

/// A viewer's comment on `news` through the replica at `http`.
async fn post(http: SocketAddr, token: &str, body: &str) -> (u16, Option<u64>, serde_json::Value) {
    rest(
        http,
        reqwest::Method::POST,
        "/v1/channels/news/comments",
        Some(token),
        Some(serde_json::json!({ "body": body })),
    )
    .await
}

/// Two comment replicas on one PostgreSQL, NATS and Redis share a viewer's
/// pace: a second comment within slow mode is refused by the replica that
/// did not take the first, a repeat by either, and the next comment after
/// the wait goes through either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_holds_across_two_comment_replicas_on_redis() {
    let newsroom = Newsroom::start(&[]).await;
    // Long enough that two posts in a row land inside it on a busy machine.
    newsroom
        .chat_settings(serde_json::json!({"slowModeSeconds": 3}))
        .await;
    let token = newsroom.viewer("Paced").await;
    let (a, b) = (newsroom.first_http, newsroom.second_http);

    let (status, _, accepted) = post(a, &token, "first through A").await;
    assert_eq!(status, 201, "{accepted}");
    let (status, retry_after, refused) = post(b, &token, "second through B").await;
    assert_eq!(
        status, 429,
        "the other replica refuses within slow mode: {refused}"
    );
    assert!(
        onair_testkit::error_message(&refused).contains("slow mode"),
        "{refused}"
    );
    let wait = retry_after.expect("a refusal says when to retry");
    assert!((1..=3).contains(&wait), "retry after {wait} s");

    // The wait the refusal named, rounded up to whole seconds, is enough.
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let (status, _, repeated) = post(b, &token, "first through A").await;
    assert_eq!(
        status, 400,
        "a repeat is refused across replicas: {repeated}"
    );
    assert!(
        onair_testkit::error_message(&repeated).contains("same comment"),
        "{repeated}"
    );
    let (status, _, accepted) = post(b, &token, "second through B").await;
    assert_eq!(status, 201, "after the wait B takes it: {accepted}");
    let (status, _, refused) = post(a, &token, "third through A").await;
    assert_eq!(status, 429, "and A now refuses: {refused}");

    newsroom.stop();
}

/// While the shared counters' Redis is down, a viewer's comment is refused
/// as unavailable with a message to try again, rather than let through
/// unpaced, and the rest of the API keeps answering (its rate limits fall
/// back to each gateway's memory); once Redis is back, comments go through
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_wait_for_the_shared_counters_when_redis_is_down() {
    let mut redis = onair_testkit::RedisServer::start().await;
    let newsroom = Newsroom::start_on(&redis.url(), &[]).await;
    let token = newsroom.viewer("Patient").await;
    let (status, _, accepted) = post(newsroom.first_http, &token, "before").await;
    assert_eq!(status, 201, "{accepted}");

    redis.stop();
    let (status, _, refused) = post(newsroom.second_http, &token, "during").await;
    assert_eq!(status, 503, "{refused}");
    assert!(
        onair_testkit::error_message(&refused).contains("try again in a few seconds"),
        "{refused}"
    );
    let (status, _, channels) = rest(
        newsroom.first_http,
        reqwest::Method::GET,
        "/v1/channels",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "reads still answer: {channels}");

    redis.start_again().await;
    let mut attempt = 0;
    assert_eventually!(
        {
            attempt += 1;
            let body = format!("after {attempt}");
            post(newsroom.second_http, &token, &body).await.0 == 201
        },
        "comments go through once Redis is back"
    );

    newsroom.stop();
}

/// What one network address does is counted across replicas: with a burst
/// of two new accounts per address, a third is refused whichever replica
/// takes it; with one comment a minute per address and channel, a second
/// viewer at the same address is refused by the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_counted_across_two_replicas_on_redis() {
    let newsroom = Newsroom::start(&[
        ("ONAIR_USER_ACCOUNTS_PER_IP_PER_MINUTE", "1"),
        ("ONAIR_USER_ACCOUNTS_BURST_PER_IP", "2"),
        ("ONAIR_COMMENT_PER_IP_PER_MINUTE", "1"),
        ("ONAIR_COMMENT_BURST_PER_IP", "1"),
    ])
    .await;
    let create = |http: SocketAddr, name: &str| {
        rest(
            http,
            reqwest::Method::POST,
            "/v1/users",
            None,
            Some(serde_json::json!({ "displayName": name })),
        )
    };
    let (status, _, ann) = create(newsroom.first_http, "Ann").await;
    assert_eq!(status, 201, "{ann}");
    let (status, _, bob) = create(newsroom.second_http, "Bob").await;
    assert_eq!(status, 201, "{bob}");
    let (status, retry_after, refused) = create(newsroom.first_http, "Cat").await;
    assert_eq!(status, 429, "the address's accounts are spent: {refused}");
    assert!(
        onair_testkit::error_message(&refused).contains("accounts"),
        "{refused}"
    );
    assert!(retry_after.is_some(), "a refusal says when to retry");
    let ann = ann["accessToken"].as_str().unwrap();
    let bob = bob["accessToken"].as_str().unwrap();

    let (status, _, accepted) = post(newsroom.first_http, ann, "hello from here").await;
    assert_eq!(status, 201, "{accepted}");
    let (status, retry_after, refused) = post(newsroom.second_http, bob, "me too").await;
    assert_eq!(status, 429, "the address's comment is spent: {refused}");
    assert!(
        onair_testkit::error_message(&refused).contains("network address"),
        "{refused}"
    );
    assert!(retry_after.is_some(), "a refusal says when to retry");

    newsroom.stop();
}

/// Two gateways on one Redis share a client address's rate: with a rate
/// of one request a second and a burst of two, the third request in a row
/// is refused whichever gateway takes it (each alone would allow two), and
/// the next after the wait goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_rate_holds_across_two_gateways_on_redis() {
    let newsroom = Newsroom::replicas(
        &onair_testkit::redis_url(),
        &[("ONAIR_GATEWAY_RATE_LIMIT_PER_IP", "1")],
    )
    .await;
    let (first_http, second_http) = (newsroom.first_http, newsroom.second_http);
    let list = |http: SocketAddr| rest(http, reqwest::Method::GET, "/v1/channels", None, None);

    let (status, _, listed) = list(first_http).await;
    assert_eq!(status, 200, "{listed}");
    let (status, _, listed) = list(second_http).await;
    assert_eq!(status, 200, "{listed}");
    let (status, retry_after, refused) = list(first_http).await;
    assert_eq!(status, 429, "the burst is spent across gateways: {refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|message| message.contains("this address")),
        "{refused}"
    );
    let (status, _, refused) = list(second_http).await;
    assert_eq!(status, 429, "the other gateway agrees: {refused}");

    let wait = retry_after.expect("a refusal says when to retry");
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let (status, _, listed) = list(second_http).await;
    assert_eq!(status, 200, "a token is back after the wait: {listed}");

    newsroom.stop();
}
