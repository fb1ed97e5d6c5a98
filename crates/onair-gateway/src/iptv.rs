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

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use onair_kit::clock::Clock;
use onair_kit::metrics::Registry;
use onair_kit::telemetry::TraceContext;
use onair_proto::ServiceChannel;
use onair_proto::clients::MediaClient;
use onair_proto::media::v1 as pb;
use prost::Message as _;
use tonic::codec::{Codec, EncodeBuf, Encoder};

use crate::codec::RawDecoder;
use crate::protection;

/// How many channels one `ListChannels` page asks for (the service's most).
const CHANNEL_PAGE_SIZE: i32 = 1000;
/// The most broadcast days a guide may cover; the media service answers a
/// timetable of at most 31 days.
pub const MAX_EPG_DAYS: u32 = 31;
/// The most broadcast days one timetable call of the guide covers: a week is
/// one call, and no call nears the media service's longest range.
const GUIDE_DAYS_PER_CALL: u32 = 7;

const EPG_PROGRAMMES: &str = "onair_iptv_epg_programmes";
const EPG_PROGRAMMES_HELP: &str = "Programmes in the last XMLTV guide built.";
const EPG_BYTES: &str = "onair_iptv_epg_bytes";
const EPG_BYTES_HELP: &str = "Size of the last XMLTV guide built, before compression, in bytes.";
const PLAYLIST_CHANNELS: &str = "onair_iptv_playlist_channels";
const PLAYLIST_CHANNELS_HELP: &str = "Channels in the last M3U playlist built.";

/// Why IPTV settings are refused.
#[derive(Debug, thiserror::Error)]
pub enum IptvSettingsError {
    #[error("unknown time zone {0:?}: use an IANA name such as \"Asia/Tokyo\" or \"UTC\"")]
    UnknownTimeZone(String),
    #[error("broadcast day start {0:?} is not a time of day: use HH:MM such as \"05:00\"")]
    InvalidDayStart(String),
    #[error("epg_days {0} is out of range: use 1 to {MAX_EPG_DAYS}")]
    EpgDaysOutOfRange(u32),
    #[error(
        "xmltv_domain {0:?} is not a domain name: use letters, digits and hyphens in dot-separated labels, e.g. \"tv.example.com\""
    )]
    InvalidXmltvDomain(String),
}

/// What the IPTV exports need to know about the station.
#[derive(Debug, Clone)]
pub struct IptvSettings {
    /// The station's time zone: the guide starts at the beginning of the
    /// broadcast day on air now, counted in it.
    pub time_zone: TimeZone,
    /// When a broadcast day starts, after local midnight.
    pub broadcast_day_start: Duration,
    /// How many broadcast days the guide covers.
    pub epg_days: u32,
    /// Appended to channel ids to make XMLTV channel ids (`news-1.onair`).
    pub xmltv_domain: String,
    /// How long clients and proxies may reuse a playlist or guide without
    /// asking again.
    pub max_age: Duration,
    /// How long one call to the media service may take.
    pub request_timeout: Duration,
    /// The largest timetable (up to a week of the whole station) read from
    /// the media service, in bytes.
    pub max_timetable_bytes: usize,
}

impl IptvSettings {
    /// Settings for a station in `time_zone` (an IANA name) whose broadcast
    /// day starts at `broadcast_day_start` (`HH:MM`), with a guide of
    /// `epg_days` days and XMLTV ids under `xmltv_domain`.
    pub fn for_station(
        time_zone: &str,
        broadcast_day_start: &str,
        epg_days: u32,
        xmltv_domain: &str,
    ) -> Result<IptvSettings, IptvSettingsError> {
        let zone = TimeZone::get(time_zone)
            .map_err(|_| IptvSettingsError::UnknownTimeZone(time_zone.to_owned()))?;
        let day_start: jiff::civil::Time = broadcast_day_start
            .trim()
            .parse()
            .map_err(|_| IptvSettingsError::InvalidDayStart(broadcast_day_start.to_owned()))?;
        let day_start_seconds = u64::from(day_start.hour().unsigned_abs()) * 3600
            + u64::from(day_start.minute().unsigned_abs()) * 60
            + u64::from(day_start.second().unsigned_abs());
        if epg_days == 0 || epg_days > MAX_EPG_DAYS {
            return Err(IptvSettingsError::EpgDaysOutOfRange(epg_days));
        }
        if !is_domain_name(xmltv_domain) {
            return Err(IptvSettingsError::InvalidXmltvDomain(
                xmltv_domain.to_owned(),
            ));
        }
        Ok(IptvSettings {
            time_zone: zone,
            broadcast_day_start: Duration::from_secs(day_start_seconds),
            epg_days,
            xmltv_domain: xmltv_domain.to_owned(),
            max_age: Duration::from_secs(300),
            request_timeout: Duration::from_secs(15),
            max_timetable_bytes: 256 * 1024 * 1024,
        })
    }
}

