//! The transcoder: ffmpeg (Debian's package, run as a child process) turns a
//! source file into the station's ABR ladder of HLS renditions.
//!
//! - Every rendition is cut into MPEG-TS segments of exactly the station's
//!   segment length: keyframes are forced every segment length (a fixed GOP
//!   of length × frame rate, no scene-cut keyframes), so every rung cuts at
//!   the same instants, and the end is padded (last frame held, silence) to a
//!   whole number of segments. A linear channel can then place any asset on
//!   the segment grid.
//! - One frame rate and one audio layout (48 kHz stereo AAC) for every asset;
//!   a source without audio gets silence, because players break when tracks
//!   come and go between items.
//! - Jobs run on a bounded number of workers; a failed attempt is retried
//!   (a crash, a full disk); a file that ffprobe cannot read is refused when
//!   it is registered, with ffprobe's reason.
//! - Progress is read from `-progress pipe:1` (`out_time_us`).
//! - Once the segments are stored, one frame is taken as the asset's
//!   [`card`](crate::card); an asset whose card fails still plays.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use onair_kit::clock::Clock;
use onair_kit::metrics::Registry;
use onair_proto::playout::v1 as pb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use crate::asset_index::AssetIndex;
use crate::card;
use crate::error::PlayoutError;
use crate::segment_store::SegmentStorage;
use crate::settings::{EncodeSettings, PlayoutSettings};
use crate::tables::{AssetRecord, PlayoutStore};

const JOBS: &str = "onair_playout_transcode_jobs";
const JOBS_HELP: &str = "Transcode jobs queued or running.";
const TRANSCODES: &str = "onair_playout_transcodes_total";
const TRANSCODES_HELP: &str = "Transcode jobs finished, by outcome (ready, failed).";

/// The audio sample rate of every rendition.
const AUDIO_RATE: i64 = 48_000;
/// Samples in one AAC frame.
const AAC_FRAME: i64 = 1024;
/// How much of ffmpeg's error output a failed job keeps as its error.
const ERROR_TAIL_BYTES: usize = 2000;
/// The card's file in a job's work directory.
const CARD_FILE: &str = "card.jpg";

/// What ffprobe says about a source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The source's duration, in milliseconds.
    pub duration_ms: i64,
    /// Whether the source has an audio stream.
    pub has_audio: bool,
}

/// Reads a source file's duration and tracks; the error says why ffmpeg
/// cannot use it.
pub async fn probe(ffprobe: &str, path: &Path) -> Result<Probe, String> {
    let output = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_type",
        ])
        .args(["-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| {
            format!("cannot run {ffprobe}: {error} (install Debian's ffmpeg package)")
        })?;
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr);
        let reason = reason.trim();
        return Err(format!(
            "ffmpeg cannot read {}: {}",
            path.display(),
            if reason.is_empty() {
                "unknown format"
            } else {
                reason
            }
        ));
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("ffprobe's answer does not parse: {error}"))?;
    let streams = report["streams"].as_array().cloned().unwrap_or_default();
    let has_video = streams.iter().any(|stream| stream["codec_type"] == "video");
    let has_audio = streams.iter().any(|stream| stream["codec_type"] == "audio");
    if !has_video {
        return Err(format!("{} has no video stream", path.display()));
    }
    let seconds: f64 = report["format"]["duration"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0.0);
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!(
            "{} has no duration (a still image or a stream?)",
            path.display()
        ));
    }
    Ok(Probe {
        duration_ms: (seconds * 1000.0).round() as i64,
        has_audio,
    })
}

