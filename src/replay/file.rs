//! Dead letters from a JSON-lines file written by a `file` target: each line is a
//! [`record`](veltrix_queue::record) and becomes, byte for byte, the message it was (body,
//! attributes with their types, ordering key). A line that is not a record is reported as
//! `failed` and left alone.
//!
//! The file is read, not changed: replayed lines stay in it (move it aside after a replay; the
//! `veltrix.replays` count on the replayed copies still stops loops).

use std::path::Path;
use std::time::Duration;

use veltrix_queue::file::{FileSource, FileSourceOptions, LineFormat, RECORD_ERROR_ATTRIBUTE};
use veltrix_queue::{Delivery, QueueError};

/// Longest dead-letter line read (a 10 MB Pub/Sub message, base64, with its attributes fits).
pub const MAX_DEAD_LETTER_LINE_BYTES: usize = 64 * 1024 * 1024;

/// How long a line read from the file stays leased before it could be handed out again.
const LINE_LEASE: Duration = Duration::from_secs(3600);

/// Opens a dead-letter file (`-` = stdin) as a source of the messages it records.
pub async fn open(path: &Path) -> Result<FileSource, QueueError> {
    FileSource::open(
        path,
        FileSourceOptions {
            visibility_timeout: LINE_LEASE,
            format: LineFormat::Record,
            max_line_bytes: MAX_DEAD_LETTER_LINE_BYTES,
        },
    )
    .await
}

/// Why a line of a dead-letter file cannot be replayed, if it cannot.
pub fn unreadable(d: &Delivery) -> Option<&str> {
    d.attributes.get_str(RECORD_ERROR_ATTRIBUTE)
}
