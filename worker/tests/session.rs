//! The worker against a scripted control plane: a tiny in-test WorkerService that hands each
//! stream to the test, which plays the control plane's side message by message.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use presswork_proto::v1::connect_request::Msg;
use presswork_proto::v1::connect_response::Msg as ControlMsg;
use presswork_proto::v1::job_finished::Result as Outcome;
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

const PATIENCE: Duration = Duration::from_secs(15);

/// One worker stream, seen from the control plane.
struct Stream {
    inbound: Streaming<ConnectRequest>,
    outbound: mpsc::UnboundedSender<Result<ConnectResponse, Status>>,
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
fn serve(listener: TcpListener) -> (JoinHandle<()>, mpsc::UnboundedReceiver<Stream>) {
    let (streams, rx) = mpsc::unbounded_channel();
    let server = tonic::transport::Server::builder()
        .add_service(WorkerServiceServer::new(ScriptedControlPlane { streams }))
        .serve_with_incoming(TcpListenerStream::new(listener));
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    (task, rx)
}

struct Harness {
    addr: SocketAddr,
    server: JoinHandle<()>,
    streams: mpsc::UnboundedReceiver<Stream>,
    shutdown: CancellationToken,
    worker: JoinHandle<anyhow::Result<()>>,
    output: tempfile::TempDir,
    work: tempfile::TempDir,
}

async fn start(enable_test_reports: bool) -> Harness {
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
    async fn next_stream(&mut self) -> (Stream, Hello) {
        let mut stream = tokio::time::timeout(PATIENCE, self.streams.recv())
            .await
            .expect("the worker connects")
            .expect("the server runs");
        let Msg::Hello(hello) = stream.next().await else {
            panic!("the first message must be Hello");
        };
        (stream, hello)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, self.worker)
            .await
            .expect("the worker stops")
            .expect("the worker task ends");
        result.expect("the worker exits cleanly");
        self.server.abort();
    }
}

fn attempt(id: &str) -> JobAttempt {
    JobAttempt {
        job_id: id.into(),
        attempt: 1,
    }
}

fn assign(id: &str, report: &str, params: &[(&str, &str)]) -> ControlMsg {
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

fn cancel(id: &str) -> ControlMsg {
    ControlMsg::Cancel(CancelCommand {
        job: Some(attempt(id)),
        requested_by: "ada".into(),
        reason: "not needed any more".into(),
    })
}

fn welcome(lease_ms: u32) -> ControlMsg {
    ControlMsg::Welcome(Welcome {
        heartbeat_interval_ms: 50,
        lease_ms,
    })
}

fn outcome_ack(id: &str) -> ControlMsg {
    ControlMsg::OutcomeAck(OutcomeAck {
        job: Some(attempt(id)),
    })
}

impl Stream {
    fn send(&self, msg: ControlMsg) {
        self.outbound
            .send(Ok(ConnectResponse { msg: Some(msg) }))
            .expect("the worker's stream is open");
    }

    /// The next message from the worker, heartbeats answered and skipped.
    async fn next(&mut self) -> Msg {
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
    async fn outcome(&mut self) -> JobFinished {
        loop {
            if let Msg::Finished(finished) = self.next().await {
                return finished;
            }
        }
    }

    async fn until_stage(&mut self, stage: Stage) {
        loop {
            if let Msg::StageStarted(started) = self.next().await
                && started.stage == stage as i32
            {
                return;
            }
        }
    }
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("read dir").next().is_none()
}

#[tokio::test]
async fn outcomes_are_resent_after_a_reconnect_until_acknowledged() {
    let mut h = start(false).await;
    let (stream, hello) = h.next_stream().await;
    assert_eq!(hello.capacity, 2);
    assert_eq!(hello.reports, vec!["demo-fast", "demo-slow"]);
    assert!(hello.known.is_empty());
    assert!(!hello.worker_id.is_empty());
    let mut stream = stream;
    stream.send(welcome(10_000));
    stream.send(assign("job-1", "demo-fast", &[]));

    let finished = stream.outcome().await;
    let Some(Outcome::Succeeded(done)) = finished.result else {
        panic!("expected success, got {finished:?}");
    };
    assert_eq!(Path::new(&done.output), h.output.path().join("job-1.pdf"));
    assert!(
        std::fs::read(&done.output)
            .expect("the report")
            .starts_with(b"%PDF")
    );

    // The control plane goes away before acknowledging: the worker reconnects, says it still
    // knows job-1, and sends its outcome again.
    drop(stream);
    let (mut stream, hello) = h.next_stream().await;
    assert_eq!(hello.known, vec![attempt("job-1")]);
    let Msg::Finished(again) = stream.next().await else {
        panic!("the unacknowledged outcome comes right after Hello");
    };
    assert_eq!(again.job, Some(attempt("job-1")));
    stream.send(welcome(10_000));
    stream.send(outcome_ack("job-1"));
    // Heartbeats flow at the welcomed interval (and are answered by `next`).
    let heartbeat = tokio::time::timeout(PATIENCE, stream.inbound.message())
        .await
        .expect("a heartbeat")
        .expect("healthy")
        .expect("open");
    assert!(matches!(heartbeat.msg, Some(Msg::Heartbeat(_))));

    drop(stream);
    let (_stream, hello) = h.next_stream().await;
    assert!(hello.known.is_empty(), "acknowledged: {:?}", hello.known);
    h.stop().await;
}

#[tokio::test]
async fn cancels_stop_running_jobs_and_jobs_not_yet_assigned() {
    let mut h = start(false).await;
    let (mut stream, _) = h.next_stream().await;
    stream.send(welcome(10_000));

    // A cancel that overtakes its assignment: the job never runs a stage.
    stream.send(cancel("job-early"));
    stream.send(assign("job-early", "demo-fast", &[]));
    let Msg::CancelAck(ack) = stream.next().await else {
        panic!("expected the cancel to be acknowledged");
    };
    assert_eq!(ack.stage, Stage::Unspecified as i32);
    let Msg::Finished(finished) = stream.next().await else {
        panic!("expected the outcome right after the ack");
    };
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.stage, Stage::Unspecified as i32);
    assert_eq!(cancelled.reason, "not needed any more");

    // A running job: acknowledged in its stage, then stopped there.
    stream.send(assign(
        "job-slow",
        "demo-slow",
        &[("slow_stage", "generate")],
    ));
    stream.until_stage(Stage::Generate).await;
    stream.send(cancel("job-slow"));
    let ack = loop {
        if let Msg::CancelAck(ack) = stream.next().await {
            break ack;
        }
    };
    assert_eq!(ack.stage, Stage::Generate as i32);
    assert!(!ack.past_point_of_no_return);
    let finished = stream.outcome().await;
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.stage, Stage::Generate as i32);
    assert!(!cancelled.forced);
    assert!(
        is_empty(h.output.path()),
        "a cancelled job delivers nothing"
    );
    assert!(is_empty(h.work.path()), "work directories are removed");
    stream.send(outcome_ack("job-early"));
    stream.send(outcome_ack("job-slow"));
    h.stop().await;
}

