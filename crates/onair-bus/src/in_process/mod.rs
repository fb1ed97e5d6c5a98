//! The embedded bus: everything in this process, durable streams optionally on disk.
//!
//! Core fan-out gives each subscriber its own bounded queue
//! ([`InProcessBusConfig::subscriber_queue_len`]). Publishing never waits for a
//! subscriber: when a subscriber's queue is full, the new message is dropped for that
//! subscriber only, counted in [`Subscription::lost_messages`] and logged with
//! `tracing::warn`; the subscriber still receives everything already queued, in order.
//! That is the at-most-once contract of NATS core, and it keeps one stalled viewer
//! connection from slowing the station or growing memory.
//!
//! Durable streams keep their messages in memory, within the stream's
//! [`StreamLimits`](crate::StreamLimits), and, with a durable directory, in one
//! append-only journal per stream that is fsync'd before [`Bus::publish_durable`]
//! returns (streams declared `memory_only` never touch the disk). Limits trim memory;
//! a journal is not compacted, so a restart reloads it and trims again. Replays read
//! from the stored messages at the reader's own pace, so they never lose messages; a
//! replay asked to start before the oldest kept message starts at that message.

mod journal;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{OnceCell, mpsc, watch};

use self::journal::{Journal, LoadedJournal};
use crate::subject::{
    SubjectPattern, parse_stream_subjects, validate_stream_name, validate_subject,
};
use crate::{Bus, BusError, DurableStream, Message, StreamBounds, StreamLimits, Subscription};

/// Default for [`InProcessBusConfig::subscriber_queue_len`]: a few seconds of a busy
/// channel's comments.
pub const DEFAULT_SUBSCRIBER_QUEUE_LEN: usize = 4096;

/// Default for [`InProcessBusConfig::max_payload`]: NATS's default `max_payload`, so that
/// what works embedded also works against a default NATS server.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// How many stored messages a replay examines per lock acquisition when a filter skips
/// most of them, so one replay never holds the stream's lock for long.
const REPLAY_SCAN_BATCH: usize = 1024;

/// File name suffix of a stream's journal.
const JOURNAL_EXTENSION: &str = "log";

/// File name suffix of a stream's definition (its subjects).
const DEFINITION_EXTENSION: &str = "stream";

/// File name suffix of the file that holds a journaled stream's epoch.
const EPOCH_EXTENSION: &str = "epoch";

/// Settings of an [`InProcessBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProcessBusConfig {
    /// Where durable streams are persisted (one journal and one definition file per
    /// stream); `None` keeps them in memory only, so they are lost on restart.
    pub durable_dir: Option<PathBuf>,
    /// How many messages may wait for one core subscriber before newer ones are dropped
    /// for it; bounds memory per subscriber. At least 1.
    pub subscriber_queue_len: usize,
    /// Largest payload accepted, in bytes.
    pub max_payload: usize,
}

