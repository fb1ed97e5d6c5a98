//! The front door holds against slow and greedy clients: request heads and
//! bodies that trickle in are cut off, idle connections close while live
//! sockets stay, one address can't take every connection (in total or by
//! exhausting the open-files limit), every HTTP answer says `nosniff`, and
//! the gRPC port refuses what is not gRPC.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use onair_testkit::on_both_backends;
use onair_testkit::{
    Backend, PATIENCE, TestStation, create_channel, open_sse, publish_comment, read_sse_until,
    ready,
};
use onair_testkit::{OnairProcess, assert_eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// Short deadlines, so that the tests wait little for the server to act.
const SHORT_DEADLINES: &[(&str, &str)] = &[
    ("server.header_timeout_ms", "300"),
    ("server.idle_timeout_ms", "300"),
    ("server.body_timeout_ms", "300"),
    ("server.body_min_bytes_per_second", "1024"),
];

/// Another client than the one that misbehaves: its own loopback address.
const OTHER_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Reads until the server closes the connection (end of stream or reset)
/// and returns what it sent; panics if it is still open after
/// [`PATIENCE`], which is only a guard against hanging.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    answer_while_sending(stream, std::future::pending()).await
}

/// Runs `sending`, which goes on for longer than the server should allow,
/// while reading what the server answers, until it closes the connection;
/// returns the answer.
async fn answer_while_sending(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
    sending: impl Future<Output = ()>,
) -> Vec<u8> {
    let mut received = Vec::new();
    let read_all = async {
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            () = sending => {}
            () = read_all => {}
        }
    })
    .await
    .expect("the server closes the connection");
    received
}

/// A TCP connection from `source` to `server`.
async fn connect_from(source: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(server).await
}

/// One HTTP/1.1 exchange on a fresh connection: the answer's head and body.
async fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .expect("an answer")
            .unwrap();
        assert!(read > 0, "the connection closed before the answer ended");
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

async fn a_silent_connection_and_a_trickled_head_are_closed(backend: Backend) {
    let station = TestStation::start_with(backend, SHORT_DEADLINES).await;

    let mut silent = TcpStream::connect(station.http_addr).await.unwrap();
    let said = read_until_closed(&mut silent).await;
    assert!(said.is_empty(), "{said:?}");

    // A head of 2,000 bytes, one byte every 50 ms: a hundred seconds to send,
    // far more than the guard of `read_until_closed`.
    let mut trickling = TcpStream::connect(station.http_addr).await.unwrap();
    let (mut reader, mut writer) = trickling.split();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(2000)
    );
    let trickle = async {
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the whole head went through");
    };
    let answer = answer_while_sending(&mut reader, trickle).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

    // A client that speaks in time is answered.
    let mut prompt = TcpStream::connect(station.http_addr).await.unwrap();
    let answer = exchange(&mut prompt, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    station.stop().await;
}

