//! The media service's gRPC implementation.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use onair_kit::auth::{Authenticator, Caller};
use onair_kit::bus::SharedBus;
use onair_kit::clock::{Clock, timestamp_from_millis};
use onair_kit::events::{self, OpsEvent};
use onair_proto::media::v1 as pb;
use onair_proto::media::v1::media_service_server::MediaService;
use onair_proto::user::v1::Role;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::broadcast_day;
use crate::cache::{CHANGED_SUBJECT, Changed, Entries, ScheduleCache};
use crate::error::MediaError;
use crate::import::{self, StoredContext};
use crate::model::{
    self, ChannelRecord, MAX_CHANNEL_NUMBER, ProgramRecord, SlotRecord, check_slot_against_program,
    check_slot_times, format_millis,
};
use crate::store::{MediaStore, NowNextPosition, SlotsWithPrograms, WriteLock};
use crate::watch;

/// How many items a list call returns when the caller does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 100;
/// The most items one list call returns; larger page sizes are lowered to it.
pub const MAX_PAGE_SIZE: i32 = 1000;
/// Above this many entries a timetable is assembled or copied on a blocking
/// thread, so that building a big answer never holds up the async workers.
const BLOCKING_ASSEMBLY_THRESHOLD: usize = 256;
/// How many channels' timetables are read from the database at once.
const CHANNEL_READS_AT_ONCE: usize = 4;

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

/// The media service.
#[derive(Clone)]
pub struct MediaServiceImpl {
    inner: Arc<Inner>,
}

struct Inner {
    store: MediaStore,
    settings: MediaServiceSettings,
    /// The station's time zone, looked up once.
    station_zone: jiff::tz::TimeZone,
    /// Decides what is on air; tests move it instead of sleeping.
    clock: Clock,
    /// Carries schedule changes to every watcher and operational events to
    /// the durable stream.
    bus: SharedBus,
    authenticator: Authenticator,
    /// Timetables and now/next as last read; see [`crate::cache`].
    cache: ScheduleCache,
}

/// The stream `WatchSchedule` returns.
pub type ScheduleEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::ScheduleEvent, Status>> + Send + 'static>>;

impl MediaServiceImpl {
    /// Opens the service on its store, checking the station settings.
    pub async fn start(
        store: MediaStore,
        settings: MediaServiceSettings,
        clock: Clock,
        bus: SharedBus,
        authenticator: Authenticator,
    ) -> Result<MediaServiceImpl, MediaError> {
        let station_zone = broadcast_day::time_zone(&settings.time_zone)?;
        broadcast_day::check_day_start(settings.broadcast_day_start)?;
        if settings.max_batch_ids == 0 || settings.max_import_items == 0 {
            return Err(MediaError::InvalidArgument(
                "max_batch_ids and max_import_items must be at least 1".to_owned(),
            ));
        }
        tracing::info!(
            time_zone = %settings.time_zone,
            broadcast_day_start_seconds = settings.broadcast_day_start.as_secs(),
            "media service started"
        );
        let cache = ScheduleCache::new(settings.cache_ttl, settings.cache_capacity);
        Ok(MediaServiceImpl {
            inner: Arc::new(Inner {
                store,
                settings,
                station_zone,
                clock,
                bus,
                authenticator,
                cache,
            }),
        })
    }

