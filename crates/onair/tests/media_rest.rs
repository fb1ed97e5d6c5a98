//! The media service through the gateway: the schedule over REST, with
//! schedule changes streamed as server-sent events and NDJSON.

use std::time::Duration;

use onair_testkit::on_both_backends;
use onair_testkit::{Backend, TestStation, send};
use serde_json::{Value, json};

on_both_backends!(an_operator_builds_a_schedule_that_viewers_read);

async fn an_operator_builds_a_schedule_that_viewers_read(backend: Backend) {
    let station = TestStation::start(backend).await;
    let operator = station.operator_key.clone();
    let post = reqwest::Method::POST;
    let (status, channel) = send(
        &station,
        post.clone(),
        "/v1/channels",
        Some(&operator),
        Some(json!({"id": "news", "number": 1, "name": "News", "group": "News"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    assert_eq!(channel["id"], "news");

    let (status, program) = send(
        &station,
        post.clone(),
        "/v1/programs",
        Some(&operator),
        Some(json!({"title": "Morning News", "duration": "1800s"})),
    )
    .await;
    assert_eq!(status, 201, "{program}");
    let program_id = program["id"].as_str().unwrap().to_owned();

    let start = "2030-01-01T06:00:00Z";
    let slot_body =
        json!({"programId": program_id, "startTime": start, "endTime": "2030-01-01T06:30:00Z"});
    let (status, slot) = send(
        &station,
        post.clone(),
        "/v1/channels/news/slots",
        Some(&operator),
        Some(slot_body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{slot}");

    // The same time again overlaps: refused, naming the slot it collides with.
    let (status, refused) = send(
        &station,
        post.clone(),
        "/v1/channels/news/slots",
        Some(&operator),
        Some(slot_body),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        onair_testkit::error_message(&refused).contains(slot["id"].as_str().unwrap()),
        "{refused}"
    );

    // Anyone reads the timetable, for one channel or all.
    let path =
        "/v1/channels/news/timetable?startTime=2030-01-01T00:00:00Z&endTime=2030-01-02T00:00:00Z";
    let (status, timetable) = send(&station, reqwest::Method::GET, path, None, None).await;
    assert_eq!(status, 200, "{timetable}");
    let entries = &timetable["channels"][0]["entries"];
    assert_eq!(entries[0]["program"]["title"], "Morning News");
    let path = "/v1/timetable?startTime=2030-01-01T00:00:00Z&endTime=2030-01-02T00:00:00Z";
    let (status, all) = send(&station, reqwest::Method::GET, path, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(all["channels"].as_array().unwrap().len(), 1);

    // Bad input: a viewer's write, an unknown id, a time that doesn't parse.
    let (_, viewer) = send(&station, post.clone(), "/v1/users", None, Some(json!({}))).await;
    let token = viewer["accessToken"].as_str().unwrap();
    let (status, _) = send(
        &station,
        post.clone(),
        "/v1/channels",
        Some(token),
        Some(json!({"name": "Mine"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &station,
        reqwest::Method::GET,
        "/v1/channels/nowhere",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = send(
        &station,
        reqwest::Method::GET,
        "/v1/timetable?startTime=yesterday",
        None,
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    station.stop().await;
}

/// `WatchSchedule` is a server stream: over REST it is SSE on request and
/// NDJSON otherwise, each event arriving as the schedule changes.
#[tokio::test]
async fn schedule_changes_stream_as_sse_and_ndjson() {
    let station = TestStation::start(Backend::Sqlite).await;
    let operator = station.operator_key.clone();
    let (status, _) = send(
        &station,
        reqwest::Method::POST,
        "/v1/channels",
        Some(&operator),
        Some(json!({"id": "sports", "number": 2, "name": "Sports"})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, program) = send(
        &station,
        reqwest::Method::POST,
        "/v1/programs",
        Some(&operator),
        Some(json!({"title": "Match", "duration": "600s"})),
    )
    .await;
    let program_id = program["id"].as_str().unwrap().to_owned();

    let client = reqwest::Client::new();
    let url = station.http_url("/v1/schedule:watch?channelId=sports");
    let sse = client
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let ndjson = client.get(&url).send().await.unwrap();
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");

    // The watches are open once their headers arrive; now change the schedule.
    let (status, slot) = send(
        &station,
        reqwest::Method::POST,
        "/v1/channels/sports/slots",
        Some(&operator),
        Some(json!({"programId": program_id, "startTime": "2030-02-01T20:00:00Z", "endTime": "2030-02-01T20:10:00Z"})),
    )
    .await;
    assert_eq!(status, 201, "{slot}");

    let first_chunk = |mut response: reqwest::Response| async move {
        let mut text = String::new();
        while !text.contains('\n') {
            let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream stays open");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    };
    let event = first_chunk(sse).await;
    let data = event
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("a data line");
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["kind"], "SLOT_CREATED", "{data}");
    assert_eq!(data["slot"]["id"], slot["id"]);

    let line = first_chunk(ndjson).await;
    let line: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(line["result"]["kind"], "SLOT_CREATED", "{line}");
    station.stop().await;
}
