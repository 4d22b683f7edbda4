//! The sources of configured reports: rows streamed from a CSV or JSON-lines file, an HTTP
//! GET, an SQL query, the bundled sample or a source connector, straight into the report's
//! [`Transformer`] during the ingest stage.
//!
//! Nothing here collects the input: each row goes to [`RowSink::push`] as soon as it is
//! decoded, so memory stays bounded by what the transformation keeps (its groups, or its best
//! `limit` rows). The token is looked at on every read and every [`BATCH_ROWS`] rows; progress
//! is reported where the size is known (a file's size, an HTTP Content-Length).

pub mod csv;
pub mod jsonl;
pub mod sql;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use self::csv::CsvDecoder;
use self::jsonl::JsonlDecoder;
use super::ingest::{self, SAMPLE_SALES_CSV, SourceConnector};
use super::{StageContext, StageError};
use crate::reach::{AllowedHosts, CheckedResolver, Reach, redirect_policy};
use crate::table::{Row, Transformer};

/// Rows pushed between two looks at the token.
pub const BATCH_ROWS: u64 = 1024;
/// Bytes read at a time.
const CHUNK_BYTES: usize = 64 * 1024;

/// How a file or an HTTP body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    Csv,
    Jsonl,
}

impl TextFormat {
    fn name(self) -> &'static str {
        match self {
            TextFormat::Csv => "CSV",
            TextFormat::Jsonl => "JSON lines",
        }
    }
}

/// Where a configured report's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on the worker's disk (`csv`, `jsonl`).
    File { path: PathBuf, format: TextFormat },
    /// An HTTP(S) GET (`http`).
    Http {
        url: reqwest::Url,
        format: TextFormat,
    },
    /// One read-only query (`sql`).
    Sql { url: String, query: String },
    /// The bundled sales data (`sample`).
    Sample,
    /// A source connector registered on the worker (`connector`).
    Connector(SourceConnector),
}

impl Source {
    /// How the source is named in logs and errors (never with a password or a query string).
    pub fn describe(&self) -> String {
        match self {
            Source::File { path, format } => format!("{} file {}", format.name(), path.display()),
            Source::Http { url, format } => format!("{} from {}", format.name(), shown_url(url)),
            Source::Sql { url, .. } => format!("the query on {}", sql::shown_url(url)),
            Source::Sample => "the sample data".into(),
            Source::Connector(source) => format!("connector `{}`", source.program.name),
        }
    }

    /// What to do when the source cannot be read.
    fn advice(&self) -> &'static str {
        match self {
            Source::File { .. } => {
                "fix the file, or point source.params.path at another (absolute, readable by the worker, under its --data-dir or --allow-dirs)"
            }
            Source::Http { .. } => {
                "check source.params.url and source.params.format, and that the server answers the worker"
            }
            Source::Sql { .. } => "check source.params.url and source.params.query",
            Source::Sample => "this is a worker bug: please report it",
            Source::Connector(_) => "see the connector's lines in this log",
        }
    }
}

/// The HTTP client of HTTP sources and deliveries: rustls (Mozilla's and the system's roots),
/// 10 s to connect, and 30 s at most without a byte once connected. It connects only to the
/// addresses `allowed` allows, checked when a name is resolved and at every redirect; it
/// ignores the proxy environment variables, so that the check is made on the real destination
/// (an address in a URL is checked by [`AllowedHosts::check_url`] before the request).
pub fn http_client(allowed: &AllowedHosts) -> anyhow::Result<reqwest::Client> {
    let allowed = Arc::new(allowed.clone());
    reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver::new(Arc::clone(&allowed))))
        .redirect(redirect_policy(allowed))
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(30))
        .user_agent(concat!("presswork-worker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", error_chain(&e)))
}

/// A URL as shown in logs and errors: without its password, and without its query string
/// (which may hold a signature or a token).
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    let had_query = shown.query().is_some();
    shown.set_query(None);
    let mut text = shown.to_string();
    if had_query {
        text.push_str("?…");
    }
    text
}

/// An error and its causes, `: `-separated (reqwest's own message names only the first).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// Where the rows go: the transformer, with the source named in its errors.
pub struct RowSink<'a> {
    transformer: &'a mut Transformer,
    what: String,
    advice: &'static str,
    rows: u64,
}

impl RowSink<'_> {
    /// Pushes one row into the transformation; every [`BATCH_ROWS`] rows looks at the token.
    pub fn push(&mut self, ctx: &StageContext, row: &Row) -> Result<(), StageError> {
        self.transformer.push(row).map_err(|error| {
            StageError::Failed(format!(
                "cannot transform the rows of {}: {error}",
                self.what
            ))
        })?;
        self.rows += 1;
        if self.rows.is_multiple_of(BATCH_ROWS) {
            ctx.check()?;
        }
        Ok(())
    }

    /// A failure to read the source: what happened, then what to do.
    pub fn failed(&self, problem: impl std::fmt::Display) -> StageError {
        self.failed_with(problem, self.advice)
    }

    /// A failure to read the source, with its own advice.
    pub fn failed_with(&self, problem: impl std::fmt::Display, advice: &str) -> StageError {
        StageError::Failed(format!("cannot read {}: {problem}; {advice}", self.what))
    }
}

