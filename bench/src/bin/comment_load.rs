//! The comment service under load: many viewers posting on one channel over
//! loopback gRPC (through blocked terms, pace, trust, the durable write and
//! the live publish), then replay pages of 500 from the slot those posts
//! filled, and the automatic verdict alone, in this process.
//!
//!     cargo build --release -p onair -p onair-bench
//!     target/release/comment_load --seconds 20
//!
//! Add `-- --database-url postgres://… --nats-url nats://…` for PostgreSQL
//! with NATS. `--server-cpu 0` pins the server to one core (run the
//! generator with `taskset -c 1`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use onair_bench::{
    ONE_ADDRESS_LOAD, ServerChoice, authorized, closed_loop, connect_channels, create_viewers,
    scratch_dir, summary, until_interrupted,
};
use onair_comment::moderation::{self, Pace, PaceLimits};
use onair_comment::settings::{ChatRules, default_chat_settings};
use onair_comment::text;
use onair_proto::comment::v1 as comment;
use onair_proto::comment::v1::comment_service_client::CommentServiceClient;
use onair_proto::media::v1 as media;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    under_test: ServerChoice,
    /// Viewers who post.
    #[arg(long, default_value_t = 2000)]
    users: usize,
    /// HTTP/2 connections the posts are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Posts in flight at once (comma-separated: one ingest run each).
    #[arg(long, value_delimiter = ',', default_value = "64")]
    concurrency: Vec<usize>,
    /// Seconds each ingest run lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Seconds the replay run lasts.
    #[arg(long, default_value_t = 10)]
    replay_seconds: u64,
    /// Blocked terms on the channel, so the filter does real work.
    #[arg(long, default_value_t = 200)]
    blocked_terms: usize,
    /// Extra arguments for `onair serve`.
    #[arg(last = true)]
    serve_args: Vec<String>,
}

/// The answers to one ingest run's posts: each verdict the comment service
/// gave, and each error by its gRPC code (a post refused by the pace rules
/// is an error, `ResourceExhausted`).
#[derive(Default)]
struct Tally {
    /// Published, shadowed ones included: the service answers a shadowed
    /// comment's author as if it were published, so that they cannot tell.
    published: AtomicU64,
    held: AtomicU64,
    rejected: AtomicU64,
    /// Any other status (hidden, unspecified): not expected from a post.
    other: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    /// Counts one answer; whether the call succeeded.
    fn count(&self, answer: Result<tonic::Response<comment::Comment>, tonic::Status>) -> bool {
        let status = match answer {
            Ok(response) => response.into_inner().status(),
            Err(error) => {
                let code = format!("{:?}", error.code());
                if let Ok(mut errors) = self.errors.lock() {
                    *errors.entry(code).or_default() += 1;
                }
                return false;
            }
        };
        let verdict = match status {
            comment::CommentStatus::Published => &self.published,
            comment::CommentStatus::Held => &self.held,
            comment::CommentStatus::Rejected => &self.rejected,
            _ => &self.other,
        };
        verdict.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// "published 1, held 2, rejected 3, other 0".
    fn verdicts(&self) -> String {
        format!(
            "published {}, held {}, rejected {}, other {}",
            self.published(),
            self.held.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed)
        )
    }

    /// The errors by code, "(ResourceExhausted 3)", or nothing.
    fn error_codes(&self) -> String {
        let Ok(errors) = self.errors.lock() else {
            return String::new();
        };
        if errors.is_empty() {
            return String::new();
        }
        let codes: Vec<String> = errors
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect();
        format!(" ({})", codes.join(", "))
    }
}

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn blocked_terms(count: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("blockedword{index}"))
        .collect()
}

