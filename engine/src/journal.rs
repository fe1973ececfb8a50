//! The journal: every decision Salve makes — a signal, an incident opening or resolving, and
//! (with remediation) plans, gate verdicts, approvals, steps and rollbacks — written durably
//! *before* it takes effect, so that a person can read what happened and a restarted engine can
//! find what was in flight.
//!
//! It is an SQLite database in WAL mode with `synchronous = FULL`: [`Journal::append`] returns
//! only once the entry's transaction is committed and fsynced. Why SQLite rather than an
//! fsynced append-only file of our own: the same one-file durability, but a torn last write is
//! rolled back by SQLite's recovery instead of by a parser we would have to write and trust;
//! timelines, open incidents and in-flight remediations are indexed queries rather than scans;
//! and the schema can grow (with `PRAGMA user_version`) as remediation lands. The cost per
//! decision is measured in BENCHMARKS.md.
//!
//! Entries are never updated or deleted: the journal is the record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

use crate::incident::{IncidentEvent, IncidentTransition};
use crate::signal::evaluation::PlaybookEvent;
use crate::signal::state::Transition;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused (cannot open, not a database, disk full, ...).
    #[error("journal {path}: {source}")]
    Sqlite {
        /// The journal's file.
        path: PathBuf,
        /// SQLite's reason.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer Salve.
    #[error(
        "journal {path} has schema version {found}; this Salve reads up to {SCHEMA_VERSION}: \
         upgrade Salve, or point it at another journal"
    )]
    Newer {
        /// The journal's file.
        path: PathBuf,
        /// The version found.
        found: i64,
    },
    /// The entry could not be kept in the journal's mirror (the cluster's copy), so it was
    /// taken back here too: the caller must not act on it.
    #[error("journal {path}: entry {seq} not kept in the cluster (nor here): {reason}")]
    Mirror {
        /// The journal's file.
        path: PathBuf,
        /// The entry.
        seq: i64,
        /// Why.
        reason: String,
    },
    /// An entry could not be read back.
    #[error("journal {path}: entry {seq} is unreadable: {reason}")]
    Corrupt {
        /// The journal's file.
        path: PathBuf,
        /// The entry.
        seq: i64,
        /// What is wrong with it.
        reason: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an entry records. The names are those of the pipeline and of `salve replay`'s events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A signal started to hold.
    SignalPending,
    /// A signal fired.
    SignalFiring,
    /// A signal resolved.
    SignalResolved,
    /// Nothing could be concluded about a signal.
    SignalInconclusive,
    /// An incident opened.
    IncidentOpened,
    /// An incident reopened within its cooldown.
    IncidentReopened,
    /// An incident resolved.
    IncidentResolved,
    /// A step above the ceiling waits for a human.
    ApprovalRequested,
    /// A human approved it.
    ApprovalGranted,
    /// A human rejected it.
    ApprovalRejected,
    /// Nobody answered in time: rejected.
    ApprovalExpired,
    /// What was read of the cluster for an incident (owner, target, revision).
    Diagnosed,
    /// An incident joined another one remediating the same target: no second remediation.
    Correlated,
    /// The LLM advisor's accepted advice on an incident (it may only add caution).
    Advice,
    /// Why the advisor gave no usable advice (no answer, or one that failed its checks): the
    /// remediation goes on as without an advisor.
    AdviceRejected,
    /// A remediation's plan: its steps, each decided, its verify and rollback.
    Planned,
    /// The gate's verdict on a step.
    GateVerdict,
    /// A step starts (written before it acts).
    StepStarted,
    /// A step finished well.
    StepSucceeded,
    /// A step failed (or timed out).
    StepFailed,
    /// A step did not run (its `when` is false or undecidable).
    StepSkipped,
    /// The `verify` check held.
    VerifyPassed,
    /// The `verify` check did not hold in time.
    VerifyFailed,
    /// The completed steps are being undone.
    RollbackStarted,
    /// A remediation ended (remediated, rolled back, halted, ...).
    RemediationFinished,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 25] = [
        Kind::SignalPending,
        Kind::SignalFiring,
        Kind::SignalResolved,
        Kind::SignalInconclusive,
        Kind::IncidentOpened,
        Kind::IncidentReopened,
        Kind::IncidentResolved,
        Kind::ApprovalRequested,
        Kind::ApprovalGranted,
        Kind::ApprovalRejected,
        Kind::ApprovalExpired,
        Kind::Diagnosed,
        Kind::Correlated,
        Kind::Advice,
        Kind::AdviceRejected,
        Kind::Planned,
        Kind::GateVerdict,
        Kind::StepStarted,
        Kind::StepSucceeded,
        Kind::StepFailed,
        Kind::StepSkipped,
        Kind::VerifyPassed,
        Kind::VerifyFailed,
        Kind::RollbackStarted,
        Kind::RemediationFinished,
    ];

    /// Whether an entry of this kind tells of detection: the signals and the incident's
    /// changes (every replica journals them; the rest is the remediation's).
    pub fn is_detection(self) -> bool {
        matches!(
            self,
            Kind::SignalPending
                | Kind::SignalFiring
                | Kind::SignalResolved
                | Kind::SignalInconclusive
                | Kind::IncidentOpened
                | Kind::IncidentReopened
                | Kind::IncidentResolved
        )
    }

    /// The name stored and shown (`incident_opened`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SignalPending => "signal_pending",
            Kind::SignalFiring => "signal_firing",
            Kind::SignalResolved => "signal_resolved",
            Kind::SignalInconclusive => "signal_inconclusive",
            Kind::IncidentOpened => "incident_opened",
            Kind::IncidentReopened => "incident_reopened",
            Kind::IncidentResolved => "incident_resolved",
            Kind::ApprovalRequested => "approval_requested",
            Kind::ApprovalGranted => "approval_granted",
            Kind::ApprovalRejected => "approval_rejected",
            Kind::ApprovalExpired => "approval_expired",
            Kind::Diagnosed => "diagnosed",
            Kind::Correlated => "incident_correlated",
            Kind::Advice => "advice",
            Kind::AdviceRejected => "advice_rejected",
            Kind::Planned => "remediation_planned",
            Kind::GateVerdict => "gate_verdict",
            Kind::StepStarted => "step_started",
            Kind::StepSucceeded => "step_succeeded",
            Kind::StepFailed => "step_failed",
            Kind::StepSkipped => "step_skipped",
            Kind::VerifyPassed => "verify_passed",
            Kind::VerifyFailed => "verify_failed",
            Kind::RollbackStarted => "rollback_started",
            Kind::RemediationFinished => "remediation_finished",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The word a timeline shows for it.
    pub fn verb(self) -> &'static str {
        match self {
            Kind::SignalPending => "PENDING",
            Kind::SignalFiring => "SIGNAL",
            Kind::SignalResolved => "CLEARED",
            Kind::SignalInconclusive => "UNKNOWN",
            Kind::IncidentOpened => "DETECT",
            Kind::IncidentReopened => "REOPEN",
            Kind::IncidentResolved => "RESOLVED",
            Kind::ApprovalRequested => "ASK",
            Kind::ApprovalGranted => "APPROVED",
            Kind::ApprovalRejected => "REJECTED",
            Kind::ApprovalExpired => "EXPIRED",
            Kind::Diagnosed => "DIAGNOSE",
            Kind::Correlated => "CORRELATE",
            Kind::Advice => "ADVISE",
            Kind::AdviceRejected => "NO ADVICE",
            Kind::Planned => "PLAN",
            Kind::GateVerdict => "GATE",
            Kind::StepStarted => "EXECUTE",
            Kind::StepSucceeded => "DONE",
            Kind::StepFailed => "FAILED",
            Kind::StepSkipped => "SKIP",
            Kind::VerifyPassed | Kind::VerifyFailed => "VERIFY",
            Kind::RollbackStarted => "ROLLBACK",
            Kind::RemediationFinished => "FINISH",
        }
    }
}

