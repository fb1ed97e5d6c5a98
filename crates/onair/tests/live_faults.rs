//! Live delivery on a bad day: the message broker restarts while comments
//! flow and viewers listen, and the station restarts while viewers are
//! connected. A viewer gets every event, or is told in so many words that it
//! may have missed some; it never sits on a silent gap.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use onair_testkit::assert_eventually;
use onair_testkit::{
    Backend, NatsServer, TestStation, connect, create_channel, create_program, live_url,
    next_events, publish_comment, schedule_slot, send,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// What one live subscriber received, in order.
#[derive(Default)]
struct Seen {
    /// Ids of the comments, in the order they came.
    comment_ids: Vec<String>,
    /// The `reset` events.
    resets: Vec<Value>,
    /// Every event's type, in order, to see where the resets fell.
    types: Vec<String>,
}

impl Seen {
    fn record(&mut self, event: &Value) {
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "comment" => {
                if let Some(id) = event["data"]["comment"]["id"].as_str() {
                    self.comment_ids.push(id.to_owned());
                }
            }
            "reset" => self.resets.push(event.clone()),
            _ => {}
        }
        self.types.push(kind);
    }
}

type Shared = Arc<Mutex<Seen>>;

fn seen(shared: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    shared.lock().unwrap()
}

/// Reads a WebSocket viewer's events into `Seen` until the socket closes.
fn watch_websocket(mut socket: onair_testkit::Socket) -> (Shared, tokio::task::JoinHandle<()>) {
    let shared = Shared::default();
    let recording = shared.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let events: Value = serde_json::from_str(text.as_str()).expect("JSON");
                for event in events.as_array().expect("an array of events") {
                    seen(&recording).record(event);
                }
            }
        }
    });
    (shared, task)
}

/// Reads an SSE viewer's events into `Seen` until the stream ends.
fn watch_sse(response: reqwest::Response) -> (Shared, tokio::task::JoinHandle<()>) {
    let shared = Shared::default();
    let recording = shared.clone();
    let task = tokio::spawn(async move {
        let mut response = response;
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: ")) {
                    let event: Value = serde_json::from_str(data).expect("JSON");
                    seen(&recording).record(&event);
                }
            }
        }
    });
    (shared, task)
}

async fn open_sse(
    station: &TestStation,
    query: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(station.http_url(&format!("/v1/channels/news/live{query}")))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = request.send().await.expect("the SSE stream opens");
    assert_eq!(response.status().as_u16(), 200);
    response
}

/// Channel `news` with a program on air now; returns the slot's id.
async fn on_air(station: &TestStation) -> String {
    create_channel(station, "news").await;
    let program = create_program(station, "The News", "3600s").await;
    let start = (station.clock.now_ms() / 1000 - 60) * 1000;
    schedule_slot(station, "news", &program, start, start + 3_600_000).await
}

/// Posts a comment as the operator; its id if it was acknowledged as
/// published.
async fn post(station: &TestStation, body: &str) -> Option<String> {
    let operator = station.operator_key.clone();
    let (status, answer) = send(
        station,
        Method::POST,
        "/v1/channels/news/comments",
        Some(&operator),
        Some(json!({ "body": body })),
    )
    .await;
    let published = status == 201
        && answer["status"]
            .as_str()
            .is_some_and(|status| status.ends_with("PUBLISHED"));
    published.then(|| answer["id"].as_str().unwrap().to_owned())
}

