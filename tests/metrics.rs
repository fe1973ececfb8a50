//! Salve's own metrics, recorded by the real components: the executor remediating through the
//! real `kube::Client` against the in-process fake API server with a real SQLite journal, and
//! the engine loop (`salve::app::run`) evaluating a real trigger, WASM steps in the real host,
//! and the advisor asking a local HTTP server speaking the OpenAI protocol. What an operator
//! relies on: the gate's verdicts, the actions, approvals that time out, rollbacks, the
//! breaker, incidents and the time to detect them, WASM steps and advisor rejections show in
//! `/metrics` as they happen.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use salve::executor::{Executor, Finish, Settings};
use salve::gate::Gate;
use salve::journal::Journal;
use salve::metrics::Metrics;
use salve::playbook::{Playbook, PlaybookSet};
use salve::signal::live::LiveOptions;

use crate::remediation::{POLICY, Setup, load, opened, playbook, policy, setup};

/// The value of `series` (name and labels, as exposed) in `text`, if it is there.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts that `series` reads `expected` in `metrics`.
#[track_caller]
fn reads(metrics: &Metrics, series: &str, expected: f64) {
    let text = metrics.encode();
    assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
}

/// An executor like the remediation tests' (a WASM host, a 100 ms poll), under the policy
/// `policy_spec`, counting into `metrics`.
fn executor(s: &Setup, metrics: &Metrics, policy_spec: &str) -> Executor {
    let host = salve::wasm::Host::new(salve::wasm::HostOptions {
        pooling: false,
        ..salve::wasm::HostOptions::default()
    })
    .expect("a WASM host");
    Executor::new(
        s.fake.client().expect("a client"),
        Arc::clone(&s.journal),
        Gate::new(policy(policy_spec)),
        None,
        Settings {
            poll: Duration::from_millis(100),
            wasm: Some(host),
            metrics: metrics.clone(),
            ..Settings::default()
        },
    )
}

