//! Each channel's live HLS stream, computed from the schedule.
//!
//! A channel's newest entries (its playlist window) are kept in memory with
//! the media playlist already written (every rendition has the same text, as
//! segment URIs are relative to the rendition's folder), so that serving a
//! playlist is a map lookup and a clone of shared bytes whether one viewer
//! watches or a million do. When the time reaches the next entry's start, the
//! first request (or the background ticker) takes the channel's lock, asks
//! [`timeline::advance`] what to append, stores the new entries (every aired
//! entry is kept: restarts resume from it, replay plays it), and writes the
//! playlists again.
//!
//! The schedule is read from the media service (`GetTimetable`, one hour
//! ahead) and read again when `WatchSchedule` reports a change on the
//! channel, or after `schedule_refresh` (program changes, such as an asset
//! attached to a program, are not schedule events).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use onair_kit::clock::{Clock, millis_from_timestamp as millis_of, timestamp_from_millis};
use onair_kit::metrics::Registry;
use onair_proto::ServiceChannel;
use onair_proto::clients::MediaClient;
use onair_proto::media::v1 as media;
use onair_proto::playout::v1 as pb;

use crate::asset_index::AssetIndex;
use crate::error::PlayoutError;
use crate::ladder::CODECS;
use crate::live_segments::LiveSegments;
use crate::settings::PlayoutSettings;
use crate::tables::PlayoutStore;
use crate::timeline::{self, Entry, EntryKind, ScheduledSlot, Sources, TimelineSettings};

/// How far ahead of the present the schedule is read.
const SCHEDULE_LOOKAHEAD_MS: i64 = 3_600_000;
/// While a live slot waits for its encoder, how often the timeline is tried
/// again (an arriving segment also wakes it).
const LIVE_RETRY_MS: i64 = 100;
const AIRED: &str = "onair_playout_segments_aired_total";
const AIRED_HELP: &str =
    "Segments appended to the channels' live playlists, by kind (program, slate, live).";
/// How many channels one `ListChannels` page asks for.
const CHANNEL_PAGE_SIZE: i32 = 1000;

/// The schedule of a channel as last read.
struct ScheduleView {
    slots: Vec<ScheduledSlot>,
    slate_asset_id: String,
    from_ms: i64,
    to_ms: i64,
    read_at_ms: i64,
}

/// What only the channel's lock holder touches.
struct ChannelState {
    /// The newest entries, at most a window of them, oldest first.
    entries: VecDeque<Entry>,
    schedule: Option<ScheduleView>,
}

/// One channel's live stream.
pub struct ChannelPlayout {
    id: String,
    /// When the next entry is due (unix ms): before it, requests only read.
    next_due_ms: AtomicI64,
    /// Set when the schedule changed, so the next advance reads it again.
    schedule_stale: AtomicBool,
    state: tokio::sync::Mutex<ChannelState>,
    /// The media playlist as last written. Every rendition has the same text:
    /// segment URIs are relative to the rendition's folder.
    playlist: RwLock<Bytes>,
}

/// Every channel's live stream.
#[derive(Clone)]
pub struct Linear {
    inner: Arc<Inner>,
}

struct Inner {
    store: PlayoutStore,
    media: ServiceChannel,
    clock: Clock,
    assets: AssetIndex,
    live: LiveSegments,
    settings: PlayoutSettings,
    timeline: TimelineSettings,
    metrics: Registry,
    master: Bytes,
    channels: RwLock<HashMap<String, Arc<ChannelPlayout>>>,
}

