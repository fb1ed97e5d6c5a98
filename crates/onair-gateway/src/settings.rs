//! The REST front door's settings (`gateway.*` keys): body size, deadline,
//! rate limits and the web origins that may call it.

use onair_kit::config::{ConfigError, Key, Section, Settings, count_within, positive_milliseconds};

/// Settings of the REST front door.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a unary call may take before the client gets 504.
    pub request_timeout: std::time::Duration,
    /// Requests a second per client address; 0 for no limit.
    pub rate_limit_per_ip: u32,
    /// Requests a second per authenticated user; 0 for no limit.
    pub rate_limit_per_user: u32,
    /// Origins allowed to call from a web page (`*` for any).
    pub cors_origins: Vec<String>,
}

impl Section for GatewaySettings {
    const KEYS: &'static [Key] = &[
        Key::with_default("gateway.rate_limit_per_ip", "300"),
        Key::with_default("gateway.rate_limit_per_user", "100"),
        Key::with_default("gateway.request_timeout_ms", "15000"),
        Key::with_default("gateway.cors_origins", "*"),
    ];

    /// Reads the `gateway.*` keys; the largest body is the largest gRPC
    /// message (`rpc.max_message_bytes`).
    fn read(settings: &Settings) -> Result<Self, ConfigError> {
        let layers = settings.layers();
        let requests = "a whole number of requests a second (0 for no limit)";
        Ok(GatewaySettings {
            max_body_bytes: settings.max_message_bytes,
            request_timeout: layers.required(
                "gateway.request_timeout_ms",
                "a whole number of milliseconds",
                positive_milliseconds,
            )?,
            rate_limit_per_ip: layers.required(
                "gateway.rate_limit_per_ip",
                requests,
                count_within(0..=u32::MAX),
            )?,
            rate_limit_per_user: layers.required(
                "gateway.rate_limit_per_user",
                requests,
                count_within(0..=u32::MAX),
            )?,
            cors_origins: layers.required(
                "gateway.cors_origins",
                "* or a comma-separated list of origins such as https://tv.example.com",
                parse_origins,
            )?,
        })
    }
}

/// `*` or a list of `http://` and `https://` origins.
fn parse_origins(value: &str) -> Option<Vec<String>> {
    let origins: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(str::to_owned)
        .collect();
    let valid = origins.iter().all(|origin| {
        origin == "*" || origin.starts_with("http://") || origin.starts_with("https://")
    });
    (valid && !origins.is_empty()).then_some(origins)
}
