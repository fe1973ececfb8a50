//! Logging setup: human-readable text or JSON lines, filtered by `SALVE_LOG`.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event, for log pipelines.
    Json,
}

/// Installs the global subscriber, writing to stderr. `SALVE_LOG` takes `tracing` filter
/// directives (default `info`).
pub fn init(format: LogFormat) {
    init_with(format, "info");
}

/// [`init`] with `default` as the filter when `SALVE_LOG` is not set.
pub fn init_with(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("SALVE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
