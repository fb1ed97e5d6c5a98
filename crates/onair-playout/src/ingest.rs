//! Live ingest: an encoder pushes HLS over HTTP PUT
//! (`ffmpeg … -f hls -method PUT http://host/ingest/KEY/index.m3u8`).
//!
//! - The stream key names one live slot; the operator issues it
//!   (`IssueStreamKey`). An unknown key is refused with 403.
//! - A segment (`*.ts`) is kept aside until the encoder's playlist lists it;
//!   the playlist gives its duration and its order. It is then numbered in
//!   the slot's sequence (0, 1, 2…) and stored under that number, so an
//!   encoder that restarts and reuses its file names overwrites nothing.
//! - A segment longer than the station's target duration is dropped (it
//!   would break the channel's constant target duration), with a warning.
//! - Segments are kept after the slot: they are its replay. An encoder's
//!   DELETE is answered but ignored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use onair_kit::clock::Clock;
use onair_kit::metrics::Registry;

use crate::error::PlayoutError;
use crate::linear::Linear;
use crate::live_segments::LiveSegments;
use crate::segment_store::SegmentStorage;
use crate::tables::{PlayoutStore, StreamKeyGrant};
use crate::timeline::LiveSegment;
use crate::transcode::playlist_durations;

/// Why an ingest request is refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    /// The request's path, file name or stream key is malformed.
    BadPath(String),
    #[error("unknown stream key")]
    /// No stream key like this was issued.
    UnknownKey,
    /// The key's slot has ended or was deleted: nothing pushed would air.
    #[error("{0}")]
    SlotOver(String),
    #[error(transparent)]
    /// A failure of the playout itself (store, storage).
    Playout(#[from] PlayoutError),
}

/// Takes what encoders push.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    store: PlayoutStore,
    storage: Arc<dyn SegmentStorage>,
    live: LiveSegments,
    linear: Linear,
    clock: Clock,
    metrics: Registry,
    /// The target duration, in ms: longer segments are dropped.
    max_segment_ms: i64,
    /// What each slot's encoder sent that is not numbered yet.
    pending: Mutex<HashMap<String, Pending>>,
    /// Numbering is one step per slot at a time.
    numbering: tokio::sync::Mutex<()>,
    /// The next request's place in the order of arrival.
    arrivals: AtomicU64,
}

/// Where an ingest request came in the order of arrival. Requests are
/// stamped before anything is awaited: their handlers wait on the store, so
/// a playlist may reach the numbering after one the encoder sent later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Arrival(u64);

/// An encoder's segments and playlist entries on their way to being
/// numbered. An encoder does not wait for answers (ffmpeg hangs up after each
/// PUT), so a playlist may arrive before a segment it lists, or after.
///
/// A segment is known by the encoder's media sequence number for it, not by
/// its file name: an encoder that restarts sends the same names again, with
/// its sequence starting over.
#[derive(Default)]
struct Pending {
    /// Segment files stored in `incoming/` and not numbered yet.
    received: HashSet<String>,
    /// Segments a playlist listed and that are not numbered yet, in order:
    /// the encoder's sequence number, the file, the duration.
    announced: VecDeque<(i64, String, i64)>,
    /// The encoder's sequence number of the last segment numbered.
    numbered_up_to: Option<i64>,
    /// The encoder's sequence number of the last segment its last playlist
    /// listed: a live playlist only grows at its end, so when the end goes
    /// back, the encoder has restarted.
    last_listed: Option<i64>,
    /// When the last playlist taken arrived.
    last_playlist: Option<Arrival>,
}

/// How many later segments may arrive while the first announced one is
/// missing before it is given up for lost.
const MISSING_SEGMENT_PATIENCE: usize = 2;

impl Pending {
    /// Takes what a playlist of the encoder lists.
    fn announce(&mut self, arrival: Arrival, media_sequence: i64, listed: Vec<(String, i64)>) {
        if self.last_playlist.is_some_and(|last| arrival < last) {
            // A playlist sent after this one was taken first. It lists what
            // this one does and more, and this one's shorter list is not the
            // encoder starting over.
            return;
        }
        self.last_playlist = Some(arrival);
        let end = media_sequence + listed.len() as i64 - 1;
        if self.last_listed.is_some_and(|last| end < last) {
            // The encoder started over.
            self.numbered_up_to = None;
            self.announced.clear();
        }
        self.last_listed = Some(end);
        for (offset, (file, duration_ms)) in listed.into_iter().enumerate() {
            let sequence = media_sequence + offset as i64;
            let numbered = self.numbered_up_to.is_some_and(|last| sequence <= last);
            let announced = self
                .announced
                .iter()
                .any(|(known, _, _)| *known == sequence);
            if !numbered && !announced {
                self.announced.push_back((sequence, file, duration_ms));
            }
        }
    }

