//! Logs, W3C trace context and per-RPC metrics.
//!
//! Every gRPC request handled by this process runs inside a [`TraceContext`]:
//! the one its caller sent in `traceparent`, or a new trace. Every call this
//! process makes to a service (local or remote) carries the current context in
//! `traceparent`, so one trace id follows a user action across services.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;
use crate::metrics::{DURATION_BUCKETS, Registry};

/// Installs the process's log subscriber: JSON lines, or human-readable text on
/// a terminal. Later calls (several servers in one test process) are no-ops.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    if json {
        let _ = json_logs(filter, std::io::stdout).try_init();
    } else {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
}

/// JSON log lines, one per event, with the current span's fields under `span`.
fn json_logs<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(JsonSpanFields)
        .finish()
}

/// A span's fields as a JSON object, written straight into the span's
/// buffer: the same object as tracing-subscriber's `JsonFields`, which first
/// builds a map of JSON values and then serializes it. Every request opens a
/// span or two, most of which never log a line, so this is paid per request.
struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        writer.write_char('{')?;
        let mut visitor = JsonEntries::new(&mut writer, true);
        fields.record(&mut visitor);
        visitor.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // `{"a":1}` becomes `{"a":1,"b":2}`.
        if current.fields.pop() != Some('}') {
            current.fields.clear();
            current.fields.push('{');
        }
        let first = current.fields == "{";
        let mut visitor = JsonEntries::new(&mut current.fields, first);
        fields.record(&mut visitor);
        let result = visitor.result;
        current.fields.push('}');
        result
    }
}

/// Writes fields as `"name":value` entries of a JSON object.
struct JsonEntries<'a> {
    out: &'a mut dyn fmt::Write,
    first: bool,
    result: fmt::Result,
}

impl<'a> JsonEntries<'a> {
    fn new(out: &'a mut dyn fmt::Write, first: bool) -> JsonEntries<'a> {
        JsonEntries {
            out,
            first,
            result: Ok(()),
        }
    }

    fn entry(&mut self, field: &tracing::field::Field, value: fmt::Arguments<'_>, quoted: bool) {
        if self.result.is_ok() {
            self.result = self.write_entry(field, value, quoted);
        }
    }

    fn write_entry(
        &mut self,
        field: &tracing::field::Field,
        value: fmt::Arguments<'_>,
        quoted: bool,
    ) -> fmt::Result {
        if !self.first {
            self.out.write_char(',')?;
        }
        self.first = false;
        // A raw identifier (`r#type`) is named without its prefix, as in JsonFields.
        let name = field.name().strip_prefix("r#").unwrap_or(field.name());
        self.out.write_char('"')?;
        JsonEscaped(&mut *self.out).write_str(name)?;
        self.out.write_str("\":")?;
        if !quoted {
            return self.out.write_fmt(value);
        }
        self.out.write_char('"')?;
        JsonEscaped(&mut *self.out).write_fmt(value)?;
        self.out.write_char('"')
    }
}

impl tracing::field::Visit for JsonEntries<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.entry(field, format_args!("{value:?}"), true);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.entry(field, format_args!("{value}"), true);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.entry(field, format_args!("{value}"), false);
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.entry(field, format_args!("{value}"), false);
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.entry(field, format_args!("{value}"), false);
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if value.is_finite() {
            self.entry(field, format_args!("{value}"), false);
        } else {
            // JSON has no NaN or infinity.
            self.entry(field, format_args!("null"), false);
        }
    }
}

/// Escapes what is written for the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (index, character) in text.char_indices() {
            let escape = match character {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                control if control < ' ' => None,
                _ => continue,
            };
            self.0.write_str(&text[plain_from..index])?;
            match escape {
                Some(escape) => self.0.write_str(escape)?,
                None => write!(self.0, "\\u{:04x}", u32::from(character))?,
            }
            plain_from = index + character.len_utf8();
        }
        self.0.write_str(&text[plain_from..])
    }
}

/// Lower-case hex of an id, formatted only if it is written.
struct Hex<T>(T);

impl fmt::Display for Hex<u128> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:032x}", self.0)
    }
}

impl fmt::Display for Hex<u64> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:016x}", self.0)
    }
}

impl fmt::Display for Hex<Option<u64>> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => Hex(id).fmt(formatter),
            None => Ok(()),
        }
    }
}

/// A position in a distributed trace: the W3C `traceparent` of the span that is
/// running now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace's id, shared by every span of one request across services.
    pub trace_id: u128,
    /// This span's id.
    pub span_id: u64,
    /// The caller's span, when the request came with a `traceparent`.
    pub parent_span_id: Option<u64>,
    /// Whether the trace is recorded: the caller's `traceparent` flag, and
    /// true for a new trace.
    pub sampled: bool,
}

