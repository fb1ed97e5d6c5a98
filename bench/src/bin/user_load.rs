//! The user service under load over loopback gRPC: GetUser throughput and
//! latency, and BatchGetUsers of 100 users. The server runs pinned to one core
//! (`--server-cpu`); run this generator pinned to the other:
//!
//!     cargo build --release -p onair -p onair-bench
//!     taskset -c 1 target/release/user_load --server-cpu 0
//!
//! Add `-- --database-url postgres://…` to measure PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use onair_bench::{
    LoopResult, ONE_ADDRESS_LOAD, ServerChoice, ServerUnderTest, authorized, closed_loop,
    connect_channels, create_viewers, scratch_dir, summary, until_interrupted,
};
use onair_proto::user::v1 as pb;
use onair_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    under_test: ServerChoice,
    /// Viewers to create before measuring.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight at once, per GetUser run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    concurrency: Vec<usize>,
    /// Requests in flight at once for BatchGetUsers.
    #[arg(long, default_value_t = 4)]
    batch_concurrency: usize,
    /// Ids per BatchGetUsers call.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Extra arguments for `onair serve`.
    #[arg(last = true)]
    serve_args: Vec<String>,
}

/// A small xorshift generator: each worker picks users without sharing state.
struct Picker(u64);

impl Picker {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

struct PhaseResult {
    result: LoopResult,
    server_cpu: Duration,
}

async fn run_phase<F, Fut>(
    server: &ServerUnderTest,
    channels: &[Channel],
    concurrency: usize,
    seconds: u64,
    call: F,
) -> anyhow::Result<PhaseResult>
where
    F: Fn(UserServiceClient<Channel>, usize, u64) -> Fut + Send + Sync + 'static + Clone,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let cpu_before = server.cpu_time()?;
    let clients: Arc<Vec<UserServiceClient<Channel>>> = Arc::new(
        channels
            .iter()
            .cloned()
            .map(UserServiceClient::new)
            .collect(),
    );
    let result = closed_loop(concurrency, seconds, move |worker, sequence| {
        let client = clients[worker % clients.len()].clone();
        let call = call.clone();
        async move { call(client, worker, sequence).await.is_ok() }
    })
    .await?;
    Ok(PhaseResult {
        result,
        server_cpu: server.cpu_time()? - cpu_before,
    })
}

fn report(name: &str, result: &PhaseResult) {
    let rate = result.result.rate();
    let per_cpu_second = result.result.per_cpu_second(result.server_cpu);
    println!(
        "{name}: {} ok in {:.1} s = {:.0} req/s, errors {}; {}; server CPU {:.2} s = {:.0} req per CPU-second",
        result.result.successes,
        result.result.elapsed.as_secs_f64(),
        rate,
        result.result.errors,
        summary(&result.result.latencies),
        result.server_cpu.as_secs_f64(),
        per_cpu_second
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = scratch_dir("onair-user-load");
    let extra: Vec<&str> = args.serve_args.iter().map(String::as_str).collect();
    let server = args.under_test.start(&dir, &extra, ONE_ADDRESS_LOAD)?;
    let endpoint = format!("http://{}", server.grpc);
    let channels = connect_channels(&endpoint, args.connections).await?;

    let viewers = Arc::new(create_viewers(&channels[0], args.users).await?);
    println!(
        "server pid {} on {}, {} viewers created",
        server.pid(),
        server.grpc,
        viewers.len()
    );

    let get_user = {
        let viewers = viewers.clone();
        move |mut client: UserServiceClient<Channel>, worker: usize, sequence: u64| {
            let viewers = viewers.clone();
            async move {
                let caller = &viewers[worker % viewers.len()];
                let target = &viewers[Picker(sequence | 1).next(viewers.len())];
                client
                    .get_user(authorized(
                        pb::GetUserRequest {
                            user_id: target.id.clone(),
                        },
                        &caller.token,
                    ))
                    .await
                    .map(|_| ())
            }
        }
    };
    // Warm up connections, caches and the allocator.
    run_phase(&server, &channels, 8, 2, get_user.clone()).await?;
    for concurrency in &args.concurrency {
        let result = run_phase(
            &server,
            &channels,
            *concurrency,
            args.seconds,
            get_user.clone(),
        )
        .await?;
        report(&format!("GetUser, {concurrency} in flight"), &result);
    }

    let batch_size = args.batch_size;
    let batch_get = {
        let viewers = viewers.clone();
        move |mut client: UserServiceClient<Channel>, worker: usize, sequence: u64| {
            let viewers = viewers.clone();
            async move {
                let caller = &viewers[worker % viewers.len()];
                let mut picker = Picker(sequence | 1);
                let user_ids = (0..batch_size)
                    .map(|_| viewers[picker.next(viewers.len())].id.clone())
                    .collect();
                client
                    .batch_get_users(authorized(
                        pb::BatchGetUsersRequest { user_ids },
                        &caller.token,
                    ))
                    .await
                    .map(|_| ())
            }
        }
    };
    let result = run_phase(
        &server,
        &channels,
        args.batch_concurrency,
        args.seconds,
        batch_get,
    )
    .await?;
    report(
        &format!(
            "BatchGetUsers of {batch_size}, {} in flight",
            args.batch_concurrency
        ),
        &result,
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
