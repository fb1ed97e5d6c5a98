//! The media service's reads through REST, on a station of 50 channels with
//! 14 days of 30-minute slots: the all-channel timetable of one broadcast day,
//! `/iptv/epg.xml` for the whole station, and now/next for 50 channels in one
//! call. Each on SQLite and on PostgreSQL (a database made for the run) with
//! NATS. The server runs pinned to one core (`--server-cpu`); run this
//! generator pinned to the other:
//!
//!     cargo build --release -p onair -p onair-bench
//!     taskset -c 1 target/release/media_load --server-cpu 0
//!
//! Each read is measured twice: as served (the media service caches answers
//! until the schedule changes) and on its uncached path (a range or a list
//! of channels no request asked before, so every request reads the database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use onair_bench::{
    LoopResult, ServerChoice, ServerUnderTest, closed_loop, latency_histogram, scratch_dir,
    summary, until_interrupted,
};
use onair_proto::media::v1 as pb;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use onair_testkit::{TestDatabase, nats_url, unique_name};

const SLOT_MINUTES: i64 = 30;
const SLOTS_PER_DAY: i64 = 24 * 60 / SLOT_MINUTES;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Programs per channel; a channel's day repeats them.
const PROGRAMS_PER_CHANNEL: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    under_test: ServerChoice,
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<Backend>,
    #[arg(long, default_value_t = 50)]
    channels: usize,
    #[arg(long, default_value_t = 14)]
    days: i64,
    /// Requests in flight at once (one connection each).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds each measured read lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// One read's figures.
struct Outcome {
    result: LoopResult,
    server_cpu: Duration,
    /// The size of one answer, in bytes.
    body_bytes: usize,
}

impl Outcome {
    fn report(&self, backend: &str, name: &str) {
        println!(
            "{backend} | {name} | {:.0} req/s | {} | {:.0} req per server CPU-second | {} | {} KB",
            self.result.rate(),
            summary(&self.result.latencies),
            self.result.per_cpu_second(self.server_cpu),
            self.result.errors,
            self.body_bytes / 1000
        );
    }
}

/// A REST read: the path for a worker's `sequence`-th request, and the
/// headers to send.
#[derive(Clone)]
struct Read {
    http: reqwest::Client,
    base: String,
    path: Arc<dyn Fn(u64) -> String + Send + Sync>,
    gzip: bool,
}

impl Read {
    async fn call(&self, sequence: u64) -> Option<usize> {
        let mut request = self
            .http
            .get(format!("{}{}", self.base, (self.path)(sequence)));
        if self.gzip {
            request = request.header("accept-encoding", "gzip");
        }
        let response = request.send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let body = response.bytes().await.ok()?;
        Some(body.len())
    }
}

async fn measure(server: &ServerUnderTest, args: &Args, read: Read) -> anyhow::Result<Outcome> {
    let body_bytes = read
        .call(0)
        .await
        .ok_or_else(|| anyhow::anyhow!("the first request failed"))?;
    // A short warm-up: connections open, caches filled, pages faulted in.
    let warm = read.clone();
    closed_loop(args.concurrency, 1, move |_, sequence| {
        let read = warm.clone();
        async move { read.call(sequence).await.is_some() }
    })
    .await?;
    let cpu_before = server.cpu_time()?;
    let result = closed_loop(args.concurrency, args.seconds, move |_, sequence| {
        let read = read.clone();
        async move { read.call(sequence).await.is_some() }
    })
    .await?;
    Ok(Outcome {
        result,
        server_cpu: server.cpu_time()? - cpu_before,
        body_bytes,
    })
}

/// The media service alone on its uncached path: `GetTimetable` over gRPC
/// for a range no request asked before, as `measure` does over REST.
async fn timetable_over_grpc(
    server: &ServerUnderTest,
    args: &Args,
    first_day_ms: i64,
) -> anyhow::Result<Outcome> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))?
        .connect()
        .await?;
    let client = MediaServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let days = args.days;
    let counter = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let call = move |_: usize, _: u64| {
        let mut client = client.clone();
        let counter = counter.clone();
        async move {
            let shift = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3_600_000;
            let start = first_day_ms + (shift % days) * DAY_MS + shift;
            let request = pb::GetTimetableRequest {
                start_time: Some(timestamp(start)),
                end_time: Some(timestamp(start + DAY_MS)),
                ..Default::default()
            };
            client.get_timetable(request).await.is_ok()
        }
    };
    closed_loop(args.concurrency, 1, call.clone()).await?;
    let cpu_before = server.cpu_time()?;
    let result = closed_loop(args.concurrency, args.seconds, call).await?;
    Ok(Outcome {
        result,
        server_cpu: server.cpu_time()? - cpu_before,
        body_bytes: 0,
    })
}