tokio::task_local! {
    static CURRENT_TRACE: TraceContext;
}

impl TraceContext {
    /// A new trace with a random id.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            parent_span_id: None,
            sampled: true,
        }
    }

    /// The context of a new span whose parent is described by `traceparent`.
    /// A missing or malformed header starts a new trace.
    pub fn from_traceparent(traceparent: Option<&str>) -> TraceContext {
        let Some(parent) = traceparent.and_then(parse_traceparent) else {
            return TraceContext::new_root();
        };
        TraceContext {
            trace_id: parent.trace_id,
            span_id: nonzero_u64(),
            parent_span_id: Some(parent.span_id),
            sampled: parent.sampled,
        }
    }

    /// The `traceparent` header that makes this span the parent of the callee's.
    pub fn traceparent(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", Hex(self.trace_id), Hex(self.span_id))
    }

    /// The trace id as 32 lower-case hex digits, as logs and `traceparent`
    /// write it.
    pub fn trace_id_hex(&self) -> String {
        Hex(self.trace_id).to_string()
    }

    /// The context of the request being handled, if any.
    pub fn current() -> Option<TraceContext> {
        CURRENT_TRACE.try_with(|context| *context).ok()
    }

    /// Runs a future inside this context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT_TRACE.scope(self, future).await
    }
}

