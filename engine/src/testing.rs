//! `salve test`: runs the `tests:` blocks of playbooks against a real Prometheus, the way
//! promtool runs rule tests.
//!
//! Each test's series are backfilled into a fresh Prometheus; the playbook's trigger is then
//! evaluated from the first sample to the expectation's time (default: the last sample) at the
//! trigger's interval, through the same evaluation code as the live engine and `salve replay`.
//! An incident is expected when a signal is firing at that time.
//!
//! An `alert` trigger is tested the way a replay evaluates it: through the `ALERTS` series
//! Prometheus keeps for its alerting rules, so a test writes
//! `ALERTS{alertname="...", alertstate="firing", ...}` series.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::playbook::{Playbook, PlaybookTest, TriggerKind};
use crate::prometheus::{Harness, Scenario};
use crate::signal::evaluate::Evaluator;
use crate::signal::evaluation::{Evaluation, Sources};
use crate::signal::state::{LabelSet, Transition};

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

/// Runs every test of `playbook` with the binaries `harness` found.
pub async fn run_playbook(playbook: &Arc<Playbook>, harness: &Harness) -> Vec<TestResult> {
    let mut results = Vec::new();
    for test in &playbook.tests {
        let started = Instant::now();
        let (verdict, note) = run_test(playbook, test, harness).await;
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
    harness: &Harness,
) -> (Verdict, Option<String>) {
    let verdict = match &playbook.trigger.kind {
        TriggerKind::Event { .. } => {
            Some("event triggers need the Kubernetes watcher (not built yet)")
        }
        TriggerKind::Schedule { .. } => Some("schedule triggers do not read series"),
        _ => None,
    };
    if let Some(why) = verdict {
        return (Verdict::Skipped(why.into()), None);
    }
    match evaluate(playbook, test, harness).await {
        Ok(firing) => judge(test, &firing),
        Err(why) => (Verdict::Failed(why), None),
    }
}

/// Evaluates the trigger over the test's series; the signals firing at the end, or why the
/// test could not run or conclude.
async fn evaluate(
    playbook: &Arc<Playbook>,
    test: &PlaybookTest,
    harness: &Harness,
) -> Result<BTreeMap<LabelSet, f64>, String> {
    let scenario =
        Scenario::from_test(test).map_err(|e| format!("cannot build the scenario: {e}"))?;
    let server = harness
        .start(&scenario)
        .map_err(|e| format!("cannot start prometheus: {e}"))?;
    let evaluator =
        Evaluator::new(server.url(), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let start = server.start_time();
    let end = match test.at {
        Some(at) => start.saturating_add(i64::try_from(at.as_secs()).unwrap_or(i64::MAX)),
        None => server.end_time(),
    };
    let interval = i64::try_from(playbook.trigger.interval.as_secs())
        .unwrap_or(i64::MAX)
        .max(1);
    let sources = Sources {
        prometheus: Some(evaluator),
        alerts: None,
    };
    let evaluation = Evaluation::new(sources, 1, [Arc::clone(playbook)]);
    let mut firing: BTreeMap<LabelSet, f64> = BTreeMap::new();
    let mut inconclusive = Vec::new();
    let mut at = start;
    while at <= end {
        let Some(when) = DateTime::<Utc>::from_timestamp(at, 0) else {
            break;
        };
        for e in evaluation.step(when).await {
            match e.event.transition {
                Transition::Firing => {
                    firing.insert(e.event.labels, e.event.value.unwrap_or(f64::NAN));
                }
                Transition::Resolved => {
                    firing.remove(&e.event.labels);
                }
                Transition::Inconclusive { reason } if at == end => inconclusive.push(reason),
                _ => {}
            }
        }
        at += interval;
    }
    drop(server);
    if inconclusive.is_empty() {
        Ok(firing)
    } else {
        Err(format!(
            "inconclusive at the end: {}",
            inconclusive.join("; ")
        ))
    }
}

fn judge(test: &PlaybookTest, firing: &BTreeMap<LabelSet, f64>) -> (Verdict, Option<String>) {
    let expect = &test.expect;
    let describe = |labels: &LabelSet| {
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{{{}}}", pairs.join(", "))
    };
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
    if !expect.labels.is_empty()
        && !firing
            .keys()
            .any(|labels| expect.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    {
        let found: Vec<String> = firing.keys().map(describe).collect();
        let why = format!(
            "no firing signal carries {}; firing: {}",
            describe(&expect.labels),
            found.join(", ")
        );
        return (Verdict::Failed(why), None);
    }
    // The planner that evaluates `when` against the target arrives with remediation; say so
    // rather than let a pass imply the steps were checked.
    let note = expect
        .steps
        .as_ref()
        .map(|_| "`expect.steps` is not checked yet: it needs the planner".to_string());
    (Verdict::Passed, note)
}
