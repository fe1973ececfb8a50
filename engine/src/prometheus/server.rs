//! Backfilling a scenario with promtool and serving it with a real `prometheus` process.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

use super::{Error, Result, Scenario};
use crate::process::{self, Process};

/// The environment variable naming the `prometheus` binary to use instead of the one on `PATH`.
pub const PROMETHEUS_ENV: &str = "SALVE_PROMETHEUS";
/// The environment variable naming the `promtool` binary to use instead of the one on `PATH`.
pub const PROMTOOL_ENV: &str = "SALVE_PROMTOOL";

/// Long enough that no backfilled block is ever too old to keep, even one from 1970.
const RETENTION: &str = "100y";
/// promtool cuts blocks at multiples of the largest of its block ranges (2h × 3ⁿ) that fits in
/// this; its default of 2h makes one block per 2 hours of data, which is slow to write (6.5 s
/// for 30 days) where one large block takes under 0.1 s.
const MAX_BLOCK_DURATION: &str = "87600h";
/// A Prometheus that scrapes nothing and evaluates no rules: it only serves what was backfilled.
const CONFIG: &str = "# Written by salve's Prometheus harness: no scrape jobs, no rules.\n\
                      scrape_configs: []\n";

/// [`CONFIG`] for a Prometheus that takes remote writes of samples up to a day old.
const RECEIVER_CONFIG: &str = "# Written by salve's Prometheus harness: a remote-write receiver.\n\
                               scrape_configs: []\n\
                               storage:\n  tsdb:\n    out_of_order_time_window: 1d\n";

/// Where the `prometheus` and `promtool` binaries are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Harness {
    prometheus: PathBuf,
    promtool: PathBuf,
}

/// Starts `scenario` with the binaries found by [`Harness::from_env`].
pub fn start(scenario: &Scenario) -> Result<RunningPrometheus> {
    Harness::from_env()?.start(scenario)
}

impl Harness {
    /// The binaries named by `SALVE_PROMETHEUS` and `SALVE_PROMTOOL`, or else found on `PATH`.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            prometheus: locate(
                "prometheus",
                PROMETHEUS_ENV,
                env::var_os(PROMETHEUS_ENV),
                true,
            )?,
            promtool: locate("promtool", PROMTOOL_ENV, env::var_os(PROMTOOL_ENV), true)?,
        })
    }

    /// These binaries: paths, or bare names looked up on `PATH`.
    pub fn with_binaries(
        prometheus: impl Into<PathBuf>,
        promtool: impl Into<PathBuf>,
    ) -> Result<Self> {
        Ok(Self {
            prometheus: locate(
                "prometheus",
                PROMETHEUS_ENV,
                Some(prometheus.into().into()),
                false,
            )?,
            promtool: locate(
                "promtool",
                PROMTOOL_ENV,
                Some(promtool.into().into()),
                false,
            )?,
        })
    }

    /// The `prometheus` binary.
    pub fn prometheus(&self) -> &Path {
        &self.prometheus
    }

    /// The `promtool` binary.
    pub fn promtool(&self) -> &Path {
        &self.promtool
    }

    /// Backfills `scenario` into a new TSDB in a temporary directory and starts Prometheus over
    /// it on a free loopback port, returning once it answers `/-/ready`.
    pub fn start(&self, scenario: &Scenario) -> Result<RunningPrometheus> {
        self.start_with(scenario, false)
    }

    /// Starts an empty Prometheus that accepts remote write (`/api/v1/write`), samples up to a
    /// day old included: what `salve test --prometheus URL` needs.
    pub fn start_receiver(&self) -> Result<RunningPrometheus> {
        let empty = Scenario::new(Duration::from_secs(60))?;
        self.start_with(&empty, true)
    }

    fn start_with(&self, scenario: &Scenario, receiver: bool) -> Result<RunningPrometheus> {
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("salve-prometheus-")
            .tempdir()
            .map_err(process::io("create a temporary directory"))?;
        let start = scenario.start(SystemTime::now());
        let layout = scenario.layout(start)?;
        let tsdb = dir.path().join("data");
        fs::create_dir(&tsdb).map_err(process::io_at("create", &tsdb))?;
        if layout.last.is_some() {
            self.backfill(&layout.text, dir.path(), &tsdb)?;
        }
        let backfilled = began.elapsed();

        let config = dir.path().join("prometheus.yml");
        let text = if receiver { RECEIVER_CONFIG } else { CONFIG };
        fs::write(&config, text).map_err(process::io_at("write", &config))?;
        let log = dir.path().join("prometheus.log");
        let args = |port| {
            let mut args: Vec<OsString> = vec![
                process::flag("config.file", &config),
                process::flag("storage.tsdb.path", &tsdb),
                format!("--storage.tsdb.retention.time={RETENTION}").into(),
                format!("--web.listen-address=127.0.0.1:{port}").into(),
                "--log.level=warn".into(),
            ];
            if receiver {
                args.push("--web.enable-remote-write-receiver".into());
            }
            args
        };
        let process = process::start("prometheus", &self.prometheus, &log, args, |address| {
            serves(address, &tsdb)
        })?;
        let running = RunningPrometheus {
            process,
            start,
            interval: i64::try_from(scenario.interval().as_secs()).unwrap_or(i64::MAX),
            end: layout.last.unwrap_or(start),
            startup: began.elapsed(),
            _dir: dir,
        };
        tracing::debug!(
            url = running.url(),
            backfill = ?backfilled,
            total = ?running.startup,
            "prometheus ready"
        );
        Ok(running)
    }

    /// Writes `text` as `scenario.om` in `dir` and has promtool turn it into blocks in `tsdb`.
    fn backfill(&self, text: &str, dir: &Path, tsdb: &Path) -> Result<()> {
        let input = dir.join("scenario.om");
        fs::write(&input, text).map_err(process::io_at("write", &input))?;
        let output = Command::new(&self.promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(format!("--max-block-duration={MAX_BLOCK_DURATION}"))
            .arg(&input)
            .arg(tsdb)
            .stdin(Stdio::null())
            .output()
            .map_err(process::io_at("run", &self.promtool))?;
        if output.status.success() {
            return Ok(());
        }
        let mut printed = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !stdout.trim().is_empty() {
            printed.push('\n');
            printed.push_str(stdout.trim());
        }
        Err(Error::Backfill {
            status: output.status,
            output: printed,
        })
    }
}

