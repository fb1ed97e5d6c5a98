//! Live playlist requests: a channel's live media playlist from onair against
//! the same playlist served as a static file by nginx (Debian's nginx-light),
//! the same load, in one run, each server pinned to the same core; then the
//! playlist's freshness: how long after its program date-time each new
//! segment is first seen in the playlist.
//!
//!     cargo build --release -p onair -p onair-bench
//!     taskset -c 1 target/release/playlist_load --server-cpu 0

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use clap::Parser;
use onair_bench::{
    Outcome, STOP_GRACE, ServerChoice, closed_loop, cpu_time_of, in_own_process_group,
    pinned_command, scratch_dir, stop_process_group, until_interrupted,
};
use onair_proto::media::v1 as media;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    under_test: ServerChoice,
    /// Requests in flight (and keep-alive connections).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// How many times to alternate the two measurements.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// How long to watch the playlist for freshness.
    #[arg(long, default_value_t = 24)]
    freshness_seconds: u64,
    /// How often the freshness watcher reloads the playlist, in ms.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// The nginx binary.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
}

/// nginx serving one directory on a port of loopback: a master in the
/// foreground and one worker, in a process group of their own; both are
/// stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(binary: &Path, root: &Path, cpu: Option<usize>) -> anyhow::Result<Nginx> {
        let port = free_port()?;
        let prefix = root.join("nginx");
        std::fs::create_dir_all(prefix.join("logs"))?;
        let config = prefix.join("nginx.conf");
        // One worker, like the one core onair gets; keep-alive as players use.
        std::fs::write(
            &config,
            format!(
                "daemon off;\nworker_processes 1;\nerror_log {errors} error;\npid {pid};\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  keepalive_requests 1000000;\n  \
                 types {{ application/vnd.apple.mpegurl m3u8; }}\n  \
                 server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n",
                errors = prefix.join("logs/error.log").display(),
                pid = prefix.join("nginx.pid").display(),
                root = root.display(),
            ),
        )?;
        let mut command = pinned_command(binary, cpu);
        in_own_process_group(&mut command);
        let child = command
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (apt-get install nginx-light)",
                    binary.display()
                )
            })?;
        Ok(Nginx { child, port })
    }

    /// The worker's pid: the process that serves.
    fn worker_pid(&self) -> anyhow::Result<u32> {
        let children = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            self.child.id(),
            self.child.id()
        ))?;
        children
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .context("nginx has no worker")
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master, which stops its worker and exits (a SIGKILL
    /// would leave the worker listening); the group is killed if it has not
    /// after [`STOP_GRACE`].
    fn drop(&mut self) {
        stop_process_group(&mut self.child, "TERM", STOP_GRACE);
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

async fn measure(
    pid: u32,
    client: &reqwest::Client,
    url: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Outcome> {
    let cpu_before = cpu_time_of(pid)?;
    let client = client.clone();
    let url = url.to_owned();
    let result = closed_loop(concurrency, seconds, move |_worker, _sequence| {
        let request = client.get(&url);
        async move {
            match request.send().await {
                Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await?;
    Ok(Outcome {
        result,
        server_cpu: cpu_time_of(pid)? - cpu_before,
    })
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_millis() as i64)
        .unwrap_or_default()
}

/// The (URI, program date-time) of each segment of a playlist.
fn segments(playlist: &str) -> Vec<(i64, i64)> {
    let mut found = Vec::new();
    let mut sequence = 0;
    let mut pdt = None;
    for line in playlist.lines() {
        if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            sequence = value.parse().unwrap_or_default();
        } else if let Some(value) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = value
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|timestamp| timestamp.as_millisecond());
        } else if !line.starts_with('#') && !line.is_empty() {
            if let Some(pdt) = pdt.take() {
                found.push((sequence, pdt));
            }
            sequence += 1;
        }
    }
    found
}

/// The live playlist's text, or `None` if the request failed.
async fn reload(client: &reqwest::Client, url: &str) -> Option<String> {
    let response = client.get(url).send().await.ok()?;
    if response.status() != 200 {
        return None;
    }
    response.text().await.ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = scratch_dir("onair-playlist-load");
    let server = args.under_test.start(
        &dir.join("onair"),
        &[],
        &[("ONAIR_PLAYOUT_LADDER", "360p:640x360:800,180p:320x180:250")],
    )?;
    let key = server.operator_key()?;
    let channel = Channel::from_shared(format!("http://{}", server.grpc))?
        .connect()
        .await?;
    let mut media = MediaServiceClient::new(channel);
    let mut request = tonic::Request::new(media::CreateChannelRequest {
        channel: Some(media::Channel {
            id: "bench".to_owned(),
            name: "Bench".to_owned(),
            ..Default::default()
        }),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse()?);
    media.create_channel(request).await?;

    let url = format!("http://{}/hls/bench/360p/index.m3u8", server.http);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .http1_only()
        .build()?;
    // The channel airs once the station's slate is transcoded.
    let waited = Instant::now();
    let playlist = loop {
        let response = client.get(&url).send().await?;
        if response.status() == 200 {
            break response.text().await?;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("the channel did not air within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let static_root = dir.join("static");
    std::fs::create_dir_all(&static_root)?;
    std::fs::write(static_root.join("index.m3u8"), &playlist)?;
    let nginx = Nginx::start(&args.nginx, &static_root, args.under_test.server_cpu)?;
    let nginx_url = format!("http://127.0.0.1:{}/index.m3u8", nginx.port);
    let started = Instant::now();
    while client.get(&nginx_url).send().await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("nginx does not answer");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let nginx_pid = nginx.worker_pid()?;
    println!(
        "playlist of {} bytes, {} in flight, {} s per measurement",
        playlist.len(),
        args.concurrency,
        args.seconds
    );

    measure(server.pid(), &client, &url, args.concurrency, 2).await?;
    measure(nginx_pid, &client, &nginx_url, args.concurrency, 2).await?;
    for round in 1..=args.rounds {
        let onair = measure(server.pid(), &client, &url, args.concurrency, args.seconds).await?;
        let static_file = measure(
            nginx_pid,
            &client,
            &nginx_url,
            args.concurrency,
            args.seconds,
        )
        .await?;
        onair.report(&format!("round {round} onair live playlist"));
        static_file.report(&format!("round {round} nginx static file"));
        println!(
            "round {round} onair / nginx: {:.0} % (errors: onair {}, nginx {})",
            onair.result.rate() / static_file.result.rate() * 100.0,
            onair.result.errors,
            static_file.result.errors
        );
    }
    drop(nginx);

    // Freshness: reload the playlist every poll_ms and note when each new
    // segment first shows, against its program date-time.
    let mut seen = HashSet::new();
    let mut delays = Vec::new();
    let until = Instant::now() + Duration::from_secs(args.freshness_seconds);
    let mut first = true;
    let mut reloads = 0;
    let mut errors = 0;
    while Instant::now() < until {
        let Some(text) = reload(&client, &url).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
            continue;
        };
        reloads += 1;
        let now = unix_ms(SystemTime::now());
        for (sequence, pdt) in segments(&text) {
            if seen.insert(sequence) && !first {
                delays.push(now - pdt);
            }
        }
        first = false;
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
    delays.sort_unstable();
    match (delays.first(), delays.last()) {
        (Some(best), Some(worst)) => println!(
            "freshness: {} new segments, first seen {best} to {worst} ms after their program date-time (polling every {} ms; {reloads} reloads, errors {errors})",
            delays.len(),
            args.poll_ms
        ),
        _ => println!(
            "freshness: no new segment seen in {} s ({reloads} reloads, errors {errors})",
            args.freshness_seconds
        ),
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a process is gone, or a zombie waiting for its parent.
    fn gone(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X")
        })
    }

    #[test]
    fn nginx_leaves_neither_master_nor_worker_behind() {
        let binary = Path::new("/usr/sbin/nginx");
        if !binary.exists() {
            eprintln!(
                "skipped: no {} (apt-get install nginx-light)",
                binary.display()
            );
            return;
        }
        let root = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(root.path().join("index.m3u8"), "#EXTM3U\n").expect("write the playlist");
        let nginx = Nginx::start(binary, root.path(), None).expect("nginx starts");
        let port = nginx.port;
        let master = nginx.child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        let worker = loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && let Ok(worker) = nginx.worker_pid()
            {
                break worker;
            }
            assert!(Instant::now() < deadline, "nginx does not answer");
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(nginx);
        assert!(gone(master), "nginx's master {master} is still running");
        assert!(gone(worker), "nginx's worker {worker} is still running");
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "something still listens on {port}"
        );
    }
}
