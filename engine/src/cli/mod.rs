//! The `salve` command line.

mod advise_eval;
mod approvals;
mod crds;
mod demo;
mod explain;
mod incidents;
mod rbac;
mod run;
mod step;
mod trigger;

pub use incidents::line as timeline_line;

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::alertmanager::AlertStore;
use crate::app::apply;
use crate::approval::Answer;
use crate::diagnostic::Severity;
use crate::incident::{Incident, IncidentEvent, IncidentTransition, Incidents, describe};
use crate::journal::Journal;
use crate::playbook::load::{Loaded, load_paths};
use crate::playbook::watch::{self, Reloader, WatchOptions};
use crate::playbook::{Playbook, StepRun, TriggerKind};
use crate::schema::DocumentKind;
use crate::signal::evaluate::Evaluator;
use crate::signal::evaluation::{Alerts, Evaluation, PlaybookEvent, Sources};
use crate::signal::state::Transition;
use crate::telemetry::LogFormat;

/// Salve: a declarative self-healing engine for Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "salve", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SALVE_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Salve's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check playbooks and policies; report every problem with file:line:column.
    Validate {
        /// Files or directories (searched recursively for *.yaml and *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
        /// Also describe each playbook and policy that loaded.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Print or write the JSON Schema of Salve's documents.
    Schema {
        /// The document kind to print.
        #[arg(long, value_enum, default_value_t = SchemaKind::Playbook)]
        kind: SchemaKind,
        /// Write every kind's schema into this directory instead of printing one.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the `tests:` blocks of playbooks against a real Prometheus (like promtool's rule
    /// tests); exit 1 when one fails.
    Test {
        /// Files or directories.
        #[arg(default_value = "playbooks")]
        paths: Vec<PathBuf>,
        /// Use this running Prometheus instead of starting one per test. It must accept remote
        /// write (`--web.enable-remote-write-receiver`) with an out-of-order window longer than
        /// the longest test (`storage: {tsdb: {out_of_order_time_window: 1d}}`); each test's
        /// series carry a `salve_test` label of their own, and every query is scoped to it.
        #[arg(long)]
        prometheus: Option<String>,
    },
    /// Backtest playbooks over history: what would their triggers have done? Takes no action;
    /// prints one JSON object per line (`--format table` for people).
    Replay {
        /// Playbook files or directories.
        #[arg(long, required = true, num_args = 1..)]
        playbooks: Vec<PathBuf>,
        /// The Prometheus to query, such as `http://127.0.0.1:9090`.
        #[arg(long)]
        prometheus: String,
        /// Start, as RFC 3339 (`2026-11-18T00:00:00Z`) or unix seconds.
        #[arg(long, value_parser = parse_time)]
        from: DateTime<Utc>,
        /// End (inclusive), in the same forms.
        #[arg(long, value_parser = parse_time)]
        to: DateTime<Utc>,
        /// Time between evaluations.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        step: std::time::Duration,
        /// Give up on a query after this long.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReplayFormat::Json)]
        format: ReplayFormat,
        /// Also record the events in this journal, for `salve incidents` (created when
        /// missing; use a journal of its own, not the live engine's).
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// List the approval requests waiting for an answer.
    Approvals {
        /// Where to read them.
        #[command(flatten)]
        from: Endpoint,
    },
    /// Approve a step waiting above the risk ceiling.
    Approve {
        /// The request's id (`apr-...`).
        id: String,
        /// Where to answer.
        #[command(flatten)]
        from: Endpoint,
        /// Who answers.
        #[command(flatten)]
        who: Answerer,
    },
    /// Reject a step waiting above the risk ceiling.
    Reject {
        /// The request's id (`apr-...`).
        id: String,
        /// Where to answer.
        #[command(flatten)]
        from: Endpoint,
        /// Who answers.
        #[command(flatten)]
        who: Answerer,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the incidents in a journal with their times to detect and recover, or show one
    /// incident's timeline.
    Incidents {
        /// Where to read them.
        #[command(flatten)]
        from: Endpoint,
        /// Show this incident's timeline.
        id: Option<String>,
    },
    /// Rehearse a playbook through a running Salve's API, as if its trigger had fired with the
    /// labels given: the real diagnosis, plan and gate verdicts, every step a dry run.
    Trigger(trigger::TriggerArgs),
    /// Print the full reasoning trail of one incident: its signals, the correlation, what the
    /// advisor was shown and answered (or why it was not used), the gate's verdicts and the
    /// steps.
    Explain(explain::ExplainArgs),
    /// Score the deterministic correlation, runbook retrieval and (given an endpoint) the LLM
    /// advisor on labelled incident scenarios.
    AdviseEval(advise_eval::AdviseEvalArgs),
    /// Print the RBAC rules Salve needs (generated from its actions' verb lists).
    Rbac(rbac::RbacArgs),
    /// Print or write the CustomResourceDefinitions of Salve's kinds.
    Crds(crds::CrdsArgs),
    /// Run the engine: evaluate the triggers, open incidents and remediate them through the
    /// Kubernetes API under the autonomy policy, journaling every decision; hot-reload the
    /// playbooks and the policy (on every change, and on SIGHUP); stop gracefully on SIGTERM
    /// or Ctrl-C.
    Run(Box<run::RunArgs>),
    /// Run a custom WASM step on an incident, or inspect what a module asks of the host.
    #[command(subcommand)]
    Step(step::StepCommand),
    /// Watch Salve heal a memory leak, end to end, with no cluster: a real Prometheus, an
    /// in-process sandbox Kubernetes API and the bundled playbooks; prints the timeline.
    Demo(demo::DemoArgs),
    /// Load playbooks and policies, then hot-reload them on every change (and on SIGHUP) until
    /// SIGTERM or Ctrl-C.
    Watch {
        /// Files or directories to load and watch.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Wait this many milliseconds after the last change before reloading.
        #[arg(long, default_value_t = 50)]
        debounce_ms: u64,
        /// Also evaluate the PromQL-based triggers against this Prometheus and log every signal
        /// and incident change (nothing is acted on yet).
        #[arg(long)]
        prometheus: Option<String>,
        /// Listen on this address for Alertmanager's webhook
        /// (`POST /api/v1/alerts/alertmanager`), feeding `alert` triggers.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Record every signal and incident in this journal (SQLite; created when missing).
        #[arg(long, env = "SALVE_JOURNAL")]
        journal: Option<PathBuf>,
        /// Require `Authorization: Bearer <token>` on the webhook, the token read from this
        /// file (give Alertmanager the same file as `authorization: {credentials_file: ...}`).
        #[arg(long, requires = "listen")]
        webhook_token_file: Option<PathBuf>,
    },
}

/// Where `incidents`, `approvals`, `approve` and `reject` read and answer: the engine's
/// journal, or a running Salve's API (exactly one).
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoint {
    /// The engine's journal (default: `$SALVE_JOURNAL`).
    #[arg(long)]
    journal: Option<PathBuf>,
    /// A running Salve's API, such as `http://salve.salve-system:9464`, instead of a journal
    /// (default: `$SALVE_SERVER`, which wins over `$SALVE_JOURNAL`).
    #[arg(long, conflicts_with = "journal")]
    server: Option<String>,
}

/// Who answers an approval request: a name for the journal, or a token for the API.
#[derive(Debug, Clone, clap::Args)]
pub struct Answerer {
    /// Who answers, recorded with the answer (default: `$USER`). With `--server`, the name
    /// the server's token file gives the token is recorded instead.
    #[arg(long, conflicts_with = "server")]
    by: Option<String>,
    /// With a server: the file holding the bearer token (its first word; the rest of the
    /// line, a name, is ignored).
    #[arg(long, conflicts_with = "journal")]
    token_file: Option<PathBuf>,
}

/// What [`Endpoint`] picked.
enum Place {
    Journal(PathBuf),
    Server(String),
}

impl Endpoint {
    /// The flag given, else `SALVE_SERVER`, else `SALVE_JOURNAL` (read here rather than by clap,
    /// so that a journal in the environment does not conflict with `--server`); `None` when
    /// there is none.
    fn pick(self) -> Option<Place> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        match (self.server, self.journal) {
            (Some(url), _) => Some(Place::Server(url)),
            (None, Some(journal)) => Some(Place::Journal(journal)),
            (None, None) => match (env("SALVE_SERVER"), env("SALVE_JOURNAL")) {
                (Some(url), _) => Some(Place::Server(url.to_string_lossy().into_owned())),
                (None, Some(journal)) => Some(Place::Journal(journal.into())),
                (None, None) => None,
            },
        }
    }
}

/// Says that `--journal` or `--server` is needed; the exit code of a usage error.
fn nowhere(command: &str) -> Result<ExitCode> {
    eprintln!(
        "salve {command}: give --journal FILE (or SALVE_JOURNAL) or --server URL (or SALVE_SERVER)"
    );
    Ok(ExitCode::from(2))
}

/// Who answers from the journal: `--by`, else `$USER`, else `unknown`.
fn answerer(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// How `validate` prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people: one `file:line:col: error: ...` per problem and a summary.
    Human,
    /// For machines: one JSON object.
    Json,
}

/// How `replay` prints events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// One JSON object per line: `time`, `event`, `playbook`, `labels`, `values`.
    Json,
    /// Aligned columns for people.
    Table,
}

fn parse_time(text: &str) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return DateTime::from_timestamp(seconds, 0)
            .ok_or_else(|| format!("`{text}` is out of range"));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{text}` is not RFC 3339 or unix seconds: {e}"))
}

fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    crate::check::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("`{text}` is not a positive duration such as 30s or 5m"))
}

/// The kinds `salve schema` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// `kind: Playbook`.
    Playbook,
    /// `kind: AutonomyPolicy`.
    AutonomyPolicy,
}

/// Why a command failed (beyond finding problems in the files it checked).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing output or a schema file failed.
    #[error("cannot write {path}")]
    Write {
        /// What was being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The watcher could not start.
    #[error(transparent)]
    Watch(#[from] watch::Error),
    /// The async runtime could not start.
    #[error("cannot start the runtime")]
    Runtime(#[source] io::Error),
    /// The Prometheus URL is not usable.
    #[error(transparent)]
    Evaluator(#[from] crate::signal::evaluate::Error),
    /// The journal cannot be opened or written.
    #[error(transparent)]
    Journal(#[from] crate::journal::Error),
    /// An approval could not be read or answered.
    #[error("{0}")]
    Approval(String),
    /// Salve itself is broken (a bug to report).
    #[error("internal error (please report it): {0}")]
    Internal(String),
    /// The webhook's token file cannot be used.
    #[error("cannot use {path} as the webhook token: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The webhook listener could not bind its address.
    #[error("cannot listen on {address}")]
    Listen {
        /// The address.
        address: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Cli {
    /// The log filter when `SALVE_LOG` is not set: `info`, but for `salve demo`, whose output
    /// is the timeline (its warnings still show).
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => "warn",
            _ => "info",
        }
    }
}

/// Runs a parsed command line; the exit code is 1 when the files checked have errors.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate {
            paths,
            format,
            verbose,
        } => validate(&paths, format, verbose),
        Command::Schema { kind, out } => schema(kind, out.as_deref()),
        Command::Watch {
            paths,
            debounce_ms,
            prometheus,
            listen,
            journal,
            webhook_token_file,
        } => {
            let webhook = match listen {
                Some(address) => Some(Webhook {
                    address,
                    token: webhook_token_file.as_deref().map(read_token).transpose()?,
                }),
                None => None,
            };
            let journal = journal.as_deref().map(Journal::open).transpose()?;
            watch_paths(paths, debounce_ms, prometheus.as_deref(), webhook, journal)
        }
        Command::Test { paths, prometheus } => test(&paths, prometheus.as_deref()),
        Command::Run(args) => run::run(*args),
        Command::Rbac(args) => rbac::run(args),
        Command::Crds(args) => crds::run(args),
        Command::Explain(args) => explain::run(args),
        Command::AdviseEval(args) => advise_eval::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Step(command) => step::run(command),
        Command::Replay {
            playbooks,
            prometheus,
            from,
            to,
            step,
            timeout,
            format,
            journal,
        } => {
            let journal = journal.as_deref().map(Journal::open).transpose()?;
            replay(
                &playbooks,
                &prometheus,
                (from, to, step),
                timeout,
                (format, journal.as_ref()),
            )
        }
        Command::Approvals { from } => match from.pick() {
            Some(Place::Journal(journal)) => approvals::list(Journal::open(&journal)?),
            Some(Place::Server(url)) => approvals::list_remote(&url),
            None => nowhere("approvals"),
        },
        Command::Approve { id, from, who } => answer(&id, from, who, Answer::Approve, "approve"),
        Command::Reject {
            id,
            from,
            who,
            reason,
        } => answer(&id, from, who, Answer::Reject(reason), "reject"),
        Command::Trigger(args) => trigger::run(args),
        Command::Incidents { from, id } => match from.pick() {
            Some(Place::Journal(journal)) => {
                incidents::run(&Journal::open(&journal)?, id.as_deref())
            }
            Some(Place::Server(url)) => incidents::run_remote(&url, id.as_deref()),
            None => nowhere("incidents"),
        },
    }
}

/// Answers approval request `id` as `who`, through the journal or the API `from` names.
fn answer(
    id: &str,
    from: Endpoint,
    who: Answerer,
    answer: Answer,
    command: &str,
) -> Result<ExitCode> {
    match from.pick() {
        Some(Place::Journal(journal)) => {
            approvals::answer(Journal::open(&journal)?, id, answer, &answerer(who.by))
        }
        Some(Place::Server(url)) => {
            let reason = match answer {
                Answer::Approve => None,
                Answer::Reject(reason) => Some(reason),
            };
            approvals::answer_remote(&url, who.token_file.as_deref(), id, reason)
        }
        None => nowhere(command),
    }
}

fn stdout_error(source: io::Error) -> Error {
    Error::Write {
        path: PathBuf::from("<stdout>"),
        source,
    }
}

fn validate(paths: &[PathBuf], format: OutputFormat, verbose: bool) -> Result<ExitCode> {
    let loaded = load_paths(paths);
    let mut out = io::stdout().lock();
    match format {
        OutputFormat::Human => print_human(&mut out, &loaded, verbose).map_err(stdout_error)?,
        OutputFormat::Json => {
            let report = json_report(&loaded);
            serde_json::to_writer_pretty(&mut out, &report).map_err(|e| stdout_error(e.into()))?;
            writeln!(out).map_err(stdout_error)?;
        }
    }
    Ok(if loaded.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_human(out: &mut impl Write, loaded: &Loaded, verbose: bool) -> io::Result<()> {
    for diagnostic in &loaded.diagnostics {
        writeln!(out, "{diagnostic}")?;
    }
    if verbose {
        for playbook in &loaded.playbooks {
            describe_playbook(out, playbook)?;
        }
        for policy in &loaded.policies {
            writeln!(
                out,
                "policy {}: ceiling {}, dry-run {}, {} override(s), {} freeze window(s), approval timeout {:?}",
                policy.name,
                policy.max_autonomous_risk,
                if policy.dry_run { "on" } else { "off" },
                policy.overrides.len(),
                policy.freeze.len(),
                policy.approval_timeout
            )?;
        }
    }
    let errors = loaded.error_count();
    let warnings = loaded.diagnostics.len() - errors;
    writeln!(
        out,
        "{}: {} file(s), {} document(s): {} playbook(s), {} policy(ies) valid; {errors} error(s), {warnings} warning(s)",
        if errors == 0 { "ok" } else { "FAILED" },
        loaded.files,
        loaded.documents,
        loaded.playbooks.len(),
        loaded.policies.len(),
    )
}

fn describe_playbook(out: &mut impl Write, playbook: &Playbook) -> io::Result<()> {
    writeln!(
        out,
        "playbook {} ({}): trigger {}, target {}, {} step(s) up to risk {}",
        playbook.name,
        playbook.source.file.display(),
        playbook.trigger.kind.name(),
        playbook.target.kind,
        playbook.steps.len(),
        playbook.max_step_risk(),
    )?;
    if let Some(queries) = crate::signal::for_trigger(&playbook.trigger) {
        writeln!(
            out,
            "  condition ({}): {}",
            queries.value, queries.condition
        )?;
        for (name, expr) in &queries.values {
            writeln!(out, "  value {name}: {expr}")?;
        }
        for input in &queries.inputs {
            writeln!(
                out,
                "  input {} (stale after {}s): {}",
                input.name,
                queries.stale_after.as_secs(),
                input.selector
            )?;
        }
    }
    if let TriggerKind::Schedule { schedule, .. } = &playbook.trigger.kind {
        let next: Vec<String> = schedule
            .upcoming(chrono::Utc)
            .take(3)
            .map(|t| t.to_rfc3339())
            .collect();
        writeln!(out, "  next fires (UTC): {}", next.join(", "))?;
    }
    for step in &playbook.steps {
        let run = match &step.run {
            StepRun::Action(action) => action.to_string(),
            StepRun::Wasm { module, .. } => format!("wasm {}", module.display()),
        };
        let when = step
            .when
            .as_ref()
            .map(|w| format!(" when {}", w.source()))
            .unwrap_or_default();
        writeln!(out, "  step {}: {run}, risk {}{when}", step.name, step.risk)?;
    }
    Ok(())
}

fn json_report(loaded: &Loaded) -> serde_json::Value {
    let errors = loaded.error_count();
    json!({
        "ok": errors == 0,
        "files": loaded.files,
        "documents": loaded.documents,
        "errors": errors,
        "warnings": loaded.diagnostics.iter().filter(|d| d.severity == Severity::Warning).count(),
        "playbooks": loaded.playbooks.iter().map(|p| json!({
            "name": p.name,
            "file": p.source.file,
            "document": p.source.document,
            "digest": p.digest,
            "trigger": p.trigger.kind.name(),
            "steps": p.steps.iter().map(|s| json!({"name": s.name, "risk": s.risk})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "policies": loaded.policies.iter().map(|p| json!({
            "name": p.name,
            "file": p.source.file,
            "digest": p.digest,
            "maxAutonomousRisk": p.max_autonomous_risk,
            "dryRun": p.dry_run,
        })).collect::<Vec<_>>(),
        "diagnostics": loaded.diagnostics,
    })
}

fn schema(kind: SchemaKind, out: Option<&Path>) -> Result<ExitCode> {
    let render = |kind: DocumentKind| {
        let mut text = serde_json::to_string_pretty(kind.schema()).unwrap_or_default();
        text.push('\n');
        text
    };
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| Error::Write {
                path: dir.to_path_buf(),
                source,
            })?;
            for kind in DocumentKind::ALL {
                let path = dir.join(kind.schema_file());
                std::fs::write(&path, render(kind))
                    .map_err(|source| Error::Write { path, source })?;
            }
        }
        None => {
            let kind = match kind {
                SchemaKind::Playbook => DocumentKind::Playbook,
                SchemaKind::AutonomyPolicy => DocumentKind::AutonomyPolicy,
            };
            io::stdout()
                .write_all(render(kind).as_bytes())
                .map_err(stdout_error)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where and how to serve Alertmanager's webhook.
struct Webhook {
    address: std::net::SocketAddr,
    token: Option<String>,
}

/// The bearer token in `path`, without surrounding whitespace.
fn read_token(path: &Path) -> Result<String> {
    let fail = |reason: String| Error::Token {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("the file is empty".into()));
    }
    Ok(token.to_string())
}

fn watch_paths(
    paths: Vec<PathBuf>,
    debounce_ms: u64,
    prometheus: Option<&str>,
    webhook: Option<Webhook>,
    journal: Option<Journal>,
) -> Result<ExitCode> {
    let prometheus = prometheus
        .map(|url| Evaluator::new(url, std::time::Duration::from_secs(10)))
        .transpose()?;
    let Some(reloader) = start_reloader(paths) else {
        return Ok(ExitCode::FAILURE);
    };
    {
        let set = reloader.active().load();
        tracing::info!(
            playbooks = set.playbooks().len(),
            policies = set.policies().len(),
            "playbook set loaded; watching for changes (Ctrl-C to stop)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(async move {
        let shutdown = run::Shutdown::listen();
        let reloader = Arc::new(reloader);
        let cancel = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let options = WatchOptions {
            debounce: std::time::Duration::from_millis(debounce_ms),
            reload_on_hangup: true,
            ..WatchOptions::default()
        };
        let alerts = match webhook {
            Some(webhook) => Alerts::Webhook(serve_webhook(webhook, cancel.clone()).await?),
            None => Alerts::None,
        };
        let mut tasks = Vec::new();
        if prometheus.is_some() || matches!(alerts, Alerts::Webhook(_)) {
            let (events_tx, events) = tokio::sync::mpsc::channel(256);
            let active = Arc::clone(reloader.active());
            let sources = Sources {
                prometheus,
                alerts,
                ..Sources::default()
            };
            tasks.push(tokio::spawn(crate::signal::live::run(
                Arc::clone(&active),
                sources,
                crate::signal::live::LiveOptions::default(),
                cancel.clone(),
                events_tx,
            )));
            let journal = journal.map(Arc::new);
            tasks.push(tokio::spawn(log_signals(active, events, journal)));
        }
        let task = tokio::spawn(watch::watch(reloader, options, cancel.clone(), tx));
        // Outcomes are logged by the watcher; drain them so the channel never fills.
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        shutdown.wait().await;
        tracing::info!("shutting down");
        cancel.cancel();
        let result = task.await;
        drain.abort();
        for task in tasks {
            let _ = task.await;
        }
        match result {
            Ok(result) => result.map(|()| ExitCode::SUCCESS).map_err(Error::from),
            Err(_) => Ok(ExitCode::FAILURE),
        }
    })
}

/// Loads `paths` for hot reload, logging warnings; `None` (with every problem printed) when
/// the set is invalid.
fn start_reloader(paths: Vec<PathBuf>) -> Option<Reloader> {
    match Reloader::from_paths(paths) {
        Ok((reloader, warnings)) => {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            Some(reloader)
        }
        Err(diagnostics) => {
            for diagnostic in diagnostics {
                eprintln!("{diagnostic}");
            }
            eprintln!("refusing to start: the playbook set is invalid");
            None
        }
    }
}

/// Serves Alertmanager's webhook until `cancel`; the store it fills.
async fn serve_webhook(webhook: Webhook, cancel: CancellationToken) -> Result<AlertStore> {
    let address = webhook.address;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| Error::Listen { address, source })?;
    let store = AlertStore::new();
    let app = match webhook.token {
        Some(token) => crate::alertmanager::routes_with_token(store.clone(), token),
        None => {
            tracing::warn!(
                "the webhook takes alerts from anyone who can reach it; \
                 set --webhook-token-file outside a trusted network"
            );
            crate::alertmanager::routes(store.clone())
        }
    };
    tracing::info!(%address, path = crate::alertmanager::WEBHOOK_PATH, "listening for Alertmanager's webhook");
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the webhook listener stopped");
        }
    });
    Ok(store)
}

/// Journals (when asked) and logs every signal event, and the incidents they open and resolve.
async fn log_signals(
    active: Arc<arc_swap::ArcSwap<crate::playbook::PlaybookSet>>,
    mut events: tokio::sync::mpsc::Receiver<PlaybookEvent>,
    journal: Option<Arc<Journal>>,
) {
    let mut incidents = Incidents::new();
    while let Some(e) = events.recv().await {
        let playbook = active.load().playbook(&e.playbook).cloned();
        let (change, records) = apply(&mut incidents, playbook.as_deref(), &e);
        // Written before anything is said or done about it.
        if let Some(journal) = &journal {
            let journal = Arc::clone(journal);
            let written = tokio::task::spawn_blocking(move || {
                records.iter().try_for_each(|r| journal.append(r).map(drop))
            })
            .await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "cannot write the journal"),
                Err(error) => tracing::error!(%error, "the journal writer stopped"),
            }
        }
        let event = e.event.transition.event();
        let labels = describe(&e.event.labels);
        match &e.event.transition {
            Transition::Inconclusive { reason } => {
                tracing::warn!(playbook = e.playbook, event, %labels, reason, "signal");
            }
            _ => {
                let values = format!("{:?}", e.event.values);
                tracing::info!(playbook = e.playbook, event, %labels, %values, "signal");
            }
        }
        if let Some(change) = change {
            tracing::info!(
                playbook = e.playbook,
                event = change.transition.event(),
                incident = change.incident.id,
                target = change.incident.target.as_deref().unwrap_or("-"),
                labels = %describe(&change.labels),
                "incident"
            );
        }
    }
}

/// Loads `paths`, or prints every diagnostic and returns `None` when the set has errors.
fn load_valid(paths: &[PathBuf]) -> Option<Loaded> {
    let loaded = load_paths(paths);
    if !loaded.has_errors() {
        return Some(loaded);
    }
    for diagnostic in &loaded.diagnostics {
        eprintln!("{diagnostic}");
    }
    None
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

fn replay(
    paths: &[PathBuf],
    url: &str,
    (from, to, step): (DateTime<Utc>, DateTime<Utc>, std::time::Duration),
    timeout: std::time::Duration,
    (format, journal): (ReplayFormat, Option<&Journal>),
) -> Result<ExitCode> {
    let Some(loaded) = load_valid(paths) else {
        return Ok(ExitCode::FAILURE);
    };
    let sources = Sources {
        prometheus: Some(Evaluator::new(url, timeout)?),
        alerts: Alerts::History,
        ..Sources::default()
    };
    let evaluation = Evaluation::new(
        sources,
        REPLAY_CONCURRENCY,
        loaded.playbooks.iter().cloned(),
    );
    let playbooks: std::collections::HashMap<&str, &Playbook> = loaded
        .playbooks
        .iter()
        .map(|p| (p.name.as_str(), p.as_ref()))
        .collect();
    let step = chrono::Duration::from_std(step).unwrap_or(chrono::Duration::MAX);
    let runtime = current_thread_runtime()?;
    let mut out = io::stdout().lock();
    if format == ReplayFormat::Table {
        writeln!(
            out,
            "{:<20}  {:<19}  {:<28}  {:<16}  LABELS / VALUES",
            "TIME", "EVENT", "PLAYBOOK", "INCIDENT"
        )
        .map_err(stdout_error)?;
    }
    let mut incidents = Incidents::new();
    let (mut steps, mut opened) = (0_u64, 0_u64);
    let mut at = from;
    while at <= to {
        for e in runtime.block_on(evaluation.step(at)) {
            let playbook = playbooks.get(e.playbook.as_str()).copied();
            let (change, records) = apply(&mut incidents, playbook, &e);
            if let Some(journal) = journal {
                for record in &records {
                    journal.append(record)?;
                }
            }
            let mut lines = vec![ReplayLine::signal(&e)];
            if let Some(change) = &change {
                opened += u64::from(change.transition == IncidentTransition::Opened);
                lines.push(ReplayLine::incident(change));
            }
            for line in lines {
                let text = match format {
                    ReplayFormat::Json => line.json().to_string(),
                    ReplayFormat::Table => line.row(),
                };
                writeln!(out, "{text}").map_err(stdout_error)?;
            }
        }
        steps += 1;
        let Some(next) = at.checked_add_signed(step) else {
            break;
        };
        at = next;
    }
    let (evaluations, inconclusive) = evaluation
        .triggers()
        .iter()
        .map(|t| t.tracker().counts())
        .fold((0, 0), |(e, i), c| (e + c.evaluations, i + c.inconclusive));
    eprintln!(
        "replay: {steps} step(s), {} trigger(s), {evaluations} evaluation(s) ({inconclusive} inconclusive), {opened} incident(s) opened, {} still open",
        evaluation.len(),
        incidents.open().count()
    );
    Ok(ExitCode::SUCCESS)
}

/// How many triggers a replay evaluates at once.
const REPLAY_CONCURRENCY: usize = 8;

/// One line of replay output: a signal event or the incident change it caused.
struct ReplayLine<'a> {
    at: DateTime<Utc>,
    event: &'static str,
    playbook: &'a str,
    labels: &'a crate::signal::state::LabelSet,
    values: &'a std::collections::BTreeMap<String, f64>,
    incident: Option<&'a Incident>,
    reason: Option<&'a str>,
}

impl<'a> ReplayLine<'a> {
    fn signal(e: &'a PlaybookEvent) -> Self {
        ReplayLine {
            at: e.event.at,
            event: e.event.transition.event(),
            playbook: &e.playbook,
            labels: &e.event.labels,
            values: &e.event.values,
            incident: None,
            reason: match &e.event.transition {
                Transition::Inconclusive { reason } => Some(reason),
                _ => None,
            },
        }
    }

    fn incident(change: &'a IncidentEvent) -> Self {
        ReplayLine {
            at: change.at,
            event: change.transition.event(),
            playbook: &change.incident.playbook,
            labels: &change.labels,
            values: &change.values,
            incident: Some(&change.incident),
            reason: None,
        }
    }

    fn json(&self) -> serde_json::Value {
        let mut line = json!({
            "time": self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "event": self.event,
            "playbook": self.playbook,
            "labels": self.labels,
            "values": crate::journal::finite(self.values),
        });
        if let Some(incident) = self.incident {
            line["incident"] = json!(incident.id);
            line["target"] = json!(incident.target);
        }
        if let Some(reason) = self.reason {
            line["reason"] = json!(reason);
        }
        line
    }

    fn row(&self) -> String {
        let mut detail = describe(self.labels);
        for (name, value) in self.values {
            let _ = write!(detail, " {name}={value:.4}");
        }
        if let Some(target) = self.incident.and_then(|i| i.target.as_deref()) {
            let _ = write!(detail, " target={target}");
        }
        if let Some(reason) = self.reason {
            let _ = write!(detail, " ({reason})");
        }
        format!(
            "{:<20}  {:<19}  {:<28}  {:<16}  {detail}",
            self.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.event,
            self.playbook,
            self.incident.map_or("", |i| i.id.as_str()),
        )
    }
}

fn test(paths: &[PathBuf], prometheus: Option<&str>) -> Result<ExitCode> {
    use crate::testing::{self, Backend, Verdict};
    let Some(loaded) = load_valid(paths) else {
        return Ok(ExitCode::FAILURE);
    };
    let backend = match prometheus {
        Some(url) => {
            // Fail on a bad URL now, not once per test.
            Evaluator::new(url, std::time::Duration::from_secs(10))?;
            Backend::remote(url)
        }
        None => match crate::prometheus::Harness::from_env() {
            Ok(harness) => Backend::Local(harness),
            Err(e) => {
                eprintln!("salve test: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
    };
    let runtime = current_thread_runtime()?;
    let mut out = io::stdout().lock();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for playbook in loaded.playbooks.iter().filter(|p| !p.tests.is_empty()) {
        writeln!(
            out,
            "{} ({})",
            playbook.name,
            playbook.source.file.display()
        )
        .map_err(stdout_error)?;
        for result in runtime.block_on(testing::run_playbook(playbook, &backend)) {
            let took = result.took.as_secs_f64();
            let line = match &result.verdict {
                Verdict::Passed => {
                    passed += 1;
                    format!("  ok    {} ({took:.2}s)", result.test)
                }
                Verdict::Failed(why) => {
                    failed += 1;
                    format!("  FAIL  {} ({took:.2}s)\n        {why}", result.test)
                }
                Verdict::Skipped(why) => {
                    skipped += 1;
                    format!("  skip  {}: {why}", result.test)
                }
            };
            writeln!(out, "{line}").map_err(stdout_error)?;
            if let Some(note) = &result.note {
                writeln!(out, "        note: {note}").map_err(stdout_error)?;
            }
        }
    }
    writeln!(
        out,
        "result: {passed} passed, {failed} failed, {skipped} skipped"
    )
    .map_err(stdout_error)?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
