//! Wiring: which services run in this process, how they reach the others, and
//! the storage, bus and ports they share. No business logic lives here.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use onair_audience::{AudienceServiceImpl, AudienceSettings, AudienceStore};
use onair_comment::pace::{MemoryPace, RedisPace, SharedPace};
use onair_comment::{CommentServiceImpl, CommentServiceSettings, CommentStore};
use onair_kit::bus::{Bus, InProcessBus, NatsBus};
use onair_kit::clock::Clock;
use onair_kit::config::{ConfigError, Environment, Flags, SectionSpec, ServiceRole, Settings};
use onair_kit::input::CheckedStrings;
use onair_kit::metrics::Registry;
use onair_kit::presence::{
    MemoryPresence, PresenceSettings, RedisPresence, SharedPresence, Watchers,
};
use onair_kit::rate::RedisRates;
use onair_kit::server::{LocalServices, ReadinessCheck, ServerParts, ServiceChannels};
use onair_kit::store::{Db, redact_password};
use onair_media::{MediaGrpcServer, MediaServiceImpl, MediaServiceSettings, MediaStore};
use onair_playout::segment_store::LocalDiskStorage;
use onair_playout::{Playout, PlayoutSettings, PlayoutStore};
use onair_proto::audience::v1::audience_service_server::AudienceServiceServer;
use onair_proto::comment::v1::comment_service_server::CommentServiceServer;
use onair_proto::playout::v1::playout_service_server::PlayoutServiceServer;
use onair_proto::share::v1::share_service_server::ShareServiceServer;
use onair_proto::user::v1::user_service_server::UserServiceServer;
use onair_share::{ShareServiceImpl, ShareSettings, ShareStore};
use onair_user::{UserServiceImpl, UserServiceSettings, UserStore};
use tokio::net::TcpListener;
use tonic::service::Routes;

/// The roles this version of onair can run: every service of the contracts.
pub const AVAILABLE_ROLES: &[ServiceRole] = &[
    ServiceRole::User,
    ServiceRole::Media,
    ServiceRole::Playout,
    ServiceRole::Comment,
    ServiceRole::Audience,
    ServiceRole::Share,
    ServiceRole::Gateway,
];

/// The settings section of every service this binary can run, checked
/// whichever roles a process takes, so a bad value is refused on every pod.
pub const SECTIONS: &[SectionSpec] = &[
    SectionSpec::of::<UserServiceSettings>(),
    SectionSpec::of::<MediaServiceSettings>(),
    SectionSpec::of::<CommentServiceSettings>(),
    SectionSpec::of::<PlayoutSettings>(),
    SectionSpec::of::<AudienceSettings>(),
    SectionSpec::of::<ShareSettings>(),
    SectionSpec::of::<PresenceSettings>(),
    SectionSpec::of::<onair_gateway::GatewaySettings>(),
    SectionSpec::of::<onair_gateway::live::LiveSettings>(),
    SectionSpec::of::<onair_gateway::iptv::IptvSettings>(),
];

/// Resolves a process's settings, every service's section included, from
/// flags, the environment, the config file and the defaults.
pub fn resolve_settings(
    flags: &Flags,
    environment: &dyn Environment,
    config_file: Option<&std::path::Path>,
) -> Result<Settings, ConfigError> {
    Settings::resolve(flags, environment, config_file, SECTIONS)
}