    /// The announced segments that can be numbered now, in order.
    fn take_ready(&mut self) -> Vec<(String, i64)> {
        let mut ready = Vec::new();
        while let Some((_, front, _)) = self.announced.front() {
            if self.received.contains(front) {
                let (sequence, file, duration_ms) = self.announced.pop_front().unwrap_or_default();
                self.received.remove(&file);
                self.numbered_up_to = Some(sequence);
                ready.push((file, duration_ms));
                continue;
            }
            let later_received = self
                .announced
                .iter()
                .skip(1)
                .filter(|(_, file, _)| self.received.contains(file))
                .count();
            if later_received >= MISSING_SEGMENT_PATIENCE {
                self.announced.pop_front();
                continue;
            }
            break;
        }
        ready
    }
}

/// Whether a file name an encoder sends is one we store: no path, no dot
/// files, a known extension.
fn checked_file(file: &str) -> Result<(), IngestError> {
    let plain = !file.is_empty()
        && file.len() <= 128
        && !file.starts_with('.')
        && !file.contains("..")
        && file.bytes().all(|byte| {
            byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'-' || byte == b'_'
        });
    if !plain {
        return Err(IngestError::BadPath(format!(
            "file name {file:?} must be letters, digits, '.', '-' or '_', with no path"
        )));
    }
    if !(file.ends_with(".ts") || file.ends_with(".m3u8")) {
        return Err(IngestError::BadPath(format!(
            "file {file:?} is neither an MPEG-TS segment (.ts) nor a playlist (.m3u8)"
        )));
    }
    Ok(())
}

fn checked_key(key: &str) -> Result<(), IngestError> {
    let plain = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if plain {
        Ok(())
    } else {
        Err(IngestError::BadPath(format!(
            "stream key {key:?} must be letters, digits, '-' or '_'"
        )))
    }
}

/// Where a numbered live segment is stored.
pub fn live_segment_key(slot_id: &str, sequence: i64) -> String {
    format!("live/{slot_id}/{sequence}.ts")
}

impl Ingest {
    /// Ingest that stores pushed segments in `storage` and records them in `store` and `live`.
    pub fn new(
        store: PlayoutStore,
        storage: Arc<dyn SegmentStorage>,
        live: LiveSegments,
        linear: Linear,
        clock: Clock,
        segment_seconds: u32,
        metrics: Registry,
    ) -> Ingest {
        Ingest {
            inner: Arc::new(Inner {
                store,
                storage,
                live,
                linear,
                clock,
                metrics,
                // EXTINF rounded to the nearest second must not exceed the
                // target duration.
                max_segment_ms: i64::from(segment_seconds) * 1000 + 499,
                pending: Mutex::new(HashMap::new()),
                numbering: tokio::sync::Mutex::new(()),
                arrivals: AtomicU64::new(0),
            }),
        }
    }

    /// Stamps a request with its place in the order of arrival; call it
    /// before awaiting anything for the request.
    pub fn arrival(&self) -> Arrival {
        Arrival(self.inner.arrivals.fetch_add(1, Ordering::Relaxed))
    }

    async fn grant(&self, key: &str) -> Result<StreamKeyGrant, IngestError> {
        checked_key(key)?;
        self.inner
            .store
            .stream_key(key)
            .await?
            .ok_or(IngestError::UnknownKey)
    }

    /// Refuses a push for a slot that is over: it would never air. An
    /// encoder may start before its slot (a rehearsal airs nothing either,
    /// but its last segments are where the slot joins).
    async fn check_slot_open(&self, grant: &StreamKeyGrant) -> Result<(), IngestError> {
        match self.inner.linear.slot_end_ms(&grant.slot_id).await? {
            Some(end_ms) if self.inner.clock.now_ms() < end_ms => Ok(()),
            Some(_) => Err(IngestError::SlotOver(format!(
                "the live slot {} has ended: issue a key for another live slot",
                grant.slot_id
            ))),
            None => Err(IngestError::SlotOver(format!(
                "the live slot {} no longer exists",
                grant.slot_id
            ))),
        }
    }

