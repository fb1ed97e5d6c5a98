//! Server bootstrap: one gRPC port with every local service, health, reflection
//! and gRPC-Web; one HTTP port with `/healthz`, `/readyz` and `/metrics` (and
//! whatever the gateway adds); graceful shutdown.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::IntoResponse;
use futures::future::BoxFuture;
use onair_proto::ServiceChannel;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service, ServiceExt};

use crate::config::{FrontDoorConfig, ServiceRole, Settings};
use crate::front_door::GrpcContentTypeLayer;
use crate::listener::{Doorway, Port};
use crate::metrics::Registry;
use crate::telemetry::{GrpcClientLayer, GrpcServerLayer, GrpcServerService};

/// The services of this process, reachable in-process once they are built.
///
/// Services need clients of each other when they are constructed, and the
/// clients of local services need the services: this breaks the cycle. Calls
/// made before the services are installed fail with `Unavailable`.
#[derive(Clone)]
pub struct LocalServices {
    routes: Arc<OnceLock<GrpcServerService<Routes>>>,
}

impl LocalServices {
    /// No services yet: calls fail with `Unavailable` until [`Self::install`].
    pub fn new() -> LocalServices {
        LocalServices {
            routes: Arc::new(OnceLock::new()),
        }
    }

    /// Installs the services. Later calls are ignored.
    pub fn install(&self, routes: Routes, metrics: &Registry) {
        let layered = GrpcServerLayer::new(metrics.clone()).layer(routes);
        let _ = self.routes.set(layered);
    }

    /// A channel to the local services that carries the trace context.
    pub fn channel(&self) -> ServiceChannel {
        ServiceChannel::local(self.clone()).layered(GrpcClientLayer)
    }
}

impl Default for LocalServices {
    fn default() -> Self {
        LocalServices::new()
    }
}

impl Service<http::Request<Body>> for LocalServices {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Routes are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(routes) = self.routes.get() else {
            let status = tonic::Status::unavailable("the service is still starting");
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let routes = routes.clone();
        Box::pin(async move { routes.oneshot(request).await })
    }
}

/// A channel to a peer process. It connects on first use, and reconnects.
pub fn peer_channel(url: &str, settings: &Settings) -> Result<ServiceChannel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|error| format!("invalid peer URL {url}: {error}"))?
        .connect_timeout(settings.peer_connect_timeout)
        .timeout(settings.peer_request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(ServiceChannel::remote(endpoint.connect_lazy()).layered(GrpcClientLayer))
}

/// A channel for a role that is neither local nor configured as a peer: every
/// call fails with a status that says how to fix the setup.
pub fn missing_channel(role: ServiceRole) -> ServiceChannel {
    failing_channel(tonic::Status::unavailable(format!(
        "the {role} service is not reachable: this process does not run the {role} role \
         and no peer is configured for it (--peers {role}=URL)"
    )))
}

/// A channel for a service that no role serves.
pub fn missing_service_channel(service: &str) -> ServiceChannel {
    failing_channel(tonic::Status::unimplemented(format!(
        "no role serves {service}"
    )))
}

/// A channel whose every call fails with `status`.
pub fn failing_channel(status: tonic::Status) -> ServiceChannel {
    let service = tower::service_fn(move |_request: http::Request<Body>| {
        let response = status.clone().into_http::<Body>();
        async move { Ok::<_, Infallible>(response) }
    });
    ServiceChannel::local(service)
}

/// How this process reaches every service: locally, through a peer, or not at all.
#[derive(Clone)]
pub struct ServiceChannels {
    channels: BTreeMap<ServiceRole, ServiceChannel>,
    /// The peers, for readiness checks and gRPC forwarding.
    peers: BTreeMap<ServiceRole, ServiceChannel>,
}

