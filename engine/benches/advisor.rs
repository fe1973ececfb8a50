//! The LLM advisor's cost per incident: how much longer a remediation takes when the advisor
//! is consulted, against a local scripted OpenAI-compatible server (so the model's own latency
//! is whatever `--model-ms` says, 0 by default), through the real executor, the in-process
//! API server (the Deployment, a crash-looping pod with logs and an event) and a real journal.
//!
//! Cases, each over `--runs N` incidents (50): the advisor off; on, answered at once (the
//! answer cache off, so every incident asks); on, answered from the cache; on, answered after
//! `--model-ms`; on, the endpoint down (connection refused); on, its breaker open.
//!
//! Run with `cargo bench --bench advisor`; numbers in BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use chrono::Utc;
use salve::executor::{Executor, Finish, Settings};
use salve::gate::Gate;
use salve::incident::Incidents;
use salve::journal::Journal;
use salve::kube_fake::FakeApiServer;
use salve::playbook::load::{Loaded, load_text};
use salve::signal::state::{LabelSet, SignalEvent, Transition};
use serde_json::json;

#[path = "common/args.rs"]
mod args;
#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

const PLAYBOOK: &str = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: heal}\nspec:\n  trigger:\n    promql: {expr: 'vector(1)'}\n  target: {kind: Deployment, namespace: shop, name: api}\n  cooldown: 0s\n  steps:\n    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n";

fn main() {
    let runs = args::number("--runs", 50);
    let model = Duration::from_millis(args::number("--model-ms", 200));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let instant = serve(Duration::ZERO).await;
        let slow = serve(model).await;
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            format!("http://{}/v1", listener.local_addr().expect("its address"))
        };
        let advisor = |url: &str, extra: &str| {
            format!(
                "\n  advisor: {{baseUrl: '{url}', model: bench, timeout: 5s, retries: 0, budget: {{callsPerHour: 100000, tokensPerHour: 100000000}}{extra}}}"
            )
        };
        let no_cache = ", cache: {ttl: 0s}";
        let cases = [
            ("advisor off", String::new()),
            ("advisor on, answered at once", advisor(&instant, no_cache)),
            ("advisor on, answer from its cache", advisor(&instant, "")),
            (
                &*format!("advisor on, model takes {} ms", model.as_millis()),
                advisor(&slow, no_cache),
            ),
            (
                "advisor on, endpoint down (connection refused)",
                advisor(&closed, ", circuitBreaker: {failures: 1000000}"),
            ),
            (
                "advisor on, breaker open",
                advisor(&closed, ", circuitBreaker: {failures: 1, reset: 1h}"),
            ),
        ];
        println!("| per incident (remediate: diagnose → advice → plan → one step) | n | min | p50 | p99 | mean | max |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (name, advisor) in cases {
            let samples = measure(&advisor, runs).await;
            println!("{}", Stats::new(samples).row(name));
        }
    });
}

/// Remediates `runs` incidents under a policy with `advisor` (its `advisor:` line, or
/// nothing); the wall time of each `remediate`.
async fn measure(advisor: &str, runs: u64) -> Vec<Duration> {
    let (fake, client) = FakeApiServer::start().await.expect("the fake starts");
    seed(&fake);
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Arc::new(Journal::open(&dir.path().join("journal.db")).expect("journal"));
    let policy = load(&format!(
        "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {{name: bench}}\nspec:\n  maxAutonomousRisk: medium\n  dryRun: false\n  limits: {{actionsPerHour: 100000, concurrentIncidents: 100}}{advisor}\n"
    ))
    .policies[0]
    .clone();
    let playbook = load(PLAYBOOK).playbooks[0].clone();
    let executor = Executor::new(
        client,
        journal,
        Gate::new(policy),
        None,
        Settings {
            poll: Duration::from_millis(100),
            ..Settings::default()
        },
    );
    let mut samples = Vec::new();
    // Every incident the same evidence (so the cached case hits its cache).
    let active_at = Utc::now();
    // One warm-up incident, then the measured ones.
    for run in 0..=runs {
        let signal = SignalEvent {
            at: Utc::now(),
            labels: LabelSet::from([
                ("namespace".into(), "shop".into()),
                ("pod".into(), "api-7d9f-x2k4".into()),
            ]),
            transition: Transition::Firing,
            value: Some(1.0),
            values: Default::default(),
            active_at: Some(active_at),
        };
        let incident = Incidents::new()
            .apply(&playbook, &signal)
            .expect("an incident")
            .incident;
        let began = Instant::now();
        let finish = executor
            .remediate(&playbook, &incident, &signal)
            .await
            .expect("journaled");
        assert_eq!(finish, Finish::Remediated);
        if run > 0 {
            samples.push(began.elapsed());
        }
    }
    samples
}

fn load(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    load_text(Path::new("bench.yaml"), text, &mut loaded);
    assert!(!loaded.has_errors(), "{:#?}", loaded.diagnostics);
    loaded
}

fn seed(fake: &FakeApiServer) {
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
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "api-7d9f-x2k4", "namespace": "shop", "labels": {"app": "api"}},
        "spec": {"containers": [{"name": "app", "image": "api:1"}]},
    }))
    .expect("seed the pod");
    let log: String = (0..40)
        .map(|i| {
            format!("2026-11-26T03:17:{i:02}Z ERROR payment failed: pool exhausted (request {i})\n")
        })
        .collect();
    fake.set_logs("shop", "api-7d9f-x2k4", "app", false, log);
    fake.insert(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "api-7d9f-x2k4.1", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "name": "api-7d9f-x2k4", "namespace": "shop"},
        "reason": "BackOff", "message": "Back-off restarting failed container", "count": 5,
    }))
    .expect("seed the event");
}

/// A local endpoint answering every chat with a valid advice after `delay`; its base URL.
async fn serve(delay: Duration) -> String {
    let answer = json!({
        "model": "bench",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": json!({
            "rootCause": "sig-1", "confidence": 0.7,
            "explanation": "The pool is exhausted.", "evidence": ["sig-1", "log-1"],
            "suggestedPlaybook": "heal", "riskAdjustment": null,
        }).to_string()}}],
        "usage": {"total_tokens": 900},
    })
    .to_string();
    let app = Router::new().fallback(move || {
        let answer = answer.clone();
        async move {
            tokio::time::sleep(delay).await;
            ([("content-type", "application/json")], answer)
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/v1")
}
