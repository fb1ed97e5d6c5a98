//! The M3U playlist: one `#EXTINF` entry per channel, with absolute URLs
//! made from the address the client used, and values kept from breaking
//! their quotes or lines.

use std::fmt::Write as _;

use http::{HeaderMap, Uri};
use onair_proto::media::v1 as pb;

use super::xmltv::xmltv_id;

/// The scheme and host clients reach this station at, e.g.
/// `https://tv.example.com`: a proxy's `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (the first value of each), else the request's own
/// `Host` and plain HTTP.
pub(super) fn public_base_url(headers: &HeaderMap, uri: &Uri) -> Result<String, String> {
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
pub(super) fn write_playlist(base: &str, channels: &[pb::Channel], xmltv_domain: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
}
