//! Accepting connections before HTTP sees them: how many at once, how long a new one may take
//! to send its first request, the PROXY protocol header a load balancer puts in front, and
//! what to do when the process runs out of file descriptors.
//!
//! An accept task hands each connection to tonic as a [`Connection`]. A connection holds one
//! of `--max-connections` slots for its whole life; beyond them new connections are closed at
//! once. Until its first request reaches the server (marked by [`ConnectionInfoLayer`]) a
//! connection has `--handshake-timeout` to arrive: one that sends nothing, stops inside the
//! HTTP/2 preface, the TLS handshake or a request head, is closed when it runs out. After the
//! first request, idle HTTP/2 connections are checked with keepalive pings
//! ([`HTTP2_KEEPALIVE_INTERVAL`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::Request;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tower::{Layer, Service};
use tracing::{debug, info, warn};

/// How often the server pings an HTTP/2 connection, and how long it waits for the answer
/// before closing it: a peer that vanished without a FIN does not hold its slot for ever.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long accepting pauses when the process is out of file descriptors: in-flight
/// connections end and free some meanwhile; retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per this period for a repeated condition (refused connections,
/// exhausted file descriptors); the warning says how many were not logged.
const WARNING_PERIOD: Duration = Duration::from_secs(10);

/// The longest PROXY header accepted. v1 is at most 107 bytes; a v2 header from HAProxy
/// without TLS information is a few dozen.
const MAX_PROXY_HEADER: usize = 4096;

/// How connections are accepted (`--handshake-timeout`, `--max-connections`,
/// `--proxy-protocol`).
#[derive(Clone, Copy, Debug)]
pub struct ListenerSettings {
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub proxy_protocol: bool,
}

/// Raises the soft limit on open files to the hard limit, so the connection cap rather than
/// the shell's default (often 1024) bounds the connections served.
pub fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(limit, "open-file limit"),
        Err(e) => warn!(
            error = %e,
            "cannot raise the open-file limit: connections may be refused early; raise it with `ulimit -n` or LimitNOFILE"
        ),
    }
}

/// The connections accepted on `listener`, for `serve_with_incoming_shutdown`. Accepting
/// stops (and the socket closes) when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    settings: ListenerSettings,
) -> impl tokio_stream::Stream<Item = io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, settings, tx));
    tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok)
}

async fn accept_loop(
    listener: TcpListener,
    settings: ListenerSettings,
    tx: mpsc::Sender<Connection>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut over_limit = Throttled::default();
    let mut out_of_files = Throttled::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_out_of_files(&e) => {
                if let Some(suppressed) = out_of_files.due() {
                    warn!(
                        error = %e,
                        suppressed,
                        max_connections = settings.max_connections,
                        "out of file descriptors: pausing accepts; raise the open-file limit (`ulimit -n`, LimitNOFILE) or lower --max-connections"
                    );
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
            Err(e) => {
                // The peer gave up before accept (ECONNABORTED) and the like.
                debug!(error = %e, "accept failed");
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            if let Some(suppressed) = over_limit.due() {
                warn!(
                    %peer,
                    suppressed,
                    max_connections = settings.max_connections,
                    "connection limit reached: closing new connections; raise --max-connections if this load is expected"
                );
            }
            continue;
        };
        // Commands and cancels are small messages: send them without delay.
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + settings.handshake_timeout;
        if settings.proxy_protocol {
            let tx = tx.clone();
            // Each header is read on a task of its own: a slow sender must not hold up the
            // connections behind it.
            tokio::spawn(async move {
                match tokio::time::timeout_at(deadline, read_proxy_header(stream)).await {
                    Ok(Ok(proxied)) => {
                        let _ = tx
                            .send(Connection::new(
                                proxied.stream,
                                proxied.addresses,
                                proxied.leftover,
                                deadline,
                                slot,
                            ))
                            .await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "connection refused"),
                    Err(_) => debug!(
                        %peer,
                        "connection closed: no PROXY header within the handshake timeout"
                    ),
                }
            });
        } else {
            let addresses = Addresses {
                local: stream.local_addr().ok(),
                remote: Some(peer),
            };
            let connection = Connection::new(stream, addresses, Vec::new(), deadline, slot);
            if tx.send(connection).await.is_err() {
                return;
            }
        }
    }
}

fn is_out_of_files(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A condition logged at most once per [`WARNING_PERIOD`].
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    /// `Some(occurrences not logged since the last warning)` when a warning is due.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < WARNING_PERIOD => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The two ends of a connection, as the client sees them: from the PROXY header when there is
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Addresses {
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
}

struct Proxied {
    stream: TcpStream,
    addresses: Addresses,
    /// Bytes read past the header: the start of the HTTP exchange.
    leftover: Vec<u8>,
}

/// Reads the PROXY protocol header (v1 or v2) at the start of `stream`. A `LOCAL` command or
/// an `UNKNOWN`/unspecified address (a load balancer's own health check) keeps the socket's
/// addresses.
async fn read_proxy_header(mut stream: TcpStream) -> io::Result<Proxied> {
    let socket = Addresses {
        local: stream.local_addr().ok(),
        remote: stream.peer_addr().ok(),
    };
    let mut buffer = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 512];
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before its PROXY header",
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
        match parse_proxy_header(&buffer, socket) {
            ProxyHeader::Complete { addresses, length } => {
                let leftover = buffer.split_off(length);
                return Ok(Proxied {
                    stream,
                    addresses,
                    leftover,
                });
            }
            ProxyHeader::Incomplete if buffer.len() < MAX_PROXY_HEADER => {}
            ProxyHeader::Incomplete => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("PROXY header longer than {MAX_PROXY_HEADER} bytes"),
                ));
            }
            ProxyHeader::Invalid(why) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "no valid PROXY header ({why}): with --proxy-protocol every connection must come through the load balancer"
                    ),
                ));
            }
        }
    }
}

