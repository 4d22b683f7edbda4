//! Authentication and role-based access over real gRPC (BR-001): the role × method matrix,
//! every kind of bad token, cancels by non-administrators refused while the job keeps running,
//! worker and user credentials kept apart, disabled accounts, sign-in rate limits (per address,
//! and per user and address, behind a trusted proxy too), tokens ended by a new password, and
//! no secret in any log.

use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use presswork_proto::v1::auth_service_client::AuthServiceClient;
use presswork_proto::v1::worker_service_client::WorkerServiceClient;
use presswork_proto::v1::{
    CancelJobRequest, ConnectRequest, GetJobLogRequest, GetJobRequest, Hello, JobStatus,
    ListJobsRequest, LoginRequest, Stage, SubmitJobRequest, WatchJobLogRequest, WatchJobsRequest,
    WhoAmIRequest, connect_request,
};
use presswork_tests::cluster::{Bearer, Client, USERS};
use presswork_tests::{Cluster, WAIT};
use tonic::Code;

/// Calls method `method` as `client`; returns the status code (Ok for success). Stream
/// methods count as allowed once the stream opened and yielded its first item or ended.
async fn call(client: &mut Client, method: &str, job_id: &str) -> Code {
    let id = job_id.to_string();
    let result = match method {
        "GetJob" => client
            .get_job(GetJobRequest { job_id: id })
            .await
            .map(|_| ()),
        "ListJobs" => client
            .list_jobs(ListJobsRequest::default())
            .await
            .map(|_| ()),
        "GetJobLog" => client
            .get_job_log(GetJobLogRequest {
                job_id: id,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        "WatchJobs" => match client.watch_jobs(WatchJobsRequest::default()).await {
            Ok(stream) => stream.into_inner().next().await.transpose().map(|_| ()),
            Err(status) => Err(status),
        },
        "WatchJobLog" => match client
            .watch_job_log(WatchJobLogRequest {
                job_id: id,
                after_id: 0,
            })
            .await
        {
            Ok(stream) => stream.into_inner().next().await.transpose().map(|_| ()),
            Err(status) => Err(status),
        },
        "SubmitJob" => client
            .submit_job(SubmitJobRequest {
                report: "demo-fast".into(),
                params: Default::default(),
            })
            .await
            .map(|_| ()),
        "CancelJob" => client
            .cancel_job(CancelJobRequest {
                job_id: id,
                reason: "matrix".into(),
            })
            .await
            .map(|_| ()),
        other => panic!("no such method {other}"),
    };
    result.err().map_or(Code::Ok, |s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_gets_exactly_its_methods() {
    let cluster = Cluster::builder().workers(0).start().await;
    // A queued job each role's cancel can try (workers: 0, so it stays queued).
    let matrix = [
        ("GetJob", ["ada", "otto", "vera"].as_slice(), [].as_slice()),
        ("ListJobs", &["ada", "otto", "vera"], &[]),
        ("GetJobLog", &["ada", "otto", "vera"], &[]),
        ("WatchJobs", &["ada", "otto", "vera"], &[]),
        ("WatchJobLog", &["ada", "otto", "vera"], &[]),
        ("SubmitJob", &["ada", "otto"], &["vera"]),
        ("CancelJob", &["ada"], &["otto", "vera"]),
    ];
    for (method, allowed, denied) in matrix {
        for user in allowed.iter().chain(denied.iter()) {
            let job = cluster.submit("demo-fast", &[]).await;
            let mut client = cluster.client_as(user);
            let code = call(&mut client, method, &job.id).await;
            if allowed.contains(user) {
                assert_eq!(code, Code::Ok, "{user} may call {method}");
            } else {
                assert_eq!(code, Code::PermissionDenied, "{user} may not call {method}");
            }
            // Unauthenticated: every method refuses a call without a token.
            let mut anonymous = cluster.client_with(Bearer::default());
            assert_eq!(
                call(&mut anonymous, method, &job.id).await,
                Code::Unauthenticated,
                "{method} without a token"
            );
        }
    }
    for (user, _, role) in USERS {
        let who = AuthServiceClient::with_interceptor(
            cluster.channel(),
            Bearer::token(cluster.token(user)),
        )
        .who_am_i(WhoAmIRequest {})
        .await
        .expect("WhoAmI with a valid token")
        .into_inner();
        let me = who.user.expect("a user");
        assert_eq!(me.username, user);
        assert_eq!(
            presswork_proto::v1::Role::try_from(me.role)
                .unwrap()
                .as_str_name(),
            format!("ROLE_{}", role.to_uppercase())
        );
        assert!(who.token_expires_at_unix_ms > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthenticated() {
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--token-ttl", "1"])
        .start()
        .await;
    let valid = cluster
        .login("ada", "ada-administrator-pw")
        .await
        .expect("sign in");
    let (header, rest) = valid.split_once('.').expect("a JWT");
    let (payload, signature) = rest.split_once('.').expect("a JWT");
    let mut tampered_signature = signature.to_string();
    let last = tampered_signature.pop().expect("a signature");
    tampered_signature.push(if last == 'A' { 'B' } else { 'A' });
    // {"alg":"none","typ":"JWT"}
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let bad = [
        ("malformed", "not-a-token".to_string()),
        (
            "wrongly signed",
            format!("{header}.{payload}.{tampered_signature}"),
        ),
        ("alg none", alg_none),
        (
            "another server's worker credential",
            "wt-00000000000000000000000000000000".to_string(),
        ),
        (
            "this cluster's worker credential",
            cluster.worker_token().to_string(),
        ),
    ];
    for (what, token) in bad {
        let mut client = cluster.client_with(Bearer::token(&token));
        let status = client
            .list_jobs(ListJobsRequest::default())
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(!status.message().is_empty());
    }
    let mut wrong_scheme =
        cluster.client_with(Bearer(Some(format!("Basic {valid}").parse().unwrap())));
    assert_eq!(
        wrong_scheme
            .list_jobs(ListJobsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // Expired: the token lives one second. Wait for the expiry (bounded), then it is refused.
    let mut client = cluster.client_with(Bearer::token(&valid));
    let expired = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(status) = client.list_jobs(ListJobsRequest::default()).await {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("a one-second token expires within 10 s");
    assert_eq!(expired.code(), Code::Unauthenticated);
    assert!(expired.message().contains("expired"), "{expired:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_administrator_cancels_and_the_log_names_them() {
    let cluster = Cluster::builder().workers(1).start().await;
    let job = cluster
        .submit(
            "demo-slow",
            &[("slow_stage", "transform"), ("duration_ms", "60000")],
        )
        .await;
    cluster
        .wait_for_job(&job.id, "running in transform", WAIT, |j| {
            j.status() == JobStatus::Running && j.stage() == Stage::Transform
        })
        .await;
    for user in ["otto", "vera"] {
        let status = cluster
            .client_as(user)
            .cancel_job(CancelJobRequest {
                job_id: job.id.clone(),
                reason: format!("{user} tries"),
            })
            .await
            .expect_err("a non-administrator's cancel is refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{user}: {status:?}");
        assert!(
            status
                .message()
                .contains("Only administrators may cancel jobs"),
            "{status:?}"
        );
    }
    let still = cluster.get_job(&job.id).await;
    assert_eq!(
        still.status(),
        JobStatus::Running,
        "refused cancels leave the job running"
    );
    assert!(
        still.cancel.is_none(),
        "refused cancels record nothing on the job"
    );
    assert!(
        !cluster
            .job_log(&job.id)
            .await
            .iter()
            .any(|e| e.event.starts_with("cancel."))
    );

    cluster
        .client_as("ada")
        .cancel_job(CancelJobRequest {
            job_id: job.id.clone(),
            reason: "ada stops it".into(),
        })
        .await
        .expect("ada cancels");
    let done = cluster.wait_for_status(&job.id, JobStatus::Cancelled).await;
    assert_eq!(done.cancel.expect("cancel recorded").requested_by, "ada");
    let log = cluster.job_log(&job.id).await;
    let requested = log
        .iter()
        .find(|e| e.event == "cancel.requested")
        .expect("cancel.requested");
    assert_eq!(requested.actor, "ada");
    assert!(requested.message.contains("ada"));
    let cancelled = log
        .iter()
        .find(|e| e.event == "job.cancelled")
        .expect("job.cancelled");
    assert_eq!(cancelled.actor, "ada");
    let submitted = log
        .iter()
        .find(|e| e.event == "job.submitted")
        .expect("job.submitted");
    assert_eq!(
        submitted.actor, "ada",
        "the submitter is the signed-in user, never client-supplied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_user_credentials_are_kept_apart() {
    let cluster = Cluster::builder().workers(0).start().await;
    let hello = ConnectRequest {
        msg: Some(connect_request::Msg::Hello(Hello {
            worker_id: "intruder".into(),
            name: "intruder".into(),
            capacity: 1,
            reports: vec!["demo-fast".into()],
            known: vec![],
            ..Default::default()
        })),
    };
    for (what, bearer) in [
        (
            "an administrator's token",
            Bearer::token(cluster.token("ada")),
        ),
        ("no credential", Bearer::default()),
        (
            "a wrong worker credential",
            Bearer::token("wt-not-the-right-one-0000000000"),
        ),
    ] {
        let mut worker = WorkerServiceClient::with_interceptor(cluster.channel(), bearer);
        let status = worker
            .connect(futures::stream::iter(vec![hello.clone()]))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
    }
    // The right worker credential opens the stream.
    let mut worker = WorkerServiceClient::with_interceptor(
        cluster.channel(),
        Bearer::token(cluster.worker_token()),
    );
    let mut stream = worker
        .connect(futures::stream::iter(vec![hello]).chain(futures::stream::pending()))
        .await
        .expect("a worker credential opens WorkerService.Connect")
        .into_inner();
    let welcome = stream
        .next()
        .await
        .expect("a first message")
        .expect("no error");
    assert!(matches!(
        welcome.msg,
        Some(presswork_proto::v1::connect_response::Msg::Welcome(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_users_and_changed_roles_take_effect_at_once() {
    let cluster = Cluster::builder().workers(0).start().await;
    let job = cluster.submit("demo-fast", &[]).await;
    let (status, stdout, _) = cluster.admin_command(&["users", "list"], "");
    assert!(status.success());
    for (user, _, role) in USERS {
        assert!(
            stdout.lines().any(|l| l.contains(user) && l.contains(role)),
            "{stdout}"
        );
    }

    let (status, _, stderr) = cluster.admin_command(
        &[
            "users",
            "set-role",
            "--username",
            "vera",
            "--role",
            "administrator",
        ],
        "",
    );
    assert!(status.success(), "{stderr}");
    let mut vera = cluster.client_as("vera");
    vera.cancel_job(CancelJobRequest {
        job_id: job.id.clone(),
        reason: String::new(),
    })
    .await
    .expect("vera is an administrator now, with the same token");

    let (status, _, stderr) =
        cluster.admin_command(&["users", "disable", "--username", "vera"], "");
    assert!(status.success(), "{stderr}");
    let refused = vera
        .list_jobs(ListJobsRequest::default())
        .await
        .expect_err("a disabled user's token stops working");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let login = cluster
        .login("vera", "vera-viewer-pw")
        .await
        .expect_err("a disabled user cannot sign in");
    assert_eq!(login.code(), Code::Unauthenticated);

    // Adding a user that exists, or with a bad role or short password, fails with a message.
    let (status, _, stderr) = cluster.admin_command(
        &["users", "add", "--username", "ada", "--role", "viewer"],
        "another-password\n",
    );
    assert!(
        !status.success() && stderr.contains("already exists"),
        "{stderr}"
    );
    let (status, _, stderr) = cluster.admin_command(
        &["users", "add", "--username", "zed", "--role", "root"],
        "zed-password\n",
    );
    assert!(
        !status.success() && stderr.contains("unknown role"),
        "{stderr}"
    );
    let (status, _, stderr) = cluster.admin_command(
        &["users", "add", "--username", "zed", "--role", "viewer"],
        "short\n",
    );
    assert!(
        !status.success() && stderr.contains("at least 8"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_rate_limited_and_secrets_never_reach_the_logs() {
    let cluster = Cluster::builder().workers(1).start().await;
    let mut auth = AuthServiceClient::new(cluster.channel());
    let mut codes = Vec::new();
    for _ in 0..12 {
        let result = auth
            .login(LoginRequest {
                username: "otto".into(),
                password: "not-otto-pw".into(),
            })
            .await;
        codes.push(result.expect_err("wrong password").code());
    }
    assert_eq!(codes[0], Code::Unauthenticated);
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
    let unknown = auth
        .login(LoginRequest {
            username: "nobody".into(),
            password: "whatever-pw".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        unknown.code(),
        Code::Unauthenticated,
        "an unknown user gets the same answer as a wrong password"
    );

    // A full run: a job that succeeds and one that is cancelled, then read every log.
    let fast = cluster.submit("demo-fast", &[]).await;
    cluster
        .wait_for_status(&fast.id, JobStatus::Succeeded)
        .await;
    let slow = cluster.submit("demo-slow", &[]).await;
    cluster
        .wait_for_job(&slow.id, "running", WAIT, |j| {
            j.status() == JobStatus::Running
        })
        .await;
    cluster
        .cancel(&slow.id, "secret check")
        .await
        .expect("an administrator cancels");
    cluster
        .wait_for_status(&slow.id, JobStatus::Cancelled)
        .await;

    let mut secrets: Vec<String> = USERS
        .iter()
        .map(|(_, password, _)| password.to_string())
        .collect();
    secrets.extend(
        USERS
            .iter()
            .map(|(user, _, _)| cluster.token(user).to_string()),
    );
    secrets.push(cluster.worker_token().to_string());
    secrets.push("not-otto-pw".into());
    let mut logs = 0;
    for entry in std::fs::read_dir(cluster.dir()).expect("cluster dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            logs += 1;
            let text = std::fs::read_to_string(&path).expect("read a log");
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "{} contains a secret",
                    path.display()
                );
            }
        }
    }
    assert!(
        logs >= 2,
        "the control plane's and the worker's logs were read"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_carries_workers_and_clients_and_refuses_plaintext() {
    let cluster = Cluster::builder().workers(1).tls().start().await;
    assert!(cluster.url().starts_with("https://"));
    // Starting waited for the worker to take a job over TLS; a client call works too.
    let job = cluster.submit("demo-fast", &[]).await;
    assert_eq!(
        cluster
            .wait_for_status(&job.id, JobStatus::Succeeded)
            .await
            .status(),
        JobStatus::Succeeded
    );

    let plaintext =
        tonic::transport::Endpoint::from_shared(cluster.url().replace("https://", "http://"))
            .expect("url")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
    let refused = AuthServiceClient::new(plaintext)
        .login(LoginRequest {
            username: "ada".into(),
            password: "ada-administrator-pw".into(),
        })
        .await
        .expect_err("plaintext to a TLS port is refused");
    assert_ne!(refused.code(), Code::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_without_tls_is_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut child = tokio::process::Command::new(presswork_tests::process::binary_path(
        presswork_tests::cluster::CONTROL_PLANE_BINARY,
    ))
    .args(["--listen", "0.0.0.0:0", "--database", &database])
    .env_clear()
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .expect("start the control plane");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let warned = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("without TLS") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let _ = child.kill().await;
    assert!(
        warned,
        "a control plane on 0.0.0.0 without TLS warns at start"
    );
}

/// Signs in over a connection from the local address `from` (any 127.x.y.z reaches the
/// control plane on loopback), sending `X-Forwarded-For: forwarded` when given.
async fn login_from(
    cluster: &Cluster,
    from: &str,
    forwarded: Option<&str>,
    user: &str,
    password: &str,
) -> Result<String, tonic::Status> {
    let from: IpAddr = from.parse().expect("an address");
    let channel = tonic::transport::Endpoint::from_shared(cluster.url())
        .expect("url")
        .local_address(Some(from))
        .connect_timeout(Duration::from_secs(5))
        .timeout(WAIT)
        .connect_lazy();
    let mut request = tonic::Request::new(LoginRequest {
        username: user.into(),
        password: password.into(),
    });
    if let Some(forwarded) = forwarded {
        request
            .metadata_mut()
            .insert("x-forwarded-for", forwarded.parse().expect("ascii"));
    }
    AuthServiceClient::new(channel)
        .login(request)
        .await
        .map(|r| r.into_inner().token)
}

/// Wrong passwords for `ada` from `from` until the answer is RESOURCE_EXHAUSTED (at most 12);
/// `forwarded(n)` is the n-th call's `X-Forwarded-For`. Returns the codes seen.
async fn fail_until_refused(
    cluster: &Cluster,
    from: &str,
    forwarded: impl Fn(usize) -> Option<String>,
) -> Vec<Code> {
    let mut codes = Vec::new();
    for n in 0..12 {
        let code = login_from(cluster, from, forwarded(n).as_deref(), "ada", "not-ada-pw")
            .await
            .expect_err("a wrong password")
            .code();
        codes.push(code);
        if code == Code::ResourceExhausted {
            break;
        }
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_address_do_not_lock_the_user_out_elsewhere() {
    let cluster = Cluster::builder().workers(0).start().await;
    // The attacker, on 127.0.0.2, forges a different X-Forwarded-For on every call: with no
    // trusted proxy the header is ignored, and the failures count against 127.0.0.2.
    let codes = fail_until_refused(&cluster, "127.0.0.2", |n| {
        Some(format!("203.0.113.{}", n + 1))
    })
    .await;
    assert_eq!(codes.first(), Some(&Code::Unauthenticated), "{codes:?}");
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
    let refused = login_from(
        &cluster,
        "127.0.0.2",
        Some("198.51.100.9"),
        "ada",
        "ada-administrator-pw",
    )
    .await
    .expect_err("the attacker's address is refused, right password or not");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // ada, from another address, signs in.
    login_from(&cluster, "127.0.0.3", None, "ada", "ada-administrator-pw")
        .await
        .expect("ada signs in from another address");
    // Another user from the attacker's address is not locked either.
    login_from(&cluster, "127.0.0.2", None, "otto", "otto-operator-pw")
        .await
        .expect("otto signs in from 127.0.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_failures_count_per_forwarded_client() {
    let cluster = Cluster::builder()
        .workers(0)
        .control_plane_args(&["--trusted-proxy", "127.0.0.1/32"])
        .start()
        .await;
    // Through the proxy (127.0.0.1): the attacker is 203.0.113.7.
    let codes = fail_until_refused(&cluster, "127.0.0.1", |_| Some("203.0.113.7".into())).await;
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
    login_from(
        &cluster,
        "127.0.0.1",
        Some("198.51.100.9"),
        "ada",
        "ada-administrator-pw",
    )
    .await
    .expect("ada signs in through the same proxy from another client address");
    // The attacker cannot escape by putting another address in front: the proxy's entry (the
    // right-most) names the client.
    for forwarded in ["203.0.113.7", "198.51.100.9, 203.0.113.7"] {
        let refused = login_from(
            &cluster,
            "127.0.0.1",
            Some(forwarded),
            "ada",
            "ada-administrator-pw",
        )
        .await
        .expect_err("the attacker's client address is refused");
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{forwarded}: {refused:?}"
        );
    }
    // A peer that is not a trusted proxy (127.0.0.2) is not believed, whatever it forwards.
    let codes = fail_until_refused(&cluster, "127.0.0.2", |n| {
        Some(format!("192.0.2.{}", n + 1))
    })
    .await;
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_sign_in_names_are_refused_before_anything_is_kept() {
    let cluster = Cluster::builder().workers(0).start().await;
    let mut auth = AuthServiceClient::new(cluster.channel());
    // A sign-in request is at most 16 KiB: a 1 MB name is refused before it is even decoded.
    let huge = auth
        .login(LoginRequest {
            username: "n".repeat(1 << 20),
            password: "whatever-pw".to_string(),
        })
        .await
        .expect_err("a 1 MB name");
    assert_eq!(
        huge.code(),
        Code::ResourceExhausted,
        "a 1 MB name: {huge:?}"
    );
    for (what, username, password) in [
        (
            "a 10 KB name",
            "n".repeat(10_000),
            "whatever-pw".to_string(),
        ),
        (
            "a 257-byte name",
            "n".repeat(257),
            "whatever-pw".to_string(),
        ),
        ("a 1025-byte password", "ada".to_string(), "p".repeat(1025)),
    ] {
        let status = auth
            .login(LoginRequest { username, password })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().contains("at most"), "{what}: {status:?}");
    }
    // Distinct long names, far more than an address may try in a minute: each is refused as
    // an invalid argument (none reaches the rate limiter), and sign-in still works.
    for n in 0..100 {
        let status = auth
            .login(LoginRequest {
                username: format!("{n}{}", "x".repeat(4096)),
                password: "whatever-pw".into(),
            })
            .await
            .expect_err("an overlong name");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    cluster
        .login("ada", "ada-administrator-pw")
        .await
        .expect("ada signs in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_password_ends_the_tokens_issued_before() {
    let cluster = Cluster::builder().workers(0).start().await;
    let old = cluster
        .login("otto", "otto-operator-pw")
        .await
        .expect("otto signs in");
    let mut client = cluster.client_with(Bearer::token(&old));
    client
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("the token works");

    let (status, stdout, stderr) = cluster.admin_command(
        &["users", "set-password", "--username", "otto"],
        "otto-new-password\n",
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("changed"), "{stdout}");
    let refused = client
        .list_jobs(ListJobsRequest::default())
        .await
        .expect_err("a token from before the new password is refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("password was changed")
            && refused.message().contains("sign in again"),
        "{refused:?}"
    );
    let old_password = cluster
        .login("otto", "otto-operator-pw")
        .await
        .expect_err("the old password is refused");
    assert_eq!(old_password.code(), Code::Unauthenticated);
    let new = cluster
        .login("otto", "otto-new-password")
        .await
        .expect("otto signs in with the new password");
    let mut client = cluster.client_with(Bearer::token(&new));
    client
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("the new token works");

    // Disabling and enabling again also ends earlier tokens.
    for command in ["disable", "enable"] {
        let (status, _, stderr) =
            cluster.admin_command(&["users", command, "--username", "otto"], "");
        assert!(status.success(), "{command}: {stderr}");
    }
    let refused = client
        .list_jobs(ListJobsRequest::default())
        .await
        .expect_err("a token from before the account was disabled stays refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    // Others' tokens are untouched.
    cluster
        .client_as("vera")
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("vera's token still works");
}
