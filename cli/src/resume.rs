//! Following server streams across failures: which errors are worth a reconnect, how long
//! to wait between attempts, and where to resume so that no change is lost or shown twice.

use std::time::Duration;

use presswork_proto::v1::watch_jobs_response::Kind;
use tonic::{Code, Status};

/// How long to wait between reconnect attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// The wait before the first reconnect; it doubles after every failed attempt.
    pub initial_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Exponential back-off between reconnect attempts, reset once a stream delivers again.
#[derive(Debug)]
pub struct Backoff {
    policy: ReconnectPolicy,
    next: Duration,
}

impl Backoff {
    /// A back-off starting at the policy's initial delay.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self {
            policy,
            next: policy.initial_delay,
        }
    }

    /// The wait before the next attempt; the one after it is twice as long, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next.min(self.policy.max_delay);
        self.next = (delay * 2).min(self.policy.max_delay);
        delay
    }

    /// Starts over from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.policy.initial_delay;
    }
}

/// Whether a stream that ended with `code` may work again if reopened (the control plane
/// restarting, a network blip, a proxy cutting a long stream) rather than failing the same
/// way again (no permission, bad request, unknown job). Exhaustive on purpose.
pub fn is_transient(code: Code) -> bool {
    match code {
        Code::Unavailable
        | Code::Unknown
        | Code::Internal
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::ResourceExhausted => true,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss
        | Code::Unauthenticated => false,
    }
}

/// Decides, for one followed stream, whether a failure ends the command or is retried.
///
/// A failure before the stream ever opened ends the command at once (a wrong `--server` is
/// reported, not retried forever); after that, transient failures are retried with back-off.
#[derive(Debug)]
pub struct Reconnector {
    backoff: Backoff,
    opened_once: bool,
}

impl Reconnector {
    /// A reconnector with the given back-off policy.
    pub fn new(policy: ReconnectPolicy) -> Self {
        Self {
            backoff: Backoff::new(policy),
            opened_once: false,
        }
    }

    /// The stream was (re)opened.
    pub fn opened(&mut self) {
        self.opened_once = true;
    }

    /// A message arrived: the connection works, so the next failure starts a fresh back-off.
    pub fn delivered(&mut self) {
        self.opened_once = true;
        self.backoff.reset();
    }

    /// After a failure: the wait before reconnecting, or the status to give up with.
    pub fn after_failure(&mut self, status: Status) -> Result<Duration, Status> {
        if self.opened_once && is_transient(status.code()) {
            Ok(self.backoff.next_delay())
        } else {
            Err(status)
        }
    }
}

/// Where a `WatchJobs` stream resumes, and which messages are new.
///
/// Snapshot messages carry the sequence the snapshot is consistent with; it only becomes the
/// resume point once the snapshot is complete, so a stream lost halfway through a snapshot
/// starts a fresh one instead of silently skipping the jobs not yet received. Changes at or
/// below the resume point were already shown and are skipped.
#[derive(Debug, Default)]
pub struct WatchCursor {
    resume_after: u64,
    snapshot_sequence: u64,
}

impl WatchCursor {
    /// The `after_sequence` to open (or reopen) the stream with.
    pub fn after_sequence(&self) -> u64 {
        self.resume_after
    }

    /// Records a received message; returns whether it is new and should be shown.
    pub fn accept(&mut self, kind: i32, sequence: u64) -> bool {
        match Kind::try_from(kind) {
            Ok(Kind::Snapshot) => {
                self.snapshot_sequence = self.snapshot_sequence.max(sequence);
                true
            }
            Ok(Kind::SnapshotComplete) => {
                self.resume_after = self.resume_after.max(self.snapshot_sequence.max(sequence));
                true
            }
            Ok(Kind::Change) => {
                if sequence <= self.resume_after {
                    false
                } else {
                    self.resume_after = sequence;
                    true
                }
            }
            Ok(Kind::Unspecified) | Err(_) => false,
        }
    }

    /// The stream was lost: a snapshot in progress will be sent again from the start.
    pub fn lost(&mut self) {
        self.snapshot_sequence = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: i32 = Kind::Snapshot as i32;
    const COMPLETE: i32 = Kind::SnapshotComplete as i32;
    const CHANGE: i32 = Kind::Change as i32;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(ReconnectPolicy {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(1),
        });
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [250, 500, 1_000, 1_000, 1_000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn only_transient_failures_after_opening_are_retried() {
        let mut reconnector = Reconnector::new(ReconnectPolicy::default());
        // Never opened: even UNAVAILABLE is reported at once.
        assert!(
            reconnector
                .after_failure(Status::unavailable("down"))
                .is_err()
        );
        reconnector.opened();
        assert_eq!(
            reconnector.after_failure(Status::unavailable("down")).ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            reconnector.after_failure(Status::unknown("h2 reset")).ok(),
            Some(Duration::from_millis(500))
        );
        reconnector.delivered();
        assert_eq!(
            reconnector.after_failure(Status::internal("oops")).ok(),
            Some(Duration::from_millis(250))
        );
        let error = reconnector
            .after_failure(Status::unauthenticated("token expired"))
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated);
    }

    #[test]
    fn watch_resumes_after_the_last_change_and_skips_repeats() {
        let mut cursor = WatchCursor::default();
        assert_eq!(cursor.after_sequence(), 0);
        assert!(cursor.accept(SNAPSHOT, 10));
        assert!(cursor.accept(SNAPSHOT, 10));
        // Not complete yet: a reconnect now must ask for a fresh snapshot.
        assert_eq!(cursor.after_sequence(), 0);
        assert!(cursor.accept(COMPLETE, 10));
        assert_eq!(cursor.after_sequence(), 10);
        assert!(cursor.accept(CHANGE, 11));
        assert!(cursor.accept(CHANGE, 12));
        assert_eq!(cursor.after_sequence(), 12);
        cursor.lost();
        // The server repeats a change we already showed: skipped.
        assert!(!cursor.accept(CHANGE, 12));
        assert!(cursor.accept(CHANGE, 13));
        assert_eq!(cursor.after_sequence(), 13);
        assert!(!cursor.accept(Kind::Unspecified as i32, 14));
    }

    #[test]
    fn a_snapshot_lost_halfway_starts_over() {
        let mut cursor = WatchCursor::default();
        assert!(cursor.accept(SNAPSHOT, 7));
        cursor.lost();
        assert_eq!(cursor.after_sequence(), 0);
        assert!(cursor.accept(SNAPSHOT, 9));
        assert!(cursor.accept(COMPLETE, 0));
        assert_eq!(cursor.after_sequence(), 9);
    }

    #[test]
    fn every_code_has_a_retry_decision() {
        assert!(is_transient(Code::Unavailable));
        assert!(!is_transient(Code::PermissionDenied));
        assert!(!is_transient(Code::NotFound));
    }
}
