//! The comment service across the station's services: posts tied to the slot
//! on air, automatic and human moderation, live events and replay, through
//! REST, gRPC and the live socket. SQLite stations use the in-process bus;
//! PostgreSQL stations use NATS, so events cross a real bus.

use std::time::Duration;

use onair_proto::user::v1::AdjustTrustScoreRequest;
use onair_testkit::on_both_backends;
use onair_testkit::{
    Backend, PATIENCE, Socket, TestStation, authorized, connect, create_program, create_viewer,
    live_url, next_events, ready, schedule_slot, send,
};
use reqwest::Method;
use serde_json::{Value, json};

/// A station with a channel `news` whose first program starts a minute after
/// the station's clock, followed by a second one, then a gap.
struct Newsroom {
    station: TestStation,
    /// The two slots, in time order.
    slots: [String; 2],
    /// Unix ms of the first slot's start.
    first_start_ms: i64,
}

/// Each program and slot lasts this long.
const SLOT_MS: i64 = 10 * 60 * 1000;

async fn newsroom(backend: Backend) -> Newsroom {
    let station = TestStation::start_with_its_bus(backend, "comments").await;
    let operator = station.operator_key.clone();
    let (status, channel) = send(
        &station,
        Method::POST,
        "/v1/channels",
        Some(&operator),
        Some(json!({"id": "news", "number": 1, "name": "News"})),
    )
    .await;
    assert_eq!(status, 201, "{channel}");
    let program = create_program(&station, "The News", "600s").await;
    let now_ms = station.clock.now_ms();
    // Whole seconds, so RFC 3339 times round-trip exactly.
    let first_start_ms = (now_ms / 1000 + 60) * 1000;
    let mut slots = Vec::new();
    for index in 0..2 {
        let start = first_start_ms + index * SLOT_MS;
        slots.push(schedule_slot(&station, "news", &program, start, start + SLOT_MS).await);
    }
    Newsroom {
        station,
        slots: [slots[0].clone(), slots[1].clone()],
        first_start_ms,
    }
}

impl Newsroom {
    /// Moves the station's clock to `offset_ms` after the first slot's start.
    fn at(&self, offset_ms: i64) {
        let target = self.first_start_ms + offset_ms;
        let now = self.station.clock.now_ms();
        assert!(target >= now, "the clock only moves forward");
        self.station
            .clock
            .advance(Duration::from_millis(u64::try_from(target - now).unwrap()));
    }

    async fn viewer(&self, name: &str) -> (String, String) {
        let created = create_viewer(&self.station, name).await;
        (
            created["user"]["id"].as_str().unwrap().to_owned(),
            created["accessToken"].as_str().unwrap().to_owned(),
        )
    }

    async fn post(&self, token: &str, body: &str) -> (u16, Value) {
        send(
            &self.station,
            Method::POST,
            "/v1/channels/news/comments",
            Some(token),
            Some(json!({ "body": body })),
        )
        .await
    }

    async fn chat_settings(&self, change: Value) {
        let operator = self.station.operator_key.clone();
        let (status, mut settings) = send(
            &self.station,
            Method::GET,
            "/v1/channels/news/chatSettings",
            Some(&operator),
            None,
        )
        .await;
        assert_eq!(status, 200, "{settings}");
        for (key, value) in change.as_object().unwrap() {
            settings[key] = value.clone();
        }
        let (status, stored) = send(
            &self.station,
            Method::PUT,
            "/v1/channels/news/chatSettings",
            Some(&operator),
            Some(settings),
        )
        .await;
        assert_eq!(status, 200, "{stored}");
    }

    async fn adjust_trust(&self, user_id: &str, delta: i32) -> i32 {
        let mut users = self.station.user_client().await;
        let request = AdjustTrustScoreRequest {
            user_id: user_id.to_owned(),
            delta,
            reason: "test".to_owned(),
        };
        users
            .adjust_trust_score(authorized(request, &self.station.operator_key))
            .await
            .expect("an operator adjusts trust")
            .into_inner()
            .trust_score
    }

