//! The embedded backend: a line-per-event file (or stdin) source, and JSON-lines targets.
//!
//! The source reads lines into an in-process [`MemoryQueue`], so retries, delays and leases
//! behave exactly as on a queue; it returns [`Received::Exhausted`] once the input has ended and
//! every line was settled (acked or dead-lettered). Reading is paced: at most
//! [`READ_AHEAD_LINES`] lines are buffered, so a huge file or an endless stdin uses bounded memory.
//!
//! Targets write one JSON object per message, `{"body": …, "attributes": {…}}`, where `body` is
//! the parsed JSON when the body is JSON and a string otherwise. A write counts as done once it is
//! flushed to the operating system.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

use crate::memory::{MemoryQueue, MemoryQueueConfig};
use crate::{
    AckFailure, AckToken, Attributes, OutboundMessage, Publisher, QueueError, Received, Source, SourceInfo,
    SourceLimits,
};

/// Most unsettled lines held in memory before reading pauses.
pub const READ_AHEAD_LINES: usize = 4096;
/// Most messages written per flush.
pub const MAX_WRITE_BATCH: usize = 512;
/// Attribute carrying the 1-based line number of a file event.
pub const LINE_ATTRIBUTE: &str = "file.line";

/// Reads one event body per line from a file, or from stdin when the path is `-`.
pub struct FileSource {
    name: String,
    queue: MemoryQueue,
    reader: tokio::task::JoinHandle<()>,
    read_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl FileSource {
    /// Opens `path` (`-` = stdin) and starts reading it in the background.
    ///
    /// `visibility_timeout` is the lease of an unsettled line before it is handed out again.
    pub async fn open(path: &Path, visibility_timeout: Duration) -> Result<Self, QueueError> {
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
        Ok(Self::from_reader(name, input, visibility_timeout))
    }

    /// Reads lines from any reader (used for stdin and in tests).
    pub fn from_reader(name: String, input: Box<dyn AsyncRead + Send + Unpin>, visibility_timeout: Duration) -> Self {
        let mut config = MemoryQueueConfig::named(name.clone());
        config.visibility_timeout = visibility_timeout;
        let queue = MemoryQueue::new(config);
        let read_error = Arc::new(std::sync::Mutex::new(None));
        let reader = tokio::spawn(read_lines(input, queue.clone(), read_error.clone()));
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

async fn read_lines(
    input: Box<dyn AsyncRead + Send + Unpin>,
    queue: MemoryQueue,
    read_error: Arc<std::sync::Mutex<Option<String>>>,
) {
    let mut lines = BufReader::new(input);
    let mut buf = Vec::new();
    let mut line_no: u64 = 0;
    loop {
        queue.wait_until_len_below(READ_AHEAD_LINES).await;
        buf.clear();
        match lines.read_until(b'\n', &mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                line_no += 1;
                let line = trim_line_end(&buf);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let mut attributes = Attributes::new();
                attributes.insert(LINE_ATTRIBUTE.to_string(), line_no.to_string());
                queue.push(OutboundMessage {
                    body: Bytes::copy_from_slice(line),
                    attributes,
                    ..Default::default()
                });
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

    async fn extend(&self, tokens: Vec<AckToken>, by: Duration) -> Result<(), QueueError> {
        self.queue.extend(tokens, by).await
    }

    async fn backlog(&self) -> Option<u64> {
        self.queue.backlog().await
    }
}

/// Renders a message as one JSON line: `{"body": …, "attributes": {…}}`.
pub fn render_json_line(message: &OutboundMessage) -> Vec<u8> {
    let body = match serde_json::from_slice::<Value>(&message.body) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(&message.body).into_owned()),
    };
    let mut line = json!({ "body": body, "attributes": message.attributes });
    if let Some(key) = &message.ordering_key {
        line["ordering_key"] = Value::String(key.clone());
    }
    let mut out = serde_json::to_vec(&line).expect("a JSON value always serializes");
    out.push(b'\n');
    out
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
            buf.extend_from_slice(&render_json_line(m));
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
            Duration::from_secs(30),
        );
        assert_eq!(drain(&source).await, vec!["{\"a\":1}", "not json", "{\"b\":2}"]);
    }

    #[tokio::test]
    async fn file_source_is_not_exhausted_while_a_line_is_unsettled() {
        let source = FileSource::from_reader(
            "mem".into(),
            Box::new(std::io::Cursor::new(b"x\n".to_vec())),
            Duration::from_secs(30),
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
            Duration::from_secs(30),
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
    async fn file_target_appends_json_lines_with_attributes() {
        let dir = std::env::temp_dir().join(format!("veltrix-ft-{}", std::process::id()));
        let path = dir.join("out.jsonl");
        let _ = std::fs::remove_file(&path);
        let target = FileTarget::open(&path).await.unwrap();
        let mut attributes = Attributes::new();
        attributes.insert("k".into(), "v".into());
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
        std::fs::remove_dir_all(dir).unwrap();
    }
}
