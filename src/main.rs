//! The `veltrix` command line: argument parsing and exit codes only; the work is in the library.

use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use veltrix::config::{self, ConfigError};
use veltrix::runner::RunOptions;
use veltrix::testing::{run_tests, TestOptions};

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
    },
    /// Validate a config file and its patterns and transforms; connect to nothing.
    Check {
        /// Config file (.toml or .json).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Evaluate events against the rules with no side effects; print one JSON line per event.
    Test {
        /// Config file (.toml or .json).
        #[arg(short, long)]
        config: PathBuf,
        /// Events, one per line (`-` for stdin).
        events: PathBuf,
        /// Each line is {"body": …, "attributes": {…}} instead of a bare body.
        #[arg(long)]
        envelope: bool,
        /// Say, per rule, which field and operator decided.
        #[arg(long)]
        explain: bool,
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
        Command::Check { config } => {
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
            ExitCode::SUCCESS
        }
        Command::Test {
            config,
            events,
            envelope,
            explain,
        } => {
            init_logs(cli.log_format, "warn");
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match test(&c, &events, TestOptions { envelope, explain }) {
                Ok(invalid) if invalid > 0 => {
                    eprintln!("error: {invalid} input line(s) could not be read; see the \"error\" lines");
                    ExitCode::FAILURE
                }
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, metrics_addr } => {
            init_logs(cli.log_format, "info");
            let c = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match run(c, RunOptions { metrics_addr }) {
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

fn test(c: &config::Config, events: &Path, options: TestOptions) -> anyhow::Result<usize> {
    let stdout = std::io::stdout().lock();
    let counts = if events.as_os_str() == "-" {
        run_tests(c, std::io::stdin().lock(), stdout, options)?
    } else {
        let file =
            std::fs::File::open(events).with_context(|| format!("cannot open events file {}", events.display()))?;
        run_tests(c, BufReader::new(file), stdout, options)?
    };
    Ok(counts.invalid_lines)
}

fn run(c: config::Config, options: RunOptions) -> anyhow::Result<veltrix::pipeline::stats::Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(veltrix::runner::run(c, options, veltrix::shutdown::signal()));
    // The worker has drained. A blocking read of stdin cannot be cancelled: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    Ok(result?)
}
