//! onair's web app, served by the binary itself: the viewer's TV at `/` and
//! the station console at `/console`, from files built by
//! `scripts/build-web.sh` (`web/`) and embedded at compile time. Nothing is
//! fetched from elsewhere: no CDN, no outside fonts or scripts.
//!
//! - The pages are never kept by caches (`no-cache`): they name the current
//!   scripts and styles.
//! - Scripts and styles under `/assets/` carry a hash of their content in
//!   their names, so browsers keep them for a year (`immutable`).
//! - Every answer carries a Content-Security-Policy that allows no inline
//!   script and no code from another origin.

#![warn(missing_docs)]

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/files.rs"));
}

/// What the app's pages may load: their own scripts, styles and API; video
/// from the station (hls.js feeds it through blob URLs and a worker);
/// pictures from anywhere over http(s) (program artwork).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: https: http:; media-src 'self' blob:; \
     worker-src 'self' blob:; connect-src 'self' ws: wss:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'; object-src 'none'";

/// The embedded file at `path` under the app's root, if there is one.
pub fn file(path: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, bytes)| *bytes)
}

/// The routes `/`, `/console` and `/assets/{file}`.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(|| async { page("index.html") }))
        .route(
            "/console",
            axum::routing::get(|| async { page("console.html") }),
        )
        .route(
            "/assets/{file}",
            axum::routing::get(|Path(name): Path<String>| async move { asset(&name) }),
        )
}

fn page(name: &str) -> Response {
    match file(name) {
        Some(bytes) => answer(bytes, "text/html; charset=utf-8", "no-cache"),
        None => not_found(),
    }
}

fn asset(name: &str) -> Response {
    let content_type = if name.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else if name.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        return not_found();
    };
    match file(&format!("assets/{name}")) {
        Some(bytes) => answer(bytes, content_type, "public, max-age=31536000, immutable"),
        None => not_found(),
    }
}

fn answer(bytes: &'static [u8], content_type: &'static str, cache: &'static str) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    response
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    async fn get(path: &str) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let request = http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    #[tokio::test]
    async fn pages_name_hashed_assets_that_are_kept_for_good() {
        let (status, headers, body) = get("/").await;
        assert_eq!(status, 200);
        assert_eq!(headers["cache-control"], "no-cache");
        assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
        let html = String::from_utf8(body).unwrap();
        let script = html
            .split("src=\"/assets/")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the page names its script");
        assert!(!html.contains("<script>"), "no inline script: {html}");
        let (status, headers, body) = get(&format!("/assets/{script}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8");
        assert!(!body.is_empty());
        let (status, _, _) = get("/console").await;
        assert_eq!(status, 200);
        let (status, _, _) = get("/assets/nothing.js").await;
        assert_eq!(status, 404);
        let (status, _, _) = get("/assets/..%2Fmanifest.json").await;
        assert_eq!(status, 404);
    }
}
