//! Sharing as a viewer, a social network's crawler and an operator see it:
//! share links of a channel, a slot at a moment and a comment; their
//! intents; the preview page's Open Graph and Twitter tags, with markup in
//! a title shown as text; the counts; and clear refusals of bad input.

use std::time::Duration;

use futures::StreamExt as _;
use onair_kit::bus::{Bus as _, InProcessBus};
use onair_testkit::on_both_backends;
use onair_testkit::{
    Backend, TestStation, create_channel, create_viewer, error_message, metrics_text,
    schedule_slot, send,
};
use reqwest::Method;
use serde_json::{Value, json};

/// A title that must reach a page as text, never as markup.
const HOSTILE_TITLE: &str = "<script>alert(1)</script>";

on_both_backends!(
    share_links_round_trip_with_their_intents_pages_and_counts,
    bad_shares_get_clear_errors,
    a_removed_comment_leaves_its_page,
);

/// Channel `news` with an hour-long slot of a program titled
/// [`HOSTILE_TITLE`] on air from a minute ago; returns the slot's id.
async fn on_air(station: &TestStation) -> String {
    create_channel(station, "news").await;
    let (status, program) = send(
        station,
        Method::POST,
        "/v1/programs",
        Some(&station.operator_key),
        Some(json!({
            "title": HOSTILE_TITLE,
            "description": "Headlines & \"weather\"",
            "duration": "3600s",
        })),
    )
    .await;
    assert_eq!(status, 201, "{program}");
    let start = (station.clock.now_ms() / 1000 - 60) * 1000;
    schedule_slot(station, "news", &program, start, start + 3_600_000).await
}

async fn share(station: &TestStation, token: &str, target: Value) -> (u16, Value) {
    send(
        station,
        Method::POST,
        "/v1/shares",
        Some(token),
        Some(target),
    )
    .await
}

/// The `/s/` page of `code`: its status, content type and HTML.
async fn page(station: &TestStation, code: &str) -> (u16, String, String) {
    let response = reqwest::get(station.http_url(&format!("/s/{code}")))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let content_type = onair_testkit::header_text(&response, "content-type");
    (status, content_type, response.text().await.unwrap())
}

/// The `content` of the page's `<meta>` whose `property` or `name` is `name`.
fn meta<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("=\"{name}\" content=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[start + name.len() + 13..];
    &rest[..rest.find('"').expect("a closed attribute")]
}