impl InProcessBusConfig {
    /// Default bounds, with durable streams in `durable_dir` if given.
    pub fn new(durable_dir: Option<PathBuf>) -> Self {
        Self {
            durable_dir,
            subscriber_queue_len: DEFAULT_SUBSCRIBER_QUEUE_LEN,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl Default for InProcessBusConfig {
    fn default() -> Self {
        Self::new(None)
    }
}

/// The embedded bus for a one-process station. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

/// What every clone of an [`InProcessBus`] shares.
struct Shared {
    config: InProcessBusConfig,
    fanout: Arc<Fanout>,
    /// Loaded from the durable directory on first use, so that `new` needs no I/O and
    /// can be called from async code.
    streams: OnceCell<Streams>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl InProcessBus {
    /// A bus with default bounds; durable streams are kept in `durable_dir` if given
    /// (created if missing) and reloaded from it on first use.
    pub fn new(durable_dir: Option<PathBuf>) -> Self {
        Self::with_config(InProcessBusConfig::new(durable_dir))
    }

    /// A bus with explicit settings.
    pub fn with_config(mut config: InProcessBusConfig) -> Self {
        // A zero-length queue cannot hold the message being delivered.
        config.subscriber_queue_len = config.subscriber_queue_len.max(1);
        Self {
            shared: Arc::new(Shared {
                config,
                fanout: Arc::new(Fanout::default()),
                streams: OnceCell::new(),
            }),
        }
    }

    async fn streams(&self) -> Result<&Streams, BusError> {
        let durable_dir = self.shared.config.durable_dir.clone();
        self.shared
            .streams
            .get_or_try_init(|| Streams::load(durable_dir))
            .await
    }

    fn check_payload(&self, payload: &Bytes) -> Result<(), BusError> {
        let limit = self.shared.config.max_payload;
        if payload.len() > limit {
            return Err(BusError::PayloadTooLarge {
                size: payload.len(),
                limit,
            });
        }
        Ok(())
    }

    async fn append(
        &self,
        stream: Arc<StreamState>,
        subject: &str,
        payload: Bytes,
    ) -> Result<u64, BusError> {
        // A task of its own, so a caller that gives up half-way cannot leave a message
        // on disk but not in memory (or lose the journal handle).
        let fanout = self.shared.fanout.clone();
        let append = tokio::spawn(stream.append(fanout, subject.to_owned(), payload));
        match append.await {
            Ok(result) => result,
            Err(join_error) => Err(BusError::Storage(format!(
                "durable append task failed: {join_error}"
            ))),
        }
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        validate_subject(subject)?;
        self.check_payload(&payload)?;
        let streams = self.streams().await?;
        if let Some(stream) = streams.capturing(subject) {
            self.append(stream, subject, payload).await?;
            return Ok(());
        }
        self.shared.fanout.deliver(subject, &payload);
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        let pattern = SubjectPattern::parse(pattern)?;
        let queue_len = self.shared.config.subscriber_queue_len;
        Ok(self.shared.fanout.subscribe(pattern, queue_len))
    }

    async fn ensure_stream(&self, stream: &DurableStream) -> Result<(), BusError> {
        self.streams().await?.ensure(stream).await
    }

    async fn publish_durable(&self, subject: &str, payload: Bytes) -> Result<u64, BusError> {
        validate_subject(subject)?;
        self.check_payload(&payload)?;
        let streams = self.streams().await?;
        let Some(stream) = streams.capturing(subject) else {
            return Err(BusError::NoStreamForSubject(subject.to_owned()));
        };
        self.append(stream, subject, payload).await
    }

    async fn replay(
        &self,
        stream: &str,
        from_sequence: u64,
        filter: Option<&str>,
    ) -> Result<Subscription, BusError> {
        validate_stream_name(stream)?;
        let filter = filter.map(SubjectPattern::parse).transpose()?;
        let streams = self.streams().await?;
        let Some(state) = streams.get(stream) else {
            return Err(BusError::UnknownStream(stream.to_owned()));
        };
        if let Some(filter) = &filter {
            let captured = read(&state.subjects)
                .iter()
                .any(|subject| subject.overlaps(filter));
            if !captured {
                return Err(BusError::InvalidSubject(format!(
                    "replay filter {filter} matches none of the subjects of stream {stream:?}"
                )));
            }
        }
        let cursor = ReplayCursor {
            appended: state.appended.subscribe(),
            stream: Arc::downgrade(&state),
            next_sequence: from_sequence.max(1),
            filter,
        };
        Ok(Subscription::from_stream(futures::stream::unfold(
            cursor,
            next_replayed,
        )))
    }

    async fn stream_bounds(&self, stream: &str) -> Result<StreamBounds, BusError> {
        validate_stream_name(stream)?;
        let streams = self.streams().await?;
        let Some(state) = streams.get(stream) else {
            return Err(BusError::UnknownStream(stream.to_owned()));
        };
        // Read under the messages lock, which appends hold while they push.
        let messages = read(&state.messages);
        let last = messages
            .back()
            .and_then(|stored| stored.message.sequence)
            .unwrap_or_else(|| *state.appended.borrow());
        let first = messages
            .front()
            .and_then(|stored| stored.message.sequence)
            .unwrap_or(last + 1);
        Ok(StreamBounds {
            first,
            last,
            epoch: state.epoch,
        })
    }

    async fn check(&self) -> Result<(), BusError> {
        // Readiness includes a usable durable directory.
        self.streams().await.map(|_streams| ())
    }
}

/// Read access that shrugs off poisoning: our critical sections leave the data
/// consistent even if a thread panicked while holding the lock.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Core (non-durable) fan-out: the subscribers of the moment.
#[derive(Default)]
struct Fanout {
    subscribers: RwLock<HashMap<u64, CoreSubscriber>>,
    next_id: AtomicU64,
}

/// One core subscriber as the publishing side sees it.
struct CoreSubscriber {
    pattern: SubjectPattern,
    sender: mpsc::Sender<Message>,
    /// Shared with the [`Subscription`], which reports it.
    lost: Arc<AtomicU64>,
}

impl Fanout {
    fn subscribe(self: &Arc<Self>, pattern: SubjectPattern, queue_len: usize) -> Subscription {
        let (sender, receiver) = mpsc::channel(queue_len);
        let lost = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(subscription = id, pattern = %pattern, "core subscription opened");
        let subscriber = CoreSubscriber {
            pattern,
            sender,
            lost: lost.clone(),
        };
        write(&self.subscribers).insert(id, subscriber);
        let feed = CoreFeed {
            receiver,
            id,
            fanout: Arc::downgrade(self),
        };
        Subscription::with_loss_counter(feed, lost)
    }

    /// Hands a message to every matching subscriber without waiting for any of them.
    fn deliver(&self, subject: &str, payload: &Bytes) {
        let subscribers = read(&self.subscribers);
        for (id, subscriber) in subscribers.iter() {
            if !subscriber.pattern.matches(subject) {
                continue;
            }
            let message = Message {
                subject: subject.to_owned(),
                payload: payload.clone(),
                sequence: None,
            };
            match subscriber.sender.try_send(message) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_dropped)) => {
                    let lost_before = subscriber.lost.fetch_add(1, Ordering::Relaxed);
                    // Powers of two: the first loss and then ever more rarely, so a
                    // stuck subscriber cannot flood the log.
                    if lost_before == 0 || (lost_before + 1).is_power_of_two() {
                        tracing::warn!(
                            subscription = id,
                            pattern = %subscriber.pattern,
                            subject,
                            lost_messages = lost_before + 1,
                            "subscriber is too slow; dropping messages for it"
                        );
                    }
                }
                // The subscription is being dropped; its guard removes the entry.
                Err(mpsc::error::TrySendError::Closed(_dropped)) => {}
            }
        }
    }
}

/// The receiving end of a core subscription; unsubscribes when dropped.
struct CoreFeed {
    receiver: mpsc::Receiver<Message>,
    id: u64,
    fanout: Weak<Fanout>,
}

impl Stream for CoreFeed {
    type Item = Message;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Message>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for CoreFeed {
    fn drop(&mut self) {
        if let Some(fanout) = self.fanout.upgrade() {
            write(&fanout.subscribers).remove(&self.id);
            tracing::debug!(subscription = self.id, "core subscription closed");
        }
    }
}

/// The declared durable streams.
struct Streams {
    durable_dir: Option<PathBuf>,
    by_name: RwLock<HashMap<String, Arc<StreamState>>>,
    /// Serializes declarations, so two racing `ensure_stream` calls cannot both pass
    /// the overlap check.
    declare: tokio::sync::Mutex<()>,
}

impl Streams {
    async fn load(durable_dir: Option<PathBuf>) -> Result<Self, BusError> {
        let mut by_name = HashMap::new();
        if let Some(dir) = &durable_dir {
            let dir_for_load = dir.clone();
            let loaded = tokio::task::spawn_blocking(move || load_dir(&dir_for_load))
                .await
                .map_err(|join_error| {
                    BusError::Storage(format!("loading durable streams failed: {join_error}"))
                })??;
            for stream in loaded {
                let name = stream.name;
                let state = StreamState::from_journal(
                    name.clone(),
                    stream.patterns,
                    stream.journal,
                    stream.epoch,
                );
                by_name.insert(name, Arc::new(state));
            }
            tracing::info!(
                durable_dir = %dir.display(),
                streams = by_name.len(),
                "loaded durable streams"
            );
        }
        Ok(Self {
            durable_dir,
            by_name: RwLock::new(by_name),
            declare: tokio::sync::Mutex::new(()),
        })
    }

