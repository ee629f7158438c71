//! The failure ledger: the own failure counts of messages given back to a source that cannot
//! carry them in the message.
//!
//! An SQS standard queue, the memory queue and the file source take a released message's
//! count along in the message itself ([`super::own_attributes::ATTR_FAILURES`]). An SQS FIFO
//! queue and a Pub/Sub subscription cannot without breaking a promise: a re-send goes behind
//! the later messages of its own group, and a publish reaches every subscription of the topic.
//! They get the message back as it was, under the same provider message id. The ledger
//! remembers `id → failures` for those messages: written when the worker releases a failed
//! message ([`FailureLedger::record`]), read and removed when a message with that id is
//! received again ([`FailureLedger::take`]), and kept in a file so it survives a restart.
//!
//! Files: each running worker owns one, `<dir>/<pid>-<nanos>.ledger`, locked while it runs. A
//! worker that starts adopts every file in the directory that no running worker holds (those
//! of workers that stopped or crashed), so its replacement on the same machine or volume goes
//! on counting. Lines are `<failures> <recorded, unix seconds> <id>`; later lines win,
//! unreadable ones are skipped, and entries older than [`RETENTION`] are dropped (no queue
//! keeps a message longer). A message redelivered to a replica that does not share the
//! directory starts a fresh count; the provider's delivery limit is the backstop there.
//!
//! Receiving costs nothing while the ledger is empty (one atomic load), and one map lookup
//! otherwise; writes happen only on releases of failed messages.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Entries older than this are dropped: the longest any supported queue keeps a message
/// (Pub/Sub: 31 days; SQS: 14 days).
pub const RETENTION: Duration = Duration::from_secs(31 * 24 * 3600);

/// Most entries kept; releases beyond it are not recorded (their messages start afresh).
pub const MAX_ENTRIES: usize = 1_000_000;

/// File name suffix of ledger files.
const SUFFIX: &str = ".ledger";

/// Why the ledger could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("failure ledger {}: {source}", path.display())]
pub struct LedgerError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// One remembered count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    failures: u32,
    recorded_secs: u64,
}

/// Failure counts by message id, backed by this worker's file in a directory.
#[derive(Debug)]
pub struct FailureLedger {
    path: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
    len: AtomicUsize,
    file: Mutex<File>,
    adopted: Vec<PathBuf>,
}

