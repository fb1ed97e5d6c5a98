//! The gateway: REST/JSON served from the contracts' `google.api.http` rules,
//! the way grpc-gateway serves them, with no hand-written routes. An RPC that
//! gains an annotation is served with no other code.
//!
//! - Path templates with `{field.path=segments}` variables, `*`, `**` and
//!   `:verb` suffixes; `body: "*"`, a field body or none; the remaining fields
//!   from query parameters (dotted sub-fields and repeated values included);
//!   `additional_bindings` and `response_body`.
//! - The proto3 JSON mapping (lowerCamelCase names, int64 as strings, unpopulated
//!   fields emitted, unknown body fields ignored).
//! - Errors as `google.rpc.Status` JSON with grpc-gateway's HTTP statuses.
//! - `Authorization` and `Grpc-Metadata-*` headers become metadata; response
//!   metadata comes back as `Grpc-Metadata-*` headers.
//! - A success status other than 200 where the contract says so
//!   (`onair.api.http_success_code`, 201 on creates).
//! - Server streams as NDJSON (`{"result": …}` per line) or, with
//!   `Accept: text/event-stream`, as server-sent events.
//! - The live sockets, `GET /v1/channels/{channelId}/live` ([`live`]).

#![warn(missing_docs)]

mod codec;
mod errors;
pub mod guard;
pub mod iptv;
mod json;
mod json_memo;
pub mod live;
pub mod openapi;
pub mod rules;
mod settings;
pub mod share_page;
pub mod template;
mod websocket;

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use onair_kit::auth::{AuthError, Authenticator, Caller};
use onair_kit::input::StringsChecked;
use onair_kit::metrics::Registry;
use onair_kit::presence::ViewerKey;
use onair_kit::telemetry::TraceContext;
use onair_proto::ServiceChannel;
use onair_proto::codec::RawClientCodec;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, Kind};
use serde_json::{Map, Value as Json};

pub use crate::errors::status_response;
pub use crate::settings::GatewaySettings;

use crate::codec::DynamicCodec;
use crate::errors::{
    bytes_response, error_response, metadata_headers, retry_response, status_json,
};
use crate::guard::RateLimits;
use crate::json::serialize_options;
use crate::json_memo::JsonMemo;
use crate::live::accepts_event_stream;
use crate::rules::{BodyMapping, RestRoute, RuleError, routes_from_pool};
use crate::template::Bindings;

/// How the gateway finds the channel of a service by its full name.
pub type ChannelResolver = Arc<dyn Fn(&str) -> ServiceChannel + Send + Sync>;

/// The REST routes and how to reach their services.
pub struct Gateway {
    routes: Vec<RestRoute>,
    resolve: ChannelResolver,
    /// Verifies credentials at the edge, before any service is called.
    authenticator: Authenticator,
    limits: RateLimits,
    /// RED metrics per route template.
    metrics: Registry,
    settings: GatewaySettings,
    live: Option<live::Live>,
    /// The JSON of large answers seen before (a station's guide for a day).
    memo: JsonMemo,
}

/// The path of a channel's live socket.
pub const LIVE_PATH: &str = "/v1/channels/{channel_id}/live";

impl Gateway {
    /// Reads every route of the descriptor set.
    pub fn new(
        pool: &DescriptorPool,
        resolve: ChannelResolver,
        authenticator: Authenticator,
        metrics: Registry,
        settings: GatewaySettings,
    ) -> Result<Gateway, RuleError> {
        let mut routes = routes_from_pool(pool)?;
        routes.sort_by(|left, right| {
            left.http_method
                .as_str()
                .cmp(right.http_method.as_str())
                .then(
                    right
                        .template
                        .literal_count()
                        .cmp(&left.template.literal_count()),
                )
        });
        tracing::debug!(
            routes = routes.len(),
            "read the REST routes from the contracts"
        );
        Ok(Gateway {
            routes,
            resolve,
            authenticator,
            limits: RateLimits::new(
                settings.rate_limit_per_ip,
                settings.rate_limit_per_user,
                &onair_kit::clock::Clock::system(),
            ),
            metrics,
            settings,
            live: None,
            memo: JsonMemo::new(),
        })
    }

    /// Keeps only the routes of the services `keep` names (full gRPC names),
    /// so that what this version cannot serve is neither routed nor in
    /// `/openapi.json`.
    pub fn retain_services(mut self, keep: impl Fn(&str) -> bool) -> Gateway {
        self.routes
            .retain(|route| keep(route.method.parent_service().full_name()));
        self
    }

