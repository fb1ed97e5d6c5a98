//! The live sockets' settings: how events are batched, how far a
//! connection may fall behind, how much history resumes get, and the timers
//! that keep connections and the live stream checked.

use std::time::Duration;

use onair_kit::bus::DurableStream;
use onair_kit::config::{
    ConfigError, Key, Section, Settings, milliseconds_within, positive, positive_seconds,
};

/// Settings of the live sockets.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// How long events are gathered into one frame; zero sends each at once.
    pub batch_window: Duration,
    /// The most events in one frame.
    pub max_batch_events: usize,
    /// How many frames a connection may fall behind before it is told it lagged.
    pub queue_frames: usize,
    /// Events per channel kept for `?after=` resumes.
    pub history_events: usize,
    /// How often connections are pinged; a WebSocket whose ping is still
    /// unanswered at the next one is closed, and so is one whose writes stall
    /// for two intervals.
    pub ping_interval: Duration,
    /// What clients are told to wait before they reconnect after a shutdown.
    pub reconnect_delay: Duration,
    /// How often the live stream is checked on the bus: how soon a lost stream
    /// is noticed, declared again and the feeds reopened.
    pub check_interval: Duration,
    /// The live stream's declaration, to declare it again when the bus lost it.
    pub stream: Option<DurableStream>,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            batch_window: Duration::from_millis(30),
            max_batch_events: 512,
            queue_frames: 256,
            history_events: 10_000,
            ping_interval: Duration::from_secs(20),
            reconnect_delay: Duration::from_secs(2),
            check_interval: Duration::from_millis(500),
            stream: None,
        }
    }
}

impl Section for LiveSettings {
    const KEYS: &'static [Key] = &[
        Key::with_default("gateway.live_batch_window_ms", "30"),
        Key::with_default("gateway.live_queue_frames", "256"),
        Key::with_default("gateway.live_history_events", "10000"),
        Key::with_default("gateway.live_ping_seconds", "20"),
        Key::with_default("gateway.live_check_ms", "500"),
    ];

    /// Reads the `gateway.live_*` keys; the live stream is declared as the
    /// bus keeps it (`bus.live_*`).
    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        Ok(LiveSettings {
            batch_window: layers.required(
                "gateway.live_batch_window_ms",
                "a whole number of milliseconds (0 sends every event at once)",
                |value| value.parse().ok().map(Duration::from_millis),
            )?,
            queue_frames: layers.required(
                "gateway.live_queue_frames",
                "a whole number of frames, at least 1",
                |value| positive(value).and_then(|frames| usize::try_from(frames).ok()),
            )?,
            history_events: layers.required(
                "gateway.live_history_events",
                "a whole number of events (0 keeps none, so resumes start over)",
                |value| value.parse().ok(),
            )?,
            ping_interval: layers.required(
                "gateway.live_ping_seconds",
                "a whole number of seconds",
                positive_seconds,
            )?,
            check_interval: layers.required(
                "gateway.live_check_ms",
                "a whole number of milliseconds from 10 to 60000",
                milliseconds_within(10..=60_000),
            )?,
            stream: Some(settings.live_stream()),
            ..LiveSettings::default()
        })
    }
}
