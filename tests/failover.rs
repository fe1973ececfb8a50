//! Two `salve run --leader-elect` processes, each with its own journal, against the fake API
//! server through their own `kube::Client`, and a real Prometheus for the trigger: the
//! follower keeps up with the leader's incidents (its API shows them and takes an approval the
//! leader then acts on), and when the leader is killed (SIGKILL, mid-remediation) the other
//! replica takes the lead and resumes from the recorded step — every step runs exactly once.
//! An alert Alertmanager posts to a follower (a Service picks any replica) is relayed to the
//! leader, which acts on it.
//!
//! # Against a real cluster
//!
//! With `SALVE_TEST_KUBECONFIG=/path/to/kubeconfig` the test runs against that cluster in a
//! fresh namespace `salve-test-…` (deleted at the end) holding the Deployment, the Lease and
//! the `SalveIncident`s; the CRDs must be installed first (`salve crds | kubectl apply -f -`).
//! There, "exactly once" is read from the `SalveIncident`'s entries and the Deployment's
//! replicas; against the fake, the scale writes it received are counted too.
//!
//! ```text
//! SALVE_TEST_KUBECONFIG=~/.kube/kind cargo test --test tests -- failover:: --nocapture
//! ```
//!
//! `--nocapture` prints how long after the kill the other replica ran the step left; with
//! `SALVE_TEST_LEASE_TIMINGS=15s,10s,2s` the replicas use `salve run`'s default timings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use reqwest::StatusCode;
use salve::kube_fake::FakeApiServer;
use salve::prometheus::{self, Scenario};
use salve::state::{IncidentState, KIND, PLURAL};
use serde_json::{Value, json};

use crate::api::{post, until};
use crate::{Daemon, TestCluster, free_port};

/// An approver's token, and the token file naming her.
const ANA: &str = "ana-0123456789abcdef";

/// Three scale steps: the first runs on its own, the other two wait for a human (risk high
/// above the policy's `medium`); interrupted, the remediation is resumed.
const PLAYBOOK: &str = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: heal}\nspec:\n  trigger:\n    promql: {expr: 'vector(1)'}\n    interval: 1s\n  target: {kind: Deployment, namespace: NAMESPACE, name: api}\n  cooldown: 1h\n  onInterrupt: resume\n  steps:\n    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n    - {name: drain, action: scale, risk: high, params: {replicas: 2}}\n    - {name: settle, action: scale, risk: high, params: {replicas: 3}}\n";

const POLICY: &str = "apiVersion: salve.dev/v1\nkind: AutonomyPolicy\nmetadata: {name: ha}\nspec:\n  maxAutonomousRisk: medium\n  dryRun: false\n  approval: {timeout: 10m}\n";

