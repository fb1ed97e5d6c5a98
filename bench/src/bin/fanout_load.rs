//! Live-socket fan-out: many WebSocket viewers on one channel, events
//! published at a fixed rate, every delivery checked and timed.
//!
//! `--target onair` starts `onair serve` with NATS as its bus and publishes the
//! bus's own live events (comments) on NATS; `--target ws` starts the usual
//! broadcast server of npm's `ws` package (bench/peer) and publishes the same
//! JSON through its publisher socket. The viewers, the rate and the checks are
//! the same for both.
//!
//! Each event carries its sequence and its send time (microseconds since the
//! epoch) in its id, `b<seq>-<micros>`; viewers check that sequences arrive in
//! order with no gap and record publish-to-receive latency on the same clock.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use futures::SinkExt;
use onair_bench::{
    STOP_GRACE, ServerUnderTest, cpu_time_of, default_server_binary, in_own_process_group,
    stop_process_group, until_interrupted,
};
use onair_kit::bus::{Bus, NatsBus};
use onair_kit::events::{LiveEvent, LiveKind};
use onair_proto::comment::v1::Comment;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// `onair` or `ws` (npm's ws broadcast server).
    #[arg(long, default_value = "onair")]
    target: String,
    /// WebSocket viewers on the channel.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Events published per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// How long to publish.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The core the server is pinned to.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// onair's batch window (gateway.live_batch_window_ms).
    #[arg(long, default_value_t = 30)]
    batch_window_ms: u64,
    /// Client source addresses, 127.0.0.1 up to 127.0.0.N.
    #[arg(long, default_value_t = 50)]
    addresses: u8,
    /// New connections per second.
    #[arg(long, default_value_t = 2000)]
    connect_rate: u64,
    /// Characters in each comment's body.
    #[arg(long, default_value_t = 100)]
    body: usize,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    #[arg(long)]
    server: Option<PathBuf>,
}

/// Latency buckets of 100 µs up to 10 s, counted without locks.
struct Latencies {
    buckets: Vec<AtomicU64>,
}

const BUCKET_MICROS: u64 = 100;

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            buckets: (0..100_000).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, micros: u64) {
        let index = ((micros / BUCKET_MICROS) as usize).min(self.buckets.len() - 1);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
    }

    /// The latency below which `quantile` of the samples fall, in ms.
    fn quantile_ms(&self, quantile: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let wanted = (total as f64 * quantile).ceil() as u64;
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted.max(1) {
                return ((index as u64 + 1) * BUCKET_MICROS) as f64 / 1000.0;
            }
        }
        0.0
    }

    fn max_ms(&self) -> f64 {
        self.buckets
            .iter()
            .rposition(|bucket| bucket.load(Ordering::Relaxed) > 0)
            .map_or(0.0, |index| {
                ((index as u64 + 1) * BUCKET_MICROS) as f64 / 1000.0
            })
    }
}

#[derive(Default)]
struct Counts {
    deliveries: AtomicU64,
    out_of_order: AtomicU64,
    frames: AtomicU64,
    closed: AtomicU64,
    /// Viewers whose socket failed (a read error, a frame it could not
    /// parse, a pong it could not send), counted apart from those the server
    /// closed.
    errors: AtomicU64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64)
}

/// Reads every `"id":"b<seq>-<micros>"` of a frame.
fn scan_ids(text: &[u8], mut found: impl FnMut(u64, u64)) {
    static MARK: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"id\":\"b"));
    let mut rest = text;
    while let Some(at) = MARK.find(rest) {
        rest = &rest[at + MARK.needle().len()..];
        let (seq, after_seq) = leading_number(rest);
        let Some((b'-', tail)) = after_seq.split_first() else {
            continue;
        };
        let (micros, after_micros) = leading_number(tail);
        if let (Some(seq), Some(micros)) = (seq, micros) {
            found(seq, micros);
        }
        rest = after_micros;
    }
}

/// The decimal number at the start of `text`, if there is one, and what follows it.
fn leading_number(text: &[u8]) -> (Option<u64>, &[u8]) {
    let digits = text.iter().take_while(|byte| byte.is_ascii_digit()).count();
    let mut value: u64 = 0;
    for &digit in &text[..digits] {
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
    }
    ((digits > 0).then_some(value), &text[digits..])
}