    fn get(&self, name: &str) -> Option<Arc<StreamState>> {
        read(&self.by_name).get(name).cloned()
    }

    /// The stream that captures `subject`; declarations never overlap, so there is at
    /// most one.
    fn capturing(&self, subject: &str) -> Option<Arc<StreamState>> {
        read(&self.by_name)
            .values()
            .find(|stream| stream.captures(subject))
            .cloned()
    }

    async fn ensure(&self, declaration: &DurableStream) -> Result<(), BusError> {
        let name = declaration.name.as_str();
        let patterns = parse_stream_subjects(name, &declaration.subjects)?;
        let _declaring = self.declare.lock().await;

        self.check_no_overlap(name, &patterns)?;
        if let Some(existing) = self.get(name) {
            *write(&existing.limits) = declaration.limits;
            existing.trim();
            if *read(&existing.subjects) == patterns {
                return Ok(());
            }
            if let (Some(dir), false) = (&self.durable_dir, declaration.limits.memory_only) {
                let path = definition_path(dir, name);
                let subjects = declaration.subjects.clone();
                run_blocking(move || journal::write_definition(&path, &subjects)).await?;
            }
            *write(&existing.subjects) = patterns;
            tracing::info!(stream = name, subjects = ?declaration.subjects, "durable stream updated");
            return Ok(());
        }

        let durable_dir = self
            .durable_dir
            .as_ref()
            .filter(|_| !declaration.limits.memory_only);
        let state = match durable_dir {
            None => StreamState::in_memory(name.to_owned(), patterns),
            Some(dir) => {
                let dir = dir.clone();
                let stream_name = name.to_owned();
                let subjects = declaration.subjects.clone();
                let loaded = run_blocking(move || {
                    std::fs::create_dir_all(&dir)?;
                    journal::write_definition(&definition_path(&dir, &stream_name), &subjects)?;
                    let epoch = journal_epoch(&dir, &stream_name)?;
                    Ok((Journal::open(&journal_path(&dir, &stream_name))?, epoch))
                })
                .await?;
                let (loaded, epoch) = loaded;
                StreamState::from_journal(name.to_owned(), patterns, loaded, epoch)
            }
        };
        *write(&state.limits) = declaration.limits;
        state.trim();
        write(&self.by_name).insert(name.to_owned(), Arc::new(state));
        tracing::info!(stream = name, subjects = ?declaration.subjects, "durable stream declared");
        Ok(())
    }

