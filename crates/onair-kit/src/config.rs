//! Settings of one onair process.
//!
//! Every setting has one key (`http`, `data_dir`, `user.access_token_ttl_seconds`…)
//! and is read from, in order of precedence: command-line flags, `ONAIR_*`
//! environment variables (the key upper-cased with `.` as `_`), the TOML file
//! given by `--config`, then the default. A bad value names the key, the value,
//! where it came from and what is expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::abuse::{AddressRate, TrustedPeers};

/// Where a setting's value came from, so that an error can point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag.
    Flag,
    /// The named environment variable.
    Env(String),
    /// The config file at this path.
    File(PathBuf),
    /// The setting's built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => write!(f, "command line"),
            Origin::Env(variable) => write!(f, "environment variable {variable}"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Default => write!(f, "default"),
        }
    }
}

/// Why the settings could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting's value does not parse as what the setting takes.
    #[error("invalid value {value:?} for `{key}` (from {origin}): expected {expected}")]
    InvalidValue {
        /// The setting's key, such as `user.access_token_ttl_seconds`.
        key: String,
        /// The value as it was given.
        value: String,
        /// Where the value came from.
        origin: Origin,
        /// What the setting takes, in words.
        expected: String,
    },
    /// The config file names a setting that does not exist.
    #[error("unknown setting `{key}` in config file {}: known settings are {known}", path.display())]
    UnknownKey {
        /// The unknown key, dotted as tables nest.
        key: String,
        /// The config file.
        path: PathBuf,
        /// Every known key, comma-separated.
        known: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Unreadable {
        /// The config file.
        path: PathBuf,
        /// The error reading it.
        reason: String,
    },
    /// The config file is not valid TOML.
    #[error("config file {} is not valid TOML: {reason}", path.display())]
    Malformed {
        /// The config file.
        path: PathBuf,
        /// What the TOML parser said is wrong.
        reason: String,
    },
}

/// The roles a process can take. By default one process takes all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceRole {
    /// Users, roles, bans, trust scores and the keys that sign access tokens.
    User,
    /// Channels, programs and slots: the schedule.
    Media,
    /// HLS renditions, each channel's live stream, live ingest and replays.
    Playout,
    /// Viewers' comments on the program on air, and their moderation.
    Comment,
    /// Viewer presence and counts, and polls with their ballots.
    Audience,
    /// Share links, their counts and the preview pages crawlers read.
    Share,
    /// REST/JSON and live sockets in front of the gRPC services.
    Gateway,
}

impl ServiceRole {
    /// Every role, in a stable order.
    pub const ALL: [ServiceRole; 7] = [
        ServiceRole::User,
        ServiceRole::Media,
        ServiceRole::Playout,
        ServiceRole::Comment,
        ServiceRole::Audience,
        ServiceRole::Share,
        ServiceRole::Gateway,
    ];

    /// The role's name in settings and logs, such as `user` or `gateway`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceRole::User => "user",
            ServiceRole::Media => "media",
            ServiceRole::Playout => "playout",
            ServiceRole::Comment => "comment",
            ServiceRole::Audience => "audience",
            ServiceRole::Share => "share",
            ServiceRole::Gateway => "gateway",
        }
    }

    /// The role that serves a fully-qualified gRPC service.
    pub fn of_grpc_service(service: &str) -> Option<ServiceRole> {
        ServiceRole::ALL
            .into_iter()
            .find(|role| role.grpc_service() == Some(service))
    }

    /// The fully-qualified gRPC service of the role; the gateway has none.
    pub fn grpc_service(self) -> Option<&'static str> {
        match self {
            ServiceRole::User => Some("onair.user.v1.UserService"),
            ServiceRole::Media => Some("onair.media.v1.MediaService"),
            ServiceRole::Playout => Some("onair.playout.v1.PlayoutService"),
            ServiceRole::Comment => Some("onair.comment.v1.CommentService"),
            ServiceRole::Audience => Some("onair.audience.v1.AudienceService"),
            ServiceRole::Share => Some("onair.share.v1.ShareService"),
            ServiceRole::Gateway => None,
        }
    }
}

impl fmt::Display for ServiceRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceRole {
    type Err = ();

