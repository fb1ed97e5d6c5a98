//! The IPTV exports end to end: a real station on port 0, its schedule
//! imported over gRPC, and `/iptv/channels.m3u` and `/iptv/epg.xml` read the
//! way IPTV apps read them. The guide is checked with `tv_validate_file` from
//! Debian's `xmltv-util` (scripts/test.sh installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use onair_proto::media::v1 as pb;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use onair_testkit::on_both_backends;
use onair_testkit::{Backend, TestStation, authorized};

/// The XMLTV DTD that `xmltv-util` installs; given to `tv_validate_file` so
/// that it does not try to download it.
const XMLTV_DTD: &str = "/usr/share/xmltv/xmltv.dtd";

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn unix_seconds(time: SystemTime) -> i64 {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_secs()).expect("in range")
}

/// Moves the station's clock to noon UTC of today or tomorrow, and returns
/// the start of that (UTC) day, so that tests know which broadcast day is on
/// air and that no slot they make is on air.
fn move_to_noon(station: &TestStation) -> i64 {
    let now = unix_seconds(station.clock.now());
    let mut day_start = now - now.rem_euclid(DAY);
    if now - day_start >= 12 * HOUR {
        day_start += DAY;
    }
    let noon = day_start + 12 * HOUR;
    station.clock.advance(Duration::from_secs(
        u64::try_from(noon - now).expect("forward"),
    ));
    day_start
}

fn channel_item(channel: pb::Channel, line: i32) -> pb::ImportScheduleItem {
    pb::ImportScheduleItem {
        item: Some(pb::import_schedule_item::Item::Channel(channel)),
        line,
    }
}

fn program_item(program: pb::Program, line: i32) -> pb::ImportScheduleItem {
    pb::ImportScheduleItem {
        item: Some(pb::import_schedule_item::Item::Program(program)),
        line,
    }
}

fn slot_item(
    id: &str,
    channel_id: &str,
    program_id: &str,
    start: i64,
    minutes: i64,
    line: i32,
) -> pb::ImportScheduleItem {
    pb::ImportScheduleItem {
        item: Some(pb::import_schedule_item::Item::Slot(pb::Slot {
            id: id.to_owned(),
            channel_id: channel_id.to_owned(),
            program_id: program_id.to_owned(),
            start_time: Some(timestamp(start)),
            end_time: Some(timestamp(start + minutes * 60)),
            ..Default::default()
        })),
        line,
    }
}

async fn import(station: &TestStation, items: Vec<pb::ImportScheduleItem>) {
    let mut client = MediaServiceClient::new(station.channel().await);
    let response = client
        .import_schedule(authorized(tokio_stream::iter(items), &station.operator_key))
        .await
        .expect("import answers")
        .into_inner();
    assert!(response.applied, "import refused: {:?}", response.errors);
}

/// Two channels whose names, titles and descriptions carry everything XML
/// and M3U must escape.
async fn import_station(station: &TestStation, day_start: i64) {
    let items = vec![
        channel_item(
            pb::Channel {
                id: "news-1".to_owned(),
                number: 1,
                name: "onair News".to_owned(),
                logo_url: "https://example.com/news.png?size=big&fmt=png".to_owned(),
                group: "News".to_owned(),
                ..Default::default()
            },
            1,
        ),
        channel_item(
            pb::Channel {
                id: "anime".to_owned(),
                number: 12,
                name: "Anime \"24/7\" アニメ".to_owned(),
                group: "Kids & Family".to_owned(),
                ..Default::default()
            },
            2,
        ),
        program_item(
            pb::Program {
                id: "morning-news".to_owned(),
                title: "Morning <News> & Weather".to_owned(),
                description: "The day's first news.\nThen the weather.".to_owned(),
                genres: vec!["News".to_owned(), "Weather".to_owned()],
                duration: Some(prost_types::Duration {
                    seconds: 1800,
                    nanos: 0,
                }),
                rating: "G".to_owned(),
                artwork_url: "https://example.com/morning.jpg".to_owned(),
                ..Default::default()
            },
            3,
        ),
        program_item(
            pb::Program {
                id: "cartoons".to_owned(),
                title: "カートゥーン 'Classics'".to_owned(),
                genres: vec!["Animation".to_owned()],
                ..Default::default()
            },
            4,
        ),
        slot_item(
            "news-a",
            "news-1",
            "morning-news",
            day_start + 14 * HOUR,
            30,
            5,
        ),
        slot_item(
            "news-b",
            "news-1",
            "morning-news",
            day_start + 15 * HOUR,
            30,
            6,
        ),
        slot_item("anime-a", "anime", "cartoons", day_start + 13 * HOUR, 60, 7),
    ];
    import(station, items).await;
}

