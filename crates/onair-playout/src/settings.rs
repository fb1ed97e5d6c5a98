//! What the playout is told: the settings of every transcode, playlist,
//! live ingest and replay, with their defaults and bounds.

use std::path::PathBuf;
use std::time::Duration;

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
