import * as Dialog from "@radix-ui/react-dialog";
import type { Job } from "../gen/presswork/v1/jobs_pb";

type Props = {
  /** The job to cancel, or null when the dialog is closed. */
  job: Job | null;
  onConfirm: (job: Job) => void;
  onClose: () => void;
  /** Where focus goes when the dialog closes (the button that opened it, or its row). */
  returnFocus: () => void;
};

/** Asks before a cancel: nothing is sent until Confirm. Focus stays inside; Esc closes. */
export function ConfirmCancelDialog({ job, onConfirm, onClose, returnFocus }: Props) {
  return (
    <Dialog.Root open={job !== null} onOpenChange={(open) => !open && onClose()}>
      <Dialog.Portal>
        <Dialog.Overlay className="overlay" />
        <Dialog.Content
          className="dialog"
          onCloseAutoFocus={(event) => {
            event.preventDefault();
            returnFocus();
          }}
        >
          <Dialog.Title>Cancel job {job?.id}?</Dialog.Title>
          <Dialog.Description>
            Are you sure you want to cancel this job? This action cannot be undone.
          </Dialog.Description>
          {job && (
            <p className="dialog-job">
              Report <strong>{job.report}</strong>, submitted by {job.submittedBy || "unknown"}
            </p>
          )}
          <div className="dialog-actions">
            <Dialog.Close asChild>
              <button type="button" className="secondary">
                Cancel
              </button>
            </Dialog.Close>
            <button type="button" className="danger" onClick={() => job && onConfirm(job)}>
              Confirm
            </button>
          </div>
        </Dialog.Content>
      </Dialog.Portal>
    </Dialog.Root>
  );
}
