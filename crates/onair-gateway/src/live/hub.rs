//! The channel hub: one channel's history of events for resumes, its ring
//! of recent frames that connections catch up from, and its segments (one
//! per run of the live stream it was fed from). Its writers, one per runtime
//! worker, each hold a share of the channel's WebSocket connections (their
//! task is in the `writer` module); viewers are counted while they watch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::watch;

use super::catch_up::{Missed, SharedWriter, lock};
use super::frames::{Event, EventFrame, ResetReason, control};
use super::resume::Resume;
use super::settings::LiveSettings;

/// How many bits of a position hold the sequence; the rest count segments.
const SEGMENT_BITS: u32 = 40;

/// Where an event sits in a hub: its sequence within the hub's segment. A hub
/// starts a segment each time its feed starts over (another epoch) or may have
/// missed events (the bus was down), so positions keep growing across them and
/// the first segment's positions are its sequences.
pub(super) fn position(segment: u64, sequence: u64) -> u64 {
    (segment << SEGMENT_BITS) | (sequence & ((1 << SEGMENT_BITS) - 1))
}

/// One run of a hub's positions, fed from one epoch of the live stream.
#[derive(Debug, Clone, Copy)]
struct Segment {
    epoch: u64,
    /// The first sequence the segment's feed asked for.
    first_sequence: u64,
}

/// One channel's subscription, history and ring of frames.
pub(super) struct ChannelHub {
    pub(super) channel_id: String,
    state: Mutex<HubState>,
    /// The sequence number of the newest frame (frames count from 1), for the
    /// hub's writers and the SSE connections to wait on.
    pub(super) head: watch::Sender<u64>,
    /// Set when the hub stops: its connections close with a reconnect hint.
    pub(super) ended: watch::Sender<bool>,
    /// The last offset in the stream when the hub opened: a viewer who joins
    /// without `after` starts after it, even while older events are still
    /// being loaded into the history.
    live_from: u64,
    /// The hub's writers, each with its share of the WebSocket connections.
    pub(super) writers: Vec<HubWriter>,
    /// Which writer the next WebSocket connection goes to.
    next_writer: AtomicUsize,
    /// Open connections; the hub closes a while after this reaches zero.
    pub(super) viewers: AtomicUsize,
}

struct HubState {
    /// The newest events, oldest first.
    history: VecDeque<Event>,
    /// Every event of the channel after this offset is in `history` (or still
    /// on its way from the bus); older ones may be missing.
    complete_after: u64,
    /// The newest offset handed to connections.
    head: u64,
    /// The newest [`LiveSettings::queue_frames`] frames, oldest first: what a
    /// connection that fell behind catches up from. One that falls further
    /// behind is told it lagged.
    frames: VecDeque<Arc<EventFrame>>,
    /// The sequence number of the oldest frame in `frames`.
    first_frame: u64,
    /// The hub's segments, oldest first; a segment's index is its place here.
    /// One is added per outage of the live stream, so there are few.
    segments: Vec<Segment>,
}

impl HubState {
    fn newest_frame(&self) -> u64 {
        self.first_frame + self.frames.len() as u64 - 1
    }

    /// The epoch and wire offset of a position.
    fn wire(&self, at: u64) -> (u64, u64) {
        let segment = usize::try_from(at >> SEGMENT_BITS).unwrap_or(usize::MAX);
        let epoch = self
            .segments
            .get(segment)
            .or(self.segments.last())
            .map_or(0, |segment| segment.epoch);
        (epoch, at & ((1 << SEGMENT_BITS) - 1))
    }

    /// The position a resume stands for, or why it cannot be honoured. An
    /// offset of an epoch the hub saw twice (the bus was down in between)
    /// belongs to the segment that holds it, so a viewer that left before the
    /// outage is told of it when it comes back.
    fn locate(&self, resume: Resume) -> Result<u64, ResetReason> {
        let current = self.segments.len().saturating_sub(1);
        let epoch = match (resume.epoch, self.segments.get(current)) {
            (Some(epoch), _) => epoch,
            (None, Some(segment)) => segment.epoch,
            (None, None) => return Ok(resume.after),
        };
        let candidates: Vec<(usize, &Segment)> = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, segment)| segment.epoch == epoch)
            .collect();
        let Some(&(first, _)) = candidates.first() else {
            return Err(ResetReason::Epoch);
        };
        let index = candidates
            .iter()
            .rev()
            .find(|(_, segment)| segment.first_sequence <= resume.after)
            .map_or(first, |(index, _)| *index);
        Ok(position(index as u64, resume.after))
    }
}

