//! What the IPTV exports read from the media service: every channel, page by
//! page, and the station's timetables, kept as the bytes the service answered
//! so an unchanged guide need not be written again.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use onair_proto::ServiceChannel;
use onair_proto::clients::MediaClient;
use onair_proto::codec::RawClientCodec;
use onair_proto::media::v1 as pb;

use super::settings::IptvSettings;
use crate::guard;

/// How many channels one `ListChannels` page asks for (the service's most).
const CHANNEL_PAGE_SIZE: i32 = 1000;

/// The media service, as the IPTV exports call it.
pub(super) struct MediaReader {
    media: MediaClient,
    /// The same service, for calls whose answers are kept as bytes.
    media_channel: ServiceChannel,
    /// How long one call to the media service may take.
    request_timeout: Duration,
    /// The largest timetable read from the media service, in bytes.
    max_timetable_bytes: usize,
}

impl MediaReader {
    /// Calls to `media` within the limits of `settings`.
    pub(super) fn new(media: ServiceChannel, settings: &IptvSettings) -> MediaReader {
        let client =
            MediaClient::new(media.clone()).max_decoding_message_size(settings.max_timetable_bytes);
        MediaReader {
            media: client,
            media_channel: media,
            request_timeout: settings.request_timeout,
            max_timetable_bytes: settings.max_timetable_bytes,
        }
    }

    /// Every channel, by number, following the list's pages.
    pub(super) async fn all_channels(
        &self,
        headers: &HeaderMap,
    ) -> Result<Vec<pb::Channel>, tonic::Status> {
        let mut channels = Vec::new();
        let mut page_token = String::new();
        loop {
            let message = pb::ListChannelsRequest {
                page_size: CHANNEL_PAGE_SIZE,
                page_token: page_token.clone(),
            };
            let request = self.request(headers, message);
            let page = self
                .media
                .clone()
                .list_channels(request)
                .await?
                .into_inner();
            channels.extend(page.channels);
            if page.next_page_token.is_empty() || page.next_page_token == page_token {
                return Ok(channels);
            }
            page_token = page.next_page_token;
        }
    }

    /// The whole station's timetable from `start` to `end`, undecoded.
    pub(super) async fn timetable(
        &self,
        headers: &HeaderMap,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    ) -> Result<Bytes, tonic::Status> {
        let timestamp = |time: jiff::Timestamp| prost_types::Timestamp {
            seconds: time.as_second(),
            nanos: time.subsec_nanosecond(),
        };
        let message = pb::GetTimetableRequest {
            channel_id: String::new(),
            start_time: Some(timestamp(start)),
            end_time: Some(timestamp(end)),
            time_zone: String::new(),
            broadcast_day: String::new(),
        };
        let request = self.request(headers, message);
        let mut grpc = tonic::client::Grpc::new(self.media_channel.clone())
            .max_decoding_message_size(self.max_timetable_bytes);
        grpc.ready().await.map_err(|error| {
            tonic::Status::unavailable(format!("the media service is unavailable: {error}"))
        })?;
        let path =
            http::uri::PathAndQuery::from_static("/onair.media.v1.MediaService/GetTimetable");
        Ok(grpc
            .unary(
                request,
                path,
                RawClientCodec::<pb::GetTimetableRequest>::default(),
            )
            .await?
            .into_inner())
    }

    /// A request to the media service with the client's credentials and
    /// request id (the guide is public, but a broken credential is refused
    /// as everywhere else) and the gateway's deadline.
    fn request<T>(&self, headers: &HeaderMap, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.request_timeout);
        for name in ["authorization", guard::REQUEST_ID] {
            if let Some(value) = headers.get(name)
                && let Ok(text) = value.to_str()
                && let Ok(value) = text.parse()
            {
                request.metadata_mut().insert(name, value);
            }
        }
        request
    }
}