/// Runs `tv_validate_file` on a guide: its exit status and what it printed.
fn tv_validate_file(guide: &str) -> (bool, String) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(guide.as_bytes()).expect("write the guide");
    let output = Command::new("tv_validate_file")
        .arg("--dtd-file")
        .arg(XMLTV_DTD)
        .arg(file.path())
        .stdin(Stdio::null())
        .output()
        .expect(
            "tv_validate_file is installed (apt-get install xmltv-util; scripts/test.sh does it)",
        );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The `key="value"` attributes of an `#EXTM3U` or `#EXTINF` line, and the
/// title after the attributes' closing comma.
fn m3u_attributes(line: &str) -> (BTreeMap<String, String>, String) {
    let mut attributes = BTreeMap::new();
    let mut rest = line;
    while let Some(equals) = rest.find("=\"") {
        let key_start = rest[..equals].rfind(' ').map_or(0, |space| space + 1);
        let key = rest[key_start..equals].to_owned();
        let value_start = equals + 2;
        let value_end = value_start
            + rest[value_start..]
                .find('"')
                .expect("attribute values are closed");
        attributes.insert(key, rest[value_start..value_end].to_owned());
        rest = &rest[value_end + 1..];
    }
    let title = rest.strip_prefix(',').unwrap_or_default().to_owned();
    (attributes, title)
}

/// The values of one attribute on every element of a name, in order.
fn xml_attribute_values(xml: &str, element: &str, attribute: &str) -> Vec<String> {
    let opening = format!("<{element} ");
    let mut values = Vec::new();
    for piece in xml.split(&opening).skip(1) {
        let tag = &piece[..piece.find('>').expect("closed tag")];
        let marker = format!("{attribute}=\"");
        let Some(start) = tag.find(&marker) else {
            continue;
        };
        let value = &tag[start + marker.len()..];
        values.push(value[..value.find('"').expect("closed value")].to_owned());
    }
    values
}

