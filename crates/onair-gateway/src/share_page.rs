//! Share link pages: `GET /s/{code}` answers a small HTML page with Open
//! Graph and Twitter card tags, which social networks' crawlers read to
//! show a card (title, description, a 1200×630 picture of the program), and
//! which sends a person on to the player at the shared place.
//!
//! What the page shows comes from the share service (`OpenShare`, which
//! counts the open); this module only writes it as HTML. Every text and URL
//! is HTML-escaped where it is written, so a title like
//! `<script>alert(1)</script>` appears as text. The page's one script (the
//! redirect, which crawlers don't run) is allowed by its hash and nothing
//! else may run. An unknown code answers a 404 page, a malformed one 400,
//! so that a crawler drops the card.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use onair_kit::telemetry::TraceContext;
use onair_proto::ServiceChannel;
use onair_proto::clients::ShareClient;
use onair_proto::share::v1 as pb;
use sha2::Digest as _;

use crate::guard;

/// The page's one script: on to the player, whose address is the link's.
const REDIRECT_SCRIPT: &str = r#"location.replace(document.getElementById("watch").href);"#;

/// The route `/s/{code}`, reaching the share service through `share`.
pub fn router(share: ServiceChannel) -> axum::Router {
    let client = ShareClient::new(share);
    axum::Router::new()
        .route(
            "/s/{code}",
            axum::routing::get(move |code: Path<String>, headers: HeaderMap| {
                let client = client.clone();
                async move {
                    let context = TraceContext::from_traceparent(
                        headers
                            .get("traceparent")
                            .and_then(|value| value.to_str().ok()),
                    );
                    context.scope(page(client, code.0, headers)).await
                }
            }),
        )
        .layer(axum::middleware::from_fn(guard::request_id))
}

async fn page(mut client: ShareClient, code: String, headers: HeaderMap) -> Response {
    let mut request = tonic::Request::new(pb::OpenShareRequest { code });
    if let Some(value) = headers.get(guard::REQUEST_ID)
        && let Ok(text) = value.to_str()
        && let Ok(value) = text.parse()
    {
        request.metadata_mut().insert(guard::REQUEST_ID, value);
    }
    match client.open_share(request).await {
        Ok(page) => html_response(StatusCode::OK, share_html(&page.into_inner())),
        Err(status) => {
            let (http_status, heading) = match status.code() {
                tonic::Code::NotFound => (StatusCode::NOT_FOUND, "This share link does not exist"),
                tonic::Code::InvalidArgument => {
                    (StatusCode::BAD_REQUEST, "This is not a share link")
                }
                tonic::Code::Unavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "This share link can't be shown right now",
                ),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "This share link can't be shown",
                ),
            };
            let message = if http_status == StatusCode::INTERNAL_SERVER_ERROR {
                "internal error"
            } else {
                status.message()
            };
            html_response(http_status, error_html(heading, message))
        }
    }
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Each open is counted: a cache must ask again.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, content_security_policy());
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    response
}

/// Nothing but the redirect script and an inline style may run or load,
/// and pictures over http(s); the page may not be framed.
fn content_security_policy() -> HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY
        .get_or_init(|| {
            let hash = base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(REDIRECT_SCRIPT.as_bytes()));
            let policy = format!(
                "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
                 img-src https: http:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            );
            HeaderValue::from_str(&policy)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
        })
        .clone()
}

/// The page of a share link.
pub fn share_html(page: &pb::SharePage) -> String {
    let share_url = page.share.as_ref().map_or("", |share| share.url.as_str());
    let mut html = String::with_capacity(2048);
    html.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    element(&mut html, "title", &page.title);
    meta(&mut html, "name", "description", &page.description);
    html.push_str("<link rel=\"canonical\" href=\"");
    escape_into(&mut html, share_url);
    html.push_str("\">\n");
    meta(&mut html, "property", "og:type", "video.other");
    meta(&mut html, "property", "og:title", &page.title);
    meta(&mut html, "property", "og:description", &page.description);
    meta(&mut html, "property", "og:url", share_url);
    meta(&mut html, "property", "og:image", &page.image_url);
    meta(&mut html, "name", "twitter:card", "summary_large_image");
    meta(&mut html, "name", "twitter:title", &page.title);
    meta(&mut html, "name", "twitter:description", &page.description);
    meta(&mut html, "name", "twitter:image", &page.image_url);
    html.push_str(
        "<style>body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:40rem;padding:0 1rem}\
         img{max-width:100%;height:auto}</style>\n</head>\n<body>\n<main>\n",
    );
    element(&mut html, "h1", &page.title);
    element(&mut html, "p", &page.description);
    html.push_str("<p><img src=\"");
    escape_into(&mut html, &page.image_url);
    html.push_str("\" alt=\"\" width=\"1200\" height=\"630\"></p>\n<p><a id=\"watch\" href=\"");
    escape_into(&mut html, &page.watch_url);
    html.push_str("\">Watch now</a></p>\n</main>\n<script>");
    html.push_str(REDIRECT_SCRIPT);
    html.push_str("</script>\n</body>\n</html>\n");
    html
}

/// The page of a link that can't be shown.
fn error_html(heading: &str, message: &str) -> String {
    let mut html = String::with_capacity(512);
    html.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str("<meta name=\"robots\" content=\"noindex\">\n");
    element(&mut html, "title", heading);
    html.push_str("</head>\n<body>\n<main>\n");
    element(&mut html, "h1", heading);
    element(&mut html, "p", message);
    html.push_str("<p><a href=\"/\">Watch what is on air</a></p>\n</main>\n</body>\n</html>\n");
    html
}

fn element(html: &mut String, name: &str, text: &str) {
    html.push('<');
    html.push_str(name);
    html.push('>');
    escape_into(html, text);
    html.push_str("</");
    html.push_str(name);
    html.push_str(">\n");
}

fn meta(html: &mut String, attribute: &str, name: &str, content: &str) {
    html.push_str("<meta ");
    html.push_str(attribute);
    html.push_str("=\"");
    html.push_str(name);
    html.push_str("\" content=\"");
    escape_into(html, content);
    html.push_str("\">\n");
}

/// `text` escaped for HTML text and double- or single-quoted attributes.
fn escape_into(html: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            other => html.push(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_what_a_page_shows_is_text() {
        let page = pb::SharePage {
            share: Some(pb::Share {
                url: "https://tv.example.com/s/AAAAAAAAAAAA".to_owned(),
                ..Default::default()
            }),
            title: "<script>alert(1)</script>".to_owned(),
            description: "\"><img src=x onerror=alert(2)> & 'more'".to_owned(),
            image_url: "https://tv.example.com/images/assets/a\"b/card.jpg".to_owned(),
            watch_url: "https://tv.example.com/?channel=x&slot=y".to_owned(),
        };
        let html = share_html(&page);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>"));
        assert!(!html.contains("<img src=x"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt; &amp; &#39;more&#39;"));
        assert!(html.contains("a&quot;b/card.jpg"));
        assert!(html.contains("href=\"https://tv.example.com/?channel=x&amp;slot=y\""));
        // One script, the redirect, which the policy names by its hash.
        assert_eq!(html.matches("<script").count(), 1);
        let policy = content_security_policy();
        let policy = policy.to_str().unwrap();
        assert!(policy.contains("script-src 'sha256-"), "{policy}");
        assert!(
            !policy.contains("unsafe-inline'; img") || policy.contains("style-src 'unsafe-inline'")
        );
    }
}