    /// Starts the service's background work: forgetting cached timetables
    /// when another process changes the schedule. The task runs until
    /// aborted.
    pub async fn spawn_background(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, MediaError> {
        let mut changes = self
            .inner
            .bus
            .subscribe(CHANGED_SUBJECT)
            .await
            .map_err(|error| {
                MediaError::Unavailable(format!("cannot subscribe to schedule changes: {error}"))
            })?;
        let service = self.clone();
        let invalidations = tokio::spawn(async move {
            while let Some(message) = changes.next().await {
                let changed = Changed::from_payload(&message.payload);
                service.inner.cache.invalidate(&changed);
            }
        });
        Ok(vec![invalidations])
    }

    /// After a stored change to what timetables show: forget what it changed
    /// here at once, and tell the other processes to.
    async fn changed(&self, changed: Changed) {
        if changed == Changed::Channels(Vec::new()) {
            // A program no channel plays: no timetable shows it.
            return;
        }
        self.inner.cache.invalidate(&changed);
        if let Err(error) = self
            .inner
            .bus
            .publish(CHANGED_SUBJECT, changed.to_payload())
            .await
        {
            tracing::warn!(error = %error, "cannot announce a schedule change to other processes; their caches catch up within the cache time");
        }
    }

    /// The station's channels in number order, cached until a channel
    /// changes.
    async fn station_channels(&self, generation: u64) -> Result<Arc<Vec<pb::Channel>>, MediaError> {
        if let Some(channels) = self.inner.cache.channels() {
            return Ok(channels);
        }
        let records = self.inner.store.all_channels().await?;
        let channels = Arc::new(
            records
                .iter()
                .map(ChannelRecord::to_proto)
                .collect::<Vec<_>>(),
        );
        self.inner.cache.put_channels(channels.clone(), generation);
        Ok(channels)
    }

    /// A timetable, encoded: each channel's entries come encoded from the
    /// cache (or are read, encoded and cached), so a cached timetable is
    /// put together by copying bytes.
    pub(crate) async fn timetable_bytes(
        &self,
        request: Request<pb::GetTimetableRequest>,
    ) -> Result<Bytes, Status> {
        self.reader(&request).await?;
        let request = request.into_inner();
        let (start_time_ms, end_time_ms) = self.timetable_range(&request)?;
        let range = (start_time_ms, end_time_ms);
        let generation = self.inner.cache.generation();
        let station = self.station_channels(generation).await?;
        let asked = if request.channel_id.is_empty() {
            None
        } else {
            let cached = station
                .iter()
                .find(|channel| channel.id == request.channel_id);
            Some(match cached {
                Some(channel) => channel.clone(),
                // A channel another process created a moment ago.
                None => self.existing_channel(&request.channel_id).await?.to_proto(),
            })
        };
        // The station's list is shared, not copied, for an all-channel read.
        let channels: &[pb::Channel] = match &asked {
            Some(channel) => std::slice::from_ref(channel),
            None => &station,
        };
        let mut parts = self
            .inner
            .cache
            .entries(range, channels.iter().map(|channel| channel.id.as_str()));
        let missing: Vec<usize> = (0..parts.len()).filter(|at| parts[*at].is_none()).collect();
        if !missing.is_empty() {
            // Each missing channel is read with its own statement, a few at
            // once: after a write to one channel that is one statement, and
            // after an import the database reads channels side by side.
            let store = &self.inner.store;
            let ids: Vec<String> = missing.iter().map(|at| channels[*at].id.clone()).collect();
            let fresh: Vec<(String, Entries)> = futures::stream::iter(ids)
                .map(|id| async move {
                    let found = store
                        .timetable(&id, start_time_ms, end_time_ms)
                        .await
                        .map_err(MediaError::from)?;
                    off_the_workers(found.slots.len(), move || {
                        let entries = entries_by_channel(found).remove(&id).unwrap_or_default();
                        (id, encode_entries(&entries))
                    })
                    .await
                })
                .buffered(CHANNEL_READS_AT_ONCE)
                .try_collect()
                .await?;
            for (at, (_, entries)) in missing.into_iter().zip(&fresh) {
                parts[at] = Some(entries.clone());
            }
            self.inner.cache.put_entries(range, fresh, generation);
        }
        let parts: Vec<Bytes> = parts.into_iter().map(Option::unwrap_or_default).collect();
        Ok(encode_timetable(
            channels,
            &parts,
            &timestamp_from_millis(start_time_ms),
            &timestamp_from_millis(end_time_ms),
        ))
    }

    /// The service's store, for tools and benchmarks that seed a station.
    pub fn store(&self) -> &MediaStore {
        &self.inner.store
    }

    /// The caller of a write: must be an operator.
    async fn operator<T>(&self, request: &Request<T>) -> Result<Caller, MediaError> {
        let caller = self
            .inner
            .authenticator
            .authenticate(request.metadata())
            .await?;
        caller.require(Role::Operator)?;
        Ok(caller)
    }

    /// Reads are public (a guide is), but credentials that are sent must be
    /// valid: a client with a broken token should hear so, not be served as
    /// anonymous.
    async fn reader<T>(&self, request: &Request<T>) -> Result<(), MediaError> {
        if request.metadata().get("authorization").is_none() {
            return Ok(());
        }
        self.inner
            .authenticator
            .authenticate(request.metadata())
            .await?;
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Tells every watcher about a change, after it is stored. A bus failure
    /// is logged, not returned: the change itself succeeded.
    async fn announce(
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
        let subject = watch::schedule_subject(channel_id);
        if let Err(error) = self
            .inner
            .bus
            .publish(&subject, watch::encode_event(&event))
            .await
        {
            tracing::warn!(error = %error, subject, kind = kind.as_str_name(), "cannot announce a schedule change; watchers miss it");
        }
        // The channel's live sockets show it as a `schedule` event.
        if let Err(error) = onair_kit::live::publish(
            &self.inner.bus,
            channel_id,
            onair_kit::live::LiveKind::Schedule,
            "onair.media.v1.ScheduleEvent",
            &event,
        )
        .await
        {
            tracing::warn!(error = %error, channel = channel_id, kind = kind.as_str_name(), "cannot send a schedule change to the live sockets");
        }
    }

    /// Records an operational event about the schedule.
    async fn record(
        &self,
        kind: &str,
        caller: &Caller,
        target_id: &str,
        details: serde_json::Value,
    ) {
        let event = OpsEvent::new(kind, &caller.user_id, target_id, "", self.now_ms(), details);
        events::record(&self.inner.bus, &event).await;
    }

    async fn existing_channel(&self, channel_id: &str) -> Result<ChannelRecord, MediaError> {
        model::require_id("channel_id", channel_id)?;
        self.inner
            .store
            .channel(channel_id)
            .await?
            .ok_or_else(|| MediaError::channel_not_found(channel_id))
    }

    /// A query range: both times set, end after start, no longer than the
    /// configured bound.
    fn query_range(
        &self,
        start_time: Option<&prost_types::Timestamp>,
        end_time: Option<&prost_types::Timestamp>,
    ) -> Result<(i64, i64), MediaError> {
        let start_time_ms = model::timestamp_to_millis("start_time", start_time)?;
        let end_time_ms = model::timestamp_to_millis("end_time", end_time)?;
        check_slot_times(start_time_ms, end_time_ms)?;
        self.check_range_length(start_time_ms, end_time_ms)?;
        Ok((start_time_ms, end_time_ms))
    }

    fn check_range_length(&self, start_time_ms: i64, end_time_ms: i64) -> Result<(), MediaError> {
        let max_ms =
            i64::try_from(self.inner.settings.max_query_range.as_millis()).unwrap_or(i64::MAX);
        if end_time_ms - start_time_ms > max_ms {
            return Err(MediaError::InvalidArgument(format!(
                "the range from start_time to end_time is longer than {} days; ask for less at a time",
                max_ms / 86_400_000
            )));
        }
        Ok(())
    }

    /// The range a timetable request covers: a broadcast day in a time zone,
    /// or start and end times.
    fn timetable_range(&self, request: &pb::GetTimetableRequest) -> Result<(i64, i64), MediaError> {
        let zone = if request.time_zone.is_empty() {
            self.inner.station_zone.clone()
        } else {
            broadcast_day::time_zone(&request.time_zone)?
        };
        if request.broadcast_day.is_empty() {
            return self.query_range(request.start_time.as_ref(), request.end_time.as_ref());
        }
        if request.start_time.is_some() || request.end_time.is_some() {
            return Err(MediaError::InvalidArgument(
                "give either broadcast_day or start_time and end_time, not both".to_owned(),
            ));
        }
        broadcast_day::day_range(
            &request.broadcast_day,
            &zone,
            self.inner.settings.broadcast_day_start,
        )
    }

    fn check_batch_size(&self, count: usize, what: &str) -> Result<(), MediaError> {
        let max = self.inner.settings.max_batch_ids;
        if count > max {
            return Err(MediaError::InvalidArgument(format!(
                "asked for {count} {what}; one call may ask for at most {max}"
            )));
        }
        Ok(())
    }

    async fn now_next_for(
        &self,
        channel_ids: &[String],
    ) -> Result<pb::BatchGetNowNextResponse, MediaError> {
        let now_ms = self.now_ms();
        let key = channel_ids.join(",");
        if let Some(cached) = self.inner.cache.now_next(&key, now_ms) {
            return Ok((*cached).clone());
        }
        let generation = self.inner.cache.generation();
        let (response, valid_until_ms) = self.read_now_next(channel_ids, now_ms).await?;
        let response = Arc::new(response);
        self.inner
            .cache
            .put_now_next(key, response.clone(), generation, now_ms, valid_until_ms);
        Ok(Arc::unwrap_or_clone(response))
    }

    /// Now/next at `now_ms` from the store, and until when it holds: the
    /// first instant a slot of those channels ends or starts.
    async fn read_now_next(
        &self,
        channel_ids: &[String],
        now_ms: i64,
    ) -> Result<(pb::BatchGetNowNextResponse, i64), MediaError> {
        let store = &self.inner.store;
        let (channels, missing_channel_ids) = if channel_ids.is_empty() {
            (store.all_channels().await?, Vec::new())
        } else {
            self.check_batch_size(channel_ids.len(), "channels")?;
            let wanted = well_formed_unique(channel_ids);
            let found = store.channels(&wanted).await?;
            let mut by_id: HashMap<String, ChannelRecord> = found
                .into_iter()
                .map(|channel| (channel.id.clone(), channel))
                .collect();
            let mut ordered = Vec::with_capacity(by_id.len());
            let mut missing = Vec::new();
            let mut seen = HashSet::new();
            for id in channel_ids {
                if !seen.insert(id.as_str()) {
                    continue;
                }
                match by_id.remove(id) {
                    Some(channel) => ordered.push(channel),
                    None => missing.push(id.clone()),
                }
            }
            (ordered, missing)
        };
        let ids: Vec<String> = channels.iter().map(|channel| channel.id.clone()).collect();
        let filter = (!channel_ids.is_empty()).then_some(ids.as_slice());
        let found = store.now_next(filter, now_ms).await?;
        let mut valid_until_ms = i64::MAX;
        let mut by_channel: HashMap<String, pb::NowNext> = HashMap::with_capacity(channels.len());
        for (position, slot) in &found.slots {
            let boundary = match position {
                NowNextPosition::Now => slot.end_time_ms,
                NowNextPosition::Next => slot.start_time_ms,
            };
            valid_until_ms = valid_until_ms.min(boundary);
            let Some(program) = found.programs.get(&slot.program_id) else {
                continue;
            };
            let now_next = by_channel
                .entry(slot.channel_id.clone())
                .or_insert_with(|| pb::NowNext {
                    channel_id: slot.channel_id.clone(),
                    now: None,
                    next: None,
                });
            let proto = pb::TimetableEntry {
                slot: Some(slot.to_proto()),
                program: Some(program.to_proto()),
            };
            match position {
                NowNextPosition::Now => now_next.now = Some(proto),
                NowNextPosition::Next => now_next.next = Some(proto),
            }
        }
        let mut now_next = Vec::with_capacity(channels.len());
        for channel in &channels {
            now_next.push(
                by_channel
                    .remove(&channel.id)
                    .unwrap_or_else(|| pb::NowNext {
                        channel_id: channel.id.clone(),
                        now: None,
                        next: None,
                    }),
            );
        }
        let response = pb::BatchGetNowNextResponse {
            now_next,
            missing_channel_ids,
        };
        Ok((response, valid_until_ms))
    }

    async fn create_channel_record(
        &self,
        mut channel: ChannelRecord,
    ) -> Result<ChannelRecord, MediaError> {
        let mut write = self
            .inner
            .store
            .begin_write(&[WriteLock::ChannelNumbers])
            .await?;
        if write.channel(&channel.id).await?.is_some() {
            return Err(MediaError::AlreadyExists(format!(
                "channel {} already exists",
                channel.id
            )));
        }
        if channel.number == 0 {
            channel.number = write.next_channel_number().await?;
            if channel.number > MAX_CHANNEL_NUMBER {
                return Err(MediaError::FailedPrecondition(
                    "no channel number is free; give one explicitly".to_owned(),
                ));
            }
        } else if let Some(owner) = write.channel_with_number(channel.number).await? {
            return Err(MediaError::AlreadyExists(format!(
                "channel number {} is taken by channel {}",
                channel.number, owner.id
            )));
        }
        if !write.insert_channel(&channel).await? {
            return Err(MediaError::AlreadyExists(format!(
                "channel {} or number {} is taken",
                channel.id, channel.number
            )));
        }
        write.commit().await?;
        Ok(channel)
    }

    /// Creates a slot: the overlap check and the insert happen in one
    /// transaction under the channel's write lock, so of two overlapping
    /// creates exactly one wins.
    async fn create_slot_record(
        &self,
        channel_id: &str,
        slot: &pb::Slot,
    ) -> Result<SlotRecord, MediaError> {
        model::require_id("channel_id", channel_id)?;
        if !slot.repeat_of_slot_id.is_empty() {
            model::validate_id("repeat_of_slot_id", &slot.repeat_of_slot_id)?;
        }
        if slot.repeat_of_slot_id.is_empty() || !slot.program_id.is_empty() {
            model::require_id("program_id", &slot.program_id)?;
        }
        let start_time_ms = model::timestamp_to_millis("start_time", slot.start_time.as_ref())?;
        let end_time_ms = model::timestamp_to_millis("end_time", slot.end_time.as_ref())?;
        check_slot_times(start_time_ms, end_time_ms)?;
        let id = model::given_or_new_id("slot id", &slot.id)?;
        let now_ms = self.now_ms();

        let mut write = self
            .inner
            .store
            .begin_write(&[WriteLock::Channel(channel_id.to_owned())])
            .await?;
        let channel = write
            .channel(channel_id)
            .await?
            .ok_or_else(|| MediaError::channel_not_found(channel_id))?;
        let mut program_id = slot.program_id.clone();
        if !slot.repeat_of_slot_id.is_empty() {
            let original = write
                .slot(&slot.repeat_of_slot_id)
                .await?
                .ok_or_else(|| MediaError::slot_not_found(&slot.repeat_of_slot_id))?;
            if program_id.is_empty() {
                program_id = original.program_id.clone();
            }
            check_same_program(&original, &program_id)?;
        }
        let program = write
            .program(&program_id)
            .await?
            .ok_or_else(|| MediaError::program_not_found(&program_id))?;
        let record = SlotRecord {
            id,
            channel_id: channel.id.clone(),
            program_id: program.id.clone(),
            start_time_ms,
            end_time_ms,
            live: slot.live || program.live,
            repeat_of_slot_id: slot.repeat_of_slot_id.clone(),
            cut: slot.cut,
            comments_enabled: slot.comments_enabled.unwrap_or(channel.comments_enabled),
            create_time_ms: now_ms,
            update_time_ms: now_ms,
        };
        check_slot_against_program(&record, &program)?;
        if let Some(conflict) = write
            .conflicting_slot(&record.channel_id, start_time_ms, end_time_ms, None)
            .await?
        {
            return Err(overlap_error(&conflict));
        }
        if !slot.id.is_empty() && write.slot(&record.id).await?.is_some() {
            return Err(MediaError::AlreadyExists(format!(
                "slot {} already exists",
                record.id
            )));
        }
        if !write.insert_slot(&record).await? {
            return Err(MediaError::AlreadyExists(format!(
                "slot {} already exists",
                record.id
            )));
        }
        write.commit().await?;
        Ok(record)
    }

    async fn update_slot_record(
        &self,
        request: pb::UpdateSlotRequest,
    ) -> Result<(SlotRecord, SlotRecord), MediaError> {
        let Some(changes) = request.slot else {
            return Err(MediaError::InvalidArgument(
                "slot is required: send the slot's id and the fields to change".to_owned(),
            ));
        };
        model::require_id("slot.id", &changes.id)?;
        let paths = mask_paths(request.update_mask, || implicit_slot_paths(&changes));
        let before = self
            .inner
            .store
            .slot(&changes.id)
            .await?
            .ok_or_else(|| MediaError::slot_not_found(&changes.id))?;
        let mut write = self
            .inner
            .store
            .begin_write(&[WriteLock::Channel(before.channel_id.clone())])
            .await?;
        // Read again under the lock: the slot may have changed meanwhile.
        let before = write
            .slot(&changes.id)
            .await?
            .ok_or_else(|| MediaError::slot_not_found(&changes.id))?;
        let now_ms = self.now_ms();
        if before.is_on_air(now_ms) && !request.force {
            return Err(MediaError::FailedPrecondition(format!(
                "{} is on air; set force to change it anyway",
                before.describe()
            )));
        }
        let mut after = before.clone();
        let mut program_changed = false;
        for path in &paths {
            match path.as_str() {
                "start_time" => {
                    after.start_time_ms =
                        model::timestamp_to_millis("start_time", changes.start_time.as_ref())?;
                }
                "end_time" => {
                    after.end_time_ms =
                        model::timestamp_to_millis("end_time", changes.end_time.as_ref())?;
                }
                "program_id" => {
                    model::require_id("program_id", &changes.program_id)?;
                    program_changed = after.program_id != changes.program_id;
                    after.program_id = changes.program_id.clone();
                }
                "live" => after.live = changes.live,
                "cut" => after.cut = changes.cut,
                "comments_enabled" => {
                    after.comments_enabled = match changes.comments_enabled {
                        Some(enabled) => enabled,
                        // Cleared: back to the channel's setting.
                        None => {
                            write
                                .channel(&after.channel_id)
                                .await?
                                .ok_or_else(|| MediaError::channel_not_found(&after.channel_id))?
                                .comments_enabled
                        }
                    };
                }
                "repeat_of_slot_id" => {
                    if !changes.repeat_of_slot_id.is_empty() {
                        model::validate_id("repeat_of_slot_id", &changes.repeat_of_slot_id)?;
                    }
                    after.repeat_of_slot_id = changes.repeat_of_slot_id.clone();
                }
                "channel_id" if changes.channel_id == before.channel_id => {}
                "channel_id" => {
                    return Err(MediaError::InvalidArgument(
                        "channel_id cannot be changed: delete the slot and create it on the other channel".to_owned(),
                    ));
                }
                "id" if changes.id == before.id => {}
                other => {
                    return Err(MediaError::InvalidArgument(format!(
                        "field {other:?} cannot be changed; update_mask may name start_time, end_time, program_id, live, cut, comments_enabled and repeat_of_slot_id"
                    )));
                }
            }
        }
        check_slot_times(after.start_time_ms, after.end_time_ms)?;
        if after.is_on_air(now_ms) && !before.is_on_air(now_ms) && !request.force {
            return Err(MediaError::FailedPrecondition(format!(
                "the change would put slot {} on air now ({}); set force to do it anyway",
                after.id,
                format_millis(now_ms)
            )));
        }
        let program = write
            .program(&after.program_id)
            .await?
            .ok_or_else(|| MediaError::program_not_found(&after.program_id))?;
        if program_changed {
            after.live = after.live || program.live;
        }
        if !after.repeat_of_slot_id.is_empty() {
            if after.repeat_of_slot_id == after.id {
                return Err(MediaError::InvalidArgument(
                    "a slot cannot be a rebroadcast of itself".to_owned(),
                ));
            }
            let original = write
                .slot(&after.repeat_of_slot_id)
                .await?
                .ok_or_else(|| MediaError::slot_not_found(&after.repeat_of_slot_id))?;
            check_same_program(&original, &after.program_id)?;
        }
        check_slot_against_program(&after, &program)?;
        if let Some(conflict) = write
            .conflicting_slot(
                &after.channel_id,
                after.start_time_ms,
                after.end_time_ms,
                Some(&after.id),
            )
            .await?
        {
            return Err(overlap_error(&conflict));
        }
        after.update_time_ms = now_ms;
        write.update_slot(&after).await?;
        write.commit().await?;
        Ok((before, after))
    }

    async fn import_items(
        &self,
        items: Vec<pb::ImportScheduleItem>,
    ) -> Result<(pb::ImportScheduleResponse, Option<import::ImportPlan>), MediaError> {
        let now_ms = self.now_ms();
        let checked = tokio::task::spawn_blocking(move || import::check_items(items, now_ms))
            .await
            .map_err(|error| MediaError::Internal(format!("import check failed: {error}")))?;
        let store = &self.inner.store;
        let mut write = store.begin_write(&checked.locks()).await?;

        let mut stored = StoredContext::default();
        for channel in write.all_channels().await? {
            stored.channels.insert(channel.id.clone(), channel);
        }
        for program in write.programs(&checked.program_ids()).await? {
            stored.programs.insert(program.id.clone(), program);
        }
        for slot in write.slots(&checked.slot_ids()).await? {
            stored.slots.insert(slot.id.clone(), slot);
        }
        for (channel_id, start_time_ms, end_time_ms) in checked.slot_ranges() {
            if !stored.channels.contains_key(&channel_id) {
                continue;
            }
            let nearby = write
                .slots_near(&channel_id, start_time_ms, end_time_ms)
                .await?;
            stored.nearby_slots.insert(channel_id, nearby);
        }
        for (program_id, duration_ms) in checked.lengthened_programs(&stored.programs) {
            if let Some(short) = write
                .short_slot_of_program(&program_id, duration_ms, now_ms)
                .await?
            {
                stored.short_slots.insert(program_id, short);
            }
        }

        let planned = tokio::task::spawn_blocking(move || import::plan(checked, &stored))
            .await
            .map_err(|error| MediaError::Internal(format!("import check failed: {error}")))?;
        let plan = match planned {
            Ok(plan) => plan,
            Err(errors) => {
                write.rollback().await?;
                let response = pb::ImportScheduleResponse {
                    applied: false,
                    errors,
                    channels: 0,
                    programs: 0,
                    slots: 0,
                };
                return Ok((response, None));
            }
        };
        for (channel, _) in &plan.channels {
            write.upsert_channel(channel).await?;
        }
        for program in &plan.programs {
            write.upsert_program(program).await?;
        }
        if !write.insert_slots(&plan.slots).await? {
            return Err(MediaError::AlreadyExists(
                "a slot of the import was created meanwhile with the same id or start; nothing was imported".to_owned(),
            ));
        }
        write.commit().await?;
        let response = pb::ImportScheduleResponse {
            applied: true,
            errors: Vec::new(),
            channels: count(plan.channels.len()),
            programs: count(plan.programs.len()),
            slots: count(plan.slots.len()),
        };
        Ok((response, Some(plan)))
    }
}

/// Runs CPU work over `size` timetable entries: inline when small, on a
/// blocking thread when large, so that building or copying a day of a whole
/// station (a few milliseconds) never holds up the async workers.
async fn off_the_workers<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, MediaError> {
    if size <= BLOCKING_ASSEMBLY_THRESHOLD {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| MediaError::Internal(format!("timetable assembly failed: {error}")))
}

fn count(length: usize) -> i32 {
    i32::try_from(length).unwrap_or(i32::MAX)
}

fn overlap_error(conflict: &SlotRecord) -> MediaError {
    MediaError::FailedPrecondition(format!(
        "the slot overlaps {} on channel {}: move or delete that slot first",
        conflict.describe(),
        conflict.channel_id
    ))
}

fn check_same_program(original: &SlotRecord, program_id: &str) -> Result<(), MediaError> {
    if original.program_id != program_id {
        return Err(MediaError::InvalidArgument(format!(
            "a rebroadcast repeats the same program: slot {} plays program {}, not {program_id}",
            original.id, original.program_id
        )));
    }
    Ok(())
}

/// The ids of a batch request that could exist (well-formed), once each.
fn well_formed_unique(ids: &[String]) -> Vec<String> {
    let mut unique: Vec<String> = ids
        .iter()
        .filter(|id| model::validate_id("id", id).is_ok())
        .cloned()
        .collect();
    unique.sort();
    unique.dedup();
    unique
}

/// A field-mask path in the proto's snake_case, also when sent in the JSON
/// API's lowerCamelCase.
fn snake_case(path: &str) -> String {
    let mut snake = String::with_capacity(path.len() + 4);
    for character in path.chars() {
        if character.is_ascii_uppercase() {
            snake.push('_');
            snake.push(character.to_ascii_lowercase());
        } else {
            snake.push(character);
        }
    }
    snake
}

/// The fields an update changes: the mask's paths, or without a mask the
/// fields the message sets (proto3 cannot tell "false" from "unset" there, so
/// clearing a flag needs a mask).
fn mask_paths(
    mask: Option<prost_types::FieldMask>,
    implicit: impl FnOnce() -> Vec<&'static str>,
) -> Vec<String> {
    match mask {
        Some(mask) if !mask.paths.is_empty() => {
            mask.paths.iter().map(|path| snake_case(path)).collect()
        }
        _ => implicit().into_iter().map(str::to_owned).collect(),
    }
}

fn implicit_slot_paths(slot: &pb::Slot) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if slot.start_time.is_some() {
        paths.push("start_time");
    }
    if slot.end_time.is_some() {
        paths.push("end_time");
    }
    if !slot.program_id.is_empty() {
        paths.push("program_id");
    }
    if slot.live {
        paths.push("live");
    }
    if slot.cut {
        paths.push("cut");
    }
    if slot.comments_enabled.is_some() {
        paths.push("comments_enabled");
    }
    if !slot.repeat_of_slot_id.is_empty() {
        paths.push("repeat_of_slot_id");
    }
    paths
}

fn implicit_channel_paths(channel: &pb::Channel) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if channel.number != 0 {
        paths.push("number");
    }
    if !channel.name.is_empty() {
        paths.push("name");
    }
    if !channel.logo_url.is_empty() {
        paths.push("logo_url");
    }
    if !channel.group.is_empty() {
        paths.push("group");
    }
    if !channel.slate_asset_id.is_empty() {
        paths.push("slate_asset_id");
    }
    if channel.comments_enabled.is_some() {
        paths.push("comments_enabled");
    }
    paths
}