async fn a_body_that_stalls_or_trickles_gets_408_and_a_steady_one_goes_through(backend: Backend) {
    let station = TestStation::start_with(backend, SHORT_DEADLINES).await;
    let head = |length: usize| {
        format!(
            "POST /v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };

    // Ten bytes of a hundred, then nothing.
    let mut stalled = TcpStream::connect(station.http_addr).await.unwrap();
    stalled.write_all(head(100).as_bytes()).await.unwrap();
    stalled.write_all(b"{\"displayN").await.unwrap();
    let answer = String::from_utf8(read_until_closed(&mut stalled).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    let body: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["code"], 4, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("server.body_min_bytes_per_second"),
        "{body}"
    );

    // One byte every 100 ms: slower than the minimum rate, so it is cut off
    // though it never stops.
    let mut trickling = TcpStream::connect(station.http_addr).await.unwrap();
    trickling.write_all(head(1000).as_bytes()).await.unwrap();
    let (mut reader, mut writer) = trickling.split();
    let trickle = async {
        for _ in 0..1000 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the whole body went through");
    };
    let answer = answer_while_sending(&mut reader, trickle).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // 64 KiB in pieces of 4 KiB every 50 ms: it keeps the server waiting far
    // longer than the 300 ms allowance, but at 80 KiB/s it goes through.
    let mut json = br#"{"displayName":"Steady"}"#.to_vec();
    json.resize(64 * 1024, b' ');
    let mut steady = TcpStream::connect(station.http_addr).await.unwrap();
    steady.write_all(head(json.len()).as_bytes()).await.unwrap();
    for piece in json.chunks(4096) {
        steady.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = exchange(&mut steady, "").await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("Steady"), "{answer}");
    station.stop().await;
}

async fn an_idle_connection_is_closed_and_live_sockets_stay(backend: Backend) {
    let station = TestStation::start_with(backend, SHORT_DEADLINES).await;
    create_channel(&station, "news").await;
    let mut websocket =
        onair_testkit::connect(&onair_testkit::live_url(&station, "news", None)).await;
    ready(&mut websocket).await;
    let mut sse = open_sse(&station, "news").await;
    assert_eq!(sse.status().as_u16(), 200);
    let mut sse_text = String::new();
    read_sse_until(&mut sse, &mut sse_text, |text| {
        text.contains("event: ready")
    })
    .await;

    // A kept-alive connection with nothing more to ask is closed.
    let mut idle = TcpStream::connect(station.http_addr).await.unwrap();
    let answer = exchange(&mut idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let said = read_until_closed(&mut idle).await;
    assert!(said.is_empty(), "{said:?}");
    // Several idle timeouts more.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    publish_comment(&station, 1, 10).await;
    let events = onair_testkit::next_events(&mut websocket)
        .await
        .expect("the live socket is still open");
    assert_eq!(events[0]["data"]["id"], "c1", "{events:?}");
    let mut sse_text = String::new();
    read_sse_until(&mut sse, &mut sse_text, |text| text.contains("\"c1\"")).await;
    station.stop().await;
}

async fn every_http_answer_says_nosniff(backend: Backend) {
    let station = TestStation::start(backend).await;
    create_channel(&station, "news").await;
    let client = reqwest::Client::new();
    let paths = [
        ("/v1/channels", 200),
        ("/v1/channels/nowhere", 404),
        ("/v1/users/me", 401),
        ("/v1/channels/news/live?after=yesterday", 400),
        ("/no/such/route", 404),
        ("/hls/news/master.m3u8", 200),
        ("/iptv/channels.m3u", 200),
        ("/iptv/epg.xml", 200),
        ("/openapi.json", 200),
        ("/metrics", 200),
        ("/healthz", 200),
    ];
    for (path, status) in paths {
        let response = client.get(station.http_url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
    }
    station.stop().await;
}

/// One request on a fresh HTTP/1.1 or HTTP/2 connection (prior
/// knowledge); the answer's status, headers and body.
async fn request_over(
    version: http::Version,
    server: SocketAddr,
    method: http::Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt as _;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let tcp = TcpStream::connect(server).await.unwrap();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("http://{server}{path}"));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = if version == http::Version::HTTP_2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("an HTTP/2 connection");
        tokio::spawn(connection);
        sender.send_request(request).await
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("an HTTP/1.1 connection");
        tokio::spawn(connection);
        sender.send_request(request).await
    };
    let response = response.expect("an answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body.to_vec())
}

async fn the_grpc_port_refuses_what_is_not_grpc(backend: Backend) {
    let station = TestStation::start(backend).await;
    let grpc = station.grpc_addr;
    let check = "/grpc.health.v1.Health/Check";

    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let (status, headers, body) = request_over(
            version,
            grpc,
            http::Method::POST,
            check,
            Some("application/json"),
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(status, 415, "{version:?}");
        assert_eq!(headers["grpc-status"], "3");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let text = String::from_utf8(body).unwrap();
        assert!(
            text.contains("invalid gRPC request content-type \"application/json\""),
            "{text}"
        );
        assert!(text.contains("application/grpc-web"), "{text}");

        let (status, _headers, body) = request_over(
            version,
            grpc,
            http::Method::GET,
            "/v1/channels",
            None,
            Vec::new(),
        )
        .await;
        assert_eq!(status, 415, "{version:?}");
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("content-type none"), "{text}");

        // gRPC-Web still reaches the services, over either version.
        let (status, _headers, body) = request_over(
            version,
            grpc,
            http::Method::POST,
            check,
            Some("application/grpc-web+proto"),
            vec![0, 0, 0, 0, 0],
        )
        .await;
        assert_eq!(status, 200, "{version:?}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("grpc-status:0"), "{text}");
    }

    // And so does gRPC.
    let mut health = tonic_health::pb::health_client::HealthClient::new(station.channel().await);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("the health check answers")
        .into_inner();
    assert_eq!(answer.status, SERVING);
    station.stop().await;
}

on_both_backends!(
    a_silent_connection_and_a_trickled_head_are_closed,
    a_body_that_stalls_or_trickles_gets_408_and_a_steady_one_goes_through,
    an_idle_connection_is_closed_and_live_sockets_stay,
    every_http_answer_says_nosniff,
    the_grpc_port_refuses_what_is_not_grpc,
);

/// `onair serve` under an open-files limit set with `prlimit`.
fn spawn_limited(open_files: &str, environment: &[(&str, &str)]) -> OnairProcess {
    let data = tempfile::tempdir().unwrap();
    OnairProcess::spawn(
        Command::new("prlimit")
            .arg(format!("--nofile={open_files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_onair"))
            .args(["serve", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data.path())
            .envs(environment.iter().copied())
            .env("ONAIR_LOG_LEVEL", "info"),
        "start onair under prlimit (util-linux)",
    )
    .keeping(data)
}

/// `/healthz` from [`OTHER_CLIENT`].
async fn healthz_from_another_client(http: SocketAddr) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(OTHER_CLIENT)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{http}/healthz"))
        .send()
        .await
        .expect("the station answers another client");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    response.status().as_u16()
}

/// A gRPC health check from [`OTHER_CLIENT`].
async fn grpc_health_from_another_client(grpc: SocketAddr) -> i32 {
    let connector = tower::service_fn(move |_uri: http::Uri| async move {
        let stream = connect_from(OTHER_CLIENT, grpc).await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .timeout(PATIENCE)
        .connect_with_connector(connector)
        .await
        .expect("the gRPC port takes another client");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("the gRPC port answers another client")
        .into_inner()
        .status
}

/// The value of a metric series in Prometheus text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Opens `count` connections from 127.0.0.1 that never say a word; the
/// server may take them or turn them away.
async fn half_open_connections(server: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        if let Ok(stream) = TcpStream::connect(server).await {
            streams.push(stream);
        }
    }
    streams
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

// Multi-threaded: thousands of sockets on the client side, and the station's
// answers are awaited while they are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_open_connections_from_one_address_leave_the_station_answering() {
    // The test's own end holds 2,000 sockets.
    onair_kit::listener::raise_open_files_limit();
    // A soft limit of 512 that the station raises to its hard limit of
    // 1,024: below what 2,000 connections would need.
    let mut station = spawn_limited(
        "512:1024",
        &[
            ("ONAIR_SERVER_MAX_CONNECTIONS_PER_IP", "100"),
            ("ONAIR_SERVER_MAX_CONNECTIONS", "300"),
            ("ONAIR_SERVER_HEADER_TIMEOUT_MS", "3000"),
            ("ONAIR_GATEWAY_RATE_LIMIT_PER_IP", "0"),
        ],
    );
    let (http, grpc) = station.addresses().await;
    // The line comes as the servers start, just after "listening".
    let raised = assert_eventually!(
        station.log_line("raised the open-files limit"),
        "the station says it raised the open-files limit"
    );
    assert_eq!(raised["was"], 512, "{raised}");
    assert_eq!(raised["soft"], 1024, "{raised}");
    assert_eq!(raised["hard"], 1024, "{raised}");

    let mut held = half_open_connections(http, 1000).await;
    held.extend(half_open_connections(grpc, 1000).await);

    assert_eq!(healthz_from_another_client(http).await, 200);
    assert_eq!(grpc_health_from_another_client(grpc).await, SERVING);

    // All but 100 on each port were turned away at once, and counted.
    let metrics_client = reqwest::Client::builder()
        .local_address(OTHER_CLIENT)
        .build()
        .unwrap();
    assert_eventually!(
        async {
            let text = metrics_client
                .get(format!("http://{http}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let http_refused = metric(
                &text,
                "onair_server_connections_refused_total{port=\"http\",cap=\"per_ip\"}",
            );
            let grpc_refused = metric(
                &text,
                "onair_server_connections_refused_total{port=\"grpc\",cap=\"per_ip\"}",
            );
            (http_refused == 900 && grpc_refused == 900).then_some(text)
        }
        .await,
        "900 connections a port are refused"
    );

    // The ones it took are closed once the header timeout passes.
    for stream in &mut held {
        read_until_closed(stream).await;
    }
    drop(held);
    assert!(station.running());
    assert_eq!(healthz_from_another_client(http).await, 200);
    assert_eq!(grpc_health_from_another_client(grpc).await, SERVING);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_station_waits_and_recovers() {
    onair_kit::listener::raise_open_files_limit();
    // Caps far above what 256 file descriptors hold: the station runs out
    // of them, and must neither spin nor stop.
    let mut station = spawn_limited(
        "256:256",
        &[
            ("ONAIR_SERVER_MAX_CONNECTIONS_PER_IP", "5000"),
            ("ONAIR_SERVER_MAX_CONNECTIONS", "5000"),
            ("ONAIR_SERVER_HEADER_TIMEOUT_MS", "1000"),
            ("ONAIR_GATEWAY_RATE_LIMIT_PER_IP", "0"),
        ],
    );
    let (http, _grpc) = station.addresses().await;
    let started = std::time::Instant::now();
    assert_eventually!(
        station.logs().into_iter().find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("the open-files limit is below"))
        }),
        "the station warns that its caps exceed the open-files limit"
    );

    let mut held = half_open_connections(http, 1000).await;
    let cannot_accept = assert_eventually!(
        station.logs().into_iter().find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("cannot accept connections"))
        }),
        "the station says it cannot accept"
    );
    assert_eq!(cannot_accept["port"], "http", "{cannot_accept}");

    // The station closes the silent connections as their header timeouts
    // pass, takes the waiting ones, and answers another client.
    assert_eq!(healthz_from_another_client(http).await, 200);
    for stream in &mut held {
        read_until_closed(stream).await;
    }
    drop(held);
    assert!(station.running());
    assert_eq!(healthz_from_another_client(http).await, 200);

    // Failed accepts are logged once per interval (ten seconds), not once
    // each.
    let logged = station
        .logs()
        .into_iter()
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("cannot accept connections"))
        })
        .count() as u64;
    let intervals = started.elapsed().as_secs() / 10 + 1;
    assert!(
        logged <= intervals,
        "{logged} lines in {intervals} intervals"
    );
}