    /// Checks a DELETE: the key and the name must be valid; nothing is
    /// deleted (the segments are the slot's replay).
    pub async fn delete(&self, key: &str, file: &str) -> Result<(), IngestError> {
        checked_file(file)?;
        self.grant(key).await.map(|_| ())
    }

    /// Takes one file an encoder pushed, stamped by [`Ingest::arrival`].
    pub async fn put(
        &self,
        key: &str,
        file: &str,
        body: Bytes,
        arrival: Arrival,
    ) -> Result<(), IngestError> {
        checked_file(file)?;
        let grant = self.grant(key).await?;
        self.check_slot_open(&grant).await?;
        if file.ends_with(".ts") {
            let incoming = format!("incoming/{}/{file}", grant.slot_id);
            self.inner
                .storage
                .put(&incoming, body)
                .await
                .map_err(PlayoutError::from)?;
            // Taking and numbering under one lock keeps the playlist's order.
            let _numbering = self.inner.numbering.lock().await;
            let ready = match self.inner.pending.lock() {
                Ok(mut pending) => {
                    let slot = pending.entry(grant.slot_id.clone()).or_default();
                    slot.received.insert(file.to_owned());
                    slot.take_ready()
                }
                Err(_) => Vec::new(),
            };
            return self.number(&grant, ready).await;
        }
        let text = String::from_utf8_lossy(&body);
        if !text.starts_with("#EXTM3U") {
            return Err(IngestError::BadPath(format!(
                "{file} is not an HLS playlist (no #EXTM3U)"
            )));
        }
        // A master playlist (an encoder pushing a ladder) says nothing about
        // segments.
        if text.contains("#EXT-X-STREAM-INF") {
            return Ok(());
        }
        let media_sequence = text
            .lines()
            .find_map(|line| line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|value| value.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let listed = listed_segments(&text);
        let _numbering = self.inner.numbering.lock().await;
        let ready = match self.inner.pending.lock() {
            Ok(mut pending) => {
                let slot = pending.entry(grant.slot_id.clone()).or_default();
                slot.announce(arrival, media_sequence, listed);
                slot.take_ready()
            }
            Err(_) => Vec::new(),
        };
        self.number(&grant, ready).await
    }

    /// Numbers segments in the slot's sequence and stores them under their
    /// numbers. The caller holds the numbering lock.
    async fn number(
        &self,
        grant: &StreamKeyGrant,
        to_number: Vec<(String, i64)>,
    ) -> Result<(), IngestError> {
        if to_number.is_empty() {
            return Ok(());
        }
        let existing = self.inner.live.segments(&grant.slot_id).await?;
        let mut next_sequence = existing.last().map_or(0, |segment| segment.sequence + 1);
        let now_ms = self.inner.clock.now_ms();
        let mut numbered = Vec::new();
        for (file, duration_ms) in to_number {
            let incoming = format!("incoming/{}/{file}", grant.slot_id);
            if duration_ms > self.inner.max_segment_ms || duration_ms <= 0 {
                tracing::warn!(slot = %grant.slot_id, file, duration_ms, "dropped a live segment longer than the target duration: set the encoder's -hls_time and keyframe interval to the station's segment length");
                let _ = self.inner.storage.delete(&incoming).await;
                continue;
            }
            let Some(data) = self
                .inner
                .storage
                .get(&incoming)
                .await
                .map_err(PlayoutError::from)?
            else {
                continue;
            };
            self.inner
                .storage
                .put(&live_segment_key(&grant.slot_id, next_sequence), data)
                .await
                .map_err(PlayoutError::from)?;
            // The numbered copy is the one kept; an encoder that reuses the
            // name later sends a new file.
            if let Err(error) = self.inner.storage.delete(&incoming).await {
                tracing::warn!(key = %incoming, error = %error, "cannot delete a numbered live segment's incoming copy");
            }
            numbered.push(LiveSegment {
                slot_id: grant.slot_id.clone(),
                sequence: next_sequence,
                file,
                duration_ms,
                received_ms: now_ms,
            });
            next_sequence += 1;
        }
        if numbered.is_empty() {
            return Ok(());
        }
        let count = numbered.len() as u64;
        self.inner.live.append(&grant.slot_id, numbered).await?;
        self.inner.metrics.counter_add(
            "onair_playout_live_segments_received_total",
            "Live segments received from encoders and numbered.",
            &[],
            count,
        );
        self.inner.linear.live_segment_arrived(&grant.channel_id);
        Ok(())
    }
}

/// The (file name, duration) of each segment a media playlist lists; the
/// URI may be a bare name or a URL ending in it.
fn listed_segments(playlist: &str) -> Vec<(String, i64)> {
    let durations = playlist_durations(playlist);
    let uris = playlist
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    let mut listed = Vec::new();
    for (uri, duration_ms) in uris.zip(durations) {
        let without_query = uri.split(['?', '#']).next().unwrap_or(uri);
        let name = without_query.rsplit('/').next().unwrap_or(without_query);
        listed.push((name.to_owned(), duration_ms));
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_and_odd_names() {
        for bad in [
            "..",
            "../x.ts",
            "a/b.ts",
            ".hidden.ts",
            "x.mp4",
            "",
            "x..ts",
        ] {
            assert!(checked_file(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(checked_file("index12.ts").is_ok());
        assert!(checked_file("index.m3u8").is_ok());
    }

    fn listed(files: &[&str]) -> Vec<(String, i64)> {
        files
            .iter()
            .map(|file| ((*file).to_owned(), 1000))
            .collect()
    }

    fn ready(pending: &mut Pending) -> Vec<String> {
        pending
            .take_ready()
            .into_iter()
            .map(|(file, _)| file)
            .collect()
    }

    #[test]
    fn numbers_in_playlist_order_whichever_arrives_first() {
        let mut pending = Pending::default();
        // The playlist lists two segments before either has arrived.
        pending.announce(Arrival(1), 0, listed(&["index0.ts", "index1.ts"]));
        pending.received.insert("index1.ts".to_owned());
        assert!(ready(&mut pending).is_empty(), "index0 comes first");
        pending.received.insert("index0.ts".to_owned());
        assert_eq!(ready(&mut pending), vec!["index0.ts", "index1.ts"]);
        // A later playlist lists them again with a new one.
        pending.announce(
            Arrival(2),
            0,
            listed(&["index0.ts", "index1.ts", "index2.ts"]),
        );
        pending.received.insert("index2.ts".to_owned());
        assert_eq!(ready(&mut pending), vec!["index2.ts"]);
        // The encoder restarts: the same names are new segments, even when
        // the playlist comes before the file.
        pending.announce(Arrival(3), 0, listed(&["index0.ts"]));
        assert!(ready(&mut pending).is_empty());
        pending.received.insert("index0.ts".to_owned());
        assert_eq!(ready(&mut pending), vec!["index0.ts"]);
        // A segment lost on the way is given up once later ones are in.
        pending.announce(
            Arrival(4),
            1,
            listed(&["index1.ts", "index2.ts", "index3.ts"]),
        );
        pending.received.insert("index2.ts".to_owned());
        pending.received.insert("index3.ts".to_owned());
        assert_eq!(ready(&mut pending), vec!["index2.ts", "index3.ts"]);
    }

    #[test]
    fn a_playlist_taken_late_is_not_a_restart() {
        let mut pending = Pending::default();
        pending.announce(Arrival(1), 0, listed(&["index0.ts"]));
        pending.received.insert("index0.ts".to_owned());
        assert_eq!(ready(&mut pending), vec!["index0.ts"]);
        // The last playlist is taken before the one sent just before it,
        // and before the last segment has arrived.
        pending.announce(Arrival(3), 0, listed(&["index0.ts", "index1.ts"]));
        pending.announce(Arrival(2), 0, listed(&["index0.ts"]));
        pending.received.insert("index1.ts".to_owned());
        assert_eq!(
            ready(&mut pending),
            vec!["index1.ts"],
            "the last segment is numbered, and index0 is not numbered twice"
        );
    }

    #[test]
    fn reads_what_a_pushed_playlist_lists() {
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.000000,\nhttp://h/ingest/k/index0.ts\n#EXTINF:0.960000,\nindex1.ts\n";
        assert_eq!(
            listed_segments(playlist),
            vec![
                ("index0.ts".to_owned(), 1000),
                ("index1.ts".to_owned(), 960)
            ]
        );
    }
}
