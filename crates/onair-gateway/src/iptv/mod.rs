//! IPTV exports: the station as an M3U playlist (`/iptv/channels.m3u`) and its
//! guide as XMLTV (`/iptv/epg.xml`), the two files IPTV apps (Kodi's IPTV
//! Simple client, TiviMate, VLC, Jellyfin…) are given.
//!
//! Both are built from the media service's contract (`ListChannels`,
//! `GetTimetable`), so the gateway stays stateless and the media service's
//! timetable cache serves them too.
//!
//! - The playlist's URLs (each channel's `/hls/{channelId}/master.m3u8` and
//!   the guide's `url-tvg`) are absolute, made from the address the client
//!   used: `X-Forwarded-Proto` and `X-Forwarded-Host` when a proxy sets them,
//!   else the `Host` header.
//! - The guide covers [`IptvSettings::epg_days`] broadcast days from the
//!   start of the one on air now, in the station's time zone.
//! - XMLTV channel ids are `<channel id>.<xmltv_domain>` (`news-1.onair`):
//!   XMLTV asks for ids shaped like domain names. The playlist's `tvg-id`
//!   is the same id, which is how apps join the two.
//! - Both carry a weak `ETag` (a conditional request gets 304) and a
//!   `Cache-Control: public, max-age`, and are served gzip when the client
//!   accepts it.
//!
//! The pieces: `settings`; `xmltv` (the guide); `m3u` (the playlist);
//! `broadcast_day` (which days the guide covers); `cache` (the last guide
//! written, ETags and caching headers); `media` (the calls to the media
//! service). This module holds the routes.

mod broadcast_day;
mod cache;
mod m3u;
mod media;
mod settings;
mod xmltv;

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use onair_kit::clock::Clock;
use onair_kit::metrics::Registry;
use onair_kit::telemetry::TraceContext;
use onair_proto::ServiceChannel;

pub use self::settings::{IptvSettings, IptvSettingsError, MAX_EPG_DAYS};

use self::broadcast_day::guide_ranges;
use self::cache::{GuideCache, cacheable, cacheable_as};
use self::m3u::{public_base_url, write_playlist};
use self::media::MediaReader;
use crate::guard;

const EPG_PROGRAMMES: &str = "onair_iptv_epg_programmes";
const EPG_PROGRAMMES_HELP: &str = "Programmes in the last XMLTV guide built.";
const EPG_BYTES: &str = "onair_iptv_epg_bytes";
const EPG_BYTES_HELP: &str = "Size of the last XMLTV guide built, before compression, in bytes.";
const PLAYLIST_CHANNELS: &str = "onair_iptv_playlist_channels";
const PLAYLIST_CHANNELS_HELP: &str = "Channels in the last M3U playlist built.";

/// The IPTV routes' shared state.
struct Iptv {
    media: MediaReader,
    clock: Clock,
    settings: IptvSettings,
    metrics: Registry,
    /// The guide as last written.
    guides: GuideCache,
}

/// The routes `/iptv/channels.m3u` and `/iptv/epg.xml`, reaching the media
/// service through `media`.
pub fn router(
    media: ServiceChannel,
    clock: Clock,
    settings: IptvSettings,
    metrics: Registry,
) -> axum::Router {
    let state = Arc::new(Iptv {
        media: MediaReader::new(media, &settings),
        clock,
        settings,
        metrics,
        guides: GuideCache::default(),
    });
    // The guide is large and very repetitive; the fastest level shrinks it
    // about tenfold at a fraction of the default level's CPU.
    let compression = tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .quality(tower_http::CompressionLevel::Fastest);
    axum::Router::new()
        .route("/iptv/channels.m3u", axum::routing::get(channels_m3u))
        .route("/iptv/epg.xml", axum::routing::get(epg_xml))
        .with_state(state)
        .layer(compression)
        .layer(axum::middleware::from_fn(guard::request_id))
}

async fn channels_m3u(State(iptv): State<Arc<Iptv>>, uri: Uri, headers: HeaderMap) -> Response {
    let context = TraceContext::from_traceparent(traceparent(&headers));
    context.scope(iptv.playlist(uri, headers)).await
}

async fn epg_xml(State(iptv): State<Arc<Iptv>>, headers: HeaderMap) -> Response {
    let context = TraceContext::from_traceparent(traceparent(&headers));
    context.scope(iptv.guide(headers)).await
}

fn traceparent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
}

impl Iptv {
    async fn playlist(&self, uri: Uri, headers: HeaderMap) -> Response {
        let base = match public_base_url(&headers, &uri) {
            Ok(base) => base,
            Err(reason) => {
                return crate::errors::status_response(
                    tonic::Code::InvalidArgument,
                    &reason,
                    StatusCode::BAD_REQUEST,
                );
            }
        };
        let channels = match self.media.all_channels(&headers).await {
            Ok(channels) => channels,
            Err(status) => return error_response(&status),
        };
        self.metrics.gauge_set(
            PLAYLIST_CHANNELS,
            PLAYLIST_CHANNELS_HELP,
            &[],
            i64::try_from(channels.len()).unwrap_or(i64::MAX),
        );
        let body = write_playlist(&base, &channels, &self.settings.xmltv_domain);
        let mut response = cacheable(
            &headers,
            body.into_bytes(),
            "audio/x-mpegurl",
            self.settings.max_age,
        );
        // The URLs inside depend on the address the client used.
        response.headers_mut().insert(
            http::header::VARY,
            HeaderValue::from_static("Host, X-Forwarded-Host, X-Forwarded-Proto"),
        );
        response
    }

    async fn guide(&self, headers: HeaderMap) -> Response {
        let ranges = match guide_ranges(self.clock.now_ms(), &self.settings) {
            Ok(ranges) => ranges,
            Err(reason) => {
                return crate::errors::status_response(
                    tonic::Code::Internal,
                    &reason,
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        };
        let calls = ranges
            .iter()
            .map(|&(start, end)| self.media.timetable(&headers, start, end));
        let timetables = match futures::future::try_join_all(calls).await {
            Ok(timetables) => timetables,
            Err(status) => return error_response(&status),
        };
        let guide = match self
            .guides
            .guide_of(timetables, &self.settings.xmltv_domain)
            .await
        {
            Ok(guide) => guide,
            Err(reason) => {
                return crate::errors::status_response(
                    tonic::Code::Internal,
                    &format!("cannot write the guide: {reason}"),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        };
        self.metrics.gauge_set(
            EPG_PROGRAMMES,
            EPG_PROGRAMMES_HELP,
            &[],
            i64::try_from(guide.programmes).unwrap_or(i64::MAX),
        );
        self.metrics.gauge_set(
            EPG_BYTES,
            EPG_BYTES_HELP,
            &[],
            i64::try_from(guide.xml.len()).unwrap_or(i64::MAX),
        );
        cacheable_as(
            &headers,
            guide.xml.clone(),
            &guide.etag,
            "application/xml",
            self.settings.max_age,
        )
    }
}

fn error_response(status: &tonic::Status) -> Response {
    let http_status = onair_kit::error::http_status_of(status.code());
    crate::errors::status_response(status.code(), status.message(), http_status)
}
