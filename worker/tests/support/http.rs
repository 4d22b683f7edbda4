//! A local HTTP server for HTTP sources and deliveries (loopback only): files to GET, a body
//! that never ends, a generated CSV of any size, a redirect to loopback, and upload endpoints that accept, fail
//! (`503` a few times, or always) or refuse (`400`). What it sees is reported as [`Event`]s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `/slow.csv` sent its first rows.
    SlowStarted,
    /// The client went away before `/slow.csv` ended (it never does by itself).
    SlowDropped,
    /// An upload attempt to `/upload/{behaviour}` and the status it was answered.
    Upload { behaviour: String, status: u16 },
}

/// An upload the server accepted.
#[derive(Debug, Clone)]
pub struct Upload {
    pub method: String,
    pub job_id: String,
    pub body: Vec<u8>,
}

pub struct ServerState {
    files: Mutex<HashMap<String, Vec<u8>>>,
    pub uploads: Mutex<Vec<Upload>>,
    attempts: Mutex<HashMap<String, u32>>,
    events: mpsc::UnboundedSender<Event>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    pub events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let (events, rx) = mpsc::unbounded_channel();
        let state = Arc::new(ServerState {
            files: Mutex::new(HashMap::new()),
            uploads: Mutex::new(Vec::new()),
            attempts: Mutex::new(HashMap::new()),
            events,
        });
        let router = Router::new()
            .route("/files/{name}", get(file))
            .route("/slow.csv", get(slow))
            .route("/generated/{rows}", get(generated))
            .route("/redirect/{port}/{name}", get(redirect))
            .route("/upload/{behaviour}", put(upload).post(upload))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        TestServer {
            addr,
            state,
            events: rx,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `body` at `/files/{name}`.
    pub fn put_file(&self, name: &str, body: impl Into<Vec<u8>>) {
        self.state
            .files
            .lock()
            .unwrap()
            .insert(name.into(), body.into());
    }

    /// Waits for the next event that `wanted` picks (panics after a generous timeout).
    pub async fn wait_for(&mut self, wanted: impl Fn(&Event) -> bool) -> Event {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("the server runs");
                if wanted(&event) {
                    return event;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .expect("the server saw it within 60 s")
    }

    /// Upload attempts to `/upload/{behaviour}` so far.
    pub fn attempts(&self, behaviour: &str) -> u32 {
        self.state
            .attempts
            .lock()
            .unwrap()
            .get(behaviour)
            .copied()
            .unwrap_or(0)
    }
}

async fn file(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    match state.files.lock().unwrap().get(&name) {
        Some(body) => body.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A redirect to `http://127.0.0.1:{port}/files/{name}`.
async fn redirect(Path((port, name)): Path<(u16, String)>) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header("location", format!("http://127.0.0.1:{port}/files/{name}"))
        .body(Body::empty())
        .expect("a response")
}

/// Sends [`Event::SlowDropped`] when the body is dropped before its end.
struct DropAlarm(mpsc::UnboundedSender<Event>);

impl Drop for DropAlarm {
    fn drop(&mut self) {
        let _ = self.0.send(Event::SlowDropped);
    }
}

/// A CSV that sends a row every 20 ms and never ends.
async fn slow(State(state): State<Arc<ServerState>>) -> Response {
    let alarm = DropAlarm(state.events.clone());
    let rows = futures::stream::unfold((0u64, alarm), |(n, alarm)| async move {
        let chunk = if n == 0 {
            "region,amount\n".to_string()
        } else {
            if n == 2 {
                let _ = alarm.0.send(Event::SlowStarted);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            format!("r{},{}\n", n % 5, n)
        };
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (n + 1, alarm)))
    });
    Body::from_stream(rows).into_response()
}

/// One row of `/generated/{rows}`: fixed width, so the Content-Length is known.
pub fn generated_row(i: u64) -> String {
    format!(
        "region-{:02},product-{},{:06}\n",
        i % 40,
        i % 7,
        i % 1_000_000
    )
}

pub const GENERATED_HEADER: &str = "region,product,amount\n";

/// A CSV of `rows` rows, generated as it is sent, with its Content-Length.
async fn generated(Path(rows): Path<u64>) -> Response {
    const BATCH: u64 = 4096;
    let size = GENERATED_HEADER.len() as u64 + rows * generated_row(0).len() as u64;
    let batches = futures::stream::unfold(0u64, move |start| async move {
        if start > rows {
            return None;
        }
        let mut chunk = String::new();
        if start == 0 {
            chunk.push_str(GENERATED_HEADER);
        }
        let end = (start + BATCH).min(rows);
        for i in start..end {
            chunk.push_str(&generated_row(i));
        }
        let next = if end == rows { rows + 1 } else { end };
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), next))
    });
    Response::builder()
        .header("content-length", size)
        .header("content-type", "text/csv")
        .body(Body::from_stream(batches))
        .expect("a response")
}

/// `ok`: 201. `flaky`: 503 twice, then 200. `down`: always 503. `bad`: 400.
async fn upload(
    State(state): State<Arc<ServerState>>,
    Path(behaviour): Path<String>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let attempt = {
        let mut attempts = state.attempts.lock().unwrap();
        let n = attempts.entry(behaviour.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match behaviour.as_str() {
        "ok" => StatusCode::CREATED,
        "flaky" if attempt <= 2 => StatusCode::SERVICE_UNAVAILABLE,
        "flaky" => StatusCode::OK,
        "down" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    if status.is_success() {
        state.uploads.lock().unwrap().push(Upload {
            method: method.to_string(),
            job_id: headers
                .get("x-presswork-job-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: body.to_vec(),
        });
    }
    let _ = state.events.send(Event::Upload {
        behaviour,
        status: status.as_u16(),
    });
    let said = if status == StatusCode::BAD_REQUEST {
        "no such bucket"
    } else {
        ""
    };
    (status, said).into_response()
}
