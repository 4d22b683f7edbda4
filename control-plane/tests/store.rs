//! Store conformance: the same behaviour on SQLite and PostgreSQL.

#[macro_use]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};

use presswork_control_plane::job::{JobEvent, Origin, Outcome, Refusal, WorkerLostPolicy};
use presswork_control_plane::store::{
    JobFilter, NewJob, NewLogLine, SilentWorkerJob, Store, StoreError,
};
use presswork_proto::v1::{CancelOutcome, CancelResolution, JobStatus, LogLevel, Stage};

fn new_job(report: &str) -> NewJob {
    NewJob {
        report: report.into(),
        params: BTreeMap::from([("k".to_string(), "v".to_string())]),
        submitted_by: "alice".into(),
        config: None,
    }
}

fn reports() -> Vec<String> {
    vec!["demo-fast".into(), "demo-slow".into()]
}

fn cancel(now: i64) -> JobEvent {
    JobEvent::Cancel {
        actor: "admin".into(),
        reason: "test".into(),
        deadline: now + 1000,
    }
}

async fn submit_get_list_and_page(store: Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = store.submit(new_job("demo-fast"), 1000 + i).await.unwrap();
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(job.version, 1);
        assert_eq!(job.params.get("k").map(String::as_str), Some("v"));
        ids.push(job.id);
    }
    let got = store.get(&ids[2]).await.unwrap().unwrap();
    assert_eq!(
        (
            got.report.as_str(),
            got.submitted_by.as_str(),
            got.created_at
        ),
        ("demo-fast", "alice", 1002)
    );
    assert!(
        store
            .get("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap()
            .is_none()
    );

    let mut seen = Vec::new();
    let mut before = 0;
    loop {
        let page = store
            .list(&JobFilter {
                statuses: vec![],
                before,
                limit: 2,
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().unwrap().num;
        seen.extend(page.into_iter().map(|j| j.id));
    }
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    store.apply(&ids[0], &cancel(2000), 2000).await.unwrap();
    let cancelled = store
        .list(&JobFilter {
            statuses: vec![JobStatus::Cancelled],
            before: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        cancelled.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![ids[0].clone()]
    );
    let queued = store
        .list(&JobFilter {
            statuses: vec![JobStatus::Queued, JobStatus::Running],
            before: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 4);
}

async fn claim_takes_the_oldest_job_the_worker_can_run(store: Store) {
    let other = store.submit(new_job("other-report"), 1).await.unwrap();
    let first = store.submit(new_job("demo-fast"), 2).await.unwrap();
    let second = store.submit(new_job("demo-slow"), 3).await.unwrap();
    let a = store.claim("w1", &reports(), 10).await.unwrap().unwrap();
    assert_eq!(a.id, first.id);
    assert_eq!(
        (a.status, a.attempt, a.worker_id.as_str(), a.version),
        (JobStatus::Running, 1, "w1", 2)
    );
    let b = store.claim("w2", &reports(), 11).await.unwrap().unwrap();
    assert_eq!(b.id, second.id);
    assert!(
        store.claim("w1", &reports(), 12).await.unwrap().is_none(),
        "other-report is not for this worker"
    );
    assert_eq!(
        store.get(&other.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}

async fn a_batch_claim_takes_the_oldest_jobs_each_once(store: Store) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(store.submit(new_job("demo-fast"), i).await.unwrap().id);
    }
    let other = store.submit(new_job("other-report"), 5).await.unwrap();
    let first = store.claim_batch("w1", &reports(), 3, 10).await.unwrap();
    let first_ids: Vec<&str> = first.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        first_ids,
        ids[..3].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        first
            .iter()
            .all(|j| (j.status, j.attempt, j.worker_id.as_str(), j.version)
                == (JobStatus::Running, 1, "w1", 2))
    );
    let rest = store.claim_batch("w2", &reports(), 10, 11).await.unwrap();
    let rest_ids: Vec<&str> = rest.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        rest_ids,
        ids[3..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert!(
        store
            .claim_batch("w1", &reports(), 10, 12)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.get(&other.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    for id in &ids {
        let log = store.log(id, 0).await.unwrap();
        assert_eq!(
            log.iter().filter(|e| e.event == "job.started").count(),
            1,
            "one job.started per claimed job"
        );
    }
}

async fn concurrent_claimers_never_share_a_job(store: Store) {
    for i in 0..60 {
        store.submit(new_job("demo-fast"), i).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) = store
                .claim(&format!("w{w}"), &reports(), 100)
                .await
                .unwrap()
            {
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60, "every job claimed");
    assert_eq!(unique.len(), 60, "no job claimed twice");
}

/// AC-006 at the store: a claim and a cancel of the same queued job; exactly one wins.
async fn claim_and_cancel_race_has_exactly_one_winner(store: Store) {
    let mut jobs = Vec::new();
    for i in 0..40 {
        jobs.push(store.submit(new_job("demo-fast"), i).await.unwrap().id);
    }
    let claimer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut claimed = HashSet::new();
            while let Some(job) = store.claim("w1", &reports(), 100).await.unwrap() {
                claimed.insert(job.id);
            }
            claimed
        })
    };
    let mut outcomes = HashMap::new();
    for id in &jobs {
        let applied = store.apply(id, &cancel(100), 100).await.unwrap();
        outcomes.insert(
            id.clone(),
            applied.decision.unwrap().cancel_outcome.unwrap(),
        );
    }
    let claimed = claimer.await.unwrap();
    for id in &jobs {
        let job = store.get(id).await.unwrap().unwrap();
        match outcomes[id] {
            CancelOutcome::CancelledWhileQueued => {
                assert!(
                    !claimed.contains(id),
                    "job {id} was both cancelled while queued and claimed"
                );
                assert_eq!((job.status, job.attempt), (JobStatus::Cancelled, 0));
            }
            CancelOutcome::Cancelling => {
                assert!(claimed.contains(id));
                assert_eq!(job.status, JobStatus::Cancelling);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

async fn cancel_lifecycle_records_milestones_events_and_log(store: Store) {
    let sub = store.submit(new_job("demo-slow"), 1).await.unwrap();
    let job = store.claim("w1", &reports(), 2).await.unwrap().unwrap();
    store
        .apply(
            &job.id,
            &JobEvent::StageStarted {
                attempt: 1,
                stage: Stage::Generate,
            },
            3,
        )
        .await
        .unwrap();
    let applied = store.apply(&job.id, &cancel(4), 4).await.unwrap();
    assert_eq!(applied.job.status, JobStatus::Cancelling);
    let again = store.apply(&job.id, &cancel(5), 5).await.unwrap();
    assert_eq!(
        again.decision.unwrap().cancel_outcome,
        Some(CancelOutcome::AlreadyCancelling)
    );
    assert!(
        again.sequence.is_none(),
        "an idempotent cancel writes nothing"
    );
    store
        .apply(
            &job.id,
            &JobEvent::CancelDelivered {
                attempt: 1,
                worker_id: "w1".into(),
                redelivery: false,
            },
            6,
        )
        .await
        .unwrap();
    store
        .apply(
            &job.id,
            &JobEvent::CancelAcknowledged {
                attempt: 1,
                stage: Stage::Generate,
                past_point_of_no_return: false,
            },
            7,
        )
        .await
        .unwrap();
    let stop = Outcome::Cancelled {
        stage: Stage::Generate,
        stop_duration_us: 900,
        forced: false,
        reason: "test".into(),
    };
    let done = store
        .apply(
            &job.id,
            &JobEvent::Finished {
                attempt: 1,
                outcome: stop.clone(),
            },
            8,
        )
        .await
        .unwrap();
    assert_eq!(done.job.status, JobStatus::Cancelled);
    let c = done.job.cancel.clone().unwrap();
    assert_eq!(
        (
            c.requested_at,
            c.delivered_at,
            c.acknowledged_at,
            c.stopped_at
        ),
        (4, 6, 7, 8)
    );
    assert_eq!(
        (c.stopped_stage, c.stop_duration_us, c.resolution),
        (Stage::Generate, 900, CancelResolution::Stopped)
    );
    // Read back from the store, not just from the returned value.
    assert_eq!(store.get(&job.id).await.unwrap().unwrap(), done.job);

    // Duplicate outcome: refused, nothing written.
    let dup = store
        .apply(
            &job.id,
            &JobEvent::Finished {
                attempt: 1,
                outcome: stop,
            },
            9,
        )
        .await
        .unwrap();
    assert_eq!(
        dup.decision.unwrap_err(),
        Refusal::Terminal {
            status: JobStatus::Cancelled
        }
    );

    let log: Vec<_> = store
        .log(&job.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        log,
        vec![
            "job.submitted",
            "job.started",
            "stage.started",
            "cancel.requested",
            "cancel.delivered",
            "cancel.acknowledged",
            "cancel.stopped",
            "job.cancelled"
        ]
    );
    let changes = store.changes_after(0, 100).await.unwrap();
    let versions: Vec<_> = changes
        .iter()
        .map(|c| (c.job.id.clone(), c.job.version))
        .collect();
    assert_eq!(
        versions,
        (1..=7).map(|v| (sub.id.clone(), v)).collect::<Vec<_>>()
    );
    assert!(changes.windows(2).all(|w| w[0].sequence < w[1].sequence));
    assert_eq!(
        store.last_sequence().await.unwrap(),
        changes.last().unwrap().sequence
    );
    let (seq, snapshot) = store.snapshot().await.unwrap();
    assert_eq!(seq, changes.last().unwrap().sequence);
    assert_eq!(snapshot, vec![done.job]);
}

async fn worker_log_lines_only_for_the_live_attempt(store: Store) {
    store.submit(new_job("demo-fast"), 1).await.unwrap();
    let job = store.claim("w1", &reports(), 2).await.unwrap().unwrap();
    let line = |attempt, message| NewLogLine {
        job_id: &job.id,
        attempt,
        worker_id: "w1",
        stage: Stage::Ingest,
        level: LogLevel::Info,
        message,
    };
    assert!(
        store
            .append_worker_log(line(1, "read 10 rows"), 3)
            .await
            .unwrap()
    );
    assert!(
        !store
            .append_worker_log(line(2, "from the future"), 3)
            .await
            .unwrap()
    );
    let ok = Outcome::Succeeded {
        output: "/out/x.pdf".into(),
    };
    store
        .apply(
            &job.id,
            &JobEvent::Finished {
                attempt: 1,
                outcome: ok,
            },
            4,
        )
        .await
        .unwrap();
    assert!(
        !store
            .append_worker_log(line(1, "too late"), 5)
            .await
            .unwrap()
    );
    let messages: Vec<_> = store
        .log(&job.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(messages.contains(&"read 10 rows".to_string()));
    assert!(
        !messages
            .iter()
            .any(|m| m == "from the future" || m == "too late")
    );
}

async fn sweeper_queries_find_overdue_cancels_and_silent_workers(store: Store) {
    store.submit(new_job("demo-fast"), 1).await.unwrap();
    store.submit(new_job("demo-fast"), 1).await.unwrap();
    store.worker_connected("w1", "one", 2, 100).await.unwrap();
    store.worker_connected("w2", "two", 2, 100).await.unwrap();
    let a = store.claim("w1", &reports(), 100).await.unwrap().unwrap();
    let b = store.claim("w2", &reports(), 100).await.unwrap().unwrap();
    store
        .apply(
            &a.id,
            &JobEvent::Cancel {
                actor: "admin".into(),
                reason: String::new(),
                deadline: 500,
            },
            100,
        )
        .await
        .unwrap();
    assert!(store.overdue_cancels(499).await.unwrap().is_empty());
    assert_eq!(
        store.overdue_cancels(500).await.unwrap(),
        vec![a.id.clone()]
    );
    store.worker_seen("w2", 1000).await.unwrap();
    let silent = store.jobs_of_silent_workers(900).await.unwrap();
    assert_eq!(
        silent,
        vec![SilentWorkerJob {
            job_id: a.id.clone(),
            attempt: 1,
            worker_id: "w1".to_string(),
            status: JobStatus::Cancelling,
            last_seen_at: 100,
        }]
    );
    // A worker never recorded (its row is missing) is silent too, seen at 0.
    store.submit(new_job("demo-fast"), 1).await.unwrap();
    let c = store.claim("w3", &reports(), 100).await.unwrap().unwrap();
    let silent = store.jobs_of_silent_workers(900).await.unwrap();
    assert_eq!(
        silent
            .iter()
            .map(|s| (s.job_id.clone(), s.status, s.last_seen_at))
            .collect::<Vec<_>>(),
        vec![
            (a.id.clone(), JobStatus::Cancelling, 100),
            (c.id.clone(), JobStatus::Running, 0)
        ]
    );
    let live = store.live_jobs_of_worker("w2").await.unwrap();
    assert_eq!(
        live.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![b.id]
    );
}

/// A worker's batch of outcomes races single-job writes (delivery records, cancels) on the
/// same jobs, and claim batches on others: every write lands, none deadlocks.
async fn batched_and_single_writes_race_without_deadlock(store: Store) {
    for round in 0..4 {
        let mut ids = Vec::new();
        for i in 0..24 {
            ids.push(
                store
                    .submit(new_job("demo-fast"), round * 100 + i)
                    .await
                    .unwrap()
                    .id,
            );
        }
        let claimed = store.claim_batch("w1", &reports(), 24, 1).await.unwrap();
        assert_eq!(claimed.len(), 24);
        for id in &ids {
            store.apply(id, &cancel(2), 2).await.unwrap();
        }
        for i in 0..8 {
            store
                .submit(new_job("demo-slow"), round * 100 + 50 + i)
                .await
                .unwrap();
        }
        let outcomes: Vec<(String, JobEvent)> = ids
            .iter()
            .map(|id| {
                let event = JobEvent::Finished {
                    attempt: 1,
                    outcome: Outcome::Cancelled {
                        stage: Stage::Ingest,
                        stop_duration_us: 5,
                        forced: false,
                        reason: "test".into(),
                    },
                };
                (id.clone(), event)
            })
            .collect();
        let batch = {
            let store = store.clone();
            tokio::spawn(async move { store.apply_batch(&outcomes, Origin::Worker("w1"), 3).await })
        };
        let singles: Vec<_> = ids
            .iter()
            .rev()
            .map(|id| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    let delivered = JobEvent::CancelDelivered {
                        attempt: 1,
                        worker_id: "w1".into(),
                        redelivery: false,
                    };
                    store.apply(&id, &delivered, 3).await
                })
            })
            .collect();
        let claims = {
            let store = store.clone();
            tokio::spawn(async move { store.claim_batch("w2", &reports(), 8, 3).await })
        };
        for result in batch.await.unwrap().unwrap() {
            let applied = result.unwrap();
            assert_eq!(applied.job.status, JobStatus::Cancelled);
        }
        for single in singles {
            single.await.unwrap().unwrap();
        }
        assert_eq!(claims.await.unwrap().unwrap().len(), 8);
    }
}

fn finished(attempt: u32, outcome: Outcome) -> JobEvent {
    JobEvent::Finished { attempt, outcome }
}

fn succeeded() -> Outcome {
    Outcome::Succeeded {
        output: "report.pdf".into(),
    }
}

fn stopped() -> Outcome {
    Outcome::Cancelled {
        stage: Stage::Ingest,
        stop_duration_us: 5,
        forced: false,
        reason: "test".into(),
    }
}

async fn log_events(store: &Store, id: &str) -> Vec<String> {
    store
        .log(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// A worker's batch of outcomes is one transaction, but each outcome is its own
/// compare-and-set: a job cancelled meanwhile, a stale attempt, an unknown job and a duplicate
/// neither break nor change the others, and every change comes with its log entries and its
/// change event.
async fn an_outcome_batch_applies_each_outcome_on_its_own(store: Store) {
    for i in 0..4 {
        store.submit(new_job("demo-fast"), i).await.unwrap();
    }
    let claimed = store.claim_batch("w1", &reports(), 4, 10).await.unwrap();
    let [a, b, c, d] = [0, 1, 2, 3].map(|i| claimed[i].id.clone());
    // Meanwhile, a and d are cancelled.
    for id in [&a, &d] {
        let applied = store.apply(id, &cancel(11), 11).await.unwrap();
        assert_eq!(applied.job.status, JobStatus::Cancelling);
    }
    let sequence_before = store.last_sequence().await.unwrap();
    let unknown = "00000000-0000-0000-0000-000000000000".to_string();
    let batch = vec![
        (b.clone(), finished(1, succeeded())),
        // Finished before the cancel took effect (AC-005): the real status is kept.
        (a.clone(), finished(1, succeeded())),
        // A late message from an attempt that is not c's.
        (c.clone(), finished(2, succeeded())),
        (unknown, finished(1, succeeded())),
        (d.clone(), finished(1, stopped())),
        // A duplicate of b's outcome in the same batch.
        (b.clone(), finished(1, succeeded())),
    ];
    let results = store
        .apply_batch(&batch, Origin::Worker("w1"), 12)
        .await
        .unwrap();
    assert_eq!(results.len(), batch.len());

    let b_done = results[0].as_ref().unwrap();
    assert_eq!(
        (b_done.job.status, b_done.job.version),
        (JobStatus::Succeeded, 3)
    );
    assert!(b_done.sequence.is_some());
    let a_done = results[1].as_ref().unwrap();
    assert_eq!(
        (a_done.job.status, a_done.job.version),
        (JobStatus::Succeeded, 4)
    );
    assert_eq!(
        a_done.job.cancel.as_ref().unwrap().resolution,
        CancelResolution::FinishedFirst
    );
    let c_refused = results[2].as_ref().unwrap();
    assert_eq!(
        c_refused.decision.as_ref().unwrap_err(),
        &Refusal::StaleAttempt { current: 1, got: 2 }
    );
    assert!(c_refused.sequence.is_none());
    assert!(matches!(results[3], Err(StoreError::NotFound(_))));
    let d_done = results[4].as_ref().unwrap();
    assert_eq!(d_done.job.status, JobStatus::Cancelled);
    let d_cancel = d_done.job.cancel.clone().unwrap();
    assert_eq!(
        (
            d_cancel.resolution,
            d_cancel.stopped_at,
            d_cancel.stopped_stage
        ),
        (CancelResolution::Stopped, 12, Stage::Ingest)
    );
    let duplicate = results[5].as_ref().unwrap();
    assert_eq!(
        duplicate.decision.as_ref().unwrap_err(),
        &Refusal::Terminal {
            status: JobStatus::Succeeded
        }
    );
    assert!(duplicate.sequence.is_none());

    // Read back from the store, not just from the returned values.
    assert_eq!(store.get(&a).await.unwrap().unwrap(), a_done.job);
    assert_eq!(store.get(&b).await.unwrap().unwrap(), b_done.job);
    assert_eq!(store.get(&d).await.unwrap().unwrap(), d_done.job);
    let c_now = store.get(&c).await.unwrap().unwrap();
    assert_eq!((c_now.status, c_now.version), (JobStatus::Running, 2));

    assert_eq!(
        log_events(&store, &a).await,
        [
            "job.submitted",
            "job.started",
            "cancel.requested",
            "cancel.ignored",
            "job.succeeded"
        ]
    );
    assert_eq!(
        log_events(&store, &b).await,
        ["job.submitted", "job.started", "job.succeeded"]
    );
    assert_eq!(
        log_events(&store, &c).await,
        ["job.submitted", "job.started"]
    );
    assert_eq!(
        log_events(&store, &d).await,
        [
            "job.submitted",
            "job.started",
            "cancel.requested",
            // The outcome proves the cancel reached the worker and was acted on: the delivery
            // and acknowledgement milestones are filled in.
            "cancel.delivered",
            "cancel.acknowledged",
            "cancel.stopped",
            "job.cancelled"
        ]
    );
    let changes: HashSet<(String, i64)> = store
        .changes_after(sequence_before, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.job.id, c.job.version))
        .collect();
    assert_eq!(changes, HashSet::from([(b, 3), (a, 4), (d, 4)]));
}

/// AC-006 with batch claims: claims of several queued jobs at once race cancels of the same
/// jobs; each job has exactly one winner.
async fn batch_claims_and_cancels_race_with_one_winner_each(store: Store) {
    let mut jobs = Vec::new();
    for i in 0..40 {
        jobs.push(store.submit(new_job("demo-fast"), i).await.unwrap().id);
    }
    let claimer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut claimed = HashSet::new();
            loop {
                let batch = store.claim_batch("w1", &reports(), 4, 100).await.unwrap();
                if batch.is_empty() {
                    return claimed;
                }
                for job in batch {
                    assert!(claimed.insert(job.id), "a job claimed twice");
                }
            }
        })
    };
    let mut outcomes = HashMap::new();
    for id in &jobs {
        let applied = store.apply(id, &cancel(100), 100).await.unwrap();
        outcomes.insert(
            id.clone(),
            applied.decision.unwrap().cancel_outcome.unwrap(),
        );
    }
    let claimed = claimer.await.unwrap();
    for id in &jobs {
        let job = store.get(id).await.unwrap().unwrap();
        match outcomes[id] {
            CancelOutcome::CancelledWhileQueued => {
                assert!(!claimed.contains(id), "job {id} cancelled and claimed");
                assert_eq!((job.status, job.attempt), (JobStatus::Cancelled, 0));
            }
            CancelOutcome::Cancelling => {
                assert!(claimed.contains(id));
                assert_eq!((job.status, job.attempt), (JobStatus::Cancelling, 1));
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}

/// A worker's batch of outcomes races cancels of the same jobs (on PostgreSQL an outcome may
/// lose its compare-and-set inside the batch and is applied again on its own): every job ends
/// SUCCEEDED once, and each cancel's answer agrees with the job's log and change events.
async fn an_outcome_batch_and_cancels_race_consistently(store: Store) {
    for round in 0..3 {
        for i in 0..16 {
            store
                .submit(new_job("demo-fast"), round * 100 + i)
                .await
                .unwrap();
        }
        let ids: Vec<String> = store
            .claim_batch("w1", &reports(), 16, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(ids.len(), 16);
        let outcomes: Vec<(String, JobEvent)> = ids
            .iter()
            .map(|id| (id.clone(), finished(1, succeeded())))
            .collect();
        let batch = {
            let store = store.clone();
            tokio::spawn(async move { store.apply_batch(&outcomes, Origin::Worker("w1"), 3).await })
        };
        let cancels: Vec<_> = ids
            .iter()
            .map(|id| {
                let store = store.clone();
                let id = id.clone();
                tokio::spawn(async move { store.apply(&id, &cancel(2), 2).await })
            })
            .collect();
        for result in batch.await.unwrap().unwrap() {
            let applied = result.unwrap();
            assert!(applied.decision.is_ok() && applied.sequence.is_some());
            assert_eq!(applied.job.status, JobStatus::Succeeded);
        }
        let changes = store.changes_after(0, 10_000).await.unwrap();
        for (id, cancelled) in ids.iter().zip(cancels) {
            let answer = cancelled.await.unwrap().unwrap();
            let job = store.get(id).await.unwrap().unwrap();
            assert_eq!(job.status, JobStatus::Succeeded);
            let log = log_events(&store, id).await;
            assert_eq!(log.iter().filter(|e| *e == "job.succeeded").count(), 1);
            match answer.decision {
                Ok(decision) => {
                    assert_eq!(decision.cancel_outcome, Some(CancelOutcome::Cancelling));
                    assert!(log.contains(&"cancel.requested".to_string()));
                    assert!(log.contains(&"cancel.ignored".to_string()));
                    assert_eq!(
                        job.cancel.map(|c| c.resolution),
                        Some(CancelResolution::FinishedFirst)
                    );
                    assert_eq!(job.version, 4);
                }
                Err(refusal) => {
                    assert_eq!(
                        refusal,
                        Refusal::NotCancellable {
                            status: JobStatus::Succeeded
                        }
                    );
                    assert!(!log.contains(&"cancel.requested".to_string()));
                    assert_eq!(job.version, 3);
                }
            }
            // One change event per version, none missing.
            let versions: Vec<i64> = changes
                .iter()
                .filter(|c| c.job.id == *id)
                .map(|c| c.job.version)
                .collect();
            assert_eq!(versions, (1..=job.version).collect::<Vec<_>>());
        }
    }
}

fn lost_requeue(attempt: u32) -> JobEvent {
    JobEvent::WorkerLost {
        attempt,
        detail: "no heartbeat from worker w1".into(),
        policy: WorkerLostPolicy::Requeue { max_attempts: 2 },
    }
}

/// Worker loss under the requeue policy: one compare-and-set back to QUEUED with its log entry
/// and change event; whatever the lost attempt sends later is refused and writes nothing, both
/// while the job waits in the queue and once another worker runs it; the last attempt fails.
async fn worker_loss_requeues_and_refuses_the_lost_attempt(store: Store) {
    let job = store.submit(new_job("demo-fast"), 1).await.unwrap();
    let first = store.claim("w1", &reports(), 2).await.unwrap().unwrap();
    assert_eq!(first.attempt, 1);
    // Two replicas' sweepers find the same silent worker: exactly one requeue applies.
    let lost = lost_requeue(1);
    let (x, y) = tokio::join!(
        store.apply(&job.id, &lost, 10),
        store.apply(&job.id, &lost, 10)
    );
    let applied = [x.unwrap(), y.unwrap()];
    assert_eq!(
        applied.iter().filter(|a| a.sequence.is_some()).count(),
        1,
        "one requeue: {applied:?}"
    );
    let queued = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (queued.status, queued.attempt, queued.worker_id.as_str()),
        (JobStatus::Queued, 1, "")
    );
    let log = store.log(&job.id, 0).await.unwrap();
    let requeued: Vec<_> = log.iter().filter(|e| e.event == "job.requeued").collect();
    assert_eq!(requeued.len(), 1);
    assert_eq!(
        requeued[0].message,
        "worker lost: no heartbeat from worker w1; requeued after attempt 1 of 2"
    );
    let changes = store.changes_after(0, 100).await.unwrap();
    assert_eq!(
        changes
            .iter()
            .filter(|c| c.job.id == job.id)
            .map(|c| JobStatus::try_from(c.job.status).unwrap())
            .collect::<Vec<_>>(),
        vec![JobStatus::Queued, JobStatus::Running, JobStatus::Queued]
    );

    // The fenced worker comes back with the lost attempt's outcome and a log line: refused.
    let late = JobEvent::Finished {
        attempt: 1,
        outcome: Outcome::Succeeded {
            output: "/out/late.pdf".into(),
        },
    };
    let applied = store.apply(&job.id, &late, 11).await.unwrap();
    assert_eq!(applied.sequence, None);
    assert_eq!(
        applied.decision.unwrap_err(),
        Refusal::NotApplicable {
            status: JobStatus::Queued
        }
    );
    let batch = store
        .apply_batch(&[(job.id.clone(), late.clone())], Origin::Worker("w1"), 11)
        .await
        .unwrap();
    assert!(batch[0].as_ref().unwrap().sequence.is_none());
    let line = NewLogLine {
        job_id: &job.id,
        attempt: 1,
        worker_id: "w1",
        stage: Stage::Deliver,
        level: LogLevel::Info,
        message: "late line",
    };
    assert!(!store.append_worker_log(line, 11).await.unwrap());
    assert_eq!(store.log(&job.id, 0).await.unwrap().len(), log.len());

    // Another worker claims it: attempt 2. The old attempt is now stale.
    let second = store.claim("w2", &reports(), 12).await.unwrap().unwrap();
    assert_eq!((second.id.as_str(), second.attempt), (job.id.as_str(), 2));
    let applied = store.apply(&job.id, &late, 13).await.unwrap();
    assert_eq!(
        applied.decision.unwrap_err(),
        Refusal::StaleAttempt { current: 2, got: 1 }
    );
    // The second (last) attempt's worker is lost too: the job fails.
    store.apply(&job.id, &lost_requeue(2), 14).await.unwrap();
    let failed = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        failed.error,
        "worker lost: no heartbeat from worker w1 (attempt 2 of 2: no attempts left)"
    );
    let log = store.log(&job.id, 0).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        vec![
            "job.submitted",
            "job.started",
            "job.requeued",
            "job.started",
            "job.failed"
        ]
    );
}

/// `current` (the cancel path's read) is the job as stored after every kind of write: a claim,
/// a single event, a worker's outcome batch, a requeue and a cancel, for jobs that stay live
/// and jobs that end.
async fn the_current_job_is_the_job_as_stored_after_every_kind_of_write(store: Store) {
    async fn same(store: &Store, id: &str, after: &str) {
        let stored = store.get(id).await.unwrap().unwrap();
        let current = store.current(id).await.unwrap().unwrap();
        assert_eq!(current, stored, "after {after}");
    }
    let a = store.submit(new_job("demo-fast"), 1).await.unwrap().id;
    let b = store.submit(new_job("demo-fast"), 1).await.unwrap().id;
    let c = store.submit(new_job("demo-fast"), 1).await.unwrap().id;
    for job in [&a, &b, &c] {
        same(&store, job, "submit").await;
    }
    let claimed = store.claim_batch("w1", &reports(), 3, 2).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for job in [&a, &b, &c] {
        same(&store, job, "claim").await;
    }
    let started = JobEvent::StageStarted {
        attempt: 1,
        stage: Stage::Ingest,
    };
    store.apply(&a, &started, 3).await.unwrap();
    same(&store, &a, "stage started").await;
    store.apply(&b, &cancel(4), 4).await.unwrap();
    same(&store, &b, "cancel").await;
    // One batch: b stops (CANCELLED), a finishes (SUCCEEDED).
    let results = store
        .apply_batch(
            &[
                (b.clone(), finished(1, stopped())),
                (a.clone(), finished(1, succeeded())),
            ],
            Origin::Worker("w1"),
            5,
        )
        .await
        .unwrap();
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|a| a.sequence.is_some()))
    );
    same(&store, &a, "outcome batch").await;
    same(&store, &b, "outcome batch").await;
    store.apply(&c, &lost_requeue(1), 6).await.unwrap();
    same(&store, &c, "requeue").await;
    let again = store.claim("w2", &reports(), 7).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempt), (c.as_str(), 2));
    same(&store, &c, "second claim").await;
    // A cancel that starts from the current job and one that reads it give the same answer.
    let applied = store.apply(&a, &cancel(8), 8).await.unwrap();
    assert_eq!(
        applied.decision.unwrap_err(),
        Refusal::NotCancellable {
            status: JobStatus::Succeeded
        }
    );
    let seen = store.current(&c).await.unwrap().unwrap();
    let applied = store.apply_seen(seen, &cancel(9), 9).await.unwrap();
    assert_eq!(
        applied.decision.unwrap().cancel_outcome,
        Some(CancelOutcome::Cancelling)
    );
    same(&store, &c, "cancel of the second attempt").await;
}

