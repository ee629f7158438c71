//! The transform sandbox: transforms run in separate processes, never on the worker's threads.
//!
//! ```text
//!  pipeline ── run(transform, envelope JSON) ──> job queue ──> slot thread ──frame──> veltrix __sandbox
//!     ▲                                                             │  poll(timeout)       (rlimits, no env,
//!     └──────────── output JSON | Failed | OverBudget ──────────────┘  kill on timeout      pdeathsig)
//! ```
//!
//! jq programs can loop forever (`def f: f; f`), allocate without bound (`[range(1e9)]`) or
//! recurse until the stack overflows; none of that can be interrupted inside a process, so each
//! of `processes` slots owns one child process and one thread that talks to it. A transform
//! that exceeds its time budget is killed (the slot starts a new process); one that exhausts
//! the child's memory limit or its stack ends the child. Either way only that message fails,
//! with [`RunError::OverBudget`] (`transform_budget_exceeded`); the worker goes on.
//!
//! The child is the worker's own binary started as `veltrix __sandbox` ([`child`]), with an
//! empty environment and no stderr, so a transform can neither read secrets nor write logs.

pub mod child;
pub mod protocol;

use std::io::{self, BufReader, BufWriter, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::observe::events::{LogEvent, SandboxRestarted};
use protocol::{decode_answer, encode_request, read_frame, write_frame, Init, Status};

/// The argument that makes the binary a sandbox process.
pub const CHILD_ARG: &str = "__sandbox";

/// Environment variable naming the sandbox program (default: the running executable).
pub const PROGRAM_ENV: &str = "VELTRIX_SANDBOX_PROGRAM";

/// Longest wait for a new sandbox process to compile its transforms and say it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Budgets and size of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    /// The executable started as `PROGRAM __sandbox`.
    pub program: PathBuf,
    /// Longest time one transform may run on one message.
    pub timeout: Duration,
    /// Longest output of one transform, in bytes.
    pub max_output_bytes: usize,
    /// Memory one sandbox process may use, in bytes.
    pub max_memory_bytes: u64,
    /// Sandbox processes (transforms run in parallel up to this many).
    pub processes: usize,
}

impl SandboxSettings {
    /// The program to start: [`PROGRAM_ENV`] if set, else the running executable.
    pub fn default_program() -> PathBuf {
        std::env::var_os(PROGRAM_ENV)
            .map(PathBuf::from)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("veltrix"))
    }
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            program: Self::default_program(),
            timeout: Duration::from_millis(250),
            max_output_bytes: 1024 * 1024,
            max_memory_bytes: 64 * 1024 * 1024,
            processes: 2,
        }
    }
}

/// Why a transform produced no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The program failed on this input (a jq error, no output, several outputs).
    #[error("{0}")]
    Failed(String),
    /// The program broke a budget on this input: time, output size, memory or stack.
    #[error("{0}")]
    OverBudget(String),
    /// No sandbox process could run it (it could not be started); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
}

/// Why the sandbox did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the transform sandbox ({program}): {reason}")]
pub struct StartError {
    /// The program tried.
    pub program: String,
    /// Why.
    pub reason: String,
}

struct Job {
    transform: u32,
    input: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<u8>, RunError>>,
}

/// A pool of sandbox processes running a fixed set of transforms.
pub struct Sandbox {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Sandbox {
    /// Starts `settings.processes` sandbox processes for `transforms` (by index) and waits
    /// until each said it is ready.
    pub fn start(settings: &SandboxSettings, transforms: Vec<String>) -> Result<Self, StartError> {
        let config = Arc::new(SlotConfig {
            settings: settings.clone(),
            init: Init {
                transforms,
                max_output_bytes: settings.max_output_bytes,
                max_memory_bytes: settings.max_memory_bytes,
                parent_pid: std::process::id(),
            },
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let fail = |reason: String| StartError {
            program: settings.program.display().to_string(),
            reason,
        };
        let mut ready = Vec::new();
        for _ in 0..settings.processes.max(1) {
            let rx = rx.clone();
            let config = config.clone();
            let (started_tx, started) = mpsc::channel::<Result<(), String>>();
            // The slot's own thread starts its process: the kernel kills a child whose parent
            // *thread* ends (PR_SET_PDEATHSIG), so it must be a thread that lives as long.
            std::thread::Builder::new()
                .name("veltrix-sandbox".into())
                .spawn(move || match ChildProcess::spawn(&config) {
                    Ok(process) => {
                        let _ = started_tx.send(Ok(()));
                        slot(config, Some(process), rx);
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                })
                .map_err(|e| fail(format!("cannot start a thread: {e}")))?;
            ready.push(started);
        }
        for started in ready {
            started
                .recv()
                .unwrap_or_else(|_| Err("the sandbox thread ended".into()))
                .map_err(fail)?;
        }
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
        })
    }

    fn submit(&self, transform: usize, input: Vec<u8>) -> oneshot::Receiver<Result<Vec<u8>, RunError>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            transform: transform as u32,
            input,
            reply,
        };
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = jobs.as_ref() {
            let _ = tx.send(job);
        }
        answer
    }

