type Props = {
  /** Zero-based. */
  page: number;
  pageSize: number;
  total: number;
  onPage: (page: number) => void;
};

/** Which slice of the jobs the table shows, and buttons to move through them. */
export function Pager({ page, pageSize, total, onPage }: Props) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  const first = total === 0 ? 0 : page * pageSize + 1;
  const last = Math.min(total, (page + 1) * pageSize);
  const n = (x: number) => x.toLocaleString("en-US");
  return (
    <nav className="pager" aria-label="Pages of jobs">
      <button type="button" className="secondary" disabled={page === 0} onClick={() => onPage(page - 1)}>
        Previous page
      </button>
      <span className="pager-position">
        {total === 0 ? "No jobs" : `Jobs ${n(first)}–${n(last)} of ${n(total)}`} · page {page + 1} of {n(pages)}
      </span>
      <button
        type="button"
        className="secondary"
        disabled={page >= pages - 1}
        onClick={() => onPage(page + 1)}
      >
        Next page
      </button>
    </nav>
  );
}
