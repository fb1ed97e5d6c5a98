//! Video end to end: a real station on port 0 with real ffmpeg, tiny
//! renditions and 1 s segments, and a manual clock stepped one segment at a
//! time. The live playlists are read the way players read them and checked
//! for what players enforce (hls.js rejects a media sequence that names
//! another segment on reload, or a discontinuity sequence that moves).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use onair::Station;
use onair_kit::clock::Clock;
use onair_proto::media::v1 as media;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use onair_proto::playout::v1 as pb;
use onair_proto::playout::v1::playout_service_client::PlayoutServiceClient;
use tonic::transport::Channel;

use onair_testkit::{authorized, read_operator_key, test_settings_with};

/// The settings every video test runs with: 1 s segments, a two-rung ladder
/// of tiny pictures, a 6-segment window.
const VIDEO_SETTINGS: &[(&str, &str)] = &[
    ("playout.segment_seconds", "1"),
    ("playout.ladder", "180p:320x180:200,90p:160x90:80"),
    ("playout.audio_kbps", "32"),
    ("playout.frame_rate", "10"),
    ("playout.x264_preset", "ultrafast"),
    ("playout.window_segments", "6"),
    ("playout.live_wait_ms", "2000"),
    ("playout.ingest_max_bytes", "400000"),
    ("playout.max_upload_bytes", "2000000"),
];

/// How long a test waits for ffmpeg to finish a transcode.
const TRANSCODE_DEADLINE: Duration = Duration::from_secs(120);

struct VideoStation {
    station: Option<Station>,
    dir: tempfile::TempDir,
    clock: Clock,
    key: String,
    http: SocketAddr,
    grpc: SocketAddr,
    client: reqwest::Client,
}

impl VideoStation {
    async fn start(dir: tempfile::TempDir, clock: Clock, extra: &[(&str, &str)]) -> VideoStation {
        VideoStation::start_on(dir, clock, extra, None).await
    }