fn implicit_program_paths(program: &pb::Program) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if !program.title.is_empty() {
        paths.push("title");
    }
    if !program.description.is_empty() {
        paths.push("description");
    }
    if !program.genres.is_empty() {
        paths.push("genres");
    }
    if program.duration.is_some() {
        paths.push("duration");
    }
    if !program.rating.is_empty() {
        paths.push("rating");
    }
    if !program.artwork_url.is_empty() {
        paths.push("artwork_url");
    }
    if !program.asset_id.is_empty() {
        paths.push("asset_id");
    }
    if program.live {
        paths.push("live");
    }
    paths
}

/// Each channel's timetable entries, in start order.
fn entries_by_channel(
    found: SlotsWithPrograms<SlotRecord>,
) -> HashMap<String, Vec<pb::TimetableEntry>> {
    let SlotsWithPrograms {
        mut slots,
        programs,
    } = found;
    slots.sort_by(|left, right| {
        (left.channel_id.as_str(), left.start_time_ms)
            .cmp(&(right.channel_id.as_str(), right.start_time_ms))
    });
    // Programs repeat across a day; each is converted once.
    let programs: HashMap<String, pb::Program> = programs
        .into_iter()
        .map(|(id, program)| (id, program.to_proto()))
        .collect();
    let mut by_channel: HashMap<String, Vec<pb::TimetableEntry>> = HashMap::new();
    for slot in slots {
        let program = programs.get(&slot.program_id).cloned();
        let entries = match by_channel.get_mut(&slot.channel_id) {
            Some(entries) => entries,
            None => by_channel.entry(slot.channel_id.clone()).or_default(),
        };
        entries.push(pb::TimetableEntry {
            slot: Some(slot.into_proto()),
            program,
        });
    }
    by_channel
}

