//! The running playout: the transcoder, each channel's linear stream and
//! live ingest, started together over one set of tables and segment store,
//! and shared by the gRPC service ([`service`](crate::service)) and the
//! HTTP routes ([`http`](crate::http)).

use std::path::Path;
use std::sync::Arc;

use onair_kit::auth::Authenticator;
use onair_kit::clock::Clock;
use onair_kit::metrics::Registry;
use onair_proto::ServiceChannel;

use crate::asset_index::AssetIndex;
use crate::card;
use crate::error::PlayoutError;
use crate::ingest::Ingest;
use crate::linear::Linear;
use crate::live_segments::LiveSegments;
use crate::segment_store::SegmentStorage;
use crate::settings::PlayoutSettings;
use crate::tables::{AssetRecord, PlayoutStore};
use crate::transcode::{self, Transcoder};

/// The station card's file in the work directory, before it is stored.
const STATION_CARD_FILE: &str = "station-card.jpg";

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

    /// Makes the station's own slate once: a still picture generated with
    /// ffmpeg, transcoded like any asset; its frame is the station's card.
    async fn ensure_default_slate(&self) -> Result<(), PlayoutError> {
        let settings = &self.inner.settings;
        if let Some(slate) = self.inner.store.asset(&settings.default_slate_id).await? {
            // A station whose slate was made before cards were, or whose
            // card failed, takes it from the slate's source.
            let stored = self.inner.storage.get(card::STATION_CARD_KEY).await;
            if !matches!(stored, Ok(Some(_))) {
                self.store_station_card(Path::new(&slate.source_path), slate.duration_ms)
                    .await;
            }
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
        self.store_station_card(&settings.slate_source, probe.duration_ms)
            .await;
        let record = AssetRecord::queued(
            settings.default_slate_id.clone(),
            settings.slate_source.display().to_string(),
            probe.duration_ms,
            self.inner.clock.now_ms(),
        );
        match self.inner.store.insert_asset(&record).await {
            Ok(()) => {}
            // Another process made it first.
            Err(PlayoutError::AlreadyExists(_)) => return Ok(()),
            Err(error) => return Err(error),
        }
        self.inner.transcoder.enqueue(&record);
        Ok(())
    }

    /// Takes the station's card from the slate's source; the slate airs
    /// without it, so a failure is only a warning.
    async fn store_station_card(&self, source: &Path, duration_ms: i64) {
        let settings = &self.inner.settings;
        let file = settings.work_dir.join(STATION_CARD_FILE);
        let taken = match tokio::fs::create_dir_all(&settings.work_dir).await {
            Ok(()) => {
                card::take_card(
                    &settings.ffmpeg,
                    source,
                    duration_ms,
                    &file,
                    settings.transcode_timeout,
                )
                .await
            }
            Err(error) => Err(format!(
                "cannot create {}: {error}",
                settings.work_dir.display()
            )),
        };
        let stored = match taken {
            Ok(()) => self
                .inner
                .storage
                .put_file(card::STATION_CARD_KEY, &file)
                .await
                .map_err(|error| format!("cannot store {}: {error}", card::STATION_CARD_KEY)),
            Err(error) => Err(error),
        };
        if let Err(error) = stored {
            tracing::warn!(error = %error, "the station has no card");
        }
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
