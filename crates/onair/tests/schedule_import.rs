//! `onair schedule import FILE` end to end: the built binary sends schedule
//! files to a real station on port 0, as an operator would from a shell.

use std::path::Path;
use std::process::Output;

use onair_testkit::on_both_backends;
use onair_testkit::{Backend, TestStation};

/// A schedule of two channels, two programs and three slots, far enough
/// ahead that nothing in it is on air.
const SCHEDULE_YAML: &str = "\
channels:
  - id: news-1
    number: 1
    name: onair News
    logo_url: https://example.com/news.png
    group: News
  - id: anime
    number: 2
    name: Anime
programs:
  - id: morning-news
    title: Morning News
    description: The day's first news.
    genres: [News]
    duration: 30m
  - id: cartoons
    title: Cartoons
    duration: 1h
slots:
  - channel: news-1
    program: morning-news
    start: 2031-04-01T05:00:00+09:00
    end: 2031-04-01T05:30:00+09:00
  - channel: news-1
    program: morning-news
    start: 2031-04-01T06:00:00+09:00
    duration: 30m
  - channel: anime
    program: cartoons
    start: 2031-04-01T05:00:00+09:00
    duration: 1h
";

/// Runs the binary with exactly these environment variables of its own (no
/// ONAIR_* from the test's environment).
async fn onair(args: &[&str], environment: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_onair"));
    command.args(args);
    for name in ["ONAIR_GRPC", "ONAIR_TOKEN", "ONAIR_DATA_DIR"] {
        command.env_remove(name);
    }
    command.envs(environment.iter().copied());
    command.output().await.expect("run onair")
}

/// `onair schedule import FILE` against `station`, with the operator's key
/// in `ONAIR_TOKEN`.
async fn import_as_operator(station: &TestStation, file: &str) -> Output {
    let grpc = station.grpc_addr.to_string();
    onair(
        &["schedule", "import", file, "--grpc", &grpc],
        &[("ONAIR_TOKEN", &station.operator_key)],
    )
    .await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write the schedule file");
    path.display().to_string()
}

