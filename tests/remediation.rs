//! Remediation end to end through the executor: real `kube::Client` against the in-process fake
//! API server, a real SQLite journal, and (for verify) a real Prometheus. What a user relies on:
//! a step above the ceiling never runs — rejected, unanswered, or across a restart; a failed
//! step or verify undoes what completed, in reverse order; the breaker stops a failing loop;
//! one target is never remediated twice at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use salve::approval::{Answer, Approvals};
use salve::executor::{Executor, Finish, Settings};
use salve::gate::Gate;
use salve::incident::{Incident, Incidents};
use salve::journal::{Journal, Kind};
use salve::kube_fake::FakeApiServer;
use salve::playbook::Playbook;
use salve::playbook::load::{Loaded, load_text};
use salve::policy::Policy;
use salve::prometheus::{self, RunningPrometheus, Scenario};
use salve::signal::evaluate::Evaluator;
use salve::signal::state::{LabelSet, SignalEvent, Transition};
use serde_json::{Value, json};

/// A policy: ceiling `medium`, live (not a dry run), a 1-second approval timeout, a breaker
/// that opens after two failures.
pub(crate) const POLICY: &str = "maxAutonomousRisk: medium\n  dryRun: false\n  approval: {timeout: 1s}\n  limits: {actionsPerHour: 100, concurrentIncidents: 5, circuitBreaker: {failures: 2, reset: 10m}}\n";

pub(crate) fn load(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_text(Path::new("test.yaml"), text, &mut loaded);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    loaded
}

pub(crate) fn policy(spec: &str) -> Arc<Policy> {
    let text = format!(
        "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {{name: test}}\nspec:\n  {spec}"
    );
    Arc::clone(&load(&text).policies[0])
}

/// A playbook acting on Deployment shop/api with `steps` (and `extra` spec lines); without a
/// `cooldown` in `extra`, none, so one test can remediate the same target several times.
pub(crate) fn playbook(steps: &str, extra: &str) -> Arc<Playbook> {
    Arc::clone(&load(&playbook_text(steps, extra)).playbooks[0])
}

/// The text of [`playbook`].
pub(crate) fn playbook_text(steps: &str, extra: &str) -> String {
    let cooldown = if extra.contains("cooldown:") {
        ""
    } else {
        "  cooldown: 0s\n"
    };
    let extra = format!("{cooldown}{extra}");
    format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: heal}}\nspec:\n  trigger:\n    promql: {{expr: 'vector(1)'}}\n  target: {{kind: Deployment, namespace: shop, name: api}}\n  steps:\n{steps}{extra}"
    )
}

pub(crate) struct Setup {
    pub(crate) fake: FakeApiServer,
    pub(crate) executor: Executor,
    pub(crate) journal: Arc<Journal>,
    _dir: tempfile::TempDir,
}

pub(crate) async fn setup(policy_spec: &str, prometheus: Option<&RunningPrometheus>) -> Setup {
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [{"name": "app", "image": "api:1"}]}},
        },
    }))
    .expect("seed the deployment");
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Arc::new(Journal::open(&dir.path().join("journal.db")).expect("journal"));
    let executor = executor(client, &journal, policy_spec, prometheus);
    Setup {
        fake,
        executor,
        journal,
        _dir: dir,
    }
}

impl Setup {
    /// Opens an incident of `playbook` for pod `pod` and remediates it.
    pub(crate) async fn remediate(&self, playbook: &Playbook, pod: &str) -> (Incident, Finish) {
        let (incident, signal) = opened(playbook, pod);
        let finish = self
            .executor
            .remediate(playbook, &incident, &signal)
            .await
            .expect("every decision journaled");
        (incident, finish)
    }