/// A channel's entries as the `entries` field of its `ChannelTimetable`.
fn encode_entries(entries: &[pb::TimetableEntry]) -> Bytes {
    use prost::encoding::message;
    let length = entries
        .iter()
        .map(|entry| message::encoded_len(2, entry))
        .sum();
    let mut buf = BytesMut::with_capacity(length);
    for entry in entries {
        message::encode(2, entry, &mut buf);
    }
    buf.freeze()
}

/// A `Timetable` byte for byte as prost encodes it, from each channel and
/// its entries already encoded by [`encode_entries`].
fn encode_timetable(
    channels: &[pb::Channel],
    entries: &[Bytes],
    start_time: &prost_types::Timestamp,
    end_time: &prost_types::Timestamp,
) -> Bytes {
    use prost::encoding::{
        WireType, encode_key, encode_varint, encoded_len_varint, key_len, message,
    };
    let lengths: Vec<usize> = channels
        .iter()
        .zip(entries)
        .map(|(channel, entries)| message::encoded_len(1, channel) + entries.len())
        .collect();
    let total = lengths
        .iter()
        .map(|length| key_len(1) + encoded_len_varint(*length as u64) + length)
        .sum::<usize>()
        + message::encoded_len(2, start_time)
        + message::encoded_len(3, end_time);
    let mut buf = BytesMut::with_capacity(total);
    for ((channel, entries), length) in channels.iter().zip(entries).zip(lengths) {
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(length as u64, &mut buf);
        message::encode(1, channel, &mut buf);
        buf.extend_from_slice(entries);
    }
    message::encode(2, start_time, &mut buf);
    message::encode(3, end_time, &mut buf);
    buf.freeze()
}