    fn from_str(name: &str) -> Result<Self, ()> {
        ServiceRole::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or(())
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON unless stdout is a terminal.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Everything a process needs to know to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The HTTP port: REST, live sockets, HLS, `/metrics`, `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// The gRPC port: every local service, health, reflection and gRPC-Web.
    pub grpc_addr: SocketAddr,
    /// Holds the SQLite file, the operator key and the embedded bus's durable streams.
    pub data_dir: PathBuf,
    /// The roles this process runs.
    pub roles: Vec<ServiceRole>,
    /// Where to reach the roles this process does not run.
    pub peers: BTreeMap<ServiceRole, String>,
    /// PostgreSQL instead of SQLite in the data dir.
    pub database_url: Option<String>,
    /// NATS instead of the in-process bus.
    pub nats_url: Option<String>,
    /// Redis for counters and presence shared by several processes.
    pub redis_url: Option<String>,
    /// Prefixes every bus subject and stream, so that stations (or test runs)
    /// can share one NATS server.
    pub bus_prefix: String,
    /// How log lines are written (`log.format`; default `auto`).
    pub log_format: LogFormat,
    /// A tracing filter directive such as `info` or `onair_user=debug`.
    pub log_level: String,
    /// How long an access token is valid.
    pub access_token_ttl: Duration,
    /// How long any service trusts what it read of a user's role and ban (a
    /// demotion or a ban lands within this time even if the bus loses the
    /// news; `user.changed` makes it land at once).
    pub user_cache: Duration,
    /// How long a signing key signs before a new one replaces it.
    pub signing_key_rotation: Duration,
    /// How long a call to a peer may take to connect.
    pub peer_connect_timeout: Duration,
    /// How long a unary call to a peer may take.
    pub peer_request_timeout: Duration,
    /// How long a shutdown waits for in-flight requests and streams.
    pub shutdown_grace: Duration,
    /// The largest gRPC message (and REST body) accepted, in bytes.
    pub max_message_bytes: usize,
    /// REST requests a second that one client address may make (0: no limit).
    pub rate_limit_per_ip: u32,
    /// REST requests a second that one authenticated user may make (0: no limit).
    pub rate_limit_per_user: u32,
    /// How long a unary REST call may take before it answers 504.
    pub gateway_request_timeout: Duration,
    /// Origins whose web pages may call the REST API (`*` for any).
    pub cors_origins: Vec<String>,
    /// How long the live socket gathers events into one frame.
    pub live_batch_window: Duration,
    /// Frames a live connection may fall behind before it is told it lagged.
    pub live_queue_frames: usize,
    /// Events per channel each gateway keeps for `?after=` resumes.
    pub live_history_events: usize,
    /// How often live connections are pinged; two silent intervals close one.
    pub live_ping_interval: Duration,
    /// How often each gateway checks the bus's live stream: how soon a lost
    /// stream is declared again and live delivery resumes.
    pub live_check_interval: Duration,
    /// Live events the bus keeps, across channels, for resumes on any gateway.
    pub live_stream_max_events: u64,
    /// How long the bus keeps a live event.
    pub live_stream_max_age: Duration,
    /// The station's IANA time zone, for broadcast days.
    pub time_zone: String,
    /// When the broadcast day starts, local time (`HH:MM`; 05:00 in Japan).
    pub broadcast_day_start: String,
    /// How many broadcast days `/iptv/epg.xml` covers, from the one on air.
    pub epg_days: u32,
    /// The domain part of XMLTV channel ids (`news-1.<domain>`).
    pub xmltv_domain: String,
    /// The longest comment, in characters.
    pub comment_max_chars: usize,
    /// How long the comment service trusts what it read of a user (a ban
    /// lands within this time even if the bus loses the news).
    pub comment_user_cache: Duration,
    /// The playout's settings (`playout.*` keys).
    pub playout: PlayoutConfig,
    /// How the HTTP and gRPC ports hold up against slow and greedy clients
    /// (`server.*` keys).
    pub front_door: FrontDoorConfig,
    /// What one client address may do however many accounts it makes.
    pub address_limits: AddressLimitsConfig,
}

/// The `server.*` settings: the bounds that keep one client from tying up
/// the ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontDoorConfig {
    /// How long a client has to send a request's head, from connecting or
    /// from the first byte of its next request (on the gRPC port: to start
    /// speaking).
    pub header_timeout: Duration,
    /// How long an HTTP connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// How long a request body may keep the server waiting before any credit
    /// from [`FrontDoorConfig::body_min_bytes_per_second`].
    pub body_timeout: Duration,
    /// Every this many bytes of a body that arrive buy it one more second, so
    /// long uploads go on while a trickle is cut off with 408.
    pub body_min_bytes_per_second: u64,
    /// Open connections per port, all clients together.
    pub max_connections: usize,
    /// Open connections per port from one client address (one IPv4 address
    /// or one IPv6 /64); at most `max_connections`.
    pub max_connections_per_ip: usize,
}

/// Limits per client address (`user.accounts_*`, `comment.*_per_ip`) and
/// whose word on a client's address the services believe
/// (`rpc.trusted_peers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressLimitsConfig {
    /// New accounts one address may create. Viewers behind one NAT share
    /// it, so the burst lets a crowd in at once.
    pub accounts_per_ip: AddressRate,
    /// Comments one address may post on one channel: several viewers'
    /// worth of the per-user pace, so a shared address still chats.
    pub comments_per_ip: AddressRate,
    /// The gateways (and processes that forward gRPC) whose
    /// `x-onair-client-address` the services believe.
    pub trusted_peers: TrustedPeers,
}

/// The `playout.*` settings, as given; the playout checks the ladder.
#[derive(Debug, Clone)]
pub struct PlayoutConfig {
    /// The ABR ladder, `NAME:WIDTHxHEIGHT:KBPS,…` (video kbit/s).
    pub ladder: String,
    /// The audio bit rate of every rendition, in kbit/s.
    pub audio_kbps: u32,
    /// The length of every segment, in whole seconds.
    pub segment_seconds: u32,
    /// The frame rate every asset is converted to.
    pub frame_rate: u32,
    /// The x264 preset of transcodes.
    pub x264_preset: String,
    /// How many segments a live playlist lists (at least 6).
    pub window_segments: u32,
    /// The longest stop after which a channel airs the missed time rather
    /// than jumping to the present.
    pub max_catch_up: Duration,
    /// How long a live slot waits for its encoder before airing the slate.
    pub live_wait: Duration,
    /// How long a channel's schedule is trusted without a change event.
    pub schedule_refresh: Duration,
    /// How many transcodes run at once.
    pub transcode_workers: u32,
    /// How many times a transcode is tried before its asset fails.
    pub transcode_attempts: u32,
    /// How long one transcode may take.
    pub transcode_timeout: Duration,
    /// The largest file an encoder may push, in bytes.
    pub ingest_max_bytes: usize,
    /// The largest file `onair asset add --upload` may send, in bytes.
    pub max_upload_bytes: u64,
    /// The base URL encoders are told to push to; by default the HTTP address.
    pub public_url: Option<String>,
}

/// One setting: its key and its default (None: unset unless given).
struct Key {
    name: &'static str,
    default: Option<&'static str>,
}

const KEYS: &[Key] = &[
    Key {
        name: "http",
        default: Some("127.0.0.1:8080"),
    },
    Key {
        name: "grpc",
        default: Some("127.0.0.1:50051"),
    },
    Key {
        name: "data_dir",
        default: Some("./onair-data"),
    },
    Key {
        name: "roles",
        default: Some("user,media,playout,comment,audience,share,gateway"),
    },
    Key {
        name: "peers",
        default: Some(""),
    },
    Key {
        name: "database_url",
        default: None,
    },
    Key {
        name: "nats_url",
        default: None,
    },
    Key {
        name: "redis_url",
        default: None,
    },
    Key {
        name: "bus_prefix",
        default: Some("onair"),
    },
    Key {
        name: "log.format",
        default: Some("auto"),
    },
    Key {
        name: "log.level",
        default: Some("info"),
    },
    Key {
        name: "user.access_token_ttl_seconds",
        default: Some("3600"),
    },
    Key {
        name: "user.cache_ms",
        default: Some("1000"),
    },
    Key {
        name: "user.signing_key_rotation_hours",
        default: Some("720"),
    },
    Key {
        name: "rpc.connect_timeout_ms",
        default: Some("2000"),
    },
    Key {
        name: "rpc.request_timeout_ms",
        default: Some("10000"),
    },
    Key {
        name: "gateway.rate_limit_per_ip",
        default: Some("300"),
    },
    Key {
        name: "gateway.rate_limit_per_user",
        default: Some("100"),
    },
    Key {
        name: "gateway.request_timeout_ms",
        default: Some("15000"),
    },
    Key {
        name: "gateway.cors_origins",
        default: Some("*"),
    },
    Key {
        name: "gateway.live_batch_window_ms",
        default: Some("30"),
    },
    Key {
        name: "gateway.live_queue_frames",
        default: Some("256"),
    },
    Key {
        name: "gateway.live_history_events",
        default: Some("10000"),
    },
    Key {
        name: "gateway.live_ping_seconds",
        default: Some("20"),
    },
    Key {
        name: "gateway.live_check_ms",
        default: Some("500"),
    },
    Key {
        name: "bus.live_max_events",
        default: Some("1000000"),
    },
    Key {
        name: "bus.live_max_age_seconds",
        default: Some("900"),
    },
    Key {
        name: "media.time_zone",
        default: Some("UTC"),
    },
    Key {
        name: "media.broadcast_day_start",
        default: Some("00:00"),
    },
    Key {
        name: "iptv.epg_days",
        default: Some("7"),
    },
    Key {
        name: "iptv.xmltv_domain",
        default: Some("onair"),
    },
    Key {
        name: "comment.max_chars",
        default: Some("200"),
    },
    Key {
        name: "comment.user_cache_ms",
        default: Some("1000"),
    },
    Key {
        name: "playout.ladder",
        default: Some("720p:1280x720:2800,360p:640x360:800"),
    },
    Key {
        name: "playout.audio_kbps",
        default: Some("128"),
    },
    Key {
        name: "playout.segment_seconds",
        default: Some("4"),
    },
    Key {
        name: "playout.frame_rate",
        default: Some("25"),
    },
    Key {
        name: "playout.x264_preset",
        default: Some("veryfast"),
    },
    Key {
        name: "playout.window_segments",
        default: Some("10"),
    },
    Key {
        name: "playout.max_catch_up_seconds",
        default: Some("120"),
    },
    Key {
        name: "playout.live_wait_ms",
        default: Some("8000"),
    },
    Key {
        name: "playout.schedule_refresh_seconds",
        default: Some("10"),
    },
    Key {
        name: "playout.transcode_workers",
        default: Some("1"),
    },
    Key {
        name: "playout.transcode_attempts",
        default: Some("3"),
    },
    Key {
        name: "playout.transcode_timeout_seconds",
        default: Some("3600"),
    },
    Key {
        name: "playout.ingest_max_bytes",
        default: Some("33554432"),
    },
    Key {
        name: "playout.max_upload_bytes",
        default: Some("4294967296"),
    },
    Key {
        name: "playout.public_url",
        default: None,
    },
    Key {
        name: "rpc.max_message_bytes",
        default: Some("4194304"),
    },
    Key {
        name: "shutdown.grace_seconds",
        default: Some("20"),
    },
    Key {
        name: "server.header_timeout_ms",
        default: Some("10000"),
    },
    Key {
        name: "server.idle_timeout_ms",
        default: Some("60000"),
    },
    Key {
        name: "server.body_timeout_ms",
        default: Some("15000"),
    },
    Key {
        name: "server.body_min_bytes_per_second",
        default: Some("1024"),
    },
    Key {
        name: "server.max_connections",
        default: Some("16384"),
    },
    Key {
        name: "server.max_connections_per_ip",
        default: Some("512"),
    },
    Key {
        name: "user.accounts_per_ip_per_minute",
        default: Some("10"),
    },
    Key {
        name: "user.accounts_burst_per_ip",
        default: Some("30"),
    },
    Key {
        name: "comment.per_ip_per_minute",
        default: Some("240"),
    },
    Key {
        name: "comment.burst_per_ip",
        default: Some("40"),
    },
    Key {
        name: "rpc.trusted_peers",
        default: Some(""),
    },
];

/// The environment variable that carries a key: `user.access_token_ttl_seconds`
/// is `ONAIR_USER_ACCESS_TOKEN_TTL_SECONDS`.
pub fn env_var_name(key: &str) -> String {
    format!("ONAIR_{}", key.replace('.', "_").to_uppercase())
}

/// Reads environment variables. Tests pass a map instead of touching the
/// process environment.
pub trait Environment {
    /// The value of the variable `name`, or `None` when it is not set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Values given on the command line, by key. Absent keys fall through to the
/// environment, the file and the defaults.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    values: BTreeMap<String, String>,
}

impl Flags {
    /// Gives `key` the value `value`, replacing any value given before.
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.to_owned(), value.into());
        self
    }

