//! A WebSocket connection's catch-up: who writes to it, and what it is still
//! owed. The hub's writer writes new frames to the socket itself while the
//! socket takes them whole ([`SharedWriter::offer`]); when it does not, or
//! the connection fell behind the frames the writer is offering, the writing
//! goes back to the connection's task, which waits for room, catches up from
//! the ring and hands the writing back. Also the bounds of catching up:
//! [`MAX_COALESCED_FRAMES`] and [`Missed`].

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

use super::frames::{EventFrame, Transport, unseen};
use crate::websocket::{self, SocketWriter, Taken};

/// The most frames a connection's task (or an SSE connection) takes from the
/// ring at once: a connection that fell behind gets what it missed in writes
/// of up to this many frames.
pub(super) const MAX_COALESCED_FRAMES: usize = 16;

/// A connection fell behind the ring by this many frames.
pub(super) struct Missed(pub(super) u64);

/// Reads a hub's ring from a frame's sequence number on: the hub's
/// `frames_from`, given here as a function so this module need not know the
/// hub, which holds the connections' shared writers.
pub(super) type FramesFrom<'a> = dyn Fn(u64) -> Result<Vec<Arc<EventFrame>>, Missed> + 'a;

/// Takes a lock even if its holder panicked: what the live sockets guard
/// stays consistent between statements.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writing side of one WebSocket connection. The hub writes new frames to
/// it directly while the socket takes them whole. The connection's task
/// writes when that takes waiting: it catches up after a full socket, sends
/// the first frames, its pings and pongs, and the goodbye.
#[derive(Default)]
pub(super) struct SharedWriter {
    pub(super) state: Mutex<SharedWriterState>,
    /// Tells the connection's task that the hub gave the writing back to it.
    pub(super) handed_back: Notify,
}

/// Who writes to a connection now, and what it has been written.
#[derive(Default)]
pub(super) struct SharedWriterState {
    /// The socket's writing half while the hub writes; `None` while the
    /// connection's task holds it.
    pub(super) writer: Option<SocketWriter>,
    /// Whether the hub writes to this connection (`writer` is then here).
    pub(super) hub_writes: bool,
    /// What the hub wrote that the socket did not take, for the task to write
    /// first, and how many events it completes.
    pub(super) unwritten: Vec<Bytes>,
    pub(super) unwritten_events: usize,
    /// The newest offset written (or in `unwritten`).
    pub(super) sent: u64,
    /// The sequence number of the next frame to write.
    pub(super) next_frame: u64,
    /// A write failed: the connection is gone.
    pub(super) failed: bool,
    /// The connection has ended; its writer forgets it.
    pub(super) closed: bool,
}

/// The frames a hub writer is writing: a run of the ring, with each frame's
/// WebSocket bytes ready to hand to a vectored write.
pub(super) struct OutgoingFrames {
    /// The sequence number of `frames[0]`.
    first_frame: u64,
    pub(super) frames: Vec<Arc<EventFrame>>,
    shared: Vec<Bytes>,
}

impl OutgoingFrames {
    pub(super) fn starting_at(first_frame: u64) -> OutgoingFrames {
        OutgoingFrames {
            first_frame,
            frames: Vec::new(),
            shared: Vec::new(),
        }
    }

    /// Appends the frames recorded since the newest of these, as
    /// `frames_from` reads them from the hub's ring. If the ring no longer
    /// holds the next one, the writer has fallen behind it: between passes
    /// (`between_passes`) the run starts again at the oldest frame kept, and
    /// the connections that miss frames are handed back to their tasks, which
    /// tell them they lagged; during a pass it waits for the pass to end.
    pub(super) fn take_in(&mut self, frames_from: &FramesFrom<'_>, between_passes: bool) {
        let next = self.first_frame + self.frames.len() as u64;
        match frames_from(next) {
            Ok(frames) => {
                self.shared
                    .extend(frames.iter().map(|frame| frame.websocket.clone()));
                self.frames.extend(frames);
            }
            Err(Missed(missed)) if between_passes => {
                self.frames.clear();
                self.shared.clear();
                self.first_frame = next + missed;
                self.take_in(frames_from, false);
            }
            Err(Missed(_)) => {}
        }
    }

    /// Lets go of the first `count` frames, which every connection has had.
    pub(super) fn pass_done(&mut self, count: usize) {
        self.frames.drain(..count);
        self.shared.drain(..count);
        self.first_frame += count as u64;
    }
}

/// What became of a connection offered frames in a writer's pass.
pub(super) enum Offered {
    /// Nothing more to do this time; the number of events written.
    Written(usize),
    /// The connection has ended.
    Closed,
}

impl SharedWriter {
    /// Writes what the connection has not had of `outgoing` if the hub writes
    /// to this connection and the socket takes it now. Otherwise hands the
    /// writing back to the connection's task.
    pub(super) fn offer(&self, outgoing: &OutgoingFrames) -> Offered {
        let mut state = lock(&self.state);
        if state.closed {
            return Offered::Closed;
        }
        if !state.hub_writes {
            return Offered::Written(0);
        }
        if state.writer.is_none() {
            return self.hand_back(&mut state);
        }
        let Some(skip) = state
            .next_frame
            .checked_sub(outgoing.first_frame)
            .and_then(|skip| usize::try_from(skip).ok())
        else {
            // It missed frames this writer has passed; its task catches up
            // from the ring.
            return self.hand_back(&mut state);
        };
        let (Some(frames), Some(shared)) =
            (outgoing.frames.get(skip..), outgoing.shared.get(skip..))
        else {
            return Offered::Written(0);
        };
        let Some(newest_frame) = frames.last() else {
            return Offered::Written(0);
        };
        let newest = newest_frame.last;
        let (bytes, events) = if frames[0].first > state.sent {
            let events = frames.iter().map(|frame| frame.events.len()).sum();
            (std::borrow::Cow::Borrowed(shared), events)
        } else {
            let (bytes, events, _) = unseen(frames, state.sent, Transport::WebSocket);
            (std::borrow::Cow::Owned(bytes), events)
        };
        state.next_frame = outgoing.first_frame + outgoing.frames.len() as u64;
        state.sent = state.sent.max(newest);
        if bytes.is_empty() {
            return Offered::Written(0);
        }
        let Some(writer) = state.writer.as_mut() else {
            return Offered::Written(0);
        };
        match writer.write_now(&bytes) {
            Taken::All => Offered::Written(events),
            Taken::Part(taken) => {
                state.unwritten = websocket::rest(&bytes, taken);
                state.unwritten_events = events;
                self.hand_back(&mut state)
            }
            Taken::Failed => {
                state.failed = true;
                self.hand_back(&mut state)
            }
        }
    }

    fn hand_back(&self, state: &mut SharedWriterState) -> Offered {
        state.hub_writes = false;
        self.handed_back.notify_one();
        Offered::Written(0)
    }
}
