//! The worker against a scripted control plane: a tiny in-test WorkerService that hands each
//! stream to the test, which plays the control plane's side message by message.
//!
//! Shared by the worker's test files; each uses part of it.
#![allow(dead_code)]

pub mod http;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use presswork_proto::v1::connect_request::Msg;
use presswork_proto::v1::connect_response::Msg as ControlMsg;
use presswork_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use presswork_proto::v1::{
    AssignJob, CancelCommand, ConnectRequest, ConnectResponse, Hello, JobAttempt, JobFinished,
    OutcomeAck, Stage, Welcome,
};
use presswork_worker::WorkerConfig;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

pub const PATIENCE: Duration = Duration::from_secs(15);

/// One worker stream, seen from the control plane.
pub struct Stream {
    pub inbound: Streaming<ConnectRequest>,
    pub outbound: mpsc::UnboundedSender<Result<ConnectResponse, Status>>,
}

struct ScriptedControlPlane {
    streams: mpsc::UnboundedSender<Stream>,
}

#[tonic::async_trait]
impl WorkerService for ScriptedControlPlane {
    type ConnectStream = UnboundedReceiverStream<Result<ConnectResponse, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<ConnectRequest>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (outbound, rx) = mpsc::unbounded_channel();
        let stream = Stream {
            inbound: request.into_inner(),
            outbound,
        };
        self.streams
            .send(stream)
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A control plane serving on `listener`; its streams arrive on the returned receiver.
pub fn serve(listener: TcpListener) -> (JoinHandle<()>, mpsc::UnboundedReceiver<Stream>) {
    let (streams, rx) = mpsc::unbounded_channel();
    let server = tonic::transport::Server::builder()
        .add_service(WorkerServiceServer::new(ScriptedControlPlane { streams }))
        .serve_with_incoming(TcpListenerStream::new(listener));
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    (task, rx)
}

pub struct Harness {
    pub addr: SocketAddr,
    pub server: JoinHandle<()>,
    pub streams: mpsc::UnboundedReceiver<Stream>,
    pub shutdown: CancellationToken,
    pub worker: JoinHandle<anyhow::Result<()>>,
    pub output: tempfile::TempDir,
    pub work: tempfile::TempDir,
}

/// What the tests' workers may reach: the loopback servers and the temp directories the tests
/// use (the worker's defaults refuse both).
pub fn test_reach() -> presswork_worker::reach::Reach {
    presswork_worker::reach::Reach {
        data_dir: Some(std::env::temp_dir()),
        allow_dirs: vec![std::env::temp_dir()],
        allow_hosts: presswork_worker::reach::AllowedHosts::parse(&[
            "127.0.0.0/8".into(),
            "::1".into(),
            "localhost".into(),
        ])
        .expect("valid"),
        allow_privileged_sql_roles: false,
    }
}

pub async fn start(enable_test_reports: bool) -> Harness {
    start_with(enable_test_reports, test_reach()).await
}

/// A worker allowed to reach only what `reach` says.
pub async fn start_with(
    enable_test_reports: bool,
    reach: presswork_worker::reach::Reach,
) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (server, streams) = serve(listener);
    let output = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let config = WorkerConfig {
        control_plane: format!("http://{addr}"),
        enable_test_reports,
        output_dir: output.path().to_path_buf(),
        work_dir: work.path().to_path_buf(),
        token: presswork_worker::WorkerToken("session-test-worker-token".into()),
        reach,
        ..WorkerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(presswork_worker::run(config, shutdown.clone()));
    Harness {
        addr,
        server,
        streams,
        shutdown,
        worker,
        output,
        work,
    }
}

impl Harness {
    pub async fn next_stream(&mut self) -> (Stream, Hello) {
        let mut stream = tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("the worker connects")
            .expect("the server runs");
        let Msg::Hello(hello) = stream.next().await else {
            panic!("the first message must be Hello");
        };
        (stream, hello)
    }

