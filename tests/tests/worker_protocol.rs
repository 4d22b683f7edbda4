//! What a worker may say on its stream: only about the jobs assigned to it, within bounds, and
//! with one live stream per worker id. A test client with a real worker credential plays the
//! misbehaving worker against a real control plane (and, where a victim is needed, a real
//! worker).

use futures::StreamExt;
use presswork_proto::v1::connect_response::Msg;
use presswork_proto::v1::worker_service_client::WorkerServiceClient;
use presswork_proto::v1::{
    ConnectRequest, ConnectResponse, Failed, Hello, JobAttempt, JobFinished, JobStatus, LogLevel,
    LogLine, Progress, Stage, Succeeded, connect_request, job_finished,
};
use presswork_tests::cluster::Bearer;
use presswork_tests::{Cluster, WAIT};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

/// A hand-driven worker stream: what it sends, and what the control plane answers.
struct FakeWorker {
    tx: mpsc::Sender<ConnectRequest>,
    rx: Streaming<ConnectResponse>,
}

fn hello(worker_id: &str, reports: &[&str]) -> ConnectRequest {
    request(connect_request::Msg::Hello(Hello {
        worker_id: worker_id.into(),
        name: worker_id.into(),
        capacity: 1,
        reports: reports.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    }))
}

fn request(msg: connect_request::Msg) -> ConnectRequest {
    ConnectRequest { msg: Some(msg) }
}

/// Opens a stream with `hello` as its first message.
async fn connect(cluster: &Cluster, hello: ConnectRequest) -> Result<FakeWorker, Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(hello).await.expect("the request stream is open");
    let mut client = WorkerServiceClient::with_interceptor(
        cluster.channel(),
        Bearer::token(cluster.worker_token()),
    )
    .max_decoding_message_size(64 << 20);
    let rx = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    let mut worker = FakeWorker { tx, rx };
    let welcome = worker.next().await?;
    assert!(matches!(welcome, Some(Msg::Welcome(_))), "{welcome:?}");
    Ok(worker)
}

impl FakeWorker {
    async fn send(&self, msg: connect_request::Msg) {
        self.tx
            .send(request(msg))
            .await
            .expect("the request stream is open");
    }

    /// The next command, `None` when the stream ended cleanly, or the status it ended with.
    async fn next(&mut self) -> Result<Option<Msg>, Status> {
        let next = tokio::time::timeout(WAIT, self.rx.next())
            .await
            .expect("the control plane answered within the wait");
        match next {
            None => Ok(None),
            Some(Ok(response)) => Ok(response.msg),
            Some(Err(status)) => Err(status),
        }
    }

    /// Skips heartbeat acks and other commands until `want` matches one.
    async fn until(&mut self, what: &str, want: impl Fn(&Msg) -> bool) -> Msg {
        loop {
            match self.next().await {
                Ok(Some(msg)) if want(&msg) => return msg,
                Ok(Some(_)) => {}
                other => panic!("the stream ended before {what}: {other:?}"),
            }
        }
    }
}

/// A fake worker `worker_id` (the cluster's only one) holding a `demo-fast` job just
/// submitted: the worker, the job, and the attempt assigned to it.
async fn holding_a_job(
    cluster: &Cluster,
    worker_id: &str,
) -> (FakeWorker, presswork_proto::v1::Job, JobAttempt) {
    let mut worker = connect(cluster, hello(worker_id, &["demo-fast"]))
        .await
        .expect("a worker credential opens a stream");
    let job = cluster.submit("demo-fast", &[]).await;
    let assigned = worker
        .until("the job's assignment", |m| matches!(m, Msg::Assign(_)))
        .await;
    let Msg::Assign(assign) = assigned else {
        unreachable!("`until` returned an assignment")
    };
    let held = assign.job.expect("the assignment names its attempt");
    assert_eq!(held.job_id, job.id);
    (worker, job, held)
}

