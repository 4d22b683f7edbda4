use presswork_proto::v1::{CancelOutcome, CancelResolution, JobStatus, Stage};

use super::*;

fn job(status: JobStatus) -> JobRecord {
    JobRecord {
        num: 1,
        id: "j".into(),
        report: "demo-fast".into(),
        params: BTreeMap::new(),
        status,
        stage: Stage::Unspecified,
        progress: 0.0,
        attempt: if status == JobStatus::Queued { 0 } else { 1 },
        worker_id: if status == JobStatus::Queued {
            String::new()
        } else {
            "w1".into()
        },
        version: 3,
        submitted_by: "alice".into(),
        created_at: 10,
        started_at: 0,
        finished_at: 0,
        error: String::new(),
        output: String::new(),
        cancel: None,
    }
}

fn cancel() -> JobEvent {
    JobEvent::Cancel {
        actor: "admin".into(),
        reason: "wrong data".into(),
        deadline: 30_100,
    }
}

fn cancelling() -> JobRecord {
    apply(&job(JobStatus::Running), &cancel(), 100)
        .unwrap()
        .next
        .unwrap()
}

fn events(d: &Decision) -> Vec<&'static str> {
    d.log.iter().map(|l| l.event).collect()
}

#[test]
fn claim_starts_a_new_attempt_on_the_worker() {
    let d = apply(
        &job(JobStatus::Queued),
        &JobEvent::Claim {
            worker_id: "w9".into(),
        },
        50,
    )
    .unwrap();
    let next = d.next.unwrap();
    assert_eq!(next.status, JobStatus::Running);
    assert_eq!(next.attempt, 1);
    assert_eq!(next.worker_id, "w9");
    assert_eq!(next.started_at, 50);
    assert_eq!(events(&Decision { next: None, ..d }), vec!["job.started"]);
}

#[test]
fn cancel_of_a_queued_job_is_immediate_and_final() {
    let d = apply(&job(JobStatus::Queued), &cancel(), 100).unwrap();
    assert_eq!(d.cancel_outcome, Some(CancelOutcome::CancelledWhileQueued));
    assert!(!d.send_cancel);
    let next = d.next.clone().unwrap();
    assert_eq!(next.status, JobStatus::Cancelled);
    let c = next.cancel.unwrap();
    assert_eq!(c.resolution, CancelResolution::CancelledWhileQueued);
    assert_eq!(
        (c.requested_by.as_str(), c.requested_at, c.stopped_at),
        ("admin", 100, 100)
    );
    assert_eq!(events(&d), vec!["cancel.requested", "job.cancelled"]);
    assert!(d.log[0].message.contains("admin") && d.log[0].message.contains("wrong data"));
}

#[test]
fn cancel_of_a_running_job_moves_it_to_cancelling_and_sends_the_cancel() {
    let d = apply(&job(JobStatus::Running), &cancel(), 100).unwrap();
    assert_eq!(d.cancel_outcome, Some(CancelOutcome::Cancelling));
    assert!(d.send_cancel);
    let next = d.next.clone().unwrap();
    assert_eq!(next.status, JobStatus::Cancelling);
    let c = next.cancel.unwrap();
    assert_eq!(
        (c.deadline, c.resolution),
        (30_100, CancelResolution::Pending)
    );
    assert_eq!(events(&d), vec!["cancel.requested"]);
}

#[test]
fn a_repeated_cancel_is_idempotent() {
    let d = apply(&cancelling(), &cancel(), 200).unwrap();
    assert_eq!(d.cancel_outcome, Some(CancelOutcome::AlreadyCancelling));
    assert!(d.next.is_none() && d.log.is_empty() && !d.send_cancel);
}

#[test]
fn terminal_jobs_refuse_cancels_with_br_002_and_everything_else() {
    for status in [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        assert_eq!(
            apply(&job(status), &cancel(), 1),
            Err(Refusal::NotCancellable { status })
        );
        assert_eq!(
            Refusal::NotCancellable { status }.to_string(),
            "Job is not in a cancellable state."
        );
        let finish = JobEvent::Finished {
            attempt: 1,
            outcome: Outcome::Succeeded { output: "x".into() },
        };
        assert_eq!(
            apply(&job(status), &finish, 1),
            Err(Refusal::Terminal { status })
        );
        assert_eq!(
            apply(&job(status), &JobEvent::CancelTimedOut, 1),
            Err(Refusal::Terminal { status })
        );
    }
}

