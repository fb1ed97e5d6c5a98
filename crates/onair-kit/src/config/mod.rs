//! Settings of one onair process.
//!
//! Every setting has one key (`http`, `data_dir`, `comment.max_chars`…) and
//! goes through the same layers (see [`layers`]): command-line flags, `ONAIR_*`
//! environment variables (the key upper-cased with `.` as `_`), the TOML file
//! given by `--config`, then the default. The kit owns the keys every process
//! shares (ports, storage, the bus, logging, calls between services, the
//! front door, the station's time zone); each service declares its own
//! section beside its code (a [`Section`]: its keys and how it reads them), so
//! adding a setting touches one crate. The binary lists the sections it runs
//! and [`Settings::resolve`] checks all of them before anything starts.

mod layers;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use layers::{
    ConfigError, Environment, Flags, Key, Layers, Origin, ProcessEnvironment, count_within,
    env_var_name, milliseconds_within, positive, positive_milliseconds, positive_seconds,
    url_with_scheme,
};

use crate::abuse::{AddressRate, TrustedPeers};

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

/// Everything every process needs to know to start; each service reads its
/// own section out of it with [`Settings::section`].
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
    /// How long any service trusts what it read of a user's role and ban (a
    /// demotion or a ban lands within this time even if the bus loses the
    /// news; `user.changed` makes it land at once).
    pub user_cache: Duration,
    /// How long a call to a peer may take to connect.
    pub peer_connect_timeout: Duration,
    /// How long a unary call to a peer may take.
    pub peer_request_timeout: Duration,
    /// How long a shutdown waits for in-flight requests and streams.
    pub shutdown_grace: Duration,
    /// The largest gRPC message (and REST body) accepted, in bytes.
    pub max_message_bytes: usize,
    /// The gateways (and processes that forward gRPC) whose
    /// `x-onair-client-address` the services believe (`rpc.trusted_peers`).
    pub trusted_peers: TrustedPeers,
    /// Live events the bus keeps, across channels, for resumes on any gateway.
    pub live_stream_max_events: u64,
    /// How long the bus keeps a live event.
    pub live_stream_max_age: Duration,
    /// The station's IANA time zone, for broadcast days (`media.time_zone`;
    /// the schedule and the guide exports both count in it).
    pub time_zone: String,
    /// When the broadcast day starts, local time (`HH:MM`; 05:00 in Japan).
    pub broadcast_day_start: String,
    /// How the HTTP and gRPC ports hold up against slow and greedy clients
    /// (`server.*` keys).
    pub front_door: FrontDoorConfig,
    /// Every key's raw value, for the services' sections.
    layers: Layers,
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

/// A service's own settings: the keys it owns and how it reads them.
/// Implemented beside the service's settings struct; the binary lists every
/// section in [`Settings::resolve`], which refuses a process whose sections
/// do not read.
pub trait Section: Sized {
    /// The keys this section owns, with their defaults.
    const KEYS: &'static [Key];

    /// Reads the section from resolved settings: its own keys through
    /// [`Settings::layers`], and any setting the kit owns.
    fn read(settings: &Settings) -> Result<Self, ConfigError>;
}

/// A section as [`Settings::resolve`] takes it: its keys and a check that it
/// reads.
#[derive(Clone, Copy)]
pub struct SectionSpec {
    keys: &'static [Key],
    check: fn(&Settings) -> Result<(), ConfigError>,
}

impl SectionSpec {
    /// The spec of section `T`.
    pub const fn of<T: Section>() -> SectionSpec {
        SectionSpec {
            keys: T::KEYS,
            check: check_section::<T>,
        }
    }

    /// The keys the section owns.
    pub fn keys(&self) -> &'static [Key] {
        self.keys
    }
}

fn check_section<T: Section>(settings: &Settings) -> Result<(), ConfigError> {
    T::read(settings).map(drop)
}

impl fmt::Debug for SectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.keys.iter().map(|key| key.name).collect();
        f.debug_struct("SectionSpec").field("keys", &keys).finish()
    }
}

/// The keys the kit owns.
const KEYS: &[Key] = &[
    Key::with_default("http", "127.0.0.1:8080"),
    Key::with_default("grpc", "127.0.0.1:50051"),
    Key::with_default("data_dir", "./onair-data"),
    Key::with_default("roles", "user,media,playout,comment,audience,share,gateway"),
    Key::with_default("peers", ""),
    Key::optional("database_url"),
    Key::optional("nats_url"),
    Key::optional("redis_url"),
    Key::with_default("bus_prefix", "onair"),
    Key::with_default("log.format", "auto"),
    Key::with_default("log.level", "info"),
    Key::with_default("user.cache_ms", "1000"),
    Key::with_default("rpc.connect_timeout_ms", "2000"),
    Key::with_default("rpc.request_timeout_ms", "10000"),
    Key::with_default("rpc.max_message_bytes", "4194304"),
    Key::with_default("rpc.trusted_peers", ""),
    Key::with_default("bus.live_max_events", "1000000"),
    Key::with_default("bus.live_max_age_seconds", "900"),
    Key::with_default("media.time_zone", "UTC"),
    Key::with_default("media.broadcast_day_start", "00:00"),
    Key::with_default("shutdown.grace_seconds", "20"),
    Key::with_default("server.header_timeout_ms", "10000"),
    Key::with_default("server.idle_timeout_ms", "60000"),
    Key::with_default("server.body_timeout_ms", "15000"),
    Key::with_default("server.body_min_bytes_per_second", "1024"),
    Key::with_default("server.max_connections", "16384"),
    Key::with_default("server.max_connections_per_ip", "512"),
];