/// What is changed before each timed guide request.
#[derive(Clone, Copy)]
enum Edit {
    /// Channel 1 is renamed: the media service reads that channel's week
    /// again.
    RenameChannel,
    /// A program of channel 1 is retitled: the channels that play it (here
    /// channel 1 only) are read again.
    RetitleProgram,
    /// An import of one program: an import may change anything, so the
    /// whole station's week is read again.
    Import,
}

/// The guide right after a schedule change: before each timed request, the
/// edit is made (untimed), and what it changed is read from the database and
/// the guide written anew.
async fn guide_after_changes(
    server: &ServerUnderTest,
    args: &Args,
    guide: Read,
    edit: Edit,
) -> anyhow::Result<Outcome> {
    let mut client = MediaServiceClient::connect(format!("http://{}", server.grpc)).await?;
    let credential: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", server.operator_key()?).parse()?;
    let mut latencies = latency_histogram();
    let mut errors = 0;
    let mut body_bytes = 0;
    let cpu_before = server.cpu_time()?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut change = 0u64;
    while Instant::now() < deadline {
        change += 1;
        match edit {
            Edit::RenameChannel => {
                let mut request = tonic::Request::new(pb::UpdateChannelRequest {
                    channel: Some(pb::Channel {
                        id: channel_id(0),
                        name: format!("onair Channel 1 (edit {change})"),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["name".to_owned()],
                    }),
                });
                request
                    .metadata_mut()
                    .insert("authorization", credential.clone());
                client.update_channel(request).await?;
            }
            Edit::RetitleProgram => {
                let mut request = tonic::Request::new(pb::UpdateProgramRequest {
                    program: Some(pb::Program {
                        id: format!("{}-show-0", channel_id(0)),
                        title: format!("Show 0 of channel 1 (edit {change})"),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["title".to_owned()],
                    }),
                });
                request
                    .metadata_mut()
                    .insert("authorization", credential.clone());
                client.update_program(request).await?;
            }
            Edit::Import => {
                let mut program = station_items(1, 0, 0)
                    .into_iter()
                    .find_map(|item| match item.item {
                        Some(pb::import_schedule_item::Item::Program(program)) => Some(program),
                        _ => None,
                    })
                    .ok_or_else(|| anyhow::anyhow!("the station has no program"))?;
                program.title = format!("{} (import {change})", program.title);
                let item = pb::ImportScheduleItem {
                    item: Some(pb::import_schedule_item::Item::Program(program)),
                    line: 1,
                };
                let mut request = tonic::Request::new(futures::stream::iter(vec![item]));
                request
                    .metadata_mut()
                    .insert("authorization", credential.clone());
                let response = client.import_schedule(request).await?.into_inner();
                if !response.applied {
                    anyhow::bail!("the import was refused: {:?}", response.errors.first());
                }
            }
        }
        // Only a guide that arrived is timed; a failed one is counted apart.
        let sent = Instant::now();
        match guide.call(change).await {
            Some(bytes) => {
                latencies.record(sent.elapsed().as_micros().max(1) as u64)?;
                body_bytes = bytes;
            }
            None => errors += 1,
        }
    }
    Ok(Outcome {
        result: LoopResult {
            successes: latencies.len(),
            errors,
            elapsed: started.elapsed(),
            latencies,
        },
        server_cpu: server.cpu_time()? - cpu_before,
        body_bytes,
    })
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: 0,
    }
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|time| time.to_string())
        .unwrap_or_default()
}

fn channel_id(index: usize) -> String {
    format!("channel-{:02}", index + 1)
}