async fn remediate(executor: &Executor, playbook: &Playbook, pod: &str) -> Finish {
    let (incident, signal) = opened(playbook, pod);
    executor
        .remediate(playbook, &incident, &signal)
        .await
        .expect("every decision journaled")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_executor_counts_verdicts_actions_approvals_rollbacks_and_the_breaker() {
    let s = setup(POLICY, None).await;
    let metrics = Metrics::default();
    let executor = executor(&s, &metrics, POLICY);

    // Two steps run, the third fails: both are undone.
    let failing = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n    - {name: mark, action: annotate, risk: low, params: {annotations: {salve.dev/healing: 'yes'}}}\n    - {name: raise, action: patch_resources, risk: medium, params: {container: missing, memoryLimit: 1Gi}}\n",
        "",
    );
    let finish = remediate(&executor, &failing, "api-1").await;
    assert!(matches!(finish, Finish::RolledBack(_)), "{finish:?}");
    reads(
        &metrics,
        r#"salve_gate_verdicts_total{risk="low",verdict="allow"}"#,
        2.0,
    );
    reads(
        &metrics,
        r#"salve_gate_verdicts_total{risk="medium",verdict="allow"}"#,
        1.0,
    );
    // Forward and undo.
    reads(
        &metrics,
        r#"salve_actions_total{action="scale",outcome="succeeded",dry_run="false"}"#,
        2.0,
    );
    reads(
        &metrics,
        r#"salve_actions_total{action="patch_resources",outcome="failed",dry_run="false"}"#,
        1.0,
    );
    reads(
        &metrics,
        r#"salve_rollbacks_total{outcome="complete"}"#,
        1.0,
    );
    reads(
        &metrics,
        r#"salve_rollbacks_total{outcome="incomplete"}"#,
        0.0,
    );
    reads(
        &metrics,
        r#"salve_remediations_total{playbook="heal",outcome="rolled_back"}"#,
        1.0,
    );
    reads(
        &metrics,
        r#"salve_circuit_breaker_state{state="closed"}"#,
        1.0,
    );

    // A step above the ceiling, and nobody answers within the policy's 1 s.
    let risky = playbook(
        "    - {name: drain, action: scale, risk: high, params: {replicas: 0}}\n",
        "",
    );
    let finish = remediate(&executor, &risky, "api-2").await;
    assert!(matches!(finish, Finish::Halted(_)), "{finish:?}");
    reads(
        &metrics,
        r#"salve_gate_verdicts_total{risk="high",verdict="needs_approval"}"#,
        1.0,
    );
    reads(&metrics, "salve_approvals_requested_total", 1.0);
    reads(&metrics, "salve_approvals_expired_total", 1.0);
    reads(&metrics, "salve_approvals_pending", 0.0);
    reads(
        &metrics,
        r#"salve_approvals_answered_total{answer="approved"}"#,
        0.0,
    );

    // Two failures in a row open the breaker; the next step is denied.
    let broken = playbook(
        "    - {name: raise, action: patch_resources, risk: medium, params: {container: missing, memoryLimit: 1Gi}}\n",
        "",
    );
    for pod in ["api-3", "api-4"] {
        let finish = remediate(&executor, &broken, pod).await;
        assert!(matches!(finish, Finish::RolledBack(_)), "{finish:?}");
    }
    reads(
        &metrics,
        r#"salve_circuit_breaker_state{state="open"}"#,
        1.0,
    );
    reads(
        &metrics,
        r#"salve_circuit_breaker_state{state="closed"}"#,
        0.0,
    );
    let scale = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n",
        "",
    );
    let finish = remediate(&executor, &scale, "api-5").await;
    assert!(matches!(finish, Finish::Halted(_)), "{finish:?}");
    reads(
        &metrics,
        r#"salve_gate_verdicts_total{risk="low",verdict="deny"}"#,
        1.0,
    );
    reads(
        &metrics,
        r#"salve_remediations_total{playbook="heal",outcome="halted"}"#,
        2.0,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engine_loop_counts_evaluations_signals_incidents_and_the_time_to_detect() {
    // A trigger that fires every second: no Prometheus needed.
    let loaded = load(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: tick}\nspec:\n  trigger:\n    schedule: {cron: '* * * * * *'}\n  target: {kind: Deployment, namespace: shop, name: api}\n  steps:\n    - {action: capture_logs, risk: none}\n",
    );
    let set = PlaybookSet::from_loaded(loaded).expect("a valid set");
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Arc::new(Journal::open(&dir.path().join("journal.db")).expect("journal"));
    let metrics = Metrics::default();
    let cancel = tokio_util::sync::CancellationToken::new();
    let engine = tokio::spawn(salve::app::run(
        Arc::new(ArcSwap::from_pointee(set)),
        salve::signal::evaluation::Sources::default(),
        journal,
        None,
        salve::app::Options {
            live: LiveOptions {
                tick: Duration::from_millis(50),
                ..LiveOptions::default()
            },
            metrics: metrics.clone(),
            ..salve::app::Options::default()
        },
        cancel.clone(),
    ));
    let opened = r#"salve_incidents_opened_total{playbook="tick"}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while value(&metrics.encode(), opened).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no incident opened:\n{}",
            metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), engine)
        .await
        .expect("the engine stops when cancelled")
        .expect("the engine does not panic");

    let text = metrics.encode();
    let at_least = |series: &str, floor: f64| {
        let found = value(&text, series);
        assert!(
            found.is_some_and(|v| v >= floor),
            "{series} = {found:?}, want ≥ {floor}, in\n{text}"
        );
    };
    at_least(opened, 1.0);
    at_least(r#"salve_incidents_open{playbook="tick"}"#, 1.0);
    at_least(r#"salve_evaluations_total{playbook="tick"}"#, 2.0);
    at_least(
        r#"salve_signal_transitions_total{playbook="tick",transition="firing"}"#,
        1.0,
    );
    at_least(
        r#"salve_incident_time_to_detect_seconds_count{playbook="tick"}"#,
        1.0,
    );
    assert!(
        text.contains(r#"salve_signals{playbook="tick",state="firing"}"#),
        "{text}"
    );
    // A schedule needs no data source: nothing was inconclusive.
    assert_eq!(
        value(
            &text,
            r#"salve_evaluations_inconclusive_total{playbook="tick"}"#
        ),
        None,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wasm_steps_are_counted_by_decision_and_timed() {
    use crate::wasm::{Answer, Guest, SCALE};

    let s = setup(POLICY, None).await;
    let metrics = Metrics::default();
    let executor = executor(&s, &metrics, POLICY);
    let dir = tempfile::tempdir().expect("tempdir");
    let step = |name: &str, guest: &Guest| {
        let module = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&module, guest.wat()).expect("write the module");
        playbook(
            &format!(
                "    - name: guard\n      risk: low\n      wasm: {{module: '{}', allowedActions: [scale]}}\n",
                module.display()
            ),
            "",
        )
    };
    let traps = step("traps", &Guest::running("unreachable"));
    let finish = remediate(&executor, &traps, "api-1").await;
    assert!(matches!(finish, Finish::RolledBack(_)), "{finish:?}");
    reads(&metrics, r#"salve_wasm_steps_total{outcome="failed"}"#, 1.0);
    reads(&metrics, "salve_wasm_step_duration_seconds_count", 0.0);

    let good = Guest::answering(Answer::Proceed(
        vec![(SCALE, r#"{"replicas": 4}"#, None)],
        None,
    ));
    let finish = remediate(&executor, &step("good", &good), "api-2").await;
    assert_eq!(finish, Finish::Remediated);
    reads(
        &metrics,
        r#"salve_wasm_steps_total{outcome="proceed"}"#,
        1.0,
    );
    reads(&metrics, "salve_wasm_step_duration_seconds_count", 1.0);
    // The action it asked for went through the gate and ran.
    reads(
        &metrics,
        r#"salve_actions_total{action="scale",outcome="succeeded",dry_run="false"}"#,
        1.0,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn advisor_consultations_are_counted_with_the_reason_of_a_rejection() {
    use crate::advisor::{Answer, KEY, LlmServer};

    let server = LlmServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("api-key");
    std::fs::write(&key, format!("{KEY}\n")).expect("write the key file");
    let policy_spec = format!(
        "{POLICY}  advisor: {{baseUrl: '{}', model: test-model, apiKey: {{file: '{}'}}, timeout: 1s, retries: 0}}\n",
        server.base_url,
        key.display()
    );
    let s = setup(&policy_spec, None).await;
    let metrics = Metrics::default();
    let executor = executor(&s, &metrics, &policy_spec);
    server.script([Answer::chat(
        "Sure! The root cause is sig-1, so run delete_namespace.",
        40,
    )]);
    let scale = playbook(
        "    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n",
        "",
    );
    let finish = remediate(&executor, &scale, "api-1").await;
    assert_eq!(
        finish,
        Finish::Remediated,
        "the plan runs as without advice"
    );
    reads(
        &metrics,
        r#"salve_advisor_consultations_total{outcome="rejected"}"#,
        1.0,
    );
    reads(
        &metrics,
        r#"salve_advisor_consultations_total{outcome="advice"}"#,
        0.0,
    );
    reads(
        &metrics,
        r#"salve_advisor_rejections_total{reason="not_json"}"#,
        1.0,
    );
    reads(
        &metrics,
        "salve_advisor_consultation_duration_seconds_count",
        1.0,
    );
}
