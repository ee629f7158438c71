//! The embedded backend: a line-per-event file (or stdin) source, and JSON-lines targets.
//!
//! The source reads lines into an in-process [`MemoryQueue`], so retries, delays and leases
//! behave exactly as on a queue; it returns [`Received::Exhausted`] once the input has ended and
//! every line was settled (acked or dead-lettered). Reading is paced: at most
//! [`READ_AHEAD_LINES`] lines and [`READ_AHEAD_BYTES`] bytes are buffered, and a line longer
//! than the source's
//! `max_line_bytes` is cut there (the pipeline then dead-letters it as too large), so a huge
//! file or an endless stdin uses bounded memory.
//!
//! Each line is either one event body ([`LineFormat::Body`]) or a [`record`] as file targets
//! write it ([`LineFormat::Record`]), so a file target's output or a dead-letter file can be
//! read back exactly, attributes included.
//!
//! Targets write one [`record`] per message; a write counts as done once it is flushed to the
//! operating system.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use crate::memory::{MemoryQueue, MemoryQueueConfig};
use crate::record;
use crate::{
    AckFailure, AckToken, OutboundMessage, Publisher, QueueError, Received, Requeued, Source, SourceInfo, SourceLimits,
};

/// Most unsettled lines held in memory before reading pauses.
pub const READ_AHEAD_LINES: usize = 4096;
/// Most body bytes of unsettled lines held in memory before reading pauses (16 MiB).
pub const READ_AHEAD_BYTES: usize = 16 * 1024 * 1024;
/// Most messages written per flush.
pub const MAX_WRITE_BATCH: usize = 512;
/// Attribute carrying the 1-based line number of a file event.
pub const LINE_ATTRIBUTE: &str = "file.line";
/// Attribute set on a line cut at `max_line_bytes`: the line's full length in bytes.
pub const LINE_BYTES_ATTRIBUTE: &str = "file.line_bytes";
/// Attribute set on a `record` line that is not a record: why.
pub const RECORD_ERROR_ATTRIBUTE: &str = "file.record_error";
/// Default longest line kept whole (1 MiB, the SQS message limit).
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// What one line of a source file is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LineFormat {
    /// The line is one event body.
    #[default]
    Body,
    /// The line is a [`record`] written by a file target (body, attributes, ordering key).
    Record,
}

/// How a file source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSourceOptions {
    /// Lease of an unsettled line before it is handed out again.
    pub visibility_timeout: Duration,
    /// What a line is.
    pub format: LineFormat,
    /// Longer lines are cut to this many bytes plus one (and marked with
    /// [`LINE_BYTES_ATTRIBUTE`]) so the pipeline can dead-letter them as too large.
    pub max_line_bytes: usize,
}

