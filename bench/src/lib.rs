//! Shared pieces of the load generators: starting a server under test and
//! stopping it with everything it started, reading its CPU time and memory,
//! and keeping calls in flight while counting successes and errors apart.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a process is given to exit after it is asked to (SIGTERM),
/// stopping its own children, before every process left in its group is
/// killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Makes `command` start a process group of its own, so that the process and
/// everything it starts (the server's ffmpeg runs, nginx's worker) can be
/// stopped together by [`stop_process_group`]. `taskset` execs the command it
/// is given, so a pinned process leads the group as well.
pub fn in_own_process_group(command: &mut Command) -> &mut Command {
    command.process_group(0)
}

/// Stops a child started with [`in_own_process_group`]: sends it `signal`
/// ("TERM", "QUIT", …), gives it up to `grace` to exit, then kills every
/// process still in its group and reaps the child. Nothing it started
/// survives, whether it exited in time or not.
pub fn stop_process_group(child: &mut Child, signal: &str, grace: Duration) {
    let pid = child.id();
    if !has_exited(pid) {
        send_signal(signal, &pid.to_string());
        let deadline = Instant::now() + grace;
        while !has_exited(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The child is not reaped yet: as a zombie it still holds its pid and its
    // group's id, so the group signalled here can only be its own.
    send_signal("KILL", &format!("-{pid}"));
    let _ = child.wait();
}

/// Whether a child has exited (it is a zombie, or gone).
fn has_exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X") | None)
}

/// `kill -s <signal> -- <target>`; a target of `-<pgid>` is a whole group.
/// A target already gone is not an error here.
fn send_signal(signal: &str, target: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs a benchmark until it ends or the generator is interrupted (SIGINT,
/// SIGTERM). On an interrupt the benchmark's future is dropped, and with it
/// every server and peer it started, whose `Drop` stops them: they are in
/// process groups of their own, so a Ctrl-C on the terminal no longer reaches
/// them directly. Both signals are taken over before the benchmark starts, so
/// none can end the generator while a server it spawned is left running.
pub async fn until_interrupted<T>(
    benchmark: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        outcome = benchmark => outcome,
        _ = interrupt.recv() => bail!("interrupted (SIGINT); the processes it started are stopped"),
        _ = terminate.recv() => bail!("interrupted (SIGTERM); the processes it started are stopped"),
    }
}

/// A server process started for a measurement, in a process group of its
/// own; stopped on drop with everything it started.
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
        let mut command = pinned_command(binary, cpu);
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
        in_own_process_group(&mut command);
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
                stop_process_group(&mut child, "TERM", STOP_GRACE);
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
    /// SIGTERM, as an orchestrator stops it: the server drains and stops the
    /// ffmpeg runs it started. Whatever is left of its group after
    /// [`STOP_GRACE`] is killed.
    fn drop(&mut self) {
        stop_process_group(&mut self.child, "TERM", STOP_GRACE);
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
    if histogram.is_empty() {
        return "no successful call to time".to_owned();
    }
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

/// A command that runs `binary` on one core (through taskset), or on any
/// core when `cpu` is None.
pub fn pinned_command(binary: &Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &cpu.to_string()]).arg(binary);
            taskset
        }
        None => Command::new(binary),
    }
}

/// Opens `count` HTTP/2 connections to a gRPC endpoint, such as
/// `http://127.0.0.1:50051`.
pub async fn connect_channels(
    endpoint: &str,
    count: usize,
) -> anyhow::Result<Vec<tonic::transport::Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let endpoint = tonic::transport::Channel::from_shared(endpoint.to_owned())?;
        channels.push(endpoint.connect().await?);
    }
    Ok(channels)
}

/// The release binary next to this one, e.g. target/release/onair.
pub fn default_server_binary() -> PathBuf {
    let current = std::env::current_exe().unwrap_or_default();
    current.with_file_name("onair")
}

/// The server a load generator measures: which binary, and which core it runs
/// on. Every load generator takes these two flags.
#[derive(clap::Args, Debug, Clone)]
#[command(about = None, long_about = None)]
pub struct ServerChoice {
    /// The onair binary to measure (default: the release binary next to this
    /// one).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// The core the server is pinned to (none: both cores).
    #[arg(long)]
    pub server_cpu: Option<usize>,
}

impl ServerChoice {
    /// The binary to start: `--server`, or the release binary next to this one.
    pub fn binary(&self) -> PathBuf {
        self.server.clone().unwrap_or_else(default_server_binary)
    }

    /// Starts `onair serve` from the chosen binary on `data_dir`, pinned to
    /// the chosen core, with `extra` arguments and `environment` set.
    pub fn start(
        &self,
        data_dir: &Path,
        extra: &[&str],
        environment: &[(&str, &str)],
    ) -> anyhow::Result<ServerUnderTest> {
        ServerUnderTest::start_with_env(
            &self.binary(),
            data_dir,
            self.server_cpu,
            extra,
            environment,
        )
    }
}

/// An empty scratch directory of this run, named after the load generator and
/// the process id, under the system's temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A viewer account made for a load: its id and access token.
pub struct Viewer {
    /// The user id.
    pub id: String,
    /// An access token of the viewer.
    pub token: String,
}