    /// Gives `key` the value `value` if there is one; `None` leaves the key
    /// as it was.
    pub fn set_opt(&mut self, key: &str, value: Option<impl Into<String>>) -> &mut Self {
        if let Some(value) = value {
            self.set(key, value);
        }
        self
    }
}

/// The raw value of each key with where it came from.
struct Layers {
    resolved: BTreeMap<&'static str, (String, Origin)>,
}

impl Layers {
    fn get(&self, key: &str) -> Option<&(String, Origin)> {
        self.resolved.get(key)
    }

    fn parse<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((value, origin)) = self.get(key) else {
            return Ok(None);
        };
        match parse(value) {
            Some(parsed) => Ok(Some(parsed)),
            None => Err(ConfigError::InvalidValue {
                key: key.to_owned(),
                value: value.clone(),
                origin: origin.clone(),
                expected: expected.to_owned(),
            }),
        }
    }

    fn required<T>(
        &self,
        key: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let parsed = self.parse(key, expected, parse)?;
        // Every required key has a default in KEYS, so this only fails if the
        // table and this code disagree.
        parsed.ok_or_else(|| ConfigError::InvalidValue {
            key: key.to_owned(),
            value: String::new(),
            origin: Origin::Default,
            expected: expected.to_owned(),
        })
    }
}

