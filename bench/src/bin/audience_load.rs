//! The audience service under load over loopback gRPC.
//!
//! - Heartbeats: `--viewers` simulated viewers spread over `--channels`
//!   channels, each heartbeating every `--interval` seconds (open loop, the
//!   beats spread evenly); once every viewer has beaten, the counts are read
//!   every second and compared with the truth. Prints the server CPU per
//!   1,000 heartbeats, the worst count error and the errors.
//! - Sessions: `--sessions` open `ViewerSession` streams, spread over
//!   channels of their own; prints the server's memory per session and how
//!   long after one more viewer joins a channel its sessions are told.
//! - Votes: one poll, a ballot from each of `--voters` viewers, closed loop;
//!   prints votes a second and checks the final tally is exact. Each voter
//!   has read the poll first (outside the timed part), as a player that
//!   shows it does, so their token is verified before they vote.
//!
//! `--only votes` (or `heartbeats`, `sessions`) runs one phase, creating
//! only the viewers it needs.
//!
//! The server runs pinned to one core (`--server-cpu`); run this generator
//! pinned to the other:
//!
//!     cargo build --release -p onair -p onair-bench
//!     taskset -c 1 target/release/audience_load --server-cpu 0
//!     taskset -c 1 target/release/audience_load --server-cpu 0 -- --redis-url redis://127.0.0.1:6379
//!     taskset -c 1 target/release/audience_load --server-cpu 0 --only votes

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use onair_bench::{
    ONE_ADDRESS_LOAD, ServerChoice, authorized, closed_loop, connect_channels, scratch_dir,
    summary, until_interrupted,
};
use onair_proto::audience::v1 as audience;
use onair_proto::audience::v1::audience_service_client::AudienceServiceClient;
use onair_proto::media::v1 as media;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use onair_proto::user::v1 as user;
use onair_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

/// One phase of the run.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    Heartbeats,
    Sessions,
    Votes,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    under_test: ServerChoice,
    /// Simulated viewers.
    #[arg(long, default_value_t = 100_000)]
    viewers: usize,
    /// Channels they are spread over.
    #[arg(long, default_value_t = 20)]
    channels: usize,
    /// Seconds between two heartbeats of a viewer.
    #[arg(long, default_value_t = 30)]
    interval: u64,
    /// Seconds the counts are checked for, after every viewer has beaten.
    #[arg(long, default_value_t = 30)]
    check_seconds: u64,
    /// Open `ViewerSession` streams.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// HTTP/2 connections the sessions are spread over.
    #[arg(long, default_value_t = 50)]
    session_connections: usize,
    /// Viewers who vote in the poll (the first ones created).
    #[arg(long, default_value_t = 20_000)]
    voters: usize,
    /// Ballots in flight at once: many viewers vote in the same moments
    /// after a poll opens.
    #[arg(long, default_value_t = 256)]
    vote_concurrency: usize,
    /// Runs only this phase (every phase when not given).
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Extra arguments for `onair serve`.
    #[arg(last = true)]
    serve_args: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = scratch_dir("onair-audience-load");
    let mut extra: Vec<&str> = vec!["--roles", "user,media,audience"];
    extra.extend(args.serve_args.iter().map(String::as_str));
    let server = args.under_test.start(&dir, &extra, ONE_ADDRESS_LOAD)?;
    let channels = connect_channels(&format!("http://{}", server.grpc), args.connections).await?;
    let operator = server.operator_key()?;

    let channel_ids: Vec<String> = (0..args.channels)
        .map(|index| format!("ch{index}"))
        .collect();
    let mut media_client = MediaServiceClient::new(channels[0].clone());
    for (index, channel_id) in channel_ids.iter().enumerate() {
        media_client
            .create_channel(authorized(
                media::CreateChannelRequest {
                    channel: Some(media::Channel {
                        id: channel_id.clone(),
                        number: i32::try_from(index + 1)?,
                        name: channel_id.clone(),
                        ..Default::default()
                    }),
                },
                &operator,
            ))
            .await?;
    }

    let runs = |phase: Phase| args.only.is_none_or(|only| only == phase);
    // Only as many viewers as the phases run need.
    let mut needed = 0;
    if runs(Phase::Heartbeats) {
        needed = needed.max(args.viewers);
    }
    if runs(Phase::Sessions) && args.sessions > 0 {
        needed = needed.max(args.sessions + 1);
    }
    if runs(Phase::Votes) {
        needed = needed.max(args.voters);
    }
    let started = Instant::now();
    let tokens = Arc::new(create_tokens(&channels, needed).await?);
    println!(
        "server pid {} on {}: {} viewers created in {:.1} s, over {} channels",
        server.pid(),
        server.grpc,
        tokens.len(),
        started.elapsed().as_secs_f64(),
        channel_ids.len()
    );

    if runs(Phase::Heartbeats) {
        heartbeats(&args, &server, &channels, &channel_ids, &tokens).await?;
    }
    if runs(Phase::Sessions) {
        sessions(&args, &server, &operator, &tokens).await?;
    }
    if runs(Phase::Votes) {
        vote(
            &args,
            &channels,
            &operator,
            &channel_ids[0],
            &tokens,
            &server,
        )
        .await?;
    }
    Ok(())
}

