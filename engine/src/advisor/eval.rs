//! What `salve advise-eval` measures: labelled incident scenarios, and how often each scorer
//! finds their root cause and playbook.
//!
//! A **scenario** is one YAML file (the bundled set is `tests/advise/`): an incident as the
//! advisor would see it — its signals (the incident's own first), recent events, the target's
//! rollout history and log excerpts, exactly the parts of a [`Brief`] — and what an SRE judged
//! of it: the root cause (`sig-N`) and the bundled playbook that fits.
//!
//! ```yaml
//! name: cascade-db-oom-pool-latency
//! category: cascade          # see Category
//! description: postgres-0 is OOMKilled; the api's pool fills; its latency alert fires first.
//! tags: [injection]          # optional, free: what else the scenario tests
//! at: 2026-03-02T09:20:00Z   # when the incident is looked at (RFC 3339)
//! signals:                   # sig-1, sig-2, ... in this order; the incident's own first
//!   - {kind: latency, playbook: api-latency-slo, labels: {namespace: shop, service: api},
//!      value: 2.8, since: 2026-03-02T09:11:50Z}
//! events:                    # evt-1, ... newest first: {object, reason, message, count, at}
//! revisions:                 # the target's rollout history, newest first: rev-<revision>
//!   - {revision: 41, current: true, at: 2026-02-24T16:02:00Z, change: 'image api:2.14.1'}
//! logs:                      # log-1, ...
//!   - {source: 'pod shop/api-7c9d8f6b5-q2x7m, container api', text: "..."}
//! expect: {rootCause: sig-3, playbook: oom-raise-limit}
//! ```
//!
//! A signal's `playbook` may name a playbook outside the set (a team's own alert rule); the
//! expected playbook must be in it. Unknown fields are refused, and [`load`] reports every
//! problem of every file at its file:line:column in one pass.
//!
//! **Scorers**, each on the scenario's brief ([`Scenario::brief`]), each a field of its
//! [`Outcome`]:
//! - the deterministic correlation ([`crate::correlate::correlate`]): is its root the expected
//!   one?
//! - runbook retrieval ([`Retriever::rank_lexical`] of every playbook for [`Brief::query`]):
//!   is the expected playbook first (top-1), or among the first [`TOP_K`] (top-3)?
//! - the candidates the model would be shown ([`candidates`]: the playbooks of the brief's
//!   signals, then the top [`TOP_K`] retrieved): is the expected playbook among them
//!   (candidate recall)? A model can only suggest a candidate.
//! - a model: [`Outcome::llm`], filled in by whoever asks one; [`Report::summary`] counts it
//!   when present.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use serde_saphyr::{Location, Spanned};

use super::ask::{candidates, described};
use super::brief::Brief;
use super::client::Client;
use super::consult::{self, Outcome as Consulted, Question};
use super::context::{Event, Id, LogExcerpt, Revision, Signal};
use super::retrieve::Retriever;
use crate::correlate::{Correlation, correlate};
use crate::diagnostic::{Diagnostic, Pos, did_you_mean};
use crate::playbook::PlaybookSet;
use crate::signal::state::LabelSet;
use crate::yaml::MAX_FILE_BYTES;

/// How many retrieved playbooks count: top-3 accuracy, and the retrieved candidates.
pub const TOP_K: usize = 3;

/// What kind of incident a scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// The earliest signal is not the root cause: a slow dependency, a crashed one, a degraded
    /// stack behind alerts that fired first.
    Cascade,
    /// A workload on the same node or nodes starves the others.
    NoisyNeighbour,
    /// A fresh rollout followed by errors, latency, leaks or crash loops.
    Deploy,
    /// Node pressure or a NotReady node behind pod restarts and missing replicas.
    Node,
    /// A workload scaled far beyond its budget.
    Cost,
    /// A connection pool exhausted by a leak or by real demand.
    ConnectionPool,
    /// A canary slower than its stable track, or slow for another reason.
    Canary,
    /// Replicas missing because pods cannot be scheduled or started.
    Scheduling,
    /// An incident among unrelated concurrent signals.
    Noise,
    /// Out of memory: a leak, or a limit too tight for a real peak.
    Memory,
}

impl Category {
    /// Every category, in order.
    pub const ALL: [Category; 10] = [
        Category::Cascade,
        Category::NoisyNeighbour,
        Category::Deploy,
        Category::Node,
        Category::Cost,
        Category::ConnectionPool,
        Category::Canary,
        Category::Scheduling,
        Category::Noise,
        Category::Memory,
    ];