impl Settings {
    /// Resolves the settings from flags, the environment, the config file (from
    /// `--config` or `ONAIR_CONFIG`) and the defaults.
    pub fn resolve(
        flags: &Flags,
        environment: &dyn Environment,
        config_file: Option<&Path>,
    ) -> Result<Settings, ConfigError> {
        let env_config = environment.var("ONAIR_CONFIG").map(PathBuf::from);
        let config_file = config_file.map(Path::to_path_buf).or(env_config);
        let file_values = match &config_file {
            Some(path) => read_config_file(path)?,
            None => BTreeMap::new(),
        };

        let mut resolved = BTreeMap::new();
        for key in KEYS {
            let env_name = env_var_name(key.name);
            let value = if let Some(value) = flags.values.get(key.name) {
                Some((value.clone(), Origin::Flag))
            } else if let Some(value) = environment.var(&env_name) {
                Some((value, Origin::Env(env_name)))
            } else if let Some(value) = file_values.get(key.name) {
                let path = config_file.clone().unwrap_or_default();
                Some((value.clone(), Origin::File(path)))
            } else {
                key.default.map(|value| (value.to_owned(), Origin::Default))
            };
            if let Some(value) = value {
                resolved.insert(key.name, value);
            }
        }
        Layers { resolved }.into_settings()
    }
}