    /// Keeps the rate limits in `limits` (shared with other gateways, say)
    /// instead of this process's memory.
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Gateway {
        self.limits = limits;
        self
    }

    /// Serves the live sockets as well.
    pub fn with_live(mut self, live: live::Live) -> Gateway {
        self.live = Some(live);
        self
    }

    /// The routes served, for documentation and OpenAPI.
    pub fn routes(&self) -> &[RestRoute] {
        &self.routes
    }

    /// An axum router that serves every route (as its fallback, so that it can
    /// be merged beside fixed routes such as `/healthz`).
    pub fn into_router(self) -> axum::Router {
        let openapi = serde_json::to_vec_pretty(&openapi::document(
            &self.routes,
            "onair",
            env!("CARGO_PKG_VERSION"),
        ))
        .unwrap_or_default();
        let cors = guard::cors(&self.settings.cors_origins);
        let gateway = Arc::new(self);
        let openapi_route = axum::routing::get(move || {
            let body = openapi.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
        });
        let live_gateway = gateway.clone();
        // GET, and CONNECT for a WebSocket over HTTP/2 (RFC 8441).
        let live_methods =
            axum::routing::MethodFilter::GET.or(axum::routing::MethodFilter::CONNECT);
        let live_route = axum::routing::on(
            live_methods,
            move |axum::extract::Path(channel_id): axum::extract::Path<String>,
                  request: axum::extract::Request| {
                let gateway = live_gateway.clone();
                async move { gateway.live(channel_id, request).await }
            },
        );
        axum::Router::new()
            .route("/openapi.json", openapi_route)
            .route(LIVE_PATH, live_route)
            .fallback(move |request: axum::extract::Request| {
                let gateway = gateway.clone();
                async move {
                    let traceparent = request
                        .headers()
                        .get("traceparent")
                        .and_then(|value| value.to_str().ok())
                        .map(str::to_owned);
                    let context = TraceContext::from_traceparent(traceparent.as_deref());
                    context.scope(gateway.handle(request)).await
                }
            })
            .layer(axum::middleware::from_fn(guard::request_id))
            .layer(cors)
    }

    /// A live socket, admitted like any other request.
    async fn live(&self, channel_id: String, request: axum::extract::Request) -> Response {
        let Some(live) = &self.live else {
            return status_response(
                tonic::Code::Unimplemented,
                "this gateway serves no live sockets",
                StatusCode::NOT_IMPLEMENTED,
            );
        };
        let (parts, body) = request.into_parts();
        let caller = match self.admit(&parts).await {
            Ok(caller) => caller,
            Err(refused) => return refused,
        };
        let caller = match caller {
            Some(caller) => Some(caller),
            None => match self.caller_of_access_token(&parts).await {
                Ok(caller) => caller,
                Err(refused) => return refused,
            },
        };
        let viewer = match &caller {
            Some(caller) => ViewerKey::of_user(&caller.user_id),
            None => ViewerKey::anonymous(),
        };
        live.serve(
            channel_id,
            viewer,
            axum::extract::Request::from_parts(parts, body),
        )
        .await
    }

