//! The webhook receiver for `alert` triggers, fed by the real Alertmanager (Debian's
//! `prometheus-alertmanager`): alerts posted to Alertmanager the way Prometheus posts them
//! reach the store through its webhook, firing and then resolved. And the receiver's answers to
//! bad requests, over real HTTP.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::Utc;
use salve::alertmanager::harness::{self, AlertmanagerOptions, PostedAlert};
use salve::alertmanager::{AlertStore, MAX_BODY, WEBHOOK_PATH, routes};
use salve::signal::state::{LabelSet, Observation};

/// How long Alertmanager gets to deliver a notification (it takes ~10 ms for a new alert and
/// one `group_interval` for a resolve).
const DELIVERY: Duration = Duration::from_secs(15);

/// Serves the receiver on a free loopback port until the test's runtime ends.
async fn serve() -> (AlertStore, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let address = listener.local_addr().expect("a bound address");
    let store = AlertStore::new();
    let app = routes(store.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (store, address)
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The label sets of the alerts `store` holds for `alertname` and `want` now.
fn holding(store: &AlertStore, alertname: &str, want: &[(&str, &str)]) -> Vec<LabelSet> {
    match store.observe(alertname, &labels(want), Utc::now()) {
        Observation::Holds(samples) => {
            assert!(samples.iter().all(|s| s.value == 1.0), "{samples:?}");
            samples.into_iter().map(|s| s.labels).collect()
        }
        other => panic!("an alert store always answers Holds, not {other:?}"),
    }
}

/// Polls `done` until it is true; how long that took since `began`.
async fn until(began: Instant, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    while !done() {
        assert!(began.elapsed() < DELIVERY, "not after {DELIVERY:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    began.elapsed()
}

const CRASHING: &[(&str, &str)] = &[
    ("alertname", "KubePodCrashLooping"),
    ("namespace", "prod"),
    ("pod", "api-1"),
    ("severity", "critical"),
];
const WARNING: &[(&str, &str)] = &[
    ("alertname", "KubePodCrashLooping"),
    ("namespace", "prod"),
    ("pod", "api-2"),
    ("severity", "warning"),
];
const OTHER: &[(&str, &str)] = &[
    ("alertname", "KubePodNotReady"),
    ("namespace", "prod"),
    ("pod", "api-3"),
    ("severity", "critical"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_from_the_real_alertmanager_fire_and_resolve() {
    let (store, address) = serve().await;
    let mut options = AlertmanagerOptions::new(format!("http://{address}{WEBHOOK_PATH}"));
    options.group_interval = Duration::from_millis(200);
    let alertmanager = tokio::task::spawn_blocking(move || harness::start(&options))
        .await
        .expect("the start task ran")
        .expect("alertmanager starts");
    eprintln!("alertmanager ready in {:?}", alertmanager.startup());

    let mut crashing = PostedAlert::firing(CRASHING.iter().copied());
    crashing.annotations = BTreeMap::from([("summary".into(), "api-1 restarts".into())]);
    crashing.generator_url = "http://prometheus:9090/graph".into();
    let alerts = [
        crashing.clone(),
        PostedAlert::firing(WARNING.iter().copied()),
        PostedAlert::firing(OTHER.iter().copied()),
    ];
    let posted = Instant::now();
    alertmanager.post(&alerts).await.expect("alerts posted");
    let took = until(posted, "the three alerts arrive", || store.known() == 3).await;
    eprintln!("firing notifications delivered in {took:?}");

    let critical = [("severity", "critical")];
    assert_eq!(
        holding(&store, "KubePodCrashLooping", &critical),
        [labels(CRASHING)],
        "only the critical crash loop matches"
    );
    assert_eq!(
        holding(&store, "KubePodCrashLooping", &[("namespace", "prod")]),
        [labels(CRASHING), labels(WARNING)]
    );
    assert!(holding(&store, "KubePodCrashLooping", &[("namespace", "dev")]).is_empty());
    assert!(holding(&store, "NoSuchAlert", &[]).is_empty());

    let changes = store.changes();
    let posted = Instant::now();
    alertmanager
        .post(&[crashing.resolved_at(Utc::now())])
        .await
        .expect("resolve posted");
    let took = until(posted, "the resolve arrives", || {
        holding(&store, "KubePodCrashLooping", &critical).is_empty()
    })
    .await;
    eprintln!("resolved notification delivered in {took:?}");
    assert!(
        changes.has_changed().expect("the store is alive"),
        "each payload is announced"
    );
    assert_eq!(
        holding(&store, "KubePodCrashLooping", &[]),
        [labels(WARNING)],
        "the other alerts still fire"
    );
    assert_eq!(holding(&store, "KubePodNotReady", &[]), [labels(OTHER)]);
}

/// A request to the receiver: its status and JSON body.
async fn request(
    address: SocketAddr,
    method: reqwest::Method,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .request(method, format!("http://{address}{WEBHOOK_PATH}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the receiver answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json)
}

#[rstest::rstest]
#[case::not_json(
    b"alerts: []".to_vec(),
    400,
    "the body is not an Alertmanager webhook payload: expected value at line 1 column 1"
)]
#[case::missing_alerts(
    br#"{"version":"4","status":"firing","receiver":"salve"}"#.to_vec(),
    400,
    "the body is not an Alertmanager webhook payload: missing field `alerts` at line 1 column 52"
)]
#[case::bad_alert(
    br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"}}]}"#.to_vec(),
    400,
    "the body is not an Alertmanager webhook payload: missing field `startsAt` at line 1 column 89"
)]
#[case::other_version(
    br#"{"version":"3","alerts":{}}"#.to_vec(),
    400,
    "unsupported webhook payload version \"3\": Salve reads version \"4\", the format of \
     Alertmanager's webhook_configs"
)]
#[case::too_large(vec![b' '; MAX_BODY + 1], 413, "length limit exceeded")]
#[tokio::test]
async fn a_bad_request_gets_a_json_error_and_changes_nothing(
    #[case] body: Vec<u8>,
    #[case] status: u16,
    #[case] error: &str,
) {
    let (store, address) = serve().await;
    let changes = store.changes();
    let (got, json) = request(address, reqwest::Method::POST, body).await;
    assert_eq!(got, status, "{json}");
    let message = json["error"].as_str().unwrap_or_default();
    assert!(message.contains(error), "{json}");
    assert_eq!(store.known(), 0);
    assert!(!changes.has_changed().expect("the store is alive"));
}

