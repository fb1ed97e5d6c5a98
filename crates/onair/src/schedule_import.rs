//! `onair schedule import FILE`: sends a schedule file to a running station's
//! `ImportSchedule` RPC, which checks all of it and applies all of it or
//! none, and prints what was applied or every error with its line.
//!
//! The file is parsed here first, so that a syntax error is reported with its
//! line without a round trip; every rule of the schedule (overlaps, programs
//! that exist, slot lengths) is the station's to check.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use onair_kit::config::Environment;
use onair_media::schedule_file::{self, FileFormat};
use onair_proto::media::v1 as pb;
use onair_proto::media::v1::media_service_client::MediaServiceClient;

/// How long connecting to the station may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags of `onair schedule import`.
#[derive(Args)]
pub struct ImportArgs {
    /// The schedule file: .yaml, .yml or .json (see the README for the format)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    station: StationFlags,
    /// The file's format, when its name does not tell
    #[arg(long, value_enum)]
    format: Option<Format>,
}

/// The flags of every command that works on a running station: where it is
/// and the credential to call it with.
#[derive(Args)]
#[command(about = None, long_about = None)]
pub struct StationFlags {
    /// The station's gRPC address [env: ONAIR_GRPC] [default: 127.0.0.1:50051]
    #[arg(long, value_name = "ADDR")]
    pub(crate) grpc: Option<String>,
    /// An operator's API key or access token; by default the operator key in
    /// the data dir [env: ONAIR_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// The station's data dir, whose operator.key is used when no token is
    /// given [env: ONAIR_DATA_DIR] [default: ./onair-data]
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
}

/// A schedule file's format, as the `--format` flag names it.
#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

/// Where to reach the station and as whom, once flags and environment are
/// read.
pub(crate) struct Target {
    pub(crate) endpoint: String,
    pub(crate) credential: String,
}

/// Runs the command; what it prints is the report.
pub fn run(args: ImportArgs, environment: &dyn Environment) -> ExitCode {
    let name = args.file.display().to_string();
    let items = match read_items(&args) {
        Ok(Ok(items)) => items,
        Ok(Err(errors)) => {
            print_errors(&name, &errors);
            eprintln!(
                "{name}: not imported: {} in the file",
                count_of(errors.len(), "error")
            );
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("onair: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let target = match args.station.target(environment) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("onair: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = command_runtime() else {
        return ExitCode::FAILURE;
    };
    let item_count = items.len();
    let response = match runtime.block_on(send(&target, items)) {
        Ok(response) => response,
        Err(error) => {
            eprintln!("onair: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if !response.applied {
        print_errors(&name, &response.errors);
        eprintln!(
            "{name}: not imported: the station found {}; nothing was changed",
            count_of(response.errors.len(), "error")
        );
        return ExitCode::FAILURE;
    }
    println!(
        "{name}: imported {} items: {}, {} and {}",
        item_count,
        count_of(count(response.channels), "channel"),
        count_of(count(response.programs), "program"),
        count_of(count(response.slots), "slot"),
    );
    ExitCode::SUCCESS
}

/// The file's items, or the errors that keep it from being read as a
/// schedule. The outer error is for a file that cannot be read at all.
fn read_items(
    args: &ImportArgs,
) -> anyhow::Result<Result<Vec<pb::ImportScheduleItem>, Vec<pb::ImportError>>> {
    let format = match args.format {
        Some(Format::Yaml) => FileFormat::Yaml,
        Some(Format::Json) => FileFormat::Json,
        None => FileFormat::from_path(&args.file).with_context(|| {
            format!(
                "cannot tell the format of {} from its name: use .yaml, .yml or .json, or --format",
                args.file.display()
            )
        })?,
    };
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    Ok(schedule_file::parse(&text, format))
}

impl StationFlags {
    /// The endpoint from `--grpc` or `ONAIR_GRPC`, and the credential from
    /// `--token`, `ONAIR_TOKEN`, or the data dir's operator key.
    pub(crate) fn target(&self, environment: &dyn Environment) -> anyhow::Result<Target> {
        station_target(
            self.grpc.as_deref(),
            self.token.as_deref(),
            self.data_dir.as_deref(),
            environment,
        )
    }
}

fn station_target(
    grpc: Option<&str>,
    token: Option<&str>,
    data_dir: Option<&Path>,
    environment: &dyn Environment,
) -> anyhow::Result<Target> {
    let address = grpc
        .map(str::to_owned)
        .or_else(|| environment.var("ONAIR_GRPC"))
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let endpoint = if address.contains("://") {
        address
    } else {
        format!("http://{address}")
    };
    let token = token
        .map(str::to_owned)
        .or_else(|| environment.var("ONAIR_TOKEN"));
    let credential = match token {
        Some(token) => token,
        None => {
            let data_dir = data_dir
                .map(Path::to_path_buf)
                .or_else(|| environment.var("ONAIR_DATA_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("./onair-data"));
            operator_key(&data_dir)?
        }
    };
    let credential = credential.trim().to_owned();
    if credential.is_empty() {
        anyhow::bail!("the credential is empty: pass an operator's API key with --token");
    }
    Ok(Target {
        endpoint,
        credential,
    })
}

fn operator_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("operator.key");
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no credential: pass --token (or set ONAIR_TOKEN), or --data-dir of the station, whose operator.key is read; cannot read {}",
            path.display()
        )
    })
}

/// The single-threaded runtime a command runs on; None once it has told the
/// user why there is none.
pub(crate) fn command_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("onair: cannot start the async runtime: {error}");
            None
        }
    }
}