/// A `prometheus` process serving a backfilled scenario. Dropping it kills the process, waits
/// for it, and deletes its TSDB, configuration and log.
#[derive(Debug)]
pub struct RunningPrometheus {
    /// Declared before the directory, so the process is gone before its files are deleted.
    process: Process,
    start: i64,
    interval: i64,
    end: i64,
    startup: Duration,
    _dir: TempDir,
}

impl RunningPrometheus {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.process.url()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Unix seconds of the scenario's first step.
    pub fn start_time(&self) -> i64 {
        self.start
    }

    /// Unix seconds of step `step` (counting from 0) of the scenario.
    pub fn time_at(&self, step: usize) -> i64 {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        self.start
            .saturating_add(step.saturating_mul(self.interval))
    }

    /// Unix seconds of the latest sample of the scenario (its start if it has none).
    pub fn end_time(&self) -> i64 {
        self.end
    }

    /// How long backfilling, starting and waiting for readiness took.
    pub fn startup(&self) -> Duration {
        self.startup
    }
}

/// Finds `program`: at `requested` if given (a path, or a bare name looked up on `PATH`), else
/// on `PATH`. `from_env` says `requested` came from the variable `env`, for the error message.
fn locate(
    program: &'static str,
    env: &'static str,
    requested: Option<OsString>,
    from_env: bool,
) -> Result<PathBuf> {
    process::locate(requested, from_env.then_some(env), &[program]).map_err(|looked| {
        Error::BinaryNotFound {
            program,
            looked,
            env,
        }
    })
}

/// Whether the Prometheus at `address` is the one serving `tsdb`, not another that holds the
/// port.
fn serves(address: SocketAddr, tsdb: &Path) -> bool {
    let Some((200, body)) = process::get(address, "/api/v1/status/flags") else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|flags| {
        flags["data"]["storage.tsdb.path"].as_str() == Some(&*tsdb.to_string_lossy())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_where_it_was_looked_for_and_how_to_get_it() {
        let message = |requested: &str, from_env| {
            locate(
                "prometheus",
                PROMETHEUS_ENV,
                Some(requested.into()),
                from_env,
            )
            .expect_err("missing")
            .to_string()
        };
        assert_eq!(
            message("/no/prometheus", true),
            "prometheus not found: SALVE_PROMETHEUS=/no/prometheus is not an executable file; \
             install it with `apt-get install prometheus` (Debian/Ubuntu), or set \
             SALVE_PROMETHEUS to its path"
        );
        assert_eq!(
            message("no-such-prometheus", false),
            "prometheus not found: `no-such-prometheus` is not on PATH; install it with \
             `apt-get install prometheus` (Debian/Ubuntu), or set SALVE_PROMETHEUS to its path"
        );
    }
}
