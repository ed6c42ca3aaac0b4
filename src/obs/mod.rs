//! Logs, metrics and the transfer log.
//!
//! Logging: tracing with an `EnvFilter` (`RUST_LOG` wins over `[logging]
//! level`), as text or JSON lines, written through a non-blocking writer: a
//! stalled stderr (a full pipe, a slow log shipper) drops lines instead of
//! blocking every session. The level can change on reload. Each session runs
//! in a span (id, peer, listener, user, upstream), so every line a session
//! writes carries those fields. Passwords never reach a log: `Command`'s
//! `Debug` masks PASS, and secrets are `Secret`s.

pub mod metrics;
pub mod xferlog;

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Lines buffered for the log writer before new ones are dropped.
const LOG_BUFFER_LINES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Changes the log level at run time; keep it, and the writer guard, alive.
pub struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set: it stays in charge and reloads leave it alone.
    from_environment: bool,
    _writer: WorkerGuard,
}

impl LogControl {
    /// Applies `[logging] level` from a reloaded config.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        if self.from_environment {
            return Ok(());
        }
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber. `level` is the config's directive, used
/// when `RUST_LOG` is not set.
pub fn init_logging(format: LogFormat, level: &str) -> Option<LogControl> {
    let from_environment = std::env::var_os("RUST_LOG").is_some();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .finish(std::io::stderr());
    let ansi = std::io::stderr().is_terminal();
    let result = match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi),
            )
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(writer),
            )
            .try_init(),
    };
    match result {
        Ok(()) => Some(LogControl {
            filter: handle,
            from_environment,
            _writer: guard,
        }),
        Err(e) => {
            eprintln!("ftpbridge: logging already initialised: {e}");
            None
        }
    }
}
