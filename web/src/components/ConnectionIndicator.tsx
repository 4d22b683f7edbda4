import type { Connection } from "../jobs/useJobStream";

const LABELS: Record<Connection, string> = {
  connecting: "Connecting...",
  live: "Live",
  reconnecting: "Connection lost, reconnecting...",
};

/** Whether the job list is being kept up to date right now. */
export function ConnectionIndicator({ connection }: { connection: Connection }) {
  return (
    <p className={`connection connection-${connection}`} role="status" aria-live="polite">
      <span className="dot" aria-hidden="true" />
      {LABELS[connection]}
    </p>
  );
}