/// Dot-separated labels of ASCII letters, digits and hyphens: the shape
/// XMLTV wants after a channel id.
fn is_domain_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

/// The IPTV routes' shared state.
struct Iptv {
    media: MediaClient,
    /// The same service, for calls whose answers are kept as bytes.
    media_channel: ServiceChannel,
    clock: Clock,
    settings: IptvSettings,
    metrics: Registry,
    /// The guide as last written; see [`WrittenGuide`].
    last_guide: Mutex<Option<Arc<WrittenGuide>>>,
}

/// The guide as last written, with the timetables it was written from. The
/// media service caches timetables, so while the schedule does not change it
/// answers with the same bytes, and the same guide is sent again without
/// decoding or writing anything: a week of a station is megabytes of XML.
/// One guide is kept (the timetables and the XML: about 11 MB for 50
/// channels).
struct WrittenGuide {
    timetables: Vec<Bytes>,
    xml: Bytes,
    etag: String,
    programmes: usize,
}

impl WrittenGuide {
    fn write(timetables: Vec<Bytes>, xmltv_domain: &str) -> Result<WrittenGuide, String> {
        let mut decoded = Vec::with_capacity(timetables.len());
        for timetable in &timetables {
            let timetable = pb::Timetable::decode(timetable.clone())
                .map_err(|error| format!("cannot decode a timetable: {error}"))?;
            decoded.push(timetable);
        }
        let guide = write_guide(&decoded, xmltv_domain);
        let xml = Bytes::from(guide.xml);
        Ok(WrittenGuide {
            timetables,
            etag: weak_etag(&xml),
            xml,
            programmes: guide.programmes,
        })
    }
}

/// Sends a `GetTimetableRequest` and hands back the answer undecoded.
#[derive(Clone, Copy, Default)]
struct RawTimetableCodec;

struct TimetableRequestEncoder;

impl Codec for RawTimetableCodec {
    type Encode = pb::GetTimetableRequest;
    type Decode = Bytes;
    type Encoder = TimetableRequestEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        TimetableRequestEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for TimetableRequestEncoder {
    type Item = pb::GetTimetableRequest;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Self::Item,
        destination: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        item.encode(destination)
            .map_err(|error| tonic::Status::internal(format!("cannot encode the request: {error}")))
    }
}