#[test]
fn milestones_are_recorded_once_each() {
    let j = cancelling();
    let delivered = apply(
        &j,
        &JobEvent::CancelDelivered {
            attempt: 1,
            worker_id: "w1".into(),
            redelivery: false,
        },
        101,
    )
    .unwrap();
    let j = delivered.next.unwrap();
    assert_eq!(j.cancel.as_ref().unwrap().delivered_at, 101);
    let ack = JobEvent::CancelAcknowledged {
        attempt: 1,
        stage: Stage::Generate,
        past_point_of_no_return: false,
    };
    let acked = apply(&j, &ack, 102).unwrap();
    let j = acked.next.unwrap();
    assert_eq!(j.cancel.as_ref().unwrap().acknowledged_at, 102);
    let again = apply(&j, &ack, 103).unwrap();
    assert!(
        again.next.is_none(),
        "a duplicate acknowledgement changes nothing"
    );
    let stopped = JobEvent::Finished {
        attempt: 1,
        outcome: Outcome::Cancelled {
            stage: Stage::Generate,
            stop_duration_us: 1500,
            forced: false,
            reason: "wrong data".into(),
        },
    };
    let d = apply(&j, &stopped, 104).unwrap();
    let next = d.next.clone().unwrap();
    assert_eq!(next.status, JobStatus::Cancelled);
    let c = next.cancel.unwrap();
    assert_eq!(
        (c.stopped_at, c.stopped_stage, c.stop_duration_us),
        (104, Stage::Generate, 1500)
    );
    assert_eq!(c.resolution, CancelResolution::Stopped);
    assert_eq!(events(&d), vec!["cancel.stopped", "job.cancelled"]);
    assert!(d.log[0].message.contains("generate") && d.log[0].message.contains("1.500 ms"));
    assert_eq!(d.log[1].actor, "admin");
}

#[test]
fn a_job_that_finishes_before_the_cancel_keeps_its_real_status() {
    for (outcome, status) in [
        (
            Outcome::Succeeded {
                output: "/out/x.pdf".into(),
            },
            JobStatus::Succeeded,
        ),
        (
            Outcome::Failed {
                stage: Stage::Deliver,
                error: "disk full".into(),
            },
            JobStatus::Failed,
        ),
    ] {
        let d = apply(
            &cancelling(),
            &JobEvent::Finished {
                attempt: 1,
                outcome,
            },
            150,
        )
        .unwrap();
        let next = d.next.clone().unwrap();
        assert_eq!(next.status, status);
        assert_eq!(
            next.cancel.unwrap().resolution,
            CancelResolution::FinishedFirst
        );
        assert_eq!(d.log[0].event, "cancel.ignored");
        assert!(d.log[0].message.contains(status.short_name()));
    }
}

#[test]
fn a_stop_nobody_asked_for_is_a_failure() {
    let outcome = Outcome::Cancelled {
        stage: Stage::Ingest,
        stop_duration_us: 5,
        forced: false,
        reason: "worker shutting down".into(),
    };
    let d = apply(
        &job(JobStatus::Running),
        &JobEvent::Finished {
            attempt: 1,
            outcome,
        },
        10,
    )
    .unwrap();
    let next = d.next.unwrap();
    assert_eq!(next.status, JobStatus::Failed);
    assert_eq!(next.error, "stopped by the worker: worker shutting down");
}

#[test]
fn messages_from_an_earlier_attempt_are_refused() {
    let mut j = job(JobStatus::Running);
    j.attempt = 2;
    let late = JobEvent::Finished {
        attempt: 1,
        outcome: Outcome::Succeeded { output: "x".into() },
    };
    assert_eq!(
        apply(&j, &late, 1),
        Err(Refusal::StaleAttempt { current: 2, got: 1 })
    );
    let progress = JobEvent::Progress {
        attempt: 3,
        stage: Stage::Ingest,
        fraction: 0.5,
    };
    assert_eq!(
        apply(&j, &progress, 1),
        Err(Refusal::StaleAttempt { current: 2, got: 3 })
    );
}