/// `apply_seen` starts from the caller's read; when the job changed since, the compare-and-set
/// misses and the event is applied to the job as stored — never to the stale copy.
async fn an_event_applied_to_a_stale_read_applies_to_the_job_as_stored(store: Store) {
    let mut changes = store.hub().subscribe_jobs();
    let mut log = store.hub().subscribe_log();
    let queued = store.submit(new_job("demo-fast"), 1).await.unwrap();
    let claimed = store.claim("w1", &reports(), 2).await.unwrap().unwrap();
    assert_eq!(claimed.id, queued.id);
    // `queued` says QUEUED: applied to it, the cancel would be "cancelled while queued".
    let applied = store
        .apply_seen(queued.clone(), &cancel(3), 3)
        .await
        .unwrap();
    let decision = applied.decision.unwrap();
    assert_eq!(decision.cancel_outcome, Some(CancelOutcome::Cancelling));
    assert_eq!(
        (applied.job.status, applied.job.version),
        (JobStatus::Cancelling, claimed.version + 1)
    );
    let stored = store.get(&queued.id).await.unwrap().unwrap();
    assert_eq!(stored, applied.job);

    // What was published is what was stored: the change at its sequence, the entries with
    // their ids.
    let mut last = None;
    while let Ok(change) = changes.try_recv() {
        last = Some(change);
    }
    let last = last.expect("the cancel was published");
    assert_eq!(Some(last.sequence), applied.sequence);
    assert_eq!(last.job.status, JobStatus::Cancelling as i32);
    assert_eq!(store.last_sequence().await.unwrap(), last.sequence);
    let mut published = Vec::new();
    while let Ok(entry) = log.try_recv() {
        published.push((entry.id, entry.event.clone()));
    }
    let kept: Vec<(u64, String)> = store
        .log(&queued.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.event))
        .collect();
    assert_eq!(published, kept);
    assert_eq!(
        kept.iter().filter(|(_, e)| e == "cancel.requested").count(),
        1,
        "{kept:?}"
    );

    // A stale read of a cancelling job that has since stopped: not "a cancel is in
    // progress" (what the copy would say, writing nothing), but refused as the job is now.
    let cancelling = applied.job.clone();
    store
        .apply(&queued.id, &finished(cancelling.attempt, stopped()), 4)
        .await
        .unwrap();
    let again = store.apply_seen(cancelling, &cancel(4), 4).await.unwrap();
    assert_refused_as_stored(again, JobStatus::Cancelled);

    // A stale read of a job that has since finished: refused as the job is now.
    let done = store.submit(new_job("demo-fast"), 4).await.unwrap();
    let running = store.claim("w1", &reports(), 5).await.unwrap().unwrap();
    store
        .apply(&done.id, &finished(running.attempt, succeeded()), 6)
        .await
        .unwrap();
    let late = store.apply_seen(running, &cancel(7), 7).await.unwrap();
    assert_refused_as_stored(late, JobStatus::Succeeded);
}