async fn get(station: &TestStation, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(station.http_url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the station answers")
}

on_both_backends!(
    the_playlist_and_the_guide_describe_the_same_channels,
    the_guide_is_served_gzip_and_revalidated_with_its_etag,
);

async fn the_playlist_and_the_guide_describe_the_same_channels(backend: Backend) {
    let station = TestStation::start(backend).await;
    let day_start = move_to_noon(&station);
    import_station(&station, day_start).await;

    let response = get(&station, "/iptv/channels.m3u", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "audio/x-mpegurl",
        "IPTV apps know M3U by this type"
    );
    let playlist = response.text().await.unwrap();
    let lines: Vec<&str> = playlist.lines().collect();
    assert_eq!(
        lines.len(),
        5,
        "a header and two lines per channel:\n{playlist}"
    );
    let base = format!("http://{}", station.http_addr);
    let (header, _) = m3u_attributes(lines[0]);
    assert!(lines[0].starts_with("#EXTM3U "), "{}", lines[0]);
    assert_eq!(header["url-tvg"], format!("{base}/iptv/epg.xml"));
    assert_eq!(header["x-tvg-url"], format!("{base}/iptv/epg.xml"));

    assert!(lines[1].starts_with("#EXTINF:-1 "), "{}", lines[1]);
    let (news, news_title) = m3u_attributes(lines[1]);
    assert_eq!(news["tvg-id"], "news-1.onair");
    assert_eq!(news["tvg-chno"], "1");
    assert_eq!(news["tvg-name"], "onair News");
    assert_eq!(
        news["tvg-logo"],
        "https://example.com/news.png?size=big&fmt=png"
    );
    assert_eq!(news["group-title"], "News");
    assert_eq!(news_title, "onair News");
    assert_eq!(lines[2], format!("{base}/hls/news-1/master.m3u8"));

    let (anime, anime_title) = m3u_attributes(lines[3]);
    assert_eq!(anime["tvg-id"], "anime.onair");
    assert_eq!(anime["tvg-chno"], "12");
    assert_eq!(
        anime["tvg-name"], "Anime '24/7' アニメ",
        "a quote inside an attribute would end it"
    );
    assert!(!anime.contains_key("tvg-logo"), "no logo, no attribute");
    assert_eq!(anime["group-title"], "Kids & Family");
    assert_eq!(anime_title, "Anime \"24/7\" アニメ");
    assert_eq!(lines[4], format!("{base}/hls/anime/master.m3u8"));

    // Behind a proxy, the URLs are the ones the viewer used.
    let proxied = get(
        &station,
        "/iptv/channels.m3u",
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "tv.example.com"),
        ],
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(
        proxied.starts_with(
            "#EXTM3U url-tvg=\"https://tv.example.com/iptv/epg.xml\" x-tvg-url=\"https://tv.example.com/iptv/epg.xml\"\n"
        ),
        "{proxied}"
    );
    assert!(proxied.contains("\nhttps://tv.example.com/hls/anime/master.m3u8\n"));

    let response = get(&station, "/iptv/epg.xml", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/xml");
    let guide = response.text().await.unwrap();
    let (valid, printed) = tv_validate_file(&guide);
    assert!(
        valid,
        "tv_validate_file refused the guide:\n{printed}\n{guide}"
    );
    assert!(printed.contains("Validated ok"), "{printed}");

    // The playlist's tvg-ids are the guide's channel ids, in the same order.
    let channel_ids = xml_attribute_values(&guide, "channel", "id");
    assert_eq!(
        channel_ids,
        [news["tvg-id"].clone(), anime["tvg-id"].clone()]
    );
    let last_channel = guide.rfind("</channel>").unwrap();
    let first_programme = guide.find("<programme ").unwrap();
    assert!(last_channel < first_programme, "channels come first");

    let starts = xml_attribute_values(&guide, "programme", "start");
    let stops = xml_attribute_values(&guide, "programme", "stop");
    let on_channels: BTreeSet<String> = xml_attribute_values(&guide, "programme", "channel")
        .into_iter()
        .collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(
        on_channels,
        BTreeSet::from(["anime.onair".to_owned(), "news-1.onair".to_owned()])
    );
    let day = xmltv_day(day_start);
    assert_eq!(
        starts,
        [
            format!("{day}140000 +0000"),
            format!("{day}150000 +0000"),
            format!("{day}130000 +0000"),
        ],
        "by channel, then by start"
    );
    assert_eq!(stops[0], format!("{day}143000 +0000"));
    assert!(guide.contains("<title>Morning &lt;News&gt; &amp; Weather</title>"));
    assert!(guide.contains("<desc>The day&apos;s first news.\nThen the weather.</desc>"));
    assert!(guide.contains("<category>News</category>\n    <category>Weather</category>"));
    assert!(guide.contains("<icon src=\"https://example.com/morning.jpg\"/>"));
    assert!(guide.contains("<icon src=\"https://example.com/news.png?size=big&amp;fmt=png\"/>"));
    assert!(guide.contains("<display-name>Anime &quot;24/7&quot; アニメ</display-name>"));
    assert!(guide.contains("<title>カートゥーン &apos;Classics&apos;</title>"));
    assert!(guide.contains("<rating>\n      <value>G</value>\n    </rating>"));

    // Both exports are counted per route.
    let metrics = get(&station, "/metrics", &[]).await.text().await.unwrap();
    assert!(
        metrics.contains(
            "onair_http_server_requests_total{route=\"/iptv/epg.xml\",method=\"GET\",code=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("onair_iptv_epg_programmes 3"), "{metrics}");
}

/// `YYYYMMDD` of a UTC day, from its start in unix seconds.
fn xmltv_day(day_start: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = day_start.div_euclid(DAY) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}")
}

async fn the_guide_is_served_gzip_and_revalidated_with_its_etag(backend: Backend) {
    let station = TestStation::start(backend).await;
    let day_start = move_to_noon(&station);
    import_station(&station, day_start).await;

    let plain = get(&station, "/iptv/epg.xml", &[]).await;
    assert!(plain.headers().get("content-encoding").is_none());
    let cache_control = onair_testkit::header_text(&plain, "cache-control");
    assert!(
        cache_control.starts_with("public, max-age="),
        "{cache_control}"
    );
    let etag = onair_testkit::header_text(&plain, "etag");
    let plain = plain.text().await.unwrap();

    let compressed = get(&station, "/iptv/epg.xml", &[("accept-encoding", "gzip")]).await;
    assert_eq!(compressed.status(), 200);
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    let compressed = compressed.bytes().await.unwrap();
    assert!(compressed.len() < plain.len());
    assert_eq!(gunzip(&compressed), plain, "the same guide, compressed");

    let playlist = get(
        &station,
        "/iptv/channels.m3u",
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(playlist.headers()["content-encoding"], "gzip");

    let unchanged = get(&station, "/iptv/epg.xml", &[("if-none-match", &etag)]).await;
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"].to_str().unwrap(), etag);
    assert!(unchanged.bytes().await.unwrap().is_empty());

    // A schedule change makes a new guide with a new tag.
    import(
        &station,
        vec![slot_item(
            "news-c",
            "news-1",
            "morning-news",
            day_start + 16 * HOUR,
            30,
            1,
        )],
    )
    .await;
    let changed = get(&station, "/iptv/epg.xml", &[("if-none-match", &etag)]).await;
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        changed.text().await.unwrap().matches("<programme ").count(),
        4
    );
}

/// Decompresses with the system's `gzip`, as a client would.
fn gunzip(compressed: &[u8]) -> String {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = compressed.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "gzip could not decompress the body"
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[tokio::test]
async fn the_guide_covers_the_configured_broadcast_days() {
    let station = TestStation::start_with(Backend::Sqlite, &[("iptv.epg_days", "2")]).await;
    let day_start = move_to_noon(&station);
    let mut items = vec![
        channel_item(
            pb::Channel {
                id: "news-1".to_owned(),
                number: 1,
                name: "News".to_owned(),
                ..Default::default()
            },
            1,
        ),
        program_item(
            pb::Program {
                id: "bulletin".to_owned(),
                title: "Bulletin".to_owned(),
                ..Default::default()
            },
            2,
        ),
    ];
    // Yesterday's last slot, one on each day of the guide, one across the
    // midnight between them, and the first one after the guide.
    let slots = [
        ("yesterday", -HOUR),
        ("today", HOUR),
        ("midnight", DAY - 15 * 60),
        ("tomorrow", DAY + HOUR),
        ("after", 2 * DAY),
    ];
    for (line, (id, start)) in (3..).zip(slots) {
        items.push(slot_item(
            id,
            "news-1",
            "bulletin",
            day_start + start,
            30,
            line,
        ));
    }
    import(&station, items).await;

    let guide = get(&station, "/iptv/epg.xml", &[])
        .await
        .text()
        .await
        .unwrap();
    let (valid, printed) = tv_validate_file(&guide);
    assert!(valid, "{printed}\n{guide}");
    let starts = xml_attribute_values(&guide, "programme", "start");
    let today = xmltv_day(day_start);
    let tomorrow = xmltv_day(day_start + DAY);
    assert_eq!(
        starts,
        [
            format!("{today}010000 +0000"),
            format!("{today}234500 +0000"),
            format!("{tomorrow}010000 +0000"),
        ],
        "the slot across midnight is listed once"
    );
}

#[tokio::test]
async fn an_empty_station_has_an_empty_playlist_and_guide() {
    let station = TestStation::start(Backend::Sqlite).await;
    let playlist = get(&station, "/iptv/channels.m3u", &[]).await;
    assert_eq!(playlist.status(), 200);
    let playlist = playlist.text().await.unwrap();
    let base = format!("http://{}", station.http_addr);
    assert_eq!(
        playlist,
        format!("#EXTM3U url-tvg=\"{base}/iptv/epg.xml\" x-tvg-url=\"{base}/iptv/epg.xml\"\n")
    );

    let guide = get(&station, "/iptv/epg.xml", &[]).await;
    assert_eq!(guide.status(), 200);
    let guide = guide.text().await.unwrap();
    assert!(
        guide.contains("<tv generator-info-name=\"onair\">\n</tv>"),
        "{guide}"
    );
    // tv_validate_file checks well-formedness and the DTD first and stops at
    // the first failure; so an empty guide that gets as far as "no
    // programmes" is well-formed and valid.
    let (_, printed) = tv_validate_file(&guide);
    assert_eq!(printed, "No programme entries found.\n1 error found.\n");
}

#[tokio::test]
async fn bad_proxy_headers_and_credentials_are_refused() {
    let station = TestStation::start(Backend::Sqlite).await;
    let response = get(
        &station,
        "/iptv/channels.m3u",
        &[("x-forwarded-proto", "javascript")],
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 3, "INVALID_ARGUMENT: {body}");
    assert!(
        onair_testkit::error_message(&body).contains("X-Forwarded-Proto"),
        "{body}"
    );

    let response = get(
        &station,
        "/iptv/channels.m3u",
        &[("x-forwarded-host", "tv.example.com\"><script>")],
    )
    .await;
    assert_eq!(response.status(), 400);

    // The exports are public, but a credential that is sent must be valid.
    let response = get(
        &station,
        "/iptv/epg.xml",
        &[("authorization", "Bearer not-a-key")],
    )
    .await;
    assert_eq!(response.status(), 401);
    let response = get(
        &station,
        "/iptv/epg.xml",
        &[("authorization", &format!("Bearer {}", station.operator_key))],
    )
    .await;
    assert_eq!(response.status(), 200);
}
