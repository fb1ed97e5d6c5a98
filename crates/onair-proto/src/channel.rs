//! One channel type for every service client, whether the service runs in this
//! process or behind a network connection.
//!
//! A local call still goes through the service's gRPC contract: the request is
//! encoded, routed by path and decoded exactly as it would be over the network,
//! just without sockets. So metadata (authorization, traceparent), status codes,
//! deadlines and metrics behave the same in one binary and on Kubernetes.

use std::task::{Context, Poll};

use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// The error type that travels through a [`ServiceChannel`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type Inner = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// A cloneable gRPC transport: an in-process service or a tonic network channel.
#[derive(Clone)]
pub struct ServiceChannel {
    inner: Inner,
    /// Whether requests stay in this process; shown in logs and readiness.
    is_local: bool,
}

impl ServiceChannel {
    /// Calls a service (usually a tonic `Routes`) in this process.
    pub fn local<S>(service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Self {
            inner: BoxCloneSyncService::new(service.map_err(Into::into)),
            is_local: true,
        }
    }

    /// Calls a service over a tonic channel.
    pub fn remote(channel: tonic::transport::Channel) -> Self {
        Self {
            inner: BoxCloneSyncService::new(channel.map_err(BoxError::from)),
            is_local: false,
        }
    }

    /// Wraps the transport in a tower layer (tracing, metrics, timeouts), keeping
    /// whether it is local.
    pub fn layered<L>(self, layer: L) -> Self
    where
        L: tower::Layer<Inner>,
        L::Service: Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<http::Request<Body>>>::Future: Send + 'static,
    {
        Self {
            inner: BoxCloneSyncService::new(layer.layer(self.inner)),
            is_local: self.is_local,
        }
    }

    /// Whether requests stay in this process, for logs and readiness.
    pub fn is_local(&self) -> bool {
        self.is_local
    }
}

impl Service<http::Request<Body>> for ServiceChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = <Inner as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        self.inner.call(request)
    }
}
