//! `WatchSchedule`: a watcher's stream of schedule changes, relayed from
//! the bus subjects every process announces its changes on
//! ([`onair_kit::events`]), so a change made anywhere reaches every watcher.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use onair_kit::events::{self, ALL_SCHEDULE_SUBJECTS, Announcement as _};
use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use super::lookups;
use crate::error::MediaError;
use crate::model::ChannelRecord;

/// The stream `WatchSchedule` returns.
pub type ScheduleEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::ScheduleEvent, Status>> + Send + 'static>>;

/// `WatchSchedule`: one channel's changes, or every channel's.
pub(super) async fn watch(
    desk: &Desk,
    request: Request<pb::WatchScheduleRequest>,
) -> Result<Response<ScheduleEventStream>, Status> {
    desk.reader(&request).await?;
    let channel_id = request.into_inner().channel_id;
    let pattern = if channel_id.is_empty() {
        ALL_SCHEDULE_SUBJECTS.to_owned()
    } else {
        lookups::existing::<ChannelRecord>(desk, &channel_id).await?;
        events::schedule_subject(&channel_id)
    };
    let subscription = desk.bus.subscribe(&pattern).await.map_err(|error| {
        MediaError::Unavailable(format!("cannot watch the schedule now: {error}"))
    })?;
    tracing::debug!(pattern, "a schedule watcher joined");
    let events = subscription.filter_map(|message| {
        let decoded = match pb::ScheduleEvent::decode_payload(&message.payload) {
            Ok(event) => Some(Ok(event)),
            Err(error) => {
                tracing::warn!(error = %error, subject = %message.subject, "skipping a schedule event that does not decode");
                None
            }
        };
        std::future::ready(decoded)
    });
    Ok(Response::new(Box::pin(events)))
}
