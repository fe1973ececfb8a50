//! The HTTP API's cost as a client sees it over loopback: listing 1,000 incidents (each with
//! the timeline a remediation journals), one incident with its timeline, and a `/metrics`
//! scrape with every family populated.
//!
//! Run with `cargo bench --bench api`. Options (after `--`): `--incidents N` (1000),
//! `--runs N` (200 requests per endpoint).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use salve::api::{self, ApiState, Approvers, PlaybookStatus};
use salve::journal::{Journal, Kind, Record};
use serde_json::json;

#[path = "common/args.rs"]
mod args;
#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

/// The entries one remediated incident leaves in the journal, as the executor writes them.
const TIMELINE: [Kind; 10] = [
    Kind::SignalFiring,
    Kind::IncidentOpened,
    Kind::Diagnosed,
    Kind::Planned,
    Kind::GateVerdict,
    Kind::StepStarted,
    Kind::StepSucceeded,
    Kind::VerifyPassed,
    Kind::RemediationFinished,
    Kind::IncidentResolved,
];

fn seed(journal: &Journal, incidents: usize) {
    let began = Utc::now() - chrono::Duration::days(30);
    for n in 0..incidents {
        let id = format!("inc-{n:012x}");
        let playbook = ["memory-leak-rollback", "crash-loop", "latency-failover"][n % 3];
        for (k, kind) in TIMELINE.into_iter().enumerate() {
            let at = began + chrono::Duration::seconds((n * 600 + k * 15) as i64);
            journal
                .append(&Record {
                    at,
                    kind,
                    playbook: playbook.into(),
                    incident: Some(id.clone()),
                    detail: json!({
                        "labels": {"namespace": "shop", "pod": format!("api-7f9c-{n}"),
                                   "container": "app"},
                        "values": {"secondsToOOM": 1140.0, "growthMiBPerMinute": 19.07},
                        "activeAt": (at - chrono::Duration::seconds(120)).to_rfc3339(),
                        "target": "Deployment shop/api",
                        "summary": "rollout_undo Deployment shop/api",
                    }),
                })
                .expect("append");
        }
    }
}

/// Times `runs` GETs of `url` on one keep-alive connection; the stats and the body's size.
async fn time(client: &reqwest::Client, url: &str, runs: usize) -> (Stats, usize) {
    let mut samples = Vec::with_capacity(runs);
    let mut size = 0;
    for _ in 0..runs + 5 {
        let started = Instant::now();
        let response = client.get(url).send().await.expect("an answer");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        size = response.bytes().await.expect("a body").len();
        samples.push(started.elapsed());
    }
    // The first requests warm the connection and the page cache.
    (Stats::new(samples.split_off(5)), size)
}

fn main() {
    let incidents = usize::try_from(args::number("--incidents", 1000)).expect("a count");
    let runs = usize::try_from(args::number("--runs", 200)).expect("a count");
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Arc::new(Journal::open(&dir.path().join("journal.db")).expect("open"));
    let seeding = Instant::now();
    seed(&journal, incidents);
    println!(
        "seeded {incidents} incidents ({} entries) in {:.1} s",
        incidents * TIMELINE.len(),
        seeding.elapsed().as_secs_f64()
    );

    // Every family with series in it: a day's worth of what the engine counts.
    let metrics = salve::metrics::Metrics::default();
    for n in 0..500 {
        let playbook = format!("playbook-{}", n % 50);
        metrics.evaluated(&playbook, n % 7 == 0);
        metrics.signals(&playbook, n % 3, n % 2);
        metrics.remediation(&playbook, ["remediated", "rolled_back", "halted"][n % 3]);
        metrics.action(
            ["scale", "rollout_undo", "cordon"][n % 3],
            n % 5 != 0,
            n % 2 == 0,
        );
        metrics.wasm_step("ok", Some(Duration::from_micros(15 + n as u64)));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("an address");
        let state = ApiState::new(
            Arc::clone(&journal),
            PlaybookStatus::new(),
            metrics,
            Approvers::default(),
        );
        api::serve(
            listener,
            api::router(state, None),
            tokio_util::sync::CancellationToken::new(),
        );
        let client = reqwest::Client::new();
        let base = format!("http://{address}");
        let last = format!("inc-{:012x}", incidents - 1);
        println!("| request | n | min | p50 | p99 | mean | max | body |");
        println!("|---|---|---|---|---|---|---|---|");
        for (name, path) in [
            (
                format!("GET /api/v1/incidents ({incidents})"),
                "/api/v1/incidents".to_string(),
            ),
            (
                "GET /api/v1/incidents/{id} (timeline)".to_string(),
                format!("/api/v1/incidents/{last}"),
            ),
            ("GET /metrics".to_string(), "/metrics".to_string()),
            ("GET /healthz (floor)".to_string(), "/healthz".to_string()),
        ] {
            let (stats, size) = time(&client, &format!("{base}{path}"), runs).await;
            println!("{} {:.1} KiB |", stats.row(&name), size as f64 / 1024.0);
        }
    });
}
