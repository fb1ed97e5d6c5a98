//! Cards: one picture of each asset, for the pictures of share pages
//! (`og:image`). ffmpeg takes one frame when the asset is transcoded,
//! scaled to fit the size link cards are drawn at and letterboxed in black
//! to exactly that size, as a JPEG. The station's slate has one too, the
//! picture for pages whose program has none.
//!
//! A card is a convenience: an asset that plays but has no card is still
//! ready, and its card URL answers 404.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The width of every card: what share pages' link previews are drawn at.
pub const CARD_WIDTH: u32 = 1200;
/// The height of every card.
pub const CARD_HEIGHT: u32 = 630;
/// The JPEG quality ffmpeg is asked for (`-q:v`, 2 best to 31 worst).
const CARD_QUALITY: u32 = 3;
/// Sources shorter than this give their first frame: a seek into a fraction
/// of a second can land past the only frames there are.
const SHORTEST_SEEKED_SOURCE_MS: i64 = 1000;

/// Where the station's own card is stored.
pub const STATION_CARD_KEY: &str = "station/card.jpg";

/// Where an asset's card is stored: under the asset's prefix, so the
/// deletion of an asset's output before a retry removes its card too.
pub fn card_key(asset_id: &str) -> String {
    format!("assets/{asset_id}/card.jpg")
}

/// Where in a source of `duration_ms` its card is taken: a tenth of the
/// way in, past a black or faded opening, and always within the source.
pub fn card_position_ms(duration_ms: i64) -> i64 {
    if duration_ms < SHORTEST_SEEKED_SOURCE_MS {
        return 0;
    }
    duration_ms / 10
}

/// ffmpeg's arguments for one card: the frame at `position_ms` of the
/// source's first video stream, fitted into the card and padded with black
/// to its exact size, written as one JPEG to `out`.
pub fn card_args(source: &Path, position_ms: i64, out: &Path) -> Vec<String> {
    let (width, height) = (CARD_WIDTH, CARD_HEIGHT);
    let picture = format!(
        "scale={width}:{height}:force_original_aspect_ratio=decrease,\
         pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1"
    );
    let mut args: Vec<String> = vec![
        "-hide_banner".into(),
        "-nostdin".into(),
        "-y".into(),
        "-loglevel".into(),
        "error".into(),
        // Before the input: a seek to the nearest keyframe, then decoded up
        // to the position, rather than the whole source decoded up to it.
        "-ss".into(),
        format!("{:.3}", position_ms as f64 / 1000.0),
        "-i".into(),
        source.display().to_string(),
    ];
    args.extend(["-map".into(), "0:v:0".into()]);
    args.extend(["-an".into(), "-sn".into(), "-dn".into()]);
    args.extend(["-frames:v".into(), "1".into()]);
    args.extend(["-vf".into(), picture]);
    args.extend([
        "-c:v".into(),
        "mjpeg".into(),
        // Full-range YUV, what JPEG viewers expect.
        "-pix_fmt".into(),
        "yuvj420p".into(),
        "-q:v".into(),
        CARD_QUALITY.to_string(),
    ]);
    // One image to one file name, not a numbered sequence.
    args.extend(["-f".into(), "image2".into(), "-update".into(), "1".into()]);
    args.push(out.display().to_string());
    args
}

/// Takes the card of a source of `duration_ms` into the file `out`, with
/// `ffmpeg`, in at most `timeout`. When the seek finds no frame (a video
/// stream that ends before the source's other streams), the first frame is
/// taken instead.
pub async fn take_card(
    ffmpeg: &str,
    source: &Path,
    duration_ms: i64,
    out: &Path,
    timeout: Duration,
) -> Result<(), String> {
    // Whether ffmpeg wrote a frame is told by the file: it exits 0 when a
    // seek finds none.
    match tokio::fs::remove_file(out).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot remove {}: {error}", out.display()));
        }
        _ => {}
    }
    let position_ms = card_position_ms(duration_ms);
    run_card(ffmpeg, source, position_ms, out, timeout).await?;
    if tokio::fs::try_exists(out).await.unwrap_or(false) {
        return Ok(());
    }
    if position_ms > 0 {
        run_card(ffmpeg, source, 0, out, timeout).await?;
        if tokio::fs::try_exists(out).await.unwrap_or(false) {
            return Ok(());
        }
    }
    Err(format!("ffmpeg found no frame in {}", source.display()))
}

async fn run_card(
    ffmpeg: &str,
    source: &Path,
    position_ms: i64,
    out: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let args = card_args(source, position_ms, out);
    let run = Command::new(ffmpeg)
        .args(&args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            return Err(format!(
                "cannot run {ffmpeg}: {error} (install Debian's ffmpeg package)"
            ));
        }
        // The dropped child is killed.
        Err(_) => {
            return Err(format!(
                "ffmpeg took longer than {} s to take a card",
                timeout.as_secs()
            ));
        }
    };
    if !output.status.success() {
        return Err(format!(
            "ffmpeg cannot take a card ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_is_one_letterboxed_jpeg_frame_of_the_card_size() {
        let args = card_args(Path::new("in.mp4"), 2500, Path::new("work/card.jpg"));
        let joined = args.join(" ");
        assert!(
            joined.contains("-ss 2.500 -i in.mp4"),
            "the seek is an input option: {joined}"
        );
        assert!(joined.contains("-map 0:v:0"));
        assert!(joined.contains("-frames:v 1"));
        assert!(joined.contains(
            "scale=1200:630:force_original_aspect_ratio=decrease,\
             pad=1200:630:(ow-iw)/2:(oh-ih)/2:color=black"
        ));
        assert!(joined.contains("-c:v mjpeg"));
        assert!(joined.contains("-f image2 -update 1"));
        assert_eq!(args.last().map(String::as_str), Some("work/card.jpg"));
    }

    #[test]
    fn a_card_is_taken_a_tenth_of_the_way_in_or_at_the_start_of_a_short_source() {
        assert_eq!(card_position_ms(60_000), 6_000);
        assert_eq!(card_position_ms(3_000), 300);
        assert_eq!(card_position_ms(1_000), 100);
        assert_eq!(card_position_ms(999), 0);
        assert_eq!(card_position_ms(0), 0);
    }

    #[test]
    fn an_assets_card_lies_under_its_prefix() {
        assert_eq!(card_key("news-1"), "assets/news-1/card.jpg");
    }
}
