//! The HTTP port's server: each accepted connection is served by hyper with
//! the deadlines of [`crate::listener`], request bodies that trickle in are
//! cut off with 408, and every response says `X-Content-Type-Options:
//! nosniff`. Also the gRPC port's check that a request is gRPC at all.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::listener::{ConnectionActivity, Doorway, GuardedIo, InFlight, PortMetrics};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often an HTTP/2 connection is pinged, and how long an answer may
/// take before the connection is closed: finds clients that vanished.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Streams an HTTP/2 client may open and reset before the server has
/// answered them, the "rapid reset" flood bound.
const HTTP2_MAX_PENDING_RESETS: usize = 20;

/// Browsers must not guess a response's type from its bytes: a comment or a
/// channel name must never be run as a script or a page.
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// Serves the HTTP port until `stop` resolves; then stops accepting, lets
/// every connection finish what it is doing, and returns once all have
/// closed (upgraded live sockets are closed by their own shutdown).
pub async fn serve_http(
    mut doorway: Doorway,
    app: axum::Router,
    stop: impl Future<Output = ()> + Send,
) {
    // Handlers become routes once, here, rather than on every request (as
    // `axum::serve` does).
    let app: axum::Router = app.with_state(());
    let builder = Arc::new(http_builder());
    let body_rule = BodyRule {
        allowance: doorway.config.body_timeout,
        min_bytes_per_second: doorway.config.body_min_bytes_per_second,
    };
    let (stopping, stop_receiver) = tokio::sync::watch::channel(false);
    let mut stop = pin!(stop);
    loop {
        let admitted = tokio::select! {
            _ = &mut stop => break,
            admitted = doorway.accept() => admitted,
        };
        let accepted = Instant::now();
        let activity = Arc::new(ConnectionActivity::default());
        let service = ConnectionService {
            app: app.clone(),
            peer: axum::extract::ConnectInfo(admitted.peer),
            activity: activity.clone(),
            accepted,
            body_rule,
            metrics: doorway.metrics.clone(),
        };
        let io = GuardedIo::http(admitted, &doorway, activity, accepted);
        let builder = builder.clone();
        let mut stop_receiver = stop_receiver.clone();
        tokio::spawn(async move {
            let mut connection =
                pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(error = %error, "an HTTP connection ended with an error");
                        }
                        break;
                    }
                    _ = stop_receiver.wait_for(|stop| *stop), if !draining => {
                        draining = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    // Stop listening at once, then wait for the connections.
    drop(doorway);
    let _ = stopping.send(true);
    drop(stop_receiver);
    stopping.closed().await;
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The header timeout is the connection's own (see `listener`), which
    // unlike hyper's does not run while a kept-alive connection is idle.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // WebSockets over HTTP/2 (RFC 8441).
        .enable_connect_protocol()
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_RESETS);
    builder
}

/// How long a request body may keep the server waiting: `allowance`, plus
/// one second for every `min_bytes_per_second` bytes that arrived.
#[derive(Clone, Copy)]
struct BodyRule {
    allowance: Duration,
    min_bytes_per_second: u64,
}

/// Serves one connection's requests with the station's router.
#[derive(Clone)]
struct ConnectionService {
    app: axum::Router,
    peer: axum::extract::ConnectInfo<std::net::SocketAddr>,
    activity: Arc<ConnectionActivity>,
    accepted: Instant,
    body_rule: BodyRule,
    metrics: Arc<PortMetrics>,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let in_flight = self.activity.request_started(self.accepted);
        let http1 = request.version() < http::Version::HTTP_2;
        let connect = request.method() == http::Method::CONNECT;
        let (mut parts, body) = request.into_parts();
        // Client addresses reach the handlers for rate limits and logs.
        parts.extensions.insert(self.peer);
        let (body, body_timed_out) = if body.is_end_stream() {
            (axum::body::Body::new(body), None)
        } else {
            let timed_out = Arc::new(AtomicBool::new(false));
            let timed = TimedBody {
                inner: body,
                rule: self.body_rule,
                received: 0,
                waited: Duration::ZERO,
                waiting_since: None,
                timer: None,
                timed_out: timed_out.clone(),
                metrics: self.metrics.clone(),
            };
            (axum::body::Body::new(timed), Some(timed_out))
        };
        let request = Request::from_parts(parts, body);
        ResponseFuture {
            inner: self.app.clone().call(request),
            in_flight: Some(in_flight),
            body_timed_out,
            http1,
            connect,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response, marked for the front door on its way out.
    struct ResponseFuture {
        #[pin]
        inner: axum::routing::future::RouteFuture<Infallible>,
        in_flight: Option<InFlight>,
        body_timed_out: Option<Arc<AtomicBool>>,
        http1: bool,
        connect: bool,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let timed_out = this
            .body_timed_out
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed));
        let mut response = if timed_out {
            body_too_slow(*this.http1)
        } else {
            response
        };
        let status = response.status();
        let upgraded =
            status == StatusCode::SWITCHING_PROTOCOLS || (*this.connect && status.is_success());
        let in_flight = this.in_flight.take();
        if upgraded && let Some(in_flight) = &in_flight {
            in_flight.became_long_lived();
        }
        response
            .headers_mut()
            .insert(http::header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
        Poll::Ready(Ok(response.map(|inner| ResponseBody { inner, in_flight })))
    }
}

/// The answer to a request whose body arrived too slowly. The connection
/// is closed after it: the rest of the body may still be on its way.
fn body_too_slow(http1: bool) -> Response<axum::body::Body> {
    let body = serde_json::json!({
        "code": tonic::Code::DeadlineExceeded as i32,
        "message": "the request body arrived too slowly: send it faster than \
                    server.body_min_bytes_per_second, or ask the operator to lower it",
        "details": [],
    });
    let mut response = Response::new(axum::body::Body::from(body.to_string()));
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if http1 {
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pin_project_lite::pin_project! {
    /// A response body that ends its request's time in flight when it ends.
    pub struct ResponseBody {
        #[pin]
        inner: axum::body::Body,
        in_flight: Option<InFlight>,
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            this.in_flight.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body did not arrive in time; the request is answered 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived too slowly")]
struct BodyTooSlow;

pin_project_lite::pin_project! {
    /// A request body held to the [`BodyRule`]. Only time the handler spends
    /// waiting for the client counts, so a handler that reads late does not
    /// cost the client its allowance.
    struct TimedBody {
        #[pin]
        inner: Incoming,
        rule: BodyRule,
        received: u64,
        // Time spent waiting for the client in earlier waits.
        waited: Duration,
        waiting_since: Option<Instant>,
        #[pin]
        timer: Option<Sleep>,
        timed_out: Arc<AtomicBool>,
        metrics: Arc<PortMetrics>,
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    *this.waited += since.elapsed();
                }
                if let Some(Ok(data)) = frame
                    .as_ref()
                    .map(|frame| frame.as_ref().map(Frame::data_ref))
                {
                    *this.received += data.map_or(0, |data| data.len() as u64);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = Instant::now();
                    *this.waiting_since = Some(now);
                    let credit =
                        Duration::from_secs(*this.received / this.rule.min_bytes_per_second);
                    let left = (this.rule.allowance + credit).saturating_sub(*this.waited);
                    let deadline = now + left;
                    match this.timer.as_mut().as_pin_mut() {
                        Some(timer) => timer.reset(deadline),
                        None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
                    }
                }
                let Some(timer) = this.timer.as_pin_mut() else {
                    return Poll::Pending;
                };
                ready!(timer.poll(cx));
                this.metrics.body_timeouts.fetch_add(1, Ordering::Relaxed);
                this.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTooSlow))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Refuses, on the gRPC port, a request that is neither gRPC nor gRPC-Web
/// with 415 Unsupported Media Type, as grpc-go does, instead of letting it
/// reach a service that would misread it.
#[derive(Clone, Copy, Default)]
pub struct GrpcContentTypeLayer;

impl<S> tower::Layer<S> for GrpcContentTypeLayer {
    type Service = GrpcContentType<S>;

    fn layer(&self, inner: S) -> GrpcContentType<S> {
        GrpcContentType { inner }
    }
}

/// The service [`GrpcContentTypeLayer`] wraps around `S`: passes gRPC and
/// gRPC-Web requests on, and answers any other with 415.
#[derive(Clone)]
pub struct GrpcContentType<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for GrpcContentType<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        std::future::Ready<Result<Response<tonic::body::Body>, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let content_type = request.headers().get(http::header::CONTENT_TYPE);
        if content_type.is_some_and(|value| is_grpc_content_type(value.as_bytes())) {
            return futures::future::Either::Right(self.inner.call(request));
        }
        let response = unsupported_media_type(content_type);
        futures::future::Either::Left(std::future::ready(Ok(response)))
    }
}

/// `application/grpc` and `application/grpc-web`, `-web-text`, each with an
/// optional `+codec` and parameters.
fn is_grpc_content_type(value: &[u8]) -> bool {
    let prefix = b"application/grpc";
    let Some(head) = value.get(..prefix.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(prefix) {
        return false;
    }
    let mut rest = &value[prefix.len()..];
    for variant in [&b"-web-text"[..], b"-web"] {
        if rest.len() >= variant.len() && rest[..variant.len()].eq_ignore_ascii_case(variant) {
            rest = &rest[variant.len()..];
            break;
        }
    }
    matches!(rest.first(), None | Some(b'+' | b';' | b' '))
}

fn unsupported_media_type(content_type: Option<&HeaderValue>) -> Response<tonic::body::Body> {
    let given = match content_type {
        Some(value) => format!("{:?}", String::from_utf8_lossy(value.as_bytes())),
        None => "none".to_owned(),
    };
    let text = format!(
        "invalid gRPC request content-type {given}: this port takes gRPC (application/grpc) \
         and gRPC-Web (application/grpc-web, application/grpc-web-text); REST is on the HTTP port\n"
    );
    let body = tonic::body::Body::new(http_body_util::Full::new(Bytes::from(text)));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    headers.insert("grpc-status", HeaderValue::from_static("3"));
    headers.insert(
        "grpc-message",
        HeaderValue::from_static("invalid gRPC request content-type"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_grpc_web_content_types_are_told_apart_from_others() {
        for accepted in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ] {
            assert!(is_grpc_content_type(accepted.as_bytes()), "{accepted}");
        }
        for refused in [
            "",
            "application/json",
            "text/html",
            "application/grpcx",
            "application/grpc-webby",
            "application/grp",
        ] {
            assert!(!is_grpc_content_type(refused.as_bytes()), "{refused}");
        }
    }
}
