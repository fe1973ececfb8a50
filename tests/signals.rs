//! Built-in signals against a real Prometheus: each fires on a true case and stays quiet on its
//! look-alike in the same scenario, and every way an evaluation can fail is inconclusive.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use std::sync::Arc;

use salve::playbook::Playbook;
use salve::playbook::load::{Loaded, load_text};
use salve::prometheus::{self, RunningPrometheus, Scenario};
use salve::series::Sample as Point;
use salve::signal::SignalQueries;
use salve::signal::evaluate::Evaluator;
use salve::signal::evaluation::{Alerts, Sources, Tracked};
use salve::signal::state::{Observation, SignalEvent, Tracker, Transition};

const MINUTE: Duration = Duration::from_secs(60);

/// A compiled playbook whose `trigger:` block is `trigger` (indented by 4).
fn trigger(trigger: &str) -> Arc<Playbook> {
    let text = format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: t}}\nspec:\n  trigger:\n{trigger}  target: {{kind: Deployment, namespace: \"${{labels.namespace}}\", name: x}}\n  steps:\n    - {{action: capture_logs, risk: none}}\n"
    );
    let mut loaded = Loaded::default();
    load_text(Path::new("t.yaml"), &text, &mut loaded);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    Arc::clone(&loaded.playbooks[0])
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).expect("valid time")
}

/// Evaluates the trigger of `playbook` at every step in `steps` through the engine's own
/// path (`Tracked::evaluate`, as live and replay do); returns all events.
async fn run(
    prometheus: &RunningPrometheus,
    playbook: &Arc<Playbook>,
    steps: std::ops::Range<usize>,
) -> Vec<SignalEvent> {
    let evaluator = Evaluator::new(prometheus.url(), Duration::from_secs(5)).expect("evaluator");
    let sources = Sources {
        prometheus: Some(evaluator),
        alerts: Alerts::None,
        ..Sources::default()
    };
    let tracked = Tracked::new(Arc::clone(playbook)).expect("a PromQL-based trigger");
    let mut events = Vec::new();
    for step in steps {
        let when = at(prometheus.time_at(step));
        events.extend(
            tracked
                .evaluate(&sources, when)
                .await
                .into_iter()
                .map(|e| e.event),
        );
    }
    events
}

/// The values of `label` of the series that fired.
fn fired(events: &[SignalEvent], label: &str) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.transition == Transition::Firing)
        .filter_map(|e| e.labels.get(label).cloned())
        .collect()
}

fn inconclusive(events: &[SignalEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.transition, Transition::Inconclusive { .. }))
        .count()
}

/// The restart counter of container `app` of pod `pod`.
fn restarts(pod: &str) -> String {
    format!(
        r#"kube_pod_container_status_restarts_total{{namespace="shop",pod="{pod}",container="app"}}"#
    )
}

