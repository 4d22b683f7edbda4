//! Why and when a job was told to stop, and its point of no return.
//!
//! Every job has one [`JobControl`]: the job's [`CancellationToken`] (each stage gets a child of
//! it), the first reason it was cancelled for, the instant the token fired (for the stop
//! duration), the stage it is in, and a small commit state that settles the race between a
//! cancel and a stage entering its point of no return: exactly one of them wins.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use presswork_proto::v1::Stage;
use tokio_util::sync::CancellationToken;

/// Why a job was cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelReason {
    /// A user asked for it through the control plane.
    UserRequested {
        /// Who asked.
        by: String,
        /// Why, as they wrote it (may be empty).
        reason: String,
    },
    /// The worker process is stopping (SIGTERM / Ctrl-C).
    WorkerShutdown,
    /// The worker heard nothing from the control plane for longer than its lease (fencing).
    LeaseLost {
        /// How long the worker had been without contact.
        silent_for: Duration,
    },
    /// The control plane force-stopped a job that was never cancelled cooperatively.
    ForceStopped,
}

impl CancelReason {
    /// The worker stopped the job itself after losing contact with the control plane.
    pub(crate) fn is_fencing(&self) -> bool {
        matches!(self, CancelReason::LeaseLost { .. })
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelReason::UserRequested { reason, .. } if !reason.is_empty() => f.write_str(reason),
            CancelReason::UserRequested { by, .. } if !by.is_empty() => {
                write!(f, "cancelled by {by}")
            }
            CancelReason::UserRequested { .. } => f.write_str("cancelled on request"),
            CancelReason::WorkerShutdown => f.write_str("worker shutting down"),
            CancelReason::LeaseLost { silent_for } => write!(
                f,
                "lease lost: no contact with the control plane for {} s",
                seconds(*silent_for)
            ),
            CancelReason::ForceStopped => {
                f.write_str("force-stopped by the control plane: the job did not stop in time")
            }
        }
    }
}

/// Whole seconds when the duration is whole, else one decimal ("10", "0.3").
fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{:.1}", duration.as_secs_f64())
    }
}

/// What a cancel did to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelEffect {
    /// The token fired; `past_point_of_no_return` says the job will finish anyway.
    Fired { past_point_of_no_return: bool },
    /// The job's code had already stopped: nothing to cancel.
    AlreadyFinished,
}

const RUNNING: u8 = 0;
const COMMITTED: u8 = 1;
const CANCELLED: u8 = 2;
const FINISHED: u8 = 3;

struct Cause {
    reason: CancelReason,
    fired_at: Instant,
}

/// The shared control block of one job (see the module documentation).
pub(crate) struct JobControl {
    token: CancellationToken,
    cause: OnceLock<Cause>,
    commit: AtomicU8,
    stage: AtomicI32,
}

impl JobControl {
    pub(crate) fn new() -> Self {
        JobControl {
            token: CancellationToken::new(),
            cause: OnceLock::new(),
            commit: AtomicU8::new(RUNNING),
            stage: AtomicI32::new(Stage::Unspecified as i32),
        }
    }