    async fn replay(&self, slot: &str, query: &str, credential: Option<&str>) -> Value {
        let (status, page) = send(
            &self.station,
            Method::GET,
            &format!("/v1/slots/{slot}/comments{query}"),
            credential,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        page
    }

    async fn moderate(&self, comment_id: &str, verb: &str, credential: &str) -> (u16, Value) {
        send(
            &self.station,
            Method::POST,
            &format!("/v1/comments/{comment_id}:{verb}"),
            Some(credential),
            Some(json!({"reason": format!("{verb} in a test")})),
        )
        .await
    }
}

/// The next live event of one of `types`, skipping others.
async fn next_of(socket: &mut Socket, types: &[&str]) -> Value {
    loop {
        let events = next_events(socket).await.expect("the socket stays open");
        if let Some(event) = events
            .into_iter()
            .find(|event| types.contains(&event["type"].as_str().unwrap_or("")))
        {
            return event;
        }
    }
}

/// The lines of a streaming NDJSON answer, each as JSON.
struct Lines {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Lines {
    fn new(response: reqwest::Response) -> Lines {
        Lines {
            response,
            buffer: Vec::new(),
        }
    }

    async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return serde_json::from_slice(&line).expect("an NDJSON line");
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk())
                .await
                .expect("the stream says something")
                .unwrap()
                .expect("the stream stays open");
            self.buffer.extend_from_slice(&chunk);
        }
    }
}

