//! A control plane and its workers, started as real processes on loopback for one test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use presswork_proto::v1::auth_service_client::AuthServiceClient;
use presswork_proto::v1::job_service_client::JobServiceClient;
use presswork_proto::v1::{
    CancelJobRequest, CancelJobResponse, CancelOutcome, GetJobLogRequest, GetJobRequest, Job,
    JobStatus, ListJobsRequest, LogEntry, LoginRequest, SubmitJobRequest,
};
use tempfile::TempDir;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::database::{Backend, TestDatabase};
use crate::process::{Process, binary_path, forward_stdout, log_tail};

pub const CONTROL_PLANE_BINARY: &str = "presswork-control-plane";
pub const WORKER_BINARY: &str = "presswork-worker";
pub const CLI_BINARY: &str = "presswork";

/// What the control plane prints on stdout once it serves.
const LISTENING: &str = "presswork-control-plane listening on ";
/// How long a control plane may take to start serving.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restarted control plane keeps retrying to bind the port it had.
const REBIND_TIMEOUT: Duration = Duration::from_secs(15);
/// Lines of each process's log printed when a test fails.
const TAIL_LINES: usize = 40;

/// The users every cluster has, by role: (username, password, role).
pub const USERS: [(&str, &str, &str); 3] = [
    ("ada", "ada-administrator-pw", "administrator"),
    ("otto", "otto-operator-pw", "operator"),
    ("vera", "vera-viewer-pw", "viewer"),
];

/// A `JobService` client that signs its calls with a user's token.
pub type Client = JobServiceClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call (or nothing, for unauthenticated tests).
#[derive(Clone, Debug, Default)]
pub struct Bearer(pub Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn token(token: &str) -> Self {
        Bearer(Some(
            format!("Bearer {token}")
                .parse()
                .expect("a token is header-safe"),
        ))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Starts a [`Cluster`]: `Cluster::builder().workers(2).capacity(4).start().await`.
#[derive(Clone, Debug)]
pub struct ClusterBuilder {
    workers: usize,
    /// Control-plane replicas sharing the database (more than one needs PostgreSQL).
    replicas: usize,
    capacity: u32,
    cancel_timeout: Duration,
    worker_lease: Duration,
    test_reports: bool,
    backend: Backend,
    /// More flags for the control plane.
    control_plane_args: Vec<String>,
    /// More flags for every worker.
    worker_args: Vec<String>,
    /// Serve (and connect) over TLS with a certificate made for the test.
    tls: bool,
    /// Listen on every address, not only loopback (for workers in a network namespace).
    listen_on_all_addresses: bool,
    /// Workers may read and write under the cluster's directory and reach loopback over HTTP
    /// (`--data-dir`, `--allow-dirs`, `--allow-hosts`); off: the worker's own closed defaults.
    open_reach: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            workers: 1,
            replicas: 1,
            capacity: 1,
            cancel_timeout: Duration::from_secs(30),
            worker_lease: Duration::from_secs(10),
            test_reports: false,
            backend: Backend::Sqlite,
            control_plane_args: Vec::new(),
            worker_args: Vec::new(),
            tls: false,
            listen_on_all_addresses: false,
            open_reach: true,
        }
    }
}

impl ClusterBuilder {
    /// Workers started with the cluster (default 1; 0 is allowed).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Control-plane replicas on the one database (default 1; more need
    /// `.backend(Backend::Postgres)`). Worker `i` is placed on replica `i % replicas`: its
    /// `--control-plane` list starts with that replica's URL, then the others'.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// Jobs each worker runs at once (default 1).
    pub fn capacity(mut self, capacity: u32) -> Self {
        self.capacity = capacity;
        self
    }

    /// The control plane's `--cancel-timeout` (default 30 s, the story's figure).
    pub fn cancel_timeout(mut self, timeout: Duration) -> Self {
        self.cancel_timeout = timeout;
        self
    }