    fn check_no_overlap(&self, name: &str, patterns: &[SubjectPattern]) -> Result<(), BusError> {
        let by_name = read(&self.by_name);
        for other in by_name.values().filter(|other| other.name != name) {
            for theirs in read(&other.subjects).iter() {
                if let Some(mine) = patterns.iter().find(|mine| mine.overlaps(theirs)) {
                    return Err(BusError::InvalidStream(format!(
                        "subject {mine} of stream {name:?} overlaps subject {theirs} of stream {:?}: each subject may belong to one stream only",
                        other.name
                    )));
                }
            }
        }
        Ok(())
    }
}

fn journal_path(dir: &Path, stream: &str) -> PathBuf {
    dir.join(format!("{stream}.{JOURNAL_EXTENSION}"))
}

fn definition_path(dir: &Path, stream: &str) -> PathBuf {
    dir.join(format!("{stream}.{DEFINITION_EXTENSION}"))
}

fn epoch_path(dir: &Path, stream: &str) -> PathBuf {
    dir.join(format!("{stream}.{EPOCH_EXTENSION}"))
}

/// Now, in microseconds since the Unix epoch: the epoch of a stream created now.
fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

/// The epoch of a journaled stream: read from beside its journal, or, for a journal
/// that has none yet (new, or written before epochs existed), made now and written
/// there. Blocking.
fn journal_epoch(dir: &Path, stream: &str) -> std::io::Result<u64> {
    let path = epoch_path(dir, stream);
    match std::fs::read_to_string(&path) {
        Ok(contents) => contents.trim().parse::<u64>().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a stream epoch (a whole number); remove it to start a new epoch",
                    path.display()
                ),
            )
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let epoch = now_epoch();
            let temporary = path.with_extension("epoch.tmp");
            std::fs::write(&temporary, format!("{epoch}\n"))?;
            std::fs::File::open(&temporary)?.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            journal::sync_parent_dir(&path)?;
            Ok(epoch)
        }
        Err(error) => Err(error),
    }
}

