//! Slots: putting a program on a channel for a time, moving or changing a
//! slot, and deleting one, each under the channel's write lock so that
//! slots of one channel never overlap.

use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use super::field_masks::{implicit_slot_paths, mask_paths};
use crate::cache::Changed;
use crate::error::MediaError;
use crate::model::{self, SlotRecord, check_slot_against_program, check_slot_times, format_millis};
use crate::store::WriteLock;

/// `CreateSlot`.
pub(super) async fn create(
    desk: &Desk,
    request: Request<pb::CreateSlotRequest>,
) -> Result<Response<pb::Slot>, Status> {
    let caller = desk.operator(&request).await?;
    let request = request.into_inner();
    let Some(slot) = request.slot else {
        return Err(MediaError::InvalidArgument("slot is required".to_owned()).into());
    };
    let channel_id = if request.channel_id.is_empty() {
        slot.channel_id.clone()
    } else {
        request.channel_id.clone()
    };
    if !slot.channel_id.is_empty() && slot.channel_id != channel_id {
        return Err(MediaError::InvalidArgument(format!(
            "slot.channel_id {:?} differs from channel_id {channel_id:?}: give one, or the same in both",
            slot.channel_id
        ))
        .into());
    }
    let record = create_slot_record(desk, &channel_id, &slot).await?;
    desk.changed(Changed::Channels(vec![record.channel_id.clone()]))
        .await;
    tracing::info!(
        slot_id = %record.id,
        channel_id = %record.channel_id,
        program_id = %record.program_id,
        start_time_ms = record.start_time_ms,
        end_time_ms = record.end_time_ms,
        by = %caller.user_id,
        "created a slot"
    );
    desk.announce(
        pb::schedule_event::Kind::SlotCreated,
        &record.channel_id,
        Some(&record),
        None,
    )
    .await;
    let details = serde_json::json!({
        "channelId": record.channel_id,
        "programId": record.program_id,
        "startTimeMs": record.start_time_ms,
        "endTimeMs": record.end_time_ms,
    });
    desk.record("schedule.slot_created", &caller, &record.id, details)
        .await;
    Ok(Response::new(record.to_proto()))
}

/// Creates a slot: the overlap check and the insert happen in one
/// transaction under the channel's write lock, so of two overlapping
/// creates exactly one wins.
async fn create_slot_record(
    desk: &Desk,
    channel_id: &str,
    slot: &pb::Slot,
) -> Result<SlotRecord, MediaError> {
    model::require_id("channel_id", channel_id)?;
    if !slot.repeat_of_slot_id.is_empty() {
        model::validate_id("repeat_of_slot_id", &slot.repeat_of_slot_id)?;
    }
    if slot.repeat_of_slot_id.is_empty() || !slot.program_id.is_empty() {
        model::require_id("program_id", &slot.program_id)?;
    }
    let start_time_ms = model::timestamp_to_millis("start_time", slot.start_time.as_ref())?;
    let end_time_ms = model::timestamp_to_millis("end_time", slot.end_time.as_ref())?;
    check_slot_times(start_time_ms, end_time_ms)?;
    let id = model::given_or_new_id("slot id", &slot.id)?;
    let now_ms = desk.now_ms();

    let mut write = desk
        .store
        .begin_write(&[WriteLock::Channel(channel_id.to_owned())])
        .await?;
    let channel = write
        .channel(channel_id)
        .await?
        .ok_or_else(|| MediaError::channel_not_found(channel_id))?;
    let mut program_id = slot.program_id.clone();
    if !slot.repeat_of_slot_id.is_empty() {
        let original = write
            .slot(&slot.repeat_of_slot_id)
            .await?
            .ok_or_else(|| MediaError::slot_not_found(&slot.repeat_of_slot_id))?;
        if program_id.is_empty() {
            program_id = original.program_id.clone();
        }
        check_same_program(&original, &program_id)?;
    }
    let program = write
        .program(&program_id)
        .await?
        .ok_or_else(|| MediaError::program_not_found(&program_id))?;
    let record = SlotRecord {
        id,
        channel_id: channel.id.clone(),
        program_id: program.id.clone(),
        start_time_ms,
        end_time_ms,
        live: slot.live || program.live,
        repeat_of_slot_id: slot.repeat_of_slot_id.clone(),
        cut: slot.cut,
        comments_enabled: slot.comments_enabled.unwrap_or(channel.comments_enabled),
        create_time_ms: now_ms,
        update_time_ms: now_ms,
    };
    check_slot_against_program(&record, &program)?;
    if let Some(conflict) = write
        .conflicting_slot(&record.channel_id, start_time_ms, end_time_ms, None)
        .await?
    {
        return Err(overlap_error(&conflict));
    }
    if !slot.id.is_empty() && write.slot(&record.id).await?.is_some() {
        return Err(MediaError::AlreadyExists(format!(
            "slot {} already exists",
            record.id
        )));
    }
    if !write.insert_slot(&record).await? {
        return Err(MediaError::AlreadyExists(format!(
            "slot {} already exists",
            record.id
        )));
    }
    write.commit().await?;
    Ok(record)
}

