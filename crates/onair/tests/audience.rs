//! The audience as a viewer and an app see it: counts from live sockets,
//! heartbeats and viewer sessions, against the 15 s bound on the station's
//! own (injected) clock; each slot's peak and minutes kept after it; the
//! `viewers` events on a live socket. SQLite stations count in memory;
//! PostgreSQL stations use NATS and count in Redis, as a scaled-out station
//! does.

use std::time::Duration;

use futures::StreamExt as _;
use onair_proto::audience::v1 as pb;
use onair_proto::audience::v1::audience_service_client::AudienceServiceClient;
use onair_testkit::on_both_backends;
use onair_testkit::{
    Backend, PATIENCE, Socket, TestStation, assert_eventually, authorized, connect, create_channel,
    create_program, create_viewer, live_url, next_events_with_viewers, schedule_slot, send,
};
use reqwest::Method;
use serde_json::Value;

/// Settings that let a test see counts change soon after the clock moves:
/// the count and the renewals run often (in real time); how long a mark
/// lasts stays the default 15 s, on the station's clock.
const QUICK: [(&str, &str); 2] = [
    ("audience.count_interval_ms", "100"),
    ("presence.refresh_ms", "100"),
];

async fn station(backend: Backend) -> TestStation {
    let prefix = onair_testkit::unique_name("audience");
    let nats = onair_testkit::nats_url();
    let redis = onair_testkit::redis_url();
    let mut extra: Vec<(&str, &str)> = QUICK.to_vec();
    if backend == Backend::Postgres {
        extra.extend([
            ("nats_url", nats.as_str()),
            ("redis_url", redis.as_str()),
            ("bus_prefix", prefix.as_str()),
        ]);
    }
    TestStation::start_with(backend, &extra).await
}

/// Channel `news` with an hour-long slot on air from a minute ago; returns
/// the slot's id.
async fn on_air(station: &TestStation) -> String {
    create_channel(station, "news").await;
    let program = create_program(station, "The News", "3600s").await;
    let start = (station.clock.now_ms() / 1000 - 60) * 1000;
    schedule_slot(station, "news", &program, start, start + 3_600_000).await
}

async fn viewers(station: &TestStation, channel: &str) -> Value {
    let (status, body) = send(
        station,
        Method::GET,
        &format!("/v1/channels/{channel}/viewers"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The count, as the JSON mapping writes an int64 (a string; absent is 0).
fn count_of(body: &Value, field: &str) -> u64 {
    match &body[field] {
        Value::Null => 0,
        Value::String(text) => text.parse().expect("a count"),
        other => other.as_u64().expect("a count"),
    }
}

async fn count_is(station: &TestStation, expected: u64) -> bool {
    count_of(&viewers(station, "news").await, "count") == expected
}

/// Reads the socket until a `viewers` event says `count`.
async fn viewers_event(socket: &mut Socket, count: u64) -> Value {
    loop {
        let events = next_events_with_viewers(socket)
            .await
            .expect("the socket stays open");
        for event in events {
            if event["type"] == "viewers" && count_of(&event["data"], "count") == count {
                return event;
            }
        }
    }
}

/// Whether the station's `/metrics` has the series at `value`.
async fn metric_is(station: &TestStation, series: &str, value: i64) -> bool {
    let text = onair_testkit::metrics_text(station).await;
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .any(|rest| rest.trim().parse::<i64>() == Ok(value))
}

async fn heartbeat(station: &TestStation, token: Option<&str>, channel: &str) -> (u16, Value) {
    send(
        station,
        Method::POST,
        &format!("/v1/channels/{channel}/heartbeat"),
        token,
        Some(serde_json::json!({})),
    )
    .await
}

on_both_backends!(
    sockets_count_each_viewer_once_while_open,
    heartbeats_count_until_one_is_missed,
    a_slots_audience_is_kept_after_it_ends,
    viewer_sessions_stream_counts_from_a_stock_grpc_client,
);

async fn sockets_count_each_viewer_once_while_open(backend: Backend) {
    let station = station(backend).await;
    let slot = on_air(&station).await;
    assert!(count_is(&station, 0).await);

    // One signed-in viewer with two tabs: a WebSocket (a browser's, with
    // the token in the query) and an SSE stream (an app's, with the header).
    let ann = create_viewer(&station, "Ann").await;
    let token = ann["accessToken"].as_str().unwrap();
    let mut websocket = connect(&format!(
        "{}?access_token={token}",
        live_url(&station, "news", None)
    ))
    .await;
    let sse = reqwest::Client::new()
        .get(station.http_url("/v1/channels/news/live"))
        .header("accept", "text/event-stream")
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status().as_u16(), 200);
    assert_eventually!(count_is(&station, 1).await, "Ann counts once");

    // An anonymous connection counts on its own.
    let mut guest = connect(&live_url(&station, "news", None)).await;
    assert_eventually!(count_is(&station, 2).await, "the guest counts too");
    let event = viewers_event(&mut websocket, 2).await;
    assert_eq!(event["data"]["channelId"], "news", "{event}");
    assert_eq!(event["data"]["slotId"], slot.as_str(), "{event}");
    assert_eq!(count_of(&event["data"], "peak"), 2, "{event}");
    // Nothing in the event says who watches.
    let text = event.to_string();
    assert!(
        !text.contains(ann["user"]["id"].as_str().unwrap()),
        "{text}"
    );

    // The guest leaves: gone once 15 s pass on the station's clock, while
    // Ann's open tabs keep her counted.
    guest.close(None).await.unwrap();
    drop(guest);
    assert_eventually!(
        metric_is(
            &station,
            "onair_live_connections{transport=\"websocket\"}",
            1
        )
        .await,
        "the station sees the guest go"
    );
    station.clock.advance(Duration::from_secs(15));
    assert_eventually!(
        count_is(&station, 1).await,
        "the guest drops out within 15 s"
    );
    viewers_event(&mut websocket, 1).await;
    let body = viewers(&station, "news").await;
    assert_eq!(count_of(&body, "peak"), 2, "{body}");

    // A token that does not verify is refused, as a header's would be.
    let refused = tokio_tungstenite::connect_async(format!(
        "{}?access_token=not-a-token",
        live_url(&station, "news", None)
    ))
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
        }
        other => panic!("a bad access_token must be refused, not {other:?}"),
    }

    // The unknown and the malformed get clear errors.
    let (status, body) = send(
        &station,
        Method::GET,
        "/v1/channels/nowhere/viewers",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("nowhere"),
        "{body}"
    );
    drop(sse);
    station.stop().await;
}

