//! Connections that never make a request do not hold the control plane's file descriptors:
//! they are closed at the handshake timeout, accepting backs off when descriptors run out
//! (no spinning), and health checks are answered once the idle sockets are gone. Behind a
//! load balancer with `--proxy-protocol`, only connections that start with a PROXY header are
//! served.

use std::io::ErrorKind;
use std::path::Path;
use std::time::{Duration, Instant};

use presswork_tests::Cluster;
use presswork_tests::process::{Process, binary_path, forward_stdout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Far longer than the 1 s handshake timeout the tests set; hyper's own timeout for an
/// unfinished HTTP/1 request head is 30 s.
const CLOSE_WAIT: Duration = Duration::from_secs(20);

fn port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the URL ends with its port")
}

/// Waits until the server closes `stream` (EOF or reset), reading and dropping whatever it
/// sends before.
async fn closed_by_server(mut stream: TcpStream, what: &str) {
    let outcome = tokio::time::timeout(CLOSE_WAIT, async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) => panic!("{what}: unexpected error {e}"),
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "{what}: still open after {CLOSE_WAIT:?}: the server keeps connections that never make a request"
    );
}

async fn health_check(url: String) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("a valid URL")
        .connect()
        .await
        .expect("connect to the control plane");
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("Health.Check answers")
        .into_inner()
        .status()
}

#[tokio::test]
async fn idle_and_half_handshake_connections_are_closed_at_the_handshake_timeout() {
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--handshake-timeout", "1"])
        .start()
        .await;
    let port = port(&cluster.url());
    let mut sockets = Vec::new();
    for i in 0..30 {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (what, bytes): (&str, &[u8]) = match i % 3 {
            0 => ("a silent connection", b""),
            // 16 of the 24 bytes of the HTTP/2 client preface.
            1 => ("half an HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
            _ => (
                "an unfinished HTTP/1.1 request head",
                b"GET / HTTP/1.1\r\nHost: x\r\n",
            ),
        };
        stream.write_all(bytes).await.expect("send");
        sockets.push((what, stream));
    }
    let closing = sockets
        .into_iter()
        .map(|(what, stream)| closed_by_server(stream, what));
    futures::future::join_all(closing).await;

    // Real clients are still served.
    assert_eq!(health_check(cluster.url()).await, ServingStatus::Serving);
}

/// User-visible CPU ticks per second in /proc (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let after = &stat[stat.rfind(')').expect("a command name in parentheses") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    // utime is field 14, stime field 15: indexes 11 and 12 from field 3.
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

fn open_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/PID/fd")
        .count()
}

#[tokio::test]
async fn more_idle_sockets_than_file_descriptors_do_not_spin_or_starve_health_checks() {
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--handshake-timeout", "1"])
        .start()
        .await;
    let pid = cluster.control_plane_pid();
    let limit = open_files(pid) + 40;
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit failed: {status}");

    let port = port(&cluster.url());
    let began = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let mut idle = Vec::new();
    for _ in 0..limit + 250 {
        // The kernel completes these from the listen backlog; the server accepts what it can.
        idle.push(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect an idle socket"),
        );
    }
    let answer = tokio::time::timeout(Duration::from_secs(60), health_check(cluster.url())).await;
    let wall = began.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    assert!(
        matches!(answer, Ok(ServingStatus::Serving)),
        "with {} idle sockets and a limit of {limit} files, the health check did not answer within 60 s: {answer:?}",
        idle.len()
    );
    assert!(
        cpu < wall * 0.5,
        "the control plane used {cpu:.2} s of CPU in {wall:.2} s while out of file descriptors: the accept loop spins"
    );
}

/// A control plane started by hand: `Cluster` signs its users in over plain gRPC, which a
/// PROXY-protocol listener refuses.
async fn start_control_plane(dir: &Path, args: &[&str]) -> (Process, u16) {
    let database = format!("sqlite://{}", dir.join("presswork.db").display());
    let mut all = vec![
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--database".to_owned(),
        database,
        "--web-dir".to_owned(),
        dir.join("no-dashboard").display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let log = dir.join("control-plane.log");
    let (process, stdout) = Process::spawn_reading_stdout(
        "control-plane",
        &binary_path("presswork-control-plane"),
        &all,
        &log,
    );
    let (announced_tx, announced) = tokio::sync::oneshot::channel();
    forward_stdout(
        stdout,
        &log,
        "presswork-control-plane listening on ",
        announced_tx,
    );
    let line = tokio::time::timeout(Duration::from_secs(30), announced)
        .await
        .expect("the control plane announces its address")
        .expect("the control plane announces its address");
    (process, port(line.trim()))
}

/// A PROXY protocol v2 header: a TCP/IPv4 connection from `source` to 127.0.0.1:`port`.
fn proxy_v2_header(source: [u8; 4], source_port: u16, port: u16) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    // Version 2, PROXY command; TCP over IPv4; 12 bytes of addresses.
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&source_port.to_be_bytes());
    header.extend_from_slice(&port.to_be_bytes());
    header
}

/// A grpc-web Health.Check (public: no token), sent after `prefix`; the raw response.
async fn grpc_web_health_check(port: u16, prefix: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut bytes = prefix.to_vec();
    bytes.extend_from_slice(
        b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0",
    );
    // The server may close a refused connection before it reads everything.
    let _ = stream.write_all(&bytes).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(CLOSE_WAIT, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => response.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    response
}

#[tokio::test]
async fn with_proxy_protocol_only_connections_with_a_header_are_served() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_control_plane, port) = start_control_plane(
        dir.path(),
        &["--proxy-protocol", "--handshake-timeout", "5"],
    )
    .await;

    let without = grpc_web_health_check(port, b"").await;
    assert!(
        without.is_empty(),
        "a connection without a PROXY header was answered: {}",
        String::from_utf8_lossy(&without)
    );

    let header = proxy_v2_header([203, 0, 113, 7], 40_000, port);
    let with = grpc_web_health_check(port, &header).await;
    let text = String::from_utf8_lossy(&with);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("grpc-status:0"), "{text}");
}
