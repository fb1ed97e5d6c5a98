//! The audience service's settings (`audience.*` keys); how long marks last
//! is the station's presence setting ([`PresenceSettings`]), which the
//! gateways share.

use std::time::Duration;

use onair_kit::config::{ConfigError, Key, Section, Settings, count_within};
use onair_kit::presence::PresenceSettings;

/// Settings of the audience service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudienceSettings {
    /// How often players without a live socket are to heartbeat. A heartbeat
    /// counts its viewer for this long and the presence ttl after, so a
    /// viewer whose heartbeats stop drops out within the ttl of the one
    /// they missed.
    pub heartbeat_interval: Duration,
    /// How often counts are taken, announced on the live sockets (when they
    /// changed) and recorded.
    pub count_interval: Duration,
    /// How long marks last and how often held viewers are renewed.
    pub presence: PresenceSettings,
}

impl Default for AudienceSettings {
    fn default() -> Self {
        AudienceSettings {
            heartbeat_interval: Duration::from_secs(30),
            count_interval: Duration::from_secs(1),
            presence: PresenceSettings::default(),
        }
    }
}

impl Section for AudienceSettings {
    const KEYS: &'static [Key] = &[
        Key::with_default("audience.heartbeat_seconds", "30"),
        Key::with_default("audience.count_interval_ms", "1000"),
    ];

    /// Reads the `audience.*` keys and the station's `presence.*` keys.
    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        let heartbeat_seconds: u64 = layers.required(
            "audience.heartbeat_seconds",
            "a whole number of seconds from 1 to 3600",
            count_within(1..=3600),
        )?;
        let count_interval_ms: u64 = layers.required(
            "audience.count_interval_ms",
            "a whole number of milliseconds from 100 to 60000",
            count_within(100..=60_000),
        )?;
        Ok(AudienceSettings {
            heartbeat_interval: Duration::from_secs(heartbeat_seconds),
            count_interval: Duration::from_millis(count_interval_ms),
            presence: settings.section()?,
        })
    }
}
