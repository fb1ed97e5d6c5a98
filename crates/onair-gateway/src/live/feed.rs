//! A hub's feed: the task that reads one channel's events from the bus's live
//! stream, turns each into JSON once, batches them into frames for the hub,
//! opens the feed again when it ends or live delivery comes back, and closes
//! the hub a while after its last viewer left.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use onair_kit::bus::{BusError, Message as BusMessage, Subscription};
use onair_kit::events::{
    LIVE_STREAM, LiveKind, channel_pattern, decode_live_payload, parse_subject, type_name,
};
use prost_reflect::{DescriptorPool, DynamicMessage};

use super::frames::Event;
use super::hub::{ChannelHub, position};
use super::shared::{Inner, LivePath, shutting_down};

/// What a hub's feed is reading: its segment, the stream's epoch, the last
/// sequence it received, and the outages of live delivery it knows of.
pub(super) struct Fed {
    pub(super) segment: u64,
    pub(super) epoch: u64,
    pub(super) last_sequence: u64,
    pub(super) outages: u64,
}

/// The next message of a feed; never, while there is none.
async fn next_message(feed: &mut Option<Subscription>) -> Option<BusMessage> {
    match feed {
        Some(feed) => feed.next().await,
        None => std::future::pending().await,
    }
}

/// Reads the channel's events from the bus, batches them and records the
/// frames, until nobody has watched for two ping intervals or the server
/// shuts down.
pub(super) async fn run_hub(
    inner: Arc<Inner>,
    hub: Arc<ChannelHub>,
    feed: Subscription,
    mut fed: Fed,
) {
    let settings = &inner.settings;
    let mut feed = Some(feed);
    let mut path = inner.path.subscribe();
    // Set while the feed must be opened again: it ended, or live delivery
    // came back after an outage or under another epoch.
    let mut reopen = false;
    let mut retry = tokio::time::interval(settings.check_interval);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = inner.closing.subscribe();
    let mut idle_check = tokio::time::interval(settings.ping_interval);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    idle_check.tick().await;
    let mut idle_ticks = 0;
    let mut pending: Vec<Event> = Vec::new();
    let flush_at = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(flush_at);
    loop {
        tokio::select! {
            message = next_message(&mut feed) => {
                let Some(message) = message else {
                    tracing::warn!(channel = %hub.channel_id, "the live feed ended; opening it again");
                    feed = None;
                    reopen = true;
                    continue;
                };
                let Some(sequence) = message.sequence else {
                    continue;
                };
                // A reopened feed may deliver again what it had delivered.
                if sequence <= fed.last_sequence {
                    continue;
                }
                fed.last_sequence = sequence;
                if let Some(event) = event(&inner, &message, &fed) {
                    if pending.is_empty() {
                        flush_at.as_mut().reset(tokio::time::Instant::now() + settings.batch_window);
                    }
                    pending.push(event);
                }
                if pending.len() >= settings.max_batch_events || settings.batch_window.is_zero() {
                    flush(&inner, &hub, &mut pending);
                }
            }
            () = &mut flush_at, if !pending.is_empty() => {
                flush(&inner, &hub, &mut pending);
            }
            changed = path.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = path.borrow_and_update().clone();
                if let LivePath::Up { epoch, outages } = now
                    && (epoch != fed.epoch || outages != fed.outages)
                {
                    reopen = true;
                    retry.reset_immediately();
                }
            }
            _ = retry.tick(), if reopen => {
                let LivePath::Up { epoch, outages } = path.borrow().clone() else {
                    continue;
                };
                match reopen_feed(&inner, &hub, &mut fed, &mut pending, epoch, outages).await {
                    Ok(reopened) => {
                        feed = Some(reopened);
                        reopen = false;
                    }
                    Err(error) => {
                        tracing::warn!(channel = %hub.channel_id, error = %error, "cannot reopen the live feed yet");
                    }
                }
            }
            _ = idle_check.tick() => {
                if hub.viewers.load(Ordering::Relaxed) > 0 {
                    idle_ticks = 0;
                    continue;
                }
                idle_ticks += 1;
                if idle_ticks >= 2 {
                    let mut hubs = inner.hubs.lock().await;
                    // Joins happen under this lock: nobody can be joining now.
                    if hub.viewers.load(Ordering::Relaxed) == 0 {
                        hubs.remove(&hub.channel_id);
                        tracing::debug!(channel = %hub.channel_id, "live feed closed: no viewers");
                        break;
                    }
                }
            }
            () = shutting_down(&mut closing) => break,
        }
    }
    let mut hubs = inner.hubs.lock().await;
    if hubs
        .get(&hub.channel_id)
        .is_some_and(|open| Arc::ptr_eq(open, &hub))
    {
        hubs.remove(&hub.channel_id);
    }
    hub.end();
    inner.stats.channels.fetch_sub(1, Ordering::Relaxed);
}

