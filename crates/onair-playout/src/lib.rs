//! The playout service: it turns source files into HLS renditions, computes
//! each channel's live stream from the schedule, takes live ingest and keeps
//! every aired slot for replay.
//!
//! AbemaTV's drama and anime are prepared file by file and stitched together
//! by the schedule; only live shows are encoded live. So here:
//!
//! - [`transcode`]: ffmpeg makes every asset into the station's ladder of
//!   renditions, cut into segments of one fixed length on aligned keyframes.
//! - [`timeline`]: a pure function decides, segment by segment, what a
//!   channel airs (a program's segment, a live segment, or the slate) and
//!   [`linear`] keeps each channel's playlist from it. No live transcode is
//!   needed to air a prepared program: the playlists name the prepared
//!   segments.
//! - [`ingest`]: an encoder pushes HLS with HTTP PUT under a stream key
//!   issued for a live slot.
//! - [`storage`]: segments on local disk, behind a trait an object store
//!   can implement.
//! - [`http`]: `/hls`, `/vod` and `/ingest`.
//!
//! Metrics: `onair_playout_transcode_jobs` (queued or running),
//! `onair_playout_transcodes_total{outcome}`,
//! `onair_playout_segments_aired_total{kind}` (program, slate, live) and
//! `onair_playout_live_segments_received_total`.
//!
//! The service talks to the media service only through its contract
//! (`GetChannel`, `GetTimetable`, `GetSlot`, `WatchSchedule`,
//! `ListChannels`).

pub mod assets;
pub mod error;
pub mod http;
pub mod ingest;
pub mod ladder;
pub mod linear;
pub mod service;
pub mod storage;
pub mod store;
pub mod timeline;
pub mod transcode;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use onair_kit::auth::Authenticator;
use onair_kit::clock::Clock;
use onair_kit::metrics::Registry;
use onair_proto::ServiceChannel;
use onair_proto::playout::v1 as pb;

pub use error::PlayoutError;
pub use service::PlayoutServiceImpl;
pub use store::PlayoutStore;

use crate::assets::AssetIndex;
use crate::ingest::{Ingest, LiveSegments};
use crate::ladder::Ladder;
use crate::linear::Linear;
use crate::storage::SegmentStorage;
use crate::store::AssetRecord;
use crate::transcode::{EncodeSettings, Transcoder};

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

/// The running playout: shared by its gRPC service and its HTTP routes.
#[derive(Clone)]
pub struct Playout {
    inner: Arc<Inner>,
}

struct Inner {
    store: PlayoutStore,
    storage: Arc<dyn SegmentStorage>,
    transcoder: Transcoder,
    linear: Linear,
    ingest: Ingest,
    media: ServiceChannel,
    clock: Clock,
    authenticator: Authenticator,
    settings: PlayoutSettings,
}

impl Playout {
    /// Opens the playout on its store and storage; `media` reaches the media
    /// service.
    pub async fn start(
        store: PlayoutStore,
        storage: Arc<dyn SegmentStorage>,
        media: ServiceChannel,
        clock: Clock,
        authenticator: Authenticator,
        settings: PlayoutSettings,
        metrics: Registry,
    ) -> Result<Playout, PlayoutError> {
        settings.check().map_err(PlayoutError::InvalidArgument)?;
        let assets = AssetIndex::new(settings.encode.ladder.names());
        assets.load(&store).await?;
        let live = LiveSegments::new(store.clone());
        let transcoder = Transcoder::new(
            store.clone(),
            storage.clone(),
            assets.clone(),
            clock.clone(),
            settings.clone(),
            metrics.clone(),
        );
        let linear = Linear::new(
            store.clone(),
            media.clone(),
            clock.clone(),
            assets.clone(),
            live.clone(),
            settings.clone(),
            metrics.clone(),
        );
        let ingest = Ingest::new(
            store.clone(),
            storage.clone(),
            live,
            linear.clone(),
            clock.clone(),
            settings.encode.segment_seconds,
            metrics,
        );
        tracing::info!(
            ladder = %settings.encode.ladder,
            segment_seconds = settings.encode.segment_seconds,
            window_segments = settings.window_segments,
            "playout started"
        );
        Ok(Playout {
            inner: Arc::new(Inner {
                store,
                storage,
                transcoder,
                linear,
                ingest,
                media,
                clock,
                authenticator,
                settings,
            }),
        })
    }

    /// Starts the background work: transcode workers, the station's slate,
    /// the schedule watch and the ticker that keeps every channel current.
    pub async fn spawn_background(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, PlayoutError> {
        let mut tasks = self.inner.transcoder.spawn_workers().await?;
        let playout = self.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = playout.ensure_default_slate().await {
                tracing::error!(error = %error, "cannot make the station's slate; gaps wait for a channel slate");
            }
        }));
        tasks.push(self.inner.linear.spawn_schedule_watch());
        tasks.push(self.inner.linear.spawn_ticker());
        Ok(tasks)
    }

    /// Makes the station's own slate once: a card generated with ffmpeg,
    /// transcoded like any asset.
    async fn ensure_default_slate(&self) -> Result<(), PlayoutError> {
        let settings = &self.inner.settings;
        if self
            .inner
            .store
            .asset(&settings.default_slate_id)
            .await?
            .is_some()
        {
            return Ok(());
        }
        // One segment long, so that a gap of any length is whole slates: an
        // asset cut between two segments leaves a few milliseconds of audio
        // (AAC frames do not end on segment boundaries) overlapping the
        // next item's.
        let seconds = settings.encode.segment_seconds;
        transcode::generate_slate_source(
            &settings.ffmpeg,
            &settings.slate_source,
            seconds,
            settings.encode.frame_rate,
        )
        .await
        .map_err(PlayoutError::Unavailable)?;
        let probe = transcode::probe(&settings.ffprobe, &settings.slate_source)
            .await
            .map_err(PlayoutError::Unavailable)?;
        let record = AssetRecord {
            id: settings.default_slate_id.clone(),
            source_path: settings.slate_source.display().to_string(),
            state: pb::asset::State::Queued,
            duration_ms: probe.duration_ms,
            segment_durations_ms: Vec::new(),
            renditions: Vec::new(),
            error: String::new(),
            attempts: 0,
            create_time_ms: self.inner.clock.now_ms(),
        };
        match self.inner.store.insert_asset(&record).await {
            Ok(()) => {}
            // Another process made it first.
            Err(PlayoutError::AlreadyExists(_)) => return Ok(()),
            Err(error) => return Err(error),
        }
        self.inner.transcoder.enqueue(&record);
        Ok(())
    }

    /// The gRPC service.
    pub fn service(&self) -> PlayoutServiceImpl {
        PlayoutServiceImpl::new(self.clone())
    }

    /// `/hls`, `/vod` and `/ingest`.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    pub(crate) fn settings(&self) -> &PlayoutSettings {
        &self.inner.settings
    }

    pub(crate) fn linear(&self) -> &Linear {
        &self.inner.linear
    }

    pub(crate) fn ingest(&self) -> &Ingest {
        &self.inner.ingest
    }

    pub(crate) fn storage(&self) -> &Arc<dyn SegmentStorage> {
        &self.inner.storage
    }

    pub(crate) fn store(&self) -> &PlayoutStore {
        &self.inner.store
    }

    pub(crate) fn transcoder(&self) -> &Transcoder {
        &self.inner.transcoder
    }

    pub(crate) fn media(&self) -> &ServiceChannel {
        &self.inner.media
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.inner.authenticator
    }
}
