//! What the playout is told: the settings of every transcode, playlist,
//! live ingest and replay, with their defaults and bounds.

use std::path::PathBuf;
use std::time::Duration;

use onair_kit::config::{
    ConfigError, Key, Section, Settings, count_within, positive, positive_milliseconds,
    positive_seconds, url_with_scheme,
};

use crate::ladder::Ladder;

/// The id of the station's own slate, aired in gaps on channels without one.
pub const DEFAULT_SLATE_ID: &str = "onair-slate";

/// What the playout needs to know.
#[derive(Debug, Clone)]
pub struct PlayoutSettings {
    /// The ladder, segment length, frame rate and preset of every transcode.
    pub encode: EncodeSettings,
    /// How many segments a live playlist lists (at least 6, as Apple asks).
    pub window_segments: u32,
    /// The longest stop after which the timeline airs the missed time
    /// rather than jumping to the present.
    pub max_catch_up: Duration,
    /// How long a live slot waits for its encoder's next segment before
    /// airing the slate.
    pub live_wait: Duration,
    /// How long a channel's schedule is trusted without a change event.
    pub schedule_refresh: Duration,
    /// How often channels are brought up to the present when nobody asks.
    pub tick: Duration,
    /// How many transcodes run at once.
    pub transcode_workers: u32,
    /// How many times a transcode is tried before the asset fails.
    pub transcode_attempts: u32,
    /// The pause before a retry, times the attempt number.
    pub transcode_retry_delay: Duration,
    /// How long one ffmpeg run may take.
    pub transcode_timeout: Duration,
    /// The largest file an encoder may push, in bytes.
    pub ingest_max_bytes: usize,
    /// The most segments one replay playlist lists.
    pub max_replay_segments: u32,
    /// The ffmpeg and ffprobe commands.
    pub ffmpeg: String,
    /// See `ffmpeg`.
    pub ffprobe: String,
    /// The largest file `UploadAsset` takes, in bytes.
    pub max_upload_bytes: u64,
    /// Where uploaded files are kept (they are the assets' sources).
    pub upload_dir: PathBuf,
    /// Where transcodes write before their segments are stored.
    pub work_dir: PathBuf,
    /// Where the station's slate source is generated.
    pub slate_source: PathBuf,
    /// The station's own slate asset id.
    pub default_slate_id: String,
    /// The base URL encoders push to (`http://host:8080`).
    pub public_url: String,
}

impl PlayoutSettings {
    /// Settings for a station whose data lives in `data_dir`, with the
    /// ladder (`NAME:WxH:KBPS,…`) and segment length given, the rest default.
    pub fn new(
        data_dir: &std::path::Path,
        ladder: &str,
        audio_kbps: u32,
        segment_seconds: u32,
    ) -> Result<PlayoutSettings, String> {
        if segment_seconds == 0 || segment_seconds > 60 {
            return Err(format!(
                "segment length {segment_seconds} s is out of range: use 1 to 60"
            ));
        }
        Ok(PlayoutSettings {
            encode: EncodeSettings {
                ladder: Ladder::parse(ladder, audio_kbps)?,
                segment_seconds,
                frame_rate: 25,
                preset: "veryfast".to_owned(),
            },
            window_segments: 10,
            max_catch_up: Duration::from_secs(120),
            live_wait: Duration::from_secs(u64::from(segment_seconds) * 2),
            schedule_refresh: Duration::from_secs(10),
            tick: Duration::from_millis(250),
            transcode_workers: 1,
            transcode_attempts: 3,
            transcode_retry_delay: Duration::from_secs(1),
            transcode_timeout: Duration::from_secs(3600),
            ingest_max_bytes: 32 * 1024 * 1024,
            max_replay_segments: 20_000,
            ffmpeg: "ffmpeg".to_owned(),
            ffprobe: "ffprobe".to_owned(),
            max_upload_bytes: 4 * 1024 * 1024 * 1024,
            upload_dir: data_dir.join("playout").join("uploads"),
            work_dir: data_dir.join("playout").join("work"),
            slate_source: data_dir.join("playout").join("slate.mp4"),
            default_slate_id: DEFAULT_SLATE_ID.to_owned(),
            public_url: "http://127.0.0.1:8080".to_owned(),
        })
    }

    /// Checks the bounds that settings from a file could break.
    pub fn check(&self) -> Result<(), String> {
        if self.window_segments < 6 {
            return Err(format!(
                "the window of {} segments is too short: players need at least 6",
                self.window_segments
            ));
        }
        if self.encode.frame_rate == 0 || self.encode.frame_rate > 120 {
            return Err(format!(
                "frame rate {} is out of range: use 1 to 120",
                self.encode.frame_rate
            ));
        }
        Ok(())
    }
}

