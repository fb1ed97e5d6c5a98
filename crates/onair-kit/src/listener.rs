//! How the HTTP and gRPC ports take connections, so that no one client can
//! tie them up: a cap on open connections per port and per client address,
//! checked at accept time before a byte is parsed; a back-off instead of a
//! busy loop when the process runs out of file descriptors; deadlines on
//! connections that say nothing; and the open-files limit raised at start.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::abuse::address_key;
use crate::config::FrontDoorConfig;
use crate::metrics::Registry;

/// How long the accept loop waits after the process could not take a
/// connection for want of resources (file descriptors, memory), so that it
/// neither spins nor gives up; the connection waits in the listen queue.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often a run of failed accepts is logged.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How often TCP keep-alive probes a silent peer, so that connections of
/// clients that vanished are closed by the kernel.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Bytes that open every HTTP/2 connection; on the gRPC port they must
/// arrive within the header timeout.
const HTTP2_PREFACE_BYTES: usize = 24;

/// File descriptors the process keeps for itself beyond client connections
/// (database, bus, segments, logs) when it checks the caps against the
/// open-files limit.
const RESERVED_DESCRIPTORS: u64 = 256;

const CONNECTIONS: &str = "onair_server_connections";
const CONNECTIONS_HELP: &str = "Open client connections, by port.";
const REFUSED: &str = "onair_server_connections_refused_total";
const REFUSED_HELP: &str =
    "Connections closed as soon as they were accepted because a cap was reached, by port and cap.";
const ACCEPT_ERRORS: &str = "onair_server_accept_errors_total";
const ACCEPT_ERRORS_HELP: &str =
    "Times a port could not accept a connection for want of resources (such as file descriptors).";
const TIMED_OUT: &str = "onair_server_connections_timed_out_total";
const TIMED_OUT_HELP: &str =
    "Connections closed by the server because the client was too slow, by port and deadline.";

/// Which port a listener serves, for logs and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// The HTTP port: REST, live sockets, HLS, metrics and health.
    Http,
    /// The gRPC port: the services, health, reflection and gRPC-Web.
    Grpc,
}

impl Port {
    /// The port's name in logs and the `port` metric label: `http` or `grpc`.
    pub fn as_str(self) -> &'static str {
        match self {
            Port::Http => "http",
            Port::Grpc => "grpc",
        }
    }
}

/// The metric series of one port, looked up once.
pub(crate) struct PortMetrics {
    refused_per_ip: Arc<AtomicU64>,
    refused_total: Arc<AtomicU64>,
    accept_errors: Arc<AtomicU64>,
    pub(crate) header_timeouts: Arc<AtomicU64>,
    pub(crate) idle_timeouts: Arc<AtomicU64>,
    pub(crate) body_timeouts: Arc<AtomicU64>,
}

impl PortMetrics {
    fn new(metrics: &Registry, port: Port) -> PortMetrics {
        let port = port.as_str();
        let refused = |cap: &str| {
            metrics.counter_handle(REFUSED, REFUSED_HELP, &[("port", port), ("cap", cap)])
        };
        let timed_out = |deadline: &str| {
            metrics.counter_handle(
                TIMED_OUT,
                TIMED_OUT_HELP,
                &[("port", port), ("deadline", deadline)],
            )
        };
        PortMetrics {
            refused_per_ip: refused("per_ip"),
            refused_total: refused("total"),
            accept_errors: metrics.counter_handle(
                ACCEPT_ERRORS,
                ACCEPT_ERRORS_HELP,
                &[("port", port)],
            ),
            header_timeouts: timed_out("header"),
            idle_timeouts: timed_out("idle"),
            body_timeouts: timed_out("body"),
        }
    }
}

/// The open connections of one port, in total and by client address.
struct ConnectionCount {
    max_total: usize,
    max_per_ip: usize,
    /// Connections open now, by client address (see [`address_key`]).
    by_client: Mutex<ByClient>,
    /// The same total, for `/metrics`.
    open: Arc<AtomicI64>,
}

#[derive(Default)]
struct ByClient {
    total: usize,
    open: HashMap<IpAddr, usize>,
}

/// Why a connection was turned away.
enum Refusal {
    PerIp,
    Total,
}