    /// Its name in scenario files: `cascade`, `noisy-neighbour`...
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Cascade => "cascade",
            Category::NoisyNeighbour => "noisy-neighbour",
            Category::Deploy => "deploy",
            Category::Node => "node",
            Category::Cost => "cost",
            Category::ConnectionPool => "connection-pool",
            Category::Canary => "canary",
            Category::Scheduling => "scheduling",
            Category::Noise => "noise",
            Category::Memory => "memory",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the scenarios cannot be scored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No scenario file was found.
    #[error("no scenario files (*.yaml, *.yml) in {}", list_paths(.0))]
    NoScenarios(Vec<PathBuf>),
    /// Files could not be read, or are not valid scenarios: every problem, sorted by file and
    /// position.
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn list_paths(paths: &[PathBuf]) -> String {
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    paths.join(", ")
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    format!(
        "{} in the scenarios:\n{}",
        plural(diagnostics.len(), "problem", "problems"),
        lines.join("\n")
    )
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A labelled incident, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file it was read from.
    pub file: PathBuf,
    /// Its unique name.
    pub name: String,
    /// What kind of incident it is.
    pub category: Category,
    /// What happened, for people.
    pub description: String,
    /// What else it tests (`injection`: prompt injection in logs or events).
    pub tags: Vec<String>,
    /// When the incident is looked at.
    pub at: DateTime<Utc>,
    /// The firing signals, the incident's own first.
    pub signals: Vec<Signal>,
    /// Recent events, newest first.
    pub events: Vec<Event>,
    /// The target's rollout history, newest first.
    pub revisions: Vec<Revision>,
    /// Log excerpts.
    pub logs: Vec<LogExcerpt>,
    /// What an SRE judged.
    pub expect: Expect,
}

/// A scenario's right answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// The root cause: an index into the scenario's signals.
    pub root_cause: usize,
    /// The playbook that fits; one of the set's.
    pub playbook: String,
}

impl Scenario {
    /// The brief Salve would build of the incident: the scenario's parts, in order.
    pub fn brief(&self) -> Brief {
        Brief {
            incident: format!("scenario/{}", self.name),
            signals: self.signals.clone(),
            events: self.events.clone(),
            revisions: self.revisions.clone(),
            logs: self.logs.clone(),
        }
    }
}

/// A scenario file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScenarioSpec {
    /// Its unique name.
    name: Spanned<String>,
    /// What kind of incident it is.
    category: Category,
    /// What happened.
    description: String,
    /// What else it tests.
    #[serde(default)]
    tags: Vec<String>,
    /// When the incident is looked at (RFC 3339).
    at: Spanned<String>,
    /// The signals, the incident's own first.
    signals: Spanned<Vec<SignalSpec>>,
    /// Recent events, newest first.
    #[serde(default)]
    events: Vec<EventSpec>,
    /// The target's rollout history, newest first.
    #[serde(default)]
    revisions: Vec<RevisionSpec>,
    /// Log excerpts.
    #[serde(default)]
    logs: Vec<LogSpec>,
    /// The right answer.
    expect: ExpectSpec,
}

/// A signal as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalSpec {
    /// `memory_leak`, `crash_loop`, `latency`, `error_rate`, `promql`, `event`, `alert`.
    kind: Spanned<String>,
    /// The playbook whose trigger fired (may be outside the set).
    playbook: Spanned<String>,
    /// The series' labels; scalar values are taken as text.
    #[serde(default)]
    labels: BTreeMap<String, LabelValue>,
    /// Its main value.
    #[serde(default)]
    value: Option<f64>,
    /// When it started to hold (RFC 3339).
    #[serde(default)]
    since: Option<Spanned<String>>,
}

/// An event as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    /// `Pod shop/api-7d9f-x2k4`, `Node node-3`.
    object: String,
    /// `BackOff`, `OOMKilling`...
    reason: String,
    /// Its message.
    #[serde(default)]
    message: String,
    /// How many times it happened.
    #[serde(default = "one")]
    count: u32,
    /// When it last happened (RFC 3339).
    #[serde(default)]
    at: Option<Spanned<String>>,
}

fn one() -> u32 {
    1
}

/// A revision as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevisionSpec {
    /// Its number; its id is `rev-<revision>`.
    revision: Spanned<u64>,
    /// Whether it is the one running.
    #[serde(default)]
    current: bool,
    /// When it was created (RFC 3339).
    #[serde(default)]
    at: Option<Spanned<String>>,
    /// What it changed.
    #[serde(default)]
    change: String,
}

/// A log excerpt as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {
    /// Where it is from.
    source: String,
    /// Its lines.
    text: String,
}

/// The right answer as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExpectSpec {
    /// `sig-N`.
    root_cause: Spanned<String>,
    /// A playbook of the set.
    playbook: Spanned<String>,
}

/// A label value: any scalar, kept as text (`code: 500` is `"500"`).
#[derive(Debug)]
struct LabelValue(String);

impl<'de> Deserialize<'de> for LabelValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl serde::de::Visitor<'_> for Scalar {
            type Value = LabelValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label value (a string, number or boolean)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<LabelValue, E> {
                Ok(LabelValue(v.to_string()))
            }
        }
        deserializer.deserialize_any(Scalar)
    }
}

