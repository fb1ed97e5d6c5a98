//! The playout's HTTP surface, served beside the REST API rather than
//! through gRPC transcoding: players fetch playlists and segments as plain
//! files, and encoders push with PUT.
//!
//! - `GET /hls/{channelId}/master.m3u8`, `GET /hls/{channelId}/{rendition}/index.m3u8`
//!   and the segments below it: the channel's live stream.
//! - `GET /vod/{slotId}/master.m3u8` and below: an aired slot on demand.
//! - `PUT /ingest/{streamKey}/{file}`: live ingest (`DELETE` is accepted and
//!   ignored).
//! - `GET /images/assets/{assetId}/card.jpg` and `GET /images/station/card.jpg`:
//!   an asset's [card](crate::card) and the station's, the pictures of share
//!   pages.
//!
//! Playlists may be cached for half a segment (what CDNs in front of
//! MediaPackage do); segments never change, so they may be cached for long;
//! a card changes only when its asset is transcoded again, so crawlers may
//! keep it for an hour.
//! Every answer allows any origin: players run in web pages elsewhere.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use onair_kit::error::ServiceError;

use crate::card::{STATION_CARD_KEY, card_key};
use crate::error::PlayoutError;
use crate::ingest::{Arrival, IngestError, live_segment_key};
use crate::playout::Playout;
use crate::transcode::segment_key;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const SEGMENT_TYPE: &str = "video/mp2t";
/// How long a segment may be cached: it never changes.
const SEGMENT_CACHE: &str = "public, max-age=86400, immutable";
const CARD_TYPE: &str = "image/jpeg";
/// How long a card may be cached: it changes only on a new transcode.
const CARD_CACHE: &str = "public, max-age=3600";

impl Playout {
    /// `/hls`, `/vod`, `/ingest` and `/images`.
    pub fn router(&self) -> Router {
        router(self.clone())
    }
}

/// The routes, over a running playout.
pub fn router(playout: Playout) -> Router {
    let ingest_limit = playout.settings().ingest_max_bytes;
    let ingest = Router::new()
        .route(
            "/ingest/{key}/{file}",
            axum::routing::put(put_ingest).delete(delete_ingest),
        )
        .layer(DefaultBodyLimit::max(ingest_limit))
        .layer(axum::middleware::from_fn_with_state(
            playout.clone(),
            detached,
        ));
    Router::new()
        .route("/hls/{channel}/master.m3u8", get(live_master))
        .route("/hls/{channel}/{rendition}/index.m3u8", get(live_media))
        .route(
            "/hls/{channel}/{rendition}/a/{asset}/{file}",
            get(asset_segment),
        )
        .route(
            "/hls/{channel}/{rendition}/l/{slot}/{file}",
            get(live_segment),
        )
        .route("/vod/{slot}/master.m3u8", get(replay_master))
        .route("/vod/{slot}/{rendition}/index.m3u8", get(replay_media))
        .route(
            "/vod/{slot}/{rendition}/a/{asset}/{file}",
            get(asset_segment),
        )
        .route(
            "/vod/{slot}/{rendition}/l/{owner}/{file}",
            get(live_segment),
        )
        .route("/images/assets/{asset}/card.jpg", get(asset_card))
        .route("/images/station/card.jpg", get(station_card))
        .merge(ingest)
        .layer(axum::middleware::from_fn(refuse_unstorable_path))
        .with_state(playout)
}

/// Refuses a path with a NUL in it (`%00`, the only way a URI carries one)
/// as the services refuse one in any field: channel and slot ids, stream
/// keys and file names reach the store and the disk.
async fn refuse_unstorable_path(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path.contains("%00") {
        let refusal = onair_kit::input::InputError::Nul {
            field: "the path".to_owned(),
        }
        .to_string();
        return error_response(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            &refusal,
        );
    }
    next.run(request).await
}

/// Stamps an ingest request with its arrival, then runs it to its end even
/// if the encoder hangs up first. ffmpeg closes its connection right after
/// the last chunk of a PUT without waiting for the answer, and the HTTP
/// server then drops the request's future: the segment would be lost
/// half-stored.
async fn detached(
    State(playout): State<Playout>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    request.extensions_mut().insert(playout.ingest().arrival());
    match tokio::spawn(next.run(request)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(error = %error, "an ingest request failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                tonic::Code::Internal,
                "internal error",
            )
        }
    }
}