    /// The caller of an `access_token` query parameter: how a browser's
    /// WebSocket or EventSource, which can't set headers, signs in. A token
    /// that does not verify is refused as a header's would be.
    async fn caller_of_access_token(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Option<Caller>, Response> {
        let token = parts.uri.query().and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "access_token")
                .map(|(_, value)| value.into_owned())
        });
        let Some(token) = token.filter(|token| !token.trim().is_empty()) else {
            return Ok(None);
        };
        let caller = self
            .authenticator
            .authenticate_credential(token.trim())
            .await
            .map_err(|error| error_response(&tonic::Status::from(error)))?;
        self.limits
            .check_user(&caller.user_id)
            .await
            .map_err(too_many_requests)?;
        Ok(Some(caller))
    }

    /// Refuses a request over its address's or its user's rate, or with bad
    /// credentials, before any service sees it; the caller, when the
    /// request says who it is.
    async fn admit(&self, parts: &http::request::Parts) -> Result<Option<Caller>, Response> {
        if let Some(address) = client_address(parts) {
            self.limits
                .check_ip(address)
                .await
                .map_err(too_many_requests)?;
        }
        let credential = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .or_else(|| parts.headers.get("grpc-metadata-authorization"));
        let Some(credential) = credential else {
            return Ok(None);
        };
        let malformed = || {
            status_response(
                tonic::Code::Unauthenticated,
                &AuthError::Malformed.to_string(),
                StatusCode::UNAUTHORIZED,
            )
        };
        let text = credential.to_str().map_err(|_| malformed())?;
        let Some((scheme, token)) = text.split_once(' ') else {
            return Err(malformed());
        };
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(malformed());
        }
        let caller = self
            .authenticator
            .authenticate_credential(token.trim())
            .await
            .map_err(|error| {
                let status = tonic::Status::from(error);
                error_response(&status)
            })?;
        self.limits
            .check_user(&caller.user_id)
            .await
            .map_err(too_many_requests)?;
        Ok(Some(caller))
    }

    /// Picks the route for a request: the most specific template of the
    /// request's method that matches its path.
    fn find(&self, method: &Method, path: &str) -> Result<(&RestRoute, Bindings), RouteMiss> {
        // Routes are ordered by method, then most literals first: the first
        // match of the request's method is the most specific one.
        for route in &self.routes {
            if route.http_method != *method {
                continue;
            }
            if let Some(bindings) = route.template.matches(path) {
                return Ok((route, bindings));
            }
        }
        let mut allowed = Vec::new();
        for route in &self.routes {
            if route.template.matches(path).is_some() {
                allowed.push(route.http_method.as_str());
            }
        }
        if allowed.is_empty() {
            return Err(RouteMiss::NotFound);
        }
        allowed.sort_unstable();
        allowed.dedup();
        Err(RouteMiss::MethodNotAllowed(allowed.join(", ")))
    }

    async fn handle(&self, request: axum::extract::Request) -> Response {
        let started = std::time::Instant::now();
        let method = request.method().clone();
        // The answer's state machine is 2.7 KB (the gRPC call, the body, the
        // rendering). Boxed here, the layers around it (middleware, router,
        // HTTP connection) hold and move a pointer instead of the whole of it.
        let (response, route) = Box::pin(self.respond(request)).await;
        let label = route.map_or("unmatched", |route| route.template.as_str());
        onair_kit::server::record_http(&self.metrics, label, &method, response.status(), started);
        response
    }

    /// Answers a request, and says which route did.
    async fn respond(&self, request: axum::extract::Request) -> (Response, Option<&RestRoute>) {
        let (parts, body) = request.into_parts();
        let (route, bindings) = match self.find(&parts.method, parts.uri.path()) {
            Ok(found) => found,
            Err(miss) => return (miss.into_response(&parts.method, parts.uri.path()), None),
        };
        (self.call(route, bindings, parts, body).await, Some(route))
    }

    async fn call(
        &self,
        route: &RestRoute,
        bindings: Bindings,
        parts: http::request::Parts,
        body: Body,
    ) -> Response {
        if let Err(refused) = self.admit(&parts).await {
            return refused;
        }
        let body = match axum::body::to_bytes(body, self.settings.max_body_bytes).await {
            Ok(body) => body,
            Err(_) => {
                return status_response(
                    tonic::Code::ResourceExhausted,
                    &format!(
                        "the request body is larger than {} bytes",
                        self.settings.max_body_bytes
                    ),
                    StatusCode::PAYLOAD_TOO_LARGE,
                );
            }
        };
        let message = match build_request(route, &bindings, parts.uri.query(), &body) {
            Ok(message) => message,
            Err(reason) => {
                return status_response(
                    tonic::Code::InvalidArgument,
                    &reason,
                    StatusCode::BAD_REQUEST,
                );
            }
        };
        let service = route.method.parent_service();
        let service = service.full_name();
        let channel = (self.resolve)(service);
        // Looking for a NUL's escapes in the URI and the body is cheaper
        // than the service's pass over the encoded body, which a request
        // marked here skips. The mark never crosses the network, so a call
        // to a peer is not looked at.
        let strings_checked = if channel.is_local() {
            let path_and_query = parts.uri.path_and_query().map_or("", |uri| uri.as_str());
            StringsChecked::of_json_request(path_and_query, &body)
        } else {
            None
        };

        let mut request = tonic::Request::new(message);
        // Metadata never carries a client address a client claims (see
        // `forward_headers`).
        forward_headers(&parts.headers, request.metadata_mut());
        // The services count abuse limits by the address the gateway saw.
        if let Some(address) = client_address(&parts) {
            if channel.is_local() {
                onair_kit::abuse::tell_local_client_address(&mut request, address);
            } else {
                onair_kit::abuse::tell_client_address(&mut request, address);
            }
        }
        if let Some(checked) = strings_checked {
            request.extensions_mut().insert(checked);
        }
        if !route.method.is_server_streaming() {
            // The service learns the deadline too (grpc-timeout).
            request.set_timeout(self.settings.request_timeout);
        }

        let path = route.grpc_path.clone();
        let mut grpc = tonic::client::Grpc::new(channel);
        if let Err(error) = grpc.ready().await {
            return status_response(
                tonic::Code::Unavailable,
                &format!("the {service} service is unavailable: {error}"),
                StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        let codec = DynamicCodec::new(route.method.output());
        if route.method.is_server_streaming() {
            let sse = accepts_event_stream(&parts.headers);
            return match grpc.server_streaming(request, path, codec).await {
                Ok(response) => stream_response(route, response, sse),
                Err(status) => error_response(&status),
            };
        }
        let call = grpc.unary(request, path, RawClientCodec::<DynamicMessage>::default());
        match tokio::time::timeout(self.settings.request_timeout, call).await {
            Ok(Ok(response)) => self.unary_response(route, response).await,
            Ok(Err(status)) => error_response(&status),
            Err(_) => status_response(
                tonic::Code::DeadlineExceeded,
                &format!(
                    "{} did not answer within {} ms",
                    route.method.full_name(),
                    self.settings.request_timeout.as_millis()
                ),
                StatusCode::GATEWAY_TIMEOUT,
            ),
        }
    }
}

/// Why no route serves a request.
enum RouteMiss {
    NotFound,
    /// The path exists for these other methods.
    MethodNotAllowed(String),
}

impl RouteMiss {
    fn into_response(self, method: &Method, path: &str) -> Response {
        match self {
            RouteMiss::NotFound => status_response(
                tonic::Code::NotFound,
                &format!("no route for {method} {path}"),
                StatusCode::NOT_FOUND,
            ),
            RouteMiss::MethodNotAllowed(allowed) => {
                let mut response = status_response(
                    tonic::Code::Unimplemented,
                    &format!("{method} is not allowed on {path}; use {allowed}"),
                    StatusCode::METHOD_NOT_ALLOWED,
                );
                if let Ok(value) = HeaderValue::from_str(&allowed) {
                    response.headers_mut().insert(http::header::ALLOW, value);
                }
                response
            }
        }
    }
}

fn too_many_requests(limited: guard::Limited) -> Response {
    let seconds = onair_kit::abuse::whole_seconds(limited.retry_after);
    retry_response(
        tonic::Code::ResourceExhausted,
        &format!(
            "too many requests from {}; retry after {seconds} s",
            limited.what
        ),
        StatusCode::TOO_MANY_REQUESTS,
        limited.retry_after,
    )
}

/// The address of the client on the other end of the connection. The
/// gateway does not take `X-Forwarded-For`: any client can write one.
fn client_address(parts: &http::request::Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Headers that never become gRPC metadata.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "accept-encoding",
    "accept",
];

/// `Authorization`, `traceparent` and `X-Request-Id` pass as they are;
/// `Grpc-Metadata-<key>` becomes `<key>`, except the client address that
/// onair processes tell each other: a client can't claim one.
fn forward_headers(headers: &HeaderMap, metadata: &mut tonic::metadata::MetadataMap) {
    for (name, value) in headers {
        let name = name.as_str();
        if HOP_HEADERS.contains(&name) {
            continue;
        }
        let key = match name.strip_prefix("grpc-metadata-") {
            Some(key) => key,
            None if matches!(name, "authorization" | "x-request-id" | "x-forwarded-for") => name,
            None => continue,
        };
        if key.ends_with("-bin")
            || key.starts_with("grpc-")
            || key == onair_kit::abuse::CLIENT_ADDRESS_METADATA
        {
            continue;
        }
        let Ok(key) = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()) else {
            continue;
        };
        if let Ok(text) = value.to_str()
            && let Ok(value) = text.parse()
        {
            metadata.append(key, value);
        }
    }
}

