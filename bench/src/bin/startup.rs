//! Cold start: from spawning `onair serve` on an empty data dir to `/readyz`
//! answering 200, and the resident memory once it idles.
//!
//!     cargo build --release -p onair -p onair-bench
//!     target/release/startup --runs 10

use std::time::{Duration, Instant};

use clap::Parser;
use onair_bench::{ServerUnderTest, default_server_binary, until_interrupted};

#[derive(Parser)]
struct Args {
    /// The onair binary to measure.
    #[arg(long)]
    server: Option<std::path::PathBuf>,
    /// How many cold starts to measure.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// How long the server idles before its memory is read.
    #[arg(long, default_value_t = 2)]
    idle_seconds: u64,
}

/// One cold start: how long until `/readyz` answered 200, and the resident
/// memory after idling.
async fn cold_start(
    binary: &std::path::Path,
    client: &reqwest::Client,
    idle_seconds: u64,
) -> anyhow::Result<(Duration, u64)> {
    let dir = std::env::temp_dir().join(format!("onair-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ServerUnderTest::start(binary, &dir, None, &[])?;
    let url = format!("http://{}/readyz", server.http);
    let give_up = Instant::now() + Duration::from_secs(30);
    let ready_after = loop {
        if let Ok(response) = client.get(&url).send().await
            && response.status() == 200
        {
            break server.spawned.elapsed();
        }
        anyhow::ensure!(Instant::now() < give_up, "never ready");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let rss = server.rss_bytes()?;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((ready_after, rss))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let binary = args.server.unwrap_or_else(default_server_binary);
    let client = reqwest::Client::new();
    let mut ready_times = Vec::new();
    let mut idle_rss = Vec::new();
    // A start that fails is counted and told, not timed.
    let mut errors = 0;
    for attempt in 1..=args.runs {
        match cold_start(&binary, &client, args.idle_seconds).await {
            Ok((ready_after, rss)) => {
                ready_times.push(ready_after);
                idle_rss.push(rss);
            }
            Err(error) => {
                errors += 1;
                eprintln!("run {attempt}: {error:#}");
            }
        }
    }
    anyhow::ensure!(
        !ready_times.is_empty(),
        "every one of the {} runs failed",
        args.runs
    );
    ready_times.sort();
    idle_rss.sort();
    let median = ready_times[ready_times.len() / 2];
    println!(
        "cold start to /readyz 200 over {} runs, errors {errors}: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ready_times.len(),
        ready_times[0].as_secs_f64() * 1000.0,
        median.as_secs_f64() * 1000.0,
        ready_times[ready_times.len() - 1].as_secs_f64() * 1000.0
    );
    println!(
        "idle RSS after {} s over {} runs, errors {errors}: min {:.1} MB, median {:.1} MB, max {:.1} MB",
        args.idle_seconds,
        idle_rss.len(),
        idle_rss[0] as f64 / 1e6,
        idle_rss[idle_rss.len() / 2] as f64 / 1e6,
        idle_rss[idle_rss.len() - 1] as f64 / 1e6
    );
    Ok(())
}
