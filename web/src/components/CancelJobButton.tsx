import * as Tooltip from "@radix-ui/react-tooltip";
import type { Job } from "../gen/presswork/v1/jobs_pb";

type Props = {
  job: Job;
  /** Asks for confirmation; `opener` gets the focus back when the dialog closes. */
  onRequestCancel: (job: Job, opener: HTMLButtonElement) => void;
};

/** The stop icon in a job's row. Rendered only where a cancel is allowed. */
export function CancelJobButton({ job, onRequestCancel }: Props) {
  return (
    <Tooltip.Root>
      <Tooltip.Trigger asChild>
        <button
          type="button"
          className="icon-button"
          aria-label={`Cancel job ${job.id} (${job.report})`}
          onClick={(e) => onRequestCancel(job, e.currentTarget)}
        >
          <svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" focusable="false">
            <rect x="3" y="3" width="10" height="10" rx="1.5" fill="currentColor" />
          </svg>
        </button>
      </Tooltip.Trigger>
      <Tooltip.Portal>
        <Tooltip.Content className="tooltip" sideOffset={4}>
          Cancel Job
        </Tooltip.Content>
      </Tooltip.Portal>
    </Tooltip.Root>
  );
}
