//! The live delivery gap after a NATS restart: how long after the broker is
//! back (its port accepts connections again) the first new comment reaches a
//! viewer's live WebSocket. Starts its own `nats-server` (own port and store)
//! and `onair serve` on it, posts a comment every `--post-ms` over REST, and
//! restarts the broker `--rounds` times.
//!
//!     cargo build --release -p onair -p onair-bench
//!     target/release/live_gap --rounds 5

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use onair_bench::{
    STOP_GRACE, ServerUnderTest, default_server_binary, in_own_process_group, stop_process_group,
    until_interrupted,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    server: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/nats-server")]
    nats_server: PathBuf,
    /// Broker restarts to measure (at most 20).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// How long the broker stays down each round.
    #[arg(long, default_value_t = 1000)]
    down_ms: u64,
    /// One comment is posted this often.
    #[arg(long, default_value_t = 20)]
    post_ms: u64,
}

/// Longest a round may take before the run gives up.
const ROUND_LIMIT: Duration = Duration::from_secs(30);

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The broker this benchmark restarts, in a process group of its own; stopped
/// on drop, so an early return leaves no broker behind.
struct Nats {
    child: Child,
}

impl Nats {
    fn start(binary: &PathBuf, port: u16, store: &std::path::Path) -> anyhow::Result<Nats> {
        let mut command = Command::new(binary);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        in_own_process_group(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Nats { child })
    }
}

impl Drop for Nats {
    /// SIGTERM, as a broker restart in production; the group is killed if it
    /// has not exited after [`STOP_GRACE`].
    fn drop(&mut self) {
        stop_process_group(&mut self.child, "TERM", STOP_GRACE);
    }
}

/// Waits until the port accepts connections; the moment it did.
fn wait_for_port(port: u16) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + ROUND_LIMIT;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("nats-server does not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

async fn call(
    client: &reqwest::Client,
    url: String,
    key: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client.post(url).bearer_auth(key).json(&body).send().await?;
    let status = response.status();
    let answer: Value = response.json().await?;
    if !status.is_success() {
        bail!("{status}: {answer}");
    }
    Ok(answer)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let rounds = args.rounds.min(20);
    let store = tempfile::tempdir()?;
    let port = free_port()?;
    let mut nats = Nats::start(&args.nats_server, port, store.path())?;
    wait_for_port(port)?;
    let data = tempfile::tempdir()?;
    let binary = args.server.unwrap_or_else(default_server_binary);
    let url = format!("nats://127.0.0.1:{port}");
    let server = ServerUnderTest::start(
        &binary,
        data.path(),
        None,
        &["--roles", "user,media,comment,gateway", "--nats-url", &url],
    )?;
    let key = server.operator_key()?;
    let http = format!("http://{}", server.http);
    let client = reqwest::Client::new();

    call(
        &client,
        format!("{http}/v1/channels"),
        &key,
        json!({"id": "news", "number": 1, "name": "News"}),
    )
    .await?;
    let program = call(
        &client,
        format!("{http}/v1/programs"),
        &key,
        json!({"title": "News", "duration": "7200s"}),
    )
    .await?;
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let end = start + jiff::SignedDuration::from_secs(7200);
    call(
        &client,
        format!("{http}/v1/channels/news/slots"),
        &key,
        json!({"programId": program["id"], "startTime": start.to_string(), "endTime": end.to_string()}),
    )
    .await?;

    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/channels/news/live", server.http))
            .await?;

    // Comments carry their number, so the first one posted after the broker's
    // return can be told from older ones.
    let posted = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let poster = {
        let (posted, failed, client, key, http) = (
            posted.clone(),
            failed.clone(),
            client.clone(),
            key.clone(),
            http.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(args.post_ms));
            loop {
                tick.tick().await;
                let number = posted.fetch_add(1, Ordering::SeqCst) + 1;
                let body = json!({"body": format!("comment {number}")});
                let url = format!("{http}/v1/channels/news/comments");
                if call(&client, url, &key, body).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let mut gaps = Vec::new();
    let mut resets = 0;
    for round in 1..=rounds {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let failed_before = failed.load(Ordering::Relaxed);
        // The old broker is stopped (and waited for) before the new one starts.
        drop(nats);
        tokio::time::sleep(Duration::from_millis(args.down_ms)).await;
        nats = Nats::start(&args.nats_server, port, store.path())?;
        let back = tokio::task::spawn_blocking(move || wait_for_port(port)).await??;
        let newest_before = posted.load(Ordering::SeqCst);
        let deadline = back + ROUND_LIMIT;
        let delivered = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(message)) = tokio::time::timeout(remaining, socket.next()).await else {
                bail!("round {round}: no comment within {ROUND_LIMIT:?} of the broker's return");
            };
            let Message::Text(text) = message? else {
                continue;
            };
            let events: Value = serde_json::from_str(text.as_str())?;
            let mut newer = false;
            for event in events.as_array().into_iter().flatten() {
                if event["type"] == "reset" {
                    resets += 1;
                }
                let number = event["data"]["comment"]["body"]
                    .as_str()
                    .and_then(|body| body.strip_prefix("comment "))
                    .and_then(|number| number.parse::<u64>().ok());
                newer |= number.is_some_and(|number| number > newest_before);
            }
            if newer {
                break Instant::now();
            }
        };
        let gap = delivered - back;
        println!(
            "round {round}: first comment {:.0} ms after the broker's return; posts refused or failed in the round (errors) {}",
            gap.as_secs_f64() * 1000.0,
            failed.load(Ordering::Relaxed) - failed_before
        );
        gaps.push(gap);
    }
    poster.abort();
    drop(nats);
    gaps.sort();
    let ms = |duration: &Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "gap after a NATS restart over {rounds} rounds: min {:.0} / median {:.0} / max {:.0} ms; {} comments posted, errors {} (posts refused or failed, while the broker was down); {resets} reset events seen",
        gaps.first().map(ms).unwrap_or_default(),
        gaps.get(gaps.len() / 2).map(ms).unwrap_or_default(),
        gaps.last().map(ms).unwrap_or_default(),
        posted.load(Ordering::SeqCst),
        failed.load(Ordering::Relaxed),
    );
    Ok(())
}