    /// The control plane goes away (its server and `stream` end) and stays away until every
    /// job's work directory is gone (`what` says what did not happen otherwise); then it is
    /// back on the same address and the worker's next stream is returned.
    pub async fn away_until_work_is_gone(&mut self, stream: Stream, what: &str) -> (Stream, Hello) {
        self.server.abort();
        drop(stream);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !is_empty(self.work.path()) {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let listener = TcpListener::bind(self.addr).await.expect("bind again");
        let (server, streams) = serve(listener);
        self.server = server;
        self.streams = streams;
        self.next_stream().await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, self.worker)
            .await
            .expect("the worker stops")
            .expect("the worker task ends");
        result.expect("the worker exits cleanly");
        self.server.abort();
    }
}

pub fn attempt(id: &str) -> JobAttempt {
    JobAttempt {
        job_id: id.into(),
        attempt: 1,
    }
}

pub fn assign(id: &str, report: &str, params: &[(&str, &str)]) -> ControlMsg {
    ControlMsg::Assign(AssignJob {
        job: Some(attempt(id)),
        report: report.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        config: None,
    })
}

pub fn cancel(id: &str) -> ControlMsg {
    ControlMsg::Cancel(CancelCommand {
        job: Some(attempt(id)),
        requested_by: "ada".into(),
        reason: "not needed any more".into(),
    })
}

pub fn welcome(lease_ms: u32) -> ControlMsg {
    ControlMsg::Welcome(Welcome {
        heartbeat_interval_ms: 50,
        lease_ms,
    })
}

pub fn outcome_ack(id: &str) -> ControlMsg {
    ControlMsg::OutcomeAck(OutcomeAck {
        job: Some(attempt(id)),
    })
}

impl Stream {
    pub fn send(&self, msg: ControlMsg) {
        self.outbound
            .send(Ok(ConnectResponse { msg: Some(msg) }))
            .expect("the worker's stream is open");
    }

    /// The next message from the worker, heartbeats answered and skipped.
    pub async fn next(&mut self) -> Msg {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.inbound.message())
                .await
                .expect("a message from the worker")
                .expect("the stream is healthy")
                .expect("the stream is open");
            match message.msg.expect("a message") {
                Msg::Heartbeat(_) => {
                    let ack = presswork_proto::v1::HeartbeatAck {};
                    let _ = self.outbound.send(Ok(ConnectResponse {
                        msg: Some(ControlMsg::HeartbeatAck(ack)),
                    }));
                }
                msg => return msg,
            }
        }
    }

    /// Skips progress, logs and stage starts up to the outcome of a job.
    pub async fn outcome(&mut self) -> JobFinished {
        loop {
            if let Msg::Finished(finished) = self.next().await {
                return finished;
            }
        }
    }

    pub async fn until_stage(&mut self, stage: Stage) {
        loop {
            if let Msg::StageStarted(started) = self.next().await
                && started.stage == stage as i32
            {
                return;
            }
        }
    }
}

pub fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("read dir").next().is_none()
}

/// Assigns job `id` running the stored configuration `config`.
pub fn assign_config(id: &str, config: presswork_proto::v1::ReportConfig) -> ControlMsg {
    ControlMsg::Assign(AssignJob {
        job: Some(attempt(id)),
        report: config.name.clone(),
        params: Default::default(),
        config: Some(config),
    })
}

/// What a job sent until its outcome.
#[derive(Debug, Default)]
pub struct JobMessages {
    pub logs: Vec<String>,
    pub stages: Vec<i32>,
}

impl Stream {
    /// Collects logs and stage starts up to the outcome of a job.
    pub async fn run_to_outcome(&mut self) -> (JobMessages, JobFinished) {
        let mut seen = JobMessages::default();
        loop {
            match self.next().await {
                Msg::Finished(finished) => return (seen, finished),
                Msg::Log(line) => seen.logs.push(line.message),
                Msg::StageStarted(started) => seen.stages.push(started.stage),
                _ => {}
            }
        }
    }

    /// Waits for a log line containing `text`.
    pub async fn until_log(&mut self, text: &str) -> String {
        loop {
            if let Msg::Log(line) = self.next().await
                && line.message.contains(text)
            {
                return line.message;
            }
        }
    }

    /// Waits for the first progress of `stage` above zero.
    pub async fn until_progress(&mut self, stage: Stage) -> f64 {
        loop {
            if let Msg::Progress(progress) = self.next().await
                && progress.stage == stage as i32
                && progress.fraction > 0.0
            {
                return progress.fraction;
            }
        }
    }
}

/// Each page's text of a PDF, read back with lopdf.
pub fn pdf_pages(bytes: &[u8]) -> Vec<String> {
    let document = lopdf::Document::load_mem(bytes).expect("a PDF lopdf can read");
    document
        .get_pages()
        .keys()
        .map(|n| document.extract_text(&[*n]).expect("page text"))
        .collect()
}

/// The names in a directory, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