/// Where a new connection starts.
pub(super) struct Joined {
    /// Events it missed, from the history, to send before the frames.
    pub(super) backlog: Vec<Event>,
    /// The position it has everything up to, once the backlog is sent.
    pub(super) sent: u64,
    /// `sent` on the wire.
    pub(super) sent_wire: (u64, u64),
    /// The first frame it gets.
    pub(super) next_frame: u64,
    /// Why the resume cannot be honoured in full, if it cannot.
    pub(super) reset: Option<ResetReason>,
}

impl ChannelHub {
    /// A hub whose first segment is fed from `epoch`, with every event after
    /// sequence `complete_after` coming, and new viewers starting after
    /// `live_from`.
    pub(super) fn new(
        channel_id: &str,
        epoch: u64,
        complete_after: u64,
        live_from: u64,
        writers: usize,
    ) -> ChannelHub {
        let (head, _) = watch::channel(0);
        let (ended, _) = watch::channel(false);
        ChannelHub {
            channel_id: channel_id.to_owned(),
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                complete_after,
                head: complete_after,
                frames: VecDeque::new(),
                first_frame: 1,
                segments: vec![Segment {
                    epoch,
                    first_sequence: complete_after + 1,
                }],
            }),
            head,
            ended,
            live_from,
            writers: (0..writers.max(1)).map(|_| HubWriter::default()).collect(),
            next_writer: AtomicUsize::new(0),
            viewers: AtomicUsize::new(0),
        }
    }

    /// A place for a new connection: after the newest event, or after a
    /// resume's offset with what it missed. `ahead_ok` says the live stream
    /// has reached a resume's offset although this hub has not seen it yet.
    pub(super) fn join(&self, resume: Option<Resume>, ahead_ok: bool) -> Joined {
        // Under the state lock, which the hub holds while it records a frame:
        // the connection gets each event exactly once, from the backlog or
        // from a frame.
        let state = lock(&self.state);
        let next_frame = state.newest_frame() + 1;
        let head = state.head.max(self.live_from);
        let from_head = |reset| Joined {
            backlog: Vec::new(),
            sent: head,
            sent_wire: state.wire(head),
            next_frame,
            reset,
        };
        let Some(resume) = resume else {
            return from_head(None);
        };
        let after = match state.locate(resume) {
            Ok(after) => after,
            Err(reason) => return from_head(Some(reason)),
        };
        if after < head {
            let backlog = state
                .history
                .iter()
                .filter(|event| event.offset > after)
                .cloned()
                .collect();
            let sent = state.head.max(after);
            return Joined {
                backlog,
                sent,
                sent_wire: state.wire(sent),
                next_frame,
                reset: (after < state.complete_after).then_some(ResetReason::History),
            };
        }
        if after > head && !ahead_ok {
            return from_head(Some(ResetReason::Ahead));
        }
        Joined {
            backlog: Vec::new(),
            sent: after,
            sent_wire: state.wire(after),
            next_frame,
            reset: None,
        }
    }

    /// Whether a resume names an offset beyond what this hub has seen.
    pub(super) fn is_ahead(&self, resume: Resume) -> bool {
        let state = lock(&self.state);
        let head = state.head.max(self.live_from);
        state.locate(resume).is_ok_and(|after| after > head)
    }

    /// The epoch and wire offset of a position.
    pub(super) fn wire(&self, at: u64) -> (u64, u64) {
        lock(&self.state).wire(at)
    }

    /// Starts a segment fed from `epoch` from `first_sequence` on, and tells
    /// every connection, in the stream itself, that events before it may be
    /// missing. Returns the segment's index.
    pub(super) fn begin_segment(
        &self,
        epoch: u64,
        first_sequence: u64,
        settings: &LiveSettings,
    ) -> u64 {
        let index = {
            let mut state = lock(&self.state);
            state.segments.push(Segment {
                epoch,
                first_sequence,
            });
            state.segments.len() as u64 - 1
        };
        let sequence = first_sequence.saturating_sub(1);
        let reason = ResetReason::Interrupted;
        let json = control(
            "reset",
            (epoch, sequence),
            serde_json::json!({"reason": reason.as_str(), "message": reason.message()}),
        );
        let marker = Event {
            offset: position(index, sequence),
            sequence,
            epoch,
            json,
        };
        self.publish(vec![marker], settings);
        index
    }

    /// Records a batch and tells the writers and SSE connections about it.
    pub(super) fn publish(&self, events: Vec<Event>, settings: &LiveSettings) {
        let frame = Arc::new(EventFrame::new(events));
        let newest_frame = {
            let mut state = lock(&self.state);
            for event in &frame.events {
                state.history.push_back(event.clone());
            }
            while state.history.len() > settings.history_events {
                if let Some(dropped) = state.history.pop_front() {
                    state.complete_after = dropped.offset;
                }
            }
            state.head = state.head.max(frame.last);
            state.frames.push_back(frame);
            while state.frames.len() > settings.queue_frames.max(1) {
                state.frames.pop_front();
                state.first_frame += 1;
            }
            state.newest_frame()
        };
        self.head.send_replace(newest_frame);
    }

    /// Up to `limit` frames from sequence number `next` on, or how many frames
    /// from `next` on the ring no longer holds.
    pub(super) fn frames_from(
        &self,
        next: u64,
        limit: usize,
    ) -> Result<Vec<Arc<EventFrame>>, Missed> {
        let state = lock(&self.state);
        if next < state.first_frame {
            return Err(Missed(state.first_frame - next));
        }
        let skip = usize::try_from(next - state.first_frame).unwrap_or(usize::MAX);
        Ok(state
            .frames
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect())
    }

    pub(super) fn newest_frame(&self) -> u64 {
        lock(&self.state).newest_frame()
    }

    /// Hands a new WebSocket connection to one of the writers.
    pub(super) fn add_connection(&self, connection: Arc<SharedWriter>) {
        let index = self.next_writer.fetch_add(1, Ordering::Relaxed) % self.writers.len();
        lock(&self.writers[index].joining).push(connection);
    }

    pub(super) fn end(&self) {
        self.ended.send_replace(true);
    }
}

