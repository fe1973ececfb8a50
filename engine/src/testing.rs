//! `salve test`: runs the `tests:` blocks of playbooks against a real Prometheus, the way
//! promtool runs rule tests.
//!
//! Each test's series are backfilled into a fresh Prometheus (or, with [`Backend::Remote`],
//! written into a running one under a label of their own); the playbook's trigger is then
//! evaluated from the first sample to the expectation's time (default: the last sample) at the
//! trigger's interval, through the same evaluation code as the live engine and `salve replay`.
//! An incident is expected when a signal is firing at that time. `expect.steps` is checked by
//! planning that incident (see [`crate::plan`]) with the facts the test gives in place of the
//! Kubernetes API (`facts.owner`, `facts.target.revisionAge`, ...).
//!
//! An `alert` trigger is tested the way a replay evaluates it: through the `ALERTS` series
//! Prometheus keeps for its alerting rules, so a test writes
//! `ALERTS{alertname="...", alertstate="firing", ...}` series.
//!
//! An `event` trigger needs no Prometheus: the test's `events` (an Event at `at`, holding for
//! [`EVENT_WINDOW`](crate::signal::kube_event::EVENT_WINDOW) like a real one, or a state holding from `at` through `until`) fill an
//! [`EventStore`] that the evaluation reads, from a fixed start time ([`EVENTS_START`]) to the
//! expectation's time (default: the latest `at` or `until` of the events).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::incident::{Incidents, describe};
use crate::plan;
use crate::playbook::{Playbook, PlaybookTest, TriggerKind};
use crate::prometheus::{Harness, Scenario, remote_write};
use crate::signal::evaluate::Evaluator;
use crate::signal::evaluation::{Alerts, Evaluation, Sources};
use crate::signal::kube_event::{EventStore, Holds, Occurrence};
use crate::signal::state::{LabelSet, SignalEvent, Transition};

/// How one test ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every expectation held.
    Passed,
    /// An expectation did not hold.
    Failed(String),
    /// The test cannot run yet, and why.
    Skipped(String),
}

/// The result of one test.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The playbook.
    pub playbook: String,
    /// The test's name.
    pub test: String,
    /// How it ended.
    pub verdict: Verdict,
    /// How long it took, Prometheus included.
    pub took: Duration,
    /// What was not checked, when something was not.
    pub note: Option<String>,
}

/// Where tests find their Prometheus.
#[derive(Debug)]
pub enum Backend {
    /// A fresh Prometheus per test, backfilled with the test's series, with these binaries.
    Local(Harness),
    /// A running Prometheus that accepts remote write: each test's series are written with
    /// the label `salve_test="<run>-<n>"`, and every query is scoped to it.
    Remote {
        /// Its URL.
        url: String,
        /// What makes this run's labels unique.
        run: String,
        /// How many tests have used it so far.
        tests: std::sync::atomic::AtomicUsize,
    },
}