/// Every viewer heartbeats on its channel every `--interval` seconds; once
/// all have beaten, the counts are checked against the truth every second.
async fn heartbeats(
    args: &Args,
    server: &onair_bench::ServerUnderTest,
    channels: &[Channel],
    channel_ids: &[String],
    tokens: &Arc<Vec<String>>,
) -> anyhow::Result<()> {
    // Heartbeats, open loop: viewer i beats at (i / viewers) of each interval.
    let beats = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = server.cpu_time()?;
    let beat_started = Instant::now();
    let interval = Duration::from_secs(args.interval);
    let senders = 64usize;
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let tokens = tokens.clone();
        let channel_ids = channel_ids.to_vec();
        let beats = beats.clone();
        let errors = errors.clone();
        let mut client = AudienceServiceClient::new(channels[sender % channels.len()].clone());
        let viewers = tokens.len();
        tasks.push(tokio::spawn(async move {
            let mut round = 0u32;
            loop {
                for viewer in (sender..viewers).step_by(senders) {
                    let due = beat_started
                        + interval * round
                        + interval.mul_f64(viewer as f64 / viewers as f64);
                    tokio::time::sleep_until(due.into()).await;
                    let request = authorized(
                        audience::HeartbeatRequest {
                            channel_id: channel_ids[viewer % channel_ids.len()].clone(),
                        },
                        &tokens[viewer],
                    );
                    match client.heartbeat(request).await {
                        Ok(_) => beats.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
                round += 1;
            }
        }));
    }
    // Every viewer has beaten once after one interval; then check the counts.
    tokio::time::sleep_until((beat_started + interval + Duration::from_secs(2)).into()).await;
    let mut audience_client = AudienceServiceClient::new(channels[0].clone());
    let truth: Vec<u64> = (0..channel_ids.len())
        .map(|channel| {
            (0..tokens.len())
                .filter(|viewer| viewer % channel_ids.len() == channel)
                .count() as u64
        })
        .collect();
    let mut worst_error = 0.0f64;
    let mut checks = 0;
    for _ in 0..args.check_seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts = audience_client
            .batch_get_viewer_counts(audience::BatchGetViewerCountsRequest {
                channel_ids: channel_ids.to_vec(),
            })
            .await?
            .into_inner()
            .counts;
        for (count, expected) in counts.iter().zip(&truth) {
            let got = u64::try_from(count.count).unwrap_or(0);
            let error = (got as f64 - *expected as f64).abs() / *expected as f64;
            worst_error = worst_error.max(error);
        }
        checks += 1;
    }
    for task in tasks {
        task.abort();
    }
    let cpu = server.cpu_time()? - cpu_before;
    let beats = beats.load(Ordering::Relaxed);
    let rss_mib = server.rss_bytes()? as f64 / (1024.0 * 1024.0);
    println!(
        "heartbeats: {beats} in {:.1} s = {:.0}/s, errors {}; server CPU {:.2} s = {:.1} ms per 1,000 heartbeats; counts checked {checks} times, worst error {:.2} % of the truth; server RSS {rss_mib:.0} MiB",
        beat_started.elapsed().as_secs_f64(),
        beats as f64 / beat_started.elapsed().as_secs_f64(),
        errors.load(Ordering::Relaxed),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 * 1000.0 / beats.max(1) as f64,
        worst_error * 100.0
    );
    Ok(())
}

