//! Counting: every count interval, each watched channel's count from the
//! presence board, the slot on air from the media service, and, for the
//! process that holds the duty, a `viewers` event when a count changed and
//! the slot's figures in the store.
//!
//! Every audience process counts, so that each answers reads and pushes
//! counts to its own `ViewerSession` streams; only the duty holder
//! announces and records, so that the live sockets see each change once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use onair_kit::bus::{SharedBus, Subscription};
use onair_kit::clock::Clock;
use onair_kit::events::{LiveEvent, LiveKind, MEDIA_CHANGED, changed_channels};
use onair_kit::presence::SharedPresence;
use onair_proto::audience::v1 as pb;
use onair_proto::clients::MediaClient;
use onair_proto::media::v1 as media;
use tokio::sync::watch;

use crate::error::AudienceError;
use crate::settings::AudienceSettings;
use crate::store::{AudienceStore, MINUTE_MS};

/// The full name of the message of `viewers` live events.
pub const VIEWER_COUNT: &str = "onair.audience.v1.ViewerCount";

/// The longest a slot on air is trusted without news of the schedule, in
/// case a change announcement was lost.
const ON_AIR_RECHECK_MS: i64 = 60_000;

/// Each channel's latest count, as this process took it.
pub type Tallies = Arc<Tally>;

/// One count of every watched channel.
#[derive(Debug, Default)]
pub struct Tally {
    /// The number of the count, from 1: a count that started before a
    /// viewer was marked may not include them.
    pub number: u64,
    /// The channels with viewers, by id; a channel left out has none.
    pub counts: HashMap<String, pb::ViewerCount>,
}

/// Counts viewers, announces changes and records each slot's figures.
/// Cheap to clone.
#[derive(Clone)]
pub struct Counter {
    inner: Arc<Inner>,
}

struct Inner {
    board: SharedPresence,
    store: AudienceStore,
    media: MediaClient,
    bus: SharedBus,
    clock: Clock,
    settings: AudienceSettings,
    /// This process's name for the duty's lease.
    holder: String,
    /// `media.changed`, drained before the slot on air is trusted.
    media_changes: Mutex<Subscription>,
    state: Mutex<State>,
    tallies: watch::Sender<Tallies>,
    /// How many counts have started.
    started: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Each channel's slot on air (`None` in a gap), and until when that
    /// holds.
    on_air: HashMap<String, OnAir>,
    /// The peak known of each slot on air.
    peaks: HashMap<String, i64>,
    /// What the live sockets were last told of each channel (duty holder).
    announced: HashMap<String, pb::ViewerCount>,
    /// The minute and count last recorded of each slot (duty holder).
    recorded: HashMap<String, (i64, i64)>,
}

