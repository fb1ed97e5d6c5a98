//! The media service's gRPC implementation: [`MediaServiceImpl`] answers
//! every call by handing it to the module that owns it.
//!
//! - `channels`, `programs` and `slots`: creating, listing and
//!   changing them; `lookups` the get and batch-get calls of all three.
//! - `timetables` (with the gaps) and `now_next`: what a guide reads.
//! - `watchers`: `WatchSchedule`; `schedule_import`: `ImportSchedule`.
//! - `paging` and `field_masks`: how lists page and updates name fields.
//! - `desk`: what every call works with, and the steps they share.

mod channels;
mod desk;
mod field_masks;
mod lookups;
mod now_next;
mod paging;
mod programs;
mod schedule_import;
mod slots;
mod timetables;
mod watchers;

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use onair_kit::auth::Authenticator;
use onair_kit::bus::SharedBus;
use onair_kit::clock::Clock;
use onair_proto::media::v1 as pb;
use onair_proto::media::v1::media_service_server::MediaService;
use tonic::{Request, Response, Status, Streaming};

use crate::broadcast_day;
use crate::cache::{CHANGED_SUBJECT, Changed, ScheduleCache};
use crate::error::MediaError;
use crate::model::{ChannelRecord, ProgramRecord, SlotRecord};
use crate::store::MediaStore;
use desk::Desk;

pub use desk::MediaServiceSettings;
pub use paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
pub use watchers::ScheduleEventStream;

/// The media service.
#[derive(Clone)]
pub struct MediaServiceImpl {
    desk: Arc<Desk>,
}

impl MediaServiceImpl {
    /// Opens the service on its store, checking the station settings.
    pub async fn start(
        store: MediaStore,
        settings: MediaServiceSettings,
        clock: Clock,
        bus: SharedBus,
        authenticator: Authenticator,
    ) -> Result<MediaServiceImpl, MediaError> {
        let station_zone = broadcast_day::time_zone(&settings.time_zone)?;
        broadcast_day::check_day_start(settings.broadcast_day_start)?;
        if settings.max_batch_ids == 0 || settings.max_import_items == 0 {
            return Err(MediaError::InvalidArgument(
                "max_batch_ids and max_import_items must be at least 1".to_owned(),
            ));
        }
        tracing::info!(
            time_zone = %settings.time_zone,
            broadcast_day_start_seconds = settings.broadcast_day_start.as_secs(),
            "media service started"
        );
        let cache = ScheduleCache::new(settings.cache_ttl, settings.cache_capacity);
        Ok(MediaServiceImpl {
            desk: Arc::new(Desk {
                store,
                settings,
                station_zone,
                clock,
                bus,
                authenticator,
                cache,
            }),
        })
    }

    /// Starts the service's background work: forgetting cached timetables
    /// when another process changes the schedule. The task runs until
    /// aborted.
    pub async fn spawn_background(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, MediaError> {
        let mut changes = self
            .desk
            .bus
            .subscribe(CHANGED_SUBJECT)
            .await
            .map_err(|error| {
                MediaError::Unavailable(format!("cannot subscribe to schedule changes: {error}"))
            })?;
        let service = self.clone();
        let invalidations = tokio::spawn(async move {
            while let Some(message) = changes.next().await {
                let changed = Changed::from_payload(&message.payload);
                service.desk.cache.invalidate(&changed);
            }
        });
        let programs = tokio::spawn(now_next::announce_programs(self.desk.clone()));
        Ok(vec![invalidations, programs])
    }

    /// A timetable, encoded, for the station's server (see [`crate::grpc`]).
    pub(crate) async fn timetable_bytes(
        &self,
        request: Request<pb::GetTimetableRequest>,
    ) -> Result<Bytes, Status> {
        timetables::timetable_bytes(&self.desk, request).await
    }

    /// The service's store, for tools and benchmarks that seed a station.
    pub fn store(&self) -> &MediaStore {
        &self.desk.store
    }
}

#[tonic::async_trait]
impl MediaService for MediaServiceImpl {
    async fn create_channel(
        &self,
        request: Request<pb::CreateChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        channels::create(&self.desk, request).await
    }

    async fn get_channel(
        &self,
        request: Request<pb::GetChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        lookups::get::<ChannelRecord, _>(&self.desk, request, |request| &request.channel_id).await
    }

    async fn list_channels(
        &self,
        request: Request<pb::ListChannelsRequest>,
    ) -> Result<Response<pb::ListChannelsResponse>, Status> {
        channels::list(&self.desk, request).await
    }

