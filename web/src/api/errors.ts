import { Code, ConnectError } from "@connectrpc/connect";

/** True when the server no longer accepts the session's token. */
export function isSessionExpired(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Unauthenticated;
}

/** A sentence for people, naming what went wrong with a cancel. */
export function cancelErrorMessage(error: unknown, jobId: string): string {
  const e = ConnectError.from(error);
  switch (e.code) {
    case Code.PermissionDenied:
      return `Could not cancel job ${jobId}: only administrators may cancel jobs.`;
    case Code.FailedPrecondition:
      return `Could not cancel job ${jobId}: the job is not in a cancellable state.`;
    case Code.NotFound:
      return `Could not cancel job ${jobId}: no such job.`;
    case Code.Unauthenticated:
      return `Could not cancel job ${jobId}: your session has expired.`;
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Internal:
    case Code.DeadlineExceeded:
      return `Could not cancel job ${jobId}: the control plane could not be reached. Check the connection and try again.`;
    default:
      return `Could not cancel job ${jobId}: ${e.rawMessage || "unexpected error"}.`;
  }
}

/** A sentence for people, naming why a job's execution log cannot be shown. */
export function logErrorMessage(error: unknown, jobId: string): string {
  const e = ConnectError.from(error);
  switch (e.code) {
    case Code.NotFound:
      return `The log of job ${jobId} cannot be shown: no such job. It may belong to another database; reload the page.`;
    case Code.PermissionDenied:
      return `The log of job ${jobId} cannot be shown: your role may not read job logs. Ask an administrator.`;
    default:
      return `The log of job ${jobId} cannot be shown: ${e.rawMessage || "unexpected error"}. Reload the page to try again.`;
  }
}