    /// The job's token; stages get children of it.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Settles the race with [`JobControl::enter_point_of_no_return`] and with the job's end,
    /// then fires the token at once (the first reason given is kept). Settled first: once the
    /// token fires, the job's code may stop and [`JobControl::finish`] on another thread before
    /// this one takes its next step, and the cancel that stopped it would then look too late.
    pub(crate) fn cancel(&self, reason: CancelReason) -> CancelEffect {
        let _ = self.cause.set(Cause {
            reason,
            fired_at: Instant::now(),
        });
        let effect = match self.commit.compare_exchange(
            RUNNING,
            CANCELLED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) | Err(CANCELLED) => CancelEffect::Fired {
                past_point_of_no_return: false,
            },
            Err(COMMITTED) => CancelEffect::Fired {
                past_point_of_no_return: true,
            },
            Err(_) => CancelEffect::AlreadyFinished,
        };
        self.token.cancel();
        effect
    }

    /// Claims the point of no return. `false`: a cancel came first and the caller must undo
    /// its work and return [`crate::stages::StageError::Cancelled`].
    pub(crate) fn enter_point_of_no_return(&self) -> bool {
        !self.token.is_cancelled()
            && self
                .commit
                .compare_exchange(RUNNING, COMMITTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Marks the job's code as stopped: later cancels are ignored. A cancel that settled
    /// first (CANCELLED) keeps its state, so it is still acknowledged.
    pub(crate) fn finish(&self) {
        let _ = self
            .commit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state != CANCELLED).then_some(FINISHED)
            });
    }

    /// The stage the job is in ([`Stage::Unspecified`] before the first one).
    pub(crate) fn stage(&self) -> Stage {
        Stage::try_from(self.stage.load(Ordering::Acquire)).unwrap_or(Stage::Unspecified)
    }

    pub(crate) fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as i32, Ordering::Release);
    }

    /// Why the job was cancelled and how long ago its token fired, if it was.
    pub(crate) fn stop_cause(&self) -> Option<(CancelReason, Duration)> {
        self.cause
            .get()
            .map(|cause| (cause.reason.clone(), cause.fired_at.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> CancelReason {
        CancelReason::UserRequested {
            by: "ada".into(),
            reason: String::new(),
        }
    }

    #[test]
    fn a_cancel_before_the_commit_wins() {
        let control = JobControl::new();
        assert_eq!(
            control.cancel(user()),
            CancelEffect::Fired {
                past_point_of_no_return: false
            }
        );
        assert!(control.token().is_cancelled());
        assert!(!control.enter_point_of_no_return());
    }

    #[test]
    fn a_commit_before_the_cancel_wins() {
        let control = JobControl::new();
        assert!(control.enter_point_of_no_return());
        assert_eq!(
            control.cancel(user()),
            CancelEffect::Fired {
                past_point_of_no_return: true
            }
        );
    }

    #[test]
    fn a_finished_job_ignores_cancels() {
        let control = JobControl::new();
        control.finish();
        assert_eq!(control.cancel(user()), CancelEffect::AlreadyFinished);
    }

    #[test]
    fn the_first_reason_is_kept() {
        let control = JobControl::new();
        control.cancel(CancelReason::WorkerShutdown);
        control.cancel(user());
        let (reason, _) = control.stop_cause().expect("cancelled");
        assert_eq!(reason, CancelReason::WorkerShutdown);
    }

    /// The job's code may stop the instant its token fires and mark itself finished on
    /// another thread, before the thread that cancelled takes its next step. So by the time
    /// the token has fired, the cancel must already be settled: it stopped the job, and is
    /// acknowledged as delivered, never taken for "already finished".
    #[test]
    fn the_cancel_is_settled_before_the_token_fires() {
        for _ in 0..200 {
            let control = std::sync::Arc::new(JobControl::new());
            let job = {
                let control = control.clone();
                std::thread::spawn(move || {
                    futures::executor::block_on(control.token().cancelled());
                    let settled = control.commit.load(Ordering::Acquire);
                    control.finish();
                    settled
                })
            };
            assert_eq!(
                control.cancel(user()),
                CancelEffect::Fired {
                    past_point_of_no_return: false
                }
            );
            assert_eq!(job.join().expect("the job thread ends"), CANCELLED);
        }
    }

    #[test]
    fn a_cancel_that_beats_the_finish_is_acknowledged_even_if_the_stage_returns_at_once() {
        let control = JobControl::new();
        // The cancel settles first; the stage sees its token and the job finishes.
        assert_eq!(
            control.cancel(user()),
            CancelEffect::Fired {
                past_point_of_no_return: false
            }
        );
        control.finish();
        // A duplicate cancel of the same attempt still reads as fired, never as finished first.
        assert_eq!(
            control.cancel(user()),
            CancelEffect::Fired {
                past_point_of_no_return: false
            }
        );
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(user().to_string(), "cancelled by ada");
        assert_eq!(
            CancelReason::LeaseLost {
                silent_for: Duration::from_secs(10)
            }
            .to_string(),
            "lease lost: no contact with the control plane for 10 s"
        );
        assert_eq!(
            CancelReason::WorkerShutdown.to_string(),
            "worker shutting down"
        );
    }
}