/// A cancel refused because the job is `status` (BR-002): the answer carries the job as
/// stored, and nothing was written.
fn assert_refused_as_stored(applied: presswork_control_plane::store::Applied, status: JobStatus) {
    assert_eq!(
        applied.decision.unwrap_err(),
        Refusal::NotCancellable { status }
    );
    assert_eq!(applied.job.status, status);
    assert!(applied.sequence.is_none());
}

async fn published_changes_reach_subscribers(store: Store) {
    let mut rx = store.hub().subscribe_jobs();
    let mut log_rx = store.hub().subscribe_log();
    let job = store.submit(new_job("demo-fast"), 1).await.unwrap();
    let change = rx.recv().await.unwrap();
    assert_eq!(
        (change.job.id.as_str(), change.job.status),
        (job.id.as_str(), JobStatus::Queued as i32)
    );
    assert_eq!(log_rx.recv().await.unwrap().event, "job.submitted");
}

/// A worker may only report on the attempt it holds: a stage start, an outcome (alone or in a
/// batch) or a log line from another worker changes nothing, and the job's own worker still can.
async fn events_from_a_worker_the_job_is_not_assigned_to_are_refused(store: Store) {
    store.submit(new_job("demo-fast"), 1).await.unwrap();
    let job = store.claim("w1", &reports(), 2).await.unwrap().unwrap();
    let forged = JobEvent::Finished {
        attempt: 1,
        outcome: Outcome::Succeeded {
            output: "/forged.pdf".into(),
        },
    };
    let refused = store
        .apply_reported("intruder", &job.id, &forged, 3)
        .await
        .unwrap();
    assert_eq!(
        refused.decision.unwrap_err(),
        Refusal::NotAssigned {
            sender: "intruder".into(),
            assigned: "w1".into()
        }
    );
    assert!(refused.sequence.is_none());
    let batch = store
        .apply_batch(
            &[(job.id.clone(), forged.clone())],
            Origin::Worker("intruder"),
            3,
        )
        .await
        .unwrap();
    assert!(matches!(
        batch[0].as_ref().unwrap().decision,
        Err(Refusal::NotAssigned { .. })
    ));
    let started = JobEvent::StageStarted {
        attempt: 1,
        stage: Stage::Ingest,
    };
    assert!(
        store
            .apply_reported("intruder", &job.id, &started, 3)
            .await
            .unwrap()
            .decision
            .is_err()
    );
    let line = |worker_id, message| NewLogLine {
        job_id: &job.id,
        attempt: 1,
        worker_id,
        stage: Stage::Ingest,
        level: LogLevel::Info,
        message,
    };
    assert!(
        !store
            .append_worker_log(line("intruder", "forged line"), 3)
            .await
            .unwrap()
    );
    let stored = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.version),
        (JobStatus::Running, job.version)
    );

    // The job's own worker is heard.
    assert!(
        store
            .append_worker_log(line("w1", "read 10 rows"), 4)
            .await
            .unwrap()
    );
    let done = store
        .apply_reported("w1", &job.id, &forged, 5)
        .await
        .unwrap();
    assert_eq!(done.job.status, JobStatus::Succeeded);
    let messages: Vec<_> = store
        .log(&job.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect();
    assert!(!messages.iter().any(|m| m == "forged line"), "{messages:?}");
}