/// ffmpeg's arguments for one transcode: the whole ladder in one run (one
/// decode, one split), padded to `padded_ms`.
pub fn ffmpeg_args(
    source: &Path,
    probe: &Probe,
    padded_ms: i64,
    encode: &EncodeSettings,
    out_dir: &Path,
) -> Vec<String> {
    let count = encode.ladder.renditions.len();
    let segment = encode.segment_seconds;
    let gop = segment * encode.frame_rate;
    let mut args: Vec<String> = vec![
        "-hide_banner".into(),
        "-nostdin".into(),
        "-y".into(),
        "-loglevel".into(),
        "error".into(),
        "-i".into(),
        source.display().to_string(),
    ];
    if !probe.has_audio {
        args.extend(["-f".into(), "lavfi".into(), "-i".into()]);
        args.push("anullsrc=r=48000:cl=stereo".into());
    }
    let mut graph = format!("[0:v]fps={},split={count}", encode.frame_rate);
    for index in 0..count {
        graph.push_str(&format!("[s{index}]"));
    }
    for (index, rendition) in encode.ladder.renditions.iter().enumerate() {
        let (width, height) = (rendition.width, rendition.height);
        // Letterboxed into the rung's size; the last frame held for one
        // segment so the padding has a picture.
        graph.push_str(&format!(
            ";[s{index}]scale={width}:{height}:force_original_aspect_ratio=decrease,\
             pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,\
             tpad=stop_mode=clone:stop_duration={segment}[v{index}]"
        ));
    }
    let audio_input = if probe.has_audio { "0:a" } else { "1:a" };
    // Audio ends on a whole AAC frame (1024 samples) at least one frame
    // before the video's end: the encoder's priming frame puts the next
    // item's audio one frame ahead of its video, and a few milliseconds of
    // silence at a boundary are better than audio that overlaps the next
    // item's (players and ffmpeg see timestamps go back).
    let audio_samples = (padded_ms * AUDIO_RATE / 1000 / AAC_FRAME - 1) * AAC_FRAME;
    graph.push_str(&format!(
        ";[{audio_input}]aresample={AUDIO_RATE},aformat=channel_layouts=stereo,apad,\
         atrim=end_sample={audio_samples},asplit={count}"
    ));
    for index in 0..count {
        graph.push_str(&format!("[a{index}]"));
    }
    args.extend(["-filter_complex".into(), graph]);
    for index in 0..count {
        args.extend(["-map".into(), format!("[v{index}]")]);
        args.extend(["-map".into(), format!("[a{index}]")]);
    }
    args.extend(["-t".into(), format!("{:.3}", padded_ms as f64 / 1000.0)]);
    args.extend([
        "-c:v".into(),
        "libx264".into(),
        "-preset".into(),
        encode.preset.clone(),
        "-profile:v".into(),
        "high".into(),
        "-level:v".into(),
        "4.0".into(),
        "-pix_fmt".into(),
        "yuv420p".into(),
    ]);
    for (index, rendition) in encode.ladder.renditions.iter().enumerate() {
        let kbps = rendition.video_kbps;
        args.extend([format!("-b:v:{index}"), format!("{kbps}k")]);
        args.extend([
            format!("-maxrate:v:{index}"),
            format!("{}k", kbps * 107 / 100),
        ]);
        args.extend([format!("-bufsize:v:{index}"), format!("{}k", kbps * 3 / 2)]);
    }
    args.extend([
        "-g".into(),
        gop.to_string(),
        "-keyint_min".into(),
        gop.to_string(),
        "-sc_threshold".into(),
        "0".into(),
        "-force_key_frames".into(),
        format!("expr:gte(t,n_forced*{segment})"),
        "-c:a".into(),
        "aac".into(),
        "-b:a".into(),
        format!("{}k", encode.ladder.audio_kbps),
        "-ac".into(),
        "2".into(),
        "-f".into(),
        "hls".into(),
        "-hls_time".into(),
        segment.to_string(),
        "-hls_list_size".into(),
        "0".into(),
        "-hls_playlist_type".into(),
        "vod".into(),
        "-hls_segment_type".into(),
        "mpegts".into(),
        "-start_number".into(),
        "0".into(),
        "-hls_flags".into(),
        "independent_segments".into(),
        "-hls_segment_filename".into(),
        out_dir.join("%v/%d.ts").display().to_string(),
        "-var_stream_map".into(),
    ]);
    let streams: Vec<String> = encode
        .ladder
        .renditions
        .iter()
        .enumerate()
        .map(|(index, rendition)| format!("v:{index},a:{index},name:{}", rendition.name))
        .collect();
    args.push(streams.join(" "));
    args.extend(["-progress".into(), "pipe:1".into(), "-nostats".into()]);
    args.push(out_dir.join("%v/index.m3u8").display().to_string());
    args
}