/// A connection to the station.
pub(crate) async fn connect(target: &Target) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(target.endpoint.clone())
        .with_context(|| format!("{} is not a gRPC address", target.endpoint))?
        .connect_timeout(CONNECT_TIMEOUT);
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach the station at {}", target.endpoint))
}

/// `request` with the target's credential.
pub(crate) fn authorized<T>(target: &Target, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    let authorization = format!("Bearer {}", target.credential)
        .parse()
        .context("the credential is not printable ASCII")?;
    request
        .metadata_mut()
        .insert("authorization", authorization);
    Ok(request)
}

/// Streams the items to `ImportSchedule`.
async fn send(
    target: &Target,
    items: Vec<pb::ImportScheduleItem>,
) -> anyhow::Result<pb::ImportScheduleResponse> {
    let channel = connect(target).await?;
    // Schedules can be large; the station bounds what it accepts.
    let mut client = MediaServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let request = authorized(target, futures::stream::iter(items))?;
    let response = client.import_schedule(request).await.map_err(|status| {
        anyhow::anyhow!(
            "the station refused the import ({:?}): {}",
            status.code(),
            status.message()
        )
    })?;
    Ok(response.into_inner())
}

/// Every error as `FILE:LINE: message`, the form editors jump to.
fn print_errors(name: &str, errors: &[pb::ImportError]) {
    for error in errors {
        if error.line > 0 {
            eprintln!("{name}:{}: {}", error.line, error.message);
        } else {
            eprintln!("{name}: {}", error.message);
        }
    }
}

fn count(value: i32) -> usize {
    usize::try_from(value).unwrap_or_default()
}

/// "1 slot", "3 slots".
fn count_of(number: usize, noun: &str) -> String {
    if number == 1 {
        format!("1 {noun}")
    } else {
        format!("{number} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn args(grpc: Option<&str>, token: Option<&str>, data_dir: Option<&Path>) -> ImportArgs {
        ImportArgs {
            file: PathBuf::from("schedule.yaml"),
            station: StationFlags {
                grpc: grpc.map(str::to_owned),
                token: token.map(str::to_owned),
                data_dir: data_dir.map(Path::to_path_buf),
            },
            format: None,
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_the_key_file_comes_last() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("operator.key"), "from-file\n").unwrap();
        let environment = BTreeMap::from([
            ("ONAIR_GRPC".to_owned(), "10.0.0.5:50051".to_owned()),
            ("ONAIR_TOKEN".to_owned(), "from-env".to_owned()),
        ]);

        let flagged = args(Some("http://[::1]:7000"), Some("from-flag"), None)
            .station
            .target(&environment)
            .unwrap();
        assert_eq!(flagged.endpoint, "http://[::1]:7000");
        assert_eq!(flagged.credential, "from-flag");

        let from_environment = args(None, None, None).station.target(&environment).unwrap();
        assert_eq!(from_environment.endpoint, "http://10.0.0.5:50051");
        assert_eq!(from_environment.credential, "from-env");

        let nothing = BTreeMap::new();
        let from_file = args(None, None, Some(dir.path()))
            .station
            .target(&nothing)
            .unwrap();
        assert_eq!(from_file.endpoint, "http://127.0.0.1:50051");
        assert_eq!(from_file.credential, "from-file");
    }

    #[test]
    fn a_missing_key_file_says_how_to_give_a_credential() {
        let dir = tempfile::tempdir().unwrap();
        let Err(error) = args(None, None, Some(dir.path()))
            .station
            .target(&BTreeMap::new())
        else {
            panic!("no credential anywhere");
        };
        let message = format!("{error:#}");
        assert!(message.contains("--token"), "{message}");
        assert!(message.contains("operator.key"), "{message}");
    }
}
