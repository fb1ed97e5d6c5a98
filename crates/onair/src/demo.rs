//! `onair demo`: a ready station. It serves like `onair serve` and, beside
//! it, seeds a demo station through the services' own contracts: clips made
//! with ffmpeg (test patterns with the program's title and its running time
//! burned in), three channels, and a schedule around now with gaps, so that
//! a newcomer sees channels that change programs and fill gaps with a slate.
//!
//! The seeding is one task next to the server ([`seed_schedule`], then
//! [`seed_clips`]); once the schedule stands, a simulated audience ([`crate::demo_audience`]) comments on
//! the channels so that the live sockets and replays have something to show.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use anyhow::Context as _;
use onair_kit::clock::{Clock, millis_from_timestamp, timestamp_from_millis};
use onair_kit::config::{ProcessEnvironment, ServiceRole, Settings};
use onair_kit::server::ServiceChannels;
use onair_proto::clients::{MediaClient, PlayoutClient};
use onair_proto::media::v1 as media;
use onair_proto::playout::v1 as pb;

/// Where the demo keeps its data unless told otherwise: apart from a real
/// station's `./onair-data`.
pub const DEMO_DATA_DIR: &str = "./onair-demo";
/// A light ladder, so the demo's clips are ready within a minute on a laptop.
pub const DEMO_LADDER: &str = "360p:640x360:800,180p:320x180:250";
/// How far ahead the demo schedule reaches.
const SCHEDULE_HORIZON_MS: i64 = 3 * 3600 * 1000;
/// How far back the demo schedule starts, so the first viewer joins a
/// program in its middle.
const SCHEDULE_LOOKBACK_MS: i64 = 2 * 60 * 1000;
/// After this many programs in a row, a channel has a gap.
const SLOTS_BETWEEN_GAPS: usize = 3;
/// How long a gap lasts, in segments.
const GAP_SEGMENTS: i64 = 5;

/// A demo program: its clip's test pattern, tone and length.
struct DemoProgram {
    id: &'static str,
    title: &'static str,
    pattern: &'static str,
    tone_hz: u32,
    seconds: i64,
}

const PROGRAMS: &[DemoProgram] = &[
    DemoProgram {
        id: "morning-news",
        title: "Morning News",
        pattern: "testsrc2",
        tone_hz: 440,
        seconds: 48,
    },
    DemoProgram {
        id: "weather",
        title: "Weather",
        pattern: "smptehdbars",
        tone_hz: 523,
        seconds: 32,
    },
    DemoProgram {
        id: "anime-hour",
        title: "Anime Hour",
        pattern: "rgbtestsrc",
        tone_hz: 330,
        seconds: 60,
    },
    DemoProgram {
        id: "cooking",
        title: "Cooking with Rust",
        pattern: "testsrc",
        tone_hz: 392,
        seconds: 40,
    },
    DemoProgram {
        id: "football",
        title: "Football Tonight",
        pattern: "smptebars",
        tone_hz: 294,
        seconds: 56,
    },
    DemoProgram {
        id: "music-live",
        title: "Music Live",
        pattern: "yuvtestsrc",
        tone_hz: 660,
        seconds: 44,
    },
];

/// A demo channel and the programs it cycles through.
struct DemoChannel {
    id: &'static str,
    number: i32,
    name: &'static str,
    group: &'static str,
    programs: &'static [&'static str],
}

const CHANNELS: &[DemoChannel] = &[
    DemoChannel {
        id: "news",
        number: 1,
        name: "onair News",
        group: "News",
        programs: &["morning-news", "weather"],
    },
    DemoChannel {
        id: "anime",
        number: 2,
        name: "onair Anime",
        group: "Anime",
        programs: &["anime-hour", "music-live"],
    },
    DemoChannel {
        id: "sports",
        number: 3,
        name: "onair Sports",
        group: "Sports",
        programs: &["football", "cooking", "weather"],
    },
];