/// The decoded value of query parameter `name` of `url`.
fn parameter(url: &str, name: &str) -> String {
    let (_, query) = url.split_once('?').expect("a query");
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

fn count_of(value: &Value) -> i64 {
    match value {
        Value::Null => 0,
        Value::String(text) => text.parse().expect("a count"),
        other => other.as_i64().expect("a count"),
    }
}

async fn share_links_round_trip_with_their_intents_pages_and_counts(backend: Backend) {
    let station = TestStation::start(backend).await;
    let slot = on_air(&station).await;
    let alice = create_viewer(&station, "alice").await;
    let alice = alice["accessToken"].as_str().unwrap().to_owned();
    let bob = create_viewer(&station, "bob").await;
    let bob = bob["accessToken"].as_str().unwrap().to_owned();

    // A channel: a short, unguessable code under the station's address.
    let (status, channel_share) = share(&station, &alice, json!({"channelId": "news"})).await;
    assert_eq!(status, 201, "{channel_share}");
    let code = channel_share["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 12, "{channel_share}");
    assert!(code.bytes().all(|byte| byte.is_ascii_alphanumeric()));
    let url = format!("http://{}/s/{code}", station.http_addr);
    assert_eq!(channel_share["url"], url.as_str());
    assert_eq!(channel_share["channelId"], "news");
    // Each network's intent opens its share dialog with the link in it.
    let intents = &channel_share["intents"];
    let x = intents["x"].as_str().unwrap();
    assert!(x.starts_with("https://twitter.com/intent/tweet?"), "{x}");
    assert_eq!(parameter(x, "url"), url);
    assert_eq!(parameter(x, "text"), "news");
    let line = intents["line"].as_str().unwrap();
    assert!(
        line.starts_with("https://social-plugins.line.me/lineit/share?"),
        "{line}"
    );
    assert_eq!(parameter(line, "url"), url);
    let facebook = intents["facebook"].as_str().unwrap();
    assert!(
        facebook.starts_with("https://www.facebook.com/sharer/sharer.php?"),
        "{facebook}"
    );
    assert_eq!(parameter(facebook, "u"), url);

    // Sharing again gives the same link; another viewer gets their own.
    let (status, again) = share(&station, &alice, json!({"channelId": "news"})).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["code"], code.as_str());
    let (_, bobs) = share(&station, &bob, json!({"channelId": "news"})).await;
    assert_ne!(bobs["code"], code.as_str());

    // The code reads back.
    let (status, read) = send(
        &station,
        Method::GET,
        &format!("/v1/shares/{code}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["url"], url.as_str());
    assert_eq!(read["channelId"], "news");

    // The channel's page: what is on air, with the program's title as text.
    let (status, content_type, html) = page(&station, &code).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert_eq!(meta(&html, "og:title"), "news");
    assert_eq!(meta(&html, "og:url"), url);
    assert_eq!(
        meta(&html, "og:description"),
        "Now on air: &lt;script&gt;alert(1)&lt;/script&gt;. Headlines &amp; &quot;weather&quot;"
    );
    assert_eq!(meta(&html, "twitter:card"), "summary_large_image");
    // A program with no asset has no frame of its own: the station's card.
    let station_card = format!("http://{}/images/station/card.jpg", station.http_addr);
    assert_eq!(meta(&html, "og:image"), station_card);
    assert_eq!(meta(&html, "twitter:image"), station_card);
    assert!(!html.contains(HOSTILE_TITLE), "{html}");
    assert!(html.contains(&format!(
        "href=\"http://{}/?channel=news\"",
        station.http_addr
    )));

    // A slot at a moment: the program's page, and the player at the moment.
    let (status, slot_share) =
        share(&station, &bob, json!({"slotId": slot, "vposMs": 90_000})).await;
    assert_eq!(status, 201, "{slot_share}");
    assert_eq!(slot_share["slotId"], slot.as_str());
    assert_eq!(count_of(&slot_share["vposMs"]), 90_000);
    assert_eq!(
        parameter(slot_share["intents"]["x"].as_str().unwrap(), "text"),
        HOSTILE_TITLE,
        "the intent's text is the title, encoded in the URL"
    );
    let slot_code = slot_share["code"].as_str().unwrap();
    let (status, _, html) = page(&station, slot_code).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(
        meta(&html, "og:title"),
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    );
    assert!(
        html.contains("<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>"),
        "{html}"
    );
    assert!(!html.contains(HOSTILE_TITLE), "{html}");
    assert_eq!(
        html.matches("<script").count(),
        1,
        "only the redirect runs: {html}"
    );
    assert!(
        html.contains(&format!(
            "href=\"http://{}/?channel=news&amp;slot={slot}&amp;vposMs=90000\"",
            station.http_addr
        )),
        "{html}"
    );

    // A comment: the page quotes it, and the link starts where it was said.
    let (status, comment) = send(
        &station,
        Method::POST,
        "/v1/channels/news/comments",
        Some(&bob),
        Some(json!({"body": "what a <b>goal</b>"})),
    )
    .await;
    assert_eq!(status, 201, "{comment}");
    assert_eq!(comment["status"], "COMMENT_STATUS_PUBLISHED", "{comment}");
    let comment_id = comment["id"].as_str().unwrap();
    let (status, comment_share) = share(&station, &alice, json!({"commentId": comment_id})).await;
    assert_eq!(status, 201, "{comment_share}");
    assert_eq!(comment_share["vposMs"], comment["vposMs"]);
    let (status, _, html) = page(&station, comment_share["code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(meta(&html, "og:title"), "“what a &lt;b&gt;goal&lt;/b&gt;”");
    assert!(
        html.contains(&format!("&amp;comment={comment_id}\"")),
        "{html}"
    );

    // Counts: one per person who shared, and every open of their links.
    page(&station, bobs["code"].as_str().unwrap()).await;
    let counts_path =
        format!("/v1/shares:counts?targetIds=news&targetIds={slot}&targetIds=nothing");
    let (status, refused) = send(&station, Method::GET, &counts_path, Some(&alice), None).await;
    assert_eq!(status, 403, "{refused}");
    let (status, counts) = send(
        &station,
        Method::GET,
        &counts_path,
        Some(&station.operator_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{counts}");
    let counts = counts["counts"].as_array().unwrap();
    let figures: Vec<(String, i64, i64)> = counts
        .iter()
        .map(|count| {
            (
                count["targetId"].as_str().unwrap().to_owned(),
                count_of(&count["count"]),
                count_of(&count["opens"]),
            )
        })
        .collect();
    assert_eq!(
        figures,
        vec![
            ("news".to_owned(), 2, 2),
            (slot.clone(), 1, 1),
            ("nothing".to_owned(), 0, 0),
        ]
    );
    let metrics = metrics_text(&station).await;
    assert!(metrics.contains("onair_share_opens_total 4"), "{metrics}");
    assert!(
        metrics.contains("onair_share_links_created_total 4"),
        "{metrics}"
    );

    // The ops stream has each link made, once.
    let dir = station.stop().await;
    let bus = InProcessBus::new(Some(dir.path().join("bus")));
    let mut events = bus.replay("ops", 1, Some("ops.share.>")).await.unwrap();
    let mut created = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        let event: Value = serde_json::from_slice(&event.payload).unwrap();
        assert_eq!(event["kind"], "share.created");
        created.push(event["details"]["targetKind"].as_str().unwrap().to_owned());
    }
    assert_eq!(created, ["channel", "channel", "slot", "comment"]);
}

async fn bad_shares_get_clear_errors(backend: Backend) {
    // Tokens outlast the hour the test moves the clock by.
    let settings = [
        ("share.links_per_user_per_hour", "3"),
        ("user.access_token_ttl_seconds", "7200"),
    ];
    let station = TestStation::start_with(backend, &settings).await;
    let slot = on_air(&station).await;
    let viewer = create_viewer(&station, "viewer").await;
    let token = viewer["accessToken"].as_str().unwrap();

    let (status, body) = send(
        &station,
        Method::POST,
        "/v1/shares",
        None,
        Some(json!({"channelId": "news"})),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let refusals = [
        (json!({}), 400, "name what to share"),
        (json!({"channelId": "nowhere"}), 404, "nowhere"),
        (json!({"slotId": "no-such-slot"}), 404, "no-such-slot"),
        (
            json!({"commentId": "no-such-comment"}),
            404,
            "no-such-comment",
        ),
        (
            json!({"channelId": "news", "vposMs": 5000}),
            400,
            "vposMs goes with a slotId",
        ),
        (json!({"slotId": slot, "vposMs": -1}), 400, "0 or more"),
        (
            json!({"slotId": slot, "vposMs": 3_600_000}),
            400,
            "past the end",
        ),
    ];
    for (target, expected, words) in refusals {
        let (status, body) = share(&station, token, target.clone()).await;
        assert_eq!(status, expected, "{target}: {body}");
        assert!(error_message(&body).contains(words), "{target}: {body}");
    }

    let (status, body) = send(&station, Method::GET, "/v1/shares/short", None, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body).contains("is not a share code"),
        "{body}"
    );
    let (status, body) = send(&station, Method::GET, "/v1/shares/AAAAAAAAAAAA", None, None).await;
    assert_eq!(status, 404, "{body}");

    // Pages answer as a crawler needs: no card for a link that isn't one.
    let (status, content_type, html) = page(&station, "AAAAAAAAAAAA").await;
    assert_eq!(status, 404, "{html}");
    assert_eq!(content_type, "text/html; charset=utf-8");
    assert!(html.contains("This share link does not exist"), "{html}");
    assert!(!html.contains("og:title"), "{html}");
    let (status, _, html) = page(&station, "%3Cb%3Ex").await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains("&lt;b&gt;x"),
        "what was asked for is shown as text: {html}"
    );
    assert!(!html.contains("<b>x"), "{html}");

    let too_many: Vec<String> = (0..1001).map(|n| format!("targetIds=t{n}")).collect();
    let (status, body) = send(
        &station,
        Method::GET,
        &format!("/v1/shares:counts?{}", too_many.join("&")),
        Some(&station.operator_key),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body).contains("at most 1000"), "{body}");
    let (status, body) = send(
        &station,
        Method::GET,
        "/v1/shares:counts",
        Some(&station.operator_key),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body).contains("targetIds is required"),
        "{body}"
    );

    // One person makes at most the hour's links; one they made before is
    // theirs again whatever the limit.
    for target in [
        json!({"channelId": "news"}),
        json!({"slotId": slot}),
        json!({"slotId": slot, "vposMs": 1000}),
    ] {
        let (status, body) = share(&station, token, target).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = share(&station, token, json!({"slotId": slot, "vposMs": 2000})).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        error_message(&body).contains("share again in 3600 s"),
        "{body}"
    );
    let (status, body) = share(&station, token, json!({"channelId": "news"})).await;
    assert_eq!(status, 201, "{body}");
    station.clock.advance(Duration::from_secs(3601));
    let (status, body) = share(&station, token, json!({"slotId": slot, "vposMs": 2000})).await;
    assert_eq!(status, 201, "{body}");
    station.stop().await;
}

async fn a_removed_comment_leaves_its_page(backend: Backend) {
    let station = TestStation::start(backend).await;
    on_air(&station).await;
    let viewer = create_viewer(&station, "viewer").await;
    let token = viewer["accessToken"].as_str().unwrap();
    let (status, comment) = send(
        &station,
        Method::POST,
        "/v1/channels/news/comments",
        Some(token),
        Some(json!({"body": "a comment to regret"})),
    )
    .await;
    assert_eq!(status, 201, "{comment}");
    let comment_id = comment["id"].as_str().unwrap();
    let (status, shared) = share(&station, token, json!({"commentId": comment_id})).await;
    assert_eq!(status, 201, "{shared}");
    let code = shared["code"].as_str().unwrap();
    let (status, _, html) = page(&station, code).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("a comment to regret"), "{html}");

    let (status, hidden) = send(
        &station,
        Method::POST,
        &format!("/v1/comments/{comment_id}:hide"),
        Some(&station.operator_key),
        Some(json!({"reason": "spoiler"})),
    )
    .await;
    assert_eq!(status, 200, "{hidden}");
    // Within the page's ttl (10 s by default) the page stops quoting it.
    station.clock.advance(Duration::from_secs(11));
    let (status, _, html) = page(&station, code).await;
    assert_eq!(status, 404, "{html}");
    assert!(!html.contains("a comment to regret"), "{html}");
    // Nor can it be shared again, or read by anyone but its author and the
    // moderators.
    let other = create_viewer(&station, "other").await;
    let other = other["accessToken"].as_str().unwrap();
    let (status, body) = share(&station, other, json!({"commentId": comment_id})).await;
    assert_eq!(status, 404, "{body}");
    let path = format!("/v1/comments/{comment_id}");
    let (status, _) = send(&station, Method::GET, &path, Some(other), None).await;
    assert_eq!(status, 404);
    let (status, own) = send(&station, Method::GET, &path, Some(token), None).await;
    assert_eq!(status, 200, "{own}");
    let (status, seen) = send(
        &station,
        Method::GET,
        &path,
        Some(&station.operator_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_ne!(seen["status"], "COMMENT_STATUS_PUBLISHED", "{seen}");
    station.stop().await;
}
