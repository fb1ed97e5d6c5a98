//! Timetables: the schedule of a range or a broadcast day as a guide shows
//! it, put together from each channel's part (cached already encoded), and
//! the gaps no slot covers, which the playout fills with the slate.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use onair_kit::clock::timestamp_from_millis;
use onair_proto::media::v1 as pb;
use prost::Message;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use super::lookups;
use crate::broadcast_day;
use crate::cache::Entries;
use crate::error::MediaError;
use crate::model::{self, ChannelRecord, SlotRecord, check_slot_times};
use crate::store::SlotsWithPrograms;

/// Above this many entries a timetable is assembled or copied on a blocking
/// thread, so that building a big answer never holds up the async workers.
const BLOCKING_ASSEMBLY_THRESHOLD: usize = 256;
/// How many channels' timetables are read from the database at once.
const CHANNEL_READS_AT_ONCE: usize = 4;

/// `GetTimetable`, as a message.
pub(super) async fn get(
    desk: &Desk,
    request: Request<pb::GetTimetableRequest>,
) -> Result<Response<pb::Timetable>, Status> {
    // The station's server answers with the bytes themselves (see
    // `crate::grpc`); this is the same answer as a message.
    let encoded = timetable_bytes(desk, request).await?;
    let timetable = off_the_workers(encoded.len() / 512, move || pb::Timetable::decode(encoded))
        .await?
        .map_err(|error| MediaError::Internal(format!("a timetable does not decode: {error}")))?;
    Ok(Response::new(timetable))
}

/// A timetable, encoded: each channel's entries come encoded from the
/// cache (or are read, encoded and cached), so a cached timetable is
/// put together by copying bytes.
pub(super) async fn timetable_bytes(
    desk: &Desk,
    request: Request<pb::GetTimetableRequest>,
) -> Result<Bytes, Status> {
    desk.reader(&request).await?;
    let request = request.into_inner();
    let (start_time_ms, end_time_ms) = timetable_range(desk, &request)?;
    let range = (start_time_ms, end_time_ms);
    let generation = desk.cache.generation();
    let station = station_channels(desk, generation).await?;
    let asked = if request.channel_id.is_empty() {
        None
    } else {
        let cached = station
            .iter()
            .find(|channel| channel.id == request.channel_id);
        Some(match cached {
            Some(channel) => channel.clone(),
            // A channel another process created a moment ago.
            None => lookups::existing::<ChannelRecord>(desk, &request.channel_id)
                .await?
                .to_proto(),
        })
    };
    // The station's list is shared, not copied, for an all-channel read.
    let channels: &[pb::Channel] = match &asked {
        Some(channel) => std::slice::from_ref(channel),
        None => &station,
    };
    let mut parts = desk
        .cache
        .entries(range, channels.iter().map(|channel| channel.id.as_str()));
    let missing: Vec<usize> = (0..parts.len()).filter(|at| parts[*at].is_none()).collect();
    if !missing.is_empty() {
        // Each missing channel is read with its own statement, a few at
        // once: after a write to one channel that is one statement, and
        // after an import the database reads channels side by side.
        let store = &desk.store;
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
        desk.cache.put_entries(range, fresh, generation);
    }
    let parts: Vec<Bytes> = parts.into_iter().map(Option::unwrap_or_default).collect();
    Ok(encode_timetable(
        channels,
        &parts,
        &timestamp_from_millis(start_time_ms),
        &timestamp_from_millis(end_time_ms),
    ))
}

/// The station's channels in number order, cached until a channel
/// changes.
async fn station_channels(
    desk: &Desk,
    generation: u64,
) -> Result<Arc<Vec<pb::Channel>>, MediaError> {
    if let Some(channels) = desk.cache.channels() {
        return Ok(channels);
    }
    let records = desk.store.all_channels().await?;
    let channels = Arc::new(
        records
            .iter()
            .map(ChannelRecord::to_proto)
            .collect::<Vec<_>>(),
    );
    desk.cache.put_channels(channels.clone(), generation);
    Ok(channels)
}