conformance!(
    submit_get_list_and_page,
    claim_takes_the_oldest_job_the_worker_can_run,
    a_batch_claim_takes_the_oldest_jobs_each_once,
    concurrent_claimers_never_share_a_job,
    claim_and_cancel_race_has_exactly_one_winner,
    cancel_lifecycle_records_milestones_events_and_log,
    worker_log_lines_only_for_the_live_attempt,
    sweeper_queries_find_overdue_cancels_and_silent_workers,
    worker_loss_requeues_and_refuses_the_lost_attempt,
    published_changes_reach_subscribers,
    an_event_applied_to_a_stale_read_applies_to_the_job_as_stored,
    the_current_job_is_the_job_as_stored_after_every_kind_of_write,
    batched_and_single_writes_race_without_deadlock,
    an_outcome_batch_applies_each_outcome_on_its_own,
    batch_claims_and_cancels_race_with_one_winner_each,
    an_outcome_batch_and_cancels_race_consistently,
    events_from_a_worker_the_job_is_not_assigned_to_are_refused,
);

/// A store on a fresh SQLite file with one job claimed by worker `w1`, and a second
/// connection to the same file (another process, as far as SQLite can tell).
/// The file's directory, the store, the job as submitted and as claimed, the other connection.
struct RunningOnSqlite(
    tempfile::TempDir,
    Store,
    presswork_control_plane::job::JobRecord,
    presswork_control_plane::job::JobRecord,
    sqlx::SqliteConnection,
);