/// The segment durations an HLS playlist lists, in milliseconds.
pub fn playlist_durations(playlist: &str) -> Vec<i64> {
    playlist
        .lines()
        .filter_map(|line| line.strip_prefix("#EXTINF:"))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|seconds| seconds.trim().parse::<f64>().ok())
        .map(|seconds| (seconds * 1000.0).round() as i64)
        .collect()
}

/// The transcode queue and its workers.
#[derive(Clone)]
pub struct Transcoder {
    inner: Arc<Inner>,
}

struct Inner {
    store: PlayoutStore,
    storage: Arc<dyn SegmentStorage>,
    assets: AssetIndex,
    clock: Clock,
    settings: PlayoutSettings,
    metrics: Registry,
    /// Each queued or running job's latest progress, for watchers.
    jobs: Mutex<HashMap<String, watch::Sender<pb::TranscodeJob>>>,
    queue: mpsc::UnboundedSender<String>,
    /// Taken by the workers when they start.
    receiver: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

impl Transcoder {
    /// A transcoder that writes segments to `storage` and records assets in `store` and `assets`.
    pub fn new(
        store: PlayoutStore,
        storage: Arc<dyn SegmentStorage>,
        assets: AssetIndex,
        clock: Clock,
        settings: PlayoutSettings,
        metrics: Registry,
    ) -> Transcoder {
        // Unbounded in memory, but only operators enqueue and each entry is
        // an id: the durable queue is the assets table.
        let (queue, receiver) = mpsc::unbounded_channel();
        Transcoder {
            inner: Arc::new(Inner {
                store,
                storage,
                assets,
                clock,
                settings,
                metrics,
                jobs: Mutex::new(HashMap::new()),
                queue,
                receiver: Mutex::new(Some(receiver)),
            }),
        }
    }

    /// Queues an asset's transcode.
    pub fn enqueue(&self, asset: &AssetRecord) {
        let job = pb::TranscodeJob {
            asset_id: asset.id.clone(),
            state: pb::asset::State::Queued as i32,
            percent: 0.0,
            attempt: 0,
            error: String::new(),
        };
        let (sender, _) = watch::channel(job);
        if let Ok(mut jobs) = self.inner.jobs.lock() {
            jobs.insert(asset.id.clone(), sender);
            self.inner
                .metrics
                .gauge_set(JOBS, JOBS_HELP, &[], jobs.len() as i64);
        }
        if self.inner.queue.send(asset.id.clone()).is_err() {
            tracing::error!(asset = %asset.id, "the transcode queue is closed");
        }
    }

    /// The progress of a queued or running job; `None` once it is over (the
    /// asset's state tells the outcome).
    pub fn watch(&self, asset_id: &str) -> Option<watch::Receiver<pb::TranscodeJob>> {
        let jobs = self.inner.jobs.lock().ok()?;
        jobs.get(asset_id).map(watch::Sender::subscribe)
    }

    /// Starts the workers; unfinished jobs of an earlier run are queued again.
    pub async fn spawn_workers(&self) -> Result<Vec<tokio::task::JoinHandle<()>>, PlayoutError> {
        for asset in self.inner.store.unfinished_assets().await? {
            self.enqueue(&asset);
        }
        let receiver = self
            .inner
            .receiver
            .lock()
            .ok()
            .and_then(|mut receiver| receiver.take())
            .ok_or_else(|| PlayoutError::Internal("the workers run already".to_owned()))?;
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let mut handles = Vec::new();
        for _ in 0..self.inner.settings.transcode_workers.max(1) {
            let receiver = receiver.clone();
            let transcoder = self.clone();
            handles.push(tokio::spawn(async move {
                loop {
                    let next = receiver.lock().await.recv().await;
                    let Some(asset_id) = next else {
                        return;
                    };
                    transcoder.run(&asset_id).await;
                }
            }));
        }
        Ok(handles)
    }