fn attempt(job_id: &str, attempt: u32) -> Option<JobAttempt> {
    Some(JobAttempt {
        job_id: job_id.into(),
        attempt,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_finish_or_log_for_another_workers_job_nor_take_over_its_stream() {
    let cluster = Cluster::builder().workers(1).start().await;
    let job = cluster
        .submit("demo-slow", &[("slow_stage", "transform")])
        .await;
    let running = cluster.wait_until_running(&job.id).await;
    let victim = running.worker_id.clone();

    // A worker with a valid credential but another id reports the victim's job as done.
    let mut intruder = connect(&cluster, hello("intruder", &["demo-fast"]))
        .await
        .expect("a worker credential opens a stream");
    intruder
        .send(connect_request::Msg::Log(LogLine {
            job: attempt(&job.id, running.attempt),
            stage: Stage::Transform as i32,
            level: LogLevel::Info as i32,
            message: "forged line".into(),
        }))
        .await;
    intruder
        .send(connect_request::Msg::Finished(JobFinished {
            job: attempt(&job.id, running.attempt),
            result: Some(job_finished::Result::Succeeded(Succeeded {
                output: "/forged.pdf".into(),
            })),
        }))
        .await;
    // Acknowledged (so a confused worker drops it), but not applied.
    intruder
        .until("the forged outcome's acknowledgement", |m| {
            matches!(m, Msg::OutcomeAck(_))
        })
        .await;
    let after = cluster.get_job(&job.id).await;
    assert_eq!(after.status(), JobStatus::Running, "{after:?}");
    assert!(after.output.is_empty(), "{after:?}");
    let log = cluster.job_log(&job.id).await;
    assert!(
        !log.iter().any(|e| e.message.contains("forged")),
        "a forged line reached the job's log: {log:?}"
    );

    // A second stream with the live worker's id is refused, and the job is untouched.
    let takeover = connect(&cluster, hello(&victim, &["demo-fast"]))
        .await
        .err()
        .expect("a second live stream with the same worker id was accepted");
    assert_eq!(takeover.code(), Code::AlreadyExists, "{takeover:?}");
    assert!(takeover.message().contains("already has a live stream"));
    let after = cluster.get_job(&job.id).await;
    assert_eq!(after.status(), JobStatus::Running, "{after:?}");
    assert_eq!(after.worker_id, victim);

    // The job's own worker is still heard: a cancel stops it.
    cluster
        .cancel(&job.id, "done with the test")
        .await
        .expect("an administrator cancels the job");
    let done = cluster.wait_for_terminal(&job.id, WAIT).await;
    assert_eq!(done.status(), JobStatus::Cancelled, "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_worker_sends_is_bounded_and_a_protocol_error_ends_its_stream_with_that_error() {
    let cluster = Cluster::builder().workers(0).start().await;
    let (mut worker, job, held) = holding_a_job(&cluster, "bounded").await;

    // A 3 MB log line and a 1 MB error are kept, cut to a bounded size with a note.
    worker
        .send(connect_request::Msg::Log(LogLine {
            job: Some(held.clone()),
            stage: Stage::Ingest as i32,
            level: LogLevel::Info as i32,
            message: "L".repeat(3 << 20),
        }))
        .await;
    worker
        .send(connect_request::Msg::Finished(JobFinished {
            job: Some(held.clone()),
            result: Some(job_finished::Result::Failed(Failed {
                stage: Stage::Ingest as i32,
                error: "E".repeat(1 << 20),
            })),
        }))
        .await;
    worker
        .until("the outcome's acknowledgement", |m| {
            matches!(m, Msg::OutcomeAck(_))
        })
        .await;
    let failed = cluster.wait_for_terminal(&job.id, WAIT).await;
    assert_eq!(failed.status(), JobStatus::Failed);
    assert!(
        failed.error.len() <= 9 * 1024 && failed.error.contains("cut: 1048576 bytes"),
        "the stored error is {} bytes: {}…",
        failed.error.len(),
        &failed.error[..failed.error.len().min(80)]
    );
    let log = cluster.job_log(&job.id).await;
    let line = log
        .iter()
        .find(|e| e.event == "worker.log")
        .expect("the log line was kept");
    assert!(
        line.message.len() <= 17 * 1024 && line.message.contains("cut: 3145728 bytes"),
        "the stored log line is {} bytes",
        line.message.len()
    );

    // A progress that is not a fraction breaks the protocol: the stream ends with the error.
    worker
        .send(connect_request::Msg::Progress(Progress {
            job: Some(held),
            stage: Stage::Ingest as i32,
            fraction: f64::NAN,
        }))
        .await;
    let ended = loop {
        match worker.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let status = ended.expect_err("the stream ended cleanly after a protocol error");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("fraction"), "{status:?}");
    // Nothing is stuck: the control plane still serves, and the job kept its outcome.
    assert_eq!(cluster.get_job(&job.id).await.status(), JobStatus::Failed);
}

/// A log longer than one gRPC message (4 MiB) is read page by page: the API's pages and
/// `presswork jobs log` both return every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_longer_than_a_message_is_read_in_pages() {
    let cluster = Cluster::builder().workers(0).start().await;
    let (mut worker, job, held) = holding_a_job(&cluster, "chatty").await;
    const LINES: usize = 400;
    for i in 0..LINES {
        worker
            .send(connect_request::Msg::Log(LogLine {
                job: Some(held.clone()),
                stage: Stage::Ingest as i32,
                level: LogLevel::Info as i32,
                message: format!("line {i:04} {}", "x".repeat(15 * 1024)),
            }))
            .await;
    }
    worker
        .send(connect_request::Msg::Finished(JobFinished {
            job: Some(held),
            result: Some(job_finished::Result::Succeeded(Succeeded {
                output: "/out/chatty.pdf".into(),
            })),
        }))
        .await;
    worker
        .until("the outcome's acknowledgement", |m| {
            matches!(m, Msg::OutcomeAck(_))
        })
        .await;
    cluster.wait_for_terminal(&job.id, WAIT).await;

    let log = cluster.job_log(&job.id).await;
    let lines = log.iter().filter(|e| e.event == "worker.log").count();
    assert_eq!(lines, LINES);
    let total: usize = log.iter().map(|e| e.message.len()).sum();
    assert!(total > 4 << 20, "the log is only {total} bytes");

    let output = tokio::process::Command::new(presswork_tests::process::binary_path(
        presswork_tests::cluster::CLI_BINARY,
    ))
    .args(["--server", &cluster.url(), "jobs", "log", &job.id])
    .env_remove("PRESSWORK_SERVER")
    .env("PRESSWORK_TOKEN", cluster.token("ada"))
    .output()
    .await
    .expect("run the presswork CLI");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "presswork jobs log failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for i in [0, LINES / 2, LINES - 1] {
        assert!(
            stdout.contains(&format!("line {i:04} ")),
            "line {i} is missing from `presswork jobs log`"
        );
    }
}

/// Bytes that are not the method's message are the caller's mistake (INVALID_ARGUMENT), and a
/// request over the size limit is RESOURCE_EXHAUSTED, never INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_requests_get_the_callers_error_codes() {
    let cluster = Cluster::builder().workers(0).start().await;
    let raw = |path: &'static str, body: Vec<u8>| {
        let channel = cluster.channel();
        let token = cluster.token("ada").to_string();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.expect("the channel is ready");
            let mut request = tonic::Request::new(body);
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("a header value"),
            );
            grpc.unary::<_, Vec<u8>, _>(
                request,
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                RawCodec,
            )
            .await
            .expect_err("the server accepted bytes that are not its message")
        }
    };
    // Field 1 with wire type 7, which does not exist.
    let garbage = raw("/presswork.v1.JobService/GetJob", vec![0x0f, 0xff, 0xff]).await;
    assert_eq!(garbage.code(), Code::InvalidArgument, "{garbage:?}");
    assert!(garbage.message().contains("not a valid protobuf message"));
    let sign_in = raw("/presswork.v1.AuthService/Login", vec![0x0a, 0x80]).await;
    assert_eq!(sign_in.code(), Code::InvalidArgument, "{sign_in:?}");
    // A 2 MiB string where a job id goes.
    let mut huge = vec![0x0a, 0x80, 0x80, 0x80, 0x01];
    huge.resize(huge.len() + (2 << 20), b'a');
    let oversized = raw("/presswork.v1.JobService/GetJob", huge).await;
    assert_eq!(oversized.code(), Code::ResourceExhausted, "{oversized:?}");
    // The server is fine afterwards.
    let job = cluster.submit("demo-fast", &[]).await;
    assert_eq!(cluster.get_job(&job.id).await.id, job.id);
}

/// Sends and receives message bodies as raw bytes.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use prost::bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}