fn to_json(message: &DynamicMessage) -> Result<Json, serde_json::Error> {
    message.serialize_with_options(serde_json::value::Serializer, &serialize_options())
}

/// The JSON body of a response: the whole message, or its `response_body` field.
fn response_json(route: &RestRoute, message: &DynamicMessage) -> Result<Json, serde_json::Error> {
    let whole = to_json(message)?;
    let Some(field) = &route.response_body else {
        return Ok(whole);
    };
    Ok(whole.get(field.json_name()).cloned().unwrap_or(Json::Null))
}

/// The response body as bytes, serialized straight from the message when the
/// whole message is the body (the common case, and the hot one).
fn response_bytes(
    route: &RestRoute,
    message: &DynamicMessage,
) -> Result<Vec<u8>, serde_json::Error> {
    if route.response_body.is_some() {
        return serde_json::to_vec(&response_json(route, message)?);
    }
    let mut bytes = Vec::with_capacity(256);
    json::write_message(&mut bytes, message)?;
    Ok(bytes)
}

impl Gateway {
    async fn unary_response(
        &self,
        route: &RestRoute,
        response: tonic::Response<Bytes>,
    ) -> Response {
        let (metadata, protobuf, _extensions) = response.into_parts();
        let body = match self.render_json(route, protobuf).await {
            Ok(body) => body,
            Err(error) => {
                return status_response(
                    tonic::Code::Internal,
                    &format!("cannot render the response as JSON: {error}"),
                    StatusCode::INTERNAL_SERVER_ERROR,
                );
            }
        };
        let mut http_response = bytes_response(route.success, body);
        metadata_headers(&metadata, http_response.headers_mut());
        http_response
    }