/// Reads every row of `source` into `transformer`; returns how many were read.
pub async fn read(
    ctx: &StageContext,
    source: &Source,
    http: &reqwest::Client,
    reach: &Reach,
    transformer: &mut Transformer,
) -> Result<u64, StageError> {
    let mut sink = RowSink {
        transformer,
        what: source.describe(),
        advice: source.advice(),
        rows: 0,
    };
    match source {
        Source::File { path, format } => {
            let path = ctx
                .cancellable(reach.readable_file(path))
                .await?
                .map_err(|problem| sink.failed(problem))?;
            let file = ctx
                .cancellable(tokio::fs::File::open(&path))
                .await?
                .map_err(|e| sink.failed(format!("cannot open it: {e}")))?;
            let size = ctx
                .cancellable(file.metadata())
                .await?
                .map_err(|e| sink.failed(e))?
                .len();
            read_text(ctx, file, Some(size), *format, &mut sink).await?;
        }
        Source::Http { url, format } => {
            reach
                .allow_hosts
                .check_url(url)
                .map_err(|problem| sink.failed(problem))?;
            let (body, size) = get(ctx, http, url, &sink).await?;
            read_text(ctx, body, size, *format, &mut sink).await?;
        }
        Source::Sql { url, query } => sql::read(ctx, url, query, reach, &mut sink).await?,
        Source::Sample => {
            let size = SAMPLE_SALES_CSV.len() as u64;
            read_text(
                ctx,
                SAMPLE_SALES_CSV.as_bytes(),
                Some(size),
                TextFormat::Csv,
                &mut sink,
            )
            .await?;
        }
        Source::Connector(connector) => {
            let mut decoder = JsonlDecoder::default();
            ingest::from_connector(ctx, connector, |batch| {
                for object in batch {
                    let row = decoder.row(object.into_iter().collect());
                    sink.push(ctx, &row)?;
                }
                Ok(())
            })
            .await?;
        }
    }
    ctx.progress(1.0);
    ctx.log(format!("read {} rows from {}", sink.rows, sink.what));
    Ok(sink.rows)
}

/// Starts an HTTP GET: the body as a reader, and its size when the server said it.
async fn get(
    ctx: &StageContext,
    http: &reqwest::Client,
    url: &reqwest::Url,
    sink: &RowSink<'_>,
) -> Result<(impl AsyncRead + Unpin + use<>, Option<u64>), StageError> {
    let response = ctx
        .cancellable(http.get(url.clone()).send())
        .await?
        .map_err(|e| {
            // Without the URL: its query string may hold a signature.
            sink.failed(format!("the GET failed: {}", error_chain(&e.without_url())))
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(sink.failed(format!("the server answered HTTP {status}")));
    }
    let size = response.content_length();
    let body = response.bytes_stream().map_err(io::Error::other);
    Ok((tokio_util::io::StreamReader::new(Box::pin(body)), size))
}

/// Decodes a CSV or JSON-lines byte stream into the sink.
async fn read_text<R: AsyncRead + Unpin>(
    ctx: &StageContext,
    reader: R,
    size: Option<u64>,
    format: TextFormat,
    sink: &mut RowSink<'_>,
) -> Result<(), StageError> {
    let progress = |consumed: u64| {
        if let Some(size) = size.filter(|s| *s > 0) {
            ctx.progress(consumed as f64 / size as f64);
        }
    };
    match format {
        TextFormat::Csv => {
            let mut reader = reader;
            let mut decoder = CsvDecoder::default();
            let mut buffer = vec![0u8; CHUNK_BYTES];
            let mut consumed = 0u64;
            loop {
                let read = ctx
                    .cancellable(reader.read(&mut buffer))
                    .await?
                    .map_err(|e| sink.failed(error_chain(&e)))?;
                let rows = decoder
                    .decode(&buffer[..read])
                    .map_err(|problem| sink.failed(problem))?;
                for row in &rows {
                    sink.push(ctx, row)?;
                }
                if read == 0 {
                    break;
                }
                consumed += read as u64;
                progress(consumed);
                ctx.check()?;
            }
            if decoder.columns().is_none() {
                return Err(sink.failed("it is empty; expected a header line naming the columns"));
            }
        }
        TextFormat::Jsonl => {
            let codec = LinesCodec::new_with_max_length(jsonl::MAX_LINE_BYTES);
            let mut lines = FramedRead::with_capacity(Counted::new(reader), codec, CHUNK_BYTES);
            let mut decoder = JsonlDecoder::default();
            let mut line_number = 0u64;
            while let Some(line) = ctx.cancellable(lines.next()).await? {
                line_number += 1;
                let line = line.map_err(|error| match error {
                    LinesCodecError::MaxLineLengthExceeded => sink.failed(format!(
                        "line {line_number} is longer than {} bytes; write one row per line",
                        jsonl::MAX_LINE_BYTES
                    )),
                    LinesCodecError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                        sink.failed(format!("line {line_number} is not UTF-8; write UTF-8"))
                    }
                    LinesCodecError::Io(e) => sink.failed(error_chain(&e)),
                })?;
                if let Some(row) = decoder
                    .decode_line(&line)
                    .map_err(|problem| sink.failed(problem))?
                {
                    sink.push(ctx, &row)?;
                }
                if line_number.is_multiple_of(BATCH_ROWS) {
                    progress(lines.get_ref().count);
                }
            }
        }
    }
    Ok(())
}

/// A reader that counts the bytes read through it (for progress).
struct Counted<R> {
    inner: R,
    count: u64,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Counted { inner, count: 0 }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.count += (buf.filled().len() - before) as u64;
        }
        polled
    }
}
