//! A worker given several control-plane addresses (`--control-plane URL,URL`) uses one that
//! answers, and moves on to the next when the one it uses goes away, wrapping around.

use std::process::Stdio;

use presswork_proto::v1::JobStatus;
use presswork_tests::cluster::WORKER_BINARY;
use presswork_tests::process::binary_path;
use presswork_tests::{Cluster, LONG_WAIT};

/// A loopback URL nothing listens on (a port just freed).
fn dead_url() -> String {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let url = format!("http://{}", free.local_addr().expect("address"));
    drop(free);
    url
}

fn start_worker(cluster: &Cluster, control_planes: &str, name: &str) -> tokio::process::Child {
    tokio::process::Command::new(binary_path(WORKER_BINARY))
        .args(["--control-plane", control_planes, "--name", name])
        .arg("--output-dir")
        .arg(cluster.dir().join(format!("{name}-out")))
        .env("PRESSWORK_WORKER_TOKEN", cluster.worker_token())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start a worker")
}

#[tokio::test]
async fn a_worker_skips_an_unreachable_control_plane_and_comes_back_around() {
    let mut cluster = Cluster::builder().workers(0).start().await;
    // The first address is dead: the worker must move on to the second.
    let _worker = start_worker(
        &cluster,
        &format!("{},{}", dead_url(), cluster.url()),
        "failover",
    );
    let job = cluster.submit("demo-fast", &[]).await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{done:?}");
    assert!(!done.worker_id.is_empty());

    // The control plane it uses goes away and comes back: the worker tries the dead address
    // again, then wraps around to this one and takes jobs again.
    cluster.kill_control_plane();
    cluster.restart_control_plane().await;
    let job = cluster.submit("demo-fast", &[]).await;
    let done = cluster.wait_for_terminal(&job.id, LONG_WAIT).await;
    assert_eq!(done.status(), JobStatus::Succeeded, "{done:?}");
}
