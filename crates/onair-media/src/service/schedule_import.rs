//! `ImportSchedule`: taking in an import's items, loading what the checks
//! need inside one transaction under the locks of everything it touches,
//! and applying all of it or none ([`crate::import_checks`] holds the checks).

use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status, Streaming};

use super::desk::Desk;
use crate::cache::Changed;
use crate::error::MediaError;
use crate::import_checks::{self, StoredContext};

/// `ImportSchedule`: every item of the stream, applied all or none.
pub(super) async fn import(
    desk: &Desk,
    request: Request<Streaming<pb::ImportScheduleItem>>,
) -> Result<Response<pb::ImportScheduleResponse>, Status> {
    let caller = desk.operator(&request).await?;
    let mut stream = request.into_inner();
    let max_items = desk.settings.max_import_items;
    let mut items = Vec::new();
    while let Some(item) = stream.message().await? {
        if items.len() >= max_items {
            return Err(MediaError::ResourceExhausted(format!(
                "an import may carry at most {max_items} items; split the schedule into several imports"
            ))
            .into());
        }
        items.push(item);
    }
    let received = items.len();
    let (response, plan) = import_items(desk, items).await?;
    let Some(plan) = plan else {
        tracing::info!(items = received, errors = response.errors.len(), by = %caller.user_id, "refused a schedule import");
        return Ok(Response::new(response));
    };
    desk.changed(Changed::Everything).await;
    tracing::info!(
        channels = response.channels,
        programs = response.programs,
        slots = response.slots,
        by = %caller.user_id,
        "imported a schedule"
    );
    for (channel, created) in &plan.channels {
        let kind = if *created {
            pb::schedule_event::Kind::ChannelCreated
        } else {
            pb::schedule_event::Kind::ChannelUpdated
        };
        desk.announce(kind, &channel.id, None, Some(channel)).await;
    }
    for slot in &plan.slots {
        desk.announce(
            pb::schedule_event::Kind::SlotCreated,
            &slot.channel_id,
            Some(slot),
            None,
        )
        .await;
    }
    let channel_ids: Vec<&str> = plan
        .channels
        .iter()
        .map(|(channel, _)| channel.id.as_str())
        .collect();
    let details = serde_json::json!({
        "channels": response.channels,
        "programs": response.programs,
        "slots": response.slots,
        "channelIds": channel_ids,
    });
    // One event for the whole import: the ops log records decisions, and
    // an import is one; its slots are on the schedule subjects.
    desk.record("schedule.imported", &caller, "", details).await;
    Ok(Response::new(response))
}

async fn import_items(
    desk: &Desk,
    items: Vec<pb::ImportScheduleItem>,
) -> Result<
    (
        pb::ImportScheduleResponse,
        Option<import_checks::ImportPlan>,
    ),
    MediaError,
> {
    let now_ms = desk.now_ms();
    let checked = tokio::task::spawn_blocking(move || import_checks::check_items(items, now_ms))
        .await
        .map_err(|error| MediaError::Internal(format!("import check failed: {error}")))?;
    let store = &desk.store;
    let mut write = store.begin_write(&checked.locks()).await?;

    let mut stored = StoredContext::default();
    for channel in write.all_channels().await? {
        stored.channels.insert(channel.id.clone(), channel);
    }
    for program in write.programs(&checked.program_ids()).await? {
        stored.programs.insert(program.id.clone(), program);
    }
    for slot in write.slots(&checked.slot_ids()).await? {
        stored.slots.insert(slot.id.clone(), slot);
    }
    for (channel_id, start_time_ms, end_time_ms) in checked.slot_ranges() {
        if !stored.channels.contains_key(&channel_id) {
            continue;
        }
        let nearby = write
            .slots_near(&channel_id, start_time_ms, end_time_ms)
            .await?;
        stored.nearby_slots.insert(channel_id, nearby);
    }
    for (program_id, duration_ms) in checked.lengthened_programs(&stored.programs) {
        if let Some(short) = write
            .short_slot_of_program(&program_id, duration_ms, now_ms)
            .await?
        {
            stored.short_slots.insert(program_id, short);
        }
    }

    let planned = tokio::task::spawn_blocking(move || import_checks::plan(checked, &stored))
        .await
        .map_err(|error| MediaError::Internal(format!("import check failed: {error}")))?;
    let plan = match planned {
        Ok(plan) => plan,
        Err(errors) => {
            write.rollback().await?;
            let response = pb::ImportScheduleResponse {
                applied: false,
                errors,
                channels: 0,
                programs: 0,
                slots: 0,
            };
            return Ok((response, None));
        }
    };
    for (channel, _) in &plan.channels {
        write.upsert_channel(channel).await?;
    }
    for program in &plan.programs {
        write.upsert_program(program).await?;
    }
    if !write.insert_slots(&plan.slots).await? {
        return Err(MediaError::AlreadyExists(
            "a slot of the import was created meanwhile with the same id or start; nothing was imported".to_owned(),
        ));
    }
    write.commit().await?;
    let response = pb::ImportScheduleResponse {
        applied: true,
        errors: Vec::new(),
        channels: count(plan.channels.len()),
        programs: count(plan.programs.len()),
        slots: count(plan.slots.len()),
    };
    Ok((response, Some(plan)))
}

fn count(length: usize) -> i32 {
    i32::try_from(length).unwrap_or(i32::MAX)
}