impl ConnectionCount {
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Refusal> {
        let mut by_client = self
            .by_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if by_client.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let open = by_client.open.entry(client).or_insert(0);
        if *open >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *open += 1;
        by_client.total += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            count: self.clone(),
            client,
        })
    }

    fn release(&self, client: IpAddr) {
        let mut by_client = self
            .by_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        by_client.total = by_client.total.saturating_sub(1);
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(open) = by_client.open.get_mut(&client) {
            *open -= 1;
            if *open == 0 {
                by_client.open.remove(&client);
            }
        }
    }
}

/// A connection's place under the caps, given back when the connection
/// closes (for an upgraded live socket, when the socket closes).
struct Slot {
    count: Arc<ConnectionCount>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.count.release(self.client);
    }
}

/// A listening port with its caps.
pub struct Doorway {
    listener: TcpListener,
    port: Port,
    count: Arc<ConnectionCount>,
    pub(crate) metrics: Arc<PortMetrics>,
    pub(crate) config: FrontDoorConfig,
    /// Accepts that failed since the last log line, and when that was.
    failed_accepts: u64,
    last_logged_failure: Option<Instant>,
}

/// A connection that got in.
pub struct Admitted {
    /// The accepted TCP connection.
    pub stream: TcpStream,
    /// The address of the client at the other end of the connection.
    pub peer: SocketAddr,
    slot: Slot,
}

impl Doorway {
    /// Admits connections on `listener`, serving `port`, within the caps of
    /// `config`, counting them in `metrics`.
    pub fn new(
        listener: TcpListener,
        port: Port,
        config: &FrontDoorConfig,
        metrics: &Registry,
    ) -> Doorway {
        Doorway {
            listener,
            port,
            count: Arc::new(ConnectionCount {
                max_total: config.max_connections,
                max_per_ip: config.max_connections_per_ip,
                by_client: Mutex::default(),
                open: metrics.gauge_handle(
                    CONNECTIONS,
                    CONNECTIONS_HELP,
                    &[("port", port.as_str())],
                ),
            }),
            metrics: Arc::new(PortMetrics::new(metrics, port)),
            config: config.clone(),
            failed_accepts: 0,
            last_logged_failure: None,
        }
    }

    /// Which port this doorway serves.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The next connection within the caps. Connections over a cap are
    /// closed at once with a reset, before anything is read from them.
    /// Cancel-safe.
    pub async fn accept(&mut self) -> Admitted {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    self.accept_failed(&error);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let slot = match self.count.admit(address_key(peer.ip())) {
                Ok(slot) => slot,
                Err(refusal) => {
                    let refused = match refusal {
                        Refusal::PerIp => &self.metrics.refused_per_ip,
                        Refusal::Total => &self.metrics.refused_total,
                    };
                    refused.fetch_add(1, Ordering::Relaxed);
                    // A reset rather than a FIN: no TIME_WAIT is left behind.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    continue;
                }
            };
            // Live frames and small answers must not wait for Nagle's
            // algorithm and delayed ACKs.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(error = %error, "cannot set TCP_NODELAY on a connection");
            }
            let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
            if let Err(error) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
                tracing::debug!(error = %error, "cannot set TCP keep-alive on a connection");
            }
            return Admitted { stream, peer, slot };
        }
    }

    /// Counts a failed accept and logs once per interval, with how many
    /// failed since the last line.
    fn accept_failed(&mut self, error: &io::Error) {
        self.metrics.accept_errors.fetch_add(1, Ordering::Relaxed);
        self.failed_accepts += 1;
        let now = Instant::now();
        let due = self
            .last_logged_failure
            .is_none_or(|logged| now.duration_since(logged) >= ACCEPT_ERROR_LOG_INTERVAL);
        if !due {
            return;
        }
        tracing::warn!(
            port = self.port.as_str(),
            error = %error,
            failures = self.failed_accepts,
            "cannot accept connections; waiting for connections to close \
             (raise the open-files limit or lower server.max_connections)"
        );
        self.failed_accepts = 0;
        self.last_logged_failure = Some(now);
    }

    /// The gRPC port's connections, for tonic: each must start speaking
    /// within the header timeout.
    pub fn into_grpc_incoming(
        self,
    ) -> impl futures::Stream<Item = Result<GuardedIo, io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut doorway| async move {
            let admitted = doorway.accept().await;
            let io = GuardedIo::speaking_within(admitted, &doorway);
            Some((Ok(io), doorway))
        })
    }
}

