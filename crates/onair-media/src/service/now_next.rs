//! Now/next: what each channel has on air at this instant and what comes
//! after it, the read a guide makes most, cached until the first of those
//! slots ends or starts. [`announce_programs`] tells each channel's live
//! sockets when its slot on air changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use super::lookups::well_formed_unique;
use crate::error::MediaError;
use crate::model::{self, ChannelRecord};
use crate::store::NowNextPosition;

/// `GetNowNext`: one channel.
pub(super) async fn get(
    desk: &Desk,
    request: Request<pb::GetNowNextRequest>,
) -> Result<Response<pb::NowNext>, Status> {
    desk.reader(&request).await?;
    let channel_id = request.into_inner().channel_id;
    model::require_id("channel_id", &channel_id)?;
    let response = now_next_for(desk, std::slice::from_ref(&channel_id)).await?;
    match response.now_next.into_iter().next() {
        Some(now_next) => Ok(Response::new(now_next)),
        None => Err(MediaError::channel_not_found(&channel_id).into()),
    }
}

/// `BatchGetNowNext`: the given channels, or all.
pub(super) async fn batch_get(
    desk: &Desk,
    request: Request<pb::BatchGetNowNextRequest>,
) -> Result<Response<pb::BatchGetNowNextResponse>, Status> {
    desk.reader(&request).await?;
    let channel_ids = request.into_inner().channel_ids;
    Ok(Response::new(now_next_for(desk, &channel_ids).await?))
}

pub(super) async fn now_next_for(
    desk: &Desk,
    channel_ids: &[String],
) -> Result<pb::BatchGetNowNextResponse, MediaError> {
    let now_ms = desk.now_ms();
    let key = channel_ids.join(",");
    if let Some(cached) = desk.cache.now_next(&key, now_ms) {
        return Ok((*cached).clone());
    }
    let generation = desk.cache.generation();
    let (response, valid_until_ms) = read_now_next(desk, channel_ids, now_ms).await?;
    let response = Arc::new(response);
    desk.cache
        .put_now_next(key, response.clone(), generation, now_ms, valid_until_ms);
    Ok(Arc::unwrap_or_clone(response))
}

/// Now/next at `now_ms` from the store, and until when it holds: the
/// first instant a slot of those channels ends or starts.
async fn read_now_next(
    desk: &Desk,
    channel_ids: &[String],
    now_ms: i64,
) -> Result<(pb::BatchGetNowNextResponse, i64), MediaError> {
    let store = &desk.store;
    let (channels, missing_channel_ids) = if channel_ids.is_empty() {
        (store.all_channels().await?, Vec::new())
    } else {
        desk.check_batch_size(channel_ids.len(), "channels")?;
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

/// How often the announcer looks whether a channel's slot on air changed;
/// the look is a read of the now/next cache, which holds until the next
/// boundary.
const ANNOUNCE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Publishes a `program` live event for each channel whose slot on air
/// changes (at a slot's start or end on the station's clock, or by an edit of
/// the schedule), until the process stops. Every media process announces;
/// with several, a channel's viewers hear each change once per process.
pub(super) async fn announce_programs(desk: Arc<Desk>) {
    let mut on_air: HashMap<String, String> = HashMap::new();
    let mut ticks = tokio::time::interval(ANNOUNCE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut started = false;
    loop {
        ticks.tick().await;
        let all = match now_next_for(&desk, &[]).await {
            Ok(all) => all,
            Err(error) => {
                tracing::debug!(error = %error, "cannot read now/next to announce programs");
                continue;
            }
        };
        for entry in all.now_next {
            let slot_id = entry
                .now
                .as_ref()
                .and_then(|now| now.slot.as_ref())
                .map_or_else(String::new, |slot| slot.id.clone());
            let before = on_air.insert(entry.channel_id.clone(), slot_id.clone());
            let changed = match before {
                Some(before) => before != slot_id,
                // A channel seen for the first time after the start: new.
                None => started && !slot_id.is_empty(),
            };
            if changed
                && let Err(error) = onair_kit::events::LiveEvent::program(&entry)
                    .publish(&desk.bus)
                    .await
            {
                tracing::warn!(error = %error, channel = entry.channel_id, "cannot announce the program on air");
            }
        }
        started = true;
    }
}