impl Layers {
    fn into_settings(self) -> Result<Settings, ConfigError> {
        let address = "a socket address such as 127.0.0.1:8080";
        let seconds = "a whole number of seconds";
        let milliseconds = "a whole number of milliseconds";
        let non_empty = |value: &str| Some(value.to_owned()).filter(|value| !value.is_empty());
        Ok(Settings {
            http_addr: self.required("http", address, |value| value.parse().ok())?,
            grpc_addr: self.required("grpc", address, |value| value.parse().ok())?,
            data_dir: self.required("data_dir", "a directory path", |value| {
                non_empty(value).map(PathBuf::from)
            })?,
            roles: self.required(
                "roles",
                "a comma-separated list of user, media, playout, comment, audience, share, gateway",
                parse_roles,
            )?,
            peers: self.required(
                "peers",
                "a comma-separated list of SERVICE=URL, e.g. user=http://10.0.0.5:50051",
                parse_peers,
            )?,
            database_url: self.parse(
                "database_url",
                "a postgres:// or sqlite: URL",
                parse_database_url,
            )?,
            nats_url: self.parse("nats_url", "a nats:// URL", |value| {
                url_with_scheme(value, &["nats", "tls"])
            })?,
            redis_url: self.parse("redis_url", "a redis:// URL", |value| {
                url_with_scheme(value, &["redis", "rediss"])
            })?,
            bus_prefix: self.required(
                "bus_prefix",
                "letters, digits, - and _ (a NATS subject token)",
                |value| {
                    let valid = !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    valid.then(|| value.to_owned())
                },
            )?,
            log_format: self.required("log.format", "auto, json or text", |value| match value {
                "auto" => Some(LogFormat::Auto),
                "json" => Some(LogFormat::Json),
                "text" => Some(LogFormat::Text),
                _ => None,
            })?,
            log_level: self.required(
                "log.level",
                "a tracing filter such as info or onair_user=debug",
                |value| {
                    tracing_subscriber::EnvFilter::try_new(value)
                        .ok()
                        .map(|_| value.to_owned())
                },
            )?,
            access_token_ttl: self.required("user.access_token_ttl_seconds", seconds, |value| {
                positive(value).map(Duration::from_secs)
            })?,
            user_cache: self.required(
                "user.cache_ms",
                "a whole number of milliseconds from 0 to 60000",
                milliseconds_within(0..=60_000),
            )?,
            signing_key_rotation: self.required(
                "user.signing_key_rotation_hours",
                "a whole number of hours",
                |value| positive(value).map(|hours| Duration::from_secs(hours * 3600)),
            )?,
            peer_connect_timeout: self.required(
                "rpc.connect_timeout_ms",
                milliseconds,
                |value| positive(value).map(Duration::from_millis),
            )?,
            peer_request_timeout: self.required(
                "rpc.request_timeout_ms",
                milliseconds,
                |value| positive(value).map(Duration::from_millis),
            )?,
            rate_limit_per_ip: self.required(
                "gateway.rate_limit_per_ip",
                "a whole number of requests a second (0 for no limit)",
                |value| value.parse().ok(),
            )?,
            rate_limit_per_user: self.required(
                "gateway.rate_limit_per_user",
                "a whole number of requests a second (0 for no limit)",
                |value| value.parse().ok(),
            )?,
            gateway_request_timeout: self.required(
                "gateway.request_timeout_ms",
                "a whole number of milliseconds",
                |value| positive(value).map(Duration::from_millis),
            )?,
            cors_origins: self.required(
                "gateway.cors_origins",
                "* or a comma-separated list of origins such as https://tv.example.com",
                |value| {
                    let origins: Vec<String> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|origin| !origin.is_empty())
                        .map(str::to_owned)
                        .collect();
                    let valid = origins.iter().all(|origin| {
                        origin == "*"
                            || origin.starts_with("http://")
                            || origin.starts_with("https://")
                    });
                    (valid && !origins.is_empty()).then_some(origins)
                },
            )?,
            live_batch_window: self.required(
                "gateway.live_batch_window_ms",
                "a whole number of milliseconds (0 sends every event at once)",
                |value| value.parse().ok().map(Duration::from_millis),
            )?,
            live_queue_frames: self.required(
                "gateway.live_queue_frames",
                "a whole number of frames, at least 1",
                |value| positive(value).and_then(|frames| usize::try_from(frames).ok()),
            )?,
            live_history_events: self.required(
                "gateway.live_history_events",
                "a whole number of events (0 keeps none, so resumes start over)",
                |value| value.parse().ok(),
            )?,
            live_ping_interval: self.required("gateway.live_ping_seconds", seconds, |value| {
                positive(value).map(Duration::from_secs)
            })?,
            live_check_interval: self.required(
                "gateway.live_check_ms",
                "a whole number of milliseconds from 10 to 60000",
                milliseconds_within(10..=60_000),
            )?,
            live_stream_max_events: self.required(
                "bus.live_max_events",
                "a whole number of events, at least 1",
                positive,
            )?,
            live_stream_max_age: self.required("bus.live_max_age_seconds", seconds, |value| {
                positive(value).map(Duration::from_secs)
            })?,
            time_zone: self.required(
                "media.time_zone",
                "an IANA time zone such as Asia/Tokyo",
                |value| {
                    let plausible = !value.is_empty()
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
                    plausible.then(|| value.to_owned())
                },
            )?,
            broadcast_day_start: self.required(
                "media.broadcast_day_start",
                "a local time HH:MM such as 05:00",
                |value| {
                    let (hours, minutes) = value.split_once(':')?;
                    let hours: u32 = hours.parse().ok()?;
                    let minutes: u32 = minutes.parse().ok()?;
                    (hours < 24 && minutes < 60).then(|| value.to_owned())
                },
            )?,
            epg_days: self.required(
                "iptv.epg_days",
                "a whole number of days from 1 to 31",
                |value| value.parse().ok().filter(|days| (1..=31).contains(days)),
            )?,
            xmltv_domain: self.required(
                "iptv.xmltv_domain",
                "a domain name such as tv.example.com",
                |value| {
                    let valid = value.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && label
                                .bytes()
                                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                    });
                    valid.then(|| value.to_owned())
                },
            )?,
            comment_max_chars: self.required(
                "comment.max_chars",
                "a whole number of characters from 1 to 10000",
                |value| {
                    value
                        .parse()
                        .ok()
                        .filter(|chars| (1..=10_000).contains(chars))
                },
            )?,
            comment_user_cache: self.required(
                "comment.user_cache_ms",
                "a whole number of milliseconds from 0 to 60000",
                milliseconds_within(0..=60_000),
            )?,
            playout: self.playout()?,
            max_message_bytes: self.required(
                "rpc.max_message_bytes",
                "a number of bytes",
                |value| positive(value).and_then(|bytes| usize::try_from(bytes).ok()),
            )?,
            shutdown_grace: self.required("shutdown.grace_seconds", seconds, |value| {
                value.parse().ok().map(Duration::from_secs)
            })?,
            front_door: self.front_door()?,
            address_limits: self.address_limits()?,
        })
    }
}