/// A running station (or part of one): its addresses and a way to stop it.
pub struct Station {
    /// Where REST/JSON, live sockets and HLS are served, as bound (port 0 resolved).
    pub http_addr: SocketAddr,
    /// Where gRPC is served, as bound (port 0 resolved).
    pub grpc_addr: SocketAddr,
    /// Holds the SQLite file, the operator key and the embedded bus's durable streams.
    pub data_dir: std::path::PathBuf,
    /// How this process reaches every service, as its own services do.
    channels: ServiceChannels,
    bus: Arc<dyn Bus>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Station {
    /// Starts every role of `settings` that this version has, and returns once
    /// both ports accept connections.
    pub async fn start(settings: Settings, clock: Clock) -> anyhow::Result<Station> {
        let (shutdown_sender, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
        let prepared = prepare(settings, clock).await?;
        let http_addr = prepared.http_addr;
        let grpc_addr = prepared.grpc_addr;
        let data_dir = prepared.data_dir.clone();
        let channels = prepared.channels.clone();
        let bus = prepared.bus.clone();
        let task = tokio::spawn(async move {
            prepared
                .run(async move {
                    let _ = shutdown_receiver.await;
                })
                .await
        });
        Ok(Station {
            http_addr,
            grpc_addr,
            data_dir,
            channels,
            bus,
            shutdown: Some(shutdown_sender),
            task,
        })
    }

    /// The channels to every service that this process's own services use.
    pub fn channels(&self) -> &ServiceChannels {
        &self.channels
    }

    /// The bus this station's services talk through (to publish what a
    /// service outside this process would).
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    /// Stops accepting, drains, and waits until the station has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        (&mut self.task).await.context("station task panicked")?
    }
}

/// A station that has bound its ports and opened its storage, ready to serve.
pub struct Prepared {
    /// Where REST/JSON, live sockets and HLS will be served, as bound (port 0 resolved).
    pub http_addr: SocketAddr,
    /// Where gRPC will be served, as bound (port 0 resolved).
    pub grpc_addr: SocketAddr,
    /// Holds the SQLite file, the operator key and the embedded bus's durable streams.
    pub data_dir: std::path::PathBuf,
    /// How this process reaches every service, local or on a peer.
    pub channels: ServiceChannels,
    /// The bus this process's services talk through.
    pub bus: Arc<dyn Bus>,
    parts: ServerParts,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Run once serving has stopped, before the database closes: they write
    /// what services keep in memory.
    after_stop: Vec<futures::future::BoxFuture<'static, ()>>,
    db: Option<Db>,
}

impl Prepared {
    /// Serves until `shutdown` resolves, then drains and closes storage.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let result = onair_kit::server::serve(self.parts, shutdown).await;
        for task in self.background {
            task.abort();
        }
        futures::future::join_all(self.after_stop).await;
        if let Some(db) = self.db {
            db.close().await;
            tracing::debug!("closed the database");
        }
        result.map_err(anyhow::Error::from)
    }
}