    fn report(&self, job: pb::TranscodeJob) {
        if let Ok(jobs) = self.inner.jobs.lock()
            && let Some(sender) = jobs.get(&job.asset_id)
        {
            sender.send_replace(job);
        }
    }

    fn finish(&self, asset_id: &str, outcome: &str) {
        if let Ok(mut jobs) = self.inner.jobs.lock() {
            jobs.remove(asset_id);
            self.inner
                .metrics
                .gauge_set(JOBS, JOBS_HELP, &[], jobs.len() as i64);
        }
        self.inner
            .metrics
            .counter_add(TRANSCODES, TRANSCODES_HELP, &[("outcome", outcome)], 1);
    }

    /// Runs one asset's job to its end, with retries.
    async fn run(&self, asset_id: &str) {
        let asset = match self.inner.store.asset(asset_id).await {
            Ok(Some(asset)) => asset,
            Ok(None) => {
                self.finish(asset_id, "gone");
                return;
            }
            Err(error) => {
                tracing::error!(asset = asset_id, error = %error, "cannot read an asset to transcode");
                self.finish(asset_id, "failed");
                return;
            }
        };
        let attempts = i64::from(self.inner.settings.transcode_attempts.max(1));
        let mut record = asset;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            record.state = pb::asset::State::Transcoding;
            record.attempts = attempt;
            let _ = self
                .inner
                .store
                .update_asset(&record, self.inner.clock.now_ms())
                .await;
            self.report(pb::TranscodeJob {
                asset_id: record.id.clone(),
                state: pb::asset::State::Transcoding as i32,
                percent: 0.0,
                attempt: attempt as i32,
                error: String::new(),
            });
            match self.attempt(&record, attempt).await {
                Ok((durations, probe)) => {
                    record.state = pb::asset::State::Ready;
                    record.duration_ms = probe.duration_ms;
                    record.segment_durations_ms = durations;
                    record.renditions = self.inner.settings.encode.ladder.names();
                    record.error.clear();
                    if let Err(error) = self
                        .inner
                        .store
                        .update_asset(&record, self.inner.clock.now_ms())
                        .await
                    {
                        tracing::error!(asset = %record.id, error = %error, "cannot record a finished transcode");
                    }
                    self.inner.assets.insert(&record);
                    tracing::info!(asset = %record.id, segments = record.segment_durations_ms.len(), "asset ready");
                    self.report(pb::TranscodeJob {
                        asset_id: record.id.clone(),
                        state: pb::asset::State::Ready as i32,
                        percent: 100.0,
                        attempt: attempt as i32,
                        error: String::new(),
                    });
                    self.finish(&record.id, "ready");
                    return;
                }
                Err(error) => {
                    tracing::warn!(asset = %record.id, attempt, error = %error, "transcode attempt failed");
                    last_error = error;
                    if attempt < attempts {
                        tokio::time::sleep(
                            self.inner.settings.transcode_retry_delay * attempt as u32,
                        )
                        .await;
                    }
                }
            }
        }
        record.state = pb::asset::State::Failed;
        record.error = last_error.clone();
        let _ = self
            .inner
            .store
            .update_asset(&record, self.inner.clock.now_ms())
            .await;
        self.report(pb::TranscodeJob {
            asset_id: record.id.clone(),
            state: pb::asset::State::Failed as i32,
            percent: 0.0,
            attempt: attempts as i32,
            error: last_error,
        });
        self.finish(&record.id, "failed");
    }