impl Settings {
    /// The keys the kit owns: those every process shares.
    pub const KEYS: &'static [Key] = KEYS;

    /// Resolves the kit's settings and every section's keys from flags, the
    /// environment, the config file (from `--config` or `ONAIR_CONFIG`) and
    /// the defaults, then checks that each of `sections` reads, so a bad
    /// value is refused before anything starts.
    pub fn resolve(
        flags: &Flags,
        environment: &dyn Environment,
        config_file: Option<&Path>,
        sections: &[SectionSpec],
    ) -> Result<Settings, ConfigError> {
        let mut keys: Vec<&'static Key> = KEYS.iter().collect();
        for section in sections {
            for key in section.keys {
                if !keys.iter().any(|known| known.name == key.name) {
                    keys.push(key);
                }
            }
        }
        let layers = Layers::resolve(&keys, flags, environment, config_file)?;
        let settings = Settings::read(layers)?;
        for section in sections {
            (section.check)(&settings)?;
        }
        Ok(settings)
    }

    /// Reads section `T` (a service's own settings).
    pub fn section<T: Section>(&self) -> Result<T, ConfigError> {
        T::read(self)
    }

    /// Every key's raw value and where it came from.
    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    /// The live events stream as the bus keeps it (`bus.live_*`): declared
    /// at start, and again by a gateway that finds it lost.
    pub fn live_stream(&self) -> crate::bus::DurableStream {
        crate::events::live_stream(self.live_stream_max_events, self.live_stream_max_age)
    }

    /// Whether this process runs a role.
    pub fn runs(&self, role: ServiceRole) -> bool {
        self.roles.contains(&role)
    }

