//! A real `alertmanager` process for tests and benches, posting its webhook to a URL of the
//! caller's choosing.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use tempfile::TempDir;

use super::{Error, Result};
use crate::process::{self, Process};

/// The environment variable naming the Alertmanager binary to use instead of the one on `PATH`.
pub const ALERTMANAGER_ENV: &str = "SALVE_ALERTMANAGER";
/// The names the binary is looked for under on `PATH`: Debian's, then upstream's.
const PROGRAMS: [&str; 2] = ["prometheus-alertmanager", "alertmanager"];
/// How long posting alerts may take.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// How the Alertmanager routes every alert: one receiver, the webhook, one group per alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerOptions {
    /// Where the webhook posts (`send_resolved: true`).
    pub webhook_url: String,
    /// How long a new group waits before its first notification.
    pub group_wait: Duration,
    /// How long a group waits before notifying a change (a new or a resolved alert).
    pub group_interval: Duration,
    /// How long before an unchanged group is notified again.
    pub repeat_interval: Duration,
    /// Sent as `Authorization: Bearer <token>` with each notification, when set.
    pub bearer_token: Option<String>,
}

impl AlertmanagerOptions {
    /// Notifies `webhook_url` at once for a new alert (`group_wait` 0), within a second for a
    /// change (`group_interval` 1 s), and repeats after an hour.
    pub fn new(webhook_url: impl Into<String>) -> Self {
        AlertmanagerOptions {
            webhook_url: webhook_url.into(),
            group_wait: Duration::ZERO,
            group_interval: Duration::from_secs(1),
            repeat_interval: Duration::from_secs(3600),
            bearer_token: None,
        }
    }

    /// Its configuration file. Grouping by every label (`...`) makes each alert its own group.
    fn config(&self) -> String {
        // JSON strings are valid YAML scalars, and escape whatever the URL holds.
        let url = serde_json::Value::from(self.webhook_url.as_str());
        let authorization = match &self.bearer_token {
            Some(token) => format!(
                "        http_config:\n          authorization:\n            credentials: {}\n",
                serde_json::Value::from(token.as_str())
            ),
            None => String::new(),
        };
        format!(
            "route:\n  receiver: salve\n  group_by: ['...']\n  group_wait: {}\n  \
             group_interval: {}\n  repeat_interval: {}\nreceivers:\n  - name: salve\n    \
             webhook_configs:\n      - url: {url}\n        send_resolved: true\n{authorization}",
            duration(self.group_wait),
            duration(self.group_interval),
            duration(self.repeat_interval),
        )
    }
}

/// An alert as a client (Prometheus, or a test) posts it to Alertmanager's
/// `POST /api/v2/alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostedAlert {
    /// Its labels; `alertname` names it.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started; Alertmanager takes the time it arrives if absent.
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ends: a time not after now resolves it; absent, Alertmanager resolves it after
    /// its `resolve_timeout` (5 minutes) unless it is posted again.
    pub ends_at: Option<DateTime<Utc>>,
    /// The page of whatever produced it.
    pub generator_url: String,
}

impl PostedAlert {
    /// A firing alert with these labels.
    pub fn firing<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        PostedAlert {
            labels: labels
                .into_iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            ..PostedAlert::default()
        }
    }

    /// The same alert, resolved at `at`.
    pub fn resolved_at(self, at: DateTime<Utc>) -> Self {
        PostedAlert {
            ends_at: Some(at),
            ..self
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut alert = serde_json::json!({
            "labels": self.labels,
            "annotations": self.annotations,
            "generatorURL": self.generator_url,
        });
        if let Some(starts_at) = &self.starts_at {
            alert["startsAt"] = time(starts_at).into();
        }
        if let Some(ends_at) = &self.ends_at {
            alert["endsAt"] = time(ends_at).into();
        }
        alert
    }
}

/// Starts Alertmanager (named by `SALVE_ALERTMANAGER`, else found on `PATH`) with `options`.
pub fn start(options: &AlertmanagerOptions) -> Result<RunningAlertmanager> {
    let binary = locate(env::var_os(ALERTMANAGER_ENV))?;
    start_binary(&binary, options)
}

