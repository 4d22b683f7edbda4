//! Any gRPC client can find its way: the standard health service answers SERVING, server
//! reflection (v1 and v1alpha) lists the Presswork services and serves their descriptors, and
//! the `presswork` CLI drives the same API.

use presswork_proto::v1::JobStatus;
use presswork_tests::cluster::CLI_BINARY;
use presswork_tests::process::binary_path;
use presswork_tests::{Cluster, NOT_CANCELLABLE};
use prost::Message;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const SERVICES: [&str; 3] = [
    "presswork.v1.JobService",
    "presswork.v1.WorkerService",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn health_answers_serving() {
    let cluster = Cluster::builder().workers(0).start().await;
    let mut health = HealthClient::new(cluster.channel());
    for service in ["", "presswork.v1.JobService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("Health.Check({service:?}) failed: {e:?}"))
            .into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
}

/// Lists services and fetches the file that defines `presswork.v1.JobService` with one
/// version of the reflection protocol; returns the service names and the descriptor.
macro_rules! reflect {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("presswork.v1.JobService".to_owned()),
        ]
        .map(|message_request| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message_request),
        });
        let mut answers = ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap_or_else(|e| panic!("{} reflection failed: {e:?}", stringify!($version)))
            .into_inner();
        let mut services = Vec::new();
        let mut files = Vec::new();
        while let Some(answer) = answers.message().await.expect("a reflection answer") {
            match answer.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    services.extend(list.service.into_iter().map(|s| s.name))
                }
                Some(MessageResponse::FileDescriptorResponse(found)) => {
                    files.extend(found.file_descriptor_proto)
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
        (services, files)
    }};
}

fn assert_reflection(version: &str, services: &[String], files: &[Vec<u8>]) {
    for expected in SERVICES {
        assert!(
            services.iter().any(|s| s == expected),
            "{version} reflection does not list {expected}: {services:?}"
        );
    }
    let job_service = files
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a file descriptor")
        })
        .flat_map(|file| file.service)
        .find(|service| service.name() == "JobService")
        .unwrap_or_else(|| panic!("{version} reflection gave no file defining JobService"));
    let methods: Vec<&str> = job_service.method.iter().map(|m| m.name()).collect();
    assert!(
        methods.contains(&"CancelJob"),
        "{version}: JobService methods {methods:?}"
    );
}

#[tokio::test]
async fn reflection_lists_and_describes_the_services() {
    let cluster = Cluster::builder().workers(0).start().await;
    let (services, files) = reflect!(v1, cluster.channel());
    assert_reflection("v1", &services, &files);
    let (services, files) = reflect!(v1alpha, cluster.channel());
    assert_reflection("v1alpha", &services, &files);
}

/// Runs `presswork --server URL ARGS…` and returns (exit code, stdout, stderr).
async fn presswork(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(binary_path(CLI_BINARY))
        .arg("--server")
        .arg(cluster.url())
        .args(args)
        .env_remove("PRESSWORK_SERVER")
        .env("PRESSWORK_TOKEN", cluster.token("ada"))
        .output()
        .await
        .expect("run the presswork CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_submits_shows_and_refuses_to_cancel_a_finished_job() {
    let cluster = Cluster::builder().workers(1).start().await;

    let (code, stdout, stderr) =
        presswork(&cluster, &["jobs", "submit", "--report", "demo-fast"]).await;
    assert_eq!(code, 0, "jobs submit: {stderr}");
    let id = stdout.trim().to_owned();
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "jobs submit printed {stdout:?}"
    );
    let job = cluster.get_job(&id).await;
    assert_eq!(job.report, "demo-fast");
    cluster.wait_for_status(&id, JobStatus::Succeeded).await;

    let (code, stdout, stderr) = presswork(&cluster, &["jobs", "get", &id, "--json"]).await;
    assert_eq!(code, 0, "jobs get: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("jobs get --json printed no JSON ({e}): {stdout}"));
    let status = json["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no \"status\" in {json}"));
    assert!(
        status.eq_ignore_ascii_case("SUCCEEDED"),
        "status {status:?} in {json}"
    );

    let (code, stdout, stderr) = presswork(&cluster, &["jobs", "cancel", &id]).await;
    assert_ne!(code, 0, "cancelling a finished job must fail: {stdout}");
    assert_eq!(
        code, 4,
        "the documented exit code of a failed precondition: {stderr}"
    );
    assert!(
        stderr.contains(NOT_CANCELLABLE),
        "jobs cancel said: {stderr}"
    );
}

/// `presswork health` (the containers' health check) needs no sign-in: SERVING and exit 0
/// from a running control plane; exit 5 with what to do when none answers.
#[tokio::test]
async fn the_cli_health_check_needs_no_sign_in() {
    let cluster = Cluster::builder().workers(0).start().await;
    let run = |server: String, args: &'static [&'static str]| async move {
        let output = tokio::process::Command::new(binary_path(CLI_BINARY))
            .arg("--server")
            .arg(server)
            .args(args)
            .env_remove("PRESSWORK_SERVER")
            .env_remove("PRESSWORK_TOKEN")
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .output()
            .await
            .expect("run the presswork CLI");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(cluster.url(), &["health"]).await;
    assert_eq!((code, stdout.trim()), (0, "SERVING"), "stderr: {stderr}");
    let (code, stdout, stderr) = run(
        cluster.url(),
        &["--json", "health", "--service", "presswork.v1.JobService"],
    )
    .await;
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains(r#""status": "SERVING""#), "{stdout}");
    let (code, _, stderr) = run(cluster.url(), &["health", "--service", "no.such.Service"]).await;
    assert_ne!(code, 0, "an unknown service is not healthy");
    assert!(
        stderr.contains("no.such.Service") || stderr.contains("not found"),
        "{stderr}"
    );

    // Nobody listens on a port just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let (code, _, stderr) = run(dead, &["health"]).await;
    assert_eq!(code, 5, "unreachable: {stderr}");
    assert!(
        stderr.contains("cannot reach the control plane"),
        "{stderr}"
    );
}