    /// The JSON of an answer. A large one is remembered, found again when
    /// the same bytes come back, and otherwise made on a blocking thread:
    /// it takes milliseconds.
    async fn render_json(&self, route: &RestRoute, protobuf: Bytes) -> Result<Bytes, String> {
        if !JsonMemo::worth_remembering(&protobuf) {
            return render(route, protobuf);
        }
        let rendering = match &route.response_body {
            Some(field) => format!("{}:{}", route.method.full_name(), field.name()),
            None => route.method.full_name().to_owned(),
        };
        if let Some(json) = self.memo.get(&rendering, &protobuf) {
            return Ok(json);
        }
        let blocking_route = route.clone();
        let blocking_protobuf = protobuf.clone();
        let json = tokio::task::spawn_blocking(move || render(&blocking_route, blocking_protobuf))
            .await
            .map_err(|error| error.to_string())??;
        self.memo.put(&rendering, protobuf, json.clone());
        Ok(json)
    }
}

/// Decodes an answer by its route's descriptor and writes its JSON.
fn render(route: &RestRoute, protobuf: Bytes) -> Result<Bytes, String> {
    let message = DynamicMessage::decode(route.method.output(), protobuf)
        .map_err(|error| format!("cannot decode the response: {error}"))?;
    let json = response_bytes(route, &message).map_err(|error| error.to_string())?;
    Ok(Bytes::from(json))
}

fn stream_response(
    route: &RestRoute,
    response: tonic::Response<tonic::Streaming<DynamicMessage>>,
    sse: bool,
) -> Response {
    let (metadata, stream, _extensions) = response.into_parts();
    let success = route.success;
    let route = route.clone();
    let frames = stream.map(move |item| {
        let (kind, value) = match item {
            Ok(message) => match response_json(&route, &message) {
                Ok(json) => ("result", json),
                Err(error) => (
                    "error",
                    status_json(tonic::Code::Internal, &error.to_string()),
                ),
            },
            Err(status) => ("error", status_json(status.code(), status.message())),
        };
        let frame = if sse {
            let data = serde_json::to_string(&value).unwrap_or_default();
            if kind == "error" {
                format!("event: error\ndata: {data}\n\n")
            } else {
                format!("data: {data}\n\n")
            }
        } else {
            let mut line =
                serde_json::to_string(&serde_json::json!({ kind: value })).unwrap_or_default();
            line.push('\n');
            line
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(frame))
    });
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    let mut response = Response::new(Body::from_stream(frames));
    *response.status_mut() = success;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    metadata_headers(&metadata, response.headers_mut());
    response
}