#[derive(Debug, Clone)]
struct OnAir {
    slot_id: Option<String>,
    valid_until_ms: i64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Counter {
    /// A counter over `board`, asking `media` what is on air.
    pub async fn start(
        board: SharedPresence,
        store: AudienceStore,
        media: MediaClient,
        bus: SharedBus,
        clock: Clock,
        settings: AudienceSettings,
    ) -> Result<Counter, AudienceError> {
        let media_changes = bus.subscribe(MEDIA_CHANGED).await.map_err(|error| {
            AudienceError::Unavailable(format!("cannot subscribe to {MEDIA_CHANGED}: {error}"))
        })?;
        let (tallies, _) = watch::channel(Tallies::default());
        Ok(Counter {
            inner: Arc::new(Inner {
                board,
                store,
                media,
                bus,
                clock,
                settings,
                holder: uuid::Uuid::new_v4().to_string(),
                media_changes: Mutex::new(media_changes),
                state: Mutex::new(State::default()),
                tallies,
                started: AtomicU64::new(0),
            }),
        })
    }

    /// Counts every count interval until the process stops.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let counter = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(counter.inner.settings.count_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(error) = counter.tick().await {
                    tracing::warn!(error = %error, "cannot count viewers");
                }
            }
        })
    }

    /// The latest counts, changing at every count.
    pub fn watch(&self) -> watch::Receiver<Tallies> {
        self.inner.tallies.subscribe()
    }

    /// The number of the latest count started: a tally numbered above it
    /// began after now.
    pub fn counts_started(&self) -> u64 {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// How long a heartbeat counts its viewer: the heartbeat interval and
    /// the presence ttl after it.
    pub fn heartbeat_lasts(&self) -> Duration {
        self.inner.settings.heartbeat_interval + self.inner.settings.presence.ttl
    }

    /// The station's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The presence board.
    pub fn board(&self) -> &SharedPresence {
        &self.inner.board
    }

    /// One count: every watched channel, and every channel that had viewers
    /// at the last count (so a fall to none is announced too).
    pub async fn tick(&self) -> Result<(), AudienceError> {
        let number = self.inner.started.fetch_add(1, Ordering::SeqCst) + 1;
        let now_ms = self.inner.clock.now_ms();
        let mut channel_ids = self.inner.board.watched_channels(now_ms).await?;
        for channel_id in self.inner.tallies.borrow().counts.keys() {
            if !channel_ids.contains(channel_id) {
                channel_ids.push(channel_id.clone());
            }
        }
        let counts = self.counts(&channel_ids, now_ms).await?;
        let on_duty = self
            .inner
            .board
            .hold_duty(&self.inner.holder, self.inner.settings.count_interval * 3)
            .await?;
        if on_duty {
            self.announce_and_record(&counts, now_ms).await;
        }
        // Slots no longer on air are done with.
        {
            let mut state = lock(&self.inner.state);
            let on_air: Vec<&str> = counts
                .iter()
                .filter(|count| !count.slot_id.is_empty())
                .map(|count| count.slot_id.as_str())
                .collect();
            state
                .recorded
                .retain(|slot_id, _| on_air.contains(&slot_id.as_str()));
            state
                .peaks
                .retain(|slot_id, _| on_air.contains(&slot_id.as_str()));
        }
        let counts: HashMap<String, pb::ViewerCount> = counts
            .into_iter()
            .filter(|count| count.count > 0)
            .map(|count| (count.channel_id.clone(), count))
            .collect();
        self.inner
            .tallies
            .send_replace(Arc::new(Tally { number, counts }));
        Ok(())
    }

    /// The counts of `channel_ids` now, with each one's slot on air and its
    /// peak; every channel when `channel_ids` is empty. An unknown channel
    /// is an error naming it.
    pub async fn read(
        &self,
        channel_ids: &[String],
    ) -> Result<Vec<pb::ViewerCount>, AudienceError> {
        let now_ms = self.inner.clock.now_ms();
        if channel_ids.is_empty() {
            let every = self.every_channel(now_ms).await?;
            return self.counts(&every, now_ms).await;
        }
        let on_air = self.on_air(channel_ids, now_ms).await?;
        let unknown: Vec<&str> = channel_ids
            .iter()
            .filter(|channel_id| !on_air.contains_key(*channel_id))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(AudienceError::NotFound(format!(
                "no channel with id {}",
                unknown.join(", ")
            )));
        }
        self.counts(channel_ids, now_ms).await
    }

    /// Whether `channel_id` names a channel.
    pub async fn channel_exists(&self, channel_id: &str) -> Result<bool, AudienceError> {
        let now_ms = self.inner.clock.now_ms();
        let on_air = self.on_air(&[channel_id.to_owned()], now_ms).await?;
        Ok(on_air.contains_key(channel_id))
    }

    /// Counts from the board, with the slot on air and its peak. Channels
    /// the media service does not know count with no slot.
    async fn counts(
        &self,
        channel_ids: &[String],
        now_ms: i64,
    ) -> Result<Vec<pb::ViewerCount>, AudienceError> {
        let viewers = self.inner.board.counts(channel_ids, now_ms).await?;
        let on_air = self.on_air(channel_ids, now_ms).await?;
        let mut counts = Vec::with_capacity(channel_ids.len());
        for (channel_id, viewers) in channel_ids.iter().zip(viewers) {
            let count = i64::try_from(viewers).unwrap_or(i64::MAX);
            let slot_id = on_air.get(channel_id).cloned().flatten();
            let peak = match &slot_id {
                Some(slot_id) => self.raise_peak(slot_id, count).await?,
                None => count,
            };
            counts.push(pb::ViewerCount {
                channel_id: channel_id.clone(),
                count,
                peak,
                slot_id: slot_id.unwrap_or_default(),
            });
        }
        Ok(counts)
    }

    /// The slot's peak, raised to `count` if that is more; read from the
    /// store the first time a slot is seen, so a restart or another
    /// process's taking over does not start it again from nothing.
    async fn raise_peak(&self, slot_id: &str, count: i64) -> Result<i64, AudienceError> {
        let known = lock(&self.inner.state).peaks.get(slot_id).copied();
        let known = match known {
            Some(peak) => peak,
            None => self.inner.store.peak(slot_id).await?,
        };
        let peak = known.max(count);
        lock(&self.inner.state)
            .peaks
            .insert(slot_id.to_owned(), peak);
        Ok(peak)
    }

    /// Tells the live sockets of each count that changed, and records each
    /// slot's count when it changed or a new minute began. Failures are
    /// logged and tried again at the next count.
    async fn announce_and_record(&self, counts: &[pb::ViewerCount], now_ms: i64) {
        let minute_ms = now_ms - now_ms.rem_euclid(MINUTE_MS);
        for count in counts {
            // A channel not announced yet stands at none.
            let changed = lock(&self.inner.state)
                .announced
                .get(&count.channel_id)
                .map_or(count.count != 0, |announced| {
                    announced.count != count.count || announced.slot_id != count.slot_id
                });
            if changed {
                let event =
                    LiveEvent::pack(&count.channel_id, LiveKind::Viewers, VIEWER_COUNT, count);
                match event.publish(&self.inner.bus).await {
                    Ok(_) => {
                        let mut state = lock(&self.inner.state);
                        if count.count == 0 {
                            state.announced.remove(&count.channel_id);
                        } else {
                            state
                                .announced
                                .insert(count.channel_id.clone(), count.clone());
                        }
                    }
                    Err(error) => {
                        tracing::warn!(channel = %count.channel_id, error = %error, "cannot announce the viewer count");
                    }
                }
            }
            // The store keeps each minute's most, so only a new minute or
            // a new most is worth a write.
            let recorded = lock(&self.inner.state)
                .recorded
                .get(&count.slot_id)
                .copied();
            let due = !count.slot_id.is_empty()
                && count.count > 0
                && recorded.is_none_or(|(minute, most)| minute != minute_ms || count.count > most);
            if !due {
                continue;
            }
            match self
                .inner
                .store
                .record(&count.slot_id, &count.channel_id, count.count, now_ms)
                .await
            {
                Ok(()) => {
                    lock(&self.inner.state)
                        .recorded
                        .insert(count.slot_id.clone(), (minute_ms, count.count));
                }
                Err(error) => {
                    tracing::warn!(slot = %count.slot_id, error = %error, "cannot record the slot's viewers");
                }
            }
        }
    }

    /// Forgets what is on air on channels the media service says changed.
    fn forget_changed_schedules(&self) {
        let mut changes = lock(&self.inner.media_changes);
        let mut forget_all = false;
        let mut changed = Vec::new();
        while let Some(Some(message)) = changes.next().now_or_never() {
            match changed_channels(&message.payload) {
                Some(channels) => changed.extend(channels),
                None => forget_all = true,
            }
        }
        drop(changes);
        let mut state = lock(&self.inner.state);
        if forget_all {
            state.on_air.clear();
        }
        for channel_id in changed {
            state.on_air.remove(&channel_id);
        }
    }

    /// The slot on air of each of `channel_ids` that exists (`None` in a
    /// gap); a channel the media service does not know is left out. Asks
    /// the media service, in one call, only of channels not known already.
    async fn on_air(
        &self,
        channel_ids: &[String],
        now_ms: i64,
    ) -> Result<HashMap<String, Option<String>>, AudienceError> {
        self.forget_changed_schedules();
        let mut found = HashMap::with_capacity(channel_ids.len());
        let mut missing = Vec::new();
        {
            let state = lock(&self.inner.state);
            for channel_id in channel_ids {
                match state.on_air.get(channel_id) {
                    Some(on_air) if now_ms < on_air.valid_until_ms => {
                        found.insert(channel_id.clone(), on_air.slot_id.clone());
                    }
                    _ => missing.push(channel_id.clone()),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        for (channel_id, on_air) in self.ask_media(missing, now_ms).await? {
            found.insert(channel_id, on_air.slot_id);
        }
        Ok(found)
    }

    /// Every channel's id, from the media service.
    async fn every_channel(&self, now_ms: i64) -> Result<Vec<String>, AudienceError> {
        self.forget_changed_schedules();
        let mut every: Vec<String> = self
            .ask_media(Vec::new(), now_ms)
            .await?
            .into_iter()
            .map(|(channel_id, _)| channel_id)
            .collect();
        every.sort_unstable();
        Ok(every)
    }

    /// Now/next of `channel_ids` (every channel when empty), remembered.
    async fn ask_media(
        &self,
        channel_ids: Vec<String>,
        now_ms: i64,
    ) -> Result<Vec<(String, OnAir)>, AudienceError> {
        let mut client = self.inner.media.clone();
        let answer = client
            .batch_get_now_next(media::BatchGetNowNextRequest { channel_ids })
            .await
            .map_err(|status| AudienceError::from_media(&status))?
            .into_inner();
        let mut learnt = Vec::with_capacity(answer.now_next.len());
        let mut state = lock(&self.inner.state);
        for now_next in answer.now_next {
            let channel_id = now_next.channel_id.clone();
            let (slot, changes_at) = now_next.on_air_until();
            let on_air = OnAir {
                slot_id: slot.map(|slot| slot.id),
                valid_until_ms: changes_at.min(now_ms.saturating_add(ON_AIR_RECHECK_MS)),
            };
            state.on_air.insert(channel_id.clone(), on_air.clone());
            learnt.push((channel_id, on_air));
        }
        Ok(learnt)
    }
}
