//! Shared pieces of the load generators: starting a server under test, reading
//! its CPU time and memory, and summarising latencies.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A server process started for a measurement; killed on drop.
pub struct ServerUnderTest {
    pub child: Child,
    pub grpc: String,
    pub http: String,
    pub data_dir: PathBuf,
    /// When the command was spawned, for start-up timing.
    pub spawned: Instant,
}

impl ServerUnderTest {
    /// Starts `onair serve` on ports 0, pinned to `cpu` when given, and waits
    /// for its "listening" log line.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        cpu: Option<usize>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        ServerUnderTest::start_with_env(binary, data_dir, cpu, extra, &[])
    }

    /// As [`ServerUnderTest::start`], with more environment variables.
    pub fn start_with_env(
        binary: &Path,
        data_dir: &Path,
        cpu: Option<usize>,
        extra: &[&str],
        environment: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = match cpu {
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", &cpu.to_string()]).arg(binary);
                taskset
            }
            None => Command::new(binary),
        };
        command
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--grpc",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("ONAIR_LOG_FORMAT", "json")
            .env("ONAIR_LOG_LEVEL", "info")
            .envs(environment.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if value["message"] == "listening" {
                    let grpc = value["grpc"].as_str().unwrap_or_default().to_owned();
                    let http = value["http"].as_str().unwrap_or_default().to_owned();
                    let _ = sender.send((grpc, http));
                }
            }
        });
        let (grpc, http) = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(addresses) => addresses,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the server did not log its addresses (is log.level above info?)");
            }
        };
        Ok(ServerUnderTest {
            child,
            grpc,
            http,
            data_dir: data_dir.to_path_buf(),
            spawned,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time of the server so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(self.pid())
    }

    /// Resident memory in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("VmRSS:") {
                let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse()?;
                return Ok(kib * 1024);
            }
        }
        bail!("no VmRSS in /proc/{}/status", self.pid())
    }

    pub fn operator_key(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.data_dir.join("operator.key"))?
            .trim()
            .to_owned())
    }
}

impl Drop for ServerUnderTest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, from /proc/<pid>/stat.
pub fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields resume after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    let ticks_per_second = 100.0; // USER_HZ on Linux
    Ok(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_second,
    ))
}

/// p50, p99 and max of a histogram in microseconds, as milliseconds.
pub fn summary(histogram: &hdrhistogram::Histogram<u64>) -> String {
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        histogram.value_at_quantile(0.50) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    )
}

/// Environment that turns off the per-address limits on new accounts and
/// comments: a load generator sends everything from one address, which those
/// limits exist to stop.
pub const ONE_ADDRESS_LOAD: &[(&str, &str)] = &[
    ("ONAIR_USER_ACCOUNTS_PER_IP_PER_MINUTE", "0"),
    ("ONAIR_COMMENT_PER_IP_PER_MINUTE", "0"),
];

/// The release binary next to this one, e.g. target/release/onair.
pub fn default_server_binary() -> PathBuf {
    let current = std::env::current_exe().unwrap_or_default();
    current.with_file_name("onair")
}

/// What a closed-loop run measured.
pub struct LoopResult {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Send-to-answer latency of every request, in microseconds.
    pub latencies: hdrhistogram::Histogram<u64>,
}

impl LoopResult {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Keeps `concurrency` calls in flight for `seconds`: each worker sends its
/// next call as soon as the last one answers. `call(worker, sequence)` returns
/// whether the call succeeded.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    seconds: u64,
    call: F,
) -> anyhow::Result<LoopResult>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .expect("valid bounds");
            let mut errors = 0u64;
            let mut sequence = worker as u64 * 7919 + 1;
            while Instant::now() < deadline {
                sequence = sequence
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let sent = Instant::now();
                if !call(worker, sequence).await {
                    errors += 1;
                }
                let _ = histogram.record(sent.elapsed().as_micros().max(1) as u64);
            }
            (histogram, errors)
        }));
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for worker in workers {
        let (histogram, worker_errors) = worker.await?;
        latencies.add(&histogram)?;
        errors += worker_errors;
    }
    Ok(LoopResult {
        requests: latencies.len(),
        errors,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// A request with `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}
