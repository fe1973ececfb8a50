//! The Prometheus harness against the real `prometheus` and `promtool` (Debian's `prometheus`
//! package, which `.ci/run` installs): scenarios are backfilled, served and queried over HTTP
//! with the same PromQL client the engine uses. Each Prometheus starts in well under a second,
//! so a test starts its own and asks it several questions.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_http_query::Client;
use salve::playbook::load::load_paths;
use salve::prometheus::{self, Error, Harness, RunningPrometheus, Scenario};

/// A minute, the interval of these scenarios.
const MINUTE: Duration = Duration::from_secs(60);

/// The labels and value of each series an instant query returns at `at` (unix seconds).
async fn instant(
    prometheus: &RunningPrometheus,
    query: &str,
    at: i64,
) -> Vec<(HashMap<String, String>, f64)> {
    let client = Client::try_from(prometheus.url()).expect("a valid URL");
    let result = client
        .query(query)
        .at(at)
        .get()
        .await
        .unwrap_or_else(|e| panic!("`{query}` at {at}: {e}"));
    result
        .data()
        .as_vector()
        .unwrap_or_else(|| panic!("`{query}` returns a vector"))
        .iter()
        .map(|s| (s.metric().clone(), s.sample().value()))
        .collect()
}

/// The single value `query` returns at `at`.
async fn value(prometheus: &RunningPrometheus, query: &str, at: i64) -> f64 {
    let result = instant(prometheus, query, at).await;
    assert_eq!(result.len(), 1, "`{query}` at {at}: {result:?}");
    result[0].1
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_backfilled_scenario_answers_instant_and_rate_queries() {
    let scenario = Scenario::new(MINUTE)
        .and_then(|s| s.series(r#"up{job="api"}"#, "1x10"))
        .and_then(|s| s.series(r#"http_requests_total{job="api",code="200"}"#, "0+60x30"))
        .expect("a valid scenario");
    let unix_now = || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH);
        i64::try_from(now.expect("after 1970").as_secs()).expect("before 2262")
    };
    let before = unix_now();
    let prometheus = prometheus::start(&scenario).expect("prometheus starts");
    let after = unix_now();
    eprintln!("backfill + start + ready: {:?}", prometheus.startup());

    // By default the data ends "now": the last sample is less than one interval old.
    assert_eq!(prometheus.end_time(), prometheus.time_at(30));
    assert_eq!(prometheus.end_time() % 60, 0);
    assert!(
        (before - 59..=after).contains(&prometheus.end_time()),
        "ends at {}, started between {before} and {after}",
        prometheus.end_time()
    );

    assert_eq!(
        instant(&prometheus, r#"up{job="api"}"#, prometheus.time_at(10)).await,
        [(labels(&[("__name__", "up"), ("job", "api")]), 1.0)]
    );
    // Before the first sample there is nothing.
    assert!(
        instant(&prometheus, "up", prometheus.start_time() - 1)
            .await
            .is_empty()
    );

    // 60 more every minute is 1 per second.
    let rate = value(
        &prometheus,
        "rate(http_requests_total[5m])",
        prometheus.end_time(),
    )
    .await;
    assert!((rate - 1.0).abs() < 1e-9, "rate {rate}");
    let total = instant(&prometheus, "http_requests_total", prometheus.end_time()).await;
    assert_eq!(
        total,
        [(
            labels(&[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("code", "200")
            ]),
            1800.0
        )]
    );
}

#[tokio::test]
async fn gaps_stale_samples_and_nan_are_served_as_backfilled() {
    let scenario = Scenario::new(MINUTE)
        .and_then(|s| s.series("gappy", "1 _x10 2"))
        .and_then(|s| s.series("stopped", "1 1 stale _x10 3"))
        .and_then(|s| s.series("odd", "NaN +Inf -Inf -0.5 1e300"))
        .expect("a valid scenario");
    let prometheus = prometheus::start(&scenario).expect("prometheus starts");
    let at = |step| prometheus.time_at(step);

    // A missing sample is no sample: the last one is seen for the 5-minute lookback, then
    // nothing until the next.
    assert_eq!(value(&prometheus, "gappy", at(3)).await, 1.0);
    assert!(instant(&prometheus, "gappy", at(7)).await.is_empty());
    assert_eq!(value(&prometheus, "gappy", at(11)).await, 2.0);

    // promtool cannot write staleness markers: a `stale` series just stops, so it is still
    // seen for the lookback after its last value (a scraped one would vanish at once).
    assert_eq!(value(&prometheus, "stopped", at(2)).await, 1.0);
    assert_eq!(value(&prometheus, "stopped", at(6)).await, 1.0);
    assert!(instant(&prometheus, "stopped", at(7)).await.is_empty());
    assert_eq!(value(&prometheus, "stopped", at(13)).await, 3.0);

    assert!(value(&prometheus, "odd", at(0)).await.is_nan());
    assert_eq!(value(&prometheus, "odd", at(1)).await, f64::INFINITY);
    assert_eq!(value(&prometheus, "odd", at(2)).await, f64::NEG_INFINITY);
    assert_eq!(value(&prometheus, "odd", at(3)).await, -0.5);
    assert_eq!(value(&prometheus, "odd", at(4)).await, 1e300);
}

#[tokio::test]
async fn old_data_and_raw_samples_spanning_a_month_are_kept() {
    const JAN_2020: i64 = 1_577_836_800;
    const DAY: i64 = 86_400;
    let scenario = Scenario::new(MINUTE)
        .map(|s| s.start_at(JAN_2020))
        .and_then(|s| s.series(r#"old{at="start"}"#, "5x2"))
        .and_then(|s| s.raw("sparse", [(JAN_2020 + 30 * DAY, 2.0), (JAN_2020, 1.0)]))
        .expect("a valid scenario");
    let prometheus = prometheus::start(&scenario).expect("prometheus starts");

    assert_eq!(prometheus.start_time(), JAN_2020);
    assert_eq!(prometheus.end_time(), JAN_2020 + 30 * DAY);
    assert_eq!(value(&prometheus, "old", JAN_2020 + 120).await, 5.0);
    assert_eq!(value(&prometheus, "sparse", JAN_2020).await, 1.0);
    assert!(
        instant(&prometheus, "sparse", JAN_2020 + DAY)
            .await
            .is_empty()
    );
    assert_eq!(value(&prometheus, "sparse", JAN_2020 + 30 * DAY).await, 2.0);
    assert_eq!(
        value(
            &prometheus,
            "count_over_time(sparse[31d])",
            JAN_2020 + 30 * DAY
        )
        .await,
        2.0
    );
}

#[tokio::test]
async fn a_playbook_test_becomes_a_scenario() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let loaded = load_paths(&[repo.join("playbooks/crash-loop.yaml")]);
    let playbook = loaded.playbooks.first().expect("the playbook loads");
    let test = playbook.tests.first().expect("it has a test");
    let (selector, samples) = test.series.first().expect("the test has a series");

    let scenario = Scenario::from_test(test).expect("a valid scenario");
    assert_eq!(scenario.interval(), test.interval);
    let prometheus = prometheus::start(&scenario).expect("prometheus starts");
    let Some(salve::series::Sample::Value(last)) = samples.last() else {
        panic!("the series ends with a value");
    };
    assert_eq!(
        value(&prometheus, selector, prometheus.end_time()).await,
        *last
    );
}

#[test]
fn a_missing_binary_says_how_to_install_it() {
    let err =
        Harness::with_binaries("/nonexistent/prometheus", "promtool").expect_err("no such binary");
    let message = err.to_string();
    assert!(
        matches!(
            err,
            Error::BinaryNotFound {
                program: "prometheus",
                ..
            }
        ),
        "{message}"
    );
    for needed in [
        "/nonexistent/prometheus",
        "apt-get install prometheus",
        "SALVE_PROMETHEUS",
    ] {
        assert!(message.contains(needed), "`{needed}` in: {message}");
    }

    let err = Harness::with_binaries("prometheus", "promtool-not-installed-anywhere")
        .expect_err("not on PATH");
    let message = err.to_string();
    assert!(message.contains("not on PATH"), "{message}");
    assert!(message.contains("SALVE_PROMTOOL"), "{message}");
}

#[test]
fn a_failing_promtool_or_prometheus_is_reported_with_its_status() {
    let scenario = Scenario::new(MINUTE)
        .and_then(|s| s.series("up", "1"))
        .expect("a valid scenario");

    let harness = Harness::with_binaries("prometheus", "/bin/false").expect("both exist");
    let err = harness.start(&scenario).expect_err("promtool fails");
    assert!(matches!(err, Error::Backfill { .. }), "{err}");
    assert!(err.to_string().contains("exit status: 1"), "{err}");

    let harness = Harness::with_binaries("/bin/false", "promtool").expect("both exist");
    let err = harness.start(&scenario).expect_err("prometheus exits");
    assert!(matches!(err, Error::Exited { .. }), "{err}");
}

/// Whether a process with this id exists (zombies included: a reaped process has no entry).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn dropping_it_kills_and_reaps_the_process_even_in_a_panicking_test() {
    let scenario = Scenario::new(MINUTE)
        .and_then(|s| s.series("up", "1x3"))
        .expect("a valid scenario");

    let prometheus = prometheus::start(&scenario).expect("prometheus starts");
    let (pid, url) = (prometheus.pid(), prometheus.url().to_string());
    assert!(exists(pid));
    drop(prometheus);
    assert!(!exists(pid), "process {pid} ({url}) outlived its handle");

    let (sender, receiver) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let prometheus = prometheus::start(&scenario).expect("prometheus starts");
        sender
            .send(prometheus.pid())
            .expect("the test waits for the pid");
        panic!("a failing test");
    })
    .join();
    assert!(panicked.is_err());
    let pid = receiver.recv().expect("the thread sent the pid");
    assert!(!exists(pid), "process {pid} outlived a panicking test");
}