/// Opens a hub's feed again after it ended or live delivery was down:
/// from where it was if the stream is the same and nothing can have been
/// missed, otherwise in a new segment, announced to every connection.
async fn reopen_feed(
    inner: &Inner,
    hub: &ChannelHub,
    fed: &mut Fed,
    pending: &mut Vec<Event>,
    epoch: u64,
    outages: u64,
) -> Result<Subscription, BusError> {
    let same_stream = epoch == fed.epoch;
    let from = if same_stream {
        fed.last_sequence + 1
    } else {
        1
    };
    let feed = inner
        .bus
        .replay(LIVE_STREAM, from, Some(&channel_pattern(&hub.channel_id)))
        .await?;
    flush(inner, hub, pending);
    if !same_stream || outages != fed.outages {
        fed.segment = hub.begin_segment(epoch, from, &inner.settings);
        tracing::info!(channel = %hub.channel_id, epoch, from, "live feed reopened after an interruption; viewers were told to reload");
    } else {
        tracing::info!(channel = %hub.channel_id, from, "live feed reopened");
    }
    fed.epoch = epoch;
    fed.last_sequence = from - 1;
    fed.outages = outages;
    Ok(feed)
}

fn flush(inner: &Inner, hub: &ChannelHub, pending: &mut Vec<Event>) {
    if pending.is_empty() {
        return;
    }
    inner.stats.frames.fetch_add(1, Ordering::Relaxed);
    hub.publish(std::mem::take(pending), &inner.settings);
}

/// Turns a bus message into the event's JSON, once.
fn event(inner: &Inner, message: &BusMessage, fed: &Fed) -> Option<Event> {
    inner.stats.events.fetch_add(1, Ordering::Relaxed);
    let offset = message.sequence?;
    let decoded = parse_subject(&message.subject)
        .ok_or_else(|| format!("unexpected subject {}", message.subject))
        .and_then(|(_channel, kind)| {
            event_json(&inner.pool, kind, offset, &message.payload)
                .map_err(|error| format!("{kind:?} event {offset}: {error}"))
        });
    match decoded {
        Ok(json) => Some(Event {
            offset: position(fed.segment, offset),
            sequence: offset,
            epoch: fed.epoch,
            json,
        }),
        Err(error) => {
            inner.stats.undecodable.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %error, "skipping a live event that does not decode");
            None
        }
    }
}

/// `{"type":…,"offset":…,"data":…}` for one event on the bus.
fn event_json(
    pool: &DescriptorPool,
    kind: LiveKind,
    offset: u64,
    payload: &[u8],
) -> Result<Bytes, String> {
    let any = decode_live_payload(payload).map_err(|error| error.to_string())?;
    let name = type_name(&any);
    let descriptor = pool
        .get_message_by_name(name)
        .ok_or_else(|| format!("unknown message type {name:?}"))?;
    let message = DynamicMessage::decode(descriptor, any.value.as_slice())
        .map_err(|error| error.to_string())?;
    let mut json = Vec::with_capacity(64 + any.value.len() * 2);
    json.extend_from_slice(
        format!(r#"{{"type":"{}","offset":{offset},"data":"#, kind.as_str()).as_bytes(),
    );
    crate::json::write_message(&mut json, &message).map_err(|error| error.to_string())?;
    json.push(b'}');
    Ok(Bytes::from(json))
}
