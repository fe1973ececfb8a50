//! A real Prometheus over a backfilled scenario, for tests.
//!
//! A [`Scenario`] is a set of series written in promtool's notation (`up{job="api"}`: `1x10`),
//! laid out at a fixed interval, by default so that its last sample is "now". [`Harness::start`]
//! writes it as OpenMetrics, backfills it with `promtool tsdb create-blocks-from openmetrics`,
//! starts the real `prometheus` binary over that TSDB on a free loopback port and waits until it
//! is ready. The [`RunningPrometheus`] it returns answers PromQL over HTTP at
//! [`url`](RunningPrometheus::url) until it is dropped, which kills the process and deletes its
//! directory.
//!
//! ```text
//! let scenario = Scenario::new(Duration::from_secs(60))?.series(r#"up{job="api"}"#, "1x10")?;
//! let prometheus = prometheus::start(&scenario)?;
//! // query prometheus.url() at prometheus.end_time()
//! ```
//!
//! The binaries come from Debian's `prometheus` package (`apt-get install prometheus`); they are
//! found on `PATH`, or at the paths in `SALVE_PROMETHEUS` and `SALVE_PROMTOOL`.
//!
//! What backfilling cannot express:
//! - **Staleness markers.** promtool reads OpenMetrics, which has no way to write one, so a
//!   `stale` sample is written as no sample: the series stops there (and resumes at its next
//!   value). A query still sees its last value for the 5-minute lookback after it, where a
//!   scraped series would vanish at once.
//! - **Sub-second times.** Times are whole unix seconds and intervals whole seconds.

pub mod remote_write;
mod scenario;
mod server;

use std::process::ExitStatus;
use std::time::Duration;

use crate::process;

pub use scenario::{PlacedSeries, Scenario};
pub use server::{Harness, PROMETHEUS_ENV, PROMTOOL_ENV, RunningPrometheus, start};

/// Why a scenario could not be built, backfilled or served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A series selector is not a metric name with `label="value"` matchers.
    #[error("`{selector}` cannot name a series: {reason}")]
    Selector {
        /// The selector as written.
        selector: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A series' samples are not in promtool's notation.
    #[error("the samples of `{selector}` do not parse")]
    Notation {
        /// The series' selector.
        selector: String,
        /// The notation error.
        #[source]
        source: crate::series::Error,
    },
    /// The sample interval is zero or not a whole number of seconds.
    #[error("the sample interval must be a whole, positive number of seconds, not {interval:?}")]
    Interval {
        /// The interval given.
        interval: Duration,
    },
    /// One series has two samples at the same time (promtool would silently keep only one).
    #[error("`{series}` has two samples at {timestamp} (unix seconds)")]
    DuplicateSample {
        /// The series.
        series: String,
        /// The time both samples claim.
        timestamp: i64,
    },
    /// A Prometheus binary is not installed where it was looked for.
    #[error(
        "{program} not found: {looked}; install it with `apt-get install prometheus` \
         (Debian/Ubuntu), or set {env} to its path"
    )]
    BinaryNotFound {
        /// `prometheus` or `promtool`.
        program: &'static str,
        /// Where it was looked for.
        looked: String,
        /// The environment variable that overrides where it is.
        env: &'static str,
    },
    /// A file or directory of the harness could not be created or written.
    #[error("cannot {action}")]
    Io {
        /// What was being done.
        action: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// promtool refused the scenario.
    #[error("promtool could not backfill the scenario ({status}): {output}")]
    Backfill {
        /// promtool's exit status.
        status: ExitStatus,
        /// What it printed on stderr and stdout.
        output: String,
    },
    /// Prometheus exited before it was ready.
    #[error("prometheus exited before it was ready ({status}); its log ends with:\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// Prometheus did not become ready in time.
    #[error("prometheus was not ready after {waited:?}; its log ends with:\n{log}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// The end of its log.
        log: String,
    },
}

impl From<process::Error> for Error {
    fn from(error: process::Error) -> Self {
        match error {
            process::Error::Io { action, source } => Error::Io { action, source },
            process::Error::Exited { status, log } => Error::Exited { status, log },
            process::Error::NotReady { waited, log } => Error::NotReady { waited, log },
        }
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