/// The station's schedule as import items: every channel, its programs, and
/// `days` days of back-to-back 30-minute slots from `first_day_ms`.
fn station_items(channels: usize, days: i64, first_day_ms: i64) -> Vec<pb::ImportScheduleItem> {
    let mut items = Vec::new();
    let mut line = 0;
    let mut next_line = || {
        line += 1;
        line
    };
    for channel in 0..channels {
        items.push(pb::ImportScheduleItem {
            item: Some(pb::import_schedule_item::Item::Channel(pb::Channel {
                id: channel_id(channel),
                number: i32::try_from(channel + 1).unwrap_or(i32::MAX),
                name: format!("onair Channel {}", channel + 1),
                logo_url: format!("https://img.example.com/logos/{}.png", channel + 1),
                group: ["News", "Sports", "Kids", "Movies", "Music"][channel % 5].to_owned(),
                ..Default::default()
            })),
            line: next_line(),
        });
        for program in 0..PROGRAMS_PER_CHANNEL {
            items.push(pb::ImportScheduleItem {
                item: Some(pb::import_schedule_item::Item::Program(pb::Program {
                    id: format!("{}-show-{program}", channel_id(channel)),
                    title: format!("Show {program} of channel {}", channel + 1),
                    description: format!(
                        "Episode guide text for show {program}: what happens, who is in it, and why it is worth watching tonight."
                    ),
                    genres: vec!["Entertainment".to_owned(), "Series".to_owned()],
                    duration: Some(prost_types::Duration {
                        seconds: SLOT_MINUTES * 60,
                        nanos: 0,
                    }),
                    rating: "G".to_owned(),
                    artwork_url: format!(
                        "https://img.example.com/art/{}-{program}.jpg",
                        channel + 1
                    ),
                    ..Default::default()
                })),
                line: next_line(),
            });
        }
    }
    for channel in 0..channels {
        for slot in 0..days * SLOTS_PER_DAY {
            let start_ms = first_day_ms + slot * SLOT_MINUTES * 60_000;
            let program = usize::try_from(slot).unwrap_or_default() % PROGRAMS_PER_CHANNEL;
            items.push(pb::ImportScheduleItem {
                item: Some(pb::import_schedule_item::Item::Slot(pb::Slot {
                    channel_id: channel_id(channel),
                    program_id: format!("{}-show-{program}", channel_id(channel)),
                    start_time: Some(timestamp(start_ms)),
                    end_time: Some(timestamp(start_ms + SLOT_MINUTES * 60_000)),
                    ..Default::default()
                })),
                line: next_line(),
            });
        }
    }
    items
}

