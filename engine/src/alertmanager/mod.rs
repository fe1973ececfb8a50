//! Alertmanager's webhook: the source of `alert` triggers.
//!
//! Alertmanager's `webhook_configs` receiver POSTs each notification — a group of alerts, each
//! `firing` or `resolved` — to [`routes`] (`POST /api/v1/alerts/alertmanager`). The payload is
//! parsed ([`Webhook::parse`]: version "4", unknown fields ignored) and applied to an
//! [`AlertStore`], which an `alert` trigger observes like any other signal source: every
//! firing alert with the trigger's `alertname` and labels is one series, valued 1.
//!
//! ```yaml
//! # alertmanager.yml
//! receivers:
//!   - name: salve
//!     webhook_configs:
//!       - url: http://salve:8080/api/v1/alerts/alertmanager
//!         send_resolved: true   # the default; Salve needs it to see alerts resolve
//! ```
//!
//! What the real Alertmanager (0.25, Debian's `prometheus-alertmanager`) sends, as observed:
//! a firing alert's `endsAt` is always Go's zero time `0001-01-01T00:00:00Z`, whatever end it
//! holds itself (Prometheus sets one a few minutes ahead and renews it), so a firing alert
//! holds until its resolved notification; a resolved alert's `endsAt` is when it resolved, and
//! its `startsAt` stays that of the occurrence. With `group_wait: 0s` the first notification of
//! a new group arrives within ~10 ms of the alert reaching Alertmanager; later changes (a
//! resolve) wait for the group's next `group_interval` tick. Alertmanager retries a
//! notification only on a 5xx answer.
//!
//! Under leader election, a follower's webhook relays each payload to the leader ([`relay`]).
//!
//! [`harness`] starts a real Alertmanager for tests and benches.

pub mod harness;
mod receiver;
pub mod relay;
mod store;
mod webhook;

use std::process::ExitStatus;
use std::time::Duration;

use crate::process;

pub use receiver::{MAX_BODY, WEBHOOK_PATH, relaying, routes, routes_with_token, with_token};
pub use store::{AlertStore, Applied, RESOLVED_RETENTION};
pub use webhook::{Alert, Status, VERSION, Webhook};

/// Why a payload was refused, or the Alertmanager harness failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body is not JSON of the webhook payload's shape.
    #[error("the body is not an Alertmanager webhook payload")]
    Payload {
        /// What serde found wrong, and at which line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The payload is of a version Salve does not read.
    #[error(
        "unsupported webhook payload version {version:?}: Salve reads version \"4\", the format \
         of Alertmanager's webhook_configs"
    )]
    Version {
        /// The version it claims.
        version: String,
    },
    /// The Alertmanager binary is not installed where it was looked for.
    #[error(
        "alertmanager not found: {looked}; install it with `apt-get install \
         prometheus-alertmanager` (Debian/Ubuntu), or set SALVE_ALERTMANAGER to its path"
    )]
    BinaryNotFound {
        /// Where it was looked for.
        looked: String,
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
    /// Alertmanager exited before it was ready.
    #[error("alertmanager exited before it was ready ({status}); its log ends with:\n{log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log: String,
    },
    /// Alertmanager did not become ready in time.
    #[error("alertmanager was not ready after {waited:?}; its log ends with:\n{log}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// The end of its log.
        log: String,
    },
    /// A request to Alertmanager failed.
    #[error("cannot {action}")]
    Request {
        /// What was being done.
        action: String,
        /// The HTTP error.
        #[source]
        source: reqwest::Error,
    },
    /// Alertmanager refused the alerts posted to it.
    #[error("alertmanager refused the alerts ({status}): {body}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// What it answered.
        body: String,
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