/// `UpdateSlot`: moving or changing a slot.
pub(super) async fn update(
    desk: &Desk,
    request: Request<pb::UpdateSlotRequest>,
) -> Result<Response<pb::Slot>, Status> {
    let caller = desk.operator(&request).await?;
    let request = request.into_inner();
    let forced = request.force;
    let (before, after) = update_slot_record(desk, request).await?;
    desk.changed(slot_channels(&before, &after)).await;
    tracing::info!(
        slot_id = %after.id,
        channel_id = %after.channel_id,
        start_time_ms = after.start_time_ms,
        end_time_ms = after.end_time_ms,
        forced,
        by = %caller.user_id,
        "updated a slot"
    );
    desk.announce(
        pb::schedule_event::Kind::SlotUpdated,
        &after.channel_id,
        Some(&after),
        None,
    )
    .await;
    let details = serde_json::json!({
        "channelId": after.channel_id,
        "forced": forced,
        "before": {"programId": before.program_id, "startTimeMs": before.start_time_ms, "endTimeMs": before.end_time_ms},
        "after": {"programId": after.program_id, "startTimeMs": after.start_time_ms, "endTimeMs": after.end_time_ms},
    });
    desk.record("schedule.slot_updated", &caller, &after.id, details)
        .await;
    Ok(Response::new(after.to_proto()))
}

async fn update_slot_record(
    desk: &Desk,
    request: pb::UpdateSlotRequest,
) -> Result<(SlotRecord, SlotRecord), MediaError> {
    let Some(changes) = request.slot else {
        return Err(MediaError::InvalidArgument(
            "slot is required: send the slot's id and the fields to change".to_owned(),
        ));
    };
    model::require_id("slot.id", &changes.id)?;
    let paths = mask_paths(request.update_mask, || implicit_slot_paths(&changes));
    let before = desk
        .store
        .slot(&changes.id)
        .await?
        .ok_or_else(|| MediaError::slot_not_found(&changes.id))?;
    let mut write = desk
        .store
        .begin_write(&[WriteLock::Channel(before.channel_id.clone())])
        .await?;
    // Read again under the lock: the slot may have changed meanwhile.
    let before = write
        .slot(&changes.id)
        .await?
        .ok_or_else(|| MediaError::slot_not_found(&changes.id))?;
    let now_ms = desk.now_ms();
    if before.is_on_air(now_ms) && !request.force {
        return Err(MediaError::FailedPrecondition(format!(
            "{} is on air; set force to change it anyway",
            before.describe()
        )));
    }
    let mut after = before.clone();
    let mut program_changed = false;
    for path in &paths {
        match path.as_str() {
            "start_time" => {
                after.start_time_ms =
                    model::timestamp_to_millis("start_time", changes.start_time.as_ref())?;
            }
            "end_time" => {
                after.end_time_ms =
                    model::timestamp_to_millis("end_time", changes.end_time.as_ref())?;
            }
            "program_id" => {
                model::require_id("program_id", &changes.program_id)?;
                program_changed = after.program_id != changes.program_id;
                after.program_id = changes.program_id.clone();
            }
            "live" => after.live = changes.live,
            "cut" => after.cut = changes.cut,
            "comments_enabled" => {
                after.comments_enabled = match changes.comments_enabled {
                    Some(enabled) => enabled,
                    // Cleared: back to the channel's setting.
                    None => {
                        write
                            .channel(&after.channel_id)
                            .await?
                            .ok_or_else(|| MediaError::channel_not_found(&after.channel_id))?
                            .comments_enabled
                    }
                };
            }
            "repeat_of_slot_id" => {
                if !changes.repeat_of_slot_id.is_empty() {
                    model::validate_id("repeat_of_slot_id", &changes.repeat_of_slot_id)?;
                }
                after.repeat_of_slot_id = changes.repeat_of_slot_id.clone();
            }
            "channel_id" if changes.channel_id == before.channel_id => {}
            "channel_id" => {
                return Err(MediaError::InvalidArgument(
                    "channel_id cannot be changed: delete the slot and create it on the other channel".to_owned(),
                ));
            }
            "id" if changes.id == before.id => {}
            other => {
                return Err(MediaError::InvalidArgument(format!(
                    "field {other:?} cannot be changed; update_mask may name start_time, end_time, program_id, live, cut, comments_enabled and repeat_of_slot_id"
                )));
            }
        }
    }
    check_slot_times(after.start_time_ms, after.end_time_ms)?;
    if after.is_on_air(now_ms) && !before.is_on_air(now_ms) && !request.force {
        return Err(MediaError::FailedPrecondition(format!(
            "the change would put slot {} on air now ({}); set force to do it anyway",
            after.id,
            format_millis(now_ms)
        )));
    }
    let program = write
        .program(&after.program_id)
        .await?
        .ok_or_else(|| MediaError::program_not_found(&after.program_id))?;
    if program_changed {
        after.live = after.live || program.live;
    }
    if !after.repeat_of_slot_id.is_empty() {
        if after.repeat_of_slot_id == after.id {
            return Err(MediaError::InvalidArgument(
                "a slot cannot be a rebroadcast of itself".to_owned(),
            ));
        }
        let original = write
            .slot(&after.repeat_of_slot_id)
            .await?
            .ok_or_else(|| MediaError::slot_not_found(&after.repeat_of_slot_id))?;
        check_same_program(&original, &after.program_id)?;
    }
    check_slot_against_program(&after, &program)?;
    if let Some(conflict) = write
        .conflicting_slot(
            &after.channel_id,
            after.start_time_ms,
            after.end_time_ms,
            Some(&after.id),
        )
        .await?
    {
        return Err(overlap_error(&conflict));
    }
    after.update_time_ms = now_ms;
    write.update_slot(&after).await?;
    write.commit().await?;
    Ok((before, after))
}

