//! Deliver: publishes the report atomically as `<output-dir>/<file name>`.
//!
//! The file is copied under a temporary name in the output directory, fsynced, then renamed.
//! The rename is the point of no return: before it, a cancel removes the temporary file (so a
//! cancelled job never leaves a partial report); once it started, the job finishes.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{StageContext, StageError};

/// Bytes copied between two looks at the token.
const CHUNK_BYTES: usize = 64 * 1024;

/// A file removed when dropped, unless [`TempFile::keep`] was called: the temporary report is
/// removed however the stage ends, even when its task is aborted.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep
            && let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "could not remove a temporary report; delete it by hand");
        }
    }
}

/// Copies `source` to `output_dir/file_name` atomically and returns the published path.
pub async fn run(
    ctx: &StageContext,
    source: &Path,
    output_dir: &Path,
    file_name: &str,
) -> Result<PathBuf, StageError> {
    let target = output_dir.join(file_name);
    let temp = TempFile {
        path: output_dir.join(format!(
            ".{file_name}.{}.tmp",
            uuid::Uuid::new_v4().simple()
        )),
        keep: false,
    };
    let io_failed = |action: &str, path: &Path, error: std::io::Error| {
        StageError::Failed(format!(
            "cannot {action} {}: {error}; check that the directory exists (--output-dir, or delivery.params.path of a configured report), is writable and has free space",
            path.display()
        ))
    };

    let mut input = ctx
        .cancellable(tokio::fs::File::open(source))
        .await?
        .map_err(|e| io_failed("open", source, e))?;
    let size = ctx
        .cancellable(input.metadata())
        .await?
        .map_err(|e| io_failed("read", source, e))?
        .len()
        .max(1);
    let mut output = ctx
        .cancellable(tokio::fs::File::create(&temp.path))
        .await?
        .map_err(|e| io_failed("create", &temp.path, e))?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut copied = 0u64;
    loop {
        let read = ctx
            .cancellable(input.read(&mut buffer))
            .await?
            .map_err(|e| io_failed("read", source, e))?;
        if read == 0 {
            break;
        }
        ctx.cancellable(output.write_all(&buffer[..read]))
            .await?
            .map_err(|e| io_failed("write", &temp.path, e))?;
        copied += read as u64;
        ctx.progress(copied as f64 / size as f64);
    }
    ctx.cancellable(output.sync_all())
        .await?
        .map_err(|e| io_failed("fsync", &temp.path, e))?;
    drop(output);

    ctx.enter_point_of_no_return()?;
    // Past this point the token is not looked at: the rename publishes the report.
    tokio::fs::rename(&temp.path, &target)
        .await
        .map_err(|e| io_failed("rename a temporary report to", &target, e))?;
    temp.keep();
    // Make the rename itself durable; the report is already in place if this fails.
    if let Err(error) = std::fs::File::open(output_dir).and_then(|dir| dir.sync_all()) {
        tracing::warn!(dir = %output_dir.display(), %error, "could not fsync the output directory");
    }
    ctx.progress(1.0);
    ctx.log(format!("delivered to {}", target.display()));
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::CancelReason;
    use crate::stages::testing;
    use presswork_proto::v1::Stage;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn publishes_the_file_under_its_final_name_only() {
        let work = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        let source = work.path().join("report.pdf");
        std::fs::write(&source, b"%PDF-1.7 test").expect("write source");
        let (ctx, _control, _rx) = testing::context(Stage::Deliver, work.path());

        let path = run(&ctx, &source, out.path(), "job-1.pdf")
            .await
            .expect("delivers");

        assert_eq!(path, out.path().join("job-1.pdf"));
        assert_eq!(std::fs::read(&path).expect("read"), b"%PDF-1.7 test");
        assert_eq!(entries(out.path()), vec!["job-1.pdf".to_string()]);
    }

    #[tokio::test]
    async fn a_cancel_during_the_copy_leaves_no_file_behind() {
        let work = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        let source = work.path().join("report.pdf");
        // Many chunks, so the copy is still going when the test cancels after the first one.
        std::fs::write(&source, vec![b'x'; 256 * CHUNK_BYTES]).expect("write source");
        let (ctx, control, mut rx) = testing::context(Stage::Deliver, work.path());

        let delivery = tokio::spawn({
            let out = out.path().to_path_buf();
            async move { run(&ctx, &source, &out, "job-1.pdf").await }
        });
        // The first progress message comes after the first chunk reached the temporary file.
        testing::next_progress(&mut rx).await;
        assert_eq!(entries(out.path()).len(), 1, "the temporary file exists");
        control.cancel(CancelReason::WorkerShutdown);

        let result = delivery.await.expect("the stage task ends");
        assert_eq!(result, Err(StageError::Cancelled));
        assert_eq!(entries(out.path()), Vec::<String>::new());
    }
}