    /// Answers the first approval request that appears, as `ana` would.
    pub(crate) fn answer_when_asked(&self, answer: Answer) -> tokio::task::JoinHandle<()> {
        let approvals = Approvals::new(Arc::clone(&self.journal));
        tokio::spawn(async move {
            loop {
                if let Some(approval) = approvals.pending().expect("pending").pop() {
                    approvals
                        .answer(&approval.id, answer, "ana", Utc::now())
                        .expect("answered");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }
}

pub(crate) fn executor(
    client: kube::Client,
    journal: &Arc<Journal>,
    policy_spec: &str,
    prometheus: Option<&RunningPrometheus>,
) -> Executor {
    let prometheus = prometheus
        .map(|p| Evaluator::new(p.url(), Duration::from_secs(5)).expect("a Prometheus client"));
    let settings = Settings {
        poll: Duration::from_millis(100),
        force_dry_run: false,
        wasm: Some(wasm_host()),
        ..Settings::default()
    };
    Executor::new(
        client,
        Arc::clone(journal),
        Gate::new(policy(policy_spec)),
        prometheus,
        settings,
    )
}

/// One WASM host for the tests (its compiled modules are shared).
fn wasm_host() -> salve::wasm::Host {
    static HOST: std::sync::OnceLock<salve::wasm::Host> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        salve::wasm::Host::new(salve::wasm::HostOptions {
            pooling: false,
            ..salve::wasm::HostOptions::default()
        })
        .expect("a WASM host")
    })
    .clone()
}

/// An incident of `playbook` opened by a firing signal on pod `pod`.
pub(crate) fn opened(playbook: &Playbook, pod: &str) -> (Incident, SignalEvent) {
    opened_since(playbook, pod, Utc::now())
}

/// [`opened`], its signal holding since `active_at`.
pub(crate) fn opened_since(
    playbook: &Playbook,
    pod: &str,
    active_at: chrono::DateTime<Utc>,
) -> (Incident, SignalEvent) {
    let signal = SignalEvent {
        at: Utc::now(),
        labels: LabelSet::from([
            ("namespace".to_string(), "shop".to_string()),
            ("pod".to_string(), pod.to_string()),
        ]),
        transition: Transition::Firing,
        value: Some(1.0),
        values: Default::default(),
        active_at: Some(active_at),
    };
    let change = Incidents::new()
        .apply(playbook, &signal)
        .expect("the firing signal opens an incident");
    (change.incident, signal)
}

/// A scenario with one series: the checks here ask about the clock, not the data.
fn tiny() -> Scenario {
    Scenario::new(Duration::from_secs(60))
        .and_then(|s| s.series(r#"healthy{app="api"}"#, "1x10"))
        .expect("scenario")
}

pub(crate) fn replicas(fake: &FakeApiServer) -> i64 {
    deployment(fake)["spec"]["replicas"]
        .as_i64()
        .expect("replicas")
}

pub(crate) fn deployment(fake: &FakeApiServer) -> Value {
    fake.get("apps/v1", "Deployment", Some("shop"), "api")
        .expect("the deployment exists")
}

/// The journal's entries of `incident` as `kind step` strings, e.g. `step_succeeded scale-up`.
pub(crate) fn story(journal: &Journal, incident: &str) -> Vec<String> {
    journal
        .timeline(incident)
        .expect("timeline")
        .into_iter()
        .map(|e| {
            let step = e.record.detail["step"].as_str().unwrap_or_default();
            format!("{} {step}", e.record.kind.as_str())
                .trim_end()
                .to_string()
        })
        .collect()
}

pub(crate) fn writes(fake: &FakeApiServer) -> usize {
    fake.requests().iter().filter(|r| r.method != "GET").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_undoes_the_completed_steps_in_reverse_order() {
    let s = setup(POLICY, None).await;
    let playbook = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n    - {name: mark, action: annotate, risk: low, params: {annotations: {salve.dev/healing: 'yes'}}}\n    - {name: raise, action: patch_resources, risk: medium, params: {container: missing, memoryLimit: 1Gi}}\n",
        "",
    );
    let (incident, finish) = s.remediate(&playbook, "api-1").await;
    assert!(
        matches!(&finish, Finish::RolledBack(reason) if reason.contains("step raise failed")),
        "{finish:?}"
    );
    let story = story(&s.journal, &incident.id);
    let from = story
        .iter()
        .position(|e| e == "step_failed raise")
        .expect("the failure is journaled");
    assert_eq!(
        story[from..],
        [
            "step_failed raise",
            "rollback_started",
            "step_started undo-mark",
            "step_succeeded undo-mark",
            "step_started undo-scale-up",
            "step_succeeded undo-scale-up",
            "remediation_finished",
        ],
        "{story:#?}"
    );
    assert_eq!(replicas(&s.fake), 3, "scaled back");
    assert!(
        deployment(&s.fake)["metadata"]["annotations"]
            .get("salve.dev/healing")
            .is_none(),
        "the annotation it added is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verify_that_does_not_hold_rolls_back_and_one_that_holds_remediates() {
    let prometheus = prometheus::start(&tiny()).expect("prometheus");
    let s = setup(POLICY, Some(&prometheus)).await;
    let scale = "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n";
    let never = playbook(scale, "  verify: {promql: 'vector(1) < 0', within: 1s}\n");
    let (incident, finish) = s.remediate(&never, "api-1").await;
    assert!(
        matches!(&finish, Finish::RolledBack(reason) if reason.contains("verify failed")),
        "{finish:?}"
    );
    assert_eq!(replicas(&s.fake), 3, "scaled back after the failed verify");
    assert!(story(&s.journal, &incident.id).contains(&"verify_failed".to_string()));

    let holds = playbook(scale, "  verify: {promql: 'vector(1)', within: 5s}\n");
    let (_, finish) = s.remediate(&holds, "api-2").await;
    assert_eq!(finish, Finish::Remediated);
    assert_eq!(replicas(&s.fake), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_above_the_ceiling_never_runs_unanswered_or_rejected() {
    let s = setup(POLICY, None).await;
    let risky = playbook(
        "    - {name: drain, action: scale, risk: high, params: {replicas: 0}}\n",
        "",
    );
    // Nobody answers: rejected at the deadline.
    let before = writes(&s.fake);
    let (incident, finish) = s.remediate(&risky, "api-1").await;
    assert!(
        matches!(&finish, Finish::Halted(reason) if reason.contains("not approved")),
        "{finish:?}"
    );
    assert_eq!(
        writes(&s.fake),
        before,
        "nothing was written to the cluster"
    );
    assert!(story(&s.journal, &incident.id).contains(&"approval_expired".to_string()));

    // A person rejects it.
    let answer = s.answer_when_asked(Answer::Reject("not now".into()));
    let (_, finish) = s.remediate(&risky, "api-2").await;
    answer.await.expect("the answer was given");
    assert!(
        matches!(&finish, Finish::Halted(reason) if reason.contains("rejected by ana: not now")),
        "{finish:?}"
    );
    assert_eq!(writes(&s.fake), before, "still nothing written");
    assert_eq!(replicas(&s.fake), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_step_runs() {
    let s = setup(&POLICY.replace("timeout: 1s", "timeout: 30s"), None).await;
    let risky = playbook(
        "    - {name: drain, action: scale, risk: high, params: {replicas: 0}}\n",
        "",
    );
    let answer = s.answer_when_asked(Answer::Approve);
    let (_, finish) = s.remediate(&risky, "api-1").await;
    answer.await.expect("answered");
    assert_eq!(finish, Finish::Remediated);
    assert_eq!(replicas(&s.fake), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_while_waiting_for_approval_keeps_waiting_and_never_runs_the_step() {
    let s = setup(POLICY.replace("timeout: 1s", "timeout: 2s").as_str(), None).await;
    let risky = playbook(
        "    - {name: drain, action: scale, risk: high, params: {replicas: 0}}\n",
        "",
    );
    let (incident, signal) = opened(&risky, "api-1");
    let first = s.executor.clone();
    let (p, i, sg) = (Arc::clone(&risky), incident.clone(), signal.clone());
    let waiting = tokio::spawn(async move { first.remediate(&p, &i, &sg).await });
    // The engine "dies" while the request waits.
    while Approvals::new(Arc::clone(&s.journal))
        .pending()
        .expect("pending")
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waiting.abort();
    let _ = waiting.await;
    let before = writes(&s.fake);

    let restarted = executor(s.fake.client().expect("client"), &s.journal, POLICY, None);
    let interrupted = restarted.interrupted().expect("read");
    assert_eq!(interrupted.len(), 1);
    assert!(interrupted[0].approval.is_some(), "{interrupted:?}");
    let outcomes = restarted.recover(|_| false).await.expect("recovered");
    assert_eq!(outcomes.len(), 1);
    assert!(
        matches!(&outcomes[0].1, Finish::Halted(reason) if reason.contains("not approved")),
        "{outcomes:?}"
    );
    assert_eq!(writes(&s.fake), before, "the step never ran");
    assert_eq!(replicas(&s.fake), 3);
    let story = story(&s.journal, &incident.id);
    assert_eq!(
        story
            .iter()
            .filter(|e| e.starts_with("approval_requested"))
            .count(),
        1,
        "the same request, not a new one: {story:#?}"
    );
    assert!(restarted.interrupted().expect("read").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_breaker_opens_after_consecutive_failures_and_stops_the_next_remediation() {
    let s = setup(POLICY, None).await;
    let failing = playbook(
        "    - {name: raise, action: patch_resources, risk: medium, params: {container: missing, memoryLimit: 1Gi}}\n",
        "",
    );
    for pod in ["api-1", "api-2"] {
        let (_, finish) = s.remediate(&failing, pod).await;
        assert!(matches!(finish, Finish::RolledBack(_)), "{finish:?}");
    }
    let scale = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n",
        "",
    );
    let (_, finish) = s.remediate(&scale, "api-3").await;
    assert!(
        matches!(&finish, Finish::Halted(reason) if reason.contains("circuit breaker")),
        "{finish:?}"
    );
    assert_eq!(replicas(&s.fake), 3, "the denied step did not run");
    // A restart does not close it: the journal holds the failures.
    let restarted = executor(s.fake.client().expect("client"), &s.journal, POLICY, None);
    restarted.prepare_recovery().expect("recovered");
    let (incident, signal) = opened(&scale, "api-4");
    let finish = restarted
        .remediate(&scale, &incident, &signal)
        .await
        .expect("journaled");
    assert!(
        matches!(&finish, Finish::Halted(reason) if reason.contains("circuit breaker")),
        "{finish:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_incidents_on_one_target_are_remediated_once() {
    let prometheus = prometheus::start(&tiny()).expect("prometheus");
    let s = setup(POLICY, Some(&prometheus)).await;
    // The second step holds a second from now: the remediation is still running while the
    // other incidents arrive.
    let soon = Utc::now().timestamp() + 1;
    let slow = playbook(
        &format!(
            "    - {{name: scale-up, action: scale, risk: low, params: {{delta: 1}}}}\n    - {{name: settle, action: wait_for, risk: none, params: {{promql: 'vector(time()) > {soon}', timeout: 10s}}}}\n"
        ),
        "",
    );
    let runs = (0..4).map(|n| {
        let executor = s.executor.clone();
        let playbook = Arc::clone(&slow);
        tokio::spawn(async move {
            // api-3's signal started first.
            let since = Utc::now() - chrono::TimeDelta::minutes(n);
            let (opened, signal) = opened_since(&playbook, &format!("api-{n}"), since);
            executor.remediate(&playbook, &opened, &signal).await
        })
    });
    let mut finishes = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        finishes.push(run.await.expect("ran").expect("journaled"));
    }
    let correlated = finishes
        .iter()
        .filter(|f| matches!(f, Finish::Correlated(_)))
        .count();
    assert_eq!(correlated, 3, "{finishes:?}");
    assert_eq!(replicas(&s.fake), 4, "scaled up by one, once");
    let correlated = s.journal.by_kind(Kind::Correlated).expect("read");
    assert_eq!(correlated.len(), 3);
    // Each names the earliest signal known then; the last, the earliest of all, whichever
    // incident claimed the target first.
    let last = correlated.last().expect("correlated");
    assert_eq!(
        last.record.detail["root"]["pod"], "api-3",
        "{correlated:#?}"
    );
}

/// `salve run` against the fake API server (through a kubeconfig) and a real Prometheus.
struct Daemon {
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
    prometheus: String,
}

impl Daemon {
    fn new(fake: &FakeApiServer, prometheus: &RunningPrometheus, playbook: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig)
            .expect("write the kubeconfig");
        std::fs::create_dir(dir.path().join("playbooks")).expect("mkdir");
        std::fs::write(dir.path().join("playbooks/heal.yaml"), playbook).expect("playbook");
        std::fs::write(
            dir.path().join("policy.yaml"),
            format!("apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {{name: live}}\nspec:\n  {POLICY}"),
        )
        .expect("policy");
        Daemon {
            kubeconfig,
            prometheus: prometheus.url().to_string(),
            dir,
        }
    }

    fn journal(&self) -> std::path::PathBuf {
        self.dir.path().join("journal.db")
    }

    fn start(&self) -> std::process::Child {
        self.start_with(&[])
    }

    fn start_with(&self, args: &[&str]) -> std::process::Child {
        let dir = self.dir.path();
        std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["run", "--playbooks"])
            .arg(dir.join("playbooks"))
            .arg("--policy")
            .arg(dir.join("policy.yaml"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--prometheus", &self.prometheus, "--poll-interval", "200ms"])
            .arg("--journal")
            .arg(self.journal())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start salve run")
    }

    /// Waits until the journal holds an entry for which `found` is true.
    async fn wait_for(&self, what: &str, found: impl Fn(&salve::journal::Entry) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            // Only once the engine made it: reading must not race its creation.
            if self.journal().exists()
                && let Ok(journal) = Journal::open(&self.journal())
                && journal.since(0).expect("read").iter().any(&found)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_killed_mid_remediation_rolls_it_back_on_restart_with_nothing_lost() {
    let prometheus = prometheus::start(&tiny()).expect("prometheus");
    let s = setup(POLICY, None).await;
    // Holds for the first few seconds only: the restarted engine sees no new incident.
    let until = Utc::now().timestamp() + 6;
    let playbook = format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: heal}}\nspec:\n  trigger:\n    promql: {{expr: 'vector(time()) < {until}'}}\n    interval: 1s\n  target: {{kind: Deployment, namespace: shop, name: api}}\n  steps:\n    - {{name: scale-up, action: scale, risk: low, params: {{replicas: 5}}}}\n    - {{name: settle, action: wait_for, risk: none, params: {{promql: 'vector(1) < 0', timeout: 1h}}}}\n"
    );
    let daemon = Daemon::new(&s.fake, &prometheus, &playbook);
    let mut engine = daemon.start();
    daemon
        .wait_for("the second step to start", |e| {
            e.record.kind == Kind::StepStarted && e.record.detail["step"] == "settle"
        })
        .await;
    assert_eq!(replicas(&s.fake), 5, "the first step ran");
    // SIGKILL: no destructor, no shutdown, nothing flushed on the way out.
    engine.kill().expect("kill the engine");
    engine.wait().expect("reap");
    let before: Vec<_> = Journal::open(&daemon.journal())
        .expect("journal")
        .since(0)
        .expect("read");

    // Past the trigger's window: only the recovery acts.
    let wait = (until + 1 - Utc::now().timestamp()).max(0);
    tokio::time::sleep(Duration::from_secs(wait.unsigned_abs())).await;
    let mut restarted = daemon.start();
    daemon
        .wait_for("the interrupted remediation to finish", |e| {
            e.record.kind == Kind::RemediationFinished
        })
        .await;
    restarted.kill().expect("stop");
    restarted.wait().expect("reap");

    let after = Journal::open(&daemon.journal())
        .expect("journal")
        .since(0)
        .expect("read");
    assert_eq!(
        after[..before.len()],
        before[..],
        "nothing written before the kill is lost"
    );
    let finish = after
        .iter()
        .find(|e| e.record.kind == Kind::RemediationFinished)
        .expect("finished");
    assert_eq!(finish.record.detail["outcome"], "rolled_back", "{finish:?}");
    assert!(
        finish.record.detail["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stopped mid-remediation during step settle")),
        "{finish:?}"
    );
    assert_eq!(replicas(&s.fake), 3, "the completed step was undone");
    let opened = after
        .iter()
        .filter(|e| e.record.kind == Kind::IncidentOpened)
        .count();
    assert_eq!(opened, 1, "the restart opened no second incident");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_playbook_that_asks_to_resume_goes_on_from_the_interrupted_step() {
    let prometheus = prometheus::start(&tiny()).expect("prometheus");
    let s = setup(POLICY, Some(&prometheus)).await;
    let soon = Utc::now().timestamp() + 2;
    let playbook = playbook(
        &format!(
            "    - {{name: scale-up, action: scale, risk: low, params: {{delta: 1}}}}\n    - {{name: settle, action: wait_for, risk: none, params: {{promql: 'vector(time()) > {soon}', timeout: 1m}}}}\n    - {{name: mark, action: annotate, risk: low, params: {{annotations: {{healed: 'yes'}}}}}}\n"
        ),
        "  onInterrupt: resume\n",
    );
    let (incident, signal) = opened(&playbook, "api-1");
    let first = s.executor.clone();
    let (p, i, sg) = (Arc::clone(&playbook), incident.clone(), signal.clone());
    let running = tokio::spawn(async move { first.remediate(&p, &i, &sg).await });
    while !story(&s.journal, &incident.id).contains(&"step_started settle".to_string()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();
    let _ = running.await;
    assert_eq!(replicas(&s.fake), 4);

    let restarted = executor(
        s.fake.client().expect("client"),
        &s.journal,
        POLICY,
        Some(&prometheus),
    );
    let outcomes = restarted
        .recover(|name| name == "heal")
        .await
        .expect("recovered");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].1, Finish::Remediated, "{outcomes:?}");
    assert_eq!(replicas(&s.fake), 4, "the completed step did not run again");
    assert_eq!(
        deployment(&s.fake)["metadata"]["annotations"]["healed"],
        "yes"
    );
    let story = story(&s.journal, &incident.id);
    assert_eq!(
        story
            .iter()
            .filter(|e| *e == "step_started scale-up")
            .count(),
        1,
        "{story:#?}"
    );
    assert_eq!(
        story.iter().filter(|e| *e == "step_started settle").count(),
        2,
        "the interrupted step ran again: {story:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_parks_a_remediation_that_outlives_the_grace_period() {
    let prometheus = prometheus::start(&tiny()).expect("prometheus");
    let s = setup(POLICY, None).await;
    let until = Utc::now().timestamp() + 60;
    let playbook = format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: heal}}\nspec:\n  trigger:\n    promql: {{expr: 'vector(time()) < {until}'}}\n    interval: 1s\n  target: {{kind: Deployment, namespace: shop, name: api}}\n  steps:\n    - {{name: scale-up, action: scale, risk: low, params: {{replicas: 5}}}}\n    - {{name: settle, action: wait_for, risk: none, params: {{promql: 'vector(1) < 0', timeout: 1h}}}}\n"
    );
    let daemon = Daemon::new(&s.fake, &prometheus, &playbook);
    let mut engine = daemon.start_with(&["--grace", "1s"]);
    daemon
        .wait_for("the second step to start", |e| {
            e.record.kind == Kind::StepStarted && e.record.detail["step"] == "settle"
        })
        .await;
    let asked = std::time::Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &engine.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let status = loop {
        if let Some(status) = engine.try_wait().expect("wait") {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(15),
            "salve run did not stop after its 1 s grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    // Parked, not finished: where it stood is in the journal for the next start.
    let journal = Arc::new(Journal::open(&daemon.journal()).expect("journal"));
    let in_flight = executor(s.fake.client().expect("client"), &journal, POLICY, None)
        .interrupted()
        .expect("read");
    assert_eq!(in_flight.len(), 1, "{in_flight:?}");
    assert_eq!(in_flight[0].step.as_deref(), Some("settle"));
    assert_eq!(
        replicas(&s.fake),
        5,
        "parked as it stood, not rolled back on the way out"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conditions_on_earlier_steps_are_decided_with_their_outputs() {
    let s = setup(POLICY, None).await;
    let playbook = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {delta: 1}}\n    - {name: mark, action: annotate, risk: low, when: \"steps['scale-up'].changed && steps['scale-up'].replicas == 4\", params: {annotations: {scaled: 'yes'}}}\n    - {name: page, action: annotate, risk: low, when: \"steps['scale-up'].replicas > 10\", params: {annotations: {paged: 'yes'}}}\n",
        "",
    );
    let (incident, finish) = s.remediate(&playbook, "api-1").await;
    assert_eq!(finish, Finish::Remediated);
    let story = story(&s.journal, &incident.id);
    assert!(
        story.contains(&"step_succeeded mark".to_string()),
        "{story:#?}"
    );
    assert!(
        story.contains(&"step_skipped page".to_string()),
        "{story:#?}"
    );
    let annotations = &deployment(&s.fake)["metadata"]["annotations"];
    assert_eq!(annotations["scaled"], "yes");
    assert!(annotations.get("paged").is_none(), "{annotations}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_remediated_within_the_cooldown_is_left_alone_even_by_another_incident() {
    let s = setup(POLICY, None).await;
    let playbook = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {delta: 1}}\n",
        "  cooldown: 30m\n",
    );
    let (first, finish) = s.remediate(&playbook, "api-1").await;
    assert_eq!(finish, Finish::Remediated);
    // Another pod of the same Deployment: another incident, the same target.
    let (_, finish) = s.remediate(&playbook, "api-2").await;
    assert!(
        matches!(&finish, Finish::CoolingDown(reason) if reason.contains(&first.id)),
        "{finish:?}"
    );
    assert_eq!(replicas(&s.fake), 4, "scaled once");
    // A restarted engine reads the cooldown from the journal.
    let restarted = executor(s.fake.client().expect("client"), &s.journal, POLICY, None);
    let (incident, signal) = opened(&playbook, "api-3");
    let finish = restarted
        .remediate(&playbook, &incident, &signal)
        .await
        .expect("journaled");
    assert!(matches!(finish, Finish::CoolingDown(_)), "{finish:?}");
    assert_eq!(replicas(&s.fake), 4);
}

impl Setup {
    /// Rolls the Deployment out to revision 2 (`api:2`), then remediates a leak signal, as
    /// the memory-leak trigger reports one, with `playbook`.
    async fn leak_after_a_rollout(&self, playbook: &Playbook) -> (Incident, Finish) {
        self.fake
            .roll_out(
                "shop",
                "api",
                json!({"metadata": {"labels": {"app": "api"}},
                       "spec": {"containers": [{"name": "app", "image": "api:2"}]}}),
            )
            .expect("roll out revision 2");
        let (incident, mut signal) = opened(playbook, "api-1");
        signal.values = [
            ("growthMiBPerMinute".to_string(), 9.0),
            ("secondsToOOM".to_string(), 2700.0),
        ]
        .into();
        let finish = self
            .executor
            .remediate(playbook, &incident, &signal)
            .await
            .expect("every decision journaled");
        (incident, finish)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_step_decides_and_its_actions_are_gated_and_run_by_the_host() {
    let s = setup(POLICY, None).await;
    // Revision 2 just rolled out: the guard's verdict is a rollback.
    let playbook = playbook(
        &format!(
            "    - name: guard\n      risk: low\n      wasm: {{module: '{}', grants: [log], allowedActions: [rollout_undo, patch_resources]}}\n",
            crate::built_step("memory-leak-guard").display()
        ),
        "",
    );
    let (incident, finish) = s.leak_after_a_rollout(&playbook).await;
    assert_eq!(finish, Finish::Remediated);
    let story = story(&s.journal, &incident.id);
    assert!(
        story.contains(&"step_succeeded guard".to_string()),
        "{story:#?}"
    );
    assert!(
        story.contains(&"gate_verdict guard/1-rollout_undo".to_string()),
        "the action went through the gate: {story:#?}"
    );
    let gate = s
        .journal
        .timeline(&incident.id)
        .expect("timeline")
        .into_iter()
        .find(|e| e.record.kind == Kind::GateVerdict)
        .expect("a verdict");
    assert_eq!(
        gate.record.detail["risk"], "medium",
        "the step said low; rollout_undo is medium: a guest cannot lower risk"
    );
    let image = &deployment(&s.fake)["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "api:1", "rolled back to revision 1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_step_asking_for_an_action_it_is_not_allowed_fails_and_rolls_back() {
    let s = setup(POLICY, None).await;
    let playbook = playbook(
        &format!(
            "    - {{name: scale-up, action: scale, risk: low, params: {{replicas: 5}}}}\n    - name: guard\n      risk: low\n      wasm: {{module: '{}', grants: [log], allowedActions: [patch_resources]}}\n",
            crate::built_step("memory-leak-guard").display()
        ),
        "",
    );
    let (_, finish) = s.leak_after_a_rollout(&playbook).await;
    assert!(
        matches!(&finish, Finish::RolledBack(reason) if reason.contains("rollout_undo")),
        "{finish:?}"
    );
    let failed = s
        .journal
        .by_kind(Kind::StepFailed)
        .expect("read")
        .pop()
        .expect("the failure is journaled");
    assert!(
        failed.record.detail["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not allow")),
        "{failed:?}"
    );
    assert_eq!(replicas(&s.fake), 3, "the completed step was undone");
    let image = &deployment(&s.fake)["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "api:2", "nothing the guest asked for ran");
}

/// The crash-loop playbook as shipped (`playbooks/crash-loop.yaml`), whose `triage` step is
/// the crash-triage example built by `wasm-sdk/build.sh`.
fn crash_loop_playbook() -> Arc<Playbook> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
    crate::built_step("crash-triage");
    let path = dir.join("crash-loop.yaml");
    let text = std::fs::read_to_string(&path).expect("read the crash-loop playbook");
    let mut loaded = Loaded::default();
    load_text(&path, &text, &mut loaded);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    Arc::clone(&loaded.playbooks[0])
}

impl Setup {
    /// Rolls the Deployment out to revision 2 (`api:2`, memory limit 256Mi), seeds its pod
    /// `api-1` whose `app` container restarted 5 times with `state` and `last_state` (and
    /// the logs of both instances), then remediates the crash-loop signal on that container,
    /// as the `crashLoop` trigger reports one, with the shipped crash-loop playbook.
    async fn crash_loop(&self, state: Value, last_state: Value) -> (Incident, Finish) {
        let container = json!({"name": "app", "image": "api:2",
                               "resources": {"limits": {"memory": "256Mi"}}});
        self.fake
            .roll_out(
                "shop",
                "api",
                json!({"metadata": {"labels": {"app": "api"}},
                       "spec": {"containers": [container]}}),
            )
            .expect("roll out revision 2");
        let replica_set = self
            .fake
            .list("apps/v1", "ReplicaSet", Some("shop"))
            .into_iter()
            .find(|rs| rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2")
            .expect("the ReplicaSet of revision 2");
        self.fake
            .insert(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "api-1", "namespace": "shop", "labels": {"app": "api"},
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": true,
                        "name": replica_set["metadata"]["name"],
                        "uid": replica_set["metadata"]["uid"],
                    }],
                },
                "spec": {"containers": [container]},
                "status": {"phase": "Running", "containerStatuses": [{
                    "name": "app", "image": "api:2", "imageID": "", "ready": false,
                    "restartCount": 5, "state": state, "lastState": last_state,
                }]},
            }))
            .expect("seed the crash-looping pod");
        for previous in [true, false] {
            self.fake
                .set_logs("shop", "api-1", "app", previous, "starting\nfatal: boom\n");
        }
        let playbook = crash_loop_playbook();
        let signal = SignalEvent {
            at: Utc::now(),
            labels: LabelSet::from(
                [
                    ("namespace", "shop"),
                    ("pod", "api-1"),
                    ("container", "app"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            transition: Transition::Firing,
            value: Some(6.0),
            values: Default::default(),
            active_at: Some(Utc::now()),
        };
        let incident = Incidents::new()
            .apply(&playbook, &signal)
            .expect("the firing signal opens an incident")
            .incident;
        let finish = self
            .executor
            .remediate(&playbook, &incident, &signal)
            .await
            .expect("every decision journaled");
        (incident, finish)
    }

    /// What the triage step gave, as journaled: its decision and output.
    fn triage(&self, incident: &Incident) -> Value {
        self.journal
            .timeline(&incident.id)
            .expect("timeline")
            .into_iter()
            .find(|e| e.record.kind == Kind::StepSucceeded && e.record.detail["step"] == "triage")
            .map(|e| json!({"decision": e.record.detail["decision"], "output": e.record.detail["after"]}))
            .expect("the triage step's decision is journaled")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_triage_reads_an_oom_killed_pod_and_raises_its_memory_limit() {
    let s = setup(POLICY, None).await;
    let (incident, finish) = s
        .crash_loop(
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            json!({"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
        )
        .await;
    assert_eq!(finish, Finish::Remediated);
    // The signal says nothing of why the container died: the verdict comes from the pod the
    // step read through the host's `get`.
    assert_eq!(
        s.triage(&incident),
        json!({"decision": "proceed", "output": {"verdict": "raise-limit",
               "reason": "OOMKilled", "exitCode": 137, "restarts": 5}})
    );
    let story = story(&s.journal, &incident.id);
    for entry in [
        "step_succeeded capture-logs",
        "gate_verdict triage/1-patch_resources",
        "step_succeeded triage/1-patch_resources",
    ] {
        assert!(story.contains(&entry.to_string()), "{entry}: {story:#?}");
    }
    let container = &deployment(&s.fake)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["resources"]["limits"]["memory"], "384Mi",
        "256Mi × 1.5"
    );
    assert_eq!(
        container["image"], "api:2",
        "a limit raised, nothing rolled back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_triage_rolls_back_a_container_that_fails_after_a_recent_rollout() {
    let s = setup(POLICY, None).await;
    let (incident, finish) = s
        .crash_loop(
            json!({"waiting": {"reason": "CrashLoopBackOff"}}),
            json!({"terminated": {"reason": "Error", "exitCode": 1}}),
        )
        .await;
    assert_eq!(finish, Finish::Remediated);
    assert_eq!(
        s.triage(&incident),
        json!({"decision": "proceed", "output": {"verdict": "rollback",
               "reason": "Error", "exitCode": 1, "restarts": 5}})
    );
    let story = story(&s.journal, &incident.id);
    assert!(
        story.contains(&"step_succeeded triage/1-rollout_undo".to_string()),
        "{story:#?}"
    );
    let container = &deployment(&s.fake)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "api:1", "rolled back to revision 1");
}

/// Every way a guest can misbehave, run as a playbook step after one that changed something:
/// the step fails with its reason in the journal, the completed step is undone, and the
/// executor goes on to remediate the next incident.
#[tokio::test(flavor = "multi_thread")]
async fn a_misbehaving_wasm_step_fails_only_its_step_and_the_plan_rolls_back() {
    use crate::wasm::{Answer, Guest, ROLLOUT_UNDO, SCALE};

    let s = setup(POLICY, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The module file holds WAT text, which wasmtime reads as well as the binary format.
    let step = |name: &str, guest: &Guest, allowed: &str| {
        let module = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&module, guest.wat()).expect("write the module");
        playbook(
            &format!(
                "    - {{name: scale-up, action: scale, risk: low, params: {{replicas: 5}}}}\n    - name: guard\n      risk: low\n      timeout: 300ms\n      wasm: {{module: '{}', allowedActions: [{allowed}]}}\n",
                module.display()
            ),
            "",
        )
    };
    let cases = [
        (
            "loops",
            Guest::running("(loop $forever (br $forever))"),
            "scale",
            "did not finish within its timeout",
        ),
        (
            "eats-memory",
            Guest::running(
                "(loop $more (br_if $more (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable",
            ),
            "scale",
            "went over its limit",
        ),
        ("traps", Guest::running("unreachable"), "scale", "trapped"),
        (
            "malformed",
            Guest::answering(Answer::Proceed(vec![(SCALE, "[3]", None)], None)),
            "scale",
            "must be a JSON object",
        ),
        (
            "not-allowed",
            Guest::answering(Answer::Proceed(vec![(ROLLOUT_UNDO, "{}", None)], None)),
            "scale",
            "does not allow",
        ),
    ];
    for (name, guest, allowed, why) in &cases {
        let playbook = step(name, guest, allowed);
        let (incident, finish) = s.remediate(&playbook, "api-1").await;
        assert!(
            matches!(&finish, Finish::RolledBack(reason) if reason.contains(why)),
            "{name}: {finish:?}"
        );
        let failed = s
            .journal
            .timeline(&incident.id)
            .expect("timeline")
            .into_iter()
            .find(|e| e.record.kind == Kind::StepFailed)
            .unwrap_or_else(|| panic!("{name}: the failure is journaled"));
        assert_eq!(failed.record.detail["step"], "guard", "{name}");
        assert!(
            failed.record.detail["reason"]
                .as_str()
                .is_some_and(|r| r.contains(why)),
            "{name}: {failed:?}"
        );
        let story = story(&s.journal, &incident.id);
        assert!(
            story.contains(&"rollback_started".to_string()),
            "{name}: {story:#?}"
        );
        assert_eq!(replicas(&s.fake), 3, "{name}: scale-up was undone");
    }

    // The executor still serves: a step that behaves is run, its action gated and executed.
    let good = Guest::answering(Answer::Proceed(
        vec![(SCALE, r#"{"replicas": 4}"#, None)],
        None,
    ));
    let (_, finish) = s.remediate(&step("good", &good, "scale"), "api-2").await;
    assert_eq!(finish, Finish::Remediated);
    assert_eq!(replicas(&s.fake), 4);
}

#[test]
fn a_module_importing_a_capability_its_step_is_not_granted_is_refused_at_load() {
    use crate::wasm::{Answer, Body, Guest};

    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("clock.wasm");
    let guest = Guest {
        version: "0.1.0",
        body: Body::CodeThen("(drop (call $now))", Answer::Skip("checked the time")),
        imports: vec!["now"],
    };
    std::fs::write(&module, guest.wat()).expect("write the module");
    let text = format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: heal}}\nspec:\n  trigger:\n    promql: {{expr: 'vector(1)'}}\n  target: {{kind: Deployment, namespace: shop, name: api}}\n  steps:\n    - name: guard\n      risk: low\n      wasm: {{module: '{}', grants: [log]}}\n",
        module.display()
    );
    let mut loaded = Loaded::default();
    load_text(Path::new("heal.yaml"), &text, &mut loaded);
    let errors: Vec<String> = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        errors.iter().any(|e| e.contains("clock.wasm")
            && e.contains("imports capability `now`, which the playbook does not grant")),
        "{errors:#?}"
    );
    assert!(loaded.playbooks.is_empty(), "the playbook is not loaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wasm_step_runs_the_module_its_playbook_was_checked_with() {
    let s = setup(POLICY, None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("guard.wasm");
    std::fs::copy(crate::built_step("memory-leak-guard"), &module).expect("copy the guard");
    let checked = salve::wasm::digest_hex(&std::fs::read(&module).expect("read"));
    let playbook = playbook(
        &format!(
            "    - name: guard\n      risk: low\n      wasm: {{module: '{}', grants: [log], allowedActions: [rollout_undo]}}\n",
            module.display()
        ),
        "",
    );
    // A broken build lands after the playbooks were loaded (its reload would be rejected).
    std::fs::write(&module, b"\0asm garbage").expect("break the file");
    let (incident, finish) = s.leak_after_a_rollout(&playbook).await;
    assert_eq!(finish, Finish::Remediated);
    let image = &deployment(&s.fake)["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "api:1", "the checked guard decided the rollback");
    let started = s
        .journal
        .timeline(&incident.id)
        .expect("timeline")
        .into_iter()
        .find(|e| e.record.kind == Kind::StepStarted && e.record.detail["step"] == "guard")
        .expect("the step started");
    assert_eq!(
        started.record.detail["digest"], checked,
        "the journal names the module that ran"
    );
}

/// crash-triage reads the pod its signal names, here in `payments` while the target is
/// shop/api: by default (the target's kind and Pods, in the target's namespace) the read is
/// refused before it reaches the API and the step escalates with the host's reason; a `read`
/// listing Pods without namespaces still means the target's; listing Pods in
/// `${labels.namespace}` (filled when the plan is made) lets the step read the pod and act.
#[tokio::test(flavor = "multi_thread")]
async fn crash_triage_reads_a_pod_of_another_namespace_only_when_its_read_lists_it() {
    let s = setup(POLICY, None).await;
    let module = crate::built_step("crash-triage");
    let container = json!({"name": "app", "image": "api:2",
                           "resources": {"limits": {"memory": "256Mi"}}});
    s.fake
        .roll_out(
            "shop",
            "api",
            json!({"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [container]}}),
        )
        .expect("roll out revision 2 with a memory limit");
    s.fake
        .insert(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pay-1", "namespace": "payments"},
            "spec": {"containers": [container]},
            "status": {"containerStatuses": [{
                "name": "app", "image": "api:2", "imageID": "", "ready": false,
                "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
            }]},
        }))
        .expect("seed the pod in payments");
    // The engine reads the signal's pod too (for its owner): the step's own read is the one
    // request more than a refused remediation makes.
    let pod_reads = || {
        s.fake
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/namespaces/payments/pods/pay-1"))
            .count()
    };
    let triage = |read: &str| {
        playbook(
            &format!(
                "    - name: triage\n      risk: medium\n      wasm:\n        module: '{}'\n        grants: [log, get]\n        allowedActions: [rollout_undo, patch_resources]\n{read}",
                module.display()
            ),
            "",
        )
    };
    let executor = &s.executor;
    let remediate = |playbook: Arc<Playbook>| async move {
        let signal = SignalEvent {
            at: Utc::now(),
            labels: LabelSet::from(
                [
                    ("namespace", "payments"),
                    ("pod", "pay-1"),
                    ("container", "app"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            ),
            transition: Transition::Firing,
            value: Some(4.0),
            values: Default::default(),
            active_at: Some(Utc::now()),
        };
        let incident = Incidents::new()
            .apply(&playbook, &signal)
            .expect("the firing signal opens an incident")
            .incident;
        let finish = executor
            .remediate(&playbook, &incident, &signal)
            .await
            .expect("every decision journaled");
        (incident, finish)
    };

    // What the journaled plan says the step may read: absent for the default, filled in when
    // listed.
    let planned_read = |incident: &Incident| {
        s.journal
            .timeline(&incident.id)
            .expect("timeline")
            .into_iter()
            .find(|e| e.record.kind == Kind::Planned)
            .map(|e| e.record.detail["plan"]["steps"][0]["wasm"]["read"].clone())
            .expect("the plan is journaled")
    };
    let mut engine_reads = Vec::new();
    for (read, planned) in [
        ("", Value::Null),
        ("        read: [{kind: Pod}]\n", json!({"Pod": ["shop"]})),
    ] {
        let before = pod_reads();
        let (incident, finish) = remediate(triage(read)).await;
        engine_reads.push(pod_reads() - before);
        assert_eq!(
            finish,
            Finish::Halted(
                "step triage escalated to a human: cannot read pod payments/pay-1: kind `Pod` \
                 is not readable in namespace `payments` by this step (readable: Pod in shop)"
                    .to_string()
            ),
            "read: {read:?}"
        );
        assert_eq!(planned_read(&incident), planned, "read: {read:?}");
    }
    assert_eq!(
        engine_reads[0], engine_reads[1],
        "both refused before the step's read reached the API"
    );

    let before = pod_reads();
    let (incident, finish) = remediate(triage(
        "        read: [{kind: Pod, namespaces: [\"${labels.namespace}\"]}]\n",
    ))
    .await;
    assert_eq!(finish, Finish::Remediated);
    assert_eq!(planned_read(&incident), json!({"Pod": ["payments"]}));
    assert_eq!(
        pod_reads() - before,
        engine_reads[0] + 1,
        "the step read the pod"
    );
    let container = &deployment(&s.fake)["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["resources"]["limits"]["memory"], "384Mi",
        "the OOMKilled pod in payments was read: 256Mi × 1.5"
    );
}

/// Log lines captured in memory, as a JSON-lines log pipeline would receive them.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// With `--log-format json`, every line a remediation logs carries its incident and playbook
/// as span fields, so a log pipeline can group an incident's lines without parsing messages.
#[tokio::test(flavor = "current_thread")]
async fn json_logs_carry_the_incident_as_a_span_field() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The runtime has one thread: every task of the remediation logs through this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let s = setup(POLICY, None).await;
    let playbook = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n",
        "",
    );
    let (incident, finish) = s.remediate(&playbook, "api-1").await;
    assert_eq!(finish, Finish::Remediated);
    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("UTF-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let finished = lines
        .iter()
        .find(|l| l["fields"]["message"] == "remediation finished")
        .unwrap_or_else(|| panic!("no `remediation finished` line in:\n{text}"));
    assert_eq!(finished["span"]["name"], "incident", "{finished}");
    assert_eq!(
        finished["span"]["incident"],
        json!(incident.id),
        "{finished}"
    );
    assert_eq!(finished["span"]["playbook"], "heal", "{finished}");
}