impl ServiceChannels {
    /// Reaches each role with a gRPC service in this process if it runs the
    /// role, else through the peer configured for it, else not at all (calls
    /// fail with a status saying how to configure it). Fails with the reason
    /// if a peer's URL is invalid.
    pub fn new(settings: &Settings, local: &LocalServices) -> Result<ServiceChannels, String> {
        let mut channels = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for role in ServiceRole::ALL {
            if role.grpc_service().is_none() {
                continue;
            }
            let channel = if settings.runs(role) {
                local.channel()
            } else if let Some(url) = settings.peers.get(&role) {
                let channel = peer_channel(url, settings)?;
                peers.insert(role, channel.clone());
                channel
            } else {
                missing_channel(role)
            };
            channels.insert(role, channel);
        }
        Ok(ServiceChannels { channels, peers })
    }

    /// Replaces how a role is reached, e.g. with a [`failing_channel`] that
    /// explains why it can't be.
    pub fn replace(&mut self, role: ServiceRole, channel: ServiceChannel) {
        self.channels.insert(role, channel);
    }

    /// The channel to `role`'s service, as [`Self::new`] or [`Self::replace`]
    /// set it up; for the gateway, which has no gRPC service, one whose every
    /// call fails with `Unavailable`.
    pub fn channel(&self, role: ServiceRole) -> ServiceChannel {
        match self.channels.get(&role) {
            Some(channel) => channel.clone(),
            None => missing_channel(role),
        }
    }

    /// A client of the user service.
    pub fn user(&self) -> onair_proto::clients::UserClient {
        onair_proto::clients::UserClient::new(self.channel(ServiceRole::User))
    }

    /// The roles reached through a peer process, with their channels.
    pub fn peers(&self) -> &BTreeMap<ServiceRole, ServiceChannel> {
        &self.peers
    }
}

/// A named check that `/readyz` runs.
#[derive(Clone)]
pub struct ReadinessCheck {
    /// What is checked; `/readyz` lists a failing check under this name.
    pub name: String,
    /// Runs the check: `Err` carries why it is not ready. `/readyz` waits
    /// 2 s for it before counting it as failing.
    pub check: Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl ReadinessCheck {
    /// A check called `name` that runs `check` on every `/readyz` request.
    pub fn new<F, Fut>(name: impl Into<String>, check: F) -> ReadinessCheck
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        ReadinessCheck {
            name: name.into(),
            check: Arc::new(move || Box::pin(check())),
        }
    }

    /// Checks that a peer answers its gRPC health check for `service`.
    pub fn peer(role: ServiceRole, channel: ServiceChannel) -> ReadinessCheck {
        let service = role.grpc_service().unwrap_or_default().to_owned();
        ReadinessCheck::new(format!("peer {role}"), move || {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let request = tonic_health::pb::HealthCheckRequest {
                service: service.clone(),
            };
            async move {
                let response = client
                    .check(request)
                    .await
                    .map_err(|status| status.message().to_owned())?;
                let serving = tonic_health::pb::health_check_response::ServingStatus::Serving;
                if response.into_inner().status == serving as i32 {
                    Ok(())
                } else {
                    Err("not serving".to_owned())
                }
            }
        })
    }
}

/// How long `/readyz` waits for one check.
const READINESS_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything [`serve`] runs.
pub struct ServerParts {
    /// The bound gRPC port.
    pub grpc_listener: TcpListener,
    /// The bound HTTP port.
    pub http_listener: TcpListener,
    /// The local gRPC services, the same ones installed in [`LocalServices`].
    pub routes: Routes,
    /// The fully-qualified names of the local gRPC services, for health.
    pub service_names: Vec<&'static str>,
    /// Services of peers that this process's gRPC port forwards, so a client
    /// can reach every service through any process.
    pub forwarded: Vec<(&'static str, ServiceChannel)>,
    /// More HTTP routes (the gateway's).
    pub http_routes: axum::Router,
    /// The checks `/readyz` runs; all must pass for the process to be ready.
    pub readiness: Vec<ReadinessCheck>,
    /// Where both ports record their metrics, rendered at `/metrics`.
    pub metrics: Registry,
    /// The gRPC health service's reporter: the local services are marked
    /// SERVING at start and NOT_SERVING when shutdown starts.
    pub health: HealthReporter,
    /// How long a shutdown waits for in-flight requests and streams.
    pub shutdown_grace: Duration,
    /// The caps and deadlines of both ports.
    pub front_door: FrontDoorConfig,
    /// Run when shutdown starts, within the grace period: they close what the
    /// HTTP server does not drain by itself, such as upgraded WebSockets.
    pub on_stop: Vec<futures::future::BoxFuture<'static, ()>>,
}

/// Why [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC server failed; the text says how.
    #[error("grpc server failed: {0}")]
    Grpc(String),
    /// The HTTP server failed; the text says how.
    #[error("http server failed: {0}")]
    Http(String),
}

