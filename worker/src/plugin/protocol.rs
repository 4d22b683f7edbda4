//! The connector protocol: JSON lines over the connector's stdin and stdout (docs/pdk.md).
//!
//! The worker writes [`StartMessage`] as the first line of the connector's stdin, and
//! [`CancelMessage`] when the job is cancelled; then it closes stdin. The connector writes one
//! [`ConnectorMessage`] per line on stdout. Lines are read one at a time and at most
//! [`MAX_MESSAGE_BYTES`] long ([`BoundedLines`]), so a connector can never make the worker hold
//! more than one message, and a connector that writes faster than the job consumes blocks on
//! its full pipe (backpressure).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The protocol version in [`StartMessage::protocol`]; raised only for incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest stdout line (one message, e.g. a batch of rows) a connector may write.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The first line the worker writes to a connector's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartMessage {
    /// Always `"start"`.
    #[serde(rename = "type")]
    pub kind: StartTag,
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The name the connector is registered under on the worker.
    pub connector: String,
    /// The stage it runs for: `ingest` (a source connector).
    pub stage: String,
    pub job_id: String,
    pub attempt: u32,
    /// The job's `source.KEY=VALUE` parameters, without the `source.` prefix.
    pub params: BTreeMap<String, String>,
    /// A private, empty directory for the connector's files; it must be empty again when the
    /// connector exits (the worker removes it anyway).
    pub work_dir: String,
}

/// The tag of [`StartMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartTag {
    #[default]
    Start,
}

/// What the worker writes to a connector's stdin to cancel it (it also sends SIGTERM to the
/// connector's process group at the same moment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub reason: &'a str,
}

impl<'a> CancelMessage<'a> {
    pub fn new(reason: &'a str) -> Self {
        CancelMessage {
            kind: "cancel",
            reason,
        }
    }
}

/// One line a connector writes on stdout. Unknown fields are ignored (so a connector may send
/// more than this version reads); an unknown `type` is a protocol error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorMessage {
    /// A batch of rows: JSON objects, field name → value.
    Rows {
        rows: Vec<serde_json::Map<String, serde_json::Value>>,
    },
    /// How far the connector is, 0.0 to 1.0.
    Progress { fraction: f64 },
    /// A line for the job's execution log.
    Log {
        #[serde(default)]
        level: MessageLevel,
        message: String,
    },
    /// All rows were sent; the connector exits (status 0) next.
    Done,
    /// The connector cannot do its work; the message says what happened and what to do.
    Error { message: String },
}

/// The level of a [`ConnectorMessage::Log`] line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageLevel {
    #[default]
    Info,
    Warn,
    Error,
}

impl ConnectorMessage {
    /// Parses one stdout line. The error says what is wrong with it, for a job log.
    pub fn parse(line: &[u8]) -> Result<ConnectorMessage, String> {
        let message: ConnectorMessage = serde_json::from_slice(line).map_err(|e| {
            // serde quotes an unknown `type` in full: keep the error as bounded as the line.
            let mut reason: String = e.to_string().chars().take(2 * EXCERPT_CHARS).collect();
            if reason.len() < e.to_string().len() {
                reason.push('…');
            }
            format!(
                "{reason} in {}",
                excerpt(&String::from_utf8_lossy(line), EXCERPT_CHARS)
            )
        })?;
        if let ConnectorMessage::Progress { fraction } = message
            && !fraction.is_finite()
        {
            return Err(format!("progress fraction {fraction} is not a number"));
        }
        Ok(message)
    }

    /// The message's `type`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorMessage::Rows { .. } => "rows",
            ConnectorMessage::Progress { .. } => "progress",
            ConnectorMessage::Log { .. } => "log",
            ConnectorMessage::Done => "done",
            ConnectorMessage::Error { .. } => "error",
        }
    }
}

/// How much of a bad line is quoted back in an error.
const EXCERPT_CHARS: usize = 80;

/// `text` cut to `max` characters (with `…` when cut), quoted.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().take(max).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// One line read by [`BoundedLines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line without its `\n`, at most the reader's limit.
    pub bytes: Vec<u8>,
    /// The line was longer than the limit; the rest of it was read and dropped.
    pub truncated: bool,
}

/// Reads `\n`-terminated lines keeping at most `max` bytes of each (the rest of a longer line
/// is read and dropped, so the writer never blocks on it — or, made with
/// [`BoundedLines::cut_at_limit`], not read: the cut line is returned at once, for a reader that
/// gives up on it). Cancel-safe: a partial line is kept in the reader between calls.
pub struct BoundedLines<R> {
    reader: BufReader<R>,
    max: usize,
    line: Vec<u8>,
    truncated: bool,
    cut_at_limit: bool,
}

impl<R: AsyncRead + Unpin> BoundedLines<R> {
    pub fn new(reader: R, max: usize) -> Self {
        BoundedLines {
            reader: BufReader::new(reader),
            max,
            line: Vec::new(),
            truncated: false,
            cut_at_limit: false,
        }
    }

    /// Returns a line as soon as it is longer than the limit (marked truncated), without
    /// reading the rest: a line without end (a connector writing `/dev/zero`) ends the read
    /// at once instead of being read forever.
    pub fn cut_at_limit(mut self) -> Self {
        self.cut_at_limit = true;
        self
    }

