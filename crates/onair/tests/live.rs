//! The live sockets, `GET /v1/channels/{channelId}/live`, over real WebSocket
//! and SSE connections to a station on port 0, fed by the bus's own events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use onair_testkit::on_both_backends;
use onair_testkit::{
    Backend, PATIENCE, TestStation, connect, connect_small_window, create_channel, live_url,
    next_events, open_sse, publish_comment, read_sse_until, ready, ready_epoch,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

on_both_backends!(
    schedule_changes_reach_websocket_and_sse_viewers,
    the_program_on_air_is_announced_at_each_boundary,
);

/// Reads the socket until a `program` event comes, skipping the others.
async fn next_program_event(socket: &mut onair_testkit::Socket) -> Value {
    loop {
        let events = next_events(socket).await.expect("the socket stays open");
        if let Some(event) = events.into_iter().find(|event| event["type"] == "program") {
            return event;
        }
    }
}

async fn the_program_on_air_is_announced_at_each_boundary(backend: Backend) {
    let station = TestStation::start_with_its_bus(backend, "program").await;
    create_channel(&station, "news").await;
    let program = onair_testkit::create_program(&station, "Evening News", "60s").await;
    let start = (station.clock.now_ms() / 1000 + 30) * 1000;
    let slot =
        onair_testkit::schedule_slot(&station, "news", &program, start, start + 60_000).await;
    let mut socket = connect(&live_url(&station, "news", None)).await;
    ready(&mut socket).await;

    // At the slot's start, on the station's clock: the program is on.
    station.clock.advance(Duration::from_secs(31));
    let event = next_program_event(&mut socket).await;
    assert_eq!(event["data"]["channelId"], "news", "{event}");
    assert_eq!(event["data"]["now"]["slot"]["id"], slot.as_str(), "{event}");
    assert_eq!(
        event["data"]["now"]["program"]["title"], "Evening News",
        "{event}"
    );

    // At its end: nothing is on air, and nothing comes next.
    station.clock.advance(Duration::from_secs(60));
    let event = next_program_event(&mut socket).await;
    assert_eq!(event["data"]["channelId"], "news", "{event}");
    assert!(
        event["data"].get("now").is_none_or(Value::is_null),
        "{event}"
    );
    socket.close(None).await.unwrap();
    station.stop().await;
}

async fn schedule_changes_reach_websocket_and_sse_viewers(backend: Backend) {
    // PostgreSQL stations use NATS, so the events cross a real bus.
    let station = TestStation::start_with_its_bus(backend, "live").await;
    create_channel(&station, "news").await;

    let mut socket = connect(&live_url(&station, "news", None)).await;
    let start = ready(&mut socket).await;
    let mut sse = open_sse(&station, "news").await;
    assert_eq!(sse.status().as_u16(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let mut sse_text = String::new();
    read_sse_until(&mut sse, &mut sse_text, |text| {
        text.contains("event: ready")
    })
    .await;

    let client = reqwest::Client::new();
    let program: Value = client
        .post(station.http_url("/v1/programs"))
        .bearer_auth(&station.operator_key)
        .json(&json!({"title": "Evening News", "duration": "1800s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slot: Value = client
        .post(station.http_url("/v1/channels/news/slots"))
        .bearer_auth(&station.operator_key)
        .json(&json!({
            "programId": program["id"],
            "startTime": "2030-01-01T18:00:00Z",
            "endTime": "2030-01-01T18:30:00Z",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let events = next_events(&mut socket).await.expect("a schedule event");
    let event = &events[0];
    assert_eq!(event["type"], "schedule", "{event}");
    assert!(event["offset"].as_u64().unwrap() > start);
    assert_eq!(event["data"]["channelId"], "news");
    assert_eq!(event["data"]["slot"]["id"], slot["id"]);

    read_sse_until(&mut sse, &mut sse_text, |text| {
        text.contains("event: schedule")
    })
    .await;
    let offset = event["offset"].as_u64().unwrap();
    let epoch = ready_epoch(&sse_text);
    assert!(
        sse_text.contains(&format!(
            "id: {epoch}:{offset}\nevent: schedule\ndata: {{\"type\":\"schedule\""
        )),
        "{sse_text}"
    );
    drop(sse);
    socket.close(None).await.unwrap();
    station.stop().await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let station = TestStation::start(Backend::Sqlite).await;
    create_channel(&station, "news").await;
    let client = reqwest::Client::new();

    let response = client
        .get(station.http_url("/v1/channels/nowhere/live"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 5, "{body}");

    let response = client
        .get(station.http_url("/v1/channels/news/live?after=yesterday"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        onair_testkit::error_message(&body).contains("after"),
        "{body}"
    );

    // Neither an upgrade nor an event stream.
    let response = client
        .get(station.http_url("/v1/channels/news/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 426);

    let response = client
        .get(station.http_url("/v1/channels/news/live"))
        .header("accept", "text/event-stream")
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    station.stop().await;
}

#[tokio::test]
async fn a_thousand_clients_each_receive_every_event_in_order() {
    const CLIENTS: usize = 1000;
    const EVENTS: usize = 200;
    let station = TestStation::start_with(
        Backend::Sqlite,
        &[
            ("gateway.rate_limit_per_ip", "0"),
            ("gateway.live_batch_window_ms", "20"),
            // A thousand viewers behind one address.
            ("server.max_connections_per_ip", "2000"),
        ],
    )
    .await;
    create_channel(&station, "news").await;

    let mut clients = Vec::new();
    let url = live_url(&station, "news", None);
    for _ in 0..CLIENTS {
        let mut socket = connect(&url).await;
        ready(&mut socket).await;
        clients.push(tokio::spawn(async move {
            let mut received = Vec::new();
            while received.len() < EVENTS {
                let events = next_events(&mut socket).await.expect("events");
                received.extend(events);
            }
            received
        }));
    }

    let mut offsets = Vec::new();
    for index in 0..EVENTS {
        offsets.push(publish_comment(&station, index, 40).await);
    }

    for client in clients {
        let received = tokio::time::timeout(PATIENCE, client)
            .await
            .expect("every client gets every event")
            .unwrap();
        let ids: Vec<&str> = received
            .iter()
            .map(|event| event["data"]["id"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..EVENTS).map(|index| format!("c{index}")).collect();
        assert_eq!(ids, expected);
        let got: Vec<u64> = received
            .iter()
            .map(|event| event["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(got, offsets);
        assert!(received.iter().all(|event| event["type"] == "comment"));
    }
    station.stop().await;
}

#[tokio::test]
async fn a_stalled_client_is_told_it_lagged_and_resumes_without_a_gap() {
    const EVENTS: usize = 6000;
    let station = station_with_a_short_ring().await;
    let url = live_url(&station, "news", None);

    // A healthy viewer beside the stalled one: it must not be slowed.
    let mut healthy = connect(&url).await;
    ready(&mut healthy).await;
    let healthy_count = Arc::new(AtomicUsize::new(0));
    let counter = healthy_count.clone();
    let healthy_task = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < EVENTS {
            let events = next_events(&mut healthy).await.expect("events");
            for event in events {
                ids.push(event["data"]["id"].as_str().unwrap().to_owned());
            }
            counter.store(ids.len(), Ordering::Relaxed);
        }
        ids
    });

    let mut stalled = connect_small_window(&station, &url).await;
    ready(&mut stalled).await;

    // 2 KB events, far more than socket buffers hold; paced by the healthy
    // viewer so that only the stalled one falls behind.
    let mut offsets = Vec::new();
    for index in 0..EVENTS {
        offsets.push(publish_comment(&station, index, 2048).await);
        if index % 4 == 3 {
            onair_testkit::assert_eventually!(healthy_count.load(Ordering::Relaxed) > index);
        }
    }
    let healthy_ids = tokio::time::timeout(PATIENCE, healthy_task)
        .await
        .expect("the healthy viewer gets everything")
        .unwrap();
    assert_eq!(healthy_ids.len(), EVENTS);

    // The stalled viewer reads again: what was in flight, then "lagged".
    let mut received: Vec<u64> = Vec::new();
    let lagged_at = loop {
        let events = next_events(&mut stalled)
            .await
            .expect("events, then lagged");
        let mut lagged = None;
        for event in events {
            if event["type"] == "lagged" {
                lagged = Some(event["offset"].as_u64().unwrap());
            } else {
                received.push(event["offset"].as_u64().unwrap());
            }
        }
        if let Some(offset) = lagged {
            break offset;
        }
    };
    assert_eq!(
        next_events(&mut stalled).await.unwrap_err(),
        Some(CloseCode::Again),
        "the lagged connection is closed with Try Again Later"
    );
    assert!(
        received.len() < EVENTS,
        "the stalled viewer really fell behind"
    );
    assert_eq!(received, offsets[..received.len()]);
    assert_eq!(lagged_at, *received.last().unwrap());

    // It resumes after its offset and gets the rest, with no gap.
    let mut resumed = connect(&live_url(&station, "news", Some(lagged_at))).await;
    assert_eq!(ready(&mut resumed).await, *offsets.last().unwrap());
    let mut rest: Vec<u64> = Vec::new();
    while rest.len() < EVENTS - received.len() {
        let events = next_events(&mut resumed).await.expect("the backlog");
        assert!(events.iter().all(|event| event["type"] == "comment"));
        rest.extend(events.iter().map(|event| event["offset"].as_u64().unwrap()));
    }
    received.extend(rest);
    assert_eq!(received, offsets);
    station.stop().await;
}

// An SSE viewer that stops reading falls behind as a WebSocket one does: when
// it reads again it gets what was in flight, then `lagged`, and a browser's
// reconnect with Last-Event-ID gets the rest with no gap.
#[tokio::test]
async fn a_stalled_sse_viewer_is_told_it_lagged_and_resumes_without_a_gap() {
    use http_body_util::BodyExt;

    const EVENTS: usize = 6000;
    let station = station_with_a_short_ring().await;

    // A tiny receive buffer, so the server's writes back up at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(station.http_addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("an HTTP/1.1 connection");
    tokio::spawn(connection);
    let request = http::Request::get("/v1/channels/news/live")
        .header("host", station.http_addr.to_string())
        .header("accept", "text/event-stream")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("event: ready") {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("the ready event")
            .expect("the stream stays open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }

    let mut offsets = Vec::new();
    for index in 0..EVENTS {
        offsets.push(publish_comment(&station, index, 2048).await);
    }

    // It reads again, to the end of the stream.
    let mut bytes = Vec::new();
    while let Some(frame) = tokio::time::timeout(PATIENCE, body.frame())
        .await
        .expect("the stream goes on, then ends")
    {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    text.push_str(std::str::from_utf8(&bytes).unwrap());
    let stream = SseStream::read(&text);
    let received = stream.comments;
    let lagged_at = stream.lagged.expect("a lagged event ends the stream");
    assert!(
        received.len() < EVENTS,
        "the stalled viewer really fell behind"
    );
    assert_eq!(received, offsets[..received.len()]);
    // It may lag before it gets a single comment: it then resumes from where
    // it started.
    let ready_at = stream.ready.expect("the stream starts with ready");
    assert_eq!(lagged_at, received.last().copied().unwrap_or(ready_at));

    // The browser reconnects with the last id it saw.
    let mut resumed = reqwest::Client::new()
        .get(station.http_url("/v1/channels/news/live"))
        .header("accept", "text/event-stream")
        .header("last-event-id", lagged_at.to_string())
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    read_sse_until(&mut resumed, &mut text, |text| {
        SseStream::read(text).comments.len() >= EVENTS - received.len()
    })
    .await;
    let rest = SseStream::read(&text).comments;
    assert_eq!(rest, offsets[received.len()..]);
    station.stop().await;
}

/// The offsets in an SSE stream's whole events.
struct SseStream {
    /// Where the stream starts (its `ready` event).
    ready: Option<u64>,
    comments: Vec<u64>,
    /// Its `lagged` event.
    lagged: Option<u64>,
}

impl SseStream {
    fn read(text: &str) -> SseStream {
        let mut stream = SseStream {
            ready: None,
            comments: Vec::new(),
            lagged: None,
        };
        // Only whole events: the last piece may still be arriving.
        let whole = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
        for event in whole.split("\n\n") {
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|line| line.strip_prefix(name))
                    .map(str::to_owned)
            };
            let offset = || {
                let data: Value = serde_json::from_str(&field("data: ").unwrap()).unwrap();
                data["offset"].as_u64()
            };
            match field("event: ").as_deref() {
                // An SSE event's id is EPOCH:OFFSET.
                Some("comment") => stream.comments.push(
                    field("id: ")
                        .unwrap()
                        .rsplit_once(':')
                        .unwrap()
                        .1
                        .parse()
                        .unwrap(),
                ),
                Some("ready") => stream.ready = offset(),
                Some("lagged") => stream.lagged = offset(),
                _ => {}
            }
        }
        stream
    }
}

#[tokio::test]
async fn shutdown_closes_live_sockets_with_a_reconnect_hint() {
    let station = TestStation::start(Backend::Sqlite).await;
    create_channel(&station, "news").await;
    let mut socket = connect(&live_url(&station, "news", None)).await;
    let offset = ready(&mut socket).await;
    let mut sse = open_sse(&station, "news").await;

    let reader = tokio::spawn(async move {
        let events = next_events(&mut socket).await.expect("a closing event");
        let close = next_events(&mut socket).await.unwrap_err();
        (events, close)
    });
    let sse_reader = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = sse.chunk().await {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    });
    tokio::time::timeout(PATIENCE, station.stop())
        .await
        .expect("the station stops with live sockets open");

    let (events, close) = reader.await.unwrap();
    assert_eq!(events[0]["type"], "closing", "{events:?}");
    assert_eq!(events[0]["offset"], offset);
    assert!(events[0]["retryAfterMs"].as_u64().unwrap() > 0);
    assert_eq!(close, Some(CloseCode::Restart));
    let text = sse_reader.await.unwrap();
    assert!(text.contains("event: closing"), "{text}");
}

/// Sends a text message the server ignores, then checks the socket still
/// works: clients have nothing to say, but saying something is harmless.
#[tokio::test]
async fn client_messages_are_ignored() {
    let station = TestStation::start(Backend::Sqlite).await;
    create_channel(&station, "news").await;
    let mut socket = connect(&live_url(&station, "news", None)).await;
    ready(&mut socket).await;
    socket
        .send(Message::text("hello"))
        .await
        .expect("send a text message");
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let offset = publish_comment(&station, 1, 10).await;
    // The pong and the event may come in either order.
    let mut pong = None;
    let mut events = None;
    while pong.is_none() || events.is_none() {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a pong and the event")
            .unwrap()
            .unwrap();
        match message {
            Message::Pong(payload) => pong = Some(payload),
            Message::Text(text) if !only_viewer_counts(text.as_str()) => {
                events = Some(serde_json::from_str::<Value>(text.as_str()).unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(events.unwrap()[0]["offset"], offset);
    assert_eq!(
        pong.as_deref(),
        Some(&b"are you there"[..]),
        "a ping is answered with its payload"
    );

    // A client that closes gets its close answered, then the end of the stream.
    socket
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        })))
        .await
        .unwrap();
    assert_eq!(closed_with(&mut socket).await.code, CloseCode::Away);
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .unwrap(),
        None | Some(Err(_))
    ));
    station.stop().await;
}

// Viewers have nothing to send; one that sends a large message is closed
// with "message too big", and one that breaks the framing with "protocol
// error", both with a reason. The others carry on.
#[tokio::test]
async fn clients_that_misbehave_are_closed_with_the_reason() {
    let station = TestStation::start(Backend::Sqlite).await;
    create_channel(&station, "news").await;
    let url = live_url(&station, "news", None);
    let mut bystander = connect(&url).await;
    ready(&mut bystander).await;

    let mut chatty = connect(&url).await;
    ready(&mut chatty).await;
    chatty
        .send(Message::binary(vec![0u8; 100 * 1024]))
        .await
        .unwrap();
    let close = closed_with(&mut chatty).await;
    assert_eq!(close.code, CloseCode::Size);
    assert!(close.reason.contains("too big"), "{}", close.reason);

    // A frame without a client's mask, written by hand.
    let (head, frames) = raw_websocket_session(station.http_addr, &[0x81, 0x02, b'h', b'i']).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    let (opcode, close) = frames.last().expect("a close frame");
    assert_eq!(*opcode, 0x8, "the last frame closes: {frames:?}");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1002);
    let reason = String::from_utf8_lossy(&close[2..]);
    assert!(reason.contains("must be masked"), "{reason}");

    let offset = publish_comment(&station, 1, 10).await;
    let events = next_events(&mut bystander)
        .await
        .expect("the bystander's event");
    assert_eq!(events[0]["offset"], offset);
    station.stop().await;
}

// The server pings every connection. One that never answers is told to
// reconnect and closed; one that answers stays and keeps getting events.
#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed_and_one_that_does_stays() {
    let station =
        TestStation::start_with(Backend::Sqlite, &[("gateway.live_ping_seconds", "1")]).await;
    create_channel(&station, "news").await;
    let url = live_url(&station, "news", None);
    let mut listener = connect(&url).await;
    ready(&mut listener).await;
    // Reading is what answers the pings, so the listener reads all along.
    let (received, mut listened) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let events = next_events(&mut listener).await;
            let closed = events.is_err();
            if received.send(events).is_err() || closed {
                break;
            }
        }
    });

    // A client that sends nothing after its upgrade, not even a pong.
    let (_head, frames) = raw_websocket_session(station.http_addr, &[]).await;
    let opcodes: Vec<u8> = frames.iter().map(|(opcode, _)| *opcode).collect();
    assert!(opcodes.contains(&0x9), "it was pinged: {opcodes:?}");
    let [.., (0x1, goodbye), (0x8, close)] = frames.as_slice() else {
        panic!("a last event, then a close: {opcodes:?}");
    };
    let goodbye: Value = serde_json::from_slice(goodbye).unwrap();
    assert_eq!(goodbye[0]["type"], "closing", "{goodbye}");
    assert_eq!(goodbye[0]["message"], "no answer to ping", "{goodbye}");
    assert!(goodbye[0]["retryAfterMs"].as_u64().is_some(), "{goodbye}");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);

    let offset = publish_comment(&station, 1, 10).await;
    let events = listened
        .recv()
        .await
        .expect("the listener reads on")
        .expect("the listener is still open");
    assert_eq!(events[0]["offset"], offset);
    station.stop().await;
}

// A WebSocket over HTTP/2 (RFC 8441's extended CONNECT), as clients that
// keep one multiplexed connection open it, gets the same stream.
#[tokio::test]
async fn a_websocket_opens_over_http2_too() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let station = TestStation::start(Backend::Sqlite).await;
    create_channel(&station, "news").await;
    let tcp = tokio::net::TcpStream::connect(station.http_addr)
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!(
            "http://{}/v1/channels/news/live",
            station.http_addr
        ))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = sender
        .send_request(request)
        .await
        .expect("the CONNECT is answered");
    assert_eq!(response.status(), 200);
    let upgraded = hyper::upgrade::on(&mut response)
        .await
        .expect("the stream becomes a WebSocket");
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let mut next_text = async || loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the live socket says something")
            .expect("the socket stays open")
            .expect("a well-formed frame");
        if let Message::Text(text) = message
            && !only_viewer_counts(text.as_str())
        {
            return serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
    };
    assert_eq!(next_text().await[0]["type"], "ready");
    let offset = publish_comment(&station, 1, 10).await;
    let events = next_text().await;
    assert_eq!(events[0]["type"], "comment");
    assert_eq!(events[0]["offset"], offset);
    station.stop().await;
}

/// A station whose live connections lag soon: every event is its own frame,
/// the ring holds 8 of them, and the history is long enough to resume from.
async fn station_with_a_short_ring() -> TestStation {
    let station = TestStation::start_with(
        Backend::Sqlite,
        &[
            ("gateway.live_batch_window_ms", "0"),
            ("gateway.live_queue_frames", "8"),
            ("gateway.live_history_events", "20000"),
        ],
    )
    .await;
    create_channel(&station, "news").await;
    station
}

/// Opens channel news's live WebSocket by hand over raw TCP (with RFC 6455's
/// example key), sends `bytes` after the upgrade request, and reads until the
/// server ends the connection: its response head and the frames after it.
async fn raw_websocket_session(
    address: std::net::SocketAddr,
    bytes: &[u8],
) -> (String, Vec<(u8, Vec<u8>)>) {
    let mut raw = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!(
        "GET /v1/channels/news/live HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    raw.write_all(request.as_bytes()).await.unwrap();
    raw.write_all(bytes).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, raw.read_to_end(&mut received))
        .await
        .expect("the server ends the connection")
        .unwrap();
    let head_end = received
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    (head, server_frames(&received[head_end..]))
}

/// The opcodes and payloads of the frames a server wrote (never masked).
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let (length, start) = match bytes[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => panic!("no frame here is that large"),
            short => (usize::from(short), 2),
        };
        frames.push((bytes[0] & 0x0F, bytes[start..start + length].to_vec()));
        bytes = &bytes[start + length..];
    }
    assert!(bytes.is_empty(), "whole frames only");
    frames
}

/// Whether a text message holds only `viewers` events, which the station
/// sends as the test's own connections change the channel's count.
fn only_viewer_counts(text: &str) -> bool {
    let events: Value = serde_json::from_str(text).unwrap();
    events
        .as_array()
        .is_some_and(|events| events.iter().all(|event| event["type"] == "viewers"))
}

/// Reads until the server's close frame.
async fn closed_with(socket: &mut onair_testkit::Socket) -> CloseFrame {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("the server closes the socket")
        {
            Some(Ok(Message::Close(Some(frame)))) => return frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