/// Serves the demo station until SIGINT/SIGTERM.
pub fn run(settings: Settings, shutdown: impl Future<Output = ()> + Send) -> ExitCode {
    if let Err(error) = ensure_ffmpeg() {
        eprintln!("onair: {error:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("onair: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let segment_seconds = match settings.section::<onair_playout::PlayoutSettings>() {
        Ok(playout) => playout.encode.segment_seconds,
        Err(error) => {
            eprintln!("onair: {error}");
            return ExitCode::from(2);
        }
    };
    let segment_ms = i64::from(segment_seconds) * 1000;
    let result = runtime.block_on(async move {
        let prepared = onair::prepare(settings, Clock::system()).await?;
        let channels = prepared.channels.clone();
        let data_dir = prepared.data_dir.clone();
        let http_addr = prepared.http_addr;
        let grpc_addr = prepared.grpc_addr;
        let seeding = tokio::spawn(async move {
            let key = match seed_schedule(&channels, &data_dir, segment_ms).await {
                Ok(key) => key,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "cannot seed the demo station");
                    return;
                }
            };
            // The channels air (the slate) from here on; the programs air as
            // their clips become ready, and the audience comments meanwhile.
            print_welcome(http_addr, grpc_addr, &data_dir);
            let clips = async {
                match seed_clips(&channels, &data_dir, &key).await {
                    Ok(()) => tracing::info!("the demo station is seeded"),
                    Err(error) => {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "cannot seed the demo station"
                        )
                    }
                }
            };
            let channel_ids = CHANNELS
                .iter()
                .map(|channel| channel.id.to_owned())
                .collect();
            let audience = async {
                if let Err(error) = crate::demo_audience::run(channels.clone(), channel_ids).await {
                    tracing::error!(error = format!("{error:#}"), "the demo audience stopped");
                }
            };
            tokio::join!(clips, audience);
        });
        let served = prepared.run(shutdown).await;
        seeding.abort();
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("onair: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_welcome(
    http_addr: std::net::SocketAddr,
    grpc_addr: std::net::SocketAddr,
    data_dir: &Path,
) {
    println!();
    println!("onair demo is on air. Watch a channel with any HLS player:");
    for channel in CHANNELS {
        println!(
            "  {:<14} http://{http_addr}/hls/{}/master.m3u8",
            channel.name, channel.id
        );
    }
    println!("  e.g. ffplay http://{http_addr}/hls/news/master.m3u8   (or VLC, mpv)");
    println!("IPTV apps: http://{http_addr}/iptv/channels.m3u and http://{http_addr}/iptv/epg.xml");
    println!("The guide: curl 'http://{http_addr}/v1/now'");
    let key = data_dir.join("operator.key");
    println!(
        "As the operator: curl http://{http_addr}/v1/users/me -H \"authorization: Bearer $(cat {})\"",
        key.display()
    );
    let binary = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "onair".to_owned());
    println!(
        "Import a schedule: {binary} schedule import --grpc {grpc_addr} --data-dir {} FILE",
        data_dir.display()
    );
    println!("Stop with Ctrl-C.");
}

/// Makes sure ffmpeg is installed: installs Debian's package when this
/// process may (root, or sudo without a password), else says how.
fn ensure_ffmpeg() -> anyhow::Result<()> {
    if has_ffmpeg() {
        return Ok(());
    }
    let has_apt = Path::new("/usr/bin/apt-get").exists();
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    let has_sudo = !is_root
        && std::process::Command::new("sudo")
            .args(["-n", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
    if !has_apt || !(is_root || has_sudo) {
        anyhow::bail!(
            "onair demo needs ffmpeg and cannot install it here: install it (sudo apt-get install ffmpeg on Debian or Ubuntu) and run the demo again"
        );
    }
    eprintln!("onair: installing ffmpeg (apt-get install ffmpeg)…");
    let prefix: &[&str] = if is_root { &[] } else { &["sudo", "-n"] };
    for arguments in [
        vec!["apt-get", "update", "-qq"],
        vec![
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "ffmpeg",
        ],
    ] {
        let mut command_line: Vec<&str> = prefix.to_vec();
        command_line.extend(arguments);
        let status = std::process::Command::new(command_line[0])
            .args(&command_line[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("cannot run {}", command_line.join(" ")))?;
        if !status.success() {
            anyhow::bail!(
                "{} failed ({status}): install ffmpeg and run the demo again",
                command_line.join(" ")
            );
        }
    }
    if !has_ffmpeg() {
        anyhow::bail!("ffmpeg is still missing after apt-get install ffmpeg");
    }
    Ok(())
}

fn has_ffmpeg() -> bool {
    std::process::Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Seeds the station through its services: channels, programs and a
/// schedule from a little before now to three hours ahead. Run again on the
/// same data dir, it extends the schedule. Returns the operator's key.
async fn seed_schedule(
    channels: &ServiceChannels,
    data_dir: &Path,
    segment_ms: i64,
) -> anyhow::Result<String> {
    let key_path = data_dir.join("operator.key");
    let key = tokio::fs::read_to_string(&key_path)
        .await
        .with_context(|| format!("cannot read {}", key_path.display()))?;
    let key = key.trim().to_owned();
    let mut media = MediaClient::new(channels.channel(ServiceRole::Media));

    for channel in CHANNELS {
        let request = media::CreateChannelRequest {
            channel: Some(media::Channel {
                id: channel.id.to_owned(),
                number: channel.number,
                name: channel.name.to_owned(),
                group: channel.group.to_owned(),
                ..Default::default()
            }),
        };
        ignore_existing(media.create_channel(authorized(&key, request)?).await)?;
    }
    for program in PROGRAMS {
        let request = media::CreateProgramRequest {
            program: Some(media::Program {
                id: program.id.to_owned(),
                title: program.title.to_owned(),
                description: format!("{}: a demo program made with ffmpeg", program.title),
                duration: Some(prost_types::Duration {
                    seconds: program.seconds,
                    nanos: 0,
                }),
                asset_id: program.id.to_owned(),
                ..Default::default()
            }),
        };
        ignore_existing(media.create_program(authorized(&key, request)?).await)?;
    }
    let now_ms = Clock::system().now_ms();
    for channel in CHANNELS {
        extend_schedule(&mut media, &key, channel, now_ms, segment_ms).await?;
    }
    Ok(key)
}

/// Makes the programs' clips with ffmpeg and registers them as assets, one
/// after the other (the transcoder starts on the first while the next is
/// made).
async fn seed_clips(channels: &ServiceChannels, data_dir: &Path, key: &str) -> anyhow::Result<()> {
    let mut playout = PlayoutClient::new(channels.channel(ServiceRole::Playout));
    let clips = data_dir.join("demo-clips");
    tokio::fs::create_dir_all(&clips)
        .await
        .with_context(|| format!("cannot create {}", clips.display()))?;
    // The playout takes absolute paths only.
    let clips = tokio::fs::canonicalize(&clips)
        .await
        .with_context(|| format!("cannot resolve {}", clips.display()))?;
    for program in PROGRAMS {
        let request = pb::GetAssetRequest {
            asset_id: program.id.to_owned(),
        };
        if playout.get_asset(authorized(key, request)?).await.is_ok() {
            continue;
        }
        let clip = make_clip(&clips, program).await?;
        let request = pb::CreateAssetRequest {
            asset: Some(pb::Asset {
                id: program.id.to_owned(),
                source_path: clip.display().to_string(),
                ..Default::default()
            }),
        };
        ignore_existing(playout.create_asset(authorized(key, request)?).await)?;
        tracing::info!(asset = program.id, "demo clip queued for transcoding");
    }
    Ok(())
}

/// A request with the operator's key, as the station's commands send it.
fn authorized<T>(key: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let target = crate::schedule_import::Target {
        endpoint: String::new(),
        credential: key.to_owned(),
    };
    crate::schedule_import::authorized(&target, message)
}

fn ignore_existing<T>(result: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => Err(anyhow::anyhow!("{}", status.message())),
    }
}

/// Adds slots to a channel from the end of its schedule (or a little before
/// now) to the horizon: its programs in turn, a gap after every few.
async fn extend_schedule(
    media: &mut MediaClient,
    key: &str,
    channel: &DemoChannel,
    now_ms: i64,
    segment_ms: i64,
) -> anyhow::Result<()> {
    let horizon = now_ms + SCHEDULE_HORIZON_MS;
    let request = media::GetTimetableRequest {
        channel_id: channel.id.to_owned(),
        start_time: Some(timestamp_from_millis(now_ms - SCHEDULE_LOOKBACK_MS)),
        end_time: Some(timestamp_from_millis(horizon)),
        ..Default::default()
    };
    let timetable = media
        .get_timetable(authorized(key, request)?)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    let last_end = timetable
        .channels
        .iter()
        .flat_map(|channel| channel.entries.iter())
        .filter_map(|entry| entry.slot.as_ref())
        .filter_map(|slot| slot.end_time.as_ref())
        .map(|end| millis_from_timestamp(Some(end)))
        .max();
    // On the segment grid, so programs start exactly on time.
    let start = now_ms - SCHEDULE_LOOKBACK_MS;
    let mut cursor = last_end.unwrap_or(start - start.rem_euclid(segment_ms));
    let mut items = Vec::new();
    let mut index = 0;
    while cursor < horizon {
        let program_id = channel.programs[index % channel.programs.len()];
        let Some(program) = PROGRAMS.iter().find(|program| program.id == program_id) else {
            anyhow::bail!(
                "demo channel {} names unknown program {program_id}",
                channel.id
            );
        };
        // A slot as long as the clip once padded to whole segments.
        let length = (program.seconds * 1000 + segment_ms - 1) / segment_ms * segment_ms;
        items.push(media::ImportScheduleItem {
            item: Some(media::import_schedule_item::Item::Slot(media::Slot {
                channel_id: channel.id.to_owned(),
                program_id: program.id.to_owned(),
                start_time: Some(timestamp_from_millis(cursor)),
                end_time: Some(timestamp_from_millis(cursor + length)),
                ..Default::default()
            })),
            line: 0,
        });
        cursor += length;
        index += 1;
        if index % SLOTS_BETWEEN_GAPS == 0 {
            cursor += GAP_SEGMENTS * segment_ms;
        }
    }
    if items.is_empty() {
        return Ok(());
    }
    let count = items.len();
    let response = media
        .import_schedule(authorized(key, futures::stream::iter(items))?)
        .await
        .map_err(|status| anyhow::anyhow!("{}", status.message()))?
        .into_inner();
    if !response.applied {
        let errors: Vec<String> = response
            .errors
            .iter()
            .map(|error| error.message.clone())
            .collect();
        anyhow::bail!("the demo schedule was refused: {}", errors.join("; "));
    }
    tracing::info!(channel = channel.id, slots = count, "demo schedule added");
    Ok(())
}

/// Makes a program's clip with ffmpeg: a test pattern with the title and
/// the running time burned in, and a tone.
async fn make_clip(dir: &Path, program: &DemoProgram) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}.mp4", program.id));
    let video = format!(
        "{}=size=640x360:rate=25,\
         drawtext=text='{}':fontsize=40:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=8:x=24:y=24,\
         drawtext=text='%{{pts\\:hms}}':fontsize=28:fontcolor=yellow:box=1:boxcolor=black@0.6:boxborderw=6:x=24:y=h-60",
        program.pattern, program.title
    );
    let audio = format!("sine=frequency={}:sample_rate=48000", program.tone_hz);
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio])
        .args(["-t", &program.seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac"])
        .arg(&path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("cannot run ffmpeg")?;
    if !output.status.success() {
        anyhow::bail!(
            "ffmpeg cannot make the {} clip: {}",
            program.title,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(path)
}

/// The demo's settings: as `onair serve`'s, with the demo's data dir and
/// ladder unless the command line, the environment or a config file says
/// otherwise.
pub fn demo_flags(flags: &mut onair_kit::config::Flags, has_data_dir: bool, has_config: bool) {
    use onair_kit::config::Environment as _;
    let environment = ProcessEnvironment;
    if !has_data_dir && environment.var("ONAIR_DATA_DIR").is_none() {
        flags.set("data_dir", DEMO_DATA_DIR);
    }
    let ladder_given = has_config
        || environment.var("ONAIR_CONFIG").is_some()
        || environment.var("ONAIR_PLAYOUT_LADDER").is_some();
    if !ladder_given {
        flags.set("playout.ladder", DEMO_LADDER);
    }
}