    /// One ffmpeg run, then the segments moved into the storage.
    async fn attempt(
        &self,
        asset: &AssetRecord,
        attempt: i64,
    ) -> Result<(Vec<i64>, Probe), String> {
        let settings = &self.inner.settings;
        let source = PathBuf::from(&asset.source_path);
        let probe = probe(&settings.ffprobe, &source).await?;
        let segment_ms = i64::from(settings.encode.segment_seconds) * 1000;
        let padded_ms = (probe.duration_ms + segment_ms - 1) / segment_ms * segment_ms;
        let work = settings.work_dir.join(format!("{}-{attempt}", asset.id));
        let _ = tokio::fs::remove_dir_all(&work).await;
        for rendition in &settings.encode.ladder.renditions {
            tokio::fs::create_dir_all(work.join(&rendition.name))
                .await
                .map_err(|error| format!("cannot create {}: {error}", work.display()))?;
        }
        let args = ffmpeg_args(&source, &probe, padded_ms, &settings.encode, &work);
        let result = self.run_ffmpeg(asset, attempt, &args, padded_ms).await;
        let outcome = match result {
            Ok(()) => self.store_output(asset, &work).await,
            Err(error) => Err(error),
        };
        if outcome.is_ok() {
            self.store_card(asset, &source, &probe, &work).await;
        }
        let _ = tokio::fs::remove_dir_all(&work).await;
        outcome.map(|durations| (durations, probe))
    }

    async fn run_ffmpeg(
        &self,
        asset: &AssetRecord,
        attempt: i64,
        args: &[String],
        padded_ms: i64,
    ) -> Result<(), String> {
        let settings = &self.inner.settings;
        let mut child = Command::new(&settings.ffmpeg)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                format!(
                    "cannot run {}: {error} (install Debian's ffmpeg package)",
                    settings.ffmpeg
                )
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            if let Some(mut stderr) = stderr {
                let _ = stderr.read_to_string(&mut text).await;
            }
            text
        });
        // The progress is read and the exit awaited under one deadline, so
        // an ffmpeg that hangs with its output open is stopped too.
        let finished = async {
            if let Some(stdout) = stdout {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Some(micros) = line.strip_prefix("out_time_us=") else {
                        continue;
                    };
                    let Ok(micros) = micros.trim().parse::<i64>() else {
                        continue;
                    };
                    // 100 only once the segments are stored.
                    let percent = (micros as f64 / 10.0 / padded_ms.max(1) as f64).clamp(0.0, 99.0);
                    self.report(pb::TranscodeJob {
                        asset_id: asset.id.clone(),
                        state: pb::asset::State::Transcoding as i32,
                        percent,
                        attempt: attempt as i32,
                        error: String::new(),
                    });
                }
            }
            child.wait().await
        };
        let waited = tokio::time::timeout(settings.transcode_timeout, finished).await;
        let status = match waited {
            Ok(Ok(status)) => status,
            Ok(Err(error)) => return Err(format!("ffmpeg did not finish: {error}")),
            Err(_) => {
                let _ = child.kill().await;
                return Err(format!(
                    "ffmpeg took longer than {} s",
                    settings.transcode_timeout.as_secs()
                ));
            }
        };
        let error_text = errors.await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let trimmed = error_text.trim();
        let tail_start = trimmed.len().saturating_sub(ERROR_TAIL_BYTES);
        let tail_start = (tail_start..trimmed.len())
            .find(|index| trimmed.is_char_boundary(*index))
            .unwrap_or(trimmed.len());
        Err(format!(
            "ffmpeg failed ({status}): {}",
            &trimmed[tail_start..]
        ))
    }

    /// Moves the segments of every rendition into the storage and returns
    /// their durations.
    async fn store_output(&self, asset: &AssetRecord, work: &Path) -> Result<Vec<i64>, String> {
        let ladder = &self.inner.settings.encode.ladder;
        let mut durations: Option<Vec<i64>> = None;
        for rendition in &ladder.renditions {
            let playlist = tokio::fs::read_to_string(work.join(&rendition.name).join("index.m3u8"))
                .await
                .map_err(|error| {
                    format!("ffmpeg wrote no playlist for {}: {error}", rendition.name)
                })?;
            let listed = playlist_durations(&playlist);
            if listed.is_empty() {
                return Err(format!("ffmpeg wrote no segment for {}", rendition.name));
            }
            match &durations {
                Some(first) if first.len() != listed.len() => {
                    return Err(format!(
                        "renditions differ: {} segments and {} in {}",
                        first.len(),
                        listed.len(),
                        rendition.name
                    ));
                }
                Some(_) => {}
                None => durations = Some(listed.clone()),
            }
        }
        let durations = durations.unwrap_or_default();
        let _ = self
            .inner
            .storage
            .delete_prefix(&format!("assets/{}", asset.id))
            .await;
        for rendition in &ladder.renditions {
            for index in 0..durations.len() {
                let file = work.join(&rendition.name).join(format!("{index}.ts"));
                let key = segment_key(&asset.id, &rendition.name, index as i64);
                self.inner
                    .storage
                    .put_file(&key, &file)
                    .await
                    .map_err(|error| format!("cannot store {key}: {error}"))?;
            }
        }
        Ok(durations)
    }

    /// Takes the asset's card and stores it, after its segments (their
    /// storing clears the asset's prefix). An asset without a card still
    /// plays: a failure is only a warning.
    async fn store_card(&self, asset: &AssetRecord, source: &Path, probe: &Probe, work: &Path) {
        let settings = &self.inner.settings;
        let file = work.join(CARD_FILE);
        let key = card::card_key(&asset.id);
        let taken = card::take_card(
            &settings.ffmpeg,
            source,
            probe.duration_ms,
            &file,
            settings.transcode_timeout,
        )
        .await;
        let stored = match taken {
            Ok(()) => self
                .inner
                .storage
                .put_file(&key, &file)
                .await
                .map_err(|error| format!("cannot store {key}: {error}")),
            Err(error) => Err(error),
        };
        if let Err(error) = stored {
            tracing::warn!(asset = %asset.id, error = %error, "the asset has no card");
        }
    }
}