#[tokio::test]
async fn a_worker_cut_off_past_its_lease_cancels_its_jobs() {
    let mut h = start(false).await;
    let (mut stream, _) = h.next_stream().await;
    stream.send(welcome(300));
    stream.send(assign("job-f", "demo-slow", &[]));
    stream.until_stage(Stage::Ingest).await;

    // The control plane disappears: the stream ends and nothing listens any more.
    h.server.abort();
    drop(stream);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !is_empty(h.work.path()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was not fenced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Back on the same address: the worker reports the fenced job's outcome.
    let listener = TcpListener::bind(h.addr).await.expect("bind again");
    let (server, streams) = serve(listener);
    h.server = server;
    h.streams = streams;
    let (mut stream, hello) = h.next_stream().await;
    assert_eq!(hello.known, vec![attempt("job-f")]);
    let finished = stream.outcome().await;
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.stage, Stage::Ingest as i32);
    assert_eq!(
        cancelled.reason,
        "lease lost: no contact with the control plane for 0.3 s"
    );
    stream.send(outcome_ack("job-f"));
    h.stop().await;
}

#[tokio::test]
async fn shutdown_cancels_running_jobs_and_exits_once_their_outcomes_are_acknowledged() {
    let mut h = start(true).await;
    let (mut stream, hello) = h.next_stream().await;
    assert!(hello.reports.contains(&"demo-stuck".to_string()));
    stream.send(welcome(10_000));
    stream.send(assign("job-s", "demo-slow", &[]));
    stream.until_stage(Stage::Ingest).await;

    let asked = tokio::time::Instant::now();
    h.shutdown.cancel();
    let finished = stream.outcome().await;
    let Some(Outcome::Cancelled(cancelled)) = finished.result else {
        panic!("expected a cancel, got {finished:?}");
    };
    assert_eq!(cancelled.reason, "worker shutting down");
    stream.send(outcome_ack("job-s"));
    let result = tokio::time::timeout(PATIENCE, h.worker)
        .await
        .expect("the worker stops")
        .expect("the worker task ends");
    result.expect("the worker exits cleanly");
    // It left as soon as the outcome was acknowledged, well before the 5 s drain limit.
    assert!(asked.elapsed() < Duration::from_secs(4));
    h.server.abort();
}