impl Backend {
    /// A running Prometheus at `url`, for a run told apart from others by the current time and
    /// process id.
    pub fn remote(url: &str) -> Self {
        let millis = Utc::now().timestamp_millis();
        Backend::Remote {
            url: url.to_string(),
            run: format!("{millis}-{}", std::process::id()),
            tests: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// The label that keeps the series of one test apart in a shared Prometheus.
pub const SCOPE_LABEL: &str = "salve_test";

/// Runs every test of `playbook` against `backend`.
pub async fn run_playbook(playbook: &Arc<Playbook>, backend: &Backend) -> Vec<TestResult> {
    let mut results = Vec::new();
    for test in &playbook.tests {
        let started = Instant::now();
        let (verdict, note) = run_test(playbook, test, backend).await;
        results.push(TestResult {
            playbook: playbook.name.clone(),
            test: test.name.clone(),
            verdict,
            took: started.elapsed(),
            note,
        });
    }
    results
}

async fn run_test(
    playbook: &Arc<Playbook>,
    test: &PlaybookTest,
    backend: &Backend,
) -> (Verdict, Option<String>) {
    let evaluated = match &playbook.trigger.kind {
        TriggerKind::Schedule { .. } => {
            return (
                Verdict::Skipped("schedule triggers do not read series".into()),
                None,
            );
        }
        TriggerKind::Event { .. } => evaluate_events(playbook, test).await,
        _ => evaluate(playbook, test, backend).await,
    };
    match evaluated {
        Ok((firing, end)) => judge(playbook, test, &firing, end),
        Err(why) => (Verdict::Failed(why), None),
    }
}

/// Evaluates the trigger over the test's series; the signals firing at the end (with the
/// end's time), or why the test could not run or conclude.
async fn evaluate(
    playbook: &Arc<Playbook>,
    test: &PlaybookTest,
    backend: &Backend,
) -> Result<(BTreeMap<LabelSet, SignalEvent>, DateTime<Utc>), String> {
    let scenario =
        Scenario::from_test(test).map_err(|e| format!("cannot build the scenario: {e}"))?;
    // A local Prometheus lives until the test ends.
    let mut server = None;
    let (evaluator, start, last) = match backend {
        Backend::Local(harness) => {
            let running = server.insert(
                harness
                    .start(&scenario)
                    .map_err(|e| format!("cannot start prometheus: {e}"))?,
            );
            let evaluator = Evaluator::new(running.url(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            (evaluator, running.start_time(), running.end_time())
        }
        Backend::Remote { url, run, tests } => {
            let n = tests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let scope = format!("{run}-{n}");
            let start = scenario.start(std::time::SystemTime::now());
            let placed = scenario
                .place(start)
                .map_err(|e| format!("cannot build the scenario: {e}"))?;
            let last = placed
                .iter()
                .filter_map(|s| s.points.last().map(|p| p.0))
                .max()
                .unwrap_or(start);
            remote_write::push(url, &placed, (SCOPE_LABEL, &scope), Duration::from_secs(30))
                .await?;
            let evaluator = Evaluator::new(url, Duration::from_secs(10))
                .map_err(|e| e.to_string())?
                .scoped(SCOPE_LABEL, &scope);
            (evaluator, start, last)
        }
    };
    let end = match test.at {
        Some(at) => start.saturating_add(i64::try_from(at.as_secs()).unwrap_or(i64::MAX)),
        None => last,
    };
    let sources = Sources {
        prometheus: Some(evaluator),
        alerts: Alerts::History,
        events: None,
    };
    let evaluated = step_through(playbook, sources, start, end).await;
    drop(server);
    evaluated
}

/// When the evaluation of an event test starts (2026-01-01T00:00:00Z): a fixed time, so that
/// nothing in a test depends on the clock.
pub const EVENTS_START: i64 = 1_767_225_600;

/// Evaluates an `event` trigger over the test's events; as [`evaluate`].
async fn evaluate_events(
    playbook: &Arc<Playbook>,
    test: &PlaybookTest,
) -> Result<(BTreeMap<LabelSet, SignalEvent>, DateTime<Utc>), String> {
    let start = DateTime::<Utc>::from_timestamp(EVENTS_START, 0)
        .ok_or_else(|| "the start time is out of range".to_string())?;
    let offset = |after: Duration| {
        chrono::Duration::from_std(after)
            .ok()
            .and_then(|after| start.checked_add_signed(after))
            .ok_or_else(|| format!("{}s after the start is out of range", after.as_secs()))
    };
    let mut occurrences = Vec::new();
    let mut last = start;
    for event in &test.events {
        let from = offset(event.at)?;
        let mut occurrence = Occurrence::event(
            event.kind.as_str(),
            event.namespace.as_deref(),
            &event.name,
            &event.reason,
            from,
        );
        occurrence.container = event.container.clone();
        last = last.max(from);
        if let Some(until) = event.until {
            let until = offset(until)?;
            occurrence.holds = Holds::Between { from, until };
            last = last.max(until);
        }
        occurrences.push(occurrence);
    }
    let end = match test.at {
        Some(at) => offset(at)?,
        None => last,
    };
    let sources = Sources {
        events: Some(EventStore::recorded(occurrences)),
        ..Sources::default()
    };
    step_through(playbook, sources, start.timestamp(), end.timestamp()).await
}

/// Evaluates the trigger of `playbook` from `start` through `end` (Unix seconds) at its
/// interval; the signals firing at the end (with the last evaluation's time), or why the end
/// was inconclusive.
async fn step_through(
    playbook: &Arc<Playbook>,
    sources: Sources,
    start: i64,
    end: i64,
) -> Result<(BTreeMap<LabelSet, SignalEvent>, DateTime<Utc>), String> {
    let interval = i64::try_from(playbook.trigger.interval.as_secs())
        .unwrap_or(i64::MAX)
        .max(1);
    let evaluation = Evaluation::new(sources, 1, [Arc::clone(playbook)]);
    let mut firing: BTreeMap<LabelSet, SignalEvent> = BTreeMap::new();
    let mut last = DateTime::<Utc>::UNIX_EPOCH;
    let mut inconclusive = Vec::new();
    let mut at = start;
    while at <= end {
        let Some(when) = DateTime::<Utc>::from_timestamp(at, 0) else {
            break;
        };
        last = when;
        for e in evaluation.step(when).await {
            match &e.event.transition {
                Transition::Firing => {
                    firing.insert(e.event.labels.clone(), e.event);
                }
                Transition::Resolved => {
                    firing.remove(&e.event.labels);
                }
                Transition::Inconclusive { reason } if at == end => {
                    inconclusive.push(reason.clone());
                }
                _ => {}
            }
        }
        at += interval;
    }
    if inconclusive.is_empty() {
        Ok((firing, last))
    } else {
        Err(format!(
            "inconclusive at the end: {}",
            inconclusive.join("; ")
        ))
    }
}

fn judge(
    playbook: &Playbook,
    test: &PlaybookTest,
    firing: &BTreeMap<LabelSet, SignalEvent>,
    end: DateTime<Utc>,
) -> (Verdict, Option<String>) {
    let expect = &test.expect;
    match (expect.incident, firing.is_empty()) {
        (true, true) => {
            let why = "expected an incident; no signal is firing".to_string();
            return (Verdict::Failed(why), None);
        }
        (false, false) => {
            let found: Vec<String> = firing.keys().map(describe).collect();
            let why = format!("expected no incident; firing: {}", found.join(", "));
            return (Verdict::Failed(why), None);
        }
        _ => {}
    }
    let matching = firing.values().find(|e| {
        expect
            .labels
            .iter()
            .all(|(k, v)| e.labels.get(k) == Some(v))
    });
    let signal = match matching {
        Some(signal) => signal,
        None if !expect.incident => return (Verdict::Passed, None),
        None => {
            let found: Vec<String> = firing.keys().map(describe).collect();
            let why = format!(
                "no firing signal carries {}; firing: {}",
                describe(&expect.labels),
                found.join(", ")
            );
            return (Verdict::Failed(why), None);
        }
    };
    match &expect.steps {
        Some(steps) => (judge_steps(playbook, test, signal, end, steps), None),
        None => (Verdict::Passed, None),
    }
}

/// Plans the incident `signal` opens with the test's facts, and compares the steps that run.
fn judge_steps(
    playbook: &Playbook,
    test: &PlaybookTest,
    signal: &SignalEvent,
    end: DateTime<Utc>,
    expected: &[String],
) -> Verdict {
    let Some(opened) = Incidents::new().apply(playbook, signal) else {
        return Verdict::Failed("the firing signal opened no incident".into());
    };
    let mut facts = test.facts.clone();
    if let Some(owner) = &mut facts.owner
        && owner.namespace.is_none()
    {
        owner.namespace = signal.labels.get("namespace").cloned();
    }
    facts.target.deployed_at = test
        .revision_age
        .and_then(|age| chrono::Duration::from_std(age).ok())
        .and_then(|age| end.checked_sub_signed(age));
    let plan = match plan::plan(playbook, &opened.incident, signal, &facts, end) {
        Ok(plan) => plan,
        Err(e) => return Verdict::Failed(format!("no plan: {e}")),
    };
    let runs = plan.runs();
    if runs == expected {
        return Verdict::Passed;
    }
    let skipped: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|s| match &s.decision {
            plan::Decision::Skip(why) => Some(format!("{} ({why})", s.name)),
            plan::Decision::Deferred(_) => Some(format!("{} (decided when reached)", s.name)),
            plan::Decision::Run => None,
        })
        .collect();
    Verdict::Failed(format!(
        "expected steps [{}]; the plan runs [{}]{}",
        expected.join(", "),
        runs.join(", "),
        if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped: {}", skipped.join("; "))
        }
    ))
}
