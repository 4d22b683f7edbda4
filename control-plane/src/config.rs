//! The control plane's settings: flags, each also read from a `PRESSWORK_` environment
//! variable, with defaults for a local run. Validated once at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::AuthSettings;
use crate::dispatch::Timing;
use crate::job::WorkerLostPolicy;

/// presswork-control-plane: owns every job's state, hands jobs to workers and streams cancels
/// to them. Serves gRPC on one port. With a subcommand, administers the database instead.
#[derive(Clone, Debug, Parser)]
#[command(name = "presswork-control-plane", version)]
pub struct Config {
    /// Address to listen on for gRPC (workers, CLI, dashboard).
    #[arg(long, env = "PRESSWORK_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Database URL: sqlite:///absolute/path.db (created when missing) or
    /// postgres://user:password@host/database.
    #[arg(
        long,
        env = "PRESSWORK_DATABASE",
        default_value = "sqlite://presswork.db",
        global = true
    )]
    pub database: String,

    /// Seconds a running job has to confirm a cancel before it is failed and force-stopped.
    #[arg(long, env = "PRESSWORK_CANCEL_TIMEOUT", default_value_t = 30.0, value_parser = positive_seconds)]
    pub cancel_timeout: f64,

    /// Seconds without a heartbeat after which a worker is lost and its jobs fail (or are
    /// requeued, see --on-worker-lost).
    #[arg(long, env = "PRESSWORK_WORKER_LEASE", default_value_t = 10.0, value_parser = positive_seconds)]
    pub worker_lease: f64,

    /// What becomes of a running job whose worker is lost: `fail` ("worker lost"), or
    /// `requeue` (queued again after two leases of silence, until --max-attempts is used up).
    /// A job being cancelled always fails.
    #[arg(long, env = "PRESSWORK_ON_WORKER_LOST", value_enum, default_value_t = OnWorkerLost::Fail)]
    pub on_worker_lost: OnWorkerLost,

    /// With --on-worker-lost requeue: how many attempts a job gets in all; the job fails when
    /// the worker of its last attempt is lost.
    #[arg(long, env = "PRESSWORK_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Streams (WatchJobs, WatchJobLog) served at once; more are told to retry (UNAVAILABLE).
    #[arg(long, env = "PRESSWORK_MAX_WATCHERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_watchers: u32,

    /// Watchers that read their first snapshot of the job list at once (each holds a database
    /// connection meanwhile); more wait up to 2 s, then are told to retry (UNAVAILABLE).
    #[arg(long, env = "PRESSWORK_MAX_SNAPSHOT_READERS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_snapshot_readers: u32,

    /// Jobs each user may submit per second, with bursts of ten seconds' worth; more get
    /// RESOURCE_EXHAUSTED. 0: no limit.
    #[arg(long, env = "PRESSWORK_SUBMIT_RATE", default_value_t = 200)]
    pub submit_rate: u32,

    /// Credentials workers present (repeat, or separate with commas). Prefer the environment
    /// variable: command lines are visible to other users of the machine.
    #[arg(long = "worker-token", env = "PRESSWORK_WORKER_TOKEN", value_delimiter = ',', hide_env_values = true, value_parser = worker_token)]
    pub worker_tokens: Vec<String>,

    /// Key that signs user tokens: at least 32 bytes, hex or text. Unset: a key generated on
    /// first start and kept in the database, shared by every control plane on it.
    #[arg(long, env = "PRESSWORK_TOKEN_SIGNING_KEY", hide_env_values = true)]
    pub token_signing_key: Option<String>,

    /// Seconds a user's token stays valid after sign-in.
    #[arg(long, env = "PRESSWORK_TOKEN_TTL", default_value_t = 43_200.0, value_parser = positive_seconds)]
    pub token_ttl: f64,

    /// Proxies (CIDR, or single addresses) whose `X-Forwarded-For` header names the client
    /// (repeat, or separate with commas): for a grpc-web or gRPC proxy in front of the control
    /// plane. From such a peer, the client is the right-most entry that is not itself a trusted
    /// proxy; from any other peer the header is ignored. Sign-in limits count per client.
    #[arg(long = "trusted-proxy", env = "PRESSWORK_TRUSTED_PROXIES", value_delimiter = ',', value_parser = trusted_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, env = "PRESSWORK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "PRESSWORK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The built dashboard (web/dist), served on the same port as gRPC and grpc-web. When
    /// the folder is missing only gRPC is served.
    #[arg(long, env = "PRESSWORK_WEB_DIR", default_value = "web/dist")]
    pub web_dir: PathBuf,

    /// The Content-Security-Policy of the dashboard's files (the default allows only the
    /// dashboard's own scripts, styles and API, and no framing).
    #[arg(long, env = "PRESSWORK_WEB_CSP", default_value = crate::web::CONTENT_SECURITY_POLICY, value_parser = header_value)]
    pub web_csp: tonic::codegen::http::HeaderValue,

    /// Seconds a new connection has to deliver its first request (and its PROXY header with
    /// --proxy-protocol) before it is closed: connections that send nothing, or stop inside
    /// the HTTP/2 preface or the TLS handshake, do not hold a file descriptor for ever.
    #[arg(long, env = "PRESSWORK_HANDSHAKE_TIMEOUT", default_value_t = 10.0, value_parser = positive_seconds)]
    pub handshake_timeout: f64,

    /// Most connections served at once (workers, CLI, dashboard); beyond it new connections
    /// are closed at once and a warning is logged.
    #[arg(long, env = "PRESSWORK_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Every connection starts with a PROXY protocol header (v1 or v2, HAProxy's
    /// `send-proxy-v2`) naming the client: only for a control plane reachable solely through
    /// such a load balancer. Connections without one are closed.
    #[arg(long, env = "PRESSWORK_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--on-worker-lost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnWorkerLost {
    Fail,
    Requeue,
}

