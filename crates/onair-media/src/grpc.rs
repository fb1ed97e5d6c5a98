//! The media service's gRPC server. Every method is the generated server's
//! except `GetTimetable`, whose answer is sent as the bytes the service puts
//! together from its cached, already encoded parts: a cached timetable (a
//! megabyte for a station's day) is then copied rather than rebuilt as a
//! message and encoded again on every request.

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use onair_proto::codec::RawServerCodec;
use onair_proto::media::v1 as pb;
use onair_proto::media::v1::media_service_server::MediaServiceServer;
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::service::MediaServiceImpl;

const GET_TIMETABLE: &str = "/onair.media.v1.MediaService/GetTimetable";
/// tonic's default limit on a request's size.
const DEFAULT_MAX_DECODING_BYTES: usize = 4 * 1024 * 1024;

/// The media service as the station serves it over gRPC.
#[derive(Clone)]
pub struct MediaGrpcServer {
    generated: MediaServiceServer<MediaServiceImpl>,
    service: MediaServiceImpl,
    max_decoding_bytes: usize,
}

impl MediaGrpcServer {
    /// Serves `service`.
    pub fn new(service: MediaServiceImpl) -> MediaGrpcServer {
        MediaGrpcServer {
            generated: MediaServiceServer::new(service.clone()),
            service,
            max_decoding_bytes: DEFAULT_MAX_DECODING_BYTES,
        }
    }

    /// The largest request taken, in bytes.
    pub fn max_decoding_message_size(mut self, limit: usize) -> MediaGrpcServer {
        self.generated = self.generated.max_decoding_message_size(limit);
        self.max_decoding_bytes = limit;
        self
    }
}

impl NamedService for MediaGrpcServer {
    const NAME: &'static str = <MediaServiceServer<MediaServiceImpl> as NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for MediaGrpcServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != GET_TIMETABLE {
            return self.generated.call(request);
        }
        let method = Timetables(self.service.clone());
        let limit = self.max_decoding_bytes;
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(RawServerCodec::<pb::GetTimetableRequest>::default())
                    .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// `GetTimetable`, answered with the encoded timetable.
struct Timetables(MediaServiceImpl);

impl tonic::server::UnaryService<pb::GetTimetableRequest> for Timetables {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, request: tonic::Request<pb::GetTimetableRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move {
            let encoded = service.timetable_bytes(request).await?;
            Ok(tonic::Response::new(encoded))
        })
    }
}