/// Serves until `shutdown` resolves, then stops accepting, marks every service
/// NOT_SERVING, drains in-flight requests and streams for up to the grace
/// period, and returns.
pub async fn serve(
    parts: ServerParts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let ServerParts {
        grpc_listener,
        http_listener,
        routes,
        service_names,
        forwarded,
        http_routes,
        readiness,
        metrics,
        health,
        shutdown_grace,
        front_door,
        on_stop,
    } = parts;

    if let Some(open_files) = crate::listener::raise_open_files_limit() {
        crate::listener::check_caps_against_open_files(&front_door, open_files);
    }

    for name in &service_names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    health.set_service_status("", ServingStatus::Serving).await;

    let grpc_router = grpc_router(routes, forwarded);
    let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
    let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };

    let incoming =
        Doorway::new(grpc_listener, Port::Grpc, &front_door, &metrics).into_grpc_incoming();
    let grpc_server = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .http2_max_pending_accept_reset_streams(Some(20))
        .layer(GrpcContentTypeLayer)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(GrpcServerLayer::new(metrics.clone()))
        .add_routes(grpc_router)
        .serve_with_incoming_shutdown(incoming, stopped(stop_receiver.clone()));

    let http_doorway = Doorway::new(http_listener, Port::Http, &front_door, &metrics);
    let http_app = ops_router(metrics.clone(), readiness)
        .merge(http_routes)
        .route_layer(axum::middleware::from_fn_with_state(
            metrics,
            record_http_request,
        ));
    let http_server = async move {
        crate::front_door::serve_http(http_doorway, http_app, stopped(stop_receiver.clone())).await;
        Ok::<(), std::io::Error>(())
    };

    let grpc_task = tokio::spawn(grpc_server);
    let http_task = tokio::spawn(http_server);

    shutdown.await;
    tracing::info!("shutting down: draining requests");
    for name in &service_names {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let _ = stop_sender.send(true);

    let drained = tokio::time::timeout(shutdown_grace, async {
        futures::future::join_all(on_stop).await;
        let grpc = grpc_task.await;
        let http = http_task.await;
        (grpc, http)
    })
    .await;
    match drained {
        Ok((grpc, http)) => {
            if let Ok(Err(error)) = grpc {
                return Err(ServeError::Grpc(error.to_string()));
            }
            if let Ok(Err(error)) = http {
                return Err(ServeError::Http(error.to_string()));
            }
            tracing::info!("drained; stopped");
        }
        Err(_) => {
            tracing::warn!(
                grace_seconds = shutdown_grace.as_secs(),
                "requests still running after the grace period; stopping anyway"
            );
        }
    }
    Ok(())
}