/// The routes `/iptv/channels.m3u` and `/iptv/epg.xml`, reaching the media
/// service through `media`.
pub fn router(
    media: ServiceChannel,
    clock: Clock,
    settings: IptvSettings,
    metrics: Registry,
) -> axum::Router {
    let client =
        MediaClient::new(media.clone()).max_decoding_message_size(settings.max_timetable_bytes);
    let state = Arc::new(Iptv {
        media: client,
        media_channel: media,
        clock,
        settings,
        metrics,
        last_guide: Mutex::new(None),
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
        .layer(axum::middleware::from_fn(protection::request_id))
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
                return crate::status_response(
                    tonic::Code::InvalidArgument,
                    &reason,
                    StatusCode::BAD_REQUEST,
                );
            }
        };
        let channels = match self.all_channels(&headers).await {
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
        let mut response = self.cacheable(&headers, body.into_bytes(), "audio/x-mpegurl");
        // The URLs inside depend on the address the client used.
        response.headers_mut().insert(
            http::header::VARY,
            HeaderValue::from_static("Host, X-Forwarded-Host, X-Forwarded-Proto"),
        );
        response
    }

    async fn guide(&self, headers: HeaderMap) -> Response {
        let ranges = match self.guide_ranges() {
            Ok(ranges) => ranges,
            Err(reason) => {
                return crate::status_response(
                    tonic::Code::Internal,
                    &reason,
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        };
        let calls = ranges
            .iter()
            .map(|&(start, end)| self.timetable(&headers, start, end));
        let timetables = match futures::future::try_join_all(calls).await {
            Ok(timetables) => timetables,
            Err(status) => return error_response(&status),
        };
        let guide = match self.guide_of(timetables).await {
            Ok(guide) => guide,
            Err(reason) => {
                return crate::status_response(
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
        self.cacheable_as(&headers, guide.xml.clone(), &guide.etag, "application/xml")
    }

    /// The guide of these timetables: the last one written if it was written
    /// from the same bytes, else a new one, written off the async workers (it
    /// takes tens of milliseconds).
    async fn guide_of(&self, timetables: Vec<Bytes>) -> Result<Arc<WrittenGuide>, String> {
        let last = self
            .last_guide
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(last) = last
            && last.timetables == timetables
        {
            return Ok(last);
        }
        let domain = self.settings.xmltv_domain.clone();
        let written = tokio::task::spawn_blocking(move || WrittenGuide::write(timetables, &domain))
            .await
            .map_err(|error| error.to_string())??;
        let written = Arc::new(written);
        *self
            .last_guide
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(written.clone());
        Ok(written)
    }

    /// The time ranges the guide reads: from the start of the broadcast day on
    /// air now to the end of the guide's last day, cut into ranges of at most
    /// [`GUIDE_DAYS_PER_CALL`] broadcast days. Days are counted in the
    /// station's time zone, so a day across a clock change is 23 or 25 hours.
    fn guide_ranges(&self) -> Result<Vec<(jiff::Timestamp, jiff::Timestamp)>, String> {
        let now = jiff::Timestamp::from_millisecond(self.clock.now_ms())
            .map_err(|error| format!("the clock is out of range: {error}"))?;
        let day_start = self.settings.broadcast_day_start;
        let zone = &self.settings.time_zone;
        let first = broadcast_day_of(now, zone, day_start)?;
        let mut ranges = Vec::new();
        let mut day = first;
        let mut left = self.settings.epg_days;
        while left > 0 {
            let days = left.min(GUIDE_DAYS_PER_CALL);
            let next = day
                .checked_add(jiff::Span::new().days(i64::from(days)))
                .map_err(|error| format!("the guide runs past the calendar: {error}"))?;
            ranges.push((
                day_start_instant(day, zone, day_start)?,
                day_start_instant(next, zone, day_start)?,
            ));
            day = next;
            left -= days;
        }
        Ok(ranges)
    }

    /// Every channel, by number, following the list's pages.
    async fn all_channels(&self, headers: &HeaderMap) -> Result<Vec<pb::Channel>, tonic::Status> {
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
    async fn timetable(
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
            .max_decoding_message_size(self.settings.max_timetable_bytes);
        grpc.ready().await.map_err(|error| {
            tonic::Status::unavailable(format!("the media service is unavailable: {error}"))
        })?;
        let path =
            http::uri::PathAndQuery::from_static("/onair.media.v1.MediaService/GetTimetable");
        Ok(grpc
            .unary(request, path, RawTimetableCodec)
            .await?
            .into_inner())
    }

    /// A request to the media service with the client's credentials and
    /// request id (the guide is public, but a broken credential is refused
    /// as everywhere else) and the gateway's deadline.
    fn request<T>(&self, headers: &HeaderMap, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.settings.request_timeout);
        for name in ["authorization", protection::REQUEST_ID] {
            if let Some(value) = headers.get(name)
                && let Ok(text) = value.to_str()
                && let Ok(value) = text.parse()
            {
                request.metadata_mut().insert(name, value);
            }
        }
        request
    }

    /// A 200 with caching headers, or a 304 when the client already holds
    /// this body.
    fn cacheable(
        &self,
        headers: &HeaderMap,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Response {
        let etag = weak_etag(&body);
        self.cacheable_as(headers, Bytes::from(body), &etag, content_type)
    }

    /// As [`Iptv::cacheable`], for a body whose tag is known.
    fn cacheable_as(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        etag: &str,
        content_type: &'static str,
    ) -> Response {
        let cache_control = format!("public, max-age={}", self.settings.max_age.as_secs());
        let mut response = if holds_current(headers, etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = body.into_response();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
            response
        };
        let response_headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(etag) {
            response_headers.insert(http::header::ETAG, value);
        }
        if let Ok(value) = HeaderValue::from_str(&cache_control) {
            response_headers.insert(http::header::CACHE_CONTROL, value);
        }
        response
    }
}

/// The broadcast day on air at `now`: the local date of `now` less the day
/// start, so that 01:30 belongs to the day before when days start at 05:00.
fn broadcast_day_of(
    now: jiff::Timestamp,
    zone: &TimeZone,
    day_start: Duration,
) -> Result<Date, String> {
    let local = zone.to_datetime(now);
    let day_start = jiff::SignedDuration::try_from(day_start)
        .map_err(|error| format!("the broadcast day start is out of range: {error}"))?;
    let shifted = local
        .checked_sub(day_start)
        .map_err(|error| format!("the broadcast day is out of range: {error}"))?;
    Ok(shifted.date())
}

/// When broadcast day `day` starts: its date at the day start, in `zone`
/// (the earlier of two such instants when clocks go back, the first after a
/// gap when they go forward).
fn day_start_instant(
    day: Date,
    zone: &TimeZone,
    day_start: Duration,
) -> Result<jiff::Timestamp, String> {
    let day_start = jiff::SignedDuration::try_from(day_start)
        .map_err(|error| format!("the broadcast day start is out of range: {error}"))?;
    let local = day
        .to_datetime(jiff::civil::Time::midnight())
        .checked_add(day_start)
        .map_err(|error| format!("broadcast day {day} is out of range: {error}"))?;
    zone.to_ambiguous_timestamp(local)
        .compatible()
        .map_err(|error| format!("broadcast day {day} has no start in the time zone: {error}"))
}

fn error_response(status: &tonic::Status) -> Response {
    let http_status = onair_kit::error::http_status_of(status.code());
    crate::status_response(status.code(), status.message(), http_status)
}

/// A weak validator of a body: FNV-1a over its 64-bit words, and its
/// length, so that equal bodies give equal tags on every replica and in every
/// version. Word by word, a week's guide (megabytes) hashes in about a
/// millisecond; a validator needs to tell versions apart, not resist attacks.
fn weak_etag(body: &[u8]) -> String {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET_BASIS;
    let mut words = body.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        hash ^= u64::from_le_bytes(bytes);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    for byte in words.remainder() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    format!("W/\"{hash:016x}-{:x}\"", body.len())
}

/// Whether `If-None-Match` names this tag (weak comparison) or `*`.
fn holds_current(headers: &HeaderMap, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let wanted = opaque(etag);
    headers
        .get_all(http::header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == wanted)
}

/// The scheme and host clients reach this station at, e.g.
/// `https://tv.example.com`: a proxy's `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the first value of each), else the request's own
/// `Host` and plain HTTP.
fn public_base_url(headers: &HeaderMap, uri: &Uri) -> Result<String, String> {
    let scheme = match first_value(headers, "x-forwarded-proto")? {
        Some(scheme) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(format!("X-Forwarded-Proto {scheme:?} is not http or https"));
            }
            scheme
        }
        None => "http".to_owned(),
    };
    let host = match first_value(headers, "x-forwarded-host")? {
        Some(host) => host,
        None => match first_value(headers, "host")? {
            Some(host) => host,
            None => match uri.authority() {
                Some(authority) => authority.as_str().to_owned(),
                None => {
                    return Err(
                        "the request names no host (Host header), so the playlist's URLs cannot be made"
                            .to_owned(),
                    );
                }
            },
        },
    };
    if !is_host(&host) {
        return Err(format!(
            "host {host:?} is not a host name or address with an optional port"
        ));
    }
    Ok(format!("{scheme}://{host}"))
}

/// The first comma-separated value of a header, trimmed; None when absent.
fn first_value(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| format!("the {name} header is not ASCII text"))?;
    let first = text.split(',').next().unwrap_or_default().trim();
    if first.is_empty() {
        return Ok(None);
    }
    Ok(Some(first.to_owned()))
}

/// A host as URLs carry it: a name, an IPv4 address or a bracketed IPv6
/// address, with an optional port. Nothing that could break out of a URL or
/// a playlist line.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 300
        && host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b".-:[]_".contains(&byte))
}

/// Percent-encodes everything but unreserved characters, for a path segment.
fn path_segment(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// A channel's XMLTV id, also its playlist `tvg-id`.
fn xmltv_id(channel_id: &str, domain: &str) -> String {
    format!("{channel_id}.{domain}")
}

/// M3U has no escaping: a value inside quotes loses its quotes, and nothing
/// may break the line, not even what only some parsers split lines at (NEL,
/// U+2028, U+2029). The media service refuses those in names already; this
/// holds for whatever is stored from before.
fn m3u_attribute(text: &str) -> String {
    text.chars()
        .map(|character| match character {
            '"' => '\'',
            character if onair_kit::input::breaks_line(character) => ' ',
            character => character,
        })
        .collect()
}

/// The text after `#EXTINF:…,`: one line.
fn m3u_title(text: &str) -> String {
    text.chars()
        .map(|character| {
            if onair_kit::input::breaks_line(character) {
                ' '
            } else {
                character
            }
        })
        .collect()
}

/// The extended M3U playlist of every channel, by number.
fn write_playlist(base: &str, channels: &[pb::Channel], xmltv_domain: &str) -> String {
    let guide_url = format!("{base}/iptv/epg.xml");
    let mut playlist = String::with_capacity(128 + channels.len() * 256);
    let _ = writeln!(
        playlist,
        "#EXTM3U url-tvg=\"{guide_url}\" x-tvg-url=\"{guide_url}\""
    );
    for channel in channels {
        let id = xmltv_id(&channel.id, xmltv_domain);
        let _ = write!(
            playlist,
            "#EXTINF:-1 tvg-id=\"{}\" tvg-chno=\"{}\" tvg-name=\"{}\"",
            m3u_attribute(&id),
            channel.number,
            m3u_attribute(&channel.name)
        );
        if !channel.logo_url.is_empty() {
            let _ = write!(
                playlist,
                " tvg-logo=\"{}\"",
                m3u_attribute(&channel.logo_url)
            );
        }
        if !channel.group.is_empty() {
            let _ = write!(
                playlist,
                " group-title=\"{}\"",
                m3u_attribute(&channel.group)
            );
        }
        let _ = writeln!(playlist, ",{}", m3u_title(&channel.name));
        let _ = writeln!(
            playlist,
            "{base}/hls/{}/master.m3u8",
            path_segment(&channel.id)
        );
    }
    playlist
}

/// An XMLTV document and how many programmes it lists.
struct Guide {
    xml: String,
    programmes: usize,
}

/// Roughly how many bytes one programme takes, to size the buffer once.
const PROGRAMME_BYTES: usize = 480;

/// The XMLTV guide of consecutive timetables: every channel, then every
/// programme by channel and start. A slot that crosses from one day into the
/// next is listed once.
fn write_guide(timetables: &[pb::Timetable], xmltv_domain: &str) -> Guide {
    let entries: usize = timetables
        .iter()
        .flat_map(|timetable| timetable.channels.iter())
        .map(|channel| channel.entries.len())
        .sum();
    let mut xml = String::with_capacity(1024 + entries * PROGRAMME_BYTES);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str("<!DOCTYPE tv SYSTEM \"xmltv.dtd\">\n");
    xml.push_str("<tv generator-info-name=\"onair\">\n");

    // Every day lists every channel, in the same order.
    let channels: Vec<&pb::Channel> = timetables
        .first()
        .map(|timetable| {
            timetable
                .channels
                .iter()
                .filter_map(|channel| channel.channel.as_ref())
                .collect()
        })
        .unwrap_or_default();
    for channel in &channels {
        write_channel(&mut xml, channel, xmltv_domain);
    }

    let days: Vec<HashMap<&str, &pb::ChannelTimetable>> = timetables
        .iter()
        .map(|timetable| {
            timetable
                .channels
                .iter()
                .filter_map(|day| Some((day.channel.as_ref()?.id.as_str(), day)))
                .collect()
        })
        .collect();
    // Every channel's slots start at the same few instants: each is written
    // out once.
    let mut times = XmltvTimes::default();
    let mut programmes = 0;
    for channel in &channels {
        let id = xmltv_id(&channel.id, xmltv_domain);
        let mut listed: HashSet<&str> = HashSet::new();
        for day in &days {
            let Some(day) = day.get(channel.id.as_str()) else {
                continue;
            };
            for entry in &day.entries {
                let (Some(slot), Some(program)) = (&entry.slot, &entry.program) else {
                    continue;
                };
                if !listed.insert(slot.id.as_str()) {
                    continue;
                }
                write_programme(&mut xml, &mut times, &id, slot, program);
                programmes += 1;
            }
        }
    }
    xml.push_str("</tv>\n");
    Guide { xml, programmes }
}

fn write_channel(xml: &mut String, channel: &pb::Channel, xmltv_domain: &str) {
    xml.push_str("  <channel id=\"");
    escape_xml(xml, &xmltv_id(&channel.id, xmltv_domain));
    xml.push_str("\">\n    <display-name>");
    escape_xml(xml, &channel.name);
    xml.push_str("</display-name>\n");
    let _ = writeln!(xml, "    <display-name>{}</display-name>", channel.number);
    if !channel.logo_url.is_empty() {
        xml.push_str("    <icon src=\"");
        escape_xml(xml, &channel.logo_url);
        xml.push_str("\"/>\n");
    }
    xml.push_str("  </channel>\n");
}

/// One programme, its elements in the order the XMLTV DTD requires.
fn write_programme(
    xml: &mut String,
    times: &mut XmltvTimes,
    channel_id: &str,
    slot: &pb::Slot,
    program: &pb::Program,
) {
    xml.push_str("  <programme start=\"");
    xml.push_str(times.get(slot.start_time.as_ref()));
    xml.push_str("\" stop=\"");
    xml.push_str(times.get(slot.end_time.as_ref()));
    xml.push_str("\" channel=\"");
    escape_xml(xml, channel_id);
    xml.push_str("\">\n    <title>");
    escape_xml(xml, &program.title);
    xml.push_str("</title>\n");
    if !program.description.trim().is_empty() {
        xml.push_str("    <desc>");
        escape_xml(xml, &program.description);
        xml.push_str("</desc>\n");
    }
    for genre in &program.genres {
        xml.push_str("    <category>");
        escape_xml(xml, genre);
        xml.push_str("</category>\n");
    }
    if !program.artwork_url.is_empty() {
        xml.push_str("    <icon src=\"");
        escape_xml(xml, &program.artwork_url);
        xml.push_str("\"/>\n");
    }
    if !slot.repeat_of_slot_id.is_empty() {
        xml.push_str("    <previously-shown/>\n");
    }
    if !program.rating.is_empty() {
        xml.push_str("    <rating>\n      <value>");
        escape_xml(xml, &program.rating);
        xml.push_str("</value>\n    </rating>\n");
    }
    xml.push_str("  </programme>\n");
}

/// Instants written in XMLTV's format, by unix second.
#[derive(Default)]
struct XmltvTimes {
    written: HashMap<i64, String>,
}

impl XmltvTimes {
    fn get(&mut self, time: Option<&prost_types::Timestamp>) -> &str {
        let seconds = time.map(|time| time.seconds).unwrap_or_default();
        self.written.entry(seconds).or_insert_with(|| {
            let mut text = String::with_capacity(20);
            write_xmltv_time(&mut text, time);
            text
        })
    }
}

/// `YYYYMMDDhhmmss +0000`, XMLTV's time format, in UTC.
fn write_xmltv_time(xml: &mut String, time: Option<&prost_types::Timestamp>) {
    let seconds = time.map(|time| time.seconds).unwrap_or_default();
    let instant = jiff::Timestamp::from_second(seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let civil = TimeZone::UTC.to_datetime(instant);
    let _ = write!(
        xml,
        "{:04}{:02}{:02}{:02}{:02}{:02} +0000",
        civil.year(),
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second()
    );
}

/// Escapes text for XML content and attribute values, and leaves out the
/// characters XML 1.0 cannot carry at all (most control characters).
fn escape_xml(xml: &mut String, text: &str) {
    // Most text has nothing to escape: copied at once.
    if !text.bytes().any(needs_care) {
        xml.push_str(text);
        return;
    }
    for character in text.chars() {
        match character {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            '"' => xml.push_str("&quot;"),
            '\'' => xml.push_str("&apos;"),
            '\t' | '\n' | '\r' => xml.push(character),
            character if is_xml_char(character) => xml.push(character),
            _ => {}
        }
    }
}

/// Whether a byte of UTF-8 text may need escaping or leaving out: markup,
/// control characters, and the first byte of U+FFFE and U+FFFF.
fn needs_care(byte: u8) -> bool {
    matches!(byte, b'&' | b'<' | b'>' | b'"' | b'\'' | 0xEF)
        || (byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r'))
}

/// XML 1.0's `Char` production, less the whitespace controls handled above.
fn is_xml_char(character: char) -> bool {
    matches!(character,
        '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp(seconds: i64) -> prost_types::Timestamp {
        prost_types::Timestamp { seconds, nanos: 0 }
    }

    #[test]
    fn xml_escaping_covers_markup_and_drops_what_xml_cannot_carry() {
        let mut xml = String::new();
        escape_xml(&mut xml, "Tom & Jerry <\"live\"> 'now'\u{1}\u{FFFE}\n日本");
        assert_eq!(
            xml,
            "Tom &amp; Jerry &lt;&quot;live&quot;&gt; &apos;now&apos;\n日本"
        );
    }

    #[test]
    fn xmltv_times_are_utc_with_an_offset() {
        let mut xml = String::new();
        // 2025-04-01T05:00:00+09:00
        write_xmltv_time(&mut xml, Some(&timestamp(1_743_451_200)));
        assert_eq!(xml, "20250331200000 +0000");
    }

    #[test]
    fn the_broadcast_day_before_the_day_start_is_yesterday() {
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        let five = Duration::from_secs(5 * 3600);
        // 01:30 on April 2nd in Tokyo belongs to April 1st's broadcast day.
        let late: jiff::Timestamp = "2025-04-01T16:30:00Z".parse().unwrap();
        assert_eq!(
            broadcast_day_of(late, &tokyo, five).unwrap().to_string(),
            "2025-04-01"
        );
        // 05:00 starts April 2nd's.
        let morning: jiff::Timestamp = "2025-04-01T20:00:00Z".parse().unwrap();
        assert_eq!(
            broadcast_day_of(morning, &tokyo, five).unwrap().to_string(),
            "2025-04-02"
        );
    }

    #[test]
    fn the_public_address_comes_from_the_proxy_headers_or_host() {
        let uri: Uri = "/iptv/channels.m3u".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(
            public_base_url(&headers, &uri).unwrap(),
            "http://127.0.0.1:8080"
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https, http"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("tv.example.com, proxy.internal"),
        );
        assert_eq!(
            public_base_url(&headers, &uri).unwrap(),
            "https://tv.example.com"
        );
        headers.insert("x-forwarded-host", HeaderValue::from_static("a\"b"));
        assert!(public_base_url(&headers, &uri).is_err());
        headers.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        assert!(public_base_url(&headers, &uri).is_err());
        assert!(public_base_url(&HeaderMap::new(), &uri).is_err());
    }

    #[test]
    fn playlist_lines_split_nowhere_but_at_their_ends() {
        let channel = pb::Channel {
            id: "news-1".to_owned(),
            number: 7,
            name: "News\u{2028}#EXTINF:-1,Fake\u{2029}http://evil/\u{85}x".to_owned(),
            logo_url: "https://example.com/\u{2028}logo.png".to_owned(),
            group: "News\u{2029}".to_owned(),
            ..pb::Channel::default()
        };
        let playlist = write_playlist("http://tv", &[channel], "onair");
        assert!(
            !playlist.contains(['\u{85}', '\u{2028}', '\u{2029}', '\r']),
            "{playlist:?}"
        );
        assert_eq!(playlist.lines().count(), 3, "{playlist}");
    }

    #[test]
    fn playlist_values_cannot_break_their_quotes_or_lines() {
        let channel = pb::Channel {
            id: "news-1".to_owned(),
            number: 7,
            name: "The \"Best\"\nNews".to_owned(),
            logo_url: "https://example.com/logo.png".to_owned(),
            group: "News".to_owned(),
            ..pb::Channel::default()
        };
        let playlist = write_playlist("http://tv", &[channel], "onair");
        let lines: Vec<&str> = playlist.lines().collect();
        assert_eq!(
            lines,
            [
                "#EXTM3U url-tvg=\"http://tv/iptv/epg.xml\" x-tvg-url=\"http://tv/iptv/epg.xml\"",
                "#EXTINF:-1 tvg-id=\"news-1.onair\" tvg-chno=\"7\" tvg-name=\"The 'Best' News\" tvg-logo=\"https://example.com/logo.png\" group-title=\"News\",The \"Best\" News",
                "http://tv/hls/news-1/master.m3u8",
            ]
        );
    }

    #[test]
    fn a_slot_across_two_days_is_listed_once() {
        let channel = pb::Channel {
            id: "news".to_owned(),
            number: 1,
            name: "News".to_owned(),
            ..pb::Channel::default()
        };
        let entry = pb::TimetableEntry {
            slot: Some(pb::Slot {
                id: "late".to_owned(),
                channel_id: "news".to_owned(),
                start_time: Some(timestamp(86_400 - 1800)),
                end_time: Some(timestamp(86_400 + 1800)),
                ..pb::Slot::default()
            }),
            program: Some(pb::Program {
                title: "Late News".to_owned(),
                ..pb::Program::default()
            }),
        };
        let day = pb::Timetable {
            channels: vec![pb::ChannelTimetable {
                channel: Some(channel),
                entries: vec![entry],
            }],
            ..pb::Timetable::default()
        };
        let guide = write_guide(&[day.clone(), day], "onair");
        assert_eq!(guide.programmes, 1);
        assert_eq!(guide.xml.matches("<programme ").count(), 1);
        assert!(guide.xml.contains("<channel id=\"news.onair\">"));
    }

    #[test]
    fn conditional_requests_match_weak_tags() {
        let etag = weak_etag(b"guide");
        let mut headers = HeaderMap::new();
        assert!(!holds_current(&headers, &etag));
        headers.insert(
            http::header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", {}", etag.trim_start_matches("W/")))
                .unwrap(),
        );
        assert!(holds_current(&headers, &etag));
        assert_ne!(weak_etag(b"guide"), weak_etag(b"guide2"));
    }

    #[test]
    fn settings_refuse_what_xmltv_or_the_media_service_cannot_take() {
        assert!(IptvSettings::for_station("Asia/Tokyo", "05:00", 7, "onair").is_ok());
        assert!(IptvSettings::for_station("Mars/Base", "05:00", 7, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "25:00", 7, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 0, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 32, "onair").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 7, "tv..example").is_err());
        assert!(IptvSettings::for_station("UTC", "00:00", 7, "tv.example.com").is_ok());
    }
}
