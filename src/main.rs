//! The `veltrix` command line: argument parsing and exit codes only; the work is in the library.

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use veltrix::config::{self, ConfigError};
use veltrix::runner::RunOptions;
use veltrix::testing::{run_tests, Format, TestOptions};

/// mimalloc: the worker allocates many small, short-lived objects per message (parsed values,
/// attribute maps); glibc malloc costs measurably more (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An event worker: pull events from a queue, apply rules, ack or dead-letter every message.
#[derive(Parser)]
#[command(name = "veltrix", version, about)]
struct Cli {
    /// Log line format (to stderr). Levels come from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `veltrix test --format`.
#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until the source is exhausted or SIGTERM/SIGINT.
    Run {
        /// Config file (.toml or .json).
        #[arg(short, long)]
        config: PathBuf,
        /// Serve /metrics (Prometheus), /healthz and /readyz on this address; off unless given
        /// (bare `--metrics-addr` means 127.0.0.1:9464).
        #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:9464", value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Reload when the config file or a schema it names changes (checked every second; a
        /// Kubernetes ConfigMap's symlink swap counts). SIGHUP reloads with or without it.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a config file and its patterns and transforms; connect to nothing unless
    /// `--preflight`.
    Check {
        /// Config file (.toml or .json).
        #[arg(short, long)]
        config: PathBuf,
        /// Also connect and compare the real queues, subscriptions and topics with the config;
        /// exit 1 on errors (0 with warnings only).
        #[arg(long)]
        preflight: bool,
    },
    /// Evaluate events against the rules with no side effects; print, per event, the outcome
    /// and the field that decided each rule.
    Test {
        /// Config file (.toml or .json).
        #[arg(short, long)]
        config: PathBuf,
        /// Events, one per line (`-` for stdin).
        events: PathBuf,
        /// Each line is {"body": …, "attributes": {…}} instead of a bare body.
        #[arg(long)]
        envelope: bool,
        /// Show every field of every rule (JSON: an `explain` list per event).
        #[arg(long)]
        explain: bool,
        /// `human`: a short report per event (coloured on a terminal unless NO_COLOR is set);
        /// `json`: one JSON object per line, for scripts.
        #[arg(long, value_enum, default_value_t = ReportFormat::Human)]
        format: ReportFormat,
    },
    /// Serve a local page to edit the rules and see, as you type, each rule's verdict, the
    /// transform's output and the outcome; connects to no queue or target.
    Playground {
        /// Config file (.toml or .json).
        #[arg(short, long)]
        config: PathBuf,
        /// Where to serve the page.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Events to pick from, one per line.
        #[arg(long)]
        events: Option<PathBuf>,
    },
    /// Dead-letter tools.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The transform sandbox process (started by the worker, not by hand).
    #[command(name = "__sandbox", hide = true)]
    Sandbox,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Publish dead letters back to the source (or another target), without the attributes the
    /// worker added; print one JSON line per dead letter and a summary.
    Replay {
        /// The worker's config file (.toml or .json).
        #[arg(short, long)]
        config: PathBuf,
        /// Target holding the dead letters (default: pipeline.dead_letter).
        #[arg(long, value_name = "TARGET")]
        from: Option<String>,
        /// Read the dead letters from this Pub/Sub subscription (a topic cannot be read).
        #[arg(long, value_name = "projects/P/subscriptions/S")]
        from_subscription: Option<String>,
        /// Where to publish: `source` (the worker's source) or a target name.
        #[arg(long, default_value = veltrix::replay::open::TO_SOURCE, value_name = "source|TARGET")]
        to: String,
        /// Replay only dead letters whose envelope matches this event pattern (JSON), e.g.
        /// '{"attributes": {"veltrix.reason": ["transform_failed"]}}'.
        #[arg(long, value_name = "PATTERN")]
        filter: Option<String>,
        /// Publish at most this many messages per second.
        #[arg(long, value_name = "N")]
        rate: Option<f64>,
        /// Stop after this many replays.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Print what would be replayed; publish and ack nothing.
        #[arg(long)]
        dry_run: bool,
        /// A dead letter already replayed this many times (`veltrix.replays`) stays put.
        #[arg(long, default_value_t = veltrix::replay::DEFAULT_MAX_REPLAYS, value_name = "N")]
        max_replays: u32,
        /// Seconds one receive waits; a receive that brings nothing new ends the replay.
        #[arg(long, default_value_t = 2, value_name = "SECS")]
        wait_secs: u64,
    },
}

/// Exit code for a config or usage problem.
const EXIT_CONFIG: u8 = 2;

fn init_logs(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load(path: &Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|e: ConfigError| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sandbox => veltrix::sandbox::child::main(),
        Command::Check { config, preflight } => {
            init_logs(cli.log_format, "warn");
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = c.require_dead_letter(None) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            println!(
                "{}: OK ({} rules, {} targets, source {} {})",
                config.display(),
                c.rules.rules().len(),
                c.targets.len(),
                c.source.kind(),
                c.source.name()
            );
            print!("{}", config::summary::summary(&c));
            println!(
                "memory: up to {} MiB (base, max_in_flight_bytes, one receive batch per poller{}): the container's memory limit must be at least this",
                config::memory::memory_bound_bytes(&c).div_ceil(1024 * 1024),
                if c.rules.transforms().is_empty() { "" } else { ", transform sandboxes" }
            );
            if preflight {
                return run_preflight(&c);
            }
            ExitCode::SUCCESS
        }
        Command::Test {
            config,
            events,
            envelope,
            explain,
            format,
        } => {
            init_logs(cli.log_format, "warn");
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let format = match format {
                ReportFormat::Json => Format::Json,
                ReportFormat::Human => Format::Human {
                    color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
                },
            };
            let options = TestOptions {
                envelope,
                explain,
                format,
            };
            match test(&c, &events, options) {
                Ok(invalid) if invalid > 0 => {
                    eprintln!("error: {invalid} input line(s) could not be read; see the \"error\" lines");
                    ExitCode::FAILURE
                }
                Ok(_) => ExitCode::SUCCESS,
                // The reader went away (`veltrix test … | head`): nothing is wrong.
                Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Playground { config, addr, events } => {
            init_logs(cli.log_format, "warn");
            match playground(&config, addr, events.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    config,
                    from,
                    from_subscription,
                    to,
                    filter,
                    rate,
                    limit,
                    dry_run,
                    max_replays,
                    wait_secs,
                },
        } => {
            init_logs(cli.log_format, "warn");
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let filter = match filter.as_deref().map(compile_filter).transpose() {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: --filter: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                eprintln!("error: --rate must be a positive number of messages per second");
                return ExitCode::from(EXIT_CONFIG);
            }
            let options = veltrix::replay::ReplayOptions {
                filter,
                rate_per_sec: rate,
                limit,
                dry_run,
                max_replays,
                receive_wait: std::time::Duration::from_secs(wait_secs),
            };
            match replay(&c, from.as_deref(), from_subscription.as_deref(), &to, &options) {
                Ok(summary) => {
                    eprintln!("replay: {summary}");
                    if summary.failed > 0 {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            metrics_addr,
            watch,
        } => {
            init_logs(cli.log_format, "info");
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match run(c, RunOptions { metrics_addr, watch }) {
                Ok(summary) => {
                    eprintln!("veltrix: {summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn playground(config: &Path, addr: std::net::SocketAddr, events: Option<&Path>) -> anyhow::Result<()> {
    let playground = veltrix::playground::Playground::open(config, events).with_context(|| {
        format!(
            "cannot read {}",
            events.map_or(config.display().to_string(), |e| format!(
                "{} or {}",
                config.display(),
                e.display()
            ))
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (shutdown, _abort) = veltrix::shutdown::signals();
        veltrix::playground::serve(std::sync::Arc::new(playground), addr, shutdown)
            .await
            .with_context(|| format!("cannot serve the playground on {addr}"))
    })
}

/// Whether `e` is a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == Some(std::io::ErrorKind::BrokenPipe)
            || matches!(
                cause.downcast_ref::<veltrix::testing::TestError>(),
                Some(veltrix::testing::TestError::Io(io)) if io.kind() == std::io::ErrorKind::BrokenPipe
            )
    })
}

fn test(c: &config::Config, events: &Path, options: TestOptions) -> anyhow::Result<usize> {
    let sandbox = veltrix::sandbox::Sandbox::start(&c.settings.sandbox, c.rules.transform_sources())?;
    let stdout = std::io::stdout().lock();
    let counts = if events.as_os_str() == "-" {
        run_tests(c, std::io::stdin().lock(), stdout, options, &sandbox)?
    } else {
        let file =
            std::fs::File::open(events).with_context(|| format!("cannot open events file {}", events.display()))?;
        run_tests(c, BufReader::new(file), stdout, options, &sandbox)?
    };
    Ok(counts.invalid_lines)
}

fn run(c: config::Config, options: RunOptions) -> anyhow::Result<veltrix::pipeline::stats::Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let (shutdown, abort) = veltrix::shutdown::signals();
        veltrix::runner::run_with_abort(c, options, shutdown, abort).await
    });
    // The worker has drained. A blocking read of stdin cannot be cancelled: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    Ok(result?)
}

fn compile_filter(text: &str) -> anyhow::Result<veltrix::rules::pattern::PatternSet> {
    let pattern: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    veltrix::rules::pattern::PatternSet::compile([("--filter", &pattern)]).map_err(|e| {
        let at = if e.path.is_empty() {
            String::new()
        } else {
            format!(" at {}", e.path)
        };
        anyhow::anyhow!("invalid pattern{at}: {}", e.reason)
    })
}

fn replay(
    c: &config::Config,
    from: Option<&str>,
    from_subscription: Option<&str>,
    to: &str,
    options: &veltrix::replay::ReplayOptions,
) -> anyhow::Result<veltrix::replay::ReplaySummary> {
    use std::io::Write as _;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        veltrix::replay::open::check_distinct(c, from, to)?;
        let source = veltrix::replay::open::open_dead_letters(c, from, from_subscription).await?;
        let destination = veltrix::replay::open::open_destination(c, to).await?;
        let mut stdout = std::io::stdout().lock();
        let summary = veltrix::replay::replay(source, destination.as_ref(), options, |record| {
            let _ = serde_json::to_writer(&mut stdout, record);
            let _ = writeln!(stdout);
        })
        .await?;
        Ok(summary)
    });
    // A blocking read of stdin (`-` as the dead-letter file) cannot be cancelled: do not wait.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

fn run_preflight(c: &config::Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(veltrix::preflight::preflight(c));
    for checked in &report.checked {
        println!("checked: {checked}");
    }
    for finding in &report.findings {
        println!("{finding}");
    }
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == veltrix::preflight::Severity::Error)
        .count();
    let warnings = report.findings.len() - errors;
    println!("preflight: {errors} error(s), {warnings} warning(s)");
    if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