/// Builds the request message from the path, the query and the body.
fn build_request(
    route: &RestRoute,
    bindings: &Bindings,
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, String> {
    let input = route.method.input();
    let mut json = Map::new();
    match &route.body {
        BodyMapping::None => {}
        BodyMapping::Whole => {
            if !body.is_empty() {
                match serde_json::from_slice::<Json>(body) {
                    Ok(Json::Object(object)) => json = object,
                    Ok(_) => return Err("the request body must be a JSON object".to_owned()),
                    Err(error) => {
                        return Err(format!("the request body is not valid JSON: {error}"));
                    }
                }
            }
        }
        BodyMapping::Field(field) => {
            if !body.is_empty() {
                let value = serde_json::from_slice::<Json>(body)
                    .map_err(|error| format!("the request body is not valid JSON: {error}"))?;
                json.insert(field.json_name().to_owned(), value);
            }
        }
    }
    if let Some(query) = query.filter(|query| !query.is_empty()) {
        if matches!(route.body, BodyMapping::Whole) {
            return Err(
                "this method takes its fields from the body; query parameters are not allowed"
                    .to_owned(),
            );
        }
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            set_path(&mut json, &input, &key, &value, true)
                .map_err(|reason| format!("query parameter {key:?}: {reason}"))?;
        }
    }
    for (field_path, value) in bindings {
        set_path(&mut json, &input, field_path, value, false)
            .map_err(|reason| format!("path field {field_path}: {reason}"))?;
    }
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    DynamicMessage::deserialize_with_options(input, Json::Object(json), &options)
        .map_err(|error| format!("invalid request: {error}"))
}

/// Sets the field at a dotted path in a JSON object, converting the text by the
/// field's kind. Repeated fields collect every value given.
fn set_path(
    object: &mut Map<String, Json>,
    message: &prost_reflect::MessageDescriptor,
    path: &str,
    text: &str,
    from_query: bool,
) -> Result<(), String> {
    let mut current_message = message.clone();
    let mut current_object = object;
    let names: Vec<&str> = path.split('.').collect();
    for (index, name) in names.iter().enumerate() {
        let field = current_message
            .get_field_by_name(name)
            .or_else(|| current_message.get_field_by_json_name(name))
            .ok_or_else(|| format!("{} has no field {name:?}", current_message.name()))?;
        let key = field.json_name().to_owned();
        let last = index + 1 == names.len();
        let nested = match field.kind() {
            Kind::Message(nested) if !is_scalar_like(&nested) => Some(nested),
            _ => None,
        };
        if last || nested.is_none() {
            if !last {
                return Err(format!("{name} is not a message, so it has no sub-fields"));
            }
            if nested.is_some() {
                return Err(format!(
                    "{name} is a message; set its fields with {name}.<field>"
                ));
            }
            if from_query && field.is_list() && matches!(field.kind(), Kind::Message(_)) {
                return Err("repeated messages cannot be query parameters".to_owned());
            }
            let value = scalar_json(&field.kind(), text)?;
            if field.is_list() {
                let entry = current_object
                    .entry(key)
                    .or_insert_with(|| Json::Array(Vec::new()));
                match entry {
                    Json::Array(items) => items.push(value),
                    other => *other = Json::Array(vec![value]),
                }
            } else {
                current_object.insert(key, value);
            }
            return Ok(());
        }
        if field.is_list() {
            return Err(format!(
                "{name} is repeated, so its sub-fields cannot be set here"
            ));
        }
        let entry = current_object
            .entry(key)
            .or_insert_with(|| Json::Object(Map::new()));
        if !entry.is_object() {
            *entry = Json::Object(Map::new());
        }
        let Json::Object(inner) = entry else {
            return Err("internal error".to_owned());
        };
        current_object = inner;
        if let Some(nested) = nested {
            current_message = nested;
        }
    }
    Ok(())
}

/// Well-known types that the JSON mapping writes as one string or number.
fn is_scalar_like(message: &prost_reflect::MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
    )
}

/// The JSON for a text value of a field kind; numbers stay strings, which the
/// proto3 JSON mapping accepts, so that 64-bit values keep their precision.
fn scalar_json(kind: &Kind, text: &str) -> Result<Json, String> {
    match kind {
        Kind::Bool => match text {
            "true" | "1" => Ok(Json::Bool(true)),
            "false" | "0" => Ok(Json::Bool(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        Kind::Message(message) if message.full_name() == "google.protobuf.BoolValue" => {
            scalar_json(&Kind::Bool, text)
        }
        _ => Ok(Json::String(text.to_owned())),
    }
}