/// Loads every scenario under `paths` (files, or directories whose `*.yaml` and `*.yml` files
/// are read, those starting with `.` skipped), checked against `playbooks`; every problem in
/// every file is reported at once.
pub fn load(paths: &[PathBuf], playbooks: &PlaybookSet) -> Result<Vec<Scenario>> {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match fs::read_dir(path) {
                Ok(entries) => files.extend(
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| {
                            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
                            !name.starts_with('.')
                                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                                && p.is_file()
                        }),
                ),
                Err(e) => diagnostics.push(Diagnostic::error(
                    path,
                    Pos::new(1, 1),
                    format!("cannot read directory: {e}"),
                )),
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() && diagnostics.is_empty() {
        return Err(Error::NoScenarios(paths.to_vec()));
    }

    let mut scenarios: Vec<Scenario> = Vec::new();
    let mut names: BTreeMap<String, (PathBuf, Pos)> = BTreeMap::new();
    for file in &files {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    file,
                    Pos::new(1, 1),
                    format!("cannot read file: {e}"),
                ));
                continue;
            }
        };
        match parse_spanned(file, &text, playbooks) {
            Ok((scenario, name_pos)) => {
                if let Some((first, at)) = names.get(&scenario.name) {
                    diagnostics.push(
                        Diagnostic::error(
                            file,
                            name_pos,
                            format!(
                                "duplicate scenario name `{}`, first defined at {}:{}:{}",
                                scenario.name,
                                first.display(),
                                at.line,
                                at.column
                            ),
                        )
                        .field("name"),
                    );
                    continue;
                }
                names.insert(scenario.name.clone(), (file.clone(), name_pos));
                scenarios.push(scenario);
            }
            Err(found) => diagnostics.extend(found),
        }
    }
    if diagnostics.is_empty() {
        Ok(scenarios)
    } else {
        crate::diagnostic::sort(&mut diagnostics);
        Err(Error::Invalid(diagnostics))
    }
}

/// Parses one scenario file's `text`, read from `file`, checked against `playbooks`: every
/// problem, each at its line and column.
pub fn parse(
    file: &Path,
    text: &str,
    playbooks: &PlaybookSet,
) -> Result<Scenario, Vec<Diagnostic>> {
    parse_spanned(file, text, playbooks).map(|(scenario, _)| scenario)
}

/// [`parse`], with where the scenario's name was written.
fn parse_spanned(
    file: &Path,
    text: &str,
    playbooks: &PlaybookSet,
) -> Result<(Scenario, Pos), Vec<Diagnostic>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![Diagnostic::error(
            file,
            Pos::new(1, 1),
            format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES} bytes a scenario may have",
                text.len()
            ),
        )]);
    }
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
    };
    let spec: ScenarioSpec = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        vec![Diagnostic::error(
            file,
            e.location().map_or(Pos::new(1, 1), pos),
            plain_message(&e),
        )]
    })?;
    Compiler {
        file,
        playbooks,
        diagnostics: Vec::new(),
    }
    .compile(spec)
}

/// Turns a [`ScenarioSpec`] into a [`Scenario`], collecting every problem.
struct Compiler<'a> {
    file: &'a Path,
    playbooks: &'a PlaybookSet,
    diagnostics: Vec<Diagnostic>,
}

