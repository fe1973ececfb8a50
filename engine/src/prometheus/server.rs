//! Backfilling a scenario with promtool and serving it with a real `prometheus` process.

use std::env;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

use super::{Error, Result, Scenario};

/// The environment variable naming the `prometheus` binary to use instead of the one on `PATH`.
pub const PROMETHEUS_ENV: &str = "SALVE_PROMETHEUS";
/// The environment variable naming the `promtool` binary to use instead of the one on `PATH`.
pub const PROMTOOL_ENV: &str = "SALVE_PROMTOOL";

/// How long Prometheus gets to become ready. It takes well under a second here.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(10);
/// How many ports to try when the free port found is taken before Prometheus binds it.
const PORT_ATTEMPTS: usize = 3;
/// Long enough that no backfilled block is ever too old to keep, even one from 1970.
const RETENTION: &str = "100y";
/// promtool cuts blocks at multiples of the largest of its block ranges (2h × 3ⁿ) that fits in
/// this; its default of 2h makes one block per 2 hours of data, which is slow to write (6.5 s
/// for 30 days) where one large block takes under 0.1 s.
const MAX_BLOCK_DURATION: &str = "87600h";
/// A Prometheus that scrapes nothing and evaluates no rules: it only serves what was backfilled.
const CONFIG: &str = "# Written by salve's Prometheus harness: no scrape jobs, no rules.\n\
                      scrape_configs: []\n";

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
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("salve-prometheus-")
            .tempdir()
            .map_err(Error::io("create a temporary directory"))?;
        let start = scenario.start(SystemTime::now());
        let layout = scenario.layout(start)?;
        let tsdb = dir.path().join("data");
        fs::create_dir(&tsdb).map_err(Error::io_at("create", &tsdb))?;
        if layout.last.is_some() {
            self.backfill(&layout.text, dir.path(), &tsdb)?;
        }
        let backfilled = began.elapsed();

        let config = dir.path().join("prometheus.yml");
        fs::write(&config, CONFIG).map_err(Error::io_at("write", &config))?;
        let log = dir.path().join("prometheus.log");
        let mut attempt = 1;
        let (process, port) = loop {
            let port = free_port()?;
            let mut process = Process(self.spawn(port, &config, &tsdb, &log)?);
            match process.wait_ready(port, &tsdb, &log) {
                Ok(()) => break (process, port),
                Err(Error::Exited { log: tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("address already in use") =>
                {
                    tracing::debug!(port, "port taken before prometheus bound it; retrying");
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        };
        let running = RunningPrometheus {
            process,
            url: format!("http://127.0.0.1:{port}"),
            start,
            interval: i64::try_from(scenario.interval().as_secs()).unwrap_or(i64::MAX),
            end: layout.last.unwrap_or(start),
            startup: began.elapsed(),
            _dir: dir,
        };
        tracing::debug!(
            url = running.url,
            backfill = ?backfilled,
            total = ?running.startup,
            "prometheus ready"
        );
        Ok(running)
    }

    /// Writes `text` as `scenario.om` in `dir` and has promtool turn it into blocks in `tsdb`.
    fn backfill(&self, text: &str, dir: &Path, tsdb: &Path) -> Result<()> {
        let input = dir.join("scenario.om");
        fs::write(&input, text).map_err(Error::io_at("write", &input))?;
        let output = Command::new(&self.promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(format!("--max-block-duration={MAX_BLOCK_DURATION}"))
            .arg(&input)
            .arg(tsdb)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io_at("run", &self.promtool))?;
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

    fn spawn(&self, port: u16, config: &Path, tsdb: &Path, log: &Path) -> Result<Child> {
        let log_file = File::create(log).map_err(Error::io_at("create", log))?;
        let log_err = log_file.try_clone().map_err(Error::io_at("open", log))?;
        let flag = |name: &str, value: &Path| {
            let mut flag = OsString::from(format!("--{name}="));
            flag.push(value);
            flag
        };
        Command::new(&self.prometheus)
            .arg(flag("config.file", config))
            .arg(flag("storage.tsdb.path", tsdb))
            .arg(format!("--storage.tsdb.retention.time={RETENTION}"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(Error::io_at("start", &self.prometheus))
    }
}

/// A `prometheus` process serving a backfilled scenario. Dropping it kills the process, waits
/// for it, and deletes its TSDB, configuration and log.
#[derive(Debug)]
pub struct RunningPrometheus {
    /// Declared before the directory, so the process is gone before its files are deleted.
    process: Process,
    url: String,
    start: i64,
    interval: i64,
    end: i64,
    startup: Duration,
    _dir: TempDir,
}

impl RunningPrometheus {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
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

/// A child process, killed and reaped when dropped: no zombie and no stray server, even when a
/// test panics.
#[derive(Debug)]
struct Process(Child);

impl Process {
    /// Waits until this process (not some other one that took the port) answers `/-/ready`.
    fn wait_ready(&mut self, port: u16, tsdb: &Path, log: &Path) -> Result<()> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => {
                    return Err(Error::Exited {
                        status,
                        log: log_tail(log),
                    });
                }
                Ok(None) if is_ready(address) && serves(address, tsdb) => return Ok(()),
                Ok(None) if Instant::now() > deadline => {
                    return Err(Error::NotReady {
                        waited: READY_TIMEOUT,
                        log: log_tail(log),
                    });
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(source) => {
                    return Err(Error::Io {
                        action: "check on prometheus".into(),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // `kill` fails only if the process was already reaped; `wait` reaps it otherwise.
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    let requested = requested.filter(|r| !r.is_empty());
    let from_env = from_env && requested.is_some();
    let wanted = PathBuf::from(requested.unwrap_or_else(|| program.into()));
    let is_path = wanted.components().count() > 1;
    let found = if is_path {
        is_executable(&wanted).then(|| wanted.clone())
    } else {
        env::var_os("PATH").and_then(|path| {
            env::split_paths(&path)
                .map(|dir| dir.join(&wanted))
                .find(|candidate| is_executable(candidate))
        })
    };
    found.ok_or_else(|| {
        let origin = if from_env {
            format!("{env}=")
        } else {
            String::new()
        };
        let looked = if is_path {
            format!("{origin}{} is not an executable file", wanted.display())
        } else {
            format!("{origin}`{}` is not on PATH", wanted.display())
        };
        Error::BinaryNotFound {
            program,
            looked,
            env,
        }
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(Error::io("find a free loopback port"))
}

/// Whether `GET /-/ready` answers 200.
fn is_ready(address: SocketAddr) -> bool {
    get(address, "/-/ready").is_some_and(|(status, _)| status == 200)
}

/// Whether the Prometheus at `address` is the one serving `tsdb`, not another that holds the
/// port.
fn serves(address: SocketAddr, tsdb: &Path) -> bool {
    let Some((200, body)) = get(address, "/api/v1/status/flags") else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|flags| {
        flags["data"]["storage.tsdb.path"].as_str() == Some(&*tsdb.to_string_lossy())
    })
}

/// A minimal HTTP/1.0 GET: the status code and the body, or `None` on any failure.
fn get(address: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..split]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, response[split + 4..].to_vec()))
}

/// The last lines of Prometheus's log, for an error message.
fn log_tail(log: &Path) -> String {
    const LINES: usize = 20;
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_found_by_path_or_by_name_on_path() {
        assert_eq!(
            locate("sh", "X", Some("/bin/sh".into()), false).expect("exists"),
            Path::new("/bin/sh")
        );
        let found = locate("sh", "X", None, false).expect("sh is on PATH");
        assert!(found.ends_with("sh") && found.is_absolute(), "{found:?}");
    }

    #[test]
    fn a_missing_binary_names_where_it_was_looked_for_and_how_to_get_it() {
        let message = |requested: Option<&str>, from_env| {
            locate(
                "prometheus",
                PROMETHEUS_ENV,
                requested.map(Into::into),
                from_env,
            )
            .expect_err("missing")
            .to_string()
        };
        assert_eq!(
            message(Some("/no/prometheus"), true),
            "prometheus not found: SALVE_PROMETHEUS=/no/prometheus is not an executable file; \
             install it with `apt-get install prometheus` (Debian/Ubuntu), or set \
             SALVE_PROMETHEUS to its path"
        );
        assert!(
            message(Some("no-such-prometheus"), false)
                .contains("`no-such-prometheus` is not on PATH;")
        );
        // A directory or a file without execute permission is not a binary.
        let dir = TempDir::new().expect("a temporary directory");
        let plain = dir.path().join("prometheus");
        fs::write(&plain, "#!/bin/sh\n").expect("writable");
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).expect("chmod");
        for path in [dir.path(), &plain] {
            let text = path.to_str().expect("a UTF-8 temporary path");
            assert!(
                message(Some(text), false).contains(&format!("{text} is not an executable file")),
                "{text}"
            );
        }
    }

    #[test]
    fn the_log_tail_keeps_the_last_lines() {
        let dir = TempDir::new().expect("a temporary directory");
        let log = dir.path().join("log");
        assert_eq!(log_tail(&log), "(empty)");
        let lines: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
        fs::write(&log, lines.join("\n")).expect("writable");
        assert_eq!(log_tail(&log), lines[10..].join("\n"));
    }
}