    /// A station on a given database (PostgreSQL), else SQLite in `dir`.
    async fn start_on(
        dir: tempfile::TempDir,
        clock: Clock,
        extra: &[(&str, &str)],
        database_url: Option<&str>,
    ) -> VideoStation {
        let mut keys: Vec<(&str, &str)> = VIDEO_SETTINGS.to_vec();
        keys.extend_from_slice(extra);
        let settings = test_settings_with(dir.path(), database_url, &keys);
        let station = Station::start(settings, clock.clone())
            .await
            .expect("station starts");
        let key = read_operator_key(&dir.path().join("operator.key"));
        VideoStation {
            http: station.http_addr,
            grpc: station.grpc_addr,
            station: Some(station),
            dir,
            clock,
            key,
            client: reqwest::Client::new(),
        }
    }

    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(station) = self.station.take() {
            station.stop().await.expect("station stops cleanly");
        }
        self.dir
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .expect("valid URL")
            .connect()
            .await
            .expect("connect to the gRPC port")
    }

    async fn media(&self) -> MediaServiceClient<Channel> {
        MediaServiceClient::new(self.channel().await)
    }

    async fn playout(&self) -> PlayoutServiceClient<Channel> {
        PlayoutServiceClient::new(self.channel().await)
    }

    async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("GET answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("a body"))
    }

    /// Registers a file as an asset and waits until it is ready.
    async fn add_asset(&self, id: &str, path: &Path) {
        let mut playout = self.playout().await;
        playout
            .create_asset(authorized(
                pb::CreateAssetRequest {
                    asset: Some(pb::Asset {
                        id: id.to_owned(),
                        source_path: path.display().to_string(),
                        ..Default::default()
                    }),
                },
                &self.key,
            ))
            .await
            .expect("the asset is accepted");
        self.wait_ready(id).await;
    }

    async fn wait_ready(&self, id: &str) {
        let mut playout = self.playout().await;
        let deadline = tokio::time::Instant::now() + TRANSCODE_DEADLINE;
        loop {
            let asset = playout
                .get_asset(authorized(
                    pb::GetAssetRequest {
                        asset_id: id.to_owned(),
                    },
                    &self.key,
                ))
                .await
                .map(tonic::Response::into_inner);
            if let Ok(asset) = asset {
                assert_ne!(
                    asset.state,
                    pb::asset::State::Failed as i32,
                    "asset {id} failed: {}",
                    asset.error
                );
                if asset.state == pb::asset::State::Ready as i32 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "asset {id} was not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn create_channel(&self, id: &str, number: i32) {
        self.media()
            .await
            .create_channel(authorized(
                media::CreateChannelRequest {
                    channel: Some(media::Channel {
                        id: id.to_owned(),
                        number,
                        name: format!("Channel {number}"),
                        ..Default::default()
                    }),
                },
                &self.key,
            ))
            .await
            .expect("channel created");
    }

    async fn create_program(&self, id: &str, asset_id: &str, seconds: i64, live: bool) {
        self.media()
            .await
            .create_program(authorized(
                media::CreateProgramRequest {
                    program: Some(media::Program {
                        id: id.to_owned(),
                        title: id.to_owned(),
                        duration: Some(prost_types::Duration { seconds, nanos: 0 }),
                        asset_id: asset_id.to_owned(),
                        live,
                        ..Default::default()
                    }),
                },
                &self.key,
            ))
            .await
            .expect("program created");
    }

    async fn create_slot(
        &self,
        id: &str,
        channel: &str,
        program: &str,
        start_ms: i64,
        end_ms: i64,
        live: bool,
    ) {
        self.media()
            .await
            .create_slot(authorized(
                media::CreateSlotRequest {
                    channel_id: channel.to_owned(),
                    slot: Some(media::Slot {
                        id: id.to_owned(),
                        channel_id: channel.to_owned(),
                        program_id: program.to_owned(),
                        start_time: Some(timestamp(start_ms)),
                        end_time: Some(timestamp(end_ms)),
                        live,
                        ..Default::default()
                    }),
                },
                &self.key,
            ))
            .await
            .expect("slot created");
    }

    /// Waits until `/metrics` has a line.
    async fn wait_for_metric(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + onair_testkit::PATIENCE;
        loop {
            let (_, metrics) = self.get_text("/metrics").await;
            if metrics.lines().any(|candidate| candidate == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/metrics never showed {line}:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Moves the clock to `target_ms` (forward only).
    fn move_clock_to(&self, target_ms: i64) {
        let now = self.clock.now_ms();
        assert!(target_ms >= now, "the clock only moves forward");
        self.clock
            .advance(Duration::from_millis((target_ms - now) as u64));
    }
}

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A test clip: ffmpeg's test pattern with a tone, `seconds` long.
fn make_clip(dir: &Path, name: &str, seconds: f64) -> PathBuf {
    let path = dir.join(format!("{name}.mp4"));
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=10",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            &seconds.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
        ])
        .args(["-c:a", "aac", "-pix_fmt", "yuv420p"])
        .arg(&path)
        .status()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    assert!(status.success(), "ffmpeg made {name}");
    path
}

/// One segment of a media playlist, as a player reads it.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    sequence: i64,
    /// The discontinuity number players compute (hls.js's `cc`).
    discontinuity_number: i64,
    discontinuity: bool,
    uri: String,
    duration_ms: i64,
    pdt_ms: i64,
}

#[derive(Debug)]
struct MediaPlaylist {
    target_duration: i64,
    media_sequence: i64,
    discontinuity_sequence: i64,
    segments: Vec<Segment>,
    ended: bool,
}

fn parse_pdt(text: &str) -> i64 {
    let timestamp: jiff::Timestamp = text.parse().expect("an RFC 3339 date-time");
    timestamp.as_millisecond()
}

fn parse_media_playlist(text: &str) -> MediaPlaylist {
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("#EXTM3U"),
        "the playlist starts with #EXTM3U"
    );
    let mut playlist = MediaPlaylist {
        target_duration: -1,
        media_sequence: 0,
        discontinuity_sequence: 0,
        segments: Vec::new(),
        ended: false,
    };
    let mut discontinuity = false;
    let mut pdt = None;
    let mut duration = None;
    let mut discontinuities = 0;
    for line in lines {
        if let Some(value) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            playlist.target_duration = value.parse().expect("an integer target duration");
        } else if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            playlist.media_sequence = value.parse().expect("a media sequence");
        } else if let Some(value) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            playlist.discontinuity_sequence = value.parse().expect("a discontinuity sequence");
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
            discontinuities += 1;
        } else if let Some(value) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(parse_pdt(value));
        } else if let Some(value) = line.strip_prefix("#EXTINF:") {
            let seconds: f64 = value
                .trim_end_matches(',')
                .parse()
                .expect("a segment duration");
            duration = Some((seconds * 1000.0).round() as i64);
        } else if line == "#EXT-X-ENDLIST" {
            playlist.ended = true;
        } else if !line.starts_with('#') && !line.is_empty() {
            let sequence = playlist.media_sequence + playlist.segments.len() as i64;
            playlist.segments.push(Segment {
                sequence,
                discontinuity_number: playlist.discontinuity_sequence + discontinuities,
                discontinuity,
                uri: line.to_owned(),
                duration_ms: duration.take().expect("EXTINF before the URI"),
                pdt_ms: pdt.take().expect("a program date-time on every segment"),
            });
            discontinuity = false;
        }
    }
    playlist
}