/// Starts the Alertmanager binary at `binary` with `options` on a free loopback port, with
/// gossip off and its state in a temporary directory, returning once it answers `/-/ready`.
pub fn start_binary(binary: &Path, options: &AlertmanagerOptions) -> Result<RunningAlertmanager> {
    let began = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("salve-alertmanager-")
        .tempdir()
        .map_err(process::io("create a temporary directory"))?;
    let config = dir.path().join("alertmanager.yml");
    fs::write(&config, options.config()).map_err(process::io_at("write", &config))?;
    let storage = dir.path().join("data");
    fs::create_dir(&storage).map_err(process::io_at("create", &storage))?;
    let log = dir.path().join("alertmanager.log");
    let args = |port| {
        vec![
            process::flag("config.file", &config),
            process::flag("storage.path", &storage),
            format!("--web.listen-address=127.0.0.1:{port}").into(),
            format!("--web.external-url=http://127.0.0.1:{port}").into(),
            // No gossip: a lone Alertmanager that notifies without waiting for peers.
            "--cluster.listen-address=".into(),
            "--log.level=warn".into(),
        ]
    };
    let process = process::start("alertmanager", binary, &log, args, |address| {
        notifies(address, &options.webhook_url)
    })?;
    let client = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .build()
        .map_err(|source| Error::Request {
            action: "build an HTTP client".into(),
            source,
        })?;
    let running = RunningAlertmanager {
        process,
        client,
        startup: began.elapsed(),
        _dir: dir,
    };
    tracing::debug!(url = running.url(), startup = ?running.startup, "alertmanager ready");
    Ok(running)
}

/// An `alertmanager` process. Dropping it kills the process, waits for it, and deletes its
/// configuration, state and log.
#[derive(Debug)]
pub struct RunningAlertmanager {
    /// Declared before the directory, so the process is gone before its files are deleted.
    process: Process,
    client: reqwest::Client,
    startup: Duration,
    _dir: TempDir,
}

impl RunningAlertmanager {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.process.url()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// How long starting and waiting for readiness took.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// Posts `alerts` the way Prometheus does (`POST /api/v2/alerts`).
    pub async fn post(&self, alerts: &[PostedAlert]) -> Result<()> {
        let body: Vec<serde_json::Value> = alerts.iter().map(PostedAlert::to_json).collect();
        let action = || format!("post {} alert(s) to {}", alerts.len(), self.url());
        let response = self
            .client
            .post(format!("{}/api/v2/alerts", self.url()))
            .json(&body)
            .send()
            .await
            .map_err(|source| Error::Request {
                action: action(),
                source,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(Error::Rejected {
            status: status.as_u16(),
            body,
        })
    }
}

/// The binary at `requested` (a path, or a bare name looked up on `PATH`) if given, else the
/// first of [`PROGRAMS`] on `PATH`.
fn locate(requested: Option<OsString>) -> Result<PathBuf> {
    process::locate(requested, Some(ALERTMANAGER_ENV), &PROGRAMS)
        .map_err(|looked| Error::BinaryNotFound { looked })
}

/// Whether the Alertmanager at `address` is the one notifying `webhook_url`, not another that
/// holds the port.
fn notifies(address: SocketAddr, webhook_url: &str) -> bool {
    let Some((200, body)) = process::get(address, "/api/v2/status") else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|status| {
        status["config"]["original"]
            .as_str()
            .is_some_and(|config| config.contains(webhook_url))
    })
}

/// A duration as Alertmanager's configuration writes one (`0s`, `1s`, `250ms`).
fn duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_get_it_and_debians_is_found_by_default() {
        let message = |requested: &str| {
            locate(Some(requested.into()))
                .expect_err("missing")
                .to_string()
        };
        assert_eq!(
            message("/no/alertmanager"),
            "alertmanager not found: SALVE_ALERTMANAGER=/no/alertmanager is not an executable \
             file; install it with `apt-get install prometheus-alertmanager` (Debian/Ubuntu), \
             or set SALVE_ALERTMANAGER to its path"
        );
        assert_eq!(
            message("no-such-alertmanager"),
            "alertmanager not found: SALVE_ALERTMANAGER=`no-such-alertmanager` is not on PATH; \
             install it with `apt-get install prometheus-alertmanager` (Debian/Ubuntu), or set \
             SALVE_ALERTMANAGER to its path"
        );
        // Debian's package is installed here; an empty override means "not set".
        let found = locate(Some(OsString::new())).expect("prometheus-alertmanager is installed");
        assert!(found.ends_with("prometheus-alertmanager"), "{found:?}");
    }

    #[test]
    fn the_config_routes_every_alert_to_the_webhook_with_resolved_notifications() {
        let mut options = AlertmanagerOptions::new("http://127.0.0.1:9/api/v1/alerts/alertmanager");
        options.group_interval = Duration::from_millis(1500);
        let config = options.config();
        for line in [
            "group_wait: 0s",
            "group_interval: 1500ms",
            "repeat_interval: 3600s",
            "- url: \"http://127.0.0.1:9/api/v1/alerts/alertmanager\"",
            "send_resolved: true",
        ] {
            assert!(config.contains(line), "{line} in\n{config}");
        }
    }

    #[test]
    fn a_posted_alert_has_the_fields_of_alertmanagers_api() {
        let at = DateTime::from_timestamp(1_800_000_000, 5_000_000).expect("valid time");
        let alert = PostedAlert::firing([("alertname", "A")]).resolved_at(at);
        assert_eq!(
            alert.to_json(),
            serde_json::json!({
                "labels": {"alertname": "A"}, "annotations": {}, "generatorURL": "",
                "endsAt": "2027-01-15T08:00:00.005Z",
            })
        );
    }
}
