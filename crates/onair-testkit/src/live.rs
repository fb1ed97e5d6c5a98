//! A live socket's client end: connecting to a channel's live events,
//! reading them, and publishing events on the bus as a service would.

use crate::PATIENCE;
use crate::station::TestStation;

/// A live socket's client end.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `ws://…/v1/channels/{channel}/live`, resuming after `after` if given.
pub fn live_url(station: &TestStation, channel: &str, after: Option<u64>) -> String {
    let mut url = format!("ws://{}/v1/channels/{channel}/live", station.http_addr);
    if let Some(after) = after {
        url.push_str(&format!("?after={after}"));
    }
    url
}

/// Opens a live socket; panics if the upgrade is refused.
pub async fn connect(url: &str) -> Socket {
    let (socket, _response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the live socket accepts the upgrade");
    socket
}

/// Opens `channel`'s live events as server-sent events
/// (`accept: text/event-stream`), anonymously.
pub async fn open_sse(station: &TestStation, channel: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(station.http_url(&format!("/v1/channels/{channel}/live")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("the HTTP port answers")
}

/// Reads a server-sent events response into `text` until `done(text)`
/// holds; fails when nothing comes within [`PATIENCE`](crate::PATIENCE) or
/// the stream ends first.
pub async fn read_sse_until(
    response: &mut reqwest::Response,
    text: &mut String,
    mut done: impl FnMut(&str) -> bool,
) {
    while !done(text) {
        let chunk = tokio::time::timeout(crate::PATIENCE, response.chunk())
            .await
            .expect("the SSE stream says something")
            .expect("the SSE stream reads")
            .expect("the SSE stream stays open");
        text.push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
    }
}

/// Why a live socket gave no more events: the server closed it, with its
/// close code if it sent one.
pub type Closed = Option<tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode>;

/// The events of the next text message that has any besides `viewers`
/// events, which the station sends whenever the test's own connections
/// change its viewer count; `Err` once the server closed, with its close
/// code.
pub async fn next_events(socket: &mut Socket) -> Result<Vec<serde_json::Value>, Closed> {
    loop {
        let mut events = next_events_with_viewers(socket).await?;
        events.retain(|event| event["type"] != "viewers");
        if !events.is_empty() {
            return Ok(events);
        }
    }
}

/// The events of the next text message (each is a JSON array), `viewers`
/// events included; `Err` once the server closed, with its close code.
pub async fn next_events_with_viewers(
    socket: &mut Socket,
) -> Result<Vec<serde_json::Value>, Closed> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("the live socket says something");
        match message {
            Some(Ok(Message::Text(text))) => {
                let events: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON");
                return Ok(events.as_array().expect("an array of events").clone());
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|frame| frame.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// Reads the `ready` event every connection starts with; returns its offset.
pub async fn ready(socket: &mut Socket) -> u64 {
    let events = next_events(socket).await.expect("a ready event");
    assert_eq!(events[0]["type"], "ready", "{events:?}");
    events[0]["offset"].as_u64().expect("an offset")
}

/// The `epoch` of the `ready` event that starts an SSE stream's text.
pub fn ready_epoch(sse_text: &str) -> String {
    let data = sse_text
        .split("\n\n")
        .find(|event| event.contains("event: ready"))
        .and_then(|event| event.lines().find_map(|line| line.strip_prefix("data: ")))
        .expect("the stream starts with a ready event");
    let ready: serde_json::Value = serde_json::from_str(data).expect("JSON");
    ready["epoch"].as_str().expect("an epoch").to_owned()
}

/// A connection that reads slowly: a tiny receive buffer, so the server's
/// writes back up as soon as it stops reading.
pub async fn connect_small_window(station: &TestStation, url: &str) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(station.http_addr).await.unwrap();
    let (socket, _response) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("the live socket accepts the upgrade");
    socket
}

/// A comment for the bus's live events.
pub fn comment(index: usize, body_len: usize) -> onair_proto::comment::v1::Comment {
    onair_proto::comment::v1::Comment {
        id: format!("c{index}"),
        channel_id: "news".to_owned(),
        body: "x".repeat(body_len),
        ..onair_proto::comment::v1::Comment::default()
    }
}

/// Publishes a comment on channel `news` as the comment service would.
pub async fn publish_comment(station: &TestStation, index: usize, body_len: usize) -> u64 {
    let bus = station.station.as_ref().expect("running").bus();
    onair_kit::events::LiveEvent::pack(
        "news",
        onair_kit::events::LiveKind::Comment,
        "onair.comment.v1.Comment",
        &comment(index, body_len),
    )
    .publish(bus)
    .await
    .expect("publish a live event")
}