/// Everything a player saw across reloads, checked at every reload.
#[derive(Default)]
struct Viewer {
    seen: BTreeMap<i64, Segment>,
    last_media_sequence: i64,
    last_discontinuity_sequence: i64,
    reloads: usize,
}

impl Viewer {
    fn reload(&mut self, text: &str, target_seconds: i64, window: usize) {
        let playlist = parse_media_playlist(text);
        assert_eq!(
            playlist.target_duration, target_seconds,
            "the target duration is constant"
        );
        assert!(!playlist.ended, "a live channel never ends");
        assert!(
            playlist.segments.len() >= window,
            "the window holds at least {window} segments:\n{text}"
        );
        assert!(
            playlist.media_sequence >= self.last_media_sequence,
            "the media sequence went back: {} after {}",
            playlist.media_sequence,
            self.last_media_sequence
        );
        assert!(
            playlist.discontinuity_sequence >= self.last_discontinuity_sequence,
            "the discontinuity sequence went back"
        );
        self.last_media_sequence = playlist.media_sequence;
        self.last_discontinuity_sequence = playlist.discontinuity_sequence;
        for segment in playlist.segments {
            let rounded = (segment.duration_ms + 500) / 1000;
            assert!(
                rounded <= target_seconds,
                "segment {} lasts {} ms, over the target duration",
                segment.sequence,
                segment.duration_ms
            );
            if let Some(earlier) = self.seen.get(&segment.sequence) {
                assert_eq!(
                    (&earlier.uri, earlier.discontinuity_number, earlier.pdt_ms),
                    (&segment.uri, segment.discontinuity_number, segment.pdt_ms),
                    "media sequence {} changed meaning between reloads",
                    segment.sequence
                );
            } else {
                self.seen.insert(segment.sequence, segment);
            }
        }
        self.reloads += 1;
    }

    /// The segments in order, checked for gaps in sequence and in time.
    fn timeline(&self) -> Vec<Segment> {
        let segments: Vec<Segment> = self.seen.values().cloned().collect();
        for pair in segments.windows(2) {
            assert_eq!(
                pair[1].sequence,
                pair[0].sequence + 1,
                "no sequence is skipped"
            );
            assert_eq!(
                pair[1].pdt_ms,
                pair[0].pdt_ms + pair[0].duration_ms,
                "segment {} starts where the one before it ends",
                pair[1].sequence
            );
            let continues = !pair[1].discontinuity;
            assert_eq!(
                pair[1].discontinuity_number,
                pair[0].discontinuity_number + i64::from(!continues),
                "the discontinuity number counts discontinuities"
            );
        }
        segments
    }
}

/// The first whole 10 s at least 20 s after the clock's time.
fn schedule_origin(clock: &Clock) -> i64 {
    let now = clock.now_ms();
    (now / 10_000 + 3) * 10_000
}

/// The station of the boundary tests: a channel with two programs, a gap,
/// the first program again, and nothing after it.
///
/// ```text
/// T0      T0+3    T0+6      T0+9    T0+12
/// | clip-a | clip-b |  (gap)  | clip-a |  (gap)
/// ```
async fn seed_boundaries(station: &VideoStation, sources: &Path) -> i64 {
    let clip_a = make_clip(sources, "a", 3.0);
    // 2.5 s: the transcoder pads it to three whole segments.
    let clip_b = make_clip(sources, "b", 2.5);
    station.add_asset("clip-a", &clip_a).await;
    station.add_asset("clip-b", &clip_b).await;
    station.wait_ready(onair_playout::DEFAULT_SLATE_ID).await;
    station.create_channel("one", 1).await;
    station.create_program("prog-a", "clip-a", 3, false).await;
    station.create_program("prog-b", "clip-b", 3, false).await;
    let origin = schedule_origin(&station.clock);
    station
        .create_slot("s1", "one", "prog-a", origin, origin + 3_000, false)
        .await;
    station
        .create_slot("s2", "one", "prog-b", origin + 3_000, origin + 6_000, false)
        .await;
    station
        .create_slot(
            "s3",
            "one",
            "prog-a",
            origin + 9_000,
            origin + 12_000,
            false,
        )
        .await;
    origin
}