#[test]
fn an_unconfirmed_cancel_times_out_only_after_its_deadline() {
    let j = cancelling();
    assert_eq!(
        apply(&j, &JobEvent::CancelTimedOut, 30_099),
        Err(Refusal::NotApplicable {
            status: JobStatus::Cancelling
        })
    );
    let d = apply(&j, &JobEvent::CancelTimedOut, 30_100).unwrap();
    assert!(d.force_stop);
    let next = d.next.clone().unwrap();
    assert_eq!(next.status, JobStatus::Failed);
    assert_eq!(next.cancel.unwrap().resolution, CancelResolution::TimedOut);
    assert_eq!(d.log[0].event, "cancel.timed_out");
    assert!(
        d.log[0]
            .message
            .contains("manual cancellation attempt timed out")
    );
    assert_eq!(
        apply(&job(JobStatus::Running), &JobEvent::CancelTimedOut, 99_999),
        Err(Refusal::NotApplicable {
            status: JobStatus::Running
        })
    );
}

#[test]
fn worker_loss_fails_running_and_cancelling_jobs() {
    let lost = JobEvent::WorkerLost {
        attempt: 1,
        detail: "no heartbeat".into(),
        policy: WorkerLostPolicy::Fail,
    };
    let d = apply(&job(JobStatus::Running), &lost, 5).unwrap();
    assert_eq!(d.next.unwrap().error, "worker lost: no heartbeat");
    let d = apply(&cancelling(), &lost, 5).unwrap();
    assert_eq!(
        d.next.unwrap().cancel.unwrap().resolution,
        CancelResolution::WorkerLost
    );
    assert_eq!(
        apply(
            &job(JobStatus::Queued),
            &JobEvent::WorkerLost {
                attempt: 0,
                detail: String::new(),
                policy: WorkerLostPolicy::Fail,
            },
            5
        ),
        Err(Refusal::NotApplicable {
            status: JobStatus::Queued
        })
    );
}

fn lost(attempt: u32, max_attempts: u32) -> JobEvent {
    JobEvent::WorkerLost {
        attempt,
        detail: "no heartbeat".into(),
        policy: WorkerLostPolicy::Requeue { max_attempts },
    }
}

fn finished(attempt: u32) -> JobEvent {
    JobEvent::Finished {
        attempt,
        outcome: Outcome::Succeeded {
            output: "/out/late.pdf".into(),
        },
    }
}

#[test]
fn worker_loss_requeues_a_running_job_while_attempts_remain() {
    let mut running = job(JobStatus::Running);
    running.stage = Stage::Generate;
    running.progress = 0.4;
    running.started_at = 20;
    let d = apply(&running, &lost(1, 3), 5).unwrap();
    let queued = d.next.clone().unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(
        (
            queued.attempt,
            queued.worker_id.as_str(),
            queued.stage,
            queued.progress,
            queued.started_at,
            queued.finished_at,
            queued.error.as_str()
        ),
        (1, "", Stage::Unspecified, 0.0, 0, 0, "")
    );
    assert_eq!(events(&d), vec!["job.requeued"]);
    assert_eq!(d.log[0].level, LogLevel::Warn);
    assert_eq!(d.log[0].stage, Stage::Generate);
    assert_eq!(
        d.log[0].message,
        "worker lost: no heartbeat; requeued after attempt 1 of 3"
    );

    // The lost attempt's late messages are refused while the job waits in the queue (same
    // attempt number: refused by the status) …
    for late in [
        finished(1),
        JobEvent::StageStarted {
            attempt: 1,
            stage: Stage::Deliver,
        },
        JobEvent::CancelAcknowledged {
            attempt: 1,
            stage: Stage::Deliver,
            past_point_of_no_return: false,
        },
        lost(1, 3),
    ] {
        assert_eq!(
            apply(&queued, &late, 6),
            Err(Refusal::NotApplicable {
                status: JobStatus::Queued
            }),
            "{late:?}"
        );
    }
    // … and once another worker claimed it (a new attempt: refused as stale).
    let again = apply(
        &queued,
        &JobEvent::Claim {
            worker_id: "w2".into(),
        },
        7,
    )
    .unwrap()
    .next
    .unwrap();
    assert_eq!((again.attempt, again.worker_id.as_str()), (2, "w2"));
    assert_eq!(
        apply(&again, &finished(1), 8),
        Err(Refusal::StaleAttempt { current: 2, got: 1 })
    );
    assert_eq!(
        apply(&again, &finished(2), 8).unwrap().next.unwrap().status,
        JobStatus::Succeeded
    );
}