impl Layers {
    fn front_door(&self) -> Result<FrontDoorConfig, ConfigError> {
        let milliseconds = milliseconds_within(1..=3_600_000);
        let timeout = "a whole number of milliseconds from 1 to 3600000";
        let connections = |key: &str| -> Result<usize, ConfigError> {
            self.required(
                key,
                "a whole number of connections from 1 to 1000000",
                |value| {
                    value
                        .parse()
                        .ok()
                        .filter(|connections| (1..=1_000_000).contains(connections))
                },
            )
        };
        let max_connections = connections("server.max_connections")?;
        Ok(FrontDoorConfig {
            header_timeout: self.required("server.header_timeout_ms", timeout, &milliseconds)?,
            idle_timeout: self.required("server.idle_timeout_ms", timeout, &milliseconds)?,
            body_timeout: self.required("server.body_timeout_ms", timeout, &milliseconds)?,
            body_min_bytes_per_second: self.required(
                "server.body_min_bytes_per_second",
                "a whole number of bytes a second, at least 1",
                positive,
            )?,
            max_connections,
            // Never more than the total: a per-address cap above it would
            // not bind anyway.
            max_connections_per_ip: connections("server.max_connections_per_ip")?
                .min(max_connections),
        })
    }

    fn address_limits(&self) -> Result<AddressLimitsConfig, ConfigError> {
        let per_minute = |value: &str| {
            value
                .parse::<u32>()
                .ok()
                .filter(|count| *count <= 1_000_000)
        };
        let per_minute_expected = "a whole number a minute from 0 (no limit) to 1000000";
        let burst = |value: &str| {
            value
                .parse::<u32>()
                .ok()
                .filter(|count| (1..=1_000_000).contains(count))
        };
        let burst_expected = "a whole number from 1 to 1000000";
        Ok(AddressLimitsConfig {
            accounts_per_ip: AddressRate {
                per_minute: self.required(
                    "user.accounts_per_ip_per_minute",
                    per_minute_expected,
                    per_minute,
                )?,
                burst: self.required("user.accounts_burst_per_ip", burst_expected, burst)?,
            },
            comments_per_ip: AddressRate {
                per_minute: self.required(
                    "comment.per_ip_per_minute",
                    per_minute_expected,
                    per_minute,
                )?,
                burst: self.required("comment.burst_per_ip", burst_expected, burst)?,
            },
            trusted_peers: self.required(
                "rpc.trusted_peers",
                "a comma-separated list of IP addresses or CIDR networks, e.g. 10.0.0.0/8,fd00::/8",
                TrustedPeers::parse,
            )?,
        })
    }
}