async fn heartbeats_count_until_one_is_missed(backend: Backend) {
    let station = station(backend).await;
    on_air(&station).await;
    let bob = create_viewer(&station, "Bob").await;
    let token = bob["accessToken"].as_str().unwrap();

    let (status, body) = heartbeat(&station, Some(token), "news").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count_of(&body, "count"), 1, "{body}");
    // Heartbeats of one viewer count once.
    let (status, body) = heartbeat(&station, Some(token), "news").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(count_of(&body, "count"), 1, "{body}");

    // A heartbeat counts for the 30 s interval and the 15 s after it: at
    // 44 s Bob still counts; at 45 s, a missed heartbeat and 15 s later, he
    // is gone.
    station.clock.advance(Duration::from_secs(44));
    assert!(count_is(&station, 1).await);
    station.clock.advance(Duration::from_secs(1));
    assert!(count_is(&station, 0).await);

    // Without an account a heartbeat can't be told from the next one.
    let (status, body) = heartbeat(&station, None, "news").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = heartbeat(&station, Some(token), "nowhere").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("nowhere"),
        "{body}"
    );

    // The guide reads every channel's count in one call.
    create_channel_numbered(&station, "sports", 2).await;
    heartbeat(&station, Some(token), "sports").await;
    let (status, body) = send(
        &station,
        Method::GET,
        "/v1/viewers:batchGet?channelIds=news&channelIds=sports",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let counts = body["counts"].as_array().unwrap();
    let pairs: Vec<(&str, u64)> = counts
        .iter()
        .map(|count| {
            (
                count["channelId"].as_str().unwrap(),
                count_of(count, "count"),
            )
        })
        .collect();
    assert_eq!(pairs, [("news", 0), ("sports", 1)], "{body}");
    let (status, body) = send(&station, Method::GET, "/v1/viewers:batchGet", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["counts"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) = send(
        &station,
        Method::GET,
        "/v1/viewers:batchGet?channelIds=news&channelIds=nowhere",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    station.stop().await;
}

async fn create_channel_numbered(station: &TestStation, id: &str, number: i32) {
    let (status, body) = send(
        station,
        Method::POST,
        "/v1/channels",
        Some(&station.operator_key),
        Some(serde_json::json!({"id": id, "number": number, "name": id})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

async fn a_slots_audience_is_kept_after_it_ends(backend: Backend) {
    let station = station(backend).await;
    let slot = on_air(&station).await;
    let mut tokens = Vec::new();
    for name in ["Ann", "Bob", "Cat"] {
        let viewer = create_viewer(&station, name).await;
        tokens.push(viewer["accessToken"].as_str().unwrap().to_owned());
    }
    for token in &tokens {
        heartbeat(&station, Some(token), "news").await;
    }
    let path = format!("/v1/slots/{slot}/viewers");
    let slot_viewers = |station| send(station, Method::GET, &path, None, None);
    assert_eventually!(
        {
            let (_, body) = slot_viewers(&station).await;
            count_of(&body, "peak") == 3
        },
        "the slot's peak is recorded"
    );
    // Two minutes later only one is still watching.
    station.clock.advance(Duration::from_secs(120));
    heartbeat(&station, Some(&tokens[0]), "news").await;
    assert_eventually!(
        {
            let (_, body) = slot_viewers(&station).await;
            body["minutes"].as_array().is_some_and(|minutes| {
                minutes
                    .last()
                    .is_some_and(|minute| count_of(minute, "viewers") == 1)
            })
        },
        "the latest minute has one viewer"
    );

    // Long after the slot ends, its figures are all still there.
    station.clock.advance(Duration::from_secs(3 * 3600));
    let (status, body) = slot_viewers(&station).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channelId"], "news", "{body}");
    assert_eq!(count_of(&body, "peak"), 3, "{body}");
    assert!(body["peakTime"].is_string(), "{body}");
    let minutes = body["minutes"].as_array().unwrap();
    assert!(minutes.len() >= 2, "{body}");
    assert_eq!(count_of(&minutes[0], "viewers"), 3, "{body}");
    assert_eq!(count_of(minutes.last().unwrap(), "viewers"), 1, "{body}");

    // A slot that does not exist has no audience to show.
    let (status, body) = send(
        &station,
        Method::GET,
        "/v1/slots/nowhere/viewers",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    station.stop().await;
}

async fn viewer_sessions_stream_counts_from_a_stock_grpc_client(backend: Backend) {
    let station = station(backend).await;
    on_air(&station).await;
    let ann = create_viewer(&station, "Ann").await;
    let token = ann["accessToken"].as_str().unwrap().to_owned();
    let mut client = AudienceServiceClient::new(station.channel().await);

    // Heartbeats up, counts down.
    let (up, heartbeats) = tokio::sync::mpsc::channel(4);
    let heartbeats = tokio_stream::wrappers::ReceiverStream::new(heartbeats);
    let mut counts = client
        .viewer_session(authorized(heartbeats, &token))
        .await
        .unwrap()
        .into_inner();
    up.send(pb::HeartbeatRequest {
        channel_id: "news".to_owned(),
    })
    .await
    .unwrap();
    let first = next_count(&mut counts).await;
    assert_eq!((first.channel_id.as_str(), first.count), ("news", 1));

    // An anonymous session joins: the first session is told.
    let (guest_up, guest_heartbeats) = tokio::sync::mpsc::channel(4);
    let mut guest_counts = client
        .viewer_session(tokio_stream::wrappers::ReceiverStream::new(
            guest_heartbeats,
        ))
        .await
        .unwrap()
        .into_inner();
    guest_up
        .send(pb::HeartbeatRequest {
            channel_id: "news".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(next_count(&mut guest_counts).await.count, 2);
    assert_eq!(next_count(&mut counts).await.count, 2);

    // The guest closes its session; once 15 s pass it is gone.
    drop(guest_up);
    drop(guest_counts);
    assert_eventually!(
        metric_is(&station, "onair_audience_sessions", 1).await,
        "the station sees the guest's session end"
    );
    station.clock.advance(Duration::from_secs(15));
    let count = next_count(&mut counts).await;
    assert_eq!((count.count, count.peak), (1, 2));

    // A session naming a channel that does not exist ends with the reason.
    let (bad_up, bad_heartbeats) = tokio::sync::mpsc::channel(4);
    let mut bad_counts = client
        .viewer_session(tokio_stream::wrappers::ReceiverStream::new(bad_heartbeats))
        .await
        .unwrap()
        .into_inner();
    bad_up
        .send(pb::HeartbeatRequest {
            channel_id: "nowhere".to_owned(),
        })
        .await
        .unwrap();
    let status = tokio::time::timeout(PATIENCE, bad_counts.next())
        .await
        .expect("an answer")
        .expect("an item")
        .expect_err("a channel that does not exist ends the session");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    drop(up);
    station.stop().await;
}

async fn next_count(counts: &mut tonic::Streaming<pb::ViewerCount>) -> pb::ViewerCount {
    tokio::time::timeout(PATIENCE, counts.message())
        .await
        .expect("a count within the patience")
        .expect("the session stays open")
        .expect("a count")
}
