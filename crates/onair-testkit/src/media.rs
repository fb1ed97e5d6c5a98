//! The media service alone, for its own tests: a real media service and the
//! user service beside it on one gRPC port (127.0.0.1:0), on SQLite or on a
//! fresh PostgreSQL database, with a manual clock; and other media processes
//! of the same station over the same database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use onair_kit::auth::{Authenticator, UserServiceCredentials};
use onair_kit::bus::{InProcessBus, NatsBus, SharedBus};
use onair_kit::clock::Clock;
use onair_kit::store::Db;
use onair_media::{MediaServiceImpl, MediaServiceSettings, MediaStore};
use onair_proto::ServiceChannel;
use onair_proto::media::v1 as pb;
use onair_proto::media::v1::media_service_client::MediaServiceClient;
use onair_proto::user::v1::user_service_client::UserServiceClient;
use onair_proto::user::v1::user_service_server::UserServiceServer;
use onair_user::{UserServiceImpl, UserServiceSettings, UserStore};
use tonic::transport::Channel;

use crate::clients::authorized;
use crate::servers::{TestDatabase, nats_url, unique_name};
use crate::station::Backend;

/// Which bus the station's services share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// One in-process bus, shared by every process of the test.
    InProcess,
    /// The shared test NATS server, under a fresh prefix.
    Nats,
}

/// Where the manual clock starts: a Tuesday, well in the future of any real
/// schedule so nothing collides with wall-clock time.
pub const CLOCK_START: &str = "2030-04-01T00:00:00Z";

