//! The share service's settings (`share.*` keys).

use std::time::Duration;

use onair_kit::config::{ConfigError, Key, Section, Settings, count_within, url_with_scheme};

/// Settings of the share service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareSettings {
    /// The station's address as viewers reach it (`https://tv.example.com`),
    /// without a trailing slash: share links, their pages' pictures and the
    /// player they send people to are under it. By default the HTTP
    /// address this process listens on, which only suits a station on one
    /// machine.
    pub public_url: String,
    /// How long a link's page is shown as it was made before it is made
    /// again (a channel's page shows what is on air; a comment removed by a
    /// moderator leaves its page within this).
    pub page_ttl: Duration,
    /// How many links one person may make in an hour (links they made
    /// before and ask for again don't count); 0 for no limit.
    pub links_per_user_per_hour: u32,
    /// How often the opens counted in memory are written to the database.
    pub opens_flush_interval: Duration,
}

impl Default for ShareSettings {
    fn default() -> Self {
        ShareSettings {
            public_url: "http://127.0.0.1:8080".to_owned(),
            page_ttl: Duration::from_secs(10),
            links_per_user_per_hour: 100,
            opens_flush_interval: Duration::from_secs(1),
        }
    }
}

impl Section for ShareSettings {
    const KEYS: &'static [Key] = &[
        Key::optional("share.public_url"),
        Key::with_default("share.page_ttl_seconds", "10"),
        Key::with_default("share.links_per_user_per_hour", "100"),
    ];

    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        let public_url = layers
            .parse("share.public_url", "an http:// or https:// URL", |value| {
                url_with_scheme(value, &["http", "https"])
                    .map(|url| url.trim_end_matches('/').to_owned())
            })?
            .unwrap_or_else(|| format!("http://{}", settings.http_addr));
        let page_ttl_seconds: u64 = layers.required(
            "share.page_ttl_seconds",
            "a whole number of seconds from 1 to 3600",
            count_within(1..=3600),
        )?;
        let links_per_user_per_hour = layers.required(
            "share.links_per_user_per_hour",
            "a whole number from 0 (no limit) to 100000",
            count_within(0..=100_000),
        )?;
        Ok(ShareSettings {
            public_url,
            page_ttl: Duration::from_secs(page_ttl_seconds),
            links_per_user_per_hour,
            ..ShareSettings::default()
        })
    }
}