    /// The next line, or `None` at the end of the input (a last line without `\n` counts).
    pub async fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let buffer = self.reader.fill_buf().await?;
            if buffer.is_empty() {
                if self.line.is_empty() && !self.truncated {
                    return Ok(None);
                }
                return Ok(Some(self.take()));
            }
            let (chunk, used, complete) = match buffer.iter().position(|b| *b == b'\n') {
                Some(end) => (&buffer[..end], end + 1, true),
                None => (buffer, buffer.len(), false),
            };
            let room = self.max - self.line.len();
            if chunk.len() > room {
                self.truncated = true;
            }
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.reader.consume(used);
            if complete || (self.truncated && self.cut_at_limit) {
                return Ok(Some(self.take()));
            }
        }
    }

    fn take(&mut self) -> Line {
        let mut bytes = std::mem::take(&mut self.line);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        Line {
            bytes,
            truncated: std::mem::replace(&mut self.truncated, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ConnectorMessage, String> {
        ConnectorMessage::parse(line.as_bytes())
    }

    #[test]
    fn parses_every_message_type() {
        let rows =
            parse(r#"{"type":"rows","rows":[{"region":"North","amount":1.5}]}"#).expect("rows");
        let ConnectorMessage::Rows { rows } = rows else {
            panic!("expected rows, got {rows:?}");
        };
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["region"], "North");
        assert_eq!(
            parse(r#"{"type":"progress","fraction":0.4}"#),
            Ok(ConnectorMessage::Progress { fraction: 0.4 })
        );
        assert_eq!(
            parse(r#"{"type":"log","message":"hello"}"#),
            Ok(ConnectorMessage::Log {
                level: MessageLevel::Info,
                message: "hello".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"log","level":"warn","message":"careful"}"#),
            Ok(ConnectorMessage::Log {
                level: MessageLevel::Warn,
                message: "careful".into()
            })
        );
        assert_eq!(parse(r#"{"type":"done"}"#), Ok(ConnectorMessage::Done));
        assert_eq!(
            parse(r#"{"type":"error","message":"no such table; check source.table"}"#),
            Ok(ConnectorMessage::Error {
                message: "no such table; check source.table".into()
            })
        );
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        assert_eq!(
            parse(r#"{"type":"done","rows_sent":12,"extra":{"a":1}}"#),
            Ok(ConnectorMessage::Done)
        );
    }

    #[test]
    fn garbage_is_refused_with_the_reason_and_an_excerpt() {
        let error = parse("hello world").expect_err("not json");
        assert!(error.contains("expected value"), "{error}");
        assert!(error.contains("\"hello world\""), "{error}");
        let error = parse(r#"{"type":"rowz","rows":[]}"#).expect_err("unknown type");
        assert!(error.contains("unknown variant `rowz`"), "{error}");
        let error = parse(r#"{"rows":[]}"#).expect_err("no type");
        assert!(error.contains("missing field `type`"), "{error}");
        let error = parse(r#"{"type":"rows","rows":[1,2]}"#).expect_err("rows not objects");
        assert!(error.contains("expected a map"), "{error}");
        let error = parse(r#"{"type":"progress"}"#).expect_err("no fraction");
        assert!(error.contains("missing field `fraction`"), "{error}");
        let long = format!("{{\"type\":\"{}\"}}", "x".repeat(500));
        let error = parse(&long).expect_err("unknown type");
        assert!(error.len() < 400, "the excerpt is bounded: {error}");
    }

    #[test]
    fn start_and_cancel_are_one_json_line_each() {
        let start = StartMessage {
            kind: StartTag::Start,
            protocol: PROTOCOL_VERSION,
            connector: "sales".into(),
            stage: "ingest".into(),
            job_id: "job-1".into(),
            attempt: 2,
            params: BTreeMap::from([("rows".to_string(), "10".to_string())]),
            work_dir: "/tmp/w".into(),
        };
        let line = serde_json::to_string(&start).expect("serialise");
        assert_eq!(
            line,
            r#"{"type":"start","protocol":1,"connector":"sales","stage":"ingest","job_id":"job-1","attempt":2,"params":{"rows":"10"},"work_dir":"/tmp/w"}"#
        );
        let cancel =
            serde_json::to_string(&CancelMessage::new("wrong \"quarter\"\n")).expect("serialise");
        assert_eq!(
            cancel,
            r#"{"type":"cancel","reason":"wrong \"quarter\"\n"}"#
        );
        assert!(!cancel.contains('\n'));
    }

    #[tokio::test]
    async fn lines_are_bounded_and_the_rest_of_a_long_line_is_dropped() {
        let input: &[u8] = b"short\r\n0123456789abcdef\nnext\nlast without newline";
        let mut lines = BoundedLines::new(input, 10);
        let mut read = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read") {
            read.push((
                String::from_utf8(line.bytes).expect("utf-8"),
                line.truncated,
            ));
        }
        assert_eq!(
            read,
            vec![
                ("short".to_string(), false),
                ("0123456789".to_string(), true),
                ("next".to_string(), false),
                ("last witho".to_string(), true),
            ]
        );
    }

    #[tokio::test]
    async fn a_line_without_end_is_cut_at_the_limit() {
        let endless = tokio::io::repeat(b'x');
        let mut lines = BoundedLines::new(endless, 1000).cut_at_limit();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("returns at the limit")
            .expect("read")
            .expect("a line");
        assert!(line.truncated);
        assert_eq!(line.bytes.len(), 1000);
    }

    #[tokio::test]
    async fn a_line_split_across_reads_is_put_together() {
        let (mut writer, reader) = tokio::io::duplex(4);
        let writing = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [&b"{\"type\""[..], b":\"done\"}", b"\n"] {
                writer.write_all(piece).await.expect("write");
            }
        });
        let mut lines = BoundedLines::new(reader, MAX_MESSAGE_BYTES);
        let line = lines.next_line().await.expect("read").expect("a line");
        assert_eq!(
            ConnectorMessage::parse(&line.bytes),
            Ok(ConnectorMessage::Done)
        );
        writing.await.expect("writer ends");
        assert_eq!(lines.next_line().await.expect("read"), None);
    }
}
