//! The worker's health service (`--health-listen`), which container health checks and
//! Kubernetes probes use: "" answers SERVING while the process runs; "presswork.worker" only
//! while the worker is connected to its control plane, NOT_SERVING while it reconnects, and
//! the port closes when the worker exits.

use std::process::Stdio;
use std::time::Duration;

use presswork_tests::cluster::WORKER_BINARY;
use presswork_tests::process::binary_path;
use presswork_tests::{Cluster, WAIT};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The status of `service` at `addr`, or None when nothing answers.
async fn status(addr: &str, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status())
}

/// Waits (up to WAIT) until `service` at `addr` reports `want` (None: nothing answers).
async fn wait_for(addr: &str, service: &str, want: Option<ServingStatus>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = status(addr, service).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health of {service:?} at {addr} stayed {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn worker_health_follows_its_connection_to_the_control_plane() {
    let mut cluster = Cluster::builder().workers(0).start().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = free.local_addr().expect("address").to_string();
    drop(free);
    let mut worker = tokio::process::Command::new(binary_path(WORKER_BINARY))
        .args(["--control-plane", &cluster.url(), "--health-listen", &addr])
        .arg("--output-dir")
        .arg(cluster.dir().join("health-out"))
        .env("PRESSWORK_WORKER_TOKEN", cluster.worker_token())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a worker");

    wait_for(&addr, "presswork.worker", Some(ServingStatus::Serving)).await;
    assert_eq!(status(&addr, "").await, Some(ServingStatus::Serving));

    // Control plane gone: not ready, still alive (a liveness probe must not restart it).
    cluster.kill_control_plane();
    wait_for(&addr, "presswork.worker", Some(ServingStatus::NotServing)).await;
    assert_eq!(status(&addr, "").await, Some(ServingStatus::Serving));

    cluster.restart_control_plane().await;
    wait_for(&addr, "presswork.worker", Some(ServingStatus::Serving)).await;

    // SIGTERM: the worker drains, exits, and the health port closes with it.
    let pid = nix::unistd::Pid::from_raw(worker.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let exit = tokio::time::timeout(WAIT, worker.wait())
        .await
        .expect("the worker exits after SIGTERM")
        .expect("exit status");
    assert!(exit.success(), "worker exit: {exit:?}");
    wait_for(&addr, "", None).await;
}