/// Reads both renditions' playlists at each second from `from_ms` to
/// `until_ms`, as two players would.
async fn watch(station: &VideoStation, viewers: &mut [Viewer; 2], from_ms: i64, until_ms: i64) {
    let mut at = from_ms;
    while at <= until_ms {
        station.move_clock_to(at);
        for (viewer, rendition) in viewers.iter_mut().zip(["180p", "90p"]) {
            let (status, text) = station
                .get_text(&format!("/hls/one/{rendition}/index.m3u8"))
                .await;
            assert_eq!(status, 200, "{text}");
            viewer.reload(&text, 1, 6);
        }
        at += 1_000;
    }
}

/// What the boundary tests check on the whole timeline a viewer saw.
fn check_schedule_followed(viewers: &[Viewer; 2], origin: i64) {
    let timeline = viewers[0].timeline();
    assert_eq!(
        timeline,
        viewers[1].timeline(),
        "both renditions carry the same sequence, times and discontinuities"
    );
    let at = |pdt_ms: i64| {
        timeline
            .iter()
            .find(|segment| segment.pdt_ms == pdt_ms)
            .unwrap_or_else(|| panic!("no segment starts at T0{:+} ms", pdt_ms - origin))
    };
    // Each item starts on schedule, with a discontinuity, at its first segment.
    for (offset, uri) in [
        (0, "a/clip-a/0.ts"),
        (3_000, "a/clip-b/0.ts"),
        (9_000, "a/clip-a/0.ts"),
    ] {
        let segment = at(origin + offset);
        assert_eq!(segment.uri, uri, "at T0+{offset} ms");
        assert!(segment.discontinuity, "a new item at T0+{offset} ms");
    }
    for (offset, uri) in [(1_000, "a/clip-a/1.ts"), (5_000, "a/clip-b/2.ts")] {
        let segment = at(origin + offset);
        assert_eq!(segment.uri, uri);
        assert!(!segment.discontinuity, "inside an item, no discontinuity");
    }
    // The gap plays the slate, looped and cut to the gap.
    let slate_prefix = format!("a/{}/", onair_playout::DEFAULT_SLATE_ID);
    let gap: Vec<&Segment> = timeline
        .iter()
        .filter(|segment| segment.pdt_ms >= origin + 6_000 && segment.pdt_ms < origin + 9_000)
        .collect();
    assert_eq!(gap.len(), 3);
    assert!(
        gap.iter()
            .all(|segment| segment.uri.starts_with(&slate_prefix))
    );
    assert!(
        gap[0].discontinuity,
        "the slate starts with a discontinuity"
    );
}

#[tokio::test]
async fn the_live_playlist_follows_the_schedule_across_boundaries_and_a_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(SystemTime::now());
    let station = VideoStation::start(dir, clock, &[]).await;
    let origin = seed_boundaries(&station, sources.path()).await;

    let (status, master) = station.get_text("/hls/one/master.m3u8").await;
    assert_eq!(status, 200);
    assert!(master.starts_with("#EXTM3U"));
    assert!(master.contains("RESOLUTION=320x180"));
    assert!(master.contains("180p/index.m3u8") && master.contains("90p/index.m3u8"));

    let mut viewers = [Viewer::default(), Viewer::default()];
    watch(&station, &mut viewers, origin - 3_000, origin + 14_000).await;
    check_schedule_followed(&viewers, origin);

    // Every listed segment downloads, as MPEG-TS.
    let last = viewers[0].timeline().last().cloned().expect("segments");
    let response = station
        .client
        .get(station.url(&format!("/hls/one/180p/{}", last.uri)))
        .send()
        .await
        .expect("segment answers");
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.expect("segment body");
    assert_eq!(bytes[0], 0x47, "an MPEG-TS sync byte");

    check_cards(&station, "clip-a").await;
    check_share_card(&station, "s1", "clip-a").await;

    // The aired slot is on demand, complete, from its start.
    let (status, text) = station.get_text("/vod/s1/180p/index.m3u8").await;
    assert_eq!(status, 200, "{text}");
    let replay = parse_media_playlist(&text);
    assert!(replay.ended, "an aired slot is a complete playlist");
    let uris: Vec<&str> = replay
        .segments
        .iter()
        .map(|segment| segment.uri.as_str())
        .collect();
    assert_eq!(
        uris,
        vec!["a/clip-a/0.ts", "a/clip-a/1.ts", "a/clip-a/2.ts"]
    );
    assert_eq!(
        replay.segments[0].pdt_ms, origin,
        "replay time 0 is the slot's start (vposMs 0)"
    );
    let (status, _) = station.get_text("/vod/s1/master.m3u8").await;
    assert_eq!(status, 200);
    let (status, _) = station.get_text("/vod/nope/master.m3u8").await;
    assert_eq!(status, 404);
    let (status, _) = station.get_text("/hls/nope/180p/index.m3u8").await;
    assert_eq!(status, 404);

    let state = station
        .playout()
        .await
        .get_playout_state(pb::GetPlayoutStateRequest {
            channel_id: "one".to_owned(),
        })
        .await
        .expect("playout state")
        .into_inner();
    assert_eq!(state.media_sequence, viewers[0].last_media_sequence);

    let (_, metrics) = station.get_text("/metrics").await;
    // clip-a, clip-b and the station's slate.
    assert!(
        metrics.contains("onair_playout_transcodes_total{outcome=\"ready\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("onair_playout_segments_aired_total{kind=\"program\"}"));
    assert!(metrics.contains("onair_playout_transcode_jobs 0"));
    station.stop().await;
}

