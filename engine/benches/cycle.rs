//! Engine overhead per evaluation cycle for 1,000 generated playbooks, excluding the time
//! Prometheus spends answering.
//!
//! Run with `cargo bench --bench cycle` (release profile). A cycle is one
//! `Evaluation::step(at)`: every trigger of the set that Salve evaluates (all but `event`) is
//! evaluated once at `at`. The queries go over HTTP to a fake Prometheus in this process (axum
//! on `127.0.0.1:0`, on its own runtime thread). It answers *any* instant query, GET or POST,
//! with a ready-made body of `--series` vector series: the plain body, or, for a combined
//! query (`label_replace(..., "salve_part", "<name>", "", "") or ...`), the same series once per
//! part, each labelled with its part (built on first use, then served from a cache). Every
//! value is 15: a condition holds (Prometheus filtered already), an input is 15 s old (fresh),
//! and a further value is a number. Cycles are 30 s apart in evaluation time, so the signals go
//! from pending to firing as their `for` elapses.
//!
//! Per cycle it reports the wall time, the CPU time of Salve's threads and of the fake's thread
//! (from `/proc/self/task/*/schedstat`) and the queries served, at the live loop's concurrency
//! and one at a time. For the breakdown, after each cycle, at the same instant:
//!
//! - the trackers' work alone: `Tracker::observe` fed what the fake's answers become, no HTTP;
//! - the cycle's queries (each trigger's condition and input check, from the public
//!   `signal::for_trigger`) replayed one at a time in three ways: a bare HTTP round trip
//!   (reqwest GET, body read), prometheus-http-query's `query().get()` (which adds its JSON
//!   decoding), and `Evaluator::instant` (which adds its timeout and turns series into samples).
//!
//! They run interleaved with the cycles because the cost of decoding depends on the state of
//! the heap, which the cycles change: measured before and after them, the same work differs by
//! up to a half.
//!
//! Options (after `--`): `--playbooks N` (1000), `--series K` (10), `--cycles N` (50, after
//! `--warmup N` = 5 untimed cycles), `--concurrency N` (the live loop's default).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use salve::playbook::load::load_paths;
use salve::playbook::{Playbook, TriggerKind};
use salve::signal::evaluate::Evaluator;
use salve::signal::evaluation::{Alerts, Evaluation, PlaybookEvent, Sources};
use salve::signal::live::LiveOptions;
use salve::signal::state::{Freshness, LabelSet, Observation, Sample, Tracker};
use salve::signal::{self, PART_LABEL};
use tokio::runtime::Runtime;

#[path = "common/playbooks.rs"]
mod playbooks;
#[path = "common/stats.rs"]
mod stats;

use stats::Stats;

/// The name of the fake Prometheus's runtime thread, which tells its CPU time from Salve's.
const FAKE_THREAD: &str = "fake-prom";
/// The name of the engine runtime's threads.
const ENGINE_THREAD: &str = "salve-engine";
/// The time between two cycles in evaluation time (the `interval` of the generated `promql`
/// triggers).
const INTERVAL: i64 = 30;
/// The evaluation time of the first cycle (2025-01-01T00:00:00Z).
const START: i64 = 1_735_689_600;
/// The evaluator's query timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The value of every series the fake returns (see the module documentation).
const VALUE: f64 = 15.0;

struct Options {
    playbooks: usize,
    series: usize,
    cycles: usize,
    warmup: usize,
    concurrency: usize,
}

fn options() -> Options {
    let mut options = Options {
        playbooks: 1000,
        series: 10,
        cycles: 50,
        warmup: 5,
        concurrency: LiveOptions::default().concurrency,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match arg.as_str() {
            "--playbooks" => options.playbooks = number("--playbooks"),
            "--series" => options.series = number("--series"),
            "--cycles" => options.cycles = number("--cycles").max(1),
            "--warmup" => options.warmup = number("--warmup"),
            "--concurrency" => options.concurrency = number("--concurrency").max(1),
            // `cargo bench` passes `--bench`; anything else is ignored as well.
            _ => {}
        }
    }
    options
}