/// Binds the ports, opens storage and the bus, and builds the local services.
pub async fn prepare(mut settings: Settings, clock: Clock) -> anyhow::Result<Prepared> {
    let unavailable: Vec<ServiceRole> = settings
        .roles
        .iter()
        .copied()
        .filter(|role| !AVAILABLE_ROLES.contains(role))
        .collect();
    if !unavailable.is_empty() {
        let names: Vec<&str> = unavailable.iter().map(|role| role.as_str()).collect();
        tracing::info!(roles = %names.join(","), "these roles are not part of this version yet; running the others");
        settings.roles.retain(|role| AVAILABLE_ROLES.contains(role));
    }
    if settings.roles.is_empty() {
        anyhow::bail!(
            "none of the requested roles can run in this version; available roles: user, media, playout, comment, audience, share, gateway"
        );
    }

    let grpc_listener = TcpListener::bind(settings.grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", settings.grpc_addr))?;
    let http_listener = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", settings.http_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    // Sections read from here on see the ports as bound (encoders are told
    // the HTTP address to push to).
    settings.http_addr = http_addr;
    settings.grpc_addr = grpc_addr;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;

    let metrics = Registry::new();
    let mut readiness = Vec::new();

    let needs_database = settings.runs(ServiceRole::User)
        || settings.runs(ServiceRole::Media)
        || settings.runs(ServiceRole::Comment)
        || settings.runs(ServiceRole::Audience)
        || settings.runs(ServiceRole::Share)
        || settings.runs(ServiceRole::Playout);
    let db = if needs_database {
        let db = match &settings.database_url {
            Some(url) => Db::open_url(url).await?,
            None => Db::open_sqlite(&settings.sqlite_path()).await?,
        };
        let checked = db.clone();
        readiness.push(ReadinessCheck::new("database", move || {
            let db = checked.clone();
            async move { db.check().await.map_err(|error| error.to_string()) }
        }));
        Some(db)
    } else {
        None
    };

    let bus: Arc<dyn Bus> = match &settings.nats_url {
        Some(url) => Arc::new(
            NatsBus::connect(url, &settings.bus_prefix)
                .await
                .with_context(|| format!("cannot connect to NATS at {url}"))?,
        ),
        None => Arc::new(InProcessBus::new(Some(settings.data_dir.join("bus")))),
    };
    bus.ensure_stream(&onair_kit::events::ops_stream())
        .await
        .context("cannot declare the operations stream")?;
    bus.ensure_stream(&settings.live_stream())
        .await
        .context("cannot declare the live events stream")?;
    let checked_bus = bus.clone();
    readiness.push(ReadinessCheck::new("bus", move || {
        let bus = checked_bus.clone();
        async move { bus.check().await.map_err(|error| error.to_string()) }
    }));

    let presence = presence_board(&settings).await?;
    if let Some(board) = &presence {
        let checked = board.clone();
        readiness.push(ReadinessCheck::new("presence", move || {
            let board = checked.clone();
            async move { board.check().await.map_err(|error| error.to_string()) }
        }));
    }
    let presence_settings: PresenceSettings = settings.section()?;
    let shared_rates = shared_rates(&settings).await?;

    let local = LocalServices::new();
    let mut channels = ServiceChannels::new(&settings, &local).map_err(anyhow::Error::msg)?;
    for role in &unavailable {
        if settings.peers.contains_key(role) {
            continue;
        }
        let status = tonic::Status::unavailable(format!(
            "the {role} service is not part of this version of onair yet"
        ));
        channels.replace(*role, onair_kit::server::failing_channel(status));
    }
    for (role, channel) in channels.peers() {
        readiness.push(ReadinessCheck::peer(*role, channel.clone()));
    }

    // One authenticator for this process's services: they share what it
    // heard of users' roles and bans, and `user.changed` reaches it at once.
    let user_changes = bus
        .subscribe(onair_kit::events::USER_CHANGED)
        .await
        .context("cannot subscribe to user changes")?;
    let credentials = onair_kit::auth::UserServiceCredentials::new(channels.user());
    let authenticator = onair_kit::auth::Authenticator::new(Arc::new(credentials), clock.clone())
        .with_user_cache(settings.user_cache)
        .with_user_changes(user_changes);

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut routes = Routes::new(health_service);
    let mut service_names = Vec::new();
    let mut background = Vec::new();
    let mut after_stop: Vec<futures::future::BoxFuture<'static, ()>> = Vec::new();

    if settings.runs(ServiceRole::User) {
        let Some(db) = db.clone() else {
            anyhow::bail!("the user role needs a database");
        };
        let store = UserStore::open(db).await?;
        let user_settings: UserServiceSettings = settings.section()?;
        let service = UserServiceImpl::start(
            store,
            user_settings,
            clock.clone(),
            bus.clone(),
            shared_rates.as_ref(),
        )
        .await?;
        background.extend(service.spawn_background().await?);
        routes = routes.add_service(CheckedStrings::new(
            UserServiceServer::new(service).max_decoding_message_size(settings.max_message_bytes),
            settings.max_message_bytes,
        ));
        service_names.push("onair.user.v1.UserService");
    }
    if settings.runs(ServiceRole::Media) {
        let Some(db) = db.clone() else {
            anyhow::bail!("the media role needs a database");
        };
        let store = MediaStore::open(db).await?;
        let media_settings: MediaServiceSettings = settings.section()?;
        let service = MediaServiceImpl::start(
            store,
            media_settings,
            clock.clone(),
            bus.clone(),
            authenticator.clone(),
        )
        .await?;
        background.extend(service.spawn_background().await?);
        routes = routes.add_service(CheckedStrings::new(
            MediaGrpcServer::new(service).max_decoding_message_size(settings.max_message_bytes),
            settings.max_message_bytes,
        ));
        service_names.push("onair.media.v1.MediaService");
    }
    if settings.runs(ServiceRole::Comment) {
        let Some(db) = db.clone() else {
            anyhow::bail!("the comment role needs a database");
        };
        let store = CommentStore::open(db).await?;
        let comment_settings: CommentServiceSettings = settings.section()?;
        let pace = comment_pace(&settings).await?;
        let checked = pace.clone();
        readiness.push(ReadinessCheck::new("pace", move || {
            let pace = checked.clone();
            async move { pace.check().await.map_err(|error| error.to_string()) }
        }));
        let service = CommentServiceImpl::start(
            store,
            comment_settings,
            clock.clone(),
            bus.clone(),
            authenticator.clone(),
            channels.user(),
            onair_proto::clients::MediaClient::new(channels.channel(ServiceRole::Media)),
            pace,
            shared_rates.as_ref(),
        )
        .await?;
        background.extend(service.spawn_background());
        routes = routes.add_service(CheckedStrings::new(
            CommentServiceServer::new(service)
                .max_decoding_message_size(settings.max_message_bytes),
            settings.max_message_bytes,
        ));
        service_names.push("onair.comment.v1.CommentService");
    }
    if settings.runs(ServiceRole::Audience) {
        let (Some(db), Some(board)) = (db.clone(), presence.clone()) else {
            anyhow::bail!("the audience role needs a database and a presence board");
        };
        let store = AudienceStore::open(db).await?;
        let audience_settings: AudienceSettings = settings.section()?;
        let media = onair_proto::clients::MediaClient::new(channels.channel(ServiceRole::Media));
        let counter = onair_audience::counter::Counter::start(
            board.clone(),
            store.clone(),
            media.clone(),
            bus.clone(),
            clock.clone(),
            audience_settings,
        )
        .await?;
        background.push(counter.spawn());
        let sessions = Watchers::start(
            board,
            clock.clone(),
            presence_settings.ttl,
            presence_settings.refresh,
        );
        let polls =
            onair_audience::polls::Polls::new(store.db().clone(), bus.clone(), clock.clone());
        background.push(polls.spawn());
        let service = AudienceServiceImpl::new(
            counter,
            polls,
            store,
            media,
            authenticator.clone(),
            sessions,
            &metrics,
        );
        routes = routes.add_service(CheckedStrings::new(
            AudienceServiceServer::new(service)
                .max_decoding_message_size(settings.max_message_bytes),
            settings.max_message_bytes,
        ));
        service_names.push("onair.audience.v1.AudienceService");
    }
    if settings.runs(ServiceRole::Share) {
        let Some(db) = db.clone() else {
            anyhow::bail!("the share role needs a database");
        };
        let store = ShareStore::open(db).await?;
        let share_settings: ShareSettings = settings.section()?;
        let service = ShareServiceImpl::new(
            store,
            onair_proto::clients::MediaClient::new(channels.channel(ServiceRole::Media)),
            onair_proto::clients::CommentClient::new(channels.channel(ServiceRole::Comment)),
            authenticator.clone(),
            bus.clone(),
            clock.clone(),
            share_settings,
            &metrics,
        );
        background.push(service.spawn());
        let flushed = service.clone();
        after_stop.push(Box::pin(async move { flushed.flush_opens().await }));
        routes = routes.add_service(CheckedStrings::new(
            ShareServiceServer::new(service).max_decoding_message_size(settings.max_message_bytes),
            settings.max_message_bytes,
        ));
        service_names.push("onair.share.v1.ShareService");
    }
    let mut playout_routes = None;
    if settings.runs(ServiceRole::Playout) {
        let Some(db) = db.clone() else {
            anyhow::bail!("the playout role needs a database");
        };
        let playout = start_playout(
            db,
            &settings,
            &channels,
            clock.clone(),
            authenticator.clone(),
            &metrics,
        )
        .await?;
        background.extend(playout.spawn_background().await?);
        routes = routes.add_service(CheckedStrings::new(
            PlayoutServiceServer::new(playout.service())
                .max_decoding_message_size(settings.max_message_bytes),
            settings.max_message_bytes,
        ));
        service_names.push("onair.playout.v1.PlayoutService");
        playout_routes = Some(playout.router());
    }
    local.install(routes.clone(), &metrics);

    let mut forwarded = Vec::new();
    if settings.runs(ServiceRole::Gateway) {
        for (role, channel) in channels.peers() {
            if let Some(service) = role.grpc_service() {
                forwarded.push((service, channel.clone()));
            }
        }
    }

    let mut http_routes = axum::Router::new();
    let mut on_stop = Vec::new();
    if settings.runs(ServiceRole::Gateway) {
        let watchers = presence.clone().map(|board| {
            Watchers::start(
                board,
                clock.clone(),
                presence_settings.ttl,
                presence_settings.refresh,
            )
        });
        let (routes, live) = gateway_routes(
            &channels,
            &settings,
            &bus,
            clock.clone(),
            authenticator.clone(),
            &metrics,
            watchers,
            shared_rates.as_ref(),
        )?;
        http_routes = routes
            .merge(onair_gateway::share_page::router(
                channels.channel(ServiceRole::Share),
            ))
            .merge(onair_web::router());
        on_stop.push(live.shutdown());
        let checked_live = live.clone();
        readiness.push(ReadinessCheck::new("live", move || {
            let live = checked_live.clone();
            async move { live.check().await }
        }));
    }
    // Players and encoders reach the playout's files on the HTTP port of
    // the process that runs it.
    if let Some(playout_routes) = playout_routes {
        http_routes = http_routes.merge(playout_routes);
    }

    let storage = match &settings.database_url {
        Some(url) => redact_password(url),
        None => settings.sqlite_path().display().to_string(),
    };
    let roles: Vec<&str> = settings.roles.iter().map(|role| role.as_str()).collect();
    tracing::info!(
        grpc = %grpc_addr,
        http = %http_addr,
        roles = %roles.join(","),
        storage = %storage,
        bus = settings.nats_url.as_deref().unwrap_or("in-process"),
        "listening"
    );

    let parts = ServerParts {
        grpc_listener,
        http_listener,
        routes,
        service_names,
        forwarded,
        http_routes,
        readiness,
        metrics,
        health,
        shutdown_grace: settings.shutdown_grace,
        front_door: settings.front_door.clone(),
        on_stop,
    };
    Ok(Prepared {
        http_addr,
        grpc_addr,
        data_dir: settings.data_dir.clone(),
        channels,
        bus,
        parts,
        background,
        after_stop,
        db,
    })
}

/// The playout service on its store, with segments in `<data dir>/segments`.
async fn start_playout(
    db: Db,
    settings: &Settings,
    channels: &ServiceChannels,
    clock: Clock,
    authenticator: onair_kit::auth::Authenticator,
    metrics: &Registry,
) -> anyhow::Result<Playout> {
    let playout_settings: PlayoutSettings = settings.section()?;
    let store = PlayoutStore::open(db).await?;
    let storage = Arc::new(LocalDiskStorage::new(settings.data_dir.join("segments")));
    let playout = Playout::start(
        store,
        storage,
        channels.channel(ServiceRole::Media),
        clock,
        authenticator,
        playout_settings,
        metrics.clone(),
    )
    .await?;
    Ok(playout)
}

/// Where the gateway keeps its per-address and per-user rate limits, the
/// comment service its comments per address and the user service its new
/// accounts per address: Redis when `redis_url` is
/// set, so that a client balanced over several replicas gets the rate of
/// one, else (`None`) this process's memory.
async fn shared_rates(settings: &Settings) -> anyhow::Result<Option<RedisRates>> {
    let Some(url) = &settings.redis_url else {
        return Ok(None);
    };
    let counts_rates = [
        ServiceRole::Gateway,
        ServiceRole::Comment,
        ServiceRole::User,
    ];
    if !counts_rates.iter().any(|role| settings.runs(*role)) {
        return Ok(None);
    }
    let rates = RedisRates::connect(url, &settings.bus_prefix)
        .await
        .with_context(|| format!("cannot reach Redis at {}", redact_password(url)))?;
    Ok(Some(rates))
}

/// The REST/JSON routes of every annotated RPC, each reaching its service
/// through this process's channels (local, a peer, or a clear Unavailable);
/// rate limits kept in `shared_rates` when given.
#[allow(clippy::too_many_arguments)]
fn gateway_routes(
    channels: &ServiceChannels,
    settings: &Settings,
    bus: &Arc<dyn Bus>,
    clock: Clock,
    authenticator: onair_kit::auth::Authenticator,
    metrics: &Registry,
    viewers: Option<Arc<Watchers>>,
    shared_rates: Option<&RedisRates>,
) -> anyhow::Result<(axum::Router, onair_gateway::live::Live)> {
    let limits_clock = clock.clone();
    let iptv = iptv_routes(channels, settings, clock, metrics)?;
    let pool = prost_reflect::DescriptorPool::decode(onair_proto::FILE_DESCRIPTOR_SET)
        .context("the embedded descriptor set does not decode")?;
    let live = live_sockets(channels, settings, bus, pool.clone(), metrics, viewers)?;
    let channels = channels.clone();
    let resolve: onair_gateway::ChannelResolver =
        Arc::new(
            move |service: &str| match ServiceRole::of_grpc_service(service) {
                Some(role) => channels.channel(role),
                None => onair_kit::server::missing_service_channel(service),
            },
        );
    let gateway_settings: onair_gateway::GatewaySettings = settings.section()?;
    let shared_limits = shared_rates.map(|rates| {
        onair_gateway::guard::RateLimits::shared(
            gateway_settings.rate_limit_per_ip,
            gateway_settings.rate_limit_per_user,
            rates,
            &limits_clock,
        )
    });
    let gateway = onair_gateway::Gateway::new(
        &pool,
        resolve,
        authenticator,
        metrics.clone(),
        gateway_settings,
    )
    .context("the contracts' HTTP rules are invalid")?;
    let gateway = gateway
        .retain_services(|service| {
            ServiceRole::of_grpc_service(service)
                .is_some_and(|role| AVAILABLE_ROLES.contains(&role))
        })
        .with_live(live.clone());
    let gateway = match shared_limits {
        Some(limits) => gateway.with_rate_limits(limits),
        None => gateway,
    };
    Ok((gateway.into_router().merge(iptv), live))
}

/// The live sockets, fed from the bus; a channel must exist in the media
/// service to be watched.
fn live_sockets(
    channels: &ServiceChannels,
    settings: &Settings,
    bus: &Arc<dyn Bus>,
    pool: prost_reflect::DescriptorPool,
    metrics: &Registry,
    viewers: Option<Arc<Watchers>>,
) -> anyhow::Result<onair_gateway::live::Live> {
    let media = channels.channel(ServiceRole::Media);
    let check_channel: onair_gateway::live::ChannelCheck = Arc::new(move |channel_id| {
        let mut client = onair_proto::clients::MediaClient::new(media.clone());
        Box::pin(async move {
            let request = onair_proto::media::v1::GetChannelRequest { channel_id };
            client.get_channel(request).await.map(|_channel| ())
        })
    });
    let live_settings: onair_gateway::live::LiveSettings = settings.section()?;
    Ok(onair_gateway::live::Live::new(
        bus.clone(),
        pool,
        check_channel,
        metrics,
        live_settings,
        viewers,
    ))
}

/// Where viewers are counted, for a process that holds viewers (a gateway)
/// or counts them (the audience service): Redis when `redis_url` is set, so
/// that every process of the station shares it, else this process's
/// memory when the audience service runs here. A gateway whose audience
/// service is a peer must share Redis with it, or its viewers would count
/// nowhere; one with no audience service at all holds no presence (nothing
/// would count or forget it).
async fn presence_board(settings: &Settings) -> anyhow::Result<Option<SharedPresence>> {
    let gateway = settings.runs(ServiceRole::Gateway);
    let audience = settings.runs(ServiceRole::Audience);
    if !gateway && !audience {
        return Ok(None);
    }
    if let Some(url) = &settings.redis_url {
        let board = RedisPresence::connect(url, &settings.bus_prefix)
            .await
            .with_context(|| format!("cannot reach Redis at {}", redact_password(url)))?;
        return Ok(Some(Arc::new(board)));
    }
    if !audience {
        if settings.peers.contains_key(&ServiceRole::Audience) {
            anyhow::bail!(
                "this gateway's audience service runs in another process: give both --redis-url so that they share viewer presence"
            );
        }
        return Ok(None);
    }
    if !gateway {
        tracing::warn!(
            "the audience service counts in this process's memory: viewers of gateways in other processes are not counted unless every process is given --redis-url"
        );
    }
    Ok(Some(Arc::new(MemoryPresence::new())))
}

/// Where the comment service keeps its pace (slow mode, duplicates, flood,
/// the display cap): Redis when `redis_url` is set, so that every comment
/// replica counts the same posts, else this process's memory.
async fn comment_pace(settings: &Settings) -> anyhow::Result<SharedPace> {
    let Some(url) = &settings.redis_url else {
        return Ok(Arc::new(MemoryPace::new()));
    };
    let pace = RedisPace::connect(url, &settings.bus_prefix)
        .await
        .with_context(|| format!("cannot reach Redis at {}", redact_password(url)))?;
    Ok(Arc::new(pace))
}

/// `/iptv/channels.m3u` and `/iptv/epg.xml`, read from the media service.
fn iptv_routes(
    channels: &ServiceChannels,
    settings: &Settings,
    clock: Clock,
    metrics: &Registry,
) -> anyhow::Result<axum::Router> {
    let iptv_settings: onair_gateway::iptv::IptvSettings = settings.section()?;
    Ok(onair_gateway::iptv::router(
        channels.channel(ServiceRole::Media),
        clock,
        iptv_settings,
        metrics.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    /// No environment variables.
    const NO_VARIABLES: [(&str, &str); 0] = [];

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
        let environment = [
            ("ONAIR_HTTP", "127.0.0.1:2000"),
            ("ONAIR_GRPC", "127.0.0.1:2001"),
        ];
        let settings = resolve_settings(&flags, &environment, Some(&file)).unwrap();
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:2001");
        assert_eq!(settings.data_dir, PathBuf::from("/from/file"));
        assert_eq!(settings.roles, vec![ServiceRole::User]);
        assert_eq!(settings.peers[&ServiceRole::Media], "http://m:50051");
        let user: UserServiceSettings = settings.section().unwrap();
        assert_eq!(user.access_token_ttl, Duration::from_secs(60));
    }

    #[test]
    fn a_service_setting_is_checked_before_anything_starts() {
        // Even on a process that does not run the playout: every pod refuses
        // a config the station could not run.
        let mut flags = Flags::default();
        flags.set("roles", "user");
        let environment = [("ONAIR_PLAYOUT_LADDER", "720p:wide:fast")];
        let message = resolve_settings(&flags, &environment, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("`playout.ladder`"), "{message}");
        assert!(message.contains("ONAIR_PLAYOUT_LADDER"), "{message}");

        let environment = [("ONAIR_MEDIA_TIME_ZONE", "Mars/Base")];
        let message = resolve_settings(&Flags::default(), &environment, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("`media.time_zone`"), "{message}");

        let environment = [("ONAIR_GATEWAY_CORS_ORIGINS", "example.com")];
        let message = resolve_settings(&Flags::default(), &environment, None)
            .unwrap_err()
            .to_string();
        assert!(message.contains("`gateway.cors_origins`"), "{message}");
    }

    #[test]
    fn a_config_file_may_set_any_services_keys_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("onair.toml");
        std::fs::write(
            &file,
            "[comment]\nmax_chars = 80\n[iptv]\nepg_days = 3\n[playout]\npublic_url = \"https://ingest.example.com\"\n",
        )
        .unwrap();
        let settings = resolve_settings(&Flags::default(), &NO_VARIABLES, Some(&file)).unwrap();
        let comment: CommentServiceSettings = settings.section().unwrap();
        assert_eq!(comment.max_body_chars, 80);
        let iptv: onair_gateway::iptv::IptvSettings = settings.section().unwrap();
        assert_eq!(iptv.epg_days, 3);
        let playout: PlayoutSettings = settings.section().unwrap();
        assert_eq!(playout.public_url, "https://ingest.example.com");

        std::fs::write(&file, "[comment]\nmax_char = 80\n").unwrap();
        let message = resolve_settings(&Flags::default(), &NO_VARIABLES, Some(&file))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("unknown setting `comment.max_char`"),
            "{message}"
        );
        assert!(message.contains("comment.max_chars"), "{message}");
    }

    #[test]
    fn encoders_push_to_the_http_address_unless_told_otherwise() {
        let mut flags = Flags::default();
        flags.set("http", "10.0.0.7:8080");
        let settings = resolve_settings(&flags, &NO_VARIABLES, None).unwrap();
        let playout: PlayoutSettings = settings.section().unwrap();
        assert_eq!(playout.public_url, "http://10.0.0.7:8080");
    }

    #[test]
    fn no_two_sections_claim_one_key() {
        let mut seen = std::collections::BTreeSet::new();
        let sections = SECTIONS.iter().flat_map(|section| section.keys());
        for key in Settings::KEYS.iter().chain(sections) {
            assert!(seen.insert(key.name), "`{}` is claimed twice", key.name);
        }
    }
}
