//! Replay speed: evaluation steps per second when backtesting a memory-leak playbook over a
//! 7-day, 100-series scenario in a real Prometheus (Debian's package).
//!
//! Run with `cargo bench --bench replay`. Options (after `--`): `--days N` (7), `--pods N`
//! (50: one working-set and one limit series each, so 100 series), `--step SECONDS` (60).
//! Prints the backfill time, the replay time, steps per second, and how each step splits
//! between the Prometheus round trips and Salve's own work (signal states and events), then
//! replays again through `Evaluation::step`, the path `salve replay` takes.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::DateTime;
use salve::incident::Incidents;
use salve::playbook::load::{Loaded, load_text};
use salve::prometheus::{self, Scenario};
use salve::signal;
use salve::signal::evaluate::Evaluator;
use salve::signal::evaluation::{Alerts, Evaluation, Sources};
use salve::signal::state::Tracker;

fn option(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a whole number"))
        .unwrap_or(default)
}

fn main() {
    let days = option("--days", 7);
    let pods = option("--pods", 50);
    let step = option("--step", 60);
    let minutes = days * 24 * 60;

    let mut scenario = Scenario::new(Duration::from_secs(60)).expect("interval");
    for pod in 0..pods {
        // Every fifth pod leaks 200 kB a minute and reaches its limit after about 3.5 days; the
        // others hold steady.
        let growth = if pod % 5 == 0 { "2e5" } else { "0" };
        scenario = scenario
            .series(
                &format!(
                    r#"container_memory_working_set_bytes{{namespace="prod",pod="p-{pod:03}",container="app"}}"#
                ),
                &format!("1e9+{growth}x{}", minutes - 1),
            )
            .and_then(|s| {
                s.series(
                    &format!(
                        r#"kube_pod_container_resource_limits{{namespace="prod",pod="p-{pod:03}",container="app",resource="memory"}}"#
                    ),
                    &format!("2e9x{}", minutes - 1),
                )
            })
            .expect("series");
    }
    let started = Instant::now();
    let server = prometheus::start(&scenario).expect("backfill and start prometheus");
    let backfill = started.elapsed();

    let text = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: leak}\nspec:\n  trigger:\n    memoryLeak: {selector: '{namespace=\"prod\"}', window: 30m, horizon: 1h}\n    for: 5m\n  target: {kind: Deployment, namespace: \"${labels.namespace}\", name: \"${owner.name}\"}\n  steps:\n    - {action: capture_logs, risk: none}\n";
    let mut loaded = Loaded::default();
    load_text(Path::new("leak.yaml"), text, &mut loaded);
    let trigger = &loaded.playbooks[0].trigger;
    let queries = signal::for_trigger(trigger).expect("queries");
    let evaluator = Evaluator::new(server.url(), Duration::from_secs(10)).expect("evaluator");
    let mut tracker = Tracker::new(trigger.for_, trigger.keep_firing_for);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut steps, mut events) = (0u64, 0usize);
    let (mut querying, mut tracking) = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    let mut at = server.start_time() + 30 * 60;
    while at <= server.end_time() {
        let when = DateTime::from_timestamp(at, 0).expect("time");
        let asked = Instant::now();
        let observation = runtime.block_on(evaluator.observe(&queries, when));
        querying += asked.elapsed();
        let tracked = Instant::now();
        events += tracker.observe(when, observation).len();
        tracking += tracked.elapsed();
        steps += 1;
        at += i64::try_from(step).expect("step");
    }
    let split = started.elapsed();

    // The same replay through `Evaluation::step`, the code `salve replay` runs: the condition,
    // the input-freshness check and, on changes, the values, with incidents on top.
    let sources = Sources {
        prometheus: Some(evaluator),
        alerts: Alerts::History,
        ..Sources::default()
    };
    let evaluation = Evaluation::new(sources, 8, loaded.playbooks.iter().cloned());
    let mut incidents = Incidents::new();
    let (mut replay_events, mut opened) = (0usize, 0usize);
    let started = Instant::now();
    let mut at = server.start_time() + 30 * 60;
    while at <= server.end_time() {
        let when = DateTime::from_timestamp(at, 0).expect("time");
        for e in runtime.block_on(evaluation.step(when)) {
            replay_events += 1;
            opened += usize::from(incidents.apply(&loaded.playbooks[0], &e.event).is_some());
        }
        at += i64::try_from(step).expect("step");
    }
    let replay = started.elapsed();
    let per_step = |d: Duration| d.as_secs_f64() * 1e6 / steps as f64;
    println!(
        "scenario: {days} days, {} series, 1-minute samples",
        pods * 2
    );
    println!("backfill + start: {:.2} s", backfill.as_secs_f64());
    println!(
        "replay (Evaluation::step + incidents): {steps} steps of {step} s in {:.2} s = {:.0} steps/s ({replay_events} signal events, {opened} incident events)",
        replay.as_secs_f64(),
        steps as f64 / replay.as_secs_f64()
    );
    println!(
        "split run ({:.2} s, {events} events) per step: {:.0} µs queries (condition + inputs: HTTP + Prometheus + JSON), {:.1} µs signal states",
        split.as_secs_f64(),
        per_step(querying),
        per_step(tracking)
    );
}