/// A share link of `slot` (whose program is `asset_id`'s) shows the
/// asset's card in its page, at a URL that serves it.
async fn check_share_card(station: &VideoStation, slot: &str, asset_id: &str) {
    let response = station
        .client
        .post(station.url("/v1/shares"))
        .bearer_auth(&station.key)
        .json(&serde_json::json!({"slotId": slot}))
        .send()
        .await
        .expect("POST /v1/shares answers");
    assert_eq!(response.status(), 201);
    let share: serde_json::Value = response.json().await.expect("json");
    let page = station
        .client
        .get(share["url"].as_str().expect("a share url"))
        .send()
        .await
        .expect("the share page answers")
        .text()
        .await
        .expect("html");
    let card = station.url(&format!("/images/assets/{asset_id}/card.jpg"));
    assert!(
        page.contains(&format!("<meta property=\"og:image\" content=\"{card}\">")),
        "{page}"
    );
    let response = station
        .client
        .get(&card)
        .send()
        .await
        .expect("card answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
}

/// Checks the pictures share pages show: an asset's card and the station's
/// are JPEGs of exactly the card size, for GET and HEAD, and a card of no
/// asset or of a malformed id is refused as the other video paths refuse.
async fn check_cards(station: &VideoStation, asset_id: &str) {
    let cards = [
        format!("/images/assets/{asset_id}/card.jpg"),
        "/images/station/card.jpg".to_owned(),
    ];
    for (index, path) in cards.iter().enumerate() {
        let response = station
            .client
            .get(station.url(path))
            .send()
            .await
            .expect("GET answers");
        assert_eq!(response.status(), 200, "GET {path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "image/jpeg", "GET {path}");
        assert_eq!(
            headers["cache-control"], "public, max-age=3600",
            "GET {path}"
        );
        let jpeg = response.bytes().await.expect("a body");
        let file = station.dir.path().join(format!("card-{index}.jpg"));
        std::fs::write(&file, &jpeg).expect("write the card");
        let output = tokio::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(["-show_entries", "stream=codec_name,width,height"])
            .args(["-of", "csv=p=0"])
            .arg(&file)
            .output()
            .await
            .expect("ffprobe runs");
        assert!(output.status.success(), "ffprobe reads {path}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "mjpeg,1200,630",
            "{path} is a JPEG of the card size"
        );

        let response = station
            .client
            .head(station.url(path))
            .send()
            .await
            .expect("HEAD answers");
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert_eq!(response.headers()["content-type"], "image/jpeg");
    }

    let response = station
        .client
        .get(station.url("/images/assets/no-such-asset/card.jpg"))
        .send()
        .await
        .expect("GET answers");
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["code"], 5, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no-such-asset"),
        "{body}"
    );

    // Ids that are not ids, one of them a path once decoded.
    for path in [
        "/images/assets/not.an.id/card.jpg",
        "/images/assets/..%2F..%2Fonair.db/card.jpg",
    ] {
        let response = station
            .client
            .get(station.url(path))
            .send()
            .await
            .expect("GET answers");
        assert_eq!(response.status(), 400, "GET {path}");
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(body["code"], 3, "{body}");
    }
}

#[tokio::test]
async fn sequences_survive_a_restart() {
    sequences_survive_a_restart_on(None).await;
}

#[tokio::test]
async fn sequences_survive_a_restart_on_postgresql() {
    let database = onair_testkit::TestDatabase::create().await;
    sequences_survive_a_restart_on(Some(&database.url)).await;
}

async fn sequences_survive_a_restart_on(database_url: Option<&str>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(SystemTime::now());
    let station = VideoStation::start_on(dir, clock.clone(), &[], database_url).await;
    let origin = seed_boundaries(&station, sources.path()).await;
    let mut viewers = [Viewer::default(), Viewer::default()];
    watch(&station, &mut viewers, origin - 3_000, origin + 4_000).await;

    // The station stops for two seconds, in the middle of clip-b.
    let dir = station.stop().await;
    clock.advance(Duration::from_secs(2));
    let station = VideoStation::start_on(dir, clock.clone(), &[], database_url).await;
    watch(&station, &mut viewers, origin + 6_000, origin + 14_000).await;
    check_schedule_followed(&viewers, origin);
    station.stop().await;
}

#[tokio::test]
async fn ffmpeg_decodes_a_minute_across_boundaries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(SystemTime::now());
    // A window of a whole minute, so the player can read it all at once.
    let station = VideoStation::start(dir, clock, &[("playout.window_segments", "70")]).await;
    let origin = seed_boundaries(&station, sources.path()).await;
    station.move_clock_to(origin + 50_000);
    let (status, text) = station.get_text("/hls/one/90p/index.m3u8").await;
    assert_eq!(status, 200, "{text}");
    // The playlist is already full: a minute and more of the channel, with
    // every boundary in it.
    let url = station.url("/hls/one/master.m3u8");
    let output = tokio::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-live_start_index",
            "0",
            "-i",
            &url,
        ])
        .args([
            "-map", "0:v:0", "-map", "0:a:0", "-t", "60", "-f", "null", "-",
        ])
        .output()
        .await
        .expect("ffmpeg runs");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ffmpeg failed: {errors}");
    assert!(errors.trim().is_empty(), "ffmpeg reported errors: {errors}");
    station.stop().await;
}