/// Runs file I/O off the async threads and turns its failure into a storage error.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, BusError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(io_error)) => Err(BusError::Storage(io_error.to_string())),
        Err(join_error) => Err(BusError::Storage(format!(
            "durable storage task failed: {join_error}"
        ))),
    }
}

/// A stream found in the durable directory.
struct LoadedStream {
    name: String,
    patterns: Vec<SubjectPattern>,
    journal: LoadedJournal,
    epoch: u64,
}

/// Reads every stream definition in `dir` with its journal. Blocking.
fn load_dir(dir: &Path) -> Result<Vec<LoadedStream>, BusError> {
    let storage =
        |context: String| move |err: std::io::Error| BusError::Storage(format!("{context}: {err}"));
    std::fs::create_dir_all(dir).map_err(storage(format!(
        "cannot create durable directory {}",
        dir.display()
    )))?;
    let entries = std::fs::read_dir(dir).map_err(storage(format!(
        "cannot list durable directory {}",
        dir.display()
    )))?;
    let mut loaded = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(storage(format!(
                "cannot list durable directory {}",
                dir.display()
            )))?
            .path();
        if path.extension().and_then(|ext| ext.to_str()) != Some(DEFINITION_EXTENSION) {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let unreadable = |reason: String| {
            BusError::Storage(format!(
                "stream definition {} is unreadable: {reason}; fix or remove it",
                path.display()
            ))
        };
        validate_stream_name(name).map_err(|err| unreadable(err.to_string()))?;
        let subjects =
            journal::read_definition(&path).map_err(|err| unreadable(err.to_string()))?;
        let patterns =
            parse_stream_subjects(name, &subjects).map_err(|err| unreadable(err.to_string()))?;
        let journal_file = journal_path(dir, name);
        let loaded_journal = Journal::open(&journal_file).map_err(storage(format!(
            "cannot load journal {}",
            journal_file.display()
        )))?;
        if loaded_journal.discarded_bytes > 0 {
            tracing::warn!(
                stream = name,
                journal = %journal_file.display(),
                discarded_bytes = loaded_journal.discarded_bytes,
                kept_messages = loaded_journal.records.len(),
                "dropped an incomplete or corrupt tail of a durable stream journal (interrupted write)"
            );
        }
        let epoch = journal_epoch(dir, name).map_err(storage(format!(
            "cannot read the epoch of stream {name:?} in {}",
            dir.display()
        )))?;
        loaded.push(LoadedStream {
            name: name.to_owned(),
            patterns,
            journal: loaded_journal,
            epoch,
        });
    }
    Ok(loaded)
}

/// One durable stream.
struct StreamState {
    name: String,
    subjects: RwLock<Vec<SubjectPattern>>,
    /// What the stream keeps; loaded streams keep everything until declared again.
    limits: RwLock<StreamLimits>,
    /// The kept messages, oldest first, with consecutive sequences.
    messages: RwLock<VecDeque<Stored>>,
    /// The last stored sequence; wakes replays that have caught up.
    appended: watch::Sender<u64>,
    /// Serializes appends so sequences, the journal and fan-out agree on one order.
    writer: tokio::sync::Mutex<Writer>,
    /// When this incarnation of the stream began (see [`StreamBounds::epoch`]):
    /// kept beside the journal, or the time of the declaration for a memory-only
    /// stream, whose sequences start over with the process.
    epoch: u64,
}