/// What moving or changing a slot changed: the channel it was on and the
/// one it is on now.
fn slot_channels(before: &SlotRecord, after: &SlotRecord) -> Changed {
    let mut channels = vec![before.channel_id.clone()];
    if after.channel_id != before.channel_id {
        channels.push(after.channel_id.clone());
    }
    Changed::Channels(channels)
}

/// Page tokens are opaque to clients: base64url of `<kind>:<position>`, where
/// the position is the last channel number or program id of the page.
fn page_token(kind: &str, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{position}"))
}

fn page_position(kind: &str, token: &str) -> Result<Option<String>, MediaError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        MediaError::InvalidArgument(
            "page_token is not one this list returned: pass next_page_token from the previous page, or nothing for the first".to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let Some(position) = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
    else {
        return Err(invalid());
    };
    Ok(Some(position.to_owned()))
}

fn page_size(requested: i32) -> Result<i64, MediaError> {
    if requested < 0 {
        return Err(MediaError::InvalidArgument(format!(
            "page_size {requested} is negative: use 1 to {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}"
        )));
    }
    let size = if requested == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        requested.min(MAX_PAGE_SIZE)
    };
    Ok(i64::from(size))
}

#[tonic::async_trait]
impl MediaService for MediaServiceImpl {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        let caller = self.operator(&request).await?;
        let Some(channel) = request.into_inner().channel else {
            return Err(MediaError::InvalidArgument("channel is required".to_owned()).into());
        };
        let record = model::channel_from_proto(&channel, self.now_ms())?;
        let record = self.create_channel_record(record).await?;
        self.changed(Changed::Channels(vec![record.id.clone()]))
            .await;
        tracing::info!(channel_id = %record.id, number = record.number, by = %caller.user_id, "created a channel");
        self.announce(
            pb::schedule_event::Kind::ChannelCreated,
            &record.id,
            None,
            Some(&record),
        )
        .await;
        let details = serde_json::json!({"number": record.number, "name": record.name});
        self.record("schedule.channel_created", &caller, &record.id, details)
            .await;
        Ok(Response::new(record.to_proto()))
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        self.reader(&request).await?;
        let channel = self.existing_channel(&request.get_ref().channel_id).await?;
        Ok(Response::new(channel.to_proto()))
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        self.reader(&request).await?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let after_number = match page_position("channels", &request.page_token)? {
            Some(position) => position.parse::<i64>().map_err(|_| {
                MediaError::InvalidArgument("page_token is not one this list returned".to_owned())
            })?,
            None => 0,
        };
        // One more than asked tells whether another page follows.
        let mut channels = self
            .inner
            .store
            .channels_after(after_number, limit + 1)
            .await
            .map_err(MediaError::from)?;
        let mut next_page_token = String::new();
        if i64::try_from(channels.len()).unwrap_or(i64::MAX) > limit {
            channels.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            if let Some(last) = channels.last() {
                next_page_token = page_token("channels", &last.number.to_string());
            }
        }
        Ok(Response::new(pb::ListChannelsResponse {
            channels: channels.iter().map(ChannelRecord::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn batch_get_channels(
        &self,
        request: Request<pb::BatchGetChannelsRequest>,
    ) -> Result<Response<pb::BatchGetChannelsResponse>, Status> {
        self.reader(&request).await?;
        let ids = request.into_inner().channel_ids;
        self.check_batch_size(ids.len(), "channels")?;
        let found = self
            .inner
            .store
            .channels(&well_formed_unique(&ids))
            .await
            .map_err(MediaError::from)?;
        let (channels, missing_channel_ids) =
            in_asked_order(&ids, &found, |channel| &channel.id, ChannelRecord::to_proto);
        Ok(Response::new(pb::BatchGetChannelsResponse {
            channels,
            missing_channel_ids,
        }))
    }

    async fn update_channel(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        let caller = self.operator(&request).await?;
        let request = request.into_inner();
        let Some(changes) = request.channel else {
            return Err(MediaError::InvalidArgument(
                "channel is required: send the channel's id and the fields to change".to_owned(),
            )
            .into());
        };
        model::require_id("channel.id", &changes.id)?;
        let paths = mask_paths(request.update_mask, || implicit_channel_paths(&changes));
        let mut write = self
            .inner
            .store
            .begin_write(&[WriteLock::ChannelNumbers])
            .await
            .map_err(MediaError::from)?;
        let before = write
            .channel(&changes.id)
            .await
            .map_err(MediaError::from)?
            .ok_or_else(|| MediaError::channel_not_found(&changes.id))?;
        let mut after = before.clone();
        for path in &paths {
            match path.as_str() {
                "number" => after.number = i64::from(changes.number),
                "name" => after.name = changes.name.trim().to_owned(),
                "logo_url" => after.logo_url = changes.logo_url.trim().to_owned(),
                "group" => after.group = changes.group.trim().to_owned(),
                "slate_asset_id" => after.slate_asset_id = changes.slate_asset_id.trim().to_owned(),
                "comments_enabled" => {
                    after.comments_enabled = changes.comments_enabled.unwrap_or(true)
                }
                "id" => {}
                other => {
                    return Err(MediaError::InvalidArgument(format!(
                        "field {other:?} cannot be changed; update_mask may name number, name, logo_url, group, slate_asset_id and comments_enabled"
                    ))
                    .into());
                }
            }
        }
        model::check_channel_fields(&after)?;
        if after.number == 0 {
            return Err(MediaError::InvalidArgument(
                "a channel keeps a number: give one from 1 to 99999".to_owned(),
            )
            .into());
        }
        if after.number != before.number
            && let Some(owner) = write
                .channel_with_number(after.number)
                .await
                .map_err(MediaError::from)?
        {
            return Err(MediaError::AlreadyExists(format!(
                "channel number {} is taken by channel {}",
                after.number, owner.id
            ))
            .into());
        }
        after.update_time_ms = self.now_ms();
        write
            .update_channel(&after)
            .await
            .map_err(MediaError::from)?;
        write.commit().await.map_err(MediaError::from)?;
        self.changed(Changed::Channels(vec![after.id.clone()]))
            .await;
        tracing::info!(channel_id = %after.id, by = %caller.user_id, fields = %paths.join(","), "updated a channel");
        self.announce(
            pb::schedule_event::Kind::ChannelUpdated,
            &after.id,
            None,
            Some(&after),
        )
        .await;
        self.record(
            "schedule.channel_updated",
            &caller,
            &after.id,
            serde_json::json!({"fields": paths}),
        )
        .await;
        Ok(Response::new(after.to_proto()))
    }

    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        let caller = self.operator(&request).await?;
        let Some(program) = request.into_inner().program else {
            return Err(MediaError::InvalidArgument("program is required".to_owned()).into());
        };
        let record = model::program_from_proto(&program, self.now_ms())?;
        let mut write = self
            .inner
            .store
            .begin_write(&[])
            .await
            .map_err(MediaError::from)?;
        if !write
            .insert_program(&record)
            .await
            .map_err(MediaError::from)?
        {
            return Err(
                MediaError::AlreadyExists(format!("program {} already exists", record.id)).into(),
            );
        }
        write.commit().await.map_err(MediaError::from)?;
        tracing::info!(program_id = %record.id, by = %caller.user_id, "created a program");
        let details = serde_json::json!({"title": record.title, "durationMs": record.duration_ms});
        self.record("schedule.program_created", &caller, &record.id, details)
            .await;
        Ok(Response::new(record.to_proto()))
    }

    async fn get_program(
        &self,
        request: Request<pb::GetProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        self.reader(&request).await?;
        let id = &request.get_ref().program_id;
        model::require_id("program_id", id)?;
        let program = self
            .inner
            .store
            .program(id)
            .await
            .map_err(MediaError::from)?
            .ok_or_else(|| MediaError::program_not_found(id))?;
        Ok(Response::new(program.to_proto()))
    }

    async fn batch_get_programs(
        &self,
        request: Request<pb::BatchGetProgramsRequest>,
    ) -> Result<Response<pb::BatchGetProgramsResponse>, Status> {
        self.reader(&request).await?;
        let ids = request.into_inner().program_ids;
        self.check_batch_size(ids.len(), "programs")?;
        let found = self
            .inner
            .store
            .programs(&well_formed_unique(&ids))
            .await
            .map_err(MediaError::from)?;
        let (programs, missing_program_ids) =
            in_asked_order(&ids, &found, |program| &program.id, ProgramRecord::to_proto);
        Ok(Response::new(pb::BatchGetProgramsResponse {
            programs,
            missing_program_ids,
        }))
    }

    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> Result<Response<pb::ListProgramsResponse>, Status> {
        self.reader(&request).await?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let after_id = page_position("programs", &request.page_token)?.unwrap_or_default();
        let mut programs = self
            .inner
            .store
            .programs_after(&after_id, limit + 1)
            .await
            .map_err(MediaError::from)?;
        let mut next_page_token = String::new();
        if i64::try_from(programs.len()).unwrap_or(i64::MAX) > limit {
            programs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            if let Some(last) = programs.last() {
                next_page_token = page_token("programs", &last.id);
            }
        }
        Ok(Response::new(pb::ListProgramsResponse {
            programs: programs.iter().map(ProgramRecord::to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        let caller = self.operator(&request).await?;
        let request = request.into_inner();
        let Some(changes) = request.program else {
            return Err(MediaError::InvalidArgument(
                "program is required: send the program's id and the fields to change".to_owned(),
            )
            .into());
        };
        model::require_id("program.id", &changes.id)?;
        let paths = mask_paths(request.update_mask, || implicit_program_paths(&changes));
        let mut write = self
            .inner
            .store
            .begin_write(&[])
            .await
            .map_err(MediaError::from)?;
        let before = write
            .program(&changes.id)
            .await
            .map_err(MediaError::from)?
            .ok_or_else(|| MediaError::program_not_found(&changes.id))?;
        let mut after = before.clone();
        for path in &paths {
            match path.as_str() {
                "title" => after.title = changes.title.trim().to_owned(),
                "description" => after.description = changes.description.clone(),
                "genres" => {
                    after.genres = changes
                        .genres
                        .iter()
                        .map(|genre| genre.trim().to_owned())
                        .collect();
                }
                "duration" => {
                    after.duration_ms =
                        model::duration_to_millis("duration", changes.duration.as_ref())?;
                }
                "rating" => after.rating = changes.rating.trim().to_owned(),
                "artwork_url" => after.artwork_url = changes.artwork_url.trim().to_owned(),
                "asset_id" => after.asset_id = changes.asset_id.trim().to_owned(),
                "live" => after.live = changes.live,
                "id" => {}
                other => {
                    return Err(MediaError::InvalidArgument(format!(
                        "field {other:?} cannot be changed; update_mask may name title, description, genres, duration, rating, artwork_url, asset_id and live"
                    ))
                    .into());
                }
            }
        }
        model::check_program_fields(&after)?;
        let now_ms = self.now_ms();
        if after.duration_ms > before.duration_ms
            && let Some(short) = write
                .short_slot_of_program(&after.id, after.duration_ms, now_ms)
                .await
                .map_err(MediaError::from)?
        {
            return Err(MediaError::FailedPrecondition(format!(
                "program {} would last {} but {} is shorter and not cut: lengthen or cut that slot first",
                after.id,
                model::describe_length(after.duration_ms),
                short.describe()
            ))
            .into());
        }
        after.update_time_ms = now_ms;
        write
            .update_program(&after)
            .await
            .map_err(MediaError::from)?;
        write.commit().await.map_err(MediaError::from)?;
        // The program shows wherever it is scheduled. Asked after the commit:
        // a slot added since is on a channel its own write made forget.
        let changed = match self.inner.store.channels_playing(&after.id).await {
            Ok(channels) => Changed::Channels(channels),
            Err(error) => {
                tracing::warn!(program_id = %after.id, error = %error, "cannot tell which channels play a program; forgetting every cached timetable");
                Changed::Everything
            }
        };
        self.changed(changed).await;
        tracing::info!(program_id = %after.id, by = %caller.user_id, fields = %paths.join(","), "updated a program");
        self.record(
            "schedule.program_updated",
            &caller,
            &after.id,
            serde_json::json!({"fields": paths}),
        )
        .await;
        Ok(Response::new(after.to_proto()))
    }

    async fn create_slot(
        &self,
        request: Request<pb::CreateSlotRequest>,
    ) -> Result<Response<pb::Slot>, Status> {
        let caller = self.operator(&request).await?;
        let request = request.into_inner();
        let Some(slot) = request.slot else {
            return Err(MediaError::InvalidArgument("slot is required".to_owned()).into());
        };
        let channel_id = if request.channel_id.is_empty() {
            slot.channel_id.clone()
        } else {
            request.channel_id.clone()
        };
        if !slot.channel_id.is_empty() && slot.channel_id != channel_id {
            return Err(MediaError::InvalidArgument(format!(
                "slot.channel_id {:?} differs from channel_id {channel_id:?}: give one, or the same in both",
                slot.channel_id
            ))
            .into());
        }
        let record = self.create_slot_record(&channel_id, &slot).await?;
        self.changed(Changed::Channels(vec![record.channel_id.clone()]))
            .await;
        tracing::info!(
            slot_id = %record.id,
            channel_id = %record.channel_id,
            program_id = %record.program_id,
            start_time_ms = record.start_time_ms,
            end_time_ms = record.end_time_ms,
            by = %caller.user_id,
            "created a slot"
        );
        self.announce(
            pb::schedule_event::Kind::SlotCreated,
            &record.channel_id,
            Some(&record),
            None,
        )
        .await;
        let details = serde_json::json!({
            "channelId": record.channel_id,
            "programId": record.program_id,
            "startTimeMs": record.start_time_ms,
            "endTimeMs": record.end_time_ms,
        });
        self.record("schedule.slot_created", &caller, &record.id, details)
            .await;
        Ok(Response::new(record.to_proto()))
    }

    async fn get_slot(
        &self,
        request: Request<pb::GetSlotRequest>,
    ) -> Result<Response<pb::Slot>, Status> {
        self.reader(&request).await?;
        let id = &request.get_ref().slot_id;
        model::require_id("slot_id", id)?;
        let slot = self
            .inner
            .store
            .slot(id)
            .await
            .map_err(MediaError::from)?
            .ok_or_else(|| MediaError::slot_not_found(id))?;
        Ok(Response::new(slot.to_proto()))
    }

    async fn batch_get_slots(
        &self,
        request: Request<pb::BatchGetSlotsRequest>,
    ) -> Result<Response<pb::BatchGetSlotsResponse>, Status> {
        self.reader(&request).await?;
        let ids = request.into_inner().slot_ids;
        self.check_batch_size(ids.len(), "slots")?;
        let found = self
            .inner
            .store
            .slots(&well_formed_unique(&ids))
            .await
            .map_err(MediaError::from)?;
        let (slots, missing_slot_ids) =
            in_asked_order(&ids, &found, |slot| &slot.id, SlotRecord::to_proto);
        Ok(Response::new(pb::BatchGetSlotsResponse {
            slots,
            missing_slot_ids,
        }))
    }

    async fn update_slot(
        &self,
        request: Request<pb::UpdateSlotRequest>,
    ) -> Result<Response<pb::Slot>, Status> {
        let caller = self.operator(&request).await?;
        let request = request.into_inner();
        let forced = request.force;
        let (before, after) = self.update_slot_record(request).await?;
        self.changed(slot_channels(&before, &after)).await;
        tracing::info!(
            slot_id = %after.id,
            channel_id = %after.channel_id,
            start_time_ms = after.start_time_ms,
            end_time_ms = after.end_time_ms,
            forced,
            by = %caller.user_id,
            "updated a slot"
        );
        self.announce(
            pb::schedule_event::Kind::SlotUpdated,
            &after.channel_id,
            Some(&after),
            None,
        )
        .await;
        let details = serde_json::json!({
            "channelId": after.channel_id,
            "forced": forced,
            "before": {"programId": before.program_id, "startTimeMs": before.start_time_ms, "endTimeMs": before.end_time_ms},
            "after": {"programId": after.program_id, "startTimeMs": after.start_time_ms, "endTimeMs": after.end_time_ms},
        });
        self.record("schedule.slot_updated", &caller, &after.id, details)
            .await;
        Ok(Response::new(after.to_proto()))
    }

    async fn delete_slot(
        &self,
        request: Request<pb::DeleteSlotRequest>,
    ) -> Result<Response<pb::DeleteSlotResponse>, Status> {
        let caller = self.operator(&request).await?;
        let request = request.into_inner();
        model::require_id("slot_id", &request.slot_id)?;
        let store = &self.inner.store;
        let found = store
            .slot(&request.slot_id)
            .await
            .map_err(MediaError::from)?
            .ok_or_else(|| MediaError::slot_not_found(&request.slot_id))?;
        let mut write = store
            .begin_write(&[WriteLock::Channel(found.channel_id.clone())])
            .await
            .map_err(MediaError::from)?;
        let slot = write
            .slot(&request.slot_id)
            .await
            .map_err(MediaError::from)?
            .ok_or_else(|| MediaError::slot_not_found(&request.slot_id))?;
        if slot.is_on_air(self.now_ms()) && !request.force {
            return Err(MediaError::FailedPrecondition(format!(
                "{} is on air; set force to delete it anyway",
                slot.describe()
            ))
            .into());
        }
        write
            .delete_slot(&slot.id)
            .await
            .map_err(MediaError::from)?;
        write.commit().await.map_err(MediaError::from)?;
        self.changed(Changed::Channels(vec![slot.channel_id.clone()]))
            .await;
        tracing::info!(slot_id = %slot.id, channel_id = %slot.channel_id, forced = request.force, by = %caller.user_id, "deleted a slot");
        self.announce(
            pb::schedule_event::Kind::SlotDeleted,
            &slot.channel_id,
            Some(&slot),
            None,
        )
        .await;
        let details = serde_json::json!({
            "channelId": slot.channel_id,
            "programId": slot.program_id,
            "startTimeMs": slot.start_time_ms,
            "endTimeMs": slot.end_time_ms,
            "forced": request.force,
        });
        self.record("schedule.slot_deleted", &caller, &slot.id, details)
            .await;
        Ok(Response::new(pb::DeleteSlotResponse {}))
    }

    async fn get_timetable(
        &self,
        request: Request<pb::GetTimetableRequest>,
    ) -> Result<Response<pb::Timetable>, Status> {
        // The station's server answers with the bytes themselves (see
        // `crate::grpc`); this is the same answer as a message.
        let encoded = self.timetable_bytes(request).await?;
        let timetable =
            off_the_workers(encoded.len() / 512, move || pb::Timetable::decode(encoded))
                .await?
                .map_err(|error| {
                    MediaError::Internal(format!("a timetable does not decode: {error}"))
                })?;
        Ok(Response::new(timetable))
    }

    async fn get_now_next(
        &self,
        request: Request<pb::GetNowNextRequest>,
    ) -> Result<Response<pb::NowNext>, Status> {
        self.reader(&request).await?;
        let channel_id = request.into_inner().channel_id;
        model::require_id("channel_id", &channel_id)?;
        let response = self.now_next_for(std::slice::from_ref(&channel_id)).await?;
        match response.now_next.into_iter().next() {
            Some(now_next) => Ok(Response::new(now_next)),
            None => Err(MediaError::channel_not_found(&channel_id).into()),
        }
    }

    async fn batch_get_now_next(
        &self,
        request: Request<pb::BatchGetNowNextRequest>,
    ) -> Result<Response<pb::BatchGetNowNextResponse>, Status> {
        self.reader(&request).await?;
        let channel_ids = request.into_inner().channel_ids;
        Ok(Response::new(self.now_next_for(&channel_ids).await?))
    }

    async fn get_schedule_gaps(
        &self,
        request: Request<pb::GetScheduleGapsRequest>,
    ) -> Result<Response<pb::GetScheduleGapsResponse>, Status> {
        self.reader(&request).await?;
        let request = request.into_inner();
        let (start_time_ms, end_time_ms) =
            self.query_range(request.start_time.as_ref(), request.end_time.as_ref())?;
        let store = &self.inner.store;
        let channels = if request.channel_id.is_empty() {
            store.all_channels().await.map_err(MediaError::from)?
        } else {
            vec![self.existing_channel(&request.channel_id).await?]
        };
        let filter = (!request.channel_id.is_empty()).then_some(request.channel_id.as_str());
        let slots = store
            .slots_overlapping(filter, start_time_ms, end_time_ms)
            .await
            .map_err(MediaError::from)?;
        let mut by_channel: HashMap<&str, Vec<SlotRecord>> = HashMap::new();
        for slot in &slots {
            by_channel
                .entry(slot.channel_id.as_str())
                .or_default()
                .push(slot.clone());
        }
        let mut response = pb::GetScheduleGapsResponse::default();
        for channel in &channels {
            let channel_slots = by_channel.remove(channel.id.as_str()).unwrap_or_default();
            for (gap_start, gap_end) in import::gaps(&channel_slots, start_time_ms, end_time_ms) {
                response.gaps.push(pb::ScheduleGap {
                    channel_id: channel.id.clone(),
                    start_time: Some(timestamp_from_millis(gap_start)),
                    end_time: Some(timestamp_from_millis(gap_end)),
                });
            }
        }
        Ok(Response::new(response))
    }

    type WatchScheduleStream = ScheduleEventStream;

    async fn watch_schedule(
        &self,
        request: Request<pb::WatchScheduleRequest>,
    ) -> Result<Response<Self::WatchScheduleStream>, Status> {
        self.reader(&request).await?;
        let channel_id = request.into_inner().channel_id;
        let pattern = if channel_id.is_empty() {
            watch::ALL_SCHEDULE_SUBJECTS.to_owned()
        } else {
            self.existing_channel(&channel_id).await?;
            watch::schedule_subject(&channel_id)
        };
        let subscription = self.inner.bus.subscribe(&pattern).await.map_err(|error| {
            MediaError::Unavailable(format!("cannot watch the schedule now: {error}"))
        })?;
        tracing::debug!(pattern, "a schedule watcher joined");
        let events = subscription.filter_map(|message| {
            let decoded = match watch::decode_event(&message.payload) {
                Ok(event) => Some(Ok(event)),
                Err(error) => {
                    tracing::warn!(error = %error, subject = %message.subject, "skipping a schedule event that does not decode");
                    None
                }
            };
            std::future::ready(decoded)
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn import_schedule(
        &self,
        request: Request<Streaming<pb::ImportScheduleItem>>,
    ) -> Result<Response<pb::ImportScheduleResponse>, Status> {
        let caller = self.operator(&request).await?;
        let mut stream = request.into_inner();
        let max_items = self.inner.settings.max_import_items;
        let mut items = Vec::new();
        while let Some(item) = stream.message().await? {
            if items.len() >= max_items {
                return Err(MediaError::ResourceExhausted(format!(
                    "an import may carry at most {max_items} items; split the schedule into several imports"
                ))
                .into());
            }
            items.push(item);
        }
        let received = items.len();
        let (response, plan) = self.import_items(items).await?;
        let Some(plan) = plan else {
            tracing::info!(items = received, errors = response.errors.len(), by = %caller.user_id, "refused a schedule import");
            return Ok(Response::new(response));
        };
        self.changed(Changed::Everything).await;
        tracing::info!(
            channels = response.channels,
            programs = response.programs,
            slots = response.slots,
            by = %caller.user_id,
            "imported a schedule"
        );
        for (channel, created) in &plan.channels {
            let kind = if *created {
                pb::schedule_event::Kind::ChannelCreated
            } else {
                pb::schedule_event::Kind::ChannelUpdated
            };
            self.announce(kind, &channel.id, None, Some(channel)).await;
        }
        for slot in &plan.slots {
            self.announce(
                pb::schedule_event::Kind::SlotCreated,
                &slot.channel_id,
                Some(slot),
                None,
            )
            .await;
        }
        let channel_ids: Vec<&str> = plan
            .channels
            .iter()
            .map(|(channel, _)| channel.id.as_str())
            .collect();
        let details = serde_json::json!({
            "channels": response.channels,
            "programs": response.programs,
            "slots": response.slots,
            "channelIds": channel_ids,
        });
        // One event for the whole import: the ops log records decisions, and
        // an import is one; its slots are on the schedule subjects.
        self.record("schedule.imported", &caller, "", details).await;
        Ok(Response::new(response))
    }
}

/// A multi-get's answer: the found records in the order asked (repeats
/// included), and the ids that were not found.
fn in_asked_order<R, P>(
    ids: &[String],
    found: &[R],
    id_of: impl Fn(&R) -> &String,
    to_proto: impl Fn(&R) -> P,
) -> (Vec<P>, Vec<String>) {
    let by_id: HashMap<&str, &R> = found
        .iter()
        .map(|record| (id_of(record).as_str(), record))
        .collect();
    let mut protos = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match by_id.get(id.as_str()) {
            Some(record) => protos.push(to_proto(record)),
            None => missing.push(id.clone()),
        }
    }
    (protos, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timetable_from_encoded_parts_is_what_prost_encodes() {
        let channel = |id: &str, number: i32| pb::Channel {
            id: id.to_owned(),
            number,
            name: format!("Channel {number}"),
            ..Default::default()
        };
        let entry = |slot_id: &str, title: &str| pb::TimetableEntry {
            slot: Some(pb::Slot {
                id: slot_id.to_owned(),
                channel_id: "news-1".to_owned(),
                start_time: Some(timestamp_from_millis(1_000)),
                ..Default::default()
            }),
            program: Some(pb::Program {
                title: title.to_owned(),
                description: "é".repeat(100),
                ..Default::default()
            }),
        };
        let timetable = pb::Timetable {
            channels: vec![
                pb::ChannelTimetable {
                    channel: Some(channel("news-1", 1)),
                    entries: (0..200)
                        .map(|at| entry(&format!("s{at}"), "News"))
                        .collect(),
                },
                pb::ChannelTimetable {
                    channel: Some(channel("empty-2", 2)),
                    entries: Vec::new(),
                },
            ],
            start_time: Some(timestamp_from_millis(0)),
            end_time: Some(timestamp_from_millis(86_400_000)),
        };
        let channels: Vec<pb::Channel> = timetable
            .channels
            .iter()
            .map(|part| part.channel.clone().unwrap_or_default())
            .collect();
        let parts: Vec<Bytes> = timetable
            .channels
            .iter()
            .map(|part| encode_entries(&part.entries))
            .collect();
        let encoded = encode_timetable(
            &channels,
            &parts,
            &timestamp_from_millis(0),
            &timestamp_from_millis(86_400_000),
        );
        assert_eq!(encoded.as_ref(), timetable.encode_to_vec().as_slice());
        assert_eq!(pb::Timetable::decode(encoded).unwrap(), timetable);
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let token = page_token("channels", "42");
        assert_eq!(
            page_position("channels", &token).unwrap(),
            Some("42".to_owned())
        );
        assert!(page_position("programs", &token).is_err());
        assert!(page_position("channels", "not base64!").is_err());
        assert_eq!(page_position("channels", "").unwrap(), None);
    }

    #[test]
    fn mask_paths_accept_json_names() {
        let mask = prost_types::FieldMask {
            paths: vec!["startTime".to_owned(), "end_time".to_owned()],
        };
        assert_eq!(
            mask_paths(Some(mask), Vec::new),
            vec!["start_time".to_owned(), "end_time".to_owned()]
        );
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).unwrap(), 100);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}