impl Compiler<'_> {
    fn compile(mut self, spec: ScenarioSpec) -> Result<(Scenario, Pos), Vec<Diagnostic>> {
        let name_pos = pos(spec.name.referenced);
        if spec.name.value.trim().is_empty() {
            self.error(name_pos, "name", "the scenario's name is empty", None);
        }
        let at = self.time(&spec.at, "at");

        let signal_count = spec.signals.value.len();
        if signal_count == 0 {
            self.error(
                pos(spec.signals.referenced),
                "signals",
                "a scenario needs at least one signal: the incident's own, first",
                None,
            );
        }
        let mut signals = Vec::with_capacity(signal_count);
        for (i, signal) in spec.signals.value.into_iter().enumerate() {
            for (field, value) in [("kind", &signal.kind), ("playbook", &signal.playbook)] {
                if value.value.trim().is_empty() {
                    self.error(
                        pos(value.referenced),
                        &format!("signals[{i}].{field}"),
                        &format!("the signal's {field} is empty"),
                        None,
                    );
                }
            }
            let since = signal
                .since
                .as_ref()
                .and_then(|s| self.time(s, &format!("signals[{i}].since")));
            signals.push(Signal {
                kind: signal.kind.value,
                playbook: signal.playbook.value,
                labels: signal
                    .labels
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<LabelSet>(),
                value: signal.value,
                since,
            });
        }

        let events = spec
            .events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Event {
                at: event
                    .at
                    .as_ref()
                    .and_then(|t| self.time(t, &format!("events[{i}].at"))),
                object: event.object,
                reason: event.reason,
                message: event.message,
                count: event.count,
            })
            .collect();

        let mut numbers: BTreeSet<u64> = BTreeSet::new();
        let mut current = 0;
        let mut revisions = Vec::with_capacity(spec.revisions.len());
        for (i, revision) in spec.revisions.into_iter().enumerate() {
            if !numbers.insert(revision.revision.value) {
                self.error(
                    pos(revision.revision.referenced),
                    &format!("revisions[{i}].revision"),
                    &format!("revision {} is listed twice", revision.revision.value),
                    None,
                );
            }
            if revision.current {
                current += 1;
                if current == 2 {
                    self.error(
                        pos(revision.revision.referenced),
                        &format!("revisions[{i}].current"),
                        "more than one revision is current",
                        None,
                    );
                }
            }
            revisions.push(Revision {
                revision: revision.revision.value,
                current: revision.current,
                at: revision
                    .at
                    .as_ref()
                    .and_then(|t| self.time(t, &format!("revisions[{i}].at"))),
                change: revision.change,
            });
        }

        let logs = spec
            .logs
            .into_iter()
            .map(|log| LogExcerpt {
                source: log.source,
                text: log.text,
            })
            .collect();

        let root_cause = self.root_cause(&spec.expect.root_cause, signal_count);
        let playbook = &spec.expect.playbook;
        if self.playbooks.playbook(&playbook.value).is_none() {
            let help = did_you_mean(
                &playbook.value,
                self.playbooks.playbooks().map(|p| p.name.as_str()),
            );
            let names: Vec<&str> = self
                .playbooks
                .playbooks()
                .map(|p| p.name.as_str())
                .collect();
            self.diagnostics.push(
                Diagnostic::error(
                    self.file,
                    pos(playbook.referenced),
                    format!("unknown playbook `{}`", playbook.value),
                )
                .field("expect.playbook")
                .expected(format!("one of the set's playbooks: {}", names.join(", ")))
                .help(help),
            );
        }

        match (self.diagnostics.is_empty(), at, root_cause) {
            (true, Some(at), Some(root_cause)) => Ok((
                Scenario {
                    file: self.file.to_path_buf(),
                    name: spec.name.value,
                    category: spec.category,
                    description: spec.description,
                    tags: spec.tags,
                    at,
                    signals,
                    events,
                    revisions,
                    logs,
                    expect: Expect {
                        root_cause,
                        playbook: spec.expect.playbook.value,
                    },
                },
                name_pos,
            )),
            _ => Err(self.diagnostics),
        }
    }

    /// The index of the signal `id` names, which must be one of the `count` signals.
    fn root_cause(&mut self, id: &Spanned<String>, count: usize) -> Option<usize> {
        let at = pos(id.referenced);
        if count == 0 {
            // Reported at `signals` already.
            return None;
        }
        match Id::from_str(&id.value) {
            Ok(Id::Signal(n)) if n <= count => Some(n - 1),
            Ok(Id::Signal(_)) => {
                self.error(
                    at,
                    "expect.rootCause",
                    &format!(
                        "`{}` is not a signal of this scenario, which has {}",
                        id.value,
                        plural(count, "signal", "signals")
                    ),
                    Some(format!("sig-1 to sig-{count}")),
                );
                None
            }
            _ => {
                self.error(
                    at,
                    "expect.rootCause",
                    &format!("`{}` is not a signal id", id.value),
                    Some(format!("sig-1 to sig-{count}")),
                );
                None
            }
        }
    }

    /// `text` as an RFC 3339 time.
    fn time(&mut self, text: &Spanned<String>, field: &str) -> Option<DateTime<Utc>> {
        match DateTime::parse_from_rfc3339(text.value.trim()) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.error(
                    pos(text.referenced),
                    field,
                    &format!("`{}` is not a time", text.value),
                    Some("an RFC 3339 time such as 2026-03-02T09:20:00Z".into()),
                );
                None
            }
        }
    }

    fn error(&mut self, at: Pos, field: &str, message: &str, expected: Option<String>) {
        let mut diagnostic = Diagnostic::error(self.file, at, message).field(field);
        if let Some(expected) = expected {
            diagnostic = diagnostic.expected(expected);
        }
        self.diagnostics.push(diagnostic);
    }
}

fn pos(location: Location) -> Pos {
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).max(1);
    Pos::new(clamp(location.line()), clamp(location.column()))
}

/// serde-saphyr's message without the position it appends (reported apart), lowercase first.
fn plain_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let text = text
        .rfind(" at line ")
        .map_or(text.as_str(), |at| &text[..at]);
    let mut text = text.trim().to_string();
    if let Some(first) = text.get(..1) {
        let lower = first.to_lowercase();
        text.replace_range(..1, &lower);
    }
    text
}

/// A playbook retrieval ranked, with its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    /// The playbook's name.
    pub name: String,
    /// Its BM25 score.
    pub score: f32,
}

/// What a model answered for a scenario, when one was asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelAnswer {
    /// The signal it held to be the root cause (an index into the scenario's signals), or
    /// `None` when it named none or its answer was rejected.
    pub root_cause: Option<usize>,
    /// The playbook it suggested, if any.
    pub playbook: Option<String>,
    /// Why its answer was not used (a reason code of [`super::consult`]), if it was not.
    pub rejected: Option<&'static str>,
}

/// How each scorer did on one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// Its category.
    pub category: Category,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its right answer.
    pub expect: Expect,
    /// The deterministic correlation of its brief.
    pub correlation: Correlation,
    /// The first [`TOP_K`] playbooks retrieval ranked, best first.
    pub retrieved: Vec<Retrieved>,
    /// The expected playbook's rank among all the playbooks retrieval matched, from 1 (`None`
    /// when it did not match at all).
    pub expected_rank: Option<usize>,
    /// The playbooks a model would be shown ([`candidates`]).
    pub candidates: Vec<String>,
    /// What a model answered, when one was asked.
    pub llm: Option<ModelAnswer>,
}

