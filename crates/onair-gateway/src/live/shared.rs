//! What the parts of one process's live sockets share: the open hubs, the
//! watcher's view of the live stream, the shutdown flag, the settings and the
//! hot-path metrics. The feeds, writers and connections all use it; it
//! knows only the hub and the settings, so it imports none of them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use futures::future::BoxFuture;
use onair_kit::bus::SharedBus;
use onair_kit::metrics::Registry;
use onair_kit::presence::Watchers;
use prost_reflect::DescriptorPool;
use tokio::sync::watch;

use super::hub::ChannelHub;
use super::settings::LiveSettings;

/// Whether a channel may be watched: `Ok` if it exists, the service's status
/// (NotFound, Unavailable…) if not.
pub type ChannelCheck =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<(), tonic::Status>> + Send + Sync>;

/// The state behind a `Live`, shared by its feeds, writers and connections.
pub(super) struct Inner {
    pub(super) bus: SharedBus,
    pub(super) pool: DescriptorPool,
    pub(super) settings: LiveSettings,
    pub(super) check_channel: ChannelCheck,
    /// The open hubs by channel id. An async lock, because opening a hub asks the
    /// bus; joining happens under it too, so a hub never closes under a joiner.
    pub(super) hubs: tokio::sync::Mutex<HashMap<String, Arc<ChannelHub>>>,
    /// Set once, on shutdown.
    pub(super) closing: watch::Sender<bool>,
    /// What the watcher last learnt of the live stream.
    pub(super) path: watch::Sender<LivePath>,
    pub(super) stats: Stats,
    /// Where this process's viewers are counted, while their socket is open.
    pub(super) presence: Option<Arc<Watchers>>,
}

/// The state of live delivery as the watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LivePath {
    /// Not asked yet.
    Unchecked,
    /// The live stream answers, under this epoch. `outages` counts the times
    /// it was down before: a hub that saw fewer may have missed events.
    Up { epoch: u64, outages: u64 },
    /// The bus or the stream cannot be reached.
    Down { problem: String, outages: u64 },
}

impl LivePath {
    pub(super) fn outages(&self) -> u64 {
        match self {
            LivePath::Unchecked => 0,
            LivePath::Up { outages, .. } | LivePath::Down { outages, .. } => *outages,
        }
    }
}

/// Hot-path metrics, held as handles so a delivery costs one atomic add.
pub(super) struct Stats {
    pub(super) websocket_connections: Arc<AtomicI64>,
    pub(super) sse_connections: Arc<AtomicI64>,
    pub(super) channels: Arc<AtomicI64>,
    pub(super) frames: Arc<AtomicU64>,
    pub(super) events: Arc<AtomicU64>,
    pub(super) deliveries: Arc<AtomicU64>,
    pub(super) lagged: Arc<AtomicU64>,
    pub(super) undecodable: Arc<AtomicU64>,
}

impl Stats {
    pub(super) fn new(metrics: &Registry) -> Stats {
        let connections = |transport| {
            metrics.gauge_handle(
                "onair_live_connections",
                "Open live socket connections.",
                &[("transport", transport)],
            )
        };
        Stats {
            websocket_connections: connections("websocket"),
            sse_connections: connections("sse"),
            channels: metrics.gauge_handle(
                "onair_live_channels",
                "Channels with a live bus subscription in this process.",
                &[],
            ),
            frames: metrics.counter_handle(
                "onair_live_frames_total",
                "Frames built for live sockets (each encoded once and shared by every connection).",
                &[],
            ),
            events: metrics.counter_handle(
                "onair_live_events_total",
                "Live events received from the bus.",
                &[],
            ),
            deliveries: metrics.counter_handle(
                "onair_live_deliveries_total",
                "Live events written to connections.",
                &[],
            ),
            lagged: metrics.counter_handle(
                "onair_live_lagged_total",
                "Connections closed because they fell too far behind.",
                &[],
            ),
            undecodable: metrics.counter_handle(
                "onair_live_undecodable_events_total",
                "Live events skipped because their payload did not decode.",
                &[],
            ),
        }
    }
}

/// Resolves once `flag` is set (the server shuts down, a hub stops).
pub(super) async fn shutting_down(flag: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens once it is over too.
    let _ = flag.wait_for(|set| *set).await;
}

/// Counts a connection while it is open.
pub(super) struct ConnectionGuard(pub(super) Arc<AtomicI64>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
