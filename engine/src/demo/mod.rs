//! `salve demo`: the whole pipeline on a laptop, no cluster needed.
//!
//! A real Prometheus (Debian's package, as a remote-write receiver) gets the metrics of a
//! memory leak that began with a deploy 25 minutes ago; the in-process sandbox API server
//! (the same fake the tests use, which `kube::Client` talks to over HTTP) holds that Deployment
//! with its two ReplicaSet revisions; and the engine runs the bundled playbooks over both —
//! the same evaluation, incidents, executor and journal as `salve run` — printing the
//! incident's timeline as it happens and its MTTD/MTTR at the end.
//!
//! Time runs faster than the wall clock ([`Clock::scaled`], 30× by default), so the 2-minute
//! `for` and the verify window pass in seconds; the metrics are written as the simulated time
//! passes, and they follow what Salve does: after the rollback the leak stops.
//!
//! The sandbox is the demo's own: steps run for real against it (not as dry runs), under the
//! shipped default policy without its freeze windows, and notifications are printed instead of
//! sent.

mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinSet;

use crate::app;
use crate::clock::Clock;
use crate::executor::{Executor, Finish, Settings};
use crate::gate::Gate;
use crate::incident::{IncidentTransition, Incidents};
use crate::journal::{Entry, Journal, Kind};
use crate::kube_fake::FakeApiServer;
use crate::playbook::load::load_paths;
use crate::policy::Policy;
use crate::prometheus::Harness;
use crate::signal::evaluate::Evaluator;
use crate::signal::evaluation::{Evaluation, Sources};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The playbooks to load (the bundled ones).
    pub playbooks: Vec<PathBuf>,
    /// How many times faster than the wall clock the demo's time runs.
    pub speed: f64,
    /// Keep the journal here (otherwise in a temporary directory).
    pub journal: Option<PathBuf>,
    /// Give up after this much demo time.
    pub limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            playbooks: vec![PathBuf::from("playbooks")],
            speed: 30.0,
            journal: None,
            limit: Duration::from_secs(90 * 60),
        }
    }
}

/// What the demo measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// How the remediation ended.
    pub finish: Option<Finish>,
    /// From the root signal starting to hold to the incident opening (demo time).
    pub time_to_detect: Option<Duration>,
    /// From the root signal starting to hold to the incident resolving (demo time).
    pub time_to_recover: Option<Duration>,
    /// From the signal firing to the first step starting, in wall time.
    pub signal_to_first_action: Option<Duration>,
    /// The journal's entries of the incident.
    pub timeline: Vec<Entry>,
}

