//! The audience of a station split into processes: two gateways share
//! viewer presence through Redis, so the count is exact across them, and
//! the viewers of a gateway that dies drop out once their marks run out
//! (the presence ttl, 15 s by default). Real binaries on PostgreSQL, NATS
//! and Redis, each run under its own database, bus prefix and keys.

use std::net::SocketAddr;
use std::process::Command;

use onair_testkit::{OnairProcess, assert_eventually};

fn onair(args: &[&str], prefix: &str) -> OnairProcess {
    OnairProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_onair"))
            .args(args)
            .env("ONAIR_BUS_PREFIX", prefix)
            .env("ONAIR_AUDIENCE_COUNT_INTERVAL_MS", "200")
            .env("ONAIR_LOG_LEVEL", "info,sqlx=warn"),
        "start onair",
    )
}

async fn viewers(http: SocketAddr) -> Option<u64> {
    let body: serde_json::Value = reqwest::get(format!("http://{http}/v1/channels/news/viewers"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    match &body["count"] {
        serde_json::Value::Null => Some(0),
        count => count.as_str()?.parse().ok(),
    }
}

async fn ready(http: SocketAddr) -> bool {
    reqwest::get(format!("http://{http}/readyz"))
        .await
        .is_ok_and(|response| response.status().as_u16() == 200)
}

async fn watch(http: SocketAddr) -> onair_testkit::Socket {
    onair_testkit::connect(&format!("ws://{http}/v1/channels/news/live")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_count_one_audience() {
    let database = onair_testkit::TestDatabase::create().await;
    let prefix = onair_testkit::unique_name("audience");
    let nats = onair_testkit::nats_url();
    let redis = onair_testkit::redis_url();
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();

    // The services and a gateway in one process.
    let first = onair(
        &[
            "serve",
            "--roles",
            "user,media,comment,audience,gateway",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            first_dir.path().to_str().unwrap(),
            "--database-url",
            &database.url,
            "--nats-url",
            &nats,
            "--redis-url",
            &redis,
        ],
        &prefix,
    );
    let (first_http, first_grpc) = first.addresses().await;
    // A second gateway alone, reaching the services over gRPC.
    let service = format!("http://{first_grpc}");
    let peers = format!("user={service},media={service},comment={service},audience={service}");
    let mut second = onair(
        &[
            "serve",
            "--roles",
            "gateway",
            "--peers",
            &peers,
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            second_dir.path().to_str().unwrap(),
            "--nats-url",
            &nats,
            "--redis-url",
            &redis,
        ],
        &prefix,
    );
    let (second_http, _) = second.addresses().await;
    for http in [first_http, second_http] {
        assert_eventually!(ready(http).await, "both processes are ready");
    }

    let operator_key = onair_testkit::read_operator_key(&first_dir.path().join("operator.key"));
    let created = reqwest::Client::new()
        .post(format!("http://{first_http}/v1/channels"))
        .bearer_auth(&operator_key)
        .json(&serde_json::json!({"id": "news", "number": 1, "name": "News"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);

    // Two viewers on the first gateway, three on the second: five, read
    // through either.
    let mut on_first = Vec::new();
    for _ in 0..2 {
        on_first.push(watch(first_http).await);
    }
    let mut on_second = Vec::new();
    for _ in 0..3 {
        on_second.push(watch(second_http).await);
    }
    for http in [first_http, second_http] {
        assert_eventually!(
            viewers(http).await == Some(5),
            "five viewers across both gateways"
        );
    }

    // The second gateway dies without a word: its viewers drop out once
    // their marks run out, and the first gateway's stay.
    second.kill();
    drop(on_second);
    assert_eventually!(
        viewers(first_http).await == Some(2),
        "the dead gateway's viewers drop out"
    );
    drop(on_first);
    drop(first);
}