impl Linear {
    /// Keeps the playlists of every channel from the media service's schedule.
    pub fn new(
        store: PlayoutStore,
        media: ServiceChannel,
        clock: Clock,
        assets: AssetIndex,
        live: LiveSegments,
        settings: PlayoutSettings,
        metrics: Registry,
    ) -> Linear {
        let segment_ms = i64::from(settings.encode.segment_seconds) * 1000;
        let timeline = TimelineSettings {
            segment_ms,
            window: i64::from(settings.window_segments),
            max_catch_up_ms: i64::try_from(settings.max_catch_up.as_millis()).unwrap_or(i64::MAX),
            live_wait_ms: i64::try_from(settings.live_wait.as_millis()).unwrap_or(i64::MAX),
        };
        let master = Bytes::from(master_playlist(&settings));
        Linear {
            inner: Arc::new(Inner {
                store,
                media,
                clock,
                assets,
                live,
                settings,
                timeline,
                metrics,
                master,
                channels: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The master playlist: the same ladder for every channel and replay.
    pub fn master(&self) -> Bytes {
        self.inner.master.clone()
    }

    /// The position of a rendition in the ladder.
    pub fn rendition_index(&self, name: &str) -> Option<usize> {
        self.inner
            .settings
            .encode
            .ladder
            .renditions
            .iter()
            .position(|rendition| rendition.name == name)
    }

    /// Checks that a channel exists, for the master playlist.
    pub async fn check_channel(&self, channel_id: &str) -> Result<(), PlayoutError> {
        self.channel(channel_id).await.map(|_| ())
    }

    /// A channel's live media playlist (any rendition's), brought up to the
    /// present.
    pub async fn media_playlist(&self, channel_id: &str) -> Result<Bytes, PlayoutError> {
        let channel = self.channel(channel_id).await?;
        self.ensure_current(&channel).await?;
        let playlist = channel
            .playlist
            .read()
            .map_err(|_| PlayoutError::Internal("playlist lock poisoned".to_owned()))?
            .clone();
        if playlist.is_empty() {
            // Only before the station's first slate is transcoded.
            return Err(PlayoutError::Unavailable(format!(
                "channel {channel_id} has nothing to air yet: its slate is being prepared"
            )));
        }
        Ok(playlist)
    }

    /// What a channel airs and where its playlist stands.
    pub async fn state(&self, channel_id: &str) -> Result<pb::PlayoutState, PlayoutError> {
        let channel = self.channel(channel_id).await?;
        self.ensure_current(&channel).await?;
        let state = channel.state.lock().await;
        let mut answer = pb::PlayoutState {
            channel_id: channel_id.to_owned(),
            ..pb::PlayoutState::default()
        };
        if let (Some(first), Some(last)) = (state.entries.front(), state.entries.back()) {
            answer.slot_id = last.slot_id.clone();
            answer.media_sequence = first.media_sequence;
            answer.discontinuity_sequence = first.discontinuity_number;
            answer.program_date_time = Some(timestamp_from_millis(last.pdt_ms));
        }
        Ok(answer)
    }

    /// Marks a channel's schedule as changed.
    pub fn schedule_changed(&self, channel_id: &str) {
        if let Ok(channels) = self.inner.channels.read()
            && let Some(channel) = channels.get(channel_id)
        {
            channel.schedule_stale.store(true, Ordering::SeqCst);
        }
    }

    /// Wakes a channel whose live slot received a segment.
    pub fn live_segment_arrived(&self, channel_id: &str) {
        if let Ok(channels) = self.inner.channels.read()
            && let Some(channel) = channels.get(channel_id)
        {
            channel.next_due_ms.store(i64::MIN, Ordering::SeqCst);
        }
    }

    /// The channel's stream, loaded from the store on first use. Unknown
    /// channels are refused, so a request cannot make the map grow.
    async fn channel(&self, channel_id: &str) -> Result<Arc<ChannelPlayout>, PlayoutError> {
        if let Ok(channels) = self.inner.channels.read()
            && let Some(channel) = channels.get(channel_id)
        {
            return Ok(channel.clone());
        }
        let mut media = MediaClient::new(self.inner.media.clone());
        let request = media::GetChannelRequest {
            channel_id: channel_id.to_owned(),
        };
        match media.get_channel(request).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(PlayoutError::NotFound {
                    kind: "channel",
                    id: channel_id.to_owned(),
                });
            }
            Err(status) => return Err(status.into()),
        }
        let window = i64::from(self.inner.settings.window_segments);
        let entries = self.inner.store.last_entries(channel_id, window).await?;
        let channel = Arc::new(ChannelPlayout {
            id: channel_id.to_owned(),
            next_due_ms: AtomicI64::new(i64::MIN),
            schedule_stale: AtomicBool::new(true),
            state: tokio::sync::Mutex::new(ChannelState {
                entries: entries.into(),
                schedule: None,
            }),
            playlist: RwLock::new(Bytes::new()),
        });
        let mut channels = self
            .inner
            .channels
            .write()
            .map_err(|_| PlayoutError::Internal("channel map lock poisoned".to_owned()))?;
        Ok(channels
            .entry(channel_id.to_owned())
            .or_insert(channel)
            .clone())
    }

    /// Appends what is due and writes the playlists again.
    async fn ensure_current(&self, channel: &ChannelPlayout) -> Result<(), PlayoutError> {
        let now_ms = self.inner.clock.now_ms();
        if now_ms < channel.next_due_ms.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut state = channel.state.lock().await;
        let now_ms = self.inner.clock.now_ms();
        if now_ms < channel.next_due_ms.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.read_schedule_if_needed(channel, &mut state, now_ms)
            .await?;
        let Some(schedule) = &state.schedule else {
            return Err(PlayoutError::Internal("no schedule".to_owned()));
        };
        let mut asset_ids: Vec<&str> = schedule
            .slots
            .iter()
            .map(|slot| slot.asset_id.as_str())
            .collect();
        asset_ids.push(&schedule.slate_asset_id);
        asset_ids.push(&self.inner.settings.default_slate_id);
        let assets = self.inner.assets.durations_of(asset_ids);
        let slate_asset_id = if assets.contains_key(&schedule.slate_asset_id) {
            Some(schedule.slate_asset_id.as_str())
        } else if assets.contains_key(&self.inner.settings.default_slate_id) {
            Some(self.inner.settings.default_slate_id.as_str())
        } else {
            None
        };
        let mut live = HashMap::new();
        for slot in schedule.slots.iter().filter(|slot| slot.live) {
            let segments = self.inner.live.segments(&slot.slot_id).await?;
            live.insert(slot.slot_id.clone(), segments);
        }
        let sources = Sources {
            slots: &schedule.slots,
            assets: &assets,
            slate_asset_id,
            live: &live,
        };
        let appended =
            timeline::advance(state.entries.back(), &sources, &self.inner.timeline, now_ms);
        if !appended.is_empty()
            && let Err(error) = self
                .inner
                .store
                .append_entries(&channel.id, &appended)
                .await
        {
            // What is stored is the truth (another process may have aired
            // these sequence numbers): start again from it.
            let window = i64::from(self.inner.settings.window_segments);
            if let Ok(stored) = self.inner.store.last_entries(&channel.id, window).await {
                state.entries = stored.into();
            }
            return Err(error);
        }
        let window = self.inner.settings.window_segments as usize;
        for entry in &appended {
            let kind = match entry.kind {
                EntryKind::Program => "program",
                EntryKind::Slate => "slate",
                EntryKind::Live => "live",
            };
            self.inner
                .metrics
                .counter_add(AIRED, AIRED_HELP, &[("kind", kind)], 1);
        }
        for entry in appended {
            state.entries.push_back(entry);
        }
        while state.entries.len() > window {
            state.entries.pop_front();
        }
        let entries: Vec<&Entry> = state.entries.iter().collect();
        if entries.is_empty() {
            channel
                .next_due_ms
                .store(now_ms + LIVE_RETRY_MS, Ordering::SeqCst);
            return Ok(());
        }
        let playlist = media_playlist(
            &entries,
            self.inner.settings.encode.segment_seconds,
            PlaylistKind::Live,
        );
        if let Ok(mut current) = channel.playlist.write() {
            *current = Bytes::from(playlist);
        }
        let next_due = match state.entries.back() {
            Some(last) if last.end_ms() > now_ms => last.end_ms(),
            // Waiting for a live segment or for a slate to exist.
            _ => now_ms + LIVE_RETRY_MS,
        };
        channel.next_due_ms.store(next_due, Ordering::SeqCst);
        Ok(())
    }

    async fn read_schedule_if_needed(
        &self,
        channel: &ChannelPlayout,
        state: &mut ChannelState,
        now_ms: i64,
    ) -> Result<(), PlayoutError> {
        let segment_ms = self.inner.timeline.segment_ms;
        // The schedule from where the timeline resumes (at most the longest
        // catch-up back), so that the media service's range limit holds
        // after a long stop.
        let window_start = now_ms - self.inner.timeline.window * segment_ms;
        let cursor = state
            .entries
            .back()
            .map_or(window_start, Entry::end_ms)
            .min(window_start)
            .max(window_start - self.inner.timeline.max_catch_up_ms);
        let refresh_ms =
            i64::try_from(self.inner.settings.schedule_refresh.as_millis()).unwrap_or(i64::MAX);
        let stale = channel.schedule_stale.swap(false, Ordering::SeqCst);
        let fresh = state.schedule.as_ref().is_some_and(|schedule| {
            !stale
                && schedule.from_ms <= cursor - segment_ms
                && now_ms + segment_ms <= schedule.to_ms
                && now_ms < schedule.read_at_ms + refresh_ms
        });
        if fresh {
            return Ok(());
        }
        let from_ms = cursor - 2 * segment_ms;
        let to_ms = now_ms + SCHEDULE_LOOKAHEAD_MS;
        let mut media = MediaClient::new(self.inner.media.clone());
        let request = media::GetTimetableRequest {
            channel_id: channel.id.clone(),
            start_time: Some(timestamp_from_millis(from_ms)),
            end_time: Some(timestamp_from_millis(to_ms)),
            ..media::GetTimetableRequest::default()
        };
        let timetable = media.get_timetable(request).await?.into_inner();
        let mut slots = Vec::new();
        let mut slate_asset_id = String::new();
        for channel_timetable in timetable.channels {
            if let Some(channel) = &channel_timetable.channel {
                slate_asset_id = channel.slate_asset_id.clone();
            }
            for entry in channel_timetable.entries {
                let Some(slot) = entry.slot else {
                    continue;
                };
                let program = entry.program.unwrap_or_default();
                slots.push(ScheduledSlot {
                    start_ms: millis_of(slot.start_time.as_ref()),
                    end_ms: millis_of(slot.end_time.as_ref()),
                    live: slot.live || program.live,
                    asset_id: program.asset_id,
                    slot_id: slot.id,
                });
            }
        }
        slots.sort_by_key(|slot| slot.start_ms);
        state.schedule = Some(ScheduleView {
            slots,
            slate_asset_id,
            from_ms,
            to_ms,
            read_at_ms: now_ms,
        });
        Ok(())
    }

    /// A slot's replay: every entry it aired, as a VOD playlist once the
    /// slot has ended (an event playlist while it airs).
    pub async fn replay_playlist(&self, slot_id: &str) -> Result<Bytes, PlayoutError> {
        let mut media = MediaClient::new(self.inner.media.clone());
        let request = media::GetSlotRequest {
            slot_id: slot_id.to_owned(),
        };
        let slot = match media.get_slot(request).await {
            Ok(slot) => slot.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(PlayoutError::NotFound {
                    kind: "slot",
                    id: slot_id.to_owned(),
                });
            }
            Err(status) => return Err(status.into()),
        };
        // The channel's timeline is brought up to now, so what aired is stored.
        if let Ok(channel) = self.channel(&slot.channel_id).await {
            self.ensure_current(&channel).await?;
        }
        let limit = i64::from(self.inner.settings.max_replay_segments);
        let entries = self.inner.store.slot_entries(slot_id, limit).await?;
        if entries.is_empty() {
            return Err(PlayoutError::FailedPrecondition(format!(
                "slot {slot_id} has not aired yet"
            )));
        }
        let ended = self.inner.clock.now_ms() >= millis_of(slot.end_time.as_ref());
        let kind = if ended {
            PlaylistKind::Replay
        } else {
            PlaylistKind::Event
        };
        let entries: Vec<&Entry> = entries.iter().collect();
        Ok(Bytes::from(media_playlist(
            &entries,
            self.inner.settings.encode.segment_seconds,
            kind,
        )))
    }

    /// When a slot ends (unix ms), or `None` if it no longer exists.
    pub async fn slot_end_ms(&self, slot_id: &str) -> Result<Option<i64>, PlayoutError> {
        let mut media = MediaClient::new(self.inner.media.clone());
        let request = media::GetSlotRequest {
            slot_id: slot_id.to_owned(),
        };
        match media.get_slot(request).await {
            Ok(slot) => Ok(Some(millis_of(slot.into_inner().end_time.as_ref()))),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(status.into()),
        }
    }

    /// Keeps every channel's timeline current even when nobody watches, so
    /// replay has every slot and a first viewer gets a full window. Runs
    /// until aborted.
    pub fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let linear = self.clone();
        tokio::spawn(async move {
            let mut channel_ids: Vec<String> = Vec::new();
            let mut listed_at: Option<tokio::time::Instant> = None;
            loop {
                tokio::time::sleep(linear.inner.settings.tick).await;
                let relist = listed_at
                    .is_none_or(|at| at.elapsed() >= linear.inner.settings.schedule_refresh);
                if relist {
                    match linear.list_channels().await {
                        Ok(ids) => {
                            channel_ids = ids;
                            listed_at = Some(tokio::time::Instant::now());
                        }
                        Err(error) => {
                            tracing::debug!(error = %error, "cannot list channels for playout");
                        }
                    }
                }
                for channel_id in &channel_ids {
                    let result = match linear.channel(channel_id).await {
                        Ok(channel) => linear.ensure_current(&channel).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = result {
                        tracing::warn!(channel = %channel_id, error = %error, "cannot advance a channel's playout");
                    }
                }
            }
        })
    }

    async fn list_channels(&self) -> Result<Vec<String>, PlayoutError> {
        let mut media = MediaClient::new(self.inner.media.clone());
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = media::ListChannelsRequest {
                page_size: CHANNEL_PAGE_SIZE,
                page_token: page_token.clone(),
            };
            let page = media.list_channels(request).await?.into_inner();
            ids.extend(page.channels.into_iter().map(|channel| channel.id));
            if page.next_page_token.is_empty() {
                return Ok(ids);
            }
            page_token = page.next_page_token;
        }
    }