    async fn batch_get_channels(
        &self,
        request: Request<pb::BatchGetChannelsRequest>,
    ) -> Result<Response<pb::BatchGetChannelsResponse>, Status> {
        lookups::batch_get::<ChannelRecord, _, _>(
            &self.desk,
            request,
            |request| request.channel_ids,
            |channels, missing_channel_ids| pb::BatchGetChannelsResponse {
                channels,
                missing_channel_ids,
            },
        )
        .await
    }

    async fn update_channel(
        &self,
        request: Request<pb::UpdateChannelRequest>,
    ) -> Result<Response<pb::Channel>, Status> {
        channels::update(&self.desk, request).await
    }

    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        programs::create(&self.desk, request).await
    }

    async fn get_program(
        &self,
        request: Request<pb::GetProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        lookups::get::<ProgramRecord, _>(&self.desk, request, |request| &request.program_id).await
    }

    async fn batch_get_programs(
        &self,
        request: Request<pb::BatchGetProgramsRequest>,
    ) -> Result<Response<pb::BatchGetProgramsResponse>, Status> {
        lookups::batch_get::<ProgramRecord, _, _>(
            &self.desk,
            request,
            |request| request.program_ids,
            |programs, missing_program_ids| pb::BatchGetProgramsResponse {
                programs,
                missing_program_ids,
            },
        )
        .await
    }

    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> Result<Response<pb::ListProgramsResponse>, Status> {
        programs::list(&self.desk, request).await
    }

    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> Result<Response<pb::Program>, Status> {
        programs::update(&self.desk, request).await
    }

    async fn create_slot(
        &self,
        request: Request<pb::CreateSlotRequest>,
    ) -> Result<Response<pb::Slot>, Status> {
        slots::create(&self.desk, request).await
    }

    async fn get_slot(
        &self,
        request: Request<pb::GetSlotRequest>,
    ) -> Result<Response<pb::Slot>, Status> {
        lookups::get::<SlotRecord, _>(&self.desk, request, |request| &request.slot_id).await
    }

    async fn batch_get_slots(
        &self,
        request: Request<pb::BatchGetSlotsRequest>,
    ) -> Result<Response<pb::BatchGetSlotsResponse>, Status> {
        lookups::batch_get::<SlotRecord, _, _>(
            &self.desk,
            request,
            |request| request.slot_ids,
            |slots, missing_slot_ids| pb::BatchGetSlotsResponse {
                slots,
                missing_slot_ids,
            },
        )
        .await
    }

    async fn update_slot(
        &self,
        request: Request<pb::UpdateSlotRequest>,
    ) -> Result<Response<pb::Slot>, Status> {
        slots::update(&self.desk, request).await
    }

    async fn delete_slot(
        &self,
        request: Request<pb::DeleteSlotRequest>,
    ) -> Result<Response<pb::DeleteSlotResponse>, Status> {
        slots::delete(&self.desk, request).await
    }

    async fn get_timetable(
        &self,
        request: Request<pb::GetTimetableRequest>,
    ) -> Result<Response<pb::Timetable>, Status> {
        timetables::get(&self.desk, request).await
    }

    async fn get_now_next(
        &self,
        request: Request<pb::GetNowNextRequest>,
    ) -> Result<Response<pb::NowNext>, Status> {
        now_next::get(&self.desk, request).await
    }

    async fn batch_get_now_next(
        &self,
        request: Request<pb::BatchGetNowNextRequest>,
    ) -> Result<Response<pb::BatchGetNowNextResponse>, Status> {
        now_next::batch_get(&self.desk, request).await
    }

    async fn get_schedule_gaps(
        &self,
        request: Request<pb::GetScheduleGapsRequest>,
    ) -> Result<Response<pb::GetScheduleGapsResponse>, Status> {
        timetables::gaps(&self.desk, request).await
    }

    type WatchScheduleStream = ScheduleEventStream;

    async fn watch_schedule(
        &self,
        request: Request<pb::WatchScheduleRequest>,
    ) -> Result<Response<Self::WatchScheduleStream>, Status> {
        watchers::watch(&self.desk, request).await
    }

    async fn import_schedule(
        &self,
        request: Request<Streaming<pb::ImportScheduleItem>>,
    ) -> Result<Response<pb::ImportScheduleResponse>, Status> {
        schedule_import::import(&self.desk, request).await
    }
}