/// Opens the sessions, then one more on the first channel, and times how
/// long its sessions take to hear of it.
async fn sessions(
    args: &Args,
    server: &onair_bench::ServerUnderTest,
    operator: &str,
    tokens: &[String],
) -> anyhow::Result<()> {
    if args.sessions == 0 || tokens.len() <= args.sessions {
        return Ok(());
    }
    let sessions = args.sessions;
    // Channels of their own, which the heartbeats' marks don't count on.
    let channel_ids: Vec<String> = (0..args.channels.max(1))
        .map(|index| format!("session{index}"))
        .collect();
    let mut media_client = MediaServiceClient::new(
        connect_channels(&format!("http://{}", server.grpc), 1).await?[0].clone(),
    );
    for (index, channel_id) in channel_ids.iter().enumerate() {
        media_client
            .create_channel(authorized(
                media::CreateChannelRequest {
                    channel: Some(media::Channel {
                        id: channel_id.clone(),
                        number: i32::try_from(1000 + index)?,
                        name: channel_id.clone(),
                        ..Default::default()
                    }),
                },
                operator,
            ))
            .await?;
    }
    let connections =
        connect_channels(&format!("http://{}", server.grpc), args.session_connections).await?;
    let rss_before = server.rss_bytes()?;
    let opened = Instant::now();
    let first_channel = channel_ids[0].clone();
    // Sessions on the first channel report when they hear a count above
    // the one they were first told.
    let (heard, mut hearings) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut kept = Vec::with_capacity(sessions + 1);
    let mut senders = Vec::with_capacity(sessions + 1);
    let mut on_first = 0usize;
    let mut errors = 0u64;
    let mut joined = Instant::now();
    for index in 0..=sessions {
        let one_more = index == sessions;
        let channel_id = if one_more {
            println!(
                "sessions: {} open in {:.1} s, errors {errors}; server RSS {:.0} MiB more = {:.1} KiB per session",
                index - errors as usize,
                opened.elapsed().as_secs_f64(),
                server.rss_bytes()?.saturating_sub(rss_before) as f64 / (1024.0 * 1024.0),
                server.rss_bytes()?.saturating_sub(rss_before) as f64
                    / 1024.0
                    / (index - errors as usize).max(1) as f64
            );
            // The one more viewer, once the others are settled.
            tokio::time::sleep(Duration::from_secs(3)).await;
            joined = Instant::now();
            first_channel.clone()
        } else {
            channel_ids[index % channel_ids.len()].clone()
        };
        // Viewer i is session i; the one more is the next viewer.
        let token = &tokens[index];
        let mut client = AudienceServiceClient::new(connections[index % connections.len()].clone());
        let (up, requests) = tokio::sync::mpsc::channel(1);
        up.send(audience::HeartbeatRequest {
            channel_id: channel_id.clone(),
        })
        .await?;
        let session = client
            .viewer_session(authorized(
                tokio_stream::wrappers::ReceiverStream::new(requests),
                token,
            ))
            .await;
        let Ok(response) = session else {
            errors += 1;
            continue;
        };
        let mut counts = response.into_inner();
        let Ok(Some(first)) = counts.message().await else {
            errors += 1;
            continue;
        };
        if channel_id == first_channel && !one_more {
            on_first += 1;
            let heard = heard.clone();
            let told = first.count;
            tokio::spawn(async move {
                while let Ok(Some(count)) = counts.message().await {
                    if count.count > told {
                        let _ = heard.send((index, Instant::now()));
                    }
                }
            });
        } else {
            kept.push(counts);
        }
        // The heartbeat side stays open as long as the run: the session too.
        senders.push(up);
    }
    // What sessions heard before the one more viewer joined was the others
    // opening; each session counts once, from its first hearing after.
    let mut latest = Duration::ZERO;
    let mut told = std::collections::HashSet::new();
    let deadline = joined + Duration::from_secs(10);
    while told.len() < on_first {
        match tokio::time::timeout_at(deadline.into(), hearings.recv()).await {
            Ok(Some((session, at))) if at >= joined => {
                if told.insert(session) {
                    latest = latest.max(at - joined);
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let told = told.len();
    println!(
        "sessions: one more viewer on {first_channel}: {told} of its {on_first} sessions told, the last {:.0} ms after it joined",
        latest.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// One poll on a slot on air; a ballot from each of the first `--voters`
/// viewers, closed loop; then the final tally checked.
async fn vote(
    args: &Args,
    channels: &[Channel],
    operator: &str,
    channel_id: &str,
    tokens: &Arc<Vec<String>>,
    server: &onair_bench::ServerUnderTest,
) -> anyhow::Result<()> {
    let mut media_client = MediaServiceClient::new(channels[0].clone());
    let program = media_client
        .create_program(authorized(
            media::CreateProgramRequest {
                program: Some(media::Program {
                    title: "The Vote".to_owned(),
                    duration: Some(prost_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            },
            operator,
        ))
        .await?
        .into_inner();
    let now = std::time::SystemTime::now();
    let slot = media_client
        .create_slot(authorized(
            media::CreateSlotRequest {
                channel_id: channel_id.to_owned(),
                slot: Some(media::Slot {
                    program_id: program.id,
                    start_time: Some(prost_types::Timestamp::from(now - Duration::from_secs(60))),
                    end_time: Some(prost_types::Timestamp::from(
                        now + Duration::from_secs(3540),
                    )),
                    ..Default::default()
                }),
            },
            operator,
        ))
        .await?
        .into_inner();
    let mut audience_client = AudienceServiceClient::new(channels[0].clone());
    let poll = audience_client
        .create_poll(authorized(
            audience::CreatePollRequest {
                slot_id: slot.id,
                poll: Some(audience::Poll {
                    question: "Which?".to_owned(),
                    options: ["Red", "Blue", "Green"]
                        .iter()
                        .map(|text| audience::PollOption {
                            text: (*text).to_owned(),
                            ..Default::default()
                        })
                        .collect(),
                    close_time: Some(prost_types::Timestamp::from(
                        now + Duration::from_secs(1800),
                    )),
                    ..Default::default()
                }),
            },
            operator,
        ))
        .await?
        .into_inner();
    let voters = args.voters.min(tokens.len());
    // A viewer votes from a player that shows the poll: it has read the
    // poll with its token, which the server verified then.
    let warm_started = Instant::now();
    let readers = 64usize;
    let mut readings = Vec::new();
    for reader in 0..readers {
        let mut client = AudienceServiceClient::new(channels[reader % channels.len()].clone());
        let tokens = tokens.clone();
        let poll_id = poll.id.clone();
        readings.push(tokio::spawn(async move {
            for voter in (reader..voters).step_by(readers) {
                client
                    .get_poll(authorized(
                        audience::GetPollRequest {
                            poll_id: poll_id.clone(),
                        },
                        &tokens[voter],
                    ))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for reading in readings {
        reading.await??;
    }
    println!(
        "votes: {voters} voters read the poll in {:.1} s (not timed), then vote {} at a time",
        warm_started.elapsed().as_secs_f64(),
        args.vote_concurrency
    );
    let next_voter = Arc::new(AtomicU64::new(0));
    let clients: Arc<Vec<AudienceServiceClient<Channel>>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(AudienceServiceClient::new)
            .collect(),
    );
    let cpu_before = server.cpu_time()?;
    let poll_id = poll.id.clone();
    let vote_started = Instant::now();
    // Milliseconds from the start until the last voter was handed out.
    let done_after_ms = Arc::new(AtomicU64::new(0));
    let ballots = {
        let tokens = tokens.clone();
        let next_voter = next_voter.clone();
        let done_after_ms = done_after_ms.clone();
        move |worker: usize, _sequence: u64| {
            let mut client = clients[worker % clients.len()].clone();
            let tokens = tokens.clone();
            let next_voter = next_voter.clone();
            let poll_id = poll_id.clone();
            let done_after_ms = done_after_ms.clone();
            async move {
                let voter = next_voter.fetch_add(1, Ordering::Relaxed) as usize;
                if voter >= voters {
                    let elapsed = vote_started.elapsed().as_millis() as u64;
                    let _ = done_after_ms.compare_exchange(
                        0,
                        elapsed,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    // Everyone has voted: wait out the run.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return false;
                }
                let option = ["1", "2", "3"][voter % 3].to_owned();
                client
                    .cast_ballot(authorized(
                        audience::CastBallotRequest {
                            poll_id,
                            option_id: option,
                        },
                        &tokens[voter],
                    ))
                    .await
                    .is_ok()
            }
        }
    };
    // Long enough for every voter at a thousand ballots a second.
    let seconds = (voters as u64 / 1000).clamp(5, 120);
    let result = closed_loop(args.vote_concurrency, seconds, ballots).await?;
    let cpu = server.cpu_time()? - cpu_before;
    let voting = match done_after_ms.load(Ordering::Relaxed) {
        0 => result.elapsed,
        millis => Duration::from_millis(millis),
    };
    let idle = next_voter
        .load(Ordering::Relaxed)
        .saturating_sub(voters as u64);
    let refused = result.errors.saturating_sub(idle);
    let closed = audience_client
        .close_poll(authorized(
            audience::ClosePollRequest {
                poll_id: poll.id.clone(),
            },
            operator,
        ))
        .await?
        .into_inner();
    let tally: Vec<i64> = closed.options.iter().map(|option| option.votes).collect();
    let cast = result.successes;
    let expected: Vec<i64> = (0..3)
        .map(|option| {
            (0..usize::try_from(cast).unwrap_or(0))
                .filter(|voter| voter % 3 == option)
                .count() as i64
        })
        .collect();
    println!(
        "votes: {cast} ballots in {:.1} s = {:.0}/s, errors {refused}; {}; server CPU {:.2} s = {:.0} ballots per CPU-second; final tally {tally:?}, {}",
        voting.as_secs_f64(),
        cast as f64 / voting.as_secs_f64(),
        summary(&result.latencies),
        cpu.as_secs_f64(),
        cast as f64 / cpu.as_secs_f64().max(0.001),
        if tally == expected && closed.total_votes == cast as i64 {
            "exact".to_owned()
        } else {
            format!("NOT exact (expected {expected:?})")
        }
    );
    Ok(())
}

/// Creates `count` viewer accounts over gRPC, many at once; their tokens.
async fn create_tokens(channels: &[Channel], count: usize) -> anyhow::Result<Vec<String>> {
    let creators = 16usize;
    let mut tasks = Vec::new();
    for creator in 0..creators {
        let mut client = UserServiceClient::new(channels[creator % channels.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for index in (creator..count).step_by(creators) {
                let created = client
                    .create_user(user::CreateUserRequest {
                        display_name: format!("Viewer {index}"),
                    })
                    .await?
                    .into_inner();
                made.push((index, created.access_token));
            }
            anyhow::Ok(made)
        }));
    }
    let mut tokens = vec![String::new(); count];
    for task in tasks {
        for (index, token) in task.await?? {
            tokens[index] = token;
        }
    }
    Ok(tokens)
}