impl Default for FileSourceOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            format: LineFormat::Body,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// Reads one event per line from a file, or from stdin when the path is `-`.
pub struct FileSource {
    name: String,
    queue: MemoryQueue,
    reader: tokio::task::JoinHandle<()>,
    read_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl FileSource {
    /// Opens `path` (`-` = stdin) and starts reading it in the background.
    pub async fn open(path: &Path, options: FileSourceOptions) -> Result<Self, QueueError> {
        let name = path.display().to_string();
        let input: Box<dyn AsyncRead + Send + Unpin> = if name == "-" {
            Box::new(tokio::io::stdin())
        } else {
            let file = tokio::fs::File::open(path).await.map_err(|e| {
                QueueError::permanent(format!(
                    "cannot open source file {name}: {e}; check `source.path` (use \"-\" for stdin)"
                ))
            })?;
            Box::new(file)
        };
        Ok(Self::from_reader(name, input, options))
    }

    /// Reads lines from any reader (used for stdin and in tests).
    pub fn from_reader(name: String, input: Box<dyn AsyncRead + Send + Unpin>, options: FileSourceOptions) -> Self {
        let mut config = MemoryQueueConfig::named(name.clone());
        config.visibility_timeout = options.visibility_timeout;
        let queue = MemoryQueue::new(config);
        let read_error = Arc::new(std::sync::Mutex::new(None));
        let reader = tokio::spawn(read_lines(input, queue.clone(), options, read_error.clone()));
        Self {
            name,
            queue,
            reader,
            read_error,
        }
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads one line into `buf`, keeping at most `max + 1` bytes of it; returns how many bytes
/// the line had, its newline not counted (`None` at the end of the input).
async fn read_bounded_line(
    lines: &mut BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<usize>> {
    let mut total = 0;
    let mut any = false;
    loop {
        let available = lines.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(total));
        }
        any = true;
        let (content, used) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        let room = (max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&content[..content.len().min(room)]);
        total += content.len();
        match used {
            Some(n) => {
                lines.consume(n);
                return Ok(Some(total));
            }
            None => {
                let n = content.len();
                lines.consume(n);
            }
        }
    }
}

async fn read_lines(
    input: Box<dyn AsyncRead + Send + Unpin>,
    queue: MemoryQueue,
    options: FileSourceOptions,
    read_error: Arc<std::sync::Mutex<Option<String>>>,
) {
    let mut lines = BufReader::new(input);
    let mut buf = Vec::new();
    let mut line_no: u64 = 0;
    loop {
        queue.wait_until_below(READ_AHEAD_LINES, READ_AHEAD_BYTES).await;
        buf.clear();
        match read_bounded_line(&mut lines, &mut buf, options.max_line_bytes).await {
            Ok(None) => break,
            Ok(Some(full_len)) => {
                line_no += 1;
                let line = trim_line_end(&buf);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                // Bytes past `max + 1` were skipped: say how long the line was.
                let cut = (buf.len() < full_len).then_some(full_len);
                queue.push(line_message(line, line_no, cut, options.format));
            }
            Err(e) => {
                *read_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("reading line {}: {e}", line_no + 1));
                break;
            }
        }
    }
    queue.close();
}

/// The message a line stands for. A body line gets its line number as [`LINE_ATTRIBUTE`]; a
/// record line becomes exactly the message it records, and one that is not a record stays a
/// bare body marked with [`RECORD_ERROR_ATTRIBUTE`] and its line number, so it is dead-lettered
/// with the reason instead of disappearing.
fn line_message(line: &[u8], line_no: u64, cut_from: Option<usize>, format: LineFormat) -> OutboundMessage {
    let mut message = OutboundMessage {
        body: Bytes::copy_from_slice(line),
        ..Default::default()
    };
    let record_error = match (format, cut_from) {
        (LineFormat::Body, _) => None,
        (LineFormat::Record, Some(len)) => Some(format!(
            "a line of {len} bytes is longer than the source reads whole; not read as a record"
        )),
        (LineFormat::Record, None) => match record::parse(line) {
            Ok(r) => {
                message.body = r.body;
                message.attributes = r.attributes;
                message.ordering_key = r.ordering_key;
                return message;
            }
            Err(e) => Some(e.to_string()),
        },
    };
    message.attributes.insert(LINE_ATTRIBUTE, line_no.to_string());
    if let Some(error) = record_error {
        message.attributes.insert(RECORD_ERROR_ATTRIBUTE, error);
    }
    if let Some(len) = cut_from {
        message.attributes.insert(LINE_BYTES_ATTRIBUTE, len.to_string());
    }
    message
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

#[async_trait]
impl Source for FileSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: "file",
            name: self.name.clone(),
        }
    }

    fn limits(&self) -> SourceLimits {
        let mut limits = self.queue.limits();
        limits.max_receive_batch = 100;
        limits.max_ack_batch = 100;
        // The reader stays within its read-ahead.
        limits.receive_unbuffered = false;
        limits
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Received, QueueError> {
        let received = self.queue.receive(max, wait).await?;
        if matches!(received, Received::Exhausted) {
            if let Some(e) = self.read_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Err(QueueError::permanent(format!("source file {}: {e}", self.name)));
            }
        }
        Ok(received)
    }

    async fn ack(&self, tokens: Vec<AckToken>) -> Result<(), AckFailure> {
        self.queue.ack(tokens).await
    }

    async fn nack(&self, token: AckToken, delay: Duration) -> Result<(), QueueError> {
        self.queue.nack(token, delay).await
    }

    async fn requeue(
        &self,
        token: AckToken,
        message: OutboundMessage,
        delay: Duration,
    ) -> Result<Requeued, QueueError> {
        self.queue.requeue(token, message, delay).await
    }

    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError> {
        self.queue.extend(tokens, by).await
    }

    async fn backlog(&self) -> Option<u64> {
        self.queue.backlog().await
    }
}

