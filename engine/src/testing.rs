//! `salve test`: runs the `tests:` blocks of playbooks against a real Prometheus, the way
//! promtool runs rule tests.
//!
//! Each test's series are backfilled into a fresh Prometheus (or, with [`Backend::Remote`],
//! written into a running one under a label of their own); the playbook's trigger is then
//! evaluated from the first sample to the expectation's time (default: the last sample) at the
//! trigger's interval, through the same evaluation code as the live engine and `salve replay`.
//! An incident is expected when a signal is firing at that time.
//!
//! `expect.steps` is checked by planning that incident (see [`crate::plan`]) with the facts the
//! test gives in place of the Kubernetes API (`facts.owner`, `facts.target.revisionAge`, ...),
//! then evaluating each WASM step that runs, in order, as a remediation would
//! ([`crate::executor::wasm`]: the same input, grants and limits): told the firing signal, the
//! plan's target with the test's facts, its config, and the outputs of the WASM steps evaluated
//! before it; its `query` answered by the test's own Prometheus (an `event` test has none: a
//! `query` fails), its `now` (and the revision age it sees) the time of the check, and its
//! `get` refused — a test has no Kubernetes API, and a step should handle that. The steps compared with `expect.steps` are then the action
//! steps by name; for a WASM step that proceeds, the actions it asks for, named as the executor
//! names them (`guard/1-rollout_undo`, `guard/2-notify`); nothing for one that skips; and
//! `guard/escalate` for one that escalates, where the list ends (the plan halts there). A WASM
//! step that cannot be evaluated (its module missing, a trap, a timeout, a refused answer)
//! fails the test with its error. A step whose `when` reads earlier steps' outputs is decided
//! when a remediation reaches it, so it is not among the steps compared. The WASM host is
//! started once per run, with the first WASM step evaluated.
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

use crate::clock::Clock;
use crate::executor;
use crate::incident::{Incidents, describe};
use crate::kube_fake::FakeApiServer;
use crate::plan::{self, Plan, TargetFacts};
use crate::playbook::{Playbook, PlaybookTest, TriggerKind};
use crate::prometheus::{Harness, RunningPrometheus, Scenario, remote_write};
use crate::signal::evaluate::Evaluator;
use crate::signal::evaluation::{Alerts, Evaluation, Sources};
use crate::signal::kube_event::{EventStore, Holds, Occurrence};
use crate::signal::state::{LabelSet, SignalEvent, Transition};
use crate::wasm::{Decision, LogLine, Services, SignalInput};

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
        Ok(evaluated) => judge(playbook, test, &evaluated).await,
        Err(why) => (Verdict::Failed(why), None),
    }
}

/// What evaluating a test's trigger leaves for judging it.
struct Evaluated {
    /// The signals firing at the end.
    firing: BTreeMap<LabelSet, SignalEvent>,
    /// The time of the last evaluation.
    end: DateTime<Utc>,
    /// The test's Prometheus, holding its series (none for `event` triggers): WASM steps
    /// `query` it.
    prometheus: Option<Evaluator>,
    /// The local Prometheus behind `prometheus`, kept running until the test is judged.
    _server: Option<RunningPrometheus>,
}

/// Evaluates the trigger over the test's series: what fired by the end, or why the test could
/// not run or conclude.
async fn evaluate(
    playbook: &Arc<Playbook>,
    test: &PlaybookTest,
    backend: &Backend,
) -> Result<Evaluated, String> {
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
        prometheus: Some(evaluator.clone()),
        alerts: Alerts::History,
        events: None,
    };
    let (firing, end) = step_through(playbook, sources, start, end).await?;
    Ok(Evaluated {
        firing,
        end,
        prometheus: Some(evaluator),
        _server: server,
    })
}

/// When the evaluation of an event test starts (2026-01-01T00:00:00Z): a fixed time, so that
/// nothing in a test depends on the clock.
pub const EVENTS_START: i64 = 1_767_225_600;

/// Evaluates an `event` trigger over the test's events; as [`evaluate`].
async fn evaluate_events(
    playbook: &Arc<Playbook>,
    test: &PlaybookTest,
) -> Result<Evaluated, String> {
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
    let (firing, end) = step_through(playbook, sources, start.timestamp(), end.timestamp()).await?;
    Ok(Evaluated {
        firing,
        end,
        prometheus: None,
        _server: None,
    })
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

/// Checks the test's expectation against what fired by the end.
async fn judge(
    playbook: &Playbook,
    test: &PlaybookTest,
    evaluated: &Evaluated,
) -> (Verdict, Option<String>) {
    let expect = &test.expect;
    let firing = &evaluated.firing;
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
        Some(steps) => (
            judge_steps(playbook, test, signal, evaluated, steps).await,
            None,
        ),
        None => (Verdict::Passed, None),
    }
}