async fn readyz(station: &TestStation) -> (u16, String) {
    let response = reqwest::get(station.http_url("/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Every comment id in the slot's replay.
async fn replayed(station: &TestStation, slot: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let mut token = String::new();
    loop {
        let (status, page) = send(
            station,
            Method::GET,
            &format!("/v1/slots/{slot}/comments?pageSize=100&pageToken={token}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for comment in page["comments"].as_array().into_iter().flatten() {
            ids.insert(comment["id"].as_str().unwrap().to_owned());
        }
        match page["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_comments_survive_a_nats_restart() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let prefix = onair_testkit::unique_name("natsrestart");
    let station = TestStation::start_with(
        Backend::Postgres,
        &[
            ("nats_url", url.as_str()),
            ("bus_prefix", prefix.as_str()),
            ("gateway.live_check_ms", "100"),
        ],
    )
    .await;
    let slot = on_air(&station).await;

    let mut socket = connect(&live_url(&station, "news", None)).await;
    let opening = next_events(&mut socket).await.expect("a ready event");
    assert_eq!(opening[0]["type"], "ready");
    let (websocket, websocket_task) = watch_websocket(socket);
    let (sse, sse_task) = watch_sse(open_sse(&station, "", None).await);
    let viewers = [("websocket", &websocket), ("sse", &sse)];

    let mut acknowledged = Vec::new();
    for index in 0..10 {
        acknowledged.extend(post(&station, &format!("before the restart {index}")).await);
    }
    assert_eq!(acknowledged.len(), 10, "every comment is published");
    for (name, viewer) in viewers {
        assert_eventually!(
            seen(viewer).comment_ids.len() >= 10,
            "the {name} viewer gets the first comments"
        );
    }
    assert_eq!(readyz(&station).await.0, 200);

    nats.stop().await;
    assert_eventually!(
        {
            let (status, body) = readyz(&station).await;
            status == 503 && body.contains("live")
        },
        "/readyz says live delivery is down"
    );
    for index in 0..5 {
        acknowledged.extend(post(&station, &format!("while nats is down {index}")).await);
    }

    nats.start_again();
    assert_eventually!(
        readyz(&station).await.0 == 200,
        "/readyz recovers when nats is back"
    );
    let mut after_return = Vec::new();
    for index in 0..10 {
        after_return.extend(post(&station, &format!("after the restart {index}")).await);
    }
    assert_eq!(after_return.len(), 10, "posting works again");
    acknowledged.extend(after_return.iter().cloned());

    for (name, viewer) in viewers {
        assert_eventually!(
            {
                let seen = seen(viewer);
                after_return.iter().all(|id| seen.comment_ids.contains(id))
            },
            "the {name} viewer gets the comments posted after nats returned"
        );
    }
    let stored = replayed(&station, &slot).await;
    for (name, viewer) in viewers {
        let seen = seen(viewer);
        let missed: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !seen.comment_ids.contains(id))
            .collect();
        if missed.is_empty() {
            continue;
        }
        // What it missed, it was told of, before what came after, and the
        // replay that a reset sends it to has it.
        assert!(
            !seen.resets.is_empty(),
            "the {name} viewer missed {missed:?} and was not told"
        );
        let reset_at = seen.types.iter().position(|kind| kind == "reset").unwrap();
        let first_after = seen
            .comment_ids
            .iter()
            .position(|id| id == &after_return[0])
            .unwrap();
        let comments_before_reset = seen.types[..reset_at]
            .iter()
            .filter(|kind| *kind == "comment")
            .count();
        assert!(
            comments_before_reset <= first_after,
            "the {name} viewer was told of the gap before the comments after it"
        );
        assert!(
            seen.resets
                .iter()
                .all(|reset| ["interrupted", "epoch"].contains(&reset["reason"].as_str().unwrap())),
            "{:?}",
            seen.resets
        );
        for id in missed {
            assert!(stored.contains(id), "acknowledged comment {id} is stored");
        }
    }
    websocket_task.abort();
    sse_task.abort();
    station.stop().await;
}

/// The `ready` event's epoch and offset.
fn ready_position(events: &[Value]) -> (String, u64) {
    assert_eq!(events[0]["type"], "ready", "{events:?}");
    (
        events[0]["epoch"].as_str().expect("an epoch").to_owned(),
        events[0]["offset"].as_u64().expect("an offset"),
    )
}

/// Reads events until one at `offset` has come.
async fn received_up_to(socket: &mut onair_testkit::Socket, offset: u64) {
    loop {
        let events = next_events(socket).await.expect("events");
        if events
            .iter()
            .any(|event| event["offset"].as_u64() == Some(offset))
        {
            return;
        }
    }
}

/// Reads events until the server's `closing` goodbye; its epoch and offset.
async fn closing_position(socket: &mut onair_testkit::Socket) -> (String, u64) {
    loop {
        let events = next_events(socket).await.expect("events, then closing");
        if let Some(closing) = events.iter().find(|event| event["type"] == "closing") {
            return (
                closing["epoch"].as_str().unwrap().to_owned(),
                closing["offset"].as_u64().unwrap(),
            );
        }
    }
}

#[tokio::test]
async fn a_resume_after_the_embedded_station_restarts_is_told_the_epoch_changed() {
    let station = TestStation::start(Backend::Sqlite).await;
    create_channel(&station, "news").await;
    let mut socket = connect(&live_url(&station, "news", None)).await;
    let (first_epoch, _) = ready_position(&next_events(&mut socket).await.unwrap());
    let mut newest = 0;
    for index in 0..5 {
        newest = publish_comment(&station, index, 10).await;
    }
    received_up_to(&mut socket, newest).await;
    let dir = station.stop().await;
    let (epoch, last) = closing_position(&mut socket).await;
    assert_eq!(epoch, first_epoch);
    assert_eq!(last, newest, "the goodbye says where the viewer is");

    let station = TestStation::start_in(Backend::Sqlite, dir).await;
    let first = publish_comment(&station, 5, 10).await;
    let second = publish_comment(&station, 6, 10).await;
    assert!(second < last, "the new epoch's offsets start over");

    // With the epoch it was given: told the stream started over, then live.
    let resume = format!(
        "{}?after={last}&epoch={epoch}",
        live_url(&station, "news", None)
    );
    let mut resumed = connect(&resume).await;
    let opening = next_events(&mut resumed).await.unwrap();
    let (new_epoch, from) = ready_position(&opening);
    assert_ne!(
        new_epoch, epoch,
        "a restarted embedded station has a new epoch"
    );
    assert_eq!(from, second, "it starts after the newest event");
    assert_eq!(opening[1]["type"], "reset", "{opening:?}");
    assert_eq!(opening[1]["reason"], "epoch");
    assert_eq!(opening[1]["epoch"], new_epoch.as_str());
    let offset = publish_comment(&station, 7, 10).await;
    let next = next_events(&mut resumed).await.unwrap();
    assert_eq!(next[0]["offset"].as_u64(), Some(offset));

    // Without an epoch, an offset the new stream has not reached.
    let mut ahead = connect(&live_url(&station, "news", Some(last))).await;
    let opening = next_events(&mut ahead).await.unwrap();
    assert_eq!(opening[1]["type"], "reset", "{opening:?}");
    assert_eq!(opening[1]["reason"], "ahead");

    // A browser's SSE reconnect sends the last id it saw: EPOCH:OFFSET.
    let (sse, sse_task) = watch_sse(open_sse(&station, "", Some(&format!("{epoch}:{last}"))).await);
    assert_eventually!(
        seen(&sse).resets.len() == 1,
        "the SSE viewer is told the epoch changed"
    );
    assert_eq!(seen(&sse).types[..2], ["ready", "reset"]);
    assert_eq!(seen(&sse).resets[0]["reason"], "epoch");

    // A resume within the new epoch gets what it missed, with no reset.
    let mut within = connect(&format!(
        "{}?after={}&epoch={new_epoch}",
        live_url(&station, "news", None),
        first - 1
    ))
    .await;
    let opening = next_events(&mut within).await.unwrap();
    assert_eq!(opening.len(), 1, "ready alone: {opening:?}");
    let backlog = next_events(&mut within).await.unwrap();
    let offsets: Vec<u64> = backlog
        .iter()
        .filter_map(|event| event["offset"].as_u64())
        .collect();
    assert_eq!(offsets, [first, second, offset]);
    sse_task.abort();
    station.stop().await;
}

#[tokio::test]
async fn a_resume_after_the_station_restarts_on_nats_gets_every_event_after_it() {
    let nats = onair_testkit::nats_url();
    let prefix = onair_testkit::unique_name("onairrestart");
    let settings = [("nats_url", nats.as_str()), ("bus_prefix", prefix.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let station = TestStation::start_configured_in(Backend::Sqlite, dir, &settings).await;
    create_channel(&station, "news").await;
    let mut socket = connect(&live_url(&station, "news", None)).await;
    let (first_epoch, _) = ready_position(&next_events(&mut socket).await.unwrap());
    let mut published = Vec::new();
    for index in 0..5 {
        published.push(publish_comment(&station, index, 10).await);
    }
    received_up_to(&mut socket, published[4]).await;
    let dir = station.stop().await;
    let (epoch, last) = closing_position(&mut socket).await;
    assert_eq!((epoch.as_str(), last), (first_epoch.as_str(), published[4]));

    // The broker kept the live stream: its epoch and offsets go on.
    let station = TestStation::start_configured_in(Backend::Sqlite, dir, &settings).await;
    let meanwhile = [
        publish_comment(&station, 5, 10).await,
        publish_comment(&station, 6, 10).await,
    ];
    let resume = format!(
        "{}?after={last}&epoch={epoch}",
        live_url(&station, "news", None)
    );
    let mut resumed = connect(&resume).await;
    let opening = next_events(&mut resumed).await.unwrap();
    assert_eq!(opening.len(), 1, "no reset: {opening:?}");
    assert_eq!(ready_position(&opening).0, epoch);
    let mut offsets = Vec::new();
    while offsets.len() < meanwhile.len() {
        let events = next_events(&mut resumed).await.unwrap();
        offsets.extend(events.iter().filter_map(|event| event["offset"].as_u64()));
    }
    assert_eq!(
        offsets, meanwhile,
        "every event after the resume offset, in order"
    );
    station.stop().await;
}
