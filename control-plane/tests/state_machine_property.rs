//! Property test: random interleavings of submit / claim / cancel / progress / finish /
//! timeout / worker loss (failing or requeueing), run concurrently against a real store, keep
//! the invariants: no lost or duplicated transition, only allowed transitions, terminal states
//! final, the execution log matching the transitions, one attempt per claim and never more
//! than the requeue policy allows.

mod support;

use std::collections::{BTreeMap, HashMap};

use presswork_control_plane::job::{JobEvent, Outcome, WorkerLostPolicy};
use presswork_control_plane::store::{JobFilter, NewJob, Store};
use presswork_proto::v1::{JobStatus, Stage};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Submit,
    Claim {
        worker: u8,
    },
    Cancel {
        job: u8,
    },
    StageStarted {
        job: u8,
        stale: bool,
    },
    Progress {
        job: u8,
    },
    Delivered {
        job: u8,
    },
    Ack {
        job: u8,
    },
    Finish {
        job: u8,
        kind: u8,
        stale: bool,
    },
    Timeout {
        job: u8,
    },
    WorkerLost {
        job: u8,
        requeue: bool,
    },
    Fenced {
        job: u8,
        requeue: bool,
        stale: bool,
    },
    /// A worker that does not hold the job reports it finished.
    Forged {
        job: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Submit),
        3 => (0u8..3).prop_map(|worker| Op::Claim { worker }),
        3 => any::<u8>().prop_map(|job| Op::Cancel { job }),
        1 => (any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(job, stale)| Op::StageStarted { job, stale }),
        1 => any::<u8>().prop_map(|job| Op::Progress { job }),
        1 => any::<u8>().prop_map(|job| Op::Delivered { job }),
        1 => any::<u8>().prop_map(|job| Op::Ack { job }),
        3 => (any::<u8>(), 0u8..3, prop::bool::weighted(0.2)).prop_map(|(job, kind, stale)| Op::Finish { job, kind, stale }),
        1 => any::<u8>().prop_map(|job| Op::Timeout { job }),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(job, requeue)| Op::WorkerLost { job, requeue }),
        1 => (any::<u8>(), any::<bool>(), prop::bool::weighted(0.2)).prop_map(|(job, requeue, stale)| Op::Fenced { job, requeue, stale }),
        1 => any::<u8>().prop_map(|job| Op::Forged { job }),
    ]
}

const FAR_FUTURE: i64 = i64::MAX / 4;
/// Attempts a job gets under the requeue policy here.
const MAX_ATTEMPTS: u32 = 2;