impl Layers {
    fn playout(&self) -> Result<PlayoutConfig, ConfigError> {
        let count = |low: u64, high: u64| {
            move |value: &str| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|number| (low..=high).contains(number))
                    .and_then(|number| u32::try_from(number).ok())
            }
        };
        Ok(PlayoutConfig {
            ladder: self.required(
                "playout.ladder",
                "NAME:WIDTHxHEIGHT:KBPS renditions separated by commas, e.g. 720p:1280x720:2800,360p:640x360:800",
                |value| Some(value.to_owned()).filter(|value| !value.trim().is_empty()),
            )?,
            audio_kbps: self.required(
                "playout.audio_kbps",
                "kbit/s from 32 to 512",
                count(32, 512),
            )?,
            segment_seconds: self.required(
                "playout.segment_seconds",
                "a whole number of seconds from 1 to 60",
                count(1, 60),
            )?,
            frame_rate: self.required(
                "playout.frame_rate",
                "frames a second from 1 to 120",
                count(1, 120),
            )?,
            x264_preset: self.required(
                "playout.x264_preset",
                "an x264 preset: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow",
                |value| {
                    let presets = [
                        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                        "slower", "veryslow",
                    ];
                    presets.contains(&value).then(|| value.to_owned())
                },
            )?,
            window_segments: self.required(
                "playout.window_segments",
                "a number of segments from 6 to 1000 (players need at least 6)",
                count(6, 1000),
            )?,
            max_catch_up: self.required(
                "playout.max_catch_up_seconds",
                "a whole number of seconds",
                |value| positive(value).map(Duration::from_secs),
            )?,
            live_wait: self.required(
                "playout.live_wait_ms",
                "a whole number of milliseconds",
                |value| positive(value).map(Duration::from_millis),
            )?,
            schedule_refresh: self.required(
                "playout.schedule_refresh_seconds",
                "a whole number of seconds",
                |value| positive(value).map(Duration::from_secs),
            )?,
            transcode_workers: self.required(
                "playout.transcode_workers",
                "a number of workers from 1 to 64",
                count(1, 64),
            )?,
            transcode_attempts: self.required(
                "playout.transcode_attempts",
                "a number of attempts from 1 to 10",
                count(1, 10),
            )?,
            transcode_timeout: self.required(
                "playout.transcode_timeout_seconds",
                "a whole number of seconds",
                |value| positive(value).map(Duration::from_secs),
            )?,
            ingest_max_bytes: self.required(
                "playout.ingest_max_bytes",
                "a number of bytes",
                |value| positive(value).and_then(|bytes| usize::try_from(bytes).ok()),
            )?,
            max_upload_bytes: self.required(
                "playout.max_upload_bytes",
                "a number of bytes",
                positive,
            )?,
            public_url: self.parse("playout.public_url", "an http:// or https:// URL", |value| {
                url_with_scheme(value, &["http", "https"])
            })?,
        })
    }
}

impl Settings {
    /// Whether this process runs a role.
    pub fn runs(&self, role: ServiceRole) -> bool {
        self.roles.contains(&role)
    }

    /// The path of the SQLite database used when no database URL is given.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("onair.db")
    }
}

/// Parses a duration given in whole milliseconds within `range`.
fn milliseconds_within(range: std::ops::RangeInclusive<u64>) -> impl Fn(&str) -> Option<Duration> {
    move |value| {
        value
            .parse::<u64>()
            .ok()
            .filter(|millis| range.contains(millis))
            .map(Duration::from_millis)
    }
}

fn positive(value: &str) -> Option<u64> {
    value.parse::<u64>().ok().filter(|number| *number > 0)
}

fn url_with_scheme(value: &str, schemes: &[&str]) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    (schemes.contains(&scheme) && !rest.is_empty()).then(|| value.to_owned())
}

fn parse_database_url(value: &str) -> Option<String> {
    let known = value.starts_with("postgres://")
        || value.starts_with("postgresql://")
        || value.starts_with("sqlite:");
    known.then(|| value.to_owned())
}

fn parse_roles(value: &str) -> Option<Vec<ServiceRole>> {
    let mut roles = Vec::new();
    for name in value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let role = name.parse().ok()?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    (!roles.is_empty()).then_some(roles)
}

fn parse_peers(value: &str) -> Option<BTreeMap<ServiceRole, String>> {
    let mut peers = BTreeMap::new();
    for entry in value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (name, url) = entry.split_once('=')?;
        let role: ServiceRole = name.trim().parse().ok()?;
        role.grpc_service()?;
        let url = url_with_scheme(url.trim(), &["http", "https"])?;
        peers.insert(role, url);
    }
    Some(peers)
}

/// Reads a TOML file into key → string, flattening tables into dotted keys,
/// lists into comma-separated values and the `peers` table into SERVICE=URL.
fn read_config_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Unreadable {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|error: toml::de::Error| ConfigError::Malformed {
                path: path.to_path_buf(),
                reason: error.to_string().trim_end().to_owned(),
            })?;
    let mut values = BTreeMap::new();
    flatten_toml(path, "", &table, &mut values)?;
    Ok(values)
}