/// The API server (the fake, or a real cluster's test namespace) and the files both replicas
/// read.
struct Env {
    cluster: TestCluster,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Env {
    /// Starts the API server with the Deployment `api`, and writes `playbook` (its
    /// `NAMESPACE` replaced by the test's) beside the policy.
    async fn start(playbook: &str) -> Env {
        let cluster = TestCluster::start("shop").await;
        let namespace = cluster.namespace.clone();
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "api"}},
                "template": {"metadata": {"labels": {"app": "api"}},
                             "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}},
            },
        });
        let object: DynamicObject = serde_json::from_value(deployment).expect("an object");
        Api::<DynamicObject>::namespaced_with(
            cluster.client.clone(),
            &namespace,
            &ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment")),
        )
        .create(&PostParams::default(), &object)
        .await
        .expect("create the deployment");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = cluster.kubeconfig(dir.path());
        let playbooks = dir.path().join("playbooks");
        std::fs::create_dir(&playbooks).expect("mkdir");
        std::fs::write(
            playbooks.join("heal.yaml"),
            playbook.replace("NAMESPACE", &namespace),
        )
        .expect("the playbook");
        std::fs::write(playbooks.join("policy.yaml"), POLICY).expect("the policy");
        std::fs::write(dir.path().join("tokens"), format!("{ANA} ana\n")).expect("tokens");
        Env {
            cluster,
            kubeconfig,
            dir,
        }
    }

    /// Starts replica `pod`, its API on `port`, evaluating against `prometheus`.
    fn replica(&self, pod: &str, port: u16, prometheus: &str) -> Daemon {
        let dir = self.dir.path();
        Daemon(
            std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
                .arg("run")
                .arg("--playbooks")
                .arg(dir.join("playbooks"))
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--journal")
                .arg(dir.join(format!("{pod}.db")))
                .args(["--prometheus", prometheus])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--advertise-address", &format!("127.0.0.1:{port}")])
                .arg("--api-token-file")
                .arg(dir.join("tokens"))
                .arg("--leader-elect")
                .args(timings())
                // Remediations in flight on SIGTERM are parked after a second.
                .args(["--grace", "1s"])
                .args(["--poll-interval", "100ms"])
                .args(["--lease-namespace", &self.cluster.namespace])
                .env("POD_NAME", pod)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start salve run"),
        )
    }

    fn incidents(&self) -> Api<DynamicObject> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("salve.dev", "v1", KIND),
            PLURAL,
        );
        Api::namespaced_with(
            self.cluster.client.clone(),
            &self.cluster.namespace,
            &resource,
        )
    }

    /// The one remediated incident the cluster keeps, as its status tells it. (A replica that
    /// saw the problem open at another evaluation's time names it otherwise; it may keep
    /// what it detected under that name once it leads, but remediates nothing there.)
    async fn incident(&self) -> IncidentState {
        let objects = self
            .incidents()
            .list(&Default::default())
            .await
            .expect("list the incidents")
            .items;
        let mut planned: Vec<IncidentState> = objects
            .into_iter()
            // Just created, an object has no status yet.
            .filter_map(|mut o| serde_json::from_value(o.data["status"].take()).ok())
            .filter(|s: &IncidentState| s.entries.iter().any(|e| e.kind == "remediation_planned"))
            .collect();
        assert_eq!(planned.len(), 1, "one remediation: {planned:#?}");
        planned.remove(0)
    }

    async fn replicas(&self) -> i64 {
        let deployments = Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(
            self.cluster.client.clone(),
            &self.cluster.namespace,
        );
        let api = deployments.get("api").await.expect("the deployment");
        api.spec.and_then(|s| s.replicas).map_or(-1, i64::from)
    }

    /// The holder of the Lease `salve`, if any.
    async fn holder(&self) -> Option<String> {
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            self.cluster.client.clone(),
            &self.cluster.namespace,
        )
        .get_opt("salve")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
    }
}

/// Two replicas running `playbook` against the same cluster and Prometheus: `a` leads, `b`
/// follows (its API ready).
struct Pair {
    env: Env,
    _prometheus: prometheus::RunningPrometheus,
    a: Daemon,
    _b: Daemon,
    api_a: String,
    api_b: String,
}

