//! What an SRE relies on: health, reflection, gRPC-Web, readiness, metrics and a
//! clean shutdown, on a real station.

use futures::StreamExt;
use onair_proto::user::v1 as pb;
use onair_testkit::{Backend, TestStation, authorized};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test]
async fn health_reports_each_service() {
    let station = TestStation::start(Backend::Sqlite).await;
    let mut health = HealthClient::new(station.channel().await);
    for service in [
        "",
        "onair.user.v1.UserService",
        "onair.media.v1.MediaService",
        "onair.playout.v1.PlayoutService",
        "onair.comment.v1.CommentService",
        "onair.audience.v1.AudienceService",
        "onair.share.v1.ShareService",
    ] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let status = health
        .check(HealthCheckRequest {
            service: "onair.weather.v1.WeatherService".to_owned(),
        })
        .await
        .expect_err("no such service");
    assert_eq!(status.code(), tonic::Code::NotFound);
    station.stop().await;
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let station = TestStation::start(Backend::Sqlite).await;
    let mut reflection = ServerReflectionClient::new(station.channel().await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "onair.user.v1.UserService".to_owned(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("reflection stream")
        .into_inner();

    let listed = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in ["onair.user.v1.UserService", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} in {names:?}"
        );
    }

    let described = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("expected descriptors, got {described:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    station.stop().await;
}

/// A gRPC-Web unary call over HTTP/1.1, as a browser makes it.
#[tokio::test]
async fn grpc_web_serves_browsers() {
    use prost::Message;
    let station = TestStation::start(Backend::Sqlite).await;
    let request = pb::CreateUserRequest {
        display_name: "Web".to_owned(),
    };
    let encoded = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    let response = reqwest::Client::builder()
        .http1_only()
        .build()
        .unwrap()
        .post(format!(
            "http://{}/onair.user.v1.UserService/CreateUser",
            station.grpc_addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(frame)
        .send()
        .await
        .expect("grpc-web request");
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body[0], 0, "the first frame is a message");
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let created = pb::CreateUserResponse::decode(&body[5..5 + length]).expect("a message");
    assert_eq!(created.user.unwrap().display_name, "Web");
    let trailers = String::from_utf8_lossy(&body[5 + length + 5..]);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    station.stop().await;
}

#[tokio::test]
async fn healthz_readyz_and_metrics_answer_over_http() {
    let station = TestStation::start(Backend::Sqlite).await;
    let healthz = reqwest::get(station.http_url("/healthz")).await.unwrap();
    assert_eq!(healthz.status(), 200);

    let readyz = reqwest::get(station.http_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200);
    let body: serde_json::Value = readyz.json().await.unwrap();
    assert_eq!(body["status"], "ready");

    let mut client = station.user_client().await;
    client
        .create_user(pb::CreateUserRequest::default())
        .await
        .unwrap();
    let status = client
        .get_user(authorized(
            pb::GetUserRequest {
                user_id: "nobody".into(),
            },
            &station.operator_key,
        ))
        .await
        .expect_err("unknown user");
    assert_eq!(status.code(), tonic::Code::NotFound);

    let response = reqwest::get(station.http_url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = onair_testkit::header_text(&response, "content-type");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let metrics = response.text().await.unwrap();
    for expected in [
        "# TYPE onair_grpc_server_requests_total counter",
        "onair_grpc_server_requests_total{service=\"onair.user.v1.UserService\",method=\"CreateUser\",code=\"OK\"} 1",
        "onair_grpc_server_requests_total{service=\"onair.user.v1.UserService\",method=\"GetUser\",code=\"NotFound\"} 1",
        "# TYPE onair_grpc_server_request_duration_seconds histogram",
        "onair_grpc_server_request_duration_seconds_count{service=\"onair.user.v1.UserService\",method=\"CreateUser\"} 1",
        "onair_http_server_requests_total{route=\"/readyz\",method=\"GET\",code=\"200\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in\n{metrics}"
        );
    }
    check_with_promtool(&metrics);
    station.stop().await;
}

/// Runs `promtool check metrics`, which CI installs (Debian's `prometheus`).
fn check_with_promtool(metrics: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus; scripts/test.sh does it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_stopped_station_refuses_new_connections() {
    let station = TestStation::start(Backend::Sqlite).await;
    let http_addr = station.http_addr;
    let grpc_addr = station.grpc_addr;
    station.stop().await;
    assert!(tokio::net::TcpStream::connect(http_addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(grpc_addr).await.is_err());
}

/// Services in one process call each other through the same contract as over
/// the network: the call passes the server's stack (and so its metrics).
#[tokio::test]
async fn in_process_clients_go_through_the_contract() {
    use onair_kit::config::ServiceRole;
    let station = TestStation::start_with(Backend::Sqlite, &[("roles", "user,gateway")]).await;
    let channels = station.station.as_ref().unwrap().channels().clone();
    assert!(channels.channel(ServiceRole::User).is_local());
    let jwks = channels
        .user()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .expect("a local call")
        .into_inner();
    assert_eq!(jwks.keys.len(), 1);
    let metrics = onair_testkit::metrics_text(&station).await;
    assert!(metrics.contains(
        "onair_grpc_server_requests_total{service=\"onair.user.v1.UserService\",method=\"GetJwks\",code=\"OK\"} 1"
    ));

    // A service that is neither here nor configured as a peer says how to fix it.
    let mut media = onair_proto::clients::MediaClient::new(channels.channel(ServiceRole::Media));
    let status = media
        .get_channel(onair_proto::media::v1::GetChannelRequest {
            channel_id: "news".into(),
        })
        .await
        .expect_err("no media service");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status.message().contains("--peers media=URL"),
        "{}",
        status.message()
    );
    station.stop().await;
}