/// Runs one operation; `ids` are the jobs known when its batch started.
async fn run(store: Store, ids: Vec<String>, op: Op) {
    let pick = |i: u8| (!ids.is_empty()).then(|| ids[i as usize % ids.len()].clone());
    let id = match &op {
        Op::Submit => {
            let job = store
                .submit(
                    NewJob {
                        report: "demo-fast".into(),
                        params: BTreeMap::new(),
                        submitted_by: "prop".into(),
                        config: None,
                    },
                    1,
                )
                .await
                .unwrap();
            assert_eq!(job.status, JobStatus::Queued);
            return;
        }
        Op::Claim { worker } => {
            store
                .claim(&format!("w{worker}"), &["demo-fast".to_string()], 2)
                .await
                .unwrap();
            return;
        }
        Op::Cancel { job }
        | Op::StageStarted { job, .. }
        | Op::Progress { job }
        | Op::Delivered { job }
        | Op::Ack { job }
        | Op::Finish { job, .. }
        | Op::Timeout { job }
        | Op::WorkerLost { job, .. }
        | Op::Fenced { job, .. }
        | Op::Forged { job } => match pick(*job) {
            Some(id) => id,
            None => return,
        },
    };
    // Messages name the attempt the sender believes in; a stale one names the previous.
    let current = store.get(&id).await.unwrap().unwrap().attempt;
    let attempt = |stale: bool| {
        if stale {
            current.saturating_sub(1)
        } else {
            current
        }
    };
    let event = match op {
        Op::Cancel { .. } => JobEvent::Cancel {
            actor: "admin".into(),
            reason: String::new(),
            deadline: 100,
        },
        Op::StageStarted { stale, .. } => JobEvent::StageStarted {
            attempt: attempt(stale),
            stage: Stage::Transform,
        },
        Op::Progress { .. } => JobEvent::Progress {
            attempt: current,
            stage: Stage::Transform,
            fraction: 0.5,
        },
        Op::Delivered { .. } => JobEvent::CancelDelivered {
            attempt: current,
            worker_id: "w".into(),
            redelivery: false,
        },
        Op::Ack { .. } => JobEvent::CancelAcknowledged {
            attempt: current,
            stage: Stage::Transform,
            past_point_of_no_return: false,
        },
        Op::Finish { kind, stale, .. } => JobEvent::Finished {
            attempt: attempt(stale),
            outcome: match kind {
                0 => Outcome::Succeeded {
                    output: "/out".into(),
                },
                1 => Outcome::Failed {
                    stage: Stage::Transform,
                    error: "boom".into(),
                },
                _ => Outcome::Cancelled {
                    stage: Stage::Transform,
                    stop_duration_us: 10,
                    forced: false,
                    reason: String::new(),
                },
            },
        },
        Op::Timeout { .. } => JobEvent::CancelTimedOut,
        Op::WorkerLost { requeue, .. } => JobEvent::WorkerLost {
            attempt: current,
            detail: "gone".into(),
            policy: policy(requeue),
        },
        Op::Fenced { requeue, stale, .. } => JobEvent::Fenced {
            attempt: attempt(stale),
            stage: Stage::Transform,
            stop_duration_us: 10,
            forced: false,
            reason: "lease lost".into(),
            policy: policy(requeue),
        },
        Op::Forged { .. } => {
            let forged = JobEvent::Finished {
                attempt: current,
                outcome: Outcome::Succeeded {
                    output: "/forged".into(),
                },
            };
            // Claims are by w0..w2: the intruder never holds a job, so nothing changes.
            let applied = store
                .apply_reported("intruder", &id, &forged, 50)
                .await
                .unwrap();
            assert!(applied.sequence.is_none(), "a forged outcome was written");
            assert!(
                matches!(
                    applied.decision,
                    Err(presswork_control_plane::job::Refusal::NotAssigned { .. })
                ),
                "{:?}",
                applied.decision
            );
            return;
        }
        Op::Submit | Op::Claim { .. } => unreachable!("handled above"),
    };
    let now = if matches!(event, JobEvent::CancelTimedOut) {
        FAR_FUTURE
    } else {
        50
    };
    let applied = store.apply(&id, &event, now).await.unwrap();
    if applied.sequence.is_some() {
        // Whatever was written is what the pure state machine allows.
        let decision = applied.decision.unwrap();
        assert!(decision.next.is_some());
    }
}

fn policy(requeue: bool) -> WorkerLostPolicy {
    if requeue {
        WorkerLostPolicy::Requeue {
            max_attempts: MAX_ATTEMPTS,
        }
    } else {
        WorkerLostPolicy::Fail
    }
}

fn allowed(from: JobStatus, to: JobStatus) -> bool {
    use JobStatus::*;
    from == to
        || matches!(
            (from, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Cancelling)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Queued)
                | (Cancelling, Cancelled)
                | (Cancelling, Succeeded)
                | (Cancelling, Failed)
        )
}