#[tokio::test]
async fn live_ingest_airs_during_its_slot_then_the_slate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(SystemTime::now());
    let station = VideoStation::start(dir, clock, &[]).await;
    station.wait_ready(onair_playout::DEFAULT_SLATE_ID).await;
    station.create_channel("one", 1).await;
    station.create_program("show", "", 0, true).await;
    let origin = schedule_origin(&station.clock);
    station
        .create_slot("live-1", "one", "show", origin, origin + 60_000, true)
        .await;
    station.move_clock_to(origin + 1_000);

    let mut playout = station.playout().await;
    let key = playout
        .issue_stream_key(authorized(
            pb::IssueStreamKeyRequest {
                slot_id: "live-1".to_owned(),
            },
            &station.key,
        ))
        .await
        .expect("a stream key")
        .into_inner();
    assert!(
        key.ingest_url
            .ends_with(&format!("/ingest/{}/index.m3u8", key.stream_key))
    );

    // The encoder pushes 4 s of video with HTTP PUT, as fast as it can.
    push_live(&key.ingest_url).await;
    // ffmpeg does not wait for the answers to its PUTs: the station may
    // still be storing the last ones.
    station
        .wait_for_metric("onair_playout_live_segments_received_total 4")
        .await;

    let mut viewer = Viewer::default();
    let mut at = origin + 1_000;
    while at <= origin + 10_000 {
        station.move_clock_to(at);
        let (status, text) = station.get_text("/hls/one/180p/index.m3u8").await;
        assert_eq!(status, 200, "{text}");
        viewer.reload(&text, 1, 6);
        at += 1_000;
    }
    let timeline = viewer.timeline();
    let live: Vec<&Segment> = timeline
        .iter()
        .filter(|segment| segment.uri.starts_with("l/live-1/"))
        .collect();
    assert_eq!(
        live.len(),
        4,
        "the channel shows the 4 pushed segments: {timeline:#?}"
    );
    assert!(
        live[0].discontinuity,
        "the live feed is spliced in with a discontinuity"
    );
    let after_live = timeline
        .iter()
        .find(|segment| segment.sequence == live[3].sequence + 1)
        .expect("something airs after the encoder stopped");
    assert!(
        after_live
            .uri
            .starts_with(&format!("a/{}/", onair_playout::DEFAULT_SLATE_ID)),
        "the slate airs once the encoder stops: {after_live:?}"
    );
    let response = station
        .client
        .get(station.url(&format!("/hls/one/90p/{}", live[0].uri)))
        .send()
        .await
        .expect("live segment answers");
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body")[0], 0x47);

    // The encoder comes back (and starts its file names over): the live
    // feed airs again, after a discontinuity.
    push_live(&key.ingest_url).await;
    station
        .wait_for_metric("onair_playout_live_segments_received_total 8")
        .await;
    while at <= origin + 16_000 {
        station.move_clock_to(at);
        let (status, text) = station.get_text("/hls/one/180p/index.m3u8").await;
        assert_eq!(status, 200, "{text}");
        viewer.reload(&text, 1, 6);
        at += 1_000;
    }
    let timeline = viewer.timeline();
    let back = timeline
        .iter()
        .find(|segment| segment.uri == "l/live-1/4.ts")
        .expect("the second push airs");
    assert!(back.discontinuity);
    let previous = timeline
        .iter()
        .find(|segment| segment.sequence == back.sequence - 1)
        .expect("a segment before it");
    assert!(
        previous
            .uri
            .starts_with(&format!("a/{}/", onair_playout::DEFAULT_SLATE_ID))
    );

    // The live slot is on demand as it airs (an event playlist).
    let (status, text) = station.get_text("/vod/live-1/180p/index.m3u8").await;
    assert_eq!(status, 200);
    let replay = parse_media_playlist(&text);
    assert!(!replay.ended, "the slot is still on air");
    assert!(
        replay
            .segments
            .iter()
            .any(|segment| segment.uri == live[0].uri)
    );
    station.stop().await;
}