/// `DeleteSlot`.
pub(super) async fn delete(
    desk: &Desk,
    request: Request<pb::DeleteSlotRequest>,
) -> Result<Response<pb::DeleteSlotResponse>, Status> {
    let caller = desk.operator(&request).await?;
    let request = request.into_inner();
    model::require_id("slot_id", &request.slot_id)?;
    let store = &desk.store;
    let found = store
        .slot(&request.slot_id)
        .await
        .map_err(MediaError::from)?
        .ok_or_else(|| MediaError::slot_not_found(&request.slot_id))?;
    let mut write = store
        .begin_write(&[WriteLock::Channel(found.channel_id.clone())])
        .await
        .map_err(MediaError::from)?;
    let slot = write
        .slot(&request.slot_id)
        .await
        .map_err(MediaError::from)?
        .ok_or_else(|| MediaError::slot_not_found(&request.slot_id))?;
    if slot.is_on_air(desk.now_ms()) && !request.force {
        return Err(MediaError::FailedPrecondition(format!(
            "{} is on air; set force to delete it anyway",
            slot.describe()
        ))
        .into());
    }
    write
        .delete_slot(&slot.id)
        .await
        .map_err(MediaError::from)?;
    write.commit().await.map_err(MediaError::from)?;
    desk.changed(Changed::Channels(vec![slot.channel_id.clone()]))
        .await;
    tracing::info!(slot_id = %slot.id, channel_id = %slot.channel_id, forced = request.force, by = %caller.user_id, "deleted a slot");
    desk.announce(
        pb::schedule_event::Kind::SlotDeleted,
        &slot.channel_id,
        Some(&slot),
        None,
    )
    .await;
    let details = serde_json::json!({
        "channelId": slot.channel_id,
        "programId": slot.program_id,
        "startTimeMs": slot.start_time_ms,
        "endTimeMs": slot.end_time_ms,
        "forced": request.force,
    });
    desk.record("schedule.slot_deleted", &caller, &slot.id, details)
        .await;
    Ok(Response::new(pb::DeleteSlotResponse {}))
}

fn overlap_error(conflict: &SlotRecord) -> MediaError {
    MediaError::FailedPrecondition(format!(
        "the slot overlaps {} on channel {}: move or delete that slot first",
        conflict.describe(),
        conflict.channel_id
    ))
}

fn check_same_program(original: &SlotRecord, program_id: &str) -> Result<(), MediaError> {
    if original.program_id != program_id {
        return Err(MediaError::InvalidArgument(format!(
            "a rebroadcast repeats the same program: slot {} plays program {}, not {program_id}",
            original.id, original.program_id
        )));
    }
    Ok(())
}

/// What moving or changing a slot changed: the channel it was on and the
/// one it is on now.
fn slot_channels(before: &SlotRecord, after: &SlotRecord) -> Changed {
    let mut channels = vec![before.channel_id.clone()];
    if after.channel_id != before.channel_id {
        channels.push(after.channel_id.clone());
    }
    Changed::Channels(channels)
}