/// Runs the demo, printing the timeline to `out`.
pub async fn run(options: Options, out: &mut (impl Write + Send)) -> Result<Report, String> {
    let loaded = load_paths(&options.playbooks);
    if loaded.has_errors() || loaded.playbooks.is_empty() {
        let problems: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
        return Err(format!(
            "cannot load the bundled playbooks from {} (run the demo from the repository's \
             root, or pass --playbooks DIR){}{}",
            options
                .playbooks
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if problems.is_empty() { "" } else { ":\n" },
            problems.join("\n")
        ));
    }
    let prometheus = tokio::task::spawn_blocking(|| Harness::from_env()?.start_receiver())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start Prometheus: {e}"))?;
    let (fake, client) = FakeApiServer::start()
        .await
        .map_err(|e| format!("cannot start the sandbox API server: {e}"))?;
    // Demo time: an hour behind the wall clock, running faster, so every sample written is in
    // Prometheus's past.
    let wall = Utc::now();
    let clock = Clock::scaled(wall - TimeDelta::hours(1), options.speed);
    let start = clock.now();
    let pod = workload::seed(&fake, start - TimeDelta::minutes(25))?;
    let mut memory = workload::Memory::history(
        prometheus.url(),
        &pod,
        start - TimeDelta::minutes(45),
        start - TimeDelta::minutes(25),
        start,
    )
    .await?;

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = options
        .journal
        .clone()
        .unwrap_or_else(|| dir.path().join("journal.db"));
    let journal = Arc::new(Journal::open(&path).map_err(|e| e.to_string())?);
    let evaluator =
        Evaluator::new(prometheus.url(), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let executor = Executor::new(
        client,
        Arc::clone(&journal),
        Gate::new(policy()?),
        Some(evaluator.clone()),
        Settings {
            poll: Duration::from_secs(30),
            force_dry_run: false,
            clock,
            notify_url: Some(notifications().await?),
            wasm: crate::wasm::Host::new(crate::wasm::HostOptions::default()).ok(),
            advisor: crate::advisor::ask::Advisor::default(),
            ..Settings::default()
        },
    );
    let playbooks = loaded.playbooks.clone();
    let evaluation = Evaluation::new(
        Sources {
            prometheus: Some(evaluator),
            ..Sources::default()
        },
        8,
        playbooks.iter().cloned(),
    );

    let say = |out: &mut (dyn Write + Send), text: String| {
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    };
    say(
        out,
        format!(
            "salve demo: {} playbooks; Prometheus {} (real, remote-write fed); sandbox API {}\n\
             Deployment {}/{} runs {} (revision 2, rolled out 25 min ago; revision 1 ran {}).\n\
             Demo time runs {}x faster than the clock. Timeline:\n",
            playbooks.len(),
            prometheus.url(),
            fake.url(),
            workload::NAMESPACE,
            workload::DEPLOYMENT,
            workload::LEAKING,
            workload::GOOD,
            options.speed
        ),
    );

    let mut incidents = Incidents::new();
    let mut remediations: JoinSet<(String, Result<Finish, String>)> = JoinSet::new();
    let mut printed = 0;
    let mut incident = None;
    let mut finish = None;
    let mut resolved = false;
    let deadline = start + TimeDelta::from_std(options.limit).unwrap_or(TimeDelta::hours(2));
    loop {
        let at = clock.now();
        memory.scrape(prometheus.url(), &fake, at).await?;
        for event in evaluation.step(at).await {
            let playbook = playbooks.iter().find(|p| p.name == event.playbook);
            let (change, records) = app::apply(&mut incidents, playbook.map(AsRef::as_ref), &event);
            for record in &records {
                journal.append(record).map_err(|e| e.to_string())?;
            }
            let (Some(change), Some(playbook)) = (change, playbook) else {
                continue;
            };
            match change.transition {
                IncidentTransition::Opened if incident.is_none() => {
                    incident = Some(change.incident.id.clone());
                    let (executor, playbook, signal) =
                        (executor.clone(), Arc::clone(playbook), event.event.clone());
                    remediations.spawn(async move {
                        let id = change.incident.id.clone();
                        let finish = executor
                            .remediate(&playbook, &change.incident, &signal)
                            .await
                            .map_err(|e| e.to_string());
                        (id, finish)
                    });
                }
                IncidentTransition::Resolved if Some(&change.incident.id) == incident.as_ref() => {
                    resolved = true;
                }
                _ => {}
            }
        }
        while let Some(done) = remediations.try_join_next() {
            let (_, result) = done.map_err(|e| e.to_string())?;
            finish = Some(result?);
        }
        printed = print_new(&journal, incident.as_deref(), printed, out)?;
        if resolved && finish.is_some() {
            break;
        }
        if at > deadline {
            say(
                out,
                "the demo's time limit passed before the incident resolved".into(),
            );
            break;
        }
        clock
            .sleep(Duration::from_secs(workload::SCRAPE.unsigned_abs()))
            .await;
    }
    remediations.shutdown().await;
    let report = report(&journal, incident.as_deref(), finish, options.speed)?;
    let span = |d: Option<Duration>| d.map_or("-".into(), crate::check::format_duration);
    say(
        out,
        format!(
            "\noutcome: {}; MTTD {} (signal holding → incident), MTTR {} (signal holding → \
             resolved), signal → first action {:.0?} (wall clock)",
            report.finish.as_ref().map_or("none", Finish::name),
            span(report.time_to_detect),
            span(report.time_to_recover),
            report.signal_to_first_action.unwrap_or_default(),
        ),
    );
    if options.journal.is_some() {
        say(
            out,
            format!(
                "the journal is kept: salve incidents --journal {} {}",
                path.display(),
                incident.as_deref().unwrap_or_default()
            ),
        );
    }
    Ok(report)
}

/// A local webhook that takes the demo's notifications (they are journaled and shown in the
/// timeline; nothing leaves the machine). Returns its URL.
async fn notifications() -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen for the demo's notifications: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let app = axum::Router::new().route("/", axum::routing::post(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{address}/"))
}

/// The demo's policy: the shipped default, live in the sandbox and without freeze windows.
fn policy() -> Result<Arc<Policy>, String> {
    let mut loaded = crate::playbook::load::Loaded::default();
    crate::playbook::load::load_text(
        std::path::Path::new("policies/default.yaml"),
        app::DEFAULT_POLICY,
        &mut loaded,
    );
    let mut policy = loaded
        .policies
        .pop()
        .map(|p| p.as_ref().clone())
        .ok_or("the built-in default policy does not load")?;
    policy.dry_run = false;
    policy.freeze.clear();
    Ok(Arc::new(policy))
}

/// Prints the incident's entries after the `printed` first; returns how many are printed.
fn print_new(
    journal: &Journal,
    incident: Option<&str>,
    printed: usize,
    out: &mut (impl Write + ?Sized),
) -> Result<usize, String> {
    let Some(incident) = incident else {
        return Ok(printed);
    };
    let entries = journal.timeline(incident).map_err(|e| e.to_string())?;
    for entry in entries.iter().skip(printed) {
        let _ = writeln!(out, "{}", crate::cli::timeline_line(&entry.record));
    }
    let _ = out.flush();
    Ok(entries.len())
}

fn report(
    journal: &Journal,
    incident: Option<&str>,
    finish: Option<Finish>,
    speed: f64,
) -> Result<Report, String> {
    let summary = journal
        .incidents()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|i| Some(i.id.as_str()) == incident);
    let timeline = match incident {
        Some(id) => journal.timeline(id).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let first = |kind: Kind| -> Option<DateTime<Utc>> {
        timeline
            .iter()
            .find(|e| e.record.kind == kind)
            .map(|e| e.record.at)
    };
    let signal_to_first_action = match (first(Kind::IncidentOpened), first(Kind::StepStarted)) {
        (Some(signal), Some(action)) => (action - signal)
            .to_std()
            .ok()
            .and_then(|d| Duration::try_from_secs_f64(d.as_secs_f64() / speed).ok()),
        _ => None,
    };
    Ok(Report {
        finish,
        time_to_detect: summary.as_ref().and_then(|s| s.time_to_detect()),
        time_to_recover: summary.as_ref().and_then(|s| s.time_to_recover()),
        signal_to_first_action,
        timeline,
    })
}
