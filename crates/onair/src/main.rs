//! The `onair` command.

mod asset_add;
mod demo;
mod demo_audience;
mod schedule_import;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use onair_kit::clock::Clock;
use onair_kit::config::{Flags, ProcessEnvironment};

/// mimalloc rather than the system's allocator: answers such as a guide are
/// thousands of small strings, made and dropped per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// onair runs an internet TV station: linear channels from a schedule, live and
/// on-demand HLS video, and a live audience that comments, votes and shares.
#[derive(Parser)]
#[command(name = "onair", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the station's services: all of them in one process by default, or
    /// the roles given with --roles, reaching the others through --peers.
    Serve(ServeArgs),
    /// Serves a ready demo station: three channels with a schedule around
    /// now, programs made with ffmpeg (installed if missing and possible),
    /// gaps filled with a slate. Data in ./onair-demo unless --data-dir.
    #[command(mut_arg("data_dir", |arg| arg.help(
        "Directory for the demo station's SQLite database, operator key, clips and \
         bus streams [env: ONAIR_DATA_DIR] [default: ./onair-demo]"
    )))]
    Demo(ServeArgs),
    /// Works on a running station's assets (video files).
    #[command(subcommand)]
    Asset(AssetCommand),
    /// Works on a running station's schedule.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
}

#[derive(Subcommand)]
enum AssetCommand {
    /// Registers a video file with the station, which transcodes it into its
    /// ladder of HLS renditions; shows the progress and prints the asset id
    /// once it is ready. Exits 0 only when the asset is ready.
    Add(asset_add::AddArgs),
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Imports a schedule file (YAML or JSON) into a running station: all of
    /// it or, when anything is wrong, none of it. Prints what was applied, or
    /// every error as FILE:LINE: message; exits 0 only when it was applied.
    Import(schedule_import::ImportArgs),
}

/// Every flag can also be set as an ONAIR_* environment variable (shown with
/// each flag) or in the TOML file given by --config; flags win over the
/// environment, which wins over the file.
#[derive(Args)]
struct ServeArgs {
    /// Address of the HTTP port: REST, live sockets, HLS, /metrics, /healthz,
    /// /readyz [env: ONAIR_HTTP] [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Address of the gRPC port: every local service, health, reflection,
    /// gRPC-Web [env: ONAIR_GRPC] [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    grpc: Option<String>,
    /// Directory for the SQLite database, the operator key and the embedded
    /// bus's durable streams [env: ONAIR_DATA_DIR] [default: ./onair-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// A TOML file with more settings (see the README) [env: ONAIR_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Comma-separated roles to run: user, media, playout, comment, audience,
    /// share, gateway [env: ONAIR_ROLES] [default: all]
    #[arg(long, value_name = "ROLES")]
    roles: Option<String>,
    /// Where to reach roles this process does not run, e.g.
    /// user=http://10.0.0.5:50051,media=http://10.0.0.6:50051 [env: ONAIR_PEERS]
    #[arg(long, value_name = "SERVICE=URL,...")]
    peers: Option<String>,
    /// PostgreSQL URL, instead of SQLite in the data dir [env: ONAIR_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// NATS URL, instead of the in-process bus [env: ONAIR_NATS_URL]
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// Redis URL for counters and presence shared by several processes
    /// [env: ONAIR_REDIS_URL]
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

impl ServeArgs {
    fn flags(&self) -> Flags {
        let mut flags = Flags::default();
        flags
            .set_opt("http", self.http.clone())
            .set_opt("grpc", self.grpc.clone())
            .set_opt("data_dir", self.data_dir.clone())
            .set_opt("roles", self.roles.clone())
            .set_opt("peers", self.peers.clone())
            .set_opt("database_url", self.database_url.clone())
            .set_opt("nats_url", self.nats_url.clone())
            .set_opt("redis_url", self.redis_url.clone());
        flags
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Demo(args) => demo(args),
        Command::Asset(AssetCommand::Add(args)) => asset_add::run(args, &ProcessEnvironment),
        Command::Schedule(ScheduleCommand::Import(args)) => {
            schedule_import::run(args, &ProcessEnvironment)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let settings =
        match onair::resolve_settings(&args.flags(), &ProcessEnvironment, args.config.as_deref()) {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("onair: {error}");
                return ExitCode::from(2);
            }
        };
    onair_kit::telemetry::init_logging(settings.log_format, &settings.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("onair: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let prepared = onair::prepare(settings, Clock::system()).await?;
        prepared.run(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "onair stopped with an error");
            eprintln!("onair: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: ServeArgs) -> ExitCode {
    let mut flags = args.flags();
    demo::demo_flags(&mut flags, args.data_dir.is_some(), args.config.is_some());
    let settings =
        match onair::resolve_settings(&flags, &ProcessEnvironment, args.config.as_deref()) {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("onair: {error}");
                return ExitCode::from(2);
            }
        };
    onair_kit::telemetry::init_logging(settings.log_format, &settings.log_level);
    demo::run(settings, shutdown_signal())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("received SIGINT"),
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