fn main() {
    let options = options();
    let tmp = tempfile::tempdir().expect("create a temporary directory");
    playbooks::generate(tmp.path(), options.playbooks);
    let loaded = load_paths(&[tmp.path().to_path_buf()]);
    assert!(
        !loaded.has_errors(),
        "generated playbooks are invalid: {}",
        loaded.diagnostics[0]
    );
    let playbooks = loaded.playbooks;
    assert_eq!(playbooks.len(), options.playbooks);

    let series = series_labels(options.series);
    let fake = Fake::start(&series);
    let engine = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(ENGINE_THREAD)
        .build()
        .expect("engine runtime");

    let started = Instant::now();
    let concurrent = evaluation(evaluator(&fake.url), options.concurrency, &playbooks);
    let construction = started.elapsed();
    let sequential = evaluation(evaluator(&fake.url), 1, &playbooks);
    let triggers = concurrent.len();

    let queries = cycle_queries(&playbooks, &series);
    let replayer = Replayer::new(&fake, queries, options.concurrency);
    let mut trackers = Trackers::new(&playbooks, &series);
    assert_eq!(
        trackers.len(),
        triggers,
        "the tracker breakdown must feed the triggers the evaluation evaluates"
    );
    let (mut c_cycles, mut s_cycles) = (Cycles::default(), Cycles::default());
    let mut replay = Replay::default();
    engine.block_on(replayer.check_post());
    for k in 0..options.warmup + options.cycles {
        let keep = k >= options.warmup;
        c_cycles.run(&engine, &concurrent, &fake, at(k), keep);
        s_cycles.run(&engine, &sequential, &fake, at(k), keep);
        trackers.step(k, keep);
        replayer.pass(&engine, at(k), &mut replay, keep);
    }
    let (concurrent, sequential) = (c_cycles, s_cycles);

    println!(
        "{} playbooks, {triggers} triggers evaluated; {} series per answer ({} bytes plain); \
         {} cycles after {} warm-up, 30 s apart; Evaluation::new took {}",
        options.playbooks,
        options.series,
        fake.plain_len(),
        options.cycles,
        options.warmup,
        format_duration(construction),
    );
    println!("CPU clock: {}", Cpu::read().clock);
    let c = options.concurrency;
    for (name, run) in [
        (format!("concurrency {c}"), &concurrent),
        ("concurrency 1".to_string(), &sequential),
    ] {
        println!(
            "{name}: queries per cycle {}; signal events {}",
            describe_queries(&run.queries),
            describe(&run.events)
        );
    }
    println!(
        "trackers alone: signal events {}",
        describe(&trackers.events)
    );
    let n = replayer.len();
    println!(
        "replayed: {n} queries per pass (conditions, input checks, alerts), \
         the first {ONE_AT_A_TIME} also one at a time"
    );

    println!();
    println!("| measurement | n | min | p50 | p99 | mean | max |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let row = |name: &str, stats: &Stats| println!("{}", stats.row(name));
    let concurrent_wall = Stats::new(concurrent.wall);
    row(
        &format!("**cycle, concurrency {c} (the live loop's): wall time**"),
        &concurrent_wall,
    );
    let concurrent_cpu = Stats::new(concurrent.salve_cpu);
    row(
        "  CPU, Salve's threads (main + engine runtime)",
        &concurrent_cpu,
    );
    row(
        "  CPU, fake Prometheus's thread",
        &Stats::new(concurrent.fake_cpu),
    );
    row(
        "**cycle, concurrency 1: wall time**",
        &Stats::new(sequential.wall),
    );
    row(
        "  CPU, Salve's threads (main + engine runtime)",
        &Stats::new(sequential.salve_cpu),
    );
    row(
        "  CPU, fake Prometheus's thread",
        &Stats::new(sequential.fake_cpu),
    );
    let tracking = Stats::new(trackers.took);
    row(
        &format!("trackers alone (`Tracker::observe` × {triggers}, no HTTP)"),
        &tracking,
    );
    let ways = [
        ("bare HTTP (reqwest GET, body read)", &replay.raw),
        (
            "prometheus-http-query `query().get()` (+ its JSON decode)",
            &replay.client,
        ),
        (
            "`Evaluator::instant` (+ timeout, series into samples)",
            &replay.instant,
        ),
    ];
    for (way, pass) in ways {
        row(
            &format!("the cycle's {n} queries, concurrency {c}: {way}, wall"),
            &Stats::new(pass.wall.clone()),
        );
        row("  CPU, Salve's threads", &Stats::new(pass.cpu.clone()));
    }
    for (way, pass) in ways {
        row(
            &format!("one query at a time: {way}"),
            &Stats::new(pass.alone.clone()),
        );
    }

    // Salve's CPU per cycle at the live loop's concurrency, split with the replays' CPU.
    let p50 = |s: &Stats| s.percentile(50.0).as_secs_f64();
    let cpu = |pass: &Pass| p50(&Stats::new(pass.cpu.clone()));
    let total = p50(&concurrent_cpu);
    let (raw, client, instant) = (cpu(&replay.raw), cpu(&replay.client), cpu(&replay.instant));
    println!();
    println!(
        "| Salve's CPU per cycle at concurrency {c} (p50 {}) | CPU | share |",
        format_duration(concurrent_cpu.percentile(50.0))
    );
    println!("|---|---:|---:|");
    let share = |name: &str, t: f64| {
        let sign = if t < 0.0 { "−" } else { "" };
        println!(
            "| {name} | {sign}{} | {:.0}% |",
            format_duration(Duration::from_secs_f64(t.abs())),
            100.0 * t / total
        );
    };
    share("HTTP: the same queries as bare round trips", raw);
    share("decoding the JSON (prometheus-http-query)", client - raw);
    share(
        "`Evaluator::instant` on top: series into samples, timeout",
        instant - client,
    );
    share(
        &format!("trackers (`Tracker::observe` × {triggers})"),
        p50(&tracking),
    );
    share(
        "the rest: judging inputs, values, events, the `step` stream",
        total - instant - p50(&tracking),
    );
    println!();
    println!(
        "CPU per query sent alone (Salve's threads, mean): bare HTTP {}, \
         prometheus-http-query {}, `Evaluator::instant` {}",
        format_duration(replay.raw.alone_cpu_each()),
        format_duration(replay.client.alone_cpu_each()),
        format_duration(replay.instant.alone_cpu_each()),
    );
    println!(
        "a cycle (p50) at concurrency {c}: {} wall = {:.2}% of a {INTERVAL} s interval, \
         {} of Salve's CPU = {:.2}% of one core",
        format_duration(concurrent_wall.percentile(50.0)),
        100.0 * p50(&concurrent_wall) / INTERVAL as f64,
        format_duration(concurrent_cpu.percentile(50.0)),
        100.0 * p50(&concurrent_cpu) / INTERVAL as f64,
    );
}

// ---------------------------------------------------------------------------------------------
// The engine, through its public API only. Its internals are changing (more queries per
// trigger, a bounded concurrent `step`, options for `Evaluation::new`): these are the only
// places that build or drive it.

/// The evaluator every measurement uses.
fn evaluator(url: &str) -> Evaluator {
    Evaluator::new(url, TIMEOUT).expect("evaluator")
}

/// The evaluation of `playbooks`, at most `concurrency` triggers at a time, with the fake as
/// its only source: alert triggers read its `ALERTS` series, as in a replay (the live engine
/// reads Alertmanager's webhook instead, without a query).
fn evaluation(evaluator: Evaluator, concurrency: usize, playbooks: &[Arc<Playbook>]) -> Evaluation {
    let sources = Sources {
        prometheus: Some(evaluator),
        alerts: Alerts::History,
        ..Sources::default()
    };
    Evaluation::new(sources, concurrency, playbooks.iter().cloned())
}

/// One evaluation cycle at `at`.
fn step(engine: &Runtime, evaluation: &Evaluation, at: DateTime<Utc>) -> Vec<PlaybookEvent> {
    engine.block_on(evaluation.step(at))
}

/// What the tracker of `playbook`'s trigger is fed at `at` (after an evaluation at `last`) when
/// Prometheus answers `samples`: what [`Evaluation::step`] makes of the fake's answers. `None`
/// for triggers that are not evaluated.
fn observation(
    playbook: &Playbook,
    samples: &[Sample],
    last: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Option<Observation> {
    match &playbook.trigger.kind {
        TriggerKind::Event { .. } => None,
        // A schedule holds, as one series, at the evaluation after its cron fired.
        TriggerKind::Schedule { schedule, .. } => Some(Observation::Holds(
            last.and_then(|last| schedule.after(&last).next())
                .filter(|fire| *fire <= at)
                .map(|fire| Sample {
                    labels: LabelSet::from([("schedule".to_string(), fire.to_rfc3339())]),
                    value: fire.timestamp() as f64,
                })
                .into_iter()
                .collect(),
        )),
        TriggerKind::Alert { .. } => Some(Observation::Holds(samples.to_vec())),
        _ => {
            let queries = signal::for_trigger(&playbook.trigger)?;
            Some(if queries.inputs.is_empty() {
                Observation::Holds(samples.to_vec())
            } else {
                Observation::Checked {
                    holds: samples.to_vec(),
                    inputs: samples
                        .iter()
                        .map(|s| (s.labels.clone(), Freshness::Fresh))
                        .collect(),
                }
            })
        }
    }
}

/// The evaluation time of cycle `k`.
fn at(k: usize) -> DateTime<Utc> {
    let k = i64::try_from(k).expect("cycle number");
    DateTime::from_timestamp(START + k * INTERVAL, 0).expect("evaluation time")
}

// ---------------------------------------------------------------------------------------------
// The fake Prometheus

/// An HTTP server that answers every `/api/v1/query` from prebuilt bodies, on its own
/// single-threaded runtime.
struct Fake {
    url: String,
    state: Arc<FakeState>,
    _runtime: Runtime,
}

struct FakeState {
    series: Vec<LabelSet>,
    /// The answers built so far, by the parts of a combined query (`""` for a plain query).
    bodies: Mutex<HashMap<String, Bytes>>,
    served: AtomicU64,
    /// Of which the combined queries for the ages of inputs (`timestamp(`).
    inputs: AtomicU64,
    /// Of which the other combined queries (further values).
    values: AtomicU64,
}

/// The queries the fake served, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Served {
    total: u64,
    inputs: u64,
    values: u64,
}

impl std::ops::Sub for Served {
    type Output = Served;

    fn sub(self, before: Served) -> Served {
        Served {
            total: self.total - before.total,
            inputs: self.inputs - before.inputs,
            values: self.values - before.values,
        }
    }
}

impl Fake {
    fn start(series: &[LabelSet]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(FAKE_THREAD)
            .enable_all()
            .build()
            .expect("fake Prometheus runtime");
        let plain = answer(series, &[]);
        let state = Arc::new(FakeState {
            series: series.to_vec(),
            bodies: Mutex::new(HashMap::from([(String::new(), plain)])),
            served: AtomicU64::new(0),
            inputs: AtomicU64::new(0),
            values: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/api/v1/query", get(serve).post(serve))
            .with_state(Arc::clone(&state));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fake Prometheus");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the fake's address")
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Fake {
            url,
            state,
            _runtime: runtime,
        }
    }

    /// The size of the plain answer.
    fn plain_len(&self) -> usize {
        self.state
            .bodies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get("")
            .map_or(0, Bytes::len)
    }

    /// The queries answered so far.
    fn served(&self) -> Served {
        Served {
            total: self.state.served.load(Ordering::Relaxed),
            inputs: self.state.inputs.load(Ordering::Relaxed),
            values: self.state.values.load(Ordering::Relaxed),
        }
    }
}

/// Answers a GET (the form in the URL) or a POST (the form in the body).
async fn serve(
    State(state): State<Arc<FakeState>>,
    RawQuery(url_form): RawQuery,
    body: Bytes,
) -> impl IntoResponse {
    let form = if body.is_empty() {
        url_form.unwrap_or_default().into_bytes()
    } else {
        body.to_vec()
    };
    let query = form_value(&form, "query").unwrap_or_default();
    let parts = parts(&query);
    state.served.fetch_add(1, Ordering::Relaxed);
    // The input summary (`count(...)`, stale ages) and the presence check (`group ...`).
    if query.contains("timestamp(") || query.contains("group ") {
        state.inputs.fetch_add(1, Ordering::Relaxed);
    } else if !parts.is_empty() {
        state.values.fetch_add(1, Ordering::Relaxed);
    }
    let key = parts.join(",");
    let body = state
        .bodies
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_insert_with(|| answer(&state.series, &parts))
        .clone();
    ([(CONTENT_TYPE, "application/json")], body)
}

/// The decoded value of `key` in an `application/x-www-form-urlencoded` form.
fn form_value(form: &[u8], key: &str) -> Option<String> {
    form.split(|b| *b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &[][..]),
        };
        (k == key.as_bytes()).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &[u8]) -> String {
    let hex = |b: &u8| (*b as char).to_digit(16);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' => match (text.get(i + 1).and_then(hex), text.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The part names of a combined query: the `"<name>"` after each `"salve_part",`.
fn parts(query: &str) -> Vec<String> {
    let label = format!("\"{PART_LABEL}\"");
    query
        .match_indices(&label)
        .filter_map(|(i, _)| {
            let rest = query[i + label.len()..].trim_start();
            let rest = rest.strip_prefix(',')?.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// The labels of the `count` series in every answer: enough of them that the labels each
/// trigger kind's target and values use are there.
fn series_labels(count: usize) -> Vec<LabelSet> {
    (0..count)
        .map(|k| {
            [
                ("namespace", format!("ns-{}", k % 40)),
                ("pod", format!("app-{k}-5d8f7c9b4-x{k:04}")),
                ("container", "app".to_string()),
                ("deployment", format!("app-{k}")),
                ("service", format!("svc-{k}")),
                ("le", "+Inf".to_string()),
                ("resource", "memory".to_string()),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect()
        })
        .collect()
}

/// A vector of `series`, once for a plain query, or once per part, labelled with it; for the
/// input summary's parts, one `count:` series per input and no `stale:` series (every input is
/// fresh).
fn answer(series: &[LabelSet], parts: &[String]) -> Bytes {
    let plain = [None];
    let labelled: Vec<Option<&String>> = parts.iter().map(Some).collect();
    let result: Vec<serde_json::Value> = if parts.is_empty() {
        &plain[..]
    } else {
        &labelled[..]
    }
    .iter()
    .flat_map(|part| {
        let count = part.filter(|p| p.starts_with("count:"));
        let stale = part.is_some_and(|p| p.starts_with("stale:"));
        let each: &[LabelSet] = if stale || count.is_some() {
            &[]
        } else {
            series
        };
        let counted = count.map(|part| {
            serde_json::json!({
                "metric": {PART_LABEL: part},
                "value": [START, series.len().to_string()],
            })
        });
        each.iter()
            .map(move |labels| {
                let mut metric = labels.clone();
                if let Some(part) = part {
                    metric.insert(PART_LABEL.to_string(), (*part).clone());
                }
                serde_json::json!({
                    "metric": metric,
                    "value": [START, VALUE.to_string()],
                })
            })
            .chain(counted)
            .collect::<Vec<_>>()
    })
    .collect();
    let body = serde_json::json!({
        "status": "success",
        "data": {"resultType": "vector", "result": result},
    });
    Bytes::from(serde_json::to_vec(&body).expect("serialize the answer"))
}

/// The samples the evaluator makes of a plain answer.
fn samples(series: &[LabelSet]) -> Vec<Sample> {
    series
        .iter()
        .map(|labels| Sample {
            labels: labels.clone(),
            value: VALUE,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Benchmarks

/// The cycles of one evaluation.
#[derive(Default)]
struct Cycles {
    wall: Vec<Duration>,
    salve_cpu: Vec<Duration>,
    fake_cpu: Vec<Duration>,
    queries: Vec<Served>,
    events: BTreeMap<&'static str, usize>,
}

impl Cycles {
    /// Runs the cycle at `at`; keeps its measurements when `keep`.
    fn run(
        &mut self,
        engine: &Runtime,
        evaluation: &Evaluation,
        fake: &Fake,
        at: DateTime<Utc>,
        keep: bool,
    ) {
        let (served, cpu) = (fake.served(), Cpu::read());
        let started = Instant::now();
        let events = step(engine, evaluation, at);
        let wall = started.elapsed();
        let (cpu, served) = (Cpu::read().since(&cpu), fake.served() - served);
        for event in &events {
            *self
                .events
                .entry(event.event.transition.event())
                .or_default() += 1;
        }
        if keep {
            self.wall.push(wall);
            self.salve_cpu.push(cpu.salve);
            self.fake_cpu.push(cpu.fake);
            self.queries.push(served);
        }
    }
}

/// The trackers' share of a cycle: one `Tracker` per evaluated trigger, each fed what its
/// trigger makes of the fake's answers, at the same instants, without HTTP or JSON.
struct Trackers<'a> {
    trackers: Vec<(&'a Playbook, Tracker)>,
    samples: Vec<Sample>,
    took: Vec<Duration>,
    events: BTreeMap<&'static str, usize>,
}

impl<'a> Trackers<'a> {
    fn new(playbooks: &'a [Arc<Playbook>], series: &[LabelSet]) -> Self {
        let samples = samples(series);
        let trackers = playbooks
            .iter()
            .filter(|p| observation(p, &samples, None, at(0)).is_some())
            .map(|p| {
                (
                    &**p,
                    Tracker::new(p.trigger.for_, p.trigger.keep_firing_for),
                )
            })
            .collect();
        Trackers {
            trackers,
            samples,
            took: Vec::new(),
            events: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.trackers.len()
    }

    /// Feeds every tracker its observation of cycle `k`; keeps the time when `keep`.
    fn step(&mut self, k: usize, keep: bool) {
        let (at, last) = (at(k), k.checked_sub(1).map(at));
        let observations: Vec<Observation> = self
            .trackers
            .iter()
            .filter_map(|(playbook, _)| observation(playbook, &self.samples, last, at))
            .collect();
        let started = Instant::now();
        let changes: Vec<_> = self
            .trackers
            .iter_mut()
            .zip(observations)
            .flat_map(|((_, tracker), observation)| tracker.observe(at, observation))
            .collect();
        let took = started.elapsed();
        for change in &changes {
            *self.events.entry(change.transition.event()).or_default() += 1;
        }
        if keep {
            self.took.push(took);
        }
    }
}

/// The queries of one cycle by trigger, as far as the public API tells: each trigger's condition
/// and input summary (asked together), the presence check of the signals that hold, and an
/// `ALERTS` selector per alert trigger. (The few queries for further values, sent when a signal
/// changes, are left out.)
fn cycle_queries(playbooks: &[Arc<Playbook>], series: &[LabelSet]) -> Vec<Vec<String>> {
    let mut queries = Vec::new();
    for playbook in playbooks {
        match &playbook.trigger.kind {
            TriggerKind::Event { .. } | TriggerKind::Schedule { .. } => {}
            TriggerKind::Alert { alertname, .. } => {
                queries.push(vec![format!(
                    r#"ALERTS{{alertname="{alertname}", alertstate="firing"}}"#
                )]);
            }
            _ => {
                if let Some(q) = signal::for_trigger(&playbook.trigger) {
                    // From the second cycle on, the holding signals are tracked: their
                    // presence is asked with the input summary.
                    let inputs = q.inputs_query(series);
                    queries.push(std::iter::once(q.condition).chain(inputs).collect());
                }
            }
        }
    }
    queries
}

/// How many queries are sent one at a time after each cycle, for the cost of one round trip.
const ONE_AT_A_TIME: usize = 200;

/// Sends a cycle's queries again, in three ways: as the evaluation does (each trigger's queries
/// together, `concurrency` triggers at a time), and some of them one at a time.
struct Replayer {
    queries: Vec<Vec<String>>,
    concurrency: usize,
    url: String,
    raw: reqwest::Client,
    client: prometheus_http_query::Client,
    evaluator: Evaluator,
}

/// What the replays measured, in each of the three ways.
#[derive(Default)]
struct Replay {
    /// A raw GET whose body is read but not decoded.
    raw: Pass,
    /// prometheus-http-query's `query(..).at(..).get()`: the request and the crate's decode.
    client: Pass,
    /// `Evaluator::instant`: the same, plus the evaluator's timeout and its samples.
    instant: Pass,
}

#[derive(Default)]
struct Pass {
    /// Wall time per pass over the cycle's queries.
    wall: Vec<Duration>,
    /// Salve's CPU time per pass.
    cpu: Vec<Duration>,
    /// Wall time per query sent alone.
    alone: Vec<Duration>,
    /// Salve's CPU time in the queries sent alone.
    alone_cpu: Duration,
}

impl Replayer {
    fn new(fake: &Fake, queries: Vec<Vec<String>>, concurrency: usize) -> Self {
        Replayer {
            queries,
            concurrency,
            url: format!("{}/api/v1/query", fake.url),
            raw: reqwest::Client::new(),
            client: fake.url.parse().expect("client"),
            evaluator: evaluator(&fake.url),
        }
    }

    fn len(&self) -> usize {
        self.queries.iter().map(Vec::len).sum()
    }

    /// The fake answers POST as well (prometheus-http-query's choice for long queries).
    async fn check_post(&self) {
        let response = self
            .client
            .query("up")
            .post()
            .await
            .expect("the fake answers POST");
        assert!(response.data().as_vector().is_some());
    }

    /// One pass over the queries in each of the three ways, at `at`.
    fn pass(&self, engine: &Runtime, at: DateTime<Utc>, replay: &mut Replay, keep: bool) {
        let time = at.timestamp().to_string();
        let raw_once = |query: &str| {
            let request = self
                .raw
                .get(&self.url)
                .query(&[("query", query), ("time", &time)]);
            async move {
                let response = request.send().await.expect("the fake answers");
                assert!(!response.bytes().await.expect("a body").is_empty());
            }
        };
        let client_once = |query: &str| {
            let request = self.client.query(query).at(at.timestamp());
            async move {
                let response = request.get().await.expect("the fake answers");
                assert!(response.data().as_vector().is_some());
            }
        };
        let instant_once = |query: &str| {
            let query = query.to_string();
            async move {
                self.evaluator
                    .instant(&query, at)
                    .await
                    .expect("the fake answers");
            }
        };
        engine.block_on(async {
            self.time(&mut replay.raw, keep, raw_once).await;
            self.time(&mut replay.client, keep, client_once).await;
            self.time(&mut replay.instant, keep, instant_once).await;
        });
    }

    /// Sends the queries with `once` as the evaluation does, then the first [`ONE_AT_A_TIME`]
    /// one at a time; adds the times to `pass` when `keep`.
    async fn time<F, Fut>(&self, pass: &mut Pass, keep: bool, once: F)
    where
        F: Fn(&str) -> Fut,
        Fut: Future<Output = ()>,
    {
        let cpu = Cpu::read();
        let started = Instant::now();
        futures_util::stream::iter(&self.queries)
            .map(|queries| futures_util::future::join_all(queries.iter().map(|q| once(q))))
            .buffered(self.concurrency)
            .for_each(|_| async {})
            .await;
        let wall = started.elapsed();
        let spent = Cpu::read().since(&cpu).salve;

        let mut alone = Vec::with_capacity(ONE_AT_A_TIME);
        let cpu = Cpu::read();
        for query in self.queries.iter().flatten().take(ONE_AT_A_TIME) {
            let started = Instant::now();
            once(query).await;
            alone.push(started.elapsed());
        }
        if keep {
            pass.wall.push(wall);
            pass.cpu.push(spent);
            pass.alone_cpu += Cpu::read().since(&cpu).salve;
            pass.alone.extend(alone);
        }
    }
}

impl Pass {
    /// Salve's CPU time per query sent alone.
    fn alone_cpu_each(&self) -> Duration {
        self.alone_cpu / u32::try_from(self.alone.len().max(1)).unwrap_or(u32::MAX)
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time

/// The CPU time of this process's threads, the fake Prometheus's apart from the rest.
struct Cpu {
    threads: HashMap<u32, (bool, Duration)>,
    clock: &'static str,
}

struct CpuSpent {
    salve: Duration,
    fake: Duration,
}

impl Cpu {
    /// Every thread's CPU time so far: from `/proc/self/task/*/schedstat` (nanoseconds), or,
    /// where the kernel has no schedstat, from utime + stime in `/proc/self/task/*/stat` in
    /// clock ticks, taken to be 100 a second (`getconf CLK_TCK`).
    fn read() -> Self {
        let mut threads = HashMap::new();
        let mut clock = "/proc/self/task/*/schedstat (ns)";
        for entry in std::fs::read_dir("/proc/self/task").expect("list /proc/self/task") {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let path = entry.path();
            let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
                continue; // the thread ended
            };
            let spent = match std::fs::read_to_string(path.join("schedstat")) {
                Ok(schedstat) => schedstat
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse().ok())
                    .map(Duration::from_nanos),
                Err(_) => {
                    clock = "/proc/self/task/*/stat utime + stime (100 ticks/s)";
                    std::fs::read_to_string(path.join("stat"))
                        .ok()
                        .and_then(|stat| ticks(&stat))
                        .map(|ticks| Duration::from_millis(ticks * 10))
                }
            };
            if let Some(spent) = spent {
                threads.insert(tid, (comm.trim() == FAKE_THREAD, spent));
            }
        }
        Cpu { threads, clock }
    }

    /// The CPU time spent since `before` (threads that ended in between are not counted).
    fn since(&self, before: &Cpu) -> CpuSpent {
        let mut spent = CpuSpent {
            salve: Duration::ZERO,
            fake: Duration::ZERO,
        };
        for (tid, (fake, now)) in &self.threads {
            let then = before.threads.get(tid).map_or(Duration::ZERO, |t| t.1);
            let delta = now.saturating_sub(then);
            if *fake {
                spent.fake += delta;
            } else {
                spent.salve += delta;
            }
        }
        spent
    }
}

/// utime + stime, in clock ticks, of a `/proc/*/stat` line.
fn ticks(stat: &str) -> Option<u64> {
    // The fields after the command name (which may hold spaces) start with field 3, `state`;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

// ---------------------------------------------------------------------------------------------
// Statistics

fn format_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// `6250 signal_pending, 6250 signal_firing`.
fn describe(events: &BTreeMap<&'static str, usize>) -> String {
    if events.is_empty() {
        return "none".to_string();
    }
    events
        .iter()
        .map(|(name, n)| format!("{n} {name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1750 (875 input checks, 0 values)`, or a range when cycles differ.
fn describe_queries(queries: &[Served]) -> String {
    let min = queries.iter().map(|q| q.total).min().unwrap_or(0);
    let max = queries.iter().map(|q| q.total).max().unwrap_or(0);
    let total = if min == max {
        min.to_string()
    } else {
        format!("{min} to {max}")
    };
    let n = queries.len().max(1) as f64;
    let mean = |f: fn(&Served) -> u64| queries.iter().map(f).sum::<u64>() as f64 / n;
    format!(
        "{total} (on average {:.0} plain, {:.0} input checks, {:.1} for values)",
        mean(|q| q.total - q.inputs - q.values),
        mean(|q| q.inputs),
        mean(|q| q.values),
    )
}