/// One of a hub's writers: a task that writes each new frame to its share of
/// the channel's WebSocket connections itself, one after the other, with no
/// wake-up of the connections' tasks. There is one per runtime worker, so a
/// channel's writes use every core.
#[derive(Default)]
pub(super) struct HubWriter {
    /// Connections given to this writer since its last pass.
    pub(super) joining: Mutex<Vec<Arc<SharedWriter>>>,
}

/// A viewer's place in a channel's hub, counted while it is held: in the
/// hub (which stays open while it has viewers) and, where the station
/// counts its audience, on the presence board.
pub(super) struct Viewing {
    pub(super) hub: Arc<ChannelHub>,
    /// The viewer's presence, held as long as the connection.
    pub(super) presence: Option<onair_kit::presence::Watching>,
}

impl Viewing {
    pub(super) fn new(hub: Arc<ChannelHub>) -> Viewing {
        hub.viewers.fetch_add(1, Ordering::Relaxed);
        Viewing {
            hub,
            presence: None,
        }
    }
}

impl Drop for Viewing {
    fn drop(&mut self) {
        self.hub.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `reset` a joiner is told when its resume cannot be honoured in full.
pub(super) fn reset_event(joined: &Joined, reason: ResetReason) -> Bytes {
    control(
        "reset",
        joined.sent_wire,
        serde_json::json!({"reason": reason.as_str(), "message": reason.message()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::catch_up::MAX_COALESCED_FRAMES;
    use crate::live::frames::tests::{EPOCH, event};

    fn after(after: u64) -> Option<Resume> {
        Some(Resume { epoch: None, after })
    }

    fn hub() -> ChannelHub {
        ChannelHub::new("news", EPOCH, 0, 0, 1)
    }

    /// The offsets of a joined connection's backlog, in order.
    fn offsets(backlog: &[Event]) -> Vec<u64> {
        backlog.iter().map(|event| event.offset).collect()
    }

    fn keeping(history_events: usize, queue_frames: usize) -> LiveSettings {
        LiveSettings {
            history_events,
            queue_frames,
            ..LiveSettings::default()
        }
    }

    #[test]
    fn a_resume_gets_the_history_after_its_offset_then_new_frames() {
        let hub = hub();
        let settings = keeping(100, 8);
        hub.publish(vec![event(1), event(2)], &settings);
        hub.publish(vec![event(5)], &settings);
        let joined = hub.join(after(1), false);
        assert_eq!(offsets(&joined.backlog), [2, 5]);
        assert_eq!(joined.sent, 5);
        assert_eq!(joined.reset, None);
        hub.publish(vec![event(6)], &settings);
        let Ok(frames) = hub.frames_from(joined.next_frame, MAX_COALESCED_FRAMES) else {
            panic!("the ring holds the next frame");
        };
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].first, 6);

        let fresh = hub.join(None, false);
        assert!(fresh.backlog.is_empty());
        assert_eq!(fresh.sent, 6);
    }

    #[test]
    fn a_resume_older_than_the_history_is_flagged() {
        let hub = hub();
        hub.publish(vec![event(1), event(2), event(3)], &keeping(2, 8));
        let joined = hub.join(after(0), false);
        assert_eq!(joined.reset, Some(ResetReason::History));
        assert_eq!(offsets(&joined.backlog), [2, 3]);
        assert_eq!(hub.join(after(1), false).reset, None);
    }

    #[test]
    fn a_connection_further_behind_than_the_ring_learns_how_far() {
        let hub = hub();
        let settings = keeping(100, 2);
        let joined = hub.join(None, false);
        for offset in 1..=5 {
            hub.publish(vec![event(offset)], &settings);
        }
        let Err(Missed(missed)) = hub.frames_from(joined.next_frame, MAX_COALESCED_FRAMES) else {
            panic!("the first frames are gone");
        };
        assert_eq!(missed, 3);
        let Ok(kept) = hub.frames_from(joined.next_frame + missed, MAX_COALESCED_FRAMES) else {
            panic!("the ring holds the newest frames");
        };
        assert_eq!(
            kept.iter().map(|frame| frame.first).collect::<Vec<_>>(),
            [4, 5]
        );
    }

    #[test]
    fn a_resume_from_another_epoch_or_ahead_of_the_stream_is_reset_to_the_head() {
        let hub = hub();
        let settings = keeping(100, 8);
        hub.publish(vec![event(1), event(2), event(3)], &settings);
        let other_epoch = hub.join(
            Some(Resume {
                epoch: Some(EPOCH - 1),
                after: 1,
            }),
            false,
        );
        assert_eq!(other_epoch.reset, Some(ResetReason::Epoch));
        assert!(other_epoch.backlog.is_empty());
        assert_eq!(other_epoch.sent_wire, (EPOCH, 3));
        let same_epoch = hub.join(
            Some(Resume {
                epoch: Some(EPOCH),
                after: 1,
            }),
            false,
        );
        assert_eq!(same_epoch.reset, None);
        assert_eq!(same_epoch.backlog.len(), 2);
        let ahead = hub.join(after(77), false);
        assert_eq!(ahead.reset, Some(ResetReason::Ahead));
        assert_eq!(ahead.sent_wire, (EPOCH, 3));
        let ahead_but_published = hub.join(after(4), true);
        assert_eq!(ahead_but_published.reset, None);
        assert_eq!(ahead_but_published.sent_wire, (EPOCH, 4));
    }

    #[test]
    fn an_interruption_reaches_every_viewer_that_resumes_from_before_it() {
        let hub = hub();
        let settings = keeping(100, 8);
        hub.publish(vec![event(1), event(2)], &settings);
        // The bus was down; the same stream comes back and the feed goes on
        // from sequence 3 in a new segment.
        let segment = hub.begin_segment(EPOCH, 3, &settings);
        assert_eq!(segment, 1);
        let later = Event {
            offset: position(segment, 3),
            ..event(3)
        };
        hub.publish(vec![later], &settings);

        let before = hub.join(after(2), false);
        let types: Vec<(String, u64)> = before
            .backlog
            .iter()
            .map(|event| {
                let json: serde_json::Value = serde_json::from_slice(&event.json).unwrap();
                (
                    json["type"].as_str().unwrap().to_owned(),
                    json["offset"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            types,
            [("reset".to_owned(), 2), ("comment".to_owned(), 3)],
            "a viewer that left before the outage is told of it"
        );
        let after_it = hub.join(after(3), false);
        assert!(after_it.backlog.is_empty());
        assert_eq!(after_it.sent_wire, (EPOCH, 3));

        // The stream itself started over under another epoch.
        let new_epoch = EPOCH + 5;
        let segment = hub.begin_segment(new_epoch, 1, &settings);
        let fresh = Event {
            offset: position(segment, 1),
            sequence: 1,
            epoch: new_epoch,
            ..event(1)
        };
        hub.publish(vec![fresh], &settings);
        let old = hub.join(
            Some(Resume {
                epoch: Some(EPOCH),
                after: 3,
            }),
            false,
        );
        assert_eq!(
            old.backlog.len(),
            2,
            "the reset, then the new epoch's event"
        );
        assert_eq!(old.sent_wire, (new_epoch, 1));
        let current = hub.join(after(0), false);
        assert_eq!(current.backlog.len(), 1, "only the new epoch's event");
        assert_eq!(hub.join(None, false).sent_wire, (new_epoch, 1));
    }
}