impl FailureLedger {
    /// Opens a ledger in `dir` (created if missing): adopts the files no running worker holds,
    /// writes their live entries to a new file of its own, and removes them.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        let at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LedgerError { path, source }
        };
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        let now = now_secs();
        let mut entries = HashMap::new();
        let mut adopted = Vec::new();
        // Held until the adopted entries are in this worker's file, so no other starting
        // worker adopts them twice.
        let mut held = Vec::new();
        for item in std::fs::read_dir(dir).map_err(at(dir))? {
            let path = item.map_err(at(dir))?.path();
            if !path.to_string_lossy().ends_with(SUFFIX) {
                continue;
            }
            let Ok(file) = File::open(&path) else { continue };
            if file.try_lock().is_err() {
                continue; // a running worker's
            }
            for line in BufReader::new(&file).lines() {
                let Ok(line) = line else { break };
                if let Some((id, entry)) = parse_line(&line) {
                    merge(&mut entries, id, entry, now);
                }
            }
            adopted.push(path);
            held.push(file);
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = dir.join(format!("{}-{nanos}{SUFFIX}", std::process::id()));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(at(&path))?;
        file.try_lock().map_err(|e| LedgerError {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let ledger = Self {
            len: AtomicUsize::new(entries.len()),
            entries: Mutex::new(entries),
            file: Mutex::new(file),
            path,
            adopted,
        };
        ledger.rewrite()?;
        for path in &ledger.adopted {
            // Already in this worker's file; a file left behind is adopted again, harmlessly.
            let _ = std::fs::remove_file(path);
        }
        drop(held);
        Ok(ledger)
    }

    /// This worker's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Files adopted at open (of workers that had stopped).
    pub fn adopted(&self) -> &[PathBuf] {
        &self.adopted
    }

    /// Counts remembered.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The failures remembered for `id`, removed from the ledger (the message is being worked
    /// on again; a new release records it anew).
    pub fn take(&self, id: &str) -> Option<u32> {
        if self.is_empty() {
            return None;
        }
        let mut entries = self.entries.lock().expect("ledger lock");
        let entry = entries.remove(id)?;
        self.len.store(entries.len(), Ordering::Relaxed);
        Some(entry.failures)
    }

    /// Remembers that the message `id` has failed `failures` times, in memory and in the file
    /// (written through to the OS, so a crash of the worker keeps it).
    pub fn record(&self, id: &str, failures: u32) -> Result<(), LedgerError> {
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Ok(()); // no provider gives such ids; nothing could look it up
        }
        let entry = Entry {
            failures,
            recorded_secs: now_secs(),
        };
        {
            let mut entries = self.entries.lock().expect("ledger lock");
            if entries.len() >= MAX_ENTRIES && !entries.contains_key(id) {
                return Ok(());
            }
            entries.insert(id.to_string(), entry);
            self.len.store(entries.len(), Ordering::Relaxed);
        }
        let mut file = self.file.lock().expect("ledger file lock");
        file.write_all(format_line(id, entry).as_bytes())
            .map_err(|source| LedgerError {
                path: self.path.clone(),
                source,
            })
    }

    /// Forgets `id` (its count went along with the message after all).
    pub fn forget(&self, id: &str) {
        if self.is_empty() {
            return;
        }
        let mut entries = self.entries.lock().expect("ledger lock");
        entries.remove(id);
        self.len.store(entries.len(), Ordering::Relaxed);
    }

    /// Writes what is remembered to the file, compacted, and syncs it; called when the worker
    /// stops. An empty ledger removes its file.
    pub fn close(&self) -> Result<(), LedgerError> {
        if self.is_empty() {
            return std::fs::remove_file(&self.path).map_err(|source| LedgerError {
                path: self.path.clone(),
                source,
            });
        }
        self.rewrite()
    }

    /// Replaces the file's content with the live entries, synced.
    fn rewrite(&self) -> Result<(), LedgerError> {
        let text: String = {
            let entries = self.entries.lock().expect("ledger lock");
            entries.iter().map(|(id, &entry)| format_line(id, entry)).collect()
        };
        let file = self.file.lock().expect("ledger file lock");
        let io = |source| LedgerError {
            path: self.path.clone(),
            source,
        };
        // Appending after a truncation writes from the start again.
        file.set_len(0).map_err(io)?;
        (&*file).write_all(text.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// One line of a ledger file.
fn format_line(id: &str, entry: Entry) -> String {
    format!("{} {} {id}\n", entry.failures, entry.recorded_secs)
}

/// Reads a line written by [`format_line`]; `None` for anything else.
fn parse_line(line: &str) -> Option<(&str, Entry)> {
    let mut parts = line.splitn(3, ' ');
    let failures = parts.next()?.parse().ok()?;
    let recorded_secs = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    (!id.is_empty() && !id.contains(char::is_whitespace)).then_some((
        id,
        Entry {
            failures,
            recorded_secs,
        },
    ))
}

/// Adds an entry read from a file: dropped when older than [`RETENTION`]; for an id seen in
/// several files the later record wins.
fn merge(entries: &mut HashMap<String, Entry>, id: &str, entry: Entry, now_secs: u64) {
    if entry.recorded_secs.saturating_add(RETENTION.as_secs()) < now_secs {
        return;
    }
    match entries.get(id) {
        Some(known) if known.recorded_secs > entry.recorded_secs => {}
        _ => {
            entries.insert(id.to_string(), entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(SUFFIX))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_count_survives_a_restart_and_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = FailureLedger::open(dir.path()).unwrap();
        assert_eq!(first.take("m-1"), None, "an empty ledger knows nothing");
        first.record("m-1", 2).unwrap();
        first.record("m-2", 1).unwrap();
        first.record("m-2", 3).unwrap();
        first.close().unwrap();
        drop(first);

        let second = FailureLedger::open(dir.path()).unwrap();
        assert_eq!(second.adopted().len(), 1);
        assert_eq!(
            files(dir.path()),
            vec![second.path().to_path_buf()],
            "the old file is gone"
        );
        assert_eq!(second.take("m-2"), Some(3), "the later record wins");
        assert_eq!(second.take("m-1"), Some(2));
        assert_eq!(second.take("m-1"), None, "taken once");
        assert!(second.is_empty());
        second.close().unwrap();
        assert!(files(dir.path()).is_empty(), "an empty ledger leaves no file");
    }

    #[test]
    fn a_crashed_worker_s_records_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let crashed = FailureLedger::open(dir.path()).unwrap();
        crashed.record("m-1", 4).unwrap();
        drop(crashed); // no close: as after SIGKILL, the lock goes with the process
        let next = FailureLedger::open(dir.path()).unwrap();
        assert_eq!(next.take("m-1"), Some(4));
    }

    #[test]
    fn a_running_worker_s_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let running = FailureLedger::open(dir.path()).unwrap();
        running.record("m-1", 1).unwrap();
        let other = FailureLedger::open(dir.path()).unwrap();
        assert!(other.adopted().is_empty());
        assert_eq!(other.take("m-1"), None);
        assert_eq!(running.take("m-1"), Some(1));
        assert_eq!(files(dir.path()).len(), 2);
    }

    #[test]
    fn forgotten_and_expired_entries_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let old = now_secs() - RETENTION.as_secs() - 10;
        std::fs::write(
            dir.path().join(format!("1-1{SUFFIX}")),
            format!(
                "5 {old} expired\nnot a line\n2 {} kept\n1 {} carried\n",
                now_secs(),
                now_secs()
            ),
        )
        .unwrap();
        let ledger = FailureLedger::open(dir.path()).unwrap();
        assert_eq!(ledger.len(), 2, "the expired and the unreadable line are dropped");
        ledger.forget("carried");
        ledger.close().unwrap();
        drop(ledger);
        let again = FailureLedger::open(dir.path()).unwrap();
        assert_eq!(again.take("expired"), None);
        assert_eq!(again.take("carried"), None);
        assert_eq!(again.take("kept"), Some(2));
    }

    #[test]
    fn ids_no_provider_gives_are_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FailureLedger::open(dir.path()).unwrap();
        ledger.record("", 1).unwrap();
        ledger.record("a b", 1).unwrap();
        ledger.record("a\nb", 1).unwrap();
        assert!(ledger.is_empty());
    }
}