/// Errors of one connection that went away before it was accepted; the
/// next accept may succeed at once.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What an HTTP connection is doing, as its requests and responses see it;
/// the connection's deadlines are read from it.
#[derive(Default)]
pub(crate) struct ConnectionActivity {
    /// Requests whose response has not been sent to its end.
    in_flight: AtomicU32,
    /// Request heads received on the connection so far.
    requests: AtomicU64,
    /// When the last response ended, in milliseconds after the accept.
    last_done_ms: AtomicU64,
    /// Set once the connection became a live socket (a WebSocket upgrade);
    /// from then on it is the live socket's to close.
    long_lived: AtomicBool,
}

impl ConnectionActivity {
    /// A request head arrived; the returned guard ends it when dropped.
    pub(crate) fn request_started(self: &Arc<Self>, accepted: Instant) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            activity: self.clone(),
            accepted,
        }
    }
}

/// One request in flight on a connection, until its response has been sent.
pub(crate) struct InFlight {
    activity: Arc<ConnectionActivity>,
    accepted: Instant,
}

impl InFlight {
    /// The request made its connection a live socket (a WebSocket upgrade).
    pub(crate) fn became_long_lived(&self) {
        self.activity.long_lived.store(true, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let since_accept = Instant::now().duration_since(self.accepted).as_millis();
            self.activity.last_done_ms.store(
                u64::try_from(since_accept).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }
}

/// A client connection with its place under the caps and its deadlines.
///
/// The deadlines are checked where the connection waits for the client's
/// bytes: a connection past one fails its read with `TimedOut`, and the
/// HTTP server closes it.
pub struct GuardedIo {
    stream: TcpStream,
    _slot: Slot,
    watch: Watch,
}

enum Watch {
    /// No deadline is left (a live socket, or a gRPC connection that spoke).
    Off,
    /// The gRPC port: the first bytes are due by the timer.
    Preface {
        timer: Pin<Box<Sleep>>,
        bytes_due: usize,
        metrics: Arc<PortMetrics>,
    },
    /// The HTTP port: request heads and idle times, read from the activity.
    Http(Box<HttpWatch>),
}

pub(crate) struct HttpWatch {
    activity: Arc<ConnectionActivity>,
    accepted: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The longest the timer is set ahead, so that a request head that starts
    /// to arrive later is still checked on time.
    check_every: Duration,
    /// When bytes of a request head started to arrive on a connection with
    /// nothing in flight, and how many heads had been received then.
    head_started: Option<(Instant, u64)>,
    timer: Pin<Box<Sleep>>,
    metrics: Arc<PortMetrics>,
}

/// What a connection waits for now.
enum Deadline {
    /// Nothing: it is a live socket now.
    Never,
    /// A response: nothing is due from the client; look again later.
    Busy,
    Header(Instant),
    Idle(Instant),
}

impl HttpWatch {
    fn deadline(&self) -> Deadline {
        let activity = &self.activity;
        if activity.long_lived.load(Ordering::Relaxed) {
            return Deadline::Never;
        }
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            return Deadline::Busy;
        }
        let requests = activity.requests.load(Ordering::Relaxed);
        if let Some((started, heads)) = self.head_started
            && heads == requests
        {
            return Deadline::Header(started + self.header_timeout);
        }
        if requests == 0 {
            return Deadline::Header(self.accepted + self.header_timeout);
        }
        let last_done = Duration::from_millis(activity.last_done_ms.load(Ordering::Relaxed));
        Deadline::Idle(self.accepted + last_done + self.idle_timeout)
    }

    /// Bytes arrived: on a connection with nothing in flight they start the
    /// head of a request, which is then due within the header timeout.
    fn bytes_arrived(&mut self) {
        let activity = &self.activity;
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            return;
        }
        let requests = activity.requests.load(Ordering::Relaxed);
        let receiving = self
            .head_started
            .is_some_and(|(_started, heads)| heads == requests);
        if !receiving {
            self.head_started = Some((Instant::now(), requests));
        }
    }

    /// Whether the connection is past a deadline (and why); `None` also
    /// once the connection is a live socket, so it is watched no more.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<Option<&'static str>> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let due = match self.deadline() {
                Deadline::Never => return Poll::Ready(None),
                Deadline::Busy => now + self.check_every,
                Deadline::Header(at) if at <= now => {
                    self.metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Some(
                        "the request head did not arrive within server.header_timeout_ms",
                    ));
                }
                Deadline::Idle(at) if at <= now => {
                    self.metrics.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Some("the connection was idle for server.idle_timeout_ms"));
                }
                Deadline::Header(at) | Deadline::Idle(at) => at.min(now + self.check_every),
            };
            self.timer.as_mut().reset(due);
        }
    }
}