/// Appends JSON lines to a writer; shared by the file and stdout targets.
struct LineWriter<W> {
    description: String,
    writer: Mutex<W>,
}

impl<W: AsyncWrite + Send + Unpin> LineWriter<W> {
    async fn write(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        let mut buf = Vec::new();
        for m in &batch {
            buf.extend_from_slice(&record::render(m));
        }
        let mut w = self.writer.lock().await;
        let result = match w.write_all(&buf).await {
            Ok(()) => w.flush().await,
            Err(e) => Err(e),
        };
        let result = result.map_err(|e| QueueError::transient(format!("{}: {e}", self.description)));
        batch.iter().map(|_| result.clone()).collect()
    }
}

/// A target that appends JSON lines to a file (created if missing).
pub struct FileTarget {
    path: PathBuf,
    out: LineWriter<tokio::fs::File>,
}

impl FileTarget {
    /// Opens `path` for appending, creating it and its parent directory if needed.
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        let description = format!("file {}", path.display());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| QueueError::permanent(format!("{description}: cannot create directory: {e}")))?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|e| QueueError::permanent(format!("{description}: cannot open: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: LineWriter {
                description,
                writer: Mutex::new(file),
            },
        })
    }
}

#[async_trait]
impl Publisher for FileTarget {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn max_batch(&self) -> usize {
        MAX_WRITE_BATCH
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        self.out.write(batch).await
    }
}

/// A target that writes JSON lines to standard output.
pub struct StdoutTarget {
    out: LineWriter<tokio::io::Stdout>,
}

impl Default for StdoutTarget {
    fn default() -> Self {
        Self {
            out: LineWriter {
                description: "stdout".into(),
                writer: Mutex::new(tokio::io::stdout()),
            },
        }
    }
}

#[async_trait]
impl Publisher for StdoutTarget {
    fn describe(&self) -> String {
        "stdout".into()
    }

    fn max_batch(&self) -> usize {
        MAX_WRITE_BATCH
    }

    async fn publish(&self, batch: Vec<OutboundMessage>) -> Vec<Result<(), QueueError>> {
        self.out.write(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attributes;
    use serde_json::{json, Value};

    async fn drain(source: &FileSource) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match source.receive(100, Duration::from_secs(1)).await.unwrap() {
                Received::Messages(batch) => {
                    for d in &batch {
                        out.push(String::from_utf8(d.body.to_vec()).unwrap());
                    }
                    source.ack(batch.into_iter().map(|d| d.token).collect()).await.unwrap();
                }
                Received::Exhausted => return out,
            }
        }
    }

    #[tokio::test]
    async fn file_source_reads_every_nonblank_line_then_is_exhausted() {
        let input = b"{\"a\":1}\n\nnot json\r\n{\"b\":2}".to_vec();
        let source = FileSource::from_reader(
            "mem".into(),
            Box::new(std::io::Cursor::new(input)),
            FileSourceOptions::default(),
        );
        assert_eq!(drain(&source).await, vec!["{\"a\":1}", "not json", "{\"b\":2}"]);
    }

