//! REST transcoding overhead: the same unary RPC (`GetUser`) over native gRPC
//! and over REST/JSON through the gateway, against one server in one run.
//!
//!     cargo build --release -p onair -p onair-bench
//!     taskset -c 1 target/release/rest_load --server-cpu 0

use std::sync::Arc;

use clap::Parser;
use onair_bench::{ServerChoice, create_viewers, measure, scratch_dir, until_interrupted};
use onair_proto::user::v1 as pb;
use onair_proto::user::v1::user_service_client::UserServiceClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    under_test: ServerChoice,
    /// Requests in flight (and connections) for both protocols.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// How many times to alternate the two measurements.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = scratch_dir("onair-rest-load");
    // The load comes from one address: the per-address limit would refuse it.
    let server = args.under_test.start(
        &dir,
        &[],
        &[
            ("ONAIR_GATEWAY_RATE_LIMIT_PER_IP", "0"),
            ("ONAIR_GATEWAY_RATE_LIMIT_PER_USER", "0"),
            ("ONAIR_USER_ACCOUNTS_PER_IP_PER_MINUTE", "0"),
        ],
    )?;
    let channel = Channel::from_shared(format!("http://{}", server.grpc))?
        .connect()
        .await?;
    let viewers: Vec<(String, String)> = create_viewers(&channel, args.concurrency)
        .await?
        .into_iter()
        .map(|viewer| (viewer.id, viewer.token))
        .collect();
    let viewers = Arc::new(viewers);
    let mut grpc_channels = Vec::new();
    for _ in 0..args.concurrency {
        grpc_channels.push(
            Channel::from_shared(format!("http://{}", server.grpc))?
                .connect()
                .await?,
        );
    }
    let grpc_channels = Arc::new(grpc_channels);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .http1_only()
        .build()?;
    let base = format!("http://{}", server.http);

    let grpc_call = {
        let viewers = viewers.clone();
        let channels = grpc_channels.clone();
        move |worker: usize, _sequence: u64| {
            let (id, token) = viewers[worker % viewers.len()].clone();
            let mut client = UserServiceClient::new(channels[worker % channels.len()].clone());
            async move {
                let mut request = tonic::Request::new(pb::GetUserRequest { user_id: id });
                if let Ok(value) = format!("Bearer {token}").parse() {
                    request.metadata_mut().insert("authorization", value);
                }
                client.get_user(request).await.is_ok()
            }
        }
    };
    let rest_call = {
        let viewers = viewers.clone();
        move |worker: usize, _sequence: u64| {
            let (id, token) = viewers[worker % viewers.len()].clone();
            let request = http.get(format!("{base}/v1/users/{id}")).bearer_auth(token);
            async move {
                match request.send().await {
                    Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    };
    measure(&server, args.concurrency, 2, grpc_call.clone()).await?;
    measure(&server, args.concurrency, 2, rest_call.clone()).await?;
    for round in 1..=args.rounds {
        let grpc = measure(&server, args.concurrency, args.seconds, grpc_call.clone()).await?;
        let rest = measure(&server, args.concurrency, args.seconds, rest_call.clone()).await?;
        grpc.report(&format!(
            "round {round} GetUser over gRPC, {} in flight",
            args.concurrency
        ));
        rest.report(&format!(
            "round {round} GET /v1/users/{{id}} over REST, {} in flight",
            args.concurrency
        ));
        println!(
            "round {round} REST / gRPC: {:.0} % (errors: gRPC {}, REST {})",
            rest.rate() / grpc.rate() * 100.0,
            grpc.result.errors,
            rest.result.errors
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