    /// The control plane's `--worker-lease` (default 10 s).
    pub fn worker_lease(mut self, lease: Duration) -> Self {
        self.worker_lease = lease;
        self
    }

    /// Starts workers with `--enable-test-reports` (needed for `demo-stuck`).
    pub fn test_reports(mut self) -> Self {
        self.test_reports = true;
        self
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Passes more flags to the control plane (e.g. `["--token-ttl", "1"]`).
    pub fn control_plane_args(mut self, args: &[&str]) -> Self {
        self.control_plane_args
            .extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Passes more flags to every worker (e.g. `["--connector", "sales=/path/sales.py"]`).
    pub fn worker_args(mut self, args: &[&str]) -> Self {
        self.worker_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Serves gRPC over TLS with a self-signed certificate for 127.0.0.1 that workers and
    /// clients trust through `--tls-ca`.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Control planes listen on `0.0.0.0` instead of `127.0.0.1`, so a worker in a network
    /// namespace reaches them at the host's address on its veth pair (`Cluster::add_worker_in`).
    /// The test's clients still use loopback.
    pub fn listen_on_all_addresses(mut self) -> Self {
        self.listen_on_all_addresses = true;
        self
    }

    /// Workers keep their own defaults for what jobs may reach: no `--data-dir`, only
    /// `--output-dir` for files, only public addresses over HTTP. By default the cluster's
    /// workers may use its directory and loopback.
    pub fn closed_reach(mut self) -> Self {
        self.open_reach = false;
        self
    }

    /// Starts the control plane and the workers, and waits until every worker takes jobs.
    pub async fn start(self) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("presswork-test-")
            .tempdir()
            .expect("a temporary directory for the cluster");
        let root = dir.path().to_owned();
        assert!(
            self.replicas == 1 || self.backend == Backend::Postgres,
            "{} control-plane replicas need a shared database: add .backend(Backend::Postgres)",
            self.replicas
        );
        let database = TestDatabase::create(self.backend, &root).await;
        let mut cluster = Cluster {
            config: self,
            root,
            dir,
            database,
            replicas: Vec::new(),
            workers: Vec::new(),
            worker_replicas: Vec::new(),
            worker_namespaces: Vec::new(),
            worker_token: format!("wt-{}", uuid::Uuid::new_v4().simple()),
            tokens: HashMap::new(),
        };
        if cluster.config.tls {
            cluster.make_certificate();
        }
        cluster.add_users();
        for replica in 0..cluster.config.replicas {
            cluster.replicas.push(Replica::default());
            cluster.start_control_plane(replica, 0).await;
        }
        for (user, password, _) in USERS {
            let token = cluster
                .login(user, password)
                .await
                .expect("the test users can sign in");
            cluster.tokens.insert(user.to_string(), token);
        }
        for index in 0..cluster.config.workers {
            cluster.add_worker_on(index % cluster.config.replicas);
        }
        cluster.wait_for_workers().await;
        cluster
    }
}

/// One control-plane replica: its process (while it runs), its port and a channel to it.
#[derive(Default)]
struct Replica {
    process: Option<Process>,
    starts: usize,
    port: u16,
    channel: Option<Channel>,
}

/// A control plane (one or more replicas) on `127.0.0.1:<port>` and its workers, in a temporary directory that also
/// holds the SQLite database, each process's log and each worker's output directory.
///
/// Every process is killed and reaped on drop. When the test failed, the last lines of each
/// log are printed and the directory is kept.
pub struct Cluster {
    config: ClusterBuilder,
    root: PathBuf,
    dir: TempDir,
    database: TestDatabase,
    replicas: Vec<Replica>,
    workers: Vec<Option<Process>>,
    /// The replica each worker is placed on (first in its `--control-plane` list).
    worker_replicas: Vec<usize>,
    /// For a worker started in a network namespace: the namespace's name and the host's
    /// address on its veth pair.
    worker_namespaces: Vec<Option<(String, std::net::Ipv4Addr)>>,
    /// The credential workers present, and the control plane accepts.
    worker_token: String,
    /// Each test user's token, by username.
    tokens: HashMap<String, String>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The cluster's directory, for messages: logs and outputs are there.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    pub fn database_url(&self) -> &str {
        self.database.url()
    }

    /// `http://127.0.0.1:<port>` of the control plane (replica 0; `https://` with TLS).
    pub fn url(&self) -> String {
        self.replica_url(0)
    }

    /// The URL of control-plane replica `replica`.
    pub fn replica_url(&self, replica: usize) -> String {
        let scheme = if self.config.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.replicas[replica].port)
    }