    /// Runs transform `transform` on `input` (JSON) in a sandbox process.
    pub async fn run(&self, transform: usize, input: Vec<u8>) -> Result<Vec<u8>, RunError> {
        self.submit(transform, input)
            .await
            .unwrap_or_else(|_| Err(RunError::Unavailable("the transform sandbox has stopped".into())))
    }

    /// Like [`Sandbox::run`], for callers outside an async runtime.
    pub fn run_blocking(&self, transform: usize, input: Vec<u8>) -> Result<Vec<u8>, RunError> {
        self.submit(transform, input)
            .blocking_recv()
            .unwrap_or_else(|_| Err(RunError::Unavailable("the transform sandbox has stopped".into())))
    }
}

/// Something that runs transforms by index: the [`Sandbox`], or [`InProcess`] for tests and tools
/// that trust their transforms.
pub trait RunTransforms {
    /// Runs transform `transform` on `input` (JSON) and returns its output (JSON).
    fn run_transform(&self, transform: usize, input: &[u8]) -> Result<Vec<u8>, RunError>;
}

impl RunTransforms for Sandbox {
    fn run_transform(&self, transform: usize, input: &[u8]) -> Result<Vec<u8>, RunError> {
        self.run_blocking(transform, input.to_vec())
    }
}

/// Runs transforms in this process, without budgets: for trusted programs in tests and tools.
pub struct InProcess<'a>(pub &'a crate::rules::RuleSet);