    /// Follows schedule changes, so a changed slot is read before it airs.
    /// Reconnects after a failure; runs until aborted.
    pub fn spawn_schedule_watch(&self) -> tokio::task::JoinHandle<()> {
        let linear = self.clone();
        tokio::spawn(async move {
            loop {
                let mut media = MediaClient::new(linear.inner.media.clone());
                let request = media::WatchScheduleRequest {
                    channel_id: String::new(),
                };
                match media.watch_schedule(request).await {
                    Ok(response) => {
                        let mut events = response.into_inner();
                        while let Some(Ok(event)) = events.next().await {
                            linear.schedule_changed(&event.channel_id);
                        }
                    }
                    Err(status) => {
                        tracing::debug!(error = %status, "cannot watch the schedule; retrying");
                    }
                }
                // Whatever was missed meanwhile is read again.
                if let Ok(channels) = linear.inner.channels.read() {
                    for channel in channels.values() {
                        channel.schedule_stale.store(true, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// Which playlist is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// A sliding window that never ends.
    Live,
    /// A slot on air: grows, starts at its beginning.
    Event,
    /// An aired slot: complete.
    Replay,
}

/// The URI of an entry's segment, relative to the media playlist.
pub fn segment_uri(entry: &Entry) -> String {
    match entry.kind {
        EntryKind::Live => format!("l/{}/{}.ts", entry.source_id, entry.segment_index),
        EntryKind::Program | EntryKind::Slate => {
            format!("a/{}/{}.ts", entry.source_id, entry.segment_index)
        }
    }
}

/// Writes a media playlist. The discontinuity on the window's first entry
/// is folded into the discontinuity sequence rather than written: a period
/// with no segment before it confuses some players (Kodi).
pub fn media_playlist(entries: &[&Entry], target_seconds: u32, kind: PlaylistKind) -> String {
    let mut text = String::with_capacity(128 + entries.len() * 120);
    text.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
    let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target_seconds}");
    let first_sequence = entries.first().map_or(0, |entry| entry.media_sequence);
    let first_discontinuity = entries
        .first()
        .map_or(0, |entry| entry.discontinuity_number);
    let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{first_sequence}");
    let _ = writeln!(text, "#EXT-X-DISCONTINUITY-SEQUENCE:{first_discontinuity}");
    match kind {
        PlaylistKind::Live => {}
        PlaylistKind::Event => text.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        PlaylistKind::Replay => text.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
    }
    text.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    for (position, entry) in entries.iter().enumerate() {
        if position > 0 && entry.discontinuity {
            text.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(
            text,
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            format_date_time(entry.pdt_ms)
        );
        let _ = writeln!(
            text,
            "#EXTINF:{}.{:03},",
            entry.duration_ms / 1000,
            entry.duration_ms % 1000
        );
        text.push_str(&segment_uri(entry));
        text.push('\n');
    }
    if kind == PlaylistKind::Replay {
        text.push_str("#EXT-X-ENDLIST\n");
    }
    text
}

/// The master playlist of the station's ladder.
pub fn master_playlist(settings: &PlayoutSettings) -> String {
    let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let ladder = &settings.encode.ladder;
    for rendition in &ladder.renditions {
        let peak = rendition.bandwidth(ladder.audio_kbps);
        let average = (rendition.video_kbps + ladder.audio_kbps) * 1000;
        let _ = writeln!(
            text,
            "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average},CODECS=\"{CODECS}\",RESOLUTION={}x{},FRAME-RATE={}.000",
            rendition.width, rendition.height, settings.encode.frame_rate
        );
        let _ = writeln!(text, "{}/index.m3u8", rendition.name);
    }
    text
}

/// `2026-11-30T08:41:23.000Z`.
pub fn format_date_time(millis: i64) -> String {
    match jiff::Timestamp::from_millisecond(millis) {
        Ok(timestamp) => timestamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}