#[derive(Debug, PartialEq)]
enum ProxyHeader {
    Complete { addresses: Addresses, length: usize },
    Incomplete,
    Invalid(String),
}

fn parse_proxy_header(bytes: &[u8], socket: Addresses) -> ProxyHeader {
    use ppp::PartialResult;
    let parsed = ppp::HeaderResult::parse(bytes);
    if parsed.is_incomplete() {
        return ProxyHeader::Incomplete;
    }
    match parsed {
        ppp::HeaderResult::V1(Ok(header)) => {
            let addresses = match header.addresses {
                ppp::v1::Addresses::Tcp4(ip) => Addresses {
                    local: Some(SocketAddr::from((
                        ip.destination_address,
                        ip.destination_port,
                    ))),
                    remote: Some(SocketAddr::from((ip.source_address, ip.source_port))),
                },
                ppp::v1::Addresses::Tcp6(ip) => Addresses {
                    local: Some(SocketAddr::from((
                        ip.destination_address,
                        ip.destination_port,
                    ))),
                    remote: Some(SocketAddr::from((ip.source_address, ip.source_port))),
                },
                ppp::v1::Addresses::Unknown => socket,
            };
            ProxyHeader::Complete {
                addresses,
                length: header.header.len(),
            }
        }
        ppp::HeaderResult::V2(Ok(header)) => {
            let addresses = match (header.command, header.addresses) {
                (ppp::v2::Command::Local, _) => socket,
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(ip)) => Addresses {
                    local: Some(SocketAddr::from((
                        ip.destination_address,
                        ip.destination_port,
                    ))),
                    remote: Some(SocketAddr::from((ip.source_address, ip.source_port))),
                },
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(ip)) => Addresses {
                    local: Some(SocketAddr::from((
                        ip.destination_address,
                        ip.destination_port,
                    ))),
                    remote: Some(SocketAddr::from((ip.source_address, ip.source_port))),
                },
                (
                    ppp::v2::Command::Proxy,
                    ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_),
                ) => socket,
            };
            ProxyHeader::Complete {
                addresses,
                length: header.len(),
            }
        }
        ppp::HeaderResult::V1(Err(e)) => ProxyHeader::Invalid(e.to_string()),
        ppp::HeaderResult::V2(Err(e)) => ProxyHeader::Invalid(e.to_string()),
    }
}

/// What a connection tells the services about itself: its addresses (the client's, from the
/// PROXY header when there is one) and whether a request has arrived on it yet.
/// [`ConnectionInfoLayer`] turns it into tonic's `TcpConnectInfo` for `Request::remote_addr`.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub local_addr: Option<SocketAddr>,
    pub remote_addr: Option<SocketAddr>,
    established: Arc<AtomicBool>,
}