    /// The path of the SQLite database used when no database URL is given.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("onair.db")
    }

    fn read(resolved: Layers) -> Result<Settings, ConfigError> {
        let address = "a socket address such as 127.0.0.1:8080";
        let seconds = "a whole number of seconds";
        let milliseconds = "a whole number of milliseconds";
        let non_empty = |value: &str| Some(value.to_owned()).filter(|value| !value.is_empty());
        let layers = &resolved;
        Ok(Settings {
            http_addr: layers.required("http", address, |value| value.parse().ok())?,
            grpc_addr: layers.required("grpc", address, |value| value.parse().ok())?,
            data_dir: layers.required("data_dir", "a directory path", |value| {
                non_empty(value).map(PathBuf::from)
            })?,
            roles: layers.required(
                "roles",
                "a comma-separated list of user, media, playout, comment, audience, share, gateway",
                parse_roles,
            )?,
            peers: layers.required(
                "peers",
                "a comma-separated list of SERVICE=URL, e.g. user=http://10.0.0.5:50051",
                parse_peers,
            )?,
            database_url: layers.parse(
                "database_url",
                "a postgres:// or sqlite: URL",
                parse_database_url,
            )?,
            nats_url: layers.parse("nats_url", "a nats:// URL", |value| {
                url_with_scheme(value, &["nats", "tls"])
            })?,
            redis_url: layers.parse("redis_url", "a redis:// URL", |value| {
                url_with_scheme(value, &["redis", "rediss"])
            })?,
            bus_prefix: layers.required(
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
            log_format: layers.required(
                "log.format",
                "auto, json or text",
                |value| match value {
                    "auto" => Some(LogFormat::Auto),
                    "json" => Some(LogFormat::Json),
                    "text" => Some(LogFormat::Text),
                    _ => None,
                },
            )?,
            log_level: layers.required(
                "log.level",
                "a tracing filter such as info or onair_user=debug",
                |value| {
                    tracing_subscriber::EnvFilter::try_new(value)
                        .ok()
                        .map(|_| value.to_owned())
                },
            )?,
            user_cache: layers.required(
                "user.cache_ms",
                "a whole number of milliseconds from 0 to 60000",
                milliseconds_within(0..=60_000),
            )?,
            peer_connect_timeout: layers.required(
                "rpc.connect_timeout_ms",
                milliseconds,
                positive_milliseconds,
            )?,
            peer_request_timeout: layers.required(
                "rpc.request_timeout_ms",
                milliseconds,
                positive_milliseconds,
            )?,
            max_message_bytes: layers.required(
                "rpc.max_message_bytes",
                "a number of bytes",
                |value| positive(value).and_then(|bytes| usize::try_from(bytes).ok()),
            )?,
            trusted_peers: layers.required(
                "rpc.trusted_peers",
                "a comma-separated list of IP addresses or CIDR networks, e.g. 10.0.0.0/8,fd00::/8",
                TrustedPeers::parse,
            )?,
            live_stream_max_events: layers.required(
                "bus.live_max_events",
                "a whole number of events, at least 1",
                positive,
            )?,
            live_stream_max_age: layers.required(
                "bus.live_max_age_seconds",
                seconds,
                positive_seconds,
            )?,
            time_zone: layers.required(
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
            broadcast_day_start: layers.required(
                "media.broadcast_day_start",
                "a local time HH:MM such as 05:00",
                |value| {
                    let (hours, minutes) = value.split_once(':')?;
                    let hours: u32 = hours.parse().ok()?;
                    let minutes: u32 = minutes.parse().ok()?;
                    (hours < 24 && minutes < 60).then(|| value.to_owned())
                },
            )?,
            shutdown_grace: layers.required("shutdown.grace_seconds", seconds, |value| {
                value.parse().ok().map(Duration::from_secs)
            })?,
            front_door: front_door(layers)?,
            layers: resolved,
        })
    }
}

impl Layers {
    /// What one client address may do, from a per-minute key (0: no limit)
    /// and a burst key.
    pub fn address_rate(
        &self,
        per_minute_key: &str,
        burst_key: &str,
    ) -> Result<AddressRate, ConfigError> {
        Ok(AddressRate {
            per_minute: self.required(
                per_minute_key,
                "a whole number a minute from 0 (no limit) to 1000000",
                count_within(0..=1_000_000),
            )?,
            burst: self.required(
                burst_key,
                "a whole number from 1 to 1000000",
                count_within(1..=1_000_000),
            )?,
        })
    }
}

fn front_door(layers: &Layers) -> Result<FrontDoorConfig, ConfigError> {
    let milliseconds = milliseconds_within(1..=3_600_000);
    let timeout = "a whole number of milliseconds from 1 to 3600000";
    let connections = |key: &str| -> Result<usize, ConfigError> {
        layers.required(
            key,
            "a whole number of connections from 1 to 1000000",
            count_within(1..=1_000_000),
        )
    };
    let max_connections = connections("server.max_connections")?;
    Ok(FrontDoorConfig {
        header_timeout: layers.required("server.header_timeout_ms", timeout, &milliseconds)?,
        idle_timeout: layers.required("server.idle_timeout_ms", timeout, &milliseconds)?,
        body_timeout: layers.required("server.body_timeout_ms", timeout, &milliseconds)?,
        body_min_bytes_per_second: layers.required(
            "server.body_min_bytes_per_second",
            "a whole number of bytes a second, at least 1",
            positive,
        )?,
        max_connections,
        // Never more than the total: a per-address cap above it would
        // not bind anyway.
        max_connections_per_ip: connections("server.max_connections_per_ip")?.min(max_connections),
    })
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
        let settings = Settings::resolve(&Flags::default(), &env(&[]), None, &[]).unwrap();
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(settings.data_dir, PathBuf::from("./onair-data"));
        assert_eq!(settings.roles.len(), 7);
        assert!(settings.database_url.is_none());
    }

    #[test]
    fn a_bad_value_names_key_value_origin_and_expectation() {
        let environment = env(&[("ONAIR_HTTP", "localhost")]);
        let error = Settings::resolve(&Flags::default(), &environment, None, &[]).unwrap_err();
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
        let error = Settings::resolve(&flags, &env(&[]), None, &[]).unwrap_err();
        assert!(error.to_string().contains("roles"));

        let mut flags = Flags::default();
        flags.set("peers", "user=10.0.0.1:50051");
        let error = Settings::resolve(&flags, &env(&[]), None, &[]).unwrap_err();
        assert!(error.to_string().contains("SERVICE=URL"));
    }

    #[test]
    fn a_malformed_config_file_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("onair.toml");
        std::fs::write(&file, "http = \"127.0.0.1:1\"\ngrpc = \n").unwrap();
        let error = Settings::resolve(&Flags::default(), &env(&[]), Some(&file), &[]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("not valid TOML"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("onair.toml");
        std::fs::write(&file, "htp = \"127.0.0.1:1\"\n").unwrap();
        let error = Settings::resolve(&Flags::default(), &env(&[]), Some(&file), &[]).unwrap_err();
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
        let settings = Settings::resolve(&Flags::default(), &env(&[]), Some(&file), &[]).unwrap();
        assert_eq!(settings.front_door.header_timeout, Duration::from_secs(5));
        assert_eq!(settings.front_door.max_connections, 100);

        // The per-address cap never exceeds the total.
        assert_eq!(settings.front_door.max_connections_per_ip, 100);

        let environment = env(&[("ONAIR_SERVER_MAX_CONNECTIONS_PER_IP", "0")]);
        let error = Settings::resolve(&Flags::default(), &environment, None, &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`server.max_connections_per_ip`"),
            "{error}"
        );

        let environment = env(&[("ONAIR_SERVER_IDLE_TIMEOUT_MS", "0")]);
        let error = Settings::resolve(&Flags::default(), &environment, None, &[]).unwrap_err();
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
            &[],
        )
        .unwrap_err();
        assert!(error.to_string().contains("cannot read config file"));
    }
}
