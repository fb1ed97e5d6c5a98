//! Caching of the exports: the guide as last written, sent again while the
//! timetables it was written from are unchanged, and the validators and
//! headers (`ETag`, `304 Not Modified`, `Cache-Control`) that let clients and
//! proxies keep a copy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use onair_proto::media::v1 as pb;
use prost::Message as _;

use super::xmltv::write_guide;

/// The guide as last written; see [`WrittenGuide`].
#[derive(Default)]
pub(super) struct GuideCache {
    last_guide: Mutex<Option<Arc<WrittenGuide>>>,
}

impl GuideCache {
    /// The guide of these timetables, with XMLTV ids under `xmltv_domain`: the last one written if it was written
    /// from the same bytes, else a new one, written off the async workers (it
    /// takes tens of milliseconds).
    pub(super) async fn guide_of(
        &self,
        timetables: Vec<Bytes>,
        xmltv_domain: &str,
    ) -> Result<Arc<WrittenGuide>, String> {
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
        let domain = xmltv_domain.to_owned();
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
}

/// The guide as last written, with the timetables it was written from. The
/// media service caches timetables, so while the schedule does not change it
/// answers with the same bytes, and the same guide is sent again without
/// decoding or writing anything: a week of a station is megabytes of XML.
/// One guide is kept (the timetables and the XML: about 11 MB for 50
/// channels).
pub(super) struct WrittenGuide {
    timetables: Vec<Bytes>,
    pub(super) xml: Bytes,
    pub(super) etag: String,
    pub(super) programmes: usize,
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

/// A 200 with caching headers (clients may reuse it for `max_age`), or a
/// 304 when the client already holds this body.
pub(super) fn cacheable(
    headers: &HeaderMap,
    body: Vec<u8>,
    content_type: &'static str,
    max_age: Duration,
) -> Response {
    let etag = weak_etag(&body);
    cacheable_as(headers, Bytes::from(body), &etag, content_type, max_age)
}

/// As [`cacheable`], for a body whose tag is known.
pub(super) fn cacheable_as(
    headers: &HeaderMap,
    body: Bytes,
    etag: &str,
    content_type: &'static str,
    max_age: Duration,
) -> Response {
    let cache_control = format!("public, max-age={}", max_age.as_secs());
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