impl RunTransforms for InProcess<'_> {
    fn run_transform(&self, transform: usize, input: &[u8]) -> Result<Vec<u8>, RunError> {
        match self.0.transforms().get(transform) {
            Some(t) => t.run_bytes(input).map_err(|e| RunError::Failed(e.0)),
            None => Err(RunError::Failed(format!("no transform {transform}"))),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Closing the queue ends every slot after its current job; its process then reads the
        // end of its input and exits.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

struct SlotConfig {
    settings: SandboxSettings,
    init: Init,
}

/// One slot: takes jobs, runs them in its process, replaces the process when it dies.
fn slot(config: Arc<SlotConfig>, mut process: Option<ChildProcess>, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|e| e.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let result = run_in(&config, &mut process, &job);
        let _ = job.reply.send(result);
    }
    if let Some(p) = process {
        p.stop();
    }
}

fn run_in(config: &SlotConfig, process: &mut Option<ChildProcess>, job: &Job) -> Result<Vec<u8>, RunError> {
    if process.is_none() {
        *process = Some(ChildProcess::spawn(config).map_err(RunError::Unavailable)?);
    }
    let p = process.as_mut().expect("just started");
    let deadline = Instant::now() + config.settings.timeout;
    match p.ask(job.transform, &job.input, deadline) {
        Ok((Status::Ok, out)) => Ok(out),
        Ok((Status::Failed, message)) => Err(RunError::Failed(String::from_utf8_lossy(&message).into_owned())),
        Ok((Status::OverBudget, message)) => Err(RunError::OverBudget(String::from_utf8_lossy(&message).into_owned())),
        Err(failure) => {
            let dead = process.take().expect("the process that failed");
            let how = dead.end(failure.timed_out);
            SandboxRestarted { reason: how.clone() }.emit();
            Err(if failure.timed_out {
                RunError::OverBudget(format!(
                    "the transform ran longer than its budget of {} ms and was stopped",
                    config.settings.timeout.as_millis()
                ))
            } else {
                RunError::OverBudget(format!(
                    "the transform ended its sandbox process ({how}): it ran out of memory (limit {} bytes) or stack (too deep recursion)",
                    config.settings.max_memory_bytes
                ))
            })
        }
    }
}

/// A request that got no answer.
struct NoAnswer {
    timed_out: bool,
}

struct ChildProcess {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ChildProcess {
    fn spawn(config: &SlotConfig) -> Result<Self, String> {
        let mut child = Command::new(&config.settings.program)
            .arg(CHILD_ARG)
            .env_clear()
            .env(child::ALLOCATOR_ARENA_ENV.0, child::ALLOCATOR_ARENA_ENV.1)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Not in the worker's process group: Ctrl-C in a terminal must not kill transforms
            // in the middle of the drain.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", config.settings.program.display()))?;
        let stdin = BufWriter::new(child.stdin.take().expect("stdin is piped"));
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut p = Self { child, stdin, stdout };
        let init = serde_json::to_vec(&config.init).expect("the init frame serializes");
        let started = write_frame(&mut p.stdin, &[&init])
            .map_err(|e| e.to_string())
            .and_then(|()| {
                p.read_answer(Instant::now() + START_TIMEOUT)
                    .map_err(|_| "no answer".into())
            });
        match started {
            Ok((Status::Ok, _)) => Ok(p),
            Ok((_, message)) => {
                p.stop();
                Err(format!(
                    "the transforms did not compile: {}",
                    String::from_utf8_lossy(&message)
                ))
            }
            Err(e) => {
                let how = p.end(false);
                Err(format!(
                    "the sandbox process did not start ({e}; {how}); is {} the veltrix binary?",
                    config.settings.program.display()
                ))
            }
        }
    }

    fn ask(&mut self, transform: u32, input: &[u8], deadline: Instant) -> Result<(Status, Vec<u8>), NoAnswer> {
        let [index, input] = encode_request(transform, input);
        if write_frame(&mut self.stdin, &[&index, &input]).is_err() {
            return Err(NoAnswer { timed_out: false });
        }
        self.read_answer(deadline)
    }

    fn read_answer(&mut self, deadline: Instant) -> Result<(Status, Vec<u8>), NoAnswer> {
        let mut reader = DeadlineReader {
            inner: &mut self.stdout,
            deadline,
            timed_out: false,
        };
        let frame = read_frame(&mut reader);
        let timed_out = reader.timed_out;
        match frame {
            Ok(Some(frame)) => match decode_answer(&frame) {
                Some((status, rest)) => Ok((status, rest.to_vec())),
                None => Err(NoAnswer { timed_out }),
            },
            _ => Err(NoAnswer { timed_out }),
        }
    }

    /// Kills (if needed) and reaps the process; says how it ended.
    fn end(mut self, kill: bool) -> String {
        if kill {
            let _ = self.child.kill();
        }
        drop(self.stdin);
        match self.child.wait() {
            Ok(status) => match (status.code(), status.signal()) {
                (_, Some(signal)) => format!("signal {signal}"),
                (Some(code), _) => format!("exit code {code}"),
                _ => "ended".into(),
            },
            Err(e) => format!("cannot wait for it: {e}"),
        }
    }

    /// Ends a healthy process: its input closes and it exits.
    fn stop(self) {
        let _ = self.end(false);
    }
}

/// Reads from the child's stdout, failing with `TimedOut` once `deadline` passed (poll(2)).
struct DeadlineReader<'a> {
    inner: &'a mut BufReader<ChildStdout>,
    deadline: Instant,
    timed_out: bool,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inner.buffer().is_empty() {
            loop {
                let left = self.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.timed_out = true;
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "sandbox answer timed out"));
                }
                let mut fd = libc::pollfd {
                    fd: self.inner.get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd for a file descriptor this process owns.
                let ready = unsafe { libc::poll(&mut fd, 1, ms) };
                if ready > 0 {
                    break;
                }
                if ready < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        self.inner.read(buf)
    }
}