impl Outcome {
    /// Whether the correlation's root is the expected one.
    pub fn correlation_correct(&self) -> bool {
        self.correlation.root == self.expect.root_cause
    }

    /// Whether retrieval ranked the expected playbook first.
    pub fn top1(&self) -> bool {
        self.expected_rank == Some(1)
    }

    /// Whether retrieval ranked the expected playbook among the first [`TOP_K`].
    pub fn top3(&self) -> bool {
        self.expected_rank.is_some_and(|rank| rank <= TOP_K)
    }

    /// Whether the expected playbook is among the candidates.
    pub fn candidate_recall(&self) -> bool {
        self.candidates.contains(&self.expect.playbook)
    }

    /// Whether the model named the expected root cause (`None`: no model was asked).
    pub fn llm_root_correct(&self) -> Option<bool> {
        let llm = self.llm.as_ref()?;
        Some(llm.root_cause == Some(self.expect.root_cause))
    }

    /// Whether the model suggested the expected playbook (`None`: no model was asked).
    pub fn llm_playbook_correct(&self) -> Option<bool> {
        let llm = self.llm.as_ref()?;
        Some(llm.playbook.as_deref() == Some(self.expect.playbook.as_str()))
    }
}

/// Hits out of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Score {
    /// How many were right.
    pub hits: usize,
    /// Out of how many.
    pub total: usize,
}

impl Score {
    fn of(results: impl IntoIterator<Item = bool>) -> Score {
        results.into_iter().fold(Score::default(), |s, hit| Score {
            hits: s.hits + usize::from(hit),
            total: s.total + 1,
        })
    }

    /// The share of hits, in percent (0 when there is nothing to count).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            // Counts of scenarios are far below 2^52: exact as f64.
            self.hits as f64 * 100.0 / self.total as f64
        }
    }

    fn to_json(self) -> Value {
        json!({
            "hits": self.hits,
            "total": self.total,
            "percent": (self.percent() * 10.0).round() / 10.0,
        })
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({:.1}%)", self.hits, self.total, self.percent())
    }
}

/// The scores of one category.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryScore {
    /// Which.
    pub category: Category,
    /// Correlation accuracy.
    pub correlation: Score,
    /// Retrieval top-3 accuracy.
    pub top3: Score,
    /// Candidate recall.
    pub candidate_recall: Score,
    /// The model's root cause accuracy, when one was asked.
    pub llm_root: Option<Score>,
}

/// The scores over every scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// How many scenarios.
    pub scenarios: usize,
    /// Deterministic correlation: root == expected.
    pub correlation: Score,
    /// Retrieval: the expected playbook ranked first.
    pub top1: Score,
    /// Retrieval: the expected playbook among the first [`TOP_K`].
    pub top3: Score,
    /// The expected playbook among the candidates.
    pub candidate_recall: Score,
    /// The model's root cause, over the scenarios it was asked about.
    pub llm_root: Option<Score>,
    /// The model's playbook, over the scenarios it was asked about.
    pub llm_playbook: Option<Score>,
    /// The same by category, for the categories present, in [`Category::ALL`]'s order.
    pub categories: Vec<CategoryScore>,
}

/// Every scenario's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// How many playbooks retrieval ranked.
    pub playbooks: usize,
    /// One per scenario, in the order scored.
    pub outcomes: Vec<Outcome>,
}

/// Scores the deterministic correlation and lexical retrieval over `playbooks` on each
/// scenario; [`Outcome::llm`] is left empty.
pub fn score(scenarios: &[Scenario], playbooks: &PlaybookSet) -> Report {
    let retriever = Retriever::of_set(playbooks);
    let all = playbooks.playbooks().len();
    let outcomes = scenarios
        .iter()
        .map(|scenario| {
            let brief = scenario.brief();
            let ranking = retriever.rank_lexical(&brief.query(), all);
            let expected_rank = ranking
                .iter()
                .position(|r| r.name == scenario.expect.playbook)
                .map(|i| i + 1);
            let retrieved: Vec<Retrieved> = ranking
                .iter()
                .take(TOP_K)
                .map(|r| Retrieved {
                    name: r.name.clone(),
                    score: r.score,
                })
                .collect();
            let names: Vec<String> = retrieved.iter().map(|r| r.name.clone()).collect();
            Outcome {
                scenario: scenario.name.clone(),
                category: scenario.category,
                tags: scenario.tags.clone(),
                expect: scenario.expect.clone(),
                correlation: correlate(&brief),
                retrieved,
                expected_rank,
                candidates: candidates(&brief, Some(playbooks), &names),
                llm: None,
            }
        })
        .collect();
    Report {
        playbooks: all,
        outcomes,
    }
}