/// Creates `count` viewer accounts over gRPC, named "Viewer 0", "Viewer 1"…
pub async fn create_viewers(
    channel: &tonic::transport::Channel,
    count: usize,
) -> anyhow::Result<Vec<Viewer>> {
    use onair_proto::user::v1 as user;
    let mut client = user::user_service_client::UserServiceClient::new(channel.clone());
    let mut viewers = Vec::with_capacity(count);
    for index in 0..count {
        let created = client
            .create_user(user::CreateUserRequest {
                display_name: format!("Viewer {index}"),
            })
            .await?
            .into_inner();
        viewers.push(Viewer {
            id: created.user.map(|user| user.id).unwrap_or_default(),
            token: created.access_token,
        });
    }
    Ok(viewers)
}

/// What a closed-loop run measured. Failed calls are counted apart: they are
/// in neither the rate nor the latencies, so a server that fails fast does not
/// look fast.
pub struct LoopResult {
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed (an error status, a refused connection, a body that
    /// did not arrive).
    pub errors: u64,
    pub elapsed: Duration,
    /// Send-to-answer latency of every successful call, in microseconds.
    pub latencies: hdrhistogram::Histogram<u64>,
}

impl LoopResult {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.successes as f64 / self.elapsed.as_secs_f64()
    }

    /// Successful calls per second of `cpu` (the server's CPU time over the run).
    pub fn per_cpu_second(&self, cpu: Duration) -> f64 {
        self.successes as f64 / cpu.as_secs_f64().max(0.001)
    }
}

/// Keeps `concurrency` calls in flight for `seconds`: each worker sends its
/// next call as soon as the last one answers. `call(worker, sequence)` returns
/// whether the call succeeded; only successful calls are timed.
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
            let mut histogram = latency_histogram();
            let mut errors = 0u64;
            let mut sequence = worker as u64 * 7919 + 1;
            while Instant::now() < deadline {
                sequence = sequence
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let sent = Instant::now();
                if call(worker, sequence).await {
                    let _ = histogram.record(sent.elapsed().as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
            }
            (histogram, errors)
        }));
    }
    let mut latencies = latency_histogram();
    let mut errors = 0;
    for worker in workers {
        let (histogram, worker_errors) = worker.await?;
        latencies.add(&histogram)?;
        errors += worker_errors;
    }
    Ok(LoopResult {
        successes: latencies.len(),
        errors,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// A closed loop's result and the server CPU it cost.
pub struct Outcome {
    /// What the loop did.
    pub result: LoopResult,
    /// The server's CPU time over the loop.
    pub server_cpu: Duration,
}

impl Outcome {
    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.result.rate()
    }

    /// Successful calls per second of the server's CPU.
    pub fn per_cpu_second(&self) -> f64 {
        self.result.per_cpu_second(self.server_cpu)
    }

    /// Prints the rate, the errors, the latencies and the calls per server
    /// CPU-second, after `name`.
    pub fn report(&self, name: &str) {
        println!(
            "{name}: {:.0} req/s; {} ok, errors {}; {}; {:.0} req per server CPU-second",
            self.rate(),
            self.result.successes,
            self.result.errors,
            summary(&self.result.latencies),
            self.per_cpu_second()
        );
    }
}

/// [`closed_loop`] against `server`, with the server CPU it cost.
pub async fn measure<F, Fut>(
    server: &ServerUnderTest,
    concurrency: usize,
    seconds: u64,
    call: F,
) -> anyhow::Result<Outcome>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let cpu_before = server.cpu_time()?;
    let result = closed_loop(concurrency, seconds, call).await?;
    Ok(Outcome {
        result,
        server_cpu: server.cpu_time()? - cpu_before,
    })
}

/// A histogram of latencies in microseconds, from 1 µs to 60 s.
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// A request with `authorization: Bearer <token>`.
pub fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `sh -c script` in a group of its own; the script's first line
    /// of output is the pid of a child it left in the background.
    fn shell_with_background_child(script: &str) -> (Child, u32) {
        let mut command = Command::new("sh");
        command.args(["-c", script]).stdout(Stdio::piped());
        in_own_process_group(&mut command);
        let mut child = command.spawn().expect("start sh");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the pid");
        let background = line.trim().parse().expect("a pid");
        (child, background)
    }

    fn gone_within(pid: u32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !has_exited(pid) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    #[test]
    fn a_child_the_leader_leaves_behind_is_killed_with_its_group() {
        let (mut leader, background) = shell_with_background_child("sleep 60 & echo $!; wait");
        stop_process_group(&mut leader, "TERM", Duration::from_secs(5));
        assert!(
            gone_within(background, Duration::from_secs(2)),
            "the background sleep {background} survived its group"
        );
    }

    #[test]
    fn a_leader_that_ignores_the_signal_is_killed_after_the_grace() {
        let (mut leader, background) =
            shell_with_background_child("trap '' TERM; sleep 60 & echo $!; wait");
        let started = Instant::now();
        stop_process_group(&mut leader, "TERM", Duration::from_millis(300));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            gone_within(background, Duration::from_secs(2)),
            "the background sleep {background} survived its group"
        );
    }

    #[tokio::test]
    async fn failed_calls_are_neither_in_the_rate_nor_timed() {
        let result = closed_loop(2, 1, |_worker, sequence| async move {
            if sequence % 2 == 0 {
                true
            } else {
                tokio::time::sleep(Duration::from_millis(30)).await;
                false
            }
        })
        .await
        .expect("the loop runs");
        assert!(result.errors > 0, "some calls failed");
        assert!(result.successes > 0, "some calls succeeded");
        assert_eq!(result.successes, result.latencies.len());
        assert!(
            result.latencies.max() < 30_000,
            "the slow failures are not in the latencies: max {} µs",
            result.latencies.max()
        );
    }
}
