//! Programs: creating one, listing them in id order, and changing one (a
//! longer program must still fit the slots that play it).

use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use super::field_masks::{implicit_program_paths, mask_paths};
use super::paging::{self, page_position, page_size};
use crate::cache::Changed;
use crate::error::MediaError;
use crate::model::{self, ProgramRecord};

/// `CreateProgram`.
pub(super) async fn create(
    desk: &Desk,
    request: Request<pb::CreateProgramRequest>,
) -> Result<Response<pb::Program>, Status> {
    let caller = desk.operator(&request).await?;
    let Some(program) = request.into_inner().program else {
        return Err(MediaError::InvalidArgument("program is required".to_owned()).into());
    };
    let record = model::program_from_proto(&program, desk.now_ms())?;
    let mut write = desk
        .store
        .begin_write(&[])
        .await
        .map_err(MediaError::from)?;
    if !write
        .insert_program(&record)
        .await
        .map_err(MediaError::from)?
    {
        return Err(
            MediaError::AlreadyExists(format!("program {} already exists", record.id)).into(),
        );
    }
    write.commit().await.map_err(MediaError::from)?;
    tracing::info!(program_id = %record.id, by = %caller.user_id, "created a program");
    let details = serde_json::json!({"title": record.title, "durationMs": record.duration_ms});
    desk.record("schedule.program_created", &caller, &record.id, details)
        .await;
    Ok(Response::new(record.to_proto()))
}

/// `ListPrograms`: a page of programs in id order.
pub(super) async fn list(
    desk: &Desk,
    request: Request<pb::ListProgramsRequest>,
) -> Result<Response<pb::ListProgramsResponse>, Status> {
    desk.reader(&request).await?;
    let request = request.into_inner();
    let limit = page_size(request.page_size)?;
    let after_id = page_position("programs", &request.page_token)?.unwrap_or_default();
    let mut programs = desk
        .store
        .programs_after(&after_id, limit + 1)
        .await
        .map_err(MediaError::from)?;
    let next_page_token =
        paging::finish_page(&mut programs, limit, "programs", |last| last.id.clone());
    Ok(Response::new(pb::ListProgramsResponse {
        programs: programs.iter().map(ProgramRecord::to_proto).collect(),
        next_page_token,
    }))
}

/// `UpdateProgram`: the fields the mask names (or the message sets).
pub(super) async fn update(
    desk: &Desk,
    request: Request<pb::UpdateProgramRequest>,
) -> Result<Response<pb::Program>, Status> {
    let caller = desk.operator(&request).await?;
    let request = request.into_inner();
    let Some(changes) = request.program else {
        return Err(MediaError::InvalidArgument(
            "program is required: send the program's id and the fields to change".to_owned(),
        )
        .into());
    };
    model::require_id("program.id", &changes.id)?;
    let paths = mask_paths(request.update_mask, || implicit_program_paths(&changes));
    let mut write = desk
        .store
        .begin_write(&[])
        .await
        .map_err(MediaError::from)?;
    let before = write
        .program(&changes.id)
        .await
        .map_err(MediaError::from)?
        .ok_or_else(|| MediaError::program_not_found(&changes.id))?;
    let mut after = before.clone();
    for path in &paths {
        match path.as_str() {
            "title" => after.title = changes.title.trim().to_owned(),
            "description" => after.description = changes.description.clone(),
            "genres" => {
                after.genres = changes
                    .genres
                    .iter()
                    .map(|genre| genre.trim().to_owned())
                    .collect();
            }
            "duration" => {
                after.duration_ms =
                    model::duration_to_millis("duration", changes.duration.as_ref())?;
            }
            "rating" => after.rating = changes.rating.trim().to_owned(),
            "artwork_url" => after.artwork_url = changes.artwork_url.trim().to_owned(),
            "asset_id" => after.asset_id = changes.asset_id.trim().to_owned(),
            "live" => after.live = changes.live,
            "id" => {}
            other => {
                return Err(MediaError::InvalidArgument(format!(
                    "field {other:?} cannot be changed; update_mask may name title, description, genres, duration, rating, artwork_url, asset_id and live"
                ))
                .into());
            }
        }
    }
    model::check_program_fields(&after)?;
    let now_ms = desk.now_ms();
    if after.duration_ms > before.duration_ms
        && let Some(short) = write
            .short_slot_of_program(&after.id, after.duration_ms, now_ms)
            .await
            .map_err(MediaError::from)?
    {
        return Err(MediaError::FailedPrecondition(format!(
            "program {} would last {} but {} is shorter and not cut: lengthen or cut that slot first",
            after.id,
            model::describe_length(after.duration_ms),
            short.describe()
        ))
        .into());
    }
    after.update_time_ms = now_ms;
    write
        .update_program(&after)
        .await
        .map_err(MediaError::from)?;
    write.commit().await.map_err(MediaError::from)?;
    // The program shows wherever it is scheduled. Asked after the commit:
    // a slot added since is on a channel its own write made forget.
    let changed = match desk.store.channels_playing(&after.id).await {
        Ok(channels) => Changed::Channels(channels),
        Err(error) => {
            tracing::warn!(program_id = %after.id, error = %error, "cannot tell which channels play a program; forgetting every cached timetable");
            Changed::Everything
        }
    };
    desk.changed(changed).await;
    tracing::info!(program_id = %after.id, by = %caller.user_id, fields = %paths.join(","), "updated a program");
    desk.record(
        "schedule.program_updated",
        &caller,
        &after.id,
        serde_json::json!({"fields": paths}),
    )
    .await;
    Ok(Response::new(after.to_proto()))
}