#[tokio::test]
async fn the_receiver_takes_only_post() {
    let (store, address) = serve().await;
    let response = reqwest::get(format!("http://{address}{WEBHOOK_PATH}"))
        .await
        .expect("the receiver answers");
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
    let (status, json) = request(address, reqwest::Method::POST, FIRING.into()).await;
    assert_eq!(
        (status, json),
        (200, serde_json::json!({"accepted": 1, "stale": 0}))
    );
    assert_eq!(store.known(), 1);
}

#[tokio::test]
async fn with_a_token_the_receiver_takes_only_requests_that_carry_it() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let address = listener.local_addr().expect("a bound address");
    let store = AlertStore::new();
    let app = salve::alertmanager::routes_with_token(store.clone(), "s3cret".into());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{address}{WEBHOOK_PATH}");
    let client = reqwest::Client::new();
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Bearer s3cret2"),
    ] {
        let mut post = client.post(&url).body(FIRING);
        if let Some(value) = authorization {
            post = post.header("authorization", value);
        }
        let response = post.send().await.expect("the receiver answers");
        assert_eq!(response.status().as_u16(), 401, "{authorization:?}");
    }
    assert_eq!(store.known(), 0, "nothing applied without the token");
    let response = client
        .post(&url)
        .header("authorization", "Bearer s3cret")
        .body(FIRING)
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(store.known(), 1);
}

/// A notification captured from the real Alertmanager.
const FIRING: &str = include_str!("../engine/src/alertmanager/testdata/firing.json");

/// `salve watch --listen --webhook-token-file` as a user runs it, with the real Alertmanager
/// posting to it with the token: a firing alert opens an incident on the playbook's target, its
/// resolve resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salve_watch_turns_alertmanager_notifications_into_incidents() {
    use std::io::BufRead as _;

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("crashing.yaml"),
        "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: crashing}\nspec:\n  trigger:\n    alert: {alertname: KubePodCrashLooping, labels: {severity: critical}}\n  target: {kind: Deployment, namespace: \"${labels.namespace}\", name: api}\n  steps:\n    - {action: capture_logs, risk: none}\n",
    )
    .expect("write playbook");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("write the token");
    let port = crate::free_port();
    let mut salve = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["--log-format", "json", "watch"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--webhook-token-file")
        .arg(&token)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start salve watch");
    let stderr = salve.stderr.take().expect("stderr");
    let (lines, mut log) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(json) = serde_json::from_str(&line) {
                let _ = lines.send(json);
            }
        }
    });
    // The next log line whose message is `message`, within the delivery time.
    let mut next = async |message: &str| loop {
        let line = tokio::time::timeout(DELIVERY, log.recv())
            .await
            .unwrap_or_else(|_| panic!("no `{message}` log line within {DELIVERY:?}"))
            .expect("salve is running");
        if line["fields"]["message"] == message {
            return line["fields"].clone();
        }
    };
    next("listening for Alertmanager's webhook").await;

    let url = format!("http://127.0.0.1:{port}{WEBHOOK_PATH}");
    let options = AlertmanagerOptions {
        bearer_token: Some("s3cret".into()),
        ..AlertmanagerOptions::new(url)
    };
    let alertmanager = harness::start(&options).expect("alertmanager");
    let began = Instant::now();
    alertmanager
        .post(&[PostedAlert::firing(CRASHING.iter().copied())])
        .await
        .expect("post the alert");
    let opened = next("incident").await;
    assert_eq!(opened["event"], "incident_opened", "{opened}");
    assert_eq!(opened["target"], "Deployment prod/api", "{opened}");
    let opened_after = began.elapsed();

    alertmanager
        .post(&[PostedAlert::firing(CRASHING.iter().copied()).resolved_at(Utc::now())])
        .await
        .expect("post the resolve");
    let resolved = next("incident").await;
    assert_eq!(resolved["event"], "incident_resolved", "{resolved}");
    assert_eq!(resolved["incident"], opened["incident"]);
    salve.kill().expect("stop salve");
    let _ = salve.wait();
    assert!(opened_after < DELIVERY);
}