/// An encoder pushing 4 s of test pattern (1 s segments) with HTTP PUT, as
/// fast as it can.
async fn push_live(ingest_url: &str) {
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=10",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=220:sample_rate=48000",
            "-t",
            "4",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "10",
            "-keyint_min",
            "10",
        ])
        .args(["-sc_threshold", "0", "-pix_fmt", "yuv420p", "-c:a", "aac"])
        .args(["-f", "hls", "-hls_time", "1", "-method", "PUT", ingest_url])
        .status()
        .await
        .expect("ffmpeg runs");
    assert!(status.success(), "the encoder pushed");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(SystemTime::now());
    let station = VideoStation::start(dir, clock, &[]).await;
    station.create_channel("one", 1).await;
    station.create_program("show", "", 0, true).await;
    let origin = schedule_origin(&station.clock);
    station
        .create_slot("live-1", "one", "show", origin, origin + 60_000, true)
        .await;

    // A file that is not video.
    let text_file = station.dir.path().join("notes.txt");
    std::fs::write(&text_file, "this is not a video").expect("write");
    let response = station
        .client
        .post(station.url("/v1/assets"))
        .bearer_auth(&station.key)
        .json(&serde_json::json!({"sourcePath": text_file.display().to_string()}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("ffmpeg cannot read"), "{message}");

    let response = station
        .client
        .post(station.url("/v1/assets"))
        .bearer_auth(&station.key)
        .json(&serde_json::json!({"sourcePath": "/no/such/file.mp4"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);

    let response = station
        .client
        .post(station.url("/v1/assets"))
        .json(&serde_json::json!({"sourcePath": text_file.display().to_string()}))
        .send()
        .await
        .expect("answers");
    assert_eq!(
        response.status(),
        401,
        "registering an asset needs an operator"
    );

    // A wrong stream key.
    let response = station
        .client
        .put(station.url("/ingest/not-a-key/index0.ts"))
        .body(vec![0x47u8; 188])
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 403);

    let key = station
        .playout()
        .await
        .issue_stream_key(authorized(
            pb::IssueStreamKeyRequest {
                slot_id: "live-1".to_owned(),
            },
            &station.key,
        ))
        .await
        .expect("a stream key")
        .into_inner()
        .stream_key;

    // Paths that try to leave the ingest folder, sent as written.
    for path in [
        format!("/ingest/{key}/.."),
        format!("/ingest/{key}/..%2F..%2Fonair.db"),
        format!("/ingest/{key}/x.sh"),
    ] {
        let status = raw_put(station.http, &path, b"data").await;
        assert_eq!(status, 400, "PUT {path}");
    }

    // A body over playout.ingest_max_bytes.
    let response = station
        .client
        .put(station.url(&format!("/ingest/{key}/index0.ts")))
        .body(vec![0x47u8; 500_000])
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 413);

    // A push once the slot has ended: it would never air.
    station.move_clock_to(origin + 60_000);
    let response = station
        .client
        .put(station.url(&format!("/ingest/{key}/index0.ts")))
        .body(vec![0x47u8; 188])
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has ended"),
        "{body}"
    );

    // A stream key for a slot that is not live.
    station.create_program("film", "", 60, false).await;
    station
        .create_slot(
            "film-1",
            "one",
            "film",
            origin + 60_000,
            origin + 120_000,
            false,
        )
        .await;
    let refused = station
        .playout()
        .await
        .issue_stream_key(authorized(
            pb::IssueStreamKeyRequest {
                slot_id: "film-1".to_owned(),
            },
            &station.key,
        ))
        .await
        .expect_err("a prepared slot takes no ingest");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    station.stop().await;
}

