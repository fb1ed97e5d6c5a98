//! Cold start: from spawning `onair serve` on an empty data dir to `/readyz`
//! answering 200, and the resident memory once it idles.
//!
//!     cargo build --release -p onair -p onair-bench
//!     target/release/startup --runs 10

use std::time::{Duration, Instant};

use clap::Parser;
use onair_bench::{ServerUnderTest, default_server_binary};

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = args.server.unwrap_or_else(default_server_binary);
    let client = reqwest::Client::new();
    let mut ready_times = Vec::new();
    let mut idle_rss = Vec::new();
    for _ in 0..args.runs {
        let dir = std::env::temp_dir().join(format!("onair-startup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let server = ServerUnderTest::start(&binary, &dir, None, &[])?;
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
        ready_times.push(ready_after);
        tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
        idle_rss.push(server.rss_bytes()?);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
    ready_times.sort();
    idle_rss.sort();
    let median = ready_times[ready_times.len() / 2];
    println!(
        "cold start to /readyz 200 over {} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        args.runs,
        ready_times[0].as_secs_f64() * 1000.0,
        median.as_secs_f64() * 1000.0,
        ready_times[ready_times.len() - 1].as_secs_f64() * 1000.0
    );
    println!(
        "idle RSS after {} s: min {:.1} MB, median {:.1} MB, max {:.1} MB",
        args.idle_seconds,
        idle_rss[0] as f64 / 1e6,
        idle_rss[idle_rss.len() / 2] as f64 / 1e6,
        idle_rss[idle_rss.len() - 1] as f64 / 1e6
    );
    Ok(())
}