#[test]
fn worker_loss_fails_the_last_attempt_and_never_requeues_a_cancel() {
    let mut last = job(JobStatus::Running);
    last.attempt = 3;
    let d = apply(&last, &lost(3, 3), 5).unwrap();
    let failed = d.next.clone().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        failed.error,
        "worker lost: no heartbeat (attempt 3 of 3: no attempts left)"
    );
    assert_eq!(events(&d), vec!["job.failed"]);
    // One attempt allowed in all: requeue behaves as fail.
    assert_eq!(
        apply(&job(JobStatus::Running), &lost(1, 1), 5)
            .unwrap()
            .next
            .unwrap()
            .status,
        JobStatus::Failed
    );
    // Someone asked for the job to stop: it fails, whatever the policy.
    let d = apply(&cancelling(), &lost(1, 3), 5).unwrap();
    let next = d.next.unwrap();
    assert_eq!(next.status, JobStatus::Failed);
    assert_eq!(next.error, "worker lost: no heartbeat");
    assert_eq!(
        next.cancel.unwrap().resolution,
        CancelResolution::WorkerLost
    );
    // A stale loss (an earlier attempt's worker) changes nothing.
    let mut second = job(JobStatus::Running);
    second.attempt = 2;
    assert_eq!(
        apply(&second, &lost(1, 3), 5),
        Err(Refusal::StaleAttempt { current: 2, got: 1 })
    );
}

fn fenced(attempt: u32, policy: WorkerLostPolicy) -> JobEvent {
    JobEvent::Fenced {
        attempt,
        stage: Stage::Transform,
        stop_duration_us: 40,
        forced: false,
        reason: "lease lost: no contact with the control plane for 2 s".into(),
        policy,
    }
}

#[test]
fn a_fenced_outcome_counts_as_a_lost_worker() {
    let requeue = WorkerLostPolicy::Requeue { max_attempts: 2 };
    // The worker came back before the sweeper called it lost: requeued by policy …
    let d = apply(&job(JobStatus::Running), &fenced(1, requeue), 9).unwrap();
    assert_eq!(events(&d), vec!["job.requeued"]);
    assert_eq!(
        d.log[0].message,
        "worker lost: worker w1 stopped the job itself (lease lost: no contact with the control plane for 2 s); requeued after attempt 1 of 2"
    );
    let queued = d.next.unwrap();
    assert_eq!(
        (queued.status, queued.attempt, queued.worker_id.as_str()),
        (JobStatus::Queued, 1, "")
    );
    // … and once queued (the sweeper requeued it first) or re-run, it is refused.
    assert_eq!(
        apply(&queued, &fenced(1, requeue), 10),
        Err(Refusal::NotApplicable {
            status: JobStatus::Queued
        })
    );
    // The last attempt, or the fail policy: failed as any stop the worker made on its own.
    let mut last = job(JobStatus::Running);
    last.attempt = 2;
    for (j, policy) in [
        (&last, requeue),
        (&job(JobStatus::Running), WorkerLostPolicy::Fail),
    ] {
        let d = apply(j, &fenced(j.attempt, policy), 9).unwrap();
        let failed = d.next.unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(
            failed.error,
            "stopped by the worker: lease lost: no contact with the control plane for 2 s"
        );
    }
    // A job being cancelled did stop: cancelled, whatever the policy.
    let d = apply(&cancelling(), &fenced(1, requeue), 9).unwrap();
    assert_eq!(d.next.as_ref().unwrap().status, JobStatus::Cancelled);
    assert!(events(&d).contains(&"job.cancelled"));
}