async fn channel_ids(station: &TestStation) -> Vec<String> {
    let body: serde_json::Value = reqwest::get(station.http_url("/v1/channels"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|channel| channel["id"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(a_yaml_schedule_is_imported_with_the_stations_operator_key);

async fn a_yaml_schedule_is_imported_with_the_stations_operator_key(backend: Backend) {
    let station = TestStation::start(backend).await;
    let files = tempfile::tempdir().unwrap();
    let file = write(files.path(), "schedule.yaml", SCHEDULE_YAML);
    let grpc = station.grpc_addr.to_string();
    let data_dir = station.dir.path().display().to_string();

    let output = onair(
        &[
            "schedule",
            "import",
            &file,
            "--grpc",
            &grpc,
            "--data-dir",
            &data_dir,
        ],
        &[],
    )
    .await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert_eq!(
        stdout,
        format!("{file}: imported 7 items: 2 channels, 2 programs and 3 slots\n")
    );
    assert_eq!(channel_ids(&station).await, ["news-1", "anime"]);
    let timetable: serde_json::Value = reqwest::get(station.http_url(
        "/v1/channels/news-1/timetable?startTime=2031-03-31T00:00:00Z&endTime=2031-04-02T00:00:00Z",
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let entries = timetable["channels"][0]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{timetable}");
    assert_eq!(entries[0]["slot"]["startTime"], "2031-03-31T20:00:00Z");
    assert_eq!(entries[1]["slot"]["endTime"], "2031-03-31T21:30:00Z");
}

#[tokio::test]
async fn every_error_is_printed_with_its_line_and_nothing_is_imported() {
    let station = TestStation::start(Backend::Sqlite).await;
    let files = tempfile::tempdir().unwrap();
    let schedule = "\
channels:
  - id: news-1
    number: 1
    name: News
programs:
  - id: bulletin
    title: Bulletin
    duration: 30m
slots:
  - channel: news-1
    program: bulletin
    start: 2031-04-01T05:00:00Z
    end: 2031-04-01T05:30:00Z
  - channel: news-1
    program: bulletin
    start: 2031-04-01T05:15:00Z
    end: 2031-04-01T05:45:00Z
  - channel: news-1
    program: missing-show
    start: 2031-04-01T06:00:00Z
    end: 2031-04-01T06:30:00Z
";
    let file = write(files.path(), "broken.yml", schedule);
    let output = import_as_operator(&station, &file).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with(&format!("{file}:")))
        .collect();
    assert_eq!(errors.len(), 3, "two errors and a summary:\n{stderr}");
    assert_eq!(
        errors[0],
        format!(
            "{file}:14: the slot overlaps the slot on line 10 (2031-04-01T05:00:00Z to 2031-04-01T05:30:00Z) on channel news-1"
        )
    );
    assert_eq!(
        errors[1],
        format!("{file}:18: no program with id \"missing-show\" in the import or the station")
    );
    assert_eq!(
        errors[2],
        format!("{file}: not imported: the station found 2 errors; nothing was changed")
    );
    assert!(text(&output.stdout).is_empty());
    assert!(
        channel_ids(&station).await.is_empty(),
        "all or nothing: not even the channel"
    );

    // A file that is not a schedule is refused before the station is asked.
    let file = write(
        files.path(),
        "typo.yaml",
        "channels:\n  - id: news-1\n    number: one\n    name: News\n",
    );
    let output = import_as_operator(&station, &file).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with(&format!("{file}:3: ")), "{stderr}");
}

#[tokio::test]
async fn json_files_credentials_and_addresses_come_from_the_environment() {
    let station = TestStation::start(Backend::Sqlite).await;
    let files = tempfile::tempdir().unwrap();
    let schedule = r#"{
  "channels": [{"id": "news-1", "number": 1, "name": "News"}],
  "programs": [{"id": "bulletin", "title": "Bulletin", "duration": "1800s"}],
  "slots": [
    {"channelId": "news-1", "programId": "bulletin",
     "startTime": "2031-04-01T05:00:00Z", "endTime": "2031-04-01T05:30:00Z"}
  ]
}
"#;
    let file = write(files.path(), "schedule.json", schedule);
    let grpc = format!("http://{}", station.grpc_addr);

    // A viewer may not import.
    let viewer: serde_json::Value = reqwest::Client::new()
        .post(station.http_url("/v1/users"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let viewer_token = viewer["accessToken"].as_str().unwrap();
    let output = onair(
        &["schedule", "import", &file],
        &[("ONAIR_GRPC", &grpc), ("ONAIR_TOKEN", viewer_token)],
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    assert!(channel_ids(&station).await.is_empty());

    let output = onair(
        &["schedule", "import", &file],
        &[
            ("ONAIR_GRPC", &grpc),
            ("ONAIR_TOKEN", &station.operator_key),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        format!("{file}: imported 3 items: 1 channel, 1 program and 1 slot\n")
    );
    assert_eq!(channel_ids(&station).await, ["news-1"]);

    // Without a token, the data dir's operator key is used; here there is
    // none, and the message says what to do.
    let empty = tempfile::tempdir().unwrap();
    let output = onair(
        &["schedule", "import", &file],
        &[
            ("ONAIR_GRPC", &grpc),
            ("ONAIR_DATA_DIR", &empty.path().display().to_string()),
        ],
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
}

#[tokio::test]
async fn a_station_that_does_not_answer_is_named() {
    let files = tempfile::tempdir().unwrap();
    let file = write(files.path(), "schedule.yaml", SCHEDULE_YAML);
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let output = onair(
        &["schedule", "import", &file, "--grpc", &address],
        &[("ONAIR_TOKEN", "some-key")],
    )
    .await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the station at http://{address}")),
        "{stderr}"
    );
}
