//! The worker's session with the control plane: connect, reconnect with backoff, demultiplex
//! the stream, heartbeats, fencing and the shutdown drain.
//!
//! One task owns everything (the link, the [`Executor`], the buffer of messages produced while
//! disconnected), so there are no locks: job tasks send their messages through a channel, and
//! control messages are handled in the order they arrive. A cancel is handled without any
//! await between reading it and firing the job's token.
//!
//! Contact is any message from the control plane, `HeartbeatAck` included. With no contact for
//! longer than the lease (10 s until a Welcome says otherwise), the worker cancels its running
//! jobs (fencing): a partitioned worker does not keep working on jobs the control plane
//! considers lost. A fenced job still running half a lease later (it ignores its token) is
//! aborted, as a force stop would. Their outcomes are delivered like any other once it is
//! reachable again.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use presswork_proto::v1::connect_request::Msg;
use presswork_proto::v1::connect_response::Msg as ControlMsg;
use presswork_proto::v1::worker_service_client::WorkerServiceClient;
use presswork_proto::v1::{
    ConnectRequest, ConnectResponse, Draining, Heartbeat, Hello, JobAttempt, Welcome,
};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::WorkerConfig;
use crate::cancel::CancelReason;
use crate::executor::{Executor, ExecutorSettings};
use crate::secrets::Secrets;
use crate::stages::sources::http_client;

/// The lease used before the first Welcome says otherwise.
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// First and largest pause between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one connection attempt may take (TCP, HTTP/2 and the call's response headers).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings: a connection that stops answering is closed, so the session reconnects
/// without waiting for the stream to time out.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the shutdown waits for running jobs' outcomes to be acknowledged.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// How long the exit waits for job tasks to clean up after they were aborted.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// The pause before connection attempt `failures + 1`: exponential from [`BACKOFF_MIN`] to
/// [`BACKOFF_MAX`], with jitter over its upper half.
pub(crate) fn backoff_delay(failures: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = BACKOFF_MIN
        .saturating_mul(2u32.saturating_pow(failures.min(16)))
        .min(BACKOFF_MAX);
    let half = ceiling / 2;
    half + half.mul_f64(rng.random::<f64>())
}

type ConnectFuture = Pin<Box<dyn Future<Output = anyhow::Result<Connection>> + Send>>;

/// An open stream.
struct Connection {
    outbound: mpsc::UnboundedSender<ConnectRequest>,
    inbound: Streaming<ConnectResponse>,
}

/// Where the link to the control plane is: waiting to retry, connecting, or up.
#[derive(Default)]
struct Link {
    retry_at: Option<Instant>,
    connecting: Option<ConnectFuture>,
    up: Option<Connection>,
    /// Heartbeats of the open stream, set by its Welcome.
    heartbeat: Option<Interval>,
}

/// The session task's state (see the module documentation).
pub(crate) struct WorkerSession {
    config: WorkerConfig,
    /// The control planes to try, in order (`--control-plane URL[,URL…]`), and which one the
    /// session uses now: after a failed attempt or a lost stream it moves to the next.
    endpoints: Vec<(String, Endpoint)>,
    current: usize,
    /// `Bearer <worker credential>`, sent when opening each stream.
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    executor: Executor,
    events: mpsc::UnboundedReceiver<ConnectRequest>,
    /// Messages produced while disconnected, in order.
    pending: VecDeque<ConnectRequest>,
    lease: Duration,
    last_contact: Instant,
    fenced: bool,
    /// When the fenced attempts still running (they ignored their token) are aborted: half a
    /// lease after the fencing, so they have ended before the control plane may requeue them
    /// (two leases of silence). Only those attempts: jobs assigned since are not touched.
    fence_abort: Option<(Instant, Vec<JobAttempt>)>,
    failures: u32,
    /// True while the stream to the control plane is up and the worker takes jobs (the
    /// health service's readiness).
    connected: tokio::sync::watch::Sender<bool>,
}