#[test]
fn the_transition_table_matches_the_design() {
    use JobStatus::*;
    let claim = JobEvent::Claim {
        worker_id: "w".into(),
    };
    let ok = JobEvent::Finished {
        attempt: 1,
        outcome: Outcome::Succeeded {
            output: String::new(),
        },
    };
    let stop = JobEvent::Finished {
        attempt: 1,
        outcome: Outcome::Cancelled {
            stage: Stage::Ingest,
            stop_duration_us: 0,
            forced: false,
            reason: String::new(),
        },
    };
    assert_eq!(transition(Queued, &claim), Ok(Running));
    assert_eq!(transition(Queued, &cancel()), Ok(Cancelled));
    assert_eq!(
        transition(Queued, &ok),
        Err(Refusal::NotApplicable { status: Queued })
    );
    assert_eq!(
        transition(Running, &claim),
        Err(Refusal::NotApplicable { status: Running })
    );
    assert_eq!(transition(Running, &cancel()), Ok(Cancelling));
    assert_eq!(transition(Running, &ok), Ok(Succeeded));
    assert_eq!(transition(Cancelling, &stop), Ok(Cancelled));
    assert_eq!(transition(Cancelling, &ok), Ok(Succeeded));
    assert_eq!(
        transition(Cancelling, &JobEvent::CancelTimedOut),
        Ok(Failed)
    );
    assert_eq!(
        transition(Cancelling, &claim),
        Err(Refusal::NotApplicable { status: Cancelling })
    );
    assert_eq!(transition(Running, &lost(1, 2)), Ok(Queued));
    assert_eq!(transition(Running, &lost(2, 2)), Ok(Failed));
    assert_eq!(transition(Cancelling, &lost(1, 2)), Ok(Failed));
    assert_eq!(
        transition(Queued, &lost(1, 2)),
        Err(Refusal::NotApplicable { status: Queued })
    );
}

#[test]
fn an_answer_that_overtakes_the_delivery_record_fills_it_in_first() {
    let j = cancelling();
    let ack = JobEvent::CancelAcknowledged {
        attempt: 1,
        stage: Stage::Ingest,
        past_point_of_no_return: false,
    };
    let d = apply(&j, &ack, 105).unwrap();
    assert_eq!(events(&d), vec!["cancel.delivered", "cancel.acknowledged"]);
    let j = d.next.unwrap();
    assert_eq!(
        j.cancel
            .as_ref()
            .map(|c| (c.delivered_at, c.acknowledged_at)),
        Some((105, 105))
    );
    // The late delivery record then changes nothing; a re-delivery after a reconnect is logged.
    let late = apply(
        &j,
        &JobEvent::CancelDelivered {
            attempt: 1,
            worker_id: "w1".into(),
            redelivery: false,
        },
        106,
    )
    .unwrap();
    assert!(late.next.is_none() && late.log.is_empty());
    let again = apply(
        &j,
        &JobEvent::CancelDelivered {
            attempt: 1,
            worker_id: "w1".into(),
            redelivery: true,
        },
        107,
    )
    .unwrap();
    assert_eq!(events(&again), vec!["cancel.delivered"]);
    assert_eq!(again.next.unwrap().cancel.unwrap().delivered_at, 105);

    let stop = Outcome::Cancelled {
        stage: Stage::Ingest,
        stop_duration_us: 5,
        forced: false,
        reason: String::new(),
    };
    let d = apply(
        &cancelling(),
        &JobEvent::Finished {
            attempt: 1,
            outcome: stop,
        },
        110,
    )
    .unwrap();
    // Nothing recorded before the outcome: delivery and acknowledgement come from it, in order.
    assert_eq!(
        events(&d),
        vec![
            "cancel.delivered",
            "cancel.acknowledged",
            "cancel.stopped",
            "job.cancelled"
        ]
    );
}

#[test]
fn a_stop_whose_acknowledgement_was_lost_records_it_from_the_outcome() {
    // Delivered, then the connection broke: the worker's acknowledgement was lost with it, and
    // only its outcome (which is re-sent until acknowledged) arrived.
    let j = cancelling();
    let delivered = apply(
        &j,
        &JobEvent::CancelDelivered {
            attempt: 1,
            worker_id: "w1".into(),
            redelivery: false,
        },
        101,
    )
    .unwrap()
    .next
    .unwrap();
    let stopped = JobEvent::Finished {
        attempt: 1,
        outcome: Outcome::Cancelled {
            stage: Stage::Ingest,
            stop_duration_us: 111,
            forced: false,
            reason: "restart".into(),
        },
    };
    let d = apply(&delivered, &stopped, 350).unwrap();
    assert_eq!(
        events(&d),
        vec!["cancel.acknowledged", "cancel.stopped", "job.cancelled"]
    );
    let c = d.next.unwrap().cancel.unwrap();
    assert_eq!(
        (c.delivered_at, c.acknowledged_at, c.stopped_at),
        (101, 350, 350)
    );
}
