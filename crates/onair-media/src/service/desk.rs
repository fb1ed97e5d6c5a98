//! The desk every media call works at: the store, the station's settings
//! and clock, the bus, who is calling and the cache, with the steps every
//! call shares (checking the caller, announcing and recording a change).

use std::time::Duration;

use onair_kit::auth::{Authenticator, Caller};
use onair_kit::bus::SharedBus;
use onair_kit::clock::{Clock, timestamp_from_millis};
use onair_kit::config::{ConfigError, Key, Section, Settings};
use onair_kit::events::{self, Announcement as _, LiveEvent, OpsEvent};
use onair_proto::media::v1 as pb;
use onair_proto::user::v1::Role;
use tonic::Request;

use crate::broadcast_day;
use crate::cache::{CHANGED_SUBJECT, Changed, ScheduleCache};
use crate::error::MediaError;
use crate::model::{ChannelRecord, SlotRecord};
use crate::store::MediaStore;

/// What the media service needs to know about the station.
#[derive(Debug, Clone)]
pub struct MediaServiceSettings {
    /// The station's time zone (an IANA name such as "Asia/Tokyo"): broadcast
    /// days are counted in it unless a query names another.
    pub time_zone: String,
    /// When a broadcast day starts, as the time after local midnight. Japanese
    /// stations start at 05:00, so a show at 01:30 belongs to the day before.
    pub broadcast_day_start: Duration,
    /// The longest range one timetable or gaps query may cover, so that one
    /// request cannot read the whole schedule.
    pub max_query_range: Duration,
    /// The most ids one batch call may name.
    pub max_batch_ids: usize,
    /// The most items one import may carry; an import is checked in memory.
    pub max_import_items: usize,
    /// How long a cached timetable or now/next is trusted without hearing of a
    /// change on the bus: the most another process can lag if a message is
    /// lost. Zero turns the cache off.
    pub cache_ttl: Duration,
    /// How many timetable ranges (each with every channel's part) and
    /// now/next answers are cached at most.
    pub cache_capacity: usize,
}

impl Default for MediaServiceSettings {
    fn default() -> Self {
        MediaServiceSettings {
            time_zone: "UTC".to_owned(),
            broadcast_day_start: Duration::ZERO,
            max_query_range: Duration::from_secs(31 * 24 * 3600),
            max_batch_ids: 1000,
            max_import_items: 200_000,
            cache_ttl: Duration::from_secs(10),
            cache_capacity: 64,
        }
    }
}

impl MediaServiceSettings {
    /// Settings for a station in `time_zone` whose broadcast day starts at
    /// `broadcast_day_start` (`HH:MM`, e.g. "05:00"), the rest by default.
    pub fn for_station(
        time_zone: &str,
        broadcast_day_start: &str,
    ) -> Result<MediaServiceSettings, MediaError> {
        broadcast_day::time_zone(time_zone)?;
        Ok(MediaServiceSettings {
            time_zone: time_zone.to_owned(),
            broadcast_day_start: broadcast_day::parse_day_start(broadcast_day_start)?,
            ..MediaServiceSettings::default()
        })
    }
}

impl Section for MediaServiceSettings {
    /// The station's time zone and broadcast day are the kit's (the guide
    /// exports count in them too); the rest is not configured.
    const KEYS: &'static [Key] = &[];

    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        broadcast_day::time_zone(&settings.time_zone).map_err(|_| {
            layers.invalid("media.time_zone", "an IANA time zone such as Asia/Tokyo")
        })?;
        MediaServiceSettings::for_station(&settings.time_zone, &settings.broadcast_day_start)
            .map_err(|_| {
                layers.invalid(
                    "media.broadcast_day_start",
                    "a local time HH:MM such as 05:00",
                )
            })
    }
}

/// What every call of the media service works with.
pub(super) struct Desk {
    pub(super) store: MediaStore,
    pub(super) settings: MediaServiceSettings,
    /// The station's time zone, looked up once.
    pub(super) station_zone: jiff::tz::TimeZone,
    /// Decides what is on air; tests move it instead of sleeping.
    pub(super) clock: Clock,
    /// Carries schedule changes to every watcher and operational events to
    /// the durable stream.
    pub(super) bus: SharedBus,
    pub(super) authenticator: Authenticator,
    /// Timetables and now/next as last read; see [`crate::cache`].
    pub(super) cache: ScheduleCache,
}

impl Desk {
    /// After a stored change to what timetables show: forget what it changed
    /// here at once, and tell the other processes to.
    pub(super) async fn changed(&self, changed: Changed) {
        if changed == Changed::Channels(Vec::new()) {
            // A program no channel plays: no timetable shows it.
            return;
        }
        self.cache.invalidate(&changed);
        if let Err(error) = self
            .bus
            .publish(CHANGED_SUBJECT, changed.to_payload())
            .await
        {
            tracing::warn!(error = %error, "cannot announce a schedule change to other processes; their caches catch up within the cache time");
        }
    }

    /// The caller of a write: must be an operator.
    pub(super) async fn operator<T>(&self, request: &Request<T>) -> Result<Caller, MediaError> {
        let caller = self.authenticator.authenticate(request.metadata()).await?;
        caller.require(Role::Operator)?;
        Ok(caller)
    }

    /// Reads are public (a guide is), but credentials that are sent must be
    /// valid: a client with a broken token should hear so, not be served as
    /// anonymous.
    pub(super) async fn reader<T>(&self, request: &Request<T>) -> Result<(), MediaError> {
        if request.metadata().get("authorization").is_none() {
            return Ok(());
        }
        self.authenticator.authenticate(request.metadata()).await?;
        Ok(())
    }

    pub(super) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Tells every watcher about a change, after it is stored. A bus failure
    /// is logged, not returned: the change itself succeeded.
    pub(super) async fn announce(
        &self,
        kind: pb::schedule_event::Kind,
        channel_id: &str,
        slot: Option<&SlotRecord>,
        channel: Option<&ChannelRecord>,
    ) {
        let event = pb::ScheduleEvent {
            kind: kind as i32,
            channel_id: channel_id.to_owned(),
            slot: slot.map(SlotRecord::to_proto),
            event_time: Some(timestamp_from_millis(self.now_ms())),
            channel: channel.map(ChannelRecord::to_proto),
        };
        let subject = event.subject();
        if let Err(error) = events::announce(&self.bus, &event).await {
            tracing::warn!(error = %error, subject, kind = kind.as_str_name(), "cannot announce a schedule change; watchers miss it");
        }
        // The channel's live sockets show it as a `schedule` event.
        if let Err(error) = LiveEvent::schedule(&event).publish(&self.bus).await {
            tracing::warn!(error = %error, channel = channel_id, kind = kind.as_str_name(), "cannot send a schedule change to the live sockets");
        }
    }

    /// Records an operational event about the schedule.
    pub(super) async fn record(
        &self,
        kind: &str,
        caller: &Caller,
        target_id: &str,
        details: serde_json::Value,
    ) {
        let event = OpsEvent::new(kind, &caller.user_id, target_id, "", self.now_ms(), details);
        events::record(&self.bus, &event).await;
    }

    pub(super) fn check_batch_size(&self, count: usize, what: &str) -> Result<(), MediaError> {
        let max = self.settings.max_batch_ids;
        if count > max {
            return Err(MediaError::InvalidArgument(format!(
                "asked for {count} {what}; one call may ask for at most {max}"
            )));
        }
        Ok(())
    }
}