/// An entry to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the decision was made.
    pub at: DateTime<Utc>,
    /// What it is.
    pub kind: Kind,
    /// The playbook it concerns.
    pub playbook: String,
    /// The incident it belongs to, if any.
    pub incident: Option<String>,
    /// Everything else, as JSON (labels, values, target, reason, ...).
    pub detail: serde_json::Value,
}

impl Record {
    /// A signal event of a playbook: labels, value, values and, when inconclusive, the reason.
    pub fn signal(event: &PlaybookEvent) -> Self {
        let signal = &event.event;
        let kind = match signal.transition {
            Transition::Pending => Kind::SignalPending,
            Transition::Firing => Kind::SignalFiring,
            Transition::Resolved => Kind::SignalResolved,
            Transition::Inconclusive { .. } => Kind::SignalInconclusive,
        };
        let mut detail = json!({
            "labels": signal.labels,
            "values": finite(&signal.values),
        });
        if let Some(value) = signal.value.filter(|v| v.is_finite()) {
            detail["value"] = json!(value);
        }
        if let Some(active_at) = signal.active_at {
            detail["activeAt"] = json!(active_at.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
        if let Transition::Inconclusive { reason } = &signal.transition {
            detail["reason"] = json!(reason);
        }
        Record {
            at: signal.at,
            kind,
            playbook: event.playbook.clone(),
            incident: None,
            detail,
        }
    }

    /// An incident change: the incident, its target and root signal, and the signal that
    /// caused the change.
    pub fn incident(change: &IncidentEvent) -> Self {
        let kind = match change.transition {
            IncidentTransition::Opened => Kind::IncidentOpened,
            IncidentTransition::Reopened => Kind::IncidentReopened,
            IncidentTransition::Resolved => Kind::IncidentResolved,
        };
        let incident = &change.incident;
        let mut detail = json!({
            "target": incident.target,
            "root": incident.root,
            "labels": change.labels,
            "values": finite(&change.values),
        });
        if let Some(active_at) = incident.active_at {
            detail["activeAt"] = json!(active_at.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
        Record {
            at: change.at,
            kind,
            playbook: incident.playbook.clone(),
            incident: Some(incident.id.clone()),
            detail,
        }
    }
}

/// An `advice` or `advice_rejected` entry in a few words.
fn advice_in_brief(detail: &serde_json::Value) -> String {
    let advice = &detail["advice"];
    match advice["rootCause"].as_str() {
        Some(root) => {
            let confidence = advice["confidence"].as_f64().unwrap_or_default() * 100.0;
            let mut text = format!("{root} ({confidence:.0}%)");
            if let Some(playbook) = advice["suggestedPlaybook"].as_str() {
                text += &format!(" → {playbook}");
            }
            crate::advisor::consult::printable(&text)
        }
        None => format!("none: {}", detail["reason"].as_str().unwrap_or("?")),
    }
}

/// The finite values (JSON has no NaN), as the journal and `salve replay` write them.
pub(crate) fn finite(values: &BTreeMap<String, f64>) -> BTreeMap<&str, f64> {
    values
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| (k.as_str(), *v))
        .collect()
}

const INSERT: &str =
    "INSERT INTO entries (at, kind, playbook, incident, detail) VALUES (?1, ?2, ?3, ?4, ?5)";

fn insert_params(record: &Record) -> (String, &'static str, &str, Option<&str>, String) {
    (
        record.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        record.kind.as_str(),
        &record.playbook,
        record.incident.as_deref(),
        record.detail.to_string(),
    )
}

/// A row of `entries` as stored.
type Row = (i64, String, String, String, Option<String>, String);

fn row_tuple(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

/// An entry as read back: the record and its position in the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its sequence number: the order entries were written in.
    pub seq: i64,
    /// What was written.
    pub record: Record,
}

/// One incident as the journal tells it (and, serialized in camelCase, as the API shows it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentSummary {
    /// Its id.
    pub id: String,
    /// Its playbook.
    pub playbook: String,
    /// Its target, when one could be named.
    pub target: Option<String>,
    /// When its root signal started to hold, when known.
    pub active_at: Option<DateTime<Utc>>,
    /// When it opened (detection).
    pub opened_at: DateTime<Utc>,
    /// When it last resolved, unless it is open.
    pub resolved_at: Option<DateTime<Utc>>,
    /// What the advisor last said of it, in a few words (`sig-2 (80%) → crash-loop`, `none:
    /// timeout`); `None` when it was not consulted.
    pub advice: Option<String>,
    /// A rehearsal asked for over the API (every step a dry run), not a real incident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehearsal: bool,
}

/// The incidents `entries` (in the order written) tell of, oldest first; entries of kinds
/// that do not shape a summary are passed over.
fn summaries(entries: Vec<Entry>) -> Vec<IncidentSummary> {
    let mut incidents: Vec<IncidentSummary> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for Entry { record, .. } in entries {
        let Some(id) = record.incident else { continue };
        let found = index.get(&id).copied();
        match (record.kind, found) {
            (Kind::IncidentOpened, None) => {
                index.insert(id.clone(), incidents.len());
                incidents.push(IncidentSummary {
                    rehearsal: crate::incident::is_rehearsal(&id),
                    id,
                    playbook: record.playbook,
                    target: record.detail["target"].as_str().map(str::to_string),
                    active_at: record.detail["activeAt"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc)),
                    opened_at: record.at,
                    resolved_at: None,
                    advice: None,
                });
            }
            (Kind::IncidentReopened, Some(i)) => incidents[i].resolved_at = None,
            (Kind::IncidentResolved, Some(i)) => incidents[i].resolved_at = Some(record.at),
            (Kind::Advice | Kind::AdviceRejected, Some(i)) => {
                incidents[i].advice = Some(advice_in_brief(&record.detail));
            }
            _ => {}
        }
    }
    incidents
}

impl IncidentSummary {
    /// Mean time to detect, for this incident: from its root signal starting to hold to the
    /// incident opening.
    pub fn time_to_detect(&self) -> Option<Duration> {
        if self.rehearsal {
            return None;
        }
        self.active_at
            .and_then(|active| (self.opened_at - active).to_std().ok())
    }