async fn check_invariants(store: &Store) {
    let changes = store.changes_after(0, 1_000_000).await.unwrap();
    assert!(
        changes.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences strictly increase"
    );
    let mut per_job: HashMap<String, Vec<(i64, JobStatus)>> = HashMap::new();
    for change in &changes {
        let status = JobStatus::try_from(change.job.status).unwrap();
        per_job
            .entry(change.job.id.clone())
            .or_default()
            .push((change.job.version, status));
    }
    for (id, history) in &per_job {
        let versions: Vec<i64> = history.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            versions,
            (1..=history.len() as i64).collect::<Vec<_>>(),
            "job {id}: no lost or duplicated change"
        );
        assert_eq!(history[0].1, JobStatus::Queued);
        let mut into: HashMap<JobStatus, usize> = HashMap::new();
        let mut queued_cancels = 0;
        let mut requeues = 0;
        for pair in history.windows(2) {
            let ((_, from), (_, to)) = (pair[0], pair[1]);
            assert!(
                allowed(from, to),
                "job {id}: {from:?} -> {to:?} is not a transition"
            );
            assert!(
                !from.is_terminal(),
                "job {id}: changed after reaching terminal {from:?}"
            );
            if from != to {
                *into.entry(to).or_default() += 1;
                if from == JobStatus::Queued && to == JobStatus::Cancelled {
                    queued_cancels += 1;
                }
                if from == JobStatus::Running && to == JobStatus::Queued {
                    requeues += 1;
                }
            }
        }
        let stored = store.get(id).await.unwrap().unwrap();
        assert_eq!(
            (stored.version, stored.status),
            *history.last().unwrap(),
            "job {id}: store matches its last change"
        );

        let log = store.log(id, 0).await.unwrap();
        let count = |event: &str| log.iter().filter(|e| e.event == event).count();
        let n = |s: JobStatus| into.get(&s).copied().unwrap_or(0);
        assert_eq!(count("job.submitted"), 1, "job {id}");
        assert_eq!(
            count("job.started"),
            n(JobStatus::Running),
            "job {id}: a log entry per claim"
        );
        assert_eq!(
            stored.attempt as usize,
            n(JobStatus::Running),
            "job {id}: every claim starts the next attempt"
        );
        assert!(
            stored.attempt <= MAX_ATTEMPTS,
            "job {id}: attempt {} is beyond the policy's {MAX_ATTEMPTS}",
            stored.attempt
        );
        assert_eq!(
            count("job.requeued"),
            requeues,
            "job {id}: a log entry per requeue"
        );
        if stored.status == JobStatus::Queued {
            assert_eq!(stored.worker_id, "", "job {id}: a queued job has no worker");
        }
        assert_eq!(count("job.succeeded"), n(JobStatus::Succeeded), "job {id}");
        assert_eq!(count("job.failed"), n(JobStatus::Failed), "job {id}");
        assert_eq!(count("job.cancelled"), n(JobStatus::Cancelled), "job {id}");
        assert_eq!(
            count("cancel.requested"),
            n(JobStatus::Cancelling) + queued_cancels,
            "job {id}"
        );
        let terminal_entries =
            count("job.succeeded") + count("job.failed") + count("job.cancelled");
        assert_eq!(
            terminal_entries,
            usize::from(stored.status.is_terminal()),
            "job {id}: one terminal entry iff terminal"
        );
        assert!(log.windows(2).all(|w| w[0].id < w[1].id));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_interleavings_keep_the_invariants(steps in prop::collection::vec(prop::collection::vec(op(), 1..4), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let db = support::sqlite().await;
            let mut ids: Vec<String> = Vec::new();
            for batch in steps {
                // Each batch runs concurrently: real races between the operations.
                let mut tasks = Vec::new();
                for op in batch {
                    let store = db.store.clone();
                    tasks.push(tokio::spawn(run(store, ids.clone(), op)));
                }
                for task in tasks {
                    task.await.unwrap();
                }
                // Pick up the jobs submitted in this batch, oldest first.
                let all = db.store.list(&JobFilter { statuses: vec![], before: 0, limit: 10_000 }).await.unwrap();
                ids = all.into_iter().rev().map(|j| j.id).collect();
            }
            check_invariants(&db.store).await;
        });
    }
}