/// The appending side of a stream.
struct Writer {
    /// `None` for a memory-only stream.
    journal: Option<Journal>,
    /// Set when the journal handle was lost (a storage task died): appending in memory
    /// only would acknowledge messages a restart forgets, so appends fail instead.
    broken: bool,
    last_sequence: u64,
}

impl StreamState {
    fn in_memory(name: String, subjects: Vec<SubjectPattern>) -> Self {
        Self::with_contents(name, subjects, VecDeque::new(), None, now_epoch())
    }

    fn from_journal(
        name: String,
        subjects: Vec<SubjectPattern>,
        loaded: LoadedJournal,
        epoch: u64,
    ) -> Self {
        let loaded_at = Instant::now();
        let messages = loaded
            .records
            .into_iter()
            .map(|record| Stored {
                message: Message {
                    subject: record.subject,
                    payload: record.payload,
                    sequence: Some(record.sequence),
                },
                stored_at: loaded_at,
            })
            .collect();
        Self::with_contents(name, subjects, messages, Some(loaded.journal), epoch)
    }

    fn with_contents(
        name: String,
        subjects: Vec<SubjectPattern>,
        messages: VecDeque<Stored>,
        journal: Option<Journal>,
        epoch: u64,
    ) -> Self {
        let last_sequence = messages
            .back()
            .and_then(|stored| stored.message.sequence)
            .unwrap_or(0);
        let (appended, _no_replays_yet) = watch::channel(last_sequence);
        Self {
            name,
            subjects: RwLock::new(subjects),
            limits: RwLock::new(StreamLimits::default()),
            messages: RwLock::new(messages),
            appended,
            writer: tokio::sync::Mutex::new(Writer {
                journal,
                broken: false,
                last_sequence,
            }),
            epoch,
        }
    }

    fn captures(&self, subject: &str) -> bool {
        read(&self.subjects)
            .iter()
            .any(|pattern| pattern.matches(subject))
    }

    /// Stores one message (on disk first, if persistent), then wakes replays and fans it
    /// out to core subscribers, all under the writer lock so every reader sees stream
    /// order.
    async fn append(
        self: Arc<Self>,
        fanout: Arc<Fanout>,
        subject: String,
        payload: Bytes,
    ) -> Result<u64, BusError> {
        let mut writer = self.writer.lock().await;
        if writer.broken {
            return Err(BusError::Storage(format!(
                "journal of stream {:?} is unusable after an earlier failure; restart to reload it",
                self.name
            )));
        }
        let sequence = writer.last_sequence + 1;
        if let Some(mut journal) = writer.journal.take() {
            let record_subject = subject.clone();
            let record_payload = payload.clone();
            let stored = tokio::task::spawn_blocking(move || {
                let written = journal.append(sequence, &record_subject, &record_payload);
                (journal, written)
            })
            .await;
            let (journal, written) = match stored {
                Ok(stored) => stored,
                Err(join_error) => {
                    writer.broken = true;
                    return Err(BusError::Storage(format!(
                        "journal write for stream {:?} failed: {join_error}",
                        self.name
                    )));
                }
            };
            let journal_path = journal.path().display().to_string();
            writer.journal = Some(journal);
            if let Err(io_error) = written {
                tracing::warn!(
                    stream = %self.name,
                    journal = %journal_path,
                    error = %io_error,
                    "durable append failed"
                );
                return Err(BusError::Storage(format!(
                    "cannot append to journal {journal_path}: {io_error}"
                )));
            }
        }

        let message = Message {
            subject,
            payload,
            sequence: Some(sequence),
        };
        fanout.deliver(&message.subject, &message.payload);
        write(&self.messages).push_back(Stored {
            message,
            stored_at: Instant::now(),
        });
        self.trim();
        writer.last_sequence = sequence;
        self.appended.send_replace(sequence);
        Ok(sequence)
    }