#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Manage the users who sign in.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Clone, Debug, Subcommand)]
pub enum UsersCommand {
    /// Adds a user. The password is read from a prompt, or from stdin when it is not a terminal.
    Add {
        #[arg(long)]
        username: String,
        /// administrator, operator or viewer.
        #[arg(long)]
        role: String,
    },
    /// Lists users and their roles.
    List,
    /// Changes a user's role.
    SetRole {
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
    },
    /// Disables a user: their tokens stop working at once.
    Disable {
        #[arg(long)]
        username: String,
    },
    /// Enables a disabled user again.
    Enable {
        #[arg(long)]
        username: String,
    },
    /// Sets a new password (read like `add`'s).
    SetPassword {
        #[arg(long)]
        username: String,
    },
}

impl Config {
    /// The protocol timings these settings imply. Workers heartbeat four times per lease.
    pub fn timing(&self) -> Timing {
        let lease = Duration::from_secs_f64(self.worker_lease);
        Timing {
            cancel_timeout: Duration::from_secs_f64(self.cancel_timeout),
            worker_lease: lease,
            heartbeat_interval: (lease / 4).max(Duration::from_millis(20)),
            on_worker_lost: match self.on_worker_lost {
                OnWorkerLost::Fail => WorkerLostPolicy::Fail,
                OnWorkerLost::Requeue => WorkerLostPolicy::Requeue {
                    max_attempts: self.max_attempts,
                },
            },
        }
    }

    /// How connections are accepted.
    pub fn listener(&self) -> crate::listener::ListenerSettings {
        crate::listener::ListenerSettings {
            handshake_timeout: Duration::from_secs_f64(self.handshake_timeout),
            max_connections: self.max_connections as usize,
            proxy_protocol: self.proxy_protocol,
        }
    }

    pub fn auth(&self) -> Result<AuthSettings, String> {
        Ok(AuthSettings {
            signing_key: self
                .token_signing_key
                .as_deref()
                .map(crate::auth::parse_signing_key)
                .transpose()?,
            token_ttl: Duration::from_secs_f64(self.token_ttl),
            worker_tokens: self.worker_tokens.clone(),
            trusted_proxies: self.trusted_proxies.clone(),
        })
    }
}

fn positive_seconds(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if (0.05..=31_536_000.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{value:?} is not a number of seconds between 0.05 and 31536000 (e.g. 30 or 0.5)"
        )),
    }
}

fn trusted_proxy(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!(
                "{value:?} is not an address or CIDR range (e.g. 10.0.0.0/8, 127.0.0.1, fd00::/8)"
            )
        })
}

fn header_value(value: &str) -> Result<tonic::codegen::http::HeaderValue, String> {
    tonic::codegen::http::HeaderValue::from_str(value).map_err(|_| {
        "the policy must be one line of visible ASCII, e.g. \"default-src 'self'\"".to_string()
    })
}

fn worker_token(value: &str) -> Result<String, String> {
    if value.len() < 16 {
        return Err("a worker token must be at least 16 characters: generate one with `openssl rand -hex 32`".into());
    }
    Ok(value.to_string())
}