/// A `google.rpc.Status`-shaped JSON error with the HTTP status of its code.
fn error_response(status: StatusCode, code: tonic::Code, message: &str) -> Response {
    let body = serde_json::json!({
        "code": code as i32,
        "message": message,
        "details": [],
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn playout_error(error: PlayoutError) -> Response {
    let code = error.error_code();
    let message = match code {
        onair_kit::error::ErrorCode::Internal => {
            tracing::error!(error = %error, "playout request failed");
            "internal error".to_owned()
        }
        _ => error.to_string(),
    };
    error_response(code.http_status(), code.grpc_code(), &message)
}

fn not_found(message: String) -> Response {
    error_response(StatusCode::NOT_FOUND, tonic::Code::NotFound, &message)
}

fn with_type(body: Bytes, content_type: &'static str, cache: HeaderValue) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, cache);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn playlist_response(playout: &Playout, body: Bytes) -> Response {
    let cache = HeaderValue::from_str(&format!(
        "public, max-age={}",
        playout.settings().encode.segment_seconds / 2
    ))
    .unwrap_or(HeaderValue::from_static("no-cache"));
    with_type(body, PLAYLIST_TYPE, cache)
}

async fn live_master(State(playout): State<Playout>, Path(channel): Path<String>) -> Response {
    match playout.linear().check_channel(&channel).await {
        Ok(()) => playlist_response(&playout, playout.linear().master()),
        Err(error) => playout_error(error),
    }
}

async fn live_media(
    State(playout): State<Playout>,
    Path((channel, rendition)): Path<(String, String)>,
) -> Response {
    if playout.linear().rendition_index(&rendition).is_none() {
        return not_found(format!(
            "no rendition {rendition:?} in the station's ladder"
        ));
    }
    match playout.linear().media_playlist(&channel).await {
        Ok(body) => playlist_response(&playout, body),
        Err(error) => playout_error(error),
    }
}

async fn replay_master(State(playout): State<Playout>, Path(slot): Path<String>) -> Response {
    match playout.linear().replay_playlist(&slot).await {
        Ok(_) => playlist_response(&playout, playout.linear().master()),
        Err(error) => playout_error(error),
    }
}

async fn replay_media(
    State(playout): State<Playout>,
    Path((slot, rendition)): Path<(String, String)>,
) -> Response {
    if playout.linear().rendition_index(&rendition).is_none() {
        return not_found(format!(
            "no rendition {rendition:?} in the station's ladder"
        ));
    }
    match playout.linear().replay_playlist(&slot).await {
        Ok(body) => playlist_response(&playout, body),
        Err(error) => playout_error(error),
    }
}

/// The segment number of `12.ts`.
fn segment_number(file: &str) -> Option<i64> {
    let number = file.strip_suffix(".ts")?;
    if number.is_empty() || number.len() > 12 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

/// Ids in URLs: what the services accept as ids, nothing that makes a path.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

async fn serve_segment(playout: &Playout, key: Option<String>) -> Response {
    let Some(key) = key else {
        return not_found("no such segment".to_owned());
    };
    match playout.storage().get(&key).await {
        Ok(Some(data)) => with_type(data, SEGMENT_TYPE, HeaderValue::from_static(SEGMENT_CACHE)),
        Ok(None) => not_found("no such segment".to_owned()),
        Err(error) => playout_error(PlayoutError::from(error)),
    }
}

async fn asset_segment(
    State(playout): State<Playout>,
    Path((_owner, rendition, asset, file)): Path<(String, String, String, String)>,
) -> Response {
    let key = (playout.linear().rendition_index(&rendition).is_some() && plain_id(&asset))
        .then(|| segment_number(&file))
        .flatten()
        .map(|index| segment_key(&asset, &rendition, index));
    serve_segment(&playout, key).await
}

async fn live_segment(
    State(playout): State<Playout>,
    Path((_owner, rendition, slot, file)): Path<(String, String, String, String)>,
) -> Response {
    let key = (playout.linear().rendition_index(&rendition).is_some() && plain_id(&slot))
        .then(|| segment_number(&file))
        .flatten()
        .map(|sequence| live_segment_key(&slot, sequence));
    serve_segment(&playout, key).await
}

async fn asset_card(State(playout): State<Playout>, Path(asset): Path<String>) -> Response {
    if !plain_id(&asset) {
        return error_response(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            &format!("asset id {asset:?} is invalid: use 1 to 64 letters, digits, - and _"),
        );
    }
    match playout.storage().get(&card_key(&asset)).await {
        Ok(Some(data)) => with_type(data, CARD_TYPE, HeaderValue::from_static(CARD_CACHE)),
        Ok(None) => missing_card(&playout, &asset).await,
        Err(error) => playout_error(PlayoutError::from(error)),
    }
}

/// Why an asset has no card: there is no such asset, or it has not been
/// transcoded (or its card could not be taken).
async fn missing_card(playout: &Playout, asset: &str) -> Response {
    match playout.store().asset(asset).await {
        Ok(Some(_)) => not_found(format!("asset {asset:?} has no card yet")),
        Ok(None) => playout_error(PlayoutError::asset_not_found(asset)),
        Err(error) => playout_error(error),
    }
}

async fn station_card(State(playout): State<Playout>) -> Response {
    match playout.storage().get(STATION_CARD_KEY).await {
        Ok(Some(data)) => with_type(data, CARD_TYPE, HeaderValue::from_static(CARD_CACHE)),
        Ok(None) => not_found("the station has no card yet".to_owned()),
        Err(error) => playout_error(PlayoutError::from(error)),
    }
}

fn ingest_error(error: IngestError) -> Response {
    match error {
        IngestError::BadPath(message) => error_response(
            StatusCode::BAD_REQUEST,
            tonic::Code::InvalidArgument,
            &message,
        ),
        IngestError::UnknownKey => error_response(
            StatusCode::FORBIDDEN,
            tonic::Code::PermissionDenied,
            "unknown stream key: issue one for the live slot with POST /v1/slots/{slotId}:issueStreamKey",
        ),
        IngestError::SlotOver(message) => error_response(
            StatusCode::BAD_REQUEST,
            tonic::Code::FailedPrecondition,
            &message,
        ),
        IngestError::Playout(error) => playout_error(error),
    }
}

async fn put_ingest(
    State(playout): State<Playout>,
    Path((key, file)): Path<(String, String)>,
    Extension(arrival): Extension<Arrival>,
    body: Bytes,
) -> Response {
    match playout.ingest().put(&key, &file, body, arrival).await {
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(error) => ingest_error(error),
    }
}

async fn delete_ingest(
    State(playout): State<Playout>,
    Path((key, file)): Path<(String, String)>,
) -> Response {
    match playout.ingest().delete(&key, &file).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => ingest_error(error),
    }
}