async fn seed(
    server: &ServerUnderTest,
    channels: usize,
    days: i64,
    first_day_ms: i64,
) -> anyhow::Result<()> {
    let items = station_items(channels, days, first_day_ms);
    let count = items.len();
    let mut client = MediaServiceClient::connect(format!("http://{}", server.grpc)).await?;
    let mut request = tonic::Request::new(futures::stream::iter(items));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", server.operator_key()?).parse()?,
    );
    let started = Instant::now();
    let response = client.import_schedule(request).await?.into_inner();
    if !response.applied {
        anyhow::bail!("the import was refused: {:?}", response.errors.first());
    }
    println!(
        "seeded {channels} channels x {days} days ({} slots, {count} items) in one import: {:.2} s",
        response.slots,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every read of the benchmark against one station.
async fn run_backend(args: &Args, backend: Backend) -> anyhow::Result<()> {
    let dir = scratch_dir("onair-media-load");
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDatabase::create().await),
    };
    let bus_prefix = unique_name("bench");
    let nats = nats_url();
    let mut environment = vec![
        ("ONAIR_GATEWAY_RATE_LIMIT_PER_IP", "0"),
        ("ONAIR_GATEWAY_RATE_LIMIT_PER_USER", "0"),
        ("ONAIR_LOG_LEVEL", "warn,onair=info"),
    ];
    if let Some(database) = &database {
        environment.push(("ONAIR_DATABASE_URL", database.url.as_str()));
        environment.push(("ONAIR_NATS_URL", nats.as_str()));
        environment.push(("ONAIR_BUS_PREFIX", bus_prefix.as_str()));
    }
    let label = match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL + NATS",
    };
    let server = args.under_test.start(&dir, &[], &environment)?;

    // The schedule starts at today's UTC midnight (the station's broadcast
    // day start), so the guide's 7 days and today's now/next are all in it.
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let first_day_ms = now_ms - now_ms.rem_euclid(DAY_MS);
    seed(&server, args.channels, args.days, first_day_ms).await?;

    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let base = format!("http://{}", server.http);
    let read = |path: Arc<dyn Fn(u64) -> String + Send + Sync>, gzip: bool| Read {
        http: http.clone(),
        base: base.clone(),
        path,
        gzip,
    };

    let days = args.days;
    let day_names: Arc<Vec<String>> = Arc::new(
        (0..days)
            .map(|day| rfc3339(first_day_ms + day * DAY_MS)[..10].to_owned())
            .collect(),
    );
    let cached_days = day_names.clone();
    let timetable = read(
        Arc::new(move |sequence| {
            let day =
                &cached_days[usize::try_from(sequence).unwrap_or_default() % cached_days.len()];
            format!("/v1/timetable?broadcastDay={day}")
        }),
        false,
    );
    measure(&server, args, timetable).await?.report(
        label,
        "GET /v1/timetable?broadcastDay (all channels, one day), cached",
    );

    // A range no request asked before: a day shifted by a unique number of
    // milliseconds, which reads the same slots from the database.
    let counter = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let uncached = read(
        Arc::new(move |_| {
            let shift = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 3_600_000;
            let day = (shift % days) * DAY_MS;
            let start = first_day_ms + day + shift;
            format!(
                "/v1/timetable?startTime={}&endTime={}",
                rfc3339(start),
                rfc3339(start + DAY_MS)
            )
        }),
        false,
    );
    measure(&server, args, uncached)
        .await?
        .report(label, "GET /v1/timetable (all channels, one day), uncached");
    timetable_over_grpc(&server, args, first_day_ms)
        .await?
        .report(
            label,
            "GetTimetable over gRPC (all channels, one day), uncached",
        );

    let guide = read(Arc::new(|_| "/iptv/epg.xml".to_owned()), false);
    measure(&server, args, guide)
        .await?
        .report(label, "GET /iptv/epg.xml (7 days, whole station)");
    let guide_gzip = read(Arc::new(|_| "/iptv/epg.xml".to_owned()), true);
    measure(&server, args, guide_gzip)
        .await?
        .report(label, "GET /iptv/epg.xml, Accept-Encoding: gzip");
    let guide = read(Arc::new(|_| "/iptv/epg.xml".to_owned()), false);
    guide_after_changes(&server, args, guide, Edit::RenameChannel)
        .await?
        .report(label, "GET /iptv/epg.xml after each channel rename");
    let guide = read(Arc::new(|_| "/iptv/epg.xml".to_owned()), false);
    guide_after_changes(&server, args, guide, Edit::RetitleProgram)
        .await?
        .report(label, "GET /iptv/epg.xml after each program retitle");
    let guide = read(Arc::new(|_| "/iptv/epg.xml".to_owned()), false);
    guide_after_changes(&server, args, guide, Edit::Import)
        .await?
        .report(label, "GET /iptv/epg.xml after each one-program import");

    let channel_ids: Arc<Vec<String>> = Arc::new((0..args.channels).map(channel_id).collect());
    let listed = channel_ids.clone();
    let now_next = read(
        Arc::new(move |_| {
            let query: Vec<String> = listed.iter().map(|id| format!("channelIds={id}")).collect();
            format!("/v1/now?{}", query.join("&"))
        }),
        false,
    );
    measure(&server, args, now_next)
        .await?
        .report(label, "GET /v1/now (50 channels), cached");
    // Another order of the same channels is another question to the cache.
    let now_next_uncached = read(
        Arc::new(move |sequence| {
            let mut ids: Vec<&String> = channel_ids.iter().collect();
            let mut state = sequence | 1;
            for index in (1..ids.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let other = usize::try_from(state % (index as u64 + 1)).unwrap_or_default();
                ids.swap(index, other);
            }
            let query: Vec<String> = ids.iter().map(|id| format!("channelIds={id}")).collect();
            format!("/v1/now?{}", query.join("&"))
        }),
        false,
    );
    measure(&server, args, now_next_uncached)
        .await?
        .report(label, "GET /v1/now (50 channels), uncached");

    drop(server);
    drop(database);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!(
        "backend | read | rate (successful) | latency (successful) | work per server CPU-second | errors | answer size"
    );
    for backend in args.backends.clone() {
        run_backend(&args, backend).await?;
    }
    Ok(())
}