    /// How many control-plane replicas the cluster has.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// The CA certificate (PEM) clients trust when the cluster serves TLS.
    pub fn tls_ca(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    fn make_certificate(&self) {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("generate a test certificate");
        std::fs::write(self.tls_ca(), certified.cert.pem()).expect("write the certificate");
        std::fs::write(
            self.root.join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .expect("write the key");
    }

    /// A channel to the control plane (replica 0); it reconnects by itself after a restart.
    pub fn channel(&self) -> Channel {
        self.channel_on(0)
    }

    /// A channel to replica `replica`; it reconnects by itself after a restart.
    pub fn channel_on(&self, replica: usize) -> Channel {
        self.replicas[replica]
            .channel
            .clone()
            .unwrap_or_else(|| panic!("control-plane replica {replica} was never started"))
    }

    /// A client of replica `replica`, signed in as the administrator `ada`.
    pub fn client_on(&self, replica: usize) -> Client {
        JobServiceClient::with_interceptor(
            self.channel_on(replica),
            Bearer::token(self.token("ada")),
        )
    }

    /// A client signed in as the administrator `ada`.
    pub fn client(&self) -> Client {
        self.client_as("ada")
    }

    /// A client signed in as one of [`USERS`].
    pub fn client_as(&self, user: &str) -> Client {
        let token = self
            .tokens
            .get(user)
            .unwrap_or_else(|| panic!("{user} is not a test user"));
        JobServiceClient::with_interceptor(self.channel(), Bearer::token(token))
    }

    /// A client that sends the given bearer value (or none): for tests of refused credentials.
    pub fn client_with(&self, bearer: Bearer) -> Client {
        JobServiceClient::with_interceptor(self.channel(), bearer)
    }

    /// The token of a test user.
    pub fn token(&self, user: &str) -> &str {
        self.tokens
            .get(user)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{user} is not a test user"))
    }

    /// The worker credential of this cluster.
    pub fn worker_token(&self) -> &str {
        &self.worker_token
    }

    /// Signs in over `AuthService.Login`.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, tonic::Status> {
        let response = AuthServiceClient::new(self.channel())
            .login(LoginRequest {
                username: user.into(),
                password: password.into(),
            })
            .await?;
        Ok(response.into_inner().token)
    }

    /// Runs `presswork-control-plane --database URL <args>` with `stdin`, as an administrator
    /// would; returns its exit status, stdout and stderr.
    pub fn admin_command(
        &self,
        args: &[&str],
        stdin: &str,
    ) -> (std::process::ExitStatus, String, String) {
        use std::io::Write;
        let mut child = std::process::Command::new(binary_path(CONTROL_PLANE_BINARY))
            .arg("--database")
            .arg(self.database.url())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start presswork-control-plane for an admin command");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write the password");
        let output = child.wait_with_output().expect("admin command finishes");
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into(),
            String::from_utf8_lossy(&output.stderr).into(),
        )
    }

    fn add_users(&self) {
        for (user, password, role) in USERS {
            let (status, _, stderr) = self.admin_command(
                &["users", "add", "--username", user, "--role", role],
                &format!("{password}\n"),
            );
            assert!(status.success(), "adding test user {user} failed: {stderr}");
        }
    }

    /// Worker `index`'s `--output-dir`.
    pub fn output_dir(&self, index: usize) -> PathBuf {
        self.root.join(format!("worker-{index}-output"))
    }

    /// Worker `index`'s `--work-dir`, where its jobs get their private work directories.
    pub fn work_dir(&self, index: usize) -> PathBuf {
        self.root.join(format!("worker-{index}-work"))
    }

    /// Workers whose process is running now.
    pub fn live_workers(&self) -> usize {
        self.workers.iter().filter(|w| w.is_some()).count()
    }

    /// Starts one more worker and returns its index. It does not wait for the worker to
    /// connect: the caller waits on a job it runs (or on [`Cluster::wait_for_workers`]).
    pub fn add_worker(&mut self) -> usize {
        self.add_worker_on(0)
    }

    /// Starts one more worker placed on replica `replica` (its `--control-plane` list starts
    /// with that replica's URL, then the others', so it moves on when that one goes away);
    /// returns its index. It does not wait for the worker to connect.
    pub fn add_worker_on(&mut self, replica: usize) -> usize {
        assert!(
            replica < self.replicas.len(),
            "there is no replica {replica}"
        );
        let index = self.workers.len();
        self.workers.push(None);
        self.worker_replicas.push(replica);
        self.worker_namespaces.push(None);
        self.start_worker(index);
        index
    }

    /// Starts one more worker inside `netns` (`ip netns exec`), connecting to the control
    /// plane (replica 0 first) at the host's address on the namespace's veth pair; returns its
    /// index. Needs `.listen_on_all_addresses()`. It logs at debug level, so a test can see in
    /// its log which outcomes were acknowledged. It does not wait for the worker to connect.
    pub fn add_worker_in(&mut self, netns: &crate::netns::NetworkNamespace) -> usize {
        assert!(
            self.config.listen_on_all_addresses,
            "a worker in a network namespace reaches the control plane through the host's veth address: build the cluster with .listen_on_all_addresses()"
        );
        let index = self.workers.len();
        self.workers.push(None);
        self.worker_replicas.push(0);
        self.worker_namespaces
            .push(Some((netns.name().to_owned(), netns.host_ip())));
        self.start_worker(index);
        index
    }

    /// Worker `index`'s log file (stdout and stderr).
    pub fn worker_log(&self, index: usize) -> PathBuf {
        self.root.join(format!("worker-{index}.log"))
    }

    /// The replica worker `index` was placed on.
    pub fn worker_replica(&self, index: usize) -> usize {
        self.worker_replicas[index]
    }

    /// SIGKILLs worker `index` (and reaps it), as a crashed host would vanish.
    pub fn kill_worker(&mut self, index: usize) {
        let mut worker = self.workers[index]
            .take()
            .unwrap_or_else(|| panic!("worker {index} is not running"));
        worker.kill();
    }

    /// Kills worker `index` if it runs, and starts it again with the same name and output
    /// directory.
    pub fn restart_worker(&mut self, index: usize) {
        if let Some(mut worker) = self.workers[index].take() {
            worker.kill();
        }
        self.start_worker(index);
    }

    /// Freezes worker `index` (SIGSTOP): its connection stays open but it handles nothing.
    pub fn pause_worker(&self, index: usize) {
        self.worker(index).signal(Signal::SIGSTOP);
    }

    /// Thaws a worker frozen by [`Cluster::pause_worker`] (SIGCONT).
    pub fn resume_worker(&self, index: usize) {
        self.worker(index).signal(Signal::SIGCONT);
    }

    /// The process id of worker `index` (to look at it in `/proc`).
    pub fn worker_pid(&self, index: usize) -> i32 {
        self.worker(index).pid().as_raw()
    }

    fn worker(&self, index: usize) -> &Process {
        self.workers[index]
            .as_ref()
            .unwrap_or_else(|| panic!("worker {index} is not running"))
    }

    fn start_worker(&mut self, index: usize) {
        let output_dir = self.output_dir(index);
        let work_dir = self.work_dir(index);
        for dir in [&output_dir, &work_dir] {
            std::fs::create_dir_all(dir).expect("create the worker's directories");
        }
        let name = format!("worker-{index}");
        let first = self.worker_replicas[index];
        let namespace = self.worker_namespaces[index].clone();
        let control_planes: Vec<String> = (0..self.replicas.len())
            .map(|i| {
                let replica = (first + i) % self.replicas.len();
                match &namespace {
                    Some((_, host)) => format!("http://{host}:{}", self.replicas[replica].port),
                    None => self.replica_url(replica),
                }
            })
            .collect();
        let mut args = vec![
            "--control-plane".to_owned(),
            control_planes.join(","),
            "--capacity".to_owned(),
            self.config.capacity.to_string(),
            "--output-dir".to_owned(),
            output_dir.display().to_string(),
            "--work-dir".to_owned(),
            work_dir.display().to_string(),
            "--name".to_owned(),
            name.clone(),
            "--token".to_owned(),
            self.worker_token.clone(),
        ];
        if self.config.tls {
            args.extend(["--tls-ca".to_owned(), self.tls_ca().display().to_string()]);
        }
        if self.config.test_reports {
            args.push("--enable-test-reports".to_owned());
        }
        if self.config.open_reach {
            let root = self.root.display().to_string();
            args.extend([
                "--data-dir".to_owned(),
                root.clone(),
                "--allow-dirs".to_owned(),
                root,
                "--allow-hosts".to_owned(),
                "127.0.0.0/8,::1,localhost".to_owned(),
            ]);
        }
        args.extend(self.config.worker_args.iter().cloned());
        let log = self.worker_log(index);
        let worker = match namespace {
            // `ip netns exec` and `env` each exec the next program: the pid is the worker's.
            Some((netns, _)) => {
                let binary = binary_path(WORKER_BINARY).display().to_string();
                let wrapped = [
                    "netns",
                    "exec",
                    &netns,
                    "env",
                    "NO_COLOR=1",
                    "RUST_LOG=info,presswork_worker::executor=debug",
                    &binary,
                ]
                .map(str::to_owned);
                let args = [wrapped.to_vec(), args].concat();
                Process::spawn(&name, Path::new("ip"), &args, &log)
            }
            None => Process::spawn(&name, &binary_path(WORKER_BINARY), &args, &log),
        };
        self.workers[index] = Some(worker);
    }

    /// The process id of the control plane (replica 0), while it runs.
    pub fn control_plane_pid(&self) -> i32 {
        self.replicas[0]
            .process
            .as_ref()
            .expect("the control plane is running")
            .pid()
            .as_raw()
    }

    /// SIGKILLs the control plane (replica 0), as a crash would.
    pub fn kill_control_plane(&mut self) {
        self.kill_replica(0);
    }

    /// SIGKILLs control-plane replica `replica`, as a crash would.
    pub fn kill_replica(&mut self, replica: usize) {
        if let Some(mut control_plane) = self.replicas[replica].process.take() {
            control_plane.kill();
        }
    }

    /// Kills the control plane (replica 0) and starts it again on the same database and the
    /// same port, so workers and clients reconnect to the address they know.
    pub async fn restart_control_plane(&mut self) {
        self.restart_replica(0).await;
    }

    /// Kills replica `replica` if it runs and starts it again on the same database and port.
    pub async fn restart_replica(&mut self, replica: usize) {
        self.kill_replica(replica);
        self.start_control_plane(replica, self.replicas[replica].port)
            .await;
    }

    /// Starts replica `replica` on `port` (0: any free port) and waits for its announcement.
    /// On a fixed port it retries for a while: the old process's socket may linger.
    async fn start_control_plane(&mut self, replica: usize, port: u16) {
        let began = Instant::now();
        loop {
            match self.try_start_control_plane(replica, port).await {
                Ok(()) => return,
                Err(why) if port != 0 && began.elapsed() < REBIND_TIMEOUT => {
                    eprintln!("control plane did not start on port {port} ({why}); retrying");
                    // Retrying a bind, not waiting for an event: nothing announces a free port.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(why) => panic!(
                    "the control plane did not start: {why}\nlast lines of its log:\n{}\ncluster directory: {}",
                    log_tail(&self.control_plane_log(replica), TAIL_LINES),
                    self.root.display()
                ),
            }
        }
    }

    async fn try_start_control_plane(&mut self, replica: usize, port: u16) -> Result<(), String> {
        self.replicas[replica].starts += 1;
        let host = if self.config.listen_on_all_addresses {
            "0.0.0.0"
        } else {
            "127.0.0.1"
        };
        let args = vec![
            "--listen".to_owned(),
            format!("{host}:{port}"),
            "--database".to_owned(),
            self.database.url().to_owned(),
            "--cancel-timeout".to_owned(),
            self.config.cancel_timeout.as_secs_f64().to_string(),
            "--worker-lease".to_owned(),
            self.config.worker_lease.as_secs_f64().to_string(),
            "--worker-token".to_owned(),
            self.worker_token.clone(),
        ];
        let mut args = [args, self.config.control_plane_args.clone()].concat();
        if self.config.tls {
            let cert = self.tls_ca().display().to_string();
            let key = self.root.join("key.pem").display().to_string();
            args.extend(["--tls-cert".to_owned(), cert, "--tls-key".to_owned(), key]);
        }
        let log = self.control_plane_log(replica);
        let name = match replica {
            0 => format!("control-plane (start #{})", self.replicas[replica].starts),
            _ => format!(
                "control-plane replica {replica} (start #{})",
                self.replicas[replica].starts
            ),
        };
        let (mut process, stdout) =
            Process::spawn_reading_stdout(&name, &binary_path(CONTROL_PLANE_BINARY), &args, &log);
        let (announced_tx, announced) = tokio::sync::oneshot::channel();
        forward_stdout(stdout, &log, LISTENING, announced_tx);
        let line = match tokio::time::timeout(STARTUP_TIMEOUT, announced).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => {
                let exit = process.try_exit_status();
                process.kill();
                return Err(format!(
                    "{} closed its stdout without announcing `{LISTENING}…` (exit: {exit:?})",
                    process.name(),
                ));
            }
            Err(_) => {
                return Err(format!(
                    "{} did not announce `{LISTENING}…` within {STARTUP_TIMEOUT:?}",
                    process.name()
                ));
            }
        };
        let announced_port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| format!("cannot read the port in {line:?}"))?;
        if port != 0 && announced_port != port {
            return Err(format!("asked for port {port}, got {line:?}"));
        }
        self.replicas[replica].port = announced_port;
        self.replicas[replica].process = Some(process);
        if self.replicas[replica].channel.is_none() {
            let mut endpoint = Endpoint::from_shared(self.replica_url(replica))
                .expect("a valid control plane URL");
            if self.config.tls {
                let pem = std::fs::read(self.tls_ca()).expect("read the test CA");
                endpoint = endpoint
                    .tls_config(
                        tonic::transport::ClientTlsConfig::new()
                            .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                    )
                    .expect("TLS settings");
            }
            self.replicas[replica].channel = Some(endpoint.connect_lazy());
        }
        Ok(())
    }

    fn control_plane_log(&self, replica: usize) -> PathBuf {
        match replica {
            0 => self.root.join("control-plane.log"),
            _ => self.root.join(format!("control-plane-{replica}.log")),
        }
    }

    /// Waits until every running worker takes jobs: as many `demo-slow` probes as there are
    /// slots must run at the same time, on as many distinct workers as are running. One slot:
    /// a `demo-fast` job must succeed.
    pub async fn wait_for_workers(&self) {
        let workers = self.live_workers();
        let slots = workers * self.config.capacity as usize;
        match slots {
            0 => {}
            1 => {
                let probe = self.submit("demo-fast", &[]).await;
                self.wait_for_status(&probe.id, JobStatus::Succeeded).await;
            }
            _ => crate::readiness::wait_for_all_slots(self, workers, slots).await,
        }
    }

    pub async fn submit(&self, report: &str, params: &[(&str, &str)]) -> Job {
        self.submit_on(0, report, params).await
    }

    /// Submits a job through replica `replica`.
    pub async fn submit_on(&self, replica: usize, report: &str, params: &[(&str, &str)]) -> Job {
        let params: HashMap<String, String> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let response = self
            .client_on(replica)
            .submit_job(SubmitJobRequest {
                report: report.to_owned(),
                params,
            })
            .await
            .unwrap_or_else(|e| panic!("SubmitJob {report} failed: {e:?}"));
        response
            .into_inner()
            .job
            .expect("SubmitJobResponse carries the job")
    }

    pub async fn cancel(
        &self,
        job_id: &str,
        reason: &str,
    ) -> Result<CancelJobResponse, tonic::Status> {
        self.cancel_on(0, job_id, reason).await
    }

    /// Cancels a job through replica `replica`.
    pub async fn cancel_on(
        &self,
        replica: usize,
        job_id: &str,
        reason: &str,
    ) -> Result<CancelJobResponse, tonic::Status> {
        self.client_on(replica)
            .cancel_job(CancelJobRequest {
                job_id: job_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Cancels the job and checks the answer is `expected`; returns the answer.
    pub async fn cancel_expecting(
        &self,
        job_id: &str,
        reason: &str,
        expected: CancelOutcome,
    ) -> CancelJobResponse {
        let answer = self
            .cancel(job_id, reason)
            .await
            .unwrap_or_else(|e| panic!("CancelJob {job_id} failed: {e:?}"));
        assert_eq!(
            answer.outcome(),
            expected,
            "CancelJob {job_id} answered {:?}: {}",
            answer.outcome(),
            answer.message
        );
        answer
    }

    pub async fn get_job(&self, job_id: &str) -> Job {
        self.client()
            .get_job(GetJobRequest {
                job_id: job_id.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("GetJob {job_id} failed: {e:?}"))
            .into_inner()
            .job
            .expect("GetJobResponse carries the job")
    }

    /// The job's whole log, every page of it.
    pub async fn job_log(&self, job_id: &str) -> Vec<LogEntry> {
        let mut entries = Vec::new();
        let mut after_id = 0;
        loop {
            let page = self
                .client()
                .get_job_log(GetJobLogRequest {
                    job_id: job_id.to_owned(),
                    after_id,
                    page_size: 0,
                })
                .await
                .unwrap_or_else(|e| panic!("GetJobLog {job_id} failed: {e:?}"))
                .into_inner();
            entries.extend(page.entries);
            if page.next_after_id == 0 {
                return entries;
            }
            after_id = page.next_after_id;
        }
    }

    /// Every job that is not terminal (QUEUED, RUNNING or CANCELLING), across all pages.
    pub async fn unfinished_jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client()
                .list_jobs(ListJobsRequest {
                    statuses: vec![
                        JobStatus::Queued as i32,
                        JobStatus::Running as i32,
                        JobStatus::Cancelling as i32,
                    ],
                    page_size: 1000,
                    page_token,
                })
                .await
                .unwrap_or_else(|e| panic!("ListJobs failed: {e:?}"))
                .into_inner();
            jobs.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return jobs;
            }
            page_token = page.next_page_token;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for worker in self.workers.iter_mut().filter_map(Option::take) {
            drop(worker);
        }
        for replica in 0..self.replicas.len() {
            self.kill_replica(replica);
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "\n===== the test failed: cluster directory kept at {} =====",
                self.root.display()
            );
            let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.root)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "log"))
                        .collect()
                })
                .unwrap_or_default();
            logs.sort();
            for log in logs {
                eprintln!(
                    "----- last {TAIL_LINES} lines of {} -----\n{}",
                    log.display(),
                    log_tail(&log, TAIL_LINES)
                );
            }
        }
    }
}