fn bodies(page: &Value) -> Vec<String> {
    page["comments"]
        .as_array()
        .map(|comments| {
            comments
                .iter()
                .map(|comment| comment["body"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

on_both_backends!(
    comments_follow_the_program_on_air,
    comments_turned_off_for_the_program_on_air_are_refused,
    refusals_say_why,
    blocked_terms_catch_evasions,
    held_comments_go_live_when_approved,
    shadowed_comments_are_seen_by_their_author_only,
    reported_and_hidden_comments_leave_live_and_replay,
    replay_pages_in_media_order,
    display_commands_are_checked_stored_and_replayed,
);

async fn display_commands_are_checked_stored_and_replayed(backend: Backend) {
    let room = newsroom(backend).await;
    let (_ann, ann_token) = room.viewer("Ann").await;
    room.at(1_000);
    let mut socket = connect(&live_url(&room.station, "news", None)).await;
    ready(&mut socket).await;
    let post = |body: &str, commands: Value| {
        send(
            &room.station,
            Method::POST,
            "/v1/channels/news/comments",
            Some(&ann_token),
            Some(json!({"body": body, "commands": commands})),
        )
    };
    // Any order in; one order out, without the defaults.
    let (status, posted) = post("look up here", json!(["red", "white", "big", "ue"])).await;
    assert_eq!(status, 400, "two colours: {posted}");
    assert!(
        onair_testkit::error_message(&posted).contains("both a colour"),
        "{posted}"
    );
    let (status, posted) = post("look up here", json!(["red", "big", "ue"])).await;
    assert_eq!(status, 201, "{posted}");
    assert_eq!(posted["commands"], json!(["ue", "big", "red"]));
    let (status, plain) = post("just words", json!(["naka", "medium"])).await;
    assert_eq!(status, 201, "{plain}");
    assert_eq!(
        plain["commands"],
        json!([]),
        "defaults are left out: {plain}"
    );

    // Viewers get them live, and in replay.
    let live = loop {
        let events = next_events(&mut socket)
            .await
            .expect("the socket stays open");
        if let Some(event) = events.into_iter().find(|event| event["type"] == "comment") {
            break event;
        }
    };
    assert_eq!(
        live["data"]["comment"]["commands"],
        json!(["ue", "big", "red"])
    );
    let page = room.replay(&room.slots[0], "", None).await;
    let replayed: Vec<&Value> = page["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|comment| &comment["commands"])
        .collect();
    assert_eq!(replayed, [&json!(["ue", "big", "red"]), &json!([])]);

    // An unknown command is refused with what there is.
    let (status, refused) = post("sparkles", json!(["sparkle"])).await;
    assert_eq!(status, 400, "{refused}");
    let message = onair_testkit::error_message(&refused);
    assert!(
        message.contains("unknown display command \"sparkle\""),
        "{message}"
    );
    assert!(message.contains("ue, shita"), "{message}");
    room.station.stop().await;
}

async fn comments_follow_the_program_on_air(backend: Backend) {
    let room = newsroom(backend).await;
    let (_ann, ann_token) = room.viewer("Ann").await;
    let mut socket = connect(&live_url(&room.station, "news", None)).await;
    ready(&mut socket).await;
    // The same events as a server stream (WatchComments), as NDJSON.
    let watch = reqwest::Client::new()
        .get(room.station.http_url("/v1/channels/news/comments:watch"))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status().as_u16(), 200);
    let mut watch = Lines::new(watch);

    // Before the first program: nothing is on air.
    let (status, refused) = room.post(&ann_token, "too early").await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        onair_testkit::error_message(&refused).contains("nothing is on air"),
        "{refused}"
    );

    room.at(1_500);
    let (status, comment) = room.post(&ann_token, "good evening").await;
    assert_eq!(status, 201, "{comment}");
    assert_eq!(comment["slotId"], room.slots[0]);
    assert_eq!(comment["vposMs"], "1500");
    assert_eq!(comment["displayName"], "Ann");
    assert!(
        comment["status"].as_str().unwrap().ends_with("PUBLISHED"),
        "{comment}"
    );

    let event = next_of(&mut socket, &["comment"]).await;
    assert_eq!(event["data"]["comment"]["id"], comment["id"], "{event}");
    assert_eq!(event["data"]["comment"]["vposMs"], "1500");
    let line = watch.next().await;
    assert_eq!(line["result"]["comment"]["id"], comment["id"], "{line}");

    // Across the boundary the next slot takes the comments, from its own start.
    room.at(SLOT_MS + 2_000);
    let (status, second) = room.post(&ann_token, "next show").await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["slotId"], room.slots[1]);
    assert_eq!(second["vposMs"], "2000");

    // After the last slot: a gap.
    room.at(2 * SLOT_MS + 1);
    let (status, refused) = room.post(&ann_token, "anyone there").await;
    assert_eq!(status, 400, "{refused}");
    assert!(onair_testkit::error_message(&refused).contains("nothing is on air"));

    let first_replay = room.replay(&room.slots[0], "", None).await;
    assert_eq!(bodies(&first_replay), vec!["good evening"]);
    let second_replay = room.replay(&room.slots[1], "", None).await;
    assert_eq!(bodies(&second_replay), vec!["next show"]);
    room.station.stop().await;
}

/// An operator turns comments off for the slot on air: the comment service,
/// which keeps what is on air, hears of it from the media service's change
/// message and refuses the next posts.
async fn comments_turned_off_for_the_program_on_air_are_refused(backend: Backend) {
    let room = newsroom(backend).await;
    let (_ann, ann_token) = room.viewer("Ann").await;
    room.at(1_000);
    let (status, posted) = room.post(&ann_token, "on air").await;
    assert_eq!(status, 201, "{posted}");

    let operator = room.station.operator_key.clone();
    let (status, slot) = send(
        &room.station,
        Method::PATCH,
        &format!(
            "/v1/slots/{}?updateMask=commentsEnabled&force=true",
            room.slots[0]
        ),
        Some(&operator),
        Some(json!({ "commentsEnabled": false })),
    )
    .await;
    assert_eq!(status, 200, "{slot}");
    assert_eq!(slot["commentsEnabled"], false, "{slot}");

    let mut attempt = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let refused = loop {
        attempt += 1;
        let (status, answer) = room.post(&ann_token, &format!("still on {attempt}")).await;
        if status == 400 {
            break answer;
        }
        assert_eq!(status, 201, "{answer}");
        assert_eq!(
            backend,
            Backend::Postgres,
            "in one process the change lands at once: {answer}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change never reached the comment service"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        onair_testkit::error_message(&refused).contains("comments are off for the program on air"),
        "{refused}"
    );
    room.station.stop().await;
}

async fn refusals_say_why(backend: Backend) {
    let room = newsroom(backend).await;
    let (ann, ann_token) = room.viewer("Ann").await;
    room.at(5_000);

    // Bad bodies.
    let long = "あ".repeat(201);
    for (body, expected) in [
        ("", "empty"),
        ("   ", "empty"),
        (long.as_str(), "201 characters"),
        ("bell\u{7}", "control character"),
        ("two\nlines", "control character"),
    ] {
        let (status, refused) = room.post(&ann_token, body).await;
        assert_eq!(status, 400, "{body:?}: {refused}");
        assert!(
            onair_testkit::error_message(&refused).contains(expected),
            "{refused}"
        );
    }
    // HTML is text: stored and returned as sent, never interpreted.
    let html = "<script>alert('hi')</script>";
    let (status, comment) = room.post(&ann_token, html).await;
    assert_eq!(status, 201, "{comment}");
    assert_eq!(comment["body"], html);

    // Without credentials, on an unknown channel.
    let (status, _) = send(
        &room.station,
        Method::POST,
        "/v1/channels/news/comments",
        None,
        Some(json!({"body": "hi"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, missing) = send(
        &room.station,
        Method::POST,
        "/v1/channels/nowhere/comments",
        Some(&ann_token),
        Some(json!({"body": "hi"})),
    )
    .await;
    assert_eq!(status, 404, "{missing}");

    // Duplicates, then slow mode.
    let (status, _) = room.post(&ann_token, "what a goal").await;
    assert_eq!(status, 201);
    let (status, refused) = room.post(&ann_token, "What a  GOAL!").await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        onair_testkit::error_message(&refused).contains("same comment"),
        "{refused}"
    );
    room.chat_settings(json!({"slowModeSeconds": 10})).await;
    room.at(15_001);
    let (status, _) = room.post(&ann_token, "slow one").await;
    assert_eq!(status, 201);
    let (status, refused) = room.post(&ann_token, "slow two").await;
    assert_eq!(status, 429, "{refused}");
    assert!(
        onair_testkit::error_message(&refused).contains("slow mode"),
        "{refused}"
    );
    room.at(25_001);
    let (status, _) = room.post(&ann_token, "slow two").await;
    assert_eq!(status, 201);

    // Comments off for the channel.
    room.chat_settings(json!({"commentsEnabled": false, "slowModeSeconds": 0}))
        .await;
    let (status, refused) = room.post(&ann_token, "hello?").await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        onair_testkit::error_message(&refused).contains("comments are off"),
        "{refused}"
    );
    room.chat_settings(json!({"commentsEnabled": true})).await;

    // A ban lands on the next post (on NATS, as soon as the news arrives).
    let (status, banned) = send(
        &room.station,
        Method::POST,
        &format!("/v1/users/{ann}:ban"),
        Some(&room.station.operator_key),
        Some(json!({"durationSeconds": 0, "reason": "spam"})),
    )
    .await;
    assert_eq!(status, 200, "{banned}");
    let mut attempt = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let refused = loop {
        attempt += 1;
        let (status, answer) = room
            .post(&ann_token, &format!("still here {attempt}"))
            .await;
        if status == 403 {
            break answer;
        }
        assert_eq!(
            backend,
            Backend::Postgres,
            "in one process the ban lands at once: {answer}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ban never landed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        onair_testkit::error_message(&refused).contains("banned"),
        "{refused}"
    );
    assert!(
        onair_testkit::error_message(&refused).contains("spam"),
        "{refused}"
    );

    // Viewers can't moderate or change settings.
    let (_bob, bob_token) = room.viewer("Bob").await;
    let (status, _) = room
        .moderate(comment["id"].as_str().unwrap(), "hide", &bob_token)
        .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &room.station,
        Method::PUT,
        "/v1/channels/news/chatSettings",
        Some(&bob_token),
        Some(json!({"commentsEnabled": false})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &room.station,
        Method::PUT,
        "/v1/channels/news/chatSettings",
        Some(&room.station.operator_key),
        Some(json!({"slowModeSeconds": -5, "reportThreshold": 3})),
    )
    .await;
    assert_eq!(status, 400);
    room.station.stop().await;
}

async fn blocked_terms_catch_evasions(backend: Backend) {
    let room = newsroom(backend).await;
    let (_ann, ann_token) = room.viewer("Ann").await;
    room.chat_settings(json!({"blockedTerms": ["bad", "ばか"]}))
        .await;
    room.at(1_000);
    let mut socket = connect(&live_url(&room.station, "news", None)).await;
    ready(&mut socket).await;

    for evasion in [
        "so bad",
        "ｂａｄ",
        "b a d",
        "b\u{200b}ad",
        "B.A.D",
        "バカ",
        "ﾊﾞｶ",
    ] {
        let (status, comment) = room.post(&ann_token, evasion).await;
        assert_eq!(status, 201, "{evasion:?}: {comment}");
        assert!(
            comment["status"].as_str().unwrap().ends_with("REJECTED"),
            "{evasion:?}: {comment}"
        );
        assert!(
            comment["reason"].as_str().unwrap().contains("blocked term"),
            "{comment}"
        );
    }
    let (status, fine) = room.post(&ann_token, "a good show").await;
    assert_eq!(status, 201);
    // The first comment live is the clean one: none of the rejected went out.
    let event = next_of(&mut socket, &["comment"]).await;
    assert_eq!(event["data"]["comment"]["id"], fine["id"]);
    assert_eq!(
        bodies(&room.replay(&room.slots[0], "", None).await),
        vec!["a good show"]
    );

    // Viewers don't learn the list; moderators do.
    let (_, public) = send(
        &room.station,
        Method::GET,
        "/v1/channels/news/chatSettings",
        None,
        None,
    )
    .await;
    assert!(
        public
            .get("blockedTerms")
            .is_none_or(|terms| terms.as_array().unwrap().is_empty()),
        "{public}"
    );
    room.station.stop().await;
}

async fn held_comments_go_live_when_approved(backend: Backend) {
    let room = newsroom(backend).await;
    let (ann, ann_token) = room.viewer("Ann").await;
    assert_eq!(room.adjust_trust(&ann, -40).await, 10);
    room.at(3_000);

    let queue = reqwest::Client::new()
        .get(room.station.http_url("/v1/moderation/queue"))
        .bearer_auth(&room.station.operator_key)
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status().as_u16(), 200);
    let mut queue = Lines::new(queue);
    let mut socket = connect(&live_url(&room.station, "news", None)).await;
    ready(&mut socket).await;

    let (status, held) = room.post(&ann_token, "is this thing on").await;
    assert_eq!(status, 201, "{held}");
    assert!(held["status"].as_str().unwrap().ends_with("HELD"), "{held}");
    assert!(
        held["reason"].as_str().unwrap().contains("trust score 10"),
        "{held}"
    );
    assert!(bodies(&room.replay(&room.slots[0], "", None).await).is_empty());

    // The moderator's queue shows it.
    let item = loop {
        let item = queue.next().await;
        if item["result"]["comment"]["id"] == held["id"] {
            break item;
        }
    };
    assert!(
        item["result"]["comment"]["status"]
            .as_str()
            .unwrap()
            .ends_with("HELD"),
        "{item}"
    );

    // Approved later, it goes live at the moment of the program it was sent at.
    room.at(60_000);
    let (status, approved) = room
        .moderate(
            held["id"].as_str().unwrap(),
            "approve",
            &room.station.operator_key,
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    assert!(approved["status"].as_str().unwrap().ends_with("PUBLISHED"));
    let event = next_of(&mut socket, &["comment"]).await;
    assert_eq!(event["data"]["comment"]["id"], held["id"]);
    assert_eq!(event["data"]["comment"]["vposMs"], "3000");
    assert_eq!(
        bodies(&room.replay(&room.slots[0], "", None).await),
        vec!["is this thing on"]
    );

    // Approval raised the author's trust; a second approval is refused.
    let (status, me) = send(
        &room.station,
        Method::GET,
        "/v1/users/me",
        Some(&ann_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me["trustScore"], 12, "{me}");
    let (status, again) = room
        .moderate(
            held["id"].as_str().unwrap(),
            "approve",
            &room.station.operator_key,
        )
        .await;
    assert_eq!(status, 400, "{again}");
    room.station.stop().await;
}

async fn shadowed_comments_are_seen_by_their_author_only(backend: Backend) {
    let room = newsroom(backend).await;
    let (troll, troll_token) = room.viewer("Troll").await;
    let (_bob, bob_token) = room.viewer("Bob").await;
    assert_eq!(room.adjust_trust(&troll, -48).await, 2);
    room.at(2_000);
    let mut socket = connect(&live_url(&room.station, "news", None)).await;
    ready(&mut socket).await;

    let (status, shadowed) = room.post(&troll_token, "nobody sees this").await;
    assert_eq!(status, 201, "{shadowed}");
    // To its author it looks like any other comment.
    assert!(
        shadowed["status"].as_str().unwrap().ends_with("PUBLISHED"),
        "{shadowed}"
    );
    let (status, visible) = room.post(&bob_token, "hello all").await;
    assert_eq!(status, 201);

    let event = next_of(&mut socket, &["comment"]).await;
    assert_eq!(
        event["data"]["comment"]["id"], visible["id"],
        "the shadowed comment went live: {event}"
    );
    let slot = &room.slots[0];
    assert_eq!(
        bodies(&room.replay(slot, "", Some(&troll_token)).await),
        vec!["nobody sees this", "hello all"]
    );
    assert_eq!(
        bodies(&room.replay(slot, "", Some(&bob_token)).await),
        vec!["hello all"]
    );
    assert_eq!(
        bodies(&room.replay(slot, "", None).await),
        vec!["hello all"]
    );
    room.station.stop().await;
}

async fn reported_and_hidden_comments_leave_live_and_replay(backend: Backend) {
    let room = newsroom(backend).await;
    let (ann, ann_token) = room.viewer("Ann").await;
    room.at(4_000);
    let mut socket = connect(&live_url(&room.station, "news", None)).await;
    ready(&mut socket).await;
    let (status, comment) = room.post(&ann_token, "a rude remark").await;
    assert_eq!(status, 201);
    let comment_id = comment["id"].as_str().unwrap().to_owned();
    next_of(&mut socket, &["comment"]).await;

    let (status, refused) = send(
        &room.station,
        Method::POST,
        &format!("/v1/comments/{comment_id}:report"),
        Some(&ann_token),
        Some(json!({"reason": "mine"})),
    )
    .await;
    assert_eq!(status, 400, "reporting your own comment: {refused}");
    for reporter in ["R1", "R2", "R3"] {
        let (_, token) = room.viewer(reporter).await;
        let (status, answer) = send(
            &room.station,
            Method::POST,
            &format!("/v1/comments/{comment_id}:report"),
            Some(&token),
            Some(json!({"reason": format!("rude, says {reporter}")})),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    // Three reports put it in the queue, with what the reporters said.
    let response = reqwest::Client::new()
        .get(room.station.http_url("/v1/moderation/queue?channelId=news"))
        .bearer_auth(&room.station.operator_key)
        .send()
        .await
        .unwrap();
    let item = Lines::new(response).next().await;
    assert_eq!(item["result"]["comment"]["id"], comment_id.as_str());
    assert_eq!(item["result"]["reportCount"], 3);
    assert!(
        item["result"]["reportReasons"][0]
            .as_str()
            .unwrap()
            .starts_with("rude")
    );

    let (status, hidden) = room
        .moderate(&comment_id, "hide", &room.station.operator_key)
        .await;
    assert_eq!(status, 200, "{hidden}");
    assert!(hidden["status"].as_str().unwrap().ends_with("HIDDEN"));
    let event = next_of(&mut socket, &["moderation"]).await;
    assert_eq!(
        event["data"]["removedCommentId"],
        comment_id.as_str(),
        "{event}"
    );
    assert!(bodies(&room.replay(&room.slots[0], "", None).await).is_empty());
    // Upheld reports cost the author trust.
    let mut users = room.station.user_client().await;
    let user = users
        .get_user(authorized(
            onair_proto::user::v1::GetUserRequest { user_id: ann },
            &room.station.operator_key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.trust_score, 40);
    let (status, _) = send(
        &room.station,
        Method::POST,
        "/v1/comments/nope:hide",
        Some(&room.station.operator_key),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 404);
    room.station.stop().await;
}

async fn replay_pages_in_media_order(backend: Backend) {
    let room = newsroom(backend).await;
    room.chat_settings(json!({"maxCommentsPerMinute": 0, "duplicateWindowSeconds": 0}))
        .await;
    let (_ann, ann_token) = room.viewer("Ann").await;
    let (_bob, bob_token) = room.viewer("Bob").await;
    for index in 0..25_i64 {
        room.at(index * 1_000);
        let token = if index % 2 == 0 {
            &ann_token
        } else {
            &bob_token
        };
        let (status, comment) = room.post(token, &format!("comment {index:02}")).await;
        assert_eq!(status, 201, "{comment}");
    }
    let slot = &room.slots[0];
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let query = if token.is_empty() {
            "?pageSize=10".to_owned()
        } else {
            format!("?pageSize=10&pageToken={token}")
        };
        let page = room.replay(slot, &query, None).await;
        pages += 1;
        seen.extend(bodies(&page));
        token = page["nextPageToken"].as_str().unwrap_or("").to_owned();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|index| format!("comment {index:02}")).collect();
    assert_eq!(seen, expected);

    // A window of the program: [5 s, 8 s).
    let window = room
        .replay(slot, "?fromVposMs=5000&toVposMs=8000", None)
        .await;
    assert_eq!(
        bodies(&window),
        vec!["comment 05", "comment 06", "comment 07"]
    );
    let vpos: Vec<&str> = window["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|comment| comment["vposMs"].as_str().unwrap())
        .collect();
    assert_eq!(vpos, vec!["5000", "6000", "7000"]);

    for bad in [
        "?pageToken=garbage",
        "?fromVposMs=9000&toVposMs=1000",
        "?pageSize=-1",
    ] {
        let (status, error) = send(
            &room.station,
            Method::GET,
            &format!("/v1/slots/{slot}/comments{bad}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {error}");
    }
    let (status, _) = send(
        &room.station,
        Method::GET,
        "/v1/slots/no-such-slot/comments",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    room.station.stop().await;
}

/// A PostComment whose body is raw bytes, to send what no JSON client can.
#[derive(Clone, PartialEq, prost::Message)]
struct RawPostComment {
    #[prost(string, tag = "1")]
    channel_id: String,
    #[prost(bytes = "vec", tag = "2")]
    body: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_over_grpc_is_refused_as_invalid() {
    let room = newsroom(Backend::Sqlite).await;
    let (_ann, ann_token) = room.viewer("Ann").await;
    room.at(1_000);
    let mut grpc = tonic::client::Grpc::new(room.station.channel().await);
    grpc.ready().await.unwrap();
    let request = authorized(
        RawPostComment {
            channel_id: "news".to_owned(),
            body: vec![b'h', b'i', 0xff, 0xfe],
        },
        &ann_token,
    );
    let path = http::uri::PathAndQuery::from_static("/onair.comment.v1.CommentService/PostComment");
    let codec =
        tonic_prost::ProstCodec::<RawPostComment, onair_proto::comment::v1::Comment>::default();
    let status = grpc.unary(request, path, codec).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("UTF-8")
            || status.message().contains("utf-8")
            || status.message().contains("valid"),
        "{status:?}"
    );
    room.station.stop().await;
}

#[tokio::test]
async fn a_busy_channel_shows_a_sample_live_and_keeps_everything() {
    let room = newsroom(Backend::Sqlite).await;
    room.chat_settings(json!({"displayRatePerSecond": 2})).await;
    room.at(1_000);
    let mut socket = connect(&live_url(&room.station, "news", None)).await;
    ready(&mut socket).await;

    let mut posted = Vec::new();
    for index in 0..5 {
        let (_, token) = room.viewer(&format!("Fan {index}")).await;
        let (status, comment) = room.post(&token, &format!("goal {index}")).await;
        assert_eq!(status, 201, "{comment}");
        posted.push(comment["id"].as_str().unwrap().to_owned());
    }
    // The next second has a new allowance.
    room.at(2_000);
    let (_, token) = room.viewer("Late fan").await;
    let (status, last) = room.post(&token, "goal again").await;
    assert_eq!(status, 201, "{last}");
    let last_id = last["id"].as_str().unwrap().to_owned();

    let mut shown = Vec::new();
    while !shown.contains(&last_id) {
        let events = next_events(&mut socket)
            .await
            .expect("the socket stays open");
        for event in events {
            if event["type"] == "comment" {
                shown.push(event["data"]["comment"]["id"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(shown, vec![posted[0].clone(), posted[1].clone(), last_id]);
    let replay = room.replay(&room.slots[0], "", None).await;
    assert_eq!(replay["comments"].as_array().unwrap().len(), 6);
    room.station.stop().await;
}