/// A media service and a user service on one gRPC port, and what they own.
pub struct MediaStation {
    /// The gRPC port of the media and user services.
    pub addr: SocketAddr,
    /// Where another process would open the same database.
    database_location: DatabaseLocation,
    /// Which bus another process would join, and under which NATS prefix.
    bus_kind: BusKind,
    bus_prefix: String,
    /// The station's clock, which the test moves.
    pub clock: Clock,
    /// The operator's API key.
    pub operator_key: String,
    /// The bus the services share.
    pub bus: SharedBus,
    /// The media service itself, for what tests call directly.
    pub media: MediaServiceImpl,
    /// The data directory (SQLite, keys).
    pub dir: tempfile::TempDir,
    /// Dropped after the server, so the database outlives its connections.
    pub database: Option<TestDatabase>,
    /// The server and the media service's background tasks.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for MediaStation {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Debug, Clone)]
enum DatabaseLocation {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl DatabaseLocation {
    async fn open(&self) -> Db {
        match self {
            DatabaseLocation::Sqlite(path) => Db::open_sqlite(path).await.expect("open SQLite"),
            DatabaseLocation::Postgres(url) => Db::open_url(url).await.expect("open PostgreSQL"),
        }
    }
}

async fn connect_bus(kind: BusKind, prefix: &str, shared: Option<&SharedBus>) -> SharedBus {
    match (kind, shared) {
        (BusKind::InProcess, Some(shared)) => shared.clone(),
        (BusKind::InProcess, None) => Arc::new(InProcessBus::new(None)),
        (BusKind::Nats, _) => Arc::new(NatsBus::connect(&nats_url(), prefix).await.unwrap_or_else(
            |error| panic!("NATS at {} is needed for this test: {error}", nats_url()),
        )),
    }
}

/// A second media process of the same station: its own server, service,
/// cache and bus connection, over the same database.
pub struct OtherProcess {
    /// Its gRPC port.
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for OtherProcess {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl OtherProcess {
    /// A client of its media service.
    pub async fn media_client(&self) -> MediaServiceClient<Channel> {
        MediaServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the other process")
    }
}

/// Starts a media service on 127.0.0.1:0 (and the user service beside it,
/// when given); returns its address, the service and the tasks to abort.
async fn serve_media(
    db: Db,
    bus: SharedBus,
    clock: Clock,
    settings: MediaServiceSettings,
    users: Option<UserServiceImpl>,
    user_addr: Option<SocketAddr>,
) -> (
    SocketAddr,
    MediaServiceImpl,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    // The media service verifies callers through the user service's
    // contract, over the network, as it does in a split deployment.
    let user_channel = Channel::from_shared(format!("http://{}", user_addr.unwrap_or(addr)))
        .expect("valid URL")
        .connect_lazy();
    let credentials =
        UserServiceCredentials::new(UserServiceClient::new(ServiceChannel::remote(user_channel)));
    let authenticator = Authenticator::new(Arc::new(credentials), clock.clone());
    let media_store = MediaStore::open(db).await.expect("media store");
    let media = MediaServiceImpl::start(media_store, settings, clock, bus, authenticator)
        .await
        .expect("media service starts");
    let mut tasks = media
        .spawn_background()
        .await
        .expect("media background tasks start");

    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = tonic::transport::Server::builder()
        .add_optional_service(users.map(UserServiceServer::new))
        .add_service(onair_media::MediaGrpcServer::new(media.clone()));
    tasks.push(tokio::spawn(async move {
        if let Err(error) = router.serve_with_incoming(incoming).await {
            eprintln!("test server stopped: {error}");
        }
    }));
    (addr, media, tasks)
}

/// An RFC 3339 time as a protobuf timestamp.
pub fn at(rfc3339: &str) -> prost_types::Timestamp {
    let timestamp: jiff::Timestamp = rfc3339.parse().expect("an RFC 3339 time");
    onair_kit::clock::timestamp_from_millis(timestamp.as_millisecond())
}

/// An RFC 3339 time as a `SystemTime`.
pub fn instant(rfc3339: &str) -> SystemTime {
    let timestamp: jiff::Timestamp = rfc3339.parse().expect("an RFC 3339 time");
    onair_kit::store::from_unix_millis(timestamp.as_millisecond())
}

/// A timestamp as RFC 3339 in UTC, for readable assertions.
pub fn rfc3339(timestamp: Option<&prost_types::Timestamp>) -> String {
    let timestamp = timestamp.expect("a timestamp");
    jiff::Timestamp::new(timestamp.seconds, timestamp.nanos)
        .expect("a valid timestamp")
        .to_string()
}

impl MediaStation {
    /// A station on `backend` with the in-process bus and default settings.
    pub async fn start(backend: Backend) -> MediaStation {
        MediaStation::start_with(backend, BusKind::InProcess, MediaServiceSettings::default()).await
    }

    /// A station on `backend` and `bus_kind` with the given settings.
    pub async fn start_with(
        backend: Backend,
        bus_kind: BusKind,
        settings: MediaServiceSettings,
    ) -> MediaStation {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await),
        };
        let database_location = match &database {
            Some(database) => DatabaseLocation::Postgres(database.url.clone()),
            None => DatabaseLocation::Sqlite(dir.path().join("onair.db")),
        };
        let db = database_location.open().await;
        let bus_prefix = unique_name("t");
        let bus = connect_bus(bus_kind, &bus_prefix, None).await;
        bus.ensure_stream(&onair_kit::events::ops_stream())
            .await
            .expect("declare the operations stream");
        bus.ensure_stream(&onair_kit::events::live_stream(
            10_000,
            Duration::from_secs(600),
        ))
        .await
        .expect("declare the live stream");
        let clock = Clock::manual(instant(CLOCK_START));

        let user_store = UserStore::open(db.clone()).await.expect("user store");
        let user_settings = UserServiceSettings {
            access_token_ttl: Duration::from_secs(3600),
            signing_key_rotation: Duration::from_secs(30 * 24 * 3600),
            data_dir: dir.path().to_path_buf(),
            user_cache_ttl: onair_kit::auth::DEFAULT_USER_CACHE_TTL,
            accounts_per_ip: onair_kit::abuse::AddressRate::default(),
            trusted_peers: onair_kit::abuse::TrustedPeers::none(),
        };
        let users =
            UserServiceImpl::start(user_store, user_settings, clock.clone(), bus.clone(), None)
                .await
                .expect("user service starts");
        let operator_key = std::fs::read_to_string(dir.path().join("operator.key"))
            .expect("operator key")
            .trim()
            .to_owned();

        let (addr, media, tasks) =
            serve_media(db, bus.clone(), clock.clone(), settings, Some(users), None).await;
        MediaStation {
            addr,
            database_location,
            bus_kind,
            bus_prefix,
            clock,
            operator_key,
            bus,
            media,
            dir,
            database,
            tasks,
        }
    }

