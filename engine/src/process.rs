//! A real server binary as a child process, for tests and benches: finding it, a free loopback
//! port, waiting until it is ready, its log, and stopping it.
//!
//! The Prometheus and Alertmanager harnesses ([`crate::prometheus`],
//! [`crate::alertmanager::harness`]) find their binary with [`locate`] and run it with [`start`],
//! which returns once the server answers `GET /-/ready` and is the one that was started (not
//! another that took the port). The [`Process`] it returns kills the server when dropped. Each
//! harness turns this module's [`Error`] into its own, whose messages name its server.

use std::env;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to become ready. Prometheus takes well under a second here,
/// Alertmanager 50–150 ms.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(10);
/// How many ports to try when the free port found is taken before the server binds it.
const PORT_ATTEMPTS: usize = 3;

/// Why a server could not be set up, started or made ready. A harness converts it into its own
/// error, whose messages name the server.
#[derive(Debug)]
pub(crate) enum Error {
    /// A file or directory could not be created or written, or the process could not be started
    /// or checked on.
    Io {
        /// What was being done.
        action: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The server exited before it was ready.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// The server did not become ready in time.
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// The end of its log.
        log: String,
    },
}

/// An [`Error::Io`] for `action` ("create a temporary directory").
pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        action: action.into(),
        source,
    }
}

/// An [`Error::Io`] for `action` on `path` ("write /tmp/x/config.yml").
pub(crate) fn io_at(action: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    io(format!("{action} {}", path.display()))
}

/// Finds a server's binary: `requested` if given and not empty (a path, or a bare name looked up
/// on `PATH`), else the first of `defaults` on `PATH`. `env` names the variable `requested` came
/// from, if it did. If it is not found, says where it was looked for (`SALVE_X=/no/x is not an
/// executable file`, `` `x` is not on PATH``), for the caller's message, which says how to
/// install it.
pub(crate) fn locate(
    requested: Option<OsString>,
    env: Option<&str>,
    defaults: &[&str],
) -> Result<PathBuf, String> {
    let origin = env.map_or_else(String::new, |env| format!("{env}="));
    match requested.filter(|r| !r.is_empty()).map(PathBuf::from) {
        Some(path) if path.components().count() > 1 => {
            if is_executable(&path) {
                Ok(path)
            } else {
                Err(format!(
                    "{origin}{} is not an executable file",
                    path.display()
                ))
            }
        }
        Some(name) => {
            on_path(&name).ok_or_else(|| format!("{origin}`{}` is not on PATH", name.display()))
        }
        None => defaults
            .iter()
            .find_map(|name| on_path(Path::new(name)))
            .ok_or_else(|| match defaults {
                [name] => format!("`{name}` is not on PATH"),
                names => {
                    let quoted: Vec<String> =
                        names.iter().map(|name| format!("`{name}`")).collect();
                    format!("neither {} is on PATH", quoted.join(" nor "))
                }
            }),
    }
}

/// The executable file `name` in a directory of `PATH`.
fn on_path(name: &Path) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|path| {
        env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A command-line flag whose value is a path: `--name=path`.
pub(crate) fn flag(name: &str, value: &Path) -> OsString {
    let mut flag = OsString::from(format!("--{name}="));
    flag.push(value);
    flag
}

/// Starts `binary` with `args(port)` on a free loopback port and returns once it is ready: it
/// answers `GET /-/ready` with 200 and `is_ours(address)` says it is the server started, not
/// another that holds the port. If the port was taken before the server bound it, tries another.
/// Its stdout and stderr go to `log`, whose last lines the errors carry; `name` names it in
/// logs and errors.
pub(crate) fn start(
    name: &str,
    binary: &Path,
    log: &Path,
    args: impl Fn(u16) -> Vec<OsString>,
    is_ours: impl Fn(SocketAddr) -> bool,
) -> Result<Process, Error> {
    let mut attempt = 1;
    loop {
        let port = free_port()?;
        let log_file = File::create(log).map_err(io_at("create", log))?;
        let log_err = log_file.try_clone().map_err(io_at("open", log))?;
        let child = Command::new(binary)
            .args(args(port))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(io_at("start", binary))?;
        let mut process = Process {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        match process.wait_ready(name, port, log, &is_ours) {
            Ok(()) => return Ok(process),
            Err(Error::Exited { log: tail, .. })
                if attempt < PORT_ATTEMPTS && tail.contains("address already in use") =>
            {
                tracing::debug!(port, "port taken before {name} bound it; retrying");
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(io("find a free loopback port"))
}

/// A server started by [`start`], killed and reaped when dropped: no zombie and no stray server,
/// even when a test panics.
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    url: String,
}

impl Process {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until this process (not some other one that took the port) answers `/-/ready`.
    fn wait_ready(
        &mut self,
        name: &str,
        port: u16,
        log: &Path,
        is_ours: impl Fn(SocketAddr) -> bool,
    ) -> Result<(), Error> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(Error::Exited {
                        status,
                        log: log_tail(log),
                    });
                }
                Ok(None) if is_ready(address) && is_ours(address) => return Ok(()),
                Ok(None) if Instant::now() > deadline => {
                    return Err(Error::NotReady {
                        waited: READY_TIMEOUT,
                        log: log_tail(log),
                    });
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(source) => {
                    return Err(Error::Io {
                        action: format!("check on {name}"),
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /-/ready` answers 200.
fn is_ready(address: SocketAddr) -> bool {
    get(address, "/-/ready").is_some_and(|(status, _)| status == 200)
}

/// A minimal HTTP/1.0 GET: the status code and the body, or `None` on any failure.
pub(crate) fn get(address: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
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

/// The last lines of a server's log, for an error message.
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

    use tempfile::TempDir;

    #[test]
    fn a_binary_is_found_by_path_by_name_or_by_its_default_names() {
        assert_eq!(
            locate(Some("/bin/sh".into()), None, &["x"]).expect("exists"),
            Path::new("/bin/sh")
        );
        for requested in [Some("sh".into()), None, Some(OsString::new())] {
            let found = locate(requested, None, &["no-such-binary", "sh"]).expect("on PATH");
            assert!(found.ends_with("sh") && found.is_absolute(), "{found:?}");
        }
    }

    #[test]
    fn a_missing_binary_says_where_it_was_looked_for() {
        let looked = |requested: Option<&str>, env, defaults: &[&str]| {
            locate(requested.map(Into::into), env, defaults).expect_err("missing")
        };
        assert_eq!(
            looked(Some("/no/x"), Some("SALVE_X"), &["x"]),
            "SALVE_X=/no/x is not an executable file"
        );
        assert_eq!(looked(Some("no-x"), None, &["x"]), "`no-x` is not on PATH");
        assert_eq!(
            looked(None, Some("SALVE_X"), &["no-x"]),
            "`no-x` is not on PATH"
        );
        assert_eq!(
            looked(None, None, &["no-x", "no-y"]),
            "neither `no-x` nor `no-y` is on PATH"
        );
        // A directory or a file without execute permission is not a binary.
        let dir = TempDir::new().expect("a temporary directory");
        let plain = dir.path().join("x");
        fs::write(&plain, "#!/bin/sh\n").expect("writable");
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).expect("chmod");
        for path in [dir.path(), &plain] {
            let text = path.to_str().expect("a UTF-8 temporary path");
            assert_eq!(
                looked(Some(text), None, &["x"]),
                format!("{text} is not an executable file")
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