/// A PUT with the path exactly as given (HTTP clients normalise `..`).
async fn raw_put(address: SocketAddr, path: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: onair\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line")
}

#[tokio::test]
async fn onair_asset_add_shows_progress_and_prints_the_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sources = tempfile::tempdir().expect("temp dir");
    let clock = Clock::manual(SystemTime::now());
    let station = VideoStation::start(dir, clock, &[]).await;
    let clip = make_clip(sources.path(), "clip", 2.0);
    let output = asset_add(&station, &["--id", "from-cli"], &clip).await;
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{progress}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "from-cli");
    assert!(progress.contains("100% ready"), "{progress}");
    assert!(progress.contains("ready in 180p, 90p"), "{progress}");

    // The API tells the same: the job's last word is 100 % and ready.
    let response = station
        .client
        .get(station.url("/v1/assets/from-cli/job:watch"))
        .bearer_auth(&station.key)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("NDJSON");
    let last: serde_json::Value =
        serde_json::from_str(body.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["result"]["percent"], 100.0, "{body}");
    assert_eq!(last["result"]["state"], "READY", "{body}");

    // The same file sent over the connection, for a station elsewhere.
    let output = asset_add(&station, &["--upload", "--id", "uploaded"], &clip).await;
    let progress = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{progress}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "uploaded");

    // An upload over playout.max_upload_bytes.
    let big = sources.path().join("big.ts");
    std::fs::write(&big, vec![0x47u8; 3_000_000]).expect("write");
    let output = asset_add(&station, &["--upload"], &big).await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("playout.max_upload_bytes"), "{error}");

    // A file that is not video: a clear error and a failing exit code.
    let notes = sources.path().join("notes.txt");
    std::fs::write(&notes, "not a video").expect("write");
    let output = asset_add(&station, &[], &notes).await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("ffmpeg cannot read"), "{error}");
    let output = asset_add(&station, &["--upload"], &notes).await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("ffmpeg cannot read"), "{error}");
    station.stop().await;
}

/// Runs `onair asset add OPTIONS FILE` against the station, as its operator.
async fn asset_add(
    station: &VideoStation,
    options: &[&str],
    file: &std::path::Path,
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["asset", "add"])
        .args(options)
        .args(["--grpc", &station.grpc.to_string(), "--token", &station.key])
        .arg(file)
        .output()
        .await
        .expect("onair runs")
}

/// `onair demo` run as a newcomer runs it: three channels that play at once,
/// a schedule around now with gaps.
#[tokio::test]
async fn onair_demo_serves_three_channels_with_gaps() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("demo");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_onair"))
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("ONAIR_LOG_FORMAT", "json")
        .env("ONAIR_LOG_LEVEL", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("onair demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if value["message"] == "listening" {
                let http = value["http"].as_str().unwrap_or_default().to_owned();
                let _ = sender.send(http);
            }
        }
    });
    let http = receiver
        .recv_timeout(onair_testkit::PATIENCE)
        .expect("the demo logs its address");
    let client = reqwest::Client::new();

    // Every channel plays (the slate at first) within the wait.
    for channel in ["news", "anime", "sports"] {
        let url = format!("http://{http}/hls/{channel}/360p/index.m3u8");
        let deadline = tokio::time::Instant::now() + onair_testkit::PATIENCE;
        loop {
            let response = client.get(&url).send().await.expect("answers");
            if response.status() == 200 {
                let playlist = parse_media_playlist(&response.text().await.expect("text"));
                assert!(playlist.segments.len() >= 6);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{channel} did not air"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The schedule runs from before now to hours ahead, with gaps.
    let now = jiff::Timestamp::now();
    let later = now + jiff::SignedDuration::from_hours(2);
    let gaps: serde_json::Value = client
        .get(format!(
            "http://{http}/v1/channels/news/gaps?startTime={now}&endTime={later}"
        ))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    let count = gaps["gaps"].as_array().map_or(0, Vec::len);
    assert!(count >= 10, "the demo schedule has gaps: {gaps}");
    let now_next: serde_json::Value = client
        .get(format!("http://{http}/v1/channels/anime/now"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert!(
        now_next["next"]["program"]["title"].is_string(),
        "{now_next}"
    );

    // SIGTERM, so the station stops its ffmpeg children as it shuts down.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = child.wait().expect("the demo exits");
    assert!(exit.success(), "the demo stops cleanly: {exit}");
}