/// What `playout.ladder` takes.
const LADDER_EXPECTED: &str = "NAME:WIDTHxHEIGHT:KBPS renditions separated by commas, e.g. 720p:1280x720:2800,360p:640x360:800";

/// The x264 presets, fastest first.
const X264_PRESETS: [&str; 9] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
];

impl Section for PlayoutSettings {
    const KEYS: &'static [Key] = &[
        Key::with_default("playout.ladder", "720p:1280x720:2800,360p:640x360:800"),
        Key::with_default("playout.audio_kbps", "128"),
        Key::with_default("playout.segment_seconds", "4"),
        Key::with_default("playout.frame_rate", "25"),
        Key::with_default("playout.x264_preset", "veryfast"),
        Key::with_default("playout.window_segments", "10"),
        Key::with_default("playout.max_catch_up_seconds", "120"),
        Key::with_default("playout.live_wait_ms", "8000"),
        Key::with_default("playout.schedule_refresh_seconds", "10"),
        Key::with_default("playout.transcode_workers", "1"),
        Key::with_default("playout.transcode_attempts", "3"),
        Key::with_default("playout.transcode_timeout_seconds", "3600"),
        Key::with_default("playout.ingest_max_bytes", "33554432"),
        Key::with_default("playout.max_upload_bytes", "4294967296"),
        Key::optional("playout.public_url"),
    ];

    /// Reads the `playout.*` keys; encoders are told to push to the HTTP
    /// address unless `playout.public_url` says otherwise.
    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        let seconds = "a whole number of seconds";
        let bytes = "a number of bytes";
        let ladder = layers.required("playout.ladder", LADDER_EXPECTED, |value| {
            Some(value.to_owned()).filter(|value| !value.trim().is_empty())
        })?;
        let audio_kbps = layers.required(
            "playout.audio_kbps",
            "kbit/s from 32 to 512",
            count_within(32..=512),
        )?;
        let segment_seconds = layers.required(
            "playout.segment_seconds",
            "a whole number of seconds from 1 to 60",
            count_within(1..=60),
        )?;
        let mut playout =
            PlayoutSettings::new(&settings.data_dir, &ladder, audio_kbps, segment_seconds)
                .map_err(|reason| {
                    layers.invalid("playout.ladder", &format!("{LADDER_EXPECTED} ({reason})"))
                })?;
        playout.encode.frame_rate = layers.required(
            "playout.frame_rate",
            "frames a second from 1 to 120",
            count_within(1..=120),
        )?;
        playout.encode.preset = layers.required(
            "playout.x264_preset",
            "an x264 preset: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow",
            |value| X264_PRESETS.contains(&value).then(|| value.to_owned()),
        )?;
        playout.window_segments = layers.required(
            "playout.window_segments",
            "a number of segments from 6 to 1000 (players need at least 6)",
            count_within(6..=1000),
        )?;
        playout.max_catch_up =
            layers.required("playout.max_catch_up_seconds", seconds, positive_seconds)?;
        playout.live_wait = layers.required(
            "playout.live_wait_ms",
            "a whole number of milliseconds",
            positive_milliseconds,
        )?;
        playout.schedule_refresh = layers.required(
            "playout.schedule_refresh_seconds",
            seconds,
            positive_seconds,
        )?;
        playout.transcode_workers = layers.required(
            "playout.transcode_workers",
            "a number of workers from 1 to 64",
            count_within(1..=64),
        )?;
        playout.transcode_attempts = layers.required(
            "playout.transcode_attempts",
            "a number of attempts from 1 to 10",
            count_within(1..=10),
        )?;
        playout.transcode_timeout = layers.required(
            "playout.transcode_timeout_seconds",
            seconds,
            positive_seconds,
        )?;
        playout.ingest_max_bytes = layers.required("playout.ingest_max_bytes", bytes, |value| {
            positive(value).and_then(|bytes| usize::try_from(bytes).ok())
        })?;
        playout.max_upload_bytes = layers.required("playout.max_upload_bytes", bytes, positive)?;
        playout.public_url = layers
            .parse(
                "playout.public_url",
                "an http:// or https:// URL",
                |value| url_with_scheme(value, &["http", "https"]),
            )?
            .unwrap_or_else(|| format!("http://{}", settings.http_addr));
        Ok(playout)
    }
}

/// The encoding parameters shared by every job.
#[derive(Debug, Clone)]
pub struct EncodeSettings {
    /// The renditions every asset is transcoded into.
    pub ladder: Ladder,
    /// The segment length, a whole number of seconds.
    pub segment_seconds: u32,
    /// The output frame rate, in frames per second (25 by default).
    pub frame_rate: u32,
    /// The x264 preset (`veryfast` by default).
    pub preset: String,
}
