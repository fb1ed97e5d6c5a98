//! Channels: creating one (with the next free number if none is given),
//! listing them in number order, and changing one.

use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use super::field_masks::{implicit_channel_paths, mask_paths};
use super::paging::{self, page_position, page_size};
use crate::cache::Changed;
use crate::error::MediaError;
use crate::model::{self, ChannelRecord, MAX_CHANNEL_NUMBER};
use crate::store::WriteLock;

/// `CreateChannel`.
pub(super) async fn create(
    desk: &Desk,
    request: Request<pb::CreateChannelRequest>,
) -> Result<Response<pb::Channel>, Status> {
    let caller = desk.operator(&request).await?;
    let Some(channel) = request.into_inner().channel else {
        return Err(MediaError::InvalidArgument("channel is required".to_owned()).into());
    };
    let record = model::channel_from_proto(&channel, desk.now_ms())?;
    let record = create_channel_record(desk, record).await?;
    desk.changed(Changed::Channels(vec![record.id.clone()]))
        .await;
    tracing::info!(channel_id = %record.id, number = record.number, by = %caller.user_id, "created a channel");
    desk.announce(
        pb::schedule_event::Kind::ChannelCreated,
        &record.id,
        None,
        Some(&record),
    )
    .await;
    let details = serde_json::json!({"number": record.number, "name": record.name});
    desk.record("schedule.channel_created", &caller, &record.id, details)
        .await;
    Ok(Response::new(record.to_proto()))
}

async fn create_channel_record(
    desk: &Desk,
    mut channel: ChannelRecord,
) -> Result<ChannelRecord, MediaError> {
    let mut write = desk.store.begin_write(&[WriteLock::ChannelNumbers]).await?;
    if write.channel(&channel.id).await?.is_some() {
        return Err(MediaError::AlreadyExists(format!(
            "channel {} already exists",
            channel.id
        )));
    }
    if channel.number == 0 {
        channel.number = write.next_channel_number().await?;
        if channel.number > MAX_CHANNEL_NUMBER {
            return Err(MediaError::FailedPrecondition(
                "no channel number is free; give one explicitly".to_owned(),
            ));
        }
    } else if let Some(owner) = write.channel_with_number(channel.number).await? {
        return Err(MediaError::AlreadyExists(format!(
            "channel number {} is taken by channel {}",
            channel.number, owner.id
        )));
    }
    if !write.insert_channel(&channel).await? {
        return Err(MediaError::AlreadyExists(format!(
            "channel {} or number {} is taken",
            channel.id, channel.number
        )));
    }
    write.commit().await?;
    Ok(channel)
}

/// `ListChannels`: a page of channels in number order.
pub(super) async fn list(
    desk: &Desk,
    request: Request<pb::ListChannelsRequest>,
) -> Result<Response<pb::ListChannelsResponse>, Status> {
    desk.reader(&request).await?;
    let request = request.into_inner();
    let limit = page_size(request.page_size)?;
    let after_number = match page_position("channels", &request.page_token)? {
        Some(position) => position.parse::<i64>().map_err(|_| {
            MediaError::InvalidArgument("page_token is not one this list returned".to_owned())
        })?,
        None => 0,
    };
    // One more than asked tells whether another page follows.
    let mut channels = desk
        .store
        .channels_after(after_number, limit + 1)
        .await
        .map_err(MediaError::from)?;
    let next_page_token = paging::finish_page(&mut channels, limit, "channels", |last| {
        last.number.to_string()
    });
    Ok(Response::new(pb::ListChannelsResponse {
        channels: channels.iter().map(ChannelRecord::to_proto).collect(),
        next_page_token,
    }))
}

/// `UpdateChannel`: the fields the mask names (or the message sets).
pub(super) async fn update(
    desk: &Desk,
    request: Request<pb::UpdateChannelRequest>,
) -> Result<Response<pb::Channel>, Status> {
    let caller = desk.operator(&request).await?;
    let request = request.into_inner();
    let Some(changes) = request.channel else {
        return Err(MediaError::InvalidArgument(
            "channel is required: send the channel's id and the fields to change".to_owned(),
        )
        .into());
    };
    model::require_id("channel.id", &changes.id)?;
    let paths = mask_paths(request.update_mask, || implicit_channel_paths(&changes));
    let mut write = desk
        .store
        .begin_write(&[WriteLock::ChannelNumbers])
        .await
        .map_err(MediaError::from)?;
    let before = write
        .channel(&changes.id)
        .await
        .map_err(MediaError::from)?
        .ok_or_else(|| MediaError::channel_not_found(&changes.id))?;
    let mut after = before.clone();
    for path in &paths {
        match path.as_str() {
            "number" => after.number = i64::from(changes.number),
            "name" => after.name = changes.name.trim().to_owned(),
            "logo_url" => after.logo_url = changes.logo_url.trim().to_owned(),
            "group" => after.group = changes.group.trim().to_owned(),
            "slate_asset_id" => after.slate_asset_id = changes.slate_asset_id.trim().to_owned(),
            "comments_enabled" => after.comments_enabled = changes.comments_enabled.unwrap_or(true),
            "id" => {}
            other => {
                return Err(MediaError::InvalidArgument(format!(
                    "field {other:?} cannot be changed; update_mask may name number, name, logo_url, group, slate_asset_id and comments_enabled"
                ))
                .into());
            }
        }
    }
    model::check_channel_fields(&after)?;
    if after.number == 0 {
        return Err(MediaError::InvalidArgument(
            "a channel keeps a number: give one from 1 to 99999".to_owned(),
        )
        .into());
    }
    if after.number != before.number
        && let Some(owner) = write
            .channel_with_number(after.number)
            .await
            .map_err(MediaError::from)?
    {
        return Err(MediaError::AlreadyExists(format!(
            "channel number {} is taken by channel {}",
            after.number, owner.id
        ))
        .into());
    }
    after.update_time_ms = desk.now_ms();
    write
        .update_channel(&after)
        .await
        .map_err(MediaError::from)?;
    write.commit().await.map_err(MediaError::from)?;
    desk.changed(Changed::Channels(vec![after.id.clone()]))
        .await;
    tracing::info!(channel_id = %after.id, by = %caller.user_id, fields = %paths.join(","), "updated a channel");
    desk.announce(
        pb::schedule_event::Kind::ChannelUpdated,
        &after.id,
        None,
        Some(&after),
    )
    .await;
    desk.record(
        "schedule.channel_updated",
        &caller,
        &after.id,
        serde_json::json!({"fields": paths}),
    )
    .await;
    Ok(Response::new(after.to_proto()))
}