fn start(scenario: Scenario) -> RunningPrometheus {
    prometheus::start(&scenario).expect("backfill and start prometheus")
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_leak_fires_on_a_leak_and_not_on_a_gc_sawtooth() {
    let sawtooth = "1e9+4e7x9 ".repeat(6);
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(
            r#"container_memory_working_set_bytes{namespace="prod",pod="leaky",container="app"}"#,
            "1e9+2e7x59",
        )
        .and_then(|s| {
            s.series(
                r#"kube_pod_container_resource_limits{namespace="prod",pod="leaky",container="app",resource="memory"}"#,
                "2e9x59",
            )
        })
        .and_then(|s| {
            s.series(
                r#"container_memory_working_set_bytes{namespace="prod",pod="sawtooth",container="app"}"#,
                &sawtooth,
            )
        })
        .and_then(|s| {
            s.series(
                r#"kube_pod_container_resource_limits{namespace="prod",pod="sawtooth",container="app",resource="memory"}"#,
                "2e9x59",
            )
        })
        .expect("series");
    let prometheus = start(scenario);
    let trigger = trigger(
        "    memoryLeak: {selector: '{namespace=\"prod\"}', window: 30m, horizon: 1h}\n    for: 2m\n",
    );
    let events = run(&prometheus, &trigger, 30..60).await;
    assert_eq!(
        fired(&events, "pod"),
        BTreeSet::from(["leaky".to_string()]),
        "{events:#?}"
    );
    assert_eq!(inconclusive(&events), 0, "{events:#?}");
    let first = events
        .iter()
        .find(|e| e.transition == Transition::Firing)
        .expect("fired");
    assert_eq!(
        first.at,
        at(prometheus.time_at(32)),
        "fires once `for` has elapsed"
    );
    // (2e9 - 1.64e9) bytes of headroom at 2e7 bytes a minute: 18 minutes to OOM at step 32.
    let seconds_to_oom = first.value.expect("value");
    assert!(
        (1000.0..1300.0).contains(&seconds_to_oom),
        "{seconds_to_oom}"
    );
    // The signal carries what an SRE asks first: how fast, how full, how long.
    let value = |name: &str| {
        *first
            .values
            .get(name)
            .unwrap_or_else(|| panic!("{name}: {first:#?}"))
    };
    assert_eq!(value("secondsToOOM"), seconds_to_oom);
    let growth = 2e7 / (1024.0 * 1024.0);
    assert!(
        (value("growthMiBPerMinute") - growth).abs() < 0.01,
        "{first:#?}"
    );
    assert!((value("percentOfLimit") - 82.0).abs() < 0.5, "{first:#?}");
    assert_eq!(value("limitBytes"), 2e9);
}

/// A histogram's cumulative bucket counters from per-minute increments of each bucket.
fn buckets(per_minute: impl Fn(usize) -> [f64; 4], steps: usize) -> [Vec<Point>; 4] {
    let mut totals = [0.0; 4];
    let mut series: [Vec<Point>; 4] = Default::default();
    for step in 0..steps {
        let increments = per_minute(step);
        for (bucket, total) in totals.iter_mut().enumerate() {
            series[bucket].push(Point::Value(*total));
            *total += increments[bucket];
        }
    }
    series
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_fires_on_a_sustained_breach_and_not_on_a_short_spike() {
    const LE: [&str; 4] = ["0.1", "0.5", "1", "+Inf"];
    let slow = [10.0, 20.0, 100.0, 100.0];
    let fast = [95.0, 100.0, 100.0, 100.0];
    let mut scenario = Scenario::new(MINUTE).expect("interval");
    // Per-minute increments of each bucket, per service: slow throughout, fast throughout,
    // and fast with a two-minute slow spike.
    let per_minute = |service: &str, step: usize| match service {
        "checkout" => slow,
        "cart" if (10..12).contains(&step) => slow,
        _ => fast,
    };
    for service in ["checkout", "search", "cart"] {
        for (le, points) in LE.iter().zip(buckets(|step| per_minute(service, step), 40)) {
            let selector = format!(
                r#"http_request_duration_seconds_bucket{{namespace="shop",service="{service}",le="{le}"}}"#
            );
            scenario = scenario.samples(&selector, points).expect("series");
        }
    }
    let prometheus = start(scenario);
    let trigger =
        trigger("    latency: {quantile: 0.99, threshold: 500ms, window: 5m}\n    for: 10m\n");
    let events = run(&prometheus, &trigger, 5..40).await;
    assert_eq!(
        fired(&events, "service"),
        BTreeSet::from(["checkout".to_string()]),
        "{events:#?}"
    );
    let cart_pending = events.iter().any(|e| {
        e.transition == Transition::Pending
            && e.labels.get("service").map(String::as_str) == Some("cart")
    });
    assert!(
        cart_pending,
        "the spike did breach, just not for 10m: {events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_loop_fires_on_repeated_restarts_or_back_off_not_on_an_hourly_restart() {
    let pod = restarts;
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(&pod("crashy"), "0+1x119")
        .and_then(|s| s.series(&pod("hourly"), "0x29 1x59 2x29"))
        .and_then(|s| s.series(&pod("backoff"), "0x59 1x59"))
        .and_then(|s| {
            s.series(
                r#"kube_pod_container_status_waiting_reason{namespace="shop",pod="backoff",container="app",reason="CrashLoopBackOff"}"#,
                "1x119",
            )
        })
        .expect("series");
    let prometheus = start(scenario);
    let trigger = trigger("    crashLoop: {restarts: 5, window: 15m}\n");
    let events = run(&prometheus, &trigger, 20..120).await;
    assert_eq!(
        fired(&events, "pod"),
        BTreeSet::from(["crashy".to_string(), "backoff".to_string()]),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn error_rate_fires_above_the_ratio_only() {
    let requests = |service: &str, code: &str| {
        format!(r#"http_requests_total{{namespace="shop",service="{service}",code="{code}"}}"#)
    };
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(&requests("bad", "500"), "0+10x29")
        .and_then(|s| s.series(&requests("bad", "200"), "0+90x29"))
        .and_then(|s| s.series(&requests("good", "500"), "0+1x29"))
        .and_then(|s| s.series(&requests("good", "200"), "0+99x29"))
        .expect("series");
    let prometheus = start(scenario);
    let trigger = trigger("    errorRate: {ratio: 0.05}\n");
    let events = run(&prometheus, &trigger, 6..30).await;
    assert_eq!(
        fired(&events, "service"),
        BTreeSet::from(["bad".to_string()]),
        "{events:#?}"
    );
    let ratio = events
        .iter()
        .find(|e| e.transition == Transition::Firing)
        .and_then(|e| e.value)
        .expect("ratio");
    assert!((ratio - 0.1).abs() < 0.01, "{ratio}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_evaluations_are_inconclusive_never_healthy() {
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(r#"weird{pod="a"}"#, "NaNx9")
        .and_then(|s| s.series(r#"up{pod="a"}"#, "1x9"))
        .expect("series");
    let prometheus = start(scenario);
    let when = at(prometheus.time_at(9));
    let evaluator = Evaluator::new(prometheus.url(), Duration::from_secs(5)).expect("evaluator");
    let query = SignalQueries::new;

    // A NaN value: inconclusive for that series, which neither fires nor resolves.
    let mut tracker = Tracker::new(Duration::ZERO, Duration::ZERO);
    let events = tracker.observe(when, evaluator.observe(&query("weird"), when).await);
    assert_eq!(inconclusive(&events), 1, "{events:#?}");
    assert!(tracker.states().is_empty());

    // A query Prometheus refuses.
    let refused = evaluator.observe(&query("up{"), when).await;
    assert!(
        matches!(&refused, Observation::Inconclusive(r) if r.contains("prometheus")),
        "{refused:?}"
    );
    // A result of the wrong type.
    let scalar = evaluator.observe(&query("1"), when).await;
    assert!(
        matches!(&scalar, Observation::Inconclusive(r) if r.contains("scalar")),
        "{scalar:?}"
    );

    // Prometheus gone: a firing signal stays firing.
    let mut tracker = Tracker::new(Duration::ZERO, Duration::ZERO);
    let up = query("up == 1");
    tracker.observe(when, evaluator.observe(&up, when).await);
    assert_eq!(tracker.firing().count(), 1);
    let url = prometheus.url().to_string();
    drop(prometheus);
    let gone = Evaluator::new(&url, Duration::from_secs(5)).expect("evaluator");
    let events = tracker.observe(when, gone.observe(&up, when).await);
    assert_eq!(inconclusive(&events), 1, "{events:#?}");
    assert_eq!(
        tracker.firing().count(),
        1,
        "missing data never resolves a signal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prometheus_that_does_not_answer_times_out_as_inconclusive() {
    // A real socket that accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let evaluator = Evaluator::new(&url, Duration::from_millis(300)).expect("evaluator");
    let queries = SignalQueries::new("up");
    let started = std::time::Instant::now();
    let observation = evaluator.observe(&queries, Utc::now()).await;
    assert!(
        matches!(&observation, Observation::Inconclusive(r) if r.contains("timed out")),
        "{observation:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

/// Runs `salve replay` over the playbooks in `dir` from step `steps.start()` to `steps.end()`
/// of `prometheus`'s scenario, a minute apart; its stdout and stderr.
fn replay(
    dir: &Path,
    prometheus: &RunningPrometheus,
    steps: std::ops::RangeInclusive<usize>,
    args: &[&str],
) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["replay", "--playbooks"])
        .arg(dir)
        .args(["--prometheus", prometheus.url()])
        .args(["--from", &prometheus.time_at(*steps.start()).to_string()])
        .args(["--to", &prometheus.time_at(*steps.end()).to_string()])
        .args(["--step", "1m"])
        .args(args)
        .output()
        .expect("run salve replay");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8(out.stdout).expect("utf-8"), stderr)
}

#[test]
fn replay_backtests_playbooks_over_history_as_json_lines() {
    let pod = restarts;
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(&pod("crashy"), "0x29 0+1x89")
        .and_then(|s| s.series(&pod("hourly"), "0x29 1x59 2x29"))
        .expect("series");
    let prometheus = start(scenario);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("crash.yaml"),
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: crash-loop}\nspec:\n  trigger:\n    crashLoop: {restarts: 5, window: 15m}\n    for: 2m\n  target: {kind: Deployment, namespace: \"${labels.namespace}\", name: x}\n  steps:\n    - {action: capture_logs, risk: none}\n",
    )
    .expect("write playbook");
    let replay = |format: &str| replay(dir.path(), &prometheus, 20..=119, &["--format", format]).0;

    let lines: Vec<serde_json::Value> = replay("json")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let events: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            for key in ["time", "event", "playbook", "labels", "values"] {
                assert!(l.get(key).is_some(), "{key} missing from {l}");
            }
            (
                l["event"].as_str().expect("event"),
                l["labels"]["pod"].as_str().unwrap_or_default(),
                l["time"].as_str().expect("time"),
            )
        })
        .collect();
    // The crashy pod restarts every minute from minute 30: more than 5 within 15 minutes by
    // minute 36, pending then, firing two minutes later. The hourly restart never counts.
    let pending = events
        .iter()
        .find(|e| e.0 == "signal_pending" && e.1 == "crashy")
        .expect("pending");
    let firing = events
        .iter()
        .find(|e| e.0 == "signal_firing" && e.1 == "crashy")
        .expect("firing");
    let seconds = |rfc3339: &str| {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("RFC 3339 time")
            .timestamp()
    };
    assert_eq!(seconds(firing.2) - seconds(pending.2), 120, "{events:?}");
    assert!(events.iter().all(|e| e.1 != "hourly"), "{events:?}");
    assert!(lines.iter().all(|l| l["playbook"] == "crash-loop"));
    // The firing signal carries its value, and opens one incident on the playbook's target.
    let firing_line = lines
        .iter()
        .find(|l| l["event"] == "signal_firing")
        .expect("firing line");
    assert!(
        firing_line["values"]["restartsInWindow"].as_f64() > Some(5.0),
        "{firing_line}"
    );
    let opened: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["event"] == "incident_opened")
        .collect();
    assert_eq!(opened.len(), 1, "{lines:#?}");
    assert_eq!(opened[0]["time"], firing_line["time"]);
    assert_eq!(opened[0]["target"], "Deployment shop/x");
    assert!(
        opened[0]["incident"]
            .as_str()
            .is_some_and(|id| id.starts_with("inc-")),
        "{}",
        opened[0]
    );

    let table = replay("table");
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table.contains("signal_firing") && table.contains(r#"pod="crashy""#),
        "{table}"
    );
}

/// Playbooks with tests: one passes, two fail, one is skipped.
fn playbooks_with_tests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let playbook = |name: &str, trigger: &str, tests: &str| {
        format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n{trigger}  target: {{kind: Deployment, namespace: \"${{labels.namespace}}\", name: x}}\n  steps:\n    - {{action: capture_logs, risk: none}}\n  tests:\n{tests}"
        )
    };
    let replicas = r#"'kube_deployment_spec_replicas{namespace="batch",deployment="etl"}'"#;
    std::fs::write(
        dir.path().join("replicas.yaml"),
        playbook(
            "too-many-replicas",
            "    promql: {expr: 'max by (namespace, deployment) (kube_deployment_spec_replicas) > 40'}\n    for: 10m\n    interval: 1m\n",
            &format!(
                "    - name: sustained burst fires\n      series: {{{replicas}: '60x30'}}\n      expect: {{incident: true, labels: {{deployment: etl}}}}\n    - name: short burst is wrongly expected to fire\n      series: {{{replicas}: '60x5 10x25'}}\n      expect: {{incident: true}}\n    - name: label mismatch\n      series: {{{replicas}: '60x30'}}\n      expect: {{incident: true, labels: {{deployment: web}}}}\n"
            ),
        ),
    )
    .expect("write playbook");
    std::fs::write(
        dir.path().join("oom.yaml"),
        playbook(
            "oom",
            "    event: {kind: Pod, reason: [OOMKilled]}\n",
            "    - name: an OOM kill opens an incident\n      events: [{at: 1m, namespace: prod, name: api-1, reason: OOMKilled, container: app}]\n      expect: {incident: true}\n",
        ),
    )
    .expect("write playbook");
    dir
}

/// `salve test` with `args` after the paths: its exit code and stdout.
fn salve_test(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .arg("test")
        .arg(dir)
        .args(args)
        .output()
        .expect("run salve test");
    (
        out.status.code(),
        String::from_utf8(out.stdout).expect("utf-8"),
    )
}

/// The verdicts `playbooks_with_tests` must get.
fn assert_verdicts(code: Option<i32>, text: &str) {
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("  ok    sustained burst fires"), "{text}");
    assert!(
        text.contains("  FAIL  short burst is wrongly expected to fire")
            && text.contains("expected an incident; no signal is firing"),
        "{text}"
    );
    assert!(
        text.contains("no firing signal carries {deployment=\"web\"}"),
        "{text}"
    );
    assert!(
        text.contains("  ok    an OOM kill opens an incident"),
        "{text}"
    );
    assert!(
        text.lines().last() == Some("result: 2 passed, 2 failed, 0 skipped"),
        "{text}"
    );
}

#[test]
fn salve_test_runs_playbook_tests_against_a_real_prometheus() {
    let dir = playbooks_with_tests();
    let (code, text) = salve_test(dir.path(), &[]);
    assert_verdicts(code, &text);
}

#[test]
fn salve_test_keeps_tests_apart_in_a_running_prometheus() {
    let receiver = prometheus::Harness::from_env()
        .and_then(|h| h.start_receiver())
        .expect("a Prometheus taking remote writes");
    let dir = playbooks_with_tests();
    // The tests share series names: each sees only its own, in both runs.
    for _ in 0..2 {
        let (code, text) = salve_test(dir.path(), &["--prometheus", receiver.url()]);
        assert_verdicts(code, &text);
    }
    // A Prometheus that does not take remote writes is named as the problem.
    let plain = start(Scenario::new(MINUTE).expect("interval"));
    let (code, text) = salve_test(dir.path(), &["--prometheus", plain.url()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("start Prometheus with --web.enable-remote-write-receiver"),
        "{text}"
    );
}

/// The memory-leak trigger of the bundled playbook, a target named by the owner, and
/// `steps` (indented by 4).
fn leak_playbook(name: &str, steps: &str, tests: &str) -> String {
    format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n    memoryLeak: {{selector: '{{namespace=\"prod\"}}', window: 30m, horizon: 1h, minGrowthMiBPerMinute: 1}}\n    for: 2m\n  target: {{kind: Deployment, namespace: \"${{labels.namespace}}\", name: \"${{owner.name}}\"}}\n  steps:\n{steps}  tests:\n{tests}"
    )
}

/// A test of a leak in `prod/api-1`: the working set from `start` bytes growing by `growth`
/// bytes a minute for an hour, under a limit of `limit` bytes, on a revision `age` old; it
/// expects `steps`. The leak is projected to OOM within the hour from about minute 42 on.
fn leak_test(name: &str, start: &str, growth: &str, limit: &str, age: &str, steps: &str) -> String {
    format!(
        "    - name: {name}\n      series:\n        'container_memory_working_set_bytes{{namespace=\"prod\",pod=\"api-1\",container=\"api\"}}': '{start}+{growth}x60'\n        'kube_pod_container_resource_limits{{namespace=\"prod\",pod=\"api-1\",container=\"api\",resource=\"memory\"}}': '{limit}x60'\n      facts:\n        owner: {{name: api}}\n        target: {{revisionAge: {age}}}\n      expect: {{incident: true, steps: [{steps}]}}\n"
    )
}

/// The line after `  FAIL  <test>`: why it failed.
fn failure<'a>(text: &'a str, test: &str) -> &'a str {
    let mut lines = text.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with(&format!("  FAIL  {test} (")))
        .unwrap_or_else(|| panic!("`{test}` did not fail:\n{text}"));
    lines.next().unwrap_or_default().trim()
}

/// `salve test` evaluates the real memory-leak guard for each test's scenario: the revision's
/// age and the growth rate decide what `expect.steps` must say; a wrong expectation shows
/// what the guard decided and logged; a step that traps fails its test with the trap.
#[test]
fn salve_test_evaluates_wasm_steps_for_each_scenario() {
    let guard = crate::built_step("memory-leak-guard");
    let dir = tempfile::tempdir().expect("tempdir");
    let steps = format!(
        "    - {{name: capture-logs, action: capture_logs, risk: none}}\n    - name: guard\n      risk: medium\n      wasm:\n        module: '{}'\n        grants: [log]\n        allowedActions: [rollout_undo, patch_resources]\n        config: {{recentDeploy: 1h, limitFactor: 1.5}}\n",
        guard.display()
    );
    // 5e6 B/min is 4.8 MiB/min, a slow leak; 3e7 B/min (28.6 MiB/min) is a fast one: above
    // the guard's default of 20 MiB/min.
    let tests = [
        leak_test(
            "young",
            "1.5e9",
            "5e6",
            "2e9",
            "20m",
            "capture-logs, guard/1-rollout_undo",
        ),
        leak_test(
            "old slow",
            "1.5e9",
            "5e6",
            "2e9",
            "3d",
            "capture-logs, guard/1-patch_resources",
        ),
        leak_test(
            "old fast",
            "1e9",
            "3e7",
            "4e9",
            "3d",
            "capture-logs, guard/escalate",
        ),
        leak_test(
            "wrong",
            "1.5e9",
            "5e6",
            "2e9",
            "3d",
            "capture-logs, guard/1-rollout_undo",
        ),
    ]
    .concat();
    std::fs::write(
        dir.path().join("guarded.yaml"),
        leak_playbook("guarded", &steps, &tests),
    )
    .expect("write playbook");
    // A component whose handler traps (the skip fixture with an `unreachable` body).
    let skip = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/wasm/skip.wat"),
    )
    .expect("read the skip fixture");
    let body = "(result i32)\n      \n      (i32.const 0))";
    assert!(skip.contains(body), "the skip fixture changed shape");
    let trap = dir.path().join("trap.wasm");
    std::fs::write(
        &trap,
        skip.replace(body, "(result i32)\n      unreachable)"),
    )
    .expect("write the trapping module");
    let steps = format!(
        "    - {{name: capture-logs, action: capture_logs, risk: none}}\n    - name: judge\n      risk: low\n      wasm: {{module: '{}', allowedActions: [rollout_undo]}}\n",
        trap.display()
    );
    std::fs::write(
        dir.path().join("trapping.yaml"),
        leak_playbook(
            "trapping",
            &steps,
            &leak_test("traps", "1.5e9", "5e6", "2e9", "3d", "capture-logs"),
        ),
    )
    .expect("write playbook");

    let (code, text) = salve_test(dir.path(), &[]);
    assert_eq!(code, Some(1), "{text}");
    for passing in ["young", "old slow", "old fast"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("  ok    {passing} ("))),
            "{passing} did not pass:\n{text}"
        );
    }
    let wrong = failure(&text, "wrong");
    assert!(
        wrong.starts_with(
            "expected steps [capture-logs, guard/1-rollout_undo]; \
             the plan runs [capture-logs, guard/1-patch_resources]; \
             guard decided proceed: patch_resources (medium) (logged: info: growth Some("
        ),
        "{wrong}"
    );
    assert!(wrong.contains("revision age Some(259200)"), "{wrong}");
    let traps = failure(&text, "traps");
    assert!(
        traps.starts_with("step judge failed: the step trapped"),
        "{traps}"
    );
    assert_eq!(
        text.lines().last(),
        Some("result: 3 passed, 2 failed, 0 skipped"),
        "{text}"
    );
}