    /// Time to recover: from its root signal starting to hold (or, unknown, from opening) to
    /// the incident resolving.
    pub fn time_to_recover(&self) -> Option<Duration> {
        if self.rehearsal {
            return None;
        }
        let start = self.active_at.unwrap_or(self.opened_at);
        self.resolved_at
            .and_then(|resolved| (resolved - start).to_std().ok())
    }
}

/// Puts `connection` in WAL mode with full sync and creates the schema of a new journal;
/// returns the schema version found. Another process opening the same new file at the same time
/// (the engine starting while `salve incidents` reads) can make SQLite answer "busy" without
/// waiting — switching to WAL and WAL recovery do not use the busy timeout — so a busy answer is
/// retried for a few seconds. The schema is created idempotently under a write lock.
fn prepare(connection: &Connection) -> rusqlite::Result<i64> {
    let attempt = || -> rusqlite::Result<i64> {
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version != 0 {
            return Ok(version);
        }
        connection.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS entries (
                 seq      INTEGER PRIMARY KEY AUTOINCREMENT,
                 at       TEXT NOT NULL,
                 kind     TEXT NOT NULL,
                 playbook TEXT NOT NULL,
                 incident TEXT,
                 detail   TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS entries_incident ON entries (incident, seq);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
        Ok(SCHEMA_VERSION)
    };
    let mut tries = 0;
    loop {
        match attempt() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 50 =>
            {
                // A failed `BEGIN IMMEDIATE ... COMMIT` batch may leave its transaction open.
                let _ = connection.execute_batch("ROLLBACK;");
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// The journal: one SQLite file, written by one engine.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// Where each entry of an incident is also written before `append` returns, if anywhere.
    mirror: std::sync::OnceLock<Arc<dyn Mirror>>,
}

/// A copy of the journal's incident entries kept elsewhere (`crate::state`: the cluster), so
/// that another replica can take over. Called after an entry is committed here and before
/// [`Journal::append`] returns; an error fails the append, so nothing acts on an entry the
/// copy lacks.
pub trait Mirror: Send + Sync + std::fmt::Debug {
    /// Keeps `record` (an incident's), written here as entry `seq`.
    fn mirror(&self, record: &Record, seq: i64) -> std::result::Result<(), String>;
}

impl Journal {
    /// Opens the journal at `path`, creating it (and its schema) when missing.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |source| Error::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(fail)?;
        // Another process (`salve incidents`) may read while the engine writes.
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(fail)?;
        let version = prepare(&connection).map_err(fail)?;
        match version {
            SCHEMA_VERSION => {}
            found => {
                return Err(Error::Newer {
                    path: path.to_path_buf(),
                    found,
                });
            }
        }
        Ok(Journal {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
            mirror: std::sync::OnceLock::new(),
        })
    }

    /// From now on, every entry of an incident is also written to `mirror` before
    /// [`Journal::append`] returns (only the first mirror set counts).
    pub fn set_mirror(&self, mirror: Arc<dyn Mirror>) {
        let _ = self.mirror.set(mirror);
    }

    /// Writes `record` here only, not to the mirror: an entry read from the mirror itself (a
    /// new leader taking over another replica's incidents).
    pub fn import(&self, record: &Record) -> Result<i64> {
        let connection = self.connection();
        connection
            .execute(INSERT, insert_params(record))
            .map_err(self.fail())?;
        Ok(connection.last_insert_rowid())
    }

    /// Hands the incident entry `record`, written as `seq`, to the mirror, if any. An entry
    /// the mirror refuses (a replica that lost the lead) or cannot take is taken back: this
    /// journal never holds what the cluster's copy lacks, so a replica that leads again later
    /// does not read as done (or as started) what never happened.
    fn mirrored(&self, record: &Record, seq: i64) -> Result<i64> {
        let (Some(mirror), Some(_)) = (self.mirror.get(), &record.incident) else {
            return Ok(seq);
        };
        let Err(reason) = mirror.mirror(record, seq) else {
            return Ok(seq);
        };
        self.connection()
            .execute("DELETE FROM entries WHERE seq = ?1", params![seq])
            .map_err(self.fail())?;
        Err(Error::Mirror {
            path: self.path.clone(),
            seq,
            reason,
        })
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `record`; returns its sequence number once it is on disk (and, for an incident's
    /// entry with a mirror set, in the mirror too).
    pub fn append(&self, record: &Record) -> Result<i64> {
        let seq = self.import(record)?;
        self.mirrored(record, seq)
    }

    /// Every entry of `incident`, in the order written.
    pub fn timeline(&self, incident: &str) -> Result<Vec<Entry>> {
        self.select(
            "SELECT seq, at, kind, playbook, incident, detail FROM entries
             WHERE incident = ?1 ORDER BY seq",
            [incident],
        )
    }

    /// Every entry after `seq`, in the order written.
    pub fn since(&self, seq: i64) -> Result<Vec<Entry>> {
        self.select(
            "SELECT seq, at, kind, playbook, incident, detail FROM entries
             WHERE seq > ?1 ORDER BY seq",
            [seq],
        )
    }

    fn select(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<Entry>> {
        let connection = self.connection();
        let mut statement = connection.prepare_cached(sql).map_err(self.fail())?;
        let rows = statement
            .query_map(params, row_tuple)
            .map_err(self.fail())?;
        let mut entries = Vec::new();
        for row in rows {
            entries.push(self.entry(row.map_err(self.fail())?)?);
        }
        Ok(entries)
    }

    fn entry(&self, (seq, at, kind, playbook, incident, detail): Row) -> Result<Entry> {
        let corrupt = |reason: String| Error::Corrupt {
            path: self.path.clone(),
            seq,
            reason,
        };
        let at = DateTime::parse_from_rfc3339(&at)
            .map_err(|e| corrupt(format!("time `{at}`: {e}")))?
            .with_timezone(&Utc);
        let kind = Kind::parse(&kind).ok_or_else(|| corrupt(format!("kind `{kind}`")))?;
        let detail = serde_json::from_str(&detail)
            .map_err(|e| corrupt(format!("detail is not JSON: {e}")))?;
        Ok(Entry {
            seq,
            record: Record {
                at,
                kind,
                playbook,
                incident,
                detail,
            },
        })
    }

    /// Every incident, oldest first, from its opening, last reopening and last resolution.
    pub fn incidents(&self) -> Result<Vec<IncidentSummary>> {
        let entries = self.select(
            "SELECT seq, at, kind, playbook, incident, detail FROM entries
             WHERE incident IS NOT NULL
               AND kind IN ('incident_opened', 'incident_reopened', 'incident_resolved',
                            'advice', 'advice_rejected')
             ORDER BY seq",
            [],
        )?;
        Ok(summaries(entries))
    }

    /// One incident's summary, read from its own entries (`None` without an opening).
    pub fn incident(&self, id: &str) -> Result<Option<IncidentSummary>> {
        Ok(summaries(self.timeline(id)?).pop())
    }

    /// Every entry of `kind`, in the order written.
    pub fn by_kind(&self, kind: Kind) -> Result<Vec<Entry>> {
        self.select(
            "SELECT seq, at, kind, playbook, incident, detail FROM entries
             WHERE kind = ?1 ORDER BY seq",
            [kind.as_str()],
        )
    }

    /// The signal entries (firing and resolved) written at or after `since`, in the order
    /// written: what the advisor reads to find the signals firing beside an incident's.
    pub fn signals_since(&self, since: DateTime<Utc>) -> Result<Vec<Entry>> {
        self.select(
            "SELECT seq, at, kind, playbook, incident, detail FROM entries
             WHERE at >= ?1 AND kind IN (?2, ?3) ORDER BY seq",
            params![
                since.to_rfc3339_opts(SecondsFormat::Millis, true),
                Kind::SignalFiring.as_str(),
                Kind::SignalResolved.as_str()
            ],
        )
    }

    /// Every entry whose detail has `key` = `value`, in the order written.
    pub fn by_detail(&self, key: &str, value: &str) -> Result<Vec<Entry>> {
        self.select(
            "SELECT seq, at, kind, playbook, incident, detail FROM entries
             WHERE json_extract(detail, '$.' || ?1) = ?2 ORDER BY seq",
            params![key, value],
        )
    }

    /// Writes what `decide` returns, if anything, after it has looked at the entries whose
    /// detail has `key` = `value` — all in one exclusive transaction, so two processes cannot
    /// both act on the same state (two answers to one approval).
    pub fn append_after<T, E>(
        &self,
        (key, value): (&str, &str),
        decide: impl FnOnce(&[Entry]) -> std::result::Result<(Record, T), E>,
    ) -> Result<std::result::Result<(i64, T), E>> {
        let mut connection = self.connection();
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.fail())?;
        let entries = {
            let mut statement = transaction
                .prepare(
                    "SELECT seq, at, kind, playbook, incident, detail FROM entries
                     WHERE json_extract(detail, '$.' || ?1) = ?2 ORDER BY seq",
                )
                .map_err(self.fail())?;
            let rows = statement
                .query_map(params![key, value], row_tuple)
                .map_err(self.fail())?;
            let mut entries = Vec::new();
            for row in rows {
                entries.push(self.entry(row.map_err(self.fail())?)?);
            }
            entries
        };
        let (record, outcome) = match decide(&entries) {
            Ok(decided) => decided,
            Err(refused) => return Ok(Err(refused)),
        };
        transaction
            .execute(INSERT, insert_params(&record))
            .map_err(self.fail())?;
        let seq = transaction.last_insert_rowid();
        transaction.commit().map_err(self.fail())?;
        drop(connection);
        self.mirrored(&record, seq)?;
        Ok(Ok((seq, outcome)))
    }

    /// The sequence number of the last entry, or 0 for an empty journal.
    pub fn last_seq(&self) -> Result<i64> {
        let connection = self.connection();
        connection
            .query_row("SELECT max(seq) FROM entries", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .optional()
            .map(|seq| seq.flatten().unwrap_or(0))
            .map_err(self.fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("valid time")
    }

    fn record(
        seconds: i64,
        kind: Kind,
        incident: Option<&str>,
        detail: serde_json::Value,
    ) -> Record {
        Record {
            at: t(seconds),
            kind,
            playbook: "p".into(),
            incident: incident.map(str::to_string),
            detail,
        }
    }

    /// A mirror that refuses every entry whose detail says `"refuse": true`.
    #[derive(Debug)]
    struct Picky;

    impl Mirror for Picky {
        fn mirror(&self, record: &Record, _: i64) -> std::result::Result<(), String> {
            match record.detail["refuse"].as_bool() {
                Some(true) => Err("refused".into()),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn an_entry_the_mirror_refuses_is_not_kept_here_either() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(&dir.path().join("journal.db")).expect("open");
        journal.set_mirror(Arc::new(Picky));
        let kept = journal
            .append(&record(
                0,
                Kind::StepStarted,
                Some("i"),
                json!({"step": "a"}),
            ))
            .expect("mirrored");
        let refused = journal.append(&record(
            1,
            Kind::RemediationFinished,
            Some("i"),
            json!({"refuse": true}),
        ));
        assert!(
            matches!(refused, Err(Error::Mirror { seq, .. }) if seq == kept + 1),
            "{refused:?}"
        );
        let answered = journal.append_after(("step", "a"), |_| {
            Ok::<_, ()>((
                record(2, Kind::StepFailed, Some("i"), json!({"refuse": true})),
                (),
            ))
        });
        assert!(
            matches!(answered, Err(Error::Mirror { .. })),
            "{answered:?}"
        );
        let kinds: Vec<Kind> = journal
            .timeline("i")
            .expect("timeline")
            .into_iter()
            .map(|e| e.record.kind)
            .collect();
        assert_eq!(kinds, [Kind::StepStarted], "only what the mirror kept");
        // Not mirrored at all (no incident): kept.
        journal
            .append(&record(
                3,
                Kind::SignalFiring,
                None,
                json!({"refuse": true}),
            ))
            .expect("kept");
    }

    #[test]
    fn entries_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.db");
        {
            let journal = Journal::open(&path).expect("open");
            assert_eq!(journal.last_seq().expect("seq"), 0);
            let first = journal
                .append(&record(
                    0,
                    Kind::SignalFiring,
                    None,
                    json!({"labels": {"pod": "a"}}),
                ))
                .expect("append");
            let second = journal
                .append(&record(
                    0,
                    Kind::IncidentOpened,
                    Some("inc-1"),
                    json!({"target": "Deployment shop/api"}),
                ))
                .expect("append");
            assert!(second > first);
        }
        let journal = Journal::open(&path).expect("reopen");
        let all = journal.since(0).expect("read");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].record.detail["labels"]["pod"], "a");
        assert_eq!(all[1].record.kind, Kind::IncidentOpened);
        assert_eq!(journal.timeline("inc-1").expect("timeline").len(), 1);
        assert_eq!(journal.since(all[0].seq).expect("read").len(), 1);
    }

    #[test]
    fn incidents_carry_their_times_to_detect_and_recover() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = Journal::open(&dir.path().join("j.db")).expect("open");
        let active = t(0).to_rfc3339();
        for r in [
            record(
                300,
                Kind::IncidentOpened,
                Some("a"),
                json!({"target": "Deployment shop/api", "activeAt": active}),
            ),
            record(900, Kind::IncidentResolved, Some("a"), json!({})),
            record(1000, Kind::IncidentOpened, Some("b"), json!({})),
            record(1200, Kind::IncidentResolved, Some("b"), json!({})),
            record(1300, Kind::IncidentReopened, Some("b"), json!({})),
        ] {
            journal.append(&r).expect("append");
        }
        let incidents = journal.incidents().expect("incidents");
        assert_eq!(incidents.len(), 2);
        let (a, b) = (&incidents[0], &incidents[1]);
        assert_eq!(a.target.as_deref(), Some("Deployment shop/api"));
        assert_eq!(a.time_to_detect(), Some(Duration::from_secs(300)));
        assert_eq!(a.time_to_recover(), Some(Duration::from_secs(900)));
        assert_eq!(b.time_to_detect(), None, "no start time recorded");
        assert_eq!(b.resolved_at, None, "reopened: open again");
        assert_eq!(b.time_to_recover(), None);
    }

    #[test]
    fn a_journal_from_a_newer_salve_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.db");
        Journal::open(&path).expect("create");
        Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "user_version", 7))
            .expect("bump the version");
        let error = Journal::open(&path).expect_err("refused").to_string();
        assert!(
            error.contains("schema version 7") && error.contains("upgrade Salve"),
            "{error}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.db");
        std::fs::write(
            &path,
            "this is not a database, just text that is long enough to be read",
        )
        .expect("write");
        let error = Journal::open(&path).expect_err("refused").to_string();
        assert!(error.contains("j.db"), "{error}");
    }

    #[test]
    fn two_processes_creating_one_journal_at_once_both_succeed() {
        for round in 0..20 {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join(format!("j{round}.db"));
            let openers: Vec<_> = (0..3)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || Journal::open(&path).map(drop))
                })
                .collect();
            for opener in openers {
                opener
                    .join()
                    .expect("no panic")
                    .expect("every opener gets the journal");
            }
        }
    }

    #[test]
    fn every_kind_reads_back_as_itself() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("nope"), None);
    }
}