async fn running_on_sqlite() -> RunningOnSqlite {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("presswork.db").display());
    let store = Store::connect(&url).await.unwrap();
    let job = store.submit(new_job("demo-fast"), 1).await.unwrap();
    let claimed = store.claim("w1", &reports(), 2).await.unwrap().unwrap();
    let other = sqlx::SqliteConnection::connect(&url).await.unwrap();
    RunningOnSqlite(dir, store, job, claimed, other)
}

/// SQLite writes a transition on the calling thread in a transaction of its own. When a
/// statement of it fails after the job's row was updated, the transaction is rolled back: the
/// job is unchanged, nothing is published, and the database takes writes again at once (an open
/// transaction would hold SQLite's write lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failed_transition_leaves_the_job_unchanged_and_the_database_writable() {
    let RunningOnSqlite(_dir, store, job, claimed, mut other) = running_on_sqlite().await;
    // Make the change event's insert, the last statement before COMMIT, fail.
    sqlx::query("ALTER TABLE job_events RENAME TO job_events_away")
        .execute(&mut other)
        .await
        .unwrap();
    let mut changes = store.hub().subscribe_jobs();
    let failed = store.apply(&job.id, &cancel(3), 3).await;
    assert!(
        matches!(failed, Err(StoreError::Sqlite(_))),
        "expected a database error, got {failed:?}"
    );
    assert_eq!(store.get(&job.id).await.unwrap().unwrap(), claimed);
    assert!(changes.try_recv().is_err(), "nothing was published");
    sqlx::query("ALTER TABLE job_events_away RENAME TO job_events")
        .execute(&mut other)
        .await
        .unwrap();
    // Writes go on, on the writer's connection and on the pool's.
    let applied = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.apply(&job.id, &cancel(4), 4),
    )
    .await
    .expect("the writer's connection still holds SQLite's write lock")
    .unwrap();
    assert_eq!(applied.job.status, JobStatus::Cancelling);
    assert_eq!(applied.job.version, claimed.version + 1);
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.submit(new_job("demo-fast"), 5),
    )
    .await
    .expect("a pooled write waited for SQLite's write lock")
    .unwrap();
}

/// On SQLite a transition is written on the calling thread by a connection that never waits for
/// a lock. When another process holds SQLite's write lock (here an open `BEGIN IMMEDIATE`; in
/// practice `presswork-control-plane users …`), the transition is not refused: it waits on
/// sqlx's connection, and is written once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_transition_waits_while_another_process_holds_the_write_lock() {
    let RunningOnSqlite(_dir, store, job, claimed, mut other) = running_on_sqlite().await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let cancelling = tokio::spawn({
        let (store, id) = (store.clone(), job.id.clone());
        async move { store.apply(&id, &cancel(3), 3).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !cancelling.is_finished(),
        "the transition ended while another connection held the write lock: {:?}",
        cancelling.await
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let applied = tokio::time::timeout(std::time::Duration::from_secs(10), cancelling)
        .await
        .expect("the transition still waits after the lock was released")
        .unwrap()
        .unwrap();
    assert_eq!(applied.job.status, JobStatus::Cancelling);
    assert_eq!(applied.job.version, claimed.version + 1);
    assert_eq!(store.get(&job.id).await.unwrap().unwrap(), applied.job);
}
