//! A hub's writers: one task per runtime worker that writes each new frame to
//! its share of the channel's WebSocket connections itself, one socket after
//! the other, so a delivery costs a system call, not a task wake-up.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::catch_up::{Offered, OutgoingFrames, SharedWriter, lock};
use super::hub::ChannelHub;
use super::shared::{Inner, shutting_down};

/// How many connections a hub writer serves before it lets other tasks run.
/// A write to a socket costs a few microseconds, so this keeps each turn well
/// under half a millisecond.
const WRITES_PER_TURN: usize = 64;

/// One of a hub's writers: writes each new frame to its connections, in
/// passes over all of them, until the hub stops. Between turns of a pass it
/// takes in the frames that came meanwhile, so the connections it has not
/// reached yet get them in the same write; a writer that falls behind
/// catches up in fewer, larger writes.
pub(super) async fn run_writer(inner: Arc<Inner>, hub: Arc<ChannelHub>, index: usize) {
    let stats = &inner.stats;
    let joining = &hub.writers[index].joining;
    let mut head = hub.head.subscribe();
    let mut ended = hub.ended.subscribe();
    let mut connections: Vec<Arc<SharedWriter>> = Vec::new();
    let mut outgoing = OutgoingFrames::starting_at(*head.borrow_and_update() + 1);
    let ring = |next| hub.frames_from(next, usize::MAX);
    loop {
        head.mark_unchanged();
        outgoing.take_in(&ring, true);
        if outgoing.frames.is_empty() {
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                () = shutting_down(&mut ended) => break,
                // A quiet channel still lets go of the connections that
                // ended.
                () = tokio::time::sleep(inner.settings.ping_interval) => {
                    connections.append(&mut lock(joining));
                    connections.retain(|connection| !lock(&connection.state).closed);
                }
            }
            continue;
        }
        // Every connection gets these in this pass; what comes during it
        // goes only to the connections the pass has not reached yet.
        let offered_to_all = outgoing.frames.len();
        connections.append(&mut lock(joining));
        let mut delivered = 0;
        let mut position = 0;
        let mut turn = 0;
        while position < connections.len() {
            match connections[position].offer(&outgoing) {
                Offered::Written(events) => {
                    delivered += events;
                    position += 1;
                }
                Offered::Closed => {
                    connections.swap_remove(position);
                }
            }
            turn += 1;
            if turn == WRITES_PER_TURN {
                turn = 0;
                tokio::task::yield_now().await;
                outgoing.take_in(&ring, false);
            }
        }
        outgoing.pass_done(offered_to_all);
        stats
            .deliveries
            .fetch_add(delivered as u64, Ordering::Relaxed);
    }
}