fn grpc_router(routes: Routes, forwarded: Vec<(&'static str, ServiceChannel)>) -> Routes {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(onair_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(onair_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    let mut router = routes.into_axum_router();
    if let Ok(reflection) = reflection_v1 {
        router = Routes::from(router)
            .add_service(reflection)
            .into_axum_router();
    }
    if let Ok(reflection) = reflection_v1alpha {
        router = Routes::from(router)
            .add_service(reflection)
            .into_axum_router();
    }
    for (service, channel) in forwarded {
        let path = format!("/{service}/{{*method}}");
        let handler = move |request: axum::extract::Request| {
            let channel = channel.clone();
            async move { forward(channel, request).await }
        };
        router = router.route(&path, axum::routing::post(handler));
    }
    Routes::from(router)
}

/// Passes a gRPC call through to a peer unchanged; the streams of both
/// directions flow through as they come.
async fn forward(
    channel: ServiceChannel,
    request: axum::extract::Request,
) -> axum::response::Response {
    let mut request = request.map(Body::new);
    // The peer believes this process on who the client is: say it is the
    // caller on the other end, never what the caller claimed.
    let caller = request
        .extensions()
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr());
    let headers = request.headers_mut();
    headers.remove(crate::abuse::CLIENT_ADDRESS_METADATA);
    if let Some(caller) = caller
        && let Ok(value) = http::HeaderValue::from_str(&caller.ip().to_string())
    {
        headers.insert(crate::abuse::CLIENT_ADDRESS_METADATA, value);
    }
    match channel.oneshot(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(error) => {
            let status = tonic::Status::unavailable(format!("peer unreachable: {error}"));
            status.into_http::<axum::body::Body>()
        }
    }
}

fn ops_router(metrics: Registry, readiness: Vec<ReadinessCheck>) -> axum::Router {
    let readiness = Arc::new(readiness);
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let readiness = readiness.clone();
                async move { ready(&readiness).await }
            }),
        )
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
}

async fn ready(checks: &[ReadinessCheck]) -> axum::response::Response {
    let runs = checks.iter().map(|check| async move {
        let outcome = tokio::time::timeout(READINESS_CHECK_TIMEOUT, (check.check)()).await;
        let outcome = match outcome {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {} ms",
                READINESS_CHECK_TIMEOUT.as_millis()
            )),
        };
        (check.name.clone(), outcome)
    });
    let outcomes = futures::future::join_all(runs).await;
    let mut failing = serde_json::Map::new();
    for (name, outcome) in outcomes {
        if let Err(reason) = outcome {
            failing.insert(name, serde_json::Value::String(reason));
        }
    }
    if failing.is_empty() {
        let body = serde_json::json!({"status": "ready"});
        return (http::StatusCode::OK, axum::Json(body)).into_response();
    }
    let body = serde_json::json!({"status": "not ready", "failing": failing});
    (http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

const HTTP_REQUESTS_TOTAL: &str = "onair_http_server_requests_total";
const HTTP_REQUESTS_HELP: &str = "HTTP requests handled, by route, method and status code.";
const HTTP_DURATION_SECONDS: &str = "onair_http_server_request_duration_seconds";
const HTTP_DURATION_HELP: &str =
    "Time to answer an HTTP request, up to its response headers, in seconds.";

/// RED metrics per HTTP route (the route's template, not the raw path, so that
/// ids don't multiply the series).
async fn record_http_request(
    axum::extract::State(metrics): axum::extract::State<Registry>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    record_http(&metrics, &route, &method, response.status(), started);
    response
}

/// Records one HTTP request in the RED metrics: `route` is the route's
/// template (`/v1/users/{user_id}`), never the raw path, so that ids don't
/// multiply the series.
pub fn record_http(
    metrics: &Registry,
    route: &str,
    method: &http::Method,
    status: http::StatusCode,
    started: std::time::Instant,
) {
    let code = status.as_str();
    let labels = [
        ("route", route),
        ("method", method.as_str()),
        ("code", code),
    ];
    metrics.counter_add(HTTP_REQUESTS_TOTAL, HTTP_REQUESTS_HELP, &labels, 1);
    metrics.histogram_observe(
        HTTP_DURATION_SECONDS,
        HTTP_DURATION_HELP,
        crate::metrics::DURATION_BUCKETS,
        &labels[..2],
        started.elapsed().as_secs_f64(),
    );
}
