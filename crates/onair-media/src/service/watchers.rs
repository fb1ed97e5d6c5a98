//! `WatchSchedule`: a watcher's stream of schedule changes, relayed from
//! the bus subjects every process announces its changes on
//! ([`crate::watch`]), so a change made anywhere reaches every watcher.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use onair_proto::media::v1 as pb;
use tonic::{Request, Response, Status};

use super::desk::Desk;
use super::lookups;
use crate::error::MediaError;
use crate::model::ChannelRecord;
use crate::watch;

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
        watch::ALL_SCHEDULE_SUBJECTS.to_owned()
    } else {
        lookups::existing::<ChannelRecord>(desk, &channel_id).await?;
        watch::schedule_subject(&channel_id)
    };
    let subscription = desk.bus.subscribe(&pattern).await.map_err(|error| {
        MediaError::Unavailable(format!("cannot watch the schedule now: {error}"))
    })?;
    tracing::debug!(pattern, "a schedule watcher joined");
    let events = subscription.filter_map(|message| {
        let decoded = match watch::decode_event(&message.payload) {
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
