//! Share pages against the REST baseline: `GET /s/{code}` (the HTML page a
//! social network's crawler reads, through the gateway and the share
//! service) and `GET /v1/users/{id}` (REST `GetUser`), alternating in one
//! run against one server.
//!
//! The station has a channel with a slot on air; each of the viewers shares
//! the channel, the slot at a moment, or a comment of theirs, so the pages
//! are of all three kinds. Each request opens a page at random.
//!
//!     cargo build --release -p onair -p onair-bench
//!     taskset -c 1 target/release/share_load --server-cpu 0

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Parser;
use onair_bench::{
    ServerChoice, authorized, connect_channels, create_viewers, measure, scratch_dir,
    until_interrupted,
};
use onair_proto::comment::v1 as comment;
use onair_proto::comment::v1::comment_service_client::CommentServiceClient;
use onair_proto::media::v1 as media;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use onair_proto::share::v1 as share;
use onair_proto::share::v1::share_service_client::ShareServiceClient;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    under_test: ServerChoice,
    /// Requests in flight (and connections) for both.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Share links made (one viewer each).
    #[arg(long, default_value_t = 300)]
    links: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// How many times to alternate the two measurements.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    until_interrupted(run(Args::parse())).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = scratch_dir("onair-share-load");
    // The load comes from one address: the per-address limits would refuse it.
    let server = args.under_test.start(
        &dir,
        &[],
        &[
            ("ONAIR_GATEWAY_RATE_LIMIT_PER_IP", "0"),
            ("ONAIR_GATEWAY_RATE_LIMIT_PER_USER", "0"),
            ("ONAIR_USER_ACCOUNTS_PER_IP_PER_MINUTE", "0"),
            ("ONAIR_COMMENT_PER_IP_PER_MINUTE", "0"),
        ],
    )?;
    let channels = connect_channels(&format!("http://{}", server.grpc), 4).await?;
    let operator = server.operator_key()?;
    let slot_id = on_air(&channels[0], &operator).await?;
    let viewers = create_viewers(&channels[0], args.links.max(args.concurrency)).await?;

    let mut codes = Vec::new();
    let mut shares = ShareServiceClient::new(channels[1].clone());
    let mut comments = CommentServiceClient::new(channels[2].clone());
    for (index, viewer) in viewers.iter().take(args.links).enumerate() {
        let target = match index % 3 {
            0 => share::create_share_request::Target::ChannelId("bench".to_owned()),
            1 => share::create_share_request::Target::SlotId(slot_id.clone()),
            _ => {
                let posted = comments
                    .post_comment(authorized(
                        comment::PostCommentRequest {
                            channel_id: "bench".to_owned(),
                            body: format!("comment number {index} & <more>"),
                            commands: Vec::new(),
                        },
                        &viewer.token,
                    ))
                    .await?
                    .into_inner();
                share::create_share_request::Target::CommentId(posted.id)
            }
        };
        let vpos_ms = if index % 3 == 1 {
            (index as i64) * 1000
        } else {
            0
        };
        let link = shares
            .create_share(authorized(
                share::CreateShareRequest {
                    target: Some(target),
                    vpos_ms,
                },
                &viewer.token,
            ))
            .await?
            .into_inner();
        codes.push(link.code);
    }
    println!("{} share links made", codes.len());

    let users: Arc<Vec<(String, String)>> = Arc::new(
        viewers
            .iter()
            .take(args.concurrency)
            .map(|viewer| (viewer.id.clone(), viewer.token.clone()))
            .collect(),
    );
    let codes = Arc::new(codes);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .http1_only()
        .build()?;
    let base = format!("http://{}", server.http);

    let rest_call = {
        let http = http.clone();
        let base = base.clone();
        move |worker: usize, _sequence: u64| {
            let (id, token) = users[worker % users.len()].clone();
            let request = http.get(format!("{base}/v1/users/{id}")).bearer_auth(token);
            async move {
                match request.send().await {
                    Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    };
    let page_call = move |_worker: usize, _sequence: u64| {
        let code = &codes[rand::random::<usize>() % codes.len()];
        let request = http.get(format!("{base}/s/{code}"));
        async move {
            match request.send().await {
                Ok(response) => {
                    response.status() == 200
                        && response
                            .text()
                            .await
                            .is_ok_and(|html| html.contains("og:image"))
                }
                Err(_) => false,
            }
        }
    };
    measure(&server, args.concurrency, 2, rest_call.clone()).await?;
    measure(&server, args.concurrency, 2, page_call.clone()).await?;
    for round in 1..=args.rounds {
        let rest = measure(&server, args.concurrency, args.seconds, rest_call.clone()).await?;
        let page = measure(&server, args.concurrency, args.seconds, page_call.clone()).await?;
        rest.report(&format!(
            "round {round} GET /v1/users/{{id}}, {} in flight",
            args.concurrency
        ));
        page.report(&format!(
            "round {round} GET /s/{{code}}, {} in flight",
            args.concurrency
        ));
        println!(
            "round {round} /s/ against GetUser: {:.0} % of the rate, {:.0} % per server CPU-second (errors: GetUser {}, /s/ {})",
            page.rate() / rest.rate() * 100.0,
            page.per_cpu_second() / rest.per_cpu_second() * 100.0,
            rest.result.errors,
            page.result.errors
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Channel `bench` with an hour-long slot on air from a minute ago; returns
/// the slot's id.
async fn on_air(channel: &tonic::transport::Channel, operator: &str) -> anyhow::Result<String> {
    let mut media_client = MediaServiceClient::new(channel.clone());
    media_client
        .create_channel(authorized(
            media::CreateChannelRequest {
                channel: Some(media::Channel {
                    id: "bench".to_owned(),
                    number: 1,
                    name: "Bench TV".to_owned(),
                    ..Default::default()
                }),
            },
            operator,
        ))
        .await?;
    let program = media_client
        .create_program(authorized(
            media::CreateProgramRequest {
                program: Some(media::Program {
                    title: "The Shared Show".to_owned(),
                    description: "What everyone shares.".to_owned(),
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
    let now = SystemTime::now();
    let slot = media_client
        .create_slot(authorized(
            media::CreateSlotRequest {
                channel_id: "bench".to_owned(),
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
    Ok(slot.id)
}