/// A viewer's side of a WebSocket, read straight from its socket.
///
/// The generator has to cost less than the server it measures. A general
/// client zeroes its whole read buffer before each read, which on 10,000
/// sockets took a fifth of the generator's core; this one reads into the spare
/// capacity of one buffer that it keeps, and only parses what a server sends:
/// unmasked frames, answering pings.
struct Viewer {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
    /// The bytes at the front of `buffer` that the last frame handed out took.
    consumed: usize,
}

/// A frame from the server.
enum Incoming<'a> {
    /// A text or binary message, or a continuation of one.
    Data(&'a [u8]),
    Ping(Vec<u8>),
    Close,
    Other,
}

/// The example key of RFC 6455 section 1.3, and the answer it requires.
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const HANDSHAKE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// How much room a read has at least.
const READ_CHUNK: usize = 8 * 1024;

impl Viewer {
    /// Opens the WebSocket on a connected stream: sends the upgrade request
    /// and checks the server's answer.
    async fn open(mut stream: tokio::net::TcpStream, url: &str) -> anyhow::Result<Viewer> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url
            .strip_prefix("ws://")
            .context("the live URL is not ws://")?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::with_capacity(READ_CHUNK);
        let head_end = loop {
            if let Some(at) = memchr::memmem::find(&buffer, b"\r\n\r\n") {
                break at + 4;
            }
            if buffer.len() > 16 * 1024 {
                bail!("the upgrade answer has no end");
            }
            buffer.reserve(READ_CHUNK);
            if stream.read_buf(&mut buffer).await? == 0 {
                bail!("the server closed the connection during the upgrade");
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            bail!(
                "the server refused the upgrade: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        let accepted = head.lines().any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("sec-websocket-accept")
                    && value.trim() == HANDSHAKE_ACCEPT
            })
        });
        if !accepted {
            bail!("the server's Sec-WebSocket-Accept does not match the key");
        }
        Ok(Viewer {
            stream,
            buffer,
            consumed: head_end,
        })
    }

    /// The next frame, or `None` once the server closes the connection.
    async fn next(&mut self) -> anyhow::Result<Option<Incoming<'_>>> {
        use tokio::io::AsyncReadExt;
        self.buffer.drain(..self.consumed);
        self.consumed = 0;
        loop {
            if let Some((header, length)) = self.frame_size()?
                && self.buffer.len() >= header + length
            {
                self.consumed = header + length;
                let payload = &self.buffer[header..header + length];
                return Ok(Some(match self.buffer[0] & 0x0f {
                    0..=2 => Incoming::Data(payload),
                    8 => Incoming::Close,
                    9 => Incoming::Ping(payload.to_vec()),
                    _ => Incoming::Other,
                }));
            }
            if self.buffer.capacity() - self.buffer.len() < READ_CHUNK {
                self.buffer.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The header and payload lengths of the frame at the front of the buffer,
    /// once its header is all there.
    fn frame_size(&self) -> anyhow::Result<Option<(usize, usize)>> {
        let buffer = &self.buffer[..];
        let [_, second, ..] = *buffer else {
            return Ok(None);
        };
        if second & 0x80 != 0 {
            bail!("the server sent a masked frame");
        }
        let (header, length) = match second & 0x7f {
            126 if buffer.len() >= 4 => (4, u64::from(u16::from_be_bytes([buffer[2], buffer[3]]))),
            127 if buffer.len() >= 10 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&buffer[2..10]);
                (10, u64::from_be_bytes(bytes))
            }
            126 | 127 => return Ok(None),
            short => (2, u64::from(short)),
        };
        Ok(Some((header, usize::try_from(length)?)))
    }

    /// Answers a ping (a client's frames are masked; a zero key leaves the
    /// payload as it is).
    async fn pong(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        let length = u8::try_from(payload.len())
            .ok()
            .filter(|length| *length <= 125);
        let length = length.context("a ping's payload is at most 125 bytes")?;
        let mut frame = vec![0x8a, 0x80 | length, 0, 0, 0, 0];
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await?;
        Ok(())
    }
}