/// The range a timetable request covers: a broadcast day in a time zone,
/// or start and end times.
fn timetable_range(
    desk: &Desk,
    request: &pb::GetTimetableRequest,
) -> Result<(i64, i64), MediaError> {
    let zone = if request.time_zone.is_empty() {
        desk.station_zone.clone()
    } else {
        broadcast_day::time_zone(&request.time_zone)?
    };
    if request.broadcast_day.is_empty() {
        return query_range(desk, request.start_time.as_ref(), request.end_time.as_ref());
    }
    if request.start_time.is_some() || request.end_time.is_some() {
        return Err(MediaError::InvalidArgument(
            "give either broadcast_day or start_time and end_time, not both".to_owned(),
        ));
    }
    broadcast_day::day_range(
        &request.broadcast_day,
        &zone,
        desk.settings.broadcast_day_start,
    )
}

/// A query range: both times set, end after start, no longer than the
/// configured bound.
fn query_range(
    desk: &Desk,
    start_time: Option<&prost_types::Timestamp>,
    end_time: Option<&prost_types::Timestamp>,
) -> Result<(i64, i64), MediaError> {
    let start_time_ms = model::timestamp_to_millis("start_time", start_time)?;
    let end_time_ms = model::timestamp_to_millis("end_time", end_time)?;
    check_slot_times(start_time_ms, end_time_ms)?;
    check_range_length(desk, start_time_ms, end_time_ms)?;
    Ok((start_time_ms, end_time_ms))
}

fn check_range_length(desk: &Desk, start_time_ms: i64, end_time_ms: i64) -> Result<(), MediaError> {
    let max_ms = i64::try_from(desk.settings.max_query_range.as_millis()).unwrap_or(i64::MAX);
    if end_time_ms - start_time_ms > max_ms {
        return Err(MediaError::InvalidArgument(format!(
            "the range from start_time to end_time is longer than {} days; ask for less at a time",
            max_ms / 86_400_000
        )));
    }
    Ok(())
}

/// `GetScheduleGaps`: per channel, the stretches of the range no slot covers.
pub(super) async fn gaps(
    desk: &Desk,
    request: Request<pb::GetScheduleGapsRequest>,
) -> Result<Response<pb::GetScheduleGapsResponse>, Status> {
    desk.reader(&request).await?;
    let request = request.into_inner();
    let (start_time_ms, end_time_ms) =
        query_range(desk, request.start_time.as_ref(), request.end_time.as_ref())?;
    let store = &desk.store;
    let channels = if request.channel_id.is_empty() {
        store.all_channels().await.map_err(MediaError::from)?
    } else {
        vec![lookups::existing::<ChannelRecord>(desk, &request.channel_id).await?]
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
        for (gap_start, gap_end) in gaps_between(&channel_slots, start_time_ms, end_time_ms) {
            response.gaps.push(pb::ScheduleGap {
                channel_id: channel.id.clone(),
                start_time: Some(timestamp_from_millis(gap_start)),
                end_time: Some(timestamp_from_millis(gap_end)),
            });
        }
    }
    Ok(Response::new(response))
}

/// The stretches of [start, end) that no slot covers, in order. `slots` may
/// come in any order and may reach beyond the range.
fn gaps_between(slots: &[SlotRecord], start_time_ms: i64, end_time_ms: i64) -> Vec<(i64, i64)> {
    let mut covered: Vec<(i64, i64)> = slots
        .iter()
        .map(|slot| (slot.start_time_ms, slot.end_time_ms))
        .collect();
    covered.sort_unstable();
    let mut gaps = Vec::new();
    let mut cursor = start_time_ms;
    for (slot_start, slot_end) in covered {
        if slot_end <= cursor {
            continue;
        }
        if slot_start >= end_time_ms {
            break;
        }
        if slot_start > cursor {
            gaps.push((cursor, slot_start));
        }
        cursor = cursor.max(slot_end);
    }
    if cursor < end_time_ms {
        gaps.push((cursor, end_time_ms));
    }
    gaps
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stored_slot;

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

    const MINUTE: i64 = 60_000;

    #[test]
    fn gaps_are_what_no_slot_covers() {
        let slots = vec![
            stored_slot("b", 30 * MINUTE, 60 * MINUTE),
            stored_slot("a", -10 * MINUTE, 10 * MINUTE),
            stored_slot("c", 90 * MINUTE, 200 * MINUTE),
        ];
        assert_eq!(
            gaps_between(&slots, 0, 120 * MINUTE),
            vec![(10 * MINUTE, 30 * MINUTE), (60 * MINUTE, 90 * MINUTE)]
        );
        assert_eq!(gaps_between(&[], 0, MINUTE), vec![(0, MINUTE)]);
        assert!(gaps_between(&slots[2..], 100 * MINUTE, 120 * MINUTE).is_empty());
    }
}