impl Pair {
    async fn start(playbook: &str) -> Pair {
        let env = Env::start(playbook).await;
        let scenario = Scenario::new(Duration::from_secs(60))
            .and_then(|s| s.series(r#"up{job="api"}"#, "1x10"))
            .expect("a scenario");
        let prometheus = prometheus::start(&scenario).expect("prometheus starts");
        let (port_a, port_b) = (free_port(), free_port());
        let a = env.replica("pod-a", port_a, prometheus.url());
        until_equal("the lease holder", true, async || {
            env.holder().await.is_some_and(|h| h.starts_with("pod-a_"))
        })
        .await;
        let b = env.replica("pod-b", port_b, prometheus.url());
        let api_b = format!("http://127.0.0.1:{port_b}");
        until(&format!("{api_b}/readyz"), "the follower ready", |s, _| {
            s == StatusCode::OK
        })
        .await;
        Pair {
            env,
            _prometheus: prometheus,
            a,
            _b: b,
            api_a: format!("http://127.0.0.1:{port_a}"),
            api_b,
        }
    }
}

/// The replicas' leader election timings: short (lease 2 s, renew deadline 1 s, retry
/// 200 ms), or `SALVE_TEST_LEASE_TIMINGS=LEASE,RENEW,RETRY` (`15s,10s,2s` are the defaults
/// of `salve run`, to measure a failover as it will be).
fn timings() -> [String; 6] {
    let given = std::env::var("SALVE_TEST_LEASE_TIMINGS").unwrap_or_default();
    let mut given = given.split(',').filter(|t| !t.is_empty());
    let mut next = |default: &str| given.next().unwrap_or(default).to_string();
    [
        "--lease-duration".into(),
        next("2s"),
        "--renew-deadline".into(),
        next("1s"),
        "--retry-period".into(),
        next("200ms"),
    ]
}

/// Waits (30 s at most) until `api` shows the approval of step `step` pending: its id.
async fn pending(api: &str, step: &str) -> String {
    let body = until_for(
        &format!("{api}/api/v1/approvals"),
        &format!("the approval of {step} pending"),
        Duration::from_secs(30),
        |_, b| {
            b["approvals"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["step"] == step))
        },
    )
    .await;
    let approvals = body["approvals"].as_array().cloned().unwrap_or_default();
    let approval = approvals.iter().find(|x| x["step"] == step).expect("found");
    approval["id"].as_str().expect("an id").to_string()
}

/// [`until`] with a longer wait than its 10 s (a failover takes a lease's duration).
async fn until_for(
    url: &str,
    what: &str,
    within: Duration,
    done: impl Fn(StatusCode, &Value) -> bool + Copy,
) -> Value {
    let began = Instant::now();
    loop {
        if began.elapsed() + Duration::from_secs(10) >= within {
            return until(url, what, done).await;
        }
        if let Ok(response) = reqwest::get(url).await {
            let status = response.status();
            let body = response.json().await.unwrap_or(Value::Null);
            if done(status, &body) {
                return body;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `read` until it gives `want` (30 s at most).
async fn until_equal<T: PartialEq + std::fmt::Debug>(
    what: &str,
    want: T,
    read: impl AsyncFn() -> T,
) {
    let began = Instant::now();
    loop {
        let got = read().await;
        if got == want {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{what}: {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Approves `approval` through the API at `api`.
async fn approve(api: &str, approval: &str) {
    let (status, body) = post(
        &format!("{api}/api/v1/approvals/{approval}/approve"),
        Some(ANA),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Approves `approval` through the API at `api`, then waits until the Deployment has
/// `replicas` (the approved step ran).
async fn approve_until(env: &Env, api: &str, approval: &str, replicas: i64, what: &str) {
    approve(api, approval).await;
    until_equal(what, replicas, async || env.replicas().await).await;
}

/// The steps the cluster's entries show started (forward, not rollback), in order.
fn started(state: &IncidentState) -> Vec<String> {
    state
        .entries
        .iter()
        .filter(|e| e.kind == "step_started" && e.detail["phase"] != "rollback")
        .map(|e| e.detail["step"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The scale writes the fake received (not dry runs).
fn scalings(fake: &FakeApiServer, namespace: &str) -> usize {
    let path = format!("/namespaces/{namespace}/deployments/api/scale");
    fake.requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.ends_with(&path) && r.param("dryRun").is_none())
        .count()
}

/// The leader runs the first step and asks for approval of the second; the follower's API
/// shows that approval (it follows the cluster) and takes the answer, which the leader acts
/// on. The leader, waiting on the third step's approval, is killed; the other replica takes the
/// lead, resumes at that step (its answer, given through it while it still followed, is
/// waiting) and runs it: each step ran exactly once, and the incident is remediated.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leaders_remediation_is_resumed_by_the_other_replica_exactly_once() {
    // Bound whole: what is not used must live to the end (the follower, Prometheus).
    let mut pair = Pair::start(PLAYBOOK).await;
    let (env, api_a, api_b) = (&pair.env, pair.api_a.clone(), pair.api_b.clone());

    // The leader acts on the low step and asks about the next; the follower shows it.
    let drain = pending(&api_a, "drain").await;
    assert_eq!(
        pending(&api_b, "drain").await,
        drain,
        "the follower follows"
    );
    assert_eq!(env.replicas().await, 5, "scale-up ran");
    approve_until(env, &api_b, &drain, 2, "drain run by the leader").await;
    let settle = pending(&api_a, "settle").await;
    assert_eq!(pending(&api_b, "settle").await, settle);

    // The leader dies waiting; the answer goes to the follower, which takes over.
    let killed = Instant::now();
    pair.a.0.kill().expect("kill the leader");
    let _ = pair.a.0.wait();
    approve_until(env, &api_b, &settle, 3, "settle run by the new leader").await;
    println!(
        "leader killed → the other replica resumed and ran the approved step: {:?}",
        killed.elapsed()
    );
    assert!(
        env.holder().await.is_some_and(|h| h.starts_with("pod-b_")),
        "the other replica leads"
    );
    let finished = |s: &IncidentState| {
        s.entries
            .iter()
            .any(|e| e.kind == "remediation_finished" && e.detail["outcome"] == "remediated")
    };
    until_equal("the incident remediated", true, async || {
        finished(&env.incident().await)
    })
    .await;
    each_step_once(env).await;
}

/// Asserts that [`PLAYBOOK`]'s three steps each started once, as the cluster's entries tell
/// (and, against the fake, that it received one scale write per step).
async fn each_step_once(env: &Env) {
    let state = env.incident().await;
    assert_eq!(
        started(&state),
        ["scale-up", "drain", "settle"],
        "each step started once: {:#?}",
        state.entries
    );
    if let Some(fake) = &env.cluster.fake {
        assert_eq!(
            scalings(fake, &env.cluster.namespace),
            3,
            "one scale write per step"
        );
    }
}

/// A playbook on an alert, with one step the policy lets run.
const ON_ALERT: &str = "apiVersion: salve.dev/v1\nkind: Playbook\nmetadata: {name: heal}\nspec:\n  trigger:\n    alert: {alertname: ApiDown}\n  target: {kind: Deployment, namespace: NAMESPACE, name: api}\n  cooldown: 1h\n  steps:\n    - {name: scale-up, action: scale, risk: low, params: {replicas: 5}}\n";

/// Alertmanager posts to a Service, which may pick a follower: the follower relays the payload
/// to the leader (named on the Lease with its address), which remediates; the follower keeps
/// the alert too. Without a leader to relay to, the follower answers 503, so that
/// Alertmanager retries.
#[tokio::test(flavor = "multi_thread")]
async fn an_alert_posted_to_a_follower_is_relayed_to_the_leader() {
    let mut pair = Pair::start(ON_ALERT).await;
    let (env, api_b) = (&pair.env, pair.api_b.clone());
    let payload = json!({
        "version": "4", "status": "firing", "receiver": "salve",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "ApiDown", "namespace": env.cluster.namespace},
            "startsAt": chrono::Utc::now().to_rfc3339(),
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "0123456789abcdef",
        }],
    })
    .to_string();
    let webhook = format!("{api_b}/api/v1/alerts/alertmanager");
    let (status, body) = post(&webhook, None, &payload).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["relayedTo"]
            .as_str()
            .is_some_and(|h| h.starts_with("pod-a_")),
        "{body}"
    );
    until_equal("scale-up run by the leader", 5, async || {
        env.replicas().await
    })
    .await;
    let state = env.incident().await;
    assert_eq!(started(&state), ["scale-up"]);
    assert!(
        state.entries.iter().all(|e| e.id.starts_with("pod-a_")),
        "the leader remediated: {:#?}",
        state.entries
    );

    // No leader: the follower keeps the alert and asks Alertmanager to retry.
    pair.a.0.kill().expect("kill the leader");
    let _ = pair.a.0.wait();
    let (status, body) = post(&webhook, None, &payload).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

/// A rolling update: the leader gets SIGTERM while its remediation waits for an approval; it
/// parks the remediation after its grace period, releases the Lease and exits 0; the other
/// replica leads at once, resumes at the waiting step (answered through it meanwhile) and
/// finishes the remediation — each step once.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_leader_hands_its_remediation_over() {
    let mut pair = Pair::start(PLAYBOOK).await;
    let (env, api_a, api_b) = (&pair.env, pair.api_a.clone(), pair.api_b.clone());
    let drain = pending(&api_a, "drain").await;
    assert_eq!(env.replicas().await, 5, "scale-up ran");

    let stopped = Instant::now();
    let exit = crate::terminate(&mut pair.a.0).await;
    assert!(exit.success(), "a graceful stop exits 0: {exit}");
    approve_until(env, &api_b, &drain, 2, "drain run by the new leader").await;
    println!(
        "SIGTERM to the leader (grace 1 s) → the other replica ran the approved step: {:?}",
        stopped.elapsed()
    );
    let settle = pending(&api_b, "settle").await;
    approve_until(env, &api_b, &settle, 3, "settle run").await;
    each_step_once(env).await;
}