/// Asks the model behind `client` about every scenario of `report` (scored from
/// `scenarios` over `playbooks`), one at a time, as the engine would: the same context,
/// candidates, schema and checks; a risk ceiling of `medium`. Fills [`Outcome::llm`]; an answer
/// that fails its checks or never comes names no root cause and no playbook.
pub async fn ask_model(
    report: &mut Report,
    scenarios: &[Scenario],
    playbooks: &PlaybookSet,
    client: &Client,
) {
    for (outcome, scenario) in report.outcomes.iter_mut().zip(scenarios) {
        let brief = scenario.brief();
        let candidates = described(&outcome.candidates, Some(playbooks));
        let question = Question {
            brief: &brief,
            correlation: &outcome.correlation.reason,
            candidates: &candidates,
            ceiling: crate::risk::Risk::Medium,
            approval_required: false,
            fingerprint: &scenario.name,
        };
        let consultation = consult::consult(client, &question).await;
        outcome.llm = Some(match consultation.outcome {
            Consulted::Advice(advice) => ModelAnswer {
                root_cause: advice
                    .root_cause
                    .strip_prefix("sig-")
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| n.checked_sub(1)),
                playbook: advice.suggested_playbook,
                rejected: None,
            },
            Consulted::Rejected { reason, .. } => ModelAnswer {
                rejected: Some(reason),
                ..ModelAnswer::default()
            },
        });
    }
}

impl Report {
    /// The counts.
    pub fn summary(&self) -> Summary {
        let of = |outcomes: &[&Outcome]| {
            let asked: Vec<&&Outcome> = outcomes.iter().filter(|o| o.llm.is_some()).collect();
            let llm = |f: fn(&Outcome) -> Option<bool>| {
                (!asked.is_empty()).then(|| Score::of(asked.iter().filter_map(|o| f(o))))
            };
            (
                Score::of(outcomes.iter().map(|o| o.correlation_correct())),
                Score::of(outcomes.iter().map(|o| o.top1())),
                Score::of(outcomes.iter().map(|o| o.top3())),
                Score::of(outcomes.iter().map(|o| o.candidate_recall())),
                llm(Outcome::llm_root_correct),
                llm(Outcome::llm_playbook_correct),
            )
        };
        let all: Vec<&Outcome> = self.outcomes.iter().collect();
        let (correlation, top1, top3, candidate_recall, llm_root, llm_playbook) = of(&all);
        let categories = Category::ALL
            .iter()
            .filter_map(|&category| {
                let outcomes: Vec<&Outcome> = self
                    .outcomes
                    .iter()
                    .filter(|o| o.category == category)
                    .collect();
                if outcomes.is_empty() {
                    return None;
                }
                let (correlation, _, top3, candidate_recall, llm_root, _) = of(&outcomes);
                Some(CategoryScore {
                    category,
                    correlation,
                    top3,
                    candidate_recall,
                    llm_root,
                })
            })
            .collect();
        Summary {
            scenarios: self.outcomes.len(),
            correlation,
            top1,
            top3,
            candidate_recall,
            llm_root,
            llm_playbook,
            categories,
        }
    }

