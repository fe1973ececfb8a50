//! End-to-end detection latency, side by side in one run: from the instant a metric crosses a
//! threshold in an exporter until Salve's `promql` trigger fires, and until the same condition
//! as a Prometheus alerting rule reaches Salve through Alertmanager's webhook.
//!
//! Run with `cargo bench --bench detection`. Everything is real and local: an exporter in this
//! process (axum, `GET /metrics`) with the gauge `queue_depth{namespace="shop",
//! deployment="worker-N"}`; a `prometheus` (Debian's package, found like the test harness finds
//! it) scraping it and evaluating the rule `max by (namespace, deployment) (queue_depth) > 50`;
//! an `alertmanager` with Alertmanager's default grouping (`group_wait` 30 s, `group_interval`
//! 5 m) whose webhook posts to Salve's receiver; and Salve's live loop over two playbooks: one
//! with a `promql` trigger on the same expression, evaluated at the rule's evaluation interval,
//! and one with an `alert` trigger on the rule's alert.
//!
//! Each trial uses a new `deployment` label (so a new Alertmanager group, to which `group_wait`
//! applies), flips its gauge from 0 to 100 at T0 and waits for both signals to fire, then sets
//! it back to 0. T0 is placed at a different point of the scrape cycle in each trial (evenly
//! spread over one scrape interval), so the flip-to-scrape delay is sampled across its range.
//! Besides the two end-to-end times it records the steps between: the first scrape serving the
//! new value (the exporter logs every scrape), when Salve's evaluation that fired began (the
//! event's `at`), when the rule became active (the alert's `activeAt` from Prometheus's
//! `/api/v1/alerts`), when Alertmanager first held the alert (its `updatedAt`, polled every
//! 100 ms), and when the webhook carrying it reached Salve (a middleware in front of the
//! receiver).
//!
//! The rule group's and the trigger's evaluation times are fixed phases against the scrape for
//! a whole run (Prometheus derives them from hashes; the live loop from when it started), so
//! "scrape → next evaluation" is one draw per run, for each path, not sampled across trials.
//!
//! Options (after `--`): `--trials N` (5), `--scrape-interval SECONDS` (15),
//! `--evaluation-interval SECONDS` (15: the rule's and the `promql` trigger's), `--for SECONDS`
//! (0: the rule's and the trigger's), `--group-wait SECONDS` (30).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use salve::alertmanager::harness::{self, AlertmanagerOptions};
use salve::alertmanager::{AlertStore, MAX_BODY, WEBHOOK_PATH, routes};
use salve::playbook::watch::Reloader;
use salve::signal::evaluate::Evaluator;
use salve::signal::evaluation::{Alerts, PlaybookEvent, Sources};
use salve::signal::live::{self, LiveOptions};
use salve::signal::state::Transition;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The condition, as the alerting rule and as Salve's `promql` trigger.
const EXPR: &str = "max by (namespace, deployment) (queue_depth) > 50";
/// The alerting rule's name, which the `alert` trigger waits for.
const ALERTNAME: &str = "QueueBacklog";
const NAMESPACE: &str = "shop";
/// The playbook with the `promql` trigger.
const PROMQL_PLAYBOOK: &str = "queue-promql";
/// The playbook with the `alert` trigger.
const ALERT_PLAYBOOK: &str = "queue-alert";
/// The gauge's value before the flip and after each trial.
const LOW: f64 = 0.0;
/// The gauge's value from the flip.
const HIGH: f64 = 100.0;
/// Alertmanager's default `group_interval`.
const GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Alertmanager's default `repeat_interval`.
const REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
/// How long Prometheus gets to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often Alertmanager is asked whether it holds the trial's alert.
const POLL: Duration = Duration::from_millis(100);
/// Salve's query timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    trials: usize,
    scrape: u64,
    evaluation: u64,
    for_: u64,
    group_wait: u64,
}

fn options() -> Options {
    let mut options = Options {
        trials: 5,
        scrape: 15,
        evaluation: 15,
        for_: 0,
        group_wait: 30,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a whole number"))
        };
        match arg.as_str() {
            "--trials" => options.trials = usize::try_from(number("--trials")).unwrap_or(1),
            "--scrape-interval" => options.scrape = number("--scrape-interval").max(1),
            "--evaluation-interval" => options.evaluation = number("--evaluation-interval").max(1),
            "--for" => options.for_ = number("--for"),
            "--group-wait" => options.group_wait = number("--group-wait"),
            // `cargo bench` passes `--bench`; anything else is ignored as well.
            _ => {}
        }
    }
    options.trials = options.trials.max(1);
    options
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(&options));
}

