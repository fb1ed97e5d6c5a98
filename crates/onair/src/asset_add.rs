//! `onair asset add FILE`: registers a file with a running station's
//! playout, which transcodes it into the station's ladder, and shows the
//! transcode's progress until the asset is ready or has failed.
//!
//! By default the station reads the file at its path (it runs on this
//! machine, or shares the file system); with `--upload` the file is sent to
//! it over the connection (`UploadAsset`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use onair_kit::config::Environment;
use onair_proto::playout::v1 as pb;
use onair_proto::playout::v1::playout_service_client::PlayoutServiceClient;
use tokio::io::AsyncReadExt;

use crate::schedule_import::{self, StationFlags, Target};

/// How many bytes one upload message carries (under the station's message
/// size limit).
const UPLOAD_CHUNK_BYTES: usize = 1024 * 1024;
/// The width of the progress bar, in characters.
const BAR_WIDTH: usize = 30;

/// The flags of `onair asset add`.
#[derive(Args)]
pub struct AddArgs {
    /// The video file to transcode
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The asset's id (lowercase letters, digits, hyphens); by default the
    /// station makes one
    #[arg(long)]
    id: Option<String>,
    /// Send the file to the station rather than have it read the file at
    /// its path (for a station on another machine)
    #[arg(long)]
    upload: bool,
    #[command(flatten)]
    station: StationFlags,
}

/// Runs the command: exit 0 once the asset is ready.
pub fn run(args: AddArgs, environment: &dyn Environment) -> ExitCode {
    let Some(runtime) = schedule_import::command_runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(add(&args, environment)) {
        Ok(asset) => {
            println!("{}", asset.id);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("onair: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn add(args: &AddArgs, environment: &dyn Environment) -> anyhow::Result<pb::Asset> {
    let path = std::fs::canonicalize(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let target = args.station.target(environment)?;
    let mut client = PlayoutServiceClient::new(schedule_import::connect(&target).await?);
    let id = args.id.clone().unwrap_or_default();
    let answer = if args.upload {
        let parts = upload_parts(&path, id).await?;
        client
            .upload_asset(schedule_import::authorized(&target, parts)?)
            .await
    } else {
        let request = pb::CreateAssetRequest {
            asset: Some(pb::Asset {
                id,
                source_path: path.display().to_string(),
                ..Default::default()
            }),
        };
        client
            .create_asset(schedule_import::authorized(&target, request)?)
            .await
    };
    let asset = answer
        .map_err(|status| {
            anyhow::anyhow!(
                "the station refused {}: {}",
                path.display(),
                status.message()
            )
        })?
        .into_inner();
    eprintln!("{}: asset {} queued", path.display(), asset.id);
    follow(&mut client, &target, &asset.id).await?;
    let request = pb::GetAssetRequest {
        asset_id: asset.id.clone(),
    };
    let asset = client
        .get_asset(schedule_import::authorized(&target, request)?)
        .await
        .map_err(|status| anyhow::anyhow!("cannot read asset {}: {}", asset.id, status.message()))?
        .into_inner();
    let names: Vec<&str> = asset
        .renditions
        .iter()
        .map(|rendition| rendition.name.as_str())
        .collect();
    eprintln!("{}: ready in {}", asset.id, names.join(", "));
    Ok(asset)
}

/// The messages of an upload: the asset's id and the file's name first, then
/// the file in chunks read as they are sent.
async fn upload_parts(
    path: &Path,
    id: String,
) -> anyhow::Result<impl futures::Stream<Item = pb::UploadAssetRequest> + Send + 'static> {
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let first = pb::UploadAssetRequest {
        asset: Some(pb::Asset {
            id,
            ..Default::default()
        }),
        file_name,
        data: Vec::new(),
    };
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut chunk = vec![0u8; UPLOAD_CHUNK_BYTES];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(read) => {
                chunk.truncate(read);
                let part = pb::UploadAssetRequest {
                    data: chunk,
                    ..Default::default()
                };
                Some((part, Some(file)))
            }
            Err(error) => {
                // The station sees a short file and says ffmpeg cannot read it.
                eprintln!("onair: reading the file failed: {error}");
                None
            }
        }
    });
    Ok(futures::stream::iter([first]).chain(chunks))
}

/// Draws the job's progress until it ends; an error if it failed.
async fn follow(
    client: &mut PlayoutServiceClient<tonic::transport::Channel>,
    target: &Target,
    asset_id: &str,
) -> anyhow::Result<()> {
    let request = pb::WatchTranscodeJobRequest {
        asset_id: asset_id.to_owned(),
    };
    let mut jobs = client
        .watch_transcode_job(schedule_import::authorized(target, request)?)
        .await
        .map_err(|status| anyhow::anyhow!("cannot follow the transcode: {}", status.message()))?
        .into_inner();
    let mut last = None;
    while let Some(job) = jobs.next().await {
        let job = job.map_err(|status| {
            anyhow::anyhow!("the transcode's progress stopped: {}", status.message())
        })?;
        eprint!("\r{}", progress_line(&job));
        let _ = std::io::stderr().flush();
        last = Some(job);
    }
    eprintln!();
    let Some(job) = last else {
        anyhow::bail!("the station said nothing about the transcode");
    };
    if job.state == pb::asset::State::Failed as i32 {
        anyhow::bail!("the transcode of {asset_id} failed: {}", job.error);
    }
    if job.state != pb::asset::State::Ready as i32 {
        anyhow::bail!("the transcode of {asset_id} stopped before it was ready");
    }
    Ok(())
}

/// `[#########---------------------]  30% transcoding (attempt 1)`.
fn progress_line(job: &pb::TranscodeJob) -> String {
    let percent = job.percent.clamp(0.0, 100.0);
    let filled = ((percent / 100.0) * BAR_WIDTH as f64).round() as usize;
    let state = match pb::asset::State::try_from(job.state) {
        Ok(pb::asset::State::Queued) => "queued",
        Ok(pb::asset::State::Transcoding) => "transcoding",
        Ok(pb::asset::State::Ready) => "ready",
        Ok(pb::asset::State::Failed) => "failed",
        _ => "",
    };
    format!(
        "[{}{}] {:>3.0}% {state} (attempt {})",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        percent,
        job.attempt.max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_percentage() {
        let job = pb::TranscodeJob {
            asset_id: "a".to_owned(),
            state: pb::asset::State::Transcoding as i32,
            percent: 50.0,
            attempt: 2,
            error: String::new(),
        };
        let line = progress_line(&job);
        assert!(
            line.starts_with(&format!("[{}{}]", "#".repeat(15), "-".repeat(15))),
            "{line}"
        );
        assert!(line.contains(" 50% transcoding (attempt 2)"), "{line}");
    }
}