/// An accepted connection: the socket, the bytes read past a PROXY header, the deadline for
/// its first request, and its slot under `--max-connections` (freed when it is dropped).
pub struct Connection {
    stream: TcpStream,
    info: ConnectionInfo,
    leftover: Vec<u8>,
    consumed: usize,
    handshake: Option<Pin<Box<Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    fn new(
        stream: TcpStream,
        addresses: Addresses,
        leftover: Vec<u8>,
        deadline: Instant,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            stream,
            info: ConnectionInfo {
                local_addr: addresses.local,
                remote_addr: addresses.remote,
                established: Arc::new(AtomicBool::new(false)),
            },
            leftover,
            consumed: 0,
            handshake: Some(Box::pin(tokio::time::sleep_until(deadline))),
            _slot: slot,
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.handshake.as_mut() {
            if this.info.established.load(Ordering::Relaxed) {
                this.handshake = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within the handshake timeout (--handshake-timeout)",
                )));
            }
        }
        if this.consumed < this.leftover.len() {
            let rest = &this.leftover[this.consumed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.consumed += n;
            if this.consumed == this.leftover.len() {
                this.leftover = Vec::new();
                this.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Marks a connection established when a request arrives on it (ending its handshake
/// deadline), and gives the request tonic's `TcpConnectInfo` with the client's addresses, so
/// `Request::remote_addr` is the client's also behind a PROXY-protocol load balancer.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionInfoLayer;

impl<S> Layer<S> for ConnectionInfoLayer {
    type Service = ConnectionInfoService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectionInfoService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ConnectionInfoService<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ConnectionInfoService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(info) = request.extensions().get::<ConnectionInfo>().cloned() {
            info.established.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(TcpConnectInfo {
                local_addr: info.local_addr,
                remote_addr: info.remote_addr,
            });
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    const SOCKET: Addresses = Addresses {
        local: None,
        remote: None,
    };

    /// A PROXY v2 header for a TCP/IPv4 connection from `source` to 127.0.0.1:7070.
    fn v2_header(source: [u8; 4], port: u16) -> Vec<u8> {
        let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        header.extend_from_slice(&[0x21, 0x11, 0, 12]);
        header.extend_from_slice(&source);
        header.extend_from_slice(&[127, 0, 0, 1]);
        header.extend_from_slice(&port.to_be_bytes());
        header.extend_from_slice(&7070u16.to_be_bytes());
        header
    }

    #[test]
    fn a_v2_header_gives_the_client_address_and_its_length() {
        let mut bytes = v2_header([203, 0, 113, 7], 40_000);
        let length = bytes.len();
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        assert_eq!(
            parse_proxy_header(&bytes, SOCKET),
            ProxyHeader::Complete {
                addresses: Addresses {
                    local: Some("127.0.0.1:7070".parse().unwrap()),
                    remote: Some("203.0.113.7:40000".parse().unwrap()),
                },
                length,
            }
        );
        assert_eq!(
            parse_proxy_header(&bytes[..10], SOCKET),
            ProxyHeader::Incomplete
        );
    }

    #[test]
    fn a_v1_header_gives_the_client_address() {
        let bytes = b"PROXY TCP4 198.51.100.1 127.0.0.1 5555 7070\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse_proxy_header(bytes, SOCKET),
            ProxyHeader::Complete {
                addresses: Addresses {
                    local: Some("127.0.0.1:7070".parse().unwrap()),
                    remote: Some("198.51.100.1:5555".parse().unwrap()),
                },
                length: 45,
            }
        );
    }

    #[test]
    fn a_request_without_a_header_is_invalid() {
        let parsed = parse_proxy_header(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", SOCKET);
        assert!(matches!(parsed, ProxyHeader::Invalid(_)), "{parsed:?}");
    }

    async fn accept_one(settings: ListenerSettings, send: &[u8]) -> (Connection, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut connections = Box::pin(incoming(listener, settings));
        let mut client = TcpStream::connect(address).await.unwrap();
        client.write_all(send).await.unwrap();
        let connection = tokio_stream::StreamExt::next(&mut connections)
            .await
            .expect("a connection")
            .expect("accepted");
        (connection, client)
    }

    #[tokio::test]
    async fn connect_info_and_remote_addr_are_the_proxy_headers_client() {
        let settings = ListenerSettings {
            handshake_timeout: Duration::from_secs(30),
            max_connections: 10,
            proxy_protocol: true,
        };
        let mut bytes = v2_header([203, 0, 113, 7], 40_000);
        bytes.extend_from_slice(b"hello");
        let (mut connection, _client) = accept_one(settings, &bytes).await;
        let client: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        assert_eq!(connection.connect_info().remote_addr, Some(client));
        // The bytes after the header are the start of the HTTP exchange.
        let mut start = [0u8; 5];
        connection.read_exact(&mut start).await.unwrap();
        assert_eq!(&start, b"hello");

        // What a service sees: the layer gives tonic the header's address.
        let mut request = Request::new(());
        request.extensions_mut().insert(connection.connect_info());
        let mut service =
            ConnectionInfoLayer.layer(tower::service_fn(|request: Request<()>| async move {
                Ok::<_, std::convert::Infallible>(tonic::Request::from_http(request).remote_addr())
            }));
        let seen = service.call(request).await.unwrap();
        assert_eq!(seen, Some(client));
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_closed_at_the_handshake_deadline() {
        let settings = ListenerSettings {
            handshake_timeout: Duration::from_millis(100),
            max_connections: 10,
            proxy_protocol: false,
        };
        let (mut connection, _client) = accept_one(settings, b"PRI * HTTP/2.0\r\n").await;
        let mut start = [0u8; 16];
        connection.read_exact(&mut start).await.unwrap();
        let mut more = [0u8; 8];
        let error = connection.read(&mut more).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn an_established_connection_has_no_deadline() {
        let settings = ListenerSettings {
            handshake_timeout: Duration::from_millis(100),
            max_connections: 10,
            proxy_protocol: false,
        };
        let (mut connection, mut client) = accept_one(settings, b"").await;
        connection
            .connect_info()
            .established
            .store(true, Ordering::Relaxed);
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            connection.read_exact(&mut byte).await.map(|_| byte)
        });
        // Past the deadline (a wait, not a synchronisation: the read must not fail meanwhile).
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), *b"x");
    }
}
