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
    create_program, create_viewer, live_url, next_events, next_events_with_viewers, schedule_slot,
    send,
};
use reqwest::Method;
use serde_json::Value;

/// Settings that let a test see counts change soon after the clock moves:
/// the count and the renewals run often (in real time); how long a mark
/// lasts stays the default 15 s, on the station's clock.
const QUICK: [(&str, &str); 3] = [
    ("audience.count_interval_ms", "100"),
    ("presence.refresh_ms", "100"),
    // The poll tests make fifty accounts from one address.
    ("user.accounts_per_ip_per_minute", "0"),
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

    // A session needs an account, or one client could be many viewers.
    let (_anonymous_up, anonymous_heartbeats) = tokio::sync::mpsc::channel(4);
    let refused = client
        .viewer_session(tokio_stream::wrappers::ReceiverStream::new(
            anonymous_heartbeats,
        ))
        .await
        .expect_err("an anonymous session is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // Another viewer's session joins: the first session is told.
    let guest = create_viewer(&station, "Guest").await;
    let guest_token = guest["accessToken"].as_str().unwrap().to_owned();
    let (guest_up, guest_heartbeats) = tokio::sync::mpsc::channel(4);
    let mut guest_counts = client
        .viewer_session(authorized(
            tokio_stream::wrappers::ReceiverStream::new(guest_heartbeats),
            &guest_token,
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

    // The guest closes their session; once 15 s pass they are gone.
    drop(guest_up);
    drop(guest_counts);
    assert_eventually!(
        metric_is(&station, "onair_audience_sessions", 1).await,
        "the station sees the guest's session end"
    );
    // The clock jumps the whole ttl at once, past Ann's last renewal too,
    // so a count may miss her until her session renews her: Ann is told
    // counts until she is counted alone.
    station.clock.advance(Duration::from_secs(15));
    let count = loop {
        let count = next_count(&mut counts).await;
        if count.count == 1 {
            break count;
        }
    };
    assert_eq!((count.count, count.peak), (1, 2));

    // A session naming a channel that does not exist ends with the reason.
    let (bad_up, bad_heartbeats) = tokio::sync::mpsc::channel(4);
    let mut bad_counts = client
        .viewer_session(authorized(
            tokio_stream::wrappers::ReceiverStream::new(bad_heartbeats),
            &guest_token,
        ))
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

on_both_backends!(
    polls_take_one_ballot_per_viewer_and_close_with_an_exact_tally,
    polls_refuse_votes_outside_their_window,
    ballots_cast_together_each_get_their_own_verdict,
);

/// A poll on `slot` as the operator; returns the answer.
async fn create_poll(station: &TestStation, slot: &str, poll: Value) -> (u16, Value) {
    send(
        station,
        Method::POST,
        &format!("/v1/slots/{slot}/polls"),
        Some(&station.operator_key),
        Some(poll),
    )
    .await
}

async fn vote(station: &TestStation, token: &str, poll: &str, option: &str) -> (u16, Value) {
    send(
        station,
        Method::POST,
        &format!("/v1/polls/{poll}/votes"),
        Some(token),
        Some(serde_json::json!({"optionId": option})),
    )
    .await
}

fn votes_of(poll: &Value) -> Vec<u64> {
    poll["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|option| count_of(option, "votes"))
        .collect()
}

fn in_minutes(station: &TestStation, minutes: i64) -> String {
    onair_testkit::rfc3339(station.clock.now_ms() + minutes * 60_000)
}

async fn polls_take_one_ballot_per_viewer_and_close_with_an_exact_tally(backend: Backend) {
    let station = station(backend).await;
    let slot = on_air(&station).await;
    let mut socket = connect(&live_url(&station, "news", None)).await;

    let (status, poll) = create_poll(
        &station,
        &slot,
        serde_json::json!({
            "question": "Who wins tonight?",
            "options": [{"text": "Red"}, {"text": "Blue"}],
            "closeTime": in_minutes(&station, 10),
        }),
    )
    .await;
    assert_eq!(status, 201, "{poll}");
    assert_eq!(poll["state"], "POLL_STATE_OPEN", "{poll}");
    assert_eq!(poll["channelId"], "news", "{poll}");
    let poll_id = poll["id"].as_str().unwrap().to_owned();
    let red = poll["options"][0]["id"].as_str().unwrap().to_owned();
    let blue = poll["options"][1]["id"].as_str().unwrap().to_owned();

    // Many viewers vote at once: 30 for red, 20 for blue.
    let mut tokens = Vec::new();
    for index in 0..50 {
        let viewer = create_viewer(&station, &format!("Voter {index}")).await;
        tokens.push(viewer["accessToken"].as_str().unwrap().to_owned());
    }
    let ballots = tokens.iter().enumerate().map(|(index, token)| {
        let option = if index < 30 {
            red.clone()
        } else {
            blue.clone()
        };
        let station = &station;
        let poll_id = &poll_id;
        async move { vote(station, token, poll_id, &option).await }
    });
    for (status, body) in futures::future::join_all(ballots).await {
        assert_eq!(status, 200, "{body}");
    }
    // One ballot each: a second vote is refused and changes nothing.
    let (status, body) = vote(&station, &tokens[0], &poll_id, &blue).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("voted"),
        "{body}"
    );
    let (status, body) = send(
        &station,
        Method::GET,
        &format!("/v1/polls/{poll_id}"),
        Some(&tokens[0]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(votes_of(&body), [30, 20], "{body}");
    assert_eq!(count_of(&body, "totalVotes"), 50, "{body}");
    assert_eq!(body["votedOptionId"], red.as_str(), "{body}");

    // The tally reaches the live socket, coalesced.
    loop {
        let events = next_events(&mut socket)
            .await
            .expect("the socket stays open");
        let tallied = events
            .iter()
            .any(|event| event["type"] == "poll" && count_of(&event["data"], "totalVotes") == 50);
        if tallied {
            break;
        }
    }

    // A stock gRPC client follows the poll until it closes.
    let mut client = AudienceServiceClient::new(station.channel().await);
    let mut watched = client
        .watch_poll(pb::WatchPollRequest {
            poll_id: poll_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(PATIENCE, watched.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.total_votes, 50);

    // A viewer may not close it; a moderator or the operator may.
    let (status, body) = send(
        &station,
        Method::POST,
        &format!("/v1/polls/{poll_id}:close"),
        Some(&tokens[1]),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, closed) = send(
        &station,
        Method::POST,
        &format!("/v1/polls/{poll_id}:close"),
        Some(&station.operator_key),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["state"], "POLL_STATE_CLOSED", "{closed}");
    assert_eq!(votes_of(&closed), [30, 20], "{closed}");
    let last = loop {
        let poll = tokio::time::timeout(PATIENCE, watched.message())
            .await
            .expect("the watch says something")
            .unwrap();
        match poll {
            Some(poll) if poll.state == pb::PollState::Closed as i32 => break poll,
            Some(_) => continue,
            None => panic!("the watch ended before the poll closed"),
        }
    };
    assert_eq!(last.total_votes, 50);
    assert!(
        tokio::time::timeout(PATIENCE, watched.message())
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "the watch ends once the poll closes"
    );
    let (status, body) = vote(&station, &tokens[49], &poll_id, &red).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("closed"),
        "{body}"
    );
    station.stop().await;
}

async fn polls_refuse_votes_outside_their_window(backend: Backend) {
    let station = station(backend).await;
    let slot = on_air(&station).await;
    let viewer = create_viewer(&station, "Ann").await;
    let token = viewer["accessToken"].as_str().unwrap().to_owned();

    // Bad polls get clear 4xx answers.
    let options = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|index| serde_json::json!({"text": format!("Option {index}")}))
            .collect()
    };
    for count in [1, 9] {
        let (status, body) = create_poll(
            &station,
            &slot,
            serde_json::json!({"question": "Which?", "options": options(count), "closeTime": in_minutes(&station, 5)}),
        )
        .await;
        assert_eq!(status, 400, "{count} options: {body}");
        assert!(
            onair_testkit::error_message(&body).contains("2 to 8 options"),
            "{body}"
        );
    }
    let (status, body) = create_poll(
        &station,
        "no-such-slot",
        serde_json::json!({"question": "Which?", "options": options(2), "closeTime": in_minutes(&station, 5)}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = send(
        &station,
        Method::POST,
        &format!("/v1/slots/{slot}/polls"),
        Some(&token),
        Some(serde_json::json!({"question": "Which?", "options": options(2), "closeTime": in_minutes(&station, 5)})),
    )
    .await;
    assert_eq!(status, 403, "a viewer may not open a poll: {body}");

    // A poll that opens later takes no votes yet; one that lets votes
    // change moves the tally; a vote after the close time is refused, and
    // the poll closes by itself with its final tally.
    let (status, later) = create_poll(
        &station,
        &slot,
        serde_json::json!({
            "question": "Next?", "options": options(2),
            "openTime": in_minutes(&station, 5), "closeTime": in_minutes(&station, 10),
        }),
    )
    .await;
    assert_eq!(status, 201, "{later}");
    assert_eq!(later["state"], "POLL_STATE_SCHEDULED", "{later}");
    let later_id = later["id"].as_str().unwrap();
    let (status, body) = vote(&station, &token, later_id, "1").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("opens at"),
        "{body}"
    );

    let (status, now) = create_poll(
        &station,
        &slot,
        serde_json::json!({
            "question": "Now?", "options": options(3), "allowChange": true,
            "closeTime": in_minutes(&station, 1),
        }),
    )
    .await;
    assert_eq!(status, 201, "{now}");
    let now_id = now["id"].as_str().unwrap();
    let (status, body) = vote(&station, &token, now_id, "1").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = vote(&station, &token, now_id, "3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(votes_of(&body), [0, 0, 1], "{body}");
    let (status, body) = vote(&station, &token, now_id, "7").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = vote(&station, &token, "no-such-poll", "1").await;
    assert_eq!(status, 404, "{body}");

    station.clock.advance(Duration::from_secs(90));
    let (status, body) = vote(&station, &token, now_id, "2").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        onair_testkit::error_message(&body).contains("closed"),
        "{body}"
    );
    assert_eventually!(
        {
            let (_, body) = send(
                &station,
                Method::GET,
                &format!("/v1/polls/{now_id}"),
                None,
                None,
            )
            .await;
            body["state"] == "POLL_STATE_CLOSED" && votes_of(&body) == [0, 0, 1]
        },
        "the poll closes by itself with its final tally"
    );
    station.stop().await;
}

async fn ballots_cast_together_each_get_their_own_verdict(backend: Backend) {
    let station = station(backend).await;
    let slot = on_air(&station).await;
    let (status, poll) = create_poll(
        &station,
        &slot,
        serde_json::json!({
            "question": "Tea or coffee?",
            "options": [{"text": "Tea"}, {"text": "Coffee"}],
            "closeTime": in_minutes(&station, 10),
        }),
    )
    .await;
    assert_eq!(status, 201, "{poll}");
    let poll_id = poll["id"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for index in 0..40 {
        let viewer = create_viewer(&station, &format!("Voter {index}")).await;
        tokens.push(viewer["accessToken"].as_str().unwrap().to_owned());
    }

    // All at once, so that good and refused ballots share transactions:
    // voters 0-9 vote twice (tea and coffee), which the poll does not
    // allow; voters 10-29 vote once, tea or coffee by turns; voters 30-39
    // choose an option the poll does not have.
    let mut ballots = Vec::new();
    for (voter, token) in tokens.iter().enumerate() {
        let choices: &[&str] = match voter {
            0..10 => &["1", "2"],
            10..30 if voter % 2 == 0 => &["1"],
            10..30 => &["2"],
            _ => &["9"],
        };
        for option in choices {
            ballots.push((voter, token.as_str(), *option));
        }
    }
    let answers = futures::future::join_all(ballots.iter().map(|(_, token, option)| {
        let station = &station;
        let poll_id = &poll_id;
        async move { vote(station, token, poll_id, option).await }
    }))
    .await;

    let mut counted = [0u64; 2];
    let mut taken_of = vec![0usize; tokens.len()];
    for ((voter, _, option), (status, body)) in ballots.iter().zip(&answers) {
        match *voter {
            0..10 => {
                // One of the two ballots counts, whichever came first; the
                // other is refused because the voter has voted.
                if status == &200 {
                    taken_of[*voter] += 1;
                    assert_eq!(body["votedOptionId"], *option, "{body}");
                } else {
                    assert_eq!(*status, 400, "{body}");
                    assert!(
                        onair_testkit::error_message(body).contains("voted"),
                        "voter {voter}: {body}"
                    );
                    continue;
                }
            }
            10..30 => {
                assert_eq!(*status, 200, "voter {voter}: {body}");
                assert_eq!(body["votedOptionId"], *option, "{body}");
                taken_of[*voter] += 1;
            }
            _ => {
                assert_eq!(*status, 400, "voter {voter}: {body}");
                assert!(
                    onair_testkit::error_message(body).contains("no option"),
                    "voter {voter}: {body}"
                );
                continue;
            }
        }
        let index: usize = option.parse::<usize>().unwrap() - 1;
        counted[index] += 1;
    }
    for (voter, taken) in taken_of.iter().enumerate().take(30) {
        assert_eq!(*taken, 1, "voter {voter} has exactly one ballot taken");
    }
    assert_eq!(counted.iter().sum::<u64>(), 30);

    // The tally is the ballots that were acknowledged, no more and no less.
    let (status, body) = send(
        &station,
        Method::GET,
        &format!("/v1/polls/{poll_id}"),
        Some(&tokens[35]),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(votes_of(&body), counted, "{body}");
    assert!(
        body["votedOptionId"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "a refused ballot leaves no vote: {body}"
    );
    let (status, closed) = send(
        &station,
        Method::POST,
        &format!("/v1/polls/{poll_id}:close"),
        Some(&station.operator_key),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(votes_of(&closed), counted, "{closed}");
    assert_eq!(count_of(&closed, "totalVotes"), 30, "{closed}");
    station.stop().await;
}