    /// Drops the oldest messages beyond the stream's limits.
    fn trim(&self) {
        let limits = *read(&self.limits);
        if limits.max_messages.is_none() && limits.max_age.is_none() {
            return;
        }
        let oldest_kept = limits
            .max_age
            .and_then(|max_age| Instant::now().checked_sub(max_age));
        let mut messages = write(&self.messages);
        if let Some(max_messages) = limits.max_messages {
            let max_messages = usize::try_from(max_messages).unwrap_or(usize::MAX);
            let excess = messages.len().saturating_sub(max_messages);
            messages.drain(..excess);
        }
        if let Some(oldest_kept) = oldest_kept {
            while messages
                .front()
                .is_some_and(|stored| stored.stored_at < oldest_kept)
            {
                messages.pop_front();
            }
        }
    }

    /// Looks for the next message of a replay, examining at most
    /// [`REPLAY_SCAN_BATCH`] messages.
    fn scan(&self, from_sequence: u64, filter: Option<&SubjectPattern>) -> Scan {
        let messages = read(&self.messages);
        let stored = messages.len();
        let first_sequence = messages
            .front()
            .and_then(|stored| stored.message.sequence)
            .unwrap_or(1);
        // Sequences are consecutive, so a sequence's index is its distance from the
        // oldest kept one; a start before it (trimmed away) starts at the oldest.
        let start =
            usize::try_from(from_sequence.saturating_sub(first_sequence)).unwrap_or(usize::MAX);
        if start >= stored {
            return Scan::CaughtUp {
                next_sequence: from_sequence.max(first_sequence + stored as u64),
            };
        }
        let end = stored.min(start.saturating_add(REPLAY_SCAN_BATCH));
        for stored in messages.range(start..end) {
            let message = &stored.message;
            let wanted = filter.is_none_or(|filter| filter.matches(&message.subject));
            if wanted {
                return Scan::Found(message.clone());
            }
        }
        let next_sequence = first_sequence + end as u64;
        if end == stored {
            Scan::CaughtUp { next_sequence }
        } else {
            Scan::KeepLooking { next_sequence }
        }
    }
}

/// A kept message and when it was stored, for `max_age`.
struct Stored {
    message: Message,
    stored_at: Instant,
}

/// What one [`StreamState::scan`] found.
enum Scan {
    Found(Message),
    /// Nothing wanted in this batch; keep going from `next_sequence`.
    KeepLooking {
        next_sequence: u64,
    },
    /// Nothing wanted up to the end; wait for appends, then resume at `next_sequence`.
    CaughtUp {
        next_sequence: u64,
    },
}

/// Where a replay is.
struct ReplayCursor {
    /// Weak so an abandoned bus can end its replays: the stream (and with it the watch
    /// sender) goes away when the bus does.
    stream: Weak<StreamState>,
    appended: watch::Receiver<u64>,
    next_sequence: u64,
    filter: Option<SubjectPattern>,
}

async fn next_replayed(mut cursor: ReplayCursor) -> Option<(Message, ReplayCursor)> {
    loop {
        let scan = {
            let stream = cursor.stream.upgrade()?;
            stream.scan(cursor.next_sequence, cursor.filter.as_ref())
        };
        match scan {
            Scan::Found(message) => {
                cursor.next_sequence = message.sequence.unwrap_or(cursor.next_sequence) + 1;
                return Some((message, cursor));
            }
            Scan::KeepLooking { next_sequence } => {
                cursor.next_sequence = next_sequence;
                // Let other tasks run between batches of a long filtered scan.
                tokio::task::yield_now().await;
            }
            Scan::CaughtUp { next_sequence } => {
                cursor.next_sequence = next_sequence;
                // The receiver was created before the first scan, so an append that
                // lands after a scan is never missed.
                cursor.appended.changed().await.ok()?;
            }
        }
    }
}
