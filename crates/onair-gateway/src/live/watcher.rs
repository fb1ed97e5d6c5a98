//! The live-stream watcher: asks the bus about the live stream, declares it
//! again when the bus lost it, and tells the feeds (and `/readyz`) whether
//! live delivery is up and under which epoch.

use std::time::Duration;

use onair_kit::bus::BusError;
use onair_kit::events::LIVE_STREAM;

use super::shared::{Inner, LivePath};

/// Asks the bus about the live stream every `check_interval` of the
/// settings until the server shuts down, declares it again if the bus lost it, and
/// tells the hubs what it found.
pub(super) async fn watch_live_stream(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(live) = inner.upgrade() else {
            return;
        };
        if *live.closing.borrow() {
            return;
        }
        let interval = live.settings.check_interval;
        let found = match tokio::time::timeout(
            interval.max(Duration::from_secs(1)),
            live.bus.stream_bounds(LIVE_STREAM),
        )
        .await
        {
            Ok(Ok(bounds)) => Ok(bounds.epoch),
            Ok(Err(BusError::UnknownStream(_))) => match &live.settings.stream {
                Some(declaration) => match live.bus.ensure_stream(declaration).await {
                    Ok(()) => match live.bus.stream_bounds(LIVE_STREAM).await {
                        Ok(bounds) => {
                            tracing::info!(
                                epoch = bounds.epoch,
                                "declared the live stream again: the bus had lost it"
                            );
                            Ok(bounds.epoch)
                        }
                        Err(error) => Err(error.to_string()),
                    },
                    Err(error) => Err(format!(
                        "the bus lost the live stream and cannot declare it again: {error}"
                    )),
                },
                None => Err("the bus has no live stream".to_owned()),
            },
            Ok(Err(error)) => Err(error.to_string()),
            Err(_elapsed) => Err(format!(
                "the bus did not answer within {:?}",
                interval.max(Duration::from_secs(1))
            )),
        };
        live.path.send_if_modified(|path| {
            let next = match (&found, &*path) {
                (Ok(epoch), LivePath::Down { outages, .. }) => LivePath::Up {
                    epoch: *epoch,
                    outages: outages + 1,
                },
                (Ok(epoch), other) => LivePath::Up {
                    epoch: *epoch,
                    outages: other.outages(),
                },
                (Err(problem), other) => LivePath::Down {
                    problem: problem.clone(),
                    outages: other.outages(),
                },
            };
            if next == *path {
                return false;
            }
            match &next {
                LivePath::Down { problem, .. } if !matches!(path, LivePath::Down { .. }) => {
                    tracing::warn!(problem = %problem, "live delivery is down");
                }
                LivePath::Up { epoch, .. } if matches!(path, LivePath::Down { .. }) => {
                    tracing::info!(epoch, "live delivery is back");
                }
                _ => {}
            }
            *path = next;
            true
        });
        drop(live);
        tokio::time::sleep(interval).await;
    }
}
