import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import type { Clients } from "../api/clients";
import { cancelErrorMessage, isSessionExpired } from "../api/errors";
import { CancelOutcome, JobStatus, type Job } from "../gen/presswork/v1/jobs_pb";
import { STATUS_LABELS, isCancellable, isTerminal } from "../jobs/format";
import { visibleJobs } from "../jobs/jobList";
import { useJobStream } from "../jobs/useJobStream";
import { isAdministrator, roleName, type Session } from "../session/session";
import { ConfirmCancelDialog } from "./ConfirmCancelDialog";
import { ConnectionIndicator } from "./ConnectionIndicator";
import { JobDetail } from "./JobDetail";
import { JobTable, jobRowId } from "./JobTable";
import { Pager } from "./Pager";
import { StatusFilter, type StatusFilterValue } from "./StatusFilter";

type Props = {
  clients: Clients;
  session: Session;
  onSessionChange: (session: Session) => void;
  onExpired: () => void;
  onSignOut: () => void;
};

type Message = { text: string; error: boolean };

/** Rows per page: the table stays quick with any number of jobs. */
export const PAGE_SIZE = 50;

/**
 * A cancel confirmed here and not yet answered: the status shown meanwhile, for as long as
 * the server still reports the job as queued or running (progress may change it meanwhile).
 */
type PendingCancel = { shown: JobStatus };

export function Dashboard({ clients, session, onSessionChange, onExpired, onSignOut }: Props) {
  const { list, connection, mergeJob } = useJobStream(clients.jobs, { onExpired });
  const [filter, setFilter] = useState<StatusFilterValue>("all");
  const [page, setPage] = useState(0);
  const [detailId, setDetailId] = useState<string | null>(null);
  const detailOpener = useRef<HTMLButtonElement | null>(null);
  const [confirming, setConfirming] = useState<Job | null>(null);
  const [pending, setPending] = useState<Map<string, PendingCancel>>(new Map());
  const [message, setMessage] = useState<Message | null>(null);
  const opener = useRef<{ button: HTMLButtonElement; jobId: string } | null>(null);
  /** Jobs being cancelled whose final state is announced when the stream brings it. */
  const awaitingFinal = useRef<Set<string>>(new Set());

  // The role may have changed since sign-in: ask the server, which decides anyway.
  useEffect(() => {
    let current = true;
    clients.auth.whoAmI({}).then(
      (response) => {
        if (!current || !response.user) return;
        if (response.user.role !== session.role) {
          onSessionChange({ ...session, role: response.user.role });
        }
      },
      (error) => {
        if (current && isSessionExpired(error)) onExpired();
      },
    );
    return () => {
      current = false;
    };
  }, [clients]);

  // Announce the final state of each job cancelled from here.
  useEffect(() => {
    for (const id of awaitingFinal.current) {
      const job = list.jobs.get(id);
      if (job && isTerminal(job.status)) {
        awaitingFinal.current.delete(id);
        setMessage({ text: `Job ${id}: ${STATUS_LABELS[job.status]}.`, error: false });
      }
    }
  }, [list.jobs]);

  const statusOf = useCallback(
    (job: Job) => {
      const p = pending.get(job.id);
      return p && isCancellable(job.status) ? p.shown : job.status;
    },
    [pending],
  );

  const setPendingFor = (id: string, value: PendingCancel | null) =>
    setPending((old) => {
      const next = new Map(old);
      if (value) next.set(id, value);
      else next.delete(id);
      return next;
    });

  async function confirmCancel(job: Job) {
    setConfirming(null);
    const shown = job.status === JobStatus.QUEUED ? JobStatus.CANCELLED : JobStatus.CANCELLING;
    setPendingFor(job.id, { shown });
    setMessage({ text: `Cancelling job ${job.id}...`, error: false });
    try {
      const response = await clients.jobs.cancelJob({
        jobId: job.id,
        reason: "cancelled from the dashboard",
      });
      if (response.job) mergeJob(response.job);
      switch (response.outcome) {
        case CancelOutcome.CANCELLED_WHILE_QUEUED:
          setMessage({ text: `Job ${job.id} cancelled. It will not run.`, error: false });
          break;
        case CancelOutcome.CANCELLING:
        case CancelOutcome.ALREADY_CANCELLING:
          awaitingFinal.current.add(job.id);
          setMessage({ text: `Cancelling job ${job.id}...`, error: false });
          break;
        case CancelOutcome.ALREADY_FINISHED: {
          const status = response.job ? STATUS_LABELS[response.job.status] : "finished";
          setMessage({
            text: `Job ${job.id} finished before the cancel took effect: ${status}.`,
            error: false,
          });
          break;
        }
        default:
          setMessage({ text: response.message || `Cancel of job ${job.id} sent.`, error: false });
      }
    } catch (error) {
      if (isSessionExpired(error)) {
        onExpired();
        return;
      }
      setMessage({ text: cancelErrorMessage(error, job.id), error: true });
    } finally {
      setPendingFor(job.id, null);
    }
  }

  function returnFocus() {
    const from = opener.current;
    opener.current = null;
    if (!from) return;
    if (from.button.isConnected) from.button.focus();
    else document.getElementById(jobRowId(from.jobId))?.focus();
  }

  const admin = isAdministrator(session);
  const jobs = useMemo(() => visibleJobs(list.jobs, filter), [list.jobs, filter]);
  const lastPage = Math.max(0, Math.ceil(jobs.length / PAGE_SIZE) - 1);
  const shownPage = Math.min(page, lastPage);
  const pageJobs = jobs.slice(shownPage * PAGE_SIZE, (shownPage + 1) * PAGE_SIZE);
  const detailJob = detailId ? (list.jobs.get(detailId) ?? null) : null;

  return (
    <div className="dashboard">
      <header className="topbar">
        <h1>Presswork jobs</h1>
        <ConnectionIndicator connection={connection} />
        <p className="who">
          Signed in as <strong>{session.username}</strong> ({roleName(session.role)})
        </p>
        <button type="button" className="secondary" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      <main>
        <div className="toolbar">
          <StatusFilter
            value={filter}
            onChange={(value) => {
              setFilter(value);
              setPage(0);
            }}
          />
          <Pager page={shownPage} pageSize={PAGE_SIZE} total={jobs.length} onPage={setPage} />
        </div>
        <div className={message?.error ? "message error" : "message"} aria-live="polite" role="status">
          {message?.text}
        </div>
        <JobTable
          jobs={pageJobs}
          statusOf={statusOf}
          loaded={list.loaded}
          onOpenDetail={(job, button) => {
            detailOpener.current = button;
            setDetailId(job.id);
          }}
          onRequestCancel={
            admin
              ? (job, button) => {
                  opener.current = { button, jobId: job.id };
                  setConfirming(job);
                }
              : undefined
          }
        />
      </main>
      <ConfirmCancelDialog
        job={confirming}
        onConfirm={(job) => void confirmCancel(job)}
        onClose={() => setConfirming(null)}
        returnFocus={returnFocus}
      />
      <JobDetail
        clients={clients}
        job={detailJob}
        onClose={() => setDetailId(null)}
        onExpired={onExpired}
        returnFocus={() => {
          const button = detailOpener.current;
          detailOpener.current = null;
          if (button?.isConnected) button.focus();
          else if (detailId) document.getElementById(jobRowId(detailId))?.focus();
        }}
      />
    </div>
  );
}