struct ParsedTraceparent {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

fn parse_traceparent(header: &str) -> Option<ParsedTraceparent> {
    let mut parts = header.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let well_formed = version.len() == 2
        && version != "ff"
        && trace_id.len() == 32
        && span_id.len() == 16
        && flags.len() == 2
        && [version, trace_id, span_id, flags].iter().all(|part| {
            part.bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        });
    // Version 00 has exactly four fields; later versions may append more.
    if !well_formed || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace_id, 16)
        .ok()
        .filter(|id| *id != 0)?;
    let span_id = u64::from_str_radix(span_id, 16)
        .ok()
        .filter(|id| *id != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(ParsedTraceparent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn nonzero_u128() -> u128 {
    loop {
        let value: u128 = rand::random();
        if value != 0 {
            return value;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let value: u64 = rand::random();
        if value != 0 {
            return value;
        }
    }
}

/// `/onair.user.v1.UserService/GetUser` → (`onair.user.v1.UserService`, `GetUser`).
pub fn split_grpc_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service, method),
        None => (trimmed, ""),
    }
}

const REQUESTS_TOTAL: &str = "onair_grpc_server_requests_total";
const REQUESTS_HELP: &str = "gRPC requests handled, by service, method and status code.";
const DURATION_SECONDS: &str = "onair_grpc_server_request_duration_seconds";
const DURATION_HELP: &str =
    "Time from a gRPC request's arrival to the end of its response, in seconds.";

/// Wraps the gRPC server: trace context, a span per request, RED metrics and a
/// log line per finished request.
#[derive(Clone)]
pub struct GrpcServerLayer {
    metrics: Registry,
}

impl GrpcServerLayer {
    /// A layer that records its metrics in `metrics`.
    pub fn new(metrics: Registry) -> GrpcServerLayer {
        GrpcServerLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcServerLayer`] wraps around `S`.
#[derive(Clone)]
pub struct GrpcServerService<S> {
    inner: S,
    metrics: Registry,
}

impl<S, ResBody> Service<http::Request<Body>> for GrpcServerService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ResBody: HttpBody<Data = bytes::Bytes> + Send + Unpin + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone is the one that was polled ready; keep it, leave a fresh one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let (service, method) = split_grpc_path(request.uri().path());
        let (service, method) = (service.to_owned(), method.to_owned());
        let traceparent = request
            .headers()
            .get("traceparent")
            .and_then(|value| value.to_str().ok());
        let context = TraceContext::from_traceparent(traceparent);
        let span = tracing::info_span!(
            "grpc",
            service = %service,
            method = %method,
            trace_id = %Hex(context.trace_id),
            span_id = %Hex(context.span_id),
            parent_span_id = %Hex(context.parent_span_id),
        );
        Box::pin(async move {
            let response = context.scope(inner.call(request)).instrument(span).await?;
            let header_status = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok());
            let record = RequestRecord {
                metrics,
                service,
                method,
                trace_id: context.trace_id,
                started,
                done: false,
            };
            Ok(response.map(|body| {
                Body::new(MeteredBody {
                    inner: body,
                    status: header_status,
                    record,
                })
            }))
        })
    }
}

/// What is recorded once a response has ended.
struct RequestRecord {
    metrics: Registry,
    service: String,
    method: String,
    trace_id: u128,
    started: Instant,
    done: bool,
}

impl RequestRecord {
    fn finish(&mut self, status: Option<i32>) {
        if self.done {
            return;
        }
        self.done = true;
        // A body dropped before its trailers means the client went away.
        let code = tonic::Code::from_i32(status.unwrap_or(tonic::Code::Cancelled as i32));
        let code_name = code_name(code);
        let seconds = self.started.elapsed().as_secs_f64();
        let labels = [
            ("service", self.service.as_str()),
            ("method", self.method.as_str()),
            ("code", code_name),
        ];
        self.metrics
            .counter_add(REQUESTS_TOTAL, REQUESTS_HELP, &labels, 1);
        self.metrics.histogram_observe(
            DURATION_SECONDS,
            DURATION_HELP,
            DURATION_BUCKETS,
            &labels[..2],
            seconds,
        );
        // Formatted only by the lines that are logged.
        let trace_id = Hex(self.trace_id);
        let duration_ms = seconds * 1000.0;
        match code {
            tonic::Code::Ok => {
                tracing::debug!(service = %self.service, method = %self.method, code = code_name, duration_ms, %trace_id, "rpc finished")
            }
            tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => {
                tracing::warn!(service = %self.service, method = %self.method, code = code_name, duration_ms, %trace_id, "rpc failed")
            }
            _ => {
                tracing::info!(service = %self.service, method = %self.method, code = code_name, duration_ms, %trace_id, "rpc refused")
            }
        }
    }
}

/// The name gRPC uses for a status code, e.g. `NotFound`.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Cancelled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    }
}

/// A response body that notes the gRPC status in its trailers and records the
/// request when the body ends (or is dropped).
struct MeteredBody<B> {
    inner: B,
    status: Option<i32>,
    record: RequestRecord,
}

impl<B> HttpBody for MeteredBody<B>
where
    B: HttpBody<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let status = trailers
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<i32>().ok());
                    this.status = status.or(this.status);
                    this.record.finish(this.status);
                }
            }
            Poll::Ready(None) => {
                let status = this.status.or(Some(tonic::Code::Ok as i32));
                this.record.finish(status);
            }
            Poll::Ready(Some(Err(_))) => this.record.finish(Some(tonic::Code::Internal as i32)),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // A trailers-only response (an error before any message) may be dropped
        // without being polled to its end.
        let status = self.status;
        self.record.finish(status);
    }
}

/// Adds the current trace context to every outgoing gRPC request.
#[derive(Clone, Copy, Default)]
pub struct GrpcClientLayer;

impl<S> Layer<S> for GrpcClientLayer {
    type Service = GrpcClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientService { inner }
    }
}

/// The service [`GrpcClientLayer`] wraps around `S`: it sends a
/// `traceparent` for the current trace, or for a new one when none is running.
#[derive(Clone)]
pub struct GrpcClientService<S> {
    inner: S,
}

impl<S> Service<http::Request<Body>> for GrpcClientService<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let context = TraceContext::current().unwrap_or_else(TraceContext::new_root);
        if let Ok(value) = http::HeaderValue::from_str(&context.traceparent()) {
            request.headers_mut().insert("traceparent", value);
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_span_keeps_the_trace_and_names_its_parent() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::from_traceparent(Some(header));
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.parent_span_id, Some(0x00f067aa0ba902b7));
        assert_ne!(context.span_id, 0x00f067aa0ba902b7);
        assert!(
            context
                .traceparent()
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace() {
        for header in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let context = TraceContext::from_traceparent(Some(header));
            assert_eq!(context.parent_span_id, None, "{header}");
        }
    }

    #[test]
    fn log_lines_carry_the_span_fields_as_json_whatever_their_text() {
        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = json_logs(tracing_subscriber::EnvFilter::new("info"), move || {
            writer.clone()
        });
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                text = %"a \"quoted\"\\ line\nwith\ttabs, \u{1} and é",
                path = "/v1/users/42",
                count = 42u64,
                offset = -7i64,
                fresh = true,
                ratio = 1.5f64,
                later = tracing::field::Empty,
                r#type = "raw",
            );
            span.record("later", "recorded after");
            let _entered = span.enter();
            tracing::info!(answer = 1, "inside");
        });
        let output = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(output.trim()).unwrap();
        assert_eq!(line["message"], "inside");
        assert_eq!(
            line["span"],
            serde_json::json!({
                "name": "request",
                "text": "a \"quoted\"\\ line\nwith\ttabs, \u{1} and é",
                "path": "/v1/users/42",
                "count": 42,
                "offset": -7,
                "fresh": true,
                "ratio": 1.5,
                "later": "recorded after",
                "type": "raw",
            })
        );
    }

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            split_grpc_path("/onair.user.v1.UserService/GetUser"),
            ("onair.user.v1.UserService", "GetUser")
        );
    }
}