    /// The report as JSON: `scenarios` (one object per outcome, ids as `sig-N`) and
    /// `summary`.
    pub fn to_json(&self) -> Value {
        let id = |i: usize| format!("sig-{}", i + 1);
        let scenarios: Vec<Value> = self
            .outcomes
            .iter()
            .map(|o| {
                let mut value = json!({
                    "name": o.scenario,
                    "category": o.category.as_str(),
                    "tags": o.tags,
                    "expect": {"rootCause": id(o.expect.root_cause), "playbook": o.expect.playbook},
                    "correlation": {
                        "root": id(o.correlation.root),
                        "correct": o.correlation_correct(),
                        "related": o.correlation.related.iter().map(|&i| id(i)).collect::<Vec<_>>(),
                        "shared": o.correlation.shared,
                        "reason": o.correlation.reason,
                    },
                    "retrieval": {
                        "top": o.retrieved.iter().map(|r| json!({"name": r.name, "score": r.score})).collect::<Vec<_>>(),
                        "expectedRank": o.expected_rank,
                        "top1": o.top1(),
                        "top3": o.top3(),
                    },
                    "candidates": {"names": o.candidates, "recall": o.candidate_recall()},
                });
                if let Some(llm) = &o.llm {
                    value["llm"] = json!({
                        "rootCause": llm.root_cause.map(id),
                        "playbook": llm.playbook,
                        "rootCorrect": o.llm_root_correct(),
                        "playbookCorrect": o.llm_playbook_correct(),
                        "rejected": llm.rejected,
                    });
                }
                value
            })
            .collect();
        let summary = self.summary();
        let optional = |score: Option<Score>| score.map_or(Value::Null, Score::to_json);
        json!({
            "playbooks": self.playbooks,
            "scenarios": scenarios,
            "summary": {
                "scenarios": summary.scenarios,
                "correlation": summary.correlation.to_json(),
                "retrievalTop1": summary.top1.to_json(),
                "retrievalTop3": summary.top3.to_json(),
                "candidateRecall": summary.candidate_recall.to_json(),
                "llmRootCause": optional(summary.llm_root),
                "llmPlaybook": optional(summary.llm_playbook),
                "categories": summary.categories.iter().map(|c| json!({
                    "category": c.category.as_str(),
                    "scenarios": c.correlation.total,
                    "correlation": c.correlation.to_json(),
                    "retrievalTop3": c.top3.to_json(),
                    "candidateRecall": c.candidate_recall.to_json(),
                    "llmRootCause": optional(c.llm_root),
                })).collect::<Vec<_>>(),
            },
        })
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::load::{Loaded, load_paths, load_text};

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Three small playbooks, each with words of its own for retrieval.
    fn tiny_set() -> PlaybookSet {
        let mut loaded = Loaded::default();
        for (name, description, expr) in [
            (
                "restart-stuck",
                "Pods stuck; restart the deployment.",
                "kube_deployment_status_replicas_unavailable > 0",
            ),
            (
                "shed-node-memory",
                "A node under memory pressure; evict pods.",
                "kube_node_status_condition{condition=\"MemoryPressure\"} == 1",
            ),
            (
                "pool-recycle",
                "Database connection pool saturated; recycle connections.",
                "db_pool_connections_in_use > 95",
            ),
        ] {
            let text = format!(
                "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  \
                 description: {description}\n  trigger:\n    promql: {{expr: '{expr}'}}\n  \
                 target: {{kind: Deployment, namespace: shop, name: api}}\n  steps:\n    - \
                 {{name: logs, action: capture_logs, risk: none}}\n"
            );
            load_text(Path::new(&format!("{name}.yaml")), &text, &mut loaded);
        }
        PlaybookSet::from_loaded(loaded).expect("the tiny playbooks load")
    }

    const NODE_SCENARIO: &str = "\
name: node-pressure
category: node
description: node-3 under memory pressure behind a pod's restarts.
at: 2026-03-02T10:30:00Z
signals:
  - {kind: crash_loop, playbook: restart-stuck, labels: {namespace: shop, pod: api-7d9f8b6c5-x2k4p, node: node-3}, since: 2026-03-02T10:05:00Z}
  - {kind: promql, playbook: shed-node-memory, labels: {node: node-3}, since: 2026-03-02T10:02:00Z}
events:
  - {object: Node node-3, reason: NodeHasInsufficientMemory, message: memory pressure on the node, count: 2, at: 2026-03-02T10:02:00Z}
expect: {rootCause: sig-2, playbook: shed-node-memory}
";

    #[test]
    fn the_bundled_scenarios_load_and_are_valid() {
        let root = workspace();
        let set = PlaybookSet::from_loaded(load_paths(&[root.join("playbooks")]))
            .expect("the bundled playbooks load");
        let scenarios = load(&[root.join("tests/advise")], &set).unwrap_or_else(|e| panic!("{e}"));
        assert!(scenarios.len() >= 20, "{}", scenarios.len());
        let categories: BTreeSet<Category> = scenarios.iter().map(|s| s.category).collect();
        assert_eq!(categories, Category::ALL.into_iter().collect());
        for scenario in &scenarios {
            let brief = scenario.brief();
            assert!(scenario.expect.root_cause < brief.signals.len());
            assert!(set.playbook(&scenario.expect.playbook).is_some());
            // The file is named after the scenario.
            assert_eq!(
                scenario.file.file_stem().and_then(|s| s.to_str()),
                Some(scenario.name.as_str())
            );
            assert!(
                brief.signals.iter().all(|s| s.since.is_some()),
                "{}",
                scenario.name
            );
        }
        // Every bundled playbook is the answer somewhere, and some scenarios carry injections.
        let expected: BTreeSet<&str> = scenarios
            .iter()
            .map(|s| s.expect.playbook.as_str())
            .collect();
        let all: BTreeSet<&str> = set.playbooks().map(|p| p.name.as_str()).collect();
        assert_eq!(expected, all);
        let injected = scenarios
            .iter()
            .filter(|s| s.tags.iter().any(|t| t == "injection"))
            .count();
        assert!(injected >= 3, "{injected}");
    }

    #[test]
    fn a_broken_scenario_is_reported_at_its_place() {
        let set = tiny_set();
        let file = Path::new("broken.yaml");
        let at = |text: &str| -> Vec<String> {
            parse(file, text, &set)
                .expect_err("broken")
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // An unknown field.
        let errors = at(&NODE_SCENARIO.replace("category: node", "category: node\nseverity: high"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("broken.yaml:3:1: error: "),
            "{errors:?}"
        );
        assert!(errors[0].contains("severity"), "{errors:?}");
        // A category that does not exist.
        let errors = at(&NODE_SCENARIO.replace("category: node", "category: nodes"));
        assert!(
            errors[0].starts_with("broken.yaml:2:11: error: "),
            "{errors:?}"
        );
        // Every semantic problem in one pass: an id past the signals, an unknown playbook, a
        // time that is not one.
        let errors = at(&NODE_SCENARIO
            .replace("rootCause: sig-2", "rootCause: sig-5")
            .replace("playbook: shed-node-memory}", "playbook: shed-node-memroy}")
            .replace("since: 2026-03-02T10:02:00Z", "since: yesterday"));
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            errors[0].starts_with("broken.yaml:7:")
                && errors[0].contains("`yesterday` is not a time"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("broken.yaml:10:21: error: expect.rootCause: `sig-5` is not a signal of this scenario, which has 2 signals"),
            "{errors:?}"
        );
        assert!(
            errors[2].starts_with(
                "broken.yaml:10:38: error: expect.playbook: unknown playbook `shed-node-memroy`"
            ) && errors[2].contains("did you mean `shed-node-memory`?"),
            "{errors:?}"
        );
        // Not YAML at all.
        let errors = at("name: [unclosed\n");
        assert!(errors[0].starts_with("broken.yaml:"), "{errors:?}");
        // Through `load`, with the file's real path, sorted, and duplicates named.
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::write(dir.path().join("a.yaml"), NODE_SCENARIO).expect("written");
        fs::write(dir.path().join("b.yaml"), NODE_SCENARIO).expect("written");
        fs::write(dir.path().join("c.yaml"), "name: c\n").expect("written");
        fs::write(dir.path().join("notes.txt"), "not a scenario").expect("written");
        let Err(Error::Invalid(diagnostics)) = load(&[dir.path().to_path_buf()], &set) else {
            panic!("invalid");
        };
        assert_eq!(diagnostics.len(), 2, "{diagnostics:?}");
        assert_eq!(diagnostics[0].file, dir.path().join("b.yaml"));
        assert!(
            diagnostics[0]
                .message
                .starts_with("duplicate scenario name `node-pressure`")
        );
        assert_eq!(diagnostics[1].file, dir.path().join("c.yaml"));
        assert!(
            diagnostics[1].message.contains("missing field"),
            "{diagnostics:?}"
        );
        // No scenario at all.
        let empty = tempfile::tempdir().expect("a temporary directory");
        assert!(matches!(
            load(&[empty.path().to_path_buf()], &set),
            Err(Error::NoScenarios(_))
        ));
    }

    #[test]
    fn scoring_counts_each_scorer() {
        let set = tiny_set();
        let node = parse(Path::new("node.yaml"), NODE_SCENARIO, &set).expect("valid");
        assert_eq!(
            node.expect,
            Expect {
                root_cause: 1,
                playbook: "shed-node-memory".into()
            }
        );
        let brief = node.brief();
        assert_eq!(brief.signals[0].kind, "crash_loop");
        assert_eq!(brief.events[0].count, 2);
        // A pool leak whose earliest signal is not its cause, and whose only trigger-matched
        // playbook is the wrong one: correlation misses it, retrieval finds it.
        let pool = parse(
            Path::new("pool.yaml"),
            "\
name: pool
category: connection-pool
description: a pool leak.
at: 2026-03-02T10:30:00Z
signals:
  - {kind: latency, playbook: restart-stuck, labels: {namespace: shop, service: api}, since: 2026-03-02T10:01:00Z}
  - {kind: promql, playbook: team-pool-rule, labels: {namespace: shop, deployment: api}, since: 2026-03-02T10:03:00Z}
logs:
  - {source: pod shop/api-1, text: database connection pool saturated; connections leaked}
expect: {rootCause: sig-2, playbook: pool-recycle}
",
            &set,
        )
        .expect("valid");
        let mut report = score(&[node, pool], &set);
        assert_eq!(report.playbooks, 3);
        let [node, pool] = &report.outcomes[..] else {
            panic!("two outcomes");
        };
        assert!(node.correlation_correct());
        assert_eq!(node.retrieved[0].name, "shed-node-memory");
        assert!(node.top1() && node.top3() && node.candidate_recall());
        assert_eq!(node.candidates[..2], ["restart-stuck", "shed-node-memory"]);
        assert!(!pool.correlation_correct());
        assert_eq!(pool.correlation.root, 0);
        assert_eq!(pool.expected_rank, Some(1));
        // team-pool-rule is not in the set: not a candidate.
        assert_eq!(pool.candidates[0], "restart-stuck");
        assert!(!pool.candidates.contains(&"team-pool-rule".to_string()));
        assert!(pool.candidate_recall());

        let summary = report.summary();
        assert_eq!(summary.scenarios, 2);
        assert_eq!(summary.correlation, Score { hits: 1, total: 2 });
        assert_eq!(summary.top1, Score { hits: 2, total: 2 });
        assert_eq!(summary.candidate_recall, Score { hits: 2, total: 2 });
        assert_eq!((summary.llm_root, summary.llm_playbook), (None, None));
        assert_eq!(summary.categories.len(), 2);
        assert_eq!(summary.categories[0].category, Category::Node);
        assert_eq!(summary.correlation.to_string(), "1/2 (50.0%)");

        // A model's answers slot in and are counted over the scenarios it was asked about.
        report.outcomes[0].llm = Some(ModelAnswer {
            root_cause: Some(1),
            playbook: Some("restart-stuck".into()),
            rejected: None,
        });
        let summary = report.summary();
        assert_eq!(summary.llm_root, Some(Score { hits: 1, total: 1 }));
        assert_eq!(summary.llm_playbook, Some(Score { hits: 0, total: 1 }));
        let json = report.to_json();
        assert_eq!(json["scenarios"][0]["llm"]["rootCause"], "sig-2");
        assert_eq!(json["scenarios"][1]["correlation"]["root"], "sig-1");
        assert_eq!(json["summary"]["correlation"]["percent"], 50.0);
        assert_eq!(json["summary"]["llmRootCause"]["hits"], 1);
    }
}