/// The peer server: npm's ws broadcast example, pinned like onair, in a
/// process group of its own; stopped on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        stop_process_group(&mut self.child, "TERM", STOP_GRACE);
    }
}

fn start_peer(cpu: usize) -> anyhow::Result<Peer> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peer");
    if !dir.join("node_modules/ws").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .context("npm is needed for the ws peer (apt-get install npm)")?;
        if !status.success() {
            bail!("npm ci failed in {}", dir.display());
        }
    }
    let mut command = Command::new("taskset");
    command
        .args(["-c", &cpu.to_string(), "node", "ws-fanout.js"])
        .current_dir(&dir)
        .stdout(Stdio::piped());
    in_own_process_group(&mut command);
    let mut peer = Peer {
        child: command.spawn().context("cannot start node")?,
        port: 0,
    };
    let stdout = peer.child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    peer.port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|port| port.parse().ok())
        .with_context(|| format!("unexpected first line from the peer: {line:?}"))?;
    Ok(peer)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let prefix = format!("fanout{}", std::process::id());
    let data_dir = std::env::temp_dir().join(format!("onair-fanout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);

    // Start the server under test.
    let mut onair = None;
    let mut peer = None;
    let (pid, live_url) = match args.target.as_str() {
        "onair" => {
            let binary = args.server.clone().unwrap_or_else(default_server_binary);
            let window = args.batch_window_ms.to_string();
            let server = ServerUnderTest::start_with_env(
                &binary,
                &data_dir,
                Some(args.server_cpu),
                &["--nats-url", &args.nats_url],
                &[
                    ("ONAIR_BUS_PREFIX", prefix.as_str()),
                    ("ONAIR_GATEWAY_RATE_LIMIT_PER_IP", "0"),
                    ("ONAIR_GATEWAY_LIVE_BATCH_WINDOW_MS", window.as_str()),
                ],
            )?;
            let response = reqwest::Client::new()
                .post(format!("http://{}/v1/channels", server.http))
                .bearer_auth(server.operator_key()?)
                .json(&serde_json::json!({"id": "bench", "number": 1, "name": "Bench"}))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("cannot create the channel: {}", response.text().await?);
            }
            let url = format!("ws://{}/v1/channels/bench/live", server.http);
            let pid = server.pid();
            onair = Some(server);
            (pid, url)
        }
        "ws" => {
            let started = start_peer(args.server_cpu)?;
            let url = format!("ws://127.0.0.1:{}/live", started.port);
            let pid = started.child.id();
            peer = Some(started);
            (pid, url)
        }
        other => bail!("--target is onair or ws, not {other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = |pid: u32| -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status
            .lines()
            .find(|line| line.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("no value")?
            .parse()?;
        Ok(kib * 1024)
    };
    let rss_before = rss(pid)?;

    // Connect the viewers at a bounded rate, spread over source addresses.
    let counts = Arc::new(Counts::default());
    let latencies = Arc::new(Latencies::new());
    let host_port = live_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let server_addr: std::net::SocketAddr = host_port.parse()?;
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / args.connect_rate as f64));
    let connecting = Instant::now();
    let mut readers = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        pace.tick().await;
        let source =
            std::net::Ipv4Addr::new(127, 0, 0, 1 + (index % args.addresses as usize) as u8);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let stream = socket.connect(server_addr).await?;
        stream.set_nodelay(true)?;
        let mut viewer = Viewer::open(stream, &live_url)
            .await
            .with_context(|| format!("viewer {index} cannot connect"))?;
        let counts = counts.clone();
        let latencies = latencies.clone();
        readers.push(tokio::spawn(async move {
            let mut next_seq: Option<u64> = None;
            loop {
                let text = match viewer.next().await {
                    Ok(Some(Incoming::Data(text))) => text,
                    Ok(Some(Incoming::Ping(payload))) => {
                        if viewer.pong(&payload).await.is_err() {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        continue;
                    }
                    Ok(Some(Incoming::Other)) => continue,
                    Ok(Some(Incoming::Close) | None) => break,
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                counts.frames.fetch_add(1, Ordering::Relaxed);
                let now = now_micros();
                let mut delivered = 0;
                scan_ids(text, |seq, sent| {
                    delivered += 1;
                    latencies.record(now.saturating_sub(sent));
                    if next_seq.is_some_and(|expected| expected != seq) {
                        counts.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    next_seq = Some(seq + 1);
                });
                counts.deliveries.fetch_add(delivered, Ordering::Relaxed);
            }
            counts.closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let connect_seconds = connecting.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss(pid)?;
    let per_connection = (rss_idle.saturating_sub(rss_before)) as f64 / args.clients as f64;

    // Publish at the rate for the duration.
    let body = "x".repeat(args.body);
    let total = args.rate * args.seconds;
    let bus = match args.target.as_str() {
        "onair" => Some(Arc::new(NatsBus::connect(&args.nats_url, &prefix).await?) as Arc<dyn Bus>),
        _ => None,
    };
    let mut publisher = match &peer {
        Some(peer) => {
            let url = format!("ws://127.0.0.1:{}/publish", peer.port);
            Some(tokio_tungstenite::connect_async(url).await?.0)
        }
        None => None,
    };
    let cpu_before = cpu_time_of(pid)?;
    let own_cpu_before = cpu_time_of(std::process::id())?;
    let publishing = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    for seq in 0..total {
        tick.tick().await;
        let id = format!("b{seq}-{}", now_micros());
        if let Some(bus) = &bus {
            let comment = Comment {
                id,
                channel_id: "bench".to_owned(),
                body: body.clone(),
                ..Comment::default()
            };
            LiveEvent::pack(
                "bench",
                LiveKind::Comment,
                "onair.comment.v1.Comment",
                &comment,
            )
            .publish(bus)
            .await?;
        } else if let Some(publisher) = &mut publisher {
            let event = serde_json::json!([{
                "type": "comment",
                "offset": seq + 1,
                "data": {"id": id, "channelId": "bench", "body": body},
            }]);
            publisher.send(Message::text(event.to_string())).await?;
        }
    }
    let published_for = publishing.elapsed();
    // Let the last events arrive.
    let expected = total * args.clients as u64;
    let drain_until = Instant::now() + Duration::from_secs(10);
    while counts.deliveries.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = cpu_time_of(pid)?.saturating_sub(cpu_before);
    let own_cpu = cpu_time_of(std::process::id())?.saturating_sub(own_cpu_before);
    let deliveries = counts.deliveries.load(Ordering::Relaxed);

    println!(
        "target {}: {} viewers (connected in {connect_seconds:.1} s), {} events at {} /s for {:.1} s{}",
        args.target,
        args.clients,
        total,
        args.rate,
        published_for.as_secs_f64(),
        if args.target == "onair" {
            format!(", batch window {} ms", args.batch_window_ms)
        } else {
            String::new()
        }
    );
    println!(
        "deliveries {deliveries} of {expected} ({} missing), out of order {}, viewers closed by the server {}, errors {}",
        expected.saturating_sub(deliveries),
        counts.out_of_order.load(Ordering::Relaxed),
        counts
            .closed
            .load(Ordering::Relaxed)
            .saturating_sub(counts.errors.load(Ordering::Relaxed)),
        counts.errors.load(Ordering::Relaxed)
    );
    println!(
        "frames received {}, load generator CPU {:.2} s, server CPU {:.2} s, {:.0} deliveries per CPU-second",
        counts.frames.load(Ordering::Relaxed),
        own_cpu.as_secs_f64(),
        cpu.as_secs_f64(),
        deliveries as f64 / cpu.as_secs_f64().max(0.001)
    );
    println!(
        "publish-to-receive p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.quantile_ms(0.50),
        latencies.quantile_ms(0.99),
        latencies.max_ms()
    );
    println!(
        "server RSS {:.1} MB before viewers, {:.1} MB with them idle: {:.1} KB per idle connection",
        rss_before as f64 / 1e6,
        rss_idle as f64 / 1e6,
        per_connection / 1000.0
    );
    // Close the viewers' sockets first, so the server has none to drain.
    for reader in &readers {
        reader.abort();
    }
    for reader in readers {
        let _ = reader.await;
    }
    drop(onair);
    drop(peer);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