impl GuardedIo {
    /// An HTTP port connection, watched through `activity`.
    pub(crate) fn http(
        admitted: Admitted,
        doorway: &Doorway,
        activity: Arc<ConnectionActivity>,
        accepted: Instant,
    ) -> GuardedIo {
        let config = &doorway.config;
        let watch = HttpWatch {
            activity,
            accepted,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            check_every: config.header_timeout.min(config.idle_timeout),
            head_started: None,
            timer: Box::pin(tokio::time::sleep_until(accepted + config.header_timeout)),
            metrics: doorway.metrics.clone(),
        };
        GuardedIo {
            stream: admitted.stream,
            _slot: admitted.slot,
            watch: Watch::Http(Box::new(watch)),
        }
    }

    /// A gRPC port connection: it must start speaking within the header
    /// timeout. Then HTTP/2 keep-alive pings find the peers that vanish.
    fn speaking_within(admitted: Admitted, doorway: &Doorway) -> GuardedIo {
        let timer = Box::pin(tokio::time::sleep(doorway.config.header_timeout));
        GuardedIo {
            stream: admitted.stream,
            _slot: admitted.slot,
            watch: Watch::Preface {
                timer,
                bytes_due: HTTP2_PREFACE_BYTES,
                metrics: doorway.metrics.clone(),
            },
        }
    }

    /// Called after a read: with the bytes it brought, or on `Pending`.
    /// `Some` closes the connection with the error.
    fn watch_read(&mut self, cx: &mut Context<'_>, read: Option<usize>) -> Option<io::Error> {
        let expired = match &mut self.watch {
            Watch::Off => return None,
            Watch::Preface {
                timer,
                bytes_due,
                metrics,
            } => match read {
                Some(bytes) => {
                    *bytes_due = bytes_due.saturating_sub(bytes);
                    if *bytes_due == 0 {
                        self.watch = Watch::Off;
                    }
                    return None;
                }
                None => {
                    if timer.as_mut().poll(cx).is_pending() {
                        return None;
                    }
                    metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    Some("the client did not start speaking within server.header_timeout_ms")
                }
            },
            Watch::Http(watch) => match read {
                Some(0) => return None,
                Some(_bytes) => {
                    watch.bytes_arrived();
                    return None;
                }
                None => match watch.poll_expired(cx) {
                    Poll::Pending => return None,
                    Poll::Ready(expired) => expired,
                },
            },
        };
        match expired {
            Some(reason) => Some(io::Error::new(io::ErrorKind::TimedOut, reason)),
            None => {
                self.watch = Watch::Off;
                None
            }
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        let outcome = match &read {
            Poll::Ready(Ok(())) => Some(buf.filled().len() - before),
            Poll::Ready(Err(_)) => return read,
            Poll::Pending => None,
        };
        match self.watch_read(cx, outcome) {
            Some(error) => Poll::Ready(Err(error)),
            None => read,
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedIo {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Raises the open-files soft limit to the hard limit, so that the caps
/// rather than the common default of 1,024 bound the connections, and logs
/// both. Returns the soft limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the open-files limit");
            return None;
        }
    };
    let raised = match rlimit::increase_nofile_limit(hard) {
        Ok(raised) => raised,
        Err(error) => {
            tracing::warn!(error = %error, soft, hard, "cannot raise the open-files limit");
            soft
        }
    };
    if raised > soft {
        tracing::info!(
            was = soft,
            soft = raised,
            hard,
            "raised the open-files limit"
        );
    } else {
        tracing::info!(soft = raised, hard, "open-files limit");
    }
    Some(raised)
}

/// Warns when the caps of both ports don't fit under the open-files limit:
/// past it, connections wait in the listen queue instead of being refused.
pub fn check_caps_against_open_files(config: &FrontDoorConfig, open_files: u64) {
    let wanted = 2 * config.max_connections as u64 + RESERVED_DESCRIPTORS;
    if wanted <= open_files {
        return;
    }
    tracing::warn!(
        open_files,
        max_connections = config.max_connections,
        "the open-files limit is below what server.max_connections allows on both ports; \
         past it, new connections wait until others close"
    );
}