impl WorkerSession {
    pub(crate) fn new(
        config: WorkerConfig,
        connected: tokio::sync::watch::Sender<bool>,
    ) -> anyhow::Result<Self> {
        let tls = match &config.tls_ca {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot read the CA certificate {} (--tls-ca): {e}",
                        ca.display()
                    )
                })?;
                Some(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                )
            }
            None => None,
        };
        let mut endpoints = Vec::new();
        for url in config.control_planes() {
            let endpoint = Endpoint::from_shared(url.to_owned())
                .map_err(|e| {
                    anyhow::anyhow!(
                        "--control-plane `{url}` is not a valid URL ({e}); use e.g. http://127.0.0.1:7070"
                    )
                })?
                .tcp_nodelay(true)
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
            let endpoint = match &tls {
                Some(tls) => endpoint.tls_config(tls.clone())?,
                None => endpoint,
            };
            endpoints.push((url.to_owned(), endpoint));
        }
        let authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
            format!("Bearer {}", config.token.0).parse().map_err(|_| {
                anyhow::anyhow!("--token contains characters that cannot be sent in a header: use letters and digits")
            })?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let executor = Executor::new(
            ExecutorSettings {
                capacity: config.capacity,
                enable_test_reports: config.enable_test_reports,
                output_dir: config.output_dir.clone(),
                work_dir: config.work_dir.clone(),
                connectors: config.connectors.clone(),
                http: http_client(&config.reach.allow_hosts)?,
                reach: std::sync::Arc::new(config.reach.clone()),
                secrets: Secrets::new(config.secrets_dir.clone()),
            },
            events_tx,
        );
        Ok(WorkerSession {
            config,
            endpoints,
            current: 0,
            authorization,
            executor,
            events,
            pending: VecDeque::new(),
            lease: DEFAULT_LEASE,
            last_contact: Instant::now(),
            fenced: false,
            fence_abort: None,
            failures: 0,
            connected,
        })
    }

    /// Runs until `shutdown` fires and the drain is over.
    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut link = Link {
            connecting: Some(self.connect()),
            ..Link::default()
        };
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_some() && self.executor.is_idle() {
                info!("every job stopped and its outcome was acknowledged; worker stopped");
                break;
            }
            let fence_at = (!self.fenced && self.executor.has_running())
                .then(|| self.last_contact + self.lease);
            let fence_abort_at = self.fence_abort.as_ref().map(|(at, _)| *at);
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if drain_until.is_none() => {
                    self.executor.stop_accepting();
                    self.connected.send_replace(false);
                    // Ask for no more assignments; running jobs still report their outcomes.
                    self.send(&mut link, ConnectRequest { msg: Some(Msg::Draining(Draining {})) });
                    let running = self.executor.cancel_all(&CancelReason::WorkerShutdown);
                    info!(running, drain_s = SHUTDOWN_DRAIN.as_secs(), "shutting down: cancelling running jobs and waiting for their outcomes to be acknowledged");
                    drain_until = Some(Instant::now() + SHUTDOWN_DRAIN);
                }
                _ = sleep_until(drain_until) => {
                    warn!(
                        running = self.executor.has_running(),
                        unacknowledged = self.executor.known().len(),
                        "shutdown drain timed out; exiting anyway (the control plane's lease will settle these jobs)"
                    );
                    break;
                }
                message = next_message(&mut link.up) => match message {
                    Ok(Some(message)) => self.on_control_message(message, &mut link),
                    Ok(None) => self.link_lost(&mut link, "the control plane closed the stream"),
                    Err(status) => self.link_lost(&mut link, &format!("the stream failed: {status}")),
                },
                Some(event) = self.events.recv() => {
                    self.executor.record(&event);
                    self.send(&mut link, event);
                }
                connected = next_connection(&mut link.connecting) => match connected {
                    Ok(connection) => self.link_up(&mut link, connection),
                    Err(error) => self.link_lost(&mut link, &format!("cannot connect: {error:#}")),
                },
                _ = sleep_until(link.retry_at) => {
                    link.retry_at = None;
                    link.connecting = Some(self.connect());
                }
                _ = next_tick(&mut link.heartbeat) => {
                    self.send(&mut link, ConnectRequest { msg: Some(Msg::Heartbeat(Heartbeat {})) });
                }
                _ = sleep_until(fence_at) => {
                    let reason = CancelReason::LeaseLost { silent_for: self.lease };
                    let running = self.executor.cancel_all(&reason);
                    warn!(running, lease_ms = self.lease.as_millis() as u64, "no contact with the control plane for longer than the lease: cancelling running jobs (fencing); their outcomes are sent once it is reachable again");
                    self.fenced = true;
                    let fenced = self.executor.running_attempts();
                    self.fence_abort = Some((Instant::now() + self.lease / 2, fenced));
                }
                _ = sleep_until(fence_abort_at) => {
                    // Kept after a reconnect too: nobody else will stop these attempts.
                    if let Some((_, fenced)) = self.fence_abort.take() {
                        for job in &fenced {
                            self.executor.force_stop(job);
                        }
                    }
                }
            }
        }
        self.executor.abort_all();
        let tracker = self.executor.tracker();
        tracker.close();
        if tokio::time::timeout(EXIT_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("some job tasks did not end in time; their work directories may be left behind");
        }
        Ok(())
    }

    /// Starts a connection attempt: the stream opens with Hello, then the outcomes sent before
    /// and not acknowledged.
    fn connect(&self) -> ConnectFuture {
        let (outbound, requests) = mpsc::unbounded_channel();
        let hello = Hello {
            worker_id: self.config.worker_id.clone(),
            name: self.config.name.clone(),
            capacity: self.config.capacity,
            reports: crate::reports::available(self.config.enable_test_reports),
            known: self.executor.known(),
            runs_configurations: true,
            connectors: self
                .config
                .connectors
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        };
        let mut opening = vec![Msg::Hello(hello)];
        opening.extend(self.executor.sent_outcomes().into_iter().map(Msg::Finished));
        for msg in opening {
            // The receiver is in scope: this cannot fail.
            let _ = outbound.send(ConnectRequest { msg: Some(msg) });
        }
        let (url, endpoint) = self.endpoints[self.current].clone();
        let authorization = self.authorization.clone();
        debug!(%url, "connecting to the control plane");
        Box::pin(async move {
            let open = async {
                let channel = endpoint.connect().await?;
                let mut request = tonic::Request::new(UnboundedReceiverStream::new(requests));
                request
                    .metadata_mut()
                    .insert("authorization", authorization);
                let response = WorkerServiceClient::new(channel).connect(request).await?;
                anyhow::Ok(response.into_inner())
            };
            let inbound = tokio::time::timeout(CONNECT_TIMEOUT, open)
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {CONNECT_TIMEOUT:?}"))??;
            Ok(Connection { outbound, inbound })
        })
    }

    fn link_up(&mut self, link: &mut Link, connection: Connection) {
        info!(url = %self.endpoints[self.current].0, buffered = self.pending.len(), "connected to the control plane");
        self.last_contact = Instant::now();
        self.fenced = false;
        link.up = Some(connection);
        self.connected.send_replace(self.executor.is_accepting());
        while let Some(msg) = self.pending.pop_front() {
            self.send(link, msg);
        }
    }

    fn link_lost(&mut self, link: &mut Link, what: &str) {
        self.connected.send_replace(false);
        link.up = None;
        link.heartbeat = None;
        link.connecting = None;
        let delay = backoff_delay(self.failures, &mut rand::rng());
        self.failures = self.failures.saturating_add(1);
        link.retry_at = Some(Instant::now() + delay);
        let url = self.endpoints[self.current].0.clone();
        // Any control plane will do: try the next one (the same one when there is only one).
        self.current = (self.current + 1) % self.endpoints.len();
        warn!(
            %url,
            next = %self.endpoints[self.current].0,
            error = what,
            attempt = self.failures,
            retry_in_ms = delay.as_millis() as u64,
            "control plane unreachable; retrying (check that it is running and that --control-plane / PRESSWORK_CONTROL_PLANE points at it)"
        );
    }

    fn on_control_message(&mut self, message: ConnectResponse, link: &mut Link) {
        match message.msg {
            Some(ControlMsg::Cancel(command)) => {
                if let Some(ack) = self.executor.cancel(command) {
                    self.send(link, ConnectRequest { msg: Some(ack) });
                }
            }
            Some(ControlMsg::Assign(assign)) => {
                for msg in self.executor.assign(assign) {
                    self.send(link, ConnectRequest { msg: Some(msg) });
                }
            }
            Some(ControlMsg::ForceStop(stop)) => {
                if let Some(job) = stop.job {
                    self.executor.force_stop(&job);
                }
            }
            Some(ControlMsg::OutcomeAck(ack)) => {
                if let Some(job) = ack.job {
                    self.executor.acknowledge(&job);
                }
            }
            Some(ControlMsg::Welcome(welcome)) => self.on_welcome(welcome, link),
            Some(ControlMsg::HeartbeatAck(_)) => {}
            None => debug!("ignoring an empty control message"),
        }
        self.last_contact = Instant::now();
        self.fenced = false;
    }

    fn on_welcome(&mut self, welcome: Welcome, link: &mut Link) {
        if welcome.lease_ms > 0 {
            self.lease = Duration::from_millis(welcome.lease_ms.into());
        }
        let every = if welcome.heartbeat_interval_ms > 0 {
            Duration::from_millis(welcome.heartbeat_interval_ms.into())
        } else {
            self.lease / 3
        };
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        link.heartbeat = Some(heartbeat);
        self.failures = 0;
        info!(
            heartbeat_ms = every.as_millis() as u64,
            lease_ms = self.lease.as_millis() as u64,
            "welcomed by the control plane"
        );
    }

    /// Writes `msg` to the stream, or keeps it for after the reconnect.
    fn send(&mut self, link: &mut Link, msg: ConnectRequest) {
        let Some(up) = &link.up else {
            self.pending.push_back(msg);
            return;
        };
        let finished = match &msg.msg {
            Some(Msg::Finished(finished)) => finished.job.clone(),
            _ => None,
        };
        match up.outbound.send(msg) {
            Ok(()) => {
                if let Some(job) = finished {
                    self.executor.mark_sent(&job);
                }
            }
            // The call is over; the inbound side reports why and the link is re-opened.
            Err(mpsc::error::SendError(msg)) => self.pending.push_back(msg),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_message(
    up: &mut Option<Connection>,
) -> Result<Option<ConnectResponse>, tonic::Status> {
    match up {
        Some(connection) => connection.inbound.message().await,
        None => std::future::pending().await,
    }
}

async fn next_connection(connecting: &mut Option<ConnectFuture>) -> anyhow::Result<Connection> {
    match connecting {
        Some(future) => {
            let result = future.await;
            *connecting = None;
            result
        }
        None => std::future::pending().await,
    }
}

async fn next_tick(interval: &mut Option<Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_grows_from_50_ms_to_2_s_with_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for failures in 0..40 {
            let ceiling = (50u64 << failures.min(16)).min(2000);
            let delay = backoff_delay(failures, &mut rng).as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "attempt {failures}: {delay} ms not within [{}, {ceiling}]",
                ceiling / 2
            );
        }
        let delays: Vec<Duration> = (0..8).map(|_| backoff_delay(10, &mut rng)).collect();
        assert!(
            delays.windows(2).any(|w| w[0] != w[1]),
            "jittered: {delays:?}"
        );
    }
}