// ---------------------------------------------------------------------------------------------
// The exporter

/// The gauge's series by `deployment`, and every scrape.
#[derive(Default)]
struct Gauges {
    values: BTreeMap<String, f64>,
    scrapes: Vec<Instant>,
}

#[derive(Clone, Default)]
struct Exporter(Arc<Mutex<Gauges>>);

impl Exporter {
    /// Sets a series and returns when, as seen by the next scrape.
    fn set(&self, deployment: &str, value: f64) -> (Instant, DateTime<Utc>) {
        let mut gauges = lock(&self.0);
        gauges.values.insert(deployment.to_string(), value);
        (Instant::now(), Utc::now())
    }

    fn scrapes(&self) -> usize {
        lock(&self.0).scrapes.len()
    }

    fn last_scrape(&self) -> Option<Instant> {
        lock(&self.0).scrapes.last().copied()
    }

    /// The first scrape after `at`: the first that served what was set at `at`.
    fn scrape_after(&self, at: Instant) -> Option<Instant> {
        lock(&self.0).scrapes.iter().find(|s| **s > at).copied()
    }
}

async fn metrics(State(exporter): State<Exporter>) -> impl IntoResponse {
    let mut gauges = lock(&exporter.0);
    gauges.scrapes.push(Instant::now());
    let mut body =
        String::from("# HELP queue_depth Jobs waiting in the queue.\n# TYPE queue_depth gauge\n");
    for (deployment, value) in &gauges.values {
        writeln!(
            body,
            "queue_depth{{namespace=\"{NAMESPACE}\",deployment=\"{deployment}\"}} {value}"
        )
        .expect("writing to a String cannot fail");
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

// ---------------------------------------------------------------------------------------------
// The webhook log: when each notification reached Salve, and which deployments it said fire.

type Webhooks = Arc<Mutex<Vec<(Instant, Vec<String>)>>>;

async fn log_webhook(State(log): State<Webhooks>, request: Request, next: Next) -> Response {
    let arrived = Instant::now();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let payload: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let firing = payload["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|alert| alert["status"] == "firing")
        .filter_map(|alert| alert["labels"]["deployment"].as_str())
        .map(str::to_string)
        .collect();
    lock(&log).push((arrived, firing));
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Serves `app` on a free loopback port until the runtime ends.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let address = listener.local_addr().expect("a bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

// ---------------------------------------------------------------------------------------------
// Prometheus, scraping the exporter and evaluating the rule

/// A `prometheus` process with its configuration and TSDB in a temporary directory; dropping it
/// kills the process.
struct Prometheus {
    /// Declared before the directory, so the process is gone before its files are deleted.
    child: Child,
    url: String,
    dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // `kill` fails only if the process was already reaped; `wait` reaps it otherwise.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    async fn start(binary: &Path, config: &str, rules: &str) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("salve-detection-")
            .tempdir()
            .expect("create a temporary directory");
        let rules_path = dir.path().join("rules.yml");
        fs::write(&rules_path, rules).expect("write the rules");
        let config = config.replace("RULES", &rules_path.to_string_lossy());
        let config_path = dir.path().join("prometheus.yml");
        fs::write(&config_path, config).expect("write the configuration");
        let tsdb = dir.path().join("data");
        let log = File::create(dir.path().join("prometheus.log")).expect("create the log");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("open the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let client = reqwest::Client::new();
        let began = Instant::now();
        loop {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            let ready = client
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return prometheus;
            }
            assert!(
                began.elapsed() < READY_TIMEOUT,
                "prometheus not ready after {READY_TIMEOUT:?}:\n{}",
                prometheus.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

/// The first line of `binary --version`.
fn version(binary: &Path) -> String {
    Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "unknown version".into())
}

/// When the trial's alert became active in Prometheus (`activeAt`).
async fn rule_active_at(
    client: &reqwest::Client,
    prometheus: &str,
    deployment: &str,
) -> Option<DateTime<Utc>> {
    let body: serde_json::Value = client
        .get(format!("{prometheus}/api/v1/alerts"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let alert = body["data"]["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["labels"]["deployment"] == deployment)?;
    parse_time(&alert["activeAt"])
}

/// When Alertmanager received the trial's alert (`updatedAt`, which it sets on every post), if
/// it holds it.
async fn alertmanager_received(
    client: &reqwest::Client,
    alertmanager: &str,
    deployment: &str,
) -> Option<DateTime<Utc>> {
    let body: serde_json::Value = client
        .get(format!("{alertmanager}/api/v2/alerts"))
        .query(&[("filter", format!("deployment=\"{deployment}\""))])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    parse_time(&body.as_array()?.first()?["updatedAt"])
}

fn parse_time(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Salve's playbooks

fn playbook(name: &str, trigger: &str) -> String {
    format!(
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {{name: {name}}}\nspec:\n  trigger:\n{trigger}  target: {{kind: Deployment, namespace: \"${{labels.namespace}}\", name: \"${{labels.deployment}}\"}}\n  steps:\n    - {{action: capture_logs, risk: none}}\n"
    )
}

// ---------------------------------------------------------------------------------------------
// The run

/// What one trial saw, in seconds after the flip.
struct Trial {
    scrape: f64,
    /// When the evaluation that fired began (the event's `at`).
    promql_evaluated: f64,
    promql: f64,
    rule_active: f64,
    alertmanager: f64,
    webhook: f64,
    alert: f64,
}

async fn run(options: &Options) {
    let prometheus_binary = salve::prometheus::Harness::from_env()
        .expect("prometheus and promtool are installed")
        .prometheus()
        .to_path_buf();

    // Salve's webhook receiver, with the log in front.
    let store = AlertStore::new();
    let webhooks = Webhooks::default();
    let receiver = serve(routes(store.clone()).layer(middleware::from_fn_with_state(
        Arc::clone(&webhooks),
        log_webhook,
    )))
    .await;

    // Alertmanager, notifying the receiver.
    let alertmanager_options = AlertmanagerOptions {
        webhook_url: format!("http://{receiver}{WEBHOOK_PATH}"),
        group_wait: Duration::from_secs(options.group_wait),
        group_interval: GROUP_INTERVAL,
        repeat_interval: REPEAT_INTERVAL,
        bearer_token: None,
    };
    let alertmanager = tokio::task::spawn_blocking(move || harness::start(&alertmanager_options))
        .await
        .expect("the start task ran")
        .expect("alertmanager starts");

    // The exporter, already serving the first trial's series at 0.
    let exporter = Exporter::default();
    exporter.set(&deployment(1), LOW);
    let exported = serve(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(exporter.clone()),
    )
    .await;

    // Prometheus.
    let config = format!(
        "global:\n  scrape_interval: {scrape}s\n  scrape_timeout: {timeout}s\n  \
         evaluation_interval: {evaluation}s\nscrape_configs:\n  - job_name: exporter\n    \
         static_configs:\n      - targets: ['{exported}']\nrule_files: ['RULES']\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n",
        scrape = options.scrape,
        timeout = options.scrape.min(10),
        evaluation = options.evaluation,
        am = alertmanager
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/'),
    );
    let rules = format!(
        "groups:\n  - name: detection\n    rules:\n      - alert: {ALERTNAME}\n        \
         expr: '{EXPR}'\n        for: {}s\n",
        options.for_
    );
    let prometheus = Prometheus::start(&prometheus_binary, &config, &rules).await;

    // Salve's live loop over the two playbooks.
    let playbooks = tempfile::tempdir().expect("create a temporary directory");
    fs::write(
        playbooks.path().join("queue-promql.yaml"),
        playbook(
            PROMQL_PLAYBOOK,
            &format!(
                "    promql: {{expr: '{EXPR}'}}\n    for: {}s\n    interval: {}s\n",
                options.for_, options.evaluation
            ),
        ),
    )
    .expect("write a playbook");
    fs::write(
        playbooks.path().join("queue-alert.yaml"),
        playbook(
            ALERT_PLAYBOOK,
            &format!("    alert: {{alertname: {ALERTNAME}}}\n"),
        ),
    )
    .expect("write a playbook");
    let (reloader, warnings) =
        Reloader::from_paths(vec![playbooks.path().to_path_buf()]).expect("a valid playbook set");
    assert!(warnings.is_empty(), "playbook warnings: {warnings:?}");
    assert_eq!(reloader.active().load().playbooks().len(), 2);
    let sources = Sources {
        prometheus: Some(Evaluator::new(&prometheus.url, QUERY_TIMEOUT).expect("an evaluator")),
        alerts: Alerts::Webhook(store.clone()),
        ..Sources::default()
    };
    let cancel = CancellationToken::new();
    let (events_tx, mut events) = mpsc::channel(1024);
    let live = tokio::spawn(live::run(
        Arc::clone(reloader.active()),
        sources,
        LiveOptions::default(),
        cancel.clone(),
        events_tx,
    ));

    println!("prometheus: {}", version(&prometheus_binary));
    println!(
        "alertmanager: {}",
        fs::read_link(format!("/proc/{}/exe", alertmanager.pid()))
            .map_or_else(|_| "unknown version".into(), |binary| version(&binary))
    );
    println!(
        "scrape_interval {}s, evaluation_interval {}s (rule and promql trigger), for {}s, \
         group_wait {}s, group_interval {}s; {} trials",
        options.scrape,
        options.evaluation,
        options.for_,
        options.group_wait,
        GROUP_INTERVAL.as_secs(),
        options.trials
    );

    // Wait for two scrapes, so the series is known at 0 and the scrape phase is known.
    let began = Instant::now();
    while exporter.scrapes() < 2 {
        assert!(
            began.elapsed() < Duration::from_secs(3 * options.scrape + 30),
            "prometheus does not scrape the exporter:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let scrape = Duration::from_secs(options.scrape);
    let limit = Duration::from_secs(
        options.scrape + 2 * options.evaluation + 2 * options.for_ + options.group_wait + 60,
    );
    let mut trials = Vec::with_capacity(options.trials);
    for n in 1..=options.trials {
        let name = deployment(n);
        // The next trial's series starts at 0 now, so it has been scraped at 0 before its flip.
        exporter.set(&deployment(n + 1), LOW);

        // Flip at (n - 1/2) / trials of the way through a scrape interval.
        let last = exporter.last_scrape().expect("scraped before");
        let mut flip_at = last + scrape.mul_f64((n as f64 - 0.5) / options.trials as f64);
        while flip_at < Instant::now() + Duration::from_millis(100) {
            flip_at += scrape;
        }
        tokio::time::sleep_until(flip_at.into()).await;
        let (t0, t0_wall) = exporter.set(&name, HIGH);

        // Alertmanager is polled on the side, so that events are received as they come.
        let poller = {
            let (client, url, name) =
                (client.clone(), alertmanager.url().to_string(), name.clone());
            tokio::spawn(async move {
                loop {
                    if let Some(at) = alertmanager_received(&client, &url, &name).await {
                        return at;
                    }
                    tokio::time::sleep(POLL).await;
                }
            })
        };

        let (mut promql, mut promql_evaluated, mut alert) = (None, None, None);
        while promql.is_none() || alert.is_none() {
            let event = tokio::time::timeout_at((t0 + limit).into(), events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "trial {n}: not both fired within {limit:?} (promql {promql:?}, alert \
                         {alert:?}); prometheus log:\n{}",
                        prometheus.log()
                    )
                })
                .expect("the live loop runs");
            let received = Instant::now();
            if !fires(&event, &name) {
                continue;
            }
            match event.playbook.as_str() {
                PROMQL_PLAYBOOK => {
                    promql = promql.or(Some(received));
                    promql_evaluated = promql_evaluated.or(Some(event.event.at));
                }
                ALERT_PLAYBOOK => alert = alert.or(Some(received)),
                _ => {}
            }
        }

        let alertmanager_at = tokio::time::timeout(Duration::from_secs(5), poller)
            .await
            .expect("alertmanager held the alert before it notified")
            .expect("the poller does not panic");
        let rule_active = rule_active_at(&client, &prometheus.url, &name)
            .await
            .expect("prometheus knows the alert");
        // Only now, so the alert is still active in Prometheus when asked for.
        exporter.set(&name, LOW);
        let webhook = lock(&webhooks)
            .iter()
            .find(|(_, firing)| firing.contains(&name))
            .map(|(at, _)| *at)
            .expect("the webhook carried the alert");
        let since = |at: Instant| (at - t0).as_secs_f64();
        let since_wall = |at: DateTime<Utc>| (at - t0_wall).as_seconds_f64();
        let trial = Trial {
            scrape: since(exporter.scrape_after(t0).expect("scraped after the flip")),
            promql_evaluated: since_wall(promql_evaluated.expect("fired")),
            promql: since(promql.expect("fired")),
            rule_active: since_wall(rule_active),
            alertmanager: since_wall(alertmanager_at),
            webhook: since(webhook),
            alert: since(alert.expect("fired")),
        };
        eprintln!(
            "trial {n}: promql {:.2} s, alert {:.2} s",
            trial.promql, trial.alert
        );
        trials.push(trial);
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), live)
        .await
        .expect("the live loop stops when cancelled")
        .expect("the live loop does not panic");

    report(options, &trials);
    drop(prometheus);
    drop(alertmanager);
}

fn deployment(n: usize) -> String {
    format!("worker-{n}")
}

/// Whether `event` is its playbook's signal firing for `deployment`.
fn fires(event: &PlaybookEvent, deployment: &str) -> bool {
    event.event.transition == Transition::Firing
        && event.event.labels.get("deployment").map(String::as_str) == Some(deployment)
}

// ---------------------------------------------------------------------------------------------
// The report

/// One measurement of a trial, in seconds.
type Measure = fn(&Trial) -> f64;

/// Nearest-rank percentile of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(options: &Options, trials: &[Trial]) {
    let s = |v: f64| format!("{v:.2} s");
    println!();
    println!(
        "| trial | flip → scrape | Salve promql firing | rule active | at Alertmanager | webhook at Salve | Salve alert firing | difference |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, t) in trials.iter().enumerate() {
        println!(
            "| {} | {} | **{}** | {} | {} | {} | **{}** | {} |",
            n + 1,
            s(t.scrape),
            s(t.promql),
            s(t.rule_active),
            s(t.alertmanager),
            s(t.webhook),
            s(t.alert),
            s(t.alert - t.promql),
        );
    }

    let rows: [(&str, Measure); 11] = [
        ("flip → first scrape of the new value", |t| t.scrape),
        ("**Salve `promql`: flip → signal_firing**", |t| t.promql),
        ("  of which scrape → signal_firing", |t| {
            t.promql - t.scrape
        }),
        ("    of which scrape → Salve's next evaluation", |t| {
            t.promql_evaluated - t.scrape
        }),
        ("    of which evaluation → signal_firing received", |t| {
            t.promql - t.promql_evaluated
        }),
        (
            "**rule + Alertmanager: flip → Salve `alert` signal_firing**",
            |t| t.alert,
        ),
        ("  of which scrape → rule active", |t| {
            t.rule_active - t.scrape
        }),
        ("  of which rule active → at Alertmanager", |t| {
            t.alertmanager - t.rule_active
        }),
        ("  of which at Alertmanager → webhook at Salve", |t| {
            t.webhook - t.alertmanager
        }),
        ("  of which webhook → Salve `alert` signal_firing", |t| {
            t.alert - t.webhook
        }),
        ("**difference (rule path − Salve `promql`)**", |t| {
            t.alert - t.promql
        }),
    ];
    println!();
    println!("| measurement | n | min | p50 | max |");
    println!("|---|---:|---:|---:|---:|");
    for (name, value) in rows {
        let values: Vec<f64> = trials.iter().map(value).collect();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ms = |v: f64| {
            if v.abs() < 1.0 {
                format!("{:.1} ms", v * 1e3)
            } else {
                s(v)
            }
        };
        println!(
            "| {name} | {} | {} | {} | {} |",
            values.len(),
            ms(min),
            ms(percentile(&values, 50.0)),
            ms(max)
        );
    }

    let (scrape, evaluation, for_, wait) = (
        options.scrape as f64,
        options.evaluation as f64,
        options.for_ as f64,
        options.group_wait as f64,
    );
    println!();
    println!(
        "expected: Salve promql = [0, {scrape}] s to the scrape + [0, {evaluation}] s to the \
         trigger's next evaluation + for {for_} s: {:.1}–{:.1} s, {:.1} s on average",
        for_,
        scrape + evaluation + for_,
        scrape / 2.0 + evaluation / 2.0 + for_
    );
    println!(
        "expected: rule path = [0, {scrape}] s to the scrape + [0, {evaluation}] s to the rule's \
         next evaluation + for {for_} s + Prometheus's send (ms) + group_wait {wait} s: \
         {:.1}–{:.1} s, {:.1} s on average",
        for_ + wait,
        scrape + evaluation + for_ + wait,
        scrape / 2.0 + evaluation / 2.0 + for_ + wait
    );
}