/// Where a segment of an asset is stored.
pub fn segment_key(asset_id: &str, rendition: &str, index: i64) -> String {
    format!("assets/{asset_id}/{rendition}/{index}.ts")
}

/// Generates the station's own slate source: a still card with the
/// station's name, `seconds` long, silent.
pub async fn generate_slate_source(
    ffmpeg: &str,
    path: &Path,
    seconds: u32,
    frame_rate: u32,
) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    let video = format!(
        "color=c=0x1d2b53:size=1280x720:rate={frame_rate},\
         drawtext=text='onair':fontsize=120:fontcolor=white:x=(w-tw)/2:y=(h-th)/2-60,\
         drawtext=text='We will be right back':fontsize=48:fontcolor=0xffccaa:x=(w-tw)/2:y=(h-th)/2+80"
    );
    let output = Command::new(ffmpeg)
        .args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"])
        .args(["-f", "lavfi", "-i", &video])
        .args(["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ])
        .args(["-c:a", "aac"])
        .arg(path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| {
            format!("cannot run {ffmpeg}: {error} (install Debian's ffmpeg package)")
        })?;
    if !output.status.success() {
        return Err(format!(
            "ffmpeg cannot make the slate: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ladder::Ladder;

    #[test]
    fn reads_segment_durations() {
        let playlist =
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000000,\n0.ts\n#EXTINF:1.960,\n1.ts\n";
        assert_eq!(playlist_durations(playlist), vec![2000, 1960]);
    }

    #[test]
    fn keyframes_are_forced_on_the_segment_grid() {
        let encode = EncodeSettings {
            ladder: Ladder::parse("a:320x180:300,b:160x90:100", 64).unwrap(),
            segment_seconds: 2,
            frame_rate: 25,
            preset: "veryfast".to_owned(),
        };
        let probe = Probe {
            duration_ms: 5300,
            has_audio: false,
        };
        let args = ffmpeg_args(Path::new("in.mp4"), &probe, 6000, &encode, Path::new("out"));
        let joined = args.join(" ");
        assert!(joined.contains("-g 50 -keyint_min 50 -sc_threshold 0"));
        assert!(joined.contains("expr:gte(t,n_forced*2)"));
        assert!(
            joined.contains("anullsrc"),
            "silence for a source without audio"
        );
        assert!(joined.contains("v:0,a:0,name:a v:1,a:1,name:b"));
        assert!(joined.contains("-t 6.000"));
    }
}