/// A playbook on `max by (pod) (gauge) > threshold`, evaluated every second.
fn live_playbook(name: &str, threshold: f64, for_: &str) -> String {
    format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n    promql: {{expr: 'max by (pod) (gauge) > {threshold}'}}\n    for: {for_}\n    interval: 1s\n  target: {{kind: Deployment, namespace: prod, name: x}}\n  steps:\n    - {{action: capture_logs, risk: none}}\n"
    )
}

/// The next event within a few seconds, or `None`.
async fn next_event(
    events: &mut tokio::sync::mpsc::Receiver<salve::signal::evaluation::PlaybookEvent>,
    within: Duration,
) -> Option<salve::signal::evaluation::PlaybookEvent> {
    tokio::time::timeout(within, events.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_loop_evaluates_each_trigger_and_keeps_state_across_unrelated_reloads() {
    use salve::playbook::watch::{ReloadOutcome, Reloader};
    use salve::signal::live::{self, LiveOptions};

    // Data that ends now, so queries at the current time see it.
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(r#"gauge{pod="a"}"#, "1x10")
        .expect("series");
    let prometheus = start(scenario);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("holds.yaml"),
        live_playbook("holds", 0.5, "0s"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("never.yaml"),
        live_playbook("never", 5.0, "0s"),
    )
    .expect("write");
    let (reloader, _) = Reloader::from_paths(vec![dir.path().to_path_buf()]).expect("valid set");
    let evaluator = Evaluator::new(prometheus.url(), Duration::from_secs(5)).expect("evaluator");
    let cancel = tokio_util::sync::CancellationToken::new();
    let (tx, mut events) = tokio::sync::mpsc::channel(64);
    let sources = salve::signal::evaluation::Sources {
        prometheus: Some(evaluator),
        alerts: salve::signal::evaluation::Alerts::None,
        ..Default::default()
    };
    let task = tokio::spawn(live::run(
        std::sync::Arc::clone(reloader.active()),
        sources,
        LiveOptions::default(),
        cancel.clone(),
        tx,
    ));

    let first = next_event(&mut events, Duration::from_secs(10))
        .await
        .expect("an event");
    assert_eq!(
        (first.playbook.as_str(), first.event.transition.clone()),
        ("holds", Transition::Firing)
    );
    assert_eq!(first.event.labels.get("pod").map(String::as_str), Some("a"));

    // An edit to another playbook: `holds` keeps its firing state, so nothing new is reported.
    std::fs::write(
        dir.path().join("never.yaml"),
        live_playbook("never", 6.0, "0s"),
    )
    .expect("write");
    assert!(matches!(reloader.reload(), ReloadOutcome::Applied { .. }));
    let quiet = next_event(&mut events, Duration::from_secs(3)).await;
    assert!(
        quiet.is_none(),
        "state was lost on an unrelated reload: {quiet:?}"
    );

    // An edit to `holds` itself starts its state afresh: now pending, with `for: 1m`.
    std::fs::write(
        dir.path().join("holds.yaml"),
        live_playbook("holds", 0.5, "1m"),
    )
    .expect("write");
    assert!(matches!(reloader.reload(), ReloadOutcome::Applied { .. }));
    let fresh = next_event(&mut events, Duration::from_secs(10))
        .await
        .expect("an event");
    assert_eq!(
        (fresh.playbook.as_str(), fresh.event.transition),
        ("holds", Transition::Pending)
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop stops when cancelled")
        .expect("the loop does not panic");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_series_that_stops_reporting_is_inconclusive_then_resolves_only_after_the_expiry() {
    // `crashy` restarts every minute until minute 40, then its series stops (the pod's node
    // went away); `steady` keeps being scraped, so the scrape pipeline as a whole works.
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(&restarts("crashy"), "0+1x40")
        .and_then(|s| s.series(&restarts("steady"), "0x89"))
        .expect("series");
    let prometheus = start(scenario);
    let trigger = trigger("    crashLoop: {restarts: 5, window: 15m}\n");
    let events = run(&prometheus, &trigger, 20..80).await;
    let crashy: Vec<(i64, &str)> = events
        .iter()
        .filter(|e| e.labels.get("pod").map(String::as_str) == Some("crashy"))
        .map(|e| {
            let minute = (e.at.timestamp() - prometheus.start_time()) / 60;
            (minute, e.transition.event())
        })
        .collect();
    // Firing from the start; stale once its newest sample is older than staleAfter (3m);
    // absent once Prometheus's 5m lookback no longer finds it, while `increase` over the
    // window still holds; resolved only 15 minutes after it went absent.
    assert_eq!(
        crashy,
        [
            (20, "signal_firing"),
            (44, "signal_inconclusive"),
            (46, "signal_inconclusive"),
            (61, "signal_resolved"),
        ],
        "{events:#?}"
    );
    let reasons: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.transition {
            Transition::Inconclusive { reason } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        reasons[0].contains("`restarts` sample is older than staleAfter (180s)"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("no recent series"), "{reasons:?}");
    assert!(fired(&events, "pod").iter().all(|p| p == "crashy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_input_with_no_series_at_all_is_inconclusive_not_quiet() {
    // The working set is scraped, but kube-state-metrics (the limits) is missing entirely.
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(
            r#"container_memory_working_set_bytes{namespace="shop",pod="a",container="app"}"#,
            "1e9+1e7x59",
        )
        .expect("series");
    let prometheus = start(scenario);
    let leak = trigger("    memoryLeak: {window: 30m, horizon: 2h}\n");
    let events = run(&prometheus, &leak, 40..45).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.transition.event())
            .collect::<Vec<_>>(),
        ["signal_inconclusive"],
        "reported once, not at every evaluation: {events:#?}"
    );
    let Transition::Inconclusive { reason } = &events[0].transition else {
        unreachable!()
    };
    assert!(
        reason.contains("input `limit` has no series")
            && reason.contains("kube_pod_container_resource_limits"),
        "{reason}"
    );
    // A selector that matches nothing is the same: a typo must not look like health.
    let typo = trigger("    crashLoop: {restarts: 3, selector: '{namespace=\"shpo\"}'}\n");
    let events = run(&prometheus, &typo, 40..41).await;
    assert_eq!(inconclusive(&events), 1, "{events:#?}");
}

#[test]
fn a_flapping_series_is_one_incident_in_a_replay() {
    // Holds for 5 minutes, drops for 2, three times over, then stays quiet.
    let scenario = Scenario::new(MINUTE)
        .expect("interval")
        .series(
            r#"queue_depth{namespace="shop",deployment="worker"}"#,
            "90x4 0x1 90x4 0x1 90x4 0x40",
        )
        .expect("series");
    let prometheus = start(scenario);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("queue.yaml"),
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: queue}\nspec:\n  trigger:\n    promql: {expr: 'max by (namespace, deployment) (queue_depth) > 50'}\n  target: {kind: Deployment, namespace: \"${labels.namespace}\", name: \"${labels.deployment}\"}\n  cooldown: 30m\n  steps:\n    - {action: capture_logs, risk: none}\n",
    )
    .expect("write playbook");
    let journal = dir.path().join("replay.db");
    let journal = journal.to_str().expect("a UTF-8 path");
    let (stdout, summary) = replay(dir.path(), &prometheus, 0..=40, &["--journal", journal]);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let incidents: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| {
            l["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("incident_"))
        })
        .map(|l| {
            (
                l["event"].as_str().expect("event"),
                l["incident"].as_str().expect("incident id"),
            )
        })
        .collect();
    let events: Vec<&str> = incidents.iter().map(|i| i.0).collect();
    assert_eq!(
        events,
        [
            "incident_opened",
            "incident_resolved",
            "incident_reopened",
            "incident_resolved",
            "incident_reopened",
            "incident_resolved"
        ],
        "{lines:#?}"
    );
    assert!(
        incidents.iter().all(|i| i.1 == incidents[0].1),
        "one incident throughout: {incidents:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["target"] == "Deployment shop/worker")
    );
    assert!(summary.contains("1 incident(s) opened"), "{summary}");

    // The journal tells the same story to `salve incidents`.
    let id = incidents[0].1.to_string();
    let incidents = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["incidents", "--journal", journal])
            .args(args)
            .output()
            .expect("run salve incidents");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let list = incidents(&[]);
    assert!(
        list.contains(&id) && list.contains("Deployment shop/worker"),
        "{list}"
    );
    // Held from minute 0, resolved for the last time at minute 19: detected at once (`for`
    // is 0), recovered 19 minutes after it started.
    assert!(
        list.contains("1 incident(s), 0 open; MTTD 0s, MTTR 19m"),
        "{list}"
    );
    let timeline = incidents(&[&id]);
    let verbs: Vec<&str> = timeline
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        verbs,
        [
            "SIGNAL", "DETECT", "CLEARED", "RESOLVED", "SIGNAL", "REOPEN", "CLEARED", "RESOLVED",
            "SIGNAL", "REOPEN", "CLEARED", "RESOLVED"
        ],
        "{timeline}"
    );
}

#[test]
fn salve_test_checks_the_steps_the_plan_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let series = r#"      series: {'queue_depth{namespace="shop",deployment="worker"}': '90x10'}
"#;
    let tests = format!(
        "    - name: recent deploy rolls back\n{series}      facts: {{target: {{revisionAge: 10m}}}}\n      expect: {{incident: true, steps: [logs, undo]}}\n\
         \x20   - name: wrongly expects a rollback of an old deploy\n{series}      facts: {{target: {{revisionAge: 2d}}}}\n      expect: {{incident: true, steps: [logs, undo]}}\n\
         \x20   - name: unknown age skips the rollback\n{series}      expect: {{incident: true, steps: [logs]}}\n\
         \x20   - name: a target named from labels needs no facts\n{series}      expect: {{incident: true, steps: [logs]}}\n"
    );
    std::fs::write(
        dir.path().join("queue.yaml"),
        format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: queue}}\nspec:\n  trigger:\n    promql: {{expr: 'max by (namespace, deployment) (queue_depth) > 50'}}\n  target: {{kind: Deployment, namespace: \"${{labels.namespace}}\", name: \"${{labels.deployment}}\"}}\n  steps:\n    - {{name: logs, action: capture_logs, risk: none}}\n    - {{name: undo, action: rollout_undo, risk: medium, when: \"target.revisionAge < duration('1h')\"}}\n  tests:\n{tests}"
        ),
    )
    .expect("write playbook");
    std::fs::write(
        dir.path().join("owned.yaml"),
        format!(
            "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: owned}}\nspec:\n  trigger:\n    promql: {{expr: 'max by (namespace, deployment) (queue_depth) > 50'}}\n  target: {{kind: Deployment, namespace: \"${{labels.namespace}}\", name: \"${{owner.name}}\"}}\n  steps:\n    - {{name: logs, action: capture_logs, risk: none}}\n  tests:\n    - name: without the owner\n{series}      expect: {{incident: true, steps: [logs]}}\n    - name: with the owner\n{series}      facts: {{owner: {{name: worker}}}}\n      expect: {{incident: true, steps: [logs]}}\n"
        ),
    )
    .expect("write playbook");
    let (code, text) = salve_test(dir.path(), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("  ok    recent deploy rolls back"), "{text}");
    assert!(
        text.contains("  FAIL  wrongly expects a rollback of an old deploy")
            && text.contains("expected steps [logs, undo]; the plan runs [logs]; skipped: undo (`target.revisionAge < duration('1h')` is false)"),
        "{text}"
    );
    assert!(
        text.contains("  ok    unknown age skips the rollback"),
        "{text}"
    );
    assert!(
        text.contains("  FAIL  without the owner")
            && text.contains("no plan: target.name: `${owner.name}` is unknown"),
        "{text}"
    );
    assert!(text.contains("  ok    with the owner"), "{text}");
    assert!(
        text.contains("result: 4 passed, 2 failed, 0 skipped"),
        "{text}"
    );
}

#[test]
fn the_readme_playbook_is_valid_and_its_tests_pass() {
    let readme = include_str!("../README.md");
    let start = readme.find("```yaml\n").expect("a YAML example") + "```yaml\n".len();
    let example = &readme[start..start + readme[start..].find("```").expect("its end")];
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("example.yaml"), example).expect("write the example");
    let (code, text) = salve_test(dir.path(), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("result: 1 passed, 0 failed"), "{text}");
}