fn flatten_toml(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    values: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let text = match value {
            toml::Value::Table(inner) if key == "peers" => inner
                .iter()
                .map(|(service, url)| match url {
                    toml::Value::String(url) => format!("{service}={url}"),
                    other => format!("{service}={other}"),
                })
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Table(inner) => {
                flatten_toml(path, &key, inner, values)?;
                continue;
            }
            toml::Value::String(text) => text.clone(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        if !KEYS.iter().any(|known| known.name == key) {
            let known: Vec<&str> = KEYS.iter().map(|known| known.name).collect();
            return Err(ConfigError::UnknownKey {
                key,
                path: path.to_path_buf(),
                known: known.join(", "),
            });
        }
        values.insert(key, text);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_every_role_on_the_documented_ports() {
        let settings = Settings::resolve(&Flags::default(), &env(&[]), None).unwrap();
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(settings.data_dir, PathBuf::from("./onair-data"));
        assert_eq!(settings.roles.len(), 7);
        assert!(settings.database_url.is_none());
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("onair.toml");
        std::fs::write(
            &file,
            "http = \"127.0.0.1:1000\"\ngrpc = \"127.0.0.1:1001\"\ndata_dir = \"/from/file\"\n\
             roles = [\"user\"]\n[peers]\nmedia = \"http://m:50051\"\n[user]\naccess_token_ttl_seconds = 60\n",
        )
        .unwrap();
        let mut flags = Flags::default();
        flags.set("http", "127.0.0.1:3000");
        let environment = env(&[
            ("ONAIR_HTTP", "127.0.0.1:2000"),
            ("ONAIR_GRPC", "127.0.0.1:2001"),
        ]);
        let settings = Settings::resolve(&flags, &environment, Some(&file)).unwrap();
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:2001");
        assert_eq!(settings.data_dir, PathBuf::from("/from/file"));
        assert_eq!(settings.roles, vec![ServiceRole::User]);
        assert_eq!(settings.peers[&ServiceRole::Media], "http://m:50051");
        assert_eq!(settings.access_token_ttl, Duration::from_secs(60));
    }

    #[test]
    fn a_bad_value_names_key_value_origin_and_expectation() {
        let environment = env(&[("ONAIR_HTTP", "localhost")]);
        let error = Settings::resolve(&Flags::default(), &environment, None).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("`http`"), "{message}");
        assert!(message.contains("\"localhost\""), "{message}");
        assert!(message.contains("ONAIR_HTTP"), "{message}");
        assert!(message.contains("socket address"), "{message}");
    }

    #[test]
    fn unknown_roles_and_peers_are_refused() {
        let mut flags = Flags::default();
        flags.set("roles", "user,videos");
        let error = Settings::resolve(&flags, &env(&[]), None).unwrap_err();
        assert!(error.to_string().contains("roles"));

        let mut flags = Flags::default();
        flags.set("peers", "user=10.0.0.1:50051");
        let error = Settings::resolve(&flags, &env(&[]), None).unwrap_err();
        assert!(error.to_string().contains("SERVICE=URL"));
    }

    #[test]
    fn a_malformed_config_file_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("onair.toml");
        std::fs::write(&file, "http = \"127.0.0.1:1\"\ngrpc = \n").unwrap();
        let error = Settings::resolve(&Flags::default(), &env(&[]), Some(&file)).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("not valid TOML"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("onair.toml");
        std::fs::write(&file, "htp = \"127.0.0.1:1\"\n").unwrap();
        let error = Settings::resolve(&Flags::default(), &env(&[]), Some(&file)).unwrap_err();
        assert!(error.to_string().contains("unknown setting `htp`"));
    }

    #[test]
    fn front_door_settings_come_from_a_server_table_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("onair.toml");
        std::fs::write(
            &file,
            "http = \"127.0.0.1:1000\"\n[server]\nheader_timeout_ms = 5000\nmax_connections = 100\n",
        )
        .unwrap();
        let settings = Settings::resolve(&Flags::default(), &env(&[]), Some(&file)).unwrap();
        assert_eq!(settings.front_door.header_timeout, Duration::from_secs(5));
        assert_eq!(settings.front_door.max_connections, 100);

        // The per-address cap never exceeds the total.
        assert_eq!(settings.front_door.max_connections_per_ip, 100);

        let environment = env(&[("ONAIR_SERVER_MAX_CONNECTIONS_PER_IP", "0")]);
        let error = Settings::resolve(&Flags::default(), &environment, None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`server.max_connections_per_ip`"),
            "{error}"
        );

        let environment = env(&[("ONAIR_SERVER_IDLE_TIMEOUT_MS", "0")]);
        let error = Settings::resolve(&Flags::default(), &environment, None).unwrap_err();
        assert!(
            error.to_string().contains("`server.idle_timeout_ms`"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let error = Settings::resolve(
            &Flags::default(),
            &env(&[]),
            Some(Path::new("/nonexistent/onair.toml")),
        )
        .unwrap_err();
        assert!(error.to_string().contains("cannot read config file"));
    }
}