/// Bodies like a busy channel's: short, mixed scripts, some repeated laughs.
fn body(sequence: u64) -> String {
    const PHRASES: [&str; 6] = [
        "what a goal",
        "ｷﾀ━━━(ﾟ∀ﾟ)━━━!!",
        "きたああああ",
        "nice save by the keeper",
        "wwwwwwww",
        "今の判定おかしくない？",
    ];
    let phrase = PHRASES[(sequence % PHRASES.len() as u64) as usize];
    format!("{phrase} #{}", sequence % 100_000)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    verdict_phase(args.blocked_terms);

    let dir = scratch_dir("onair-comment-load");
    let extra: Vec<&str> = args.serve_args.iter().map(String::as_str).collect();
    let server = args.under_test.start(&dir, &extra, ONE_ADDRESS_LOAD)?;
    let operator = server.operator_key()?;
    let endpoint = format!("http://{}", server.grpc);
    let channels = connect_channels(&endpoint, args.connections).await?;

    // A two-hour slot on channel `bench`, starting in a moment.
    let mut media_client = MediaServiceClient::new(channels[0].clone());
    let channel = media::Channel {
        id: "bench".to_owned(),
        number: 1,
        name: "Bench".to_owned(),
        ..media::Channel::default()
    };
    media_client
        .create_channel(authorized(
            media::CreateChannelRequest {
                channel: Some(channel),
            },
            &operator,
        ))
        .await?;
    let program = media_client
        .create_program(authorized(
            media::CreateProgramRequest {
                program: Some(media::Program {
                    title: "The Final".to_owned(),
                    duration: Some(prost_types::Duration {
                        seconds: 7200,
                        nanos: 0,
                    }),
                    ..media::Program::default()
                }),
            },
            &operator,
        ))
        .await?
        .into_inner();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let start_ms = (now_ms / 1000 + 2) * 1000;
    let slot = media_client
        .create_slot(authorized(
            media::CreateSlotRequest {
                channel_id: "bench".to_owned(),
                slot: Some(media::Slot {
                    program_id: program.id.clone(),
                    start_time: Some(timestamp(start_ms)),
                    end_time: Some(timestamp(start_ms + 7_200_000)),
                    ..media::Slot::default()
                }),
            },
            &operator,
        ))
        .await?
        .into_inner();

    // Pace rules off (thousands of posts per viewer), filters on.
    let mut comments = CommentServiceClient::new(channels[0].clone());
    let mut settings = default_chat_settings("bench");
    settings.max_comments_per_minute = 0;
    settings.duplicate_window_seconds = 0;
    settings.blocked_terms = blocked_terms(args.blocked_terms);
    comments
        .update_chat_settings(authorized(
            comment::UpdateChatSettingsRequest {
                channel_id: "bench".to_owned(),
                chat_settings: Some(settings),
            },
            &operator,
        ))
        .await?;

    let tokens: Vec<String> = create_viewers(&channels[0], args.users)
        .await?
        .into_iter()
        .map(|viewer| viewer.token)
        .collect();
    let tokens = Arc::new(tokens);
    let wait = start_ms - now_ms + 200;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;

    let clients: Arc<Vec<CommentServiceClient<Channel>>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(CommentServiceClient::new)
            .collect(),
    );
    let mut posted = 0;
    for concurrency in &args.concurrency {
        let cpu_before = server.cpu_time()?;
        let clients = clients.clone();
        let tokens = tokens.clone();
        let tally = Arc::new(Tally::default());
        let counted = tally.clone();
        let result = closed_loop(*concurrency, args.seconds, move |worker, sequence| {
            let mut client = clients[worker % clients.len()].clone();
            let token = tokens[(sequence % tokens.len() as u64) as usize].clone();
            let tally = counted.clone();
            async move {
                let request = comment::PostCommentRequest {
                    channel_id: "bench".to_owned(),
                    body: body(sequence),
                    commands: Vec::new(),
                };
                tally.count(client.post_comment(authorized(request, &token)).await)
            }
        })
        .await?;
        let server_cpu = server.cpu_time()? - cpu_before;
        posted += result.successes;
        // The rate and latencies are of posts answered with a verdict,
        // whichever it was; the verdicts say how many were published.
        println!(
            "ingest, {concurrency} in flight: {} answered in {:.1} s = {:.0} comments/s ({:.0} published/s); verdicts: {}; errors {}{}; {}; server CPU {:.2} s = {:.0} answered per CPU-second",
            result.successes,
            result.elapsed.as_secs_f64(),
            result.rate(),
            tally.published() as f64 / result.elapsed.as_secs_f64(),
            tally.verdicts(),
            result.errors,
            tally.error_codes(),
            summary(&result.latencies),
            server_cpu.as_secs_f64(),
            result.per_cpu_second(server_cpu)
        );
    }

    // Replay: pages of 500 from random points of the slot the posts filled.
    let last_vpos = {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        (now_ms - start_ms).max(1)
    };
    let slot_id = slot.id.clone();
    let cpu_before = server.cpu_time()?;
    let replay_clients = clients.clone();
    let result = closed_loop(1, args.replay_seconds, move |worker, sequence| {
        let mut client = replay_clients[worker % replay_clients.len()].clone();
        let slot_id = slot_id.clone();
        async move {
            let request = comment::ListSlotCommentsRequest {
                slot_id,
                from_vpos_ms: (sequence % last_vpos as u64) as i64,
                page_size: 500,
                ..comment::ListSlotCommentsRequest::default()
            };
            client.list_slot_comments(request).await.is_ok()
        }
    })
    .await?;
    let server_cpu = server.cpu_time()? - cpu_before;
    println!(
        "replay of a slot with {posted} comments posted, pages of 500 (gRPC, 1 in flight): {:.0} pages/s, errors {}; {}; {:.0} pages per CPU-second",
        result.rate(),
        result.errors,
        summary(&result.latencies),
        result.per_cpu_second(server_cpu)
    );

    let http = reqwest::Client::new();
    let http_base = format!("http://{}", server.http);
    let slot_id = slot.id.clone();
    let result = closed_loop(1, args.replay_seconds, move |_worker, sequence| {
        let url = format!(
            "{http_base}/v1/slots/{slot_id}/comments?fromVposMs={}&pageSize=500",
            sequence % last_vpos as u64
        );
        let http = http.clone();
        async move {
            match http.get(url).send().await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await?;
    println!(
        "replay, pages of 500 through REST (1 in flight): {:.0} pages/s, errors {}; {}",
        result.rate(),
        result.errors,
        summary(&result.latencies)
    );
    Ok(())
}

/// The automatic verdict alone: folding, blocked terms, pace and the content
/// rules, as a post runs them, timed one by one in this process.
fn verdict_phase(blocked: usize) {
    let mut settings = default_chat_settings("bench");
    settings.blocked_terms = blocked_terms(blocked);
    settings.slow_mode_seconds = 0;
    let rules = ChatRules::new(settings);
    let pace = Pace::default();
    let limits = PaceLimits::of(&rules);
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("valid bounds");
    let count: u64 = 200_000;
    let started = Instant::now();
    let (mut published, mut held, mut shadowed, mut rejected, mut paced) = (0u64, 0, 0, 0, 0);
    for sequence in 0..count {
        let body = body(sequence);
        let user = format!("user{}", sequence % 5000);
        let began = Instant::now();
        let folded = text::fold(&body);
        let verdict = match moderation::blocked_term(&rules, &folded) {
            Some(verdict) => Some(verdict),
            None => pace
                .admit("bench", &user, &folded, sequence as i64, limits)
                .ok()
                .map(|()| moderation::judge_content(&rules, &body, 50, 40)),
        };
        let _ = histogram.record(began.elapsed().as_nanos().max(1) as u64);
        match verdict {
            Some(moderation::Verdict::Publish) => published += 1,
            Some(moderation::Verdict::Hold(_)) => held += 1,
            Some(moderation::Verdict::Shadow(_)) => shadowed += 1,
            Some(moderation::Verdict::Reject(_)) => rejected += 1,
            None => paced += 1,
        }
    }
    let elapsed = started.elapsed();
    println!(
        "verdict ({blocked} blocked terms), {count} comments in {:.2} s: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs; verdicts: published {published}, held {held}, shadowed {shadowed}, rejected {rejected}, refused by pace {paced}; errors 0 (in process, no call to fail)",
        elapsed.as_secs_f64(),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
    );
}