/// An API server holding `objects` (none without objects), and a client of it.
async fn api_server(
    objects: &[serde_json::Value],
) -> Result<Option<(FakeApiServer, kube::Client)>, String> {
    if objects.is_empty() {
        return Ok(None);
    }
    let (server, client) = FakeApiServer::start()
        .await
        .map_err(|e| format!("cannot start the test's Kubernetes API: {e}"))?;
    for object in objects {
        server
            .insert(object)
            .map_err(|e| format!("the test's Kubernetes API refuses an object: {e}"))?;
    }
    Ok(Some((server, client)))
}

/// Plans the incident `signal` opens with the test's facts, evaluates the WASM steps that run,
/// and compares what runs with `expected`.
async fn judge_steps(
    playbook: &Playbook,
    test: &PlaybookTest,
    signal: &SignalEvent,
    evaluated: &Evaluated,
    expected: &[String],
) -> Verdict {
    let end = evaluated.end;
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
    // The test's objects, served by an in-process API server for the steps' `get`.
    let api = match api_server(&test.objects).await {
        Ok(api) => api,
        Err(why) => return Verdict::Failed(why),
    };
    let services = Services {
        prometheus: evaluated.prometheus.clone(),
        kube: api.as_ref().map(|(_, client)| client.clone()),
        clock: Clock::stopped(end),
    };
    let ran = match run_steps(&plan, signal, &facts.target, &services).await {
        Ok(ran) => ran,
        Err(why) => return Verdict::Failed(why),
    };
    if ran.runs == expected {
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
    let mut why = format!(
        "expected steps [{}]; the plan runs [{}]",
        expected.join(", "),
        ran.runs.join(", "),
    );
    for decided in &ran.decided {
        why.push_str("; ");
        why.push_str(decided);
    }
    if !skipped.is_empty() {
        why.push_str(&format!("; skipped: {}", skipped.join("; ")));
    }
    Verdict::Failed(why)
}

/// What the steps of a plan do in a test.
#[derive(Debug, Default, PartialEq)]
struct Ran {
    /// What runs, in order, as `expect.steps` names it: each action step by its name, the
    /// actions a WASM step asks for as the executor names them (`guard/1-rollout_undo`), and
    /// `{step}/escalate` for a WASM step that escalates (the plan halts there).
    runs: Vec<String>,
    /// What each WASM step decided, and why, with what it logged (for a failure message).
    decided: Vec<String>,
}

/// What a WASM step that escalates adds to the steps that run (the last of them: the plan
/// halts there).
const ESCALATE: &str = "escalate";

/// The steps of `plan` that run, each WASM step evaluated as a remediation would evaluate it
/// (see [`crate::executor::wasm`]): told `signal`, the plan's target with `facts`, and the
/// outputs of the WASM steps evaluated before it, served by `services`. A WASM step that
/// cannot be evaluated (a missing module, a trap, a timeout, a refused answer) is the error.
async fn run_steps(
    plan: &Plan,
    signal: &SignalEvent,
    facts: &TargetFacts,
    services: &Services,
) -> Result<Ran, String> {
    let mut ran = Ran::default();
    let mut outputs = Vec::new();
    for step in plan
        .steps
        .iter()
        .filter(|s| s.decision == plan::Decision::Run)
    {
        let Some(wasm) = &step.wasm else {
            ran.runs.push(step.name.clone());
            continue;
        };
        let failed = |why: String| format!("step {} failed: {why}", step.name);
        let host = crate::wasm::local_host().map_err(failed)?;
        let module = executor::wasm::load(host, wasm).map_err(failed)?;
        let evaluation = executor::wasm::Evaluation::new(
            plan,
            step,
            wasm,
            SignalInput::from(signal),
            facts,
            outputs.clone(),
        );
        let result = host
            .evaluate(
                &module,
                &evaluation.grants,
                &evaluation.limits,
                evaluation.input,
                services,
            )
            .await
            .map_err(|failure| failed(format!("{}{}", failure.error, logged(&failure.logs))))?;
        outputs.push((step.name.clone(), executor::wasm::step_output(&result)));
        ran.decided.push(format!(
            "{} decided {}{}",
            step.name,
            decided(&result.decision),
            logged(&result.logs)
        ));
        match &result.decision {
            Decision::Proceed(actions) => ran.runs.extend(
                executor::wasm::asked_steps(step, actions)
                    .into_iter()
                    .map(|s| s.name),
            ),
            Decision::Skip(_) => {}
            Decision::Escalate(_) => {
                ran.runs.push(format!("{}/{ESCALATE}", step.name));
                break;
            }
        }
    }
    Ok(ran)
}

/// `proceed: rollout_undo (medium)`, `skip: <reason>`, `escalate: <reason>`.
fn decided(decision: &Decision) -> String {
    let name = decision.name();
    match decision {
        Decision::Proceed(actions) if actions.is_empty() => format!("{name}: no actions"),
        Decision::Proceed(actions) => {
            let asked: Vec<String> = actions
                .iter()
                .map(|a| format!("{} ({})", a.action, a.risk))
                .collect();
            format!("{name}: {}", asked.join(", "))
        }
        Decision::Skip(reason) | Decision::Escalate(reason) => format!("{name}: {reason}"),
    }
}

/// The most log lines of a step a failure message shows.
const MAX_LOGGED: usize = 10;

/// ` (logged: info: ...; warn: ...)`, or nothing when the step logged nothing.
fn logged(logs: &[LogLine]) -> String {
    if logs.is_empty() {
        return String::new();
    }
    let mut lines: Vec<String> = logs
        .iter()
        .take(MAX_LOGGED)
        .map(|l| format!("{}: {}", l.level, l.message))
        .collect();
    if logs.len() > MAX_LOGGED {
        lines.push(format!("{} more", logs.len() - MAX_LOGGED));
    }
    format!(" (logged: {})", lines.join("; "))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::action::Action;
    use crate::plan::{ObjectRef, PlannedStep, PlannedWasm};
    use crate::risk::Risk;
    use crate::signal::state::Transition;

    #[test]
    fn a_stopped_clock_reads_its_time() {
        let at = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).expect("time");
        let clock = Clock::stopped(at);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.now(), at);
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/wasm")
            .join(name)
    }

    fn step(name: &str, module: Option<PathBuf>) -> PlannedStep {
        PlannedStep {
            name: name.into(),
            action: module.is_none().then_some(Action::CaptureLogs),
            wasm: module.map(|module| PlannedWasm {
                module,
                digest: String::new(),
                bytes: None,
                config: serde_json::Value::Null,
                grants: Vec::new(),
                allowed_actions: Vec::new(),
                read: None,
            }),
            risk: Risk::Low,
            params: Default::default(),
            timeout: Duration::from_secs(1),
            decision: plan::Decision::Run,
        }
    }

    fn plan(steps: Vec<PlannedStep>) -> Plan {
        Plan {
            incident: "inc-1".into(),
            playbook: "p".into(),
            target: ObjectRef {
                kind: "Deployment".into(),
                name: "api".into(),
                namespace: Some("prod".into()),
            },
            steps,
            verify: None,
            rollback: Vec::new(),
        }
    }

    fn signal() -> SignalEvent {
        SignalEvent {
            labels: LabelSet::from([("namespace".to_string(), "prod".to_string())]),
            transition: Transition::Firing,
            value: Some(1.0),
            values: BTreeMap::new(),
            active_at: None,
            at: Utc::now(),
        }
    }

    async fn ran(steps: Vec<PlannedStep>) -> Result<Ran, String> {
        run_steps(
            &plan(steps),
            &signal(),
            &TargetFacts::default(),
            &Services::default(),
        )
        .await
    }

    #[tokio::test]
    async fn a_wasm_step_that_skips_runs_nothing_and_says_why() {
        let ran = ran(vec![
            step("capture-logs", None),
            step("guard", Some(fixture("skip.wat"))),
            step("tell", None),
        ])
        .await
        .expect("evaluated");
        assert_eq!(ran.runs, ["capture-logs", "tell"]);
        assert_eq!(ran.decided, ["guard decided skip: nothing to do"]);
    }

    #[tokio::test]
    async fn a_missing_module_fails_with_its_path() {
        let why = ran(vec![step("guard", Some(fixture("missing.wasm")))])
            .await
            .expect_err("a missing module fails");
        assert!(why.starts_with("step guard failed: cannot read"), "{why}");
        assert!(why.contains("missing.wasm"), "{why}");
    }

    /// The skip fixture with `from` replaced by `to`, written as `name` into `dir`.
    fn changed_fixture(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
        let wat = std::fs::read_to_string(fixture("skip.wat")).expect("read the fixture");
        assert!(wat.contains(from), "the fixture changed shape");
        let path = dir.join(name);
        std::fs::write(&path, wat.replace(from, to)).expect("write");
        path
    }

    #[tokio::test]
    async fn a_trapping_module_fails_the_test_with_the_trap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trapping = changed_fixture(
            dir.path(),
            "trap.wat",
            "(result i32)\n      \n      (i32.const 0))",
            "(result i32)\n      unreachable)",
        );
        let why = ran(vec![step("guard", Some(trapping))])
            .await
            .expect_err("a trap fails");
        assert!(
            why.starts_with("step guard failed: the step trapped"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn an_escalation_ends_the_steps_that_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The answer's decision is case 2 of the variant: escalate, with the same reason.
        let escalating = changed_fixture(
            dir.path(),
            "escalate.wat",
            r#""\00\00\00\00\01"#,
            r#""\00\00\00\00\02"#,
        );
        let ran = ran(vec![
            step("capture-logs", None),
            step("guard", Some(escalating)),
            step("tell", None),
            // Never evaluated: the plan halted before it.
            step("later", Some(fixture("missing.wasm"))),
        ])
        .await
        .expect("evaluated");
        assert_eq!(ran.runs, ["capture-logs", "guard/escalate"]);
        assert_eq!(ran.decided, ["guard decided escalate: nothing to do"]);
    }
}