    /// Another media process of this station: same database, same bus (over
    /// its own connection when the bus is NATS), its own cache.
    pub async fn other_process(&self, settings: MediaServiceSettings) -> OtherProcess {
        let db = self.database_location.open().await;
        let bus = connect_bus(self.bus_kind, &self.bus_prefix, Some(&self.bus)).await;
        let (addr, _media, tasks) =
            serve_media(db, bus, self.clock.clone(), settings, None, Some(self.addr)).await;
        OtherProcess { addr, tasks }
    }

    /// A client of the media service.
    pub async fn media_client(&self) -> MediaServiceClient<Channel> {
        MediaServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the gRPC port")
    }

    /// A client of the user service.
    pub async fn user_client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the gRPC port")
    }

    /// A new viewer's access token.
    pub async fn viewer_token(&self) -> String {
        let mut users = self.user_client().await;
        users
            .create_user(onair_proto::user::v1::CreateUserRequest {
                display_name: "Viewer".to_owned(),
            })
            .await
            .expect("create a viewer")
            .into_inner()
            .access_token
    }

    /// A request as the station's operator.
    pub fn as_operator<T>(&self, message: T) -> tonic::Request<T> {
        authorized(message, &self.operator_key)
    }

    /// Creates a channel as the operator.
    pub async fn create_channel(&self, id: &str, number: i32, name: &str) -> pb::Channel {
        let mut client = self.media_client().await;
        client
            .create_channel(self.as_operator(pb::CreateChannelRequest {
                channel: Some(pb::Channel {
                    id: id.to_owned(),
                    number,
                    name: name.to_owned(),
                    ..Default::default()
                }),
            }))
            .await
            .expect("create a channel")
            .into_inner()
    }

    /// Creates a program of `minutes` as the operator.
    pub async fn create_program(&self, id: &str, title: &str, minutes: i64) -> pb::Program {
        let mut client = self.media_client().await;
        client
            .create_program(self.as_operator(pb::CreateProgramRequest {
                program: Some(pb::Program {
                    id: id.to_owned(),
                    title: title.to_owned(),
                    duration: Some(prost_types::Duration {
                        seconds: minutes * 60,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            }))
            .await
            .expect("create a program")
            .into_inner()
    }

    /// Creates a slot as the operator (not cut).
    pub async fn create_slot(
        &self,
        channel_id: &str,
        program_id: &str,
        start: &str,
        end: &str,
    ) -> Result<pb::Slot, tonic::Status> {
        self.create_slot_with(channel_id, program_id, start, end, false)
            .await
    }

    /// Creates a slot as the operator, cut or not.
    pub async fn create_slot_with(
        &self,
        channel_id: &str,
        program_id: &str,
        start: &str,
        end: &str,
        cut: bool,
    ) -> Result<pb::Slot, tonic::Status> {
        let mut client = self.media_client().await;
        client
            .create_slot(self.as_operator(pb::CreateSlotRequest {
                channel_id: channel_id.to_owned(),
                slot: Some(pb::Slot {
                    program_id: program_id.to_owned(),
                    start_time: Some(at(start)),
                    end_time: Some(at(end)),
                    cut,
                    ..Default::default()
                }),
            }))
            .await
            .map(tonic::Response::into_inner)
    }
}