    #[tokio::test]
    async fn file_source_is_not_exhausted_while_a_line_is_unsettled() {
        let source = FileSource::from_reader(
            "mem".into(),
            Box::new(std::io::Cursor::new(b"x\n".to_vec())),
            FileSourceOptions::default(),
        );
        let Received::Messages(batch) = source.receive(10, Duration::from_secs(1)).await.unwrap() else {
            panic!("expected the line")
        };
        assert_eq!(batch[0].attributes[LINE_ATTRIBUTE], "1");
        source.nack(batch[0].token.clone(), Duration::ZERO).await.unwrap();
        assert_eq!(drain(&source).await, vec!["x"]);
    }

    #[tokio::test]
    async fn file_source_reads_ahead_a_bounded_number_of_lines() {
        let input: Vec<u8> = (0..READ_AHEAD_LINES * 3)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let source = FileSource::from_reader(
            "big".into(),
            Box::new(std::io::Cursor::new(input)),
            FileSourceOptions::default(),
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while source.queue.len() < READ_AHEAD_LINES {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the reader fills its read-ahead");
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            source.queue.len(),
            READ_AHEAD_LINES,
            "the reader stops at its read-ahead"
        );
        assert_eq!(drain(&source).await.len(), READ_AHEAD_LINES * 3);
    }

    #[tokio::test]
    async fn record_lines_become_the_messages_they_record_and_long_lines_are_cut() {
        let input =
            b"{\"body\": {\"a\": 1}, \"attributes\": {\"k\": \"v\"}, \"ordering_key\": \"g\"}\nnot a record\n".to_vec();
        let source = FileSource::from_reader(
            "rec".into(),
            Box::new(std::io::Cursor::new(input)),
            FileSourceOptions {
                format: LineFormat::Record,
                ..FileSourceOptions::default()
            },
        );
        let Received::Messages(batch) = source.receive(10, Duration::from_secs(1)).await.unwrap() else {
            panic!("expected lines")
        };
        assert_eq!(&batch[0].body[..], b"{\"a\": 1}");
        assert_eq!(batch[0].attributes["k"], "v");
        assert_eq!(batch[0].ordering_key.as_deref(), Some("g"));
        assert_eq!(&batch[1].body[..], b"not a record");
        assert!(batch[1].attributes.contains_key(RECORD_ERROR_ATTRIBUTE));

        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b"\nshort\n");
        let source = FileSource::from_reader(
            "long".into(),
            Box::new(std::io::Cursor::new(input)),
            FileSourceOptions {
                max_line_bytes: 10,
                ..FileSourceOptions::default()
            },
        );
        let Received::Messages(batch) = source.receive(10, Duration::from_secs(1)).await.unwrap() else {
            panic!("expected lines")
        };
        assert_eq!(batch[0].body.len(), 11, "cut one byte past the limit");
        assert_eq!(batch[0].attributes[LINE_BYTES_ATTRIBUTE], "100");
        assert_eq!(&batch[1].body[..], b"short");
        assert!(!batch[1].attributes.contains_key(LINE_BYTES_ATTRIBUTE));
    }

    #[tokio::test]
    async fn file_target_appends_json_lines_with_attributes() {
        let dir = std::env::temp_dir().join(format!("veltrix-ft-{}", std::process::id()));
        let path = dir.join("out.jsonl");
        let _ = std::fs::remove_file(&path);
        let target = FileTarget::open(&path).await.unwrap();
        let mut attributes = Attributes::new();
        attributes.insert("k", "v");
        let results = target
            .publish(vec![
                OutboundMessage {
                    body: Bytes::from("{\"x\":1}"),
                    attributes,
                    ..Default::default()
                },
                OutboundMessage {
                    body: Bytes::from("plain"),
                    ..Default::default()
                },
            ])
            .await;
        assert!(results.iter().all(Result::is_ok));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0], json!({"body": {"x": 1}, "attributes": {"k": "v"}}));
        assert_eq!(lines[1], json!({"body": "plain", "attributes": {}}));
        assert_eq!(text.lines().next(), Some(r#"{"body":{"x":1},"attributes":{"k":"v"}}"#));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
